/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BlockPull and BlockCommit. Each job gets an id that names its type and
 * disk ("commit-vda-1a2b3c"), so that its object path and what it is
 * survive a restart of qsnapd: adoption reads them back from QEMU's job
 * list. Jobs run with auto-finalize=false and auto-dismiss=false; when one
 * is pending we let QEMU finalize it, and when it is gone from QEMU we
 * resynchronize each disk's active file and chain from QEMU itself (the
 * root node of the device and its file), store the definition, drop the
 * overlay nodes we had added that left the graph, and only then report
 * the end. The same resynchronization runs after an adoption, so a job
 * that ended while qsnapd was away is accounted for too.
 */
#include <limits.h>
#include <stdio.h>

#include "domain-job.h"
#include "manager.h"
#include "qmp-commands.h"
#include "util.h"

static void info_free(BlockJobInfo *info) {
        if (!info)
                return;
        strv_free(info->old_chain);
        sd_event_source_disable_unref(info->linger);
        free(info);
}

static void notify(Domain *d, Job *j, JobEvent e) {
        manager_notify_job(d->manager, d, j, e);
}

/* ---- lookups ---- */

Job *domain_disk_job(Domain *d, const char *target) {
        if (!d->jobs)
                return NULL;
        JOB_TRACKER_FOREACH(j, d->jobs)
                if (j->disk && streq(j->disk, target) && !job_state_is_final(j->state))
                        return j;
        return NULL;
}

Job *domain_find_job(Domain *d, const char *id) {
        Job *j = d->jobs ? job_tracker_find(d->jobs, id) : NULL;

        if (j)
                return j;
        for (size_t i = 0; i < d->n_lingering; i++)
                if (streq(d->lingering[i]->id, id))
                        return d->lingering[i];
        return NULL;
}

int domain_list_jobs(Domain *d, Job ***ret, size_t *ret_n) {
        size_t n = 0, k = 0;
        Job **l;

        if (d->jobs)
                JOB_TRACKER_FOREACH(j, d->jobs)
                        n++;
        l = new0(Job *, n + d->n_lingering + 1);
        if (!l)
                return -ENOMEM;
        if (d->jobs)
                JOB_TRACKER_FOREACH(j, d->jobs)
                        l[k++] = j;
        for (size_t i = 0; i < d->n_lingering; i++)
                l[k++] = d->lingering[i];
        *ret = l;
        *ret_n = k;
        return 0;
}

/* ---- after a job: the disks as QEMU has them now ---- */

typedef struct Resync {
        Domain *domain;
        Job *job;          /* reported finished when done; may be NULL */
        char **roots;      /* per disk of the live definition: its root node */
        size_t pending;
        void (*done)(Domain *d, void *userdata);
        void *userdata;
} Resync;

static void linger_remove(Domain *d, Job *j) {
        for (size_t i = 0; i < d->n_lingering; i++)
                if (d->lingering[i] == j) {
                        memmove(d->lingering + i, d->lingering + i + 1, (d->n_lingering - i - 1) * sizeof(Job *));
                        d->n_lingering--;
                        notify(d, j, JOB_EVENT_REMOVED);
                        info_free(j->userdata);
                        j->userdata = NULL;
                        job_unref(j);
                        return;
                }
}

static int on_linger_end(sd_event_source *s, uint64_t usec, void *userdata) {
        Job *j = userdata;
        BlockJobInfo *info = j->userdata;

        linger_remove(info->domain, j);
        return 0;
}

/* A job that left QEMU's list stays findable (its object must not blink
 * out while its end is being accounted for), and then for a while. */
static void linger_add(Domain *d, Job *j) {
        Job **l;

        for (size_t i = 0; i < d->n_lingering; i++)
                if (d->lingering[i] == j)
                        return;
        l = reallocarray(d->lingering, d->n_lingering + 1, sizeof(Job *));
        if (!l)
                return (void) log_oom();
        d->lingering = l;
        d->lingering[d->n_lingering++] = job_ref(j);
}

