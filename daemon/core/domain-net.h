/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Bridged network interfaces (<interface type='bridge'|'network'>) when
 * qsnapd makes their taps itself (ManagerConfig.net_taps: qsnapd runs as
 * root, not --user): the host admin's allow list (QEMU's bridge helper's
 * bridge.conf, --bridge-conf=), the bridge's existence, and the tap —
 * opened on /dev/net/tun, joined to the bridge, up, its MTU the bridge's
 * and its MAC the guest's with the first byte 0xfe (libvirt's) — whose
 * descriptor QEMU inherits (-netdev tap,fd=N). qsnapd keeps no copy: the
 * kernel removes the tap when QEMU, its last holder, ends. Without
 * net_taps QEMU runs its bridge helper (-netdev bridge), which checks the
 * same list itself. No D-Bus in here.
 */
#pragma once

#include <stdbool.h>

#include "core/domain.h"

/* The default of --bridge-conf=, QEMU's own. */
#define DOMAIN_NET_BRIDGE_CONF "/etc/qemu/bridge.conf"

/* Every bridged interface of def may be started: its bridge is allowed by
 * the allow list (-QSNAP_E_PATH_NOT_ALLOWED: the list does not allow it,
 * or cannot be read) and is an existing bridge (-QSNAP_E_INVALID_ARGUMENT);
 * *ret_message (may be NULL) names the interface, the bridge and the
 * list. Nothing is created. 0 without net_taps (the bridge helper checks). */
int domain_net_check(Domain *d, const DomainDef *def, char **ret_message);

/* The tap of bridged interface n (index i, for messages): *ret_fd
 * (O_CLOEXEC; the caller hands it to QEMU and closes it) and *ret_name
 * (n->target, else the kernel's qsnap<N>). -QSNAP_E_QEMU_FAILED with
 * *ret_message when the kernel refuses; nothing is left then. */
int domain_net_open_tap(Domain *d, const DomainNet *n, size_t i, int *ret_fd, char **ret_name, char **ret_message);

/* Whether bridge is allowed by the bridge helper's ACL file at path
 * (allow NAME|all, deny NAME|all — a deny wins —, include FILE, #
 * comments): 1 allowed, 0 not, -errno when a file cannot be read or has a
 * line the helper would refuse (*ret_message says which). Exposed for the
 * unit test. */
int domain_net_bridge_allowed(const char *path, const char *bridge, char **ret_message);
