/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A domain's QEMU: launching it (setsid, double fork, QMP on a listening
 * socket we bind and hand over, so the monitor is connectable before QEMU
 * is even exec'd), attaching to one that runs already, following its run
 * state from QMP events, and the lifecycle calls. Runtime files per
 * domain, all named by UUID under the runtime dir:
 *   <uuid>.qmp                        the monitor socket
 *   <uuid>.pid                        QEMU's pid
 *   <uuid>.xml                        the live definition QEMU was started with
 *   <uuid>.agent                      the guest agent channel's socket (QEMU listens)
 *   <uuid>-<target>.transient.qcow2   throw-away overlay of a <transient/> disk
 * They outlive qsnapd, so a new qsnapd finds every VM again.
 */
#include <fcntl.h>
#include <sys/syscall.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "config.h"
#include "core/bitmaps.h"
#include "core/disk.h"
#include "core/domain-agent.h"
#include "core/domain-devices.h"
#include "core/domain-jobs.h"
#include "core/domain-launch.h"
#include "core/offline-qemu.h"
#include "core/domain-net.h"
#include "core/domain.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "core/operation.h"
#include "core/qemu-files.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/string-table.h"
#include "util/util.h"

#define QEMU_QUIT_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define ATTACH_TIMEOUT_USEC (10 * USEC_PER_SEC)
#define REAP_POLL_USEC (50 * USEC_PER_MSEC)

typedef enum DomainOpType {
        DOMAIN_OP_ATTACH,
        DOMAIN_OP_START,
        DOMAIN_OP_STOP,
        DOMAIN_OP_PAUSE,
        DOMAIN_OP_RESUME,
        _DOMAIN_OP_MAX,
} DomainOpType;

/* The plan of a lifecycle call: an Operation (core/operation.h) holding
 * the domain's lifecycle lock, Domain.op. */
typedef struct DomainCall {
        DomainOpType type;
        uint64_t flags;
        DomainDoneFunc done;
        void *userdata;
        sd_event_source *timer;
        uint64_t deadline;      /* CLOCK_MONOTONIC, for polls that give up */
        char *incoming;         /* Start: the migration URI to load the memory state from */
        DomainStepFunc incoming_sent; /* Start: migrate-incoming is on its way */
} DomainCall;

/* The monitor passthrough: an Operation without a lock. */
typedef struct MonitorCall {
        DomainDoneFunc done;
        void *userdata;
        const char *reply;      /* borrowed while the reply is given */
} MonitorCall;

static const char *const domain_state_table[_DOMAIN_STATE_MAX] = {
        [DOMAIN_SHUTOFF] = "shutoff",
        [DOMAIN_RUNNING] = "running",
        [DOMAIN_PAUSED] = "paused",
        [DOMAIN_CRASHED] = "crashed",
};

DEFINE_STRING_TABLE_LOOKUP_TO_STRING(domain_state, DomainState, );

int domain_new(Manager *m, DomainDef *def, Domain **ret) {
        Domain *d;

        d = new0(Domain, 1);
        if (!d)
                return -ENOMEM;
        d->manager = m;
        d->n_ref = 1;
        d->def = def;
        d->state = DOMAIN_SHUTOFF;
        d->pidfd = -EBADF;
        d->node_seq = now_usec(CLOCK_REALTIME);
        snapshot_tree_init(&d->snapshots, d);
        checkpoint_tree_init(&d->checkpoints, d);
        *ret = d;
        return 0;
}

Domain *domain_ref(Domain *d) {
        if (d)
                d->n_ref++;
        return d;
}

Domain *domain_unref(Domain *d) {
        if (!d || --d->n_ref > 0)
                return NULL;
        domain_disconnect(d);
        domain_jobs_free(d);
        offline_qemu_free(d);
        safe_close(d->pidfd);
        snapshot_tree_done(&d->snapshots);
        bitmaps_domain_done(d);
        checkpoint_tree_done(&d->checkpoints);
        domain_chains_invalidate(d);
        for (size_t i = 0; i < d->n_files; i++) {
                free(d->files[i].node);
                free(d->files[i].path);
        }
        free(d->files);
        domain_def_free(d->def);
        domain_def_free(d->live);
        free(d);
        return NULL;
}

void domain_set_def(Domain *d, DomainDef *def) {
        domain_def_free(d->def);
        d->def = def;
        domain_chains_invalidate(d);
}

char *domain_runtime_path(Domain *d, const char *suffix) {
        return strprintf("%s/%s%s", d->manager->config.runtime_dir, d->def->uuid, suffix);
}

char *domain_qemu_socket_path(Domain *d, const char *suffix) {
        if (!d->manager->config.qemu_user)
                return domain_runtime_path(d, suffix);
        return strprintf("%s/qemu/%s%s", d->manager->config.runtime_dir, d->def->uuid, suffix);
}

char *domain_log_path(Domain *d) {
        return strprintf("%s/log/%s.log", d->manager->config.state_dir, d->def->uuid);
}

char *domain_transient_path(Domain *d, const DomainDisk *disk) {
        return strprintf("%s/%s-%s.transient.qcow2", d->manager->config.runtime_dir, d->def->uuid, disk->target);
}

static void domain_set_state(Domain *d, DomainState s) {
        if (d->state == s)
                return;
        log_info("Domain '%s' is now %s (was %s).", d->def->name, domain_state_to_string(s),
                 domain_state_to_string(d->state));
        d->state = s;
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_STATE);
}

void domain_note_running(Domain *d) {
        if (domain_is_active(d))
                domain_set_state(d, DOMAIN_RUNNING);
}

void domain_note_paused(Domain *d) {
        if (domain_is_active(d))
                domain_set_state(d, DOMAIN_PAUSED);
}

/* ---- lifecycle call bookkeeping ---- */

