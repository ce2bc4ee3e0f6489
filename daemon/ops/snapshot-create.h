/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Taking snapshots of a domain: the plan (what each disk and the memory
 * get, checked completely before anything is touched), its execution,
 * live over QMP or offline with qemu-img, its intent journal
 * <state>/ops/<uuid>.snapshot-create and the recovery of an interrupted
 * snapshot at start-up. No D-Bus in here.
 */
#pragma once

#include "core/domain.h"
#include "core/operation.h"
#include "core/snapshot.h"

typedef struct SnapshotPlan SnapshotPlan;

typedef void (*SnapshotDoneFunc)(Domain *d, int error, const char *message, Snapshot *s, void *userdata);

/* Parses and checks a CreateSnapshot request against the domain as it is
 * now; touches nothing. Errors (util/error.h), each with *ret_message:
 * InvalidXML, InvalidArgument, AlreadyExists (name), NoSuchDisk,
 * PathNotAllowed, NoSpace, Unsupported, Busy, OperationInvalid. */
int snapshot_plan_new(Domain *d, const char *xml, uint64_t flags, SnapshotPlan **ret, char **ret_message);
SnapshotPlan *snapshot_plan_free(SnapshotPlan *p);
static inline void snapshot_plan_freep(SnapshotPlan **p) {
        if (*p)
                snapshot_plan_free(*p);
}
/* The snapshot's name (the default one when the XML had none). */
const char *snapshot_plan_name(const SnapshotPlan *p);

/* Carries the plan out (takes it). Same return conventions as the
 * domain_* calls: < 0 at once, or `done` later, exactly once. With
 * NO_METADATA `done` gets no Snapshot. */
int snapshot_create(Domain *d, SnapshotPlan *plan, SnapshotDoneFunc done, void *userdata, char **ret_message);

/* Journal kind "snapshot-create": when an intent is on disk, its recovery
 * finishes or rolls back the snapshot it describes (asking QEMU, if
 * attached, whether the disks were switched). */
extern const OperationKind snapshot_create_kind;
