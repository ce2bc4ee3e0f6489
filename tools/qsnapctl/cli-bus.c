/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qsnapctl's side of the bus: the connection (--system, --user, -H over
 * SSH, -M into a container, --address), the terminal polkit agent as
 * systemctl starts it, method calls whose failures are printed with the
 * error's meaning, and properties turned into JSON values (one reader for
 * GetAll, GetManagedObjects and PropertiesChanged).
 */
#include <ctype.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "cli.h"

/* ---- errors ---- */

static const struct {
        const char *name;
        const char *meaning;
} error_meanings[] = {
        { "NoSuchDomain", "no domain has that name" },
        { "NoSuchSnapshot", "the domain has no snapshot of that name" },
        { "NoSuchCheckpoint", "the domain has no checkpoint of that name" },
        { "NoSuchDisk", "the domain has no such disk" },
        { "NoSuchJob", "there is no such block job" },
        { "InvalidXML", "the XML document is not valid" },
        { "InvalidArgument", "an argument or flag is not valid" },
        { "AlreadyExists", "something of that name or UUID exists already" },
        { "Busy", "a job or another operation holds the domain or disk; try again when it is done" },
        { "OperationInvalid", "not possible in the domain's or job's current state" },
        { "HasSnapshots", "the domain still has snapshot or checkpoint metadata" },
        { "PathNotAllowed", "a file is outside the allowed folders, a symbolic link, or not a regular file" },
        { "NoSpace", "not enough free space on the file system" },
        { "NotRunning", "the domain is not running" },
        { "QemuFailed", "QEMU refused or failed; its own words follow" },
        { "Unsupported", "qsnapd cannot do this" },
        { "AgentUnresponsive", "the guest agent did not answer in time; try again, or without --quiesce" },
        { "AccessDenied", "polkit did not authorize the call" },
        { "InteractiveAuthorizationRequired",
          "authentication is needed: run on a terminal without --no-ask-password, or get a polkit rule" },
        { "LimitsExceeded", "too many authorization checks are pending; try again" },
        { "UnknownObject", "the object is gone (undefined or deleted meanwhile)" },
        { "UnknownMethod", "this qsnapd does not know the call (an older version?)" },
        { "ServiceUnknown", "qsnapd is not installed or cannot be started on that bus" },
        { "NameHasNoOwner", "qsnapd is not running on that bus" },
        { "NoReply", "qsnapd did not answer in time" },
        { "Timeout", "qsnapd did not answer in time" },
        { "Disconnected", "the connection to the bus was lost" },
        { "NoMemory", "out of memory" },
        { "Failed", "a system call failed" },
};

const char *error_meaning(const char *short_name) {
        for (size_t i = 0; i < ELEMENTSOF(error_meanings); i++)
                if (streq(error_meanings[i].name, short_name))
                        return error_meanings[i].meaning;
        return NULL;
}

/* qsnapd's messages name the bus API's flags (it serves busctl and GUIs
 * too): say which qsnapctl option each one named is. */
static const struct {
        const char *flag;
        const char *option;
} flag_options[] = {
        { "FORCE", "--force" },
        { "RUNNING", "--running" },
        { "PAUSED", "--paused" },
        { "GRACEFUL", "--graceful" },
        { "SNAPSHOTS_METADATA", "--snapshots-metadata" },
        { "CHECKPOINTS_METADATA", "--checkpoints-metadata" },
        { "DISK_ONLY", "--disk-only" },
        { "NO_METADATA", "--no-metadata" },
        { "HALT", "--halt" },
        { "REDEFINE", "--redefine" },
        { "REDEFINE_VALIDATE", "--redefine-validate" },
        { "VALIDATE", "--validate" },
        { "CURRENT", "--current" },
        { "QUIESCE", "--quiesce" },
        { "REUSE_EXT", "--reuse-external" },
        { "REUSE_EXTERNAL", "--reuse-external" },
        { "CHILDREN", "--children" },
        { "CHILDREN_ONLY", "--children-only" },
        { "METADATA_ONLY", "--metadata" },
        { "ACTIVE", "--active" },
        { "SHALLOW", "--shallow" },
        { "RELATIVE", "--keep-relative" },
        { "COPY", "--copy" },
        { "COPY_RAW", "--copy-raw" },
        { "TRANSIENT_JOB", "--transient-job" },
        { "PIVOT", "--pivot" },
};

