/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The checkpoint tree of one domain, the model behind the Checkpoint
 * objects (no D-Bus here): each Checkpoint wraps its parsed
 * <domaincheckpoint> definition and knows its parent and children; the
 * tree finds checkpoints by name in O(1), keeps creation order, knows the
 * current one (the newest: libvirt makes it the parent of the next), and
 * persists every change as one transaction of the same metadata store the
 * snapshots use, <state>/checkpoints/<uuid>.xml (`<checkpoints
 * current='…'>` + `<domaincheckpoint>` entries) and its journal. The
 * listing walk and the removal plan are moment.c's, shared with
 * snapshot.c. Bitmaps, QEMU and the bus are the operations' business.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util/hashmap.h"
#include "store/store.h"
#include "store/xml-checkpoint.h"
#include "util/error.h"

typedef struct Domain Domain;
typedef struct Checkpoint Checkpoint;
typedef struct CheckpointTree CheckpointTree;

struct Checkpoint {
        CheckpointTree *tree;
        CheckpointDef *def;
        Checkpoint *parent;
        Checkpoint **children; /* creation order */
        size_t n_children;
        Checkpoint *prev, *next; /* the tree's creation-order list */
        uint64_t seq;            /* creation order, for moment.c */
        /* What core/bitmaps.c found in the images (not stored): one
         * sentence per disk whose bitmap chain is unusable (NULL: usable),
         * and the bytes dirtied since, summed over disks and layers, as
         * last measured (has_size false: never measured). */
        char **problems;
        uint64_t size;
        bool has_size;
};

struct CheckpointTree {
        Domain *domain; /* the owner */
        Hashmap *by_name;
        Checkpoint *first, *last;
        size_t n;
        Checkpoint *current;
        Store *store; /* NULL until loaded */
        uint64_t next_seq;
};

/* Flags, libvirt's values (virDomainCheckpointCreateFlags, …ListFlags,
 * …DeleteFlags, …XMLFlags). */
#define CHECKPOINT_CREATE_REDEFINE (1ULL << 0)
#define CHECKPOINT_CREATE_QUIESCE (1ULL << 1)
#define CHECKPOINT_CREATE_REDEFINE_VALIDATE (1ULL << 2)
#define CHECKPOINT_CREATE_ALL ((1ULL << 3) - 1)

#define CHECKPOINT_LIST_ROOTS (1ULL << 0) /* on a checkpoint: DESCENDANTS */
#define CHECKPOINT_LIST_DESCENDANTS (1ULL << 0)
#define CHECKPOINT_LIST_TOPOLOGICAL (1ULL << 1)
#define CHECKPOINT_LIST_LEAVES (1ULL << 2)
#define CHECKPOINT_LIST_NO_LEAVES (1ULL << 3)
#define CHECKPOINT_LIST_ALL ((1ULL << 4) - 1)

#define CHECKPOINT_DELETE_CHILDREN (1ULL << 0)
#define CHECKPOINT_DELETE_METADATA_ONLY (1ULL << 1)
#define CHECKPOINT_DELETE_CHILDREN_ONLY (1ULL << 2)
#define CHECKPOINT_DELETE_ALL ((1ULL << 3) - 1)

#define CHECKPOINT_XML_SECURE (1ULL << 0)
#define CHECKPOINT_XML_NO_DOMAIN (1ULL << 1)
#define CHECKPOINT_XML_SIZE (1ULL << 2)
#define CHECKPOINT_XML_ALL ((1ULL << 3) - 1)

const char *checkpoint_name(const Checkpoint *c);

void checkpoint_tree_init(CheckpointTree *t, Domain *owner);
void checkpoint_tree_done(CheckpointTree *t);

/* Opens <dir>/<uuid>.xml (+ journal) and builds the tree from it. A stored
 * checkpoint that does not parse, or repeats a name, is skipped (logged);
 * one whose parent is missing becomes a root (logged). */
int checkpoint_tree_load(CheckpointTree *t, const char *dir, const char *uuid, uint64_t read_cap, char **ret_message);

Checkpoint *checkpoint_tree_find(const CheckpointTree *t, const char *name);

/* Adds def (taken, also on failure; named, its <parent> NULL or an
 * existing checkpoint) and persists it, and with make_current also the new
 * current checkpoint, in one transaction. -QSNAP_E_ALREADY_EXISTS for a
 * name in use, -QSNAP_E_NO_SUCH_CHECKPOINT for an unknown parent, -EINVAL
 * for a def without name. Nothing
 * changes in memory when the store refuses. */
int checkpoint_tree_add(CheckpointTree *t, CheckpointDef *def, bool make_current, Checkpoint **ret);

/* Replaces the definition of c with def (taken; same name and parent: a
 * REDEFINE of an existing checkpoint, or new disk bitmaps) and, with
 * make_current, makes c current, in one transaction. */
int checkpoint_tree_update(CheckpointTree *t, Checkpoint *c, CheckpointDef *def, bool make_current);

/* Persists a new current checkpoint (NULL: none). */
int checkpoint_tree_set_current(CheckpointTree *t, Checkpoint *c);

/* Removes the n_remove (distinct) checkpoints and stores, in ONE
 * transaction, everything that follows: their surviving children move to
 * the nearest surviving ancestor (libvirt), the current checkpoint moves
 * to its nearest surviving ancestor when removed, and each update[i] gets
 * new_defs[i] (taken, also on failure; its name must stay; its <parent>
 * is set here). Nothing changes in memory when the store refuses.
 * *ret_changed (may be NULL) lists, malloc'ed, the survivors whose Parent
 * or Children changed. Costs what it touches, not the tree's size. */
int checkpoint_tree_remove(CheckpointTree *t, Checkpoint *const *remove, size_t n_remove, Checkpoint *const *update,
                           CheckpointDef **new_defs, size_t n_update, Checkpoint ***ret_changed, size_t *ret_n_changed);

/* Forgets all metadata (Undefine with CHECKPOINTS_METADATA). */
int checkpoint_tree_remove_all(CheckpointTree *t);

/* Domain.ListCheckpoints (parent NULL) and a checkpoint's children
 * (parent set; DESCENDANTS recurses), with libvirt's list flags: the
 * matching checkpoints in creation order, or parents before children with
 * TOPOLOGICAL. -EINVAL for unknown flags. */
int checkpoint_tree_list(const CheckpointTree *t, const Checkpoint *parent, uint64_t flags, Checkpoint ***ret,
                         size_t *ret_n);
