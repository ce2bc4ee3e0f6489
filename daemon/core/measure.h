/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What merging one file's own data elsewhere may take, from `qemu-img
 * measure` run as an asynchronous child (sd-event), never in the event
 * loop: Delete and CheckDelete ask before authorization, for any caller.
 * Results are cached per file as it is (device, inode, size, mtime). A
 * check that meets an unmeasured file counts its allocated size and notes
 * the file; its caller then measures what was noted (measure_start) and
 * runs the check again, which finds the answers cached. No D-Bus here.
 */
#pragma once

#include "core/manager.h"
#include "store/xml-domain.h"

typedef struct MeasureBatch MeasureBatch;
typedef void (*MeasureDoneFunc)(void *userdata);

/* 1 and *ret: measured, the file unchanged since; 0 and *ret the file's
 * allocated size (0 when it cannot be read): not measured, noted. */
int measure_lookup(Manager *m, const char *file, DiskFormat format, uint64_t *ret);

/* Forgets what was noted (before a check), and whether anything was. */
void measure_notes_reset(Manager *m);
bool measure_notes_any(Manager *m);

/* Measures every noted file, one qemu-img at a time, and caches each
 * answer (a failed measure caches the allocated size, so that the check
 * run again asks nothing). 0 when nothing was noted (done is never
 * called); 1 when started: done(userdata) once all ended, never from
 * inside this call. The notes move into the batch. */
int measure_start(Manager *m, MeasureDoneFunc done, void *userdata, MeasureBatch **ret);
/* Stops a batch (its child killed); done is not called. */
MeasureBatch *measure_batch_free(MeasureBatch *b);

/* At manager_free(). */
void measure_state_free(Manager *m);
