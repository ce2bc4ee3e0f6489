/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The taps of bridged interfaces, made by qsnapd for a QEMU that cannot
 * run QEMU's bridge helper (sandboxed with spawn=deny, unprivileged):
 * the allow list read as the helper reads it, /dev/net/tun's TUNSETIFF,
 * and one rtnetlink RTM_NEWLINK that joins the bridge, sets the MTU and
 * the MAC and brings the tap up (sd-netlink is not public API; the
 * message is small enough to write by hand). No D-Bus in here.
 */
#include <fcntl.h>
#include <net/if.h> /* before the kernel's headers: glibc's struct ifreq */
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/domain-net.h"
#include "core/manager.h"
#include "util/error.h"
#include "util/util.h"

#define ACL_MAX_SIZE (64U * 1024U)
#define ACL_MAX_DEPTH 8

typedef struct AclVerdict {
        bool allowed, denied;
} AclVerdict;

static int acl_read(const char *path, const char *bridge, unsigned depth, AclVerdict *v, char **ret_message) {
        _cleanup_free_ char *text = NULL;
        unsigned line_no = 0;
        char *line;
        int r;

        if (depth > ACL_MAX_DEPTH) {
                *ret_message = strprintf("%s: includes nested too deep", path);
                return -ELOOP;
        }
        r = read_full_file(path, ACL_MAX_SIZE, &text, NULL);
        if (r < 0) {
                *ret_message = strprintf("cannot read %s: %s", path, strerror(-r));
                return r;
        }
        for (char *next = text; next;) {
                char *cmd, *arg, *end;

                line = next;
                next = strchr(line, '\n');
                if (next)
                        *next++ = 0;
                line_no++;
                cmd = line + strspn(line, " \t\r");
                if (*cmd == 0 || *cmd == '#')
                        continue;
                arg = cmd + strcspn(cmd, " \t\r");
                if (*arg)
                        *arg++ = 0;
                arg += strspn(arg, " \t\r");
                end = arg + strlen(arg);
                while (end > arg && strchr(" \t\r", end[-1]))
                        *--end = 0;
                if (*arg == 0) {
                        *ret_message = strprintf("%s line %u: '%s' without an argument", path, line_no, cmd);
                        return -EINVAL;
                }
                if (streq(cmd, "allow"))
                        v->allowed = v->allowed || streq(arg, "all") || streq(arg, bridge);
                else if (streq(cmd, "deny"))
                        v->denied = v->denied || streq(arg, "all") || streq(arg, bridge);
                else if (streq(cmd, "include")) {
                        r = acl_read(arg, bridge, depth + 1, v, ret_message);
                        if (r < 0)
                                return r;
                } else {
                        *ret_message = strprintf("%s line %u: unknown command '%s'", path, line_no, cmd);
                        return -EINVAL;
                }
        }
        return 0;
}

int domain_net_bridge_allowed(const char *path, const char *bridge, char **ret_message) {
        AclVerdict v = {};
        int r;

        r = acl_read(path, bridge, 0, &v, ret_message);
        if (r < 0)
                return r;
        /* The helper's rule: a deny wins over an allow. */
        return v.allowed && !v.denied;
}

static int read_sys_net(const char *ifname, const char *what, char **ret) {
        _cleanup_free_ char *path = strprintf("/sys/class/net/%s/%s", ifname, what);

        return path ? read_full_file(path, 4096, ret, NULL) : -ENOMEM;
}

static bool is_bridge(const char *ifname) {
        _cleanup_free_ char *path = strprintf("/sys/class/net/%s/bridge", ifname);
        struct stat st;

        return path && stat(path, &st) >= 0 && S_ISDIR(st.st_mode);
}

int domain_net_check(Domain *d, const DomainDef *def, char **ret_message) {
        const char *conf = d->manager->config.bridge_conf;
        _cleanup_free_ char *ignored = NULL;

        if (!ret_message)
                ret_message = &ignored;

        if (!d->manager->config.net_taps)
                return 0;
        for (size_t i = 0; i < def->devices.n_nets; i++) {
                const DomainNet *n = def->devices.nets + i;
                _cleanup_free_ char *why = NULL;
                int r;

                if (!n->bridge)
                        continue;
                r = domain_net_bridge_allowed(conf, n->bridge, &why);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        *ret_message = strprintf("Interface %zu: bridge '%s' cannot be checked against the host's "
                                                 "bridge list: %s.", i, n->bridge, strna(why));
                        return -QSNAP_E_PATH_NOT_ALLOWED;
                }
                if (r == 0) {
                        *ret_message = strprintf("Interface %zu: bridge '%s' is not allowed by the host's bridge list "
                                                 "%s (its administrator allows it with 'allow %s' there).",
                                                 i, n->bridge, conf, n->bridge);
                        return -QSNAP_E_PATH_NOT_ALLOWED;
                }
                if (!is_bridge(n->bridge)) {
                        _cleanup_free_ char *mtu = NULL;
                        bool exists = read_sys_net(n->bridge, "mtu", &mtu) >= 0;

                        *ret_message = strprintf("Interface %zu: '%s' %s.", i, n->bridge,
                                                 exists ? "is not a bridge" : "does not exist (no such bridge)");
                        return -QSNAP_E_INVALID_ARGUMENT;
                }
        }
        return 0;
}

