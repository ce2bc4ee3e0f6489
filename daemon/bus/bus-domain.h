/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Domain objects at /org/example/Snapshot1/domain/<escaped name>.
 */
#pragma once

#include "bus/bus-manager.h"
#include "core/domain.h"

#define QSNAP_DOMAIN_PREFIX QSNAP_ROOT_PATH "/domain"
#define QSNAP_DOMAIN_INTERFACE "org.example.Snapshot1.Domain"

char *bus_domain_path(const Domain *d);
int bus_domain_register(Bus *b);

/* Emits the properties that `what` names. */
void bus_domain_emit_changed(Bus *b, Domain *d, DomainChange what);
