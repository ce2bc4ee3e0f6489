/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateSnapshot, the run: an Operation (core/operation.c) whose plan is
 * the SnapshotPlan. For a running domain:
 *   external: overlays made by qsnapd, memory (if any) saved by migration
 *             to a file, each overlay blockdev-add'ed with "backing": null,
 *             and all disks switched in ONE transaction of
 *             blockdev-snapshot actions: all or none.
 *             With QUIESCE the guest agent freezes the guest's filesystems
 *             right before that transaction and thaws them right after it,
 *             or when anything fails once the freeze was sent; the intent
 *             says "frozen" meanwhile, so a qsnapd killed then thaws the
 *             guest at its next start.
 *   internal: a snapshot-save job (memory + every qcow2 disk), followed by
 *             the job tracker (qemu/job.c) as a job of this operation.
 * For a shut-off domain qemu-img does the work. On any failure every file
 * and node made so far is removed again (the operation's undo stack).
 * Only when the disks are done are the domain definition and the snapshot
 * metadata written. Before a snapshot touches any file or node it writes
 * what it is about to do to <state>/ops/<uuid>.snapshot-create
 * (crash-safely); the operation removes it once it finished or rolled
 * back.
 */
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "core/bitmaps.h"
#include "core/disk.h"
#include "core/domain-agent.h"
#include "core/domain-jobs.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "core/operation.h"
#include "core/qemu-files.h"
#include "ops/snapshot-create.h"
#include "ops/snapshot-create/internal.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json-util.h"
#include "util/util.h"


#define MIGRATION_POLL_USEC (100 * USEC_PER_MSEC)

/* ---- the intent journal ---- */

typedef struct SnapshotIntentDisk {
        const char *target;
        const char *below;   /* the active file before the snapshot */
        const char *overlay; /* the planned new active file */
        const char *node;    /* live: the planned overlay node */
        bool created;        /* qsnapd creates the file (not REUSE_EXT) */
} SnapshotIntentDisk;

typedef struct SnapshotIntent {
        const char *snapshot_xml; /* the metadata to record */
        bool metadata;            /* not NO_METADATA */
        bool resume;              /* the guest is stopped for the memory save */
        bool frozen;              /* QUIESCE: the guest's filesystems may be frozen */
        const char *nvram_copy;   /* UEFI: the copy of the variable store being made */
        const char *memory_file;
        const SnapshotIntentDisk *disks;
        size_t n_disks;
} SnapshotIntent;

static int snapshot_intent_write(Operation *op, const SnapshotIntent *in) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *disks = json_object_new_array();

        if (!o || !disks)
                return -ENOMEM;
        json_object_object_add(o, "snapshot_xml", json_object_new_string(in->snapshot_xml));
        json_object_object_add(o, "metadata", json_object_new_boolean(in->metadata));
        json_object_object_add(o, "resume", json_object_new_boolean(in->resume));
        json_object_object_add(o, "frozen", json_object_new_boolean(in->frozen));
        if (in->memory_file)
                json_object_object_add(o, "memory_file", json_object_new_string(in->memory_file));
        if (in->nvram_copy)
                json_object_object_add(o, "nvram_copy", json_object_new_string(in->nvram_copy));
        for (size_t i = 0; i < in->n_disks; i++) {
                json_object *e = json_object_new_object();

                if (!e)
                        return -ENOMEM;
                json_object_object_add(e, "target", json_object_new_string(in->disks[i].target));
                json_object_object_add(e, "below", json_object_new_string(in->disks[i].below));
                json_object_object_add(e, "overlay", json_object_new_string(in->disks[i].overlay));
                if (in->disks[i].node)
                        json_object_object_add(e, "node", json_object_new_string(in->disks[i].node));
                json_object_object_add(e, "created", json_object_new_boolean(in->disks[i].created));
                json_object_array_add(disks, e);
        }
        json_object_object_add(o, "disks", json_object_get(disks));
        return operation_journal_write(op, o);
}

/* ---- execution ---- */

/* The steps that made something: undone in reverse when the snapshot
 * fails (core/operation.c runs them). */

static int undo_overlay_file(Operation *o, void *data) {
        PlanDisk *pd = data;

        if (fs_unlink_nofollow(pd->overlay, S_IFREG) >= 0)
                log_debug("Removed overlay %s of the failed snapshot.", pd->overlay);
        return 0;
}

static int undo_overlay_node(Operation *o, void *data) {
        PlanDisk *pd = data;

        domain_node_del(o->domain, pd->node);
        return 0;
}

static int undo_memory_file(Operation *o, void *data) {
        SnapshotPlan *p = o->plan;

        (void) fs_unlink_nofollow(p->memory_file, S_IFREG);
        return 0;
}

/* The guest runs again if we paused it. */
static int undo_stop(Operation *o, void *data) {
        SnapshotPlan *p = o->plan;

        if (p->stopped && o->domain->qmp)
                (void) qmp_cmd_cont(o->domain->qmp, NULL, NULL);
        return 0;
}

/* By descriptor (core/gate.h): a disk through the gate, own: the UEFI store. */
static int run_qemu_img_snapshot(Domain *d, const char *op, const char *tag, const char *file, bool own,
                                 char **ret_output) {
        return gate_img_snapshot(d, op, tag, file, own, ret_output);
}

