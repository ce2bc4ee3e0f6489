/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Which files of a domain are still referenced, and by whom, for every
 * operation that merges, commits or discards image files: what a snapshot
 * recorded, the file graph of one disk (every file the domain or any
 * snapshot names, with its backing file, and the foreign images beside
 * them), the one metadata transaction that drops snapshots and renames
 * recorded files, and the removal of files nothing references any more.
 * No D-Bus in here.
 */
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/disk.h"
#include "core/files.h"
#include "core/gate.h"
#include "core/manager.h"
#include "util/fs.h"
#include "util/util.h"

/* ---- what the metadata records ---- */

/* The source of disk `target` in the <domain> the snapshot recorded. */
char *snapshot_recorded_source(const SnapshotDef *def, const char *target) {
        _cleanup_free_ char *error = NULL;
        DomainDef *dd = NULL;
        DomainDisk *disk;
        char *r = NULL;

        if (!def->domain_xml || domain_def_parse(def->domain_xml, strlen(def->domain_xml), &dd, &error) < 0)
                return NULL;
        disk = domain_def_find_disk(dd, target);
        if (disk && disk->source)
                r = strdup(disk->source);
        domain_def_free(dd);
        return r;
}

DiskFormat snapshot_recorded_format(const SnapshotDef *def, const char *target) {
        _cleanup_free_ char *error = NULL;
        DomainDef *dd = NULL;
        DomainDisk *disk;
        DiskFormat f = DISK_FORMAT_QCOW2;

        if (!def->domain_xml || domain_def_parse(def->domain_xml, strlen(def->domain_xml), &dd, &error) < 0)
                return f;
        disk = domain_def_find_disk(dd, target);
        if (disk)
                f = disk->format;
        domain_def_free(dd);
        return f;
}

/* A disk of a snapshot's XML, by target name. */
const SnapshotDisk *snapshot_def_find_disk(const SnapshotDef *def, const char *target) {
        for (size_t i = 0; i < def->n_disks; i++)
                if (streq(def->disks[i].name, target))
                        return def->disks + i;
        return NULL;
}

/* Whether a snapshot other than `except` (and not in `skip`) names `file`
 * for disk `target`: as its overlay, as its recorded source, or in
 * <revertDisks>. */
static bool file_referenced(SnapshotTree *t, Snapshot *const *skip, size_t n_skip, const char *target, const char *file,
                            bool recorded_too) {
        for (Snapshot *s = t->first; s; s = s->next) {
                const SnapshotDisk *sd;
                bool skipped = false;

                for (size_t i = 0; i < n_skip; i++)
                        skipped = skipped || skip[i] == s;
                if (skipped)
                        continue;
                sd = snapshot_def_find_disk(s->def, target);
                if (sd && streq_ptr(sd->source, file))
                        return true;
                for (size_t i = 0; i < s->def->n_revert_disks; i++)
                        if (streq_ptr(s->def->revert_disks[i].source, file))
                                return true;
                if (recorded_too) {
                        _cleanup_free_ char *src = snapshot_recorded_source(s->def, target);
                        if (streq_ptr(src, file))
                                return true;
                }
        }
        return false;
}

char *file_dir_of(const char *file) {
        const char *slash = strrchr(file, '/');
        return slash ? strndup(file, slash == file ? 1 : (size_t) (slash - file)) : strdup(".");
}

static void closedirp(DIR **d) {
        if (*d)
                closedir(*d);
}

/* ---- the files of one disk, and who is based on whom ---- */

void file_graph_done(FileGraph *g) {
        strv_free(g->foreign);
        strv_free(g->foreign_backings);
        strv_free(g->files);
        strv_free(g->backings);
        free(g->formats);
        *g = (FileGraph) {};
}

ssize_t file_graph_find(const FileGraph *g, const char *file) {
        for (size_t i = 0; i < g->n; i++)
                if (streq(g->files[i], file))
                        return (ssize_t) i;
        return -1;
}

