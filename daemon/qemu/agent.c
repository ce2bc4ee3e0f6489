/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest agent engine: owns the channel socket, its io source, the
 * read buffer (0xFF bytes dropped, split into lines), the write buffer,
 * the queue of requests (a resync, then the command) of which only the
 * head is on the wire, and the head's timeout. It knows the envelope
 * ("execute", "arguments", "return", "error") and guest-sync-delimited;
 * the rest of qemu-ga's command spellings are its callers'.
 *
 * Callbacks may drop the last reference: like qmp.c every path that calls
 * out holds an internal reference, and when only those remain the object
 * is abandoned, so no further callback runs.
 */
#include <assert.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/param.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "qemu/agent.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/util.h"

#define AGENT_READ_CHUNK (64U * 1024U)
#define AGENT_MESSAGE_MAX (16U * 1024U * 1024U)
#define AGENT_LOG_MAX 300
#define AGENT_SYNC_BYTE 0xFF

typedef struct AgentRequest AgentRequest;
struct AgentRequest {
        AgentRequest *next;
        int64_t id;
        char *line;          /* the serialized command; NULL for a probe */
        uint64_t timeout_usec;
        agent_reply_func_t cb;
        void *userdata;
};

typedef enum AgentPhase {
        AGENT_IDLE,
        AGENT_SYNCING,   /* 0xFF + guest-sync-delimited sent for the head */
        AGENT_WAITING,   /* the head's command sent, its reply not yet read */
} AgentPhase;

struct Agent {
        unsigned n_ref;
        unsigned n_held;

        sd_event *event;
        sd_event_source *io;
        sd_event_source *timer;
        int fd;
        char *description;

        char *rbuf;
        size_t rsize, rlen;
        char *wbuf;
        size_t wsize, wlen, wpos;

        int64_t last_id;
        AgentRequest *requests, *requests_tail; /* head is the one in flight */
        AgentPhase phase;
        int64_t sync_id;
        bool synced;

        agent_state_func_t state_cb;
        void *state_userdata;
};

static const char *agent_name(Agent *a) {
        return a->description ?: "guest agent";
}

static void agent_log_line(Agent *a, const char *dir, const char *s, size_t n) {
        if (log_get_max_level() < LOG_DEBUG)
                return;
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
                n--;
        log_debug("%s: %s %.*s%s", agent_name(a), dir, (int) MIN(n, (size_t) AGENT_LOG_MAX), s,
                  n > AGENT_LOG_MAX ? "…" : "");
}

static void agent_request_free(AgentRequest *r) {
        free(r->line);
        free(r);
}

static void agent_shutdown(Agent *a) {
        a->io = sd_event_source_disable_unref(a->io);
        a->timer = sd_event_source_disable_unref(a->timer);
        a->fd = safe_close(a->fd);
        free(a->rbuf);
        a->rbuf = NULL;
        a->rsize = a->rlen = 0;
        free(a->wbuf);
        a->wbuf = NULL;
        a->wsize = a->wlen = a->wpos = 0;
        a->phase = AGENT_IDLE;
        a->synced = false;
}

static void agent_abandon(Agent *a) {
        agent_shutdown(a);
        while (a->requests) {
                AgentRequest *r = a->requests;
                a->requests = r->next;
                agent_request_free(r);
        }
        a->requests_tail = NULL;
        a->state_cb = NULL;
}

static Agent *agent_free(Agent *a) {
        agent_abandon(a);
        sd_event_unref(a->event);
        free(a->description);
        free(a);
        return NULL;
}

Agent *agent_ref(Agent *a) {
        if (!a)
                return NULL;
        assert(a->n_ref > 0);
        a->n_ref++;
        return a;
}

Agent *agent_unref(Agent *a) {
        if (!a)
                return NULL;
        assert(a->n_ref > a->n_held);
        a->n_ref--;
        if (a->n_ref == 0)
                return agent_free(a);
        if (a->n_ref == a->n_held)
                agent_abandon(a);
        return NULL;
}

static Agent *agent_hold(Agent *a) {
        a->n_ref++;
        a->n_held++;
        return a;
}

