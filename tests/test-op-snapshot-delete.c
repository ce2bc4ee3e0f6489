/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Delete (ops/snapshot-delete.c) against a scripted fake QEMU: a forward
 * merge of the active layer as one local snapshot-delete job whose QEMU
 * step (an active commit under the job's id) the job tracker drives —
 * ready → job-complete, pending → job-finalize, concluded → dismiss — and
 * then the metadata and the files; an internal snapshot's snapshot-delete
 * job; Abort and QEMU gone in the middle of a merge (the snapshot stays,
 * the journal goes); an offline merge with qemu-img; and the recovery of
 * an interrupted delete from each journal phase. The domain observer
 * records how the delete's own job ends, as the bus would hear it.
 */
#include "config.h"
#include "core/files.h"
#include "test-ops.h"

static void on_job_event(Domain *d, Job *j, JobEvent e, void *userdata) {
        if (e == JOB_EVENT_FINISHED)
                record("job %s %s %s", j->id, job_state_to_string(j->state), j->error ?: "-");
}

static const DomainObserver observer = {
        .job_event = on_job_event,
};

static void on_created(Domain *d, int error, const char *message, Snapshot *s, void *userdata) {
        record("created %s %s", err(error), message ?: "-");
}

static char *delete_job_id;

static void on_deleted(Domain *d, int error, const char *message, Job *j, void *userdata) {
        record("deleted %s %s %s", err(error), message ?: "-", j ? "job" : "-");
        free(delete_job_id);
        delete_job_id = j ? strdup(j->id) : NULL;
}

static void setup(OpsFixture *f, size_t n) {
        ops_setup(f, n);
        manager_set_observer(f->manager, &observer, NULL);
}

static void create_offline(OpsFixture *f, const char *name) {
        _cleanup_free_ char *xml = strprintf("<domainsnapshot><name>%s</name></domainsnapshot>", name), *message = NULL;
        SnapshotPlan *plan = NULL;

        check(snapshot_plan_new(f->domain, xml, SNAPSHOT_CREATE_DISK_ONLY, &plan, &message) >= 0);
        check(snapshot_create(f->domain, plan, on_created, NULL, &message) == 0);
        drain();
        expect_record("created 0 -");
}

static void delete(OpsFixture *f, const char *name, uint64_t flags) {
        _cleanup_free_ char *message = NULL;
        Snapshot *s = snapshot_tree_find(&f->domain->snapshots, name);

        check(s);
        if (snapshot_delete(f->domain, s, flags, on_deleted, NULL, &message) < 0) {
                fprintf(stderr, "delete refused: %s\n", strna(message));
                exit(EXIT_FAILURE);
        }
        expect_no_record();
        check(f->domain->snapshot_busy);
}

/* vda runs on vda.s1 (node vda-fmt) above vda.qcow2 (node vda-base). */
static void answer_nodes(OpsFixture *f, const char *top, const char *base) {
        _cleanup_free_ char *nodes = strprintf("[{\"node-name\": \"vda-fmt\", \"drv\": \"qcow2\", \"file\": \"%s\"}, "
                                               "{\"node-name\": \"vda-file\", \"drv\": \"file\", \"file\": \"%s\"}, "
                                               "{\"node-name\": \"vda-base\", \"drv\": \"qcow2\", \"file\": \"%s\"}]",
                                               top, top, base);
        peer_reply_nodes(f->domain, &f->peer,
                         expect_qmp(&f->peer, "{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":true}}"),
                         nodes);
}

