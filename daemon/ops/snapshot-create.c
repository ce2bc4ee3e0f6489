/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateSnapshot. A plan is made and checked in full first (names, disks,
 * locations, paths, free space), so that a refused request touches
 * nothing. Then, for a running domain:
 *   external: overlays made with qemu-img, memory (if any) saved by
 *             migration to a file, each overlay blockdev-add'ed with
 *             "backing": null, and all disks switched in ONE transaction
 *             of blockdev-snapshot actions: all or none.
 *   internal: a snapshot-save job (memory + every qcow2 disk).
 * For a shut-off domain qemu-img does the work. On any failure every file
 * and node made so far is removed again. Only when the disks are done are
 * the domain definition and the snapshot metadata written.
 *
 * Before a snapshot touches any file or node it writes what it is about
 * to do to <state>/ops/<uuid>.snapshot-create (crash-safely), and removes
 * that file once it finished or rolled back. A qsnapd that finds the file
 * at start-up, after re-attaching to the QEMU, finishes the snapshot when
 * the disks were switched already (each disk's root node in QEMU is the
 * planned overlay node; without a QEMU, the stored definition names the
 * planned overlay) and rolls it back otherwise: planned nodes deleted, files
 * made for it removed, and a guest stopped for the memory save resumed.
 * No state ever needs a person to clear it.
 */
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "core/disk.h"
#include "core/domain-jobs.h"
#include "core/manager.h"
#include "ops/snapshot-create.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/util.h"

#define MIGRATION_POLL_USEC (100 * USEC_PER_MSEC)
#define INTENT_KIND "snapshot-create"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

typedef struct PlanDisk {
        const DomainDisk *disk; /* in the domain's current definition */
        SnapshotLocation location;
        char *overlay;        /* external: the new active file */
        bool reuse;           /* REUSE_EXT: the overlay exists already */
        bool created;         /* we made the overlay file */
        char *top_node;       /* live: the node the overlay goes on */
        char *node;           /* live: the overlay's node */
        bool added;           /* live: blockdev-add succeeded */
} PlanDisk;

struct SnapshotPlan {
        Domain *domain;
        uint64_t flags;
        SnapshotDef *def;     /* the metadata to store */
        PlanDisk *disks;
        size_t n_disks;
        bool live;
        SnapshotLocation memory;
        char *memory_file;
        bool memory_created;
        bool was_running;     /* the guest ran when we started */
        bool stopped;         /* we paused the guest for the memory save */
        char *job_id;

        SnapshotDoneFunc done;
        void *userdata;
        unsigned pending;     /* QMP replies still to come in the current step */
        uint64_t started_usec, qemu_usec; /* for the log: time in all, and waiting for QEMU */
        uint64_t qmp_sent_usec;
        int error;
        char *message;
        int subscription;
        int64_t migrate_query; /* the query-migrate in flight, 0: none */
        Snapshot *snapshot;   /* the result, while HALT stops the domain */
        bool intent_written;
        unsigned cont_retries;
        sd_event_source *timer;
        sd_event_source *defer;
};


SnapshotPlan *snapshot_plan_free(SnapshotPlan *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_disks; i++) {
                free(p->disks[i].overlay);
                free(p->disks[i].top_node);
                free(p->disks[i].node);
        }
        free(p->disks);
        snapshot_def_free(p->def);
        free(p->memory_file);
        free(p->job_id);
        free(p->message);
        /* Its reply must not find the plan gone. */
        if (p->migrate_query > 0 && p->domain->qmp)
                (void) qmp_cancel(p->domain->qmp, p->migrate_query);
        sd_event_source_disable_unref(p->timer);
        sd_event_source_disable_unref(p->defer);
        free(p);
        return NULL;
}

const char *snapshot_plan_name(const SnapshotPlan *p) {
        return p->def->name;
}

/* ---- checks ---- */

/* libvirt's default: the image name without its extension, dot, the
 * snapshot name ('/' would leave the folder, so it becomes '_'). */
static char *default_overlay_path(const char *source, const char *name) {
        _cleanup_free_ char *base = strdup(source), *safe = strdup(name);
        char *slash, *dot;

        if (!base || !safe)
                return NULL;
        for (char *c = safe; *c; c++)
                if (*c == '/')
                        *c = '_';
        slash = strrchr(base, '/');
        dot = strrchr(base, '.');
        if (dot && dot > slash + 1)
                *dot = 0;
        return strjoin(base, ".", safe);
}

static int find_disk_index(const DomainDef *def, const char *name) {
        for (size_t i = 0; i < def->n_disks; i++)
                if (streq(def->disks[i].target, name) || streq(def->disks[i].source, name))
                        return (int) i;
        return -ENODEV;
}

/* REUSE_EXT: the file must be a qcow2 whose backing file is the disk's
 * current active file. */
static int check_reused_overlay(const PlanDisk *pd, char **ret_message) {
        _cleanup_(image_chain_done) ImageChain chain = {};
        char a[PATH_MAX], b[PATH_MAX];
        struct stat st;

        /* This file is not ours yet: read it, do not cache it. */
        if (lstat(pd->overlay, &st) < 0 || !S_ISREG(st.st_mode)) {
                *ret_message = strprintf("REUSE_EXT: %s is not an existing regular file.", pd->overlay);
                return -EINVAL;
        }
        if (image_read_chain(pd->overlay, DISK_FORMAT_QCOW2, &chain) < 0 || chain.n_layers < 2 ||
            !realpath(chain.layers[1].path, a) || !realpath(pd->disk->source, b) || !streq(a, b)) {
                *ret_message = strprintf("REUSE_EXT: %s must be a qcow2 image whose backing file is %s.", pd->overlay,
                                         pd->disk->source);
                return -EINVAL;
        }
        return 0;
}