static int file_graph_add_chain(Domain *d, FileGraph *g, const char *top, DiskFormat format) {
        _cleanup_free_ char *why = NULL;
        ImageChain c = {};
        int r;

        if (!top || file_graph_find(g, top) >= 0 || access(top, F_OK) < 0)
                return 0;
        /* Through the gate: a backing file outside the domain's folders is
         * no file of ours (never merged into, rebased or removed). */
        r = gate_read_chain(d, top, format, &c, &why);
        if (r < 0) {
                /* An unreadable file is nobody's backing — but what it
                 * reads is unknown: the caller decides whether that may
                 * matter (g->unreadable). */
                log_debug("Cannot read the chain of %s: %s", top, why ?: qsnap_strerror(r));
                g->unreadable = true;
                return 0;
        }
        for (size_t i = 0; i < c.n_layers; i++) {
                DiskFormat *f;

                if (file_graph_find(g, c.layers[i].path) >= 0)
                        break;
                f = reallocarray(g->formats, g->n + 1, sizeof(DiskFormat));
                if (!f) {
                        r = -ENOMEM;
                        break;
                }
                g->formats = f;
                g->formats[g->n] = c.layers[i].format;
                if (strv_extend(&g->files, c.layers[i].path) < 0 ||
                    strv_extend(&g->backings, i + 1 < c.n_layers ? c.layers[i + 1].path : "") < 0) {
                        r = -ENOMEM;
                        break;
                }
                g->n++;
                r = 0;
        }
        image_chain_done(&c);
        return r < 0 ? r : 0;
}

/* Every file of disk `target` that the domain or any snapshot names, with
 * its chain. */
int file_graph_build(Domain *d, const char *target, FileGraph *g) {
        const DomainDef *defs[2] = { domain_current_def(d), d->def };
        int r;

        for (size_t k = 0; k < 2; k++) {
                const DomainDisk *disk = domain_def_find_disk(defs[k], target);
                if (disk) {
                        r = file_graph_add_chain(d, g, disk->source, disk->format);
                        if (r < 0)
                                return r;
                }
        }
        for (Snapshot *s = d->snapshots.first; s; s = s->next) {
                const SnapshotDisk *sd = snapshot_def_find_disk(s->def, target);
                _cleanup_free_ char *src = snapshot_recorded_source(s->def, target);

                if (sd && sd->source && (r = file_graph_add_chain(d, g, sd->source, DISK_FORMAT_QCOW2)) < 0)
                        return r;
                if (src && (r = file_graph_add_chain(d, g, src, snapshot_recorded_format(s->def, target))) < 0)
                        return r;
                for (size_t i = 0; i < s->def->n_revert_disks; i++)
                        if (streq_ptr(s->def->revert_disks[i].name, target) && s->def->revert_disks[i].source &&
                            (r = file_graph_add_chain(d, g, s->def->revert_disks[i].source, DISK_FORMAT_QCOW2)) < 0)
                                return r;
        }
        return 0;
}

/* Every qcow2 image in the folders of the graph's files that the graph
 * does not know: a branch nothing records any more, another domain's
 * overlay on a shared base. Never touched, but what they read stays. */
int file_graph_scan_folders(FileGraph *g) {
        _cleanup_strv_free_ char **dirs = NULL;

        for (size_t i = 0; i < g->n; i++) {
                _cleanup_free_ char *dir = file_dir_of(g->files[i]);
                if (!dir)
                        return -ENOMEM;
                if (!strv_contains((const char *const *) dirs, dir) && strv_extend(&dirs, dir) < 0)
                        return -ENOMEM;
        }
        for (char **dir = dirs; dir && *dir; dir++) {
                _cleanup_(closedirp) DIR *dh = opendir(*dir);
                struct dirent *de;

                if (!dh)
                        continue;
                while ((de = readdir(dh))) {
                        _cleanup_free_ char *path = NULL, *backing = NULL;
                        struct stat st;

                        if (de->d_name[0] == '.')
                                continue;
                        path = strjoin(*dir, streq(*dir, "/") ? "" : "/", de->d_name);
                        if (!path)
                                return -ENOMEM;
                        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || file_graph_find(g, path) >= 0)
                                continue;
                        if (image_read_backing(path, &backing) < 0 || !backing)
                                continue;
                        if (strv_extend(&g->foreign, path) < 0 || strv_extend(&g->foreign_backings, backing) < 0)
                                return -ENOMEM;
                }
        }
        return 0;
}

size_t file_graph_foreign_overlays(const FileGraph *g, const char *file) {
        size_t n = 0;

        for (char **b = g->foreign_backings; b && *b; b++)
                if (streq(*b, file))
                        n++;
        return n;
}

/* The files whose backing file is `file`. */
char **file_graph_overlays(const FileGraph *g, const char *file) {
        char **l = NULL;

        for (size_t i = 0; i < g->n; i++)
                if (streq(g->backings[i], file) && strv_extend(&l, g->files[i]) < 0)
                        return strv_free(l);
        return l ?: new0(char *, 1);
}

