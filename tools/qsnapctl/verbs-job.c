/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Block job verbs: blockpull, blockrebase, blockcommit, blockcopy,
 * blockjob, jobs — and following a job to its end (JobWatch): the job's
 * Progress, Ready and Completed signals, and the domain's BlockJobEvent,
 * are subscribed to before the job starts, so that no signal is missed; a
 * live bar on a terminal (plain lines with --verbose elsewhere) is drawn
 * from the Progress signals alone, never by polling; Ctrl-C aborts the job
 * and waits for its end, a second Ctrl-C leaves it running.
 */
#include <math.h>
#include <signal.h>
#include <systemd/sd-event.h>

#include "cli.h"

typedef enum EventKind {
        EV_PROGRESS,
        EV_READY,
        EV_COMPLETED,
} EventKind;

typedef struct JobEvent {
        char *job;
        EventKind kind;
        uint64_t cur, end;
        char *status, *error;
} JobEvent;

struct JobWatch {
        Ctx *c;
        sd_bus_slot *slot;
        JobEvent *events;
        size_t n_events, consumed;

        /* while waiting */
        sd_event *event;
        const char *job;
        const char *label;
        JobEnd end_mode;
        bool verbose;
        bool abort_async;
        uint64_t cur, end;
        bool have_progress;
        bool steps; /* Cur/End count steps (100 per step), not bytes: snapshot-* jobs */
        bool ready, ready_handled, completed;
        char *status, *error;
        int interrupts;
        bool aborting, timed_out, pivoting, finishing;
        int result;
        /* drawing */
        uint64_t start_usec, last_line_usec;
        uint64_t drawn_cur, drawn_end;
        bool drawn;
        struct {
                uint64_t usec, cur;
        } samples[16];
        size_t n_samples;
};

static void event_free(JobEvent *e) {
        free(e->job);
        free(e->status);
        free(e->error);
}

JobWatch *job_watch_free(JobWatch *w) {
        if (!w)
                return NULL;
        sd_bus_slot_unref(w->slot);
        for (size_t i = 0; i < w->n_events; i++)
                event_free(&w->events[i]);
        free(w->events);
        free(w->status);
        free(w->error);
        sd_event_unref(w->event);
        free(w);
        return NULL;
}

static int record(JobWatch *w, const char *job, EventKind kind, uint64_t cur, uint64_t end, const char *status,
                  const char *error) {
        JobEvent *e = realloc(w->events, (w->n_events + 1) * sizeof(JobEvent));

        if (!e)
                return -ENOMEM;
        w->events = e;
        e = &w->events[w->n_events];
        *e = (JobEvent) { .kind = kind, .cur = cur, .end = end };
        e->job = strdup(job);
        e->status = status ? strdup(status) : NULL;
        e->error = error ? strdup(error) : NULL;
        if (!e->job) {
                event_free(e);
                return -ENOMEM;
        }
        w->n_events++;
        return 0;
}

static void process_events(JobWatch *w);

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        JobWatch *w = userdata;
        const char *iface = sd_bus_message_get_interface(m), *member = sd_bus_message_get_member(m);
        const char *path = sd_bus_message_get_path(m);

        if (!iface || !member || !path)
                return 0;
        if (streq(iface, QSNAP_JOB_IFACE)) {
                if (streq(member, "Progress")) {
                        uint64_t cur, end;
                        if (sd_bus_message_read(m, "tt", &cur, &end) >= 0)
                                record(w, path, EV_PROGRESS, cur, end, NULL, NULL);
                } else if (streq(member, "Ready"))
                        record(w, path, EV_READY, 0, 0, NULL, NULL);
                else if (streq(member, "Completed")) {
                        const char *status, *error;
                        if (sd_bus_message_read(m, "ss", &status, &error) >= 0)
                                record(w, path, EV_COMPLETED, 0, 0, status, error);
                }
        } else if (streq(iface, QSNAP_DOMAIN_IFACE) && streq(member, "BlockJobEvent")) {
                const char *job, *disk, *type, *status, *error;
                if (sd_bus_message_read(m, "osss" "s", &job, &disk, &type, &status, &error) >= 0)
                        record(w, job, streq(status, "ready") ? EV_READY : EV_COMPLETED, 0, 0, status, error);
        }
        if (w->job)
                process_events(w);
        return 0;
}

int job_watch_begin(Ctx *c, const char *domain_path, JobWatch **ret) {
        _cleanup_(job_watch_freep) JobWatch *w = new0(JobWatch, 1);
        _cleanup_free_ char *rule = NULL;
        int r;

        if (!w)
                return -ENOMEM;
        w->c = c;
        rule = strprintf("type='signal',sender='%s',path_namespace='%s'", QSNAP_BUS_NAME, domain_path);
        if (!rule)
                return -ENOMEM;
        r = sd_bus_add_match(c->bus, &w->slot, rule, on_signal, w);
        if (r < 0) {
                fail("Failed to subscribe to the job's signals: %s", strerror(-r));
                return r;
        }
        *ret = TAKE_PTR(w);
        return 0;
}

