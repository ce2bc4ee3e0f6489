/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libvirt <domain> codec: domain XML text in, DomainDef out, and back.
 * It owns the size cap for domain documents, the validation of every
 * element we model, the verbatim keeping of what we do not model, and a
 * writer shaped like `virsh dumpxml`; the hardened libxml2 set-up (no
 * network, no entities, no DTD, errors captured instead of printed) is
 * xml-util.c's. Nothing here logs or keeps state between calls: errors
 * travel back in *ret_error.
 */

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>

#include "store/xml-domain-firmware.h"
#include "store/xml-domain.h"
#include "store/xml-domain-internal.h"
#include "store/xml-util.h"
#include "util/string-table.h"
#include "util/util.h"

/* Depth of the elements whose unknown children we keep, for indentation. */
#define LEVEL_DOMAIN_CHILD 1
#define LEVEL_DEVICES_CHILD 2
#define LEVEL_DISK_CHILD 3

static const char *const disk_format_table[_DISK_FORMAT_MAX] = {
        [DISK_FORMAT_QCOW2] = "qcow2",
        [DISK_FORMAT_RAW] = "raw",
};

DEFINE_STRING_TABLE_LOOKUP(disk_format, DiskFormat);

static void domain_disk_done(DomainDisk *d) {
        free(d->target);
        free(d->bus);
        free(d->source);
        strv_free(d->backing_chain);
        free(d->backing_formats);
        strv_free(d->extra_elements);
        strv_free(d->extra_attributes);
        strv_free(d->extra_driver_attributes);
        strv_free(d->extra_source_attributes);
        strv_free(d->extra_target_attributes);
        *d = (DomainDisk) {};
}

static void disk_item_done(void *item) {
        domain_disk_done(item);
}

DomainDef *domain_def_free(DomainDef *def) {
        if (!def)
                return NULL;

        free(def->type);
        free(def->name);
        free(def->uuid);
        free(def->description);
        free(def->os_type);
        free(def->arch);
        free(def->machine);
        free(def->emulator);
        free(def->monitor_path);
        xml_domain_firmware_done(&def->firmware);
        xml_items_free(def->disks, def->n_disks, sizeof(DomainDisk), disk_item_done);
        free(def->iothread_ids);
        domain_devices_done(&def->devices);
        strv_free(def->extra_domain);
        strv_free(def->extra_os);
        strv_free(def->extra_devices);
        strv_free(def->extra_domain_attributes);
        strv_free(def->extra_vcpu_attributes);
        strv_free(def->extra_os_attributes);
        free(def);
        return NULL;
}

DomainDisk *domain_def_find_disk(const DomainDef *def, const char *target) {
        if (!def || !target)
                return NULL;
        for (size_t i = 0; i < def->n_disks; i++)
                if (streq_ptr(def->disks[i].target, target))
                        return &def->disks[i];
        return NULL;
}

/* ---- Checks shared by parser and writer ----------------------------------- */

/* Each returns NULL when the value is fine, else what is wrong with it. The
 * writer uses them too, so that what we write we can read back. */

static const char *check_name(const char *s) {
        if (isempty(s) || xml_is_blank(s))
                return "<name> is empty";
        return NULL;
}

static const char *check_domain_type(const char *s) {
        if (!s || !STR_IN_SET(s, "kvm", "qemu"))
                return "is not supported, expected 'kvm' or 'qemu'";
        return NULL;
}

static const char *check_absolute_path(const char *s) {
        if (isempty(s))
                return "is empty";
        if (s[0] != '/')
                return "is not an absolute path";
        return NULL;
}

static const char *check_target_dev(const char *s) {
        size_t n;

        if (!s || !(s[0] >= 'a' && s[0] <= 'z'))
                return "must match [a-z][a-z0-9]*";
        for (n = 1; s[n]; n++)
                if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9')))
                        return "must match [a-z][a-z0-9]*";
        if (n > 16)
                return "is longer than 16 characters";
        return NULL;
}

static const char *check_bus(const char *s) {
        /* libvirt's disk bus names. */
        if (!s || !STR_IN_SET(s, "virtio", "scsi", "sata", "ide", "usb", "sd", "fdc", "xen", "uml", "none"))
                return "is not a known disk bus";
        return NULL;
}

static const char *check_text(const char *s) {
        if (isempty(s) || xml_is_blank(s))
                return "is empty";
        return NULL;
}

/* Canonical lower-case 8-4-4-4-12 form. libvirt also accepts 32 bare hex
 * digits, and surrounding whitespace. */
