/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * BackupBegin's plan: the <domainbackup> parsed and aligned with the
 * domain's disks (store/xml-backup.c fills libvirt's defaults), then every
 * refusal checked before polkit is asked and before anything is touched:
 * the domain's state, one backup at a time, busy disks, what we cannot
 * act on, and each file through the one path gate (core/disk.c). The plan
 * keeps the aligned definition: it is what BackupGetXMLDesc shows.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/checkpoint-plan.h"
#include "core/disk.h"
#include "core/domain-agent.h"
#include "core/gate.h"
#include "core/manager.h"
#include "ops/backup/internal.h"
#include "qemu/image.h"
#include "util/error.h"
#include "util/util.h"

#define UNIX_PATH_MAX 108

int backup_disk_run_pull_names(BackupDiskRun *r) {
        if (!r->node || strlen(r->node) < 2)
                return -EINVAL;
        r->filter_node = strdup(r->node);
        r->access_node = strdup(r->node);
        if (!r->filter_node || !r->access_node)
                return -ENOMEM;
        r->filter_node[1] = 'f';
        r->access_node[1] = 'a';
        return 0;
}

void backup_disk_run_done(BackupDiskRun *r) {
        free(r->target);
        free(r->source);
        free(r->path);
        free(r->node);
        free(r->filter_node);
        free(r->access_node);
        free(r->device);
        free(r->job_id);
        free(r->bitmap);
        free(r->since);
        strv_free(r->since_nodes);
        free(r->export_name);
        if (r->job) {
                job_disown(r->job);
                job_unref(r->job);
        }
}

BackupPlan *backup_plan_free(BackupPlan *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->n_disks; i++)
                backup_disk_run_done(p->disks + i);
        free(p->disks);
        backup_def_free(p->def);
        free(p->id);
        free(p->socket);
        free(p->tcp_host);
        free(p->tcp_port);
        free(p->tls_dir);
        free(p->tls_id);
        checkpoint_def_free(p->checkpoint);
        strv_free(p->cp_targets);
        strv_free(p->cp_sources);
        strv_free(p->cp_nodes);
        free(p);
        return NULL;
}

/* A file is one of the domain's images (QEMU would write over a disk). */
static bool is_domain_image(Domain *d, const char *path) {
        const DomainDef *def = domain_current_def(d);
        char a[PATH_MAX], b[PATH_MAX];
        bool resolved = realpath(path, a);

        for (size_t i = 0; i < def->n_disks; i++) {
                const ImageChain *ch = domain_disk_chain(d, def->disks[i].source, def->disks[i].format);

                for (size_t l = 0; ch && l < ch->n_layers; l++)
                        if (streq(ch->layers[l].path, path) ||
                            (resolved && realpath(ch->layers[l].path, b) && streq(a, b)))
                                return true;
        }
        return false;
}

/* A target (push) or scratch (pull) file named by the caller: allowed
 * folder, and new (or, with REUSE_EXTERNAL, an existing regular file of
 * the right format and size that is no image of the domain). */
