/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The path gate (core/gate.c) and its descriptor helpers (util/fs.c) on a
 * real domain (tests/test-ops.h's fixture, no QEMU): which folders are
 * allowed (the disks' folders exactly, the image roots and below, nothing
 * a header names), links anywhere and ".." refused, one refusal text,
 * chains confined, json: and protocol backing names refused.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "core/gate.h"
#include "util/fs.h"
/* fake-qmp.h's record check, inlined here where nothing records, makes
 * gcc see a NULL %s argument that cannot be reached. */
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wformat-overflow"
#endif
#include "test-ops.h"

static bool refused_with(int r, const char *message, const char *path) {
        return r == -QSNAP_E_PATH_NOT_ALLOWED && message && strstr(message, path) &&
               strstr(message, "is not in an allowed folder of domain 'vm' or does not exist");
}

static void test_folders(OpsFixture *f) {
        _cleanup_free_ char *sub = ops_path(f, "sub"), *in_sub = ops_path(f, "sub/o.qcow2"), *link = ops_path(f, "link");
        _cleanup_free_ char *via_link = ops_path(f, "link/o.qcow2"), *outside = strprintf("%s/outside", f->dir);
        _cleanup_free_ char *out_file = strprintf("%s/outside/o.qcow2", f->dir), *dotdot = ops_path(f, "../outside/o");
        _cleanup_free_ char *missing = strprintf("%s/missing/o.qcow2", f->dir), *last_link = ops_path(f, "last");
        _cleanup_free_ char *message = NULL, *plain = ops_path(f, "o.qcow2"), *text_out = NULL, *text_missing = NULL;
        _cleanup_free_ char *made = ops_path(f, "made-here");
        char *roots[] = { f->images, NULL };
        struct stat st;
        int dirfd = -EBADF, r;

        check(mkdir(sub, 0700) >= 0 && mkdir(outside, 0700) >= 0);
        check(symlink(outside, link) >= 0 && symlink(out_file, last_link) >= 0);

        /* The disk's folder, exactly. */
        check(gate_check(f->domain, plain, "The overlay", &message) == 0 && !message);
        check(gate_open_folder(f->domain, plain, "The overlay", &dirfd, &message) == 0 && dirfd >= 0);
        r = fs_create_at(dirfd, "made-here", 0600);
        check(r >= 0);
        safe_close(r);
        check(fs_create_at(dirfd, "made-here", 0600) == -EEXIST);
        safe_close(dirfd);
        check(fs_lstat_at(AT_FDCWD, made, &st) == 0 && S_ISREG(st.st_mode));

        /* Not below it, unless it is an image root. */
        r = gate_check(f->domain, in_sub, "The overlay", &message);
        check(refused_with(r, message, in_sub));
        f->manager->config.image_roots = roots;
        check(gate_check(f->domain, in_sub, "The overlay", &message) == 0);

        /* Outside, through a link, through "..", a link as the last
         * component, a missing folder: all the same words. */
        r = gate_check(f->domain, out_file, "The overlay", &message);
        check(refused_with(r, message, out_file));
        text_out = strdup(message);
        r = gate_check(f->domain, missing, "The overlay", &message);
        check(refused_with(r, message, missing));
        text_missing = strdup(message);
        check(text_out && text_missing);
        check(streq(strstr(text_out, " is not"), strstr(text_missing, " is not")));
        r = gate_check(f->domain, via_link, "The overlay", &message);
        check(refused_with(r, message, via_link));
        r = gate_check(f->domain, dotdot, "The overlay", &message);
        check(refused_with(r, message, dotdot));
        r = gate_check(f->domain, last_link, "The overlay", &message);
        check(refused_with(r, message, last_link));
        check(gate_check(f->domain, "relative/o.qcow2", "The overlay", &message) == -QSNAP_E_INVALID_ARGUMENT);
        f->manager->config.image_roots = NULL;

        /* The descriptor helpers on their own. */
        dirfd = open(f->images, O_PATH | O_DIRECTORY | O_CLOEXEC);
        check(dirfd >= 0);
        r = fs_open_dir_beneath(dirfd, "sub");
        check(r >= 0);
        safe_close(r);
        check(fs_open_dir_beneath(dirfd, "link") == -ELOOP);
        check(fs_open_dir_beneath(dirfd, "../outside") == -EXDEV);
        check(fs_open_dir_beneath(dirfd, "/etc") == -EXDEV);
        check(fs_open_dir_beneath(dirfd, "vda.qcow2") == -ENOTDIR);
        safe_close(dirfd);
        check(fs_open_dir_nofollow(via_link) == -ELOOP || fs_open_dir_nofollow(link) == -ELOOP);
        message = mfree(message);
}

static bool exists_as(const char *path, mode_t type) {
        struct stat st;

        return lstat(path, &st) >= 0 && (st.st_mode & S_IFMT) == type;
}

/* fs_unlink_nofollow(): a file qsnapd made in a caller's folder is removed
 * only through a path without a link; a link in the middle or at the end
 * removes nothing (the victim stays, and so does the link). */
static void test_unlink(OpsFixture *f) {
        _cleanup_free_ char *u = ops_path(f, "u"), *plain = ops_path(f, "u/x"), *victims = strprintf("%s/victims", f->dir);
        _cleanup_free_ char *victim = strprintf("%s/victims/x", f->dir), *mid = ops_path(f, "mid");
        _cleanup_free_ char *via_mid = ops_path(f, "mid/x"), *last = ops_path(f, "u/last"), *sock = ops_path(f, "u/s");
        _cleanup_free_ char *deeper = ops_path(f, "u/d"), *via_deeper = ops_path(f, "u/d/victims/x");
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        check(u && plain && victims && victim && mid && via_mid && last && sock && deeper && via_deeper);
        check(mkdir(u, 0700) >= 0 && mkdir(victims, 0700) >= 0);
        check(write_file_atomic(victim, "victim", 6, 0600) >= 0);
        check(symlink(victims, mid) >= 0 && symlink(victim, last) >= 0 && symlink(f->dir, deeper) >= 0);

        /* No link: removed. */
        check(write_file_atomic(plain, "ours", 4, 0600) >= 0);
        check(fs_unlink_nofollow(plain, S_IFREG) == 0 && !exists_as(plain, S_IFREG));
        check(fs_unlink_nofollow(plain, S_IFREG) == -ENOENT);

        /* A link in the middle (the folder swapped for one), or further up. */
        check(fs_unlink_nofollow(via_mid, S_IFREG) == -ELOOP);
        check(fs_unlink_nofollow(via_deeper, S_IFREG) == -ELOOP);
        check(exists_as(victim, S_IFREG) && exists_as(mid, S_IFLNK));

        /* A link as the last component: not ours, left, and its target too. */
        check(fs_unlink_nofollow(last, S_IFREG) == -ELOOP);
        check(exists_as(last, S_IFLNK) && exists_as(victim, S_IFREG));

        /* Not what was made there: a folder, a file where a socket was. */
        check(fs_unlink_nofollow(deeper, S_IFREG) == -ELOOP);
        check(fs_unlink_nofollow(u, S_IFREG) == -EISDIR && exists_as(u, S_IFDIR));
        check(write_file_atomic(plain, "ours", 4, 0600) >= 0);
        check(fs_unlink_nofollow(plain, S_IFSOCK) == -EPERM && exists_as(plain, S_IFREG));

        /* A socket, as a backup's NBD socket. */
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        check(fd >= 0 && strlen(sock) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, sock);
        check(bind(fd, (struct sockaddr *) &sa, sizeof(sa)) >= 0);
        safe_close(fd);
        check(fs_unlink_nofollow(sock, S_IFSOCK) == 0 && !exists_as(sock, S_IFSOCK));

        check(fs_unlink_nofollow("relative/x", S_IFREG) == -EINVAL);
        check(fs_unlink_nofollow(NULL, S_IFREG) == -EINVAL);
        {
                _cleanup_free_ char *text = NULL;
                size_t size;

                check(read_full_file(victim, 64, &text, &size) >= 0 && size == 6 && memcmp(text, "victim", 6) == 0);
        }
}

/* fs_mkdir_p_nofollow(): the UEFI store's folder made below a caller's
 * folder, never through one swapped for a link. */
static void test_mkdir_p(OpsFixture *f) {
        _cleanup_free_ char *deep = ops_path(f, "m/a/b"), *elsewhere = strprintf("%s/elsewhere", f->dir);
        _cleanup_free_ char *link = ops_path(f, "m/l"), *via_link = ops_path(f, "m/l/new/deeper");
        _cleanup_free_ char *made_there = strprintf("%s/elsewhere/new", f->dir), *file = ops_path(f, "m/f");
        _cleanup_free_ char *via_file = ops_path(f, "m/f/x"), *up = ops_path(f, "m/../m/x");
        struct stat st;

        check(deep && elsewhere && link && via_link && made_there && file && via_file && up);
        check(fs_mkdir_p_nofollow(deep, 0700) == 0 && stat(deep, &st) >= 0 && S_ISDIR(st.st_mode));
        check((st.st_mode & 07777) == 0700);
        check(fs_mkdir_p_nofollow(deep, 0700) == 0); /* there already */

        /* A link on the way: nothing made where it points. */
        check(mkdir(elsewhere, 0700) >= 0 && symlink(elsewhere, link) >= 0);
        check(fs_mkdir_p_nofollow(via_link, 0700) == -ELOOP);
        check(lstat(made_there, &st) < 0 && errno == ENOENT);
        check(fs_mkdir_p_nofollow(link, 0700) == -ELOOP);

        check(write_file_atomic(file, "x", 1, 0600) >= 0);
        check(fs_mkdir_p_nofollow(via_file, 0700) == -ENOTDIR);
        check(fs_mkdir_p_nofollow(up, 0700) == -EINVAL);
        check(fs_mkdir_p_nofollow("relative", 0700) == -EINVAL);
}

static bool holds(const char *path, const char *text) {
        _cleanup_free_ char *data = NULL;
        size_t size;

        return read_full_file(path, 1024, &data, &size) >= 0 && size == strlen(text) && memcmp(data, text, size) == 0;
}

/* fs_write_file_atomic_nofollow(): the UEFI store written back by Revert,
 * never through a folder swapped for a link; a link as the name is
 * replaced, not followed. */
static void test_write_atomic(OpsFixture *f) {
        _cleanup_free_ char *w = ops_path(f, "w"), *store = ops_path(f, "w/VARS.fd"), *victims = strprintf("%s/wv", f->dir);
        _cleanup_free_ char *victim = strprintf("%s/wv/VARS.fd", f->dir), *mid = ops_path(f, "wmid");
        _cleanup_free_ char *via_mid = ops_path(f, "wmid/VARS.fd"), *last = ops_path(f, "w/last");
        DIR *dh;
        int n = 0;

        check(w && store && victims && victim && mid && via_mid && last);
        check(mkdir(w, 0700) >= 0 && mkdir(victims, 0700) >= 0 && symlink(victims, mid) >= 0);
        check(write_file_atomic(victim, "victim", 6, 0600) >= 0 && symlink(victim, last) >= 0);

        check(fs_write_file_atomic_nofollow(store, "one", 3, 0600) == 0 && holds(store, "one"));
        check(fs_write_file_atomic_nofollow(store, "two!", 4, 0600) == 0 && holds(store, "two!"));
        check(fs_write_file_atomic_nofollow(via_mid, "evil", 4, 0600) == -ELOOP);
        check(fs_write_file_atomic_nofollow(last, "mine", 4, 0600) == 0 && exists_as(last, S_IFREG) && holds(last, "mine"));
        check(holds(victim, "victim"));
        check(fs_write_file_atomic_nofollow("relative", "x", 1, 0600) == -EINVAL);
        /* nothing else in the victims' folder, no temporary file left in ours */
        check((dh = opendir(victims)));
        for (struct dirent *de; (de = readdir(dh));)
                n += !streq(de->d_name, ".") && !streq(de->d_name, "..");
        closedir(dh);
        check(n == 1);
        check((dh = opendir(w)));
        for (struct dirent *de; (de = readdir(dh));)
                check(!strstr(de->d_name, ".tmp-"));
        closedir(dh);
}

static void test_chains(OpsFixture *f) {
        _cleanup_free_ char *outside = strprintf("%s/outside", f->dir), *base = strprintf("%s/outside/base.qcow2", f->dir);
        _cleanup_free_ char *top = ops_path(f, "top.qcow2"), *ok = ops_path(f, "ok.qcow2"), *j = ops_path(f, "json.qcow2");
        _cleanup_free_ char *fifo = ops_path(f, "fifo"), *message = NULL;
        _cleanup_(image_chain_done) ImageChain chain = {};
        int fd = -EBADF, r;

        ops_image(base, NULL);
        ops_image(top, base);      /* a header naming a file outside */
        ops_image(ok, f->images_of[0]);
        check(image_read_chain(top, DISK_FORMAT_QCOW2, &chain, NULL) == 0 && chain.n_layers == 2);
        image_chain_done(&chain);
        r = gate_read_chain(f->domain, top, DISK_FORMAT_QCOW2, &chain, &message);
        check(refused_with(r, message, base));
        check(strstr(message, top)); /* which image named it */
        image_chain_done(&chain);
        message = mfree(message);
        check(gate_read_chain(f->domain, ok, DISK_FORMAT_QCOW2, &chain, &message) == 0 && chain.n_layers == 2);
        image_chain_done(&chain);
        /* The header's folder is not allowed for anything else either. */
        r = gate_check(f->domain, base, "The overlay", &message);
        check(refused_with(r, message, base));
        message = mfree(message);

        check(image_create(j, DISK_FORMAT_QCOW2, DISK_SIZE, "json:{\"driver\":\"raw\",\"file\":{\"filename\":\"/etc/shadow\"}}",
                           DISK_FORMAT_RAW, &message) >= 0);
        r = gate_read_chain(f->domain, j, DISK_FORMAT_QCOW2, &chain, &message);
        check(r == -QSNAP_E_PATH_NOT_ALLOWED && message && strstr(message, "json: or protocol name"));
        image_chain_done(&chain);
        message = mfree(message);

        /* What qsnapd reads itself: regular files only, never blocking. */
        check(mkfifo(fifo, 0600) >= 0);
        alarm(10);
        r = gate_open_image(f->domain, fifo, "The image", &fd, &message);
        check(refused_with(r, message, fifo));
        alarm(0);
        message = mfree(message);
        check(gate_open_image(f->domain, ok, "The image", &fd, &message) == 0 && fd >= 0);
        safe_close(fd);
        (void) outside;
}

/* The active file of a chain goes through the gate too: a link to an
 * image (even one in the same folder) is not read, a file outside the
 * allowed folders neither; a missing one stays -ENOENT, a FIFO is refused
 * without being opened. */
static void test_chain_tops(OpsFixture *f) {
        _cleanup_free_ char *out_top = strprintf("%s/outside/top-out.qcow2", f->dir), *link = ops_path(f, "top-link");
        _cleanup_free_ char *missing = ops_path(f, "no-such.qcow2"), *fifo = ops_path(f, "top-fifo");
        _cleanup_free_ char *message = NULL;
        _cleanup_(image_chain_done) ImageChain chain = {};
        int r;

        ops_image(out_top, NULL);
        check(symlink(f->images_of[0], link) >= 0);
        r = gate_read_chain(f->domain, link, DISK_FORMAT_QCOW2, &chain, &message);
        check(refused_with(r, message, link));
        message = mfree(message);
        r = gate_read_chain(f->domain, out_top, DISK_FORMAT_QCOW2, &chain, &message);
        check(refused_with(r, message, out_top));
        message = mfree(message);
        r = gate_read_chain(f->domain, missing, DISK_FORMAT_QCOW2, &chain, &message);
        check(r == -ENOENT);
        message = mfree(message);
        check(mkfifo(fifo, 0600) >= 0);
        alarm(10);
        check(gate_read_chain(f->domain, fifo, DISK_FORMAT_QCOW2, &chain, &message) == -QSNAP_E_PATH_NOT_ALLOWED);
        alarm(0);
        message = mfree(message);
        /* The disk itself reads as before. */
        check(gate_read_chain(f->domain, f->images_of[0], DISK_FORMAT_QCOW2, &chain, &message) == 0 &&
              chain.n_layers >= 1);
}

static void test_snapshot_def(OpsFixture *f) {
        _cleanup_free_ char *message = NULL, *inside = ops_path(f, "mem"), *out = strprintf("%s/outside/mem", f->dir);
        SnapshotDisk disk = { .name = (char *) "vda", .source = out };
        SnapshotDef def = { .name = (char *) "s", .memory_file = inside };
        int r;

        check(gate_check_snapshot_def(f->domain, &def, &message) == 0);
        def.disks = &disk;
        def.n_disks = 1;
        r = gate_check_snapshot_def(f->domain, &def, &message);
        check(refused_with(r, message, out) && strstr(message, "The overlay"));
        def.n_disks = 0;
        def.memory_file = out;
        r = gate_check_snapshot_def(f->domain, &def, &message);
        check(refused_with(r, message, out) && strstr(message, "The memory state file"));
        def.memory_file = NULL;
        def.revert_disks = &disk;
        def.n_revert_disks = 1;
        r = gate_check_snapshot_def(f->domain, &def, &message);
        check(refused_with(r, message, out) && strstr(message, "revert disk"));
}

int main(int argc, char *argv[]) {
        OpsFixture f;

        ops_init();
        ops_setup(&f, 1);
        test_folders(&f);
        test_unlink(&f);
        test_mkdir_p(&f);
        test_write_atomic(&f);
        test_chains(&f);
        test_chain_tops(&f);
        test_snapshot_def(&f);
        ops_teardown(&f);
        ops_done();
        printf("all path gate tests passed\n");
        return EXIT_SUCCESS;
}
