/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * org.example.Snapshot1.Checkpoint: the properties of one checkpoint, its
 * XML, Delete (ops/checkpoint-delete.c does the work); and the Domain's
 * CreateCheckpoint (ops/checkpoint-create.c), ListCheckpoints and
 * LookupCheckpoint.
 */
#include "bus/bus-checkpoint.h"
#include "bus/bus-domain.h"
#include "bus/bus-errors.h"
#include "bus/bus-moment.h"
#include "core/bitmaps.h"
#include "core/domain.h"
#include "ops/checkpoint-create.h"
#include "ops/checkpoint-delete.h"
#include "util/util.h"

#define ACTION_READ_SECURE "org.example.snapshot1.read-secure"
#define ACTION_MANAGE_SNAPSHOTS "org.example.snapshot1.manage-snapshots"

DEFINE_BUS_MOMENT_KIND(checkpoint, Checkpoint, checkpoints, "checkpoint", QSNAP_CHECKPOINT_INTERFACE,
                       CHECKPOINT_LIST_ALL);

/* ---- properties (the ones every moment has: DEFINE_BUS_MOMENT_KIND) ---- */

static int property_get_disks(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Checkpoint *c = userdata;
        int r;

        r = sd_bus_message_open_container(reply, 'a', "(ss)");
        for (size_t i = 0; r >= 0 && i < c->def->n_disks; i++) {
                const CheckpointDisk *cd = c->def->disks + i;
                if (cd->type == CHECKPOINT_TYPE_BITMAP)
                        r = sd_bus_message_append(reply, "(ss)", cd->name, cd->bitmap ?: c->def->name);
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

/* InterfacesAdded of a new checkpoint is being sent: its Size is what is
 * known (0 for bitmaps just added), and no reader asked for more. */
static bool emitting_added;

static int property_get_size(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Checkpoint *c = userdata;
        /* The last measurement; each read starts the next one (GetXMLDesc
         * with SIZE waits for it). Not InterfacesAdded's read: that would
         * cost every CreateCheckpoint four QMP round trips after it. */
        if (!emitting_added)
                (void) bitmaps_measure(c->tree->domain, checkpoint_name(c), NULL, NULL);
        return sd_bus_message_append(reply, "t", c->size);
}

static int property_get_problems(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Checkpoint *c = userdata;
        return sd_bus_message_append_strv(reply, c->problems);
}

/* ---- methods ---- */

typedef struct XmlCall {
        sd_bus_message *message;
        Checkpoint *checkpoint; /* checked again by name: it may go meanwhile */
        char *name;
        uint64_t flags;
} XmlCall;

static int reply_xml(sd_bus_message *m, Checkpoint *c, uint64_t flags) {
        _cleanup_free_ char *xml = NULL;
        CheckpointFormatFlags f = 0;
        int r;

        if (flags & CHECKPOINT_XML_SECURE)
                f |= CHECKPOINT_FORMAT_SECURE;
        if (flags & CHECKPOINT_XML_NO_DOMAIN)
                f |= CHECKPOINT_FORMAT_NO_DOMAIN;
        if (flags & CHECKPOINT_XML_SIZE)
                f |= CHECKPOINT_FORMAT_SIZE;
        r = checkpoint_def_format(c->def, f, &xml);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "s", xml);
}

static void on_sizes_measured(Domain *d, void *userdata) {
        XmlCall *x = userdata;
        Checkpoint *c = checkpoint_tree_find(&d->checkpoints, x->name);
        int r;

        if (!c)
                r = sd_bus_reply_method_errorf(x->message, QSNAP_ERROR_NO_SUCH_CHECKPOINT,
                                               "Checkpoint '%s' was deleted meanwhile.", x->name);
        else
                r = reply_xml(x->message, c, x->flags);
        if (r < 0)
                log_debug_errno(r, "Failed to send a reply: %m");
        sd_bus_message_unref(x->message);
        free(x->name);
        free(x);
}

static int method_get_xml_desc(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Checkpoint *c = userdata;
        Domain *d = c->tree->domain;
        XmlCall *x;
        uint64_t flags;
        int r;

        r = bus_read_flags(m, "GetXMLDesc", CHECKPOINT_XML_ALL, &flags, error);
        if (r < 0)
                return r;
        if (flags & CHECKPOINT_XML_SECURE) {
                const char *details[] = { "domain", d->def->name, NULL };

                r = bus_verify_polkit_async(m, ACTION_READ_SECURE, details, &bus_from_manager(d->manager)->polkit,
                                            error);
                if (r <= 0)
                        return r < 0 ? r : 1;
        }
        if (!(flags & CHECKPOINT_XML_SIZE))
                return reply_xml(m, c, flags);
        /* SIZE: measured now (live), or the last measurement (shut off). */
        x = new0(XmlCall, 1);
        if (!x || !(x->name = strdup(c->def->name))) {
                free(x);
                return -ENOMEM;
        }
        x->message = sd_bus_message_ref(m);
        x->flags = flags;
        r = bitmaps_measure(d, x->name, on_sizes_measured, x);
        if (r < 0) {
                sd_bus_message_unref(m);
                free(x->name);
                free(x);
                return r;
        }
        return 1;
}

static void reply_done(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        int r;

        r = error < 0 ? bus_reply_errno_message(m, error, message) : sd_bus_reply_method_return(m, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to send a reply: %m");
}

static int method_delete(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        Checkpoint *c = userdata;
        Domain *d = c->tree->domain;
        const char *details[] = { "domain", d->def->name, NULL };
        uint64_t flags;
        int r;

        r = bus_read_flags(m, "Delete", CHECKPOINT_DELETE_ALL, &flags, error);
        if (r < 0)
                return r;
        r = checkpoint_delete_check(c, flags, &message);
        if (r < 0)
                return bus_error_set_errno_message(error, r, message);
        r = bus_verify_polkit_async(m, ACTION_MANAGE_SNAPSHOTS, details, &bus_from_manager(d->manager)->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        sd_bus_message_ref(m);
        r = checkpoint_delete(d, c, flags, reply_done, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int method_list_children(sd_bus_message *m, void *userdata, sd_bus_error *error);

/* ---- the Domain's checkpoint methods ---- */

static void reply_created(Domain *d, int error, const char *message, Checkpoint *c, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        _cleanup_free_ char *path = NULL;
        int r;

        if (error < 0)
                r = bus_reply_errno_message(m, error, message);
        else {
                path = bus_checkpoint_path(c);
                r = path ? sd_bus_reply_method_return(m, "o", path) : -ENOMEM;
        }
        if (r < 0)
                log_debug_errno(r, "Failed to send a reply: %m");
}

int bus_method_create_checkpoint(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(checkpoint_plan_freep) CheckpointPlan *plan = NULL;
        _cleanup_free_ char *message = NULL;
        Domain *d = userdata;
        const char *xml, *details[] = { "domain", d->def->name, NULL };
        uint64_t flags;
        int r;

        r = sd_bus_message_read(m, "st", &xml, &flags);
        if (r < 0)
                return r;
        if (flags & ~CHECKPOINT_CREATE_ALL)
                return bus_error_unknown_flags(error, "CreateCheckpoint", flags, CHECKPOINT_CREATE_ALL);
        r = checkpoint_plan_new(d, xml, flags, &plan, &message);
        if (r < 0)
                return bus_error_set_errno_message(error, r, message);
        r = bus_verify_polkit_async(m, ACTION_MANAGE_SNAPSHOTS, details, &bus_from_manager(d->manager)->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        sd_bus_message_ref(m);
        r = checkpoint_create(d, TAKE_PTR(plan), reply_created, m, &message);
        return bus_async_call_result(m, r, message, error);
}

int bus_method_list_checkpoints(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return bus_moment_reply_list(&checkpoint_moment_kind, m, d, NULL, "ListCheckpoints", error);
}

static int method_list_children(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Checkpoint *c = userdata;
        return bus_moment_reply_list(&checkpoint_moment_kind, m, c->tree->domain, c, "ListChildren", error);
}

int bus_method_lookup_checkpoint(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *path = NULL;
        Domain *d = userdata;
        const char *name;
        Checkpoint *c;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        c = checkpoint_tree_find(&d->checkpoints, name);
        if (!c)
                return sd_bus_error_setf(error, QSNAP_ERROR_NO_SUCH_CHECKPOINT,
                                         "Domain '%s' has no checkpoint named '%s'.", d->def->name, name);
        path = bus_checkpoint_path(c);
        return path ? sd_bus_reply_method_return(m, "o", path) : -ENOMEM;
}

/* ---- signals ---- */

static void emit_properties(Bus *b, const Checkpoint *c, char **names) {
        bus_moment_emit_changed(&checkpoint_moment_kind, b, c, names);
}

void bus_checkpoint_emit_added(Bus *b, Checkpoint *c, Checkpoint *previous_current) {
        _cleanup_free_ char *path = bus_checkpoint_path(c);
        Domain *d = c->tree->domain;

        if (!path)
                return (void) log_oom();
        emitting_added = true;
        (void) sd_bus_emit_object_added(b->bus, path);
        emitting_added = false;
        if (c->parent)
                emit_properties(b, c->parent, STRV_MAKE("Children"));
        if (previous_current && previous_current != c && previous_current != d->checkpoints.current)
                emit_properties(b, previous_current, STRV_MAKE("IsCurrent"));
        bus_domain_emit_changed(b, d, DOMAIN_CHANGE_CHECKPOINTS);
}

void bus_checkpoint_emit_changed(Bus *b, Domain *d, char *const *removed, Checkpoint *const *changed,
                                 size_t n_changed, Checkpoint *previous_current) {
        bus_moment_emit_removed(&checkpoint_moment_kind, b, d, removed);
        for (size_t i = 0; i < n_changed; i++)
                emit_properties(b, changed[i], STRV_MAKE("Parent", "Children", "IsCurrent", "Problems"));
        if (d->checkpoints.current && previous_current != d->checkpoints.current)
                emit_properties(b, d->checkpoints.current, STRV_MAKE("IsCurrent"));
        if (removed && *removed)
                bus_domain_emit_changed(b, d, DOMAIN_CHANGE_CHECKPOINTS);
}

void bus_checkpoint_emit_all_removed(Bus *b, Domain *d) {
        bus_moment_emit_all_removed(&checkpoint_moment_kind, b, d);
}

/* ---- object tree ---- */

static const sd_bus_vtable checkpoint_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", checkpoint_property_get_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Description", "s", checkpoint_property_get_description, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Parent", "o", checkpoint_property_get_parent, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Children", "ao", checkpoint_property_get_children, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CreationTime", "t", checkpoint_property_get_creation_time, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Disks", "a(ss)", property_get_disks, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Size", "t", property_get_size, 0, 0),
        SD_BUS_PROPERTY("IsCurrent", "b", checkpoint_property_get_is_current, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Problems", "as", property_get_problems, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("GetXMLDesc", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("s", xml), method_get_xml_desc,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListChildren", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("ao", checkpoints),
                                method_list_children, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Delete", SD_BUS_ARGS("t", flags), SD_BUS_NO_RESULT, method_delete,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

int bus_checkpoint_register(Bus *b) {
        int r;

        r = sd_bus_add_fallback_vtable(b->bus, NULL, QSNAP_DOMAIN_PREFIX, QSNAP_CHECKPOINT_INTERFACE,
                                       checkpoint_vtable, checkpoint_object_find, b);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Checkpoint interface: %m");
        return 0;
}
