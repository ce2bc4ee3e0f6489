/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateSnapshot, the recovery (snapshot_create_kind's handler): a qsnapd
 * that finds <state>/ops/<uuid>.snapshot-create at start-up, after
 * re-attaching to the QEMU, finishes the snapshot when the disks were
 * switched already (each disk's root node in QEMU is the planned overlay
 * node; without a QEMU, the stored definition names the planned overlay;
 * or its metadata made it) and rolls it back otherwise: planned nodes
 * deleted, files made for it removed, and a guest stopped for the memory
 * save resumed. A guest whose filesystems a QUIESCE snapshot froze is
 * thawed either way (the intent says "frozen" from before the freeze
 * until the thaw), and the recovery ends when the agent answered or timed
 * out. No state ever needs a person to clear it.
 */
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "core/disk.h"
#include "core/domain-agent.h"
#include "core/domain-jobs.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "core/operation.h"
#include "core/qemu-files.h"
#include "ops/snapshot-create.h"
#include "ops/snapshot-create/internal.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/fs.h"
#include "util/json-util.h"
#include "util/util.h"


/* ---- recovery ---- */

typedef struct Recovery {
        Domain *domain;
        json_object *intent;
        size_t n_disks, pending, switched;
        DomainDoneFunc done;
        void *userdata;
} Recovery;

static json_object *intent_disk(json_object *intent, size_t i) {
        json_object *disks = NULL;
        return json_get_array(intent, "disks", &disks) > 0 ? json_object_array_get_idx(disks, i) : NULL;
}

/* QEMU never switched: everything made for the snapshot goes. */
static void recovery_roll_back(Recovery *rc) {
        Domain *d = rc->domain;
        const char *mem = json_get_string(rc->intent, "memory_file"), *nvram = json_get_string(rc->intent, "nvram_copy");

        for (size_t i = 0; i < rc->n_disks; i++) {
                json_object *e = intent_disk(rc->intent, i);
                const char *node = json_get_string(e, "node"), *overlay = json_get_string(e, "overlay");

                const char *target = json_get_string(e, "target");
                const DomainDisk *disk = target ? domain_def_find_disk(d->def, target) : NULL;

                if (node)
                        domain_node_del(d, node);
                /* Never a file the stored definition already uses. */
                if (disk && overlay && streq(disk->source, overlay))
                        continue;
                if (overlay && json_get_bool(e, "created") && fs_unlink_nofollow(overlay, S_IFREG) >= 0)
                        log_info("Domain '%s': removed overlay %s of an interrupted snapshot.", d->def->name, overlay);
        }
        /* QEMU may still be saving the memory: stop that, or it would pause
         * the guest (postmigrate) once done, into a file that is gone. */
        if (mem && d->qmp)
                (void) qmp_cmd_migrate_cancel(d->qmp, NULL, NULL);
        if (mem && fs_unlink_nofollow(mem, S_IFREG) >= 0)
                log_info("Domain '%s': removed memory file %s of an interrupted snapshot.", d->def->name, mem);
        if (nvram && nvram_snapshot_path_ok(domain_current_def(d), nvram) && fs_unlink_nofollow(nvram, S_IFREG) >= 0)
                log_info("Domain '%s': removed the UEFI variable store copy %s of an interrupted snapshot.",
                         d->def->name, nvram);
        log_notice("Domain '%s': rolled back a snapshot interrupted before the disks were switched.", d->def->name);
}

/* QEMU switched: record what the interrupted qsnapd could not. */
static void recovery_roll_forward(Recovery *rc) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
        _cleanup_free_ char *message = NULL;
        const char *xml = json_get_string(rc->intent, "snapshot_xml");
        Domain *d = rc->domain;
        Snapshot *s;
        int r;

        for (size_t i = 0; i < rc->n_disks; i++) {
                json_object *e = intent_disk(rc->intent, i);
                const char *target = json_get_string(e, "target"), *overlay = json_get_string(e, "overlay"),
                           *below = json_get_string(e, "below");
                DomainDef *defs[2] = { d->live, d->def };

                for (size_t k = 0; target && overlay && below && k < 2; k++) {
                        DomainDisk *disk = defs[k] ? domain_def_find_disk(defs[k], target) : NULL;
                        if (disk && streq(disk->source, below)) {
                                (void) free_and_strdup(&disk->source, overlay);
                                disk->format = DISK_FORMAT_QCOW2;
                        }
                }
        }
        domain_chains_invalidate(d);
        (void) domain_save_disks(d);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);

        if (xml && json_get_bool(rc->intent, "metadata")) {
                r = snapshot_def_parse(xml, strlen(xml), SNAPSHOT_PARSE_REDEFINE, &def, &message);
                if (r >= 0 && !snapshot_tree_find(&d->snapshots, def->name)) {
                        r = snapshot_tree_add(&d->snapshots, TAKE_PTR(def), true, &s);
                        if (r >= 0)
                                manager_notify_snapshot_added(d->manager, d, s);
                }
                if (r < 0)
                        log_error_errno(r, "Domain '%s': cannot record the interrupted snapshot: %s", d->def->name,
                                        strna(message));
        }
        log_notice("Domain '%s': finished a snapshot interrupted after the disks were switched.", d->def->name);
}

