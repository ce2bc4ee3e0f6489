/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot.Revert. A plan is made and checked in full first (CheckRevert
 * is that plan alone), so a refused revert touches nothing. Every revert
 * applies the snapshot's recorded <domain> (as libvirt does; the domain
 * keeps its name and UUID), then:
 *   internal, memory:  snapshot-load into a QEMU whose definition matches
 *                      (the running one, or one started paused for it);
 *   internal, no memory: QEMU stopped (FORCE when it ran), qemu-img
 *                      snapshot -a on every disk;
 *   external:          QEMU stopped (FORCE when a running state is thrown
 *                      away), a NEW overlay per disk on the file the
 *                      snapshot froze, the definition pointed at it, the
 *                      overlays recorded as the snapshot's <revertDisks>;
 *                      a memory state is loaded by starting QEMU with
 *                      -incoming defer + migrate-incoming.
 * The old branch and every child stay untouched. The intent is journaled
 * in <state>/ops/<uuid>.snapshot-revert before anything is touched and
 * removed after; its recovery (snapshot_revert_kind) finishes or rolls
 * back an interrupted one at start-up. crash_point("revert:<step>") marks
 * each step for the crash tests.
 */
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "config.h"
#include "core/disk.h"
#include "core/domain-jobs.h"
#include "core/files.h"
#include "core/manager.h"
#include "ops/snapshot-revert.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "store/op-journal.h"
#include "util/util.h"

#define LOAD_POLL_USEC (50 * USEC_PER_MSEC)
#define LOAD_TIMEOUT_USEC (300 * USEC_PER_SEC)

typedef struct RevertDisk {
        char *target;
        char *file;          /* internal: the image holding the tag; external: the frozen file */
        DiskFormat format;   /* of file */
        char *overlay;       /* external: the new overlay */
        bool created;
        char *node;          /* internal, live: the disk's top node */
} RevertDisk;

struct RevertPlan {
        Domain *domain;
        char *name;          /* the snapshot's */
        uint64_t flags;
        bool external;
        bool memory;         /* a memory state to load */
        bool stop_first;     /* QEMU goes first (restart or shut off) */
        bool live_load;      /* internal memory: load into the QEMU that runs now */
        DomainState after;
        DomainDef *new_def;  /* the definition afterwards */
        DomainDef *old_def;  /* the stored one before, for a rollback */
        RevertDisk *disks;
        size_t n_disks;
        char *memory_file;

        char *job_id;
        unsigned pending;
        uint64_t deadline;
        bool intent_written;
        bool def_switched;
        bool loaded;         /* the snapshot-load job succeeded (journaled) */
        int error;
        char *message;
        RevertDoneFunc done;
        void *userdata;
        sd_event_source *defer;
        sd_event_source *timer;
};

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
        free(p->job_id);
        free(p->message);
        sd_event_source_disable_unref(p->defer);
        sd_event_source_disable_unref(p->timer);
        free(p);
        return NULL;
}

/* ---- checks ---- */

