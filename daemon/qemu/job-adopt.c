/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job tracker's adoption of the jobs a QEMU runs when qsnapd
 * (re)connects: query-jobs and query-block-jobs, a Job for every job of a
 * kind we know, in the state QEMU says; the owner learns them first
 * (done), then jobs found pending get pending() and concluded ones are
 * dismissed and reported.
 */
#include <stdio.h>

#include "qemu/job-internal.h"
#include "util/error.h"
#include "util/util.h"

/* QEMU's job type, for adoption; the owner corrects it from its journal.
 * Only an active commit reaches READY. */
static JobType job_type_from_qemu(const char *type, const char *status) {
        if (!type)
                return _JOB_TYPE_INVALID;
        if (streq(type, "commit"))
                return STR_IN_SET(status, "ready", "standby") ? JOB_TYPE_ACTIVE_COMMIT : JOB_TYPE_COMMIT;
        if (streq(type, "stream"))
                return JOB_TYPE_PULL;
        if (streq(type, "mirror"))
                return JOB_TYPE_COPY;
        if (streq(type, "backup"))
                return JOB_TYPE_BACKUP;
        if (streq(type, "snapshot-save"))
                return JOB_TYPE_SNAPSHOT_CREATE;
        if (streq(type, "snapshot-load"))
                return JOB_TYPE_SNAPSHOT_REVERT;
        if (streq(type, "snapshot-delete"))
                return JOB_TYPE_SNAPSHOT_DELETE;
        return _JOB_TYPE_INVALID;
}

static void tracker_adopt_finish(JobTracker *t) {
        _cleanup_(json_object_putp) json_object *jobs_reply = TAKE_PTR(t->adopt_jobs),
                                                *block_reply = TAKE_PTR(t->adopt_block_jobs);
        _cleanup_free_ QmpJobInfo *infos = NULL;
        _cleanup_free_ QmpBlockJobInfo *binfos = NULL;
        JobAdoptFunc done = t->adopt_done;
        void *userdata = t->adopt_userdata;
        size_t n = 0, nb = 0, m = 0;
        Job **adopted = NULL;
        int r = t->adopt_error;

        t->adopting = false;
        t->adopt_done = NULL;
        t->adopt_userdata = NULL;
        t->adopt_error = 0;
        t->adopt_replies = 0;

        if (r >= 0)
                r = qmp_parse_query_jobs_all(jobs_reply, &infos, &n);
        /* query-block-jobs only adds the speed: do without it if it failed. */
        if (r >= 0 && block_reply && qmp_parse_query_block_jobs(block_reply, &binfos, &nb) < 0)
                log_warning("Cannot understand the query-block-jobs reply; bandwidths unknown.");
        if (r >= 0) {
                adopted = new0(Job *, n);
                if (!adopted)
                        r = -ENOMEM;
        }

        for (size_t i = 0; r >= 0 && i < n; i++) {
                const QmpJobInfo *info = infos + i;
                JobType type = job_type_from_qemu(info->type, info->status);
                uint64_t speed = 0;
                bool paused = true; /* no block job: trust the status */
                Job *j;

                if (job_tracker_find(t, info->id) || streq(info->status, "null"))
                        continue;
                if (type < 0) {
                        log_info("Leaving QEMU job %s alone: its type %s is not one of ours.", info->id, strna(info->type));
                        continue;
                }
                for (size_t k = 0; k < nb; k++)
                        if (streq(binfos[k].id, info->id)) {
                                speed = binfos[k].speed;
                                paused = binfos[k].paused;
                        }
                j = job_new(info->id, type, NULL, speed);
                if (!j || (info->error && free_and_strdup(&j->end_error, info->error) < 0)) {
                        job_unref(j);
                        r = -ENOMEM;
                        break;
                }
                j->adopted = true;
                j->auto_finalize = STR_IN_SET(info->type, "snapshot-save", "snapshot-load", "snapshot-delete");
                j->cur = j->reported_cur = info->current;
                j->end = j->reported_end = info->total;
                j->add_seq = t->poll_seq;

                if (streq(info->status, "pending") && !j->auto_finalize) {
                        j->phase = PHASE_PENDING;
                        j->state = JOB_STATE_PENDING;
                } else if (streq(info->status, "concluded")) {
                        const char *error;

                        j->phase = PHASE_CONCLUDED;
                        j->end_known = true;
                        j->state = job_outcome(j, &error);
                        if (error && free_and_strdup(&j->error, error) < 0) {
                                job_unref(j);
                                r = -ENOMEM;
                                break;
                        }
                } else {
                        j->qemu_paused = STR_IN_SET(info->status, "paused", "standby");
                        j->qemu_ready = j->ready = j->ready_notified = STR_IN_SET(info->status, "ready", "standby");
                        j->user_paused = j->qemu_paused && paused;
                        j->state = j->qemu_paused && j->user_paused ? JOB_STATE_PAUSED
                                 : j->qemu_ready                   ? JOB_STATE_READY
                                                                   : JOB_STATE_RUNNING;
                        j->status_aborting = streq(info->status, "aborting");
                }

                log_info("Adopted QEMU job %s (%s, %s).", j->id, job_type_to_string(j->type), info->status);
                tracker_link(t, j); /* takes the reference */
                adopted[m++] = job_ref(j);
        }

        if (r < 0)
                log_error_errno(r, "Failed to adopt the jobs QEMU runs: %m");
        if (done)
                done(t, r < 0 ? r : 0, userdata);

        /* The owner knows them now: finish what waits. */
        for (size_t i = 0; i < m && !t->freed; i++) {
                Job *j = adopted[i];

                if (!job_alive(j, t))
                        continue;
                if (j->phase == PHASE_PENDING)
                        (void) notify(t, j, pending);
                else if (j->phase == PHASE_CONCLUDED)
                        job_dismiss(j);
        }
        job_list_free(adopted, m);
        if (!t->freed)
                tracker_update_polling(t);
}

void tracker_on_adopt_reply(JobTracker *t, Call *c, int error, json_object *result, const char *desc) {
        if (error < 0) {
                if (c->kind == CALL_ADOPT_JOBS) {
                        log_error("query-jobs failed: %s", job_call_error_message(error, desc));
                        t->adopt_error = error;
                }
        } else if (c->kind == CALL_ADOPT_JOBS)
                t->adopt_jobs = json_object_get(result);
        else
                t->adopt_block_jobs = json_object_get(result);
        if (++t->adopt_replies == 2)
                tracker_adopt_finish(t);
}

int job_tracker_adopt(JobTracker *t, JobAdoptFunc done, void *userdata) {
        Call *c = NULL;
        int r;

        if (!t || t->freed)
                return -EINVAL;
        if (t->disconnected || !qmp_is_connected(t->qmp))
                return -ENOTCONN;
        if (t->adopting)
                return -QSNAP_E_BUSY;

        r = tracker_call(t, CALL_ADOPT_JOBS, NULL, 0, NULL, NULL, &c);
        if (r < 0)
                return log_error_errno(r, "Failed to send query-jobs: %m");
        r = tracker_call(t, CALL_ADOPT_BLOCK_JOBS, NULL, 0, NULL, NULL, NULL);
        if (r < 0) {
                (void) qmp_cancel(t->qmp, c->id);
                tracker_unlink_call(t, c);
                tracker_call_free(c);
                return log_error_errno(r, "Failed to send query-block-jobs: %m");
        }
        t->adopting = true;
        t->adopt_done = done;
        t->adopt_userdata = userdata;
        return 0;
}