static int plan_disks(SnapshotPlan *p, const SnapshotDef *req, char **ret_message) {
        const DomainDef *def = domain_current_def(p->domain);
        bool disk_only = p->flags & SNAPSHOT_CREATE_DISK_ONLY, any = false;
        SnapshotLocation fallback;
        int r;

        /* The memory decides the default for the disks, as in libvirt. */
        if (p->memory == SNAPSHOT_LOCATION_EXTERNAL)
                fallback = SNAPSHOT_LOCATION_EXTERNAL;
        else if (p->memory == SNAPSHOT_LOCATION_INTERNAL)
                fallback = SNAPSHOT_LOCATION_INTERNAL;
        else
                fallback = disk_only ? SNAPSHOT_LOCATION_EXTERNAL : SNAPSHOT_LOCATION_INTERNAL;

        p->disks = new0(PlanDisk, def->n_disks);
        if (!p->disks)
                return -ENOMEM;
        p->n_disks = def->n_disks;
        for (size_t i = 0; i < def->n_disks; i++) {
                p->disks[i].disk = def->disks + i;
                p->disks[i].location = def->disks[i].readonly || def->disks[i].transient ? SNAPSHOT_LOCATION_NO : fallback;
        }

        for (size_t i = 0; i < req->n_disks; i++) {
                const SnapshotDisk *sd = req->disks + i;
                PlanDisk *pd;
                int k = find_disk_index(def, sd->name);

                if (k < 0) {
                        *ret_message = strprintf("Domain '%s' has no disk '%s'.", def->name, sd->name);
                        return -ENODEV;
                }
                pd = p->disks + k;
                if (sd->snapshot != SNAPSHOT_LOCATION_DEFAULT)
                        pd->location = sd->snapshot;
                else if (sd->source)
                        pd->location = SNAPSHOT_LOCATION_EXTERNAL;
                else
                        pd->location = fallback;
                if (sd->source) {
                        pd->overlay = strdup(sd->source);
                        if (!pd->overlay)
                                return -ENOMEM;
                }
        }

        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;

                if (pd->location != SNAPSHOT_LOCATION_NO && domain_disk_job(p->domain, pd->disk->target)) {
                        *ret_message = strprintf("Disk %s is busy with a block job.", pd->disk->target);
                        return -EBUSY;
                }
                switch (pd->location) {
                case SNAPSHOT_LOCATION_NO:
                case SNAPSHOT_LOCATION_DEFAULT:
                        pd->location = SNAPSHOT_LOCATION_NO;
                        continue;
                case SNAPSHOT_LOCATION_MANUAL:
                        *ret_message = strprintf("Disk %s: snapshot='manual' is not supported.", pd->disk->target);
                        return -EOPNOTSUPP;
                case SNAPSHOT_LOCATION_INTERNAL:
                case SNAPSHOT_LOCATION_EXTERNAL:
                case _SNAPSHOT_LOCATION_MAX:
                case _SNAPSHOT_LOCATION_INVALID:
                        break;
                }
                if (pd->disk->transient) {
                        *ret_message = strprintf("Disk %s is transient; its changes are thrown away, so it cannot be "
                                                 "snapshotted (use snapshot='no').", pd->disk->target);
                        return -EOPNOTSUPP;
                }
                any = true;
                /* Shut off, qemu-img and our header reader open the file. */
                if (!p->live) {
                        r = image_check_regular(pd->disk->source, "The image", ret_message);
                        if (r < 0)
                                return r;
                }
                if (pd->location == SNAPSHOT_LOCATION_INTERNAL) {
                        if (pd->disk->format != DISK_FORMAT_QCOW2) {
                                *ret_message = strprintf("Disk %s is %s; internal snapshots need qcow2.", pd->disk->target,
                                                         disk_format_to_string(pd->disk->format));
                                return -EOPNOTSUPP;
                        }
                        if (p->live && disk_only) {
                                *ret_message = strprintf("An internal snapshot of running domain '%s' always includes its "
                                                         "memory: leave out DISK_ONLY, or take an external one.", def->name);
                                return -EOPNOTSUPP;
                        }
                        continue;
                }

                /* External. */
                if (!pd->overlay) {
                        pd->overlay = default_overlay_path(pd->disk->source, p->def->name);
                        if (!pd->overlay)
                                return -ENOMEM;
                }
                for (size_t j = 0; j < i; j++)
                        if (p->disks[j].overlay && streq(p->disks[j].overlay, pd->overlay)) {
                                *ret_message = strprintf("Disks %s and %s would both get overlay %s.",
                                                         p->disks[j].disk->target, pd->disk->target, pd->overlay);
                                return -EINVAL;
                        }
                r = domain_path_allowed(p->domain, pd->overlay, ret_message);
                if (r < 0)
                        return r;
                /* REUSE_EXT allows an existing file; a missing one is made (libvirt). */
                pd->reuse = (p->flags & SNAPSHOT_CREATE_REUSE_EXT) && access(pd->overlay, F_OK) >= 0;
                if (pd->reuse) {
                        r = check_reused_overlay(pd, ret_message);
                        if (r < 0)
                                return r;
                } else {
                        r = path_check_writable(pd->overlay, ret_message);
                        if (r < 0)
                                return r;
                        if (access(pd->overlay, F_OK) >= 0) {
                                *ret_message = strprintf("%s exists already; qsnapd overwrites nothing unless told "
                                                         "REUSE_EXT.", pd->overlay);
                                return -EXDEV;
                        }
                        r = path_check_free_space(pd->overlay, ret_message);
                        if (r < 0)
                                return r;
                }
        }

        /* libvirt refuses to mix, and so do we: one snapshot is one kind. */
        for (size_t i = 0; i < p->n_disks; i++) {
                SnapshotLocation l = p->disks[i].location;
                if (l == SNAPSHOT_LOCATION_NO)
                        continue;
                if ((l == SNAPSHOT_LOCATION_INTERNAL && p->memory == SNAPSHOT_LOCATION_EXTERNAL) ||
                    (l == SNAPSHOT_LOCATION_EXTERNAL && p->memory == SNAPSHOT_LOCATION_INTERNAL)) {
                        *ret_message = strprintf("Disk %s would be %s while the memory is %s: one snapshot cannot mix "
                                                 "internal and external parts.", p->disks[i].disk->target,
                                                 snapshot_location_to_string(l), snapshot_location_to_string(p->memory));
                        return -EOPNOTSUPP;
                }
                for (size_t j = 0; j < i; j++)
                        if (p->disks[j].location != SNAPSHOT_LOCATION_NO && p->disks[j].location != l) {
                                *ret_message = strprintf("Disks %s and %s would be snapshotted differently (%s, %s): one "
                                                         "snapshot cannot mix internal and external disks.",
                                                         p->disks[j].disk->target, p->disks[i].disk->target,
                                                         snapshot_location_to_string(p->disks[j].location),
                                                         snapshot_location_to_string(l));
                                return -EOPNOTSUPP;
                        }
        }
        if (!any && p->memory == SNAPSHOT_LOCATION_NO) {
                *ret_message = strprintf("Nothing to snapshot: every disk of '%s' is excluded and there is no memory state.",
                                         def->name);
                return -EINVAL;
        }
        return 0;
}

