/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reads qcow2 headers to learn backing chains, and wraps `qemu-img create`
 * for overlays. The qcow2 header layout is from QEMU's docs/interop/qcow2.txt:
 * big-endian magic "QFI\xfb", version, backing_file_offset (u64 at 8),
 * backing_file_size (u32 at 16), and for version 3 header extensions after
 * the header, one of which (0xe2792aca) names the backing format.
 */
#include <endian.h>
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>

#include <json-c/json.h>

#include "config.h"
#include "qemu/image.h"
#include "qemu/img.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/util.h"

#define QCOW2_MAGIC 0x514649fbU
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acaU
#define IMAGE_CHAIN_MAX 256

void image_chain_done(ImageChain *c) {
        for (size_t i = 0; i < c->n_layers; i++)
                free(c->layers[i].path);
        free(c->layers);
        *c = (ImageChain) {};
}

int image_open_regular(const char *path, int flags) {
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        int r;

        /* stat first: opening a device node can have effects of its own
         * (a watchdog arms, a tape rewinds), and a FIFO blocks open(). */
        if (stat(path, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return -QSNAP_E_PATH_NOT_ALLOWED;
        /* O_NONBLOCK: a FIFO swapped in meanwhile cannot block us either. */
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY | flags);
        if (fd < 0)
                return -errno;
        r = fs_fstat_regular(fd, NULL);
        if (r < 0)
                return r;
        return TAKE_FD(fd);
}

int image_open_nofollow(const char *path) {
        return fs_open_nofollow(path, O_RDONLY, 0);
}

int image_check_regular(const char *path, const char *what, char **ret_message) {
        struct stat st;

        if (stat(path, &st) < 0 || S_ISREG(st.st_mode))
                return 0; /* a missing file: the caller's own checks say so */
        *ret_message = strprintf("%s %s is not a regular file (%s); qsnapd opens only regular files.", what, path,
                                 S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISDIR(st.st_mode) ? "a folder" :
                                 S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "a socket or other special file");
        return *ret_message ? -QSNAP_E_PATH_NOT_ALLOWED : -ENOMEM;
}

static int pread_exact(int fd, void *buf, size_t n, off_t offset) {
        ssize_t k = pread(fd, buf, n, offset);
        if (k < 0)
                return -errno;
        return (size_t) k == n ? 0 : -EBADMSG;
}

/* The first `size` bytes of a qcow2 header; -EMEDIUMTYPE for another format. */
static int qcow2_read_header(int fd, uint8_t *h, size_t size) {
        int r = pread_exact(fd, h, size, 0);
        if (r < 0)
                return r;
        return be32toh(*(uint32_t *) h) == QCOW2_MAGIC ? 0 : -EMEDIUMTYPE;
}

/* Reads the backing file name and format of one qcow2 image. *ret_backing
 * is NULL for a base image. */
static int qcow2_read_backing(const char *path, char **ret_backing, DiskFormat *ret_format) {
        _cleanup_close_ int fd = image_open_regular(path, 0);

        if (fd < 0)
                return fd;
        return image_read_backing_fd(fd, ret_backing, ret_format);
}

int image_read_backing_fd(int fd, char **ret_backing, DiskFormat *ret_format) {
        _cleanup_free_ char *name = NULL;
        uint8_t h[112];
        uint64_t offset;
        uint32_t size, version, header_length = 72;
        DiskFormat format = DISK_FORMAT_RAW; /* QEMU probes; raw is what it finds for a non-qcow2 */
        int r;

        r = qcow2_read_header(fd, h, 72);
        if (r < 0)
                return r;
        version = be32toh(*(uint32_t *) (h + 4));
        offset = be64toh(*(uint64_t *) (h + 8));
        size = be32toh(*(uint32_t *) (h + 16));

        if (offset == 0 || size == 0) {
                *ret_backing = NULL;
                *ret_format = _DISK_FORMAT_INVALID;
                return 0;
        }
        if (size > 1023)
                return -EBADMSG;
        name = malloc(size + 1);
        if (!name)
                return -ENOMEM;
        r = pread_exact(fd, name, size, (off_t) offset);
        if (r < 0)
                return r;
        name[size] = 0;

        if (version >= 3) {
                r = pread_exact(fd, h + 72, 4, 100);
                if (r < 0)
                        return r;
                header_length = be32toh(*(uint32_t *) (h + 72));
        }
        /* Header extensions: (type u32, length u32, data padded to 8). */
        for (off_t at = header_length, n = 0; n < 64; n++) {
                uint8_t e[8];
                uint32_t type, len;

                if (pread_exact(fd, e, 8, at) < 0)
                        break;
                type = be32toh(*(uint32_t *) e);
                len = be32toh(*(uint32_t *) (e + 4));
                if (type == 0)
                        break;
                if (type == QCOW2_EXT_BACKING_FORMAT && len < 32) {
                        char f[32] = {};
                        if (pread_exact(fd, f, len, at + 8) == 0 && disk_format_from_string(f) >= 0)
                                format = disk_format_from_string(f);
                }
                at += 8 + ((len + 7) & ~7U);
        }

        *ret_backing = TAKE_PTR(name);
        *ret_format = format;
        return 0;
}

char *image_resolve_backing(const char *image, const char *name) {
        _cleanup_free_ char *copy = NULL;

        if (name[0] == '/')
                return strdup(name);
        copy = strdup(image);
        if (!copy)
                return NULL;
        return strjoin(dirname(copy), "/", name);
}

bool image_backing_name_is_plain(const char *name) {
        /* QEMU's path_has_protocol(): a ':' before any '/' makes a protocol
         * ("json:", "nbd:", "file:", …); an absolute name never has one. */
        return !isempty(name) && name[strcspn(name, ":/")] != ':';
}

int image_read_backing(const char *path, char **ret_backing) {
        _cleanup_free_ char *backing = NULL;
        DiskFormat format;
        int r;

        r = qcow2_read_backing(path, &backing, &format);
        if (r < 0)
                return r;
        if (!backing) {
                *ret_backing = NULL;
                return 0;
        }
        if (!image_backing_name_is_plain(backing))
                return -QSNAP_E_PATH_NOT_ALLOWED;
        *ret_backing = image_resolve_backing(path, backing);
        return *ret_backing ? 0 : -ENOMEM;
}

int image_count_internal_snapshots_fd(int fd, uint32_t *ret) {
        uint8_t h[72];
        int r;

        r = qcow2_read_header(fd, h, sizeof(h));
        if (r < 0)
                return r;
        *ret = be32toh(*(uint32_t *) (h + 60)); /* nb_snapshots */
        return 0;
}

#define QCOW2_MAX_SNAPSHOTS 65536U

int image_has_internal_snapshot_fd(int fd, const char *name) {
        size_t name_len = strlen(name);
        uint32_t n;
        uint64_t at;
        uint8_t h[72];
        int r;

        r = qcow2_read_header(fd, h, sizeof(h));
        if (r < 0)
                return r;
        n = be32toh(*(uint32_t *) (h + 60));
        at = be64toh(*(uint64_t *) (h + 64));
        if (n > QCOW2_MAX_SNAPSHOTS)
                return -EBADMSG;
        /* Table entries (docs/interop/qcow2.txt): 40 fixed bytes, extra
         * data, the id, the name, padding to 8. */
        for (uint32_t i = 0; i < n; i++) {
                uint8_t e[40];
                uint16_t id_len, len;
                uint32_t extra;

                r = pread_exact(fd, e, sizeof(e), (off_t) at);
                if (r < 0)
                        return r;
                id_len = be16toh(*(uint16_t *) (e + 12));
                len = be16toh(*(uint16_t *) (e + 14));
                extra = be32toh(*(uint32_t *) (e + 36));
                if (extra > 1024)
                        return -EBADMSG;
                if (len == name_len) {
                        _cleanup_free_ char *buf = malloc(len + 1);

                        if (!buf)
                                return -ENOMEM;
                        r = pread_exact(fd, buf, len, (off_t) (at + 40 + extra + id_len));
                        if (r < 0)
                                return r;
                        if (memcmp(buf, name, len) == 0)
                                return 1;
                }
                at += (40 + extra + id_len + len + 7) & ~7ULL;
        }
        return 0;
}

static int open_no_link(const char *path, const char *image, void *userdata, char **ret_message) {
        return image_open_nofollow(path);
}

int image_read_chain(const char *path, DiskFormat format, ImageChain *ret, char **ret_message) {
        _cleanup_free_ char *message = NULL;
        int r = image_read_chain_opened(path, format, open_no_link, NULL, ret, &message);

        if (ret_message)
                *ret_message = TAKE_PTR(message);
        return r;
}

int image_read_chain_opened(const char *path, DiskFormat format, ImageOpenFunc open_file, void *userdata,
                            ImageChain *ret, char **ret_message) {
        _cleanup_(image_chain_done) ImageChain c = {};
        _cleanup_free_ char *current = NULL;
        int r;

        current = strdup(path);
        if (!current)
                return -ENOMEM;

        for (;;) {
                _cleanup_free_ char *backing = NULL;
                _cleanup_close_ int fd = -EBADF;
                DiskFormat backing_format;
                const char *image = c.n_layers > 0 ? c.layers[c.n_layers - 1].path : NULL;
                ImageLayer *l;

                if (c.n_layers >= IMAGE_CHAIN_MAX)
                        return -ELOOP;
                for (size_t i = 0; i < c.n_layers; i++)
                        if (streq(c.layers[i].path, current))
                                return -ELOOP;
                /* Opened by the caller's function (the path gate), the
                 * header read from that descriptor, never by name. */
                fd = open_file(current, image, userdata, ret_message);
                if (fd < 0)
                        return fd;

                l = reallocarray(c.layers, c.n_layers + 1, sizeof(ImageLayer));
                if (!l)
                        return -ENOMEM;
                c.layers = l;
                c.layers[c.n_layers++] = (ImageLayer) { .path = TAKE_PTR(current), .format = format };
                if (format != DISK_FORMAT_QCOW2)
                        break;
                r = image_read_backing_fd(fd, &backing, &backing_format);
                if (r < 0)
                        return r;
                if (!backing)
                        break;
                if (!image_backing_name_is_plain(backing)) {
                        free(*ret_message);
                        *ret_message = strprintf("The backing file name '%s' in %s is a json: or protocol name; qsnapd "
                                                 "follows only plain file names.", backing, c.layers[c.n_layers - 1].path);
                        return -QSNAP_E_PATH_NOT_ALLOWED;
                }
                current = image_resolve_backing(c.layers[c.n_layers - 1].path, backing);
                if (!current)
                        return -ENOMEM;
                format = backing_format;
        }

        *ret = c;
        c = (ImageChain) {};
        return 0;
}

char *image_chain_to_string(const ImageChain *c) {
        _cleanup_strv_free_ char **l = NULL;

        for (size_t i = c->n_layers; i > 0; i--)
                if (strv_extend(&l, c->layers[i - 1].path) < 0)
                        return NULL;
        return strv_join(l, " <- ");
}

/* The virtual size of an image: the qcow2 header's size field, or the
 * length of a raw file. */
int image_virtual_size(const char *path, DiskFormat format, uint64_t *ret) {
        _cleanup_close_ int fd = -EBADF;

        fd = image_open_regular(path, 0);
        if (fd < 0)
                return fd;
        return image_virtual_size_fd(fd, format, ret);
}

int image_virtual_size_fd(int fd, DiskFormat format, uint64_t *ret) {
        struct stat st;
        uint8_t h[32];
        int r;

        if (format == DISK_FORMAT_RAW) {
                if (fstat(fd, &st) < 0)
                        return -errno;
                *ret = (uint64_t) st.st_size;
                return 0;
        }
        r = qcow2_read_header(fd, h, sizeof(h));
        if (r < 0)
                return r;
        *ret = be64toh(*(uint64_t *) (h + 24));
        return 0;
}

static void put_be32(uint8_t *p, uint32_t v) {
        v = htobe32(v);
        memcpy(p, &v, 4);
}

static void put_be64(uint8_t *p, uint64_t v) {
        v = htobe64(v);
        memcpy(p, &v, 8);
}

#define QCOW2_CLUSTER_BITS 16
#define QCOW2_CLUSTER_SIZE (1U << QCOW2_CLUSTER_BITS)
#define QCOW2_HEADER_LENGTH 112
/* QEMU opens no qcow2 whose L1 table exceeds 32 MiB (QCOW_MAX_L1_SIZE),
 * and qemu-img create refuses to make one: with our 64 KiB clusters that
 * is 2 PiB of virtual size. */
#define QCOW2_MAX_L1_ENTRIES (32U * 1024U * 1024U / 8U)
#define QCOW2_MAX_VIRTUAL_SIZE ((uint64_t) QCOW2_MAX_L1_ENTRIES << (2 * QCOW2_CLUSTER_BITS - 3))

/* Writes an empty qcow2 v3 overlay the way `qemu-img create -f qcow2 -b
 * backing -F fmt` lays it out: header, backing format extension and
 * backing file name in cluster 0, the refcount table in cluster 1, one
 * refcount block in cluster 2, the (all-zero) L1 table from cluster 3.
 * qemu-img would open the whole backing chain to learn the size, which
 * grows with the chain's depth; this reads only the backing file's header. */
static int write_qcow2_overlay(int fd, const char *backing, DiskFormat backing_format, uint64_t size, bool sync) {
        const char *fmt = backing ? disk_format_to_string(backing_format) : NULL;
        size_t name_len = backing ? strlen(backing) : 0, fmt_len = fmt ? strlen(fmt) : 0;
        size_t ext_len = fmt ? 8 + ((fmt_len + 7) & ~7U) : 0;
        uint64_t l1_entries = (size + (1ULL << (2 * QCOW2_CLUSTER_BITS - 3)) - 1) >> (2 * QCOW2_CLUSTER_BITS - 3);
        uint64_t l1_clusters = (l1_entries * 8 + QCOW2_CLUSTER_SIZE - 1) / QCOW2_CLUSTER_SIZE;
        uint64_t n_clusters = 3 + l1_clusters, backing_offset = QCOW2_HEADER_LENGTH + ext_len + 8;
        size_t header_len = backing_offset + name_len;
        _cleanup_free_ uint8_t *header = NULL, *refblock = NULL, *l1 = NULL;
        uint8_t reftable[8];

        if ((backing && (name_len == 0 || !fmt)) || backing_offset + name_len > QCOW2_CLUSTER_SIZE || l1_entries == 0 ||
            n_clusters > QCOW2_CLUSTER_SIZE / 2 || l1_entries > QCOW2_MAX_L1_ENTRIES)
                return -EINVAL;

        header = calloc(1, header_len);
        refblock = calloc(n_clusters, 2);
        l1 = calloc(l1_entries, 8);
        if (!header || !refblock || !l1)
                return -ENOMEM;

        put_be32(header + 0, QCOW2_MAGIC);
        put_be32(header + 4, 3);
        if (backing) {
                put_be64(header + 8, backing_offset);
                put_be32(header + 16, (uint32_t) name_len);
        }
        put_be32(header + 20, QCOW2_CLUSTER_BITS);
        put_be64(header + 24, size);
        put_be32(header + 36, (uint32_t) l1_entries);
        put_be64(header + 40, 3ULL * QCOW2_CLUSTER_SIZE);
        put_be64(header + 48, 1ULL * QCOW2_CLUSTER_SIZE);
        put_be32(header + 56, 1);
        put_be32(header + 96, 4); /* refcount_order: 16-bit refcounts */
        put_be32(header + 100, QCOW2_HEADER_LENGTH);
        /* byte 104, compression type: 0 = zlib */
        if (backing) {
                put_be32(header + QCOW2_HEADER_LENGTH, QCOW2_EXT_BACKING_FORMAT);
                put_be32(header + QCOW2_HEADER_LENGTH + 4, (uint32_t) fmt_len);
                memcpy(header + QCOW2_HEADER_LENGTH + 8, fmt, fmt_len);
                /* then the end-of-extensions marker: 8 zero bytes */
                memcpy(header + backing_offset, backing, name_len);
        }

        put_be64(reftable, 2ULL * QCOW2_CLUSTER_SIZE);
        for (uint64_t i = 0; i < n_clusters; i++)
                refblock[2 * i + 1] = 1;

        if (pwrite(fd, header, header_len, 0) != (ssize_t) header_len ||
            pwrite(fd, reftable, sizeof(reftable), QCOW2_CLUSTER_SIZE) != (ssize_t) sizeof(reftable) ||
            pwrite(fd, refblock, n_clusters * 2, 2 * QCOW2_CLUSTER_SIZE) != (ssize_t) (n_clusters * 2) ||
            pwrite(fd, l1, l1_entries * 8, 3 * QCOW2_CLUSTER_SIZE) != (ssize_t) (l1_entries * 8))
                return errno > 0 ? -errno : -EIO;
        if (sync && fdatasync(fd) < 0)
                return -errno;
        return 0;
}

int image_create_overlay_at(int dirfd, const char *name, const char *path, int backing_fd, const char *backing,
                            DiskFormat backing_format, char **ret_message) {
        uint64_t size = 0;
        int r;

        r = backing_fd >= 0 ? image_virtual_size_fd(backing_fd, backing_format, &size)
                            : image_virtual_size(backing, backing_format, &size);
        if (r < 0) {
                if (ret_message)
                        *ret_message = strprintf("Cannot read the size of %s: %s", backing,
                                                 r == -QSNAP_E_PATH_NOT_ALLOWED ? "not a regular file" : strerror(-r));
                return r;
        }
        return image_create_at(dirfd, name, path, DISK_FORMAT_QCOW2, size, backing, backing_format, ret_message);
}

int image_create_overlay(const char *path, const char *backing, DiskFormat backing_format, char **ret_message) {
        return image_create_overlay_at(AT_FDCWD, path, path, -EBADF, backing, backing_format, ret_message);
}

int image_create(const char *path, DiskFormat format, uint64_t size, const char *backing, DiskFormat backing_format,
                 char **ret_message) {
        return image_create_at(AT_FDCWD, path, path, format, size, backing, backing_format, ret_message);
}

static int create_at(int dirfd, const char *name, const char *path, DiskFormat format, uint64_t size,
                     const char *backing, DiskFormat backing_format, bool sync, char **ret_message) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        if (format == DISK_FORMAT_RAW && backing)
                return -EINVAL;
        /* A backing file's header may claim any size; its L1 table would be
         * allocated and written here, up to gigabytes, for an image QEMU
         * refuses to open. */
        if (format == DISK_FORMAT_QCOW2 && size > QCOW2_MAX_VIRTUAL_SIZE) {
                if (ret_message)
                        *ret_message = strprintf("Cannot create %s: a virtual size of %" PRIu64 " bytes is more than a "
                                                 "qcow2 image with 64 KiB clusters holds (2 PiB)", path, size);
                return -QSNAP_E_UNSUPPORTED;
        }
        /* O_EXCL refuses an existing file and O_NOFOLLOW a symlink; dirfd is
         * the folder the path gate verified. */
        fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0) {
                r = -errno;
                if (ret_message)
                        *ret_message = strprintf("Cannot create %s: %s", path, strerror(-r));
                return r;
        }
        if (format == DISK_FORMAT_RAW)
                r = ftruncate(fd, (off_t) size) < 0 ? -errno : 0; /* sparse: the copy writes what it needs */
        else
                r = write_qcow2_overlay(fd, backing, backing_format, size, sync);
        if (r < 0) {
                (void) unlinkat(dirfd, name, 0);
                if (ret_message)
                        *ret_message = strprintf("Cannot write %s: %s", path, strerror(-r));
                return r;
        }
        return 0;
}

