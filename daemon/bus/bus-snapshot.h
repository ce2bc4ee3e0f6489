/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot objects at /org/example/Snapshot1/domain/<dom>/snapshot/<snap>.
 */
#pragma once

#include "bus/bus-manager.h"
#include "core/snapshot.h"

#define QSNAP_SNAPSHOT_INTERFACE "org.example.Snapshot1.Snapshot"

char *bus_snapshot_path(const Snapshot *s);
int bus_snapshot_register(Bus *b);

/* Appends the paths of `list` as "ao". */
int bus_append_snapshot_paths(sd_bus_message *m, Snapshot *const *list, size_t n);
int bus_append_domain_snapshots(sd_bus_message *m, Domain *d);

/* Reads the flags of ListSnapshots (parent NULL) or ListChildren and
 * replies with the matching snapshots. */
int bus_reply_snapshot_list(sd_bus_message *m, const SnapshotTree *t, const Snapshot *parent, const char *method,
                            sd_bus_error *error);

/* A new snapshot: InterfacesAdded for it, and the properties of its
 * parent, of the previous current snapshot and of the domain. */
void bus_snapshot_emit_added(Bus *b, Snapshot *s, Snapshot *previous_current);
/* The current snapshot moved from `previous` (may be NULL) to the tree's
 * current one: IsCurrent of both. */
void bus_snapshot_emit_is_current(Bus *b, Domain *d, Snapshot *previous);
/* Snapshots were deleted: InterfacesRemoved for each name, Parent and
 * Children of `changed`, the domain's Snapshots and CurrentSnapshot. */
void bus_snapshot_emit_deleted(Bus *b, Domain *d, char *const *names, Snapshot *const *changed, size_t n_changed,
                               Snapshot *previous_current);
/* Before a domain's snapshots are forgotten: InterfacesRemoved for each. */
void bus_snapshot_emit_all_removed(Bus *b, Domain *d);
