/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The path gate (core/gate.h): a domain's allowed folders and the one
 * check every path goes through. Folders are compared by inode, reached
 * without following links, so neither a link nor a ".." nor another
 * spelling of a path leads out, and callers create files relative to the
 * folder descriptor that was checked.
 */
#include <fcntl.h>
#include <sys/stat.h>

#include "config.h"

#include "core/gate.h"
#include "core/manager.h"
#include "util/fs.h"
#include "util/util.h"

/* Deep enough for any real tree; a deeper one is simply not below a root. */
#define GATE_MAX_DEPTH 256

static bool fd_is_below(int fd, int rootfd, int topfd) {
        _cleanup_close_ int cur = -EBADF;

        cur = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (cur < 0)
                return false;
        for (int depth = 0; depth < GATE_MAX_DEPTH; depth++) {
                int up;

                if (fs_same_inode(cur, rootfd))
                        return true;
                if (fs_same_inode(cur, topfd))
                        return false;
                up = openat(cur, "..", O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (up < 0)
                        return false;
                safe_close(cur);
                cur = up;
        }
        return false;
}

static bool folder_in_roots(Domain *d, int dirfd) {
        _cleanup_close_ int top = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);

        if (top < 0)
                return false;
        for (char **root = d->manager->config.image_roots; root && *root; root++) {
                /* Roots are the administrator's (made real at start-up). */
                _cleanup_close_ int rootfd = open(*root, O_PATH | O_DIRECTORY | O_CLOEXEC);

                if (rootfd >= 0 && fd_is_below(dirfd, rootfd, top))
                        return true;
        }
        return false;
}

static bool folder_of_disks(const DomainDef *def, int dirfd) {
        for (size_t i = 0; def && i < def->n_disks; i++) {
                _cleanup_free_ char *folder = def->disks[i].source ? fs_dirname(def->disks[i].source) : NULL;
                _cleanup_close_ int fd = -EBADF;

                if (!folder || folder[0] != '/')
                        continue;
                /* The folder as the definition spells it, reached without
                 * links: swapping one of its parents for a link moves nothing. */
                fd = fs_open_dir_nofollow(folder);
                if (fd >= 0 && fs_same_inode(fd, dirfd))
                        return true;
        }
        return false;
}

static bool has_dotdot(const char *path) {
        for (const char *p = path; (p = strstr(p, "..")); p += 2)
                if ((p == path || p[-1] == '/') && (p[2] == '/' || p[2] == 0))
                        return true;
        return false;
}

static int refuse(Domain *d, const char *path, const char *what, char **ret_message) {
        char *text = strprintf("%s %s is not in an allowed folder of domain '%s' or does not exist (allowed: the "
                               "--image-root= folders and the folders of its disks, reached without symbolic links).",
                               what, path, d->def->name);

        if (!text)
                return -ENOMEM;
        free(*ret_message);
        *ret_message = text;
        return -QSNAP_E_PATH_NOT_ALLOWED;
}

