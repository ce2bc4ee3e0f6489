/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The paused `-machine none` QEMU of a shut-off domain (core/offline-qemu.h):
 * launched as qsnapd's child with the images read-only by descriptor,
 * attached to the domain as its QMP connection and job tracker while it
 * runs, quit (or found gone) and reaped. The domain's State is never
 * touched.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "core/domain-jobs.h"
#include "core/domain-launch.h"
#include "core/manager.h"
#include "core/offline-qemu.h"
#include "core/qemu-files.h"
#include "qemu/qmp-commands.h"
#include "util/util.h"

#define OFFLINE_QEMU_QUIT_TIMEOUT_USEC (10 * USEC_PER_SEC)

typedef struct OfflineQemu {
        pid_t pid;
        char *socket;
        bool ready, stopping;
        OfflineQemuFunc on_ready, on_gone, on_stopped;
        void *userdata, *stop_userdata;
        sd_event_source *timer;
} OfflineQemu;

/* QEMU closed its monitor: it is exiting. A moment to do so, then SIGKILL. */
static void reap(OfflineQemu *o) {
        int status;

        if (o->pid <= 0)
                return;
        for (unsigned i = 0; i < 200; i++) {
                pid_t p = waitpid(o->pid, &status, WNOHANG);

                if (p == o->pid || (p < 0 && errno != EINTR)) {
                        o->pid = 0;
                        return;
                }
                (void) nanosleep(&(struct timespec) { .tv_nsec = 10 * 1000 * 1000 }, NULL);
        }
        (void) kill(o->pid, SIGKILL);
        while (waitpid(o->pid, &status, 0) < 0 && errno == EINTR)
                ;
        o->pid = 0;
}

static OfflineQemu *offline_qemu_done(OfflineQemu *o) {
        if (!o)
                return NULL;
        if (o->pid > 0)
                (void) kill(o->pid, SIGKILL);
        reap(o);
        if (o->socket)
                (void) unlink(o->socket);
        free(o->socket);
        sd_event_source_disable_unref(o->timer);
        free(o);
        return NULL;
}

static void on_disconnect(Qmp *qmp, int error, void *userdata) {
        _cleanup_(domain_unrefp) Domain *d = domain_ref(userdata);
        OfflineQemu *o = d->offline_qemu;
        _cleanup_free_ char *log = NULL, *path = domain_log_path(d), *message = NULL;
        OfflineQemuFunc cb;
        void *cb_userdata;

        if (!o)
                return;
        d->offline_qemu = NULL;
        reap(o);
        if (!o->stopping) {
                if (path)
                        (void) domain_launch_start_output(path, &log);
                message = strprintf("The paused QEMU of shut-off domain '%s' exited: %s", d->def->name,
                                    isempty(log) ? "(no output)" : log);
                log_error("%s", strna(message));
        }
        cb = o->stopping ? o->on_stopped : o->ready ? o->on_gone : o->on_ready;
        cb_userdata = o->stopping ? o->stop_userdata : o->userdata;
        /* Nothing is sent to it any more; its jobs end failed after the
         * caller heard why (an orderly quit comes after they all ended). */
        d->qmp = qmp_unref(d->qmp);
        domain_files_clear(d);
        if (cb)
                cb(d, o->stopping ? 0 : -QSNAP_E_QEMU_FAILED, message, cb_userdata);
        domain_jobs_disconnected(d, !o->stopping);
        offline_qemu_done(o);
}

/* It did not answer on its monitor in time (or did not quit): killed, the
 * disconnect reports it. */
static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        Domain *d = userdata;
        OfflineQemu *o = d->offline_qemu;

        if (o && o->pid > 0) {
                log_warning("Domain '%s': its paused QEMU did not %s, killing pid %d.", d->def->name,
                            o->stopping ? "quit" : "answer on its monitor", (int) o->pid);
                (void) kill(o->pid, SIGKILL);
        }
        return 0;
}

static int arm_timer(Domain *d, OfflineQemu *o, uint64_t usec) {
        o->timer = sd_event_source_disable_unref(o->timer);
        return sd_event_add_time_relative(d->manager->event, &o->timer, CLOCK_MONOTONIC, usec, 0, on_timeout, d);
}

