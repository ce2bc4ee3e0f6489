/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libvirt <domain> subset qsnapd understands, as plain C structs, with
 * a pure parser (text in, struct out) and formatter (struct in, text out).
 * libxml2 stays inside xml-*.c. Elements and attributes we do not model
 * are kept verbatim and written back in their place.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/xml-domain-devices.h"
#include "util/error.h"

#define QSNAP_XML_NAMESPACE "http://example.org/qsnap/1"
#define LIBVIRT_QEMU_NAMESPACE "http://libvirt.org/schemas/domain/qemu/1.0"
#define XML_MAX_DOCUMENT_SIZE (4U * 1024U * 1024U)
/* qsnapd's cap on a domain's I/O threads (libvirt has none; QEMU makes a
 * thread and an event loop for each). */
#define DOMAIN_IOTHREADS_MAX 256U

typedef enum DiskFormat {
        DISK_FORMAT_QCOW2,
        DISK_FORMAT_RAW,
        _DISK_FORMAT_MAX,
        _DISK_FORMAT_INVALID = -EINVAL,
} DiskFormat;

const char *disk_format_to_string(DiskFormat f);
DiskFormat disk_format_from_string(const char *s);

/* <driver cache=…>, libvirt's names; DEFAULT: absent (QEMU's own mode,
 * and cache='default' reads as absent, as in libvirt). */
typedef enum DiskCache {
        DISK_CACHE_DEFAULT,
        DISK_CACHE_NONE,
        DISK_CACHE_WRITETHROUGH,
        DISK_CACHE_WRITEBACK,
        DISK_CACHE_DIRECTSYNC,
        DISK_CACHE_UNSAFE,
        _DISK_CACHE_MAX,
        _DISK_CACHE_INVALID = -EINVAL,
} DiskCache;

const char *disk_cache_to_string(DiskCache c);
DiskCache disk_cache_from_string(const char *s);

/* libvirt's qemuDomainDiskCachemodeFlags(): what a cache mode sets on the
 * nodes (cache.direct, cache.no-flush) and the device (write-cache); false
 * for DEFAULT, which sets none of them. */
bool disk_cache_flags(DiskCache c, bool *ret_write_cache, bool *ret_direct, bool *ret_no_flush);

/* <driver io=…>: the file node's aio; DEFAULT: absent (QEMU's threads). */
typedef enum DiskIo {
        DISK_IO_DEFAULT,
        DISK_IO_NATIVE,
        DISK_IO_THREADS,
        DISK_IO_IO_URING,
        _DISK_IO_MAX,
        _DISK_IO_INVALID = -EINVAL,
} DiskIo;

const char *disk_io_to_string(DiskIo io);
DiskIo disk_io_from_string(const char *s);

typedef struct DomainDisk {
        char *target;    /* <target dev='vda'/>: [a-z][a-z0-9]*, at most 16 chars */
        char *bus;       /* <target bus=…/>, "virtio" when absent */
        DiskFormat format; /* <driver name='qemu' type='qcow2|raw'/>, qcow2 when absent */
        DiskCache cache;   /* <driver cache=…/>: every node of the disk, the ones qsnapd adds later too */
        DiskIo io;         /* <driver io=…/>; native only with cache none or directsync (O_DIRECT) */
        unsigned iothread; /* <driver iothread='K'/>: runs in I/O thread K of DomainDef.iothread_ids
                            * (virtio only); 0: QEMU's main loop */
        char *source;    /* <source file=…/>: an absolute path */
        bool readonly;   /* <readonly/> */
        bool transient;  /* <transient/> */

        /* Output only (never parsed): the backing chain below `source`, top
         * first, written as nested <backingStore> elements when set. */
        char **backing_chain;
        DiskFormat *backing_formats;

        /* Unknown child elements of this <disk> and unknown attributes of
         * <disk>, serialized verbatim (each a complete XML fragment;
         * attributes as name="value" text). */
        char **extra_elements;
        char **extra_attributes;
        /* Unknown attributes of <driver>, <source> and <target> (discard=,
         * index=, rotation_rate=…), same form. */
        char **extra_driver_attributes;
        char **extra_source_attributes;
        char **extra_target_attributes;
} DomainDisk;

/* UEFI: libvirt's <os><loader readonly='yes' type='pflash'>CODE</loader>
 * <nvram template=… format=…>VARS</nvram> (store/xml-domain-firmware.c). */
typedef struct DomainFirmware {
        char *loader;            /* the firmware code, absolute; NULL: QEMU's own (SeaBIOS) */
        char *nvram;             /* the domain's variable store, absolute; NULL until DefineDomain
                                  * picks <state>/nvram/<uuid>_VARS.fd|.qcow2 */
        char *nvram_template;    /* template=: what a missing store is created from, absolute */
        DiskFormat nvram_format; /* format=: raw when absent (libvirt's default); qcow2
                                  * lets internal snapshots keep the variables too */
        bool nvram_format_given;
} DomainFirmware;

