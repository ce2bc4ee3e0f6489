/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block job starts (ops/block-jobs.c) against a scripted fake QEMU:
 * the exact sequence of a pull (the graph, then block-stream with the
 * job's id, then the tracker's sync) and of a copy (the destination made,
 * its journal, the graph, blockdev-add of the target, blockdev-mirror),
 * and what a refused start leaves: nothing — for a copy the target node
 * deleted, the destination and its journal removed, in reverse order of
 * making them. The reply comes from QEMU's answer, never from inside the
 * call. An active commit's journal names its base; after a Pivot its
 * "pivoted" mark is on disk before job-dismiss goes out, and a QEMU that
 * dies before the read-back leaves the base stored as the disk.
 */
#include "core/disk.h"
#include "test-ops.h"

static char *started_id;

static void on_started(Domain *d, int error, const char *message, Job *j, void *userdata) {
        record("started %s %s %s", err(error), message ?: "-", j ? job_type_to_string(j->type) : "-");
        free(started_id);
        started_id = j ? strdup(j->id) : NULL;
}

static void on_created(Domain *d, int error, const char *message, Snapshot *s, void *userdata) {
        record("created %s %s", err(error), message ?: "-");
}

/* vda on vda.s1 above vda.qcow2, QEMU running. */
static void setup_chain(OpsFixture *f) {
        _cleanup_free_ char *message = NULL;
        SnapshotPlan *plan = NULL;

        ops_setup(f, 1);
        check(snapshot_plan_new(f->domain, "<domainsnapshot><name>s1</name></domainsnapshot>", SNAPSHOT_CREATE_DISK_ONLY,
                                &plan, &message) >= 0);
        check(snapshot_create(f->domain, plan, on_created, NULL, &message) == 0);
        drain();
        expect_record("created 0 -");
        ops_start_qemu(f, "running", "[]");
        expect_record("attached 0 running");
}

static void answer_nodes(OpsFixture *f) {
        _cleanup_free_ char *top = ops_path(f, "vda.s1"),
                            *nodes = strprintf("[{\"node-name\": \"vda-fmt\", \"drv\": \"qcow2\", \"file\": \"%s\"}, "
                                               "{\"node-name\": \"vda-base\", \"drv\": \"qcow2\", \"file\": \"%s\"}]",
                                               top, f->images_of[0]);
        peer_reply_nodes(f->domain, &f->peer,
                         expect_qmp(&f->peer, "{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":true}}"),
                         nodes);
}

static char *job_journal(OpsFixture *f, const char *id) {
        _cleanup_free_ char *suffix = strprintf(".job-%s", id);
        return domain_runtime_path(f->domain, suffix);
}

static void test_pull(void) {
        _cleanup_free_ char *message = NULL, *journal = NULL;
        OpsFixture f;
        Job *j;

        printf("pull: the graph, block-stream under the job's id, tracked, journaled\n");
        setup_chain(&f);
        check(block_job_pull(f.domain, "vda", 0, 0, on_started, NULL, &message) == 0);
        expect_no_record();
        answer_nodes(&f);
        expect_no_record();
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"block-stream\",\"arguments\":{\"job-id\":\"$id\","
                                       "\"device\":\"vda-fmt\",\"auto-finalize\":false,\"auto-dismiss\":false}}"), "{}");
        expect_record("started 0 - pull");
        check(streq(started_id, captured("id")) && strncmp(started_id, "pull-vda-", 9) == 0);
        j = domain_find_job(f.domain, started_id);
        check(j && !j->owned && j->userdata && domain_disk_job(f.domain, "vda") == j);
        journal = job_journal(&f, started_id);
        check(exists(journal));
        answer_jobs(&f.peer, started_id, "stream", "running", 0, DISK_SIZE, NULL);
        ops_teardown(&f);

        printf("pull refused by QEMU: its words, no job, no journal\n");
        setup_chain(&f);
        check(block_job_pull(f.domain, "vda", 0, 0, on_started, NULL, &message) == 0);
        answer_nodes(&f);
        peer_error(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"block-stream\",\"arguments\":{\"job-id\":\"$id2\","
                                       "\"device\":\"vda-fmt\",\"auto-finalize\":false,\"auto-dismiss\":false}}"),
                   "Node 'vda-fmt' is busy: block device is in use by block job: commit");
        expect_record("started QemuFailed QEMU refused the job: Node 'vda-fmt' is busy: block device is in use by block job: "
                      "commit -");
        check(!domain_find_job(f.domain, captured("id2")) && !domain_disk_job(f.domain, "vda"));
        free(journal);
        journal = job_journal(&f, captured("id2"));
        check(!exists(journal));
        peer_expect_nothing(&f.peer);
        ops_teardown(&f);
}

