/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * org.example.BlockJob1 at /org/example/Snapshot1/domain/<dom>/job/<id>:
 * a block job's properties, its controls, and its signals (Progress,
 * Ready, Completed, and Domain.BlockJobEvent for the ready and final
 * states). The id is QEMU's job id, so the path survives a restart.
 */
#include "bus/bus-domain.h"
#include "bus/bus-errors.h"
#include "bus/bus-job.h"
#include "core/domain-jobs.h"
#include "util/util.h"

#define ACTION_BLOCK_JOBS "org.example.snapshot1.block-jobs"
#define ACTION_MANAGE_SNAPSHOTS "org.example.snapshot1.manage-snapshots"
#define ACTION_BACKUP "org.example.snapshot1.backup"
#define JOB_ABORT_ASYNC 1ULL
#define JOB_ABORT_PIVOT 2ULL

char *bus_job_path(Domain *d, const Job *j) {
        return bus_domain_child_path(d, "job", j->id);
}

/* ---- properties ---- */

#define JOB_PROPERTY(name, sig, expr)                                                                          \
        static int property_get_##name(sd_bus *bus, const char *path, const char *interface, const char *property, \
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {           \
                Job *j = userdata;                                                                             \
                return sd_bus_message_append(reply, sig, expr);                                                \
        }

JOB_PROPERTY(type, "s", job_type_to_string(j->type))
JOB_PROPERTY(disk, "s", strempty(j->disk))
JOB_PROPERTY(cur, "t", j->cur)
JOB_PROPERTY(end, "t", j->end)
JOB_PROPERTY(bandwidth, "t", j->bandwidth)
JOB_PROPERTY(state, "s", job_state_to_string(domain_job_state(j)))
JOB_PROPERTY(ready, "b", j->ready)
JOB_PROPERTY(error, "s", strempty(j->error))
JOB_PROPERTY(start_time, "t", j->start_time / USEC_PER_SEC)
JOB_PROPERTY(rate, "t", j->rate)
JOB_PROPERTY(eta, "t", j->eta)

static int property_get_domain(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = domain_job_domain(userdata);
        _cleanup_free_ char *p = d ? bus_domain_path(d) : NULL;

        return sd_bus_message_append(reply, "o", p ?: "/");
}

/* ---- methods ---- */

static void reply_job_done(Job *j, int error, const char *message, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        Domain *d = domain_job_domain(j);

        if (error < 0) {
                (void) bus_reply_errno_message(m, error, message);
                return;
        }
        /* Abort without ASYNC returns when the job is over, as in libvirt. */
        if (d && sd_bus_message_is_method_call(m, QSNAP_JOB_INTERFACE, "Abort") && !job_state_is_final(j->state)) {
                uint64_t flags = 0;
                JobWaiter *w;

                (void) sd_bus_message_rewind(m, true);
                (void) sd_bus_message_read(m, "t", &flags);
                if (!(flags & JOB_ABORT_ASYNC) && (w = new0(JobWaiter, 1))) {
                        Bus *b = bus_from_manager(d->manager);

                        *w = (JobWaiter) { .job = j, .message = sd_bus_message_ref(m), .next = b->job_waiters };
                        b->job_waiters = w;
                        manager_busy_ref(d->manager);
                        return;
                }
        }
        (void) sd_bus_reply_method_return(m, NULL);
}

static void reply_job_waiters(Bus *b, Domain *d, Job *j) {
        for (JobWaiter **p = &b->job_waiters; *p;) {
                JobWaiter *w = *p;

                if (w->job != j) {
                        p = &w->next;
                        continue;
                }
                *p = w->next;
                (void) sd_bus_reply_method_return(w->message, NULL);
                sd_bus_message_unref(w->message);
                free(w);
                manager_busy_unref(d->manager);
        }
}

typedef int (*job_call_t)(Job *j, uint64_t arg, JobDoneFunc done, void *userdata, char **ret_message);

