/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A paused QEMU for a shut-off domain (docs/checkpoints.md §5): `-machine
 * none -nodefaults -S`, no guest and no devices, every disk's chain as
 * explicit read-only -blockdev nodes named as when the domain runs
 * ("<target>-fmt", "<target>-L<k>"), each image by descriptor, with
 * -sandbox and QEMU's own user like the domain's QEMU. While it runs it is
 * the domain's QEMU for QMP (d->qmp, d->jobs, the node → file map), so an
 * operation runs the same QMP steps as on a running domain; the domain
 * stays shut off (State never changes) and the operation that asked for it
 * holds the domain's lock. It is qsnapd's own child and dies with it
 * (PR_SET_PDEATHSIG): a restarted qsnapd has nothing to adopt, only a
 * journal to roll back. No D-Bus in here.
 */
#pragma once

#include <stdbool.h>

#include "core/domain.h"

/* error 0, or a QSNAP_E_* code / -errno with a message (QEMU's output). */
typedef void (*OfflineQemuFunc)(Domain *d, int error, const char *message, void *userdata);

/* Launches it: `ready` once QMP answers (d->qmp and d->jobs set), or with
 * an error when QEMU exits before (then nothing is left). After ready,
 * `gone` if QEMU exits on its own: d->qmp is NULL again and d->jobs has
 * failed what it tracked. < 0 at once with *ret_message (the domain is
 * running, an image cannot be opened, …); neither callback then. */
int offline_qemu_start(Domain *d, OfflineQemuFunc ready, OfflineQemuFunc gone, void *userdata, char **ret_message);

/* quit, then `done` once it is gone (SIGKILL after 10 s); neither `ready`
 * nor `gone` afterwards. When none runs, done is called right away (from
 * inside this call). */
void offline_qemu_stop(Domain *d, OfflineQemuFunc done, void *userdata);

bool offline_qemu_runs(const Domain *d);

/* The domain goes away: the QEMU is killed and reaped, no callback. */
void offline_qemu_free(Domain *d);
