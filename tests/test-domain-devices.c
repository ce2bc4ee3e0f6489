/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QEMU's command line for a domain's devices (core/domain-devices.c, via
 * core/domain-launch.c): each device of tests/fixtures/domain/devices.xml
 * gives the options libvirt's meaning calls for, the accelerator follows
 * <domain type>, the agent's channel shares its virtio-serial controller,
 * a console that repeats a serial adds nothing, <qemu:commandline> comes
 * last, a graphics password goes through a 0600 file, and the device files are the ones
 * the host-admin gate judges. No QEMU is started.
 */
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>

#include "core/domain-devices.h"
#include "core/domain-launch.h"
#include "core/domain-net.h"
#include "core/manager.h"
#include "qemu/image.h"
#include "util/error.h"
#include "util/util.h"

#include "test-check.h"
#include "test-fixture.h"

static char dir[] = "/tmp/test-domain-devices-XXXXXX";
static Manager *manager;

static bool strv_equal(char *const *a, char *const *b) {
        if (!a || !b)
                return a == b;
        for (; *a && *b; a++, b++)
                if (!streq(*a, *b))
                        return false;
        return !*a && !*b;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static Domain *define(const char *xml) {
        _cleanup_free_ char *message = NULL;
        Domain *d = NULL;
        bool created;
        int r;

        r = manager_define_domain(manager, xml, NULL, NULL, &d, &created, &message);
        if (r < 0) {
                n_failed++;
                fprintf(stderr, "cannot define (%d): %s\n%s\n", r, strna(message), xml);
                return NULL;
        }
        return d;
}

/* The launch line as one string, " "-joined (the disks' images opened as
 * a launch opens them, then closed again). */
static char *launch_line(Domain *d) {
        _cleanup_strv_free_ char **argv = NULL;
        _cleanup_(launch_files_done) LaunchFiles lf = {};
        _cleanup_free_ char *message = NULL;
        int r = domain_launch_argv(d, d->def, false, &lf, &argv, &message);

        if (r != 0)
                fprintf(stderr, "launch line: %d %s\n", r, strna(message));
        CHECK(r == 0);
        return r == 0 ? strv_join(argv, " ") : NULL;
}

/* s with every `from` replaced by `to` (NULL on OOM). */
static char *replace_all(const char *s, const char *from, const char *to) {
        char *out = strdup(s), *at;

        while (out && (at = strstr(out, from))) {
                char *next = strprintf("%.*s%s%s", (int) (at - out), out, to, at + strlen(from));
                free(out);
                out = next;
        }
        return out;
}

static void test_devices_fixture(void) {
        /* The files a launch opens (qsnapd hands QEMU descriptors): real
         * ones in our folder instead of the fixture's /srv paths. */
        static const char *const srv[] = { "/srv/vm/desk.qcow2", "/srv/boot/vmlinuz", "/srv/boot/initrd.gz",
                                           "/srv/iso/install.iso", "/srv/log/desk.ttyS0" };
        _cleanup_free_ char *fixture = read_fixture("devices.xml", NULL), *line = NULL, *mac = NULL;
        _cleanup_free_ char *vnc = NULL, *agent = NULL, *xml = NULL, *msg = NULL;
        _cleanup_strv_free_ char **paths = NULL, **real = NULL;
        Domain *d;

        CHECK(fixture && strstr(fixture, srv[0]));
        if (!fixture || !strstr(fixture, srv[0]))
                return;
        xml = TAKE_PTR(fixture);
        for (size_t i = 0; i < ELEMENTSOF(srv); i++) {
                _cleanup_free_ char *path = strprintf("%s/fixture-%s", dir, strrchr(srv[i], '/') + 1);
                char *next;

                CHECK(path && strv_extend(&real, path) >= 0);
                if (!path || !real)
                        return;
                if (i == 0)
                        CHECK(image_create(path, DISK_FORMAT_QCOW2, 1 << 20, NULL, DISK_FORMAT_QCOW2, &msg) >= 0);
                else if (i < ELEMENTSOF(srv) - 1) /* the serial's file is made by the launch */
                        CHECK(write_file_atomic(path, "x", 1, 0644) >= 0);
                next = replace_all(xml, srv[i], path);
                free(xml);
                xml = next;
                if (!xml)
                        return;
        }
        if (!(d = define(xml)))
                return;
        line = launch_line(d);
        if (!line)
                return;
        CHECK_CONTAINS(line, " -accel tcg ");
        CHECK_NOT_CONTAINS(line, "-accel kvm");
        CHECK_CONTAINS(line, " -cpu max ");
        /* Kernel and initrd as descriptors QEMU inherits, no path. */
        CHECK_CONTAINS(line, " -kernel /proc/self/fd/");
        CHECK_CONTAINS(line, " -initrd /proc/self/fd/");
        CHECK_CONTAINS(line, " -append console=ttyS0 quiet ");
        CHECK_NOT_CONTAINS(line, real[1]);
        CHECK_NOT_CONTAINS(line, real[2]);
        CHECK_CONTAINS(line, " -boot order=dc ");
        CHECK_CONTAINS(line, " -action shutdown=pause -action reboot=shutdown ");
        /* Interfaces: user (e1000), the bridge br0, the network "default". */
        mac = strprintf("-netdev user,id=hostnet0 -device e1000,netdev=hostnet0,id=net0,mac=%s ", d->def->devices.nets[0].mac);
        CHECK_CONTAINS(line, mac);
        CHECK_CONTAINS(line, "-netdev bridge,id=hostnet1,br=br0 -device virtio-net-pci,netdev=hostnet1,id=net1,"
                             "mac=52:54:00:aa:bb:cc ");
        CHECK_CONTAINS(line, "-netdev bridge,id=hostnet2,br=default -device virtio-net-pci,netdev=hostnet2,id=net2,mac=");
        /* Graphics: VNC on 127.0.0.1 display 5, SPICE on its socket, QXL. */
        CHECK_CONTAINS(line, " -vnc 127.0.0.1:5 ");
        CHECK_CONTAINS(line, " -spice unix=on,addr=/srv/run/desk.spice,disable-ticketing=on ");
        CHECK_CONTAINS(line, " -device qxl-vga,id=video0 ");
        /* The agent's channel and its controller once; the virtio console
         * and the other channel on that controller; ttyS0 a file, ttyS1 a
         * reconnecting client; the console repeating ttyS0 adds nothing. */
        agent = strprintf("-chardev socket,id=charagent,path=%s/%s.agent,server=on,wait=off", dir, d->def->uuid);
        CHECK_CONTAINS(line, agent);
        CHECK(strstr(line, "virtio-serial-pci"));
        CHECK(strstr(strstr(line, "virtio-serial-pci") + 1, "virtio-serial-pci") == NULL);
        CHECK(strstr(line, "virtio-serial-pci") < strstr(line, "virtconsole"));
        CHECK_CONTAINS(line, "-chardev file,id=char0,path=/dev/fdset/");
        CHECK_CONTAINS(line, ",append=on -device isa-serial,chardev=char0,id=serial0,index=0 ");
        CHECK_NOT_CONTAINS(line, real[4]);
        CHECK_CONTAINS(line, "-chardev socket,id=char1,path=/srv/run/desk.ttyS1,server=off,reconnect=1 -device isa-serial,"
                             "chardev=char1,id=serial1,index=1 ");
        CHECK_NOT_CONTAINS(line, "id=char2,");
        CHECK_CONTAINS(line, "-chardev pty,id=char3 -device virtconsole,bus=virtio-serial0.0,chardev=char3,id=console3 ");
        CHECK_CONTAINS(line, "-chardev socket,id=char5,path=/srv/run/desk.ch,server=on,wait=off -device virtserialport,"
                             "bus=virtio-serial0.0,chardev=char5,id=channel5,name=org.example.other");
        CHECK_NOT_CONTAINS(line, "com.redhat.spice.0");
        /* CD-ROMs: read-only raw on ide-cd; an empty one on virtio-scsi. */
        CHECK_CONTAINS(line, "-blockdev {\"driver\":\"raw\",\"node-name\":\"sda\",\"file\":{\"driver\":\"file\","
                             "\"filename\":\"/dev/fdset/");
        CHECK_CONTAINS(line, "\"read-only\":true,\"discard\":\"unmap\"} ");
        CHECK_CONTAINS(line, " -device ide-cd,id=sda,drive=sda ");
        CHECK_NOT_CONTAINS(line, real[3]);
        CHECK_CONTAINS(line, "-device virtio-scsi-pci,id=scsi0 -device scsi-cd,bus=scsi0.0,id=sdb");
        CHECK_NOT_CONTAINS(line, "id=sdb,drive");
        CHECK_CONTAINS(line, "-device virtio-blk-pci,id=vda,drive=vda-fmt");

        CHECK(domain_devices_paths(d->def, false, &paths) >= 0);
        CHECK(strv_equal(paths, (char *[]) { real[1], real[2], real[3], NULL }));
        strv_free(paths);
        paths = NULL;
        CHECK(domain_devices_paths(d->def, true, &paths) >= 0);
        CHECK(strv_equal(paths, (char *[]) { real[4], "/srv/run/desk.ttyS1", real[4],
                                             "/srv/run/desk.ch", "/srv/run/desk.spice", NULL }));
        vnc = strprintf("%s/%s.vnc", dir, d->def->uuid);
        CHECK_NOT_CONTAINS(line, vnc); /* VNC listens on an address here */
}

static void test_kvm_defaults_and_sockets(void) {
        _cleanup_free_ char *line = NULL, *vnc = NULL, *serial = NULL;
        Domain *d = define("<domain type='kvm'><name>k</name><memory>65536</memory>"
                           "<cpu mode='host-passthrough'/>"
                           "<devices><graphics type='vnc'/><serial type='unix'/><console type='pty'/>"
                           "<interface type='user'/></devices>"
                           "<qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
                           "<qemu:arg value='-trace'/><qemu:arg value='qcow2*'/></qemu:commandline></domain>");

        if (!d || !(line = launch_line(d)))
                return;
        /* KVM, and TCG where KVM cannot start (docs/decisions.md). */
        CHECK_CONTAINS(line, " -accel kvm -accel tcg ");
        CHECK_CONTAINS(line, " -cpu host ");
        CHECK_NOT_CONTAINS(line, "-kernel");
        CHECK_NOT_CONTAINS(line, "-action");
        CHECK_NOT_CONTAINS(line, "virtio-serial-pci");
        vnc = strprintf(" -vnc unix:%s/%s.vnc ", dir, d->def->uuid);
        CHECK_CONTAINS(line, vnc);
        CHECK_CONTAINS(line, " -device VGA,id=video0 ");
        serial = strprintf("-chardev socket,id=char0,path=%s/%s.serial0,server=on,wait=off", dir, d->def->uuid);
        CHECK_CONTAINS(line, serial);
        CHECK_CONTAINS(line, "-device isa-serial,chardev=char0,id=serial0,index=0");
        CHECK_NOT_CONTAINS(line, "char1"); /* the console is serial0 */
        CHECK_CONTAINS(line, "-device virtio-net-pci,netdev=hostnet0,id=net0,mac=52:54:00:");
        CHECK(strlen(line) > strlen(" -trace qcow2*") && streq(line + strlen(line) - strlen(" -trace qcow2*"), " -trace qcow2*"));
}

/* A graphics password reaches QEMU through a 0600 file, never argv. */
static void test_passwords(void) {
        _cleanup_free_ char *line = NULL, *file = NULL, *content = NULL, *obj = NULL;
        struct stat st;
        Domain *d = define("<domain type='kvm'><name>p</name><memory>65536</memory>"
                           "<devices><graphics type='vnc' passwd='s3cret,x'/>"
                           "<graphics type='spice' passwd='sp1ce' listen='127.0.0.1' port='5930'/></devices></domain>");

        if (!d || !(line = launch_line(d)))
                return;
        CHECK_NOT_CONTAINS(line, "s3cret");
        CHECK_NOT_CONTAINS(line, "sp1ce");
        file = strprintf("%s/%s.graphics0.secret", dir, d->def->uuid);
        obj = strprintf("-object secret,id=graphics0-secret,file=%s,format=raw -vnc unix:%s/%s.vnc,password-secret=graphics0-secret ",
                        file, dir, d->def->uuid);
        CHECK_CONTAINS(line, obj);
        CHECK_CONTAINS(line, "-spice addr=127.0.0.1,port=5930,password-secret=graphics1-secret");
        CHECK_NOT_CONTAINS(line, "disable-ticketing");
        CHECK(read_full_file(file, 1024, &content, NULL) >= 0);
        CHECK_STREQ(content, "s3cret,x");
        CHECK(stat(file, &st) >= 0 && (st.st_mode & 0777) == 0600);
        domain_devices_remove_runtime_files(d, d->def);
        CHECK(access(file, F_OK) < 0);
}

/* The live definition: the tap's <target dev> into its <interface>, a
 * pty's <source path> (and a console's tty=) into its element; the
 * result parses again; generated tap names are not requests. */
static void test_live_definition(void) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL, *again = NULL;
        _cleanup_free_ char *xml = NULL, *error = NULL;
        const char *in = "<domain><name>l</name><memory>65536</memory><devices>"
                         "<interface type='bridge'><source bridge='br0'/><model type='virtio'/></interface>"
                         "<interface type='bridge'><source bridge='br0'/><target dev='vnet7'/></interface>"
                         "<interface type='bridge'><source bridge='br0'/><target dev='mytap'/></interface>"
                         "<channel type='spicevmc'><target type='virtio' name='com.redhat.spice.0'/></channel>"
                         "<serial type='pty'><target port='0'/></serial>"
                         "<console type='pty'><target type='serial' port='0'/></console>"
                         "</devices></domain>";

        CHECK(domain_def_parse(in, strlen(in), &def, &error) >= 0);
        if (!def)
                return;
        CHECK(def->devices.n_nets == 3 && !def->devices.nets[0].target && !def->devices.nets[1].target);
        CHECK_STREQ(def->devices.nets[2].target, "mytap");
        CHECK(domain_def_set_live_net_target(def, 0, "qsnap3") >= 0);
        CHECK(domain_def_set_live_net_target(def, 2, "mytap") >= 0);
        CHECK(domain_def_set_live_net_target(def, 3, "x") == -ENOENT);
        CHECK(def->devices.n_chars == 2);
        CHECK(domain_def_set_live_pty(def, 0, "/dev/pts/4") >= 0);
        CHECK(domain_def_set_live_pty(def, 1, "/dev/pts/4") >= 0);
        CHECK(domain_def_format(def, DOMAIN_FORMAT_SECURE, &xml) >= 0);
        if (!xml)
                return;
        CHECK_CONTAINS(xml, "<source bridge=\"br0\"/>\n      <target dev=\"qsnap3\"/>\n      <model type=\"virtio\"/>");
        CHECK_CONTAINS(xml, "<target dev=\"vnet7\"/>");
        CHECK_CONTAINS(xml, "<serial type=\"pty\">\n      <source path=\"/dev/pts/4\"/>\n      <target port=\"0\"/>");
        CHECK_CONTAINS(xml, "<console type=\"pty\" tty=\"/dev/pts/4\">\n      <source path=\"/dev/pts/4\"/>");
        CHECK(domain_def_parse(xml, strlen(xml), &again, &error) >= 0);
        CHECK(again && again->devices.n_nets == 3 && !again->devices.nets[0].target);
}

