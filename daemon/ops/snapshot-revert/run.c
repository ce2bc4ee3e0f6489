/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Revert, the run: an Operation (core/operation.c) whose plan is
 * the RevertPlan.
 *   internal, memory:  snapshot-load into a QEMU whose definition matches
 *                      (the running one, or one started paused for it), a
 *                      job of this operation in the job tracker;
 *   internal, no memory: QEMU stopped (FORCE when it ran), qemu-img
 *                      snapshot -a on every disk;
 *   external:          QEMU stopped (FORCE when a running state is thrown
 *                      away), a NEW overlay per disk on the file the
 *                      snapshot froze, the definition pointed at it, the
 *                      overlays recorded as the snapshot's <revertDisks>;
 *                      a memory state is loaded by starting QEMU with
 *                      -incoming defer + migrate-incoming.
 * The old branch and every child stay untouched. The intent is journaled
 * in <state>/ops/<uuid>.snapshot-revert before anything is touched; the
 * undo stack puts the definition back and removes the new overlays when
 * a step fails. operation_crash_point(o, "<step>") (revert:<step>) marks
 * each step for the crash tests.
 */
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "core/bitmaps.h"
#include "core/disk.h"
#include "core/domain-jobs.h"
#include "core/files.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "core/operation.h"
#include "ops/snapshot-revert.h"
#include "ops/snapshot-revert/internal.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json-util.h"
#include "util/util.h"


#define LOAD_TIMEOUT_USEC (300 * USEC_PER_SEC)

/* ---- intent journal ---- */

static int intent_write(RevertPlan *p) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *disks = json_object_new_array();

        if (!o || !disks) {
                json_object_put(disks);
                return -ENOMEM;
        }
        json_object_object_add(o, "snapshot", json_object_new_string(p->name));
        json_object_object_add(o, "external", json_object_new_boolean(p->external));
        json_object_object_add(o, "memory", json_object_new_boolean(p->memory));
        json_object_object_add(o, "after", json_object_new_string(domain_state_to_string(p->after)));
        json_object_object_add(o, "loaded", json_object_new_boolean(p->loaded));
        /* QEMU was (re)started for the load: one that loaded nothing is of no use. */
        json_object_object_add(o, "restarted", json_object_new_boolean(!p->live_load));
        if (p->memory_file)
                json_object_object_add(o, "memory_file", json_object_new_string(p->memory_file));
        if (p->nvram_copy)
                json_object_object_add(o, "nvram_copy", json_object_new_string(p->nvram_copy));
        for (size_t i = 0; i < p->n_disks; i++) {
                json_object *e = json_object_new_object();

                if (!e)
                        return -ENOMEM;
                json_object_object_add(e, "target", json_object_new_string(p->disks[i].target));
                json_object_object_add(e, "file", json_object_new_string(p->disks[i].file));
                if (p->disks[i].overlay)
                        json_object_object_add(e, "overlay", json_object_new_string(p->disks[i].overlay));
                json_object_array_add(disks, e);
        }
        json_object_object_add(o, "disks", disks);
        return operation_journal_write(p->op, o);
}

/* ---- execution ---- */

static void snapshot_revert_reply(Operation *o, int error, const char *message) {
        RevertPlan *p = o->plan;

        if (p->done)
                p->done(o->domain, error, message, p->userdata);
}

static void revert_plan_free_op(void *p) {
        revert_plan_free(p);
}

/* The new overlays go again: only while no QEMU runs on them (the
 * definition was put back first). */
static int undo_overlay(Operation *o, void *data) {
        RevertDisk *rd = data;

        if (fs_unlink_nofollow(rd->overlay, S_IFREG) >= 0)
                log_debug("Removed overlay %s of the failed revert.", rd->overlay);
        return 0;
}

/* The stored definition comes back, but not under a running QEMU: then
 * the overlays it runs on stay too. */
