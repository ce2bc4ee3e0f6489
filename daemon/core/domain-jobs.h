/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The domain's job glue: the JobTracker (qemu/job.c) of its QEMU and what
 * the domain does around it — lookups, the job journals in the runtime
 * dir, the chain bookkeeping when a job ends (one block-graph change at a
 * time), finished jobs kept for a while, jobs qsnapd runs itself, and
 * adoption after a restart. Starting block jobs is an operation
 * (ops/block-jobs.c). No D-Bus in here.
 */
#pragma once

#include "core/domain.h"
#include "qemu/job.h"

/* How long a finished job's object stays. */
#define JOB_LINGER_USEC (60 * USEC_PER_SEC)

/* Job.userdata of our jobs. */
typedef struct BlockJobInfo {
        Domain *domain;
        char **old_chain;   /* the disk's files when the job started, active first */
        bool delete_files;  /* BlockCommit DELETE */
        /* BlockCopy (and BlockRebase COPY); kept in a small journal in the
         * runtime dir so that an adopting qsnapd knows them too. */
        char *copy_dest;    /* the destination file */
        char *copy_node;    /* its node name in QEMU */
        bool copy_created;  /* qsnapd created it (no REUSE_EXT): removed when the copy fails */
        bool copy_started;  /* QEMU accepted the mirror (journaled: the start-up sweep keeps the file) */
        DiskFormat copy_format; /* the destination's: the disk's format after a pivot */
        bool transient;     /* TRANSIENT_JOB: abandoned, not adopted, by a restarted qsnapd */
        /* An active commit: its base, the disk's active file after the
         * pivot (journaled with the job). */
        char *commit_base;
        DiskFormat commit_base_format;
        /* QEMU switched the disk to the copy's destination / the commit's
         * base (journaled: a qsnapd that finds QEMU gone stores the switch). */
        bool pivoted;
        bool abandoned;     /* a transient copy a restarted qsnapd cancels: its file goes too */
        bool end_reported;  /* the chain bookkeeping is done and the end was announced */
        sd_event_source *linger;
} BlockJobInfo;

/* A queued change of the block graph (core/domain-jobs.c). */
typedef struct GraphTask {
        Job *job;
        bool finalize;     /* job_finalize(), else read the disks back */
        struct GraphTask *next;
} GraphTask;

void domain_graph_tasks_free(Domain *d);

void block_job_info_free(BlockJobInfo *info);

/* The job journal <run>/<uuid>.job-<id> of a job of ours, written when it
 * starts and removed when its end is accounted for: a copy's names its
 * destination (written before the mirror starts), any other's is plain. */
int domain_job_journal_write_copy(Domain *d, const char *job_id, const BlockJobInfo *info);
/* The copy's journal gets its "started" mark (info->copy_started set):
 * written the moment QEMU accepted the mirror, or by the qsnapd that
 * adopts it. Only a copy whose journal lacks it provably never started. */
int domain_job_journal_mark_started(Domain *d, const char *job_id, BlockJobInfo *info);
int domain_job_journal_write_plain(Domain *d, const char *job_id);
/* An active commit's journal names its base (the pivot's target). */
int domain_job_journal_write_commit(Domain *d, const char *job_id, const BlockJobInfo *info);
/* The "pivoted" mark (info->pivoted set) of a copy's or an active commit's
 * journal: written when the job ended well after a Pivot, before QEMU
 * forgets the job and before the disks are read back. */
int domain_job_journal_mark_pivoted(Domain *d, const char *job_id, JobType type, BlockJobInfo *info);
void domain_job_journal_remove(Domain *d, const char *job_id);

/* The domain a job of ours belongs to; NULL for a job that is not ours to
 * show (one QEMU runs for somebody else, or not yet registered). */
Domain *domain_job_domain(const Job *j);

/* The State the bus shows: an ended job stays "pending" until its chain
 * bookkeeping is done, so that nobody sees "completed" with old Disks. */
JobState domain_job_state(const Job *j);

/* The job of that id: running, or finished within JOB_LINGER_USEC. */
Job *domain_find_job(Domain *d, const char *id);
/* Running and lingering jobs, in that order; returns a malloc'ed array. */
int domain_list_jobs(Domain *d, Job ***ret, size_t *ret_n);

/* A job qsnapd runs itself (job_new_local()): from now on findable and
 * listed like the others (ADDED is reported); local_job_end() reports its
 * end and lets it linger. Works with QEMU off too. */
int domain_local_job_add(Domain *d, Job *j);
void domain_local_job_end(Domain *d, Job *j);
void domain_local_job_progress(Domain *d, Job *j);

/* An operation's recovery takes over a job adopted from QEMU (its journal
 * names it): the job leaves the domain's list (REMOVED is reported) and
 * is the operation's from now on (job_claim()). */
int domain_job_claim(Domain *d, Job *j, const JobObserver *observer, void *userdata);

/* QEMU died while no qsnapd ran: every job of ours it ran (per the job
 * journals in the runtime dir) ends failed, with its object, Completed and
 * BlockJobEvent like any other end, and its journal goes — except a copy
 * or active commit whose journal has the "pivoted" mark: the stored
 * definition takes the new active file and the job ends completed. */
void domain_jobs_lost(Domain *d);

/* QMP is up: a tracker for it, and the jobs QEMU has adopted (done follows). */
int domain_jobs_attach(Domain *d, void (*done)(Domain *d, void *userdata), void *userdata);
/* <run>/<uuid>.copy-bitmaps-<id>: a copy's planned bitmap actions
 * (core/bitmaps.c), part of its job journal: removed with it. */
char *domain_job_bitmaps_path(Domain *d, const char *job_id);

/* A tracker on a QEMU that has no jobs to adopt (core/offline-qemu.c's
 * paused QEMU of a shut-off domain, started a moment ago). */
int domain_jobs_attach_fresh(Domain *d);
/* QEMU went away (fail what runs) or we leave it running (detach only). */
void domain_jobs_disconnected(Domain *d, bool qemu_gone);
void domain_jobs_free(Domain *d);
