/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The domain's block jobs once QEMU runs them (ops/block-jobs.c starts
 * them). Each job's id names its type and disk ("commit-vda-1a2b3c"), so
 * that its object path and what it is survive a restart of qsnapd:
 * adoption reads them back from QEMU's job list. Jobs run with auto-finalize=false and auto-dismiss=false; when one
 * is pending we let QEMU finalize it, and when it is gone from QEMU we
 * resynchronize each disk's active file and chain from QEMU itself (the
 * root node of the device and its file), store the definition, drop the
 * overlay nodes we had added that left the graph, and only then report
 * the end. The same resynchronization runs after an adoption, so a job
 * that ended while qsnapd was away is accounted for too.
 */
#include <dirent.h>
#include <stdio.h>

#include "core/disk.h"
#include "core/bitmaps.h"
#include "core/domain-jobs.h"
#include "core/files.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "core/qemu-files.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/util.h"

void block_job_info_free(BlockJobInfo *info) {
        if (!info)
                return;
        strv_free(info->old_chain);
        free(info->copy_dest);
        free(info->copy_node);
        free(info->commit_base);
        sd_event_source_disable_unref(info->linger);
        free(info);
}

static void notify(Domain *d, Job *j, JobEvent e) {
        manager_notify_job(d->manager, d, j, e);
}

/* ---- lookups ---- */

/* An operation's own step (a snapshot-save, a delete's merge) is the
 * operation's business: not the domain's job, not on the bus. */
Job *domain_find_job(Domain *d, const char *id) {
        Job *j = d->jobs ? job_tracker_find(d->jobs, id) : NULL;

        if (j && !j->owned)
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
                        if (!j->owned)
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
        char **sweep;      /* copy journals to sweep (adoption) */
        Job *job;          /* reported finished when done; may be NULL */
        /* Per disk of the definition QEMU runs (the live one; an attached
         * domain's stored one): its target and its root node (NULL: not
         * learned). By target: the definition may be replaced meanwhile. */
        char **targets, **roots;
        size_t n_roots;
        size_t pending;
        void (*done)(Domain *d, void *userdata);
        void *userdata;
        bool read_back;    /* QEMU named the job's disk's node: the read-back is the truth */
} Resync;

/* ---- the job journal: <run>/<uuid>.job-<id> ----
 * One small file per job of ours while it runs, removed when its end is
 * accounted for: a qsnapd that finds QEMU gone at start-up reports those
 * jobs failed instead of losing them. A copy's says
 * "qsnap-copy <created> <transient> <node> <started> <format> <pivoted>\n<dest>"
 * and is written before the mirror starts (started 0), so that a restarted
 * qsnapd knows the destination of an adopted copy, again with started 1
 * once QEMU accepted the mirror, and with pivoted 1 once the copy ended
 * well after a Pivot (QEMU switched the disk). An active commit's says
 * "qsnap-job <base format> <pivoted>\n<base>"; any other job's says
 * "qsnap-job". A copy journal without the started field (an older
 * qsnapd's) counts as started: nothing proves it never was; one without
 * the pivoted field never pivoted. */

static char *job_journal_path(Domain *d, const char *job_id) {
        _cleanup_free_ char *suffix = strprintf(".job-%s", job_id);
        return suffix ? domain_runtime_path(d, suffix) : NULL;
}

int domain_job_journal_write_copy(Domain *d, const char *job_id, const BlockJobInfo *info) {
        _cleanup_free_ char *path = job_journal_path(d, job_id), *text = NULL;

        text = strprintf("qsnap-copy %d %d %s %d %s %d\n%s", info->copy_created, info->transient, info->copy_node,
                         info->copy_started, strna(disk_format_to_string(info->copy_format)), info->pivoted,
                         info->copy_dest);
        if (!path || !text)
                return -ENOMEM;
        return write_file_atomic(path, text, strlen(text), 0600);
}

int domain_job_journal_mark_started(Domain *d, const char *job_id, BlockJobInfo *info) {
        info->copy_started = true;
        return domain_job_journal_write_copy(d, job_id, info);
}

#define JOB_JOURNAL_PLAIN "qsnap-job"

int domain_job_journal_write_plain(Domain *d, const char *job_id) {
        _cleanup_free_ char *path = job_journal_path(d, job_id);

        if (!path)
                return -ENOMEM;
        return write_file_atomic(path, JOB_JOURNAL_PLAIN "\n", strlen(JOB_JOURNAL_PLAIN "\n"), 0600);
}

int domain_job_journal_write_commit(Domain *d, const char *job_id, const BlockJobInfo *info) {
        _cleanup_free_ char *path = job_journal_path(d, job_id), *text = NULL;

        if (!info->commit_base)
                return domain_job_journal_write_plain(d, job_id);
        text = strprintf(JOB_JOURNAL_PLAIN " %s %d\n%s", strna(disk_format_to_string(info->commit_base_format)),
                         info->pivoted, info->commit_base);
        if (!path || !text)
                return -ENOMEM;
        return write_file_atomic(path, text, strlen(text), 0600);
}