int image_create_at(int dirfd, const char *name, const char *path, DiskFormat format, uint64_t size,
                    const char *backing, DiskFormat backing_format, char **ret_message) {
        return create_at(dirfd, name, path, format, size, backing, backing_format, true, ret_message);
}

int image_create_target_at(int dirfd, const char *name, const char *path, DiskFormat format, uint64_t size,
                           char **ret_message) {
        return create_at(dirfd, name, path, format, size, NULL, DISK_FORMAT_QCOW2, false, ret_message);
}

int image_read_backing_name(const char *path, char **ret) {
        DiskFormat format;

        return qcow2_read_backing(path, ret, &format);
}

bool image_is_qcow2(const char *path) {
        _cleanup_close_ int fd = image_open_regular(path, O_NOFOLLOW);

        return fd >= 0 && image_is_qcow2_fd(fd);
}

bool image_is_qcow2_fd(int fd) {
        uint8_t h[4];

        return pread_exact(fd, h, sizeof(h), 0) == 0 && be32toh(*(uint32_t *) h) == QCOW2_MAGIC;
}

/* ---- persistent dirty bitmaps, through qemu-img ---- */

void image_bitmaps_free(ImageBitmap *b, size_t n) {
        for (size_t i = 0; b && i < n; i++)
                free(b[i].name);
        free(b);
}