/* Fills p->def: what the metadata will say. */
static int plan_metadata(SnapshotPlan *p, SnapshotDef *req) {
        Domain *d = p->domain;
        SnapshotDef *def = p->def;
        size_t n = 0;
        int r;

        def->description = TAKE_PTR(req->description);
        def->creation_time = (int64_t) (now_usec(CLOCK_REALTIME) / USEC_PER_SEC);
        def->has_creation_time = true;
        def->has_state = true;
        if (!p->live)
                def->state = SNAPSHOT_STATE_SHUTOFF;
        else if (p->memory == SNAPSHOT_LOCATION_NO)
                def->state = SNAPSHOT_STATE_DISK_SNAPSHOT;
        else
                def->state = d->state == DOMAIN_PAUSED ? SNAPSHOT_STATE_PAUSED : SNAPSHOT_STATE_RUNNING;
        def->memory = p->memory;
        if (p->memory_file) {
                def->memory_file = strdup(p->memory_file);
                if (!def->memory_file)
                        return -ENOMEM;
        }
        if (d->snapshots.current) {
                def->parent = strdup(snapshot_name(d->snapshots.current));
                if (!def->parent)
                        return -ENOMEM;
        }

        def->disks = new0(SnapshotDisk, p->n_disks);
        if (!def->disks)
                return -ENOMEM;
        def->has_disks = true;
        for (size_t i = 0; i < p->n_disks; i++) {
                const PlanDisk *pd = p->disks + i;
                SnapshotDisk *sd = def->disks + n++;
                const SnapshotDisk *asked = NULL;

                for (size_t j = 0; j < req->n_disks; j++)
                        if (find_disk_index(domain_current_def(d), req->disks[j].name) == (int) i)
                                asked = req->disks + j;

                sd->name = strdup(pd->disk->target);
                if (!sd->name)
                        return -ENOMEM;
                sd->snapshot = pd->location;
                sd->format = _DISK_FORMAT_INVALID;
                sd->on_delete = asked ? asked->on_delete : MERGE_DEFAULT;
                if (pd->location == SNAPSHOT_LOCATION_EXTERNAL) {
                        sd->format = DISK_FORMAT_QCOW2;
                        sd->source = strdup(pd->overlay);
                        if (!sd->source)
                                return -ENOMEM;
                }
        }
        def->n_disks = n;

        /* The domain as it is at this moment: what a revert goes back to. */
        r = domain_def_format(domain_current_def(d), DOMAIN_FORMAT_SECURE, &def->domain_xml);
        if (r < 0)
                return r;
        return 0;
}

int snapshot_plan_new(Domain *d, const char *xml, uint64_t flags, SnapshotPlan **ret, char **ret_message) {
        _cleanup_(snapshot_plan_freep) SnapshotPlan *p = NULL;
        _cleanup_(snapshot_def_freep) SnapshotDef *req = NULL;
        int r;

        if (flags & SNAPSHOT_CREATE_QUIESCE) {
                *ret_message = strprintf("QUIESCE needs a guest agent channel, and domain '%s' has none.", d->def->name);
                return -EOPNOTSUPP;
        }
        if (domain_is_busy(d)) {
                *ret_message = strprintf("Domain '%s' is busy with another operation.", d->def->name);
                return -EBUSY;
        }
        if (d->state == DOMAIN_CRASHED) {
                *ret_message = strprintf("Domain '%s' crashed; stop it first.", d->def->name);
                return -ESTALE;
        }

        r = snapshot_def_parse(xml, strlen(xml), 0, &req, ret_message);
        if (r < 0)
                return r == -EINVAL || r == -EFBIG ? -EBADMSG : r;

        p = new0(SnapshotPlan, 1);
        if (!p)
                return -ENOMEM;
        p->domain = d;
        p->flags = flags;
        p->live = domain_is_active(d);
        p->def = new0(SnapshotDef, 1);
        if (!p->def)
                return -ENOMEM;

        if (req->name)
                p->def->name = TAKE_PTR(req->name);
        else
                p->def->name = strprintf("%" PRIu64, now_usec(CLOCK_REALTIME) / USEC_PER_SEC);
        if (!p->def->name)
                return -ENOMEM;
        if (snapshot_tree_find(&d->snapshots, p->def->name)) {
                *ret_message = strprintf("Domain '%s' has a snapshot named '%s' already.", d->def->name, p->def->name);
                return -EEXIST;
        }

        /* Memory: as asked; by default with memory for a running domain. */
        p->memory = req->memory;
        if (p->memory == SNAPSHOT_LOCATION_DEFAULT) {
                bool any_external = false;
                for (size_t i = 0; i < req->n_disks; i++)
                        any_external = any_external || req->disks[i].snapshot == SNAPSHOT_LOCATION_EXTERNAL;
                p->memory = !p->live || (flags & SNAPSHOT_CREATE_DISK_ONLY) || any_external
                        ? SNAPSHOT_LOCATION_NO : SNAPSHOT_LOCATION_INTERNAL;
        }
        if (p->memory == SNAPSHOT_LOCATION_MANUAL) {
                *ret_message = strdup("<memory snapshot='manual'/> is not supported.");
                return -EOPNOTSUPP;
        }
        if (p->memory != SNAPSHOT_LOCATION_NO && (flags & SNAPSHOT_CREATE_DISK_ONLY)) {
                *ret_message = strdup("DISK_ONLY and a memory snapshot exclude each other.");
                return -EINVAL;
        }
        if (p->memory != SNAPSHOT_LOCATION_NO && !p->live) {
                *ret_message = strprintf("Domain '%s' is not running: there is no memory state to save.", d->def->name);
                return -ESTALE;
        }
        if (p->memory == SNAPSHOT_LOCATION_EXTERNAL) {
                if (!req->memory_file) {
                        *ret_message = strdup("<memory snapshot='external'/> needs a file= to save the memory state to.");
                        return -EINVAL;
                }
                r = domain_path_allowed(d, req->memory_file, ret_message);
                if (r < 0)
                        return r;
                if (access(req->memory_file, F_OK) >= 0) {
                        *ret_message = strprintf("Memory file %s exists already.", req->memory_file);
                        return -EXDEV;
                }
                r = path_check_writable(req->memory_file, ret_message);
                if (r < 0)
                        return r;
                r = path_check_free_space(req->memory_file, ret_message);
                if (r < 0)
                        return r;
                p->memory_file = TAKE_PTR(req->memory_file);
        }

        r = plan_disks(p, req, ret_message);
        if (r < 0)
                return r;
        r = plan_metadata(p, req);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(p);
        return 0;
}