static void domain_call_free(void *p) {
        DomainCall *c = p;

        sd_event_source_disable_unref(c->timer);
        free(c->incoming);
        free(c);
}

static void domain_call_reply(Operation *o, int error, const char *message) {
        DomainCall *c = o->plan;

        if (c->done)
                c->done(o->domain, error, message, NULL, c->userdata);
}

#define DOMAIN_CALL_KIND(n) \
        { .name = n, .lock = OPERATION_LOCK_LIFECYCLE, .free_plan = domain_call_free, .reply = domain_call_reply }
static const OperationKind domain_call_kinds[_DOMAIN_OP_MAX] = {
        [DOMAIN_OP_ATTACH] = DOMAIN_CALL_KIND("attach"),
        [DOMAIN_OP_START] = DOMAIN_CALL_KIND("start"),
        [DOMAIN_OP_STOP] = DOMAIN_CALL_KIND("stop"),
        [DOMAIN_OP_PAUSE] = DOMAIN_CALL_KIND("pause"),
        [DOMAIN_OP_RESUME] = DOMAIN_CALL_KIND("resume"),
};

/* The lifecycle call in flight, if any. */
static DomainCall *call(Domain *d) {
        return d->op ? d->op->plan : NULL;
}

static int domain_op_begin(Domain *d, DomainOpType type, uint64_t flags, DomainDoneFunc done, void *userdata) {
        DomainCall *c;
        Operation *o;

        assert(!d->op);
        c = new0(DomainCall, 1);
        if (!c)
                return -ENOMEM;
        *c = (DomainCall) { .type = type, .flags = flags, .done = done, .userdata = userdata };
        return operation_new(d, domain_call_kinds + type, c, &o);
}

/* The caller hears once, from the loop when this is still inside the
 * call that began it. */
static void domain_op_finish(Domain *d, int error, const char *message) {
        if (d->op && !d->op->finished)
                operation_finish(d->op, error, message);
}

/* The call failed before anything started: no completion. */
static void domain_op_abandon(Domain *d) {
        operation_cancel(d->op);
}

/* The call that began it returns: completions are direct from now on. */
static int domain_op_started(Domain *d, int r) {
        if (d->op)
                operation_started(d->op);
        return r;
}

static int domain_op_arm_timer(Domain *d, uint64_t usec, sd_event_time_handler_t handler) {
        DomainCall *c = call(d);

        c->timer = sd_event_source_disable_unref(c->timer);
        return sd_event_add_time_relative(d->manager->event, &c->timer, CLOCK_MONOTONIC, usec, 0, handler, d);
}

/* QEMU is gone: forget the live state. */
static void domain_reset(Domain *d, DomainState state) {
        bool had_live = d->live;

        d->graph_epoch++;
        domain_jobs_disconnected(d, true);
        bitmaps_copies_qemu_gone(d);
        domain_agent_detach(d, true);
        d->qmp = qmp_unref(d->qmp);
        domain_launch_remove_runtime_files(d);
        domain_files_clear(d);
        d->live = domain_def_free(d->live);
        d->pid = 0;
        d->pidfd = safe_close(d->pidfd);
        d->shutdown_seen = d->quit_requested = false;
        domain_set_state(d, state);
        if (had_live)
                manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
}

/* ---- QMP plumbing ---- */

static void on_qmp_event(Qmp *qmp, const char *event, json_object *data, uint64_t timestamp, void *userdata) {
        Domain *d = userdata;

        if (streq(event, "STOP"))
                domain_set_state(d, DOMAIN_PAUSED);
        else if (streq(event, "RESUME"))
                domain_set_state(d, DOMAIN_RUNNING);
        else if (streq(event, "SHUTDOWN"))
                d->shutdown_seen = true;
        domain_agent_qmp_event(d, event, data);
}

static void on_qmp_disconnect(Qmp *qmp, int error, void *userdata) {
        Domain *d = userdata;
        DomainOpType op = call(d) ? call(d)->type : (DomainOpType) -1;
        bool orderly = d->shutdown_seen || d->quit_requested;

        domain_ref(d);
        if (op == DOMAIN_OP_START || op == DOMAIN_OP_ATTACH) {
                _cleanup_free_ char *log = NULL, *path = domain_log_path(d), *message = NULL;

                if (op == DOMAIN_OP_START && path)
                        (void) domain_launch_start_output(path, &log);
                message = op == DOMAIN_OP_START
                        ? strprintf("QEMU exited while starting: %s", isempty(log) ? "(no output)" : log)
                        : strprintf("QEMU closed its monitor while qsnapd attached");
                log_error("Domain '%s': %s", d->def->name, strna(message));
                domain_reset(d, op == DOMAIN_OP_START ? DOMAIN_SHUTOFF : DOMAIN_CRASHED);
                domain_op_finish(d, -QSNAP_E_QEMU_FAILED, message);
        } else {
                if (!orderly)
                        log_warning("Domain '%s': QEMU went away without shutting down.", d->def->name);
                domain_reset(d, orderly ? DOMAIN_SHUTOFF : DOMAIN_CRASHED);
                /* A Stop is done once QEMU is gone; any other call in flight failed. */
                if (op == DOMAIN_OP_STOP)
                        domain_op_finish(d, 0, NULL);
                else if (d->op)
                        domain_op_finish(d, -QSNAP_E_NOT_RUNNING, "QEMU went away");
        }
        domain_unref(d);
}

static int domain_connect_monitor(Domain *d, const char *path, qmp_ready_func_t on_ready) {
        _cleanup_(qmp_unrefp) Qmp *q = NULL;
        _cleanup_free_ char *description = NULL;
        int r;

        r = qmp_connect(d->manager->event, path, &q);
        if (r < 0)
                return r;
        description = strprintf("domain '%s'", d->def->name);
        if (description)
                (void) qmp_set_description(q, description);
        qmp_set_ready_callback(q, on_ready, d);
        qmp_set_disconnect_callback(q, on_qmp_disconnect, d);
        r = qmp_subscribe(q, NULL, on_qmp_event, d);
        if (r < 0)
                return r;
        qmp_unref(d->qmp);
        d->qmp = TAKE_PTR(q);
        return 0;
}

