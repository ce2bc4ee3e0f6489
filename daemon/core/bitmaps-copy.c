/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The checkpoints' bitmaps of block copies (see bitmaps.h): the actions a
 * copy's target gets at READY (journaled before the mirror starts, armed,
 * sent at READY or again by an adopting qsnapd), and their removal when
 * the copy ends without a pivot.
 */
#include <dirent.h>

#include "core/bitmaps.h"
#include "core/bitmaps-internal.h"
#include "core/domain-jobs.h"
#include "core/manager.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "util/json-util.h"
#include "util/util.h"

/* ---- copies: armed at the start, sent at READY ---- */

int bitmaps_copy_arm(Domain *d, const char *job_id, BitmapActions *ba) {
        ArmedCopy **l = bitmaps_armed_list(d), *a = new0(ArmedCopy, 1);

        if (!l || !a || !(a->job_id = strdup(job_id))) {
                free(a);
                bitmap_actions_done(ba);
                return -ENOMEM;
        }
        a->actions = *ba;
        *ba = (BitmapActions) {};
        a->next = *l;
        *l = a;
        return 0;
}

static void on_copy_bitmaps(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                            void *userdata) {
        if (error < 0)
                log_warning("Cannot give a copy's target the checkpoints' bitmaps: %s", strna(desc));
}

int bitmaps_copy_journal_write(Domain *d, const char *job_id, const BitmapActions *ba) {
        _cleanup_(json_object_putp) json_object *a = json_object_new_array();
        _cleanup_free_ char *path = domain_job_bitmaps_path(d, job_id);
        const char *text;

        if (!a || !path || qmp_bitmap_actions_append(a, ba->actions, ba->n) < 0)
                return -ENOMEM;
        text = json_object_to_json_string_ext(a, JSON_C_TO_STRING_PLAIN);
        return write_file_atomic(path, text, strlen(text), 0600);
}

static void on_recorded_action(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                               void *userdata) {
        /* An add that finds its bitmap there already: the step was done before. */
        if (error < 0)
                log_debug("A copy target's bitmap step again: %s", strna(desc));
}

/* Each recorded action as a transaction of its own: a repeated add fails
 * alone and the merges still run. */
static void send_recorded(Domain *d, json_object *actions) {
        for (size_t i = 0; d->qmp && i < json_object_array_length(actions); i++) {
                _cleanup_(json_object_putp) json_object *one = json_object_new_array();

                if (!one || json_object_array_add(one, json_object_get(json_object_array_get_idx(actions, i))) < 0 ||
                    qmp_cmd_transaction_recorded(d->qmp, one, on_recorded_action, NULL) < 0)
                        log_warning("Domain '%s': cannot send a copy target's bitmap step.", d->def->name);
        }
}

void bitmaps_copy_adopted(Domain *d, const char *job_id, bool ready) {
        _cleanup_free_ char *path = domain_job_bitmaps_path(d, job_id), *text = NULL;
        _cleanup_(json_object_putp) json_object *actions = NULL;
        ArmedCopy **l = bitmaps_armed_list(d), *a;

        if (!path || read_full_file(path, 1 << 20, &text, NULL) < 0)
                return; /* no bitmap to give its target */
        actions = json_tokener_parse(text);
        if (!actions || !json_object_is_type(actions, json_type_array))
                return (void) log_warning("Domain '%s': the bitmap journal of copy %s is damaged; its target gets no "
                                          "bitmaps.", d->def->name, job_id);
        if (ready) {
                log_info("Domain '%s': copy %s is READY: its target gets the checkpoints' bitmaps now.", d->def->name,
                         job_id);
                return send_recorded(d, actions);
        }
        a = new0(ArmedCopy, 1);
        if (!l || !a || !(a->job_id = strdup(job_id))) {
                free(a);
                return (void) log_oom();
        }
        a->recorded = TAKE_PTR(actions);
        a->next = *l;
        *l = a;
}