/* ---- the intent journal ---- */

typedef struct SnapshotIntentDisk {
        const char *target;
        const char *below;   /* the active file before the snapshot */
        const char *overlay; /* the planned new active file */
        const char *node;    /* live: the planned overlay node */
        bool created;        /* qsnapd creates the file (not REUSE_EXT) */
} SnapshotIntentDisk;

typedef struct SnapshotIntent {
        const char *snapshot_xml; /* the metadata to record */
        bool metadata;            /* not NO_METADATA */
        bool resume;              /* the guest is stopped for the memory save */
        const char *memory_file;
        const SnapshotIntentDisk *disks;
        size_t n_disks;
} SnapshotIntent;

static int snapshot_intent_write(Domain *d, const SnapshotIntent *in) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object(), *disks = json_object_new_array();

        if (!o || !disks)
                return -ENOMEM;
        json_object_object_add(o, "snapshot_xml", json_object_new_string(in->snapshot_xml));
        json_object_object_add(o, "metadata", json_object_new_boolean(in->metadata));
        json_object_object_add(o, "resume", json_object_new_boolean(in->resume));
        if (in->memory_file)
                json_object_object_add(o, "memory_file", json_object_new_string(in->memory_file));
        for (size_t i = 0; i < in->n_disks; i++) {
                json_object *e = json_object_new_object();

                if (!e)
                        return -ENOMEM;
                json_object_object_add(e, "target", json_object_new_string(in->disks[i].target));
                json_object_object_add(e, "below", json_object_new_string(in->disks[i].below));
                json_object_object_add(e, "overlay", json_object_new_string(in->disks[i].overlay));
                if (in->disks[i].node)
                        json_object_object_add(e, "node", json_object_new_string(in->disks[i].node));
                json_object_object_add(e, "created", json_object_new_boolean(in->disks[i].created));
                json_object_array_add(disks, e);
        }
        json_object_object_add(o, "disks", json_object_get(disks));
        return op_journal_write(d->manager->config.state_dir, d->def->uuid, INTENT_KIND, o);
}

static void snapshot_intent_remove(Domain *d) {
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, INTENT_KIND);
}

/* ---- execution ---- */

/* Removes what the failed attempt made; the guest runs again if we paused it. */
static void plan_undo(SnapshotPlan *p) {
        Domain *d = p->domain;

        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;

                if (pd->added && d->qmp)
                        (void) qmp_cmd_blockdev_del(d->qmp, pd->node, NULL, NULL);
                if (pd->created && unlink(pd->overlay) >= 0)
                        log_debug("Removed overlay %s of the failed snapshot.", pd->overlay);
        }
        if (p->memory_created)
                (void) unlink(p->memory_file);
        if (p->stopped && d->qmp)
                (void) qmp_cmd_cont(d->qmp, NULL, NULL);
}

static void plan_reply(SnapshotPlan *p, int error, const char *message, Snapshot *s) {
        Domain *d = p->domain;

        if (p->done)
                p->done(d, error, message, s, p->userdata);
        manager_busy_unref(d->manager);
        snapshot_plan_free(p);
        domain_unref(d);
}

static void on_halted(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        SnapshotPlan *p = userdata;

        if (error < 0)
                log_warning("Domain '%s': HALT after snapshot failed: %s", d->def->name, strna(message));
        plan_reply(p, 0, NULL, p->snapshot);
}

static void plan_finish(SnapshotPlan *p, int error, const char *message) {
        Domain *d = p->domain;
        Snapshot *s = NULL;
        int r;

        if (p->subscription > 0 && d->qmp)
                (void) qmp_unsubscribe(d->qmp, p->subscription);
        p->timer = sd_event_source_disable_unref(p->timer);

        if (error < 0) {
                plan_undo(p);
                log_warning("Domain '%s': snapshot '%s' failed: %s", d->def->name, p->def->name, strna(message));
        } else {
                bool changed = false;

                /* The new overlays are the disks' active files from now on,
                 * in the running and in the stored definition alike. */
                for (size_t i = 0; i < p->n_disks; i++) {
                        const PlanDisk *pd = p->disks + i;
                        DomainDef *defs[2] = { d->live, d->def };
                        _cleanup_free_ char *below = NULL;

                        if (pd->location != SNAPSHOT_LOCATION_EXTERNAL)
                                continue;
                        /* pd->disk lives in one of the two definitions: keep
                         * the old name apart before it is replaced. */
                        below = strdup(pd->disk->source);
                        if (!below) {
                                log_oom();
                                continue;
                        }
                        domain_chain_add_overlay(d, below, pd->overlay);
                        for (size_t k = 0; k < 2; k++) {
                                DomainDisk *disk = defs[k] ? domain_def_find_disk(defs[k], pd->disk->target) : NULL;
                                if (disk && streq(disk->source, below)) {
                                        (void) free_and_strdup(&disk->source, pd->overlay);
                                        disk->format = DISK_FORMAT_QCOW2;
                                }
                        }
                        changed = true;
                }
                if (changed) {
                        (void) domain_save_disks(d);
                        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
                        crash_point("create:disks");
                }

                if (!(p->flags & SNAPSHOT_CREATE_NO_METADATA)) {
                        r = snapshot_tree_add(&d->snapshots, TAKE_PTR(p->def), true, &s);
                        if (r < 0) {
                                error = r;
                                message = "The snapshot was taken, but its metadata could not be stored.";
                                log_error_errno(r, "Domain '%s': %s (%m)", d->def->name, message);
                        } else {
                                log_info("Domain '%s': snapshot '%s' taken in %.1f ms, %.1f ms of it waiting for QEMU.",
                                         d->def->name, snapshot_name(s),
                                         (now_usec(CLOCK_MONOTONIC) - p->started_usec) / 1000.0, p->qemu_usec / 1000.0);
                                manager_notify_snapshot_added(d->manager, d, s);
                                crash_point("create:metadata");
                        }
                }
        }

        /* Done or undone: nothing is left for a restarted qsnapd to do. */
        if (p->intent_written)
                snapshot_intent_remove(d);
        d->snapshot_busy = false;
        /* HALT: the call returns once the domain is off. */
        if (error >= 0 && (p->flags & SNAPSHOT_CREATE_HALT) && domain_is_active(d) && !d->op) {
                _cleanup_free_ char *stop_message = NULL;

                p->snapshot = s;
                if (domain_stop(d, 0, on_halted, p, &stop_message) >= 0)
                        return;
                log_warning("Domain '%s': HALT after snapshot failed: %s", d->def->name, strna(stop_message));
        }
        plan_reply(p, error, message, s);
}