static void job_report_end(Domain *d, Job *j) {
        BlockJobInfo *info = j->userdata;

        if (info && !info->linger)
                (void) sd_event_add_time_relative(d->manager->event, &info->linger, CLOCK_MONOTONIC, JOB_LINGER_USEC,
                                                  USEC_PER_SEC, on_linger_end, j);
        log_info("Domain '%s': %s job %s on %s %s%s%s.", d->def->name, job_type_to_string(j->type), j->id,
                 strna(j->disk), job_state_to_string(j->state), j->error ? ": " : "", strempty(j->error));
        notify(d, j, JOB_EVENT_FINISHED);
}

int domain_local_job_add(Domain *d, Job *j) {
        BlockJobInfo *info = new0(BlockJobInfo, 1);
        size_t n = d->n_lingering;

        if (!info)
                return -ENOMEM;
        info->domain = d;
        j->userdata = info;
        linger_add(d, j);
        if (d->n_lingering == n) {
                j->userdata = NULL;
                info_free(info);
                return -ENOMEM;
        }
        notify(d, j, JOB_EVENT_ADDED);
        return 0;
}

void domain_local_job_progress(Domain *d, Job *j) {
        notify(d, j, JOB_EVENT_PROGRESS);
}

void domain_local_job_end(Domain *d, Job *j) {
        notify(d, j, JOB_EVENT_CHANGED);
        job_report_end(d, j);
}

static void resync_end(Resync *rs) {
        Domain *d = rs->domain;

        domain_chains_invalidate(d);
        if (rs->job) {
                job_report_end(d, rs->job);
                job_unref(rs->job);
        }
        if (rs->done)
                rs->done(d, rs->userdata);
        manager_busy_unref(d->manager);
        strv_free(rs->roots);
        domain_unref(d);
        free(rs);
}

/* Files a finished job took out of the chain: gone with DELETE. */
static void delete_dropped_files(Domain *d, BlockJobInfo *info, const char *active) {
        const ImageChain *now;

        if (!info || !info->delete_files || !info->old_chain)
                return;
        domain_chains_invalidate(d);
        now = domain_disk_chain(d, active, DISK_FORMAT_QCOW2);
        if (!now)
                return;
        for (char **f = info->old_chain; *f; f++) {
                bool kept = false;

                for (size_t i = 0; i < now->n_layers && !kept; i++)
                        kept = streq(now->layers[i].path, *f);
                if (!kept && unlink(*f) >= 0)
                        log_info("Domain '%s': deleted %s, committed by the job.", d->def->name, *f);
        }
}

static void on_named_nodes(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Resync *rs = userdata;
        Domain *d = rs->domain;
        DomainDef *live = d->live;
        bool changed = false;

        for (size_t i = 0; error >= 0 && live && i < live->n_disks; i++) {
                DomainDisk *disk = live->disks + i;
                json_object *e;

                if (!rs->roots[i])
                        continue;
                /* The file under the root node is the disk's active file. */
                for (size_t k = 0; k < json_object_array_length(result); k++) {
                        json_object *node = NULL, *file = NULL;
                        const char *f;

                        e = json_object_array_get_idx(result, k);
                        if (!json_object_object_get_ex(e, "node-name", &node) ||
                            !streq(json_object_get_string(node), rs->roots[i]) || !json_object_object_get_ex(e, "file", &file))
                                continue;
                        f = json_object_get_string(file);
                        if (disk->transient || !f || f[0] != '/' || streq(f, disk->source))
                                break;
                        log_info("Domain '%s': disk %s is now %s (was %s).", d->def->name, disk->target, f, disk->source);
                        {
                                DomainDisk *stored = domain_def_find_disk(d->def, disk->target);
                                if (stored && streq(stored->source, disk->source))
                                        (void) free_and_strdup(&stored->source, f);
                        }
                        (void) free_and_strdup(&disk->source, f);
                        changed = true;
                        break;
                }
                if (rs->job && rs->job->disk && streq(rs->job->disk, disk->target))
                        delete_dropped_files(d, rs->job->userdata, disk->source);
        }

        /* Overlay nodes we added stay open after a job dropped them from the
         * chain and keep their files locked (see the notes): let go of them. */
        domain_chains_invalidate(d);
        for (size_t k = 0; error >= 0 && k < json_object_array_length(result); k++) {
                json_object *e = json_object_array_get_idx(result, k), *node = NULL, *file = NULL;
                const char *name, *f;
                bool in_use = false;

                if (!json_object_object_get_ex(e, "node-name", &node) || !json_object_object_get_ex(e, "file", &file))
                        continue;
                name = json_object_get_string(node);
                f = json_object_get_string(file);
                /* Implicit nodes ('#…') go with their parent; QEMU refuses to
                 * delete a node that is still attached, so trying is safe. */
                if (!name || name[0] == '#')
                        continue;
                for (size_t i = 0; live && i < live->n_disks && !in_use; i++) {
                        const ImageChain *c;

                        c = domain_disk_chain(d, live->disks[i].source, live->disks[i].format);
                        for (size_t l = 0; c && l < c->n_layers && !in_use; l++)
                                in_use = streq(c->layers[l].path, f);
                }
                if (!in_use)
                        (void) qmp_cmd_blockdev_del(qmp, name, NULL, NULL);
        }

        if (changed) {
                if (domain_save(d) < 0 || domain_save_live(d) < 0)
                        log_error("Domain '%s': cannot store the disks' new active files.", d->def->name);
        }
        /* A job changed a chain even where the active file stayed. */
        if (changed || rs->job)
                manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
        resync_end(rs);
}