static void agent_releasep(Agent **p) {
        Agent *a = *p;

        if (!a)
                return;
        a->n_held--;
        if (--a->n_ref == 0)
                agent_free(a);
}

static void agent_set_synced(Agent *a, bool synced) {
        if (a->synced == synced)
                return;
        a->synced = synced;
        log_debug("%s: %s", agent_name(a), synced ? "synced" : "not synced");
        if (a->state_cb)
                a->state_cb(a, synced, a->state_userdata);
}

/* Unlinks the head and calls its callback. */
static void agent_complete_head(Agent *a, int error, json_object *result, const char *cls, const char *desc) {
        _unused_ _cleanup_(agent_releasep) Agent *hold = agent_hold(a);
        AgentRequest *r = a->requests;

        if (!r)
                return;
        a->requests = r->next;
        if (!a->requests)
                a->requests_tail = NULL;
        a->phase = AGENT_IDLE;
        a->timer = sd_event_source_disable_unref(a->timer);
        if (r->cb)
                r->cb(a, error, result, cls, desc, r->userdata);
        agent_request_free(r);
}

static void agent_fail_all(Agent *a, int error) {
        _unused_ _cleanup_(agent_releasep) Agent *hold = agent_hold(a);

        while (a->requests)
                agent_complete_head(a, error, NULL, NULL, NULL);
}

static void agent_disconnect(Agent *a, int error) {
        _unused_ _cleanup_(agent_releasep) Agent *hold = agent_hold(a);
        bool was_synced = a->synced;

        if (a->fd < 0)
                return;
        log_debug_errno(error, "%s: connection lost: %m", agent_name(a));
        agent_shutdown(a);
        agent_fail_all(a, -ECONNRESET);
        if (was_synced && a->state_cb)
                a->state_cb(a, false, a->state_userdata);
}

void agent_close(Agent *a) {
        if (!a || a->fd < 0)
                return;
        agent_shutdown(a);
        agent_fail_all(a, -ECONNRESET);
}

static int agent_update_io_events(Agent *a) {
        return sd_event_source_set_io_events(a->io, EPOLLIN | (a->wpos < a->wlen ? EPOLLOUT : 0));
}

static int agent_append_output(Agent *a, const char *s, size_t n) {
        if (a->wpos == a->wlen)
                a->wpos = a->wlen = 0;
        if (a->wlen + n > a->wsize) {
                size_t sz = (a->wlen + n) * 2;
                char *p = realloc(a->wbuf, sz);
                if (!p)
                        return -ENOMEM;
                a->wbuf = p;
                a->wsize = sz;
        }
        memcpy(a->wbuf + a->wlen, s, n);
        a->wlen += n;
        agent_log_line(a, "→", s, n);
        return agent_update_io_events(a);
}

static int agent_process_queue(Agent *a);

static int on_agent_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        _cleanup_(agent_releasep) Agent *a = agent_hold(userdata);

        log_warning("%s: no %s within the timeout.", agent_name(a),
                    a->phase == AGENT_SYNCING ? "answer to guest-sync-delimited" : "reply");
        /* Whatever it says later is dropped by the next resync. */
        a->timer = sd_event_source_disable_unref(a->timer);
        agent_set_synced(a, false);
        if (a->fd < 0)
                return 0;
        agent_complete_head(a, -ETIMEDOUT, NULL, NULL, NULL);
        if (a->fd >= 0 && agent_process_queue(a) < 0)
                agent_disconnect(a, -EIO);
        return 0;
}

static int agent_arm_timer(Agent *a, uint64_t timeout_usec) {
        a->timer = sd_event_source_disable_unref(a->timer);
        /* From the clock, not the loop's cached time: the timeout is a promise to the caller. */
        return sd_event_add_time(a->event, &a->timer, CLOCK_MONOTONIC, now_usec(CLOCK_MONOTONIC) + timeout_usec,
                                 10 * USEC_PER_MSEC, on_agent_timeout, a);
}

