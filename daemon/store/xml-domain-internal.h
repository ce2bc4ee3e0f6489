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
        const xmlNode *iothreads, *iothreadids;
        unsigned iothreads_count; /* <iothreads>N</iothreads>, 0 when absent */
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

/* A <disk>'s <driver name='qemu' type= cache= io= iothread=>
 * (xml-domain-disk.c); io='native' needs O_DIRECT (cache none or
 * directsync), as QEMU does; other attributes are kept. */
int xml_domain_parse_disk_driver(XmlParser *p, const xmlNode *c, DomainDisk *d);

/* I/O threads (xml-domain-iothreads.c). <iothreads>, <iothreadids> under
 * <domain> (1: parsed, keep it verbatim), and the refusals of <cputune>'s
 * I/O thread pinning and of <defaultiothread>; 0 for any other element. */
int xml_domain_iothreads_parse_domain_child(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDef *def);
/* Any device but a modelled <disk device='disk'> (a virtio-scsi
 * <controller>, a CD-ROM, …) with <driver iothread=…> is refused. */
int xml_domain_iothreads_check_device(XmlParser *p, const xmlNode *n);
/* <driver iothread='K'> of a disk into d->iothread. */
int xml_domain_parse_disk_iothread(XmlParser *p, const xmlNode *c, DomainDisk *d);
/* After the whole document: the ids the count implies, and each disk's
 * iothread= names one of them on a virtio disk. */
int xml_domain_iothreads_finish(XmlParser *p, const xmlNode *root, const DomainDevicesSeen *seen, DomainDef *def);