static void plan_fail(SnapshotPlan *p, int error, const char *fmt, ...) _printf_(3, 4);
static void plan_fail(SnapshotPlan *p, int error, const char *fmt, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&message, fmt, ap) < 0)
                message = NULL;
        va_end(ap);
        plan_finish(p, error, message);
}

/* Before anything is touched: what a restarted qsnapd needs to finish or
 * roll back this snapshot (see the recovery below). */
static int plan_write_intent(SnapshotPlan *p) {
        _cleanup_free_ char *xml = NULL;
        SnapshotIntentDisk disks[p->n_disks ?: 1];
        size_t n = 0;
        int r;

        r = snapshot_def_format(p->def, SNAPSHOT_FORMAT_SECURE, &xml);
        if (r < 0)
                return r;
        for (size_t i = 0; i < p->n_disks; i++) {
                const PlanDisk *pd = p->disks + i;

                if (pd->location != SNAPSHOT_LOCATION_EXTERNAL)
                        continue;
                disks[n++] = (SnapshotIntentDisk) { .target = pd->disk->target, .below = pd->disk->source,
                                                    .overlay = pd->overlay, .node = pd->node, .created = !pd->reuse };
        }
        r = snapshot_intent_write(p->domain, &(SnapshotIntent) {
                .snapshot_xml = xml,
                .metadata = !(p->flags & SNAPSHOT_CREATE_NO_METADATA),
                .resume = p->memory == SNAPSHOT_LOCATION_EXTERNAL && p->was_running,
                .memory_file = p->memory_file,
                .disks = disks,
                .n_disks = n,
        });
        if (r < 0)
                return log_error_errno(r, "Domain '%s': cannot write the snapshot intent: %m", p->domain->def->name);
        p->intent_written = true;
        return 0;
}

static int create_overlay_files(SnapshotPlan *p, char **ret_message) {
        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;
                _cleanup_free_ char *output = NULL;
                int r;

                if (pd->location != SNAPSHOT_LOCATION_EXTERNAL || pd->reuse)
                        continue;
                r = image_create_overlay(pd->overlay, pd->disk->source, pd->disk->format, &output);
                if (r < 0) {
                        if (IN_SET(r, -EEXIST, -ELOOP, -EROFS, -EACCES, -EPERM))
                                r = -EXDEV;
                        else if (r == -ENAMETOOLONG)
                                r = -EINVAL;
                        else if (path_out_of_space(pd->overlay) || (output && strstr(output, "No space left")))
                                r = -ENOSPC;
                        *ret_message = strprintf("Cannot create overlay %s for disk %s: %s", pd->overlay,
                                                 pd->disk->target, output ?: strerror(-r));
                        return r;
                }
                pd->created = true;
        }
        return 0;
}

static int run_qemu_img_snapshot(const char *op, const char *tag, const char *file, char **ret_output) {
        char *argv[] = { (char *) QEMU_IMG_BINARY, (char *) "snapshot", (char *) op, (char *) tag, (char *) file, NULL };
        int r = run_command(argv, ret_output);
        return r == 0 ? 0 : r < 0 ? r : -EIO;
}

/* A shut-off domain: qemu-img does it all, synchronously. */
static void plan_execute_offline(SnapshotPlan *p) {
        _cleanup_free_ char *message = NULL;
        int r;

        r = plan_write_intent(p);
        if (r < 0)
                return plan_finish(p, r, "Cannot record the snapshot's intent.");
        crash_point("create:intent");
        r = create_overlay_files(p, &message);
        if (r < 0)
                return plan_finish(p, r, message);
        crash_point("create:overlays");

        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;
                _cleanup_free_ char *output = NULL;

                if (pd->location != SNAPSHOT_LOCATION_INTERNAL)
                        continue;
                r = run_qemu_img_snapshot("-c", p->def->name, pd->disk->source, &output);
                if (r < 0) {
                        /* Take back the ones made before this one. */
                        for (size_t j = 0; j < i; j++)
                                if (p->disks[j].location == SNAPSHOT_LOCATION_INTERNAL)
                                        (void) run_qemu_img_snapshot("-d", p->def->name, p->disks[j].disk->source, NULL);
                        if (path_out_of_space(pd->disk->source))
                                r = -ENOSPC;
                        return plan_fail(p, r, "qemu-img snapshot of disk %s failed: %s", pd->disk->target, strna(output));
                }
        }
        plan_finish(p, 0, NULL);
}

/* The time QEMU takes is the time between a step's first request and
 * its last reply; steps do not overlap. */
static void qemu_wait_begin(SnapshotPlan *p) {
        p->qmp_sent_usec = now_usec(CLOCK_MONOTONIC);
}

