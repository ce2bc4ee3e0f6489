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

void snapshot_tree_done(SnapshotTree *t) {
        for (Snapshot *s = t->first, *next; s; s = next) {
                next = s->next;
                snapshot_free(s);
        }
        hashmap_free(t->by_name);
        store_free(t->store);
        *t = (SnapshotTree) { .domain = t->domain };
}

Snapshot *snapshot_tree_find(const SnapshotTree *t, const char *name) {
        return hashmap_get(t->by_name, name);
}

static int snapshot_add_child(Snapshot *parent, Snapshot *child) {
        Snapshot **c;

        c = reallocarray(parent->children, parent->n_children + 1, sizeof(Snapshot *));
        if (!c)
                return -ENOMEM;
        c[parent->n_children++] = child;
        parent->children = c;
        return 0;
}

/* Links a new snapshot into the tree in memory (no I/O). */
static int snapshot_tree_link(SnapshotTree *t, SnapshotDef *def, Snapshot **ret) {
        Snapshot *s, *parent = NULL;
        int r;

        if (!t->by_name) {
                t->by_name = hashmap_new();
                if (!t->by_name)
                        return -ENOMEM;
        }
        if (def->parent) {
                parent = snapshot_tree_find(t, def->parent);
                if (!parent) {
                        log_warning("Snapshot '%s' names parent '%s', which does not exist; it becomes a root.",
                                    def->name, def->parent);
                        def->parent = mfree(def->parent);
                }
        }

        s = new0(Snapshot, 1);
        if (!s)
                return -ENOMEM;
        s->tree = t;
        s->def = def;
        s->seq = t->next_seq++;
        r = hashmap_put(t->by_name, def->name, s);
        if (r < 0) {
                free(s);
                return r;
        }
        if (parent) {
                r = snapshot_add_child(parent, s);
                if (r < 0) {
                        hashmap_remove(t->by_name, def->name);
                        free(s);
                        return r;
                }
                s->parent = parent;
        }
        s->prev = t->last;
        if (t->last)
                t->last->next = s;
        else
                t->first = s;
        t->last = s;
        t->n++;
        if (ret)
                *ret = s;
        return 0;
}

int snapshot_tree_load(SnapshotTree *t, const char *dir, const char *uuid, uint64_t read_cap, char **ret_message) {
        _cleanup_free_ char *current = NULL;
        StoreEntry *entries = NULL;
        size_t n = 0;
        int r;

        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        r = store_open(dir, uuid, "snapshots", "domainsnapshot", read_cap, &t->store);
        if (r < 0)
                return r;
        r = store_load(t->store, &entries, &n, &current, ret_message);
        if (r < 0)
                return r;

        /* Entries come in creation order, so parents come first. */
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *message = NULL;
                SnapshotDef *def = NULL;

                r = snapshot_def_parse(entries[i].xml, strlen(entries[i].xml), SNAPSHOT_PARSE_REDEFINE, &def, &message);
                if (r < 0) {
                        log_error("Ignoring stored snapshot '%s' of domain %s: %s", entries[i].name, uuid, strna(message));
                        continue;
                }
                if (!def->name || snapshot_tree_find(t, def->name)) {
                        log_error("Ignoring stored snapshot '%s' of domain %s: no or duplicate name.", entries[i].name, uuid);
                        snapshot_def_free(def);
                        continue;
                }
                r = snapshot_tree_link(t, def, NULL);
                if (r < 0) {
                        snapshot_def_free(def);
                        store_entries_free(entries, n);
                        return r;
                }
        }
        store_entries_free(entries, n);
        if (current)
                t->current = snapshot_tree_find(t, current);
        t->reported_current = t->current;
        return 0;
}

