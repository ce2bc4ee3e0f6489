/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the <domain> codec (daemon/store/xml-domain.c): virsh-shaped
 * fixtures, byte-stable round trips, odd names, malformed and hostile input
 * (entities, DTDs, oversized documents) and the writer's escaping. The one
 * argument is the fixtures directory. Exits non-zero when a check failed.
 */

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>

#include <libxml/xmlerror.h>
#include <libxml/xmlversion.h>

#include "store/xml-domain.h"
#include "test-check.h"
#include "test-fixture.h"
#include "util/util.h"

static DomainDef *parse_ok(const char *xml) {
        _cleanup_free_ char *error = NULL;
        DomainDef *def = NULL;
        int r;

        r = domain_def_parse(xml, strlen(xml), &def, &error);
        if (r < 0) {
                n_failed++;
                fprintf(stderr, "unexpected parse failure %d (%s) for:\n%s\n", r, strna(error), xml);
                return NULL;
        }
        CHECK(def);
        CHECK(!error); /* untouched on success */
        return def;
}

static DomainDef *parse_fixture(const char *name) {
        _cleanup_free_ char *xml = read_fixture(name, NULL);
        return parse_ok(xml);
}

static char *format_ok(const DomainDef *def, DomainFormatFlags flags) {
        char *out = NULL;
        int r;

        r = domain_def_format(def, flags, &out);
        CHECK(r == 0);
        CHECK(out);
        return out;
}

/* Parse must fail with r, the message must start with "line N: " when
 * line > 0, and contain each needle. Also checks that *ret is untouched. */
static void parse_fails(const char *xml, size_t size, int r, int line, const char *needle) {
        _cleanup_free_ char *error = NULL;
        DomainDef *sentinel = (DomainDef *) (uintptr_t) 0x1, *def = sentinel;
        int k;

        k = domain_def_parse(xml, size, &def, &error);
        n_checks++;
        if (k != r) {
                n_failed++;
                fprintf(stderr, "expected parse error %d, got %d (%s) for:\n%.300s\n", r, k, strna(error), xml);
                if (k >= 0 && def != sentinel)
                        domain_def_free(def);
                return;
        }
        CHECK(def == sentinel);
        CHECK(error);
        if (!error)
                return;
        if (line > 0) {
                _cleanup_free_ char *prefix = strprintf("line %d: ", line);
                n_checks++;
                if (strncmp(error, prefix, strlen(prefix)) != 0) {
                        n_failed++;
                        fprintf(stderr, "expected '%s' prefix in: %s\n", prefix, error);
                }
        }
        if (needle)
                CHECK_CONTAINS(error, needle);
}

static void parse_fails_str(const char *xml, int r, int line, const char *needle) {
        parse_fails(xml, strlen(xml), r, line, needle);
}

static bool strv_equal(char *const *a, char *const *b) {
        if (!a || !b)
                return a == b;
        for (; *a && *b; a++, b++)
                if (!streq(*a, *b))
                        return false;
        return !*a && !*b;
}

static bool disk_equal(const DomainDisk *a, const DomainDisk *b) {
        size_t n = strv_length(a->backing_chain);

        if (!!a->backing_formats != !!b->backing_formats)
                return false;
        if (a->backing_formats && memcmp(a->backing_formats, b->backing_formats, n * sizeof(DiskFormat)) != 0)
                return false;

        return streq_ptr(a->target, b->target) && streq_ptr(a->bus, b->bus) && a->format == b->format &&
                a->cache == b->cache && a->io == b->io && a->iothread == b->iothread && streq_ptr(a->source, b->source) && a->readonly == b->readonly && a->transient == b->transient &&
                strv_equal(a->backing_chain, b->backing_chain) &&
                strv_equal(a->extra_elements, b->extra_elements) &&
                strv_equal(a->extra_attributes, b->extra_attributes) &&
                strv_equal(a->extra_driver_attributes, b->extra_driver_attributes) &&
                strv_equal(a->extra_source_attributes, b->extra_source_attributes) &&
                strv_equal(a->extra_target_attributes, b->extra_target_attributes);
}

static bool def_equal(const DomainDef *a, const DomainDef *b) {
        if (a->n_disks != b->n_disks)
                return false;
        for (size_t i = 0; i < a->n_disks; i++)
                if (!disk_equal(&a->disks[i], &b->disks[i]))
                        return false;

        return streq_ptr(a->type, b->type) && streq_ptr(a->name, b->name) && streq_ptr(a->uuid, b->uuid) &&
                streq_ptr(a->description, b->description) && a->memory_kib == b->memory_kib &&
                a->current_memory_kib == b->current_memory_kib && a->vcpus == b->vcpus &&
                streq_ptr(a->os_type, b->os_type) && streq_ptr(a->arch, b->arch) &&
                streq_ptr(a->machine, b->machine) && streq_ptr(a->emulator, b->emulator) &&
                streq_ptr(a->monitor_path, b->monitor_path) &&
                strv_equal(a->extra_domain, b->extra_domain) && strv_equal(a->extra_os, b->extra_os) &&
                strv_equal(a->extra_devices, b->extra_devices) &&
                strv_equal(a->extra_domain_attributes, b->extra_domain_attributes) &&
                strv_equal(a->extra_vcpu_attributes, b->extra_vcpu_attributes) &&
                strv_equal(a->extra_os_attributes, b->extra_os_attributes) &&
                a->n_iothread_ids == b->n_iothread_ids &&
                (a->n_iothread_ids == 0 ||
                 memcmp(a->iothread_ids, b->iothread_ids, a->n_iothread_ids * sizeof(unsigned)) == 0);
}

/* parse(format(def)) == def structurally, and formatting that again gives
 * the same bytes. Returns the first formatting. */
static char *check_round_trip(const DomainDef *def) {
        _cleanup_(domain_def_freep) DomainDef *again = NULL;
        _cleanup_free_ char *out2 = NULL;
        char *out1;

        /* What is stored: secrets included. */
        out1 = format_ok(def, DOMAIN_FORMAT_SECURE);
        if (!out1)
                return NULL;
        again = parse_ok(out1);
        if (!again)
                return out1;
        n_checks++;
        if (!def_equal(def, again)) {
                n_failed++;
                fprintf(stderr, "round trip changed the definition; formatted was:\n%s\n", out1);
        }
        out2 = format_ok(again, 0);
        CHECK_STREQ(out2, out1);
        return out1;
}

static void check_round_trip_fixture(const char *name) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture(name);
        _cleanup_free_ char *out = NULL;

        if (!def)
                return;
        out = check_round_trip(def);
}

/* ---------------------------------------------------------------------------- */

static void test_libvirt_full(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("libvirt-full.xml");
        _cleanup_free_ char *out = NULL, *expected = NULL, *with_chain = NULL;
        const DomainDisk *vda, *sda;

        if (!def)
                return;

        CHECK_STREQ(def->type, "kvm");
        CHECK_STREQ(def->name, "fedora-workstation");
        CHECK_STREQ(def->uuid, "6b2c4e1a-0f3d-4c8b-9a7e-2d5f1c3b8e90");
        CHECK_STREQ(def->description, "Dev box: \"main\" <daily>");
        CHECK(def->memory_kib == 4194304);
        CHECK(def->current_memory_kib == 3145728);
        CHECK(def->vcpus == 4);
        CHECK_STREQ(def->os_type, "hvm");
        CHECK_STREQ(def->arch, "x86_64");
        CHECK_STREQ(def->machine, "pc-q35-8.1");
        CHECK_STREQ(def->emulator, "/usr/bin/qemu-system-x86_64");
        CHECK(!def->monitor_path);

        CHECK(strv_equal(def->extra_domain_attributes,
                         (char *[]) { "xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\"", "id=\"7\"", NULL }));
        CHECK(strv_equal(def->extra_vcpu_attributes, (char *[]) { "placement=\"static\"", "current=\"2\"", NULL }));
        CHECK(strv_equal(def->extra_os_attributes, (char *[]) { "firmware=\"efi\"", NULL }));

        /* The devices qsnapd launches, read from virsh's dumpxml (and kept too). */
        CHECK(def->devices.n_nets == 1 && def->devices.nets[0].type == DOMAIN_NET_NETWORK);
        CHECK(def->devices.n_nets == 1 && streq_ptr(def->devices.nets[0].bridge, "virbr0"));
        CHECK(def->devices.n_nets == 1 && streq_ptr(def->devices.nets[0].mac, "52:54:00:6b:3c:58"));
        CHECK(def->devices.n_graphics == 1 && def->devices.graphics[0].type == DOMAIN_GRAPHICS_SPICE);
        CHECK(def->devices.n_graphics == 1 && streq_ptr(def->devices.graphics[0].address, "127.0.0.1") &&
              def->devices.graphics[0].port == -1);
        CHECK(def->devices.n_chars == 3); /* serial, console, the agent's channel */
        CHECK(def->agent_channel);
        CHECK_STREQ(def->devices.video, "virtio");
        CHECK(def->devices.cpu_mode == DOMAIN_CPU_HOST_PASSTHROUGH);
        CHECK_STREQ(def->devices.boot_order, "c");
        CHECK(def->devices.on_poweroff == DOMAIN_LIFECYCLE_DESTROY && def->devices.on_reboot == DOMAIN_LIFECYCLE_RESTART);
        CHECK(strv_equal(def->devices.qemu_args, (char *[]) { "-trace", "qcow2*", NULL }));
        CHECK(def->devices.n_cdroms == 0 && !def->devices.kernel);

        /* Unknown children kept in order, with their content. */
        CHECK(strv_length(def->extra_domain) == 12);
        CHECK(strv_length(def->extra_os) == 2); /* <firmware>, <boot>; <loader>, <nvram> are modelled */
        CHECK_STREQ(def->firmware.loader, "/usr/share/edk2/ovmf/OVMF_CODE.fd");
        CHECK_STREQ(def->firmware.nvram, "/var/lib/libvirt/qemu/nvram/fedora_VARS.fd");
        CHECK_STREQ(def->firmware.nvram_template, "/usr/share/edk2/ovmf/OVMF_VARS.fd");
        CHECK(def->firmware.nvram_format == DISK_FORMAT_RAW && !def->firmware.nvram_format_given);
        CHECK(strv_length(def->extra_devices) == 10);
        if (strv_length(def->extra_domain) == 12) {
                CHECK_CONTAINS(def->extra_domain[0], "<title>Fedora &amp; friends</title>");
                CHECK_CONTAINS(def->extra_domain[1], "<libosinfo:os id=\"http://fedoraproject.org/fedora/39\"/>");
                CHECK_CONTAINS(def->extra_domain[3], "<features>");
                CHECK_CONTAINS(def->extra_domain[4], "<topology sockets=\"1\" dies=\"1\" cores=\"2\" threads=\"2\"/>");
                CHECK_STREQ(def->extra_domain[6], "<on_poweroff>destroy</on_poweroff>");
                /* The prefix was declared on <domain>: the kept copy declares it itself. */
                CHECK_CONTAINS(def->extra_domain[11],
                               "<qemu:commandline xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\">");
        }
        if (strv_length(def->extra_os) == 2)
                CHECK_STREQ(def->extra_os[1], "<boot dev=\"hd\"/>");
        if (strv_length(def->extra_devices) == 10) {
                CHECK_CONTAINS(def->extra_devices[2], "<mac address=\"52:54:00:6b:3c:58\"/>");
                CHECK_CONTAINS(def->extra_devices[6], "<graphics type=\"spice\"");
        }

        CHECK(def->n_disks == 2);
        vda = domain_def_find_disk(def, "vda");
        sda = domain_def_find_disk(def, "sda");
        CHECK(vda && sda);
        if (vda && sda) {
                CHECK(vda == &def->disks[0]);
                CHECK(vda->format == DISK_FORMAT_QCOW2);
                CHECK_STREQ(vda->source, "/var/lib/libvirt/images/fedora.qcow2");
                CHECK_STREQ(vda->bus, "virtio");
                CHECK(!vda->readonly && !vda->transient);
                CHECK(!vda->backing_chain); /* <backingStore> in input is ignored */
                CHECK(strv_equal(vda->extra_attributes, (char *[]) { "snapshot=\"external\"", NULL }));
                CHECK(vda->cache == DISK_CACHE_NONE && vda->io == DISK_IO_NATIVE);
                CHECK(strv_equal(vda->extra_driver_attributes, (char *[]) { "discard=\"unmap\"", NULL }));
                CHECK(strv_equal(vda->extra_source_attributes, (char *[]) { "index=\"2\"", NULL }));
                CHECK(strv_length(vda->extra_elements) == 3);
                if (strv_length(vda->extra_elements) == 3)
                        CHECK_STREQ(vda->extra_elements[2],
                                    "<address type=\"pci\" domain=\"0x0000\" bus=\"0x04\" slot=\"0x00\" function=\"0x0\"/>");

                CHECK(sda->format == DISK_FORMAT_RAW);
                CHECK_STREQ(sda->bus, "sata");
                CHECK(sda->readonly && !sda->transient);
                CHECK(strv_equal(sda->extra_target_attributes, (char *[]) { "rotation_rate=\"1\"", NULL }));
        }
        CHECK(!domain_def_find_disk(def, "vdz"));
        CHECK(!domain_def_find_disk(def, NULL));
        CHECK(!domain_def_find_disk(NULL, "vda"));

        /* The exact output, checked by eye once and pinned. */
        out = check_round_trip(def);
        expected = read_fixture("libvirt-full.expected.xml", NULL);
        CHECK_STREQ(out, expected);

        /* No chain known: the flag writes nothing extra. */
        with_chain = format_ok(def, DOMAIN_FORMAT_BACKING_CHAIN);
        CHECK_STREQ(with_chain, out);
}

