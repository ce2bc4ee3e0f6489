/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Delete, the run: an Operation (core/operation.c) whose plan is
 * the DeleteOp below. The victims go one at a time. An external merge
 * runs as one local BlockJob1 ("snapshot-delete") whose Cur/End add up
 * the steps (100 per step): qemu-img steps as children, QEMU steps
 * (block-commit, block-stream, snapshot-delete) as jobs of the job
 * tracker owned by the delete, under the local job's id so that a
 * restarted qsnapd adopts them under that path. Only once every step of a
 * victim succeeded are its metadata removed and the recorded file names
 * rewritten, in one store transaction, and only then are files no longer
 * referenced unlinked. A failure leaves that victim (and those after it)
 * in place and deletable again.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <json-c/json.h>

#include "config.h"
#include "core/bitmaps.h"
#include "core/disk.h"
#include "core/domain-jobs.h"
#include "core/files.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/operation.h"
#include "core/nvram.h"
#include "core/qemu-files.h"
#include "ops/snapshot-delete.h"
#include "ops/snapshot-delete/internal.h"
#include "qemu/child.h"
#include "qemu/image.h"
#include "qemu/img.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/util.h"


/* ---- execution ---- */

typedef struct DeleteOp {
        Domain *domain;        /* borrowed: the operation holds the reference */
        Operation *op;
        uint64_t flags;
        char **victims;        /* names, leaves first */
        size_t index;          /* the victim at work */
        VictimPlan plan;
        size_t action;         /* the action at work */
        size_t steps_done, steps_total;
        unsigned step_percent;
        Job *job;              /* the merge's job (qsnapd's own, on the bus), once there is one */
        Job *step;             /* the QEMU job of the step at work (owned: qemu/job.c drives it) */
        Child *child;
        char *step_id;         /* a QEMU step's job id while QEMU starts it */
        char **qmp_nodes;
        size_t pending;
        int error;
        char *message;
        SnapshotDeleteFunc done;
        void *userdata;
        char *drop_node;       /* a QEMU merge step: the node that leaves the graph */
        bool aborted;
        BitmapActions bitmaps; /* a commit step's bitmap merge, sent once it runs (docs/checkpoints.md §2.6) */
} DeleteOp;

static void delete_op_free(void *p) {
        DeleteOp *op = p;

        strv_free(op->victims);
        bitmap_actions_done(&op->bitmaps);
        delete_victim_plan_done(&op->plan);
        child_free(op->child);
        free(op->step_id);
        strv_free(op->qmp_nodes);
        free(op->message);
        free(op->drop_node);
        job_disown(op->step);
        job_unref(op->step);
        if (op->job)
                op->job->local_abort = NULL;
        job_unref(op->job);
        free(op);
}

static void delete_op_reply(Operation *o, int error, const char *message) {
        DeleteOp *op = o->plan;

        if (op->done)
                op->done(o->domain, error, message, error < 0 ? NULL : op->job, op->userdata);
}

static void op_progress(DeleteOp *op) {
        if (!op->job)
                return;
        job_local_update(op->job, JOB_STATE_RUNNING, op->steps_done * 100 + op->step_percent,
                         MAX(op->steps_total, op->steps_done) * 100, NULL);
        domain_local_job_progress(op->domain, op->job);
}

static void op_finish(DeleteOp *op, int error, const char *message) {
        Domain *d = op->domain;

        op->child = child_free(op->child);
        if (error < 0)
                /* The snapshot stays and can be deleted again (the journal goes). */
                log_warning("Domain '%s': deleting snapshot '%s' failed: %s", d->def->name,
                            op->index < strv_length(op->victims) ? op->victims[op->index] : "?", strna(message));
        /* Free for the next call, journal gone, before anyone hears of the end. */
        operation_journal_remove(op->op);
        operation_unlock(op->op);
        if (op->job) {
                op->job->local_abort = NULL;
                job_local_update(op->job, error < 0 ? (op->aborted ? JOB_STATE_CANCELED : JOB_STATE_FAILED) : JOB_STATE_COMPLETED,
                                 error < 0 ? op->job->cur : op->job->end, op->job->end, error < 0 ? strna(message) : NULL);
                domain_local_job_end(d, op->job);
        }
        operation_finish(op->op, error, message);
}

