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

/* ---- how moment.c sees the tree ---- */

static void *ops_first(const void *tree) {
        return ((const CheckpointTree *) tree)->first;
}

static void *ops_next(const void *node) {
        return ((const Checkpoint *) node)->next;
}

static void *ops_parent(const void *node) {
        return ((const Checkpoint *) node)->parent;
}

static size_t ops_n_children(const void *node) {
        return ((const Checkpoint *) node)->n_children;
}

static void *ops_child(const void *node, size_t i) {
        return ((const Checkpoint *) node)->children[i];
}

static uint64_t ops_seq(const void *node) {
        return ((const Checkpoint *) node)->seq;
}

static const MomentOps checkpoint_moment_ops = {
        .first = ops_first,
        .next = ops_next,
        .parent = ops_parent,
        .n_children = ops_n_children,
        .child = ops_child,
        .seq = ops_seq,
};

static Checkpoint **checkpoints_from(void *const *nodes, size_t n) {
        Checkpoint **l = new0(Checkpoint *, n);

        for (size_t i = 0; l && i < n; i++)
                l[i] = nodes[i];
        return l;
}

/* ---- building ---- */

static int add_child(Checkpoint *parent, Checkpoint *child) {
        Checkpoint **c = reallocarray(parent->children, parent->n_children + 1, sizeof(Checkpoint *));

        if (!c)
                return -ENOMEM;
        c[parent->n_children++] = child;
        parent->children = c;
        return 0;
}

/* After the store commit, the tree in memory follows: nothing here can
 * fail. Takes children[i] and defs[k]; frees the removed checkpoints. */
static void tree_apply_removal(CheckpointTree *t, const MomentRemoval *plan, Checkpoint ***children,
                               Checkpoint **touched, CheckpointDef **defs, size_t n_touched, Checkpoint *const *remove,
                               size_t n_remove) {
        for (size_t i = 0; i < plan->n_parents; i++) {
                Checkpoint *p = plan->parents[i].parent;

                free(p->children);
                p->children = TAKE_PTR(children[i]);
                p->n_children = plan->parents[i].n;
        }
        for (size_t k = 0; k < n_touched; k++) {
                Checkpoint *c = touched[k];
                CheckpointDef *old = c->def;

                /* The map borrows the name: re-key before the old one goes. */
                c->def = TAKE_PTR(defs[k]);
                (void) hashmap_replace(t->by_name, c->def->name, c);
                checkpoint_def_free(old);
        }
        for (size_t m = 0; m < plan->n_moves; m++)
                ((Checkpoint *) plan->moves[m].node)->parent = plan->moves[m].parent;
        for (size_t i = 0; i < n_remove; i++) {
                Checkpoint *c = remove[i];

                hashmap_remove(t->by_name, c->def->name);
                if (c->prev)
                        c->prev->next = c->next;
                else
                        t->first = c->next;
                if (c->next)
                        c->next->prev = c->prev;
                else
                        t->last = c->prev;
                t->n--;
        }
        for (size_t i = 0; i < n_remove; i++)
                checkpoint_free(remove[i]);
        t->current = plan->new_current;
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
        c->prev = t->last;
        if (t->last)
                t->last->next = c;
        else
                t->first = c;
        t->last = c;
        t->n++;
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
        _cleanup_free_ char *xml = NULL;
        StoreOp ops[2];
        int r;

        if (!def->name)
                return -EINVAL;
        if (checkpoint_tree_find(t, def->name))
                return -QSNAP_E_ALREADY_EXISTS;
        if (def->parent && !checkpoint_tree_find(t, def->parent))
                return -QSNAP_E_NO_SUCH_CHECKPOINT;
        /* The store keeps everything, secrets included; GetXMLDesc filters. */
        r = checkpoint_def_format(def, CHECKPOINT_FORMAT_SECURE, &xml);
        if (r < 0)
                return r;
        ops[0] = (StoreOp) { .type = STORE_OP_PUT, .name = def->name, .xml = xml };
        ops[1] = (StoreOp) { .type = STORE_OP_CURRENT, .name = def->name };
        r = store_commit(t->store, ops, make_current ? 2 : 1);
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
        _cleanup_(checkpoint_def_freep) CheckpointDef *owned = def;
        _cleanup_free_ char *xml = NULL;
        StoreOp ops[2];
        int r;

        if (!def->name || !streq(def->name, c->def->name) || !streq_ptr(def->parent, c->def->parent))
                return -EINVAL;
        r = checkpoint_def_format(def, CHECKPOINT_FORMAT_SECURE, &xml);
        if (r < 0)
                return r;
        ops[0] = (StoreOp) { .type = STORE_OP_PUT, .name = def->name, .xml = xml };
        ops[1] = (StoreOp) { .type = STORE_OP_CURRENT, .name = def->name };
        r = store_commit(t->store, ops, make_current ? 2 : 1);
        if (r < 0)
                return r;
        /* The name map borrows the name string: re-key it before the old
         * definition goes. */
        {
                CheckpointDef *old = c->def;

                c->def = TAKE_PTR(owned);
                (void) hashmap_replace(t->by_name, c->def->name, c);
                checkpoint_def_free(old);
        }
        if (make_current)
                t->current = c;
        return 0;
}

