/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QEMU options of a domain's devices besides its disks (issue #14),
 * from the DomainDevices that store/xml-domain-devices.c parsed, appended
 * to core/domain-launch.c's command line by one call. Device ids follow
 * libvirt's aliases (net0, serial0, channel0, …) with the netdev/chardev
 * behind each named host<id>/char<id>; a CD-ROM's id is its target, as a
 * disk's is. Sockets qsnapd names itself live in the runtime dir beside
 * the monitor socket. No D-Bus in here.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/domain-devices.h"
#include "core/manager.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/json-util.h"
#include "util/util.h"

/* QEMU's option parser takes ',,' for a literal ','. */
char *qemu_opt_escape(const char *s) {
        size_t n = 0;
        char *r, *p;

        for (const char *c = s; *c; c++)
                n += *c == ',' ? 2 : 1;
        r = malloc(n + 1);
        if (!r)
                return NULL;
        p = r;
        for (const char *c = s; *c; c++) {
                *p++ = *c;
                if (*c == ',')
                        *p++ = ',';
        }
        *p = 0;
        return r;
}

static bool is_kvm(const DomainDef *def) {
        /* type='qemu' is TCG (libvirt); type='kvm' asks for KVM and falls
         * back to TCG where there is none (docs/decisions.md). */
        return !streq_ptr(def->type, "qemu");
}

static int add(char ***argv, const char *opt, const char *fmt, ...) _printf_(3, 4);
static int add(char ***argv, const char *opt, const char *fmt, ...) {
        _cleanup_free_ char *value = NULL;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&value, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        r = strv_extend(argv, opt);
        return r < 0 ? r : strv_extend(argv, value);
}

static int machine_argv(const DomainDef *def, const DeviceFiles *files, char ***argv) {
        const DomainDevices *hw = &def->devices;
        int r;

        r = add(argv, "-accel", "%s", is_kvm(def) ? "kvm" : "tcg");
        if (r >= 0 && is_kvm(def))
                /* The second -accel is QEMU's fallback when KVM cannot start
                 * (no /dev/kvm: a container, a CI machine, nested virt off). */
                r = add(argv, "-accel", "%s", "tcg");
        if (r >= 0 && hw->cpu_mode != DOMAIN_CPU_DEFAULT)
                /* QEMU has no host-model; under TCG "host" does not exist
                 * and "max" is everything TCG can emulate. */
                r = add(argv, "-cpu", "%s", is_kvm(def) ? "host" : "max");
        if (r >= 0 && hw->kernel) {
                /* QEMU's loader re-opens the descriptor qsnapd opened and
                 * QEMU inherited: no name it could be raced on. */
                r = add(argv, "-kernel", "/proc/self/fd/%d", files->kernel);
                if (r >= 0 && hw->initrd)
                        r = add(argv, "-initrd", "/proc/self/fd/%d", files->initrd);
                if (r >= 0 && hw->cmdline)
                        r = add(argv, "-append", "%s", hw->cmdline);
        }
        if (r >= 0 && hw->boot_order)
                r = add(argv, "-boot", "order=%s", hw->boot_order);
        if (r >= 0 && hw->on_poweroff == DOMAIN_LIFECYCLE_PRESERVE)
                r = add(argv, "-action", "shutdown=pause");
        if (r >= 0 && hw->on_reboot == DOMAIN_LIFECYCLE_DESTROY)
                r = add(argv, "-action", "reboot=shutdown");
        return r;
}

static const char *net_device(const char *model) {
        if (!model || streq(model, "virtio"))
                return "virtio-net-pci";
        return model; /* e1000, e1000e, rtl8139: QEMU's device names */
}

