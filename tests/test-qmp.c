/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QMP client against a scripted fake QEMU on the other end of a
 * socketpair(), both driven by one sd-event loop: the peer checks each
 * line we send and answers with bytes chosen to hit the faults a real
 * QEMU rarely shows. Every callback appends a line to a record, and the
 * tests compare the record in order, so "exactly once" and "never after
 * cancel" are checked, not assumed. Ends with a smoke test against a real
 * qemu-system-x86_64 (its absence is a failure, not a skip).
 */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/param.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "qemu/qmp-commands.h"
#include "qemu/qmp.h"
#include "util/util.h"

#include "fake-qmp.h"
#include "real-qemu.h"

static bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

static const char *json_text(json_object *o) {
        return o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : "NULL";
}

/* userdata: a tag naming the command in the record */
static void on_reply(Qmp *q, int error, json_object *result, const char *err_class, const char *err_desc, void *userdata) {
        if (error == -QSNAP_E_QEMU_FAILED)
                record("%s -QemuFailed %s: %s", (const char *) userdata, err_class, err_desc);
        else if (error < 0)
                record("%s %s", (const char *) userdata, errname(error));
        else
                record("%s 0 %s", (const char *) userdata, json_text(result));
}

static void on_event(Qmp *q, const char *name, json_object *data, uint64_t ts, void *userdata) {
        record("%s %s %s %" PRIu64, (const char *) userdata, name, json_text(data), ts);
}

static void on_ready(Qmp *q, int error, void *userdata) {
        record("ready %s", errname(error));
}

static void on_disconnect(Qmp *q, int error, void *userdata) {
        record("disconnect %s", errname(error));
}

/* Runs the loop until *flag or 10 s passed. */
static void run_until(const bool *flag) {
        for (int i = 0; i < 1000 && !*flag; i++)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        check(*flag);
}

static Qmp *setup(Peer *p) {
        Qmp *q;
        int fd;

        peer_open(p, &fd);
        check(qmp_new_from_fd(event, fd, &q) >= 0);
        check(qmp_set_description(q, "test") >= 0);
        qmp_set_ready_callback(q, on_ready, NULL);
        qmp_set_disconnect_callback(q, on_disconnect, NULL);
        return q;
}

/* Greeting and capabilities, as QEMU 7.2 says them. */
static void handshake(Qmp *q, Peer *p) {
        int64_t id;

        peer_say(p, GREETING);
        id = peer_expect(p, "{\"execute\":\"qmp_capabilities\"}");
        check(!qmp_is_ready(q));
        peer_say(p, "{\"return\": {}, \"id\": %" PRIi64 "}\r\n", id);
        expect_record("ready 0");
        check(qmp_is_ready(q));
}

static void teardown(Qmp *q, Peer *p) {
        qmp_unref(q);
        peer_close(p);
        drain();
        expect_no_record();
}

/* ---- the tests ---- */

static void test_capabilities_gate(void) {
        Peer p;
        Qmp *q = setup(&p);
        int64_t a, b, c, caps, id;

        printf("commands sent before the greeting wait for qmp_capabilities\n");
        check(qmp_is_connected(q) && !qmp_is_ready(q));
        a = qmp_cmd_query_status(q, on_reply, "a");
        b = qmp_cmd_stop(q, on_reply, "b");
        c = qmp_cmd_cont(q, on_reply, "c");
        check(a == 1 && b == 2 && c == 3);
        check(qmp_cancel(q, b) == 0); /* held, so never sent at all */
        peer_expect_nothing(&p);

        peer_say(&p, GREETING);
        caps = peer_expect(&p, "{\"execute\":\"qmp_capabilities\"}");
        check(caps > c);
        check(qmp_cancel(q, caps) == -ENOENT); /* ours, not the caller's */
        peer_expect_nothing(&p); /* still held until the capabilities reply */
        /* A reply to a command not sent yet is bogus. */
        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 "}\n", a);
        expect_no_record();
        check(qmp_cmd_query_block(q, on_reply, "d") == caps + 1);

        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 "}\n", caps);
        expect_record("ready 0");
        check(peer_expect(&p, "{\"execute\":\"query-status\"}") == a);
        check(peer_expect(&p, "{\"execute\":\"cont\"}") == c);
        check(peer_expect(&p, "{\"execute\":\"query-block\"}") == caps + 1);
        id = qmp_cmd_system_powerdown(q, on_reply, "e");
        check(peer_expect(&p, "{\"execute\":\"system_powerdown\"}") == id);
        peer_expect_nothing(&p);

        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 "}\n", id);
        expect_record("e 0 {}");
        qmp_close(q);
        expect_record("a -ECONNRESET");
        expect_record("c -ECONNRESET");
        expect_record("d -ECONNRESET");
        teardown(q, &p);
}

static void test_capabilities_refused(void) {
        Peer p;
        Qmp *q = setup(&p);
        int64_t id;

        printf("a failed qmp_capabilities fails the connection\n");
        qmp_cmd_query_status(q, on_reply, "a");
        peer_say(&p, GREETING);
        id = peer_expect(&p, "{\"execute\":\"qmp_capabilities\"}");
        peer_say(&p, "{\"id\": %" PRIi64 ", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"x\"}}\n", id);
        expect_record("a -ECONNRESET");
        expect_record("ready -EPROTO");
        expect_record("disconnect -EPROTO");
        check(!qmp_is_connected(q));
        peer_expect_nothing(&p);
        teardown(q, &p);
}