int snapshot_tree_add(SnapshotTree *t, SnapshotDef *def, bool make_current, Snapshot **ret) {
        _cleanup_free_ char *xml = NULL;
        StoreOp ops[2];
        Snapshot *s;
        int r;

        /* The store keeps everything, secrets included; GetXMLDesc filters. */
        r = snapshot_def_format(def, SNAPSHOT_FORMAT_SECURE, &xml);
        if (r < 0) {
                snapshot_def_free(def);
                return r;
        }
        ops[0] = (StoreOp) { .type = STORE_OP_PUT, .name = def->name, .xml = xml };
        ops[1] = (StoreOp) { .type = STORE_OP_CURRENT, .name = def->name };
        r = store_commit(t->store, ops, make_current ? 2 : 1);
        if (r < 0) {
                snapshot_def_free(def);
                return r;
        }
        r = snapshot_tree_link(t, def, &s);
        if (r < 0) {
                snapshot_def_free(def);
                return r;
        }
        if (make_current)
                t->current = s;
        if (ret)
                *ret = s;
        return 0;
}

int snapshot_tree_update(SnapshotTree *t, Snapshot *s, SnapshotDef *def, bool make_current) {
        _cleanup_(snapshot_def_freep) SnapshotDef *owned = def;
        _cleanup_free_ char *xml = NULL;
        StoreOp ops[2];
        int r;

        if (!def->name || !streq(def->name, s->def->name) || !streq_ptr(def->parent, s->def->parent))
                return -EINVAL;
        r = snapshot_def_format(def, SNAPSHOT_FORMAT_SECURE, &xml);
        if (r < 0)
                return r;
        ops[0] = (StoreOp) { .type = STORE_OP_PUT, .name = def->name, .xml = xml };
        ops[1] = (StoreOp) { .type = STORE_OP_CURRENT, .name = def->name };
        r = store_commit(t->store, ops, make_current ? 2 : 1);
        if (r < 0)
                return r;
        /* The name map borrows the old name string: the new def keeps it. */
        {
                char *name = owned->name;
                owned->name = s->def->name;
                s->def->name = name;
        }
        snapshot_def_free(s->def);
        s->def = TAKE_PTR(owned);
        if (make_current)
                t->current = s;
        return 0;
}

int snapshot_tree_set_current(SnapshotTree *t, Snapshot *s) {
        StoreOp op = { .type = STORE_OP_CURRENT, .name = s ? s->def->name : NULL };
        int r;

        if (t->current == s)
                return 0;
        r = store_commit(t->store, &op, 1);
        if (r < 0)
                return r;
        t->current = s;
        return 0;
}

/* How moment.c sees the tree. */
static void *ops_first(const void *tree) {
        return ((const SnapshotTree *) tree)->first;
}

static void *ops_next(const void *node) {
        return ((const Snapshot *) node)->next;
}

static void *ops_parent(const void *node) {
        return ((const Snapshot *) node)->parent;
}

static size_t ops_n_children(const void *node) {
        return ((const Snapshot *) node)->n_children;
}

static void *ops_child(const void *node, size_t i) {
        return ((const Snapshot *) node)->children[i];
}

static uint64_t ops_seq(const void *node) {
        return ((const Snapshot *) node)->seq;
}

static const MomentOps snapshot_moment_ops = {
        .first = ops_first,
        .next = ops_next,
        .parent = ops_parent,
        .n_children = ops_n_children,
        .child = ops_child,
        .seq = ops_seq,
};

/* moment.c's plan of the removal; *ret_removed: a copy of `remove`. */
static int tree_plan_removal(SnapshotTree *t, Snapshot *const *remove, size_t n_remove, Snapshot ***ret_removed,
                             MomentRemoval *plan) {
        _cleanup_free_ Snapshot **removed = new0(Snapshot *, n_remove);
        /* moment.c wants void pointers: an array of them, not a cast one. */
        _cleanup_free_ void **nodes = new0(void *, n_remove);
        int r;

        if (!removed || !nodes)
                return -ENOMEM;
        for (size_t i = 0; i < n_remove; i++)
                nodes[i] = removed[i] = remove[i];
        r = moment_plan_removal(&snapshot_moment_ops, nodes, n_remove, t->current, plan);
        if (r < 0)
                return r;
        *ret_removed = TAKE_PTR(removed);
        return 0;
}

/* After the store commit, the tree in memory follows: nothing here can
 * fail. Takes children[i] and defs[k]; frees the removed snapshots. */