static int undo_internal_offline(Operation *o, void *data) {
        SnapshotPlan *p = o->plan;
        PlanDisk *pd = data;

        (void) run_qemu_img_snapshot(o->domain, "-d", p->def->name, pd->disk->source, false, NULL);
        return 0;
}

static int undo_nvram_copy(Operation *o, void *data) {
        SnapshotPlan *p = o->plan;

        if (p->nvram_copy)
                (void) fs_unlink_nofollow(p->nvram_copy, S_IFREG);
        return 0;
}

static int undo_nvram_internal(Operation *o, void *data) {
        SnapshotPlan *p = o->plan;
        const DomainFirmware *f = def_firmware(domain_current_def(o->domain));

        if (f)
                (void) run_qemu_img_snapshot(o->domain, "-d", p->def->name, f->nvram, true, NULL);
        return 0;
}

/* UEFI: the variable store as it is at the snapshot (external: a copy
 * beside it; offline internal: a tag in the qcow2 store). A live internal
 * snapshot names its pflash node in snapshot-save instead. */
static int plan_snapshot_nvram(SnapshotPlan *p, char **ret_message) {
        const DomainDef *def = domain_current_def(p->domain);
        _cleanup_free_ char *output = NULL;
        int r;

        if (p->nvram_copy) {
                r = nvram_snapshot_save(def, p->nvram_copy, ret_message);
                if (r < 0)
                        return r;
                r = operation_undo_push(p->op, undo_nvram_copy, NULL);
        } else if (p->nvram_internal && !p->live) {
                r = run_qemu_img_snapshot(p->domain, "-c", p->def->name, def->firmware.nvram, true, &output);
                if (r < 0)
                        return error_message(ret_message, r, "qemu-img snapshot of the UEFI variable store %s failed: %s",
                                             def->firmware.nvram, strna(output));
                r = operation_undo_push(p->op, undo_nvram_internal, NULL);
        } else
                return 0;
        if (r < 0) {
                (void) (p->nvram_copy ? undo_nvram_copy : undo_nvram_internal)(p->op, NULL);
                return r;
        }
        return 0;
}

static void snapshot_create_reply(Operation *o, int error, const char *message) {
        SnapshotPlan *p = o->plan;

        if (p->done)
                p->done(o->domain, error, message, error < 0 ? NULL : p->snapshot, p->userdata);
}

static void snapshot_plan_free_op(void *p) {
        snapshot_plan_free(p);
}

static void on_halted(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        Operation *o = userdata;

        if (error < 0)
                log_warning("Domain '%s': HALT after snapshot failed: %s", d->def->name, strna(message));
        operation_finish(o, 0, NULL);
}

/* The disks are done: the new overlays are the disks' active files from
 * now on, in the running and in the stored definition alike. */
static void plan_switch_disks(SnapshotPlan *p) {
        Domain *d = p->domain;
        bool changed = false;

        for (size_t i = 0; i < p->n_disks; i++) {
                const PlanDisk *pd = p->disks + i;
                DomainDef *defs[2] = { d->live, d->def };
                _cleanup_free_ char *below = NULL;

                if (pd->location != SNAPSHOT_LOCATION_EXTERNAL)
                        continue;
                /* pd->disk lives in one of the two definitions: keep
                 * the old name apart before it is replaced. */
                below = strdup(pd->disk->source);
                if (!below) {
                        log_oom();
                        continue;
                }
                domain_chain_add_overlay(d, below, pd->overlay);
                for (size_t k = 0; k < 2; k++) {
                        DomainDisk *disk = defs[k] ? domain_def_find_disk(defs[k], pd->disk->target) : NULL;
                        if (disk && streq(disk->source, below)) {
                                (void) free_and_strdup(&disk->source, pd->overlay);
                                disk->format = DISK_FORMAT_QCOW2;
                        }
                }
                changed = true;
        }
        if (changed) {
                (void) domain_save_disks(d);
                manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
                /* crash points: create:disks */
                operation_crash_point(p->op, "disks");
        }
}

/* A failed snapshot's cont is answered: the guest runs (or will not), the
 * caller hears now. */
static void on_failed_resumed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                              void *userdata) {
        SnapshotPlan *p = userdata;

        if (error >= 0)
                domain_note_running(p->domain);
        else
                log_warning("Domain '%s': the guest did not resume after the failed snapshot: %s", p->domain->def->name,
                            strna(desc));
        p->resuming = false;
        operation_finish(p->op, p->error, p->message);
}