typedef struct RootCall {
        Resync *rs;
        size_t index;
} RootCall;

static void on_resync_root(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        RootCall *c = userdata;
        Resync *rs = c->rs;
        const char *node;

        if (error >= 0 && qmp_parse_string(result, &node) >= 0)
                rs->roots[c->index] = strdup(node);
        free(c);
        if (--rs->pending > 0)
                return;
        if (!rs->domain->qmp || qmp_cmd_query_named_block_nodes(rs->domain->qmp, on_named_nodes, rs) < 0)
                resync_end(rs);
}

/* Reads the disks back from QEMU, then reports job (if any) as finished. */
static void domain_resync_disks(Domain *d, Job *job, void (*done)(Domain *d, void *userdata), void *userdata) {
        Resync *rs = new0(Resync, 1);
        size_t n = d->live ? d->live->n_disks : 0;

        if (!rs || !(rs->roots = new0(char *, n + 1))) {
                free(rs);
                log_oom();
                if (job)
                        job_report_end(d, job);
                if (done)
                        done(d, userdata);
                return;
        }
        *rs = (Resync) { .domain = domain_ref(d), .job = job ? job_ref(job) : NULL, .roots = rs->roots, .done = done,
                         .userdata = userdata };
        manager_busy_ref(d->manager);
        for (size_t i = 0; d->qmp && i < n; i++) {
                RootCall *c = new0(RootCall, 1);

                if (!c || qmp_cmd_disk_root_node(d->qmp, d->live->disks[i].target, on_resync_root, c) < 0) {
                        free(c);
                        continue;
                }
                *c = (RootCall) { .rs = rs, .index = i };
                rs->pending++;
        }
        if (rs->pending == 0)
                resync_end(rs);
}

/* ---- the tracker's observer ---- */

static void on_job_progress(Job *j, void *userdata) {
        notify(userdata, j, JOB_EVENT_PROGRESS);
}

static void on_job_state_changed(Job *j, void *userdata) {
        notify(userdata, j, JOB_EVENT_CHANGED);
}

static void on_job_ready(Job *j, void *userdata) {
        notify(userdata, j, JOB_EVENT_READY);
}

/* One graph change at a time: QEMU 7.2 can crash when block-graph queries
 * run while it finalizes a job, so finalizing a job and reading the disks
 * back after one are queued per domain and run one after the other. */
static void graph_next(Domain *d);

static void graph_enqueue(Domain *d, Job *j, bool finalize) {
        GraphTask *t = new0(GraphTask, 1), **p;

        if (!t)
                return (void) log_oom();
        *t = (GraphTask) { .job = job_ref(j), .finalize = finalize };
        for (p = &d->graph_tasks; *p; p = &(*p)->next)
                ;
        *p = t;
        if (!d->graph_busy)
                graph_next(d);
}

static void graph_done(Domain *d, void *userdata) {
        d->graph_busy = false;
        graph_next(d);
}

