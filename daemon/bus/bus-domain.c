/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * org.example.Snapshot1.Domain: properties, lifecycle methods and the
 * monitor passthrough. Every handler reads its arguments, validates them,
 * checks the domain can take the call, asks polkit, and only then acts;
 * lifecycle calls reply from the model's completion callback.
 */
#include "bus/bus-checkpoint.h"
#include "bus/bus-domain.h"
#include "bus/bus-errors.h"
#include "bus/bus-job.h"
#include "bus/bus-snapshot.h"
#include "core/disk.h"
#include "core/domain-agent.h"
#include "core/domain-console.h"
#include "core/domain-jobs.h"
#include "ops/backup.h"
#include "ops/block-jobs.h"
#include "ops/snapshot-create.h"
#include "util/util.h"

#define ACTION_MANAGE_DOMAINS "org.example.snapshot1.manage-domains"
#define ACTION_READ_SECURE "org.example.snapshot1.read-secure"
#define ACTION_MANAGE_SNAPSHOTS "org.example.snapshot1.manage-snapshots"
#define ACTION_HOST_ADMIN "org.example.snapshot1.host-admin"

char *bus_domain_path(const Domain *d) {
        char *p = NULL;

        if (sd_bus_path_encode(QSNAP_DOMAIN_PREFIX, d->def->name, &p) < 0)
                return NULL;
        return p;
}

char *bus_domain_child_path(const Domain *d, const char *kind, const char *name) {
        _cleanup_free_ char *domain_path = bus_domain_path(d), *prefix = NULL;
        char *p = NULL;

        if (!domain_path)
                return NULL;
        prefix = strjoin(domain_path, "/", kind);
        if (!prefix || sd_bus_path_encode(prefix, name, &p) < 0)
                return NULL;
        return p;
}

int bus_domain_child_decode(Bus *b, const char *path, const char *kind, Domain **ret_domain, char **ret_name) {
        _cleanup_free_ char *pattern = strjoin(QSNAP_DOMAIN_PREFIX "/%/", kind, "/%"), *domain = NULL, *name = NULL;
        Domain *d;

        if (!pattern)
                return -ENOMEM;
        if (sd_bus_path_decode_many(path, pattern, &domain, &name) <= 0)
                return 0;
        d = manager_find_domain(b->manager, domain);
        if (!d)
                return 0;
        *ret_domain = d;
        *ret_name = TAKE_PTR(name);
        return 1;
}

static int verify_manage_domains(sd_bus_message *m, Domain *d, sd_bus_error *error) {
        const char *details[] = { "domain", d->def->name, NULL };

        return bus_verify_polkit_async(m, ACTION_MANAGE_DOMAINS, details, &bus_from_manager(d->manager)->polkit, error);
}

/* ---- properties ---- */

static int property_get_name(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "s", d->def->name);
}

static int property_get_uuid(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "s", d->def->uuid);
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "s", domain_state_to_string(d->state));
}

static int property_get_managed(sd_bus *bus, const char *path, const char *interface, const char *property,
                                sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "b", domain_is_managed(d));
}

static int property_get_agent_connected(sd_bus *bus, const char *path, const char *interface, const char *property,
                                        sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return sd_bus_message_append(reply, "b", domain_agent_connected(d));
}

static int property_get_disks(sd_bus *bus, const char *path, const char *interface, const char *property,
                              sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        DomainDiskInfo *infos = NULL;
        size_t n = 0;
        int r;

        r = domain_get_disks(d, &infos, &n);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssss)");
        for (size_t i = 0; r >= 0 && i < n; i++)
                r = sd_bus_message_append(reply, "(ssss)", infos[i].target, infos[i].format, infos[i].active, infos[i].chain);
        if (r >= 0)
                r = sd_bus_message_close_container(reply);
        domain_disk_info_free_many(infos, n);
        return r;
}

static int property_get_snapshots(sd_bus *bus, const char *path, const char *interface, const char *property,
                                  sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return bus_append_domain_snapshots(reply, userdata);
}

