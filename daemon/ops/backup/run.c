/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BackupBegin, the run: an Operation (core/operation.c) whose plan is the
 * BackupOp. The steps: create the target (push) or scratch (pull) files,
 * journal them, find each disk's top node, blockdev-add the new nodes,
 * then ONE transaction of blockdev-backup actions (sync full into the
 * target; for a pull sync none into the scratch node, whose
 * copy-before-write filter, named by us, keeps the point in time: the old
 * data of what the guest overwrites goes to the scratch first), each job
 * tracked by the one job driver as the backup's own (owned), and a
 * BlockJob1 of qsnapd's own ("backup") that adds up their progress. Pull
 * mode then adds per disk a snapshot-access node on the filter (QEMU 7.2's
 * fleecing: reads of what the guest did not overwrite go to the disk
 * itself, its holes show as holes), starts QEMU's NBD server on the socket
 * and exports each snapshot-access node read-only (an incremental's bitmap
 * is on the scratch node). The caller hears of the job once that stands.
 *
 * The end, whatever caused it (all pushes done, a failure, Abort, QEMU
 * gone): the NBD server stops, the snapshot-access nodes go (before their
 * filter's job ends), jobs still running are cancelled, the
 * added nodes are deleted, then files go: scratch files always, targets
 * qsnapd created when the push did not complete. Then the BlockJob1
 * reports (Completed with QEMU's text on failure) and the journal goes.
 * A pull's normal end is its Abort: it then reports "completed".
 *
 * QUIESCE (flag 2, a running guest with an agent channel): the journal
 * says "frozen", guest-fsfreeze-freeze goes out, the transaction follows
 * its answer and guest-fsfreeze-thaw the transaction's answer (or any
 * failure once the freeze was sent); recovery thaws a guest left frozen.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/bitmaps.h"
#include "core/disk.h"
#include "core/domain-agent.h"
#include "core/domain-jobs.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/qemu-files.h"
#include "ops/backup/internal.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/util.h"

/* ---- in-flight QMP calls: cancelled when the operation goes first ---- */

typedef struct BackupCall {
        BackupOp *backup;
        size_t index;        /* the disk, for per-disk steps */
        int64_t id;
        void (*handler)(BackupOp *b, size_t index, int error, json_object *result, const char *desc);
        struct BackupCall *next;
} BackupCall;

static void on_call_reply(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                          void *userdata) {
        BackupCall *c = userdata;
        BackupOp *b = c->backup;
        BackupCall **p;

        for (p = &b->calls; *p && *p != c; p = &(*p)->next)
                ;
        if (*p)
                *p = c->next;
        b->pending--;
        c->handler(b, c->index, error, result, desc);
        free(c);
}

/* Sends a command built by send(qmp, cb, userdata); the reply goes to handler. */
#define BACKUP_SEND(b, idx, h, expr_with_cb_ud)                                                         \
        ({                                                                                              \
                BackupCall *_c = new0(BackupCall, 1);                                                   \
                int64_t _id = -ENOMEM;                                                                  \
                if (_c) {                                                                               \
                        qmp_reply_func_t cb = on_call_reply;                                            \
                        void *ud = _c;                                                                  \
                        *_c = (BackupCall) { .backup = (b), .index = (idx), .handler = (h) };           \
                        _id = (b)->domain->qmp ? (expr_with_cb_ud) : -ENOTCONN;                         \
                        if (_id < 0)                                                                    \
                                free(_c);                                                               \
                        else {                                                                          \
                                _c->id = _id;                                                           \
                                _c->next = (b)->calls;                                                  \
                                (b)->calls = _c;                                                        \
                                (b)->pending++;                                                         \
                        }                                                                               \
                }                                                                                       \
                _id;                                                                                    \
        })

void backup_op_free(void *p) {
        BackupOp *b = p;

        if (!b)
                return;
        while (b->calls) {
                BackupCall *c = b->calls;

                b->calls = c->next;
                if (b->domain->qmp)
                        (void) qmp_cancel(b->domain->qmp, c->id);
                free(c);
        }
        if (b->domain->backup == b->op)
                b->domain->backup = NULL;
        if (b->job) {
                b->job->local_abort = NULL;
                job_unref(b->job);
        }
        backup_plan_free(b->plan);
        free(b->message);
        free(b);
}

void backup_op_reply(Operation *o, int error, const char *message) {
        BackupOp *b = o->plan;

        if (b->done)
                b->done(o->domain, error, message, error < 0 ? NULL : b->job, b->userdata);
}

/* The first failure is the one reported. */
void backup_fail(BackupOp *b, int error, const char *message) {
        if (b->error < 0)
                return;
        b->error = error;
        free(b->message);
        b->message = message ? strdup(message) : NULL;
}

void backup_failf(BackupOp *b, int error, const char *fmt, ...) {
        _cleanup_free_ char *m = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&m, fmt, ap) < 0)
                m = NULL;
        va_end(ap);
        backup_fail(b, error, m);
}

/* A step failed before the backup ran: undo and tell the caller. */
static void backup_thaw(BackupOp *b, DomainThawReason why);

static void backup_abandon_start(BackupOp *b, int error, const char *message) {
        backup_thaw(b, DOMAIN_THAW_FAILED);
        backup_fail(b, error, message);
        backup_cleanup(b);
}

/* ---- progress ---- */