static void graph_next(Domain *d) {
        GraphTask *t = d->graph_tasks;

        if (!t || d->graph_busy)
                return;
        d->graph_tasks = t->next;
        d->graph_busy = true;
        if (t->finalize) {
                /* QEMU applies the chain change when it finalizes; finished()
                 * follows, and with it the read-back. */
                d->graph_finalizing = t->job;
                if (job_finalize(t->job, true, NULL) < 0) {
                        log_warning("Domain '%s': cannot finalize job %s.", d->def->name, t->job->id);
                        d->graph_finalizing = NULL;
                        d->graph_busy = false;
                }
        } else
                domain_resync_disks(d, t->job, graph_done, NULL);
        job_unref(t->job);
        free(t);
        if (!d->graph_busy)
                graph_next(d);
}

void domain_graph_tasks_free(Domain *d) {
        while (d->graph_tasks) {
                GraphTask *t = d->graph_tasks;
                d->graph_tasks = t->next;
                job_unref(t->job);
                free(t);
        }
        d->graph_busy = false;
        d->graph_finalizing = NULL;
}

static void on_job_pending(Job *j, void *userdata) {
        graph_enqueue(userdata, j, true);
}

static void on_job_finished(Job *j, void *userdata) {
        Domain *d = userdata;

        if (!j->userdata) {
                BlockJobInfo *info = new0(BlockJobInfo, 1);
                if (info)
                        info->domain = d;
                j->userdata = info;
        }
        linger_add(d, j);
        /* The job whose finalize holds the queue reads back at once. */
        if (d->graph_finalizing == j) {
                d->graph_finalizing = NULL;
                domain_resync_disks(d, j, graph_done, NULL);
                return;
        }
        graph_enqueue(d, j, false);
}

static const JobObserver job_observer = {
        .progress = on_job_progress,
        .state_changed = on_job_state_changed,
        .ready = on_job_ready,
        .pending = on_job_pending,
        .finished = on_job_finished,
};

/* ---- attach/detach ---- */

typedef struct AttachCall {
        Domain *domain;
        void (*done)(Domain *d, void *userdata);
        void *userdata;
} AttachCall;

/* "<type>-<target>-<hex>": what an adopted job is. */
static void job_learn_from_id(Domain *d, Job *j) {
        _cleanup_free_ char *copy = strdup(j->id);
        char *type, *disk, *rest;

        if (!copy || !(rest = strchr(copy, '-')))
                return;
        type = copy;
        *rest++ = 0;
        disk = rest;
        rest = strrchr(disk, '-');
        if (!rest)
                return;
        *rest = 0;
        for (char *p = type; *p; p++)
                if (*p == '.')
                        *p = '-';
        if (job_type_from_string(type) >= 0)
                job_set_type(j, job_type_from_string(type));
        if (domain_def_find_disk(domain_current_def(d), disk))
                (void) job_set_disk(j, disk);
        if (!j->userdata) {
                BlockJobInfo *info = new0(BlockJobInfo, 1);
                if (info)
                        info->domain = d;
                j->userdata = info;
        }
}

static void on_resynced_after_adopt(Domain *d, void *userdata) {
        AttachCall *c = userdata;

        if (c->done)
                c->done(d, c->userdata);
        domain_unref(c->domain);
        free(c);
}

static void on_adopted(JobTracker *t, int error, void *userdata) {
        AttachCall *c = userdata;
        Domain *d = c->domain;

        d->jobs_attach = NULL;

        if (error < 0)
                log_warning("Domain '%s': cannot list QEMU's jobs: %s", d->def->name, strerror(-error));
        JOB_TRACKER_FOREACH(j, t) {
                job_learn_from_id(d, j);
                log_info("Domain '%s': adopted %s job %s on %s (%s).", d->def->name, job_type_to_string(j->type), j->id,
                         strna(j->disk), job_state_to_string(j->state));
                notify(d, j, JOB_EVENT_ADDED);
        }
        /* A job that ended while we were away changed the chain already.
         * With jobs still in QEMU their own ends resync; block queries while
         * QEMU finalizes a job can crash QEMU 7.2, so none are sent now. */
        if (job_tracker_first(t))
                return on_resynced_after_adopt(d, c);
        domain_resync_disks(d, NULL, on_resynced_after_adopt, c);
}

