/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest agent client against a scripted fake qemu-ga on the other end
 * of a socketpair(), both driven by one sd-event loop (the peer of
 * fake-qmp.h). What is checked: every command goes out behind one 0xFF
 * byte and a guest-sync-delimited with a fresh id; the GenericError that
 * qemu-ga answers to the 0xFF byte, late replies and stale sync answers
 * are dropped instead of shifting later replies; 0xFF bytes in the input
 * are skipped; no answer ends in -ETIMEDOUT after the timeout (and the
 * agent counts as not synced); a closed socket ends every pending command
 * in -ECONNRESET; cancel and unref from a callback.
 */
#include <inttypes.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "qemu/agent.h"
#include "util/util.h"

#include "fake-qmp.h"

static const char *json_text(json_object *o) {
        return o ? json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : "NULL";
}

static void on_reply(Agent *a, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        if (error == -QSNAP_E_QEMU_FAILED)
                record("%s -QemuFailed %s: %s", (const char *) userdata, cls, desc);
        else if (error < 0)
                record("%s %s", (const char *) userdata, errname(error));
        else
                record("%s 0 %s", (const char *) userdata, json_text(result));
}

static void on_state(Agent *a, bool synced, void *userdata) {
        record("synced %s", synced ? "yes" : "no");
}

/* Waits (up to 10 s) for the next line sent to the peer; it must start
 * with exactly `ff` 0xFF bytes. Returns the line (without them), freed by
 * the caller. */
static char *peer_line(Peer *p, unsigned ff) {
        char *nl = NULL, *s;

        for (int i = 0; i < 1000 && !(nl = memchr(p->buf, '\n', p->len)); i++)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        check(nl);
        for (unsigned i = 0; i < ff; i++)
                check((unsigned char) p->buf[i] == 0xFF);
        check((unsigned char) p->buf[ff] != 0xFF);
        s = strndup(p->buf + ff, nl - p->buf - ff);
        check(s);
        p->len -= nl + 1 - p->buf;
        memmove(p->buf, nl + 1, p->len);
        return s;
}

/* The resync every command starts with; returns its id. */
static int64_t peer_expect_sync(Peer *p) {
        _cleanup_free_ char *line = peer_line(p, 1);
        json_object *o = json_tokener_parse(line), *v, *args;
        int64_t id;

        check(o);
        check(json_object_object_get_ex(o, "execute", &v) && streq(json_object_get_string(v), "guest-sync-delimited"));
        check(json_object_object_get_ex(o, "arguments", &args));
        check(json_object_object_get_ex(args, "id", &v) && json_object_is_type(v, json_type_int));
        id = json_object_get_int64(v);
        check(id > 0);
        json_object_put(o);
        return id;
}

static void peer_expect_command(Peer *p, const char *expected) {
        _cleanup_free_ char *line = peer_line(p, 0);
        json_object *got = json_tokener_parse(line), *want = json_tokener_parse(expected);

        if (!got || !want || !json_object_equal(got, want)) {
                fprintf(stderr, "expected %s, got %s\n", expected, line);
                exit(EXIT_FAILURE);
        }
        json_object_put(got);
        json_object_put(want);
}

static void peer_answer_sync(Peer *p, int64_t id) {
        peer_say(p, "\xff{\"return\": %" PRIi64 "}\n", id);
}

#define STRAY_ERROR "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Invalid JSON syntax\"}}\n"

static void new_agent(Peer *p, Agent **ret) {
        int fd;

        peer_open(p, &fd);
        check(agent_new_from_fd(event, fd, ret) >= 0);
        agent_set_state_callback(*ret, on_state, NULL);
}

/* The trap of the notes: the 0xFF byte earns a GenericError before the
 * sync answer; taken for the command's reply it would shift all later
 * replies by one. Late replies and stale sync answers are dropped too. */
