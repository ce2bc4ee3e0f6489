/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Disk image facts read straight from the files: the backing chain of a
 * qcow2 image from its header (no qemu-img process per property read),
 * and empty qcow2 overlays written directly, in constant time whatever
 * the depth of the chain below.
 */
#pragma once

#include "store/xml-domain.h"
#include "util/error.h"

/* Every file named by a definition, by snapshot metadata or by an image
 * header is opened through this: stat first (a device is never opened,
 * a FIFO never blocks), O_RDONLY|O_NONBLOCK plus `flags` (O_NOFOLLOW), and
 * fstat again. Returns the descriptor, or -QSNAP_E_PATH_NOT_ALLOWED for
 * anything that is not a regular file (FIFO, device, folder, socket), or
 * -errno. Every reader below uses it, so a chain with such a file in it is
 * an error (-QSNAP_E_PATH_NOT_ALLOWED), never a stall. */
int image_open_regular(const char *path, int flags);

/* The same, for an absolute path reached without following a link in
 * any component (the folder by fs_open_dir_nofollow(), the file with
 * O_NOFOLLOW: -ELOOP for a link): what qemu-img is handed when no domain's
 * path gate can open it (measure, bitmaps of files the caller's gate check
 * passed), so that a link swapped in since leads nowhere. */
int image_open_nofollow(const char *path);

/* -QSNAP_E_PATH_NOT_ALLOWED with *ret_message "<what> <path> is not a
 * regular file (a FIFO)…"
 * when path exists and is no regular file; 0 otherwise (a missing file is
 * left to the caller's own checks). For checks before qemu-img or QEMU is
 * handed a path. */
int image_check_regular(const char *path, const char *what, char **ret_message);

typedef struct ImageLayer {
        char *path;       /* absolute */
        DiskFormat format;
} ImageLayer;

typedef struct ImageChain {
        ImageLayer *layers; /* active first, base last */
        size_t n_layers;
} ImageChain;

void image_chain_done(ImageChain *c);

/* Whether QEMU would take a backing file name as a plain file name: not
 * "json:…" and no protocol prefix ("nbd:…", "http:…", any "<word>:" before
 * the first '/'), not empty. Only such names are ever followed. */
bool image_backing_name_is_plain(const char *name);

/* Opens one file of a chain for reading (the path gate: core/gate.c):
 * `image` names the file whose header named it, NULL for the top. The
 * descriptor, or < 0 (then *ret_message may say why). */
typedef int (*ImageOpenFunc)(const char *path, const char *image, void *userdata, char **ret_message);
/* The same walk with every file, the top included, opened by `open_file`
 * and each header read from the descriptor it returned (a raw layer is
 * opened too, its header not read). */
int image_read_chain_opened(const char *path, DiskFormat format, ImageOpenFunc open_file, void *userdata,
                            ImageChain *ret, char **ret_message);
/* The walk with each file opened by image_open_nofollow() (no link in the
 * file's path at all): at most 256 layers; a loop, a link or a missing
 * file ends the chain with an error, a FIFO, device or folder in it with
 * -QSNAP_E_PATH_NOT_ALLOWED (never a stall), and so does a json: or
 * protocol backing name (never followed). For tests and tools; qsnapd
 * reads a domain's chains through the path gate (core/gate.c). */
int image_read_chain(const char *path, DiskFormat format, ImageChain *ret, char **ret_message);

/* "base <- mid <- active", the way Domain.Disks shows a chain. */
char *image_chain_to_string(const ImageChain *c);

/* What `qemu-img create -f qcow2 -b backing -F fmt path` makes (same
 * layout, same size as the backing file), mode 0600, never over an
 * existing file nor through a symlink. On failure *ret_message says why. */
int image_create_overlay(const char *path, const char *backing, DiskFormat backing_format, char **ret_message);

/* The virtual size: the qcow2 header's size field, or a raw file's length. */
int image_virtual_size(const char *path, DiskFormat format, uint64_t *ret);
/* The same from a descriptor (one the path gate opened). */
int image_virtual_size_fd(int fd, DiskFormat format, uint64_t *ret);

/* A new, empty image of `size` bytes (qcow2 standalone or on `backing`,
 * whose name goes into the header as given; or a sparse raw file), with
 * the guarantees of image_create_overlay(). A qcow2 above 2 PiB (more than
 * QEMU opens with 64 KiB clusters) is -EOPNOTSUPP, nothing created. */
int image_create(const char *path, DiskFormat format, uint64_t size, const char *backing, DiskFormat backing_format,
                 char **ret_message);

