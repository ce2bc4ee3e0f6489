/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * monitor: every signal qsnapd sends, one line each as it comes (or one
 * JSON object per line with --json), and qsnapd leaving or taking its bus
 * name. Runs until Ctrl-C.
 */
#include <signal.h>
#include <sys/time.h>
#include <systemd/sd-event.h>

#include "cli.h"

/* "vm1", "vm1/snapshot s1", "vm1/job pull-vda-1a2b", "qsnapd" */
static char *describe_path(const char *path) {
        const char *p;
        _cleanup_free_ char *dom = NULL, *dom_path = NULL, *leaf = NULL;
        const char *prefix = QSNAP_ROOT_PATH "/domain/";

        if (streq(path, QSNAP_ROOT_PATH))
                return strdup("qsnapd");
        if (strncmp(path, prefix, strlen(prefix)) != 0)
                return strdup(path);
        p = path + strlen(prefix);
        {
                const char *slash = strchr(p, '/');
                dom_path = slash ? strndup(path, (size_t) (slash - path)) : strdup(path);
                if (!dom_path)
                        return NULL;
                dom = path_last_name(dom_path);
                if (!slash)
                        return TAKE_PTR(dom);
                leaf = path_last_name(path);
                {
                        const char *kind = slash + 1;
                        size_t klen = strcspn(kind, "/");
                        return strprintf("%s/%.*s %s", strna(dom), (int) klen, kind, strna(leaf));
                }
        }
}

static int on_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Ctx *c = userdata;
        const char *iface = strempty(sd_bus_message_get_interface(m));
        const char *member = strempty(sd_bus_message_get_member(m)), *path = strempty(sd_bus_message_get_path(m));
        _cleanup_free_ char *what = NULL;
        json_object *args = NULL;
        struct timeval tv;
        struct tm tm;
        char stamp[32];

        if (streq(iface, "org.freedesktop.DBus")) {
                const char *name, *old, *new;
                if (!streq(member, "NameOwnerChanged") || sd_bus_message_read(m, "sss", &name, &old, &new) < 0 ||
                    !streq(name, QSNAP_BUS_NAME))
                        return 0;
                args = json_object_new_array();
                json_object_array_add(args, json_object_new_string(isempty(new) ? "stopped" : "started"));
                what = strdup("qsnapd");
                member = isempty(new) ? "Stopped" : "Started";
                iface = "";
        } else {
                if (read_all_values(m, &args) < 0)
                        return 0;
                what = describe_path(path);
        }
        gettimeofday(&tv, NULL);
        localtime_r(&tv.tv_sec, &tm);
        strftime(stamp, sizeof(stamp), "%H:%M:%S", &tm);
        if (c->json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "time", json_object_new_double((double) tv.tv_sec + tv.tv_usec / 1e6));
                json_object_object_add(o, "object", json_str(what));
                json_object_object_add(o, "path", json_str(path));
                json_object_object_add(o, "interface", json_str(iface));
                json_object_object_add(o, "member", json_str(member));
                json_object_object_add(o, "args", args);
                printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                json_object_put(o);
                return 0;
        }
        if (streq(member, "PropertiesChanged") && json_object_array_length(args) >= 2) {
                /* "vm1: State=\"running\"" */
                json_object *changed = json_object_array_get_idx(args, 1);
                printf("%s.%03d %s: ", stamp, (int) (tv.tv_usec / 1000), strna(what));
                for (size_t i = 0; changed && i < json_object_array_length(changed); i++) {
                        json_object *kv = json_object_array_get_idx(changed, i);
                        printf("%s%s=%s", i ? " " : "", json_object_get_string(json_object_array_get_idx(kv, 0)),
                               json_object_to_json_string_ext(json_object_array_get_idx(kv, 1),
                                                              JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                }
                printf("\n");
        } else {
                const char *a = json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
                printf("%s.%03d %s: %s %s\n", stamp, (int) (tv.tv_usec / 1000), strna(what), member,
                       json_object_array_length(args) ? a : "");
        }
        json_object_put(args);
        return 0;
}

static int on_quit(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        return sd_event_exit(sd_event_source_get_event(s), EXIT_OK);
}

int verb_monitor(Ctx *c) {
        _cleanup_(sd_event_unrefp) sd_event *e = NULL;
        _cleanup_free_ char *dpath = NULL, *rule = NULL;
        const char *domain = opt(c, "domain");
        sd_bus_slot *s1 = NULL, *s2 = NULL;
        sigset_t mask;
        int r;

        if (domain && domain_path(c, domain, &dpath) < 0)
                return EXIT_FAILED;
        rule = strprintf("type='signal',sender='%s',path_namespace='%s'", QSNAP_BUS_NAME, dpath ?: QSNAP_ROOT_PATH);
        if (!rule)
                return EXIT_FAILED;
        r = sd_bus_add_match(c->bus, &s1, rule, on_signal, c);
        if (r >= 0)
                r = sd_bus_add_match(c->bus, &s2,
                                     "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
                                     "member='NameOwnerChanged',arg0='" QSNAP_BUS_NAME "'",
                                     on_signal, c);
        if (r >= 0)
                r = sd_event_new(&e);
        if (r >= 0)
                r = sd_bus_attach_event(c->bus, e, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0) {
                fail("Failed to subscribe to qsnapd's signals: %s", strerror(-r));
                sd_bus_slot_unref(s1);
                sd_bus_slot_unref(s2);
                return EXIT_FAILED;
        }
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        (void) sd_event_add_signal(e, NULL, SIGINT, on_quit, NULL);
        (void) sd_event_add_signal(e, NULL, SIGTERM, on_quit, NULL);
        fprintf(stderr, "Monitoring qsnapd's signals%s%s%s; Ctrl-C to stop.\n", domain ? " for domain '" : "",
                strempty(domain), domain ? "'" : "");
        r = sd_event_loop(e);
        sd_bus_slot_unref(s1);
        sd_bus_slot_unref(s2);
        (void) sd_bus_detach_event(c->bus);
        if (r < 0 && r != -ECONNRESET) {
                fail("The connection to the bus failed: %s", strerror(-r));
                return EXIT_FAILED;
        }
        return r == -ECONNRESET ? EXIT_FAILED : EXIT_OK;
}
