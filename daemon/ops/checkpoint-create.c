/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateCheckpoint: plan, run, journal and recovery (see
 * checkpoint-create.h). The journal records the definition and, per disk,
 * the top image (and node) the bitmap goes to; recovery judges by the
 * images, never by what the interrupted qsnapd believed it did.
 * QUIESCE (a running guest with an agent channel): the guest agent
 * freezes the filesystems right before the bitmap transaction and thaws
 * them right after, or when it fails; the journal says "frozen" from
 * before the freeze, and recovery thaws.
 */
#include <time.h>

#include "core/bitmap-tops.h"
#include "core/bitmaps.h"
#include "core/checkpoint-plan.h"
#include "core/disk.h"
#include "core/domain-agent.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/operation.h"
#include "ops/checkpoint-create.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/json-util.h"
#include "util/util.h"

#define JOURNAL_KIND "checkpoint-create"

struct CheckpointPlan {
        Domain *domain;
        Operation *op;
        CheckpointDef *def;
        bool redefine, validate;
        bool quiesce, frozen;  /* QUIESCE asked; the freeze was sent and no thaw yet */
        /* per bitmap disk, filled from the inventory: */
        char **targets, **paths, **nodes;
        size_t n_disks;
        size_t n_added; /* offline: bitmaps added so far, for the undo */
        bool tops_only;           /* judged on bitmap_inventory_tops(): a refusal is judged again */
        uint64_t changes_before;  /* qmp_changes() right before the transaction */
        char *refusal;            /* QEMU's text, while it is judged again */
        Checkpoint *result;
        CheckpointDoneFunc done;
        void *userdata;
};

CheckpointPlan *checkpoint_plan_free(CheckpointPlan *p) {
        if (!p)
                return NULL;
        checkpoint_def_free(p->def);
        strv_free(p->targets);
        strv_free(p->paths);
        strv_free(p->nodes);
        free(p->refusal);
        free(p);
        return NULL;
}

static const char *disk_bitmap(const CheckpointDef *def, const CheckpointDisk *cd) {
        return cd->bitmap ?: def->name;
}

/* ---- plan ---- */

static int plan_redefine(Domain *d, CheckpointDef *def, char **ret_message) {
        _cleanup_(domain_def_freep) DomainDef *recorded = NULL;
        int r;

        if (def->parent && !checkpoint_tree_find(&d->checkpoints, def->parent)) {
                *ret_message = strprintf("Domain '%s' has no checkpoint '%s' to be the parent of '%s'.", d->def->name,
                                         def->parent, def->name);
                return -QSNAP_E_NO_SUCH_CHECKPOINT;
        }
        if (def->domain_xml && domain_def_parse(def->domain_xml, strlen(def->domain_xml), &recorded, NULL) >= 0)
                r = checkpoint_def_align(def, recorded, ret_message);
        else
                r = checkpoint_def_fill_bitmaps(def);
        return r;
}