/* ---- drawing ---- */

static const char *job_label(const char *type) {
        if (!type)
                return "Block job";
        if (streq(type, "pull"))
                return "Block Pull";
        if (streq(type, "copy"))
                return "Block Copy";
        if (streq(type, "commit"))
                return "Block Commit";
        if (streq(type, "active-commit"))
                return "Active Block Commit";
        if (streq(type, "backup"))
                return "Backup";
        if (streq(type, "snapshot-delete"))
                return "Snapshot delete";
        if (streq(type, "snapshot-revert"))
                return "Snapshot revert";
        if (streq(type, "snapshot-create"))
                return "Snapshot create";
        return type;
}

static unsigned percent_of(uint64_t cur, uint64_t end) {
        if (end == 0)
                return 0;
        if (cur >= end)
                return 100;
        return (unsigned) ((long double) cur * 100.0L / (long double) end);
}

/* Bytes per second over the last few seconds of Progress signals. */
static uint64_t measured_rate(JobWatch *w) {
        size_t n = w->n_samples;

        if (n < 2)
                return 0;
        uint64_t dt = w->samples[n - 1].usec - w->samples[0].usec;
        uint64_t dc = w->samples[n - 1].cur >= w->samples[0].cur ? w->samples[n - 1].cur - w->samples[0].cur : 0;
        if (dt < 100 * USEC_PER_MSEC)
                return 0;
        return (uint64_t) ((long double) dc * USEC_PER_SEC / dt);
}

static void add_sample(JobWatch *w, uint64_t now, uint64_t cur) {
        if (w->n_samples > 0 && cur < w->samples[w->n_samples - 1].cur)
                w->n_samples = 0; /* the job went back (a new End): start over */
        while (w->n_samples > 0 && (w->n_samples == ELEMENTSOF(w->samples) || now - w->samples[0].usec > 5 * USEC_PER_SEC)) {
                memmove(w->samples, w->samples + 1, (w->n_samples - 1) * sizeof(w->samples[0]));
                w->n_samples--;
        }
        w->samples[w->n_samples].usec = now;
        w->samples[w->n_samples].cur = cur;
        w->n_samples++;
}

static char *progress_text(JobWatch *w, bool bar) {
        unsigned pct = percent_of(w->cur, w->end);
        uint64_t rate = measured_rate(w);
        _cleanup_free_ char *cur = format_size(w->cur), *end = format_size(w->end), *r = NULL, *eta = NULL;
        char bars[41];
        size_t width = 30, filled = pct * width / 100;

        for (size_t i = 0; i < width; i++)
                bars[i] = i < filled ? '#' : '-';
        bars[width] = '\0';
        if (rate > 0) {
                r = format_rate(rate);
                if (w->end > w->cur)
                        eta = format_duration((w->end - w->cur + rate - 1) / rate);
        }
        if (w->steps) { /* no bytes to show: percent and ETA */
                if (bar)
                        return strprintf("%s: [%s] %3u %%%s%s", w->label, bars, pct, eta ? "  ETA " : "", strempty(eta));
                return strprintf("%s: %u %%%s%s%s", w->label, pct, eta ? " (ETA " : "", strempty(eta), eta ? ")" : "");
        }
        if (bar)
                return strprintf("%s: [%s] %3u %%  %s of %s%s%s%s%s", w->label, bars, pct, strna(cur), strna(end),
                                 r ? "  " : "", strempty(r), eta ? "  ETA " : "", strempty(eta));
        return strprintf("%s: %u %% (%s of %s%s%s%s%s)", w->label, pct, strna(cur), strna(end), r ? ", " : "",
                         strempty(r), eta ? ", ETA " : "", strempty(eta));
}

static bool showing_bar(JobWatch *w) {
        return w->c->is_tty;
}

static void draw(JobWatch *w) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        _cleanup_free_ char *text = NULL;

        /* A job that serves (a pull backup) has no end to show progress towards. */
        if (!w->have_progress || w->end_mode == JOB_END_SERVE)
                return;
        /* Never draw backwards (a queued older signal after a newer reading), nor the same twice. */
        if (w->drawn && w->end == w->drawn_end && w->cur <= w->drawn_cur)
                return;
        if (showing_bar(w)) {
                text = progress_text(w, true);
                if (text) {
                        printf("\r\033[K%s", text);
                        fflush(stdout);
                }
        } else if (w->verbose) {
                if (w->drawn && now - w->last_line_usec < USEC_PER_SEC && percent_of(w->cur, w->end) < 100)
                        return;
                text = progress_text(w, false);
                if (text)
                        printf("%s\n", text);
                w->last_line_usec = now;
        } else
                return;
        w->drawn = true;
        w->drawn_cur = w->cur;
        w->drawn_end = w->end;
}