/* ---- attach ---- */

static void domain_load_live(Domain *d) {
        _cleanup_free_ char *xml_path = NULL, *pid_path = NULL, *xml = NULL, *pid = NULL, *message = NULL;
        DomainDef *live = NULL;

        if (!domain_is_managed(d))
                return;
        xml_path = domain_runtime_path(d, ".xml");
        pid_path = domain_runtime_path(d, ".pid");
        if (xml_path && read_full_file(xml_path, XML_MAX_DOCUMENT_SIZE, &xml, NULL) >= 0 &&
            domain_def_parse(xml, strlen(xml), &live, &message) >= 0) {
                domain_def_free(d->live);
                d->live = live;
        } else
                log_warning("Domain '%s': live definition %s unreadable (%s), using the stored one.", d->def->name,
                            strna(xml_path), strna(message));
        if (pid_path && read_full_file(pid_path, 64, &pid, NULL) >= 0)
                d->pid = (pid_t) atoi(pid);
        /* No pidfd survives a restart: one now, for the process the
         * launch recorded only, so that Stop can end a hung QEMU. */
        if (d->pid > 0 && d->pidfd < 0)
                d->pidfd = domain_launch_adopt_process(d, d->pid);
        if (domain_files_load(d) < 0)
                log_warning("Domain '%s': which node is which file is unknown; block jobs may not find their nodes.",
                            d->def->name);
}

static void on_recovered(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        domain_op_finish(d, 0, NULL);
}

static void on_jobs_adopted(Domain *d, void *userdata) {
        /* Interrupted operations: finished or rolled back through the
         * handlers their kinds registered, before the attach call ends. */
        operation_recover_attached(d, on_recovered, NULL);
}

static void on_attach_status(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Domain *d = userdata;
        QmpRunState s;
        int r;

        if (error < 0)
                return domain_op_finish(d, error, desc ?: "query-status failed");
        r = qmp_parse_query_status(result, &s, NULL);
        if (r < 0)
                return domain_op_finish(d, r, "query-status answer not understood");

        domain_load_live(d);
        /* Its monitor answers, so the pid file names a live QEMU of ours:
         * hold on to it (a QEMU of another user may be hidden in /proc). */
        if (domain_is_managed(d) && d->pid > 0 && d->pidfd < 0)
                d->pidfd = (int) syscall(SYS_pidfd_open, d->pid, 0);
        switch (s) {
        case QMP_RUN_STATE_RUNNING:
                domain_set_state(d, DOMAIN_RUNNING);
                break;
        case QMP_RUN_STATE_PAUSED:
                domain_set_state(d, DOMAIN_PAUSED);
                break;
        case QMP_RUN_STATE_CRASHED:
                domain_set_state(d, DOMAIN_CRASHED);
                break;
        case QMP_RUN_STATE_SHUTDOWN:
                d->shutdown_seen = true;
                domain_set_state(d, DOMAIN_SHUTOFF);
                break;
        case _QMP_RUN_STATE_MAX:
        case _QMP_RUN_STATE_INVALID:
                break;
        }
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
        if (domain_is_active(d))
                domain_agent_attach(d);
        log_info("Domain '%s': attached to its QEMU (pid %d), %s.", d->def->name, (int) d->pid,
                 domain_state_to_string(d->state));
        /* QEMU's jobs are adopted, then an interrupted snapshot is finished
         * or undone, all before anyone asks. */
        if (domain_jobs_attach(d, on_jobs_adopted, NULL) >= 0)
                return;
        log_warning("Domain '%s': cannot track its block jobs.", d->def->name);
        on_jobs_adopted(d, NULL);
}

static void on_attach_ready(Qmp *qmp, int error, void *userdata) {
        Domain *d = userdata;

        if (error < 0)
                return; /* the disconnect callback follows */
        if (qmp_cmd_query_status(qmp, on_attach_status, d) < 0)
                domain_op_finish(d, -QSNAP_E_QEMU_FAILED, "Failed to send query-status");
}

/* Test hook: $QSNAPD_TEST_ATTACH_TIMEOUT (seconds, 1..10) shortens the wait for
 * a QEMU that does not answer at attach, so that the tests of a hung QEMU do
 * not wait out the 10 s each time. */
static uint64_t attach_timeout_usec(void) {
        const char *e = getenv("QSNAPD_TEST_ATTACH_TIMEOUT");
        unsigned long long s = e ? strtoull(e, NULL, 10) : 0;

        return s >= 1 && s * USEC_PER_SEC < ATTACH_TIMEOUT_USEC ? s * USEC_PER_SEC : ATTACH_TIMEOUT_USEC;
}

static int on_attach_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Domain *d = userdata;

        log_error("Domain '%s': its QEMU did not answer on the monitor within %llus.", d->def->name,
                  (unsigned long long) (attach_timeout_usec() / USEC_PER_SEC));
        if (d->qmp)
                qmp_close(d->qmp);
        d->qmp = qmp_unref(d->qmp);
        /* Keep the pid: Stop must be able to end a hung QEMU. */
        domain_load_live(d);
        domain_set_state(d, DOMAIN_CRASHED);
        domain_op_finish(d, -QSNAP_E_QEMU_FAILED, "QEMU did not answer on its monitor");
        return 0;
}