static int qemu_img_has_tag(const char *file, const char *tag) {
        char *argv[] = { (char *) QEMU_IMG_BINARY, (char *) "info", (char *) "-U", (char *) "--output=json",
                         (char *) "-f", (char *) "qcow2", (char *) file, NULL };
        _cleanup_(json_object_putp) json_object *info = NULL;
        _cleanup_free_ char *output = NULL;
        json_object *snaps;
        int r;

        r = run_command(argv, &output);
        if (r != 0)
                return r < 0 ? r : -EIO;
        info = json_tokener_parse(output);
        if (!info)
                return -EBADMSG;
        if (!json_object_object_get_ex(info, "snapshots", &snaps) || !json_object_is_type(snaps, json_type_array))
                return 0;
        for (size_t i = 0; i < json_object_array_length(snaps); i++) {
                json_object *name;
                if (json_object_object_get_ex(json_object_array_get_idx(snaps, i), "name", &name) &&
                    streq(json_object_get_string(name), tag))
                        return 1;
        }
        return 0;
}

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
        return -EEXIST;
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
                RevertDisk *rd;
                int r;

                if (sd->snapshot != SNAPSHOT_LOCATION_INTERNAL)
                        continue;
                cur = domain_def_find_disk((DomainDef *) now, sd->name);
                if (!rec || !cur) {
                        *ret_message = strprintf("Snapshot '%s' holds disk %s, which the domain %s.", s->def->name,
                                                 sd->name, cur ? "did not have then" : "no longer has");
                        return -ESTALE;
                }
                /* In place only: a file that became another chain's backing
                 * file would change under that chain. */
                if (!streq(rec->source, cur->source)) {
                        *ret_message = strprintf("Disk %s: snapshot '%s' is inside %s, which is no longer the disk's "
                                                 "active file (%s is); reverting it would change data other chains "
                                                 "read.", sd->name, s->def->name, rec->source, cur->source);
                        return -ESTALE;
                }
                r = image_check_regular(rec->source, "The image", ret_message);
                if (r < 0)
                        return r;
                r = qemu_img_has_tag(rec->source, s->def->name);
                if (r <= 0) {
                        *ret_message = strprintf("Disk %s: %s holds no internal snapshot '%s'%s.", sd->name, rec->source,
                                                 s->def->name, r < 0 ? " (qemu-img cannot read it)" : "");
                        return -ESTALE;
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
                return -ESTALE;
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
                RevertDisk *rd;
                struct stat st;

                if (sd->snapshot != SNAPSHOT_LOCATION_EXTERNAL)
                        continue;
                if (!rec) {
                        *ret_message = strprintf("Snapshot '%s' holds disk %s, which its recorded domain does not have.",
                                                 s->def->name, sd->name);
                        return -ESTALE;
                }
                rd = p->disks + p->n_disks++;
                rd->target = strdup(sd->name);
                if (!rd->target)
                        return -ENOMEM;
                if (have_record) {
                        rd->file = strdup(rec->source);
                        rd->format = rec->format;
                } else if (sd->source && image_read_chain(sd->source, DISK_FORMAT_QCOW2, &chain) >= 0 &&
                           chain.n_layers >= 2) {
                        /* No recorded domain: the overlay's backing file is what was frozen. */
                        rd->file = strdup(chain.layers[1].path);
                        rd->format = chain.layers[1].format;
                } else {
                        *ret_message = strprintf("Disk %s: cannot tell which file snapshot '%s' froze.", sd->name,
                                                 s->def->name);
                        return -ESTALE;
                }
                if (!rd->file)
                        return -ENOMEM;
                if (stat(rd->file, &st) < 0 || !S_ISREG(st.st_mode)) {
                        *ret_message = strprintf("Disk %s: %s, the file snapshot '%s' froze, is missing.", sd->name,
                                                 rd->file, s->def->name);
                        return -ESTALE;
                }
                r = pick_overlay_name(rd->file, s->def->name, &rd->overlay);
                if (r < 0)
                        return r;
                for (size_t j = 0; j + 1 < p->n_disks; j++)
                        if (streq(p->disks[j].file, rd->file)) {
                                *ret_message = strprintf("Disks %s and %s of snapshot '%s' froze the same file %s.",
                                                         p->disks[j].target, rd->target, s->def->name, rd->file);
                                return -ESTALE;
                        }
                r = domain_path_allowed(d, rd->overlay, ret_message);
                if (r < 0)
                        return r;
                if (access(rd->file, R_OK) < 0 || access(rd->overlay, F_OK) >= 0) {
                        *ret_message = strprintf("Cannot create %s next to %s.", rd->overlay, rd->file);
                        return -EXDEV;
                }
                /* From now on the definition runs on the new overlay. */
                if (free_and_strdup(&rec->source, rd->overlay) < 0)
                        return -ENOMEM;
                rec->format = DISK_FORMAT_QCOW2;
        }
        if (p->n_disks == 0) {
                *ret_message = strprintf("Snapshot '%s' holds no external disk.", s->def->name);
                return -ESTALE;
        }
        if (p->memory) {
                if (!s->def->memory_file || access(s->def->memory_file, R_OK) < 0) {
                        *ret_message = strprintf("The memory state %s of snapshot '%s' is missing.",
                                                 strna(s->def->memory_file), s->def->name);
                        return -ESTALE;
                }
                /* QEMU reads it (exec:cat): a FIFO would hang the load. */
                r = image_check_regular(s->def->memory_file, "The memory state file", ret_message);
                if (r < 0)
                        return r;
                p->memory_file = strdup(s->def->memory_file);
                if (!p->memory_file)
                        return -ENOMEM;
        }
        return 0;
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
                return -EINVAL;
        }
        if ((flags & SNAPSHOT_REVERT_RUNNING) && (flags & SNAPSHOT_REVERT_PAUSED)) {
                *ret_message = strdup("RUNNING and PAUSED exclude each other.");
                return -EINVAL;
        }
        if (domain_is_busy(d) || d->graph_busy) {
                *ret_message = strprintf("Domain '%s' is busy with another operation; try again after it.", d->def->name);
                return -EBUSY;
        }
        for (size_t i = 0; i < now->n_disks; i++) {
                Job *j = domain_disk_job(d, now->disks[i].target);
                if (j) {
                        *ret_message = strprintf("Disk %s is busy with block job %s; a revert would pull the files from "
                                                 "under it.", now->disks[i].target, j->id);
                        return -EBUSY;
                }
        }
        if (d->state == DOMAIN_CRASHED) {
                *ret_message = strprintf("Domain '%s' crashed; stop it first.", d->def->name);
                return -ESTALE;
        }
        if (snapshot_kind(s) == SNAPSHOT_KIND_MIXED) {
                *ret_message = strprintf("Snapshot '%s' mixes internal and external parts; qsnapd cannot revert it.",
                                         s->def->name);
                return -EOPNOTSUPP;
        }
        if (!have_record && !(flags & SNAPSHOT_REVERT_FORCE)) {
                *ret_message = strprintf("Snapshot '%s' has no recorded domain definition, so qsnapd cannot prove the "
                                         "current one fits it; FORCE reverts with the current definition.", s->def->name);
                return -ESTALE;
        }

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
                        return -ESTALE;
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
        if (r < 0)
                return r;

        if (active) {
                _cleanup_free_ char *why = definition_difference(now, p->new_def);

                if (!p->memory && !(flags & SNAPSHOT_REVERT_FORCE)) {
                        *ret_message = strprintf("Domain '%s' is %s and snapshot '%s' has no memory state: reverting "
                                                 "throws the running state away. Use FORCE to do so, or stop the "
                                                 "domain first.", d->def->name, domain_state_to_string(d->state),
                                                 s->def->name);
                        return -ESTALE;
                }
                if (p->memory && why && !(flags & SNAPSHOT_REVERT_FORCE)) {
                        *ret_message = strprintf("Snapshot '%s' was taken of a different configuration (%s); the running "
                                                 "QEMU cannot take its state. FORCE restarts QEMU with the recorded "
                                                 "definition.", s->def->name, why);
                        return -ESTALE;
                }
                /* Internal memory into the same configuration: in place. */
                p->live_load = p->memory && !p->external && !why;
                p->stop_first = !p->live_load;
        }
        if (!domain_is_managed(d) && (p->stop_first || p->after != DOMAIN_SHUTOFF || p->external) && !p->live_load) {
                *ret_message = strprintf("Domain '%s' runs a QEMU started elsewhere; qsnapd can only revert it in place "
                                         "to an internal snapshot with memory.", d->def->name);
                return -EOPNOTSUPP;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

/* ---- intent journal ---- */

#define INTENT_KIND "snapshot-revert"

static int intent_write(RevertPlan *p) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *disks = json_object_new_array();
        int r;

        if (!o || !disks) {
                json_object_put(disks);
                return -ENOMEM;
        }
        json_object_object_add(o, "snapshot", json_object_new_string(p->name));
        json_object_object_add(o, "external", json_object_new_boolean(p->external));
        json_object_object_add(o, "memory", json_object_new_boolean(p->memory));
        json_object_object_add(o, "after", json_object_new_string(domain_state_to_string(p->after)));
        json_object_object_add(o, "loaded", json_object_new_boolean(p->loaded));
        /* QEMU was (re)started for the load: one that loaded nothing is of no use. */
        json_object_object_add(o, "restarted", json_object_new_boolean(!p->live_load));
        if (p->memory_file)
                json_object_object_add(o, "memory_file", json_object_new_string(p->memory_file));
        for (size_t i = 0; i < p->n_disks; i++) {
                json_object *e = json_object_new_object();

                if (!e)
                        return -ENOMEM;
                json_object_object_add(e, "target", json_object_new_string(p->disks[i].target));
                json_object_object_add(e, "file", json_object_new_string(p->disks[i].file));
                if (p->disks[i].overlay)
                        json_object_object_add(e, "overlay", json_object_new_string(p->disks[i].overlay));
                json_object_array_add(disks, e);
        }
        json_object_object_add(o, "disks", disks);
        r = op_journal_write(p->domain->manager->config.state_dir, p->domain->def->uuid, INTENT_KIND, o);
        if (r >= 0)
                p->intent_written = true;
        return r;
}

