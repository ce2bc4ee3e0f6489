/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The operation object (core/operation.h): lock, busy count, the one
 * reply, the journal record, crash points, the undo stack. And the kinds
 * a manager knows, with start-up recovery through them: which journals a
 * domain has under <state>/ops, and in what order their handlers run.
 * What a journal holds and what its recovery does stays with each
 * operation.
 */
#include <stdio.h>

#include "core/manager.h"
#include "core/operation.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/util.h"

typedef struct OperationUndo {
        OperationUndoFunc undo;
        void *data;
} OperationUndo;

void operation_lock(Operation *o) {
        Domain *d = o->domain;

        if (o->locked)
                return;
        switch (o->kind->lock) {
        case OPERATION_LOCK_NONE:
                return;
        case OPERATION_LOCK_LIFECYCLE:
                assert(!d->op);
                d->op = o;
                break;
        case OPERATION_LOCK_SNAPSHOT:
                assert(!d->snapshot_busy);
                d->snapshot_busy = true;
                d->snapshot_busy_kind = o->kind->name;
                break;
        }
        o->locked = true;
}

void operation_unlock(Operation *o) {
        Domain *d = o->domain;

        if (!o->locked)
                return;
        switch (o->kind->lock) {
        case OPERATION_LOCK_NONE:
                break;
        case OPERATION_LOCK_LIFECYCLE:
                if (d->op == o)
                        d->op = NULL;
                break;
        case OPERATION_LOCK_SNAPSHOT:
                d->snapshot_busy = false;
                d->snapshot_busy_kind = NULL;
                break;
        }
        o->locked = false;
}

int operation_new(Domain *d, const OperationKind *kind, void *plan, Operation **ret) {
        Operation *o;

        assert(d && kind);
        o = new0(Operation, 1);
        if (!o) {
                if (plan && kind->free_plan)
                        kind->free_plan(plan);
                return -ENOMEM;
        }
        *o = (Operation) { .kind = kind, .domain = domain_ref(d), .plan = plan, .starting = true };
        manager_busy_ref(d->manager);
        operation_lock(o);
        *ret = o;
        return 0;
}

static void operation_free(Operation *o) {
        Domain *d = o->domain;

        operation_unlock(o);
        if (o->plan && o->kind->free_plan)
                o->kind->free_plan(o->plan);
        free(o->undo);
        free(o->message);
        sd_event_source_disable_unref(o->defer);
        free(o);
        manager_busy_unref(d->manager);
        domain_unref(d);
}

static void operation_run_undo(Operation *o) {
        while (o->n_undo > 0) {
                OperationUndo *u = o->undo + --o->n_undo;

                if (u->undo(o, u->data) < 0) {
                        log_debug("Domain '%s': %s: a step cannot be undone; the ones before it stay too.",
                                  o->domain->def->name, o->kind->name);
                        break;
                }
        }
        operation_undo_clear(o);
}

/* Lock released, caller told, operation gone. */
static void operation_deliver(Operation *o) {
        operation_unlock(o);
        if (!o->replied) {
                o->replied = true;
                if (o->kind->reply)
                        o->kind->reply(o, o->error, o->message);
        }
        operation_free(o);
}

static int on_deliver(sd_event_source *s, void *userdata) {
        operation_deliver(userdata);
        return 0;
}

void operation_finish(Operation *o, int error, const char *message) {
        int r;

        assert(!o->finished);
        o->finished = true;
        if (error < 0) {
                log_debug("Domain '%s': %s failed: %s", o->domain->def->name, o->kind->name, strna(message));
                operation_run_undo(o);
        }
        operation_undo_clear(o);
        operation_journal_remove(o);
        o->error = error;
        if (message && free_and_strdup(&o->message, message) < 0)
                log_oom();
        if (!o->starting)
                return operation_deliver(o);

        /* Never from inside the call that began it: the caller is not ready. */
        o->defer = sd_event_source_disable_unref(o->defer);
        r = sd_event_add_defer(o->domain->manager->event, &o->defer, on_deliver, o);
        if (r < 0) {
                log_error_errno(r, "Failed to schedule the reply: %m");
                operation_deliver(o);
        }
}

void operation_finishf(Operation *o, int error, const char *fmt, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&message, fmt, ap) < 0)
                message = NULL;
        va_end(ap);
        operation_finish(o, error, message);
}

void operation_reply(Operation *o, int error, const char *message) {
        if (o->replied)
                return;
        o->replied = true;
        if (o->kind->reply)
                o->kind->reply(o, error, message);
}

void operation_cancel(Operation *o) {
        assert(!o->finished);
        o->replied = true;
        operation_run_undo(o);
        operation_journal_remove(o);
        operation_free(o);
}

void operation_abandon(Operation *o) {
        assert(!o->finished);
        log_debug("Domain '%s': %s left as it is; the next qsnapd recovers it.", o->domain->def->name, o->kind->name);
        operation_undo_clear(o);
        o->journaled = false; /* it stays */
        operation_unlock(o);
        operation_reply(o, -QSNAP_E_OPERATION_INVALID, "qsnapd stopped before the operation ended; the next qsnapd finishes or rolls "
                        "it back.");
        operation_free(o);
}

static void operation_run_start(Operation *o) {
        void (*start)(Operation *o) = o->start;

        o->defer = sd_event_source_disable_unref(o->defer);
        o->start = NULL;
        start(o);
}

static int on_start(sd_event_source *s, void *userdata) {
        operation_run_start(userdata);
        return 0;
}

void operation_started(Operation *o) {
        o->starting = false;
}

int operation_start_deferred(Operation *o, void (*start)(Operation *o)) {
        int r;

        assert(!o->defer && !o->finished);
        r = sd_event_add_defer(o->domain->manager->event, &o->defer, on_start, o);
        if (r < 0)
                return r;
        o->start = start;
        o->starting = false;
        return 0;
}

