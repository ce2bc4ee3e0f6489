/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The UEFI variable store of a domain (core/nvram.h). The stores are small
 * (540 KiB for OVMF_VARS_4M.fd), so copies are whole reads and writes.
 * A copy is a byte copy also for a qcow2 store: one made from a template
 * by qemu-img convert has every cluster allocated, so QEMU only ever
 * rewrites data clusters in place and the metadata does not move.
 */
#include <fcntl.h>
#include <libgen.h>
#include <sys/stat.h>

#include "config.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "qemu/image.h"
#include "qemu/img.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/util.h"

#define NVRAM_MAX_SIZE (64U * 1024U * 1024U)

int nvram_def_fill(Manager *m, DomainDef *def) {
        DomainFirmware *f = &def->firmware;

        if (!f->loader || f->nvram)
                return 0;
        f->nvram = strprintf("%s/nvram/%s_VARS.%s", m->config.state_dir, def->uuid,
                             f->nvram_format == DISK_FORMAT_QCOW2 ? "qcow2" : "fd");
        return f->nvram ? 0 : -ENOMEM;
}

bool nvram_firmware_path_is_system(const char *path) {
        static const char *const folders[] = { "/usr/share/OVMF/", "/usr/share/qemu/", "/usr/share/edk2/",
                                               "/usr/share/edk2-ovmf/", "/usr/share/ovmf/" };

        if (!path || strstr(path, "/../") || strstr(path, "/./"))
                return false;
        for (size_t i = 0; i < ELEMENTSOF(folders); i++)
                if (strncmp(path, folders[i], strlen(folders[i])) == 0)
                        return true;
        return false;
}

