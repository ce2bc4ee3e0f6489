/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A domain's disks, the services every operation shares: the backing
 * chain of each active file (read once, cached, through the path gate of
 * core/gate.c), Domain.Disks, whether a new file fits in its folder, and
 * the per-disk lock (a job
 * not ended holds its disk). No D-Bus in here.
 */
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "core/disk.h"
#include "core/gate.h"
#include "core/manager.h"
#include "util/util.h"

#define MIN_FREE_BYTES (1024ULL * 1024ULL)

/* ---- backing chains ---- */

#define CHAIN_CACHE_MAX 16

static int image_chain_copy_with_top(const ImageChain *below, const char *top, ImageChain *ret) {
        ImageChain c = {};

        c.layers = new0(ImageLayer, below->n_layers + 1);
        if (!c.layers)
                return -ENOMEM;
        c.layers[0] = (ImageLayer) { .path = strdup(top), .format = DISK_FORMAT_QCOW2 };
        c.n_layers = 1;
        if (!c.layers[0].path)
                goto oom;
        for (size_t i = 0; i < below->n_layers; i++, c.n_layers++) {
                c.layers[i + 1] = (ImageLayer) { .path = strdup(below->layers[i].path), .format = below->layers[i].format };
                if (!c.layers[i + 1].path)
                        goto oom;
        }
        *ret = c;
        return 0;
oom:
        image_chain_done(&c);
        return -ENOMEM;
}

static ChainCacheEntry *chain_cache_add(Domain *d) {
        if (d->n_chain_cache == CHAIN_CACHE_MAX) {
                /* Drop the oldest: it belongs to an active file long gone. */
                free(d->chain_cache[0].active);
                image_chain_done(&d->chain_cache[0].chain);
                memmove(d->chain_cache, d->chain_cache + 1, (CHAIN_CACHE_MAX - 1) * sizeof(ChainCacheEntry));
                d->n_chain_cache--;
        }
        d->chain_cache[d->n_chain_cache] = (ChainCacheEntry) {};
        return d->chain_cache + d->n_chain_cache++;
}

static ChainCacheEntry *chain_cache_find(Domain *d, const char *active) {
        for (size_t i = d->n_chain_cache; i > 0; i--)
                if (streq(d->chain_cache[i - 1].active, active))
                        return d->chain_cache + i - 1;
        return NULL;
}

const ImageChain *domain_disk_chain(Domain *d, const char *active, DiskFormat format) {
        ChainCacheEntry *e = chain_cache_find(d, active);
        _cleanup_free_ char *why = NULL;
        ImageChain chain = {};

        if (e)
                return &e->chain;

        /* Through the gate: a chain that leaves the domain's folders or
         * names a json:/protocol backing is not followed (Disks shows the
         * active file alone). */
        if (gate_read_chain(d, active, format, &chain, &why) < 0) {
                log_debug("Domain '%s': chain of %s not read: %s", d->def->name, active, strna(why));
                return NULL;
        }
        e = chain_cache_add(d);
        e->active = strdup(active);
        if (!e->active) {
                d->n_chain_cache--;
                image_chain_done(&chain);
                return NULL;
        }
        e->chain = chain;
        return &e->chain;
}

void domain_chain_add_overlay(Domain *d, const char *below, const char *overlay) {
        ChainCacheEntry *old = chain_cache_find(d, below), *e;
        ImageChain chain;

        d->graph_epoch++;
        /* Without the chain below cached, the next lookup reads it. */
        if (!old || chain_cache_find(d, overlay) || image_chain_copy_with_top(&old->chain, overlay, &chain) < 0)
                return;
        e = chain_cache_add(d);
        e->active = strdup(overlay);
        if (!e->active) {
                d->n_chain_cache--;
                image_chain_done(&chain);
                return;
        }
        e->chain = chain;
}