/* Ends the bar's line, so that what follows starts on a line of its own. */
static void end_bar(JobWatch *w) {
        if (showing_bar(w) && w->drawn) {
                printf("\n");
                w->drawn = false;
        }
}

/* ---- the wait ---- */

static void finish(JobWatch *w, int result) {
        w->result = result;
        (void) sd_event_exit(w->event, result);
}

static int on_pivot_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        JobWatch *w = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (e) {
                end_bar(w);
                print_bus_error(e, -sd_bus_message_get_errno(m));
                finish(w, EXIT_FAILED);
        }
        return 0;
}

static int on_abort_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        JobWatch *w = userdata;
        const sd_bus_error *e = sd_bus_message_get_error(m);

        if (e) {
                end_bar(w);
                /* The job may have ended meanwhile: its Completed decides. */
                if (!w->completed && !sd_bus_error_has_name(e, QSNAP_ERROR_PREFIX "OperationInvalid")) {
                        print_bus_error(e, -sd_bus_message_get_errno(m));
                        finish(w, EXIT_FAILED);
                }
                return 0;
        }
        if (w->abort_async && !w->finishing) {
                end_bar(w);
                printf("%s: abort requested; the job ends in the background (%s)\n", w->label, w->job);
                finish(w, EXIT_FAILED);
        }
        return 0;
}

static void send_abort(JobWatch *w) {
        int r = sd_bus_call_method_async(w->c->bus, NULL, QSNAP_BUS_NAME, w->job, QSNAP_JOB_IFACE, "Abort",
                                         on_abort_reply, w, "t", (uint64_t) (w->abort_async ? 1 : 0));
        if (r < 0) {
                fail("Failed to abort the job: %s", strerror(-r));
                finish(w, EXIT_FAILED);
        }
}

static void on_ready(JobWatch *w) {
        int r;

        if (w->ready_handled || w->completed)
                return;
        w->ready_handled = true;
        switch (w->end_mode) {
        case JOB_END_WAIT:
        case JOB_END_SERVE:
                break;
        case JOB_END_READY:
                if (w->aborting)
                        break;
                end_bar(w);
                printf("%s: ready; %s\n", w->label,
                       strstr(w->label, "Copy") ? "now in mirroring phase (blockjob --pivot or --abort ends it)"
                                                : "now in synchronized phase (blockjob --pivot or --abort ends it)");
                finish(w, EXIT_OK);
                break;
        case JOB_END_PIVOT:
                if (w->aborting)
                        break;
                w->pivoting = true;
                r = sd_bus_call_method_async(w->c->bus, NULL, QSNAP_BUS_NAME, w->job, QSNAP_JOB_IFACE, "Pivot",
                                             on_pivot_reply, w, NULL);
                if (r < 0) {
                        fail("Failed to pivot: %s", strerror(-r));
                        finish(w, EXIT_FAILED);
                }
                break;
        case JOB_END_FINISH:
                if (w->aborting)
                        break;
                w->finishing = true;
                send_abort(w);
                break;
        }
}

static void on_completed(JobWatch *w, const char *status, const char *error) {
        uint64_t secs;
        _cleanup_free_ char *took = NULL, *size = NULL;

        if (w->completed)
                return;
        w->completed = true;
        free_and_strdup(&w->status, status);
        free_and_strdup(&w->error, error);
        if (streq_ptr(status, "completed") && w->end_mode != JOB_END_SERVE && w->end > 0 &&
            !(w->drawn && w->drawn_cur == w->end)) {
                w->cur = w->end;
                w->have_progress = true;
                draw(w);
        }
        end_bar(w);
        secs = (now_usec(CLOCK_MONOTONIC) - w->start_usec) / USEC_PER_SEC;
        took = format_duration(secs);
        size = w->steps ? strprintf("%" PRIu64 " step%s", (w->end + 99) / 100, (w->end + 99) / 100 == 1 ? "" : "s")
                        : format_size(w->end);
        if (streq_ptr(status, "completed") && w->end_mode == JOB_END_SERVE) {
                printf("%s: ended; nothing is served any more (after %s)\n", w->label, strna(took));
                finish(w, EXIT_OK);
        } else if (streq_ptr(status, "completed")) {
                if (w->pivoting)
                        printf("%s: successfully pivoted (%s in %s)\n", w->label, strna(size), strna(took));
                else
                        printf("%s: completed (%s in %s)\n", w->label, strna(size), strna(took));
                finish(w, EXIT_OK);
        } else if (streq_ptr(status, "canceled")) {
                if (w->finishing && !w->aborting) {
                        printf("%s: finished; the disk stays as it was (%s in %s)\n", w->label, strna(size), strna(took));
                        finish(w, EXIT_OK);
                } else {
                        printf("%s: %s; the job was aborted and has ended (canceled)\n", w->label,
                               w->timed_out ? "timed out" : w->aborting ? "interrupted" : "canceled");
                        finish(w, EXIT_FAILED);
                }
        } else {
                fprintf(stderr, "error: %s failed: %s\n", w->label, isempty(error) ? "(no reason given)" : error);
                finish(w, EXIT_FAILED);
        }
}

