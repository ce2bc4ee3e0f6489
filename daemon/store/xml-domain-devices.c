/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The devices of a <domain> besides its disks, read into DomainDevices
 * (store/xml-domain-devices.h) while xml-domain.c parses the document.
 * Only what QEMU's command line needs is read; the element itself is kept
 * verbatim by xml-domain.c and written back as it came (plus an
 * interface's generated <mac>). A value qsnapd cannot launch (an
 * interface type='direct', a serial type='tcp', …) is refused at define
 * time with what is supported, never silently dropped at start.
 */

#include <stdio.h>
#include <sys/random.h>

#include "store/xml-domain-internal.h"
#include "store/xml-domain.h"
#include "util/string-table.h"
#include "util/util.h"

static const char *const domain_net_type_table[_DOMAIN_NET_MAX] = {
        [DOMAIN_NET_USER] = "user",
        [DOMAIN_NET_NETWORK] = "network",
        [DOMAIN_NET_BRIDGE] = "bridge",
};
DEFINE_STRING_TABLE_LOOKUP(domain_net_type, DomainNetType);

static const char *const domain_graphics_type_table[_DOMAIN_GRAPHICS_MAX] = {
        [DOMAIN_GRAPHICS_VNC] = "vnc",
        [DOMAIN_GRAPHICS_SPICE] = "spice",
};
DEFINE_STRING_TABLE_LOOKUP(domain_graphics_type, DomainGraphicsType);

static const char *const domain_char_type_table[_DOMAIN_CHAR_MAX] = {
        [DOMAIN_CHAR_PTY] = "pty",
        [DOMAIN_CHAR_UNIX] = "unix",
        [DOMAIN_CHAR_FILE] = "file",
};
DEFINE_STRING_TABLE_LOOKUP(domain_char_type, DomainCharType);

static const char *const domain_lifecycle_table[_DOMAIN_LIFECYCLE_MAX] = {
        [DOMAIN_LIFECYCLE_DEFAULT] = "",
        [DOMAIN_LIFECYCLE_DESTROY] = "destroy",
        [DOMAIN_LIFECYCLE_RESTART] = "restart",
        [DOMAIN_LIFECYCLE_PRESERVE] = "preserve",
};
DEFINE_STRING_TABLE_LOOKUP(domain_lifecycle, DomainLifecycle);

static void net_done(DomainNet *n) {
        free(n->mac);
        free(n->model);
        free(n->bridge);
        free(n->target);
}

static void graphics_done(DomainGraphics *g) {
        free(g->address);
        free(g->socket);
        if (g->passwd) {
                explicit_bzero(g->passwd, strlen(g->passwd));
                free(g->passwd);
        }
}

static void char_done(DomainChar *c) {
        free(c->path);
        free(c->name);
}

static void cdrom_done(DomainCdrom *c) {
        free(c->target);
        free(c->bus);
        free(c->source);
}

void domain_devices_done(DomainDevices *d) {
        for (size_t i = 0; i < d->n_nets; i++)
                net_done(d->nets + i);
        for (size_t i = 0; i < d->n_graphics; i++)
                graphics_done(d->graphics + i);
        for (size_t i = 0; i < d->n_chars; i++)
                char_done(d->chars + i);
        for (size_t i = 0; i < d->n_cdroms; i++)
                cdrom_done(d->cdroms + i);
        free(d->nets);
        free(d->graphics);
        free(d->chars);
        free(d->cdroms);
        free(d->video);
        free(d->kernel);
        free(d->initrd);
        free(d->cmdline);
        free(d->boot_order);
        strv_free(d->qemu_args);
        *d = (DomainDevices) {};
}

/* Each copy_* fills a zeroed item; on failure the caller frees it. */
static int copy_net(const DomainNet *s, DomainNet *t) {
        t->type = s->type;
        return xml_strdup_to(s->mac, &t->mac) < 0 || xml_strdup_to(s->model, &t->model) < 0 ||
                               xml_strdup_to(s->bridge, &t->bridge) < 0 || xml_strdup_to(s->target, &t->target) < 0
                       ? -ENOMEM
                       : 0;
}

static int copy_graphics(const DomainGraphics *s, DomainGraphics *t) {
        *t = (DomainGraphics) { .type = s->type, .port = s->port };
        return xml_strdup_to(s->address, &t->address) < 0 || xml_strdup_to(s->socket, &t->socket) < 0 ||
                               xml_strdup_to(s->passwd, &t->passwd) < 0
                       ? -ENOMEM
                       : 0;
}

