/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateCheckpoint (docs/checkpoints.md §2.1, §2.2, §6, §7): the plan
 * (parsed, aligned with the domain's disks and checked before anything is
 * touched), one persistent dirty bitmap per disk — for all disks in one
 * QMP transaction while running, `qemu-img bitmap --add` per top image
 * when shut off — and the metadata; REDEFINE records metadata only (with
 * REDEFINE_VALIDATE after checking the bitmaps are usable). Its journal
 * <state>/ops/<uuid>.checkpoint-create and the recovery of an interrupted
 * one. No D-Bus in here.
 */
#pragma once

#include "core/checkpoint.h"
#include "core/domain.h"
#include "core/operation.h"

typedef struct CheckpointPlan CheckpointPlan;

typedef void (*CheckpointDoneFunc)(Domain *d, int error, const char *message, Checkpoint *c, void *userdata);

/* Parses and checks a request against the domain as it is now; touches
 * nothing. Errors with *ret_message: InvalidXML, InvalidArgument,
 * AlreadyExists (name), NoSuchDisk, NoSuchCheckpoint (REDEFINE's parent),
 * Unsupported (QUIESCE, a raw disk, a bitmap not named as the checkpoint),
 * Busy. */
int checkpoint_plan_new(Domain *d, const char *xml, uint64_t flags, CheckpointPlan **ret, char **ret_message);
CheckpointPlan *checkpoint_plan_free(CheckpointPlan *p);
static inline void checkpoint_plan_freep(CheckpointPlan **p) {
        if (*p)
                checkpoint_plan_free(*p);
}

/* Carries the plan out (takes it): < 0 at once, or `done` later, exactly
 * once, with the checkpoint on success. Later errors: AlreadyExists (a
 * bitmap of that name is in an image already), Unsupported (a top image
 * that is no qcow2), OperationInvalid (REDEFINE_VALIDATE found the bitmaps
 * unusable), QemuFailed (QEMU's or qemu-img's text). */
int checkpoint_create(Domain *d, CheckpointPlan *plan, CheckpointDoneFunc done, void *userdata, char **ret_message);

/* Journal kind "checkpoint-create": bitmaps in every planned top image →
 * the metadata is stored; otherwise the bitmaps it added are removed. */
extern const OperationKind checkpoint_create_kind;