int domain_jobs_attach(Domain *d, void (*done)(Domain *d, void *userdata), void *userdata) {
        AttachCall *c;
        int r;

        domain_jobs_free(d);
        r = job_tracker_new(d->qmp, d->manager->event, &job_observer, d, &d->jobs);
        if (r < 0)
                return r;
        c = new0(AttachCall, 1);
        if (!c)
                return -ENOMEM;
        *c = (AttachCall) { .domain = domain_ref(d), .done = done, .userdata = userdata };
        r = job_tracker_adopt(d->jobs, on_adopted, c);
        if (r < 0) {
                domain_unref(d);
                free(c);
                return r;
        }
        d->jobs_attach = c;
        return 0;
}

/* Lets go of the tracker; jobs still in it are QEMU's business now. */
static void tracker_release(Domain *d) {
        /* A freed tracker calls no adopt callback: the attach in flight ends
         * here (a disconnect reports the failure of the attach itself). */
        if (d->jobs_attach) {
                AttachCall *c = d->jobs_attach;

                d->jobs_attach = NULL;
                free(c);
                domain_unref(d);
        }
        if (!d->jobs)
                return;
        JOB_TRACKER_FOREACH(j, d->jobs) {
                info_free(j->userdata);
                j->userdata = NULL;
        }
        d->jobs = job_tracker_free(d->jobs);
}

void domain_jobs_disconnected(Domain *d, bool qemu_gone) {
        if (!d->jobs)
                return;
        if (qemu_gone)
                job_tracker_disconnected(d->jobs); /* fails them; finished() reports */
        tracker_release(d);
        domain_graph_tasks_free(d);
}

void domain_jobs_free(Domain *d) {
        domain_graph_tasks_free(d);
        tracker_release(d);
        while (d->n_lingering > 0) {
                Job *j = d->lingering[--d->n_lingering];
                info_free(j->userdata);
                j->userdata = NULL;
                job_unref(j);
        }
        d->lingering = mfree(d->lingering);
}

/* ---- starting jobs ---- */

typedef struct StartCall {
        Domain *domain;
        char *id;
        JobType type;
        char *disk;
        uint64_t bandwidth;
        BlockJobInfo *info;
        BlockJobStartedFunc done;
        void *userdata;
        /* what to send, once the node names are known */
        char *base_file, *top_file; /* NULL: bottom / active */
        bool shallow_base;
} StartCall;

static void start_call_free(StartCall *c) {
        free(c->id);
        free(c->disk);
        free(c->base_file);
        free(c->top_file);
        info_free(c->info);
        manager_busy_unref(c->domain->manager);
        domain_unref(c->domain);
        free(c);
}

static void start_fail(StartCall *c, int error, const char *message) {
        c->done(c->domain, error, message, NULL, c->userdata);
        start_call_free(c);
}

static void on_job_started(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        StartCall *c = userdata;
        Domain *d = c->domain;
        Job *j = NULL;
        int r;

        if (error < 0) {
                _cleanup_free_ char *m = strprintf("QEMU refused the job: %s", strna(desc));
                return start_fail(c, -EIO, m);
        }
        r = d->jobs ? job_tracker_add(d->jobs, c->id, c->type, c->disk, c->bandwidth, &j) : -ENOTCONN;
        if (r < 0)
                return start_fail(c, r, "Cannot track the job.");
        j->userdata = TAKE_PTR(c->info);
        log_info("Domain '%s': started %s job %s on %s.", d->def->name, job_type_to_string(c->type), c->id, c->disk);
        notify(d, j, JOB_EVENT_ADDED);
        c->done(d, 0, NULL, j, c->userdata);
        start_call_free(c);
}