/* <driver cache= io=> on the launch line as libvirt writes it:
 * cache.direct and cache.no-flush on every layer's format and file node,
 * aio on the file nodes, write-cache on the device; nothing of it for a
 * disk without cache= (QEMU's defaults). */
static void test_disk_cache(void) {
        _cleanup_free_ char *base = strprintf("%s/cache-base.qcow2", dir), *top = strprintf("%s/cache-top.qcow2", dir);
        _cleanup_free_ char *plain = strprintf("%s/cache-plain.qcow2", dir), *wt = strprintf("%s/cache-wt.raw", dir);
        _cleanup_free_ char *unsafe = strprintf("%s/cache-unsafe.qcow2", dir);
        _cleanup_free_ char *xml = NULL, *line = NULL, *msg = NULL;
        const char *p, *vdb;
        Domain *d;
        int n;

        if (!base || !top || !plain || !wt || !unsafe)
                return;
        CHECK(image_create(base, DISK_FORMAT_QCOW2, 1 << 20, NULL, DISK_FORMAT_QCOW2, &msg) >= 0);
        CHECK(image_create(top, DISK_FORMAT_QCOW2, 1 << 20, base, DISK_FORMAT_QCOW2, &msg) >= 0);
        CHECK(image_create(plain, DISK_FORMAT_QCOW2, 1 << 20, NULL, DISK_FORMAT_QCOW2, &msg) >= 0);
        CHECK(image_create(wt, DISK_FORMAT_RAW, 1 << 20, NULL, DISK_FORMAT_QCOW2, &msg) >= 0);
        CHECK(image_create(unsafe, DISK_FORMAT_QCOW2, 1 << 20, NULL, DISK_FORMAT_QCOW2, &msg) >= 0);
        xml = strprintf("<domain><name>cache</name><memory>65536</memory><devices>"
                        "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none' io='native'/>"
                        "<source file='%s'/><target dev='vda'/></disk>"
                        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                        "<source file='%s'/><target dev='vdb'/></disk>"
                        "<disk type='file' device='disk'><driver name='qemu' type='raw' cache='writethrough' io='io_uring'/>"
                        "<source file='%s'/><target dev='vdc'/></disk>"
                        "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='unsafe'/>"
                        "<source file='%s'/><target dev='vdd'/></disk>"
                        "</devices></domain>",
                        top, plain, wt, unsafe);
        if (!xml || !(d = define(xml)) || !(line = launch_line(d)))
                return;
        /* vda: both layers, O_DIRECT with Linux AIO, each format and file node. */
        CHECK_CONTAINS(line, "\"node-name\":\"vda-L1\",\"file\":{\"driver\":\"file\",\"filename\":\"/dev/fdset/");
        CHECK_CONTAINS(line, "\"locking\":\"off\",\"cache\":{\"direct\":true,\"no-flush\":false},\"aio\":\"native\"},"
                             "\"read-only\":true,\"discard\":\"unmap\",\"backing\":null,"
                             "\"cache\":{\"direct\":true,\"no-flush\":false}} ");
        CHECK_CONTAINS(line, "\"read-only\":false,\"discard\":\"unmap\",\"backing\":\"vda-L1\","
                             "\"cache\":{\"direct\":true,\"no-flush\":false}} ");
        for (n = 0, p = line; (p = strstr(p, "\"aio\":\"native\"")); p++)
                n++;
        CHECK(n == 2);
        CHECK_CONTAINS(line, "-device virtio-blk-pci,id=vda,drive=vda-fmt,write-cache=on ");
        /* vdb: QEMU's defaults, nothing said. */
        vdb = strstr(line, "\"node-name\":\"vdb-fmt\"");
        CHECK(vdb);
        if (vdb) {
                const char *end = strstr(vdb, " -device");
                CHECK(end && !memmem(vdb, (size_t) (end - vdb), "cache", 5) && !memmem(vdb, (size_t) (end - vdb), "aio", 3));
        }
        CHECK_CONTAINS(line, "-device virtio-blk-pci,id=vdb,drive=vdb-fmt ");
        /* vdc: the page cache, every write through to the disk (no volatile cache for the guest). */
        CHECK_CONTAINS(line, "\"cache\":{\"direct\":false,\"no-flush\":false},\"aio\":\"io_uring\"},"
                             "\"read-only\":false,\"discard\":\"unmap\",\"cache\":{\"direct\":false,\"no-flush\":false}} ");
        CHECK_CONTAINS(line, "-device virtio-blk-pci,id=vdc,drive=vdc-fmt,write-cache=off ");
        /* vdd: flushes ignored. */
        CHECK_CONTAINS(line, "\"cache\":{\"direct\":false,\"no-flush\":true}},\"read-only\":false,\"discard\":\"unmap\","
                             "\"backing\":null,\"cache\":{\"direct\":false,\"no-flush\":true}} ");
        CHECK_CONTAINS(line, "-device virtio-blk-pci,id=vdd,drive=vdd-fmt,write-cache=on");
}

