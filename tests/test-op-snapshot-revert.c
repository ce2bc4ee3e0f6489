/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Revert (ops/snapshot-revert.c) against a scripted fake QEMU: the steps
 * of an external revert of a running domain (quit, a new overlay, the
 * definition switched), an internal revert with memory into the running
 * QEMU (a snapshot-load job the job tracker follows, then cont), the undo
 * when a step fails (QEMU will not start: the definition goes back, the
 * new overlay goes; a failed load: QEMU stopped, QEMU's words), and the
 * recovery from each kind of journal (a load job adopted concluded, with
 * an error, or none; an external revert switched or not). qemu-img puts
 * the internal snapshot the plan looks for into the image.
 */
#include "config.h"
#include "test-ops.h"

static void on_created(Domain *d, int error, const char *message, Snapshot *s, void *userdata) {
        record("created %s %s", err(error), message ?: "-");
}

static void on_reverted(Domain *d, int error, const char *message, void *userdata) {
        record("reverted %s %s", err(error), message ?: "-");
}

/* An external disk-only snapshot of the shut-off domain: vda.<name> on vda. */
static void create_offline(OpsFixture *f, const char *name) {
        _cleanup_free_ char *xml = strprintf("<domainsnapshot><name>%s</name></domainsnapshot>", name), *message = NULL;
        SnapshotPlan *plan = NULL;

        check(snapshot_plan_new(f->domain, xml, SNAPSHOT_CREATE_DISK_ONLY, &plan, &message) >= 0);
        check(snapshot_create(f->domain, plan, on_created, NULL, &message) == 0);
        drain();
        expect_record("created 0 -");
}

/* An internal snapshot with memory of the running domain, and the tag in
 * vda's image (QEMU would have put it there). */
static void create_internal_live(OpsFixture *f, const char *name) {
        _cleanup_free_ char *xml = strprintf("<domainsnapshot><name>%s</name></domainsnapshot>", name), *message = NULL;
        char *argv[] = { (char *) QEMU_IMG_BINARY, (char *) "snapshot", (char *) "-c", (char *) name,
                         f->images_of[0], NULL };
        SnapshotPlan *plan = NULL;

        check(snapshot_plan_new(f->domain, xml, 0, &plan, &message) >= 0);
        check(snapshot_create(f->domain, plan, on_created, NULL, &message) == 0);
        peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"qom-get\",\"arguments\":\"$x\"}"), "\"vda-fmt\"");
        peer_reply(&f->peer, expect_qmp(&f->peer, "{\"execute\":\"snapshot-save\",\"arguments\":{\"job-id\":\"$save\","
                                        "\"tag\":\"%s\",\"vmstate\":\"vda-fmt\",\"devices\":[\"vda-fmt\"]}}", name), "{}");
        answer_jobs(&f->peer, captured("save"), "snapshot-save", "concluded", 1, 1, NULL);
        expect_dismiss(&f->peer, captured("save"));
        expect_record("created 0 -");
        check(child_run_fds(argv, NULL, 0, NULL) == 0);
}

static void revert(OpsFixture *f, const char *name, uint64_t flags) {
        _cleanup_free_ char *message = NULL;
        Snapshot *s = snapshot_tree_find(&f->domain->snapshots, name);
        RevertPlan *plan = NULL;

        check(s);
        if (revert_plan_new(s, flags, &plan, &message) < 0) {
                fprintf(stderr, "revert refused: %s\n", strna(message));
                exit(EXIT_FAILURE);
        }
        check(snapshot_revert(plan, on_reverted, NULL, &message) == 0);
        expect_no_record();
        check(f->domain->snapshot_busy);
}