/* qemu-img on descriptors (qemu/img.h): the image alone, opened here
 * (image_open_nofollow()), "backing": null, so that no header names
 * another file for it; callers pass paths the path gate passed. */
static int img_add_file(ImgCmd *c, const char *path, char **ret_message) {
        ImgLayer layer = { .fd = image_open_nofollow(path), .format = DISK_FORMAT_QCOW2 };

        if (layer.fd < 0) {
                /* A link found where the gate passed a file (swapped in
                 * since): the gate's refusal, not a bare errno. */
                bool refused = IN_SET(layer.fd, -QSNAP_E_PATH_NOT_ALLOWED, -ELOOP);

                if (ret_message)
                        *ret_message = strprintf("Cannot open %s: %s", path,
                                                 refused ? "not a regular file" : strerror(-layer.fd));
                return refused ? -QSNAP_E_PATH_NOT_ALLOWED : layer.fd;
        }
        return img_cmd_add_chain(c, &layer, 1);
}

static int qemu_img_run(ImgCmd *c, char **ret_output, char **ret_message) {
        _cleanup_free_ char *output = NULL;
        size_t l;
        int r;

        r = img_cmd_run(c, &output);
        for (l = output ? strlen(output) : 0; l > 0 && strchr(" \t\n", output[l - 1]); l--)
                output[l - 1] = 0;
        if (r != 0) {
                if (ret_message)
                        *ret_message = strprintf("qemu-img %s failed: %s", c->argv[1],
                                                 r < 0 ? strerror(-r) : strempty(output));
                return r < 0 ? r : -QSNAP_E_QEMU_FAILED;
        }
        if (ret_output)
                *ret_output = TAKE_PTR(output);
        return 0;
}