static int undo_definition(Operation *o, void *data) {
        RevertPlan *p = o->plan;
        Domain *d = o->domain;
        DomainDef *old = NULL;

        if (domain_is_active(d) || domain_def_copy(p->old_def, &old) < 0)
                return -QSNAP_E_BUSY;
        domain_set_def(d, old);
        if (domain_save(d) < 0)
                log_error("Domain '%s': cannot store its definition back.", d->def->name);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
        return 0;
}

static void revert_fail(RevertPlan *p, int error, const char *fmt, ...) _printf_(3, 4);
static void revert_fail(RevertPlan *p, int error, const char *fmt, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&message, fmt, ap) < 0)
                message = NULL;
        va_end(ap);
        log_warning("Domain '%s': revert to snapshot '%s' failed: %s", p->domain->def->name, p->name, strna(message));
        operation_finish(p->op, error, message);
}

static bool in_revert_disks(SnapshotTree *t, const char *file) {
        for (Snapshot *o = t->first; o; o = o->next)
                for (size_t i = 0; i < o->def->n_revert_disks; i++)
                        if (streq_ptr(o->def->revert_disks[i].source, file))
                                return true;
        return false;
}

/* Overlays an earlier revert made that this one leaves behind: the ones
 * the domain ran on, and the ones s's <revertDisks> named until now. Only
 * files qsnapd made for a revert, never an image the user brought. */