static int uuid_canonicalize(const char *s, char ret[static 37]) {
        char hex[33];
        size_t n = 0, len = strlen(s);

        if (len != 36 && len != 32)
                return -EINVAL;
        for (size_t i = 0; i < len; i++) {
                char c = s[i];

                if (len == 36 && (i == 8 || i == 13 || i == 18 || i == 23)) {
                        if (c != '-')
                                return -EINVAL;
                        continue;
                }
                if (c >= 'A' && c <= 'F')
                        c = (char) (c - 'A' + 'a');
                else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
                        return -EINVAL;
                hex[n++] = c;
        }
        hex[n] = '\0';

        snprintf(ret, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
        return 0;
}

static const struct {
        const char *unit;
        uint64_t bytes;
} memory_units[] = {
        /* Case does not matter, as in libvirt's virScaleInteger(). */
        { "b", 1 },
        { "byte", 1 },
        { "bytes", 1 },
        { "KB", UINT64_C(1000) },
        { "k", UINT64_C(1) << 10 },
        { "KiB", UINT64_C(1) << 10 },
        { "MB", UINT64_C(1000000) },
        { "M", UINT64_C(1) << 20 },
        { "MiB", UINT64_C(1) << 20 },
        { "GB", UINT64_C(1000000000) },
        { "G", UINT64_C(1) << 30 },
        { "GiB", UINT64_C(1) << 30 },
        { "TB", UINT64_C(1000000000000) },
        { "T", UINT64_C(1) << 40 },
        { "TiB", UINT64_C(1) << 40 },
        { "PB", UINT64_C(1000000000000000) },
        { "P", UINT64_C(1) << 50 },
        { "PiB", UINT64_C(1) << 50 },
        { "EB", UINT64_C(1000000000000000000) },
        { "E", UINT64_C(1) << 60 },
        { "EiB", UINT64_C(1) << 60 },
};

static int compare_disk_refs(const void *a, const void *b) {
        const DomainDisk *const *x = a, *const *y = b;
        int c = strcmp((*x)->target, (*y)->target);

        if (c != 0)
                return c;
        return *x < *y ? -1 : *x > *y;
}

/* Sorting keeps this O(n log n): documents may list tens of thousands of
 * disks. Returns 1 and the two earliest indices sharing a target, 0 if all
 * targets differ. */
static int find_duplicate_target(const DomainDisk *disks, size_t n, size_t *ret_first, size_t *ret_second) {
        _cleanup_free_ const DomainDisk **refs = NULL;

        if (n < 2)
                return 0;
        refs = calloc(n, sizeof(DomainDisk *));
        if (!refs)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                refs[i] = &disks[i];
        qsort(refs, n, sizeof(DomainDisk *), compare_disk_refs);

        for (size_t i = 1; i < n; i++)
                if (streq(refs[i - 1]->target, refs[i]->target)) {
                        size_t first = (size_t) (refs[i - 1] - disks), second = (size_t) (refs[i] - disks);

                        /* Among equal targets the sort is by position, so the
                         * pair found first is the earliest two. */
                        *ret_first = first;
                        *ret_second = second;
                        return 1;
                }
        return 0;
}

static bool node_is_monitor(const xmlNode *n) {
        return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
                xmlStrEqual(n->ns->href, BAD_CAST QSNAP_XML_NAMESPACE) &&
                xmlStrEqual(n->name, BAD_CAST "monitor");
}

static int parser_memory(XmlParser *p, const xmlNode *n, uint64_t *ret_kib) {
        _cleanup_free_ char *text = NULL, *unit = NULL;
        const char *name = (const char *) n->name, *number;
        uint64_t value, scale = 1024, bytes;
        int r;

        r = xml_node_text(p, n, &text);
        if (r < 0)
                return r;
        r = xml_attr_get(n, "unit", &unit);
        if (r < 0)
                return r;

        if (unit) {
                scale = 0;
                for (size_t i = 0; i < ELEMENTSOF(memory_units); i++)
                        if (strcasecmp(memory_units[i].unit, unit) == 0) {
                                scale = memory_units[i].bytes;
                                break;
                        }
                if (scale == 0)
                        return xml_parser_error(p, -EINVAL, n, "<%s> has an unknown unit: '%s'", name, XML_QUOTE(unit));
        }

        number = xml_strip_blank(text);
        r = xml_parse_u64(number, &value);
        if (r == -ERANGE || (r >= 0 && value > UINT64_MAX / scale))
                return xml_parser_error(p, -EINVAL, n, "<%s> is too large: '%s'", name, XML_QUOTE(number));
        if (r < 0)
                return xml_parser_error(p, -EINVAL, n, "<%s> is not a number: '%s'", name, XML_QUOTE(number));
        if (value == 0)
                return xml_parser_error(p, -EINVAL, n, "<%s> must not be zero", name);

        /* Stored in KiB, rounded up like libvirt does. */
        bytes = value * scale;
        *ret_kib = bytes / 1024 + (bytes % 1024 != 0);
        return 0;
}

static int parser_vcpu(XmlParser *p, const xmlNode *n, unsigned *ret) {
        _cleanup_free_ char *text = NULL;
        const char *number;
        uint64_t v;
        int r;

        r = xml_node_text(p, n, &text);
        if (r < 0)
                return r;
        number = xml_strip_blank(text);
        r = xml_parse_u64(number, &v);
        if (r < 0 || v > UINT_MAX)
                return xml_parser_error(p, -EINVAL, n, "<vcpu> is not a valid count: '%s'", XML_QUOTE(number));
        if (v == 0)
                return xml_parser_error(p, -EINVAL, n, "<vcpu> must not be zero");
        *ret = (unsigned) v;
        return 0;
}

static int parser_path_attr(XmlParser *p, const xmlNode *n, const char *attr, bool required, char **ret) {
        _cleanup_free_ char *v = NULL;
        const char *problem;
        int r;

        r = xml_attr_get(n, attr, &v);
        if (r < 0)
                return r;
        if (!v) {
                if (required)
                        return xml_parser_error(p, -EINVAL, n, "<%s> has no %s= attribute", (const char *) n->name, attr);
                *ret = NULL;
                return 0;
        }
        problem = check_absolute_path(v);
        if (problem)
                return xml_parser_error(p, -EINVAL, n, "<%s %s='%s'> %s", (const char *) n->name, attr, XML_QUOTE(v), problem);
        *ret = TAKE_PTR(v);
        return 0;
}

static int parser_monitor(XmlParser *p, const xmlNode *n, const xmlNode **seen, DomainDef *def) {
        int r;

        if (*seen)
                return xml_parser_error(p, -EINVAL, n, "<qsnap:monitor> appears more than once, first on line %ld",
                                        xmlGetLineNo(*seen));
        *seen = n;
        r = parser_path_attr(p, n, "path", true, &def->monitor_path);
        if (r < 0)
                return r;
        return 0;
}

/* <target dev='vda' bus='virtio'/> */
static int parser_disk_target(XmlParser *p, const xmlNode *c, DomainDisk *d) {
        const char *problem;
        int r;

        r = xml_attr_get(c, "dev", &d->target);
        if (r < 0)
                return r;
        if (!d->target)
                return xml_parser_error(p, -EINVAL, c, "<target> has no dev= attribute");
        problem = check_target_dev(d->target);
        if (problem)
                return xml_parser_error(p, -EINVAL, c, "<target dev='%s'> %s", XML_QUOTE(d->target), problem);
        r = xml_attr_get(c, "bus", &d->bus);
        if (r < 0)
                return r;
        problem = d->bus ? check_bus(d->bus) : NULL;
        if (problem)
                return xml_parser_error(p, -EINVAL, c, "<target bus='%s'> %s", XML_QUOTE(d->bus), problem);
        return xml_collect_attributes(c, (const char *const[]) { "dev", "bus", NULL }, QSNAP_XML_NAMESPACE,
                                      &d->extra_target_attributes);
}

static int parser_disk(XmlParser *p, xmlNode *n, DomainDisk *ret) {
        _cleanup_(domain_disk_done) DomainDisk d = { .format = DISK_FORMAT_QCOW2 };
        _cleanup_free_ char *type = NULL, *device = NULL;
        const xmlNode *seen_driver = NULL, *seen_source = NULL, *seen_target = NULL;
        XmlList extra = { .strv = &d.extra_elements };
        int r;

        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        if (type && !streq(type, "file"))
                return xml_parser_error(p, -EINVAL, n, "disk type '%s' is not supported: only disk type='file' is supported",
                                        XML_QUOTE(type));
        r = xml_attr_get(n, "device", &device);
        if (r < 0)
                return r;
        if (device && !streq(device, "disk"))
                return xml_parser_error(p, -EINVAL, n, "disk device '%s' is not supported: only device='disk' is supported",
                                        XML_QUOTE(device));
        r = xml_collect_attributes(n, (const char *const[]) { "type", "device", NULL }, QSNAP_XML_NAMESPACE,
                                   &d.extra_attributes);
        if (r < 0)
                return r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (xml_node_is(c, "driver")) {
                        r = xml_parser_check_once(p, c, &seen_driver);
                        if (r < 0)
                                return r;
                        r = xml_domain_parse_disk_driver(p, c, &d);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "source")) {
                        r = xml_parser_check_once(p, c, &seen_source);
                        if (r < 0)
                                return r;
                        r = parser_path_attr(p, c, "file", true, &d.source);
                        if (r < 0)
                                return r;
                        r = xml_collect_attributes(c, (const char *const[]) { "file", NULL }, QSNAP_XML_NAMESPACE,
                                                   &d.extra_source_attributes);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "target")) {
                        r = xml_parser_check_once(p, c, &seen_target);
                        if (r < 0)
                                return r;
                        r = parser_disk_target(p, c, &d);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "readonly"))
                        d.readonly = true;
                else if (xml_node_is(c, "transient"))
                        d.transient = true;
                else if (xml_node_is(c, "backingStore"))
                        continue; /* output only: we learn the chain from the image */
                else {
                        r = xml_parser_keep_element(p, c, LEVEL_DISK_CHILD, &extra);
                        if (r < 0)
                                return r;
                }
        }

        if (!d.source)
                return xml_parser_error(p, -EINVAL, n, "<disk> has no <source file=…/>");
        if (!d.target)
                return xml_parser_error(p, -EINVAL, n, "disk '%s' has no <target dev=…/>", XML_QUOTE(d.source));
        if (!d.bus) {
                d.bus = strdup("virtio");
                if (!d.bus)
                        return -ENOMEM;
        }

        *ret = d;
        d = (DomainDisk) {};
        return 0;
}

