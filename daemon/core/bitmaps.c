/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Dirty bitmap inventory, the usability rule and the refresh of each
 * checkpoint's Problems and Size (see bitmaps.h).
 */
#include <inttypes.h>

#include "core/bitmap-tops.h"
#include "core/bitmaps.h"
#include "core/bitmaps-internal.h"
#include "core/disk.h"
#include "core/manager.h"
#include "core/domain-jobs.h"
#include "core/gate.h"
#include "core/qemu-files.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "util/hashmap.h"
#include "util/json-util.h"
#include "util/util.h"

/* ---- inventory ---- */

static void bitmap_layer_done(BitmapLayer *l) {
        for (size_t k = 0; k < l->n_bitmaps; k++)
                free(l->bitmaps[k].name);
        free(l->bitmaps);
        free(l->path);
        free(l->node);
        free(l->file_node);
        hashmap_free(l->index);
}

BitmapInventory *bitmap_inventory_free(BitmapInventory *inv) {
        if (!inv)
                return NULL;
        for (size_t i = 0; i < inv->n_disks; i++) {
                for (size_t j = 0; j < inv->disks[i].n_layers; j++)
                        bitmap_layer_done(inv->disks[i].layers + j);
                free(inv->disks[i].layers);
                free(inv->disks[i].target);
        }
        free(inv->disks);
        free(inv);
        return NULL;
}

const BitmapDisk *bitmap_inventory_disk(const BitmapInventory *inv, const char *target) {
        for (size_t i = 0; inv && i < inv->n_disks; i++)
                if (streq(inv->disks[i].target, target))
                        return inv->disks + i;
        return NULL;
}

/* The index of a filled layer's bitmaps (the first of a name, as the scan):
 * name → position + 1, so that the entries may move (bitmap_layer_add()). */
static int layer_index(BitmapLayer *l) {
        if (l->n_bitmaps < 16 || l->index)
                return 0;
        l->index = hashmap_new();
        if (!l->index)
                return -ENOMEM;
        for (size_t k = 0; k < l->n_bitmaps; k++) {
                int r = l->bitmaps[k].name ? hashmap_put(l->index, l->bitmaps[k].name, (void *) (uintptr_t) (k + 1)) : 0;
                if (r < 0 && r != -EEXIST)
                        return r;
        }
        return 0;
}

const BitmapEntry *bitmap_layer_find(const BitmapLayer *l, const char *name) {
        if (l->index) {
                uintptr_t k = (uintptr_t) hashmap_get(l->index, name);
                return k > 0 ? l->bitmaps + k - 1 : NULL;
        }
        for (size_t k = 0; k < l->n_bitmaps; k++)
                if (streq(l->bitmaps[k].name, name))
                        return l->bitmaps + k;
        return NULL;
}

int bitmap_layer_add(BitmapLayer *l, const BitmapEntry *e) {
        BitmapEntry *b;

        if (l->n_bitmaps >= l->max_bitmaps) {
                size_t max = (l->n_bitmaps ?: 4) * 2;
                b = reallocarray(l->bitmaps, max, sizeof(BitmapEntry));
                if (!b)
                        return -ENOMEM;
                l->bitmaps = b;
                l->max_bitmaps = max;
        }
        b = l->bitmaps + l->n_bitmaps;
        *b = *e;
        b->name = strdup(e->name);
        if (!b->name)
                return -ENOMEM;
        l->n_bitmaps++;
        if (!l->index)
                return layer_index(l);
        if (hashmap_put(l->index, b->name, (void *) (uintptr_t) l->n_bitmaps) == -ENOMEM) {
                l->n_bitmaps--;
                free(b->name);
                return -ENOMEM;
        }
        return 0;
}

void bitmap_layer_drop(BitmapLayer *l, const char *name) {
        const BitmapEntry *e = bitmap_layer_find(l, name);
        size_t k, last;

        if (!e)
                return;
        k = (size_t) (e - l->bitmaps);
        last = l->n_bitmaps - 1;
        if (l->index)
                (void) hashmap_remove(l->index, name);
        free(l->bitmaps[k].name);
        if (k != last) {
                /* The last one takes its place (the order means nothing). */
                l->bitmaps[k] = l->bitmaps[last];
                if (l->index)
                        (void) hashmap_replace(l->index, l->bitmaps[k].name, (void *) (uintptr_t) (k + 1));
        }
        l->n_bitmaps = last;
}

