/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The fixture of the operation unit tests (test-op-*.c): a Manager with
 * the operation kinds registered as main.c does, one domain defined on
 * qcow2 images in a temporary folder (written by qemu/image.c: no qemu-img
 * needed for them), and a scripted fake QEMU (fake-qmp.h) that the domain
 * attaches to through its real monitor socket path, so the attach,
 * adoption and start-up recovery run as in qsnapd. No bus: the core and
 * the operations run on their own. Callbacks append to the record
 * (fake-qmp.h); each test states the exact QMP sequence.
 */
#pragma once

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "core/domain-jobs.h"
#include "core/manager.h"
#include "core/operation.h"
#include "core/qemu-files.h"
#include "ops/block-jobs.h"
#include "ops/snapshot-create.h"
#include "ops/snapshot-delete.h"
#include "ops/snapshot-revert.h"
#include "qemu/child.h"
#include "qemu/image.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/util.h"

#include "fake-qmp.h"

#define MiB (UINT64_C(1024) * UINT64_C(1024))
#define DISK_SIZE (64 * MiB)

typedef struct OpsFixture {
        char dir[64];
        char *state, *run, *images;
        Manager *manager;
        Domain *domain;
        const char *targets[4];
        char *images_of[4];   /* per target: its base image */
        size_t n_disks;
        int listen_fd;
        Peer peer;
        bool qemu;            /* the peer is up */
} OpsFixture;

/* ---- captured values: "$name" in an expected JSON matches any string ---- */

static struct {
        char name[32];
        char *value;
} captures[16];

static inline const char *captured(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(captures); i++)
                if (captures[i].value && streq(captures[i].name, name))
                        return captures[i].value;
        fprintf(stderr, "nothing captured as $%s\n", name);
        exit(EXIT_FAILURE);
}

static inline void captures_clear(void) {
        for (size_t i = 0; i < ELEMENTSOF(captures); i++)
                captures[i].value = mfree(captures[i].value);
}

static inline bool capture(const char *name, const char *value) {
        size_t free_slot = ELEMENTSOF(captures);

        for (size_t i = 0; i < ELEMENTSOF(captures); i++) {
                if (captures[i].value && streq(captures[i].name, name))
                        return streq(captures[i].value, value); /* the same name twice: the same value */
                if (!captures[i].value && free_slot == ELEMENTSOF(captures))
                        free_slot = i;
        }
        check(free_slot < ELEMENTSOF(captures) && strlen(name) < sizeof(captures[0].name));
        strcpy(captures[free_slot].name, name);
        check(captures[free_slot].value = strdup(value));
        return true;
}

static inline bool json_match(json_object *got, json_object *want) {
        /* "$name": anything; a string is captured as it is, anything else as JSON text. */
        if (json_object_is_type(want, json_type_string) && json_object_get_string(want)[0] == '$')
                return got && capture(json_object_get_string(want) + 1,
                                      json_object_is_type(got, json_type_string) ? json_object_get_string(got)
                                                                                 : json_object_to_json_string(got));
        if (json_object_is_type(want, json_type_object)) {
                if (!json_object_is_type(got, json_type_object) ||
                    json_object_object_length(got) != json_object_object_length(want))
                        return false;
                json_object_object_foreach(want, key, w) {
                        json_object *g;
                        if (!json_object_object_get_ex(got, key, &g) || !json_match(g, w))
                                return false;
                }
                return true;
        }
        if (json_object_is_type(want, json_type_array)) {
                if (!json_object_is_type(got, json_type_array) ||
                    json_object_array_length(got) != json_object_array_length(want))
                        return false;
                for (size_t i = 0; i < json_object_array_length(want); i++)
                        if (!json_match(json_object_array_get_idx(got, i), json_object_array_get_idx(want, i)))
                                return false;
                return true;
        }
        return json_object_equal(got, want);
}

/* peer_expect() with "$name" wildcards (captured()), and "%s" filled in
 * from the arguments. */