static void test_minimal(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("minimal.xml");
        _cleanup_free_ char *out = NULL, *expected = NULL;

        if (!def)
                return;
        CHECK_STREQ(def->type, "kvm");
        CHECK_STREQ(def->name, "minimal");
        CHECK(def->uuid && uuid_is_valid(def->uuid)); /* generated */
        CHECK(!def->description);
        CHECK(def->memory_kib == 1048576);
        CHECK(def->current_memory_kib == 1048576);
        CHECK(def->vcpus == 1);
        CHECK_STREQ(def->os_type, "hvm");
        CHECK(!def->arch && !def->machine && !def->emulator && !def->monitor_path);
        CHECK(def->n_disks == 0 && !def->disks);
        CHECK(!def->extra_domain && !def->extra_os && !def->extra_devices);
        CHECK(!def->extra_domain_attributes && !def->extra_vcpu_attributes && !def->extra_os_attributes);

        out = check_round_trip(def);
        expected = strprintf("<domain type='kvm'>\n"
                             "  <name>minimal</name>\n"
                             "  <uuid>%s</uuid>\n"
                             "  <memory unit='KiB'>1048576</memory>\n"
                             "  <currentMemory unit='KiB'>1048576</currentMemory>\n"
                             "  <vcpu>1</vcpu>\n"
                             "  <os>\n"
                             "    <type>hvm</type>\n"
                             "  </os>\n"
                             "  <devices>\n"
                             "  </devices>\n"
                             "</domain>\n",
                             def->uuid);
        CHECK_STREQ(out, expected);

        /* Two parses of a document without <uuid> get different ones. */
        {
                _cleanup_(domain_def_freep) DomainDef *other = parse_fixture("minimal.xml");
                CHECK(other && !streq(other->uuid, def->uuid));
        }
}

static void test_two_disks(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("two-disks.xml");
        _cleanup_free_ char *out = NULL;
        const char *expected =
                "<domain type='qemu'>\n"
                "  <name>two-disks</name>\n"
                "  <uuid>0f6ad1f0-d5a8-4b2f-a9a3-b0c1d2e3f405</uuid>\n"
                "  <memory unit='KiB'>2097152</memory>\n"
                "  <currentMemory unit='KiB'>1048576</currentMemory>\n"
                "  <vcpu>2</vcpu>\n"
                "  <os>\n"
                "    <type arch='x86_64' machine='q35'>hvm</type>\n"
                "  </os>\n"
                "  <devices>\n"
                "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
                "    <disk type='file' device='disk'>\n"
                "      <driver name='qemu' type='qcow2'/>\n"
                "      <source file='/var/lib/qsnap/images/system.qcow2'/>\n"
                "      <target dev='vda' bus='virtio'/>\n"
                "    </disk>\n"
                "    <disk type='file' device='disk'>\n"
                "      <driver name='qemu' type='raw'/>\n"
                "      <source file='/var/lib/qsnap/images/data.raw'/>\n"
                "      <target dev='vdb' bus='virtio'/>\n"
                "    </disk>\n"
                "  </devices>\n"
                "</domain>\n";

        if (!def)
                return;
        CHECK(def->n_disks == 2);
        CHECK(domain_def_find_disk(def, "vdb") == &def->disks[1]);
        CHECK(def->disks[1].format == DISK_FORMAT_RAW);
        out = check_round_trip(def);
        CHECK_STREQ(out, expected);
}

static void test_transient_readonly(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("transient-readonly.xml");
        _cleanup_free_ char *out = NULL;

        if (!def)
                return;
        CHECK(def->memory_kib == 1048576);
        CHECK(def->n_disks == 3);
        if (def->n_disks != 3)
                return;
        CHECK(def->disks[0].readonly && !def->disks[0].transient);
        CHECK(!def->disks[1].readonly && def->disks[1].transient);
        CHECK_STREQ(def->disks[1].bus, "scsi");
        CHECK(def->disks[2].readonly && def->disks[2].transient);
        CHECK(def->disks[0].format == DISK_FORMAT_QCOW2); /* no <driver> */

        out = check_round_trip(def);
        CHECK_CONTAINS(out, "      <target dev='vda' bus='virtio'/>\n      <readonly/>\n    </disk>\n");
        CHECK_CONTAINS(out, "      <target dev='vdb' bus='scsi'/>\n      <transient/>\n    </disk>\n");
        CHECK_CONTAINS(out, "      <readonly/>\n      <transient/>\n    </disk>\n");
}

static void test_monitor(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("monitor.xml"), *in_devices = NULL,
                                               *conflict = NULL;
        _cleanup_free_ char *out = NULL, *out2 = NULL, *out3 = NULL;

        if (!def)
                return;
        CHECK_STREQ(def->monitor_path, "/run/qsnap/attached/qmp.sock");
        CHECK(!def->extra_domain); /* modelled, not kept */
        CHECK(!def->extra_domain_attributes); /* our namespace is declared by the writer */
        out = check_round_trip(def);
        CHECK_CONTAINS(out, "<domain type='kvm' xmlns:qsnap='http://example.org/qsnap/1'>\n");
        CHECK_CONTAINS(out, "    </disk>\n    <qsnap:monitor path='/run/qsnap/attached/qmp.sock'/>\n  </devices>\n");

        in_devices = parse_ok("<domain><name>m</name><memory>1</memory><devices>"
                              "<monitor xmlns='http://example.org/qsnap/1' path='/run/m.sock'/>"
                              "<qsnap:other xmlns:qsnap='http://example.org/qsnap/1'/>"
                              "</devices></domain>");
        if (in_devices) {
                CHECK_STREQ(in_devices->monitor_path, "/run/m.sock");
                /* Other elements of our namespace are not ours to drop. */
                CHECK(strv_length(in_devices->extra_devices) == 1);
                out2 = check_round_trip(in_devices);
        }

        /* "qsnap" bound to another namespace by the document: still well-formed. */
        conflict = parse_ok("<domain xmlns:qsnap='urn:other'><name>c</name><memory>1</memory>"
                            "<qsnap:thing/><m:monitor xmlns:m='http://example.org/qsnap/1' path='/m'/></domain>");
        if (conflict) {
                CHECK_STREQ(conflict->monitor_path, "/m");
                out3 = check_round_trip(conflict);
                CHECK_CONTAINS(out3, "<qsnap:monitor xmlns:qsnap='http://example.org/qsnap/1' path='/m'/>");
        }

        parse_fails_str("<domain><name>m</name><memory>1</memory>\n<q:monitor xmlns:q='http://example.org/qsnap/1' "
                        "path='run/m.sock'/></domain>",
                        -QSNAP_E_INVALID_XML, 2, "not an absolute path");
        parse_fails_str("<domain><name>m</name><memory>1</memory>\n<q:monitor xmlns:q='http://example.org/qsnap/1'/>"
                        "</domain>",
                        -QSNAP_E_INVALID_XML, 2, "has no path= attribute");
        parse_fails_str("<domain xmlns:q='http://example.org/qsnap/1'><name>m</name><memory>1</memory>\n"
                        "<q:monitor path='/a'/><devices>\n<q:monitor path='/b'/></devices></domain>",
                        -QSNAP_E_INVALID_XML, 3, "more than once");
}

/* Names, paths and texts that a writer without escaping would break. */
static const char *const odd_strings[] = {
        "with spaces",
        "  padded  ",
        "ünïcødé 名前 🎉",
        "a/b/c",
        "<&>'\"",
        "]]>",
        "&amp; is not an entity here",
        "tab\tnew\nline\rcr",
        "x\r\n",
        "-- <!-- not a comment -->",
        "<?pi?>",
        NULL, /* the 300-character one is added below */
};

static void test_odd_strings(void) {
        char long_name[301];

        memset(long_name, 'x', 300);
        long_name[300] = '\0';
        long_name[150] = '/';

        for (size_t i = 0; i < ELEMENTSOF(odd_strings); i++) {
                const char *s = odd_strings[i] ?: long_name;
                _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("two-disks.xml");
                _cleanup_(domain_def_freep) DomainDef *back = NULL;
                _cleanup_free_ char *out = NULL, *path = NULL;

                if (!def)
                        return;
                path = strjoin("/images/", s);
                CHECK(free_and_strdup(&def->name, s) == 0);
                CHECK(free_and_strdup(&def->description, s) == 0);
                CHECK(free_and_strdup(&def->arch, s) == 0);
                CHECK(free_and_strdup(&def->machine, s) == 0);
                CHECK(free_and_strdup(&def->emulator, path) == 0);
                CHECK(free_and_strdup(&def->monitor_path, path) == 0);
                CHECK(free_and_strdup(&def->disks[0].source, path) == 0);

                /* Everything written is read back exactly, the second time
                 * byte-identical: the output is well-formed. */
                out = check_round_trip(def);
                back = out ? parse_ok(out) : NULL;
                if (!back)
                        continue;
                CHECK_STREQ(back->name, s);
                CHECK_STREQ(back->description, s);
                CHECK_STREQ(back->arch, s);
                CHECK_STREQ(back->machine, s);
                CHECK_STREQ(back->emulator, path);
                CHECK_STREQ(back->monitor_path, path);
                CHECK_STREQ(back->disks[0].source, path);
        }

        /* The same from a document: nothing stripped from <name>. */
        {
                _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("odd-name.xml");
                _cleanup_free_ char *out = NULL;

                if (def) {
                        CHECK_STREQ(def->name, " spaced/slash <&>'\" ünïcødé 名前 🎉 <cdata&> ");
                        CHECK_STREQ(def->disks[0].source, "/images/we ird <&>'\" ñ.qcow2");
                        CHECK(strv_equal(def->disks[0].extra_attributes,
                                         (char *[]) { "note=\"a&quot;b&lt;c&apos;d&#10;e\"", NULL }));
                        out = check_round_trip(def);
                        CHECK_CONTAINS(out, "<name> spaced/slash &lt;&amp;&gt;'\" ünïcødé 名前 🎉 &lt;cdata&amp;&gt; </name>");
                        CHECK_CONTAINS(out, "<source file='/images/we ird &lt;&amp;&gt;&apos;&quot; ñ.qcow2'/>");
                }
        }

        /* A 300-character name in a document. */
        {
                _cleanup_free_ char *xml = strprintf("<domain><name>%s</name><memory>1</memory></domain>", long_name);
                _cleanup_(domain_def_freep) DomainDef *def = parse_ok(xml);
                CHECK(def && streq(def->name, long_name));
        }
}

