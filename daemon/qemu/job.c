/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block job tracker: owns the Jobs of one QMP connection, their
 * lifecycle phase (active → pending → finalizing → concluded → finished),
 * the progress poll (query-jobs, only while a job runs), QEMU's job
 * events, and the commands it sends. Progress reports and rates are in
 * job-progress.c, adoption after a restart in job-adopt.c, the owner's
 * calls in job-control.c (qemu/job-internal.h joins them). Everything is
 * asynchronous. Entry points from the event loop hold a reference on the
 * tracker and the job they work on, so the owner may free either from any
 * callback; after each callback the code checks whether it can go on.
 */
#include "qemu/job.h"

#include <stddef.h>
#include <stdio.h>

#include "qemu/job-internal.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/string-table.h"
#include "util/util.h"

static const char *const job_type_table[_JOB_TYPE_MAX] = {
        [JOB_TYPE_PULL] = "pull",
        [JOB_TYPE_COPY] = "copy",
        [JOB_TYPE_COMMIT] = "commit",
        [JOB_TYPE_ACTIVE_COMMIT] = "active-commit",
        [JOB_TYPE_BACKUP] = "backup",
        [JOB_TYPE_SNAPSHOT_DELETE] = "snapshot-delete",
        [JOB_TYPE_SNAPSHOT_REVERT] = "snapshot-revert",
        [JOB_TYPE_SNAPSHOT_CREATE] = "snapshot-create",
};

static const char *const job_state_table[_JOB_STATE_MAX] = {
        [JOB_STATE_RUNNING] = "running",
        [JOB_STATE_READY] = "ready",
        [JOB_STATE_PAUSED] = "paused",
        [JOB_STATE_PENDING] = "pending",
        [JOB_STATE_COMPLETED] = "completed",
        [JOB_STATE_FAILED] = "failed",
        [JOB_STATE_CANCELED] = "canceled",
};

DEFINE_STRING_TABLE_LOOKUP(job_type, JobType);
DEFINE_STRING_TABLE_LOOKUP(job_state, JobState);

/* Internal snapshot jobs are not block jobs: the block-job-* verbs do
 * not find them. */
bool job_type_is_block_job(JobType type) {
        switch (type) {
        case JOB_TYPE_PULL:
        case JOB_TYPE_COPY:
        case JOB_TYPE_COMMIT:
        case JOB_TYPE_ACTIVE_COMMIT:
        case JOB_TYPE_BACKUP:
                return true;
        case JOB_TYPE_SNAPSHOT_DELETE:
        case JOB_TYPE_SNAPSHOT_REVERT:
        case JOB_TYPE_SNAPSHOT_CREATE:
        case _JOB_TYPE_MAX:
        case _JOB_TYPE_INVALID:
                break;
        }
        return false;
}

/* ---- references ---- */

JobTracker *tracker_hold(JobTracker *t) {
        t->n_ref++;
        return t;
}

static void tracker_release(JobTracker *t) {
        assert(t->n_ref > 0);
        if (--t->n_ref > 0)
                return;
        assert(t->freed);
        free(t);
}

void tracker_releasep(JobTracker **t) {
        if (*t)
                tracker_release(*t);
}

Job *job_ref(Job *j) {
        if (!j)
                return NULL;
        assert(j->n_ref > 0);
        j->n_ref++;
        return j;
}

Job *job_unref(Job *j) {
        if (!j)
                return NULL;
        assert(j->n_ref > 0);
        if (--j->n_ref > 0)
                return NULL;
        assert(!j->tracker);
        sd_event_source_disable_unref(j->progress_timer);
        free(j->id);
        free(j->disk);
        free(j->error);
        free(j->end_error);
        free(j->fail_reason);
        free(j);
        return NULL;
}

static Job **job_list_snapshot(JobTracker *t, size_t *ret_n) {
        size_t n = 0, i = 0;
        Job **l;

        for (Job *j = t->jobs; j; j = j->next)
                n++;
        l = new0(Job *, n);
        if (!l)
                return NULL;
        for (Job *j = t->jobs; j; j = j->next)
                l[i++] = job_ref(j);
        *ret_n = n;
        return l;
}

void job_list_free(Job **l, size_t n) {
        for (size_t i = 0; l && i < n; i++)
                job_unref(l[i]);
        free(l);
}

/* The job is still ours and not ended: work on it may go on. */
bool job_alive(Job *j, JobTracker *t) {
        return !t->freed && j->tracker == t && j->phase != PHASE_FINISHED;
}

