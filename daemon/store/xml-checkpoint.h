/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * libvirt's <domaincheckpoint> document as a plain C struct, with a pure
 * parser (text in, struct out) and writer (struct in, text out) in the
 * element order of libvirt's formatcheckpoint documentation, so that
 * `virsh checkpoint-dumpxml` output is accepted with REDEFINE and what we
 * write libvirt reads back. The recorded <domain> and elements we do not
 * model are kept verbatim, as xml-snapshot.c keeps them. Also the pure
 * part of CreateCheckpoint's input handling: aligning <disks> with the
 * domain's disks and filling the defaults, as libvirt does. libxml2 stays
 * inside xml-*.c.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/xml-domain.h"

/* QEMU's limit for a dirty bitmap name (BDRV_BITMAP_MAX_NAME_SIZE). */
#define CHECKPOINT_BITMAP_NAME_MAX 1023U

/* checkpoint= of <disk>, libvirt's strings. Absent reads as BITMAP. */
typedef enum CheckpointType {
        CHECKPOINT_TYPE_NO,
        CHECKPOINT_TYPE_BITMAP,
        _CHECKPOINT_TYPE_MAX,
        _CHECKPOINT_TYPE_INVALID = -EINVAL,
} CheckpointType;

const char *checkpoint_type_to_string(CheckpointType t);
CheckpointType checkpoint_type_from_string(const char *s);

typedef struct CheckpointDisk {
        char *name;          /* <disk name=…>: a target ("vda") or an absolute source path */
        CheckpointType type; /* checkpoint=, BITMAP when absent */
        char *bitmap;        /* bitmap=, only with BITMAP; NULL: the checkpoint's name (checkpoint_def_align()) */
        /* size=: bytes dirtied since the checkpoint. Ignored on input, as
         * libvirt does; the caller sets it for output with
         * CHECKPOINT_FORMAT_SIZE. Only a BITMAP disk with has_size writes it. */
        uint64_t size;
        bool has_size;
        /* Unknown attributes of <disk> (name="value") and unknown children,
         * verbatim and unindented. */
        char **extra_attributes;
        char **extra_elements;
} CheckpointDisk;

typedef struct CheckpointDef {
        char *name;             /* NULL when absent: the caller names it (libvirt: the creation time) */
        char *description;      /* NULL when absent or empty */
        char *parent;           /* <parent><name>…</name></parent> */
        int64_t creation_time;  /* seconds since the epoch */
        bool has_creation_time;
        CheckpointDisk *disks;  /* n_disks == 0: <disks> absent (an empty <disks> is refused) */
        size_t n_disks;
        /* The recorded <domain>, verbatim and complete (namespaces it
         * borrows declared on it), a document domain_def_parse() takes. NULL
         * when absent. Written re-indented; without CHECKPOINT_FORMAT_SECURE
         * without <graphics passwd=…>. */
        char *domain_xml;
        char **extra_elements;  /* unknown children of <domaincheckpoint>, verbatim */
} CheckpointDef;

CheckpointDef *checkpoint_def_free(CheckpointDef *def);
static inline void checkpoint_def_freep(CheckpointDef **d) {
        if (*d)
                checkpoint_def_free(*d);
}

typedef enum CheckpointParseFlags {
        /* Keep <parent>, <creationTime> and <domain>, and require <name> and
         * <creationTime> (libvirt's VIR_DOMAIN_CHECKPOINT_PARSE_REDEFINE).
         * Without it they are ignored, unchecked and dropped: libvirt's
         * read-only output fields of a new checkpoint. */
        CHECKPOINT_PARSE_REDEFINE = 1 << 0,
} CheckpointParseFlags;

/* Parses with XML_PARSE_NONET, no entity expansion, no DTD loading, at most
 * XML_MAX_DOCUMENT_SIZE bytes. Returns -QSNAP_E_INVALID_XML (not
 * well-formed XML, not a valid checkpoint, too big) or -EINVAL (unknown
 * flags), with *ret_error set to a message naming the line and the problem, e.g. "line 4: <disk name='vdb' checkpoint='no'> cannot have
 * bitmap=". *ret is untouched on failure, *ret_error on success. Names
 * follow libvirt's schema: letters, digits, '_', '-' and '.', not first. */
int checkpoint_def_parse(const char *xml, size_t size, CheckpointParseFlags flags, CheckpointDef **ret,
                         char **ret_error);

/* The values of Checkpoint.GetXMLDesc's flags (libvirt's
 * virDomainCheckpointXMLFlags). */
typedef enum CheckpointFormatFlags {
        /* Include secrets of the recorded domain (<graphics passwd=…>);
         * metadata that is stored must be written with it. */
        CHECKPOINT_FORMAT_SECURE = 1 << 0,
        /* Leave <domain> out (the result is no longer REDEFINE input). */
        CHECKPOINT_FORMAT_NO_DOMAIN = 1 << 1,
        /* Write size= of the disks that have one (has_size). */
        CHECKPOINT_FORMAT_SIZE = 1 << 2,
} CheckpointFormatFlags;

#define CHECKPOINT_FORMAT_ALL (CHECKPOINT_FORMAT_SECURE | CHECKPOINT_FORMAT_NO_DOMAIN | CHECKPOINT_FORMAT_SIZE)

/* libvirt's element order (name, description, parent, creationTime, disks,
 * domain), two-space indentation. -EINVAL when def could not be read back
 * (a name outside libvirt's pattern, a relative path, a bitmap on a 'no'
 * disk, characters XML cannot carry, …) or for unknown flags. */
int checkpoint_def_format(const CheckpointDef *def, CheckpointFormatFlags flags, char **ret);

/* Deep copy. */
int checkpoint_def_copy(const CheckpointDef *def, CheckpointDef **ret);

/* NULL when s is a valid checkpoint name, else what is wrong with it (the
 * bus layer checks LookupCheckpoint's argument with it). */
const char *checkpoint_name_check(const char *s);

/* NULL when s can name a QEMU dirty bitmap (1 to 1023 bytes). */
const char *checkpoint_bitmap_name_check(const char *s);

/* libvirt's virDomainCheckpointAlignDisks(), pure: afterwards def has one
 * <disk> per disk of dom, in dom's order, named by target. A disk named by
 * its source path becomes its target. Without <disks> every disk gets a
 * bitmap, except read-only and transient ones ('no'); with <disks> the
 * disks not listed get 'no'. Bitmap names default to def->name, which must
 * be set. Errors, with *ret_error (may be NULL) saying which disk:
 * -QSNAP_E_NO_SUCH_DISK no such disk, -QSNAP_E_INVALID_ARGUMENT a disk
 * listed twice, a bitmap on a read-only or transient disk, no name,
 * -QSNAP_E_UNSUPPORTED a domain without disks.
 * def is unchanged on failure. Checking that a disk can hold a bitmap
 * (qcow2) is the operation's: it knows the images. */
int checkpoint_def_align(CheckpointDef *def, const DomainDef *dom, char **ret_error);

/* The bitmap name defaults alone (REDEFINE without <domain>, as libvirt). */
int checkpoint_def_fill_bitmaps(CheckpointDef *def);