static void process_events(JobWatch *w) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);

        for (; w->consumed < w->n_events; w->consumed++) {
                JobEvent *e = &w->events[w->consumed];

                if (!streq(e->job, w->job) || w->completed)
                        continue;
                switch (e->kind) {
                case EV_PROGRESS:
                        w->cur = e->cur;
                        w->end = e->end;
                        w->have_progress = true;
                        add_sample(w, now, e->cur);
                        draw(w);
                        break;
                case EV_READY:
                        w->ready = true;
                        on_ready(w);
                        break;
                case EV_COMPLETED:
                        on_completed(w, e->status, e->error);
                        break;
                }
        }
}

static int on_interrupt(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        JobWatch *w = userdata;

        w->interrupts++;
        end_bar(w);
        if (w->interrupts == 1 && !w->completed && w->end_mode == JOB_END_SERVE) {
                fprintf(stderr, "%s: ending it (Ctrl-C again to leave it serving)\n", w->label);
                w->aborting = true;
                send_abort(w);
                return 0;
        }
        if (w->interrupts == 1 && !w->completed) {
                fprintf(stderr, "%s: interrupted: aborting the job and waiting for it to end (Ctrl-C again to leave it running)\n",
                        w->label);
                w->aborting = true;
                send_abort(w);
                return 0;
        }
        fprintf(stderr, "%s: no longer waiting; the job goes on without qsnapctl: %s (qsnapctl blockjob shows it)\n",
                w->label, w->job);
        finish(w, EXIT_FAILED);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        JobWatch *w = userdata;

        if (w->completed || w->aborting)
                return 0;
        end_bar(w);
        fprintf(stderr, "%s: timed out: aborting the job\n", w->label);
        w->timed_out = w->aborting = true;
        send_abort(w);
        return 0;
}

int job_wait(Ctx *c, JobWatch *w, const char *job_path, const char *label, JobEnd end, bool verbose,
             uint64_t timeout_sec, bool abort_async) {
        _cleanup_(props_freep) Props *p = NULL;
        sigset_t mask;
        const char *state;
        int r;

        w->job = job_path;
        w->end_mode = end;
        w->verbose = verbose;
        w->abort_async = abort_async;
        w->start_usec = now_usec(CLOCK_MONOTONIC);
        w->result = EXIT_FAILED;

        /* The state when we start listening; queued signals come after. */
        if (props_get_all(c, job_path, QSNAP_JOB_IFACE, &p) < 0)
                return EXIT_FAILED;
        w->label = label ?: job_label(props_str(p, "Type"));
        w->steps = props_str(p, "Type") && strncmp(props_str(p, "Type"), "snapshot-", 9) == 0;
        state = strempty(props_str(p, "State"));
        w->cur = props_u64(p, "Cur");
        w->end = props_u64(p, "End");
        w->have_progress = w->end > 0;
        add_sample(w, w->start_usec, w->cur);

        r = sd_event_new(&w->event);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, w->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                fail("Failed to set up the event loop: %s", strerror(-r));
                return EXIT_FAILED;
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(w->event, NULL, SIGINT, on_interrupt, w);
        (void) sd_event_add_signal(w->event, NULL, SIGTERM, on_interrupt, w);
        if (timeout_sec > 0)
                (void) sd_event_add_time_relative(w->event, NULL, CLOCK_MONOTONIC, timeout_sec * USEC_PER_SEC, 0,
                                                  on_timeout, w);

        draw(w);
        if (STR_IN_SET(state, "completed", "failed", "canceled"))
                on_completed(w, state, props_str(p, "Error"));
        else if (props_bool(p, "Ready") || streq(state, "ready")) {
                w->ready = true;
                on_ready(w);
        }
        process_events(w);
        if (!w->completed && !(w->end_mode == JOB_END_READY && w->ready_handled))
                r = sd_event_loop(w->event);
        (void) sd_bus_detach_event(c->bus);
        sigprocmask(SIG_UNBLOCK, &mask, NULL);
        end_bar(w);
        return w->result;
}

/* ---- starting jobs ---- */

