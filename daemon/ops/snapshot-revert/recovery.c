/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Revert, the recovery (snapshot_revert_kind's handler): an
 * interrupted revert is finished or rolled back from its journal, the
 * stored definition, the load job the job tracker adopted and QEMU's
 * migration state (docs/decisions.md, "Revert"); each case logs one line
 * saying "finished" or "rolled back".
 */
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "core/disk.h"
#include "core/domain-jobs.h"
#include "core/files.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "core/operation.h"
#include "core/qemu-files.h"
#include "ops/snapshot-revert.h"
#include "ops/snapshot-revert/internal.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/fs.h"
#include "util/json-util.h"
#include "util/util.h"


/* ---- recovery ---- */

static void intent_remove(Domain *d) {
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, INTENT_KIND);
}

typedef struct Recovery {
        Domain *domain;
        json_object *intent;
        bool stop_qemu;     /* a QEMU that cannot be trusted goes once the attach is done */
        sd_event_source *timer;
        uint64_t deadline;
        bool incoming_sent;
        DomainDoneFunc done;
        void *userdata;
} Recovery;


static void recovery_end(Recovery *rc) {
        Domain *d = rc->domain;

        intent_remove(d);
        if (rc->done)
                rc->done(d, 0, NULL, NULL, rc->userdata);
        if (rc->stop_qemu && domain_is_active(d)) {
                _cleanup_free_ char *message = NULL;

                if (domain_stop(d, 0, NULL, NULL, &message) < 0)
                        log_warning("Domain '%s': cannot stop QEMU: %s", d->def->name, strna(message));
        }
        json_object_put(rc->intent);
        sd_event_source_disable_unref(rc->timer);
        domain_unref(d);
        free(rc);
}

static void recovery_set_current(Recovery *rc, bool record_overlays) {
        Domain *d = rc->domain;
        const char *name = json_get_string(rc->intent, "snapshot");
        Snapshot *s = name ? snapshot_tree_find(&d->snapshots, name) : NULL;
        json_object *disks = NULL;
        size_t n = json_get_array(rc->intent, "disks", &disks);
        int r;

        if (!s)
                return;
        if (record_overlays) {
                _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
                SnapshotDisk rd[n ?: 1];

                for (size_t i = 0; i < n; i++) {
                        json_object *e = json_object_array_get_idx(disks, i);
                        rd[i] = (SnapshotDisk) { .name = (char *) json_get_string(e, "target"), .snapshot = SNAPSHOT_LOCATION_EXTERNAL,
                                                 .format = DISK_FORMAT_QCOW2, .source = (char *) json_get_string(e, "overlay") };
                }
                r = snapshot_def_copy(s->def, &def);
                if (r >= 0)
                        r = snapshot_def_set_revert_disks(def, rd, n);
                if (r >= 0)
                        r = snapshot_tree_update(&d->snapshots, s, TAKE_PTR(def), true);
        } else
                r = snapshot_tree_set_current(&d->snapshots, s);
        if (r < 0)
                log_error_errno(r, "Domain '%s': cannot record the reverted snapshot '%s': %m", d->def->name, name);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_CURRENT_SNAPSHOT);
}

/* A QEMU that cannot be trusted (a load cut short) is stopped once the
 * attach call that runs the recovery is over. */
static void recovery_stop_qemu(Recovery *rc, const char *why) {
        log_notice("Domain '%s': %s; stopping its QEMU (the domain ends shut off).", rc->domain->def->name, why);
        rc->stop_qemu = true;
        recovery_end(rc);
}

static int on_recovery_poll(sd_event_source *s, uint64_t usec, void *userdata);

