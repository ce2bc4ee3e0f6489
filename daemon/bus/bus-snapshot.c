/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * org.example.Snapshot1.Snapshot: the properties of one snapshot, its XML
 * and its children; Delete and CheckDelete (snapshot-delete.c does the work),
 * Revert and CheckRevert (snapshot-revert.c does the work).
 */
#include "bus/bus-domain.h"
#include "bus/bus-errors.h"
#include "bus/bus-job.h"
#include "bus/bus-moment.h"
#include "bus/bus-snapshot.h"
#include "core/domain.h"
#include "core/measure.h"
#include "ops/snapshot-delete.h"
#include "ops/snapshot-revert.h"
#include "util/util.h"

#define ACTION_READ_SECURE "org.example.snapshot1.read-secure"
#define ACTION_MANAGE_SNAPSHOTS "org.example.snapshot1.manage-snapshots"

DEFINE_BUS_MOMENT_KIND(snapshot, Snapshot, snapshots, "snapshot", QSNAP_SNAPSHOT_INTERFACE, SNAPSHOT_LIST_ALL);

/* ---- properties (the ones every moment has: DEFINE_BUS_MOMENT_KIND) ---- */

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Snapshot *s = userdata;
        /* A redefined snapshot may not say (libvirt's own fixtures do that). */
        return sd_bus_message_append(reply, "s", s->def->has_state ? snapshot_state_to_string(s->def->state) : "nostate");
}

static int property_get_location(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Snapshot *s = userdata;
        return sd_bus_message_append(reply, "s", snapshot_kind_to_string(snapshot_kind(s)));
}

static int property_get_memory(sd_bus *bus, const char *path, const char *interface, const char *property,
                               sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Snapshot *s = userdata;
        return sd_bus_message_append(reply, "s", snapshot_location_to_string(snapshot_memory(s)));
}

static int property_get_has_metadata(sd_bus *bus, const char *path, const char *interface, const char *property,
                                     sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        /* Every snapshot with an object has stored metadata. */
        return sd_bus_message_append(reply, "b", true);
}

/* ---- methods ---- */

static int method_get_xml_desc(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *xml = NULL;
        Snapshot *s = userdata;
        uint64_t flags;
        int r;

        r = bus_read_flags(m, "GetXMLDesc", SNAPSHOT_XML_SECURE, &flags, error);
        if (r < 0)
                return r;
        if (flags & SNAPSHOT_XML_SECURE) {
                const char *details[] = { "domain", s->tree->domain->def->name, NULL };

                r = bus_verify_polkit_async(m, ACTION_READ_SECURE, details,
                                            &bus_from_manager(s->tree->domain->manager)->polkit, error);
                if (r <= 0)
                        return r < 0 ? r : 1;
        }
        r = snapshot_def_format(s->def, flags & SNAPSHOT_XML_SECURE ? SNAPSHOT_FORMAT_SECURE : 0, &xml);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "s", xml);
}

int bus_reply_snapshot_list(sd_bus_message *m, const SnapshotTree *t, const Snapshot *parent, const char *method,
                            sd_bus_error *error) {
        return bus_moment_reply_list(&snapshot_moment_kind, m, t->domain, parent, method, error);
}

static int method_list_children(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Snapshot *s = userdata;
        return bus_reply_snapshot_list(m, s->tree, s, "ListChildren", error);
}

static int method_check_delete(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        Snapshot *s = userdata;
        uint64_t flags, bytes = 0;
        int r, r2;

        r = bus_read_flags(m, "CheckDelete", SNAPSHOT_DELETE_ALL, &flags, error);
        if (r < 0)
                return r;
        measure_notes_reset(s->tree->domain->manager);
        r = snapshot_delete_check(s, flags, &bytes, &message);
        if (r == -ENOMEM)
                return r;
        /* The merges' sizes come from qemu-img measure, run as children: the
         * call comes back when they are done (only when the answer needs
         * them: the check passed, or failed on free space). */
        if (r >= 0 || r == -QSNAP_E_NO_SPACE) {
                r2 = bus_measure_first(m, s->tree->domain->manager, &bus_from_manager(s->tree->domain->manager)->measure,
                                       error);
                if (r2 != 0)
                        return r2;
        } else
                measure_notes_reset(s->tree->domain->manager);
        return sd_bus_reply_method_return(m, "bst", r >= 0, r >= 0 ? "" : strna(message), bytes);
}