static void op_finishf(DeleteOp *op, int error, const char *fmt, ...) _printf_(3, 4);
static void op_finishf(DeleteOp *op, int error, const char *fmt, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&message, fmt, ap) < 0)
                message = NULL;
        va_end(ap);
        op_finish(op, error, message);
}

static void op_next_victim(DeleteOp *op);
static void op_run_action(DeleteOp *op);

/* Every action of the victim succeeded: its metadata go, then its files. */
static void op_victim_done(DeleteOp *op) {
        Domain *d = op->domain;
        _cleanup_free_ char *message = NULL;
        Snapshot *s = snapshot_tree_find(&d->snapshots, op->victims[op->index]);
        int r;

        if (op->plan.n_renames > 0)
                domain_apply_renames(d, op->plan.renames, op->plan.n_renames);
        /* crash points: delete:merged */
        operation_crash_point(op->op, "merged");
        if (s) {
                r = snapshot_metadata_commit(d, &s, 1, op->plan.renames, op->plan.n_renames, &message);
                if (r < 0)
                        return op_finish(op, r, message ?: "Cannot store the snapshot metadata.");
        }
        (void) delete_journal_write(op->op, op->victims[op->index], op->job ? op->job->id : NULL, "metadata", &op->plan);
        /* crash points: delete:metadata */
        operation_crash_point(op->op, "metadata");
        domain_remove_unreferenced_files(d, op->plan.unlink);
        operation_journal_remove(op->op);
        log_info("Domain '%s': snapshot '%s' deleted.", d->def->name, op->victims[op->index]);
        delete_victim_plan_done(&op->plan);
        op->index++;
        op_next_victim(op);
}

/* One step done: on to the next. */
static void op_step_done(DeleteOp *op) {
        op->action++;
        op->steps_done++;
        op->step_percent = 0;
        op_progress(op);
        op_run_action(op);
}

static void on_command_output(Child *c, const char *chunk, void *userdata) {
        DeleteOp *op = userdata;
        const char *p = chunk, *last = NULL;
        double v;

        /* qemu-img -p: "    (12.34/100%)" */
        while ((p = strchr(p, '(')))
                last = p++;
        if (last && sscanf(last, "(%lf/100%%)", &v) == 1 && v >= 0 && v <= 100) {
                op->step_percent = (unsigned) v;
                op_progress(op);
        }
}

static void on_command_done(Child *c, int status, const char *output, void *userdata) {
        DeleteOp *op = userdata;
        Action *a = op->plan.actions + op->action;
        /* output is the child's: it goes only after the last use of output. */
        Child *child = TAKE_PTR(op->child);

        /* A delete interrupted after QEMU removed the tag: nothing to do. */
        if (status != 0 && streq(a->what, "snapshot") && strstr(output, "not found")) {
                log_info("Domain '%s': the internal snapshot was gone from %s already.", op->domain->def->name,
                         img_arg_display(a->argv[strv_length(a->argv) - 1]));
                status = 0;
        }
        if (status != 0) {
                op_finishf(op, -QSNAP_E_QEMU_FAILED, "qemu-img %s failed (status %d): %s", a->argv[1], status, output);
                child_free(child);
                return;
        }
        child_free(child);
        op_step_done(op);
}

/* ---- live steps: QEMU jobs, driven by the job tracker (qemu/job.c) ---- */

/* Tracks the QEMU job of this step as ours (owned: the domain's job glue
 * leaves it alone, the bus shows the delete's own job). */
static int op_track_step(DeleteOp *op, const char *id, const char *disk, bool auto_finalize,
                         const JobObserver *observer) {
        Domain *d = op->domain;
        int r;

        r = d->jobs ? job_tracker_add_job(d->jobs, id, &(JobSpec) {
                              .type = JOB_TYPE_SNAPSHOT_DELETE,
                              .disk = disk,
                              .auto_finalize = auto_finalize,
                              .observer = observer,
                              .observer_userdata = op,
                      }, &op->step)
                    : -ENOTCONN;
        if (r < 0)
                return r;
        job_ref(op->step);
        return 0;
}