/* Both, for `name` in folder descriptor dirfd (the one the path gate
 * verified: a folder swapped for a link since cannot redirect them);
 * `path` is for messages. */
int image_create_at(int dirfd, const char *name, const char *path, DiskFormat format, uint64_t size,
                    const char *backing, DiskFormat backing_format, char **ret_message);
/* A standalone image that QEMU fills and then closes, which flushes it
 * (a backup's target or scratch file): the same without the fdatasync()
 * of its header; until QEMU's flush it is no use anyway, and whoever
 * created it removes it when the host went down first. */
int image_create_target_at(int dirfd, const char *name, const char *path, DiskFormat format, uint64_t size,
                           char **ret_message);
/* backing_fd (or -EBADF): the backing file as the gate opened it, read
 * for its size instead of opening `backing` by name. */
int image_create_overlay_at(int dirfd, const char *name, const char *path, int backing_fd, const char *backing,
                            DiskFormat backing_format, char **ret_message);

/* The same from a descriptor (one the path gate opened): *ret_backing as
 * the header spells it (NULL: none), its format (the header extension,
 * else raw). -EMEDIUMTYPE when it is no qcow2 image. */
int image_read_backing_fd(int fd, char **ret_backing, DiskFormat *ret_format);
/* A backing name made absolute: a relative one is relative to the folder
 * of the image naming it. */
char *image_resolve_backing(const char *image, const char *name);

/* The backing file name as the qcow2 header spells it (relative or not);
 * *ret NULL when the image has none. */
int image_read_backing_name(const char *path, char **ret);

/* The file starts with the qcow2 magic (never through a symlink). */
bool image_is_qcow2(const char *path);
/* The same on a descriptor (one the path gate opened). */
bool image_is_qcow2_fd(int fd);

/* Whether the qcow2 image's snapshot table holds an internal snapshot of
 * that name (1) or not (0), read from the file (no qemu-img: CheckRevert
 * and Revert ask before authorization); -EMEDIUMTYPE for another format,
 * -EBADMSG for a table that cannot be right. The image on a descriptor
 * (one the path gate opened). */
int image_has_internal_snapshot_fd(int fd, const char *name);

/* The number of internal snapshots in the header of a qcow2 image on a
 * descriptor (one the path gate opened). */
int image_count_internal_snapshots_fd(int fd, uint32_t *ret);

/* The backing file named in a qcow2 header, made absolute (NULL: none).
 * -EMEDIUMTYPE when path is not a qcow2 image, -QSNAP_E_PATH_NOT_ALLOWED
 * for a json: or protocol name. */
int image_read_backing(const char *path, char **ret_backing);

/* The persistent dirty bitmaps stored in a qcow2 image, read with
 * `qemu-img info --output=json -U` (the header's bitmap directory). */
typedef struct ImageBitmap {
        char *name;
        bool enabled;   /* flag "auto" */
        bool in_use;    /* flag "in-use": a writer held it open; on a closed image: inconsistent */
        uint64_t granularity;
} ImageBitmap;

void image_bitmaps_free(ImageBitmap *b, size_t n);
/* -QSNAP_E_QEMU_FAILED with qemu-img's text in *ret_message when it fails. */
int image_read_bitmaps(const char *path, ImageBitmap **ret, size_t *ret_n, char **ret_message);
/* The same on a descriptor the caller opened (a domain's image: through
 * the path gate, gate_open_image(); qemu-img gets a duplicate); `path` is
 * for messages only. */
int image_read_bitmaps_fd(int fd, const char *path, ImageBitmap **ret, size_t *ret_n, char **ret_message);

/* The persistent dirty bitmap `name` of a qcow2 image, read from the
 * file itself (its bitmap directory, table and data clusters: `qemu-img
 * info` has no counts) on the descriptor the caller opened (a domain's
 * image: through the path gate, gate_open_image()): one bit per
 * granularity-sized chunk of the virtual size, LSB first. 1 with *ret_bits
 * (malloc'ed), 0 and *ret_bits NULL when the image holds no such bitmap;
 * -EBADMSG for tables that cannot be right, -EMEDIUMTYPE for another
 * format. */
int image_read_dirty_bitmap(int fd, const char *name, uint64_t *ret_granularity, uint64_t *ret_n_bits,
                            uint8_t **ret_bits);

/* `qemu-img bitmap --remove <path> <name>` on the file alone, opened here
 * without a link in any component: for the start-up recoveries, whose
 * file a journal names (a domain's image is edited through the path gate:
 * gate_img_bitmap()). -QSNAP_E_QEMU_FAILED with qemu-img's text in
 * *ret_message. */
int image_bitmap_remove(const char *path, const char *name, char **ret_message);
