/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checkpoint.Delete: the set, the bitmap work (one routine for the call
 * and for the recovery, which simply does it again: merges are unions and
 * removing what is gone is skipped), the metadata. See checkpoint-delete.h.
 */
#include "core/bitmap-tops.h"
#include "core/bitmaps.h"
#include "core/disk.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/operation.h"
#include "ops/checkpoint-delete.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/json-util.h"
#include "util/util.h"

#define JOURNAL_KIND "checkpoint-delete"

/* One copy of a removed checkpoint's bitmap, in one layer. */
typedef struct Step {
        char *path, *node, *file_node, *backing_node;
        bool read_only;
        char *bitmap;
        char *merge_into; /* the surviving ancestor's bitmap in the same layer, or NULL */
} Step;

typedef struct Work Work;
typedef void (*WorkDoneFunc)(Work *w, int error, const char *message);

struct Work {
        Domain *domain;
        char **names; /* the checkpoints removed */
        Step *steps;
        size_t n_steps;
        size_t pending;
        int error;
        char *message;
        bool transaction_sent;
        /* live: what the remembered inventory (core/bitmap-tops.h) needs to
         * stay valid after the work — qmp_changes() when it was planned, the
         * commands sent since, whether every read-only layer is again */
        bool live, reopen_failed;
        uint64_t changes_before, n_sent;
        WorkDoneFunc done;
        void *userdata;
};

static Work *work_free(Work *w) {
        if (!w)
                return NULL;
        for (size_t i = 0; i < w->n_steps; i++) {
                Step *s = w->steps + i;
                free(s->path);
                free(s->node);
                free(s->file_node);
                free(s->backing_node);
                free(s->bitmap);
                free(s->merge_into);
        }
        free(w->steps);
        strv_free(w->names);
        free(w->message);
        domain_unref(w->domain);
        free(w);
        return NULL;
}

static const char *disk_bitmap_of(const Checkpoint *c, const char *target) {
        for (size_t i = 0; i < c->def->n_disks; i++)
                if (streq(c->def->disks[i].name, target) && c->def->disks[i].type == CHECKPOINT_TYPE_BITMAP)
                        return c->def->disks[i].bitmap ?: c->def->name;
        return NULL;
}

static Checkpoint *surviving_ancestor(Work *w, Checkpoint *c) {
        Checkpoint *a = c->parent;

        while (a && strv_contains((const char *const *) w->names, checkpoint_name(a)))
                a = a->parent;
        return a;
}

static int work_add_steps(Work *w, Checkpoint *c, const BitmapInventory *inv) {
        Checkpoint *survivor = surviving_ancestor(w, c);

        for (size_t i = 0; i < inv->n_disks; i++) {
                const BitmapDisk *bd = inv->disks + i;
                const char *bitmap = disk_bitmap_of(c, bd->target);
                const char *into = survivor ? disk_bitmap_of(survivor, bd->target) : NULL;

                if (!bitmap)
                        continue;
                for (size_t j = 0; j < bd->n_layers; j++) {
                        const BitmapLayer *l = bd->layers + j;
                        const BitmapEntry *b = bitmap_layer_find(l, bitmap), *t = into ? bitmap_layer_find(l, into) : NULL;
                        Step *s;

                        if (!b || (inv->live && !l->node))
                                continue;
                        s = reallocarray(w->steps, w->n_steps + 1, sizeof(Step));
                        if (!s)
                                return -ENOMEM;
                        w->steps = s;
                        s = w->steps + w->n_steps++;
                        /* QEMU refuses to merge an inconsistent bitmap: such a copy is only removed. */
                        *s = (Step) { .path = strdup(l->path), .node = l->node ? strdup(l->node) : NULL,
                                      .file_node = l->file_node ? strdup(l->file_node) : NULL,
                                      .backing_node = j + 1 < bd->n_layers && bd->layers[j + 1].node
                                                              ? strdup(bd->layers[j + 1].node) : NULL,
                                      .read_only = l->read_only, .bitmap = strdup(bitmap),
                                      .merge_into = t && !t->inconsistent && !b->inconsistent ? strdup(into) : NULL };
                        if (!s->path || !s->bitmap)
                                return -ENOMEM;
                }
        }
        return 0;
}

