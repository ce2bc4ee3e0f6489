/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The tree logic that snapshots and checkpoints share (libvirt calls both
 * "moments" and shares it the same way): listing with libvirt's filters
 * (roots or descendants, leaves, no leaves, topological order) and
 * planning a removal (children move to the nearest surviving ancestor,
 * the current moment moves up, each parent's children stay in creation
 * order). The trees keep their own typed nodes (snapshot.h, checkpoint.h)
 * and show them here through MomentOps; nothing here allocates a node,
 * touches a store or changes a tree: the callers apply a plan.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How a tree's nodes look from here. All nodes of a tree are passed as
 * void * and come back as such. */
typedef struct MomentOps {
        void *(*first)(const void *tree);  /* in creation order, NULL when empty */
        void *(*next)(const void *node);
        void *(*parent)(const void *node); /* NULL for a root */
        size_t (*n_children)(const void *node);
        void *(*child)(const void *node, size_t i); /* in creation order */
        uint64_t (*seq)(const void *node); /* creation order: grows with each node added */
} MomentOps;

/* The filters both kinds share; each kind maps its own flag values. */
typedef enum MomentListFlags {
        /* Of a tree: only roots. Of a node: all descendants, not just children. */
        MOMENT_LIST_ROOTS_OR_DESCENDANTS = 1 << 0,
        MOMENT_LIST_TOPOLOGICAL = 1 << 1, /* parents before children */
        MOMENT_LIST_LEAVES = 1 << 2,      /* with LEAVES and NO_LEAVES: both, as libvirt */
        MOMENT_LIST_NO_LEAVES = 1 << 3,
} MomentListFlags;

/* The nodes of tree (parent NULL) or below parent that pass flags and
 * match() (NULL: all), in creation order or, with TOPOLOGICAL, parents
 * before children (breadth first). *ret is a malloc'ed array (NULL when
 * empty). */
int moment_list(const MomentOps *ops,
                const void *tree,
                const void *parent,
                MomentListFlags flags,
                bool (*match)(const void *node, const void *userdata),
                const void *userdata,
                void ***ret,
                size_t *ret_n);

typedef struct MomentMove {
        void *node;   /* a surviving child of a removed node */
        void *parent; /* its nearest surviving ancestor; NULL: it becomes a root */
} MomentMove;

typedef struct MomentChildren {
        void *parent;    /* a surviving node whose children change */
        void **children; /* its new children, in creation order */
        size_t n;
} MomentChildren;

typedef struct MomentRemoval {
        MomentMove *moves;           /* in creation order of the moved nodes */
        size_t n_moves;
        MomentChildren *parents;
        size_t n_parents;
        void *new_current;           /* current, or its nearest surviving ancestor when removed */
        void **changed;              /* survivors whose parent or children change, each once, in creation order */
        size_t n_changed;
        void **removed;              /* the removed nodes, sorted by address */
        size_t n_removed;
} MomentRemoval;

/* What removing the distinct nodes remove[0..n_remove) does to the rest
 * of the tree. Costs O(r log r) for r = the removed nodes, their children
 * and the children of the parents that change, whatever the tree's size.
 * -EINVAL when a node is given twice. */
int moment_plan_removal(const MomentOps *ops,
                        void *const *remove,
                        size_t n_remove,
                        void *current,
                        MomentRemoval *ret);

void moment_removal_done(MomentRemoval *r);

/* Whether node is in remove (as planned), for the callers' own loops. */
bool moment_removal_removes(const MomentRemoval *r, const void *node);
