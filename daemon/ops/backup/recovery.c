/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The backup's journal <state>/ops/<uuid>.backup and what a restarted
 * qsnapd does with it. The journal holds the aligned <domainbackup>, the
 * job id (the BlockJob1's path), per disk the file, whether qsnapd
 * created it, the node and the QEMU job, whether the NBD server is ours,
 * and the phase: "prepared" (files made, no job yet), "transaction" (a
 * live push whose transaction may have gone out) or "running".
 *
 * Recovery, QEMU attached (after its jobs were adopted): a running backup
 * is taken over — the adopted per-disk jobs become the backup's again, the
 * BlockJob1 reappears under its old path and start time, a push goes on
 * to its end, a pull keeps serving until Abort; a prepared one is rolled
 * back (jobs cancelled, nodes deleted, files removed). A push at
 * "transaction" is running when QEMU has its jobs (QEMU's transaction
 * starts all or none, and qsnapd dismisses them), else rolled back: the
 * journal's last write before the reply, which thus costs one fsync
 * instead of two (docs/performance.md). QEMU gone: the files
 * qsnapd created are removed (a push target is incomplete, a scratch file
 * is no use) and a running backup is reported failed under its path.
 */
#include <stdio.h>
#include <sys/stat.h>

#include "core/domain-agent.h"
#include "core/domain-jobs.h"
#include "core/manager.h"
#include "ops/backup/internal.h"
#include "qemu/image.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/util.h"

#define JOURNAL_FORMAT 1

static int add_string(json_object *o, const char *key, const char *value) {
        json_object *v = value ? json_object_new_string(value) : NULL;

        if (value && !v)
                return -ENOMEM;
        return json_object_object_add(o, key, v) < 0 ? -ENOMEM : 0;
}

static int add_bool(json_object *o, const char *key, bool value) {
        return json_object_object_add(o, key, json_object_new_boolean(value)) < 0 ? -ENOMEM : 0;
}

static int add_u64(json_object *o, const char *key, uint64_t value) {
        json_object *v = json_object_new_uint64(value);
        return !v || json_object_object_add(o, key, v) < 0 ? -ENOMEM : 0;
}

static int add_strv(json_object *o, const char *key, char **l) {
        json_object *a = json_object_new_array();

        for (char **i = l; a && i && *i; i++) {
                json_object *v = json_object_new_string(*i);
                if (!v || json_object_array_add(a, v) < 0) {
                        json_object_put(v);
                        json_object_put(a);
                        return -ENOMEM;
                }
        }
        if (!a || json_object_object_add(o, key, a) < 0) {
                json_object_put(a);
                return -ENOMEM;
        }
        return 0;
}

static int read_strv(json_object *o, const char *key, char ***ret) {
        json_object *a = NULL;
        size_t n = json_get_array(o, key, &a);

        for (size_t i = 0; i < n; i++) {
                const char *v = json_object_get_string(json_object_array_get_idx(a, i));
                if (v && strv_extend(ret, v) < 0)
                        return -ENOMEM;
        }
        return 0;
}

static json_object *journal_disk(const BackupDiskRun *r) {
        json_object *o = json_object_new_object();

        if (!o || add_string(o, "target", r->target) < 0 || add_string(o, "source", r->source) < 0 ||
            add_string(o, "path", r->path) < 0 || add_string(o, "format", disk_format_to_string(r->format)) < 0 ||
            add_bool(o, "created", r->created) < 0 || add_bool(o, "reuse", r->reuse) < 0 ||
            add_u64(o, "size", r->size) < 0 || add_string(o, "node", r->node) < 0 ||
            add_string(o, "device", r->device) < 0 || add_string(o, "job", r->job_id) < 0 ||
            add_string(o, "bitmap", r->bitmap) < 0 || add_string(o, "export", r->export_name) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

const char *backup_start_phase(BackupOp *b) {
        return b->plan->def->mode == BACKUP_MODE_PUSH && !b->plan->offline ? "transaction" : "prepared";
}

int backup_journal_write(BackupOp *b, const char *phase) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        _cleanup_free_ char *xml = NULL;
        BackupPlan *p = b->plan;
        json_object *disks = json_object_new_array();
        int r;

        if (!o || !disks) {
                json_object_put(disks);
                return -ENOMEM;
        }
        if (json_object_object_add(o, "disks", disks) < 0) {
                json_object_put(disks);
                return -ENOMEM;
        }
        r = backup_def_format(p->def, &xml);
        if (r < 0)
                return r;
        if (p->checkpoint) {
                _cleanup_free_ char *cp = NULL;

                r = checkpoint_def_format(p->checkpoint, CHECKPOINT_FORMAT_SECURE, &cp);
                if (r < 0)
                        return r;
                if (add_string(o, "checkpoint_xml", cp) < 0 || add_strv(o, "checkpoint_targets", p->cp_targets) < 0 ||
                    add_strv(o, "checkpoint_sources", p->cp_sources) < 0 || add_strv(o, "checkpoint_nodes", p->cp_nodes) < 0)
                        return -ENOMEM;
        }
        if (add_u64(o, "format", JOURNAL_FORMAT) < 0 || add_string(o, "phase", phase) < 0 ||
            add_string(o, "id", p->id) < 0 || add_string(o, "xml", xml) < 0 ||
            add_u64(o, "start_time", p->start_time) < 0 || add_u64(o, "flags", p->flags) < 0 ||
            add_string(o, "socket", p->socket) < 0 || add_bool(o, "nbd", b->nbd_started) < 0 ||
            add_string(o, "tcp_host", p->tcp_host) < 0 || add_string(o, "tcp_port", p->tcp_port) < 0 ||
            add_string(o, "tls_dir", p->tls_dir) < 0 || add_string(o, "tls_id", p->tls_id) < 0 ||
            add_bool(o, "tls", b->tls_added) < 0 || add_bool(o, "frozen", b->frozen) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_disks; i++) {
                json_object *d = journal_disk(p->disks + i);
                if (!d || json_object_array_add(disks, d) < 0) {
                        json_object_put(d);
                        return -ENOMEM;
                }
        }
        return operation_journal_write(b->op, o);
}

static uint64_t json_get_u64(json_object *o, const char *key) {
        json_object *v;

        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return 0;
        return json_object_get_uint64(v);
}

static int dup_or_null(const char *s, char **ret) {
        *ret = s ? strdup(s) : NULL;
        return s && !*ret ? -ENOMEM : 0;
}

/* The plan as the journal describes it. */
static int journal_read_plan(Domain *d, json_object *j, BackupPlan **ret, bool *ret_running, bool *ret_maybe_running,
                             bool *ret_nbd) {
        _cleanup_(backup_plan_freep) BackupPlan *p = new0(BackupPlan, 1);
        _cleanup_free_ char *error = NULL;
        const char *xml = json_get_string(j, "xml");
        json_object *disks = NULL;
        size_t n;
        int r;

        if (!p)
                return -ENOMEM;
        p->domain = d;
        if (!xml || !json_get_string(j, "id"))
                return -EBADMSG;
        r = backup_def_parse(xml, strlen(xml), &p->def, &error);
        if (r < 0) {
                log_warning("Domain '%s': the backup journal's XML does not parse: %s", d->def->name, strna(error));
                return -EBADMSG;
        }
        p->flags = json_get_u64(j, "flags");
        p->start_time = json_get_u64(j, "start_time");
        if (dup_or_null(json_get_string(j, "id"), &p->id) < 0 || dup_or_null(json_get_string(j, "socket"), &p->socket) < 0 ||
            dup_or_null(json_get_string(j, "tcp_host"), &p->tcp_host) < 0 ||
            dup_or_null(json_get_string(j, "tcp_port"), &p->tcp_port) < 0 ||
            dup_or_null(json_get_string(j, "tls_dir"), &p->tls_dir) < 0 ||
            dup_or_null(json_get_string(j, "tls_id"), &p->tls_id) < 0)
                return -ENOMEM;
        n = json_get_array(j, "disks", &disks);
        p->disks = new0(BackupDiskRun, n + 1);
        if (!p->disks)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(disks, i);
                BackupDiskRun *dr = p->disks + p->n_disks++;

                *dr = (BackupDiskRun) {
                        .format = disk_format_from_string(json_get_string(e, "format")),
                        .created = json_get_bool(e, "created"),
                        .reuse = json_get_bool(e, "reuse"),
                        .size = json_get_u64(e, "size"),
                };
                if (dup_or_null(json_get_string(e, "target"), &dr->target) < 0 ||
                    dup_or_null(json_get_string(e, "source"), &dr->source) < 0 ||
                    dup_or_null(json_get_string(e, "path"), &dr->path) < 0 ||
                    dup_or_null(json_get_string(e, "node"), &dr->node) < 0 ||
                    dup_or_null(json_get_string(e, "device"), &dr->device) < 0 ||
                    dup_or_null(json_get_string(e, "job"), &dr->job_id) < 0 ||
                    dup_or_null(json_get_string(e, "bitmap"), &dr->bitmap) < 0 ||
                    dup_or_null(json_get_string(e, "export"), &dr->export_name) < 0)
                        return -ENOMEM;
                if (!dr->target || !dr->path || !dr->node || !dr->job_id)
                        return -EBADMSG;
                if (p->def->mode == BACKUP_MODE_PULL && backup_disk_run_pull_names(dr) < 0)
                        return -ENOMEM;
        }
        if (json_get_string(j, "checkpoint_xml")) {
                const char *cp = json_get_string(j, "checkpoint_xml");

                if (checkpoint_def_parse(cp, strlen(cp), CHECKPOINT_PARSE_REDEFINE, &p->checkpoint, NULL) < 0)
                        log_warning("Domain '%s': the checkpoint of the backup journal does not parse; it is not "
                                    "created.", d->def->name);
                if (read_strv(j, "checkpoint_targets", &p->cp_targets) < 0 ||
                    read_strv(j, "checkpoint_sources", &p->cp_sources) < 0 ||
                    read_strv(j, "checkpoint_nodes", &p->cp_nodes) < 0)
                        return -ENOMEM;
        }
        *ret_running = streq_ptr(json_get_string(j, "phase"), "running");
        *ret_maybe_running = streq_ptr(json_get_string(j, "phase"), "transaction") && p->def->mode == BACKUP_MODE_PUSH;
        *ret_nbd = json_get_bool(j, "nbd");
        *ret = TAKE_PTR(p);
        return 0;
}

/* QEMU is gone: what the backup made on disk goes; a running one is
 * reported failed under its path. */
static void recover_offline(Domain *d, BackupPlan *p, bool running, const char *kind) {

        for (size_t i = 0; i < p->n_disks; i++)
                if (p->disks[i].created && fs_unlink_nofollow(p->disks[i].path, S_IFREG) >= 0)
                        log_info("Domain '%s': removed %s, left by backup %s that did not finish.", d->def->name,
                                 p->disks[i].path, p->id);
        if (p->socket)
                (void) fs_unlink_nofollow(p->socket, S_IFSOCK);
        if (running) {
                Job *j = job_new_local(p->id, JOB_TYPE_BACKUP, p->n_disks == 1 ? p->disks[0].target : NULL);

                if (j && domain_local_job_add(d, j) >= 0) {
                        job_set_start_time(j, p->start_time);
                        job_local_update(j, JOB_STATE_FAILED, 0, 0,
                                         streq(kind, BACKUP_JOURNAL_KIND)
                                                 ? "QEMU went away while qsnapd was not running; the backup did not finish."
                                                 : "qsnapd stopped while it copied the disks; the backup did not finish.");
                        domain_local_job_end(d, j);
                }
                job_unref(j);
        }
        log_warning("Domain '%s': backup %s did not finish (%s).", d->def->name, p->id,
                    streq(kind, BACKUP_JOURNAL_KIND) ? "its QEMU went away while qsnapd was not running"
                                                     : "qsnapd stopped during the offline copy");
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, kind);
}