/* ---- renames in the definitions and the metadata, one transaction ---- */

/* def's copy with the renames applied; NULL in *ret when nothing changed. */
static int def_apply_renames(const SnapshotDef *def, const FileRename *renames, size_t n, SnapshotDef **ret) {
        _cleanup_(snapshot_def_freep) SnapshotDef *copy = NULL;
        bool changed = false;
        int r;

        *ret = NULL;
        r = snapshot_def_copy(def, &copy);
        if (r < 0)
                return r;
        for (size_t k = 0; k < n; k++) {
                const FileRename *rn = renames + k;

                for (size_t i = 0; i < copy->n_disks; i++)
                        if (streq(copy->disks[i].name, rn->target) && streq_ptr(copy->disks[i].source, rn->from)) {
                                if (free_and_strdup(&copy->disks[i].source, rn->to) < 0)
                                        return -ENOMEM;
                                changed = true;
                        }
                for (size_t i = 0; i < copy->n_revert_disks; i++)
                        if (streq_ptr(copy->revert_disks[i].name, rn->target) &&
                            streq_ptr(copy->revert_disks[i].source, rn->from)) {
                                if (free_and_strdup(&copy->revert_disks[i].source, rn->to) < 0)
                                        return -ENOMEM;
                                changed = true;
                        }
                if (copy->domain_xml && rn->recorded) {
                        _cleanup_free_ char *error = NULL, *xml = NULL;
                        DomainDef *dd = NULL;
                        DomainDisk *disk;

                        if (domain_def_parse(copy->domain_xml, strlen(copy->domain_xml), &dd, &error) < 0)
                                continue;
                        disk = domain_def_find_disk(dd, rn->target);
                        if (disk && streq_ptr(disk->source, rn->from)) {
                                r = free_and_strdup(&disk->source, rn->to);
                                if (r >= 0)
                                        r = domain_def_format(dd, DOMAIN_FORMAT_SECURE, &xml);
                                if (r >= 0) {
                                        free(copy->domain_xml);
                                        copy->domain_xml = TAKE_PTR(xml);
                                        changed = true;
                                }
                        }
                        domain_def_free(dd);
                        if (r < 0)
                                return r;
                }
        }
        if (changed)
                *ret = TAKE_PTR(copy);
        return 0;
}

void domain_apply_renames(Domain *d, const FileRename *renames, size_t n) {
        DomainDef *defs[2] = { d->live, d->def };
        bool changed = false;

        for (size_t k = 0; k < n; k++)
                for (size_t i = 0; i < 2; i++) {
                        DomainDisk *disk = defs[i] ? domain_def_find_disk(defs[i], renames[k].target) : NULL;

                        if (disk && streq_ptr(disk->source, renames[k].from)) {
                                log_info("Domain '%s': disk %s is now %s (was %s).", d->def->name, disk->target,
                                         renames[k].to, disk->source);
                                (void) free_and_strdup(&disk->source, renames[k].to);
                                disk->format = renames[k].to_format;
                                changed = true;
                        }
                }
        domain_chains_invalidate(d);
        if (changed)
                (void) domain_save_disks(d);
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_DISKS);
}

/* Whether any disk of the domain still reads `file`. */
static bool file_in_use(Domain *d, const char *file) {
        const DomainDef *defs[2] = { domain_current_def(d), d->def };

        domain_chains_invalidate(d);
        for (size_t k = 0; k < 2; k++)
                for (size_t i = 0; i < defs[k]->n_disks; i++) {
                        const ImageChain *c = domain_disk_chain(d, defs[k]->disks[i].source, defs[k]->disks[i].format);

                        if (streq(defs[k]->disks[i].source, file))
                                return true;
                        for (size_t l = 0; c && l < c->n_layers; l++)
                                if (streq(c->layers[l].path, file))
                                        return true;
                }
        return false;
}

/* Removes the victims' metadata and applies the renames to everything
 * else, in one transaction, then tells the observers. */