/* qsnapd leaves while QEMU works on a step: the journal stays, and the
 * next qsnapd adopts the job (a merge's has the delete job's id). */
static void on_step_detached(Job *j, void *userdata) {
        DeleteOp *op = userdata;

        operation_abandon(op->op);
}

static void op_step_ended(DeleteOp *op, Job *j) {
        assert(op->step == j);
        op->step = job_unref(op->step);
}

/* ---- live internal: a snapshot-delete job ---- */

static void on_internal_step_finished(Job *j, void *userdata) {
        DeleteOp *op = userdata;

        op_step_ended(op, j);
        if (j->state != JOB_STATE_COMPLETED)
                return op_finishf(op, -QSNAP_E_QEMU_FAILED, "QEMU could not delete the snapshot: %s",
                                  j->error ?: job_state_to_string(j->state));
        op_step_done(op);
}

static const JobObserver internal_step_observer = {
        .finished = on_internal_step_finished,
        .detached = on_step_detached,
};

static void on_qmp_delete_started(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                                  void *userdata) {
        DeleteOp *op = userdata;
        _cleanup_free_ char *id = NULL;
        int r;

        if (error < 0)
                return op_finishf(op, -QSNAP_E_QEMU_FAILED, "QEMU cannot delete the snapshot: %s", strna(desc));
        id = op->step_id;
        op->step_id = NULL;
        r = op_track_step(op, id, NULL, true, &internal_step_observer);
        if (r < 0)
                op_finishf(op, -QSNAP_E_QEMU_FAILED, "Cannot follow the snapshot-delete job: %s", qsnap_strerror(r));
}

static void qmp_delete_start(DeleteOp *op) {
        Domain *d = op->domain;
        Snapshot *s = snapshot_tree_find(&d->snapshots, op->victims[op->index]);
        size_t n;

        /* UEFI: the tag in the (qcow2) variable store goes too. */
        if (s && s->def->nvram_internal && def_firmware(domain_current_def(d)) &&
            !strv_contains((const char *const *) op->qmp_nodes, NVRAM_VARS_NODE) &&
            strv_extend(&op->qmp_nodes, NVRAM_VARS_NODE) < 0)
                return op_finish(op, -ENOMEM, "Out of memory.");
        n = strv_length(op->qmp_nodes);

        free(op->step_id);
        op->step_id = strprintf("qsnap-delete-%" PRIx64, now_usec(CLOCK_MONOTONIC));
        if (!op->step_id)
                return op_finish(op, -ENOMEM, "Out of memory.");
        if (qmp_cmd_snapshot_delete(d->qmp, op->step_id, op->victims[op->index], (const char *const *) op->qmp_nodes, n,
                                    on_qmp_delete_started, op) < 0)
                op_finish(op, -QSNAP_E_QEMU_FAILED, "Cannot send snapshot-delete.");
}

static void on_qmp_root_node(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;
        const char *node;

        if (error < 0 || qmp_parse_string(result, &node) < 0 || isempty(node)) {
                if (op->error == 0) {
                        op->error = -QSNAP_E_QEMU_FAILED;
                        op->message = strprintf("QEMU shows no block node for a disk: %s", strna(desc));
                }
        } else if (strv_extend(&op->qmp_nodes, node) < 0 && op->error == 0)
                op->error = -ENOMEM;
        if (--op->pending > 0)
                return;
        if (op->error < 0)
                return op_finish(op, op->error, op->message);
        qmp_delete_start(op);
}