static int property_get_checkpoints(sd_bus *bus, const char *path, const char *interface, const char *property,
                                    sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return bus_append_domain_checkpoints(reply, userdata);
}

static int property_get_current_snapshot(sd_bus *bus, const char *path, const char *interface, const char *property,
                                         sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        _cleanup_free_ char *p = NULL;

        if (!d->snapshots.current)
                return sd_bus_message_append(reply, "o", "/");
        p = bus_snapshot_path(d->snapshots.current);
        return p ? sd_bus_message_append(reply, "o", p) : -ENOMEM;
}

static int property_get_jobs(sd_bus *bus, const char *path, const char *interface, const char *property,
                             sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        _cleanup_free_ Job **jobs = NULL;
        Domain *d = userdata;
        size_t n = 0;
        int r;

        r = domain_list_jobs(d, &jobs, &n);
        if (r >= 0)
                r = sd_bus_message_open_container(reply, 'a', "o");
        for (size_t i = 0; r >= 0 && i < n; i++) {
                _cleanup_free_ char *p = bus_job_path(d, jobs[i]);
                r = p ? sd_bus_message_append(reply, "o", p) : -ENOMEM;
        }
        return r < 0 ? r : sd_bus_message_close_container(reply);
}

void bus_domain_emit_changed(Bus *b, Domain *d, DomainChange what) {
        _cleanup_free_ char *path = bus_domain_path(d);
        const char *names[8];
        size_t n = 0;

        if (!path)
                return (void) log_oom();
        if (what & DOMAIN_CHANGE_STATE)
                names[n++] = "State";
        if (what & DOMAIN_CHANGE_DISKS)
                names[n++] = "Disks";
        if (what & DOMAIN_CHANGE_SNAPSHOTS)
                names[n++] = "Snapshots";
        if (what & DOMAIN_CHANGE_CURRENT_SNAPSHOT)
                names[n++] = "CurrentSnapshot";
        if (what & DOMAIN_CHANGE_JOBS)
                names[n++] = "Jobs";
        if (what & DOMAIN_CHANGE_AGENT)
                names[n++] = "AgentConnected";
        if (what & DOMAIN_CHANGE_CHECKPOINTS)
                names[n++] = "Checkpoints";
        names[n] = NULL;
        if (n > 0)
                (void) sd_bus_emit_properties_changed_strv(b->bus, path, QSNAP_DOMAIN_INTERFACE, (char **) names);
}

/* ---- methods ---- */

/* The model's completion: the reply to the call that started it. */
static void reply_when_done(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        int r;

        if (error < 0) {
                r = bus_reply_errno_message(m, error, message);
        } else if (reply)
                r = sd_bus_reply_method_return(m, "s", reply);
        else
                r = sd_bus_reply_method_return(m, NULL);
        if (r < 0)
                log_debug_errno(r, "Failed to send a reply: %m");
}

typedef int (*domain_call_t)(Domain *d, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message);

/* The shape every asynchronous lifecycle call shares, after its own
 * argument and state checks: authorize, act, reply later. */