static void backup_progress(BackupOp *b) {
        BackupPlan *p = b->plan;
        uint64_t cur = 0, end = 0;

        if (!b->job || job_state_is_final(b->job->state))
                return;
        for (size_t i = 0; i < p->n_disks; i++)
                if (p->disks[i].job) {
                        cur += p->disks[i].job->cur;
                        end += p->disks[i].job->end;
                }
        /* Nothing known yet (QEMU's first figures come with the first poll). */
        if (end == 0 || (cur == b->job->cur && end == b->job->end))
                return;
        job_local_update(b->job, JOB_STATE_RUNNING, cur, end, NULL);
        domain_local_job_progress(b->domain, b->job);
}

static BackupDiskRun *disk_of(BackupOp *b, Job *j) {
        for (size_t i = 0; i < b->plan->n_disks; i++)
                if (b->plan->disks[i].job == j)
                        return b->plan->disks + i;
        return NULL;
}

static void on_disk_job_progress(Job *j, void *userdata) {
        backup_progress(userdata);
}

/* A push is done with this disk: QEMU finalizes it (the copy stands). */
static void on_disk_job_pending(Job *j, void *userdata) {
        BackupOp *b = userdata;

        /* crash points: backup:pending backup-offline:pending */
        operation_crash_point(b->op, "pending");
        if (job_finalize(j, !b->ending, NULL) < 0)
                log_warning("Domain '%s': cannot finalize backup job %s.", b->domain->def->name, j->id);
}

static void on_disk_job_finished(Job *j, void *userdata) {
        BackupOp *b = userdata;
        BackupDiskRun *r = disk_of(b, j);

        if (!r)
                return;
        r->ended = true;
        log_info("Domain '%s': backup job %s of disk %s %s%s%s.", b->domain->def->name, j->id, r->target,
                 job_state_to_string(j->state), j->error ? ": " : "", strempty(j->error));
        if (j->state == JOB_STATE_FAILED)
                backup_failf(b, -QSNAP_E_QEMU_FAILED, "%s", strna(j->error));
        else if (j->state == JOB_STATE_CANCELED && !b->ending && !b->aborted) {
                /* QEMU cancels its jobs when it quits. */
                if (b->domain->quit_requested || b->domain->shutdown_seen)
                        backup_failf(b, -QSNAP_E_QEMU_FAILED, "Domain '%s' stopped before the backup of disk %s ended.",
                                     b->domain->def->name, r->target);
                else
                        backup_failf(b, -QSNAP_E_QEMU_FAILED, "The backup job of disk %s was cancelled behind "
                                     "qsnapd's back.", r->target);
        }
        backup_progress(b);
        backup_check_end(b);
}

/* qsnapd leaves while QEMU works on: the journal stays for the next one. */
static void on_disk_job_detached(Job *j, void *userdata) {
        BackupOp *b = userdata;

        log_info("Domain '%s': qsnapd leaves backup %s to QEMU; the next qsnapd adopts it.", b->domain->def->name,
                 b->plan->id);
        operation_abandon(b->op);
}

const JobObserver backup_job_observer = {
        .progress = on_disk_job_progress,
        .pending = on_disk_job_pending,
        .finished = on_disk_job_finished,
        .detached = on_disk_job_detached,
};

/* ---- the end ---- */

/* keep_targets: the push completed; its targets are the backup. */
void backup_remove_files(BackupOp *b, bool keep_targets) {
        BackupPlan *p = b->plan;
        bool push = p->def->mode == BACKUP_MODE_PUSH;

        for (size_t i = 0; i < p->n_disks; i++) {
                BackupDiskRun *r = p->disks + i;

                /* A complete push target is the backup; anything else is no use. */
                if (!r->created || (push && keep_targets))
                        continue;
                /* never through a link (a caller may swap the folder meanwhile); refusals logged */
                if (fs_unlink_nofollow(r->path, S_IFREG) >= 0)
                        log_info("Domain '%s': removed %s (%s of the backup).", b->domain->def->name, r->path,
                                 push ? "the incomplete target" : "the scratch file");
                r->created = false;
        }
        if (p->socket)
                (void) fs_unlink_nofollow(p->socket, S_IFSOCK);
}

/* The backup succeeds: it ran, nothing failed, and a push was not aborted
 * (a pull ends by its Abort). */
static bool backup_succeeds(BackupOp *b) {
        return b->running && b->error >= 0 && !(b->aborted && b->plan->def->mode == BACKUP_MODE_PUSH);
}

/* The checkpoint's metadata, once its backup succeeded. */
static void store_checkpoint(BackupOp *b) {
        Domain *d = b->domain;
        Checkpoint *previous = d->checkpoints.current, *c = NULL;
        _cleanup_free_ char *name = strdup(b->plan->checkpoint->name);
        int r;

        r = checkpoint_tree_add(&d->checkpoints, TAKE_PTR(b->plan->checkpoint), true, &c);
        if (r < 0) {
                backup_failf(b, r, "The backup completed, but the metadata of checkpoint '%s' cannot be stored: %s",
                             strna(name), qsnap_strerror(r));
                return;
        }
        log_info("Domain '%s': checkpoint '%s' created with backup %s.", d->def->name, strna(name), b->plan->id);
        manager_notify_checkpoint_added(d->manager, d, c, previous, true);
}