static int revert_discarded_overlays(RevertPlan *p, Snapshot *s, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;

        for (size_t i = 0; i < p->old_def->n_disks; i++) {
                const char *f = p->old_def->disks[i].source;

                if (f && in_revert_disks(&p->domain->snapshots, f) && !strv_contains((const char *const *) l, f) &&
                    strv_extend(&l, f) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < s->def->n_revert_disks; i++) {
                const char *f = s->def->revert_disks[i].source;

                if (f && !strv_contains((const char *const *) l, f) && strv_extend(&l, f) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* The domain is in its new state: the metadata says so too. Overlays of
 * an earlier revert that nothing names any more go (libvirt removes them
 * too), so that revert loops do not fill the disk. */
static void revert_finish(RevertPlan *p) {
        Domain *d = p->domain;
        Snapshot *s = snapshot_tree_find(&d->snapshots, p->name);
        _cleanup_strv_free_ char **discarded = NULL;
        int r;

        if (!s)
                return revert_fail(p, -QSNAP_E_OPERATION_INVALID, "Snapshot '%s' went away during the revert.", p->name);
        if (p->external && revert_discarded_overlays(p, s, &discarded) < 0)
                log_oom(); /* they stay */
        if (p->external) {
                _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
                SnapshotDisk rd[p->n_disks ?: 1];

                for (size_t i = 0; i < p->n_disks; i++)
                        rd[i] = (SnapshotDisk) { .name = p->disks[i].target, .snapshot = SNAPSHOT_LOCATION_EXTERNAL,
                                                 .format = DISK_FORMAT_QCOW2, .source = p->disks[i].overlay };
                r = snapshot_def_copy(s->def, &def);
                if (r >= 0)
                        r = snapshot_def_set_revert_disks(def, rd, p->n_disks);
                if (r >= 0)
                        r = snapshot_tree_update(&d->snapshots, s, TAKE_PTR(def), true);
        } else
                r = snapshot_tree_set_current(&d->snapshots, s);
        if (r < 0)
                log_error_errno(r, "Domain '%s': reverted to '%s', but the metadata could not be stored: %m",
                                d->def->name, p->name);
        /* crash points: revert:metadata */
        operation_crash_point(p->op, "metadata");
        if (r >= 0 && discarded)
                domain_remove_unreferenced_files(d, discarded);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_CURRENT_SNAPSHOT);
        log_info("Domain '%s': reverted to snapshot '%s', now %s.", d->def->name, p->name,
                 domain_state_to_string(d->state));
        /* Reverted: a metadata failure undoes nothing. */
        operation_undo_clear(p->op);
        operation_finish(p->op, r < 0 ? r : 0, r < 0 ? "Reverted, but the snapshot metadata could not be stored." : NULL);
}

static void on_started(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0)
                return revert_fail(p, error, "%s", strna(message));
        /* crash points: revert:started */
        operation_crash_point(p->op, "started");
        revert_finish(p);
}

/* QEMU was started for the memory state and asked to load it. */
static void on_incoming_sent(Domain *d, void *userdata) {
        RevertPlan *p = userdata;

        /* crash points: revert:incoming */
        operation_crash_point(p->op, "incoming");
}

static int revert_start(RevertPlan *p, bool paused, DomainDoneFunc done) {
        _cleanup_free_ char *message = NULL;
        Domain *d = p->domain;
        uint64_t flags = paused ? DOMAIN_START_PAUSED : 0;
        int r;

        /* Our own lifecycle call: the snapshot lock is ours already. */
        operation_unlock(p->op);
        if (p->external && p->memory) {
                r = domain_start_incoming(d, flags, p->memory_file, on_incoming_sent, done, p, &message);
        } else
                r = domain_start(d, flags, done, p, &message);
        operation_lock(p->op);
        if (r < 0)
                revert_fail(p, r, "Cannot start domain '%s': %s", d->def->name, strna(message));
        return r;
}

/* ---- internal with memory: snapshot-load ---- */

static void load_after_state(RevertPlan *p);

static void on_state_set(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0)
                return revert_fail(p, -QSNAP_E_QEMU_FAILED, "QEMU did not take the state after the revert: %s", strna(desc));
        if (p->after == DOMAIN_RUNNING)
                domain_note_running(p->domain);
        else
                domain_note_paused(p->domain);
        revert_finish(p);
}

static void load_after_state(RevertPlan *p) {
        Domain *d = p->domain;
        int64_t r = 0;

        /* crash points: revert:loaded */
        operation_crash_point(p->op, "loaded");
        if (p->after == DOMAIN_RUNNING)
                r = qmp_cmd_cont(d->qmp, on_state_set, p);
        else
                r = qmp_cmd_stop(d->qmp, on_state_set, p);
        if (r < 0)
                revert_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send the state change to QEMU.");
}

static void on_load_failed_stopped(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        RevertPlan *p = userdata;
        _cleanup_free_ char *m = TAKE_PTR(p->message);

        revert_fail(p, p->error, "%s The guest's state was undefined, so QEMU was stopped: domain '%s' is shut off.",
                    strna(m), d->def->name);
}

/* A failed load leaves QEMU stopped in restore-vm with a guest half
 * loaded: it is stopped, the domain shut off, and QEMU's text reported. */
static void load_failed(RevertPlan *p, const char *why) {
        _cleanup_free_ char *message = NULL;
        Domain *d = p->domain;
        int r;

        p->error = -QSNAP_E_QEMU_FAILED;
        p->message = strprintf("QEMU could not load snapshot '%s': %s.", p->name, strna(why));
        if (!domain_is_active(d))
                return on_load_failed_stopped(d, 0, NULL, NULL, p);
        operation_unlock(p->op);
        r = domain_stop(d, 0, on_load_failed_stopped, p, &message);
        operation_lock(p->op);
        if (r < 0)
                on_load_failed_stopped(d, r, message, NULL, p);
}

/* The load job ended (qemu/job.c drove it: QEMU finalizes it itself). */
static void on_load_job_finished(Job *j, void *userdata) {
        RevertPlan *p = userdata;

        p->timer = sd_event_source_disable_unref(p->timer);
        if (j->state != JOB_STATE_COMPLETED)
                return load_failed(p, j->error ?: job_state_to_string(j->state));
        /* A restarted qsnapd must know the guest runs the snapshot now. */
        p->loaded = true;
        if (intent_write(p) < 0)
                log_warning("Domain '%s': cannot journal the finished load.", p->domain->def->name);
        load_after_state(p);
}

/* qsnapd leaves during the load: the journal says what the next one finds. */
static void on_load_job_detached(Job *j, void *userdata) {
        RevertPlan *p = userdata;

        operation_abandon(p->op);
}

static const JobObserver load_job_observer = {
        .finished = on_load_job_finished,
        .detached = on_load_job_detached,
};

static int on_load_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        RevertPlan *p = userdata;

        p->timer = sd_event_source_disable_unref(p->timer);
        job_disown(p->load_job);
        load_failed(p, "it took too long");
        return 0;
}

