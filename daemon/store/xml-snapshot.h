/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvirt's <domainsnapshot> document and its bulk <snapshots> file as plain
 * C structs, with pure parsers (text in, struct out) and writers (struct in,
 * text out) in libvirt's element order, so that `virsh snapshot-dumpxml`
 * output is accepted with REDEFINE and what we write libvirt reads back.
 * The embedded <domain> and elements we do not model are kept verbatim.
 * libxml2 stays inside xml-*.c.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/xml-domain.h"

/* snapshot= of <memory> and <disk>, libvirt's strings. */
typedef enum SnapshotLocation {
        SNAPSHOT_LOCATION_DEFAULT, /* attribute absent; "default" is never written */
        SNAPSHOT_LOCATION_NO,
        SNAPSHOT_LOCATION_INTERNAL,
        SNAPSHOT_LOCATION_EXTERNAL,
        SNAPSHOT_LOCATION_MANUAL,
        _SNAPSHOT_LOCATION_MAX,
        _SNAPSHOT_LOCATION_INVALID = -EINVAL,
} SnapshotLocation;

const char *snapshot_location_to_string(SnapshotLocation l);
SnapshotLocation snapshot_location_from_string(const char *s);

/* <state>: the domain's state when the snapshot was taken, libvirt's strings
 * (running, paused, shutoff, disk-snapshot, nostate, blocked, shutdown,
 * crashed, pmsuspended). */
typedef enum SnapshotState {
        SNAPSHOT_STATE_RUNNING,
        SNAPSHOT_STATE_PAUSED,
        SNAPSHOT_STATE_SHUTOFF,
        SNAPSHOT_STATE_DISK_SNAPSHOT,
        SNAPSHOT_STATE_NOSTATE,
        SNAPSHOT_STATE_BLOCKED,
        SNAPSHOT_STATE_SHUTDOWN,
        SNAPSHOT_STATE_CRASHED,
        SNAPSHOT_STATE_PMSUSPENDED,
        _SNAPSHOT_STATE_MAX,
        _SNAPSHOT_STATE_INVALID = -EINVAL,
} SnapshotState;

const char *snapshot_state_to_string(SnapshotState s);
SnapshotState snapshot_state_from_string(const char *s);

/* <on_delete merge=…/> (our extension, DESIGN §8): how deleting the
 * snapshot merges this disk. "default" is never written. */
typedef enum MergeDirection {
        MERGE_DEFAULT,
        MERGE_FORWARD,
        MERGE_BACKWARD,
        _MERGE_MAX,
        _MERGE_INVALID = -EINVAL,
} MergeDirection;

const char *merge_direction_to_string(MergeDirection m);
MergeDirection merge_direction_from_string(const char *s);

typedef struct SnapshotDisk {
        char *name;                 /* <disk name=…>: a target ("vda") or an absolute source path */
        SnapshotLocation snapshot;  /* snapshot=; EXTERNAL when absent but <source> or <driver type> given, as libvirt */
        DiskFormat format;          /* <driver type=…>, _DISK_FORMAT_INVALID when absent */
        char *source;               /* <source file=…>, NULL when absent; only type='file' disks */
        MergeDirection on_delete;   /* <on_delete merge='forward|backward'/> */
        /* Unknown children of <disk> (e.g. libvirt's <snapshotDeleteInProgress/>),
         * each one complete element as the parser serialized it, unindented. */
        char **extra_elements;

        /* Kept verbatim too, like xml-domain.c does for <disk>: unknown
         * attributes (name="value") of <disk>, <driver> and <source>, and the
         * children of <driver> (<metadata_cache>) and <source> (<seclabel>). */
        char **extra_attributes;
        char **extra_driver_attributes;
        char **extra_driver_elements;
        char **extra_source_attributes;
        char **extra_source_elements;
} SnapshotDisk;

