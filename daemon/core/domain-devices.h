/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU's options for a domain's devices besides its disks (core/domain-
 * devices.c): the accelerator from <domain type>, the CPU, direct kernel
 * boot and boot order, poweroff/reboot actions, network interfaces,
 * graphics and video, serial ports, consoles, channels and CD-ROMs, and
 * the sockets in the runtime dir they listen on. No D-Bus in here.
 *
 * Runtime files, besides core/domain.c's (all under the runtime dir):
 *   <uuid>.vnc, <uuid>.spice   a graphics socket without <listen>
 *   <uuid>.channel<N>          any other channel without <source path>
 *   <uuid>.serial<N>           a unix serial/console without <source path>
 *   <uuid>.graphics<N>.secret  a graphics password, for QEMU's secret object
 */
#pragma once

#include <stdbool.h>

#include "core/domain.h"

/* Appends to *argv what def's devices need (after the disks), and writes
 * the graphics password files QEMU reads at start (0600). */
int domain_devices_argv(Domain *d, const DomainDef *def, char ***argv);

/* Removes the sockets of the list above that QEMU left behind. */
void domain_devices_remove_runtime_files(Domain *d, const DomainDef *def);

/* Every file path def's devices make QEMU open or create (kernel, initrd,
 * CD-ROM images, serial/console files and sockets, channel sockets
 * (not the agent's: always <uuid>.agent) and graphics sockets given in the XML), NULL-terminated, for the path gate
 * of manager_def_needs_host_admin(). */
int domain_devices_paths(const DomainDef *def, char ***ret);
