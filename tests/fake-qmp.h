/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A scripted fake QEMU for the C unit tests: the other end of a
 * socketpair(), driven by the test's sd-event loop (`event`), that checks
 * each line the code under test sends (exact JSON apart from "id") and
 * answers with the bytes the test chooses. Callbacks of the code under
 * test append lines to a record that the tests compare in order, so
 * "exactly once" and "never after cancel" are checked, not assumed.
 * A failed check here ends the test at once: the script cannot go on.
 */
#pragma once

#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/param.h>
#include <sys/socket.h>

#include <systemd/sd-event.h>

#include "util/error.h"
#include "util/util.h"

/* QEMU 7.2's greeting, word for word. */
#define GREETING                                                                                            \
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": "     \
        "\"Debian 1:7.2+dfsg-7+deb12u7\"}, \"capabilities\": [\"oob\"]}}\r\n"

#define check(expr)                                                                              \
        do {                                                                                     \
                if (!(expr)) {                                                                   \
                        fprintf(stderr, "%s:%i: check failed: %s\n", __FILE__, __LINE__, #expr); \
                        exit(EXIT_FAILURE);                                                      \
                }                                                                                \
        } while (0)

static sd_event *event;

/* ---- the record of callbacks ---- */

static char *records[256];
static size_t n_records;

static void record(const char *fmt, ...) _printf_(1, 2);
static void record(const char *fmt, ...) {
        va_list ap;

        check(n_records < ELEMENTSOF(records));
        va_start(ap, fmt);
        check(vasprintf(&records[n_records++], fmt, ap) >= 0);
        va_end(ap);
}

#define expect_record(s) expect_record_at(__LINE__, s)
static inline void expect_record_at(int line, const char *s) {
        if (n_records == 0 || !streq(records[0], s)) {
                fprintf(stderr, "line %i: expected record \"%s\", got \"%s\"\n", line, s,
                        n_records > 0 ? records[0] : "(none)");
                for (size_t i = 1; i < n_records; i++)
                        fprintf(stderr, "  then \"%s\"\n", records[i]);
                exit(EXIT_FAILURE);
        }
        free(records[0]);
        memmove(records, records + 1, --n_records * sizeof(char *));
}

#define expect_no_record() expect_no_record_at(__LINE__)
static inline void expect_no_record_at(int line) {
        if (n_records > 0) {
                fprintf(stderr, "line %i: expected no record, got \"%s\"\n", line, records[0]);
                exit(EXIT_FAILURE);
        }
}

/* An error as the record spells it: "-EIO", or a named one "-QemuFailed". */
static inline const char *errname(int error) {
        static char named[64];

        if (qsnap_error_is_named(error)) {
                snprintf(named, sizeof(named), "-%s", qsnap_error_to_string(error));
                return named;
        }
        switch (-error) {
        case 0: return "0";
        case EIO: return "-EIO";
        case ECONNRESET: return "-ECONNRESET";
        case EBADMSG: return "-EBADMSG";
        case EMSGSIZE: return "-EMSGSIZE";
        case EPROTO: return "-EPROTO";
        case EPIPE: return "-EPIPE";
        case ECANCELED: return "-ECANCELED";
        case ETIMEDOUT: return "-ETIMEDOUT";
        default: return "-E?";
        }
}

/* ---- the event loop ---- */

/* Runs the loop until nothing is ready (timers in the future wait). */
static inline void drain(void) {
        for (int i = 0; i < 10000; i++) {
                int r = sd_event_run(event, 0);
                check(r >= 0);
                if (r == 0)
                        return;
        }
        check(!"event loop never went idle");
}

/* ---- the peer ---- */

#define PEER_BUF_SIZE (8U * 1024U * 1024U)

typedef struct Peer {
        int fd;
        sd_event_source *io;
        char *buf; /* PEER_BUF_SIZE */
        size_t len;
        bool eof;
} Peer;

static inline int peer_on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Peer *p = userdata;
        ssize_t k;

        check(p->len < PEER_BUF_SIZE);
        k = read(fd, p->buf + p->len, PEER_BUF_SIZE - p->len);
        if (k < 0 && errno == EAGAIN)
                return 0;
        if (k <= 0) {
                p->eof = true;
                return sd_event_source_set_enabled(s, SD_EVENT_OFF);
        }
        p->len += k;
        return 0;
}

