/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The checkpoint tree (daemon/checkpoint.c) and the logic it shares with
 * the snapshot tree (daemon/moment.c), against a temporary metadata
 * folder: adding and finding, refusals that change nothing, removal with
 * children moving to the nearest surviving ancestor and the current
 * checkpoint moving up, replaced definitions, libvirt's list flags, the
 * same state after a reload; moment.c's cost bounded by what a removal
 * touches, counted on a tree of 20000 nodes; and the crash test: a writer
 * process running a deterministic sequence of tree operations is killed
 * with SIGKILL at random instants, and every tree loaded afterwards must be
 * the state after the last reported operation or the one in flight, as an
 * independent model (plain arrays) computes it.
 *
 * QSNAP_CHECKPOINT_CRASH_ROUNDS overrides the number of kill rounds.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <libxml/parser.h>

#include "core/checkpoint.h"
#include "core/moment.h"
#include "test-check.h"

#define UUID "5c8e1f0a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"

static char *make_dir(void) {
        char *d = strprintf("%s/test-checkpoint-tree-XXXXXX", getenv("TMPDIR") ?: "/tmp");

        if (!d || !mkdtemp(d)) {
                perror("mkdtemp");
                exit(EXIT_FAILURE);
        }
        return d;
}

static void remove_dir(char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        while (d && (de = readdir(d))) {
                _cleanup_free_ char *p = NULL;

                if (de->d_name[0] == '.')
                        continue;
                p = strjoin(dir, "/", de->d_name);
                if (p)
                        (void) unlink(p);
        }
        if (d)
                closedir(d);
        (void) rmdir(dir);
        free(dir);
}

static CheckpointDef *make_def(const char *name, const char *parent, const char *description) {
        CheckpointDef *def = new0(CheckpointDef, 1);

        if (!def)
                abort();
        def->name = strdup(name);
        def->parent = parent ? strdup(parent) : NULL;
        def->description = description ? strdup(description) : NULL;
        def->creation_time = 1718000000;
        def->has_creation_time = true;
        def->n_disks = 1;
        def->disks = new0(CheckpointDisk, 1);
        if (!def->name || (parent && !def->parent) || !def->disks)
                abort();
        def->disks[0].name = strdup("vda");
        def->disks[0].type = CHECKPOINT_TYPE_BITMAP;
        def->disks[0].bitmap = strdup(name);
        return def;
}

static void add(CheckpointTree *t, const char *name, const char *parent, bool current) {
        _cleanup_free_ char *d = strprintf("d-%s", name);
        int r = checkpoint_tree_add(t, make_def(name, parent, d), current, NULL);

        if (r < 0)
                fprintf(stderr, "add %s failed: %s\n", name, strerror(-r));
        CHECK(r >= 0);
}

static const char *parent_of(CheckpointTree *t, const char *name) {
        Checkpoint *c = checkpoint_tree_find(t, name);
        return c && c->parent ? c->parent->def->name : NULL;
}

/* "a,b,c" from a list of checkpoints. */
static char *names_of(Checkpoint *const *l, size_t n) {
        char **v = NULL, *r;

        for (size_t i = 0; i < n; i++)
                (void) strv_extend(&v, l[i]->def->name);
        r = v ? strv_join(v, ",") : strdup("");
        strv_free(v);
        return r;
}

static char *children_of(CheckpointTree *t, const char *name) {
        Checkpoint *c = checkpoint_tree_find(t, name);
        return c ? names_of(c->children, c->n_children) : strdup("?");
}

static char *order(CheckpointTree *t) {
        char **v = NULL, *r;

        for (Checkpoint *c = t->first; c; c = c->next)
                (void) strv_extend(&v, c->def->name);
        r = v ? strv_join(v, ",") : strdup("");
        strv_free(v);
        return r;
}

static char *list(CheckpointTree *t, const char *parent, uint64_t flags) {
        Checkpoint **l = NULL;
        size_t n = 0;
        char *r;
        int k;

        k = checkpoint_tree_list(t, parent ? checkpoint_tree_find(t, parent) : NULL, flags, &l, &n);
        if (k < 0)
                return strprintf("error %d", k);
        r = names_of(l, n);
        free(l);
        return r;
}

/* Every link agrees with every other: parents and children arrays, the
 * definitions' <parent>, creation order, the name map, the count. */
static bool tree_consistent(CheckpointTree *t) {
        size_t n = 0;
        uint64_t last_seq = 0;

        for (Checkpoint *c = t->first; c; c = c->next) {
                uint64_t prev_child_seq = 0;

                if ((c->prev ? c->prev->next : t->first) != c || checkpoint_tree_find(t, c->def->name) != c)
                        return false;
                if (n > 0 && c->seq <= last_seq)
                        return false;
                last_seq = c->seq;
                if (!streq_ptr(c->def->parent, c->parent ? c->parent->def->name : NULL))
                        return false;
                if (c->parent) {
                        bool found = false;

                        for (size_t i = 0; i < c->parent->n_children; i++)
                                found = found || c->parent->children[i] == c;
                        if (!found)
                                return false;
                }
                for (size_t i = 0; i < c->n_children; i++) {
                        if (c->children[i]->parent != c || (i > 0 && c->children[i]->seq <= prev_child_seq))
                                return false;
                        prev_child_seq = c->children[i]->seq;
                }
                n++;
        }
        return n == t->n && (!t->last || !t->last->next) && (!t->current || checkpoint_tree_find(t, t->current->def->name) == t->current);
}