static int check_file(Domain *d, BackupDiskRun *r, bool reuse, const char *what, char **ret_message) {
        _cleanup_free_ char *label = strprintf("The %s", what);
        _cleanup_close_ int fd = -EBADF;
        struct stat st;
        uint64_t size = 0;
        int q;

        if (!label)
                return -ENOMEM;
        q = gate_check(d, r->path, label, ret_message);
        if (q < 0)
                return q;
        if (!reuse) {
                if (lstat(r->path, &st) >= 0) {
                        *ret_message = strprintf("The %s %s of disk %s exists already; pass REUSE_EXTERNAL (1) to "
                                                 "write into it.", what, r->path, r->target);
                        return -QSNAP_E_ALREADY_EXISTS;
                }
                return domain_check_new_file(r->path, ret_message);
        }
        if (lstat(r->path, &st) < 0) {
                *ret_message = strprintf("REUSE_EXTERNAL: the %s %s of disk %s does not exist: %m.", what, r->path,
                                         r->target);
                return errno == ENOENT ? -QSNAP_E_INVALID_ARGUMENT : -errno;
        }
        if (!S_ISREG(st.st_mode)) {
                *ret_message = strprintf("REUSE_EXTERNAL: the %s %s is not a regular file.", what, r->path);
                return -QSNAP_E_PATH_NOT_ALLOWED;
        }
        if (is_domain_image(d, r->path)) {
                *ret_message = strprintf("The %s %s is an image of domain '%s'.", what, r->path, d->def->name);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        /* Its header from the file the gate opens, not by name. */
        q = gate_open_image(d, r->path, label, &fd, ret_message);
        if (q < 0)
                return q;
        if ((r->format == DISK_FORMAT_QCOW2) != image_is_qcow2_fd(fd)) {
                *ret_message = strprintf("REUSE_EXTERNAL: the %s %s is not a %s image.", what, r->path,
                                         disk_format_to_string(r->format));
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        q = image_virtual_size_fd(fd, r->format, &size);
        if (q < 0 || size != r->size) {
                *ret_message = strprintf("REUSE_EXTERNAL: the %s %s has %" PRIu64 " bytes, disk %s %" PRIu64 ".", what,
                                         r->path, size, r->target, r->size);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        r->reuse = true;
        return 0;
}

/* The pull server: a UNIX socket (ours in the runtime dir, or the
 * caller's in an allowed folder, new); TCP is not offered yet. */
const char *backup_tls_dir(void) {
        return getenv("QSNAPD_NBD_TLS_DIR") ?: BACKUP_NBD_TLS_DIR;
}

/* A free TCP port on host, for a server without port= (as libvirt picks one). */
static int pick_port(const char *host, uint16_t *ret, char **ret_message) {
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai = NULL;
        union {
                struct sockaddr sa;
                struct sockaddr_storage ss;
        } addr;
        socklen_t len = sizeof(addr);
        _cleanup_close_ int fd = -EBADF;
        int r;

        r = getaddrinfo(host, "0", &hints, &ai);
        if (r != 0) {
                *ret_message = strprintf("The server name '%s' does not resolve: %s.", host, gai_strerror(r));
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        r = fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || getsockname(fd, &addr.sa, &len) < 0 ? -errno : 0;
        freeaddrinfo(ai);
        if (r < 0) {
                *ret_message = strprintf("Cannot find a free port on %s: %s.", host, strerror(-r));
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        *ret = ntohs(addr.ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &addr.ss)->sin6_port
                                                   : ((struct sockaddr_in *) &addr.ss)->sin_port);
        return 0;
}

/* TCP: host and port (a free one when not given; BackupGetXMLDesc shows
 * it), and with tls='yes' the x509 folder, which must hold the server's
 * credentials. */
static int plan_tcp(BackupPlan *p, BackupServer *s, char **ret_message) {
        int r;

        if (s->port == 0) {
                r = pick_port(s->name, &s->port, ret_message);
                if (r < 0)
                        return r;
        }
        p->tcp_host = strdup(s->name);
        p->tcp_port = strprintf("%u", (unsigned) s->port);
        if (!p->tcp_host || !p->tcp_port)
                return -ENOMEM;
        if (s->tls <= 0)
                return 0;
        p->tls_dir = strdup(backup_tls_dir());
        p->tls_id = strprintf("tls-%s", p->id);
        if (!p->tls_dir || !p->tls_id)
                return -ENOMEM;
        static const char *const files[] = { "ca-cert.pem", "server-cert.pem", "server-key.pem" };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                const char *f = files[i];
                _cleanup_free_ char *path = strjoin(p->tls_dir, "/", f);

                if (!path)
                        return -ENOMEM;
                if (access(path, R_OK) < 0) {
                        *ret_message = strprintf("tls='yes' needs the NBD server's x509 credentials in %s; %s: %m.",
                                                 p->tls_dir, f);
                        return -QSNAP_E_OPERATION_INVALID;
                }
        }
        return 0;
}

/* The pull server: a UNIX socket (ours in the runtime dir, or the
 * caller's in an allowed folder, new) or TCP. */
static int plan_server(Domain *d, BackupPlan *p, char **ret_message) {
        BackupServer *s = p->def->server;
        struct stat st;
        int r;

        if (!s) {
                *ret_message = strdup("A pull backup needs a <server>.");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (s->transport == BACKUP_TRANSPORT_TCP)
                return plan_tcp(p, s, ret_message);
        if (s->tls > 0) {
                *ret_message = strdup("tls='yes' goes with a TCP server (transport='tcp'); a UNIX socket is only as "
                                      "open as its folder.");
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (strlen(s->socket) >= UNIX_PATH_MAX) {
                *ret_message = strprintf("The socket path %s is longer than a UNIX socket address takes (%d).",
                                         s->socket, UNIX_PATH_MAX - 1);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        p->socket = strdup(s->socket);
        if (!p->socket)
                return -ENOMEM;
        if (p->socket_default)
                return 0;
        /* QEMU unlinks whatever is at the path before it binds. */
        r = gate_check(d, p->socket, "The socket path", ret_message);
        if (r < 0)
                return r;
        if (lstat(p->socket, &st) >= 0) {
                *ret_message = strprintf("The socket path %s exists already.", p->socket);
                return -QSNAP_E_ALREADY_EXISTS;
        }
        return path_check_writable(p->socket, ret_message);
}

/* An incremental disk: the checkpoint exists, has a bitmap on the disk, and
 * nothing is known to be wrong with it (the run checks the images again). */
static int plan_incremental(Domain *d, BackupDiskRun *r, const BackupDisk *bd, bool pull, char **ret_message) {
        Checkpoint *c = checkpoint_tree_find(&d->checkpoints, bd->incremental);
        const CheckpointDisk *cd = NULL;
        _cleanup_free_ char *prefix = NULL;

        if (!c) {
                *ret_message = strprintf("Domain '%s' has no checkpoint named '%s'.", d->def->name, bd->incremental);
                return -QSNAP_E_NO_SUCH_CHECKPOINT;
        }
        for (size_t i = 0; i < c->def->n_disks && !cd; i++)
                if (streq(c->def->disks[i].name, r->target) && c->def->disks[i].type == CHECKPOINT_TYPE_BITMAP)
                        cd = c->def->disks + i;
        if (!cd) {
                *ret_message = strprintf("Checkpoint '%s' has no bitmap for disk %s: back it up in full.",
                                         bd->incremental, r->target);
                return -QSNAP_E_OPERATION_INVALID;
        }
        prefix = strprintf("disk %s:", r->target);
        if (!prefix)
                return -ENOMEM;
        for (char **why = c->problems; why && *why; why++)
                if (strncmp(*why, prefix, strlen(prefix)) == 0) {
                        *ret_message = strprintf("Checkpoint '%s' cannot give an incremental backup: %s. Delete it "
                                                 "and take a full backup.", bd->incremental, *why);
                        return -QSNAP_E_OPERATION_INVALID;
                }
        r->since = strdup(cd->bitmap ?: checkpoint_name(c));
        /* A pull exports it (libvirt's exportbitmap), a push copies by it. */
        r->bitmap = pull && bd->export_bitmap ? strdup(bd->export_bitmap) : strprintf("backup-%s", r->target);
        return r->since && r->bitmap ? 0 : -ENOMEM;
}

static int plan_disk(Domain *d, BackupPlan *p, const BackupDisk *bd, char **ret_message) {
        const DomainDisk *disk = domain_def_find_disk(domain_current_def(d), bd->name);
        bool pull = p->def->mode == BACKUP_MODE_PULL;
        BackupDiskRun *r = p->disks + p->n_disks;
        int q;

        if (!disk) {
                *ret_message = strprintf("Domain '%s' has no disk '%s'.", d->def->name, bd->name);
                return -QSNAP_E_NO_SUCH_DISK;
        }
        if (bd->type != BACKUP_DISK_TYPE_FILE || !bd->path) {
                *ret_message = strprintf("Disk %s: only file %s are supported.", bd->name, pull ? "scratch files" : "targets");
                return -QSNAP_E_UNSUPPORTED;
        }
        if (bd->extra_path_elements || bd->extra_path_attributes) {
                *ret_message = strprintf("Disk %s: the %s has settings qsnapd cannot apply (%s).", bd->name,
                                         pull ? "<scratch>" : "<target>",
                                         bd->extra_path_elements ? bd->extra_path_elements[0] : bd->extra_path_attributes[0]);
                return -QSNAP_E_UNSUPPORTED;
        }
        if (disk->transient) {
                *ret_message = strprintf("Disk %s is transient; its data is thrown away at shut-down.", disk->target);
                return -QSNAP_E_UNSUPPORTED;
        }
        /* Measured: QEMU 7.2.22 (its stable fix of CVE-2024-7409) aborts on
         * "nbd_blockdev_client_closed: Assertion `qemu_in_main_thread() &&
         * nbd_server'" once a client of an export in an I/O thread hangs up;
         * QEMU 9.0 closes NBD clients in the main loop. */
        if (pull && !p->offline && disk->iothread > 0 && (!d->qmp || !qmp_version_at_least(d->qmp, 9, 0))) {
                *ret_message = strprintf("Disk %s runs in I/O thread %u: before 9.0 QEMU aborts when a client of an "
                                         "NBD export in an I/O thread disconnects, so a pull backup would kill the "
                                         "guest; back it up with a push backup.", disk->target, disk->iothread);
                return -QSNAP_E_UNSUPPORTED;
        }
        if (pull && bd->format != DISK_FORMAT_QCOW2) {
                *ret_message = strprintf("Disk %s: a scratch file must be qcow2 (it stands on the disk).", bd->name);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (domain_disk_job(d, disk->target)) {
                *ret_message = strprintf("Disk %s of domain '%s' is busy with a job.", disk->target, d->def->name);
                return -QSNAP_E_BUSY;
        }

        *r = (BackupDiskRun) { .format = bd->format };
        p->n_disks++;
        r->target = strdup(disk->target);
        r->source = strdup(disk->source);
        r->path = strdup(bd->path);
        r->export_name = pull && bd->export_name ? strdup(bd->export_name) : NULL;
        r->node = strprintf("bk%" PRIx64 "-%s", (uint64_t) (++d->node_seq & 0xffffffffULL), disk->target);
        r->job_id = strprintf("%s.%s", p->id, disk->target);
        if (!r->target || !r->source || !r->path || !r->node || !r->job_id || (pull && bd->export_name && !r->export_name))
                return -ENOMEM;
        if (pull && backup_disk_run_pull_names(r) < 0)
                return -ENOMEM;
        if (bd->mode == BACKUP_DISK_MODE_INCREMENTAL) {
                q = plan_incremental(d, r, bd, pull, ret_message);
                if (q < 0)
                        return q;
        }
        q = gate_image_size(d, disk->source, disk->format, "The image", &r->size, ret_message);
        if (q == -QSNAP_E_PATH_NOT_ALLOWED || q == -ENOMEM)
                return q;
        if (q < 0) {
                free(*ret_message);
                *ret_message = strprintf("Cannot read the size of %s: %s.", disk->source, qsnap_strerror(q));
                return -QSNAP_E_QEMU_FAILED;
        }
        /* Shut off, a pull exports the disk itself (offline.c): no scratch file. */
        if (pull && p->offline)
                return 0;
        /* Our own default scratch file (store/xml-backup.c's name for it) is in
         * the runtime dir: no gate there, only a new name. */
        if (pull) {
                _cleanup_free_ char *ours = strprintf("%s/%s-%s.%s.scratch", d->manager->config.runtime_dir,
                                                      d->def->uuid, r->target, p->id);
                if (!ours)
                        return -ENOMEM;
                if (streq(ours, r->path))
                        return 0;
        }
        return check_file(d, r, p->flags & BACKUP_BEGIN_REUSE_EXTERNAL, pull ? "scratch file" : "target", ret_message);
}

/* checkpoint_xml: a new checkpoint as CreateCheckpoint makes it (the same
 * rules: default name, bitmaps named after it, qcow2 disks, parent = the
 * current one), its bitmaps added in the backup's transaction. */
static int plan_checkpoint(Domain *d, BackupPlan *p, const char *xml, char **ret_message) {
        int r;

        r = checkpoint_def_parse(xml, strlen(xml), 0, &p->checkpoint, ret_message);
        if (r < 0)
                return IN_SET(r, -EINVAL, -EFBIG, -EBADMSG) ? -QSNAP_E_INVALID_XML : r;
        return checkpoint_plan_define(d, p->checkpoint, (int64_t) (p->start_time / USEC_PER_SEC), &p->cp_targets,
                                      &p->cp_sources, ret_message);
}

static int plan_state(Domain *d, BackupMode mode, char **ret_message) {
        if (d->backup) {
                *ret_message = strprintf("A backup of domain '%s' runs already; one at a time.", d->def->name);
                return -QSNAP_E_BUSY;
        }
        if (domain_is_busy(d)) {
                *ret_message = operation_busy_message(d);
                return -QSNAP_E_BUSY;
        }
        if (d->state == DOMAIN_CRASHED) {
                *ret_message = strprintf("Domain '%s' crashed; stop it first.", d->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }
        /* Shut off: a paused QEMU of its own runs it (offline.c), unless the
         * domain's QEMU is somebody else's to start at any moment. */
        if (d->state == DOMAIN_SHUTOFF && !d->qmp && domain_is_managed(d))
                return 0;
        if (!domain_is_active(d) || !d->qmp || !d->jobs) {
                *ret_message = strprintf("Domain '%s' is not running and its QEMU is started elsewhere "
                                         "(<qsnap:monitor>): qsnapd backs it up only while it runs.", d->def->name);
                return -QSNAP_E_NOT_RUNNING;
        }
        if (d->graph_busy) {
                *ret_message = strprintf("A block job of domain '%s' is finishing; try again in a moment.", d->def->name);
                return -QSNAP_E_BUSY;
        }
        return 0;
}

int backup_plan_new(Domain *d, const char *backup_xml, const char *checkpoint_xml, uint64_t flags, BackupPlan **ret,
                    char **ret_message) {
        _cleanup_(backup_plan_freep) BackupPlan *p = NULL;
        _cleanup_free_ char *suffix = NULL, *scratch_suffix = NULL, *socket = NULL;
        BackupDefaults defaults;
        int r;

        if (flags & ~BACKUP_BEGIN_ALL) {
                *ret_message = strprintf("Unknown BackupBegin flags 0x%" PRIx64 ".", (uint64_t) (flags & ~BACKUP_BEGIN_ALL));
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        if (flags & BACKUP_BEGIN_QUIESCE) {
                r = domain_agent_check_quiesce(d, ret_message);
                if (r < 0)
                        return r;
        }
        p = new0(BackupPlan, 1);
        if (!p)
                return -ENOMEM;
        p->domain = d;
        p->flags = flags;
        p->start_time = now_usec(CLOCK_REALTIME);
        r = backup_def_parse(backup_xml, strlen(backup_xml), &p->def, ret_message);
        if (r < 0)
                return IN_SET(r, -EINVAL, -EFBIG, -EBADMSG) ? -QSNAP_E_INVALID_XML : r;
        r = plan_state(d, p->def->mode, ret_message);
        if (r < 0)
                return r;
        p->offline = !domain_is_active(d);
        if (!isempty(checkpoint_xml)) {
                r = plan_checkpoint(d, p, checkpoint_xml, ret_message);
                if (r < 0)
                        return r;
        }
        if (p->def->incremental && !checkpoint_tree_find(&d->checkpoints, p->def->incremental)) {
                *ret_message = strprintf("Domain '%s' has no checkpoint named '%s'.", d->def->name, p->def->incremental);
                return -QSNAP_E_NO_SUCH_CHECKPOINT;
        }

        p->id = strprintf("backup-%" PRIx64, (uint64_t) ((p->start_time / 1000) & 0xffffffffffULL));
        /* libvirt: targets are named after the new checkpoint, else the start time. */
        suffix = p->checkpoint ? strdup(p->checkpoint->name) : strprintf("%" PRIu64, p->start_time / USEC_PER_SEC);
        scratch_suffix = strprintf("%s", p->id);
        /* QEMU binds it itself: in the folder its user may write when it
         * runs as one (core/domain.h), the runtime folder otherwise. */
        socket = domain_qemu_socket_path(d, ".backup.sock");
        if (!p->id || !suffix || !scratch_suffix || !socket)
                return -ENOMEM;
        p->socket_default = p->def->mode == BACKUP_MODE_PULL && !p->def->server;
        defaults = (BackupDefaults) {
                .suffix = suffix,
                .scratch_dir = d->manager->config.runtime_dir,
                .socket = socket,
        };
        /* Pull scratch files: named after the job, so never an old one's. */
        if (p->def->mode == BACKUP_MODE_PULL)
                defaults.suffix = scratch_suffix;
        r = backup_def_align(p->def, domain_current_def(d), &defaults, ret_message);
        if (r < 0)
                return r;

        p->disks = new0(BackupDiskRun, p->def->n_disks);
        if (!p->disks)
                return -ENOMEM;
        for (size_t i = 0; i < p->def->n_disks; i++) {
                if (!p->def->disks[i].backup)
                        continue;
                r = plan_disk(d, p, p->def->disks + i, ret_message);
                if (r < 0)
                        return r;
        }
        /* ... and BackupGetXMLDesc names none. */
        for (size_t i = 0; p->offline && p->def->mode == BACKUP_MODE_PULL && i < p->def->n_disks; i++)
                p->def->disks[i].path = mfree(p->def->disks[i].path);
        if (p->def->mode == BACKUP_MODE_PULL) {
                r = plan_server(d, p, ret_message);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(p);
        return 0;
}

int backup_get_xml_desc(Domain *d, char **ret, char **ret_message) {
        BackupOp *b = d->backup ? d->backup->plan : NULL;

        if (!b) {
                *ret_message = strprintf("No backup of domain '%s' runs.", d->def->name);
                return -QSNAP_E_OPERATION_INVALID;
        }
        return backup_def_format(b->plan->def, ret);
}
