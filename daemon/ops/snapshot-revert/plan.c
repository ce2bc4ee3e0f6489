/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Revert, the plan: made and checked in full first (CheckRevert
 * is that plan alone), so a refused revert touches nothing. Every revert
 * applies the snapshot's recorded <domain> (as libvirt does; the domain
 * keeps its name and UUID); the plan says how: internal with memory into
 * the QEMU that runs (same configuration) or one started for it; internal
 * without memory with qemu-img on stopped disks; external with a new
 * overlay per disk on the file the snapshot froze.
 */
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "core/disk.h"
#include "core/nvram.h"
#include "core/domain-jobs.h"
#include "core/files.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/operation.h"
#include "ops/snapshot-revert.h"
#include "ops/snapshot-revert/internal.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/util.h"


RevertPlan *revert_plan_free(RevertPlan *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_disks; i++) {
                free(p->disks[i].target);
                free(p->disks[i].file);
                free(p->disks[i].overlay);
                free(p->disks[i].node);
        }
        free(p->disks);
        free(p->name);
        domain_def_free(p->new_def);
        domain_def_free(p->old_def);
        free(p->memory_file);
        free(p->nvram_copy);
        free(p->nvram_old);
        free(p->job_id);
        job_disown(p->load_job);
        job_unref(p->load_job);
        free(p->message);
        sd_event_source_disable_unref(p->timer);
        free(p);
        return NULL;
}

/* ---- checks ---- */

/* What a running QEMU cannot take over from the recorded definition; NULL
 * when nothing. */
static char *definition_difference(const DomainDef *now, const DomainDef *rec) {
        _cleanup_strv_free_ char **why = NULL;
        bool disks_differ = now->n_disks != rec->n_disks;

        if (now->memory_kib != rec->memory_kib)
                (void) strv_extendf(&why, "memory %" PRIu64 " KiB now, %" PRIu64 " KiB in the snapshot", now->memory_kib,
                                    rec->memory_kib);
        if (now->vcpus != rec->vcpus)
                (void) strv_extendf(&why, "%u vCPUs now, %u in the snapshot", now->vcpus, rec->vcpus);
        for (size_t i = 0; !disks_differ && i < rec->n_disks; i++)
                disks_differ = !domain_def_find_disk((DomainDef *) now, rec->disks[i].target);
        if (disks_differ) {
                _cleanup_strv_free_ char **a = NULL, **b = NULL;
                _cleanup_free_ char *ja = NULL, *jb = NULL;

                for (size_t i = 0; i < now->n_disks; i++)
                        (void) strv_extend(&a, now->disks[i].target);
                for (size_t i = 0; i < rec->n_disks; i++)
                        (void) strv_extend(&b, rec->disks[i].target);
                ja = strv_join(a, ",");
                jb = strv_join(b, ",");
                (void) strv_extendf(&why, "disks %s now, %s in the snapshot", strna(ja), strna(jb));
        }
        return why ? strv_join(why, "; ") : NULL;
}

/* <frozen without its extension>.<snapshot>-revert<N>, the first N free. */
static int pick_overlay_name(const char *frozen, const char *snapshot, char **ret) {
        _cleanup_free_ char *base = strdup(frozen), *safe = strdup(snapshot);
        char *slash, *dot;

        if (!base || !safe)
                return -ENOMEM;
        for (char *c = safe; *c; c++)
                if (*c == '/')
                        *c = '_';
        slash = strrchr(base, '/');
        dot = strrchr(base, '.');
        if (dot && slash && dot > slash + 1)
                *dot = 0;
        for (unsigned n = 1; n < 10000; n++) {
                _cleanup_free_ char *p = strprintf("%s.%s-revert%u", base, safe, n);
                struct stat st;

                if (!p)
                        return -ENOMEM;
                if (lstat(p, &st) < 0 && errno == ENOENT) {
                        *ret = TAKE_PTR(p);
                        return 0;
                }
        }
        return -QSNAP_E_ALREADY_EXISTS;
}

static DomainState state_after(const Snapshot *s, uint64_t flags, bool memory) {
        if (flags & SNAPSHOT_REVERT_RUNNING)
                return DOMAIN_RUNNING;
        if (flags & SNAPSHOT_REVERT_PAUSED)
                return DOMAIN_PAUSED;
        if (memory && s->def->state == SNAPSHOT_STATE_PAUSED)
                return DOMAIN_PAUSED;
        if (memory)
                return DOMAIN_RUNNING;
        return DOMAIN_SHUTOFF;
}

