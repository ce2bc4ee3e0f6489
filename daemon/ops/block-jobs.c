/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Starting block jobs: BlockPull, BlockRebase (a partial pull, or with
 * COPY a mirror), BlockCommit and BlockCopy. Every check comes first (the
 * disk, its chain, base/top in libvirt's notations, the destination
 * through the path gate), then the job goes to QEMU with an id that names
 * its type and disk ("commit-vda-1a2b3c"), so that its object path and
 * what it is survive a restart of qsnapd (adoption reads them back). A
 * copy's destination and node are journaled before the mirror starts. A
 * start that QEMU refuses leaves nothing behind. From QEMU's yes on, the
 * domain's job glue (core/domain-jobs.c) has the job.
 */
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/disk.h"
#include "core/bitmaps.h"
#include "core/domain-jobs.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/operation.h"
#include "core/qemu-files.h"
#include "ops/block-jobs.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/util.h"

/* The plan of a job start; its Operation (core/operation.h) does the
 * rest: the one reply, undoing a start QEMU refused. */
typedef struct StartCall {
        Operation *op;
        char *id;
        JobType type;
        char *disk;
        uint64_t bandwidth;
        BlockJobInfo *info;
        BlockJobStartedFunc done;
        void *userdata;
        Job *job;                   /* QEMU took it */
        /* what to send, once the node names are known */
        char *base_file, *top_file; /* NULL: bottom / active */
        char *backing_name;         /* RELATIVE: the name to write into the header */
        /* copies: the target's format, the file its top stands on (shallow) */
        DiskFormat copy_format;
        bool copy_shallow, copy_write_blocking;
        QmpCache copy_cache; /* the destination's nodes: the disk's mode, or O_DIRECT where it can when the disk has none */
        /* the checkpoints' bitmaps (docs/checkpoints.md §2.6, §2.8): a
         * commit's merge into the base, sent once the job runs; a copy's
         * target bitmaps, armed for READY */
        BitmapActions bitmaps;
} StartCall;

static void start_call_free(void *p) {
        StartCall *c = p;

        free(c->id);
        free(c->disk);
        free(c->base_file);
        free(c->top_file);
        free(c->backing_name);
        bitmap_actions_done(&c->bitmaps);
        block_job_info_free(c->info);
        free(c);
}

static void start_call_reply(Operation *o, int error, const char *message) {
        StartCall *c = o->plan;

        c->done(o->domain, error, message, error < 0 ? NULL : c->job, c->userdata);
}

#define START_CALL_KIND(n, crash) \
        { .name = n, .crash_name = crash, .free_plan = start_call_free, .reply = start_call_reply }
static const OperationKind block_pull_kind = START_CALL_KIND("block-pull", NULL);
static const OperationKind block_commit_kind = START_CALL_KIND("block-commit", NULL);
static const OperationKind block_copy_kind = START_CALL_KIND("block-copy", "block-copy");

static const OperationKind *start_call_kind(JobType type) {
        return type == JOB_TYPE_COPY ? &block_copy_kind : type == JOB_TYPE_PULL ? &block_pull_kind : &block_commit_kind;
}

/* A copy that did not start leaves nothing behind: no node, no file of
 * ours, no journal. Undone in reverse, before the caller hears of it. */
static int undo_copy_journal(Operation *o, void *data) {
        StartCall *c = o->plan;

        domain_job_journal_remove(o->domain, c->id);
        return 0;
}

static int undo_copy_dest(Operation *o, void *data) {
        StartCall *c = o->plan;

        (void) fs_unlink_nofollow(c->info->copy_dest, S_IFREG);
        return 0;
}

static int undo_copy_target(Operation *o, void *data) {
        StartCall *c = o->plan;

        domain_node_del(o->domain, c->info->copy_node);
        return 0;
}

static void on_bitmaps_sent(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                            void *userdata) {
        if (error < 0)
                log_warning("A block job's bitmap merge failed; checkpoints on that disk may miss changes: %s",
                            strna(desc));
}

/* A reused destination that has a bitmap of a name the copy gives its
 * target: QEMU's add at READY would fail, and after a pivot that stale
 * bitmap would pass for the checkpoint. Its name, or NULL. */
static const char *copy_dest_name_taken(StartCall *c) {
        _cleanup_free_ char *why = NULL;
        _cleanup_close_ int fd = -EBADF;
        ImageBitmap *b = NULL;
        size_t n = 0;
        const char *taken = NULL;

        /* The destination as the gate opens it (the caller named it). */
        if (c->info->copy_created ||
            gate_open_image(c->op->domain, c->info->copy_dest, "The destination", &fd, &why) < 0 ||
            image_read_bitmaps_fd(fd, c->info->copy_dest, &b, &n, NULL) < 0)
                return NULL;
        for (size_t k = 0; k < c->bitmaps.n && !taken; k++)
                for (size_t i = 0; i < n && !taken; i++)
                        if (c->bitmaps.actions[k].type == QMP_BITMAP_ADD && streq(c->bitmaps.actions[k].name, b[i].name))
                                taken = c->bitmaps.actions[k].name;
        image_bitmaps_free(b, n);
        return taken;
}