int bitmap_inventory_copy(const BitmapInventory *inv, BitmapInventory **ret) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *c = new0(BitmapInventory, 1);

        if (!c || !(c->disks = new0(BitmapDisk, inv->n_disks ?: 1)))
                return -ENOMEM;
        c->live = inv->live;
        c->tops_only = inv->tops_only;
        for (size_t i = 0; i < inv->n_disks; i++) {
                const BitmapDisk *from = inv->disks + i;
                BitmapDisk *to = c->disks + c->n_disks++;

                to->target = strdup(from->target);
                to->layers = new0(BitmapLayer, from->n_layers ?: 1);
                if (!to->target || !to->layers)
                        return -ENOMEM;
                for (size_t j = 0; j < from->n_layers; j++) {
                        const BitmapLayer *fl = from->layers + j;
                        BitmapLayer *tl = to->layers + to->n_layers++;

                        *tl = (BitmapLayer) { .path = strdup(fl->path), .qcow2 = fl->qcow2,
                                              .node = fl->node ? strdup(fl->node) : NULL,
                                              .file_node = fl->file_node ? strdup(fl->file_node) : NULL,
                                              .read_only = fl->read_only,
                                              .bitmaps = new0(BitmapEntry, fl->n_bitmaps ?: 1),
                                              .max_bitmaps = fl->n_bitmaps ?: 1 };
                        if (!tl->path || (fl->node && !tl->node) || (fl->file_node && !tl->file_node) || !tl->bitmaps)
                                return -ENOMEM;
                        for (size_t k = 0; k < fl->n_bitmaps; k++) {
                                tl->bitmaps[k] = fl->bitmaps[k];
                                tl->bitmaps[k].count = 0; /* a moment's figure, not the copy's */
                                tl->bitmaps[k].name = strdup(fl->bitmaps[k].name);
                                if (!tl->bitmaps[k].name)
                                        return -ENOMEM;
                                tl->n_bitmaps++;
                        }
                        if (layer_index(tl) < 0)
                                return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(c);
        return 0;
}

/* The disks and their chains (files), without bitmaps yet. */
int bitmap_inventory_skeleton(Domain *d, bool live, BitmapInventory **ret) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = new0(BitmapInventory, 1);
        const DomainDef *def = domain_current_def(d);

        if (!inv)
                return -ENOMEM;
        inv->live = live;
        inv->disks = new0(BitmapDisk, def->n_disks);
        if (!inv->disks)
                return -ENOMEM;
        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDisk *disk = def->disks + i;
                BitmapDisk *bd = inv->disks + inv->n_disks;
                const ImageChain *chain;

                if (!disk->source)
                        continue;
                bd->target = strdup(disk->target);
                if (!bd->target)
                        return -ENOMEM;
                inv->n_disks++;
                chain = domain_disk_chain(d, disk->source, disk->format);
                bd->layers = new0(BitmapLayer, chain ? chain->n_layers : 1);
                if (!bd->layers)
                        return -ENOMEM;
                if (!chain) { /* unreadable: the active file alone */
                        bd->layers[0] = (BitmapLayer) { .path = strdup(disk->source),
                                                        .qcow2 = disk->format == DISK_FORMAT_QCOW2 };
                        bd->n_layers = 1;
                        if (!bd->layers[0].path)
                                return -ENOMEM;
                        continue;
                }
                for (size_t j = 0; j < chain->n_layers; j++) {
                        bd->layers[j] = (BitmapLayer) { .path = strdup(chain->layers[j].path),
                                                        .qcow2 = chain->layers[j].format == DISK_FORMAT_QCOW2 };
                        bd->n_layers++;
                        if (!bd->layers[j].path)
                                return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(inv);
        return 0;
}

/* One layer's bitmaps from its file, opened through the path gate like
 * every other read of a domain's image: a layer swapped for a link, or one
 * outside the domain's folders, is refused with the gate's text, never
 * handed to qemu-img. */
static int layer_read_offline(Domain *d, BitmapLayer *l, char **ret_message) {
        _cleanup_close_ int fd = -EBADF;
        ImageBitmap *b = NULL;
        size_t n = 0;
        int r;

        if (!l->qcow2)
                return 0;
        r = gate_open_image(d, l->path, "The image", &fd, ret_message);
        if (r < 0)
                return r;
        r = image_read_bitmaps_fd(fd, l->path, &b, &n, ret_message);
        if (r < 0)
                return r;
        l->bitmaps = new0(BitmapEntry, n);
        if (!l->bitmaps) {
                image_bitmaps_free(b, n);
                return -ENOMEM;
        }
        for (size_t k = 0; k < n; k++)
                l->bitmaps[k] = (BitmapEntry) { .name = TAKE_PTR(b[k].name), .recording = b[k].enabled,
                                                .persistent = true, .inconsistent = b[k].in_use,
                                                .granularity = b[k].granularity };
        l->n_bitmaps = n;
        image_bitmaps_free(b, n);
        return layer_index(l);
}

int bitmap_inventory_offline(Domain *d, BitmapInventory **ret, char **ret_message) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = NULL;
        int r;

        r = bitmap_inventory_skeleton(d, false, &inv);
        if (r < 0)
                return r;
        for (size_t i = 0; i < inv->n_disks; i++)
                for (size_t j = 0; j < inv->disks[i].n_layers; j++) {
                        r = layer_read_offline(d, inv->disks[i].layers + j, ret_message);
                        if (r < 0)
                                return r;
                }
        *ret = TAKE_PTR(inv);
        return 0;
}

void bitmap_disk_done(BitmapDisk *bd) {
        for (size_t j = 0; j < bd->n_layers; j++)
                bitmap_layer_done(bd->layers + j);
        free(bd->layers);
        free(bd->target);
        *bd = (BitmapDisk) {};
}

int bitmap_disk_offline(Domain *d, const char *target, const char *path, DiskFormat format, BitmapDisk *ret,
                        char **ret_message) {
        _cleanup_(image_chain_done) ImageChain chain = {};
        BitmapDisk bd = {};
        int r;

        /* The chain through the gate (backing names inside the allowed
         * folders, plain names only), each layer then opened by it too. */
        r = gate_read_chain(d, path, format, &chain, ret_message);
        if (r < 0)
                return r;
        bd.target = strdup(target);
        bd.layers = new0(BitmapLayer, chain.n_layers);
        if (!bd.target || !bd.layers) {
                bitmap_disk_done(&bd);
                return -ENOMEM;
        }
        for (size_t j = 0; j < chain.n_layers; j++) {
                bd.layers[j] = (BitmapLayer) { .path = strdup(chain.layers[j].path),
                                               .qcow2 = chain.layers[j].format == DISK_FORMAT_QCOW2 };
                bd.n_layers++;
                r = bd.layers[j].path ? layer_read_offline(d, bd.layers + j, ret_message) : -ENOMEM;
                if (r < 0) {
                        bitmap_disk_done(&bd);
                        return r;
                }
        }
        *ret = bd;
        return 0;
}

