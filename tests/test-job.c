/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block job tracker (daemon/qemu/job.c) against a scripted fake QEMU on the
 * other end of a socketpair(), both driven by one sd-event loop: the peer
 * checks every command the tracker sends (exact JSON) and answers with
 * the events and replies QEMU 7.2 gives, in its order. Observer and done
 * callbacks append lines to a record that the tests compare in order;
 * progress callbacks go to a separate, timestamped log because their
 * timing is the thing tested. Ends with a block-stream and a mirror
 * aborted after READY through the tracker against a real
 * qemu-system-x86_64 (its absence is a failure, not a skip).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/param.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "qemu/child.h"
#include "qemu/job.h"
#include "qemu/qmp-commands.h"
#include "qemu/qmp.h"
#include "util/util.h"

#include "fake-qmp.h"
#include "real-qemu.h"

#define MiB (UINT64_C(1024) * UINT64_C(1024))
#define LONG_POLL (60 * USEC_PER_SEC) /* only the sync polls come */

/* ---- the owner ---- */

typedef struct ProgressSample {
        uint64_t usec, cur, end;
        uint64_t stalled; /* stalled_usec at that moment */
} ProgressSample;

static ProgressSample progress_log[4096];
static size_t n_progress;

/* How long this process could not run its event loop on time (a loaded
 * machine descheduling it, or the test busy outside the loop), measured by
 * a 10 ms heartbeat's lateness: the tracker cannot report in such time, so
 * an upper bound on the gap between two reports allows for it. */
#define HEARTBEAT_USEC (10 * USEC_PER_MSEC)
static uint64_t stalled_usec;
static sd_event_source *heartbeat;

static int on_heartbeat(sd_event_source *s, uint64_t usec, void *userdata) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        if (now > usec + HEARTBEAT_USEC)
                stalled_usec += now - usec - HEARTBEAT_USEC;
        check(sd_event_source_set_time(s, now + HEARTBEAT_USEC) >= 0);
        return 0;
}

/* What the owner does from inside a callback. */
static enum {
        PENDING_WAIT,         /* record only; the test finalizes later */
        PENDING_FINALIZE,     /* job_finalize(j, true) at once */
        PENDING_REFUSE,       /* job_finalize(j, false, reason) */
} pending_action;
static JobTracker **free_tracker_on_finished; /* job_tracker_free() from finished() */
static Job *kept_job;                          /* job_ref()'d in finished() */

static void on_progress(Job *j, void *userdata) {
        check(n_progress < ELEMENTSOF(progress_log));
        progress_log[n_progress++] = (ProgressSample) { now_usec(CLOCK_MONOTONIC), j->cur, j->end, stalled_usec };
}

static void on_state_changed(Job *j, void *userdata) {
        char bw[32] = "";

        check(streq((const char *) userdata, "owner"));
        if (j->bandwidth > 0)
                snprintf(bw, sizeof(bw), " bw=%" PRIu64, j->bandwidth);
        record("state %s %s%s%s%s%s", j->id, job_state_to_string(j->state), j->ready ? " ready" : "", bw,
               j->error ? " error=" : "", strempty(j->error));
}

static void on_ready(Job *j, void *userdata) {
        if (j->cur != j->end || j->end == 0)
                record("ready %s %" PRIu64 "/%" PRIu64, j->id, j->cur, j->end);
        else
                record("ready %s", j->id);
}

static void on_pending(Job *j, void *userdata) {
        record("pending %s%s%s", j->id, j->pivoting ? " pivoting" : "", j->aborting ? " aborting" : "");
        if (pending_action == PENDING_FINALIZE)
                check(job_finalize(j, true, NULL) == 0);
        else if (pending_action == PENDING_REFUSE)
                check(job_finalize(j, false, "Cannot save the snapshot metadata: No space left on device") == 0);
}

/* Before the dismiss: QEMU still lists the job, and it has not ended for us. */
static void on_pivoted(Job *j, void *userdata) {
        record("pivoted %s %s", j->id,
               j->tracker && job_tracker_find(j->tracker, j->id) == j && !job_state_is_final(j->state) ? "listed"
                                                                                                 : "gone");
}

static void on_finished(Job *j, void *userdata) {
        check(!j->tracker);
        check(j->rate == 0 && j->eta == 0 && !j->ready);
        record("finished %s %s %s", j->id, job_state_to_string(j->state), j->error ?: "-");
        if (free_tracker_on_finished) {
                *free_tracker_on_finished = job_tracker_free(*free_tracker_on_finished);
                free_tracker_on_finished = NULL;
        }
        if (!kept_job)
                kept_job = job_ref(j);
}

static void on_done(Job *j, int error, const char *message, void *userdata) {
        record("done %s %s %s", j->id, errname(error), message ?: "-");
}

static const JobObserver observer = {
        .progress = on_progress,
        .state_changed = on_state_changed,
        .ready = on_ready,
        .pending = on_pending,
        .pivoted = on_pivoted,
        .finished = on_finished,
};

static void on_reply(Qmp *q, int error, json_object *result, const char *c, const char *d, void *userdata) {
        record("%s %s", (const char *) userdata, errname(error));
}

static void run_for(uint64_t usec) {
        uint64_t until = now_usec(CLOCK_MONOTONIC) + usec, now;

        while ((now = now_usec(CLOCK_MONOTONIC)) < until)
                check(sd_event_run(event, until - now) >= 0);
}

/* ---- what QEMU 7.2 says about jobs ---- */

static void peer_event(Peer *p, const char *name, const char *data) {
        peer_say(p, "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 1}, \"event\": \"%s\", \"data\": %s}\r\n",
                 name, data);
}

static void peer_status(Peer *p, const char *id, const char *status) {
        char data[256];

        snprintf(data, sizeof(data), "{\"status\": \"%s\", \"id\": \"%s\"}", status, id);
        peer_event(p, "JOB_STATUS_CHANGE", data);
}

/* A block job becomes READY the first time: both events, in QEMU's order. */
static void peer_ready(Peer *p, const char *id, const char *type, uint64_t len) {
        char data[256];

        peer_status(p, id, "ready");
        snprintf(data, sizeof(data), "{\"device\": \"%s\", \"len\": %" PRIu64 ", \"offset\": %" PRIu64 ", "
                 "\"speed\": 0, \"type\": \"%s\"}", id, len, len, type);
        peer_event(p, "BLOCK_JOB_READY", data);
}

static void peer_reply(Peer *p, int64_t id, const char *ret) {
        peer_say(p, "{\"return\": %s, \"id\": %" PRIi64 "}\r\n", ret, id);
}

static void peer_error(Peer *p, int64_t id, const char *desc) {
        peer_say(p, "{\"id\": %" PRIi64 ", \"error\": {\"class\": \"GenericError\", \"desc\": \"%s\"}}\r\n", id, desc);
}

typedef struct Fixture {
        Peer peer;
        Qmp *qmp;
        JobTracker *tracker;
} Fixture;

/* The owner's QMP disconnect callback, as the domain layer does it. */
static void on_disconnect(Qmp *q, int error, void *userdata) {
        Fixture *f = userdata;

        record("disconnect");
        job_tracker_disconnected(f->tracker);
}

static void setup(Fixture *f, uint64_t poll_interval) {
        int fd;
        int64_t id;

        *f = (Fixture) {};
        peer_open(&f->peer, &fd);
        check(qmp_new_from_fd(event, fd, &f->qmp) >= 0);
        qmp_set_disconnect_callback(f->qmp, on_disconnect, f);

        check(job_tracker_new(f->qmp, event, &observer, (void *) "owner", &f->tracker) >= 0);
        job_tracker_set_poll_interval(f->tracker, poll_interval);

        peer_say(&f->peer, GREETING);
        id = peer_expect(&f->peer, "{\"execute\":\"qmp_capabilities\"}");
        peer_reply(&f->peer, id, "{}");
        check(qmp_is_ready(f->qmp));
}

static void teardown(Fixture *f) {
        f->tracker = job_tracker_free(f->tracker);
        qmp_unref(f->qmp);
        peer_close(&f->peer);
        drain();
        expect_no_record();
        kept_job = job_unref(kept_job);
        pending_action = PENDING_WAIT;
        n_progress = 0;
}

/* One query-jobs entry, as QEMU 7.2 words it. */
static char *job_entry(const char *id, const char *type, const char *status, uint64_t cur, uint64_t total, const char *error) {
        char *s = NULL;

        check(asprintf(&s, "{\"current-progress\": %" PRIu64 ", \"status\": \"%s\", \"total-progress\": %" PRIu64 ", "
                           "\"type\": \"%s\", \"id\": \"%s\"%s%s%s}",
                       cur, status, total, type, id, error ? ", \"error\": \"" : "", strempty(error), error ? "\"" : "") > 0);
        return s;
}

/* Expects a poll and answers it with one job. */
static void answer_poll(Fixture *f, const char *id, const char *type, const char *status, uint64_t cur, uint64_t total) {
        _cleanup_free_ char *e = job_entry(id, type, status, cur, total, NULL), *ret = NULL;
        int64_t qid = peer_expect(&f->peer, "{\"execute\":\"query-jobs\"}");

        check(asprintf(&ret, "[%s]", e) > 0);
        peer_reply(&f->peer, qid, ret);
}

