/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The snapshot tree and its persistence. Every change is written to the
 * store first, as one transaction, and applied in memory only when that
 * worked, so the tree in memory never disagrees with the file.
 */
#include "core/snapshot.h"
#include "util/util.h"

static const char *const snapshot_kind_table[_SNAPSHOT_KIND_MAX] = {
        [SNAPSHOT_KIND_INTERNAL] = "internal",
        [SNAPSHOT_KIND_EXTERNAL] = "external",
        [SNAPSHOT_KIND_MIXED] = "mixed",
};

const char *snapshot_kind_to_string(SnapshotKind k) {
        if (k < 0 || k >= _SNAPSHOT_KIND_MAX)
                return NULL;
        return snapshot_kind_table[k];
}

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

static bool in_list(Snapshot *const *l, size_t n, const Snapshot *s) {
        for (size_t i = 0; i < n; i++)
                if (l[i] == s)
                        return true;
        return false;
}

static Snapshot *surviving_ancestor(Snapshot *s, Snapshot *const *remove, size_t n_remove) {
        Snapshot *p = s->parent;

        while (p && in_list(remove, n_remove, p))
                p = p->parent;
        return p;
}

static int changed_push(Snapshot ***l, size_t *n, Snapshot *s) {
        Snapshot **a;

        if (!s || in_list(*l, *n, s))
                return 0;
        a = reallocarray(*l, *n + 1, sizeof(Snapshot *));
        if (!a)
                return -ENOMEM;
        a[(*n)++] = s;
        *l = a;
        return 0;
}