static void nl_attr(struct nlmsghdr *h, size_t room, unsigned short type, const void *data, size_t len) {
        struct rtattr *a = (struct rtattr *) ((char *) h + NLMSG_ALIGN(h->nlmsg_len));

        assert(NLMSG_ALIGN(h->nlmsg_len) + RTA_SPACE(len) <= room);
        a->rta_type = type;
        a->rta_len = (unsigned short) RTA_LENGTH(len);
        memcpy(RTA_DATA(a), data, len);
        h->nlmsg_len = (uint32_t) (NLMSG_ALIGN(h->nlmsg_len) + RTA_SPACE(len));
}

/* One RTM_NEWLINK on the existing tap: master, MTU, MAC, up. */
static int tap_setup(int ifindex, int master, uint32_t mtu, const uint8_t mac[6]) {
        _cleanup_close_ int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
        union {
                struct nlmsghdr h;
                char buf[256];
        } req = {};
        union {
                struct nlmsghdr h;
                char buf[4096];
        } ans;
        struct ifinfomsg *ifi;
        struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
        uint32_t m = (uint32_t) master;
        ssize_t n;

        if (fd < 0)
                return -errno;
        req.h.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
        req.h.nlmsg_type = RTM_NEWLINK;
        req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        req.h.nlmsg_seq = 1;
        ifi = NLMSG_DATA(&req.h);
        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = ifindex;
        ifi->ifi_flags = IFF_UP;
        ifi->ifi_change = IFF_UP;
        nl_attr(&req.h, sizeof(req), IFLA_ADDRESS, mac, 6);
        if (mtu > 0)
                nl_attr(&req.h, sizeof(req), IFLA_MTU, &mtu, sizeof(mtu));
        nl_attr(&req.h, sizeof(req), IFLA_MASTER, &m, sizeof(m));
        if (sendto(fd, &req, req.h.nlmsg_len, 0, (struct sockaddr *) &kernel, sizeof(kernel)) < 0)
                return -errno;
        /* The kernel answers at once (an ack or an error). */
        for (;;) {
                n = recv(fd, &ans, sizeof(ans), 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                for (struct nlmsghdr *h = &ans.h; NLMSG_OK(h, (size_t) n); h = NLMSG_NEXT(h, n))
                        if (h->nlmsg_type == NLMSG_ERROR && h->nlmsg_seq == 1) {
                                const struct nlmsgerr *e = NLMSG_DATA(h);
                                return e->error;
                        }
        }
}

static int parse_mac(const char *s, uint8_t mac[6]) {
        unsigned b[6];

        if (!s || sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x", b, b + 1, b + 2, b + 3, b + 4, b + 5) != 6)
                return -EINVAL;
        for (size_t i = 0; i < 6; i++)
                mac[i] = (uint8_t) b[i];
        return 0;
}

int domain_net_open_tap(Domain *d, const DomainNet *n, size_t i, int *ret_fd, char **ret_name, char **ret_message) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *mtu_text = NULL, *name = NULL;
        struct ifreq ifr = {};
        uint8_t mac[6];
        uint32_t mtu = 0;
        int r, ifindex, master;

        fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                *ret_message = strprintf("Interface %zu: cannot open /dev/net/tun: %s", i, strerror(-r));
                return -QSNAP_E_QEMU_FAILED;
        }
        /* TUN_EXCL: never an existing device, which may be someone else's.
         * VNET_HDR for virtio-net (QEMU offloads through it), as libvirt. */
        ifr.ifr_flags = (short) (IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL); /* IFF_TUN_EXCL is 0x8000 */
        if (!n->model || streq(n->model, "virtio"))
                ifr.ifr_flags |= IFF_VNET_HDR;
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", n->target ?: "qsnap%d");
        if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
                r = -errno;
                *ret_message = strprintf("Interface %zu: cannot create tap '%s': %s", i, ifr.ifr_name,
                                         r == -EBUSY ? "a network interface of that name exists" : strerror(-r));
                return -QSNAP_E_QEMU_FAILED;
        }
        name = strndup(ifr.ifr_name, sizeof(ifr.ifr_name));
        if (!name)
                return -ENOMEM;
        ifindex = (int) if_nametoindex(name);
        master = (int) if_nametoindex(n->bridge);
        if (read_sys_net(n->bridge, "mtu", &mtu_text) >= 0)
                mtu = (uint32_t) strtoul(mtu_text, NULL, 10);
        if (parse_mac(n->mac, mac) < 0)
                return -EINVAL; /* the parser checked it */
        mac[0] = 0xfe; /* libvirt's: the host side never takes the guest's address */
        r = ifindex > 0 && master > 0 ? tap_setup(ifindex, master, mtu, mac) : -ENODEV;
        if (r < 0) {
                /* Closing fd removes the tap again. */
                *ret_message = strprintf("Interface %zu: cannot add tap '%s' to bridge '%s': %s", i, name, n->bridge,
                                         strerror(-r));
                return -QSNAP_E_QEMU_FAILED;
        }
        log_debug("Domain '%s': interface %zu is tap %s on bridge %s.", d->def->name, i, name, n->bridge);
        *ret_fd = TAKE_FD(fd);
        *ret_name = TAKE_PTR(name);
        return 0;
}