static const char *qemu_status(const Job *j) {
        switch (j->state) {
        case JOB_STATE_RUNNING: return "running";
        case JOB_STATE_READY: return "ready";
        case JOB_STATE_PAUSED: return j->ready ? "standby" : "paused";
        case JOB_STATE_PENDING: return "pending";
        default: return "concluded";
        }
}

/* Registers a running job and answers the tracker's sync poll, which
 * lists the other jobs as they are. */
static Job *add_job(Fixture *f, const char *id, JobType type, const char *qemu_type, uint64_t cur, uint64_t total) {
        char ret[4096] = "[";
        Job *j = NULL;

        check(job_tracker_add(f->tracker, id, type, "vda", 0, &j) == 0);
        check(j && j->state == JOB_STATE_RUNNING && j->tracker == f->tracker);
        JOB_TRACKER_FOREACH(i, f->tracker) {
                _cleanup_free_ char *e = i == j ? job_entry(id, qemu_type, "running", cur, total, NULL)
                                                : job_entry(i->id, "stream", qemu_status(i), i->cur, i->end, NULL);

                check(strlen(ret) + strlen(e) + 4 < sizeof(ret));
                strcat(ret, ret[1] ? ", " : "");
                strcat(ret, e);
        }
        strcat(ret, "]");
        peer_reply(&f->peer, peer_expect(&f->peer, "{\"execute\":\"query-jobs\"}"), ret);
        return j;
}

static void expect_dismiss(Fixture *f, const char *id) {
        char want[256];

        snprintf(want, sizeof(want), "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"%s\"}}", id);
        peer_reply(&f->peer, peer_expect(&f->peer, want), "{}");
        peer_status(&f->peer, id, "null");
}

/* ---- the tests ---- */

static void test_strings(void) {
        printf("type and state strings\n");
        check(streq(job_type_to_string(JOB_TYPE_ACTIVE_COMMIT), "active-commit"));
        check(streq(job_type_to_string(JOB_TYPE_SNAPSHOT_CREATE), "snapshot-create"));
        check(!job_type_to_string(_JOB_TYPE_MAX) && !job_type_to_string(_JOB_TYPE_INVALID));
        for (int i = 0; i < _JOB_TYPE_MAX; i++)
                check(job_type_from_string(job_type_to_string(i)) == i);
        for (int i = 0; i < _JOB_STATE_MAX; i++)
                check(job_state_from_string(job_state_to_string(i)) == i);
        check(job_type_from_string("mirror") == _JOB_TYPE_INVALID);
        check(job_state_from_string("concluded") == _JOB_STATE_INVALID);
        check(streq(job_state_to_string(JOB_STATE_CANCELED), "canceled"));
        check(job_state_is_final(JOB_STATE_FAILED) && !job_state_is_final(JOB_STATE_PENDING));
}

static void test_commit_lifecycle(void) {
        Fixture f;
        Job *j;
        int64_t id;

        printf("commit: running → pending → owner finalizes → concluded → dismissed → completed\n");
        setup(&f, LONG_POLL);

        /* The owner starts it through the wrapper… */
        check(qmp_cmd_block_commit(f.qmp, "commit0", "s4", "s3", "s1", NULL, 0, on_reply, (void *) "block-commit") > 0);
        id = peer_expect(&f.peer, "{\"execute\":\"block-commit\",\"arguments\":{\"job-id\":\"commit0\",\"device\":\"s4\","
                                  "\"top-node\":\"s3\",\"base-node\":\"s1\",\"auto-finalize\":false,\"auto-dismiss\":false}}");
        peer_status(&f.peer, "commit0", "created");
        peer_status(&f.peer, "commit0", "running");
        peer_reply(&f.peer, id, "{}");
        expect_record("block-commit 0");

        /* …then registers it: one sync poll. */
        j = add_job(&f, "commit0", JOB_TYPE_COMMIT, "commit", 0, 4 * MiB);
        check(job_tracker_add(f.tracker, "commit0", JOB_TYPE_COMMIT, "vda", 0, NULL) == -QSNAP_E_ALREADY_EXISTS);
        check(job_tracker_find(f.tracker, "commit0") == j);
        check(streq(j->disk, "vda") && j->type == JOB_TYPE_COMMIT && j->end == 4 * MiB);
        check(j->start_time > 0);
        check(n_progress == 1 && progress_log[0].cur == 0 && progress_log[0].end == 4 * MiB);
        expect_no_record();

        peer_status(&f.peer, "commit0", "waiting");
        expect_no_record();
        check(j->state == JOB_STATE_RUNNING);
        peer_status(&f.peer, "commit0", "pending");
        peer_event(&f.peer, "BLOCK_JOB_PENDING", "{\"type\": \"commit\", \"id\": \"commit0\"}");
        expect_record("state commit0 pending");
        expect_record("pending commit0");
        expect_no_record();
        /* The final figures, once; then nothing until the owner's
         * bookkeeping is done. */
        answer_poll(&f, "commit0", "commit", "pending", 4 * MiB, 4 * MiB);
        peer_expect_nothing(&f.peer);
        check(job_abort(j, false, on_done, NULL, NULL) == -QSNAP_E_OPERATION_INVALID);
        check(job_pivot(j, on_done, NULL, NULL) == -QSNAP_E_OPERATION_INVALID);

        check(job_finalize(j, true, NULL) == 0);
        check(job_finalize(j, true, NULL) == -QSNAP_E_OPERATION_INVALID);
        id = peer_expect(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"commit0\"}}");
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"commit0\", \"len\": 4194304, \"offset\": 4194304, \"speed\": 0, \"type\": \"commit\"}");
        peer_status(&f.peer, "commit0", "concluded");
        peer_reply(&f.peer, id, "{}");
        expect_no_record(); /* not before it is dismissed */
        check(j->state == JOB_STATE_PENDING);

        id = peer_expect(&f.peer, "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"commit0\"}}");
        peer_status(&f.peer, "commit0", "null");
        peer_reply(&f.peer, id, "{}");
        expect_record("state commit0 completed");
        expect_record("finished commit0 completed -");
        check(!job_tracker_find(f.tracker, "commit0"));
        check(kept_job == j && j->cur == 4 * MiB);
        /* Progress reached the end before the end was told. */
        check(n_progress == 2 && progress_log[1].cur == 4 * MiB);
        check(job_pivot(j, on_done, NULL, NULL) == -QSNAP_E_OPERATION_INVALID);
        peer_expect_nothing(&f.peer);
        teardown(&f);
}

static void test_active_commit_pivot(void) {
        _cleanup_free_ char *message = NULL;
        Fixture f;
        Job *j;
        int64_t id;

        printf("active commit: pivot refused before READY (also at cur == end), job-complete after\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "ac0", JOB_TYPE_ACTIVE_COMMIT, "commit", 4 * MiB, 4 * MiB);
        check(j->cur == j->end);
        check(job_pivot(j, on_done, NULL, &message) == -QSNAP_E_OPERATION_INVALID);
        check(message && strstr(message, "not ready"));
        message = mfree(message);
        check(job_abort(j, true, on_done, NULL, &message) == -QSNAP_E_OPERATION_INVALID);
        peer_expect_nothing(&f.peer);

        peer_status(&f.peer, "ac0", "ready");
        expect_no_record(); /* its figures come with BLOCK_JOB_READY */
        peer_event(&f.peer, "BLOCK_JOB_READY",
                   "{\"device\": \"ac0\", \"len\": 5242880, \"offset\": 5242880, \"speed\": 0, \"type\": \"commit\"}");
        expect_record("state ac0 ready ready");
        expect_record("ready ac0"); /* at 5242880/5242880 */
        expect_no_record();
        check(j->end == 5 * MiB); /* grew with guest writes */

        check(job_pivot(j, on_done, NULL, NULL) == 0);
        message = mfree(message);
        check(job_pivot(j, on_done, NULL, &message) == -QSNAP_E_BUSY);
        id = peer_expect(&f.peer, "{\"execute\":\"job-complete\",\"arguments\":{\"id\":\"ac0\"}}");
        expect_no_record(); /* done never from inside the call */
        peer_reply(&f.peer, id, "{}");
        expect_record("done ac0 0 -");

        pending_action = PENDING_FINALIZE;
        peer_status(&f.peer, "ac0", "waiting");
        peer_status(&f.peer, "ac0", "pending");
        expect_record("state ac0 running");
        expect_record("state ac0 pending");
        expect_record("pending ac0 pivoting");
        id = peer_expect(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"ac0\"}}");
        answer_poll(&f, "ac0", "commit", "pending", 5 * MiB, 5 * MiB);
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"ac0\", \"len\": 5242880, \"offset\": 5242880, \"speed\": 0, \"type\": \"commit\"}");
        peer_status(&f.peer, "ac0", "concluded");
        peer_reply(&f.peer, id, "{}");
        expect_dismiss(&f, "ac0");
        expect_record("pivoted ac0 listed"); /* QEMU switched the disk: before the dismiss */
        expect_record("state ac0 completed");
        expect_record("finished ac0 completed -");
        peer_expect_nothing(&f.peer);
        teardown(&f);
}