/* Puts the head's resync on the wire. */
static int agent_process_queue(Agent *a) {
        _cleanup_free_ char *line = NULL;
        uint32_t rnd = 0;
        int r;

        if (a->phase != AGENT_IDLE || !a->requests || a->fd < 0)
                return 0;

        /* A fresh id each time, so that a sync answer that comes late is
         * never taken for the current one. */
        if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
                rnd = (uint32_t) now_usec(CLOCK_MONOTONIC);
        a->sync_id = (int64_t) ((rnd ^ (uint32_t) a->last_id) & 0x3fffffffU) + 1;
        line = strprintf("%c{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":%" PRIi64 "}}\n",
                         AGENT_SYNC_BYTE, a->sync_id);
        if (!line)
                return -ENOMEM;
        r = agent_append_output(a, line, strlen(line));
        if (r < 0)
                return r;
        a->phase = AGENT_SYNCING;
        return agent_arm_timer(a, a->requests->timeout_usec);
}

static int agent_on_sync_answer(Agent *a) {
        AgentRequest *head = a->requests;
        int r;

        agent_set_synced(a, true);
        if (a->fd < 0 || a->requests != head || !head)
                return 0; /* the state callback closed or cancelled */
        if (!head->line) {
                /* A probe: the sync was all it wanted. */
                agent_complete_head(a, 0, NULL, NULL, NULL);
                return a->fd >= 0 ? agent_process_queue(a) : 0;
        }
        r = agent_append_output(a, head->line, strlen(head->line));
        if (r < 0)
                return r;
        a->phase = AGENT_WAITING;
        return agent_arm_timer(a, head->timeout_usec);
}

static int agent_dispatch_line(Agent *a, const char *line, size_t n) {
        _cleanup_(json_object_putp) json_object *msg = NULL;
        json_tokener *tok;
        json_object *v, *err;
        const char *cls = "", *desc = "";

        agent_log_line(a, "←", line, n);
        tok = json_tokener_new();
        if (!tok)
                return -ENOMEM;
        msg = json_tokener_parse_ex(tok, line, (int) n);
        if (msg && (json_tokener_get_parse_end(tok) != n || !json_object_is_type(msg, json_type_object))) {
                json_object_put(msg);
                msg = NULL;
        }
        json_tokener_free(tok);

        switch (a->phase) {
        case AGENT_IDLE:
                /* A late reply, or the stray GenericError for a 0xFF byte. */
                log_debug("%s: dropping an unexpected message.", agent_name(a));
                return 0;
        case AGENT_SYNCING:
                if (msg && json_object_object_get_ex(msg, "return", &v) && json_object_is_type(v, json_type_int) &&
                    json_object_get_int64(v) == a->sync_id)
                        return agent_on_sync_answer(a);
                log_debug("%s: dropping a message while syncing.", agent_name(a));
                return 0;
        case AGENT_WAITING:
                if (!msg) {
                        log_error("%s: malformed reply from the guest agent.", agent_name(a));
                        agent_set_synced(a, false);
                        agent_complete_head(a, -EBADMSG, NULL, NULL, NULL);
                        break;
                }
                if (json_object_object_get_ex(msg, "error", &err)) {
                        if (json_object_object_get_ex(err, "class", &v) && json_object_is_type(v, json_type_string))
                                cls = json_object_get_string(v);
                        if (json_object_object_get_ex(err, "desc", &v) && json_object_is_type(v, json_type_string))
                                desc = json_object_get_string(v);
                        agent_complete_head(a, -QSNAP_E_QEMU_FAILED, NULL, cls, desc);
                } else if (json_object_object_get_ex(msg, "return", &v))
                        agent_complete_head(a, 0, v, NULL, NULL);
                else {
                        log_debug("%s: ignoring a message of unknown kind.", agent_name(a));
                        return 0;
                }
                break;
        }
        return a->fd >= 0 ? agent_process_queue(a) : 0;
}