static void test_routing(void) {
        Peer p;
        Qmp *q = setup(&p);
        int64_t a, b, c;

        printf("replies are routed by id, out of order; errors carry class and desc; "
               "qmp_changes() counts all but query-*\n");
        handshake(q, &p);
        check(qmp_changes(q) == 0); /* qmp_capabilities changes nothing */
        a = qmp_cmd_query_status(q, on_reply, "a");
        check(peer_expect(&p, "{\"execute\":\"query-status\"}") == a);
        check(qmp_changes(q) == 0);
        b = qmp_cmd_human_monitor_command(q, "info status", on_reply, "b");
        check(peer_expect(&p, "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info status\"}}") == b);
        check(qmp_changes(q) == 1); /* HMP may do anything */
        c = qmp_send(q, "blockdev-del", json_tokener_parse("{\"node-name\":\"nope\"}"), on_reply, "c");
        check(peer_expect(&p, "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"nope\"}}") == c);
        check(a < b && b < c);
        check(qmp_changes(q) == 2);
        check(qmp_changes(NULL) == 0);

        peer_say(&p, "{\"return\": \"VM status: paused\\r\\n\", \"id\": %" PRIi64 "}\n", b);
        peer_say(&p, "{\"id\": %" PRIi64 ", \"error\": {\"class\": \"GenericError\", \"desc\": "
                     "\"Failed to find node with node-name='nope'\"}}\n", c);
        peer_say(&p, "{\"return\": {\"status\": \"running\", \"singlestep\": false, \"running\": true}, "
                     "\"id\": %" PRIi64 "}\n", a);
        expect_record("b 0 \"VM status: paused\\r\\n\"");
        expect_record("c -QemuFailed GenericError: Failed to find node with node-name='nope'");
        expect_record("a 0 {\"status\":\"running\",\"singlestep\":false,\"running\":true}");
        expect_no_record();
        teardown(q, &p);
}

static void test_framing(void) {
        static const char split[] = "{\"return\": \"h\xc3\xa9 \xe2\x9c\x93\", \"id\": 2}\n";
        Peer p;
        Qmp *q = setup(&p);
        int64_t a, b;
        size_t cut;

        printf("replies split across reads (also inside UTF-8), several in one read\n");
        handshake(q, &p);

        a = qmp_cmd_human_monitor_command(q, "info name", on_reply, "a");
        check(a == 2);
        peer_expect(&p, "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info name\"}}");
        cut = strchr(split, '\x9c') - split; /* between the 1st and 2nd byte of ✓ */
        peer_write(&p, split, cut);
        expect_no_record();
        peer_write(&p, split + cut, 3);
        expect_no_record();
        peer_write(&p, split + cut + 3, strlen(split) - cut - 3);
        expect_record("a 0 \"h\xc3\xa9 \xe2\x9c\x93\"");

        a = qmp_cmd_stop(q, on_reply, "a");
        b = qmp_cmd_cont(q, on_reply, "b");
        peer_expect(&p, "{\"execute\":\"stop\"}");
        peer_expect(&p, "{\"execute\":\"cont\"}");
        check(qmp_subscribe(q, NULL, on_event, "all") > 0);
        /* Two replies, an event and half of the next event in one write;
         * blank lines are allowed. */
        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 "}\n\r\n"
                     "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 123456}, \"event\": \"STOP\"}\n"
                     "{\"return\": {}, \"id\": %" PRIi64 "}\n{\"timestamp\": {\"seconds\": 1,",
                 a, b);
        expect_record("a 0 {}");
        expect_record("all STOP NULL 1700000000123456");
        expect_record("b 0 {}");
        expect_no_record();
        peer_say(&p, " \"microseconds\": 2}, \"event\": \"RESUME\"}\n");
        expect_record("all RESUME NULL 1000002");

        /* 100 backing files deep, as query-block nests them; json-c's
         * default depth limit is 32. */
        a = qmp_cmd_query_block(q, on_reply, "deep");
        peer_expect(&p, "{\"execute\":\"query-block\"}");
        peer_say(&p, "{\"id\": %" PRIi64 ", \"return\": ", a);
        for (int i = 0; i < 100; i++)
                peer_say(&p, "{\"backing-image\": ");
        peer_say(&p, "{}");
        for (int i = 0; i < 100; i++)
                peer_say(&p, "}");
        expect_no_record();
        peer_say(&p, "}\n");
        check(n_records == 1 && startswith(records[0], "deep 0 {\"backing-image\":{\"backing-image\":"));
        expect_record(records[0]);

        /* 4 MiB out: far more than the socket buffer takes at once. */
        {
                const size_t n = 4 * 1024 * 1024;
                _cleanup_free_ char *big = malloc(n + 1), *expected = NULL;

                check(big);
                memset(big, 'x', n);
                big[n] = '\0';
                a = qmp_cmd_human_monitor_command(q, big, on_reply, "big");
                check(a > 0);
                check(asprintf(&expected, "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"%s\"}}", big) > 0);
                check(peer_expect(&p, expected) == a);
                peer_say(&p, "{\"return\": \"\", \"id\": %" PRIi64 "}\n", a);
                expect_record("big 0 \"\"");
        }
        teardown(q, &p);
}

