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

/* s with every ',' doubled, as QEMU's option parser reads a literal ','
 * (a file name or a name inside -blockdev/-chardev/-name options). */
char *qemu_opt_escape(const char *s);

/* Appends to *argv what def's devices need (after the disks), and writes
 * the graphics password files QEMU reads at start (0600). net_fds (NULL
 * or one per interface, -1 for none): the tap QEMU inherits for a
 * bridged interface (core/domain-net.h); without one QEMU's bridge
 * helper makes it. files: see DeviceFiles. */
typedef struct DeviceFiles {
        /* The files QEMU gets by descriptor rather than by name (issue #10
         * §3), opened by core/domain-launch.c: QEMU opens no path itself.
         * kernel, initrd: descriptors QEMU inherits, named to it as
         * /proc/self/fd/N (its loader re-opens its own descriptor; -1 none).
         * A CD-ROM with a source has its -blockdev on the line already
         * (node = its target, raw over an fd set). char_sets: per hw->chars entry, the fd set holding a file
         * serial's or console's descriptor (0 none): -chardev file,path=
         * /dev/fdset/N. */
        int kernel, initrd;
        unsigned *char_sets;
} DeviceFiles;
/* chars[i] is a file serial or console with a chardev of its own (a
 * console repeating a serial is that serial's). */
bool domain_devices_char_is_file(const DomainDevices *hw, size_t i);

int domain_devices_argv(Domain *d, const DomainDef *def, const int *net_fds, const DeviceFiles *files, char ***argv);

/* Asks the running QEMU (query-chardev) for the pty of each pty serial
 * and console of the live definition and writes it there, as libvirt's
 * live XML has it (<source path='/dev/pts/N'/>, a console's tty=), and
 * saves it; then calls then(d) — also when QEMU refused, never after the
 * connection went away. Without ptys, then(d) at once. */
void domain_devices_query_ptys(Domain *d, void (*then)(Domain *d));

/* The entry of hw->chars whose chardev (char<k>) QEMU made for chars[i]:
 * i itself, or for a console that repeats a serial that serial's. */
size_t domain_devices_char_backend(const DomainDevices *hw, size_t i);
/* The socket of unix chars[k]: its <source path>, else the runtime dir's. */
char *domain_devices_char_socket(Domain *d, const DomainDevices *hw, size_t k);

/* Removes the sockets of the list above that QEMU left behind. */
void domain_devices_remove_runtime_files(Domain *d, const DomainDef *def);

/* The file paths def's devices make QEMU open, NULL-terminated, for the
 * path gate of manager_def_needs_host_admin(): writable, the files QEMU
 * writes or creates (serial/console files and sockets, channel sockets
 * but the agent's, graphics sockets given in the XML); else the files it
 * only reads (kernel, initrd, CD-ROM images). */
int domain_devices_paths(const DomainDef *def, bool writable, char ***ret);