int domain_job_journal_mark_pivoted(Domain *d, const char *job_id, JobType type, BlockJobInfo *info) {
        info->pivoted = true;
        return type == JOB_TYPE_COPY ? domain_job_journal_write_copy(d, job_id, info)
                                     : domain_job_journal_write_commit(d, job_id, info);
}

char *domain_job_bitmaps_path(Domain *d, const char *job_id) {
        _cleanup_free_ char *suffix = strprintf(".copy-bitmaps-%s", job_id);
        return suffix ? domain_runtime_path(d, suffix) : NULL;
}

void domain_job_journal_remove(Domain *d, const char *job_id) {
        _cleanup_free_ char *path = job_journal_path(d, job_id), *bitmaps = domain_job_bitmaps_path(d, job_id);

        if (path)
                (void) unlink(path);
        if (bitmaps)
                (void) unlink(bitmaps);
}

/* An active commit's journal: its base and the pivoted mark. */
static void commit_journal_load(Domain *d, Job *j, char *text, BlockJobInfo *info) {
        char format[16], *nl = strchr(text, '\n');
        int pivoted = 0;

        if (!nl)
                return;
        *nl = 0;
        if (sscanf(text, JOB_JOURNAL_PLAIN " %15s %d", format, &pivoted) < 2)
                return; /* a plain one: nothing to learn */
        if (nl[1] != '/' || disk_format_from_string(format) < 0)
                return (void) log_warning("Domain '%s': the journal of job %s is damaged.", d->def->name, j->id);
        info->commit_base_format = disk_format_from_string(format);
        info->pivoted = pivoted != 0;
        (void) free_and_strdup(&info->commit_base, nl + 1);
}

static void job_journal_load(Domain *d, Job *j, BlockJobInfo *info) {
        _cleanup_free_ char *path = job_journal_path(d, j->id), *text = NULL;
        char node[64], format[16], *nl;
        int created, transient, started = 1, pivoted = 0, n;

        if (!path || read_full_file(path, 64 * 1024, &text, NULL) < 0) {
                if (j->type == JOB_TYPE_COPY)
                        log_warning("Domain '%s': copy job %s has no journal; its destination is unknown.",
                                    d->def->name, j->id);
                return;
        }
        if (strncmp(text, JOB_JOURNAL_PLAIN, strlen(JOB_JOURNAL_PLAIN)) == 0)
                return commit_journal_load(d, j, text, info); /* not a copy's */
        nl = strchr(text, '\n');
        if (nl)
                *nl = 0;
        n = nl ? sscanf(text, "qsnap-copy %d %d %63s %d %15s %d", &created, &transient, node, &started, format,
                        &pivoted) : 0;
        if (n < 3 || nl[1] != '/')
                return (void) log_warning("Domain '%s': the journal of copy job %s is damaged.", d->def->name, j->id);
        info->copy_created = created;
        info->transient = transient;
        info->copy_started = started != 0;
        info->copy_format = n >= 5 ? disk_format_from_string(format) : _DISK_FORMAT_INVALID;
        info->pivoted = n >= 6 && pivoted != 0 && info->copy_format >= 0;
        (void) free_and_strdup(&info->copy_node, node);
        (void) free_and_strdup(&info->copy_dest, nl + 1);
}

/* The copy journals of this domain on disk now: at attach time, before
 * this connection can start a copy, they are all an earlier qsnapd's. */
static char **job_journals_list(Domain *d) {
        _cleanup_free_ char *prefix = strprintf("%s.job-", d->def->uuid);
        char **l = NULL;
        DIR *dh;
        struct dirent *de;

        if (!prefix || !(dh = opendir(d->manager->config.runtime_dir)))
                return NULL;
        while ((de = readdir(dh)))
                if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && strv_extend(&l, de->d_name + strlen(prefix)) < 0)
                        break;
        closedir(dh);
        return l;
}

static bool file_in_chains(Domain *d, const char *f);

static void job_journals_sweep(Domain *d, char **ids) {
        for (char **id = ids; id && *id; id++) {
                BlockJobInfo info = {};
                Job stub = { .id = *id };

                if (domain_find_job(d, *id))
                        continue;
                job_journal_load(d, &stub, &info);
                if (info.copy_dest && info.copy_started)
                        log_info("Domain '%s': copy job %s ended while qsnapd was away; its destination %s stays.",
                                 d->def->name, *id, info.copy_dest);
                else if (info.copy_dest && info.copy_created && !file_in_chains(d, info.copy_dest) &&
                         fs_unlink_nofollow(info.copy_dest, S_IFREG) >= 0)
                        log_info("Domain '%s': removed %s, the destination of copy job %s that never started.",
                                 d->def->name, info.copy_dest, *id);
                domain_job_journal_remove(d, *id);
                free(info.copy_dest);
                free(info.copy_node);
                free(info.commit_base);
        }
}