static void intent_remove(Domain *d) {
        op_journal_remove(d->manager->config.state_dir, d->def->uuid, INTENT_KIND);
}

/* ---- execution ---- */

static void revert_reply(RevertPlan *p, int error, const char *message) {
        Domain *d = p->domain;

        if (p->intent_written)
                intent_remove(d);
        d->snapshot_busy = false;
        if (p->done)
                p->done(d, error, message, p->userdata);
        manager_busy_unref(d->manager);
        revert_plan_free(p);
        domain_unref(d);
}

/* Puts the stored definition back and removes the new overlays: only
 * while no QEMU runs on them. */
static void revert_roll_back_files(RevertPlan *p) {
        Domain *d = p->domain;

        if (p->def_switched && !domain_is_active(d)) {
                DomainDef *old = NULL;

                if (domain_def_copy(p->old_def, &old) >= 0) {
                        domain_set_def(d, old);
                        if (domain_save(d) < 0)
                                log_error("Domain '%s': cannot store its definition back.", d->def->name);
                        p->def_switched = false;
                        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
                }
        }
        if (p->def_switched)
                return;
        for (size_t i = 0; i < p->n_disks; i++)
                if (p->disks[i].created && unlink(p->disks[i].overlay) >= 0)
                        log_debug("Removed overlay %s of the failed revert.", p->disks[i].overlay);
}

static void revert_fail(RevertPlan *p, int error, const char *fmt, ...) _printf_(3, 4);
static void revert_fail(RevertPlan *p, int error, const char *fmt, ...) {
        _cleanup_free_ char *message = NULL;
        va_list ap;

        va_start(ap, fmt);
        if (vasprintf(&message, fmt, ap) < 0)
                message = NULL;
        va_end(ap);
        revert_roll_back_files(p);
        log_warning("Domain '%s': revert to snapshot '%s' failed: %s", p->domain->def->name, p->name, strna(message));
        revert_reply(p, error, message);
}

static bool in_revert_disks(SnapshotTree *t, const char *file) {
        for (Snapshot *o = t->first; o; o = o->next)
                for (size_t i = 0; i < o->def->n_revert_disks; i++)
                        if (streq_ptr(o->def->revert_disks[i].source, file))
                                return true;
        return false;
}

/* Overlays an earlier revert made that this one leaves behind: the ones
 * the domain ran on, and the ones s's <revertDisks> named until now. Only
 * files qsnapd made for a revert, never an image the user brought. */
