/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Domain.BackupBegin and Domain.BackupGetXMLDesc (libvirt's
 * virDomainBackupBegin, ≥ 6.0): a <domainbackup> checked completely before
 * anything is touched (the plan), then run as one BlockJob1 of type
 * "backup" (a job of qsnapd's own whose Cur/End add up QEMU's per-disk
 * blockdev-backup jobs): push mode copies each disk into a target file,
 * pull mode keeps a point-in-time view of each disk (fleecing into a
 * scratch file) exported read-only over NBD until the job's Abort. One
 * backup per domain at a time. Its journal <state>/ops/<uuid>.backup lets
 * a restarted qsnapd adopt a running backup under the same job path, or
 * report it failed and remove its files when QEMU went away. No D-Bus in
 * here.
 */
#pragma once

#include "core/domain.h"
#include "core/operation.h"
#include "qemu/job.h"

/* BackupBegin flags: libvirt's value, and QUIESCE, our own (libvirt has
 * none; docs/decisions.md): the guest agent freezes the filesystems around
 * the backup's start transaction. */
#define BACKUP_BEGIN_REUSE_EXTERNAL 1ULL
#define BACKUP_BEGIN_QUIESCE 2ULL
#define BACKUP_BEGIN_ALL 3ULL

typedef struct BackupPlan BackupPlan;

typedef void (*BackupStartedFunc)(Domain *d, int error, const char *message, Job *j, void *userdata);

/* Parses and checks a BackupBegin request against the domain as it is
 * now; touches nothing. Errors (util/error.h), each with *ret_message:
 * InvalidXML, InvalidArgument, NoSuchDisk, AlreadyExists (a target exists
 * without REUSE_EXTERNAL), PathNotAllowed, NoSpace, NotRunning,
 * OperationInvalid (QUIESCE of a domain not running), Unsupported (QUIESCE
 * without an agent channel), Busy (a backup or a job holds the
 * domain or a disk). */
int backup_plan_new(Domain *d, const char *backup_xml, const char *checkpoint_xml, uint64_t flags, BackupPlan **ret,
                    char **ret_message);
BackupPlan *backup_plan_free(BackupPlan *p);
static inline void backup_plan_freep(BackupPlan **p) {
        if (*p)
                backup_plan_free(*p);
}

/* Carries the plan out (takes it): < 0 at once with *ret_message, or
 * `done` later, exactly once, with the backup's job once QEMU runs it. */
int backup_begin(Domain *d, BackupPlan *plan, BackupStartedFunc done, void *userdata, char **ret_message);

/* The running backup's <domainbackup>, every default filled in (files,
 * socket, export names); -QSNAP_E_OPERATION_INVALID when none runs. */
int backup_get_xml_desc(Domain *d, char **ret, char **ret_message);

/* Journal kind "backup": adopts a backup that a killed qsnapd left
 * running in QEMU (same job path; push goes on, pull keeps serving), or,
 * with QEMU gone, reports it failed under its path and removes the files
 * it had created. */
extern const OperationKind backup_kind;
/* Journal kind "backup-offline": a shut-off domain's push backup (qemu-img)
 * that qsnapd left unfinished: its targets are removed, its job reported
 * failed under its path. */
extern const OperationKind backup_offline_kind;