static bool names_flag(const char *message, const char *flag) {
        size_t n = strlen(flag);

        for (const char *p = strstr(message, flag); p; p = strstr(p + 1, flag)) {
                bool before = p > message && (isupper((unsigned char) p[-1]) || p[-1] == '_');
                bool after = isupper((unsigned char) p[n]) || p[n] == '_';

                if (!before && !after)
                        return true;
        }
        return false;
}

static char **hint_argv = NULL;

void error_hints_set_command_line(char **argv) {
        hint_argv = argv;
}

/* An option the command line has already: its hint would say nothing. */
static bool given(const char *option) {
        for (char **a = hint_argv; a && *a; a++)
                if (streq(*a, option))
                        return true;
        return false;
}

static void print_flag_hint(const char *message) {
        bool any = false;

        for (size_t i = 0; i < ELEMENTSOF(flag_options); i++) {
                if (!names_flag(message, flag_options[i].flag) || given(flag_options[i].option))
                        continue;
                fprintf(stderr, "%s%s is %s", any ? ", " : "hint: in qsnapctl, ", flag_options[i].flag,
                        flag_options[i].option);
                any = true;
        }
        if (any)
                fputs(".\n", stderr);
}

int print_bus_error(const sd_bus_error *e, int r) {
        const char *name = e && e->name ? e->name : NULL, *s, *meaning;
        const char *message = e && e->message && e->message[0] ? e->message : NULL;

        if (!name) {
                fail("%s", strerror(abs(r)));
                return EXIT_FAILED;
        }
        s = strrchr(name, '.');
        s = s ? s + 1 : name;
        meaning = error_meaning(s);
        if (!meaning && strncmp(name, "System.Error.", 13) == 0)
                meaning = "the connection to the bus failed, or a system call did";
        if (meaning && message)
                fprintf(stderr, "error: %s (%s): %s\n", s, meaning, message);
        else if (meaning)
                fprintf(stderr, "error: %s: %s\n", s, meaning);
        else
                fprintf(stderr, "error: %s: %s\n", s, message ?: strerror(abs(r)));
        if (message)
                print_flag_hint(message);
        return EXIT_FAILED;
}

/* ---- the polkit agent on the terminal (as systemctl starts pkttyagent) ---- */

static pid_t agent_pid = 0;

static void polkit_agent_close(void) {
        if (agent_pid <= 0)
                return;
        (void) kill(agent_pid, SIGTERM);
        (void) waitpid(agent_pid, NULL, 0);
        agent_pid = 0;
}

static void polkit_agent_open(void) {
        int fds[2];
        pid_t pid;

        if (agent_pid > 0 || !isatty(STDIN_FILENO) || access("/usr/bin/pkttyagent", X_OK) < 0)
                return;
        if (pipe2(fds, O_CLOEXEC) < 0)
                return;
        pid = fork();
        if (pid < 0) {
                safe_close(fds[0]);
                safe_close(fds[1]);
                return;
        }
        if (pid == 0) {
                char notify[16];

                (void) prctl(PR_SET_PDEATHSIG, SIGTERM);
                if (getppid() == 1)
                        _exit(EXIT_FAILURE);
                safe_close(fds[0]);
                (void) fcntl(fds[1], F_SETFD, 0);
                snprintf(notify, sizeof(notify), "%d", fds[1]);
                execl("/usr/bin/pkttyagent", "pkttyagent", "--notify-fd", notify, "--fallback", (char *) NULL);
                _exit(127);
        }
        safe_close(fds[1]);
        agent_pid = pid;
        atexit(polkit_agent_close);
        /* The agent writes to (or closes) the fd once it is registered. */
        {
                struct pollfd p = { .fd = fds[0], .events = POLLIN };
                char b;
                if (poll(&p, 1, 10000) > 0)
                        (void) read(fds[0], &b, 1);
        }
        safe_close(fds[0]);
}

/* ---- connection ---- */

/* What to look at when the bus cannot be reached. */
static const char *connect_hint(Transport t) {
        switch (t) {
        case TRANSPORT_SYSTEM:
                return "is the D-Bus system bus running (systemctl status dbus)? For your own qsnapd use --user, "
                       "for one on a private bus --address=.";
        case TRANSPORT_USER:
                return "no session bus here ($DBUS_SESSION_BUS_ADDRESS, or $XDG_RUNTIME_DIR/bus): run qsnapctl "
                       "--user inside your login session, or give --address=.";
        case TRANSPORT_REMOTE:
                return "ssh to the host, and systemd-stdio-bridge on it, must work (ssh HOST systemd-stdio-bridge).";
        case TRANSPORT_MACHINE:
                return "is the container running and registered (machinectl list)?";
        case TRANSPORT_ADDRESS:
                break;
        }
        return "is a bus listening at that address (dbus-daemon --address=...)?";
}