static void test_pivot_failed_is_no_pivot(void) {
        Fixture f;
        Job *j;
        int64_t id;

        printf("a pivoted copy that ends with an error: failed, no pivoted()\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "m9", JOB_TYPE_COPY, "mirror", 0, MiB);
        peer_ready(&f.peer, "m9", "mirror", MiB);
        expect_record("state m9 ready ready");
        expect_record("ready m9");
        check(job_pivot(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-complete\",\"arguments\":{\"id\":\"m9\"}}"), "{}");
        expect_record("done m9 0 -");
        pending_action = PENDING_FINALIZE;
        peer_status(&f.peer, "m9", "pending");
        expect_record("state m9 pending");
        expect_record("pending m9 pivoting");
        id = peer_expect(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"m9\"}}");
        answer_poll(&f, "m9", "mirror", "pending", MiB, MiB);
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"m9\", \"len\": 1048576, \"offset\": 1048576, \"speed\": 0, \"type\": \"mirror\", "
                   "\"error\": \"Input/output error\"}");
        peer_status(&f.peer, "m9", "concluded");
        peer_reply(&f.peer, id, "{}");
        expect_dismiss(&f, "m9");
        expect_record("state m9 failed error=Input/output error");
        expect_record("finished m9 failed Input/output error");
        peer_expect_nothing(&f.peer);
        teardown(&f);
}

static void test_pivot_refused_by_qemu(void) {
        Fixture f;
        Job *j;

        printf("a pivot QEMU refuses: done gets QEMU's text verbatim, a retry is possible\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "m0", JOB_TYPE_COPY, "mirror", 0, MiB);
        peer_ready(&f.peer, "m0", "mirror", MiB);
        expect_record("state m0 ready ready");
        expect_record("ready m0");
        check(job_pivot(j, on_done, NULL, NULL) == 0);
        peer_error(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-complete\",\"arguments\":{\"id\":\"m0\"}}"),
                   "Job 'm0' in state 'standby' cannot accept command verb 'complete'");
        expect_record("done m0 -QemuFailed Job 'm0' in state 'standby' cannot accept command verb 'complete'");
        check(!j->pivoting);
        check(job_pivot(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-complete\",\"arguments\":{\"id\":\"m0\"}}"), "{}");
        expect_record("done m0 0 -");
        teardown(&f);
}

static void check_progress_spacing(size_t from, uint64_t max_gap) {
        for (size_t i = from + 1; i < n_progress; i++) {
                uint64_t gap = progress_log[i].usec - progress_log[i - 1].usec;
                uint64_t stalled = progress_log[i].stalled - progress_log[i - 1].stalled;
                if (gap + 2 * USEC_PER_MSEC < 100 * USEC_PER_MSEC || gap > max_gap + 20 * USEC_PER_MSEC + stalled) {
                        fprintf(stderr, "progress #%zu came %" PRIu64 " µs after the one before\n", i, gap);
                        exit(EXIT_FAILURE);
                }
        }
}

static void test_progress(void) {
        const uint64_t end = 100 * MiB;
        uint64_t t0, cur = 0, moved, stalled0;
        size_t first, polls;
        Fixture f;
        Job *j;

        printf("progress: at most 10 a second, one per 5 %% or per second; rate and eta\n");
        check(sd_event_add_time(event, &heartbeat, CLOCK_MONOTONIC, now_usec(CLOCK_MONOTONIC) + HEARTBEAT_USEC, 0,
                                on_heartbeat, NULL) >= 0);
        check(sd_event_source_set_enabled(heartbeat, SD_EVENT_ON) >= 0);
        setup(&f, 5 * USEC_PER_MSEC);
        j = add_job(&f, "m1", JOB_TYPE_COPY, "mirror", 0, end);
        check(n_progress == 1);

        /* Fast: 1 % per poll every 5 ms, 5 % per 25 ms: the cap rules. */
        t0 = now_usec(CLOCK_MONOTONIC);
        for (int i = 1; i <= 60; i++)
                answer_poll(&f, "m1", "mirror", "running", cur += end / 100, end);
        /* The last one comes when the cap allows: 100 ms on an idle machine,
         * later on a loaded one — wait for it rather than for a while. */
        for (uint64_t until = now_usec(CLOCK_MONOTONIC) + 5 * USEC_PER_SEC;
             progress_log[n_progress - 1].cur != cur && now_usec(CLOCK_MONOTONIC) < until;)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        answer_poll(&f, "m1", "mirror", "running", cur, end);
        printf("  fast: %zu reports in %" PRIu64 " ms\n", n_progress, (now_usec(CLOCK_MONOTONIC) - t0) / USEC_PER_MSEC);
        check(n_progress >= 2);
        check(n_progress - 1 <= (now_usec(CLOCK_MONOTONIC) - t0) / (100 * USEC_PER_MSEC) + 1);
        check_progress_spacing(0, USEC_PER_SEC);
        check(progress_log[n_progress - 1].cur == cur); /* nothing left unreported */
        check(j->rate > 0);

        /* Moderate: 1 % per poll every 40 ms: a report at each 5 % step. */
        job_tracker_set_poll_interval(f.tracker, 40 * USEC_PER_MSEC);
        answer_poll(&f, "m1", "mirror", "running", cur, end); /* the one already armed */
        first = n_progress;
        for (int i = 1; i <= 20; i++)
                answer_poll(&f, "m1", "mirror", "running", cur += end / 100, end);
        printf("  moderate: %zu reports for 20 %%\n", n_progress - first);
        check(n_progress - first >= 4);
        for (size_t i = first; i < n_progress; i++)
                check(progress_log[i].cur - (i > 0 ? progress_log[i - 1].cur : 0) <= end / 20);
        check_progress_spacing(first, USEC_PER_SEC);

        /* A pause forgets the rate. */
        check(job_pause(j, on_done, NULL, NULL) == 0);
        while (drain(), f.peer.len >= 25 && strncmp(f.peer.buf, "{\"execute\":\"query-jobs\"", 25) == 0)
                answer_poll(&f, "m1", "mirror", "running", cur, end); /* a poll that went first */
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-pause\",\"arguments\":{\"id\":\"m1\"}}"), "{}");
        peer_status(&f.peer, "m1", "paused");
        expect_record("done m1 0 -");
        expect_record("state m1 paused");
        check(j->rate == 0 && j->eta == 0);
        if (peer_has_line(&f.peer))
                answer_poll(&f, "m1", "mirror", "paused", cur, end);
        run_for(50 * USEC_PER_MSEC);
        peer_expect_nothing(&f.peer);
        job_tracker_set_poll_interval(f.tracker, 100 * USEC_PER_MSEC);
        check(job_resume(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-resume\",\"arguments\":{\"id\":\"m1\"}}"), "{}");
        expect_record("state m1 running");
        expect_record("done m1 0 -");
        peer_status(&f.peer, "m1", "running");

        /* Slow: 0.1 % per poll every 100 ms: 5 % would take 5 s, so one
         * report a second carries it. */
        first = n_progress;
        t0 = now_usec(CLOCK_MONOTONIC);
        stalled0 = stalled_usec;
        moved = 0;
        for (polls = 0; now_usec(CLOCK_MONOTONIC) - t0 < 3500 * USEC_PER_MSEC; polls++) {
                answer_poll(&f, "m1", "mirror", "running", cur += end / 1000, end);
                moved += end / 1000;
        }
        printf("  slow: %zu reports in %zu polls (3.5 s), rate %" PRIu64 " B/s, eta %" PRIu64 " s\n",
               n_progress - first, polls, j->rate, j->eta);
        /* One a second of the time the loop could run: 3 on an idle machine. */
        check(n_progress - first >= (3500 * USEC_PER_MSEC - MIN(stalled_usec - stalled0, 3500 * USEC_PER_MSEC)) /
                                            USEC_PER_SEC &&
              n_progress - first <= 5);
        check(progress_log[first].usec - t0 < 1500 * USEC_PER_MSEC + (progress_log[first].stalled - stalled0));
        check_progress_spacing(first, 1500 * USEC_PER_MSEC);
        for (size_t i = first + 1; i < n_progress; i++)
                check(progress_log[i].usec - progress_log[i - 1].usec >= 900 * USEC_PER_MSEC);
        {
                /* Smoothed over 2 s, it has converged to the slow rate. */
                double expected = (double) moved * USEC_PER_SEC / (double) (now_usec(CLOCK_MONOTONIC) - t0);
                check(j->rate > expected * 0.5 && j->rate < expected * 1.6);
                check(j->eta == (end - cur + j->rate - 1) / j->rate);
        }

        teardown(&f);
        heartbeat = sd_event_source_disable_unref(heartbeat);
}