/* Fills layer l from QEMU's nodes: its format node (for the top, the one
 * the disk's device runs on: not read-only), its file child, its bitmaps. */
static int layer_from_nodes(BitmapLayer *l, bool top, QmpNode *nodes, size_t n) {
        QmpNode *found = NULL;

        for (size_t k = 0; k < n; k++) {
                if (!nodes[k].file || !streq(nodes[k].file, l->path) || streq(nodes[k].drv, "file"))
                        continue;
                if (!found || (top && found->read_only && !nodes[k].read_only))
                        found = nodes + k;
        }
        if (!found)
                return 0;
        for (size_t k = 0; k < n; k++)
                if (nodes[k].file && streq(nodes[k].file, l->path) && streq(nodes[k].drv, "file") &&
                    nodes[k].read_only == found->read_only) {
                        l->file_node = strdup(nodes[k].node);
                        if (!l->file_node)
                                return -ENOMEM;
                        break;
                }
        l->node = strdup(found->node);
        if (!l->node)
                return -ENOMEM;
        l->read_only = found->read_only;
        l->bitmaps = new0(BitmapEntry, found->n_bitmaps);
        if (!l->bitmaps)
                return -ENOMEM;
        for (size_t k = 0; k < found->n_bitmaps; k++) {
                QmpNodeBitmap *b = found->bitmaps + k;
                l->bitmaps[k] = (BitmapEntry) { .name = TAKE_PTR(b->name), .recording = b->recording,
                                                .persistent = b->persistent, .inconsistent = b->inconsistent,
                                                .count = b->count, .granularity = b->granularity };
        }
        l->n_bitmaps = found->n_bitmaps;
        found->n_bitmaps = 0;
        return layer_index(l);
}

typedef struct LiveCall {
        Domain *domain;
        BitmapInventoryFunc done;
        void *userdata;
        Qmp *qmp;                /* the QEMU asked, */
        uint64_t epoch, changes; /* and what had changed when asked */
} LiveCall;

int bitmap_inventory_from_nodes(Domain *d, json_object *result, BitmapInventory **ret) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = NULL;
        QmpNode *nodes = NULL;
        size_t n = 0;
        int r;

        r = qmp_parse_named_nodes(result, &nodes, &n);
        /* QEMU names files /dev/fdset/N: which file that is, qsnapd knows. */
        if (r >= 0)
                r = domain_nodes_resolve_files(d, nodes, n);
        if (r >= 0)
                r = bitmap_inventory_skeleton(d, true, &inv);
        for (size_t i = 0; r >= 0 && i < inv->n_disks; i++)
                for (size_t j = 0; r >= 0 && j < inv->disks[i].n_layers; j++)
                        r = layer_from_nodes(inv->disks[i].layers + j, j == 0, nodes, n);
        qmp_nodes_free(nodes, n);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(inv);
        return 0;
}

static void on_named_nodes(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                           void *userdata) {
        LiveCall *c = userdata;
        _cleanup_(domain_unrefp) Domain *d = c->domain;
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = NULL;
        _cleanup_free_ char *message = NULL;
        int r;

        if (error < 0) {
                message = strprintf("QEMU did not list its block nodes: %s", strna(desc));
                r = -QSNAP_E_QEMU_FAILED;
        } else
                r = bitmap_inventory_from_nodes(d, result, &inv);
        if (r >= 0)
                bitmap_tops_remember(d, c->qmp, c->epoch, c->changes, inv);
        c->done(d, r < 0 ? r : 0, message, r < 0 ? NULL : TAKE_PTR(inv), c->userdata);
        free(c);
}

int bitmap_inventory_live(Domain *d, BitmapInventoryFunc done, void *userdata) {
        LiveCall *c;

        if (!d->qmp)
                return -QSNAP_E_NOT_RUNNING;
        c = new0(LiveCall, 1);
        if (!c)
                return -ENOMEM;
        *c = (LiveCall) { .domain = domain_ref(d), .done = done, .userdata = userdata, .qmp = d->qmp,
                          .epoch = d->graph_epoch, .changes = qmp_changes(d->qmp) };
        if (qmp_cmd_query_named_block_nodes(d->qmp, on_named_nodes, c) < 0) {
                domain_unref(d);
                free(c);
                return -QSNAP_E_QEMU_FAILED;
        }
        return 0;
}

int bitmap_inventory_get(Domain *d, BitmapInventoryFunc done, void *userdata) {
        _cleanup_free_ char *message = NULL;
        BitmapInventory *inv = NULL;
        int r;

        if (d->qmp && domain_is_active(d))
                return bitmap_inventory_live(d, done, userdata);
        if (domain_is_active(d))
                return -QSNAP_E_NOT_RUNNING; /* no monitor: the files are QEMU's now */
        r = bitmap_inventory_offline(d, &inv, &message);
        done(d, r < 0 ? r : 0, message, inv, userdata);
        return 0;
}

/* ---- the rule ---- */

