/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The operation kinds a manager knows and start-up recovery through them:
 * which journals a domain has under <state>/ops, and in what order their
 * handlers run. What a journal holds and what its recovery does stays
 * with each operation.
 */
#include "core/manager.h"
#include "core/operation.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/util.h"

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
