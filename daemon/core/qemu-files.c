/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The image files a domain's QEMU holds by descriptor, and qsnapd's own
 * map of which node is which file (see core/qemu-files.h). The map is
 * saved as JSON in the runtime folder ("<uuid>.files") after every
 * change: {"next": N, "files": [{"node": …, "file": …, "fdset": N}, …]}.
 * No D-Bus in here.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/gate.h"
#include "core/manager.h"
#include "core/qemu-files.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "util/fs.h"
#include "util/json-util.h"
#include "util/util.h"

#define QEMU_FD_MIN 10
#define FILES_MAX_SIZE (1024 * 1024)

static int fd_for_qemu(int fd) {
        int flags = fcntl(fd, F_GETFL), moved;

        /* Blocking again: QEMU's own I/O expects it. */
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
                return -errno;
        moved = fcntl(fd, F_DUPFD_CLOEXEC, QEMU_FD_MIN);
        return moved < 0 ? -errno : moved;
}

int qemu_file_open_pair(Domain *d, const char *path, bool readonly, int *ret_rw, int *ret_ro, char **ret_message) {
        _cleanup_close_ int rw = -EBADF, ro = -EBADF, fd = -EBADF;
        char self[64];
        int r;

        /* Through the path gate (the file in a folder it verified, opened
         * there), or for qsnapd's own runtime files the plain safe open. */
        if (d) {
                r = gate_open_image(d, path, "The image", &fd, ret_message);
                if (r < 0)
                        return r;
        } else {
                fd = image_open_regular(path, O_NOFOLLOW);
                if (fd < 0) {
                        *ret_message = strprintf("Could not open '%s': %s", path,
                                                 fd == -QSNAP_E_PATH_NOT_ALLOWED ? "not a regular file" : strerror(-fd));
                        return fd;
                }
        }
        ro = fd_for_qemu(fd);
        if (ro < 0)
                return ro;
        if (!readonly) {
                /* The same file again, read-write: reopened through the
                 * descriptor, not by name, so nothing swapped in meanwhile
                 * can be what QEMU writes. */
                snprintf(self, sizeof(self), "/proc/self/fd/%d", ro);
                fd = safe_close(fd);
                fd = open(self, O_RDWR | O_CLOEXEC | O_NOCTTY);
                /* A file we may not write (a shared base) is QEMU's read-only. */
                if (fd >= 0)
                        rw = fd_for_qemu(fd);
                else if (!IN_SET(errno, EACCES, EROFS, EPERM, ETXTBSY)) {
                        r = -errno;
                        *ret_message = strprintf("Could not open '%s': %s", path, strerror(-r));
                        return r;
                }
                if (rw < 0 && fd >= 0)
                        return rw;
        }
        *ret_rw = TAKE_FD(rw);
        *ret_ro = TAKE_FD(ro);
        return 0;
}

static int open_device(const char *path, bool write) {
        return write ? fs_open_nofollow(path, O_WRONLY | O_CREAT, 0600) : image_open_nofollow(path);
}

int qemu_file_open_device(const char *path, bool write, int *ret_fd, char **ret_message) {
        _cleanup_close_ int fd = open_device(path, write);
        int moved;

        if (fd < 0) {
                *ret_message = strprintf("Could not open '%s': %s", path,
                                         fd == -QSNAP_E_PATH_NOT_ALLOWED ? "not a regular file"
                                         : fd == -ELOOP ? "a symbolic link on the way (qsnapd follows none)"
                                                        : strerror(-fd));
                return fd == -ENOMEM ? fd : -QSNAP_E_QEMU_FAILED;
        }
        moved = fd_for_qemu(fd);
        if (moved < 0)
                return moved;
        *ret_fd = moved;
        return 0;
}

/* ---- the map ---- */

static void qemu_file_done(QemuFile *f) {
        free(f->node);
        free(f->path);
}

static QemuFile *files_find_node(Domain *d, const char *node) {
        for (size_t i = 0; node && i < d->n_files; i++)
                if (streq(d->files[i].node, node))
                        return d->files + i;
        return NULL;
}