int checkpoint_plan_new(Domain *d, const char *xml, uint64_t flags, CheckpointPlan **ret, char **ret_message) {
        _cleanup_(checkpoint_plan_freep) CheckpointPlan *p = NULL;
        _cleanup_free_ char *error = NULL;
        int r;

        if (flags & CHECKPOINT_CREATE_QUIESCE) {
                if (flags & CHECKPOINT_CREATE_REDEFINE)
                        return error_message(ret_message, -QSNAP_E_INVALID_ARGUMENT,
                                             "QUIESCE and REDEFINE exclude each other (a redefinition adds no bitmap).");
                r = domain_agent_check_quiesce(d, ret_message);
                if (r < 0)
                        return r;
        }
        if ((flags & CHECKPOINT_CREATE_REDEFINE_VALIDATE) && !(flags & CHECKPOINT_CREATE_REDEFINE)) {
                *ret_message = strdup("REDEFINE_VALIDATE (4) goes only with REDEFINE (1).");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        p = new0(CheckpointPlan, 1);
        if (!p)
                return -ENOMEM;
        p->redefine = flags & CHECKPOINT_CREATE_REDEFINE;
        p->quiesce = flags & CHECKPOINT_CREATE_QUIESCE;
        p->validate = flags & CHECKPOINT_CREATE_REDEFINE_VALIDATE;
        r = checkpoint_def_parse(xml, strlen(xml), p->redefine ? CHECKPOINT_PARSE_REDEFINE : 0, &p->def, &error);
        if (r < 0) {
                *ret_message = strprintf("Invalid checkpoint XML: %s", strna(error));
                return r;
        }
        r = domain_check_idle(d, ret_message);
        if (r < 0)
                return r;
        r = p->redefine ? plan_redefine(d, p->def, ret_message)
                        : checkpoint_plan_define(d, p->def, (int64_t) time(NULL), NULL, NULL, ret_message);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        return 0;
}

/* ---- run ---- */

static void checkpoint_create_reply(Operation *o, int error, const char *message) {
        CheckpointPlan *p = o->plan;

        if (p->done)
                p->done(o->domain, error, message, error < 0 ? NULL : p->result, p->userdata);
}

static void plan_free_op(void *p) {
        checkpoint_plan_free(p);
}

static int plan_store(CheckpointPlan *p) {
        Domain *d = p->domain;
        Checkpoint *previous = d->checkpoints.current, *c = checkpoint_tree_find(&d->checkpoints, p->def->name);
        bool make_current = !p->redefine || !d->checkpoints.current ||
                            (p->def->parent && streq(p->def->parent, checkpoint_name(d->checkpoints.current)));
        int r;

        if (c) {
                r = checkpoint_tree_update(&d->checkpoints, c, TAKE_PTR(p->def), make_current && !c->n_children);
        } else
                r = checkpoint_tree_add(&d->checkpoints, TAKE_PTR(p->def), make_current, &c);
        if (r < 0)
                return r;
        p->result = c;
        manager_notify_checkpoint_added(d->manager, d, c, previous, !p->redefine);
        return 0;
}

static void plan_done(CheckpointPlan *p, int error, const char *message) {
        Operation *o = p->op;
        int r;

        if (error >= 0) {
                /* crash points: checkpoint-create:bitmaps */
                operation_crash_point(o, "bitmaps");
                operation_undo_clear(o);
                r = plan_store(p);
                if (r < 0)
                        return operation_finishf(o, r, "Cannot store the checkpoint's metadata: %s", qsnap_strerror(r));
        }
        operation_finish(o, error, message);
}

static int undo_offline_bitmaps(Operation *o, void *data) {
        CheckpointPlan *p = o->plan;

        for (size_t i = p->n_added; i > 0; i--)
                (void) gate_img_bitmap(p->domain, "--remove", NULL, p->paths[i - 1], p->def->name, NULL);
        return 0;
}

static void on_thawed(Domain *d, void *userdata) {
        plan_done(userdata, 0, NULL);
}

static void plan_judge_again(CheckpointPlan *p, const char *refusal);

static void on_bitmaps_added(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                             void *userdata) {
        CheckpointPlan *p = userdata;

        if (error == -QSNAP_E_QEMU_FAILED && p->tops_only)
                return plan_judge_again(p, desc); /* with every bitmap QEMU has: the named error */
        if (error < 0)
                return operation_finishf(p->op, -QSNAP_E_QEMU_FAILED, "QEMU refused to add the bitmaps: %s",
                                         strna(desc));
        bitmap_tops_added(p->domain, p->changes_before, p->def->name, p->targets);
        if (p->frozen) {
                /* The reply waits for the thaw. */
                p->frozen = false;
                if (domain_agent_thaw(p->domain, "checkpoint", DOMAIN_THAW_DONE, on_thawed, p) >= 0)
                        return;
        }
        plan_done(p, 0, NULL);
}

/* The checkpoint failed after the freeze was sent: thaw. */
static int undo_freeze(Operation *o, void *data) {
        CheckpointPlan *p = o->plan;

        if (!p->frozen)
                return 0;
        p->frozen = false;
        (void) domain_agent_thaw(o->domain, "checkpoint", DOMAIN_THAW_FAILED, NULL, NULL);
        return 0;
}

static int plan_journal(CheckpointPlan *p);
static void plan_add_bitmaps(CheckpointPlan *p, bool live);

static void on_frozen(Domain *d, int error, const char *message, json_object *result, void *userdata) {
        CheckpointPlan *p = userdata;

        if (error < 0)
                return operation_finish(p->op, error, message); /* undo_freeze thaws */
        /* crash points: checkpoint-create:frozen */
        operation_crash_point(p->op, "frozen");
        plan_add_bitmaps(p, true);
}

/* QUIESCE: the journal says "frozen" before the freeze goes out. */
static void plan_freeze(CheckpointPlan *p) {
        _cleanup_free_ char *message = NULL;
        int r;

        p->frozen = true;
        r = plan_journal(p);
        if (r >= 0)
                r = operation_undo_push(p->op, undo_freeze, NULL);
        if (r < 0) {
                p->frozen = false;
                return operation_finishf(p->op, r, "Cannot record the freeze: %s", qsnap_strerror(r));
        }
        r = domain_agent_command(p->domain, "guest-fsfreeze-freeze", NULL, on_frozen, p, &message);
        if (r < 0)
                operation_finish(p->op, r, message);
}

static void plan_add_bitmaps(CheckpointPlan *p, bool live) {
        _cleanup_free_ QmpBitmapAction *a = NULL;
        _cleanup_free_ char *message = NULL;
        int r;

        if (live) {
                a = new0(QmpBitmapAction, p->n_disks);
                if (!a)
                        return operation_finish(p->op, -ENOMEM, NULL);
                for (size_t i = 0; i < p->n_disks; i++)
                        a[i] = (QmpBitmapAction) { .type = QMP_BITMAP_ADD, .node = p->nodes[i], .name = p->def->name,
                                                   .persistent = true };
                p->changes_before = qmp_changes(p->domain->qmp);
                if (!p->domain->qmp ||
                    qmp_cmd_transaction_bitmaps(p->domain->qmp, a, p->n_disks, on_bitmaps_added, p) < 0)
                        return operation_finish(p->op, -QSNAP_E_NOT_RUNNING, "QEMU went away.");
                return;
        }
        r = operation_undo_push(p->op, undo_offline_bitmaps, NULL);
        if (r < 0)
                return operation_finish(p->op, r, NULL);
        for (size_t i = 0; i < p->n_disks; i++) {
                r = gate_img_bitmap(p->domain, "--add", NULL, p->paths[i], p->def->name, &message);
                if (r < 0)
                        return operation_finish(p->op, r, message);
                p->n_added++;
        }
        plan_done(p, 0, NULL);
}

static int plan_journal(CheckpointPlan *p) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *disks = json_object_new_array();
        _cleanup_free_ char *xml = NULL;
        int r;

        r = checkpoint_def_format(p->def, CHECKPOINT_FORMAT_SECURE, &xml);
        if (r < 0)
                return r;
        if (!o || !disks || json_object_object_add(o, "checkpoint_xml", json_object_new_string(xml)) < 0)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_disks; i++) {
                json_object *e = json_object_new_object();
                if (!e || json_object_array_add(disks, e) < 0) {
                        json_object_put(e);
                        return -ENOMEM;
                }
                json_object_object_add(e, "target", json_object_new_string(p->targets[i]));
                json_object_object_add(e, "path", json_object_new_string(p->paths[i]));
                if (p->nodes && p->nodes[i])
                        json_object_object_add(e, "node", json_object_new_string(p->nodes[i]));
        }
        json_object_object_add(o, "disks", TAKE_PTR(disks));
        json_object_object_add(o, "frozen", json_object_new_boolean(p->frozen));
        return operation_journal_write(p->op, o);
}