static void plan_finish(SnapshotPlan *p, int error, const char *message) {
        Operation *o = p->op;
        Domain *d = p->domain;
        int r;

        if (p->resuming)
                return; /* failing already: on_failed_resumed() ends it */
        if (p->subscription > 0 && d->qmp)
                (void) qmp_unsubscribe(d->qmp, p->subscription);
        p->subscription = 0;
        p->timer = sd_event_source_disable_unref(p->timer);

        if (error < 0) {
                /* What was made goes again (the operation's undo stack). */
                log_warning("Domain '%s': snapshot '%s' failed: %s", d->def->name, p->def->name, strna(message));
                /* A guest we paused runs again before the caller hears, as
                 * after a success (undo_stop()'s cont alone raced the reply:
                 * State could still say paused). */
                if (p->stopped && d->qmp && (message == p->message || free_and_strdup(&p->message, message) >= 0)) {
                        p->error = error;
                        p->stopped = false;
                        p->resuming = true;
                        if (qmp_cmd_cont(d->qmp, on_failed_resumed, p) >= 0)
                                return;
                        p->stopped = true;
                        p->resuming = false;
                }
                return operation_finish(o, error, message);
        }

        /* Taken: nothing is undone from here on, whatever follows. */
        operation_undo_clear(o);
        plan_switch_disks(p);
        if (!(p->flags & SNAPSHOT_CREATE_NO_METADATA)) {
                r = snapshot_tree_add(&d->snapshots, TAKE_PTR(p->def), true, &p->snapshot);
                if (r < 0) {
                        error = r;
                        message = "The snapshot was taken, but its metadata could not be stored.";
                        log_error_errno(r, "Domain '%s': %s (%m)", d->def->name, message);
                } else {
                        log_info("Domain '%s': snapshot '%s' taken in %.1f ms, %.1f ms of it waiting for QEMU.",
                                 d->def->name, snapshot_name(p->snapshot),
                                 (now_usec(CLOCK_MONOTONIC) - p->started_usec) / 1000.0, p->qemu_usec / 1000.0);
                        manager_notify_snapshot_added(d->manager, d, p->snapshot);
                        /* crash points: create:metadata */
                        operation_crash_point(o, "metadata");
                }
        }

        /* HALT: the call returns once the domain is off. Done: nothing is
         * left for a restarted qsnapd to do, and the lock is free for Stop. */
        if (error >= 0 && (p->flags & SNAPSHOT_CREATE_HALT) && domain_is_active(d) && !d->op) {
                _cleanup_free_ char *stop_message = NULL;

                operation_journal_remove(o);
                operation_unlock(o);
                if (domain_stop(d, 0, on_halted, o, &stop_message) >= 0)
                        return;
                log_warning("Domain '%s': HALT after snapshot failed: %s", d->def->name, strna(stop_message));
        }
        operation_finish(o, error, message);
}

static void plan_fail(SnapshotPlan *p, int error, const char *fmt, ...) _printf_(3, 4);
static void plan_fail(SnapshotPlan *p, int error, const char *fmt, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&message, fmt, ap) < 0)
                message = NULL;
        va_end(ap);
        plan_finish(p, error, message);
}

/* What a restarted qsnapd needs to finish or roll back this snapshot
 * (recovery.c), as of now. */
static int plan_write_intent_record(SnapshotPlan *p) {
        _cleanup_free_ char *xml = NULL;
        SnapshotIntentDisk disks[p->n_disks ?: 1];
        size_t n = 0;
        int r;

        r = snapshot_def_format(p->def, SNAPSHOT_FORMAT_SECURE, &xml);
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n_disks; i++) {
                const PlanDisk *pd = p->disks + i;

                if (pd->location != SNAPSHOT_LOCATION_EXTERNAL)
                        continue;
                disks[n++] = (SnapshotIntentDisk) { .target = pd->disk->target, .below = pd->disk->source,
                                                    .overlay = pd->overlay, .node = pd->node, .created = !pd->reuse };
        }
        r = snapshot_intent_write(p->op, &(SnapshotIntent) {
                .snapshot_xml = xml,
                .metadata = !(p->flags & SNAPSHOT_CREATE_NO_METADATA),
                .resume = p->memory == SNAPSHOT_LOCATION_EXTERNAL && p->was_running,
                .frozen = p->frozen,
                .nvram_copy = p->nvram_copy,
                .memory_file = p->memory_file,
                .disks = disks,
                .n_disks = n,
        });
        return r;
}

/* Before anything is touched. */
static int plan_write_intent(SnapshotPlan *p) {
        int r;

        r = plan_write_intent_record(p);
        if (r < 0)
                return r;
        /* crash points: create:intent */
        operation_crash_point(p->op, "intent");
        return 0;
}

static int create_overlay_files(SnapshotPlan *p, char **ret_message) {
        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;
                _cleanup_free_ char *output = NULL;
                _cleanup_close_ int dirfd = -EBADF, backing_fd = -EBADF;
                int r;

                if (pd->location != SNAPSHOT_LOCATION_EXTERNAL || pd->reuse)
                        continue;
                /* The gate again, now: the file goes into the folder it
                 * checks, and the size comes from the image it passed. */
                r = gate_open_folder(p->domain, pd->overlay, "The overlay", &dirfd, ret_message);
                if (r >= 0)
                        r = gate_open_image(p->domain, pd->disk->source, "The image", &backing_fd, ret_message);
                if (r < 0)
                        return r;
                r = image_create_overlay_at(dirfd, fs_basename(pd->overlay), pd->overlay, backing_fd, pd->disk->source,
                                            pd->disk->format, &output);
                if (r < 0) {
                        if (IN_SET(r, -EEXIST, -ELOOP, -EROFS, -EACCES, -EPERM))
                                r = -QSNAP_E_PATH_NOT_ALLOWED;
                        else if (r == -ENAMETOOLONG)
                                r = -QSNAP_E_INVALID_ARGUMENT;
                        else if (path_out_of_space(pd->overlay) || (output && strstr(output, "No space left")))
                                r = -ENOSPC;
                        *ret_message = strprintf("Cannot create overlay %s for disk %s: %s", pd->overlay,
                                                 pd->disk->target, output ?: qsnap_strerror(r));
                        return r;
                }
                r = operation_undo_push(p->op, undo_overlay_file, pd);
                if (r < 0) {
                        (void) undo_overlay_file(p->op, pd);
                        return r;
                }
        }
        /* crash points: create:overlays */
        operation_crash_point(p->op, "overlays");
        return 0;
}