/* A copy's end: a destination qsnapd created goes when the copy failed,
 * was abandoned, or ended without anyone's Abort (QEMU quit under it: it
 * cancels its jobs) — a half-made copy is no use. After the user's Abort
 * it stays (libvirt's behaviour); after a pivot it is the disk. */
static void copy_end(Domain *d, Job *j) {
        BlockJobInfo *info = j->userdata;
        const DomainDisk *disk;

        if (j->type != JOB_TYPE_COPY || !info || !info->copy_dest)
                return;
        disk = j->disk ? domain_def_find_disk(domain_current_def(d), j->disk) : NULL;
        if (info->copy_created &&
            (j->state == JOB_STATE_FAILED || info->abandoned || (j->state == JOB_STATE_CANCELED && !j->aborting)) &&
            !(disk && streq(disk->source, info->copy_dest))) {
                if (fs_unlink_nofollow(info->copy_dest, S_IFREG) >= 0) /* a refusal is logged */
                        log_info("Domain '%s': removed %s, the destination of the %s copy job %s.", d->def->name,
                                 info->copy_dest, job_state_to_string(j->state), j->id);
        }
        /* Kept and not the disk after QEMU's own cancel (it quits): at its
         * exit QEMU writes into the file the bitmaps its target got at
         * READY (§2.8); they go once it is gone — journaled, before the
         * copy's journal goes, so that a qsnapd killed meanwhile still
         * removes them at start-up. */
        if (j->state == JOB_STATE_CANCELED && !j->aborting && !(disk && streq(disk->source, info->copy_dest)) &&
            access(info->copy_dest, F_OK) >= 0)
                bitmaps_copy_drop_after_quit(d, j->id, info->copy_node, info->copy_dest);
        domain_job_journal_remove(d, j->id);
        if (!d->qmp)
                bitmaps_copies_qemu_gone(d);
}

