/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The manager: configuration, the set of domains, their persistent
 * definitions under <state>/domains/<uuid>.xml, and the bookkeeping of
 * in-flight work that keeps the daemon from exiting on idle. The bus layer
 * registers a DomainObserver to hear about changes; no D-Bus in here.
 */
#pragma once

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "core/domain.h"

typedef struct DomainObserver {
        void (*domain_added)(Domain *d, void *userdata);
        void (*domain_removed)(Domain *d, void *userdata);
        void (*domain_changed)(Domain *d, DomainChange what, void *userdata);
        /* A managed QEMU was launched (pid known); the bus layer moves it
         * into a systemd scope of its own when systemd runs the show. */
        void (*domain_launched)(Domain *d, pid_t pid, void *userdata);
        /* s is new; previous_current is the current snapshot the observer
         * heard of before (s may be current now, or not). */
        void (*snapshot_added)(Domain *d, Snapshot *s, Snapshot *previous_current, void *userdata);
        /* The current snapshot moved (a revert): from previous (NULL: none)
         * to d->snapshots.current. After domain_changed() with
         * DOMAIN_CHANGE_CURRENT_SNAPSHOT, only when it really moved. */
        void (*current_snapshot_changed)(Domain *d, Snapshot *previous, void *userdata);
        /* Before the snapshots of a domain are forgotten (Undefine). */
        void (*snapshots_removed)(Domain *d, void *userdata);
        void (*job_event)(Domain *d, Job *j, JobEvent e, void *userdata);
        /* Snapshots were deleted (already gone from the tree): their names;
         * the survivors whose Parent or Children changed; the current
         * snapshot before. */
        void (*snapshots_deleted)(Domain *d, char *const *names, Snapshot *const *changed, size_t n_changed,
                                  Snapshot *previous_current, void *userdata);
        /* c is new (or redefined); previous_current: the current checkpoint before. */
        void (*checkpoint_added)(Domain *d, Checkpoint *c, Checkpoint *previous_current, void *userdata);
        /* Checkpoints were removed (names, already gone; may be NULL) and
         * the survivors `changed` have a new Parent, Children, IsCurrent
         * or Problems; previous_current: the current one before. */
        void (*checkpoints_changed)(Domain *d, char *const *removed, Checkpoint *const *changed, size_t n_changed,
                                    Checkpoint *previous_current, void *userdata);
        /* Before the checkpoints of a domain are forgotten (Undefine). */
        void (*checkpoints_removed)(Domain *d, void *userdata);
} DomainObserver;

typedef struct ManagerConfig {
        char *state_dir;
        char *runtime_dir;
        char *qemu_binary;            /* when a domain names no <emulator> */
        char *qemu_user;              /* QEMU runs as this user, sandboxed; NULL: as qsnapd */
        uint32_t qemu_uid_base;       /* with qemu_user: each QEMU its own uid from */
        uint32_t qemu_uid_count;      /* [base, base + count) (0: all as qemu_user) */
        uint64_t graceful_timeout_usec; /* Stop(GRACEFUL): powerdown, then quit after this */
        uint64_t start_timeout_usec;  /* QEMU must greet us within this */
        uint64_t agent_timeout_usec;  /* the guest agent must answer within this (QUIESCE) */
        char **image_roots;           /* folders below which images may be created */
        uint64_t metadata_read_cap;   /* bytes; a larger metadata file is an error */
        bool net_taps;                /* qsnapd makes bridged interfaces' taps (core/domain-net.h);
                                       * false: QEMU's bridge helper does */
        char *bridge_conf;            /* the bridges allowed for them (bridge.conf); NULL: the default */
} ManagerConfig;

typedef struct Manager {
        sd_event *event;
        ManagerConfig config;

        Domain *domains; /* singly linked, definition order */
        size_t n_domains;

        const DomainObserver *observer;
        void *observer_userdata;

        unsigned n_busy;       /* calls, jobs and checks in flight */
        unsigned n_attaching;  /* monitors still being reconnected at start-up */

        /* core/operation.c: what recovers which journal, in order */
        const struct OperationKind **operation_kinds;
        size_t n_operation_kinds;

        /* core/measure.c: qemu-img measure answers and the current notes */
        struct MeasureState *measure;
} Manager;