static int plan_internal(RevertPlan *p, const Snapshot *s, const DomainDef *now, char **ret_message) {
        p->disks = new0(RevertDisk, s->def->n_disks);
        if (!p->disks)
                return -ENOMEM;
        for (size_t i = 0; i < s->def->n_disks; i++) {
                const SnapshotDisk *sd = s->def->disks + i;
                const DomainDisk *rec = domain_def_find_disk(p->new_def, sd->name), *cur;
                _cleanup_close_ int fd = -EBADF;
                RevertDisk *rd;
                int r;

                if (sd->snapshot != SNAPSHOT_LOCATION_INTERNAL)
                        continue;
                cur = domain_def_find_disk((DomainDef *) now, sd->name);
                if (!rec || !cur) {
                        *ret_message = strprintf("Snapshot '%s' holds disk %s, which the domain %s.", s->def->name,
                                                 sd->name, cur ? "did not have then" : "no longer has");
                        return -QSNAP_E_OPERATION_INVALID;
                }
                /* In place only: a file that became another chain's backing
                 * file would change under that chain. */
                if (!streq(rec->source, cur->source)) {
                        *ret_message = strprintf("Disk %s: snapshot '%s' is inside %s, which is no longer the disk's "
                                                 "active file (%s is); reverting it would change data other chains "
                                                 "read.", sd->name, s->def->name, rec->source, cur->source);
                        return -QSNAP_E_OPERATION_INVALID;
                }
                r = gate_check(p->domain, rec->source, "The image", ret_message);
                if (r < 0)
                        return r;
                r = image_check_regular(rec->source, "The image", ret_message);
                if (r < 0)
                        return r;
                /* From the header, not qemu-img: this runs before
                 * authorization; of the file the gate opens. */
                r = gate_open_image(p->domain, rec->source, "The image", &fd, ret_message);
                if (r < 0)
                        return r;
                r = image_has_internal_snapshot_fd(fd, s->def->name);
                fd = safe_close(fd);
                if (r <= 0) {
                        *ret_message = strprintf("Disk %s: %s holds no internal snapshot '%s'%s.", sd->name, rec->source,
                                                 s->def->name, r < 0 ? " (its snapshot table cannot be read)" : "");
                        return -QSNAP_E_OPERATION_INVALID;
                }
                rd = p->disks + p->n_disks++;
                rd->target = strdup(sd->name);
                rd->file = strdup(rec->source);
                rd->format = rec->format;
                if (!rd->target || !rd->file)
                        return -ENOMEM;
        }
        if (p->n_disks == 0 && !p->memory) {
                *ret_message = strprintf("Snapshot '%s' holds no disk and no memory state: nothing to revert to.",
                                         s->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }
        return 0;
}

static int plan_external(RevertPlan *p, const Snapshot *s, bool have_record, char **ret_message) {
        Domain *d = p->domain;
        int r;

        p->disks = new0(RevertDisk, s->def->n_disks);
        if (!p->disks)
                return -ENOMEM;
        for (size_t i = 0; i < s->def->n_disks; i++) {
                const SnapshotDisk *sd = s->def->disks + i;
                DomainDisk *rec = domain_def_find_disk(p->new_def, sd->name);
                _cleanup_(image_chain_done) ImageChain chain = {};
                _cleanup_free_ char *why = NULL;
                RevertDisk *rd;
                struct stat st;

                if (sd->snapshot != SNAPSHOT_LOCATION_EXTERNAL)
                        continue;
                if (!rec) {
                        *ret_message = strprintf("Snapshot '%s' holds disk %s, which its recorded domain does not have.",
                                                 s->def->name, sd->name);
                        return -QSNAP_E_OPERATION_INVALID;
                }
                rd = p->disks + p->n_disks++;
                rd->target = strdup(sd->name);
                if (!rd->target)
                        return -ENOMEM;
                if (have_record) {
                        rd->file = strdup(rec->source);
                        rd->format = rec->format;
                } else if (sd->source && gate_read_chain(d, sd->source, DISK_FORMAT_QCOW2, &chain, &why) >= 0 &&
                           chain.n_layers >= 2) {
                        /* No recorded domain: the overlay's backing file is what was frozen. */
                        rd->file = strdup(chain.layers[1].path);
                        rd->format = chain.layers[1].format;
                } else {
                        *ret_message = strprintf("Disk %s: cannot tell which file snapshot '%s' froze.", sd->name,
                                                 s->def->name);
                        return -QSNAP_E_OPERATION_INVALID;
                }
                if (!rd->file)
                        return -ENOMEM;
                /* Read as the new overlay's backing: inside the allowed folders only. */
                r = gate_check(d, rd->file, "The frozen file", ret_message);
                if (r < 0)
                        return r;
                if (stat(rd->file, &st) < 0 || !S_ISREG(st.st_mode)) {
                        *ret_message = strprintf("Disk %s: %s, the file snapshot '%s' froze, is missing.", sd->name,
                                                 rd->file, s->def->name);
                        return -QSNAP_E_OPERATION_INVALID;
                }
                r = pick_overlay_name(rd->file, s->def->name, &rd->overlay);
                if (r < 0)
                        return r;
                for (size_t j = 0; j + 1 < p->n_disks; j++)
                        if (streq(p->disks[j].file, rd->file)) {
                                *ret_message = strprintf("Disks %s and %s of snapshot '%s' froze the same file %s.",
                                                         p->disks[j].target, rd->target, s->def->name, rd->file);
                                return -QSNAP_E_OPERATION_INVALID;
                        }
                r = gate_check(d, rd->overlay, "The overlay", ret_message);
                if (r < 0)
                        return r;
                if (access(rd->file, R_OK) < 0 || access(rd->overlay, F_OK) >= 0) {
                        *ret_message = strprintf("Cannot create %s next to %s.", rd->overlay, rd->file);
                        return -QSNAP_E_PATH_NOT_ALLOWED;
                }
                /* From now on the definition runs on the new overlay. */
                if (free_and_strdup(&rec->source, rd->overlay) < 0)
                        return -ENOMEM;
                rec->format = DISK_FORMAT_QCOW2;
        }
        if (p->n_disks == 0) {
                *ret_message = strprintf("Snapshot '%s' holds no external disk.", s->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }
        if (p->memory) {
                if (!s->def->memory_file || access(s->def->memory_file, R_OK) < 0) {
                        *ret_message = strprintf("The memory state %s of snapshot '%s' is missing.",
                                                 strna(s->def->memory_file), s->def->name);
                        return -QSNAP_E_OPERATION_INVALID;
                }
                /* qsnapd opens it for QEMU (getfd): a FIFO is refused here, with a name. */
                r = image_check_regular(s->def->memory_file, "The memory state file", ret_message);
                if (r < 0)
                        return r;
                p->memory_file = strdup(s->def->memory_file);
                if (!p->memory_file)
                        return -ENOMEM;
        }
        return 0;
}

/* UEFI: the variable store goes back with the disks. */
static int plan_nvram(RevertPlan *p, const Snapshot *s, char **ret_message) {
        if (!def_firmware(p->new_def))
                return 0;
        if (!p->external) {
                p->nvram_internal = s->def->nvram_internal;
                return 0;
        }
        if (!s->def->nvram_file) {
                log_warning("Domain '%s': snapshot '%s' kept no copy of the UEFI variable store; it stays as it is.",
                            p->domain->def->name, s->def->name);
                return 0;
        }
        if (!nvram_snapshot_path_ok(p->new_def, s->def->nvram_file) || access(s->def->nvram_file, R_OK) < 0)
                return error_message(ret_message, -QSNAP_E_OPERATION_INVALID,
                                     "The copy of the UEFI variable store that snapshot '%s' kept, %s, is missing or "
                                     "not beside the store %s.", s->def->name, s->def->nvram_file,
                                     strna(p->new_def->firmware.nvram));
        p->nvram_copy = strdup(s->def->nvram_file);
        return p->nvram_copy ? 0 : -ENOMEM;
}

int revert_plan_new(Snapshot *s, uint64_t flags, RevertPlan **ret, char **ret_message) {
        _cleanup_(revert_plan_freep) RevertPlan *p = NULL;
        Domain *d = s->tree->domain;
        const DomainDef *now = domain_current_def(d);
        SnapshotLocation memory = snapshot_memory(s);
        bool active = domain_is_active(d), have_record = s->def->domain_xml;
        int r;

        if (flags & ~SNAPSHOT_REVERT_ALL) {
                *ret_message = strprintf("Unknown flag bits 0x%" PRIx64 " for Revert (known flags: 0x%" PRIx64 ").",
                                         (uint64_t) (flags & ~SNAPSHOT_REVERT_ALL), (uint64_t) SNAPSHOT_REVERT_ALL);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if ((flags & SNAPSHOT_REVERT_RUNNING) && (flags & SNAPSHOT_REVERT_PAUSED)) {
                *ret_message = strdup("RUNNING and PAUSED exclude each other.");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (domain_is_busy(d) || d->graph_busy) {
                *ret_message = operation_busy_message(d);
                return -QSNAP_E_BUSY;
        }
        for (size_t i = 0; i < now->n_disks; i++) {
                Job *j = domain_disk_job(d, now->disks[i].target);
                if (j) {
                        *ret_message = strprintf("Disk %s is busy with block job %s; a revert would pull the files from "
                                                 "under it.", now->disks[i].target, j->id);
                        return -QSNAP_E_BUSY;
                }
        }
        if (d->state == DOMAIN_CRASHED) {
                *ret_message = strprintf("Domain '%s' crashed; stop it first.", d->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }
        if (snapshot_kind(s) == SNAPSHOT_KIND_MIXED) {
                *ret_message = strprintf("Snapshot '%s' mixes internal and external parts; qsnapd cannot revert it.",
                                         s->def->name);
                return -QSNAP_E_UNSUPPORTED;
        }
        if (!have_record && !(flags & SNAPSHOT_REVERT_FORCE)) {
                *ret_message = strprintf("Snapshot '%s' has no recorded domain definition, so qsnapd cannot prove the "
                                         "current one fits it; FORCE reverts with the current definition.", s->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }
        /* Metadata stored before the gate existed may name any file. */
        r = gate_check_snapshot_def(d, s->def, ret_message);
        if (r < 0)
                return r;

        p = new0(RevertPlan, 1);
        if (!p)
                return -ENOMEM;
        p->domain = d;
        p->flags = flags;
        p->external = snapshot_kind(s) == SNAPSHOT_KIND_EXTERNAL;
        p->memory = memory != SNAPSHOT_LOCATION_NO &&
                    (s->def->state == SNAPSHOT_STATE_RUNNING || s->def->state == SNAPSHOT_STATE_PAUSED);
        p->after = state_after(s, flags, p->memory);
        p->name = strdup(s->def->name);
        if (!p->name)
                return -ENOMEM;
        p->snapshot_time = s->def->has_creation_time ? s->def->creation_time : 0;
        r = domain_def_copy(d->def, &p->old_def);
        if (r < 0)
                return r;

        /* The recorded definition, under the domain's own name and UUID. */
        if (have_record) {
                _cleanup_free_ char *why = NULL;

                r = domain_def_parse(s->def->domain_xml, strlen(s->def->domain_xml), &p->new_def, &why);
                if (r < 0) {
                        *ret_message = strprintf("The domain recorded in snapshot '%s' is unreadable: %s", s->def->name,
                                                 strna(why));
                        return -QSNAP_E_OPERATION_INVALID;
                }
                if (free_and_strdup(&p->new_def->name, d->def->name) < 0 ||
                    free_and_strdup(&p->new_def->uuid, d->def->uuid) < 0 ||
                    free_and_strdup(&p->new_def->monitor_path, d->def->monitor_path) < 0)
                        return -ENOMEM;
        } else {
                r = domain_def_copy(d->def, &p->new_def);
                if (r < 0)
                        return r;
        }

        r = p->external ? plan_external(p, s, have_record, ret_message) : plan_internal(p, s, now, ret_message);
        if (r >= 0)
                r = plan_nvram(p, s, ret_message);
        if (r < 0)
                return r;

        if (active) {
                _cleanup_free_ char *why = definition_difference(now, p->new_def);

                if (!p->memory && !(flags & SNAPSHOT_REVERT_FORCE)) {
                        *ret_message = strprintf("Domain '%s' is %s and snapshot '%s' has no memory state: reverting "
                                                 "throws the running state away. Use FORCE to do so, or stop the "
                                                 "domain first.", d->def->name, domain_state_to_string(d->state),
                                                 s->def->name);
                        return -QSNAP_E_OPERATION_INVALID;
                }
                if (p->memory && why && !(flags & SNAPSHOT_REVERT_FORCE)) {
                        *ret_message = strprintf("Snapshot '%s' was taken of a different configuration (%s); the running "
                                                 "QEMU cannot take its state. FORCE restarts QEMU with the recorded "
                                                 "definition.", s->def->name, why);
                        return -QSNAP_E_OPERATION_INVALID;
                }
                /* Internal memory into the same configuration: in place. */
                p->live_load = p->memory && !p->external && !why;
                p->stop_first = !p->live_load;
        }
        if (!domain_is_managed(d) && (p->stop_first || p->after != DOMAIN_SHUTOFF || p->external) && !p->live_load) {
                *ret_message = strprintf("Domain '%s' runs a QEMU started elsewhere; qsnapd can only revert it in place "
                                         "to an internal snapshot with memory.", d->def->name);
                return -QSNAP_E_UNSUPPORTED;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

int revert_qemu_img_apply(Domain *d, const char *tag, const char *file, bool own, char **ret_output) {
        /* By descriptor: the file alone, through the gate (core/gate.h). */
        return gate_img_snapshot(d, "-a", tag, file, own, ret_output);
}