static void on_recovery_migrate(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                                void *userdata) {
        Recovery *rc = userdata;
        const char *status = NULL, *err;

        if (error >= 0)
                (void) qmp_parse_query_migrate(result, &status, &err);
        if (status && streq(status, "completed")) {
                const char *after = json_get_string(rc->intent, "after");
                bool run = after && streq(after, "running") && rc->domain->state == DOMAIN_PAUSED;

                /* The state asked for; the RESUME event updates State. */
                if (run)
                        (void) qmp_cmd_cont(qmp, NULL, NULL);
                log_notice("Domain '%s': the interrupted revert had loaded the memory state; the guest %s.",
                           rc->domain->def->name, run ? "runs again" : "stays as it is");
                return recovery_end(rc);
        }
        /* Started with -incoming defer, but migrate-incoming never arrived:
         * send it now and finish the load. */
        if (status && streq(status, "none") && !rc->incoming_sent && json_get_string(rc->intent, "memory_file")) {
                rc->incoming_sent = true;
                if (domain_send_incoming(rc->domain, json_get_string(rc->intent, "memory_file"), NULL, NULL) >= 0) {
                        log_notice("Domain '%s': loading the memory state the interrupted revert had not asked for yet.",
                                   rc->domain->def->name);
                        status = "setup";
                }
        }
        /* Still loading: wait for it, within reason. */
        if (status && STR_IN_SET(status, "setup", "active", "device") && now_usec(CLOCK_MONOTONIC) < rc->deadline &&
            sd_event_add_time_relative(rc->domain->manager->event, &rc->timer, CLOCK_MONOTONIC, 100 * USEC_PER_MSEC, 0,
                                       on_recovery_poll, rc) >= 0)
                return;
        log_debug("Domain '%s': migration status %s (%s).", rc->domain->def->name, strna(status), strna(desc));
        recovery_stop_qemu(rc, "the memory state of the interrupted revert was not loaded completely");
}

static int on_recovery_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        Recovery *rc = userdata;

        rc->timer = sd_event_source_disable_unref(rc->timer);
        if (!rc->domain->qmp || qmp_cmd_query_migrate(rc->domain->qmp, on_recovery_migrate, rc) < 0)
                recovery_stop_qemu(rc, "the memory state of the interrupted revert cannot be checked");
        return 0;
}

/* The load is done: the state the revert asked for (the RESUME/STOP
 * events update State). */
static void recovery_apply_after(Recovery *rc) {
        Domain *d = rc->domain;
        const char *after = json_get_string(rc->intent, "after");

        if (!d->qmp || !after)
                return;
        if (streq(after, "running") && d->state == DOMAIN_PAUSED)
                (void) qmp_cmd_cont(d->qmp, NULL, NULL);
        else if (streq(after, "paused") && d->state == DOMAIN_RUNNING)
                (void) qmp_cmd_stop(d->qmp, NULL, NULL);
}

/* The load job of the interrupted revert, as the job tracker adopted it
 * (or ended it since): 1 loaded, 0 not (failed or unfinished), -ENOENT
 * none in this QEMU. */
static int recovery_load_job(Domain *d) {
        _cleanup_free_ Job **jobs = NULL;
        size_t n = 0;
        int r = -ENOENT;

        if (domain_list_jobs(d, &jobs, &n) < 0)
                return log_oom();
        for (size_t i = 0; i < n; i++)
                if (jobs[i]->type == JOB_TYPE_SNAPSHOT_REVERT && strncmp(jobs[i]->id, "qsnap-load-", STRLEN("qsnap-load-")) == 0)
                        r = jobs[i]->state == JOB_STATE_COMPLETED;
        return r;
}

static void recovery_after_load(Recovery *rc) {
        int r = recovery_load_job(rc->domain);

        if (r > 0) {
                recovery_set_current(rc, false);
                recovery_apply_after(rc);
                log_notice("Domain '%s': finished an interrupted revert (the snapshot was loaded).", rc->domain->def->name);
                return recovery_end(rc);
        }
        if (r < 0 && json_get_bool(rc->intent, "restarted"))
                return recovery_stop_qemu(rc, "the QEMU started for the interrupted revert had not loaded the snapshot");
        if (r < 0) {
                log_notice("Domain '%s': rolled back an interrupted revert that had not loaded anything yet.",
                           rc->domain->def->name);
                return recovery_end(rc);
        }
        recovery_stop_qemu(rc, "the snapshot load of the interrupted revert did not finish");
}

/* UEFI: the snapshot's copy of the variable store goes back (again: it
 * is the same bytes either way) while QEMU is not running. */
static void recovery_restore_nvram(Recovery *rc) {
        const char *copy = json_get_string(rc->intent, "nvram_copy");
        _cleanup_free_ char *message = NULL;
        Domain *d = rc->domain;

        if (!copy || domain_is_active(d))
                return;
        if (nvram_snapshot_restore(d->def, copy, NULL, NULL, &message) < 0)
                log_error("Domain '%s': %s", d->def->name, strna(message));
        else
                log_info("Domain '%s': UEFI variable store restored from %s.", d->def->name, copy);
}

