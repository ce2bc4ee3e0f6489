/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The devices of a libvirt <domain> that qsnapd launches besides its disks
 * (issue #14): network interfaces, graphics, serial ports and consoles,
 * channels (the guest agent's), CD-ROMs, the CPU mode, direct kernel boot,
 * the boot order and what poweroff and reboot do. Plain structs, no
 * libxml2: store/xml-domain-devices.c fills them while xml-domain.c's
 * parser reads the document.
 *
 * Each element parsed here is also kept verbatim by xml-domain.c (with
 * what the parser generated added to it, e.g. an interface's <mac>), so
 * GetXMLDesc writes back everything libvirt wrote, including the parts
 * qsnapd does not use (<address>, <alias>, …), in the document's order.
 * A CD-ROM is never one of DomainDef's disks: snapshots, block jobs and
 * the Disks property never see it (libvirt's snapshot='no' for read-only
 * disks).
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum DomainNetType {
        DOMAIN_NET_USER,    /* <interface type='user'>: QEMU's user-mode stack */
        DOMAIN_NET_NETWORK, /* <interface type='network'>: the bridge of that network */
        DOMAIN_NET_BRIDGE,  /* <interface type='bridge'>: <source bridge=…> */
        _DOMAIN_NET_MAX,
        _DOMAIN_NET_INVALID = -EINVAL,
} DomainNetType;

typedef struct DomainNet {
        DomainNetType type;
        char *mac;    /* <mac address=…>: generated (52:54:00:…) when absent */
        char *model;  /* <model type=…>: virtio (default), e1000, e1000e, rtl8139 */
        char *bridge; /* the bridge to attach to (network: <source bridge=…> or the network's name) */
        char *target; /* <target dev=…>: the tap's name; NULL (or a name of the reserved
                       * vnet…/qsnap… ranges, libvirt's rule): the kernel picks qsnap<N> */
} DomainNet;

typedef enum DomainGraphicsType {
        DOMAIN_GRAPHICS_VNC,
        DOMAIN_GRAPHICS_SPICE,
        _DOMAIN_GRAPHICS_MAX,
        _DOMAIN_GRAPHICS_INVALID = -EINVAL,
} DomainGraphicsType;

typedef struct DomainGraphics {
        DomainGraphicsType type;
        char *address; /* listen= or <listen type='address' address=…>; NULL: a UNIX socket */
        char *socket;  /* <listen type='socket' socket=…>; NULL: in the runtime dir */
        int port;      /* port=; -1: autoport (or none given) */
        char *passwd;  /* passwd=: a secret (GetXMLDesc leaves it out without SECURE) */
} DomainGraphics;

typedef enum DomainCharType {
        DOMAIN_CHAR_PTY,
        DOMAIN_CHAR_UNIX,
        DOMAIN_CHAR_FILE,
        _DOMAIN_CHAR_MAX,
        _DOMAIN_CHAR_INVALID = -EINVAL,
} DomainCharType;

typedef enum DomainCharRole {
        DOMAIN_CHAR_SERIAL,  /* <serial> */
        DOMAIN_CHAR_CONSOLE, /* <console> */
        DOMAIN_CHAR_CHANNEL, /* <channel> */
        _DOMAIN_CHAR_ROLE_MAX,
} DomainCharRole;

typedef struct DomainChar {
        DomainCharRole role;
        DomainCharType type;
        char *path;       /* <source path=…> of unix and file; NULL: unix in the runtime dir */
        bool append;      /* file: <source append='on'> */
        bool connect;     /* unix: <source mode='connect'> (default bind: QEMU listens) */
        bool virtio;      /* console/channel: <target type='virtio'> (console default: serial) */
        char *name;       /* channel: <target name=…> (org.qemu.guest_agent.0) */
        unsigned port;    /* serial/console: <target port=…>, 0 when absent */
} DomainChar;

typedef struct DomainCdrom {
        char *target; /* <target dev=…> */
        char *bus;    /* <target bus=…>: sata (default), ide or scsi */
        char *source; /* <source file=…>, NULL: an empty drive */
} DomainCdrom;

typedef enum DomainCpuMode {
        DOMAIN_CPU_DEFAULT,          /* no <cpu>, or a mode we keep without using */
        DOMAIN_CPU_HOST_PASSTHROUGH, /* -cpu host (KVM), max (TCG) */
        DOMAIN_CPU_HOST_MODEL,       /* the same: QEMU has no host-model of its own */
        _DOMAIN_CPU_MAX,
} DomainCpuMode;

typedef enum DomainLifecycle {
        DOMAIN_LIFECYCLE_DEFAULT,  /* element absent */
        DOMAIN_LIFECYCLE_DESTROY,  /* QEMU exits */
        DOMAIN_LIFECYCLE_RESTART,  /* on_reboot only: the guest resets */
        DOMAIN_LIFECYCLE_PRESERVE, /* on_poweroff only: the guest stops (paused) */
        _DOMAIN_LIFECYCLE_MAX,
        _DOMAIN_LIFECYCLE_INVALID = -EINVAL,
} DomainLifecycle;

typedef struct DomainDevices {
        DomainNet *nets;
        size_t n_nets;
        DomainGraphics *graphics;
        size_t n_graphics;
        DomainChar *chars; /* serials, consoles and channels in document order */
        size_t n_chars;
        DomainCdrom *cdroms;
        size_t n_cdroms;
        char *video;       /* <video><model type=…>; NULL: none (VGA when there is graphics) */
        DomainCpuMode cpu_mode;
        char *kernel;      /* <os><kernel>, absolute */
        char *initrd;      /* <os><initrd>, absolute */
        char *cmdline;     /* <os><cmdline> */
        char *boot_order;  /* the <os><boot dev=…> in order as QEMU's letters (c, d, n, a) */
        DomainLifecycle on_poweroff;
        DomainLifecycle on_reboot;
        /* <qemu:commandline><qemu:arg value=…/> (libvirt's QEMU namespace),
         * appended to QEMU's command line as they are; defining them needs
         * host-admin (DomainDef.qemu_passthrough). */
        char **qemu_args;
} DomainDevices;

void domain_devices_done(DomainDevices *d);
int domain_devices_copy(const DomainDevices *from, DomainDevices *to);

const char *domain_net_type_to_string(DomainNetType t);
DomainNetType domain_net_type_from_string(const char *s);
const char *domain_graphics_type_to_string(DomainGraphicsType t);
DomainGraphicsType domain_graphics_type_from_string(const char *s);
const char *domain_char_type_to_string(DomainCharType t);
DomainCharType domain_char_type_from_string(const char *s);
const char *domain_lifecycle_to_string(DomainLifecycle l);
DomainLifecycle domain_lifecycle_from_string(const char *s);

#define DOMAIN_AGENT_CHANNEL_NAME "org.qemu.guest_agent.0"