static void test_add_and_find(const char *dir) {
        CheckpointTree t;
        Checkpoint *c = NULL;
        _cleanup_free_ char *o = NULL, *rc = NULL;

        checkpoint_tree_init(&t, NULL);
        CHECK(checkpoint_tree_load(&t, dir, UUID, 0, NULL) >= 0);
        CHECK(t.n == 0 && !t.first && !t.current);

        add(&t, "r", NULL, true);
        add(&t, "a", "r", true);
        add(&t, "b", "r", false);
        CHECK(checkpoint_tree_add(&t, make_def("c", "a", NULL), true, &c) == 0);
        CHECK(c && c == checkpoint_tree_find(&t, "c") && c == t.current);
        CHECK_STREQ(checkpoint_name(c), "c");
        o = order(&t);
        CHECK_STREQ(o, "r,a,b,c");
        rc = children_of(&t, "r");
        CHECK_STREQ(rc, "a,b");
        CHECK_STREQ(parent_of(&t, "c"), "a");
        CHECK(!checkpoint_tree_find(&t, "nope"));
        CHECK(!checkpoint_tree_find(&t, NULL));

        /* Refusals change nothing, in memory or on disk. */
        CHECK(checkpoint_tree_add(&t, make_def("a", NULL, NULL), false, NULL) == -QSNAP_E_ALREADY_EXISTS);
        CHECK(checkpoint_tree_add(&t, make_def("x", "missing", NULL), false, NULL) == -QSNAP_E_NO_SUCH_CHECKPOINT);
        {
                CheckpointDef *unnamed = make_def("tmp", NULL, NULL);

                unnamed->name = mfree(unnamed->name);
                CHECK(checkpoint_tree_add(&t, unnamed, false, NULL) == -EINVAL);
        }
        {
                CheckpointDef *bad = make_def("y", NULL, NULL);

                bad->disks[0].type = CHECKPOINT_TYPE_NO; /* a bitmap on a 'no' disk: not writable */
                CHECK(checkpoint_tree_add(&t, bad, false, NULL) == -EINVAL);
        }
        CHECK(t.n == 4 && t.current == c);
        CHECK(tree_consistent(&t));

        /* Update keeps the name and the parent; current moves only when asked. */
        CHECK(checkpoint_tree_update(&t, checkpoint_tree_find(&t, "b"), make_def("b", "r", "new-b"), false) == 0);
        CHECK_STREQ(checkpoint_tree_find(&t, "b")->def->description, "new-b");
        CHECK(t.current == c);
        CHECK(checkpoint_tree_update(&t, checkpoint_tree_find(&t, "b"), make_def("b", NULL, "x"), false) == -EINVAL);
        CHECK(checkpoint_tree_update(&t, checkpoint_tree_find(&t, "b"), make_def("bb", "r", "x"), false) == -EINVAL);
        CHECK(checkpoint_tree_update(&t, checkpoint_tree_find(&t, "b"), make_def("b", "r", "newer"), true) == 0);
        CHECK(t.current && streq(t.current->def->name, "b"));
        CHECK(checkpoint_tree_set_current(&t, NULL) == 0);
        CHECK(!t.current);
        CHECK(checkpoint_tree_set_current(&t, c) == 0);
        CHECK(tree_consistent(&t));
        checkpoint_tree_done(&t);

        /* All of it after a reload. */
        checkpoint_tree_init(&t, NULL);
        CHECK(checkpoint_tree_load(&t, dir, UUID, 0, NULL) >= 0);
        {
                _cleanup_free_ char *o2 = order(&t), *rc2 = children_of(&t, "r");

                CHECK_STREQ(o2, "r,a,b,c");
                CHECK_STREQ(rc2, "a,b");
                CHECK(t.current && streq(t.current->def->name, "c"));
                CHECK_STREQ(checkpoint_tree_find(&t, "b")->def->description, "newer");
                CHECK_STREQ(checkpoint_tree_find(&t, "c")->def->disks[0].bitmap, "c");
                CHECK(tree_consistent(&t));
        }
        CHECK(checkpoint_tree_remove_all(&t) == 0);
        CHECK(t.n == 0 && !t.first && !t.current);
        checkpoint_tree_done(&t);
        checkpoint_tree_init(&t, NULL);
        CHECK(checkpoint_tree_load(&t, dir, UUID, 0, NULL) >= 0);
        CHECK(t.n == 0);
        checkpoint_tree_done(&t);
}