static void qemu_wait_end(SnapshotPlan *p) {
        if (p->qmp_sent_usec > 0)
                p->qemu_usec += now_usec(CLOCK_MONOTONIC) - p->qmp_sent_usec;
        p->qmp_sent_usec = 0;
}

/* ---- live: external ---- */

static void on_resumed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata);

static int on_cont_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        SnapshotPlan *p = userdata;

        p->timer = sd_event_source_disable_unref(p->timer);
        if (!p->domain->qmp || qmp_cmd_cont(p->domain->qmp, on_resumed, p) < 0)
                plan_finish(p, 0, NULL);
        return 0;
}

/* QEMU reports the migration completed a moment before it leaves
 * finish-migrate, and refuses cont until then: ask again shortly. */
static void on_resume_status(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;
        _cleanup_free_ char *status = NULL;
        QmpRunState state;

        if (error >= 0 && qmp_parse_query_status(result, &state, &status) >= 0 && streq_ptr(status, "finish-migrate") &&
            p->cont_retries++ < 100 &&
            sd_event_add_time_relative(p->domain->manager->event, &p->timer, CLOCK_MONOTONIC, 10 * USEC_PER_MSEC, 0,
                                       on_cont_retry, p) >= 0)
                return;
        log_warning("Domain '%s': the guest did not resume after the snapshot (QEMU is %s).", p->domain->def->name,
                    strna(status));
        plan_finish(p, 0, NULL);
}

static void on_resumed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;

        if (error < 0 && error != -ECONNRESET && qmp_cmd_query_status(qmp, on_resume_status, p) >= 0)
                return;
        if (error < 0)
                log_warning("Domain '%s': the guest did not resume after the snapshot: %s", p->domain->def->name, strna(desc));
        else
                domain_note_running(p->domain);
        plan_finish(p, 0, NULL);
}

static void on_transaction(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;

        qemu_wait_end(p);
        if (error < 0)
                return plan_fail(p, -EIO, "QEMU refused the snapshot transaction: %s", strna(desc));
        /* The overlays are in the graph now; undo must not delete them. */
        for (size_t i = 0; i < p->n_disks; i++)
                p->disks[i].added = p->disks[i].created = false;
        p->memory_created = false;
        crash_point("create:switched");
        if (p->stopped && !(p->flags & SNAPSHOT_CREATE_HALT)) {
                /* The reply waits for the guest to run again. */
                p->stopped = false;
                if (qmp_cmd_cont(qmp, on_resumed, p) >= 0)
                        return;
        }
        plan_finish(p, 0, NULL);
}

static void plan_transaction(SnapshotPlan *p) {
        const char *nodes[p->n_disks ?: 1], *overlays[p->n_disks ?: 1];
        size_t n = 0;

        for (size_t i = 0; i < p->n_disks; i++)
                if (p->disks[i].location == SNAPSHOT_LOCATION_EXTERNAL) {
                        nodes[n] = p->disks[i].top_node;
                        overlays[n++] = p->disks[i].node;
                }
        qemu_wait_begin(p);
        if (qmp_cmd_transaction_blockdev_snapshot(p->domain->qmp, nodes, overlays, n, on_transaction, p) < 0)
                plan_fail(p, -EIO, "Cannot send the snapshot transaction.");
}

typedef struct AddCall {
        SnapshotPlan *plan;
        PlanDisk *disk;
} AddCall;

static void on_overlay_added(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        AddCall *c = userdata;
        SnapshotPlan *p = c->plan;

        if (error < 0) {
                if (p->error == 0) {
                        p->error = -EIO;
                        p->message = strprintf("QEMU cannot open overlay %s: %s", c->disk->overlay, strna(desc));
                }
        } else
                c->disk->added = true;
        free(c);
        if (--p->pending > 0)
                return;
        qemu_wait_end(p);
        if (p->error < 0)
                return plan_finish(p, p->error, p->message);
        plan_transaction(p);
}

static void plan_add_overlays(SnapshotPlan *p) {
        qemu_wait_begin(p);
        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;
                AddCall *c;

                if (pd->location != SNAPSHOT_LOCATION_EXTERNAL)
                        continue;
                c = new0(AddCall, 1);
                if (!c || qmp_cmd_blockdev_add_overlay(p->domain->qmp, pd->node, pd->overlay, on_overlay_added, c) < 0) {
                        free(c);
                        if (p->pending == 0)
                                return plan_fail(p, -EIO, "Cannot send blockdev-add.");
                        p->error = -EIO;
                        p->message = strdup("Cannot send blockdev-add.");
                        return;
                }
                *c = (AddCall) { .plan = p, .disk = pd };
                p->pending++;
        }
}

/* ---- live: memory to a file ---- */

static void plan_migration_done(SnapshotPlan *p, const char *status, const char *error) {
        if (streq(status, "completed")) {
                p->timer = sd_event_source_disable_unref(p->timer);
                if (p->subscription > 0)
                        (void) qmp_unsubscribe(p->domain->qmp, p->subscription);
                p->subscription = 0;
                /* QEMU is in postmigrate now: paused, memory saved. */
                p->stopped = p->was_running;
                crash_point("create:memory");
                plan_add_overlays(p);
        } else if (STR_IN_SET(status, "failed", "cancelled")) {
                int r = path_out_of_space(p->memory_file) ? -ENOSPC : -EIO;
                plan_fail(p, r, "Saving the memory state to %s failed: %s", p->memory_file, error ?: status);
        }
}

static void on_query_migrate(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;
        const char *status, *err;

        p->migrate_query = 0;
        if (!p->timer) /* finished meanwhile */
                return;
        if (error < 0 || qmp_parse_query_migrate(result, &status, &err) < 0)
                return plan_fail(p, -EIO, "query-migrate failed: %s", strna(desc));
        plan_migration_done(p, status, err);
}

/* One query-migrate at a time: the poll and the event may both ask. */
static int plan_query_migrate(SnapshotPlan *p) {
        int64_t id;

        if (p->migrate_query > 0)
                return 0;
        id = qmp_cmd_query_migrate(p->domain->qmp, on_query_migrate, p);
        if (id < 0)
                return (int) id;
        p->migrate_query = id;
        return 0;
}