/* The copies removed are gone from the remembered inventory too (the
 * merges change no name or flag), so that neither the Problems refresh
 * after the delete nor the next operation lists every bitmap again. */
static void work_remembered_update(Work *w) {
        BitmapInventory *inv;

        if (w->error < 0 || w->reopen_failed) {
                bitmap_tops_forget(w->domain);
                return;
        }
        inv = bitmap_tops_own(w->domain, w->changes_before, w->n_sent);
        for (size_t i = 0; inv && i < w->n_steps; i++)
                for (size_t k = 0; k < inv->n_disks; k++)
                        for (size_t j = 0; j < inv->disks[k].n_layers; j++) {
                                BitmapLayer *l = inv->disks[k].layers + j;
                                if (streq_ptr(l->node, w->steps[i].node))
                                        bitmap_layer_drop(l, w->steps[i].bitmap);
                        }
}

static void work_end(Work *w) {
        if (w->live)
                work_remembered_update(w);
        w->done(w, w->error, w->message);
}

static void work_fail(Work *w, int error, char *message) {
        if (w->error == 0) {
                w->error = error;
                w->message = message;
        } else
                free(message);
}

static void on_reopened_back(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                             void *userdata) {
        Work *w = userdata;

        if (error < 0) {
                log_warning("Domain '%s': cannot make a backing image read-only again: %s", w->domain->def->name,
                            strna(desc));
                w->reopen_failed = true;
        }
        if (--w->pending == 0)
                work_end(w);
}

/* Every layer that was read-only is again; then the end. */
static void work_reopen_back(Work *w) {
        for (size_t i = 0; i < w->n_steps && w->domain->qmp; i++) {
                Step *s = w->steps + i;
                bool first = true;

                for (size_t k = 0; k < i; k++)
                        if (streq_ptr(w->steps[k].node, s->node))
                                first = false;
                if (!s->read_only || !first || !s->file_node)
                        continue;
                if (qmp_cmd_blockdev_reopen(w->domain->qmp, s->node, s->file_node, s->backing_node, true,
                                            on_reopened_back, w) >= 0) {
                        w->pending++;
                        w->n_sent++;
                } else
                        w->reopen_failed = true;
        }
        if (w->pending == 0)
                work_end(w);
}

static void on_transaction(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                           void *userdata) {
        Work *w = userdata;

        if (error < 0)
                work_fail(w, -QSNAP_E_QEMU_FAILED, strprintf("QEMU refused to remove the bitmaps: %s", strna(desc)));
        work_reopen_back(w);
}

static void work_transaction(Work *w) {
        _cleanup_free_ QmpBitmapAction *a = new0(QmpBitmapAction, 2 * w->n_steps);
        _cleanup_free_ QmpBitmapSource *src = new0(QmpBitmapSource, w->n_steps);
        size_t n = 0;

        if (!a || !src || !w->domain->qmp) {
                work_fail(w, a && src ? -QSNAP_E_NOT_RUNNING : -ENOMEM, NULL);
                return work_reopen_back(w);
        }
        for (size_t i = 0; i < w->n_steps; i++) {
                Step *s = w->steps + i;

                src[i] = (QmpBitmapSource) { .node = s->node, .name = s->bitmap };
                if (s->merge_into)
                        a[n++] = (QmpBitmapAction) { .type = QMP_BITMAP_MERGE, .node = s->node, .name = s->merge_into,
                                                     .sources = src + i, .n_sources = 1 };
                a[n++] = (QmpBitmapAction) { .type = QMP_BITMAP_REMOVE, .node = s->node, .name = s->bitmap };
        }
        if (qmp_cmd_transaction_bitmaps(w->domain->qmp, a, n, on_transaction, w) < 0) {
                work_fail(w, -QSNAP_E_QEMU_FAILED, strdup("Cannot send the bitmap transaction."));
                return work_reopen_back(w);
        }
        w->n_sent++;
}