#define expect_qmp(p, ...) expect_qmp_at(__LINE__, p, __VA_ARGS__)
static int64_t expect_qmp_at(int line, Peer *p, const char *fmt, ...) _printf_(3, 4);
static int64_t expect_qmp_at(int line, Peer *p, const char *fmt, ...) {
        _cleanup_free_ char *expected = NULL;
        json_object *got, *want, *id;
        char *nl = NULL;
        va_list ap;
        int64_t r;

        va_start(ap, fmt);
        check(vasprintf(&expected, fmt, ap) >= 0);
        va_end(ap);
        for (int i = 0; i < 1000 && !(nl = memchr(p->buf, '\n', p->len)); i++)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        if (!nl) {
                fprintf(stderr, "line %i: nothing sent, expected %.400s\n", line, expected);
                exit(EXIT_FAILURE);
        }
        *nl = '\0';
        got = json_tokener_parse(p->buf);
        want = json_tokener_parse(expected);
        if (!want) {
                fprintf(stderr, "line %i: bad expectation %s\n", line, expected);
                exit(EXIT_FAILURE);
        }
        if (!got || !json_object_object_get_ex(got, "id", &id) || !json_object_is_type(id, json_type_int)) {
                fprintf(stderr, "line %i: sent a line without an integer id: %.400s\n", line, p->buf);
                exit(EXIT_FAILURE);
        }
        r = json_object_get_int64(id);
        json_object_object_del(got, "id");
        if (!json_match(got, want)) {
                fprintf(stderr, "line %i: expected %.400s\n         got %.400s\n", line, expected, p->buf);
                exit(EXIT_FAILURE);
        }
        json_object_put(got);
        json_object_put(want);
        p->len -= nl + 1 - p->buf;
        memmove(p->buf, nl + 1, p->len);
        return r;
}

static inline void peer_reply(Peer *p, int64_t id, const char *ret) {
        peer_say(p, "{\"return\": %s, \"id\": %" PRIi64 "}\r\n", ret, id);
}

/* Replies to query-named-block-nodes with `nodes`. The format nodes in
 * it are files qsnapd passed (core/qemu-files.h): they go into the
 * domain's node → file map first, as a launch would have put them. */
static inline void peer_reply_nodes(Domain *d, Peer *p, int64_t id, const char *nodes) {
        _cleanup_(json_object_putp) json_object *l = json_tokener_parse(nodes);

        check(json_object_is_type(l, json_type_array));
        for (size_t i = 0; i < json_object_array_length(l); i++) {
                json_object *e = json_object_array_get_idx(l, i), *node, *file, *drv;

                if (json_object_object_get_ex(e, "node-name", &node) && json_object_object_get_ex(e, "file", &file) &&
                    (!json_object_object_get_ex(e, "drv", &drv) || !streq(json_object_get_string(drv), "file")) &&
                    !domain_files_path(d, json_object_get_string(node)))
                        check(domain_files_add(d, json_object_get_string(node), json_object_get_string(file),
                                               domain_files_new_set(d)) >= 0);
        }
        peer_reply(p, id, nodes);
}

/* The two add-fd (read-write, read-only descriptor) of a file qsnapd
 * passes into a new fd set, answered; the set is captured as $<name>. */
static inline void expect_add_fds(Peer *p, const char *name) {
        for (int i = 0; i < 2; i++) {
                int64_t id = expect_qmp(p, "{\"execute\":\"add-fd\",\"arguments\":{\"fdset-id\":\"$%s\"}}", name);
                _cleanup_free_ char *ret = strprintf("{\"fd\": %d, \"fdset-id\": %s}", 20 + i, captured(name));
                peer_reply(p, id, ret);
        }
}

static inline void peer_error(Peer *p, int64_t id, const char *desc) {
        peer_say(p, "{\"id\": %" PRIi64 ", \"error\": {\"class\": \"GenericError\", \"desc\": \"%s\"}}\r\n", id, desc);
}

static inline void peer_event(Peer *p, const char *name, const char *data) {
        peer_say(p, "{\"timestamp\": {\"seconds\": 1700000000, \"microseconds\": 1}, \"event\": \"%s\", \"data\": %s}\r\n",
                 name, data);
}

static inline void peer_status(Peer *p, const char *id, const char *status) {
        _cleanup_free_ char *data = strprintf("{\"status\": \"%s\", \"id\": \"%s\"}", status, id);
        peer_event(p, "JOB_STATUS_CHANGE", data);
}

/* One query-jobs entry as QEMU 7.2 words it. */
static inline char *job_entry(const char *id, const char *type, const char *status, uint64_t cur, uint64_t total,
                              const char *error) {
        char *s = strprintf("{\"current-progress\": %" PRIu64 ", \"status\": \"%s\", \"total-progress\": %" PRIu64 ", "
                            "\"type\": \"%s\", \"id\": \"%s\"%s%s%s}", cur, status, total, type, id,
                            error ? ", \"error\": \"" : "", strempty(error), error ? "\"" : "");
        check(s);
        return s;
}

/* A query-jobs (the tracker's) answered with one job. */
static inline void answer_jobs(Peer *p, const char *id, const char *type, const char *status, uint64_t cur,
                               uint64_t total, const char *error) {
        _cleanup_free_ char *e = job_entry(id, type, status, cur, total, error), *ret = strprintf("[%s]", e);
        peer_reply(p, expect_qmp(p, "{\"execute\":\"query-jobs\"}"), ret);
}

