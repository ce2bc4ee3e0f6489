/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * snapshot_tree_remove() (daemon/core/snapshot.c): children move to the nearest
 * surviving ancestor, the current snapshot moves up, replaced definitions
 * take effect, creation order stays, and the store holds exactly the same
 * after a reload (one transaction). Against a temporary metadata folder.
 */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/domain.h"
#include "core/manager.h"
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

/* What the observer heard, one line per call. */
static char heard[1024];

static void hear(const char *fmt, ...) _printf_(1, 2);
static void hear(const char *fmt, ...) {
        size_t n = strlen(heard);
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(heard + n, sizeof(heard) - n, fmt, ap);
        va_end(ap);
}

static void on_added(Domain *d, Snapshot *s, Snapshot *previous_current, void *userdata) {
        hear("added %s (current was %s)\n", snapshot_name(s), previous_current ? snapshot_name(previous_current) : "n/a");
}

static void on_changed(Domain *d, DomainChange what, void *userdata) {
        if (what & DOMAIN_CHANGE_CURRENT_SNAPSHOT)
                hear("CurrentSnapshot\n");
}

static void on_current_moved(Domain *d, Snapshot *previous, void *userdata) {
        hear("IsCurrent: %s -> %s\n", previous ? snapshot_name(previous) : "n/a",
             d->snapshots.current ? snapshot_name(d->snapshots.current) : "n/a");
}

static int prepare(Domain *d, const char *xml, SnapshotDef **ret, char **ret_message) {
        *ret_message = mfree(*ret_message);
        return snapshot_redefine_prepare(d, xml, ret, ret_message);
}

/* REDEFINE through the model (core/snapshot.c), and what the observer is
 * told about the current snapshot: the one before, only when it moved. */
static void test_redefine_and_reports(void) {
        static const DomainObserver observer = {
                .snapshot_added = on_added,
                .domain_changed = on_changed,
                .current_snapshot_changed = on_current_moved,
        };
        _cleanup_free_ char *dir = make_dir(), *message = NULL;
        DomainDef def = { .name = (char *) "dom" };
        Manager m = {};
        Domain d = { .manager = &m, .def = &def };
        SnapshotDef *sd = NULL;
        Snapshot *s1, *s2;

        manager_set_observer(&m, &observer, NULL);
        snapshot_tree_init(&d.snapshots, &d);
        CHECK(snapshot_tree_load(&d.snapshots, dir, "dom", 0, NULL) >= 0);

        CHECK(prepare(&d, "<domainsnapshot><name>s1</nam", &sd, &message) == -QSNAP_E_INVALID_XML);
        CHECK(message && strncmp(message, "Invalid snapshot XML: line 1: ", 30) == 0);
        CHECK(prepare(&d, "<domainsnapshot/>", &sd, &message) == -QSNAP_E_INVALID_XML);
        CHECK_STREQ(message, "REDEFINE needs the snapshot's <name>.");
        d.snapshot_busy = true;
        CHECK(prepare(&d, "<domainsnapshot><name>s1</name></domainsnapshot>", &sd, &message) == -QSNAP_E_BUSY);
        CHECK_STREQ(message, "Domain 'dom' is taking a snapshot; try again after it.");
        d.snapshot_busy = false;
        CHECK(prepare(&d, "<domainsnapshot><name>s0</name><parent><name>nope</name></parent></domainsnapshot>", &sd,
                      &message) == -QSNAP_E_NO_SUCH_SNAPSHOT);
        CHECK_STREQ(message, "The parent snapshot 'nope' does not exist.");
        CHECK(sd == NULL && d.snapshots.n == 0 && heard[0] == 0);

        /* Recorded as the current one: the observer hears there was none. */
        CHECK(prepare(&d, "<domainsnapshot><name>s1</name></domainsnapshot>", &sd, &message) == 0);
        CHECK(snapshot_redefine(&d, TAKE_PTR(sd), true, &s1, &message) == 0);
        CHECK(d.snapshots.current == s1);
        CHECK(prepare(&d, "<domainsnapshot><name>s1</name></domainsnapshot>", &sd, &message) == -QSNAP_E_ALREADY_EXISTS);
        CHECK_STREQ(message, "Domain 'dom' has a snapshot named 's1' already.");

        /* Not current: s1 stays, and the observer hears that it was. */
        CHECK(prepare(&d, "<domainsnapshot><name>s2</name><parent><name>s1</name></parent></domainsnapshot>", &sd,
                      &message) == 0);
        CHECK(snapshot_redefine(&d, TAKE_PTR(sd), false, &s2, &message) == 0);
        CHECK(d.snapshots.current == s1 && s2->parent == s1);
        CHECK_STREQ(heard, "added s1 (current was n/a)\nadded s2 (current was s1)\n");
        heard[0] = 0;

        /* A revert's report: what moved, once. */
        CHECK(snapshot_tree_set_current(&d.snapshots, s2) >= 0);
        manager_notify_changed(&m, &d, DOMAIN_CHANGE_CURRENT_SNAPSHOT);
        manager_notify_changed(&m, &d, DOMAIN_CHANGE_CURRENT_SNAPSHOT);
        CHECK_STREQ(heard, "CurrentSnapshot\nIsCurrent: s1 -> s2\nCurrentSnapshot\n");
        heard[0] = 0;

        /* The reported one removed: nothing is said about it afterwards. */
        CHECK(snapshot_tree_remove(&d.snapshots, &s2, 1, NULL, NULL, 0, NULL, NULL) >= 0);
        CHECK(d.snapshots.current == s1 && d.snapshots.reported_current == NULL);
        manager_notify_changed(&m, &d, DOMAIN_CHANGE_CURRENT_SNAPSHOT);
        CHECK_STREQ(heard, "CurrentSnapshot\nIsCurrent: n/a -> s1\n");

        snapshot_tree_done(&d.snapshots);
        remove_dir(dir);
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
        /* A second load of the same tree rebuilds it from the store (moment.c's
         * load, shared with the checkpoints): what t stored since shows. */
        {
                SnapshotDef *def = NULL;

                CHECK(snapshot_def_copy(snapshot_tree_find(&t, "e")->def, &def) >= 0);
                CHECK(free_and_strdup(&def->description, "new-e") >= 0);
                CHECK(snapshot_tree_update(&t, snapshot_tree_find(&t, "e"), def, false) >= 0);
                CHECK(snapshot_tree_load(&t2, dir, "dom", 0, NULL) >= 0);
                check_tree(&t2, "loaded again");
                CHECK(streq_ptr(snapshot_tree_find(&t2, "e")->def->description, "new-e"));
                CHECK(t2.reported_current == t2.current);
        }
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
        test_redefine_and_reports();
        return test_summary();
}