static void on_nodes_for_job(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        StartCall *c = userdata;
        const char *device = NULL, *base = NULL, *top = NULL;
        const DomainDisk *disk = domain_def_find_disk(domain_current_def(c->domain), c->disk);
        int64_t id;

        if (error < 0 || !disk || qmp_find_format_node(result, disk->source, &device) <= 0 ||
            (c->base_file && qmp_find_format_node(result, c->base_file, &base) <= 0) ||
            (c->top_file && qmp_find_format_node(result, c->top_file, &top) <= 0))
                return start_fail(c, -EIO, "QEMU's block graph does not show the disk's chain as qsnapd knows it.");

        if (c->type == JOB_TYPE_PULL)
                id = qmp_cmd_block_stream(qmp, c->id, device, base, NULL, c->bandwidth, on_job_started, c);
        else
                id = qmp_cmd_block_commit(qmp, c->id, device, top, base, NULL, c->bandwidth, on_job_started, c);
        if (id < 0)
                start_fail(c, (int) id, "Cannot send the job to QEMU.");
}

/* The disk, its chain, and the common refusals. */
static int job_prepare(Domain *d, const char *disk_name, const DomainDisk **ret_disk, const ImageChain **ret_chain,
                       char **ret_message) {
        const DomainDef *def = domain_current_def(d);
        const DomainDisk *disk = NULL;
        const ImageChain *chain;

        for (size_t i = 0; i < def->n_disks && !disk; i++)
                if (streq(def->disks[i].target, disk_name) || streq(def->disks[i].source, disk_name))
                        disk = def->disks + i;
        if (!disk) {
                *ret_message = strprintf("Domain '%s' has no disk '%s'.", def->name, disk_name);
                return -ENODEV;
        }
        if (!domain_is_active(d) || !d->qmp || !d->jobs) {
                *ret_message = strprintf("Domain '%s' is not running; block jobs need its QEMU.", def->name);
                return -ESRCH;
        }
        /* While a job of this domain is being finalized, block-graph queries
         * can crash QEMU 7.2 (a new job needs one): wait for it. */
        if (d->graph_busy) {
                *ret_message = strprintf("A block job of domain '%s' is finishing; try again in a moment.", def->name);
                return -EBUSY;
        }
        if (d->snapshot_busy || domain_disk_job(d, disk->target)) {
                *ret_message = strprintf("Disk %s of domain '%s' is busy with another job or operation.", disk->target,
                                         def->name);
                return -EBUSY;
        }
        if (disk->transient) {
                *ret_message = strprintf("Disk %s is transient; its chain is qsnapd's own.", disk->target);
                return -EOPNOTSUPP;
        }
        chain = domain_disk_chain(d, disk->source, disk->format);
        if (!chain) {
                *ret_message = strprintf("Cannot read the backing chain of %s.", disk->source);
                return -EIO;
        }
        *ret_disk = disk;
        *ret_chain = chain;
        return 0;
}

/* A file of the chain: its index, or -EINVAL. "" is for the caller. */
static int chain_index(const ImageChain *chain, const char *file) {
        char a[PATH_MAX], b[PATH_MAX];

        for (size_t i = 0; i < chain->n_layers; i++)
                if (streq(chain->layers[i].path, file) ||
                    (realpath(chain->layers[i].path, a) && realpath(file, b) && streq(a, b)))
                        return (int) i;
        return -EINVAL;
}

static int job_begin(Domain *d, JobType type, const DomainDisk *disk, const ImageChain *chain, const char *base_file,
                     const char *top_file, uint64_t bandwidth, bool delete_files, BlockJobStartedFunc done,
                     void *userdata) {
        StartCall *c = new0(StartCall, 1);

        if (!c)
                return -ENOMEM;
        *c = (StartCall) { .domain = domain_ref(d), .type = type, .bandwidth = bandwidth, .done = done, .userdata = userdata };
        manager_busy_ref(d->manager);
        /* '-' separates the parts, so "active-commit" is spelled "active.commit". */
        c->id = strprintf("%s-%s-%" PRIx64, type == JOB_TYPE_ACTIVE_COMMIT ? "active.commit" : job_type_to_string(type),
                          disk->target, (uint64_t) (++d->node_seq & 0xffffffffffULL));
        c->disk = strdup(disk->target);
        c->base_file = base_file ? strdup(base_file) : NULL;
        c->top_file = top_file ? strdup(top_file) : NULL;
        c->info = new0(BlockJobInfo, 1);
        if (!c->id || !c->disk || (base_file && !c->base_file) || (top_file && !c->top_file) || !c->info) {
                start_call_free(c);
                return -ENOMEM;
        }
        c->info->domain = d;
        c->info->delete_files = delete_files;
        for (size_t i = 0; i < chain->n_layers; i++)
                if (strv_extend(&c->info->old_chain, chain->layers[i].path) < 0) {
                        start_call_free(c);
                        return -ENOMEM;
                }
        if (qmp_cmd_query_named_block_nodes(d->qmp, on_nodes_for_job, c) < 0) {
                start_call_free(c);
                return -EIO;
        }
        return 0;
}