/* Which bitmaps follow this job, from the graph it was planned on. */
static int plan_bitmaps(StartCall *c, json_object *nodes, const char *device) {
        _cleanup_(bitmap_inventory_freep) BitmapInventory *inv = NULL;
        Domain *d = c->op->domain;
        const BitmapDisk *bd;
        size_t top = 0, base;
        int r;

        if (d->checkpoints.n == 0)
                return 0;
        r = bitmap_inventory_from_nodes(d, nodes, &inv);
        if (r < 0)
                return r;
        bd = bitmap_inventory_disk(inv, c->disk);
        if (!bd || bd->n_layers == 0)
                return 0;
        base = c->type == JOB_TYPE_PULL ? bd->n_layers : bd->n_layers - 1;
        for (size_t j = 0; j < bd->n_layers; j++) {
                if (c->base_file && streq(bd->layers[j].path, c->base_file))
                        base = j;
                if (c->top_file && streq(bd->layers[j].path, c->top_file))
                        top = j;
        }
        switch (c->type) {
        case JOB_TYPE_PULL:
                r = bitmap_actions_stream(bd, 0, base, &c->bitmaps);
                if (r >= 0 && c->bitmaps.n > 0 &&
                    qmp_cmd_transaction_bitmaps(d->qmp, c->bitmaps.actions, c->bitmaps.n, on_bitmaps_sent, NULL) < 0)
                        r = -QSNAP_E_QEMU_FAILED;
                bitmap_actions_done(&c->bitmaps);
                return r;
        case JOB_TYPE_COMMIT:
        case JOB_TYPE_ACTIVE_COMMIT:
                return bitmap_actions_commit(bd, top, base, &c->bitmaps);
        case JOB_TYPE_COPY:
                /* Journaled before the mirror starts: a restarted qsnapd gives
                 * the target its bitmaps all the same. */
                r = bitmap_actions_copy(bd, c->base_file != NULL, c->info->copy_node, &c->bitmaps);
                if (r >= 0 && c->bitmaps.n > 0 && copy_dest_name_taken(c))
                        return -EEXIST;
                if (r >= 0 && c->bitmaps.n > 0)
                        r = bitmaps_copy_journal_write(d, c->id, &c->bitmaps);
                return r;
        case JOB_TYPE_BACKUP:
        case JOB_TYPE_SNAPSHOT_DELETE:
        case JOB_TYPE_SNAPSHOT_REVERT:
        case JOB_TYPE_SNAPSHOT_CREATE:
        case _JOB_TYPE_MAX:
        case _JOB_TYPE_INVALID:
                break;
        }
        return 0;
}

static void on_job_started(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        StartCall *c = userdata;
        Domain *d = c->op->domain;
        Job *j = NULL;
        int r;

        if (error < 0)
                return operation_finishf(c->op, -QSNAP_E_QEMU_FAILED, "QEMU refused the job: %s", strna(desc));
        /* QEMU runs the copy: before anything else its journal says so, so
         * that no restarted qsnapd takes it for one that never started and
         * removes a destination that may be the only copy of the data. */
        if (c->type == JOB_TYPE_COPY) {
                /* crash points: block-copy:accepted */
                operation_crash_point(c->op, "accepted");
                r = domain_job_journal_mark_started(d, c->id, c->info);
                if (r < 0)
                        log_warning_errno(r, "Domain '%s': cannot mark copy job %s started in its journal (an "
                                          "adopting qsnapd marks it): %m", d->def->name, c->id);
        }
        r = d->jobs ? job_tracker_add(d->jobs, c->id, c->type, c->disk, c->bandwidth, &j) : -ENOTCONN;
        if (r < 0)
                return operation_finish(c->op, r, "Cannot track the job.");
        /* QEMU runs it: from here on it is the domain's job glue's. */
        operation_undo_clear(c->op);
        j->userdata = TAKE_PTR(c->info);
        if (c->type == JOB_TYPE_ACTIVE_COMMIT)
                r = domain_job_journal_write_commit(d, c->id, j->userdata);
        else if (c->type != JOB_TYPE_COPY)
                r = domain_job_journal_write_plain(d, c->id);
        if (c->type != JOB_TYPE_COPY && r < 0)
                log_warning_errno(r, "Domain '%s': cannot write the journal of job %s (if QEMU and qsnapd both die "
                                  "now, its end goes unreported): %m", d->def->name, c->id);
        log_info("Domain '%s': started %s job %s on %s.", d->def->name, job_type_to_string(c->type), c->id, c->disk);
        manager_notify_job(d->manager, d, j, JOB_EVENT_ADDED);
        c->job = j;
        if (c->bitmaps.n > 0 && c->type == JOB_TYPE_COPY)
                (void) bitmaps_copy_arm(d, c->id, &c->bitmaps);
        else if (c->bitmaps.n > 0 && qmp_cmd_transaction_bitmaps(qmp, c->bitmaps.actions, c->bitmaps.n,
                                                                  on_bitmaps_sent, NULL) < 0)
                log_warning("Domain '%s': cannot send the bitmap merge of job %s.", d->def->name, c->id);
        operation_finish(c->op, 0, NULL);
}