void backup_finish(BackupOp *b) {
        _cleanup_(domain_unrefp) Domain *d = domain_ref(b->domain);
        DomainDoneFunc recovered;
        void *recovered_userdata;
        BackupPlan *p = b->plan;
        bool pull = p->def->mode == BACKUP_MODE_PULL;
        JobState state;

        /* Offline: its QEMU quits first (it holds the images), then the rest. */
        if (backup_offline_qemu_runs(b))
                return backup_offline_stop(b);
        if (p->checkpoint && backup_succeeds(b) && p->offline) {
                _cleanup_free_ char *message = NULL;
                int r = backup_offline_add_checkpoint(b, &message);

                if (r < 0)
                        backup_failf(b, r, "The backup completed, but the bitmaps of checkpoint '%s' cannot be added: %s",
                                     p->checkpoint->name, strna(message));
        }
        if (p->checkpoint && backup_succeeds(b))
                store_checkpoint(b);
        backup_remove_files(b, b->running && b->error >= 0 && !b->aborted);
        /* A pull ends by its Abort: that is its success. */
        if (b->error < 0)
                state = JOB_STATE_FAILED;
        else if (b->aborted && !pull)
                state = JOB_STATE_CANCELED;
        else
                state = JOB_STATE_COMPLETED;
        if (b->job) {
                b->job->local_abort = NULL;
                job_local_update(b->job, state, state == JOB_STATE_COMPLETED ? b->job->end : b->job->cur, b->job->end,
                                 b->error < 0 ? strna(b->message) : NULL);
        }
        if (d->backup == b->op)
                d->backup = NULL;
        operation_journal_remove(b->op);
        if (b->job) {
                log_info("Domain '%s': backup %s %s%s%s.", d->def->name, p->id, job_state_to_string(state),
                         b->error < 0 ? ": " : "", b->error < 0 ? strna(b->message) : "");
                domain_local_job_end(d, b->job);
        }
        recovered = b->recovered;
        recovered_userdata = b->recovered_userdata;
        operation_finish(b->op, b->error, b->message);
        /* The start-up recovery waited for this rollback. */
        if (recovered)
                recovered(d, 0, NULL, NULL, recovered_userdata);
}

static void on_node_deleted(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        /* QEMU let go of the node: its descriptors go too. */
        if (error >= 0)
                domain_files_forget(b->domain, b->plan->disks[index].node);
        if (error < 0 && error != -ECONNRESET)
                log_warning("Domain '%s': cannot delete backup node %s: %s", b->domain->def->name,
                            b->plan->disks[index].node, strna(desc));
        if (b->pending == 0)
                backup_finish(b);
}

static void on_bitmap_removed(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        if (b->pending == 0)
                backup_finish(b);
}

static void cleanup_nodes(BackupOp *b) {
        BackupPlan *p = b->plan;

        /* No checkpoint without its backup: its bitmaps go again (offline
         * ones come only after success). */
        for (size_t i = 0; b->running && p->checkpoint && !p->offline && !backup_succeeds(b) && p->cp_nodes &&
                           p->cp_nodes[i];
             i++)
                (void) BACKUP_SEND(b, i, on_bitmap_removed,
                                   qmp_cmd_block_dirty_bitmap_remove(b->domain->qmp, p->cp_nodes[i], p->checkpoint->name,
                                                                     cb, ud));

        for (size_t i = 0; i < p->n_disks; i++) {
                BackupDiskRun *r = p->disks + i;

                /* A push's temporary bitmap is on the disk's node (a pull's goes with the scratch node). */
                if (r->bitmap && r->device && p->def->mode == BACKUP_MODE_PUSH)
                        (void) BACKUP_SEND(b, i, on_bitmap_removed,
                                           qmp_cmd_block_dirty_bitmap_remove(b->domain->qmp, r->device, r->bitmap, cb, ud));
                if (!r->node_added)
                        continue;
                r->node_added = false;
                (void) BACKUP_SEND(b, i, on_node_deleted, qmp_cmd_blockdev_del(b->domain->qmp, r->node, cb, ud));
        }
        if (b->pending == 0)
                backup_finish(b);
}

static bool access_left(BackupOp *b) {
        for (size_t i = 0; i < b->plan->n_disks; i++)
                if (b->plan->disks[i].access_added)
                        return true;
        return false;
}

/* Every job ended (or never started): the nodes go. */
void backup_check_end(BackupOp *b) {
        BackupPlan *p = b->plan;

        for (size_t i = 0; i < p->n_disks; i++)
                if (p->disks[i].job && !p->disks[i].ended)
                        return;
        if (!b->ending) {
                /* An offline pull has no job (nothing to fleece): Abort ends it. */
                if (p->offline && p->def->mode == BACKUP_MODE_PULL && b->error >= 0)
                        return;
                /* A pull's job ended by itself: its exports and snapshot-access nodes go first. */
                if (b->nbd_started || access_left(b))
                        return backup_cleanup(b);
                /* The pushes completed by themselves. */
                b->ending = true;
        }
        if (b->pending > 0)
                return; /* the NBD stop's reply comes first */
        cleanup_nodes(b);
}

static void cancel_jobs(BackupOp *b) {
        BackupPlan *p = b->plan;

        for (size_t i = 0; i < p->n_disks; i++) {
                BackupDiskRun *r = p->disks + i;
                _cleanup_free_ char *m = NULL;

                if (!r->job || r->ended || r->job->aborting || job_state_is_final(r->job->state))
                        continue;
                if (r->job->state == JOB_STATE_PENDING) {
                        /* finalize-with-cancel happens in on_disk_job_pending()'s place */
                        if (job_finalize(r->job, false, NULL) < 0)
                                log_debug("Domain '%s': backup job %s is finishing already.", b->domain->def->name,
                                          r->job->id);
                        continue;
                }
                if (job_abort(r->job, false, NULL, NULL, &m) < 0)
                        log_debug("Domain '%s': cannot cancel backup job %s: %s", b->domain->def->name, r->job->id,
                                  strna(m));
        }
        backup_check_end(b);
}