/* Shut off: the magic of the file the path gate opens (a top swapped for
 * a link, or outside the domain's folders, counts as no qcow2). */
static bool top_is_qcow2(Domain *d, const char *path) {
        _cleanup_free_ char *why = NULL;
        _cleanup_close_ int fd = -EBADF;

        return gate_open_image(d, path, "The image", &fd, &why) >= 0 && image_is_qcow2_fd(fd);
}

/* The per-disk checks that need the images (§6), and the tops. */
static int plan_check_images(CheckpointPlan *p, const BitmapInventory *inv, char **ret_message) {
        const CheckpointDef *def = p->def;

        for (size_t i = 0; i < def->n_disks; i++) {
                const CheckpointDisk *cd = def->disks + i;
                const BitmapDisk *bd;
                _cleanup_free_ char *reason = NULL;
                size_t depth;

                if (cd->type != CHECKPOINT_TYPE_BITMAP)
                        continue;
                bd = bitmap_inventory_disk(inv, cd->name);
                if (p->redefine) {
                        if (!p->validate)
                                continue;
                        if (!bd)
                                reason = strprintf("the domain has no disk %s", cd->name);
                        else if (bitmap_disk_check(bd, disk_bitmap(def, cd), &depth, &reason) < 0)
                                return -ENOMEM;
                        if (reason) {
                                *ret_message = strprintf("Checkpoint '%s' does not match the images: %s.", def->name,
                                                         reason);
                                return -QSNAP_E_OPERATION_INVALID;
                        }
                        continue;
                }
                if (!bd || bd->n_layers == 0)
                        return -QSNAP_E_NO_SUCH_DISK;
                if (!bd->layers[0].qcow2 || (!inv->live && !top_is_qcow2(p->domain, bd->layers[0].path))) {
                        *ret_message = strprintf("Checkpoint for disk %s unsupported: its active image %s is no qcow2.",
                                                 cd->name, bd->layers[0].path);
                        return -QSNAP_E_UNSUPPORTED;
                }
                if (bitmap_layer_find(bd->layers, def->name)) {
                        *ret_message = strprintf("A bitmap named '%s' is already in disk %s's image %s and no "
                                                 "checkpoint claims it: CreateCheckpoint with REDEFINE adopts it, or "
                                                 "choose another name.", def->name, cd->name, bd->layers[0].path);
                        return -QSNAP_E_ALREADY_EXISTS;
                }
                if (inv->live && !bd->layers[0].node) {
                        *ret_message = strprintf("QEMU shows no block node for %s.", bd->layers[0].path);
                        return -QSNAP_E_QEMU_FAILED;
                }
                if (strv_extend(&p->targets, cd->name) < 0 || strv_extend(&p->paths, bd->layers[0].path) < 0 ||
                    (inv->live && strv_extend(&p->nodes, bd->layers[0].node) < 0))
                        return -ENOMEM;
                p->n_disks++;
        }
        return 0;
}

