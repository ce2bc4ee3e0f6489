/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Delete, the plan: which snapshots go ("victims", leaves first)
 * and, for one victim against the disks as they are at that moment, what
 * it takes:
 *   internal disks: `qemu-img snapshot -d` offline, one snapshot-delete
 *     job live (only where the tag lives in the disk's active file);
 *   external disks (S's overlay O on the frozen file F, F read from S's
 *     embedded <domain>): forward = commit O into F (offline `qemu-img
 *     commit`, then the other overlays of O are re-pointed at F), possible
 *     only while O is the only file based on F; backward = `qemu-img
 *     rebase -b <F's backing>` of every overlay of F, then F goes unless
 *     something still needs it. The XML's <on_delete> picks; the other
 *     direction is used where the preferred one is impossible.
 * The checks here are the dry run too (CheckDelete), so Delete refuses
 * with exactly what CheckDelete says; and the journal record of a victim.
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <json-c/json.h>

#include "config.h"
#include "core/disk.h"
#include "core/domain-jobs.h"
#include "core/files.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/measure.h"
#include "core/operation.h"
#include "core/nvram.h"
#include "ops/snapshot-delete.h"
#include "ops/snapshot-delete/internal.h"
#include "qemu/child.h"
#include "qemu/image.h"
#include "qemu/img.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/util.h"


void delete_victim_plan_done(VictimPlan *vp) {
        for (size_t i = 0; i < vp->n_actions; i++) {
                strv_free(vp->actions[i].argv);
                strv_free(vp->actions[i].targets);
                free(vp->actions[i].what);
                free(vp->actions[i].target);
                free(vp->actions[i].top_file);
                free(vp->actions[i].base_file);
                free(vp->actions[i].drop_file);
        }
        free(vp->actions);
        for (size_t i = 0; i < vp->n_renames; i++) {
                free(vp->renames[i].target);
                free(vp->renames[i].from);
                free(vp->renames[i].to);
        }
        free(vp->renames);
        strv_free(vp->unlink);
        free(vp->space_dir);
        *vp = (VictimPlan) {};
}

static int message_set(char **ret_message, int r, const char *fmt, ...) _printf_(3, 4);
static int message_set(char **ret_message, int r, const char *fmt, ...) {
        va_list ap;

        if (ret_message) {
                free(*ret_message);
                va_start(ap, fmt);
                if (vasprintf(ret_message, fmt, ap) < 0)
                        *ret_message = NULL;
                va_end(ap);
        }
        return r;
}

/* Test hook: $QSNAPD_TEST_DELETE_SPEED (bytes/s) throttles the merges (QEMU
 * jobs, qemu-img commit -r), so that tests can abort a merge or kill QEMU in its middle. */
uint64_t delete_test_speed(void) {
        const char *e = getenv("QSNAPD_TEST_DELETE_SPEED");
        return e ? strtoull(e, NULL, 10) : 0;
}

static Action *action_add(VictimPlan *vp, ActionKind kind) {
        Action *a = reallocarray(vp->actions, vp->n_actions + 1, sizeof(Action));

        if (!a)
                return NULL;
        vp->actions = a;
        a += vp->n_actions++;
        *a = (Action) { .kind = kind };
        return a;
}

static int action_add_command(VictimPlan *vp, const char *what, ...) _sentinel_;
static int action_add_command(VictimPlan *vp, const char *what, ...) {
        Action *a = action_add(vp, ACTION_COMMAND);
        const char *arg;
        va_list ap;

        if (!a)
                return -ENOMEM;
        a->what = strdup(what);
        if (!a->what)
                return -ENOMEM;
        va_start(ap, what);
        while ((arg = va_arg(ap, const char *)))
                if (strv_extend(&a->argv, arg) < 0) {
                        va_end(ap);
                        return -ENOMEM;
                }
        va_end(ap);
        return 0;
}

static int action_add_qmp(VictimPlan *vp, ActionKind kind, const char *target, const char *top, const char *base,
                          const char *drop) {
        Action *a = action_add(vp, kind);

        if (!a)
                return -ENOMEM;
        a->what = strdup(kind == ACTION_QMP_COMMIT ? (top ? "commit" : "active-commit") : "stream");
        a->target = strdup(target);
        a->top_file = top ? strdup(top) : NULL;
        a->base_file = base ? strdup(base) : NULL;
        a->drop_file = strdup(drop);
        if (!a->what || !a->target || (top && !a->top_file) || (base && !a->base_file) || !a->drop_file)
                return -ENOMEM;
        return 0;
}

int delete_rename_add(VictimPlan *vp, const char *target, const char *from, const char *to, DiskFormat to_format,
                      bool recorded) {
        FileRename *r = reallocarray(vp->renames, vp->n_renames + 1, sizeof(FileRename));

        if (!r)
                return -ENOMEM;
        vp->renames = r;
        r += vp->n_renames++;
        *r = (FileRename) { .target = strdup(target), .from = strdup(from), .to = strdup(to), .to_format = to_format,
                        .recorded = recorded };
        return r->target && r->from && r->to ? 0 : -ENOMEM;
}

/* From the file the path gate opens (0 when it cannot be read, as before). */
static uint32_t internal_count(Domain *d, const char *file, DiskFormat format) {
        _cleanup_free_ char *why = NULL;
        _cleanup_close_ int fd = -EBADF;
        uint32_t n = 0;

        if (format == DISK_FORMAT_QCOW2 && gate_open_image(d, file, "The image", &fd, &why) >= 0)
                (void) image_count_internal_snapshots_fd(fd, &n);
        return n;
}


/* ---- planning one victim ---- */

static const char *format_name(DiskFormat f) {
        return disk_format_to_string(f) ?: "qcow2";
}

/* What merging this file's own data elsewhere may take: `qemu-img
 * measure`'s answer when core/measure.c has it, else the file's allocated
 * size (and the file noted, for the caller to measure asynchronously and
 * check again: no qemu-img runs in the event loop). */
static uint64_t merge_bytes(Domain *d, const char *file, DiskFormat format) {
        uint64_t bytes = 0;

        (void) measure_lookup(d->manager, file, format, &bytes);
        return bytes;
}

static bool in_running(const ImageChain *c, const char *file) {
        for (size_t i = 0; c && i < c->n_layers; i++)
                if (streq(c->layers[i].path, file))
                        return true;
        return false;
}

/* Where one disk's merge runs: the chain QEMU runs (NULL when QEMU does
 * not run the disk) and its active file. */
typedef struct MergeSite {
        Domain *domain;
        const char *target;
        const ImageChain *running;
        const char *running_top;
} MergeSite;

/* Forward: O into F (QEMU's commit where it runs O, else qemu-img
 * commit), O's other overlays re-pointed at F, O renamed to F, O goes. */
static int plan_forward(const MergeSite *m, const FileGraph *g, const char *o, const char *f, ssize_t fi,
                        char *const *over_o, VictimPlan *vp) {
        const char *target = m->target;
        const ImageChain *running = m->running;
        const char *running_top = m->running_top;
        int r;

        /* F grows by at most what O holds. */
        vp->bytes += merge_bytes(m->domain, o, DISK_FORMAT_QCOW2);
        if (running && streq(o, running_top))
                r = action_add_qmp(vp, ACTION_QMP_COMMIT, target, NULL, f, o);
        else if (running && in_running(running, o))
                r = action_add_qmp(vp, ACTION_QMP_COMMIT, target, o, f, o);
        else {
                /* O and the chain below it as qsnapd read it, by descriptor
                 * (qemu/img.h): O's header cannot redirect the commit. */
                _cleanup_free_ char *rate = strprintf("%" PRIu64, delete_test_speed());
                _cleanup_free_ char *chain = img_placeholder(IMG_CHAIN, o, DISK_FORMAT_QCOW2);

                if (!rate || !chain)
                        return -ENOMEM;
                r = delete_test_speed() > 0
                        ? action_add_command(vp, "commit", QEMU_IMG_BINARY, "commit", "-p", "-r", rate, "-d", chain, NULL)
                        : action_add_command(vp, "commit", QEMU_IMG_BINARY, "commit", "-p", "-d", chain, NULL);
        }
        if (r < 0)
                return r;
        /* O's other overlays (branches on O) read F from now on;
         * F now reads as O did, so their content stays. The one
         * QEMU runs is re-pointed by QEMU itself. */
        for (char *const *x = over_o; *x; x++) {
                _cleanup_free_ char *layer = NULL;

                if (running && in_running(running, *x))
                        continue;
                /* Only the header's name changes: X alone, its backing unread. */
                layer = img_placeholder(IMG_LAYER, *x, DISK_FORMAT_QCOW2);
                r = layer ? action_add_command(vp, "rebase", QEMU_IMG_BINARY, "rebase", "-u", "-F",
                                               format_name(g->formats[fi]), "-b", f, layer, NULL)
                          : -ENOMEM;
                if (r < 0)
                        return r;
        }
        r = delete_rename_add(vp, target, o, f, g->formats[fi], true);
        if (r < 0)
                return r;
        if (file_graph_foreign_overlays(g, o) == 0 && strv_extend(&vp->unlink, o) < 0)
                return -ENOMEM;
        return 0;
}

/* `qemu-img rebase` of x onto backing (NULL or "": none) with the data
 * copied, by descriptor: x's chain and the new backing's chain as qsnapd
 * read them. The header then names the new backing's json: spec, so a
 * second, header-only rebase ("rebase-name") writes its real name. */
static int plan_offline_rebase(VictimPlan *vp, const char *x, const char *backing, DiskFormat backing_format) {
        Action *a;
        _cleanup_free_ char *chain = img_placeholder(IMG_CHAIN, x, DISK_FORMAT_QCOW2);
        _cleanup_free_ char *layer = img_placeholder(IMG_LAYER, x, DISK_FORMAT_QCOW2);
        _cleanup_free_ char *new_backing = isempty(backing) ? NULL : img_placeholder(IMG_CHAIN, backing, backing_format);
        int r;

        if (!chain || !layer || (!isempty(backing) && !new_backing))
                return -ENOMEM;
        if (isempty(backing))
                return action_add_command(vp, "rebase", QEMU_IMG_BINARY, "rebase", "-p", "-b", "", chain, NULL);
        r = action_add_command(vp, "rebase", QEMU_IMG_BINARY, "rebase", "-p", "-F", format_name(backing_format), "-b",
                               new_backing, chain, NULL);
        if (r < 0)
                return r;
        /* Its own name, its own crash point: between the two, the header
         * names the json: spec (the journal lists this step, recovery.c
         * writes the real name then). */
        r = action_add_command(vp, "rebase-name", QEMU_IMG_BINARY, "rebase", "-u", "-F", format_name(backing_format),
                               "-b", backing, layer, NULL);
        if (r < 0)
                return r;
        a = vp->actions + vp->n_actions - 1;
        a->top_file = strdup(x);
        a->base_file = strdup(backing);
        a->base_format = backing_format;
        return a->top_file && a->base_file ? 0 : -ENOMEM;
}

/* Backward: every overlay of F gets F's data and F's backing, F renamed
 * to O where something named it, F goes unless something reads it. */
static int plan_backward(const MergeSite *m, const FileGraph *g, const char *o, const char *f, ssize_t fi,
                         const char *backing, char *const *over_f, VictimPlan *vp) {
        const char *target = m->target;
        const ImageChain *running = m->running;
        int r;

        /* Every overlay of F gets F's data and F's backing. */
        for (char *const *x = over_f; *x; x++) {
                vp->bytes += merge_bytes(m->domain, f, g->formats[fi]);
                if (running && in_running(running, *x))
                        r = action_add_qmp(vp, ACTION_QMP_STREAM, target, *x, isempty(backing) ? NULL : backing, f);
                else
                        r = plan_offline_rebase(vp, *x, backing,
                                                isempty(backing) ? DISK_FORMAT_QCOW2 : g->formats[file_graph_find(g, backing)]);
                if (r < 0)
                        return r;
        }
        /* What named F as an overlay (the parent's <source>) names
         * the overlay that took F's place: O, the one S made. */
        r = delete_rename_add(vp, target, f, o, DISK_FORMAT_QCOW2, false);
        if (r < 0)
                return r;
        /* Files nothing of ours names may still read F: it stays then. */
        if (internal_count(m->domain, f, g->formats[fi]) == 0 && file_graph_foreign_overlays(g, f) == 0 &&
            strv_extend(&vp->unlink, f) < 0)
                return -ENOMEM;
        return 0;
}

/* One external disk of `s`: forward or backward, whichever is possible,
 * preferring what <on_delete> says. */
static int plan_external_disk(Domain *d, Snapshot *s, const SnapshotDisk *sd, VictimPlan *vp, char **ret_message) {
        _cleanup_(file_graph_done) FileGraph g = {};
        _cleanup_strv_free_ char **over_f = NULL, **over_o = NULL;
        _cleanup_free_ char *f = NULL;
        const char *o = sd->source, *target = sd->name, *backing;
        const char *why_not_forward = NULL, *why_not_backward = NULL;
        _cleanup_free_ char *why_f = NULL, *why_b = NULL;
        const DomainDisk *live_disk = d->live && domain_is_active(d) ? domain_def_find_disk(d->live, target) : NULL;
        const ImageChain *running = NULL;
        const char *running_top = NULL;
        bool forward, rebased;
        MergeSite m;
        ssize_t fi, oi;
        int r;

        /* The chain QEMU runs: merged there by QEMU's own jobs. */
        if (live_disk) {
                running = domain_disk_chain(d, live_disk->source, live_disk->format);
                running_top = live_disk->source;
                if (!running)
                        return message_set(ret_message, -QSNAP_E_QEMU_FAILED, "Cannot read the chain of disk %s (%s).", target,
                                           live_disk->source);
        }

        f = snapshot_recorded_source(s->def, target);
        if (!f)
                return message_set(ret_message, -QSNAP_E_UNSUPPORTED,
                                   "Snapshot '%s' recorded no source for disk %s: nothing tells which file it froze.",
                                   snapshot_name(s), target);
        /* F is merged into or removed: inside the allowed folders only. */
        r = gate_check(d, f, "The frozen file", ret_message);
        if (r < 0)
                return r;
        if (!o || access(o, F_OK) < 0)
                return message_set(ret_message, -QSNAP_E_OPERATION_INVALID, "Disk %s of snapshot '%s': its overlay %s is gone.", target,
                                   snapshot_name(s), strna(o));
        if (access(f, F_OK) < 0)
                return message_set(ret_message, -QSNAP_E_OPERATION_INVALID, "Disk %s of snapshot '%s': its frozen file %s is gone.", target,
                                   snapshot_name(s), f);
        /* qemu-img measures, commits and rebases them: never a FIFO or a device. */
        r = image_check_regular(o, "The overlay", ret_message);
        if (r >= 0)
                r = image_check_regular(f, "The frozen file", ret_message);
        if (r < 0)
                return r;
        r = file_graph_build(d, target, &g);
        if (r >= 0)
                r = file_graph_scan_folders(&g);
        if (r < 0)
                return r;
        fi = file_graph_find(&g, f);
        oi = file_graph_find(&g, o);
        /* A backward merge cut short (a restart finishes it): O got F's
         * data and F's backing already. */
        rebased = fi >= 0 && oi >= 0 && !streq(g.backings[oi], f) && streq(g.backings[oi], g.backings[fi]);
        if (fi < 0 || oi < 0 || (!streq(g.backings[oi], f) && !rebased))
                return message_set(ret_message, -QSNAP_E_OPERATION_INVALID,
                                   "Disk %s of snapshot '%s': overlay %s is no longer based on %s; refusing to guess.",
                                   target, snapshot_name(s), o, f);
        over_f = file_graph_overlays(&g, f);
        over_o = file_graph_overlays(&g, o);
        if (!over_f || !over_o)
                return -ENOMEM;
        backing = g.backings[fi];

        /* Forward: O into F, then O goes: nothing else may be based on F,
         * and O may hold no internal snapshots (they would go with it). */
        if (rebased)
                why_not_forward = "a backward merge of it was interrupted";
        else if (strv_length(over_f) + file_graph_foreign_overlays(&g, f) != 1)
                why_not_forward = why_f = strprintf("%zu files are based on %s (forward needs %s to be the only one)",
                                                    strv_length(over_f) + file_graph_foreign_overlays(&g, f), f, o);
        else if (internal_count(d, o, DISK_FORMAT_QCOW2) > 0)
                why_not_forward = why_f = strprintf("%s holds internal snapshots", o);
        /* Backward: F into every overlay, which must hold no internal
         * snapshots (their view would lose F's data). */
        for (char **x = over_f; *x && !why_not_backward; x++)
                if (internal_count(d, *x, DISK_FORMAT_QCOW2) > 0)
                        why_not_backward = why_b = strprintf("%s holds internal snapshots", *x);
        if (!why_not_backward && !isempty(backing) && g.formats[file_graph_find(&g, backing)] != DISK_FORMAT_QCOW2 &&
            g.formats[file_graph_find(&g, backing)] != DISK_FORMAT_RAW)
                why_not_backward = "the backing file's format is unknown";

        if (why_not_forward && why_not_backward)
                return message_set(ret_message, -QSNAP_E_OPERATION_INVALID,
                                   "Disk %s of snapshot '%s' can be merged neither forward (%s) nor backward (%s).",
                                   target, snapshot_name(s), why_not_forward, why_not_backward);
        forward = !why_not_forward && (sd->on_delete != MERGE_BACKWARD || why_not_backward);

        vp->merge = true;
        if (!vp->space_dir)
                vp->space_dir = file_dir_of(f);
        m = (MergeSite) { .domain = d, .target = target, .running = running, .running_top = running_top };
        r = forward ? plan_forward(&m, &g, o, f, fi, over_o, vp) : plan_backward(&m, &g, o, f, fi, backing, over_f, vp);
        if (r < 0)
                return r;
        log_debug("Domain '%s': deleting snapshot '%s' merges disk %s %s (%s <- %s).", d->def->name, snapshot_name(s),
                  target, forward ? "forward" : "backward", f, o);
        return 0;
}

/* UEFI: the copy of the variable store an external snapshot kept goes
 * with it (only one beside the store: never a file REDEFINE'd metadata
 * names elsewhere); an internal tag in a qcow2 store is deleted offline
 * here, live by qmp_delete_start() (run.c). */
static int plan_nvram(Domain *d, Snapshot *s, bool live, VictimPlan *vp) {
        const DomainDef *cur = domain_current_def(d);

        if (s->def->nvram_file && nvram_snapshot_path_ok(cur, s->def->nvram_file) &&
            strv_extend(&vp->unlink, s->def->nvram_file) < 0)
                return -ENOMEM;
        if (s->def->nvram_internal && !live && def_firmware(cur) && access(cur->firmware.nvram, F_OK) >= 0) {
                /* qsnapd's own store (or a host-admin-approved one): not through the gate */
                _cleanup_free_ char *file = img_placeholder(IMG_FILE, cur->firmware.nvram, DISK_FORMAT_QCOW2);

                return file ? action_add_command(vp, "snapshot", QEMU_IMG_BINARY, "snapshot", "-d", snapshot_name(s),
                                                 file, NULL)
                            : -ENOMEM;
        }
        return 0;
}

int delete_plan_victim(Domain *d, Snapshot *s, bool metadata_only, VictimPlan *vp, char **ret_message) {
        const DomainDef *cur = domain_current_def(d);
        bool live = domain_is_active(d);
        Action *qmp_action = NULL;
        int r;

        if (metadata_only)
                return 0;
        /* Metadata stored before the gate existed may name any file: the
         * gate again, before anything is looked at, unlinked or merged. */
        r = gate_check_snapshot_def(d, s->def, ret_message);
        if (r < 0)
                return r;
        if (snapshot_memory(s) == SNAPSHOT_LOCATION_EXTERNAL && s->def->memory_file) {
                /* Only a memory state file goes with its snapshot, never a
                 * FIFO or a device node the metadata happens to name. */
                r = image_check_regular(s->def->memory_file, "The memory state file", ret_message);
                if (r < 0)
                        return r;
                if (strv_extend(&vp->unlink, s->def->memory_file) < 0)
                        return -ENOMEM;
        }
        r = plan_nvram(d, s, live, vp);
        if (r < 0)
                return r;

        for (size_t i = 0; i < s->def->n_disks; i++) {
                const SnapshotDisk *sd = s->def->disks + i;
                const DomainDisk *disk = domain_def_find_disk(cur, sd->name);
                _cleanup_free_ char *file = NULL, *layer = NULL;

                if (sd->snapshot == SNAPSHOT_LOCATION_EXTERNAL) {
                        r = plan_external_disk(d, s, sd, vp, ret_message);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (sd->snapshot != SNAPSHOT_LOCATION_INTERNAL)
                        continue;
                /* The tag lives in the file that was active when it was taken. */
                file = snapshot_recorded_source(s->def, sd->name);
                if (!file && disk)
                        file = strdup(disk->source);
                if (!file)
                        return message_set(ret_message, -QSNAP_E_OPERATION_INVALID, "Snapshot '%s': no file is known for disk %s.",
                                           snapshot_name(s), sd->name);
                if (live) {
                        if (!disk || !streq(disk->source, file))
                                return message_set(ret_message, -QSNAP_E_UNSUPPORTED,
                                                   "Snapshot '%s' of disk %s lives in %s, which the running QEMU holds "
                                                   "read-only as a backing file; shut the domain off to delete it.",
                                                   snapshot_name(s), sd->name, file);
                        if (!qmp_action) {
                                qmp_action = action_add(vp, ACTION_QMP_INTERNAL);
                                if (!qmp_action || !(qmp_action->what = strdup("snapshot-delete")))
                                        return -ENOMEM;
                        }
                        if (strv_extend(&qmp_action->targets, sd->name) < 0)
                                return -ENOMEM;
                } else {
                        r = gate_check(d, file, "The image", ret_message);
                        if (r < 0)
                                return r;
                        if (access(file, F_OK) < 0)
                                return message_set(ret_message, -QSNAP_E_OPERATION_INVALID, "Snapshot '%s': disk %s's file %s is gone.",
                                                   snapshot_name(s), sd->name, file);
                        r = image_check_regular(file, "The image", ret_message);
                        if (r < 0)
                                return r;
                        /* The file alone (a tag lives in one file), by descriptor. */
                        layer = img_placeholder(IMG_LAYER, file, DISK_FORMAT_QCOW2);
                        r = layer ? action_add_command(vp, "snapshot", QEMU_IMG_BINARY, "snapshot", "-d",
                                                       snapshot_name(s), layer, NULL)
                                  : -ENOMEM;
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* ---- which snapshots ---- */

/* Leaves first. */
int delete_collect_victims(Snapshot *s, uint64_t flags, Snapshot ***ret, size_t *ret_n) {
        _cleanup_free_ Snapshot **desc = NULL;
        Snapshot **l;
        size_t n = 0, k = 0;
        int r;

        if (flags & (SNAPSHOT_DELETE_CHILDREN | SNAPSHOT_DELETE_CHILDREN_ONLY)) {
                r = snapshot_tree_list(s->tree, s, SNAPSHOT_LIST_DESCENDANTS | SNAPSHOT_LIST_TOPOLOGICAL, &desc, &n);
                if (r < 0)
                        return r;
        }
        l = new0(Snapshot *, n + 1);
        if (!l)
                return -ENOMEM;
        for (size_t i = n; i > 0; i--)
                l[k++] = desc[i - 1];
        if (!(flags & SNAPSHOT_DELETE_CHILDREN_ONLY))
                l[k++] = s;
        *ret = l;
        *ret_n = k;
        return 0;
}

/* Whether one of the victims has data on disk `target` (its snapshot of
 * that disk is internal or external): only those disks' jobs are in the
 * way, locks being per disk. */
static bool victims_cover_disk(Snapshot *const *victims, size_t n, const char *target) {
        for (size_t i = 0; i < n; i++) {
                const SnapshotDisk *sd = snapshot_def_find_disk(victims[i]->def, target);

                if (sd && IN_SET(sd->snapshot, SNAPSHOT_LOCATION_INTERNAL, SNAPSHOT_LOCATION_EXTERNAL))
                        return true;
        }
        return false;
}

static int check_domain(Domain *d, Snapshot *const *victims, size_t n_victims, char **ret_message) {
        const DomainDef *cur = domain_current_def(d);

        if (domain_is_busy(d)) {
                _cleanup_free_ char *busy = operation_busy_message(d);
                return message_set(ret_message, -QSNAP_E_BUSY, "%s", strna(busy));
        }
        if (d->attaching)
                return message_set(ret_message, -QSNAP_E_BUSY, "Domain '%s' is being reconnected; try again.", d->def->name);
        for (size_t i = 0; i < cur->n_disks; i++) {
                Job *j;

                if (!victims_cover_disk(victims, n_victims, cur->disks[i].target))
                        continue;
                j = domain_disk_job(d, cur->disks[i].target);
                if (j)
                        return message_set(ret_message, -QSNAP_E_BUSY, "Disk %s of domain '%s' has a %s job (%s) running.",
                                           cur->disks[i].target, d->def->name, job_type_to_string(j->type), j->id);
        }
        if (d->graph_busy)
                return message_set(ret_message, -QSNAP_E_BUSY, "Domain '%s' is finishing a block job; try again.", d->def->name);
        return 0;
}

int delete_check_space(const char *dir, uint64_t bytes, char **ret_message) {
        struct statvfs sv;

        if (!dir || bytes == 0 || statvfs(dir, &sv) < 0)
                return 0;
        if ((uint64_t) sv.f_bavail * sv.f_frsize < bytes)
                return message_set(ret_message, -QSNAP_E_NO_SPACE,
                                   "The merge needs up to %" PRIu64 " bytes in %s, but only %" PRIu64 " are free.", bytes,
                                   dir, (uint64_t) sv.f_bavail * sv.f_frsize);
        return 0;
}

int snapshot_delete_check(Snapshot *s, uint64_t flags, uint64_t *ret_bytes, char **ret_message) {
        Domain *d = s->tree->domain;
        _cleanup_free_ Snapshot **victims = NULL;
        uint64_t bytes = 0;
        size_t n;
        int r;

        if (ret_bytes)
                *ret_bytes = 0;
        if (flags & ~SNAPSHOT_DELETE_ALL)
                return message_set(ret_message, -QSNAP_E_INVALID_ARGUMENT, "Unknown flag bits 0x%" PRIx64 " (known: 0x%llx).",
                                   (uint64_t) (flags & ~SNAPSHOT_DELETE_ALL), SNAPSHOT_DELETE_ALL);
        if ((flags & SNAPSHOT_DELETE_CHILDREN) && (flags & SNAPSHOT_DELETE_CHILDREN_ONLY))
                return message_set(ret_message, -QSNAP_E_INVALID_ARGUMENT, "CHILDREN and CHILDREN_ONLY exclude each other.");
        r = delete_collect_victims(s, flags, &victims, &n);
        if (r < 0)
                return r;
        r = check_domain(d, victims, n, ret_message);
        if (r < 0)
                return r;
        /* Each one against the disks as they are now: exact for one
         * snapshot, a good approximation for a subtree (leaves first). */
        for (size_t i = 0; i < n; i++) {
                VictimPlan vp = {};

                r = delete_plan_victim(d, victims[i], flags & SNAPSHOT_DELETE_METADATA_ONLY, &vp, ret_message);
                if (r >= 0) {
                        bytes += vp.bytes;
                        r = delete_check_space(vp.space_dir, bytes, ret_message);
                }
                delete_victim_plan_done(&vp);
                if (r < 0) {
                        if (ret_bytes)
                                *ret_bytes = bytes;
                        return r;
                }
        }
        if (ret_bytes)
                *ret_bytes = bytes;
        return 0;
}

/* ---- the operation journal: <state>/ops/<uuid>.snapshot-delete ---- */

/* phase "merging": the data may be anywhere between before and after;
 * "metadata": the metadata are stored, only files are left to remove. */
int delete_journal_write(Operation *op, const char *snapshot, const char *job_id, const char *phase,
                         const VictimPlan *vp) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *renames = json_object_new_array(), *files = json_object_new_array(), *names;

        if (!o || !renames || !files) {
                json_object_put(renames);
                json_object_put(files);
                return -ENOMEM;
        }
        json_object_object_add(o, "snapshot", json_object_new_string(snapshot));
        if (job_id)
                json_object_object_add(o, "job", json_object_new_string(job_id));
        json_object_object_add(o, "phase", json_object_new_string(phase));
        for (size_t i = 0; i < vp->n_renames; i++) {
                json_object *e = json_object_new_object();

                if (!e)
                        break;
                json_object_object_add(e, "target", json_object_new_string(vp->renames[i].target));
                json_object_object_add(e, "from", json_object_new_string(vp->renames[i].from));
                json_object_object_add(e, "to", json_object_new_string(vp->renames[i].to));
                json_object_object_add(e, "forward", json_object_new_boolean(vp->renames[i].recorded));
                json_object_array_add(renames, e);
        }
        json_object_object_add(o, "renames", renames);
        for (char **f = vp->unlink; f && *f; f++)
                json_object_array_add(files, json_object_new_string(*f));
        json_object_object_add(o, "unlink", files);
        names = json_object_new_array();
        if (!names)
                return -ENOMEM;
        for (size_t i = 0; i < vp->n_actions; i++) {
                const Action *a = vp->actions + i;
                json_object *e;

                if (!streq(a->what, "rebase-name") || !(e = json_object_new_object()))
                        continue;
                json_object_object_add(e, "file", json_object_new_string(a->top_file));
                json_object_object_add(e, "backing", json_object_new_string(a->base_file));
                json_object_object_add(e, "format", json_object_new_string(format_name(a->base_format)));
                json_object_array_add(names, e);
        }
        json_object_object_add(o, "names", names);
        return operation_journal_write(op, o);
}

void delete_journal_remove(Domain *d) {
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND);
}
