/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the last live inventory (core/bitmaps.h) saw — every disk's chain,
 * each layer's nodes and bitmaps with their flags — remembered for as
 * long as nothing but qsnapd's own, accounted bitmap edits could have
 * changed it, so that a new checkpoint, a Delete, a Problems refresh and
 * a Size measurement need not list every bitmap of every node again
 * (docs/performance.md, "Checkpoints"). No D-Bus in here.
 */
#pragma once

#include <stdint.h>

#include "core/bitmaps.h"
#include "core/domain.h"

typedef struct TopCache TopCache;

/* Valid while nothing could have changed what it holds since the listing:
 * the same QEMU, no QMP command but query-* sent (qmp_changes()) other
 * than those whose effect the sender applied (bitmap_tops_own()), no
 * chain or node change qsnapd made or learned of (Domain.graph_epoch:
 * blockdev-add/del, a monitor command, QEMU gone) and every disk's chain
 * still the files remembered. Bitmap names and flags change only by
 * commands (a guest write changes counts, which it does not keep: every
 * count is 0; a granularity is 0 where QEMU's default for the node was
 * asked for). The remembered inventory when valid now (borrowed: use it
 * before sending anything), else NULL. */
const BitmapInventory *bitmap_inventory_remembered(Domain *d);

/* What adding bitmap `name` to every top image needs, without the cost
 * of listing every bitmap of every node (query-named-block-nodes grows
 * with the number of checkpoints: ~95 bytes per bitmap and layer): while
 * the remembered inventory is valid, done gets (from inside this call)
 * an inventory with tops_only set: the disks and chains as usual, the top
 * layer's node, and among its bitmaps only `name` when the top holds it
 * (nothing else: no counts, no lower layers). Otherwise this is
 * bitmap_inventory_get(). */
int bitmap_inventory_tops(Domain *d, const char *name, BitmapInventoryFunc done, void *userdata);
/* The caller sent n commands since qmp_changes() was changes_before and
 * knows what they did to the bitmaps: when the remembered inventory was
 * valid then and nothing else was sent meanwhile, it is valid now and
 * returned for the caller to apply that right away (bitmap_layer_add(),
 * bitmap_layer_drop()); else it is forgotten and NULL returned. */
BitmapInventory *bitmap_tops_own(Domain *d, uint64_t changes_before, uint64_t n);
/* The caller added bitmap `name` to the top of each disk of targets with
 * the one command it sent when qmp_changes() was changes_before (above). */
void bitmap_tops_added(Domain *d, uint64_t changes_before, const char *name, char *const *targets);
/* Called by the live inventory (core/bitmaps.c) with what it found, the
 * QEMU it asked and Domain.graph_epoch and qmp_changes() when it asked. */
void bitmap_tops_remember(Domain *d, Qmp *qmp, uint64_t epoch, uint64_t changes, const BitmapInventory *inv);
/* Forgotten (the domain goes). */
void bitmap_tops_forget(Domain *d);
