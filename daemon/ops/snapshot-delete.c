/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Deleting snapshots. The snapshots to delete ("victims") are handled one
 * at a time, leaves first; each one is planned against the disks as they
 * are at that moment:
 *   internal disks: `qemu-img snapshot -d` offline, one snapshot-delete
 *     job live (only where the tag lives in the disk's active file);
 *   external disks (S's overlay O on the frozen file F, F read from S's
 *     embedded <domain>): forward = commit O into F (offline `qemu-img
 *     commit`, then the other overlays of O are re-pointed at F), possible
 *     only while O is the only file based on F; backward = `qemu-img
 *     rebase -b <F's backing>` of every overlay of F, then F goes unless
 *     something still needs it. The XML's <on_delete> picks; the other
 *     direction is used where the preferred one is impossible.
 * The merge runs as one local BlockJob1 ("snapshot-delete") whose Cur/End
 * add up the steps (100 per step). Only once every step of a victim
 * succeeded are its metadata removed and the recorded file names
 * rewritten, in one store transaction, and only then are files no longer
 * referenced unlinked. A failure leaves that victim (and those after it)
 * in place and deletable again.
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
#include "core/manager.h"
#include "ops/snapshot-delete.h"
#include "qemu/child.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

typedef enum ActionKind {
        ACTION_COMMAND,       /* argv, offline */
        ACTION_QMP_INTERNAL,  /* snapshot-delete job over QMP */
        ACTION_QMP_COMMIT,    /* block-commit: top_file (NULL: active, with pivot) into base_file */
        ACTION_QMP_STREAM,    /* block-stream into top_file down to base_file (NULL: everything) */
} ActionKind;

typedef struct Action {
        ActionKind kind;
        char **argv;
        char *what;           /* for messages and the log */
        char **targets;       /* QMP: the disks whose active file holds the tag */
        char *target;         /* commit/stream: the disk */
        char *top_file, *base_file;
        char *drop_file;      /* commit/stream: the file that leaves the graph (its node is released) */
} Action;

/* What deleting one snapshot takes. */
typedef struct VictimPlan {
        Action *actions;
        size_t n_actions;
        FileRename *renames;
        size_t n_renames;
        char **unlink;        /* files that go once the metadata is stored, if unreferenced */
        bool merge;           /* an external merge: runs as a job */
        uint64_t bytes;       /* what the merges may need on disk */
        char *space_dir;      /* where they need it */
} VictimPlan;

static void victim_plan_done(VictimPlan *vp) {
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
static uint64_t test_speed(void) {
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

static int rename_add(VictimPlan *vp, const char *target, const char *from, const char *to, DiskFormat to_format,
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

static uint32_t internal_count(const char *file, DiskFormat format) {
        uint32_t n = 0;
        (void) image_count_internal_snapshots(file, format, &n);
        return n;
}


/* ---- planning one victim ---- */

static const char *format_name(DiskFormat f) {
        return disk_format_to_string(f) ?: "qcow2";
}

/* What merging this file's own data elsewhere may take: `qemu-img
 * measure` of the file without its backing chain (-U: QEMU may hold it
 * open), or its allocated size when qemu-img cannot say. */
static uint64_t merge_bytes(const char *file, DiskFormat format) {
        _cleanup_(json_object_putp) json_object *spec = json_object_new_object(), *o = NULL;
        _cleanup_free_ char *out = NULL;
        json_object *f = json_object_new_object(), *required;
        const char *text;
        struct stat st;

        if (spec && f) {
                json_object_object_add(spec, "driver", json_object_new_string(format_name(format)));
                json_object_object_add(f, "driver", json_object_new_string("file"));
                json_object_object_add(f, "filename", json_object_new_string(file));
                json_object_object_add(spec, "file", TAKE_PTR(f));
                if (format == DISK_FORMAT_QCOW2)
                        json_object_object_add(spec, "backing", NULL);
        }
        json_object_put(f);
        text = spec ? json_object_to_json_string_ext(spec, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE) : NULL;
        if (text) {
                _cleanup_free_ char *name = strjoin("json:", text);
                char *argv[] = { (char *) QEMU_IMG_BINARY, (char *) "measure", (char *) "-U", (char *) "--output=json",
                                 (char *) "-O", (char *) "qcow2", name, NULL };

                if (name && run_command(argv, &out) == 0 && (o = json_tokener_parse(out)) &&
                    json_object_object_get_ex(o, "required", &required))
                        return (uint64_t) json_object_get_int64(required);
        }
        log_debug("qemu-img measure of %s gave no answer (%s); counting its allocated size.", file, strna(out));
        return stat(file, &st) >= 0 ? (uint64_t) st.st_blocks * 512 : 0;
}

static bool in_running(const ImageChain *c, const char *file) {
        for (size_t i = 0; c && i < c->n_layers; i++)
                if (streq(c->layers[i].path, file))
                        return true;
        return false;
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
        ssize_t fi, oi;
        int r;

        /* The chain QEMU runs: merged there by QEMU's own jobs. */
        if (live_disk) {
                running = domain_disk_chain(d, live_disk->source, live_disk->format);
                running_top = live_disk->source;
                if (!running)
                        return message_set(ret_message, -EIO, "Cannot read the chain of disk %s (%s).", target,
                                           live_disk->source);
        }

        f = snapshot_recorded_source(s->def, target);
        if (!f)
                return message_set(ret_message, -EOPNOTSUPP,
                                   "Snapshot '%s' recorded no source for disk %s: nothing tells which file it froze.",
                                   snapshot_name(s), target);
        if (!o || access(o, F_OK) < 0)
                return message_set(ret_message, -ESTALE, "Disk %s of snapshot '%s': its overlay %s is gone.", target,
                                   snapshot_name(s), strna(o));
        if (access(f, F_OK) < 0)
                return message_set(ret_message, -ESTALE, "Disk %s of snapshot '%s': its frozen file %s is gone.", target,
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
                return message_set(ret_message, -ESTALE,
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
        else if (internal_count(o, DISK_FORMAT_QCOW2) > 0)
                why_not_forward = why_f = strprintf("%s holds internal snapshots", o);
        /* Backward: F into every overlay, which must hold no internal
         * snapshots (their view would lose F's data). */
        for (char **x = over_f; *x && !why_not_backward; x++)
                if (internal_count(*x, DISK_FORMAT_QCOW2) > 0)
                        why_not_backward = why_b = strprintf("%s holds internal snapshots", *x);
        if (!why_not_backward && !isempty(backing) && g.formats[file_graph_find(&g, backing)] != DISK_FORMAT_QCOW2 &&
            g.formats[file_graph_find(&g, backing)] != DISK_FORMAT_RAW)
                why_not_backward = "the backing file's format is unknown";

        if (why_not_forward && why_not_backward)
                return message_set(ret_message, -ESTALE,
                                   "Disk %s of snapshot '%s' can be merged neither forward (%s) nor backward (%s).",
                                   target, snapshot_name(s), why_not_forward, why_not_backward);
        forward = !why_not_forward && (sd->on_delete != MERGE_BACKWARD || why_not_backward);

        vp->merge = true;
        if (!vp->space_dir)
                vp->space_dir = file_dir_of(f);
        if (forward) {
                /* F grows by at most what O holds. */
                vp->bytes += merge_bytes(o, DISK_FORMAT_QCOW2);
                if (running && streq(o, running_top))
                        r = action_add_qmp(vp, ACTION_QMP_COMMIT, target, NULL, f, o);
                else if (running && in_running(running, o))
                        r = action_add_qmp(vp, ACTION_QMP_COMMIT, target, o, f, o);
                else if (test_speed() > 0) {
                        _cleanup_free_ char *rate = strprintf("%" PRIu64, test_speed());
                        r = rate ? action_add_command(vp, "commit", QEMU_IMG_BINARY, "commit", "-p", "-r", rate, "-f",
                                                      "qcow2", "-d", o, NULL)
                                 : -ENOMEM;
                } else
                        r = action_add_command(vp, "commit", QEMU_IMG_BINARY, "commit", "-p", "-f", "qcow2", "-d", o,
                                               NULL);
                if (r < 0)
                        return r;
                /* O's other overlays (branches on O) read F from now on;
                 * F now reads as O did, so their content stays. The one
                 * QEMU runs is re-pointed by QEMU itself. */
                for (char **x = over_o; *x; x++) {
                        if (running && in_running(running, *x))
                                continue;
                        r = action_add_command(vp, "rebase", QEMU_IMG_BINARY, "rebase", "-u", "-f", "qcow2", "-F",
                                               format_name(g.formats[fi]), "-b", f, *x, NULL);
                        if (r < 0)
                                return r;
                }
                r = rename_add(vp, target, o, f, g.formats[fi], true);
                if (r < 0)
                        return r;
                if (file_graph_foreign_overlays(&g, o) == 0 && strv_extend(&vp->unlink, o) < 0)
                        return -ENOMEM;
        } else {
                /* Every overlay of F gets F's data and F's backing. */
                for (char **x = over_f; *x; x++) {
                        vp->bytes += merge_bytes(f, g.formats[fi]);
                        if (running && in_running(running, *x))
                                r = action_add_qmp(vp, ACTION_QMP_STREAM, target, *x, isempty(backing) ? NULL : backing, f);
                        else if (isempty(backing))
                                r = action_add_command(vp, "rebase", QEMU_IMG_BINARY, "rebase", "-p", "-f", "qcow2", "-b",
                                                       "", *x, NULL);
                        else
                                r = action_add_command(vp, "rebase", QEMU_IMG_BINARY, "rebase", "-p", "-f", "qcow2", "-F",
                                                       format_name(g.formats[file_graph_find(&g, backing)]), "-b",
                                                       backing, *x, NULL);
                        if (r < 0)
                                return r;
                }
                /* What named F as an overlay (the parent's <source>) names
                 * the overlay that took F's place: O, the one S made. */
                r = rename_add(vp, target, f, o, DISK_FORMAT_QCOW2, false);
                if (r < 0)
                        return r;
                /* Files nothing of ours names may still read F: it stays then. */
                if (internal_count(f, g.formats[fi]) == 0 && file_graph_foreign_overlays(&g, f) == 0 &&
                    strv_extend(&vp->unlink, f) < 0)
                        return -ENOMEM;
        }
        log_debug("Domain '%s': deleting snapshot '%s' merges disk %s %s (%s <- %s).", d->def->name, snapshot_name(s),
                  target, forward ? "forward" : "backward", f, o);
        return 0;
}

static int plan_victim(Domain *d, Snapshot *s, bool metadata_only, VictimPlan *vp, char **ret_message) {
        const DomainDef *cur = domain_current_def(d);
        bool live = domain_is_active(d);
        Action *qmp_action = NULL;
        int r;

        if (metadata_only)
                return 0;
        if (snapshot_memory(s) == SNAPSHOT_LOCATION_EXTERNAL && s->def->memory_file) {
                /* Only a memory state file goes with its snapshot, never a
                 * FIFO or a device node the metadata happens to name. */
                r = image_check_regular(s->def->memory_file, "The memory state file", ret_message);
                if (r < 0)
                        return r;
                if (strv_extend(&vp->unlink, s->def->memory_file) < 0)
                        return -ENOMEM;
        }

        for (size_t i = 0; i < s->def->n_disks; i++) {
                const SnapshotDisk *sd = s->def->disks + i;
                const DomainDisk *disk = domain_def_find_disk(cur, sd->name);
                _cleanup_free_ char *file = NULL;

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
                        return message_set(ret_message, -ESTALE, "Snapshot '%s': no file is known for disk %s.",
                                           snapshot_name(s), sd->name);
                if (live) {
                        if (!disk || !streq(disk->source, file))
                                return message_set(ret_message, -EOPNOTSUPP,
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
                        if (access(file, F_OK) < 0)
                                return message_set(ret_message, -ESTALE, "Snapshot '%s': disk %s's file %s is gone.",
                                                   snapshot_name(s), sd->name, file);
                        r = image_check_regular(file, "The image", ret_message);
                        if (r < 0)
                                return r;
                        r = action_add_command(vp, "snapshot", QEMU_IMG_BINARY, "snapshot", "-d", snapshot_name(s), file,
                                               NULL);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* ---- which snapshots ---- */

/* Leaves first. */
static int collect_victims(Snapshot *s, uint64_t flags, Snapshot ***ret, size_t *ret_n) {
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

static int check_domain(Domain *d, char **ret_message) {
        const DomainDef *cur = domain_current_def(d);

        if (domain_is_busy(d))
                return message_set(ret_message, -EBUSY, "Domain '%s' is busy with another operation; try again after it.",
                                   d->def->name);
        if (d->attaching)
                return message_set(ret_message, -EBUSY, "Domain '%s' is being reconnected; try again.", d->def->name);
        for (size_t i = 0; i < cur->n_disks; i++) {
                Job *j = domain_disk_job(d, cur->disks[i].target);
                if (j)
                        return message_set(ret_message, -EBUSY, "Disk %s of domain '%s' has a %s job (%s) running.",
                                           cur->disks[i].target, d->def->name, job_type_to_string(j->type), j->id);
        }
        if (d->graph_busy)
                return message_set(ret_message, -EBUSY, "Domain '%s' is finishing a block job; try again.", d->def->name);
        return 0;
}

static int check_space(const char *dir, uint64_t bytes, char **ret_message) {
        struct statvfs sv;

        if (!dir || bytes == 0 || statvfs(dir, &sv) < 0)
                return 0;
        if ((uint64_t) sv.f_bavail * sv.f_frsize < bytes)
                return message_set(ret_message, -ENOSPC,
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
                return message_set(ret_message, -EINVAL, "Unknown flag bits 0x%" PRIx64 " (known: 0x%llx).",
                                   (uint64_t) (flags & ~SNAPSHOT_DELETE_ALL), SNAPSHOT_DELETE_ALL);
        if ((flags & SNAPSHOT_DELETE_CHILDREN) && (flags & SNAPSHOT_DELETE_CHILDREN_ONLY))
                return message_set(ret_message, -EINVAL, "CHILDREN and CHILDREN_ONLY exclude each other.");
        r = check_domain(d, ret_message);
        if (r < 0)
                return r;
        r = collect_victims(s, flags, &victims, &n);
        if (r < 0)
                return r;
        /* Each one against the disks as they are now: exact for one
         * snapshot, a good approximation for a subtree (leaves first). */
        for (size_t i = 0; i < n; i++) {
                VictimPlan vp = {};

                r = plan_victim(d, victims[i], flags & SNAPSHOT_DELETE_METADATA_ONLY, &vp, ret_message);
                if (r >= 0) {
                        bytes += vp.bytes;
                        r = check_space(vp.space_dir, bytes, ret_message);
                }
                victim_plan_done(&vp);
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

#define JOURNAL_KIND "snapshot-delete"

/* phase "merging": the data may be anywhere between before and after;
 * "metadata": the metadata are stored, only files are left to remove. */
static int journal_write(Domain *d, const char *snapshot, const char *job_id, const char *phase, const VictimPlan *vp) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *renames = json_object_new_array(), *files = json_object_new_array();

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
        return op_journal_write(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND, o);
}

static void journal_remove(Domain *d) {
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND);
}

/* ---- execution ---- */

typedef struct DeleteOp {
        Domain *domain;
        uint64_t flags;
        char **victims;        /* names, leaves first */
        size_t index;          /* the victim at work */
        VictimPlan plan;
        size_t action;         /* the action at work */
        size_t steps_done, steps_total;
        unsigned step_percent;
        Job *job;              /* the merge's job, once there is one */
        Child *child;
        char *qmp_job_id;
        char **qmp_nodes;
        size_t pending;
        int subscription;
        int error;
        char *message;
        SnapshotDeleteFunc done;
        void *userdata;
        bool replied;
        sd_event_source *defer;
        /* a QEMU block job step */
        sd_event_source *poll;
        char *drop_node;
        bool completing, finalizing, dismissing;
        bool aborted;
} DeleteOp;

static void op_free(DeleteOp *op) {
        strv_free(op->victims);
        victim_plan_done(&op->plan);
        child_free(op->child);
        free(op->qmp_job_id);
        strv_free(op->qmp_nodes);
        free(op->message);
        sd_event_source_disable_unref(op->defer);
        sd_event_source_disable_unref(op->poll);
        free(op->drop_node);
        job_unref(op->job);
        free(op);
}

static void op_reply(DeleteOp *op, int error, const char *message) {
        if (op->replied)
                return;
        op->replied = true;
        if (op->done)
                op->done(op->domain, error, message, error < 0 ? NULL : op->job, op->userdata);
}

static void op_progress(DeleteOp *op) {
        if (!op->job)
                return;
        job_local_update(op->job, JOB_STATE_RUNNING, op->steps_done * 100 + op->step_percent,
                         MAX(op->steps_total, op->steps_done) * 100, NULL);
        domain_local_job_progress(op->domain, op->job);
}

static void op_finish(DeleteOp *op, int error, const char *message) {
        Domain *d = op->domain;

        if (op->subscription > 0 && d->qmp)
                (void) qmp_unsubscribe(d->qmp, op->subscription);
        op->subscription = 0;
        op->poll = sd_event_source_disable_unref(op->poll);
        op->child = child_free(op->child);
        if (error < 0) {
                log_warning("Domain '%s': deleting snapshot '%s' failed: %s", d->def->name,
                            op->index < strv_length(op->victims) ? op->victims[op->index] : "?", strna(message));
                /* The snapshot stays and can be deleted again. */
                journal_remove(d);
        }
        d->snapshot_busy = false;
        if (op->job) {
                op->job->local_abort = NULL;
                job_local_update(op->job, error < 0 ? (op->aborted ? JOB_STATE_CANCELED : JOB_STATE_FAILED) : JOB_STATE_COMPLETED,
                                 error < 0 ? op->job->cur : op->job->end, op->job->end, error < 0 ? strna(message) : NULL);
                domain_local_job_end(d, op->job);
        }
        op_reply(op, error, message);
        manager_busy_unref(d->manager);
        op_free(op);
        domain_unref(d);
}

static void op_next_victim(DeleteOp *op);
static void op_run_action(DeleteOp *op);

/* Every action of the victim succeeded: its metadata go, then its files. */
static void op_victim_done(DeleteOp *op) {
        Domain *d = op->domain;
        _cleanup_free_ char *message = NULL;
        Snapshot *s = snapshot_tree_find(&d->snapshots, op->victims[op->index]);
        int r;

        if (op->plan.n_renames > 0)
                domain_apply_renames(d, op->plan.renames, op->plan.n_renames);
        crash_point("delete:merged");
        if (s) {
                r = snapshot_metadata_commit(d, &s, 1, op->plan.renames, op->plan.n_renames, &message);
                if (r < 0)
                        return op_finish(op, r, message ?: "Cannot store the snapshot metadata.");
        }
        (void) journal_write(d, op->victims[op->index], op->job ? op->job->id : NULL, "metadata", &op->plan);
        crash_point("delete:metadata");
        domain_remove_unreferenced_files(d, op->plan.unlink);
        journal_remove(d);
        log_info("Domain '%s': snapshot '%s' deleted.", d->def->name, op->victims[op->index]);
        victim_plan_done(&op->plan);
        op->index++;
        op_next_victim(op);
}

static void on_command_output(Child *c, const char *chunk, void *userdata) {
        DeleteOp *op = userdata;
        const char *p = chunk, *last = NULL;
        double v;

        /* qemu-img -p: "    (12.34/100%)" */
        while ((p = strchr(p, '(')))
                last = p++;
        if (last && sscanf(last, "(%lf/100%%)", &v) == 1 && v >= 0 && v <= 100) {
                op->step_percent = (unsigned) v;
                op_progress(op);
        }
}

static void on_command_done(Child *c, int status, const char *output, void *userdata) {
        DeleteOp *op = userdata;
        Action *a = op->plan.actions + op->action;

        op->child = child_free(op->child);
        /* A delete interrupted after QEMU removed the tag: nothing to do. */
        if (status != 0 && streq(a->what, "snapshot") && strstr(output, "not found")) {
                log_info("Domain '%s': the internal snapshot was gone from %s already.", op->domain->def->name,
                         a->argv[strv_length(a->argv) - 1]);
                status = 0;
        }
        if (status != 0) {
                _cleanup_free_ char *message = strprintf("qemu-img %s failed (status %d): %s", a->what, status, output);
                return op_finish(op, -EIO, message);
        }
        op->action++;
        op->steps_done++;
        op->step_percent = 0;
        op_progress(op);
        op_run_action(op);
}

/* ---- live internal: a snapshot-delete job ---- */

static void on_qmp_dismissed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;

        if (op->error < 0)
                return op_finish(op, op->error, op->message);
        op->action++;
        op->steps_done++;
        op_run_action(op);
}

static void on_qmp_job_queried(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                               void *userdata) {
        DeleteOp *op = userdata;
        QmpJobInfo info;

        if (error < 0 || qmp_parse_query_jobs(result, op->qmp_job_id, &info) <= 0)
                return op_finish(op, -EIO, "Lost track of the snapshot-delete job.");
        if (!streq(info.status, "concluded"))
                return;
        if (info.error) {
                op->error = -EIO;
                op->message = strprintf("QEMU could not delete the snapshot: %s", info.error);
        }
        if (qmp_cmd_job_dismiss(qmp, op->qmp_job_id, on_qmp_dismissed, op) < 0)
                op_finish(op, -EIO, "Cannot dismiss the snapshot-delete job.");
}

static void on_qmp_job_status(Qmp *qmp, const char *event, json_object *data, uint64_t ts, void *userdata) {
        DeleteOp *op = userdata;
        const char *id, *status;

        if (qmp_parse_job_status_change(data, &id, &status) < 0 || !op->qmp_job_id || !streq(id, op->qmp_job_id) ||
            !streq(status, "concluded"))
                return;
        (void) qmp_unsubscribe(qmp, op->subscription);
        op->subscription = 0;
        if (qmp_cmd_query_jobs(qmp, on_qmp_job_queried, op) < 0)
                op_finish(op, -EIO, "Cannot send query-jobs.");
}

static void on_qmp_delete_started(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                                  void *userdata) {
        DeleteOp *op = userdata;

        if (error < 0) {
                _cleanup_free_ char *message = strprintf("QEMU cannot delete the snapshot: %s", strna(desc));
                op_finish(op, -EIO, message);
        }
}

static void qmp_delete_start(DeleteOp *op) {
        Domain *d = op->domain;
        size_t n = strv_length(op->qmp_nodes);

        free(op->qmp_job_id);
        op->qmp_job_id = strprintf("qsnap-delete-%" PRIx64, now_usec(CLOCK_MONOTONIC));
        if (!op->qmp_job_id)
                return op_finish(op, -ENOMEM, "Out of memory.");
        op->subscription = qmp_subscribe(d->qmp, "JOB_STATUS_CHANGE", on_qmp_job_status, op);
        if (op->subscription < 0 ||
            qmp_cmd_snapshot_delete(d->qmp, op->qmp_job_id, op->victims[op->index], (const char *const *) op->qmp_nodes,
                                    n, on_qmp_delete_started, op) < 0)
                op_finish(op, -EIO, "Cannot send snapshot-delete.");
}

static void on_qmp_root_node(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;
        const char *node;

        if (error < 0 || qmp_parse_string(result, &node) < 0 || isempty(node)) {
                if (op->error == 0) {
                        op->error = -EIO;
                        op->message = strprintf("QEMU shows no block node for a disk: %s", strna(desc));
                }
        } else if (strv_extend(&op->qmp_nodes, node) < 0 && op->error == 0)
                op->error = -ENOMEM;
        if (--op->pending > 0)
                return;
        if (op->error < 0)
                return op_finish(op, op->error, op->message);
        qmp_delete_start(op);
}

static void op_run_qmp_internal(DeleteOp *op, Action *a) {
        Domain *d = op->domain;

        if (!d->qmp)
                return op_finish(op, -ESRCH, "The domain's QEMU went away.");
        op->qmp_nodes = strv_free(op->qmp_nodes);
        for (char **t = a->targets; t && *t; t++) {
                if (qmp_cmd_disk_root_node(d->qmp, *t, on_qmp_root_node, op) < 0)
                        return op_finish(op, -EIO, "Cannot send qom-get.");
                op->pending++;
        }
        if (op->pending == 0)
                op_finish(op, -EIO, "No disk to delete the snapshot from.");
}

/* ---- live external: block-commit / block-stream, one at a time ---- */

#define BLOCK_POLL_USEC (100 * USEC_PER_MSEC)

static void block_step_done(DeleteOp *op) {
        op->poll = sd_event_source_disable_unref(op->poll);
        op->completing = op->finalizing = op->dismissing = false;
        /* A node we added stays open after the job dropped it (notes). */
        if (op->drop_node && op->drop_node[0] != '#' && op->domain->qmp)
                (void) qmp_cmd_blockdev_del(op->domain->qmp, op->drop_node, NULL, NULL);
        op->drop_node = mfree(op->drop_node);
        /* QEMU switched the chain: the cache must read it again. */
        domain_chains_invalidate(op->domain);
        op->action++;
        op->steps_done++;
        op->step_percent = 0;
        op_progress(op);
        op_run_action(op);
}

static void on_block_dismissed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                               void *userdata) {
        DeleteOp *op = userdata;

        if (op->error < 0)
                return op_finish(op, op->error, op->message);
        block_step_done(op);
}

static void on_block_verb(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;

        if (error < 0 && op->error == 0)
                log_debug("Domain '%s': job verb refused: %s", op->domain->def->name, strna(desc));
}

static void on_block_poll(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;
        QmpJobInfo info;
        int r;

        if (error < 0)
                return op_finish(op, -EIO, "QEMU went away during the merge.");
        r = qmp_parse_query_jobs(result, op->job->id, &info);
        if (r <= 0)
                return op_finish(op, -EIO, "The merge job vanished from QEMU.");
        if (info.total > 0) {
                unsigned p = (unsigned) (info.current * 100 / info.total);
                if (p != op->step_percent && p <= 100) {
                        op->step_percent = p;
                        op_progress(op);
                }
        }
        if (streq(info.status, "ready") && !op->completing) {
                op->completing = true;
                crash_point("delete:ready");
                if (qmp_cmd_job_complete(qmp, op->job->id, on_block_verb, op) < 0)
                        return op_finish(op, -EIO, "Cannot send job-complete.");
        } else if (streq(info.status, "pending") && !op->finalizing) {
                op->finalizing = true;
                crash_point("delete:pending");
                if (qmp_cmd_job_finalize(qmp, op->job->id, on_block_verb, op) < 0)
                        return op_finish(op, -EIO, "Cannot send job-finalize.");
        } else if (streq(info.status, "concluded") && !op->dismissing) {
                op->dismissing = true;
                op->poll = sd_event_source_disable_unref(op->poll);
                if (info.error) {
                        op->error = -EIO;
                        op->message = strprintf("QEMU's merge job failed: %s", info.error);
                }
                if (qmp_cmd_job_dismiss(qmp, op->job->id, on_block_dismissed, op) < 0)
                        return op_finish(op, -EIO, "Cannot dismiss the merge job.");
        }
}

static int on_block_poll_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        DeleteOp *op = userdata;

        if (!op->domain->qmp)
                return op_finish(op, -EIO, "QEMU went away during the merge."), 0;
        if (qmp_cmd_query_jobs(op->domain->qmp, on_block_poll, op) < 0)
                return op_finish(op, -EIO, "Cannot send query-jobs."), 0;
        (void) sd_event_source_set_time_relative(s, BLOCK_POLL_USEC);
        return 0;
}

static void on_block_started(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;
        int r;

        if (error < 0) {
                _cleanup_free_ char *message = strprintf("QEMU cannot start the merge: %s", strna(desc));
                return op_finish(op, -EIO, message);
        }
        if (op->aborted)
                (void) qmp_cmd_job_cancel(qmp, op->job->id, NULL, NULL);
        r = sd_event_add_time_relative(op->domain->manager->event, &op->poll, CLOCK_MONOTONIC, BLOCK_POLL_USEC,
                                       10 * USEC_PER_MSEC, on_block_poll_timer, op);
        if (r < 0)
                return op_finish(op, r, "Cannot watch the merge job.");
        (void) sd_event_source_set_enabled(op->poll, SD_EVENT_ON);
}


static void on_block_nodes(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        DeleteOp *op = userdata;
        Action *a = op->plan.actions + op->action;
        const DomainDisk *disk = op->domain->live ? domain_def_find_disk(op->domain->live, a->target) : NULL;
        const char *device = NULL, *top = NULL, *base = NULL, *drop = NULL;
        int64_t k;

        if (error < 0 || !disk)
                return op_finish(op, -EIO, "Cannot list QEMU's block nodes.");
        if (qmp_find_format_node(result, a->kind == ACTION_QMP_STREAM ? a->top_file : disk->source, &device) <= 0 ||
            (a->kind == ACTION_QMP_COMMIT && a->top_file && qmp_find_format_node(result, a->top_file, &top) <= 0) ||
            (a->base_file && qmp_find_format_node(result, a->base_file, &base) <= 0)) {
                _cleanup_free_ char *message = strprintf("QEMU does not run the files of disk %s as expected.", a->target);
                return op_finish(op, -EIO, message);
        }
        if (qmp_find_format_node(result, a->drop_file, &drop) > 0) {
                op->drop_node = strdup(drop);
                if (!op->drop_node)
                        return op_finish(op, -ENOMEM, "Out of memory.");
        }
        log_debug("Domain '%s': %s on disk %s: device %s, top %s, base %s.", op->domain->def->name, a->what, a->target,
                  device, strna(top), strna(base));
        if (a->kind == ACTION_QMP_COMMIT)
                k = qmp_cmd_block_commit(qmp, op->job->id, device, top, base, NULL, test_speed(), on_block_started, op);
        else
                k = qmp_cmd_block_stream(qmp, op->job->id, device, base, NULL, test_speed(), on_block_started, op);
        if (k < 0)
                op_finish(op, -EIO, "Cannot start the merge job.");
}

static void op_run_qmp_block(DeleteOp *op, Action *a) {
        if (!op->domain->qmp || !op->job)
                return op_finish(op, -ESRCH, "The domain's QEMU went away.");
        if (qmp_cmd_query_named_block_nodes(op->domain->qmp, on_block_nodes, op) < 0)
                op_finish(op, -EIO, "Cannot send query-named-block-nodes.");
}

static void op_run_action(DeleteOp *op) {
        Action *a;
        int r;

        if (op->aborted)
                return op_finish(op, -ECANCELED, "The merge was aborted.");
        if (op->action >= op->plan.n_actions)
                return op_victim_done(op);
        a = op->plan.actions + op->action;
        {
                /* Before each step, named after it. crash points: delete:commit delete:rebase
                 * delete:snapshot delete:active-commit delete:stream delete:snapshot-delete */
                _cleanup_free_ char *step = strprintf("delete:%s", a->what);
                crash_point(step ?: "delete:step");
        }
        if (a->kind == ACTION_QMP_INTERNAL)
                return op_run_qmp_internal(op, a);
        if (a->kind == ACTION_QMP_COMMIT || a->kind == ACTION_QMP_STREAM)
                return op_run_qmp_block(op, a);
        {
                _cleanup_free_ char *cmdline = strv_join(a->argv, " ");
                log_debug("Domain '%s': running %s", op->domain->def->name, strna(cmdline));
        }
        r = child_spawn(op->domain->manager->event, a->argv, on_command_output, on_command_done, op, &op->child);
        if (r < 0)
                op_finish(op, r, "Cannot run qemu-img.");
}

/* Abort of the merge job: the step at work stops (qemu-img killed, the
 * QEMU job cancelled); the snapshot stays, deletable again. */
static int op_abort(Job *j, void *data) {
        DeleteOp *op = data;

        if (op->aborted)
                return 0;
        op->aborted = true;
        log_info("Domain '%s': the merge job %s is aborted.", op->domain->def->name, j->id);
        if (op->child) {
                op->child = child_free(op->child);
                op_finish(op, -ECANCELED, "The merge was aborted.");
                return 0;
        }
        if (op->poll && op->domain->qmp && !op->dismissing) {
                (void) qmp_cmd_job_cancel(op->domain->qmp, op->job->id, NULL, NULL);
                return 0;
        }
        /* Between two steps: the next one does not start. */
        return 0;
}

static void op_next_victim(DeleteOp *op) {
        Domain *d = op->domain;
        _cleanup_free_ char *message = NULL;
        Snapshot *s;
        int r;

        if (op->index >= strv_length(op->victims))
                return op_finish(op, 0, NULL);
        s = snapshot_tree_find(&d->snapshots, op->victims[op->index]);
        if (!s) {
                op->index++;
                return op_next_victim(op);
        }
        r = plan_victim(d, s, false, &op->plan, &message);
        if (r < 0)
                return op_finish(op, r, message);
        r = check_space(op->plan.space_dir, op->plan.bytes, &message);
        if (r < 0)
                return op_finish(op, r, message);
        op->action = 0;
        op->steps_total += op->plan.n_actions;
        if (op->plan.merge && !op->job) {
                _cleanup_free_ char *id = NULL;
                const char *disk = NULL;

                for (size_t i = 0; i < s->def->n_disks && !disk; i++)
                        if (s->def->disks[i].snapshot == SNAPSHOT_LOCATION_EXTERNAL)
                                disk = s->def->disks[i].name;
                id = strprintf("snapshot.delete-%s-%" PRIx64, strna(disk), (uint64_t) (now_usec(CLOCK_REALTIME) & 0xffffffffffULL));
                op->job = id ? job_new_local(id, JOB_TYPE_SNAPSHOT_DELETE, disk) : NULL;
                if (!op->job || domain_local_job_add(d, op->job) < 0)
                        return op_finish(op, -ENOMEM, "Out of memory.");
                op->job->local_abort = op_abort;
                op->job->local_abort_data = op;
                op_progress(op);
                log_info("Domain '%s': deleting snapshot '%s' merges data as job %s.", d->def->name, snapshot_name(s),
                         op->job->id);
                op_reply(op, 0, NULL);
        }
        /* Before anything is touched: what a restarted qsnapd needs. */
        if (op->plan.n_actions > 0) {
                r = journal_write(d, snapshot_name(s), op->job ? op->job->id : NULL, "merging", &op->plan);
                if (r < 0)
                        return op_finish(op, r, "Cannot record the delete's intent.");
                crash_point("delete:intent");
        }
        op_run_action(op);
}

static int on_op_start(sd_event_source *s, void *userdata) {
        DeleteOp *op = userdata;
        Domain *d = op->domain;

        op->defer = sd_event_source_disable_unref(op->defer);
        crash_point("delete:start");
        if (op->flags & SNAPSHOT_DELETE_METADATA_ONLY) {
                _cleanup_free_ Snapshot **victims = new0(Snapshot *, strv_length(op->victims) + 1);
                _cleanup_free_ char *message = NULL;
                size_t n = 0;
                int r;

                if (!victims)
                        return op_finish(op, -ENOMEM, "Out of memory."), 0;
                for (char **v = op->victims; *v; v++) {
                        Snapshot *x = snapshot_tree_find(&d->snapshots, *v);
                        if (x)
                                victims[n++] = x;
                }
                r = snapshot_metadata_commit(d, victims, n, NULL, 0, &message);
                if (r >= 0)
                        log_info("Domain '%s': metadata of %zu snapshot(s) deleted; their data stay.", d->def->name, n);
                op_finish(op, r, message);
                return 0;
        }
        op_next_victim(op);
        return 0;
}

int snapshot_delete(Domain *d, Snapshot *s, uint64_t flags, SnapshotDeleteFunc done, void *userdata, char **ret_message) {
        _cleanup_free_ Snapshot **victims = NULL;
        DeleteOp *op;
        size_t n;
        int r;

        r = snapshot_delete_check(s, flags, NULL, ret_message);
        if (r < 0)
                return r;
        r = collect_victims(s, flags, &victims, &n);
        if (r < 0)
                return r;
        op = new0(DeleteOp, 1);
        if (!op)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (strv_extend(&op->victims, snapshot_name(victims[i])) < 0) {
                        op_free(op);
                        return -ENOMEM;
                }
        if (!op->victims && !(op->victims = new0(char *, 1))) {
                op_free(op);
                return -ENOMEM;
        }
        r = sd_event_add_defer(d->manager->event, &op->defer, on_op_start, op);
        if (r < 0) {
                op_free(op);
                return r;
        }
        op->domain = domain_ref(d);
        op->flags = flags;
        op->done = done;
        op->userdata = userdata;
        d->snapshot_busy = true;
        manager_busy_ref(d->manager);
        return 0;
}

/* ---- start-up: an interrupted delete ---- */

#define RECOVERY_RETRY_USEC (200 * USEC_PER_MSEC)
#define RECOVERY_MAX_TRIES 3000

typedef struct DeleteRecovery {
        Domain *domain;
        sd_event_source *timer;
        unsigned tries;
} DeleteRecovery;

static void recovery_free(DeleteRecovery *rc) {
        Domain *d = rc->domain;

        sd_event_source_disable_unref(rc->timer);
        manager_busy_unref(d->manager);
        free(rc);
        domain_unref(d);
}

/* Whether a file of disk `target` is based on `file`, or it is active. */
static bool file_still_used(Domain *d, const char *target, const char *file) {
        _cleanup_(file_graph_done) FileGraph g = {};
        const DomainDef *defs[2] = { domain_current_def(d), d->def };

        for (size_t k = 0; k < 2; k++) {
                const DomainDisk *disk = domain_def_find_disk(defs[k], target);
                if (disk && streq(disk->source, file))
                        return true;
        }
        if (file_graph_build(d, target, &g) < 0)
                return true;
        for (size_t i = 0; i < g.n; i++)
                if (streq(g.backings[i], file))
                        return true;
        return false;
}

/* 1: handled (finished, rolled back or restarted), 0: try again later. */
static int recovery_step(DeleteRecovery *rc) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        _cleanup_free_ char *message = NULL;
        _cleanup_strv_free_ char **files = NULL;
        Domain *d = rc->domain;
        VictimPlan vp = {};
        json_object *renames = NULL, *unl = NULL;
        const char *name, *job_id, *phase;
        bool done = true;
        Snapshot *s;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND, &o);
        if (r == 0 || (r < 0 && r != -EBADMSG))
                return 1;
        name = o ? json_get_string(o, "snapshot") : NULL;
        if (!name) {
                /* Not JSON (logged) or not a delete journal. */
                if (o)
                        log_error("Domain '%s': unreadable delete journal, removing it.", d->def->name);
                journal_remove(d);
                return 1;
        }
        job_id = json_get_string(o, "job");
        phase = json_get_string(o, "phase");

        /* The merge job of the interrupted qsnapd may still run in QEMU
         * (adopted): let it end; an active commit waiting for its pivot
         * gets it, since the delete wanted it. */
        if (job_id && d->jobs) {
                Job *j = job_tracker_find(d->jobs, job_id);
                if (j && !job_state_is_final(j->state)) {
                        if (j->state == JOB_STATE_READY && !j->pivoting) {
                                log_notice("Domain '%s': pivoting merge job %s of an interrupted delete.", d->def->name,
                                           job_id);
                                (void) job_pivot(j, NULL, NULL, &message);
                        }
                        return 0;
                }
        }
        if (domain_is_busy(d) || d->attaching || d->graph_busy)
                return 0;

        if (json_object_object_get_ex(o, "unlink", &unl) && json_object_is_type(unl, json_type_array))
                for (size_t i = 0; i < json_object_array_length(unl); i++) {
                        const char *f = json_object_get_string(json_object_array_get_idx(unl, i));
                        if (f && strv_extend(&files, f) < 0)
                                return log_oom(), 1;
                }
        s = snapshot_tree_find(&d->snapshots, name);
        if (streq_ptr(phase, "metadata") || !s) {
                domain_remove_unreferenced_files(d, files);
                journal_remove(d);
                log_notice("Domain '%s': finished the interrupted delete of snapshot '%s' (its metadata were stored).",
                           d->def->name, name);
                return 1;
        }

        /* Did the merge of every disk complete? */
        if (json_object_object_get_ex(o, "renames", &renames) && json_object_is_type(renames, json_type_array))
                for (size_t i = 0; i < json_object_array_length(renames); i++) {
                        json_object *e = json_object_array_get_idx(renames, i), *fw = NULL;
                        const char *target = json_get_string(e, "target"), *from = json_get_string(e, "from"), *to = json_get_string(e, "to");
                        bool forward = json_object_object_get_ex(e, "forward", &fw) && json_object_get_boolean(fw);

                        if (!target || !from || !to) {
                                done = false;
                                continue;
                        }
                        /* forward: O (from) left every chain; backward: F (from) did. */
                        if (file_still_used(d, target, from))
                                done = false;
                        else if (rename_add(&vp, target, from, to, DISK_FORMAT_QCOW2, forward) < 0) {
                                victim_plan_done(&vp);
                                return log_oom(), 1;
                        }
                }
        if (done && vp.n_renames > 0) {
                for (size_t i = 0; i < vp.n_renames; i++) {
                        ImageChain c = {};
                        /* The file that takes over keeps its own format. */
                        if (image_read_chain(vp.renames[i].to, DISK_FORMAT_QCOW2, &c) >= 0 && c.n_layers > 0)
                                vp.renames[i].to_format = c.layers[0].format;
                        image_chain_done(&c);
                }
                domain_apply_renames(d, vp.renames, vp.n_renames);
                r = snapshot_metadata_commit(d, &s, 1, vp.renames, vp.n_renames, &message);
                victim_plan_done(&vp);
                if (r < 0) {
                        log_error("Domain '%s': cannot finish the interrupted delete of snapshot '%s': %s", d->def->name,
                                  name, strna(message));
                        return 0;
                }
                domain_remove_unreferenced_files(d, files);
                journal_remove(d);
                log_notice("Domain '%s': finished the interrupted delete of snapshot '%s' (the merge had completed).",
                           d->def->name, name);
                return 1;
        }
        victim_plan_done(&vp);

        /* Not merged (or not everywhere): every step is safe to repeat, so
         * the delete runs again from where the files are now. */
        journal_remove(d);
        r = snapshot_delete(d, s, 0, NULL, NULL, &message);
        if (r < 0)
                log_notice("Domain '%s': rolled back the interrupted delete of snapshot '%s'; it stays and can be "
                           "deleted again (%s).", d->def->name, name, strna(message));
        else
                log_notice("Domain '%s': finishing the interrupted delete of snapshot '%s' by merging again.",
                           d->def->name, name);
        return 1;
}

static int on_recovery_timer(sd_event_source *es, uint64_t usec, void *userdata) {
        DeleteRecovery *rc = userdata;

        if (recovery_step(rc) > 0 || ++rc->tries >= RECOVERY_MAX_TRIES) {
                if (rc->tries >= RECOVERY_MAX_TRIES)
                        log_error("Domain '%s': gave up waiting to recover an interrupted delete.", rc->domain->def->name);
                recovery_free(rc);
                return 0;
        }
        (void) sd_event_source_set_time_relative(es, RECOVERY_RETRY_USEC);
        return 0;
}

static int snapshot_delete_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        DeleteRecovery *rc;
        int r;

        if (!op_journal_exists(d->manager->config.state_dir, d->def->uuid, JOURNAL_KIND))
                return 0;
        rc = new0(DeleteRecovery, 1);
        if (!rc)
                return -ENOMEM;
        r = sd_event_add_time_relative(d->manager->event, &rc->timer, CLOCK_MONOTONIC, 0, 10 * USEC_PER_MSEC,
                                       on_recovery_timer, rc);
        if (r < 0) {
                free(rc);
                return r;
        }
        (void) sd_event_source_set_enabled(rc->timer, SD_EVENT_ON);
        rc->domain = domain_ref(d);
        manager_busy_ref(d->manager);
        log_notice("Domain '%s': a snapshot delete was interrupted; checking how far it got.", d->def->name);
        return 1;
}

const OperationKind snapshot_delete_kind = {
        .name = JOURNAL_KIND,
        .recover = snapshot_delete_recover,
        .deferred = true,
};