int snapshot_revert_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        json_object *intent = NULL, *disks = NULL;
        bool external, memory, switched = true, any = false;
        Recovery *rc;
        size_t n;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, INTENT_KIND, &intent);
        if (r == 0 || (r < 0 && r != -EBADMSG))
                return r;
        rc = new0(Recovery, 1);
        if (!rc) {
                json_object_put(intent);
                return -ENOMEM;
        }
        *rc = (Recovery) { .domain = domain_ref(d), .intent = intent, .done = done, .userdata = userdata };
        if (!rc->intent) {
                /* Unreadable (logged): it goes. */
                recovery_end(rc);
                return 1;
        }
        external = json_get_bool(rc->intent, "external");
        memory = json_get_bool(rc->intent, "memory");
        n = json_get_array(rc->intent, "disks", &disks);
        log_notice("Domain '%s': a revert to snapshot '%s' was interrupted; checking how far it got.", d->def->name,
                   strna(json_get_string(rc->intent, "snapshot")));

        if (external) {
                /* Switched: the stored definition runs on the new overlays. */
                for (size_t i = 0; i < n; i++) {
                        json_object *e = json_object_array_get_idx(disks, i);
                        const char *target = json_get_string(e, "target"), *overlay = json_get_string(e, "overlay");
                        const DomainDisk *disk = target ? domain_def_find_disk(d->def, target) : NULL;

                        any = true;
                        if (!disk || !overlay || !streq(disk->source, overlay))
                                switched = false;
                }
                if (!any || !switched) {
                        for (size_t i = 0; i < n; i++) {
                                const char *overlay = json_get_string(json_object_array_get_idx(disks, i), "overlay");
                                bool used = false;

                                for (size_t k = 0; overlay && k < d->def->n_disks; k++)
                                        used = used || streq(d->def->disks[k].source, overlay);
                                if (overlay && !used && fs_unlink_nofollow(overlay, S_IFREG) >= 0)
                                        log_info("Domain '%s': removed overlay %s of the interrupted revert.",
                                                 d->def->name, overlay);
                        }
                        log_notice("Domain '%s': rolled back a revert interrupted before the definition was switched "
                                   "(the domain keeps its disks; it is %s).", d->def->name,
                                   domain_state_to_string(d->state));
                        recovery_end(rc);
                        return 1;
                }
                recovery_set_current(rc, true);
                recovery_restore_nvram(rc);
                log_notice("Domain '%s': finished a revert interrupted after the definition was switched (the "
                           "domain is %s).", d->def->name, domain_state_to_string(d->state));
                rc->deadline = now_usec(CLOCK_MONOTONIC) + 30 * USEC_PER_SEC;
                if (memory && d->qmp && domain_is_active(d) &&
                    qmp_cmd_query_migrate(d->qmp, on_recovery_migrate, rc) >= 0)
                        return 1;
                recovery_end(rc);
                return 1;
        }

        /* Internal. */
        if (memory && json_get_bool(rc->intent, "loaded")) {
                recovery_set_current(rc, false);
                recovery_apply_after(rc);
                log_notice("Domain '%s': finished an interrupted revert (the snapshot was loaded already).",
                           d->def->name);
                recovery_end(rc);
                return 1;
        }
        if (memory) {
                if (d->qmp && domain_is_active(d)) {
                        recovery_after_load(rc);
                        return 1;
                }
                log_notice("Domain '%s': rolled back an interrupted revert (no QEMU had loaded the snapshot).",
                           d->def->name);
                recovery_end(rc);
                return 1;
        }
        if (domain_is_active(d)) {
                log_notice("Domain '%s': rolled back a revert interrupted before QEMU was stopped (nothing changed).",
                           d->def->name);
                recovery_end(rc);
                return 1;
        }
        /* QEMU is gone: applying the snapshot again is harmless and finishes it. */
        for (size_t i = 0; i < n; i++) {
                const char *file = json_get_string(json_object_array_get_idx(disks, i), "file");
                _cleanup_free_ char *output = NULL;

                if (file && revert_qemu_img_apply(d, json_get_string(rc->intent, "snapshot"), file, false, &output) < 0)
                        log_error("Domain '%s': qemu-img snapshot -a on %s failed: %s", d->def->name, file,
                                  strna(output));
        }
        recovery_set_current(rc, false);
        log_notice("Domain '%s': finished an interrupted revert to internal snapshot '%s' (shut off).", d->def->name,
                   strna(json_get_string(rc->intent, "snapshot")));
        recovery_end(rc);
        return 1;
}