/* The checkpoints follow (§2.5): each new overlay gets the bitmaps usable
 * on the image below it; the overlay goes with the undo if it fails. */
static int overlays_follow_offline(SnapshotPlan *p, char **ret_message) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = NULL;
        int r;

        if (p->domain->checkpoints.n == 0)
                return 0;
        r = bitmap_inventory_offline(p->domain, &inv, ret_message);
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n_disks; i++) {
                const BitmapDisk *bd = bitmap_inventory_disk(inv, p->disks[i].disk->target);
                _cleanup_strv_free_ char **names = NULL;
                _cleanup_free_ uint64_t *gran = NULL;
                size_t n = 0;

                if (p->disks[i].location != SNAPSHOT_LOCATION_EXTERNAL || !bd)
                        continue;
                r = bitmap_disk_followers(bd, &names, &gran, &n);
                for (size_t k = 0; r >= 0 && k < n; k++)
                        r = gate_img_bitmap(p->domain, "--add", NULL, p->disks[i].overlay, names[k], ret_message);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A shut-off domain: qemu-img does it all, synchronously. */
static void plan_execute_offline(SnapshotPlan *p) {
        _cleanup_free_ char *message = NULL;
        int r;

        r = plan_write_intent(p);
        if (r < 0)
                return plan_finish(p, r, "Cannot record the snapshot's intent.");
        crash_point("create:intent");
        r = create_overlay_files(p, &message);
        if (r < 0)
                return plan_finish(p, r, message);
        crash_point("create:overlays");
        r = overlays_follow_offline(p, &message);
        if (r < 0)
                return plan_finish(p, r, message);
        r = plan_snapshot_nvram(p, &message);
        if (r < 0)
                return plan_finish(p, r, message);

        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;
                _cleanup_free_ char *output = NULL;

                if (pd->location != SNAPSHOT_LOCATION_INTERNAL)
                        continue;
                r = run_qemu_img_snapshot(p->domain, "-c", p->def->name, pd->disk->source, false, &output);
                if (r < 0) {
                        /* The ones made before this one are taken back (undo). */
                        if (path_out_of_space(pd->disk->source))
                                r = -ENOSPC;
                        return plan_fail(p, r, "qemu-img snapshot of disk %s failed: %s", pd->disk->target, strna(output));
                }
                if (operation_undo_push(p->op, undo_internal_offline, pd) < 0) {
                        (void) undo_internal_offline(p->op, pd);
                        return plan_fail(p, -ENOMEM, "Out of memory.");
                }
        }
        plan_finish(p, 0, NULL);
}

/* The time QEMU takes is the time between a step's first request and
 * its last reply; steps do not overlap. */
static void qemu_wait_begin(SnapshotPlan *p) {
        p->qmp_sent_usec = now_usec(CLOCK_MONOTONIC);
}

static void qemu_wait_end(SnapshotPlan *p) {
        if (p->qmp_sent_usec > 0)
                p->qemu_usec += now_usec(CLOCK_MONOTONIC) - p->qmp_sent_usec;
        p->qmp_sent_usec = 0;
}

/* ---- live: external ---- */

static void on_resumed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata);

static int on_cont_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        SnapshotPlan *p = userdata;

        p->timer = sd_event_source_disable_unref(p->timer);
        if (!p->domain->qmp || qmp_cmd_cont(p->domain->qmp, on_resumed, p) < 0)
                plan_finish(p, 0, NULL);
        return 0;
}

/* QEMU reports the migration completed a moment before it leaves
 * finish-migrate, and refuses cont ("Migration is not finalized yet")
 * until then: ask again shortly. The refusal can also come just before
 * QEMU moved on to postmigrate, from which cont works: ask again there
 * too. Up to 10 s (a loaded 2-core machine has been seen to need more
 * than the 1 s this allowed before). */
static void on_resume_status(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;
        _cleanup_free_ char *status = NULL;
        QmpRunState state;

        if (error >= 0 && qmp_parse_query_status(result, &state, &status) >= 0 && status && STR_IN_SET(status, "finish-migrate", "postmigrate") &&
            p->cont_retries++ < 1000 &&
            sd_event_add_time_relative(p->domain->manager->event, &p->timer, CLOCK_MONOTONIC, 10 * USEC_PER_MSEC, 0,
                                       on_cont_retry, p) >= 0)
                return;
        log_warning("Domain '%s': the guest did not resume after the snapshot (QEMU is %s).", p->domain->def->name,
                    strna(status));
        plan_finish(p, 0, NULL);
}