static void on_access_deleted(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        /* After a restart the node may never have been added: a harmless error. */
        if (error < 0 && error != -ECONNRESET)
                log_debug("Domain '%s': cannot delete snapshot-access node %s: %s", b->domain->def->name,
                          b->plan->disks[index].access_node, strna(desc));
        if (--b->access_pending == 0)
                cancel_jobs(b);
}

/* No export reads them any more: the snapshot-access nodes go while their
 * filter stands (the job's end removes it), then the jobs are cancelled. */
static void drop_access_nodes(BackupOp *b) {
        BackupPlan *p = b->plan;

        for (size_t i = 0; i < p->n_disks && b->domain->qmp; i++) {
                BackupDiskRun *r = p->disks + i;

                if (!r->access_added)
                        continue;
                r->access_added = false;
                if (BACKUP_SEND(b, i, on_access_deleted, qmp_cmd_blockdev_del(b->domain->qmp, r->access_node, cb, ud)) >= 0)
                        b->access_pending++;
        }
        if (b->access_pending == 0)
                cancel_jobs(b);
}

static void on_tls_deleted(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        drop_access_nodes(b);
}

static void on_nbd_stopped(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        if (error < 0 && error != -ECONNRESET)
                log_warning("Domain '%s': cannot stop the NBD server: %s", b->domain->def->name, strna(desc));
        b->nbd_started = false;
        /* The server's credentials go with it. */
        if (b->tls_added && b->domain->qmp) {
                b->tls_added = false;
                if (BACKUP_SEND(b, 0, on_tls_deleted, qmp_cmd_object_del(b->domain->qmp, b->plan->tls_id, cb, ud)) >= 0)
                        return;
        }
        drop_access_nodes(b);
}

void backup_cleanup(BackupOp *b) {
        if (b->ending && b->pending > 0)
                return;
        b->ending = true;
        if (b->nbd_started && b->domain->qmp &&
            BACKUP_SEND(b, 0, on_nbd_stopped, qmp_cmd_nbd_server_stop(b->domain->qmp, cb, ud)) >= 0)
                return;
        b->nbd_started = false;
        drop_access_nodes(b);
}

int backup_abort(Job *j, void *data) {
        BackupOp *b = data;

        if (b->aborted || b->ending)
                return 0;
        b->aborted = true;
        log_info("Domain '%s': backup %s is aborted.", b->domain->def->name, j->id);
        backup_cleanup(b);
        return 0;
}

/* ---- the start ---- */

int backup_local_job_new(BackupOp *b) {
        BackupPlan *p = b->plan;
        const char *disk = NULL;
        size_t n = 0;

        for (size_t i = 0; i < p->n_disks; i++, n++)
                disk = p->disks[i].target;
        b->job = job_new_local(p->id, JOB_TYPE_BACKUP, n == 1 ? disk : NULL);
        if (!b->job)
                return -ENOMEM;
        job_set_start_time(b->job, p->start_time);
        job_local_update(b->job, JOB_STATE_RUNNING, 0, 0, NULL);
        if (domain_local_job_add(b->domain, b->job) < 0)
                return -ENOMEM;
        b->job->local_abort = backup_abort;
        b->job->local_abort_data = b;
        return 0;
}

/* The backup stands: the caller hears of its job. */
static void backup_started(BackupOp *b) {
        int r;

        r = backup_local_job_new(b);
        if (r < 0) {
                backup_failf(b, r, "Cannot show the backup job: %s", qsnap_strerror(r));
                operation_reply(b->op, b->error, b->message);
                return backup_cleanup(b);
        }
        /* From here on a restarted qsnapd adopts it. A live push's journal
         * says so already: its jobs in QEMU tell a restarted qsnapd that the
         * transaction went through ("transaction", recovery.c); "running"
         * follows the reply, while QEMU copies, for the one case QEMU's jobs
         * cannot tell: QEMU gone too, when the backup is reported failed
         * under its path. A pull's exports and an offline backup's QEMU
         * leave no such trace: "running" comes first. */
        if (streq(backup_start_phase(b), "prepared"))
                (void) backup_journal_write(b, "running");
        /* crash points: backup:running backup-offline:running */
        operation_crash_point(b->op, "running");
        log_info("Domain '%s': %s backup %s of %zu disk(s) runs.", b->domain->def->name,
                 backup_mode_to_string(b->plan->def->mode), b->plan->id, b->plan->n_disks);
        operation_reply(b->op, 0, NULL);
        if (!streq(backup_start_phase(b), "prepared"))
                (void) backup_journal_write(b, "running");
        backup_progress(b);
        backup_check_end(b);
}

static void on_export_added(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        if (error < 0)
                backup_failf(b, -QSNAP_E_QEMU_FAILED, "QEMU cannot export disk %s: %s", b->plan->disks[index].target,
                             strna(desc));
        if (b->pending > 0)
                return;
        if (b->error < 0) {
                operation_reply(b->op, b->error, b->message);
                return backup_cleanup(b);
        }
        backup_started(b);
}

static void on_nbd_started(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        BackupPlan *p = b->plan;

        if (error < 0) {
                b->nbd_started = false;
                backup_failf(b, -QSNAP_E_QEMU_FAILED, "QEMU cannot serve NBD on %s%s%s: %s",
                             p->socket ?: p->tcp_host, p->socket ? "" : ":", p->socket ? "" : p->tcp_port, strna(desc));
                operation_reply(b->op, b->error, b->message);
                return backup_cleanup(b);
        }
        for (size_t i = 0; i < p->n_disks; i++) {
                BackupDiskRun *r = p->disks + i;

                if (BACKUP_SEND(b, i, on_export_added,
                                qmp_cmd_block_export_add_nbd(b->domain->qmp, r->job_id, p->offline ? r->node : r->access_node,
                                                             r->export_name, r->bitmap, p->offline ? NULL : r->node, cb,
                                                             ud)) < 0)
                        backup_fail(b, -QSNAP_E_QEMU_FAILED, "Cannot send block-export-add.");
        }
        if (b->pending == 0)
                on_export_added(b, 0, 0, NULL, NULL);
}