int manager_new(sd_event *event, const ManagerConfig *config, Manager **ret);
Manager *manager_free(Manager *m);
static inline void manager_freep(Manager **m) {
        if (*m)
                manager_free(*m);
}

void manager_set_observer(Manager *m, const DomainObserver *o, void *userdata);

/* Reads every stored definition and reconnects to every live QEMU;
 * returns once all of them know their State (runs the event loop). */
int manager_load(Manager *m);

/* Parses and stores a definition; an existing name is updated. On error
 * *ret_message says what was wrong (-QSNAP_E_INVALID_XML: bad XML,
 * -QSNAP_E_ALREADY_EXISTS: UUID clash). ret_created tells a new domain from
 * an update. A new domain whose QEMU runs elsewhere is attached to: then 1
 * is returned and attached() is called (from the loop) once the attach is
 * over, with State final and the domain free for calls; 0 otherwise. */
int manager_define_domain(Manager *m, const char *xml, DomainDoneFunc attached, void *userdata, Domain **ret,
                          bool *ret_created, char **ret_message);
/* With snapshots, only when drop_snapshots says their metadata goes too
 * (-QSNAP_E_HAS_SNAPSHOTS otherwise). */
int manager_undefine_domain(Manager *m, Domain *d, bool drop_snapshots, bool drop_checkpoints, char **ret_message);

Domain *manager_find_domain(Manager *m, const char *name);

/* Whether def reaches beyond one domain's images, so that defining it (or
 * recording it with a snapshot) needs the host-admin tier rather than
 * manage-domains (docs/security.md): a monitor socket, an emulator other
 * than the configured one, QEMU arguments, or a disk source that is not a
 * regular file (or none yet) in a folder below an --image-root= (none
 * configured: every source needs host-admin). approved, the definition the
 * domain has now (may be NULL), grandfathers its own monitor socket,
 * emulator and disk folders. Returns 1 with *ret_why saying which, 0 when
 * manage-domains suffices. */
int manager_def_needs_host_admin(Manager *m, const DomainDef *def, const DomainDef *approved, char **ret_why);

/* Writes def to <state>/domains/<uuid>.xml, crash-safely; logs a failure. */
int manager_store_def(Manager *m, const DomainDef *def);

/* Pending-work counter for the idle timeout. */
void manager_busy_ref(Manager *m);
void manager_busy_unref(Manager *m);
static inline bool manager_is_busy(Manager *m) {
        return m->n_busy > 0;
}

/* Observer fan-out. The core remembers which current snapshot it reported
 * last (SnapshotTree.reported_current), so that the observer hears what
 * changed, not just that something did. */
void manager_notify_changed(Manager *m, Domain *d, DomainChange what);
void manager_notify_launched(Manager *m, Domain *d, pid_t pid);
void manager_notify_snapshot_added(Manager *m, Domain *d, Snapshot *s);
void manager_notify_snapshots_deleted(Manager *m, Domain *d, char *const *names, Snapshot *const *changed,
                                      size_t n_changed, Snapshot *previous_current);
void manager_notify_job(Manager *m, Domain *d, Job *j, JobEvent e);
/* checked: the caller just read the images' bitmaps and added c's own (a
 * CreateCheckpoint or a backup's checkpoint, not a REDEFINE or a recovery):
 * the other checkpoints' Problems cannot have changed, so no refresh. */
void manager_notify_checkpoint_added(Manager *m, Domain *d, Checkpoint *c, Checkpoint *previous_current, bool checked);
void manager_notify_checkpoints_changed(Manager *m, Domain *d, char *const *removed, Checkpoint *const *changed,
                                        size_t n_changed);
void manager_notify_checkpoints_moved(Manager *m, Domain *d, char *const *removed, Checkpoint *const *changed,
                                      size_t n_changed, Checkpoint *previous_current);

/* <state>/checkpoints: the checkpoint metadata files. */
char *manager_checkpoint_dir(Manager *m);

/* <state>/snapshots: the snapshot metadata files. */
char *manager_snapshot_dir(Manager *m);