int operation_begin(Domain *d, const OperationKind *kind, void *plan, Operation **ret, void (*start)(Operation *o),
                    int (*prepare)(Operation *o, char **ret_message), char **ret_message) {
        Operation *o;
        int r;

        r = operation_new(d, kind, plan, &o);
        if (r < 0)
                return r;
        if (ret)
                *ret = o;
        /* Armed first: start() runs from the loop, after prepare() anyway,
         * and prepare() need not undo its work when arming fails. */
        r = operation_start_deferred(o, start);
        if (r >= 0 && prepare)
                r = prepare(o, ret_message);
        if (r < 0) {
                operation_cancel(o);
                return r;
        }
        return 0;
}

int operation_journal_write(Operation *o, json_object *record) {
        Domain *d = o->domain;
        int r;

        log_debug("Domain '%s': writing the journal of %s.", d->def->name, o->kind->name);
        r = op_journal_write(d->manager->config.state_dir, d->def->uuid, o->kind->name, record);
        if (r < 0)
                return log_error_errno(r, "Domain '%s': cannot write the journal of %s: %m", d->def->name, o->kind->name);
        log_debug("Domain '%s': the journal of %s is written.", d->def->name, o->kind->name);
        o->journaled = true;
        return 0;
}

void operation_journal_remove(Operation *o) {
        Domain *d = o->domain;

        if (!o->journaled)
                return;
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, o->kind->name);
        log_debug("Domain '%s': the journal of %s is removed.", d->def->name, o->kind->name);
        o->journaled = false;
}

void operation_crash_point(Operation *o, const char *step) {
        _cleanup_free_ char *name = NULL;

        if (!o->kind->crash_name)
                return;
        name = strprintf("%s:%s", o->kind->crash_name, step);
        /* crash points: - (each operation_crash_point() call names its own) */
        if (name)
                crash_point(name);
}

int operation_undo_push(Operation *o, OperationUndoFunc undo, void *data) {
        OperationUndo *l;

        l = reallocarray(o->undo, o->n_undo + 1, sizeof(*l));
        if (!l)
                return log_oom();
        o->undo = l;
        o->undo[o->n_undo++] = (OperationUndo) { .undo = undo, .data = data };
        return 0;
}

void operation_undo_clear(Operation *o) {
        o->undo = mfree(o->undo);
        o->n_undo = 0;
}

/* ---- the registry ---- */

int operation_kind_register(Manager *m, const OperationKind *kind) {
        const OperationKind **l;

        assert(kind && kind->name && kind->recover);
        for (size_t i = 0; i < m->n_operation_kinds; i++)
                if (streq(m->operation_kinds[i]->name, kind->name))
                        return -QSNAP_E_ALREADY_EXISTS;
        l = reallocarray(m->operation_kinds, m->n_operation_kinds + 1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        m->operation_kinds = l;
        m->operation_kinds[m->n_operation_kinds++] = kind;
        return 0;
}

void operation_kinds_free(Manager *m) {
        m->operation_kinds = mfree(m->operation_kinds);
        m->n_operation_kinds = 0;
}

static bool journal_exists(Domain *d, const OperationKind *kind) {
        return op_journal_exists(d->manager->config.state_dir, d->def->uuid, kind->name);
}

void operation_recover_offline(Domain *d) {
        Manager *m = d->manager;

        for (size_t i = 0; i < m->n_operation_kinds; i++)
                if (journal_exists(d, m->operation_kinds[i]))
                        (void) m->operation_kinds[i]->recover(d, NULL, NULL);
}

typedef struct RecoveryChain {
        Domain *domain;
        size_t next;  /* the kind to look at next */
        DomainDoneFunc done;
        void *userdata;
} RecoveryChain;

static void recovery_chain_next(RecoveryChain *c);

static void on_kind_recovered(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        recovery_chain_next(userdata);
}

static void recovery_chain_next(RecoveryChain *c) {
        Domain *d = c->domain;
        Manager *m = d->manager;
        DomainDoneFunc done;
        void *userdata;

        while (c->next < m->n_operation_kinds) {
                const OperationKind *kind = m->operation_kinds[c->next++];

                if (kind->deferred || !journal_exists(d, kind))
                        continue;
                /* A `done` from inside recover() has moved the chain on already. */
                if (kind->recover(d, on_kind_recovered, c) > 0)
                        return;
        }
        done = c->done;
        userdata = c->userdata;
        free(c);
        if (done)
                done(d, 0, NULL, NULL, userdata);
        domain_unref(d);
}

void operation_recover_attached(Domain *d, DomainDoneFunc done, void *userdata) {
        Manager *m = d->manager;
        RecoveryChain *c;

        for (size_t i = 0; i < m->n_operation_kinds; i++)
                if (m->operation_kinds[i]->deferred && journal_exists(d, m->operation_kinds[i]))
                        (void) m->operation_kinds[i]->recover(d, NULL, NULL);
        c = new0(RecoveryChain, 1);
        if (!c) {
                log_oom();
                if (done)
                        done(d, 0, NULL, NULL, userdata);
                return;
        }
        *c = (RecoveryChain) { .domain = domain_ref(d), .done = done, .userdata = userdata };
        recovery_chain_next(c);
}

char *operation_busy_message(const Domain *d) {
        const char *kind = d->op ? d->op->kind->name : d->snapshot_busy ? d->snapshot_busy_kind : NULL;

        if (kind)
                return strprintf("Domain '%s' is busy (%s in progress); try again when it has ended.", d->def->name,
                                 kind);
        return strprintf("Domain '%s' is busy with another operation; try again when it has ended.", d->def->name);
}
