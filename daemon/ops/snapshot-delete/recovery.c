/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Delete, the recovery of an interrupted delete at start-up
 * (snapshot_delete_kind's handler, deferred): it waits for the adopted
 * merge job of the journal's id (pivoting one that waits READY), then
 * finishes what the journal describes — metadata stored: the files left;
 * every merge complete: the metadata, then the files — or runs the delete
 * again, every step being safe to repeat; if that is refused, the
 * snapshot stays, deletable again. First, an overlay whose data-copying
 * rebase ended but whose header-only rebase did not (its header names the
 * json: spec of /proc/self/fd/N files qemu-img was given) gets the real
 * backing name the journal records for it.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <json-c/json.h>

#include "config.h"
#include "core/disk.h"
#include "core/domain-jobs.h"
#include "core/files.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/operation.h"
#include "ops/snapshot-delete.h"
#include "ops/snapshot-delete/internal.h"
#include "qemu/child.h"
#include "qemu/image.h"
#include "qemu/img.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/json-util.h"
#include "util/util.h"


/* ---- start-up: an interrupted delete ---- */

#define RECOVERY_RETRY_USEC (200 * USEC_PER_MSEC)
#define RECOVERY_MAX_TRIES 3000

typedef struct DeleteRecovery {
        Domain *domain;
        sd_event_source *timer;
        unsigned tries;
} DeleteRecovery;

static void recovery_free(DeleteRecovery *rc) {
        Domain *d = rc->domain;

        sd_event_source_disable_unref(rc->timer);
        manager_busy_unref(d->manager);
        free(rc);
        domain_unref(d);
}

/* Whether a file of disk `target` is based on `file`, or it is active. */
static bool file_still_used(Domain *d, const char *target, const char *file) {
        _cleanup_(file_graph_done) FileGraph g = {};
        const DomainDef *defs[2] = { domain_current_def(d), d->def };

        for (size_t k = 0; k < 2; k++) {
                const DomainDisk *disk = domain_def_find_disk(defs[k], target);
                if (disk && streq(disk->source, file))
                        return true;
        }
        if (file_graph_build(d, target, &g) < 0)
                return true;
        /* A chain we cannot read may read file: it stays (a file left over
         * is better than a chain broken by recovery). */
        if (g.unreadable) {
                log_warning("Domain '%s': a chain of disk %s cannot be read; %s is kept as if still used.",
                            d->def->name, target, file);
                return true;
        }
        for (size_t i = 0; i < g.n; i++)
                if (streq(g.backings[i], file))
                        return true;
        return false;
}

/* One "names" entry of the journal: file's header gets the name backing
 * when (read by descriptor, never followed) it names a json: spec of
 * /proc/self/fd/N files, which only the interrupted data-copying rebase of
 * this very step writes; the data were copied before qemu-img wrote it.
 * Anything else in the header is left as it is (the step did not run, or
 * ran to its end). false when it names the spec still. */
static bool recovery_fix_name(Domain *d, json_object *e) {
        _cleanup_(img_cmd_done) ImgCmd cmd = {};
        _cleanup_free_ char *message = NULL, *current = NULL, *layer = NULL, *output = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *file = json_get_string(e, "file"), *backing = json_get_string(e, "backing"),
                   *format = json_get_string(e, "format");
        DiskFormat current_format;
        int r;

        if (!file || isempty(backing) || !format || disk_format_from_string(format) < 0)
                return true;
        r = gate_open_image(d, file, "The overlay", &fd, &message);
        if (r >= 0)
                r = image_read_backing_fd(fd, &current, &current_format);
        if (r < 0) {
                /* Gone or unreadable: what reads it is checked below. */
                log_warning("Domain '%s': cannot read the header of %s: %s", d->def->name, file,
                            message ?: qsnap_strerror(r));
                return true;
        }
        if (!current || !img_name_is_fd_chain(current))
                return true;
        /* The name written must pass the gate as the planned one did. */
        r = gate_check(d, backing, "The backing file", &message);
        layer = r >= 0 ? img_placeholder(IMG_LAYER, file, DISK_FORMAT_QCOW2) : NULL;
        if (layer) {
                char *template[] = { (char *) QEMU_IMG_BINARY, (char *) "rebase", (char *) "-u", (char *) "-F",
                                     (char *) format, (char *) "-b", (char *) backing, layer, NULL };

                r = gate_img_command(d, template, &cmd, &message);
                if (r >= 0)
                        r = img_cmd_run(&cmd, &output);
        } else if (r >= 0)
                r = -ENOMEM;
        if (r != 0) {
                log_error("Domain '%s': cannot write the backing name %s into %s after an interrupted rebase: %s",
                          d->def->name, backing, file,
                          message ?: output ?: r < 0 ? qsnap_strerror(r) : "qemu-img rebase -u failed");
                return false;
        }
        log_notice("Domain '%s': wrote the backing name %s into %s (the rebase copying its data had ended, the "
                   "header still named qemu-img's descriptors).", d->def->name, backing, file);
        return true;
}

/* Every "names" entry of the journal; false when a header names the spec still. */
static bool recovery_fix_names(Domain *d, json_object *o) {
        json_object *names = NULL;
        bool ok = true;

        if (json_object_object_get_ex(o, "names", &names) && json_object_is_type(names, json_type_array))
                for (size_t i = 0; i < json_object_array_length(names); i++)
                        if (!recovery_fix_name(d, json_object_array_get_idx(names, i)))
                                ok = false;
        return ok;
}

/* 1: handled (finished, rolled back or restarted), 0: try again later. */
static int recovery_step(DeleteRecovery *rc) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ char *message = NULL;
        _cleanup_strv_free_ char **files = NULL;
        Domain *d = rc->domain;
        VictimPlan vp = {};
        json_object *renames = NULL, *unl = NULL;
        const char *name, *job_id, *phase;
        bool done = true;
        Snapshot *s;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND, &o);
        if (r == 0 || (r < 0 && r != -EBADMSG))
                return 1;
        name = o ? json_get_string(o, "snapshot") : NULL;
        if (!name) {
                /* Not JSON (logged) or not a delete journal. */
                if (o)
                        log_error("Domain '%s': unreadable delete journal, removing it.", d->def->name);
                delete_journal_remove(d);
                return 1;
        }
        job_id = json_get_string(o, "job");
        phase = json_get_string(o, "phase");

        /* The merge job of the interrupted qsnapd may still run in QEMU
         * (adopted): let it end; an active commit waiting for its pivot
         * gets it, since the delete wanted it. */
        if (job_id && d->jobs) {
                Job *j = job_tracker_find(d->jobs, job_id);
                if (j && !job_state_is_final(j->state)) {
                        if (j->state == JOB_STATE_READY && !j->pivoting) {
                                log_notice("Domain '%s': pivoting merge job %s of an interrupted delete.", d->def->name,
                                           job_id);
                                (void) job_pivot(j, NULL, NULL, &message);
                        }
                        return 0;
                }
        }
        if (domain_is_busy(d) || d->attaching || d->graph_busy)
                return 0;

        /* Headers first: the checks below read the chains by name (a chain
         * that stops at a json: name would make its files look unused;
         * while one is left, the merge does not count as complete). */
        done = recovery_fix_names(d, o);

        if (json_object_object_get_ex(o, "unlink", &unl) && json_object_is_type(unl, json_type_array))
                for (size_t i = 0; i < json_object_array_length(unl); i++) {
                        const char *f = json_object_get_string(json_object_array_get_idx(unl, i));
                        if (f && strv_extend(&files, f) < 0)
                                return log_oom(), 1;
                }
        s = snapshot_tree_find(&d->snapshots, name);
        if (streq_ptr(phase, "metadata") || !s) {
                domain_remove_unreferenced_files(d, files);
                delete_journal_remove(d);
                log_notice("Domain '%s': finished the interrupted delete of snapshot '%s' (its metadata were stored).",
                           d->def->name, name);
                return 1;
        }

        /* Did the merge of every disk complete? */
        if (json_object_object_get_ex(o, "renames", &renames) && json_object_is_type(renames, json_type_array))
                for (size_t i = 0; i < json_object_array_length(renames); i++) {
                        json_object *e = json_object_array_get_idx(renames, i), *fw = NULL;
                        const char *target = json_get_string(e, "target"), *from = json_get_string(e, "from"), *to = json_get_string(e, "to");
                        bool forward = json_object_object_get_ex(e, "forward", &fw) && json_object_get_boolean(fw);

                        if (!target || !from || !to) {
                                done = false;
                                continue;
                        }
                        /* forward: O (from) left every chain; backward: F (from) did. */
                        if (file_still_used(d, target, from))
                                done = false;
                        else if (delete_rename_add(&vp, target, from, to, DISK_FORMAT_QCOW2, forward) < 0) {
                                delete_victim_plan_done(&vp);
                                return log_oom(), 1;
                        }
                }
        if (done && vp.n_renames > 0) {
                for (size_t i = 0; i < vp.n_renames; i++) {
                        ImageChain c = {};
                        /* The file that takes over keeps its own format. */
                        _cleanup_free_ char *why = NULL;

                        if (gate_read_chain(d, vp.renames[i].to, DISK_FORMAT_QCOW2, &c, &why) >= 0 && c.n_layers > 0)
                                vp.renames[i].to_format = c.layers[0].format;
                        image_chain_done(&c);
                }
                domain_apply_renames(d, vp.renames, vp.n_renames);
                r = snapshot_metadata_commit(d, &s, 1, vp.renames, vp.n_renames, &message);
                delete_victim_plan_done(&vp);
                if (r < 0) {
                        log_error("Domain '%s': cannot finish the interrupted delete of snapshot '%s': %s", d->def->name,
                                  name, strna(message));
                        return 0;
                }
                domain_remove_unreferenced_files(d, files);
                delete_journal_remove(d);
                log_notice("Domain '%s': finished the interrupted delete of snapshot '%s' (the merge had completed).",
                           d->def->name, name);
                return 1;
        }
        delete_victim_plan_done(&vp);

        /* Not merged (or not everywhere): every step is safe to repeat, so
         * the delete runs again from where the files are now. */
        delete_journal_remove(d);
        r = snapshot_delete(d, s, 0, NULL, NULL, &message);
        if (r < 0)
                log_notice("Domain '%s': rolled back the interrupted delete of snapshot '%s'; it stays and can be "
                           "deleted again (%s).", d->def->name, name, strna(message));
        else
                log_notice("Domain '%s': finishing the interrupted delete of snapshot '%s' by merging again.",
                           d->def->name, name);
        return 1;
}

static int on_recovery_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        DeleteRecovery *rc = userdata;

        if (recovery_step(rc) > 0 || ++rc->tries >= RECOVERY_MAX_TRIES) {
                if (rc->tries >= RECOVERY_MAX_TRIES)
                        log_error("Domain '%s': gave up waiting to recover an interrupted delete.", rc->domain->def->name);
                recovery_free(rc);
                return 0;
        }
        (void) sd_event_source_set_time_relative(es, RECOVERY_RETRY_USEC);
        return 0;
}

int snapshot_delete_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        DeleteRecovery *rc;
        int r;

        if (!op_journal_exists(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND))
                return 0;
        rc = new0(DeleteRecovery, 1);
        if (!rc)
                return -ENOMEM;
        r = sd_event_add_time_relative(d->manager->event, &rc->timer, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC,
                                       on_recovery_timer, rc);
        if (r < 0) {
                free(rc);
                return r;
        }
        (void) sd_event_source_set_enabled(rc->timer, SD_EVENT_ON);
        rc->domain = domain_ref(d);
        manager_busy_ref(d->manager);
        log_notice("Domain '%s': a snapshot delete was interrupted; checking how far it got.", d->def->name);
        return 1;
}