static void check_removed_tree(CheckpointTree *t, const char *what) {
        _cleanup_free_ char *o = order(t), *rc = children_of(t, "r");

        printf("%s: %s\n", what, o);
        /* r -> a -> {b, c -> d}, r -> e; a and c removed */
        CHECK_STREQ(o, "r,b,d,e");
        CHECK(t->n == 4);
        CHECK(!checkpoint_tree_find(t, "a") && !checkpoint_tree_find(t, "c"));
        CHECK_STREQ(parent_of(t, "b"), "r");
        CHECK_STREQ(parent_of(t, "d"), "r");
        CHECK_STREQ(parent_of(t, "e"), "r");
        CHECK_STREQ(rc, "b,d,e");
        CHECK(t->current && streq(t->current->def->name, "r"));
        CHECK_STREQ(checkpoint_tree_find(t, "b")->def->description, "new-b");
        CHECK_STREQ(checkpoint_tree_find(t, "d")->def->description, "d-d");
        CHECK_STREQ(checkpoint_tree_find(t, "d")->def->parent, "r");
        CHECK(tree_consistent(t));
}

static void test_remove(const char *dir) {
        CheckpointTree t, t2;
        Checkpoint *remove[2], *update[1], **changed = NULL;
        CheckpointDef *defs[1] = {};
        size_t n_changed = 0;

        checkpoint_tree_init(&t, NULL);
        CHECK(checkpoint_tree_load(&t, dir, UUID, 0, NULL) >= 0);
        add(&t, "r", NULL, false);
        add(&t, "a", "r", false);
        add(&t, "b", "a", false);
        add(&t, "c", "a", false);
        add(&t, "d", "c", true);
        add(&t, "e", "r", false);

        /* a and c go (inner nodes); c is current; b gets a new definition. */
        remove[0] = checkpoint_tree_find(&t, "c");
        remove[1] = checkpoint_tree_find(&t, "a");
        update[0] = checkpoint_tree_find(&t, "b");
        CHECK(checkpoint_def_copy(update[0]->def, &defs[0]) >= 0);
        CHECK(free_and_strdup(&defs[0]->description, "new-b") >= 0);
        CHECK(checkpoint_tree_set_current(&t, checkpoint_tree_find(&t, "c")) >= 0);
        CHECK(checkpoint_tree_remove(&t, remove, 2, update, defs, 1, &changed, &n_changed) >= 0);
        CHECK(defs[0] == NULL);
        /* b and d moved, r's children changed; in creation order. */
        {
                _cleanup_free_ char *ch = names_of(changed, n_changed);
                CHECK_STREQ(ch, "r,b,d");
        }
        free(changed);
        check_removed_tree(&t, "in memory");

        checkpoint_tree_init(&t2, NULL);
        CHECK(checkpoint_tree_load(&t2, dir, UUID, 0, NULL) >= 0);
        check_removed_tree(&t2, "reloaded");
        checkpoint_tree_done(&t2);

        /* A refused update (name changed) changes nothing. */
        update[0] = checkpoint_tree_find(&t, "e");
        CHECK(checkpoint_def_copy(update[0]->def, &defs[0]) >= 0);
        CHECK(free_and_strdup(&defs[0]->name, "zz") >= 0);
        remove[0] = checkpoint_tree_find(&t, "b");
        CHECK(checkpoint_tree_remove(&t, remove, 1, update, defs, 1, NULL, NULL) == -EINVAL);
        CHECK(defs[0] == NULL);
        check_removed_tree(&t, "after a refused change");
        /* So does a node given twice, and an update of a removed node. */
        remove[0] = remove[1] = checkpoint_tree_find(&t, "b");
        CHECK(checkpoint_tree_remove(&t, remove, 2, NULL, NULL, 0, NULL, NULL) == -EINVAL);
        update[0] = checkpoint_tree_find(&t, "b");
        CHECK(checkpoint_def_copy(update[0]->def, &defs[0]) >= 0);
        CHECK(checkpoint_tree_remove(&t, remove, 1, update, defs, 1, NULL, NULL) == -EINVAL);
        check_removed_tree(&t, "after refused removals");

        /* A root with children: they become roots; a current root goes to none. */
        remove[0] = checkpoint_tree_find(&t, "r");
        CHECK(checkpoint_tree_remove(&t, remove, 1, NULL, NULL, 0, &changed, &n_changed) >= 0);
        {
                _cleanup_free_ char *o = order(&t), *roots = list(&t, NULL, CHECKPOINT_LIST_ROOTS),
                                    *ch = names_of(changed, n_changed);

                CHECK_STREQ(o, "b,d,e");
                CHECK_STREQ(roots, "b,d,e");
                CHECK_STREQ(ch, "b,d,e");
                CHECK(!t.current);
                CHECK(tree_consistent(&t));
        }
        free(changed);

        /* Removing the last ones. */
        {
                Checkpoint *all[3] = { checkpoint_tree_find(&t, "e"), checkpoint_tree_find(&t, "b"),
                                       checkpoint_tree_find(&t, "d") };
                CHECK(checkpoint_tree_remove(&t, all, 3, NULL, NULL, 0, NULL, NULL) >= 0);
                CHECK(t.n == 0 && !t.first && !t.last && !t.current);
        }
        checkpoint_tree_done(&t);
        checkpoint_tree_init(&t2, NULL);
        CHECK(checkpoint_tree_load(&t2, dir, UUID, 0, NULL) >= 0);
        CHECK(t2.n == 0 && !t2.current);
        checkpoint_tree_done(&t2);
}