static void nbd_start(BackupOp *b);
static void add_access_nodes(BackupOp *b);
static void on_tls_added(BackupOp *b, size_t index, int error, json_object *result, const char *desc);

/* QUIESCE: the transaction answered (or the start failed): thaw. The
 * backup's outcome never depends on the thaw (domain_agent_thaw logs it). */
static void backup_thaw(BackupOp *b, DomainThawReason why) {
        if (!b->frozen)
                return;
        b->frozen = false;
        (void) domain_agent_thaw(b->domain, "backup", why, NULL, NULL);
        (void) backup_journal_write(b, backup_start_phase(b));
}

static void on_transaction(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        BackupPlan *p = b->plan;
        Domain *d = b->domain;
        int r = 0;

        backup_thaw(b, error < 0 ? DOMAIN_THAW_FAILED : DOMAIN_THAW_DONE);
        if (error < 0)
                return backup_abandon_start(b, -QSNAP_E_QEMU_FAILED, desc ?: "QEMU refused the backup.");
        /* QEMU runs the jobs: from here on they are ours to follow. */
        for (size_t i = 0; i < p->n_disks && r >= 0 && !(p->offline && p->def->mode == BACKUP_MODE_PULL); i++) {
                BackupDiskRun *dr = p->disks + i;

                r = d->jobs ? job_tracker_add_job(d->jobs, dr->job_id, &(JobSpec) {
                                      .type = JOB_TYPE_BACKUP,
                                      .disk = dr->target,
                                      .observer = &backup_job_observer,
                                      .observer_userdata = b,
                              }, &dr->job)
                            : -ENOTCONN;
                if (r >= 0)
                        job_ref(dr->job);
        }
        if (r < 0) {
                backup_failf(b, r, "Cannot follow the backup jobs: %s", qsnap_strerror(r));
                operation_reply(b->op, b->error, b->message);
                return backup_cleanup(b);
        }
        b->running = true;
        if (p->def->mode == BACKUP_MODE_PUSH)
                return backup_started(b);
        add_access_nodes(b);
}

/* Pull, the point in time stands: the NBD server (with its credentials). */
static void serve(BackupOp *b) {
        BackupPlan *p = b->plan;
        Domain *d = b->domain;

        /* Journaled first: a rollback stops the server it may have started. */
        b->nbd_started = true;
        b->tls_added = p->tls_id != NULL;
        (void) backup_journal_write(b, "prepared");
        if (p->tls_id) {
                if (BACKUP_SEND(b, 0, on_tls_added, qmp_cmd_object_add_tls_creds_x509(d->qmp, p->tls_id, p->tls_dir, cb, ud)) < 0) {
                        b->nbd_started = b->tls_added = false;
                        backup_fail(b, -QSNAP_E_QEMU_FAILED, "Cannot send object-add.");
                        operation_reply(b->op, b->error, b->message);
                        backup_cleanup(b);
                }
                return;
        }
        nbd_start(b);
}

static void access_nodes_done(BackupOp *b) {
        if (b->error < 0) {
                operation_reply(b->op, b->error, b->message);
                return backup_cleanup(b);
        }
        serve(b);
}

static void on_access_added(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        BackupDiskRun *r = b->plan->disks + index;

        if (error < 0)
                backup_failf(b, -QSNAP_E_QEMU_FAILED, "QEMU cannot give access to the point in time of disk %s: %s",
                             r->target, strna(desc));
        else
                r->access_added = true;
        if (b->pending == 0)
                access_nodes_done(b);
}

/* Pull: per disk a snapshot-access node on the job's copy-before-write
 * filter, what the export serves. */
static void add_access_nodes(BackupOp *b) {
        BackupPlan *p = b->plan;

        /* offline: the export is the disk's own node (nothing writes) */
        for (size_t i = 0; i < p->n_disks && !p->offline; i++) {
                BackupDiskRun *r = p->disks + i;

                if (BACKUP_SEND(b, i, on_access_added,
                                qmp_cmd_blockdev_add_snapshot_access(b->domain->qmp, r->access_node, r->filter_node, cb,
                                                                     ud)) < 0) {
                        backup_fail(b, -QSNAP_E_QEMU_FAILED, "Cannot send blockdev-add.");
                        break;
                }
        }
        if (b->pending == 0)
                access_nodes_done(b);
}

static void nbd_start(BackupOp *b) {
        BackupPlan *p = b->plan;

        if (BACKUP_SEND(b, 0, on_nbd_started,
                        qmp_cmd_nbd_server_start(b->domain->qmp, p->socket, p->tcp_host, p->tcp_port, p->tls_id, cb, ud)) < 0) {
                b->nbd_started = false;
                backup_fail(b, -QSNAP_E_QEMU_FAILED, "Cannot send nbd-server-start.");
                operation_reply(b->op, b->error, b->message);
                backup_cleanup(b);
        }
}

static void on_tls_added(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        if (error < 0) {
                b->nbd_started = b->tls_added = false;
                backup_failf(b, -QSNAP_E_QEMU_FAILED, "QEMU cannot load the x509 credentials of %s: %s",
                             b->plan->tls_dir, strna(desc));
                operation_reply(b->op, b->error, b->message);
                return backup_cleanup(b);
        }
        nbd_start(b);
}