/* The metadata are stored only after the disks switched: a snapshot
 * whose metadata made it is finished, whatever kind it is. */
static bool recovery_recorded(Recovery *rc) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
        _cleanup_free_ char *message = NULL;
        const char *xml = json_get_string(rc->intent, "snapshot_xml");

        return xml && snapshot_def_parse(xml, strlen(xml), SNAPSHOT_PARSE_REDEFINE, &def, &message) >= 0 &&
               snapshot_tree_find(&rc->domain->snapshots, def->name);
}

static void recovery_free(Recovery *rc) {
        Domain *d = rc->domain;

        op_journal_remove(d->manager->config.state_dir, d->def->uuid, INTENT_KIND);
        if (rc->done)
                rc->done(d, 0, NULL, NULL, rc->userdata);
        json_object_put(rc->intent);
        domain_unref(d);
        free(rc);
}

static void on_recovery_thawed(Domain *d, void *userdata) {
        recovery_free(userdata);
}

static void recovery_end(Recovery *rc) {
        Domain *d = rc->domain;

        if ((rc->switched == rc->n_disks && rc->n_disks > 0) || recovery_recorded(rc))
                recovery_roll_forward(rc);
        else
                recovery_roll_back(rc);
        /* A guest stopped for the memory save runs again. */
        if (json_get_bool(rc->intent, "resume") && d->qmp && d->state == DOMAIN_PAUSED)
                (void) qmp_cmd_cont(d->qmp, NULL, NULL);
        /* The intent goes once the guest is thawed (recovery_free). */
        if (json_get_bool(rc->intent, "frozen") && d->qmp) {
                log_notice("Domain '%s': the interrupted snapshot had frozen the guest's filesystems; thawing.",
                           d->def->name);
                if (domain_agent_thaw(d, "snapshot", DOMAIN_THAW_RECOVERY, on_recovery_thawed, rc) >= 0)
                        return;
        }
        recovery_free(rc);
}

typedef struct RecoveryCall {
        Recovery *rc;
        size_t index;
} RecoveryCall;

static void on_recovery_root_node(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                                  void *userdata) {
        RecoveryCall *c = userdata;
        Recovery *rc = c->rc;
        const char *node, *planned = json_get_string(intent_disk(rc->intent, c->index), "node");

        if (error >= 0 && qmp_parse_string(result, &node) >= 0 && planned && streq(node, planned))
                rc->switched++;
        free(c);
        if (--rc->pending == 0)
                recovery_end(rc);
}

int snapshot_create_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        json_object *intent = NULL, *disks = NULL;
        Recovery *rc;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, INTENT_KIND, &intent);
        if (r == 0 || (r < 0 && r != -EBADMSG))
                return r;
        /* An unreadable intent is rolled back as one of no disks, and goes. */
        if (!intent)
                intent = json_object_new_object();

        rc = new0(Recovery, 1);
        if (!rc) {
                json_object_put(intent);
                return -ENOMEM;
        }
        *rc = (Recovery) { .domain = domain_ref(d), .intent = intent, .done = done, .userdata = userdata };
        rc->n_disks = json_get_array(rc->intent, "disks", &disks);
        log_notice("Domain '%s': a snapshot was interrupted; checking how far it got.", d->def->name);

        /* Without a QEMU to ask (a shut-off domain), the stored definition
         * tells: a disk it runs on the planned overlay was switched. */
        for (size_t i = 0; !d->qmp && i < rc->n_disks; i++) {
                json_object *e = intent_disk(rc->intent, i);
                const char *target = json_get_string(e, "target"), *overlay = json_get_string(e, "overlay");
                const DomainDisk *disk = target ? domain_def_find_disk(d->def, target) : NULL;

                if (disk && overlay && streq(disk->source, overlay))
                        rc->switched++;
        }
        for (size_t i = 0; d->qmp && i < rc->n_disks; i++) {
                const char *target = json_get_string(intent_disk(rc->intent, i), "target");
                RecoveryCall *c = new0(RecoveryCall, 1);

                if (!c || !target || qmp_cmd_disk_root_node(d->qmp, target, on_recovery_root_node, c) < 0) {
                        free(c);
                        continue;
                }
                *c = (RecoveryCall) { .rc = rc, .index = i };
                rc->pending++;
        }
        if (rc->pending == 0)
                recovery_end(rc);
        return 1;
}
