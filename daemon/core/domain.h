/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One domain: its persistent definition, the live copy while QEMU runs,
 * the QEMU process (launched by us, or attached to through
 * <qsnap:monitor/>), its QMP connection and its run state. Lifecycle calls
 * are asynchronous and end in a DomainDoneFunc. Changes are reported
 * upward through the manager's DomainObserver; no D-Bus in here.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "core/checkpoint.h"
#include "core/snapshot.h"
#include "qemu/image.h"
#include "qemu/job.h"
#include "qemu/qmp.h"
#include "store/xml-domain.h"
#include "util/error.h"

typedef struct Manager Manager;
typedef struct Domain Domain;
typedef struct Operation Operation;

typedef enum DomainState {
        DOMAIN_SHUTOFF,
        DOMAIN_RUNNING,
        DOMAIN_PAUSED,
        DOMAIN_CRASHED,
        _DOMAIN_STATE_MAX,
        _DOMAIN_STATE_INVALID = -EINVAL,
} DomainState;

const char *domain_state_to_string(DomainState s);

typedef enum DomainChange {
        DOMAIN_CHANGE_STATE = 1 << 0,
        DOMAIN_CHANGE_DISKS = 1 << 1,
        DOMAIN_CHANGE_SNAPSHOTS = 1 << 2,
        DOMAIN_CHANGE_CURRENT_SNAPSHOT = 1 << 3,
        DOMAIN_CHANGE_JOBS = 1 << 4,
        DOMAIN_CHANGE_AGENT = 1 << 5, /* AgentConnected */
        DOMAIN_CHANGE_CHECKPOINTS = 1 << 6,
} DomainChange;

typedef enum JobEvent {
        JOB_EVENT_ADDED,
        JOB_EVENT_PROGRESS,
        JOB_EVENT_CHANGED,
        JOB_EVENT_READY,
        JOB_EVENT_FINISHED, /* after the chain bookkeeping */
        JOB_EVENT_REMOVED,
} JobEvent;

/* Flags, libvirt's values. */
#define DOMAIN_START_PAUSED 1ULL
#define DOMAIN_STOP_GRACEFUL 1ULL
#define DOMAIN_UNDEFINE_SNAPSHOTS_METADATA 1ULL
#define DOMAIN_UNDEFINE_CHECKPOINTS_METADATA 2ULL
#define DOMAIN_MONITOR_HMP 1ULL
#define DOMAIN_XML_SECURE 1ULL
#define DOMAIN_XML_INACTIVE 2ULL

/* The end of an asynchronous call: error 0, or a QSNAP_E_* code or -errno
 * (util/error.h) with a message for the caller (may be NULL), and for
 * QemuMonitorCommand the reply text.
 * The calls below return < 0 (with *ret_message) when they fail at once,
 * and then never call `done`; otherwise `done` is called exactly once,
 * never from inside the call itself. */
typedef void (*DomainDoneFunc)(Domain *d, int error, const char *message, const char *reply, void *userdata);
/* A step of a call was taken (the call goes on; it must not be ended from
 * in here). Operations hang their crash points on it. */
typedef void (*DomainStepFunc)(Domain *d, void *userdata);

/* The backing chain of an active file, read once. */
typedef struct ChainCacheEntry {
        char *active;
        ImageChain chain;
} ChainCacheEntry;

struct Domain {
        Manager *manager;
        unsigned n_ref;

        DomainDef *def;  /* persistent definition */
        DomainDef *live; /* what the running QEMU was started with; NULL when off */

        DomainState state;
        bool attaching;       /* connecting to the monitor at load time */
        bool shutdown_seen;   /* SHUTDOWN arrived: the coming disconnect is an orderly end */
        bool quit_requested;  /* we asked QEMU to quit */

        pid_t pid;            /* managed QEMU, 0 when unknown */
        int pidfd;            /* QEMU launched by this qsnapd: its pidfd (a QEMU of
                               * another user may be hidden in /proc), else -EBADF */
        uid_t qemu_uid;       /* --qemu-uid-range: the uid of its QEMU (live or offline), 0: none */
        Qmp *qmp;
        struct Agent *agent;  /* the guest agent channel while QEMU runs (core/domain-agent.c) */

        Operation *op;        /* the one lifecycle call in flight, if any (core/operation.h) */
        bool snapshot_busy;   /* a snapshot operation is in flight */
        const char *snapshot_busy_kind; /* its kind's name, for Busy's message */
        Operation *backup;    /* the running backup (ops/backup), one at a time */
        uint64_t node_seq;    /* for unique QEMU node names */
        /* Bumped by every change of QEMU's block graph or of a chain qsnapd
         * makes or learns of (a node added or deleted, a chain changed, a
         * monitor command passed through, QEMU gone): what was learned
         * from QEMU under an older value may be stale (core/bitmaps.c's
         * top nodes). */
        uint64_t graph_epoch;

        SnapshotTree snapshots;
        CheckpointTree checkpoints;
        struct BitmapsState *bitmaps; /* core/bitmaps.c: the refresh of Problems and Size */
        struct TopCache *bitmap_tops; /* core/bitmap-tops.c: what the last live inventory saw */
        struct OfflineQemu *offline_qemu; /* shut off: the paused QEMU of core/offline-qemu.c, if one runs */