/* Delete s1 of a running vda on vda.s1: the active commit starts. */
static void start_active_commit(OpsFixture *f, const char *o) {
        delete(f, "s1", 0);
        drain();
        expect_record("deleted 0 - job"); /* at once: the merge runs on as a job */
        check(delete_job_id && strncmp(delete_job_id, "snapshot.delete-vda-", 20) == 0);
        check(domain_find_job(f->domain, delete_job_id)->local);
        check(journal_exists(f, "snapshot-delete"));
        answer_nodes(f, o, f->images_of[0]);
        peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"block-commit\",\"arguments\":{\"job-id\":\"%s\","
                                        "\"device\":\"vda-fmt\",\"base-node\":\"vda-base\",\"auto-finalize\":false,"
                                        "\"auto-dismiss\":false}}", delete_job_id), "{}");
        answer_jobs(&f->peer, delete_job_id, "commit", "running", 0, 100, NULL);
        /* the bus still finds the delete's own job under that id */
        check(domain_find_job(f->domain, delete_job_id)->local);
}

static void test_forward_live(void) {
        _cleanup_free_ char *o = NULL;
        OpsFixture f;

        printf("forward, active layer, live: block-commit driven by the job tracker, then metadata and files\n");
        setup(&f, 1);
        create_offline(&f, "s1");
        o = ops_path(&f, "vda.s1");
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        start_active_commit(&f, o);

        peer_status(&f.peer, delete_job_id, "ready");
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"job-complete\",\"arguments\":{\"id\":\"%s\"}}",
                                       delete_job_id), "{}");
        peer_status(&f.peer, delete_job_id, "waiting");
        peer_status(&f.peer, delete_job_id, "pending");
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"job-finalize\",\"arguments\":{\"id\":\"%s\"}}",
                                       delete_job_id), "{}");
        answer_jobs(&f.peer, delete_job_id, "commit", "pending", 100, 100, NULL);
        {
                _cleanup_free_ char *data = strprintf("{\"device\": \"%s\", \"len\": 100, \"offset\": 100, "
                                                      "\"speed\": 0, \"type\": \"commit\"}", delete_job_id);
                peer_event(&f.peer, "BLOCK_JOB_COMPLETED", data);
        }
        peer_status(&f.peer, delete_job_id, "concluded");
        expect_dismiss(&f.peer, delete_job_id);
        /* the node of the file that left the graph goes */
        expect_qmp(&f.peer, "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"vda-fmt\"}}");
        {
                _cleanup_free_ char *want = strprintf("job %s completed -", delete_job_id);
                expect_record(want);
        }
        check(!f.domain->snapshot_busy);
        check(!snapshot_tree_find(&f.domain->snapshots, "s1"));
        check(streq(ops_source(&f, "vda"), f.images_of[0])); /* O renamed to F everywhere */
        check(!exists(o));
        check(!journal_exists(&f, "snapshot-delete"));
        ops_teardown(&f);
}

static void test_abort_and_qemu_gone(void) {
        _cleanup_free_ char *o = NULL, *message = NULL;
        OpsFixture f;
        Job *j;

        printf("Abort of the merge: job-cancel of the QEMU step, the job ends canceled, the snapshot stays\n");
        setup(&f, 1);
        create_offline(&f, "s1");
        o = ops_path(&f, "vda.s1");
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        start_active_commit(&f, o);
        j = domain_find_job(f.domain, delete_job_id);
        check(job_abort(j, false, NULL, NULL, &message) == 1);
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"job-cancel\",\"arguments\":{\"id\":\"%s\"}}", delete_job_id),
                   "{}");
        peer_status(&f.peer, delete_job_id, "aborting");
        {
                _cleanup_free_ char *data = strprintf("{\"device\": \"%s\", \"len\": 100, \"offset\": 3, "
                                                      "\"speed\": 0, \"type\": \"commit\"}", delete_job_id);
                peer_event(&f.peer, "BLOCK_JOB_CANCELLED", data);
        }
        peer_status(&f.peer, delete_job_id, "concluded");
        expect_dismiss(&f.peer, delete_job_id);
        {
                _cleanup_free_ char *want = strprintf("job %s canceled The merge was aborted.", delete_job_id);
                expect_record(want);
        }
        check(snapshot_tree_find(&f.domain->snapshots, "s1") && streq(ops_source(&f, "vda"), o) && exists(o));
        check(!journal_exists(&f, "snapshot-delete") && !f.domain->snapshot_busy);
        peer_expect_nothing(&f.peer);
        ops_teardown(&f);

        printf("QEMU gone during the merge: the job fails, the snapshot stays\n");
        setup(&f, 1);
        create_offline(&f, "s1");
        free(o);
        o = ops_path(&f, "vda.s1");
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        start_active_commit(&f, o);
        ops_qemu_exits(&f);
        {
                _cleanup_free_ char *want = strprintf("job %s failed QEMU's merge job failed: QEMU went away before the "
                                                      "job ended (its process exited or closed the monitor)",
                                                      delete_job_id);
                expect_record(want);
        }
        check(snapshot_tree_find(&f.domain->snapshots, "s1") && exists(o));
        check(!journal_exists(&f, "snapshot-delete") && f.domain->state == DOMAIN_CRASHED);
        ops_teardown(&f);
}