/* QEMU runs on: the backup is ours again. */
static int recover_attached(Domain *d, BackupPlan *plan, bool running, bool maybe_running, bool nbd,
                            DomainDoneFunc done, void *userdata) {
        BackupOp *b;
        Operation *o;
        int r;

        /* The transaction went through when QEMU has the jobs (all of them:
         * one missing fails the backup below, as for "running"). */
        for (size_t i = 0; maybe_running && !running && i < plan->n_disks; i++)
                running = job_tracker_find(d->jobs, plan->disks[i].job_id) != NULL;
        b = new0(BackupOp, 1);
        if (!b) {
                backup_plan_free(plan);
                return -ENOMEM;
        }
        *b = (BackupOp) { .plan = plan, .domain = d, .running = running, .nbd_started = nbd,
                          .tls_added = nbd && plan->tls_id };
        r = operation_new(d, &backup_kind, b, &o);
        if (r < 0)
                return r;
        b->op = o;
        d->backup = o;
        operation_started(o);
        /* Rewritten, so that the operation owns it and removes it at the end. */
        r = backup_journal_write(b, running ? "running" : "prepared");
        if (r < 0)
                log_warning_errno(r, "Domain '%s': cannot rewrite the backup journal: %m", d->def->name);
        /* Every node the backup may have added is deleted at the end
         * (a missing one is a harmless error). */
        for (size_t i = 0; i < plan->n_disks; i++) {
                BackupDiskRun *dr = plan->disks + i;
                Job *j = d->jobs ? job_tracker_find(d->jobs, dr->job_id) : NULL;

                dr->node_added = true;
                dr->access_added = plan->def->mode == BACKUP_MODE_PULL;
                if (!j)
                        continue;
                r = domain_job_claim(d, j, &backup_job_observer, b);
                if (r < 0) {
                        log_warning("Domain '%s': cannot take over backup job %s.", d->def->name, dr->job_id);
                        continue;
                }
                dr->job = job_ref(j);
        }
        if (!running) {
                log_info("Domain '%s': rolling back backup %s, which had not started when qsnapd stopped.",
                         d->def->name, plan->id);
                /* Done before anyone asks: the start-up waits for the end. */
                b->recovered = done;
                b->recovered_userdata = userdata;
                backup_cleanup(b);
                return 1;
        }
        for (size_t i = 0; i < plan->n_disks; i++)
                if (!plan->disks[i].job) {
                        b->error = -QSNAP_E_QEMU_FAILED;
                        b->message = strprintf("The backup job of disk %s is gone from QEMU.", plan->disks[i].target);
                        break;
                }
        r = backup_local_job_new(b);
        if (r < 0)
                b->error = r;
        log_info("Domain '%s': adopted %s backup %s.", d->def->name, backup_mode_to_string(plan->def->mode), plan->id);
        if (b->error < 0)
                backup_cleanup(b);
        else
                backup_check_end(b);
        return 0;
}

