/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateSnapshot's own parts, shared by its three files and nothing else:
 * the plan (plan.c: every check, touching nothing), its run (run.c: the
 * operation, live over QMP or offline with qemu-img, the intent journal)
 * and the recovery of an interrupted snapshot (recovery.c). No D-Bus in
 * here.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/domain.h"
#include "core/operation.h"
#include "core/snapshot.h"
#include "ops/snapshot-create.h"

#define INTENT_KIND "snapshot-create"

typedef struct PlanDisk {
        const DomainDisk *disk; /* in the domain's current definition */
        SnapshotLocation location;
        char *overlay;        /* external: the new active file */
        bool reuse;           /* REUSE_EXT: the overlay exists already */
        char *top_node;       /* live: the node the overlay goes on */
        char *node;           /* live: the overlay's node */
} PlanDisk;

struct SnapshotPlan {
        Domain *domain;       /* borrowed: the operation holds the reference */
        Operation *op;        /* once it runs */
        uint64_t flags;
        SnapshotDef *def;     /* the metadata to store */
        PlanDisk *disks;
        size_t n_disks;
        bool live;
        SnapshotLocation memory;
        char *memory_file;
        bool was_running;     /* the guest ran when we started */
        bool stopped;         /* we paused the guest for the memory save */
        bool frozen;          /* QUIESCE: guest-fsfreeze-freeze sent, no thaw yet */
        char *nvram_copy;     /* UEFI, external: the copy of the variable store to keep (core/nvram.h) */
        bool nvram_internal;  /* UEFI, internal: the (qcow2) store goes into the snapshot too */
        char *job_id;
        Job *save_job;        /* internal: the snapshot-save job, ours (owned) */

        SnapshotDoneFunc done;
        void *userdata;
        unsigned pending;     /* QMP replies still to come in the current step */
        uint64_t started_usec, qemu_usec; /* for the log: time in all, and waiting for QEMU */
        uint64_t qmp_sent_usec;
        int error;
        char *message;
        int subscription;
        int64_t migrate_query; /* the query-migrate in flight, 0: none */
        Snapshot *snapshot;   /* the result */
        unsigned cont_retries;
        bool resuming;        /* failed: the guest's cont is out, the caller hears after it */
        sd_event_source *timer;
};

/* The recovery handler of the kind (recovery.c). */
int snapshot_create_recover(Domain *d, DomainDoneFunc done, void *userdata);