/* A socketpair: *ret_fd is the end for the code under test, p the other. */
static inline void peer_open(Peer *p, int *ret_fd) {
        int fds[2];

        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) >= 0);
        *p = (Peer) { .fd = fds[1], .buf = malloc(PEER_BUF_SIZE) };
        check(p->buf);
        check(sd_event_add_io(event, &p->io, p->fd, EPOLLIN, peer_on_io, p) >= 0);
        *ret_fd = fds[0];
}

static inline void peer_close(Peer *p) {
        p->io = sd_event_source_disable_unref(p->io);
        p->fd = safe_close(p->fd);
        free(p->buf);
        p->buf = NULL;
}

/* Sends bytes as they are, then lets the other side react. */
static inline void peer_write(Peer *p, const void *data, size_t n) {
        const char *s = data;

        while (n > 0) {
                /* MSG_NOSIGNAL: the client may hang up on purpose. */
                ssize_t k = send(p->fd, s, n, MSG_NOSIGNAL);
                if (k < 0 && (errno == EPIPE || errno == ECONNRESET))
                        break;
                if (k < 0) {
                        check(errno == EAGAIN);
                        check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
                        continue;
                }
                s += k;
                n -= (size_t) k;
        }
        drain();
}

static void peer_say(Peer *p, const char *fmt, ...) _printf_(2, 3);
static void peer_say(Peer *p, const char *fmt, ...) {
        _cleanup_free_ char *s = NULL;
        va_list ap;

        va_start(ap, fmt);
        check(vasprintf(&s, fmt, ap) >= 0);
        va_end(ap);
        peer_write(p, s, strlen(s));
}

static inline bool peer_has_line(Peer *p) {
        return memchr(p->buf, '\n', p->len);
}

/* Waits (up to 10 s) for the next line sent to the peer, compares it with
 * `expected` apart from "id" (which must be an integer) and returns that id. */
#define peer_expect(p, expected) peer_expect_at(__LINE__, p, expected)
static inline int64_t peer_expect_at(int line, Peer *p, const char *expected) {
        json_object *got, *want, *id;
        char *nl = NULL;
        int64_t r;

        for (int i = 0; i < 1000 && !(nl = memchr(p->buf, '\n', p->len)); i++)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        if (!nl) {
                fprintf(stderr, "line %i: nothing sent, expected %.300s\n", line, expected);
                exit(EXIT_FAILURE);
        }
        *nl = '\0';
        got = json_tokener_parse(p->buf);
        want = json_tokener_parse(expected);
        check(want);
        if (!got || !json_object_object_get_ex(got, "id", &id) || !json_object_is_type(id, json_type_int)) {
                fprintf(stderr, "line %i: sent a line without an integer id: %.300s\n", line, p->buf);
                exit(EXIT_FAILURE);
        }
        r = json_object_get_int64(id);
        json_object_object_del(got, "id");
        if (!json_object_equal(got, want)) {
                fprintf(stderr, "line %i: expected %.300s, got %.300s\n", line, expected, p->buf);
                exit(EXIT_FAILURE);
        }
        json_object_put(got);
        json_object_put(want);
        p->len -= nl + 1 - p->buf;
        memmove(p->buf, nl + 1, p->len);
        return r;
}

#define peer_expect_nothing(p) peer_expect_nothing_at(__LINE__, p)
static inline void peer_expect_nothing_at(int line, Peer *p) {
        drain();
        if (p->len > 0) {
                fprintf(stderr, "line %i: expected silence, got: %.*s\n", line, (int) MIN(p->len, 300U), p->buf);
                exit(EXIT_FAILURE);
        }
}
