/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A shut-off domain's backup (docs/checkpoints.md §5): the same steps as
 * a running domain's (run.c), run by a paused `-machine none` QEMU of its
 * own (core/offline-qemu.c) that holds the chain read-only. Push, full or
 * incremental, copies into the targets with blockdev-backup; pull exports
 * each disk's top node itself over NBD (nothing writes, so no scratch
 * file and no fleecing), with the temporary bitmap of an incremental on
 * it. The images' bitmaps are never touched; the new checkpoint of
 * checkpoint_xml gets its bitmaps with `qemu-img bitmap --add` once the
 * backup succeeded and that QEMU quit. The domain stays locked meanwhile
 * (Start, snapshots: Busy). That QEMU dies with qsnapd: journal kind
 * "backup-offline", whose recovery removes what the backup made (targets,
 * the checkpoint's bitmaps when it got that far) and reports a backup that
 * ran failed under its path. Why a paused QEMU: docs/decisions.md.
 */
#include "core/domain-jobs.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/offline-qemu.h"
#include "ops/backup/internal.h"
#include "qemu/image.h"
#include "util/error.h"
#include "util/util.h"

bool backup_offline_qemu_runs(BackupOp *b) {
        return b->plan->offline && offline_qemu_runs(b->domain);
}

static void on_qemu_stopped(Domain *d, int error, const char *message, void *userdata) {
        backup_finish(userdata);
}

void backup_offline_stop(BackupOp *b) {
        offline_qemu_stop(b->domain, on_qemu_stopped, b);
}

/* The QEMU went away under the backup: it failed (its jobs fail next). */
static void on_qemu_gone(Domain *d, int error, const char *message, void *userdata) {
        BackupOp *b = userdata;

        backup_fail(b, error, message);
        backup_cleanup(b);
}

static void on_qemu_ready(Domain *d, int error, const char *message, void *userdata) {
        BackupOp *b = userdata;

        if (error < 0) {
                backup_fail(b, error, message);
                return backup_cleanup(b);
        }
        backup_start(b->op);
}

int backup_offline_add_checkpoint(BackupOp *b, char **ret_message) {
        BackupPlan *p = b->plan;
        size_t added = 0;
        int r;

        /* Journaled first: a recovery removes what may have been added. */
        r = backup_journal_write(b, "checkpoint");
        if (r < 0)
                return r;
        for (char **src = p->cp_sources; src && *src; src++, added++) {
                r = gate_img_bitmap(b->domain, "--add", NULL, *src, p->checkpoint->name, ret_message);
                if (r < 0)
                        break;
        }
        if (r >= 0) {
                /* crash points: backup-offline:checkpoint */
                operation_crash_point(b->op, "checkpoint");
                return 0;
        }
        for (size_t i = 0; i < added; i++) {
                _cleanup_free_ char *m = NULL;

                if (gate_img_bitmap(b->domain, "--remove", NULL, p->cp_sources[i], p->checkpoint->name, &m) < 0)
                        log_warning("Domain '%s': cannot remove bitmap '%s' from %s again: %s", b->domain->def->name,
                                    p->checkpoint->name, p->cp_sources[i], strna(m));
        }
        return r;
}

static void offline_start(Operation *o) {
        BackupOp *b = o->plan;
        _cleanup_free_ char *message = NULL;
        int r;

        r = offline_qemu_start(b->domain, on_qemu_ready, on_qemu_gone, b, &message);
        if (r < 0) {
                backup_fail(b, r, message);
                backup_cleanup(b);
        }
}

int backup_begin_offline(Domain *d, BackupPlan *plan, BackupStartedFunc done, void *userdata, char **ret_message) {
        _cleanup_(backup_plan_freep) BackupPlan *p = plan;
        BackupOp *b;
        Operation *o;
        int r;

        if (domain_is_busy(d) || d->backup || domain_is_active(d) || d->qmp) {
                *ret_message = strprintf("Domain '%s' is busy with another operation.", d->def->name);
                return -QSNAP_E_BUSY;
        }
        b = new0(BackupOp, 1);
        if (!b)
                return -ENOMEM;
        *b = (BackupOp) { .plan = TAKE_PTR(p), .domain = d, .done = done, .userdata = userdata };
        r = operation_new(d, &backup_offline_kind, b, &o);
        if (r < 0)
                return r;
        b->op = o;
        d->backup = o;
        r = backup_create_files(b, ret_message);
        if (r >= 0)
                r = backup_journal_write(b, "prepared");
        if (r >= 0)
                r = operation_start_deferred(o, offline_start);
        if (r < 0) {
                backup_remove_files(b, false);
                operation_cancel(o);
                return r;
        }
        log_info("Domain '%s': offline %s backup %s of %zu disk(s) by a paused QEMU.", d->def->name,
                 backup_mode_to_string(b->plan->def->mode), b->plan->id, b->plan->n_disks);
        return 0;
}

const OperationKind backup_offline_kind = {
        .name = BACKUP_OFFLINE_JOURNAL_KIND,
        .crash_name = "backup-offline",
        .lock = OPERATION_LOCK_SNAPSHOT,
        .free_plan = backup_op_free,
        .reply = backup_op_reply,
        .recover = backup_offline_recover,
};
