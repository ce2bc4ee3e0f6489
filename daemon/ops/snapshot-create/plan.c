/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CreateSnapshot, the plan: made and checked in full first (names, disks,
 * locations, paths, free space), so that a refused request touches
 * nothing. libvirt's defaults: the memory decides the disks' location;
 * read-only and transient disks are left out; one snapshot is one kind.
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
#include "core/gate.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "core/operation.h"
#include "ops/snapshot-create.h"
#include "ops/snapshot-create/internal.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/util.h"


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
        free(p->nvram_copy);
        free(p->job_id);
        job_disown(p->save_job);
        job_unref(p->save_job);
        free(p->message);
        /* Its reply must not find the plan gone. */
        if (p->migrate_query > 0 && p->domain->qmp)
                (void) qmp_cancel(p->domain->qmp, p->migrate_query);
        sd_event_source_disable_unref(p->timer);
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
        return -QSNAP_E_NO_SUCH_DISK;
}

static bool is_cdrom(const DomainDef *def, const char *name) {
        for (size_t i = 0; i < def->devices.n_cdroms; i++)
                if (streq(def->devices.cdroms[i].target, name) || streq_ptr(def->devices.cdroms[i].source, name))
                        return true;
        return false;
}

/* REUSE_EXT: the file must be a qcow2 whose backing file is the disk's
 * current active file. */
