/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checkpoint.Delete (docs/checkpoints.md §2.3, §7): the checkpoints to
 * remove (the one, its descendants, or both), and per disk and per layer
 * that holds one of their bitmaps, a merge into the nearest surviving
 * ancestor's bitmap in that layer and the removal — read-only layers
 * reopened read-write around one transaction while running, `qemu-img
 * bitmap` per image when shut off. Missing or damaged copies are fine:
 * Delete is how an unusable checkpoint is repaired. METADATA_ONLY forgets
 * the metadata alone. Its journal <state>/ops/<uuid>.checkpoint-delete
 * and the recovery that finishes an interrupted delete. No D-Bus in here.
 */
#pragma once

#include "core/checkpoint.h"
#include "core/domain.h"
#include "core/operation.h"

/* The checks Delete makes before polkit: InvalidArgument (CHILDREN with
 * CHILDREN_ONLY), Busy (an operation on the domain, a job on a disk). */
int checkpoint_delete_check(Checkpoint *c, uint64_t flags, char **ret_message);

/* < 0 at once, or `done` later, exactly once. Later errors: QemuFailed
 * (QEMU's or qemu-img's text; nothing forgotten, Delete again finishes). */
int checkpoint_delete(Domain *d, Checkpoint *c, uint64_t flags, DomainDoneFunc done, void *userdata,
                      char **ret_message);

extern const OperationKind checkpoint_delete_kind;
