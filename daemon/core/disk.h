/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A domain's disks, the services every operation shares: backing chains
 * (cached, read through core/gate.c), Domain.Disks, free-space and
 * writability checks for new files, and the per-disk lock. No D-Bus in here.
 */
#pragma once

#include <stdbool.h>

#include "core/domain.h"
#include "util/error.h"

/* The backing chain of active file `active` (active first), from a cache:
 * headers are read once per chain, not once per property read. NULL when
 * the image cannot be read. Block jobs that change a chain invalidate. */
const ImageChain *domain_disk_chain(Domain *d, const char *active, DiskFormat format);
/* `overlay` was put on top of `below`: its chain is known without I/O. */
void domain_chain_add_overlay(Domain *d, const char *below, const char *overlay);
void domain_chains_invalidate(Domain *d);

/* Domain.Disks: per disk target, format, active file and chain text. */
typedef struct DomainDiskInfo {
        const char *target;
        const char *format;
        char *active;
        char *chain;
} DomainDiskInfo;
int domain_get_disks(Domain *d, DomainDiskInfo **ret, size_t *ret_n);
void domain_disk_info_free_many(DomainDiskInfo *infos, size_t n);

/* A file qsnapd is about to create there: a name the file system takes
 * (-QSNAP_E_INVALID_ARGUMENT), a folder it can write
 * (-QSNAP_E_PATH_NOT_ALLOWED), and the minimum free space (-QSNAP_E_NO_SPACE).
 * domain_check_new_file() is both halves, in this order; callers that
 * check something in between call them one by one. */
int domain_check_new_file(const char *path, char **ret_message);
int path_check_writable(const char *path, char **ret_message);
int path_check_free_space(const char *path, char **ret_message);
/* After a failed write: was it the disk filling up? */
bool path_out_of_space(const char *path);

/* A job not ended holds this disk. */
Job *domain_disk_job(Domain *d, const char *target);