int bitmap_disk_check(const BitmapDisk *bd, const char *name, size_t *ret_depth, char **ret_reason) {
        size_t depth = 0;
        bool ended = false;

        for (size_t j = 0; j < bd->n_layers; j++) {
                const BitmapLayer *l = bd->layers + j;
                const BitmapEntry *b = bitmap_layer_find(l, name);
                const char *what = NULL;

                if (!b) {
                        if (j == 0) {
                                *ret_reason = strprintf("disk %s: bitmap '%s' is missing from the active image %s "
                                                        "(restored from elsewhere, another branch, or removed by hand)",
                                                        bd->target, name, l->path);
                                return *ret_reason ? 1 : -ENOMEM;
                        }
                        ended = true;
                        continue;
                }
                if (ended) {
                        *ret_reason = strprintf("disk %s: bitmap '%s' has a gap in the chain above %s", bd->target,
                                                name, l->path);
                        return *ret_reason ? 1 : -ENOMEM;
                }
                if (b->inconsistent)
                        what = "is inconsistent (a writer died with the image open)";
                else if (!b->persistent)
                        what = "is not persistent";
                else if (!b->recording)
                        what = "is disabled";
                if (what) {
                        *ret_reason = strprintf("disk %s: bitmap '%s' in %s %s", bd->target, name, l->path, what);
                        return *ret_reason ? 1 : -ENOMEM;
                }
                depth++;
        }
        *ret_depth = depth;
        return 0;
}

int bitmap_checkpoint_problems(const Checkpoint *c, const BitmapInventory *inv, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;

        for (size_t i = 0; i < c->def->n_disks; i++) {
                const CheckpointDisk *cd = c->def->disks + i;
                const BitmapDisk *bd;
                char *reason = NULL;
                size_t depth;
                int r;

                if (cd->type != CHECKPOINT_TYPE_BITMAP)
                        continue;
                bd = bitmap_inventory_disk(inv, cd->name);
                if (!bd)
                        reason = strprintf("disk %s: the domain has no such disk now", cd->name);
                else {
                        r = bitmap_disk_check(bd, cd->bitmap ?: c->def->name, &depth, &reason);
                        if (r < 0)
                                return r;
                }
                if (reason && strv_push(&l, reason) < 0) {
                        free(reason);
                        return -ENOMEM;
                }
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* ---- the refresh of Problems and Size ---- */

typedef struct RefreshWaiter {
        BitmapsRefreshFunc done;
        void *userdata;
        struct RefreshWaiter *next;
} RefreshWaiter;

/* Checkpoints are named, not pointed to: one may be deleted meanwhile. */
typedef struct SizeProbe {
        char *checkpoint;
        size_t disk; /* in its definition */
        char *node, *name;
        bool own; /* the checkpoint's own bitmap (in the top layer only): read, not added nor removed */
} SizeProbe;

typedef struct BitmapsState {
        Domain *domain;
        sd_event_source *defer;
        bool running;
        char **measure_next, **measure; /* Sizes asked for the next refresh; what this one measures */
        RefreshWaiter *waiting, *current;
        char **changed;
        SizeProbe *probes;
        size_t n_probes;
        uint64_t changes_before; /* qmp_changes() before the probes were added */
        struct ArmedCopy *armed;
} BitmapsState;

static int refresh_start(sd_event_source *s, void *userdata);

static int refresh_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        return refresh_start(s, userdata);
}

static BitmapsState *bitmaps_state(Domain *d) {
        if (!d->bitmaps) {
                d->bitmaps = new0(BitmapsState, 1);
                if (d->bitmaps)
                        d->bitmaps->domain = d;
        }
        return d->bitmaps;
}

ArmedCopy **bitmaps_armed_list(Domain *d) {
        BitmapsState *st = bitmaps_state(d);
        return st ? &st->armed : NULL;
}

static void probes_free(BitmapsState *st) {
        for (size_t i = 0; i < st->n_probes; i++) {
                free(st->probes[i].checkpoint);
                free(st->probes[i].node);
                free(st->probes[i].name);
        }
        free(st->probes);
        st->probes = NULL;
        st->n_probes = 0;
}

static bool strv_equal(char *const *a, char *const *b) {
        size_t i;

        for (i = 0; a && b && a[i] && b[i]; i++)
                if (!streq(a[i], b[i]))
                        return false;
        return (!a || !a[i]) && (!b || !b[i]);
}

static void note_changed(BitmapsState *st, Checkpoint *c) {
        if (!strv_contains((const char *const *) st->changed, checkpoint_name(c)) &&
            strv_extend(&st->changed, checkpoint_name(c)) < 0)
                log_oom();
}

static void refresh_end(BitmapsState *st) {
        Domain *d = st->domain;
        RefreshWaiter *w = TAKE_PTR(st->current);

        probes_free(st);
        st->measure = strv_free(st->measure);
        if (st->changed) {
                _cleanup_free_ Checkpoint **l = new0(Checkpoint *, strv_length(st->changed));
                size_t n = 0;

                for (char **s = st->changed; l && *s; s++)
                        if ((l[n] = checkpoint_tree_find(&d->checkpoints, *s)))
                                n++;
                if (n > 0)
                        manager_notify_checkpoints_changed(d->manager, d, NULL, l, n);
        }
        st->changed = strv_free(st->changed);
        st->running = false;
        while (w) {
                RefreshWaiter *next = w->next;
                if (w->done)
                        w->done(d, w->userdata);
                free(w);
                w = next;
        }
        if (st->waiting && !st->defer)
                (void) sd_event_add_defer(d->manager->event, &st->defer, refresh_start, st);
        manager_busy_unref(d->manager);
        domain_unref(d);
}

static void on_probes_removed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                              void *userdata) {
        BitmapsState *st = userdata;

        /* Added and removed: the remembered inventory holds again. */
        if (error < 0)
                bitmap_tops_forget(st->domain);
        else
                (void) bitmap_tops_own(st->domain, st->changes_before, 2);
        refresh_end(st);
}

static void probes_remove(BitmapsState *st) {
        _cleanup_free_ QmpBitmapAction *a = new0(QmpBitmapAction, st->n_probes);
        size_t n = 0;

        if (!a || !st->domain->qmp)
                return refresh_end(st);
        for (size_t i = 0; i < st->n_probes; i++)
                if (!st->probes[i].own)
                        a[n++] = (QmpBitmapAction) { .type = QMP_BITMAP_REMOVE, .node = st->probes[i].node,
                                                     .name = st->probes[i].name };
        if (n == 0 || qmp_cmd_transaction_bitmaps(st->domain->qmp, a, n, on_probes_removed, st) < 0)
                refresh_end(st);
}