static int copy_char(const DomainChar *s, DomainChar *t) {
        *t = *s;
        t->path = t->name = NULL;
        return xml_strdup_to(s->path, &t->path) < 0 || xml_strdup_to(s->name, &t->name) < 0 ? -ENOMEM : 0;
}

static int copy_cdrom(const DomainCdrom *s, DomainCdrom *t) {
        return xml_strdup_to(s->target, &t->target) < 0 || xml_strdup_to(s->bus, &t->bus) < 0 ||
                               xml_strdup_to(s->source, &t->source) < 0
                       ? -ENOMEM
                       : 0;
}

#define COPY_ARRAY(from, to, field, n_field, copy)                                    \
        do {                                                                          \
                if ((from)->n_field > 0) {                                            \
                        (to)->field = calloc((from)->n_field, sizeof(*(to)->field));  \
                        if (!(to)->field)                                             \
                                return -ENOMEM;                                       \
                }                                                                     \
                for (size_t i_ = 0; i_ < (from)->n_field; i_++) {                     \
                        (to)->n_field = i_ + 1;                                       \
                        if (copy((from)->field + i_, (to)->field + i_) < 0)           \
                                return -ENOMEM;                                       \
                }                                                                     \
        } while (0)

static int devices_copy(const DomainDevices *from, DomainDevices *to) {
        *to = (DomainDevices) {
                .cpu_mode = from->cpu_mode,
                .on_poweroff = from->on_poweroff,
                .on_reboot = from->on_reboot,
        };
        COPY_ARRAY(from, to, nets, n_nets, copy_net);
        COPY_ARRAY(from, to, graphics, n_graphics, copy_graphics);
        COPY_ARRAY(from, to, chars, n_chars, copy_char);
        COPY_ARRAY(from, to, cdroms, n_cdroms, copy_cdrom);
        if (xml_strdup_to(from->video, &to->video) < 0 || xml_strdup_to(from->kernel, &to->kernel) < 0 ||
            xml_strdup_to(from->initrd, &to->initrd) < 0 || xml_strdup_to(from->cmdline, &to->cmdline) < 0 ||
            xml_strdup_to(from->boot_order, &to->boot_order) < 0 || xml_strv_copy(from->qemu_args, &to->qemu_args) < 0)
                return -ENOMEM;
        return 0;
}

int domain_devices_copy(const DomainDevices *from, DomainDevices *to) {
        int r = devices_copy(from, to);

        if (r < 0)
                domain_devices_done(to);
        return r;
}

/* Appends one zeroed item to *array (n items of size), returns it. */
static void *array_grow(void *array_ptr, size_t *n, size_t size) {
        void **array = array_ptr;
        char *a = reallocarray(*array, *n + 1, size);

        if (!a)
                return NULL;
        *array = a;
        memset(a + *n * size, 0, size);
        return a + (*n)++ * size;
}

/* The first element child of n named name, NULL when none. */
static xmlNode *child_named(xmlNode *n, const char *name) {
        for (xmlNode *c = n->children; c; c = c->next)
                if (xml_node_is(c, name))
                        return c;
        return NULL;
}

/* An attribute of n's first child <child>, NULL when either is absent. */
static int child_attr(xmlNode *n, const char *child, const char *attr, char **ret) {
        xmlNode *c = child_named(n, child);

        if (!c) {
                *ret = NULL;
                return 0;
        }
        return xml_attr_get(c, attr, ret);
}

static const char *check_mac(const char *s) {
        if (strlen(s) != 17)
                return "is not a MAC address (xx:xx:xx:xx:xx:xx)";
        for (size_t i = 0; i < 17; i++)
                if (i % 3 == 2 ? s[i] != ':' : !strchr("0123456789abcdefABCDEF", s[i]))
                        return "is not a MAC address (xx:xx:xx:xx:xx:xx)";
        if (strtoul((char[3]) { s[0], s[1], 0 }, NULL, 16) & 1)
                return "is a multicast address";
        return NULL;
}

/* libvirt's QEMU prefix 52:54:00 and three random bytes, written into the
 * element as <mac address=…/> so the definition keeps it. */
