/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The set of domains and their stored definitions. A definition is kept in
 * <state>/domains/<uuid>.xml, written crash-safely; names may hold any
 * character, so files are named by UUID. At start-up every definition is
 * read back and every QEMU that is still running is re-attached before the
 * daemon takes its bus name.
 */
#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/domain.h"
#include "core/bitmaps.h"
#include "core/domain-devices.h"
#include "core/domain-net.h"
#include "core/manager.h"
#include "core/measure.h"
#include "core/nvram.h"
#include "core/operation.h"
#include "util/error.h"
#include "util/util.h"

int manager_new(sd_event *event, const ManagerConfig *config, Manager **ret) {
        Manager *m;

        m = new0(Manager, 1);
        if (!m)
                return -ENOMEM;
        m->event = sd_event_ref(event);
        m->config = (ManagerConfig) {
                .state_dir = strdup(config->state_dir),
                .runtime_dir = strdup(config->runtime_dir),
                .qemu_binary = strdup(config->qemu_binary),
                .qemu_user = config->qemu_user ? strdup(config->qemu_user) : NULL,
                .qemu_uid_base = config->qemu_uid_base,
                .qemu_uid_count = config->qemu_uid_count,
                .graceful_timeout_usec = config->graceful_timeout_usec,
                .start_timeout_usec = config->start_timeout_usec,
                .agent_timeout_usec = config->agent_timeout_usec ?: 10 * USEC_PER_SEC,
                .metadata_read_cap = config->metadata_read_cap,
                .net_taps = config->net_taps,
                .bridge_conf = strdup(config->bridge_conf ?: DOMAIN_NET_BRIDGE_CONF),
        };
        for (char **root = config->image_roots; root && *root; root++)
                if (strv_extend(&m->config.image_roots, *root) < 0) {
                        manager_free(m);
                        return -ENOMEM;
                }
        if (!m->config.state_dir || !m->config.runtime_dir || !m->config.qemu_binary || !m->config.bridge_conf ||
            (config->qemu_user && !m->config.qemu_user)) {
                manager_free(m);
                return -ENOMEM;
        }
        *ret = m;
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        while (m->domains) {
                Domain *d = m->domains;
                m->domains = d->next;
                domain_disconnect(d);
                d->manager = m; /* stays valid until the unref below */
                domain_unref(d);
        }
        operation_kinds_free(m);
        measure_state_free(m);
        free(m->config.state_dir);
        free(m->config.runtime_dir);
        free(m->config.qemu_binary);
        free(m->config.qemu_user);
        free(m->config.bridge_conf);
        strv_free(m->config.image_roots);
        sd_event_unref(m->event);
        free(m);
        return NULL;
}

void manager_set_observer(Manager *m, const DomainObserver *o, void *userdata) {
        m->observer = o;
        m->observer_userdata = userdata;
}

void manager_notify_changed(Manager *m, Domain *d, DomainChange what) {
        Snapshot *previous = d->snapshots.reported_current;

        if (what & DOMAIN_CHANGE_CURRENT_SNAPSHOT)
                d->snapshots.reported_current = d->snapshots.current;
        if (m->observer && m->observer->domain_changed)
                m->observer->domain_changed(d, what, m->observer_userdata);
        /* A new state or chain may have lost, or brought, bitmaps. */
        if ((what & (DOMAIN_CHANGE_STATE | DOMAIN_CHANGE_DISKS)) && d->checkpoints.n > 0)
                (void) bitmaps_refresh(d, NULL, NULL);
        if ((what & DOMAIN_CHANGE_CURRENT_SNAPSHOT) && previous != d->snapshots.current && m->observer &&
            m->observer->current_snapshot_changed)
                m->observer->current_snapshot_changed(d, previous, m->observer_userdata);
}

void manager_notify_launched(Manager *m, Domain *d, pid_t pid) {
        if (m->observer && m->observer->domain_launched)
                m->observer->domain_launched(d, pid, m->observer_userdata);
}

void manager_notify_snapshot_added(Manager *m, Domain *d, Snapshot *s) {
        Snapshot *previous = d->snapshots.reported_current;

        d->snapshots.reported_current = d->snapshots.current;
        if (m->observer && m->observer->snapshot_added)
                m->observer->snapshot_added(d, s, previous, m->observer_userdata);
}