static int parse_bitmap_flags(json_object *flags, ImageBitmap *b) {
        if (!json_object_is_type(flags, json_type_array))
                return 0;
        for (size_t k = 0; k < json_object_array_length(flags); k++) {
                const char *f = json_object_get_string(json_object_array_get_idx(flags, k));
                if (streq(strempty(f), "auto"))
                        b->enabled = true;
                else if (streq(strempty(f), "in-use"))
                        b->in_use = true;
        }
        return 0;
}

int image_read_bitmaps(const char *path, ImageBitmap **ret, size_t *ret_n, char **ret_message) {
        return image_read_bitmaps_fd(-EBADF, path, ret, ret_n, ret_message);
}

int image_read_bitmaps_fd(int fd, const char *path, ImageBitmap **ret, size_t *ret_n, char **ret_message) {
        _cleanup_(img_cmd_done) ImgCmd c = {};
        _cleanup_free_ char *output = NULL;
        json_object *info, *fs = NULL, *data = NULL, *bitmaps = NULL;
        ImageBitmap *list = NULL;
        size_t n = 0;
        int r;

        r = img_cmd_init(&c, "info");
        if (r >= 0)
                r = img_cmd_add(&c, "-U", "--output=json", NULL);
        if (r >= 0 && fd >= 0) {
                /* The caller's descriptor (the gate opened it): qemu-img
                 * gets a duplicate, the image alone. */
                ImgLayer layer = { .fd = fcntl(fd, F_DUPFD_CLOEXEC, 3), .format = DISK_FORMAT_QCOW2 };

                r = layer.fd < 0 ? -errno : img_cmd_add_chain(&c, &layer, 1);
        } else if (r >= 0)
                r = img_add_file(&c, path, ret_message);
        if (r >= 0)
                r = qemu_img_run(&c, &output, ret_message);
        if (r < 0)
                return r;
        info = json_tokener_parse(output);
        if (!info) {
                if (ret_message)
                        *ret_message = strprintf("qemu-img info printed no JSON for %s.", path);
                return -QSNAP_E_QEMU_FAILED;
        }
        if (json_object_object_get_ex(info, "format-specific", &fs) && json_object_object_get_ex(fs, "data", &data) &&
            json_object_object_get_ex(data, "bitmaps", &bitmaps) && json_object_is_type(bitmaps, json_type_array)) {
                list = new0(ImageBitmap, json_object_array_length(bitmaps) + 1);
                for (size_t i = 0; list && i < json_object_array_length(bitmaps); i++) {
                        json_object *b = json_object_array_get_idx(bitmaps, i), *v = NULL;

                        if (!json_object_object_get_ex(b, "name", &v) || !json_object_is_type(v, json_type_string))
                                continue;
                        list[n].name = strdup(json_object_get_string(v));
                        if (!list[n].name)
                                break;
                        if (json_object_object_get_ex(b, "granularity", &v))
                                list[n].granularity = (uint64_t) json_object_get_int64(v);
                        if (json_object_object_get_ex(b, "flags", &v))
                                (void) parse_bitmap_flags(v, list + n);
                        n++;
                }
        }
        json_object_put(info);
        if (bitmaps && json_object_is_type(bitmaps, json_type_array) && (!list || n < json_object_array_length(bitmaps))) {
                /* Only a failed allocation skips one (a nameless entry is QEMU's bug). */
                if (!list)
                        return -ENOMEM;
        }
        *ret = list;
        *ret_n = n;
        return 0;
}