/* Every complete line; 0xFF bytes (never valid UTF-8 JSON) are skipped. */
static int agent_process_input(Agent *a) {
        size_t start = 0;
        int r;

        while (a->fd >= 0) {
                char *nl;
                size_t n;

                while (start < a->rlen && (unsigned char) a->rbuf[start] == AGENT_SYNC_BYTE)
                        start++;
                nl = memchr(a->rbuf + start, '\n', a->rlen - start);
                if (!nl)
                        break;
                n = nl - (a->rbuf + start);
                /* A 0xFF inside the line: a reset mid-message; keep what follows it. */
                for (char *ff; (ff = memchr(a->rbuf + start, AGENT_SYNC_BYTE, n)); ) {
                        n -= ff + 1 - (a->rbuf + start);
                        start = ff + 1 - a->rbuf;
                }
                if (strspn(a->rbuf + start, " \t\r") < n) {
                        r = agent_dispatch_line(a, a->rbuf + start, n);
                        if (r < 0)
                                return r;
                        if (a->fd < 0)
                                return 0;
                }
                start = nl + 1 - a->rbuf;
        }
        if (a->fd < 0)
                return 0;
        memmove(a->rbuf, a->rbuf + start, a->rlen - start);
        a->rlen -= start;
        if (a->rlen > AGENT_MESSAGE_MAX)
                return log_error_errno(EMSGSIZE, "%s: message from the guest agent too long.", agent_name(a));
        return 0;
}

static int agent_read(Agent *a) {
        ssize_t k;

        if (a->rsize - a->rlen < AGENT_READ_CHUNK) {
                size_t sz = MAX(a->rsize * 2, a->rlen + AGENT_READ_CHUNK);
                char *p = realloc(a->rbuf, sz);
                if (!p)
                        return log_oom();
                a->rbuf = p;
                a->rsize = sz;
        }
        k = recv(a->fd, a->rbuf + a->rlen, a->rsize - a->rlen, MSG_DONTWAIT);
        if (k < 0) {
                if (errno == EAGAIN || errno == EINTR)
                        return 0;
                return log_debug_errno(errno, "%s: failed to read: %m", agent_name(a));
        }
        if (k == 0)
                return -ECONNRESET;
        a->rlen += k;
        return agent_process_input(a);
}

static int agent_write(Agent *a) {
        while (a->wpos < a->wlen) {
                ssize_t k = send(a->fd, a->wbuf + a->wpos, a->wlen - a->wpos, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                break;
                        return log_debug_errno(errno, "%s: failed to write: %m", agent_name(a));
                }
                a->wpos += k;
        }
        if (a->wpos == a->wlen)
                a->wpos = a->wlen = 0;
        return agent_update_io_events(a);
}

static int on_agent_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        _cleanup_(agent_releasep) Agent *a = agent_hold(userdata);
        int r = 0;

        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
                r = agent_read(a);
        if (r >= 0 && a->fd >= 0 && (revents & EPOLLOUT))
                r = agent_write(a);
        if (r < 0)
                agent_disconnect(a, r);
        return 0;
}

int agent_new_from_fd(sd_event *event, int fd, Agent **ret) {
        _cleanup_close_ int owned = fd;
        _cleanup_(agent_unrefp) Agent *a = NULL;
        int r, flags;

        if (!event || fd < 0 || !ret)
                return -EINVAL;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return log_error_errno(errno, "Failed to make the guest agent socket non-blocking: %m");

        a = calloc(1, sizeof(Agent));
        if (!a)
                return log_oom();
        a->n_ref = 1;
        a->fd = -EBADF;
        a->event = sd_event_ref(event);
        r = sd_event_add_io(event, &a->io, fd, EPOLLIN, on_agent_io, a);
        if (r < 0)
                return log_error_errno(r, "Failed to watch the guest agent socket: %m");
        (void) sd_event_source_set_description(a->io, "agent");
        a->fd = TAKE_FD(owned);
        *ret = TAKE_PTR(a);
        return 0;
}

int agent_connect(sd_event *event, const char *path, Agent **ret) {
        _cleanup_close_ int fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Agent *a;
        int r;

        if (!event || !path || !ret)
                return -EINVAL;
        if (strlen(path) >= sizeof(sa.sun_path))
                return log_error_errno(ENAMETOOLONG, "Guest agent socket path too long: %s", path);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return log_error_errno(errno, "Failed to create the guest agent socket: %m");
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return log_debug_errno(errno, "Failed to connect to the guest agent socket %s: %m", path);
        r = agent_new_from_fd(event, TAKE_FD(fd), &a);
        if (r < 0)
                return r;
        (void) agent_set_description(a, path);
        *ret = a;
        return 0;
}