int checkpoint_tree_set_current(CheckpointTree *t, Checkpoint *c) {
        StoreOp op = { .type = STORE_OP_CURRENT, .name = c ? c->def->name : NULL };
        int r;

        if (t->current == c)
                return 0;
        r = store_commit(t->store, &op, 1);
        if (r < 0)
                return r;
        t->current = c;
        return 0;
}

int checkpoint_tree_remove(CheckpointTree *t, Checkpoint *const *remove, size_t n_remove, Checkpoint *const *update,
                           CheckpointDef **new_defs, size_t n_update, Checkpoint ***ret_changed, size_t *ret_n_changed) {
        _cleanup_(moment_removal_done) MomentRemoval plan = {};
        Checkpoint **touched = NULL, **changed = NULL, ***children = NULL;
        CheckpointDef **defs = NULL;
        char **xmls = NULL;
        void **nodes = NULL;
        StoreOp *ops = NULL;
        size_t n_touched = 0, n_ops = 0;
        int r = -ENOMEM;

        nodes = new0(void *, n_remove);
        if (!nodes)
                goto finish;
        for (size_t i = 0; i < n_remove; i++)
                nodes[i] = remove[i];
        r = moment_plan_removal(&checkpoint_moment_ops, nodes, n_remove, t->current, &plan);
        if (r < 0)
                goto finish;
        r = -ENOMEM;

        /* Per surviving checkpoint touched (updated or moved): its new definition. */
        touched = new0(Checkpoint *, n_update + plan.n_moves + 1);
        defs = new0(CheckpointDef *, n_update + plan.n_moves + 1);
        if (!touched || !defs)
                goto finish;
        for (size_t i = 0; i < n_update; i++) {
                touched[n_touched] = update[i];
                defs[n_touched++] = TAKE_PTR(new_defs[i]);
        }
        for (size_t m = 0; m < plan.n_moves; m++) {
                Checkpoint *c = plan.moves[m].node, *p = plan.moves[m].parent;
                size_t k;

                for (k = 0; k < n_touched && touched[k] != c; k++)
                        ;
                if (k == n_touched) {
                        r = checkpoint_def_copy(c->def, &defs[k]);
                        if (r < 0)
                                goto finish;
                        touched[n_touched++] = c;
                        r = -ENOMEM;
                }
                if (free_and_strdup(&defs[k]->parent, p ? p->def->name : NULL) < 0)
                        goto finish;
        }
        /* Updated definitions keep the parent the tree gives them. */
        for (size_t k = 0; k < n_update; k++) {
                Checkpoint *p = touched[k]->parent;

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
                if (!streq_ptr(defs[k]->name, touched[k]->def->name) || moment_removal_removes(&plan, touched[k])) {
                        r = -EINVAL;
                        goto finish;
                }
                r = checkpoint_def_format(defs[k], CHECKPOINT_FORMAT_SECURE, &xmls[k]);
                if (r < 0)
                        goto finish;
                ops[n_ops++] = (StoreOp) { .type = STORE_OP_PUT, .name = defs[k]->name, .xml = xmls[k] };
        }
        /* DELETE of the current entry leaves none current. */
        if (plan.new_current)
                ops[n_ops++] = (StoreOp) { .type = STORE_OP_CURRENT, .name = ((Checkpoint *) plan.new_current)->def->name };

        /* Everything the memory update needs, before the commit: after it,
         * nothing may fail. */
        r = -ENOMEM;
        changed = checkpoints_from(plan.changed, plan.n_changed);
        children = new0(Checkpoint **, plan.n_parents);
        if (!changed || !children)
                goto finish;
        for (size_t i = 0; i < plan.n_parents; i++) {
                children[i] = checkpoints_from(plan.parents[i].children, plan.parents[i].n);
                if (!children[i])
                        goto finish;
        }

        r = store_commit(t->store, ops, n_ops);
        if (r < 0)
                goto finish;

        tree_apply_removal(t, &plan, children, touched, defs, n_touched, remove, n_remove);
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
                checkpoint_def_free(defs[k]);
        for (size_t i = 0; i < n_update; i++)
                new_defs[i] = checkpoint_def_free(new_defs[i]);
        for (size_t k = 0; xmls && k < n_touched; k++)
                free(xmls[k]);
        free(xmls);
        free(ops);
        free(defs);
        free(touched);
        free(changed);
        free(nodes);
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
                l = checkpoints_from(nodes, n);
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