static int domain_files_save(Domain *d) {
        _cleanup_(json_object_putp) json_object *root = json_object_new_object(), *l = json_object_new_array();
        _cleanup_free_ char *path = domain_runtime_path(d, ".files");
        const char *s;

        if (!root || !l || !path)
                return -ENOMEM;
        for (size_t i = 0; i < d->n_files; i++) {
                json_object *e = json_object_new_object();

                if (!e || json_object_array_add(l, e) < 0) {
                        json_object_put(e);
                        return -ENOMEM;
                }
                json_object_object_add(e, "node", json_object_new_string(d->files[i].node));
                json_object_object_add(e, "file", json_object_new_string(d->files[i].path));
                json_object_object_add(e, "fdset", json_object_new_int64(d->files[i].fdset));
        }
        json_object_object_add(root, "next", json_object_new_int64(d->fdset_seq));
        json_object_object_add(root, "files", TAKE_PTR(l));
        s = json_object_to_json_string_ext(root, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (!s)
                return -ENOMEM;
        /* Runtime state, rewritten on every add and removal (twice per
         * backup, snapshot or copy): no fsync, it only has to outlive
         * qsnapd, not the host (4 fsyncs, 10-25 ms per backup on a busy
         * disk: docs/performance.md, "Backups"). */
        return write_file_replace(path, s, strlen(s), 0600);
}

int domain_files_add(Domain *d, const char *node, const char *path, unsigned fdset) {
        QemuFile *f = files_find_node(d, node), *l;
        _cleanup_free_ char *n = strdup(node), *p = strdup(path);
        int r;

        d->graph_epoch++;
        if (!n || !p)
                return -ENOMEM;
        if (!f) {
                l = reallocarray(d->files, d->n_files + 1, sizeof(QemuFile));
                if (!l)
                        return -ENOMEM;
                d->files = l;
                f = d->files + d->n_files++;
        } else
                qemu_file_done(f);
        *f = (QemuFile) { .node = TAKE_PTR(n), .path = TAKE_PTR(p), .fdset = fdset };
        if (fdset > d->fdset_seq)
                d->fdset_seq = fdset;
        r = domain_files_save(d);
        if (r < 0)
                log_warning_errno(r, "Domain '%s': cannot save which node is which file: %m", d->def->name);
        return 0;
}

int domain_files_set(Domain *d, const QemuFile *files, size_t n) {
        domain_files_clear(d);
        for (size_t i = 0; i < n; i++) {
                int r = domain_files_add(d, files[i].node, files[i].path, files[i].fdset);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void files_remove(Domain *d, QemuFile *f) {
        qemu_file_done(f);
        memmove(f, f + 1, (d->n_files - (size_t) (f - d->files) - 1) * sizeof(QemuFile));
        d->n_files--;
        (void) domain_files_save(d);
}

const char *domain_files_path(Domain *d, const char *node) {
        QemuFile *f = files_find_node(d, node);
        return f ? f->path : NULL;
}

const char *domain_files_node(Domain *d, const char *path) {
        for (size_t i = d->n_files; path && i > 0; i--)
                if (streq(d->files[i - 1].path, path))
                        return d->files[i - 1].node;
        return NULL;
}

unsigned domain_files_new_set(Domain *d) {
        return ++d->fdset_seq;
}

void domain_files_clear(Domain *d) {
        _cleanup_free_ char *path = domain_runtime_path(d, ".files");

        d->graph_epoch++;
        for (size_t i = 0; i < d->n_files; i++)
                qemu_file_done(d->files + i);
        d->files = mfree(d->files);
        d->n_files = 0;
        d->fdset_seq = 0;
        if (path)
                (void) unlink(path);
}

int domain_files_load(Domain *d) {
        _cleanup_(json_object_putp) json_object *root = NULL;
        _cleanup_free_ char *path = domain_runtime_path(d, ".files"), *text = NULL;
        json_object *l = NULL, *next = NULL;
        int r;

        if (!path)
                return -ENOMEM;
        r = read_full_file(path, FILES_MAX_SIZE, &text, NULL);
        if (r < 0)
                return r == -ENOENT ? 0 : r;
        root = json_tokener_parse(text);
        if (!root || !json_object_object_get_ex(root, "files", &l) || !json_object_is_type(l, json_type_array))
                return -EBADMSG;
        for (size_t i = 0; i < d->n_files; i++)
                qemu_file_done(d->files + i);
        d->n_files = 0;
        for (size_t i = 0; i < json_object_array_length(l); i++) {
                json_object *e = json_object_array_get_idx(l, i), *node, *file, *set;

                if (!json_object_object_get_ex(e, "node", &node) || !json_object_object_get_ex(e, "file", &file) ||
                    !json_object_object_get_ex(e, "fdset", &set))
                        return -EBADMSG;
                r = domain_files_add(d, json_object_get_string(node), json_object_get_string(file),
                                     (unsigned) json_object_get_int64(set));
                if (r < 0)
                        return r;
        }
        if (json_object_object_get_ex(root, "next", &next) && json_object_get_int64(next) > d->fdset_seq)
                d->fdset_seq = (unsigned) json_object_get_int64(next);
        return 0;
}

/* ---- run time ---- */

static void on_add_fd(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        /* The blockdev-add after it reports what went wrong. */
        if (error < 0 && error != -ECONNRESET)
                log_warning("add-fd failed: %s", strna(desc));
}

static bool path_startswith_dir(const char *path, const char *dir) {
        size_t n = strlen(dir);
        return strncmp(path, dir, n) == 0 && path[n] == '/' && !strchr(path + n + 1, '/');
}

int domain_files_pass(Domain *d, const char *node, const char *path, bool readonly, char **ret_filename,
                      char **ret_message) {
        _cleanup_close_ int rw = -EBADF, ro = -EBADF;
        _cleanup_free_ char *filename = NULL;
        unsigned set;
        int r;

        if (!d->qmp)
                return -ENOTCONN;
        /* qsnapd's own runtime files (a pull backup's scratch file) are no
         * domain's: they need no gate. */
        r = qemu_file_open_pair(path_startswith_dir(path, d->manager->config.runtime_dir) ? NULL : d, path, readonly,
                                &rw, &ro, ret_message);
        if (r < 0)
                return r;
        set = domain_files_new_set(d);
        filename = qmp_fdset_path(set);
        if (!filename)
                return -ENOMEM;
        if ((rw >= 0 && qmp_cmd_add_fd(d->qmp, set, rw, NULL, on_add_fd, NULL) < 0) ||
            qmp_cmd_add_fd(d->qmp, set, ro, NULL, on_add_fd, NULL) < 0) {
                *ret_message = strprintf("Cannot pass %s to QEMU.", path);
                return -QSNAP_E_QEMU_FAILED;
        }
        r = domain_files_add(d, node, path, set);
        if (r < 0)
                return r;
        *ret_filename = TAKE_PTR(filename);
        return 0;
}

typedef struct NodeDel {
        Domain *domain;
        char *node;
} NodeDel;

static void on_node_deleted(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        NodeDel *c = userdata;

        if (error >= 0)
                domain_files_forget(c->domain, c->node);
        else if (error != -ECONNRESET)
                log_debug("Domain '%s': blockdev-del %s: %s", c->domain->def->name, c->node, strna(desc));
        domain_unref(c->domain);
        free(c->node);
        free(c);
}

void domain_node_del(Domain *d, const char *node) {
        NodeDel *c;

        d->graph_epoch++;
        if (!d->qmp)
                return;
        c = new0(NodeDel, 1);
        if (!c || !(c->node = strdup(node))) {
                free(c);
                return (void) log_oom();
        }
        c->domain = domain_ref(d);
        if (qmp_cmd_blockdev_del(d->qmp, node, on_node_deleted, c) < 0) {
                domain_unref(d);
                free(c->node);
                free(c);
        }
}

void domain_files_forget(Domain *d, const char *node) {
        QemuFile *f = files_find_node(d, node);

        d->graph_epoch++;
        if (!f)
                return;
        /* QEMU closes the set's descriptors once no node uses them. */
        if (d->qmp)
                (void) qmp_cmd_remove_fd(d->qmp, f->fdset, NULL, NULL);
        files_remove(d, f);
}

/* ---- reading QEMU's node list ---- */

int domain_node_file(Domain *d, json_object *entry, char **ret) {
        json_object *node = NULL;
        const char *path;

        if (json_object_object_get_ex(entry, "node-name", &node) &&
            (path = domain_files_path(d, json_object_get_string(node)))) {
                *ret = strdup(path);
                return *ret ? 0 : -ENOMEM;
        }
        /* A node qsnapd did not pass the file of: QEMU opened it by name
         * (an attached domain), or it is an inner protocol node. */
        if (domain_is_managed(d))
                return -ENOENT;
        return qmp_node_file(entry, ret);
}

static const char *files_path_of_set(Domain *d, unsigned set) {
        for (size_t i = 0; i < d->n_files; i++)
                if (d->files[i].fdset == set)
                        return d->files[i].path;
        return NULL;
}

int domain_nodes_resolve_files(Domain *d, QmpNode *nodes, size_t n) {
        for (size_t k = 0; k < n; k++) {
                const char *path = NULL;
                unsigned set;

                if (qmp_parse_fdset_path(nodes[k].file, &set) >= 0)
                        path = files_path_of_set(d, set);
                else if (!domain_is_managed(d))
                        continue; /* QEMU opened it by that name itself */
                free(nodes[k].file);
                nodes[k].file = NULL;
                if (path && !(nodes[k].file = strdup(path)))
                        return -ENOMEM;
        }
        return 0;
}

int domain_find_format_node(Domain *d, json_object *nodes, const char *file, const char **ret_node) {
        const char *node = domain_files_node(d, file);

        if (!node)
                return domain_is_managed(d) ? 0 : qmp_find_format_node(nodes, file, ret_node);
        for (size_t k = 0; k < json_object_array_length(nodes); k++) {
                json_object *n = NULL;

                if (json_object_object_get_ex(json_object_array_get_idx(nodes, k), "node-name", &n) &&
                    streq_ptr(json_object_get_string(n), node)) {
                        *ret_node = node;
                        return 1;
                }
        }
        return 0;
}

/* ---- memory state ---- */

#define INCOMING_FD_NAME "qsnap-incoming"

int domain_send_incoming(Domain *d, const char *memory_file, qmp_reply_func_t cb, void *userdata) {
        _cleanup_close_ int fd = -EBADF;
        int flags;

        if (!d->qmp)
                return -ENOTCONN;
        fd = image_open_regular(memory_file, O_NOFOLLOW);
        if (fd < 0)
                return fd;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
                return -errno;
        if (qmp_cmd_getfd(d->qmp, INCOMING_FD_NAME, fd, NULL, NULL) < 0 ||
            qmp_cmd_migrate_incoming_fd(d->qmp, INCOMING_FD_NAME, cb, userdata) < 0)
                return -QSNAP_E_QEMU_FAILED;
        return 0;
}
