/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Listing and removal planning over a tree seen through MomentOps. Sets of
 * nodes are sorted pointer arrays searched by bisection, so a plan costs
 * what it touches, not what the tree holds.
 */
#include "core/moment.h"
#include "util/util.h"

typedef struct NodeList {
        void **items;
        size_t n, allocated;
} NodeList;

static int list_push(NodeList *l, void *node) {
        if (l->n == l->allocated) {
                size_t a = l->allocated ? l->allocated * 2 : 16;
                void **p = reallocarray(l->items, a, sizeof(void *));

                if (!p)
                        return -ENOMEM;
                l->items = p;
                l->allocated = a;
        }
        l->items[l->n++] = node;
        return 0;
}

static int compare_pointers(const void *a, const void *b) {
        uintptr_t x = (uintptr_t) *(void *const *) a, y = (uintptr_t) *(void *const *) b;
        return x < y ? -1 : x > y;
}

static bool set_contains(void *const *sorted, size_t n, const void *node) {
        /* bsearch(), qsort() and memcpy() want a non-NULL array even when empty. */
        if (n == 0)
                return false;
        return bsearch(&node, sorted, n, sizeof(void *), compare_pointers) != NULL;
}

static int compare_seq(const void *a, const void *b, void *userdata) {
        const MomentOps *ops = userdata;
        uint64_t x = ops->seq(*(void *const *) a), y = ops->seq(*(void *const *) b);

        return x < y ? -1 : x > y;
}

static void sort_by_seq(const MomentOps *ops, void **items, size_t n) {
        if (n > 1)
                qsort_r(items, n, sizeof(void *), compare_seq, (void *) ops);
}

/* Sorted by address, each once. */
static void sort_unique(NodeList *l) {
        size_t k = 0;

        if (l->n > 1)
                qsort(l->items, l->n, sizeof(void *), compare_pointers);
        for (size_t i = 0; i < l->n; i++)
                if (k == 0 || l->items[k - 1] != l->items[i])
                        l->items[k++] = l->items[i];
        l->n = k;
}

/* ---- listing ---- */

static bool node_matches(const MomentOps *ops, const void *node, MomentListFlags flags,
                         bool (*match)(const void *node, const void *userdata), const void *userdata) {
        MomentListFlags f = flags & (MOMENT_LIST_LEAVES | MOMENT_LIST_NO_LEAVES);

        /* libvirt's filter groups: no bit or every bit of a group means any. */
        if (f && f != (MOMENT_LIST_LEAVES | MOMENT_LIST_NO_LEAVES)) {
                bool leaf = ops->n_children(node) == 0;

                if (leaf != !!(f & MOMENT_LIST_LEAVES))
                        return false;
        }
        return !match || match(node, userdata);
}

/* Breadth first from the queue's nodes; recurse: also their descendants. */
static int walk(const MomentOps *ops, NodeList *queue, bool recurse, NodeList *out) {
        int r = 0;

        for (size_t i = 0; i < queue->n && r >= 0; i++) {
                void *node = queue->items[i];

                r = list_push(out, node);
                for (size_t j = 0; recurse && j < ops->n_children(node) && r >= 0; j++)
                        r = list_push(queue, ops->child(node, j));
        }
        return r;
}

int moment_list(const MomentOps *ops, const void *tree, const void *parent, MomentListFlags flags,
                bool (*match)(const void *node, const void *userdata), const void *userdata, void ***ret,
                size_t *ret_n) {
        NodeList candidates = {}, queue = {}, out = {};
        bool rod = flags & MOMENT_LIST_ROOTS_OR_DESCENDANTS, topological = flags & MOMENT_LIST_TOPOLOGICAL;
        int r = 0;

        if (parent) {
                /* Children, or with DESCENDANTS the whole subtree below. */
                for (size_t j = 0; j < ops->n_children(parent) && r >= 0; j++)
                        r = list_push(&queue, ops->child(parent, j));
                if (r >= 0)
                        r = walk(ops, &queue, rod, &candidates);
                if (r >= 0 && rod && !topological)
                        sort_by_seq(ops, candidates.items, candidates.n);
        } else if (topological) {
                for (void *node = ops->first(tree); node && r >= 0; node = ops->next(node))
                        if (!ops->parent(node))
                                r = list_push(&queue, node);
                if (r >= 0)
                        r = walk(ops, &queue, !rod, &candidates);
        } else
                for (void *node = ops->first(tree); node && r >= 0; node = ops->next(node))
                        if (!rod || !ops->parent(node))
                                r = list_push(&candidates, node);

        for (size_t i = 0; i < candidates.n && r >= 0; i++)
                if (node_matches(ops, candidates.items[i], flags, match, userdata))
                        r = list_push(&out, candidates.items[i]);

        free(queue.items);
        free(candidates.items);
        if (r < 0) {
                free(out.items);
                return r;
        }
        *ret = out.items;
        *ret_n = out.n;
        return 0;
}