static void tree_apply_removal(SnapshotTree *t, const MomentRemoval *plan, Snapshot ***children, Snapshot **touched,
                               SnapshotDef **defs, size_t n_touched, Snapshot **removed, size_t n_remove) {
        for (size_t i = 0; i < plan->n_parents; i++) {
                Snapshot *p = plan->parents[i].parent;

                free(p->children);
                p->children = TAKE_PTR(children[i]);
                p->n_children = plan->parents[i].n;
        }
        for (size_t k = 0; k < n_touched; k++) {
                Snapshot *s = touched[k];
                SnapshotDef *old = s->def;

                /* The map borrows the name: re-key before the old one goes. */
                s->def = TAKE_PTR(defs[k]);
                (void) hashmap_replace(t->by_name, s->def->name, s);
                snapshot_def_free(old);
        }
        for (size_t m = 0; m < plan->n_moves; m++)
                ((Snapshot *) plan->moves[m].node)->parent = plan->moves[m].parent;
        for (size_t i = 0; i < n_remove; i++) {
                Snapshot *s = removed[i];

                hashmap_remove(t->by_name, s->def->name);
                if (s->prev)
                        s->prev->next = s->next;
                else
                        t->first = s->next;
                if (s->next)
                        s->next->prev = s->prev;
                else
                        t->last = s->prev;
                t->n--;
        }
        for (size_t i = 0; i < n_remove; i++) {
                if (t->reported_current == removed[i])
                        t->reported_current = NULL;
                snapshot_free(removed[i]);
        }
        t->current = plan->new_current;
}

/* The plan's nodes as snapshots (malloc'ed). */
static Snapshot **snapshots_from(void *const *nodes, size_t n) {
        Snapshot **l = new0(Snapshot *, n);

        for (size_t i = 0; l && i < n; i++)
                l[i] = nodes[i];
        return l;
}