static int on_migration_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        SnapshotPlan *p = userdata;

        /* Events are the main path; polling catches a missed one. */
        if (plan_query_migrate(p) < 0)
                return plan_fail(p, -EIO, "Cannot send query-migrate."), 0;
        (void) sd_event_source_set_time_relative(s, MIGRATION_POLL_USEC);
        return sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
}

static void on_migration_event(Qmp *qmp, const char *event, json_object *data, uint64_t ts, void *userdata) {
        SnapshotPlan *p = userdata;
        const char *status;

        if (qmp_parse_migration_event(data, &status) < 0 || !STR_IN_SET(status, "completed", "failed", "cancelled"))
                return;
        /* Ask for the details (error text) once more, then decide. */
        if (plan_query_migrate(p) < 0)
                plan_fail(p, -EIO, "Cannot send query-migrate.");
}

static void on_migrate(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;

        if (error < 0)
                return plan_fail(p, -EIO, "QEMU cannot save the memory state: %s", strna(desc));
        p->subscription = qmp_subscribe(qmp, "MIGRATION", on_migration_event, p);
        if (sd_event_add_time_relative(p->domain->manager->event, &p->timer, CLOCK_MONOTONIC, MIGRATION_POLL_USEC, 0,
                                       on_migration_poll, p) < 0)
                plan_fail(p, -ENOMEM, "Cannot arm a timer.");
}

static void plan_save_memory(SnapshotPlan *p) {
        _cleanup_free_ char *quoted = NULL, *command = NULL;
        _cleanup_close_ int fd = -EBADF;

        /* Created here, 0600 and exclusive; cat only appends into our file. */
        fd = open(p->memory_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return plan_fail(p, errno == ENOSPC ? -ENOSPC : -EXDEV, "Cannot create memory file %s: %m", p->memory_file);
        p->memory_created = true;
        quoted = shell_quote(p->memory_file);
        command = quoted ? strjoin("cat >> ", quoted) : NULL;
        if (!command)
                return plan_fail(p, -ENOMEM, "Out of memory.");

        (void) qmp_cmd_migrate_enable_events(p->domain->qmp, NULL, NULL);
        /* Without LIVE the guest stops first, so memory and disks match. */
        if (!(p->flags & SNAPSHOT_CREATE_LIVE) && p->domain->state == DOMAIN_RUNNING) {
                (void) qmp_cmd_stop(p->domain->qmp, NULL, NULL);
                p->stopped = true;
        }
        if (qmp_cmd_migrate_to_command(p->domain->qmp, command, on_migrate, p) < 0)
                plan_fail(p, -EIO, "Cannot send migrate.");
}

/* ---- live: internal ---- */

static void on_save_job_dismissed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;

        if (p->error < 0)
                return plan_finish(p, p->error, p->message);
        plan_finish(p, 0, NULL);
}

static void on_save_job_queried(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;
        QmpJobInfo info;

        if (error < 0 || qmp_parse_query_jobs(result, p->job_id, &info) <= 0)
                return plan_fail(p, -EIO, "Lost track of snapshot job %s.", p->job_id);
        if (!streq(info.status, "concluded"))
                return; /* a later JOB_STATUS_CHANGE comes */
        if (info.error) {
                p->error = path_out_of_space(p->domain->def->disks[0].source) ? -ENOSPC : -EIO;
                p->message = strprintf("QEMU could not take the snapshot: %s", info.error);
        }
        if (qmp_cmd_job_dismiss(qmp, p->job_id, on_save_job_dismissed, p) < 0)
                plan_fail(p, -EIO, "Cannot dismiss job %s.", p->job_id);
}

static void on_job_status_change(Qmp *qmp, const char *event, json_object *data, uint64_t ts, void *userdata) {
        SnapshotPlan *p = userdata;
        const char *id, *status;

        if (qmp_parse_job_status_change(data, &id, &status) < 0 || !streq(id, p->job_id) || !streq(status, "concluded"))
                return;
        (void) qmp_unsubscribe(qmp, p->subscription);
        p->subscription = 0;
        if (qmp_cmd_query_jobs(qmp, on_save_job_queried, p) < 0)
                plan_fail(p, -EIO, "Cannot send query-jobs.");
}

static void on_snapshot_save(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        SnapshotPlan *p = userdata;

        if (error < 0) {
                if (p->subscription > 0)
                        (void) qmp_unsubscribe(qmp, p->subscription);
                p->subscription = 0;
                plan_fail(p, -EIO, "QEMU cannot start the snapshot: %s", strna(desc));
        }
        /* The job's end arrives as JOB_STATUS_CHANGE. */
}

static void plan_save_internal(SnapshotPlan *p) {
        const char *devices[p->n_disks ?: 1];
        const char *vmstate = NULL;
        size_t n = 0;

        for (size_t i = 0; i < p->n_disks; i++)
                if (p->disks[i].location == SNAPSHOT_LOCATION_INTERNAL) {
                        devices[n++] = p->disks[i].top_node;
                        vmstate = vmstate ?: p->disks[i].top_node;
                }
        if (!vmstate)
                return plan_fail(p, -EOPNOTSUPP, "An internal snapshot with memory needs at least one qcow2 disk to hold it.");
        p->job_id = strprintf("qsnap-save-%" PRIx64, now_usec(CLOCK_MONOTONIC));
        if (!p->job_id)
                return plan_fail(p, -ENOMEM, "Out of memory.");
        p->subscription = qmp_subscribe(p->domain->qmp, "JOB_STATUS_CHANGE", on_job_status_change, p);
        if (p->subscription < 0 ||
            qmp_cmd_snapshot_save(p->domain->qmp, p->job_id, p->def->name, vmstate, devices, n, on_snapshot_save, p) < 0)
                plan_fail(p, -EIO, "Cannot send snapshot-save.");
}

/* ---- live: which node is each disk's top ---- */

typedef struct NodeCall {
        SnapshotPlan *plan;
        PlanDisk *disk;
} NodeCall;