static int net_generate_mac(XmlParser *p, xmlNode *n, DomainNet *net) {
        uint8_t b[3];
        char mac[18];
        xmlNode *m;

        if (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b))
                return -errno;
        snprintf(mac, sizeof(mac), "52:54:00:%02x:%02x:%02x", b[0], b[1], b[2]);
        m = xmlNewDocNode(p->doc, NULL, BAD_CAST "mac", NULL);
        if (!m || !xmlNewProp(m, BAD_CAST "address", BAD_CAST mac)) {
                xmlFreeNode(m);
                return -ENOMEM;
        }
        if (n->children ? !xmlAddPrevSibling(n->children, m) : !xmlAddChild(n, m)) {
                xmlFreeNode(m);
                return -ENOMEM;
        }
        net->mac = strdup(mac);
        return net->mac ? 0 : -ENOMEM;
}

/* A kernel network interface name (IFNAMSIZ - 1, no '/', ':', '%' or
 * blank, not . or ..). */
static bool net_name_valid(const char *s) {
        return !isempty(s) && strlen(s) <= 15 && !strpbrk(s, "/:%, \t\n") && !streq(s, ".") && !streq(s, "..");
}

/* The names qsnapd (qsnap<N>) and libvirt (vnet<N>, …) generate: a live
 * XML defined again gets a fresh tap, never a stale name. */
static bool net_target_is_auto(const char *s) {
        static const char *const prefixes[] = { "vnet", "qsnap", "macvtap", "vif" };

        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                if (strncmp(s, prefixes[i], strlen(prefixes[i])) == 0)
                        return true;
        return false;
}

static int parse_interface(XmlParser *p, xmlNode *n, DomainDevices *d) {
        _cleanup_free_ char *type = NULL, *network = NULL;
        const char *problem;
        DomainNet *net;
        int r;

        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        net = array_grow(&d->nets, &d->n_nets, sizeof(DomainNet));
        if (!net)
                return -ENOMEM;
        net->type = type ? domain_net_type_from_string(type) : _DOMAIN_NET_INVALID;
        if (net->type < 0)
                return xml_parser_error(p, -EINVAL, n,
                                        "<interface type='%s'> is not supported: 'user', 'network' or 'bridge'",
                                        XML_QUOTE(type ?: ""));
        if ((r = child_attr(n, "mac", "address", &net->mac)) < 0 ||
            (r = child_attr(n, "model", "type", &net->model)) < 0 ||
            (r = child_attr(n, "source", "bridge", &net->bridge)) < 0 ||
            (r = child_attr(n, "source", "network", &network)) < 0 ||
            (r = child_attr(n, "target", "dev", &net->target)) < 0)
                return r;
        if (net->mac && (problem = check_mac(net->mac)))
                return xml_parser_error(p, -EINVAL, n, "<mac address='%s'> %s", XML_QUOTE(net->mac), problem);
        if (!net->mac && (r = net_generate_mac(p, n, net)) < 0)
                return r;
        if (net->model && !STR_IN_SET(net->model, "virtio", "e1000", "e1000e", "rtl8139"))
                return xml_parser_error(p, -EINVAL, n,
                                        "<model type='%s'> is not supported: 'virtio', 'e1000', 'e1000e' or 'rtl8139'",
                                        XML_QUOTE(net->model));
        switch (net->type) {
        case DOMAIN_NET_USER:
                free(net->bridge);
                net->bridge = NULL;
                break;
        case DOMAIN_NET_NETWORK:
                if (!network)
                        return xml_parser_error(p, -EINVAL, n, "<interface type='network'> has no <source network=…/>");
                /* libvirt's live XML names the network's bridge; else the
                 * network is a bridge of that name (docs/decisions.md). */
                if (!net->bridge)
                        net->bridge = TAKE_PTR(network);
                break;
        case DOMAIN_NET_BRIDGE:
                if (!net->bridge)
                        return xml_parser_error(p, -EINVAL, n, "<interface type='bridge'> has no <source bridge=…/>");
                break;
        case _DOMAIN_NET_MAX:
        case _DOMAIN_NET_INVALID:
                return -EINVAL; /* refused above */
        }
        if (net->bridge && !net_name_valid(net->bridge))
                return xml_parser_error(p, -EINVAL, n, "bridge name '%s' is not a network interface name",
                                        XML_QUOTE(net->bridge));
        if (net->target && net_target_is_auto(net->target)) {
                /* libvirt's rule: names it generates are not requests. */
                free(net->target);
                net->target = NULL;
        }
        if (net->target && !net_name_valid(net->target))
                return xml_parser_error(p, -EINVAL, n, "<target dev='%s'> is not a network interface name",
                                        XML_QUOTE(net->target));
        return 1;
}

