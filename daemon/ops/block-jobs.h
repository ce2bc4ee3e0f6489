/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The block job operations: BlockPull, BlockRebase, BlockCommit and
 * BlockCopy checked in full, then started over QMP. Once QEMU accepted a
 * job, the domain's job glue (core/domain-jobs.c) tracks it and does the
 * chain bookkeeping when it ends. No D-Bus in here.
 */
#pragma once

#include "core/domain.h"
#include "qemu/job.h"

#define BLOCK_COMMIT_SHALLOW 1ULL
#define BLOCK_COMMIT_DELETE 2ULL
#define BLOCK_COMMIT_ACTIVE 4ULL
#define BLOCK_COMMIT_RELATIVE 8ULL
#define BLOCK_COMMIT_ALL 15ULL

#define BLOCK_REBASE_SHALLOW 1ULL
#define BLOCK_REBASE_REUSE_EXT 2ULL
#define BLOCK_REBASE_COPY_RAW 4ULL
#define BLOCK_REBASE_COPY 8ULL
#define BLOCK_REBASE_RELATIVE 16ULL
#define BLOCK_REBASE_ALL 31ULL

#define BLOCK_COPY_SHALLOW 1ULL
#define BLOCK_COPY_REUSE_EXT 2ULL
#define BLOCK_COPY_TRANSIENT_JOB 4ULL
#define BLOCK_COPY_SYNCHRONOUS_WRITES 8ULL
#define BLOCK_COPY_ALL 15ULL

typedef void (*BlockJobStartedFunc)(Domain *d, int error, const char *message, Job *j, void *userdata);

/* Both check everything first (util/error.h: NoSuchDisk, InvalidArgument
 * base/top/flags, NotRunning, Busy), return < 0 with *ret_message at once, or
 * call done once QEMU accepted or refused the job. */
int block_job_pull(Domain *d, const char *disk, uint64_t bandwidth, uint64_t flags, BlockJobStartedFunc done,
                   void *userdata, char **ret_message);
/* base "" or NULL: a full pull (BlockPull); a file of the chain: a
 * partial one, everything above it copied into the active file. */
int block_job_rebase(Domain *d, const char *disk, const char *base, uint64_t bandwidth, uint64_t flags,
                     BlockJobStartedFunc done, void *userdata, char **ret_message);
int block_job_commit(Domain *d, const char *disk, const char *base, const char *top, uint64_t bandwidth,
                     uint64_t flags, BlockJobStartedFunc done, void *userdata, char **ret_message);

/* BlockCopy, and BlockRebase with COPY: a mirror of the disk to dest
 * (format _DISK_FORMAT_INVALID: the disk's own, or with REUSE_EXT what the
 * file is), flags BLOCK_COPY_*. PathNotAllowed dest not allowed,
 * AlreadyExists dest exists (without REUSE_EXT), NoSpace, besides the
 * errors above. */
int block_job_copy(Domain *d, const char *disk, const char *dest, DiskFormat dest_format, uint64_t bandwidth,
                   uint64_t flags, BlockJobStartedFunc done, void *userdata, char **ret_message);