static void test_internal_live(void) {
        _cleanup_free_ char *message = NULL, *xml = NULL;
        char *argv[5 + 1];
        OpsFixture f;

        printf("internal, live: one snapshot-delete job through the job tracker, done before the reply\n");
        setup(&f, 1);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        /* An internal snapshot with memory, as CreateSnapshot records it,
         * and its tag in the image (QEMU would have put it there). */
        xml = strprintf("<domainsnapshot><name>m1</name><state>running</state><creationTime>1700000000</creationTime>"
                        "<memory snapshot='internal'/><disks><disk name='vda' snapshot='internal'/></disks></domainsnapshot>");
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
                Snapshot *s;

                check(snapshot_def_parse(xml, strlen(xml), SNAPSHOT_PARSE_REDEFINE, &def, &message) >= 0);
                check(snapshot_tree_add(&f.domain->snapshots, TAKE_PTR(def), true, &s) >= 0);
        }
        argv[0] = (char *) QEMU_IMG_BINARY, argv[1] = (char *) "snapshot", argv[2] = (char *) "-c";
        argv[3] = (char *) "m1", argv[4] = f.images_of[0], argv[5] = NULL;
        check(child_run_fds(argv, NULL, 0, NULL) == 0);

        delete(&f, "m1", 0);
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                                       "\"/machine/peripheral/vda/virtio-backend\",\"property\":\"drive\"}}"), "\"vda-fmt\"");
        check(journal_exists(&f, "snapshot-delete"));
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"snapshot-delete\",\"arguments\":{\"job-id\":\"$del\","
                                       "\"tag\":\"m1\",\"devices\":[\"vda-fmt\"]}}"), "{}");
        answer_jobs(&f.peer, captured("del"), "snapshot-delete", "concluded", 1, 1, NULL);
        expect_dismiss(&f.peer, captured("del"));
        expect_record("deleted 0 - -");
        check(!snapshot_tree_find(&f.domain->snapshots, "m1") && !journal_exists(&f, "snapshot-delete"));
        ops_teardown(&f);
}

static void test_forward_offline(void) {
        _cleanup_free_ char *s1 = NULL, *s2 = NULL;
        OpsFixture f;

        printf("forward, offline: qemu-img commit, the overlay above re-pointed, metadata, files\n");
        setup(&f, 1);
        create_offline(&f, "s1");
        create_offline(&f, "s2");
        s1 = ops_path(&f, "vda.s1");
        s2 = ops_path(&f, "vda.s2");
        delete(&f, "s1", 0);
        for (int i = 0; i < 1000 && n_records < 2; i++)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        expect_record("deleted 0 - job");
        {
                _cleanup_free_ char *want = strprintf("job %s completed -", delete_job_id);
                expect_record(want);
        }
        check(!exists(s1) && exists(s2) && streq(ops_source(&f, "vda"), s2));
        check(!snapshot_tree_find(&f.domain->snapshots, "s1") && !journal_exists(&f, "snapshot-delete"));
        /* s2 froze what s1's overlay held: its recorded source follows (O → F) */
        check(streq(snapshot_tree_find(&f.domain->snapshots, "s2")->def->disks[0].source, s2));
        ops_teardown(&f);
}

