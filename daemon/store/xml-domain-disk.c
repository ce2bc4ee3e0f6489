/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A disk's <driver> in the <domain> codec (private to it, beside
 * xml-domain.c): the format, libvirt's cache= io= values, read and
 * checked, libvirt's meaning of each cache mode for QEMU's nodes and
 * device, and iothread= (xml-domain-iothreads.c checks it).
 */
#include "store/xml-domain-internal.h"
#include "util/string-table.h"

static const char *const disk_cache_table[_DISK_CACHE_MAX] = {
        [DISK_CACHE_DEFAULT] = "default",
        [DISK_CACHE_NONE] = "none",
        [DISK_CACHE_WRITETHROUGH] = "writethrough",
        [DISK_CACHE_WRITEBACK] = "writeback",
        [DISK_CACHE_DIRECTSYNC] = "directsync",
        [DISK_CACHE_UNSAFE] = "unsafe",
};

DEFINE_STRING_TABLE_LOOKUP(disk_cache, DiskCache);

static const char *const disk_io_table[_DISK_IO_MAX] = {
        [DISK_IO_DEFAULT] = "default",
        [DISK_IO_NATIVE] = "native",
        [DISK_IO_THREADS] = "threads",
        [DISK_IO_IO_URING] = "io_uring",
};

DEFINE_STRING_TABLE_LOOKUP(disk_io, DiskIo);

bool disk_cache_flags(DiskCache c, bool *ret_write_cache, bool *ret_direct, bool *ret_no_flush) {
        bool write_cache = true, direct = false, no_flush = false;

        switch (c) {
        case DISK_CACHE_DEFAULT:
        case _DISK_CACHE_MAX:
        case _DISK_CACHE_INVALID:
                return false;
        case DISK_CACHE_NONE:
                direct = true;
                break;
        case DISK_CACHE_WRITETHROUGH:
                write_cache = false;
                break;
        case DISK_CACHE_WRITEBACK:
                break;
        case DISK_CACHE_DIRECTSYNC:
                write_cache = false;
                direct = true;
                break;
        case DISK_CACHE_UNSAFE:
                no_flush = true;
                break;
        }
        if (ret_write_cache)
                *ret_write_cache = write_cache;
        if (ret_direct)
                *ret_direct = direct;
        if (ret_no_flush)
                *ret_no_flush = no_flush;
        return true;
}

static int parse_disk_cache(XmlParser *p, const xmlNode *c, DomainDisk *d) {
        _cleanup_free_ char *cache = NULL, *io = NULL;
        bool direct = false;
        int r;

        r = xml_attr_get(c, "cache", &cache);
        if (r >= 0)
                r = xml_attr_get(c, "io", &io);
        if (r < 0)
                return r;
        if (cache && (d->cache = disk_cache_from_string(cache)) < 0)
                return xml_parser_error(p, -EINVAL, c,
                                        "disk driver cache '%s' is not supported, expected 'default', 'none', "
                                        "'writethrough', 'writeback', 'directsync' or 'unsafe'",
                                        XML_QUOTE(cache));
        if (io && (d->io = disk_io_from_string(io)) < 0)
                return xml_parser_error(p, -EINVAL, c,
                                        "disk driver io '%s' is not supported, expected 'default', 'native', 'threads' "
                                        "or 'io_uring'",
                                        XML_QUOTE(io));
        /* QEMU refuses aio=native on a file opened without O_DIRECT at
         * start; refused here already, where the XML can be fixed. */
        (void) disk_cache_flags(d->cache, NULL, &direct, NULL);
        if (d->io == DISK_IO_NATIVE && !direct)
                return xml_parser_error(p, -EINVAL, c,
                                        "disk driver io='native' needs cache='none' or cache='directsync' "
                                        "(Linux native AIO works on O_DIRECT files only), not cache='%s'",
                                        disk_cache_to_string(d->cache));
        return 0;
}

/* <driver name='qemu' type='qcow2|raw'/> */
int xml_domain_parse_disk_driver(XmlParser *p, const xmlNode *c, DomainDisk *d) {
        _cleanup_free_ char *name = NULL, *format = NULL;
        int r;

        r = xml_attr_get(c, "name", &name);
        if (r < 0)
                return r;
        if (name && !streq(name, "qemu"))
                return xml_parser_error(p, -EINVAL, c, "disk driver name '%s' is not supported, expected 'qemu'",
                                        XML_QUOTE(name));
        r = xml_attr_get(c, "type", &format);
        if (r < 0)
                return r;
        if (format) {
                d->format = disk_format_from_string(format);
                if (d->format < 0)
                        return xml_parser_error(p, -EINVAL, c,
                                                "disk driver type '%s' is not supported, expected 'qcow2' or 'raw'",
                                                XML_QUOTE(format));
        }
        r = parse_disk_cache(p, c, d);
        if (r >= 0)
                r = xml_domain_parse_disk_iothread(p, c, d);
        if (r < 0)
                return r;
        return xml_collect_attributes(c, (const char *const[]) { "name", "type", "cache", "io", "iothread", NULL },
                                      QSNAP_XML_NAMESPACE, &d->extra_driver_attributes);
}
