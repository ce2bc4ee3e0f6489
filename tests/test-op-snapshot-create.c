/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateSnapshot (ops/snapshot-create.c) against a scripted fake QEMU, in
 * milliseconds: the exact QMP sequence of each kind (external live: root
 * nodes, blockdev-add, one transaction; internal: a snapshot-save job the
 * job tracker follows), the undo of a refused step (which nodes are
 * deleted, which files removed, the journal gone, nothing recorded), the
 * offline path, and the recovery of an interrupted snapshot from its
 * journal (switched → recorded; not switched → rolled back). The e2e
 * tests (tests/test_snapshots.py) prove the same with real QEMU.
 */
#include "test-ops.h"

static void on_created(Domain *d, int error, const char *message, Snapshot *s, void *userdata) {
        record("done %s %s %s", err(error), message ?: "-", s ? snapshot_name(s) : "-");
}

static void create(OpsFixture *f, const char *xml, uint64_t flags) {
        _cleanup_free_ char *message = NULL;
        SnapshotPlan *plan = NULL;

        if (snapshot_plan_new(f->domain, xml, flags, &plan, &message) < 0) {
                fprintf(stderr, "plan refused: %s\n", strna(message));
                exit(EXIT_FAILURE);
        }
        check(snapshot_create(f->domain, plan, on_created, NULL, &message) == 0);
        expect_no_record(); /* never from inside the call */
        check(f->domain->snapshot_busy);
}

static void expect_root_node(OpsFixture *f, const char *target) {
        _cleanup_free_ char *ret = strprintf("\"%s-fmt\"", target);
        peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                                        "\"/machine/peripheral/%s/virtio-backend\",\"property\":\"drive\"}}", target), ret);
}

/* The overlay goes to QEMU as descriptors (add-fd), then its node on
 * /dev/fdset/N. `file` is what qsnapd opened: the map says so. */
static int64_t expect_blockdev_add(OpsFixture *f, const char *node, const char *file) {
        _cleanup_free_ char *set_name = strprintf("set-%s", node);
        int64_t id;

        expect_add_fds(&f->peer, set_name);
        id = expect_qmp(&f->peer, "{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\",\"node-name\":\"%s\","
                        "\"file\":{\"driver\":\"file\",\"filename\":\"/dev/fdset/%s\",\"locking\":\"off\"},"
                        "\"backing\":null}}", node, captured(set_name));
        check(streq_ptr(domain_files_path(f->domain, node), file));
        return id;
}

static void test_external_live(void) {
        _cleanup_free_ char *ova = NULL, *ovb = NULL;
        OpsFixture f;
        int64_t a, b;

        printf("external live, two disks: root nodes, intent, overlays, blockdev-add each, one transaction\n");
        ops_setup(&f, 2);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        ova = ops_path(&f, "vda.s1");
        ovb = ops_path(&f, "vdb.s1");

        create(&f, "<domainsnapshot><name>s1</name></domainsnapshot>", SNAPSHOT_CREATE_DISK_ONLY);
        expect_root_node(&f, "vda");
        expect_root_node(&f, "vdb");
        a = expect_blockdev_add(&f, "vda-1", ova);
        b = expect_blockdev_add(&f, "vdb-2", ovb);
        /* Before QEMU is told: the intent on disk, the overlays made. */
        check(journal_exists(&f, "snapshot-create"));
        check(exists(ova) && exists(ovb));
        peer_reply(&f.peer, a, "{}");
        peer_reply(&f.peer, b, "{}");
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"transaction\",\"arguments\":{\"actions\":["
                                       "{\"type\":\"blockdev-snapshot\",\"data\":{\"node\":\"vda-fmt\",\"overlay\":\"vda-1\"}},"
                                       "{\"type\":\"blockdev-snapshot\",\"data\":{\"node\":\"vdb-fmt\",\"overlay\":\"vdb-2\"}}]}}"),
                   "{}");
        expect_record("done 0 - s1");
        check(!f.domain->snapshot_busy);
        check(!journal_exists(&f, "snapshot-create"));
        check(streq(ops_source(&f, "vda"), ova) && streq(ops_source(&f, "vdb"), ovb));
        check(streq(domain_def_find_disk(f.domain->live, "vda")->source, ova));
        check(f.domain->snapshots.current && streq(snapshot_name(f.domain->snapshots.current), "s1"));
        peer_expect_nothing(&f.peer);
        ops_teardown(&f);
}