int wait_options(Ctx *c, JobStart *s, bool can_ready) {
        uint64_t timeout;

        if (opt_number(c, "timeout", &timeout) < 0)
                return -EINVAL;
        s->wait = flag(c, "wait") || flag(c, "verbose") || timeout > 0 || s->end_mode == JOB_END_PIVOT ||
                  s->end_mode == JOB_END_FINISH;
        if (s->end_mode == JOB_END_WAIT && can_ready)
                s->end_mode = JOB_END_READY;
        if (flag(c, "async") && !s->wait) {
                usage_error("%s: --async goes with --wait, --timeout or --verbose", c->verb->name);
                return -EINVAL;
        }
        return 0;
}

/* Starts the job with the prepared call and, with --wait, follows it. */
int run_job(Ctx *c, const char *dpath, JobStart *s, sd_bus_message *m) {
        _cleanup_(job_watch_freep) JobWatch *w = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        uint64_t timeout = 0;
        const char *job;
        int r;

        (void) opt_number(c, "timeout", &timeout);
        if (s->wait && job_watch_begin(c, dpath, &w) < 0)
                return EXIT_FAILED;
        r = sd_bus_call(c->bus, m, 0, &error, &reply);
        if (r < 0) {
                print_bus_error(&error, r);
                sd_bus_error_free(&error);
                return EXIT_FAILED;
        }
        r = sd_bus_message_read(reply, "o", &job);
        if (r < 0)
                return EXIT_FAILED;
        if (s->wait) {
                /* From now on Ctrl-C is the wait's: it aborts the job (job_wait() unblocks). */
                sigset_t mask;
                sigemptyset(&mask);
                sigaddset(&mask, SIGINT);
                sigaddset(&mask, SIGTERM);
                sigprocmask(SIG_BLOCK, &mask, NULL);
        } else if (!c->json) {
                _cleanup_free_ char *id = path_last_name(job);
                printf("%s started (job %s)\n", s->label, strna(id));
        }
        if (s->started)
                s->started(c, dpath, job, s);
        if (!s->wait)
                return EXIT_OK;
        return job_wait(c, w, job, s->label, s->end_mode, flag(c, "verbose"), timeout, flag(c, "async"));
}

int new_domain_call(Ctx *c, const char *member, char **ret_dpath, sd_bus_message **ret) {
        int r;

        if (domain_path(c, opt(c, "domain"), ret_dpath) < 0)
                return -EIO;
        r = sd_bus_message_new_method_call(c->bus, ret, QSNAP_BUS_NAME, *ret_dpath, QSNAP_DOMAIN_IFACE, member);
        if (r < 0)
                fail("Failed to create the call: %s", strerror(-r));
        return r;
}

int verb_blockpull(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *dpath = NULL;
        JobStart s = { .label = "Block Pull", .end_mode = JOB_END_WAIT };
        const char *base = opt(c, "base");
        uint64_t bw;
        int r;

        if (opt_size(c, "bandwidth", &bw) < 0 || wait_options(c, &s, false) < 0)
                return EXIT_USAGE;
        if (flag(c, "keep-relative") && !base) {
                usage_error("blockpull: --keep-relative goes with --base");
                return EXIT_USAGE;
        }
        if (new_domain_call(c, base ? "BlockRebase" : "BlockPull", &dpath, &m) < 0)
                return EXIT_FAILED;
        if (base)
                r = sd_bus_message_append(m, "sstt", opt(c, "path"), base, bw, (uint64_t) (flag(c, "keep-relative") ? 16 : 0));
        else
                r = sd_bus_message_append(m, "stt", opt(c, "path"), bw, (uint64_t) 0);
        if (r < 0)
                return EXIT_FAILED;
        return run_job(c, dpath, &s, m);
}

int verb_blockrebase(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *dpath = NULL;
        bool copy = flag(c, "copy");
        JobStart s = { .label = copy ? "Block Copy" : "Block Pull", .end_mode = JOB_END_WAIT };
        uint64_t bw, flags = (flag(c, "shallow") ? 1 : 0) | (flag(c, "reuse-external") ? 2 : 0) |
                             (flag(c, "copy-raw") ? 4 : 0) | (copy ? 8 : 0) | (flag(c, "keep-relative") ? 16 : 0);

        if ((flag(c, "pivot") || flag(c, "finish")) && !copy) {
                usage_error("blockrebase: --pivot and --finish go with --copy");
                return EXIT_USAGE;
        }
        if (flag(c, "pivot") && flag(c, "finish")) {
                usage_error("blockrebase: --pivot and --finish exclude each other");
                return EXIT_USAGE;
        }
        if (copy && !opt(c, "base")) {
                usage_error("blockrebase: --copy needs the destination as --base");
                return EXIT_USAGE;
        }
        s.end_mode = flag(c, "pivot") ? JOB_END_PIVOT : flag(c, "finish") ? JOB_END_FINISH : JOB_END_WAIT;
        if (opt_size(c, "bandwidth", &bw) < 0 || wait_options(c, &s, copy) < 0)
                return EXIT_USAGE;
        if (new_domain_call(c, "BlockRebase", &dpath, &m) < 0 ||
            sd_bus_message_append(m, "sstt", opt(c, "path"), strempty(opt(c, "base")), bw, flags) < 0)
                return EXIT_FAILED;
        return run_job(c, dpath, &s, m);
}