static int parser_os(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen_devices, DomainDef *def) {
        const xmlNode *seen_type = NULL, *seen_loader = NULL, *seen_nvram = NULL;
        XmlList extra = { .strv = &def->extra_os };
        const char *problem;
        int r;

        r = xml_collect_attributes(n, (const char *const[]) { NULL }, QSNAP_XML_NAMESPACE, &def->extra_os_attributes);
        if (r < 0)
                return r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (xml_node_is(c, "type")) {
                        r = xml_parser_text_once(p, c, &seen_type, &def->os_type);
                        if (r < 0)
                                return r;
                        if (check_text(def->os_type))
                                return xml_parser_error(p, -EINVAL, c, "<os><type> is empty");
                        r = xml_attr_get(c, "arch", &def->arch);
                        if (r < 0)
                                return r;
                        problem = def->arch ? check_text(def->arch) : NULL;
                        if (problem)
                                return xml_parser_error(p, -EINVAL, c, "<type arch=…> %s", problem);
                        r = xml_attr_get(c, "machine", &def->machine);
                        if (r < 0)
                                return r;
                        problem = def->machine ? check_text(def->machine) : NULL;
                        if (problem)
                                return xml_parser_error(p, -EINVAL, c, "<type machine=…> %s", problem);
                } else {
                        /* <loader>, <nvram>: modelled, written by the firmware codec. */
                        r = xml_domain_firmware_parse(p, c, &seen_loader, &seen_nvram, def);
                        if (r > 0)
                                continue;
                        if (r == 0)
                                r = xml_domain_devices_parse_os_child(p, c, seen_devices, &def->devices);
                        if (r < 0)
                                return r;
                        r = xml_parser_keep_element(p, c, LEVEL_DEVICES_CHILD, &extra);
                        if (r < 0)
                                return r;
                }
        }
        return xml_domain_firmware_check(p, n, def);
}