int snapshot_metadata_commit(Domain *d, Snapshot *const *victims, size_t n_victims, const FileRename *renames,
                             size_t n_renames, char **ret_message) {
        SnapshotTree *t = &d->snapshots;
        _cleanup_free_ Snapshot **update = NULL, **changed = NULL;
        _cleanup_free_ SnapshotDef **defs = NULL;
        _cleanup_strv_free_ char **names = NULL;
        Snapshot *previous_current = t->current;
        size_t n_update = 0, n_changed = 0;
        int r;

        update = new0(Snapshot *, t->n + 1);
        defs = new0(SnapshotDef *, t->n + 1);
        if (!update || !defs)
                return -ENOMEM;
        for (Snapshot *s = t->first; s && n_renames > 0; s = s->next) {
                bool victim = false;

                for (size_t i = 0; i < n_victims; i++)
                        victim = victim || victims[i] == s;
                if (victim)
                        continue;
                r = def_apply_renames(s->def, renames, n_renames, &defs[n_update]);
                if (r < 0)
                        goto fail;
                if (defs[n_update])
                        update[n_update++] = s;
        }
        for (size_t i = 0; i < n_victims; i++)
                if (strv_extend(&names, snapshot_name(victims[i])) < 0) {
                        r = -ENOMEM;
                        goto fail;
                }
        if (previous_current)
                for (size_t i = 0; i < n_victims; i++)
                        if (victims[i] == previous_current)
                                previous_current = NULL; /* gone: no IsCurrent to announce on it */
        r = snapshot_tree_remove(t, victims, n_victims, update, defs, n_update, &changed, &n_changed);
        if (r < 0) {
                if (ret_message) {
                        free(*ret_message);
                        *ret_message = strprintf("Cannot store the snapshot metadata: %s", strerror(-r));
                }
                return r;
        }
        manager_notify_snapshots_deleted(d->manager, d, names, changed, n_changed, previous_current);
        return 0;
fail:
        for (size_t i = 0; i < n_update; i++)
                snapshot_def_free(defs[i]);
        return r;
}

int snapshot_metadata_rename_files(Domain *d, const char *target, char *const *from, const char *into) {
        _cleanup_free_ char *message = NULL;
        _cleanup_free_ FileRename *renames = NULL;
        _cleanup_close_ int fd = -EBADF;
        size_t n = strv_length(from);
        DiskFormat format = DISK_FORMAT_QCOW2;
        int r;

        if (n == 0 || d->snapshots.n == 0)
                return 0;
        /* The magic of the file the path gate opens (unreadable: raw). */
        if (gate_open_image(d, into, "The image", &fd, &message) < 0 || !image_is_qcow2_fd(fd))
                format = DISK_FORMAT_RAW;
        message = mfree(message);
        renames = new0(FileRename, n);
        if (!renames)
                return log_oom();
        for (size_t i = 0; i < n; i++)
                renames[i] = (FileRename) { .target = (char *) target, .from = from[i], .to = (char *) into,
                                        .to_format = format, .recorded = true };
        r = snapshot_metadata_commit(d, NULL, 0, renames, n, &message);
        if (r < 0)
                return log_error_errno(r, "Domain '%s': cannot record in the snapshot metadata that %s holds the "
                                       "committed data: %s", d->def->name, into, strna(message));
        log_info("Domain '%s': snapshot metadata names %s for the %zu file(s) committed into it.", d->def->name, into, n);
        return 0;
}

/* Files of a deleted snapshot that nothing references any more go. */
void domain_remove_unreferenced_files(Domain *d, char *const *files) {
        for (char *const *f = files; f && *f; f++) {
                bool referenced = false;

                for (size_t i = 0; i < domain_current_def(d)->n_disks && !referenced; i++)
                        referenced = file_referenced(&d->snapshots, NULL, 0, domain_current_def(d)->disks[i].target, *f,
                                                     true);
                for (Snapshot *o = d->snapshots.first; o && !referenced; o = o->next)
                        referenced = streq_ptr(o->def->memory_file, *f);
                if (!referenced) {
                        /* Any image beside it that still reads it keeps it. */
                        _cleanup_(file_graph_done) FileGraph g = {};
                        _cleanup_free_ char *copy = strdup(*f);

                        if (copy && strv_push(&g.files, TAKE_PTR(copy)) >= 0 && strv_extend(&g.backings, "") >= 0) {
                                g.formats = new0(DiskFormat, 1);
                                g.n = 1;
                                referenced = file_graph_scan_folders(&g) < 0 || file_graph_foreign_overlays(&g, *f) > 0;
                        } else
                                referenced = true;
                }
                if (referenced || file_in_use(d, *f)) {
                        log_info("Domain '%s': keeping %s, still in use.", d->def->name, *f);
                        continue;
                }
                if (fs_unlink_nofollow(*f, S_IFREG) >= 0) /* a refusal is logged */
                        log_info("Domain '%s': removed %s.", d->def->name, *f);
        }
}