static void on_resumed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;

        if (error < 0 && error != -ECONNRESET && qmp_cmd_query_status(qmp, on_resume_status, p) >= 0)
                return;
        if (error < 0)
                log_warning("Domain '%s': the guest did not resume after the snapshot: %s", p->domain->def->name, strna(desc));
        else
                domain_note_running(p->domain);
        plan_finish(p, 0, NULL);
}

/* ---- live: QUIESCE ---- */

/* The snapshot failed after the freeze was sent (it may have worked even
 * when no answer came): thaw. */
static int undo_freeze(Operation *o, void *data) {
        SnapshotPlan *p = o->plan;

        if (!p->frozen)
                return 0;
        p->frozen = false;
        (void) domain_agent_thaw(o->domain, "snapshot", DOMAIN_THAW_FAILED, NULL, NULL);
        return 0;
}

static void on_thawed(Domain *d, void *userdata) {
        plan_finish(userdata, 0, NULL);
}

static void plan_transaction(SnapshotPlan *p);

static void on_frozen(Domain *d, int error, const char *message, json_object *result, void *userdata) {
        SnapshotPlan *p = userdata;

        qemu_wait_end(p);
        if (error < 0)
                return plan_finish(p, error, message); /* undo_freeze thaws */
        log_info("Domain '%s': guest filesystems frozen (%d).", d->def->name, result ? json_object_get_int(result) : 0);
        /* crash points: create:frozen */
        operation_crash_point(p->op, "frozen");
        plan_transaction(p);
}

/* QUIESCE: the journal says "frozen" before the freeze goes out. */
static void plan_freeze(SnapshotPlan *p) {
        _cleanup_free_ char *message = NULL;
        int r;

        if (!(p->flags & SNAPSHOT_CREATE_QUIESCE))
                return plan_transaction(p);
        p->frozen = true;
        r = plan_write_intent_record(p);
        if (r < 0) {
                p->frozen = false;
                return plan_finish(p, r, "Cannot record the freeze in the snapshot's intent.");
        }
        r = operation_undo_push(p->op, undo_freeze, NULL);
        if (r < 0) {
                p->frozen = false;
                return plan_finish(p, r, "Out of memory.");
        }
        qemu_wait_begin(p);
        r = domain_agent_command(p->domain, "guest-fsfreeze-freeze", NULL, on_frozen, p, &message);
        if (r < 0)
                return plan_finish(p, r, message);
}

static void on_transaction(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;

        qemu_wait_end(p);
        if (error < 0)
                return plan_fail(p, -QSNAP_E_QEMU_FAILED, "QEMU refused the snapshot transaction: %s", strna(desc));
        /* The overlays are in the graph now, the memory saved: undo must
         * not delete them. */
        operation_undo_clear(p->op);
        /* crash points: create:switched */
        operation_crash_point(p->op, "switched");
        if (p->frozen) {
                /* The reply waits for the thaw. */
                p->frozen = false;
                if (domain_agent_thaw(p->domain, "snapshot", DOMAIN_THAW_DONE, on_thawed, p) >= 0)
                        return;
        }
        if (p->stopped && !(p->flags & SNAPSHOT_CREATE_HALT)) {
                /* The reply waits for the guest to run again. */
                p->stopped = false;
                if (qmp_cmd_cont(qmp, on_resumed, p) >= 0)
                        return;
        }
        plan_finish(p, 0, NULL);
}

/* The checkpoints follow (docs/checkpoints.md §2.5): each new overlay
 * gets, in the same transaction, an enabled persistent bitmap of every
 * name usable on the old top. */
static void on_snapshot_inventory(Domain *d, int error, const char *message, BitmapInventory *inventory,
                                  void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = inventory;
        _cleanup_free_ QmpBitmapAction *a = NULL;
        SnapshotPlan *p = userdata;
        const char *nodes[p->n_disks ?: 1], *overlays[p->n_disks ?: 1];
        char **names[p->n_disks ?: 1];
        uint64_t *gran[p->n_disks ?: 1];
        size_t n = 0, n_a = 0, max = 0;

        if (error < 0)
                return plan_fail(p, error, "Cannot read the disks' bitmaps: %s", strna(message));
        for (size_t i = 0; i < p->n_disks; i++) {
                const BitmapDisk *bd = inv ? bitmap_inventory_disk(inv, p->disks[i].disk->target) : NULL;
                size_t k = 0;

                names[i] = NULL;
                gran[i] = NULL;
                if (p->disks[i].location != SNAPSHOT_LOCATION_EXTERNAL)
                        continue;
                nodes[n] = p->disks[i].top_node;
                overlays[n++] = p->disks[i].node;
                if (bd && bitmap_disk_followers(bd, &names[i], &gran[i], &k) < 0)
                        return plan_fail(p, -ENOMEM, "Out of memory.");
                max += k;
        }
        a = new0(QmpBitmapAction, max);
        for (size_t i = 0; a && i < p->n_disks; i++)
                for (size_t k = 0; names[i] && names[i][k]; k++)
                        a[n_a++] = (QmpBitmapAction) { .type = QMP_BITMAP_ADD, .node = p->disks[i].node,
                                                       .name = names[i][k], .persistent = true,
                                                       .granularity = gran[i][k] };
        qemu_wait_begin(p);
        if (!a || qmp_cmd_transaction_snapshot_bitmaps(p->domain->qmp, nodes, overlays, n, a, n_a, on_transaction,
                                                       p) < 0)
                plan_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send the snapshot transaction.");
        for (size_t i = 0; i < p->n_disks; i++) {
                strv_free(names[i]);
                free(gran[i]);
        }
}