static void test_external_running(void) {
        _cleanup_free_ char *ov = NULL, *s1 = NULL;
        OpsFixture f;

        printf("external, running, FORCE: quit, a new overlay on the frozen file, the definition switched\n");
        ops_setup(&f, 1);
        create_offline(&f, "s1");
        s1 = ops_path(&f, "vda.s1");
        check(streq(ops_source(&f, "vda"), s1));
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        ov = ops_path(&f, "vda.s1-revert1");

        revert(&f, "s1", SNAPSHOT_REVERT_FORCE);
        expect_qmp(&f.peer, "{\"execute\":\"quit\"}");
        check(journal_exists(&f, "snapshot-revert"));
        check(!exists(ov)); /* nothing touched while QEMU runs */
        ops_qemu_exits(&f);
        expect_record("reverted 0 -");
        check(f.domain->state == DOMAIN_SHUTOFF && !f.domain->snapshot_busy);
        check(exists(ov) && streq(ops_source(&f, "vda"), ov));
        check(exists(s1)); /* the old branch stays */
        check(!journal_exists(&f, "snapshot-revert"));
        check(f.domain->snapshots.current && f.domain->snapshots.current->def->n_revert_disks == 1 &&
              streq(f.domain->snapshots.current->def->revert_disks[0].source, ov));
        ops_teardown(&f);
}

static void test_external_start_fails(void) {
        _cleanup_free_ char *ov = NULL, *s1 = NULL;
        OpsFixture f;

        printf("external, shut off, RUNNING, QEMU does not start: definition back, new overlay removed\n");
        ops_setup(&f, 1);
        create_offline(&f, "s1");
        s1 = ops_path(&f, "vda.s1");
        ov = ops_path(&f, "vda.s1-revert1");
        revert(&f, "s1", SNAPSHOT_REVERT_RUNNING);
        /* The emulator (/nonexistent/qemu) exits at once: its monitor with
         * it, before qsnapd connects (refused at once) or after (the start
         * fails when the monitor closes). Either way the start failed. */
        for (int i = 0; i < 500 && n_records == 0; i++)
                check(sd_event_run(event, 10 * USEC_PER_MSEC) >= 0);
        if (n_records != 1 || strncmp(records[0], "reverted ", 9) != 0 || strncmp(records[0], "reverted 0 ", 11) == 0 ||
            !strstr(records[0], "start")) {
                fprintf(stderr, "expected the start to fail, got: %s\n", n_records ? records[0] : "nothing");
                exit(EXIT_FAILURE);
        }
        expect_record(records[0]);
        check(f.domain->state == DOMAIN_SHUTOFF);
        check(streq(ops_source(&f, "vda"), s1));
        check(!exists(ov) && exists(s1));
        check(!journal_exists(&f, "snapshot-revert"));
        check(f.domain->snapshots.current && f.domain->snapshots.current->def->n_revert_disks == 0);
        ops_teardown(&f);
}

