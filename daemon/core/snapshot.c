/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot tree and its persistence. Every change is written to the
 * store first, as one transaction, and applied in memory only when that
 * worked, so the tree in memory never disagrees with the file.
 */
#include "core/domain.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/moment.h"
#include "core/snapshot.h"
#include "util/error.h"
#include "util/string-table.h"
#include "util/util.h"

static const char *const snapshot_kind_table[_SNAPSHOT_KIND_MAX] = {
        [SNAPSHOT_KIND_INTERNAL] = "internal",
        [SNAPSHOT_KIND_EXTERNAL] = "external",
        [SNAPSHOT_KIND_MIXED] = "mixed",
};

DEFINE_STRING_TABLE_LOOKUP_TO_STRING(snapshot_kind, SnapshotKind, );

const char *snapshot_name(const Snapshot *s) {
        return s->def->name;
}

SnapshotLocation snapshot_memory(const Snapshot *s) {
        if (s->def->memory == SNAPSHOT_LOCATION_INTERNAL || s->def->memory == SNAPSHOT_LOCATION_EXTERNAL)
                return s->def->memory;
        return SNAPSHOT_LOCATION_NO;
}

SnapshotKind snapshot_kind(const Snapshot *s) {
        bool internal = snapshot_memory(s) == SNAPSHOT_LOCATION_INTERNAL;
        bool external = snapshot_memory(s) == SNAPSHOT_LOCATION_EXTERNAL;

        for (size_t i = 0; i < s->def->n_disks; i++) {
                if (s->def->disks[i].snapshot == SNAPSHOT_LOCATION_INTERNAL)
                        internal = true;
                else if (s->def->disks[i].snapshot == SNAPSHOT_LOCATION_EXTERNAL)
                        external = true;
        }
        if (internal && external)
                return SNAPSHOT_KIND_MIXED;
        return external ? SNAPSHOT_KIND_EXTERNAL : SNAPSHOT_KIND_INTERNAL;
}

void snapshot_tree_init(SnapshotTree *t, Domain *owner) {
        *t = (SnapshotTree) { .domain = owner };
}

static void snapshot_free(Snapshot *s) {
        snapshot_def_free(s->def);
        free(s->children);
        free(s);
}

static void snapshot_tree_forget(void *tree) {
        SnapshotTree *t = tree;

        for (Snapshot *s = t->first, *next; s; s = next) {
                next = s->next;
                snapshot_free(s);
        }
        hashmap_free(t->by_name);
        t->by_name = NULL;
        t->first = t->last = t->current = t->reported_current = NULL;
        t->n = 0;
}

void snapshot_tree_done(SnapshotTree *t) {
        snapshot_tree_forget(t);
        store_free(t->store);
        *t = (SnapshotTree) { .domain = t->domain };
}

Snapshot *snapshot_tree_find(const SnapshotTree *t, const char *name) {
        return hashmap_get(t->by_name, name);
}

/* A removed snapshot (moment.c's removal): out of the map and the list, freed. */
static void snapshot_drop(void *tree, void *node) {
        SnapshotTree *t = tree;
        Snapshot *s = node;

        hashmap_remove(t->by_name, s->def->name);
        MOMENT_LIST_UNLINK(t, s);
        if (t->reported_current == s)
                t->reported_current = NULL;
        snapshot_free(s);
}

DEFINE_MOMENT_OPS(snapshot, Snapshot, SnapshotTree, SnapshotDef, "snapshot", "Snapshot", "snapshots", "domainsnapshot",
                  SNAPSHOT_PARSE_REDEFINE, SNAPSHOT_FORMAT_SECURE, snapshot_drop, snapshot_tree_forget);

int snapshot_tree_load(SnapshotTree *t, const char *dir, const char *uuid, uint64_t read_cap, char **ret_message) {
        int r = moment_tree_load(&snapshot_moment_ops, t, dir, uuid, read_cap, ret_message);

        t->reported_current = t->current;
        return r;
}

int snapshot_tree_add(SnapshotTree *t, SnapshotDef *def, bool make_current, Snapshot **ret) {
        void *s;
        int r;

        r = moment_tree_add(&snapshot_moment_ops, t, def, make_current, &s);
        if (r >= 0 && ret)
                *ret = s;
        return r;
}

int snapshot_tree_update(SnapshotTree *t, Snapshot *s, SnapshotDef *def, bool make_current) {
        return moment_tree_update(&snapshot_moment_ops, t, s, def, make_current);
}

int snapshot_tree_set_current(SnapshotTree *t, Snapshot *s) {
        return moment_tree_set_current(&snapshot_moment_ops, t, s);
}

int snapshot_tree_remove(SnapshotTree *t, Snapshot *const *remove, size_t n_remove, Snapshot *const *update,
                         SnapshotDef **new_defs, size_t n_update, Snapshot ***ret_changed, size_t *ret_n_changed) {
        void *changed = NULL;
        int r;

        r = moment_tree_remove(&snapshot_moment_ops, t, (void *const *) remove, n_remove, (void *const *) update,
                               (void **) new_defs, n_update, ret_changed ? &changed : NULL, ret_n_changed);
        if (r >= 0 && ret_changed)
                *ret_changed = changed;
        return r;
}

int snapshot_tree_remove_all(SnapshotTree *t) {
        return moment_tree_remove_all(&snapshot_moment_ops, t);
}