static void test_external_live_refused(void) {
        _cleanup_free_ char *ova = NULL, *ovb = NULL;
        OpsFixture f;
        int64_t a, b;

        printf("external live, transaction refused: both nodes deleted (last added first), both files removed\n");
        ops_setup(&f, 2);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        ova = ops_path(&f, "vda.s1");
        ovb = ops_path(&f, "vdb.s1");
        create(&f, "<domainsnapshot><name>s1</name></domainsnapshot>", SNAPSHOT_CREATE_DISK_ONLY);
        expect_root_node(&f, "vda");
        expect_root_node(&f, "vdb");
        a = expect_blockdev_add(&f, "vda-1", ova);
        b = expect_blockdev_add(&f, "vdb-2", ovb);
        peer_reply(&f.peer, b, "{}");
        peer_reply(&f.peer, a, "{}");
        peer_error(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"transaction\",\"arguments\":\"$any\"}"),
                   "Node 'vdb-fmt' is busy: block device is in use by block job: stream");
        expect_qmp(&f.peer, "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"vda-1\"}}");
        expect_qmp(&f.peer, "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"vdb-2\"}}");
        expect_record("done QemuFailed QEMU refused the snapshot transaction: Node 'vdb-fmt' is busy: block device is in use "
                      "by block job: stream -");
        check(!exists(ova) && !exists(ovb));
        check(!journal_exists(&f, "snapshot-create"));
        check(streq(ops_source(&f, "vda"), f.images_of[0]) && streq(ops_source(&f, "vdb"), f.images_of[1]));
        check(!f.domain->snapshots.first && !f.domain->snapshot_busy);
        ops_teardown(&f);
}

static void test_blockdev_add_refused(void) {
        _cleanup_free_ char *ova = NULL, *ovb = NULL;
        OpsFixture f;
        int64_t a, b;

        printf("external live, one blockdev-add refused: the other node deleted, no transaction, files removed\n");
        ops_setup(&f, 2);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        ova = ops_path(&f, "vda.s1");
        ovb = ops_path(&f, "vdb.s1");
        create(&f, "<domainsnapshot><name>s1</name></domainsnapshot>", SNAPSHOT_CREATE_DISK_ONLY);
        expect_root_node(&f, "vda");
        expect_root_node(&f, "vdb");
        a = expect_blockdev_add(&f, "vda-1", ova);
        b = expect_blockdev_add(&f, "vdb-2", ovb);
        peer_reply(&f.peer, a, "{}");
        peer_error(&f.peer, b, "Could not open 'x': Permission denied");
        /* The refused node's descriptors go back; the other node goes, then its descriptors. */
        expect_qmp(&f.peer, "{\"execute\":\"remove-fd\",\"arguments\":{\"fdset-id\":%s}}", captured("set-vdb-2"));
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"vda-1\"}}"),
                   "{}");
        expect_qmp(&f.peer, "{\"execute\":\"remove-fd\",\"arguments\":{\"fdset-id\":%s}}", captured("set-vda-1"));
        check(!domain_files_path(f.domain, "vda-1") && !domain_files_path(f.domain, "vdb-2"));
        {
                _cleanup_free_ char *want = strprintf("done QemuFailed QEMU cannot open overlay %s: Could not open 'x': "
                                                      "Permission denied -", ovb);
                expect_record(want);
        }
        check(!exists(ova) && !exists(ovb) && !journal_exists(&f, "snapshot-create"));
        ops_teardown(&f);
}

static void test_internal_live(void) {
        OpsFixture f;

        printf("internal live: snapshot-save, the job tracker follows it to its end\n");
        ops_setup(&f, 1);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        create(&f, "<domainsnapshot><name>m1</name></domainsnapshot>", 0);
        expect_root_node(&f, "vda");
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"snapshot-save\",\"arguments\":{\"job-id\":\"$job\","
                                       "\"tag\":\"m1\",\"vmstate\":\"vda-fmt\",\"devices\":[\"vda-fmt\"]}}"), "{}");
        answer_jobs(&f.peer, captured("job"), "snapshot-save", "running", 0, 1, NULL);
        check(!journal_exists(&f, "snapshot-create")); /* one QEMU job: nothing of ours to roll back */
        peer_status(&f.peer, captured("job"), "waiting");
        peer_status(&f.peer, captured("job"), "pending"); /* QEMU finalizes it itself */
        expect_no_record();
        peer_status(&f.peer, captured("job"), "concluded");
        answer_jobs(&f.peer, captured("job"), "snapshot-save", "concluded", 1, 1, NULL);
        expect_dismiss(&f.peer, captured("job"));
        expect_record("done 0 - m1");
        check(f.domain->snapshots.current && snapshot_memory(f.domain->snapshots.current) == SNAPSHOT_LOCATION_INTERNAL);
        /* The job was the operation's: never one of the domain's. */
        check(!domain_find_job(f.domain, captured("job")));
        ops_teardown(&f);

        printf("internal live, QEMU's job fails: its words, nothing recorded\n");
        ops_setup(&f, 1);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        create(&f, "<domainsnapshot><name>m1</name></domainsnapshot>", 0);
        expect_root_node(&f, "vda");
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"snapshot-save\",\"arguments\":{\"job-id\":\"$job2\","
                                       "\"tag\":\"m1\",\"vmstate\":\"vda-fmt\",\"devices\":[\"vda-fmt\"]}}"), "{}");
        answer_jobs(&f.peer, captured("job2"), "snapshot-save", "running", 0, 1, NULL);
        peer_status(&f.peer, captured("job2"), "aborting");
        peer_status(&f.peer, captured("job2"), "concluded");
        answer_jobs(&f.peer, captured("job2"), "snapshot-save", "concluded", 0, 1,
                    "Snapshot 'm1' already exists in one or more devices");
        expect_dismiss(&f.peer, captured("job2"));
        expect_record("done QemuFailed QEMU could not take the snapshot: Snapshot 'm1' already exists in one or more "
                      "devices -");
        check(!f.domain->snapshots.first && !f.domain->snapshot_busy);
        ops_teardown(&f);
}