static void test_unknown(void) {
        Peer p;
        Qmp *q = setup(&p);
        int64_t a;

        printf("unknown events and keys are ignored, replies to ids we did not send dropped\n");
        handshake(q, &p);
        check(qmp_subscribe(q, "SHUTDOWN", on_event, "shutdown") > 0);
        check(qmp_subscribe(q, NULL, on_event, "all") > 0);

        a = qmp_cmd_quit(q, on_reply, "a");
        peer_expect(&p, "{\"execute\":\"quit\"}");
        peer_say(&p, "{\"event\": \"FUTURE_THING\", \"data\": {\"x\": [1, 2]}, \"new-key\": true, "
                     "\"timestamp\": {\"seconds\": 2, \"microseconds\": 0}}\n");
        expect_record("all FUTURE_THING {\"x\":[1,2]} 2000000");
        peer_say(&p, "{\"return\": {}, \"id\": 999}\n"               /* never sent */
                     "{\"return\": {}, \"id\": \"%" PRIi64 "\"}\n"   /* a string */
                     "{\"return\": {}, \"id\": %" PRIi64 ".0}\n"     /* a double */
                     "{\"return\": {}}\n"                            /* none */
                     "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\n"
                     "{\"something\": \"else\", \"id\": %" PRIi64 "}\n",
                 a, a, a);
        expect_no_record();
        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 ", \"extra\": {\"k\": 1}}\n"
                     "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": false, \"reason\": \"host-qmp-quit\"}, "
                     "\"timestamp\": {\"seconds\": 3, \"microseconds\": 4}}\n",
                 a);
        expect_record("a 0 {}");
        expect_record("shutdown SHUTDOWN {\"guest\":false,\"reason\":\"host-qmp-quit\"} 3000004");
        expect_record("all SHUTDOWN {\"guest\":false,\"reason\":\"host-qmp-quit\"} 3000004");
        check(qmp_is_connected(q));
        teardown(q, &p);
}

static void test_cancel(void) {
        Peer p;
        Qmp *q = setup(&p);
        int64_t a, b;
        int s;

        printf("a cancelled command's callback never runs; unsubscribe\n");
        handshake(q, &p);
        a = qmp_cmd_stop(q, on_reply, "a");
        b = qmp_cmd_cont(q, on_reply, "b");
        peer_expect(&p, "{\"execute\":\"stop\"}");
        peer_expect(&p, "{\"execute\":\"cont\"}");
        check(qmp_cancel(q, a) == 0);
        check(qmp_cancel(q, a) == -ENOENT);
        check(qmp_cancel(q, 12345) == -ENOENT);
        check(qmp_cancel(q, 1) == -ENOENT); /* qmp_capabilities is ours */
        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 "}\n{\"return\": {}, \"id\": %" PRIi64 "}\n", a, b);
        expect_record("b 0 {}");
        expect_no_record();

        s = qmp_subscribe(q, "STOP", on_event, "stop");
        check(s > 0);
        check(qmp_unsubscribe(q, s) == 0);
        check(qmp_unsubscribe(q, s) == -ENOENT);
        peer_say(&p, "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n");
        expect_no_record();

        qmp_cmd_stop(q, on_reply, "c");
        check(qmp_cancel(q, qmp_cmd_cont(q, on_reply, "d")) == 0);
        peer_close(&p);
        drain();
        expect_record("c -ECONNRESET"); /* d was cancelled: nothing */
        expect_record("disconnect -ECONNRESET");
        teardown(q, &p);
}

