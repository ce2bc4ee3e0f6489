/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qsnapd's entry point: options, the event loop, loading state and
 * re-attaching to every QEMU before the bus name is taken, sd_notify,
 * clean exit on SIGTERM and exit on idle. VMs keep running when qsnapd
 * exits: nothing here stops a QEMU.
 */
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include "config.h"
#include "bus/bus-errors.h"
#include "bus/bus-manager.h"
#include "core/domain-net.h"
#include "core/operation.h"
#include "ops/checkpoint-create.h"
#include "ops/checkpoint-delete.h"
#include "ops/backup.h"
#include "ops/snapshot-create.h"
#include "ops/snapshot-delete.h"
#include "ops/snapshot-revert.h"
#include "util/util.h"

typedef enum BusMode {
        BUS_MODE_SYSTEM,
        BUS_MODE_USER,
        BUS_MODE_ADDRESS,
} BusMode;

static BusMode arg_bus_mode = BUS_MODE_SYSTEM;
static char *arg_address = NULL;
static char *arg_state_dir = NULL;
static char *arg_runtime_dir = NULL;
static int arg_polkit = -1; /* -1: yes on the system bus, no on the user bus */
static uint64_t arg_idle_timeout_usec = 30 * USEC_PER_SEC;
static uint64_t arg_graceful_timeout_usec = 60 * USEC_PER_SEC;
static uint64_t arg_start_timeout_usec = 30 * USEC_PER_SEC;
static uint64_t arg_agent_timeout_usec = 10 * USEC_PER_SEC;
static char *arg_qemu = NULL;
static char *arg_qemu_user = NULL;
static bool arg_qemu_user_set = false;
static uint32_t arg_qemu_uid_base = 0, arg_qemu_uid_count = 0;
static char *arg_bridge_conf = NULL;
static char **arg_image_roots = NULL;
static uint64_t arg_metadata_read_cap = 128ULL * 1024 * 1024;

/* Every operation that journals itself, with its recovery. The order is
 * the order in which interrupted ones are recovered at start-up. */
static const OperationKind *const operation_kinds[] = {
        &snapshot_create_kind,
        &snapshot_delete_kind,
        &snapshot_revert_kind,
        &checkpoint_create_kind,
        &checkpoint_delete_kind,
        &backup_kind,
        &backup_offline_kind,
};

typedef struct Daemon {
        sd_event *event;
        Bus bus;
        sd_event_source *idle_timer;
        uint64_t last_activity_usec;
} Daemon;

static void help(void) {
        printf("%s [OPTIONS...]\n\n"
               "Owns the snapshots, checkpoints, backups and block jobs of QEMU virtual\n"
               "machines, on D-Bus as org.example.Snapshot1.\n\n"
               "  -h --help                  Show this help\n"
               "     --version               Show the version\n"
               "     --system                Serve the system bus (default): polkit checks,\n"
               "                             state in /var/lib/qsnap, runtime in /run/qsnap\n"
               "     --user                  Serve the session bus: no polkit, state in\n"
               "                             $XDG_STATE_HOME/qsnap, runtime in $XDG_RUNTIME_DIR/qsnap\n"
               "     --address=ADDRESS       Serve the bus at ADDRESS (tests, development)\n"
               "     --state-dir=DIR         Where definitions and metadata are kept\n"
               "     --runtime-dir=DIR       Where monitor sockets and pid files go\n"
               "     --polkit=yes|no         Ask polkit before privileged calls (no is\n"
               "                             refused with --system)\n"
               "     --idle-timeout=SECONDS  Exit when idle this long (default 30, 0 = never)\n"
               "     --graceful-timeout=SECONDS\n"
               "                             Stop(GRACEFUL) waits this long for the guest\n"
               "                             before QEMU is told to quit (default 60)\n"
               "     --agent-timeout=SECONDS The guest agent must answer within this (sync,\n"
               "                             fsfreeze), else QUIESCE fails and the guest is\n"
               "                             thawed (default 10; 0 = the default)\n"
               "     --qemu=PATH             QEMU binary for domains without <emulator>\n"
               "                             (default %s)\n"
               "     --qemu-user=NAME        QEMU runs as NAME (its groups, kvm for /dev/kvm),\n"
               "                             sandboxed (-sandbox); default %s with --system,\n"
               "                             qsnapd's own user otherwise; empty: qsnapd's user\n"
               "     --qemu-uid-range=BASE:COUNT\n"
               "                             Each QEMU runs as a uid of its own from this range\n"
               "                             (with --qemu-user='s groups): one QEMU cannot\n"
               "                             signal or trace another\n"
               "     --image-root=DIR        Disks, snapshot overlays and memory files may be\n"
               "                             below DIR (repeatable): manage-domains defines\n"
               "                             domains whose disks are there; others need\n"
               "                             host-admin\n"
               "     --metadata-read-cap=BYTES\n"
               "                             Refuse snapshot metadata files larger than this\n"
               "                             (default 128 MiB, as libvirt)\n"
               "     --bridge-conf=PATH      The bridges bridged interfaces may join, in QEMU's\n"
               "                             bridge helper's format (default %s)\n"
               "     --log-level=LEVEL       emerg…debug or 0…7 (default info)\n",
               program_invocation_short_name, QEMU_SYSTEM_BINARY, QEMU_USER_DEFAULT, DOMAIN_NET_BRIDGE_CONF);
}