static int parse_graphics_listen(XmlParser *p, xmlNode *n, DomainGraphics *g) {
        for (xmlNode *c = n->children; c; c = c->next) {
                _cleanup_free_ char *type = NULL;
                int r;

                if (!xml_node_is(c, "listen"))
                        continue;
                r = xml_attr_get(c, "type", &type);
                if (r < 0)
                        return r;
                if (streq_ptr(type, "address") && !g->address)
                        r = xml_attr_get(c, "address", &g->address);
                else if (streq_ptr(type, "socket")) {
                        r = xml_parser_path_attr(p, c, "socket", &g->socket);
                        free(g->address);
                        g->address = NULL;
                } else if (!streq_ptr(type, "address") && !streq_ptr(type, "none"))
                        return xml_parser_error(p, -EINVAL, c, "<listen type='%s'> is not supported: 'address' or 'socket'",
                                                XML_QUOTE(type ?: ""));
                if (r < 0)
                        return r;
        }
        return 0;
}

static int parse_graphics(XmlParser *p, xmlNode *n, DomainDevices *d) {
        _cleanup_free_ char *type = NULL, *port = NULL, *autoport = NULL;
        DomainGraphics *g;
        int64_t v;
        int r;

        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        g = array_grow(&d->graphics, &d->n_graphics, sizeof(DomainGraphics));
        if (!g)
                return -ENOMEM;
        g->port = -1;
        g->type = type ? domain_graphics_type_from_string(type) : _DOMAIN_GRAPHICS_INVALID;
        if (g->type < 0)
                return xml_parser_error(p, -EINVAL, n, "<graphics type='%s'> is not supported: 'vnc' or 'spice'",
                                        XML_QUOTE(type ?: ""));
        if ((r = xml_attr_get(n, "listen", &g->address)) < 0 || (r = xml_attr_get(n, "port", &port)) < 0 ||
            (r = xml_attr_get(n, "autoport", &autoport)) < 0 || (r = xml_attr_get(n, "passwd", &g->passwd)) < 0)
                return r;
        r = parse_graphics_listen(p, n, g);
        if (r < 0)
                return r;
        if (port && !streq_ptr(autoport, "yes") && !streq(port, "-1")) {
                if (xml_parse_i64(port, &v) < 0 || v < 1 || v > 65535 ||
                    (g->type == DOMAIN_GRAPHICS_VNC && v < 5900))
                        return xml_parser_error(p, -EINVAL, n, "<graphics port='%s'> is not a valid port%s", XML_QUOTE(port),
                                                g->type == DOMAIN_GRAPHICS_VNC ? " (VNC: 5900 or above)" : "");
                g->port = (int) v;
        }
        return 1;
}

static int parse_char_source(XmlParser *p, xmlNode *n, DomainChar *c) {
        xmlNode *s = child_named(n, "source");
        _cleanup_free_ char *mode = NULL, *append = NULL;
        int r;

        if (c->type == DOMAIN_CHAR_PTY || !s) {
                if (c->type == DOMAIN_CHAR_FILE)
                        return xml_parser_error(p, -EINVAL, n, "<%s type='file'> has no <source path=…/>",
                                                (const char *) n->name);
                return 0; /* a pty's <source path> is the live pty: output only */
        }
        r = xml_parser_path_attr(p, s, "path", &c->path);
        if (r < 0)
                return r;
        if (c->type == DOMAIN_CHAR_FILE && !c->path)
                return xml_parser_error(p, -EINVAL, s, "<%s type='file'> has no <source path=…/>", (const char *) n->name);
        if ((r = xml_attr_get(s, "mode", &mode)) < 0 || (r = xml_attr_get(s, "append", &append)) < 0)
                return r;
        if (mode && !STR_IN_SET(mode, "bind", "connect"))
                return xml_parser_error(p, -EINVAL, s, "<source mode='%s'> is not 'bind' or 'connect'", XML_QUOTE(mode));
        c->connect = streq_ptr(mode, "connect");
        if (c->connect && !c->path)
                return xml_parser_error(p, -EINVAL, s, "<source mode='connect'> has no path=");
        c->append = streq_ptr(append, "on");
        return 0;
}