/* The guest agent's <channel>: noted, and kept verbatim like any element
 * qsnapd does not model. Other channels are only kept. */
static int parser_agent_channel(XmlParser *p, const xmlNode *n, DomainDef *def) {
        _cleanup_free_ char *type = NULL, *target_type = NULL, *name = NULL;
        int r;

        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        for (const xmlNode *c = n->children; c; c = c->next) {
                if (c->type != XML_ELEMENT_NODE || !xml_node_is(c, "target"))
                        continue;
                if ((r = xml_attr_get(c, "type", &target_type)) < 0 || (r = xml_attr_get(c, "name", &name)) < 0)
                        return r;
                break;
        }
        if (!streq_ptr(target_type, "virtio") || !streq_ptr(name, "org.qemu.guest_agent.0"))
                return 0;
        if (!streq_ptr(type, "unix"))
                return xml_parser_error(p, -EINVAL, n, "the guest agent <channel> must be type='unix', not '%s'",
                                        XML_QUOTE(strna(type)));
        if (def->agent_channel)
                return xml_parser_error(p, -EINVAL, n, "a second guest agent <channel>");
        def->agent_channel = true;
        return 0;
}

static int parser_devices(XmlParser *p, xmlNode *n, DomainDef *def, const xmlNode **seen_monitor,
                          DomainDevicesSeen *seen_devices) {

        _cleanup_free_ const xmlNode **disk_nodes = NULL;
        const xmlNode *seen_emulator = NULL;
        XmlList extra = { .strv = &def->extra_devices };
        size_t allocated = 0, first, second;
        int r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (xml_node_is(c, "emulator")) {
                        const char *problem;

                        r = xml_parser_text_once(p, c, &seen_emulator, &def->emulator);
                        if (r < 0)
                                return r;
                        problem = check_absolute_path(def->emulator);
                        if (problem)
                                return xml_parser_error(p, -EINVAL, c, "<emulator> '%s' %s", XML_QUOTE(def->emulator), problem);

                } else if ((r = xml_domain_devices_parse_device(p, c, seen_devices, &def->devices)) != 0) {
                        /* Parsed for the launch (a CD-ROM too: never one of
                         * the disks), kept verbatim for GetXMLDesc. */
                        if (r < 0 || (r = xml_domain_iothreads_check_device(p, c)) < 0)
                                return r;
                        if (xml_node_is(c, "channel") && (r = parser_agent_channel(p, c, def)) < 0)
                                return r;
                        r = xml_parser_keep_element(p, c, LEVEL_DEVICES_CHILD, &extra);
                        if (r < 0)
                                return r;
                } else if (xml_node_is(c, "disk")) {
                        if (def->n_disks == allocated) {
                                size_t a = allocated > 0 ? allocated * 2 : 4;
                                DomainDisk *disks;
                                const xmlNode **nodes;

                                disks = reallocarray(def->disks, a, sizeof(DomainDisk));
                                if (!disks)
                                        return -ENOMEM;
                                def->disks = disks;
                                nodes = reallocarray(disk_nodes, a, sizeof(xmlNode *));
                                if (!nodes)
                                        return -ENOMEM;
                                disk_nodes = nodes;
                                allocated = a;
                        }
                        r = parser_disk(p, c, &def->disks[def->n_disks]);
                        if (r < 0)
                                return r;
                        disk_nodes[def->n_disks++] = c;

                } else if (node_is_monitor(c)) {
                        r = parser_monitor(p, c, seen_monitor, def);
                        if (r < 0)
                                return r;
                } else {
                        if (xml_node_is(c, "channel") && (r = parser_agent_channel(p, c, def)) < 0)
                                return r;
                        if ((r = xml_domain_iothreads_check_device(p, c)) < 0)
                                return r;
                        r = xml_parser_keep_element(p, c, LEVEL_DEVICES_CHILD, &extra);
                        if (r < 0)
                                return r;
                }
        }

        r = find_duplicate_target(def->disks, def->n_disks, &first, &second);
        if (r < 0)
                return r;
        if (r > 0)
                return xml_parser_error(p, -EINVAL, disk_nodes[second],
                                        "disk target '%s' is used more than once, first on line %ld",
                                        XML_QUOTE(def->disks[second].target), xmlGetLineNo(disk_nodes[first]));
        return xml_domain_devices_check_targets(p, n, &def->devices, def->disks, def->n_disks);
}

/* Where each element was first seen: the second one is an error naming it. */
typedef struct DomainSeen {
        const xmlNode *name, *uuid, *description, *memory, *current, *vcpu, *os, *devices, *monitor;
        DomainDevicesSeen hw;
} DomainSeen;

static int parser_uuid(XmlParser *p, const xmlNode *c, DomainSeen *seen, DomainDef *def) {
        _cleanup_free_ char *text = NULL;
        char uuid[37];
        int r;

        r = xml_parser_text_once(p, c, &seen->uuid, &text);
        if (r < 0)
                return r;
        if (uuid_canonicalize(xml_strip_blank(text), uuid) < 0)
                return xml_parser_error(p, -EINVAL, c, "<uuid> is not a valid UUID: '%s'", XML_QUOTE(text));
        def->uuid = strdup(uuid);
        return def->uuid ? 0 : -ENOMEM;
}