static int nets_argv(const DomainDef *def, const int *net_fds, char ***argv) {
        for (size_t i = 0; i < def->devices.n_nets; i++) {
                const DomainNet *n = def->devices.nets + i;
                int r;

                if (n->type == DOMAIN_NET_USER)
                        r = add(argv, "-netdev", "user,id=hostnet%zu", i);
                else if (net_fds && net_fds[i] >= 0)
                        /* qsnapd's tap (core/domain-net.c); vhost-net would
                         * need /dev/vhost-net opened for QEMU as well. */
                        r = add(argv, "-netdev", "tap,id=hostnet%zu,fd=%d,vhost=off", i, net_fds[i]);
                else
                        /* QEMU's bridge helper: /etc/qemu/bridge.conf says
                         * which bridges may be used (docs/decisions.md). */
                        r = add(argv, "-netdev", "bridge,id=hostnet%zu,br=%s", i, n->bridge);
                if (r >= 0)
                        r = add(argv, "-device", "%s,netdev=hostnet%zu,id=net%zu,mac=%s", net_device(n->model), i, i, n->mac);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* A free TCP port on addr for SPICE's autoport (VNC has to= for that). */
static int free_port(void) {
        _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET };
        socklen_t len = sizeof(sa);

        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return -errno;
        return ntohs(sa.sin_port);
}

/* A graphics password goes to QEMU as a secret object read from a 0600
 * file in the runtime dir (never on the command line, which every user
 * can read in /proc): <uuid>.graphics<i>.secret. Returns its object's
 * options into *ret_secret_opt (",password-secret=ID"). */
static int graphics_secret(Domain *d, const DomainGraphics *g, size_t i, char ***argv, char **ret_secret_opt) {
        _cleanup_free_ char *suffix = strprintf(".graphics%zu.secret", i), *path = NULL, *esc = NULL;
        int r;

        *ret_secret_opt = NULL;
        if (!g->passwd)
                return 0;
        path = suffix ? domain_runtime_path(d, suffix) : NULL;
        esc = path ? qemu_opt_escape(path) : NULL;
        if (!esc)
                return -ENOMEM;
        r = write_file_atomic(path, g->passwd, strlen(g->passwd), 0600);
        if (r < 0)
                return r;
        r = add(argv, "-object", "secret,id=graphics%zu-secret,file=%s,format=raw", i, esc);
        if (r < 0)
                return r;
        *ret_secret_opt = strprintf(",password-secret=graphics%zu-secret", i);
        return *ret_secret_opt ? 0 : -ENOMEM;
}

static int graphics_one(Domain *d, const DomainGraphics *g, size_t i, char ***argv) {
        bool vnc = g->type == DOMAIN_GRAPHICS_VNC;
        _cleanup_free_ char *sock = NULL, *esc = NULL, *secret = NULL;
        const char *ticketing;
        int port = g->port, r;

        r = graphics_secret(d, g, i, argv, &secret);
        if (r < 0)
                return r;
        ticketing = secret ?: ",disable-ticketing=on";
        if (!g->address) {
                sock = g->socket ? strdup(g->socket) : domain_qemu_socket_path(d, vnc ? ".vnc" : ".spice");
                esc = sock ? qemu_opt_escape(sock) : NULL;
                if (!esc)
                        return -ENOMEM;
                return vnc ? add(argv, "-vnc", "unix:%s%s", esc, strempty(secret))
                           : add(argv, "-spice", "unix=on,addr=%s%s", esc, ticketing);
        }
        esc = strchr(g->address, ':') ? strprintf("[%s]", g->address) : qemu_opt_escape(g->address);
        if (!esc)
                return -ENOMEM;
        if (vnc)
                return port < 0 ? add(argv, "-vnc", "%s:0,to=99%s", esc, strempty(secret))
                                : add(argv, "-vnc", "%s:%d%s", esc, port - 5900, strempty(secret));
        if (port < 0 && (port = free_port()) < 0)
                return port;
        return add(argv, "-spice", "addr=%s,port=%d%s", g->address, port, ticketing);
}

static const char *video_device(const char *model) {
        if (streq(model, "cirrus"))
                return "cirrus-vga";
        if (streq(model, "qxl"))
                return "qxl-vga";
        if (streq(model, "virtio"))
                return "virtio-vga";
        if (streq(model, "bochs"))
                return "bochs-display";
        return "VGA";
}

static int graphics_argv(Domain *d, const DomainDef *def, char ***argv) {
        const DomainDevices *hw = &def->devices;
        const char *video = hw->video ?: (hw->n_graphics > 0 ? "vga" : NULL);
        int r;

        for (size_t i = 0; i < hw->n_graphics; i++) {
                r = graphics_one(d, hw->graphics + i, i, argv);
                if (r < 0)
                        return r;
        }
        if (video && !streq(video, "none"))
                return add(argv, "-device", "%s,id=video0", video_device(video));
        return 0;
}

/* The chardev behind a serial, console or channel, named id. */
static int chardev_argv(Domain *d, const DomainChar *c, const char *id, const char *default_suffix, unsigned set,
                        char ***argv) {
        _cleanup_free_ char *path = NULL, *esc = NULL;

        if (c->type == DOMAIN_CHAR_PTY)
                return add(argv, "-chardev", "pty,id=%s", id);
        if (c->type == DOMAIN_CHAR_FILE)
                /* qsnapd's descriptor (fd set): QEMU creates and opens nothing. */
                return add(argv, "-chardev", "file,id=%s,path=/dev/fdset/%u%s", id, set, c->append ? ",append=on" : "");
        path = c->path ? strdup(c->path) : domain_qemu_socket_path(d, default_suffix);
        esc = path ? qemu_opt_escape(path) : NULL;
        if (!esc)
                return -ENOMEM;
        if (c->connect)
                return add(argv, "-chardev", "socket,id=%s,path=%s,server=off,reconnect=1", id, esc);
        return add(argv, "-chardev", "socket,id=%s,path=%s,server=on,wait=off", id, esc);
}

static bool is_agent(const DomainChar *c) {
        return c->role == DOMAIN_CHAR_CHANNEL && streq_ptr(c->name, DOMAIN_AGENT_CHANNEL_NAME);
}

/* The runtime dir's socket of a unix serial, console or channel that
 * names no <source path>: <uuid>.channel<i>, .serial<i>. (The agent's is
 * always <uuid>.agent, core/domain-launch.c's.) */
static void char_socket_suffix(const DomainChar *c, size_t i, char buf[static 32]) {
        snprintf(buf, 32, "%s%zu", c->role == DOMAIN_CHAR_CHANNEL ? ".channel" : ".serial", i);
}

/* A <console> whose target is a serial port that a <serial> already
 * gives is that serial (libvirt lists the first serial twice). */
static bool console_is_a_serial(const DomainDevices *hw, const DomainChar *c) {
        if (c->role != DOMAIN_CHAR_CONSOLE || c->virtio)
                return false;
        for (size_t i = 0; i < hw->n_chars; i++)
                if (hw->chars[i].role == DOMAIN_CHAR_SERIAL && hw->chars[i].port == c->port)
                        return true;
        return false;
}

bool domain_devices_char_is_file(const DomainDevices *hw, size_t i) {
        const DomainChar *c = hw->chars + i;

        return c->type == DOMAIN_CHAR_FILE && c->path && !console_is_a_serial(hw, c) && !is_agent(c);
}

size_t domain_devices_char_backend(const DomainDevices *hw, size_t i) {
        const DomainChar *c = hw->chars + i;

        if (console_is_a_serial(hw, c))
                for (size_t j = 0; j < hw->n_chars; j++)
                        if (hw->chars[j].role == DOMAIN_CHAR_SERIAL && hw->chars[j].port == c->port)
                                return j;
        return i;
}

char *domain_devices_char_socket(Domain *d, const DomainDevices *hw, size_t k) {
        char suffix[32];

        if (hw->chars[k].path)
                return strdup(hw->chars[k].path);
        char_socket_suffix(hw->chars + k, k, suffix);
        return domain_qemu_socket_path(d, suffix);
}

/* The chardev QEMU made for pty chars[i]: its own, or for a console that
 * is a serial that serial's; -1 when that is no pty. */
static ssize_t pty_chardev(const DomainDevices *hw, size_t i) {
        size_t k = domain_devices_char_backend(hw, i);

        return hw->chars[i].type == DOMAIN_CHAR_PTY && hw->chars[k].type == DOMAIN_CHAR_PTY ? (ssize_t) k : -1;
}

typedef struct PtyQuery {
        Domain *d;
        void (*then)(Domain *d);
} PtyQuery;

static void on_query_chardev(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                             void *userdata) {
        _cleanup_free_ PtyQuery *q = userdata;
        Domain *d = q->d;
        bool changed = false;

        if (error == -ECONNRESET)
                return; /* the disconnect callback reports it */
        for (size_t i = 0; error >= 0 && d->live && i < d->live->devices.n_chars; i++) {
                ssize_t k = pty_chardev(&d->live->devices, i);
                const char *pty;
                char label[32];

                if (k < 0)
                        continue;
                snprintf(label, sizeof(label), "char%zd", k);
                pty = qmp_parse_chardev_pty(result, label);
                if (pty && domain_def_set_live_pty(d->live, i, pty) >= 0)
                        changed = true;
        }
        if (error < 0)
                log_warning("Domain '%s': query-chardev failed: %s", d->def->name, strna(desc));
        if (changed)
                (void) domain_save_live(d);
        q->then(d);
}

void domain_devices_query_ptys(Domain *d, void (*then)(Domain *d)) {
        PtyQuery *q;
        bool any = false;

        for (size_t i = 0; d->live && i < d->live->devices.n_chars; i++)
                any = any || pty_chardev(&d->live->devices, i) >= 0;
        if (!any || !(q = new0(PtyQuery, 1)))
                return then(d);
        *q = (PtyQuery) { .d = d, .then = then };
        if (qmp_cmd_query_chardev(d->qmp, on_query_chardev, q) < 0) {
                free(q);
                then(d);
        }
}

static int chars_argv(Domain *d, const DomainDef *def, const DeviceFiles *files, char ***argv) {
        const DomainDevices *hw = &def->devices;
        bool virtio_serial = def->agent_channel; /* launched with the agent's channel */
        int r;

        for (size_t i = 0; i < hw->n_chars; i++) {
                const DomainChar *c = hw->chars + i;
                char id[32], suffix[32];

                if (console_is_a_serial(hw, c) || is_agent(c))
                        continue; /* the agent's: core/domain-launch.c (with the controller) */
                if (c->virtio && !virtio_serial) {
                        r = add(argv, "-device", "virtio-serial-pci,id=virtio-serial0");
                        if (r < 0)
                                return r;
                        virtio_serial = true;
                }
                snprintf(id, sizeof(id), "char%zu", i);
                char_socket_suffix(c, i, suffix);
                r = chardev_argv(d, c, id, suffix, files->char_sets ? files->char_sets[i] : 0, argv);
                if (r < 0)
                        return r;
                if (c->role == DOMAIN_CHAR_CHANNEL)
                        r = add(argv, "-device", "virtserialport,bus=virtio-serial0.0,chardev=%s,id=channel%zu,name=%s", id, i,
                                c->name);
                else if (c->virtio)
                        r = add(argv, "-device", "virtconsole,bus=virtio-serial0.0,chardev=%s,id=console%zu", id, i);
                else
                        r = add(argv, "-device", "isa-serial,chardev=%s,id=serial%u,index=%u", id, c->port, c->port);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int cdroms_argv(const DomainDef *def, const DeviceFiles *files, char ***argv) {
        bool scsi = false;
        int r;

        for (size_t i = 0; i < def->devices.n_cdroms; i++) {
                const DomainCdrom *c = def->devices.cdroms + i;
                _cleanup_free_ char *drive = NULL;
                bool on_scsi = streq_ptr(c->bus, "scsi");

                /* Its image: read-only raw over qsnapd's descriptor, put on
                 * the line by core/domain-launch.c (never written, never
                 * snapshotted). */
                if (c->source) {
                        drive = strprintf(",drive=%s", c->target);
                        if (!drive)
                                return -ENOMEM;
                }
                if (on_scsi && !scsi) {
                        r = add(argv, "-device", "virtio-scsi-pci,id=scsi0");
                        if (r < 0)
                                return r;
                        scsi = true;
                }
                r = add(argv, "-device", "%s,id=%s%s", on_scsi ? "scsi-cd,bus=scsi0.0" : "ide-cd", c->target, strempty(drive));
                if (r < 0)
                        return r;
        }
        return 0;
}

int domain_devices_argv(Domain *d, const DomainDef *def, const int *net_fds, const DeviceFiles *files, char ***argv) {
        int r;

        r = machine_argv(def, files, argv);
        if (r >= 0)
                r = nets_argv(def, net_fds, argv);
        if (r >= 0)
                r = graphics_argv(d, def, argv);
        if (r >= 0)
                r = chars_argv(d, def, files, argv);
        if (r >= 0)
                r = cdroms_argv(def, files, argv);
        /* Last, as libvirt puts them: host-admin's own arguments. */
        for (char **a = def->devices.qemu_args; r >= 0 && a && *a; a++)
                r = strv_extend(argv, *a);
        return r;
}

void domain_devices_remove_runtime_files(Domain *d, const DomainDef *def) {
        const DomainDevices *hw = &def->devices;
        _cleanup_strv_free_ char **paths = NULL;

        for (size_t i = 0; i < hw->n_graphics; i++)
                if (hw->graphics[i].passwd)
                        (void) strv_push(&paths, strprintf("%s/%s.graphics%zu.secret", d->manager->config.runtime_dir,
                                                           def->uuid, i));
        for (size_t i = 0; i < hw->n_graphics; i++)
                if (!hw->graphics[i].address && !hw->graphics[i].socket)
                        (void) strv_push(&paths, domain_qemu_socket_path(d, hw->graphics[i].type == DOMAIN_GRAPHICS_VNC
                                                                                ? ".vnc"
                                                                                : ".spice"));
        for (size_t i = 0; i < hw->n_chars; i++) {
                const DomainChar *c = hw->chars + i;
                char suffix[32];

                if (c->type != DOMAIN_CHAR_UNIX || c->path || is_agent(c))
                        continue;
                char_socket_suffix(c, i, suffix);
                (void) strv_push(&paths, domain_qemu_socket_path(d, suffix));
        }
        for (char **p = paths; p && *p; p++)
                (void) unlink(*p);
}

int domain_devices_paths(const DomainDef *def, bool writable, char ***ret) {
        const DomainDevices *hw = &def->devices;
        _cleanup_strv_free_ char **l = NULL;
        int r = 0;

        if (!writable) {
                if (hw->kernel)
                        r = strv_extend(&l, hw->kernel);
                if (r >= 0 && hw->initrd)
                        r = strv_extend(&l, hw->initrd);
                for (size_t i = 0; r >= 0 && i < hw->n_cdroms; i++)
                        if (hw->cdroms[i].source)
                                r = strv_extend(&l, hw->cdroms[i].source);
        } else {
                for (size_t i = 0; r >= 0 && i < hw->n_chars; i++)
                        if (hw->chars[i].path && !is_agent(hw->chars + i))
                                r = strv_extend(&l, hw->chars[i].path);
                for (size_t i = 0; r >= 0 && i < hw->n_graphics; i++)
                        if (hw->graphics[i].socket)
                                r = strv_extend(&l, hw->graphics[i].socket);
        }
        if (r < 0)
                return r;
        if (!l && !(l = calloc(1, sizeof(char *))))
                return -ENOMEM;
        *ret = TAKE_PTR(l);
        return 0;
}
