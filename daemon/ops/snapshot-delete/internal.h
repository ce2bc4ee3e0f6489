/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Delete's own parts, shared by its three files and nothing
 * else: the plan of one victim (plan.c: which actions, renames and files;
 * the checks Delete and CheckDelete share), its run (run.c: the operation,
 * qemu-img steps and QEMU jobs through the job tracker) and the recovery
 * of an interrupted delete (recovery.c). No D-Bus in here.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/domain.h"
#include "core/files.h"
#include "core/operation.h"
#include "ops/snapshot-delete.h"

#define JOURNAL_KIND "snapshot-delete"

#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

typedef enum ActionKind {
        ACTION_COMMAND,       /* argv, offline */
        ACTION_QMP_INTERNAL,  /* snapshot-delete job over QMP */
        ACTION_QMP_COMMIT,    /* block-commit: top_file (NULL: active, with pivot) into base_file */
        ACTION_QMP_STREAM,    /* block-stream into top_file down to base_file (NULL: everything) */
} ActionKind;

typedef struct Action {
        ActionKind kind;
        char **argv;
        char *what;           /* for messages and the log */
        char **targets;       /* QMP: the disks whose active file holds the tag */
        char *target;         /* commit/stream: the disk */
        char *top_file, *base_file;
        char *drop_file;      /* commit/stream: the file that leaves the graph (its node is released) */
        /* "rebase-name" (the header-only rebase after a data-copying one):
         * top_file the overlay, base_file the real backing name it gets,
         * base_format its format. The journal lists them: a crash between
         * the two steps leaves the overlay's header naming the json: spec,
         * which the recovery replaces with base_file. */
        DiskFormat base_format;
} Action;

/* What deleting one snapshot takes. */
typedef struct VictimPlan {
        Action *actions;
        size_t n_actions;
        FileRename *renames;
        size_t n_renames;
        char **unlink;        /* files that go once the metadata is stored, if unreferenced */
        bool merge;           /* an external merge: runs as a job */
        uint64_t bytes;       /* what the merges may need on disk */
        char *space_dir;      /* where they need it */
} VictimPlan;

void delete_victim_plan_done(VictimPlan *vp);
int delete_rename_add(VictimPlan *vp, const char *target, const char *from, const char *to, DiskFormat to_format,
                      bool recorded);
/* Test hook: $QSNAPD_TEST_DELETE_SPEED (bytes/s) throttles the merges. */
uint64_t delete_test_speed(void);

/* The actions, renames and files that deleting s takes, against the disks
 * as they are now (nothing with metadata_only). < 0 with *ret_message:
 * why it cannot be deleted. */
int delete_plan_victim(Domain *d, Snapshot *s, bool metadata_only, VictimPlan *vp, char **ret_message);
/* The snapshots a delete of s with flags takes, leaves first. */
int delete_collect_victims(Snapshot *s, uint64_t flags, Snapshot ***ret, size_t *ret_n);
/* -QSNAP_E_NO_SPACE with *ret_message when dir has less than bytes free. */
int delete_check_space(const char *dir, uint64_t bytes, char **ret_message);

/* The journal: phase "merging" (the data may be anywhere between before
 * and after) or "metadata" (stored; only files are left to remove); the
 * "rebase-name" steps of the plan as "names" ({file, backing, format}). */
int delete_journal_write(Operation *op, const char *snapshot, const char *job_id, const char *phase,
                         const VictimPlan *vp);
void delete_journal_remove(Domain *d);

/* The recovery handler of the kind (recovery.c). */
int snapshot_delete_recover(Domain *d, DomainDoneFunc done, void *userdata);