static int parse_char_target(XmlParser *p, xmlNode *n, DomainChar *c) {
        xmlNode *t = child_named(n, "target");
        _cleanup_free_ char *type = NULL, *port = NULL;
        uint64_t v;
        int r;

        if (t && ((r = xml_attr_get(t, "type", &type)) < 0 || (r = xml_attr_get(t, "port", &port)) < 0 ||
                  (r = xml_attr_get(t, "name", &c->name)) < 0))
                return r;
        if (port) {
                if (xml_parse_u64(port, &v) < 0 || v > 3)
                        return xml_parser_error(p, -EINVAL, t, "<target port='%s'> is not 0 to 3", XML_QUOTE(port));
                c->port = (unsigned) v;
        }
        switch (c->role) {
        case DOMAIN_CHAR_SERIAL:
                if (type && !STR_IN_SET(type, "isa-serial", "serial"))
                        return xml_parser_error(p, -EINVAL, t, "<serial><target type='%s'> is not supported: 'isa-serial'",
                                                XML_QUOTE(type));
                break;
        case DOMAIN_CHAR_CONSOLE:
                if (type && !STR_IN_SET(type, "serial", "virtio"))
                        return xml_parser_error(p, -EINVAL, t,
                                                "<console><target type='%s'> is not supported: 'serial' or 'virtio'",
                                                XML_QUOTE(type));
                c->virtio = streq_ptr(type, "virtio");
                break;
        case DOMAIN_CHAR_CHANNEL:
                if (!streq_ptr(type, "virtio") || isempty(c->name))
                        return xml_parser_error(p, -EINVAL, t ?: n,
                                                "<channel type='unix'> is supported with <target type='virtio' name=…/> only");
                if (strpbrk(c->name, ",=/ \t\n"))
                        return xml_parser_error(p, -EINVAL, t, "<target name='%s'> is not a channel name", XML_QUOTE(c->name));
                c->virtio = true;
                break;
        case _DOMAIN_CHAR_ROLE_MAX:
                return -EINVAL; /* refused above */
        }
        return 0;
}

static int parse_char(XmlParser *p, xmlNode *n, DomainCharRole role, DomainDevices *d) {
        _cleanup_free_ char *type = NULL;
        DomainChar *c;
        int r;

        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        if (role == DOMAIN_CHAR_CHANNEL && !streq_ptr(type, "unix"))
                return 0; /* spicevmc, pty, …: kept, not launched (docs/decisions.md) */
        c = array_grow(&d->chars, &d->n_chars, sizeof(DomainChar));
        if (!c)
                return -ENOMEM;
        c->role = role;
        c->type = type ? domain_char_type_from_string(type) : _DOMAIN_CHAR_INVALID;
        if (c->type < 0)
                return xml_parser_error(p, -EINVAL, n, "<%s type='%s'> is not supported: 'pty', 'unix' or 'file'",
                                        (const char *) n->name, XML_QUOTE(type ?: ""));
        r = parse_char_source(p, n, c);
        if (r < 0)
                return r;
        r = parse_char_target(p, n, c);
        return r < 0 ? r : 1;
}

/* <disk device='cdrom'>: read-only raw, never one of the domain's disks. */
static int parse_cdrom(XmlParser *p, xmlNode *n, DomainDevices *d) {
        _cleanup_free_ char *type = NULL, *format = NULL;
        xmlNode *source = child_named(n, "source"), *target = child_named(n, "target");
        DomainCdrom *c;
        int r;

        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        if (type && !streq(type, "file"))
                return xml_parser_error(p, -EINVAL, n, "<disk type='%s' device='cdrom'> is not supported: type='file'",
                                        XML_QUOTE(type));
        c = array_grow(&d->cdroms, &d->n_cdroms, sizeof(DomainCdrom));
        if (!c)
                return -ENOMEM;
        r = child_attr(n, "driver", "type", &format);
        if (r < 0)
                return r;
        if (format && !streq(format, "raw"))
                return xml_parser_error(p, -EINVAL, n, "a CD-ROM's <driver type='%s'> is not supported: 'raw'",
                                        XML_QUOTE(format));
        if (source && (r = xml_parser_path_attr(p, source, "file", &c->source)) < 0)
                return r;
        if (!target || (r = xml_attr_get(target, "dev", &c->target)) < 0 || !c->target)
                return r < 0 ? r : xml_parser_error(p, -EINVAL, n, "<disk device='cdrom'> has no <target dev=…/>");
        if ((r = xml_attr_get(target, "bus", &c->bus)) < 0)
                return r;
        if (c->bus && !STR_IN_SET(c->bus, "sata", "ide", "scsi"))
                return xml_parser_error(p, -EINVAL, target, "a CD-ROM's <target bus='%s'> is not supported: 'sata', 'ide' or 'scsi'",
                                        XML_QUOTE(c->bus));
        /* As a disk's: it is QEMU's device id and node name. */
        if (strlen(c->target) > 16 || !(c->target[0] >= 'a' && c->target[0] <= 'z') ||
            strspn(c->target, "abcdefghijklmnopqrstuvwxyz0123456789") != strlen(c->target))
                return xml_parser_error(p, -EINVAL, target, "<target dev='%s'> must match [a-z][a-z0-9]*, at most 16 characters",
                                        XML_QUOTE(c->target));
        return 1;
}