/* bridge.conf read as QEMU's bridge helper reads it. */
static void test_bridge_list(void) {
        _cleanup_free_ char *conf = strprintf("%s/bridge.conf", dir), *more = strprintf("%s/more.conf", dir);
        _cleanup_free_ char *text = NULL, *msg = NULL, *want = NULL;

        if (!conf || !more)
                return;
        CHECK(domain_net_bridge_allowed(conf, "br0", &msg) == -ENOENT);
        msg = mfree(msg);
        text = strprintf("# comment\n\n  allow br0  \ninclude %s\ndeny br2\n", more);
        CHECK(write_file_atomic(conf, text, strlen(text), 0600) >= 0);
        CHECK(write_file_atomic(more, "allow all\ndeny br3\n", 20, 0600) >= 0);
        CHECK(domain_net_bridge_allowed(conf, "br0", &msg) == 1);
        CHECK(domain_net_bridge_allowed(conf, "br1", &msg) == 1); /* allow all, included */
        CHECK(domain_net_bridge_allowed(conf, "br2", &msg) == 0); /* a deny wins */
        CHECK(domain_net_bridge_allowed(conf, "br3", &msg) == 0);
        CHECK(write_file_atomic(conf, "allow br0\npermit br1\n", 21, 0600) >= 0);
        CHECK(domain_net_bridge_allowed(conf, "br0", &msg) == -EINVAL);
        want = strprintf("%s line 2: unknown command 'permit'", conf);
        CHECK_STREQ(msg, want);
}