/* Every disk knows its top node: go on with the snapshot proper. */
static void plan_nodes_known(SnapshotPlan *p) {
        _cleanup_free_ char *message = NULL;
        int r;

        if (p->memory == SNAPSHOT_LOCATION_INTERNAL)
                return plan_save_internal(p);

        r = plan_write_intent(p);
        if (r < 0)
                return plan_finish(p, r, "Cannot record the snapshot's intent.");
        crash_point("create:intent");
        r = create_overlay_files(p, &message);
        if (r < 0)
                return plan_finish(p, r, message);
        crash_point("create:overlays");
        if (p->memory == SNAPSHOT_LOCATION_EXTERNAL)
                return plan_save_memory(p);
        plan_add_overlays(p);
}

static void on_root_node(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        NodeCall *c = userdata;
        SnapshotPlan *p = c->plan;
        PlanDisk *pd = c->disk;
        const char *node;

        free(c);
        if (error < 0 || qmp_parse_string(result, &node) < 0 || isempty(node)) {
                if (p->error == 0) {
                        p->error = -EIO;
                        p->message = strprintf("QEMU shows no block node for disk %s: %s", pd->disk->target, strna(desc));
                }
        } else {
                pd->top_node = strdup(node);
                pd->node = strprintf("%s-%" PRIx64, pd->disk->target, (uint64_t) (++p->domain->node_seq & 0xffffffffffULL));
                if ((!pd->top_node || !pd->node) && p->error == 0)
                        p->error = -ENOMEM;
        }
        if (--p->pending > 0)
                return;
        qemu_wait_end(p);
        if (p->error < 0)
                return plan_finish(p, p->error, p->message);
        plan_nodes_known(p);
}

static void plan_find_nodes(SnapshotPlan *p) {
        qemu_wait_begin(p);
        for (size_t i = 0; i < p->n_disks; i++) {
                PlanDisk *pd = p->disks + i;
                NodeCall *c;

                if (pd->location == SNAPSHOT_LOCATION_NO)
                        continue;
                c = new0(NodeCall, 1);
                if (!c || qmp_cmd_disk_root_node(p->domain->qmp, pd->disk->target, on_root_node, c) < 0) {
                        free(c);
                        p->error = -EIO;
                        p->message = strdup("Cannot send qom-get.");
                        break;
                }
                *c = (NodeCall) { .plan = p, .disk = pd };
                p->pending++;
        }
        if (p->pending == 0)
                plan_finish(p, p->error ?: -EIO, p->message ?: "No disk to snapshot.");
}

static int on_plan_start(sd_event_source *s, void *userdata) {
        SnapshotPlan *p = userdata;

        p->defer = sd_event_source_disable_unref(p->defer);
        crash_point("create:start");
        p->started_usec = now_usec(CLOCK_MONOTONIC);
        p->was_running = p->domain->state == DOMAIN_RUNNING;
        if (!p->live)
                plan_execute_offline(p);
        else if (!p->domain->qmp)
                plan_fail(p, -ESRCH, "Domain '%s' has no monitor connection.", p->domain->def->name);
        else
                plan_find_nodes(p);
        return 0;
}

int snapshot_create(Domain *d, SnapshotPlan *plan, SnapshotDoneFunc done, void *userdata, char **ret_message) {
        _cleanup_(snapshot_plan_freep) SnapshotPlan *p = plan;
        int r;

        if (domain_is_busy(d)) {
                *ret_message = strprintf("Domain '%s' is busy with another operation.", d->def->name);
                return -EBUSY;
        }
        if (p->live != domain_is_active(d) || (p->live && !d->qmp)) {
                *ret_message = strprintf("Domain '%s' changed state meanwhile; try again.", d->def->name);
                return -EBUSY;
        }
        /* Started from the loop, so `done` is never called from in here. */
        r = sd_event_add_defer(d->manager->event, &p->defer, on_plan_start, p);
        if (r < 0)
                return r;
        p->done = done;
        p->userdata = userdata;
        d->snapshot_busy = true;
        domain_ref(d);
        manager_busy_ref(d->manager);
        TAKE_PTR(p);
        return 0;
}

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
        const char *mem = json_get_string(rc->intent, "memory_file");

        for (size_t i = 0; i < rc->n_disks; i++) {
                json_object *e = intent_disk(rc->intent, i);
                const char *node = json_get_string(e, "node"), *overlay = json_get_string(e, "overlay");

                const char *target = json_get_string(e, "target");
                const DomainDisk *disk = target ? domain_def_find_disk(d->def, target) : NULL;

                if (node && d->qmp)
                        (void) qmp_cmd_blockdev_del(d->qmp, node, NULL, NULL);
                /* Never a file the stored definition already uses. */
                if (disk && overlay && streq(disk->source, overlay))
                        continue;
                if (overlay && json_get_bool(e, "created") && unlink(overlay) >= 0)
                        log_info("Domain '%s': removed overlay %s of an interrupted snapshot.", d->def->name, overlay);
        }
        /* QEMU may still be saving the memory: stop that, or it would pause
         * the guest (postmigrate) once done, into a file that is gone. */
        if (mem && d->qmp)
                (void) qmp_cmd_migrate_cancel(d->qmp, NULL, NULL);
        if (mem && unlink(mem) >= 0)
                log_info("Domain '%s': removed memory file %s of an interrupted snapshot.", d->def->name, mem);
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

static void recovery_end(Recovery *rc) {
        Domain *d = rc->domain;

        if ((rc->switched == rc->n_disks && rc->n_disks > 0) || recovery_recorded(rc))
                recovery_roll_forward(rc);
        else
                recovery_roll_back(rc);
        /* A guest stopped for the memory save runs again. */
        if (json_get_bool(rc->intent, "resume") && d->qmp && d->state == DOMAIN_PAUSED)
                (void) qmp_cmd_cont(d->qmp, NULL, NULL);
        snapshot_intent_remove(d);
        if (rc->done)
                rc->done(d, 0, NULL, NULL, rc->userdata);
        json_object_put(rc->intent);
        domain_unref(d);
        free(rc);
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

static int snapshot_create_recover(Domain *d, DomainDoneFunc done, void *userdata) {
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

const OperationKind snapshot_create_kind = {
        .name = INTENT_KIND,
        .recover = snapshot_create_recover,
};