static int revert_discarded_overlays(RevertPlan *p, Snapshot *s, char ***ret) {
        _cleanup_strv_free_ char **l = NULL;

        for (size_t i = 0; i < p->old_def->n_disks; i++) {
                const char *f = p->old_def->disks[i].source;

                if (f && in_revert_disks(&p->domain->snapshots, f) && !strv_contains((const char *const *) l, f) &&
                    strv_extend(&l, f) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < s->def->n_revert_disks; i++) {
                const char *f = s->def->revert_disks[i].source;

                if (f && !strv_contains((const char *const *) l, f) && strv_extend(&l, f) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(l);
        return 0;
}

/* The domain is in its new state: the metadata says so too. Overlays of
 * an earlier revert that nothing names any more go (libvirt removes them
 * too), so that revert loops do not fill the disk. */
static void revert_finish(RevertPlan *p) {
        Domain *d = p->domain;
        Snapshot *s = snapshot_tree_find(&d->snapshots, p->name);
        _cleanup_strv_free_ char **discarded = NULL;
        int r;

        if (!s)
                return revert_fail(p, -ESTALE, "Snapshot '%s' went away during the revert.", p->name);
        if (p->external && revert_discarded_overlays(p, s, &discarded) < 0)
                log_oom(); /* they stay */
        if (p->external) {
                _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
                SnapshotDisk rd[p->n_disks ?: 1];

                for (size_t i = 0; i < p->n_disks; i++)
                        rd[i] = (SnapshotDisk) { .name = p->disks[i].target, .snapshot = SNAPSHOT_LOCATION_EXTERNAL,
                                                 .format = DISK_FORMAT_QCOW2, .source = p->disks[i].overlay };
                r = snapshot_def_copy(s->def, &def);
                if (r >= 0)
                        r = snapshot_def_set_revert_disks(def, rd, p->n_disks);
                if (r >= 0)
                        r = snapshot_tree_update(&d->snapshots, s, TAKE_PTR(def), true);
        } else
                r = snapshot_tree_set_current(&d->snapshots, s);
        if (r < 0)
                log_error_errno(r, "Domain '%s': reverted to '%s', but the metadata could not be stored: %m",
                                d->def->name, p->name);
        crash_point("revert:metadata");
        if (r >= 0 && discarded)
                domain_remove_unreferenced_files(d, discarded);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_CURRENT_SNAPSHOT);
        log_info("Domain '%s': reverted to snapshot '%s', now %s.", d->def->name, p->name,
                 domain_state_to_string(d->state));
        revert_reply(p, r < 0 ? r : 0, r < 0 ? "Reverted, but the snapshot metadata could not be stored." : NULL);
}

static void on_started(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0)
                return revert_fail(p, error, "%s", strna(message));
        crash_point("revert:started");
        revert_finish(p);
}

/* QEMU was started for the memory state and asked to load it. */
static void on_incoming_sent(Domain *d, void *userdata) {
        crash_point("revert:incoming");
}

static int revert_start(RevertPlan *p, bool paused, DomainDoneFunc done) {
        _cleanup_free_ char *message = NULL, *quoted = NULL, *uri = NULL;
        Domain *d = p->domain;
        uint64_t flags = paused ? DOMAIN_START_PAUSED : 0;
        int r;

        /* Our own lifecycle call: the snapshot lock is ours already. */
        d->snapshot_busy = false;
        if (p->external && p->memory) {
                quoted = shell_quote(p->memory_file);
                uri = quoted ? strjoin("exec:cat ", quoted) : NULL;
                r = uri ? domain_start_incoming(d, flags, uri, on_incoming_sent, done, p, &message) : -ENOMEM;
        } else
                r = domain_start(d, flags, done, p, &message);
        d->snapshot_busy = true;
        if (r < 0)
                revert_fail(p, r, "Cannot start domain '%s': %s", d->def->name, strna(message));
        return r;
}

/* ---- internal with memory: snapshot-load ---- */

static void load_after_state(RevertPlan *p);

static void on_state_set(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0)
                return revert_fail(p, -EIO, "QEMU did not take the state after the revert: %s", strna(desc));
        if (p->after == DOMAIN_RUNNING)
                domain_note_running(p->domain);
        else
                domain_note_paused(p->domain);
        revert_finish(p);
}

static void load_after_state(RevertPlan *p) {
        Domain *d = p->domain;
        int64_t r = 0;

        crash_point("revert:loaded");
        if (p->after == DOMAIN_RUNNING)
                r = qmp_cmd_cont(d->qmp, on_state_set, p);
        else
                r = qmp_cmd_stop(d->qmp, on_state_set, p);
        if (r < 0)
                revert_fail(p, -EIO, "Cannot send the state change to QEMU.");
}

static void on_load_failed_stopped(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        RevertPlan *p = userdata;
        _cleanup_free_ char *m = TAKE_PTR(p->message);

        revert_fail(p, p->error, "%s The guest's state was undefined, so QEMU was stopped: domain '%s' is shut off.",
                    strna(m), d->def->name);
}

/* A failed load leaves QEMU stopped in restore-vm with a guest half
 * loaded: it is stopped, the domain shut off, and QEMU's text reported. */
static void load_failed(RevertPlan *p, const char *why) {
        _cleanup_free_ char *message = NULL;
        Domain *d = p->domain;
        int r;

        p->error = -EIO;
        p->message = strprintf("QEMU could not load snapshot '%s': %s.", p->name, strna(why));
        if (!domain_is_active(d))
                return on_load_failed_stopped(d, 0, NULL, NULL, p);
        d->snapshot_busy = false;
        r = domain_stop(d, 0, on_load_failed_stopped, p, &message);
        d->snapshot_busy = true;
        if (r < 0)
                on_load_failed_stopped(d, r, message, NULL, p);
}

