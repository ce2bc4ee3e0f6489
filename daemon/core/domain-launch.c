/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Launching a domain's QEMU, the parts core/domain.c's Start puts
 * together: the command line (-blockdev nodes "<target>-fmt", virtio-blk
 * devices with id = target, QMP on an inherited listening socket), the
 * throw-away overlays of transient disks, the monitor socket qsnapd binds
 * itself (so it is connectable before QEMU is even exec'd), the double
 * fork with setsid (QEMU is nobody's child and outlives qsnapd), and the
 * log header that QEMU's output since the last start is found after. No
 * D-Bus in here.
 */
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>

#include "config.h"
#include "core/domain-devices.h"
#include "core/domain-launch.h"
#include "core/domain-net.h"
#include "core/gate.h"
#include "core/manager.h"
#include "core/nvram.h"
#include "core/qemu-files.h"
#include "qemu/image.h"
#include "qemu/qmp-commands.h"
#include "util/error.h"
#include "util/util.h"

#define QMP_FD_IN_CHILD 3

/* glibc's malloc in QEMU: blocks under 32 MiB come from its heap, and up
 * to 64 MiB of free heap is kept. QEMU allocates a bounce buffer for each
 * NBD request (up to 32 MiB) and each block-copy chunk and frees it at
 * the end; with glibc's defaults the 2 MiB buffers of a reader like
 * qemu-img convert (several in flight) went to fresh mmaps or to a heap
 * top trimmed after each burst, so every page of every request was
 * faulted in and zeroed again: 262,000 minor faults and about 0.3-0.6 s
 * of CPU per GiB pulled (docs/performance.md, "The pull"). A
 * GLIBC_TUNABLES in qsnapd's own environment is left to QEMU as it is. */
#define QEMU_GLIBC_TUNABLES "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864"

#define LOG_START_MARK "qsnapd starting: "

/* What QEMU printed since our last start header, at most 2 KiB of it. */
int domain_launch_start_output(const char *path, char **ret) {
        _cleanup_free_ char *tail = NULL;
        const char *p, *nl;
        size_t n;
        int r;

        r = read_file_tail(path, 16384, &tail);
        if (r < 0)
                return r;
        p = tail;
        for (const char *m; (m = strstr(p, LOG_START_MARK)); p = m + 1)
                ;
        if (p != tail && (nl = strchr(p, '\n')))
                p = nl + 1;
        n = strlen(p);
        if (n > 2048) {
                p += n - 2048;
                n = 2048;
        }
        while (n > 0 && p[n - 1] == '\n')
                n--;
        *ret = strndup(p, n);
        return *ret ? 0 : -ENOMEM;
}

/* A format node over the file QEMU finds in fd set `set`; backing: the
 * node below, or none ("backing": null; raw has no backing option); cache:
 * the disk's mode (<driver cache= io=>) on both nodes, NULL for QEMU's. */
static int json_blockdev(json_object **ret, const char *node, DiskFormat format, unsigned set, bool read_only,
                         const char *backing_node, const QmpCache *cache) {
        json_object *o = json_object_new_object(), *f = json_object_new_object();
        _cleanup_free_ char *filename = qmp_fdset_path(set);
        int r;

        if (!o || !f || !filename) {
                json_object_put(o);
                json_object_put(f);
                return -ENOMEM;
        }
        json_object_object_add(f, "driver", json_object_new_string("file"));
        json_object_object_add(f, "filename", json_object_new_string(filename));
        /* QEMU's locks would outlive its descriptors (core/qemu-files.h). */
        json_object_object_add(f, "locking", json_object_new_string("off"));
        json_object_object_add(o, "driver", json_object_new_string(disk_format_to_string(format)));
        json_object_object_add(o, "node-name", json_object_new_string(node));
        json_object_object_add(o, "file", f);
        json_object_object_add(o, "read-only", json_object_new_boolean(read_only));
        json_object_object_add(o, "discard", json_object_new_string("unmap"));
        if (format == DISK_FORMAT_QCOW2)
                json_object_object_add(o, "backing", backing_node ? json_object_new_string(backing_node) : NULL);
        if (cache && (r = qmp_cache_apply(cache, o, f)) < 0) {
                json_object_put(o);
                return r;
        }
        *ret = o;
        return 0;
}

static int strv_extend_json(char ***argv, json_object *o) {
        int r = strv_extend(argv, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        return r;
}

void launch_files_done(LaunchFiles *lf) {
        for (size_t i = 0; i < lf->n_fds; i++)
                safe_close(lf->fds[i]);
        free(lf->fds);
        for (size_t i = 0; i < lf->n_files; i++) {
                free(lf->files[i].node);
                free(lf->files[i].path);
        }
        free(lf->files);
        free(lf->net_fds);
        for (size_t i = 0; i < lf->n_nets; i++)
                free(lf->net_names[i]);
        free(lf->net_names);
        *lf = (LaunchFiles) {};
}

static int launch_files_keep(LaunchFiles *lf, int *fd) {
        int *l;

        if (*fd < 0)
                return 0;
        l = reallocarray(lf->fds, lf->n_fds + 1, sizeof(int));
        if (!l)
                return -ENOMEM;
        lf->fds = l;
        lf->fds[lf->n_fds++] = TAKE_FD(*fd);
        return 0;
}

static int launch_files_add(LaunchFiles *lf, const char *node, const char *path, unsigned set) {
        QemuFile *l = reallocarray(lf->files, lf->n_files + 1, sizeof(QemuFile));

        if (!l)
                return -ENOMEM;
        lf->files = l;
        l[lf->n_files] = (QemuFile) { .node = strdup(node), .path = strdup(path), .fdset = set };
        lf->n_files++;
        return l[lf->n_files - 1].node && l[lf->n_files - 1].path ? 0 : -ENOMEM;
}

static const char *open_error(int r) {
        return r == -QSNAP_E_PATH_NOT_ALLOWED ? "not a regular file" : strerror(-r);
}

/* Node k of a disk's chain (0 = the active layer): "<target>-fmt" on top,
 * "<target>-base" under a transient overlay, "<target>-L<k>" below. */
static char *layer_node(const DomainDisk *disk, size_t k) {
        if (k == 0)
                return strprintf("%s-fmt", disk->target);
        if (k == 1 && disk->transient)
                return strprintf("%s-base", disk->target);
        return strprintf("%s-L%zu", disk->target, k);
}

/* Opens every image of the disk's chain (as its headers name them), puts
 * each in an fd set of its own (-add-fd) and gives QEMU the whole chain as explicit
 * -blockdev nodes, bottom first: QEMU follows no header itself. */
static int launch_add_disk(Domain *d, const DomainDisk *disk, bool offline, LaunchFiles *lf, char ***argv,
                           char **ret_message) {
        _cleanup_(image_chain_done) ImageChain chain = {};
        /* offline: the images themselves, every layer read-only (no guest, no transient overlay). */
        bool transient = disk->transient && !offline;
        _cleanup_free_ char *active = transient ? domain_transient_path(d, disk) : strdup(disk->source);
        DiskFormat format = transient ? DISK_FORMAT_QCOW2 : disk->format;
        /* Every layer in the disk's cache mode, as libvirt opens them. */
        QmpCache cache = qmp_cache_of(disk->cache, disk->io);
        int r;

        if (!active)
                return -ENOMEM;
        {
                /* A missing or unreadable disk: QEMU's words for it, as before. */
                _cleanup_close_ int fd = image_open_regular(active, O_NOFOLLOW);
                if (fd < 0) {
                        *ret_message = strprintf("Could not open '%s': %s", active, open_error(fd));
                        return fd == -ENOMEM ? fd : -QSNAP_E_QEMU_FAILED;
                }
        }
        /* The chain as its headers name it, each backing file through the
         * path gate: one that leaves the domain's folders is not followed. */
        r = gate_read_chain(d, active, format, &chain, ret_message);
        if (r < 0)
                return r == -ENOMEM || r == -QSNAP_E_PATH_NOT_ALLOWED ? r : -QSNAP_E_QEMU_FAILED;
        for (size_t k = chain.n_layers; k > 0; k--) {
                const ImageLayer *l = chain.layers + k - 1;
                _cleanup_free_ char *node = layer_node(disk, k - 1), *below = k < chain.n_layers ? layer_node(disk, k) : NULL;
                _cleanup_close_ int rw = -EBADF, ro = -EBADF;
                unsigned set = ++lf->next_set;
                json_object *o;
                bool read_only;

                if (!node || (k < chain.n_layers && !below))
                        return -ENOMEM;
                /* A transient disk's own images are never QEMU's to write;
                 * its throw-away overlay is qsnapd's own runtime file. */
                r = qemu_file_open_pair(transient && k == 1 ? NULL : d, l->path,
                                        offline || disk->readonly || (transient && k > 1), &rw, &ro, ret_message);
                if (r < 0)
                        return r == -ENOMEM || r == -QSNAP_E_PATH_NOT_ALLOWED ? r : -QSNAP_E_QEMU_FAILED;
                read_only = offline || k > 1 || rw < 0;
                if (strv_extend(argv, "-add-fd") < 0 || (rw >= 0 && strv_extendf(argv, "fd=%d,set=%u", rw, set) < 0) ||
                    (rw >= 0 && strv_extend(argv, "-add-fd") < 0) || strv_extendf(argv, "fd=%d,set=%u", ro, set) < 0 ||
                    launch_files_keep(lf, &rw) < 0 || launch_files_keep(lf, &ro) < 0 ||
                    launch_files_add(lf, node, l->path, set) < 0)
                        return -ENOMEM;
                r = json_blockdev(&o, node, l->format, set, read_only, below, &cache);
                if (r < 0)
                        return r;
                if (strv_extend(argv, "-blockdev") < 0 || strv_extend_json(argv, o) < 0)
                        return -ENOMEM;
        }
        return 0;
}

/* The guest agent's channel: a virtio-serial port named
 * org.qemu.guest_agent.0 whose host side is a socket QEMU listens on in
 * the runtime dir (<uuid>.agent), where core/domain-agent.c connects. */
static int domain_launch_agent_args(Domain *d, const DomainDef *def, char ***argv) {
        _cleanup_free_ char *path = NULL, *escaped = NULL;
        int r;

        if (!def->agent_channel)
                return 0;
        path = domain_qemu_socket_path(d, ".agent");
        escaped = path ? qemu_opt_escape(path) : NULL;
        if (!escaped)
                return -ENOMEM;
        if ((r = strv_extend(argv, "-device")) < 0 ||
            (r = strv_extend(argv, "virtio-serial-pci,id=virtio-serial0")) < 0 ||
            (r = strv_extend(argv, "-chardev")) < 0 ||
            (r = strv_extendf(argv, "socket,id=charagent,path=%s,server=on,wait=off", escaped)) < 0 ||
            (r = strv_extend(argv, "-device")) < 0 ||
            (r = strv_extend(argv, "virtserialport,bus=virtio-serial0.0,nr=1,chardev=charagent,id=agent0,"
                                   "name=org.qemu.guest_agent.0")) < 0)
                return r;
        return 0;
}

/* One image file for QEMU by descriptor (-add-fd, a set of its own) as
 * format node `node` over /dev/fdset/N; d NULL: not through the gate (a
 * file the host-admin-approved definition or qsnapd itself names). */
static int launch_add_file(Domain *d, LaunchFiles *lf, char ***argv, const char *node, const char *path,
                           DiskFormat format, bool readonly, char **ret_message) {
        _cleanup_close_ int rw = -EBADF, ro = -EBADF;
        unsigned set = ++lf->next_set;
        json_object *o;
        bool read_only;
        int r;

        r = qemu_file_open_pair(d, path, readonly, &rw, &ro, ret_message);
        if (r < 0)
                return r == -ENOMEM || r == -QSNAP_E_PATH_NOT_ALLOWED ? r : -QSNAP_E_QEMU_FAILED;
        read_only = rw < 0;
        if (strv_extend(argv, "-add-fd") < 0 || (rw >= 0 && strv_extendf(argv, "fd=%d,set=%u", rw, set) < 0) ||
            (rw >= 0 && strv_extend(argv, "-add-fd") < 0) || strv_extendf(argv, "fd=%d,set=%u", ro, set) < 0 ||
            launch_files_keep(lf, &rw) < 0 || launch_files_keep(lf, &ro) < 0 || launch_files_add(lf, node, path, set) < 0)
                return -ENOMEM;
        r = json_blockdev(&o, node, format, set, read_only, NULL, NULL);
        if (r < 0)
                return r;
        return strv_extend(argv, "-blockdev") < 0 || strv_extend_json(argv, o) < 0 ? -ENOMEM : 0;
}

/* The files the devices besides disks make QEMU read or write, opened
 * here and passed by descriptor (issue #10 §3; core/domain-devices.h's
 * DeviceFiles): each CD-ROM image read-only in an fd set of its own under
 * a raw -blockdev named as its target, the kernel and initrd as inherited
 * descriptors, each file serial or console write-only in an fd set. The
 * names are the ones the host-admin-approved definition gives; none is
 * followed through a symbolic link (qemu_file_open_device()). */
static int launch_add_devices(const DomainDef *def, LaunchFiles *lf, char ***argv, DeviceFiles *files,
                              char **ret_message) {
        const DomainDevices *hw = &def->devices;
        int r;

        *files = (DeviceFiles) { .kernel = -1, .initrd = -1 };
        for (size_t i = 0; i < hw->n_cdroms; i++) {
                _cleanup_close_ int fd = -EBADF;
                unsigned set = ++lf->next_set;
                json_object *o;

                if (!hw->cdroms[i].source)
                        continue;
                r = qemu_file_open_device(hw->cdroms[i].source, false, &fd, ret_message);
                if (r < 0)
                        return r;
                if (strv_extend(argv, "-add-fd") < 0 || strv_extendf(argv, "fd=%d,set=%u", fd, set) < 0 ||
                    launch_files_keep(lf, &fd) < 0 ||
                    launch_files_add(lf, hw->cdroms[i].target, hw->cdroms[i].source, set) < 0)
                        return -ENOMEM;
                r = json_blockdev(&o, hw->cdroms[i].target, DISK_FORMAT_RAW, set, true, NULL, NULL);
                if (r < 0)
                        return r;
                if (strv_extend(argv, "-blockdev") < 0 || strv_extend_json(argv, o) < 0)
                        return -ENOMEM;
        }
        for (int k = 0; k < 2; k++) {
                const char *path = k == 0 ? hw->kernel : hw->initrd;
                _cleanup_close_ int fd = -EBADF;

                if (!path || !hw->kernel)
                        continue;
                r = qemu_file_open_device(path, false, &fd, ret_message);
                if (r < 0)
                        return r;
                *(k == 0 ? &files->kernel : &files->initrd) = fd;
                if (launch_files_keep(lf, &fd) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < hw->n_chars; i++) {
                _cleanup_close_ int fd = -EBADF;
                unsigned set;

                if (!domain_devices_char_is_file(hw, i))
                        continue;
                if (!files->char_sets && !(files->char_sets = calloc(hw->n_chars, sizeof(unsigned))))
                        return -ENOMEM;
                r = qemu_file_open_device(hw->chars[i].path, true, &fd, ret_message);
                if (r < 0)
                        return r;
                set = ++lf->next_set;
                if (strv_extend(argv, "-add-fd") < 0 || strv_extendf(argv, "fd=%d,set=%u", fd, set) < 0 ||
                    launch_files_keep(lf, &fd) < 0)
                        return -ENOMEM;
                files->char_sets[i] = set;
        }
        return 0;
}

/* The taps of the bridged interfaces, when qsnapd makes them
 * (core/domain-net.h): QEMU inherits each descriptor, qsnapd's copy goes
 * with lf after the launch. */
static int launch_add_taps(Domain *d, const DomainDef *def, LaunchFiles *lf, char **ret_message) {
        size_t n = def->devices.n_nets;

        if (!d->manager->config.net_taps || n == 0)
                return 0;
        lf->net_fds = calloc(n, sizeof(int));
        lf->net_names = calloc(n, sizeof(char *));
        if (!lf->net_fds || !lf->net_names)
                return -ENOMEM;
        lf->n_nets = n;
        for (size_t i = 0; i < n; i++) {
                _cleanup_close_ int fd = -EBADF;
                int r;

                lf->net_fds[i] = -1;
                if (!def->devices.nets[i].bridge)
                        continue;
                r = domain_net_open_tap(d, def->devices.nets + i, i, &fd, lf->net_names + i, ret_message);
                if (r < 0)
                        return r;
                lf->net_fds[i] = fd;
                r = launch_files_keep(lf, &fd);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* UEFI: the firmware code and the domain's variable store as the two
 * pflash devices of the machine (-machine …,pflash0=,pflash1=), by
 * descriptor like every image. */
static int domain_launch_firmware_args(const DomainDef *def, LaunchFiles *lf, char ***argv, char **ret_message) {
        const DomainFirmware *f = def_firmware(def);
        int r;

        if (!f)
                return 0;
        r = launch_add_file(NULL, lf, argv, NVRAM_CODE_NODE, f->loader, DISK_FORMAT_RAW, true, ret_message);
        if (r < 0)
                return r;
        return launch_add_file(NULL, lf, argv, NVRAM_VARS_NODE, f->nvram, f->nvram_format, false, ret_message);
}

int domain_launch_argv(Domain *d, const DomainDef *def, bool incoming, LaunchFiles *lf, char ***ret, char **ret_message) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *name = NULL;
        DeviceFiles files = { .kernel = -1, .initrd = -1 };
        const char *emulator = def->emulator ?: d->manager->config.qemu_binary;
        int r;

        name = qemu_opt_escape(def->name);
        if (!name)
                return -ENOMEM;

        r = strv_extend(&argv, emulator);
        if (r < 0)
                return r;
#define ADD(...)                                                 \
        do {                                                     \
                r = strv_extendf(&argv, __VA_ARGS__);            \
                if (r < 0)                                       \
                        return r;                                \
        } while (0)
        ADD("-name");
        ADD("guest=%s,debug-threads=on", name);
        ADD("-uuid");
        ADD("%s", def->uuid);
        ADD("-S");
        ADD("-no-user-config");
        ADD("-nodefaults");
        ADD("-display");
        ADD("none");
        ADD("-machine");
        if (def_firmware(def))
                ADD("%s,pflash0=" NVRAM_CODE_NODE ",pflash1=" NVRAM_VARS_NODE, def->machine ?: "q35");
        else
                ADD("%s", def->machine ?: "q35");
        ADD("-m");
        ADD("%" PRIu64 "K", def->memory_kib);
        ADD("-smp");
        ADD("%u", def->vcpus);
        ADD("-chardev");
        ADD("socket,id=qmp,fd=%d,server=on,wait=off", QMP_FD_IN_CHILD);
        ADD("-mon");
        ADD("chardev=qmp,mode=control");
        if (d->manager->config.qemu_user) {
                /* No exec (a monitor's migrate to exec: dies with SIGSYS), no
                 * setuid, no obsolete calls, no scheduler or cgroup games. */
                ADD("-sandbox");
                ADD("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        }
        if (incoming) {
                /* migrate-incoming names the source once the monitor is up. */
                ADD("-incoming");
                ADD("defer");
        }

        /* libvirt's names: a disk's iothread='K' is -object iothread,id=iothreadK. */
        for (size_t i = 0; i < def->n_iothread_ids; i++) {
                ADD("-object");
                ADD("iothread,id=iothread%u", def->iothread_ids[i]);
        }
        for (size_t i = 0; i < def->n_disks; i++) {
                const DomainDisk *disk = def->disks + i;
                char iothread[32] = "";
                bool write_cache;

                r = launch_add_disk(d, disk, false, lf, &argv, ret_message);
                if (r < 0)
                        return r;
                if (disk->iothread > 0)
                        snprintf(iothread, sizeof iothread, ",iothread=iothread%u", disk->iothread);
                ADD("-device");
                /* The guest sees a volatile write cache or none, as libvirt
                 * tells it for every cache= but the default (QEMU's: on). */
                if (disk_cache_flags(disk->cache, &write_cache, NULL, NULL))
                        ADD("virtio-blk-pci,id=%s,drive=%s-fmt,write-cache=%s%s", disk->target, disk->target,
                            write_cache ? "on" : "off", iothread);
                else
                        ADD("virtio-blk-pci,id=%s,drive=%s-fmt%s", disk->target, disk->target, iothread);
        }
        r = domain_launch_agent_args(d, def, &argv);
        if (r >= 0)
                r = domain_launch_firmware_args(def, lf, &argv, ret_message);
        if (r >= 0)
                r = launch_add_taps(d, def, lf, ret_message);
        if (r >= 0)
                r = launch_add_devices(def, lf, &argv, &files, ret_message);
        /* -accel, -cpu, -kernel, interfaces, graphics, serials, CD-ROMs, …
         * (after the agent's virtio-serial controller: consoles use it). */
        if (r >= 0)
                r = domain_devices_argv(d, def, lf->net_fds, &files, &argv);
        free(files.char_sets);
        if (r < 0)
                return r;
#undef ADD
        *ret = TAKE_PTR(argv);
        return 0;
}

int domain_launch_offline_argv(Domain *d, LaunchFiles *lf, char ***ret, char **ret_message) {
        static const char *const fixed[] = { "-S", "-no-user-config", "-nodefaults", "-display", "none",
                                             "-machine", "none", "-mon", "chardev=qmp,mode=control" };
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_free_ char *name = qemu_opt_escape(d->def->name);
        int r;

        if (!name)
                return -ENOMEM;
        /* No machine, no devices, no guest: the block layer and QMP only. */
        r = strv_extend(&argv, d->def->emulator ?: d->manager->config.qemu_binary);
        if (r >= 0)
                r = strv_extend(&argv, "-name");
        if (r >= 0)
                r = strv_extendf(&argv, "guest=%s-offline,debug-threads=on", name);
        if (r >= 0)
                r = strv_extend(&argv, "-chardev");
        if (r >= 0)
                r = strv_extendf(&argv, "socket,id=qmp,fd=%d,server=on,wait=off", QMP_FD_IN_CHILD);
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(fixed); i++)
                r = strv_extend(&argv, fixed[i]);
        if (r >= 0 && d->manager->config.qemu_user)
                r = strv_extend(&argv, "-sandbox");
        if (r >= 0 && d->manager->config.qemu_user)
                r = strv_extend(&argv, "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
        for (size_t i = 0; r >= 0 && i < d->def->n_disks; i++)
                r = launch_add_disk(d, d->def->disks + i, true, lf, &argv, ret_message);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(argv);
        return 0;
}

void domain_launch_remove_runtime_files(Domain *d) {
        static const char *const suffixes[] = { ".qmp", ".pid", ".xml", ".process" };
        const DomainDef *def = domain_current_def(d);
        _cleanup_free_ char *agent = NULL;

        if (!domain_is_managed(d))
                return;
        for (size_t i = 0; i < ELEMENTSOF(suffixes); i++) {
                _cleanup_free_ char *p = domain_runtime_path(d, suffixes[i]);
                if (p)
                        (void) unlink(p);
        }
        agent = domain_qemu_socket_path(d, ".agent");
        if (agent)
                (void) unlink(agent);
        domain_devices_remove_runtime_files(d, def);
        for (size_t i = 0; i < def->n_disks; i++) {
                _cleanup_free_ char *p = NULL;

                if (!def->disks[i].transient)
                        continue;
                p = domain_transient_path(d, &def->disks[i]);
                if (p && unlink(p) >= 0)
                        log_debug("Discarded transient overlay %s.", p);
        }
}

int domain_launch_live_xml(DomainDef *live, const LaunchFiles *lf, char **ret) {
        int r;

        for (size_t i = 0; i < lf->n_nets; i++)
                if (lf->net_names[i] && (r = domain_def_set_live_net_target(live, i, lf->net_names[i])) < 0)
                        return r;
        return domain_def_format(live, DOMAIN_FORMAT_SECURE, ret);
}

int domain_launch_transient_overlays(Domain *d, const DomainDef *def, char **ret_message) {
        for (size_t i = 0; i < def->n_disks; i++) {
                _cleanup_free_ char *path = NULL, *output = NULL;
                int r;

                if (!def->disks[i].transient)
                        continue;
                path = domain_transient_path(d, def->disks + i);
                if (!path)
                        return -ENOMEM;
                (void) unlink(path); /* a leftover of a crashed run is ours to replace */
                r = image_create_overlay(path, def->disks[i].source, def->disks[i].format, &output);
                if (r < 0) {
                        /* As for any disk QEMU cannot open: the start failed. */
                        *ret_message = strprintf("Cannot create the transient overlay of disk %s: %s",
                                                 def->disks[i].target, output ?: strerror(-r));
                        return r == -ENOMEM ? r : -QSNAP_E_QEMU_FAILED;
                }
        }
        return 0;
}

int domain_launch_bind_socket(const char *path) {
        _cleanup_close_ int fd = -EBADF;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        (void) unlink(path);
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return -errno;
        if (chmod(path, 0600) < 0 || listen(fd, 4) < 0)
                return -errno;
        return TAKE_FD(fd);
}

/* --qemu-uid-range=: the lowest uid of the range no other domain's QEMU
 * (running, or the paused one of an offline backup) holds; 0 when none. A
 * restarted qsnapd knows the running ones' from their runtime records. */
static uid_t qemu_uid_free(Domain *d) {
        const ManagerConfig *c = &d->manager->config;

        for (uint32_t i = 0; i < c->qemu_uid_count; i++) {
                uid_t uid = (uid_t) (c->qemu_uid_base + i);
                bool taken = false;

                for (Domain *o = d->manager->domains; o && !taken; o = o->next)
                        taken = o != d && o->qemu_uid == uid && (o->pid > 0 || o->offline_qemu);
                if (!taken)
                        return uid;
        }
        return 0;
}

int domain_launch_creds(Domain *d, QemuCreds *ret, char **ret_message) {
        const char *user = d->manager->config.qemu_user;
        struct passwd *pw;
        int n = 16;

        *ret = (QemuCreds) {};
        if (!user)
                return 0;
        errno = 0;
        pw = getpwnam(user);
        if (!pw) {
                *ret_message = strprintf("QEMU's user '%s' does not exist (qsnapd.sysusers creates it; --qemu-user= "
                                         "names another).", user);
                return errno == ENOMEM ? -ENOMEM : -QSNAP_E_QEMU_FAILED;
        }
        if (pw->pw_uid == 0) {
                *ret_message = strprintf("QEMU's user '%s' is root: name an unprivileged one with --qemu-user=.", user);
                return -QSNAP_E_QEMU_FAILED;
        }
        /* Its groups as /etc/group says (kvm for /dev/kvm). */
        for (;;) {
                gid_t *g = reallocarray(ret->groups, (size_t) n, sizeof(gid_t));
                int k = n;

                if (!g)
                        return -ENOMEM;
                ret->groups = g;
                if (getgrouplist(pw->pw_name, pw->pw_gid, g, &k) >= 0) {
                        ret->n_groups = k;
                        break;
                }
                if (k <= n || k > 65536) {
                        qemu_creds_done(ret);
                        return -EINVAL;
                }
                n = k;
        }
        ret->uid = pw->pw_uid;
        ret->gid = pw->pw_gid;
        ret->drop = true;
        if (d->manager->config.qemu_uid_count > 0) {
                uid_t uid = qemu_uid_free(d);

                if (uid == 0) {
                        qemu_creds_done(ret);
                        *ret_message = strprintf("All %" PRIu32 " uids of --qemu-uid-range= are taken by running QEMUs.",
                                                 d->manager->config.qemu_uid_count);
                        return -QSNAP_E_QEMU_FAILED;
                }
                ret->uid = d->qemu_uid = uid;
        }
        return 0;
}

void qemu_creds_done(QemuCreds *c) {
        free(c->groups);
        *c = (QemuCreds) {};
}

int domain_launch_qemu_dir(Domain *d, const QemuCreds *creds) {
        _cleanup_free_ char *dir = NULL;
        struct stat st;

        if (!creds->drop)
                return 0;
        /* QEMU's user must pass through the runtime folder to reach its
         * own: search permission, no listing (systemd's RuntimeDirectory=
         * is 0755 anyway; nothing in it is readable by others). */
        if (stat(d->manager->config.runtime_dir, &st) < 0)
                return -errno;
        if ((st.st_mode & 0011) != 0011 && chmod(d->manager->config.runtime_dir, (st.st_mode & 07777) | 0011) < 0)
                return -errno;
        dir = strprintf("%s/qemu", d->manager->config.runtime_dir);
        if (!dir)
                return -ENOMEM;
        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return -errno;
        /* Ours to hand over: a folder, never a link someone put there. */
        if (lstat(dir, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        /* One uid per QEMU (--qemu-uid-range=): root's, QEMU's group may
         * create in it, sticky: none removes or replaces another's socket
         * (and none connects to another's: QEMU makes them 0755). */
        if (d->manager->config.qemu_uid_count > 0)
                return (st.st_uid != 0 || st.st_gid != creds->gid) && lchown(dir, 0, creds->gid) < 0 ? -errno
                       : (st.st_mode & 07777) != 01770 && chmod(dir, 01770) < 0                  ? -errno
                                                                                                   : 0;
        if ((st.st_uid != creds->uid || st.st_gid != creds->gid) && lchown(dir, creds->uid, creds->gid) < 0)
                return -errno;
        if ((st.st_mode & 07777) != 0700 && chmod(dir, 0700) < 0)
                return -errno;
        return 0;
}

/* Whom QEMU runs as, and the folders a start writes to (runtime, logs,
 * QEMU's own socket folder). */
int domain_launch_prepare_dirs(Domain *d, QemuCreds *creds, char **ret_message) {
        _cleanup_free_ char *logdir = strprintf("%s/log", d->manager->config.state_dir);
        int r;

        if (!logdir)
                return -ENOMEM;
        r = domain_launch_creds(d, creds, ret_message);
        if (r < 0)
                return r;
        r = mkdir_p(d->manager->config.runtime_dir, 0700);
        if (r >= 0)
                r = mkdir_p(logdir, 0700);
        if (r >= 0)
                r = domain_launch_qemu_dir(d, creds);
        if (r < 0)
                *ret_message = strprintf("Cannot create %s: %s", d->manager->config.runtime_dir, strerror(-r));
        return r;
}

/* Gone or a zombie: PID 1 may take a while to reap a daemonized QEMU.
 * A pidfd of it turns readable once it exited. */
bool domain_launch_process_gone(pid_t pid, int pidfd) {
        _cleanup_free_ char *path = strprintf("/proc/%d/stat", (int) pid), *stat = NULL;
        const char *p;

        if (pidfd >= 0) {
                struct pollfd pfd = { .fd = pidfd, .events = POLLIN };
                return poll(&pfd, 1, 0) != 0;
        }
        if (!path || read_full_file(path, 4096, &stat, NULL) < 0)
                return true;
        p = strrchr(stat, ')');
        return !p || p[1] == 0 || p[2] == 'Z' || p[2] == 'X';
}

/* ---- which process is our QEMU, also after a restart of qsnapd ---- */

#define PID_FS_MAGIC 0x50494446 /* pidfs (Linux 6.9): a pidfd's inode names one process for the boot */

/* Field 22 of /proc/<pid>/stat, the start time in clock ticks since boot:
 * with the pid, it names one process (a reused pid starts later). No
 * allocation: the launch child calls it between fork and exec. */
static uint64_t proc_start_time(const char *stat_path) {
        char buf[1024], *p;
        uint64_t v = 0;
        ssize_t n;
        int fd, field;

        fd = open(stat_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return 0;
        n = read(fd, buf, sizeof(buf) - 1);
        (void) close(fd);
        if (n <= 0)
                return 0;
        buf[n] = 0;
        p = strrchr(buf, ')'); /* the name may hold spaces and parentheses */
        if (!p)
                return 0;
        for (field = 2, p++; *p && field < 22; p++)
                if (*p == ' ')
                        field++;
        for (; *p >= '0' && *p <= '9'; p++)
                v = v * 10 + (uint64_t) (*p - '0');
        return field == 22 ? v : 0;
}

static uint64_t pidfs_inode(int pidfd) {
        struct statfs sf;
        struct stat st;

        if (pidfd < 0 || fstatfs(pidfd, &sf) < 0 || (uint32_t) sf.f_type != PID_FS_MAGIC || fstat(pidfd, &st) < 0)
                return 0;
        return (uint64_t) st.st_ino;
}

int domain_launch_record_process(Domain *d, pid_t pid, uint64_t start_time) {
        _cleanup_free_ char *path = domain_runtime_path(d, ".process"), *text = NULL;
        int pidfd = (int) syscall(SYS_pidfd_open, pid, 0), r;

        if (pidfd < 0)
                pidfd = -errno;

        text = strprintf("pid=%d\nstart_time=%" PRIu64 "\npidfs_inode=%" PRIu64 "\nqemu_uid=%u\n", (int) pid, start_time,
                         pidfs_inode(pidfd), (unsigned) d->qemu_uid);
        r = path && text ? write_file_atomic(path, text, strlen(text), 0600) : -ENOMEM;
        if (r < 0)
                log_warning_errno(r, "Domain '%s': cannot record QEMU's identity in %s (%m); a restarted qsnapd "
                                  "will not signal it.", d->def->name, strna(path));
        return pidfd;
}

static uint64_t record_field(const char *text, const char *key) {
        const char *p = text ? strstr(text, key) : NULL;

        return p && (p == text || p[-1] == '\n') ? strtoull(p + strlen(key), NULL, 10) : 0;
}

/* Legacy runtime state (no record): QEMU's command line names the domain's UUID. */
static bool cmdline_names_domain(Domain *d, pid_t pid) {
        _cleanup_free_ char *path = strprintf("/proc/%d/cmdline", (int) pid), *cmdline = NULL;
        _cleanup_free_ char *needle = strprintf("-uuid%c%s", 0, d->def->uuid);
        size_t n = 0;

        return path && needle && read_full_file(path, 1 << 20, &cmdline, &n) >= 0 &&
               memmem(cmdline, n, needle, 6 + strlen(d->def->uuid));
}

int domain_launch_adopt_process(Domain *d, pid_t pid) {
        _cleanup_free_ char *path = domain_runtime_path(d, ".process"), *text = NULL;
        _cleanup_free_ char *stat_path = strprintf("/proc/%d/stat", (int) pid);
        _cleanup_close_ int pidfd = -EBADF;
        uint64_t start_time, inode;
        bool ours;

        if (!path || !stat_path)
                return -ENOMEM;
        pidfd = (int) syscall(SYS_pidfd_open, pid, 0);
        if (pidfd < 0)
                return -errno; /* gone */
        (void) read_full_file(path, 4096, &text, NULL);
        /* Its uid stays taken while the runtime state names the process. */
        d->qemu_uid = (uid_t) record_field(text, "qemu_uid=");
        start_time = record_field(text, "start_time=");
        inode = record_field(text, "pidfs_inode=");
        /* The pidfd was taken first: what is read about pid now is about
         * the process it names, as long as that one has not exited. */
        if (text && (pid_t) record_field(text, "pid=") != pid)
                ours = false;
        else if (inode > 0 && pidfs_inode(pidfd) > 0)
                ours = pidfs_inode(pidfd) == inode;
        else if (start_time > 0)
                ours = proc_start_time(stat_path) == start_time;
        else
                ours = !text && cmdline_names_domain(d, pid);
        if (!ours || domain_launch_process_gone(pid, pidfd)) {
                log_warning("Domain '%s': pid %d is not the QEMU qsnapd launched (%s); it will not be signalled.",
                            d->def->name, (int) pid, text ? "another process by its identity" : "no record of it");
                return -ESRCH;
        }
        return TAKE_FD(pidfd);
}

int domain_launch_kill(pid_t pid, int pidfd) {
        if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) >= 0)
                return 0;
        /* A seccomp filter without pidfd_send_signal: by pid, which the
         * caller found alive through the pidfd just before. */
        if (pidfd >= 0 && !IN_SET(errno, ENOSYS, EPERM))
                return -errno;
        return pid > 0 && kill(pid, SIGKILL) < 0 ? -errno : 0;
}

_noreturn_ static void exec_qemu(char **argv, int log_fd, int qmp_fd, const int *fds, size_t n_fds,
                                 const QemuCreds *creds, pid_t parent) {
        sigset_t all;
        int null;

        /* sd-event blocked the signals it handles; QEMU must get them. */
        sigemptyset(&all);
        (void) sigprocmask(SIG_SETMASK, &all, NULL);
        for (int sig = 1; sig < _NSIG; sig++)
                (void) signal(sig, SIG_DFL);

        null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
            dup2(log_fd, STDERR_FILENO) < 0)
                _exit(126);
        if (qmp_fd == QMP_FD_IN_CHILD) {
                if (fcntl(qmp_fd, F_SETFD, 0) < 0)
                        _exit(126);
        } else if (dup2(qmp_fd, QMP_FD_IN_CHILD) < 0)
                _exit(126);
        /* The images' descriptors (all above QMP_FD_IN_CHILD) go to QEMU. */
        for (size_t i = 0; i < n_fds; i++)
                if (fcntl(fds[i], F_SETFD, 0) < 0)
                        _exit(126);
        /* QEMU's own user, here rather than -runas: with -sandbox's
         * elevateprivileges=deny QEMU would die on its own setuid(). From
         * root to another uid, no capability is left. */
        if (creds && creds->drop &&
            (setgroups((size_t) creds->n_groups, creds->groups) < 0 || setresgid(creds->gid, creds->gid, creds->gid) < 0 ||
             setresuid(creds->uid, creds->uid, creds->uid) < 0 || getuid() != creds->uid)) {
                dprintf(STDERR_FILENO, "qsnapd: cannot become QEMU's user: %s\n", strerror(errno));
                _exit(126);
        }
        /* Dies with qsnapd (after the uid change, which clears it). */
        if (parent > 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent))
                _exit(126);
        /* qsnapd runs one thread: its forked child may allocate. */
        if (setenv("GLIBC_TUNABLES", QEMU_GLIBC_TUNABLES, false) < 0)
                _exit(126);
        execv(argv[0], argv);
        dprintf(STDERR_FILENO, "qsnapd: cannot execute %s: %s\n", argv[0], strerror(errno));
        _exit(127);
}

/* setsid and a double fork: QEMU is nobody's child, so it lives on when
 * qsnapd exits. The middle process reports the pid through a pipe. */
typedef struct LaunchedProcess {
        pid_t pid;
        uint64_t start_time;
} LaunchedProcess;

int domain_launch_spawn(char **argv, int log_fd, int qmp_fd, const LaunchFiles *lf, const QemuCreds *creds,
                        pid_t *ret_pid, uint64_t *ret_start_time) {
        LaunchedProcess p = {};
        int pipefd[2], status;
        pid_t child;
        ssize_t n;

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        child = fork();
        if (child < 0) {
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                return -errno;
        }
        if (child == 0) {
                pid_t grandchild;

                safe_close(pipefd[0]);
                if (setsid() < 0)
                        _exit(1);
                grandchild = fork();
                if (grandchild < 0)
                        _exit(1);
                if (grandchild == 0) {
                        /* QEMU says who it is while /proc still shows it to
                         * us (it may run as another user, hidden, soon). */
                        LaunchedProcess me = { .pid = getpid(), .start_time = proc_start_time("/proc/self/stat") };

                        if (write(pipefd[1], &me, sizeof(me)) != (ssize_t) sizeof(me))
                                _exit(126);
                        exec_qemu(argv, log_fd, qmp_fd, lf->fds, lf->n_fds, creds, 0);
                }
                _exit(0);
        }
        safe_close(pipefd[1]);
        do
                n = read(pipefd[0], &p, sizeof(p));
        while (n < 0 && errno == EINTR);
        safe_close(pipefd[0]);
        while (waitpid(child, &status, 0) < 0 && errno == EINTR)
                ;
        if (n != (ssize_t) sizeof(p) || p.pid <= 0)
                return -ECHILD;
        *ret_pid = p.pid;
        *ret_start_time = p.start_time;
        return 0;
}

int domain_launch_spawn_child(char **argv, int log_fd, int qmp_fd, const LaunchFiles *lf, const QemuCreds *creds,
                              pid_t *ret_pid) {
        pid_t parent = getpid(), pid;

        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0)
                exec_qemu(argv, log_fd, qmp_fd, lf->fds, lf->n_fds, creds, parent);
        *ret_pid = pid;
        return 0;
}

int domain_launch_log_header(int fd, char **argv) {
        _cleanup_free_ char *cmdline = strv_join(argv, " ");
        char stamp[64];
        time_t t = time(NULL);
        struct tm tm;

        strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", localtime_r(&t, &tm));
        return dprintf(fd, "%s: " LOG_START_MARK "%s\n", stamp, strna(cmdline)) < 0 ? -errno : 0;
}
