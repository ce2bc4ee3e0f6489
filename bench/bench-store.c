/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Benchmark of the metadata store (daemon/store/store.c): N snapshot-sized
 * entries (~1.5 KiB of <domainsnapshot> XML each) committed one by one as
 * CreateSnapshot does (PUT + CURRENT in one transaction), then redefines
 * and deletes at full size. Prints per-commit latency for the first and
 * the last 1,000 commits (median, 99th percentile, max), compactions, file
 * sizes, and the time a fresh load takes at several sizes: the cost of
 * one operation must not grow with the number of entries.
 *
 *     bench-store [--count N] [DIR]
 *
 * DIR (default: a new folder under $TMPDIR or /tmp, removed afterwards)
 * should be on the file system qsnapd's state lives on: every commit is
 * an fdatasync().
 */

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include "store/store.h"
#include "util/util.h"

#define UUID "5d0c1b6e-3f3a-4a43-9a51-bd1c3f9d2e11"
#define WINDOW 1000U

static char *entry_xml(unsigned i) {
        char pad[420];

        /* Something like what libvirt keeps per snapshot: the snapshot's
         * own elements and a copy of the domain definition. */
        memset(pad, 'x', sizeof(pad) - 1);
        pad[sizeof(pad) - 1] = 0;
        return strprintf(
                "<domainsnapshot>\n"
                "  <name>ci-run-%06u</name>\n"
                "  <description>nightly CI snapshot %u &amp; more</description>\n"
                "  <state>running</state>\n"
                "  <parent>\n    <name>ci-run-%06u</name>\n  </parent>\n"
                "  <creationTime>%u</creationTime>\n"
                "  <memory snapshot='internal'/>\n"
                "  <disks>\n"
                "    <disk name='vda' snapshot='internal'/>\n"
                "    <disk name='vdb' snapshot='external'>\n"
                "      <driver type='qcow2'/>\n"
                "      <source file='/var/lib/images/ci-runner-data.ci-run-%06u.qcow2'/>\n"
                "    </disk>\n"
                "  </disks>\n"
                "  <domain type='kvm'>\n"
                "    <name>ci-runner</name>\n"
                "    <uuid>" UUID "</uuid>\n"
                "    <memory unit='KiB'>4194304</memory>\n"
                "    <vcpu>4</vcpu>\n"
                "    <os><type arch='x86_64' machine='pc-q35-8.2'>hvm</type></os>\n"
                "    <devices>\n"
                "      <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
                "      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                "<source file='/var/lib/images/ci-runner.qcow2'/><target dev='vda' bus='virtio'/></disk>\n"
                "      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                "<source file='/var/lib/images/ci-runner-data.qcow2'/><target dev='vdb' bus='virtio'/></disk>\n"
                "    </devices>\n"
                "    <metadata>%s</metadata>\n"
                "  </domain>\n"
                "</domainsnapshot>",
                i, i, i > 0 ? i - 1 : 0, 1700000000U + i, i, pad);
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void print_window(const char *what, const uint64_t *lat, size_t n) {
        _cleanup_free_ uint64_t *s = new0(uint64_t, n);

        memcpy(s, lat, n * sizeof(uint64_t));
        qsort(s, n, sizeof(uint64_t), cmp_u64);
        printf("  %-34s median %7.3f ms   p99 %7.3f ms   max %8.3f ms\n", what,
               (double) s[n / 2] / 1000.0, (double) s[n * 99 / 100] / 1000.0, (double) s[n - 1] / 1000.0);
}

static uint64_t size_of(const char *dir, const char *suffix) {
        _cleanup_free_ char *p = strprintf("%s/%s%s", dir, UUID, suffix);
        struct stat st;

        return stat(p, &st) < 0 ? 0 : (uint64_t) st.st_size;
}

/* A fresh Store, as at daemon start: open + load. */
static uint64_t time_load(const char *dir, size_t *ret_n) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ char *error = NULL, *current = NULL;
        StoreEntry *entries = NULL;
        uint64_t t0 = now_usec(CLOCK_MONOTONIC), t;
        size_t n = 0;

        if (store_open(dir, UUID, "snapshots", "domainsnapshot", 0, &s) < 0 ||
            store_load(s, &entries, &n, &current, &error) < 0) {
                fprintf(stderr, "load failed: %s\n", strna(error));
                exit(EXIT_FAILURE);
        }
        t = now_usec(CLOCK_MONOTONIC) - t0;
        store_entries_free(entries, n);
        *ret_n = n;
        return t;
}

static void remove_dir(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        while (d && (de = readdir(d)))
                if (!STR_IN_SET(de->d_name, ".", ".."))
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        if (d)
                closedir(d);
        (void) rmdir(dir);
}