static void on_probes_counted(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                              void *userdata) {
        BitmapsState *st = userdata;

        if (error >= 0) {
                for (Checkpoint *c = st->domain->checkpoints.first; c; c = c->next) {
                        if (!strv_contains((const char *const *) st->measure, checkpoint_name(c)))
                                continue;
                        c->size = 0;
                        c->has_size = false;
                        for (size_t i = 0; i < c->def->n_disks; i++)
                                c->def->disks[i].has_size = false;
                }
                /* Only the probes' counts are looked up: nothing of the
                 * reply (every bitmap of every node) is copied. */
                for (size_t i = 0; i < st->n_probes; i++) {
                        Checkpoint *c = checkpoint_tree_find(&st->domain->checkpoints, st->probes[i].checkpoint);
                        uint64_t count;

                        if (!c || st->probes[i].disk >= c->def->n_disks ||
                            qmp_named_nodes_bitmap_count(result, st->probes[i].node, st->probes[i].name, &count) < 0)
                                continue;
                        c->size += count;
                        c->has_size = true;
                        c->def->disks[st->probes[i].disk].size = count;
                        c->def->disks[st->probes[i].disk].has_size = true;
                }
        }
        probes_remove(st);
}

static void on_probes_added(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                            void *userdata) {
        BitmapsState *st = userdata;

        if (error < 0) {
                log_warning("Domain '%s': cannot measure the checkpoints' sizes: %s", st->domain->def->name,
                            strna(desc));
                /* Refused whole, so nothing changed; but a refusal is also
                 * what a remembered inventory gone wrong would earn: the next
                 * reader lists again (docs/decisions.md). */
                bitmap_tops_forget(st->domain);
                probes_free(st);
                return refresh_end(st);
        }
        if (qmp_cmd_query_named_block_nodes(qmp, on_probes_counted, st) < 0)
                probes_remove(st);
}

/* The temporary bitmaps: per usable checkpoint and disk, one on the top
 * node merged from the checkpoint's bitmap in every layer that holds it;
 * none where only the top holds it (no snapshot since): its own count is
 * the union then. */
static int probes_plan(BitmapsState *st, const BitmapInventory *inv, QmpBitmapAction **ret_a, size_t *ret_n,
                       QmpBitmapSource **ret_sources) {
        size_t n_src = 0, n_a = 0, max = 0;
        QmpBitmapSource *src;
        QmpBitmapAction *a;

        for (size_t i = 0; i < inv->n_disks; i++)
                max += inv->disks[i].n_layers;
        max *= st->domain->checkpoints.n;
        src = new0(QmpBitmapSource, max);
        a = new0(QmpBitmapAction, 2 * st->domain->checkpoints.n * (inv->n_disks ?: 1));
        st->probes = new0(SizeProbe, st->domain->checkpoints.n * (inv->n_disks ?: 1));
        if (!src || !a || !st->probes)
                goto oom;
        for (Checkpoint *c = st->domain->checkpoints.first; c; c = c->next) {
                if (c->problems || !strv_contains((const char *const *) st->measure, checkpoint_name(c)))
                        continue;
                for (size_t i = 0; i < c->def->n_disks; i++) {
                        const CheckpointDisk *cd = c->def->disks + i;
                        const char *bitmap = cd->bitmap ?: c->def->name;
                        const BitmapDisk *bd = bitmap_inventory_disk(inv, cd->name);
                        _cleanup_free_ char *reason = NULL;
                        SizeProbe *p = st->probes + st->n_probes;
                        size_t depth = 0, first = n_src;

                        if (cd->type != CHECKPOINT_TYPE_BITMAP || !bd || !bd->layers[0].node ||
                            bitmap_disk_check(bd, bitmap, &depth, &reason) != 0)
                                continue;
                        *p = (SizeProbe) { .checkpoint = strdup(checkpoint_name(c)), .disk = i,
                                           .node = strdup(bd->layers[0].node), .own = depth == 1,
                                           .name = depth == 1 ? strdup(bitmap)
                                                              : strprintf(BITMAPS_SIZE_PREFIX "%" PRIu64, c->seq) };
                        st->n_probes++;
                        if (!p->checkpoint || !p->node || !p->name)
                                goto oom;
                        if (p->own)
                                continue;
                        for (size_t j = 0; j < depth; j++)
                                src[n_src++] = (QmpBitmapSource) { .node = bd->layers[j].node, .name = bitmap };
                        a[n_a++] = (QmpBitmapAction) { .type = QMP_BITMAP_ADD, .node = p->node, .name = p->name,
                                                       .disabled = true,
                                                       .granularity = bitmap_layer_find(bd->layers, bitmap)->granularity };
                        a[n_a++] = (QmpBitmapAction) { .type = QMP_BITMAP_MERGE, .node = p->node, .name = p->name,
                                                       .sources = src + first, .n_sources = depth };
                }
        }
        *ret_a = a;
        *ret_n = n_a;
        *ret_sources = src;
        return 0;
oom:
        free(src);
        free(a);
        return -ENOMEM;
}

