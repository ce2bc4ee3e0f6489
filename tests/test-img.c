/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qemu-img on descriptors (qemu/img.c, qemu/child.c): placeholders round
 * trip; a chain's json: name spells every layer, "backing": null at a
 * qcow2 bottom only; the child gets exactly the descriptors handed to it
 * as 3, 4, … and no other of ours; and real qemu-img commits through such
 * a name into the file given, not the one the header names.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "qemu/img.h"
#include "test-check.h"
#include "util/util.h"

static void test_placeholders(void) {
        _cleanup_free_ char *c = img_placeholder(IMG_CHAIN, "/srv/a b:c.qcow2", DISK_FORMAT_QCOW2);
        _cleanup_free_ char *l = img_placeholder(IMG_LAYER, "/srv/x.raw", DISK_FORMAT_RAW);
        _cleanup_free_ char *f = img_placeholder(IMG_FILE, "/var/lib/nvram", DISK_FORMAT_QCOW2);
        ImgPlaceholder kind;
        DiskFormat format;
        const char *path;

        CHECK(img_placeholder_parse(c, &kind, &format, &path) == 1);
        CHECK(kind == IMG_CHAIN && format == DISK_FORMAT_QCOW2);
        CHECK_STREQ(path, "/srv/a b:c.qcow2");
        CHECK(img_placeholder_parse(l, &kind, &format, &path) == 1);
        CHECK(kind == IMG_LAYER && format == DISK_FORMAT_RAW);
        CHECK(img_placeholder_parse(f, &kind, &format, &path) == 1 && kind == IMG_FILE);
        CHECK_STREQ(img_arg_display(c), "/srv/a b:c.qcow2");
        /* Ordinary arguments are no placeholders, whatever they hold. */
        CHECK(img_placeholder_parse("/srv/x.qcow2", &kind, &format, &path) == 0);
        CHECK(img_placeholder_parse("-b", &kind, &format, &path) == 0);
        CHECK(img_placeholder_parse("\x1fXqcow2:/a", &kind, &format, &path) == 0);
        CHECK(img_placeholder_parse("\x1f" "Cnofmt:/a", &kind, &format, &path) == 0);
        CHECK_STREQ(img_arg_display("-d"), "-d");
}

static void test_chain_name(void) {
        _cleanup_(img_cmd_done) ImgCmd c = {};
        _cleanup_free_ char *name = NULL, *raw = NULL;
        ImgLayer layers[2] = { { .fd = open("/dev/null", O_RDONLY | O_CLOEXEC), .format = DISK_FORMAT_QCOW2 },
                               { .fd = open("/dev/null", O_RDONLY | O_CLOEXEC), .format = DISK_FORMAT_RAW } };
        ImgLayer one = { .fd = open("/dev/null", O_RDONLY | O_CLOEXEC), .format = DISK_FORMAT_QCOW2 };
        ImgLayer bad[2] = { { .fd = open("/dev/null", O_RDONLY | O_CLOEXEC), .format = DISK_FORMAT_RAW },
                            { .fd = open("/dev/null", O_RDONLY | O_CLOEXEC), .format = DISK_FORMAT_QCOW2 } };

        CHECK(img_cmd_init(&c, "info") == 0);
        CHECK(img_cmd_chain_name(&c, layers, 2, &raw) == 0);
        CHECK_STREQ(raw, "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"/proc/self/fd/3\"},"
                         "\"backing\":{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"/proc/self/fd/4\"}}}");
        CHECK(img_cmd_chain_name(&c, &one, 1, &name) == 0);
        CHECK_STREQ(name, "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"/proc/self/fd/5\"},"
                          "\"backing\":null}");
        CHECK(c.n_fds == 3);
        CHECK(layers[0].fd < 0 && layers[1].fd < 0 && one.fd < 0); /* moved into c */
        /* A raw layer with a layer below it: refused, every descriptor closed. */
        CHECK(img_cmd_chain_name(&c, bad, 2, &name) == -EINVAL);
        CHECK(bad[0].fd < 0 && bad[1].fd < 0 && c.n_fds == 3);
        /* What the recovery of an interrupted rebase replaces: exactly such
         * names, nothing else. */
        CHECK(img_name_is_fd_chain(raw));
        CHECK(img_name_is_fd_chain(name));
        CHECK(!img_name_is_fd_chain(NULL));
        CHECK(!img_name_is_fd_chain("/images/base.qcow2"));
        CHECK(!img_name_is_fd_chain("json:{"));
        CHECK(!img_name_is_fd_chain("json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}}"));
        CHECK(!img_name_is_fd_chain("json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"nbd\",\"filename\":\"/proc/self/fd/3\"}}"));
        CHECK(!img_name_is_fd_chain("json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"/proc/self/fd/3x\"}}"));
        CHECK(!img_name_is_fd_chain("json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"/proc/self/fd/3\"},"
                                    "\"backing\":{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"/x\"}}}"));
        CHECK(!img_name_is_fd_chain("json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"/proc/self/fd/3\"},"
                                    "\"backing\":\"/x\"}"));
        CHECK(!img_name_is_fd_chain("json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"/proc/self/fd/3\"},"
                                    "\"size\":1}"));
}