static void on_inventory(Domain *d, int error, const char *message, BitmapInventory *inventory, void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = inventory;
        _cleanup_free_ char *why = NULL;
        CheckpointPlan *p = userdata;
        int r;

        if (error < 0)
                return operation_finish(p->op, error, message);
        p->tops_only = inv->tops_only;
        r = plan_check_images(p, inv, &why);
        if (r < 0 && inv->tops_only)
                return plan_judge_again(p, NULL);
        if (r < 0)
                return operation_finish(p->op, r, why);
        if (p->redefine)
                return plan_done(p, 0, NULL);
        r = plan_journal(p);
        if (r < 0)
                return operation_finishf(p->op, r, "Cannot record the checkpoint's intent: %s", qsnap_strerror(r));
        /* crash points: checkpoint-create:intent */
        operation_crash_point(p->op, "intent");
        if (p->quiesce) {
                if (!inv->live)
                        return operation_finishf(p->op, -QSNAP_E_OPERATION_INVALID,
                                                 "Domain '%s' stopped meanwhile: QUIESCE needs a running guest.",
                                                 d->def->name);
                return plan_freeze(p);
        }
        plan_add_bitmaps(p, inv->live);
}

/* What was judged on the top nodes alone (bitmap_inventory_tops()) and
 * refused, by the check or by QEMU (refusal: its text), is judged again
 * on every bitmap QEMU lists, as without the shortcut: the refusal is
 * then the named one (AlreadyExists naming the image, no node for a
 * file, …), or QEMU's own when that check passes. Nothing was changed:
 * the transaction is all or nothing. */
