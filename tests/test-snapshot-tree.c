/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * snapshot_tree_remove() (daemon/core/snapshot.c): children move to the nearest
 * surviving ancestor, the current snapshot moves up, replaced definitions
 * take effect, creation order stays, and the store holds exactly the same
 * after a reload (one transaction). Against a temporary metadata folder.
 */
#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/snapshot.h"
#include "test-check.h"

static char *make_dir(void) {
        char *d = strprintf("%s/test-snapshot-tree-XXXXXX", getenv("TMPDIR") ?: "/tmp");

        if (!d || !mkdtemp(d)) {
                perror("mkdtemp");
                exit(EXIT_FAILURE);
        }
        return d;
}

static void remove_dir(const char *dir) {
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
}

static void add(SnapshotTree *t, const char *name, const char *parent, bool current) {
        _cleanup_free_ char *xml = NULL, *error = NULL;
        SnapshotDef *def = NULL;

        xml = parent ? strprintf("<domainsnapshot><name>%s</name><parent><name>%s</name></parent>"
                                 "<description>d-%s</description></domainsnapshot>", name, parent, name)
                     : strprintf("<domainsnapshot><name>%s</name><description>d-%s</description></domainsnapshot>",
                                 name, name);
        CHECK(xml && snapshot_def_parse(xml, strlen(xml), SNAPSHOT_PARSE_REDEFINE, &def, &error) >= 0);
        CHECK(snapshot_tree_add(t, def, current, NULL) >= 0);
}

static const char *parent_of(SnapshotTree *t, const char *name) {
        Snapshot *s = snapshot_tree_find(t, name);
        return s && s->parent ? s->parent->def->name : NULL;
}

/* "a,b,c": the children of name in order. */
static char *children_of(SnapshotTree *t, const char *name) {
        Snapshot *s = snapshot_tree_find(t, name);
        char **l = NULL, *r;

        for (size_t i = 0; s && i < s->n_children; i++)
                (void) strv_extend(&l, s->children[i]->def->name);
        r = l ? strv_join(l, ",") : strdup("");
        strv_free(l);
        return r;
}

static char *order(SnapshotTree *t) {
        char **l = NULL, *r;

        for (Snapshot *s = t->first; s; s = s->next)
                (void) strv_extend(&l, s->def->name);
        r = l ? strv_join(l, ",") : strdup("");
        strv_free(l);
        return r;
}

static void check_tree(SnapshotTree *t, const char *what) {
        _cleanup_free_ char *o = order(t), *rc = children_of(t, "r"), *ac = children_of(t, "a");

        printf("%s: %s\n", what, o);
        /* r -> a -> {b, c -> d}, r -> e; a and c removed */
        CHECK_STREQ(o, "r,b,d,e");
        CHECK(t->n == 4);
        CHECK(!snapshot_tree_find(t, "a") && !snapshot_tree_find(t, "c"));
        CHECK_STREQ(parent_of(t, "b"), "r");
        CHECK_STREQ(parent_of(t, "d"), "r");
        CHECK_STREQ(parent_of(t, "e"), "r");
        CHECK_STREQ(rc, "b,d,e");
        CHECK(t->current && streq(t->current->def->name, "r"));
        CHECK_STREQ(snapshot_tree_find(t, "b")->def->description, "new-b");
        CHECK_STREQ(snapshot_tree_find(t, "d")->def->description, "d-d");
        CHECK_STREQ(snapshot_tree_find(t, "d")->def->parent, "r");
        CHECK(ac == NULL || streq(ac, ""));
}

int main(void) {
        _cleanup_free_ char *dir = make_dir();
        SnapshotTree t, t2;
        Snapshot *remove[2], *update[1], **changed = NULL;
        SnapshotDef *defs[1] = {};
        size_t n_changed = 0;

        snapshot_tree_init(&t, NULL);
        CHECK(snapshot_tree_load(&t, dir, "dom", 0, NULL) >= 0);
        add(&t, "r", NULL, false);
        add(&t, "a", "r", false);
        add(&t, "b", "a", false);
        add(&t, "c", "a", false);
        add(&t, "d", "c", true);
        add(&t, "e", "r", false);

        /* a and c go (a subtree's inner nodes); d was current; b gets a new definition. */
        remove[0] = snapshot_tree_find(&t, "c");
        remove[1] = snapshot_tree_find(&t, "a");
        update[0] = snapshot_tree_find(&t, "b");
        CHECK(snapshot_def_copy(update[0]->def, &defs[0]) >= 0);
        CHECK(free_and_strdup(&defs[0]->description, "new-b") >= 0);
        /* current: d's nearest surviving ancestor is r */
        CHECK(snapshot_tree_set_current(&t, snapshot_tree_find(&t, "c")) >= 0);
        CHECK(snapshot_tree_remove(&t, remove, 2, update, defs, 1, &changed, &n_changed) >= 0);
        CHECK(defs[0] == NULL);
        CHECK(n_changed == 3); /* b, d (re-parented) and r */
        free(changed);
        check_tree(&t, "in memory");

        /* The same after a reload: it was one consistent transaction. */
        snapshot_tree_init(&t2, NULL);
        CHECK(snapshot_tree_load(&t2, dir, "dom", 0, NULL) >= 0);
        check_tree(&t2, "reloaded");
        snapshot_tree_done(&t2);

        /* A refused update (name changed) changes nothing. */
        update[0] = snapshot_tree_find(&t, "e");
        CHECK(snapshot_def_copy(update[0]->def, &defs[0]) >= 0);
        CHECK(free_and_strdup(&defs[0]->name, "zz") >= 0);
        remove[0] = snapshot_tree_find(&t, "b");
        CHECK(snapshot_tree_remove(&t, remove, 1, update, defs, 1, NULL, NULL) == -EINVAL);
        CHECK(defs[0] == NULL);
        check_tree(&t, "after a refused change");

        /* Removing the last ones leaves no current snapshot. */
        {
                Snapshot *all[4] = { snapshot_tree_find(&t, "b"), snapshot_tree_find(&t, "d"),
                                     snapshot_tree_find(&t, "e"), snapshot_tree_find(&t, "r") };
                CHECK(snapshot_tree_remove(&t, all, 4, NULL, NULL, 0, NULL, NULL) >= 0);
                CHECK(t.n == 0 && !t.first && !t.last && !t.current);
        }
        snapshot_tree_done(&t);
        snapshot_tree_init(&t2, NULL);
        CHECK(snapshot_tree_load(&t2, dir, "dom", 0, NULL) >= 0);
        CHECK(t2.n == 0 && !t2.current);
        snapshot_tree_done(&t2);

        remove_dir(dir);
        return test_summary();
}