int main(int argc, char **argv) {
        _cleanup_(store_freep) Store *s = NULL;
        _cleanup_free_ uint64_t *lat = NULL, *lat2 = NULL;
        _cleanup_free_ char *tmp = NULL;
        const char *dir = NULL;
        unsigned count = 10000;
        uint64_t total_xml = 0, worst = 0, t_all;
        size_t worst_at = 0;
        StoreStats st;

        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--count") && i + 1 < argc)
                        count = (unsigned) strtoul(argv[++i], NULL, 10);
                else if (argv[i][0] != '-')
                        dir = argv[i];
                else {
                        fprintf(stderr, "usage: %s [--count N] [DIR]\n", argv[0]);
                        return EXIT_FAILURE;
                }
        }
        if (count < 2 * WINDOW) {
                fprintf(stderr, "--count must be at least %u\n", 2 * WINDOW);
                return EXIT_FAILURE;
        }
        if (!dir) {
                tmp = strprintf("%s/bench-store-XXXXXX", getenv("TMPDIR") ?: "/tmp");
                if (!mkdtemp(tmp)) {
                        perror("mkdtemp");
                        return EXIT_FAILURE;
                }
                dir = tmp;
        }
        if (store_open(dir, UUID, "snapshots", "domainsnapshot", 0, &s) < 0 || store_load(s, NULL, NULL, NULL, NULL) < 0) {
                fprintf(stderr, "cannot open the store in %s\n", dir);
                return EXIT_FAILURE;
        }
        lat = new0(uint64_t, count);
        lat2 = new0(uint64_t, WINDOW);

        printf("store benchmark in %s: %u commits of PUT + CURRENT\n", dir, count);
        t_all = now_usec(CLOCK_MONOTONIC);
        for (unsigned i = 0; i < count; i++) {
                _cleanup_free_ char *xml = entry_xml(i), *name = strprintf("ci-run-%06u", i);
                StoreOp ops[] = {
                        { .type = STORE_OP_PUT, .name = name, .xml = xml },
                        { .type = STORE_OP_CURRENT, .name = name },
                };
                uint64_t t0 = now_usec(CLOCK_MONOTONIC);

                if (store_commit(s, ops, ELEMENTSOF(ops)) < 0)
                        return EXIT_FAILURE;
                lat[i] = now_usec(CLOCK_MONOTONIC) - t0;
                total_xml += strlen(xml);
                if (lat[i] > worst) {
                        worst = lat[i];
                        worst_at = i;
                }
                if (i + 1 == 1000 || i + 1 == count / 2 || i + 1 == count) {
                        size_t n;
                        uint64_t t = time_load(dir, &n);

                        printf("  load of %5zu entries (fresh process state): %8.1f ms, %6.2f µs per entry\n",
                               n, (double) t / 1000.0, (double) t / (double) n);
                }
        }
        t_all = now_usec(CLOCK_MONOTONIC) - t_all;
        store_get_stats(s, &st);
        printf("  average entry %" PRIu64 " bytes; %" PRIu64 " compactions (generation %" PRIu64 "); "
               "worst commit %.1f ms at #%zu (a compaction)\n",
               total_xml / count, st.n_compactions, st.generation, (double) worst / 1000.0, worst_at + 1);
        print_window("first 1000 commits:", lat, WINDOW);
        print_window("last 1000 commits:", lat + count - WINDOW, WINDOW);
        printf("  all %u commits: %.2f s, %.3f ms per commit on average (compactions included)\n", count,
               (double) t_all / USEC_PER_SEC, (double) t_all / 1000.0 / count);

        /* At full size: redefine (PUT of an existing name) and delete. */
        for (unsigned i = 0; i < WINDOW; i++) {
                _cleanup_free_ char *xml = entry_xml(i * 7 % count), *name = strprintf("ci-run-%06u", i * 7 % count);
                StoreOp op = { .type = STORE_OP_PUT, .name = name, .xml = xml };
                uint64_t t0 = now_usec(CLOCK_MONOTONIC);

                if (store_commit(s, &op, 1) < 0)
                        return EXIT_FAILURE;
                lat2[i] = now_usec(CLOCK_MONOTONIC) - t0;
        }
        print_window("1000 redefines at full size:", lat2, WINDOW);
        for (unsigned i = 0; i < WINDOW; i++) {
                _cleanup_free_ char *name = strprintf("ci-run-%06u", count - 1 - i * 3);
                StoreOp op = { .type = STORE_OP_DELETE, .name = name };
                uint64_t t0 = now_usec(CLOCK_MONOTONIC);

                if (store_commit(s, &op, 1) < 0)
                        return EXIT_FAILURE;
                lat2[i] = now_usec(CLOCK_MONOTONIC) - t0;
        }
        print_window("1000 deletes at full size:", lat2, WINDOW);

        store_get_stats(s, &st);
        printf("  files: %s.xml %" PRIu64 " bytes, %s.journal %" PRIu64 " bytes, %zu entries\n", UUID,
               size_of(dir, ".xml"), UUID, size_of(dir, ".journal"), st.n_entries);
        {
                size_t n;
                uint64_t t = time_load(dir, &n);

                printf("  final load of %zu entries: %.1f ms\n", n, (double) t / 1000.0);
        }

        if (tmp)
                remove_dir(tmp);
        return EXIT_SUCCESS;
}
