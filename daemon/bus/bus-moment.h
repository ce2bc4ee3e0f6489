/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the Snapshot and Checkpoint objects share on the bus, as
 * core/moment.c shares their tree walk: a moment's object path ("/" for
 * none), arrays of paths, the List* methods under a kind's flags, the
 * object finder, and InterfacesRemoved for moments that went. Each kind
 * describes its nodes once with a BusMomentKind; its properties, methods
 * and vtable stay in its own bus-snapshot.c or bus-checkpoint.c.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "bus/bus-manager.h"
#include "core/domain.h"

typedef struct BusMomentKind {
        const char *kind;      /* the path element below the domain: "snapshot", "checkpoint" */
        const char *interface; /* the objects' interface */
        uint64_t list_all;     /* the list flags the kind knows */
        Domain *(*domain)(const void *node);
        const char *(*name)(const void *node);
        void *(*find)(Domain *d, const char *name);
        void *(*first)(Domain *d); /* creation order */
        void *(*next)(const void *node);
        /* The tree's list (parent NULL: the domain's) under the kind's
         * flags, a malloc'ed array in *ret. */
        int (*list)(Domain *d, const void *parent, uint64_t flags, void ***ret, size_t *ret_n);
} BusMomentKind;

/* <domain path>/<kind>/<name>; NULL on OOM. */
char *bus_moment_path(const BusMomentKind *k, const void *node);
/* An "o": node's path, "/" for NULL. */
int bus_moment_append_path(const BusMomentKind *k, sd_bus_message *m, const void *node);
/* An "ao" of the n nodes of list. */
int bus_moment_append_paths(const BusMomentKind *k, sd_bus_message *m, void *const *list, size_t n);
/* An "ao" of all of d's moments of kind k, in creation order. */
int bus_moment_append_all(const BusMomentKind *k, sd_bus_message *m, Domain *d);
/* A List* method (argument "t" flags): the reply to m, or an error for
 * flags the kind does not know. */
int bus_moment_reply_list(const BusMomentKind *k, sd_bus_message *m, Domain *d, const void *parent, const char *method,
                          sd_bus_error *error);
/* An object finder's answer for path: 1 with *found, 0 when not ours. */
int bus_moment_find(const BusMomentKind *k, Bus *b, const char *path, void **found);
/* InterfacesRemoved for the moments of d named in names (NULL-terminated,
 * may be NULL), or for all of d's moments. */
void bus_moment_emit_removed(const BusMomentKind *k, Bus *b, Domain *d, char *const *names);
void bus_moment_emit_all_removed(const BusMomentKind *k, Bus *b, Domain *d);