MomentListFlags moment_list_flags(uint64_t flags, uint64_t roots, uint64_t topological, uint64_t leaves,
                                  uint64_t no_leaves) {
        return (flags & roots ? MOMENT_LIST_ROOTS_OR_DESCENDANTS : 0) | (flags & topological ? MOMENT_LIST_TOPOLOGICAL : 0) |
                (flags & leaves ? MOMENT_LIST_LEAVES : 0) | (flags & no_leaves ? MOMENT_LIST_NO_LEAVES : 0);
}

/* ---- removal ---- */

void moment_removal_done(MomentRemoval *r) {
        for (size_t i = 0; i < r->n_parents; i++)
                free(r->parents[i].children);
        free(r->parents);
        free(r->moves);
        free(r->changed);
        free(r->removed);
        *r = (MomentRemoval) {};
}

bool moment_removal_removes(const MomentRemoval *r, const void *node) {
        return set_contains(r->removed, r->n_removed, node);
}

static void *surviving_ancestor(const MomentOps *ops, void *const *removed, size_t n_removed, const void *node) {
        void *p = ops->parent(node);

        while (p && set_contains(removed, n_removed, p))
                p = ops->parent(p);
        return p;
}

static int compare_move_node_seq(const void *a, const void *b, void *userdata) {
        return compare_seq(&((const MomentMove *) a)->node, &((const MomentMove *) b)->node, userdata);
}

static int compare_move_parent(const void *a, const void *b) {
        return compare_pointers(&((const MomentMove *) a)->parent, &((const MomentMove *) b)->parent);
}