static int call_abort(Job *j, uint64_t flags, JobDoneFunc done, void *userdata, char **ret_message) {
        return job_abort(j, flags & JOB_ABORT_PIVOT, done, userdata, ret_message);
}
static int call_pivot(Job *j, uint64_t arg, JobDoneFunc done, void *userdata, char **ret_message) {
        return job_pivot(j, done, userdata, ret_message);
}
static int call_set_speed(Job *j, uint64_t bandwidth, JobDoneFunc done, void *userdata, char **ret_message) {
        return job_set_speed(j, bandwidth, done, userdata, ret_message);
}
static int call_pause(Job *j, uint64_t arg, JobDoneFunc done, void *userdata, char **ret_message) {
        return job_pause(j, done, userdata, ret_message);
}
static int call_resume(Job *j, uint64_t arg, JobDoneFunc done, void *userdata, char **ret_message) {
        return job_resume(j, done, userdata, ret_message);
}

/* A job is controlled with the right that started it: a snapshot
 * operation's merge with manage-snapshots, a backup with backup. */
static const char *job_action(const Job *j) {
        switch (j->type) {
        case JOB_TYPE_PULL:
        case JOB_TYPE_COPY:
        case JOB_TYPE_COMMIT:
        case JOB_TYPE_ACTIVE_COMMIT:
                return ACTION_BLOCK_JOBS;
        case JOB_TYPE_BACKUP:
                return ACTION_BACKUP;
        case JOB_TYPE_SNAPSHOT_DELETE:
        case JOB_TYPE_SNAPSHOT_REVERT:
        case JOB_TYPE_SNAPSHOT_CREATE:
                return ACTION_MANAGE_SNAPSHOTS;
        case _JOB_TYPE_MAX:
        case _JOB_TYPE_INVALID:
                break;
        }
        return ACTION_BLOCK_JOBS;
}

/* Authorize, then let the tracker ask QEMU; reply from its answer. */
static int job_method(sd_bus_message *m, Job *j, job_call_t call, uint64_t arg, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        Domain *d = domain_job_domain(j);
        const char *details[] = { "domain", d ? d->def->name : "", "disk", strempty(j->disk), NULL };
        int r;

        if (!d || job_state_is_final(j->state) || (!j->tracker && !j->local))
                return sd_bus_error_setf(error, QSNAP_ERROR_OPERATION_INVALID, "Job %s has ended (%s).", j->id,
                                         job_state_to_string(j->state));
        r = bus_verify_polkit_async(m, job_action(j), details, &bus_from_manager(d->manager)->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = call(j, arg, reply_job_done, m, &message);
        if (r < 0) {
                sd_bus_message_unref(m);
                return bus_error_set_errno_message(error, r, message);
        }
        if (r > 0) /* done at once (a local job's Abort still waits for its end) */
                reply_job_done(j, 0, NULL, m);
        return 1;
}

static int method_abort(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        uint64_t flags;
        int r;

        r = bus_read_flags(m, "Abort", JOB_ABORT_ASYNC | JOB_ABORT_PIVOT, &flags, error);
        if (r < 0)
                return r;
        return job_method(m, userdata, call_abort, flags, error);
}

static int method_pivot(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return job_method(m, userdata, call_pivot, 0, error);
}

static int method_set_speed(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        uint64_t bandwidth;
        int r;

        r = sd_bus_message_read(m, "t", &bandwidth);
        if (r < 0)
                return r;
        if (bandwidth > INT64_MAX)
                return sd_bus_error_set(error, QSNAP_ERROR_INVALID_ARGUMENT, "The bandwidth is too large.");
        return job_method(m, userdata, call_set_speed, bandwidth, error);
}

static int method_pause(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return job_method(m, userdata, call_pause, 0, error);
}

static int method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return job_method(m, userdata, call_resume, 0, error);
}

/* ---- signals ---- */

static void emit_domain_event(Bus *b, Domain *d, Job *j, const char *path, const char *status) {
        _cleanup_free_ char *domain_path = bus_domain_path(d);

        if (domain_path)
                (void) sd_bus_emit_signal(b->bus, domain_path, QSNAP_DOMAIN_INTERFACE, "BlockJobEvent", "ossss", path,
                                          strempty(j->disk), job_type_to_string(j->type), status, strempty(j->error));
}