int ctx_connect(Ctx *c) {
        const char *what = "the system bus";
        int r;

        switch (c->transport) {
        case TRANSPORT_SYSTEM:
                r = sd_bus_open_system(&c->bus);
                break;
        case TRANSPORT_USER:
                what = "the user's session bus";
                r = sd_bus_open_user(&c->bus);
                break;
        case TRANSPORT_REMOTE:
                what = "the remote host's system bus";
                r = sd_bus_open_system_remote(&c->bus, c->host);
                break;
        case TRANSPORT_MACHINE:
                what = "the container's system bus";
                r = sd_bus_open_system_machine(&c->bus, c->host);
                break;
        case TRANSPORT_ADDRESS:
                what = c->host;
                r = sd_bus_new(&c->bus);
                if (r >= 0)
                        r = sd_bus_set_address(c->bus, c->host);
                if (r >= 0)
                        r = sd_bus_set_bus_client(c->bus, true);
                if (r >= 0)
                        r = sd_bus_start(c->bus);
                break;
        default:
                r = -EINVAL;
        }
        if (r < 0) {
                fail("Failed to connect to %s: %s", what, strerror(-r));
                fprintf(stderr, "hint: %s\n", connect_hint(c->transport));
                return r;
        }
        (void) sd_bus_set_allow_interactive_authorization(c->bus, c->ask_password);
        /* Snapshots with memory, reverts and graceful stops take minutes. */
        (void) sd_bus_set_method_call_timeout(c->bus, 3600 * USEC_PER_SEC);
        if (c->verb && (c->verb->flags & VERB_AUTH) && c->ask_password && c->transport == TRANSPORT_SYSTEM)
                polkit_agent_open();
        return 0;
}

int call(Ctx *c, sd_bus_message **ret_reply, const char *path, const char *iface, const char *member,
         const char *types, ...) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        va_list ap;
        int r;

        va_start(ap, types);
        r = sd_bus_call_methodv(c->bus, QSNAP_BUS_NAME, path, iface, member, &error, &reply, types, ap);
        va_end(ap);
        if (r < 0) {
                print_bus_error(&error, r);
                sd_bus_error_free(&error);
                return r;
        }
        if (ret_reply)
                *ret_reply = reply;
        else
                sd_bus_message_unref(reply);
        return 0;
}

int get_property_string(Ctx *c, const char *path, const char *iface, const char *name, char **ret) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *s;
        char t;
        int r;

        r = sd_bus_call_method(c->bus, QSNAP_BUS_NAME, path, "org.freedesktop.DBus.Properties", "Get", &error,
                               &reply, "ss", iface, name);
        if (r < 0) {
                print_bus_error(&error, r);
                sd_bus_error_free(&error);
                return r;
        }
        r = sd_bus_message_peek_type(reply, &t, &s);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'v', s);
        if (r < 0)
                return r;
        r = sd_bus_message_read_basic(reply, s[0], &s);
        if (r < 0)
                return r;
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

int get_property_strv(Ctx *c, const char *path, const char *iface, const char *name, char ***ret) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *s;
        char t;
        int r;

        r = sd_bus_call_method(c->bus, QSNAP_BUS_NAME, path, "org.freedesktop.DBus.Properties", "Get", &error,
                               &reply, "ss", iface, name);
        if (r < 0) {
                print_bus_error(&error, r);
                sd_bus_error_free(&error);
                return r;
        }
        r = sd_bus_message_peek_type(reply, &t, &s);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'v', s);
        if (r < 0)
                return r;
        return sd_bus_message_read_strv(reply, ret);
}

/* A method that takes a name and answers an object path. */
static int lookup_path(Ctx *c, const char *path, const char *iface, const char *member, const char *name,
                       char **ret_path) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *p;
        int r;

        r = call(c, &reply, path, iface, member, "s", name);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &p);
        if (r < 0)
                return r;
        *ret_path = strdup(p);
        return *ret_path ? 0 : -ENOMEM;
}

int domain_path(Ctx *c, const char *name, char **ret_path) {
        return lookup_path(c, QSNAP_ROOT_PATH, QSNAP_MANAGER_IFACE, "GetDomain", name, ret_path);
}

int snapshot_path(Ctx *c, const char *dom_path, const char *name, char **ret_path) {
        return lookup_path(c, dom_path, QSNAP_DOMAIN_IFACE, "LookupSnapshot", name, ret_path);
}

int checkpoint_path(Ctx *c, const char *dom_path, const char *name, char **ret_path) {
        return lookup_path(c, dom_path, QSNAP_DOMAIN_IFACE, "LookupCheckpoint", name, ret_path);
}

