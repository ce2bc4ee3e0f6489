/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One operation object for every call that takes more than one step
 * (machined's Operation): CreateSnapshot, Revert, Delete, the block job
 * starts, the domain's lifecycle calls and the monitor passthrough. Each
 * operation keeps its own plan (what to do); the Operation owns the
 * lifecycle around it:
 *   - a reference on the domain and one on the manager's busy count,
 *     both held until the operation is freed;
 *   - the domain lock of its kind (lifecycle calls: Domain.op; snapshot
 *     operations: Domain.snapshot_busy), taken at operation_new();
 *   - the one reply to the caller: kind->reply is called exactly once,
 *     never from inside the call that began the operation (a finish
 *     there is delivered from the event loop);
 *   - its journal record <state>/ops/<uuid>.<kind> (store/op-journal.c),
 *     written crash-safely before anything is touched and removed at the
 *     end, whatever the outcome;
 *   - crash points named after it: operation_crash_point(o, "intent") is
 *     crash_point("<crash_name>:intent");
 *   - an undo stack, run in reverse when the operation fails.
 * Start-up recovery goes through the registry of kinds below: an
 * operation that journals itself registers its kind with the handler
 * that finishes or rolls back an interrupted one; the core looks for each
 * registered kind's journal and calls its handler, so it never includes
 * an operation. main.c registers the kinds; registration order is
 * recovery order. No D-Bus in here.
 */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>

#include "core/domain.h"
#include "util/util.h"

typedef struct Operation Operation;

/* Which of the domain's locks an operation holds from operation_new()
 * until it is freed (or operation_unlock()). */
typedef enum OperationLock {
        OPERATION_LOCK_NONE,      /* per-disk locks or none (block job starts, monitor passthrough) */
        OPERATION_LOCK_LIFECYCLE, /* Domain.op: Start, Stop, Pause, Resume, attach */
        OPERATION_LOCK_SNAPSHOT,  /* Domain.snapshot_busy: snapshot create, revert, delete */
} OperationLock;

typedef struct OperationKind {
        const char *name;       /* "snapshot-create": for the log, and the journal's kind */
        const char *crash_name; /* crash points are "<crash_name>:<step>" ("create"); NULL: none */
        OperationLock lock;
        /* Frees the operation's plan (may be NULL: the plan is not freed). */
        void (*free_plan)(void *plan);
        /* Tells the caller how the operation ended: called exactly once per
         * operation that was not cancelled or abandoned, from the event
         * loop, with the domain lock released. error 0 or -errno with a
         * message (may be NULL). May be NULL: nobody to tell. */
        void (*reply)(Operation *o, int error, const char *message);

        /* Start-up recovery of a journaled kind (NULL: not journaled).
         * Called when the domain's journal of this kind is on disk: 1 when
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

/* Undoes one step of a failed operation. data is what was pushed with it
 * (usually a part of the plan, which is freed only after the undo ran).
 * < 0: this step cannot be undone now, and the steps below it (pushed
 * before it) stay as they are too, because they are still in use. */
typedef int (*OperationUndoFunc)(Operation *o, void *data);

/* Read-only outside operation.c, except `plan`. */
struct Operation {
        const OperationKind *kind;
        Domain *domain;         /* a reference */
        void *plan;             /* the operation's own, freed with kind->free_plan */

        /* private to operation.c */
        bool starting;          /* inside the call that began it: a reply waits for the loop */
        bool locked, replied, journaled, finished;
        int error;
        char *message;
        struct OperationUndo *undo;
        size_t n_undo;
        void (*start)(Operation *o);
        sd_event_source *defer;
};

/* A new operation of `kind` on d for `plan` (taken: freed with the
 * operation, also when this fails). Takes a reference on d, holds the
 * manager busy and takes the kind's lock, which must be free (the caller
 * checked, with its own message). The caller is "starting" it until
 * operation_started() or operation_start_deferred(): a finish in between
 * is replied from the event loop. */
int operation_new(Domain *d, const OperationKind *kind, void *plan, Operation **ret);

/* How a call begins a long operation: operation_new() for plan (taken,
 * also on failure), *ret (may be NULL; usually the plan's back pointer)
 * set, start(o) armed to run from the event loop, then prepare(o) (may be
 * NULL), what must be done before the call returns (files, a journal).
 * When arming or prepare fails, the operation is cancelled (prepare cleans
 * up its own half-done work first) and the error returned; nobody is
 * replied to. */
int operation_begin(Domain *d, const OperationKind *kind, void *plan, Operation **ret, void (*start)(Operation *o),
                    int (*prepare)(Operation *o, char **ret_message), char **ret_message);

/* The call that began it returns now: replies from here on are direct. */
void operation_started(Operation *o);
/* Runs start(o) from the event loop (the call that began it returns first). */
int operation_start_deferred(Operation *o, void (*start)(Operation *o));

/* The end. On error the undo stack runs in reverse. Then, whatever the
 * outcome: the journal goes (if written), the lock is released, the
 * caller hears (unless operation_reply() told it already) and the
 * operation is freed. Returns nothing: o is gone (or, while starting,
 * about to go). */
void operation_finish(Operation *o, int error, const char *message);
void operation_finishf(Operation *o, int error, const char *fmt, ...) _printf_(3, 4);

/* The caller hears now; the operation goes on (a merge that runs on as a
 * job). At most once; a later finish does not reply again. */
void operation_reply(Operation *o, int error, const char *message);

/* The call that began it fails and says so itself (returns < 0): the undo
 * stack runs, the journal goes, nobody is replied to. */
void operation_cancel(Operation *o);
/* qsnapd leaves it where it is (exit with QEMU running on): nothing is
 * undone, the journal stays for the next qsnapd's recovery, nobody is
 * replied to. */
void operation_abandon(Operation *o);

/* The domain lock of the kind, released early (before a lifecycle call of
 * its own) and taken again; both idempotent. */
void operation_unlock(Operation *o);
void operation_lock(Operation *o);

/* The journal <state>/ops/<uuid>.<kind name>: written whole (crash-safe),
 * again for each new phase; removed by operation_finish(), or earlier. */
int operation_journal_write(Operation *o, json_object *record);
void operation_journal_remove(Operation *o);

/* crash_point("<crash_name>:<step>"). */
void operation_crash_point(Operation *o, const char *step);

/* Pushes an undo step; -ENOMEM (the step was not pushed: the caller has
 * not done it yet, or undoes it itself). */
int operation_undo_push(Operation *o, OperationUndoFunc undo, void *data);
/* The point of no return: what was done stays, whatever follows. */
void operation_undo_clear(Operation *o);

/* ---- the registry of journaled kinds, for start-up recovery ---- */

/* -QSNAP_E_ALREADY_EXISTS when a kind of that name is registered already. */
int operation_kind_register(Manager *m, const OperationKind *kind);

/* Busy's message for a domain: it names the operation that holds it (what
 * the caller waits for), or says "another operation". */
char *operation_busy_message(const Domain *d);
void operation_kinds_free(Manager *m);

/* QEMU is attached and its jobs adopted: the deferred kinds are armed
 * first, then the others recover one after the other in registration
 * order, each after the previous one's `done`. `done` (may be NULL) is
 * called once they all finished, possibly from inside this call. */
void operation_recover_attached(Domain *d, DomainDoneFunc done, void *userdata);

/* No QEMU to ask: every kind, in registration order, nobody waiting. */
void operation_recover_offline(Domain *d);
