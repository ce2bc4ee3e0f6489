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

int moment_list(const MomentOps *ops,
                const void *tree,
                const void *parent,
                MomentListFlags flags,
                bool (*match)(const void *node, const void *userdata),
                const void *userdata,
                void ***ret,
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

int moment_plan_removal(const MomentOps *ops,
                        void *const *remove,
                        size_t n_remove,
                        void *current,
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
