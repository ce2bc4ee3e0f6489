/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * org.example.Snapshot1.Manager at /org/example/Snapshot1, the
 * ObjectManager, and the observer that turns model changes into
 * InterfacesAdded/Removed and PropertiesChanged. Also the one place that
 * talks to systemd: a launched QEMU goes into a transient scope of its own.
 */
#include "config.h"
#include "bus/bus-domain.h"
#include "bus/bus-errors.h"
#include "bus/bus-job.h"
#include "bus/bus-manager.h"
#include "bus/bus-checkpoint.h"
#include "bus/bus-snapshot.h"
#include "core/domain-jobs.h"
#include "util/util.h"

#define ACTION_MANAGE_DOMAINS "org.example.snapshot1.manage-domains"
#define ACTION_HOST_ADMIN "org.example.snapshot1.host-admin"

static int emit_domains_changed(Bus *b) {
        return sd_bus_emit_properties_changed(b->bus, QSNAP_ROOT_PATH, QSNAP_MANAGER_INTERFACE, "Domains", NULL);
}

/* ---- observer ---- */

static void on_domain_added(Domain *d, void *userdata) {
        Bus *b = userdata;
        _cleanup_free_ char *path = bus_domain_path(d);

        if (!path)
                return (void) log_oom();
        (void) sd_bus_emit_object_added(b->bus, path);
        (void) emit_domains_changed(b);
}

static void on_domain_removed(Domain *d, void *userdata) {
        Bus *b = userdata;
        _cleanup_free_ char *path = bus_domain_path(d);

        if (!path)
                return (void) log_oom();
        /* The object must still resolve while InterfacesRemoved is built;
         * the model has unlinked it, so name the interfaces explicitly. */
        (void) sd_bus_emit_interfaces_removed(b->bus, path, QSNAP_DOMAIN_INTERFACE, NULL);
        (void) emit_domains_changed(b);
}

static void on_domain_changed(Domain *d, DomainChange what, void *userdata) {
        bus_domain_emit_changed(userdata, d, what);
}

static int on_scope_started(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (e)
                log_warning("Could not move QEMU into its own scope (%s: %s); it stays in ours.", e->name, strna(e->message));
        return 0;
}

static void on_domain_launched(Domain *d, pid_t pid, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *unit = NULL, *description = NULL;
        Bus *b = userdata;
        int r;

        if (!b->use_scopes)
                return;
        /* Stopping qsnapd.service must not take the VMs down with it. */
        unit = strprintf("qsnap-%s.scope", d->def->uuid);
        description = strprintf("QEMU of qsnapd domain %s", d->def->name);
        if (!unit || !description)
                return (void) log_oom();
        r = sd_bus_message_new_method_call(b->bus, &m, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                           "org.freedesktop.systemd1.Manager", "StartTransientUnit");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", unit, "replace");
        if (r >= 0)
                r = sd_bus_message_append(m, "a(sv)", 3,
                                          "PIDs", "au", 1, (uint32_t) pid,
                                          "Description", "s", description,
                                          "CollectMode", "s", "inactive-or-failed");
        if (r >= 0)
                r = sd_bus_message_append(m, "a(sa(sv))", 0);
        if (r >= 0)
                r = sd_bus_call_async(b->bus, NULL, m, on_scope_started, NULL, 0);
        if (r < 0)
                log_warning_errno(r, "Failed to ask systemd for scope %s: %m", unit);
        else
                log_debug("Moving QEMU pid %d into %s.", (int) pid, unit);
}

static void on_snapshot_added(Domain *d, Snapshot *s, Snapshot *previous_current, void *userdata) {
        bus_snapshot_emit_added(userdata, s, previous_current);
}

static void on_current_snapshot_changed(Domain *d, Snapshot *previous, void *userdata) {
        bus_snapshot_emit_is_current(userdata, d, previous);
}

static void on_snapshots_removed(Domain *d, void *userdata) {
        bus_snapshot_emit_all_removed(userdata, d);
}