/* --qemu-user=: empty means QEMU runs as qsnapd itself (root on the system bus). */
static int set_qemu_user(const char *name) {
        arg_qemu_user = mfree(arg_qemu_user);
        if (!isempty(name) && !(arg_qemu_user = strdup(name)))
                return -ENOMEM;
        arg_qemu_user_set = true;
        return 0;
}

static int parse_bytes(const char *s, uint64_t *ret) {
        char *end;
        uint64_t v;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || v == 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_seconds(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || end == s || *end || s[0] == '-' || v > UINT64_MAX / USEC_PER_SEC)
                return -EINVAL;
        *ret = v * USEC_PER_SEC;
        return 0;
}

/* The long options (the table outside parse_argv() keeps it short). */
enum {
        ARG_VERSION = 0x100,
        ARG_SYSTEM,
        ARG_USER,
        ARG_ADDRESS,
        ARG_STATE_DIR,
        ARG_RUNTIME_DIR,
        ARG_POLKIT,
        ARG_IDLE_TIMEOUT,
        ARG_GRACEFUL_TIMEOUT,
        ARG_AGENT_TIMEOUT,
        ARG_QEMU,
        ARG_QEMU_USER,
        ARG_QEMU_UID_RANGE,
        ARG_LOG_LEVEL,
        ARG_IMAGE_ROOT,
        ARG_METADATA_READ_CAP,
        ARG_BRIDGE_CONF,
};
static const struct option options[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, ARG_VERSION },
        { "system", no_argument, NULL, ARG_SYSTEM },
        { "user", no_argument, NULL, ARG_USER },
        { "address", required_argument, NULL, ARG_ADDRESS },
        { "state-dir", required_argument, NULL, ARG_STATE_DIR },
        { "runtime-dir", required_argument, NULL, ARG_RUNTIME_DIR },
        { "polkit", required_argument, NULL, ARG_POLKIT },
        { "idle-timeout", required_argument, NULL, ARG_IDLE_TIMEOUT },
        { "graceful-timeout", required_argument, NULL, ARG_GRACEFUL_TIMEOUT },
        { "agent-timeout", required_argument, NULL, ARG_AGENT_TIMEOUT },
        { "qemu", required_argument, NULL, ARG_QEMU },
        { "qemu-user", required_argument, NULL, ARG_QEMU_USER },
        { "qemu-uid-range", required_argument, NULL, ARG_QEMU_UID_RANGE },
        { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
        { "image-root", required_argument, NULL, ARG_IMAGE_ROOT },
        { "metadata-read-cap", required_argument, NULL, ARG_METADATA_READ_CAP },
        { "bridge-conf", required_argument, NULL, ARG_BRIDGE_CONF },
        {}
};

