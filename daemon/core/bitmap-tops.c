/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The inventory the last live listing saw, kept while nothing but
 * qsnapd's own accounted bitmap edits could have changed it, and what is
 * built from it (see bitmap-tops.h).
 */
#include "core/bitmap-tops.h"
#include "core/disk.h"
#include "qemu/qmp.h"
#include "util/util.h"

struct TopCache {
        BitmapInventory *inv;    /* every count 0 */
        Qmp *qmp;                /* valid for this QEMU, */
        uint64_t epoch, changes; /* as long as these stay */
};

static void tops_free(TopCache *t) {
        if (!t)
                return;
        bitmap_inventory_free(t->inv);
        free(t);
}

void bitmap_tops_forget(Domain *d) {
        tops_free(d->bitmap_tops);
        d->bitmap_tops = NULL;
}

static bool tops_valid(Domain *d, const TopCache *t, uint64_t changes) {
        return t && d->qmp && domain_is_active(d) && t->qmp == d->qmp && t->epoch == d->graph_epoch &&
               t->changes == changes;
}

/* Every disk's chain (its files, top first) still the one remembered. */
static bool tops_same_chains(Domain *d, const BitmapInventory *inv) {
        const DomainDef *def = domain_current_def(d);
        size_t n = 0;

        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDisk *disk = def->disks + i;
                const BitmapDisk *bd;
                const ImageChain *chain;

                if (!disk->source)
                        continue;
                n++;
                bd = bitmap_inventory_disk(inv, disk->target);
                chain = domain_disk_chain(d, disk->source, disk->format);
                if (!bd || (chain ? chain->n_layers : 1) != bd->n_layers)
                        return false;
                if (!chain) { /* unreadable: the active file alone, as bitmap_inventory_skeleton() */
                        if (!streq(disk->source, bd->layers[0].path))
                                return false;
                        continue;
                }
                for (size_t j = 0; j < chain->n_layers; j++)
                        if (!streq(chain->layers[j].path, bd->layers[j].path))
                                return false;
        }
        return n == inv->n_disks;
}

void bitmap_tops_remember(Domain *d, Qmp *qmp, uint64_t epoch, uint64_t changes, const BitmapInventory *inv) {
        TopCache *t;

        bitmap_tops_forget(d);
        if (!qmp || qmp != d->qmp || epoch != d->graph_epoch || changes != qmp_changes(d->qmp) || !inv->live ||
            inv->tops_only)
                return; /* the graph moved since the question: stale already */
        t = new0(TopCache, 1);
        if (!t || bitmap_inventory_copy(inv, &t->inv) < 0) {
                free(t);
                return (void) log_oom();
        }
        t->qmp = qmp;
        t->epoch = epoch;
        t->changes = changes;
        d->bitmap_tops = t;
}

const BitmapInventory *bitmap_inventory_remembered(Domain *d) {
        TopCache *t = d->bitmap_tops;

        if (!tops_valid(d, t, qmp_changes(d->qmp)))
                return NULL;
        if (!tops_same_chains(d, t->inv)) {
                bitmap_tops_forget(d);
                return NULL;
        }
        return t->inv;
}

BitmapInventory *bitmap_tops_own(Domain *d, uint64_t changes_before, uint64_t n) {
        TopCache *t = d->bitmap_tops;

        if (!tops_valid(d, t, changes_before) || qmp_changes(d->qmp) != changes_before + n) {
                bitmap_tops_forget(d);
                return NULL;
        }
        t->changes = changes_before + n;
        return t->inv;
}

void bitmap_tops_added(Domain *d, uint64_t changes_before, const char *name, char *const *targets) {
        BitmapInventory *inv = bitmap_tops_own(d, changes_before, 1);
        /* What a persistent add of QEMU's default granularity makes (0: the
         * node's default, what a measurement's add then asks for too). */
        const BitmapEntry e = { .name = (char *) name, .recording = true, .persistent = true };

        for (char *const *s = targets; inv && s && *s; s++) {
                BitmapDisk *bd = (BitmapDisk *) bitmap_inventory_disk(inv, *s);
                if (!bd || bd->n_layers == 0 || bitmap_layer_add(bd->layers, &e) < 0)
                        return bitmap_tops_forget(d);
        }
}

int bitmap_inventory_tops(Domain *d, const char *name, BitmapInventoryFunc done, void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = NULL;
        const BitmapInventory *known = bitmap_inventory_remembered(d);

        if (!known || bitmap_inventory_skeleton(d, true, &inv) < 0)
                return bitmap_inventory_get(d, done, userdata);
        inv->tops_only = true;
        for (size_t i = 0; i < inv->n_disks; i++) {
                BitmapLayer *top = inv->disks[i].layers;
                const BitmapDisk *kd = bitmap_inventory_disk(known, inv->disks[i].target);
                const BitmapLayer *kl = kd && kd->n_layers > 0 ? kd->layers : NULL;
                const BitmapEntry *e;

                if (!kl || !streq(kl->path, top->path) || (kl->node && !(top->node = strdup(kl->node))))
                        return bitmap_inventory_get(d, done, userdata);
                e = bitmap_layer_find(kl, name);
                if (!e)
                        continue;
                /* What the name check looks at; the rest of it is not handed on. */
                top->bitmaps = new0(BitmapEntry, 1);
                if (!top->bitmaps || !(top->bitmaps[0].name = strdup(name)))
                        return bitmap_inventory_get(d, done, userdata);
                top->bitmaps[0].persistent = top->bitmaps[0].recording = true;
                top->n_bitmaps = 1;
        }
        done(d, 0, NULL, TAKE_PTR(inv), userdata);
        return 0;
}
