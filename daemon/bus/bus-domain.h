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
/* The object of a domain's snapshot or job: <domain path>/<kind>/<name>,
 * each element escaped; NULL on OOM. */
char *bus_domain_child_path(const Domain *d, const char *kind, const char *name);
/* The inverse for an object finder: 1 with the domain and the (unescaped)
 * name when path is <prefix>/<domain>/<kind>/<name> of a known domain,
 * 0 otherwise. */
int bus_domain_child_decode(Bus *b, const char *path, const char *kind, Domain **ret_domain, char **ret_name);
int bus_domain_register(Bus *b);

/* Emits the properties that `what` names. */
void bus_domain_emit_changed(Bus *b, Domain *d, DomainChange what);