/* libvirt's checkpoint list flags on
 *
 *     r1 ─┬─ a ─┬─ a1
 *         │     └─ a2 ── a21
 *         └─ b
 *     r2 ── c
 *
 * created in the order r1, a, r2, a1, b, c, a2, a21. */
static void test_list(const char *dir) {
        static const struct {
                const char *parent;
                uint64_t flags;
                const char *want;
        } cases[] = {
                { NULL, 0, "r1,a,r2,a1,b,c,a2,a21" },
                { NULL, CHECKPOINT_LIST_ROOTS, "r1,r2" },
                { NULL, CHECKPOINT_LIST_LEAVES, "a1,b,c,a21" },
                { NULL, CHECKPOINT_LIST_NO_LEAVES, "r1,a,r2,a2" },
                { NULL, CHECKPOINT_LIST_LEAVES | CHECKPOINT_LIST_NO_LEAVES, "r1,a,r2,a1,b,c,a2,a21" },
                { NULL, CHECKPOINT_LIST_ROOTS | CHECKPOINT_LIST_LEAVES, "" },
                { NULL, CHECKPOINT_LIST_ROOTS | CHECKPOINT_LIST_NO_LEAVES, "r1,r2" },
                { NULL, CHECKPOINT_LIST_TOPOLOGICAL, "r1,r2,a,b,c,a1,a2,a21" },
                { NULL, CHECKPOINT_LIST_TOPOLOGICAL | CHECKPOINT_LIST_ROOTS, "r1,r2" },
                { NULL, CHECKPOINT_LIST_TOPOLOGICAL | CHECKPOINT_LIST_LEAVES, "b,c,a1,a21" },
                { "r1", 0, "a,b" },
                { "r1", CHECKPOINT_LIST_DESCENDANTS, "a,a1,b,a2,a21" },
                { "r1", CHECKPOINT_LIST_DESCENDANTS | CHECKPOINT_LIST_TOPOLOGICAL, "a,b,a1,a2,a21" },
                { "r1", CHECKPOINT_LIST_DESCENDANTS | CHECKPOINT_LIST_LEAVES, "a1,b,a21" },
                { "r1", CHECKPOINT_LIST_NO_LEAVES, "a" },
                { "a", 0, "a1,a2" },
                { "a21", CHECKPOINT_LIST_DESCENDANTS, "" },
                { "r2", CHECKPOINT_LIST_DESCENDANTS, "c" },
        };
        CheckpointTree t;

        checkpoint_tree_init(&t, NULL);
        CHECK(checkpoint_tree_load(&t, dir, UUID, 0, NULL) >= 0);
        add(&t, "r1", NULL, false);
        add(&t, "a", "r1", false);
        add(&t, "r2", NULL, false);
        add(&t, "a1", "a", false);
        add(&t, "b", "r1", false);
        add(&t, "c", "r2", false);
        add(&t, "a2", "a", false);
        add(&t, "a21", "a2", true);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *got = list(&t, cases[i].parent, cases[i].flags);

                n_checks++;
                if (!streq_ptr(got, cases[i].want)) {
                        n_failed++;
                        fprintf(stderr, "list of %s with flags 0x%" PRIx64 ": got '%s', want '%s'\n",
                                strna(cases[i].parent), cases[i].flags, strna(got), cases[i].want);
                }
        }
        {
                Checkpoint **l = (Checkpoint **) 0x1;
                size_t n = 7;

                CHECK(checkpoint_tree_list(&t, NULL, CHECKPOINT_LIST_ALL + 1, &l, &n) == -EINVAL);
                CHECK(l == (Checkpoint **) 0x1 && n == 7);
                CHECK(checkpoint_tree_list(&t, checkpoint_tree_find(&t, "c"), 0, &l, &n) == 0);
                CHECK(!l && n == 0);
        }
        CHECK(checkpoint_tree_remove_all(&t) == 0);
        checkpoint_tree_done(&t);
}

/* ---- moment.c's cost, counted on a synthetic tree ---- */

typedef struct Node {
        struct Node *parent, *next, **children;
        size_t n_children;
        uint64_t seq;
} Node;

typedef struct Synthetic {
        Node *nodes;
        size_t n;
} Synthetic;

static unsigned long op_calls;

static void *syn_first(const void *tree) {
        op_calls++;
        return ((const Synthetic *) tree)->n ? ((const Synthetic *) tree)->nodes : NULL;
}
static void *syn_next(const void *node) {
        op_calls++;
        return ((const Node *) node)->next;
}
static void *syn_parent(const void *node) {
        op_calls++;
        return ((const Node *) node)->parent;
}
static size_t syn_n_children(const void *node) {
        op_calls++;
        return ((const Node *) node)->n_children;
}
static void *syn_child(const void *node, size_t i) {
        op_calls++;
        return ((const Node *) node)->children[i];
}
static uint64_t syn_seq(const void *node) {
        op_calls++;
        return ((const Node *) node)->seq;
}

