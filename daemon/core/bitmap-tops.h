/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What a live inventory (core/bitmaps.h) saw of each disk's top — file,
 * node, bitmap names — remembered for as long as nothing could have
 * changed it, so that a new checkpoint need not list every bitmap of
 * every node again (docs/performance.md, "Checkpoints"). No D-Bus in
 * here.
 */
#pragma once

#include <stdint.h>

#include "core/bitmaps.h"
#include "core/domain.h"

typedef struct TopCache TopCache;

/* What adding bitmap `name` to every top image needs, without the cost
 * of listing every bitmap of every node (query-named-block-nodes grows
 * with the number of checkpoints: ~95 bytes per bitmap and layer). Every
 * live inventory remembers each disk's top file, node and bitmap names;
 * while nothing could have changed them since — the same QEMU, no QMP
 * command but query-* sent (qmp_changes(), bitmap_tops_added() counts
 * the caller's own add), no chain or node change qsnapd made or learned
 * of (Domain.graph_epoch: blockdev-add/del, a monitor command, QEMU gone)
 * and every disk's top file still the one remembered — done gets (from
 * inside this call) an inventory with tops_only set: the disks and chains
 * as usual, the top layer's node, and among its bitmaps only `name` when
 * the top holds it (nothing else: no counts, no lower layers). Otherwise
 * this is bitmap_inventory_get(). */
int bitmap_inventory_tops(Domain *d, const char *name, BitmapInventoryFunc done, void *userdata);
/* The caller added bitmap `name` to the top of each disk of targets with
 * the one command it sent when qmp_changes() was changes_before: the
 * remembered tops take it, or are forgotten when anything else was sent
 * meanwhile. */
void bitmap_tops_added(Domain *d, uint64_t changes_before, const char *name, char *const *targets);
/* Called by the live inventory (core/bitmaps.c) with what it found, the
 * QEMU it asked and Domain.graph_epoch and qmp_changes() when it asked. */
void bitmap_tops_remember(Domain *d, Qmp *qmp, uint64_t epoch, uint64_t changes, const BitmapInventory *inv);
/* Forgotten (the domain goes). */
void bitmap_tops_forget(Domain *d);
