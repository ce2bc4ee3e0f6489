/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP client engine: owns the monitor socket, its sd-event io source,
 * the read buffer (split into lines, one JSON object each), the write
 * buffer, the list of commands waiting for a reply (held back until
 * qmp_capabilities succeeded) and the event subscriptions. It knows the
 * QMP envelope only ("QMP", "execute", "id", "return", "error", "event");
 * command spellings live in qmp-commands.c.
 *
 * Callbacks may do anything to the Qmp, including dropping the last
 * reference: every path that calls out holds an internal reference
 * (qmp_hold), and when only internal references remain the object is
 * abandoned at once, so no further user callback runs.
 */
#include <assert.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/param.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "qemu/qmp.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/util.h"

#define QMP_READ_CHUNK (64U * 1024U)
/* query-named-block-nodes output can be large with many nodes; nothing
 * QEMU says legitimately comes near this. */
#define QMP_MESSAGE_MAX (16U * 1024U * 1024U)
/* json-c's default of 32 is too shallow: every backing file nests one
 * object deeper in query-block. */
#define QMP_JSON_DEPTH 512
#define QMP_LOG_MAX 300

/* json_object_object_add() that always takes v, also on failure. */
static int json_add(json_object *o, const char *key, json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

typedef struct QmpCommand QmpCommand;
struct QmpCommand {
        QmpCommand *next;
        int64_t id;
        qmp_reply_func_t cb;
        void *userdata;
        char *line;          /* serialized, while held back until ready */
        int fd;              /* sent with the line (SCM_RIGHTS), while held back */
        bool raw;            /* hand the whole reply to cb */
        bool internal;       /* qmp_capabilities: not cancellable by users */
        json_object *user_id; /* raw: the caller's "id", restored in the reply */
};

typedef struct QmpSubscription QmpSubscription;
struct QmpSubscription {
        QmpSubscription *next;
        int id;
        char *event; /* NULL: all */
        qmp_event_func_t cb;
        void *userdata;
        bool removed; /* swept when no dispatch is running */
};

struct Qmp {
        unsigned n_ref;
        unsigned n_held; /* references taken by our own code around callbacks */

        sd_event *event;
        sd_event_source *io;
        int fd;
        char *description;

        bool greeted;
        bool ready;
        unsigned version_major, version_minor; /* from the greeting; 0.0: not told */

        char *rbuf;
        size_t rsize, rlen, rpos, rscan; /* rscan: newline search resumes here */
        char *wbuf;
        size_t wsize, wlen, wpos;
        /* Descriptors to attach to the byte at wbuf offset `at` (the first
         * byte of the line of the command they go with), in order. */
        struct QmpFdMark { size_t at; int fd; } *marks;
        size_t n_marks;
        struct json_tokener *tok;

        int64_t last_id;
        uint64_t n_changes; /* qmp_changes() */
        QmpCommand *commands, *commands_tail;

        int last_subscription_id;
        unsigned n_dispatching;
        QmpSubscription *subscriptions;

        qmp_ready_func_t ready_cb;
        void *ready_userdata;
        qmp_disconnect_func_t disconnect_cb;
        void *disconnect_userdata;
};

static const char *qmp_name(Qmp *q) {
        return q->description ?: "QMP";
}

static void qmp_log_line(Qmp *q, const char *dir, const char *s, size_t n) {
        if (log_get_max_level() < LOG_DEBUG)
                return;
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
                n--;
        log_debug("%s: %s %.*s%s", qmp_name(q), dir, (int) (n > QMP_LOG_MAX ? QMP_LOG_MAX : n), s,
                  n > QMP_LOG_MAX ? "…" : "");
}

static void qmp_command_free(QmpCommand *c) {
        safe_close(c->fd);
        free(c->line);
        json_object_put(c->user_id);
        free(c);
}

static void qmp_command_unlink(Qmp *q, QmpCommand *c) {
        QmpCommand *prev = NULL;

        for (QmpCommand *i = q->commands; i; prev = i, i = i->next) {
                if (i != c)
                        continue;
                if (prev)
                        prev->next = c->next;
                else
                        q->commands = c->next;
                if (q->commands_tail == c)
                        q->commands_tail = prev;
                c->next = NULL;
                return;
        }
}

static QmpCommand *qmp_command_find(Qmp *q, int64_t id) {
        for (QmpCommand *c = q->commands; c; c = c->next)
                if (c->id == id)
                        return c;
        return NULL;
}

static void qmp_subscriptions_sweep(Qmp *q) {
        QmpSubscription **p = &q->subscriptions;

        if (q->n_dispatching > 0)
                return;
        while (*p) {
                QmpSubscription *s = *p;
                if (s->removed) {
                        *p = s->next;
                        free(s->event);
                        free(s);
                } else
                        p = &s->next;
        }
}

/* Closes the socket; no callbacks. */
static void qmp_shutdown(Qmp *q) {
        q->io = sd_event_source_disable_unref(q->io);
        q->fd = safe_close(q->fd);
        free(q->rbuf);
        q->rbuf = NULL;
        q->rsize = q->rlen = q->rpos = q->rscan = 0;
        free(q->wbuf);
        q->wbuf = NULL;
        q->wsize = q->wlen = q->wpos = 0;
        for (size_t i = 0; i < q->n_marks; i++)
                safe_close(q->marks[i].fd);
        q->marks = mfree(q->marks);
        q->n_marks = 0;
        q->ready = false;
}

/* The owner let go while we were calling out: forget every callback. */
static void qmp_abandon(Qmp *q) {
        qmp_shutdown(q);
        while (q->commands) {
                QmpCommand *c = q->commands;
                q->commands = c->next;
                qmp_command_free(c);
        }
        q->commands_tail = NULL;
        for (QmpSubscription *s = q->subscriptions; s; s = s->next)
                s->removed = true;
        qmp_subscriptions_sweep(q);
        q->ready_cb = NULL;
        q->disconnect_cb = NULL;
}

static Qmp *qmp_free(Qmp *q) {
        qmp_abandon(q);
        if (q->tok)
                json_tokener_free(q->tok);
        sd_event_unref(q->event);
        free(q->description);
        free(q);
        return NULL;
}

Qmp *qmp_ref(Qmp *q) {
        if (!q)
                return NULL;
        assert(q->n_ref > 0);
        q->n_ref++;
        return q;
}

Qmp *qmp_unref(Qmp *q) {
        if (!q)
                return NULL;
        assert(q->n_ref > q->n_held);
        q->n_ref--;
        if (q->n_ref == 0)
                return qmp_free(q);
        if (q->n_ref == q->n_held)
                qmp_abandon(q);
        return NULL;
}

static Qmp *qmp_hold(Qmp *q) {
        q->n_ref++;
        q->n_held++;
        return q;
}

static void qmp_releasep(Qmp **p) {
        Qmp *q = *p;

        if (!q)
                return;
        q->n_held--;
        if (--q->n_ref == 0)
                qmp_free(q);
}

/* Fails every pending reply with -ECONNRESET, each exactly once. */
static void qmp_fail_pending(Qmp *q) {
        _unused_ _cleanup_(qmp_releasep) Qmp *hold = qmp_hold(q);

        while (q->commands) {
                QmpCommand *c = q->commands;

                qmp_command_unlink(q, c);
                if (c->cb)
                        c->cb(q, -ECONNRESET, NULL, NULL, NULL, c->userdata);
                qmp_command_free(c);
        }
}

static void qmp_disconnect(Qmp *q, int error) {
        _unused_ _cleanup_(qmp_releasep) Qmp *hold = qmp_hold(q);
        qmp_ready_func_t ready_cb;

        if (q->fd < 0)
                return;

        log_debug_errno(error, "%s: connection lost: %m", qmp_name(q));
        qmp_shutdown(q);
        qmp_fail_pending(q);

        /* Still set means not ready yet: a failed negotiation. */
        ready_cb = q->ready_cb;
        q->ready_cb = NULL;
        if (ready_cb)
                ready_cb(q, error, q->ready_userdata);
        if (q->disconnect_cb)
                q->disconnect_cb(q, error, q->disconnect_userdata);
}

void qmp_close(Qmp *q) {
        if (!q || q->fd < 0)
                return;
        qmp_shutdown(q);
        qmp_fail_pending(q);
}

static int qmp_update_io_events(Qmp *q) {
        return sd_event_source_set_io_events(q->io, EPOLLIN | (q->wpos < q->wlen ? EPOLLOUT : 0));
}

/* Appends a line; fd (taken, also on failure), when >= 0, travels with its first byte. */
static int qmp_append_output(Qmp *q, const char *s, size_t n, int fd) {
        _cleanup_close_ int owned = fd;

        if (q->wpos == q->wlen)
                q->wpos = q->wlen = 0;
        if (fd >= 0) {
                struct QmpFdMark *m = reallocarray(q->marks, q->n_marks + 1, sizeof(*m));
                if (!m)
                        return -ENOMEM;
                q->marks = m;
        }
        if (q->wlen + n > q->wsize) {
                size_t sz = (q->wlen + n) * 2;
                char *p = realloc(q->wbuf, sz);
                if (!p)
                        return -ENOMEM;
                q->wbuf = p;
                q->wsize = sz;
        }
        if (fd >= 0)
                q->marks[q->n_marks++] = (struct QmpFdMark) { .at = q->wlen, .fd = TAKE_FD(owned) };
        memcpy(q->wbuf + q->wlen, s, n);
        q->wlen += n;
        qmp_log_line(q, "→", s, n);
        return qmp_update_io_events(q);
}

/* A query-* command (qmp_changes()); everything else may change QEMU's
 * state, the monitor's pass-through included. */
static bool qmp_command_reads_only(json_object *cmd) {
        json_object *v;
        const char *name;

        if (!json_object_object_get_ex(cmd, "execute", &v) || !(name = json_object_get_string(v)))
                return false;
        return strncmp(name, "query-", 6) == 0 || streq(name, "qmp_capabilities");
}

uint64_t qmp_changes(const Qmp *q) {
        return q ? q->n_changes : 0;
}

/* Queues a command object (taken) with our id. Until the capabilities
 * reply only the internal qmp_capabilities goes out; the rest is held. */
static int64_t qmp_queue(
                Qmp *q,
                json_object *command,
                json_object *user_id,
                bool raw,
                bool internal,
                int fd,
                qmp_reply_func_t cb,
                void *userdata) {

        _cleanup_(json_object_putp) json_object *cmd = command, *uid = user_id;
        _cleanup_close_ int owned = fd;
        _cleanup_free_ QmpCommand *c = NULL;
        _cleanup_free_ char *line = NULL;
        const char *s;
        int r;

        if (!cmd)
                return -ENOMEM;
        if (q->fd < 0)
                return -ENOTCONN;

        c = calloc(1, sizeof(QmpCommand));
        if (!c)
                return -ENOMEM;
        c->fd = -EBADF;
        c->id = q->last_id + 1;

        if (json_add(cmd, "id", json_object_new_int64(c->id)) < 0)
                return -ENOMEM;
        s = json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        line = s ? strjoin(s, "\n") : NULL;
        if (!line)
                return -ENOMEM;

        if (q->ready || internal) {
                r = qmp_append_output(q, line, strlen(line), TAKE_FD(owned));
                if (r < 0)
                        return log_error_errno(r, "%s: failed to queue command: %m", qmp_name(q));
        } else {
                c->line = TAKE_PTR(line);
                c->fd = TAKE_FD(owned);
        }

        q->last_id = c->id;
        if (!qmp_command_reads_only(cmd))
                q->n_changes++;
        c->cb = cb;
        c->userdata = userdata;
        c->raw = raw;
        c->internal = internal;
        c->user_id = TAKE_PTR(uid);
        if (q->commands_tail)
                q->commands_tail->next = c;
        else
                q->commands = c;
        q->commands_tail = c;
        return TAKE_PTR(c)->id;
}

/* {"execute": command, "arguments": args}; takes args. NULL on OOM. */
static json_object *qmp_command_new(const char *command, json_object *args) {
        _cleanup_(json_object_putp) json_object *cmd = json_object_new_object();

        if (!cmd || json_add(cmd, "execute", json_object_new_string(command)) < 0 ||
            (args && json_add(cmd, "arguments", TAKE_PTR(args)) < 0)) {
                json_object_put(args);
                return NULL;
        }
        return TAKE_PTR(cmd);
}

int64_t qmp_send(Qmp *q, const char *command, json_object *args, qmp_reply_func_t cb, void *userdata) {
        if (!q || !command) {
                json_object_put(args);
                return -EINVAL;
        }
        return qmp_queue(q, qmp_command_new(command, args), NULL, false, false, -EBADF, cb, userdata);
}

int64_t qmp_send_with_fd(Qmp *q, const char *command, json_object *args, int fd, qmp_reply_func_t cb, void *userdata) {
        _cleanup_close_ int copy = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : -EBADF;

        if (!q || !command || copy < 0) {
                json_object_put(args);
                return copy < 0 && fd >= 0 ? -errno : -EINVAL;
        }
        return qmp_queue(q, qmp_command_new(command, args), NULL, false, false, TAKE_FD(copy), cb, userdata);
}

int64_t qmp_send_raw(Qmp *q, json_object *command, qmp_reply_func_t cb, void *userdata) {
        _cleanup_(json_object_putp) json_object *cmd = command, *uid = NULL;
        json_object *v;

        if (!q || !json_object_is_type(cmd, json_type_object) ||
            !json_object_object_get_ex(cmd, "execute", &v) || !json_object_is_type(v, json_type_string))
                return -EINVAL;

        if (json_object_object_get_ex(cmd, "id", &v)) {
                uid = json_object_get(v);
                json_object_object_del(cmd, "id");
        }
        return qmp_queue(q, TAKE_PTR(cmd), TAKE_PTR(uid), true, false, -EBADF, cb, userdata);
}

int qmp_cancel(Qmp *q, int64_t id) {
        QmpCommand *c;

        if (!q)
                return -EINVAL;
        c = qmp_command_find(q, id);
        if (!c || c->internal)
                return -ENOENT;
        /* A command still held back is never sent; one already sent has
         * its reply dropped as an unknown id. */
        qmp_command_unlink(q, c);
        qmp_command_free(c);
        return 0;
}

int qmp_subscribe(Qmp *q, const char *event, qmp_event_func_t cb, void *userdata) {
        QmpSubscription *s, **p;

        if (!q || !cb)
                return -EINVAL;
        s = calloc(1, sizeof(QmpSubscription));
        if (!s)
                return -ENOMEM;
        if (event) {
                s->event = strdup(event);
                if (!s->event) {
                        free(s);
                        return -ENOMEM;
                }
        }
        s->id = ++q->last_subscription_id;
        s->cb = cb;
        s->userdata = userdata;
        for (p = &q->subscriptions; *p; p = &(*p)->next)
                ;
        *p = s;
        return s->id;
}

int qmp_unsubscribe(Qmp *q, int id) {
        if (!q)
                return -EINVAL;
        for (QmpSubscription *s = q->subscriptions; s; s = s->next)
                if (s->id == id && !s->removed) {
                        s->removed = true;
                        qmp_subscriptions_sweep(q);
                        return 0;
                }
        return -ENOENT;
}

static void qmp_on_capabilities(
                Qmp *q, int error, json_object *result, const char *err_class, const char *err_desc, void *userdata) {
        qmp_ready_func_t cb;
        int r;

        if (q->fd < 0) /* qmp_disconnect() tells the ready callback */
                return;
        if (error < 0) {
                log_error("%s: qmp_capabilities failed: %s: %s", qmp_name(q), strna(err_class), strna(err_desc));
                return qmp_disconnect(q, -EPROTO);
        }

        q->ready = true;
        for (QmpCommand *c = q->commands; c; c = c->next) {
                if (!c->line)
                        continue;
                r = qmp_append_output(q, c->line, strlen(c->line), TAKE_FD(c->fd));
                if (r < 0) {
                        log_error_errno(r, "%s: failed to queue held commands: %m", qmp_name(q));
                        return qmp_disconnect(q, r);
                }
                free(c->line);
                c->line = NULL;
        }

        log_debug("%s: ready", qmp_name(q));
        cb = q->ready_cb;
        q->ready_cb = NULL;
        if (cb)
                cb(q, 0, q->ready_userdata);
}

static void qmp_dispatch_reply(Qmp *q, json_object *msg, json_object *id) {
        json_object *err, *v;
        const char *err_class = "", *err_desc = "";
        QmpCommand *c;

        /* A held command has not been sent: a reply to it is bogus too. */
        c = json_object_is_type(id, json_type_int) ? qmp_command_find(q, json_object_get_int64(id)) : NULL;
        if (!c || c->line) {
                log_debug("%s: dropping reply with an id we did not send: %s",
                          qmp_name(q), id ? json_object_to_json_string(id) : "(none)");
                return;
        }
        /* Unlinked before the call: the callback may cancel, send or close. */
        qmp_command_unlink(q, c);

        if (c->raw) {
                json_object_object_del(msg, "id");
                if (c->user_id)
                        (void) json_add(msg, "id", json_object_get(c->user_id));
                if (c->cb)
                        c->cb(q, 0, msg, NULL, NULL, c->userdata);
        } else if (json_object_object_get_ex(msg, "error", &err)) {
                if (json_object_object_get_ex(err, "class", &v) && json_object_is_type(v, json_type_string))
                        err_class = json_object_get_string(v);
                if (json_object_object_get_ex(err, "desc", &v) && json_object_is_type(v, json_type_string))
                        err_desc = json_object_get_string(v);
                if (c->cb)
                        c->cb(q, -QSNAP_E_QEMU_FAILED, NULL, err_class, err_desc, c->userdata);
        } else {
                json_object_object_get_ex(msg, "return", &v);
                if (c->cb)
                        c->cb(q, 0, v, NULL, NULL, c->userdata);
        }
        qmp_command_free(c);
}

static void qmp_dispatch_event(Qmp *q, json_object *msg, const char *event) {
        json_object *data = NULL, *ts, *v;
        int64_t sec = 0, usec = 0;
        uint64_t timestamp = 0;
        int last = q->last_subscription_id;

        json_object_object_get_ex(msg, "data", &data);
        if (json_object_object_get_ex(msg, "timestamp", &ts)) {
                if (json_object_object_get_ex(ts, "seconds", &v))
                        sec = json_object_get_int64(v);
                if (json_object_object_get_ex(ts, "microseconds", &v))
                        usec = json_object_get_int64(v);
                if (sec >= 0 && usec >= 0)
                        timestamp = (uint64_t) sec * USEC_PER_SEC + (uint64_t) usec;
        }

        /* Subscriptions removed meanwhile are only marked, so the walk
         * stays valid; ones added meanwhile wait for the next event. */
        q->n_dispatching++;
        for (QmpSubscription *s = q->subscriptions; s && q->fd >= 0; s = s->next) {
                if (s->removed || s->id > last || (s->event && !streq(s->event, event)))
                        continue;
                s->cb(q, event, data, timestamp, s->userdata);
        }
        q->n_dispatching--;
        qmp_subscriptions_sweep(q);
}

/* {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, …}, …}, …}} */
static void qmp_parse_greeting_version(Qmp *q, json_object *greeting) {
        json_object *o = greeting, *major, *minor;

        if (json_object_object_get_ex(o, "QMP", &o) && json_object_object_get_ex(o, "version", &o) &&
            json_object_object_get_ex(o, "qemu", &o) &&
            json_object_object_get_ex(o, "major", &major) && json_object_is_type(major, json_type_int) &&
            json_object_object_get_ex(o, "minor", &minor) && json_object_is_type(minor, json_type_int) &&
            json_object_get_int(major) >= 0 && json_object_get_int(minor) >= 0) {
                q->version_major = (unsigned) json_object_get_int(major);
                q->version_minor = (unsigned) json_object_get_int(minor);
        }
}

bool qmp_version_at_least(const Qmp *q, unsigned major, unsigned minor) {
        return q->version_major > major || (q->version_major == major && q->version_minor >= minor);
}

static int qmp_dispatch(Qmp *q, json_object *msg) {
        json_object *v, *id = NULL;
        int64_t r;

        if (!q->greeted) {
                /* QEMU hands output queued for a client that went away (a
                 * reply to a command of a qsnapd that was stopped while it
                 * waited, an event) to the next client, around its greeting:
                 * drop it, as a reply to an id we did not send. */
                if (json_object_object_get_ex(msg, "return", NULL) || json_object_object_get_ex(msg, "error", NULL) ||
                    json_object_object_get_ex(msg, "event", NULL)) {
                        log_debug("%s: dropping a message meant for the previous client.", qmp_name(q));
                        return 0;
                }
                if (!json_object_object_get_ex(msg, "QMP", NULL))
                        return log_error_errno(EPROTO, "%s: expected a QMP greeting.", qmp_name(q));
                q->greeted = true;
                qmp_parse_greeting_version(q, msg);
                /* No arguments: we enable no capability (in particular not "oob":
                 * without it QEMU reads no further until it answered, so a
                 * descriptor reaches the command it came with). */
                r = qmp_queue(q, qmp_command_new("qmp_capabilities", NULL), NULL, false, true, -EBADF,
                              qmp_on_capabilities, NULL);
                return r < 0 ? (int) r : 0;
        }

        if (json_object_object_get_ex(msg, "event", &v) && json_object_is_type(v, json_type_string))
                qmp_dispatch_event(q, msg, json_object_get_string(v));
        else if (json_object_object_get_ex(msg, "return", NULL) || json_object_object_get_ex(msg, "error", NULL)) {
                json_object_object_get_ex(msg, "id", &id);
                qmp_dispatch_reply(q, msg, id);
        } else
                log_debug("%s: ignoring a message of unknown kind.", qmp_name(q));
        return 0;
}

static int qmp_parse_line(Qmp *q, const char *line, size_t n, json_object **ret) {
        json_object *o;

        qmp_log_line(q, "←", line, n);
        json_tokener_reset(q->tok);
        o = json_tokener_parse_ex(q->tok, line, (int) n);
        /* The end check also catches a NUL byte, where json-c stops early. */
        if (!o || json_tokener_get_parse_end(q->tok) != n || !json_object_is_type(o, json_type_object)) {
                log_error("%s: malformed message from QEMU (%s).", qmp_name(q),
                          o ? "not a complete JSON object" : json_tokener_error_desc(json_tokener_get_error(q->tok)));
                json_object_put(o);
                return -EBADMSG;
        }
        *ret = o;
        return 0;
}

/* Parses and dispatches every complete line in the read buffer. */
static int qmp_process_input(Qmp *q) {
        int r;

        while (q->fd >= 0) {
                _cleanup_(json_object_putp) json_object *msg = NULL;
                const char *line = q->rbuf + q->rpos, *nl;
                size_t n;

                nl = memchr(q->rbuf + q->rscan, '\n', q->rlen - q->rscan);
                if (!nl) {
                        q->rscan = q->rlen;
                        if (q->rlen - q->rpos > QMP_MESSAGE_MAX)
                                return log_error_errno(EMSGSIZE, "%s: message from QEMU too long.", qmp_name(q));
                        return 0;
                }
                n = nl - line;
                q->rpos = q->rscan = nl + 1 - q->rbuf;
                if (n > QMP_MESSAGE_MAX)
                        return log_error_errno(EMSGSIZE, "%s: message from QEMU too long.", qmp_name(q));
                if (strspn(line, " \t\r") >= n)
                        continue;

                r = qmp_parse_line(q, line, n, &msg);
                if (r < 0)
                        return r;
                r = qmp_dispatch(q, msg);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int qmp_read(Qmp *q) {
        ssize_t k;

        if (q->rpos > 0) {
                memmove(q->rbuf, q->rbuf + q->rpos, q->rlen - q->rpos);
                q->rlen -= q->rpos;
                q->rscan -= q->rpos;
                q->rpos = 0;
        }
        if (q->rsize - q->rlen < QMP_READ_CHUNK) {
                size_t sz = MAX(q->rsize * 2, q->rlen + QMP_READ_CHUNK);
                char *p = realloc(q->rbuf, sz);
                if (!p)
                        return log_oom();
                q->rbuf = p;
                q->rsize = sz;
        }

        k = recv(q->fd, q->rbuf + q->rlen, q->rsize - q->rlen, MSG_DONTWAIT);
        if (k < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                return log_debug_errno(errno, "%s: failed to read: %m", qmp_name(q));
        }
        if (k == 0)
                return -ECONNRESET;
        q->rlen += k;
        return qmp_process_input(q);
}

/* Sends wbuf[wpos, end) where end is the next descriptor's byte or the
 * end; a descriptor due at wpos goes with these bytes (SCM_RIGHTS). */
static ssize_t qmp_send_chunk(Qmp *q) {
        struct QmpFdMark *m = q->n_marks > 0 ? q->marks : NULL;
        size_t end = q->wlen;
        struct iovec iov;
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = {};
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t k;

        if (m && m->at > q->wpos)
                end = m->at;
        else if (m && q->n_marks > 1)
                end = q->marks[1].at;
        iov = (struct iovec) { .iov_base = q->wbuf + q->wpos, .iov_len = end - q->wpos };
        if (m && m->at == q->wpos) {
                struct cmsghdr *cm;

                mh.msg_control = control.buf;
                mh.msg_controllen = sizeof(control.buf);
                cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &m->fd, sizeof(int));
        }
        k = sendmsg(q->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0 && mh.msg_control) {
                /* The descriptor is QEMU's now: ours goes. */
                safe_close(m->fd);
                memmove(q->marks, q->marks + 1, (q->n_marks - 1) * sizeof(*m));
                q->n_marks--;
        }
        return k;
}

static int qmp_write(Qmp *q) {
        while (q->wpos < q->wlen) {
                ssize_t k = qmp_send_chunk(q);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        return log_debug_errno(errno, "%s: failed to write: %m", qmp_name(q));
                }
                q->wpos += k;
        }
        if (q->wpos == q->wlen)
                q->wpos = q->wlen = 0;
        return qmp_update_io_events(q);
}

static int qmp_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        _cleanup_(qmp_releasep) Qmp *q = qmp_hold(userdata);
        int r = 0;

        /* Read first: replies QEMU sent before hanging up still count. */
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                r = qmp_read(q);
        if (r >= 0 && q->fd >= 0 && (revents & EPOLLOUT))
                r = qmp_write(q);
        if (r < 0)
                qmp_disconnect(q, r);
        return 0;
}