static int parse_argv(int argc, char *argv[]) {
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("qsnapd %s\n", PACKAGE_VERSION);
                        return 0;
                case ARG_SYSTEM:
                        arg_bus_mode = BUS_MODE_SYSTEM;
                        break;
                case ARG_USER:
                        arg_bus_mode = BUS_MODE_USER;
                        break;
                case ARG_ADDRESS:
                        arg_bus_mode = BUS_MODE_ADDRESS;
                        if (free_and_strdup(&arg_address, optarg) < 0)
                                return log_oom();
                        break;
                case ARG_STATE_DIR:
                case ARG_RUNTIME_DIR:
                        if (optarg[0] != '/')
                                return log_error_errno(EINVAL, "--%s= needs an absolute path: %s",
                                                       c == ARG_STATE_DIR ? "state-dir" : "runtime-dir", optarg);
                        if (free_and_strdup(c == ARG_STATE_DIR ? &arg_state_dir : &arg_runtime_dir, optarg) < 0)
                                return log_oom();
                        break;
                case ARG_POLKIT:
                        if (streq(optarg, "yes"))
                                arg_polkit = 1;
                        else if (streq(optarg, "no"))
                                arg_polkit = 0;
                        else
                                return log_error_errno(EINVAL, "--polkit= takes yes or no, not '%s'.", optarg);
                        break;
                case ARG_IDLE_TIMEOUT:
                case ARG_GRACEFUL_TIMEOUT:
                case ARG_AGENT_TIMEOUT: /* 0: the default (core/manager.c) */
                        r = parse_seconds(optarg, c == ARG_IDLE_TIMEOUT       ? &arg_idle_timeout_usec
                                                  : c == ARG_AGENT_TIMEOUT    ? &arg_agent_timeout_usec
                                                                              : &arg_graceful_timeout_usec);
                        if (r < 0)
                                return log_error_errno(r, "Not a number of seconds: '%s'", optarg);
                        break;
                case ARG_QEMU:
                        if (free_and_strdup(&arg_qemu, optarg) < 0)
                                return log_oom();
                        break;
                case ARG_QEMU_USER:
                        if (set_qemu_user(optarg) < 0)
                                return log_oom();
                        break;
                case ARG_QEMU_UID_RANGE: {
                        unsigned long long base, count;
                        char tail;

                        /* uid 0 and (uid_t) -1 never: nor a range past them */
                        if (sscanf(optarg, "%llu:%llu%c", &base, &count, &tail) != 2 || base == 0 || count == 0 ||
                            count > 65536 || base + count > UINT32_MAX)
                                return log_error_errno(-EINVAL, "Not a uid range BASE:COUNT: '%s'", optarg);
                        arg_qemu_uid_base = (uint32_t) base;
                        arg_qemu_uid_count = (uint32_t) count;
                        break;
                }
                case ARG_LOG_LEVEL:
                        r = log_parse_level(optarg);
                        if (r < 0)
                                return log_error_errno(r, "Unknown log level '%s'.", optarg);
                        log_set_max_level(r);
                        break;
                case ARG_IMAGE_ROOT: {
                        char resolved[PATH_MAX];

                        if (optarg[0] != '/' || !realpath(optarg, resolved))
                                return log_error_errno(EINVAL, "--image-root= needs an existing absolute folder: %s", optarg);
                        if (strv_extend(&arg_image_roots, resolved) < 0)
                                return log_oom();
                        break;
                }
                case ARG_METADATA_READ_CAP:
                        if (parse_bytes(optarg, &arg_metadata_read_cap) < 0)
                                return log_error_errno(EINVAL, "--metadata-read-cap= takes a positive number of bytes: %s", optarg);
                        break;
                case ARG_BRIDGE_CONF:
                        if (optarg[0] != '/')
                                return log_error_errno(EINVAL, "--bridge-conf= needs an absolute path: %s", optarg);
                        if (free_and_strdup(&arg_bridge_conf, optarg) < 0)
                                return log_oom();
                        break;
                case '?':
                        log_error("Try '%s --help'.", program_invocation_short_name);
                        return -EINVAL;
                default:
                        assert(false);
                }

        if (optind < argc)
                return log_error_errno(EINVAL, "%s takes no positional arguments.", program_invocation_short_name);
        return 1;
}

/* Fills in the directories the mode implies, unless given. */
static int resolve_directories(void) {
        const char *e;

        if (arg_bus_mode == BUS_MODE_USER) {
                if (!arg_state_dir) {
                        e = getenv("XDG_STATE_HOME");
                        if (e && e[0] == '/')
                                arg_state_dir = strjoin(e, "/qsnap");
                        else if ((e = getenv("HOME")) && e[0] == '/')
                                arg_state_dir = strjoin(e, "/.local/state/qsnap");
                        else
                                return log_error_errno(EINVAL, "Neither $XDG_STATE_HOME nor $HOME is set; use --state-dir=.");
                }
                if (!arg_runtime_dir) {
                        e = getenv("XDG_RUNTIME_DIR");
                        if (!e || e[0] != '/')
                                return log_error_errno(EINVAL, "$XDG_RUNTIME_DIR is not set; use --runtime-dir=.");
                        arg_runtime_dir = strjoin(e, "/qsnap");
                }
        } else {
                /* systemd's StateDirectory=/RuntimeDirectory= say where, when set. */
                if (!arg_state_dir)
                        arg_state_dir = strdup((e = getenv("STATE_DIRECTORY")) && e[0] == '/' ? e : "/var/lib/qsnap");
                if (!arg_runtime_dir)
                        arg_runtime_dir = strdup((e = getenv("RUNTIME_DIRECTORY")) && e[0] == '/' ? e : "/run/qsnap");
        }
        if (!arg_state_dir || !arg_runtime_dir)
                return log_oom();
        if (arg_polkit < 0)
                arg_polkit = arg_bus_mode != BUS_MODE_USER;
        /* On the system bus every local user may call us: without polkit
         * each of them would act as root. */
        if (arg_bus_mode == BUS_MODE_SYSTEM && !arg_polkit)
                return log_error_errno(EINVAL, "--polkit=no is refused with --system: every user on the system bus "
                                       "could then act as root. Use --user for your own VMs, or --address= for tests.");
        return 0;
}

