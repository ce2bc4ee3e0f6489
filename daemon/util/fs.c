/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Descriptor-relative helpers for the path gate (core/gate.c): a folder
 * is resolved component by component below a folder descriptor, never
 * through a symbolic link and never above it, and files are created with
 * O_EXCL|O_NOFOLLOW relative to that descriptor, so that swapping a folder
 * for a link after the check changes nothing.
 */
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <sys/syscall.h>

#include "util/error.h"
#include "util/fs.h"
#include "util/util.h"

static int open_beneath_openat2(int dirfd, const char *rel) {
#ifdef SYS_openat2
        struct open_how how = {
                .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        long fd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));

        return fd < 0 ? -errno : (int) fd;
#else
        return -ENOSYS;
#endif
}

/* The fallback: one component at a time, ".." refused outright. */
static int open_beneath_walk(int dirfd, const char *rel) {
        _cleanup_free_ char *copy = strdup(rel);
        _cleanup_close_ int fd = -EBADF;
        char *save = NULL;

        if (!copy)
                return -ENOMEM;
        fd = openat(dirfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        for (char *c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
                struct stat st;
                int next;

                if (streq(c, "."))
                        continue;
                if (streq(c, ".."))
                        return -EXDEV;
                if (fstatat(fd, c, &st, AT_SYMLINK_NOFOLLOW) < 0)
                        return -errno;
                if (S_ISLNK(st.st_mode))
                        return -ELOOP;
                next = openat(fd, c, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (next < 0)
                        return -errno;
                safe_close(fd);
                fd = next;
                /* A link swapped in between: O_NOFOLLOW|O_PATH opened the link itself. */
                if (fstat(fd, &st) < 0)
                        return -errno;
                if (!S_ISDIR(st.st_mode))
                        return -ELOOP;
        }
        return TAKE_FD(fd);
}

int fs_open_dir_beneath(int dirfd, const char *rel) {
        int fd;

        if (isempty(rel))
                rel = ".";
        if (rel[0] == '/')
                return -EXDEV;
        fd = open_beneath_openat2(dirfd, rel);
        if (fd == -ENOSYS || fd == -EPERM) /* no openat2, or a seccomp filter refusing it */
                fd = open_beneath_walk(dirfd, rel);
        return fd;
}

int fs_open_dir_nofollow(const char *abs_path) {
        _cleanup_close_ int root = -EBADF;

        if (!abs_path || abs_path[0] != '/')
                return -EINVAL;
        root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0)
                return -errno;
        return fs_open_dir_beneath(root, abs_path + strspn(abs_path, "/"));
}

int fs_lstat_at(int dirfd, const char *name, struct stat *ret) {
        return fstatat(dirfd, name, ret, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

int fs_create_at(int dirfd, const char *name, mode_t mode) {
        int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode);

        return fd < 0 ? -errno : fd;
}

bool fs_same_inode(int fd1, int fd2) {
        struct stat a, b;

        return fstat(fd1, &a) >= 0 && fstat(fd2, &b) >= 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

const char *fs_basename(const char *path) {
        const char *slash = strrchr(path, '/');

        return slash ? slash + 1 : path;
}

char *fs_dirname(const char *path) {
        const char *slash = strrchr(path, '/');

        if (!slash)
                return strdup(".");
        return strndup(path, slash == path ? 1 : (size_t) (slash - path));
}

int fs_fstat_regular(int fd, struct stat *ret) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -QSNAP_E_PATH_NOT_ALLOWED;
        if (ret)
                *ret = st;
        return 0;
}

int fs_open_nofollow(const char *path, int flags, mode_t mode) {
        _cleanup_free_ char *folder = NULL;
        _cleanup_close_ int dirfd = -EBADF, fd = -EBADF;
        const char *name;
        struct stat st;
        int r;

        if (!path || path[0] != '/')
                return -EINVAL;
        folder = fs_dirname(path);
        if (!folder)
                return -ENOMEM;
        name = fs_basename(path);
        dirfd = fs_open_dir_nofollow(folder);
        if (dirfd < 0)
                return dirfd;
        r = fs_lstat_at(dirfd, name, &st);
        if (r < 0 && !(r == -ENOENT && (flags & O_CREAT)))
                return r;
        if (r >= 0 && !S_ISREG(st.st_mode))
                return S_ISLNK(st.st_mode) ? -ELOOP : -QSNAP_E_PATH_NOT_ALLOWED;
        /* O_NONBLOCK: a FIFO swapped in after the look is not waited on. */
        fd = openat(dirfd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY, mode);
        if (fd < 0)
                return -errno;
        r = fs_fstat_regular(fd, NULL);
        if (r < 0)
                return r;
        return TAKE_FD(fd);
}

int fs_split_file_path(const char *path, char **ret_folder, const char **ret_name) {
        const char *name;

        if (!path || path[0] != '/')
                return -EINVAL;
        name = fs_basename(path);
        if (isempty(name) || streq(name, ".") || streq(name, ".."))
                return -EINVAL;
        *ret_folder = fs_dirname(path);
        if (!*ret_folder)
                return -ENOMEM;
        *ret_name = name;
        return 0;
}

int fs_unlink_nofollow(const char *path, mode_t type) {
        _cleanup_free_ char *folder = NULL;
        _cleanup_close_ int dirfd = -EBADF;
        const char *name;
        struct stat st;
        int r;

        r = fs_split_file_path(path, &folder, &name);
        if (r < 0)
                return r;
        r = dirfd = fs_open_dir_nofollow(folder);
        if (r >= 0)
                r = fs_lstat_at(dirfd, name, &st);
        if (r >= 0 && S_ISLNK(st.st_mode))
                r = -ELOOP;
        else if (r >= 0 && (st.st_mode & S_IFMT) != (type & S_IFMT))
                r = S_ISDIR(st.st_mode) ? -EISDIR : -EPERM;
        /* A link swapped in for the name after the look is what unlinkat()
         * removes, not its target; the folder is the descriptor's. */
        if (r >= 0 && unlinkat(dirfd, name, 0) < 0)
                r = -errno;
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Left %s in place: %s.", path,
                                  r == -ELOOP  ? "its path goes through a symbolic link, and qsnapd removes a file "
                                                 "only through a path without one"
                                  : r == -EPERM ? "it is not the kind of file qsnapd made there"
                                                : qsnap_strerror(r));
        return r;
}

int fs_mkdir_p_nofollow(const char *abs_path, mode_t mode) {
        _cleanup_free_ char *copy = NULL;
        _cleanup_close_ int dirfd = -EBADF;
        char *save = NULL;

        if (!abs_path || abs_path[0] != '/')
                return -EINVAL;
        copy = strdup(abs_path);
        if (!copy)
                return -ENOMEM;
        dirfd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
                return -errno;
        for (char *name = strtok_r(copy, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
                int fd;

                if (streq(name, ".."))
                        return -EINVAL;
                if (mkdirat(dirfd, name, mode) < 0 && errno != EEXIST)
                        return -errno;
                /* A link there (mkdirat's EEXIST, or swapped in since):
                 * O_DIRECTORY|O_NOFOLLOW says ENOTDIR, as for a file. */
                fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (fd < 0) {
                        struct stat st;
                        int r = -errno;

                        return r == -ENOTDIR && fs_lstat_at(dirfd, name, &st) >= 0 && S_ISLNK(st.st_mode) ? -ELOOP : r;
                }
                safe_close(dirfd);
                dirfd = fd;
        }
        return 0;
}

int fs_write_file_atomic_nofollow(const char *path, const void *data, size_t size, mode_t mode) {
        _cleanup_free_ char *folder = NULL, *tmp = NULL;
        _cleanup_close_ int dirfd = -EBADF, fd = -EBADF, sync_fd = -EBADF;
        const char *name, *p = data;
        int r;

        r = fs_split_file_path(path, &folder, &name);
        if (r < 0)
                return r;
        tmp = strprintf("%s.tmp-%d", name, (int) getpid());
        if (!tmp)
                return -ENOMEM;
        dirfd = fs_open_dir_nofollow(folder);
        if (dirfd < 0)
                return dirfd;
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, mode);
        if (fd < 0)
                return -errno;
        while (r >= 0 && size > 0) {
                ssize_t n = write(fd, p, size);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        r = -errno;
                else {
                        p += n;
                        size -= (size_t) n;
                }
        }
        if (r >= 0 && fsync(fd) < 0)
                r = -errno;
        if (r >= 0 && renameat(dirfd, tmp, dirfd, name) < 0)
                r = -errno;
        if (r < 0) {
                (void) unlinkat(dirfd, tmp, 0);
                return r;
        }
        /* The folder's descriptor is O_PATH: a readable one for fsync. */
        sync_fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sync_fd < 0 || fsync(sync_fd) < 0)
                return -errno;
        return 0;
}
