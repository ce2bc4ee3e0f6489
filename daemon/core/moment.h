/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The tree logic that snapshots and checkpoints share (libvirt calls both
 * "moments" and shares it the same way): listing with libvirt's filters
 * (roots or descendants, leaves, no leaves, topological order) and
 * planning a removal (children move to the nearest surviving ancestor,
 * the current moment moves up, each parent's children stay in creation
 * order), and the trees' persistence: each change of a tree is one
 * transaction of its metadata store, applied in memory only when the
 * store took it (moment_tree_*). The trees keep their own typed nodes
 * (snapshot.h, checkpoint.h) and show them here through MomentOps;
 * nothing here allocates a node: the kinds link and free their own.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "util/hashmap.h"
#include "util/util.h"

/* How a tree's nodes look from here. All nodes of a tree are passed as
 * void * and come back as such. */
typedef struct MomentOps {
        void *(*first)(const void *tree);  /* in creation order, NULL when empty */
        void *(*next)(const void *node);
        void *(*parent)(const void *node); /* NULL for a root */
        size_t (*n_children)(const void *node);
        void *(*child)(const void *node, size_t i); /* in creation order */
        uint64_t (*seq)(const void *node); /* creation order: grows with each node added */

        /* For moment_tree_*() only (a walk or a plan needs none of these). */
        void *(*nodes_new)(void *const *nodes, size_t n); /* a malloc'ed typed copy (Snapshot **); NULL: -ENOMEM */
        void *(*def)(const void *node);                   /* its definition (SnapshotDef, CheckpointDef) */
        char **(*def_name)(void *def);                    /* the fields a tree reads and sets */
        char **(*def_parent)(void *def);
        int (*def_copy)(const void *def, void **ret);
        int (*def_format)(const void *def, char **ret); /* as the store keeps it: secrets included */
        void (*def_free)(void *def);
        /* For moment_tree_link() and _load(). */
        const char *noun, *noun_capital;     /* "snapshot", "Snapshot": for the log */
        const char *store_kind, *store_root; /* store_open()'s "snapshots", "domainsnapshot" */
        int (*def_parse)(const char *xml, void **ret, char **ret_message); /* a stored one (REDEFINE) */
        void *(*node_new)(void *tree, void *def); /* zeroed but for tree and def; NULL: -ENOMEM */
        int (*add_child)(void *parent, void *child);
        void (*append)(void *tree, void *node); /* its seq, the end of the creation-order list */
        void (*forget)(void *tree);             /* every node freed: an empty tree, the store kept */
        Hashmap **(*by_name)(void *tree);
        Store **(*store)(void *tree);
        /* The tree in memory; none of these can fail. */
        void *(*current)(const void *tree);
        void (*set_current)(void *tree, void *node);
        void (*set_def)(void *node, void *def);
        void (*set_parent)(void *node, void *parent);
        void (*set_children)(void *node, void *children, size_t n); /* takes children, from nodes_new() */
        void (*drop)(void *tree, void *node); /* a removed node: out of the name map and the list, freed */
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
int moment_list(const MomentOps *ops, const void *tree, const void *parent, MomentListFlags flags,
                bool (*match)(const void *node, const void *userdata), const void *userdata, void ***ret,
                size_t *ret_n);

/* A kind's libvirt list flags (its values of ROOTS or DESCENDANTS,
 * TOPOLOGICAL, LEAVES, NO_LEAVES) as the moment flags. */
MomentListFlags moment_list_flags(uint64_t flags, uint64_t roots, uint64_t topological, uint64_t leaves,
                                  uint64_t no_leaves);

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
int moment_plan_removal(const MomentOps *ops, void *const *remove, size_t n_remove, void *current,
                        MomentRemoval *ret);

void moment_removal_done(MomentRemoval *r);

/* Whether node is in remove (as planned), for the callers' own loops. */
bool moment_removal_removes(const MomentRemoval *r, const void *node);

/* ---- persistence: one store transaction per change ---- */

/* Opens <dir>/<uuid>.xml (+ journal) once and (re)builds the tree from it.
 * A stored definition that does not parse, or repeats a name, is skipped
 * (logged); one whose parent is missing becomes a root (logged). */
int moment_tree_load(const MomentOps *ops, void *tree, const char *dir, const char *uuid, uint64_t read_cap,
                     char **ret_message);

/* Links a new node for def (taken on success; named) into the tree in
 * memory, under its <parent> (dropped, logged, when there is none of that
 * name); no I/O. */
int moment_tree_link(const MomentOps *ops, void *tree, void *def, void **ret);

/* Stores def (not taken) under its name and, with make_current, as the
 * current one. */
int moment_tree_put(const MomentOps *ops, void *tree, void *def, bool make_current);

/* Stores def (taken, also on failure; named, its parent NULL or in the
 * tree) and, with make_current, makes it current, in one transaction; then
 * links its node (*ret). Nothing changes in memory when the store
 * refuses. */
int moment_tree_add(const MomentOps *ops, void *tree, void *def, bool make_current, void **ret);

/* Replaces the definition of node with def (taken, also on failure; same
 * name and parent, else -EINVAL) and, with make_current, makes node
 * current, in one transaction. Nothing changes in memory when the store
 * refuses. */
int moment_tree_update(const MomentOps *ops, void *tree, void *node, void *def, bool make_current);

/* moment_list() as the kind's typed array (nodes_new(); NULL when empty). */
int moment_tree_list(const MomentOps *ops, const void *tree, const void *parent, MomentListFlags flags,
                     bool (*match)(const void *node, const void *userdata), const void *userdata, void **ret,
                     size_t *ret_n);

/* Removes the store's file and forgets every node. */
int moment_tree_remove_all(const MomentOps *ops, void *tree);

/* Persists a new current node (NULL: none). */
int moment_tree_set_current(const MomentOps *ops, void *tree, void *node);

/* Removes the n_remove (distinct) nodes and stores, in ONE transaction,
 * everything that follows: their surviving children move to the nearest
 * surviving ancestor (libvirt), the current node moves to its nearest
 * surviving ancestor when removed, and each update[i] gets new_defs[i]
 * (taken, also on failure; its name must stay; its <parent> is set
 * here). Nothing changes in memory when the store refuses. *ret_changed
 * (may be NULL) is the typed array (nodes_new()) of the survivors whose
 * parent or children changed. */
int moment_tree_remove(const MomentOps *ops, void *tree, void *const *remove, size_t n_remove, void *const *update,
                       void **new_defs, size_t n_update, void **ret_changed, size_t *ret_n_changed);

/* ---- a kind's MomentOps ---- */

/* The creation-order list of a tree (first, last, n) and its nodes (prev, next). */
#define MOMENT_LIST_APPEND(tree, node)                   \
        do {                                             \
                (node)->prev = (tree)->last;             \
                if ((tree)->last)                        \
                        (tree)->last->next = (node);     \
                else                                     \
                        (tree)->first = (node);          \
                (tree)->last = (node);                   \
                (tree)->n++;                             \
        } while (0)

#define MOMENT_LIST_UNLINK(tree, node)                   \
        do {                                             \
                if ((node)->prev)                        \
                        (node)->prev->next = (node)->next; \
                else                                     \
                        (tree)->first = (node)->next;    \
                if ((node)->next)                        \
                        (node)->next->prev = (node)->prev; \
                else                                     \
                        (tree)->last = (node)->prev;     \
                (tree)->n--;                             \
        } while (0)

/* Defines `static const MomentOps prefix##_moment_ops` for a kind whose
 * Node has the fields tree, def, parent, children, n_children, prev, next
 * and seq, whose Tree has by_name, first, last, n, current, store and
 * next_seq, and whose Def has name and parent, with
 * prefix##_def_parse() (parse_flags: what a stored one is read with),
 * _copy(), _format() (format_flags: what the store keeps) and _free().
 * noun_, Noun: the log's word; store_kind_, store_root_: store_open()'s;
 * drop_fn and forget_fn: the kind's own (MomentOps.drop, .forget). */
#define MOMENT_GET_(fn, Ret, Type, field) \
        static Ret fn(const void *p) {    \
                return ((const Type *) p)->field; \
        }
#define MOMENT_FIELD_(fn, Ret, Type, field) \
        static Ret *fn(void *p) {           \
                return &((Type *) p)->field; \
        }
#define MOMENT_SET_(fn, Type, field)         \
        static void fn(void *p, void *v) {   \
                ((Type *) p)->field = v;     \
        }

#define DEFINE_MOMENT_OPS(prefix, Node, Tree, Def, noun_, Noun, store_kind_, store_root_, parse_flags, \
                          format_flags, drop_fn, forget_fn)                                \
        static void *prefix##_ops_nodes_new(void *const *nodes, size_t n) {               \
                Node **l = new0(Node *, n);                                                \
                for (size_t i = 0; l && i < n; i++)                                        \
                        l[i] = nodes[i];                                                   \
                return l;                                                                  \
        }                                                                                  \
        MOMENT_GET_(prefix##_ops_first, void *, Tree, first)                               \
        MOMENT_FIELD_(prefix##_ops_store, Store *, Tree, store)                            \
        MOMENT_FIELD_(prefix##_ops_by_name, Hashmap *, Tree, by_name)                      \
        MOMENT_GET_(prefix##_ops_current, void *, Tree, current)                           \
        MOMENT_SET_(prefix##_ops_set_current, Tree, current)                               \
        MOMENT_GET_(prefix##_ops_next, void *, Node, next)                                 \
        MOMENT_GET_(prefix##_ops_parent, void *, Node, parent)                             \
        MOMENT_GET_(prefix##_ops_n_children, size_t, Node, n_children)                     \
        MOMENT_GET_(prefix##_ops_seq, uint64_t, Node, seq)                                 \
        MOMENT_GET_(prefix##_ops_def, void *, Node, def)                                   \
        MOMENT_SET_(prefix##_ops_set_def, Node, def)                                       \
        MOMENT_SET_(prefix##_ops_set_parent, Node, parent)                                 \
        static void *prefix##_ops_child(const void *node, size_t i) {                     \
                return ((const Node *) node)->children[i];                                 \
        }                                                                                  \
        static void prefix##_ops_set_children(void *node, void *children, size_t n) {     \
                Node *p = node;                                                            \
                free(p->children);                                                         \
                p->children = children;                                                    \
                p->n_children = n;                                                         \
        }                                                                                  \
        static char **prefix##_ops_def_name(void *def) {                                  \
                return &((Def *) def)->name;                                               \
        }                                                                                  \
        static char **prefix##_ops_def_parent(void *def) {                                \
                return &((Def *) def)->parent;                                             \
        }                                                                                  \
        static int prefix##_ops_def_copy(const void *def, void **ret) {                   \
                Def *copy = NULL;                                                          \
                int r = prefix##_def_copy(def, &copy);                                     \
                if (r >= 0)                                                                \
                        *ret = copy;                                                       \
                return r;                                                                  \
        }                                                                                  \
        static int prefix##_ops_def_format(const void *def, char **ret) {                 \
                return prefix##_def_format(def, format_flags, ret);                        \
        }                                                                                  \
        static void prefix##_ops_def_free(void *def) {                                    \
                prefix##_def_free(def);                                                    \
        }                                                                                  \
        static int prefix##_ops_def_parse(const char *xml, void **ret, char **ret_message) { \
                Def *def = NULL;                                                           \
                int r = prefix##_def_parse(xml, strlen(xml), parse_flags, &def, ret_message); \
                if (r >= 0)                                                                \
                        *ret = def;                                                        \
                return r;                                                                  \
        }                                                                                  \
        static void *prefix##_ops_node_new(void *tree, void *def) {                        \
                Node *node = new0(Node, 1);                                                \
                if (node)                                                                  \
                        *node = (Node) { .tree = tree, .def = def };                       \
                return node;                                                               \
        }                                                                                  \
        static int prefix##_ops_add_child(void *parent, void *child) {                     \
                Node *p = parent, **c;                                                     \
                c = reallocarray(p->children, p->n_children + 1, sizeof(Node *));          \
                if (!c)                                                                    \
                        return -ENOMEM;                                                    \
                c[p->n_children++] = child;                                                \
                p->children = c;                                                           \
                return 0;                                                                  \
        }                                                                                  \
        static void prefix##_ops_append(void *tree, void *node) {                          \
                Tree *t = tree;                                                            \
                Node *n = node;                                                            \
                n->seq = t->next_seq++;                                                    \
                MOMENT_LIST_APPEND(t, n);                                                  \
        }                                                                                  \
        static const MomentOps prefix##_moment_ops = {                                     \
                .first = prefix##_ops_first, .next = prefix##_ops_next,                    \
                .parent = prefix##_ops_parent, .n_children = prefix##_ops_n_children,      \
                .child = prefix##_ops_child, .seq = prefix##_ops_seq,                      \
                .nodes_new = prefix##_ops_nodes_new, .def = prefix##_ops_def,              \
                .def_name = prefix##_ops_def_name, .def_parent = prefix##_ops_def_parent,  \
                .def_copy = prefix##_ops_def_copy, .def_format = prefix##_ops_def_format,  \
                .def_free = prefix##_ops_def_free, .store = prefix##_ops_store,            \
                .current = prefix##_ops_current, .set_current = prefix##_ops_set_current,  \
                .set_def = prefix##_ops_set_def, .set_parent = prefix##_ops_set_parent,    \
                .set_children = prefix##_ops_set_children, .drop = drop_fn,                \
                .noun = noun_, .noun_capital = Noun,                                       \
                .store_kind = store_kind_, .store_root = store_root_,                      \
                .def_parse = prefix##_ops_def_parse, .node_new = prefix##_ops_node_new,    \
                .add_child = prefix##_ops_add_child, .append = prefix##_ops_append,        \
                .forget = forget_fn, .by_name = prefix##_ops_by_name,                      \
        }