void agent_set_state_callback(Agent *a, agent_state_func_t cb, void *userdata) {
        a->state_cb = cb;
        a->state_userdata = userdata;
}

int agent_set_description(Agent *a, const char *description) {
        return free_and_strdup(&a->description, description);
}

bool agent_is_connected(Agent *a) {
        return a && a->fd >= 0;
}

bool agent_is_synced(Agent *a) {
        return a && a->synced;
}

static int64_t agent_queue(Agent *a, char *line, uint64_t timeout_usec, agent_reply_func_t cb, void *userdata) {
        _cleanup_free_ char *l = line;
        AgentRequest *r;
        int k;

        if (a->fd < 0)
                return -ENOTCONN;
        /* A probe alone on the wire: the command takes over its sync, so
         * that it never waits a whole timeout behind it. */
        r = a->requests;
        if (r && !r->next && !r->line && !r->cb && a->phase == AGENT_SYNCING && l) {
                r->id = ++a->last_id;
                r->line = TAKE_PTR(l);
                r->timeout_usec = timeout_usec ?: AGENT_TIMEOUT_DEFAULT_USEC;
                r->cb = cb;
                r->userdata = userdata;
                k = agent_arm_timer(a, r->timeout_usec);
                if (k < 0) {
                        r->cb = NULL;
                        return k;
                }
                return r->id;
        }
        r = calloc(1, sizeof(AgentRequest));
        if (!r)
                return -ENOMEM;
        r->id = ++a->last_id;
        r->line = TAKE_PTR(l);
        r->timeout_usec = timeout_usec ?: AGENT_TIMEOUT_DEFAULT_USEC;
        r->cb = cb;
        r->userdata = userdata;
        if (a->requests_tail)
                a->requests_tail->next = r;
        else
                a->requests = r;
        a->requests_tail = r;

        k = agent_process_queue(a);
        if (k < 0) {
                /* Only the head can have failed to go out; it is this one. */
                a->requests = a->requests_tail = NULL;
                a->phase = AGENT_IDLE;
                agent_request_free(r);
                return k;
        }
        return r->id;
}

int agent_probe(Agent *a, uint64_t timeout_usec) {
        int64_t r;

        if (!a)
                return -EINVAL;
        if (a->requests)
                return 0;
        r = agent_queue(a, NULL, timeout_usec, NULL, NULL);
        return r < 0 ? (int) r : 0;
}

int64_t agent_send(Agent *a, const char *command, json_object *args, uint64_t timeout_usec, agent_reply_func_t cb,
                   void *userdata) {
        _cleanup_(json_object_putp) json_object *cmd = NULL, *owned = args;
        const char *s;
        char *line;

        if (!a || !command)
                return -EINVAL;
        cmd = json_object_new_object();
        if (!cmd || json_object_object_add(cmd, "execute", json_object_new_string(command)) < 0)
                return -ENOMEM;
        if (owned && json_object_object_add(cmd, "arguments", TAKE_PTR(owned)) < 0)
                return -ENOMEM;
        s = json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        line = s ? strjoin(s, "\n") : NULL;
        if (!line)
                return -ENOMEM;
        return agent_queue(a, line, timeout_usec, cb, userdata);
}

int agent_cancel(Agent *a, int64_t id) {
        AgentRequest *prev = NULL;

        if (!a)
                return -EINVAL;
        for (AgentRequest *r = a->requests; r; prev = r, r = r->next) {
                if (r->id != id)
                        continue;
                if (r == a->requests && a->phase != AGENT_IDLE) {
                        /* On the wire: let it run out, reply dropped. */
                        r->cb = NULL;
                        return 0;
                }
                if (prev)
                        prev->next = r->next;
                else
                        a->requests = r->next;
                if (a->requests_tail == r)
                        a->requests_tail = prev;
                agent_request_free(r);
                return 0;
        }
        return -ENOENT;
}
