/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The tops a live inventory saw, and the inventory a new checkpoint
 * needs built from them (see bitmap-tops.h).
 */
#include "core/bitmap-tops.h"
#include "qemu/qmp.h"
#include "util/hashmap.h"
#include "util/util.h"

/* Per disk, its top as the last live inventory saw it. */
typedef struct TopLayer {
        char *target, *path;
        char *node;     /* NULL: QEMU showed none */
        Hashmap *names; /* its bitmaps; keys and values: TopCache.strings */
} TopLayer;

struct TopCache {
        TopLayer *layers;
        size_t n;
        char **strings;
        size_t n_strings, max_strings;
        Qmp *qmp;                /* valid for this QEMU, */
        uint64_t epoch, changes; /* as long as these stay */
};

/* What the last live inventory saw of each disk's top, and when. */
static void tops_free(TopCache *t) {
        if (!t)
                return;
        for (size_t i = 0; i < t->n; i++) {
                free(t->layers[i].target);
                free(t->layers[i].path);
                free(t->layers[i].node);
                hashmap_free(t->layers[i].names);
        }
        free(t->layers);
        for (size_t i = 0; i < t->n_strings; i++)
                free(t->strings[i]);
        free(t->strings);
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

static const TopLayer *tops_find(const TopCache *t, const char *target) {
        for (size_t i = 0; i < t->n; i++)
                if (streq(t->layers[i].target, target))
                        return t->layers + i;
        return NULL;
}

/* Layer l's names take name (a copy, owned by t). */
static int tops_add_name(TopCache *t, TopLayer *l, const char *name) {
        char *s;
        int r;

        if (hashmap_get(l->names, name))
                return 0;
        if (t->n_strings == t->max_strings) {
                size_t max = t->max_strings ? t->max_strings * 2 : 64;
                char **n = reallocarray(t->strings, max, sizeof(char *));
                if (!n)
                        return -ENOMEM;
                t->strings = n;
                t->max_strings = max;
        }
        s = strdup(name);
        if (!s)
                return -ENOMEM;
        t->strings[t->n_strings++] = s;
        r = hashmap_put(l->names, s, s);
        return r == -EEXIST ? 0 : r;
}

void bitmap_tops_remember(Domain *d, Qmp *qmp, uint64_t epoch, uint64_t changes, const BitmapInventory *inv) {
        TopCache *t;
        int r = 0;

        bitmap_tops_forget(d);
        if (!qmp || qmp != d->qmp || epoch != d->graph_epoch || changes != qmp_changes(d->qmp))
                return; /* the graph moved since the question: stale already */
        t = new0(TopCache, 1);
        if (!t || !(t->layers = new0(TopLayer, inv->n_disks ?: 1))) {
                free(t);
                return (void) log_oom();
        }
        *t = (TopCache) { .layers = t->layers, .qmp = qmp, .epoch = epoch, .changes = changes };
        for (size_t i = 0; r >= 0 && i < inv->n_disks; i++) {
                const BitmapDisk *bd = inv->disks + i;
                TopLayer *l = t->layers + t->n;

                if (bd->n_layers == 0)
                        continue;
                t->n++;
                l->target = strdup(bd->target);
                l->path = strdup(bd->layers[0].path);
                l->node = bd->layers[0].node ? strdup(bd->layers[0].node) : NULL; /* none: the full check judges */
                l->names = hashmap_new();
                if (!l->target || !l->path || (bd->layers[0].node && !l->node) || !l->names)
                        r = -ENOMEM;
                for (size_t k = 0; r >= 0 && k < bd->layers[0].n_bitmaps; k++)
                        r = tops_add_name(t, l, bd->layers[0].bitmaps[k].name);
        }
        if (r < 0) {
                tops_free(t);
                return (void) log_oom();
        }
        d->bitmap_tops = t;
}

void bitmap_tops_added(Domain *d, uint64_t changes_before, const char *name, char *const *targets) {
        TopCache *t = d->bitmap_tops;

        if (!tops_valid(d, t, changes_before) || qmp_changes(d->qmp) != changes_before + 1)
                return bitmap_tops_forget(d);
        t->changes++;
        for (char *const *s = targets; s && *s; s++) {
                TopLayer *l = (TopLayer *) tops_find(t, *s);
                if (!l || tops_add_name(t, l, name) < 0)
                        return bitmap_tops_forget(d);
        }
}

int bitmap_inventory_tops(Domain *d, const char *name, BitmapInventoryFunc done, void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = NULL;
        TopCache *t = d->bitmap_tops;

        if (!tops_valid(d, t, qmp_changes(d->qmp)) || bitmap_inventory_skeleton(d, true, &inv) < 0)
                return bitmap_inventory_get(d, done, userdata);
        inv->tops_only = true;
        for (size_t i = 0; i < inv->n_disks; i++) {
                BitmapLayer *top = inv->disks[i].layers;
                const TopLayer *tl = tops_find(t, inv->disks[i].target);

                if (!tl || !streq(tl->path, top->path) || (tl->node && !(top->node = strdup(tl->node))))
                        return bitmap_inventory_get(d, done, userdata);
                if (!hashmap_get(tl->names, name))
                        continue;
                /* What the name check looks at; the rest of it is unknown here. */
                top->bitmaps = new0(BitmapEntry, 1);
                if (!top->bitmaps || !(top->bitmaps[0].name = strdup(name)))
                        return bitmap_inventory_get(d, done, userdata);
                top->bitmaps[0].persistent = top->bitmaps[0].recording = true;
                top->n_bitmaps = 1;
        }
        done(d, 0, NULL, TAKE_PTR(inv), userdata);
        return 0;
}