static void on_snapshot_load(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        RevertPlan *p = userdata;
        Domain *d = p->domain;
        int r;

        if (error < 0)
                return revert_fail(p, -QSNAP_E_QEMU_FAILED, "QEMU cannot start loading snapshot '%s': %s", p->name, strna(desc));
        r = d->jobs ? job_tracker_add_job(d->jobs, p->job_id, &(JobSpec) {
                              .type = JOB_TYPE_SNAPSHOT_REVERT,
                              .auto_finalize = true,
                              .observer = &load_job_observer,
                              .observer_userdata = p,
                      }, &p->load_job)
                    : -ENOTCONN;
        if (r < 0)
                return load_failed(p, "qsnapd cannot follow the snapshot-load job");
        job_ref(p->load_job);
        r = sd_event_add_time_relative(d->manager->event, &p->timer, CLOCK_MONOTONIC, LOAD_TIMEOUT_USEC, 0,
                                       on_load_timeout, p);
        if (r < 0)
                log_warning_errno(r, "Domain '%s': cannot arm the load's deadline: %m", d->def->name);
}

static void load_send_now(RevertPlan *p) {
        const char *devices[p->n_disks + 1];
        size_t n = p->n_disks;

        for (size_t i = 0; i < p->n_disks; i++)
                devices[i] = p->disks[i].node;
        /* UEFI: the variable store's state comes back too. */
        if (p->nvram_internal && n > 0)
                devices[n++] = NVRAM_VARS_NODE;
        if (p->n_disks == 0)
                return revert_fail(p, -QSNAP_E_UNSUPPORTED, "Snapshot '%s' has no disk to load its memory state from.", p->name);
        p->job_id = strprintf("qsnap-load-%" PRIx64, now_usec(CLOCK_MONOTONIC));
        if (!p->job_id)
                return revert_fail(p, -ENOMEM, "Out of memory.");
        /* crash points: revert:load */
        operation_crash_point(p->op, "load");
        if (qmp_cmd_snapshot_load(p->domain->qmp, p->job_id, p->name, devices[0], devices, n, on_snapshot_load,
                                  p) < 0)
                revert_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send snapshot-load.");
}

/* An internal revert changes data no bitmap records, and snapshot-load
 * refuses while a disk has enabled bitmaps ("Device has active dirty
 * bitmaps"): the bitmaps of the reverted images go first, in one
 * transaction, and their checkpoints show as unusable (docs/checkpoints.md
 * §2.9; Delete clears them). */
static void on_bitmaps_dropped(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                               void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0)
                return revert_fail(p, -QSNAP_E_QEMU_FAILED, "QEMU refused to remove the disks' bitmaps: %s",
                                   strna(desc));
        load_send_now(p);
}

static void on_load_inventory(Domain *d, int error, const char *message, BitmapInventory *inventory,
                              void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = inventory;
        _cleanup_free_ QmpBitmapAction *a = NULL;
        RevertPlan *p = userdata;
        size_t n = 0, max = 0;

        if (error < 0)
                return revert_fail(p, error, "Cannot read the disks' bitmaps: %s", strna(message));
        for (size_t i = 0; i < inv->n_disks; i++)
                max += inv->disks[i].n_layers > 0 ? inv->disks[i].layers[0].n_bitmaps : 0;
        a = new0(QmpBitmapAction, max);
        if (!a)
                return revert_fail(p, -ENOMEM, "Out of memory.");
        for (size_t i = 0; i < p->n_disks; i++) {
                const BitmapDisk *bd = bitmap_inventory_disk(inv, p->disks[i].target);
                const BitmapLayer *top = bd && bd->n_layers > 0 ? bd->layers : NULL;

                for (size_t k = 0; top && top->node && k < top->n_bitmaps; k++)
                        if (top->bitmaps[k].recording)
                                a[n++] = (QmpBitmapAction) { .type = QMP_BITMAP_REMOVE, .node = top->node,
                                                             .name = top->bitmaps[k].name };
        }
        if (n == 0)
                return load_send_now(p);
        if (qmp_cmd_transaction_bitmaps(d->qmp, a, n, on_bitmaps_dropped, p) < 0)
                revert_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send the bitmap transaction.");
}