static void test_offline(void) {
        _cleanup_free_ char *ov = NULL;
        OpsFixture f;

        printf("external offline: the overlay written by qsnapd, the definition switched, no QMP\n");
        ops_setup(&f, 1);
        ov = ops_path(&f, "vda.off");
        create(&f, "<domainsnapshot><name>off</name></domainsnapshot>", SNAPSHOT_CREATE_DISK_ONLY);
        drain();
        expect_record("done 0 - off");
        check(exists(ov) && streq(ops_source(&f, "vda"), ov));
        check(!journal_exists(&f, "snapshot-create"));
        ops_teardown(&f);
}

/* The journal of a live external snapshot of vda interrupted after its
 * overlay was made, as plan_write_intent() writes it. */
static void write_intent(OpsFixture *f, const char *overlay) {
        _cleanup_free_ char *xml = strprintf("<domainsnapshot><name>cr</name><state>disk-snapshot</state>"
                                             "<creationTime>1700000000</creationTime><memory snapshot='no'/><disks>"
                                             "<disk name='vda' snapshot='external'><driver type='qcow2'/>"
                                             "<source file='%s'/></disk></disks></domainsnapshot>", overlay);
        json_object *o = json_object_new_object(), *disks = json_object_new_array(), *e = json_object_new_object();

        check(xml && o && disks && e);
        json_object_object_add(o, "snapshot_xml", json_object_new_string(xml));
        json_object_object_add(o, "metadata", json_object_new_boolean(true));
        json_object_object_add(o, "resume", json_object_new_boolean(false));
        json_object_object_add(e, "target", json_object_new_string("vda"));
        json_object_object_add(e, "below", json_object_new_string(f->images_of[0]));
        json_object_object_add(e, "overlay", json_object_new_string(overlay));
        json_object_object_add(e, "node", json_object_new_string("vda-1"));
        json_object_object_add(e, "created", json_object_new_boolean(true));
        json_object_array_add(disks, e);
        json_object_object_add(o, "disks", disks);
        check(op_journal_write(f->state, f->domain->def->uuid, "snapshot-create", o) >= 0);
        json_object_put(o);
        ops_image(overlay, f->images_of[0]);
}

static void test_recovery(void) {
        _cleanup_free_ char *ov = NULL;
        OpsFixture f;

        printf("recovery: QEMU runs on the planned overlay node → finished, recorded\n");
        ops_setup(&f, 1);
        ov = ops_path(&f, "vda.cr");
        write_intent(&f, ov);
        ops_start_qemu(&f, "running", "[]");
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                                       "\"/machine/peripheral/vda/virtio-backend\",\"property\":\"drive\"}}"), "\"vda-1\"");
        expect_record("attached 0 running");
        check(!journal_exists(&f, "snapshot-create"));
        check(exists(ov) && streq(ops_source(&f, "vda"), ov));
        check(snapshot_tree_find(&f.domain->snapshots, "cr"));
        ops_teardown(&f);

        printf("recovery: QEMU still runs the old node → rolled back: node deleted, overlay removed\n");
        ops_setup(&f, 1);
        free(ov);
        ov = ops_path(&f, "vda.cr");
        write_intent(&f, ov);
        ops_start_qemu(&f, "running", "[]");
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                                       "\"/machine/peripheral/vda/virtio-backend\",\"property\":\"drive\"}}"), "\"vda-fmt\"");
        expect_qmp(&f.peer, "{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":\"vda-1\"}}");
        expect_record("attached 0 running");
        check(!journal_exists(&f, "snapshot-create"));
        check(!exists(ov) && streq(ops_source(&f, "vda"), f.images_of[0]));
        check(!snapshot_tree_find(&f.domain->snapshots, "cr"));
        ops_teardown(&f);

        printf("recovery without QEMU: rolled back from the files alone\n");
        ops_setup(&f, 1);
        free(ov);
        ov = ops_path(&f, "vda.cr");
        write_intent(&f, ov);
        operation_recover_offline(f.domain);
        drain();
        check(!journal_exists(&f, "snapshot-create"));
        check(!exists(ov) && streq(ops_source(&f, "vda"), f.images_of[0]));
        ops_teardown(&f);
}

int main(int argc, char *argv[]) {
        ops_init();
        test_external_live();
        test_external_live_refused();
        test_blockdev_add_refused();
        test_internal_live();
        test_offline();
        test_recovery();
        ops_done();
        printf("all snapshot-create operation tests passed\n");
        return EXIT_SUCCESS;
}