int backup_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        _cleanup_(json_object_putp) json_object *j = NULL;
        BackupPlan *plan = NULL;
        bool running = false, maybe_running = false, nbd = false;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, BACKUP_JOURNAL_KIND, &j);
        if (r <= 0) {
                if (r == -EBADMSG)
                        op_journal_remove(d->manager->config.state_dir, d->def->uuid, BACKUP_JOURNAL_KIND);
                return r;
        }
        /* A guest the interrupted QUIESCE backup froze is thawed, whatever else. */
        if (json_get_bool(j, "frozen") && d->qmp)
                (void) domain_agent_thaw(d, "backup", DOMAIN_THAW_RECOVERY, NULL, NULL);
        r = journal_read_plan(d, j, &plan, &running, &maybe_running, &nbd);
        if (r < 0) {
                log_warning_errno(r, "Domain '%s': the backup journal is unusable; dropped: %m", d->def->name);
                op_journal_remove(d->manager->config.state_dir, d->def->uuid, BACKUP_JOURNAL_KIND);
                return r;
        }
        if (!d->qmp || !d->jobs) {
                recover_offline(d, plan, running, BACKUP_JOURNAL_KIND);
                backup_plan_free(plan);
                return 0;
        }
        return recover_attached(d, plan, running, maybe_running, nbd, done, userdata);
}