/* The observer of j: its owner's, or the tracker's. */
static const JobObserver *job_observer(JobTracker *t, Job *j, void **ret_userdata) {
        *ret_userdata = j->owned ? j->owner_userdata : t->userdata;
        return j->owned ? &j->owner : &t->observer;
}

/* Calls one observer callback (the offset of its member in JobObserver);
 * false when the owner freed the tracker meanwhile. */
bool job_notify_at(JobTracker *t, Job *j, size_t member) {
        void (*cb)(Job *j, void *userdata);
        const JobObserver *o;
        void *userdata;

        if (t->freed)
                return false;
        o = job_observer(t, j, &userdata);
        memcpy(&cb, (const char *) o + member, sizeof(cb));
        if (cb)
                cb(j, userdata);
        return !t->freed;
}

void tracker_link(JobTracker *t, Job *j) {
        j->tracker = t;
        j->next = NULL;
        if (t->jobs_tail)
                t->jobs_tail->next = j;
        else
                t->jobs = j;
        t->jobs_tail = j;
}

/* Drops the tracker's reference; the caller must hold one of its own. */
static void tracker_unlink(JobTracker *t, Job *j) {
        Job *prev = NULL;

        for (Job *i = t->jobs; i; prev = i, i = i->next) {
                if (i != j)
                        continue;
                if (prev)
                        prev->next = j->next;
                else
                        t->jobs = j->next;
                if (t->jobs_tail == j)
                        t->jobs_tail = prev;
                break;
        }
        j->next = NULL;
        j->tracker = NULL;
        (void) sd_event_source_set_enabled(j->progress_timer, SD_EVENT_OFF);
        job_unref(j);
}

Job *job_tracker_find(JobTracker *t, const char *id) {
        if (!t || !id)
                return NULL;
        for (Job *j = t->jobs; j; j = j->next)
                if (streq(j->id, id))
                        return j;
        return NULL;
}

Job *job_tracker_first(JobTracker *t) {
        return t ? t->jobs : NULL;
}

/* ---- commands ---- */

static void on_call_reply(Qmp *qmp, int error, json_object *result, const char *err_class, const char *err_desc, void *userdata);

/* For log lines and messages. */
static const char *call_command(const Call *c) {
        switch (c->kind) {
        case CALL_POLL:
        case CALL_ADOPT_JOBS:
        case CALL_CONCLUDE_QUERY:
                return "query-jobs";
        case CALL_ADOPT_BLOCK_JOBS:
                return "query-block-jobs";
        case CALL_COMPLETE:
                return "job-complete";
        case CALL_CANCEL:
                return c->job && !job_type_is_block_job(c->job->type) ? "job-cancel" : "block-job-cancel";
        case CALL_SET_SPEED:
                return "block-job-set-speed";
        case CALL_PAUSE:
                return "job-pause";
        case CALL_RESUME:
                return "job-resume";
        case CALL_FINALIZE:
                return "job-finalize";
        case CALL_FINALIZE_CANCEL:
                return "job-cancel";
        case CALL_DISMISS:
                return "job-dismiss";
        }
        return "?";
}

void tracker_call_free(Call *c) {
        job_unref(c->job);
        free(c);
}

