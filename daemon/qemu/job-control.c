/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The owner's calls on a job: pivot (job-complete), abort (block-job-cancel
 * or job-cancel; a local job's own abort), bandwidth, pause and resume,
 * finalize after pending(), disown, and what the owner knows better than
 * QEMU (adoption). Each checks the job can take it now, then the tracker
 * sends the command and reports the answer through the done callback.
 */
#include <stdio.h>

#include "qemu/job-internal.h"
#include "util/error.h"
#include "util/util.h"

void job_disown(Job *j) {
        if (!j || !j->owned)
                return;
        j->owner = (JobObserver) {};
        j->owner_userdata = NULL;
}

int job_claim(Job *j, const JobObserver *observer, void *userdata) {
        if (!j || !observer || j->owned || j->local || !j->tracker || j->phase == PHASE_FINISHED)
                return -QSNAP_E_OPERATION_INVALID;
        j->owned = true;
        j->owner = *observer;
        j->owner_userdata = userdata;
        return 0;
}

int job_set_disk(Job *j, const char *disk) {
        return free_and_strdup(&j->disk, disk);
}

void job_set_type(Job *j, JobType type) {
        if (type >= 0 && type < _JOB_TYPE_MAX)
                j->type = type;
}

void job_set_start_time(Job *j, uint64_t realtime_usec) {
        j->start_time = realtime_usec;
}

/* May a call act on j now? */
static int job_check_active(Job *j, const char *verb, char **ret_message) {
        if (j->local)
                return error_message(ret_message, -QSNAP_E_UNSUPPORTED, "Job '%s' is qsnapd's own %s job: it cannot be %s; it ends by itself.",
                                   j->id, job_type_to_string(j->type), verb);
        if (!j->tracker || j->phase == PHASE_FINISHED)
                return error_message(ret_message, -QSNAP_E_OPERATION_INVALID, "Job '%s' has ended (%s): it can no longer be %s.", j->id,
                                   job_state_to_string(j->state), verb);
        if (j->tracker->disconnected)
                return error_message(ret_message, -ENOTCONN, MESSAGE_GONE);
        if (j->phase != PHASE_ACTIVE)
                return error_message(ret_message, -QSNAP_E_OPERATION_INVALID, "Job '%s' is finishing (%s): it can no longer be %s.", j->id,
                                   job_state_to_string(j->state), verb);
        return 0;
}

static int job_send(Job *j, CallKind kind, uint64_t value, JobDoneFunc done, void *userdata, const char *command,
                    char **ret_message) {
        int r;

        r = tracker_call(j->tracker, kind, j, value, done, userdata, NULL);
        if (r == -ENOTCONN)
                return error_message(ret_message, r, MESSAGE_GONE);
        if (r < 0)
                return error_message(ret_message, log_error_errno(r, "Job %s: failed to send %s: %m", j->id, command),
                                   "Failed to send %s: %s", command, strerror(-r));
        return 0;
}

int job_pivot(Job *j, JobDoneFunc done, void *userdata, char **ret_message) {
        int r;

        r = job_check_active(j, "pivoted", ret_message);
        if (r < 0)
                return r;
        if (j->pivoting)
                return error_message(ret_message, -QSNAP_E_BUSY, "Job '%s' is pivoting already.", j->id);
        if (j->aborting)
                return error_message(ret_message, -QSNAP_E_OPERATION_INVALID, "Job '%s' is being aborted: it can no longer be pivoted.",
                                     j->id);
        if (j->state != JOB_STATE_READY)
                return error_message(ret_message, -QSNAP_E_OPERATION_INVALID,
                                   "Job '%s' is not ready to pivot (it is %s): wait for its Ready signal; "
                                   "Cur reaching End is not enough.",
                                   j->id, job_state_to_string(j->state));
        r = job_send(j, CALL_COMPLETE, 0, done, userdata, "job-complete", ret_message);
        if (r < 0)
                return r;
        j->pivoting = true;
        return 0;
}