/* ---- listing ---- */

static bool state_is_inactive(SnapshotState s) {
        return s == SNAPSHOT_STATE_SHUTOFF;
}

static bool state_is_disk_only(SnapshotState s) {
        return s == SNAPSHOT_STATE_DISK_SNAPSHOT;
}

/* libvirt's filter groups: within a group, no bit set means "any". */
/* The filters only snapshots have; moment.c does LEAVES and NO_LEAVES. */
static bool snapshot_matches(const void *node, const void *userdata) {
        const Snapshot *s = node;
        uint64_t flags = *(const uint64_t *) userdata;
        SnapshotState st = s->def->state;
        SnapshotKind k = snapshot_kind(s);
        uint64_t f;

        /* Every snapshot we list has metadata. */
        f = flags & (SNAPSHOT_LIST_METADATA | SNAPSHOT_LIST_NO_METADATA);
        if (f == SNAPSHOT_LIST_NO_METADATA)
                return false;

        f = flags & (SNAPSHOT_LIST_INACTIVE | SNAPSHOT_LIST_ACTIVE | SNAPSHOT_LIST_DISK_ONLY);
        if (f && f != (SNAPSHOT_LIST_INACTIVE | SNAPSHOT_LIST_ACTIVE | SNAPSHOT_LIST_DISK_ONLY)) {
                bool ok = false;
                if ((f & SNAPSHOT_LIST_INACTIVE) && state_is_inactive(st))
                        ok = true;
                if ((f & SNAPSHOT_LIST_DISK_ONLY) && state_is_disk_only(st))
                        ok = true;
                if ((f & SNAPSHOT_LIST_ACTIVE) && !state_is_inactive(st) && !state_is_disk_only(st))
                        ok = true;
                if (!ok)
                        return false;
        }
        f = flags & (SNAPSHOT_LIST_INTERNAL | SNAPSHOT_LIST_EXTERNAL);
        if (f && f != (SNAPSHOT_LIST_INTERNAL | SNAPSHOT_LIST_EXTERNAL)) {
                /* A mixed snapshot counts as external, as in libvirt. */
                bool external = k != SNAPSHOT_KIND_INTERNAL;
                if (external != !!(f & SNAPSHOT_LIST_EXTERNAL))
                        return false;
        }
        return true;
}

int snapshot_tree_list(const SnapshotTree *t, const Snapshot *parent, uint64_t flags, Snapshot ***ret, size_t *ret_n) {
        MomentListFlags mf = moment_list_flags(flags, SNAPSHOT_LIST_ROOTS, SNAPSHOT_LIST_TOPOLOGICAL, SNAPSHOT_LIST_LEAVES,
                                               SNAPSHOT_LIST_NO_LEAVES);
        void *l;
        int r;

        r = moment_tree_list(&snapshot_moment_ops, t, parent, mf, snapshot_matches, &flags, &l, ret_n);
        if (r >= 0)
                *ret = l;
        return r;
}

/* ---- REDEFINE ---- */

static int redefine_check(Domain *d, const SnapshotDef *def, char **ret_message) {
        /* A snapshot being taken picked its parent already; the tree waits. */
        if (d->snapshot_busy)
                return error_message(ret_message, -QSNAP_E_BUSY, "Domain '%s' is taking a snapshot; try again after it.",
                                     d->def->name);
        if (!def->name)
                return error_message(ret_message, -QSNAP_E_INVALID_XML, "REDEFINE needs the snapshot's <name>.");
        if (snapshot_tree_find(&d->snapshots, def->name))
                return error_message(ret_message, -QSNAP_E_ALREADY_EXISTS,
                                     "Domain '%s' has a snapshot named '%s' already.", d->def->name, def->name);
        if (def->parent && !snapshot_tree_find(&d->snapshots, def->parent))
                return error_message(ret_message, -QSNAP_E_NO_SUCH_SNAPSHOT, "The parent snapshot '%s' does not exist.",
                                     def->parent);
        /* Delete unlinks and merges what it names, Revert reads it: only
         * files in the domain's allowed folders may be recorded. */
        return gate_check_snapshot_def(d, def, ret_message);
}

int snapshot_redefine_prepare(Domain *d, const char *xml, SnapshotDef **ret, char **ret_message) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
        _cleanup_free_ char *why = NULL;
        int r;

        r = snapshot_def_parse(xml, strlen(xml), SNAPSHOT_PARSE_REDEFINE, &def, &why);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return error_message(ret_message, -QSNAP_E_INVALID_XML, "Invalid snapshot XML: %s", strna(why));
        r = redefine_check(d, def, ret_message);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(def);
        return 0;
}

int snapshot_redefine(Domain *d, SnapshotDef *def, bool make_current, Snapshot **ret, char **ret_message) {
        _cleanup_(snapshot_def_freep) SnapshotDef *owned = def;
        Snapshot *s;
        int r;

        r = redefine_check(d, def, ret_message);
        if (r < 0)
                return r;
        r = snapshot_tree_add(&d->snapshots, TAKE_PTR(owned), make_current, &s);
        if (r < 0)
                return error_message(ret_message, r, "Cannot store the snapshot metadata.");
        manager_notify_snapshot_added(d->manager, d, s);
        if (ret)
                *ret = s;
        return 0;
}
