/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The registry of operation kinds. An operation that journals itself in
 * <state>/ops/<uuid>.<kind> (store/op-journal.c) registers its kind with
 * the handler that finishes or rolls back an interrupted one; start-up
 * recovery looks for each registered kind's journal of a domain and
 * replays it through this table, so the core never includes an operation.
 * main.c registers the kinds; registration order is recovery order.
 * No D-Bus in here.
 */
#pragma once

#include <stdbool.h>

#include "core/domain.h"

typedef struct OperationKind {
        const char *name;  /* the journal kind, e.g. "snapshot-create" */
        /* Called when the domain's journal of this kind is on disk: 1 when
         * the recovery runs and `done` follows, exactly once (possibly from
         * inside this call); 0 when there was nothing to do; < 0 when it
         * cannot run (logged). Neither of the latter calls `done`. `done`
         * may be NULL: nobody waits. */
        int (*recover)(Domain *d, DomainDoneFunc done, void *userdata);
        /* The recovery waits on its own, from the event loop, until the
         * domain is free (its adopted jobs ended): nobody waits for it and
         * `recover` always gets done = NULL. */
        bool deferred;
} OperationKind;

/* -QSNAP_E_ALREADY_EXISTS when a kind of that name is registered already. */
int operation_kind_register(Manager *m, const OperationKind *kind);
void operation_kinds_free(Manager *m);

/* QEMU is attached and its jobs adopted: the deferred kinds are armed
 * first, then the others recover one after the other in registration
 * order, each after the previous one's `done`. `done` (may be NULL) is
 * called once they all finished, possibly from inside this call. */
void operation_recover_attached(Domain *d, DomainDoneFunc done, void *userdata);

/* No QEMU to ask: every kind, in registration order, nobody waiting. */
void operation_recover_offline(Domain *d);