/* Reads a regular file whole, never through a symlink in any component. */
static int read_store(const char *path, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        size_t n = 0;
        int r;

        fd = fs_open_nofollow(path, O_RDONLY, 0);
        if (fd < 0)
                return fd;
        r = fs_fstat_regular(fd, &st);
        if (r < 0)
                return r;
        if ((uint64_t) st.st_size > NVRAM_MAX_SIZE)
                return -EFBIG;
        buf = malloc(st.st_size ?: 1);
        if (!buf)
                return -ENOMEM;
        while (n < (size_t) st.st_size) {
                ssize_t k = read(fd, buf + n, st.st_size - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                if (k == 0)
                        break;
                n += k;
        }
        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

static int write_new(const char *path, const char *data, size_t size) {
        _cleanup_close_ int fd = -EBADF;
        size_t n = 0;

        /* No link in any component: the store's folder may be a caller's. */
        fd = fs_open_nofollow(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0)
                return fd;
        while (n < size) {
                ssize_t k = write(fd, data + n, size - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        int r = -errno;
                        (void) fs_unlink_nofollow(path, S_IFREG);
                        return r;
                }
                n += k;
        }
        if (fsync(fd) < 0) {
                int r = -errno;
                (void) fs_unlink_nofollow(path, S_IFREG);
                return r;
        }
        return 0;
}

/* `qemu-img convert` of the raw template into a new qcow2 store, on
 * descriptors (qemu/img.h): the store made here first (O_EXCL, no link
 * followed), then filled with `-n`; qemu-img opens no name itself. */
static int convert_template(const char *template, const char *store, char **ret_output) {
        _cleanup_(img_cmd_done) ImgCmd c = {};
        ImgLayer src = { .fd = image_open_regular(template, O_NOFOLLOW), .format = DISK_FORMAT_RAW };
        ImgLayer dst = { .fd = -EBADF, .format = DISK_FORMAT_QCOW2 };
        _cleanup_free_ char *folder = NULL;
        _cleanup_close_ int dirfd = -EBADF;
        struct stat st;
        int r;

        if (src.fd < 0 || fstat(src.fd, &st) < 0) {
                r = src.fd < 0 ? src.fd : -errno;
                safe_close(src.fd);
                *ret_output = strprintf("cannot open the template: %s", r == -QSNAP_E_PATH_NOT_ALLOWED ? "not a regular file" : strerror(-r));
                return r;
        }
        /* Made (0600) and opened in the store's folder reached without a
         * link: the folder may be a caller's, swapped for a link meanwhile. */
        folder = fs_dirname(store);
        dirfd = folder ? fs_open_dir_nofollow(folder) : -ENOMEM;
        r = dirfd < 0 ? dirfd : 0;
        if (r >= 0)
                r = image_create_at(dirfd, fs_basename(store), store, DISK_FORMAT_QCOW2, (uint64_t) st.st_size, NULL,
                                    DISK_FORMAT_RAW, ret_output);
        if (r >= 0)
                dst.fd = fs_open_nofollow(store, O_RDONLY, 0);
        if (r >= 0 && dst.fd < 0)
                r = dst.fd;
        if (r >= 0)
                r = img_cmd_init(&c, "convert");
        if (r >= 0)
                r = img_cmd_add(&c, "-n", "-O", "qcow2", NULL);
        if (r < 0) {
                safe_close(src.fd);
                safe_close(dst.fd);
                return r;
        }
        r = img_cmd_add_chain(&c, &src, 1);
        if (r >= 0)
                r = img_cmd_add_chain(&c, &dst, 1);
        else
                safe_close(dst.fd);
        return r < 0 ? r : img_cmd_run(&c, ret_output);
}

int nvram_prepare(const DomainDef *def, char **ret_message) {
        const DomainFirmware *f = def_firmware(def);
        _cleanup_free_ char *folder = NULL, *output = NULL, *data = NULL;
        size_t size;
        int r;

        if (!f || !f->nvram || access(f->nvram, F_OK) >= 0)
                return 0;
        if (!f->nvram_template)
                return error_message(ret_message, -QSNAP_E_QEMU_FAILED,
                                     "The UEFI variable store %s does not exist and <nvram> names no template= to "
                                     "create it from.", f->nvram);
        folder = strdup(f->nvram);
        if (!folder)
                return -ENOMEM;
        r = fs_mkdir_p_nofollow(dirname(folder), 0700);
        if (r < 0)
                return error_message(ret_message, r, "Cannot create the folder of %s: %s", f->nvram, strerror(-r));
        if (f->nvram_format == DISK_FORMAT_QCOW2) {
                r = convert_template(f->nvram_template, f->nvram, &output);
                if (r != 0) {
                        (void) fs_unlink_nofollow(f->nvram, S_IFREG);
                        return error_message(ret_message, r < 0 ? r : -QSNAP_E_QEMU_FAILED,
                                             "Cannot create the UEFI variable store %s from %s: %s", f->nvram,
                                             f->nvram_template, r < 0 ? strerror(-r) : strna(output));
                }
        } else {
                r = read_store(f->nvram_template, &data, &size);
                if (r >= 0)
                        r = write_new(f->nvram, data, size);
                if (r < 0)
                        return error_message(ret_message, r == -ENOMEM ? r : -QSNAP_E_QEMU_FAILED,
                                             "Cannot create the UEFI variable store %s from %s: %s", f->nvram,
                                             f->nvram_template, qsnap_strerror(r));
        }
        log_info("Created the UEFI variable store %s from %s.", f->nvram, f->nvram_template);
        return 0;
}

int nvram_check_internal(const DomainDef *def, char **ret_message) {
        const DomainFirmware *f = def_firmware(def);

        if (!f)
                return 0;
        if (f->nvram_format != DISK_FORMAT_QCOW2)
                return error_message(ret_message, -QSNAP_E_UNSUPPORTED,
                                     "Domain '%s' boots UEFI with a raw variable store (%s): QEMU can take an internal "
                                     "snapshot of it only in qcow2 (<nvram format='qcow2'>), and a snapshot without it "
                                     "would not match its disks. Use an external snapshot (DISK_ONLY), or convert the "
                                     "store to qcow2.", def->name, strna(f->nvram));
        return 1;
}

char *nvram_snapshot_path(const DomainDef *def, const char *name) {
        const DomainFirmware *f = def_firmware(def);
        char *p;

        if (!f || !f->nvram)
                return NULL;
        p = strprintf("%s.%s", f->nvram, name);
        for (char *c = p ? p + strlen(f->nvram) + 1 : NULL; c && *c; c++)
                if (*c == '/')
                        *c = '_';
        return p;
}

bool nvram_snapshot_path_ok(const DomainDef *def, const char *path) {
        const DomainFirmware *f = def_firmware(def);
        _cleanup_free_ char *a = NULL, *b = NULL;

        if (!f || !f->nvram || !path || path[0] != '/' || strstr(path, "/../"))
                return false;
        a = strdup(f->nvram);
        b = strdup(path);
        return a && b && streq(dirname(a), dirname(b));
}

int nvram_snapshot_save(const DomainDef *def, const char *path, char **ret_message) {
        const DomainFirmware *f = def_firmware(def);
        _cleanup_free_ char *data = NULL;
        size_t size;
        int r;

        if (!f || !f->nvram)
                return 0;
        r = read_store(f->nvram, &data, &size);
        if (r >= 0)
                r = write_new(path, data, size);
        if (r < 0)
                return error_message(ret_message, r == -EEXIST || r == -ELOOP ? -QSNAP_E_PATH_NOT_ALLOWED : r,
                                     "Cannot keep a copy of the UEFI variable store %s as %s: %s", f->nvram, path,
                                     qsnap_strerror(r));
        return 0;
}

int nvram_restore_bytes(const DomainDef *def, const char *data, size_t size) {
        const DomainFirmware *f = def_firmware(def);

        if (!f || !f->nvram)
                return 0;
        return fs_write_file_atomic_nofollow(f->nvram, data, size, 0600);
}

int nvram_snapshot_restore(const DomainDef *def, const char *path, char **ret_old, size_t *ret_old_size,
                           char **ret_message) {
        const DomainFirmware *f = def_firmware(def);
        _cleanup_free_ char *data = NULL, *old = NULL;
        size_t size, old_size = 0;
        int r;

        if (!f || !f->nvram)
                return 0;
        if (!nvram_snapshot_path_ok(def, path))
                return error_message(ret_message, -QSNAP_E_PATH_NOT_ALLOWED,
                                     "The snapshot's copy of the UEFI variable store, %s, is not beside the store %s.",
                                     path, f->nvram);
        r = read_store(path, &data, &size);
        if (r < 0) /* a link on the way: named (the folder was swapped for one since the snapshot) */
                return error_message(ret_message, r == -ELOOP ? -QSNAP_E_PATH_NOT_ALLOWED : r,
                                     "Cannot read the snapshot's UEFI variable store %s: %s", path,
                                     r == -ELOOP ? "a symbolic link on the way" : qsnap_strerror(r));
        if (ret_old && read_store(f->nvram, &old, &old_size) < 0)
                old = NULL;
        r = nvram_restore_bytes(def, data, size);
        if (r < 0)
                return error_message(ret_message, r == -ELOOP ? -QSNAP_E_PATH_NOT_ALLOWED : r,
                                     "Cannot write the UEFI variable store %s: %s", f->nvram,
                                     r == -ELOOP ? "a symbolic link on the way" : strerror(-r));
        if (ret_old) {
                *ret_old = TAKE_PTR(old);
                *ret_old_size = old_size;
        }
        return 0;
}