/* Test hook: $QSNAPD_TEST_BACKUP_SPEED (bytes/s) throttles each disk's copy. */
uint64_t backup_test_speed(void) {
        const char *e = getenv("QSNAPD_TEST_BACKUP_SPEED");
        return e ? strtoull(e, NULL, 10) : 0;
}

/* One transaction: per incremental disk its temporary bitmap (disabled:
 * an enabled one cannot be exported read-only) merged from the
 * checkpoint's bitmap in every layer that holds it; per disk its
 * blockdev-backup (push: full, or incremental by that bitmap; pull: none,
 * the point in time kept in the scratch node, which carries the bitmap). */
static void send_transaction(BackupOp *b) {
        BackupPlan *p = b->plan;
        _cleanup_free_ QmpBackupAction *actions = new0(QmpBackupAction, 3 * p->n_disks + strv_length(p->cp_nodes));
        _cleanup_free_ QmpBitmapSource *refs = NULL;
        bool pull = p->def->mode == BACKUP_MODE_PULL;
        size_t n = 0, n_refs = 0, k = 0;

        for (size_t i = 0; i < p->n_disks; i++)
                n_refs += strv_length(p->disks[i].since_nodes);
        refs = new0(QmpBitmapSource, n_refs + 1);
        if (!actions || !refs)
                return backup_abandon_start(b, -ENOMEM, "Out of memory.");
        /* The new checkpoint: its bitmaps start recording at the backup's
         * point in time (offline: nothing writes; added after, with qemu-img:
         * a persistent bitmap added to a read-only node would be lost). */
        for (char **node = p->cp_nodes; p->checkpoint && !p->offline && node && *node; node++)
                actions[n++] = (QmpBackupAction) { .type = QMP_BACKUP_BITMAP,
                                                   .bitmap_action = { .type = QMP_BITMAP_ADD, .node = *node,
                                                                      .name = p->checkpoint->name,
                                                                      .persistent = true } };
        for (size_t i = 0; i < p->n_disks; i++) {
                BackupDiskRun *r = p->disks + i;
                /* offline pull: the export is the disk's own node */
                const char *holder = pull && !p->offline ? r->node : r->device;

                if (r->bitmap && r->since) {
                        size_t first = k;

                        for (char **node = r->since_nodes; node && *node; node++)
                                refs[k++] = (QmpBitmapSource) { .node = *node, .name = r->since };
                        actions[n++] = (QmpBackupAction) { .type = QMP_BACKUP_BITMAP,
                                                           .bitmap_action = { .type = QMP_BITMAP_ADD, .node = holder,
                                                                              .name = r->bitmap, .disabled = true } };
                        actions[n++] = (QmpBackupAction) { .type = QMP_BACKUP_BITMAP,
                                                           .bitmap_action = { .type = QMP_BITMAP_MERGE, .node = holder,
                                                                              .name = r->bitmap,
                                                                              .sources = refs + first,
                                                                              .n_sources = k - first } };
                }
                if (pull && p->offline)
                        continue; /* nothing writes: no point in time to keep */
                actions[n++] = (QmpBackupAction) {
                        .type = QMP_BACKUP_BLOCKDEV_BACKUP,
                        .name = r->job_id,
                        .node = r->device,
                        .target = r->node,
                        .sync = pull ? "none" : r->since ? "incremental" : "full",
                        .bitmap = !pull && r->since ? r->bitmap : NULL,
                        .filter_node = pull ? r->filter_node : NULL,
                        .speed = backup_test_speed(),
                        .bulk = !pull,
                };
        }
        /* crash points: backup:transaction backup-offline:transaction */
        operation_crash_point(b->op, "transaction");
        if (n == 0)
                return on_transaction(b, 0, 0, NULL, NULL); /* a full offline pull: nothing to do in QEMU */
        if (BACKUP_SEND(b, 0, on_transaction, qmp_cmd_transaction_backup(b->domain->qmp, actions, n, cb, ud)) < 0)
                backup_abandon_start(b, -QSNAP_E_QEMU_FAILED, "Cannot send the backup transaction.");
}

static void on_frozen(Domain *d, int error, const char *message, json_object *result, void *userdata) {
        BackupOp *b = userdata;

        b->pending--;
        if (error < 0)
                return backup_abandon_start(b, error, message); /* thaws */
        /* crash points: backup:frozen */
        operation_crash_point(b->op, "frozen");
        send_transaction(b);
}

/* QUIESCE: the journal says "frozen" before the freeze goes out; the
 * transaction follows its answer. */
static void freeze_then_transaction(BackupOp *b) {
        _cleanup_free_ char *message = NULL;
        int r;

        if (!(b->plan->flags & BACKUP_BEGIN_QUIESCE))
                return send_transaction(b);
        b->frozen = true;
        r = backup_journal_write(b, backup_start_phase(b));
        if (r < 0) {
                b->frozen = false;
                return backup_abandon_start(b, r, "Cannot record the freeze.");
        }
        r = domain_agent_command(b->domain, "guest-fsfreeze-freeze", NULL, on_frozen, b, &message);
        if (r < 0)
                return backup_abandon_start(b, r, message); /* thaws: it may have gone out */
        b->pending++;
}

static void on_node_added(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        BackupDiskRun *r = b->plan->disks + index;

        if (error < 0) {
                domain_files_forget(b->domain, r->node);
                backup_failf(b, -QSNAP_E_QEMU_FAILED, "QEMU cannot open %s: %s", r->path, strna(desc));
        } else
                r->node_added = true;
        if (b->pending > 0)
                return;
        if (b->error < 0)
                return backup_cleanup(b);
        freeze_then_transaction(b);
}