typedef struct DomainDef {
        char *type;        /* <domain type=…>, "kvm" when absent */
        char *name;        /* any non-empty text */
        char *uuid;        /* canonical lower-case; generated when absent */
        bool uuid_generated; /* the document had no <uuid> */
        char *description; /* may be NULL */
        uint64_t memory_kib;         /* <memory unit=…>, converted; required */
        uint64_t current_memory_kib; /* <currentMemory>, = memory when absent */
        unsigned vcpus;              /* <vcpu>, 1 when absent */
        char *os_type;    /* <os><type>hvm</type>, "hvm" when absent */
        char *arch;       /* <type arch=…>, may be NULL */
        char *machine;    /* <type machine=…>, may be NULL */
        char *emulator;   /* <devices><emulator>, may be NULL */
        char *monitor_path; /* <qsnap:monitor path=…/> (any place under <domain>
                             * or <devices>): attach, do not launch. NULL = managed */
        bool agent_channel; /* parsed only: a <channel type='unix'> whose <target type='virtio'
                             * name='org.qemu.guest_agent.0'/> (kept verbatim in extra_devices;
                             * qsnapd puts its socket in the runtime dir) */
        bool qemu_passthrough; /* parsed only: something in libvirt's QEMU namespace
                                * (<qemu:commandline>, …), kept verbatim */

        DomainDisk *disks;
        size_t n_disks;

        /* The I/O threads <iothreads>/<iothreadids> define (libvirt's ids:
         * those given, then the lowest unused up to the count), launched as
         * -object iothread,id=iothread<K>; both elements are kept verbatim
         * in extra_domain. At most DOMAIN_IOTHREADS_MAX. */
        unsigned *iothread_ids;
        size_t n_iothread_ids;

        DomainFirmware firmware; /* all NULL: BIOS */
        /* Interfaces, graphics, serials, CD-ROMs, CPU mode, direct kernel
         * boot, …: parsed for the launch, and kept verbatim in the extra_*
         * lists below as well (store/xml-domain-devices.h). */
        DomainDevices devices;

        /* Unknown children of <domain>, <os> and <devices>, verbatim, in order. */
        char **extra_domain;
        char **extra_os;
        char **extra_devices;
        /* Unknown attributes (and xmlns: declarations) of <domain>, <vcpu>
         * (placement=, current=) and <os> (firmware=), as name="value" text. */
        char **extra_domain_attributes;
        char **extra_vcpu_attributes;
        char **extra_os_attributes;
} DomainDef;

DomainDef *domain_def_free(DomainDef *def);
static inline void domain_def_freep(DomainDef **d) {
        if (*d)
                domain_def_free(*d);
}

/* Parses with XML_PARSE_NONET, no entity expansion, no DTD loading, at most
 * XML_MAX_DOCUMENT_SIZE bytes. A document that is not well-formed, not a
 * valid definition or too big is -QSNAP_E_INVALID_XML, with *ret_error set
 * to a message naming the line and the problem, e.g. "line 3: <memory> is
 * not a number: 'lots'". */
int domain_def_parse(const char *xml, size_t size, DomainDef **ret, char **ret_error);

typedef enum DomainFormatFlags {
        DOMAIN_FORMAT_BACKING_CHAIN = 1 << 0, /* write <backingStore> elements */
        DOMAIN_FORMAT_SECURE = 1 << 1,        /* keep secrets (libvirt's VIR_DOMAIN_XML_SECURE): what
                                               * is stored; without it <graphics passwd=…> is left out */
} DomainFormatFlags;

int domain_def_format(const DomainDef *def, DomainFormatFlags flags, char **ret);

/* Deep copy. */
int domain_def_copy(const DomainDef *def, DomainDef **ret);

/* The live definition (what GetXMLDesc shows while QEMU runs, as libvirt's
 * live XML): the kept <interface> of nets[i] gets <target dev='NAME'/>
 * (the tap qsnapd made); the kept <serial>/<console> of chars[i] gets
 * <source path='PTY'/> (and a console tty='PTY'). The parsed structs
 * follow. Implemented in store/xml-domain-devices.c. */
int domain_def_set_live_net_target(DomainDef *def, size_t i, const char *dev);
int domain_def_set_live_pty(DomainDef *def, size_t i, const char *pty);


/* Lookup by target name. */
DomainDisk *domain_def_find_disk(const DomainDef *def, const char *target);

/* BlockCopy's destination, libvirt's <disk type='file'><source file='…'/>
 * <driver type='qcow2|raw'/></disk>: the file (absolute) and the format
 * (_DISK_FORMAT_INVALID when <driver type> is absent). Same parser limits
 * and errors as domain_def_parse(). */
int domain_copy_dest_parse(const char *xml, size_t size, char **ret_file, DiskFormat *ret_format, char **ret_error);