static void test_copy_refused(void) {
        _cleanup_free_ char *message = NULL, *dest = NULL, *journal = NULL;
        OpsFixture f;
        int64_t id;

        printf("copy, the mirror refused: target node deleted, journal and destination removed\n");
        setup_chain(&f);
        dest = ops_path(&f, "copy.qcow2");
        check(block_job_copy(f.domain, "vda", dest, DISK_FORMAT_QCOW2, 0, 0, on_started, NULL, &message) == 0);
        expect_no_record();
        /* made before QEMU hears of it: the destination and its journal */
        check(exists(dest));
        answer_nodes(&f);
        expect_add_fds(&f.peer, "set");
        id = expect_qmp(&f.peer, "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\",\"node-name\":\"$node\","
                        "\"discard\":\"unmap\",\"cache\":\"$c1\",\"file\":{\"driver\":\"file\",\"filename\":\"/dev/fdset/%s\","
                        "\"locking\":\"off\",\"aio\":\"threads\",\"cache\":\"$c2\"},\"backing\":null}}", captured("set"));
        check(streq_ptr(domain_files_path(f.domain, captured("node")), dest));
        peer_reply(&f.peer, id, "{}");
        peer_error(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"blockdev-mirror\",\"arguments\":{\"job-id\":\"$id\","
                                       "\"device\":\"vda-fmt\",\"auto-finalize\":false,\"auto-dismiss\":false,"
                                       "\"target\":\"%s\",\"sync\":\"full\"}}", captured("node")),
                   "Permission conflict on node 'vda-fmt'");
        journal = job_journal(&f, captured("id"));
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"%s\"}}",
                                       captured("node")), "{}");
        expect_record("started QemuFailed QEMU refused the job: Permission conflict on node 'vda-fmt' -");
        check(!exists(dest) && !exists(journal));
        ops_teardown(&f);

        printf("copy, the target refused: nothing to delete in QEMU, destination and journal removed\n");
        setup_chain(&f);
        free(dest);
        dest = ops_path(&f, "copy.qcow2");
        check(block_job_copy(f.domain, "vda", dest, DISK_FORMAT_QCOW2, 0, 0, on_started, NULL, &message) == 0);
        answer_nodes(&f);
        expect_add_fds(&f.peer, "set");
        peer_error(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"blockdev-add\",\"arguments\":\"$args\"}"),
                   "Could not open 'copy.qcow2': Permission denied");
        expect_qmp(&f.peer, "{\"execute\":\"remove-fd\",\"arguments\":{\"fdset-id\":%s}}", captured("set"));
        {
                _cleanup_free_ char *want = strprintf("started QemuFailed QEMU cannot open the destination %s: Could not open "
                                                      "'copy.qcow2': Permission denied -", dest);
                expect_record(want);
        }
        check(!exists(dest));
        peer_expect_nothing(&f.peer);
        ops_teardown(&f);
}

static char *read_journal(OpsFixture *f, const char *id) {
        _cleanup_free_ char *path = job_journal(f, id);
        char *text = NULL;

        return path && read_full_file(path, 4096, &text, NULL) >= 0 ? text : NULL;
}

static void test_active_commit_pivot_mark(void) {
        _cleanup_free_ char *message = NULL, *text = NULL, *want = NULL, *ready = NULL, *completed = NULL, *top = NULL;
        OpsFixture f;
        int64_t finalize;
        Job *j;

        printf("active commit: its journal names the base; pivoted mark written before job-dismiss; QEMU gone "
               "before the read-back: the mark makes base the disk\n");
        setup_chain(&f);
        top = ops_path(&f, "vda.s1");
        check(block_job_commit(f.domain, "vda", "", "", 0, BLOCK_COMMIT_ACTIVE, on_started, NULL, &message) == 0);
        answer_nodes(&f);
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"block-commit\",\"arguments\":\"$args\"}"), "{}");
        expect_record("started 0 - active-commit");
        answer_jobs(&f.peer, started_id, "commit", "running", 0, DISK_SIZE, NULL);
        want = strprintf("qsnap-job qcow2 0\n%s", f.images_of[0]);
        text = read_journal(&f, started_id);
        check(streq_ptr(text, want));

        j = domain_find_job(f.domain, started_id);
        check(j);
        peer_status(&f.peer, started_id, "ready");
        ready = strprintf("{\"device\": \"%s\", \"len\": %d, \"offset\": %d, \"speed\": 0, \"type\": \"commit\"}",
                          started_id, (int) DISK_SIZE, (int) DISK_SIZE);
        peer_event(&f.peer, "BLOCK_JOB_READY", ready);
        drain();
        check(j->state == JOB_STATE_READY);
        check(job_pivot(j, NULL, NULL, &message) == 0);
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"job-complete\",\"arguments\":{\"id\":\"%s\"}}",
                                       started_id), "{}");
        peer_status(&f.peer, started_id, "waiting");
        peer_status(&f.peer, started_id, "pending");
        finalize = expect_qmp(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"%s\"}}", started_id);
        answer_jobs(&f.peer, started_id, "commit", "pending", DISK_SIZE, DISK_SIZE, NULL);
        free(text);
        text = read_journal(&f, started_id);
        check(streq_ptr(text, want)); /* not before QEMU ended the job */
        completed = strprintf("{\"device\": \"%s\", \"len\": %d, \"offset\": %d, \"speed\": 0, \"type\": \"commit\"}",
                              started_id, (int) DISK_SIZE, (int) DISK_SIZE);
        peer_event(&f.peer, "BLOCK_JOB_COMPLETED", completed);
        peer_status(&f.peer, started_id, "concluded");
        peer_reply(&f.peer, finalize, "{}");
        /* job-dismiss goes out with the mark on disk already */
        expect_qmp(&f.peer, "{\"execute\":\"job-dismiss\",\"arguments\":{\"id\":\"%s\"}}", started_id);
        free(text);
        free(want);
        text = read_journal(&f, started_id);
        want = strprintf("qsnap-job qcow2 1\n%s", f.images_of[0]);
        check(streq_ptr(text, want));
        check(streq(ops_source(&f, "vda"), top)); /* nothing read back yet */
        /* QEMU dies before it answers: no read-back */
        ops_qemu_exits(&f);
        check(streq(ops_source(&f, "vda"), f.images_of[0]));
        check(access(top, F_OK) >= 0); /* the old active file stays */
        free(text);
        text = read_journal(&f, started_id);
        check(!text);
        ops_teardown(&f);
}

int main(int argc, char *argv[]) {
        ops_init();
        test_pull();
        test_copy_refused();
        test_active_commit_pivot_mark();
        free(started_id);
        ops_done();
        printf("all block job operation tests passed\n");
        return EXIT_SUCCESS;
}
