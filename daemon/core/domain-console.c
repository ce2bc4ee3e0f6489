/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Domain.OpenConsole's model side: which serial or console a name means,
 * and its descriptor — the pty QEMU made (opened only after QEMU named it
 * in query-chardev, so it is that QEMU's pty and no stale number; owned by
 * QEMU's user when QEMU runs as one; put in raw mode as libvirt does, so
 * the line discipline neither echoes the guest's output back to it nor
 * waits for lines), or a connection to the socket QEMU listens on. No
 * D-Bus in here.
 */
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "core/domain-console.h"
#include "core/domain-devices.h"
#include "core/manager.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/util.h"

#define PTY_SLAVE_MAJOR_FIRST 136 /* UNIX98_PTY_SLAVE_MAJOR … +7 */
#define PTY_SLAVE_MAJOR_LAST 143

/* "prefix<digits>" → the number. */
static int parse_indexed(const char *s, const char *prefix, unsigned *ret) {
        size_t n = strlen(prefix);
        char *end;
        unsigned long v;

        if (strncmp(s, prefix, n) != 0 || !(s[n] >= '0' && s[n] <= '9'))
                return -EINVAL;
        errno = 0;
        v = strtoul(s + n, &end, 10);
        if (errno || *end || v > 1000)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

/* The chars[] index dev names in hw, -ENOENT when none. */
static int console_find(const DomainDevices *hw, const char *dev, size_t *ret) {
        unsigned n, seen = 0;

        if (isempty(dev)) {
                for (int pass = 0; pass < 2; pass++)
                        for (size_t i = 0; i < hw->n_chars; i++)
                                if (hw->chars[i].role == (pass == 0 ? DOMAIN_CHAR_CONSOLE : DOMAIN_CHAR_SERIAL)) {
                                        *ret = i;
                                        return 0;
                                }
                return -ENOENT;
        }
        if (parse_indexed(dev, "serial", &n) >= 0) {
                for (size_t i = 0; i < hw->n_chars; i++)
                        if (hw->chars[i].role == DOMAIN_CHAR_SERIAL && hw->chars[i].port == n) {
                                *ret = i;
                                return 0;
                        }
        } else if (parse_indexed(dev, "console", &n) >= 0)
                for (size_t i = 0; i < hw->n_chars; i++)
                        if (hw->chars[i].role == DOMAIN_CHAR_CONSOLE && seen++ == n) {
                                *ret = i;
                                return 0;
                        }
        return -ENOENT;
}

/* The chardev index k behind dev, or an error (see the header). */
static int console_resolve(Domain *d, const char *dev, size_t *ret_k, char **ret_message) {
        const DomainDevices *hw;
        const DomainChar *c;
        size_t i, k;

        if (!domain_is_active(d) || !d->qmp) {
                *ret_message = strprintf("Domain '%s' is not running.", d->def->name);
                return -QSNAP_E_NOT_RUNNING;
        }
        if (!domain_is_managed(d) || !d->live) {
                *ret_message = strprintf("Domain '%s' runs a QEMU that qsnapd did not launch: its consoles are not "
                                         "known.", d->def->name);
                return -QSNAP_E_UNSUPPORTED;
        }
        hw = &d->live->devices;
        if (console_find(hw, dev, &i) < 0) {
                *ret_message = strprintf("Domain '%s' has no console '%s' (names: '' for the first console, "
                                         "'serialN' for the serial on port N, 'consoleN' for the N-th console).",
                                         d->def->name, dev);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        k = domain_devices_char_backend(hw, i);
        c = hw->chars + k;
        if (c->type == DOMAIN_CHAR_FILE || (c->type == DOMAIN_CHAR_UNIX && c->connect)) {
                *ret_message = strprintf("Console '%s' of domain '%s' is %s: only pty consoles and unix ones QEMU "
                                         "listens on can be opened.", isempty(dev) ? "(the first)" : dev,
                                         d->def->name, c->type == DOMAIN_CHAR_FILE ? "a file" : "a socket QEMU connects to");
                return -QSNAP_E_UNSUPPORTED;
        }
        *ret_k = k;
        return 0;
}

int domain_console_check(Domain *d, const char *dev, char **ret_message) {
        size_t k;

        return console_resolve(d, dev, &k, ret_message);
}

typedef struct ConsoleOpen {
        Domain *d;
        size_t k;
        DomainConsoleFunc done;
        void *userdata;
} ConsoleOpen;

/* QEMU's pty, checked to be a pty slave (and QEMU's user's), raw. */
static int open_pty(Domain *d, const char *path) {
        _cleanup_close_ int fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
        struct termios t;
        struct stat st;

        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISCHR(st.st_mode) || major(st.st_rdev) < PTY_SLAVE_MAJOR_FIRST || major(st.st_rdev) > PTY_SLAVE_MAJOR_LAST)
                return -ENOTTY;
        if (d->manager->config.qemu_user) {
                struct passwd *pw = getpwnam(d->manager->config.qemu_user);

                if (!pw || st.st_uid != (d->qemu_uid > 0 ? d->qemu_uid : pw->pw_uid))
                        return -EPERM;
        }
        if (tcgetattr(fd, &t) < 0)
                return -errno;
        cfmakeraw(&t);
        if (tcsetattr(fd, TCSANOW, &t) < 0 || fcntl(fd, F_SETFL, O_RDWR) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static int connect_socket(const char *path) {
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (fd < 0)
                return -errno;
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        /* A listening UNIX socket accepts at once or fails (EAGAIN: its
         * backlog is full): never a wait. */
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        if (fcntl(fd, F_SETFL, O_RDWR) < 0)
                return -errno;
        return TAKE_FD(fd);
}

static void on_console_chardev(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                               void *userdata) {
        _cleanup_free_ ConsoleOpen *o = userdata;
        _cleanup_free_ char *message = NULL, *path = NULL;
        _cleanup_close_ int fd = -EBADF;
        Domain *d = o->d;
        const DomainChar *c = d->live && o->k < d->live->devices.n_chars ? d->live->devices.chars + o->k : NULL;
        char label[32];

        snprintf(label, sizeof(label), "char%zu", o->k);
        if (error < 0 || !c) {
                message = strprintf("Domain '%s' stopped before its console was open%s%s.", d->def->name,
                                    desc ? ": " : "", strempty(desc));
                return o->done(d, -QSNAP_E_NOT_RUNNING, message, -1, o->userdata);
        }
        if (c->type == DOMAIN_CHAR_PTY) {
                const char *pty = qmp_parse_chardev_pty(result, label);

                path = pty ? strdup(pty) : NULL;
                fd = path ? open_pty(d, path) : -ENOENT;
        } else {
                path = domain_devices_char_socket(d, &d->live->devices, o->k);
                fd = path ? connect_socket(path) : -ENOMEM;
        }
        if (fd < 0) {
                /* QEMU answered, so the device is there: its end went away. */
                message = strprintf("Cannot open the console %s of domain '%s': %s", strna(path), d->def->name,
                                    strerror(-fd));
                return o->done(d, -QSNAP_E_NOT_RUNNING, message, -1, o->userdata);
        }
        log_info("Domain '%s': console %s opened for a caller.", d->def->name, path);
        o->done(d, 0, NULL, fd, o->userdata);
}

int domain_console_open(Domain *d, const char *dev, DomainConsoleFunc done, void *userdata, char **ret_message) {
        ConsoleOpen *o;
        size_t k;
        int r;

        r = console_resolve(d, dev, &k, ret_message);
        if (r < 0)
                return r;
        o = new0(ConsoleOpen, 1);
        if (!o)
                return -ENOMEM;
        *o = (ConsoleOpen) { .d = d, .k = k, .done = done, .userdata = userdata };
        /* QEMU names the pty it has now: never a stale path. */
        if (qmp_cmd_query_chardev(d->qmp, on_console_chardev, o) < 0) {
                free(o);
                *ret_message = strprintf("Domain '%s': cannot ask QEMU for its consoles.", d->def->name);
                return -QSNAP_E_NOT_RUNNING;
        }
        return 0;
}

/* ---- graphics (Domain.OpenGraphicsFD) ---- */

int domain_graphics_check(Domain *d, unsigned idx, char **ret_message) {
        const DomainDef *def = domain_current_def(d);

        if (!domain_is_active(d) || !d->qmp) {
                *ret_message = strprintf("Domain '%s' is not running.", d->def->name);
                return -QSNAP_E_NOT_RUNNING;
        }
        if (idx >= def->devices.n_graphics) {
                *ret_message = strprintf("Domain '%s' has %zu <graphics> device(s): there is no graphics %u.",
                                         d->def->name, def->devices.n_graphics, idx);
                return -QSNAP_E_INVALID_ARGUMENT;
        }
        return 0;
}

typedef struct GraphicsOpen {
        Domain *d;
        int fd; /* our end */
        char fdname[32];
        const char *protocol;
        DomainConsoleFunc done;
        void *userdata;
} GraphicsOpen;

static void graphics_open_free(GraphicsOpen *o) {
        safe_close(o->fd);
        free(o);
}

static void graphics_fail(GraphicsOpen *o, int error, const char *step, const char *desc) {
        _cleanup_free_ char *message = NULL;
        Domain *d = o->d;

        if (error == -ECONNRESET) {
                message = strprintf("Domain '%s' stopped before its graphics were open.", d->def->name);
                error = -QSNAP_E_NOT_RUNNING;
        } else {
                message = strprintf("QEMU refused %s: %s", step, strna(desc));
                error = -QSNAP_E_QEMU_FAILED;
        }
        o->done(d, error, message, -1, o->userdata);
        graphics_open_free(o);
}

static void on_add_client(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                          void *userdata) {
        GraphicsOpen *o = userdata;

        if (error < 0) {
                /* QEMU keeps a named descriptor it did not use. */
                if (error != -ECONNRESET)
                        (void) qmp_cmd_closefd(qmp, o->fdname, NULL, NULL);
                return graphics_fail(o, error, "add_client", desc);
        }
        log_info("Domain '%s': a %s client added for a caller.", o->d->def->name, o->protocol);
        o->done(o->d, 0, NULL, o->fd, o->userdata);
        graphics_open_free(o);
}

static void on_graphics_getfd(Qmp *qmp, int error, json_object *result, const char *cls, const char *desc,
                              void *userdata) {
        GraphicsOpen *o = userdata;

        if (error < 0)
                return graphics_fail(o, error, "getfd", desc);
        if (qmp_cmd_add_client(qmp, o->protocol, o->fdname, on_add_client, o) < 0)
                graphics_fail(o, -ENOMEM, "add_client", "cannot send it");
}

int domain_graphics_open(Domain *d, unsigned idx, DomainConsoleFunc done, void *userdata, char **ret_message) {
        static unsigned seq;
        _cleanup_close_ int theirs = -EBADF;
        GraphicsOpen *o;
        int pair[2], r;

        r = domain_graphics_check(d, idx, ret_message);
        if (r < 0)
                return r;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0)
                return -errno;
        theirs = pair[0];
        o = new0(GraphicsOpen, 1);
        if (!o) {
                safe_close(pair[1]);
                return -ENOMEM;
        }
        *o = (GraphicsOpen) {
                .d = d,
                .fd = pair[1],
                .protocol = domain_graphics_type_to_string(domain_current_def(d)->devices.graphics[idx].type),
                .done = done,
                .userdata = userdata,
        };
        /* A name of its own: a second open must not replace the first's. */
        snprintf(o->fdname, sizeof(o->fdname), "qsnap-graphics%u", ++seq);
        if (qmp_cmd_getfd(d->qmp, o->fdname, theirs, on_graphics_getfd, o) < 0) {
                graphics_open_free(o);
                *ret_message = strprintf("Domain '%s': cannot hand QEMU the connection.", d->def->name);
                return -QSNAP_E_NOT_RUNNING;
        }
        return 0;
}