static int domain_attach_begin(Domain *d, DomainDoneFunc done, void *userdata, char **ret_message) {
        _cleanup_free_ char *managed_path = NULL;
        const char *path = d->def->monitor_path;
        int r;

        if (d->op)
                return -QSNAP_E_BUSY;
        if (domain_is_managed(d)) {
                managed_path = domain_runtime_path(d, ".qmp");
                if (!managed_path)
                        return -ENOMEM;
                path = managed_path;
                if (access(path, F_OK) < 0) {
                        /* never started, or stopped cleanly: no QEMU holds
                         * a file a journaled bitmap removal is owed */
                        bitmaps_copies_qemu_gone(d);
                        return 0;
                }
        }

        r = domain_op_begin(d, DOMAIN_OP_ATTACH, 0, done, userdata);
        if (r < 0)
                return r;
        r = domain_connect_monitor(d, path, on_attach_ready);
        if (r < 0) {
                /* The socket is there but nobody listens: QEMU died while we
                 * were away. An attached domain is simply off. The live
                 * definition first: a job's recovery compares it with the
                 * stored one. */
                domain_load_live(d);
                domain_jobs_lost(d);
                if (domain_is_managed(d)) {
                        log_warning_errno(r, "Domain '%s': QEMU vanished while qsnapd was not running (%m).",
                                          d->def->name);
                        domain_reset(d, DOMAIN_CRASHED);
                } else {
                        log_info("Domain '%s': nothing answers on %s (%s), shut off.", d->def->name, path,
                                 strerror(-r));
                        bitmaps_copies_qemu_gone(d);
                }
                domain_op_finish(d, 0, NULL);
                return 1;
        }
        r = domain_op_arm_timer(d, attach_timeout_usec(), on_attach_timeout);
        if (r < 0) {
                domain_op_finish(d, r, "Failed to arm a timer");
                return 1;
        }
        return 1;
}

int domain_attach(Domain *d, DomainDoneFunc done, void *userdata, char **ret_message) {
        return domain_op_started(d, domain_attach_begin(d, done, userdata, ret_message));
}

/* ---- start ---- */

static void on_start_cont(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Domain *d = userdata;

        if (error < 0) {
                _cleanup_free_ char *message = strprintf("QEMU refused to run: %s", strna(desc));
                return domain_op_finish(d, -QSNAP_E_QEMU_FAILED, message);
        }
        domain_set_state(d, DOMAIN_RUNNING);
        domain_op_finish(d, 0, NULL);
}

/* QEMU is up (and the memory state in): run, or stay paused as asked. */
static void start_run_or_pause(Domain *d) {
        if (call(d)->flags & DOMAIN_START_PAUSED) {
                domain_set_state(d, DOMAIN_PAUSED);
                return domain_op_finish(d, 0, NULL);
        }
        if (qmp_cmd_cont(d->qmp, on_start_cont, d) < 0)
                domain_op_finish(d, -QSNAP_E_QEMU_FAILED, "Failed to send cont");
}

/* A start that cannot finish: QEMU goes, the start fails. */
static void start_abort(Domain *d, int error, const char *message) {
        if (d->pid > 0)
                (void) kill(d->pid, SIGKILL);
        d->quit_requested = true;
        if (d->qmp)
                qmp_close(d->qmp);
        domain_reset(d, DOMAIN_SHUTOFF);
        domain_op_finish(d, error, message);
}

/* A failed incoming migration normally ends QEMU (the disconnect reports
 * it); one that stays up with nothing loaded is ended here. */
static void start_incoming_fail(Domain *d, const char *why) {
        _cleanup_free_ char *message = strprintf("QEMU could not load the memory state: %s", strna(why));

        log_error("Domain '%s': %s", d->def->name, strna(message));
        start_abort(d, -QSNAP_E_QEMU_FAILED, message);
}

static int on_incoming_poll(sd_event_source *s, uint64_t usec, void *userdata);

static void on_incoming_query(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Domain *d = userdata;
        const char *status, *err;

        /* QEMU went away (a failed load ends it): the disconnect callback
         * reports that, after every pending reply had its say. */
        if (!d->op || call(d)->type != DOMAIN_OP_START || !call(d)->incoming || error == -ECONNRESET)
                return;
        if (error < 0 || qmp_parse_query_migrate(result, &status, &err) < 0)
                return start_incoming_fail(d, desc ?: "query-migrate failed");
        if (streq(status, "completed"))
                return start_run_or_pause(d);
        if (STR_IN_SET(status, "failed", "cancelled"))
                return start_incoming_fail(d, err ?: status);
        if (now_usec(CLOCK_MONOTONIC) > call(d)->deadline)
                return start_incoming_fail(d, "it took too long");
        if (domain_op_arm_timer(d, 50 * USEC_PER_MSEC, on_incoming_poll) < 0)
                start_incoming_fail(d, "cannot arm a timer");
}

static int on_incoming_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        Domain *d = userdata;

        if (qmp_cmd_query_migrate(d->qmp, on_incoming_query, d) < 0)
                start_incoming_fail(d, "cannot send query-migrate");
        return 0;
}

static void on_migrate_incoming(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                                void *userdata) {
        Domain *d = userdata;

        if (!d->op || call(d)->type != DOMAIN_OP_START || error == -ECONNRESET)
                return;
        if (error < 0)
                return start_incoming_fail(d, desc);
        on_incoming_poll(NULL, 0, d);
}

static void start_incoming(Domain *d) {
        int r;

        log_info("Domain '%s': loading the memory state (%s).", d->def->name, call(d)->incoming);
        call(d)->deadline = now_usec(CLOCK_MONOTONIC) + d->manager->config.start_timeout_usec;
        r = domain_send_incoming(d, call(d)->incoming, on_migrate_incoming, d);
        if (r < 0) {
                _cleanup_free_ char *why = strprintf("cannot open %s: %s", call(d)->incoming,
                                                     r == -QSNAP_E_PATH_NOT_ALLOWED ? "not a regular file" :
                                                     r == -QSNAP_E_QEMU_FAILED ? "cannot send migrate-incoming" :
                                                     strerror(-r));
                return start_incoming_fail(d, why);
        }
        if (call(d)->incoming_sent)
                call(d)->incoming_sent(d, call(d)->userdata);
}