static void reply_deleted(Domain *d, int error, const char *message, Job *job, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        _cleanup_free_ char *path = NULL;
        int r;

        if (error < 0) {
                r = bus_reply_errno_message(m, error, message);
        } else {
                path = job ? bus_job_path(d, job) : strdup("/");
                r = path ? sd_bus_reply_method_return(m, "o", path) : -ENOMEM;
        }
        if (r < 0)
                log_debug_errno(r, "Failed to send a reply: %m");
}

static int method_delete(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        Snapshot *s = userdata;
        Domain *d = s->tree->domain;
        const char *details[] = { "domain", d->def->name, NULL };
        uint64_t flags;
        int r;

        r = bus_read_flags(m, "Delete", SNAPSHOT_DELETE_ALL, &flags, error);
        if (r < 0)
                return r;
        /* Refused calls cost no polkit round trip and say what CheckDelete
         * says; the sizes are measured first, as for CheckDelete. */
        measure_notes_reset(d->manager);
        r = snapshot_delete_check(s, flags, NULL, &message);
        if (r >= 0 || r == -QSNAP_E_NO_SPACE) {
                int k = bus_measure_first(m, d->manager, &bus_from_manager(d->manager)->measure, error);
                if (k != 0)
                        return k;
        } else
                measure_notes_reset(d->manager);
        if (r < 0)
                return bus_error_set_errno_message(error, r, message);
        r = bus_verify_polkit_async(m, ACTION_MANAGE_SNAPSHOTS, details, &bus_from_manager(d->manager)->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = snapshot_delete(d, s, flags, reply_deleted, m, &message);
        return bus_async_call_result(m, r, message, error);
}

/* ---- signals ---- */

static void emit_properties(Bus *b, const Snapshot *s, char **names) {
        bus_moment_emit_changed(&snapshot_moment_kind, b, s, names);
}

/* ---- revert ---- */

static void reply_reverted(Domain *d, int error, const char *message, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        int r;

        /* State, Disks, CurrentSnapshot and IsCurrent went out as they changed. */
        if (error < 0)
                r = bus_reply_errno_message(m, error, message);
        else
                r = sd_bus_reply_method_return(m, "");
        if (r < 0)
                log_debug_errno(r, "Failed to send a reply: %m");
}

/* Revert's and CheckRevert's flags, read and checked. */
static int read_revert_flags(sd_bus_message *m, const char *method, uint64_t *ret, sd_bus_error *error) {
        uint64_t flags;
        int r;

        r = bus_read_flags(m, method, SNAPSHOT_REVERT_ALL, &flags, error);
        if (r < 0)
                return r;
        if ((flags & SNAPSHOT_REVERT_RUNNING) && (flags & SNAPSHOT_REVERT_PAUSED))
                return sd_bus_error_setf(error, QSNAP_ERROR_INVALID_ARGUMENT,
                                         "%s: RUNNING (1) and PAUSED (2) exclude each other.", method);
        *ret = flags;
        return 0;
}

static int method_revert(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(revert_plan_freep) RevertPlan *plan = NULL;
        _cleanup_free_ char *message = NULL;
        Snapshot *s = userdata;
        Domain *d = s->tree->domain;
        const char *details[] = { "domain", d->def->name, NULL };
        uint64_t flags = 0;
        int r;

        r = read_revert_flags(m, "Revert", &flags, error);
        if (r < 0)
                return r;
        /* The same checks as CheckRevert, before polkit is asked. */
        r = revert_plan_new(s, flags, &plan, &message);
        if (r < 0)
                return bus_error_set_errno_message(error, r, message);
        r = bus_verify_polkit_async(m, ACTION_MANAGE_SNAPSHOTS, details, &bus_from_manager(d->manager)->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = snapshot_revert(TAKE_PTR(plan), reply_reverted, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int method_check_revert(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(revert_plan_freep) RevertPlan *plan = NULL;
        _cleanup_free_ char *message = NULL, *note = NULL;
        Snapshot *s = userdata;
        uint64_t flags = 0;
        int r;

        r = read_revert_flags(m, "CheckRevert", &flags, error);
        if (r < 0)
                return r;
        r = revert_plan_new(s, flags, &plan, &message);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_reply_method_return(m, "bs", false, message ?: qsnap_strerror(r));
        /* It would go ahead: reason then names the checkpoints it leaves unusable. */
        r = revert_plan_checkpoint_note(plan, &note);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "bs", true, strempty(note));
}

void bus_snapshot_emit_is_current(Bus *b, Domain *d, Snapshot *previous) {
        if (previous && previous != d->snapshots.current)
                emit_properties(b, previous, STRV_MAKE("IsCurrent"));
        if (d->snapshots.current && previous != d->snapshots.current)
                emit_properties(b, d->snapshots.current, STRV_MAKE("IsCurrent"));
}

static void emit_current_changed(Bus *b, Domain *d, Snapshot *previous) {
        if (previous && previous != d->snapshots.current)
                emit_properties(b, previous, STRV_MAKE("IsCurrent"));
        bus_domain_emit_changed(b, d, DOMAIN_CHANGE_CURRENT_SNAPSHOT);
}

void bus_snapshot_emit_added(Bus *b, Snapshot *s, Snapshot *previous_current) {
        _cleanup_free_ char *path = bus_snapshot_path(s);
        Domain *d = s->tree->domain;

        if (!path)
                return (void) log_oom();
        (void) sd_bus_emit_object_added(b->bus, path);
        if (s->parent)
                emit_properties(b, s->parent, STRV_MAKE("Children"));
        bus_domain_emit_changed(b, d, DOMAIN_CHANGE_SNAPSHOTS);
        if (previous_current != d->snapshots.current)
                emit_current_changed(b, d, previous_current);
}

void bus_snapshot_emit_deleted(Bus *b, Domain *d, char *const *names, Snapshot *const *changed, size_t n_changed,
                               Snapshot *previous_current) {
        bus_moment_emit_removed(&snapshot_moment_kind, b, d, names);
        for (size_t i = 0; i < n_changed; i++)
                emit_properties(b, changed[i], STRV_MAKE("Parent", "Children"));
        bus_domain_emit_changed(b, d, DOMAIN_CHANGE_SNAPSHOTS);
        if (previous_current != d->snapshots.current)
                emit_current_changed(b, d, previous_current);
        if (d->snapshots.current && previous_current != d->snapshots.current)
                emit_properties(b, d->snapshots.current, STRV_MAKE("IsCurrent"));
}

void bus_snapshot_emit_all_removed(Bus *b, Domain *d) {
        bus_moment_emit_all_removed(&snapshot_moment_kind, b, d);
}

/* ---- object tree ---- */

static const sd_bus_vtable snapshot_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", snapshot_property_get_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Description", "s", snapshot_property_get_description, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Parent", "o", snapshot_property_get_parent, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Children", "ao", snapshot_property_get_children, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Location", "s", property_get_location, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Memory", "s", property_get_memory, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CreationTime", "t", snapshot_property_get_creation_time, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("IsCurrent", "b", snapshot_property_get_is_current, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("HasMetadata", "b", property_get_has_metadata, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("GetXMLDesc", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("s", xml), method_get_xml_desc,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListChildren", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("ao", snapshots),
                                method_list_children, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("o", job), method_delete,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CheckDelete", SD_BUS_ARGS("t", flags),
                                SD_BUS_RESULT("b", ok, "s", reason, "t", bytes_needed), method_check_delete,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Revert", SD_BUS_ARGS("t", flags), SD_BUS_NO_RESULT, method_revert,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CheckRevert", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("b", ok, "s", reason),
                                method_check_revert, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int bus_snapshot_register(Bus *b) {
        int r;

        r = sd_bus_add_fallback_vtable(b->bus, NULL, QSNAP_DOMAIN_PREFIX, QSNAP_SNAPSHOT_INTERFACE, snapshot_vtable,
                                       snapshot_object_find, b);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Snapshot interface: %m");
        return 0;
}