/* The paused QEMU died with the qsnapd that ran it: nothing to adopt. */
int backup_offline_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        _cleanup_(json_object_putp) json_object *j = NULL;
        BackupPlan *plan = NULL;
        bool running = false, maybe_running = false, nbd = false;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, BACKUP_OFFLINE_JOURNAL_KIND, &j);
        if (r <= 0) {
                if (r == -EBADMSG)
                        op_journal_remove(d->manager->config.state_dir, d->def->uuid, BACKUP_OFFLINE_JOURNAL_KIND);
                return r;
        }
        r = journal_read_plan(d, j, &plan, &running, &maybe_running, &nbd);
        if (r < 0) {
                log_warning_errno(r, "Domain '%s': the offline backup journal is unusable; dropped: %m", d->def->name);
                op_journal_remove(d->manager->config.state_dir, d->def->uuid, BACKUP_OFFLINE_JOURNAL_KIND);
                return r;
        }
        /* It got as far as the new checkpoint's bitmaps: they go with the backup. */
        if (streq_ptr(json_get_string(j, "phase"), "checkpoint")) {
                running = true;
                for (char **src = plan->cp_sources; plan->checkpoint && src && *src; src++) {
                        _cleanup_free_ char *m = NULL;

                        if (image_bitmap_remove(*src, plan->checkpoint->name, &m) >= 0)
                                log_info("Domain '%s': removed bitmap '%s' from %s, added by backup %s that did not "
                                         "finish.", d->def->name, plan->checkpoint->name, *src, plan->id);
                }
        }
        recover_offline(d, plan, running, BACKUP_OFFLINE_JOURNAL_KIND);
        backup_plan_free(plan);
        return 0;
}