static void test_polling_stops(void) {
        Fixture f;
        Job *j;
        int n = 0;

        printf("query-jobs only while a job runs\n");
        setup(&f, 20 * USEC_PER_MSEC);
        peer_expect_nothing(&f.peer);
        run_for(100 * USEC_PER_MSEC);
        peer_expect_nothing(&f.peer); /* no job: no poll */

        j = add_job(&f, "m2", JOB_TYPE_COPY, "mirror", 0, MiB);
        for (int i = 0; i < 3; i++)
                answer_poll(&f, "m2", "mirror", "running", 0, MiB);
        peer_ready(&f.peer, "m2", "mirror", MiB);
        expect_record("state m2 ready ready");
        expect_record("ready m2");
        if (peer_has_line(&f.peer)) /* sent before the events */
                answer_poll(&f, "m2", "mirror", "ready", MiB, MiB);
        for (int i = 0; i < 10; i++) {
                run_for(30 * USEC_PER_MSEC);
                peer_expect_nothing(&f.peer);
        }

        /* Running again (pivoted: waiting for the others in its
         * transaction): polls again. */
        peer_status(&f.peer, "m2", "waiting");
        expect_record("state m2 running");
        answer_poll(&f, "m2", "mirror", "waiting", MiB, MiB);
        answer_poll(&f, "m2", "mirror", "waiting", MiB, MiB);

        /* Pending and concluded jobs do not run either. */
        peer_status(&f.peer, "m2", "pending");
        expect_record("state m2 pending");
        expect_record("pending m2");
        while (peer_has_line(&f.peer) && n++ < 2)
                answer_poll(&f, "m2", "mirror", "pending", MiB, MiB);
        run_for(100 * USEC_PER_MSEC);
        peer_expect_nothing(&f.peer);
        check(j->state == JOB_STATE_PENDING);
        teardown(&f);
}

static void test_failure(void) {
        _cleanup_free_ char *e = NULL, *ret = NULL;
        Fixture f;
        int64_t id;

        printf("failing job: BLOCK_JOB_ERROR, then concluded with QEMU's error → failed with its text\n");
        setup(&f, LONG_POLL);
        add_job(&f, "s0", JOB_TYPE_PULL, "stream", MiB, 256 * MiB);
        for (int i = 0; i < 3; i++)
                peer_event(&f.peer, "BLOCK_JOB_ERROR", "{\"device\": \"s0\", \"operation\": \"read\", \"action\": \"report\"}");
        expect_no_record();
        peer_status(&f.peer, "s0", "aborting");
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"s0\", \"len\": 268435456, \"offset\": 2097152, \"speed\": 0, \"type\": \"stream\", "
                   "\"error\": \"Input/output error\"}");
        peer_status(&f.peer, "s0", "concluded");
        expect_no_record();
        expect_dismiss(&f, "s0");
        expect_record("state s0 failed error=Input/output error");
        expect_record("finished s0 failed Input/output error");
        teardown(&f);

        printf("failing snapshot job (no BLOCK_JOB_* events): the error comes from query-jobs\n");
        setup(&f, LONG_POLL);
        add_job(&f, "save0", JOB_TYPE_SNAPSHOT_CREATE, "snapshot-save", 0, 0);
        peer_status(&f.peer, "save0", "aborting");
        peer_status(&f.peer, "save0", "concluded");
        id = peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}");
        e = job_entry("save0", "snapshot-save", "concluded", 0, 0, "Snapshot 'snap1' already exists in one or more devices");
        check(asprintf(&ret, "[%s]", e) > 0);
        peer_reply(&f.peer, id, ret);
        expect_dismiss(&f, "save0");
        expect_record("state save0 failed error=Snapshot 'snap1' already exists in one or more devices");
        expect_record("finished save0 failed Snapshot 'snap1' already exists in one or more devices");
        teardown(&f);
}

static void test_abort(void) {
        _cleanup_free_ char *message = NULL;
        Fixture f;
        Job *j;
        int64_t id;

        printf("abort a running pull: block-job-cancel, BLOCK_JOB_CANCELLED → canceled\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "s1", JOB_TYPE_PULL, "stream", 0, MiB);
        check(job_abort(j, false, on_done, NULL, NULL) == 0);
        check(job_abort(j, false, on_done, NULL, &message) == -QSNAP_E_BUSY);
        id = peer_expect(&f.peer, "{\"execute\":\"block-job-cancel\",\"arguments\":{\"device\":\"s1\"}}");
        peer_reply(&f.peer, id, "{}");
        expect_record("done s1 0 -");
        peer_status(&f.peer, "s1", "aborting");
        peer_event(&f.peer, "BLOCK_JOB_CANCELLED",
                   "{\"device\": \"s1\", \"len\": 1048576, \"offset\": 65536, \"speed\": 0, \"type\": \"stream\"}");
        peer_status(&f.peer, "s1", "concluded");
        expect_dismiss(&f, "s1");
        expect_record("state s1 canceled");
        expect_record("finished s1 canceled -");
        teardown(&f);

        printf("abort a READY copy without pivot: QEMU says COMPLETED, we say canceled (source kept)\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "m3", JOB_TYPE_COPY, "mirror", 0, MiB);
        peer_ready(&f.peer, "m3", "mirror", MiB);
        expect_record("state m3 ready ready");
        expect_record("ready m3");
        check(job_abort(j, false, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"block-job-cancel\",\"arguments\":{\"device\":\"m3\"}}"), "{}");
        expect_record("done m3 0 -");
        pending_action = PENDING_FINALIZE;
        peer_status(&f.peer, "m3", "waiting");
        peer_status(&f.peer, "m3", "pending");
        expect_record("state m3 running");
        expect_record("state m3 pending");
        expect_record("pending m3 aborting");
        id = peer_expect(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"m3\"}}");
        answer_poll(&f, "m3", "mirror", "pending", MiB, MiB);
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"m3\", \"len\": 1048576, \"offset\": 1048576, \"speed\": 0, \"type\": \"mirror\"}");
        peer_status(&f.peer, "m3", "concluded");
        peer_reply(&f.peer, id, "{}");
        expect_dismiss(&f, "m3");
        expect_record("state m3 canceled");
        expect_record("finished m3 canceled -");
        teardown(&f);

        printf("abort with pivot on a READY copy: job-complete → completed\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "m4", JOB_TYPE_COPY, "mirror", 0, MiB);
        check(job_abort(j, true, on_done, NULL, NULL) == -QSNAP_E_OPERATION_INVALID);
        peer_ready(&f.peer, "m4", "mirror", MiB);
        expect_record("state m4 ready ready");
        expect_record("ready m4");
        check(job_abort(j, true, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-complete\",\"arguments\":{\"id\":\"m4\"}}"), "{}");
        expect_record("done m4 0 -");
        pending_action = PENDING_FINALIZE;
        peer_status(&f.peer, "m4", "pending");
        expect_record("state m4 pending");
        expect_record("pending m4 pivoting");
        id = peer_expect(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"m4\"}}");
        answer_poll(&f, "m4", "mirror", "pending", MiB, MiB);
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"m4\", \"len\": 1048576, \"offset\": 1048576, \"speed\": 0, \"type\": \"mirror\"}");
        peer_status(&f.peer, "m4", "concluded");
        peer_reply(&f.peer, id, "{}");
        expect_dismiss(&f, "m4");
        expect_record("pivoted m4 listed");
        expect_record("state m4 completed");
        expect_record("finished m4 completed -");
        teardown(&f);

        printf("abort a snapshot job: job-cancel (block-job-cancel does not find it)\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "del0", JOB_TYPE_SNAPSHOT_DELETE, "snapshot-delete", 0, 0);
        check(job_abort(j, false, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-cancel\",\"arguments\":{\"id\":\"del0\"}}"), "{}");
        expect_record("done del0 0 -");
        teardown(&f);

        printf("the owner refuses in pending: job-cancel → failed with the owner's reason, or canceled\n");
        setup(&f, LONG_POLL);
        add_job(&f, "c1", JOB_TYPE_COMMIT, "commit", MiB, MiB);
        pending_action = PENDING_REFUSE;
        peer_status(&f.peer, "c1", "pending");
        expect_record("state c1 pending");
        expect_record("pending c1");
        id = peer_expect(&f.peer, "{\"execute\":\"job-cancel\",\"arguments\":{\"id\":\"c1\"}}");
        answer_poll(&f, "c1", "commit", "pending", MiB, MiB);
        peer_status(&f.peer, "c1", "aborting");
        peer_event(&f.peer, "BLOCK_JOB_CANCELLED",
                   "{\"device\": \"c1\", \"len\": 1048576, \"offset\": 1048576, \"speed\": 0, \"type\": \"commit\"}");
        peer_status(&f.peer, "c1", "concluded");
        peer_reply(&f.peer, id, "{}");
        expect_dismiss(&f, "c1");
        expect_record("state c1 failed error=Cannot save the snapshot metadata: No space left on device");
        expect_record("finished c1 failed Cannot save the snapshot metadata: No space left on device");

        j = add_job(&f, "c2", JOB_TYPE_COMMIT, "commit", MiB, MiB);
        pending_action = PENDING_WAIT;
        peer_status(&f.peer, "c2", "pending");
        expect_record("state c2 pending");
        expect_record("pending c2");
        answer_poll(&f, "c2", "commit", "pending", MiB, MiB);
        check(job_finalize(j, false, NULL) == 0);
        id = peer_expect(&f.peer, "{\"execute\":\"job-cancel\",\"arguments\":{\"id\":\"c2\"}}");
        peer_status(&f.peer, "c2", "aborting");
        peer_status(&f.peer, "c2", "concluded"); /* no BLOCK_JOB_CANCELLED: asks query-jobs */
        peer_reply(&f.peer, id, "{}");
        id = peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}");
        peer_reply(&f.peer, id, "[{\"current-progress\": 1048576, \"status\": \"concluded\", \"total-progress\": 1048576, "
                                "\"type\": \"commit\", \"id\": \"c2\", \"error\": \"Operation canceled\"}]");
        expect_dismiss(&f, "c2");
        expect_record("state c2 canceled");
        expect_record("finished c2 canceled -");
        teardown(&f);
}

static void test_set_speed(void) {
        _cleanup_free_ char *message = NULL;
        Fixture f;
        Job *j;

        printf("set-speed: block-job-set-speed, Bandwidth changes after QEMU agreed\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "m5", JOB_TYPE_COPY, "mirror", 0, MiB);
        check(job_set_speed(j, 16 * MiB, on_done, NULL, NULL) == 0);
        check(j->bandwidth == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"block-job-set-speed\",\"arguments\":{\"device\":\"m5\",\"speed\":16777216}}"), "{}");
        expect_record("state m5 running bw=16777216");
        expect_record("done m5 0 -");
        check(job_set_speed(j, 0, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"block-job-set-speed\",\"arguments\":{\"device\":\"m5\",\"speed\":0}}"), "{}");
        expect_record("state m5 running");
        expect_record("done m5 0 -");

        check(job_set_speed(j, 5, on_done, NULL, NULL) == 0);
        peer_error(&f.peer, peer_expect(&f.peer, "{\"execute\":\"block-job-set-speed\",\"arguments\":{\"device\":\"m5\",\"speed\":5}}"),
                   "Parameter 'speed' expects a non-negative value");
        expect_record("done m5 -QemuFailed Parameter 'speed' expects a non-negative value");
        check(j->bandwidth == 0);

        check(job_set_speed(j, UINT64_MAX, on_done, NULL, &message) == -QSNAP_E_INVALID_ARGUMENT);
        check(message && strstr(message, "out of range"));
        message = mfree(message);
        peer_expect_nothing(&f.peer);

        j = add_job(&f, "save1", JOB_TYPE_SNAPSHOT_CREATE, "snapshot-save", 0, 0);
        message = mfree(message);
        check(job_set_speed(j, MiB, on_done, NULL, &message) == -QSNAP_E_UNSUPPORTED);
        peer_expect_nothing(&f.peer);
        teardown(&f);
}

static void test_pause_resume(void) {
        Fixture f;
        Job *j;

        printf("pause/resume: job-pause/job-resume; paused once QEMU agreed and the job stopped\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "m6", JOB_TYPE_COPY, "mirror", 0, MiB);
        check(job_resume(j, on_done, NULL, NULL) == 1); /* not paused: nothing to do */
        check(job_pause(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-pause\",\"arguments\":{\"id\":\"m6\"}}"), "{}");
        expect_record("done m6 0 -");
        check(j->state == JOB_STATE_RUNNING); /* not stopped yet */
        peer_status(&f.peer, "m6", "paused");
        expect_record("state m6 paused");
        check(job_pause(j, on_done, NULL, NULL) == 1);
        check(job_resume(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-resume\",\"arguments\":{\"id\":\"m6\"}}"), "{}");
        expect_record("state m6 running");
        expect_record("done m6 0 -");
        peer_status(&f.peer, "m6", "running");
        expect_no_record();

        printf("  QEMU's own short pauses (drained sections) are no Paused state\n");
        peer_status(&f.peer, "m6", "paused");
        peer_status(&f.peer, "m6", "running");
        expect_no_record();

        printf("  the job stops before QEMU's reply\n");
        check(job_pause(j, on_done, NULL, NULL) == 0);
        peer_status(&f.peer, "m6", "paused");
        expect_no_record();
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-pause\",\"arguments\":{\"id\":\"m6\"}}"), "{}");
        expect_record("state m6 paused");
        expect_record("done m6 0 -");
        check(job_resume(j, on_done, NULL, NULL) == 0);
        peer_status(&f.peer, "m6", "running"); /* also before the reply */
        expect_record("state m6 running");
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-resume\",\"arguments\":{\"id\":\"m6\"}}"), "{}");
        expect_record("done m6 0 -");

        printf("  READY: standby while paused, a drain's standby is no pause\n");
        peer_ready(&f.peer, "m6", "mirror", MiB);
        expect_record("state m6 ready ready");
        expect_record("ready m6");
        peer_status(&f.peer, "m6", "standby");
        peer_status(&f.peer, "m6", "ready");
        expect_no_record();
        check(job_pause(j, on_done, NULL, NULL) == 0);
        peer_error(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-pause\",\"arguments\":{\"id\":\"m6\"}}"),
                   "Job 'm6' in state 'ready' cannot accept command verb 'pause'");
        expect_record("done m6 -QemuFailed Job 'm6' in state 'ready' cannot accept command verb 'pause'");
        check(job_pause(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-pause\",\"arguments\":{\"id\":\"m6\"}}"), "{}");
        expect_record("done m6 0 -");
        peer_status(&f.peer, "m6", "standby");
        expect_record("state m6 paused ready");
        check(job_resume(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-resume\",\"arguments\":{\"id\":\"m6\"}}"), "{}");
        expect_record("state m6 ready ready"); /* no second ready() */
        expect_record("done m6 0 -");
        peer_status(&f.peer, "m6", "ready");
        expect_no_record();
        teardown(&f);

        printf("an I/O error with on-error=stop pauses the job until resumed\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "s8", JOB_TYPE_PULL, "stream", 0, MiB);
        peer_event(&f.peer, "BLOCK_JOB_ERROR", "{\"device\": \"s8\", \"operation\": \"write\", \"action\": \"stop\"}");
        peer_status(&f.peer, "s8", "paused");
        expect_record("state s8 paused");
        check(job_pause(j, on_done, NULL, NULL) == 1);
        check(job_resume(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-resume\",\"arguments\":{\"id\":\"s8\"}}"), "{}");
        expect_record("state s8 running");
        expect_record("done s8 0 -");
        teardown(&f);
}

