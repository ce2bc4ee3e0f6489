/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bus face of the daemon: the Bus context (connection, manager,
 * polkit registry) and the Manager object at /org/example/Snapshot1 with
 * the ObjectManager every GUI starts from.
 */
#pragma once

#include <systemd/sd-bus.h>

#include "bus/bus-measure.h"
#include "bus/bus-polkit.h"
#include "core/manager.h"

#define QSNAP_BUS_NAME "org.example.Snapshot1"
#define QSNAP_ROOT_PATH "/org/example/Snapshot1"
#define QSNAP_MANAGER_INTERFACE "org.example.Snapshot1.Manager"

/* A call waiting for a job's end (Abort without ASYNC, as libvirt). */
typedef struct JobWaiter {
        void *job;               /* Job *, compared only */
        sd_bus_message *message;
        struct JobWaiter *next;
} JobWaiter;

typedef struct Bus {
        sd_bus *bus;
        JobWaiter *job_waiters;
        Manager *manager;
        PolkitRegistry polkit;
        MeasureRegistry measure; /* calls waiting for qemu-img measure */
        bool use_scopes; /* move each QEMU into a transient systemd scope */
} Bus;

/* Registers every object and the observer; does not take the name. */
int bus_manager_register(Bus *b);

/* The Bus behind a domain: the manager's observer context. */
static inline Bus *bus_from_manager(Manager *m) {
        return m->observer_userdata;
}

/* Pending polkit checks count as work in flight for the idle timeout. */
static inline bool bus_is_busy(Bus *b) {
        return b->polkit.n_pending > 0 || manager_is_busy(b->manager);
}