void bitmaps_job_event(Domain *d, const char *job_id, bool ready, bool ended) {
        ArmedCopy **l = d->bitmaps ? bitmaps_armed_list(d) : NULL;

        for (; l && *l; l = &(*l)->next) {
                ArmedCopy *a = *l;

                if (!streq(a->job_id, job_id))
                        continue;
                if (ready && d->qmp) {
                        /* crash points: block-copy:bitmaps */
                        crash_point("block-copy:bitmaps");
                        if (a->recorded)
                                send_recorded(d, a->recorded);
                        else if (a->actions.n > 0)
                                (void) qmp_cmd_transaction_bitmaps(d->qmp, a->actions.actions, a->actions.n,
                                                                   on_copy_bitmaps, NULL);
                }
                if (ready || ended) {
                        *l = a->next;
                        bitmap_actions_done(&a->actions);
                        json_object_put(a->recorded);
                        free(a->job_id);
                        free(a);
                }
                return;
        }
}

/* ---- copies that did not pivot: their target loses what we added ---- */

static void on_copy_unbitmap(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                             void *userdata) {
        if (error < 0)
                log_warning("Cannot remove a checkpoint bitmap from an aborted copy's destination: %s", strna(desc));
}

/* The bitmaps a copy's journal adds to target_node (NULL: none). */
static char **copy_added_names(Domain *d, const char *job_id, const char *target_node) {
        _cleanup_free_ char *path = domain_job_bitmaps_path(d, job_id), *text = NULL;
        _cleanup_(json_object_putp) json_object *actions = NULL;
        char **added = NULL;

        if (!path || !target_node || read_full_file(path, 1 << 20, &text, NULL) < 0)
                return NULL; /* the copy added nothing */
        actions = json_tokener_parse(text);
        if (!actions || qmp_recorded_bitmap_adds(actions, target_node, &added) < 0)
                return strv_free(added), NULL;
        return added;
}

static void log_dropped(Domain *d, const char *job_id, int removed) {
        if (removed > 0)
                log_info("Domain '%s': copy job %s did not pivot: %d checkpoint bitmap(s) we gave its destination "
                         "removed.", d->def->name, job_id, removed);
}

/* <run>/<uuid>.copy-unbitmap-<id>: {"file": …, "bitmaps": […]}, the
 * removal a copy QEMU's quit ended still owes its destination. Written
 * when the copy's end is accounted for (its bitmap journal goes then),
 * removed once qemu-img has taken the bitmaps out of the file. */
#define UNBITMAP_INFIX ".copy-unbitmap-"

static char *unbitmap_path(Domain *d, const char *job_id) {
        _cleanup_free_ char *suffix = strprintf(UNBITMAP_INFIX "%s", job_id);
        return suffix ? domain_runtime_path(d, suffix) : NULL;
}

void bitmaps_copy_drop_after_quit(Domain *d, const char *job_id, const char *target_node, const char *file) {
        _cleanup_strv_free_ char **added = copy_added_names(d, job_id, target_node);
        _cleanup_(json_object_putp) json_object *o = added ? json_object_new_object() : NULL, *names = NULL;
        _cleanup_free_ char *path = added ? unbitmap_path(d, job_id) : NULL;
        const char *text;
        int r = -ENOMEM;
        bool ok;

        if (!added)
                return;
        ok = o && path && (names = json_object_new_array());
        for (char **n = added; ok && *n; n++)
                ok = json_object_array_add(names, json_object_new_string(*n)) >= 0;
        if (ok && json_object_object_add(o, "file", json_object_new_string(file)) >= 0 &&
            json_object_object_add(o, "bitmaps", TAKE_PTR(names)) >= 0) {
                text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
                r = write_file_atomic(path, text, strlen(text), 0600);
        }
        if (r < 0)
                log_warning_errno(r, "Domain '%s': cannot journal the removal of the bitmaps copy job %s gave %s "
                                  "(done when QEMU is gone, unless qsnapd dies first): %m", d->def->name, job_id, file);
}

