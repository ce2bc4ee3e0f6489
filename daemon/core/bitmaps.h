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
#include "qemu/qmp-commands.h"

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
        size_t max_bitmaps; /* allocated (bitmap_layer_add()); 0: n_bitmaps */
        /* name → position when there are many (bitmap_layer_find() for
         * every checkpoint of a refresh would be O(n²) otherwise) */
        struct Hashmap *index;
} BitmapLayer;

typedef struct BitmapDisk {
        char *target;
        BitmapLayer *layers; /* the active image first */
        size_t n_layers;
} BitmapDisk;

typedef struct BitmapInventory {
        bool live;
        /* bitmap_inventory_tops(): the disks, their chains and the top
         * layers' nodes only, no bitmap at all */
        bool tops_only;
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

/* The disks and their chains (files), no bitmaps yet. */
int bitmap_inventory_skeleton(Domain *d, bool live, BitmapInventory **ret);

/* One chain, from the file path (of format) down, read with qemu-img: for
 * an image that is not (yet) a disk's active one. Every file through d's
 * path gate (gate_read_chain(), gate_open_image()): -QSNAP_E_PATH_NOT_ALLOWED
 * with the gate's text for a file outside its folders or a link. */
int bitmap_disk_offline(Domain *d, const char *target, const char *path, DiskFormat format, BitmapDisk *ret,
                        char **ret_message);
void bitmap_disk_done(BitmapDisk *bd);

const BitmapDisk *bitmap_inventory_disk(const BitmapInventory *inv, const char *target);
const BitmapEntry *bitmap_layer_find(const BitmapLayer *l, const char *name);
/* An entry more (its name copied), or one less (the first of that name;
 * the last entry takes its place): for an inventory kept up to date by
 * what qsnapd itself did (core/bitmap-tops.h). */
int bitmap_layer_add(BitmapLayer *l, const BitmapEntry *e);
void bitmap_layer_drop(BitmapLayer *l, const char *name);
/* A deep copy, every count 0 (they were the moment's). */
int bitmap_inventory_copy(const BitmapInventory *inv, BitmapInventory **ret);

/* 0 when bitmap `name` is usable on the disk, with *ret_depth the number
 * of layers from the top that hold it; 1 when not, with *ret_reason (one
 * sentence naming the image and what is wrong); -ENOMEM. */
int bitmap_disk_check(const BitmapDisk *bd, const char *name, size_t *ret_depth, char **ret_reason);

/* The problems of checkpoint c against inv (NULL strv when usable). */
int bitmap_checkpoint_problems(const Checkpoint *c, const BitmapInventory *inv, char ***ret);

/* Re-reads the images (live: the remembered inventory while it holds,
 * core/bitmap-tops.h) and sets every checkpoint's problems (and, live,
 * size) soon; checkpoints whose problems changed are reported with
 * manager_notify_checkpoints_changed(). Coalesced; cheap to call often.
 * done (may be NULL) is called once the refresh that includes this
 * request ended. */
typedef void (*BitmapsRefreshFunc)(Domain *d, void *userdata);
int bitmaps_refresh(Domain *d, BitmapsRefreshFunc done, void *userdata);
/* The same, and (running) a new measurement of the Size of checkpoint
 * `name`: one listing of every node for the checkpoints asked for
 * together (with a transaction before and after it adding and removing
 * temporary bitmaps where a bitmap spans several layers), so only when
 * asked (a read of Size, GetXMLDesc with SIZE), one checkpoint at a time,
 * never all of them after each change. */
int bitmaps_measure(Domain *d, const char *name, BitmapsRefreshFunc done, void *userdata);

void bitmaps_domain_done(Domain *d);

/* The bitmaps an image put on top of this disk (an external snapshot's
 * overlay, a revert's new overlay, a copy's target) must get so that the
 * checkpoints stay usable: every bitmap of the top layer that is usable
 * there (the rule above), other than qsnapd's temporary ones. *ret_names
 * NULL when none. */
int bitmap_disk_followers(const BitmapDisk *bd, char ***ret_names, uint64_t **ret_granularities, size_t *ret_n);

/* The inventory of a query-named-block-nodes reply the caller has already. */
int bitmap_inventory_from_nodes(Domain *d, json_object *result, BitmapInventory **ret);

/* Bitmap actions for the block jobs (docs/checkpoints.md §2.6-§2.8), with
 * their own copies of every name. */
typedef struct BitmapActions {
        QmpBitmapAction *actions;
        size_t n;
        QmpBitmapSource *sources;
        size_t n_sources, max_sources;
        char **strings; /* owned: what actions and sources point to */
} BitmapActions;

void bitmap_actions_done(BitmapActions *ba);
/* Streaming layers top_index+1 … base_index-1 into layer top_index: per
 * bitmap usable there, a merge into it from each streamed layer that
 * holds one. Before block-stream. */
int bitmap_actions_stream(const BitmapDisk *bd, size_t top_index, size_t base_index, BitmapActions *ret);
/* The layer of bd whose file is path; fallback when none. */
size_t bitmap_disk_layer_index(const BitmapDisk *bd, const char *path, size_t fallback);
/* Committing layers top_index … base_index-1 into base_index: per bitmap
 * usable at top_index, an add on the base when it has none, and a merge
 * into it from each committed layer. Right after block-commit started. */
int bitmap_actions_commit(const BitmapDisk *bd, size_t top_index, size_t base_index, BitmapActions *ret);
/* A copy onto target_node: per bitmap usable at the top, an add on the
 * target and a merge from the top (shallow) or every layer. At READY. */
int bitmap_actions_copy(const BitmapDisk *bd, bool shallow, const char *target_node, BitmapActions *ret);

/* A copy job's actions are sent when it is READY (bitmaps_job_event()):
 * journaled before the mirror starts (<run>/<uuid>.copy-bitmaps-<id>,
 * removed with the job's journal), armed once it runs (taken). */
int bitmaps_copy_journal_write(Domain *d, const char *job_id, const BitmapActions *ba);
int bitmaps_copy_arm(Domain *d, const char *job_id, BitmapActions *ba);
/* An adopted copy (a restarted qsnapd): its journaled actions are armed
 * again, or, when it is READY already (qsnapd died between READY and
 * them), sent now one by one, each idempotent (an add that finds the
 * bitmap is fine; merges are unions). */
void bitmaps_copy_adopted(Domain *d, const char *job_id, bool ready);
/* Called by the manager for every job event: READY sends what was armed
 * (before anybody hears of READY, so that a Pivot comes after it), the
 * end forgets it. */
void bitmaps_job_event(Domain *d, const char *job_id, bool ready, bool ended);
/* A copy that ended without a pivot (Abort, failure, QEMU's cancel) or
 * that ended while qsnapd was away: the bitmaps its journal added to
 * target_node and that the node still has (nodes: query-named-block-nodes)
 * are removed, before the node is closed, so that the destination is a
 * plain copy (libvirt adds them only at the pivot). Returns how many
 * removals went out: more than 0 means the copy had reached READY. */
int bitmaps_copy_drop(Domain *d, json_object *nodes, const char *job_id, const char *target_node);
/* A copy QEMU's quit cancelled (a file that stays): QEMU writes the
 * target's bitmaps at its exit, so they are removed from the file with
 * qemu-img once QEMU is gone. The removal is journaled
 * (<run>/<uuid>.copy-unbitmap-<id>: the file and the names the copy's
 * bitmap journal added) before the copy's journal goes;
 * bitmaps_copies_qemu_gone() — called when the domain's QEMU went away, at
 * a copy's end when it is gone already, and at start-up when the domain
 * has no QEMU — does every journaled removal and drops each journal once
 * done (one whose qemu-img failed stays for the next time). */
void bitmaps_copy_drop_after_quit(Domain *d, const char *job_id, const char *target_node, const char *file);
void bitmaps_copies_qemu_gone(Domain *d);