void tracker_unlink_call(JobTracker *t, Call *c) {
        for (Call **p = &t->calls; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        c->next = NULL;
}

/* Sends the command of `kind` for j (may be NULL) and remembers it. */
int tracker_call(JobTracker *t, CallKind kind, Job *j, uint64_t value, JobDoneFunc done, void *userdata, Call **ret) {
        _cleanup_free_ Call *c = NULL;
        int64_t id = -EINVAL;

        c = new0(Call, 1);
        if (!c)
                return -ENOMEM;
        *c = (Call) { .tracker = t, .kind = kind, .value = value, .done = done, .userdata = userdata };

        switch (kind) {
        case CALL_POLL:
        case CALL_ADOPT_JOBS:
        case CALL_CONCLUDE_QUERY:
                id = qmp_cmd_query_jobs(t->qmp, on_call_reply, c);
                break;
        case CALL_ADOPT_BLOCK_JOBS:
                id = qmp_cmd_query_block_jobs(t->qmp, on_call_reply, c);
                break;
        case CALL_COMPLETE:
                id = qmp_cmd_job_complete(t->qmp, j->id, on_call_reply, c);
                break;
        case CALL_CANCEL:
                /* Without force a READY mirror keeps a consistent copy; but
                 * QEMU refuses that for a paused job, which needs force. */
                id = job_type_is_block_job(j->type)
                             ? qmp_cmd_block_job_cancel(t->qmp, j->id, j->user_paused || j->qemu_paused, on_call_reply, c)
                                                    : qmp_cmd_job_cancel(t->qmp, j->id, on_call_reply, c);
                break;
        case CALL_SET_SPEED:
                id = qmp_cmd_block_job_set_speed(t->qmp, j->id, value, on_call_reply, c);
                break;
        case CALL_PAUSE:
                id = qmp_cmd_job_pause(t->qmp, j->id, on_call_reply, c);
                break;
        case CALL_RESUME:
                id = qmp_cmd_job_resume(t->qmp, j->id, on_call_reply, c);
                break;
        case CALL_FINALIZE:
                id = qmp_cmd_job_finalize(t->qmp, j->id, on_call_reply, c);
                break;
        case CALL_FINALIZE_CANCEL:
                id = qmp_cmd_job_cancel(t->qmp, j->id, on_call_reply, c);
                break;
        case CALL_DISMISS:
                id = qmp_cmd_job_dismiss(t->qmp, j->id, on_call_reply, c);
                break;
        }
        if (id < 0)
                return (int) id;

        c->id = id;
        c->job = job_ref(j);
        c->next = t->calls;
        t->calls = c;
        if (ret)
                *ret = c;
        TAKE_PTR(c);
        return 0;
}

/* ---- polling ---- */

static bool tracker_wants_poll(JobTracker *t) {
        if (t->freed || t->disconnected)
                return false;
        if (t->sync_wanted)
                return true;
        for (Job *j = t->jobs; j; j = j->next)
                if (j->phase == PHASE_ACTIVE && j->state == JOB_STATE_RUNNING && !j->status_aborting)
                        return true;
        return false;
}

/* The poll timer runs exactly while a job runs (or a sync is wanted) and
 * no poll is in flight; the period counts from the previous reply. */
void tracker_update_polling(JobTracker *t) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        int enabled = SD_EVENT_OFF, r;

        if (!t->poll_timer)
                return;
        if (t->poll_in_flight || !tracker_wants_poll(t)) {
                (void) sd_event_source_set_enabled(t->poll_timer, SD_EVENT_OFF);
                return;
        }
        (void) sd_event_source_get_enabled(t->poll_timer, &enabled);
        if (enabled != SD_EVENT_OFF && !t->sync_wanted)
                return;
        r = sd_event_source_set_time(t->poll_timer, t->sync_wanted ? now : now + t->poll_interval);
        if (r >= 0)
                r = sd_event_source_set_enabled(t->poll_timer, SD_EVENT_ONESHOT);
        if (r < 0)
                log_warning_errno(r, "Failed to arm the block job poll timer: %m");
}

static void tracker_connection_lost(JobTracker *t);

static int on_poll_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        _unused_ _cleanup_(tracker_releasep) JobTracker *t = tracker_hold(userdata);
        int r;

        t->sync_wanted = false;
        r = tracker_call(t, CALL_POLL, NULL, t->poll_seq + 1, NULL, NULL, NULL);
        if (r == -ENOTCONN) {
                tracker_connection_lost(t);
                return 0;
        }
        if (r < 0)
                log_warning_errno(r, "Failed to send query-jobs: %m");
        else {
                t->poll_seq++;
                t->poll_in_flight = true;
        }
        tracker_update_polling(t);
        return 0;
}

/* ---- lifecycle ---- */

JobState job_outcome(Job *j, const char **ret_error) {
        *ret_error = NULL;
        if (j->fail_reason) {
                *ret_error = j->fail_reason;
                return JOB_STATE_FAILED;
        }
        if (j->cancelled_seen)
                return JOB_STATE_CANCELED;
        if (j->end_error) {
                /* query-jobs words a cancel as strerror(ECANCELED). */
                if (streq(j->end_error, strerror(ECANCELED)))
                        return JOB_STATE_CANCELED;
                *ret_error = j->end_error;
                return JOB_STATE_FAILED;
        }
        /* A READY mirror cancelled without force ends "completed" in QEMU,
         * with its source kept: for the owner that is an abort. */
        if (j->soft_cancel)
                return JOB_STATE_CANCELED;
        return JOB_STATE_COMPLETED;
}