static inline void expect_dismiss(Peer *p, const char *id) {
        peer_reply(p, expect_qmp(p, "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"%s\"}}", id), "{}");
        peer_status(p, id, "null");
}

/* An error as the records spell it: 0, a contract name, or -E…. */
static inline const char *err(int error) {
        static char buf[64];

        if (error == 0)
                return "0";
        if (qsnap_error_is_named(error))
                return qsnap_error_to_string(error);
        snprintf(buf, sizeof(buf), "-%s", strerrorname_np(-error) ?: "E?");
        return buf;
}

/* ---- files ---- */

static inline char *ops_path(OpsFixture *f, const char *name) {
        char *p = strprintf("%s/%s", f->images, name);
        check(p);
        return p;
}

static inline bool exists(const char *path) {
        return access(path, F_OK) >= 0;
}

static inline bool journal_exists(OpsFixture *f, const char *kind) {
        return op_journal_exists(f->state, f->domain->def->uuid, kind);
}

/* A qcow2 of DISK_SIZE, standalone or on `backing`. */
static inline void ops_image(const char *path, const char *backing) {
        _cleanup_free_ char *message = NULL;
        check(image_create(path, DISK_FORMAT_QCOW2, DISK_SIZE, backing, DISK_FORMAT_QCOW2, &message) >= 0);
}

/* The active file of a disk in the stored definition. */
static inline const char *ops_source(OpsFixture *f, const char *target) {
        const DomainDisk *disk = domain_def_find_disk(f->domain->def, target);
        check(disk);
        return disk->source;
}

/* ---- the domain ---- */

static const OperationKind *const ops_kinds[] = {
        &snapshot_create_kind,
        &snapshot_delete_kind,
        &snapshot_revert_kind,
};

static int ops_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

/* A domain "vm" with disks vda (and vdb, … up to n) on standalone qcow2
 * images, shut off. */
static inline void ops_setup(OpsFixture *f, size_t n) {
        static const char *const targets[] = { "vda", "vdb", "vdc", "vdd" };
        _cleanup_free_ char *xml = NULL, *disks = strdup(""), *message = NULL;
        ManagerConfig config;
        bool created;

        check(n <= ELEMENTSOF(targets));
        *f = (OpsFixture) { .listen_fd = -EBADF, .n_disks = n };
        strcpy(f->dir, "/tmp/test-ops-XXXXXX");
        check(mkdtemp(f->dir));
        f->state = strprintf("%s/state", f->dir);
        f->run = strprintf("%s/run", f->dir);
        f->images = strprintf("%s/images", f->dir);
        check(f->state && f->run && f->images);
        check(mkdir(f->state, 0700) >= 0 && mkdir(f->run, 0700) >= 0 && mkdir(f->images, 0700) >= 0);
        config = (ManagerConfig) {
                .state_dir = f->state,
                .runtime_dir = f->run,
                .qemu_binary = (char *) "/nonexistent/qemu",
                .start_timeout_usec = 10 * USEC_PER_SEC,
                .graceful_timeout_usec = 10 * USEC_PER_SEC,
                .metadata_read_cap = 1 << 20,
        };
        check(manager_new(event, &config, &f->manager) >= 0);
        for (size_t i = 0; i < ELEMENTSOF(ops_kinds); i++)
                check(operation_kind_register(f->manager, ops_kinds[i]) >= 0);

        for (size_t i = 0; i < n; i++) {
                _cleanup_free_ char *image = strprintf("%s.qcow2", targets[i]), *next = NULL;

                f->targets[i] = targets[i];
                f->images_of[i] = ops_path(f, image);
                ops_image(f->images_of[i], NULL);
                next = strprintf("%s<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                                 "<source file='%s'/><target dev='%s' bus='virtio'/></disk>",
                                 disks, f->images_of[i], targets[i]);
                check(next);
                free(disks);
                disks = TAKE_PTR(next);
        }
        xml = strprintf("<domain type='kvm'><name>vm</name><memory unit='MiB'>256</memory><vcpu>1</vcpu>"
                        "<devices>%s</devices></domain>", disks);
        check(xml);
        if (manager_define_domain(f->manager, xml, NULL, NULL, &f->domain, &created, &message) < 0) {
                fprintf(stderr, "cannot define: %s\n", strna(message));
                exit(EXIT_FAILURE);
        }
        check(created);
        f->domain->node_seq = 0; /* node names vda-1, vda-2, … */
}

/* ---- the fake QEMU ---- */

static inline void ops_on_attached(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        record("attached %s %s", err(error), domain_state_to_string(d->state));
}

/* The disks as QEMU shows them: each one's root node "<target>-fmt" on
 * its active file (the live definition's). */
