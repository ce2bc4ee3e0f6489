/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Every enum's name table (util/string-table.h's DEFINE_STRING_TABLE_LOOKUP):
 * each value has a name of its own that reads back as the value, values
 * out of range have none, unknown names, case variants and NULL are
 * -EINVAL; and the lookup helper itself on a table with holes.
 */
#include "core/domain.h"
#include "core/snapshot.h"
#include "qemu/job.h"
#include "store/xml-backup.h"
#include "store/xml-checkpoint.h"
#include "store/xml-domain.h"
#include "store/xml-snapshot.h"
#include "test-check.h"
#include "util/string-table.h"

/* Round trips over [0, max): distinct names that map back to their value. */
#define CHECK_TABLE(name, max, ...)                                                               \
        do {                                                                                      \
                static const char *const expected[] = { __VA_ARGS__ };                            \
                CHECK(ELEMENTSOF(expected) == (size_t) (max));                                    \
                for (int v = 0; v < (int) (max); v++) {                                           \
                        const char *s = name##_to_string(v);                                      \
                        CHECK_STREQ(s, expected[v]);                                              \
                        CHECK((int) name##_from_string(s) == v);                                  \
                        for (int o = 0; o < v; o++)                                               \
                                CHECK(!streq_ptr(name##_to_string(o), s));                        \
                }                                                                                 \
                CHECK(name##_to_string(max) == NULL);                                             \
                CHECK(name##_to_string(-1) == NULL);                                              \
                CHECK(name##_to_string(-EINVAL) == NULL);                                         \
                CHECK((int) name##_from_string(NULL) == -EINVAL);                                 \
                CHECK((int) name##_from_string("") == -EINVAL);                                   \
                CHECK((int) name##_from_string("no-such-name") == -EINVAL);                       \
        } while (0)

/* Names are matched exactly: "QCOW2" is not "qcow2". */
static void check_case(int (*from)(const char *), const char *upper) {
        CHECK(from(upper) == -EINVAL);
}

static int disk_format_from(const char *s) {
        return disk_format_from_string(s);
}
static int job_state_from(const char *s) {
        return job_state_from_string(s);
}

static void test_tables(void) {
        CHECK_TABLE(disk_format, _DISK_FORMAT_MAX, "qcow2", "raw");
        CHECK_TABLE(disk_cache, _DISK_CACHE_MAX, "default", "none", "writethrough", "writeback", "directsync", "unsafe");
        CHECK_TABLE(disk_io, _DISK_IO_MAX, "default", "native", "threads", "io_uring");
        CHECK_TABLE(snapshot_location, _SNAPSHOT_LOCATION_MAX, "default", "no", "internal", "external", "manual");
        CHECK_TABLE(snapshot_state, _SNAPSHOT_STATE_MAX, "running", "paused", "shutoff", "disk-snapshot", "nostate",
                    "blocked", "shutdown", "crashed", "pmsuspended");
        CHECK_TABLE(merge_direction, _MERGE_MAX, "default", "forward", "backward");
        CHECK_TABLE(checkpoint_type, _CHECKPOINT_TYPE_MAX, "no", "bitmap");
        CHECK_TABLE(backup_mode, _BACKUP_MODE_MAX, "push", "pull");
        CHECK_TABLE(backup_transport, _BACKUP_TRANSPORT_MAX, "tcp", "unix");
        CHECK_TABLE(backup_disk_type, _BACKUP_DISK_TYPE_MAX, "file", "block");
        CHECK_TABLE(backup_disk_mode, _BACKUP_DISK_MODE_MAX, "default", "full", "incremental");
        CHECK_TABLE(job_type, _JOB_TYPE_MAX, "pull", "copy", "commit", "active-commit", "backup", "snapshot-delete",
                    "snapshot-revert", "snapshot-create");
        CHECK_TABLE(job_state, _JOB_STATE_MAX, "running", "ready", "paused", "pending", "completed", "failed",
                    "canceled");
        check_case(disk_format_from, "QCOW2");
        check_case(job_state_from, "Running");
}

/* The enums the bus only ever names. */
static void test_to_string_only(void) {
        static const char *const states[] = { "shutoff", "running", "paused", "crashed" };
        static const char *const kinds[] = { "internal", "external", "mixed" };

        CHECK(ELEMENTSOF(states) == _DOMAIN_STATE_MAX);
        for (int v = 0; v < _DOMAIN_STATE_MAX; v++)
                CHECK_STREQ(domain_state_to_string(v), states[v]);
        CHECK(domain_state_to_string(_DOMAIN_STATE_MAX) == NULL);
        CHECK(domain_state_to_string(_DOMAIN_STATE_INVALID) == NULL);

        CHECK(ELEMENTSOF(kinds) == _SNAPSHOT_KIND_MAX);
        for (int v = 0; v < _SNAPSHOT_KIND_MAX; v++)
                CHECK_STREQ(snapshot_kind_to_string(v), kinds[v]);
        CHECK(snapshot_kind_to_string(_SNAPSHOT_KIND_MAX) == NULL);
        CHECK(snapshot_kind_to_string(_SNAPSHOT_KIND_INVALID) == NULL);
}

typedef enum Sparse {
        SPARSE_A,
        SPARSE_HOLE,
        SPARSE_C,
        _SPARSE_MAX,
        _SPARSE_INVALID = -EINVAL,
} Sparse;

static const char *const sparse_table[_SPARSE_MAX] = {
        [SPARSE_A] = "a",
        [SPARSE_C] = "c",
};

DEFINE_STRING_TABLE_LOOKUP_TO_STRING(sparse, Sparse, static)
DEFINE_STRING_TABLE_LOOKUP_FROM_STRING(sparse, Sparse, static)

static void test_holes(void) {
        CHECK_STREQ(sparse_to_string(SPARSE_A), "a");
        CHECK(sparse_to_string(SPARSE_HOLE) == NULL);
        CHECK_STREQ(sparse_to_string(SPARSE_C), "c");
        CHECK(sparse_from_string("c") == SPARSE_C);
        CHECK(sparse_from_string("a") == SPARSE_A);
        CHECK(sparse_from_string("b") == _SPARSE_INVALID);
        CHECK(string_table_lookup(sparse_table, ELEMENTSOF(sparse_table), NULL) == -EINVAL);
        CHECK(string_table_lookup(sparse_table, 1, "c") == -EINVAL); /* only the first entry searched */
}

int main(void) {
        test_tables();
        test_to_string_only();
        test_holes();
        return test_summary();
}