int verb_blockcommit(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *dpath = NULL;
        bool active = flag(c, "active");
        JobStart s = { .label = active ? "Active Block Commit" : "Block Commit" };
        uint64_t bw, flags = (flag(c, "shallow") ? 1 : 0) | (flag(c, "delete") ? 2 : 0) | (active ? 4 : 0) |
                             (flag(c, "keep-relative") ? 8 : 0);

        if ((flag(c, "pivot") || flag(c, "keep-overlay")) && !active) {
                usage_error("blockcommit: --pivot and --keep-overlay go with --active");
                return EXIT_USAGE;
        }
        if (flag(c, "pivot") && flag(c, "keep-overlay")) {
                usage_error("blockcommit: --pivot and --keep-overlay exclude each other");
                return EXIT_USAGE;
        }
        s.end_mode = flag(c, "pivot") ? JOB_END_PIVOT : flag(c, "keep-overlay") ? JOB_END_FINISH : JOB_END_WAIT;
        if (opt_size(c, "bandwidth", &bw) < 0 || wait_options(c, &s, active) < 0)
                return EXIT_USAGE;
        if (new_domain_call(c, "BlockCommit", &dpath, &m) < 0 ||
            sd_bus_message_append(m, "ssstt", opt(c, "path"), strempty(opt(c, "base")), strempty(opt(c, "top")), bw,
                                  flags) < 0)
                return EXIT_FAILED;
        return run_job(c, dpath, &s, m);
}

int verb_blockcopy(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *dpath = NULL, *xml = NULL, *efile = NULL;
        JobStart s = { .label = "Block Copy" };
        const char *dest = opt(c, "dest"), *xmlfile = opt(c, "xml"), *format = opt(c, "format");
        uint64_t bw, flags = (flag(c, "shallow") ? 1 : 0) | (flag(c, "reuse-external") ? 2 : 0) |
                             (flag(c, "transient-job") ? 4 : 0) | (flag(c, "synchronous-writes") ? 8 : 0);
        int r;

        if (!!dest == !!xmlfile) {
                usage_error("blockcopy: give the destination as --dest FILE or --xml FILE (one of them)");
                return EXIT_USAGE;
        }
        if (format && !dest) {
                usage_error("blockcopy: --format goes with --dest");
                return EXIT_USAGE;
        }
        if (format && !STR_IN_SET(format, "qcow2", "raw")) {
                usage_error("blockcopy: --format '%s' is not qcow2 or raw", format);
                return EXIT_USAGE;
        }
        if (flag(c, "pivot") && flag(c, "finish")) {
                usage_error("blockcopy: --pivot and --finish exclude each other");
                return EXIT_USAGE;
        }
        s.end_mode = flag(c, "pivot") ? JOB_END_PIVOT : flag(c, "finish") ? JOB_END_FINISH : JOB_END_WAIT;
        if (opt_size(c, "bandwidth", &bw) < 0 || wait_options(c, &s, true) < 0)
                return EXIT_USAGE;
        if (xmlfile) {
                r = read_input(xmlfile, &xml);
                if (r < 0) {
                        fail("Failed to read %s: %s", xmlfile, strerror(-r));
                        return EXIT_FAILED;
                }
        } else {
                efile = xml_escape(dest);
                if (!efile)
                        return EXIT_FAILED;
                xml = format ? strprintf("<disk type='file'><driver type='%s'/><source file='%s'/></disk>", format, efile)
                             : strprintf("<disk type='file'><source file='%s'/></disk>", efile);
                if (!xml)
                        return EXIT_FAILED;
        }
        if (new_domain_call(c, "BlockCopy", &dpath, &m) < 0 ||
            sd_bus_message_append(m, "sstt", opt(c, "path"), xml, bw, flags) < 0)
                return EXIT_FAILED;
        return run_job(c, dpath, &s, m);
}

/* ---- looking at jobs ---- */