/* The end: reported once, after which the tracker forgets the job. */
static void job_end(Job *j, JobState state, const char *error) {
        _unused_ _cleanup_(job_unrefp) Job *ref = job_ref(j);
        JobTracker *t = j->tracker;
        int r;

        assert(t && job_state_is_final(state));
        if (!job_progress_flush(j))
                return;

        if (state == JOB_STATE_FAILED)
                log_warning("Job %s (%s) failed: %s", j->id, job_type_to_string(j->type), strna(error));
        else
                log_debug("Job %s (%s) %s.", j->id, job_type_to_string(j->type), job_state_to_string(state));

        j->phase = PHASE_FINISHED;
        j->state = state;
        j->ready = false;
        job_rate_reset(j);
        r = free_and_strdup(&j->error, state == JOB_STATE_FAILED ? (error ?: "The job failed without a reason.") : NULL);
        if (r < 0)
                log_oom();
        tracker_unlink(t, j);
        tracker_update_polling(t);

        if (!notify(t, j, state_changed))
                return;
        (void) notify(t, j, finished);
}

static void job_end_with_outcome(Job *j) {
        const char *error;
        JobState s = job_outcome(j, &error);

        job_end(j, s, error);
}

/* A pivoted job that ended well switched the disk in QEMU: the owner hears
 * it once, before the dismiss (pivoted()). False when the owner freed the
 * tracker meanwhile or the job went. */
static bool job_note_pivot(Job *j) {
        JobTracker *t = j->tracker;
        const char *error;

        if (!j->pivoting || j->pivot_noted || job_outcome(j, &error) != JOB_STATE_COMPLETED)
                return true;
        j->pivot_noted = true;
        return notify(t, j, pivoted) && job_alive(j, t);
}

void job_dismiss(Job *j) {
        int r;

        if (!job_note_pivot(j))
                return;
        r = tracker_call(j->tracker, CALL_DISMISS, j, 0, NULL, NULL, NULL);
        if (r < 0) {
                log_warning_errno(r, "Job %s: failed to send job-dismiss: %m", j->id);
                job_end_with_outcome(j);
        }
}

/* Concluded in QEMU: dismiss, then report. A job that is no block job
 * (snapshot-*) says how it ended only in query-jobs: ask first. */
static void job_conclude(Job *j) {
        JobTracker *t = j->tracker;

        j->phase = PHASE_CONCLUDED;
        tracker_update_polling(t);
        if (!j->end_known && tracker_call(t, CALL_CONCLUDE_QUERY, j, 0, NULL, NULL, NULL) >= 0)
                return;
        job_dismiss(j);
}

/* Gone from QEMU without a concluded status we saw. */
static void job_vanished(Job *j) {
        if (j->end_known)
                return job_end_with_outcome(j);
        job_end(j, JOB_STATE_FAILED, "Job vanished from QEMU (dismissed by someone else?)");
}

static bool job_set_state(Job *j, JobState state, bool ready) {
        JobTracker *t = j->tracker;
        bool became_ready;

        if (j->state == state && j->ready == ready)
                return true;
        if (!job_progress_flush(j))
                return false;

        if (state != JOB_STATE_RUNNING)
                job_rate_reset(j);
        else if (j->state != JOB_STATE_RUNNING)
                j->sample_usec = 0;
        became_ready = state == JOB_STATE_READY && !j->ready_notified;
        if (became_ready)
                j->ready_notified = true;
        log_debug("Job %s: %s%s → %s%s", j->id, job_state_to_string(j->state), j->ready ? " (ready)" : "",
                  job_state_to_string(state), ready ? " (ready)" : "");
        j->state = state;
        j->ready = ready;
        tracker_update_polling(t);

        if (!notify(t, j, state_changed) || !job_alive(j, t))
                return false;
        if (became_ready && (!notify(t, j, ready) || !job_alive(j, t)))
                return false;
        return true;
}

/* State from QEMU's status and whether the job is paused for real. */
static bool job_update_state(Job *j) {
        if (j->phase != PHASE_ACTIVE)
                return true;
        if (j->qemu_paused && j->user_paused)
                return job_set_state(j, JOB_STATE_PAUSED, j->qemu_ready);
        return job_set_state(j, j->qemu_ready ? JOB_STATE_READY : JOB_STATE_RUNNING, j->qemu_ready);
}

/* A QEMU job status, from JOB_STATUS_CHANGE or query-jobs (polled);
 * idempotent. */