static void on_reopened(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                        void *userdata) {
        Work *w = userdata;

        if (error < 0)
                work_fail(w, -QSNAP_E_QEMU_FAILED,
                          strprintf("QEMU cannot make a backing image writable to remove its bitmap: %s", strna(desc)));
        if (--w->pending > 0)
                return;
        if (w->error < 0)
                return work_reopen_back(w);
        work_transaction(w);
}

static void work_run_live(Work *w) {
        for (size_t i = 0; i < w->n_steps; i++) {
                Step *s = w->steps + i;
                bool first = true;

                for (size_t k = 0; k < i; k++)
                        if (streq_ptr(w->steps[k].node, s->node))
                                first = false;
                if (!s->read_only || !first)
                        continue;
                if (!s->file_node ||
                    qmp_cmd_blockdev_reopen(w->domain->qmp, s->node, s->file_node, s->backing_node, false, on_reopened,
                                            w) < 0) {
                        work_fail(w, -QSNAP_E_QEMU_FAILED, strprintf("Cannot reopen %s read-write.", s->path));
                        continue;
                }
                w->pending++;
                w->n_sent++;
        }
        if (w->pending > 0)
                return;
        if (w->error < 0)
                return work_reopen_back(w);
        work_transaction(w);
}

static void work_run_offline(Work *w) {
        for (size_t i = 0; i < w->n_steps && w->error == 0; i++) {
                Step *s = w->steps + i;
                char *message = NULL;
                int r = 0;

                if (s->merge_into)
                        r = gate_img_bitmap(w->domain, "--merge", s->bitmap, s->path, s->merge_into, &message);
                if (r >= 0)
                        r = gate_img_bitmap(w->domain, "--remove", NULL, s->path, s->bitmap, &message);
                if (r < 0)
                        work_fail(w, r, message);
        }
        work_end(w);
}

/* The steps from inv (maybe the remembered one, borrowed: used before
 * anything is sent), then the work. */
static void work_plan(Work *w, const BitmapInventory *inv) {
        Domain *d = w->domain;

        w->live = inv->live && d->qmp;
        w->changes_before = qmp_changes(d->qmp);
        for (char **n = w->names; *n; n++) {
                Checkpoint *c = checkpoint_tree_find(&d->checkpoints, *n);
                if (c && work_add_steps(w, c, inv) < 0) {
                        work_fail(w, -ENOMEM, NULL);
                        return work_end(w);
                }
        }
        if (inv->live)
                work_run_live(w);
        else
                work_run_offline(w);
}

static void on_work_inventory(Domain *d, int error, const char *message, BitmapInventory *inventory, void *userdata) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = inventory;
        Work *w = userdata;

        if (error < 0) {
                work_fail(w, error, message ? strdup(message) : NULL);
                return work_end(w);
        }
        work_plan(w, inv);
}

static int work_start(Domain *d, char **names, WorkDoneFunc done, void *userdata) {
        const BitmapInventory *known;
        Work *w = new0(Work, 1);
        int r;

        if (!names)
                names = new0(char *, 1);
        if (!w || !names) {
                free(w);
                strv_free(names);
                return -ENOMEM;
        }
        *w = (Work) { .domain = domain_ref(d), .names = names, .done = done, .userdata = userdata };
        /* Nothing changed since the last listing but what qsnapd did and
         * accounted for: no listing (core/bitmap-tops.h). */
        known = d->qmp && domain_is_active(d) ? bitmap_inventory_remembered(d) : NULL;
        if (known) {
                work_plan(w, known);
                return 0;
        }
        r = bitmap_inventory_get(d, on_work_inventory, w);
        if (r < 0)
                work_free(w);
        return r;
}