/* One journaled removal: 0 when done (the file or its bitmaps gone). */
static int unbitmap_one(Domain *d, const char *path, bool *crash_armed, int *removed) {
        _cleanup_free_ char *text = NULL;
        _cleanup_(json_object_putp) json_object *o = NULL;
        json_object *file = NULL, *names = NULL;
        ImageBitmap *b = NULL;
        size_t n = 0;
        int r = 0;

        if (read_full_file(path, 1 << 20, &text, NULL) < 0 || !(o = json_tokener_parse(text)) ||
            !json_object_object_get_ex(o, "file", &file) || !json_object_is_type(file, json_type_string) ||
            !json_object_object_get_ex(o, "bitmaps", &names) || !json_object_is_type(names, json_type_array)) {
                log_warning("Domain '%s': %s is damaged; dropped.", d->def->name, path);
                return 0;
        }
        if (access(json_object_get_string(file), F_OK) < 0)
                return 0; /* the file is gone: nothing to take out */
        if (image_read_bitmaps(json_object_get_string(file), &b, &n, NULL) < 0)
                return -EIO;
        for (size_t k = 0; k < n; k++) {
                _cleanup_free_ char *m = NULL;
                bool ours = false;

                for (size_t i = 0; i < json_object_array_length(names) && !ours; i++)
                        ours = streq_ptr(json_object_get_string(json_object_array_get_idx(names, i)), b[k].name);
                if (!ours)
                        continue;
                /* crash points: block-copy:unbitmap-after-quit */
                if (*crash_armed)
                        crash_point("block-copy:unbitmap-after-quit");
                *crash_armed = false;
                if (image_bitmap_remove(json_object_get_string(file), b[k].name, &m) < 0) {
                        log_warning("Domain '%s': cannot remove bitmap %s from %s: %s", d->def->name, b[k].name,
                                    json_object_get_string(file), strna(m));
                        r = -EIO;
                } else
                        (*removed)++;
        }
        image_bitmaps_free(b, n);
        return r;
}

void bitmaps_copies_qemu_gone(Domain *d) {
        _cleanup_free_ char *prefix = strprintf("%s" UNBITMAP_INFIX, d->def->uuid);
        _cleanup_strv_free_ char **found = NULL;
        bool crash_armed = true;
        int removed = 0;
        struct dirent *de;
        DIR *dh;

        if (!prefix || !(dh = opendir(d->manager->config.runtime_dir)))
                return;
        while ((de = readdir(dh)))
                if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && strv_extend(&found, de->d_name) < 0)
                        break;
        closedir(dh);
        for (char **f = found; f && *f; f++) {
                _cleanup_free_ char *path = strjoin(d->manager->config.runtime_dir, "/", *f);

                /* Kept when a removal failed (QEMU still closing the file):
                 * tried again when the domain's QEMU goes next, or at start-up. */
                if (path && unbitmap_one(d, path, &crash_armed, &removed) >= 0)
                        (void) unlink(path);
        }
        log_dropped(d, "(cancelled by QEMU's quit)", removed);
}

int bitmaps_copy_drop(Domain *d, json_object *nodes, const char *job_id, const char *target_node) {
        _cleanup_strv_free_ char **added = d->qmp ? copy_added_names(d, job_id, target_node) : NULL;
        QmpNode *list = NULL;
        size_t n_list = 0;
        int removed = 0;

        if (!added || qmp_parse_named_nodes(nodes, &list, &n_list) < 0)
                return 0;
        for (size_t i = 0; i < n_list; i++) {
                if (!streq_ptr(list[i].node, target_node))
                        continue;
                for (size_t k = 0; k < list[i].n_bitmaps; k++) {
                        const char *name = list[i].bitmaps[k].name;

                        if (!strv_contains((const char *const *) added, name))
                                continue;
                        /* crash points: block-copy:unbitmap */
                        if (removed == 0)
                                crash_point("block-copy:unbitmap");
                        if (qmp_cmd_block_dirty_bitmap_remove(d->qmp, target_node, name, on_copy_unbitmap, NULL) < 0)
                                log_warning("Domain '%s': cannot send the removal of bitmap %s from %s.",
                                            d->def->name, name, target_node);
                        else
                                removed++;
                }
        }
        qmp_nodes_free(list, n_list);
        log_dropped(d, job_id, removed);
        return removed;
}