static void on_start_ptys_known(Domain *d) {
        if (call(d)->incoming)
                return start_incoming(d);
        /* QEMU waits in prelaunch (-S) until told to run. */
        start_run_or_pause(d);
}

static void on_start_ready(Qmp *qmp, int error, void *userdata) {
        Domain *d = userdata;

        if (error < 0)
                return; /* the disconnect callback reports it */

        call(d)->timer = sd_event_source_disable_unref(call(d)->timer);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
        domain_agent_attach(d);
        if (domain_jobs_attach(d, NULL, NULL) < 0)
                log_warning("Domain '%s': cannot track its block jobs.", d->def->name);
        /* The ptys' paths into the live XML before Start answers. */
        domain_devices_query_ptys(d, on_start_ptys_known);
}

static int on_start_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Domain *d = userdata;

        log_error("Domain '%s': QEMU did not come up in time, killing it.", d->def->name);
        start_abort(d, -QSNAP_E_QEMU_FAILED, "QEMU did not answer on its monitor in time");
        return 0;
}

int domain_check_start(Domain *d, char **ret_message) {
        /* Running already says more than "busy": an attach that is still
         * adopting jobs (or a Stop under way) has a State to show. */
        if (domain_is_active(d)) {
                if (ret_message)
                        *ret_message = strprintf("Domain '%s' is already %s.", d->def->name, domain_state_to_string(d->state));
                return -QSNAP_E_OPERATION_INVALID;
        }
        if (domain_is_busy(d)) {
                if (ret_message)
                        *ret_message = operation_busy_message(d);
                return -QSNAP_E_BUSY;
        }
        /* QEMU follows the headers itself (until it gets the chain as
         * descriptors): a chain leaving the allowed folders, or naming a
         * json:/protocol backing, is refused, not launched. */
        for (size_t i = 0; domain_is_managed(d) && i < d->def->n_disks; i++) {
                const DomainDisk *disk = d->def->disks + i;
                _cleanup_(image_chain_done) ImageChain chain = {};
                _cleanup_free_ char *why = NULL;
                int r;

                r = gate_read_chain(d, disk->source, disk->format, &chain, &why);
                if (r == -ENOMEM)
                        return r;
                if (r == -QSNAP_E_PATH_NOT_ALLOWED) {
                        if (ret_message)
                                *ret_message = strprintf("Disk %s: %s", disk->target, strna(why));
                        return r;
                }
        }
        /* Bridged interfaces: allowed by the host's list, and present. */
        return domain_is_managed(d) ? domain_net_check(d, d->def, ret_message) : 0;
}

/* Start of a domain whose QEMU somebody else launches: attach to it. */
static int domain_start_attached(Domain *d, DomainDoneFunc done, void *userdata, char **ret_message) {
        int r;

        r = domain_op_begin(d, DOMAIN_OP_ATTACH, 0, done, userdata);
        if (r < 0)
                return r;
        r = domain_connect_monitor(d, d->def->monitor_path, on_attach_ready);
        if (r >= 0)
                r = domain_op_arm_timer(d, attach_timeout_usec(), on_attach_timeout);
        if (r < 0) {
                domain_op_abandon(d);
                *ret_message = strprintf("Nothing answers on the monitor socket %s of domain '%s' (%s); qsnapd does not "
                                         "launch an attached domain's QEMU: start it first.",
                                         d->def->monitor_path, d->def->name, strerror(-r));
                return -QSNAP_E_NOT_RUNNING;
        }
        return 0;
}