/* Forgets the checkpoints named (those still there) in one transaction. */
static int forget(Domain *d, char *const *names) {
        _cleanup_free_ Checkpoint **remove = new0(Checkpoint *, strv_length(names));
        _cleanup_free_ Checkpoint **changed = NULL;
        Checkpoint *previous = d->checkpoints.current;
        size_t n = 0, n_changed = 0;
        int r;

        if (!remove)
                return -ENOMEM;
        for (char *const *p = names; *p; p++)
                if ((remove[n] = checkpoint_tree_find(&d->checkpoints, *p)))
                        n++;
        if (n == 0)
                return 0;
        r = checkpoint_tree_remove(&d->checkpoints, remove, n, NULL, NULL, 0, &changed, &n_changed);
        if (r < 0)
                return r;
        manager_notify_checkpoints_moved(d->manager, d, names, changed, n_changed, previous);
        (void) bitmaps_refresh(d, NULL, NULL);
        return 0;
}

/* ---- the call ---- */

typedef struct DeletePlan {
        Operation *op;
        Checkpoint *checkpoint;
        uint64_t flags;
        char **names;
        DomainDoneFunc done;
        void *userdata;
} DeletePlan;

static void plan_free(void *data) {
        DeletePlan *p = data;

        strv_free(p->names);
        free(p);
}

static void delete_reply(Operation *o, int error, const char *message) {
        DeletePlan *p = o->plan;

        if (p->done)
                p->done(o->domain, error, message, NULL, p->userdata);
}

int checkpoint_delete_check(Checkpoint *c, uint64_t flags, char **ret_message) {
        Domain *d = c->tree->domain;
        int r;

        if ((flags & CHECKPOINT_DELETE_CHILDREN) && (flags & CHECKPOINT_DELETE_CHILDREN_ONLY)) {
                *ret_message = strdup("CHILDREN (1) and CHILDREN_ONLY (4) exclude each other.");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        r = domain_check_idle(d, ret_message);
        if (r < 0)
                return r;
        if (flags & CHECKPOINT_DELETE_METADATA_ONLY)
                return 0;
        for (size_t i = 0; i < c->def->n_disks; i++)
                if (c->def->disks[i].type == CHECKPOINT_TYPE_BITMAP && domain_disk_job(d, c->def->disks[i].name)) {
                        *ret_message = strprintf("A block job runs on disk %s; delete the checkpoint after it ended.",
                                                 c->def->disks[i].name);
                        return -QSNAP_E_BUSY;
                }
        return 0;
}

static int delete_names(Checkpoint *c, uint64_t flags, char ***ret) {
        _cleanup_free_ Checkpoint **list = NULL;
        _cleanup_strv_free_ char **names = NULL;
        size_t n = 0;
        int r;

        if (flags & (CHECKPOINT_DELETE_CHILDREN | CHECKPOINT_DELETE_CHILDREN_ONLY)) {
                r = checkpoint_tree_list(c->tree, c, CHECKPOINT_LIST_DESCENDANTS, &list, &n);
                if (r < 0)
                        return r;
        }
        /* Children first: each merges into its nearest survivor anyway. */
        for (size_t i = n; i > 0; i--)
                if (strv_extend(&names, checkpoint_name(list[i - 1])) < 0)
                        return -ENOMEM;
        if (!(flags & CHECKPOINT_DELETE_CHILDREN_ONLY) && strv_extend(&names, checkpoint_name(c)) < 0)
                return -ENOMEM;
        if (!names && !(names = new0(char *, 1)))
                return -ENOMEM;
        *ret = TAKE_PTR(names);
        return 0;
}

static void on_work_done(Work *w, int error, const char *message) {
        DeletePlan *p = w->userdata;
        Operation *o = p->op;
        int r;

        if (error >= 0) {
                /* crash points: checkpoint-delete:bitmaps */
                operation_crash_point(o, "bitmaps");
                r = forget(o->domain, p->names);
                if (r < 0)
                        error = r, message = "Cannot store the checkpoint metadata.";
        }
        operation_finish(o, error, message);
        work_free(w);
}

static int write_journal(DeletePlan *p) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *names = json_object_new_array();

        if (!o || !names || json_object_object_add(o, "names", names) < 0) {
                json_object_put(names);
                return -ENOMEM;
        }
        for (char **n = p->names; *n; n++)
                if (json_object_array_add(names, json_object_new_string(*n)) < 0)
                        return -ENOMEM;
        return operation_journal_write(p->op, o);
}

