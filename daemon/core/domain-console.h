/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A running domain's serial ports, consoles and graphics as descriptors
 * (Domain.OpenConsole, libvirt's virDomainOpenConsole): on the system bus
 * the runtime folder and QEMU's ptys are not the caller's to open, so
 * qsnapd opens the console for a caller polkit allowed and hands over the
 * descriptor — a pty in raw mode, or a connection to the socket QEMU
 * listens on. No D-Bus in here.
 *
 * Device names, libvirt's aliases: "" the first <console> (else the first
 * <serial>), "serialN" the <serial> on target port N, "consoleN" the N-th
 * <console> (from 0; a console that repeats a serial is that serial).
 */
#pragma once

#include "core/domain.h"

/* The descriptor is the callee's only while the callback runs (a D-Bus
 * reply copies it); fd is -1 when error < 0. */
typedef void (*DomainConsoleFunc)(Domain *d, int error, const char *message, int fd, void *userdata);

/* Whether dev can be opened now, checked before authorization:
 * -QSNAP_E_NOT_RUNNING (shut off), -QSNAP_E_INVALID_ARGUMENT (no such
 * device), -QSNAP_E_UNSUPPORTED (a file or a connecting socket, or a QEMU
 * qsnapd did not launch); *ret_message says which. */
int domain_console_check(Domain *d, const char *dev, char **ret_message);

/* Opens dev once QEMU confirmed it (query-chardev names the pty; a socket
 * is connected). `done` is called exactly once, never from inside the
 * call; -QSNAP_E_NOT_RUNNING when QEMU went away meanwhile. */
int domain_console_open(Domain *d, const char *dev, DomainConsoleFunc done, void *userdata, char **ret_message);

/* Graphics idx (the idx-th <graphics>, VNC or SPICE) of the running
 * domain as a new client connection (libvirt's virDomainOpenGraphicsFD):
 * one end of a socketpair goes to QEMU (getfd, add_client), the other to
 * `done`. QEMU's own authentication stands (a VNC passwd= is asked for).
 * Before authorization: -QSNAP_E_NOT_RUNNING, -QSNAP_E_INVALID_ARGUMENT
 * (no such graphics); later -QSNAP_E_QEMU_FAILED with QEMU's text. */
int domain_graphics_check(Domain *d, unsigned idx, char **ret_message);
int domain_graphics_open(Domain *d, unsigned idx, DomainConsoleFunc done, void *userdata, char **ret_message);