typedef struct CopyStart {
        StartCall *call;
        char *device;
} CopyStart;

static void on_copy_target_added(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                                 void *userdata) {
        CopyStart *cs = userdata;
        _cleanup_free_ char *device = cs->device;
        StartCall *c = cs->call;
        int64_t id;

        free(cs);
        if (error < 0) {
                domain_files_forget(c->op->domain, c->info->copy_node);
                return operation_finishf(c->op, -QSNAP_E_QEMU_FAILED, "QEMU cannot open the destination %s: %s", c->info->copy_dest,
                                         strna(desc));
        }
        if (operation_undo_push(c->op, undo_copy_target, NULL) < 0)
                return operation_finish(c->op, -ENOMEM, "Out of memory.");
        /* "full" copies the whole chain; "top" only what the top holds, the
         * target standing on the same backing node. */
        id = qmp_cmd_blockdev_mirror_copy(qmp, c->id, device, c->info->copy_node, c->base_file ? "top" : "full",
                                          c->bandwidth, c->copy_write_blocking, 0, on_job_started, c);
        if (id < 0)
                operation_finish(c->op, (int) id, "Cannot send the job to QEMU.");
}

static void on_nodes_for_job(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        StartCall *c = userdata;
        const char *device = NULL, *base = NULL, *top = NULL;
        Domain *d = c->op->domain;
        const DomainDisk *disk = domain_def_find_disk(domain_current_def(d), c->disk);
        /* QEMU knows files as /dev/fdset/N: the header gets the real name,
         * the one RELATIVE asked for or the base's (an active commit
         * rewrites no header). */
        const char *backing_name = c->backing_name ?: c->base_file;
        int64_t id;
        int planned;

        if (error < 0 || !disk || domain_find_format_node(d, result, disk->source, &device) <= 0 ||
            (c->base_file && domain_find_format_node(d, result, c->base_file, &base) <= 0) ||
            (c->top_file && domain_find_format_node(d, result, c->top_file, &top) <= 0))
                return operation_finish(c->op, -QSNAP_E_QEMU_FAILED,
                                        "QEMU's block graph does not show the disk's chain as qsnapd knows it.");
        /* A pull's merge goes out now, ahead of block-stream (QMP keeps the order). */
        planned = plan_bitmaps(c, result, device);
        if (planned == -EEXIST)
                return operation_finishf(c->op, -QSNAP_E_ALREADY_EXISTS,
                                         "The destination %s has a bitmap '%s', the name of a checkpoint of disk %s "
                                         "that the copy gives it: remove it (qemu-img bitmap --remove) or copy into "
                                         "another file.", c->info->copy_dest, copy_dest_name_taken(c), c->disk);
        if (planned < 0)
                return operation_finish(c->op, -QSNAP_E_QEMU_FAILED, "Cannot plan the checkpoints' bitmaps.");

        if (c->type == JOB_TYPE_COPY) {
                _cleanup_free_ char *filename = NULL, *message = NULL;
                CopyStart *cs = new0(CopyStart, 1);
                int r;

                if (!cs || !(cs->device = strdup(device))) {
                        free(cs);
                        return operation_finish(c->op, -ENOMEM, "Out of memory.");
                }
                cs->call = c;
                r = domain_files_pass(d, c->info->copy_node, c->info->copy_dest, false, &filename, &message);
                if (r < 0) {
                        free(cs->device);
                        free(cs);
                        return operation_finish(c->op, r == -ENOMEM ? r : -QSNAP_E_QEMU_FAILED, message);
                }
                id = qmp_cmd_blockdev_add_copy_target(qmp, c->info->copy_node, disk_format_to_string(c->copy_format),
                                                      filename, base, &c->copy_cache, false, on_copy_target_added, cs);
                if (id < 0) {
                        domain_files_forget(d, c->info->copy_node);
                        free(cs->device);
                        free(cs);
                }
        } else if (c->type == JOB_TYPE_PULL)
                id = qmp_cmd_block_stream(qmp, c->id, device, base, base ? backing_name : NULL, c->bandwidth,
                                          on_job_started, c);
        else
                id = qmp_cmd_block_commit(qmp, c->id, device, top, base, top ? backing_name : NULL, c->bandwidth,
                                          on_job_started, c);
        if (id < 0)
                operation_finish(c->op, (int) id, "Cannot send the job to QEMU.");
}

