/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * image.c against the real qemu-img and qemu-io: the overlays we write
 * must be what qemu-img would have made (check clean, same backing, size
 * and format, readable and writable through QEMU's block layer), and the
 * chain reader must agree with `qemu-img info --backing-chain`.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "qemu/image.h"
#include "test-check.h"
#include "util/util.h"

static int sh(const char *fmt, ...) _printf_(1, 2);
static int sh(const char *fmt, ...) {
        _cleanup_free_ char *cmd = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&cmd, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        r = system(cmd);
        return WIFEXITED(r) ? WEXITSTATUS(r) : 128;
}

static char *capture(const char *fmt, ...) _printf_(1, 2);
static char *capture(const char *fmt, ...) {
        _cleanup_free_ char *cmd = NULL;
        char *out = NULL;
        va_list ap;
        FILE *f;
        size_t n = 0;

        va_start(ap, fmt);
        if (vasprintf(&cmd, fmt, ap) < 0)
                cmd = NULL;
        va_end(ap);
        if (!cmd || !(f = popen(cmd, "r")))
                return NULL;
        if (getdelim(&out, &n, 0, f) < 0) {
                free(out);
                out = NULL;
        }
        pclose(f);
        return out;
}

static void test_overlay_like_qemu_img(const char *dir, const char *base_fmt, const char *size) {
        _cleanup_free_ char *base = strprintf("%s/base-%s-%s", dir, base_fmt, size);
        _cleanup_free_ char *ours = strprintf("%s/ours-%s-%s.qcow2", dir, base_fmt, size);
        _cleanup_free_ char *theirs = strprintf("%s/theirs-%s-%s.qcow2", dir, base_fmt, size);
        _cleanup_free_ char *info = NULL, *info_theirs = NULL, *message = NULL;
        _cleanup_(image_chain_done) ImageChain chain = {};
        DiskFormat f = disk_format_from_string(base_fmt);
        struct stat a, b;

        printf("overlay on a %s %s base\n", size, base_fmt);
        CHECK(sh("qemu-img create -q -f %s %s %s", base_fmt, base, size) == 0);
        CHECK(sh("qemu-io -f %s -c 'write -P 0x5a 0 64k' %s >/dev/null", base_fmt, base) == 0);
        CHECK(image_create_overlay(ours, base, f, &message) == 0);
        CHECK(sh("qemu-img create -q -f qcow2 -b %s -F %s %s", base, base_fmt, theirs) == 0);

        CHECK(sh("qemu-img check -q %s", ours) == 0);
        CHECK(stat(ours, &a) == 0 && stat(theirs, &b) == 0);
        CHECK(a.st_size == b.st_size);
        CHECK((a.st_mode & 0777) == 0600);
        /* Everything qemu-img info says is the same, but the file names. */
        info = capture("qemu-img info --output=json %s | grep -v -e '\"filename\"' -e actual-size -e dirty-flag", ours);
        info_theirs = capture("qemu-img info --output=json %s | grep -v -e '\"filename\"' -e actual-size -e dirty-flag", theirs);
        CHECK(info && info_theirs && streq(info, info_theirs));
        if (info && info_theirs && !streq(info, info_theirs))
                fprintf(stderr, "ours:\n%s\ntheirs:\n%s\n", info, info_theirs);

        /* QEMU reads the backing data through it and writes into it. */
        CHECK(sh("qemu-io -f qcow2 -c 'read -P 0x5a 0 64k' -c 'write -P 0xa5 64k 64k' -c 'read -P 0xa5 64k 64k' %s "
                 "| grep -q 'Pattern verification failed'", ours) != 0);
        CHECK(sh("qemu-io -r -f qcow2 -c 'read -P 0xa5 64k 64k' %s | grep -q 'read 65536/65536'", ours) == 0);
        CHECK(sh("qemu-img check -q %s", ours) == 0);

        CHECK(image_read_chain(ours, DISK_FORMAT_QCOW2, &chain, NULL) == 0);
        CHECK(chain.n_layers == 2 && streq(chain.layers[1].path, base) && chain.layers[1].format == f);
        /* Never over an existing file. */
        CHECK(image_create_overlay(ours, base, f, NULL) == -EEXIST);
}

static void test_chain_agrees_with_qemu_img(const char *dir) {
        _cleanup_free_ char *a = strprintf("%s/c0.qcow2", dir), *b = strprintf("%s/c1.qcow2", dir),
                            *c = strprintf("%s/c2.qcow2", dir), *text = NULL, *expected = NULL, *link = NULL;
        _cleanup_(image_chain_done) ImageChain chain = {};

        printf("chain reading\n");
        CHECK(sh("qemu-img create -q -f qcow2 %s 1M", a) == 0);
        /* A relative backing name resolves against the image's folder. */
        CHECK(sh("cd %s && qemu-img create -q -f qcow2 -b c0.qcow2 -F qcow2 c1.qcow2", dir) == 0);
        CHECK(image_create_overlay(c, b, DISK_FORMAT_QCOW2, NULL) == 0);
        CHECK(image_read_chain(c, DISK_FORMAT_QCOW2, &chain, NULL) == 0);
        CHECK(chain.n_layers == 3);
        text = image_chain_to_string(&chain);
        expected = strprintf("%s <- %s <- %s", a, b, c);
        CHECK(text && streq(text, expected));
        CHECK(sh("test \"$(qemu-img info --backing-chain --output=json %s | grep -c '\"backing-filename\"')\" = 2", c) == 0);

        /* A loop ends with an error, not a hang. */
        link = strprintf("%s/loop.qcow2", dir);
        CHECK(sh("qemu-img create -q -f qcow2 %s 1M && qemu-img rebase -u -f qcow2 -b %s -F qcow2 %s", link, link, link) == 0);
        image_chain_done(&chain);
        CHECK(image_read_chain(link, DISK_FORMAT_QCOW2, &chain, NULL) == -ELOOP);
}

/* BlockCopy's destinations: a standalone qcow2 like `qemu-img create -f
 * qcow2 PATH SIZE`, a sparse raw file, and the header helpers. */
static void test_create_standalone(const char *dir, uint64_t size) {
        _cleanup_free_ char *ours = strprintf("%s/copy-%" PRIu64 ".qcow2", dir, size),
                            *theirs = strprintf("%s/copy-%" PRIu64 "-qemu.qcow2", dir, size),
                            *raw = strprintf("%s/copy-%" PRIu64 ".raw", dir, size), *info = NULL, *info_theirs = NULL,
                            *name = NULL;
        uint64_t got = 0;
        struct stat st;

        CHECK(image_create(ours, DISK_FORMAT_QCOW2, size, NULL, DISK_FORMAT_QCOW2, NULL) == 0);
        CHECK(sh("qemu-img create -q -f qcow2 %s %" PRIu64, theirs, size) == 0);
        CHECK(sh("qemu-img check -q %s", ours) == 0);
        info = capture("qemu-img info --output=json %s | grep -v -e '\"filename\"' -e actual-size -e dirty-flag", ours);
        info_theirs = capture("qemu-img info --output=json %s | grep -v -e '\"filename\"' -e actual-size -e dirty-flag",
                              theirs);
        CHECK(info && info_theirs);
        if (info && info_theirs)
                CHECK_STREQ(info, info_theirs);
        CHECK(image_is_qcow2(ours));
        CHECK(image_read_backing_name(ours, &name) == 0 && !name);
        CHECK(image_virtual_size(ours, DISK_FORMAT_QCOW2, &got) == 0 && got == size);
        CHECK(stat(ours, &st) == 0 && (st.st_mode & 0777) == 0600);
        CHECK(image_create(ours, DISK_FORMAT_QCOW2, size, NULL, DISK_FORMAT_QCOW2, NULL) == -EEXIST);

        CHECK(image_create(raw, DISK_FORMAT_RAW, size, NULL, DISK_FORMAT_QCOW2, NULL) == 0);
        CHECK(!image_is_qcow2(raw));
        CHECK(image_virtual_size(raw, DISK_FORMAT_RAW, &got) == 0 && got == size);
        CHECK(stat(raw, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_blocks == 0);
        CHECK(image_create(raw, DISK_FORMAT_RAW, size, ours, DISK_FORMAT_QCOW2, NULL) == -EINVAL);
}

/* FIFOs, devices and folders named by a header or metadata: refused with
 * -QSNAP_E_PATH_NOT_ALLOWED, never opened for long (an alarm turns a blocking open into a
 * failure instead of a hang). */
static void test_not_regular(const char *dir) {
        _cleanup_free_ char *fifo = strprintf("%s/fifo", dir), *top = strprintf("%s/on-fifo.qcow2", dir);
        _cleanup_free_ char *on_null = strprintf("%s/on-null.qcow2", dir), *on_dir = strprintf("%s/on-dir.qcow2", dir);
        _cleanup_free_ char *message = NULL, *name = NULL, *want = NULL;
        _cleanup_(image_chain_done) ImageChain chain = {};
        const char *specials[] = { fifo, "/dev/null", "/dev/zero", dir };
        uint64_t size = 0;

        CHECK(mkfifo(fifo, 0600) == 0);
        alarm(10);
        /* qemu-img would not make these (it probes the backing file). */
        CHECK(sh("qemu-img create -q -f qcow2 -u -b %s -F raw %s 1M", fifo, top) == 0);
        CHECK(sh("qemu-img create -q -f qcow2 -u -b /dev/null -F raw %s 1M", on_null) == 0);
        CHECK(sh("qemu-img create -q -f qcow2 -u -b %s -F raw %s 1M", dir, on_dir) == 0);

        CHECK(image_read_chain(top, DISK_FORMAT_QCOW2, &chain, NULL) == -QSNAP_E_PATH_NOT_ALLOWED);
        image_chain_done(&chain);
        CHECK(image_read_chain(on_null, DISK_FORMAT_QCOW2, &chain, NULL) == -QSNAP_E_PATH_NOT_ALLOWED);
        image_chain_done(&chain);
        CHECK(image_read_chain(on_dir, DISK_FORMAT_QCOW2, &chain, NULL) == -QSNAP_E_PATH_NOT_ALLOWED);
        image_chain_done(&chain);
        /* The header naming the FIFO is itself fine to read. */
        CHECK(image_read_backing_name(top, &name) == 0 && name && streq(name, fifo));
        for (size_t i = 0; i < ELEMENTSOF(specials); i++) {
                CHECK(image_read_chain(specials[i], DISK_FORMAT_QCOW2, &chain, NULL) == -QSNAP_E_PATH_NOT_ALLOWED);
                image_chain_done(&chain);
                CHECK(image_virtual_size(specials[i], DISK_FORMAT_QCOW2, &size) == -QSNAP_E_PATH_NOT_ALLOWED);
                CHECK(image_virtual_size(specials[i], DISK_FORMAT_RAW, &size) == -QSNAP_E_PATH_NOT_ALLOWED);
                                CHECK(!image_is_qcow2(specials[i]));
                CHECK(image_open_regular(specials[i], 0) == -QSNAP_E_PATH_NOT_ALLOWED);
                CHECK(image_create_overlay(top, specials[i], DISK_FORMAT_RAW, &message) == -QSNAP_E_PATH_NOT_ALLOWED);
                CHECK(message && strstr(message, "not a regular file"));
                message = mfree(message);
                CHECK(image_check_regular(specials[i], "The thing", &message) == -QSNAP_E_PATH_NOT_ALLOWED);
                CHECK(message && strstr(message, "is not a regular file ("));
                message = mfree(message);
        }
        want = strjoin("The memory state file ", fifo, " is not a regular file (a FIFO); qsnapd opens only regular files.");
        CHECK(image_check_regular(fifo, "The memory state file", &message) == -QSNAP_E_PATH_NOT_ALLOWED);
        CHECK(message && want && streq(message, want));
        message = mfree(message);
        CHECK(image_check_regular("/nonexistent/x", "The image", &message) == 0 && !message);
        CHECK(image_check_regular(top, "The image", &message) == 0 && !message);
        alarm(0);
}

/* qemu-img creates no qcow2 above 2 PiB (64 KiB clusters; QEMU's 32 MiB L1
 * limit) and QEMU opens none: neither do we, whatever size a backing
 * file's header claims, and nothing is left behind. */
static void test_size_limit(const char *dir) {
        _cleanup_free_ char *top = strprintf("%s/limit.qcow2", dir), *base = strprintf("%s/limit-base.qcow2", dir),
                            *over = strprintf("%s/limit-over.qcow2", dir), *message = NULL;
        const uint64_t max = 1ULL << 51;

        CHECK(sh("qemu-img create -q -f qcow2 %s 2049T 2>/dev/null", top) != 0); /* qemu-img's limit, too */
        CHECK(image_create(top, DISK_FORMAT_QCOW2, max + 1, NULL, DISK_FORMAT_QCOW2, &message) == -QSNAP_E_UNSUPPORTED);
        CHECK_CONTAINS(message, "2 PiB");
        CHECK(access(top, F_OK) < 0 && errno == ENOENT);

        CHECK(sh("qemu-img create -q -f qcow2 %s 2P", base) == 0);
        CHECK(sh("qemu-io -f qcow2 -c 'write -P 0xab 0 64k' %s >/dev/null", base) == 0);
        /* the header of base claims one byte more than 2 PiB */
        CHECK(sh("printf '\\000\\010\\000\\000\\000\\000\\000\\001' | "
                 "dd of=%s bs=1 seek=24 conv=notrunc status=none", base) == 0);
        message = mfree(message);
        CHECK(image_create_overlay(over, base, DISK_FORMAT_QCOW2, &message) == -QSNAP_E_UNSUPPORTED);
        CHECK(access(over, F_OK) < 0 && errno == ENOENT);
}

/* What CheckRevert asks of a file the gate opened, here opened without links. */
static int has_tag(const char *path, const char *name) {
        _cleanup_close_ int fd = image_open_nofollow(path);

        return fd < 0 ? fd : image_has_internal_snapshot_fd(fd, name);
}

/* Backing names QEMU takes as a protocol are never followed; the snapshot
 * table reader agrees with qemu-img snapshot -l. */
static void test_plain_names_and_tags(const char *dir) {
        _cleanup_free_ char *j = strprintf("%s/json.qcow2", dir), *nbd = strprintf("%s/nbd.qcow2", dir);
        _cleanup_free_ char *tags = strprintf("%s/tags.qcow2", dir), *backing = NULL, *message = NULL;
        _cleanup_(image_chain_done) ImageChain chain = {};

        CHECK(image_backing_name_is_plain("base.qcow2"));
        CHECK(image_backing_name_is_plain("/srv/vm/a:b.qcow2"));
        CHECK(image_backing_name_is_plain("sub/a:b"));
        CHECK(!image_backing_name_is_plain("json:{}"));
        CHECK(!image_backing_name_is_plain("nbd:localhost:10809"));
        CHECK(!image_backing_name_is_plain("file:/etc/shadow"));
        CHECK(!image_backing_name_is_plain(""));
        CHECK(sh("qemu-img create -q -f qcow2 -u -b 'json:{\"driver\":\"raw\",\"file\":{\"filename\":\"/etc/shadow\"}}' "
                 "-F raw %s 1M", j) == 0);
        CHECK(sh("qemu-img create -q -f qcow2 -u -b nbd:localhost:10809 -F raw %s 1M", nbd) == 0);
        CHECK(image_read_chain(j, DISK_FORMAT_QCOW2, &chain, &message) == -QSNAP_E_PATH_NOT_ALLOWED);
        CHECK(message && strstr(message, "json: or protocol name"));
        message = mfree(message);
        image_chain_done(&chain);
        CHECK(image_read_chain(nbd, DISK_FORMAT_QCOW2, &chain, NULL) == -QSNAP_E_PATH_NOT_ALLOWED);
        CHECK(image_read_backing(nbd, &backing) == -QSNAP_E_PATH_NOT_ALLOWED);

        CHECK(sh("qemu-img create -q -f qcow2 %s 1M && qemu-img snapshot -c first %s && "
                 "qemu-img snapshot -c second-and-longer %s", tags, tags, tags) == 0);
        CHECK(has_tag(tags, "first") == 1);
        CHECK(has_tag(tags, "second-and-longer") == 1);
        CHECK(has_tag(tags, "second") == 0);
        CHECK(has_tag(tags, "1") == 0); /* an id is no name */
        CHECK(sh("qemu-img snapshot -d first %s", tags) == 0);
        CHECK(has_tag(tags, "first") == 0);
        CHECK(has_tag(nbd, "first") == 0);
        CHECK(has_tag("/dev/null", "first") == -QSNAP_E_PATH_NOT_ALLOWED);
}

static uint64_t count_bits(const uint8_t *bits, uint64_t n) {
        uint64_t c = 0;

        for (uint64_t i = 0; i < n; i++)
                c += (bits[i / 8] >> (i % 8)) & 1;
        return c;
}

/* The dirty bitmaps as qemu-io left them in the file: the bits set are
 * exactly the chunks written (what QEMU's count says), per granularity. */
static void test_read_dirty_bitmap(const char *dir) {
        _cleanup_free_ char *img = strprintf("%s/bm.qcow2", dir), *raw = strprintf("%s/bm.raw", dir);
        _cleanup_free_ uint8_t *bits = NULL, *bits2 = NULL;
        _cleanup_close_ int fd = -EBADF, rawfd = -EBADF;
        uint64_t g = 0, n = 0;

        CHECK(img && raw);
        CHECK(sh("qemu-img create -q -f qcow2 %s 8M && qemu-img bitmap --add %s b1 && "
                 "qemu-img bitmap --add -g 131072 %s b2", img, img, img) == 0);
        fd = open(img, O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        CHECK(image_read_dirty_bitmap(fd, "b1", &g, &n, &bits) == 1);
        CHECK(g == 65536 && n == 128 && count_bits(bits, n) == 0);
        bits = mfree(bits);
        /* 64 KiB at 0, 1 MiB at 4 MiB, the last 512 bytes (the last chunk) */
        CHECK(sh("qemu-io -f qcow2 -c 'write 0 64k' -c 'write 4M 1M' -c 'write 8388096 512' %s >/dev/null", img) == 0);
        CHECK(image_read_dirty_bitmap(fd, "b1", &g, &n, &bits) == 1);
        CHECK(g == 65536 && n == 128);
        CHECK(count_bits(bits, n) == 1 + 16 + 1);
        CHECK((bits[0] & 1) && !(bits[0] & 2) && bits[8] == 0xff && bits[9] == 0xff && (bits[15] & 0x80));
        CHECK(image_read_dirty_bitmap(fd, "b2", &g, &n, &bits2) == 1);
        CHECK(g == 131072 && n == 64 && count_bits(bits2, n) == 1 + 8 + 1);
        bits2 = mfree(bits2);
        /* No such bitmap; another format. */
        CHECK(image_read_dirty_bitmap(fd, "b3", &g, &n, &bits2) == 0 && !bits2);
        CHECK(sh("qemu-img create -q -f raw %s 1M", raw) == 0);
        rawfd = open(raw, O_RDONLY | O_CLOEXEC);
        CHECK(rawfd >= 0);
        CHECK(image_read_dirty_bitmap(rawfd, "b1", &g, &n, &bits2) == -EMEDIUMTYPE);
}

int main(void) {
        char dir[] = "/tmp/test-image.XXXXXX";

        if (!mkdtemp(dir))
                return 1;
        test_overlay_like_qemu_img(dir, "qcow2", "64M");
        test_overlay_like_qemu_img(dir, "raw", "3M");
        test_overlay_like_qemu_img(dir, "qcow2", "5T"); /* an L1 table of several clusters */
        test_overlay_like_qemu_img(dir, "qcow2", "1000000"); /* not a multiple of the cluster size */
        test_chain_agrees_with_qemu_img(dir);
        test_create_standalone(dir, 64ULL << 20);
        test_create_standalone(dir, 5ULL << 40); /* an L1 table of several clusters */
        test_not_regular(dir);
        test_size_limit(dir);
        test_plain_names_and_tags(dir);
        test_read_dirty_bitmap(dir);
        sh("rm -rf %s", dir);
        return test_summary();
}
