/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The checkpoint tree and its persistence. Every change is written to the
 * store first, as one transaction, and applied in memory only when that
 * worked, so the tree in memory never disagrees with the file.
 */
#include "core/checkpoint.h"
#include "core/moment.h"
#include "util/util.h"

const char *checkpoint_name(const Checkpoint *c) {
        return c->def->name;
}

void checkpoint_tree_init(CheckpointTree *t, Domain *owner) {
        *t = (CheckpointTree) { .domain = owner };
}

static void checkpoint_free(Checkpoint *c) {
        checkpoint_def_free(c->def);
        strv_free(c->problems);
        free(c->children);
        free(c);
}

static void checkpoint_tree_forget(CheckpointTree *t) {
        for (Checkpoint *c = t->first, *next; c; c = next) {
                next = c->next;
                checkpoint_free(c);
        }
        hashmap_free(t->by_name);
        t->by_name = NULL;
        t->first = t->last = t->current = NULL;
        t->n = 0;
}

void checkpoint_tree_done(CheckpointTree *t) {
        checkpoint_tree_forget(t);
        store_free(t->store);
        *t = (CheckpointTree) { .domain = t->domain };
}

Checkpoint *checkpoint_tree_find(const CheckpointTree *t, const char *name) {
        return t->by_name && name ? hashmap_get(t->by_name, name) : NULL;
}

/* A removed checkpoint (moment.c's removal): out of the map and the list, freed. */
static void checkpoint_drop(void *tree, void *node) {
        CheckpointTree *t = tree;
        Checkpoint *c = node;

        hashmap_remove(t->by_name, c->def->name);
        MOMENT_LIST_UNLINK(t, c);
        checkpoint_free(c);
}

DEFINE_MOMENT_OPS(checkpoint, Checkpoint, CheckpointTree, CheckpointDef, CHECKPOINT_FORMAT_SECURE, checkpoint_drop);

/* ---- building ---- */

static int add_child(Checkpoint *parent, Checkpoint *child) {
        Checkpoint **c = reallocarray(parent->children, parent->n_children + 1, sizeof(Checkpoint *));

        if (!c)
                return -ENOMEM;
        c[parent->n_children++] = child;
        parent->children = c;
        return 0;
}

/* Links def (taken on success) into the tree in memory; no I/O. */
static int tree_link(CheckpointTree *t, CheckpointDef *def, Checkpoint **ret) {
        Checkpoint *c, *parent = NULL;
        int r;

        if (!t->by_name) {
                t->by_name = hashmap_new();
                if (!t->by_name)
                        return -ENOMEM;
        }
        if (def->parent) {
                parent = checkpoint_tree_find(t, def->parent);
                if (!parent) {
                        log_warning("Checkpoint '%s' names parent '%s', which does not exist; it becomes a root.",
                                    def->name, def->parent);
                        def->parent = mfree(def->parent);
                }
        }

        c = new0(Checkpoint, 1);
        if (!c)
                return -ENOMEM;
        c->tree = t;
        c->def = def;
        r = hashmap_put(t->by_name, def->name, c);
        if (r < 0) {
                free(c);
                return r;
        }
        if (parent) {
                r = add_child(parent, c);
                if (r < 0) {
                        hashmap_remove(t->by_name, def->name);
                        free(c);
                        return r;
                }
                c->parent = parent;
        }
        c->seq = t->next_seq++;
        MOMENT_LIST_APPEND(t, c);
        if (ret)
                *ret = c;
        return 0;
}