static int on_load_poll(sd_event_source *s, uint64_t usec, void *userdata);

static void on_load_dismissed(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        RevertPlan *p = userdata;
        _cleanup_free_ char *why = TAKE_PTR(p->message);

        if (why)
                return load_failed(p, why);
        /* A restarted qsnapd must know the guest runs the snapshot now. */
        p->loaded = true;
        if (intent_write(p) < 0)
                log_warning("Domain '%s': cannot journal the finished load.", p->domain->def->name);
        load_after_state(p);
}

static void on_load_jobs(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        RevertPlan *p = userdata;
        QmpJobInfo info;
        int r;

        if (error < 0)
                return load_failed(p, desc ?: "the monitor connection went away");
        r = qmp_parse_query_jobs(result, p->job_id, &info);
        if (r <= 0)
                return load_failed(p, "the snapshot-load job vanished");
        if (!streq(info.status, "concluded")) {
                if (now_usec(CLOCK_MONOTONIC) > p->deadline)
                        return load_failed(p, "it took too long");
                (void) sd_event_source_set_time_relative(p->timer, LOAD_POLL_USEC);
                (void) sd_event_source_set_enabled(p->timer, SD_EVENT_ONESHOT);
                return;
        }
        if (info.error)
                p->message = strdup(info.error);
        if (qmp_cmd_job_dismiss(qmp, p->job_id, on_load_dismissed, p) < 0)
                load_failed(p, "cannot dismiss the job");
}

static int on_load_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        RevertPlan *p = userdata;

        if (!p->domain->qmp || qmp_cmd_query_jobs(p->domain->qmp, on_load_jobs, p) < 0)
                load_failed(p, "cannot send query-jobs");
        return 0;
}

static void on_snapshot_load(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        RevertPlan *p = userdata;
        int r;

        if (error < 0)
                return revert_fail(p, -EIO, "QEMU cannot start loading snapshot '%s': %s", p->name, strna(desc));
        p->deadline = now_usec(CLOCK_MONOTONIC) + LOAD_TIMEOUT_USEC;
        r = sd_event_add_time_relative(p->domain->manager->event, &p->timer, CLOCK_MONOTONIC, LOAD_POLL_USEC, 0,
                                       on_load_poll, p);
        if (r < 0)
                load_failed(p, "cannot arm a timer");
}

static void load_send(RevertPlan *p) {
        const char *devices[p->n_disks ?: 1];

        for (size_t i = 0; i < p->n_disks; i++)
                devices[i] = p->disks[i].node;
        if (p->n_disks == 0)
                return revert_fail(p, -EOPNOTSUPP, "Snapshot '%s' has no disk to load its memory state from.", p->name);
        p->job_id = strprintf("qsnap-load-%" PRIx64, now_usec(CLOCK_MONOTONIC));
        if (!p->job_id)
                return revert_fail(p, -ENOMEM, "Out of memory.");
        crash_point("revert:load");
        if (qmp_cmd_snapshot_load(p->domain->qmp, p->job_id, p->name, devices[0], devices, p->n_disks, on_snapshot_load,
                                  p) < 0)
                revert_fail(p, -EIO, "Cannot send snapshot-load.");
}

typedef struct NodeCall {
        RevertPlan *plan;
        RevertDisk *disk;
} NodeCall;

static void on_root_node(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        NodeCall *c = userdata;
        RevertPlan *p = c->plan;
        const char *node;

        if (error < 0 || qmp_parse_string(result, &node) < 0 || isempty(node)) {
                if (p->error == 0) {
                        p->error = -EIO;
                        p->message = strprintf("QEMU shows no block node for disk %s: %s", c->disk->target, strna(desc));
                }
        } else if (!(c->disk->node = strdup(node)) && p->error == 0)
                p->error = -ENOMEM;
        free(c);
        if (--p->pending > 0)
                return;
        if (p->error < 0) {
                _cleanup_free_ char *m = TAKE_PTR(p->message);
                return revert_fail(p, p->error, "%s", strna(m));
        }
        load_send(p);
}

static void load_begin(RevertPlan *p) {
        Domain *d = p->domain;

        if (!d->qmp)
                return revert_fail(p, -ESRCH, "Domain '%s' has no monitor connection.", d->def->name);
        for (size_t i = 0; i < p->n_disks; i++) {
                NodeCall *c = new0(NodeCall, 1);

                if (!c || qmp_cmd_disk_root_node(d->qmp, p->disks[i].target, on_root_node, c) < 0) {
                        free(c);
                        p->error = -EIO;
                        p->message = strdup("Cannot send qom-get.");
                        break;
                }
                *c = (NodeCall) { .plan = p, .disk = p->disks + i };
                p->pending++;
        }
        if (p->pending == 0) {
                _cleanup_free_ char *m = TAKE_PTR(p->message);
                revert_fail(p, p->error ?: -EIO, "%s", m ?: "No disk to load from.");
        }
}

static void on_started_for_load(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0)
                return revert_fail(p, error, "%s", strna(message));
        load_begin(p);
}

/* ---- the steps ---- */

static int run_qemu_img_apply(const char *tag, const char *file, char **ret_output) {
        char *argv[] = { (char *) QEMU_IMG_BINARY, (char *) "snapshot", (char *) "-a", (char *) tag, (char *) file, NULL };
        int r = run_command(argv, ret_output);
        return r == 0 ? 0 : r < 0 ? r : -EIO;
}