static int domain_call_async(sd_bus_message *m, Domain *d, domain_call_t call, uint64_t flags, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        int r;

        r = verify_manage_domains(m, d, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = call(d, flags, reply_when_done, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int check_result(int r, char *message, sd_bus_error *error) {
        _cleanup_free_ char *m = message;
        return r < 0 ? bus_error_set_errno_message(error, r, m) : 0;
}

typedef int (*domain_check_t)(Domain *d, char **ret_message);

/* Start and Stop: flags, the state check, then authorize and act. */
static int lifecycle_method(sd_bus_message *m, Domain *d, const char *method, uint64_t known, domain_check_t check,
                            domain_call_t call, sd_bus_error *error) {
        char *message = NULL;
        uint64_t flags = 0;
        int r;

        r = bus_read_flags(m, method, known, &flags, error);
        if (r < 0)
                return r;
        r = check(d, &message);
        r = check_result(r, TAKE_PTR(message), error);
        if (r < 0)
                return r;
        return domain_call_async(m, d, call, flags, error);
}

static int method_start(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return lifecycle_method(m, userdata, "Start", DOMAIN_START_PAUSED, domain_check_start, domain_start, error);
}

static int method_stop(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return lifecycle_method(m, userdata, "Stop", DOMAIN_STOP_GRACEFUL, domain_check_stop, domain_stop, error);
}

static int domain_pause_call(Domain *d, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message) {
        return domain_pause(d, done, userdata, ret_message);
}

static int domain_resume_call(Domain *d, uint64_t flags, DomainDoneFunc done, void *userdata, char **ret_message) {
        return domain_resume(d, done, userdata, ret_message);
}

/* Pause and Resume: nothing to do when already there (no polkit asked). */
static int pause_resume_method(sd_bus_message *m, Domain *d, bool pause, sd_bus_error *error) {
        char *message = NULL;
        int r;

        r = domain_check_pause(d, pause, &message);
        if (r != 0)
                return r < 0 ? check_result(r, message, error) : sd_bus_reply_method_return(m, NULL);
        return domain_call_async(m, d, pause ? domain_pause_call : domain_resume_call, 0, error);
}

static int method_pause(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return pause_resume_method(m, userdata, true, error);
}

static int method_resume(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return pause_resume_method(m, userdata, false, error);
}

static int method_undefine(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        char *message = NULL;
        uint64_t flags = 0;
        int r;

        r = bus_read_flags(m, "Undefine", DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
                       &flags, error);
        if (r < 0)
                return r;
        r = domain_check_undefine(d, &message);
        r = check_result(r, TAKE_PTR(message), error);
        if (r < 0)
                return r;
        message = NULL;
        if (d->snapshots.n > 0 && !(flags & DOMAIN_UNDEFINE_SNAPSHOTS_METADATA))
                return sd_bus_error_setf(error, QSNAP_ERROR_HAS_SNAPSHOTS,
                                         "Domain '%s' has %zu snapshot(s); Undefine with flag 1 (SNAPSHOTS_METADATA) "
                                         "drops their metadata (images stay).", d->def->name, d->snapshots.n);
        if (d->checkpoints.n > 0 && !(flags & DOMAIN_UNDEFINE_CHECKPOINTS_METADATA))
                return sd_bus_error_setf(error, QSNAP_ERROR_HAS_SNAPSHOTS,
                                         "Domain '%s' has %zu checkpoint(s); Undefine with flag 2 (CHECKPOINTS_METADATA) "
                                         "drops their metadata (bitmaps stay).", d->def->name, d->checkpoints.n);
        r = verify_manage_domains(m, d, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        r = manager_undefine_domain(d->manager, d, flags & DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
                                    flags & DOMAIN_UNDEFINE_CHECKPOINTS_METADATA, &message);
        if (r < 0)
                return check_result(r, message, error);
        return sd_bus_reply_method_return(m, NULL);
}

static void reply_console(Domain *d, int error, const char *message, int fd, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        int r;

        /* sd-bus sends a copy of fd; the model closes its own. */
        r = error < 0 ? bus_reply_errno_message(m, error, message) : sd_bus_reply_method_return(m, "h", fd);
        if (r < 0)
                log_debug_errno(r, "Failed to send a reply: %m");
}

/* OpenConsole: the device checked, then manage-domains for this domain
 * (the same right reaches the guest's serial output anyway: it may define
 * a serial to a file in the image roots). */
static int method_open_console(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        Domain *d = userdata;
        const char *dev = NULL;
        uint64_t flags = 0;
        int r;

        r = sd_bus_message_read(m, "s", &dev);
        if (r >= 0)
                r = bus_read_flags(m, "OpenConsole", 0, &flags, error);
        if (r < 0)
                return r;
        r = domain_console_check(d, dev, &message);
        if (r < 0)
                return check_result(r, TAKE_PTR(message), error);
        r = verify_manage_domains(m, d, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = domain_console_open(d, dev, reply_console, m, &message);
        return bus_async_call_result(m, r, message, error);
}

/* OpenGraphicsFD: the graphics checked, then manage-domains as above;
 * QEMU still asks a VNC password of the new client. */
static int method_open_graphics_fd(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        Domain *d = userdata;
        uint32_t idx = 0;
        uint64_t flags = 0;
        int r;

        r = sd_bus_message_read(m, "u", &idx);
        if (r >= 0)
                r = bus_read_flags(m, "OpenGraphicsFD", 0, &flags, error);
        if (r < 0)
                return r;
        r = domain_graphics_check(d, idx, &message);
        if (r < 0)
                return check_result(r, TAKE_PTR(message), error);
        r = verify_manage_domains(m, d, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = domain_graphics_open(d, idx, reply_console, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int method_get_xml_desc(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *xml = NULL;
        Domain *d = userdata;
        uint64_t flags = 0;
        int r;

        r = bus_read_flags(m, "GetXMLDesc", DOMAIN_XML_SECURE | DOMAIN_XML_INACTIVE, &flags, error);
        if (r < 0)
                return r;
        if (flags & DOMAIN_XML_SECURE) {
                const char *details[] = { "domain", d->def->name, NULL };

                r = bus_verify_polkit_async(m, ACTION_READ_SECURE, details, &bus_from_manager(d->manager)->polkit, error);
                if (r <= 0)
                        return r < 0 ? r : 1;
        }
        r = domain_format_xml(d, flags & DOMAIN_XML_INACTIVE, flags & DOMAIN_XML_SECURE, &xml);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "s", xml);
}

static int method_qemu_monitor_command(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        Domain *d = userdata;
        const char *command;
        uint64_t flags = 0;
        int r;

        r = sd_bus_message_read(m, "s", &command);
        if (r < 0)
                return r;
        r = bus_read_flags(m, "QemuMonitorCommand", DOMAIN_MONITOR_HMP, &flags, error);
        if (r < 0)
                return r;
        if (isempty(command))
                return sd_bus_error_set(error, QSNAP_ERROR_INVALID_ARGUMENT, "The monitor command is empty.");
        r = domain_check_running(d, &message);
        r = check_result(r, TAKE_PTR(message), error);
        if (r < 0)
                return r;
        /* QEMU's monitor reaches every host file and process QEMU can
         * (migrate to exec:, drive_add, …): root-equivalent. */
        r = bus_verify_polkit_async(m, ACTION_HOST_ADMIN, (const char *[]) { "domain", d->def->name, NULL },
                                    &bus_from_manager(d->manager)->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = domain_monitor_command(d, command, flags, reply_when_done, m, &message);
        return bus_async_call_result(m, r, message, error);
}

/* ---- snapshots ---- */

static void reply_snapshot_created(Domain *d, int error, const char *message, Snapshot *s, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        _cleanup_free_ char *path = NULL;
        int r;

        if (error < 0) {
                r = bus_reply_errno_message(m, error, message);
        } else {
                path = s ? bus_snapshot_path(s) : strdup("/");
                r = path ? sd_bus_reply_method_return(m, "o", path) : -ENOMEM;
        }
        if (r < 0)
                log_debug_errno(r, "Failed to send a reply: %m");
}

static int redefine_snapshot(sd_bus_message *m, Domain *d, const char *xml, uint64_t flags, sd_bus_error *error) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
        _cleanup_free_ char *message = NULL, *path = NULL, *why = NULL;
        const char *details[] = { "domain", d->def->name, NULL };
        Snapshot *s;
        int r;

        r = snapshot_redefine_prepare(d, xml, &def, &message);
        if (r < 0)
                return bus_error_set_errno_message(error, r, message);
        /* A revert applies the recorded <domain>: what it names is judged
         * as DefineDomain would judge it. */
        if (def->domain_xml) {
                _cleanup_(domain_def_freep) DomainDef *recorded = NULL;

                /* One we cannot read is never applied (Revert refuses it). */
                if (domain_def_parse(def->domain_xml, strlen(def->domain_xml), &recorded, NULL) >= 0) {
                        r = manager_def_needs_host_admin(d->manager, recorded, d->def, &why);
                        if (r < 0)
                                return r;
                }
        }
        r = bus_verify_polkit_async(m, why ? ACTION_HOST_ADMIN : ACTION_MANAGE_SNAPSHOTS, details,
                                    &bus_from_manager(d->manager)->polkit, error);
        if (r < 0 && why) {
                _cleanup_free_ char *text = strprintf("Not authorized: %s is needed to record snapshot '%s' because the "
                                                      "<domain> it records (which Revert would apply) %s.",
                                                      ACTION_HOST_ADMIN, def->name, why);
                return text ? bus_polkit_explain_denial(error, text) : -ENOMEM;
        }
        if (r <= 0)
                return r < 0 ? r : 1;

        r = snapshot_redefine(d, TAKE_PTR(def), flags & SNAPSHOT_CREATE_CURRENT, &s, &message);
        if (r < 0)
                return bus_error_set_errno_message(error, r, message);
        path = bus_snapshot_path(s);
        return path ? sd_bus_reply_method_return(m, "o", path) : -ENOMEM;
}

static int method_create_snapshot(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(snapshot_plan_freep) SnapshotPlan *plan = NULL;
        _cleanup_free_ char *message = NULL;
        const char *xml, *details[] = { "domain", NULL, NULL };
        Domain *d = userdata;
        uint64_t flags;
        int r;

        r = sd_bus_message_read(m, "st", &xml, &flags);
        if (r < 0)
                return r;
        if (flags & ~SNAPSHOT_CREATE_ALL)
                return bus_error_unknown_flags(error, "CreateSnapshot", flags, SNAPSHOT_CREATE_ALL);
        if ((flags & SNAPSHOT_CREATE_CURRENT) && !(flags & SNAPSHOT_CREATE_REDEFINE))
                return sd_bus_error_set(error, QSNAP_ERROR_INVALID_ARGUMENT, "CURRENT goes only with REDEFINE.");
        if ((flags & SNAPSHOT_CREATE_REDEFINE) && (flags & ~(SNAPSHOT_CREATE_REDEFINE | SNAPSHOT_CREATE_CURRENT |
                                                            SNAPSHOT_CREATE_VALIDATE)))
                return sd_bus_error_set(error, QSNAP_ERROR_INVALID_ARGUMENT,
                                        "REDEFINE only records metadata: it goes only with CURRENT and VALIDATE.");
        if ((flags & SNAPSHOT_CREATE_NO_METADATA) && (flags & SNAPSHOT_CREATE_REDEFINE))
                return sd_bus_error_set(error, QSNAP_ERROR_INVALID_ARGUMENT, "NO_METADATA and REDEFINE exclude each other.");
        if (flags & SNAPSHOT_CREATE_REDEFINE)
                return redefine_snapshot(m, d, xml, flags, error);

        r = snapshot_plan_new(d, xml, flags, &plan, &message);
        if (r < 0) {
                if (r == -QSNAP_E_INVALID_XML)
                        return sd_bus_error_setf(error, QSNAP_ERROR_INVALID_XML, "Invalid snapshot XML: %s", strna(message));
                return bus_error_set_errno_message(error, r, message);
        }
        details[1] = d->def->name;
        r = bus_verify_polkit_async(m, ACTION_MANAGE_SNAPSHOTS, details, &bus_from_manager(d->manager)->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = snapshot_create(d, TAKE_PTR(plan), reply_snapshot_created, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int method_list_snapshots(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Domain *d = userdata;
        return bus_reply_snapshot_list(m, &d->snapshots, NULL, "ListSnapshots", error);
}

static int method_lookup_snapshot(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *path = NULL;
        Domain *d = userdata;
        const char *name;
        Snapshot *s;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        s = snapshot_tree_find(&d->snapshots, name);
        if (!s)
                return sd_bus_error_setf(error, QSNAP_ERROR_NO_SUCH_SNAPSHOT, "Domain '%s' has no snapshot named '%s'.",
                                         d->def->name, name);
        path = bus_snapshot_path(s);
        return path ? sd_bus_reply_method_return(m, "o", path) : -ENOMEM;
}

/* ---- block jobs ---- */

#define ACTION_BLOCK_JOBS "org.example.snapshot1.block-jobs"

static void reply_job_started(Domain *d, int error, const char *message, Job *j, void *userdata) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = userdata;
        _cleanup_free_ char *path = NULL;

        if (error < 0) {
                (void) bus_reply_errno_message(m, error, message);
                return;
        }
        path = bus_job_path(d, j);
        (void) sd_bus_reply_method_return(m, "o", path ?: "/");
}

/* The detail "disk" is always the target: a rule on disk == "vda" must hold
 * whether the caller named vda or its file. A name that is no disk is
 * NoSuchDisk before polkit is asked (Disks tells anybody the same). */
static int verify_block_jobs(sd_bus_message *m, Domain *d, const char *disk, sd_bus_error *error) {
        const DomainDisk *found = domain_lookup_disk(d, disk);
        const char *details[] = { "domain", d->def->name, "disk", NULL, NULL };

        if (!found)
                return sd_bus_error_setf(error, QSNAP_ERROR_NO_SUCH_DISK, "Domain '%s' has no disk '%s'.", d->def->name,
                                         disk);
        details[3] = found->target;
        return bus_verify_polkit_async(m, ACTION_BLOCK_JOBS, details, &bus_from_manager(d->manager)->polkit, error);
}

static int check_block_job_args(const char *method, uint64_t flags, uint64_t known, uint64_t bandwidth,
                                sd_bus_error *error) {
        if (flags & ~known)
                return bus_error_unknown_flags(error, method, flags, known);
        if (bandwidth > INT64_MAX)
                return sd_bus_error_set(error, QSNAP_ERROR_INVALID_ARGUMENT, "The bandwidth is too large.");
        return 0;
}

static int method_block_pull(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        Domain *d = userdata;
        uint64_t bandwidth, flags;
        const char *disk;
        int r;

        r = sd_bus_message_read(m, "stt", &disk, &bandwidth, &flags);
        if (r < 0)
                return r;
        r = check_block_job_args("BlockPull", flags, 0, bandwidth, error);
        if (r < 0)
                return r;
        r = verify_block_jobs(m, d, disk, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        sd_bus_message_ref(m);
        r = block_job_pull(d, disk, bandwidth, flags, reply_job_started, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int method_block_rebase(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        const char *disk, *base;
        Domain *d = userdata;
        uint64_t bandwidth, flags;
        int r;

        r = sd_bus_message_read(m, "sstt", &disk, &base, &bandwidth, &flags);
        if (r < 0)
                return r;
        r = check_block_job_args("BlockRebase", flags, BLOCK_REBASE_ALL, bandwidth, error);
        if (r < 0)
                return r;
        r = verify_block_jobs(m, d, disk, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        sd_bus_message_ref(m);
        r = block_job_rebase(d, disk, base, bandwidth, flags, reply_job_started, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int method_block_commit(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL;
        const char *disk, *base, *top;
        Domain *d = userdata;
        uint64_t bandwidth, flags;
        int r;

        r = sd_bus_message_read(m, "ssstt", &disk, &base, &top, &bandwidth, &flags);
        if (r < 0)
                return r;
        r = check_block_job_args("BlockCommit", flags, BLOCK_COMMIT_ALL, bandwidth, error);
        if (r < 0)
                return r;
        r = verify_block_jobs(m, d, disk, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        sd_bus_message_ref(m);
        r = block_job_commit(d, disk, base, top, bandwidth, flags, reply_job_started, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int method_block_copy(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *message = NULL, *dest = NULL, *xml_error = NULL;
        const char *disk, *dest_xml;
        Domain *d = userdata;
        uint64_t bandwidth, flags;
        DiskFormat format;
        int r;

        r = sd_bus_message_read(m, "sstt", &disk, &dest_xml, &bandwidth, &flags);
        if (r < 0)
                return r;
        r = check_block_job_args("BlockCopy", flags, BLOCK_COPY_ALL, bandwidth, error);
        if (r < 0)
                return r;
        r = domain_copy_dest_parse(dest_xml, strlen(dest_xml), &dest, &format, &xml_error);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return sd_bus_error_setf(error, QSNAP_ERROR_INVALID_XML, "The destination XML is not usable: %s",
                                         strna(xml_error));
        r = verify_block_jobs(m, d, disk, error);
        if (r <= 0)
                return r < 0 ? r : 1;
        sd_bus_message_ref(m);
        r = block_job_copy(d, disk, dest, format, bandwidth, flags, reply_job_started, m, &message);
        return bus_async_call_result(m, r, message, error);
}

/* ---- backups ---- */

#define ACTION_BACKUP "org.example.snapshot1.backup"

static int method_backup_begin(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(backup_plan_freep) BackupPlan *plan = NULL;
        _cleanup_free_ char *message = NULL;
        const char *backup_xml, *checkpoint_xml;
        Domain *d = userdata;
        uint64_t flags;
        int r;

        r = sd_bus_message_read(m, "sst", &backup_xml, &checkpoint_xml, &flags);
        if (r < 0)
                return r;
        if (flags & ~BACKUP_BEGIN_ALL)
                return bus_error_unknown_flags(error, "BackupBegin", flags, BACKUP_BEGIN_ALL);
        r = backup_plan_new(d, backup_xml, checkpoint_xml, flags, &plan, &message);
        if (r < 0) {
                if (r == -QSNAP_E_INVALID_XML)
                        return sd_bus_error_setf(error, QSNAP_ERROR_INVALID_XML, "Invalid backup XML: %s", strna(message));
                return bus_error_set_errno_message(error, r, message);
        }
        /* It exports or copies the disks' contents: never kept (auth_admin). */
        r = bus_verify_polkit_async(m, ACTION_BACKUP, (const char *[]) { "domain", d->def->name, NULL },
                                    &bus_from_manager(d->manager)->polkit, error);
        if (r <= 0)
                return r < 0 ? r : 1;

        sd_bus_message_ref(m);
        r = backup_begin(d, TAKE_PTR(plan), reply_job_started, m, &message);
        return bus_async_call_result(m, r, message, error);
}

static int method_backup_get_xml_desc(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_free_ char *xml = NULL, *message = NULL;
        Domain *d = userdata;
        int r;

        r = backup_get_xml_desc(d, &xml, &message);
        if (r < 0)
                return bus_error_set_errno_message(error, r, message);
        return sd_bus_reply_method_return(m, "s", xml);
}

/* ---- object tree ---- */

static int domain_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                              sd_bus_error *error) {
        Bus *b = userdata;
        _cleanup_free_ char *name = NULL;
        Domain *d;
        int r;

        /* Only QSNAP_DOMAIN_PREFIX/<name>: deeper paths are snapshots and jobs. */
        if (strncmp(path, QSNAP_DOMAIN_PREFIX "/", STRLEN(QSNAP_DOMAIN_PREFIX "/")) != 0 ||
            strchr(path + STRLEN(QSNAP_DOMAIN_PREFIX "/"), '/'))
                return 0;
        r = sd_bus_path_decode(path, QSNAP_DOMAIN_PREFIX, &name);
        if (r <= 0)
                return 0;
        d = manager_find_domain(b->manager, name);
        if (!d)
                return 0;
        *found = d;
        return 1;
}

static const sd_bus_vtable domain_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", property_get_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("UUID", "s", property_get_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Disks", "a(ssss)", property_get_disks, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Managed", "b", property_get_managed, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CurrentSnapshot", "o", property_get_current_snapshot, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Snapshots", "ao", property_get_snapshots, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Checkpoints", "ao", property_get_checkpoints, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Jobs", "ao", property_get_jobs, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("AgentConnected", "b", property_get_agent_connected, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_ARGS("Start", SD_BUS_ARGS("t", flags), SD_BUS_NO_RESULT, method_start,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Stop", SD_BUS_ARGS("t", flags), SD_BUS_NO_RESULT, method_stop,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Pause", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_pause, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Resume", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_resume, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Undefine", SD_BUS_ARGS("t", flags), SD_BUS_NO_RESULT, method_undefine,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetXMLDesc", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("s", xml), method_get_xml_desc,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("OpenConsole", SD_BUS_ARGS("s", dev, "t", flags), SD_BUS_RESULT("h", fd),
                                method_open_console, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("OpenGraphicsFD", SD_BUS_ARGS("u", idx, "t", flags), SD_BUS_RESULT("h", fd),
                                method_open_graphics_fd, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("QemuMonitorCommand", SD_BUS_ARGS("s", command, "t", flags), SD_BUS_RESULT("s", reply),
                                method_qemu_monitor_command, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateSnapshot", SD_BUS_ARGS("s", xml, "t", flags), SD_BUS_RESULT("o", snapshot),
                                method_create_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListSnapshots", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("ao", snapshots),
                                method_list_snapshots, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("LookupSnapshot", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", snapshot),
                                method_lookup_snapshot, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CreateCheckpoint", SD_BUS_ARGS("s", xml, "t", flags), SD_BUS_RESULT("o", checkpoint),
                                bus_method_create_checkpoint, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListCheckpoints", SD_BUS_ARGS("t", flags), SD_BUS_RESULT("ao", checkpoints),
                                bus_method_list_checkpoints, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("LookupCheckpoint", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", checkpoint),
                                bus_method_lookup_checkpoint, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("BlockPull", SD_BUS_ARGS("s", disk, "t", bandwidth, "t", flags), SD_BUS_RESULT("o", job),
                                method_block_pull, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("BlockRebase", SD_BUS_ARGS("s", disk, "s", base, "t", bandwidth, "t", flags),
                                SD_BUS_RESULT("o", job), method_block_rebase, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("BlockCommit",
                                SD_BUS_ARGS("s", disk, "s", base, "s", top, "t", bandwidth, "t", flags),
                                SD_BUS_RESULT("o", job), method_block_commit, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("BlockCopy", SD_BUS_ARGS("s", disk, "s", dest_xml, "t", bandwidth, "t", flags),
                                SD_BUS_RESULT("o", job), method_block_copy, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("BackupBegin", SD_BUS_ARGS("s", backup_xml, "s", checkpoint_xml, "t", flags),
                                SD_BUS_RESULT("o", job), method_backup_begin, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("BackupGetXMLDesc", SD_BUS_NO_ARGS, SD_BUS_RESULT("s", xml), method_backup_get_xml_desc,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_SIGNAL_WITH_ARGS("BlockJobEvent", SD_BUS_ARGS("o", job, "s", disk, "s", type, "s", status, "s", error), 0),
        SD_BUS_VTABLE_END
};

int bus_domain_register(Bus *b) {
        int r;

        r = sd_bus_add_fallback_vtable(b->bus, NULL, QSNAP_DOMAIN_PREFIX, QSNAP_DOMAIN_INTERFACE, domain_vtable,
                                       domain_object_find, b);
        if (r < 0)
                return log_error_errno(r, "Failed to register the Domain interface: %m");
        return 0;
}
