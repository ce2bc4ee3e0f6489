/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The dirty bitmaps behind checkpoints (docs/checkpoints.md §1, §6): the
 * inventory of every layer of every disk (live from QEMU's
 * query-named-block-nodes, shut off from `qemu-img info`), the rule that
 * makes a checkpoint usable on a disk (its bitmap in the top image, then
 * in consecutive layers downward, each persistent, recording and
 * consistent) and, per domain, the refresh of each checkpoint's Problems
 * and Size after anything that may have changed them (a state or chain
 * change, a checkpoint operation). Shared by the checkpoint operations
 * and the bus; no D-Bus in here.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/domain.h"

/* The temporary bitmap a size measurement adds to a top node. */
#define BITMAPS_SIZE_PREFIX "qsnap-size-"

typedef struct BitmapEntry {
        char *name;
        bool recording, persistent, inconsistent;
        uint64_t count, granularity; /* count: live only */
} BitmapEntry;

typedef struct BitmapLayer {
        char *path;
        bool qcow2;
        /* live only: */
        char *node;      /* the format node */
        char *file_node; /* its protocol child */
        bool read_only;
        BitmapEntry *bitmaps;
        size_t n_bitmaps;
} BitmapLayer;

typedef struct BitmapDisk {
        char *target;
        BitmapLayer *layers; /* the active image first */
        size_t n_layers;
} BitmapDisk;

typedef struct BitmapInventory {
        bool live;
        BitmapDisk *disks;
        size_t n_disks;
} BitmapInventory;

BitmapInventory *bitmap_inventory_free(BitmapInventory *inv);
static inline void bitmap_inventory_freep(BitmapInventory **i) {
        if (*i)
                bitmap_inventory_free(*i);
}

/* The images as they are on disk (the domain shut off), qemu-img per
 * qcow2 layer. *ret_message says which image could not be read. */
int bitmap_inventory_offline(Domain *d, BitmapInventory **ret, char **ret_message);

/* From QEMU (the domain running): done gets the inventory (taken) or an
 * error. Returns < 0 when nothing was sent (then done is not called). */
typedef void (*BitmapInventoryFunc)(Domain *d, int error, const char *message, BitmapInventory *inv, void *userdata);
int bitmap_inventory_live(Domain *d, BitmapInventoryFunc done, void *userdata);

/* Live when QEMU runs, else offline; done always called (maybe from
 * inside this call for the offline case). */
int bitmap_inventory_get(Domain *d, BitmapInventoryFunc done, void *userdata);

const BitmapDisk *bitmap_inventory_disk(const BitmapInventory *inv, const char *target);
const BitmapEntry *bitmap_layer_find(const BitmapLayer *l, const char *name);

/* 0 when bitmap `name` is usable on the disk, with *ret_depth the number
 * of layers from the top that hold it; 1 when not, with *ret_reason (one
 * sentence naming the image and what is wrong); -ENOMEM. */
int bitmap_disk_check(const BitmapDisk *bd, const char *name, size_t *ret_depth, char **ret_reason);

/* The problems of checkpoint c against inv (NULL strv when usable). */
int bitmap_checkpoint_problems(const Checkpoint *c, const BitmapInventory *inv, char ***ret);

/* Re-reads the images and sets every checkpoint's problems (and, live,
 * size) soon; checkpoints whose problems changed are reported with
 * manager_notify_checkpoints_changed(). Coalesced; cheap to call often.
 * done (may be NULL) is called once the refresh that includes this
 * request ended. */
typedef void (*BitmapsRefreshFunc)(Domain *d, void *userdata);
int bitmaps_refresh(Domain *d, BitmapsRefreshFunc done, void *userdata);

void bitmaps_domain_done(Domain *d);
