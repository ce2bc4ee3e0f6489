/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checkpoint objects at /org/example/Snapshot1/domain/<dom>/checkpoint/<cp>,
 * and the checkpoint methods of the Domain object (CreateCheckpoint,
 * ListCheckpoints, LookupCheckpoint), which bus-domain.c puts in its
 * vtable.
 */
#pragma once

#include "bus/bus-manager.h"
#include "core/checkpoint.h"

#define QSNAP_CHECKPOINT_INTERFACE "org.example.Snapshot1.Checkpoint"

char *bus_checkpoint_path(const Checkpoint *c);
int bus_checkpoint_register(Bus *b);

/* Domain.Checkpoints, in creation order. */
int bus_append_checkpoint_paths(sd_bus_message *m, Checkpoint *const *list, size_t n);
int bus_append_domain_checkpoints(sd_bus_message *m, Domain *d);

/* The Domain methods. */
int bus_method_create_checkpoint(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_list_checkpoints(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_lookup_checkpoint(sd_bus_message *m, void *userdata, sd_bus_error *error);

void bus_checkpoint_emit_added(Bus *b, Checkpoint *c, Checkpoint *previous_current);
void bus_checkpoint_emit_changed(Bus *b, Domain *d, char *const *removed, Checkpoint *const *changed,
                                 size_t n_changed, Checkpoint *previous_current);
void bus_checkpoint_emit_all_removed(Bus *b, Domain *d);