/* The disk, its chain, and the common refusals. */
static int job_prepare(Domain *d, const char *disk_name, const DomainDisk **ret_disk, const ImageChain **ret_chain,
                       char **ret_message) {
        const DomainDef *def = domain_current_def(d);
        const DomainDisk *disk = domain_lookup_disk(d, disk_name);
        const ImageChain *chain;

        if (!disk) {
                *ret_message = strprintf("Domain '%s' has no disk '%s'.", def->name, disk_name);
                return -QSNAP_E_NO_SUCH_DISK;
        }
        if (!domain_is_active(d) || !d->qmp || !d->jobs) {
                *ret_message = strprintf("Domain '%s' is not running; block jobs need its QEMU.", def->name);
                return -QSNAP_E_NOT_RUNNING;
        }
        /* While a job of this domain is being finalized, block-graph queries
         * can crash QEMU 7.2 (a new job needs one): wait for it. */
        if (d->graph_busy) {
                *ret_message = strprintf("A block job of domain '%s' is finishing; try again in a moment.", def->name);
                return -QSNAP_E_BUSY;
        }
        if (d->snapshot_busy || domain_disk_job(d, disk->target)) {
                *ret_message = strprintf("Disk %s of domain '%s' is busy with another job or operation.", disk->target,
                                         def->name);
                return -QSNAP_E_BUSY;
        }
        if (disk->transient) {
                *ret_message = strprintf("Disk %s is transient; its chain is qsnapd's own.", disk->target);
                return -QSNAP_E_UNSUPPORTED;
        }
        chain = domain_disk_chain(d, disk->source, disk->format);
        if (!chain) {
                *ret_message = strprintf("Cannot read the backing chain of %s.", disk->source);
                return -QSNAP_E_QEMU_FAILED;
        }
        *ret_disk = disk;
        *ret_chain = chain;
        return 0;
}

/* A file of the chain: its index, or -QSNAP_E_INVALID_ARGUMENT. "" is for the caller. */
static int chain_index(const ImageChain *chain, const char *file) {
        char a[PATH_MAX], b[PATH_MAX];

        for (size_t i = 0; i < chain->n_layers; i++)
                if (streq(chain->layers[i].path, file) ||
                    (realpath(chain->layers[i].path, a) && realpath(file, b) && streq(a, b)))
                        return (int) i;
        return -QSNAP_E_INVALID_ARGUMENT;
}

/* base/top as the caller named it: a file of the chain, or libvirt's
 * "vda[N]" (N as GetXMLDesc numbers the chain: 0 the active image, N the
 * <backingStore index='N'>). Its index, or -QSNAP_E_INVALID_ARGUMENT with *ret_message. */