static void load_send(RevertPlan *p) {
        if (p->domain->checkpoints.n == 0)
                return load_send_now(p);
        if (bitmap_inventory_live(p->domain, on_load_inventory, p) < 0)
                revert_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot ask QEMU for the disks' bitmaps.");
}

/* Offline, the same for qemu-img snapshot -a. */
static int drop_enabled_bitmaps(Domain *d, const char *file, char **ret_message) {
        _cleanup_close_ int fd = -EBADF;
        ImageBitmap *b = NULL;
        size_t n = 0;
        int r;

        /* Listed from the file the gate opens, as every read of an image. */
        r = gate_open_image(d, file, "The image", &fd, ret_message);
        if (r < 0)
                return r;
        r = image_read_bitmaps_fd(fd, file, &b, &n, ret_message);
        for (size_t k = 0; r >= 0 && k < n; k++)
                if (b[k].enabled)
                        r = gate_img_bitmap(d, "--remove", NULL, file, b[k].name, ret_message);
        image_bitmaps_free(b, n);
        return r;
}

/* An external revert's new overlay gets the bitmaps usable on the
 * snapshot's file (§2.9): checkpoints made before the snapshot stay
 * usable on the new branch; later ones show as missing there. */
static int overlay_follow(Domain *d, RevertDisk *rd, char **ret_message) {
        _cleanup_strv_free_ char **names = NULL;
        _cleanup_free_ uint64_t *gran = NULL;
        BitmapDisk bd = {};
        size_t n = 0;
        int r;

        if (rd->format != DISK_FORMAT_QCOW2)
                return 0;
        r = bitmap_disk_offline(d, rd->target, rd->file, rd->format, &bd, ret_message);
        if (r < 0)
                return r;
        r = bitmap_disk_followers(&bd, &names, &gran, &n);
        bitmap_disk_done(&bd);
        for (size_t k = 0; r >= 0 && k < n; k++)
                r = gate_img_bitmap(d, "--add", NULL, rd->overlay, names[k], ret_message);
        return r;
}

typedef struct NodeCall {
        RevertPlan *plan;
        RevertDisk *disk;
} NodeCall;

static void on_root_node(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        NodeCall *c = userdata;
        RevertPlan *p = c->plan;
        const char *node;

        if (error < 0 || qmp_parse_string(result, &node) < 0 || isempty(node)) {
                if (p->error == 0) {
                        p->error = -QSNAP_E_QEMU_FAILED;
                        p->message = strprintf("QEMU shows no block node for disk %s: %s", c->disk->target, strna(desc));
                }
        } else if (!(c->disk->node = strdup(node)) && p->error == 0)
                p->error = -ENOMEM;
        free(c);
        if (--p->pending > 0)
                return;
        if (p->error < 0) {
                _cleanup_free_ char *m = TAKE_PTR(p->message);
                return revert_fail(p, p->error, "%s", strna(m));
        }
        load_send(p);
}

static void load_begin(RevertPlan *p) {
        Domain *d = p->domain;

        if (!d->qmp)
                return revert_fail(p, -QSNAP_E_NOT_RUNNING, "Domain '%s' has no monitor connection.", d->def->name);
        for (size_t i = 0; i < p->n_disks; i++) {
                NodeCall *c = new0(NodeCall, 1);

                if (!c || qmp_cmd_disk_root_node(d->qmp, p->disks[i].target, on_root_node, c) < 0) {
                        free(c);
                        p->error = -QSNAP_E_QEMU_FAILED;
                        p->message = strdup("Cannot send qom-get.");
                        break;
                }
                *c = (NodeCall) { .plan = p, .disk = p->disks + i };
                p->pending++;
        }
        if (p->pending == 0) {
                _cleanup_free_ char *m = TAKE_PTR(p->message);
                revert_fail(p, p->error ?: -QSNAP_E_QEMU_FAILED, "%s", m ?: "No disk to load from.");
        }
}

