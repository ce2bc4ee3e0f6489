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

static void checkpoint_tree_forget(void *tree) {
        CheckpointTree *t = tree;

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

DEFINE_MOMENT_OPS(checkpoint, Checkpoint, CheckpointTree, CheckpointDef, "checkpoint", "Checkpoint", "checkpoints",
                  "domaincheckpoint", CHECKPOINT_PARSE_REDEFINE, CHECKPOINT_FORMAT_SECURE, checkpoint_drop,
                  checkpoint_tree_forget);

int checkpoint_tree_load(CheckpointTree *t, const char *dir, const char *uuid, uint64_t read_cap, char **ret_message) {
        return moment_tree_load(&checkpoint_moment_ops, t, dir, uuid, read_cap, ret_message);
}

int checkpoint_tree_add(CheckpointTree *t, CheckpointDef *def, bool make_current, Checkpoint **ret) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *owned = def;
        void *c;
        int r;

        if (!def->name)
                return -EINVAL;
        if (checkpoint_tree_find(t, def->name))
                return -QSNAP_E_ALREADY_EXISTS;
        if (def->parent && !checkpoint_tree_find(t, def->parent))
                return -QSNAP_E_NO_SUCH_CHECKPOINT;
        r = moment_tree_add(&checkpoint_moment_ops, t, TAKE_PTR(owned), make_current, &c);
        if (r >= 0 && ret)
                *ret = c;
        return r;
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
        return moment_tree_remove_all(&checkpoint_moment_ops, t);
}

int checkpoint_tree_list(const CheckpointTree *t, const Checkpoint *parent, uint64_t flags, Checkpoint ***ret,
                         size_t *ret_n) {
        MomentListFlags mf = moment_list_flags(flags, CHECKPOINT_LIST_ROOTS, CHECKPOINT_LIST_TOPOLOGICAL,
                                               CHECKPOINT_LIST_LEAVES, CHECKPOINT_LIST_NO_LEAVES);
        void *l;
        int r;

        if (flags & ~CHECKPOINT_LIST_ALL)
                return -EINVAL;
        r = moment_tree_list(&checkpoint_moment_ops, t, parent, mf, NULL, NULL, &l, ret_n);
        if (r >= 0)
                *ret = l;
        return r;
}
