/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The job tracker's progress reports: at most 10 a second, at least one
 * per 5 % of End or per second while a job moves, reported before a state
 * change so that Progress reaches the end before Ready or the end; and the
 * measured rate (smoothed with a time constant of 2 s, whatever the poll
 * period) with the ETA it gives.
 */
#include <stdio.h>

#include "qemu/job-internal.h"
#include "util/error.h"
#include "util/util.h"

static bool job_progress_dirty(Job *j) {
        return j->cur != j->reported_cur || j->end != j->reported_end;
}

/* Moved by 5 % of End since the last report, or reached the end. */
static bool job_progress_big_step(Job *j) {
        double now, before, d;

        if (j->end == 0)
                return false;
        if (j->cur >= j->end)
                return true;
        now = (double) j->cur / (double) j->end;
        before = j->reported_end > 0 ? (double) j->reported_cur / (double) j->reported_end : 0.0;
        d = now > before ? now - before : before - now;
        return d >= PROGRESS_STEP - 1e-9;
}

static bool job_progress_emit(Job *j) {
        JobTracker *t = j->tracker;

        j->reported_cur = j->cur;
        j->reported_end = j->end;
        j->reported_usec = now_usec(CLOCK_MONOTONIC);
        (void) sd_event_source_set_enabled(j->progress_timer, SD_EVENT_OFF);
        return notify(t, j, progress) && job_alive(j, t);
}

/* Reports now what is not reported yet, rate limit or not (before a
 * state change, so that Progress reaches the end before Ready or the end). */
bool job_progress_flush(Job *j) {
        return job_progress_dirty(j) ? job_progress_emit(j) : true;
}

static int on_progress_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        _cleanup_(job_unrefp) Job *j = job_ref(userdata);
        _unused_ _cleanup_(tracker_releasep) JobTracker *t = NULL;

        if (!j->tracker)
                return 0;
        t = tracker_hold(j->tracker);
        (void) job_progress_flush(j);
        return 0;
}

/* Reports a change now, or arms the timer for when the rate limit allows
 * it: 100 ms after the last report for a 5 % step, 1 s for a smaller one. */
static bool job_progress_schedule(Job *j) {
        uint64_t now = now_usec(CLOCK_MONOTONIC), deadline;
        int r;

        if (!job_progress_dirty(j)) {
                (void) sd_event_source_set_enabled(j->progress_timer, SD_EVENT_OFF);
                return true;
        }
        deadline = j->reported_usec + (job_progress_big_step(j) ? PROGRESS_MIN_INTERVAL : PROGRESS_MAX_INTERVAL);
        if (j->reported_usec == 0 || now >= deadline)
                return job_progress_emit(j);

        if (!j->progress_timer)
                r = sd_event_add_time(j->tracker->event, &j->progress_timer, CLOCK_MONOTONIC, deadline, USEC_PER_MSEC,
                                      on_progress_timer, j);
        else {
                r = sd_event_source_set_time(j->progress_timer, deadline);
                if (r >= 0)
                        r = sd_event_source_set_enabled(j->progress_timer, SD_EVENT_ONESHOT);
        }
        if (r < 0) {
                log_warning_errno(r, "Job %s: failed to arm the progress timer, reporting now: %m", j->id);
                return job_progress_emit(j);
        }
        return true;
}

void job_rate_reset(Job *j) {
        j->sample_usec = 0;
        j->rate_seeded = false;
        j->rate_f = 0;
        j->rate = j->eta = 0;
}

/* One more (time, cur) sample of a running job: the rate is smoothed
 * with a time constant of 2 s, whatever the poll period. */
static void job_rate_sample(Job *j, uint64_t now) {
        double inst, alpha;
        uint64_t dt;

        if (j->sample_usec == 0 || j->cur < j->sample_cur || now <= j->sample_usec) {
                j->sample_cur = j->cur;
                j->sample_usec = now;
                return;
        }
        dt = now - j->sample_usec;
        if (dt < USEC_PER_MSEC)
                return;
        inst = (double) (j->cur - j->sample_cur) * (double) USEC_PER_SEC / (double) dt;
        j->sample_cur = j->cur;
        j->sample_usec = now;

        /* Seed with the first real movement, not with a job still starting. */
        if (!j->rate_seeded) {
                if (inst <= 0)
                        return;
                j->rate_f = inst;
                j->rate_seeded = true;
        } else {
                alpha = (double) dt / (double) (RATE_TIME_CONSTANT + dt);
                j->rate_f += alpha * (inst - j->rate_f);
        }
        j->rate = (uint64_t) (j->rate_f + 0.5);
        j->eta = j->rate > 0 && j->end > j->cur ? (j->end - j->cur + j->rate - 1) / j->rate : 0;
}

/* New progress figures (from a poll when `sample`, or an event). */
bool job_set_progress(Job *j, uint64_t cur, uint64_t end, bool sample) {
        bool changed = cur != j->cur || end != j->end;

        j->cur = cur;
        j->end = end;
        if (sample && j->state == JOB_STATE_RUNNING && j->phase == PHASE_ACTIVE)
                job_rate_sample(j, now_usec(CLOCK_MONOTONIC));
        return changed ? job_progress_schedule(j) : true;
}
