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
/* PropertiesChanged of node's names (NULL-terminated: STRV_MAKE()). */
void bus_moment_emit_changed(const BusMomentKind *k, Bus *b, const void *node, char **names);

/* ---- a kind's BusMomentKind and shared properties ---- */

#define BUS_MOMENT_PROPERTY_(fn, Node, expr)                                                           \
        static int fn(sd_bus *bus, const char *path, const char *interface, const char *property,      \
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {                    \
                const Node *node = userdata;                                                           \
                return expr;                                                                           \
        }

/* For a kind whose Node (core/snapshot.h, core/checkpoint.h) has tree,
 * def, parent, children, n_children and next, whose Def has name,
 * description and creation_time, kept in Domain.tree_field with
 * prefix##_tree_find() and prefix##_tree_list(): `static const
 * BusMomentKind prefix##_moment_kind`, the exported bus_##prefix##_path(),
 * bus_append_##prefix##_paths() and bus_append_domain_##prefix##s(), the
 * object finder prefix##_object_find() and the getters of the properties
 * every moment has, prefix##_property_get_{name, description, parent,
 * children, creation_time, is_current}. */
#define DEFINE_BUS_MOMENT_KIND(prefix, Node, tree_field, kind_string, iface, list_all_flags)            \
        static Domain *prefix##_kind_domain(const void *node) {                                        \
                return ((const Node *) node)->tree->domain;                                            \
        }                                                                                              \
        static const char *prefix##_kind_name(const void *node) {                                      \
                return ((const Node *) node)->def->name;                                               \
        }                                                                                              \
        static void *prefix##_kind_find(Domain *d, const char *name) {                                 \
                return prefix##_tree_find(&d->tree_field, name);                                       \
        }                                                                                              \
        static void *prefix##_kind_first(Domain *d) {                                                  \
                return d->tree_field.first;                                                            \
        }                                                                                              \
        static void *prefix##_kind_next(const void *node) {                                            \
                return ((const Node *) node)->next;                                                    \
        }                                                                                              \
        static int prefix##_kind_list(Domain *d, const void *parent, uint64_t flags, void ***ret,      \
                                      size_t *ret_n) {                                                 \
                Node **list = NULL;                                                                    \
                int r = prefix##_tree_list(&d->tree_field, parent, flags, &list, ret_n);               \
                if (r >= 0)                                                                            \
                        *ret = (void **) list;                                                         \
                return r;                                                                              \
        }                                                                                              \
        static const BusMomentKind prefix##_moment_kind = {                                            \
                .kind = kind_string,                                                                   \
                .interface = iface,                                                                    \
                .list_all = list_all_flags,                                                            \
                .domain = prefix##_kind_domain,                                                        \
                .name = prefix##_kind_name,                                                            \
                .find = prefix##_kind_find,                                                            \
                .first = prefix##_kind_first,                                                          \
                .next = prefix##_kind_next,                                                            \
                .list = prefix##_kind_list,                                                            \
        };                                                                                             \
        char *bus_##prefix##_path(const Node *node) {                                                  \
                return bus_moment_path(&prefix##_moment_kind, node);                                   \
        }                                                                                              \
        int bus_append_##prefix##_paths(sd_bus_message *m, Node *const *list, size_t n) {              \
                return bus_moment_append_paths(&prefix##_moment_kind, m, (void *const *) list, n);     \
        }                                                                                              \
        int bus_append_domain_##prefix##s(sd_bus_message *m, Domain *d) {                              \
                return bus_moment_append_all(&prefix##_moment_kind, m, d);                             \
        }                                                                                              \
        static int prefix##_object_find(sd_bus *bus, const char *path, const char *interface,          \
                                        void *userdata, void **found, sd_bus_error *error) {           \
                return bus_moment_find(&prefix##_moment_kind, userdata, path, found);                  \
        }                                                                                              \
        BUS_MOMENT_PROPERTY_(prefix##_property_get_name, Node,                                         \
                             sd_bus_message_append(reply, "s", node->def->name))                       \
        BUS_MOMENT_PROPERTY_(prefix##_property_get_description, Node,                                  \
                             sd_bus_message_append(reply, "s", strempty(node->def->description)))      \
        BUS_MOMENT_PROPERTY_(prefix##_property_get_parent, Node,                                       \
                             bus_moment_append_path(&prefix##_moment_kind, reply, node->parent))       \
        BUS_MOMENT_PROPERTY_(prefix##_property_get_children, Node,                                     \
                             bus_append_##prefix##_paths(reply, node->children, node->n_children))     \
        BUS_MOMENT_PROPERTY_(prefix##_property_get_creation_time, Node,                                \
                             sd_bus_message_append(reply, "t",                                         \
                                                   (uint64_t) (node->def->creation_time > 0            \
                                                                       ? node->def->creation_time      \
                                                                       : 0)))                          \
        BUS_MOMENT_PROPERTY_(prefix##_property_get_is_current, Node,                                   \
                             sd_bus_message_append(reply, "b", node->tree->current == node))