static int domain_start_full(Domain *d, uint64_t flags, const char *incoming, DomainStepFunc incoming_sent,
                             DomainDoneFunc done, void *userdata, char **ret_message) {
        _cleanup_free_ char *sock = NULL, *pidfile = NULL, *live_xml_path = NULL, *log_path = NULL, *live_xml = NULL;
        _cleanup_(domain_def_freep) DomainDef *live = NULL;
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_(launch_files_done) LaunchFiles lf = {};
        _cleanup_(qemu_creds_done) QemuCreds creds = {};
        _cleanup_close_ int qmp_fd = -EBADF, log_fd = -EBADF;
        char pidbuf[32];
        pid_t pid = 0;
        uint64_t start_time = 0;
        int r;

        r = domain_check_start(d, ret_message);
        if (r < 0)
                return r;
        if (!domain_is_managed(d))
                return domain_start_attached(d, done, userdata, ret_message);

        /* A crashed domain leaves its transient overlays and sockets behind. */
        domain_reset(d, DOMAIN_SHUTOFF);

        r = domain_def_copy(d->def, &live);
        if (r < 0)
                return r;

        sock = domain_runtime_path(d, ".qmp");
        pidfile = domain_runtime_path(d, ".pid");
        live_xml_path = domain_runtime_path(d, ".xml");
        log_path = domain_log_path(d);
        if (!sock || !pidfile || !live_xml_path || !log_path)
                return -ENOMEM;
        r = domain_launch_prepare_dirs(d, &creds, ret_message);
        if (r < 0)
                return r;

        r = domain_launch_transient_overlays(d, live, ret_message);
        if (r >= 0)
                r = nvram_prepare(live, ret_message);
        if (r < 0)
                goto fail;
        r = domain_launch_argv(d, live, incoming, &lf, &argv, ret_message);
        if (r >= 0)
                r = domain_launch_live_xml(live, &lf, &live_xml);
        if (r < 0)
                goto fail;
        r = write_file_atomic(live_xml_path, live_xml, strlen(live_xml), 0600);
        if (r < 0) {
                *ret_message = strprintf("Cannot write %s: %s", live_xml_path, strerror(-r));
                goto fail;
        }
        log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (log_fd < 0) {
                r = -errno;
                *ret_message = strprintf("Cannot open log %s: %m", log_path);
                goto fail;
        }
        (void) domain_launch_log_header(log_fd, argv);

        qmp_fd = domain_launch_bind_socket(sock);
        if (qmp_fd < 0) {
                r = qmp_fd;
                *ret_message = strprintf("Cannot listen on %s: %s", sock, strerror(-r));
                goto fail;
        }

        r = domain_launch_spawn(argv, log_fd, qmp_fd, &lf, &creds, &pid, &start_time);
        if (r < 0) {
                *ret_message = strprintf("Cannot launch %s: %s", argv[0], strerror(-r));
                goto fail;
        }
        qmp_fd = safe_close(qmp_fd);
        log_info("Domain '%s': launched QEMU, pid %d.", d->def->name, (int) pid);
        r = domain_files_set(d, lf.files, lf.n_files);
        if (r < 0)
                goto kill;

        snprintf(pidbuf, sizeof(pidbuf), "%d\n", (int) pid);
        (void) write_file_atomic(pidfile, pidbuf, strlen(pidbuf), 0644);

        domain_def_free(d->live);
        d->live = TAKE_PTR(live);
        d->pid = pid;
        /* A pidfd names QEMU even where /proc hides it (ProtectProc=). */
        d->pidfd = safe_close(d->pidfd);
        d->pidfd = domain_launch_record_process(d, pid, start_time);
        manager_notify_launched(d->manager, d, pid);

        r = domain_op_begin(d, DOMAIN_OP_START, flags, done, userdata);
        if (r < 0)
                goto kill;
        if (incoming) {
                call(d)->incoming_sent = incoming_sent;
                call(d)->incoming = strdup(incoming);
                if (!call(d)->incoming) {
                        domain_op_abandon(d);
                        r = -ENOMEM;
                        goto kill;
                }
        }
        r = domain_connect_monitor(d, sock, on_start_ready);
        if (r >= 0)
                r = domain_op_arm_timer(d, d->manager->config.start_timeout_usec, on_start_timeout);
        if (r < 0) {
                domain_op_abandon(d);
                *ret_message = strprintf("Cannot connect to the monitor of QEMU: %s", strerror(-r));
                goto kill;
        }
        return 0;

kill:
        (void) kill(pid, SIGKILL);
        d->pid = 0;
fail:
        /* live is a copy of def: the same transient overlays go. */
        domain_reset(d, DOMAIN_SHUTOFF);
        return r;
}

int domain_start(Domain *d, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message) {
        return domain_op_started(d, domain_start_full(d, flags, NULL, NULL, done, userdata, ret_message));
}

int domain_start_incoming(Domain *d, uint64_t flags, const char *memory_file, DomainStepFunc sent, DomainDoneFunc done,
                          void *userdata, char **ret_message) {
        if (!domain_is_managed(d)) {
                *ret_message = strprintf("Domain '%s' runs a QEMU started elsewhere; qsnapd cannot restart it to load "
                                         "a memory state.", d->def->name);
                return -QSNAP_E_UNSUPPORTED;
        }
        return domain_op_started(d, domain_start_full(d, flags, memory_file, sent, done, userdata, ret_message));
}

/* ---- stop, pause, resume ---- */

static void on_quit_reply(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        /* Nothing: the disconnect that follows finishes the Stop. */
}

/* True when d->pid is a live process started for this domain: the pidfd
 * taken at launch, or at adoption for the process the launch recorded. */
static bool qemu_pid_is_ours(Domain *d) {
        return domain_is_managed(d) && d->pid > 0 && d->pidfd >= 0 && !domain_launch_process_gone(d->pid, d->pidfd);
}

static int on_kill_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Domain *d = userdata;

        log_warning("Domain '%s': QEMU did not quit, killing pid %d.", d->def->name, (int) d->pid);
        if (qemu_pid_is_ours(d))
                (void) domain_launch_kill(d->pid, d->pidfd);
        if (d->qmp)
                qmp_close(d->qmp);
        domain_reset(d, DOMAIN_SHUTOFF);
        domain_op_finish(d, 0, NULL);
        return 0;
}

static void domain_quit(Domain *d) {
        d->quit_requested = true;
        if (!d->qmp || qmp_cmd_quit(d->qmp, on_quit_reply, d) < 0)
                log_warning("Domain '%s': cannot send quit.", d->def->name);
        if (domain_op_arm_timer(d, QEMU_QUIT_TIMEOUT_USEC, on_kill_timeout) < 0)
                log_warning("Domain '%s': cannot arm the kill timer.", d->def->name);
}

static int on_graceful_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Domain *d = userdata;

        log_info("Domain '%s': guest did not power off in time, quitting QEMU.", d->def->name);
        domain_quit(d);
        return 0;
}

static void on_powerdown_reply(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Domain *d = userdata;

        if (error < 0 && d->op && call(d)->type == DOMAIN_OP_STOP) {
                log_info("Domain '%s': system_powerdown failed (%s), quitting QEMU.", d->def->name, strna(desc));
                domain_quit(d);
        }
}

int domain_check_stop(Domain *d, char **ret_message) {
        if (d->snapshot_busy || (d->op && call(d)->type != DOMAIN_OP_START)) {
                if (ret_message)
                        *ret_message = operation_busy_message(d);
                return -QSNAP_E_BUSY;
        }
        if (d->state == DOMAIN_SHUTOFF) {
                if (ret_message)
                        *ret_message = strprintf("Domain '%s' is not running.", d->def->name);
                return -QSNAP_E_NOT_RUNNING;
        }
        return 0;
}