static void on_inventory_again(Domain *d, int error, const char *message, BitmapInventory *inventory,
                               void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = inventory;
        _cleanup_free_ char *why = NULL;
        CheckpointPlan *p = userdata;
        int r;

        if (error < 0)
                return operation_finish(p->op, error, message);
        if (!p->refusal)
                return on_inventory(d, 0, NULL, TAKE_PTR(inv), p); /* the check refused: all over again */
        r = plan_check_images(p, inv, &why);
        if (r < 0)
                return operation_finish(p->op, r, why);
        operation_finishf(p->op, -QSNAP_E_QEMU_FAILED, "QEMU refused to add the bitmaps: %s", p->refusal);
}

static void plan_judge_again(CheckpointPlan *p, const char *refusal) {
        int r;

        p->targets = strv_free(p->targets);
        p->paths = strv_free(p->paths);
        p->nodes = strv_free(p->nodes);
        p->n_disks = 0;
        p->tops_only = false;
        p->refusal = refusal ? strdup(refusal) : NULL;
        if (refusal && !p->refusal)
                return operation_finish(p->op, -ENOMEM, NULL);
        r = bitmap_inventory_get(p->domain, on_inventory_again, p);
        if (r < 0)
                operation_finish(p->op, r, "Cannot read the disks' bitmaps.");
}

static void plan_start(Operation *o) {
        CheckpointPlan *p = o->plan;
        int r;

        /* REDEFINE_VALIDATE looks at every layer; a new checkpoint, at the tops. */
        r = p->redefine ? bitmap_inventory_get(p->domain, on_inventory, p)
                        : bitmap_inventory_tops(p->domain, p->def->name, on_inventory, p);
        if (r < 0)
                operation_finish(o, r, "Cannot read the disks' bitmaps.");
}

int checkpoint_create(Domain *d, CheckpointPlan *plan, CheckpointDoneFunc done, void *userdata, char **ret_message) {
        _cleanup_(checkpoint_plan_freep) CheckpointPlan *p = plan;
        int r;

        r = domain_check_idle(d, ret_message);
        if (r < 0)
                return r;
        p->domain = d;
        p->done = done;
        p->userdata = userdata;
        return operation_begin(d, &checkpoint_create_kind, TAKE_PTR(p), &plan->op, plan_start, NULL, ret_message);
}

/* ---- recovery ---- */

typedef struct Recovery {
        json_object *journal;
        DomainDoneFunc done;
        void *userdata;
} Recovery;

static void recovery_done(Domain *d, Recovery *rc) {
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND);
        if (rc->done)
                rc->done(d, 0, NULL, NULL, rc->userdata);
        json_object_put(rc->journal);
        free(rc);
        domain_unref(d);
}

static void on_recovery_thawed(Domain *d, void *userdata) {
        recovery_done(d, userdata);
}

/* A guest the interrupted checkpoint froze is thawed, whatever else. */
static void recovery_end(Domain *d, Recovery *rc) {
        if (json_get_bool(rc->journal, "frozen") && d->qmp &&
            domain_agent_thaw(d, "checkpoint", DOMAIN_THAW_RECOVERY, on_recovery_thawed, rc) >= 0)
                return;
        recovery_done(d, rc);
}

