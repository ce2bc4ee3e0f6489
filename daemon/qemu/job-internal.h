/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job tracker's insides, shared by its files and nothing else:
 * qemu/job.c (the tracker, its commands, QEMU's events and the jobs'
 * lifecycle), qemu/job-progress.c (progress reports and rates),
 * qemu/job-adopt.c (jobs found in QEMU after a restart) and
 * qemu/job-control.c (the owner's calls: pivot, abort, speed, pause,
 * finalize). Together they are the one QEMU job driver: nothing else in
 * the daemon reads QEMU's job states (tests/test_layers.py). The contract
 * is qemu/job.h.
 */
#pragma once

#include <stddef.h>

#include "qemu/job.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/util.h"

#define JOB_POLL_INTERVAL_DEFAULT (150 * USEC_PER_MSEC)
#define PROGRESS_MIN_INTERVAL (100 * USEC_PER_MSEC) /* at most 10 a second */
#define PROGRESS_MAX_INTERVAL USEC_PER_SEC          /* at least one a second while moving */
#define PROGRESS_STEP 0.05                          /* … or one per 5 % */
#define RATE_TIME_CONSTANT (2 * USEC_PER_SEC)       /* smoothing of the measured rate */

#define MESSAGE_GONE "QEMU went away before the job ended (its process exited or closed the monitor)"


typedef enum JobPhase {
        PHASE_ACTIVE,     /* running, ready or paused */
        PHASE_PENDING,    /* waiting for the owner's job_finalize() */
        PHASE_FINALIZING, /* job-finalize or job-cancel sent */
        PHASE_CONCLUDED,  /* concluded in QEMU: query-jobs (for its error), then job-dismiss sent */
        PHASE_FINISHED,   /* ended and reported */
} JobPhase;

typedef enum CallKind {
        CALL_POLL,
        CALL_ADOPT_JOBS,
        CALL_ADOPT_BLOCK_JOBS,
        CALL_COMPLETE,
        CALL_CANCEL,
        CALL_SET_SPEED,
        CALL_PAUSE,
        CALL_RESUME,
        CALL_FINALIZE,
        CALL_FINALIZE_CANCEL,
        CALL_CONCLUDE_QUERY,
        CALL_DISMISS,
} CallKind;

/* One command of ours in flight. */
typedef struct Call Call;
struct Call {
        JobTracker *tracker;
        Call *next;
        int64_t id;
        CallKind kind;
        Job *job;           /* a reference; NULL for polls and adoption */
        JobDoneFunc done;
        void *userdata;
        uint64_t value;     /* poll: its sequence number; set-speed: the bandwidth */
};

struct JobTracker {
        unsigned n_ref;     /* the owner's, plus one per entry point running */
        bool freed;         /* job_tracker_free() was called: no more callbacks */
        bool disconnected;

        Qmp *qmp;
        sd_event *event;
        JobObserver observer;
        void *userdata;
        int subscription;

        Job *jobs, *jobs_tail;
        Call *calls;

        sd_event_source *poll_timer;
        uint64_t poll_interval;
        uint64_t poll_seq;  /* polls sent so far */
        bool poll_in_flight;
        bool sync_wanted;   /* poll at once */

        bool adopting;
        JobAdoptFunc adopt_done;
        void *adopt_userdata;
        json_object *adopt_jobs, *adopt_block_jobs;
        unsigned adopt_replies;
        int adopt_error;
};

/* ---- shared between the tracker's files ---- */

/* job.c: strings, references, the job list, commands, the lifecycle */
bool job_type_is_block_job(JobType type);
/* QEMU's words for a failed command, or ours. */
const char *job_call_error_message(int error, const char *desc);
JobTracker *tracker_hold(JobTracker *t);
void tracker_releasep(JobTracker **t);
void job_list_free(Job **l, size_t n);
/* The job is still the tracker's and not ended: work on it may go on. */
bool job_alive(Job *j, JobTracker *t);
void tracker_link(JobTracker *t, Job *j);
/* Sends the command of `kind` for j (may be NULL) and remembers it. */
int tracker_call(JobTracker *t, CallKind kind, Job *j, uint64_t value, JobDoneFunc done, void *userdata, Call **ret);
void tracker_unlink_call(JobTracker *t, Call *c);
void tracker_call_free(Call *c);
/* The poll timer runs exactly while a job runs (or a sync is wanted). */
void tracker_update_polling(JobTracker *t);
JobState job_outcome(Job *j, const char **ret_error);
/* job-dismiss, then the end is reported. */
void job_dismiss(Job *j);
Job *job_new(const char *id, JobType type, const char *disk, uint64_t bandwidth);
/* Calls one observer callback (the offset of its member in JobObserver):
 * the job's owner's, or the tracker's; false when the owner freed the
 * tracker meanwhile. */
bool job_notify_at(JobTracker *t, Job *j, size_t member);
#define notify(t, j, member) job_notify_at(t, j, offsetof(JobObserver, member))

/* job-progress.c */
/* Reports now what is not reported yet; false when the job went meanwhile. */
bool job_progress_flush(Job *j);
void job_rate_reset(Job *j);
/* New figures (from a poll when `sample`, or an event). */
bool job_set_progress(Job *j, uint64_t cur, uint64_t end, bool sample);

/* job-adopt.c */
void tracker_on_adopt_reply(JobTracker *t, Call *c, int error, json_object *result, const char *desc);