int moment_plan_removal(const MomentOps *ops, void *const *remove, size_t n_remove, void *current,
                        MomentRemoval *ret) {
        _cleanup_(moment_removal_done) MomentRemoval plan = {};
        _cleanup_free_ MomentMove *by_parent = NULL;
        NodeList parents = {}, changed = {}, kids = {};
        int r = -ENOMEM;

        plan.removed = new0(void *, n_remove);
        if (!plan.removed)
                goto finish;
        plan.n_removed = n_remove;
        if (n_remove > 0) {
                memcpy(plan.removed, remove, n_remove * sizeof(void *));
                qsort(plan.removed, n_remove, sizeof(void *), compare_pointers);
        }
        for (size_t i = 1; i < n_remove; i++)
                if (plan.removed[i - 1] == plan.removed[i]) {
                        r = -EINVAL;
                        goto finish;
                }

        /* Surviving children of removed nodes go to the nearest survivor
         * above; the surviving parents of removed nodes lose children. */
        for (size_t i = 0; i < n_remove; i++) {
                void *node = remove[i], *above = NULL, *p = ops->parent(node);
                bool computed = false;

                for (size_t j = 0; j < ops->n_children(node); j++) {
                        void *c = ops->child(node, j);
                        MomentMove *m;

                        if (set_contains(plan.removed, n_remove, c))
                                continue;
                        if (!computed) {
                                above = surviving_ancestor(ops, plan.removed, n_remove, node);
                                computed = true;
                        }
                        m = reallocarray(plan.moves, plan.n_moves + 1, sizeof(MomentMove));
                        if (!m)
                                goto finish;
                        plan.moves = m;
                        plan.moves[plan.n_moves++] = (MomentMove) { .node = c, .parent = above };
                        if (list_push(&changed, c) < 0 || (above && list_push(&parents, above) < 0))
                                goto finish;
                }
                if (p && !set_contains(plan.removed, n_remove, p) && list_push(&parents, p) < 0)
                        goto finish;
        }
        if (plan.n_moves > 1)
                qsort_r(plan.moves, plan.n_moves, sizeof(MomentMove), compare_move_node_seq, (void *) ops);
        sort_unique(&parents);

        /* Each changed parent's new children: its surviving ones and those
         * moved to it, in creation order. */
        by_parent = new0(MomentMove, plan.n_moves);
        plan.parents = new0(MomentChildren, parents.n);
        if (!by_parent || !plan.parents)
                goto finish;
        if (plan.n_moves > 0) {
                memcpy(by_parent, plan.moves, plan.n_moves * sizeof(MomentMove));
                qsort(by_parent, plan.n_moves, sizeof(MomentMove), compare_move_parent);
        }
        for (size_t i = 0; i < parents.n; i++) {
                void *p = parents.items[i];
                MomentMove key = { .parent = p };
                MomentMove *hit;
                size_t lo;

                kids = (NodeList) {};
                for (size_t j = 0; j < ops->n_children(p); j++) {
                        void *c = ops->child(p, j);

                        if (!set_contains(plan.removed, n_remove, c) && list_push(&kids, c) < 0)
                                goto finish;
                }
                hit = plan.n_moves > 0
                        ? bsearch(&key, by_parent, plan.n_moves, sizeof(MomentMove), compare_move_parent)
                        : NULL;
                if (hit) {
                        for (lo = (size_t) (hit - by_parent); lo > 0 && by_parent[lo - 1].parent == p; lo--)
                                ;
                        for (; lo < plan.n_moves && by_parent[lo].parent == p; lo++)
                                if (list_push(&kids, by_parent[lo].node) < 0)
                                        goto finish;
                }
                sort_by_seq(ops, kids.items, kids.n);
                plan.parents[plan.n_parents++] = (MomentChildren) { .parent = p, .children = kids.items, .n = kids.n };
                kids = (NodeList) {};
                if (list_push(&changed, p) < 0)
                        goto finish;
        }

        plan.new_current = current;
        if (current && set_contains(plan.removed, n_remove, current))
                plan.new_current = surviving_ancestor(ops, plan.removed, n_remove, current);

        /* A moved node can also be a parent that changes. */
        sort_unique(&changed);
        sort_by_seq(ops, changed.items, changed.n);
        plan.changed = TAKE_PTR(changed.items);
        plan.n_changed = changed.n;
        *ret = plan;
        plan = (MomentRemoval) {};
        r = 0;
finish:
        free(kids.items);
        free(parents.items);
        free(changed.items);
        return r;
}

/* ---- persistence ---- */

int moment_tree_link(const MomentOps *ops, void *tree, void *def, void **ret) {
        Hashmap **map = ops->by_name(tree);
        const char *name = *ops->def_name(def);
        char **parent_name = ops->def_parent(def);
        void *node, *parent = NULL;
        int r;

        if (!*map) {
                *map = hashmap_new();
                if (!*map)
                        return -ENOMEM;
        }
        if (*parent_name) {
                parent = hashmap_get(*map, *parent_name);
                if (!parent) {
                        log_warning("%s '%s' names parent '%s', which does not exist; it becomes a root.",
                                    ops->noun_capital, name, *parent_name);
                        *parent_name = mfree(*parent_name);
                }
        }

        node = ops->node_new(tree, def);
        if (!node)
                return -ENOMEM;
        r = hashmap_put(*map, name, node);
        if (r >= 0 && parent) {
                r = ops->add_child(parent, node);
                if (r < 0)
                        hashmap_remove(*map, name);
        }
        if (r < 0) {
                free(node); /* nothing of its own yet */
                return r;
        }
        if (parent)
                ops->set_parent(node, parent);
        ops->append(tree, node);
        if (ret)
                *ret = node;
        return 0;
}