void bus_job_emit(Bus *b, Domain *d, Job *j, JobEvent e) {
        _cleanup_free_ char *path = bus_job_path(d, j);

        if (!path)
                return (void) log_oom();
        switch (e) {
        case JOB_EVENT_ADDED:
                (void) sd_bus_emit_object_added(b->bus, path);
                bus_domain_emit_changed(b, d, DOMAIN_CHANGE_JOBS);
                break;
        case JOB_EVENT_PROGRESS:
                (void) sd_bus_emit_properties_changed(b->bus, path, QSNAP_JOB_INTERFACE, "Cur", "End", "Rate", "Eta", NULL);
                (void) sd_bus_emit_signal(b->bus, path, QSNAP_JOB_INTERFACE, "Progress", "tt", j->cur, j->end);
                break;
        case JOB_EVENT_CHANGED:
                (void) sd_bus_emit_properties_changed(b->bus, path, QSNAP_JOB_INTERFACE, "State", "Ready", "Error",
                                                      "Bandwidth", "Rate", "Eta", NULL);
                break;
        case JOB_EVENT_READY:
                (void) sd_bus_emit_signal(b->bus, path, QSNAP_JOB_INTERFACE, "Ready", NULL);
                emit_domain_event(b, d, j, path, "ready");
                break;
        case JOB_EVENT_FINISHED:
                (void) sd_bus_emit_properties_changed(b->bus, path, QSNAP_JOB_INTERFACE, "State", "Ready", "Error",
                                                      "Cur", "End", "Rate", "Eta", NULL);
                (void) sd_bus_emit_signal(b->bus, path, QSNAP_JOB_INTERFACE, "Completed", "ss",
                                          job_state_to_string(j->state), strempty(j->error));
                emit_domain_event(b, d, j, path, job_state_to_string(j->state));
                reply_job_waiters(b, d, j);
                break;
        case JOB_EVENT_REMOVED:
                reply_job_waiters(b, d, j);
                (void) sd_bus_emit_interfaces_removed(b->bus, path, QSNAP_JOB_INTERFACE, NULL);
                bus_domain_emit_changed(b, d, DOMAIN_CHANGE_JOBS);
                break;
        }
}

/* ---- object tree ---- */

static int job_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                           sd_bus_error *error) {
        _cleanup_free_ char *id = NULL;
        Domain *d;
        Job *j;
        int r;

        r = bus_domain_child_decode(userdata, path, "job", &d, &id);
        if (r <= 0)
                return r;
        j = domain_find_job(d, id);
        if (!j || !domain_job_domain(j))
                return 0;
        *found = j;
        return 1;
}

static const sd_bus_vtable job_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Type", "s", property_get_type, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Disk", "s", property_get_disk, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Domain", "o", property_get_domain, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Cur", "t", property_get_cur, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("End", "t", property_get_end, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Bandwidth", "t", property_get_bandwidth, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Ready", "b", property_get_ready, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Error", "s", property_get_error, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("StartTime", "t", property_get_start_time, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Rate", "t", property_get_rate, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Eta", "t", property_get_eta, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Abort", SD_BUS_ARGS("t", flags), SD_BUS_NO_RESULT, method_abort, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Pivot", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_pivot, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SetSpeed", SD_BUS_ARGS("t", bandwidth), SD_BUS_NO_RESULT, method_set_speed,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Pause", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_pause, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Resume", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("Progress", SD_BUS_ARGS("t", cur, "t", end), 0),
        SD_BUS_SIGNAL_WITH_ARGS("Ready", SD_BUS_NO_ARGS, 0),
        SD_BUS_SIGNAL_WITH_ARGS("Completed", SD_BUS_ARGS("s", status, "s", error), 0),
        SD_BUS_VTABLE_END
};

int bus_job_register(Bus *b) {
        int r;

        r = sd_bus_add_fallback_vtable(b->bus, NULL, QSNAP_DOMAIN_PREFIX, QSNAP_JOB_INTERFACE, job_vtable, job_object_find, b);
        if (r < 0)
                return log_error_errno(r, "Failed to register the BlockJob1 interface: %m");
        return 0;
}