int checkpoint_tree_load(CheckpointTree *t, const char *dir, const char *uuid, uint64_t read_cap, char **ret_message) {
        _cleanup_free_ char *current = NULL;
        StoreEntry *entries = NULL;
        size_t n = 0;
        int r;

        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        if (!t->store) {
                r = store_open(dir, uuid, "checkpoints", "domaincheckpoint", read_cap, &t->store);
                if (r < 0)
                        return r;
        }
        r = store_load(t->store, &entries, &n, &current, ret_message);
        if (r < 0)
                return r;

        checkpoint_tree_forget(t);
        /* Entries come in creation order, so parents come first. */
        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *message = NULL;
                CheckpointDef *def = NULL;

                r = checkpoint_def_parse(entries[i].xml, strlen(entries[i].xml), CHECKPOINT_PARSE_REDEFINE, &def,
                                         &message);
                if (r < 0) {
                        log_error("Ignoring stored checkpoint '%s' of domain %s: %s", entries[i].name, uuid,
                                  strna(message));
                        continue;
                }
                if (checkpoint_tree_find(t, def->name)) {
                        log_error("Ignoring stored checkpoint '%s' of domain %s: the name is taken.", entries[i].name,
                                  uuid);
                        checkpoint_def_free(def);
                        continue;
                }
                r = tree_link(t, def, NULL);
                if (r < 0) {
                        checkpoint_def_free(def);
                        store_entries_free(entries, n);
                        return r;
                }
        }
        store_entries_free(entries, n);
        t->current = checkpoint_tree_find(t, current);
        return 0;
}

int checkpoint_tree_add(CheckpointTree *t, CheckpointDef *def, bool make_current, Checkpoint **ret) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *owned = def;
        int r;

        if (!def->name)
                return -EINVAL;
        if (checkpoint_tree_find(t, def->name))
                return -QSNAP_E_ALREADY_EXISTS;
        if (def->parent && !checkpoint_tree_find(t, def->parent))
                return -QSNAP_E_NO_SUCH_CHECKPOINT;
        r = moment_tree_put(&checkpoint_moment_ops, t, def, make_current);
        if (r < 0)
                return r;
        r = tree_link(t, owned, ret);
        if (r < 0)
                return r; /* memory only: the next load has it */
        TAKE_PTR(owned);
        if (make_current)
                t->current = t->last;
        return 0;
}

int checkpoint_tree_update(CheckpointTree *t, Checkpoint *c, CheckpointDef *def, bool make_current) {
        return moment_tree_update(&checkpoint_moment_ops, t, c, def, make_current);
}

int checkpoint_tree_set_current(CheckpointTree *t, Checkpoint *c) {
        return moment_tree_set_current(&checkpoint_moment_ops, t, c);
}

int checkpoint_tree_remove(CheckpointTree *t, Checkpoint *const *remove, size_t n_remove, Checkpoint *const *update,
                           CheckpointDef **new_defs, size_t n_update, Checkpoint ***ret_changed, size_t *ret_n_changed) {
        void *changed = NULL;
        int r;

        r = moment_tree_remove(&checkpoint_moment_ops, t, (void *const *) remove, n_remove, (void *const *) update,
                               (void **) new_defs, n_update, ret_changed ? &changed : NULL, ret_n_changed);
        if (r >= 0 && ret_changed)
                *ret_changed = changed;
        return r;
}

int checkpoint_tree_remove_all(CheckpointTree *t) {
        int r = 0;

        if (t->store)
                r = store_remove(t->store);
        if (r < 0)
                return r;
        checkpoint_tree_forget(t);
        return 0;
}

int checkpoint_tree_list(const CheckpointTree *t, const Checkpoint *parent, uint64_t flags, Checkpoint ***ret,
                         size_t *ret_n) {
        MomentListFlags mf = 0;
        void **nodes = NULL;
        Checkpoint **l = NULL;
        size_t n = 0;
        int r;

        if (flags & ~CHECKPOINT_LIST_ALL)
                return -EINVAL;
        /* libvirt chose its checkpoint list flags to be the moment flags. */
        if (flags & CHECKPOINT_LIST_ROOTS)
                mf |= MOMENT_LIST_ROOTS_OR_DESCENDANTS;
        if (flags & CHECKPOINT_LIST_TOPOLOGICAL)
                mf |= MOMENT_LIST_TOPOLOGICAL;
        if (flags & CHECKPOINT_LIST_LEAVES)
                mf |= MOMENT_LIST_LEAVES;
        if (flags & CHECKPOINT_LIST_NO_LEAVES)
                mf |= MOMENT_LIST_NO_LEAVES;

        r = moment_list(&checkpoint_moment_ops, t, parent, mf, NULL, NULL, &nodes, &n);
        if (r < 0)
                return r;
        if (n > 0) {
                l = checkpoint_nodes_from(nodes, n);
                if (!l) {
                        free(nodes);
                        return -ENOMEM;
                }
        }
        free(nodes);
        *ret = l;
        *ret_n = n;
        return 0;
}
