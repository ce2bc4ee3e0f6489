/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Revert's own parts, shared by its three files and nothing else: the
 * plan (plan.c: every check, touching nothing; CheckRevert is the plan
 * alone), its run (run.c: the operation and its steps) and the recovery of
 * an interrupted revert (recovery.c). No D-Bus in here.
 */
#pragma once

#include <stdbool.h>

#include "core/domain.h"
#include "core/operation.h"
#include "ops/snapshot-revert.h"
#include "qemu/job.h"

#define INTENT_KIND "snapshot-revert"

typedef struct RevertDisk {
        char *target;
        char *file;          /* internal: the image holding the tag; external: the frozen file */
        DiskFormat format;   /* of file */
        char *overlay;       /* external: the new overlay */
        char *node;          /* internal, live: the disk's top node */
} RevertDisk;

struct RevertPlan {
        Domain *domain;      /* borrowed: the operation holds the reference */
        Operation *op;       /* once it runs */
        char *name;          /* the snapshot's */
        int64_t snapshot_time; /* its creationTime (0: unknown), for the checkpoints an external revert keeps */
        uint64_t flags;
        bool external;
        bool memory;         /* a memory state to load */
        bool stop_first;     /* QEMU goes first (restart or shut off) */
        bool live_load;      /* internal memory: load into the QEMU that runs now */
        DomainState after;
        DomainDef *new_def;  /* the definition afterwards */
        DomainDef *old_def;  /* the stored one before, for a rollback */
        RevertDisk *disks;
        size_t n_disks;
        char *memory_file;
        char *nvram_copy;    /* UEFI, external: the snapshot's copy of the variable store */
        bool nvram_internal; /* UEFI, internal: the (qcow2) store holds the snapshot's tag */
        char *nvram_old;     /* the store's bytes before the revert wrote it, for the undo */
        size_t nvram_old_size;

        char *job_id;
        Job *load_job;       /* the snapshot-load job, ours (owned) */
        unsigned pending;
        bool loaded;         /* the snapshot-load job succeeded (journaled) */
        int error;
        char *message;
        RevertDoneFunc done;
        void *userdata;
        sd_event_source *timer;
};

/* qemu-img snapshot -a <tag> <file>: the offline internal revert (run.c)
 * and its repetition at recovery (recovery.c; it is idempotent). */
int revert_qemu_img_apply(Domain *d, const char *tag, const char *file, bool own, char **ret_output);

/* The recovery handler of the kind (recovery.c). */
int snapshot_revert_recover(Domain *d, DomainDoneFunc done, void *userdata);