int gate_open_folder(Domain *d, const char *path, const char *what, int *ret_dirfd, char **ret_message) {
        _cleanup_free_ char *folder = NULL;
        _cleanup_close_ int dirfd = -EBADF;
        const char *name;
        struct stat st;

        if (!path || path[0] != '/') {
                free(*ret_message);
                *ret_message = strprintf("%s '%s' is not an absolute path.", what, strna(path));
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        name = fs_basename(path);
        if (isempty(name) || streq(name, ".") || has_dotdot(path))
                return refuse(d, path, what, ret_message);
        folder = fs_dirname(path);
        if (!folder)
                return -ENOMEM;
        dirfd = fs_open_dir_nofollow(folder);
        if (dirfd == -ENOMEM)
                return dirfd;
        if (dirfd < 0)
                return refuse(d, path, what, ret_message);
        if (!folder_of_disks(d->def, dirfd) && !folder_of_disks(d->live, dirfd) && !folder_in_roots(d, dirfd))
                return refuse(d, path, what, ret_message);
        /* The last component: never a link (a missing file is the caller's). */
        if (fs_lstat_at(dirfd, name, &st) >= 0 && S_ISLNK(st.st_mode))
                return refuse(d, path, what, ret_message);
        if (ret_dirfd)
                *ret_dirfd = TAKE_FD(dirfd);
        return 0;
}

int gate_open_image(Domain *d, const char *path, const char *what, int *ret_fd, char **ret_message) {
        _cleanup_close_ int dirfd = -EBADF, fd = -EBADF;
        struct stat st;
        int r;

        r = gate_open_folder(d, path, what, &dirfd, ret_message);
        if (r < 0)
                return r;
        /* Not opened at all unless a regular file: a device's open has effects. */
        if (fs_lstat_at(dirfd, fs_basename(path), &st) < 0 || !S_ISREG(st.st_mode))
                return refuse(d, path, what, ret_message);
        fd = openat(dirfd, fs_basename(path), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return refuse(d, path, what, ret_message);
        *ret_fd = TAKE_FD(fd);
        return 0;
}

int gate_image_size(Domain *d, const char *path, DiskFormat format, const char *what, uint64_t *ret,
                    char **ret_message) {
        _cleanup_close_ int fd = -EBADF;
        int r;

        r = gate_open_image(d, path, what, &fd, ret_message);
        return r < 0 ? r : image_virtual_size_fd(fd, format, ret);
}

int gate_check(Domain *d, const char *path, const char *what, char **ret_message) {
        return gate_open_folder(d, path, what, NULL, ret_message);
}

int gate_check_snapshot_def(Domain *d, const SnapshotDef *def, char **ret_message) {
        int r;

        if (def->memory_file) {
                r = gate_check(d, def->memory_file, "The memory state file", ret_message);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < def->n_disks; i++) {
                if (!def->disks[i].source)
                        continue;
                r = gate_check(d, def->disks[i].source, "The overlay", ret_message);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < def->n_revert_disks; i++) {
                if (!def->revert_disks[i].source)
                        continue;
                r = gate_check(d, def->revert_disks[i].source, "The revert disk source", ret_message);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* qsnapd's own throw-away overlay of a transient disk (runtime dir). */
static bool is_transient_overlay(Domain *d, const char *path) {
        const DomainDef *def = d->live ?: d->def;

        for (size_t i = 0; def && i < def->n_disks; i++) {
                _cleanup_free_ char *own = def->disks[i].transient ? domain_transient_path(d, def->disks + i) : NULL;

                if (own && streq(own, path))
                        return true;
        }
        return false;
}

/* One file of a chain, opened relative to the folder the gate verified:
 * the top (image NULL) and every backing file alike, so that neither a
 * disk swapped for a link nor a header naming a file outside is read. A
 * missing file is -ENOENT (the callers say "missing"), anything but a
 * regular file -QSNAP_E_PATH_NOT_ALLOWED (never opened). */
static int chain_open(const char *path, const char *image, void *userdata, char **ret_message) {
        Domain *d = userdata;
        _cleanup_free_ char *what = image ? strprintf("The backing file named by %s,", image) : strdup("The image");
        _cleanup_close_ int dirfd = -EBADF;
        struct stat st;
        int fd, r;

        if (!what)
                return -ENOMEM;
        if (!image && is_transient_overlay(d, path))
                return fs_open_nofollow(path, O_RDONLY, 0);
        /* A missing top is missing, as it always was (the definition or
         * gate-checked metadata named it, no oracle). */
        if (!image && lstat(path, &st) < 0)
                return -errno;
        r = gate_open_folder(d, path, what, &dirfd, ret_message);
        if (r < 0)
                return r;
        r = fs_lstat_at(dirfd, fs_basename(path), &st);
        if (r < 0)
                return r;
        if (!S_ISREG(st.st_mode))
                return -QSNAP_E_PATH_NOT_ALLOWED;
        fd = openat(dirfd, fs_basename(path), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        r = fs_fstat_regular(fd, NULL);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        return fd;
}

int gate_read_chain(Domain *d, const char *active, DiskFormat format, ImageChain *ret, char **ret_message) {
        int r = image_read_chain_opened(active, format, chain_open, d, ret, ret_message);

        if (r < 0 && r != -ENOMEM && !*ret_message)
                *ret_message = strprintf("Cannot read the backing chain of %s: %s.", active, qsnap_strerror(r));
        return r;
}

/* ---- qemu-img on descriptors (qemu/img.h) ---- */

static void layers_free(ImgLayer *layers, size_t n) {
        for (size_t i = 0; i < n; i++)
                safe_close(layers[i].fd);
        free(layers);
}

int gate_open_chain(Domain *d, const char *path, DiskFormat format, bool whole, const char *what, ImgLayer **ret,
                    size_t *ret_n, char **ret_message) {
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ char *current = strdup(path), *label = strdup(what);
        ImgLayer *layers = NULL;
        size_t n = 0;
        int r = 0;

        if (!current || !label)
                return -ENOMEM;
        for (;;) {
                _cleanup_free_ char *backing = NULL;
                DiskFormat backing_format;
                ImgLayer *l;
                int fd;

                if (n >= 256 || strv_contains((const char *const *) names, current)) {
                        r = -ELOOP;
                        free(*ret_message);
                        *ret_message = strprintf("The backing chain of %s loops or is deeper than 256 files.", path);
                        break;
                }
                r = gate_open_image(d, current, label, &fd, ret_message);
                if (r < 0)
                        break;
                l = reallocarray(layers, n + 1, sizeof(ImgLayer));
                if (!l || strv_extend(&names, current) < 0) {
                        if (l)
                                layers = l;
                        safe_close(fd);
                        r = -ENOMEM;
                        break;
                }
                layers = l;
                layers[n++] = (ImgLayer) { .fd = fd, .format = format };
                if (!whole || format != DISK_FORMAT_QCOW2)
                        break;
                /* The header of the file just opened, not of whatever the
                 * name leads to now. */
                r = image_read_backing_fd(fd, &backing, &backing_format);
                if (r < 0 || !backing)
                        break;
                if (!image_backing_name_is_plain(backing)) {
                        free(*ret_message);
                        *ret_message = strprintf("The backing file name '%s' in %s is a json: or protocol name; qsnapd "
                                                 "follows only plain file names.", backing, current);
                        r = -QSNAP_E_PATH_NOT_ALLOWED;
                        break;
                }
                free(label);
                label = strprintf("The backing file named by %s,", current);
                free(current);
                current = image_resolve_backing(names[n - 1], backing);
                if (!current || !label) {
                        r = -ENOMEM;
                        break;
                }
                format = backing_format;
        }
        if (r < 0) {
                if (r != -ENOMEM && !*ret_message)
                        *ret_message = strprintf("Cannot read the backing chain of %s: %s.", path, qsnap_strerror(r));
                layers_free(layers, n);
                return r;
        }
        *ret = layers;
        *ret_n = n;
        return 0;
}

int gate_img_command(Domain *d, char *const *template, ImgCmd *ret, char **ret_message) {
        _cleanup_(img_cmd_done) ImgCmd c = {};
        int r;

        /* template[0] is qemu-img, template[1] its subcommand */
        if (strv_length((char **) template) < 2)
                return -EINVAL;
        r = img_cmd_init(&c, template[1]);
        if (r < 0)
                return r;
        for (char *const *a = template + 2; *a; a++) {
                ImgPlaceholder kind;
                DiskFormat format;
                const char *path;
                ImgLayer *layers = NULL;
                size_t n = 0;

                if (img_placeholder_parse(*a, &kind, &format, &path) == 0) {
                        r = img_cmd_add(&c, *a, NULL);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (kind == IMG_FILE) {
                        layers = new0(ImgLayer, 1);
                        if (!layers)
                                return -ENOMEM;
                        n = 1;
                        layers[0] = (ImgLayer) { .fd = image_open_regular(path, O_NOFOLLOW), .format = format };
                        if (layers[0].fd < 0) {
                                r = layers[0].fd;
                                free(layers);
                                free(*ret_message);
                                *ret_message = strprintf("Cannot open %s: %s.", path, qsnap_strerror(r));
                                return r;
                        }
                } else {
                        r = gate_open_chain(d, path, format, kind == IMG_CHAIN, "The image", &layers, &n, ret_message);
                        if (r < 0)
                                return r;
                }
                r = img_cmd_add_chain(&c, layers, n); /* takes the descriptors */
                free(layers);
                if (r < 0)
                        return r;
        }
        *ret = c;
        c = (ImgCmd) {};
        return 0;
}

int gate_img_snapshot(Domain *d, const char *op, const char *tag, const char *file, bool own, char **ret_output) {
        _cleanup_(img_cmd_done) ImgCmd cmd = {};
        _cleanup_free_ char *layer = img_placeholder(own ? IMG_FILE : IMG_LAYER, file, DISK_FORMAT_QCOW2);
        _cleanup_free_ char *message = NULL;
        char *template[] = { (char *) QEMU_IMG_BINARY, (char *) "snapshot", (char *) op, (char *) tag, layer, NULL };
        int r;

        if (!layer)
                return -ENOMEM;
        r = gate_img_command(d, template, &cmd, &message);
        if (r < 0) {
                if (ret_output)
                        *ret_output = TAKE_PTR(message);
                return r;
        }
        r = img_cmd_run(&cmd, ret_output);
        return r == 0 ? 0 : r < 0 ? r : -QSNAP_E_QEMU_FAILED;
}

int gate_img_bitmap(Domain *d, const char *op, const char *source, const char *file, const char *name,
                    char **ret_message) {
        _cleanup_(img_cmd_done) ImgCmd cmd = {};
        _cleanup_free_ char *layer = img_placeholder(IMG_LAYER, file, DISK_FORMAT_QCOW2);
        _cleanup_free_ char *message = NULL, *output = NULL;
        char *template[7] = { (char *) QEMU_IMG_BINARY, (char *) "bitmap", (char *) op };
        size_t n = 3, l;
        int r;

        if (!layer)
                return -ENOMEM;
        if (source)
                template[n++] = (char *) source;
        template[n++] = layer;
        template[n++] = (char *) name;
        r = gate_img_command(d, template, &cmd, &message);
        if (r < 0) {
                if (ret_message)
                        *ret_message = TAKE_PTR(message);
                return r;
        }
        r = img_cmd_run(&cmd, &output);
        if (r == 0)
                return 0;
        for (l = output ? strlen(output) : 0; l > 0 && strchr(" \t\n", output[l - 1]); l--)
                output[l - 1] = 0;
        if (ret_message)
                *ret_message = strprintf("qemu-img bitmap failed: %s", r < 0 ? strerror(-r) : strempty(output));
        return r < 0 ? r : -QSNAP_E_QEMU_FAILED;
}