static int parser_domain_child(XmlParser *p, xmlNode *c, DomainSeen *seen, DomainDef *def, XmlList *extra) {
        const char *problem;
        int r;

        if (xml_node_is(c, "name")) {
                r = xml_parser_text_once(p, c, &seen->name, &def->name);
                if (r < 0)
                        return r;
                problem = check_name(def->name);
                return problem ? xml_parser_error(p, -EINVAL, c, "%s", problem) : 0;
        }
        if (xml_node_is(c, "uuid"))
                return parser_uuid(p, c, seen, def);
        if (xml_node_is(c, "description"))
                return xml_parser_text_once(p, c, &seen->description, &def->description);
        if (xml_node_is(c, "memory")) {
                r = xml_parser_check_once(p, c, &seen->memory);
                return r < 0 ? r : parser_memory(p, c, &def->memory_kib);
        }
        if (xml_node_is(c, "currentMemory")) {
                r = xml_parser_check_once(p, c, &seen->current);
                return r < 0 ? r : parser_memory(p, c, &def->current_memory_kib);
        }
        if (xml_node_is(c, "vcpu")) {
                r = xml_parser_check_once(p, c, &seen->vcpu);
                if (r >= 0)
                        r = parser_vcpu(p, c, &def->vcpus);
                return r < 0 ? r : xml_collect_attributes(c, (const char *const[]) { NULL }, QSNAP_XML_NAMESPACE,
                                                          &def->extra_vcpu_attributes);
        }
        if (xml_node_is(c, "os")) {
                r = xml_parser_check_once(p, c, &seen->os);
                return r < 0 ? r : parser_os(p, c, &seen->hw, def);
        }
        if (xml_node_is(c, "devices")) {
                r = xml_parser_check_once(p, c, &seen->devices);
                return r < 0 ? r : parser_devices(p, c, def, &seen->monitor, &seen->hw);
        }
        if (node_is_monitor(c))
                return parser_monitor(p, c, &seen->monitor, def);
        r = xml_domain_iothreads_parse_domain_child(p, c, &seen->hw, def);
        if (r == 0)
                r = xml_domain_devices_parse_domain_child(p, c, &seen->hw, &def->devices);
        if (r < 0)
                return r;
        return xml_parser_keep_element(p, c, LEVEL_DOMAIN_CHILD, extra);
}

/* What must be there, and the defaults of what may be left out. */
static int parser_domain_finish(XmlParser *p, const xmlNode *root, const DomainSeen *seen, DomainDef *def) {
        int r;

        if (!seen->name)
                return xml_parser_error(p, -EINVAL, root, "<domain> has no <name>");
        if (!seen->memory)
                return xml_parser_error(p, -EINVAL, root, "<domain> has no <memory>");
        if (!seen->current)
                def->current_memory_kib = def->memory_kib;
        else if (def->current_memory_kib > def->memory_kib)
                return xml_parser_error(p, -EINVAL, seen->current,
                                        "<currentMemory> (%" PRIu64 " KiB) is larger than <memory> (%" PRIu64 " KiB)",
                                        def->current_memory_kib, def->memory_kib);

        if (!def->uuid) {
                char uuid[37];

                r = uuid_generate_string(uuid);
                if (r < 0)
                        return r;
                def->uuid = strdup(uuid);
                if (!def->uuid)
                        return -ENOMEM;
                def->uuid_generated = true;
        }
        r = xml_domain_iothreads_finish(p, root, &seen->hw, def);
        if (r >= 0)
                r = free_and_strdup(&def->type, def->type ?: "kvm");
        if (r < 0)
                return r;
        return free_and_strdup(&def->os_type, def->os_type ?: "hvm");
}

static int parser_domain(XmlParser *p, xmlNode *root, DomainDef **ret) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        DomainSeen seen = {};
        XmlList extra = {};
        const char *problem;
        int r;

        def = calloc(1, sizeof(DomainDef));
        if (!def)
                return -ENOMEM;
        def->vcpus = 1;
        extra.strv = &def->extra_domain;

        r = xml_attr_get(root, "type", &def->type);
        if (r < 0)
                return r;
        if (def->type) {
                problem = check_domain_type(def->type);
                if (problem)
                        return xml_parser_error(p, -EINVAL, root, "domain type '%s' %s", XML_QUOTE(def->type), problem);
        }
        r = xml_collect_attributes(root, (const char *const[]) { "type", NULL }, QSNAP_XML_NAMESPACE,
                                   &def->extra_domain_attributes);
        if (r < 0)
                return r;

        for (xmlNode *c = root->children; c; c = c->next) {
                r = xml_parser_skip_node(p, root, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                r = parser_domain_child(p, c, &seen, def, &extra);
                if (r < 0)
                        return r;
        }
        r = parser_domain_finish(p, root, &seen, def);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(def);
        return 0;
}

/* Any element or attribute in libvirt's QEMU namespace (<qemu:commandline>,
 * <qemu:override>, …) hands QEMU arguments of the document's choosing. */
static bool uses_qemu_namespace(const xmlNode *n) {
        for (; n; n = n->next) {
                if (n->type != XML_ELEMENT_NODE)
                        continue;
                if (n->ns && n->ns->href && xmlStrEqual(n->ns->href, BAD_CAST LIBVIRT_QEMU_NAMESPACE))
                        return true;
                for (const xmlAttr *a = n->properties; a; a = a->next)
                        if (a->ns && a->ns->href && xmlStrEqual(a->ns->href, BAD_CAST LIBVIRT_QEMU_NAMESPACE))
                                return true;
                if (uses_qemu_namespace(n->children))
                        return true;
        }
        return false;
}

static int parse_domain_document(XmlParser *p, xmlNode *root, void *userdata) {
        DomainDef **ret = userdata;
        int r;

        r = parser_domain(p, root, ret);
        if (r >= 0)
                (*ret)->qemu_passthrough = uses_qemu_namespace(root);
        return r;
}

int domain_def_parse(const char *xml, size_t size, DomainDef **ret, char **ret_error) {
        DomainDef *def = NULL;
        int r;

        if (!ret || (!xml && size > 0))
                return -EINVAL;
        r = xml_parse_document(xml, size, XML_MAX_DOCUMENT_SIZE, "domain", parse_domain_document, &def, ret_error);
        if (r < 0)
                return r;
        *ret = def;
        return 0;
}

