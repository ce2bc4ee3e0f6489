/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP client (qmp.c) and the reply/event parsers of qmp-commands.c on
 * bytes that arrive on the monitor socket as if QEMU sent them. Per input:
 * a socketpair, a Qmp on one end with commands queued before the greeting
 * (held until qmp_capabilities is answered; they get ids 1-9, 8 is
 * cancelled, and qmp_capabilities gets id 10), every event parsed; the
 * input is written to the other end in two halves, then the write side is
 * shut, so the client always ends with a disconnect.
 *
 * Invariants: every command that was not cancelled gets its callback
 * exactly once (a reply or -ECONNRESET); the ready callback runs at most
 * once; nothing leaks.
 */
#include <fcntl.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "qemu/qmp-commands.h"
#include "qemu/qmp.h"
#include "util/error.h"
#include "util/util.h"

typedef enum Kind {
        KIND_STATUS,
        KIND_BLOCK,
        KIND_JOBS,
        KIND_BLOCK_JOBS,
        KIND_NODES,
        KIND_MIGRATE,
        KIND_HMP,
        KIND_RAW,
        KIND_FOLLOW_UP, /* sent from inside a reply callback */
        _KIND_MAX,
} Kind;

typedef struct State {
        unsigned calls[_KIND_MAX];
        unsigned ready_calls;
        bool disconnected, closed, follow_up_sent;
        Qmp *qmp;
} State;

typedef struct Cookie {
        State *state;
        Kind kind;
} Cookie;

static Cookie cookies[_KIND_MAX];

static void parse_result(Kind kind, json_object *result) {
        switch (kind) {
        case KIND_STATUS:
        case KIND_FOLLOW_UP: {
                QmpRunState state;
                char *text = NULL;
                if (qmp_parse_query_status(result, &state, &text) >= 0) {
                        FUZZ_CHECK(state >= 0 && state < _QMP_RUN_STATE_MAX);
                        free(text);
                }
                break;
        }
        case KIND_BLOCK: {
                QmpBlockInfo *infos = NULL;
                size_t n = 0;
                if (qmp_parse_query_block(result, &infos, &n) >= 0)
                        qmp_block_info_free_many(infos, n);
                break;
        }
        case KIND_JOBS: {
                QmpJobInfo *infos = NULL, one;
                size_t n = 0;
                if (qmp_parse_query_jobs_all(result, &infos, &n) >= 0) {
                        for (size_t i = 0; i < n; i++)
                                FUZZ_CHECK(infos[i].id && infos[i].status);
                        free(infos);
                }
                (void) qmp_parse_query_jobs(result, "pull-vda-1", &one);
                break;
        }
        case KIND_BLOCK_JOBS: {
                QmpBlockJobInfo *infos = NULL;
                size_t n = 0;
                if (qmp_parse_query_block_jobs(result, &infos, &n) >= 0)
                        free(infos);
                break;
        }
        case KIND_NODES: {
                const char *node;
                if (json_object_is_type(result, json_type_array))
                        for (size_t i = 0; i < json_object_array_length(result); i++) {
                                char *f = NULL;
                                if (qmp_node_file(json_object_array_get_idx(result, i), &f) >= 0) {
                                        FUZZ_CHECK(f);
                                        free(f);
                                }
                        }
                if (qmp_find_format_node(result, "/i/a.qcow2", &node) > 0)
                        FUZZ_CHECK(node);
                break;
        }
        case KIND_MIGRATE: {
                const char *status, *error;
                (void) qmp_parse_query_migrate(result, &status, &error);
                break;
        }
        case KIND_HMP: {
                const char *s;
                (void) qmp_parse_string(result, &s);
                break;
        }
        case KIND_RAW:
                FUZZ_CHECK(json_object_is_type(result, json_type_object));
                FUZZ_CHECK(json_object_to_json_string(result));
                break;
        case _KIND_MAX:
                abort();
        }
}

static void on_reply(Qmp *q, int error, json_object *result, const char *err_class, const char *err_desc,
                     void *userdata) {
        Cookie *c = userdata;
        State *s = c->state;

        s->calls[c->kind]++;
        FUZZ_CHECK(s->calls[c->kind] == 1);
        if (error == -QSNAP_E_QEMU_FAILED) {
                FUZZ_CHECK(err_class && err_desc);
                return;
        }
        if (error < 0) {
                FUZZ_CHECK(error == -ECONNRESET);
                return;
        }
        FUZZ_CHECK(error == 0);
        parse_result(c->kind, result);
        /* A callback may send: the follow-up must also be answered once. */
        if (c->kind == KIND_STATUS && !s->follow_up_sent && qmp_is_connected(q)) {
                FUZZ_CHECK(qmp_cmd_query_status(q, on_reply, &cookies[KIND_FOLLOW_UP]) > 0);
                s->follow_up_sent = true;
        }
}

static void on_event(Qmp *q, const char *event, json_object *data, uint64_t timestamp, void *userdata) {
        State *s = userdata;
        QmpBlockJobEvent e;
        const char *a, *b;

        FUZZ_CHECK(event);
        (void) qmp_parse_block_job_event(data, &e);
        (void) qmp_parse_job_status_change(data, &a, &b);
        (void) qmp_parse_migration_event(data, &a);
        /* The owner may drop the connection from inside a callback. */
        if (streq(event, "SHUTDOWN")) {
                qmp_close(q);
                s->closed = true;
        }
}