static int parse_video(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDevices *d) {
        int r = xml_parser_check_once(p, n, &seen->video);

        if (r < 0)
                return r;
        r = child_attr(n, "model", "type", &d->video);
        if (r < 0)
                return r;
        if (!d->video && !(d->video = strdup("vga")))
                return -ENOMEM;
        if (!STR_IN_SET(d->video, "vga", "cirrus", "qxl", "virtio", "bochs", "none"))
                return xml_parser_error(p, -EINVAL, n,
                                        "<video><model type='%s'> is not supported: vga, cirrus, qxl, virtio, bochs or none",
                                        XML_QUOTE(d->video));
        return 1;
}

int xml_domain_devices_check_targets(XmlParser *p, const xmlNode *devices, const DomainDevices *d,
                                     const DomainDisk *disks, size_t n_disks) {
        /* A CD-ROM's id on QEMU's command line is its target, as a disk's
         * is: they must differ (few CD-ROMs: a scan is fine). */
        for (size_t i = 0; i < d->n_cdroms; i++) {
                for (size_t j = 0; j < n_disks; j++)
                        if (streq(d->cdroms[i].target, disks[j].target))
                                return xml_parser_error(p, -EINVAL, devices, "CD-ROM target '%s' is also a disk's",
                                                        XML_QUOTE(d->cdroms[i].target));
                for (size_t j = 0; j < i; j++)
                        if (streq(d->cdroms[i].target, d->cdroms[j].target))
                                return xml_parser_error(p, -EINVAL, devices, "CD-ROM target '%s' is used more than once",
                                                        XML_QUOTE(d->cdroms[i].target));
        }
        return 0;
}

int xml_domain_devices_parse_device(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDevices *d) {
        if (xml_node_is(n, "interface"))
                return parse_interface(p, n, d);
        if (xml_node_is(n, "graphics"))
                return parse_graphics(p, n, d);
        if (xml_node_is(n, "serial"))
                return parse_char(p, n, DOMAIN_CHAR_SERIAL, d);
        if (xml_node_is(n, "console"))
                return parse_char(p, n, DOMAIN_CHAR_CONSOLE, d);
        if (xml_node_is(n, "channel"))
                return parse_char(p, n, DOMAIN_CHAR_CHANNEL, d);
        if (xml_node_is(n, "video"))
                return parse_video(p, n, seen, d);
        if (xml_node_is(n, "disk")) {
                _cleanup_free_ char *device = NULL;
                int r = xml_attr_get(n, "device", &device);

                if (r < 0)
                        return r;
                return streq_ptr(device, "cdrom") ? parse_cdrom(p, n, d) : 0;
        }
        return 0;
}

static int parse_lifecycle(XmlParser *p, xmlNode *n, const xmlNode **seen, DomainLifecycle *ret) {
        _cleanup_free_ char *text = NULL;
        bool reboot = xml_node_is(n, "on_reboot");
        DomainLifecycle v;
        int r;

        r = xml_parser_text_once(p, n, seen, &text);
        if (r < 0)
                return r;
        v = domain_lifecycle_from_string(xml_strip_blank(text));
        if (v <= 0 || (reboot && v == DOMAIN_LIFECYCLE_PRESERVE) || (!reboot && v == DOMAIN_LIFECYCLE_RESTART))
                return xml_parser_error(p, -EINVAL, n, "<%s>%s</%s> is not supported: %s", (const char *) n->name,
                                        XML_QUOTE(text), (const char *) n->name,
                                        reboot ? "'restart' or 'destroy'" : "'destroy' or 'preserve'");
        *ret = v;
        return 1;
}