int moment_tree_load(const MomentOps *ops, void *tree, const char *dir, const char *uuid, uint64_t read_cap,
                     char **ret_message) {
        _cleanup_free_ char *current = NULL;
        Store **store = ops->store(tree);
        StoreEntry *entries = NULL;
        size_t n = 0;
        int r;

        r = mkdir_p(dir, 0700);
        if (r < 0)
                return r;
        if (!*store) {
                r = store_open(dir, uuid, ops->store_kind, ops->store_root, read_cap, store);
                if (r < 0)
                        return r;
        }
        r = store_load(*store, &entries, &n, &current, ret_message);
        if (r < 0)
                return r;

        ops->forget(tree);
        /* Entries come in creation order, so parents come first. */
        for (size_t i = 0; i < n && r >= 0; i++) {
                _cleanup_free_ char *message = NULL;
                void *def = NULL;
                const char *name;

                if (ops->def_parse(entries[i].xml, &def, &message) < 0) {
                        log_error("Ignoring stored %s '%s' of domain %s: %s", ops->noun, entries[i].name, uuid,
                                  strna(message));
                        continue;
                }
                name = *ops->def_name(def);
                if (!name || hashmap_get(*ops->by_name(tree), name)) {
                        log_error("Ignoring stored %s '%s' of domain %s: %s.", ops->noun, entries[i].name, uuid,
                                  name ? "the name is taken" : "it has no name");
                        ops->def_free(def);
                        continue;
                }
                r = moment_tree_link(ops, tree, def, NULL);
                if (r < 0)
                        ops->def_free(def);
        }
        store_entries_free(entries, n);
        if (r < 0)
                return r;
        ops->set_current(tree, current ? hashmap_get(*ops->by_name(tree), current) : NULL);
        return 0;
}

int moment_tree_put(const MomentOps *ops, void *tree, void *def, bool make_current) {
        _cleanup_free_ char *xml = NULL;
        const char *name = *ops->def_name(def);
        StoreOp batch[2];
        int r;

        /* The store keeps everything, secrets included; GetXMLDesc filters. */
        r = ops->def_format(def, &xml);
        if (r < 0)
                return r;
        batch[0] = (StoreOp) { .type = STORE_OP_PUT, .name = name, .xml = xml };
        batch[1] = (StoreOp) { .type = STORE_OP_CURRENT, .name = name };
        return store_commit(*ops->store(tree), batch, make_current ? 2 : 1);
}

int moment_tree_add(const MomentOps *ops, void *tree, void *def, bool make_current, void **ret) {
        void *node;
        int r;

        r = moment_tree_put(ops, tree, def, make_current);
        if (r >= 0)
                r = moment_tree_link(ops, tree, def, &node);
        if (r < 0) {
                ops->def_free(def); /* a failed link is memory only: the next load has it */
                return r;
        }
        if (make_current)
                ops->set_current(tree, node);
        if (ret)
                *ret = node;
        return 0;
}

/* Gives node its new definition def (same name). The name map borrows the
 * old definition's name string: def keeps that one, so the map needs no
 * change (which could fail). */
static void install_def(const MomentOps *ops, void *node, void *def) {
        void *old = ops->def(node);
        char *name = *ops->def_name(def);

        *ops->def_name(def) = *ops->def_name(old);
        *ops->def_name(old) = name;
        ops->set_def(node, def);
        ops->def_free(old);
}

int moment_tree_update(const MomentOps *ops, void *tree, void *node, void *def, bool make_current) {
        void *old = ops->def(node);
        int r;

        if (!*ops->def_name(def) || !streq(*ops->def_name(def), *ops->def_name(old)) ||
            !streq_ptr(*ops->def_parent(def), *ops->def_parent(old))) {
                ops->def_free(def);
                return -EINVAL;
        }
        r = moment_tree_put(ops, tree, def, make_current);
        if (r < 0) {
                ops->def_free(def);
                return r;
        }
        install_def(ops, node, def);
        if (make_current)
                ops->set_current(tree, node);
        return 0;
}