static void on_started_for_load(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0)
                return revert_fail(p, error, "%s", strna(message));
        load_begin(p);
}

/* ---- the steps ---- */


static int switch_definition(RevertPlan *p) {
        Domain *d = p->domain;
        DomainDef *def = NULL;
        int r;

        r = domain_def_copy(p->new_def, &def);
        if (r < 0)
                return r;
        domain_set_def(d, def);
        r = operation_undo_push(p->op, undo_definition, NULL);
        if (r < 0) {
                (void) undo_definition(p->op, NULL);
                return r;
        }
        r = domain_save(d);
        if (r < 0)
                return r;
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
        /* crash points: revert:switched */
        operation_crash_point(p->op, "switched");
        return 0;
}

static int undo_nvram(Operation *o, void *data) {
        RevertPlan *p = o->plan;

        if (p->nvram_old)
                (void) nvram_restore_bytes(p->new_def, p->nvram_old, p->nvram_old_size);
        return 0;
}

/* UEFI, external: the snapshot's copy becomes the variable store again
 * (QEMU is not running). < 0: failed, and the revert with it. */
static int revert_nvram(RevertPlan *p) {
        _cleanup_free_ char *message = NULL;
        int r;

        if (!p->nvram_copy)
                return 0;
        r = nvram_snapshot_restore(p->new_def, p->nvram_copy, &p->nvram_old, &p->nvram_old_size, &message);
        if (r >= 0)
                r = operation_undo_push(p->op, undo_nvram, NULL);
        if (r < 0) {
                (void) undo_nvram(p->op, NULL);
                revert_fail(p, r, "%s", message ?: "Out of memory.");
                return r;
        }
        log_info("Domain '%s': UEFI variable store restored from %s.", p->domain->def->name, p->nvram_copy);
        return 0;
}

/* QEMU is gone (or was never there, or stays for a live load). */
static void revert_offline_steps(RevertPlan *p) {
        int r;

        if (p->external) {
                for (size_t i = 0; i < p->n_disks; i++) {
                        RevertDisk *rd = p->disks + i;
                        _cleanup_free_ char *output = NULL, *why = NULL;
                        _cleanup_close_ int dirfd = -EBADF, backing_fd = -EBADF;

                        /* The gate again, now: the file goes into the folder
                         * it checks, the size from the image it passed. */
                        r = gate_open_folder(p->domain, rd->overlay, "The overlay", &dirfd, &why);
                        if (r >= 0)
                                r = gate_open_image(p->domain, rd->file, "The frozen file", &backing_fd, &why);
                        if (r < 0)
                                return revert_fail(p, r, "%s", strna(why));
                        r = image_create_overlay_at(dirfd, fs_basename(rd->overlay), rd->overlay, backing_fd, rd->file,
                                                    rd->format, &output);
                        if (r < 0)
                                return revert_fail(p, IN_SET(r, -EEXIST, -ELOOP, -EROFS, -EACCES, -EPERM)
                                                              ? -QSNAP_E_PATH_NOT_ALLOWED : r,
                                                   "Cannot create overlay %s for disk %s: %s", rd->overlay, rd->target,
                                                   output ?: qsnap_strerror(r));
                        if (operation_undo_push(p->op, undo_overlay, rd) < 0) {
                                (void) undo_overlay(p->op, rd);
                                return revert_fail(p, -ENOMEM, "Out of memory.");
                        }
                        log_debug("Domain '%s': overlay %s on %s for the revert.", p->domain->def->name, rd->overlay,
                                  rd->file);
                        if (p->domain->checkpoints.n > 0) {
                                _cleanup_free_ char *m = NULL;

                                r = overlay_follow(p->domain, rd, &m);
                                if (r < 0)
                                        return revert_fail(p, r, "Cannot give overlay %s the checkpoints' bitmaps: %s",
                                                           rd->overlay, strna(m));
                        }
                }
                /* crash points: revert:overlays */
                operation_crash_point(p->op, "overlays");
        } else if (!p->memory) {
                for (size_t i = 0; i < p->n_disks; i++) {
                        _cleanup_free_ char *output = NULL;

                        if (p->domain->checkpoints.n > 0) {
                                r = drop_enabled_bitmaps(p->domain, p->disks[i].file, &output);
                                if (r < 0)
                                        return revert_fail(p, r, "Cannot remove the bitmaps of %s: %s",
                                                           p->disks[i].file, strna(output));
                                output = mfree(output);
                        }
                        r = revert_qemu_img_apply(p->domain, p->name, p->disks[i].file, false, &output);
                        if (r < 0)
                                return revert_fail(p, -QSNAP_E_QEMU_FAILED, "qemu-img snapshot -a %s %s failed: %s", p->name,
                                                   p->disks[i].file, strna(output));
                }
                if (p->nvram_internal) {
                        _cleanup_free_ char *output = NULL;

                        r = revert_qemu_img_apply(p->domain, p->name, p->new_def->firmware.nvram, true, &output);
                        if (r < 0)
                                return revert_fail(p, -QSNAP_E_QEMU_FAILED, "qemu-img snapshot -a %s %s failed: %s",
                                                   p->name, p->new_def->firmware.nvram, strna(output));
                }
                /* crash points: revert:applied */
                operation_crash_point(p->op, "applied");
        }

        if (!p->live_load) {
                r = switch_definition(p);
                if (r < 0)
                        return revert_fail(p, r, "Cannot store the reverted definition of domain '%s'.",
                                           p->domain->def->name);
        }
        /* After the switch, which a recovery finishes (it restores the
         * store again) rather than rolls back. */
        if (p->external && revert_nvram(p) < 0)
                return;

        if (p->live_load)
                return load_begin(p);
        if (!p->external && p->memory)
                (void) revert_start(p, true, on_started_for_load);
        else if (p->after != DOMAIN_SHUTOFF)
                (void) revert_start(p, p->after == DOMAIN_PAUSED, on_started);
        else
                revert_finish(p);
}