static void test_internal_live_load(void) {
        OpsFixture f;

        printf("internal with memory, same configuration: snapshot-load through the job tracker, then cont\n");
        ops_setup(&f, 1);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        create_internal_live(&f, "m1");

        revert(&f, "m1", 0);
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"qom-get\",\"arguments\":{\"path\":"
                                       "\"/machine/peripheral/vda/virtio-backend\",\"property\":\"drive\"}}"), "\"vda-fmt\"");
        check(journal_exists(&f, "snapshot-revert"));
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"snapshot-load\",\"arguments\":{\"job-id\":\"$load\","
                                       "\"tag\":\"m1\",\"vmstate\":\"vda-fmt\",\"devices\":[\"vda-fmt\"]}}"), "{}");
        answer_jobs(&f.peer, captured("load"), "snapshot-load", "running", 0, 1, NULL);
        peer_event(&f.peer, "STOP", "{}");
        peer_status(&f.peer, captured("load"), "concluded");
        answer_jobs(&f.peer, captured("load"), "snapshot-load", "concluded", 1, 1, NULL);
        expect_dismiss(&f.peer, captured("load"));
        /* loaded: journaled so, then the state asked for */
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"cont\"}"), "{}");
        expect_record("reverted 0 -");
        check(f.domain->state == DOMAIN_RUNNING);
        check(!journal_exists(&f, "snapshot-revert"));
        check(streq(snapshot_name(f.domain->snapshots.current), "m1"));
        check(!domain_find_job(f.domain, captured("load")));
        ops_teardown(&f);

        printf("internal with memory, the load fails: QEMU stopped (the guest is undefined), QEMU's words\n");
        ops_setup(&f, 1);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        create_internal_live(&f, "m2");
        revert(&f, "m2", 0);
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"qom-get\",\"arguments\":\"$x\"}"), "\"vda-fmt\"");
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"snapshot-load\",\"arguments\":{\"job-id\":\"$load2\","
                                       "\"tag\":\"m2\",\"vmstate\":\"vda-fmt\",\"devices\":[\"vda-fmt\"]}}"), "{}");
        answer_jobs(&f.peer, captured("load2"), "snapshot-load", "running", 0, 1, NULL);
        peer_status(&f.peer, captured("load2"), "concluded");
        answer_jobs(&f.peer, captured("load2"), "snapshot-load", "concluded", 0, 1, "Error -22 while loading VM state");
        expect_dismiss(&f.peer, captured("load2"));
        expect_qmp(&f.peer, "{\"execute\":\"quit\"}");
        expect_no_record();
        ops_qemu_exits(&f);
        expect_record("reverted QemuFailed QEMU could not load snapshot 'm2': Error -22 while loading VM state. The guest's "
                      "state was undefined, so QEMU was stopped: domain 'vm' is shut off.");
        check(f.domain->state == DOMAIN_SHUTOFF && !journal_exists(&f, "snapshot-revert"));
        ops_teardown(&f);
}

/* The journal of an internal revert with memory into the running QEMU,
 * interrupted during the load. */
static void write_load_journal(OpsFixture *f, const char *name) {
        json_object *o = json_object_new_object(), *disks = json_object_new_array(), *e = json_object_new_object();

        check(o && disks && e);
        json_object_object_add(o, "snapshot", json_object_new_string(name));
        json_object_object_add(o, "external", json_object_new_boolean(false));
        json_object_object_add(o, "memory", json_object_new_boolean(true));
        json_object_object_add(o, "after", json_object_new_string("running"));
        json_object_object_add(o, "loaded", json_object_new_boolean(false));
        json_object_object_add(o, "restarted", json_object_new_boolean(false));
        json_object_object_add(e, "target", json_object_new_string("vda"));
        json_object_object_add(e, "file", json_object_new_string(f->images_of[0]));
        json_object_array_add(disks, e);
        json_object_object_add(o, "disks", disks);
        check(op_journal_write(f->state, f->domain->def->uuid, "snapshot-revert", o) >= 0);
        json_object_put(o);
}

/* A QEMU whose load job of an earlier qsnapd is concluded (with `error`). */
static void attach_with_load_job(OpsFixture *f, const char *error) {
        _cleanup_free_ char *e = job_entry("qsnap-load-1", "snapshot-load", "concluded", 1, 1, error),
                            *jobs = strprintf("[%s]", e);
        ops_start_qemu(f, "paused", jobs);
}