/* `qemu-img bitmap <op> [<source> [-b <source_file> -F qcow2]] <path> <name>` */
static int bitmap_run(const char *op, const char *source, const char *source_file, const char *path, const char *name,
                      char **ret_message) {
        _cleanup_(img_cmd_done) ImgCmd c = {};
        int r;

        r = img_cmd_init(&c, "bitmap");
        if (r >= 0)
                r = img_cmd_add(&c, op, NULL);
        if (r >= 0 && source)
                r = img_cmd_add(&c, source, NULL);
        if (r >= 0 && source_file) {
                r = img_cmd_add(&c, "-b", NULL);
                if (r >= 0)
                        r = img_add_file(&c, source_file, ret_message);
                if (r >= 0)
                        r = img_cmd_add(&c, "-F", "qcow2", NULL);
        }
        if (r >= 0)
                r = img_add_file(&c, path, ret_message);
        if (r >= 0)
                r = img_cmd_add(&c, name, NULL);
        return r < 0 ? r : qemu_img_run(&c, NULL, ret_message);
}

int image_bitmap_remove(const char *path, const char *name, char **ret_message) {
        return bitmap_run("--remove", NULL, NULL, path, name, ret_message);
}

/* ---- the dirty bitmaps themselves, read from the file ---- */

#define QCOW2_EXT_BITMAPS 0x23852875U
#define QCOW2_BITMAP_MAX_BITS (1ULL << 34) /* 1 PiB at 64 KiB: 2 GiB of bits, more than any disk of ours */