/* I/O threads: one -object per id (libvirt's iothread<K> names, the ids
 * <iothreadids> gives then the lowest unused up to <iothreads>), before
 * the disks; a disk with iothread= names its thread on the device, the
 * other disk stays in the main loop. */
static void test_iothreads(void) {
        _cleanup_free_ char *a = strprintf("%s/io-a.qcow2", dir), *b = strprintf("%s/io-b.qcow2", dir);
        _cleanup_free_ char *xml = NULL, *line = NULL, *msg = NULL;
        const char *objects, *first_disk;
        Domain *d;

        if (!a || !b)
                return;
        CHECK(image_create(a, DISK_FORMAT_QCOW2, 1 << 20, NULL, DISK_FORMAT_QCOW2, &msg) >= 0);
        CHECK(image_create(b, DISK_FORMAT_QCOW2, 1 << 20, NULL, DISK_FORMAT_QCOW2, &msg) >= 0);
        xml = strprintf("<domain><name>io</name><memory>65536</memory><iothreads>3</iothreads>"
                        "<iothreadids><iothread id='5'/></iothreadids><devices>"
                        "<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none' iothread='5'/>"
                        "<source file='%s'/><target dev='vda' bus='virtio'/></disk>"
                        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
                        "<source file='%s'/><target dev='vdb'/></disk>"
                        "</devices></domain>", a, b);
        if (!xml || !(d = define(xml)) || !(line = launch_line(d)))
                return;
        objects = strstr(line, "-object iothread,id=iothread5 -object iothread,id=iothread1 "
                               "-object iothread,id=iothread2 ");
        first_disk = strstr(line, "virtio-blk-pci");
        CHECK(objects && first_disk && objects < first_disk);
        CHECK(!strstr(line, "iothread3"));
        CHECK_CONTAINS(line, "-device virtio-blk-pci,id=vda,drive=vda-fmt,write-cache=on,iothread=iothread5 ");
        CHECK_CONTAINS(line, "-device virtio-blk-pci,id=vdb,drive=vdb-fmt ");
        CHECK(!strstr(line, "id=vdb,drive=vdb-fmt,iothread"));
}

int main(int argc, char **argv) {
        sd_event *event = NULL;
        ManagerConfig config;
        _cleanup_free_ char *state = NULL;

        CHECK(argc == 2);
        fixtures = argv[1];
        CHECK(mkdtemp(dir) != NULL);
        state = strprintf("%s/state", dir);
        CHECK(state && mkdir(state, 0700) >= 0);
        config = (ManagerConfig) {
                .state_dir = state,
                .runtime_dir = dir,
                .qemu_binary = (char *) "/usr/bin/qemu-system-x86_64",
                .start_timeout_usec = 10 * USEC_PER_SEC,
                .graceful_timeout_usec = 10 * USEC_PER_SEC,
                .metadata_read_cap = 1 << 20,
        };
        CHECK(sd_event_default(&event) >= 0);
        CHECK(manager_new(event, &config, &manager) >= 0);

        test_devices_fixture();
        test_kvm_defaults_and_sockets();
        test_passwords();
        test_live_definition();
        test_bridge_list();
        test_disk_cache();
        test_iothreads();

        manager_free(manager);
        sd_event_unref(event);
        (void) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        return test_summary();
}