int print_object_xml(Ctx *c, const char *path, const char *iface, uint64_t flags) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *xml;

        if (call(c, &reply, path, iface, "GetXMLDesc", "t", flags) < 0 || sd_bus_message_read(reply, "s", &xml) < 0)
                return EXIT_FAILED;
        print_xml_text(xml);
        return EXIT_OK;
}

char *path_name_or_null(const char *path) {
        return path && !streq(path, "/") ? path_last_name(path) : NULL;
}

char *path_last_name(const char *path) {
        const char *slash = path ? strrchr(path, '/') : NULL;
        _cleanup_free_ char *prefix = NULL;
        char *name = NULL;

        if (!slash || streq(path, "/"))
                return NULL;
        prefix = strndup(path, (size_t) (slash - path));
        if (!prefix)
                return NULL;
        if (sd_bus_path_decode(path, prefix, &name) <= 0)
                return strdup(slash + 1);
        return name;
}

/* ---- properties as JSON ---- */

static int read_value(sd_bus_message *m, json_object **ret);

static int read_container_items(sd_bus_message *m, json_object *array) {
        int r;

        for (;;) {
                json_object *v = NULL;

                r = sd_bus_message_at_end(m, false);
                if (r < 0)
                        return r;
                if (r > 0)
                        return 0;
                r = read_value(m, &v);
                if (r < 0)
                        return r;
                json_object_array_add(array, v);
        }
}

static int read_value(sd_bus_message *m, json_object **ret) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r <= 0)
                return r < 0 ? r : -EBADMSG;
        switch (type) {
        case 'v': {
                r = sd_bus_message_enter_container(m, 'v', contents);
                if (r < 0)
                        return r;
                r = read_value(m, ret);
                if (r < 0)
                        return r;
                return sd_bus_message_exit_container(m);
        }
        case 'a':
        case 'r': {
                json_object *a = json_object_new_array();
                if (!a)
                        return -ENOMEM;
                r = sd_bus_message_enter_container(m, type, contents);
                if (r >= 0)
                        r = read_container_items(m, a);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0) {
                        json_object_put(a);
                        return r;
                }
                *ret = a;
                return 0;
        }
        case 'e': {
                /* a dict entry: [key, value] */
                json_object *a = json_object_new_array();
                if (!a)
                        return -ENOMEM;
                r = sd_bus_message_enter_container(m, 'e', contents);
                if (r >= 0)
                        r = read_container_items(m, a);
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
                if (r < 0) {
                        json_object_put(a);
                        return r;
                }
                *ret = a;
                return 0;
        }
        case 's':
        case 'o':
        case 'g': {
                const char *s;
                r = sd_bus_message_read_basic(m, type, &s);
                if (r < 0)
                        return r;
                *ret = json_object_new_string(s);
                return 0;
        }
        case 'b': {
                int b;
                r = sd_bus_message_read_basic(m, type, &b);
                if (r < 0)
                        return r;
                *ret = json_object_new_boolean(b);
                return 0;
        }
        case 't': {
                uint64_t u;
                r = sd_bus_message_read_basic(m, type, &u);
                if (r < 0)
                        return r;
                *ret = json_object_new_uint64(u);
                return 0;
        }
        case 'x': {
                int64_t i;
                r = sd_bus_message_read_basic(m, type, &i);
                if (r < 0)
                        return r;
                *ret = json_object_new_int64(i);
                return 0;
        }
        case 'u':
        case 'i':
        case 'q':
        case 'n':
        case 'y':
        case 'h': {
                union {
                        uint32_t u;
                        int32_t i;
                        uint16_t q;
                        int16_t n;
                        uint8_t y;
                } v = { 0 };
                r = sd_bus_message_read_basic(m, type, &v);
                if (r < 0)
                        return r;
                *ret = type == 'u'   ? json_object_new_uint64(v.u)
                       : type == 'q' ? json_object_new_int64(v.q)
                       : type == 'n' ? json_object_new_int64(v.n)
                       : type == 'y' ? json_object_new_int64(v.y)
                                     : json_object_new_int64(v.i);
                return 0;
        }
        case 'd': {
                double d;
                r = sd_bus_message_read_basic(m, type, &d);
                if (r < 0)
                        return r;
                *ret = json_object_new_double(d);
                return 0;
        }
        default:
                return sd_bus_message_skip(m, (char[]) { type, 0 });
        }
}