static int switch_definition(RevertPlan *p) {
        Domain *d = p->domain;
        DomainDef *def = NULL;
        int r;

        r = domain_def_copy(p->new_def, &def);
        if (r < 0)
                return r;
        domain_set_def(d, def);
        p->def_switched = true;
        r = domain_save(d);
        if (r < 0)
                return r;
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
        crash_point("revert:switched");
        return 0;
}

/* QEMU is gone (or was never there, or stays for a live load). */
static void revert_offline_steps(RevertPlan *p) {
        int r;

        if (p->external) {
                for (size_t i = 0; i < p->n_disks; i++) {
                        RevertDisk *rd = p->disks + i;
                        _cleanup_free_ char *output = NULL;

                        r = image_create_overlay(rd->overlay, rd->file, rd->format, &output);
                        if (r < 0)
                                return revert_fail(p, IN_SET(r, -EEXIST, -ELOOP, -EROFS, -EACCES, -EPERM) ? -EXDEV
                                                                                                   : r == -ENOSPC ? -ENOSPC : -EIO,
                                                   "Cannot create overlay %s for disk %s: %s", rd->overlay, rd->target,
                                                   output ?: strerror(-r));
                        rd->created = true;
                        log_debug("Domain '%s': overlay %s on %s for the revert.", p->domain->def->name, rd->overlay,
                                  rd->file);
                }
                crash_point("revert:overlays");
        } else if (!p->memory) {
                for (size_t i = 0; i < p->n_disks; i++) {
                        _cleanup_free_ char *output = NULL;

                        r = run_qemu_img_apply(p->name, p->disks[i].file, &output);
                        if (r < 0)
                                return revert_fail(p, -EIO, "qemu-img snapshot -a %s %s failed: %s", p->name,
                                                   p->disks[i].file, strna(output));
                }
                crash_point("revert:applied");
        }

        if (!p->live_load) {
                r = switch_definition(p);
                if (r < 0)
                        return revert_fail(p, r, "Cannot store the reverted definition of domain '%s'.",
                                           p->domain->def->name);
        }

        if (p->live_load)
                return load_begin(p);
        if (!p->external && p->memory)
                (void) revert_start(p, true, on_started_for_load);
        else if (p->after != DOMAIN_SHUTOFF)
                (void) revert_start(p, p->after == DOMAIN_PAUSED, on_started);
        else
                revert_finish(p);
}

static void on_stopped(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        RevertPlan *p = userdata;

        if (error < 0 || domain_is_active(d))
                return revert_fail(p, error < 0 ? error : -EIO, "Cannot stop domain '%s' for the revert: %s", d->def->name,
                                   strna(message));
        crash_point("revert:stopped");
        revert_offline_steps(p);
}

static int on_revert_start(sd_event_source *s, void *userdata) {
        RevertPlan *p = userdata;
        _cleanup_free_ char *message = NULL;
        Domain *d = p->domain;
        int r;

        p->defer = sd_event_source_disable_unref(p->defer);
        r = intent_write(p);
        if (r < 0)
                return revert_fail(p, r, "Cannot record the revert's intent: %s", strerror(-r)), 0;
        crash_point("revert:intent");
        if (!p->stop_first || !domain_is_active(d)) {
                revert_offline_steps(p);
                return 0;
        }
        d->snapshot_busy = false;
        r = domain_stop(d, 0, on_stopped, p, &message);
        d->snapshot_busy = true;
        if (r < 0)
                revert_fail(p, r, "Cannot stop domain '%s' for the revert: %s", d->def->name, strna(message));
        return 0;
}

int snapshot_revert(RevertPlan *plan, RevertDoneFunc done, void *userdata, char **ret_message) {
        _cleanup_(revert_plan_freep) RevertPlan *p = plan;
        Domain *d = p->domain;
        int r;

        if (domain_is_busy(d)) {
                *ret_message = strprintf("Domain '%s' is busy with another operation.", d->def->name);
                return -EBUSY;
        }
        /* Started from the loop, so `done` is never called from in here. */
        r = sd_event_add_defer(d->manager->event, &p->defer, on_revert_start, p);
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
        bool stop_qemu;     /* a QEMU that cannot be trusted goes once the attach is done */
        sd_event_source *timer;
        uint64_t deadline;
        bool incoming_sent;
        DomainDoneFunc done;
        void *userdata;
} Recovery;


static void recovery_end(Recovery *rc) {
        Domain *d = rc->domain;

        intent_remove(d);
        if (rc->done)
                rc->done(d, 0, NULL, NULL, rc->userdata);
        if (rc->stop_qemu && domain_is_active(d)) {
                _cleanup_free_ char *message = NULL;

                if (domain_stop(d, 0, NULL, NULL, &message) < 0)
                        log_warning("Domain '%s': cannot stop QEMU: %s", d->def->name, strna(message));
        }
        json_object_put(rc->intent);
        sd_event_source_disable_unref(rc->timer);
        domain_unref(d);
        free(rc);
}

