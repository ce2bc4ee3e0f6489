/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Domain verbs: list, define, undefine, start, stop (destroy, shutdown),
 * suspend, resume, domstate, dominfo, dumpxml, domblklist,
 * qemu-monitor-command, console, version.
 */
#include <fcntl.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"

static json_object *domain_json(const Props *p) {
        json_object *o = json_object_new_object();
        json_object *snaps = props_json(p, "Snapshots"), *jobs = props_json(p, "Jobs");
        const char *cur = props_str(p, "CurrentSnapshot");
        _cleanup_free_ char *cur_name = cur && !streq(cur, "/") ? path_last_name(cur) : NULL;

        json_object_object_add(o, "name", json_str(props_str(p, "Name")));
        json_object_object_add(o, "uuid", json_str(props_str(p, "UUID")));
        json_object_object_add(o, "state", json_str(props_str(p, "State")));
        json_object_object_add(o, "managed", json_object_new_boolean(props_bool(p, "Managed")));
        json_object_object_add(o, "current_snapshot", json_str(cur_name));
        json_object_object_add(o, "snapshot_count", json_object_new_int64(snaps ? (int64_t) json_object_array_length(snaps) : 0));
        json_object_object_add(o, "job_count", json_object_new_int64(jobs ? (int64_t) json_object_array_length(jobs) : 0));
        return o;
}

int verb_list(Ctx *c) {
        Props **a = NULL;
        size_t n = 0;
        bool all = flag(c, "all"), inactive = flag(c, "inactive");
        _cleanup_(table_freep) Table *t = NULL;
        json_object *arr = NULL;
        int r;

        if (all && inactive) {
                usage_error("list: --all and --inactive exclude each other");
                return EXIT_USAGE;
        }
        if (!flags_exclusive(c, "name", "uuid"))
                return EXIT_USAGE;
        r = managed_objects(c, QSNAP_DOMAIN_IFACE, NULL, &a, &n);
        if (r < 0)
                return EXIT_FAILED;
        if (c->json)
                arr = json_object_new_array();
        else if (!flag(c, "name") && !flag(c, "uuid"))
                t = table_new("Name", "State", "Snapshots", "Current", "Jobs", NULL);
        for (size_t i = 0; i < n; i++) {
                const char *state = strempty(props_str(a[i], "State"));
                bool active = streq(state, "running") || streq(state, "paused");

                if (!all && (inactive ? active : !active))
                        continue;
                if (arr)
                        json_object_array_add(arr, domain_json(a[i]));
                else if (t) {
                        json_object *o = domain_json(a[i]), *v;
                        char snaps[32], jobs[32];
                        const char *cur = NULL;

                        snprintf(snaps, sizeof(snaps), "%" PRId64,
                                 json_object_get_int64(json_object_object_get(o, "snapshot_count")));
                        snprintf(jobs, sizeof(jobs), "%" PRId64, json_object_get_int64(json_object_object_get(o, "job_count")));
                        if (json_object_object_get_ex(o, "current_snapshot", &v) && v)
                                cur = json_object_get_string(v);
                        table_add(t, props_str(a[i], "Name"), state, snaps, cur ?: "-", jobs);
                        json_object_put(o);
                } else
                        printf("%s\n", strempty(props_str(a[i], flag(c, "uuid") ? "UUID" : "Name")));
        }
        if (arr) {
                json_print(arr);
                json_object_put(arr);
        } else if (t)
                table_print(t, stdout);
        props_array_free(a, n);
        return EXIT_OK;
}

int verb_define(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *xml = NULL, *name = NULL;
        const char *file = opt(c, "file"), *path;
        int r;

        r = read_input(file, &xml);
        if (r < 0) {
                fail("Failed to read %s: %s", streq(file, "-") ? "standard input" : file, strerror(-r));
                return EXIT_FAILED;
        }
        if (call(c, &reply, QSNAP_ROOT_PATH, QSNAP_MANAGER_IFACE, "DefineDomain", "st", xml, (uint64_t) 0) < 0)
                return EXIT_FAILED;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0 || get_property_string(c, path, QSNAP_DOMAIN_IFACE, "Name", &name) < 0)
                return EXIT_FAILED;
        printf("Domain '%s' defined from %s\n", name, streq(file, "-") ? "standard input" : file);
        return EXIT_OK;
}

/* Calls a domain method with a flags argument (or none): the common shape. */
static int domain_call(Ctx *c, const char *member, bool with_flags, uint64_t flags, const char *done) {
        _cleanup_free_ char *path = NULL;
        const char *name = opt(c, "domain");

        if (domain_path(c, name, &path) < 0)
                return EXIT_FAILED;
        if ((with_flags ? call(c, NULL, path, QSNAP_DOMAIN_IFACE, member, "t", flags)
                        : call(c, NULL, path, QSNAP_DOMAIN_IFACE, member, NULL)) < 0)
                return EXIT_FAILED;
        printf("Domain '%s' %s\n", name, done);
        return EXIT_OK;
}