static int chain_lookup(const DomainDisk *disk, const ImageChain *chain, const char *name, const char *what,
                        char **ret_message) {
        const char *open = strchr(name, '[');
        int i;

        if (open && name[strlen(name) - 1] == ']') {
                _cleanup_free_ char *target = strndup(name, (size_t) (open - name));
                unsigned long n;
                char *end;

                if (!target)
                        return -ENOMEM;
                errno = 0;
                n = strtoul(open + 1, &end, 10);
                if (streq(target, disk->target) && end != open + 1 && *end == ']' && end[1] == 0 && errno == 0 &&
                    open[1] >= '0' && open[1] <= '9') {
                        if (n < chain->n_layers)
                                return (int) n;
                        *ret_message = strprintf("%s '%s': disk %s has %zu images, %s[0] (the active one) to %s[%zu].",
                                                 what, name, disk->target, chain->n_layers, disk->target, disk->target,
                                                 chain->n_layers - 1);
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
                if (!streq(target, disk->target) && target[0] != '/') {
                        *ret_message = strprintf("%s '%s' names another disk than %s.", what, name, disk->target);
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
        }
        i = chain_index(chain, name);
        if (i < 0)
                *ret_message = strprintf("%s '%s' is not a file of the chain of disk %s (nor %s[N]).", what, name,
                                         disk->target, disk->target);
        return i;
}

/* RELATIVE: the name of chain layer `to` as seen from layer `from` (above
 * it), composed from the relative names the headers in between hold, the
 * way libvirt does; -QSNAP_E_INVALID_ARGUMENT when one of them is absolute. */
static int relative_backing_name(Domain *d, const ImageChain *chain, int from, int to, char **ret,
                                 char **ret_message) {
        _cleanup_free_ char *path = strdup("");

        if (!path)
                return -ENOMEM;
        for (int i = from; i < to; i++) {
                _cleanup_free_ char *name = NULL, *why = NULL;
                _cleanup_close_ int fd = -EBADF;
                DiskFormat format;
                const char *slash;
                char *next;
                int r;

                /* The header of the file the path gate opens. */
                r = gate_open_image(d, chain->layers[i].path, "The image", &fd, &why);
                if (r >= 0)
                        r = image_read_backing_fd(fd, &name, &format);
                if (r < 0 || !name) {
                        *ret_message = strprintf("Cannot read the backing file name of %s%s%s", chain->layers[i].path,
                                                 why ? ": " : ".", strempty(why));
                        return r == -ENOMEM ? r : -QSNAP_E_QEMU_FAILED;
                }
                if (name[0] == '/') {
                        *ret_message = strprintf("RELATIVE: %s names its backing file by the absolute path %s, so "
                                                 "there is no relative name to keep.", chain->layers[i].path, name);
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
                slash = strrchr(path, '/');
                next = strprintf("%.*s%s", slash ? (int) (slash - path + 1) : 0, path, name);
                if (!next)
                        return -ENOMEM;
                free(path);
                path = next;
        }
        *ret = TAKE_PTR(path);
        return 0;
}

/* The plan and its operation; NULL when out of memory. */
static StartCall *start_call_new(Domain *d, JobType type, const DomainDisk *disk, const ImageChain *chain,
                                 const char *base_file, const char *top_file, uint64_t bandwidth, BlockJobStartedFunc done,
                                 void *userdata) {
        StartCall *c = new0(StartCall, 1);
        uint64_t seq;

        if (!c)
                return NULL;
        *c = (StartCall) { .type = type, .bandwidth = bandwidth, .done = done, .userdata = userdata };
        if (operation_new(d, start_call_kind(type), c, &c->op) < 0)
                return NULL;
        seq = ++d->node_seq & 0xffffffffffULL;
        /* '-' separates the parts, so "active-commit" is spelled "active.commit". */
        c->id = strprintf("%s-%s-%" PRIx64, type == JOB_TYPE_ACTIVE_COMMIT ? "active.commit" : job_type_to_string(type),
                          disk->target, seq);
        c->disk = strdup(disk->target);
        c->base_file = base_file ? strdup(base_file) : NULL;
        c->top_file = top_file ? strdup(top_file) : NULL;
        c->info = new0(BlockJobInfo, 1);
        if (!c->id || !c->disk || (base_file && !c->base_file) || (top_file && !c->top_file) || !c->info)
                goto fail;
        c->info->domain = d;
        if (type == JOB_TYPE_COPY && !(c->info->copy_node = strprintf("copy-%" PRIx64, seq)))
                goto fail;
        for (size_t i = 0; i < chain->n_layers; i++)
                if (strv_extend(&c->info->old_chain, chain->layers[i].path) < 0)
                        goto fail;
        return c;
fail:
        operation_cancel(c->op);
        return NULL;
}

/* The graph first: the job's nodes are named from it. */
static int start_call_send(StartCall *c) {
        Operation *o = c->op;

        if (qmp_cmd_query_named_block_nodes(o->domain->qmp, on_nodes_for_job, c) < 0) {
                operation_cancel(o);
                return -QSNAP_E_QEMU_FAILED;
        }
        operation_started(o);
        return 0;
}

static int job_begin(Domain *d, JobType type, const DomainDisk *disk, const ImageChain *chain, const char *base_file,
                     const char *top_file, const char *backing_name, uint64_t bandwidth, bool delete_files,
                     BlockJobStartedFunc done, void *userdata) {
        StartCall *c = start_call_new(d, type, disk, chain, base_file, top_file, bandwidth, done, userdata);

        if (!c)
                return -ENOMEM;
        c->info->delete_files = delete_files;
        /* An active commit's journal names its base: the disk after the pivot. */
        for (size_t i = 0; type == JOB_TYPE_ACTIVE_COMMIT && i < chain->n_layers && !c->info->commit_base; i++)
                if (streq(chain->layers[i].path, base_file)) {
                        c->info->commit_base_format = chain->layers[i].format;
                        c->info->commit_base = strdup(base_file);
                        if (!c->info->commit_base) {
                                operation_cancel(c->op);
                                return -ENOMEM;
                        }
                }
        if (backing_name && !(c->backing_name = strdup(backing_name))) {
                operation_cancel(c->op);
                return -ENOMEM;
        }
        return start_call_send(c);
}

int block_job_rebase(Domain *d, const char *disk_name, const char *base, uint64_t bandwidth, uint64_t flags,
                     BlockJobStartedFunc done, void *userdata, char **ret_message) {
        _cleanup_free_ char *relative = NULL;
        const DomainDisk *disk;
        const ImageChain *chain;
        int r, b;

        if (flags & BLOCK_REBASE_COPY) {
                uint64_t copy_flags = 0;

                if (flags & BLOCK_REBASE_RELATIVE) {
                        *ret_message = strdup("RELATIVE does not go with COPY: the copy's backing file is named as the "
                                              "disk's is.");
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
                if (isempty(base)) {
                        *ret_message = strdup("BlockRebase with COPY needs the destination file as base.");
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
                if (flags & BLOCK_REBASE_SHALLOW)
                        copy_flags |= BLOCK_COPY_SHALLOW;
                if (flags & BLOCK_REBASE_REUSE_EXT)
                        copy_flags |= BLOCK_COPY_REUSE_EXT;
                return block_job_copy(d, disk_name, base,
                                      (flags & BLOCK_REBASE_COPY_RAW) ? DISK_FORMAT_RAW : _DISK_FORMAT_INVALID,
                                         bandwidth, copy_flags, done, userdata, ret_message);
        }
        if (flags & (BLOCK_REBASE_SHALLOW | BLOCK_REBASE_REUSE_EXT | BLOCK_REBASE_COPY_RAW)) {
                *ret_message = strdup("SHALLOW, REUSE_EXT and COPY_RAW go only with COPY.");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if ((flags & BLOCK_REBASE_RELATIVE) && isempty(base)) {
                *ret_message = strdup("RELATIVE needs a base: a full pull leaves no backing file to name.");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        r = job_prepare(d, disk_name, &disk, &chain, ret_message);
        if (r < 0)
                return r;
        if (chain->n_layers < 2) {
                *ret_message = strprintf("Disk %s has no backing file to pull from.", disk->target);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (isempty(base))
                return job_begin(d, JOB_TYPE_PULL, disk, chain, NULL, NULL, NULL, bandwidth, false, done, userdata);
        /* A partial pull: what lies above base comes into the active file. */
        b = chain_lookup(disk, chain, base, "Base", ret_message);
        if (b < 0)
                return b;
        if (b < 1) {
                *ret_message = strprintf("Base '%s' is the active image of disk %s, not one of its backing files.", base,
                                         disk->target);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (flags & BLOCK_REBASE_RELATIVE) {
                r = relative_backing_name(d, chain, 0, b, &relative, ret_message);
                if (r < 0)
                        return r;
        }
        return job_begin(d, JOB_TYPE_PULL, disk, chain, chain->layers[b].path, NULL, relative, bandwidth, false, done,
                         userdata);
}

int block_job_pull(Domain *d, const char *disk_name, uint64_t bandwidth, uint64_t flags, BlockJobStartedFunc done,
                   void *userdata, char **ret_message) {
        return block_job_rebase(d, disk_name, NULL, bandwidth, 0, done, userdata, ret_message);
}

int block_job_commit(Domain *d, const char *disk_name, const char *base, const char *top, uint64_t bandwidth,
                     uint64_t flags, BlockJobStartedFunc done, void *userdata, char **ret_message) {
        _cleanup_free_ char *relative = NULL;
        const DomainDisk *disk;
        const ImageChain *chain;
        int r, t, b;

        r = job_prepare(d, disk_name, &disk, &chain, ret_message);
        if (r < 0)
                return r;
        t = isempty(top) ? 0 : chain_lookup(disk, chain, top, "Top", ret_message);
        if (t < 0)
                return t;
        if (t == 0 && !(flags & BLOCK_COMMIT_ACTIVE)) {
                *ret_message = strprintf("Committing the active layer of disk %s needs the ACTIVE flag (4).", disk->target);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (isempty(base))
                b = (flags & BLOCK_COMMIT_SHALLOW) ? t + 1 : (int) chain->n_layers - 1;
        else {
                b = chain_lookup(disk, chain, base, "Base", ret_message);
                if (b < 0)
                        return b;
        }
        if (isempty(base) && t + 1 >= (int) chain->n_layers) {
                *ret_message = strprintf("Disk %s has no backing file below %s: there is nothing to commit%s.",
                                         disk->target, isempty(top) ? "its active layer" : top,
                                         isempty(top) ? " (take a disk-only snapshot first)" : "");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (b <= t || b >= (int) chain->n_layers) {
                *ret_message = strprintf("'%s' is not a file below '%s' in the chain of disk %s.",
                                         isempty(base) ? "(the bottom)" : base,
                                         isempty(top) ? "(the active layer)" : top, disk->target);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        /* RELATIVE: the overlay of top gets base's relative name. An active
         * commit leaves no overlay above base: nothing to keep (libvirt). */
        if ((flags & BLOCK_COMMIT_RELATIVE) && t > 0) {
                r = relative_backing_name(d, chain, t - 1, b, &relative, ret_message);
                if (r < 0)
                        return r;
        }
        return job_begin(d, t == 0 ? JOB_TYPE_ACTIVE_COMMIT : JOB_TYPE_COMMIT, disk, chain, chain->layers[b].path,
                         t == 0 ? NULL : chain->layers[t].path, relative, bandwidth, flags & BLOCK_COMMIT_DELETE, done,
                         userdata);
}

/* ---- BlockCopy ---- */

/* Whether the file system under path takes O_DIRECT (tmpfs does not). */
static bool supports_direct_io(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECT | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
        return fd >= 0;
}

/* The destination becomes the disk at the pivot: it takes the disk's
 * cache mode; a disk without one gets O_DIRECT where the file system
 * takes it (a bulk copy, measured faster, and it does not evict the
 * host's page cache), with the disk's io= or aio=threads. */
static QmpCache copy_cache(const DomainDisk *disk, const char *dest) {
        QmpCache c = qmp_cache_of(disk->cache, disk->io);

        if (!c.given)
                c = (QmpCache) { .given = true, .direct = supports_direct_io(dest), .aio = c.aio ?: "threads" };
        return c;
}

/* REUSE_EXT: the file is there, of the right kind and size; a qcow2 one
 * stands on what the copy expects (nothing, or the source's backing file
 * when shallow). *format is resolved when unknown (probed: qcow2 magic). */
static int check_reused_dest(Domain *d, const char *dest, DiskFormat *format, uint64_t size, const char *backing,
                             char **ret_message) {
        _cleanup_free_ char *name = NULL, *copy = NULL, *resolved = NULL;
        _cleanup_close_ int fd = -EBADF;
        DiskFormat backing_format;
        char a[PATH_MAX], b[PATH_MAX];
        uint64_t dest_size = 0;
        struct stat st;
        bool qcow2;
        int r;

        if (lstat(dest, &st) < 0) {
                *ret_message = strprintf("REUSE_EXT: the destination %s does not exist: %m.", dest);
                return errno == ENOENT ? -QSNAP_E_INVALID_ARGUMENT : -errno;
        }
        if (!S_ISREG(st.st_mode)) {
                *ret_message = strprintf("REUSE_EXT: the destination %s is not a regular file.", dest);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        /* Every header read from the file the gate opens (in an allowed
         * folder, no link), not from whatever the name leads to. */
        r = gate_open_image(d, dest, "The destination", &fd, ret_message);
        if (r < 0)
                return r;
        qcow2 = image_is_qcow2_fd(fd);
        if (qcow2) {
                r = image_read_backing_fd(fd, &name, &backing_format);
                if (r < 0) {
                        *ret_message = strprintf("REUSE_EXT: cannot read the header of %s: %s.", dest,
                                                 qsnap_strerror(r));
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
        }
        if (*format < 0)
                *format = qcow2 ? DISK_FORMAT_QCOW2 : DISK_FORMAT_RAW;
        if (*format == DISK_FORMAT_QCOW2 && !qcow2) {
                *ret_message = strprintf("REUSE_EXT: the destination %s is not a qcow2 image.", dest);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (*format == DISK_FORMAT_RAW && qcow2) {
                *ret_message = strprintf("REUSE_EXT: the destination %s is a qcow2 image, not raw; say "
                                         "<driver type='qcow2'/>.", dest);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        r = image_virtual_size_fd(fd, *format, &dest_size);
        if (r < 0) {
                *ret_message = strprintf("REUSE_EXT: cannot read the size of %s: %s.", dest, qsnap_strerror(r));
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (dest_size != size) {
                *ret_message = strprintf("REUSE_EXT: the destination %s has %" PRIu64 " bytes, the disk %" PRIu64 ".",
                                         dest, dest_size, size);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (*format != DISK_FORMAT_QCOW2)
                return 0;
        if (!backing && name) {
                *ret_message = strprintf("REUSE_EXT: the destination %s has a backing file (%s); a full copy needs a "
                                         "standalone image.", dest, name);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (!backing)
                return 0;
        if (name && name[0] != '/') {
                copy = strdup(dest);
                resolved = copy ? strjoin(dirname(copy), "/", name) : NULL;
                if (!resolved)
                        return -ENOMEM;
        }
        if (!name || !realpath(resolved ?: name, a) || !realpath(backing, b) || !streq(a, b)) {
                *ret_message = strprintf("REUSE_EXT with SHALLOW: the destination %s must stand on %s (it names %s).",
                                         dest, backing, strna(name));
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        return 0;
}

/* The disk's virtual size, from the file the path gate opens. */
static int disk_size(Domain *d, const DomainDisk *disk, uint64_t *ret, char **ret_message) {
        int r = gate_image_size(d, disk->source, disk->format, "The image", ret, ret_message);

        if (r >= 0 || r == -QSNAP_E_PATH_NOT_ALLOWED || r == -ENOMEM)
                return r;
        free(*ret_message);
        *ret_message = strprintf("Cannot read the size of %s: %s.", disk->source, qsnap_strerror(r));
        return -QSNAP_E_QEMU_FAILED;
}

int block_job_copy(Domain *d, const char *disk_name, const char *dest, DiskFormat dest_format, uint64_t bandwidth,
                   uint64_t flags, BlockJobStartedFunc done, void *userdata, char **ret_message) {
        const DomainDef *def = domain_current_def(d);
        const DomainDisk *disk;
        const ImageChain *chain;
        const char *backing = NULL;
        char resolved_dest[PATH_MAX], resolved_layer[PATH_MAX];
        DiskFormat format = dest_format;
        bool have_resolved;
        uint64_t size = 0;
        StartCall *c;
        struct stat st;
        int r;

        if (flags & ~BLOCK_COPY_ALL) {
                *ret_message = strprintf("Unknown BlockCopy flags 0x%" PRIx64 ".", (uint64_t) (flags & ~BLOCK_COPY_ALL));
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        r = job_prepare(d, disk_name, &disk, &chain, ret_message);
        if (r < 0)
                return r;
        r = gate_check(d, dest, "The destination", ret_message);
        if (r < 0)
                return r;
        /* Never a file the domain reads: QEMU would mirror an image onto itself. */
        have_resolved = realpath(dest, resolved_dest);
        for (size_t i = 0; i < def->n_disks; i++) {
                const ImageChain *ch = domain_disk_chain(d, def->disks[i].source, def->disks[i].format);

                for (size_t l = 0; ch && l < ch->n_layers; l++)
                        if (streq(ch->layers[l].path, dest) ||
                            (have_resolved && realpath(ch->layers[l].path, resolved_layer) &&
                             streq(resolved_layer, resolved_dest))) {
                                *ret_message = strprintf("The destination %s is an image of disk %s of domain '%s'.",
                                                         dest, def->disks[i].target, def->name);
                                return -QSNAP_E_INVALID_ARGUMENT;
                        }
        }
        if ((flags & BLOCK_COPY_SHALLOW) && chain->n_layers > 1)
                backing = chain->layers[1].path;
        r = disk_size(d, disk, &size, ret_message);
        if (r < 0)
                return r;
        if (flags & BLOCK_COPY_REUSE_EXT) {
                r = check_reused_dest(d, dest, &format, size, backing, ret_message);
                if (r < 0)
                        return r;
        } else {
                if (format < 0)
                        format = disk->format;
                if (lstat(dest, &st) >= 0) {
                        *ret_message = strprintf("The destination %s exists already; pass REUSE_EXT (2) to copy into it.",
                                                 dest);
                        return -QSNAP_E_ALREADY_EXISTS;
                }
                r = domain_check_new_file(dest, ret_message);
                if (r < 0)
                        return r;
        }
        if (backing && format != DISK_FORMAT_QCOW2) {
                *ret_message = strprintf("A shallow copy of disk %s needs a qcow2 destination to stand on %s; %s would "
                                         "be %s.", disk->target, backing, dest, disk_format_to_string(format));
                return -QSNAP_E_INVALID_ARGUMENT;
        }

        c = start_call_new(d, JOB_TYPE_COPY, disk, chain, backing, NULL, bandwidth, done, userdata);
        if (!c)
                return -ENOMEM;
        c->copy_format = c->info->copy_format = format;
        c->copy_write_blocking = flags & BLOCK_COPY_SYNCHRONOUS_WRITES;
        c->info->transient = flags & BLOCK_COPY_TRANSIENT_JOB;
        c->info->copy_dest = strdup(dest);
        if (!c->info->copy_dest) {
                operation_cancel(c->op);
                return -ENOMEM;
        }
        if (!(flags & BLOCK_COPY_REUSE_EXT)) {
                /* Named in the header as the disk's chain names it: absolute. */
                _cleanup_close_ int dirfd = -EBADF;

                /* Created in the folder the gate checks now, never through a link. */
                r = gate_open_folder(d, dest, "The destination", &dirfd, ret_message);
                if (r >= 0)
                        r = image_create_at(dirfd, fs_basename(dest), dest, format, size, backing,
                                            backing ? chain->layers[1].format : DISK_FORMAT_QCOW2, ret_message);
                if (r < 0) {
                        operation_cancel(c->op);
                        /* the name taken, a link where the file goes: named; the rest is the system's */
                        return r == -EEXIST ? -QSNAP_E_ALREADY_EXISTS : r == -ELOOP ? -QSNAP_E_PATH_NOT_ALLOWED : r;
                }
                c->info->copy_created = true;
                r = operation_undo_push(c->op, undo_copy_dest, NULL);
                if (r < 0) {
                        (void) fs_unlink_nofollow(dest, S_IFREG);
                        operation_cancel(c->op);
                        return r;
                }
        }
        c->copy_cache = copy_cache(disk, dest);
        r = domain_job_journal_write_copy(d, c->id, c->info);
        if (r < 0) {
                *ret_message = strprintf("Cannot write the journal of the copy: %s", qsnap_strerror(r));
                operation_cancel(c->op);
                return r;
        }
        r = operation_undo_push(c->op, undo_copy_journal, NULL);
        if (r < 0) {
                domain_job_journal_remove(d, c->id);
                operation_cancel(c->op);
                return r;
        }
        log_info("Domain '%s': copying disk %s to %s (%s, %s%s).", d->def->name, disk->target, dest,
                 disk_format_to_string(format), backing ? "shallow" : "full", c->copy_cache.direct ? ", O_DIRECT" : "");
        /* crash points: block-copy:journal-written */
        operation_crash_point(c->op, "journal-written");
        return start_call_send(c);
}