int qmp_new_from_fd(sd_event *event, int fd, Qmp **ret) {
        _cleanup_close_ int owned = fd;
        _cleanup_(qmp_unrefp) Qmp *q = NULL;
        int r, flags;

        if (!event || fd < 0 || !ret)
                return -EINVAL;

        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return log_error_errno(errno, "Failed to make QMP socket non-blocking: %m");

        q = calloc(1, sizeof(Qmp));
        if (!q)
                return log_oom();
        q->n_ref = 1;
        q->fd = -EBADF;
        q->event = sd_event_ref(event);
        q->tok = json_tokener_new_ex(QMP_JSON_DEPTH);
        if (!q->tok)
                return log_oom();
        json_tokener_set_flags(q->tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);

        r = sd_event_add_io(event, &q->io, fd, EPOLLIN, qmp_on_io, q);
        if (r < 0)
                return log_error_errno(r, "Failed to watch QMP socket: %m");
        (void) sd_event_source_set_description(q->io, "qmp");
        q->fd = TAKE_FD(owned);

        *ret = TAKE_PTR(q);
        return 0;
}

int qmp_connect(sd_event *event, const char *path, Qmp **ret) {
        _cleanup_close_ int fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Qmp *q;
        int r;

        if (!event || !path || !ret)
                return -EINVAL;
        if (strlen(path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "QMP socket path too long: %s", path);
        strcpy(sa.sun_path, path);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create QMP socket: %m");
        /* A UNIX connect() never completes later: it succeeds, or fails
         * now (EAGAIN when the backlog is full). */
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return log_debug_errno(errno, "Failed to connect to QMP socket %s: %m", path);

        r = qmp_new_from_fd(event, TAKE_FD(fd), &q);
        if (r < 0)
                return r;
        (void) qmp_set_description(q, path);
        *ret = q;
        return 0;
}

void qmp_set_ready_callback(Qmp *q, qmp_ready_func_t cb, void *userdata) {
        q->ready_cb = cb;
        q->ready_userdata = userdata;
}

void qmp_set_disconnect_callback(Qmp *q, qmp_disconnect_func_t cb, void *userdata) {
        q->disconnect_cb = cb;
        q->disconnect_userdata = userdata;
}

int qmp_set_description(Qmp *q, const char *description) {
        return free_and_strdup(&q->description, description);
}

bool qmp_is_ready(Qmp *q) {
        return q && q->ready;
}

bool qmp_is_connected(Qmp *q) {
        return q && q->fd >= 0;
}