static int writer_check_def(const DomainDef *def) {
        int r;

        if (check_name(def->name))
                return -EINVAL;
        if (def->type && check_domain_type(def->type))
                return -EINVAL;
        if (def->uuid && uuid_canonicalize(def->uuid, (char[37]) {}) < 0)
                return -EINVAL;
        /* Written in KiB; parse_memory() must be able to read it back. */
        if (def->memory_kib == 0 || def->memory_kib > UINT64_MAX / 1024 ||
            def->current_memory_kib > def->memory_kib)
                return -EINVAL;
        if (def->os_type && check_text(def->os_type))
                return -EINVAL;
        if ((def->arch && check_text(def->arch)) || (def->machine && check_text(def->machine)))
                return -EINVAL;
        if (def->emulator && check_absolute_path(def->emulator))
                return -EINVAL;
        if (def->monitor_path && check_absolute_path(def->monitor_path))
                return -EINVAL;
        if (xml_domain_firmware_check_write(&def->firmware) < 0)
                return -EINVAL;

        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDisk *d = &def->disks[i];

                if (check_target_dev(d->target) || (d->bus && check_bus(d->bus)) ||
                    check_absolute_path(d->source) || !disk_format_to_string(d->format))
                        return -EINVAL;
                if (d->backing_formats)
                        for (size_t j = 0; d->backing_chain && d->backing_chain[j]; j++)
                                if (!disk_format_to_string(d->backing_formats[j]))
                                        return -EINVAL;
        }

        r = find_duplicate_target(def->disks, def->n_disks, &(size_t) { 0 }, &(size_t) { 0 });
        if (r < 0)
                return r;
        return r > 0 ? -EINVAL : 0;
}

/* libvirt nests the chain: each <backingStore> holds the next one, and an
 * empty <backingStore/> says the chain ends there. index='N' is what
 * "vda[N]" names in block job calls: the active image is 0, its backing
 * file 1, and so on down. */
static void w_backing_chain(XmlWriter *w, const DomainDisk *d) {
        size_t n = strv_length(d->backing_chain);

        for (size_t i = 0; i < n; i++) {
                int level = 2 * (LEVEL_DISK_CHILD + (int) i);

                xml_w_printf(w, "%*s<backingStore type='file' index='%zu'>\n", level, "", i + 1);
                if (d->backing_formats)
                        xml_w_printf(w, "%*s<format type='%s'/>\n", level + 2, "",
                                     disk_format_to_string(d->backing_formats[i]));
                xml_w_printf(w, "%*s<source", level + 2, "");
                xml_w_attr(w, "file", d->backing_chain[i]);
                xml_w_puts(w, "/>\n");
        }
        xml_w_printf(w, "%*s<backingStore/>\n", 2 * (LEVEL_DISK_CHILD + (int) n), "");
        for (size_t i = n; i-- > 0;)
                xml_w_printf(w, "%*s</backingStore>\n", 2 * (LEVEL_DISK_CHILD + (int) i), "");
}

/* Kept elements, without their secrets unless SECURE. */
static void w_kept_elements(XmlWriter *w, int level, char *const *l, DomainFormatFlags flags) {
        if (flags & DOMAIN_FORMAT_SECURE) {
                xml_w_extra_elements(w, level, l);
                return;
        }
        for (; l && *l && w->error == 0; l++) {
                _cleanup_free_ char *s = NULL;
                int r = xml_element_without_secrets(*l, level, &s);

                if (r < 0)
                        xml_writer_fail(w, r);
                else
                        xml_w_printf(w, "%*s%s\n", level * 2, "", s);
        }
}

static void w_disk(XmlWriter *w, const DomainDisk *d, DomainFormatFlags flags) {
        int level = 2 * LEVEL_DISK_CHILD;

        xml_w_printf(w, "%*s<disk type='file' device='disk'", level - 2, "");
        xml_w_extra_attributes(w, d->extra_attributes);
        xml_w_puts(w, ">\n");

        xml_w_printf(w, "%*s<driver name='qemu' type='%s'", level, "", disk_format_to_string(d->format));
        if (d->cache != DISK_CACHE_DEFAULT)
                xml_w_attr(w, "cache", disk_cache_to_string(d->cache));
        if (d->io != DISK_IO_DEFAULT)
                xml_w_attr(w, "io", disk_io_to_string(d->io));
        if (d->iothread > 0)
                xml_w_printf(w, " iothread='%u'", d->iothread);
        xml_w_extra_attributes(w, d->extra_driver_attributes);
        xml_w_puts(w, "/>\n");

        xml_w_printf(w, "%*s<source", level, "");
        xml_w_attr(w, "file", d->source);
        xml_w_extra_attributes(w, d->extra_source_attributes);
        xml_w_puts(w, "/>\n");

        if ((flags & DOMAIN_FORMAT_BACKING_CHAIN) && d->backing_chain)
                w_backing_chain(w, d);

        xml_w_printf(w, "%*s<target", level, "");
        xml_w_attr(w, "dev", d->target);
        xml_w_attr(w, "bus", d->bus ?: "virtio");
        xml_w_extra_attributes(w, d->extra_target_attributes);
        xml_w_puts(w, "/>\n");

        if (d->readonly)
                xml_w_printf(w, "%*s<readonly/>\n", level, "");
        if (d->transient)
                xml_w_printf(w, "%*s<transient/>\n", level, "");
        w_kept_elements(w, LEVEL_DISK_CHILD, d->extra_elements, flags);
        xml_w_printf(w, "%*s</disk>\n", level - 2, "");
}