/* The child sees the descriptors handed to it as 3 and 4, nothing else. */
static void test_child_fds(const char *dir) {
        _cleanup_free_ char *a = strjoin(dir, "/a"), *b = strjoin(dir, "/b"), *output = NULL;
        _cleanup_close_ int fa = -EBADF, fb = -EBADF, extra = -EBADF;
        char *argv[] = { (char *) "/bin/sh", (char *) "-c",
                         (char *) "cat /proc/self/fd/3 /proc/self/fd/4; ls /proc/self/fd | sort -n | tr '\\n' ' '", NULL };
        int fds[2];

        CHECK(write_file_atomic(a, "AAA\n", 4, 0600) >= 0);
        CHECK(write_file_atomic(b, "BBB\n", 4, 0600) >= 0);
        fa = open(a, O_RDONLY | O_CLOEXEC);
        fb = open(b, O_RDONLY | O_CLOEXEC);
        extra = open(a, O_RDONLY); /* no O_CLOEXEC: closed at exec all the same */
        /* Handed over in the order b, a: fd 3 is b. */
        fds[0] = fb;
        fds[1] = fa;
        CHECK(child_run_fds(argv, fds, 2, &output) == 0);
        /* 0-2, 3, 4, and the one ls reads /proc/self/fd with */
        CHECK_STREQ(output, "BBB\nAAA\n0 1 2 3 4 5 ");
}

/* qemu-img commit through a json: name commits into the file handed over,
 * not the one the top's header names. */
static void test_commit_by_descriptor(const char *dir) {
        _cleanup_free_ char *top = strjoin(dir, "/top.qcow2"), *base = strjoin(dir, "/base.qcow2");
        _cleanup_free_ char *decoy = strjoin(dir, "/decoy.qcow2"), *cmd = NULL, *output = NULL;
        _cleanup_(img_cmd_done) ImgCmd c = {};
        ImgLayer layers[2];
        int r;

        cmd = strprintf("qemu-img create -q -f qcow2 %s 4M && qemu-img create -q -f qcow2 %s 4M && "
                        "qemu-img create -q -f qcow2 -b %s -F qcow2 %s && qemu-io -c 'write -P 0x5a 0 64k' %s >/dev/null",
                        base, decoy, decoy, top, top);
        CHECK(cmd && system(cmd) == 0);
        layers[0] = (ImgLayer) { .fd = open(top, O_RDONLY | O_CLOEXEC), .format = DISK_FORMAT_QCOW2 };
        layers[1] = (ImgLayer) { .fd = open(base, O_RDONLY | O_CLOEXEC), .format = DISK_FORMAT_QCOW2 };
        CHECK(img_cmd_init(&c, "commit") == 0);
        CHECK(img_cmd_add(&c, "-d", NULL) == 0);
        CHECK(img_cmd_add_chain(&c, layers, 2) == 0);
        r = img_cmd_run(&c, &output);
        CHECK(r == 0);
        if (r != 0)
                fprintf(stderr, "qemu-img: %s\n", strna(output));
        free(cmd);
        cmd = strprintf("qemu-io -c 'read -P 0x5a 0 64k' %s | grep -q 'read 65536' && "
                        "qemu-io -c 'read -P 0 0 64k' %s | grep -q 'read 65536' && "
                        "qemu-img info %s | grep -q 'backing file: %s'", base, decoy, top, decoy);
        CHECK(cmd && system(cmd) == 0);
}

int main(void) {
        char dir[] = "/tmp/test-img.XXXXXX";

        if (!mkdtemp(dir))
                return 1;
        test_placeholders();
        test_chain_name();
        test_child_fds(dir);
        if (access("/usr/bin/qemu-img", X_OK) == 0)
                test_commit_by_descriptor(dir);
        {
                _cleanup_free_ char *rm = strprintf("rm -rf %s", dir);
                if (rm)
                        (void) !system(rm);
        }
        return test_summary();
}
