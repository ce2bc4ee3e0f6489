/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The operation journal files (daemon/store/op-journal.c): where they go, that
 * a write replaces the whole file with mode 0600 in a 0700 ops folder,
 * what a read gives for no file, a damaged file and a good one, and the
 * lenient getters the recoveries rely on. Against a temporary state folder.
 */
#include <stdio.h>
#include <sys/stat.h>

#include "store/op-journal.h"
#include "test-check.h"

static void test_files(const char *state_dir) {
        static const char uuid[] = "0b7c1a9e-2f44-4c1e-9a55-3f0d2c1e8b77";
        _cleanup_free_ char *path = op_journal_path(state_dir, uuid, "snapshot-revert");
        _cleanup_free_ char *ops = strprintf("%s/ops", state_dir), *expected = NULL;
        json_object *o = json_object_new_object(), *got = NULL, *arr = NULL;
        struct stat st;
        FILE *f;

        expected = strprintf("%s/ops/%s.snapshot-revert", state_dir, uuid);
        CHECK_STREQ(path, expected);
        CHECK(!op_journal_exists(state_dir, uuid, "snapshot-revert"));
        CHECK(op_journal_read(state_dir, uuid, "snapshot-revert", &got) == 0);

        json_object_object_add(o, "snapshot", json_object_new_string("s/1 ü"));
        json_object_object_add(o, "external", json_object_new_boolean(true));
        json_object_object_add(o, "count", json_object_new_int(1));
        json_object_object_add(o, "disks", json_object_new_array());
        json_object_array_add(json_object_object_get(o, "disks"), json_object_new_string("vda"));
        CHECK(op_journal_write(state_dir, uuid, "snapshot-revert", o) == 0);
        CHECK(stat(ops, &st) == 0 && (st.st_mode & 0777) == 0700);
        CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
        CHECK(op_journal_exists(state_dir, uuid, "snapshot-revert"));
        CHECK(!op_journal_exists(state_dir, uuid, "snapshot-delete"));

        CHECK(op_journal_read(state_dir, uuid, "snapshot-revert", &got) == 1);
        CHECK(got && json_object_equal(got, o));
        CHECK_STREQ(json_get_string(got, "snapshot"), "s/1 ü");
        CHECK(json_get_string(got, "external") == NULL); /* another type */
        CHECK(json_get_string(got, "missing") == NULL);
        CHECK(json_get_bool(got, "external"));
        CHECK(!json_get_bool(got, "count")); /* an int is no boolean */
        CHECK(!json_get_bool(got, "missing"));
        CHECK(json_get_array(got, "disks", &arr) == 1 && arr);
        CHECK(json_get_array(got, "snapshot", &arr) == 0);
        json_object_put(got);
        got = NULL;

        /* A second write replaces the whole file. */
        json_object_object_del(o, "disks");
        CHECK(op_journal_write(state_dir, uuid, "snapshot-revert", o) == 0);
        CHECK(op_journal_read(state_dir, uuid, "snapshot-revert", &got) == 1);
        CHECK(got && json_object_equal(got, o));
        json_object_put(got);
        got = NULL;

        /* A torn or foreign file is reported, not trusted. */
        f = fopen(path, "we");
        CHECK(f && fputs("{ \"snapshot\": \"s1\", \"exter", f) >= 0 && fclose(f) == 0);
        CHECK(op_journal_read(state_dir, uuid, "snapshot-revert", &got) == -EBADMSG);
        CHECK(got == NULL);

        op_journal_remove(state_dir, uuid, "snapshot-revert");
        op_journal_remove(state_dir, uuid, "snapshot-revert"); /* gone already: quiet */
        CHECK(!op_journal_exists(state_dir, uuid, "snapshot-revert"));
        CHECK(op_journal_read(state_dir, uuid, "snapshot-revert", &got) == 0);
        CHECK(rmdir(ops) == 0);
        json_object_put(o);
}

int main(void) {
        _cleanup_free_ char *dir = strprintf("%s/test-op-journal-XXXXXX", getenv("TMPDIR") ?: "/tmp");

        if (!dir || !mkdtemp(dir)) {
                perror("mkdtemp");
                return EXIT_FAILURE;
        }
        log_set_max_level(LOG_CRIT); /* the damaged file logs an error on purpose */
        test_files(dir);
        (void) rmdir(dir);
        return test_summary();
}
