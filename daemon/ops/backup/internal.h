/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BackupBegin's own parts, shared by its files and nothing else: the
 * plan (plan.c: the checks and the aligned <domainbackup>), the run
 * (run.c: files, nodes, the transaction, the jobs, the end) and the
 * journal with the recovery of an interrupted backup (recovery.c). No
 * D-Bus in here.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "core/checkpoint.h"
#include "core/domain.h"
#include "core/operation.h"
#include "ops/backup.h"
#include "store/xml-backup.h"
#include "util/json-util.h"

#define BACKUP_JOURNAL_KIND "backup"
#define BACKUP_OFFLINE_JOURNAL_KIND "backup-offline"

/* One backed-up disk. */
typedef struct BackupDiskRun {
        char *target;        /* "vda" */
        char *source;        /* its active file when the backup began */
        char *path;          /* push: the target file; pull: the scratch file */
        DiskFormat format;   /* of that file */
        bool created;        /* qsnapd created the file (removed when it is no use) */
        bool reuse;          /* REUSE_EXTERNAL: the file was there */
        uint64_t size;       /* the disk's virtual size */
        char *node;          /* the target/scratch node qsnapd adds */
        char *filter_node;   /* pull: the job's copy-before-write filter over the disk (named by us) */
        char *access_node;   /* pull: the snapshot-access node on that filter, which the export serves */
        char *device;        /* the disk's top node in QEMU */
        char *job_id;        /* QEMU's blockdev-backup job */
        char *bitmap;        /* the temporary bitmap of an incremental (NULL: full) */
        char *since;         /* incremental: the checkpoint's bitmap, merged over the chain into `bitmap` */
        char **since_nodes;  /* the layers (nodes) that hold it, top first: from the bitmap inventory */
        char *export_name;   /* pull */
        bool node_added;
        bool access_added;   /* pull: the snapshot-access node may be in QEMU */
        Job *job;            /* owned: the job tracker drives it */
        bool ended;
} BackupDiskRun;

struct BackupPlan {
        Domain *domain;      /* borrowed */
        uint64_t flags;
        BackupDef *def;      /* aligned: what BackupGetXMLDesc shows */
        char *id;            /* the BlockJob1's id ("backup-<hex>") */
        BackupDiskRun *disks;
        size_t n_disks;
        char *socket;        /* pull over UNIX: the socket QEMU listens on */
        char *tcp_host, *tcp_port; /* pull over TCP: where QEMU listens (the port chosen when not given) */
        char *tls_dir;       /* tls='yes': the x509 folder (ca-cert.pem, server-cert.pem, server-key.pem) */
        char *tls_id;        /* its tls-creds-x509 object in QEMU */
        bool socket_default; /* in the runtime dir, chosen by us */
        uint64_t start_time; /* CLOCK_REALTIME µs */
        /* Shut off: run by a paused QEMU of its own (offline.c), whose
         * chain is read-only: a pull exports the disk's top node itself (no
         * scratch, no fleecing: nothing writes), the new checkpoint's
         * bitmaps are added with qemu-img once that QEMU quit. */
        bool offline;
        /* checkpoint_xml: the checkpoint created with the backup (its bitmaps
         * in the backup's transaction, its metadata once the backup
         * succeeded); per bitmap disk its target, active file and top node. */
        CheckpointDef *checkpoint;
        char **cp_targets, **cp_sources, **cp_nodes;
};