static void on_ready(Qmp *qmp, int error, void *userdata) {
        Domain *d = userdata;
        OfflineQemu *o = d->offline_qemu;
        int r;

        if (error < 0 || !o || o->stopping)
                return; /* the disconnect follows */
        o->timer = sd_event_source_disable_unref(o->timer);
        r = domain_jobs_attach_fresh(d);
        if (r < 0) {
                log_error_errno(r, "Domain '%s': cannot track the jobs of its paused QEMU: %m", d->def->name);
                (void) kill(o->pid, SIGKILL);
                return; /* the disconnect reports it */
        }
        o->ready = true;
        log_info("Domain '%s': paused QEMU (pid %d) for offline work is up.", d->def->name, (int) o->pid);
        if (o->on_ready)
                o->on_ready(d, 0, NULL, o->userdata);
}

int offline_qemu_start(Domain *d, OfflineQemuFunc ready, OfflineQemuFunc gone, void *userdata, char **ret_message) {
        _cleanup_(launch_files_done) LaunchFiles lf = {};
        _cleanup_(qemu_creds_done) QemuCreds creds = {};
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *log_path = domain_log_path(d);
        _cleanup_close_ int log_fd = -EBADF, qmp_fd = -EBADF;
        _cleanup_(qmp_unrefp) Qmp *q = NULL;
        OfflineQemu *o;
        int r;

        if (domain_is_active(d) || d->qmp || d->offline_qemu) {
                *ret_message = strprintf("Domain '%s' has a QEMU already.", d->def->name);
                return -QSNAP_E_BUSY;
        }
        if (!log_path)
                return -ENOMEM;
        r = domain_launch_prepare_dirs(d, &creds, ret_message);
        if (r < 0)
                return r;
        r = domain_launch_offline_argv(d, &lf, &argv, ret_message);
        if (r < 0)
                return r;
        o = new0(OfflineQemu, 1);
        if (!o)
                return -ENOMEM;
        *o = (OfflineQemu) { .on_ready = ready, .on_gone = gone, .userdata = userdata,
                             .socket = domain_runtime_path(d, ".offline.qmp") };
        if (!o->socket) {
                offline_qemu_done(o);
                return -ENOMEM;
        }
        log_fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (log_fd < 0) {
                r = -errno;
                *ret_message = strprintf("Cannot open log %s: %s", log_path, strerror(-r));
                goto fail;
        }
        (void) domain_launch_log_header(log_fd, argv);
        qmp_fd = domain_launch_bind_socket(o->socket);
        if (qmp_fd < 0) {
                r = qmp_fd;
                *ret_message = strprintf("Cannot listen on %s: %s", o->socket, strerror(-r));
                goto fail;
        }
        r = domain_launch_spawn_child(argv, log_fd, qmp_fd, &lf, &creds, &o->pid);
        if (r < 0) {
                *ret_message = strprintf("Cannot launch %s: %s", argv[0], strerror(-r));
                goto fail;
        }
        r = domain_files_set(d, lf.files, lf.n_files);
        if (r >= 0)
                r = qmp_connect(d->manager->event, o->socket, &q);
        if (r < 0) {
                *ret_message = strprintf("Cannot connect to the monitor of QEMU: %s", strerror(-r));
                domain_files_clear(d);
                goto fail;
        }
        qmp_set_ready_callback(q, on_ready, d);
        qmp_set_disconnect_callback(q, on_disconnect, d);
        d->qmp = TAKE_PTR(q);
        d->offline_qemu = o;
        if (arm_timer(d, o, d->manager->config.start_timeout_usec) < 0)
                log_warning("Domain '%s': cannot arm the start timer of its paused QEMU.", d->def->name);
        log_info("Domain '%s': launched a paused QEMU for offline work, pid %d.", d->def->name, (int) o->pid);
        return 0;
fail:
        offline_qemu_done(o);
        return r == -ENOMEM ? r : -QSNAP_E_QEMU_FAILED;
}

static void on_quit_reply(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        /* Nothing: the disconnect that follows ends it. */
}

void offline_qemu_stop(Domain *d, OfflineQemuFunc done, void *userdata) {
        OfflineQemu *o = d->offline_qemu;

        if (!o) {
                if (done)
                        done(d, 0, NULL, userdata);
                return;
        }
        o->stopping = true;
        o->on_stopped = done;
        o->stop_userdata = userdata;
        if (!d->qmp || qmp_cmd_quit(d->qmp, on_quit_reply, d) < 0)
                (void) kill(o->pid, SIGKILL);
        if (arm_timer(d, o, OFFLINE_QEMU_QUIT_TIMEOUT_USEC) < 0)
                log_warning("Domain '%s': cannot arm the kill timer of its paused QEMU.", d->def->name);
}

bool offline_qemu_runs(const Domain *d) {
        return d->offline_qemu != NULL;
}

void offline_qemu_free(Domain *d) {
        d->offline_qemu = offline_qemu_done(d->offline_qemu);
}