static void plan_transaction(SnapshotPlan *p) {
        int r;

        if (p->domain->checkpoints.n == 0)
                return on_snapshot_inventory(p->domain, 0, NULL, NULL, p);
        r = bitmap_inventory_live(p->domain, on_snapshot_inventory, p);
        if (r < 0)
                plan_fail(p, r, "Cannot ask QEMU for the disks' bitmaps.");
}

typedef struct AddCall {
        SnapshotPlan *plan;
        PlanDisk *disk;
} AddCall;

static void on_overlay_added(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        AddCall *c = userdata;
        SnapshotPlan *p = c->plan;

        if (error < 0) {
                domain_files_forget(p->domain, c->disk->node);
                if (p->error == 0) {
                        p->error = -QSNAP_E_QEMU_FAILED;
                        p->message = strprintf("QEMU cannot open overlay %s: %s", c->disk->overlay, strna(desc));
                }
        } else if (operation_undo_push(p->op, undo_overlay_node, c->disk) < 0) {
                (void) undo_overlay_node(p->op, c->disk);
                if (p->error == 0)
                        p->error = -ENOMEM;
        }
        free(c);
        if (--p->pending > 0)
                return;
        qemu_wait_end(p);
        if (p->error < 0)
                return plan_finish(p, p->error, p->message);
        plan_freeze(p);
}

static void plan_add_overlays(SnapshotPlan *p) {
        qemu_wait_begin(p);
        for (size_t i = 0; i < p->n_disks; i++) {
                _cleanup_free_ char *filename = NULL, *message = NULL;
                PlanDisk *pd = p->disks + i;
                QmpCache cache;
                AddCall *c;
                int r;

                if (pd->location != SNAPSHOT_LOCATION_EXTERNAL)
                        continue;
                /* QEMU gets the overlay by descriptor, never by name. */
                r = domain_files_pass(p->domain, pd->node, pd->overlay, false, &filename, &message);
                if (r < 0) {
                        if (p->pending == 0)
                                return plan_fail(p, r == -ENOMEM ? r : -QSNAP_E_QEMU_FAILED, "%s", strna(message));
                        p->error = r == -ENOMEM ? r : -QSNAP_E_QEMU_FAILED;
                        p->message = TAKE_PTR(message);
                        return;
                }
                /* The new top in the disk's cache mode, like every layer under it. */
                cache = qmp_cache_of(pd->disk->cache, pd->disk->io);
                c = new0(AddCall, 1);
                if (!c || qmp_cmd_blockdev_add_overlay(p->domain->qmp, pd->node, filename, &cache, on_overlay_added, c) < 0) {
                        domain_files_forget(p->domain, pd->node);
                        free(c);
                        if (p->pending == 0)
                                return plan_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send blockdev-add.");
                        p->error = -QSNAP_E_QEMU_FAILED;
                        p->message = strdup("Cannot send blockdev-add.");
                        return;
                }
                *c = (AddCall) { .plan = p, .disk = pd };
                p->pending++;
        }
}

/* ---- live: memory to a file ---- */

static void plan_migration_done(SnapshotPlan *p, const char *status, const char *error) {
        if (streq(status, "completed")) {
                p->timer = sd_event_source_disable_unref(p->timer);
                if (p->subscription > 0)
                        (void) qmp_unsubscribe(p->domain->qmp, p->subscription);
                p->subscription = 0;
                /* QEMU is in postmigrate now: paused, memory saved. */
                p->stopped = p->was_running;
                /* crash points: create:memory */
                operation_crash_point(p->op, "memory");
                plan_add_overlays(p);
        } else if (STR_IN_SET(status, "failed", "cancelled")) {
                int r = path_out_of_space(p->memory_file) ? -ENOSPC : -QSNAP_E_QEMU_FAILED;
                plan_fail(p, r, "Saving the memory state to %s failed: %s", p->memory_file, error ?: status);
        }
}

static void on_query_migrate(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;
        const char *status, *err;

        p->migrate_query = 0;
        if (!p->timer) /* finished meanwhile */
                return;
        if (error < 0 || qmp_parse_query_migrate(result, &status, &err) < 0)
                return plan_fail(p, -QSNAP_E_QEMU_FAILED, "query-migrate failed: %s", strna(desc));
        plan_migration_done(p, status, err);
}

/* One query-migrate at a time: the poll and the event may both ask. */
static int plan_query_migrate(SnapshotPlan *p) {
        int64_t id;

        if (p->migrate_query > 0)
                return 0;
        id = qmp_cmd_query_migrate(p->domain->qmp, on_query_migrate, p);
        if (id < 0)
                return (int) id;
        p->migrate_query = id;
        return 0;
}