static void op_run_qmp_internal(DeleteOp *op, Action *a) {
        Domain *d = op->domain;

        if (!d->qmp)
                return op_finish(op, -QSNAP_E_NOT_RUNNING, "The domain's QEMU went away.");
        op->qmp_nodes = strv_free(op->qmp_nodes);
        for (char **t = a->targets; t && *t; t++) {
                if (qmp_cmd_disk_root_node(d->qmp, *t, on_qmp_root_node, op) < 0)
                        return op_finish(op, -QSNAP_E_QEMU_FAILED, "Cannot send qom-get.");
                op->pending++;
        }
        if (op->pending == 0)
                op_finish(op, -QSNAP_E_QEMU_FAILED, "No disk to delete the snapshot from.");
}

/* ---- live external: block-commit / block-stream, one at a time ---- */

static void on_merge_step_progress(Job *j, void *userdata) {
        DeleteOp *op = userdata;
        unsigned p;

        if (j->end == 0)
                return;
        p = (unsigned) (MIN(j->cur, j->end) * 100 / j->end);
        if (p != op->step_percent) {
                op->step_percent = p;
                op_progress(op);
        }
}

/* An active commit is ready: the delete pivots by itself. */
static void on_merge_step_ready(Job *j, void *userdata) {
        DeleteOp *op = userdata;
        _cleanup_free_ char *message = NULL;

        /* crash points: delete:ready */
        operation_crash_point(op->op, "ready");
        /* Aborted: the cancel is on its way, the disk stays where it is. */
        if (op->aborted)
                return;
        if (job_pivot(j, NULL, NULL, &message) < 0)
                log_debug("Domain '%s': job verb refused: %s", op->domain->def->name, strna(message));
}

static void on_merge_step_pending(Job *j, void *userdata) {
        DeleteOp *op = userdata;

        /* crash points: delete:pending */
        operation_crash_point(op->op, "pending");
        if (job_finalize(j, true, NULL) < 0)
                log_debug("Domain '%s': cannot finalize merge job %s.", op->domain->def->name, j->id);
}

static void on_merge_step_finished(Job *j, void *userdata) {
        DeleteOp *op = userdata;

        op_step_ended(op, j);
        if (j->state == JOB_STATE_CANCELED || op->aborted)
                return op_finish(op, -ECANCELED, "The merge was aborted.");
        if (j->state != JOB_STATE_COMPLETED)
                return op_finishf(op, -QSNAP_E_QEMU_FAILED, "QEMU's merge job failed: %s", strna(j->error));
        /* A node we added stays open after the job dropped it (notes). */
        if (op->drop_node && op->drop_node[0] != '#')
                domain_node_del(op->domain, op->drop_node);
        op->drop_node = mfree(op->drop_node);
        /* QEMU switched the chain: the cache must read it again. */
        domain_chains_invalidate(op->domain);
        op_step_done(op);
}

static const JobObserver merge_step_observer = {
        .progress = on_merge_step_progress,
        .ready = on_merge_step_ready,
        .pending = on_merge_step_pending,
        .finished = on_merge_step_finished,
        .detached = on_step_detached,
};

static void on_bitmaps_sent(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                            void *userdata) {
        Domain *d = userdata;

        if (error < 0)
                log_warning("Domain '%s': a merge's bitmap step failed; checkpoints may miss changes: %s",
                            d->def->name, strna(desc));
}

/* The checkpoints' bitmaps follow the merge (docs/checkpoints.md §2.6,
 * §2.7), sent once the job runs: it has reopened the node they merge into
 * read-write (a stream into a middle layer, a commit's base: QEMU refuses
 * "Bitmap 'c1' is readonly" before), and the layers merged from stay in
 * the graph until the job is finalized. */
static int plan_step_bitmaps(DeleteOp *op, Action *a, json_object *nodes) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = NULL;
        const BitmapDisk *bd;
        size_t top;
        int r;

        bitmap_actions_done(&op->bitmaps);
        if (op->domain->checkpoints.n == 0)
                return 0;
        r = bitmap_inventory_from_nodes(op->domain, nodes, &inv);
        if (r < 0)
                return r;
        bd = bitmap_inventory_disk(inv, a->target);
        if (!bd || bd->n_layers == 0)
                return 0;
        top = bitmap_disk_layer_index(bd, a->top_file, 0);
        if (a->kind == ACTION_QMP_COMMIT)
                return bitmap_actions_commit(bd, top, bitmap_disk_layer_index(bd, a->base_file, bd->n_layers - 1),
                                             &op->bitmaps);
        return bitmap_actions_stream(bd, top, bitmap_disk_layer_index(bd, a->base_file, bd->n_layers),
                                     &op->bitmaps);
}

