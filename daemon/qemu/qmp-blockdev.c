/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A part of qmp-commands.c (its header declares these): the blockdev-add
 * options of the image nodes qsnapd adds to a running QEMU — a snapshot's
 * overlay, a copy's destination, a push backup's target — and the cache
 * mode of a disk (<driver cache= io=>, libvirt's mapping) on the nodes of
 * its layers, these and the ones of the launch line.
 */
#include "qemu/qmp-commands.h"

#include "util/json-util.h"
#include "util/util.h"

/* Adds v under k; takes v even on failure. */
static int add(json_object *o, const char *k, json_object *v) {
        if (!v || json_object_object_add(o, k, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static int add_string(json_object *o, const char *k, const char *v) {
        return add(o, k, json_object_new_string(v));
}

/* A file passed as a descriptor ("/dev/fdset/N") takes no image locks:
 * the fd set keeps the open file QEMU locked after QEMU let go of it, and
 * those locks would refuse QEMU's own next reopen of it. */
static const char *file_locking(const char *filename) {
        unsigned set;
        return qmp_parse_fdset_path(filename, &set) >= 0 ? "off" : "auto";
}

QmpCache qmp_cache_of(DiskCache cache, DiskIo io) {
        QmpCache c = {};

        c.given = disk_cache_flags(cache, NULL, &c.direct, &c.no_flush);
        /* libvirt's io= names are QEMU's aio= names. */
        c.aio = io == DISK_IO_DEFAULT ? NULL : disk_io_to_string(io);
        return c;
}

static int add_cache(json_object *o, const QmpCache *c) {
        json_object *v = json_object_new_object();

        if (!v || add(v, "direct", json_object_new_boolean(c->direct)) < 0 ||
            add(v, "no-flush", json_object_new_boolean(c->no_flush)) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return add(o, "cache", v);
}

int qmp_cache_apply(const QmpCache *c, json_object *format_node, json_object *file_node) {
        if (c->aio && streq(c->aio, "native") && !c->direct)
                return -EINVAL;
        if (c->given && format_node && add_cache(format_node, c) < 0)
                return -ENOMEM;
        if (c->given && file_node && add_cache(file_node, c) < 0)
                return -ENOMEM;
        if (c->aio && file_node && add_string(file_node, "aio", c->aio) < 0)
                return -ENOMEM;
        return 0;
}

/* {"driver": format, "node-name": node, "file": {"driver": "file",
 * "filename": …, "locking": …}} in the cache mode, the file under QEMU's
 * preallocate filter when asked; the caller adds the rest. */
static int image_node(const char *node, const char *format, const char *filename, const QmpCache *cache,
                      bool preallocate, json_object **ret) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *f = json_object_new_object();
        int r;

        if (!o || !f || add_string(o, "driver", format) < 0 || add_string(o, "node-name", node) < 0 ||
            add_string(f, "driver", "file") < 0 || add_string(f, "filename", filename) < 0 ||
            add_string(f, "locking", file_locking(filename)) < 0)
                return -ENOMEM;
        if (cache && (r = qmp_cache_apply(cache, o, f)) < 0)
                return r;
        if (preallocate) {
                json_object *filter = json_object_new_object();

                if (!filter || add_string(filter, "driver", "preallocate") < 0 || add(filter, "file", TAKE_PTR(f)) < 0) {
                        json_object_put(filter);
                        return -ENOMEM;
                }
                f = filter;
        }
        if (add(o, "file", TAKE_PTR(f)) < 0)
                return -ENOMEM;
        *ret = TAKE_PTR(o);
        return 0;
}

int64_t qmp_cmd_blockdev_add_overlay(Qmp *qmp, const char *node, const char *filename, const QmpCache *cache,
                                     qmp_reply_func_t cb, void *userdata) {
        json_object *args = NULL;
        int r;

        if (!node || !filename)
                return -EINVAL;
        r = image_node(node, "qcow2", filename, cache, false, &args);
        if (r < 0)
                return r;
        /* "backing": null, or QEMU opens the backing file a second time and
         * trips over its own write lock (see the notes). */
        if (json_object_object_add(args, "backing", NULL) < 0) {
                json_object_put(args);
                return -ENOMEM;
        }
        return qmp_send(qmp, "blockdev-add", args, cb, userdata);
}

int64_t qmp_cmd_blockdev_add_copy_target(Qmp *qmp, const char *node, const char *format, const char *filename,
                                         const char *backing_node, const QmpCache *cache, bool preallocate,
                                         qmp_reply_func_t cb, void *userdata) {
        json_object *args = NULL;
        bool qcow2;
        int r;

        if (!node || !format || !filename || !cache)
                return -EINVAL;
        qcow2 = streq(format, "qcow2");
        if (!qcow2 && backing_node)
                return -EINVAL;
        r = image_node(node, format, filename, cache, preallocate, &args);
        if (r < 0)
                return r;
        if (add_string(args, "discard", "unmap") < 0 ||
            /* qcow2: "backing": null (a full copy stands alone), or the node
             * the source's top stands on (a shallow copy shares it). */
            (qcow2 && (backing_node ? add_string(args, "backing", backing_node)
                                    : json_object_object_add(args, "backing", NULL)) < 0)) {
                json_object_put(args);
                return -ENOMEM;
        }
        return qmp_send(qmp, "blockdev-add", args, cb, userdata);
}