static void test_disconnect(void) {
        Peer p;
        Qmp *q = setup(&p);

        printf("disconnect mid-command: every pending reply fails once, then the disconnect callback\n");
        handshake(q, &p);
        qmp_cmd_stop(q, on_reply, "a");
        qmp_cmd_query_block(q, on_reply, "b");
        peer_expect(&p, "{\"execute\":\"stop\"}");
        peer_say(&p, "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n"
                     "{\"return\": {}, \"id\": 2}\n{\"return\": [], \"id\""); /* b half answered */
        expect_record("a 0 {}");
        peer_close(&p);
        drain();
        expect_record("b -ECONNRESET");
        expect_record("disconnect -ECONNRESET");
        check(!qmp_is_connected(q) && !qmp_is_ready(q));
        check(qmp_cmd_cont(q, on_reply, "c") == -ENOTCONN);
        check(qmp_send(q, "cont", json_object_new_object(), on_reply, "c") == -ENOTCONN); /* args not leaked */
        qmp_close(q);
        drain();
        teardown(q, &p);

        printf("a write error (peer stopped reading) disconnects, without SIGPIPE\n");
        q = setup(&p);
        handshake(q, &p);
        check(shutdown(p.fd, SHUT_RD) >= 0);
        qmp_cmd_stop(q, on_reply, "a");
        drain();
        expect_record("a -ECONNRESET");
        expect_record("disconnect -EPIPE");
        teardown(q, &p);

        printf("disconnect before the greeting is a failed negotiation\n");
        q = setup(&p);
        qmp_cmd_stop(q, on_reply, "a");
        peer_say(&p, "{\"QMP\": {\"vers");
        peer_close(&p);
        drain();
        expect_record("a -ECONNRESET");
        expect_record("ready -ECONNRESET");
        expect_record("disconnect -ECONNRESET");
        teardown(q, &p);

        printf("a reply and an event meant for the previous client before the greeting are dropped\n");
        q = setup(&p);
        peer_say(&p, "{\"return\": \"vda-fmt\", \"id\": 5}\n");
        peer_say(&p, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\n");
        handshake(q, &p);
        teardown(q, &p);

        printf("something else than a greeting first\n");
        q = setup(&p);
        peer_say(&p, "{\"hello\": {}}\n");
        expect_record("ready -EPROTO");
        expect_record("disconnect -EPROTO");
        teardown(q, &p);
}

static void test_malformed(void) {
#define BAD(s) { s, sizeof(s) - 1 }
        static const struct {
                const char *data;
                size_t size;
        } bad[] = {
                BAD("{\"return\": {}, \"id\": 2\n"),                   /* cut short */
                BAD("{\"return\": {}, \"id\": 2} trailing\n"),         /* garbage after */
                BAD("{\"return\": {}, \"id\": 2}\0junk\n"),            /* json-c stops at NUL */
                BAD("{\"return\": \"\xff\xfe\", \"id\": 2}\n"),        /* not UTF-8 */
                BAD("[1, 2, 3]\n"),                                    /* not an object */
                BAD("{\"return\": {}, \"id\": 2}{\"return\": {}}\n"),  /* two on one line */
        };
#undef BAD

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                Peer p;
                Qmp *q = setup(&p);

                printf("malformed JSON #%zu disconnects with -EBADMSG\n", i);
                handshake(q, &p);
                qmp_cmd_stop(q, on_reply, "a");
                qmp_cmd_cont(q, on_reply, "b");
                peer_write(&p, bad[i].data, bad[i].size);
                expect_record("a -ECONNRESET");
                expect_record("b -ECONNRESET");
                expect_record("disconnect -EBADMSG");
                check(!qmp_is_connected(q));
                teardown(q, &p);
        }
}

static void test_oversize(void) {
        const size_t n = 16 * 1024 * 1024 + 4096;
        _cleanup_free_ char *big = malloc(n);
        Peer p;
        Qmp *q = setup(&p);

        printf("a message over 16 MiB disconnects with -EMSGSIZE\n");
        check(big);
        handshake(q, &p);
        qmp_cmd_query_block(q, on_reply, "a");
        memset(big, ' ', n);
        memcpy(big, "{\"return\": \"", 12);
        peer_write(&p, big, n);
        expect_record("a -ECONNRESET");
        expect_record("disconnect -EMSGSIZE");
        teardown(q, &p);
}

static void on_reply_unref(Qmp *q, int error, json_object *result, const char *c, const char *d, void *userdata) {
        Qmp **owner = userdata;

        record("unref %s", errname(error));
        *owner = qmp_unref(*owner);
}

static void test_unref_in_callback(void) {
        Peer p;
        Qmp *q = setup(&p);
        int64_t a;

        printf("a reply callback that drops the last reference stops all further callbacks\n");
        handshake(q, &p);
        check(qmp_subscribe(q, NULL, on_event, "all") > 0);
        qmp_cmd_stop(q, on_reply, "x");
        a = qmp_send(q, "query-status", NULL, on_reply_unref, &q);
        qmp_cmd_cont(q, on_reply, "y");
        peer_expect(&p, "{\"execute\":\"stop\"}");
        peer_expect(&p, "{\"execute\":\"query-status\"}");
        peer_expect(&p, "{\"execute\":\"cont\"}");
        /* Under ASan this is also the use-after-free check. */
        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 "}\n"
                     "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n"
                     "{\"return\": {}, \"id\": 2}\n",
                 a);
        expect_record("unref 0");
        expect_no_record();
        check(!q);
        drain();
        check(p.eof); /* the socket was closed */
        peer_close(&p);

        printf("the same while failing pending replies on disconnect\n");
        q = setup(&p);
        handshake(q, &p);
        qmp_send(q, "stop", NULL, on_reply_unref, &q);
        qmp_cmd_cont(q, on_reply, "y");
        peer_close(&p);
        drain();
        expect_record("unref -ECONNRESET");
        expect_no_record();
        check(!q);
}

static int victim_sub, meddle_sub;

static void on_event_meddle(Qmp *q, const char *name, json_object *data, uint64_t ts, void *userdata) {
        const char *what = userdata;

        record("meddle %s %s", what, name);
        if (streq(what, "unsubscribe")) {
                check(qmp_unsubscribe(q, meddle_sub) == 0); /* itself */
                check(qmp_unsubscribe(q, victim_sub) == 0);
                check(qmp_unsubscribe(q, victim_sub) == -ENOENT);
                check(qmp_subscribe(q, NULL, on_event, "late") > 0); /* not for this event */
        } else if (streq(what, "close"))
                qmp_close(q);
}