void manager_notify_snapshots_deleted(Manager *m, Domain *d, char *const *names, Snapshot *const *changed,
                                      size_t n_changed, Snapshot *previous_current) {
        d->snapshots.reported_current = d->snapshots.current;
        if (m->observer && m->observer->snapshots_deleted)
                m->observer->snapshots_deleted(d, names, changed, n_changed, previous_current, m->observer_userdata);
}

void manager_notify_job(Manager *m, Domain *d, Job *j, JobEvent e) {
        /* A copy's target gets its bitmaps before anybody hears of READY. */
        if (IN_SET(e, JOB_EVENT_READY, JOB_EVENT_FINISHED, JOB_EVENT_REMOVED))
                bitmaps_job_event(d, j->id, e == JOB_EVENT_READY, e != JOB_EVENT_READY);
        if (m->observer && m->observer->job_event)
                m->observer->job_event(d, j, e, m->observer_userdata);
}

void manager_notify_checkpoint_added(Manager *m, Domain *d, Checkpoint *c, Checkpoint *previous_current, bool checked) {
        if (m->observer && m->observer->checkpoint_added)
                m->observer->checkpoint_added(d, c, previous_current, m->observer_userdata);
        if (!checked)
                (void) bitmaps_refresh(d, NULL, NULL);
}

void manager_notify_checkpoints_moved(Manager *m, Domain *d, char *const *removed, Checkpoint *const *changed,
                                      size_t n_changed, Checkpoint *previous_current) {
        if (m->observer && m->observer->checkpoints_changed)
                m->observer->checkpoints_changed(d, removed, changed, n_changed, previous_current,
                                                 m->observer_userdata);
}

void manager_notify_checkpoints_changed(Manager *m, Domain *d, char *const *removed, Checkpoint *const *changed,
                                        size_t n_changed) {
        manager_notify_checkpoints_moved(m, d, removed, changed, n_changed, d->checkpoints.current);
}

char *manager_checkpoint_dir(Manager *m) {
        return strprintf("%s/checkpoints", m->config.state_dir);
}

char *manager_snapshot_dir(Manager *m) {
        return strprintf("%s/snapshots", m->config.state_dir);
}

void manager_busy_ref(Manager *m) {
        m->n_busy++;
}

void manager_busy_unref(Manager *m) {
        assert(m->n_busy > 0);
        m->n_busy--;
}

Domain *manager_find_domain(Manager *m, const char *name) {
        for (Domain *d = m->domains; d; d = d->next)
                if (streq(d->def->name, name))
                        return d;
        return NULL;
}

static Domain *manager_find_domain_by_uuid(Manager *m, const char *uuid) {
        for (Domain *d = m->domains; d; d = d->next)
                if (strcasecmp(d->def->uuid, uuid) == 0)
                        return d;
        return NULL;
}

/* ---- the host-admin tier ---- */