static void recovery_set_current(Recovery *rc, bool record_overlays) {
        Domain *d = rc->domain;
        const char *name = json_get_string(rc->intent, "snapshot");
        Snapshot *s = name ? snapshot_tree_find(&d->snapshots, name) : NULL;
        json_object *disks = NULL;
        size_t n = json_get_array(rc->intent, "disks", &disks);
        int r;

        if (!s)
                return;
        if (record_overlays) {
                _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
                SnapshotDisk rd[n ?: 1];

                for (size_t i = 0; i < n; i++) {
                        json_object *e = json_object_array_get_idx(disks, i);
                        rd[i] = (SnapshotDisk) { .name = (char *) json_get_string(e, "target"), .snapshot = SNAPSHOT_LOCATION_EXTERNAL,
                                                 .format = DISK_FORMAT_QCOW2, .source = (char *) json_get_string(e, "overlay") };
                }
                r = snapshot_def_copy(s->def, &def);
                if (r >= 0)
                        r = snapshot_def_set_revert_disks(def, rd, n);
                if (r >= 0)
                        r = snapshot_tree_update(&d->snapshots, s, TAKE_PTR(def), true);
        } else
                r = snapshot_tree_set_current(&d->snapshots, s);
        if (r < 0)
                log_error_errno(r, "Domain '%s': cannot record the reverted snapshot '%s': %m", d->def->name, name);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_CURRENT_SNAPSHOT);
}

/* A QEMU that cannot be trusted (a load cut short) is stopped once the
 * attach call that runs the recovery is over. */
static void recovery_stop_qemu(Recovery *rc, const char *why) {
        log_notice("Domain '%s': %s; stopping its QEMU (the domain ends shut off).", rc->domain->def->name, why);
        rc->stop_qemu = true;
        recovery_end(rc);
}

static int on_recovery_poll(sd_event_source *s, uint64_t usec, void *userdata);

static void on_recovery_migrate(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                                void *userdata) {
        Recovery *rc = userdata;
        const char *status = NULL, *err;

        if (error >= 0)
                (void) qmp_parse_query_migrate(result, &status, &err);
        if (status && streq(status, "completed")) {
                const char *after = json_get_string(rc->intent, "after");
                bool run = after && streq(after, "running") && rc->domain->state == DOMAIN_PAUSED;

                /* The state asked for; the RESUME event updates State. */
                if (run)
                        (void) qmp_cmd_cont(qmp, NULL, NULL);
                log_notice("Domain '%s': the interrupted revert had loaded the memory state; the guest %s.",
                           rc->domain->def->name, run ? "runs again" : "stays as it is");
                return recovery_end(rc);
        }
        /* Started with -incoming defer, but migrate-incoming never arrived:
         * send it now and finish the load. */
        if (status && streq(status, "none") && !rc->incoming_sent && json_get_string(rc->intent, "memory_file")) {
                _cleanup_free_ char *quoted = shell_quote(json_get_string(rc->intent, "memory_file"));
                _cleanup_free_ char *uri = quoted ? strjoin("exec:cat ", quoted) : NULL;

                rc->incoming_sent = true;
                if (uri && qmp_cmd_migrate_incoming(qmp, uri, NULL, NULL) >= 0) {
                        log_notice("Domain '%s': loading the memory state the interrupted revert had not asked for yet.",
                                   rc->domain->def->name);
                        status = "setup";
                }
        }
        /* Still loading: wait for it, within reason. */
        if (status && STR_IN_SET(status, "setup", "active", "device") && now_usec(CLOCK_MONOTONIC) < rc->deadline &&
            sd_event_add_time_relative(rc->domain->manager->event, &rc->timer, CLOCK_MONOTONIC, 100 * USEC_PER_MSEC, 0,
                                       on_recovery_poll, rc) >= 0)
                return;
        log_debug("Domain '%s': migration status %s (%s).", rc->domain->def->name, strna(status), strna(desc));
        recovery_stop_qemu(rc, "the memory state of the interrupted revert was not loaded completely");
}

static int on_recovery_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        Recovery *rc = userdata;

        rc->timer = sd_event_source_disable_unref(rc->timer);
        if (!rc->domain->qmp || qmp_cmd_query_migrate(rc->domain->qmp, on_recovery_migrate, rc) < 0)
                recovery_stop_qemu(rc, "the memory state of the interrupted revert cannot be checked");
        return 0;
}

/* The load is done: the state the revert asked for (the RESUME/STOP
 * events update State). */
static void recovery_apply_after(Recovery *rc) {
        Domain *d = rc->domain;
        const char *after = json_get_string(rc->intent, "after");

        if (!d->qmp || !after)
                return;
        if (streq(after, "running") && d->state == DOMAIN_PAUSED)
                (void) qmp_cmd_cont(d->qmp, NULL, NULL);
        else if (streq(after, "paused") && d->state == DOMAIN_RUNNING)
                (void) qmp_cmd_stop(d->qmp, NULL, NULL);
}

static void on_recovery_jobs(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        Recovery *rc = userdata;
        _cleanup_free_ QmpJobInfo *jobs = NULL;
        size_t n = 0;
        bool ok = false, seen = false;

        if (error >= 0 && qmp_parse_query_jobs_all(result, &jobs, &n) >= 0)
                for (size_t i = 0; i < n; i++) {
                        if (!jobs[i].id || strncmp(jobs[i].id, "qsnap-load-", STRLEN("qsnap-load-")) != 0)
                                continue;
                        seen = true;
                        ok = streq(jobs[i].status, "concluded") && !jobs[i].error;
                        if (streq(jobs[i].status, "concluded"))
                                (void) qmp_cmd_job_dismiss(qmp, jobs[i].id, NULL, NULL);
                }
        if (seen && ok) {
                recovery_set_current(rc, false);
                recovery_apply_after(rc);
                log_notice("Domain '%s': finished an interrupted revert (the snapshot was loaded).", rc->domain->def->name);
                return recovery_end(rc);
        }
        if (!seen && json_get_bool(rc->intent, "restarted"))
                return recovery_stop_qemu(rc, "the QEMU started for the interrupted revert had not loaded the snapshot");
        if (!seen) {
                log_notice("Domain '%s': rolled back an interrupted revert that had not loaded anything yet.",
                           rc->domain->def->name);
                return recovery_end(rc);
        }
        recovery_stop_qemu(rc, "the snapshot load of the interrupted revert did not finish");
}