/* The bitmap directory of a qcow2 image: where it is and how big. 0 and
 * *ret_size 0 when there is none. */
static int qcow2_bitmap_directory(int fd, uint32_t *ret_cluster_bits, uint64_t *ret_virtual, uint64_t *ret_offset,
                                  uint64_t *ret_size) {
        uint8_t h[104];
        uint32_t header_length = 72;
        int r;

        r = qcow2_read_header(fd, h, sizeof(h));
        if (r < 0)
                return r;
        *ret_cluster_bits = be32toh(*(uint32_t *) (h + 20));
        *ret_virtual = be64toh(*(uint64_t *) (h + 24));
        *ret_size = 0;
        if (*ret_cluster_bits < 9 || *ret_cluster_bits > 21)
                return -EBADMSG;
        if (be32toh(*(uint32_t *) (h + 4)) < 3)
                return 0; /* bitmaps need version 3 */
        header_length = be32toh(*(uint32_t *) (h + 100));
        for (off_t at = header_length, n = 0; n < 64; n++) {
                uint8_t e[32];
                uint32_t type, len;

                if (pread_exact(fd, e, 8, at) < 0)
                        return 0;
                type = be32toh(*(uint32_t *) e);
                len = be32toh(*(uint32_t *) (e + 4));
                if (type == 0)
                        return 0;
                if (type == QCOW2_EXT_BITMAPS) {
                        if (len < 24 || pread_exact(fd, e, 24, at + 8) < 0)
                                return -EBADMSG;
                        *ret_size = be64toh(*(uint64_t *) (e + 8));
                        *ret_offset = be64toh(*(uint64_t *) (e + 16));
                        return *ret_size > (1U << 26) ? -EBADMSG : 0;
                }
                at += 8 + ((len + 7) & ~7U);
        }
        return 0;
}