/* A delete journal of s1 (forward: O = vda.s1 into F = vda.qcow2). */
static void write_journal(OpsFixture *f, const char *phase, const char *o) {
        json_object *j = json_object_new_object(), *renames = json_object_new_array(), *e = json_object_new_object(),
                    *files = json_object_new_array();

        check(j && renames && e && files);
        json_object_object_add(j, "snapshot", json_object_new_string("s1"));
        json_object_object_add(j, "job", json_object_new_string("snapshot.delete-vda-1"));
        json_object_object_add(j, "phase", json_object_new_string(phase));
        json_object_object_add(e, "target", json_object_new_string("vda"));
        json_object_object_add(e, "from", json_object_new_string(o));
        json_object_object_add(e, "to", json_object_new_string(f->images_of[0]));
        json_object_object_add(e, "forward", json_object_new_boolean(true));
        json_object_array_add(renames, e);
        json_object_object_add(j, "renames", renames);
        json_object_array_add(files, json_object_new_string(o));
        json_object_object_add(j, "unlink", files);
        check(op_journal_write(f->state, f->domain->def->uuid, "snapshot-delete", j) >= 0);
        json_object_put(j);
}

static void test_recovery(void) {
        _cleanup_free_ char *o = NULL;
        OpsFixture f;

        printf("recovery, phase metadata: the files left go, finished\n");
        setup(&f, 1);
        create_offline(&f, "s1");
        o = ops_path(&f, "vda.s1");
        /* metadata stored already: s1 gone, the disk back on F */
        check(free_and_strdup(&domain_def_find_disk(f.domain->def, "vda")->source, f.images_of[0]) >= 0);
        {
                Snapshot *s = snapshot_tree_find(&f.domain->snapshots, "s1");
                check(snapshot_metadata_commit(f.domain, &s, 1, NULL, 0, NULL) >= 0);
        }
        write_journal(&f, "metadata", o);
        operation_recover_offline(f.domain);
        drain();
        check(!exists(o) && !journal_exists(&f, "snapshot-delete"));
        ops_teardown(&f);

        printf("recovery, phase merging, the merge had completed (O left every chain): metadata, files\n");
        setup(&f, 1);
        create_offline(&f, "s1");
        free(o);
        o = ops_path(&f, "vda.s1");
        /* QEMU pivoted before the crash: the definition runs on F */
        check(free_and_strdup(&domain_def_find_disk(f.domain->def, "vda")->source, f.images_of[0]) >= 0);
        write_journal(&f, "merging", o);
        operation_recover_offline(f.domain);
        drain();
        check(!snapshot_tree_find(&f.domain->snapshots, "s1"));
        check(!exists(o) && !journal_exists(&f, "snapshot-delete"));
        ops_teardown(&f);

        printf("recovery, phase merging, not merged: the delete runs again (qemu-img), finished\n");
        setup(&f, 1);
        create_offline(&f, "s1");
        free(o);
        o = ops_path(&f, "vda.s1");
        write_journal(&f, "merging", o);
        operation_recover_offline(f.domain);
        for (int i = 0; i < 1000 && n_records < 1; i++)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        check(n_records == 1 && strncmp(records[0], "job snapshot.delete-vda-", 24) == 0 &&
              strstr(records[0], " completed -"));
        expect_record(records[0]);
        check(!snapshot_tree_find(&f.domain->snapshots, "s1") && !exists(o));
        check(streq(ops_source(&f, "vda"), f.images_of[0]) && !journal_exists(&f, "snapshot-delete"));
        ops_teardown(&f);
}

int main(int argc, char *argv[]) {
        ops_init();
        test_forward_live();
        test_abort_and_qemu_gone();
        test_internal_live();
        test_forward_offline();
        test_recovery();
        free(delete_job_id);
        ops_done();
        printf("all snapshot-delete operation tests passed\n");
        return EXIT_SUCCESS;
}