static int on_reap_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        Domain *d = userdata;

        if (!domain_launch_process_gone(d->pid, d->pidfd) && now_usec(CLOCK_MONOTONIC) < call(d)->deadline) {
                (void) sd_event_source_set_time_relative(s, REAP_POLL_USEC);
                return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        domain_reset(d, DOMAIN_SHUTOFF);
        domain_op_finish(d, 0, NULL);
        return 0;
}

static int domain_stop_begin(Domain *d, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message) {
        int r;

        r = domain_check_stop(d, ret_message);
        if (r < 0)
                return r;
        /* Stop wins over a Start still waiting for QEMU. */
        if (d->op)
                domain_op_finish(d, -QSNAP_E_OPERATION_INVALID, "Stopped before it finished starting");

        r = domain_op_begin(d, DOMAIN_OP_STOP, flags, done, userdata);
        if (r < 0)
                return r;

        if (d->state == DOMAIN_CRASHED || !d->qmp) {
                /* A hung QEMU that still holds its images is killed, as
                 * virsh destroy would; then the runtime files go. */
                if (qemu_pid_is_ours(d)) {
                        log_warning("Domain '%s': killing unresponsive QEMU pid %d.", d->def->name, (int) d->pid);
                        (void) domain_launch_kill(d->pid, d->pidfd);
                        call(d)->deadline = now_usec(CLOCK_MONOTONIC) + QEMU_QUIT_TIMEOUT_USEC;
                        r = domain_op_arm_timer(d, REAP_POLL_USEC, on_reap_poll);
                        if (r >= 0)
                                return 0;
                }
                domain_reset(d, DOMAIN_SHUTOFF);
                domain_op_finish(d, 0, NULL);
                return 0;
        }
        if (flags & DOMAIN_STOP_GRACEFUL) {
                r = qmp_cmd_system_powerdown(d->qmp, on_powerdown_reply, d);
                if (r >= 0)
                        r = domain_op_arm_timer(d, d->manager->config.graceful_timeout_usec, on_graceful_timeout);
                if (r >= 0)
                        return 0;
        }
        domain_quit(d);
        return 0;
}

int domain_stop(Domain *d, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message) {
        return domain_op_started(d, domain_stop_begin(d, flags, done, userdata, ret_message));
}

int domain_check_running(Domain *d, char **ret_message) {
        if (!domain_is_active(d) || !d->qmp || !qmp_is_ready(d->qmp)) {
                if (ret_message)
                        *ret_message = strprintf("Domain '%s' is %s; its QEMU must be running.", d->def->name,
                                                 d->op && call(d)->type == DOMAIN_OP_START ? "starting" : domain_state_to_string(d->state));
                return -QSNAP_E_NOT_RUNNING;
        }
        return 0;
}

int domain_check_idle(const Domain *d, char **ret_message) {
        if (domain_is_busy(d)) {
                if (ret_message)
                        *ret_message = operation_busy_message(d);
                return -QSNAP_E_BUSY;
        }
        return 0;
}

int domain_check_pause(Domain *d, bool pause, char **ret_message) {
        int r = domain_check_running(d, ret_message);
        if (r < 0)
                return r;
        r = domain_check_idle(d, ret_message);
        if (r < 0)
                return r;
        /* Already there: nothing to do, as in libvirt. */
        return d->state == (pause ? DOMAIN_PAUSED : DOMAIN_RUNNING) ? 1 : 0;
}

static void on_pause_resume_reply(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Domain *d = userdata;

        if (error < 0) {
                _cleanup_free_ char *message = strprintf("QEMU: %s", strna(desc));
                return domain_op_finish(d, -QSNAP_E_QEMU_FAILED, message);
        }
        /* The STOP/RESUME event normally came first; do not depend on it. */
        domain_set_state(d, call(d)->type == DOMAIN_OP_PAUSE ? DOMAIN_PAUSED : DOMAIN_RUNNING);
        domain_op_finish(d, 0, NULL);
}

static int domain_pause_resume(Domain *d, bool pause, DomainDoneFunc done, void *userdata, char **ret_message) {
        int64_t id;
        int r;

        r = domain_check_pause(d, pause, ret_message);
        if (r < 0)
                return r;
        if (r > 0) {
                r = domain_op_begin(d, pause ? DOMAIN_OP_PAUSE : DOMAIN_OP_RESUME, 0, done, userdata);
                if (r >= 0)
                        domain_op_finish(d, 0, NULL);
                return r;
        }
        r = domain_op_begin(d, pause ? DOMAIN_OP_PAUSE : DOMAIN_OP_RESUME, 0, done, userdata);
        if (r < 0)
                return r;
        id = pause ? qmp_cmd_stop(d->qmp, on_pause_resume_reply, d) : qmp_cmd_cont(d->qmp, on_pause_resume_reply, d);
        if (id < 0)
                domain_op_finish(d, (int) id, "Cannot send the command to QEMU");
        return 0;
}

int domain_pause(Domain *d, DomainDoneFunc done, void *userdata, char **ret_message) {
        return domain_op_started(d, domain_pause_resume(d, true, done, userdata, ret_message));
}

int domain_resume(Domain *d, DomainDoneFunc done, void *userdata, char **ret_message) {
        return domain_op_started(d, domain_pause_resume(d, false, done, userdata, ret_message));
}

int domain_check_undefine(Domain *d, char **ret_message) {
        if (domain_is_busy(d)) {
                if (ret_message)
                        *ret_message = operation_busy_message(d);
                return -QSNAP_E_BUSY;
        }
        if (domain_is_managed(d) && domain_is_active(d)) {
                if (ret_message)
                        *ret_message = strprintf("Domain '%s' is %s; stop it before undefining it.", d->def->name,
                                                 domain_state_to_string(d->state));
                return -QSNAP_E_OPERATION_INVALID;
        }
        return 0;
}

/* ---- monitor passthrough ---- */