static Fixture *adopt_fixture;

static void on_adopted(JobTracker *t, int error, void *userdata) {
        size_t n = 0;

        record("adopted %s", errname(error));
        JOB_TRACKER_FOREACH(j, t) {
                record("  %s %s %s%s %" PRIu64 "/%" PRIu64 " bw=%" PRIu64 "%s%s", j->id, job_type_to_string(j->type),
                       job_state_to_string(j->state), j->ready ? " ready" : "", j->cur, j->end, j->bandwidth,
                       j->error ? " error=" : "", strempty(j->error));
                check(j->adopted);
                n++;
        }
        /* The owner corrects what QEMU cannot know. */
        if (n > 0) {
                Job *j = job_tracker_find(t, "pend0");
                check(j);
                job_set_type(j, JOB_TYPE_ACTIVE_COMMIT);
                check(job_set_disk(j, "vdb") == 0);
                job_set_start_time(j, 1700000000 * USEC_PER_SEC);
        }
}

static void test_adopt(void) {
        Fixture f;
        Job *j;
        int64_t qj, qbj;

        printf("adoption: query-jobs with a running, a pending and concluded jobs\n");
        setup(&f, LONG_POLL);
        adopt_fixture = &f;
        check(job_tracker_adopt(f.tracker, on_adopted, NULL) == 0);
        check(job_tracker_adopt(f.tracker, on_adopted, NULL) == -QSNAP_E_BUSY);
        qj = peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}");
        qbj = peer_expect(&f.peer, "{\"execute\":\"query-block-jobs\"}");
        peer_reply(&f.peer, qj,
                   "[{\"current-progress\": 1048576, \"status\": \"running\", \"total-progress\": 268435456, \"type\": \"stream\", \"id\": \"run0\"},"
                   " {\"current-progress\": 4194304, \"status\": \"pending\", \"total-progress\": 4194304, \"type\": \"commit\", \"id\": \"pend0\"},"
                   " {\"current-progress\": 1048576, \"status\": \"concluded\", \"total-progress\": 268435456, \"type\": \"mirror\", \"id\": \"conc0\","
                   "  \"error\": \"No space left on device\"},"
                   " {\"current-progress\": 65536, \"status\": \"concluded\", \"total-progress\": 65536, \"type\": \"commit\", \"id\": \"conc1\"},"
                   " {\"current-progress\": 5, \"status\": \"concluded\", \"total-progress\": 9, \"type\": \"stream\", \"id\": \"canc0\","
                   "  \"error\": \"Operation canceled\"},"
                   " {\"current-progress\": 0, \"status\": \"ready\", \"total-progress\": 0, \"type\": \"commit\", \"id\": \"ac1\"},"
                   " {\"current-progress\": 7, \"status\": \"paused\", \"total-progress\": 9, \"type\": \"backup\", \"id\": \"pz0\"},"
                   " {\"current-progress\": 7, \"status\": \"standby\", \"total-progress\": 7, \"type\": \"mirror\", \"id\": \"dr0\"},"
                   " {\"current-progress\": 1, \"status\": \"concluded\", \"total-progress\": 1, \"type\": \"create\", \"id\": \"create0\"}]");
        expect_no_record(); /* until both replies are in */
        peer_reply(&f.peer, qbj,
                   "[{\"auto-finalize\": false, \"io-status\": \"ok\", \"device\": \"run0\", \"auto-dismiss\": false, \"busy\": true, "
                   "  \"len\": 268435456, \"offset\": 1048576, \"status\": \"running\", \"paused\": false, \"speed\": 16777216, "
                   "  \"ready\": false, \"type\": \"stream\"},"
                   " {\"device\": \"pz0\", \"len\": 9, \"offset\": 7, \"paused\": true, \"speed\": 0, \"type\": \"backup\"},"
                   " {\"device\": \"dr0\", \"len\": 7, \"offset\": 7, \"paused\": false, \"speed\": 0, \"type\": \"mirror\"}]");
        expect_record("adopted 0");
        expect_record("  run0 pull running 1048576/268435456 bw=16777216");
        expect_record("  pend0 commit pending 4194304/4194304 bw=0");
        expect_record("  conc0 copy failed 1048576/268435456 bw=0 error=No space left on device");
        expect_record("  conc1 commit completed 65536/65536 bw=0");
        expect_record("  canc0 pull canceled 5/9 bw=0");
        expect_record("  ac1 active-commit ready ready 0/0 bw=0");
        expect_record("  pz0 backup paused 7/9 bw=0");
        expect_record("  dr0 copy ready ready 7/7 bw=0");
        expect_record("pending pend0");
        expect_no_record();
        j = job_tracker_find(f.tracker, "pend0");
        check(j->type == JOB_TYPE_ACTIVE_COMMIT && streq(j->disk, "vdb") && j->start_time == 1700000000 * USEC_PER_SEC);
        check(!job_tracker_find(f.tracker, "create0")); /* not ours */

        expect_dismiss(&f, "conc0");
        expect_record("state conc0 failed error=No space left on device");
        expect_record("finished conc0 failed No space left on device");
        expect_dismiss(&f, "conc1");
        expect_record("state conc1 completed");
        expect_record("finished conc1 completed -");
        expect_dismiss(&f, "canc0");
        expect_record("state canc0 canceled");
        expect_record("finished canc0 canceled -");

        /* The pending one finishes as any other. */
        check(job_finalize(j, true, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"pend0\"}}"), "{}");
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"pend0\", \"len\": 4194304, \"offset\": 4194304, \"speed\": 0, \"type\": \"commit\"}");
        peer_status(&f.peer, "pend0", "concluded");
        expect_dismiss(&f, "pend0");
        expect_record("state pend0 completed");
        expect_record("finished pend0 completed -");

        peer_status(&f.peer, "run0", "running"); /* no change: no record, no effect */
        expect_no_record();
        check(job_tracker_find(f.tracker, "ac1")->ready);
        teardown(&f);

        printf("adoption: query-jobs refused\n");
        setup(&f, LONG_POLL);
        check(job_tracker_adopt(f.tracker, on_adopted, NULL) == 0);
        peer_error(&f.peer, peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}"), "nope");
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"query-block-jobs\"}"), "[]");
        expect_record("adopted -QemuFailed");
        teardown(&f);
}


