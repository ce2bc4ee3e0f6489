/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata store's loader (store.c) as the daemon runs it at start-up
 * (snapshot_tree_load(): bulk file + journal, each entry parsed with
 * REDEFINE), on a bulk file and a journal made from the input.
 *
 * Input: the bulk file's bytes, then "\n@@journal@@\n", then the journal's
 * bytes. So that the fuzzer gets past the journal's checksums, a record
 * header whose LENGTH field reads "llllllll" gets the length of the bytes up
 * to the next "QSJ1 " (or the end), and one whose CRC field reads
 * "xxxxxxxx" gets the right CRC; any other value is left as it is.
 *
 * Invariants: a refused load says why; after a load, a commit succeeds (the
 * store repairs a torn journal by rewriting) and a fresh load sees exactly
 * the tree in memory, also after a compaction.
 */
#include <endian.h>

#include "fuzz.h"
#include "core/snapshot.h"
#include "store/store.h"
#include "util/util.h"

#define SEPARATOR "\n@@journal@@\n"
#define RECORD_MAGIC "QSJ1 "
#define RECORD_HEADER_SIZE 40U
#define RECORD_CRC_SPAN 31U
#define MIN(a, b) ((a) < (b) ? (a) : (b))

static uint32_t crc32_ieee(uint32_t crc, const uint8_t *p, size_t n) {
        crc = ~crc;
        while (n-- > 0) {
                crc ^= *p++;
                for (unsigned k = 0; k < 8; k++)
                        crc = crc & 1 ? 0xEDB88320U ^ (crc >> 1) : crc >> 1;
        }
        return ~crc;
}

static void fix_up_journal(uint8_t *j, size_t n) {
        size_t pos = 0;

        while (pos + RECORD_HEADER_SIZE <= n && memcmp(j + pos, RECORD_MAGIC, 5) == 0) {
                uint8_t *len_field = j + pos + 22, *crc_field = j + pos + 31;
                size_t payload = pos + RECORD_HEADER_SIZE, len;
                char buf[9];

                if (memcmp(len_field, "llllllll", 8) == 0) {
                        const uint8_t *next = memmem(j + payload, n - payload, RECORD_MAGIC, 5);
                        len = (next ? (size_t) (next - j) : n) - payload;
                        snprintf(buf, sizeof(buf), "%08zx", len & 0xffffffffU);
                        memcpy(len_field, buf, 8);
                }
                memcpy(buf, len_field, 8);
                buf[8] = 0;
                if (strspn(buf, "0123456789abcdef") != 8)
                        return;
                len = strtoul(buf, NULL, 16);
                if (memcmp(crc_field, "xxxxxxxx", 8) == 0) {
                        uint32_t crc = crc32_ieee(0, j + pos, RECORD_CRC_SPAN);
                        crc = crc32_ieee(crc, j + payload, MIN(len, n - payload));
                        snprintf(buf, sizeof(buf), "%08x", crc);
                        memcpy(crc_field, buf, 8);
                }
                if (len > n - payload)
                        return;
                pos = payload + len;
        }
}

static void check_same_tree(const SnapshotTree *a, const SnapshotTree *b) {
        const Snapshot *x = a->first, *y = b->first;

        FUZZ_CHECK(a->n == b->n);
        for (; x && y; x = x->next, y = y->next) {
                FUZZ_CHECK(streq(x->def->name, y->def->name));
                FUZZ_CHECK(streq_ptr(x->parent ? x->parent->def->name : NULL, y->parent ? y->parent->def->name : NULL));
        }
        FUZZ_CHECK(!x && !y);
        FUZZ_CHECK(streq_ptr(a->current ? a->current->def->name : NULL, b->current ? b->current->def->name : NULL));
}

/* Loads dir/s.xml + journal into a fresh tree; 0 or the load's error. */
static int load(const char *dir, SnapshotTree *t) {
        _cleanup_free_ char *message = NULL;
        int r;

        snapshot_tree_init(t, NULL);
        r = snapshot_tree_load(t, dir, "s", 0, &message);
        if (r < 0)
                FUZZ_CHECK(message || r == -ENOMEM || r == -EFBIG);
        return r;
}

/* A commit that changes what is current, then a reload that must agree. */
static void commit_and_reload(SnapshotTree *t, const char *dir) {
        SnapshotTree again;
        Snapshot *target = t->current == t->first ? t->last : t->first;
        StoreOp op = { .type = STORE_OP_CURRENT, .name = target ? target->def->name : NULL };

        FUZZ_CHECK(store_commit(t->store, &op, 1) == 0);
        t->current = target;
        FUZZ_CHECK(load(dir, &again) == 0);
        check_same_tree(t, &again);
        snapshot_tree_done(&again);
}

FUZZ_TARGET(store) {
        const uint8_t *parts[2];
        size_t sizes[2], n;
        _cleanup_free_ uint8_t *journal = NULL;
        SnapshotTree t;
        Snapshot **list = NULL;
        size_t n_list = 0;
        char *dir;

        fuzz_setup();
        n = fuzz_split(data, size, SEPARATOR, parts, sizes, 2);
        dir = fuzz_mkdtemp();
        fuzz_write_file(dir, "s.xml", parts[0], sizes[0]);
        if (n > 1) {
                journal = malloc(sizes[1] ?: 1);
                FUZZ_CHECK(journal);
                memcpy(journal, parts[1], sizes[1]);
                fix_up_journal(journal, sizes[1]);
                fuzz_write_file(dir, "s.journal", journal, sizes[1]);
        }

        if (load(dir, &t) == 0) {
                FUZZ_CHECK(snapshot_tree_list(&t, NULL, SNAPSHOT_LIST_TOPOLOGICAL, &list, &n_list) == 0);
                FUZZ_CHECK(n_list == t.n);
                free(list);

                commit_and_reload(&t, dir);
                store_set_compaction_threshold(t.store, 1);
                commit_and_reload(&t, dir);
        }
        snapshot_tree_done(&t);
        fuzz_rmdir(dir);
        return 0;
}