int moment_tree_list(const MomentOps *ops, const void *tree, const void *parent, MomentListFlags flags,
                     bool (*match)(const void *node, const void *userdata), const void *userdata, void **ret,
                     size_t *ret_n) {
        _cleanup_free_ void **nodes = NULL;
        void *l = NULL;
        size_t n = 0;
        int r;

        r = moment_list(ops, tree, parent, flags, match, userdata, &nodes, &n);
        if (r < 0)
                return r;
        if (n > 0) {
                l = ops->nodes_new(nodes, n);
                if (!l)
                        return -ENOMEM;
        }
        *ret = l;
        *ret_n = n;
        return 0;
}

int moment_tree_remove_all(const MomentOps *ops, void *tree) {
        Store *store = *ops->store(tree);
        int r;

        if (store) {
                r = store_remove(store);
                if (r < 0)
                        return r;
        }
        ops->forget(tree);
        return 0;
}

int moment_tree_set_current(const MomentOps *ops, void *tree, void *node) {
        StoreOp op = { .type = STORE_OP_CURRENT, .name = node ? *ops->def_name(ops->def(node)) : NULL };
        int r;

        if (ops->current(tree) == node)
                return 0;
        r = store_commit(*ops->store(tree), &op, 1);
        if (r < 0)
                return r;
        ops->set_current(tree, node);
        return 0;
}

/* A removal's store transaction and what the tree in memory needs after
 * it, all made before the commit: after it, nothing may fail. */
typedef struct RemovalBatch {
        void **touched; /* survivors updated or moved */
        void **defs;    /* their new definitions */
        size_t n_touched;
        char **xmls;
        StoreOp *ops;
        size_t n_ops;
        void *changed;   /* typed (nodes_new()) */
        void **children; /* per plan->parents[i], typed */
} RemovalBatch;

static void removal_batch_done(const MomentOps *ops, const MomentRemoval *plan, RemovalBatch *b) {
        for (size_t i = 0; b->children && i < plan->n_parents; i++)
                free(b->children[i]);
        free(b->children);
        for (size_t k = 0; b->defs && k < b->n_touched; k++)
                ops->def_free(b->defs[k]);
        for (size_t k = 0; b->xmls && k < b->n_touched; k++)
                free(b->xmls[k]);
        free(b->xmls);
        free(b->ops);
        free(b->defs);
        free(b->touched);
        free(b->changed);
}

static int set_def_parent(const MomentOps *ops, void *def, void *parent) {
        return free_and_strdup(ops->def_parent(def), parent ? *ops->def_name(ops->def(parent)) : NULL);
}

/* Per surviving node touched (updated or moved): its new definition,
 * naming the parent the tree gives it. */