/* The running backup: the Operation's plan. */
typedef struct BackupOp {
        BackupPlan *plan;
        Domain *domain;      /* borrowed: the operation holds the reference */
        Operation *op;
        Job *job;            /* the BlockJob1 (qsnapd's own, on the bus) */
        bool running;        /* QEMU runs the jobs (the journal says "running") */
        bool nbd_started;
        bool tls_added;      /* the tls-creds-x509 object may be in QEMU: deleted at the end */
        bool aborted;        /* the user's Abort */
        bool frozen;         /* QUIESCE: the freeze was sent (the journal says so) and no thaw yet */
        bool ending;         /* the end is under way: no new steps */
        int error;
        char *message;
        size_t pending;      /* QMP replies the step at work waits for */
        size_t access_pending; /* of those, the snapshot-access nodes' blockdev-del */
        struct BackupCall *calls; /* those commands (cancelled if the operation goes first) */
        BackupStartedFunc done;
        void *userdata;
        /* a start-up rollback: who waits for its end (core/operation.h recover) */
        DomainDoneFunc recovered;
        void *recovered_userdata;
} BackupOp;

void backup_disk_run_done(BackupDiskRun *r);
/* A pull's filter and snapshot-access node names, made from r->node ("bk…"
 * → "bf…", "ba…": the same length, so within QEMU's limit as r->node is). */
int backup_disk_run_pull_names(BackupDiskRun *r);

/* recovery.c: the journal. phase "prepared" (files made, nodes maybe
 * added, no job yet), "transaction" (a live push: the same, but the
 * transaction may have gone out, and whether QEMU has the backup's jobs
 * tells whether it did) or "running" (QEMU runs the jobs). */
int backup_journal_write(BackupOp *b, const char *phase);
/* The phase from the journal's first write until the backup runs. */
const char *backup_start_phase(BackupOp *b);
int backup_recover(Domain *d, DomainDoneFunc done, void *userdata);
int backup_offline_recover(Domain *d, DomainDoneFunc done, void *userdata);

/* run.c, for the recovery: the observer of the per-disk jobs, the end of
 * an adopted backup, the BlockJob1 that shows it. */
extern const JobObserver backup_job_observer;
void backup_op_free(void *p);
void backup_op_reply(Operation *o, int error, const char *message);
int backup_local_job_new(BackupOp *b);
void backup_check_end(BackupOp *b);
/* Everything QEMU and the files still hold of the backup goes; then the
 * operation finishes with b->error. */
void backup_cleanup(BackupOp *b);
/* The first failure is the one reported. */
void backup_fail(BackupOp *b, int error, const char *message);
void backup_failf(BackupOp *b, int error, const char *fmt, ...) _printf_(3, 4);
/* The local job's Abort. */
int backup_abort(Job *j, void *data);
/* The files that are no use go, the BlockJob1 reports, the operation ends. */
void backup_finish(BackupOp *b);
/* run.c: the target files (push) qsnapd creates; < 0 with *ret_message. */
int backup_create_files(BackupOp *b, char **ret_message);
void backup_remove_files(BackupOp *b, bool keep_targets);

/* The folder of the NBD server's x509 credentials: $QSNAPD_NBD_TLS_DIR, else
 * BACKUP_NBD_TLS_DIR. */
#define BACKUP_NBD_TLS_DIR "/etc/pki/qsnap-nbd"
const char *backup_tls_dir(void);

/* Test hook: $QSNAPD_TEST_BACKUP_SPEED (bytes/s), 0 when unset. */
uint64_t backup_test_speed(void);

/* run.c: the first step once QEMU is there (the domain's own, or offline.c's). */
void backup_start(Operation *o);

/* offline.c: a shut-off domain's backup, by a paused QEMU of its own. */
int backup_begin_offline(Domain *d, BackupPlan *plan, BackupStartedFunc done, void *userdata, char **ret_message);
extern const OperationKind backup_offline_kind;
/* Whether that QEMU still runs: backup_finish() first lets it quit. */
bool backup_offline_qemu_runs(BackupOp *b);
/* It quits, then backup_finish() is called again. */
void backup_offline_stop(BackupOp *b);
/* After it quit, a successful backup's new checkpoint: its bitmaps
 * added to the top images with qemu-img (removed again on failure). */
int backup_offline_add_checkpoint(BackupOp *b, char **ret_message);