static void on_snapshots_deleted(Domain *d, char *const *names, Snapshot *const *changed, size_t n_changed,
                                 Snapshot *previous_current, void *userdata) {
        bus_snapshot_emit_deleted(userdata, d, names, changed, n_changed, previous_current);
}

static void on_checkpoint_added(Domain *d, Checkpoint *c, Checkpoint *previous_current, void *userdata) {
        bus_checkpoint_emit_added(userdata, c, previous_current);
}

static void on_checkpoints_changed(Domain *d, char *const *removed, Checkpoint *const *changed, size_t n_changed,
                                   Checkpoint *previous_current, void *userdata) {
        bus_checkpoint_emit_changed(userdata, d, removed, changed, n_changed, previous_current);
}

static void on_checkpoints_removed(Domain *d, void *userdata) {
        bus_checkpoint_emit_all_removed(userdata, d);
}

static void on_job_event(Domain *d, Job *j, JobEvent e, void *userdata) {
        bus_job_emit(userdata, d, j, e);
}

static const DomainObserver bus_observer = {
        .job_event = on_job_event,
        .snapshot_added = on_snapshot_added,
        .current_snapshot_changed = on_current_snapshot_changed,
        .snapshots_removed = on_snapshots_removed,
        .snapshots_deleted = on_snapshots_deleted,
        .checkpoint_added = on_checkpoint_added,
        .checkpoints_changed = on_checkpoints_changed,
        .checkpoints_removed = on_checkpoints_removed,
        .domain_added = on_domain_added,
        .domain_removed = on_domain_removed,
        .domain_changed = on_domain_changed,
        .domain_launched = on_domain_launched,
};

/* ---- properties ---- */

static int property_get_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", PACKAGE_VERSION);
}

static int property_get_domains(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Bus *b = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "o");
        if (r < 0)
                return r;
        for (Domain *d = b->manager->domains; d; d = d->next) {
                _cleanup_free_ char *p = bus_domain_path(d);
                if (!p)
                        return -ENOMEM;
                r = sd_bus_message_append(reply, "o", p);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(reply);
}

/* ---- methods ---- */

/* A new attached domain: the reply waits for the attach, so that State is
 * final and the domain free for calls when the caller hears of it. */
static void on_defined_attached(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        _cleanup_free_ char *path = bus_domain_path(d);

        /* Defined whatever the attach found: State says what it found. */
        if (path)
                (void) sd_bus_reply_method_return(m, "o", path);
        else
                (void) sd_bus_reply_method_errno(m, -ENOMEM, NULL);
}

static int method_define_domain(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        _cleanup_free_ char *message = NULL, *path = NULL, *why = NULL;
        const char *xml, *details[3] = { "domain", NULL, NULL };
        Bus *b = userdata;
        uint64_t flags;
        Domain *d, *existing;
        bool created;
        int r;

        r = sd_bus_message_read(m, "st", &xml, &flags);
        if (r < 0)
                return r;
        if (flags != 0)
                return bus_error_unknown_flags(error, "DefineDomain", flags, 0);

        /* Validate before asking polkit; the name is a detail of the check. */
        r = domain_def_parse(xml, strlen(xml), &def, &message);
        if (r < 0)
                return sd_bus_error_setf(error, QSNAP_ERROR_INVALID_XML, "Invalid domain XML: %s", strna(message));
        details[1] = def->name;
        /* Judged against the definition the domain has now, on every run
         * of the handler: it may have changed while polkit was deciding. */
        existing = manager_find_domain(b->manager, def->name);
        r = manager_def_needs_host_admin(b->manager, def, existing ? existing->def : NULL, &why);
        if (r < 0)
                return r;
        if (r > 0)
                log_debug("DefineDomain of '%s' needs %s: %s.", def->name, ACTION_HOST_ADMIN, why);
        r = bus_verify_polkit_async(m, why ? ACTION_HOST_ADMIN : ACTION_MANAGE_DOMAINS, details, &b->polkit, error);
        if (r < 0 && why) {
                _cleanup_free_ char *text = strprintf("Not authorized: %s is needed to define '%s' because %s "
                                                      "(manage-domains defines only domains whose disks are regular "
                                                      "files below the image roots).",
                                                      ACTION_HOST_ADMIN, def->name, why);
                return text ? bus_polkit_explain_denial(error, text) : -ENOMEM;
        }
        if (r <= 0)
                return r < 0 ? r : 1;

        /* The reference goes to on_defined_attached() when an attach began. */
        r = manager_define_domain(b->manager, xml, on_defined_attached, sd_bus_message_ref(m), &d, &created,
                                  &message);
        if (r > 0)
                return 1;
        sd_bus_message_unref(m);
        if (r < 0)
                return bus_error_set_errno_message(error, r, message);
        path = bus_domain_path(d);
        if (!path)
                return -ENOMEM;
        return sd_bus_reply_method_return(m, "o", path);
}

