/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Between xml-domain.c's parser and xml-domain-devices.c (private to the
 * <domain> codec): the elements of the devices qsnapd launches, read into
 * DomainDevices. Each function returns 1 when it parsed n (the caller then
 * keeps n verbatim as it keeps unknown elements, with whatever the
 * function added to it, e.g. a generated <mac>), 0 when n is not one of
 * its elements, or an error through xml_parser_error().
 */
#pragma once

#include "store/xml-domain-devices.h"
#include "store/xml-domain.h"
#include "store/xml-util.h"

/* Where each element that may appear once was first seen. */
typedef struct DomainDevicesSeen {
        const xmlNode *cpu, *on_poweroff, *on_reboot, *kernel, *initrd, *cmdline, *video;
} DomainDevicesSeen;

/* <cpu>, <on_poweroff>, <on_reboot> under <domain>. */
int xml_domain_devices_parse_domain_child(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDevices *d);
/* <kernel>, <initrd>, <cmdline>, <boot> under <os>. */
int xml_domain_devices_parse_os_child(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDevices *d);
/* <interface>, <graphics>, <serial>, <console>, <channel>, <video> and
 * <disk device='cdrom'> under <devices>. */
int xml_domain_devices_parse_device(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDevices *d);
/* CD-ROM targets differ from each other and from the disks'. */
int xml_domain_devices_check_targets(XmlParser *p, const xmlNode *devices, const DomainDevices *d,
                                     const DomainDisk *disks, size_t n_disks);

/* <driver cache= io=> of a <disk> into d->cache and d->io
 * (xml-domain-disk.c); io='native' needs O_DIRECT (cache none or
 * directsync), as QEMU does. */
int xml_domain_parse_disk_cache(XmlParser *p, const xmlNode *c, DomainDisk *d);