static bool strv_has_prefix(char *const *l, const char *prefix) {
        for (; l && *l; l++)
                if (strncmp(*l, prefix, strlen(prefix)) == 0)
                        return true;
        return false;
}

int domain_def_format(const DomainDef *def, DomainFormatFlags flags, char **ret) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_(fclosep) FILE *f = NULL;
        XmlWriter w = {};
        size_t size = 0;
        bool monitor_ns_on_root;
        int r;

        if (!def || !ret)
                return -EINVAL;
        r = writer_check_def(def);
        if (r < 0)
                return r;

        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;
        w.f = f;

        /* Kept attributes may bind "qsnap" to something else; then the
         * monitor element declares our namespace locally instead. */
        monitor_ns_on_root = def->monitor_path && !strv_has_prefix(def->extra_domain_attributes, "xmlns:qsnap=");

        xml_w_puts(&w, "<domain");
        xml_w_attr(&w, "type", def->type ?: "kvm");
        if (monitor_ns_on_root)
                xml_w_attr(&w, "xmlns:qsnap", QSNAP_XML_NAMESPACE);
        xml_w_extra_attributes(&w, def->extra_domain_attributes);
        xml_w_puts(&w, ">\n");

        xml_w_text_element(&w, 1, "name", def->name);
        if (def->uuid) {
                char uuid[37];

                (void) uuid_canonicalize(def->uuid, uuid); /* checked above */
                xml_w_text_element(&w, 1, "uuid", uuid);
        }
        if (def->description)
                xml_w_text_element(&w, 1, "description", def->description);
        xml_w_printf(&w, "  <memory unit='KiB'>%" PRIu64 "</memory>\n", def->memory_kib);
        xml_w_printf(&w, "  <currentMemory unit='KiB'>%" PRIu64 "</currentMemory>\n",
                     def->current_memory_kib ?: def->memory_kib);
        xml_w_puts(&w, "  <vcpu");
        xml_w_extra_attributes(&w, def->extra_vcpu_attributes);
        xml_w_printf(&w, ">%u</vcpu>\n", def->vcpus ?: 1);

        xml_w_puts(&w, "  <os");
        xml_w_extra_attributes(&w, def->extra_os_attributes);
        xml_w_puts(&w, ">\n    <type");
        xml_w_attr(&w, "arch", def->arch);
        xml_w_attr(&w, "machine", def->machine);
        xml_w_puts(&w, ">");
        xml_w_escaped(&w, def->os_type ?: "hvm", false);
        xml_w_puts(&w, "</type>\n");
        /* libvirt's order: <type>, <firmware>, <loader>, <nvram>, the rest. */
        for (size_t i = 0; def->extra_os && def->extra_os[i]; i++)
                if (strncmp(def->extra_os[i], "<firmware", 9) == 0)
                        w_kept_elements(&w, LEVEL_DEVICES_CHILD, (char *[]) { def->extra_os[i], NULL }, flags);
        xml_domain_firmware_write(&w, &def->firmware);
        for (size_t i = 0; def->extra_os && def->extra_os[i]; i++)
                if (strncmp(def->extra_os[i], "<firmware", 9) != 0)
                        w_kept_elements(&w, LEVEL_DEVICES_CHILD, (char *[]) { def->extra_os[i], NULL }, flags);
        xml_w_puts(&w, "  </os>\n");

        w_kept_elements(&w, LEVEL_DOMAIN_CHILD, def->extra_domain, flags);

        xml_w_puts(&w, "  <devices>\n");
        if (def->emulator)
                xml_w_text_element(&w, 2, "emulator", def->emulator);
        for (size_t i = 0; i < def->n_disks; i++)
                w_disk(&w, &def->disks[i], flags);
        if (def->monitor_path) {
                xml_w_puts(&w, "    <qsnap:monitor");
                if (!monitor_ns_on_root)
                        xml_w_attr(&w, "xmlns:qsnap", QSNAP_XML_NAMESPACE);
                xml_w_attr(&w, "path", def->monitor_path);
                xml_w_puts(&w, "/>\n");
        }
        w_kept_elements(&w, LEVEL_DEVICES_CHILD, def->extra_devices, flags);
        xml_w_puts(&w, "  </devices>\n");
        xml_w_puts(&w, "</domain>\n");

        if (w.error < 0)
                return w.error;
        if (fflush(f) != 0 || ferror(f))
                return -ENOMEM;
        f = (fclose(f), NULL);

        *ret = TAKE_PTR(buf);
        return 0;
}

static int domain_disk_copy(const DomainDisk *s, DomainDisk *ret) {
        _cleanup_(domain_disk_done) DomainDisk d = {
                .format = s->format,
                .cache = s->cache,
                .io = s->io,
                .iothread = s->iothread,
                .readonly = s->readonly,
                .transient = s->transient,
        };

        if (xml_strdup_to(s->target, &d.target) < 0 ||
            xml_strdup_to(s->bus, &d.bus) < 0 ||
            xml_strdup_to(s->source, &d.source) < 0 ||
            xml_strv_copy(s->backing_chain, &d.backing_chain) < 0 ||
            xml_strv_copy(s->extra_elements, &d.extra_elements) < 0 ||
            xml_strv_copy(s->extra_attributes, &d.extra_attributes) < 0 ||
            xml_strv_copy(s->extra_driver_attributes, &d.extra_driver_attributes) < 0 ||
            xml_strv_copy(s->extra_source_attributes, &d.extra_source_attributes) < 0 ||
            xml_strv_copy(s->extra_target_attributes, &d.extra_target_attributes) < 0)
                return -ENOMEM;

        if (s->backing_formats) {
                size_t n = strv_length(s->backing_chain);

                d.backing_formats = calloc(n > 0 ? n : 1, sizeof(DiskFormat));
                if (!d.backing_formats)
                        return -ENOMEM;
                memcpy(d.backing_formats, s->backing_formats, n * sizeof(DiskFormat));
        }

        *ret = d;
        d = (DomainDisk) {};
        return 0;
}