static void job_apply_status_full(Job *j, const char *status, bool polled) {
        JobTracker *t = j->tracker;

        if (!job_alive(j, t))
                return;
        if (streq(status, "null"))
                return job_vanished(j);
        if (j->phase >= PHASE_CONCLUDED)
                return;
        if (streq(status, "concluded"))
                return job_conclude(j);
        if (j->phase >= PHASE_FINALIZING)
                return;

        if (streq(status, "aborting")) {
                j->status_aborting = true;
                job_rate_reset(j);
                tracker_update_polling(t);
                return;
        }
        if (streq(status, "pending") && j->auto_finalize)
                status = "running"; /* QEMU finalizes it: nothing waits for us */
        if (streq(status, "pending")) {
                if (j->phase != PHASE_ACTIVE)
                        return;
                j->phase = PHASE_PENDING;
                /* BLOCK_JOB_PENDING has no figures and the last poll may be
                 * 150 ms old: fetch the final ones once. */
                t->sync_wanted = true;
                if (!job_set_state(j, JOB_STATE_PENDING, false))
                        return;
                /* Still waiting? The owner may have finalized from state_changed. */
                if (j->phase == PHASE_PENDING)
                        (void) notify(t, j, pending);
                return;
        }
        if (j->phase != PHASE_ACTIVE)
                return;

        /* "created", "undefined" and statuses of newer QEMUs change nothing. */
        if (!STR_IN_SET(status, "running", "waiting", "paused", "standby", "ready"))
                return;
        j->qemu_paused = STR_IN_SET(status, "paused", "standby"); /* standby: paused after READY */
        j->qemu_ready = STR_IN_SET(status, "ready", "standby");
        /* Resumed, by whoever: an event says so. A poll answered before a
         * job-pause took effect still says "running" and must not undo it. */
        if (!j->qemu_paused && !polled)
                j->user_paused = false;
        (void) job_update_state(j);
}

static void job_apply_status(Job *j, const char *status) {
        job_apply_status_full(j, status, false);
}

/* ---- events ---- */

static void on_event(Qmp *qmp, const char *event, json_object *data, uint64_t timestamp, void *userdata) {
        _unused_ _cleanup_(tracker_releasep) JobTracker *t = tracker_hold(userdata);
        _cleanup_(job_unrefp) Job *j = NULL;
        QmpBlockJobEvent e;

        if (t->freed || t->disconnected)
                return;

        if (streq(event, "JOB_STATUS_CHANGE")) {
                const char *id, *status;

                if (qmp_parse_job_status_change(data, &id, &status) < 0) {
                        log_debug("Ignoring a malformed JOB_STATUS_CHANGE event.");
                        return;
                }
                j = job_ref(job_tracker_find(t, id));
                if (!j)
                        return;
                /* The first READY of a block job comes with its figures in
                 * BLOCK_JOB_READY, right after: take it from there, so that
                 * ready() sees Cur at End. */
                if (streq(status, "ready") && !j->ready_notified && job_type_is_block_job(j->type))
                        return;
                job_apply_status(j, status);
                return;
        }
        /* Only the ones we know: a newer QEMU's event may mean anything. */
        if (!STR_IN_SET(event, "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_PENDING",
                        "BLOCK_JOB_ERROR"))
                return;
        if (qmp_parse_block_job_event(data, &e) < 0) {
                log_debug("Ignoring a malformed %s event.", event);
                return;
        }
        j = job_ref(job_tracker_find(t, e.id));
        if (!j || j->phase == PHASE_FINISHED)
                return;

        if (streq(event, "BLOCK_JOB_ERROR")) {
                /* No text here: QEMU's reason comes with the end. With
                 * on-error=stop the job waits for a resume, as after
                 * job-pause. */
                log_warning("Job %s: I/O error on %s (action: %s).", j->id, strna(e.operation), strna(e.action));
                if (streq_ptr(e.action, "stop") && j->phase == PHASE_ACTIVE) {
                        j->user_paused = true;
                        (void) job_update_state(j);
                }
                return;
        }
        if (e.has_progress && !job_set_progress(j, e.offset, e.len, false))
                return;

        if (streq(event, "BLOCK_JOB_COMPLETED")) {
                j->completed_seen = j->end_known = true;
                if (e.error && free_and_strdup(&j->end_error, e.error) < 0)
                        log_oom();
        } else if (streq(event, "BLOCK_JOB_CANCELLED"))
                j->cancelled_seen = j->end_known = true;
        else if (streq(event, "BLOCK_JOB_READY"))
                job_apply_status(j, "ready");
        else if (streq(event, "BLOCK_JOB_PENDING"))
                job_apply_status(j, "pending");
}

/* ---- replies ---- */

/* QEMU's words for a failed command, or ours. */
const char *job_call_error_message(int error, const char *desc) {
        if (error == -QSNAP_E_QEMU_FAILED)
                return strna(desc);
        if (error == -ECONNRESET)
                return MESSAGE_GONE;
        return qsnap_strerror(error);
}