static json_object *job_json(const Props *p) {
        json_object *o = json_object_new_object();
        _cleanup_free_ char *id = path_last_name(p->path), *domain = path_last_name(props_str(p, "Domain"));
        uint64_t cur = props_u64(p, "Cur"), end = props_u64(p, "End");

        json_object_object_add(o, "path", json_str(p->path));
        json_object_object_add(o, "id", json_str(id));
        json_object_object_add(o, "domain", json_str(domain));
        json_object_object_add(o, "disk", json_str(props_str(p, "Disk")));
        json_object_object_add(o, "type", json_str(props_str(p, "Type")));
        json_object_object_add(o, "state", json_str(props_str(p, "State")));
        json_object_object_add(o, "ready", json_object_new_boolean(props_bool(p, "Ready")));
        json_object_object_add(o, "cur", json_object_new_uint64(cur));
        json_object_object_add(o, "end", json_object_new_uint64(end));
        json_object_object_add(o, "percent", json_object_new_int64(percent_of(cur, end)));
        json_object_object_add(o, "bandwidth", json_object_new_uint64(props_u64(p, "Bandwidth")));
        json_object_object_add(o, "rate", json_object_new_uint64(props_u64(p, "Rate")));
        json_object_object_add(o, "eta", json_object_new_uint64(props_u64(p, "Eta")));
        json_object_object_add(o, "error", json_str(strempty(props_str(p, "Error"))));
        json_object_object_add(o, "start_time", json_object_new_uint64(props_u64(p, "StartTime")));
        return o;
}

static bool job_state_final(const char *state) {
        return state && STR_IN_SET(state, "completed", "failed", "canceled");
}

int verb_jobs(Ctx *c) {
        Props **a = NULL;
        size_t n = 0;
        _cleanup_free_ char *dpath = NULL;
        const char *domain = opt(c, "domain");
        json_object *arr = NULL;
        _cleanup_(table_freep) Table *t = NULL;

        if (domain && domain_path(c, domain, &dpath) < 0)
                return EXIT_FAILED;
        if (managed_objects(c, QSNAP_JOB_IFACE, dpath, &a, &n) < 0)
                return EXIT_FAILED;
        if (c->json)
                arr = json_object_new_array();
        else
                t = table_new("Domain", "Disk", "Type", "State", "Progress", "Done", "Rate", "ETA", NULL);
        for (size_t i = 0; i < n; i++) {
                json_object *o = job_json(a[i]);
                if (arr) {
                        json_object_array_add(arr, o);
                        continue;
                }
                {
                        uint64_t cur = props_u64(a[i], "Cur"), end = props_u64(a[i], "End");
                        uint64_t rate = props_u64(a[i], "Rate"), eta = props_u64(a[i], "Eta");
                        const char *state = props_str(a[i], "State");
                        bool steps = props_str(a[i], "Type") && strncmp(props_str(a[i], "Type"), "snapshot-", 9) == 0;
                        _cleanup_free_ char *pct = strprintf("%u %%", percent_of(cur, end)), *c1 = format_size(cur),
                                            *e1 = format_size(end),
                                            *done = steps ? strdup("-") : strprintf("%s of %s", strna(c1), strna(e1)),
                                            *r1 = rate ? format_rate(rate) : NULL,
                                            *eta1 = eta && !job_state_final(state) ? format_duration(eta) : NULL;
                        /* A job of several disks (a backup) has Disk "". */
                        table_add(t, json_object_get_string(json_object_object_get(o, "domain")),
                                  isempty(props_str(a[i], "Disk")) ? "(all)" : props_str(a[i], "Disk"),
                                  props_str(a[i], "Type"), state, pct, done, r1 ?: "-", eta1 ?: "-");
                }
                json_object_put(o);
        }
        if (arr) {
                json_print(arr);
                json_object_put(arr);
        } else if (n == 0)
                printf("No block jobs.\n");
        else
                table_print(t, stdout);
        props_array_free(a, n);
        return EXIT_OK;
}

/* The disk's job: a running one first, else the one that ended last. */
static int find_disk_job(Ctx *c, const char *dpath, const char *disk, Props **ret) {
        _cleanup_(props_freep) Props *dom = NULL;
        _cleanup_strv_free_ char **jobs = NULL;
        json_object *disks;
        const char *target = disk;
        Props *best = NULL;

        if (props_get_all(c, dpath, QSNAP_DOMAIN_IFACE, &dom) < 0)
                return -EIO;
        /* A disk named by its file: its target. */
        disks = props_json(dom, "Disks");
        for (size_t i = 0; disks && i < json_object_array_length(disks); i++) {
                json_object *d = json_object_array_get_idx(disks, i);
                if (streq_ptr(json_object_get_string(json_object_array_get_idx(d, 2)), disk))
                        target = json_object_get_string(json_object_array_get_idx(d, 0));
        }
        {
                json_object *j = props_json(dom, "Jobs");
                for (size_t i = 0; j && i < json_object_array_length(j); i++)
                        if (strv_extend(&jobs, json_object_get_string(json_object_array_get_idx(j, i))) < 0)
                                return -ENOMEM;
        }
        for (size_t i = 0; jobs && jobs[i]; i++) {
                Props *p = NULL;
                if (props_get_all(c, jobs[i], QSNAP_JOB_IFACE, &p) < 0)
                        continue; /* gone meanwhile */
                if (!streq_ptr(props_str(p, "Disk"), target)) {
                        props_free(p);
                        continue;
                }
                if (!best || (job_state_final(props_str(best, "State")) && !job_state_final(props_str(p, "State"))) ||
                    (job_state_final(props_str(best, "State")) == job_state_final(props_str(p, "State")) &&
                     props_u64(p, "StartTime") >= props_u64(best, "StartTime"))) {
                        props_free(best);
                        best = p;
                } else
                        props_free(p);
        }
        *ret = best;
        return 0;
}

