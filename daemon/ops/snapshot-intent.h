/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateSnapshot's intent journal and the recovery of an interrupted
 * snapshot at start-up. No D-Bus in here.
 */
#pragma once

#include <stdbool.h>

#include "core/domain.h"

typedef struct SnapshotIntentDisk {
        const char *target;
        const char *below;   /* the active file before the snapshot */
        const char *overlay; /* the planned new active file */
        const char *node;    /* live: the planned overlay node */
        bool created;        /* qsnapd creates the file (not REUSE_EXT) */
} SnapshotIntentDisk;

typedef struct SnapshotIntent {
        const char *snapshot_xml; /* the metadata to record */
        bool metadata;            /* not NO_METADATA */
        bool resume;              /* the guest is stopped for the memory save */
        const char *memory_file;
        const SnapshotIntentDisk *disks;
        size_t n_disks;
} SnapshotIntent;

int snapshot_intent_write(Domain *d, const SnapshotIntent *intent);
void snapshot_intent_remove(Domain *d);

/* When an intent is on disk: finishes or rolls back the snapshot it
 * describes (asking QEMU, if attached, whether the disks were switched)
 * and returns 1; `done` follows. 0 when there is nothing to recover. */
int domain_recover_snapshot(Domain *d, DomainDoneFunc done, void *userdata);