/* Whether the file system under path takes O_DIRECT (tmpfs does not). */
static bool supports_direct_io(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECT | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        return fd >= 0;
}

static void add_nodes(BackupOp *b);

/* §6: the bitmap is in the top image and in consecutive layers below it,
 * each persistent, recording and consistent; else no incremental. */
static void on_inventory(Domain *d, int error, const char *message, BitmapInventory *inventory, void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = inventory;
        BackupOp *b = userdata;
        BackupPlan *p = b->plan;

        b->pending--;
        if (error < 0)
                return backup_abandon_start(b, -QSNAP_E_QEMU_FAILED, message ?: "Cannot read the disks' bitmaps.");
        for (size_t i = 0; i < p->n_disks; i++) {
                BackupDiskRun *r = p->disks + i;
                const BitmapDisk *bd = r->since ? bitmap_inventory_disk(inv, r->target) : NULL;
                _cleanup_free_ char *reason = NULL;
                size_t depth = 0;

                if (!r->since)
                        continue;
                if (!bd)
                        reason = strprintf("QEMU shows no images of disk %s", r->target);
                else if (bitmap_disk_check(bd, r->since, &depth, &reason) < 0)
                        return backup_abandon_start(b, -ENOMEM, "Out of memory.");
                if (reason) {
                        backup_failf(b, -QSNAP_E_OPERATION_INVALID, "No incremental backup from bitmap '%s': %s. Delete "
                                     "the checkpoint and take a full backup.", r->since, reason);
                        return backup_cleanup(b);
                }
                for (size_t l = 0; l < depth; l++)
                        if (!bd->layers[l].node || strv_extend(&r->since_nodes, bd->layers[l].node) < 0)
                                return backup_abandon_start(b, -QSNAP_E_QEMU_FAILED, "QEMU shows no node for a layer.");
        }
        /* The new checkpoint's name must be free in every top image (§6). */
        for (size_t i = 0; p->checkpoint && p->cp_targets && p->cp_targets[i]; i++) {
                const BitmapDisk *bd = bitmap_inventory_disk(inv, p->cp_targets[i]);

                if (bd && bd->n_layers > 0 && bitmap_layer_find(bd->layers, p->checkpoint->name)) {
                        backup_failf(b, -QSNAP_E_ALREADY_EXISTS, "A bitmap named '%s' is already in disk %s's image %s "
                                     "and no checkpoint claims it: CreateCheckpoint with REDEFINE adopts it, or choose "
                                     "another name.", p->checkpoint->name, p->cp_targets[i], bd->layers[0].path);
                        return backup_cleanup(b);
                }
        }
        add_nodes(b);
}

static void on_block_nodes(BackupOp *b, size_t index, int error, json_object *result, const char *desc) {
        BackupPlan *p = b->plan;

        if (error < 0)
                return backup_abandon_start(b, -QSNAP_E_QEMU_FAILED, "Cannot list QEMU's block nodes.");
        for (size_t i = 0; i < p->n_disks; i++) {
                BackupDiskRun *r = p->disks + i;
                const char *device = NULL;

                if (domain_find_format_node(b->domain, result, r->source, &device) <= 0)
                        return backup_abandon_start(b, -QSNAP_E_QEMU_FAILED,
                                                    "QEMU's block graph does not show the disk's active file as qsnapd knows it.");
                r->device = strdup(device);
                if (!r->device || (p->offline && p->def->mode == BACKUP_MODE_PULL && free_and_strdup(&r->node, device) < 0))
                        return backup_abandon_start(b, -ENOMEM, "Out of memory.");
        }
        for (char **src = p->cp_sources; src && *src; src++) {
                const char *node = NULL;

                if (domain_find_format_node(b->domain, result, *src, &node) <= 0 || strv_extend(&p->cp_nodes, node) < 0)
                        return backup_abandon_start(b, -QSNAP_E_QEMU_FAILED,
                                                    "QEMU's block graph does not show a disk's active file as qsnapd knows it.");
        }
        for (size_t i = 0; i < p->n_disks; i++)
                if (p->disks[i].since || p->checkpoint) {
                        BitmapInventory *inv = NULL;

                        /* Which layers hold each checkpoint's bitmap, and whether it is
                         * usable: from the same reply (one QMP round trip less). */
                        if (bitmap_inventory_from_nodes(b->domain, result, &inv) < 0)
                                return backup_abandon_start(b, -QSNAP_E_QEMU_FAILED, "Cannot read the disks' bitmaps.");
                        b->pending++; /* on_inventory() counts it back */
                        return on_inventory(b->domain, 0, NULL, inv, b);
                }
        add_nodes(b);
}