static void on_adopted_quiet(JobTracker *t, int error, void *userdata) {
        JOB_TRACKER_FOREACH(j, t)
                record("adopted %s %s %s%s", j->id, job_type_to_string(j->type), job_state_to_string(j->state),
                       j->auto_finalize ? " auto_finalize" : "");
}

/* ---- jobs with an owner of their own (an operation's step) ---- */

static bool owner_finalizes = true;

static void on_owned_state_changed(Job *j, void *userdata) {
        check(streq((const char *) userdata, "op"));
        record("op: state %s %s%s%s", j->id, job_state_to_string(j->state), j->error ? " error=" : "", strempty(j->error));
}

static void on_owned_ready(Job *j, void *userdata) {
        record("op: ready %s", j->id);
}

static void on_owned_pending(Job *j, void *userdata) {
        record("op: pending %s", j->id);
        if (owner_finalizes)
                check(job_finalize(j, true, NULL) == 0);
}

static void on_owned_finished(Job *j, void *userdata) {
        check(!j->tracker);
        record("op: finished %s %s %s", j->id, job_state_to_string(j->state), j->error ?: "-");
}

static void on_owned_detached(Job *j, void *userdata) {
        check(!j->tracker);
        record("op: detached %s %s", j->id, job_state_to_string(j->state));
}

static const JobObserver owned_observer = {
        .state_changed = on_owned_state_changed,
        .ready = on_owned_ready,
        .pending = on_owned_pending,
        .finished = on_owned_finished,
        .detached = on_owned_detached,
};

/* Registers an owned job and answers the tracker's sync poll. */
static Job *add_owned(Fixture *f, const char *id, JobType type, const char *qemu_type, bool auto_finalize) {
        _cleanup_free_ char *e = job_entry(id, qemu_type, "running", 0, 0, NULL), *ret = NULL;
        Job *j = NULL;

        check(job_tracker_add_job(f->tracker, id, &(JobSpec) {
                .type = type,
                .auto_finalize = auto_finalize,
                .observer = &owned_observer,
                .observer_userdata = (void *) "op",
        }, &j) == 0);
        check(j && j->owned && j->auto_finalize == auto_finalize && !j->disk);
        check(asprintf(&ret, "[%s]", e) > 0);
        peer_reply(&f->peer, peer_expect(&f->peer, "{\"execute\":\"query-jobs\"}"), ret);
        return j;
}

static void test_owned(void) {
        _cleanup_free_ char *e = NULL, *ret = NULL;
        Fixture f;
        Job *j;
        int64_t id;

        printf("owned snapshot-save: pending passes by, the end from query-jobs, only the owner hears\n");
        setup(&f, LONG_POLL);
        j = add_owned(&f, "save0", JOB_TYPE_SNAPSHOT_CREATE, "snapshot-save", true);
        check(job_tracker_add_job(f.tracker, "save0", &(JobSpec) { .type = JOB_TYPE_SNAPSHOT_CREATE }, NULL) == -QSNAP_E_ALREADY_EXISTS);
        peer_status(&f.peer, "save0", "waiting");
        peer_status(&f.peer, "save0", "pending"); /* QEMU finalizes it itself */
        expect_no_record();
        check(j->state == JOB_STATE_RUNNING);
        peer_expect_nothing(&f.peer);
        peer_status(&f.peer, "save0", "concluded");
        id = peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}");
        e = job_entry("save0", "snapshot-save", "concluded", 1, 1, NULL);
        check(asprintf(&ret, "[%s]", e) > 0);
        peer_reply(&f.peer, id, ret);
        expect_dismiss(&f, "save0");
        expect_record("op: state save0 completed");
        expect_record("op: finished save0 completed -");
        expect_no_record(); /* the tracker's observer heard nothing */
        check(!kept_job);
        teardown(&f);

        printf("owned block job: ready and pending go to the owner, who finalizes\n");
        setup(&f, LONG_POLL);
        j = add_owned(&f, "snapshot.delete-vda-1", JOB_TYPE_SNAPSHOT_DELETE, "commit", false);
        peer_status(&f.peer, "snapshot.delete-vda-1", "ready");
        expect_record("op: state snapshot.delete-vda-1 ready");
        expect_record("op: ready snapshot.delete-vda-1");
        check(job_pivot(j, on_done, NULL, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-complete\",\"arguments\":{\"id\":\"snapshot.delete-vda-1\"}}"),
                   "{}");
        expect_record("done snapshot.delete-vda-1 0 -");
        peer_status(&f.peer, "snapshot.delete-vda-1", "waiting");
        expect_record("op: state snapshot.delete-vda-1 running");
        peer_status(&f.peer, "snapshot.delete-vda-1", "pending");
        expect_record("op: state snapshot.delete-vda-1 pending");
        expect_record("op: pending snapshot.delete-vda-1");
        /* the owner's finalize (from pending()), then the sync poll of pending */
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"snapshot.delete-vda-1\"}}"),
                   "{}");
        answer_poll(&f, "snapshot.delete-vda-1", "commit", "pending", 1, 1);
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"snapshot.delete-vda-1\", \"len\": 1, \"offset\": 1, \"speed\": 0, \"type\": \"commit\"}");
        peer_status(&f.peer, "snapshot.delete-vda-1", "concluded");
        expect_dismiss(&f, "snapshot.delete-vda-1");
        expect_record("op: state snapshot.delete-vda-1 completed");
        expect_record("op: finished snapshot.delete-vda-1 completed -");
        teardown(&f);

        printf("owned jobs when the tracker goes: detached; a disowned one hears nothing and is dismissed\n");
        setup(&f, LONG_POLL);
        j = add_owned(&f, "load0", JOB_TYPE_SNAPSHOT_REVERT, "snapshot-load", true);
        job_disown(j);
        job_disown(j);
        check(j->owned);
        peer_status(&f.peer, "load0", "concluded");
        ret = mfree(ret);
        e = mfree(e);
        e = job_entry("load0", "snapshot-load", "concluded", 1, 1, "Device 'vda-fmt' is writable but does not support snapshots");
        check(asprintf(&ret, "[%s]", e) > 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}"), ret);
        expect_dismiss(&f, "load0");
        expect_no_record();
        check(!job_tracker_find(f.tracker, "load0"));
        add_owned(&f, "save1", JOB_TYPE_SNAPSHOT_CREATE, "snapshot-save", true);
        f.tracker = job_tracker_free(f.tracker);
        expect_record("op: detached save1 running");
        teardown(&f);

        printf("owned jobs when QEMU goes: they fail, the owner hears\n");
        setup(&f, LONG_POLL);
        add_owned(&f, "save2", JOB_TYPE_SNAPSHOT_CREATE, "snapshot-save", true);
        job_tracker_disconnected(f.tracker);
        expect_record("op: state save2 failed error=" "QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("op: finished save2 failed " "QEMU went away before the job ended (its process exited or closed the monitor)");
        teardown(&f);

        printf("adoption: a pending snapshot job is QEMU's to finalize: adopted running\n");
        setup(&f, LONG_POLL);
        check(job_tracker_adopt(f.tracker, on_adopted_quiet, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}"),
                   "[{\"current-progress\": 0, \"status\": \"pending\", \"total-progress\": 1, \"type\": \"snapshot-save\", "
                   "\"id\": \"qsnap-save-1\"}]");
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"query-block-jobs\"}"), "[]");
        expect_record("adopted qsnap-save-1 snapshot-create running auto_finalize");
        expect_no_record(); /* no pending(): nobody may finalize it */
        peer_expect_nothing(&f.peer);
        j = job_tracker_find(f.tracker, "qsnap-save-1");
        check(j && !j->owned && j->state == JOB_STATE_RUNNING);
        teardown(&f);
}

