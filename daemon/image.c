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

#include "config.h"
#include "image.h"
#include "util.h"

#define QCOW2_MAGIC 0x514649fbU
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acaU
#define IMAGE_CHAIN_MAX 256

void image_chain_done(ImageChain *c) {
        for (size_t i = 0; i < c->n_layers; i++)
                free(c->layers[i].path);
        free(c->layers);
        *c = (ImageChain) {};
}

static int pread_exact(int fd, void *buf, size_t n, off_t offset) {
        ssize_t k = pread(fd, buf, n, offset);
        if (k < 0)
                return -errno;
        return (size_t) k == n ? 0 : -EBADMSG;
}

/* Reads the backing file name and format of one qcow2 image. *ret_backing
 * is NULL for a base image. */
static int qcow2_read_backing(const char *path, char **ret_backing, DiskFormat *ret_format) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *name = NULL;
        uint8_t h[112];
        uint64_t offset;
        uint32_t size, version, header_length = 72;
        DiskFormat format = DISK_FORMAT_RAW; /* QEMU probes; raw is what it finds for a non-qcow2 */
        int r;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        r = pread_exact(fd, h, 72, 0);
        if (r < 0)
                return r;
        if (be32toh(*(uint32_t *) h) != QCOW2_MAGIC)
                return -EMEDIUMTYPE;
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

static char *resolve_relative(const char *image, const char *name) {
        _cleanup_free_ char *copy = NULL;

        if (name[0] == '/')
                return strdup(name);
        copy = strdup(image);
        if (!copy)
                return NULL;
        return strjoin(dirname(copy), "/", name);
}

int image_read_chain(const char *path, DiskFormat format, ImageChain *ret) {
        _cleanup_(image_chain_done) ImageChain c = {};
        _cleanup_free_ char *current = NULL;
        int r;

        current = strdup(path);
        if (!current)
                return -ENOMEM;

        for (;;) {
                _cleanup_free_ char *backing = NULL;
                DiskFormat backing_format;
                ImageLayer *l;

                if (c.n_layers >= IMAGE_CHAIN_MAX)
                        return -ELOOP;
                for (size_t i = 0; i < c.n_layers; i++)
                        if (streq(c.layers[i].path, current))
                                return -ELOOP;

                l = reallocarray(c.layers, c.n_layers + 1, sizeof(ImageLayer));
                if (!l)
                        return -ENOMEM;
                c.layers = l;
                c.layers[c.n_layers++] = (ImageLayer) { .path = TAKE_PTR(current), .format = format };

                if (format != DISK_FORMAT_QCOW2)
                        break;
                r = qcow2_read_backing(c.layers[c.n_layers - 1].path, &backing, &backing_format);
                if (r < 0)
                        return r;
                if (!backing)
                        break;
                current = resolve_relative(c.layers[c.n_layers - 1].path, backing);
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

int image_create_overlay(const char *path, const char *backing, DiskFormat backing_format, char **ret_message) {
        _cleanup_free_ char *output = NULL;
        char *argv[] = {
                (char *) QEMU_IMG_BINARY, (char *) "create", (char *) "-q", (char *) "-f", (char *) "qcow2",
                (char *) "-b", (char *) backing, (char *) "-F", (char *) disk_format_to_string(backing_format),
                (char *) path, NULL,
        };
        _cleanup_close_ int fd = -EBADF;
        int r;

        /* Claim the name first: O_EXCL refuses an existing file and O_NOFOLLOW
         * a symlink; qemu-img then writes into the file we own. */
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return -errno;

        r = run_command(argv, &output);
        if (r != 0) {
                (void) unlink(path);
                if (ret_message && output) {
                        /* qemu-img ends its message with a newline */
                        size_t n = strlen(output);
                        while (n > 0 && output[n - 1] == '\n')
                                output[--n] = 0;
                        *ret_message = TAKE_PTR(output);
                }
                return r < 0 ? r : -EIO;
        }
        return 0;
}