static void add_nodes(BackupOp *b) {
        BackupPlan *p = b->plan;
        bool pull = p->def->mode == BACKUP_MODE_PULL;

        /* The files, then the journal that names them with everything the
         * rollback needs (the nodes to delete, the disks' nodes that get a
         * temporary bitmap, the new checkpoint's nodes): one write, before
         * QEMU holds anything of the backup. Offline, both happened before
         * its QEMU started (offline.c), which dies with qsnapd. */
        if (!p->offline) {
                _cleanup_free_ char *message = NULL;
                int r;

                r = backup_create_files(b, &message);
                if (r >= 0) {
                        r = backup_journal_write(b, backup_start_phase(b));
                        if (r < 0)
                                message = strprintf("Cannot write the backup's journal: %s", qsnap_strerror(r));
                }
                if (r < 0) {
                        backup_fail(b, r, message);
                        return backup_cleanup(b);
                }
        }
        /* crash points: backup:prepared backup-offline:prepared */
        operation_crash_point(b->op, "prepared");
        if (pull && p->offline)
                return freeze_then_transaction(b); /* the disks' own nodes are exported */

        for (size_t i = 0; i < p->n_disks; i++) {
                _cleanup_free_ char *filename = NULL, *message = NULL;
                BackupDiskRun *r = p->disks + i;
                QmpCache cache;
                bool direct;
                int k;

                /* QEMU gets the target by descriptor, never by name. */
                k = domain_files_pass(b->domain, r->node, r->path, false, &filename, &message);
                if (k < 0) {
                        backup_fail(b, k == -ENOMEM ? k : -QSNAP_E_QEMU_FAILED, strna(message));
                        break;
                }
                /* A pull's scratch node stands alone: it holds only the old
                 * data the guest overwrote, read through the snapshot-access
                 * node (which reads the rest from the disk). A push target
                 * takes O_DIRECT with aio=native where its file system can:
                 * QEMU's thread pool cost 2-4x the CPU for the same copy;
                 * and QEMU's preallocate filter under it, so that the
                 * O_DIRECT writes do not extend the file one request at a
                 * time (docs/performance.md, "Backups"). */
                direct = !pull && supports_direct_io(r->path);
                cache = (QmpCache) { .given = true, .direct = direct, .aio = direct ? "native" : NULL };
                if (BACKUP_SEND(b, i, on_node_added,
                                qmp_cmd_blockdev_add_copy_target(b->domain->qmp, r->node, disk_format_to_string(r->format),
                                                                 filename, NULL, &cache, !pull, cb, ud)) < 0) {
                        domain_files_forget(b->domain, r->node);
                        backup_fail(b, -QSNAP_E_QEMU_FAILED, "Cannot send blockdev-add.");
                        break;
                }
        }
        if (b->pending == 0)
                backup_cleanup(b);
}

int backup_create_files(BackupOp *b, char **ret_message) {
        BackupPlan *p = b->plan;
        int r;

        for (size_t i = 0; i < p->n_disks; i++) {
                BackupDiskRun *dr = p->disks + i;

                _cleanup_close_ int dirfd = -EBADF;
                const char *run = b->domain->manager->config.runtime_dir;

                if (dr->reuse || (p->offline && p->def->mode == BACKUP_MODE_PULL))
                        continue;
                /* A caller's file: the gate again, and created in the folder
                 * it checks (our scratch files in the runtime dir need none). */
                if (strncmp(dr->path, run, strlen(run)) == 0 && dr->path[strlen(run)] == '/')
                        dirfd = AT_FDCWD;
                else {
                        r = gate_open_folder(b->domain, dr->path, "The backup file", &dirfd, ret_message);
                        if (r < 0)
                                return r;
                }
                r = image_create_target_at(dirfd, dirfd == AT_FDCWD ? dr->path : fs_basename(dr->path), dr->path,
                                           dr->format, dr->size, ret_message);
                if (r < 0)
                        /* the name taken, a link where the file goes: named; the rest is the system's */
                        return r == -EEXIST ? -QSNAP_E_ALREADY_EXISTS : r == -ELOOP ? -QSNAP_E_PATH_NOT_ALLOWED
                                             : r == -ENOSPC           ? -QSNAP_E_NO_SPACE
                                                                      : r;
                dr->created = true;
        }
        return 0;
}

void backup_start(Operation *o) {
        BackupOp *b = o->plan;

        if (BACKUP_SEND(b, 0, on_block_nodes, qmp_cmd_query_named_block_nodes(b->domain->qmp, cb, ud)) < 0)
                backup_abandon_start(b, -QSNAP_E_NOT_RUNNING, "The domain's QEMU went away.");
}

/* Before the call returns: the domain's one backup. Its files and journal
 * follow QEMU's block graph (add_nodes()). */
static int backup_prepare(Operation *o, char **ret_message) {
        BackupOp *b = o->plan;

        b->domain->backup = o;
        return 0;
}

int backup_begin(Domain *d, BackupPlan *plan, BackupStartedFunc done, void *userdata, char **ret_message) {
        _cleanup_(backup_plan_freep) BackupPlan *p = plan;
        BackupOp *b;

        if ((p->flags & BACKUP_BEGIN_QUIESCE) && !domain_is_active(d)) {
                *ret_message = strprintf("Domain '%s' is not running: QUIESCE needs a running guest.", d->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }
        if (p->offline)
                return backup_begin_offline(d, TAKE_PTR(p), done, userdata, ret_message);
        /* polkit took its time: the domain may have moved on. */
        if (d->backup || !domain_is_active(d) || !d->qmp || !d->jobs) {
                *ret_message = strprintf(d->backup ? "A backup of domain '%s' runs already; one at a time."
                                                   : "Domain '%s' is not running; backups need its QEMU.",
                                         d->def->name);
                return d->backup ? -QSNAP_E_BUSY : -QSNAP_E_NOT_RUNNING;
        }
        b = new0(BackupOp, 1);
        if (!b)
                return -ENOMEM;
        *b = (BackupOp) { .plan = TAKE_PTR(p), .domain = d, .done = done, .userdata = userdata };
        return operation_begin(d, &backup_kind, b, &b->op, backup_start, backup_prepare, ret_message);
}

const OperationKind backup_kind = {
        .name = BACKUP_JOURNAL_KIND,
        .crash_name = "backup",
        .lock = OPERATION_LOCK_NONE,
        .free_plan = backup_op_free,
        .reply = backup_op_reply,
        .recover = backup_recover,
};