static bool in_qemu_namespace(const xmlNode *n, const char *name) {
        return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
                xmlStrEqual(n->ns->href, BAD_CAST LIBVIRT_QEMU_NAMESPACE) && xmlStrEqual(n->name, BAD_CAST name);
}

/* <qemu:commandline>: each <qemu:arg value=…/> in order (<qemu:env> and
 * the rest are kept, not used). */
static int parse_qemu_commandline(XmlParser *p, xmlNode *n, DomainDevices *d) {
        /* XmlList: a 4 MiB document may hold a hundred thousand arguments. */
        XmlList args = { .strv = &d->qemu_args, .n = strv_length(d->qemu_args) };

        args.allocated = args.n > 0 ? args.n + 1 : 0; /* the array holds n and the NULL */
        for (xmlNode *c = n->children; c; c = c->next) {
                _cleanup_free_ char *v = NULL;
                int r;

                if (!in_qemu_namespace(c, "arg"))
                        continue;
                r = xml_attr_get(c, "value", &v);
                if (r < 0)
                        return r;
                if (!v)
                        return xml_parser_error(p, -EINVAL, c, "<qemu:arg> has no value=");
                r = xml_list_push(&args, v);
                if (r < 0)
                        return r;
                TAKE_PTR(v);
        }
        return 1;
}

int xml_domain_devices_parse_domain_child(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDevices *d) {
        if (in_qemu_namespace(n, "commandline"))
                return parse_qemu_commandline(p, n, d);
        if (xml_node_is(n, "cpu")) {
                _cleanup_free_ char *mode = NULL;
                int r = xml_parser_check_once(p, n, &seen->cpu);

                if (r < 0 || (r = xml_attr_get(n, "mode", &mode)) < 0)
                        return r;
                /* custom and maximum are kept as text and not used. */
                d->cpu_mode = streq_ptr(mode, "host-passthrough") ? DOMAIN_CPU_HOST_PASSTHROUGH
                        : streq_ptr(mode, "host-model")           ? DOMAIN_CPU_HOST_MODEL
                                                                  : DOMAIN_CPU_DEFAULT;
                return 1;
        }
        if (xml_node_is(n, "on_poweroff"))
                return parse_lifecycle(p, n, &seen->on_poweroff, &d->on_poweroff);
        if (xml_node_is(n, "on_reboot"))
                return parse_lifecycle(p, n, &seen->on_reboot, &d->on_reboot);
        return 0;
}

static int parse_boot(XmlParser *p, xmlNode *n, DomainDevices *d) {
        static const struct {
                const char *dev;
                char letter;
        } devs[] = { { "hd", 'c' }, { "cdrom", 'd' }, { "network", 'n' }, { "fd", 'a' } };
        _cleanup_free_ char *dev = NULL;
        size_t len = d->boot_order ? strlen(d->boot_order) : 0;
        char *s;
        int r;

        r = xml_attr_get(n, "dev", &dev);
        if (r < 0)
                return r;
        if (!dev)
                return 0; /* kept as it is */
        for (size_t i = 0; i < ELEMENTSOF(devs); i++)
                if (streq_ptr(dev, devs[i].dev)) {
                        if (d->boot_order && strchr(d->boot_order, devs[i].letter))
                                return xml_parser_error(p, -EINVAL, n, "<boot dev='%s'> appears more than once", dev);
                        s = realloc(d->boot_order, len + 2);
                        if (!s)
                                return -ENOMEM;
                        s[len] = devs[i].letter;
                        s[len + 1] = 0;
                        d->boot_order = s;
                        return 1;
                }
        return xml_parser_error(p, -EINVAL, n, "<boot dev='%s'> is not 'hd', 'cdrom', 'network' or 'fd'",
                                XML_QUOTE(dev ?: ""));
}

int xml_domain_devices_parse_os_child(XmlParser *p, xmlNode *n, DomainDevicesSeen *seen, DomainDevices *d) {
        const char *problem;
        int r;

        if (xml_node_is(n, "kernel") || xml_node_is(n, "initrd")) {
                bool kernel = xml_node_is(n, "kernel");
                char **v = kernel ? &d->kernel : &d->initrd;

                r = xml_parser_text_once(p, n, kernel ? &seen->kernel : &seen->initrd, v);
                if (r < 0)
                        return r;
                {
                        char *t = xml_strip_blank(*v);

                        memmove(*v, t, strlen(t) + 1);
                }
                problem = xml_check_absolute_path(*v);
                if (problem)
                        return xml_parser_error(p, -EINVAL, n, "<%s> '%s' %s", (const char *) n->name, XML_QUOTE(*v), problem);
                return 1;
        }
        if (xml_node_is(n, "cmdline")) {
                r = xml_parser_text_once(p, n, &seen->cmdline, &d->cmdline);
                return r < 0 ? r : 1;
        }
        if (xml_node_is(n, "boot"))
                return parse_boot(p, n, d);
        return 0;
}