int verb_blockjob(Ctx *c) {
        _cleanup_free_ char *dpath = NULL;
        _cleanup_(props_freep) Props *p = NULL;
        bool abort_ = flag(c, "abort"), pivot = flag(c, "pivot"), pause = flag(c, "pause"), resume = flag(c, "resume");
        const char *disk = opt(c, "path");
        uint64_t bw;
        int actions = abort_ + (pivot && !abort_) + pause + resume, have_bw;

        have_bw = opt_size(c, "bandwidth", &bw);
        if (have_bw < 0)
                return EXIT_USAGE;
        if (actions > 1 || (actions > 0 && have_bw > 0)) {
                usage_error("blockjob: one of --abort (with --pivot), --pivot, --bandwidth, --pause, --resume at a time");
                return EXIT_USAGE;
        }
        if (flag(c, "async") && !abort_) {
                usage_error("blockjob: --async goes with --abort");
                return EXIT_USAGE;
        }
        if (c->json && (actions > 0 || have_bw > 0)) {
                usage_error("blockjob: --json goes with --info only");
                return EXIT_USAGE;
        }
        if (domain_path(c, opt(c, "domain"), &dpath) < 0 || find_disk_job(c, dpath, disk, &p) < 0)
                return EXIT_FAILED;
        if (!p) {
                if (c->json) {
                        puts("null");
                        return EXIT_OK;
                }
                if (actions > 0 || have_bw > 0) {
                        fail("No block job on disk %s of domain '%s'.", disk, opt(c, "domain"));
                        return EXIT_FAILED;
                }
                printf("No current block job for %s\n", disk);
                return EXIT_OK;
        }
        if (abort_) {
                uint64_t flags = (flag(c, "async") ? 1 : 0) | (pivot ? 2 : 0);
                if (call(c, NULL, p->path, QSNAP_JOB_IFACE, "Abort", "t", flags) < 0)
                        return EXIT_FAILED;
                printf("%s on %s: %s\n", job_label(props_str(p, "Type")), disk,
                       pivot ? "pivoted" : flags & 1 ? "abort requested" : "aborted");
                return EXIT_OK;
        }
        if (pivot || pause || resume) {
                const char *member = pivot ? "Pivot" : pause ? "Pause" : "Resume";
                if (call(c, NULL, p->path, QSNAP_JOB_IFACE, member, NULL) < 0)
                        return EXIT_FAILED;
                printf("%s on %s: %s\n", job_label(props_str(p, "Type")), disk,
                       pivot ? "pivoted" : pause ? "paused" : "resumed");
                return EXIT_OK;
        }
        if (have_bw > 0) {
                _cleanup_free_ char *rate = format_rate(bw);
                if (call(c, NULL, p->path, QSNAP_JOB_IFACE, "SetSpeed", "t", bw) < 0)
                        return EXIT_FAILED;
                printf("%s on %s: bandwidth limit %s\n", job_label(props_str(p, "Type")), disk,
                       bw ? strna(rate) : "none");
                return EXIT_OK;
        }
        if (c->json) {
                json_object *o = job_json(p);
                json_print(o);
                json_object_put(o);
                return EXIT_OK;
        }
        if (flag(c, "raw")) {
                for (size_t i = 0; p->keys && p->keys[i]; i++)
                        printf(" %s=%s\n", p->keys[i], json_object_get_string(props_json(p, p->keys[i])));
                return EXIT_OK;
        }
        {
                uint64_t cur = props_u64(p, "Cur"), end = props_u64(p, "End"), rate = props_u64(p, "Rate");
                uint64_t limit = props_u64(p, "Bandwidth");
                _cleanup_free_ char *c1 = format_size(cur), *e1 = format_size(end), *r1 = format_rate(rate),
                                    *l1 = format_rate(limit);
                const char *state = props_str(p, "State");

                printf("%s: [%3u %%]  %s of %s, state %s\n", job_label(props_str(p, "Type")), percent_of(cur, end),
                       strna(c1), strna(e1), strna(state));
                printf("    Bandwidth limit: %s\n", limit ? strna(l1) : "none");
                if (!job_state_final(state) && rate)
                        printf("    Rate: %s\n", strna(r1));
                if (!isempty(props_str(p, "Error")))
                        printf("    Error: %s\n", props_str(p, "Error"));
        }
        return EXIT_OK;
}