static int snapshot_revert_recover(Domain *d, DomainDoneFunc done, void *userdata) {
        json_object *intent = NULL, *disks = NULL;
        bool external, memory, switched = true, any = false;
        Recovery *rc;
        size_t n;
        int r;

        r = op_journal_read(d->manager->config.state_dir, d->def->uuid, INTENT_KIND, &intent);
        if (r == 0 || (r < 0 && r != -EBADMSG))
                return r;
        rc = new0(Recovery, 1);
        if (!rc) {
                json_object_put(intent);
                return -ENOMEM;
        }
        *rc = (Recovery) { .domain = domain_ref(d), .intent = intent, .done = done, .userdata = userdata };
        if (!rc->intent) {
                /* Unreadable (logged): it goes. */
                recovery_end(rc);
                return 1;
        }
        external = json_get_bool(rc->intent, "external");
        memory = json_get_bool(rc->intent, "memory");
        n = json_get_array(rc->intent, "disks", &disks);
        log_notice("Domain '%s': a revert to snapshot '%s' was interrupted; checking how far it got.", d->def->name,
                   strna(json_get_string(rc->intent, "snapshot")));

        if (external) {
                /* Switched: the stored definition runs on the new overlays. */
                for (size_t i = 0; i < n; i++) {
                        json_object *e = json_object_array_get_idx(disks, i);
                        const char *target = json_get_string(e, "target"), *overlay = json_get_string(e, "overlay");
                        const DomainDisk *disk = target ? domain_def_find_disk(d->def, target) : NULL;

                        any = true;
                        if (!disk || !overlay || !streq(disk->source, overlay))
                                switched = false;
                }
                if (!any || !switched) {
                        for (size_t i = 0; i < n; i++) {
                                const char *overlay = json_get_string(json_object_array_get_idx(disks, i), "overlay");
                                bool used = false;

                                for (size_t k = 0; overlay && k < d->def->n_disks; k++)
                                        used = used || streq(d->def->disks[k].source, overlay);
                                if (overlay && !used && unlink(overlay) >= 0)
                                        log_info("Domain '%s': removed overlay %s of the interrupted revert.",
                                                 d->def->name, overlay);
                        }
                        log_notice("Domain '%s': rolled back a revert interrupted before the definition was switched "
                                   "(the domain keeps its disks; it is %s).", d->def->name,
                                   domain_state_to_string(d->state));
                        recovery_end(rc);
                        return 1;
                }
                recovery_set_current(rc, true);
                log_notice("Domain '%s': finished a revert interrupted after the definition was switched (the "
                           "domain is %s).", d->def->name, domain_state_to_string(d->state));
                rc->deadline = now_usec(CLOCK_MONOTONIC) + 30 * USEC_PER_SEC;
                if (memory && d->qmp && domain_is_active(d) &&
                    qmp_cmd_query_migrate(d->qmp, on_recovery_migrate, rc) >= 0)
                        return 1;
                recovery_end(rc);
                return 1;
        }

        /* Internal. */
        if (memory && json_get_bool(rc->intent, "loaded")) {
                recovery_set_current(rc, false);
                recovery_apply_after(rc);
                log_notice("Domain '%s': finished an interrupted revert (the snapshot was loaded already).",
                           d->def->name);
                recovery_end(rc);
                return 1;
        }
        if (memory) {
                if (d->qmp && domain_is_active(d) && qmp_cmd_query_jobs(d->qmp, on_recovery_jobs, rc) >= 0)
                        return 1;
                log_notice("Domain '%s': rolled back an interrupted revert (no QEMU had loaded the snapshot).",
                           d->def->name);
                recovery_end(rc);
                return 1;
        }
        if (domain_is_active(d)) {
                log_notice("Domain '%s': rolled back a revert interrupted before QEMU was stopped (nothing changed).",
                           d->def->name);
                recovery_end(rc);
                return 1;
        }
        /* QEMU is gone: applying the snapshot again is harmless and finishes it. */
        for (size_t i = 0; i < n; i++) {
                const char *file = json_get_string(json_object_array_get_idx(disks, i), "file");
                _cleanup_free_ char *output = NULL;

                if (file && run_qemu_img_apply(json_get_string(rc->intent, "snapshot"), file, &output) < 0)
                        log_error("Domain '%s': qemu-img snapshot -a on %s failed: %s", d->def->name, file,
                                  strna(output));
        }
        recovery_set_current(rc, false);
        log_notice("Domain '%s': finished an interrupted revert to internal snapshot '%s' (shut off).", d->def->name,
                   strna(json_get_string(rc->intent, "snapshot")));
        recovery_end(rc);
        return 1;
}

const OperationKind snapshot_revert_kind = {
        .name = INTENT_KIND,
        .recover = snapshot_revert_recover,
};