void domain_chains_invalidate(Domain *d) {
        d->graph_epoch++;
        for (size_t i = 0; i < d->n_chain_cache; i++) {
                free(d->chain_cache[i].active);
                image_chain_done(&d->chain_cache[i].chain);
        }
        d->n_chain_cache = 0;
}

void domain_disk_info_free_many(DomainDiskInfo *infos, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(infos[i].active);
                free(infos[i].chain);
        }
        free(infos);
}

int domain_get_disks(Domain *d, DomainDiskInfo **ret, size_t *ret_n) {
        const DomainDef *def = domain_current_def(d);
        DomainDiskInfo *infos;

        infos = new0(DomainDiskInfo, def->n_disks ?: 1);
        if (!infos)
                return -ENOMEM;
        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDisk *disk = def->disks + i;
                bool overlay = disk->transient && d->live;
                DiskFormat format = overlay ? DISK_FORMAT_QCOW2 : disk->format;
                const ImageChain *chain;

                infos[i].target = disk->target;
                infos[i].format = disk_format_to_string(format);
                infos[i].active = overlay ? domain_transient_path(d, disk) : strdup(disk->source);
                if (!infos[i].active)
                        goto oom;
                /* A missing or unreadable image shows as itself alone. */
                chain = domain_disk_chain(d, infos[i].active, format);
                if (chain)
                        infos[i].chain = image_chain_to_string(chain);
                else
                        infos[i].chain = strdup(infos[i].active);
                if (!infos[i].chain)
                        goto oom;
        }
        *ret = infos;
        *ret_n = def->n_disks;
        return 0;
oom:
        domain_disk_info_free_many(infos, def->n_disks);
        return -ENOMEM;
}

/* ---- the path gate ---- */

int path_check_free_space(const char *path, char **ret_message) {
        _cleanup_free_ char *copy = strdup(path);
        struct statvfs sv;
        uint64_t avail;

        if (!copy)
                return -ENOMEM;
        if (statvfs(dirname(copy), &sv) < 0)
                return 0; /* the create itself will say what is wrong */
        avail = (uint64_t) sv.f_bavail * sv.f_frsize;
        if (avail < MIN_FREE_BYTES) {
                *ret_message = strprintf("No space for %s: only %" PRIu64 " bytes free there.", path, avail);
                return -QSNAP_E_NO_SPACE;
        }
        return 0;
}

/* A file we are to create: a name the file system takes, in a folder we
 * can write (EROFS shows even to root). */
int path_check_writable(const char *path, char **ret_message) {
        _cleanup_free_ char *copy = strdup(path);
        const char *base = strrchr(path, '/');

        if (!copy)
                return -ENOMEM;
        if (strlen(path) >= PATH_MAX || (base && strlen(base + 1) > NAME_MAX)) {
                *ret_message = strprintf("The file name %s is too long for the file system.", path);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (access(dirname(copy), W_OK) < 0) {
                *ret_message = strprintf("Cannot create files next to %s: %m.", path);
                return IN_SET(errno, ENOENT, EROFS, EACCES, EPERM) ? -QSNAP_E_PATH_NOT_ALLOWED : -errno;
        }
        return 0;
}

/* After a failed write: was it the disk filling up? */
bool path_out_of_space(const char *path) {
        _cleanup_free_ char *msg = NULL;
        return path_check_free_space(path, &msg) == -QSNAP_E_NO_SPACE;
}

int domain_check_new_file(const char *path, char **ret_message) {
        int r = path_check_writable(path, ret_message);
        return r < 0 ? r : path_check_free_space(path, ret_message);
}

/* ---- the per-disk lock ---- */

Job *domain_disk_job(Domain *d, const char *target) {
        if (!d->jobs)
                return NULL;
        JOB_TRACKER_FOREACH(j, d->jobs)
                /* Owned ones too: a backup's per-disk jobs hold their disks. */
                if (j->disk && streq(j->disk, target) && !job_state_is_final(j->state))
                        return j;
        return NULL;
}