int snapshot_tree_remove(SnapshotTree *t, Snapshot *const *remove, size_t n_remove, Snapshot *const *update,
                         SnapshotDef **new_defs, size_t n_update, Snapshot ***ret_changed, size_t *ret_n_changed) {
        /* Per surviving snapshot touched: its new definition. */
        Snapshot **touched = NULL, **changed = NULL;
        SnapshotDef **defs = NULL;
        char **xmls = NULL;
        StoreOp *ops = NULL;
        size_t n_touched = 0, n_changed = 0, n_ops = 0;
        Snapshot *new_current = t->current;
        int r = -ENOMEM;

        touched = new0(Snapshot *, n_update + t->n + 1);
        defs = new0(SnapshotDef *, n_update + t->n + 1);
        if (!touched || !defs)
                goto finish;
        for (size_t i = 0; i < n_update; i++) {
                touched[n_touched] = update[i];
                defs[n_touched++] = TAKE_PTR(new_defs[i]);
        }
        /* Children of removed snapshots: to the nearest survivor above. */
        for (Snapshot *s = t->first; s; s = s->next) {
                Snapshot *p;
                size_t k;

                if (in_list(remove, n_remove, s) || !s->parent || !in_list(remove, n_remove, s->parent))
                        continue;
                p = surviving_ancestor(s, remove, n_remove);
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
                if (changed_push(&changed, &n_changed, s) < 0 || changed_push(&changed, &n_changed, p) < 0)
                        goto finish;
        }
        /* Updated definitions keep the parent the tree gives them. */
        for (size_t k = 0; k < n_update; k++) {
                Snapshot *p = touched[k]->parent;

                if (p && in_list(remove, n_remove, p))
                        continue; /* set above */
                if (free_and_strdup(&defs[k]->parent, p ? p->def->name : NULL) < 0)
                        goto finish;
        }
        for (size_t i = 0; i < n_remove; i++) {
                Snapshot *p = surviving_ancestor(remove[i], remove, n_remove);

                if (!in_list(remove, n_remove, remove[i]->parent) && changed_push(&changed, &n_changed, p) < 0)
                        goto finish;
        }
        if (new_current && in_list(remove, n_remove, new_current))
                new_current = surviving_ancestor(new_current, remove, n_remove);

        ops = new0(StoreOp, n_remove + n_touched + 1);
        xmls = new0(char *, n_touched + 1);
        if (!ops || !xmls)
                goto finish;
        for (size_t i = 0; i < n_remove; i++)
                ops[n_ops++] = (StoreOp) { .type = STORE_OP_DELETE, .name = remove[i]->def->name };
        for (size_t k = 0; k < n_touched; k++) {
                if (!streq_ptr(defs[k]->name, touched[k]->def->name)) {
                        r = -EINVAL;
                        goto finish;
                }
                r = snapshot_def_format(defs[k], SNAPSHOT_FORMAT_SECURE, &xmls[k]);
                if (r < 0)
                        goto finish;
                ops[n_ops++] = (StoreOp) { .type = STORE_OP_PUT, .name = defs[k]->name, .xml = xmls[k] };
        }
        /* DELETE of the current entry leaves none current. */
        if (new_current)
                ops[n_ops++] = (StoreOp) { .type = STORE_OP_CURRENT, .name = new_current->def->name };
        r = store_commit(t->store, ops, n_ops);
        if (r < 0)
                goto finish;

        /* Stored: now the same in memory, which cannot fail but for OOM
         * in a realloc that only shrinks or stays. */
        for (size_t k = 0; k < n_touched; k++) {
                Snapshot *s = touched[k];
                Snapshot *p = defs[k]->parent ? snapshot_tree_find(t, defs[k]->parent) : NULL;

                SnapshotDef *old = s->def;

                /* The map borrows the name: re-key before the old one goes. */
                s->def = TAKE_PTR(defs[k]);
                (void) hashmap_replace(t->by_name, s->def->name, s);
                snapshot_def_free(old);
                if (p != s->parent) {
                        s->parent = p;
                        if (p)
                                (void) snapshot_add_child(p, s);
                }
        }
        for (size_t i = 0; i < n_remove; i++) {
                Snapshot *s = remove[i];
                Snapshot *p = s->parent;

                if (p) {
                        for (size_t c = 0; c < p->n_children; c++)
                                if (p->children[c] == s) {
                                        memmove(p->children + c, p->children + c + 1,
                                                (p->n_children - c - 1) * sizeof(Snapshot *));
                                        p->n_children--;
                                        break;
                                }
                }
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
        for (size_t i = 0; i < n_remove; i++)
                snapshot_free(remove[i]);
        t->current = new_current;
        /* Children arrays of survivors: keep creation order. */
        for (size_t i = 0; i < n_changed; i++) {
                Snapshot *p = changed[i];
                size_t k = 0;

                for (Snapshot *s = t->first; s; s = s->next)
                        if (s->parent == p && k < p->n_children)
                                p->children[k++] = s;
        }
        if (ret_changed) {
                *ret_changed = TAKE_PTR(changed);
                *ret_n_changed = n_changed;
        }
        r = 0;
finish:
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
        t->first = t->last = t->current = NULL;
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
static bool snapshot_matches(const Snapshot *s, uint64_t flags) {
        SnapshotState st = s->def->state;
        SnapshotKind k = snapshot_kind(s);
        uint64_t f;

        f = flags & (SNAPSHOT_LIST_LEAVES | SNAPSHOT_LIST_NO_LEAVES);
        if (f && f != (SNAPSHOT_LIST_LEAVES | SNAPSHOT_LIST_NO_LEAVES)) {
                bool leaf = s->n_children == 0;
                if (leaf != !!(f & SNAPSHOT_LIST_LEAVES))
                        return false;
        }
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

typedef struct SnapshotList {
        Snapshot **items;
        size_t n, allocated;
} SnapshotList;

static int list_push(SnapshotList *l, Snapshot *s) {
        if (l->n == l->allocated) {
                size_t a = l->allocated ? l->allocated * 2 : 16;
                Snapshot **p = reallocarray(l->items, a, sizeof(Snapshot *));
                if (!p)
                        return -ENOMEM;
                l->items = p;
                l->allocated = a;
        }
        l->items[l->n++] = s;
        return 0;
}

/* Parents before children: a breadth-first walk from the given roots. */
static int list_topological(SnapshotList *out, Snapshot *const *roots, size_t n_roots, bool recurse, uint64_t flags) {
        SnapshotList queue = {};
        int r = 0;

        for (size_t i = 0; i < n_roots && r >= 0; i++)
                r = list_push(&queue, roots[i]);
        for (size_t i = 0; i < queue.n && r >= 0; i++) {
                Snapshot *s = queue.items[i];

                if (snapshot_matches(s, flags))
                        r = list_push(out, s);
                for (size_t j = 0; recurse && j < s->n_children && r >= 0; j++)
                        r = list_push(&queue, s->children[j]);
        }
        free(queue.items);
        return r;
}

static bool is_descendant_of(const Snapshot *s, const Snapshot *ancestor) {
        for (const Snapshot *p = s->parent; p; p = p->parent)
                if (p == ancestor)
                        return true;
        return false;
}

int snapshot_tree_list(const SnapshotTree *t, const Snapshot *parent, uint64_t flags, Snapshot ***ret, size_t *ret_n) {
        SnapshotList out = {};
        int r = 0;

        if (parent) {
                bool descendants = flags & SNAPSHOT_LIST_DESCENDANTS;

                if (flags & SNAPSHOT_LIST_TOPOLOGICAL)
                        r = list_topological(&out, parent->children, parent->n_children, descendants, flags);
                else
                        for (Snapshot *s = t->first; s && r >= 0; s = s->next) {
                                if (descendants ? !is_descendant_of(s, parent) : s->parent != parent)
                                        continue;
                                if (snapshot_matches(s, flags))
                                        r = list_push(&out, s);
                        }
        } else if (flags & SNAPSHOT_LIST_TOPOLOGICAL) {
                SnapshotList roots = {};

                for (Snapshot *s = t->first; s && r >= 0; s = s->next)
                        if (!s->parent)
                                r = list_push(&roots, s);
                if (r >= 0)
                        r = list_topological(&out, roots.items, roots.n, !(flags & SNAPSHOT_LIST_ROOTS), flags);
                free(roots.items);
        } else
                for (Snapshot *s = t->first; s && r >= 0; s = s->next) {
                        if ((flags & SNAPSHOT_LIST_ROOTS) && s->parent)
                                continue;
                        if (snapshot_matches(s, flags))
                                r = list_push(&out, s);
                }

        if (r < 0) {
                free(out.items);
                return r;
        }
        *ret = out.items;
        *ret_n = out.n;
        return 0;
}