        JobTracker *jobs;     /* while QMP is up */
        void *jobs_attach;    /* the adoption in flight (core/domain-jobs.c) */
        struct GraphTask *graph_tasks; /* finalizes and read-backs, one at a time */
        bool graph_busy;
        Job *graph_finalizing;
        Job **lingering;      /* finished jobs, kept for a while */
        size_t n_lingering;

        ChainCacheEntry chain_cache[16];
        size_t n_chain_cache;

        struct QemuFile *files; /* node → file QEMU holds by descriptor (core/qemu-files.h) */
        size_t n_files;
        unsigned fdset_seq;     /* the last fd set number used in this QEMU */

        Domain *next;
};

int domain_new(Manager *m, DomainDef *def, Domain **ret); /* takes def */
Domain *domain_ref(Domain *d);
Domain *domain_unref(Domain *d);
static inline void domain_unrefp(Domain **d) {
        if (*d)
                domain_unref(*d);
}

/* A lifecycle call or a snapshot operation is in flight. */
static inline bool domain_is_busy(const Domain *d) {
        return d->op || d->snapshot_busy;
}

static inline bool domain_is_managed(const Domain *d) {
        return !d->def->monitor_path;
}
static inline bool domain_is_active(const Domain *d) {
        return d->state == DOMAIN_RUNNING || d->state == DOMAIN_PAUSED;
}
/* The definition in effect: the live one while QEMU runs. */
static inline const DomainDef *domain_current_def(const Domain *d) {
        return d->live ?: d->def;
}

/* A disk of the running (else stored) definition named by its target
 * ("vda") or its active file's path, as block job calls name disks. */
const DomainDisk *domain_lookup_disk(const Domain *d, const char *name);

/* Reconnects to a QEMU left running by an earlier qsnapd (or the attach
 * target). `done` fires once the State is known, error or not. */
int domain_attach(Domain *d, DomainDoneFunc done, void *userdata, char **ret_message);

int domain_start(Domain *d, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message);
/* Start with -incoming defer, then load the memory state of a snapshot
 * from memory_file (domain_send_incoming()); with DOMAIN_START_PAUSED the guest stays paused
 * afterwards. `sent` (may be NULL) is called with userdata once
 * migrate-incoming is on its way. A failed load leaves the domain shut off
 * (-QSNAP_E_QEMU_FAILED, QEMU's text). Only for domains qsnapd launches
 * (-QSNAP_E_UNSUPPORTED otherwise). */
int domain_start_incoming(Domain *d, uint64_t flags, const char *memory_file, DomainStepFunc sent, DomainDoneFunc done,
                          void *userdata, char **ret_message);
int domain_stop(Domain *d, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message);
int domain_pause(Domain *d, DomainDoneFunc done, void *userdata, char **ret_message);
int domain_resume(Domain *d, DomainDoneFunc done, void *userdata, char **ret_message);
int domain_monitor_command(Domain *d, const char *command, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message);

/* -QSNAP_E_BUSY while a lifecycle call runs, -QSNAP_E_OPERATION_INVALID for
 * a state the call cannot start from, -QSNAP_E_NOT_RUNNING when it needs a
 * QEMU; *ret_message says which. Checked before authorization, so a
 * refused call costs no polkit round trip. */
int domain_check_start(Domain *d, char **ret_message);
int domain_check_stop(Domain *d, char **ret_message);
/* 1: already paused (resp. running), nothing to do. */
int domain_check_pause(Domain *d, bool pause, char **ret_message);
int domain_check_running(Domain *d, char **ret_message);
/* -QSNAP_E_BUSY ("Domain '…' is busy (KIND in progress); …", operation_busy_message()) while an
 * operation holds d; 0 when it is free. */
int domain_check_idle(const Domain *d, char **ret_message);
int domain_check_undefine(Domain *d, char **ret_message);

/* The guest runs again (a cont of ours was answered): State says so now,
 * without waiting for the RESUME event. */
void domain_note_running(Domain *d);
/* Likewise for a stop of ours. */
void domain_note_paused(Domain *d);

/* Replaces the persistent definition (takes def); the live one stays. */
void domain_set_def(Domain *d, DomainDef *def);

/* Disconnects from QEMU (leaving it running) and stops all timers. */
void domain_disconnect(Domain *d);

/* GetXMLDesc: the live definition while running (the stored one with
 * `inactive`), each disk's backing chain as <backingStore>; secrets
 * (<graphics passwd=…>) only with `secure`. */
int domain_format_xml(Domain *d, bool inactive, bool secure, char **ret);

/* Writes the stored definition to <state>/domains/<uuid>.xml, and the
 * live one (what a restarted qsnapd believes QEMU runs) to <run>/<uuid>.xml. */
int domain_save(Domain *d);
int domain_save_live(Domain *d);
/* Both, after the disks' active files changed; a failure is logged. */
int domain_save_disks(Domain *d);

/* Files under the runtime and state dirs. */
char *domain_runtime_path(Domain *d, const char *suffix);
/* A socket QEMU itself creates (agent, graphics, consoles): in the folder
 * its user may write (<runtime>/qemu) when it runs as one. */
char *domain_qemu_socket_path(Domain *d, const char *suffix);
char *domain_log_path(Domain *d);
/* The throw-away overlay of a <transient/> disk while QEMU runs. */
char *domain_transient_path(Domain *d, const DomainDisk *disk);