/* Leftovers of a measurement an earlier qsnapd did not finish. */
static void remove_leftovers(Domain *d, const BitmapInventory *inv) {
        for (size_t i = 0; i < inv->n_disks; i++)
                for (size_t j = 0; j < inv->disks[i].n_layers; j++) {
                        const BitmapLayer *l = inv->disks[i].layers + j;
                        for (size_t k = 0; l->node && k < l->n_bitmaps; k++)
                                if (strncmp(l->bitmaps[k].name, BITMAPS_SIZE_PREFIX, strlen(BITMAPS_SIZE_PREFIX)) == 0) {
                                        QmpBitmapAction a = { .type = QMP_BITMAP_REMOVE, .node = l->node,
                                                              .name = l->bitmaps[k].name };
                                        (void) qmp_cmd_transaction_bitmaps(d->qmp, &a, 1, NULL, NULL);
                                }
                }
}

/* Shut off, per disk: the union of the bitmap over its first `depth`
 * layers, read from the files (image_read_dirty_bitmap()), in bytes: set
 * chunks × granularity (what QEMU's count says), at the finest granularity
 * among the layers. Each file is opened through the path gate, as every
 * other read of a domain's image: a layer swapped for a link, or one
 * outside the domain's folders, is refused (*ret_message), never read. */
static int union_size_offline(Domain *d, const BitmapDisk *bd, const char *bitmap, size_t depth, uint64_t *ret,
                              char **ret_message) {
        _cleanup_free_ uint8_t *all = NULL;
        uint64_t g0 = 0, n0 = 0, count = 0;

        for (size_t j = 0; j < depth; j++) {
                const BitmapEntry *e = bitmap_layer_find(bd->layers + j, bitmap);
                if (e && e->granularity > 0 && (g0 == 0 || e->granularity < g0))
                        g0 = e->granularity;
        }
        for (size_t j = 0; j < depth; j++) {
                _cleanup_free_ uint8_t *bits = NULL;
                _cleanup_close_ int fd = -EBADF;
                uint64_t g = 0, n = 0;
                int r;

                r = gate_open_image(d, bd->layers[j].path, "The image", &fd, ret_message);
                if (r < 0)
                        return r;
                r = image_read_dirty_bitmap(fd, bitmap, &g, &n, &bits);
                if (r < 0)
                        return r;
                if (r == 0)
                        continue;
                if (g0 == 0 || g < g0)
                        g0 = g; /* (the inventory and the file agree unless someone wrote meanwhile) */
                if (!all) {
                        n0 = n * (g / g0);
                        all = calloc(1, (n0 + 7) / 8 + 1);
                        if (!all)
                                return -ENOMEM;
                }
                if (g == g0) {
                        /* the usual case: the same chunks, byte by byte */
                        for (uint64_t i = 0; i < ((n < n0 ? n : n0) + 7) / 8; i++)
                                all[i] |= bits[i];
                        continue;
                }
                for (uint64_t i = 0; i < n; i++) {
                        if (!(bits[i / 8] & (1U << (i % 8))))
                                continue;
                        for (uint64_t k = i * (g / g0); k < (i + 1) * (g / g0) && k < n0; k++)
                                all[k / 8] |= (uint8_t) (1U << (k % 8));
                }
        }
        for (uint64_t i = 0; all && i + 8 <= (n0 + 7) / 8; i += 8) {
                uint64_t w;
                memcpy(&w, all + i, 8);
                count += (uint64_t) __builtin_popcountll(w);
        }
        for (uint64_t i = ((n0 + 7) / 8) & ~7ULL; all && i < (n0 + 7) / 8; i++)
                count += (uint64_t) __builtin_popcount(all[i]);
        *ret = count * g0;
        return 0;
}

/* Shut off nothing writes: the Size of each checkpoint asked for, from the
 * images' own bitmaps (qemu-img info has no counts). */
static void measure_offline(BitmapsState *st, const BitmapInventory *inv) {
        for (Checkpoint *c = st->domain->checkpoints.first; c; c = c->next) {
                if (!strv_contains((const char *const *) st->measure, checkpoint_name(c)))
                        continue;
                c->size = 0;
                c->has_size = false;
                for (size_t i = 0; i < c->def->n_disks; i++) {
                        CheckpointDisk *cd = c->def->disks + i;
                        const char *bitmap = cd->bitmap ?: c->def->name;
                        const BitmapDisk *bd = bitmap_inventory_disk(inv, cd->name);
                        _cleanup_free_ char *reason = NULL;
                        size_t depth = 0;
                        uint64_t bytes = 0;
                        int r;

                        cd->has_size = false;
                        if (c->problems || cd->type != CHECKPOINT_TYPE_BITMAP || !bd ||
                            bitmap_disk_check(bd, bitmap, &depth, &reason) != 0)
                                continue;
                        r = union_size_offline(st->domain, bd, bitmap, depth, &bytes, &reason);
                        if (r < 0) {
                                log_warning("Domain '%s': cannot read bitmap '%s' of disk %s: %s",
                                            st->domain->def->name, bitmap, cd->name, reason ?: qsnap_strerror(r));
                                continue;
                        }
                        cd->size = bytes;
                        cd->has_size = true;
                        c->size += bytes;
                        c->has_size = true;
                }
        }
}

/* Problems from inv, then (live) the Sizes asked for. inv may be the
 * remembered one (borrowed): nothing frees it before this returns, but
 * once remove_leftovers() sent a command it is no longer valid (its
 * qmp_changes() moved; the probes plan from it all the same: a leftover
 * gone changes nothing they use). */
