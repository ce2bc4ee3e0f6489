/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Descriptor-relative file system helpers for the path gate: folders
 * resolved below a folder descriptor without following any symbolic link
 * and without leaving it, and files created relative to the verified
 * folder. Nothing here knows what a domain is.
 */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>

/* Opens (O_PATH|O_DIRECTORY) the folder `rel` below folder descriptor
 * `dirfd` ("" or "." is dirfd itself). Every component must be a real
 * folder: a symbolic link anywhere is -ELOOP, a ".." that would climb
 * above dirfd is -EXDEV, a missing component -ENOENT, a file -ENOTDIR.
 * openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) where the kernel has it,
 * else a walk of openat(O_NOFOLLOW) per component that refuses "..". */
int fs_open_dir_beneath(int dirfd, const char *rel);

/* Opens (O_PATH|O_DIRECTORY) an absolute folder path without following a
 * symbolic link in any component: -ELOOP when one is there. */
int fs_open_dir_nofollow(const char *abs_path);

/* fstatat(AT_SYMLINK_NOFOLLOW) of `name` in dirfd: 0 and *ret, or -errno. */
int fs_lstat_at(int dirfd, const char *name, struct stat *ret);

/* A new file `name` in dirfd: O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW, so
 * never over an existing file and never through a symlink. The fd or
 * -errno. */
int fs_create_at(int dirfd, const char *name, mode_t mode);

/* Opens the file at absolute `path` without following a symbolic link in
 * any component: the folder by fs_open_dir_nofollow(), the name looked at
 * first (a link is -ELOOP, anything but a regular file
 * -QSNAP_E_PATH_NOT_ALLOWED, so no device or FIFO is ever opened), then
 * openat() with `flags` | O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC|O_NOCTTY and
 * checked again by descriptor. With O_CREAT a missing file is made with
 * `mode`. The fd or a negative error. */
int fs_open_nofollow(const char *path, int flags, mode_t mode);

/* Removes the file at absolute `path` (a file qsnapd made in a folder a
 * caller may write in) without following a symbolic link in any
 * component: its folder opened by fs_open_dir_nofollow() (the same walk
 * as every other path of the gate), the name looked at there, then
 * unlinkat() relative to that descriptor — a folder swapped for a link
 * after the file was made cannot redirect the removal to another folder.
 * `type` is what the file must be (S_IFREG, S_IFSOCK). Nothing is removed
 * when a component is a link (-ELOOP; the last one too: a link there is
 * not ours, and is left), when the name is a folder (-EISDIR) or of
 * another type (-EPERM), or when the walk fails (its error). Every refusal
 * but a missing file (-ENOENT) is logged as a warning naming the file
 * left and why. 0 when removed, else the negative error. */
int fs_unlink_nofollow(const char *path, mode_t type);
/* An absolute path naming a file, split: its folder (allocated) and its
 * last component (inside path). -EINVAL when path is not absolute or the
 * last component is empty, "." or "..". */
int fs_split_file_path(const char *path, char **ret_folder, const char **ret_name);
/* mkdir -p of an absolute folder, each component made (mode) or entered
 * relative to its parent's descriptor, never through a symbolic link
 * (-ELOOP where one is on the way, -ENOTDIR at a file): a caller cannot make
 * qsnapd create folders elsewhere by swapping one for a link. */
int fs_mkdir_p_nofollow(const char *abs_path, mode_t mode);

/* Replaces the file at absolute `path` crash-safely (a temporary file
 * beside it, fsync, rename, fsync of the folder), all relative to its
 * folder opened by fs_open_dir_nofollow(): no component may be a link
 * (-ELOOP), and a folder swapped for one meanwhile redirects nothing. A
 * link as the last component is replaced itself, never followed. 0 or a
 * negative error; the temporary file never stays. */
int fs_write_file_atomic_nofollow(const char *path, const void *data, size_t size, mode_t mode);

/* fstat(fd) into *ret (may be NULL): 0 for a regular file,
 * -QSNAP_E_PATH_NOT_ALLOWED for anything else (a FIFO, a device, a
 * folder swapped in after a check), or -errno. */
int fs_fstat_regular(int fd, struct stat *ret);

/* Both refer to the same inode. */
bool fs_same_inode(int fd1, int fd2);

/* The last component of an absolute path ("" for "/"), and a copy of
 * the folder part ("/" for a file in "/"); NULL on OOM. */
const char *fs_basename(const char *path);
char *fs_dirname(const char *path);