/* ---- the live definition: what QEMU's start made of the devices ---- */

static bool kept_is_interface(const xmlNode *n) {
        return xml_node_is(n, "interface");
}

/* The kinds parse_char() reads into chars[], in document order. */
static bool kept_is_char(const xmlNode *n) {
        _cleanup_free_ char *type = NULL;

        if (xml_node_is(n, "serial") || xml_node_is(n, "console"))
                return true;
        return xml_node_is(n, "channel") && xml_attr_get(n, "type", &type) >= 0 && streq_ptr(type, "unix");
}

/* The first element child named name, else a new empty one: after the
 * last <after> child when there is one, else first. */
static xmlNode *child_get_or_add(xmlNode *n, const char *name, const char *after) {
        xmlNode *c = child_named(n, name), *prev = after ? child_named(n, after) : NULL, *first = NULL;

        if (c)
                return c;
        c = xmlNewDocNode(n->doc, NULL, BAD_CAST name, NULL);
        if (!c)
                return NULL;
        for (xmlNode *k = n->children; k && !first; k = k->next)
                if (k->type == XML_ELEMENT_NODE)
                        first = k;
        if (prev ? xmlAddNextSibling(prev, c) : first ? xmlAddPrevSibling(first, c) : xmlAddChild(n, c))
                return c;
        xmlFreeNode(c);
        return NULL;
}

/* Rewrites the kept <devices> child that is the i-th one match() holds
 * for: edit(root, value), then written back in place. */
static int edit_kept_device(DomainDef *def, bool (*match)(const xmlNode *), size_t i,
                            int (*edit)(xmlNode *root, const char *value), const char *value) {
        for (size_t k = 0; def->extra_devices && def->extra_devices[k]; k++) {
                _cleanup_(xml_parser_done) XmlParser p = {};
                _cleanup_free_ char *s = NULL;
                const char *e = def->extra_devices[k];
                xmlNode *root;
                int r;

                xml_parser_install_handlers(&p);
                r = xml_parser_read(&p, e, strlen(e));
                if (r < 0)
                        return r;
                root = xmlDocGetRootElement(p.doc);
                if (!root || !match(root) || i-- > 0)
                        continue;
                r = edit(root, value);
                if (r >= 0)
                        r = xml_dump_element(p.doc, root, 2 /* a <devices> child */, &s);
                if (r < 0)
                        return r;
                free(def->extra_devices[k]);
                def->extra_devices[k] = TAKE_PTR(s);
                return 0;
        }
        return -ENOENT;
}

static int edit_net_target(xmlNode *n, const char *dev) {
        xmlNode *t = child_get_or_add(n, "target", "source");

        return t && xmlSetProp(t, BAD_CAST "dev", BAD_CAST dev) ? 0 : -ENOMEM;
}

static int edit_pty(xmlNode *n, const char *pty) {
        xmlNode *s = child_get_or_add(n, "source", NULL);

        if (!s || !xmlSetProp(s, BAD_CAST "path", BAD_CAST pty))
                return -ENOMEM;
        if (xml_node_is(n, "console") && !xmlSetProp(n, BAD_CAST "tty", BAD_CAST pty))
                return -ENOMEM;
        return 0;
}

int domain_def_set_live_net_target(DomainDef *def, size_t i, const char *dev) {
        char *copy;
        int r;

        if (i >= def->devices.n_nets)
                return -ENOENT;
        r = edit_kept_device(def, kept_is_interface, i, edit_net_target, dev);
        if (r < 0)
                return r;
        copy = strdup(dev);
        if (!copy)
                return -ENOMEM;
        free(def->devices.nets[i].target);
        def->devices.nets[i].target = copy;
        return 0;
}

int domain_def_set_live_pty(DomainDef *def, size_t i, const char *pty) {
        if (i >= def->devices.n_chars || def->devices.chars[i].type != DOMAIN_CHAR_PTY)
                return -ENOENT;
        return edit_kept_device(def, kept_is_char, i, edit_pty, pty);
}