static void refresh_with(BitmapsState *st, const BitmapInventory *inv) {
        _cleanup_free_ QmpBitmapAction *a = NULL;
        _cleanup_free_ QmpBitmapSource *src = NULL;
        Domain *d = st->domain;
        size_t n_a = 0;

        for (Checkpoint *c = d->checkpoints.first; c; c = c->next) {
                char **problems = NULL;

                if (bitmap_checkpoint_problems(c, inv, &problems) < 0)
                        continue;
                if (!strv_equal(problems, c->problems))
                        note_changed(st, c);
                strv_free(c->problems);
                c->problems = problems;
                /* Unusable: no size (not the last one measured — shut off,
                 * before the bitmap went). */
                if (c->problems) {
                        c->size = 0;
                        c->has_size = false;
                        for (size_t i = 0; i < c->def->n_disks; i++)
                                c->def->disks[i].has_size = false;
                }
        }
        if (!inv->live && st->measure)
                measure_offline(st, inv);
        if (!inv->live || !d->qmp || !st->measure)
                return refresh_end(st);
        /* (Size of the others stays as last measured.) */
        remove_leftovers(d, inv);
        if (probes_plan(st, inv, &a, &n_a, &src) < 0 || st->n_probes == 0) {
                probes_free(st);
                return refresh_end(st);
        }
        if (n_a == 0) { /* every count is a checkpoint's own: one listing */
                if (qmp_cmd_query_named_block_nodes(d->qmp, on_probes_counted, st) < 0) {
                        probes_free(st);
                        refresh_end(st);
                }
                return;
        }
        st->changes_before = qmp_changes(d->qmp);
        if (qmp_cmd_transaction_bitmaps(d->qmp, a, n_a, on_probes_added, st) < 0) {
                probes_free(st);
                refresh_end(st);
        }
}

static void on_refresh_inventory(Domain *d, int error, const char *message, BitmapInventory *inventory,
                                 void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = inventory;
        BitmapsState *st = userdata;

        if (error < 0) {
                log_warning("Domain '%s': cannot check the checkpoints' bitmaps: %s", d->def->name, strna(message));
                return refresh_end(st);
        }
        refresh_with(st, inv);
}

static int refresh_start(sd_event_source *s, void *userdata) {
        BitmapsState *st = userdata;
        Domain *d = st->domain;
        const BitmapInventory *known;

        st->defer = sd_event_source_unref(st->defer);
        if (st->running)
                return 0; /* refresh_end() schedules us again */
        /* While QEMU starts, stops or is being attached to, neither QMP
         * nor the files (open in QEMU: "in-use") tell the truth: later. */
        if (d->op || d->attaching) {
                (void) sd_event_add_time_relative(d->manager->event, &st->defer, CLOCK_MONOTONIC, 200 * 1000, 0,
                                                  refresh_retry, st);
                return 0;
        }
        st->running = true;
        strv_free(st->measure);
        st->measure = TAKE_PTR(st->measure_next);
        st->current = TAKE_PTR(st->waiting);
        domain_ref(d);
        manager_busy_ref(d->manager);
        /* Nothing changed since the last listing but what qsnapd did and
         * accounted for: that one, as it is now (no listing). */
        known = d->qmp && domain_is_active(d) ? bitmap_inventory_remembered(d) : NULL;
        if (known)
                refresh_with(st, known);
        else if (bitmap_inventory_get(d, on_refresh_inventory, st) < 0)
                refresh_end(st);
        return 0;
}

int bitmaps_measure(Domain *d, const char *name, BitmapsRefreshFunc done, void *userdata) {
        BitmapsState *st = bitmaps_state(d);

        if (!st)
                return -ENOMEM;
        if (!strv_contains((const char *const *) st->measure_next, name) && strv_extend(&st->measure_next, name) < 0)
                return -ENOMEM;
        return bitmaps_refresh(d, done, userdata);
}

int bitmaps_refresh(Domain *d, BitmapsRefreshFunc done, void *userdata) {
        BitmapsState *st = bitmaps_state(d);
        RefreshWaiter *w;
        int r;

        if (!st)
                return -ENOMEM;
        w = new0(RefreshWaiter, 1);
        if (!w)
                return -ENOMEM;
        *w = (RefreshWaiter) { .done = done, .userdata = userdata, .next = st->waiting };
        st->waiting = w;
        if (st->running || st->defer)
                return 0;
        r = sd_event_add_defer(d->manager->event, &st->defer, refresh_start, st);
        if (r < 0) {
                st->waiting = w->next;
                free(w);
                return r;
        }
        return 0;
}

void bitmaps_domain_done(Domain *d) {
        BitmapsState *st = d->bitmaps;

        bitmap_tops_forget(d);
        if (!st)
                return;
        /* A running refresh holds a reference: we are not here then. */
        sd_event_source_unref(st->defer);
        for (RefreshWaiter *w = st->waiting, *next; w; w = next) {
                next = w->next;
                free(w);
        }
        strv_free(st->changed);
        strv_free(st->measure);
        strv_free(st->measure_next);
        probes_free(st);
        while (st->armed)
                bitmaps_job_event(d, st->armed->job_id, false, true);
        free(st);
        d->bitmaps = NULL;
}

/* ---- what follows the chain ---- */

int bitmap_disk_followers(const BitmapDisk *bd, char ***ret_names, uint64_t **ret_granularities, size_t *ret_n) {
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ uint64_t *gran = NULL;
        size_t n = 0;

        if (bd->n_layers > 0)
                gran = new0(uint64_t, bd->layers[0].n_bitmaps);
        for (size_t k = 0; gran && k < bd->layers[0].n_bitmaps; k++) {
                const BitmapEntry *b = bd->layers[0].bitmaps + k;
                _cleanup_free_ char *reason = NULL;
                size_t depth;
                int r;

                if (strncmp(b->name, BITMAPS_SIZE_PREFIX, strlen(BITMAPS_SIZE_PREFIX)) == 0)
                        continue;
                r = bitmap_disk_check(bd, b->name, &depth, &reason);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                if (strv_extend(&names, b->name) < 0)
                        return -ENOMEM;
                gran[n++] = b->granularity;
        }
        *ret_names = TAKE_PTR(names);
        *ret_granularities = TAKE_PTR(gran);
        *ret_n = n;
        return 0;
}

