/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block jobs of a domain: BlockPull and BlockCommit started over QMP and
 * tracked by the domain's JobTracker (job.c), the chain bookkeeping when
 * one ends, finished jobs kept for a while, and adoption after a restart.
 * No D-Bus in here.
 */
#pragma once

#include "core/domain.h"
#include "qemu/job.h"

#define BLOCK_COMMIT_SHALLOW 1ULL
#define BLOCK_COMMIT_DELETE 2ULL
#define BLOCK_COMMIT_ACTIVE 4ULL
#define BLOCK_COMMIT_RELATIVE 8ULL
#define BLOCK_COMMIT_ALL 15ULL

#define BLOCK_REBASE_SHALLOW 1ULL
#define BLOCK_REBASE_REUSE_EXT 2ULL
#define BLOCK_REBASE_COPY_RAW 4ULL
#define BLOCK_REBASE_COPY 8ULL
#define BLOCK_REBASE_RELATIVE 16ULL
#define BLOCK_REBASE_ALL 31ULL

#define BLOCK_COPY_SHALLOW 1ULL
#define BLOCK_COPY_REUSE_EXT 2ULL
#define BLOCK_COPY_TRANSIENT_JOB 4ULL
#define BLOCK_COPY_SYNCHRONOUS_WRITES 8ULL
#define BLOCK_COPY_ALL 15ULL

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
        bool transient;     /* TRANSIENT_JOB: abandoned, not adopted, by a restarted qsnapd */
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

typedef void (*BlockJobStartedFunc)(Domain *d, int error, const char *message, Job *j, void *userdata);

/* Both check everything first (-ENODEV disk, -EINVAL base/top/flags,
 * -ESRCH not running, -EBUSY), return < 0 with *ret_message at once, or
 * call done once QEMU accepted or refused the job. */
int domain_block_pull(Domain *d, const char *disk, uint64_t bandwidth, uint64_t flags, BlockJobStartedFunc done,
                      void *userdata, char **ret_message);
/* base "" or NULL: a full pull (BlockPull); a file of the chain: a
 * partial one, everything above it copied into the active file. */
int domain_block_rebase(Domain *d, const char *disk, const char *base, uint64_t bandwidth, uint64_t flags,
                        BlockJobStartedFunc done, void *userdata, char **ret_message);
int domain_block_commit(Domain *d, const char *disk, const char *base, const char *top, uint64_t bandwidth,
                        uint64_t flags, BlockJobStartedFunc done, void *userdata, char **ret_message);

/* BlockCopy, and BlockRebase with COPY: a mirror of the disk to dest
 * (format _DISK_FORMAT_INVALID: the disk's own, or with REUSE_EXT what the
 * file is), flags BLOCK_COPY_*. -EXDEV dest not allowed, -EEXIST dest
 * exists (without REUSE_EXT), -ENOSPC, besides the errors above. */
int domain_block_copy(Domain *d, const char *disk, const char *dest, DiskFormat dest_format, uint64_t bandwidth,
                      uint64_t flags, BlockJobStartedFunc done, void *userdata, char **ret_message);

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

/* QEMU died while no qsnapd ran: every job of ours it ran (per the job
 * journals in the runtime dir) ends failed, with its object, Completed and
 * BlockJobEvent like any other end, and its journal goes. */
void domain_jobs_lost(Domain *d);

/* QMP is up: a tracker for it, and the jobs QEMU has adopted (done follows). */
int domain_jobs_attach(Domain *d, void (*done)(Domain *d, void *userdata), void *userdata);
/* QEMU went away (fail what runs) or we leave it running (detach only). */
void domain_jobs_disconnected(Domain *d, bool qemu_gone);
void domain_jobs_free(Domain *d);