int image_read_dirty_bitmap(int fd, const char *name, uint64_t *ret_granularity, uint64_t *ret_n_bits,
                            uint8_t **ret_bits) {
        _cleanup_free_ uint8_t *dir = NULL, *bits = NULL;
        uint64_t virtual_size, dir_offset = 0, dir_size = 0, n_bits, cluster;
        uint32_t cluster_bits;
        size_t name_len = strlen(name);
        int r;

        r = qcow2_bitmap_directory(fd, &cluster_bits, &virtual_size, &dir_offset, &dir_size);
        if (r < 0 || dir_size == 0) {
                *ret_bits = NULL;
                return r < 0 ? r : 0;
        }
        cluster = 1ULL << cluster_bits;
        dir = malloc(dir_size);
        if (!dir)
                return -ENOMEM;
        r = pread_exact(fd, dir, dir_size, (off_t) dir_offset);
        if (r < 0)
                return r;
        /* Entries (docs/interop/qcow2.txt): 24 fixed bytes, extra data, the
         * name, padding to 8. */
        for (uint64_t at = 0; at + 24 <= dir_size;) {
                const uint8_t *e = dir + at;
                uint64_t table_offset = be64toh(*(uint64_t *) e);
                uint32_t table_size = be32toh(*(uint32_t *) (e + 8));
                uint8_t gran_bits = e[17];
                uint16_t len = be16toh(*(uint16_t *) (e + 18));
                uint32_t extra = be32toh(*(uint32_t *) (e + 20));
                _cleanup_free_ uint64_t *table = NULL;
                uint64_t bits_per_cluster = cluster * 8;

                if (extra > 1024 || at + 24 + extra + len > dir_size)
                        return -EBADMSG;
                if (len != name_len || memcmp(e + 24 + extra, name, len) != 0) {
                        at += (24 + extra + len + 7) & ~7ULL;
                        continue;
                }
                if (gran_bits < 9 || gran_bits > 31)
                        return -EBADMSG;
                n_bits = (virtual_size + (1ULL << gran_bits) - 1) >> gran_bits;
                if (n_bits > QCOW2_BITMAP_MAX_BITS || (uint64_t) table_size * bits_per_cluster < n_bits ||
                    table_size > (1U << 24))
                        return -EBADMSG;
                bits = calloc(1, (n_bits + 7) / 8);
                table = new0(uint64_t, table_size + 1);
                if (!bits || !table)
                        return -ENOMEM;
                r = pread_exact(fd, table, (size_t) table_size * 8, (off_t) table_offset);
                if (r < 0)
                        return r;
                /* One data cluster per entry, its bits LSB first; offset 0:
                 * all zeros, or all ones with bit 0 set. */
                for (uint32_t k = 0; k < table_size; k++) {
                        uint64_t v = be64toh(table[k]), off = v & 0x00fffffffffffe00ULL;
                        uint64_t first = k * bits_per_cluster / 8, bytes = (n_bits + 7) / 8;
                        size_t n;

                        if (first >= bytes)
                                break;
                        n = (size_t) (cluster < bytes - first ? cluster : bytes - first);
                        if (off == 0) {
                                if (v & 1)
                                        memset(bits + first, 0xff, n);
                                continue;
                        }
                        r = pread_exact(fd, bits + first, n, (off_t) off);
                        if (r < 0)
                                return r;
                }
                /* Bits past the end are no chunk of the disk. */
                if (n_bits % 8)
                        bits[n_bits / 8] &= (uint8_t) ((1U << (n_bits % 8)) - 1);
                *ret_granularity = 1ULL << gran_bits;
                *ret_n_bits = n_bits;
                *ret_bits = TAKE_PTR(bits);
                return 1;
        }
        *ret_bits = NULL;
        return 0;
}
