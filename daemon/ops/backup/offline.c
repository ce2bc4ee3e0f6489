/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A shut-off domain's push backup: each disk's chain is copied into its
 * target with `qemu-img convert -n` (the target made by qsnapd as for a
 * live push), one disk after the other, as the same BlockJob1 of type
 * "backup" (Cur/End: bytes, from qemu-img's -p percentages). The domain
 * stays locked meanwhile (Start, snapshots: Busy), so the images do not
 * change under the copy. Abort kills qemu-img; a failed or aborted backup
 * removes the targets qsnapd created. Journal kind "backup-offline": a
 * qsnapd killed meanwhile takes qemu-img with it (PR_SET_PDEATHSIG), so the
 * next one removes the incomplete targets and reports the job failed
 * under its path. Why qemu-img and not a paused QEMU: docs/decisions.md.
 */
#include <stdio.h>

#include "config.h"
#include "core/domain-jobs.h"
#include "core/gate.h"
#include "core/manager.h"
#include "ops/backup/internal.h"
#include "qemu/child.h"
#include "qemu/img.h"
#include "util/error.h"
#include "util/util.h"

static void offline_progress(BackupOp *b) {
        BackupPlan *p = b->plan;
        uint64_t cur = 0, end = 0;

        for (size_t i = 0; i < p->n_disks; i++) {
                end += p->disks[i].size;
                if (i < b->index)
                        cur += p->disks[i].size;
                else if (i == b->index)
                        cur += p->disks[i].size / 100 * b->percent;
        }
        if (!b->job || (cur == b->job->cur && end == b->job->end))
                return;
        job_local_update(b->job, JOB_STATE_RUNNING, cur, end, NULL);
        domain_local_job_progress(b->domain, b->job);
}

static void offline_next(BackupOp *b);

static void on_convert_output(Child *c, const char *chunk, void *userdata) {
        BackupOp *b = userdata;
        const char *p = chunk, *last = NULL;
        double v;

        /* qemu-img -p: "    (12.34/100%)" */
        while ((p = strchr(p, '(')))
                last = p++;
        if (last && sscanf(last, "(%lf/100%%)", &v) == 1 && v >= 0 && v <= 100 && (unsigned) v != b->percent) {
                b->percent = (unsigned) v;
                offline_progress(b);
        }
}

/* qemu-img's own words: after its last progress line, without blanks around. */
static const char *convert_error(char *text) {
        char *start = text ? strrchr(text, ')') : NULL, *end;

        start = start ? start + 1 : text;
        if (!start)
                return "";
        start += strspn(start, " \t\r\n");
        end = start + strlen(start);
        while (end > start && strchr(" \t\r\n", end[-1]))
                *--end = 0;
        return start;
}

static void on_convert_done(Child *c, int status, const char *output, void *userdata) {
        BackupOp *b = userdata;
        BackupDiskRun *r = b->plan->disks + b->index;
        _cleanup_free_ char *text = strdup(strempty(output));

        b->child = child_free(b->child); /* output is gone from here on: copied above */
        if (status != 0) {
                backup_failf(b, -QSNAP_E_QEMU_FAILED, "qemu-img convert of disk %s failed (status %d): %s",
                             r->target, status, convert_error(text));
                return backup_finish(b);
        }
        log_info("Domain '%s': disk %s copied to %s.", b->domain->def->name, r->target, r->path);
        b->index++;
        b->percent = 0;
        offline_progress(b);
        offline_next(b);
}

static void offline_next(BackupOp *b) {
        BackupPlan *p = b->plan;
        BackupDiskRun *r;
        int q;

        if (b->aborted)
                return backup_finish(b);
        if (b->index >= p->n_disks)
                return backup_finish(b);
        r = p->disks + b->index;
        {
                const DomainDisk *disk = domain_def_find_disk(b->domain->def, r->target);
                _cleanup_free_ char *rate = backup_test_speed() ? strprintf("%" PRIu64, backup_test_speed()) : NULL;
                /* By descriptor (qemu/img.h): the disk's chain as qsnapd reads
                 * it, the target qsnapd made, both through the path gate. */
                _cleanup_free_ char *source = img_placeholder(IMG_CHAIN, r->source, disk ? disk->format : DISK_FORMAT_QCOW2);
                _cleanup_free_ char *target = img_placeholder(IMG_LAYER, r->path, r->format);
                _cleanup_free_ char *message = NULL;
                _cleanup_(img_cmd_done) ImgCmd cmd = {};
                char *argv[12] = { (char *) QEMU_IMG_BINARY, (char *) "convert", (char *) "-p", (char *) "-n",
                                   (char *) "-O", (char *) disk_format_to_string(r->format) };
                size_t n = 6;

                if (!source || !target) {
                        backup_failf(b, -ENOMEM, "Out of memory.");
                        return backup_finish(b);
                }
                if (rate) {
                        argv[n++] = (char *) "-r";
                        argv[n++] = rate;
                }
                argv[n++] = source;
                argv[n++] = target;

                q = gate_img_command(b->domain, argv, &cmd, &message);
                if (q < 0) {
                        backup_failf(b, q, "%s", message ?: "Cannot open the images for qemu-img.");
                        return backup_finish(b);
                }
                /* crash points: backup:convert */
                operation_crash_point(b->op, "convert");
                q = img_cmd_spawn(&cmd, b->domain->manager->event, on_convert_output, on_convert_done, b, &b->child);
        }
        if (q < 0) {
                backup_failf(b, q, "Cannot run qemu-img: %s", qsnap_strerror(q));
                backup_finish(b);
        }
}

static int offline_abort(Job *j, void *data) {
        BackupOp *b = data;

        if (b->aborted)
                return 0;
        b->aborted = true;
        log_info("Domain '%s': backup %s is aborted.", b->domain->def->name, j->id);
        if (b->child) {
                b->child = child_free(b->child);
                backup_finish(b);
        }
        return 0;
}

static void offline_start(Operation *o) {
        operation_reply(o, 0, NULL);
        offline_next(o->plan);
}

int backup_begin_offline(Domain *d, BackupPlan *plan, BackupStartedFunc done, void *userdata, char **ret_message) {
        _cleanup_(backup_plan_freep) BackupPlan *p = plan;
        BackupOp *b;
        Operation *o;
        int r;

        if (domain_is_busy(d) || d->backup) {
                *ret_message = strprintf("Domain '%s' is busy with another operation.", d->def->name);
                return -QSNAP_E_BUSY;
        }
        b = new0(BackupOp, 1);
        if (!b)
                return -ENOMEM;
        *b = (BackupOp) { .plan = TAKE_PTR(p), .domain = d, .done = done, .userdata = userdata, .running = true };
        r = operation_new(d, &backup_offline_kind, b, &o);
        if (r < 0)
                return r;
        b->op = o;
        d->backup = o;
        r = backup_create_files(b, ret_message);
        if (r >= 0)
                r = backup_journal_write(b, "running");
        if (r >= 0)
                r = backup_local_job_new(b);
        if (r >= 0)
                r = operation_start_deferred(o, offline_start);
        if (r < 0) {
                backup_remove_files(b, false);
                if (b->job) {
                        /* shown already: it ends, failed */
                        b->error = r;
                        b->message = strdup(strempty(*ret_message));
                        b->job->local_abort = NULL;
                        job_local_update(b->job, JOB_STATE_FAILED, 0, 0, "Cannot start the backup.");
                        domain_local_job_end(d, b->job);
                }
                operation_cancel(o);
                return r;
        }
        b->job->local_abort = offline_abort;
        log_info("Domain '%s': offline push backup %s of %zu disk(s) with qemu-img.", d->def->name, b->plan->id,
                 b->plan->n_disks);
        return 0;
}

const OperationKind backup_offline_kind = {
        .name = BACKUP_OFFLINE_JOURNAL_KIND,
        .crash_name = "backup",
        .lock = OPERATION_LOCK_SNAPSHOT,
        .free_plan = backup_op_free,
        .reply = backup_op_reply,
        .recover = backup_offline_recover,
};