static void tracker_on_poll(JobTracker *t, Call *c, int error, json_object *result, const char *desc) {
        _cleanup_free_ QmpJobInfo *infos = NULL;
        Job **jobs;
        size_t n = 0, m = 0;
        int r;

        t->poll_in_flight = false;
        if (error < 0) {
                log_warning("query-jobs failed: %s", job_call_error_message(error, desc));
                return tracker_update_polling(t);
        }
        r = qmp_parse_query_jobs_all(result, &infos, &n);
        if (r < 0) {
                log_warning_errno(r, "Cannot understand the query-jobs reply: %m");
                return tracker_update_polling(t);
        }

        /* Callbacks may end, add or free jobs: walk a copy. */
        jobs = job_list_snapshot(t, &m);
        if (!jobs) {
                log_oom();
                return tracker_update_polling(t);
        }
        for (size_t i = 0; i < m && !t->freed; i++) {
                Job *j = jobs[i];
                const QmpJobInfo *info = NULL;

                if (!job_alive(j, t))
                        continue;
                for (size_t k = 0; k < n && !info; k++)
                        if (streq(infos[k].id, j->id))
                                info = infos + k;
                if (!info) {
                        /* Only a poll sent after the job was added must find it. */
                        if (c->value > j->add_seq)
                                job_vanished(j);
                        continue;
                }
                if (info->error && free_and_strdup(&j->end_error, info->error) < 0)
                        log_oom();
                if (streq(info->status, "concluded"))
                        j->end_known = true;
                if (!job_set_progress(j, info->current, info->total, true))
                        continue;
                job_apply_status_full(j, info->status, true);
        }
        job_list_free(jobs, m);
        if (!t->freed)
                tracker_update_polling(t);
}

Job *job_new(const char *id, JobType type, const char *disk, uint64_t bandwidth) {
        Job *j = new0(Job, 1);

        if (!j)
                return NULL;
        *j = (Job) {
                .n_ref = 1,
                .type = type,
                .state = JOB_STATE_RUNNING,
                .bandwidth = bandwidth,
                .start_time = now_usec(CLOCK_REALTIME),
                .phase = PHASE_ACTIVE,
                .id = strdup(id),
                .disk = disk ? strdup(disk) : NULL,
        };
        if (!j->id || (disk && !j->disk)) {
                free(j->id);
                free(j->disk);
                free(j);
                return NULL;
        }
        return j;
}

Job *job_new_local(const char *id, JobType type, const char *disk) {
        Job *j = job_new(id, type, disk, 0);

        if (j) {
                j->local = true;
                j->phase = PHASE_FINISHED;
        }
        return j;
}

void job_local_update(Job *j, JobState state, uint64_t cur, uint64_t end, const char *error) {
        uint64_t now = now_usec(CLOCK_REALTIME);

        assert(j->local);
        if (state == JOB_STATE_RUNNING && cur > j->cur && now > j->start_time) {
                j->rate = (uint64_t) ((double) cur * USEC_PER_SEC / (double) (now - j->start_time));
                j->eta = j->rate > 0 && end > cur ? (end - cur) / j->rate : 0;
        }
        if (state != JOB_STATE_RUNNING)
                j->rate = j->eta = 0;
        j->state = state;
        j->cur = cur;
        j->end = end;
        if (error && !j->error)
                j->error = strdup(error);
}

/* The reply to a job_*() call: done() after our own bookkeeping. */
static void tracker_on_op_reply(JobTracker *t, Call *c, int error, const char *desc) {
        Job *j = c->job;

        if (error < 0) {
                log_warning("Job %s: %s failed: %s", j->id, call_command(c), job_call_error_message(error, desc));
                if (c->kind == CALL_COMPLETE)
                        j->pivoting = false;
                else if (c->kind == CALL_CANCEL)
                        j->aborting = j->soft_cancel = false;
        } else if (c->kind == CALL_SET_SPEED && j->bandwidth != c->value) {
                j->bandwidth = c->value;
                if (job_alive(j, t))
                        (void) notify(t, j, state_changed);
        } else if (c->kind == CALL_PAUSE || c->kind == CALL_RESUME) {
                j->user_paused = c->kind == CALL_PAUSE;
                if (job_alive(j, t))
                        (void) job_update_state(j);
        }
        /* Exactly once, even when the owner freed the tracker meanwhile. */
        if (c->done)
                c->done(j, error, error < 0 ? job_call_error_message(error, desc) : NULL, c->userdata);
}