static int open_bus(sd_bus **ret) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        int r = -EINVAL;

        switch (arg_bus_mode) {
        case BUS_MODE_SYSTEM:
                r = sd_bus_open_system(&bus);
                break;
        case BUS_MODE_USER:
                r = sd_bus_open_user(&bus);
                break;
        case BUS_MODE_ADDRESS:
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, arg_address);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, true);
                if (r >= 0)
                        r = sd_bus_start(bus);
                break;
        }
        if (r < 0)
                return log_error_errno(r, "Failed to connect to the bus (%s): %m",
                                       arg_bus_mode == BUS_MODE_SYSTEM ? "the system bus; is dbus running?"
                                       : arg_bus_mode == BUS_MODE_USER ? "the session bus: $DBUS_SESSION_BUS_ADDRESS "
                                                                         "or $XDG_RUNTIME_DIR/bus"
                                                                       : arg_address);
        *ret = TAKE_PTR(bus);
        return 0;
}

/* ---- idle exit ---- */

static int on_bus_activity(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Daemon *daemon = userdata;

        daemon->last_activity_usec = now_usec(CLOCK_MONOTONIC);
        return 0;
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Daemon *daemon = userdata;
        uint64_t now = now_usec(CLOCK_MONOTONIC), due = daemon->last_activity_usec + arg_idle_timeout_usec;
        int r;

        if (bus_is_busy(&daemon->bus) || now < due) {
                if (bus_is_busy(&daemon->bus))
                        daemon->last_activity_usec = now;
                r = sd_event_source_set_time(s, bus_is_busy(&daemon->bus) ? now + arg_idle_timeout_usec : due);
                return r < 0 ? r : sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        }
        log_info("Idle for %llus, exiting; running VMs keep running.",
                 (unsigned long long) (arg_idle_timeout_usec / USEC_PER_SEC));
        (void) sd_bus_release_name(daemon->bus.bus, QSNAP_BUS_NAME);
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static int on_exit_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        log_info("Received %s, exiting; running VMs keep running.", strsignal((int) si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Shutting down.");
        return sd_event_exit(sd_event_source_get_event(s), 0);
}

static void daemon_done(Daemon *daemon) {
        sd_event_source_disable_unref(daemon->idle_timer);
        while (daemon->bus.job_waiters) {
                JobWaiter *w = daemon->bus.job_waiters;
                daemon->bus.job_waiters = w->next;
                sd_bus_message_unref(w->message);
                free(w);
        }
        polkit_registry_done(&daemon->bus.polkit);
        measure_registry_done(&daemon->bus.measure);
        manager_free(daemon->bus.manager);
        sd_bus_flush_close_unref(daemon->bus.bus);
        sd_event_unref(daemon->event);
}

static int run(void) {
        _cleanup_(daemon_done) Daemon daemon = {};
        ManagerConfig config;
        int r;

        r = resolve_directories();
        if (r < 0)
                return r;
        umask(0077);
        (void) signal(SIGPIPE, SIG_IGN);
        sd_bus_error_add_map(qsnap_error_map);

        r = sd_event_default(&daemon.event);
        if (r < 0)
                return log_error_errno(r, "Failed to allocate the event loop: %m");
        r = sd_event_add_signal(daemon.event, NULL, SIGTERM | SD_EVENT_SIGNAL_PROCMASK, on_exit_signal, NULL);
        if (r >= 0)
                r = sd_event_add_signal(daemon.event, NULL, SIGINT | SD_EVENT_SIGNAL_PROCMASK, on_exit_signal, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to handle signals: %m");
        (void) sd_event_set_watchdog(daemon.event, true);

        config = (ManagerConfig) {
                .state_dir = arg_state_dir,
                .runtime_dir = arg_runtime_dir,
                .qemu_binary = arg_qemu ?: (char *) QEMU_SYSTEM_BINARY,
                /* The system bus: QEMU as its own user unless told otherwise.
                 * --user: as the user; --address= (tests): as asked. */
                .qemu_user = arg_qemu_user_set ? arg_qemu_user
                                               : arg_bus_mode == BUS_MODE_SYSTEM ? (char *) QEMU_USER_DEFAULT : NULL,
                .qemu_uid_base = arg_qemu_uid_base,
                .qemu_uid_count = arg_qemu_uid_count,
                .graceful_timeout_usec = arg_graceful_timeout_usec,
                .start_timeout_usec = arg_start_timeout_usec,
                .agent_timeout_usec = arg_agent_timeout_usec,
                .image_roots = arg_image_roots,
                .metadata_read_cap = arg_metadata_read_cap,
                /* Taps need root (CAP_NET_ADMIN); --user keeps QEMU's
                 * setuid bridge helper (docs/decisions.md). */
                .net_taps = arg_bus_mode != BUS_MODE_USER && geteuid() == 0,
                .bridge_conf = arg_bridge_conf,
        };
        r = mkdir_p(arg_state_dir, 0700);
        if (r >= 0)
                r = mkdir_p(arg_runtime_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s or %s: %m", arg_state_dir, arg_runtime_dir);

        r = manager_new(daemon.event, &config, &daemon.bus.manager);
        if (r < 0)
                return log_error_errno(r, "Failed to set up: %m");
        for (size_t i = 0; i < ELEMENTSOF(operation_kinds); i++) {
                r = operation_kind_register(daemon.bus.manager, operation_kinds[i]);
                if (r < 0)
                        return log_error_errno(r, "Failed to register operation %s: %m", operation_kinds[i]->name);
        }
        daemon.bus.polkit.enabled = arg_polkit;

        (void) sd_notify(false, "STATUS=Loading state and re-attaching to running VMs.");
        r = open_bus(&daemon.bus.bus);
        if (r < 0)
                return r;
        daemon.bus.use_scopes = arg_bus_mode != BUS_MODE_ADDRESS && sd_booted() > 0;
        r = bus_manager_register(&daemon.bus);
        if (r < 0)
                return r;
        /* Everything is known before the name is: the first answer is right. */
        r = manager_load(daemon.bus.manager);
        if (r < 0)
                return r;

        r = sd_bus_attach_event(daemon.bus.bus, daemon.event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Failed to attach the bus to the event loop: %m");
        r = sd_bus_add_filter(daemon.bus.bus, NULL, on_bus_activity, &daemon);
        if (r < 0)
                return log_error_errno(r, "Failed to add the bus filter: %m");
        r = sd_bus_request_name(daemon.bus.bus, QSNAP_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Failed to acquire the name %s: %m", QSNAP_BUS_NAME);

        if (arg_idle_timeout_usec > 0) {
                daemon.last_activity_usec = now_usec(CLOCK_MONOTONIC);
                r = sd_event_add_time_relative(daemon.event, &daemon.idle_timer, CLOCK_MONOTONIC, arg_idle_timeout_usec,
                                               USEC_PER_SEC, on_idle_timer, &daemon);
                if (r < 0)
                        return log_error_errno(r, "Failed to arm the idle timer: %m");
                (void) sd_event_source_set_enabled(daemon.idle_timer, SD_EVENT_ON);
        }

        log_info("qsnapd %s serving %s on %s (polkit %s).", PACKAGE_VERSION, QSNAP_BUS_NAME,
                 arg_bus_mode == BUS_MODE_SYSTEM ? "the system bus" :
                 arg_bus_mode == BUS_MODE_USER ? "the session bus" : arg_address,
                 arg_polkit ? "on" : "off");
        (void) sd_notify(false, "READY=1\nSTATUS=Serving.");

        r = sd_event_loop(daemon.event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");
        return 0;
}

int main(int argc, char *argv[]) {
        int r;

        r = parse_argv(argc, argv);
        if (r > 0)
                r = run();
        free(arg_address);
        free(arg_state_dir);
        free(arg_runtime_dir);
        free(arg_qemu);
        free(arg_bridge_conf);
        strv_free(arg_image_roots);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