static void test_sync_trap(void) {
        _cleanup_(agent_unrefp) Agent *a = NULL;
        Peer p;
        int64_t id, id2;

        new_agent(&p, &a);
        check(!agent_is_synced(a));
        check(agent_send(a, "guest-info", NULL, 0, on_reply, (void *) "info") > 0);
        expect_no_record(); /* never from inside agent_send() */
        id = peer_expect_sync(&p);
        peer_expect_nothing(&p); /* the command waits for the sync answer */
        peer_say(&p, STRAY_ERROR);
        expect_no_record();
        peer_answer_sync(&p, id);
        expect_record("synced yes");
        peer_expect_command(&p, "{\"execute\": \"guest-info\"}");
        peer_say(&p, "{\"return\": {\"version\": \"7.2.22\"}}\n");
        expect_record("info 0 {\"version\":\"7.2.22\"}");
        check(agent_is_synced(a));

        /* Next command: a fresh sync id; what comes before its answer
         * (a late reply, the old sync answer, the stray error, 0xFF bytes)
         * is dropped. */
        check(agent_send(a, "guest-fsfreeze-freeze", NULL, 0, on_reply, (void *) "freeze") > 0);
        id2 = peer_expect_sync(&p);
        check(id2 != id);
        peer_say(&p, "{\"return\": {}}\n\xff{\"return\": %" PRIi64 "}\n" STRAY_ERROR "\xff\xff", id);
        expect_no_record();
        peer_expect_nothing(&p);
        /* A message cut by a reset (0xFF) in the middle: the part after counts. */
        peer_say(&p, "{\"retu\xff{\"return\": %" PRIi64 "}\n", id2);
        peer_expect_command(&p, "{\"execute\": \"guest-fsfreeze-freeze\"}");
        peer_say(&p, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"failed to freeze /: Device or resource busy\"}}\n");
        expect_record("freeze -QemuFailed GenericError: failed to freeze /: Device or resource busy");

        /* Arguments go out as given; a reply split over several writes. */
        check(agent_send(a, "guest-fsfreeze-thaw", json_object_new_object(), 0, on_reply, (void *) "thaw") > 0);
        id = peer_expect_sync(&p);
        peer_answer_sync(&p, id);
        peer_expect_command(&p, "{\"execute\": \"guest-fsfreeze-thaw\", \"arguments\": {}}");
        peer_say(&p, "{\"retu");
        expect_no_record();
        peer_say(&p, "rn\": 1}\n");
        expect_record("thaw 0 1");
        expect_no_record();
        peer_close(&p);
}

/* Commands queue one behind the other, each with its own sync. */
static void test_queue(void) {
        _cleanup_(agent_unrefp) Agent *a = NULL;
        Peer p;
        int64_t id;

        new_agent(&p, &a);
        check(agent_send(a, "one", NULL, 0, on_reply, (void *) "one") > 0);
        check(agent_send(a, "two", NULL, 0, on_reply, (void *) "two") > 0);
        id = peer_expect_sync(&p);
        peer_expect_nothing(&p);
        peer_answer_sync(&p, id);
        expect_record("synced yes");
        peer_expect_command(&p, "{\"execute\": \"one\"}");
        peer_expect_nothing(&p);
        peer_say(&p, "{\"return\": {}}\n");
        expect_record("one 0 {}");
        id = peer_expect_sync(&p);
        peer_answer_sync(&p, id);
        peer_expect_command(&p, "{\"execute\": \"two\"}");
        peer_say(&p, "{\"return\": 2}\n");
        expect_record("two 0 2");
        peer_close(&p);
}

static void run_until_record(uint64_t max_usec) {
        uint64_t deadline = now_usec(CLOCK_MONOTONIC) + max_usec;

        while (n_records == 0 && now_usec(CLOCK_MONOTONIC) < deadline)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
}

/* Nobody answers the sync, then nobody answers the command: -ETIMEDOUT
 * after the timeout each time, not before, and not synced afterwards. A
 * reply that comes after the timeout is not taken for the next command's. */
static void test_timeout(void) {
        _cleanup_(agent_unrefp) Agent *a = NULL;
        uint64_t t0, dt;
        Peer p;
        int64_t id;

        new_agent(&p, &a);
        t0 = now_usec(CLOCK_MONOTONIC);
        check(agent_send(a, "guest-fsfreeze-freeze", NULL, 300 * USEC_PER_MSEC, on_reply, (void *) "freeze") > 0);
        (void) peer_expect_sync(&p);
        run_until_record(5 * USEC_PER_SEC);
        dt = now_usec(CLOCK_MONOTONIC) - t0;
        expect_record("freeze -ETIMEDOUT");
        check(dt >= 300 * USEC_PER_MSEC);
        check(dt < 3 * USEC_PER_SEC);
        check(!agent_is_synced(a));

        /* Synced, then the command's reply does not come. */
        check(agent_send(a, "guest-fsfreeze-freeze", NULL, 300 * USEC_PER_MSEC, on_reply, (void *) "freeze") > 0);
        id = peer_expect_sync(&p);
        peer_answer_sync(&p, id);
        expect_record("synced yes");
        peer_expect_command(&p, "{\"execute\": \"guest-fsfreeze-freeze\"}");
        t0 = now_usec(CLOCK_MONOTONIC);
        run_until_record(5 * USEC_PER_SEC);
        dt = now_usec(CLOCK_MONOTONIC) - t0;
        expect_record("synced no");
        expect_record("freeze -ETIMEDOUT");
        check(dt >= 250 * USEC_PER_MSEC);
        check(!agent_is_synced(a));

        /* The late answer arrives while the thaw is syncing: dropped. */
        check(agent_send(a, "guest-fsfreeze-thaw", NULL, 0, on_reply, (void *) "thaw") > 0);
        id = peer_expect_sync(&p);
        peer_say(&p, "{\"return\": 1}\n");
        expect_no_record();
        peer_answer_sync(&p, id);
        expect_record("synced yes");
        peer_expect_command(&p, "{\"execute\": \"guest-fsfreeze-thaw\"}");
        peer_say(&p, "{\"return\": 3}\n");
        expect_record("thaw 0 3");

        /* A probe only syncs. */
        check(agent_probe(a, 0) >= 0);
        id = peer_expect_sync(&p);
        peer_answer_sync(&p, id);
        peer_expect_nothing(&p);
        expect_no_record();

        /* A command sent while a probe syncs takes over that sync instead
         * of waiting behind it. */
        check(agent_probe(a, 0) >= 0);
        id = peer_expect_sync(&p);
        check(agent_send(a, "guest-info", NULL, 0, on_reply, (void *) "info") > 0);
        peer_expect_nothing(&p);
        peer_answer_sync(&p, id);
        peer_expect_command(&p, "{\"execute\": \"guest-info\"}");
        peer_say(&p, "{\"return\": {}}\n");
        expect_record("info 0 {}");
        peer_close(&p);
}