int snapshot_tree_remove(SnapshotTree *t, Snapshot *const *remove, size_t n_remove, Snapshot *const *update,
                         SnapshotDef **new_defs, size_t n_update, Snapshot ***ret_changed, size_t *ret_n_changed) {
        _cleanup_(moment_removal_done) MomentRemoval plan = {};
        /* Per surviving snapshot touched (updated or moved): its new definition. */
        Snapshot **touched = NULL, **changed = NULL, **removed = NULL, ***children = NULL;
        SnapshotDef **defs = NULL;
        char **xmls = NULL;
        StoreOp *ops = NULL;
        size_t n_touched = 0, n_ops = 0;
        int r = -ENOMEM;

        r = tree_plan_removal(t, remove, n_remove, &removed, &plan);
        if (r < 0)
                goto finish;
        r = -ENOMEM;

        touched = new0(Snapshot *, n_update + plan.n_moves + 1);
        defs = new0(SnapshotDef *, n_update + plan.n_moves + 1);
        if (!touched || !defs)
                goto finish;
        for (size_t i = 0; i < n_update; i++) {
                touched[n_touched] = update[i];
                defs[n_touched++] = TAKE_PTR(new_defs[i]);
        }
        /* Moved children: a copy of their definition, unless updated anyway,
         * naming their new parent (libvirt). */
        for (size_t m = 0; m < plan.n_moves; m++) {
                Snapshot *s = plan.moves[m].node, *p = plan.moves[m].parent;
                size_t k;

                for (k = 0; k < n_touched && touched[k] != s; k++)
                        ;
                if (k == n_touched) {
                        r = snapshot_def_copy(s->def, &defs[k]);
                        if (r < 0)
                                goto finish;
                        touched[n_touched++] = s;
                        r = -ENOMEM;
                }
                if (free_and_strdup(&defs[k]->parent, p ? p->def->name : NULL) < 0)
                        goto finish;
        }
        /* Updated definitions keep the parent the tree gives them. */
        for (size_t k = 0; k < n_update; k++) {
                Snapshot *p = touched[k]->parent;

                if (p && moment_removal_removes(&plan, p))
                        continue; /* set above */
                if (free_and_strdup(&defs[k]->parent, p ? p->def->name : NULL) < 0)
                        goto finish;
        }

        ops = new0(StoreOp, n_remove + n_touched + 1);
        xmls = new0(char *, n_touched + 1);
        if (!ops || !xmls)
                goto finish;
        for (size_t i = 0; i < n_remove; i++)
                ops[n_ops++] = (StoreOp) { .type = STORE_OP_DELETE, .name = remove[i]->def->name };
        for (size_t k = 0; k < n_touched; k++) {
                /* An update keeps the name, and a removed snapshot gets none. */
                if (!streq_ptr(defs[k]->name, touched[k]->def->name) || moment_removal_removes(&plan, touched[k])) {
                        r = -EINVAL;
                        goto finish;
                }
                r = snapshot_def_format(defs[k], SNAPSHOT_FORMAT_SECURE, &xmls[k]);
                if (r < 0)
                        goto finish;
                ops[n_ops++] = (StoreOp) { .type = STORE_OP_PUT, .name = defs[k]->name, .xml = xmls[k] };
        }
        /* DELETE of the current entry leaves none current. */
        if (plan.new_current)
                ops[n_ops++] = (StoreOp) { .type = STORE_OP_CURRENT, .name = ((Snapshot *) plan.new_current)->def->name };

        /* Everything the memory update needs, before the commit: after it,
         * nothing may fail. */
        r = -ENOMEM;
        changed = snapshots_from(plan.changed, plan.n_changed);
        children = new0(Snapshot **, plan.n_parents);
        if (!changed || !children)
                goto finish;
        for (size_t i = 0; i < plan.n_parents; i++) {
                children[i] = snapshots_from(plan.parents[i].children, plan.parents[i].n);
                if (!children[i])
                        goto finish;
        }

        r = store_commit(t->store, ops, n_ops);
        if (r < 0)
                goto finish;

        tree_apply_removal(t, &plan, children, touched, defs, n_touched, removed, n_remove);
        if (ret_changed) {
                *ret_changed = TAKE_PTR(changed);
                *ret_n_changed = plan.n_changed;
        }
        r = 0;
finish:
        for (size_t i = 0; children && i < plan.n_parents; i++)
                free(children[i]);
        free(children);
        for (size_t k = 0; defs && k < n_touched; k++)
                snapshot_def_free(defs[k]);
        for (size_t i = 0; i < n_update; i++)
                new_defs[i] = snapshot_def_free(new_defs[i]);
        for (size_t k = 0; xmls && k < n_touched; k++)
                free(xmls[k]);
        free(xmls);
        free(ops);
        free(defs);
        free(touched);
        free(changed);
        free(removed);
        return r;
}

int snapshot_tree_remove_all(SnapshotTree *t) {
        int r = 0;

        if (t->store)
                r = store_remove(t->store);
        if (r < 0)
                return r;
        for (Snapshot *s = t->first, *next; s; s = next) {
                next = s->next;
                snapshot_free(s);
        }
        hashmap_free(t->by_name);
        t->by_name = NULL;
        t->first = t->last = t->current = t->reported_current = NULL;
        t->n = 0;
        return 0;
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
        MomentListFlags mf = 0;
        void **nodes = NULL;
        size_t n = 0;
        Snapshot **l;
        int r;

        if (flags & SNAPSHOT_LIST_ROOTS)
                mf |= MOMENT_LIST_ROOTS_OR_DESCENDANTS;
        if (flags & SNAPSHOT_LIST_TOPOLOGICAL)
                mf |= MOMENT_LIST_TOPOLOGICAL;
        if (flags & SNAPSHOT_LIST_LEAVES)
                mf |= MOMENT_LIST_LEAVES;
        if (flags & SNAPSHOT_LIST_NO_LEAVES)
                mf |= MOMENT_LIST_NO_LEAVES;

        r = moment_list(&snapshot_moment_ops, t, parent, mf, snapshot_matches, &flags, &nodes, &n);
        if (r < 0)
                return r;
        l = n > 0 ? snapshots_from(nodes, n) : NULL;
        free(nodes);
        if (n > 0 && !l)
                return -ENOMEM;
        *ret = l;
        *ret_n = n;
        return 0;
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
