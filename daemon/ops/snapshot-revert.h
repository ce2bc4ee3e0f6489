/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Revert and CheckRevert: the plan (every check, touching
 * nothing: CheckRevert is the plan alone), its execution (internal:
 * snapshot-load live or qemu-img snapshot -a offline; external: a new
 * overlay per disk on the snapshot's frozen file, QEMU restarted with
 * incoming migration when there is a memory state), the intent journal
 * <state>/ops/<uuid>.snapshot-revert and the recovery of an interrupted
 * revert at start-up. No D-Bus in here.
 */
#pragma once

#include "core/domain.h"
#include "core/operation.h"
#include "core/snapshot.h"

/* Revert flags, libvirt's values. */
#define SNAPSHOT_REVERT_RUNNING (1ULL << 0)
#define SNAPSHOT_REVERT_PAUSED (1ULL << 1)
#define SNAPSHOT_REVERT_FORCE (1ULL << 2)
#define SNAPSHOT_REVERT_ALL ((1ULL << 3) - 1)

typedef struct RevertPlan RevertPlan;

typedef void (*RevertDoneFunc)(Domain *d, int error, const char *message, void *userdata);

/* Checks a revert of s with flags against the domain as it is now and
 * touches nothing. Errors (util/error.h), each with *ret_message:
 * InvalidArgument (flags), Busy (a lifecycle call, snapshot operation or
 * block job), OperationInvalid (FORCE needed, a file missing or used by
 * another chain, …), Unsupported, PathNotAllowed (an overlay outside the
 * allowed folders). */
int revert_plan_new(Snapshot *s, uint64_t flags, RevertPlan **ret, char **ret_message);
RevertPlan *revert_plan_free(RevertPlan *p);
static inline void revert_plan_freep(RevertPlan **p) {
        if (*p)
                revert_plan_free(*p);
}

/* CheckRevert's note on the checkpoints (docs/checkpoints.md §2.9): the
 * checkpoints usable now that the revert would make unusable for
 * incremental backups, in one sentence naming them and why ("Checkpoints
 * 'c2', 'c3' become unusable: …; take a full backup."), or *ret NULL when
 * it makes none unusable. Internal: every usable checkpoint with a bitmap
 * on a reverted disk (its bitmaps are removed: the revert changes data no
 * bitmap recorded). External: those whose bitmap was not yet in the
 * frozen file's chain (made after the snapshot, or on another branch):
 * the image a checkpoint's recorded <domain> names as the disk's active
 * file is not in that chain (no record: created after the snapshot).
 * Reads image headers only; touches nothing. */
int revert_plan_checkpoint_note(const RevertPlan *p, char **ret);

/* Carries the plan out (takes it): < 0 at once with *ret_message, or
 * `done` later, exactly once, when the domain is in its new state. */
int snapshot_revert(RevertPlan *plan, RevertDoneFunc done, void *userdata, char **ret_message);

/* Journal kind "snapshot-revert": when a revert intent is on disk, its
 * recovery finishes or rolls back the revert it describes. */
extern const OperationKind snapshot_revert_kind;