static int disk_item_copy(const void *from, void *to) {
        return domain_disk_copy(from, to);
}

int domain_def_copy(const DomainDef *def, DomainDef **ret) {
        _cleanup_(domain_def_freep) DomainDef *c = NULL;
        int r;

        if (!def || !ret)
                return -EINVAL;

        c = calloc(1, sizeof(DomainDef));
        if (!c)
                return -ENOMEM;
        c->memory_kib = def->memory_kib;
        c->current_memory_kib = def->current_memory_kib;
        c->vcpus = def->vcpus;
        c->uuid_generated = def->uuid_generated;
        c->qemu_passthrough = def->qemu_passthrough;
        c->agent_channel = def->agent_channel;

        if (xml_strdup_to(def->type, &c->type) < 0 ||
            xml_strdup_to(def->name, &c->name) < 0 ||
            xml_strdup_to(def->uuid, &c->uuid) < 0 ||
            xml_strdup_to(def->description, &c->description) < 0 ||
            xml_strdup_to(def->os_type, &c->os_type) < 0 ||
            xml_strdup_to(def->arch, &c->arch) < 0 ||
            xml_strdup_to(def->machine, &c->machine) < 0 ||
            xml_strdup_to(def->emulator, &c->emulator) < 0 ||
            xml_strdup_to(def->monitor_path, &c->monitor_path) < 0 ||
            xml_strv_copy(def->extra_domain, &c->extra_domain) < 0 ||
            xml_strv_copy(def->extra_os, &c->extra_os) < 0 ||
            xml_strv_copy(def->extra_devices, &c->extra_devices) < 0 ||
            xml_strv_copy(def->extra_domain_attributes, &c->extra_domain_attributes) < 0 ||
            xml_strv_copy(def->extra_vcpu_attributes, &c->extra_vcpu_attributes) < 0 ||
            xml_strv_copy(def->extra_os_attributes, &c->extra_os_attributes) < 0)
                return -ENOMEM;

        if (def->n_iothread_ids > 0) {
                c->iothread_ids = calloc(def->n_iothread_ids, sizeof(unsigned));
                if (!c->iothread_ids)
                        return -ENOMEM;
                memcpy(c->iothread_ids, def->iothread_ids, def->n_iothread_ids * sizeof(unsigned));
                c->n_iothread_ids = def->n_iothread_ids;
        }
        r = xml_domain_firmware_copy(&def->firmware, &c->firmware);
        if (r < 0)
                return r;
        r = xml_items_copy(def->disks, def->n_disks, sizeof(DomainDisk), disk_item_copy, disk_item_done,
                           (void **) &c->disks, &c->n_disks);
        if (r < 0)
                return r;
        r = domain_devices_copy(&def->devices, &c->devices);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- BlockCopy's destination: <disk type='file'><source file/><driver type/></disk> ---- */

static int parser_copy_dest(XmlParser *p, const xmlNode *n, char **ret_file, DiskFormat *ret_format) {
        _cleanup_free_ char *type = NULL, *file = NULL, *fmt = NULL;
        const xmlNode *seen_source = NULL, *seen_driver = NULL;
        DiskFormat format = _DISK_FORMAT_INVALID;
        int r;

        if (!n || !xml_node_is(n, "disk"))
                return xml_parser_error(p, -EINVAL, n, "the root element must be <disk>, not <%s>",
                                        n ? (const char *) n->name : "");
        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        if (type && !streq(type, "file"))
                return xml_parser_error(p, -EINVAL, n, "<disk type='%s'> is not supported: only type='file'",
                                        XML_QUOTE(type));
        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                if (xml_node_is(c, "source")) {
                        r = xml_parser_check_once(p, c, &seen_source);
                        if (r < 0)
                                return r;
                        r = parser_path_attr(p, c, "file", true, &file);
                        if (r < 0)
                                return r;
                } else if (xml_node_is(c, "driver")) {
                        r = xml_parser_check_once(p, c, &seen_driver);
                        if (r < 0)
                                return r;
                        r = xml_attr_get(c, "type", &fmt);
                        if (r < 0)
                                return r;
                        if (fmt) {
                                format = disk_format_from_string(fmt);
                                if (format < 0)
                                        return xml_parser_error(p, -EINVAL, c,
                                                                "<driver type='%s'> is not supported: qcow2 or raw",
                                                                XML_QUOTE(fmt));
                        }
                }
                /* <target>, <backingStore> and the like say nothing about the copy. */
        }
        if (!file)
                return xml_parser_error(p, -EINVAL, n, "<disk> has no <source file=…/>");
        *ret_file = TAKE_PTR(file);
        *ret_format = format;
        return 0;
}

typedef struct CopyDest {
        char *file;
        DiskFormat format;
} CopyDest;

static int parse_copy_dest_document(XmlParser *p, xmlNode *root, void *userdata) {
        CopyDest *c = userdata;
        return parser_copy_dest(p, root, &c->file, &c->format);
}

int domain_copy_dest_parse(const char *xml, size_t size, char **ret_file, DiskFormat *ret_format, char **ret_error) {
        CopyDest c = {};
        int r;

        if (!ret_file || !ret_format || (!xml && size > 0))
                return -EINVAL;
        r = xml_parse_document(xml, size, XML_MAX_DOCUMENT_SIZE, NULL, parse_copy_dest_document, &c, ret_error);
        if (r < 0)
                return r;
        *ret_file = c.file;
        *ret_format = c.format;
        return 0;
}