typedef struct SnapshotDef {
        char *name;                 /* NULL when absent: the caller picks a default */
        char *description;          /* NULL when absent or empty */
        SnapshotState state;
        bool has_state;
        int64_t creation_time;      /* seconds since the epoch */
        bool has_creation_time;
        SnapshotLocation memory;    /* <memory snapshot=…>; DEFAULT when absent */
        char *memory_file;          /* <memory file=…>, only with EXTERNAL */
        SnapshotDisk *disks;
        size_t n_disks;
        bool has_disks;             /* <disks> was there, possibly empty */
        char *parent;               /* <parent><name>…</name></parent> */
        /* The <domain> element, verbatim and complete (namespaces it borrows
         * declared on it), a standalone document as domain_def_parse() takes. NULL when
         * absent. The writer re-indents it to nest and, without
         * SNAPSHOT_FORMAT_SECURE, leaves out <graphics passwd=…>. */
        char *domain_xml;
        char *inactive_domain_xml;  /* the <inactiveDomain> element, verbatim, NULL when absent */
        SnapshotDisk *revert_disks; /* libvirt 9.7+ <revertDisks> */
        size_t n_revert_disks;
        int active;                 /* <active> of libvirt's own metadata files: 1, 0, or -1 when absent */
        /* Our extension <qsnap:nvram xmlns:qsnap='http://example.org/qsnap/1'
         * file='…' internal='yes'/> (kept like libvirt's output elements:
         * only a redefinition sets it): the copy of the domain's UEFI
         * variable store taken with an external snapshot (absolute path), and
         * whether an internal snapshot holds the store (a qcow2) too. */
        char *nvram_file;
        bool nvram_internal;
        char **extra_elements;      /* unknown children of <domainsnapshot> (e.g. <cookie>), verbatim */
} SnapshotDef;

SnapshotDef *snapshot_def_free(SnapshotDef *def);
static inline void snapshot_def_freep(SnapshotDef **d) {
        if (*d)
                snapshot_def_free(*d);
}

/* Frees n definitions and the array; returns NULL. */
SnapshotDef **snapshot_def_array_free(SnapshotDef **defs, size_t n);

typedef enum SnapshotParseFlags {
        /* Keep <state>, <creationTime>, <parent>, <domain>, <inactiveDomain>
         * and <revertDisks>. Without it they are ignored, unchecked and
         * dropped, as libvirt does for a new snapshot. */
        SNAPSHOT_PARSE_REDEFINE = 1 << 0,
} SnapshotParseFlags;

/* Parses with XML_PARSE_NONET, no entity expansion, no DTD loading, at most
 * XML_MAX_DOCUMENT_SIZE bytes. Returns -QSNAP_E_INVALID_XML (not
 * well-formed XML, not a valid snapshot, too big) or -EINVAL (unknown
 * flags), with *ret_error set to a message naming the line and the problem, e.g. "line 4: <memory snapshot='external'> needs a file=
 * attribute". *ret is untouched on failure, *ret_error on success. */
int snapshot_def_parse(const char *xml, size_t size, SnapshotParseFlags flags, SnapshotDef **ret, char **ret_error);

typedef enum SnapshotFormatFlags {
        /* Include secrets of the embedded domains (<graphics passwd=…>);
         * without it they are left out, as libvirt does. Metadata that is
         * stored must be written with it. */
        SNAPSHOT_FORMAT_SECURE = 1 << 0,
        /* Write <active>1|0</active> (def->active > 0) as libvirt's own
         * per-snapshot metadata files carry it. */
        SNAPSHOT_FORMAT_ACTIVE = 1 << 1,
} SnapshotFormatFlags;

/* libvirt's element order, two-space indentation, the embedded domains
 * re-indented to nest. -EINVAL when def could not be read back (empty name,
 * a relative path, a memory file without external memory, characters XML
 * cannot carry, …) or for unknown flags. */
int snapshot_def_format(const SnapshotDef *def, SnapshotFormatFlags flags, char **ret);

/* Replaces <revertDisks> with a deep copy of disks (n = 0: none). */
int snapshot_def_set_revert_disks(SnapshotDef *def, const SnapshotDisk *disks, size_t n);

/* Deep copy. */
int snapshot_def_copy(const SnapshotDef *def, SnapshotDef **ret);

/* The bulk file, libvirt's <snapshots current='NAME'> holding
 * <domainsnapshot> elements, each parsed with SNAPSHOT_PARSE_REDEFINE. Every
 * snapshot needs a unique name, parents must be in the file and form no
 * cycle, and current (the attribute, else the one entry with <active>1,
 * NULL when neither) must name one of them. There is no size cap here: the
 * caller reads the file under its own, configurable limit (anything below
 * 2 GiB; -QSNAP_E_INVALID_XML above, as for any refused file). */
int snapshot_list_parse(
                const char *xml,
                size_t size,
                SnapshotDef ***ret_defs,
                size_t *ret_n,
                char **ret_current,
                char **ret_error);

/* Writes with SNAPSHOT_FORMAT_SECURE: this is the metadata store's format.
 * current may be NULL; otherwise it must name one of defs. */
int snapshot_list_format(SnapshotDef *const *defs, size_t n, const char *current, char **ret);