static void on_block_started(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;
        Action *a = op->plan.actions + op->action;
        _cleanup_free_ char *message = NULL;
        int r;

        if (error < 0)
                return op_finishf(op, -QSNAP_E_QEMU_FAILED, "QEMU cannot start the merge: %s", strna(desc));
        if (op->bitmaps.n > 0 &&
            qmp_cmd_transaction_bitmaps(qmp, op->bitmaps.actions, op->bitmaps.n, on_bitmaps_sent, op->domain) < 0)
                log_warning("Domain '%s': cannot send the bitmap merge of %s.", op->domain->def->name, a->what);
        bitmap_actions_done(&op->bitmaps);
        r = op_track_step(op, op->job->id, a->target, false, &merge_step_observer);
        if (r < 0)
                return op_finishf(op, -QSNAP_E_QEMU_FAILED, "Cannot follow the merge job: %s", qsnap_strerror(r));
        /* Aborted while QEMU started it. */
        if (op->aborted && job_abort(op->step, false, NULL, NULL, &message) < 0)
                log_debug("Domain '%s': cannot cancel the merge job: %s", op->domain->def->name, strna(message));
}

static void on_block_nodes(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;
        Action *a = op->plan.actions + op->action;
        const DomainDisk *disk = op->domain->live ? domain_def_find_disk(op->domain->live, a->target) : NULL;
        const char *device = NULL, *top = NULL, *base = NULL, *drop = NULL;
        Domain *d = op->domain;
        int64_t k;

        if (error < 0 || !disk)
                return op_finish(op, -QSNAP_E_QEMU_FAILED, "Cannot list QEMU's block nodes.");
        if (domain_find_format_node(d, result, a->kind == ACTION_QMP_STREAM ? a->top_file : disk->source, &device) <= 0 ||
            (a->kind == ACTION_QMP_COMMIT && a->top_file && domain_find_format_node(d, result, a->top_file, &top) <= 0) ||
            (a->base_file && domain_find_format_node(d, result, a->base_file, &base) <= 0))
                return op_finishf(op, -QSNAP_E_QEMU_FAILED, "QEMU does not run the files of disk %s as expected.", a->target);
        if (domain_find_format_node(d, result, a->drop_file, &drop) > 0) {
                op->drop_node = strdup(drop);
                if (!op->drop_node)
                        return op_finish(op, -ENOMEM, "Out of memory.");
        }
        log_debug("Domain '%s': %s on disk %s: device %s, top %s, base %s.", op->domain->def->name, a->what, a->target,
                  device, strna(top), strna(base));
        if (plan_step_bitmaps(op, a, result) < 0)
                return op_finish(op, -QSNAP_E_QEMU_FAILED, "Cannot plan the checkpoints' bitmaps for the merge.");
        /* QEMU knows the base as /dev/fdset/N: the header above it gets its
         * real name (an active commit rewrites no header). */
        if (a->kind == ACTION_QMP_COMMIT)
                k = qmp_cmd_block_commit(qmp, op->job->id, device, top, base,
                                         top && !streq(top, device) ? a->base_file : NULL, delete_test_speed(),
                                         on_block_started, op);
        else
                k = qmp_cmd_block_stream(qmp, op->job->id, device, base, base ? a->base_file : NULL,
                                         delete_test_speed(), on_block_started, op);
        if (k < 0)
                op_finish(op, -QSNAP_E_QEMU_FAILED, "Cannot start the merge job.");
}

static void op_run_qmp_block(DeleteOp *op, Action *a) {
        if (!op->domain->qmp || !op->job)
                return op_finish(op, -QSNAP_E_NOT_RUNNING, "The domain's QEMU went away.");
        if (qmp_cmd_query_named_block_nodes(op->domain->qmp, on_block_nodes, op) < 0)
                op_finish(op, -QSNAP_E_QEMU_FAILED, "Cannot send query-named-block-nodes.");
}