/* ---- bitmap actions of the block jobs ---- */

void bitmap_actions_done(BitmapActions *ba) {
        free(ba->actions);
        free(ba->sources);
        strv_free(ba->strings);
        *ba = (BitmapActions) {};
}

static const char *keep(BitmapActions *ba, const char *s) {
        if (!s || strv_extend(&ba->strings, s) < 0)
                return NULL;
        return ba->strings[strv_length(ba->strings) - 1];
}

static int actions_init(BitmapActions *ba, const BitmapDisk *bd) {
        size_t max = bd->n_layers > 0 ? bd->layers[0].n_bitmaps : 0;

        *ba = (BitmapActions) {};
        ba->actions = new0(QmpBitmapAction, 2 * max);
        ba->max_sources = max * (bd->n_layers ?: 1);
        ba->sources = new0(QmpBitmapSource, ba->max_sources);
        return ba->actions && ba->sources ? 0 : -ENOMEM;
}

static int add_action(BitmapActions *ba, QmpBitmapActionType type, const char *node, const char *name,
                      uint64_t granularity, const QmpBitmapSource *sources, size_t n_sources) {
        QmpBitmapAction *a = ba->actions + ba->n;

        *a = (QmpBitmapAction) { .type = type, .node = keep(ba, node), .name = keep(ba, name),
                                 .persistent = type == QMP_BITMAP_ADD, .granularity = granularity,
                                 .sources = sources, .n_sources = n_sources };
        if (!a->node || !a->name)
                return -ENOMEM;
        ba->n++;
        return 0;
}

/* A merge into `name` on `node` from the layers [from, to) of bd that hold
 * a copy of it. */
static int add_merge(BitmapActions *ba, const BitmapDisk *bd, const char *node, const char *name, size_t from,
                     size_t to) {
        QmpBitmapSource *first = ba->sources + ba->n_sources;
        size_t n = 0;

        for (size_t j = from; j < to && j < bd->n_layers; j++) {
                if (!bd->layers[j].node || !bitmap_layer_find(bd->layers + j, name) ||
                    ba->n_sources >= ba->max_sources)
                        continue;
                ba->sources[ba->n_sources++] = (QmpBitmapSource) { .node = keep(ba, bd->layers[j].node),
                                                                   .name = keep(ba, name) };
                n++;
        }
        return n == 0 ? 0 : add_action(ba, QMP_BITMAP_MERGE, node, name, 0, first, n);
}

/* The usable bitmaps of the chain bd seen from layer `from` down. */
static int followers_from(const BitmapDisk *bd, size_t from, char ***ret_names, uint64_t **ret_gran, size_t *ret_n) {
        BitmapDisk view = *bd;

        if (from >= bd->n_layers) {
                *ret_names = NULL;
                *ret_gran = NULL;
                *ret_n = 0;
                return 0;
        }
        view.layers = bd->layers + from;
        view.n_layers = bd->n_layers - from;
        return bitmap_disk_followers(&view, ret_names, ret_gran, ret_n);
}

size_t bitmap_disk_layer_index(const BitmapDisk *bd, const char *path, size_t fallback) {
        for (size_t j = 0; path && j < bd->n_layers; j++)
                if (streq(bd->layers[j].path, path))
                        return j;
        return fallback;
}

int bitmap_actions_stream(const BitmapDisk *bd, size_t top_index, size_t base_index, BitmapActions *ret) {
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ uint64_t *gran = NULL;
        size_t n = 0;
        int r;

        r = actions_init(ret, bd);
        if (r >= 0)
                r = followers_from(bd, top_index, &names, &gran, &n);
        for (size_t k = 0; r >= 0 && top_index < bd->n_layers && k < n; k++)
                r = add_merge(ret, bd, bd->layers[top_index].node, names[k], top_index + 1, base_index);
        if (r < 0)
                bitmap_actions_done(ret);
        return r;
}

int bitmap_actions_commit(const BitmapDisk *bd, size_t top_index, size_t base_index, BitmapActions *ret) {
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ uint64_t *gran = NULL;
        const BitmapLayer *base = base_index < bd->n_layers ? bd->layers + base_index : NULL;
        size_t n = 0;
        int r;

        r = actions_init(ret, bd);
        if (r >= 0)
                r = followers_from(bd, top_index, &names, &gran, &n);
        for (size_t k = 0; r >= 0 && base && base->node && base->qcow2 && k < n; k++) {
                if (!bitmap_layer_find(base, names[k]))
                        r = add_action(ret, QMP_BITMAP_ADD, base->node, names[k], gran[k], NULL, 0);
                if (r >= 0)
                        r = add_merge(ret, bd, base->node, names[k], top_index, base_index);
        }
        if (r < 0)
                bitmap_actions_done(ret);
        return r;
}

int bitmap_actions_copy(const BitmapDisk *bd, bool shallow, const char *target_node, BitmapActions *ret) {
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ uint64_t *gran = NULL;
        size_t n = 0;
        int r;

        r = actions_init(ret, bd);
        if (r >= 0)
                r = followers_from(bd, 0, &names, &gran, &n);
        for (size_t k = 0; r >= 0 && k < n; k++) {
                r = add_action(ret, QMP_BITMAP_ADD, target_node, names[k], gran[k], NULL, 0);
                if (r >= 0)
                        r = add_merge(ret, bd, target_node, names[k], 0, shallow ? 1 : bd->n_layers);
        }
        if (r < 0)
                bitmap_actions_done(ret);
        return r;
}