static int removal_batch_defs(const MomentOps *ops, const MomentRemoval *plan, void *const *update, void **new_defs,
                              size_t n_update, RemovalBatch *b) {
        int r;

        b->touched = new0(void *, n_update + plan->n_moves + 1);
        b->defs = new0(void *, n_update + plan->n_moves + 1);
        if (!b->touched || !b->defs)
                return -ENOMEM;
        for (size_t i = 0; i < n_update; i++) {
                b->touched[b->n_touched] = update[i];
                b->defs[b->n_touched++] = TAKE_PTR(new_defs[i]);
        }
        /* Moved children: a copy of their definition, unless updated anyway,
         * naming their new parent (libvirt). */
        for (size_t m = 0; m < plan->n_moves; m++) {
                void *node = plan->moves[m].node;
                size_t k;

                for (k = 0; k < b->n_touched && b->touched[k] != node; k++)
                        ;
                if (k == b->n_touched) {
                        r = ops->def_copy(ops->def(node), &b->defs[k]);
                        if (r < 0)
                                return r;
                        b->touched[b->n_touched++] = node;
                }
                if (set_def_parent(ops, b->defs[k], plan->moves[m].parent) < 0)
                        return -ENOMEM;
        }
        /* Updated definitions keep the parent the tree gives them. */
        for (size_t k = 0; k < n_update; k++) {
                void *p = ops->parent(b->touched[k]);

                if (p && moment_removal_removes(plan, p))
                        continue; /* set above */
                if (set_def_parent(ops, b->defs[k], p) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static int removal_batch_store(const MomentOps *ops, const MomentRemoval *plan, void *const *remove, size_t n_remove,
                               RemovalBatch *b) {
        int r;

        b->ops = new0(StoreOp, n_remove + b->n_touched + 1);
        b->xmls = new0(char *, b->n_touched + 1);
        if (!b->ops || !b->xmls)
                return -ENOMEM;
        for (size_t i = 0; i < n_remove; i++)
                b->ops[b->n_ops++] = (StoreOp) { .type = STORE_OP_DELETE, .name = *ops->def_name(ops->def(remove[i])) };
        for (size_t k = 0; k < b->n_touched; k++) {
                const char *name = *ops->def_name(b->defs[k]);

                /* An update keeps the name, and a removed node gets none. */
                if (!streq_ptr(name, *ops->def_name(ops->def(b->touched[k]))) ||
                    moment_removal_removes(plan, b->touched[k]))
                        return -EINVAL;
                r = ops->def_format(b->defs[k], &b->xmls[k]);
                if (r < 0)
                        return r;
                b->ops[b->n_ops++] = (StoreOp) { .type = STORE_OP_PUT, .name = name, .xml = b->xmls[k] };
        }
        /* DELETE of the current entry leaves none current. */
        if (plan->new_current)
                b->ops[b->n_ops++] = (StoreOp) {
                        .type = STORE_OP_CURRENT,
                        .name = *ops->def_name(ops->def(plan->new_current)),
                };

        b->changed = ops->nodes_new(plan->changed, plan->n_changed);
        b->children = new0(void *, plan->n_parents);
        if (!b->changed || !b->children)
                return -ENOMEM;
        for (size_t i = 0; i < plan->n_parents; i++) {
                b->children[i] = ops->nodes_new(plan->parents[i].children, plan->parents[i].n);
                if (!b->children[i])
                        return -ENOMEM;
        }
        return 0;
}

/* After the store commit, the tree in memory follows: nothing here can
 * fail. */
static void removal_apply(const MomentOps *ops, void *tree, const MomentRemoval *plan, RemovalBatch *b,
                          void *const *remove, size_t n_remove) {
        for (size_t i = 0; i < plan->n_parents; i++)
                ops->set_children(plan->parents[i].parent, TAKE_PTR(b->children[i]), plan->parents[i].n);
        for (size_t k = 0; k < b->n_touched; k++)
                install_def(ops, b->touched[k], TAKE_PTR(b->defs[k]));
        for (size_t m = 0; m < plan->n_moves; m++)
                ops->set_parent(plan->moves[m].node, plan->moves[m].parent);
        /* Each drop leaves the list whole, so the next may unlink. */
        for (size_t i = 0; i < n_remove; i++)
                ops->drop(tree, remove[i]);
        ops->set_current(tree, plan->new_current);
}

int moment_tree_remove(const MomentOps *ops, void *tree, void *const *remove, size_t n_remove, void *const *update,
                       void **new_defs, size_t n_update, void **ret_changed, size_t *ret_n_changed) {
        _cleanup_(moment_removal_done) MomentRemoval plan = {};
        RemovalBatch b = {};
        int r;

        r = moment_plan_removal(ops, remove, n_remove, ops->current(tree), &plan);
        if (r >= 0)
                r = removal_batch_defs(ops, &plan, update, new_defs, n_update, &b);
        if (r >= 0)
                r = removal_batch_store(ops, &plan, remove, n_remove, &b);
        if (r >= 0)
                r = store_commit(*ops->store(tree), b.ops, b.n_ops);
        if (r >= 0) {
                removal_apply(ops, tree, &plan, &b, remove, n_remove);
                if (ret_changed) {
                        *ret_changed = TAKE_PTR(b.changed);
                        *ret_n_changed = plan.n_changed;
                }
                r = 0;
        }
        removal_batch_done(ops, &plan, &b);
        for (size_t i = 0; i < n_update; i++)
                if (new_defs[i])
                        ops->def_free(TAKE_PTR(new_defs[i]));
        return r;
}