/* qemu-img on descriptors: every image opened now, through the gate. */
static void op_run_command(DeleteOp *op, Action *a) {
        _cleanup_(img_cmd_done) ImgCmd cmd = {};
        _cleanup_free_ char *message = NULL, *cmdline = NULL;
        int r;

        r = gate_img_command(op->domain, a->argv, &cmd, &message);
        if (r < 0)
                return op_finish(op, r, message ?: "Cannot open the images for qemu-img.");
        cmdline = strv_join(cmd.argv, " ");
        log_debug("Domain '%s': running %s", op->domain->def->name, strna(cmdline));
        r = img_cmd_spawn(&cmd, op->domain->manager->event, on_command_output, on_command_done, op, &op->child);
        if (r < 0)
                op_finish(op, r, "Cannot run qemu-img.");
}

static void op_run_action(DeleteOp *op) {
        Action *a;

        if (op->aborted)
                return op_finish(op, -ECANCELED, "The merge was aborted.");
        if (op->action >= op->plan.n_actions)
                return op_victim_done(op);
        a = op->plan.actions + op->action;
        /* Before each step, named after it. crash points: delete:commit delete:rebase
         * delete:rebase-name delete:snapshot delete:active-commit delete:stream delete:snapshot-delete */
        operation_crash_point(op->op, a->what);
        if (a->kind == ACTION_QMP_INTERNAL)
                return op_run_qmp_internal(op, a);
        if (a->kind == ACTION_QMP_COMMIT || a->kind == ACTION_QMP_STREAM)
                return op_run_qmp_block(op, a);
        op_run_command(op, a);
}

/* Abort of the merge job: the step at work stops (qemu-img killed, the
 * QEMU job cancelled); the snapshot stays, deletable again. */
static int op_abort(Job *j, void *data) {
        DeleteOp *op = data;
        _cleanup_free_ char *message = NULL;

        int r;

        if (op->aborted)
                return 0;
        if (op->child) {
                op->aborted = true;
                log_info("Domain '%s': the merge job %s is aborted.", op->domain->def->name, j->id);
                op->child = child_free(op->child);
                op_finish(op, -ECANCELED, "The merge was aborted.");
                return 0;
        }
        /* The QEMU job ends canceled, and with it the delete. Too late once
         * it finishes or switches the disk to its result: the step is
         * done on disk, so the delete goes on (the caller hears why). */
        if (op->step) {
                r = job_abort(op->step, false, NULL, NULL, &message);
                if (r == -QSNAP_E_OPERATION_INVALID) {
                        log_info("Domain '%s': the merge job %s cannot be aborted any more: %s", op->domain->def->name,
                                 j->id, strna(message));
                        return r;
                }
                if (r < 0)
                        log_debug("Domain '%s': cannot cancel the merge job: %s", op->domain->def->name, strna(message));
        }
        /* Between two steps (or QEMU starting one): the next one does not start. */
        op->aborted = true;
        log_info("Domain '%s': the merge job %s is aborted.", op->domain->def->name, j->id);
        return 0;
}