int read_all_values(sd_bus_message *m, json_object **ret) {
        json_object *a = json_object_new_array();
        int r;

        if (!a)
                return -ENOMEM;
        r = read_container_items(m, a);
        if (r < 0) {
                json_object_put(a);
                return r;
        }
        *ret = a;
        return 0;
}

Props *props_free(Props *p) {
        if (!p)
                return NULL;
        free(p->path);
        strv_free(p->keys);
        json_object_put(p->values);
        free(p);
        return NULL;
}

void props_array_free(Props **a, size_t n) {
        for (size_t i = 0; i < n; i++)
                props_free(a[i]);
        free(a);
}

int props_read(sd_bus_message *m, Props *p) {
        int r;

        if (!p->values) {
                p->values = json_object_new_object();
                if (!p->values)
                        return -ENOMEM;
        }
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                json_object *v = NULL;
                const char *name;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &name);
                if (r < 0)
                        return r;
                r = read_value(m, &v);
                if (r < 0)
                        return r;
                json_object_object_add(p->values, name, v);
                r = strv_extend(&p->keys, name);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_exit_container(m);
}

int props_get_all(Ctx *c, const char *path, const char *iface, Props **ret) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(props_freep) Props *p = new0(Props, 1);
        int r;

        if (!p)
                return -ENOMEM;
        p->path = strdup(path);
        if (!p->path)
                return -ENOMEM;
        r = sd_bus_call_method(c->bus, QSNAP_BUS_NAME, path, "org.freedesktop.DBus.Properties", "GetAll", &error,
                               &reply, "s", iface);
        if (r < 0) {
                print_bus_error(&error, r);
                sd_bus_error_free(&error);
                return r;
        }
        r = props_read(reply, p);
        if (r < 0) {
                fail("Failed to read the properties of %s: %s", path, strerror(-r));
                return r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

json_object *props_json(const Props *p, const char *name) {
        json_object *v = NULL;

        if (!p || !p->values || !json_object_object_get_ex(p->values, name, &v))
                return NULL;
        return v;
}

const char *props_str(const Props *p, const char *name) {
        json_object *v = props_json(p, name);

        return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

uint64_t props_u64(const Props *p, const char *name) {
        json_object *v = props_json(p, name);

        return v ? json_object_get_uint64(v) : 0;
}

bool props_bool(const Props *p, const char *name) {
        json_object *v = props_json(p, name);

        return v && json_object_get_boolean(v);
}

static int props_cmp(const void *a, const void *b) {
        return strcmp((*(Props *const *) a)->path, (*(Props *const *) b)->path);
}

int managed_objects(Ctx *c, const char *iface, const char *path_prefix, Props ***ret, size_t *ret_n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        Props **a = NULL;
        size_t n = 0;
        int r;

        r = call(c, &reply, QSNAP_ROOT_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        if (r < 0)
                goto fail;
        for (;;) {
                const char *path;

                r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}");
                if (r < 0)
                        goto fail;
                if (r == 0)
                        break;
                r = sd_bus_message_read(reply, "o", &path);
                if (r < 0)
                        goto fail;
                r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
                if (r < 0)
                        goto fail;
                for (;;) {
                        const char *name;

                        r = sd_bus_message_enter_container(reply, 'e', "sa{sv}");
                        if (r < 0)
                                goto fail;
                        if (r == 0)
                                break;
                        r = sd_bus_message_read(reply, "s", &name);
                        if (r < 0)
                                goto fail;
                        if (streq(name, iface) &&
                            (!path_prefix || (strncmp(path, path_prefix, strlen(path_prefix)) == 0 &&
                                              path[strlen(path_prefix)] == '/'))) {
                                Props **b = realloc(a, (n + 1) * sizeof(Props *));
                                if (!b) {
                                        r = -ENOMEM;
                                        goto fail;
                                }
                                a = b;
                                a[n] = new0(Props, 1);
                                if (!a[n] || !(a[n]->path = strdup(path))) {
                                        n += !!a[n];
                                        r = -ENOMEM;
                                        goto fail;
                                }
                                n++;
                                r = props_read(reply, a[n - 1]);
                        } else
                                r = sd_bus_message_skip(reply, "a{sv}");
                        if (r < 0)
                                goto fail;
                        r = sd_bus_message_exit_container(reply);
                        if (r < 0)
                                goto fail;
                }
                r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        goto fail;
        }
        if (n > 1)
                qsort(a, n, sizeof(Props *), props_cmp);
        *ret = a;
        *ret_n = n;
        return 0;
fail:
        props_array_free(a, n);
        fail("Failed to read qsnapd's objects: %s", strerror(-r));
        return r;
}