static void linger_remove(Domain *d, Job *j) {
        for (size_t i = 0; i < d->n_lingering; i++)
                if (d->lingering[i] == j) {
                        memmove(d->lingering + i, d->lingering + i + 1, (d->n_lingering - i - 1) * sizeof(Job *));
                        d->n_lingering--;
                        notify(d, j, JOB_EVENT_REMOVED);
                        block_job_info_free(j->userdata);
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

        copy_end(d, j);
        domain_job_journal_remove(d, j->id);
        if (info && !info->linger)
                (void) sd_event_add_time_relative(d->manager->event, &info->linger, CLOCK_MONOTONIC, JOB_LINGER_USEC,
                                                  USEC_PER_SEC, on_linger_end, j);
        if (info)
                info->end_reported = true;
        log_info("Domain '%s': %s job %s on %s %s%s%s.", d->def->name, job_type_to_string(j->type), j->id,
                 strna(j->disk), job_state_to_string(j->state), j->error ? ": " : "", strempty(j->error));
        notify(d, j, JOB_EVENT_FINISHED);
}

Domain *domain_job_domain(const Job *j) {
        const BlockJobInfo *info = j->userdata;
        return info ? info->domain : NULL;
}

JobState domain_job_state(const Job *j) {
        const BlockJobInfo *info = j->userdata;

        if (job_state_is_final(j->state) && info && !info->end_reported)
                return JOB_STATE_PENDING;
        return j->state;
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
                block_job_info_free(info);
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

/* The journal's pivoted mark: QEMU had switched the disk to the job's
 * target and went away before the disks were read back (while no qsnapd
 * ran, or right after the pivot). The stored definition takes the new
 * active file (its header names the rest of the chain: a SHALLOW copy's
 * the old backing file, a full copy's none, an active commit's base what
 * lay below it), as the read-back would have; the old active file stays
 * (older than the pivot, it may still be wanted). Only while the stored
 * definition names what QEMU ran (the live one). */
static int job_pivot_recover(Domain *d, Job *j, BlockJobInfo *info, char **ret_message) {
        const char *file = j->type == JOB_TYPE_COPY ? info->copy_dest : info->commit_base;
        DiskFormat format = j->type == JOB_TYPE_COPY ? info->copy_format : info->commit_base_format;
        DomainDisk *stored = j->disk ? domain_def_find_disk(d->def, j->disk) : NULL;
        DomainDisk *live = j->disk && d->live ? domain_def_find_disk(d->live, j->disk) : NULL;
        _cleanup_free_ char *old = NULL, *copy = NULL;
        DiskFormat old_format;
        int r;

        if (!file || format < 0 || !stored) {
                *ret_message = strprintf("QEMU went away after disk %s pivoted, before qsnapd read the disks back; "
                                         "the job's journal does not say what the disk became.", strna(j->disk));
                return -EBADMSG;
        }
        if (live && !streq(live->source, stored->source)) {
                *ret_message = strprintf("QEMU went away after disk %s pivoted to %s, before qsnapd read the disks "
                                         "back; the stored definition was changed meanwhile (it names %s) and stays.",
                                         j->disk, file, stored->source);
                return -ESTALE;
        }
        if (streq(stored->source, file) && stored->format == format)
                return 0;
        copy = strdup(file);
        if (!copy || (live && free_and_strdup(&live->source, file) < 0))
                return -ENOMEM;
        old = TAKE_PTR(stored->source);
        old_format = stored->format;
        stored->source = TAKE_PTR(copy);
        stored->format = format;
        r = domain_save(d);
        if (r < 0) {
                free(stored->source);
                stored->source = TAKE_PTR(old);
                stored->format = old_format;
                *ret_message = strprintf("QEMU went away after disk %s pivoted to %s, before qsnapd read the disks "
                                         "back; cannot store that: %s", j->disk, file, qsnap_strerror(r));
                return r;
        }
        if (live) {
                live->format = format;
                (void) domain_save_live(d);
        }
        domain_chains_invalidate(d);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
        log_warning("Domain '%s': %s job %s had pivoted before QEMU went away: disk %s is now %s (%s); the old "
                    "active file %s stays on disk (its data is older than the pivot).", d->def->name,
                    job_type_to_string(j->type), j->id, j->disk, file, disk_format_to_string(format), old);
        return 0;
}

/* A pivoted job whose disks were not read back (QEMU went away right
 * after the pivot): its mark says what the disk became. */
static void pivot_without_read_back(Domain *d, Job *j) {
        BlockJobInfo *info = j->userdata;
        _cleanup_free_ char *m = NULL;

        if (info && info->pivoted && j->state == JOB_STATE_COMPLETED && job_pivot_recover(d, j, info, &m) < 0)
                log_warning("Domain '%s': %s", d->def->name, strna(m));
}

static void resync_end(Resync *rs) {
        Domain *d = rs->domain;

        domain_chains_invalidate(d);
        if (rs->job && !rs->read_back)
                pivot_without_read_back(d, rs->job);
        if (rs->job) {
                job_report_end(d, rs->job);
                job_unref(rs->job);
        }
        if (rs->done)
                rs->done(d, rs->userdata);
        manager_busy_unref(d->manager);
        for (size_t i = 0; i < rs->n_roots; i++) {
                free(rs->targets[i]);
                free(rs->roots[i]); /* (a hole where a lookup failed: not a strv) */
        }
        free(rs->targets);
        free(rs->roots);
        strv_free(rs->sweep);
        domain_unref(d);
        free(rs);
}

/* Files a finished commit took out of the chain: with DELETE they go,
 * after every snapshot that named them names the file that now holds
 * their data (the commit's base), so the metadata never names a file
 * that is gone. */
static void delete_dropped_files(Domain *d, Job *j, const char *active) {
        BlockJobInfo *info = j->userdata;
        _cleanup_strv_free_ char **dropped = NULL;
        const char *into = NULL;
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
                if (!kept && strv_extend(&dropped, *f) < 0)
                        return (void) log_oom();
                if (kept && dropped && !into)
                        into = *f; /* the first file below the dropped ones */
        }
        if (into && snapshot_metadata_rename_files(d, j->disk, dropped, into) < 0)
                return; /* logged; the files stay rather than leave names of nothing */
        for (char **f = dropped; f && *f; f++)
                if (fs_unlink_nofollow(*f, S_IFREG) >= 0)
                        log_info("Domain '%s': deleted %s, committed by the job.", d->def->name, *f);
}

/* Whether a file is a layer of a disk of the running domain. */
static bool file_in_chains(Domain *d, const char *f) {
        DomainDef *live = d->live;

        for (size_t i = 0; f && live && i < live->n_disks; i++) {
                const ImageChain *c = domain_disk_chain(d, live->disks[i].source, live->disks[i].format);

                for (size_t l = 0; c && l < c->n_layers; l++)
                        if (streq(c->layers[l].path, f))
                                return true;
        }
        return false;
}

/* The target node of a copy that ended without a pivot, if QEMU still has
 * it open and it is no disk's layer; NULL otherwise. */
static const char *copy_unpivoted_node(Domain *d, json_object *nodes, const char *node) {
        for (size_t k = 0; node && k < json_object_array_length(nodes); k++) {
                json_object *e = json_object_array_get_idx(nodes, k), *name = NULL;
                _cleanup_free_ char *f = NULL;

                if (json_object_object_get_ex(e, "node-name", &name) && streq_ptr(json_object_get_string(name), node))
                        return domain_node_file(d, e, &f) >= 0 && !file_in_chains(d, f) ? node : NULL;
        }
        return NULL;
}

/* docs/checkpoints.md §2.8: the checkpoints' bitmaps a copy's target got at
 * READY go again when the copy ends without a pivot, before its node is
 * deleted (and the file closed). A copy that ended while qsnapd was away
 * (killed between the end and this step) is found by its journal: QEMU
 * still has its target open, with our bitmaps. That copy was READY and its
 * end is unknown: its destination stays, as after an Abort (libvirt), and
 * its journal goes here (the sweep, by its started mark, would keep the
 * destination too). */
static void copies_drop_bitmaps(Domain *d, json_object *nodes, Resync *rs) {
        Job *j = rs->job;
        BlockJobInfo *info = j ? j->userdata : NULL;

        if (j && j->type == JOB_TYPE_COPY && info)
                (void) bitmaps_copy_drop(d, nodes, j->id, copy_unpivoted_node(d, nodes, info->copy_node));
        for (size_t i = 0; rs->sweep && rs->sweep[i];) {
                BlockJobInfo found = {};
                Job stub = { .id = rs->sweep[i] };
                bool dropped = false;

                if (!domain_find_job(d, stub.id)) {
                        job_journal_load(d, &stub, &found);
                        dropped = bitmaps_copy_drop(d, nodes, stub.id, copy_unpivoted_node(d, nodes, found.copy_node)) > 0;
                }
                free(found.copy_dest);
                free(found.copy_node);
                free(found.commit_base);
                if (!dropped) {
                        i++;
                        continue;
                }
                log_info("Domain '%s': copy job %s ended while qsnapd was away; its destination stays.", d->def->name,
                         stub.id);
                domain_job_journal_remove(d, stub.id);
                free(rs->sweep[i]);
                memmove(rs->sweep + i, rs->sweep + i + 1, (strv_length(rs->sweep + i + 1) + 1) * sizeof(char *));
        }
}

/* The definition QEMU runs, which a read-back updates: the live one; an
 * attached domain's QEMU (not launched by qsnapd: no live definition)
 * runs its stored one. NULL: none to read back. */
static DomainDef *resync_def(Domain *d) {
        if (d->live)
                return d->live;
        return d->qmp && !domain_is_managed(d) ? d->def : NULL;
}

/* Whether disk `target` is read back: every disk of the live definition;
 * of an attached domain only a job's own (what qsnapd changed: the other
 * disks stay as the host admin defined them, whatever names QEMU was
 * given for their files). */
static bool resync_wants(Domain *d, Job *job, const char *target) {
        return d->live || (job && streq_ptr(job->disk, target));
}

static void on_named_nodes(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Resync *rs = userdata;
        Domain *d = rs->domain;
        DomainDef *live = resync_def(d);
        bool changed = false;

        for (size_t i = 0; error >= 0 && live && i < rs->n_roots; i++) {
                DomainDisk *disk = rs->roots[i] ? domain_def_find_disk(live, rs->targets[i]) : NULL;
                json_object *e;

                if (!disk)
                        continue;
                if (rs->job && streq_ptr(rs->job->disk, disk->target))
                        rs->read_back = true;
                /* The file under the root node is the disk's active file. */
                for (size_t k = 0; k < json_object_array_length(result); k++) {
                        json_object *node = NULL, *drv = NULL;
                        _cleanup_free_ char *f = NULL;
                        DiskFormat format;

                        e = json_object_array_get_idx(result, k);
                        if (!json_object_object_get_ex(e, "node-name", &node) ||
                            !streq(json_object_get_string(node), rs->roots[i]) || domain_node_file(d, e, &f) < 0)
                                continue;
                        /* A copy may have changed the format too (COPY_RAW). */
                        format = disk->format;
                        if (json_object_object_get_ex(e, "drv", &drv) &&
                            disk_format_from_string(json_object_get_string(drv)) >= 0)
                                format = disk_format_from_string(json_object_get_string(drv));
                        if (disk->transient || !f || f[0] != '/' || (streq(f, disk->source) && format == disk->format))
                                break;
                        log_info("Domain '%s': disk %s is now %s (%s; was %s).", d->def->name, disk->target, f,
                                 disk_format_to_string(format), disk->source);
                        {
                                DomainDisk *stored = domain_def_find_disk(d->def, disk->target);
                                if (stored && streq(stored->source, disk->source)) {
                                        (void) free_and_strdup(&stored->source, f);
                                        stored->format = format;
                                }
                        }
                        (void) free_and_strdup(&disk->source, f);
                        disk->format = format;
                        changed = true;
                        break;
                }
                if (rs->job && rs->job->disk && streq(rs->job->disk, disk->target))
                        delete_dropped_files(d, rs->job, disk->source);
        }

        /* Overlay nodes we added stay open after a job dropped them from the
         * chain and keep their files locked (see the notes): let go of them,
         * a copy's target without the bitmaps we gave it. */
        domain_chains_invalidate(d);
        if (error >= 0)
                copies_drop_bitmaps(d, result, rs);
        for (size_t k = 0; error >= 0 && k < json_object_array_length(result); k++) {
                json_object *e = json_object_array_get_idx(result, k), *node = NULL;
                _cleanup_free_ char *f = NULL;
                const char *name;
                bool in_use = false;

                if (!json_object_object_get_ex(e, "node-name", &node) || domain_node_file(d, e, &f) < 0)
                        continue;
                name = json_object_get_string(node);
                /* Implicit nodes ('#…') go with their parent; QEMU refuses to
                 * delete a node that is still attached, so trying is safe. */
                if (!name || name[0] == '#' || streq(name, NVRAM_CODE_NODE) || streq(name, NVRAM_VARS_NODE))
                        continue;
                in_use = file_in_chains(d, f);
                if (!in_use)
                        domain_node_del(d, name);
        }

        if (error >= 0 && rs->sweep)
                job_journals_sweep(d, rs->sweep);

        if (changed)
                (void) domain_save_disks(d);
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
static void domain_resync_disks_sweep(Domain *d, Job *job, void (*done)(Domain *d, void *userdata), void *userdata,
                                     char **sweep) {
        const DomainDef *def = resync_def(d);
        Resync *rs = new0(Resync, 1);
        size_t n = def ? def->n_disks : 0;
        char **targets = new0(char *, n + 1), **roots = new0(char *, n + 1);

        for (size_t i = 0, k = 0; targets && i < n; i++) {
                if (!resync_wants(d, job, def->disks[i].target))
                        continue;
                if (!(targets[k++] = strdup(def->disks[i].target)))
                        targets = strv_free(targets);
        }
        n = strv_length(targets);
        if (!rs || !targets || !roots) {
                free(rs);
                strv_free(targets);
                free(roots);
                strv_free(sweep);
                log_oom();
                if (job)
                        job_report_end(d, job);
                if (done)
                        done(d, userdata);
                return;
        }
        *rs = (Resync) { .domain = domain_ref(d), .job = job ? job_ref(job) : NULL, .targets = targets,
                         .roots = roots, .n_roots = n, .done = done, .userdata = userdata, .sweep = sweep };
        manager_busy_ref(d->manager);
        for (size_t i = 0; d->qmp && i < n; i++) {
                RootCall *c = new0(RootCall, 1);

                if (!c || qmp_cmd_disk_root_node(d->qmp, targets[i], on_resync_root, c) < 0) {
                        free(c);
                        continue;
                }
                *c = (RootCall) { .rs = rs, .index = i };
                rs->pending++;
        }
        if (rs->pending == 0)
                resync_end(rs);
        else if (job)
                kill_point("job-resync", d->pid);
}

static void domain_resync_disks(Domain *d, Job *job, void (*done)(Domain *d, void *userdata), void *userdata) {
        domain_resync_disks_sweep(d, job, done, userdata, NULL);
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

/* QEMU applies the chain change when it finalizes; finished() follows,
 * and with it the read-back. */
static void graph_finalize(Domain *d, Job *j) {
        d->graph_finalizing = j;
        if (job_finalize(j, true, NULL) < 0) {
                log_warning("Domain '%s': cannot finalize job %s.", d->def->name, j->id);
                d->graph_finalizing = NULL;
                d->graph_busy = false;
        } else
                kill_point("job-finalize", d->pid);
}

typedef struct FlushCall {
        Domain *domain;
        Job *job;
} FlushCall;

static void on_flushed_for_finalize(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                                    void *userdata) {
        FlushCall *c = userdata;
        Domain *d = c->domain;
        Job *j = c->job;
        const char *text = NULL;

        if (error < 0 || (qmp_parse_string(result, &text) >= 0 && !isempty(text)))
                log_warning("Domain '%s': flushing %s before finalizing job %s failed: %s", d->def->name, strna(j->disk),
                            j->id, error < 0 ? strna(desc) : text);
        /* Still ours to finalize (the job did not end meanwhile, QEMU is
         * still there)? A failed flush is no reason to lose the job: QEMU
         * flushes on its own later, as it would have without us. */
        if (d->graph_finalizing == j) {
                graph_finalize(d, j);
                if (!d->graph_busy)
                        graph_next(d);
        }
        job_unref(j);
        domain_unref(d);
        free(c);
}

/* A pull wrote the data into the disk's active node, whose qcow2 L2
 * tables QEMU 7.2 keeps in memory; job-finalize then writes the header
 * without the backing file at once. A QEMU that dies before its next flush
 * leaves a standalone image that lacks the pulled data (measured:
 * tests/test_blockjob_failures.py). So the node is flushed first.
 * Commit and mirror flush their target themselves. True when the flush went
 * out (its answer finalizes); false: finalize right away. */
static bool graph_flush_then_finalize(Domain *d, Job *j) {
        FlushCall *c;

        if (j->type != JOB_TYPE_PULL || !j->disk || !d->qmp)
                return false;
        c = new0(FlushCall, 1);
        if (!c)
                return false;
        *c = (FlushCall) { .domain = domain_ref(d), .job = job_ref(j) };
        if (qmp_cmd_flush_disk(d->qmp, j->disk, on_flushed_for_finalize, c) < 0) {
                job_unref(j);
                domain_unref(d);
                free(c);
                return false;
        }
        d->graph_finalizing = j;
        return true;
}

static void graph_next(Domain *d) {
        GraphTask *t = d->graph_tasks;

        if (!t || d->graph_busy)
                return;
        d->graph_tasks = t->next;
        d->graph_busy = true;
        if (t->finalize) {
                if (!graph_flush_then_finalize(d, t->job))
                        graph_finalize(d, t->job);
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
        /* A Pivot's copy waits for job-finalize: QEMU has not switched the
         * disk yet and the journal has no pivoted mark (docs/decisions.md:
         * the window a restarted qsnapd cannot judge starts here). */
        if (j->type == JOB_TYPE_COPY && j->pivoting)
                crash_point("block-copy:pivot-pending");
        graph_enqueue(userdata, j, true);
}

/* QEMU switched the disk (job-finalize of a pivoted copy or active
 * commit went well) and still lists the job: before it forgets it and
 * before the disks are read back, the journal says so, so that a qsnapd
 * that finds QEMU gone later stores the switch instead of leaving the
 * definition on a file the guest no longer writes to. */
static void on_job_pivoted(Job *j, void *userdata) {
        Domain *d = userdata;
        BlockJobInfo *info = j->userdata;
        int r;

        if (!info || !(j->type == JOB_TYPE_COPY ? info->copy_dest != NULL
                                                : j->type == JOB_TYPE_ACTIVE_COMMIT && info->commit_base))
                return;
        r = domain_job_journal_mark_pivoted(d, j->id, j->type, info);
        if (r < 0)
                log_warning_errno(r, "Domain '%s': cannot mark job %s pivoted in its journal (if QEMU dies before "
                                  "the disks are read back, the definition keeps the old file): %m",
                                  d->def->name, j->id);
        /* crash points: block-copy:pivoted block-commit:pivoted */
        crash_point(j->type == JOB_TYPE_COPY ? "block-copy:pivoted" : "block-commit:pivoted");
}

static void on_job_finished(Job *j, void *userdata) {
        Domain *d = userdata;

        /* A copy gone from QEMU (dismissed), its end not yet accounted for:
         * the journal is all a restarted qsnapd has of it. */
        if (j->type == JOB_TYPE_COPY)
                crash_point("block-copy:ended");

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
        .pivoted = on_job_pivoted,
        .finished = on_job_finished,
};

/* ---- attach/detach ---- */

typedef struct AttachCall {
        Domain *domain;
        char **orphans;    /* copy journals found at attach */
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
        if (IN_SET(j->type, JOB_TYPE_COPY, JOB_TYPE_ACTIVE_COMMIT) && j->userdata)
                job_journal_load(d, j, j->userdata);
}

int domain_job_claim(Domain *d, Job *j, const JobObserver *observer, void *userdata) {
        bool shown = !j->owned;
        int r;

        r = job_claim(j, observer, userdata);
        if (r < 0)
                return r;
        if (shown)
                notify(d, j, JOB_EVENT_REMOVED);
        block_job_info_free(j->userdata);
        j->userdata = NULL;
        return 0;
}

void domain_jobs_lost(Domain *d) {
        _cleanup_strv_free_ char **ids = job_journals_list(d);

        for (char **id = ids; id && *id; id++) {
                Job *j = domain_find_job(d, *id) ? NULL : job_new_local(*id, JOB_TYPE_PULL, NULL);
                BlockJobInfo *info;
                int r;

                if (!j)
                        continue;
                if (domain_local_job_add(d, j) < 0) {
                        job_unref(j);
                        continue;
                }
                job_learn_from_id(d, j);
                /* A copy that started may have ended, even pivoted, before
                 * QEMU died: its destination may hold the disk's data. Only a
                 * copy that provably never started loses the file it created. */
                info = j->userdata;
                if (info && info->pivoted) {
                        _cleanup_free_ char *m = NULL;

                        /* Nothing of the new chain goes: it is the disk. */
                        info->copy_created = false;
                        r = job_pivot_recover(d, j, info, &m);
                        if (r < 0)
                                log_warning("Domain '%s': %s", d->def->name, strna(m));
                        job_local_update(j, r < 0 ? JOB_STATE_FAILED : JOB_STATE_COMPLETED, 0, 0,
                                         r < 0 ? (m ?: "QEMU went away while qsnapd was not running, after the pivot.")
                                               : NULL);
                        domain_local_job_end(d, j);
                        job_unref(j);
                        continue;
                }
                if (j->type == JOB_TYPE_COPY && info && info->copy_started && info->copy_created) {
                        info->copy_created = false;
                        log_warning("Domain '%s': copy job %s had started; its destination %s stays (it may hold "
                                    "what a Pivot switched to).", d->def->name, j->id, info->copy_dest);
                }
                job_local_update(j, JOB_STATE_FAILED, 0, 0,
                                 "QEMU went away while qsnapd was not running; the job did not finish.");
                log_warning("Domain '%s': %s job %s ended with its QEMU while qsnapd was not running.", d->def->name,
                            job_type_to_string(j->type), j->id);
                domain_local_job_end(d, j);
                job_unref(j);
        }
}

static void on_resynced_after_adopt(Domain *d, void *userdata) {
        AttachCall *c = userdata;

        if (c->done)
                c->done(d, c->userdata);
        domain_unref(c->domain);
        strv_free(c->orphans);
        free(c);
}

static void on_adopted(JobTracker *t, int error, void *userdata) {
        AttachCall *c = userdata;
        Domain *d = c->domain;

        d->jobs_attach = NULL;

        if (error < 0)
                log_warning("Domain '%s': cannot list QEMU's jobs: %s", d->def->name, qsnap_strerror(error));
        JOB_TRACKER_FOREACH(j, t) {
                job_learn_from_id(d, j);
                log_info("Domain '%s': adopted %s job %s on %s (%s).", d->def->name, job_type_to_string(j->type), j->id,
                         strna(j->disk), job_state_to_string(j->state));
                /* A copy's target gets the bitmaps its journal planned (now,
                 * if it is READY already), before anybody can Pivot. */
                if (j->type == JOB_TYPE_COPY && !job_state_is_final(j->state))
                        bitmaps_copy_adopted(d, j->id, j->state == JOB_STATE_READY);
                /* QEMU has it: it started, whatever the journal says (the
                 * last qsnapd died between QEMU's yes and the mark). */
                if (j->type == JOB_TYPE_COPY && j->userdata && ((BlockJobInfo *) j->userdata)->copy_dest &&
                    !((BlockJobInfo *) j->userdata)->copy_started &&
                    domain_job_journal_mark_started(d, j->id, j->userdata) < 0)
                        log_warning("Domain '%s': cannot mark copy job %s started in its journal.", d->def->name,
                                    j->id);
                notify(d, j, JOB_EVENT_ADDED);
        }
        /* TRANSIENT_JOB copies do not outlive the qsnapd that started them
         * (docs/decisions.md): cancelled, their destination removed. */
        JOB_TRACKER_FOREACH(j, t) {
                BlockJobInfo *info = j->userdata;
                _cleanup_free_ char *m = NULL;

                if (j->type != JOB_TYPE_COPY || !info || !info->transient || job_state_is_final(j->state))
                        continue;
                info->abandoned = true;
                if (job_abort(j, false, NULL, NULL, &m) < 0)
                        log_warning("Domain '%s': cannot cancel transient copy job %s: %s", d->def->name, j->id, strna(m));
                else
                        log_info("Domain '%s': cancelling transient copy job %s (TRANSIENT_JOB jobs are not adopted).",
                                 d->def->name, j->id);
        }
        /* A job that ended while we were away changed the chain already.
         * With jobs still in QEMU their own ends resync; block queries while
         * QEMU finalizes a job can crash QEMU 7.2, so none are sent now. */
        if (job_tracker_first(t))
                return on_resynced_after_adopt(d, c);
        domain_resync_disks_sweep(d, NULL, on_resynced_after_adopt, c, TAKE_PTR(c->orphans));
}

static void tracker_release(Domain *d);

int domain_jobs_attach(Domain *d, void (*done)(Domain *d, void *userdata), void *userdata) {
        AttachCall *c;
        int r;

        /* A new QEMU (or a new connection): ended jobs of the last one
         * stay for their 60 s, with their final State. */
        domain_graph_tasks_free(d);
        tracker_release(d);
        r = job_tracker_new(d->qmp, d->manager->event, &job_observer, d, &d->jobs);
        if (r < 0)
                return r;
        c = new0(AttachCall, 1);
        if (!c)
                return -ENOMEM;
        *c = (AttachCall) { .domain = domain_ref(d), .done = done, .userdata = userdata,
                            .orphans = job_journals_list(d) };
        r = job_tracker_adopt(d->jobs, on_adopted, c);
        if (r < 0) {
                domain_unref(d);
                strv_free(c->orphans);
                free(c);
                return r;
        }
        d->jobs_attach = c;
        return 0;
}

int domain_jobs_attach_fresh(Domain *d) {
        domain_graph_tasks_free(d);
        tracker_release(d);
        return job_tracker_new(d->qmp, d->manager->event, &job_observer, d, &d->jobs);
}

/* Lets go of the tracker; jobs still in it are QEMU's business now. */
static void tracker_release(Domain *d) {
        /* A freed tracker calls no adopt callback: the attach in flight ends
         * here (a disconnect reports the failure of the attach itself). */
        if (d->jobs_attach) {
                AttachCall *c = d->jobs_attach;

                d->jobs_attach = NULL;
                strv_free(c->orphans);
                free(c);
                domain_unref(d);
        }
        if (!d->jobs)
                return;
        JOB_TRACKER_FOREACH(j, d->jobs)
                if (!j->owned) {
                        block_job_info_free(j->userdata);
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
                block_job_info_free(j->userdata);
                j->userdata = NULL;
                job_unref(j);
        }
        d->lingering = mfree(d->lingering);
}
