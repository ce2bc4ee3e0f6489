/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block job tracker of one QMP connection (one domain): a Job per QEMU
 * job we started or adopted, driven by JOB_STATUS_CHANGE and BLOCK_JOB_*
 * events, with progress polled through query-jobs only while a job runs.
 * Jobs are started with auto-finalize=false and auto-dismiss=false: a job
 * that is about to succeed parks in "pending" until the owner has updated
 * its chains and metadata and calls job_finalize(); the tracker then
 * finalizes and dismisses it and reports the end. The owner (the domain
 * layer; the bus layer wraps each Job as an org.example.BlockJob1 object)
 * learns everything through a JobObserver. A job may have an owner of its
 * own instead (job_tracker_add_job() with an observer): an operation that
 * drives a QEMU job as one step of its work (a snapshot-save, a delete's
 * merge) hears that job's events alone, and the domain's observer never
 * sees it. Jobs that QEMU finalizes by itself (snapshot-save, -load,
 * -delete: `auto_finalize`) pass "pending" by; their end and QEMU's error
 * come from query-jobs. No D-Bus in here.
 *
 * State mapping, QEMU job status → Job.state:
 *   created, running, waiting → running     ready → ready (ready = true; the
 *            first time from BLOCK_JOB_READY, which carries the figures)
 *   paused → paused, standby → paused (ready = true), but only while the job
 *            is paused for real: by job_pause(), by an I/O error with
 *            on-error=stop (BLOCK_JOB_ERROR action "stop"), or, when adopted,
 *            as query-block-jobs "paused" says. QEMU also pauses jobs for a
 *            moment during its own drained sections (a READY mirror goes
 *            ready → standby → ready): that stays running / ready.
 *   pending → pending (observer's pending(); stays pending until dismissed),
 *             except for auto_finalize jobs: running (QEMU goes on by itself)
 *   aborting → unchanged (the end follows)
 *   concluded → job-dismiss sent; after its reply: completed, failed or
 *               canceled (observer's finished())
 *   null before concluded → failed, "Job vanished from QEMU"
 * The end: BLOCK_JOB_CANCELLED seen → canceled; an error (BLOCK_JOB_COMPLETED
 * "error", query-jobs "error") → failed with QEMU's text verbatim, except
 * strerror(ECANCELED), which is how query-jobs words a cancel → canceled;
 * otherwise completed (after a pivot: pivoted() first, then the dismiss).
 * A copy or active commit that was READY when the owner aborted it
 * without pivot ends with BLOCK_JOB_COMPLETED in QEMU (the source stays,
 * the copy is consistent): we report canceled, as libvirt does, so
 * that "completed" always means the chain changed as the job intended.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "qemu/qmp.h"

typedef struct JobTracker JobTracker;
typedef struct Job Job;

typedef enum JobType {
        JOB_TYPE_PULL,
        JOB_TYPE_COPY,
        JOB_TYPE_COMMIT,
        JOB_TYPE_ACTIVE_COMMIT,
        JOB_TYPE_BACKUP,
        JOB_TYPE_SNAPSHOT_DELETE,
        JOB_TYPE_SNAPSHOT_REVERT,
        JOB_TYPE_SNAPSHOT_CREATE,
        _JOB_TYPE_MAX,
        _JOB_TYPE_INVALID = -EINVAL,
} JobType;

typedef enum JobState {
        JOB_STATE_RUNNING,
        JOB_STATE_READY,
        JOB_STATE_PAUSED,
        JOB_STATE_PENDING,
        JOB_STATE_COMPLETED,
        JOB_STATE_FAILED,
        JOB_STATE_CANCELED,
        _JOB_STATE_MAX,
        _JOB_STATE_INVALID = -EINVAL,
} JobState;

/* "pull", "copy", "commit", "active-commit", "backup", "snapshot-delete",
 * "snapshot-revert", "snapshot-create" */
const char *job_type_to_string(JobType t);
JobType job_type_from_string(const char *s);
/* DESIGN §2: "running", "ready", "paused", "pending", "completed", "failed", "canceled" */
const char *job_state_to_string(JobState s);
JobState job_state_from_string(const char *s);
static inline bool job_state_is_final(JobState s) {
        return s == JOB_STATE_COMPLETED || s == JOB_STATE_FAILED || s == JOB_STATE_CANCELED;
}

/* Every callback gets the tracker's userdata; a Job's own owner pointer is
 * Job.userdata. Callbacks may do anything, including job_unref(),
 * job_tracker_free() and the job_*() calls below. */
typedef struct JobObserver {
        /* Cur/End (and with them Rate and Eta) changed: at most 10 calls a
         * second, and at least one per 5 % of End or per second while the
         * job moves. */
        void (*progress)(Job *j, void *userdata);
        /* State, Ready, Error or Bandwidth changed (Rate/Eta drop to 0 when
         * the job stops running). */
        void (*state_changed)(Job *j, void *userdata);
        /* The job became READY for the first time (mirror, active commit):
         * job_pivot() is possible now. After state_changed. */
        void (*ready)(Job *j, void *userdata);
        /* The job is about to end without error and waits for the owner:
         * update chains and metadata (j->pivoting / j->aborting say what
         * ended it), then call job_finalize(). After state_changed. Also
         * for jobs found waiting by job_tracker_adopt(). */
        void (*pending)(Job *j, void *userdata);
        /* A job the owner pivoted (job_pivot(): a copy, an active commit)
         * concluded in QEMU without error: QEMU has switched the disk to
         * the job's target (in job-finalize). Called once, before
         * job-dismiss goes out and before finished(), so that the owner can
         * journal the switch while QEMU still lists the job. Not for
         * adopted jobs (whether the last qsnapd pivoted is unknown). */
        void (*pivoted)(Job *j, void *userdata);
        /* The job ended and QEMU forgot it (dismissed): j->state is
         * completed, failed or canceled, j->error QEMU's text on failure.
         * The tracker let go of it before this call (job_tracker_find()
         * no longer finds it); job_ref() it to keep it. */
        void (*finished)(Job *j, void *userdata);
        /* Owned jobs only (an observer of their own): the tracker went
         * (job_tracker_free(): qsnapd leaves QEMU running) before the job
         * ended. QEMU goes on with it and a restarted qsnapd adopts it; the
         * owner lets go of its work without undoing anything. The tracker
         * let go of the job before this call (j->tracker == NULL). */
        void (*detached)(Job *j, void *userdata);
} JobObserver;

/* Read-only outside the tracker (qemu/job*.c). */
struct Job {
        unsigned n_ref;
        JobTracker *tracker; /* NULL once finished, or once the tracker is gone */

        char *id;            /* the QEMU job id */
        JobType type;
        char *disk;          /* target name ("vda"); NULL for domain-wide jobs */
        JobState state;
        bool ready;          /* QEMU says ready (or standby): job_pivot() possible */
        bool pivoting;       /* job_pivot() was accepted */
        bool aborting;       /* job_abort() was accepted */
        bool adopted;        /* found by job_tracker_adopt() */
        bool owned;          /* has an observer of its own: the tracker's observer never sees it */
        bool auto_finalize;  /* QEMU finalizes it by itself (snapshot-save/-load/-delete): no pending() */
        bool local;          /* run by qsnapd itself (job_new_local()), not a QEMU job */
        int (*local_abort)(Job *j, void *data); /* local: what Abort does (NULL: -QSNAP_E_UNSUPPORTED) */
        void *local_abort_data;
        uint64_t cur, end;   /* QEMU's current-progress/total-progress; their meaning varies by job */
        uint64_t bandwidth;  /* bytes/s, 0 = unlimited */
        char *error;         /* QEMU's own text, NULL unless failed */
        uint64_t start_time; /* CLOCK_REALTIME µs; for adopted jobs the adoption time */
        uint64_t rate;       /* bytes/s, measured (smoothed) while running, else 0 */
        uint64_t eta;        /* seconds to go at that rate; 0 = unknown */

        void *userdata;      /* the owner's */

        /* private to the tracker (qemu/job*.c) */
        JobObserver owner;   /* owned: its observer, and the userdata for it */
        void *owner_userdata;
        unsigned phase;
        bool soft_cancel, cancelled_seen, completed_seen, end_known, status_aborting, ready_notified, rate_seeded,
             pivot_noted;
        bool user_paused, qemu_paused, qemu_ready; /* State is computed from these */
        char *end_error;     /* from BLOCK_JOB_COMPLETED / query-jobs, kept for the end */
        char *fail_reason;   /* job_finalize(j, false, reason) */
        uint64_t add_seq;    /* polls numbered above this one were sent after the job was added */
        uint64_t sample_cur, sample_usec; /* rate measurement */
        double rate_f;
        uint64_t reported_cur, reported_end, reported_usec; /* the last progress() */
        sd_event_source *progress_timer;
        Job *next;
};

/* The end of an asynchronous job_*() call: error 0, or a QSNAP_E_* code or
 * -errno with a message (QEMU's own text for -QSNAP_E_QEMU_FAILED; "QEMU
 * went away before the job ended …" for -ECONNRESET).
 * A call that returns < 0 (with *ret_message) never calls done; one that
 * returns 0 calls it exactly once, never from inside the call itself; one
 * that returns 1 had nothing to do and does not call it. done may be NULL. */
typedef void (*JobDoneFunc)(Job *j, int error, const char *message, void *userdata);

/* One tracker per QMP connection: it subscribes to its events and takes a
 * reference on it (a new connection needs a new tracker). The owner keeps
 * the QMP disconnect callback and tells us through
 * job_tracker_disconnected(). */
int job_tracker_new(Qmp *qmp, sd_event *event, const JobObserver *o, void *userdata, JobTracker **ret);
/* Stops everything at once: no observer or adopt callback runs any more;
 * done callbacks still outstanding get -QSNAP_E_OPERATION_INVALID. Jobs stay with whoever
 * holds a reference, detached (j->tracker == NULL). Free the tracker before
 * closing a QMP connection to a QEMU that keeps running (a daemon exit):
 * its jobs go on there and are adopted next time. */
JobTracker *job_tracker_free(JobTracker *t);
static inline void job_tracker_freep(JobTracker **t) {
        if (*t)
                job_tracker_free(*t);
}

/* Progress poll period while a job runs (default 150 ms). */
void job_tracker_set_poll_interval(JobTracker *t, uint64_t usec);

/* QEMU went away: every job not yet ended fails with "QEMU went away
 * before the job ended …" and finished() is called for each (a job
 * already concluded ends with its own outcome). Also happens by itself
 * when one of our commands gets -ECONNRESET. Idempotent. */
void job_tracker_disconnected(JobTracker *t);

/* Registers a job the owner started with auto-finalize=false,
 * auto-dismiss=false (qmp_cmd_block_stream() & co.). Call it from the start
 * command's success reply; right after sending it works too (QMP answers
 * in order), but then a start QEMU refuses ends the job as failed,
 * "vanished". The tracker syncs with an immediate query-jobs: events QEMU
 * sent before do not matter. -QSNAP_E_ALREADY_EXISTS when the id is tracked, -ENOTCONN
 * after a disconnect. *ret is borrowed (may be NULL); the tracker keeps the
 * job until it finished. */
int job_tracker_add(JobTracker *t, const char *id, JobType type, const char *disk, uint64_t bandwidth, Job **ret);

/* A job as job_tracker_add_job() registers it. */
typedef struct JobSpec {
        JobType type;
        const char *disk;            /* the target; NULL for a job of no one disk (snapshot-*) */
        uint64_t bandwidth;
        /* QEMU finalizes it by itself (snapshot-save, snapshot-load,
         * snapshot-delete): "pending" passes by without pending(), and
         * how it ended comes from query-jobs once it is concluded. Else it
         * was started with auto-finalize=false and waits for job_finalize(). */
        bool auto_finalize;
        /* Its own observer (NULL: the tracker's): every callback of this
         * job goes there, with observer_userdata, and never to the
         * tracker's observer; Job.userdata stays the owner's to use or not. */
        const JobObserver *observer;
        void *observer_userdata;
} JobSpec;

/* job_tracker_add() with everything said: the same rules and errors. */
int job_tracker_add_job(JobTracker *t, const char *id, const JobSpec *spec, Job **ret);

/* After a restart of ours: query-jobs + query-block-jobs, and a Job for
 * every QEMU job of a kind we know (commit → commit, or active-commit when
 * READY; stream → pull; mirror → copy; backup; snapshot-save/-load/-delete
 * → snapshot-create/-revert/-delete, auto_finalize), running, paused,
 * ready, pending or concluded. Adopted jobs are the tracker observer's. done(t, 0) comes once they all exist, without state_changed
 * for them; correct j->type/disk from the journal there (job_set_*()).
 * Afterwards jobs found pending get pending(), concluded ones are dismissed
 * and get finished(). -QSNAP_E_BUSY while an adoption is in flight. */
typedef void (*JobAdoptFunc)(JobTracker *t, int error, void *userdata);
int job_tracker_adopt(JobTracker *t, JobAdoptFunc done, void *userdata);

Job *job_tracker_find(JobTracker *t, const char *id);
Job *job_tracker_first(JobTracker *t);
static inline Job *job_next(Job *j) {
        return j->next;
}
#define JOB_TRACKER_FOREACH(j, t) for (Job *j = job_tracker_first(t); j; j = job_next(j))

/* The owner of an owned job lets go of it before it ended (it gave up
 * waiting, or is being freed): no callback reaches the owner any more,
 * and the job stays out of the tracker observer's sight. Only for
 * auto_finalize jobs, which QEMU ends by itself (the tracker dismisses
 * them when they conclude); idempotent. */
void job_disown(Job *j);

/* An operation takes over a job the tracker adopted after a restart (its
 * journal names the job): from now on the job is owned, every callback
 * goes to observer with userdata, and the tracker's observer never sees
 * it again. Call it from the adopt callback (job_tracker_adopt()'s done),
 * so that a job found pending or concluded reports that to its new owner.
 * -QSNAP_E_OPERATION_INVALID when the job ended or is owned already. */
int job_claim(Job *j, const JobObserver *observer, void *userdata);

Job *job_ref(Job *j);
Job *job_unref(Job *j);
static inline void job_unrefp(Job **j) {
        if (*j)
                job_unref(*j);
}

/* A job qsnapd runs itself (a snapshot delete's merge: qemu-img steps
 * or several QEMU jobs in a row), shown like the others; no tracker. The
 * owner moves it with job_local_update(); job_abort() calls local_abort
 * (and returns 1: the end follows as the owner reports it); pivot, speed,
 * pause and resume answer -QSNAP_E_UNSUPPORTED. */
Job *job_new_local(const char *id, JobType type, const char *disk);
/* error: NULL unless failed. */
void job_local_update(Job *j, JobState state, uint64_t cur, uint64_t end, const char *error);

/* What the owner knows better than QEMU (adoption). */
int job_set_disk(Job *j, const char *disk);
void job_set_type(Job *j, JobType type);
void job_set_start_time(Job *j, uint64_t realtime_usec);

/* The controls below refuse with -QSNAP_E_OPERATION_INVALID once the job
 * ended or is finishing, -QSNAP_E_UNSUPPORTED for a local job (but its
 * Abort), -ENOTCONN when QEMU went away.
 *
 * job-complete. Only in READY: reaching cur == end is not readiness (an
 * active commit's End grows with guest writes), else
 * -QSNAP_E_OPERATION_INVALID; -QSNAP_E_BUSY while a pivot is under way. */
int job_pivot(Job *j, JobDoneFunc done, void *userdata, char **ret_message);
/* libvirt's Abort: pivot → job_pivot(); otherwise block-job-cancel (job-cancel
 * for snapshot jobs). A READY copy/active commit then ends canceled with
 * the source kept and the copy consistent. */
int job_abort(Job *j, bool pivot, JobDoneFunc done, void *userdata, char **ret_message);
/* block-job-set-speed; j->bandwidth is updated (and state_changed called)
 * before done(0). -QSNAP_E_UNSUPPORTED for snapshot jobs. */
int job_set_speed(Job *j, uint64_t bandwidth, JobDoneFunc done, void *userdata, char **ret_message);
/* job-pause / job-resume; 1 when already paused (resp. not paused). State
 * becomes paused once QEMU agreed and the job stopped (both orders occur). */
int job_pause(Job *j, JobDoneFunc done, void *userdata, char **ret_message);
int job_resume(Job *j, JobDoneFunc done, void *userdata, char **ret_message);

/* The owner's answer to pending(): commit → job-finalize (the job then
 * ends completed, or canceled after a soft cancel); otherwise job-cancel
 * and the job ends failed with `reason` (e.g. "Cannot save the snapshot
 * metadata: …"), or canceled when reason is NULL.
 * -QSNAP_E_OPERATION_INVALID when the job is not waiting for it. */
int job_finalize(Job *j, bool commit, const char *reason);