static void delete_start(Operation *o) {
        DeletePlan *p = o->plan;
        char **names;
        int r;

        r = write_journal(p);
        if (r < 0)
                return operation_finishf(o, r, "Cannot record the delete's intent: %s", qsnap_strerror(r));
        /* crash points: checkpoint-delete:intent */
        operation_crash_point(o, "intent");
        names = NULL;
        for (char **n = p->names; *n; n++)
                if (strv_extend(&names, *n) < 0) {
                        strv_free(names);
                        return operation_finish(o, -ENOMEM, NULL);
                }
        r = work_start(o->domain, names, on_work_done, p);
        if (r < 0)
                operation_finish(o, r, "Cannot read the disks' bitmaps.");
}

int checkpoint_delete(Domain *d, Checkpoint *c, uint64_t flags, DomainDoneFunc done, void *userdata,
                      char **ret_message) {
        _cleanup_strv_free_ char **names = NULL;
        DeletePlan *p;
        Operation *o;
        int r;

        r = checkpoint_delete_check(c, flags, ret_message);
        if (r < 0)
                return r;
        r = delete_names(c, flags, &names);
        if (r < 0)
                return r;
        p = new0(DeletePlan, 1);
        if (!p)
                return -ENOMEM;
        *p = (DeletePlan) { .checkpoint = c, .flags = flags, .names = TAKE_PTR(names), .done = done,
                            .userdata = userdata };
        r = operation_new(d, &checkpoint_delete_kind, p, &o);
        if (r < 0)
                return r;
        p->op = o;
        if (flags & CHECKPOINT_DELETE_METADATA_ONLY) {
                r = forget(d, p->names);
                operation_finish(o, r, r < 0 ? "Cannot store the checkpoint metadata." : NULL);
                return 0;
        }
        r = operation_start_deferred(o, delete_start);
        if (r < 0) {
                operation_cancel(o);
                return r;
        }
        return 0;
}

/* ---- recovery: do it again ---- */

typedef struct Recovery {
        DomainDoneFunc done;
        void *userdata;
} Recovery;

static void on_recovery_work_done(Work *w, int error, const char *message) {
        Recovery *rc = w->userdata;
        Domain *d = w->domain;

        if (error < 0)
                log_warning("Domain '%s': an interrupted checkpoint delete could not be finished: %s; Delete again.",
                            d->def->name, strna(message));
        else if (forget(d, w->names) >= 0)
                log_notice("Domain '%s': finished an interrupted checkpoint delete.", d->def->name);
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND);
        if (rc->done)
                rc->done(d, 0, NULL, NULL, rc->userdata);
        free(rc);
        work_free(w);
}

static int checkpoint_delete_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        _cleanup_(json_object_putp) json_object *journal = NULL;
        _cleanup_strv_free_ char **names = NULL;
        json_object *list = NULL;
        size_t n;
        Recovery *rc;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND, &journal);
        if (r == 0 || (r < 0 && r != -EBADMSG))
                return r;
        n = journal ? json_get_array(journal, "names", &list) : 0;
        for (size_t i = 0; i < n; i++) {
                const char *s = json_object_get_string(json_object_array_get_idx(list, i));
                if (s && strv_extend(&names, s) < 0)
                        return -ENOMEM;
        }
        if (!names) {
                op_journal_remove(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND);
                return 0;
        }
        rc = new0(Recovery, 1);
        if (!rc)
                return -ENOMEM;
        *rc = (Recovery) { .done = done, .userdata = userdata };
        log_notice("Domain '%s': a checkpoint delete was interrupted; finishing it.", d->def->name);
        r = work_start(d, TAKE_PTR(names), on_recovery_work_done, rc);
        if (r < 0) {
                free(rc);
                op_journal_remove(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND);
                return r;
        }
        return 1;
}

const OperationKind checkpoint_delete_kind = {
        .name = JOURNAL_KIND,
        .crash_name = "checkpoint-delete",
        .lock = OPERATION_LOCK_SNAPSHOT,
        .free_plan = plan_free,
        .reply = delete_reply,
        .recover = checkpoint_delete_recover,
};