int verb_undefine(Ctx *c) {
        uint64_t flags = (flag(c, "snapshots-metadata") ? 1 : 0) | (flag(c, "checkpoints-metadata") ? 2 : 0);

        return domain_call(c, "Undefine", true, flags, "has been undefined");
}

int verb_start(Ctx *c) {
        return domain_call(c, "Start", true, flag(c, "paused") ? 1 : 0, flag(c, "paused") ? "started paused" : "started");
}

int verb_stop(Ctx *c) {
        bool graceful = streq(c->verb->name, "shutdown") || (streq(c->verb->name, "stop") && flag(c, "graceful"));

        return domain_call(c, "Stop", true, graceful ? 1 : 0, graceful ? "is shut down" : "stopped");
}

int verb_suspend(Ctx *c) {
        return domain_call(c, "Pause", false, 0, "suspended");
}

int verb_resume(Ctx *c) {
        return domain_call(c, "Resume", false, 0, "resumed");
}

int verb_domstate(Ctx *c) {
        _cleanup_free_ char *path = NULL, *state = NULL;

        if (domain_path(c, opt(c, "domain"), &path) < 0 ||
            get_property_string(c, path, QSNAP_DOMAIN_IFACE, "State", &state) < 0)
                return EXIT_FAILED;
        if (c->json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "name", json_str(opt(c, "domain")));
                json_object_object_add(o, "state", json_str(state));
                json_print(o);
                json_object_put(o);
        } else
                printf("%s\n", state);
        return EXIT_OK;
}

int verb_dominfo(Ctx *c) {
        _cleanup_free_ char *path = NULL;
        _cleanup_(props_freep) Props *p = NULL;
        json_object *o, *disks, *v;

        if (domain_path(c, opt(c, "domain"), &path) < 0 || props_get_all(c, path, QSNAP_DOMAIN_IFACE, &p) < 0)
                return EXIT_FAILED;
        o = domain_json(p);
        disks = props_json(p, "Disks");
        json_object_object_add(o, "disk_count", json_object_new_int64(disks ? (int64_t) json_object_array_length(disks) : 0));
        if (c->json)
                json_print(o);
        else {
                json_object_object_get_ex(o, "current_snapshot", &v);
                printf("%-16s%s\n", "Name:", strempty(props_str(p, "Name")));
                printf("%-16s%s\n", "UUID:", strempty(props_str(p, "UUID")));
                printf("%-16s%s\n", "State:", strempty(props_str(p, "State")));
                printf("%-16s%s\n", "Managed:", props_bool(p, "Managed") ? "yes" : "no (attached to a QEMU started elsewhere)");
                printf("%-16s%s\n", "Disks:", json_object_get_string(json_object_object_get(o, "disk_count")));
                printf("%-16s%s\n", "Snapshots:", json_object_get_string(json_object_object_get(o, "snapshot_count")));
                printf("%-16s%s\n", "Current:", v ? json_object_get_string(v) : "-");
                printf("%-16s%s\n", "Jobs:", json_object_get_string(json_object_object_get(o, "job_count")));
        }
        json_object_put(o);
        return EXIT_OK;
}

int verb_dumpxml(Ctx *c) {
        _cleanup_free_ char *path = NULL;
        uint64_t flags = (flag(c, "security-info") ? 1 : 0) | (flag(c, "inactive") ? 2 : 0);

        if (domain_path(c, opt(c, "domain"), &path) < 0)
                return EXIT_FAILED;
        return print_object_xml(c, path, QSNAP_DOMAIN_IFACE, flags);
}

/* "base <- mid <- active" → ["base", "mid", "active"] */
static json_object *chain_json(const char *chain) {
        json_object *a = json_object_new_array();
        const char *p = chain;

        while (p && *p) {
                const char *sep = strstr(p, " <- ");
                size_t len = sep ? (size_t) (sep - p) : strlen(p);
                json_object_array_add(a, json_object_new_string_len(p, (int) len));
                p = sep ? sep + 4 : NULL;
        }
        return a;
}

int verb_domblklist(Ctx *c) {
        _cleanup_free_ char *path = NULL;
        _cleanup_(props_freep) Props *p = NULL;
        _cleanup_(table_freep) Table *t = NULL;
        json_object *disks, *arr = NULL;

        if (domain_path(c, opt(c, "domain"), &path) < 0 || props_get_all(c, path, QSNAP_DOMAIN_IFACE, &p) < 0)
                return EXIT_FAILED;
        disks = props_json(p, "Disks");
        if (c->json)
                arr = json_object_new_array();
        else
                t = table_new("Target", "Format", "Source", "Backing chain (base first)", NULL);
        for (size_t i = 0; disks && i < json_object_array_length(disks); i++) {
                json_object *d = json_object_array_get_idx(disks, i);
                const char *target = json_object_get_string(json_object_array_get_idx(d, 0));
                const char *format = json_object_get_string(json_object_array_get_idx(d, 1));
                const char *source = json_object_get_string(json_object_array_get_idx(d, 2));
                const char *chain = json_object_get_string(json_object_array_get_idx(d, 3));

                if (arr) {
                        json_object *o = json_object_new_object();
                        json_object_object_add(o, "target", json_str(target));
                        json_object_object_add(o, "format", json_str(format));
                        json_object_object_add(o, "source", json_str(source));
                        json_object_object_add(o, "chain", chain_json(chain));
                        json_object_array_add(arr, o);
                } else
                        table_add(t, target, format, source, chain);
        }
        if (arr) {
                json_print(arr);
                json_object_put(arr);
        } else
                table_print(t, stdout);
        return EXIT_OK;
}