static void test_recovery_internal(void) {
        OpsFixture f;

        printf("recovery, internal with memory: the load job adopted concluded → finished, the guest runs\n");
        ops_setup(&f, 1);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        create_internal_live(&f, "m1");
        ops_qemu_exits(&f); /* qsnapd "restarts": a new attach */
        (void) domain_stop(f.domain, 0, NULL, NULL, NULL);
        drain();
        write_load_journal(&f, "m1");
        attach_with_load_job(&f, NULL);
        peer_reply(&f.peer, expect_qmp(&f.peer, "{\"execute\":\"cont\"}"), "{}");
        expect_record("attached 0 paused");
        check(!journal_exists(&f, "snapshot-revert"));
        check(streq(snapshot_name(f.domain->snapshots.current), "m1"));
        /* the tracker dismisses the adopted job; the domain reads the disks back */
        expect_dismiss(&f.peer, "qsnap-load-1");
        ops_expect_resync(&f);
        ops_teardown(&f);

        printf("recovery, internal with memory: the load failed → QEMU stopped once attached\n");
        ops_setup(&f, 1);
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        create_internal_live(&f, "m1");
        ops_qemu_exits(&f);
        (void) domain_stop(f.domain, 0, NULL, NULL, NULL);
        drain();
        write_load_journal(&f, "m1");
        attach_with_load_job(&f, "Error -22 while loading VM state");
        expect_record("attached 0 paused");
        check(!journal_exists(&f, "snapshot-revert"));
        expect_qmp(&f.peer, "{\"execute\":\"quit\"}");
        ops_teardown(&f);

        printf("recovery, internal with memory: no load job in the QEMU that ran → rolled back, nothing sent\n");
        ops_setup(&f, 1);
        write_load_journal(&f, "m1");
        ops_start_qemu(&f, "running", "[]");
        expect_record("attached 0 running");
        check(!journal_exists(&f, "snapshot-revert"));
        check(!f.domain->snapshots.current);
        peer_expect_nothing(&f.peer);
        ops_teardown(&f);
}

/* The journal of an external revert of vda onto `overlay`. */
static void write_external_journal(OpsFixture *f, const char *name, const char *frozen, const char *overlay) {
        json_object *o = json_object_new_object(), *disks = json_object_new_array(), *e = json_object_new_object();

        check(o && disks && e);
        json_object_object_add(o, "snapshot", json_object_new_string(name));
        json_object_object_add(o, "external", json_object_new_boolean(true));
        json_object_object_add(o, "memory", json_object_new_boolean(false));
        json_object_object_add(o, "after", json_object_new_string("shutoff"));
        json_object_object_add(o, "loaded", json_object_new_boolean(false));
        json_object_object_add(o, "restarted", json_object_new_boolean(true));
        json_object_object_add(e, "target", json_object_new_string("vda"));
        json_object_object_add(e, "file", json_object_new_string(frozen));
        json_object_object_add(e, "overlay", json_object_new_string(overlay));
        json_object_array_add(disks, e);
        json_object_object_add(o, "disks", disks);
        check(op_journal_write(f->state, f->domain->def->uuid, "snapshot-revert", o) >= 0);
        json_object_put(o);
}

static void test_recovery_external(void) {
        _cleanup_free_ char *ov = NULL;
        OpsFixture f;

        printf("recovery, external, definition not switched → rolled back: the new overlay removed\n");
        ops_setup(&f, 1);
        create_offline(&f, "s1");
        ov = ops_path(&f, "vda.s1-revert1");
        ops_image(ov, f.images_of[0]);
        write_external_journal(&f, "s1", f.images_of[0], ov);
        operation_recover_offline(f.domain);
        drain();
        check(!exists(ov) && !journal_exists(&f, "snapshot-revert"));
        check(f.domain->snapshots.current->def->n_revert_disks == 0);
        ops_teardown(&f);

        printf("recovery, external, definition switched → finished: <revertDisks> recorded, overlay kept\n");
        ops_setup(&f, 1);
        create_offline(&f, "s1");
        free(ov);
        ov = ops_path(&f, "vda.s1-revert1");
        ops_image(ov, f.images_of[0]);
        write_external_journal(&f, "s1", f.images_of[0], ov);
        check(free_and_strdup(&domain_def_find_disk(f.domain->def, "vda")->source, ov) >= 0);
        operation_recover_offline(f.domain);
        drain();
        check(exists(ov) && !journal_exists(&f, "snapshot-revert"));
        check(f.domain->snapshots.current->def->n_revert_disks == 1 &&
              streq(f.domain->snapshots.current->def->revert_disks[0].source, ov));
        ops_teardown(&f);
}

int main(int argc, char *argv[]) {
        ops_init();
        test_external_running();
        test_external_start_fails();
        test_internal_live_load();
        test_recovery_internal();
        test_recovery_external();
        ops_done();
        printf("all snapshot-revert operation tests passed\n");
        return EXIT_SUCCESS;
}