static int check_reused_overlay(Domain *d, const PlanDisk *pd, char **ret_message) {
        _cleanup_(image_chain_done) ImageChain chain = {};
        _cleanup_free_ char *why = NULL;
        char a[PATH_MAX], b[PATH_MAX];
        struct stat st;

        /* This file is not ours yet: read it, do not cache it. */
        if (lstat(pd->overlay, &st) < 0 || !S_ISREG(st.st_mode)) {
                *ret_message = strprintf("REUSE_EXT: %s is not an existing regular file.", pd->overlay);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (gate_read_chain(d, pd->overlay, DISK_FORMAT_QCOW2, &chain, &why) < 0 || chain.n_layers < 2 ||
            !realpath(chain.layers[1].path, a) || !realpath(pd->disk->source, b) || !streq(a, b)) {
                *ret_message = strprintf("REUSE_EXT: %s must be a qcow2 image whose backing file is %s.", pd->overlay,
                                         pd->disk->source);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        return 0;
}

/* A chain whose headers lead out of the domain's folders (or name a json:
 * or protocol backing) is refused, not snapshotted on. One that cannot be
 * read for other reasons is left to the steps that read it. */
static int check_chain(Domain *d, const DomainDisk *disk, char **ret_message) {
        _cleanup_(image_chain_done) ImageChain chain = {};
        _cleanup_free_ char *why = NULL;
        int r;

        r = gate_read_chain(d, disk->source, disk->format, &chain, &why);
        if (r != -QSNAP_E_PATH_NOT_ALLOWED)
                return r == -ENOMEM ? r : 0;
        free(*ret_message);
        *ret_message = strprintf("Disk %s: %s", disk->target, strna(why));
        return *ret_message ? r : -ENOMEM;
}

/* One disk's part of the plan: its location settled and checked; for an
 * external one its overlay named, allowed, new (or REUSE_EXT'd) and room
 * for it. *any is set when the disk is snapshotted at all. */
static int plan_check_disk(SnapshotPlan *p, size_t i, bool disk_only, bool *any, char **ret_message) {
        PlanDisk *pd = p->disks + i;
        const DomainDef *def = domain_current_def(p->domain);
        int r;

        if (pd->location != SNAPSHOT_LOCATION_NO && domain_disk_job(p->domain, pd->disk->target)) {
                *ret_message = strprintf("Disk %s is busy with a block job.", pd->disk->target);
                return -QSNAP_E_BUSY;
        }
        switch (pd->location) {
        case SNAPSHOT_LOCATION_NO:
        case SNAPSHOT_LOCATION_DEFAULT:
                pd->location = SNAPSHOT_LOCATION_NO;
                return 0;
        case SNAPSHOT_LOCATION_MANUAL:
                *ret_message = strprintf("Disk %s: snapshot='manual' is not supported.", pd->disk->target);
                return -QSNAP_E_UNSUPPORTED;
        case SNAPSHOT_LOCATION_INTERNAL:
        case SNAPSHOT_LOCATION_EXTERNAL:
        case _SNAPSHOT_LOCATION_MAX:
        case _SNAPSHOT_LOCATION_INVALID:
                break;
        }
        if (pd->disk->transient) {
                *ret_message = strprintf("Disk %s is transient; its changes are thrown away, so it cannot be "
                                         "snapshotted (use snapshot='no').", pd->disk->target);
                return -QSNAP_E_UNSUPPORTED;
        }
        *any = true;
        /* Shut off, qemu-img and our header reader open the file. */
        if (!p->live) {
                r = image_check_regular(pd->disk->source, "The image", ret_message);
                if (r < 0)
                        return r;
        }
        r = check_chain(p->domain, pd->disk, ret_message);
        if (r < 0)
                return r;
        if (pd->location == SNAPSHOT_LOCATION_INTERNAL) {
                if (pd->disk->format != DISK_FORMAT_QCOW2) {
                        *ret_message = strprintf("Disk %s is %s; internal snapshots need qcow2.", pd->disk->target,
                                                 disk_format_to_string(pd->disk->format));
                        return -QSNAP_E_UNSUPPORTED;
                }
                if (p->live && disk_only) {
                        *ret_message = strprintf("An internal snapshot of running domain '%s' always includes its "
                                                 "memory: leave out DISK_ONLY, or take an external one.", def->name);
                        return -QSNAP_E_UNSUPPORTED;
                }
                return 0;
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
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
        r = gate_check(p->domain, pd->overlay, "The overlay", ret_message);
        if (r < 0)
                return r;
        /* REUSE_EXT allows an existing file; a missing one is made (libvirt). */
        pd->reuse = (p->flags & SNAPSHOT_CREATE_REUSE_EXT) && access(pd->overlay, F_OK) >= 0;
        if (pd->reuse) {
                r = check_reused_overlay(p->domain, pd, ret_message);
                if (r < 0)
                        return r;
        } else {
                r = path_check_writable(pd->overlay, ret_message);
                if (r < 0)
                        return r;
                if (access(pd->overlay, F_OK) >= 0) {
                        *ret_message = strprintf("%s exists already; qsnapd overwrites nothing unless told "
                                                 "REUSE_EXT.", pd->overlay);
                        return -QSNAP_E_PATH_NOT_ALLOWED;
                }
                r = path_check_free_space(pd->overlay, ret_message);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* libvirt refuses to mix, and so do we: one snapshot is one kind. */
static int plan_check_one_kind(SnapshotPlan *p, char **ret_message) {
        for (size_t i = 0; i < p->n_disks; i++) {
                SnapshotLocation l = p->disks[i].location;
                if (l == SNAPSHOT_LOCATION_NO)
                        continue;
                if ((l == SNAPSHOT_LOCATION_INTERNAL && p->memory == SNAPSHOT_LOCATION_EXTERNAL) ||
                    (l == SNAPSHOT_LOCATION_EXTERNAL && p->memory == SNAPSHOT_LOCATION_INTERNAL)) {
                        *ret_message = strprintf("Disk %s would be %s while the memory is %s: one snapshot cannot mix "
                                                 "internal and external parts.", p->disks[i].disk->target,
                                                 snapshot_location_to_string(l), snapshot_location_to_string(p->memory));
                        return -QSNAP_E_UNSUPPORTED;
                }
                for (size_t j = 0; j < i; j++)
                        if (p->disks[j].location != SNAPSHOT_LOCATION_NO && p->disks[j].location != l) {
                                *ret_message = strprintf("Disks %s and %s would be snapshotted differently (%s, %s): one "
                                                         "snapshot cannot mix internal and external disks.",
                                                         p->disks[j].disk->target, p->disks[i].disk->target,
                                                         snapshot_location_to_string(p->disks[j].location),
                                                         snapshot_location_to_string(l));
                                return -QSNAP_E_UNSUPPORTED;
                        }
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

                if (k < 0 && is_cdrom(def, sd->name)) {
                        /* virsh lists a CD-ROM as snapshot='no': it never is
                         * one (docs/decisions.md, "Devices"). */
                        if (sd->snapshot == SNAPSHOT_LOCATION_NO ||
                            (sd->snapshot == SNAPSHOT_LOCATION_DEFAULT && !sd->source))
                                continue;
                        *ret_message = strprintf("Disk '%s' of domain '%s' is a CD-ROM, which is never snapshotted "
                                                 "(use snapshot='no' or leave it out).", sd->name, def->name);
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
                if (k < 0) {
                        *ret_message = strprintf("Domain '%s' has no disk '%s'.", def->name, sd->name);
                        return -QSNAP_E_NO_SUCH_DISK;
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
                r = plan_check_disk(p, i, disk_only, &any, ret_message);
                if (r < 0)
                        return r;
        }
        r = plan_check_one_kind(p, ret_message);
        if (r < 0)
                return r;
        if (!any && p->memory == SNAPSHOT_LOCATION_NO) {
                *ret_message = strprintf("Nothing to snapshot: every disk of '%s' is excluded and there is no memory state.",
                                         def->name);
                return -QSNAP_E_INVALID_ARGUMENT;
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

/* UEFI: an internal snapshot takes the variable store along (it must be
 * qcow2), an external one keeps a copy of it. */
static int plan_nvram(SnapshotPlan *p, char **ret_message) {
        const DomainDef *def = domain_current_def(p->domain);
        bool internal = p->memory == SNAPSHOT_LOCATION_INTERNAL, external = p->memory == SNAPSHOT_LOCATION_EXTERNAL;
        int r;

        if (!def_firmware(def))
                return 0;
        for (size_t i = 0; i < p->n_disks; i++) {
                internal = internal || p->disks[i].location == SNAPSHOT_LOCATION_INTERNAL;
                external = external || p->disks[i].location == SNAPSHOT_LOCATION_EXTERNAL;
        }
        if (internal) {
                r = nvram_check_internal(def, ret_message);
                if (r < 0)
                        return r;
                p->nvram_internal = p->def->nvram_internal = true;
        }
        if (external) {
                p->nvram_copy = nvram_snapshot_path(def, p->def->name);
                p->def->nvram_file = p->nvram_copy ? strdup(p->nvram_copy) : NULL;
                if (!p->def->nvram_file)
                        return -ENOMEM;
                if (access(p->nvram_copy, F_OK) >= 0)
                        return error_message(ret_message, -QSNAP_E_PATH_NOT_ALLOWED,
                                             "The copy of the UEFI variable store for this snapshot, %s, exists already.",
                                             p->nvram_copy);
        }
        return 0;
}

/* QUIESCE as libvirt has it: a disk-only snapshot of a running guest
 * whose agent freezes its filesystems. Whether the agent answers is
 * found out by trying (AgentUnresponsive after the agent timeout). */
static int plan_check_quiesce(Domain *d, uint64_t flags, char **ret_message) {
        if (!(flags & SNAPSHOT_CREATE_DISK_ONLY))
                return error_message(ret_message, -QSNAP_E_INVALID_ARGUMENT,
                                     "QUIESCE goes only with DISK_ONLY (a memory snapshot needs no freeze).");
        return domain_agent_check_quiesce(d, ret_message);
}

int snapshot_plan_new(Domain *d, const char *xml, uint64_t flags, SnapshotPlan **ret, char **ret_message) {
        _cleanup_(snapshot_plan_freep) SnapshotPlan *p = NULL;
        _cleanup_(snapshot_def_freep) SnapshotDef *req = NULL;
        int r;

        if (flags & SNAPSHOT_CREATE_QUIESCE) {
                r = plan_check_quiesce(d, flags, ret_message);
                if (r < 0)
                        return r;
        }
        r = domain_check_idle(d, ret_message);
        if (r < 0)
                return r;
        if (d->state == DOMAIN_CRASHED) {
                *ret_message = strprintf("Domain '%s' crashed; stop it first.", d->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }

        r = snapshot_def_parse(xml, strlen(xml), 0, &req, ret_message);
        if (r < 0)
                return IN_SET(r, -EINVAL, -EFBIG, -EBADMSG) ? -QSNAP_E_INVALID_XML : r;

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
                return -QSNAP_E_ALREADY_EXISTS;
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
                return -QSNAP_E_UNSUPPORTED;
        }
        if (p->memory != SNAPSHOT_LOCATION_NO && (flags & SNAPSHOT_CREATE_DISK_ONLY)) {
                *ret_message = strdup("DISK_ONLY and a memory snapshot exclude each other.");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (p->memory != SNAPSHOT_LOCATION_NO && !p->live) {
                *ret_message = strprintf("Domain '%s' is not running: there is no memory state to save.", d->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }
        if (p->memory == SNAPSHOT_LOCATION_EXTERNAL) {
                if (!req->memory_file) {
                        *ret_message = strdup("<memory snapshot='external'/> needs a file= to save the memory state to.");
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
                r = gate_check(d, req->memory_file, "The memory state file", ret_message);
                if (r < 0)
                        return r;
                if (access(req->memory_file, F_OK) >= 0) {
                        *ret_message = strprintf("Memory file %s exists already.", req->memory_file);
                        return -QSNAP_E_PATH_NOT_ALLOWED;
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
        r = plan_nvram(p, ret_message);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(p);
        return 0;
}