static void test_event_reentrancy(void) {
        Peer p;
        Qmp *q = setup(&p);

        printf("event callbacks that unsubscribe, subscribe and close during dispatch\n");
        handshake(q, &p);
        meddle_sub = qmp_subscribe(q, NULL, on_event_meddle, "unsubscribe");
        victim_sub = qmp_subscribe(q, NULL, on_event, "victim");
        check(qmp_subscribe(q, NULL, on_event, "other") > 0);
        peer_say(&p, "{\"event\": \"A\", \"timestamp\": {\"seconds\": 0, \"microseconds\": 1}}\n");
        expect_record("meddle unsubscribe A");
        expect_record("other A NULL 1");
        expect_no_record();
        check(qmp_unsubscribe(q, meddle_sub) == -ENOENT);
        peer_say(&p, "{\"event\": \"B\", \"timestamp\": {\"seconds\": 0, \"microseconds\": 2}}\n");
        expect_record("other B NULL 2");
        expect_record("late B NULL 2");

        check(qmp_subscribe(q, "C", on_event_meddle, "close") > 0);
        check(qmp_subscribe(q, "C", on_event, "after-close") > 0); /* no callbacks after qmp_close() */
        qmp_cmd_stop(q, on_reply, "a");
        peer_say(&p, "{\"event\": \"C\", \"timestamp\": {\"seconds\": 0, \"microseconds\": 3}}\n"
                     "{\"event\": \"C\", \"timestamp\": {\"seconds\": 0, \"microseconds\": 4}}\n");
        expect_record("other C NULL 3");
        expect_record("late C NULL 3");
        expect_record("meddle close C");
        expect_record("a -ECONNRESET"); /* from qmp_close(), no disconnect callback */
        expect_no_record();
        check(!qmp_is_connected(q));
        teardown(q, &p);
}

static void on_reply_keep(Qmp *q, int error, json_object *result, const char *c, const char *d, void *userdata) {
        json_object **ret = userdata;

        check(error == 0 && !c && !d);
        *ret = json_object_get(result);
}

static void test_raw(void) {
        Peer p;
        Qmp *q = setup(&p);
        json_object *r1 = NULL, *r2 = NULL, *r3 = NULL;
        int64_t a, b, c;

        printf("qmp_send_raw(): the caller's id is replaced and restored, the whole reply handed back\n");
        handshake(q, &p);
        check(qmp_send_raw(q, json_tokener_parse("{\"arguments\": {}}"), on_reply, "x") == -EINVAL);
        check(qmp_send_raw(q, json_tokener_parse("{\"execute\": 5}"), on_reply, "x") == -EINVAL);
        check(qmp_send_raw(q, json_tokener_parse("[\"execute\"]"), on_reply, "x") == -EINVAL);

        a = qmp_send_raw(q, json_tokener_parse("{\"execute\": \"query-status\", \"id\": \"user-1\"}"), on_reply_keep, &r1);
        b = qmp_send_raw(q, json_tokener_parse("{\"execute\": \"query-foo\"}"), on_reply_keep, &r2);
        c = qmp_send_raw(q, json_tokener_parse("{\"id\": {\"n\": [7]}, \"execute\": \"stop\", \"arguments\": {}}"),
                         on_reply_keep, &r3);
        check(a > 0 && b == a + 1 && c == b + 1);
        check(qmp_changes(q) == 1); /* the pass-through counts as the others: only "stop" */
        check(peer_expect(&p, "{\"execute\":\"query-status\"}") == a);
        check(peer_expect(&p, "{\"execute\":\"query-foo\"}") == b);
        check(peer_expect(&p, "{\"execute\":\"stop\",\"arguments\":{}}") == c);
        peer_say(&p, "{\"return\": {\"status\": \"running\"}, \"id\": %" PRIi64 "}\n"
                     "{\"id\": %" PRIi64 ", \"error\": {\"class\": \"CommandNotFound\", \"desc\": \"The command query-foo has not been found\"}}\n"
                     "{\"return\": {}, \"id\": %" PRIi64 "}\n",
                 a, b, c);
        check(r1 && r2 && r3);
        check(streq(json_text(r1), "{\"return\":{\"status\":\"running\"},\"id\":\"user-1\"}"));
        check(streq(json_text(r2), "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The command query-foo has not been found\"}}"));
        check(streq(json_text(r3), "{\"return\":{},\"id\":{\"n\":[7]}}"));
        json_object_put(r1);
        json_object_put(r2);
        json_object_put(r3);
        teardown(q, &p);
}

static void test_close(void) {
        Peer p;
        Qmp *q = setup(&p);

        printf("qmp_close(): pending replies fail, no disconnect callback\n");
        handshake(q, &p);
        qmp_cmd_stop(q, on_reply, "a");
        qmp_cmd_cont(q, on_reply, "b");
        qmp_close(q);
        expect_record("a -ECONNRESET");
        expect_record("b -ECONNRESET");
        check(!qmp_is_connected(q));
        qmp_close(q);
        drain();
        expect_no_record();
        check(p.eof);
        teardown(q, &p);

        printf("qmp_close() before ready: no ready callback\n");
        q = setup(&p);
        qmp_cmd_stop(q, on_reply, "a");
        peer_say(&p, GREETING);
        peer_expect(&p, "{\"execute\":\"qmp_capabilities\"}");
        qmp_close(q);
        expect_record("a -ECONNRESET");
        teardown(q, &p);

        printf("qmp_unref() to zero: no callbacks at all\n");
        q = setup(&p);
        handshake(q, &p);
        qmp_cmd_stop(q, on_reply, "a");
        teardown(q, &p);
}

