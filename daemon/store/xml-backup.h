/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvirt's <domainbackup> document (BackupBegin's input, and
 * BackupGetXMLDesc's output with everything filled in) as a plain C
 * struct, with a pure parser and writer in the order of libvirt's
 * virDomainBackupDefFormat(), so that what virsh backup-begin takes we
 * take, and what we write libvirt reads back. Also the pure part of
 * BackupBegin's input handling: aligning <disks> with the domain's disks
 * and filling the defaults, as libvirt's virDomainBackupAlignDisks() and
 * its qemu driver do. Unknown elements and attributes are kept verbatim;
 * the operation refuses those it would have to act on (a <target>'s
 * <encryption>, …). libxml2 stays inside xml-*.c.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/xml-domain.h"

typedef enum BackupMode {
        BACKUP_MODE_PUSH, /* mode= absent reads as push */
        BACKUP_MODE_PULL,
        _BACKUP_MODE_MAX,
        _BACKUP_MODE_INVALID = -EINVAL,
} BackupMode;

const char *backup_mode_to_string(BackupMode m);
BackupMode backup_mode_from_string(const char *s);

/* <server transport=…>: libvirt's tcp (the default) and unix; rdma and fd
 * are refused. */
typedef enum BackupTransport {
        BACKUP_TRANSPORT_TCP,
        BACKUP_TRANSPORT_UNIX,
        _BACKUP_TRANSPORT_MAX,
        _BACKUP_TRANSPORT_INVALID = -EINVAL,
} BackupTransport;

const char *backup_transport_to_string(BackupTransport t);
BackupTransport backup_transport_from_string(const char *s);

/* <disk type=…>: where the target (push) or scratch (pull) lives. */
typedef enum BackupDiskType {
        BACKUP_DISK_TYPE_FILE, /* type= absent reads as file (libvirt) */
        BACKUP_DISK_TYPE_BLOCK,
        _BACKUP_DISK_TYPE_MAX,
        _BACKUP_DISK_TYPE_INVALID = -EINVAL,
} BackupDiskType;

const char *backup_disk_type_to_string(BackupDiskType t);
BackupDiskType backup_disk_type_from_string(const char *s);

/* <disk backupmode=…>; DEFAULT (absent) is never written once aligned. */
typedef enum BackupDiskMode {
        BACKUP_DISK_MODE_DEFAULT,
        BACKUP_DISK_MODE_FULL,
        BACKUP_DISK_MODE_INCREMENTAL,
        _BACKUP_DISK_MODE_MAX,
        _BACKUP_DISK_MODE_INVALID = -EINVAL,
} BackupDiskMode;

const char *backup_disk_mode_to_string(BackupDiskMode m);
BackupDiskMode backup_disk_mode_from_string(const char *s);

typedef struct BackupServer {
        BackupTransport transport;
        char *name;   /* tcp: host name or address (required) */
        uint16_t port; /* tcp: 0 = not given */
        char *socket; /* unix: absolute path (required) */
        int tls;      /* tls='yes' 1, 'no' 0, absent -1 */
        char **extra_attributes;
} BackupServer;

typedef struct BackupDisk {
        char *name;            /* <disk name=…>: a disk target ("vda") */
        bool backup;           /* backup='yes' (default) or 'no'; a 'no' disk has nothing else */
        BackupDiskType type;
        BackupDiskMode mode;   /* backupmode= */
        char *incremental;     /* incremental=: the checkpoint this disk's incremental starts from */
        char *export_name;     /* exportname= (pull only) */
        char *export_bitmap;   /* exportbitmap= (pull only) */
        DiskFormat format;     /* <driver type=…>, _DISK_FORMAT_INVALID when absent */
        /* <target file|dev=…> (push) or <scratch file|dev=…> (pull), by type;
         * NULL when absent. */
        char *path;
        /* Children of <target>/<scratch> (<seclabel>, <encryption>) and its
         * unknown attributes; unknown attributes and children of <disk>. */
        char **extra_path_elements;
        char **extra_path_attributes;
        char **extra_attributes;
        char **extra_elements;
} BackupDisk;

typedef struct BackupDef {
        BackupMode mode;
        char *incremental;     /* <incremental>: the checkpoint of an incremental backup */
        BackupServer *server;  /* pull only; NULL when absent */
        BackupDisk *disks;     /* n_disks == 0: <disks> absent (an empty one is refused) */
        size_t n_disks;
        char **extra_attributes; /* of <domainbackup> */
        char **extra_elements;   /* unknown children of <domainbackup> (libvirt's <privateData>) */
} BackupDef;

BackupDef *backup_def_free(BackupDef *def);
static inline void backup_def_freep(BackupDef **d) {
        if (*d)
                backup_def_free(*d);
}

/* Parses with XML_PARSE_NONET, no entity expansion, no DTD loading, at most
 * XML_MAX_DOCUMENT_SIZE bytes, and checks what libvirt's schema checks:
 * <server> only in pull mode, <target> only in push mode and <scratch>
 * only in pull mode, exportname/exportbitmap only in pull mode, nothing
 * but name (and backupmode) on a backup='no' disk, backupmode='full'
 * without incremental=, absolute paths, a port number, a disk once.
 * Returns -QSNAP_E_INVALID_XML (not well-formed, not a valid backup
 * definition, too big), with *ret_error naming the line and the problem.
 * *ret is untouched on failure, *ret_error on success. */
int backup_def_parse(const char *xml, size_t size, BackupDef **ret, char **ret_error);

/* libvirt's order, two-space indentation, mode= always written, every
 * disk's backup= written. -EINVAL when def could not be read back. */
int backup_def_format(const BackupDef *def, char **ret);

/* Deep copy. */
int backup_def_copy(const BackupDef *def, BackupDef **ret);

/* What backup_def_align() fills in where the document is silent. */
typedef struct BackupDefaults {
        /* Push targets without a file: "<the disk's source>.<suffix>"; libvirt
         * uses the new checkpoint's name, else the start time in seconds.
         * NULL: leave them empty. */
        const char *suffix;
        /* Pull scratch files without a file: "<scratch_dir>/<domain
         * uuid>-<target>.<suffix>.scratch". NULL: leave them empty. */
        const char *scratch_dir;
        /* Pull mode without <server>: transport='unix' socket= this. NULL:
         * leave it absent. */
        const char *socket;
} BackupDefaults;

/* libvirt's virDomainBackupAlignDisks() and the defaults its qemu driver
 * fills, pure: afterwards def has one <disk> per disk of dom, in dom's
 * order. Without <disks> every writable disk is backed up (read-only ones
 * get backup='no'); with <disks> the disks not listed get backup='no'.
 * A backed-up disk gets backupmode (incremental when it or the backup
 * names a checkpoint, else full), its incremental= from <incremental>,
 * type file, <driver type='qcow2'> when absent, its target or scratch
 * path per `defaults`, and in pull mode exportname = the target and,
 * when incremental, exportbitmap = "backup-<target>". Errors, with
 * *ret_error (may be NULL) saying which: -QSNAP_E_NO_SUCH_DISK no such
 * disk, -QSNAP_E_INVALID_ARGUMENT a disk listed twice,
 * backupmode='incremental' without a checkpoint, two disks with one target
 * path, scratch path or export name, nothing left to back up;
 * -QSNAP_E_UNSUPPORTED a domain without disks. An explicitly listed
 * read-only disk is backed up (libvirt). def is unchanged on failure. */
int backup_def_align(BackupDef *def, const DomainDef *dom, const BackupDefaults *defaults, char **ret_error);
