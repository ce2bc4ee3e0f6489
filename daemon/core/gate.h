/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The path gate: the one place that says whether qsnapd (or the qemu-img
 * and QEMU it runs) may create, write, rename, unlink or follow a file for
 * a domain, whatever named it — the caller (overlays, memory files, copy
 * and rebase targets), a REDEFINE'd document (memory file, overlay
 * sources), stored snapshot metadata, or an image header (backing names).
 *
 * A domain's allowed folders: the --image-root= folders and everything
 * below them, and exactly the folders of the disk sources its definition
 * (persistent and live) names. Never a folder learned from an image header
 * or from snapshot metadata. A path is inside when its folder, opened from
 * "/" without following a symbolic link in any component (openat2
 * RESOLVE_NO_SYMLINKS, or an O_NOFOLLOW walk), is one of those folders or
 * below a root, and its last component is no symbolic link. No D-Bus here.
 */
#pragma once

#include "core/domain.h"
#include "qemu/image.h"
#include "qemu/img.h"
#include "store/xml-snapshot.h"

/* 0 when `path` may be used for domain d. -QSNAP_E_INVALID_ARGUMENT for a
 * relative path; -QSNAP_E_PATH_NOT_ALLOWED otherwise, with one neutral
 * text — "<what> <path> is not in an allowed folder of domain '…' or does
 * not exist …" — whichever the reason (outside, a link, a missing folder),
 * so that a refusal (given before authorization) tells nothing about
 * folders the caller cannot list. */
int gate_check(Domain *d, const char *path, const char *what, char **ret_message);

/* The same, and the verified folder as an O_PATH descriptor in *ret_dirfd:
 * create relative to it (fs_create_at(), image_create_at()), so that the
 * folder swapped for a link after the check cannot redirect the file. */
int gate_open_folder(Domain *d, const char *path, const char *what, int *ret_dirfd, char **ret_message);

/* An existing regular file inside the allowed folders, opened for reading
 * relative to the folder the gate verified (O_NOFOLLOW|O_NONBLOCK, never a
 * device or FIFO): what qsnapd reads itself is then the file the gate
 * passed, whatever is swapped in meanwhile. The fd in *ret_fd. */
int gate_open_image(Domain *d, const char *path, const char *what, int *ret_fd, char **ret_message);

/* The virtual size of a domain's image (qcow2 header or raw length),
 * read from the file gate_open_image() opened. */
int gate_image_size(Domain *d, const char *path, DiskFormat format, const char *what, uint64_t *ret,
                    char **ret_message);

/* Every file a snapshot's metadata names that Delete or Revert would act
 * on: the memory state file, the disks' sources (overlays) and the
 * <revertDisks> sources. At REDEFINE
 * and again before Delete and Revert act (metadata stored before the gate
 * existed is refused there, never acted on). */
int gate_check_snapshot_def(Domain *d, const SnapshotDef *def, char **ret_message);

/* The backing chain of `active` as its headers name it, every file opened
 * through the gate and its header read from that descriptor (plain names
 * only, each inside the allowed folders, no link): a chain that leaves
 * them is -QSNAP_E_PATH_NOT_ALLOWED, not followed. The active file too
 * (a disk swapped for a link is not read), unless it is qsnapd's own
 * transient overlay (runtime dir, opened without links); a missing one is
 * -ENOENT, as a missing backing file in an allowed folder. */
int gate_read_chain(Domain *d, const char *active, DiskFormat format, ImageChain *ret, char **ret_message);

/* Opens `path` (and, when whole, every backing file below it) for qemu-img
 * through the gate, each file relative to the folder the gate verified and
 * each backing name read from the header of the descriptor just opened
 * (plain names only, inside the allowed folders): the chain qemu-img gets
 * is exactly the one qsnapd read. *ret: the layers, top first. `what`
 * names path in a refusal. */
int gate_open_chain(Domain *d, const char *path, DiskFormat format, bool whole, const char *what, ImgLayer **ret,
                    size_t *ret_n, char **ret_message);

/* A qemu-img command from a template whose image arguments are
 * img_placeholder()s (qemu/img.h): each opened with gate_open_chain() and
 * replaced by its json: name over /proc/self/fd/N. */
int gate_img_command(Domain *d, char *const *template, ImgCmd *ret, char **ret_message);

/* `qemu-img snapshot <op> <tag>` (-c, -a, -d) on file alone (a qcow2), by
 * descriptor: a domain's image through the gate; own: qsnapd's UEFI
 * variable store (O_NOFOLLOW, regular files only). Blocking: a header
 * edit, run after authorization. 0, -QSNAP_E_QEMU_FAILED with qemu-img's
 * output in *ret_output, or the gate's refusal (its text in *ret_output). */
int gate_img_snapshot(Domain *d, const char *op, const char *tag, const char *file, bool own, char **ret_output);

/* `qemu-img bitmap <op> [<source>] <file> <name>` (op "--add", "--remove",
 * or "--merge" with a source bitmap of the same file) on a domain's qcow2
 * image, the file opened through the gate (alone, "backing": null). 0,
 * -QSNAP_E_QEMU_FAILED with "qemu-img bitmap failed: <its output>" in
 * *ret_message (may be NULL), or the gate's refusal and text. Blocking: a
 * header edit, after authorization. */
int gate_img_bitmap(Domain *d, const char *op, const char *source, const char *file, const char *name,
                    char **ret_message);