/* Strings no XML document can carry: the writer refuses instead of
 * producing something that does not parse. */
static void test_unwritable_strings(void) {
        static const char *const bad[] = {
                "ctrl\x01",
                "esc\x1b[0m",
                "bad utf8 \xff",
                "truncated \xc3",
                "overlong \xc0\xaf",
                "surrogate \xed\xa0\x80",
                "nonchar \xef\xbf\xbe",
        };

        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("two-disks.xml");
                _cleanup_free_ char *path = NULL;
                char *out = (char *) (uintptr_t) 0x1;

                if (!def)
                        return;
                CHECK(free_and_strdup(&def->description, bad[i]) == 0);
                CHECK(domain_def_format(def, 0, &out) == -EINVAL);
                CHECK(out == (char *) (uintptr_t) 0x1); /* untouched */

                CHECK(free_and_strdup(&def->description, NULL) == 0);
                path = strjoin("/images/", bad[i]);
                CHECK(free_and_strdup(&def->disks[1].source, path) == 0);
                CHECK(domain_def_format(def, 0, &out) == -EINVAL);
        }

        /* Values that parse would refuse are refused by the writer too. */
        {
                _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("two-disks.xml");
                char *out = NULL;

                if (!def)
                        return;
                CHECK(free_and_strdup(&def->name, " \n") == 0);
                CHECK(domain_def_format(def, 0, &out) == -EINVAL);
                CHECK(free_and_strdup(&def->name, "ok") == 0);
                CHECK(free_and_strdup(&def->disks[1].target, "vda") == 0);
                CHECK(domain_def_format(def, 0, &out) == -EINVAL);
                CHECK(free_and_strdup(&def->disks[1].target, "vdb") == 0);
                CHECK(free_and_strdup(&def->disks[1].source, "relative.raw") == 0);
                CHECK(domain_def_format(def, 0, &out) == -EINVAL);
                CHECK(free_and_strdup(&def->disks[1].source, "/ok.raw") == 0);
                def->current_memory_kib = def->memory_kib + 1;
                CHECK(domain_def_format(def, 0, &out) == -EINVAL);
                def->current_memory_kib = def->memory_kib;
                CHECK(free_and_strdup(&def->uuid, "not-a-uuid") == 0);
                CHECK(domain_def_format(def, 0, &out) == -EINVAL);
                CHECK(free_and_strdup(&def->uuid, "0F6AD1F0-D5A8-4B2F-A9A3-B0C1D2E3F405") == 0);
                CHECK(domain_def_format(def, 0, &out) == 0);
                CHECK_CONTAINS(out, "<uuid>0f6ad1f0-d5a8-4b2f-a9a3-b0c1d2e3f405</uuid>");
                free(out);
        }
}

/* libxml2 must not print; the caller's error handler must be back after. */
#if LIBXML_VERSION >= 21200
#define XML_ERROR_CONST const
#else
#define XML_ERROR_CONST
#endif
static unsigned sentinel_calls;
static void sentinel_handler(void *userdata, XML_ERROR_CONST xmlError *error) {
        sentinel_calls++;
}