static void test_connect(void) {
        char dir[] = "/tmp/test-qmp-XXXXXX", path[128];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Qmp *q = NULL;
        int fd;

        printf("qmp_connect() fails at once when nobody listens\n");
        check(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/none.sock", dir);
        check(qmp_connect(event, path, &q) == -ENOENT);

        snprintf(path, sizeof(path), "%s/stale.sock", dir);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        check(fd >= 0 && bind(fd, (struct sockaddr *) &sa, sizeof(sa)) >= 0);
        safe_close(fd); /* the file stays, nobody behind it */
        check(qmp_connect(event, path, &q) == -ECONNREFUSED);
        check(!q);
        unlink(path);
        rmdir(dir);
}

static void test_parsers(void) {
        static const struct {
                const char *status;
                QmpRunState state;
        } states[] = {
                { "running", QMP_RUN_STATE_RUNNING },         { "paused", QMP_RUN_STATE_PAUSED },
                { "prelaunch", QMP_RUN_STATE_PAUSED },        { "postmigrate", QMP_RUN_STATE_PAUSED },
                { "finish-migrate", QMP_RUN_STATE_PAUSED },   { "restore-vm", QMP_RUN_STATE_PAUSED },
                { "inmigrate", QMP_RUN_STATE_PAUSED },        { "suspended", QMP_RUN_STATE_PAUSED },
                { "io-error", QMP_RUN_STATE_PAUSED },         { "debug", QMP_RUN_STATE_PAUSED },
                { "save-vm", QMP_RUN_STATE_PAUSED },          { "colo", QMP_RUN_STATE_PAUSED },
                { "watchdog", QMP_RUN_STATE_PAUSED },         { "guest-panicked", QMP_RUN_STATE_CRASHED },
                { "internal-error", QMP_RUN_STATE_CRASHED },  { "shutdown", QMP_RUN_STATE_SHUTDOWN },
                { "some-future-state", QMP_RUN_STATE_PAUSED },
        };
        static const char *const bad_status[] = {
                "[]", "{}", "{\"status\": 1}", "{\"status\": null}", "\"running\"",
        };
        static const char *const bad_block[] = {
                "{}", "[1]", "[{\"qdev\": 5}]", "[{\"qdev\": \"x\", \"inserted\": 1}]",
                "[{\"qdev\": \"x\", \"inserted\": {\"node-name\": []}}]",
        };
        json_object *o;
        const char *s;
        QmpBlockInfo *infos = (QmpBlockInfo *) 0x1;
        size_t n = 77;

        printf("parsers\n");
        for (size_t i = 0; i < ELEMENTSOF(states); i++) {
                _cleanup_free_ char *text = NULL;
                QmpRunState st = _QMP_RUN_STATE_INVALID;
                char buf[128];

                snprintf(buf, sizeof(buf), "{\"status\": \"%s\", \"singlestep\": false, \"running\": false}",
                         states[i].status);
                o = json_tokener_parse(buf);
                check(qmp_parse_query_status(o, &st, &text) == 0);
                check(st == states[i].state);
                check(streq(text, states[i].status));
                json_object_put(o);
        }
        for (size_t i = 0; i < ELEMENTSOF(bad_status); i++) {
                char *text = (char *) 0x1;
                QmpRunState st = _QMP_RUN_STATE_INVALID;

                o = json_tokener_parse(bad_status[i]);
                check(qmp_parse_query_status(o, &st, &text) == -EBADMSG);
                check(st == _QMP_RUN_STATE_INVALID && text == (char *) 0x1); /* untouched */
                json_object_put(o);
        }
        check(qmp_parse_query_status(NULL, NULL, NULL) == -EBADMSG);

        o = json_object_new_string("Error: Device 'x' not found\r\n");
        check(qmp_parse_string(o, &s) == 0 && streq(s, "Error: Device 'x' not found\r\n"));
        json_object_put(o);
        o = json_object_new_object();
        check(qmp_parse_string(o, &s) == -EBADMSG);
        json_object_put(o);

        /* Shaped like QEMU 7.2's answer with one -blockdev disk, an empty
         * CD-ROM and a -drive without a device. */
        o = json_tokener_parse(
                "[{\"io-status\": \"ok\", \"device\": \"\", \"locked\": false, \"removable\": false, "
                "  \"inserted\": {\"iops_rd\": 0, \"image\": {\"virtual-size\": 67108864, \"filename\": \"/d/s1.qcow2\", "
                "     \"backing-image\": {\"filename\": \"/d/base.qcow2\", \"format\": \"qcow2\"}}, "
                "     \"node-name\": \"s1\", \"drv\": \"qcow2\", \"file\": \"/d/s1.qcow2\", \"backing_file\": \"base.qcow2\"}, "
                "  \"qdev\": \"/machine/peripheral/vd0/virtio-backend\", \"type\": \"unknown\"}, "
                " {\"device\": \"\", \"qdev\": \"/machine/peripheral/cd0\", \"tray_open\": false, \"removable\": true, \"locked\": false, \"type\": \"unknown\"}, "
                " {\"device\": \"drive0\", \"inserted\": {\"node-name\": \"#block123\", \"file\": \"x.img\"}, \"type\": \"unknown\"}]");
        check(o);
        check(qmp_parse_query_block(o, &infos, &n) == 0);
        check(n == 2);
        check(streq(infos[0].qdev, "/machine/peripheral/vd0/virtio-backend"));
        check(streq(infos[0].node_name, "s1"));
        check(streq(infos[0].file, "/d/s1.qcow2"));
        check(streq(infos[1].qdev, "/machine/peripheral/cd0"));
        check(!infos[1].node_name && !infos[1].file);
        check(!infos[2].qdev); /* the NULL entry */
        qmp_block_info_free_many(infos, n);
        json_object_put(o);

        o = json_object_new_array();
        check(qmp_parse_query_block(o, &infos, &n) == 0 && n == 0 && infos && !infos[0].qdev);
        qmp_block_info_free_many(infos, n);
        json_object_put(o);

        for (size_t i = 0; i < ELEMENTSOF(bad_block); i++) {
                infos = (QmpBlockInfo *) 0x1;
                n = 77;
                o = json_tokener_parse(bad_block[i]);
                check(o);
                check(qmp_parse_query_block(o, &infos, &n) == -EBADMSG);
                check(infos == (QmpBlockInfo *) 0x1 && n == 77);
                json_object_put(o);
        }
}

/* query-named-block-nodes: a node whose header names its backing file
 * relatively (after block-stream/-commit with backing-file) shows its file
 * as json:{...}; the format node is still found by the plain file name. */
static void test_node_files(void) {
        static const char reply[] =
                "[{\"node-name\": \"#block1\", \"drv\": \"file\", \"file\": \"/d/top.qcow2\"},"
                " {\"node-name\": \"vda-fmt\", \"drv\": \"qcow2\", \"file\": \"json:{\\\"backing\\\": "
                "{\\\"driver\\\": \\\"qcow2\\\"}, \\\"driver\\\": \\\"qcow2\\\", \\\"file\\\": "
                "{\\\"driver\\\": \\\"file\\\", \\\"filename\\\": \\\"/d/top.qcow2\\\"}}\"},"
                " {\"node-name\": \"#block2\", \"drv\": \"qcow2\", \"file\": \"/d/base.qcow2\"},"
                " {\"node-name\": \"bad\", \"drv\": \"qcow2\", \"file\": \"json:{nonsense\"}]";
        json_object *o = json_tokener_parse(reply);
        const char *node = NULL;
        char *f = NULL;

        printf("node files\n");
        check(o);
        check(qmp_find_format_node(o, "/d/top.qcow2", &node) == 1 && streq(node, "vda-fmt"));
        check(qmp_find_format_node(o, "/d/base.qcow2", &node) == 1 && streq(node, "#block2"));
        check(qmp_find_format_node(o, "/d/none.qcow2", &node) == 0);
        check(qmp_node_file(json_object_array_get_idx(o, 1), &f) == 0 && streq(f, "/d/top.qcow2"));
        free(f);
        f = NULL;
        check(qmp_node_file(json_object_array_get_idx(o, 3), &f) == -EBADMSG && !f);
        json_object_put(o);
}

/* ---- against a real QEMU ---- */

typedef struct Smoke {
        bool done;
        int error;
        json_object *result;
} Smoke;

static void on_smoke_reply(Qmp *q, int error, json_object *result, const char *c, const char *d, void *userdata) {
        Smoke *s = userdata;

        if (error == -QSNAP_E_QEMU_FAILED)
                fprintf(stderr, "QEMU error: %s: %s\n", c, d);
        s->done = true;
        s->error = error;
        s->result = json_object_get(result);
}

static void on_smoke_ready(Qmp *q, int error, void *userdata) {
        Smoke *s = userdata;

        s->done = true;
        s->error = error;
}

static void on_smoke_disconnect(Qmp *q, int error, void *userdata) {
        *(bool *) userdata = true;
}

/* A push's blockdev-backup, with x-perf from a QEMU that has it (6.0+). */
static void expect_backup(const char *greeting, const char *perf) {
        const QmpBackupAction push = { .type = QMP_BACKUP_BLOCKDEV_BACKUP, .name = "j", .node = "vda", .target = "t",
                                       .sync = "full", .bulk = true };
        const QmpBackupAction pull = { .type = QMP_BACKUP_BLOCKDEV_BACKUP, .name = "k", .node = "vdb", .target = "s",
                                       .sync = "none", .filter_node = "f" };
        _cleanup_free_ char *want = NULL;
        int64_t caps, id;
        Peer p;
        Qmp *q = setup(&p);

        check(!qmp_version_at_least(q, 0, 1));
        peer_say(&p, "%s", greeting);
        caps = peer_expect(&p, "{\"execute\":\"qmp_capabilities\"}");
        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 "}\r\n", caps);
        expect_record("ready 0");
        id = qmp_cmd_transaction_backup(q, (QmpBackupAction[]) { push, pull }, 2, on_reply, "t");
        want = strprintf("{\"execute\":\"transaction\",\"arguments\":{\"actions\":["
                         "{\"type\":\"blockdev-backup\",\"data\":{\"job-id\":\"j\",\"device\":\"vda\","
                         "\"target\":\"t\",\"sync\":\"full\",\"auto-finalize\":false,\"auto-dismiss\":false%s}},"
                         "{\"type\":\"blockdev-backup\",\"data\":{\"job-id\":\"k\",\"device\":\"vdb\","
                         "\"target\":\"s\",\"sync\":\"none\",\"auto-finalize\":false,\"auto-dismiss\":false,"
                         "\"filter-node-name\":\"f\"}}]}}",
                         perf);
        check(want);
        check(peer_expect(&p, want) == id);
        peer_say(&p, "{\"return\": {}, \"id\": %" PRIi64 "}\r\n", id);
        expect_record("t 0 {}");
        teardown(q, &p);
}