static void op_next_victim(DeleteOp *op) {
        Domain *d = op->domain;
        _cleanup_free_ char *message = NULL;
        Snapshot *s;
        int r;

        if (op->index >= strv_length(op->victims))
                return op_finish(op, 0, NULL);
        s = snapshot_tree_find(&d->snapshots, op->victims[op->index]);
        if (!s) {
                op->index++;
                return op_next_victim(op);
        }
        r = delete_plan_victim(d, s, false, &op->plan, &message);
        if (r < 0)
                return op_finish(op, r, message);
        r = delete_check_space(op->plan.space_dir, op->plan.bytes, &message);
        if (r < 0)
                return op_finish(op, r, message);
        op->action = 0;
        op->steps_total += op->plan.n_actions;
        if (op->plan.merge && !op->job) {
                _cleanup_free_ char *id = NULL;
                const char *disk = NULL;

                for (size_t i = 0; i < s->def->n_disks && !disk; i++)
                        if (s->def->disks[i].snapshot == SNAPSHOT_LOCATION_EXTERNAL)
                                disk = s->def->disks[i].name;
                id = strprintf("snapshot.delete-%s-%" PRIx64, strna(disk), (uint64_t) (now_usec(CLOCK_REALTIME) & 0xffffffffffULL));
                op->job = id ? job_new_local(id, JOB_TYPE_SNAPSHOT_DELETE, disk) : NULL;
                if (!op->job || domain_local_job_add(d, op->job) < 0)
                        return op_finish(op, -ENOMEM, "Out of memory.");
                op->job->local_abort = op_abort;
                op->job->local_abort_data = op;
                op_progress(op);
                log_info("Domain '%s': deleting snapshot '%s' merges data as job %s.", d->def->name, snapshot_name(s),
                         op->job->id);
                operation_reply(op->op, 0, NULL);
        }
        /* Before anything is touched: what a restarted qsnapd needs. */
        if (op->plan.n_actions > 0) {
                r = delete_journal_write(op->op, snapshot_name(s), op->job ? op->job->id : NULL, "merging", &op->plan);
                if (r < 0)
                        return op_finish(op, r, "Cannot record the delete's intent.");
                /* crash points: delete:intent */
                operation_crash_point(op->op, "intent");
        }
        op_run_action(op);
}

static void delete_start(Operation *o) {
        DeleteOp *op = o->plan;
        Domain *d = op->domain;
        _cleanup_free_ Snapshot **victims = NULL;
        _cleanup_free_ char *message = NULL;
        size_t n = 0;
        int r;

        /* crash points: delete:start */
        operation_crash_point(o, "start");
        if (!(op->flags & SNAPSHOT_DELETE_METADATA_ONLY))
                return op_next_victim(op);

        victims = new0(Snapshot *, strv_length(op->victims) + 1);
        if (!victims)
                return op_finish(op, -ENOMEM, "Out of memory.");
        for (char **v = op->victims; *v; v++) {
                Snapshot *x = snapshot_tree_find(&d->snapshots, *v);
                if (x)
                        victims[n++] = x;
        }
        r = snapshot_metadata_commit(d, victims, n, NULL, 0, &message);
        if (r >= 0)
                log_info("Domain '%s': metadata of %zu snapshot(s) deleted; their data stay.", d->def->name, n);
        op_finish(op, r, message);
}

int snapshot_delete(Domain *d, Snapshot *s, uint64_t flags, SnapshotDeleteFunc done, void *userdata, char **ret_message) {
        _cleanup_free_ Snapshot **victims = NULL;
        DeleteOp *op;
        size_t n;
        int r;

        r = snapshot_delete_check(s, flags, NULL, ret_message);
        if (r < 0)
                return r;
        r = delete_collect_victims(s, flags, &victims, &n);
        if (r < 0)
                return r;
        op = new0(DeleteOp, 1);
        if (!op)
                return -ENOMEM;
        *op = (DeleteOp) { .domain = d, .flags = flags, .done = done, .userdata = userdata };
        for (size_t i = 0; i < n && r >= 0; i++)
                r = strv_extend(&op->victims, snapshot_name(victims[i]));
        if (r >= 0 && !op->victims && !(op->victims = new0(char *, 1)))
                r = -ENOMEM;
        if (r < 0) {
                delete_op_free(op);
                return -ENOMEM;
        }
        /* Started from the loop, so `done` is never called from in here. */
        return operation_begin(d, &snapshot_delete_kind, op, &op->op, delete_start, NULL, ret_message);
}

const OperationKind snapshot_delete_kind = {
        .name = JOURNAL_KIND,
        .crash_name = "delete",
        .lock = OPERATION_LOCK_SNAPSHOT,
        .free_plan = delete_op_free,
        .reply = delete_op_reply,
        .recover = snapshot_delete_recover,
        .deferred = true,
};