int domain_block_rebase(Domain *d, const char *disk_name, const char *base, uint64_t bandwidth, uint64_t flags,
                        BlockJobStartedFunc done, void *userdata, char **ret_message) {
        const DomainDisk *disk;
        const ImageChain *chain;
        int r, b;

        if (flags & BLOCK_REBASE_COPY) {
                *ret_message = strdup("BlockRebase with COPY (a mirror to a new file) is not implemented yet.");
                return -EOPNOTSUPP;
        }
        if (flags & BLOCK_REBASE_RELATIVE) {
                *ret_message = strdup("RELATIVE backing names are not implemented yet.");
                return -EOPNOTSUPP;
        }
        if (flags & (BLOCK_REBASE_SHALLOW | BLOCK_REBASE_REUSE_EXT | BLOCK_REBASE_COPY_RAW)) {
                *ret_message = strdup("SHALLOW, REUSE_EXT and COPY_RAW go only with COPY.");
                return -EINVAL;
        }
        r = job_prepare(d, disk_name, &disk, &chain, ret_message);
        if (r < 0)
                return r;
        if (chain->n_layers < 2) {
                *ret_message = strprintf("Disk %s has no backing file to pull from.", disk->target);
                return -EINVAL;
        }
        if (isempty(base))
                return job_begin(d, JOB_TYPE_PULL, disk, chain, NULL, NULL, bandwidth, false, done, userdata);
        /* A partial pull: what lies above base comes into the active file. */
        b = chain_index(chain, base);
        if (b < 1) {
                *ret_message = strprintf("'%s' is not a backing file of disk %s.", base, disk->target);
                return -EINVAL;
        }
        return job_begin(d, JOB_TYPE_PULL, disk, chain, chain->layers[b].path, NULL, bandwidth, false, done, userdata);
}

int domain_block_pull(Domain *d, const char *disk_name, uint64_t bandwidth, uint64_t flags, BlockJobStartedFunc done,
                      void *userdata, char **ret_message) {
        return domain_block_rebase(d, disk_name, NULL, bandwidth, 0, done, userdata, ret_message);
}

int domain_block_commit(Domain *d, const char *disk_name, const char *base, const char *top, uint64_t bandwidth,
                        uint64_t flags, BlockJobStartedFunc done, void *userdata, char **ret_message) {
        const DomainDisk *disk;
        const ImageChain *chain;
        int r, t, b;

        r = job_prepare(d, disk_name, &disk, &chain, ret_message);
        if (r < 0)
                return r;
        t = isempty(top) ? 0 : chain_index(chain, top);
        if (t < 0) {
                *ret_message = strprintf("'%s' is not a file of the chain of disk %s.", top, disk->target);
                return -EINVAL;
        }
        if (t == 0 && !(flags & BLOCK_COMMIT_ACTIVE)) {
                *ret_message = strprintf("Committing the active layer of disk %s needs the ACTIVE flag (4).", disk->target);
                return -EINVAL;
        }
        if (isempty(base))
                b = (flags & BLOCK_COMMIT_SHALLOW) ? t + 1 : (int) chain->n_layers - 1;
        else
                b = chain_index(chain, base);
        if (b < 0 || b <= t || b >= (int) chain->n_layers) {
                *ret_message = strprintf("'%s' is not a file below '%s' in the chain of disk %s.",
                                         isempty(base) ? "(the bottom)" : base,
                                         isempty(top) ? "(the active layer)" : top, disk->target);
                return -EINVAL;
        }
        return job_begin(d, t == 0 ? JOB_TYPE_ACTIVE_COMMIT : JOB_TYPE_COMMIT, disk, chain, chain->layers[b].path,
                         t == 0 ? NULL : chain->layers[t].path, bandwidth, flags & BLOCK_COMMIT_DELETE, done, userdata);
}