int job_abort(Job *j, bool pivot, JobDoneFunc done, void *userdata, char **ret_message) {
        int r;

        if (j->local && !pivot && j->local_abort && !job_state_is_final(j->state)) {
                r = j->local_abort(j, j->local_abort_data);
                if (r == -QSNAP_E_OPERATION_INVALID)
                        return error_message(ret_message, r, "Job '%s' is finishing (its last step switches the disk "
                                             "to its result): it can no longer be aborted.", j->id);
                if (r < 0)
                        return error_message(ret_message, r, "Job '%s' cannot be aborted now.", j->id);
                return 1;
        }
        if (pivot)
                return job_pivot(j, done, userdata, ret_message);
        r = job_check_active(j, "aborted", ret_message);
        if (r < 0)
                return r;
        if (j->aborting)
                return error_message(ret_message, -QSNAP_E_BUSY, "Job '%s' is being aborted already.", j->id);
        /* A cancel after job-complete does not stop QEMU's pivot (a READY
         * mirror takes it as "complete without pivot" only before): the
         * job would end pivoted while reported aborted. */
        if (j->pivoting)
                return error_message(ret_message, -QSNAP_E_OPERATION_INVALID, "Job '%s' is pivoting: it can no longer be aborted.",
                                     j->id);
        r = job_send(j, CALL_CANCEL, 0, done, userdata, "block-job-cancel", ret_message);
        if (r < 0)
                return r;
        j->aborting = true;
        j->soft_cancel = j->ready && (j->type == JOB_TYPE_COPY || j->type == JOB_TYPE_ACTIVE_COMMIT);
        return 0;
}

int job_set_speed(Job *j, uint64_t bandwidth, JobDoneFunc done, void *userdata, char **ret_message) {
        int r;

        r = job_check_active(j, "throttled", ret_message);
        if (r < 0)
                return r;
        if (!job_type_is_block_job(j->type))
                return error_message(ret_message, -QSNAP_E_UNSUPPORTED, "A %s job has no bandwidth to set.",
                                   job_type_to_string(j->type));
        if (bandwidth > INT64_MAX)
                return error_message(ret_message, -QSNAP_E_INVALID_ARGUMENT, "Bandwidth %" PRIu64 " is out of range (at most %" PRIi64 ").",
                                     bandwidth, INT64_MAX);
        return job_send(j, CALL_SET_SPEED, bandwidth, done, userdata, "block-job-set-speed", ret_message);
}

int job_pause(Job *j, JobDoneFunc done, void *userdata, char **ret_message) {
        int r;

        r = job_check_active(j, "paused", ret_message);
        if (r < 0)
                return r;
        if (j->user_paused)
                return 1;
        return job_send(j, CALL_PAUSE, 0, done, userdata, "job-pause", ret_message);
}

int job_resume(Job *j, JobDoneFunc done, void *userdata, char **ret_message) {
        int r;

        r = job_check_active(j, "resumed", ret_message);
        if (r < 0)
                return r;
        if (!j->user_paused)
                return 1;
        return job_send(j, CALL_RESUME, 0, done, userdata, "job-resume", ret_message);
}

int job_finalize(Job *j, bool commit, const char *reason) {
        int r;

        if (!j || !j->tracker || j->phase != PHASE_PENDING || j->tracker->disconnected)
                return -QSNAP_E_OPERATION_INVALID;
        if (!commit && reason && free_and_strdup(&j->fail_reason, reason) < 0)
                return log_oom();
        r = tracker_call(j->tracker, commit ? CALL_FINALIZE : CALL_FINALIZE_CANCEL, j, 0, NULL, NULL, NULL);
        if (r < 0)
                return log_error_errno(r, "Job %s: failed to send %s: %m", j->id, commit ? "job-finalize" : "job-cancel");
        j->phase = PHASE_FINALIZING;
        return 0;
}