static int on_migration_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        SnapshotPlan *p = userdata;

        /* Events are the main path; polling catches a missed one. */
        if (plan_query_migrate(p) < 0)
                return plan_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send query-migrate."), 0;
        (void) sd_event_source_set_time_relative(s, MIGRATION_POLL_USEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static void on_migration_event(Qmp *qmp, const char *event, json_object *data, uint64_t ts, void *userdata) {
        SnapshotPlan *p = userdata;
        const char *status;

        if (qmp_parse_migration_event(data, &status) < 0 || !STR_IN_SET(status, "completed", "failed", "cancelled"))
                return;
        /* Ask for the details (error text) once more, then decide. */
        if (plan_query_migrate(p) < 0)
                plan_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send query-migrate.");
}

static void on_migrate(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;

        if (error < 0)
                return plan_fail(p, -QSNAP_E_QEMU_FAILED, "QEMU cannot save the memory state: %s", strna(desc));
        p->subscription = qmp_subscribe(qmp, "MIGRATION", on_migration_event, p);
        if (sd_event_add_time_relative(p->domain->manager->event, &p->timer, CLOCK_MONOTONIC, MIGRATION_POLL_USEC, 0,
                                       on_migration_poll, p) < 0)
                plan_fail(p, -ENOMEM, "Cannot arm a timer.");
}

#define MEMORY_FD_NAME "qsnap-memory"

static void plan_save_memory(SnapshotPlan *p) {
        _cleanup_free_ char *why = NULL;
        _cleanup_close_ int fd = -EBADF, dirfd = -EBADF;
        int r;

        /* Created here, 0600 and exclusive, in the folder the gate checks
         * now; QEMU gets only the descriptor. */
        r = gate_open_folder(p->domain, p->memory_file, "The memory state file", &dirfd, &why);
        if (r < 0)
                return plan_fail(p, r, "%s", strna(why));
        fd = fs_create_at(dirfd, fs_basename(p->memory_file), 0600);
        if (fd < 0)
                return plan_fail(p, fd == -ENOSPC ? -ENOSPC : -QSNAP_E_PATH_NOT_ALLOWED, "Cannot create memory file %s: %s",
                                 p->memory_file, strerror(-fd));
        if (operation_undo_push(p->op, undo_memory_file, NULL) < 0 || operation_undo_push(p->op, undo_stop, NULL) < 0) {
                (void) undo_memory_file(p->op, NULL);
                operation_undo_clear(p->op);
                return plan_fail(p, -ENOMEM, "Out of memory.");
        }

        (void) qmp_cmd_migrate_enable_events(p->domain->qmp, NULL, NULL);
        /* Without LIVE the guest stops first, so memory and disks match. */
        if (!(p->flags & SNAPSHOT_CREATE_LIVE) && p->domain->state == DOMAIN_RUNNING) {
                (void) qmp_cmd_stop(p->domain->qmp, NULL, NULL);
                p->stopped = true;
        }
        /* QEMU writes into our descriptor: it opens no file, runs no shell. */
        if (qmp_cmd_getfd(p->domain->qmp, MEMORY_FD_NAME, fd, NULL, NULL) < 0 ||
            qmp_cmd_migrate_to_fd(p->domain->qmp, MEMORY_FD_NAME, on_migrate, p) < 0)
                plan_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send migrate.");
}

/* ---- live: internal, a snapshot-save job (qemu/job.c drives it) ---- */

static void on_save_job_finished(Job *j, void *userdata) {
        SnapshotPlan *p = userdata;
        int r;

        if (j->state == JOB_STATE_COMPLETED)
                return plan_finish(p, 0, NULL);
        r = j->state == JOB_STATE_FAILED && path_out_of_space(p->domain->def->disks[0].source) ? -ENOSPC : -QSNAP_E_QEMU_FAILED;
        plan_fail(p, r, "QEMU could not take the snapshot: %s", j->error ?: job_state_to_string(j->state));
}

/* qsnapd leaves while QEMU saves: nothing to undo, and nothing journaled. */
static void on_save_job_detached(Job *j, void *userdata) {
        SnapshotPlan *p = userdata;

        operation_abandon(p->op);
}

static const JobObserver save_job_observer = {
        .finished = on_save_job_finished,
        .detached = on_save_job_detached,
};

static void on_snapshot_save(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;
        int r;

        if (error < 0)
                return plan_fail(p, -QSNAP_E_QEMU_FAILED, "QEMU cannot start the snapshot: %s", strna(desc));
        /* The job's end arrives through the tracker. */
        r = p->domain->jobs ? job_tracker_add_job(p->domain->jobs, p->job_id, &(JobSpec) {
                                      .type = JOB_TYPE_SNAPSHOT_CREATE,
                                      .auto_finalize = true,
                                      .observer = &save_job_observer,
                                      .observer_userdata = p,
                              }, &p->save_job)
                            : -ENOTCONN;
        if (r < 0)
                return plan_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot follow snapshot job %s: %s", p->job_id, qsnap_strerror(r));
        job_ref(p->save_job);
}

static void plan_save_internal(SnapshotPlan *p) {
        const char *devices[p->n_disks + 1];
        const char *vmstate = NULL;
        size_t n = 0;

        for (size_t i = 0; i < p->n_disks; i++)
                if (p->disks[i].location == SNAPSHOT_LOCATION_INTERNAL) {
                        devices[n++] = p->disks[i].top_node;
                        vmstate = vmstate ?: p->disks[i].top_node;
                }
        /* UEFI: the (qcow2) variable store is snapshotted with the disks. */
        if (p->nvram_internal && vmstate)
                devices[n++] = NVRAM_VARS_NODE;
        if (!vmstate)
                return plan_fail(p, -QSNAP_E_UNSUPPORTED, "An internal snapshot with memory needs at least one qcow2 disk to hold it.");
        p->job_id = strprintf("qsnap-save-%" PRIx64, now_usec(CLOCK_MONOTONIC));
        if (!p->job_id)
                return plan_fail(p, -ENOMEM, "Out of memory.");
        if (qmp_cmd_snapshot_save(p->domain->qmp, p->job_id, p->def->name, vmstate, devices, n, on_snapshot_save, p) < 0)
                plan_fail(p, -QSNAP_E_QEMU_FAILED, "Cannot send snapshot-save.");
}

/* ---- live: which node is each disk's top ---- */

typedef struct NodeCall {
        SnapshotPlan *plan;
        PlanDisk *disk;
} NodeCall;

/* Every disk knows its top node: go on with the snapshot proper. */
static void plan_nodes_known(SnapshotPlan *p) {
        _cleanup_free_ char *message = NULL;
        int r;

        /* One job in QEMU: nothing of ours to roll back, no intent. */
        if (p->memory == SNAPSHOT_LOCATION_INTERNAL)
                return plan_save_internal(p);

        r = plan_write_intent(p);
        if (r < 0)
                return plan_finish(p, r, "Cannot record the snapshot's intent.");
        crash_point("create:intent");
        r = create_overlay_files(p, &message);
        if (r < 0)
                return plan_finish(p, r, message);
        crash_point("create:overlays");
        r = plan_snapshot_nvram(p, &message);
        if (r < 0)
                return plan_finish(p, r, message);
        if (p->memory == SNAPSHOT_LOCATION_EXTERNAL)
                return plan_save_memory(p);
        plan_add_overlays(p);
}

static void on_root_node(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        NodeCall *c = userdata;
        SnapshotPlan *p = c->plan;
        PlanDisk *pd = c->disk;
        const char *node;

        free(c);
        if (error < 0 || qmp_parse_string(result, &node) < 0 || isempty(node)) {
                if (p->error == 0) {
                        p->error = -QSNAP_E_QEMU_FAILED;
                        p->message = strprintf("QEMU shows no block node for disk %s: %s", pd->disk->target, strna(desc));
                }
        } else {
                pd->top_node = strdup(node);
                pd->node = strprintf("%s-%" PRIx64, pd->disk->target, (uint64_t) (++p->domain->node_seq & 0xffffffffffULL));
                if ((!pd->top_node || !pd->node) && p->error == 0)
                        p->error = -ENOMEM;
        }
        if (--p->pending > 0)
                return;
        qemu_wait_end(p);
        if (p->error < 0)
                return plan_finish(p, p->error, p->message);
        plan_nodes_known(p);
}

static void plan_find_nodes(SnapshotPlan *p) {
        qemu_wait_begin(p);
        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;
                NodeCall *c;

                if (pd->location == SNAPSHOT_LOCATION_NO)
                        continue;
                c = new0(NodeCall, 1);
                if (!c || qmp_cmd_disk_root_node(p->domain->qmp, pd->disk->target, on_root_node, c) < 0) {
                        free(c);
                        p->error = -QSNAP_E_QEMU_FAILED;
                        p->message = strdup("Cannot send qom-get.");
                        break;
                }
                *c = (NodeCall) { .plan = p, .disk = pd };
                p->pending++;
        }
        if (p->pending == 0)
                plan_finish(p, p->error ?: -QSNAP_E_QEMU_FAILED, p->message ?: "No disk to snapshot.");
}

