/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot tree of one domain: each Snapshot wraps its parsed
 * <domainsnapshot> definition and knows its parent and children; the tree
 * finds snapshots by name in O(1), keeps creation order, knows the current
 * one, and persists every change as one transaction of the metadata store.
 * Listing filters (libvirt's flags) are pure functions over the tree. The
 * walk and the removal plan are moment.c's, shared with checkpoint.c.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"
#include "store/xml-snapshot.h"
#include "util/error.h"
#include "util/hashmap.h"

typedef struct Domain Domain;
typedef struct Snapshot Snapshot;

typedef struct SnapshotTree SnapshotTree;

struct Snapshot {
        SnapshotTree *tree;
        SnapshotDef *def;
        Snapshot *parent;
        Snapshot **children; /* creation order */
        size_t n_children;
        Snapshot *prev, *next; /* the tree's creation-order list */
        uint64_t seq;          /* creation order, for moment.c */
};

struct SnapshotTree {
        Domain *domain; /* the owner */
        Hashmap *by_name;
        Snapshot *first, *last;
        size_t n;
        Snapshot *current;
        Snapshot *reported_current; /* the current one as the observer last heard of it (core/manager.c) */
        Store *store; /* NULL until opened */
        uint64_t next_seq;
};

/* Flags, libvirt's values. */
#define SNAPSHOT_CREATE_REDEFINE (1ULL << 0)
#define SNAPSHOT_CREATE_CURRENT (1ULL << 1)
#define SNAPSHOT_CREATE_NO_METADATA (1ULL << 2)
#define SNAPSHOT_CREATE_HALT (1ULL << 3)
#define SNAPSHOT_CREATE_DISK_ONLY (1ULL << 4)
#define SNAPSHOT_CREATE_REUSE_EXT (1ULL << 5)
#define SNAPSHOT_CREATE_QUIESCE (1ULL << 6)
#define SNAPSHOT_CREATE_ATOMIC (1ULL << 7)
#define SNAPSHOT_CREATE_LIVE (1ULL << 8)
#define SNAPSHOT_CREATE_VALIDATE (1ULL << 9)
#define SNAPSHOT_CREATE_ALL ((1ULL << 10) - 1)

#define SNAPSHOT_LIST_ROOTS (1ULL << 0) /* on a snapshot: DESCENDANTS */
#define SNAPSHOT_LIST_DESCENDANTS (1ULL << 0)
#define SNAPSHOT_LIST_METADATA (1ULL << 1)
#define SNAPSHOT_LIST_LEAVES (1ULL << 2)
#define SNAPSHOT_LIST_NO_LEAVES (1ULL << 3)
#define SNAPSHOT_LIST_NO_METADATA (1ULL << 4)
#define SNAPSHOT_LIST_INACTIVE (1ULL << 5)
#define SNAPSHOT_LIST_ACTIVE (1ULL << 6)
#define SNAPSHOT_LIST_DISK_ONLY (1ULL << 7)
#define SNAPSHOT_LIST_INTERNAL (1ULL << 8)
#define SNAPSHOT_LIST_EXTERNAL (1ULL << 9)
#define SNAPSHOT_LIST_TOPOLOGICAL (1ULL << 10)
#define SNAPSHOT_LIST_ALL ((1ULL << 11) - 1)

#define SNAPSHOT_XML_SECURE (1ULL << 0)

typedef enum SnapshotKind {
        SNAPSHOT_KIND_INTERNAL,
        SNAPSHOT_KIND_EXTERNAL,
        SNAPSHOT_KIND_MIXED,
        _SNAPSHOT_KIND_MAX,
        _SNAPSHOT_KIND_INVALID = -EINVAL,
} SnapshotKind;

const char *snapshot_kind_to_string(SnapshotKind k);

/* Location property: internal, external or mixed, from the disks and the memory. */
SnapshotKind snapshot_kind(const Snapshot *s);
/* Memory property: no, internal or external. */
SnapshotLocation snapshot_memory(const Snapshot *s);
const char *snapshot_name(const Snapshot *s);

void snapshot_tree_init(SnapshotTree *t, Domain *owner);
void snapshot_tree_done(SnapshotTree *t);

/* Opens <dir>/<uuid>.xml (+ journal) and builds the tree from it. A
 * snapshot whose parent is missing becomes a root (logged). */
int snapshot_tree_load(SnapshotTree *t, const char *dir, const char *uuid, uint64_t read_cap, char **ret_message);

Snapshot *snapshot_tree_find(const SnapshotTree *t, const char *name);

/* Adds def (taken) under its <parent> (NULL: a root) and persists it, and
 * with make_current also the new current snapshot, in one transaction.
 * Nothing changes in memory when the store refuses. */
int snapshot_tree_add(SnapshotTree *t, SnapshotDef *def, bool make_current, Snapshot **ret);

/* Replaces the definition of s with def (taken; same name and parent) and,
 * with make_current, makes s current, as one store transaction. Nothing
 * changes in memory when the store refuses. */
int snapshot_tree_update(SnapshotTree *t, Snapshot *s, SnapshotDef *def, bool make_current);

/* Persists a new current snapshot (NULL: none). */
int snapshot_tree_set_current(SnapshotTree *t, Snapshot *s);

/* Removes the `n_remove` snapshots (distinct) and stores, in ONE
 * transaction, everything that follows: their surviving children move to
 * the nearest surviving ancestor (libvirt), the current snapshot moves to
 * its nearest surviving ancestor when it is removed, and each
 * update[i] gets new_defs[i] (taken, also on failure; its name must stay;
 * its <parent> is set here). Nothing changes in memory when the store
 * refuses. *ret_changed (may be NULL) lists, malloc'ed, the surviving
 * snapshots whose Parent or Children changed. */
int snapshot_tree_remove(SnapshotTree *t, Snapshot *const *remove, size_t n_remove, Snapshot *const *update,
                         SnapshotDef **new_defs, size_t n_update, Snapshot ***ret_changed, size_t *ret_n_changed);

/* Forgets all metadata (Undefine with SNAPSHOTS_METADATA). */
int snapshot_tree_remove_all(SnapshotTree *t);

/* CreateSnapshot with REDEFINE, which records metadata only, in two
 * halves around authorization. _prepare() parses xml and checks it against
 * the tree, changing nothing: -QSNAP_E_INVALID_XML ("Invalid snapshot XML:
 * …", or no <name>), -QSNAP_E_BUSY while a snapshot is being taken,
 * -QSNAP_E_ALREADY_EXISTS, -QSNAP_E_NO_SUCH_SNAPSHOT for an unknown parent;
 * *ret_message says which. snapshot_redefine() checks again, adds def
 * (taken), with make_current as the current one, and tells the observer
 * (snapshot_added). */
int snapshot_redefine_prepare(Domain *d, const char *xml, SnapshotDef **ret, char **ret_message);
int snapshot_redefine(Domain *d, SnapshotDef *def, bool make_current, Snapshot **ret, char **ret_message);

/* Domain.ListSnapshots (parent NULL) and Snapshot.ListChildren (parent
 * set; DESCENDANTS recurses): the matching snapshots, in creation order,
 * or parents before children with TOPOLOGICAL. */
int snapshot_tree_list(const SnapshotTree *t, const Snapshot *parent, uint64_t flags, Snapshot ***ret, size_t *ret_n);