static void on_stopped(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0 || domain_is_active(d))
                return revert_fail(p, error < 0 ? error : -QSNAP_E_QEMU_FAILED, "Cannot stop domain '%s' for the revert: %s", d->def->name,
                                   strna(message));
        /* crash points: revert:stopped */
        operation_crash_point(p->op, "stopped");
        revert_offline_steps(p);
}

static void revert_start_op(Operation *o) {
        RevertPlan *p = o->plan;
        _cleanup_free_ char *message = NULL;
        Domain *d = p->domain;
        int r;

        r = intent_write(p);
        if (r < 0)
                return revert_fail(p, r, "Cannot record the revert's intent: %s", qsnap_strerror(r));
        /* crash points: revert:intent */
        operation_crash_point(o, "intent");
        if (!p->stop_first || !domain_is_active(d))
                return revert_offline_steps(p);
        operation_unlock(o);
        r = domain_stop(d, 0, on_stopped, p, &message);
        operation_lock(o);
        if (r < 0)
                revert_fail(p, r, "Cannot stop domain '%s' for the revert: %s", d->def->name, strna(message));
}

int snapshot_revert(RevertPlan *plan, RevertDoneFunc done, void *userdata, char **ret_message) {
        _cleanup_(revert_plan_freep) RevertPlan *p = plan;
        Domain *d = p->domain;
        int r;

        r = domain_check_idle(d, ret_message);
        if (r < 0)
                return r;
        p->done = done;
        p->userdata = userdata;
        /* Started from the loop, so `done` is never called from in here. */
        return operation_begin(d, &snapshot_revert_kind, TAKE_PTR(p), &plan->op, revert_start_op, NULL, ret_message);
}

const OperationKind snapshot_revert_kind = {
        .name = INTENT_KIND,
        .crash_name = "revert",
        .lock = OPERATION_LOCK_SNAPSHOT,
        .free_plan = revert_plan_free_op,
        .reply = snapshot_revert_reply,
        .recover = snapshot_revert_recover,
};