static void tracker_on_finalize_reply(JobTracker *t, Call *c, int error, const char *desc) {
        Job *j = c->job;
        int r;

        if (error >= 0 || !job_alive(j, t) || j->phase != PHASE_FINALIZING)
                return;

        if (c->kind == CALL_FINALIZE) {
                /* Then it cannot end well: cancel it, keeping QEMU's reason. */
                log_warning("Job %s: job-finalize failed: %s", j->id, desc);
                if (!j->fail_reason && free_and_strdup(&j->fail_reason, desc) < 0)
                        log_oom();
                r = tracker_call(t, CALL_FINALIZE_CANCEL, j, 0, NULL, NULL, NULL);
                if (r >= 0)
                        return;
                log_warning_errno(r, "Job %s: failed to send job-cancel: %m", j->id);
        } else
                log_warning("Job %s: job-cancel failed, leaving it in QEMU: %s", j->id, desc);
        job_end(j, JOB_STATE_FAILED, j->fail_reason ?: desc);
}

static void tracker_on_conclude_query(JobTracker *t, Job *j, int error, json_object *result, const char *desc) {
        QmpJobInfo info;
        int r = -EBADMSG;

        if (error >= 0)
                r = qmp_parse_query_jobs(result, j->id, &info);
        if (r > 0 && info.error && free_and_strdup(&j->end_error, info.error) < 0)
                log_oom();
        else if (r <= 0) /* dismiss anyway: a concluded job is no use to anyone */
                log_warning("Job %s: cannot learn how it ended: %s", j->id,
                            error < 0 ? job_call_error_message(error, desc) : r == 0 ? "not in query-jobs" : "bad reply");
        job_dismiss(j);
}

static void on_call_reply(Qmp *qmp, int error, json_object *result, const char *err_class, const char *err_desc, void *userdata) {
        Call *c = userdata;
        _unused_ _cleanup_(tracker_releasep) JobTracker *t = tracker_hold(c->tracker);

        tracker_unlink_call(t, c);
        if (error == -ECONNRESET)
                tracker_connection_lost(t);

        switch (c->kind) {
        case CALL_POLL:
                if (!t->freed)
                        tracker_on_poll(t, c, error, result, err_desc);
                break;
        case CALL_ADOPT_JOBS:
        case CALL_ADOPT_BLOCK_JOBS:
                if (!t->freed)
                        tracker_on_adopt_reply(t, c, error, result, err_desc);
                break;
        case CALL_COMPLETE:
        case CALL_CANCEL:
        case CALL_SET_SPEED:
        case CALL_PAUSE:
        case CALL_RESUME:
                tracker_on_op_reply(t, c, error, err_desc);
                break;
        case CALL_FINALIZE:
        case CALL_FINALIZE_CANCEL:
                if (!t->freed && error != -ECONNRESET)
                        tracker_on_finalize_reply(t, c, error, err_desc);
                break;
        case CALL_CONCLUDE_QUERY:
                if (t->freed || !job_alive(c->job, t) || c->job->phase != PHASE_CONCLUDED)
                        break;
                tracker_on_conclude_query(t, c->job, error, result, err_desc);
                break;
        case CALL_DISMISS:
                if (t->freed || !job_alive(c->job, t) || c->job->phase != PHASE_CONCLUDED)
                        break;
                if (error < 0)
                        log_warning("Job %s: job-dismiss failed: %s", c->job->id, job_call_error_message(error, err_desc));
                job_end_with_outcome(c->job);
                break;
        }
        tracker_call_free(c);
}

/* ---- connection ---- */

static void tracker_connection_lost(JobTracker *t) {
        Job **jobs;
        size_t m = 0;

        if (t->freed || t->disconnected)
                return;
        t->disconnected = true;
        t->sync_wanted = false;
        (void) sd_event_source_set_enabled(t->poll_timer, SD_EVENT_OFF);
        log_debug("QMP connection lost: ending %s block jobs.", t->jobs ? "the" : "no");

        jobs = job_list_snapshot(t, &m);
        if (!jobs) {
                log_oom();
                return;
        }
        for (size_t i = 0; i < m && !t->freed; i++) {
                Job *j = jobs[i];

                if (!job_alive(j, t))
                        continue;
                /* A job seen ending before QEMU went ends as it did:
                 * the images on disk were changed (or not) already. */
                if (j->phase >= PHASE_FINALIZING && j->end_known) {
                        if (job_note_pivot(j))
                                job_end_with_outcome(j);
                } else
                        job_end(j, JOB_STATE_FAILED, MESSAGE_GONE);
        }
        job_list_free(jobs, m);
}

void job_tracker_disconnected(JobTracker *t) {
        _unused_ _cleanup_(tracker_releasep) JobTracker *hold = NULL;

        if (!t || t->freed)
                return;
        hold = tracker_hold(t);
        tracker_connection_lost(t);
}

/* ---- the tracker ---- */