static void on_ready(Qmp *q, int error, void *userdata) {
        State *s = userdata;

        s->ready_calls++;
        FUZZ_CHECK(s->ready_calls == 1);
}

static void on_disconnect(Qmp *q, int error, void *userdata) {
        State *s = userdata;

        FUZZ_CHECK(error < 0);
        FUZZ_CHECK(!s->disconnected);
        s->disconnected = true;
}

static void run_until_idle(sd_event *e, State *s) {
        for (unsigned i = 0; i < 64 && !s->disconnected && !s->closed; i++) {
                int r = sd_event_run(e, 0);
                FUZZ_CHECK(r >= 0);
                if (r == 0)
                        break;
        }
}

static void write_all(sd_event *e, State *s, int fd, const uint8_t *p, size_t n) {
        while (n > 0 && !s->disconnected && !s->closed) {
                ssize_t k = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (k < 0) {
                        FUZZ_CHECK(errno == EAGAIN || errno == EINTR);
                        FUZZ_CHECK(sd_event_run(e, 100 * USEC_PER_MSEC) >= 0);
                        continue;
                }
                p += k;
                n -= (size_t) k;
                run_until_idle(e, s);
        }
}

FUZZ_TARGET(qmp) {
        static sd_event *e;
        State s = {};
        Qmp *q = NULL;
        int fds[2], id, r;
        int64_t cancelled;
        json_object *raw;

        fuzz_setup();
        if (!e)
                FUZZ_CHECK(sd_event_new(&e) >= 0);
        for (Kind k = 0; k < _KIND_MAX; k++)
                cookies[k] = (Cookie) { .state = &s, .kind = k };

        FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
        FUZZ_CHECK(qmp_new_from_fd(e, fds[0], &q) == 0);
        s.qmp = q;
        qmp_set_ready_callback(q, on_ready, &s);
        qmp_set_disconnect_callback(q, on_disconnect, &s);
        FUZZ_CHECK(qmp_subscribe(q, NULL, on_event, &s) > 0);
        id = qmp_subscribe(q, "BLOCK_JOB_COMPLETED", on_event, &s);
        FUZZ_CHECK(id > 0);

        FUZZ_CHECK(qmp_cmd_query_status(q, on_reply, &cookies[KIND_STATUS]) == 1);
        FUZZ_CHECK(qmp_cmd_query_block(q, on_reply, &cookies[KIND_BLOCK]) == 2);
        FUZZ_CHECK(qmp_cmd_query_jobs(q, on_reply, &cookies[KIND_JOBS]) == 3);
        FUZZ_CHECK(qmp_cmd_query_block_jobs(q, on_reply, &cookies[KIND_BLOCK_JOBS]) == 4);
        FUZZ_CHECK(qmp_cmd_query_named_block_nodes(q, on_reply, &cookies[KIND_NODES]) == 5);
        FUZZ_CHECK(qmp_cmd_query_migrate(q, on_reply, &cookies[KIND_MIGRATE]) == 6);
        FUZZ_CHECK(qmp_cmd_human_monitor_command(q, "info status", on_reply, &cookies[KIND_HMP]) == 7);
        raw = json_tokener_parse("{\"execute\":\"query-version\",\"id\":\"mine\"}");
        FUZZ_CHECK(raw);
        cancelled = qmp_send_raw(q, raw, on_reply, &cookies[KIND_RAW]);
        FUZZ_CHECK(cancelled == 8);
        FUZZ_CHECK(qmp_cancel(q, cancelled) == 0);
        /* A raw command that stays: its reply keeps the caller's id. */
        raw = json_tokener_parse("{\"execute\":\"query-version\",\"id\":[1]}");
        FUZZ_CHECK(raw);
        FUZZ_CHECK(qmp_send_raw(q, raw, on_reply, &cookies[KIND_RAW]) == 9);

        write_all(e, &s, fds[1], data, size / 2);
        if (!s.closed && !s.disconnected)
                FUZZ_CHECK(qmp_unsubscribe(q, id) == 0);
        write_all(e, &s, fds[1], data + size / 2, size - size / 2);
        FUZZ_CHECK(shutdown(fds[1], SHUT_WR) == 0);
        for (unsigned i = 0; i < 1000 && !s.disconnected && !s.closed; i++) {
                r = sd_event_run(e, 1 * USEC_PER_SEC);
                FUZZ_CHECK(r > 0);
        }
        FUZZ_CHECK(s.disconnected || s.closed);
        FUZZ_CHECK(!qmp_is_connected(q));

        /* Exactly once each; the cancelled command never. */
        for (Kind k = 0; k < _KIND_MAX; k++)
                FUZZ_CHECK(s.calls[k] == (k == KIND_FOLLOW_UP ? (unsigned) s.follow_up_sent : 1U));
        qmp_unref(q);
        safe_close(fds[1]);
        return 0;
}