static const MomentOps syn_ops = {
        .first = syn_first, .next = syn_next, .parent = syn_parent,
        .n_children = syn_n_children, .child = syn_child, .seq = syn_seq,
};

/* Node i's parent is (i - 1) / 4: a 4-ary tree of n nodes. */
static void synthetic_init(Synthetic *s, size_t n) {
        s->nodes = new0(Node, n);
        s->n = n;
        if (!s->nodes)
                abort();
        for (size_t i = 0; i < n; i++) {
                Node *x = &s->nodes[i];

                x->seq = i;
                x->next = i + 1 < n ? &s->nodes[i + 1] : NULL;
                if (i == 0)
                        continue;
                x->parent = &s->nodes[(i - 1) / 4];
                x->parent->children = reallocarray(x->parent->children, x->parent->n_children + 1, sizeof(Node *));
                if (!x->parent->children)
                        abort();
                x->parent->children[x->parent->n_children++] = x;
        }
}

static void synthetic_done(Synthetic *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->nodes[i].children);
        free(s->nodes);
}

static void test_moment_cost(void) {
        Synthetic s;
        MomentRemoval plan = {};
        void *remove[2];
        void **l = NULL;
        size_t n = 0;

        synthetic_init(&s, 20000);

        /* A leaf deep down: its parent loses it, nothing else. */
        op_calls = 0;
        remove[0] = &s.nodes[19999];
        CHECK(moment_plan_removal(&syn_ops, remove, 1, &s.nodes[19999], &plan) == 0);
        printf("removing a leaf of 20000: %lu node reads\n", op_calls);
        CHECK(op_calls < 100);
        CHECK(plan.n_moves == 0 && plan.n_parents == 1 && plan.parents[0].parent == &s.nodes[4999]);
        CHECK(plan.parents[0].n == 2 && plan.new_current == &s.nodes[4999]);
        moment_removal_done(&plan);

        /* An inner node: its four children move up beside its siblings, in
         * creation order. */
        op_calls = 0;
        remove[0] = &s.nodes[5];
        CHECK(moment_plan_removal(&syn_ops, remove, 1, NULL, &plan) == 0);
        printf("removing an inner node of 20000: %lu node reads\n", op_calls);
        CHECK(op_calls < 300);
        CHECK(plan.n_moves == 4 && plan.n_parents == 1 && plan.parents[0].parent == &s.nodes[1]);
        if (plan.n_parents == 1 && plan.parents[0].n == 7) {
                static const size_t want[] = { 6, 7, 8, 21, 22, 23, 24 };

                for (size_t i = 0; i < 7; i++)
                        CHECK(plan.parents[0].children[i] == &s.nodes[want[i]]);
        } else
                CHECK(false);
        CHECK(plan.n_changed == 5 && !plan.new_current);
        moment_removal_done(&plan);

        /* Two removed nodes, one below the other: children go past both. */
        remove[0] = &s.nodes[21];
        remove[1] = &s.nodes[5];
        CHECK(moment_plan_removal(&syn_ops, remove, 2, &s.nodes[85], &plan) == 0);
        CHECK(plan.new_current == &s.nodes[85]);
        CHECK(plan.n_moves == 3 + 4); /* 22..24 from 5, 85..88 from 21 */
        for (size_t i = 0; i < plan.n_moves; i++)
                CHECK(plan.moves[i].parent == &s.nodes[1]);
        CHECK(plan.n_parents == 1 && plan.parents[0].n == 3 + 3 + 4);
        moment_removal_done(&plan);

        /* A node's children list reads only them. */
        op_calls = 0;
        CHECK(moment_list(&syn_ops, &s, &s.nodes[7], 0, NULL, NULL, &l, &n) == 0);
        CHECK(n == 4 && op_calls < 50);
        free(l);

        remove[0] = remove[1] = &s.nodes[3];
        CHECK(moment_plan_removal(&syn_ops, remove, 2, NULL, &plan) == -EINVAL);
        CHECK(moment_plan_removal(&syn_ops, NULL, 0, &s.nodes[3], &plan) == 0);
        CHECK(plan.n_moves == 0 && plan.n_parents == 0 && plan.new_current == &s.nodes[3]);
        moment_removal_done(&plan);

        synthetic_done(&s);
}

/* ---- the crash test ---- */

#define CRASH_SEED UINT64_C(0xc4ec7901a7a5eed5)
#define CRASH_MAX 60

/* The model: checkpoints in creation order, with parent and description,
 * and the current one; removal semantics written out plainly. */
typedef struct Model {
        char *names[CRASH_MAX + 8];
        char *parents[CRASH_MAX + 8];
        char *descriptions[CRASH_MAX + 8];
        size_t n;
        char *current;
} Model;