static void test_disconnect(void) {
        _cleanup_free_ char *message = NULL;
        Fixture f;
        Job *j, *k;
        int64_t id;

        printf("disconnect with a poll and a command in flight: every job fails, \"QEMU went away before the job ended (its process exited or closed the monitor)\"\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "s2", JOB_TYPE_PULL, "stream", 0, MiB);
        k = add_job(&f, "m7", JOB_TYPE_COPY, "mirror", 0, MiB);
        (void) k;
        check(job_tracker_add(f.tracker, "b0", JOB_TYPE_BACKUP, "vda", 0, NULL) == 0);
        peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}"); /* its sync poll, left unanswered */
        check(job_set_speed(j, MiB, on_done, NULL, NULL) == 0);
        peer_expect(&f.peer, "{\"execute\":\"block-job-set-speed\",\"arguments\":{\"device\":\"s2\",\"speed\":1048576}}");
        peer_close(&f.peer);
        drain();
        expect_record("state s2 failed error=QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("finished s2 failed QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("state m7 failed error=QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("finished m7 failed QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("state b0 failed error=QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("finished b0 failed QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("done s2 -ECONNRESET QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("disconnect");
        check(j->bandwidth == 0);
        check(job_tracker_add(f.tracker, "x", JOB_TYPE_PULL, "vda", 0, NULL) == -ENOTCONN);
        check(job_tracker_adopt(f.tracker, on_adopted, NULL) == -ENOTCONN);
        check(!job_tracker_first(f.tracker));
        teardown(&f);

        printf("disconnect with nothing in flight (a READY job): the owner's call ends it\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "m8", JOB_TYPE_COPY, "mirror", 0, MiB);
        peer_ready(&f.peer, "m8", "mirror", MiB);
        expect_record("state m8 ready ready");
        expect_record("ready m8");
        peer_close(&f.peer);
        drain();
        expect_record("disconnect");
        expect_record("state m8 failed error=QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("finished m8 failed QEMU went away before the job ended (its process exited or closed the monitor)");
        check(job_pivot(j, on_done, NULL, &message) == -QSNAP_E_OPERATION_INVALID);
        teardown(&f);

        printf("disconnect after the job concluded: it ends as it did\n");
        setup(&f, LONG_POLL);
        add_job(&f, "c3", JOB_TYPE_COMMIT, "commit", MiB, MiB);
        pending_action = PENDING_FINALIZE;
        peer_status(&f.peer, "c3", "pending");
        expect_record("state c3 pending");
        expect_record("pending c3");
        id = peer_expect(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"c3\"}}");
        answer_poll(&f, "c3", "commit", "pending", MiB, MiB);
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED",
                   "{\"device\": \"c3\", \"len\": 1048576, \"offset\": 1048576, \"speed\": 0, \"type\": \"commit\"}");
        peer_status(&f.peer, "c3", "concluded");
        peer_reply(&f.peer, id, "{}");
        peer_expect(&f.peer, "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"c3\"}}");
        peer_close(&f.peer);
        drain();
        expect_record("state c3 completed");
        expect_record("finished c3 completed -");
        expect_record("disconnect");
        teardown(&f);
}

static void test_unknown_events(void) {
        Fixture f;
        Job *j;

        printf("unknown and malformed events, other jobs' events: ignored\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "m9", JOB_TYPE_COPY, "mirror", 5, 10);
        peer_event(&f.peer, "FUTURE_EVENT", "{\"id\": \"m9\", \"status\": \"concluded\"}");
        peer_event(&f.peer, "BLOCK_JOB_FUTURE", "{\"device\": \"m9\", \"len\": 99, \"offset\": 99}");
        peer_event(&f.peer, "BLOCK_JOB_READY", "{\"device\": 5}");
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED", "{\"len\": 1}");
        peer_event(&f.peer, "JOB_STATUS_CHANGE", "{\"id\": \"m9\"}");
        peer_event(&f.peer, "JOB_STATUS_CHANGE", "[]");
        peer_status(&f.peer, "m9", "some-future-status");
        peer_status(&f.peer, "m9", "created");
        peer_status(&f.peer, "other", "concluded"); /* not ours: e.g. a snapshot-save of ops/snapshot-create.c */
        peer_event(&f.peer, "BLOCK_JOB_CANCELLED", "{\"device\": \"other\", \"len\": 1, \"offset\": 1, \"speed\": 0, \"type\": \"stream\"}");
        peer_say(&f.peer, "{\"event\": \"JOB_STATUS_CHANGE\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n");
        expect_no_record();
        peer_expect_nothing(&f.peer);
        check(j->state == JOB_STATE_RUNNING && j->cur == 5 && j->end == 10 && !j->cancelled_seen);
        teardown(&f);
}

static void test_vanished(void) {
        Fixture f;

        printf("a job someone else dismissed, or missing from query-jobs: failed, \"vanished\"\n");
        setup(&f, LONG_POLL);
        add_job(&f, "s3", JOB_TYPE_PULL, "stream", 0, MiB);
        peer_status(&f.peer, "s3", "null");
        expect_record("state s3 failed error=Job vanished from QEMU (dismissed by someone else?)");
        expect_record("finished s3 failed Job vanished from QEMU (dismissed by someone else?)");
        check(job_tracker_add(f.tracker, "s4", JOB_TYPE_PULL, "vda", 0, NULL) == 0);
        peer_reply(&f.peer, peer_expect(&f.peer, "{\"execute\":\"query-jobs\"}"), "[]");
        expect_record("state s4 failed error=Job vanished from QEMU (dismissed by someone else?)");
        expect_record("finished s4 failed Job vanished from QEMU (dismissed by someone else?)");
        peer_expect_nothing(&f.peer);
        teardown(&f);
}

static void test_free_in_callbacks(void) {
        Fixture f;
        Job *j, *k;

        printf("the owner frees the tracker from finished() while another job ends too\n");
        setup(&f, LONG_POLL);
        j = add_job(&f, "s5", JOB_TYPE_PULL, "stream", 0, MiB);
        k = add_job(&f, "s6", JOB_TYPE_PULL, "stream", 0, MiB);
        check(job_pause(j, on_done, NULL, NULL) == 0);
        check(job_set_speed(k, MiB, on_done, NULL, NULL) == 0);
        peer_expect(&f.peer, "{\"execute\":\"job-pause\",\"arguments\":{\"id\":\"s5\"}}");
        free_tracker_on_finished = &f.tracker;
        peer_close(&f.peer);
        drain();
        /* s5 ended; the tracker went in its finished(): s6 silently
         * detached, its caller told that nobody tracks it any more, and
         * the job-pause caller that QEMU went away before the job ended (its process exited or closed the monitor). */
        expect_record("state s5 failed error=QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("finished s5 failed QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("done s6 -OperationInvalid qsnapd stopped tracking the job");
        expect_record("done s5 -ECONNRESET QEMU went away before the job ended (its process exited or closed the monitor)");
        expect_record("disconnect");
        check(!f.tracker && kept_job == j);
        teardown(&f);

        printf("job_tracker_free() with jobs and commands in flight: no observer calls, jobs detached\n");
        setup(&f, LONG_POLL);
        j = job_ref(add_job(&f, "s7", JOB_TYPE_PULL, "stream", 0, MiB));
        check(job_set_speed(j, MiB, on_done, NULL, NULL) == 0);
        f.tracker = job_tracker_free(f.tracker);
        expect_record("done s7 -OperationInvalid qsnapd stopped tracking the job");
        check(!j->tracker && j->state == JOB_STATE_RUNNING);
        check(job_pause(j, on_done, NULL, NULL) == -QSNAP_E_OPERATION_INVALID);
        peer_expect(&f.peer, "{\"execute\":\"block-job-set-speed\",\"arguments\":{\"device\":\"s7\",\"speed\":1048576}}");
        peer_status(&f.peer, "s7", "concluded");
        run_for(50 * USEC_PER_MSEC);
        peer_expect_nothing(&f.peer);
        job_unref(j);
        teardown(&f);
}

/* ---- against a real QEMU ---- */

typedef struct Smoke {
        bool done, finished, pending, ready;
        unsigned n_ready;
        int error;
        JobTracker *tracker;
        Job *job;
} Smoke;

static Smoke smoke;

static void on_smoke_reply(Qmp *q, int error, json_object *result, const char *c, const char *d, void *userdata) {
        if (error == -QSNAP_E_QEMU_FAILED)
                fprintf(stderr, "QEMU error: %s: %s\n", c, d);
        smoke.done = true;
        smoke.error = error;
}

/* The owner registers the job once QEMU accepted the command. */
static void on_smoke_stream_started(Qmp *q, int error, json_object *result, const char *c, const char *d, void *userdata) {
        on_smoke_reply(q, error, result, c, d, userdata);
        if (error == 0)
                check(job_tracker_add(smoke.tracker, "stream0", JOB_TYPE_PULL, "vda", 4 * MiB, &smoke.job) == 0);
}

static void on_smoke_qmp_ready(Qmp *q, int error, void *userdata) {
        smoke.done = true;
        smoke.error = error;
}

static void on_smoke_ready(Job *j, void *userdata) {
        printf("  ready at %" PRIu64 "/%" PRIu64 "\n", j->cur, j->end);
        smoke.ready = true;
        smoke.n_ready++;
}

static void on_smoke_pending(Job *j, void *userdata) {
        printf("  pending at %" PRIu64 "/%" PRIu64 "%s; chain bookkeeping would go here\n", j->cur, j->end,
               j->aborting ? " (aborted)" : "");
        smoke.pending = true;
        check(job_finalize(j, true, NULL) == 0);
}

static void on_smoke_state(Job *j, void *userdata) {
        printf("  state %s\n", job_state_to_string(j->state));
}

static void on_smoke_progress(Job *j, void *userdata) {
        printf("  progress %" PRIu64 "/%" PRIu64 " rate %" PRIu64 " B/s\n", j->cur, j->end, j->rate);
}

static void on_smoke_finished(Job *j, void *userdata) {
        printf("  finished %s %s\n", job_state_to_string(j->state), strna(j->error));
        smoke.finished = true;
        check(!kept_job);
        kept_job = job_ref(j);
}

static void run_until(const bool *flag, uint64_t timeout) {
        uint64_t until = now_usec(CLOCK_MONOTONIC) + timeout;

        while (!*flag && now_usec(CLOCK_MONOTONIC) < until)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        check(*flag);
}

static int run(const char *cmdline) {
        int r = system(cmdline);
        return WIFEXITED(r) ? WEXITSTATUS(r) : -1;
}

static void test_real_qemu(void) {
        static const JobObserver smoke_observer = {
                .progress = on_smoke_progress,
                .state_changed = on_smoke_state,
                .ready = on_smoke_ready,
                .pending = on_smoke_pending,
                .finished = on_smoke_finished,
        };
        char dir[] = "/tmp/test-job-XXXXXX", path[128], base_arg[256], top_arg[256], cmd[1024];
        _cleanup_free_ char *info = NULL;
        JobTracker *t = NULL;
        Qmp *q = NULL;
        Job *j = NULL;

        /* Loud, not skipped: CI must have QEMU (as in test-qmp.c). */
        check(access(REAL_QEMU, X_OK) >= 0 && access("/usr/bin/qemu-img", X_OK) >= 0 && access("/usr/bin/qemu-io", X_OK) >= 0);
        printf("real QEMU: block-stream with auto-finalize=false through the tracker\n");
        check(mkdtemp(dir));

        /* base (pattern 0xab in its first 8 MiB) <- top */
        snprintf(cmd, sizeof(cmd),
                 "cd %s && qemu-img create -q -f qcow2 base.qcow2 64M && "
                 "qemu-io -c 'write -P 0xab 0 8M' base.qcow2 >/dev/null && "
                 "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 64M", dir);
        check(run(cmd) == 0);
        snprintf(base_arg, sizeof(base_arg),
                 "driver=qcow2,node-name=base-fmt,file.driver=file,file.filename=%s/base.qcow2", dir);
        snprintf(top_arg, sizeof(top_arg),
                 "driver=qcow2,node-name=top-fmt,file.driver=file,file.filename=%s/top.qcow2,backing=base-fmt", dir);

        {
                const char *const disks[] = { "-blockdev", base_arg, "-blockdev", top_arg, "-device",
                                              "virtio-blk-pci,drive=top-fmt,id=vd0", NULL };
                q = real_qemu_launch(dir, disks);
        }
        smoke = (Smoke) {};
        qmp_set_ready_callback(q, on_smoke_qmp_ready, NULL);
        run_until(&smoke.done, 10 * USEC_PER_SEC);
        check(smoke.error == 0);

        check(job_tracker_new(q, event, &smoke_observer, NULL, &t) >= 0);
        smoke.tracker = t;
        smoke.done = false;
        /* Throttled at first, so that it runs long enough to be polled. */
        check(qmp_cmd_block_stream(q, "stream0", "top-fmt", NULL, NULL, 4 * MiB, on_smoke_stream_started, NULL) > 0);
        run_until(&smoke.done, 10 * USEC_PER_SEC);
        check(smoke.error == 0);
        j = smoke.job;
        check(j && j->bandwidth == 4 * MiB);
        run_for(600 * USEC_PER_MSEC);
        check(j->state == JOB_STATE_RUNNING && j->cur > 0 && j->cur < j->end);
        printf("  throttled: %" PRIu64 "/%" PRIu64 ", rate %" PRIu64 " B/s\n", j->cur, j->end, j->rate);
        smoke.done = false;
        check(job_set_speed(j, 0, NULL, NULL, NULL) == 0);
        run_until(&smoke.finished, 60 * USEC_PER_SEC);
        check(smoke.pending);
        check(kept_job == j && j->state == JOB_STATE_COMPLETED && !j->error && j->bandwidth == 0);
        check(j->cur == j->end && j->end == 64 * MiB);
        kept_job = job_unref(kept_job);

        /* The top no longer has a backing file and holds the data. */
        snprintf(cmd, sizeof(cmd), "qemu-img info -U --output=json %s/top.qcow2", dir);
        {
                char *argv[] = { (char *) "/bin/sh", (char *) "-c", cmd, NULL };
                check(child_run_fds(argv, NULL, 0, &info) == 0);
        }
        check(!strstr(info, "backing-filename"));
        snprintf(cmd, sizeof(cmd), "qemu-io -U -r -c 'read -P 0xab 0 8M' %s/top.qcow2 | grep -q 'read 8388608'", dir);
        check(run(cmd) == 0);

        /* A copy aborted without pivot once READY: QEMU ends it with
         * BLOCK_JOB_COMPLETED, we call it canceled; the copy is whole. */
        printf("real QEMU: blockdev-mirror, READY, abort without pivot → canceled, copy consistent\n");
        snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s/copy.qcow2 64M", dir);
        check(run(cmd) == 0);
        snprintf(path, sizeof(path), "%s/copy.qcow2", dir);
        smoke.done = false;
        check(qmp_cmd_blockdev_add_overlay(q, "copy-fmt", path, NULL, on_smoke_reply, NULL) > 0);
        run_until(&smoke.done, 10 * USEC_PER_SEC);
        check(smoke.error == 0);
        smoke.done = smoke.finished = smoke.pending = false;
        check(qmp_cmd_blockdev_mirror(q, "copy0", "top-fmt", "copy-fmt", "full", 0, on_smoke_reply, NULL) > 0);
        check(job_tracker_add(t, "copy0", JOB_TYPE_COPY, "vda", 0, &j) == 0);
        run_until(&smoke.ready, 60 * USEC_PER_SEC);
        check(smoke.done && smoke.error == 0 && j->state == JOB_STATE_READY && j->cur == j->end);
        run_for(300 * USEC_PER_MSEC); /* QEMU's own ready → standby → ready shows as nothing */
        check(j->state == JOB_STATE_READY && smoke.n_ready == 1);
        smoke.done = false;
        check(job_abort(j, false, NULL, NULL, NULL) == 0);
        run_until(&smoke.finished, 60 * USEC_PER_SEC);
        check(smoke.pending && kept_job == j && j->state == JOB_STATE_CANCELED && !j->error);
        kept_job = job_unref(kept_job);
        snprintf(cmd, sizeof(cmd), "qemu-img compare -U %s/top.qcow2 %s/copy.qcow2 >/dev/null", dir, dir);
        check(run(cmd) == 0);

        t = job_tracker_free(t);
        smoke.done = false;
        check(qmp_cmd_quit(q, on_smoke_reply, NULL) > 0);
        run_until(&smoke.done, 10 * USEC_PER_SEC);
        real_qemu_wait(false);
        qmp_unref(q);
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        check(run(cmd) == 0);
}

int main(int argc, char *argv[]) {
        if (getenv("JOB_TEST_DEBUG"))
                log_set_max_level(LOG_DEBUG);
        else
                log_set_max_level(LOG_CRIT); /* the tests provoke errors on purpose */
        setvbuf(stdout, NULL, _IOLBF, 0);
        check(sd_event_new(&event) >= 0);

        test_strings();
        test_commit_lifecycle();
        test_active_commit_pivot();
        test_pivot_failed_is_no_pivot();
        test_pivot_refused_by_qemu();
        test_failure();
        test_abort();
        test_set_speed();
        test_pause_resume();
        test_adopt();
        test_disconnect();
        test_unknown_events();
        test_vanished();
        test_free_in_callbacks();
        test_owned();
        test_polling_stops();
        test_progress();
        test_real_qemu();

        expect_no_record();
        sd_event_unref(event);
        printf("all job tests passed\n");
        return EXIT_SUCCESS;
}