/* The same program: the same name, or the same file behind two names. */
static bool same_program(const char *a, const char *b) {
        struct stat sa, sb;

        if (streq(a, b))
                return true;
        return stat(a, &sa) >= 0 && stat(b, &sb) >= 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* The folder a disk source really lives in (symbolic links resolved, also
 * for the file itself); NULL when that folder does not exist. */
static char *real_folder_of(const char *path) {
        _cleanup_free_ char *copy = NULL;
        char resolved[PATH_MAX];

        if (realpath(path, resolved)) {
                copy = strdup(resolved);
                return copy ? strdup(dirname(copy)) : NULL;
        }
        copy = strdup(path);
        if (!copy || !realpath(dirname(copy), resolved))
                return NULL;
        return strdup(resolved);
}

static bool folder_below(const char *folder, const char *root) {
        size_t n = strlen(root);

        return streq(root, "/") || (strncmp(folder, root, n) == 0 && (folder[n] == '/' || folder[n] == 0));
}

/* A source manage-domains may name: a regular file (or none yet) in a
 * folder below an image root or in a folder of a source the approved
 * definition names. */
static bool source_is_confined(Manager *m, const char *source, char *const *approved_folders) {
        _cleanup_free_ char *folder = real_folder_of(source);
        struct stat st;

        if (!folder)
                return false;
        if (stat(source, &st) >= 0 && !S_ISREG(st.st_mode))
                return false;
        for (char **root = m->config.image_roots; root && *root; root++)
                if (folder_below(folder, *root))
                        return true;
        return strv_contains((const char *const *) approved_folders, folder);
}

/* UEFI: the firmware from the system's folders, the variable store in
 * qsnapd's own default place or where a disk could be. */
static int firmware_needs_host_admin(Manager *m, const DomainDef *def, const DomainDef *approved, char **ret_why) {
        const DomainFirmware *f = def_firmware(def), *was = approved ? def_firmware(approved) : NULL;
        _cleanup_free_ char *fallback = NULL;

        if (!f)
                return 0;
        if (!nvram_firmware_path_is_system(f->loader) && !(was && streq_ptr(was->loader, f->loader))) {
                *ret_why = strprintf("its UEFI <loader> %s is not in the system's firmware folders", f->loader);
                return *ret_why ? 1 : -ENOMEM;
        }
        if (f->nvram_template && !nvram_firmware_path_is_system(f->nvram_template) &&
            !(was && streq_ptr(was->nvram_template, f->nvram_template))) {
                *ret_why = strprintf("its <nvram> template %s is not in the system's firmware folders",
                                     f->nvram_template);
                return *ret_why ? 1 : -ENOMEM;
        }
        fallback = strprintf("%s/nvram/%s_VARS.", m->config.state_dir, strna(def->uuid));
        if (!fallback)
                return -ENOMEM;
        if (f->nvram && strncmp(f->nvram, fallback, strlen(fallback)) != 0 &&
            !(was && streq_ptr(was->nvram, f->nvram)) && !source_is_confined(m, f->nvram, NULL)) {
                *ret_why = strdup("its UEFI variable store (<nvram>) is outside the image roots or not a regular file");
                return *ret_why ? 1 : -ENOMEM;
        }
        return 0;
}

static int push_copies(char ***l, char *const *from) {
        for (char *const *p = from; p && *p; p++) {
                int r = strv_extend(l, *p);

                if (r < 0)
                        return r;
        }
        return 0;
}

static int push_folders_of(char ***folders, char *const *paths) {
        for (char *const *p = paths; p && *p; p++) {
                char *folder = real_folder_of(*p);

                if (folder && strv_push(folders, folder) < 0) {
                        free(folder);
                        return -ENOMEM;
                }
        }
        return 0;
}

/* The files a definition's devices make QEMU open or create are judged as
 * disk sources are, against the image roots and the approved definition's
 * folders, but in two tiers so that approving one kind of file never
 * approves a more dangerous one: files QEMU writes or creates (serial
 * files, sockets) may be in its disks' folders and those of its own
 * writable device files; files QEMU only reads (kernel, initrd, CD-ROM
 * images) in those and the folders of its read-only device files. A
 * kernel in /boot therefore never lets a disk or a serial file go to
 * /boot. disk_folders is not changed. 1 with *ret_why when a file is not
 * confined. */
static int device_paths_confined(Manager *m, const DomainDef *def, const DomainDef *approved, char *const *disk_folders,
                                 char **ret_why) {
        _cleanup_strv_free_ char **writable = NULL, **readable = NULL, **old_w = NULL, **old_r = NULL, **w = NULL,
                                 **ro = NULL;
        int r;

        if (approved) {
                if ((r = domain_devices_paths(approved, true, &old_w)) < 0 ||
                    (r = domain_devices_paths(approved, false, &old_r)) < 0)
                        return r;
        }
        if ((r = push_copies(&writable, disk_folders)) < 0 || (r = push_folders_of(&writable, old_w)) < 0 ||
            (r = push_copies(&readable, writable)) < 0 || (r = push_folders_of(&readable, old_r)) < 0)
                return r;
        if ((r = domain_devices_paths(def, true, &w)) < 0 || (r = domain_devices_paths(def, false, &ro)) < 0)
                return r;
        for (int pass = 0; pass < 2; pass++)
                for (char **p = pass == 0 ? w : ro; *p; p++)
                        if (!source_is_confined(m, *p, pass == 0 ? writable : readable)) {
                                *ret_why = strprintf("the file %s that a device names is outside the image roots%s or not "
                                                     "a regular file", *p, approved ? " and the domain's own folders" : "");
                                return *ret_why ? 1 : -ENOMEM;
                        }
        return 0;
}

int manager_def_needs_host_admin(Manager *m, const DomainDef *def, const DomainDef *approved, char **ret_why) {
        _cleanup_strv_free_ char **approved_folders = NULL;
        int r;

        if (def->monitor_path && !(approved && streq_ptr(approved->monitor_path, def->monitor_path))) {
                *ret_why = strprintf("it attaches to the monitor socket %s", def->monitor_path);
                return *ret_why ? 1 : -ENOMEM;
        }
        if (def->emulator && !same_program(def->emulator, m->config.qemu_binary) &&
            !(approved && approved->emulator && same_program(def->emulator, approved->emulator))) {
                *ret_why = strprintf("it names the emulator %s (the default is %s)", def->emulator, m->config.qemu_binary);
                return *ret_why ? 1 : -ENOMEM;
        }
        r = firmware_needs_host_admin(m, def, approved, ret_why);
        if (r != 0)
                return r;
        if (def->qemu_passthrough) {
                *ret_why = strdup("it passes arguments to QEMU (libvirt's QEMU namespace, <qemu:commandline>)");
                return *ret_why ? 1 : -ENOMEM;
        }
        for (size_t i = 0; approved && i < approved->n_disks; i++) {
                char *folder = real_folder_of(approved->disks[i].source);

                if (folder && strv_push(&approved_folders, folder) < 0) {
                        free(folder);
                        return -ENOMEM;
                }
        }
        r = device_paths_confined(m, def, approved, approved_folders, ret_why);
        if (r != 0)
                return r;
        for (size_t i = 0; i < def->n_disks; i++)
                if (!source_is_confined(m, def->disks[i].source, approved_folders)) {
                        /* Not which of the two: that would tell what lies in
                         * folders the caller may not be able to list. */
                        *ret_why = strprintf("the source of disk %s is outside the image roots%s or not a regular file",
                                             def->disks[i].target, approved ? " and its own disks' folders" : "");
                        return *ret_why ? 1 : -ENOMEM;
                }
        return 0;
}

static void manager_append(Manager *m, Domain *d) {
        Domain **p = &m->domains;

        while (*p)
                p = &(*p)->next;
        *p = d;
        m->n_domains++;
}

static int manager_load_snapshots(Manager *m, Domain *d);

static char *manager_domain_file(Manager *m, const char *uuid) {
        return strprintf("%s/domains/%s.xml", m->config.state_dir, uuid);
}

int manager_store_def(Manager *m, const DomainDef *def) {
        _cleanup_free_ char *xml = NULL, *dir = NULL, *path = NULL;
        int r;

        r = domain_def_format(def, DOMAIN_FORMAT_SECURE, &xml);
        if (r < 0)
                return r;
        dir = strprintf("%s/domains", m->config.state_dir);
        path = manager_domain_file(m, def->uuid);
        if (!dir || !path)
                return -ENOMEM;
        r = mkdir_p(dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Failed to create %s: %m", dir);
        r = write_file_atomic(path, xml, strlen(xml), 0600);
        if (r < 0)
                return log_error_errno(r, "Failed to write %s: %m", path);
        return 0;
}

int manager_define_domain(Manager *m, const char *xml, DomainDoneFunc attached, void *userdata, Domain **ret,
                          bool *ret_created, char **ret_message) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        Domain *existing, *clash, *d;
        int r;

        r = domain_def_parse(xml, strlen(xml), &def, ret_message);
        if (r < 0)
                return r;

        existing = manager_find_domain(m, def->name);
        clash = def->uuid_generated ? NULL : manager_find_domain_by_uuid(m, def->uuid);
        if (existing && clash != existing && clash) {
                *ret_message = strprintf("UUID %s belongs to domain '%s'.", def->uuid, clash->def->name);
                return -QSNAP_E_ALREADY_EXISTS;
        }
        if (!existing && clash) {
                *ret_message = strprintf("Domain '%s' already has UUID %s.", clash->def->name, def->uuid);
                return -QSNAP_E_ALREADY_EXISTS;
        }
        if (existing && def->uuid_generated)
                /* Redefinition without a UUID keeps the domain's own. */
                (void) free_and_strdup(&def->uuid, existing->def->uuid);
        if (existing && !streq(existing->def->uuid, def->uuid)) {
                *ret_message = strprintf("Domain '%s' already exists with UUID %s.", def->name, existing->def->uuid);
                return -QSNAP_E_ALREADY_EXISTS;
        }
        /* A snapshot operation or a lifecycle call in flight writes the
         * definition when it ends (a merge renames the disks' files): it
         * would undo this one, or this one its result. */
        if (existing && domain_is_busy(existing)) {
                *ret_message = strprintf("Domain '%s' is busy with another operation; redefine it after that ended.",
                                         def->name);
                return -QSNAP_E_BUSY;
        }

        r = nvram_def_fill(m, def);
        if (r >= 0)
                r = manager_store_def(m, def);
        if (r < 0) {
                *ret_message = strprintf("Cannot store the definition: %s", strerror(-r));
                return r;
        }

        if (existing) {
                domain_set_def(existing, TAKE_PTR(def));
                log_info("Domain '%s' redefined.", existing->def->name);
                if (!existing->live)
                        manager_notify_changed(m, existing, DOMAIN_CHANGE_DISKS);
                *ret = existing;
                *ret_created = false;
                return 0;
        }

        r = domain_new(m, TAKE_PTR(def), &d);
        if (r < 0)
                return r;
        r = manager_load_snapshots(m, d);
        if (r < 0) {
                *ret_message = strprintf("Cannot open the snapshot metadata of the new domain: %s", strerror(-r));
                _cleanup_free_ char *p = manager_domain_file(m, d->def->uuid);
                if (p)
                        (void) unlink(p);
                domain_unref(d);
                return r;
        }
        manager_append(m, d);
        log_info("Domain '%s' defined (UUID %s).", d->def->name, d->def->uuid);
        if (m->observer && m->observer->domain_added)
                m->observer->domain_added(d, m->observer_userdata);
        /* A QEMU started elsewhere is attached to right away; State follows. */
        *ret = d;
        *ret_created = true;
        if (!domain_is_managed(d)) {
                r = domain_attach(d, attached, userdata, NULL);
                if (r > 0)
                        return 1;
                if (r < 0)
                        log_warning("Domain '%s': cannot attach to %s.", d->def->name, d->def->monitor_path);
        }
        return 0;
}

int manager_undefine_domain(Manager *m, Domain *d, bool drop_snapshots, bool drop_checkpoints, char **ret_message) {
        _cleanup_free_ char *path = manager_domain_file(m, d->def->uuid);
        int r;

        if (!path)
                return -ENOMEM;
        if (d->snapshots.n > 0) {
                if (!drop_snapshots) {
                        *ret_message = strprintf("Domain '%s' has %zu snapshot(s); undefining it needs the "
                                                 "SNAPSHOTS_METADATA flag, which drops their metadata (images stay).",
                                                 d->def->name, d->snapshots.n);
                        return -QSNAP_E_HAS_SNAPSHOTS;
                }
                if (m->observer && m->observer->snapshots_removed)
                        m->observer->snapshots_removed(d, m->observer_userdata);
        }
        if (d->checkpoints.n > 0) {
                if (!drop_checkpoints) {
                        *ret_message = strprintf("Domain '%s' has %zu checkpoint(s); undefining it needs the "
                                                 "CHECKPOINTS_METADATA flag, which drops their metadata (bitmaps stay).",
                                                 d->def->name, d->checkpoints.n);
                        return -QSNAP_E_HAS_SNAPSHOTS;
                }
                if (m->observer && m->observer->checkpoints_removed)
                        m->observer->checkpoints_removed(d, m->observer_userdata);
        }
        /* The metadata goes first: a domain file without metadata is a
         * consistent state, metadata without its domain is not. */
        r = checkpoint_tree_remove_all(&d->checkpoints);
        if (r < 0) {
                *ret_message = strprintf("Cannot remove the checkpoint metadata: %s", strerror(-r));
                return r;
        }
        r = snapshot_tree_remove_all(&d->snapshots);
        if (r < 0) {
                *ret_message = strprintf("Cannot remove the snapshot metadata: %s", strerror(-r));
                return r;
        }
        if (unlink(path) < 0 && errno != ENOENT) {
                r = -errno;
                *ret_message = strprintf("Cannot remove %s: %s", path, strerror(-r));
                return log_error_errno(r, "Failed to remove %s: %m", path);
        }

        for (Domain **p = &m->domains; *p; p = &(*p)->next)
                if (*p == d) {
                        *p = d->next;
                        m->n_domains--;
                        break;
                }
        d->next = NULL;
        log_info("Domain '%s' undefined.", d->def->name);
        domain_disconnect(d);
        if (m->observer && m->observer->domain_removed)
                m->observer->domain_removed(d, m->observer_userdata);
        domain_unref(d);
        return 0;
}

static void on_attached(Domain *d, int error, const char *message, const char *reply, void *userdata) {
        Manager *m = userdata;

        if (error < 0)
                log_warning("Domain '%s': %s", d->def->name, strna(message));
        /* Attached QEMUs were asked already; for a vanished one the files tell. */
        if (!d->qmp)
                operation_recover_offline(d);
        m->n_attaching--;
}

static int manager_load_snapshots(Manager *m, Domain *d) {
        _cleanup_free_ char *dir = manager_snapshot_dir(m), *cdir = manager_checkpoint_dir(m), *message = NULL;
        int r;

        if (!dir || !cdir)
                return -ENOMEM;
        r = snapshot_tree_load(&d->snapshots, dir, d->def->uuid, m->config.metadata_read_cap, &message);
        if (r < 0 && message)
                log_error("Domain '%s': %s", d->def->name, message);
        if (r < 0)
                return r;
        message = mfree(message);
        r = checkpoint_tree_load(&d->checkpoints, cdir, d->def->uuid, m->config.metadata_read_cap, &message);
        if (r < 0 && message)
                log_error("Domain '%s': %s", d->def->name, message);
        if (r >= 0 && d->checkpoints.n > 0)
                (void) bitmaps_refresh(d, NULL, NULL);
        return r;
}

static int manager_load_one(Manager *m, const char *path) {
        _cleanup_free_ char *xml = NULL, *message = NULL;
        DomainDef *def = NULL;
        Domain *d;
        int r;

        r = read_full_file(path, XML_MAX_DOCUMENT_SIZE, &xml, NULL);
        if (r < 0)
                return log_error_errno(r, "Failed to read %s: %m", path);
        r = domain_def_parse(xml, strlen(xml), &def, &message);
        if (r < 0)
                return log_error_errno(r, "Ignoring %s: %s", path, strna(message));
        if (manager_find_domain(m, def->name) || manager_find_domain_by_uuid(m, def->uuid)) {
                log_error("Ignoring %s: domain '%s' is defined twice.", path, def->name);
                domain_def_free(def);
                return -QSNAP_E_ALREADY_EXISTS;
        }
        r = domain_new(m, def, &d);
        if (r < 0) {
                domain_def_free(def);
                return r;
        }
        manager_append(m, d);

        r = manager_load_snapshots(m, d);
        if (r < 0)
                log_error_errno(r, "Domain '%s': snapshot metadata unusable: %m", d->def->name);

        r = domain_attach(d, on_attached, m, &message);
        if (r > 0)
                m->n_attaching++;
        else {
                if (r < 0)
                        log_warning_errno(r, "Domain '%s': cannot attach: %s", d->def->name, strna(message));
                /* No QEMU: an interrupted operation is finished or undone
                 * from the files alone. */
                operation_recover_offline(d);
        }
        return 0;
}

int manager_load(Manager *m) {
        _cleanup_free_ char *dir = NULL;
        struct dirent **names = NULL;
        int n, r;

        dir = strprintf("%s/domains", m->config.state_dir);
        if (!dir)
                return -ENOMEM;
        n = scandir(dir, &names, NULL, alphasort);
        if (n < 0) {
                if (errno == ENOENT)
                        return 0;
                return log_error_errno(errno, "Failed to list %s: %m", dir);
        }
        for (int i = 0; i < n; i++) {
                const char *e = names[i]->d_name;
                size_t l = strlen(e);

                if (l > 4 && streq(e + l - 4, ".xml")) {
                        _cleanup_free_ char *p = strjoin(dir, "/", e);
                        if (p)
                                (void) manager_load_one(m, p);
                }
                free(names[i]);
        }
        free(names);

        /* The first answer any client gets must already be right. */
        while (m->n_attaching > 0) {
                r = sd_event_run(m->event, UINT64_MAX);
                if (r < 0)
                        return log_error_errno(r, "Event loop failed while attaching: %m");
        }
        log_info("Loaded %zu domain(s).", m->n_domains);
        return 0;
}