static ssize_t model_find(const Model *m, const char *name) {
        for (size_t i = 0; name && i < m->n; i++)
                if (streq(m->names[i], name))
                        return (ssize_t) i;
        return -1;
}

static void model_done(Model *m) {
        for (size_t i = 0; i < m->n; i++) {
                free(m->names[i]);
                free(m->parents[i]);
                free(m->descriptions[i]);
        }
        free(m->current);
        *m = (Model) {};
}

static bool in_set(char *const *set, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (streq_ptr(set[i], name))
                        return true;
        return false;
}

/* The nearest ancestor of name not in set. */
static const char *model_survivor(const Model *m, const char *name, char *const *set, size_t n_set) {
        ssize_t i = model_find(m, name);
        const char *p = i >= 0 ? m->parents[i] : NULL;

        while (p && in_set(set, n_set, p)) {
                i = model_find(m, p);
                p = i >= 0 ? m->parents[i] : NULL;
        }
        return p;
}

typedef enum OpKind { OP_ADD, OP_UPDATE, OP_REMOVE, OP_CURRENT } OpKind;

typedef struct Op {
        OpKind kind;
        char *name;        /* ADD, UPDATE, CURRENT (NULL: none) */
        char *parent;      /* ADD */
        char *description; /* ADD, UPDATE, and REMOVE's update */
        bool make_current;
        char *remove[CRASH_MAX + 8];
        size_t n_remove;
        char *update;      /* REMOVE: a survivor given a new description */
} Op;

static void op_done(Op *o) {
        free(o->name);
        free(o->parent);
        free(o->description);
        for (size_t i = 0; i < o->n_remove; i++)
                free(o->remove[i]);
        free(o->update);
        *o = (Op) {};
}

static uint64_t splitmix64(uint64_t *x) {
        uint64_t z = (*x += UINT64_C(0x9E3779B97F4A7C15));

        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        return z ^ (z >> 31);
}

static char *random_description(uint64_t *rng) {
        static const char *const alphabet[] = { "a", "b", "<", ">", "&", "'", "\"", " ", "\n", "ü", "☃", "z" };
        size_t len = 5 + splitmix64(rng) % 300;
        char **v = NULL, *r;

        for (size_t i = 0; i < len; i++)
                (void) strv_extend(&v, alphabet[splitmix64(rng) % ELEMENTSOF(alphabet)]);
        r = strv_join(v, "");
        strv_free(v);
        return r;
}

/* Operation k of the writer's sequence, a function of k and of the state
 * after k - 1, which it also advances. */
static void gen_op(Model *m, uint64_t k, Op *o) {
        uint64_t rng = CRASH_SEED ^ (k * UINT64_C(0x2545F4914F6CDD1D));
        unsigned roll = (unsigned) (splitmix64(&rng) % 100);

        *o = (Op) {};
        if (m->n == 0 || (roll < 45 && m->n < CRASH_MAX)) {
                uint64_t how = splitmix64(&rng) % 4;

                o->kind = OP_ADD;
                o->name = strprintf("c%" PRIu64, k);
                /* Mostly under the current one (libvirt's default parent). */
                if (m->n > 0)
                        o->parent = strdup(how == 0 ? m->names[splitmix64(&rng) % m->n] : how == 1 ? "" : strempty(m->current));
                if (o->parent && isempty(o->parent))
                        o->parent = mfree(o->parent);
                o->description = random_description(&rng);
                o->make_current = splitmix64(&rng) % 4 != 0;

                m->names[m->n] = strdup(o->name);
                m->parents[m->n] = o->parent ? strdup(o->parent) : NULL;
                m->descriptions[m->n] = strdup(o->description);
                m->n++;
                if (o->make_current)
                        (void) free_and_strdup(&m->current, o->name);
        } else if (roll < 60) {
                size_t i = splitmix64(&rng) % m->n;

                o->kind = OP_UPDATE;
                o->name = strdup(m->names[i]);
                o->description = random_description(&rng);
                o->make_current = splitmix64(&rng) % 3 == 0;
                (void) free_and_strdup(&m->descriptions[i], o->description);
                if (o->make_current)
                        (void) free_and_strdup(&m->current, o->name);
        } else if (roll < 88) {
                size_t i = splitmix64(&rng) % m->n;
                bool subtree = splitmix64(&rng) % 2 == 0;
                char *moved_parent[CRASH_MAX + 8];
                size_t k2 = 0;

                o->kind = OP_REMOVE;
                o->remove[o->n_remove++] = strdup(m->names[i]);
                /* With its descendants (Delete with CHILDREN), found by
                 * repeated passes over the plain arrays. */
                for (bool grew = subtree; grew;) {
                        grew = false;
                        for (size_t j = 0; j < m->n; j++)
                                if (m->parents[j] && in_set(o->remove, o->n_remove, m->parents[j]) &&
                                    !in_set(o->remove, o->n_remove, m->names[j])) {
                                        o->remove[o->n_remove++] = strdup(m->names[j]);
                                        grew = true;
                                }
                }
                /* Sometimes one survivor gets a new description too. */
                if (m->n > o->n_remove && splitmix64(&rng) % 3 == 0) {
                        size_t u = splitmix64(&rng) % m->n;

                        if (!in_set(o->remove, o->n_remove, m->names[u])) {
                                o->update = strdup(m->names[u]);
                                o->description = random_description(&rng);
                        }
                }

                /* Survivors whose parent goes move to the nearest survivor. */
                for (size_t j = 0; j < m->n; j++)
                        moved_parent[j] = NULL;
                for (size_t j = 0; j < m->n; j++)
                        if (!in_set(o->remove, o->n_remove, m->names[j]) && m->parents[j] &&
                            in_set(o->remove, o->n_remove, m->parents[j])) {
                                const char *p = model_survivor(m, m->names[j], o->remove, o->n_remove);
                                moved_parent[j] = p ? strdup(p) : NULL;
                                free(m->parents[j]);
                                m->parents[j] = NULL;
                        } else if (m->parents[j] && !in_set(o->remove, o->n_remove, m->names[j]))
                                moved_parent[j] = strdup(m->parents[j]);
                if (m->current && in_set(o->remove, o->n_remove, m->current)) {
                        const char *p = model_survivor(m, m->current, o->remove, o->n_remove);
                        char *c = p ? strdup(p) : NULL;

                        free(m->current);
                        m->current = c;
                }
                for (size_t j = 0; j < m->n; j++) {
                        free(m->parents[j]);
                        m->parents[j] = moved_parent[j];
                }
                if (o->update)
                        (void) free_and_strdup(&m->descriptions[model_find(m, o->update)], o->description);
                for (size_t j = 0; j < m->n;) {
                        if (in_set(o->remove, o->n_remove, m->names[j])) {
                                free(m->names[j]);
                                free(m->parents[j]);
                                free(m->descriptions[j]);
                                memmove(m->names + j, m->names + j + 1, (m->n - j - 1) * sizeof(char *));
                                memmove(m->parents + j, m->parents + j + 1, (m->n - j - 1) * sizeof(char *));
                                memmove(m->descriptions + j, m->descriptions + j + 1, (m->n - j - 1) * sizeof(char *));
                                m->n--;
                                k2++;
                        } else
                                j++;
                }
                assert(k2 == o->n_remove);
        } else {
                uint64_t pick = splitmix64(&rng);

                o->kind = OP_CURRENT;
                o->name = pick % 5 == 0 ? NULL : strdup(m->names[pick % m->n]);
                free(m->current);
                m->current = o->name ? strdup(o->name) : NULL;
        }
}