/* The socket closes (QEMU exits): every pending command ends once, in
 * -ECONNRESET; later sends fail at once. */
static void test_disconnect(void) {
        _cleanup_(agent_unrefp) Agent *a = NULL;
        Peer p;
        int64_t id;

        new_agent(&p, &a);
        check(agent_send(a, "one", NULL, 0, on_reply, (void *) "one") > 0);
        id = peer_expect_sync(&p);
        peer_answer_sync(&p, id);
        expect_record("synced yes");
        peer_expect_command(&p, "{\"execute\": \"one\"}");
        check(agent_send(a, "two", NULL, 0, on_reply, (void *) "two") > 0);
        peer_close(&p);
        drain();
        expect_record("one -ECONNRESET");
        expect_record("two -ECONNRESET");
        expect_record("synced no");
        check(!agent_is_connected(a));
        check(agent_send(a, "three", NULL, 0, on_reply, (void *) "three") == -ENOTCONN);
        expect_no_record();
}

static void on_reply_unref(Agent *a, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Agent **pa = userdata;

        record("unref %s", errname(error));
        *pa = agent_unref(*pa);
}

/* Cancel: no callback ever; the last unref inside a callback: nothing
 * else is called. */
static void test_cancel_unref(void) {
        Agent *a = NULL;
        Peer p;
        int64_t id, c;

        new_agent(&p, &a);
        c = agent_send(a, "one", NULL, 0, on_reply, (void *) "one");
        check(c > 0);
        check(agent_send(a, "two", NULL, 0, on_reply_unref, &a) > 0);
        check(agent_send(a, "three", NULL, 0, on_reply, (void *) "three") > 0);
        check(agent_cancel(a, c) == 0);
        check(agent_cancel(a, c + 100) == -ENOENT);
        id = peer_expect_sync(&p);
        peer_answer_sync(&p, id);
        expect_record("synced yes");
        peer_expect_command(&p, "{\"execute\": \"one\"}"); /* already on the wire: runs out */
        peer_say(&p, "{\"return\": 1}\n");
        expect_no_record();
        id = peer_expect_sync(&p);
        peer_answer_sync(&p, id);
        peer_expect_command(&p, "{\"execute\": \"two\"}");
        peer_say(&p, "{\"return\": 2}\n");
        expect_record("unref 0");
        check(!a);
        drain();
        expect_no_record(); /* "three" never answered, never called */
        peer_close(&p);
}

/* agent_connect() on a listening socket, and on nothing. */
static void test_connect(void) {
        _cleanup_(agent_unrefp) Agent *a = NULL;
        char dir[] = "/tmp/test-agent-XXXXXX", path[128];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int lfd;

        check(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/ga.sock", dir);
        check(agent_connect(event, path, &a) == -ENOENT);
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        check(lfd >= 0);
        strcpy(sa.sun_path, path);
        check(bind(lfd, (struct sockaddr *) &sa, sizeof(sa)) >= 0);
        check(listen(lfd, 1) >= 0);
        check(agent_connect(event, path, &a) >= 0);
        check(agent_is_connected(a));
        agent_close(a);
        check(!agent_is_connected(a));
        safe_close(lfd);
        unlink(path);
        rmdir(dir);
}

int main(int argc, char *argv[]) {
        if (getenv("AGENT_TEST_DEBUG"))
                log_set_max_level(LOG_DEBUG);
        else
                log_set_max_level(LOG_CRIT);
        setvbuf(stdout, NULL, _IOLBF, 0);
        check(sd_event_new(&event) >= 0);

        test_sync_trap();
        test_queue();
        test_timeout();
        test_disconnect();
        test_cancel_unref();
        test_connect();

        expect_no_record();
        sd_event_unref(event);
        printf("all guest agent tests passed\n");
        return EXIT_SUCCESS;
}