static void plan_start(Operation *o) {
        SnapshotPlan *p = o->plan;

        /* crash points: create:start */
        operation_crash_point(o, "start");
        p->started_usec = now_usec(CLOCK_MONOTONIC);
        p->was_running = p->domain->state == DOMAIN_RUNNING;
        if (!p->live)
                plan_execute_offline(p);
        else if (!p->domain->qmp)
                plan_fail(p, -QSNAP_E_NOT_RUNNING, "Domain '%s' has no monitor connection.", p->domain->def->name);
        else
                plan_find_nodes(p);
}

int snapshot_create(Domain *d, SnapshotPlan *plan, SnapshotDoneFunc done, void *userdata, char **ret_message) {
        _cleanup_(snapshot_plan_freep) SnapshotPlan *p = plan;
        int r;

        r = domain_check_idle(d, ret_message);
        if (r < 0)
                return r;
        if (p->live != domain_is_active(d) || (p->live && !d->qmp)) {
                *ret_message = strprintf("Domain '%s' changed state meanwhile; try again.", d->def->name);
                return -QSNAP_E_BUSY;
        }
        p->done = done;
        p->userdata = userdata;
        /* Started from the loop, so `done` is never called from in here. */
        return operation_begin(d, &snapshot_create_kind, TAKE_PTR(p), &plan->op, plan_start, NULL, ret_message);
}

const OperationKind snapshot_create_kind = {
        .name = INTENT_KIND,
        .crash_name = "create",
        .lock = OPERATION_LOCK_SNAPSHOT,
        .free_plan = snapshot_plan_free_op,
        .reply = snapshot_create_reply,
        .recover = snapshot_create_recover,
};