static void model_advance(Model *m, uint64_t *k) {
        Op o;

        (*k)++;
        gen_op(m, *k, &o);
        op_done(&o);
}

static bool model_matches(const Model *m, CheckpointTree *t, bool verbose) {
        size_t i = 0;

        if (!streq_ptr(m->current, t->current ? t->current->def->name : NULL)) {
                if (verbose)
                        fprintf(stderr, "  current: model %s, tree %s\n", strna(m->current),
                                t->current ? t->current->def->name : "(none)");
                return false;
        }
        for (Checkpoint *c = t->first; c; c = c->next, i++)
                if (i >= m->n || !streq(m->names[i], c->def->name) || !streq_ptr(m->parents[i], c->def->parent) ||
                    !streq_ptr(m->descriptions[i], c->def->description)) {
                        if (verbose)
                                fprintf(stderr, "  entry %zu: model %s (parent %s), tree %s (parent %s)\n", i,
                                        i < m->n ? m->names[i] : "(end)", i < m->n ? strna(m->parents[i]) : "",
                                        c->def->name, strna(c->def->parent));
                        return false;
                }
        if (i != m->n && verbose)
                fprintf(stderr, "  model has %zu entries, tree %zu\n", m->n, i);
        return i == m->n && tree_consistent(t);
}

/* Applies o to the tree as the daemon would. */
static int apply_op(CheckpointTree *t, const Op *o) {
        switch (o->kind) {
        case OP_ADD:
                return checkpoint_tree_add(t, make_def(o->name, o->parent, o->description), o->make_current, NULL);
        case OP_UPDATE: {
                Checkpoint *c = checkpoint_tree_find(t, o->name);
                CheckpointDef *def = NULL;
                int r;

                r = checkpoint_def_copy(c->def, &def);
                if (r < 0)
                        return r;
                if (free_and_strdup(&def->description, o->description) < 0) {
                        checkpoint_def_free(def);
                        return -ENOMEM;
                }
                return checkpoint_tree_update(t, c, def, o->make_current);
        }
        case OP_REMOVE: {
                Checkpoint *remove[CRASH_MAX + 8], *update[1] = { NULL };
                CheckpointDef *defs[1] = { NULL };
                int r;

                for (size_t i = 0; i < o->n_remove; i++)
                        remove[i] = checkpoint_tree_find(t, o->remove[i]);
                if (o->update) {
                        update[0] = checkpoint_tree_find(t, o->update);
                        r = checkpoint_def_copy(update[0]->def, &defs[0]);
                        if (r < 0)
                                return r;
                        if (free_and_strdup(&defs[0]->description, o->description) < 0) {
                                checkpoint_def_free(defs[0]);
                                return -ENOMEM;
                        }
                }
                return checkpoint_tree_remove(t, remove, o->n_remove, update, defs, o->update ? 1 : 0, NULL, NULL);
        }
        case OP_CURRENT:
                return checkpoint_tree_set_current(t, checkpoint_tree_find(t, o->name));
        }
        return -EINVAL;
}