static void test_malformed(void) {
        _cleanup_free_ char *mismatch = read_fixture("malformed-tag-mismatch.xml", NULL);
        _cleanup_free_ char *truncated = read_fixture("malformed-truncated.xml", NULL);
        int saved_stderr, capture;
        struct stat st;

        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        capture = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        CHECK(saved_stderr >= 0 && capture >= 0);
        if (capture >= 0)
                dup2(capture, STDERR_FILENO);
        xmlSetStructuredErrorFunc((void *) &sentinel_calls, sentinel_handler);

        parse_fails_str(mismatch, -QSNAP_E_INVALID_XML, 4, "Opening and ending tag mismatch: memory line 3 and domain");
        parse_fails_str("<domain>\n  <memory>\n</domain>\n", -QSNAP_E_INVALID_XML, 3,
                        "Opening and ending tag mismatch: memory line 2 and domain");
        parse_fails_str(truncated, -QSNAP_E_INVALID_XML, 3, NULL);
        parse_fails_str("<domain><name>x</na", -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails_str("this is not XML at all", -QSNAP_E_INVALID_XML, 1, "Start tag expected");
        parse_fails_str("\n\n<domain><name>a</name></domain><domain/>", -QSNAP_E_INVALID_XML, 3, "Extra content");
        parse_fails_str("<domain><name>a & b</name></domain>", -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails_str("<domain><name a='1' a='2'>x</name></domain>", -QSNAP_E_INVALID_XML, 1, "redefined");
        parse_fails_str("<domain>\n<x:y/></domain>", -QSNAP_E_INVALID_XML, 2, "Namespace prefix x");
        parse_fails_str("<domain><name>\xff\xfe</name></domain>", -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails_str("<?xml version='1.0' encoding='no-such-charset'?><domain/>", -QSNAP_E_INVALID_XML, 0, NULL);
        parse_fails("", 0, -QSNAP_E_INVALID_XML, 0, "empty");
        parse_fails(NULL, 0, -QSNAP_E_INVALID_XML, 0, "empty");
        parse_fails("<domain>\0<name>x</name></domain>", 30, -QSNAP_E_INVALID_XML, 1, NULL);

        CHECK(xmlStructuredError == sentinel_handler);
        CHECK(xmlStructuredErrorContext == (void *) &sentinel_calls);
        CHECK(sentinel_calls == 0);
        xmlSetStructuredErrorFunc(NULL, NULL);

        fflush(stderr);
        if (saved_stderr >= 0) {
                dup2(saved_stderr, STDERR_FILENO);
                close(saved_stderr);
        }
        CHECK(capture >= 0 && fstat(capture, &st) == 0 && st.st_size == 0);
        if (capture >= 0)
                close(capture);

        /* A terminating NUL counted in the size is fine. */
        {
                const char xml[] = "<domain><name>n</name><memory>1</memory></domain>";
                _cleanup_free_ char *error = NULL;
                _cleanup_(domain_def_freep) DomainDef *def = NULL;

                CHECK(domain_def_parse(xml, sizeof(xml), &def, &error) == 0);
        }
}

static void test_semantic_errors(void) {
        static const struct {
                const char *xml;
                int line;
                const char *message;
        } cases[] = {
                { "<foo/>", 1, "line 1: root element is <foo>, expected <domain>" },
                { "<x:domain xmlns:x='urn:x'/>", 1, "root element <domain> is in namespace 'urn:x', expected none" },
                { "<x:dom xmlns:x='urn:x'/>", 1, "root element is <x:dom>, expected <domain>" },
                { "<domain xmlns='urn:x'/>", 1, "in namespace 'urn:x'" },
                { "<domain>\n<memory>1</memory></domain>", 1, "<domain> has no <name>" },
                { "<domain>\n<name></name><memory>1</memory></domain>", 2, "<name> is empty" },
                { "<domain>\n<name> \n\t</name><memory>1</memory></domain>", 2, "<name> is empty" },
                { "<domain>\n<name>a</name>\n<name>b</name><memory>1</memory></domain>", 3, "more than once" },
                { "<domain>\n<name>a<b/></name><memory>1</memory></domain>", 2, "may only contain text" },
                { "<domain><name>a</name>\n</domain>", 1, "<domain> has no <memory>" },
                { "<domain>\n  <name>a</name>\n  <memory>lots</memory>\n</domain>", 3,
                  "line 3: <memory> is not a number: 'lots'" },
                { "<domain><name>a</name>\n<memory unit='parsecs'>1</memory></domain>", 2,
                  "<memory> has an unknown unit: 'parsecs'" },
                { "<domain><name>a</name>\n<memory unit=''>1</memory></domain>", 2, "unknown unit" },
                { "<domain><name>a</name>\n<memory>0</memory></domain>", 2, "<memory> must not be zero" },
                { "<domain><name>a</name>\n<memory>-1</memory></domain>", 2, "not a number: '-1'" },
                { "<domain><name>a</name>\n<memory>0x10</memory></domain>", 2, "not a number" },
                { "<domain><name>a</name>\n<memory>1.5</memory></domain>", 2, "not a number" },
                { "<domain><name>a</name>\n<memory></memory></domain>", 2, "not a number" },
                { "<domain><name>a</name>\n<memory>99999999999999999999999</memory></domain>", 2, "too large" },
                { "<domain><name>a</name>\n<memory unit='EiB'>16</memory></domain>", 2, "too large" },
                { "<domain><name>a</name>\n<memory>18014398509481984</memory></domain>", 2, "too large" },
                { "<domain><name>a</name><memory>1</memory>\n<currentMemory>2</currentMemory></domain>", 2,
                  "<currentMemory> (2 KiB) is larger than <memory> (1 KiB)" },
                { "<domain><name>a</name><memory>1</memory>\n<currentMemory>0</currentMemory></domain>", 2,
                  "must not be zero" },
                { "<domain><name>a</name><memory>1</memory>\n<vcpu>0</vcpu></domain>", 2, "<vcpu> must not be zero" },
                { "<domain><name>a</name><memory>1</memory>\n<vcpu>many</vcpu></domain>", 2, "'many'" },
                { "<domain><name>a</name><memory>1</memory>\n<vcpu>4294967296</vcpu></domain>", 2, "not a valid count" },
                { "<domain><name>a</name><memory>1</memory>\n<uuid>not-a-uuid</uuid></domain>", 2,
                  "<uuid> is not a valid UUID: 'not-a-uuid'" },
                { "<domain><name>a</name><memory>1</memory>\n<uuid>6b2c4e1a-0f3d-4c8b-9a7e-2d5f1c3b8e9</uuid></domain>",
                  2, "not a valid UUID" },
                { "<domain><name>a</name><memory>1</memory>\n<uuid>6b2c4e1a0-f3d-4c8b-9a7e-2d5f1c3b8e90</uuid></domain>",
                  2, "not a valid UUID" },
                { "<domain type='xen'><name>a</name><memory>1</memory></domain>", 1, "domain type 'xen' is not supported" },
                { "<domain><name>a</name><memory>1</memory><os>\n<type></type></os></domain>", 2, "<os><type> is empty" },
                { "<domain><name>a</name><memory>1</memory><os>\n<type arch=''>hvm</type></os></domain>", 2, "arch" },
                { "<domain><name>a</name><memory>1</memory><devices>\n<emulator>qemu</emulator></devices></domain>", 2,
                  "<emulator> 'qemu' is not an absolute path" },
                { "<domain><name>a</name><memory>1</memory>\nstray<devices/></domain>", 2,
                  "unexpected text in <domain>: 'stray'" },
                { "<domain><name>a</name><memory>1</memory><devices>\n"
                  "<disk type='block' device='disk'><source dev='/dev/sda'/><target dev='sda'/></disk>"
                  "</devices></domain>",
                  2, "only disk type='file' is supported" },
                { "<domain><name>a</name><memory>1</memory><devices>\n"
                  "<disk type='network'><source protocol='nbd'/><target dev='vda'/></disk></devices></domain>",
                  2, "only disk type='file' is supported" },
                { "<domain><name>a</name><memory>1</memory><devices>\n"
                  "<disk type='file' device='cdrom'><driver type='qcow2'/><source file='/a.iso'/><target dev='hdc'/></disk></devices></domain>",
                  2, "a CD-ROM's <driver type='qcow2'> is not supported: 'raw'" },
                { "<domain><name>a</name><memory>1</memory><devices>\n"
                  "<disk type='file' device='lun'><source file='/a'/><target dev='sda'/></disk></devices></domain>",
                  2, "device 'lun'" },
                { "<domain><name>a</name><memory>1</memory><devices><disk>\n"
                  "<driver name='tap'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
                  2, "disk driver name 'tap' is not supported" },
                { "<domain><name>a</name><memory>1</memory><devices><disk>\n"
                  "<driver name='qemu' type='vmdk'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
                  2, "disk driver type 'vmdk' is not supported" },
                { "<domain><name>a</name><memory>1</memory><devices>\n<disk>"
                  "<driver name='qemu' cache='fast'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
                  2, "disk driver cache 'fast' is not supported" },
                { "<domain><name>a</name><memory>1</memory><devices>\n<disk>"
                  "<driver name='qemu' cache='None'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
                  2, "disk driver cache 'None' is not supported" },
                { "<domain><name>a</name><memory>1</memory><devices>\n<disk>"
                  "<driver name='qemu' io='posix'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
                  2, "disk driver io 'posix' is not supported" },
                /* QEMU would refuse it at start: aio=native needs O_DIRECT. */
                { "<domain><name>a</name><memory>1</memory><devices>\n<disk>"
                  "<driver name='qemu' io='native'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
                  2, "io='native' needs cache='none' or cache='directsync'" },
                { "<domain><name>a</name><memory>1</memory><devices>\n<disk>"
                  "<driver name='qemu' cache='writeback' io='native'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
                  2, "not cache='writeback'" },
                { "<domain><name>a</name><memory>1</memory><devices>\n<disk>"
                  "<driver io='native' cache='unsafe'/><source file='/a'/><target dev='vda'/></disk></devices></domain>",
                  2, "not cache='unsafe'" },
                { "<domain><name>a</name><memory>1</memory><devices>\n<disk>"
                  "<target dev='vda'/></disk></devices></domain>",
                  2, "<disk> has no <source file=" },
                { "<domain><name>a</name><memory>1</memory><devices><disk>\n"
                  "<source/><target dev='vda'/></disk></devices></domain>",
                  2, "<source> has no file= attribute" },
                { "<domain><name>a</name><memory>1</memory><devices><disk>\n"
                  "<source file='images/a.qcow2'/><target dev='vda'/></disk></devices></domain>",
                  2, "<source file='images/a.qcow2'> is not an absolute path" },
                { "<domain><name>a</name><memory>1</memory><devices><disk>\n"
                  "<source file=''/><target dev='vda'/></disk></devices></domain>",
                  2, "is empty" },
                { "<domain><name>a</name><memory>1</memory><devices>\n<disk>"
                  "<source file='/a'/></disk></devices></domain>",
                  2, "disk '/a' has no <target dev=" },
                { "<domain><name>a</name><memory>1</memory><devices><disk><source file='/a'/>\n"
                  "<target bus='virtio'/></disk></devices></domain>",
                  2, "<target> has no dev= attribute" },
                { "<domain><name>a</name><memory>1</memory><devices><disk><source file='/a'/>\n"
                  "<target dev='VDA'/></disk></devices></domain>",
                  2, "<target dev='VDA'> must match" },
                { "<domain><name>a</name><memory>1</memory><devices><disk><source file='/a'/>\n"
                  "<target dev='vd-a'/></disk></devices></domain>",
                  2, "must match" },
                { "<domain><name>a</name><memory>1</memory><devices><disk><source file='/a'/>\n"
                  "<target dev='1vda'/></disk></devices></domain>",
                  2, "must match" },
                { "<domain><name>a</name><memory>1</memory><devices><disk><source file='/a'/>\n"
                  "<target dev='abcdefghijklmnopq'/></disk></devices></domain>",
                  2, "longer than 16" },
                { "<domain><name>a</name><memory>1</memory><devices><disk><source file='/a'/>\n"
                  "<target dev='vda' bus='pcie'/></disk></devices></domain>",
                  2, "<target bus='pcie'> is not a known disk bus" },
                { "<domain><name>a</name><memory>1</memory><devices>\n"
                  "<disk><source file='/a'/><target dev='vda'/></disk>\n"
                  "<disk><source file='/b'/><target dev='vda'/></disk></devices></domain>",
                  3, "disk target 'vda' is used more than once, first on line 2" },
                { "<domain><name>a</name><memory>1</memory><devices>\n"
                  "<disk><source file='/a'/><target dev='vdb'/></disk>\n"
                  "<disk><source file='/b'/><target dev='vda'/></disk>\n"
                  "<disk><source file='/c'/><target dev='vdb'/></disk>\n"
                  "<disk><source file='/d'/><target dev='vdb'/></disk></devices></domain>",
                  4, "disk target 'vdb' is used more than once, first on line 2" },
                { "<domain><name>a</name><memory>1</memory><devices><disk><source file='/a'/><target dev='vda'/>\n"
                  "<source file='/b'/></disk></devices></domain>",
                  2, "<source> appears more than once, first on line 1" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                parse_fails_str(cases[i].xml, -QSNAP_E_INVALID_XML, cases[i].line, cases[i].message);
}

static void test_memory_units(void) {
        static const struct {
                const char *unit;
                const char *value;
                uint64_t kib;
        } cases[] = {
                { NULL, "1024", 1024 },
                { "b", "1", 1 }, /* rounded up to whole KiB, as libvirt does */
                { "bytes", "2048", 2 },
                { "bytes", "2049", 3 },
                { "KB", "1024", 1000 },
                { "kb", "1024", 1000 },
                { "k", "7", 7 },
                { "KiB", "7", 7 },
                { "MB", "1", 977 },
                { "M", "1", 1024 },
                { "MiB", "3", 3072 },
                { "GB", "1", 976563 },
                { "G", "1", 1048576 },
                { "GiB", "4", 4194304 },
                { "gib", "4", 4194304 },
                { "TB", "1", 976562500 },
                { "T", "1", UINT64_C(1073741824) },
                { "TiB", "2", UINT64_C(2147483648) },
                { NULL, " 512\n", 512 },
                { NULL, "18014398509481983", UINT64_C(18014398509481983) }, /* largest writable */
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *unit = cases[i].unit ? strprintf(" unit='%s'", cases[i].unit) : strdup("");
                _cleanup_free_ char *xml = strprintf("<domain><name>u</name><memory%s>%s</memory></domain>", unit,
                                                     cases[i].value);
                _cleanup_(domain_def_freep) DomainDef *def = parse_ok(xml);
                _cleanup_free_ char *out = NULL;

                if (!def)
                        continue;
                n_checks++;
                if (def->memory_kib != cases[i].kib) {
                        n_failed++;
                        fprintf(stderr, "memory %s %s: got %" PRIu64 " KiB, want %" PRIu64 "\n",
                                strna(cases[i].unit), cases[i].value, def->memory_kib, cases[i].kib);
                }
                CHECK(def->current_memory_kib == def->memory_kib);
                out = check_round_trip(def);
        }
}

static const char *passwd_line(void) {
        static char line[64];
        FILE *f = fopen("/etc/passwd", "re");

        if (!f)
                return "root:x:0:0";
        if (!fgets(line, sizeof(line), f))
                strcpy(line, "root:x:0:0");
        fclose(f);
        line[strcspn(line, "\n")] = '\0';
        return line;
}

static void check_rejected_no_leak(const char *xml, const char *secret) {
        _cleanup_free_ char *error = NULL;
        DomainDef *def = NULL;
        int r;

        r = domain_def_parse(xml, strlen(xml), &def, &error);
        CHECK(r == -QSNAP_E_INVALID_XML);
        CHECK(!def);
        CHECK(error);
        if (error && secret)
                CHECK(!strstr(error, secret));
        if (r >= 0)
                domain_def_free(def);
}

static void test_entities(void) {
        _cleanup_free_ char *laughs = read_fixture("billion-laughs.xml", NULL);
        _cleanup_free_ char *xxe = read_fixture("xxe.xml", NULL);
        const char *secret = passwd_line();

        parse_fails_str(laughs, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'lol'");
        parse_fails_str(xxe, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'xxe'");
        check_rejected_no_leak(xxe, secret);

        /* Parameter entities, external DTDs, references to undeclared
         * entities, and DTD defaults that would change attribute values. */
        check_rejected_no_leak("<!DOCTYPE domain [\n<!ENTITY % p SYSTEM 'file:///etc/passwd'>\n%p;\n]>"
                               "<domain><name>a</name><memory>1</memory></domain>",
                               secret);
        check_rejected_no_leak("<!DOCTYPE domain SYSTEM 'file:///etc/passwd'>\n"
                               "<domain><name>&xxe;</name><memory>1</memory></domain>",
                               secret);
        check_rejected_no_leak("<!DOCTYPE domain PUBLIC '-//x//y' 'http://127.0.0.1:9/x.dtd'>\n"
                               "<domain><name>&ext;</name><memory>1</memory></domain>",
                               secret);
        check_rejected_no_leak("<domain><name>&undeclared;</name><memory>1</memory></domain>", secret);
        parse_fails_str("<!DOCTYPE domain [\n<!ATTLIST domain type CDATA 'xen'>\n]>"
                        "<domain><name>a</name><memory>1</memory></domain>",
                        -QSNAP_E_INVALID_XML, 2, "DTD attribute declarations are not allowed");
        parse_fails_str("<!DOCTYPE domain [\n<!ELEMENT domain ANY>\n]><domain><name>a</name><memory>1</memory></domain>",
                        -QSNAP_E_INVALID_XML, 2, "DTD element declarations are not allowed");

        /* A bare DOCTYPE declares nothing and is harmless. */
        {
                _cleanup_(domain_def_freep) DomainDef *def =
                        parse_ok("<!DOCTYPE domain><domain><name>a</name><memory>1</memory></domain>");
                CHECK(def);
        }

        /* XInclude is never processed: kept verbatim as an unknown element. */
        {
                _cleanup_(domain_def_freep) DomainDef *def = parse_ok(
                        "<domain xmlns:xi='http://www.w3.org/2001/XInclude'><name>a</name><memory>1</memory>"
                        "<xi:include href='/etc/passwd' parse='text'/></domain>");
                _cleanup_free_ char *out = NULL;

                if (def) {
                        CHECK(strv_length(def->extra_domain) == 1);
                        out = format_ok(def, 0);
                        CHECK(out && !strstr(out, secret));
                }
        }
}

static void test_size_limit(void) {
        static const char head[] = "<domain><name>big</name><memory>1</memory>";
        static const char tail[] = "</domain>";
        size_t size = XML_MAX_DOCUMENT_SIZE;
        _cleanup_free_ char *xml = malloc(size + 2);
        _cleanup_free_ char *error = NULL;
        DomainDef *def = NULL;

        if (!xml)
                abort();
        /* Exactly at the limit: fine. */
        memset(xml, ' ', size + 1);
        memcpy(xml, head, strlen(head));
        memcpy(xml + size - strlen(tail), tail, strlen(tail));
        xml[size] = '\0';
        CHECK(domain_def_parse(xml, size, &def, &error) == 0);
        CHECK(def && streq(def->name, "big"));
        def = domain_def_free(def);

        /* One byte more: refused before parsing. */
        memcpy(xml + size - strlen(tail), "   ", 3);
        memcpy(xml + size + 1 - strlen(tail), tail, strlen(tail));
        xml[size + 1] = '\0';
        parse_fails(xml, size + 1, -QSNAP_E_INVALID_XML, 0, "larger than the limit of 4194304 bytes");
        CHECK(domain_def_parse(xml, SIZE_MAX, &def, NULL) == -QSNAP_E_INVALID_XML);
        CHECK(!def);
}

/* Inputs that would make a naive parser (or libxml2 2.9) take quadratic
 * time must be refused or handled in linear time. */
static void test_pathological(void) {
        _cleanup_free_ char *attrs = NULL, *attrs_ok = NULL, *ns = NULL, *many = NULL, *lines = NULL;
        _cleanup_(domain_def_freep) DomainDef *def = NULL, *def2 = NULL;
        char *p;

        /* 257 attributes on one element; 256 is fine. */
        attrs = malloc(257 * 16 + 128);
        attrs_ok = malloc(257 * 16 + 128);
        ns = malloc(129 * 24 + 128);
        if (!attrs || !attrs_ok || !ns)
                abort();
        p = stpcpy(attrs, "<domain><name>a</name>\n<memory>1</memory><x");
        for (int i = 0; i < 257; i++)
                p += sprintf(p, " a%d='='", i);
        strcpy(p, "/></domain>");
        parse_fails_str(attrs, -QSNAP_E_INVALID_XML, 2, "element has more than 256 attributes");
        p = stpcpy(attrs_ok, "<domain><name>a</name><memory>1</memory><x");
        for (int i = 0; i < 256; i++)
                p += sprintf(p, " a%d='='", i);
        strcpy(p, "><![CDATA[ a= ]]></x><!-- a= b= --></domain>");
        def = parse_ok(attrs_ok);
        CHECK(def && strv_length(def->extra_domain) == 1);

        p = stpcpy(ns, "<domain\n");
        for (int i = 0; i < 129; i++)
                p += sprintf(p, " xmlns:p%d='urn:%d'", i, i);
        strcpy(p, "><name>a</name><memory>1</memory></domain>");
        parse_fails_str(ns, -QSNAP_E_INVALID_XML, 1, "document declares more than 128 namespaces");

        /* A quarter of a million unknown elements: quick, not quadratic. */
        many = malloc(250000 * 4 + 128);
        if (!many)
                abort();
        p = stpcpy(many, "<domain><name>a</name><memory>1</memory><devices>");
        for (int i = 0; i < 250000; i++)
                p = stpcpy(p, "<a/>");
        strcpy(p, "</devices></domain>");
        def2 = parse_ok(many);
        CHECK(def2 && strv_length(def2->extra_devices) == 250000);

        /* Line numbers past 65535 are right. */
        lines = malloc(70000 + 128);
        if (!lines)
                abort();
        p = stpcpy(lines, "<domain><name>a</name>");
        memset(p, '\n', 70000);
        strcpy(p + 70000, "<memory>lots</memory></domain>");
        parse_fails_str(lines, -QSNAP_E_INVALID_XML, 70001, "<memory> is not a number");
        p[70000 + 14] = 'X'; /* </Xemory> */
        parse_fails_str(lines, -QSNAP_E_INVALID_XML, 70001, "Opening and ending tag mismatch");
}

static void test_unknown_attributes(void) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        _cleanup_free_ char *out = NULL;

        def = parse_ok("<domain xmlns:x='urn:x' xmlns:unused='urn:unused'><name>a</name><memory>1</memory><devices>"
                       "<disk type='file' device='disk' weird='&lt;&amp;&gt;&apos;&quot;&#9;' x:ns='1' "
                       "xmlns:y='urn:y' y:other='2' xml:lang='en'>"
                       "<driver name='qemu' type='raw' x:hint='fast'/><source file='/a'/><target dev='vda'/>"
                       "<x:extra note='kept'/></disk></devices></domain>");
        if (!def)
                return;
        CHECK(strv_equal(def->extra_domain_attributes,
                         (char *[]) { "xmlns:x=\"urn:x\"", "xmlns:unused=\"urn:unused\"", NULL }));
        CHECK(strv_equal(def->disks[0].extra_attributes,
                         (char *[]) {
                                 "xmlns:y=\"urn:y\"",
                                 "xmlns:x=\"urn:x\"",
                                 "weird=\"&lt;&amp;&gt;&apos;&quot;&#9;\"",
                                 "x:ns=\"1\"",
                                 "y:other=\"2\"",
                                 "xml:lang=\"en\"",
                                 NULL,
                         }));
        CHECK(strv_equal(def->disks[0].extra_driver_attributes,
                         (char *[]) { "xmlns:x=\"urn:x\"", "x:hint=\"fast\"", NULL }));
        CHECK(strv_equal(def->disks[0].extra_elements,
                         (char *[]) { "<x:extra xmlns:x=\"urn:x\" note=\"kept\"/>", NULL }));
        out = check_round_trip(def);
}

static void test_extras(void) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL;
        _cleanup_free_ char *out = NULL;

        /* Order kept; mixed content, CDATA and comments inside kept elements
         * are verbatim; comments between modelled elements are dropped. */
        def = parse_ok("<domain>\n"
                       "  <!-- dropped -->\n"
                       "  <first/>\n"
                       "  <name>e</name>\n"
                       "  <note lang='en'>Hello <b>big</b> world, <![CDATA[<raw & cdata>]]></note>\n"
                       "  <memory>1</memory>\n"
                       "  <os>\n"
                       "    <boot dev='network'/>\n"
                       "    <type>hvm</type>\n"
                       "    <bootmenu enable='yes'/>\n"
                       "  </os>\n"
                       "  <last>\n"
                       "        <deep>\n"
                       "<deeper/>\n"
                       "  <!-- kept -->\n"
                       "</deep>\n"
                       "  </last>\n"
                       "</domain>\n");
        if (!def)
                return;
        CHECK(strv_equal(def->extra_domain,
                         (char *[]) {
                                 "<first/>",
                                 "<note lang=\"en\">Hello <b>big</b> world, <![CDATA[<raw & cdata>]]></note>",
                                 "<last>\n    <deep>\n      <deeper/>\n      <!-- kept -->\n    </deep>\n  </last>",
                                 NULL,
                         }));
        CHECK(strv_equal(def->extra_os, (char *[]) { "<boot dev=\"network\"/>", "<bootmenu enable=\"yes\"/>", NULL }));
        out = check_round_trip(def);
        CHECK_CONTAINS(out, "  <os>\n    <type>hvm</type>\n    <boot dev=\"network\"/>\n    <bootmenu enable=\"yes\"/>\n  </os>\n");
        CHECK_CONTAINS(out, "  </os>\n  <first/>\n  <note");
        CHECK_CONTAINS(out, "  <last>\n    <deep>\n      <deeper/>\n      <!-- kept -->\n    </deep>\n  </last>\n  <devices>\n");
        CHECK(!strstr(out, "dropped"));
}

/* GetXMLDesc without SECURE leaves <graphics passwd=…> out, wherever the
 * kept element sits; SECURE (what is stored) keeps it. */
static void test_secrets(void) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL, *again = NULL;
        _cleanup_free_ char *hidden = NULL, *secure = NULL, *error = NULL;

        def = parse_ok("<domain>\n"
                       "  <name>s</name>\n"
                       "  <memory>1</memory>\n"
                       "  <devices>\n"
                       "    <graphics type='vnc' port='-1' passwd='vnc-s3cret' passwdValidTo='2030-01-01T00:00:00'/>\n"
                       "    <graphics type='spice' autoport='yes' passwd='spice-s3cret'>\n"
                       "      <listen type='address' address='127.0.0.1'/>\n"
                       "    </graphics>\n"
                       "    <shmem><model type='passwd graphics'/></shmem>\n"
                       "  </devices>\n"
                       "  <wrapper><graphics type='rdp' passwd='rdp-s3cret'/></wrapper>\n"
                       "</domain>\n");
        if (!def)
                return;
        hidden = format_ok(def, 0);
        secure = format_ok(def, DOMAIN_FORMAT_SECURE);
        if (!hidden || !secure)
                return;
        CHECK(!strstr(hidden, "s3cret"));
        CHECK(!strstr(hidden, " passwd="));
        CHECK_CONTAINS(hidden, "<graphics type=\"vnc\" port=\"-1\" passwdValidTo=\"2030-01-01T00:00:00\"/>");
        CHECK_CONTAINS(hidden, "    <graphics type=\"spice\" autoport=\"yes\">\n"
                               "      <listen type=\"address\" address=\"127.0.0.1\"/>\n"
                               "    </graphics>\n");
        CHECK_CONTAINS(hidden, "<wrapper>\n    <graphics type=\"rdp\"/>\n  </wrapper>");
        CHECK_CONTAINS(hidden, "<model type=\"passwd graphics\"/>");
        CHECK_CONTAINS(secure, "passwd=\"vnc-s3cret\"");
        CHECK_CONTAINS(secure, "passwd=\"spice-s3cret\"");
        CHECK_CONTAINS(secure, "passwd=\"rdp-s3cret\"");
        /* The output without secrets is a valid definition too. */
        CHECK(domain_def_parse(hidden, strlen(hidden), &again, &error) == 0);
        CHECK(!error);
}

/* Anything in libvirt's QEMU namespace is passthrough (host-admin). */
static void test_qemu_passthrough(void) {
        static const struct {
                const char *xml;
                bool passthrough;
        } cases[] = {
                { "<domain><name>q</name><memory>1</memory></domain>", false },
                { "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>q</name><memory>1</memory>"
                  "<qemu:commandline><qemu:arg value='-S'/></qemu:commandline></domain>", true },
                { "<domain><name>q</name><memory>1</memory><devices><x xmlns='http://libvirt.org/schemas/domain/qemu/1.0'/>"
                  "</devices></domain>", true },
                { "<domain xmlns:q='http://libvirt.org/schemas/domain/qemu/1.0'><name>q</name><memory>1</memory>"
                  "<os><type>hvm</type><boot q:dev='x'/></os></domain>", true },
                /* The namespace declared, nothing in it used. */
                { "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>q</name><memory>1</memory></domain>",
                  false },
                { "<domain xmlns:qemu='http://example.org/not-qemu'><name>q</name><memory>1</memory>"
                  "<qemu:commandline/></domain>", false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(domain_def_freep) DomainDef *def = parse_ok(cases[i].xml), *copy = NULL;

                if (!def)
                        continue;
                CHECK(def->qemu_passthrough == cases[i].passthrough);
                CHECK(domain_def_copy(def, &copy) == 0);
                CHECK(copy && copy->qemu_passthrough == cases[i].passthrough);
        }
}

/* UEFI: <loader>/<nvram> modelled and written back; what qsnapd cannot
 * run is refused with the reason; the guest agent channel is noted. */
static void test_firmware_and_agent(void) {
        static const char *const xml =
                "<domain><name>u</name><memory>1</memory><os><type>hvm</type>\n"
                "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\n"
                "<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd' format='qcow2'>/v/u_VARS.qcow2</nvram>\n"
                "<boot dev='hd'/></os><devices><channel type='unix'><source mode='bind'/>"
                "<target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices></domain>";
        static const struct {
                const char *xml;
                const char *message;
        } bad[] = {
                { "<domain><name>u</name><memory>1</memory><os>\n<loader type='rom'>/f</loader></os></domain>",
                  "line 2: <loader type='rom'>: qsnapd runs firmware as pflash only" },
                { "<domain><name>u</name><memory>1</memory><os>\n<loader type='pflash'>/f</loader></os></domain>",
                  "line 2: <loader> must be readonly='yes'" },
                { "<domain><name>u</name><memory>1</memory><os>\n<loader readonly='yes' type='pflash'>f</loader></os>"
                  "</domain>", "line 2: <loader> 'f'" },
                { "<domain><name>u</name><memory>1</memory>\n<os><nvram>/v</nvram></os></domain>",
                  "line 2: <nvram> needs a <loader type='pflash'>" },
                { "<domain><name>u</name><memory>1</memory><os><loader readonly='yes' type='pflash'>/f</loader>\n"
                  "<nvram format='vmdk'>/v</nvram></os></domain>", "line 2: <nvram format='vmdk'>: raw or qcow2" },
                { "<domain><name>u</name><memory>1</memory><devices>\n<channel type='pty'>"
                  "<target type='virtio' name='org.qemu.guest_agent.0'/></channel></devices></domain>",
                  "line 2: the guest agent <channel> must be type='unix'" },
        };
        _cleanup_(domain_def_freep) DomainDef *def = parse_ok(xml), *again = NULL, *copy = NULL;
        _cleanup_free_ char *out = NULL, *out2 = NULL;

        if (!def)
                return;
        CHECK_STREQ(def->firmware.loader, "/usr/share/OVMF/OVMF_CODE_4M.fd");
        CHECK_STREQ(def->firmware.nvram, "/v/u_VARS.qcow2");
        CHECK_STREQ(def->firmware.nvram_template, "/usr/share/OVMF/OVMF_VARS_4M.fd");
        CHECK(def->firmware.nvram_format == DISK_FORMAT_QCOW2);
        CHECK(def->agent_channel);
        out = format_ok(def, 0);
        CHECK_CONTAINS(out, "<loader readonly=\"yes\" type=\"pflash\">/usr/share/OVMF/OVMF_CODE_4M.fd</loader>\n"
                            "    <nvram template=\"/usr/share/OVMF/OVMF_VARS_4M.fd\" format=\"qcow2\">/v/u_VARS.qcow2</nvram>\n"
                            "    <boot dev=");
        CHECK(strstr(out, "<boot dev=")); /* kept, after the firmware */
        again = parse_ok(out);
        CHECK(again && again->agent_channel && again->firmware.nvram_format == DISK_FORMAT_QCOW2);
        out2 = again ? format_ok(again, 0) : NULL;
        CHECK_STREQ(out, out2);
        CHECK(domain_def_copy(def, &copy) == 0);
        CHECK(copy && streq_ptr(copy->firmware.nvram, def->firmware.nvram) && copy->agent_channel);
        for (size_t i = 0; i < ELEMENTSOF(bad); i++)
                parse_fails(bad[i].xml, strlen(bad[i].xml), -QSNAP_E_INVALID_XML, 0, bad[i].message);
}

static void test_backing_chain(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("two-disks.xml"), *back = NULL;
        _cleanup_free_ char *out = NULL, *plain = NULL, *empty = NULL;
        DomainDisk *vda;

        if (!def)
                return;
        vda = domain_def_find_disk(def, "vda");
        if (!vda)
                return;

        /* Known to have no backing file: just the terminator. */
        vda->backing_chain = calloc(1, sizeof(char *));
        empty = format_ok(def, DOMAIN_FORMAT_BACKING_CHAIN);
        CHECK_CONTAINS(empty, "      <source file='/var/lib/qsnap/images/system.qcow2'/>\n"
                              "      <backingStore/>\n"
                              "      <target dev='vda' bus='virtio'/>\n");

        CHECK(strv_extend(&vda->backing_chain, "/images/mid.qcow2") == 0);
        CHECK(strv_extend(&vda->backing_chain, "/images/base <&>.raw") == 0);
        vda->backing_formats = calloc(2, sizeof(DiskFormat));
        if (!vda->backing_formats)
                abort();
        vda->backing_formats[0] = DISK_FORMAT_QCOW2;
        vda->backing_formats[1] = DISK_FORMAT_RAW;

        out = format_ok(def, DOMAIN_FORMAT_BACKING_CHAIN);
        CHECK_CONTAINS(out, "      <source file='/var/lib/qsnap/images/system.qcow2'/>\n"
                            "      <backingStore type='file' index='1'>\n"
                            "        <format type='qcow2'/>\n"
                            "        <source file='/images/mid.qcow2'/>\n"
                            "        <backingStore type='file' index='2'>\n"
                            "          <format type='raw'/>\n"
                            "          <source file='/images/base &lt;&amp;&gt;.raw'/>\n"
                            "          <backingStore/>\n"
                            "        </backingStore>\n"
                            "      </backingStore>\n"
                            "      <target dev='vda' bus='virtio'/>\n");

        /* Output only: without the flag nothing, and reading ignores it. */
        plain = format_ok(def, 0);
        CHECK(plain && !strstr(plain, "backingStore"));
        back = out ? parse_ok(out) : NULL;
        if (back) {
                CHECK(!back->disks[0].backing_chain);
                back->disks[0].backing_chain = strv_free(back->disks[0].backing_chain);
                strv_free(vda->backing_chain);
                free(vda->backing_formats);
                vda->backing_chain = NULL;
                vda->backing_formats = NULL;
                CHECK(def_equal(def, back));
        }
}

static void test_copy(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("libvirt-full.xml"), *copy = NULL, *copy2 = NULL;
        _cleanup_free_ char *a = NULL, *b = NULL;

        if (!def)
                return;
        def->disks[0].backing_chain = calloc(2, sizeof(char *));
        def->disks[0].backing_chain[0] = strdup("/base.qcow2");
        def->disks[0].backing_formats = calloc(1, sizeof(DiskFormat));
        def->disks[1].backing_chain = calloc(1, sizeof(char *)); /* empty, not NULL */
        CHECK(free_and_strdup(&def->monitor_path, "/run/x.sock") == 0);

        CHECK(domain_def_copy(def, &copy) == 0);
        if (!copy)
                return;
        CHECK(copy != def && copy->disks != def->disks && copy->name != def->name);
        CHECK(copy->extra_domain != def->extra_domain && copy->extra_domain[0] != def->extra_domain[0]);
        CHECK(def_equal(def, copy));
        CHECK(copy->disks[1].backing_chain && !copy->disks[1].backing_chain[0]);
        CHECK(!copy->disks[1].backing_formats);

        a = format_ok(def, DOMAIN_FORMAT_BACKING_CHAIN);
        b = format_ok(copy, DOMAIN_FORMAT_BACKING_CHAIN);
        CHECK_STREQ(a, b);

        /* Independent: freeing the original leaves the copy whole (ASan). */
        def = domain_def_free(def);
        CHECK_STREQ(copy->name, "fedora-workstation");
        CHECK_STREQ(copy->disks[0].backing_chain[0], "/base.qcow2");

        {
                DomainDef empty = { .name = (char *) "e", .memory_kib = 1 };
                CHECK(domain_def_copy(&empty, &copy2) == 0);
                CHECK(copy2 && copy2->n_disks == 0 && !copy2->disks && !copy2->extra_domain);
        }
        CHECK(domain_def_free(NULL) == NULL);
}

static void test_disk_format_strings(void) {
        CHECK_STREQ(disk_format_to_string(DISK_FORMAT_QCOW2), "qcow2");
        CHECK_STREQ(disk_format_to_string(DISK_FORMAT_RAW), "raw");
        CHECK(!disk_format_to_string(_DISK_FORMAT_MAX));
        CHECK(!disk_format_to_string(_DISK_FORMAT_INVALID));
        CHECK(disk_format_from_string("qcow2") == DISK_FORMAT_QCOW2);
        CHECK(disk_format_from_string("raw") == DISK_FORMAT_RAW);
        CHECK(disk_format_from_string("QCOW2") == -EINVAL);
        CHECK(disk_format_from_string("vmdk") == -EINVAL);
        CHECK(disk_format_from_string(NULL) == -EINVAL);
}

/* BlockCopy's <disk> destination: the file and format, or an error naming
 * the line; the hardened parser refuses what DefineDomain refuses. */
static void check_copy_dest_bad(const char *xml, int expected, const char *needle) {
        _cleanup_free_ char *file = NULL, *error = NULL;
        DiskFormat format = DISK_FORMAT_QCOW2;
        int r = domain_copy_dest_parse(xml, strlen(xml), &file, &format, &error);

        CHECK(r == expected);
        CHECK(!file);
        CHECK(error);
        if (error)
                CHECK_CONTAINS(error, needle);
}

/* <driver cache= io=>: every libvirt value read, written back in place,
 * mapped as libvirt maps it; cache='default' and io='default' read as
 * absent (libvirt writes nothing for them either). */
static void test_disk_cache(void) {
        static const struct {
                const char *cache, *io;
                DiskCache want_cache;
                DiskIo want_io;
                bool flags, write_cache, direct, no_flush;
        } cases[] = {
                { NULL, NULL, DISK_CACHE_DEFAULT, DISK_IO_DEFAULT, false, false, false, false },
                { "default", "default", DISK_CACHE_DEFAULT, DISK_IO_DEFAULT, false, false, false, false },
                { "none", NULL, DISK_CACHE_NONE, DISK_IO_DEFAULT, true, true, true, false },
                { "none", "native", DISK_CACHE_NONE, DISK_IO_NATIVE, true, true, true, false },
                { "directsync", "native", DISK_CACHE_DIRECTSYNC, DISK_IO_NATIVE, true, false, true, false },
                { "writethrough", "threads", DISK_CACHE_WRITETHROUGH, DISK_IO_THREADS, true, false, false, false },
                { "writeback", "io_uring", DISK_CACHE_WRITEBACK, DISK_IO_IO_URING, true, true, false, false },
                { "unsafe", NULL, DISK_CACHE_UNSAFE, DISK_IO_DEFAULT, true, true, false, true },
                { NULL, "threads", DISK_CACHE_DEFAULT, DISK_IO_THREADS, false, false, false, false },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_(domain_def_freep) DomainDef *def = NULL;
                _cleanup_free_ char *xml = NULL, *out = NULL, *want = NULL;
                bool write_cache = false, direct = false, no_flush = false;

                xml = strprintf("<domain><name>c</name><memory>1</memory><devices><disk type='file' device='disk'>"
                                "<driver name='qemu' type='qcow2'%s%s%s%s%s%s discard='unmap'/><source file='/a'/>"
                                "<target dev='vda'/></disk></devices></domain>",
                                cases[i].cache ? " cache='" : "", strempty(cases[i].cache), cases[i].cache ? "'" : "",
                                cases[i].io ? " io='" : "", strempty(cases[i].io), cases[i].io ? "'" : "");
                def = parse_ok(xml);
                if (!def || def->n_disks != 1)
                        continue;
                CHECK(def->disks[0].cache == cases[i].want_cache);
                CHECK(def->disks[0].io == cases[i].want_io);
                CHECK(strv_equal(def->disks[0].extra_driver_attributes, (char *[]) { "discard=\"unmap\"", NULL }));
                CHECK(disk_cache_flags(def->disks[0].cache, &write_cache, &direct, &no_flush) == cases[i].flags);
                CHECK(write_cache == cases[i].write_cache && direct == cases[i].direct && no_flush == cases[i].no_flush);

                out = check_round_trip(def);
                want = strprintf("<driver name='qemu' type='qcow2'%s%s%s%s%s%s discard=\"unmap\"/>",
                                 cases[i].want_cache ? " cache='" : "",
                                 cases[i].want_cache ? disk_cache_to_string(cases[i].want_cache) : "",
                                 cases[i].want_cache ? "'" : "", cases[i].want_io ? " io='" : "",
                                 cases[i].want_io ? disk_io_to_string(cases[i].want_io) : "",
                                 cases[i].want_io ? "'" : "");
                CHECK_CONTAINS(out, want);
        }
        /* Out of range: no flags, nothing touched. */
        {
                bool w = true;
                CHECK(!disk_cache_flags(_DISK_CACHE_MAX, &w, NULL, NULL) && w);
                CHECK(!disk_cache_flags(_DISK_CACHE_INVALID, NULL, NULL, NULL));
        }
}

/* libvirt's I/O threads: <iothreads> alone gives ids 1..N, <iothreadids>
 * come first and the count fills the lowest unused ids; both elements are
 * written back as they were, iothread= in its <driver>; what qsnapd would
 * not honour is refused by name. */
static void test_iothreads(void) {
        static const struct {
                const char *head;
                size_t n;
                unsigned ids[4];
        } ok[] = {
                { "<iothreads>2</iothreads>", 2, { 1, 2 } },
                { "<iothreads>3</iothreads><iothreadids><iothread id='2'/></iothreadids>", 3, { 2, 1, 3 } },
                { "<iothreadids><iothread id='7'/><iothread id='4'/></iothreadids><iothreads>1</iothreads>", 2, { 7, 4 } },
                { "<iothreads>0</iothreads>", 0, {} },
                { "", 0, {} },
        };
        static const struct {
                const char *head, *driver, *bus, *message;
        } bad[] = {
                { "<iothreads>2</iothreads>", "iothread='3'", "virtio",
                  "disk 'vda': <driver iothread='3'> names no I/O thread of the domain (2 defined" },
                { "", "iothread='1'", "virtio", "names no I/O thread" },
                { "<iothreads>1</iothreads>", "iothread='1'", "sata",
                  "disk 'vda': <driver iothread='1'> needs <target bus='virtio'>, not bus='sata'" },
                { "<iothreads>1</iothreads>", "iothread='0'", "virtio", "<driver iothread='0'> must be a number from 1" },
                { "<iothreads>1</iothreads>", "iothread='x'", "virtio", "must be a number" },
                { "<iothreads>two</iothreads>", "", "virtio", "<iothreads> is not a valid count: 'two'" },
                { "<iothreads>257</iothreads>", "", "virtio", "<iothreads> 257 is more than qsnapd's limit of 256" },
                { "<iothreads>1</iothreads><iothreads>1</iothreads>", "", "virtio", "more than once" },
                { "<iothreadids><iothread id='1'/><iothread id='1'/></iothreadids>", "", "virtio",
                  "<iothread id='1'> appears more than once" },
                { "<iothreadids><iothread id='0'/></iothreadids>", "", "virtio", "must be a number from 1" },
                { "<iothreadids><iothread/></iothreadids>", "", "virtio", "<iothread> has no id= attribute" },
                { "<iothreadids><thread id='1'/></iothreadids>", "", "virtio", "may only hold <iothread id=…/>, not <thread>" },
                { "<iothreadids><iothread id='1' thread_pool_max='4'/></iothreadids>", "", "virtio",
                  "<iothread thread_pool_max=…> is not supported" },
                { "<iothreadids><iothread id='1'><poll max='1'/></iothread></iothreadids>", "", "virtio",
                  "<iothread><poll> is not supported" },
                { "<iothreads>1</iothreads><cputune><iothreadpin iothread='1' cpuset='0'/></cputune>", "", "virtio",
                  "<cputune><iothreadpin> is not supported" },
                { "<defaultiothread thread_pool_max='2'/>", "", "virtio", "<defaultiothread> is not supported" },
        };

        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                _cleanup_(domain_def_freep) DomainDef *def = NULL, *copy = NULL;
                _cleanup_free_ char *xml = NULL, *out = NULL;

                _cleanup_free_ char *attr = ok[i].n > 0 ? strprintf(" iothread='%u'", ok[i].ids[0]) : strdup("");
                _cleanup_free_ char *want = NULL;

                xml = strprintf("<domain><name>io</name><memory>1</memory>%s<devices><disk>"
                                "<driver name='qemu' type='qcow2'%s discard='unmap'/><source file='/a'/>"
                                "<target dev='vda'/></disk></devices></domain>",
                                ok[i].head, strempty(attr));
                def = parse_ok(xml);
                if (!def)
                        continue;
                CHECK(def->n_iothread_ids == ok[i].n);
                for (size_t j = 0; j < ok[i].n && j < def->n_iothread_ids; j++)
                        CHECK(def->iothread_ids[j] == ok[i].ids[j]);
                CHECK(def->disks[0].iothread == (ok[i].n > 0 ? ok[i].ids[0] : 0U));
                CHECK(strv_equal(def->disks[0].extra_driver_attributes, (char *[]) { "discard=\"unmap\"", NULL }));
                out = check_round_trip(def);
                if (ok[i].n > 0) {
                        want = strprintf("<driver name='qemu' type='qcow2' iothread='%u' discard=\"unmap\"/>", ok[i].ids[0]);
                        CHECK_CONTAINS(out, want);
                        CHECK_CONTAINS(out, "<iothread");
                }
                CHECK(domain_def_copy(def, &copy) == 0);
                if (copy) {
                        CHECK(def_equal(def, copy) && copy->n_iothread_ids == def->n_iothread_ids);
                        CHECK(copy->n_iothread_ids == 0 ||
                              memcmp(copy->iothread_ids, def->iothread_ids, def->n_iothread_ids * sizeof(unsigned)) == 0);
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                _cleanup_(domain_def_freep) DomainDef *def = NULL;
                _cleanup_free_ char *xml = NULL, *error = NULL;

                xml = strprintf("<domain><name>io</name><memory>1</memory>%s<devices><disk>"
                                "<driver name='qemu' type='qcow2' %s/><source file='/a'/>"
                                "<target dev='vda' bus='%s'/></disk></devices></domain>",
                                bad[i].head, bad[i].driver, bad[i].bus);
                CHECK(xml && domain_def_parse(xml, strlen(xml), &def, &error) == -QSNAP_E_INVALID_XML);
                CHECK(!def);
                if (!error || !strstr(error, bad[i].message))
                        fprintf(stderr, "case %zu: %s\n", i, strna(error));
                CHECK_CONTAINS(error, bad[i].message);
        }
        /* virtio-scsi's controller iothread: refused, not ignored. */
        {
                _cleanup_(domain_def_freep) DomainDef *def = NULL;
                _cleanup_free_ char *error = NULL;
                const char *xml = "<domain><name>io</name><memory>1</memory><iothreads>1</iothreads><devices>\n"
                                  "<controller type='scsi' model='virtio-scsi'><driver iothread='1'/></controller>"
                                  "</devices></domain>";

                CHECK(domain_def_parse(xml, strlen(xml), &def, &error) == -QSNAP_E_INVALID_XML);
                CHECK_CONTAINS(error, "line 2: <controller><driver iothread=…> is not supported");
        }
        /* A CD-ROM (parsed as a device, never one of the disks) neither. */
        {
                _cleanup_(domain_def_freep) DomainDef *def = NULL;
                _cleanup_free_ char *error = NULL;
                const char *xml = "<domain><name>io</name><memory>1</memory><iothreads>1</iothreads><devices>"
                                  "<disk type='file' device='cdrom'>\n<driver name='qemu' type='raw' iothread='1'/>"
                                  "<target dev='sda' bus='sata'/></disk></devices></domain>";

                CHECK(domain_def_parse(xml, strlen(xml), &def, &error) == -QSNAP_E_INVALID_XML);
                CHECK_CONTAINS(error, "line 2: <disk><driver iothread=…> is not supported");
        }
}

static void test_copy_dest(void) {
        _cleanup_free_ char *file = NULL, *file2 = NULL, *error = NULL;
        DiskFormat format = _DISK_FORMAT_INVALID;

        CHECK(domain_copy_dest_parse("<disk type='file'>\n  <source file='/images/copy.qcow2'/>\n"
                                     "  <driver type='raw'/>\n  <target dev='vda'/>\n</disk>",
                                     strlen("<disk type='file'>\n  <source file='/images/copy.qcow2'/>\n"
                                            "  <driver type='raw'/>\n  <target dev='vda'/>\n</disk>"),
                                     &file, &format, &error) == 0);
        CHECK_STREQ(file, "/images/copy.qcow2");
        CHECK(format == DISK_FORMAT_RAW);
        /* No <driver type>: the caller decides. */
        CHECK(domain_copy_dest_parse("<disk><source file='/a b/c'/></disk>", strlen("<disk><source file='/a b/c'/></disk>"),
                                     &file2, &format, &error) == 0);
        CHECK_STREQ(file2, "/a b/c");
        CHECK(format == _DISK_FORMAT_INVALID);

        check_copy_dest_bad("<disk type='file'><source file='/x'/>", -QSNAP_E_INVALID_XML, "line 1");
        check_copy_dest_bad("<domain/>", -QSNAP_E_INVALID_XML, "<disk>");
        check_copy_dest_bad("<disk type='block'><source dev='/dev/sda'/></disk>", -QSNAP_E_INVALID_XML, "block");
        check_copy_dest_bad("<disk type='file'>\n<driver type='qcow2'/>\n</disk>", -QSNAP_E_INVALID_XML, "line 1");
        check_copy_dest_bad("<disk>\n<source file='rel.qcow2'/></disk>", -QSNAP_E_INVALID_XML, "line 2");
        check_copy_dest_bad("<disk><source file='/x'/><driver type='vmdk'/></disk>", -QSNAP_E_INVALID_XML, "vmdk");
        check_copy_dest_bad("<disk><source file='/x'/>\n<source file='/y'/></disk>", -QSNAP_E_INVALID_XML, "more than once");
        check_copy_dest_bad("<!DOCTYPE d [<!ENTITY e 'x'>]><disk><source file='/&e;'/></disk>", -QSNAP_E_INVALID_XML, "");
        {
                size_t n = XML_MAX_DOCUMENT_SIZE + 1;
                _cleanup_free_ char *big = malloc(n + 1);

                if (!big)
                        abort();
                memset(big, ' ', n);
                big[n] = 0;
                memcpy(big, "<disk>", 6);
                check_copy_dest_bad(big, -QSNAP_E_INVALID_XML, "limit");
        }
}

static void test_round_trip_fixtures(void) {
        static const char *const names[] = {
                "libvirt-full.xml", "minimal.xml", "two-disks.xml", "transient-readonly.xml",
                "monitor.xml",      "odd-name.xml",      "devices.xml",
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                check_round_trip_fixture(names[i]);
}

/* The devices of issue #14 (store/xml-domain-devices.h): each value the
 * launch needs, as the fixture states it (libvirt's documented meaning),
 * the elements kept verbatim in their order, a generated MAC written into
 * the kept <interface>, a CD-ROM that is never one of the disks. */
static void test_devices(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_fixture("devices.xml"), *again = NULL, *copy = NULL;
        _cleanup_free_ char *out = NULL, *out2 = NULL, *out3 = NULL;
        const DomainDevices *hw;

        if (!def)
                return;
        hw = &def->devices;
        CHECK_STREQ(def->type, "qemu");
        CHECK(def->n_disks == 1);
        CHECK_STREQ(def->disks[0].target, "vda");

        CHECK(hw->n_cdroms == 2);
        CHECK_STREQ(hw->cdroms[0].target, "sda");
        CHECK_STREQ(hw->cdroms[0].bus, "sata");
        CHECK_STREQ(hw->cdroms[0].source, "/srv/iso/install.iso");
        CHECK_STREQ(hw->cdroms[1].target, "sdb");
        CHECK_STREQ(hw->cdroms[1].bus, "scsi");
        CHECK(!hw->cdroms[1].source); /* an empty drive */

        CHECK(hw->n_nets == 3);
        CHECK(hw->nets[0].type == DOMAIN_NET_USER);
        CHECK_STREQ(hw->nets[0].model, "e1000");
        CHECK(!hw->nets[0].bridge);
        CHECK(hw->nets[0].mac && strncmp(hw->nets[0].mac, "52:54:00:", 9) == 0 && strlen(hw->nets[0].mac) == 17);
        CHECK(hw->nets[1].type == DOMAIN_NET_BRIDGE);
        CHECK_STREQ(hw->nets[1].mac, "52:54:00:aa:bb:cc");
        CHECK_STREQ(hw->nets[1].bridge, "br0");
        CHECK(hw->nets[2].type == DOMAIN_NET_NETWORK);
        CHECK_STREQ(hw->nets[2].bridge, "default");
        CHECK(hw->nets[2].mac && !streq(hw->nets[2].mac, hw->nets[0].mac));

        CHECK(hw->n_graphics == 2);
        CHECK(hw->graphics[0].type == DOMAIN_GRAPHICS_VNC);
        CHECK_STREQ(hw->graphics[0].address, "127.0.0.1");
        CHECK(hw->graphics[0].port == 5905);
        CHECK(hw->graphics[1].type == DOMAIN_GRAPHICS_SPICE);
        CHECK(!hw->graphics[1].address);
        CHECK_STREQ(hw->graphics[1].socket, "/srv/run/desk.spice");
        CHECK(hw->graphics[1].port == -1);
        CHECK_STREQ(hw->video, "qxl");

        /* serial, serial, console, console, channel, channel (spicevmc: kept only) */
        CHECK(hw->n_chars == 6);
        if (hw->n_chars == 6) {
                CHECK(hw->chars[0].role == DOMAIN_CHAR_SERIAL && hw->chars[0].type == DOMAIN_CHAR_FILE);
                CHECK_STREQ(hw->chars[0].path, "/srv/log/desk.ttyS0");
                CHECK(hw->chars[0].append && hw->chars[0].port == 0);
                CHECK(hw->chars[1].type == DOMAIN_CHAR_UNIX && hw->chars[1].connect && hw->chars[1].port == 1);
                CHECK(hw->chars[2].role == DOMAIN_CHAR_CONSOLE && !hw->chars[2].virtio);
                CHECK(hw->chars[3].role == DOMAIN_CHAR_CONSOLE && hw->chars[3].virtio &&
                      hw->chars[3].type == DOMAIN_CHAR_PTY);
                CHECK(hw->chars[4].role == DOMAIN_CHAR_CHANNEL && !hw->chars[4].path);
                CHECK_STREQ(hw->chars[4].name, "org.qemu.guest_agent.0");
                CHECK_STREQ(hw->chars[5].path, "/srv/run/desk.ch");
                CHECK(!hw->chars[5].connect);
        }
        CHECK(def->agent_channel);

        CHECK(hw->cpu_mode == DOMAIN_CPU_HOST_MODEL);
        CHECK_STREQ(hw->kernel, "/srv/boot/vmlinuz");
        CHECK_STREQ(hw->initrd, "/srv/boot/initrd.gz");
        CHECK_STREQ(hw->cmdline, "console=ttyS0 quiet");
        CHECK_STREQ(hw->boot_order, "dc");
        CHECK(hw->on_poweroff == DOMAIN_LIFECYCLE_PRESERVE);
        CHECK(hw->on_reboot == DOMAIN_LIFECYCLE_DESTROY);
        CHECK(!hw->qemu_args);

        /* Written back: every element, the generated MACs included, and a
         * second round trip changes nothing (the MACs stay). */
        out = format_ok(def, 0);
        if (!out)
                return;
        CHECK_CONTAINS(out, "<domain type='qemu'>");
        CHECK_CONTAINS(out, "    <kernel>/srv/boot/vmlinuz</kernel>\n");
        CHECK_CONTAINS(out, "    <boot dev=\"cdrom\"/>\n    <boot dev=\"hd\"/>\n");
        CHECK_CONTAINS(out, "  <on_poweroff>preserve</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n");
        CHECK_CONTAINS(out, "<disk type=\"file\" device=\"cdrom\">");
        CHECK_CONTAINS(out, "<interface type=\"user\">\n      <mac address=\"");
        CHECK_CONTAINS(out, "<mac address=\"52:54:00:aa:bb:cc\"/>");
        CHECK_CONTAINS(out, "<listen type=\"socket\" socket=\"/srv/run/desk.spice\"/>");
        CHECK_CONTAINS(out, "<channel type=\"spicevmc\">");
        CHECK_CONTAINS(out, hw->nets[0].mac);
        CHECK_CONTAINS(out, hw->nets[2].mac);
        again = parse_ok(out);
        if (!again)
                return;
        CHECK_STREQ(again->devices.nets[0].mac, hw->nets[0].mac);
        CHECK_STREQ(again->devices.nets[2].mac, hw->nets[2].mac);
        out2 = format_ok(again, 0);
        CHECK_STREQ(out2, out);

        CHECK(domain_def_copy(def, &copy) == 0);
        if (!copy)
                return;
        CHECK(copy->devices.n_chars == hw->n_chars && copy->devices.n_nets == hw->n_nets &&
              copy->devices.n_cdroms == hw->n_cdroms && copy->devices.n_graphics == hw->n_graphics);
        CHECK_STREQ(copy->devices.cdroms[0].source, "/srv/iso/install.iso");
        CHECK_STREQ(copy->devices.boot_order, "dc");
        out3 = format_ok(copy, 0);
        CHECK_STREQ(out3, out);
}

/* <qemu:commandline>: the arguments in order, for the launch. */
static void test_qemu_commandline(void) {
        _cleanup_(domain_def_freep) DomainDef *def = parse_ok(
                "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>q</name><memory>1</memory>\n"
                "<qemu:commandline><qemu:arg value='-smbios'/><qemu:env name='X' value='1'/>"
                "<qemu:arg value='type=1,serial=S'/></qemu:commandline></domain>");
        _cleanup_(domain_def_freep) DomainDef *copy = NULL;

        if (!def)
                return;
        CHECK(def->qemu_passthrough);
        CHECK(strv_length(def->devices.qemu_args) == 2);
        CHECK_STREQ(def->devices.qemu_args[0], "-smbios");
        CHECK_STREQ(def->devices.qemu_args[1], "type=1,serial=S");
        CHECK(domain_def_copy(def, &copy) == 0);
        CHECK(copy && strv_length(copy->devices.qemu_args) == 2);
        parse_fails_str("<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><name>q</name><memory>1</memory>"
                        "<qemu:commandline>\n<qemu:arg/></qemu:commandline></domain>",
                        -QSNAP_E_INVALID_XML, 2, "<qemu:arg> has no value=");
}

static void test_device_errors(void) {
        static const struct {
                const char *devices;
                const char *message;
        } cases[] = {
                { "<interface type='direct'><source dev='eth0'/></interface>",
                  "<interface type='direct'> is not supported: 'user', 'network' or 'bridge'" },
                { "<interface type='bridge'/>", "<interface type='bridge'> has no <source bridge=…/>" },
                { "<interface type='network'/>", "<interface type='network'> has no <source network=…/>" },
                { "<interface type='bridge'><source bridge='br0,x'/></interface>", "is not a network interface name" },
                { "<interface type='user'><mac address='01:00:5e:00:00:01'/></interface>", "is a multicast address" },
                { "<interface type='user'><mac address='52:54:00:zz:00:01'/></interface>", "is not a MAC address" },
                { "<interface type='user'><model type='ne2k_pci'/></interface>", "<model type='ne2k_pci'> is not supported" },
                { "<graphics type='sdl'/>", "<graphics type='sdl'> is not supported: 'vnc' or 'spice'" },
                { "<graphics type='vnc' port='80'/>", "<graphics port='80'> is not a valid port (VNC: 5900 or above)" },
                { "<graphics type='vnc'><listen type='network' network='x'/></graphics>",
                  "<listen type='network'> is not supported" },
                { "<graphics type='vnc'><listen type='socket' socket='rel'/></graphics>", "not an absolute path" },
                { "<video><model type='ramfb'/></video>", "<video><model type='ramfb'> is not supported" },
                { "<video/><video/>", "<video> appears more than once" },
                { "<serial type='tcp'><source mode='bind' host='0' service='1'/></serial>",
                  "<serial type='tcp'> is not supported: 'pty', 'unix' or 'file'" },
                { "<serial type='file'/>", "<serial type='file'> has no <source path=…/>" },
                { "<serial type='file'><source path='rel'/></serial>", "not an absolute path" },
                { "<serial type='unix'><source mode='listen' path='/a'/></serial>", "is not 'bind' or 'connect'" },
                { "<serial type='unix'><source mode='connect'/></serial>", "<source mode='connect'> has no path=" },
                { "<serial type='pty'><target port='4'/></serial>", "<target port='4'> is not 0 to 3" },
                { "<serial type='pty'><target type='usb-serial'/></serial>", "<serial><target type='usb-serial'>" },
                { "<console type='pty'><target type='sclp'/></console>", "<console><target type='sclp'>" },
                { "<channel type='unix'><target type='guestfwd'/></channel>",
                  "<channel type='unix'> is supported with <target type='virtio' name=…/> only" },
                { "<channel type='unix'><target type='virtio' name='a,b'/></channel>", "is not a channel name" },
                { "<disk type='block' device='cdrom'><target dev='sda'/></disk>",
                  "<disk type='block' device='cdrom'> is not supported" },
                { "<disk device='cdrom'><source file='/a.iso'/></disk>", "<disk device='cdrom'> has no <target dev=…/>" },
                { "<disk device='cdrom'><target dev='sda' bus='virtio'/></disk>", "<target bus='virtio'> is not supported" },
                { "<disk device='cdrom'><source file='a.iso'/><target dev='sda'/></disk>", "not an absolute path" },
                { "<disk device='cdrom'><target dev='sd-a'/></disk>", "<target dev='sd-a'> must match [a-z][a-z0-9]*" },
        };
        static const struct {
                const char *xml;
                const char *message;
        } others[] = {
                { "<os><type>hvm</type><kernel>vmlinuz</kernel></os>", "<kernel> 'vmlinuz' is not an absolute path" },
                { "<os><type>hvm</type><initrd>/a</initrd><initrd>/b</initrd></os>", "<initrd> appears more than once" },
                { "<os><type>hvm</type><boot dev='floppy'/></os>", "<boot dev='floppy'> is not 'hd', 'cdrom', 'network' or 'fd'" },
                { "<os><type>hvm</type><boot dev='hd'/><boot dev='hd'/></os>", "<boot dev='hd'> appears more than once" },
                { "<on_reboot>preserve</on_reboot>", "<on_reboot>preserve</on_reboot> is not supported: 'restart' or 'destroy'" },
                { "<on_poweroff>restart</on_poweroff>", "is not supported: 'destroy' or 'preserve'" },
                { "<on_poweroff>rename-restart</on_poweroff>", "is not supported" },
                { "<cpu mode='host-model'/><cpu/>", "<cpu> appears more than once" },
                /* Reported on <devices>: a CD-ROM's id is its target, as a disk's is. */
                { "<devices><disk><source file='/a'/><target dev='sda'/></disk><disk device='cdrom'><target dev='sda'/></disk>"
                  "</devices>",
                  "CD-ROM target 'sda' is also a disk's" },
                { "<devices><disk device='cdrom'><target dev='hdc'/></disk><disk device='cdrom'><target dev='hdc'/></disk>"
                  "</devices>",
                  "CD-ROM target 'hdc' is used more than once" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *xml = strprintf("<domain><name>a</name><memory>1</memory><devices>\n%s</devices></domain>",
                                                     cases[i].devices);
                parse_fails_str(xml, -QSNAP_E_INVALID_XML, 2, cases[i].message);
        }
        for (size_t i = 0; i < ELEMENTSOF(others); i++) {
                _cleanup_free_ char *xml = strprintf("<domain><name>a</name><memory>1</memory>\n%s</domain>", others[i].xml);
                parse_fails_str(xml, -QSNAP_E_INVALID_XML, 2, others[i].message);
        }
}

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s FIXTURES-DIR\n", argv[0]);
                return EXIT_FAILURE;
        }
        fixtures = argv[1];

        test_disk_format_strings();
        test_libvirt_full();
        test_minimal();
        test_two_disks();
        test_transient_readonly();
        test_monitor();
        test_odd_strings();
        test_unwritable_strings();
        test_malformed();
        test_semantic_errors();
        test_memory_units();
        test_entities();
        test_size_limit();
        test_pathological();
        test_unknown_attributes();
        test_extras();
        test_secrets();
        test_qemu_passthrough();
        test_firmware_and_agent();
        test_devices();
        test_qemu_commandline();
        test_device_errors();
        test_backing_chain();
        test_copy();
        test_copy_dest();
        test_disk_cache();
        test_iothreads();
        test_round_trip_fixtures();

        return test_summary();
}