int verb_qemu_monitor_command(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL, *cmd = NULL;
        bool hmp = flag(c, "hmp");
        const char *out;

        cmd = strv_join(opt_all(c, "cmd"), " ");
        if (!cmd)
                return EXIT_FAILED;
        if (hmp && flag(c, "pretty")) {
                usage_error("qemu-monitor-command: --pretty is for QMP replies, not with --hmp");
                return EXIT_USAGE;
        }
        if (domain_path(c, opt(c, "domain"), &path) < 0 ||
            call(c, &reply, path, QSNAP_DOMAIN_IFACE, "QemuMonitorCommand", "st", cmd, (uint64_t) (hmp ? 1 : 0)) < 0 ||
            sd_bus_message_read(reply, "s", &out) < 0)
                return EXIT_FAILED;
        if (flag(c, "pretty")) {
                json_object *o = json_tokener_parse(out);
                if (o) {
                        json_print(o);
                        json_object_put(o);
                        return EXIT_OK;
                }
        }
        fputs(out, stdout);
        if (out[0] && out[strlen(out) - 1] != '\n')
                fputc('\n', stdout);
        return EXIT_OK;
}

int verb_version(Ctx *c) {
        _cleanup_free_ char *v = NULL;

        if (get_property_string(c, QSNAP_ROOT_PATH, QSNAP_MANAGER_IFACE, "Version", &v) < 0)
                return EXIT_FAILED;
        if (c->json)
                json_print_fields("qsnapctl", json_str(PACKAGE_VERSION), "qsnapd", json_str(v), NULL);
        else
                printf("qsnapctl %s\nqsnapd %s\n", PACKAGE_VERSION, v);
        return EXIT_OK;
}

#define CONSOLE_ESCAPE 0x1d /* ^], as virsh console */

/* Copies what poll found readable from `from` to `to`; 0 at EOF or ^]. */
static ssize_t console_pump(int from, int to, bool from_user) {
        char buf[4096];
        ssize_t n = read(from, buf, sizeof(buf));
        char *esc;

        if (n < 0 && (errno == EINTR || errno == EAGAIN))
                return 1;
        if (n <= 0)
                return n;
        esc = from_user ? memchr(buf, CONSOLE_ESCAPE, (size_t) n) : NULL;
        if (esc)
                n = esc - buf;
        for (ssize_t off = 0; off < n;) {
                ssize_t w = write(to, buf + off, (size_t) (n - off));

                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return -errno;
                off += w;
        }
        return esc ? 0 : 1;
}

int verb_console(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *path = NULL;
        const char *name = opt(c, "domain");
        struct termios saved, raw;
        bool tty = isatty(STDIN_FILENO);
        int fd, r;

        if (domain_path(c, name, &path) < 0 ||
            call(c, &reply, path, QSNAP_DOMAIN_IFACE, "OpenConsole", "st", strempty(opt(c, "devname")), (uint64_t) 0) < 0)
                return EXIT_FAILED;
        r = sd_bus_message_read(reply, "h", &fd);
        /* The message owns its descriptor: a copy of our own. */
        if (r < 0 || (fd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
                fail("Failed to take the console's descriptor: %s", strerror(r < 0 ? -r : errno));
                return EXIT_FAILED;
        }
        fprintf(stderr, "Connected to domain '%s'\nEscape character is ^] (Ctrl + ])\n", name);
        if (tty && tcgetattr(STDIN_FILENO, &saved) >= 0) {
                raw = saved;
                cfmakeraw(&raw);
                (void) tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        } else
                tty = false;
        for (r = 1; r > 0;) {
                struct pollfd p[2] = { { .fd = STDIN_FILENO, .events = POLLIN }, { .fd = fd, .events = POLLIN } };

                if (poll(p, 2, -1) < 0) {
                        r = errno == EINTR ? 1 : -errno;
                        continue;
                }
                if (p[1].revents)
                        r = console_pump(fd, STDOUT_FILENO, false);
                if (r > 0 && p[0].revents)
                        r = console_pump(STDIN_FILENO, fd, true);
        }
        if (tty)
                (void) tcsetattr(STDIN_FILENO, TCSANOW, &saved);
        close(fd);
        fprintf(stderr, "%s", tty ? "\r\n" : "");
        if (r < 0) {
                fail("The console of domain '%s' failed: %s", name, strerror(-r));
                return EXIT_FAILED;
        }
        return EXIT_OK;
}