/* The writer: operations k+1, k+2, …, each reported on fd once durable;
 * the tree in memory is checked against the model after each. */
_noreturn_ static void crash_writer(const char *dir, Model *m, uint64_t k, int fd) {
        CheckpointTree t;

        checkpoint_tree_init(&t, NULL);
        if (checkpoint_tree_load(&t, dir, UUID, 0, NULL) < 0)
                _exit(3);
        store_set_compaction_threshold(t.store, 8192);
        if (!model_matches(m, &t, true))
                _exit(4);
        for (;;) {
                Op o;

                k++;
                gen_op(m, k, &o);
                if (apply_op(&t, &o) < 0)
                        _exit(5);
                op_done(&o);
                if (!model_matches(m, &t, true))
                        _exit(7);
                if (write(fd, &k, sizeof(k)) != (ssize_t) sizeof(k))
                        _exit(6);
        }
}

static bool drain(int fd, uint64_t *reported) {
        uint64_t buf[64];

        for (;;) {
                ssize_t n = read(fd, buf, sizeof(buf));

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return n < 0; /* EAGAIN: more may come; EOF: done */
                *reported = buf[n / (ssize_t) sizeof(uint64_t) - 1];
        }
}

static void test_crash(void) {
        char *dir = make_dir();
        const char *env = getenv("QSNAP_CHECKPOINT_CRASH_ROUNDS");
        unsigned rounds = env ? (unsigned) atoi(env) : 100, bad = 0, n_inflight = 0;
        uint64_t rng = CRASH_SEED, k = 0, start = now_usec(CLOCK_MONOTONIC);
        Model m = {};

        log_set_max_level(LOG_WARNING);
        for (unsigned round = 0; round < rounds && bad == 0; round++) {
                uint64_t reported = k, delay = splitmix64(&rng) % (15 * USEC_PER_MSEC + 1);
                CheckpointTree t;
                int p[2], status;
                pid_t pid;

                if (pipe2(p, O_CLOEXEC) < 0) {
                        perror("pipe2");
                        exit(EXIT_FAILURE);
                }
                fflush(stdout);
                fflush(stderr);
                pid = fork();
                if (pid < 0) {
                        perror("fork");
                        exit(EXIT_FAILURE);
                }
                if (pid == 0) {
                        close(p[0]);
                        crash_writer(dir, &m, k, p[1]);
                }
                close(p[1]);
                /* Kill at a random instant after the writer's first operation
                 * of this round, however slowly a loaded machine runs it. */
                {
                        struct pollfd pfd = { .fd = p[0], .events = POLLIN };

                        if (poll(&pfd, 1, 30 * 1000) != 1) {
                                fprintf(stderr, "  round %u: the writer reported nothing within 30 s\n", round);
                                bad++;
                        }
                }
                (void) usleep((useconds_t) delay);
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, &status, 0);
                if (!WIFSIGNALED(status)) {
                        fprintf(stderr, "  round %u: writer failed with %d\n", round, WEXITSTATUS(status));
                        bad++;
                }
                while (drain(p[0], &reported))
                        ;
                close(p[0]);

                /* The state after the last reported operation, or after the
                 * one in flight. */
                checkpoint_tree_init(&t, NULL);
                if (checkpoint_tree_load(&t, dir, UUID, 0, NULL) < 0) {
                        fprintf(stderr, "  round %u: load failed\n", round);
                        bad++;
                } else {
                        while (k < reported)
                                model_advance(&m, &k);
                        if (!model_matches(&m, &t, false)) {
                                model_advance(&m, &k);
                                if (!model_matches(&m, &t, true)) {
                                        fprintf(stderr, "  round %u: loaded tree is neither state %" PRIu64
                                                " nor %" PRIu64 "\n", round, reported, reported + 1);
                                        bad++;
                                } else
                                        n_inflight++;
                        }
                }
                checkpoint_tree_done(&t);
        }
        log_set_max_level(LOG_INFO);
        printf("crash test: %u rounds, %" PRIu64 " operations, %u with the one in flight visible; %.1f s\n", rounds,
               k, n_inflight, (double) (now_usec(CLOCK_MONOTONIC) - start) / USEC_PER_SEC);
        CHECK(bad == 0);
        CHECK(k >= rounds); /* the writer got somewhere in every round */

        model_done(&m);
        remove_dir(dir);
}

int main(void) {
        char *dir = make_dir();

        test_add_and_find(dir);
        test_remove(dir);
        test_list(dir);
        test_moment_cost();
        remove_dir(dir);
        test_crash();

        xmlCleanupParser();
        return test_summary();
}