static void recovery_finish(Domain *d, Recovery *rc) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = NULL;
        const char *xml = json_get_string(rc->journal, "checkpoint_xml");
        Checkpoint *previous = d->checkpoints.current, *c;

        if (xml && checkpoint_def_parse(xml, strlen(xml), CHECKPOINT_PARSE_REDEFINE, &def, NULL) >= 0 &&
            !checkpoint_tree_find(&d->checkpoints, def->name) &&
            (!def->parent || checkpoint_tree_find(&d->checkpoints, def->parent)) &&
            checkpoint_tree_add(&d->checkpoints, TAKE_PTR(def), true, &c) >= 0) {
                manager_notify_checkpoint_added(d->manager, d, c, previous, false);
                log_notice("Domain '%s': finished checkpoint '%s' interrupted after its bitmaps were added.",
                           d->def->name, checkpoint_name(c));
        }
}

static void on_recovery_inventory(Domain *d, int error, const char *message, BitmapInventory *inventory,
                                  void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = inventory;
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = NULL;
        const char *xml = json_get_string(((Recovery *) userdata)->journal, "checkpoint_xml");
        Recovery *rc = userdata;
        json_object *disks = NULL;
        size_t n = json_get_array(rc->journal, "disks", &disks), found = 0;

        if (error < 0 || !xml || checkpoint_def_parse(xml, strlen(xml), CHECKPOINT_PARSE_REDEFINE, &def, NULL) < 0) {
                log_warning("Domain '%s': cannot judge an interrupted checkpoint: %s", d->def->name, strna(message));
                return recovery_end(d, rc);
        }
        for (size_t i = 0; i < n; i++) {
                const BitmapDisk *bd = bitmap_inventory_disk(inv, json_get_string(json_object_array_get_idx(disks, i),
                                                                                  "target") ?: "");
                if (bd && bd->n_layers > 0 && bitmap_layer_find(bd->layers, def->name))
                        found++;
        }
        if (n > 0 && found == n) {
                recovery_finish(d, rc);
                return recovery_end(d, rc);
        }
        /* Not everywhere: roll back, removing only what the journal planned. */
        for (size_t i = 0; i < n; i++) {
                json_object *e = json_object_array_get_idx(disks, i);
                const BitmapDisk *bd = bitmap_inventory_disk(inv, json_get_string(e, "target") ?: "");
                const char *path = json_get_string(e, "path");

                if (!bd || bd->n_layers == 0 || !path || !streq(bd->layers[0].path, path) ||
                    !bitmap_layer_find(bd->layers, def->name))
                        continue;
                if (inv->live && bd->layers[0].node && d->qmp) {
                        QmpBitmapAction a = { .type = QMP_BITMAP_REMOVE, .node = bd->layers[0].node, .name = def->name };
                        (void) qmp_cmd_transaction_bitmaps(d->qmp, &a, 1, NULL, NULL);
                } else
                        (void) image_bitmap_remove(path, def->name, NULL);
        }
        log_notice("Domain '%s': rolled back checkpoint '%s', interrupted before all its bitmaps were added.",
                   d->def->name, def->name);
        recovery_end(d, rc);
}

static int checkpoint_create_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        json_object *journal = NULL;
        Recovery *rc;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND, &journal);
        if (r == 0 || (r < 0 && r != -EBADMSG))
                return r;
        rc = new0(Recovery, 1);
        if (!rc) {
                json_object_put(journal);
                return -ENOMEM;
        }
        *rc = (Recovery) { .journal = journal ?: json_object_new_object(), .done = done, .userdata = userdata };
        domain_ref(d);
        r = bitmap_inventory_get(d, on_recovery_inventory, rc);
        if (r < 0)
                recovery_end(d, rc);
        return 1;
}

const OperationKind checkpoint_create_kind = {
        .name = JOURNAL_KIND,
        .crash_name = "checkpoint-create",
        .lock = OPERATION_LOCK_SNAPSHOT,
        .free_plan = plan_free_op,
        .reply = checkpoint_create_reply,
        .recover = checkpoint_create_recover,
};