static int method_list_domains(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_message_new_method_return(m, &reply);
        if (r < 0)
                return r;
        r = property_get_domains(NULL, NULL, NULL, NULL, reply, userdata, error);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_domain(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *path = NULL;
        Bus *b = userdata;
        const char *name;
        Domain *d;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        d = manager_find_domain(b->manager, name);
        if (!d)
                return sd_bus_error_setf(error, QSNAP_ERROR_NO_SUCH_DOMAIN, "No domain named '%s'.", name);
        path = bus_domain_path(d);
        if (!path)
                return -ENOMEM;
        return sd_bus_reply_method_return(m, "o", path);
}

/* ---- object tree ---- */

static int push_path(char ***l, char *path) {
        int r;

        if (!path)
                return -ENOMEM;
        r = strv_push(l, path);
        if (r < 0)
                free(path);
        return r;
}

/* The one enumerator below QSNAP_DOMAIN_PREFIX: every domain, its
 * snapshots and its jobs (the finders are beside their vtables). */
static int node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        _cleanup_strv_free_ char **l = NULL;
        Bus *b = userdata;
        int r;

        for (Domain *d = b->manager->domains; d; d = d->next) {
                _cleanup_free_ Job **jobs = NULL;
                size_t n = 0;

                r = push_path(&l, bus_domain_path(d));
                for (Snapshot *s = d->snapshots.first; r >= 0 && s; s = s->next)
                        r = push_path(&l, bus_snapshot_path(s));
                for (Checkpoint *c = d->checkpoints.first; r >= 0 && c; c = c->next)
                        r = push_path(&l, bus_checkpoint_path(c));
                if (r >= 0)
                        r = domain_list_jobs(d, &jobs, &n);
                for (size_t i = 0; r >= 0 && i < n; i++)
                        if (domain_job_domain(jobs[i]))
                                r = push_path(&l, bus_job_path(d, jobs[i]));
                if (r < 0)
                        return r;
        }
        *nodes = TAKE_PTR(l);
        return 1;
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Domains", "ao", property_get_domains, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("DefineDomain", SD_BUS_ARGS("s", xml, "t", flags), SD_BUS_RESULT("o", domain),
                                method_define_domain, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListDomains", SD_BUS_NO_ARGS, SD_BUS_RESULT("ao", domains), method_list_domains,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetDomain", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", domain), method_get_domain,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int bus_manager_register(Bus *b) {
        int r;

        r = sd_bus_add_object_vtable(b->bus, NULL, QSNAP_ROOT_PATH, QSNAP_MANAGER_INTERFACE, manager_vtable, b);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Manager interface: %m");
        r = sd_bus_add_object_manager(b->bus, NULL, QSNAP_ROOT_PATH);
        if (r < 0)
                return log_error_errno(r, "Failed to register the object manager: %m");
        r = sd_bus_add_node_enumerator(b->bus, NULL, QSNAP_DOMAIN_PREFIX, node_enumerator, b);
        if (r < 0)
                return log_error_errno(r, "Failed to register the object enumerator: %m");
        r = bus_domain_register(b);
        if (r < 0)
                return r;
        r = bus_snapshot_register(b);
        if (r < 0)
                return r;
        r = bus_checkpoint_register(b);
        if (r < 0)
                return r;
        r = bus_job_register(b);
        if (r < 0)
                return r;
        manager_set_observer(b->manager, &bus_observer, b);
        return 0;
}