static void monitor_call_reply(Operation *o, int error, const char *message) {
        MonitorCall *c = o->plan;

        c->done(o->domain, error, message, c->reply, c->userdata);
}

static const OperationKind monitor_call_kind = {
        .name = "monitor command",
        .lock = OPERATION_LOCK_NONE,
        .free_plan = free,
        .reply = monitor_call_reply,
};

static void on_monitor_reply(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Operation *o = userdata;
        MonitorCall *c = o->plan;

        o->domain->graph_epoch++; /* whatever it did is done now */
        if (error == -QSNAP_E_QEMU_FAILED)
                return operation_finishf(o, error, "QEMU: %s", strna(desc));
        if (error < 0)
                return operation_finish(o, error, "The monitor connection went away");
        c->reply = json_object_is_type(result, json_type_string)
                ? json_object_get_string(result)
                : json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        operation_finish(o, 0, NULL);
}

int domain_monitor_command(Domain *d, const char *command, uint64_t flags, DomainDoneFunc done, void *userdata,
                           char **ret_message) {
        json_object *cmd = NULL;
        MonitorCall *c;
        Operation *o;
        int64_t id;
        int r;

        r = domain_check_running(d, ret_message);
        if (r < 0)
                return r;

        if (!(flags & DOMAIN_MONITOR_HMP)) {
                json_tokener *tok = json_tokener_new();
                const char *why = "not an object";
                size_t len = strlen(command);

                if (!tok)
                        return -ENOMEM;
                cmd = json_tokener_parse_ex(tok, command, (int) len);
                if (!cmd)
                        why = json_tokener_error_desc(json_tokener_get_error(tok));
                else if (strspn(command + json_tokener_get_parse_end(tok), " \t\r\n") !=
                         len - json_tokener_get_parse_end(tok)) {
                        why = "text after the command";
                        json_object_put(cmd);
                        cmd = NULL;
                }
                json_tokener_free(tok);
                if (!cmd || !json_object_is_type(cmd, json_type_object)) {
                        *ret_message = strprintf("Not one QMP command object (%s): %s", why, command);
                        json_object_put(cmd);
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
        }

        c = new0(MonitorCall, 1);
        if (!c) {
                json_object_put(cmd);
                return -ENOMEM;
        }
        *c = (MonitorCall) { .done = done, .userdata = userdata };
        r = operation_new(d, &monitor_call_kind, c, &o);
        if (r < 0) {
                json_object_put(cmd);
                return r;
        }
        log_warning("Domain '%s' tainted: monitor command passed through: %s", d->def->name, command);
        d->graph_epoch++; /* it may change the block graph: what qsnapd learned of it is stale */

        if (flags & DOMAIN_MONITOR_HMP)
                id = qmp_cmd_human_monitor_command(d->qmp, command, on_monitor_reply, o);
        else
                id = qmp_send_raw(d->qmp, cmd, on_monitor_reply, o);
        if (id < 0) {
                if (id == -EINVAL) {
                        *ret_message = strprintf("A QMP command object needs a string member \"execute\": %s", command);
                        id = -QSNAP_E_INVALID_ARGUMENT;
                }
                operation_cancel(o);
                return (int) id;
        }
        operation_started(o);
        return 0;
}

void domain_disconnect(Domain *d) {
        /* Jobs go on in QEMU; the next qsnapd adopts them. */
        domain_jobs_disconnected(d, false);
        domain_agent_detach(d, false);
        if (d->qmp)
                qmp_close(d->qmp);
        d->qmp = qmp_unref(d->qmp);
}

int domain_save(Domain *d) {
        return manager_store_def(d->manager, d->def);
}

int domain_save_live(Domain *d) {
        _cleanup_free_ char *path = NULL, *xml = NULL;
        int r;

        if (!d->live || !domain_is_managed(d))
                return 0;
        path = domain_runtime_path(d, ".xml");
        if (!path)
                return -ENOMEM;
        r = domain_def_format(d->live, DOMAIN_FORMAT_SECURE, &xml);
        if (r < 0)
                return r;
        return write_file_atomic(path, xml, strlen(xml), 0600);
}

int domain_save_disks(Domain *d) {
        int r;

        r = domain_save(d);
        if (r >= 0)
                r = domain_save_live(d);
        if (r < 0)
                log_error_errno(r, "Domain '%s': cannot store the disks' new active files: %m", d->def->name);
        return r;
}

const DomainDisk *domain_lookup_disk(const Domain *d, const char *name) {
        const DomainDef *def = domain_current_def(d);

        for (size_t i = 0; i < def->n_disks; i++)
                if (streq(def->disks[i].target, name) || streq(def->disks[i].source, name))
                        return def->disks + i;
        return NULL;
}

int domain_format_xml(Domain *d, bool inactive, bool secure, char **ret) {
        _cleanup_(domain_def_freep) DomainDef *copy = NULL;
        int r;

        r = domain_def_copy(inactive ? d->def : domain_current_def(d), &copy);
        if (r < 0)
                return r;
        /* As libvirt does: each disk's backing chain as <backingStore>. */
        for (size_t i = 0; i < copy->n_disks; i++) {
                DomainDisk *disk = copy->disks + i;
                const ImageChain *chain = domain_disk_chain(d, disk->source, disk->format);

                if (!chain || chain->n_layers < 1)
                        continue;
                disk->backing_formats = new0(DiskFormat, chain->n_layers);
                if (!disk->backing_formats)
                        return -ENOMEM;
                for (size_t j = 1; j < chain->n_layers; j++) {
                        r = strv_extend(&disk->backing_chain, chain->layers[j].path);
                        if (r < 0)
                                return r;
                        disk->backing_formats[j - 1] = chain->layers[j].format;
                }
        }
        return domain_def_format(copy, DOMAIN_FORMAT_BACKING_CHAIN | (secure ? DOMAIN_FORMAT_SECURE : 0), ret);
}
