/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The bus face snapshots and checkpoints share (see bus-moment.h).
 */
#include "bus/bus-domain.h"
#include "bus/bus-errors.h"
#include "bus/bus-moment.h"
#include "util/util.h"

char *bus_moment_path(const BusMomentKind *k, const void *node) {
        return bus_domain_child_path(k->domain(node), k->kind, k->name(node));
}

int bus_moment_append_path(const BusMomentKind *k, sd_bus_message *m, const void *node) {
        _cleanup_free_ char *p = NULL;

        if (!node)
                return sd_bus_message_append(m, "o", "/");
        p = bus_moment_path(k, node);
        return p ? sd_bus_message_append(m, "o", p) : -ENOMEM;
}

int bus_moment_append_paths(const BusMomentKind *k, sd_bus_message *m, void *const *list, size_t n) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "o");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = bus_moment_append_path(k, m, list[i]);
        return r < 0 ? r : sd_bus_message_close_container(m);
}

/* Every moment of d (the Snapshots/Checkpoints property, sent whole with
 * each change): the domain's part of the paths is encoded once. */
int bus_moment_append_all(const BusMomentKind *k, sd_bus_message *m, Domain *d) {
        _cleanup_free_ char *domain_path = bus_domain_path(d), *prefix = NULL;
        int r;

        prefix = domain_path ? strjoin(domain_path, "/", k->kind) : NULL;
        if (!prefix)
                return -ENOMEM;
        r = sd_bus_message_open_container(m, 'a', "o");
        for (void *node = k->first(d); r >= 0 && node; node = k->next(node)) {
                _cleanup_free_ char *p = NULL;

                r = sd_bus_path_encode(prefix, k->name(node), &p);
                if (r >= 0)
                        r = sd_bus_message_append_basic(m, 'o', p);
        }
        return r < 0 ? r : sd_bus_message_close_container(m);
}

int bus_moment_reply_list(const BusMomentKind *k, sd_bus_message *m, Domain *d, const void *parent, const char *method,
                          sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ void **list = NULL;
        uint64_t flags;
        size_t n = 0;
        int r;

        r = bus_read_flags(m, method, k->list_all, &flags, error);
        if (r < 0)
                return r;
        r = k->list(d, parent, flags, &list, &n);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = bus_moment_append_paths(k, reply, list, n);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

int bus_moment_find(const BusMomentKind *k, Bus *b, const char *path, void **found) {
        _cleanup_free_ char *name = NULL;
        void *node;
        Domain *d;
        int r;

        r = bus_domain_child_decode(b, path, k->kind, &d, &name);
        if (r <= 0)
                return r;
        node = k->find(d, name);
        if (!node)
                return 0;
        *found = node;
        return 1;
}

void bus_moment_emit_removed(const BusMomentKind *k, Bus *b, Domain *d, char *const *names) {
        for (char *const *n = names; n && *n; n++) {
                _cleanup_free_ char *path = bus_domain_child_path(d, k->kind, *n);

                if (path)
                        (void) sd_bus_emit_interfaces_removed(b->bus, path, k->interface, NULL);
        }
}

void bus_moment_emit_all_removed(const BusMomentKind *k, Bus *b, Domain *d) {
        for (void *node = k->first(d); node; node = k->next(node)) {
                _cleanup_free_ char *path = bus_moment_path(k, node);

                if (path)
                        (void) sd_bus_emit_interfaces_removed(b->bus, path, k->interface, NULL);
        }
}

void bus_moment_emit_changed(const BusMomentKind *k, Bus *b, const void *node, char **names) {
        _cleanup_free_ char *path = bus_moment_path(k, node);

        if (path)
                (void) sd_bus_emit_properties_changed_strv(b->bus, path, k->interface, names);
}
