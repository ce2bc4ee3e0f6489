/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Delete and Snapshot.CheckDelete: which snapshots go (libvirt's
 * CHILDREN, CHILDREN_ONLY, METADATA_ONLY), what happens to their data
 * (internal: snapshot-delete job live, qemu-img snapshot -d offline;
 * external: per disk a forward or backward merge, DESIGN §8), and the
 * metadata after it: children move to the nearest surviving ancestor, the
 * current snapshot to its nearest surviving ancestor, recorded file names
 * follow the merge. The check is one function that both calls run, so
 * Delete refuses with exactly what CheckDelete says. No D-Bus in here.
 */
#pragma once

#include "core/domain.h"
#include "core/operation.h"
#include "core/snapshot.h"
#include "qemu/job.h"

/* Flags, libvirt's values. */
#define SNAPSHOT_DELETE_CHILDREN 1ULL
#define SNAPSHOT_DELETE_METADATA_ONLY 2ULL
#define SNAPSHOT_DELETE_CHILDREN_ONLY 4ULL
#define SNAPSHOT_DELETE_ALL 7ULL

/* The end of Delete: error 0 and job NULL when everything is done, or
 * job set (borrowed) when a merge runs on as that job (it reports its own
 * end; the metadata changes only when it completed). */
typedef void (*SnapshotDeleteFunc)(Domain *d, int error, const char *message, Job *job, void *userdata);

/* The dry run: 0 when Delete would be allowed now, else the error Delete
 * would answer with (util/error.h: Busy, NoSpace, Unsupported,
 * OperationInvalid, InvalidArgument) and *ret_message saying why.
 * *ret_bytes: what the merges need on disk (0 when nothing is merged).
 * Touches nothing. */
int snapshot_delete_check(Snapshot *s, uint64_t flags, uint64_t *ret_bytes, char **ret_message);

/* Runs the same check, then deletes. < 0 at once with *ret_message, or
 * `done` later, exactly once, never from inside this call. */
int snapshot_delete(Domain *d, Snapshot *s, uint64_t flags, SnapshotDeleteFunc done, void *userdata, char **ret_message);

/* Journal kind "snapshot-delete", deferred: at start-up, after the QEMU
 * (if any) was attached and its jobs adopted, its recovery finishes the
 * delete the journal describes (metadata stored: only files left; merge
 * complete: metadata; else the delete runs again, every step being safe
 * to repeat) or, when that is refused, leaves the snapshot in place,
 * deletable again. Logs which. Runs from the event loop (waits for
 * adopted merge jobs). */
extern const OperationKind snapshot_delete_kind;