int job_tracker_new(Qmp *qmp, sd_event *event, const JobObserver *o, void *userdata, JobTracker **ret) {
        JobTracker *t;
        int r;

        if (!qmp || !event || !ret)
                return -EINVAL;
        t = new0(JobTracker, 1);
        if (!t)
                return -ENOMEM;
        t->n_ref = 1;
        t->qmp = qmp_ref(qmp);
        t->event = sd_event_ref(event);
        if (o)
                t->observer = *o;
        t->userdata = userdata;
        t->poll_interval = JOB_POLL_INTERVAL_DEFAULT;

        r = sd_event_add_time(event, &t->poll_timer, CLOCK_MONOTONIC, 0, USEC_PER_MSEC, on_poll_timer, t);
        if (r >= 0) {
                (void) sd_event_source_set_description(t->poll_timer, "job-poll");
                r = sd_event_source_set_enabled(t->poll_timer, SD_EVENT_OFF);
        }
        if (r >= 0) {
                r = qmp_subscribe(qmp, NULL, on_event, t);
                if (r >= 0)
                        t->subscription = r;
        }
        if (r < 0) {
                job_tracker_free(t);
                return log_error_errno(r, "Failed to set up the block job tracker: %m");
        }
        *ret = t;
        return 0;
}

JobTracker *job_tracker_free(JobTracker *t) {
        Call *calls;

        if (!t || t->freed)
                return NULL;
        t->freed = true;

        if (t->subscription > 0)
                (void) qmp_unsubscribe(t->qmp, t->subscription);
        t->poll_timer = sd_event_source_disable_unref(t->poll_timer);
        while (t->jobs) {
                Job *j = t->jobs;

                t->jobs = j->next;
                j->next = NULL;
                j->tracker = NULL;
                (void) sd_event_source_set_enabled(j->progress_timer, SD_EVENT_OFF);
                /* An owner hears that its step goes on without us. */
                if (j->owned && j->phase != PHASE_FINISHED && j->owner.detached)
                        j->owner.detached(j, j->owner_userdata);
                job_unref(j);
        }
        t->jobs_tail = NULL;
        json_object_put(TAKE_PTR(t->adopt_jobs));
        json_object_put(TAKE_PTR(t->adopt_block_jobs));
        t->adopt_done = NULL;

        /* Outstanding calls: their replies will not come; a caller waiting
         * in done() hears why. */
        calls = TAKE_PTR(t->calls);
        for (Call *c = calls; c; c = c->next)
                (void) qmp_cancel(t->qmp, c->id);
        while (calls) {
                Call *c = calls;

                calls = c->next;
                if (c->done)
                        c->done(c->job, -QSNAP_E_OPERATION_INVALID, "qsnapd stopped tracking the job", c->userdata);
                tracker_call_free(c);
        }

        t->qmp = qmp_unref(t->qmp);
        t->event = sd_event_unref(t->event);
        tracker_release(t);
        return NULL;
}

void job_tracker_set_poll_interval(JobTracker *t, uint64_t usec) {
        t->poll_interval = usec ?: JOB_POLL_INTERVAL_DEFAULT;
}

int job_tracker_add_job(JobTracker *t, const char *id, const JobSpec *spec, Job **ret) {
        Job *j;

        if (!t || t->freed || isempty(id) || !spec || spec->type < 0 || spec->type >= _JOB_TYPE_MAX)
                return -EINVAL;
        if (t->disconnected || !qmp_is_connected(t->qmp))
                return -ENOTCONN;
        if (job_tracker_find(t, id))
                return -QSNAP_E_ALREADY_EXISTS;

        j = job_new(id, spec->type, spec->disk, spec->bandwidth);
        if (!j)
                return -ENOMEM;
        j->auto_finalize = spec->auto_finalize;
        if (spec->observer) {
                j->owned = true;
                j->owner = *spec->observer;
                j->owner_userdata = spec->observer_userdata;
        }
        j->add_seq = t->poll_seq;
        tracker_link(t, j);
        log_debug("Tracking job %s (%s on %s%s).", id, job_type_to_string(spec->type), strna(spec->disk),
                  j->owned ? ", owned" : "");

        /* Sync at once: events before the add were not ours to see. */
        t->sync_wanted = true;
        tracker_update_polling(t);
        if (ret)
                *ret = j;
        return 0;
}

int job_tracker_add(JobTracker *t, const char *id, JobType type, const char *disk, uint64_t bandwidth, Job **ret) {
        return job_tracker_add_job(t, id, &(JobSpec) { .type = type, .disk = disk, .bandwidth = bandwidth }, ret);
}

/* ---- the owner's calls ---- */
