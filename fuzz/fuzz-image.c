/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The qcow2 header reader (image.c): backing chains, backing names,
 * virtual sizes, internal snapshot counts, and an overlay written on top,
 * on image files made from the input.
 *
 * Input: up to 8 files separated by "--next-file--", written as 0, 1, … 7
 * in a fresh folder, so a backing name "1" (relative to the image) makes a
 * chain and "0" a loop. Reading starts at file 0.
 *
 * Invariants: a chain read never exceeds its limit, starts at the image,
 * has absolute paths; every reader returns 0 or an error; an overlay
 * written on file 0 reads back as a chain one layer deeper with file 0 as
 * its backing file and the same virtual size, which QEMU can open (at
 * most 2 PiB); a larger one is refused as unsupported, with a message.
 */
#include "fuzz.h"
#include "qemu/image.h"
#include "util/error.h"
#include "util/util.h"

#define SEPARATOR "--next-file--"
#define MAX_FILES 8
/* QEMU opens no qcow2 whose L1 table exceeds 32 MiB (QCOW_MAX_L1_SIZE):
 * with 64 KiB clusters, 2 PiB of virtual size. */
#define QCOW2_MAX_VIRTUAL_SIZE (UINT64_C(1) << 51)

FUZZ_TARGET(image) {
        const uint8_t *parts[MAX_FILES];
        size_t sizes[MAX_FILES], n;
        _cleanup_free_ char *first = NULL, *overlay = NULL, *name = NULL, *backing = NULL, *text = NULL;
        _cleanup_free_ char *message = NULL;
        ImageChain chain = {}, over = {};
        uint64_t vsize = 0, over_size = 0;
        uint32_t n_snapshots;
        bool chain_ok = false;
        char *dir;
        int r;

        fuzz_setup();
        n = fuzz_split(data, size, SEPARATOR, parts, sizes, MAX_FILES);
        dir = fuzz_mkdtemp();
        for (size_t i = 0; i < n; i++) {
                char file[2] = { (char) ('0' + i), 0 };
                fuzz_write_file(dir, file, parts[i], sizes[i]);
        }
        first = strjoin(dir, "/0");
        overlay = strjoin(dir, "/overlay");
        FUZZ_CHECK(first && overlay);

        for (DiskFormat f = 0; f < _DISK_FORMAT_MAX; f++) {
                ImageChain c = {};

                r = image_read_chain(first, f, &c, NULL);
                if (r >= 0) {
                        FUZZ_CHECK(c.n_layers >= 1 && c.n_layers <= 256);
                        FUZZ_CHECK(streq(c.layers[0].path, first));
                        for (size_t i = 0; i < c.n_layers; i++)
                                FUZZ_CHECK(c.layers[i].path[0] == '/');
                        text = mfree(text);
                        text = image_chain_to_string(&c);
                        FUZZ_CHECK(text);
                }
                if (f == DISK_FORMAT_QCOW2) {
                        chain_ok = r >= 0;
                        chain = c;
                } else
                        image_chain_done(&c);

                r = image_virtual_size(first, f, &vsize);
                FUZZ_CHECK(r <= 0);
                if (f == DISK_FORMAT_QCOW2) {
                        _cleanup_close_ int fd = image_open_nofollow(first);

                        if (fd >= 0) {
                                r = image_count_internal_snapshots_fd(fd, &n_snapshots);
                                FUZZ_CHECK(r <= 0);
                                r = image_has_internal_snapshot_fd(fd, "s1");
                                FUZZ_CHECK(r <= 1);
                        }
                }
        }
        r = image_read_backing_name(first, &name);
        FUZZ_CHECK(r <= 0);
        r = image_read_backing(first, &backing);
        FUZZ_CHECK(r <= 0);
        FUZZ_CHECK(r < 0 || !backing || backing[0] == '/');
        (void) image_is_qcow2(first);

        /* What CreateSnapshot does on a qcow2 disk. */
        if (chain_ok && image_virtual_size(first, DISK_FORMAT_QCOW2, &vsize) == 0) {
                r = image_create_overlay(overlay, first, DISK_FORMAT_QCOW2, &message);
                if (r >= 0) {
                        FUZZ_CHECK(vsize <= QCOW2_MAX_VIRTUAL_SIZE);
                        FUZZ_CHECK(image_read_chain(overlay, DISK_FORMAT_QCOW2, &over, NULL) == 0);
                        FUZZ_CHECK(over.n_layers == chain.n_layers + 1);
                        FUZZ_CHECK(streq(over.layers[1].path, first));
                        FUZZ_CHECK(image_virtual_size(overlay, DISK_FORMAT_QCOW2, &over_size) == 0);
                        FUZZ_CHECK(over_size == vsize);
                } else {
                        FUZZ_CHECK(message);
                        FUZZ_CHECK(vsize <= QCOW2_MAX_VIRTUAL_SIZE || r == -QSNAP_E_UNSUPPORTED);
                }
        }

        image_chain_done(&chain);
        image_chain_done(&over);
        fuzz_rmdir(dir);
        return 0;
}