static void test_backup_perf(void) {
        printf("a push copies in 8 requests of 8 MiB where QEMU has x-perf (6.0+), a pull's job never\n");
        expect_backup(GREETING, ",\"x-perf\":{\"max-workers\":8,\"max-chunk\":8388608}");
        expect_backup("{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 5}, "
                      "\"package\": \"\"}, \"capabilities\": []}}\r\n",
                      "");
        expect_backup("{\"QMP\": {\"capabilities\": []}}\r\n", "");
}

static void test_real_qemu(void) {
        static const char *const disks[] = { "-blockdev", "driver=null-co,node-name=null0,size=1048576", "-device",
                                             "virtio-blk-pci,drive=null0,id=vd0", NULL };
        char dir[] = "/tmp/test-qmp-XXXXXX";
        _cleanup_free_ char *sock = NULL, *log = NULL;
        Smoke s = {}, st = {}, blk = {}, hmp = {}, quit = {};
        _cleanup_free_ char *text = NULL;
        QmpBlockInfo *infos;
        QmpRunState state;
        bool gone = false;
        const char *str;
        Qmp *q;
        size_t n;

        printf("real QEMU: query-status, query-block, human-monitor-command, quit\n");
        check(mkdtemp(dir));
        q = real_qemu_launch(dir, disks);
        qmp_set_ready_callback(q, on_smoke_ready, &s);
        qmp_set_disconnect_callback(q, on_smoke_disconnect, &gone);
        run_until(&s.done);
        check(s.error == 0);

        check(qmp_cmd_query_status(q, on_smoke_reply, &st) > 0);
        check(qmp_cmd_query_block(q, on_smoke_reply, &blk) > 0);
        check(qmp_cmd_human_monitor_command(q, "info status", on_smoke_reply, &hmp) > 0);
        run_until(&hmp.done);
        check(st.done && blk.done);

        check(st.error == 0 && qmp_parse_query_status(st.result, &state, &text) == 0);
        printf("  status: %s\n", text);
        check(state == QMP_RUN_STATE_RUNNING);

        check(blk.error == 0 && qmp_parse_query_block(blk.result, &infos, &n) == 0);
        check(n == 1);
        printf("  block: qdev=%s node-name=%s file=%s\n", infos[0].qdev, strna(infos[0].node_name),
               strna(infos[0].file));
        check(streq(infos[0].qdev, "/machine/peripheral/vd0/virtio-backend"));
        check(streq_ptr(infos[0].node_name, "null0"));
        qmp_block_info_free_many(infos, n);

        check(hmp.error == 0 && qmp_parse_string(hmp.result, &str) == 0);
        printf("  info status: %s", str);
        check(strstr(str, "running"));

        check(qmp_cmd_quit(q, on_smoke_reply, &quit) > 0);
        run_until(&gone);
        check(quit.done && quit.error == 0);
        real_qemu_wait(true);

        json_object_put(st.result);
        json_object_put(blk.result);
        json_object_put(hmp.result);
        json_object_put(quit.result);
        qmp_unref(q);
        sock = strprintf("%s/qmp.sock", dir);
        log = strprintf("%s/qemu.log", dir);
        check(sock && log);
        unlink(sock);
        unlink(log);
        rmdir(dir);
}

int main(int argc, char *argv[]) {
        if (getenv("QMP_TEST_DEBUG"))
                log_set_max_level(LOG_DEBUG);
        else
                log_set_max_level(LOG_CRIT); /* the tests provoke errors on purpose */
        setvbuf(stdout, NULL, _IOLBF, 0);
        check(sd_event_new(&event) >= 0);

        test_capabilities_gate();
        test_capabilities_refused();
        test_routing();
        test_framing();
        test_unknown();
        test_cancel();
        test_disconnect();
        test_malformed();
        test_oversize();
        test_unref_in_callback();
        test_event_reentrancy();
        test_raw();
        test_close();
        test_connect();
        test_parsers();
        test_node_files();
        test_backup_perf();
        test_real_qemu();

        expect_no_record();
        sd_event_unref(event);
        printf("all QMP tests passed\n");
        return EXIT_SUCCESS;
}