static inline char *ops_nodes_json(OpsFixture *f) {
        const DomainDef *def = domain_current_def(f->domain);
        char *s = strdup("[");

        check(s);
        for (size_t i = 0; i < def->n_disks; i++) {
                char *next = strprintf("%s%s{\"node-name\": \"%s-fmt\", \"drv\": \"qcow2\", \"file\": \"%s\"}", s,
                                       i > 0 ? ", " : "", def->disks[i].target, def->disks[i].source);
                check(next);
                free(s);
                s = next;
        }
        {
                char *r = strjoin(s, "]");
                free(s);
                check(r);
                return r;
        }
}

/* Each disk's root node (qom-get), then the nodes: the read-back after
 * adoption. */
static inline void ops_expect_resync(OpsFixture *f) {
        const DomainDef *def = domain_current_def(f->domain);
        _cleanup_free_ char *nodes = NULL;

        for (size_t i = 0; i < def->n_disks; i++) {
                _cleanup_free_ char *ret = strprintf("\"%s-fmt\"", def->disks[i].target);
                peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                                                "\"/machine/peripheral/%s/virtio-backend\",\"property\":\"drive\"}}",
                                                def->disks[i].target), ret);
        }
        nodes = ops_nodes_json(f);
        peer_reply_nodes(f->domain, &f->peer,
                         expect_qmp(&f->peer, "{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":true}}"),
                         nodes);
}

/* QEMU runs the domain (a QEMU qsnapd started and left running: its live
 * definition is in the runtime folder) and the domain attaches to it:
 * greeting, status, jobs (query-jobs answered with `jobs`, a JSON array),
 * and, when QEMU runs no job, the read-back of the disks. What recovery
 * sends after that and the "attached" record are the test's. */
static inline void ops_start_qemu(OpsFixture *f, const char *status, const char *jobs) {
        _cleanup_free_ char *sock = domain_runtime_path(f->domain, ".qmp"), *live = domain_runtime_path(f->domain, ".xml"),
                            *xml = NULL, *ret = NULL;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        check(sock && live);
        check(domain_def_format(f->domain->def, DOMAIN_FORMAT_SECURE, &xml) >= 0);
        check(write_file_atomic(live, xml, strlen(xml), 0600) >= 0);
        f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        check(f->listen_fd >= 0 && strlen(sock) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, sock);
        check(bind(f->listen_fd, (struct sockaddr *) &sa, sizeof(sa)) >= 0);
        check(listen(f->listen_fd, 1) >= 0);

        check(domain_attach(f->domain, ops_on_attached, NULL, NULL) == 1);
        fd = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        check(fd >= 0);
        f->peer = (Peer) { .fd = fd, .buf = malloc(PEER_BUF_SIZE) };
        check(f->peer.buf);
        check(sd_event_add_io(event, &f->peer.io, fd, EPOLLIN, peer_on_io, &f->peer) >= 0);
        f->qemu = true;

        peer_say(&f->peer, GREETING);
        peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"qmp_capabilities\"}"), "{}");
        ret = strprintf("{\"status\": \"%s\", \"singlestep\": false, \"running\": %s}", status,
                        streq(status, "running") ? "true" : "false");
        peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"query-status\"}"), ret);
        peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"query-jobs\"}"), jobs);
        peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"query-block-jobs\"}"), "[]");
        if (streq(jobs, "[]"))
                ops_expect_resync(f);
}

/* QEMU exits (after a quit, or killed): the monitor closes. */
static inline void ops_qemu_exits(OpsFixture *f) {
        if (!f->qemu)
                return;
        peer_close(&f->peer);
        f->listen_fd = safe_close(f->listen_fd);
        f->qemu = false;
        drain();
}

static inline void ops_teardown(OpsFixture *f) {
        drain();
        f->manager = manager_free(f->manager);
        if (f->qemu) {
                peer_close(&f->peer);
                f->qemu = false;
        }
        f->listen_fd = safe_close(f->listen_fd);
        drain();
        expect_no_record();
        captures_clear();
        check(nftw(f->dir, ops_rm, 16, FTW_DEPTH | FTW_PHYS) >= 0);
        for (size_t i = 0; i < f->n_disks; i++)
                free(f->images_of[i]);
        free(f->state);
        free(f->run);
        free(f->images);
}

static inline void ops_init(void) {
        if (getenv("OPS_TEST_DEBUG"))
                log_set_max_level(LOG_DEBUG);
        else
                log_set_max_level(LOG_CRIT); /* the tests provoke failures on purpose */
        setvbuf(stdout, NULL, _IOLBF, 0);
        check(sd_event_new(&event) >= 0);
}

static inline void ops_done(void) {
        expect_no_record();
        sd_event_unref(event);
}
