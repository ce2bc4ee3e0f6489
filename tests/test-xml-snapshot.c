/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the <domainsnapshot> and <snapshots> codec
 * (daemon/store/xml-snapshot.c): libvirt's own test outputs parsed with REDEFINE
 * and written back equal after canonicalization, byte-stable second round
 * trips, the REDEFINE-only elements, <revertDisks>, our <on_delete>
 * extension, the bulk file, odd names, secrets, malformed and hostile input.
 * The one argument is the fixtures directory. Exits non-zero when a check
 * failed.
 */

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include <libxml/c14n.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlversion.h>

#include "store/xml-domain.h"
#include "store/xml-snapshot.h"
#include "test-check.h"
#include "test-fixture.h"
#include "util/util.h"

static SnapshotDef *parse_ok(const char *xml, SnapshotParseFlags flags) {
        _cleanup_free_ char *error = NULL;
        SnapshotDef *def = NULL;
        int r;

        r = snapshot_def_parse(xml, strlen(xml), flags, &def, &error);
        if (r < 0) {
                n_failed++;
                fprintf(stderr, "unexpected parse failure %d (%s) for:\n%.2000s\n", r, strna(error), xml);
                return NULL;
        }
        CHECK(def);
        CHECK(!error); /* untouched on success */
        return def;
}

static SnapshotDef *parse_fixture(const char *name, SnapshotParseFlags flags) {
        _cleanup_free_ char *xml = read_fixture(name, NULL);
        return parse_ok(xml, flags);
}

static char *format_ok(const SnapshotDef *def, SnapshotFormatFlags flags) {
        char *out = NULL;
        int r;

        r = snapshot_def_format(def, flags, &out);
        CHECK(r == 0);
        CHECK(out);
        if (r < 0)
                fprintf(stderr, "format failed: %d\n", r);
        return out;
}

/* Parse must fail with r, the message must start with "line N: " when
 * line > 0, and contain needle. Also checks that *ret is untouched. */
static void parse_fails(const char *xml, size_t size, SnapshotParseFlags flags, int r, int line, const char *needle) {
        _cleanup_free_ char *error = NULL;
        SnapshotDef *sentinel = (SnapshotDef *) (uintptr_t) 0x1, *def = sentinel;
        int k;

        k = snapshot_def_parse(xml, size, flags, &def, &error);
        n_checks++;
        if (k != r) {
                n_failed++;
                fprintf(stderr, "expected parse error %d, got %d (%s) for:\n%.400s\n", r, k, strna(error), xml);
                if (k >= 0 && def != sentinel)
                        snapshot_def_free(def);
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

static void parse_fails_str(const char *xml, SnapshotParseFlags flags, int r, int line, const char *needle) {
        parse_fails(xml, strlen(xml), flags, r, line, needle);
}

static bool strv_equal(char *const *a, char *const *b) {
        if (!a || !b)
                return a == b;
        for (; *a && *b; a++, b++)
                if (!streq(*a, *b))
                        return false;
        return !*a && !*b;
}

static bool disk_equal(const SnapshotDisk *a, const SnapshotDisk *b) {
        return streq_ptr(a->name, b->name) && a->snapshot == b->snapshot && a->format == b->format &&
                streq_ptr(a->source, b->source) && a->on_delete == b->on_delete &&
                strv_equal(a->extra_elements, b->extra_elements) &&
                strv_equal(a->extra_attributes, b->extra_attributes) &&
                strv_equal(a->extra_driver_attributes, b->extra_driver_attributes) &&
                strv_equal(a->extra_driver_elements, b->extra_driver_elements) &&
                strv_equal(a->extra_source_attributes, b->extra_source_attributes) &&
                strv_equal(a->extra_source_elements, b->extra_source_elements);
}

static bool disks_equal(const SnapshotDisk *a, size_t n_a, const SnapshotDisk *b, size_t n_b) {
        if (n_a != n_b)
                return false;
        for (size_t i = 0; i < n_a; i++)
                if (!disk_equal(&a[i], &b[i]))
                        return false;
        return true;
}

static bool def_equal(const SnapshotDef *a, const SnapshotDef *b) {
        return streq_ptr(a->name, b->name) && streq_ptr(a->description, b->description) &&
                a->has_state == b->has_state && (!a->has_state || a->state == b->state) &&
                a->has_creation_time == b->has_creation_time &&
                (!a->has_creation_time || a->creation_time == b->creation_time) && a->memory == b->memory &&
                streq_ptr(a->memory_file, b->memory_file) && a->has_disks == b->has_disks &&
                disks_equal(a->disks, a->n_disks, b->disks, b->n_disks) && streq_ptr(a->parent, b->parent) &&
                streq_ptr(a->domain_xml, b->domain_xml) && streq_ptr(a->inactive_domain_xml, b->inactive_domain_xml) &&
                disks_equal(a->revert_disks, a->n_revert_disks, b->revert_disks, b->n_revert_disks) &&
                a->active == b->active && strv_equal(a->extra_elements, b->extra_elements);
}

static SnapshotFormatFlags flags_for(const SnapshotDef *def) {
        return SNAPSHOT_FORMAT_SECURE | (def->active >= 0 ? SNAPSHOT_FORMAT_ACTIVE : 0);
}

/* parse(format(def)) == def, and formatting that again gives the same
 * bytes. Returns the first formatting. */
static char *check_round_trip(const SnapshotDef *def, SnapshotParseFlags parse_flags) {
        _cleanup_(snapshot_def_freep) SnapshotDef *again = NULL;
        _cleanup_free_ char *out2 = NULL;
        char *out1;

        out1 = format_ok(def, flags_for(def));
        if (!out1)
                return NULL;
        again = parse_ok(out1, parse_flags);
        if (!again)
                return out1;
        n_checks++;
        if (!def_equal(def, again)) {
                n_failed++;
                fprintf(stderr, "round trip changed the definition; formatted was:\n%s\n", out1);
        }
        out2 = format_ok(again, flags_for(again));
        CHECK_STREQ(out2, out1);
        return out1;
}

/* Exclusive canonical form of a document without formatting whitespace:
 * equal for documents that say the same thing however they are quoted,
 * indented or escaped. */
static char *canonical(const char *xml) {
        xmlDoc *doc;
        xmlChar *c14n = NULL;
        char *ret = NULL;

        doc = xmlReadMemory(xml, (int) strlen(xml), NULL, NULL, XML_PARSE_NOBLANKS | XML_PARSE_NONET);
        if (!doc)
                return NULL;
        if (xmlC14NDocDumpMemory(doc, NULL, XML_C14N_EXCLUSIVE_1_0, NULL, 0, &c14n) >= 0 && c14n)
                ret = strdup((const char *) c14n);
        xmlFree(c14n);
        xmlFreeDoc(doc);
        return ret;
}

/* A fixture written by hand in libvirt's layout (virsh snapshot-dumpxml's:
 * the element order and the attributes libvirt's formatter writes, see
 * fixtures/snapshot/README.md): parses with REDEFINE, round-trips, and what
 * we write is the fixture, up to quoting and whitespace. The expectation is
 * the fixture itself, not our own output. */
static void check_libvirt_output(const char *name) {
        _cleanup_free_ char *xml = read_fixture(name, NULL), *out = NULL, *c_in = NULL, *c_out = NULL;
        _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_ok(xml, SNAPSHOT_PARSE_REDEFINE);

        if (!def) {
                fprintf(stderr, "  (fixture %s)\n", name);
                return;
        }
        out = check_round_trip(def, SNAPSHOT_PARSE_REDEFINE);
        c_in = canonical(xml);
        c_out = out ? canonical(out) : NULL;
        CHECK(c_in && c_out);
        n_checks++;
        if (!streq_ptr(c_in, c_out)) {
                n_failed++;
                fprintf(stderr, "%s: written form differs from libvirt's layout:\n--- fixture\n%s\n--- ours\n%s\n", name,
                        strna(c_in), strna(c_out));
        }
}

/* Index of the first occurrence of needle, or SIZE_MAX. */
static size_t position(const char *haystack, const char *needle) {
        const char *p = haystack ? strstr(haystack, needle) : NULL;
        return p ? (size_t) (p - haystack) : SIZE_MAX;
}

/* ---------------------------------------------------------------------------- */

static void test_enum_strings(void) {
        static const char *const locations[] = { "default", "no", "internal", "external", "manual" };
        static const char *const states[] = { "running", "paused",   "shutoff", "disk-snapshot", "nostate",
                                              "blocked", "shutdown", "crashed", "pmsuspended" };

        for (SnapshotLocation l = 0; l < _SNAPSHOT_LOCATION_MAX; l++) {
                CHECK_STREQ(snapshot_location_to_string(l), locations[l]);
                CHECK(snapshot_location_from_string(locations[l]) == l);
        }
        for (SnapshotState s = 0; s < _SNAPSHOT_STATE_MAX; s++) {
                CHECK_STREQ(snapshot_state_to_string(s), states[s]);
                CHECK(snapshot_state_from_string(states[s]) == s);
        }
        CHECK_STREQ(merge_direction_to_string(MERGE_FORWARD), "forward");
        CHECK_STREQ(merge_direction_to_string(MERGE_BACKWARD), "backward");
        CHECK(merge_direction_from_string("backward") == MERGE_BACKWARD);

        CHECK(!snapshot_location_to_string(_SNAPSHOT_LOCATION_MAX));
        CHECK(!snapshot_location_to_string(_SNAPSHOT_LOCATION_INVALID));
        CHECK(!snapshot_state_to_string(_SNAPSHOT_STATE_MAX));
        CHECK(!snapshot_state_to_string(_SNAPSHOT_STATE_INVALID));
        CHECK(!merge_direction_to_string(_MERGE_MAX));
        CHECK(!merge_direction_to_string(_MERGE_INVALID));
        CHECK(snapshot_location_from_string("External") == -EINVAL);
        CHECK(snapshot_location_from_string(NULL) == -EINVAL);
        CHECK(snapshot_state_from_string("disk_snapshot") == -EINVAL);
        CHECK(snapshot_state_from_string("") == -EINVAL);
        CHECK(merge_direction_from_string("sideways") == -EINVAL);
        CHECK(merge_direction_from_string(NULL) == -EINVAL);
}

static void test_libvirt_outputs(void) {
        static const char *const names[] = {
                "all-parameters.xml",
                "disk-seclabel.xml",
                "disk-source-only.xml",
                "external-memory.xml",
                "external-memory-redefine.xml",
                "full-domain.xml",
                "memory-inactive-domain.xml",
                "no-parent-description-active.xml",
                "metadata-cache.xml",
                "revert-disks.xml",
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                check_libvirt_output(names[i]);
}

static void test_all_parameters(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_fixture("all-parameters.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *fresh = parse_fixture("all-parameters.xml", 0);
        _cleanup_free_ char *out = NULL, *plain = NULL;

        if (!def || !fresh)
                return;
        CHECK_STREQ(def->name, "before the upgrade #2");
        CHECK_STREQ(def->description, "Kernel 6.1 & the old <nvidia> driver, 100% working");
        CHECK(def->has_state && def->state == SNAPSHOT_STATE_RUNNING);
        CHECK_STREQ(def->parent, "fresh install");
        CHECK(def->has_creation_time && def->creation_time == 1700000000);
        CHECK(def->memory == SNAPSHOT_LOCATION_INTERNAL && !def->memory_file);
        CHECK(!def->has_disks && def->n_disks == 0 && !def->disks);
        /* formatsnapshot: older libvirt stored a <domain> with only a <uuid>; kept as it is. */
        CHECK_STREQ(def->domain_xml, "<domain>\n  <uuid>5d0c4f1e-2b7a-4c39-8e61-3f9a0b7c2d44</uuid>\n</domain>");
        CHECK(!def->inactive_domain_xml);
        CHECK(def->active == 1);
        CHECK(!def->extra_elements);

        /* formatsnapshot: on creation only name, description, memory and
         * disks are settable; the rest is ignored. */
        CHECK_STREQ(fresh->name, "before the upgrade #2");
        CHECK(!fresh->has_state && !fresh->has_creation_time && !fresh->parent && !fresh->domain_xml);
        CHECK(fresh->memory == SNAPSHOT_LOCATION_INTERNAL);
        CHECK(fresh->active == 1);

        /* <active> only on request. */
        plain = format_ok(def, SNAPSHOT_FORMAT_SECURE);
        CHECK_NOT_CONTAINS(plain, "<active>");
        out = format_ok(def, SNAPSHOT_FORMAT_ACTIVE);
        CHECK_CONTAINS(out, "  </domain>\n  <active>1</active>\n</domainsnapshot>\n");
}

static void test_inactive_domain_and_cookie(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def =
                parse_fixture("memory-inactive-domain.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *fresh = parse_fixture("memory-inactive-domain.xml", 0);
        _cleanup_free_ char *out = NULL;

        if (!def || !fresh)
                return;
        CHECK(def->memory == SNAPSHOT_LOCATION_EXTERNAL);
        CHECK_STREQ(def->memory_file, "/srv/images/pending.mem");
        CHECK(def->active == -1);
        CHECK(def->domain_xml && strncmp(def->domain_xml, "<domain type=\"kvm\">\n  <name>workstation</name>", 46) == 0);
        CHECK(def->inactive_domain_xml && strncmp(def->inactive_domain_xml, "<inactiveDomain type=\"kvm\">\n", 28) == 0);
        CHECK(strv_length(def->extra_elements) == 1);
        if (def->extra_elements)
                CHECK(strncmp(def->extra_elements[0], "<cookie>\n  <cpu mode=\"custom\"", 29) == 0);

        out = format_ok(def, SNAPSHOT_FORMAT_SECURE);
        /* libvirt's order: memory, domain, inactiveDomain, cookie. */
        CHECK(position(out, "<memory ") < position(out, "  <domain "));
        CHECK(position(out, "  <domain ") < position(out, "  <inactiveDomain "));
        CHECK(position(out, "  <inactiveDomain ") < position(out, "  <cookie>"));
        /* The embedded domain nests. */
        CHECK_CONTAINS(out, "\n  <domain type=\"kvm\">\n    <name>workstation</name>\n");
        CHECK_CONTAINS(out, "\n      <controller type=\"usb\" index=\"0\" model=\"qemu-xhci\">\n"
                            "        <address type=\"pci\"");
        CHECK_CONTAINS(out, "\n  </inactiveDomain>\n  <cookie>\n    <cpu mode=\"custom\"");

        /* The cookie is not a REDEFINE-only element: libvirt reads it too. */
        CHECK(!fresh->domain_xml && !fresh->inactive_domain_xml && strv_length(fresh->extra_elements) == 1);
}

static void test_libvirt_inputs(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *shuffled = parse_fixture("in-any-order.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *external = parse_fixture("in-external-memory.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *external_new = parse_fixture("in-external-memory.xml", 0);
        _cleanup_(snapshot_def_freep) SnapshotDef *seclabel = parse_fixture("in-disk-seclabel.xml", 0);
        _cleanup_free_ char *out = NULL, *kinds = read_fixture("in-disks-unsupported.xml", NULL);

        /* domainsnapshot.rng: the children of <domainsnapshot> interleave,
         * any order is valid input. */
        if (shuffled) {
                CHECK_STREQ(shuffled->name, "shuffled");
                CHECK(shuffled->has_state && shuffled->state == SNAPSHOT_STATE_RUNNING);
                CHECK(shuffled->memory == SNAPSHOT_LOCATION_INTERNAL);
                CHECK(shuffled->creation_time == 1700000800 && !shuffled->parent);
                /* Written in libvirt's order (its formatter's), whatever the input's. */
                out = check_round_trip(shuffled, SNAPSHOT_PARSE_REDEFINE);
                CHECK(position(out, "<name>") < position(out, "<description>"));
                CHECK(position(out, "<description>") < position(out, "<state>"));
                CHECK(position(out, "<state>") < position(out, "<creationTime>"));
                CHECK(position(out, "<creationTime>") < position(out, "<memory "));
                CHECK(position(out, "<memory ") < position(out, "<domain>"));
        }
        if (external) {
                CHECK(external->memory == SNAPSHOT_LOCATION_EXTERNAL);
                CHECK_STREQ(external->memory_file, "/srv/images/hibernated.mem");
                CHECK_STREQ(external->parent, "nightly");
        }
        /* Read-only fields (parent, state) are ignored on creation. */
        if (external_new) {
                CHECK(!external_new->parent && !external_new->has_state);
                CHECK(external_new->memory == SNAPSHOT_LOCATION_EXTERNAL);
        }
        /* formatsnapshot: <source> may hold a <seclabel>; a <source> without
         * snapshot= makes the disk external (the mode "inherited"). */
        if (seclabel && seclabel->n_disks == 1) {
                CHECK(seclabel->disks[0].snapshot == SNAPSHOT_LOCATION_EXTERNAL);
                CHECK_STREQ(seclabel->disks[0].source, "/srv/images/data.labelled");
                CHECK(strv_equal(seclabel->disks[0].extra_source_elements,
                                 (char *[]) { "<seclabel model=\"dac\" relabel=\"no\"/>", NULL }));
        }

        /* Every kind of disk the schema allows: by path, no, internal, then a
         * qed file, a block device and a network disk, which are not ours.
         * The first refused one is named, at its line. */
        parse_fails_str(kinds, 0, -QSNAP_E_INVALID_XML, 8, "disk 'vdd' has driver type 'qed', expected 'qcow2' or 'raw'");
        parse_fails_str(kinds, SNAPSHOT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 8, "driver type 'qed'");
        parse_fails_str("<domainsnapshot><disks>\n<disk name='vde' snapshot='external' type='block'>"
                        "<source dev='/dev/vg0/vde-new'/></disk></disks></domainsnapshot>",
                        0, -QSNAP_E_INVALID_XML, 2, "disk 'vde' has type 'block': only type='file' is supported");
        parse_fails_str("<domainsnapshot><disks>\n<disk name='vdf' snapshot='external' type='network'>"
                        "<source protocol='gluster' name='vol/vdf-new'><host name='storage.example'/></source>"
                        "</disk></disks></domainsnapshot>",
                        0, -QSNAP_E_INVALID_XML, 2, "disk 'vdf' has type 'network': only type='file' is supported");
        /* The disks before the refused ones are fine. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d = parse_ok(
                        "<domainsnapshot><disks><disk name='/srv/images/root.qcow2'/><disk name='vdb' snapshot='no'/>"
                        "<disk name='vdc' snapshot='internal'/></disks></domainsnapshot>",
                        0);

                CHECK(d && d->n_disks == 3);
                if (d && d->n_disks == 3) {
                        CHECK_STREQ(d->disks[0].name, "/srv/images/root.qcow2");
                        CHECK(d->disks[0].snapshot == SNAPSHOT_LOCATION_DEFAULT);
                        CHECK(d->disks[1].snapshot == SNAPSHOT_LOCATION_NO);
                        CHECK(d->disks[2].snapshot == SNAPSHOT_LOCATION_INTERNAL);
                }
        }
}

static void test_disks(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_fixture("metadata-cache.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *sec = parse_fixture("disk-seclabel.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *bare = parse_fixture("disk-source-only.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *inferred = NULL;
        _cleanup_free_ char *out = NULL;

        if (def && def->n_disks == 1) {
                const SnapshotDisk *d = &def->disks[0];

                CHECK(def->has_disks);
                CHECK_STREQ(d->name, "vda");
                CHECK(d->snapshot == SNAPSHOT_LOCATION_EXTERNAL);
                CHECK(d->format == DISK_FORMAT_QCOW2);
                CHECK_STREQ(d->source, "/srv/images/root.small-cache");
                CHECK(d->on_delete == MERGE_DEFAULT);
                CHECK(strv_equal(d->extra_driver_elements,
                                 (char *[]) { "<metadata_cache>\n  <max_size unit=\"bytes\">65536</max_size>\n</metadata_cache>",
                                              NULL }));
                CHECK(!d->extra_elements && !d->extra_attributes && !d->extra_source_elements);
        }
        if (sec && sec->n_disks == 1)
                CHECK(strv_equal(sec->disks[0].extra_source_elements,
                                 (char *[]) { "<seclabel model=\"dac\" relabel=\"no\"/>", NULL }));
        /* A new file and no driver: no format, and libvirt writes no <driver>. */
        if (bare && bare->n_disks == 1) {
                CHECK(bare->disks[0].snapshot == SNAPSHOT_LOCATION_EXTERNAL);
                CHECK(bare->disks[0].format == _DISK_FORMAT_INVALID);
                CHECK_STREQ(bare->disks[0].source, "/srv/images/root.nightly");
                out = format_ok(bare, SNAPSHOT_FORMAT_SECURE);
                CHECK_NOT_CONTAINS(out, "<driver");
                out = mfree(out);
        }

        /* libvirt: a file or a format without snapshot= means external, and
         * it writes type='file' back for such disks only. */
        inferred = parse_ok("<domainsnapshot><disks>"
                            "<disk name='vda'><source file='/a.qcow2'/></disk>"
                            "<disk name='vdb'><driver type='raw'/></disk>"
                            "<disk name='vdc'/>"
                            "<disk name='vdd' snapshot='manual'/>"
                            "<disk name='vde' type='file' snapshot='internal'/>"
                            "<disk name='/var/lib/images/f.img' snapshot='no'/>"
                            "</disks></domainsnapshot>",
                            0);
        if (inferred && inferred->n_disks == 6) {
                CHECK(inferred->disks[0].snapshot == SNAPSHOT_LOCATION_EXTERNAL);
                CHECK(inferred->disks[0].format == _DISK_FORMAT_INVALID);
                CHECK(inferred->disks[1].snapshot == SNAPSHOT_LOCATION_EXTERNAL);
                CHECK(inferred->disks[1].format == DISK_FORMAT_RAW && !inferred->disks[1].source);
                CHECK(inferred->disks[2].snapshot == SNAPSHOT_LOCATION_DEFAULT);
                CHECK(inferred->disks[3].snapshot == SNAPSHOT_LOCATION_MANUAL);
                CHECK(inferred->disks[4].snapshot == SNAPSHOT_LOCATION_INTERNAL);
                CHECK_STREQ(inferred->disks[5].name, "/var/lib/images/f.img");
                out = check_round_trip(inferred, 0);
                CHECK_CONTAINS(out, "  <disks>\n"
                                    "    <disk name='vda' snapshot='external' type='file'>\n"
                                    "      <source file='/a.qcow2'/>\n"
                                    "    </disk>\n"
                                    "    <disk name='vdb' snapshot='external' type='file'>\n"
                                    "      <driver type='raw'/>\n"
                                    "    </disk>\n"
                                    "    <disk name='vdc'/>\n"
                                    "    <disk name='vdd' snapshot='manual'/>\n"
                                    "    <disk name='vde' snapshot='internal'/>\n"
                                    "    <disk name='/var/lib/images/f.img' snapshot='no'/>\n"
                                    "  </disks>\n");
        }

        /* An empty <disks> is kept as such. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *empty = parse_ok("<domainsnapshot><disks/></domainsnapshot>", 0);
                _cleanup_free_ char *o = NULL;

                if (empty) {
                        CHECK(empty->has_disks && empty->n_disks == 0);
                        o = check_round_trip(empty, 0);
                        CHECK_STREQ(o, "<domainsnapshot>\n  <disks/>\n</domainsnapshot>\n");
                }
        }
}

static void test_revert_disks(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_fixture("revert-disks.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *fresh = parse_fixture("revert-disks.xml", 0);
        _cleanup_free_ char *out = NULL;

        if (!def || !fresh)
                return;
        CHECK(def->has_state && def->state == SNAPSHOT_STATE_DISK_SNAPSHOT);
        CHECK(def->memory == SNAPSHOT_LOCATION_NO);
        CHECK(def->n_disks == 2 && def->n_revert_disks == 1);
        if (def->n_revert_disks == 1) {
                CHECK_STREQ(def->revert_disks[0].name, "vda");
                CHECK(def->revert_disks[0].snapshot == SNAPSHOT_LOCATION_EXTERNAL);
                CHECK(def->revert_disks[0].format == DISK_FORMAT_QCOW2);
                CHECK_STREQ(def->revert_disks[0].source, "/var/lib/libvirt/images/fedora.1700000100");
        }
        /* Between <disks> and <domain>, as libvirt 9.7 writes it. */
        out = format_ok(def, SNAPSHOT_FORMAT_SECURE);
        CHECK(position(out, "</disks>") < position(out, "<revertDisks>"));
        CHECK(position(out, "</revertDisks>") < position(out, "<domain "));

        /* Only a redefinition keeps them. */
        CHECK(fresh->n_disks == 2 && fresh->n_revert_disks == 0 && !fresh->revert_disks);

        parse_fails_str("<domainsnapshot><revertDisks>\n<disk name='vda'/><disk name='vda'/></revertDisks></domainsnapshot>",
                        SNAPSHOT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 2, "disk 'vda' appears more than once in <revertDisks>");
        /* Without REDEFINE nothing in them is looked at. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d =
                        parse_ok("<domainsnapshot><revertDisks><bogus/></revertDisks></domainsnapshot>", 0);
                CHECK(d && d->n_revert_disks == 0 && !d->extra_elements);
        }
}

/* What a revert records: snapshot_def_set_revert_disks() replaces the list
 * (libvirt keeps the latest revert's overlays), and the result round-trips
 * through the store's format (SECURE) and a REDEFINE parse. */
static void test_set_revert_disks(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_fixture("revert-disks.xml", SNAPSHOT_PARSE_REDEFINE);
        SnapshotDisk disks[2] = {
                { .name = (char *) "vda", .snapshot = SNAPSHOT_LOCATION_EXTERNAL, .format = DISK_FORMAT_QCOW2,
                  .source = (char *) "/var/lib/libvirt/images/fedora.before-upgrade-revert2" },
                { .name = (char *) "vdb", .snapshot = SNAPSHOT_LOCATION_EXTERNAL, .format = DISK_FORMAT_QCOW2,
                  .source = (char *) "/var/lib/libvirt/images/scratch.before-upgrade-revert1" },
        };

        if (!def)
                return;
        CHECK(snapshot_def_set_revert_disks(def, disks, 2) == 0);
        CHECK(def->n_revert_disks == 2);
        if (def->n_revert_disks == 2) {
                CHECK(def->revert_disks[0].source != disks[0].source); /* a copy */
                CHECK_STREQ(def->revert_disks[1].source, "/var/lib/libvirt/images/scratch.before-upgrade-revert1");
        }
        {
                _cleanup_free_ char *out = format_ok(def, SNAPSHOT_FORMAT_SECURE), *again = NULL;
                _cleanup_(snapshot_def_freep) SnapshotDef *back = out ? parse_ok(out, SNAPSHOT_PARSE_REDEFINE) : NULL;

                CHECK(back && back->n_revert_disks == 2);
                if (back && back->n_revert_disks == 2) {
                        CHECK_STREQ(back->revert_disks[0].name, "vda");
                        CHECK_STREQ(back->revert_disks[0].source, disks[0].source);
                        CHECK_STREQ(back->revert_disks[1].name, "vdb");
                        CHECK(back->revert_disks[1].format == DISK_FORMAT_QCOW2);
                        again = format_ok(back, SNAPSHOT_FORMAT_SECURE);
                        CHECK_STREQ(again, out);
                }
        }
        /* Back to none: the element goes. */
        CHECK(snapshot_def_set_revert_disks(def, NULL, 0) == 0);
        CHECK(def->n_revert_disks == 0 && !def->revert_disks);
        {
                _cleanup_free_ char *out = format_ok(def, SNAPSHOT_FORMAT_SECURE);
                CHECK(out && !strstr(out, "<revertDisks"));
        }
}

static void test_on_delete(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_fixture("on-delete.xml", 0);
        _cleanup_free_ char *out = NULL;

        if (!def)
                return;
        CHECK(def->n_disks == 3);
        if (def->n_disks == 3) {
                CHECK(def->disks[0].snapshot == SNAPSHOT_LOCATION_EXTERNAL); /* from <source> */
                CHECK_STREQ(def->disks[0].source, "/var/lib/qsnap/images/vm.nightly.qcow2");
                CHECK(def->disks[0].on_delete == MERGE_FORWARD);
                CHECK(def->disks[1].format == DISK_FORMAT_QCOW2 && !def->disks[1].source);
                CHECK(def->disks[1].on_delete == MERGE_BACKWARD);
                CHECK(def->disks[2].on_delete == MERGE_DEFAULT);
                CHECK(!def->disks[0].extra_elements && !def->disks[1].extra_elements);
        }
        out = check_round_trip(def, 0);
        CHECK_CONTAINS(out, "    <disk name='vda' snapshot='external' type='file'>\n"
                            "      <source file='/var/lib/qsnap/images/vm.nightly.qcow2'/>\n"
                            "      <on_delete merge='forward'/>\n"
                            "    </disk>\n");
        CHECK_CONTAINS(out, "      <driver type='qcow2'/>\n      <on_delete merge='backward'/>\n");

        /* Kept on any disk: the model decides whether it applies. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d = parse_ok(
                        "<domainsnapshot><disks><disk name='vda' snapshot='internal'><on_delete merge='backward'/></disk>"
                        "</disks></domainsnapshot>",
                        0);
                _cleanup_free_ char *o = NULL;

                if (d && d->n_disks == 1) {
                        CHECK(d->disks[0].on_delete == MERGE_BACKWARD);
                        o = check_round_trip(d, 0);
                }
        }

        parse_fails_str("<domainsnapshot><disks><disk name='vda'>\n<on_delete/></disk></disks></domainsnapshot>", 0, -QSNAP_E_INVALID_XML, 2,
                        "<on_delete> has no merge= attribute");
        parse_fails_str("<domainsnapshot><disks><disk name='vda'>\n<on_delete merge='sideways'/></disk></disks></domainsnapshot>",
                        0, -QSNAP_E_INVALID_XML, 2, "<on_delete merge='sideways'> is not supported, expected 'forward' or 'backward'");
        parse_fails_str("<domainsnapshot><disks><disk name='vda'>\n<on_delete merge='default'/></disk></disks></domainsnapshot>",
                        0, -QSNAP_E_INVALID_XML, 2, "merge='default'");
        parse_fails_str("<domainsnapshot><disks><disk name='vda'>\n<on_delete merge='forward' mode='x'/></disk></disks>"
                        "</domainsnapshot>",
                        0, -QSNAP_E_INVALID_XML, 2, "<on_delete> has an unknown attribute 'mode'");
        parse_fails_str("<domainsnapshot><disks><disk name='vda'><on_delete merge='forward'>\n<x/></on_delete></disk></disks>"
                        "</domainsnapshot>",
                        0, -QSNAP_E_INVALID_XML, 2, "<on_delete> must be empty, found <x>");
        parse_fails_str("<domainsnapshot><disks><disk name='vda'><on_delete merge='forward'/>\n<on_delete merge='forward'/>"
                        "</disk></disks></domainsnapshot>",
                        0, -QSNAP_E_INVALID_XML, 2, "<on_delete> appears more than once, first on line 1");
        /* Our element in a namespace is not ours: kept verbatim. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d = parse_ok(
                        "<domainsnapshot xmlns:x='urn:x'><disks><disk name='vda'><x:on_delete merge='forward'/></disk>"
                        "</disks></domainsnapshot>",
                        0);
                if (d && d->n_disks == 1) {
                        CHECK(d->disks[0].on_delete == MERGE_DEFAULT);
                        CHECK(strv_equal(d->disks[0].extra_elements,
                                         (char *[]) { "<x:on_delete xmlns:x=\"urn:x\" merge=\"forward\"/>", NULL }));
                }
        }
}

static void test_qsnap_written(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_fixture("qsnap-written.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(domain_def_freep) DomainDef *dom = NULL;
        _cleanup_free_ char *out = NULL, *plain = NULL, *expected = NULL, *error = NULL;

        if (!def)
                return;
        CHECK_STREQ(def->name, "pre update/2024 — ünïcode & \"quotes\"");
        CHECK_STREQ(def->description, "Line one\n  line two, indented <kept>");
        CHECK_STREQ(def->parent, "root snap");
        CHECK(def->n_disks == 2);
        if (def->n_disks == 2) {
                CHECK(def->disks[0].on_delete == MERGE_BACKWARD);
                CHECK(def->disks[1].snapshot == SNAPSHOT_LOCATION_NO);
        }
        CHECK(def->domain_xml && strstr(def->domain_xml, "passwd=\"s3cret-vnc\""));

        /* The verbatim domain is a complete document domain_def_parse() reads,
         * namespaces and multi-line text included. */
        CHECK(domain_def_parse(def->domain_xml, strlen(def->domain_xml), &dom, &error) == 0);
        if (dom) {
                CHECK_STREQ(dom->name, "vm");
                CHECK_STREQ(dom->description, "Guest with a\nmulti-line description");
                CHECK(dom->n_disks == 2);
                CHECK(strv_length(dom->extra_domain) == 1);
        }

        /* Pinned once, checked by eye: libvirt's order and indentation,
         * multi-line text untouched by the re-indentation. */
        out = check_round_trip(def, SNAPSHOT_PARSE_REDEFINE);
        expected = read_fixture("qsnap-written.expected.xml", NULL);
        CHECK_STREQ(out, expected);

        /* Without SECURE, libvirt leaves the VNC password out. */
        plain = format_ok(def, 0);
        CHECK_NOT_CONTAINS(plain, "s3cret-vnc");
        CHECK_CONTAINS(plain, "<graphics type=\"vnc\" port=\"-1\" autoport=\"yes\"/>");
        CHECK_CONTAINS(out, "passwd=\"s3cret-vnc\"");
}

/* <qsnap:nvram file=… internal=…/>: written, read back by a redefinition
 * (the metadata store), ignored in a new snapshot's request, checked. */
static void test_nvram(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL, *back = NULL, *request = NULL, *copy = NULL;
        _cleanup_free_ char *out = NULL, *out2 = NULL;

        def = parse_ok("<domainsnapshot><name>s</name></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE);
        if (!def)
                return;
        def->nvram_file = strdup("/var/lib/qsnap/nvram/u_VARS.fd.s");
        def->nvram_internal = true;
        out = format_ok(def, 0);
        CHECK_CONTAINS(out, "<qsnap:nvram xmlns:qsnap='http://example.org/qsnap/1' "
                            "file='/var/lib/qsnap/nvram/u_VARS.fd.s' internal='yes'/>");
        back = out ? parse_ok(out, SNAPSHOT_PARSE_REDEFINE) : NULL;
        CHECK(back && streq_ptr(back->nvram_file, def->nvram_file) && back->nvram_internal);
        CHECK(back && !back->extra_elements); /* modelled, not kept verbatim */
        out2 = back ? format_ok(back, 0) : NULL;
        CHECK_STREQ(out, out2);
        CHECK(snapshot_def_copy(def, &copy) == 0);
        CHECK(copy && streq_ptr(copy->nvram_file, def->nvram_file) && copy->nvram_internal);
        /* A caller's new snapshot cannot name the copy. */
        request = out ? parse_ok(out, 0) : NULL;
        CHECK(request && !request->nvram_file && !request->nvram_internal && !request->extra_elements);
        parse_fails_str("<domainsnapshot xmlns:q='http://example.org/qsnap/1'>\n<q:nvram file='rel'/></domainsnapshot>",
                        SNAPSHOT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 2, "<qsnap:nvram file='rel'>");
        parse_fails_str("<domainsnapshot xmlns:q='http://example.org/qsnap/1'>\n<q:nvram internal='maybe'/>"
                        "</domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 2, "yes or no");
        free(def->nvram_file);
        def->nvram_file = strdup("relative");
        CHECK(snapshot_def_format(def, 0, &(char *) { NULL }) == -EINVAL);
}

static void test_bulk(void) {
        _cleanup_free_ char *xml = read_fixture("bulk.xml", NULL), *out = NULL, *out2 = NULL, *current = NULL,
                            *current2 = NULL, *error = NULL;
        SnapshotDef **defs = NULL, **again = NULL;
        size_t n = 0, n2 = 0;
        int r;

        r = snapshot_list_parse(xml, strlen(xml), &defs, &n, &current, &error);
        CHECK(r == 0);
        if (r < 0) {
                fprintf(stderr, "bulk parse: %s\n", strna(error));
                return;
        }
        CHECK(n == 3);
        CHECK_STREQ(current, "child");
        if (n == 3) {
                CHECK_STREQ(defs[0]->name, "root");
                CHECK(!defs[0]->parent);
                CHECK_STREQ(defs[1]->parent, "root");
                CHECK_STREQ(defs[2]->parent, "root");
                CHECK(defs[1]->memory == SNAPSHOT_LOCATION_INTERNAL);
                CHECK(strv_length(defs[1]->extra_elements) == 1);
                /* The namespace declared on <domain> stays with it. */
                CHECK_CONTAINS(defs[0]->domain_xml, "<domain xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\" type=\"kvm\">");
                CHECK(!defs[2]->domain_xml);
        }

        CHECK(snapshot_list_format(defs, n, current, &out) == 0);
        CHECK(out && strncmp(out, "<snapshots current='child'>\n  <domainsnapshot>\n    <name>root</name>\n", 69) == 0);
        /* One level deeper than a lone snapshot, domains and extras included. */
        CHECK_CONTAINS(out, "\n    <domain xmlns:qemu=\"http://libvirt.org/schemas/domain/qemu/1.0\" type=\"kvm\">\n"
                            "      <name>vm</name>\n");
        CHECK_CONTAINS(out, "\n      <qemu:commandline>\n        <qemu:arg value=\"-no-user-config\"/>\n");
        CHECK_CONTAINS(out, "\n    <cookie>\n      <cpu mode=\"custom\" match=\"exact\" check=\"full\">\n"
                            "        <model fallback=\"forbid\">qemu64</model>\n      </cpu>\n    </cookie>\n");
        CHECK_CONTAINS(out, "      <disk name='vda' snapshot='external' type='file'>\n        <driver type='qcow2'/>\n");
        CHECK(out && strstr(out, "</snapshots>\n") && streq(strstr(out, "</snapshots>\n"), "</snapshots>\n"));

        r = out ? snapshot_list_parse(out, strlen(out), &again, &n2, &current2, NULL) : -EINVAL;
        CHECK(r == 0 && n2 == n);
        CHECK_STREQ(current2, current);
        for (size_t i = 0; r == 0 && i < n && i < n2; i++)
                CHECK(def_equal(defs[i], again[i]));
        CHECK(r == 0 && snapshot_list_format(again, n2, current2, &out2) == 0);
        CHECK_STREQ(out2, out);

        {
                _cleanup_free_ char *c1 = canonical(xml), *c2 = out ? canonical(out) : NULL;
                CHECK_STREQ(c2, c1);
        }

        /* What could not be read back is not written. */
        {
                char *bad = NULL;

                CHECK(snapshot_list_format(defs, n, "missing", &bad) == -EINVAL);
                CHECK(snapshot_list_format(defs + 1, n - 1, NULL, &bad) == -EINVAL); /* parent 'root' gone */
                CHECK(!bad);
                if (n == 3) {
                        char *saved = defs[2]->name;

                        defs[2]->name = (char *) "child";
                        CHECK(snapshot_list_format(defs, n, NULL, &bad) == -EINVAL);
                        defs[2]->name = NULL;
                        CHECK(snapshot_list_format(defs, n, NULL, &bad) == -EINVAL);
                        defs[2]->name = saved;
                }
                CHECK(snapshot_list_format(NULL, 0, NULL, &bad) == 0);
                CHECK_STREQ(bad, "<snapshots>\n</snapshots>\n");
                free(bad);
        }

        snapshot_def_array_free(defs, n);
        snapshot_def_array_free(again, n2);
}

static void list_fails(const char *xml, int r, int line, const char *needle) {
        _cleanup_free_ char *error = NULL, *current = NULL;
        SnapshotDef **defs = NULL;
        size_t n = 0;
        int k;

        k = snapshot_list_parse(xml, strlen(xml), &defs, &n, &current, &error);
        n_checks++;
        if (k != r) {
                n_failed++;
                fprintf(stderr, "expected list parse error %d, got %d (%s) for:\n%.400s\n", r, k, strna(error), xml);
                snapshot_def_array_free(defs, n);
                return;
        }
        CHECK(!defs && n == 0 && !current);
        CHECK(error);
        if (line > 0 && error) {
                _cleanup_free_ char *prefix = strprintf("line %d: ", line);
                CHECK(strncmp(error, prefix, strlen(prefix)) == 0);
        }
        if (needle)
                CHECK_CONTAINS(error, needle);
}

static void test_bulk_errors(void) {
        static const struct {
                const char *xml;
                int line;
                const char *message;
        } cases[] = {
                { "<domainsnapshot/>", 1, "root element is <domainsnapshot>, expected <snapshots>" },
                { "<snapshots>\n<snapshot/></snapshots>", 2, "unexpected <snapshot> in <snapshots>, expected <domainsnapshot>" },
                { "<snapshots>\n<domainsnapshot/></snapshots>", 2, "<domainsnapshot> has no <name>" },
                { "<snapshots>\n<domainsnapshot><name>a</name></domainsnapshot>\n<domainsnapshot><name>b</name>"
                  "</domainsnapshot>\n<domainsnapshot><name>a</name></domainsnapshot></snapshots>",
                  4, "snapshot 'a' appears more than once, first on line 2" },
                { "<snapshots>\n<domainsnapshot><name>a</name><parent><name>gone</name></parent></domainsnapshot>"
                  "</snapshots>",
                  2, "snapshot 'a' names parent 'gone', which is not in the file" },
                { "<snapshots>\n<domainsnapshot><name>a</name><parent><name>b</name></parent></domainsnapshot>\n"
                  "<domainsnapshot><name>b</name><parent><name>a</name></parent></domainsnapshot></snapshots>",
                  2, "is its own ancestor" },
                { "<snapshots>\n<domainsnapshot><name>a</name><parent><name>a</name></parent></domainsnapshot></snapshots>",
                  2, "snapshot 'a' is its own ancestor" },
                { "<snapshots current='z'>\n<domainsnapshot><name>a</name></domainsnapshot></snapshots>", 1,
                  "<snapshots current='z'> names no snapshot in the file" },
                { "<snapshots current=''>\n<domainsnapshot><name>a</name></domainsnapshot></snapshots>", 1,
                  "<snapshots current=''> is empty" },
                { "<snapshots>\n<domainsnapshot><name>a</name><active>1</active></domainsnapshot>\n"
                  "<domainsnapshot><name>b</name><active>1</active></domainsnapshot></snapshots>",
                  3, "more than one snapshot has <active>1</active>, the first on line 2" },
                { "<snapshots current='a'>\n<domainsnapshot><name>a</name></domainsnapshot>\n"
                  "<domainsnapshot><name>b</name><active>1</active></domainsnapshot></snapshots>",
                  3, "snapshot 'b' has <active>1</active>, but <snapshots current='a'>" },
                { "<snapshots>\n<domainsnapshot><name>a</name>\n<state>asleep</state></domainsnapshot></snapshots>", 3,
                  "<state> 'asleep' is not a snapshot state" },
                { "<snapshots>\nstray</snapshots>", 2, "unexpected text in <snapshots>: 'stray'" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                list_fails(cases[i].xml, -QSNAP_E_INVALID_XML, cases[i].line, cases[i].message);
        list_fails("<snapshots><domainsnapshot>", -QSNAP_E_INVALID_XML, 1, NULL);
        list_fails("", -QSNAP_E_INVALID_XML, 0, "empty");

        /* Empty lists, and the current one from libvirt's <active>. */
        {
                _cleanup_free_ char *current = NULL;
                SnapshotDef **defs = (SnapshotDef **) (uintptr_t) 0x1;
                size_t n = 7;

                CHECK(snapshot_list_parse("<snapshots/>", 12, &defs, &n, &current, NULL) == 0);
                CHECK(!defs && n == 0 && !current);
                CHECK(snapshot_list_parse("<snapshots>\n<domainsnapshot><name>a</name><active>0</active></domainsnapshot>"
                                          "<domainsnapshot><name>b</name><active>1</active></domainsnapshot></snapshots>",
                                          SIZE_MAX / 4, &defs, &n, &current, NULL) == -QSNAP_E_INVALID_XML);
                CHECK(!current);
        }
        {
                const char *xml = "<snapshots>\n<domainsnapshot><name>a</name><active>0</active></domainsnapshot>"
                                  "<domainsnapshot><name>b</name><active>1</active></domainsnapshot></snapshots>";
                _cleanup_free_ char *current = NULL;
                SnapshotDef **defs = NULL;
                size_t n = 0;

                CHECK(snapshot_list_parse(xml, strlen(xml), &defs, &n, &current, NULL) == 0);
                CHECK(n == 2);
                CHECK_STREQ(current, "b");
                snapshot_def_array_free(defs, n);
        }
}

/* Thousands of snapshots, each declaring the same namespace and together
 * larger than one document may be: fine for the bulk file, and linear. */
static void test_bulk_large(void) {
        static const char entry[] =
                "  <domainsnapshot>\n    <name>s%05u</name>\n%s    <creationTime>%u</creationTime>\n"
                "    <domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
                "      <name>vm</name>\n      <description>padding padding padding padding padding padding padding "
                "padding padding padding padding padding padding padding padding padding padding</description>\n"
                "      <memory>1024</memory>\n      <qemu:commandline><qemu:arg value='-S'/></qemu:commandline>\n"
                "    </domain>\n  </domainsnapshot>\n";
        const unsigned n_entries = 12000;
        _cleanup_free_ char *xml = NULL, *out = NULL, *current = NULL, *error = NULL;
        SnapshotDef **defs = NULL;
        size_t size = 0, n = 0;
        FILE *f = open_memstream(&xml, &size);
        struct timespec a, b;
        int r;

        if (!f)
                abort();
        fputs("<snapshots current='s11999'>\n", f);
        for (unsigned i = 0; i < n_entries; i++) {
                char parent[64] = "";

                if (i > 0)
                        snprintf(parent, sizeof(parent), "    <parent>\n      <name>s%05u</name>\n    </parent>\n", i - 1);
                fprintf(f, entry, i, parent, 1700000000 + i);
        }
        fputs("</snapshots>\n", f);
        fclose(f);
        CHECK(size > XML_MAX_DOCUMENT_SIZE);

        clock_gettime(CLOCK_MONOTONIC, &a);
        r = snapshot_list_parse(xml, size, &defs, &n, &current, &error);
        clock_gettime(CLOCK_MONOTONIC, &b);
        CHECK(r == 0);
        if (r < 0)
                fprintf(stderr, "large bulk parse: %s\n", strna(error));
        CHECK(n == n_entries);
        CHECK_STREQ(current, "s11999");
        CHECK(b.tv_sec - a.tv_sec < 30);

        CHECK(snapshot_list_format(defs, n, current, &out) == 0);
        CHECK(out && strlen(out) > XML_MAX_DOCUMENT_SIZE);
        snapshot_def_array_free(defs, n);
}

static void test_redefine_rules(void) {
        static const struct {
                const char *xml;
                SnapshotParseFlags flags;
                int line;
                const char *message;
        } cases[] = {
                { "<domainsnapshot>\n<memory snapshot='internal' file='/m'/></domainsnapshot>", 0, 2,
                  "<memory file='/m'> needs snapshot='external', not 'internal'" },
                { "<domainsnapshot>\n<memory snapshot='no' file='/m'/></domainsnapshot>", 0, 2, "not 'no'" },
                { "<domainsnapshot>\n<memory snapshot='external'/></domainsnapshot>", 0, 2,
                  "<memory snapshot='external'> needs a file= attribute" },
                { "<domainsnapshot>\n<memory snapshot='manual'/></domainsnapshot>", 0, 2,
                  "<memory snapshot='manual'> is not supported" },
                { "<domainsnapshot>\n<memory snapshot='default'/></domainsnapshot>", 0, 2,
                  "<memory snapshot='default'> is not a snapshot location" },
                { "<domainsnapshot>\n<memory snapshot='bogus'/></domainsnapshot>", 0, 2, "expected 'no', 'internal', 'external' or 'manual'" },
                { "<domainsnapshot>\n<memory file='mem.img'/></domainsnapshot>", 0, 2,
                  "<memory file='mem.img'> is not an absolute path" },
                { "<domainsnapshot>\n<memory file=''/></domainsnapshot>", 0, 2, "is empty" },
                { "<domainsnapshot>\n<memory snapshot='no'><x/></memory></domainsnapshot>", 0, 2, "<memory> must be empty, found <x>" },
                { "<domainsnapshot><state>shutoff</state>\n<memory snapshot='internal'/></domainsnapshot>",
                  SNAPSHOT_PARSE_REDEFINE, 2, "a snapshot in state 'shutoff' has no memory state to save" },
                { "<domainsnapshot>\n<memory file='/m'/><state>disk-snapshot</state></domainsnapshot>",
                  SNAPSHOT_PARSE_REDEFINE, 2, "in state 'disk-snapshot'" },
                { "<domainsnapshot>\n<state>asleep</state></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2,
                  "<state> 'asleep' is not a snapshot state, expected running, paused, shutoff, disk-snapshot" },
                { "<domainsnapshot>\n<state>running</state><state>paused</state></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE,
                  2, "<state> appears more than once" },
                { "<domainsnapshot>\n<creationTime>soon</creationTime></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2,
                  "<creationTime> is not an integer: 'soon'" },
                { "<domainsnapshot>\n<creationTime>1.5</creationTime></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2,
                  "not an integer" },
                { "<domainsnapshot>\n<creationTime></creationTime></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2,
                  "not an integer" },
                { "<domainsnapshot>\n<creationTime>9223372036854775808</creationTime></domainsnapshot>",
                  SNAPSHOT_PARSE_REDEFINE, 2, "<creationTime> is out of range" },
                { "<domainsnapshot>\n<creationTime>--1</creationTime></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2,
                  "not an integer" },
                { "<domainsnapshot>\n<parent/></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2, "<parent> has no <name>" },
                { "<domainsnapshot><parent>\n<name></name></parent></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2,
                  "<parent><name> is empty" },
                { "<domainsnapshot><parent><name>a</name>\n<uuid>x</uuid></parent></domainsnapshot>",
                  SNAPSHOT_PARSE_REDEFINE, 2, "unexpected <uuid> in <parent>, expected <name>" },
                { "<domainsnapshot><parent><name>a</name>\n<name>b</name></parent></domainsnapshot>",
                  SNAPSHOT_PARSE_REDEFINE, 2, "<name> appears more than once" },
                { "<domainsnapshot><domain/>\n<domain/></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2,
                  "<domain> appears more than once, first on line 1" },
                { "<domainsnapshot><inactiveDomain/>\n<inactiveDomain/></domainsnapshot>", SNAPSHOT_PARSE_REDEFINE, 2,
                  "<inactiveDomain> appears more than once" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                parse_fails_str(cases[i].xml, cases[i].flags, -QSNAP_E_INVALID_XML, cases[i].line, cases[i].message);

        /* Without REDEFINE those elements are ignored, bad or not, and an
         * offline state no longer constrains the memory. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d = parse_ok(
                        "<domainsnapshot><state>asleep</state><state>x</state><creationTime>soon</creationTime><parent/>"
                        "<domain>junk<x/></domain><inactiveDomain/><memory snapshot='internal'/></domainsnapshot>",
                        0);
                if (d) {
                        CHECK(!d->has_state && !d->has_creation_time && !d->parent && !d->domain_xml);
                        CHECK(!d->inactive_domain_xml && !d->extra_elements);
                        CHECK(d->memory == SNAPSHOT_LOCATION_INTERNAL);
                }
        }

        /* A memory file alone means external (libvirt). */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d =
                        parse_ok("<domainsnapshot><memory file='/var/m.img'/></domainsnapshot>", 0);
                _cleanup_free_ char *out = NULL;

                if (d) {
                        CHECK(d->memory == SNAPSHOT_LOCATION_EXTERNAL);
                        out = check_round_trip(d, 0);
                        CHECK_CONTAINS(out, "<memory snapshot='external' file='/var/m.img'/>");
                }
        }

        /* Creation times, state strings, whitespace around values. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d = parse_ok(
                        "<domainsnapshot><state> pmsuspended\n</state><creationTime> -9223372036854775808 </creationTime>"
                        "</domainsnapshot>",
                        SNAPSHOT_PARSE_REDEFINE);
                _cleanup_free_ char *out = NULL;

                if (d) {
                        CHECK(d->state == SNAPSHOT_STATE_PMSUSPENDED);
                        CHECK(d->creation_time == INT64_MIN);
                        out = check_round_trip(d, SNAPSHOT_PARSE_REDEFINE);
                        CHECK_CONTAINS(out, "<creationTime>-9223372036854775808</creationTime>");
                }
        }
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d = parse_ok(
                        "<domainsnapshot><state>nostate</state><creationTime>9223372036854775807</creationTime>"
                        "</domainsnapshot>",
                        SNAPSHOT_PARSE_REDEFINE);
                _cleanup_free_ char *out = NULL;

                if (d) {
                        CHECK(d->state == SNAPSHOT_STATE_NOSTATE && d->creation_time == INT64_MAX);
                        out = check_round_trip(d, SNAPSHOT_PARSE_REDEFINE);
                }
        }
        /* libvirt's redefinition needs name, state and creationTime; so does
         * the model, which checks: the parser only reports what is there. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *d = parse_ok("<domainsnapshot/>", SNAPSHOT_PARSE_REDEFINE);
                if (d) {
                        CHECK(!d->name && !d->has_state && !d->has_creation_time && d->active == -1);
                        CHECK(d->memory == SNAPSHOT_LOCATION_DEFAULT && !d->has_disks);
                }
        }
}

static void test_semantic_errors(void) {
        static const struct {
                const char *xml;
                int line;
                const char *message;
        } cases[] = {
                { "<foo/>", 1, "line 1: root element is <foo>, expected <domainsnapshot>" },
                { "<x:domainsnapshot xmlns:x='urn:x'/>", 1,
                  "root element <domainsnapshot> is in namespace 'urn:x', expected none" },
                { "<domainsnapshot xmlns='urn:x'/>", 1, "in namespace 'urn:x'" },
                { "<snapshots/>", 1, "root element is <snapshots>, expected <domainsnapshot>" },
                { "<domainsnapshot>\n<name></name></domainsnapshot>", 2, "<name> is empty" },
                { "<domainsnapshot>\n<name> \n\t</name></domainsnapshot>", 2, "<name> is empty" },
                { "<domainsnapshot><name>a</name>\n<name>b</name></domainsnapshot>", 2,
                  "<name> appears more than once, first on line 1" },
                { "<domainsnapshot>\n<name>a<b/></name></domainsnapshot>", 2, "<name> may only contain text, found <b>" },
                { "<domainsnapshot><description>a</description>\n<description>b</description></domainsnapshot>", 2,
                  "<description> appears more than once" },
                { "<domainsnapshot>\n<active>yes</active></domainsnapshot>", 2, "<active> is not a number: 'yes'" },
                { "<domainsnapshot>\n<active>99999999999</active></domainsnapshot>", 2, "<active> is not a number" },
                { "<domainsnapshot><active>1</active>\n<active>1</active></domainsnapshot>", 2, "<active> appears more than once" },
                { "<domainsnapshot>\nstray<name>a</name></domainsnapshot>", 2, "unexpected text in <domainsnapshot>: 'stray'" },
                { "<domainsnapshot><disks>\n<disk/></disks></domainsnapshot>", 2, "<disk> has no name= attribute" },
                { "<domainsnapshot><disks>\n<disk name=''/></disks></domainsnapshot>", 2, "<disk name=''> is empty" },
                { "<domainsnapshot><disks>\n<disk name='images/a.qcow2'/></disks></domainsnapshot>", 2,
                  "<disk name='images/a.qcow2'> is neither a disk target nor an absolute path" },
                { "<domainsnapshot><disks>\n<disk name='vda' snapshot='yes'/></disks></domainsnapshot>", 2,
                  "<disk snapshot='yes'> is not a snapshot location" },
                { "<domainsnapshot><disks>\n<disk name='vda' snapshot='default'/></disks></domainsnapshot>", 2,
                  "<disk snapshot='default'> is not a snapshot location" },
                { "<domainsnapshot><disks>\n<disk name='vda' type='block'><source dev='/dev/sda'/></disk></disks>"
                  "</domainsnapshot>",
                  2, "disk 'vda' has type 'block': only type='file' is supported" },
                { "<domainsnapshot><disks>\n<disk name='vda' type='network'/></disks></domainsnapshot>", 2,
                  "only type='file' is supported" },
                { "<domainsnapshot><disks><disk name='vda'>\n<driver type='vmdk'/></disk></disks></domainsnapshot>", 2,
                  "disk 'vda' has driver type 'vmdk', expected 'qcow2' or 'raw'" },
                { "<domainsnapshot><disks><disk name='vda'>\n<source file='new.qcow2'/></disk></disks></domainsnapshot>", 2,
                  "<source file='new.qcow2'> is not an absolute path" },
                { "<domainsnapshot><disks><disk name='vda' snapshot='no'>\n<source file='/new.qcow2'/></disk></disks>"
                  "</domainsnapshot>",
                  2, "disk 'vda' has <source>, which only snapshot='external' may have, not 'no'" },
                { "<domainsnapshot><disks><disk name='vda' snapshot='internal'>\n<driver type='qcow2'/></disk></disks>"
                  "</domainsnapshot>",
                  2, "disk 'vda' has <driver>, which only snapshot='external' may have, not 'internal'" },
                { "<domainsnapshot><disks><disk name='vda' snapshot='manual'>\n<source/></disk></disks></domainsnapshot>", 2,
                  "not 'manual'" },
                { "<domainsnapshot><disks><disk name='vda'><source file='/a'/>\n<source file='/b'/></disk></disks>"
                  "</domainsnapshot>",
                  2, "<source> appears more than once, first on line 1" },
                { "<domainsnapshot><disks><disk name='vda'><driver/>\n<driver/></disk></disks></domainsnapshot>", 2,
                  "<driver> appears more than once" },
                { "<domainsnapshot><disks><disk name='vda'>\nstray</disk></disks></domainsnapshot>", 2,
                  "unexpected text in <disk>: 'stray'" },
                { "<domainsnapshot><disks><disk name='vda'><source file='/a'>\nstray</source></disk></disks></domainsnapshot>", 2,
                  "unexpected text in <source>" },
                { "<domainsnapshot><disks>\n<disk name='vda'/>\n<disk name='vdb'/>\n<disk name='vda'/></disks></domainsnapshot>", 4,
                  "disk 'vda' appears more than once in <disks>, first on line 2" },
                { "<domainsnapshot><disks>\n<disk name='/a b'/>\n<disk name='/a b'/></disks></domainsnapshot>", 3,
                  "disk '/a b' appears more than once" },
                { "<domainsnapshot><disks>\n<volume name='vda'/></disks></domainsnapshot>", 2,
                  "unexpected <volume> in <disks>, expected <disk>" },
                { "<domainsnapshot><disks/>\n<disks/></domainsnapshot>", 2, "<disks> appears more than once" },
                { "<domainsnapshot><memory snapshot='no'/>\n<memory snapshot='no'/></domainsnapshot>", 2,
                  "<memory> appears more than once" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                parse_fails_str(cases[i].xml, SNAPSHOT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, cases[i].line, cases[i].message);

        /* Unknown flags are an error, not ignored. */
        parse_fails_str("<domainsnapshot/>", 1 << 5, -EINVAL, 0, "unknown parse flags 0x20");
        CHECK(snapshot_def_parse("<domainsnapshot/>", 17, 0, NULL, NULL) == -EINVAL);
        CHECK(snapshot_def_parse(NULL, 3, 0, &(SnapshotDef *) { NULL }, NULL) == -EINVAL);
}

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

        /* Nothing reaches stderr, and the caller's libxml2 handler stays. */
        fflush(stderr);
        saved_stderr = dup(STDERR_FILENO);
        capture = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        CHECK(saved_stderr >= 0 && capture >= 0);
        if (capture >= 0)
                dup2(capture, STDERR_FILENO);
        xmlSetStructuredErrorFunc((void *) &sentinel_calls, sentinel_handler);

        parse_fails_str(mismatch, 0, -QSNAP_E_INVALID_XML, 4, "Opening and ending tag mismatch: description line 3 and domainsnapshot");
        parse_fails_str(truncated, SNAPSHOT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 3, NULL);
        parse_fails_str("<domainsnapshot><name>x</na", 0, -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails_str("not XML", 0, -QSNAP_E_INVALID_XML, 1, "Start tag expected");
        parse_fails_str("\n\n<domainsnapshot/><domainsnapshot/>", 0, -QSNAP_E_INVALID_XML, 3, "Extra content");
        parse_fails_str("<domainsnapshot><name>a & b</name></domainsnapshot>", 0, -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails_str("<domainsnapshot><disks><disk name='a' name='b'/></disks></domainsnapshot>", 0, -QSNAP_E_INVALID_XML, 1,
                        "redefined");
        parse_fails_str("<domainsnapshot>\n<q:x/></domainsnapshot>", 0, -QSNAP_E_INVALID_XML, 2, "Namespace prefix q");
        parse_fails_str("<domainsnapshot><name>\xff\xfe</name></domainsnapshot>", 0, -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails("", 0, 0, -QSNAP_E_INVALID_XML, 0, "empty");
        parse_fails(NULL, 0, 0, -QSNAP_E_INVALID_XML, 0, "empty");
        parse_fails("<domainsnapshot>\0</domainsnapshot>", 34, 0, -QSNAP_E_INVALID_XML, 1, "NUL byte");
        {
                SnapshotDef **defs = NULL;
                size_t n = 0;

                CHECK(snapshot_list_parse("<snapshots><x></snapshots>", 26, &defs, &n, NULL, NULL) == -QSNAP_E_INVALID_XML);
        }

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
        if (capture >= 0 && st.st_size > 0) {
                char buf[4096];
                ssize_t k = pread(capture, buf, sizeof(buf) - 1, 0);

                buf[k > 0 ? k : 0] = '\0';
                fprintf(stderr, "written to stderr meanwhile:\n%s\n", buf);
        }
        if (capture >= 0)
                close(capture);

        /* A terminating NUL counted in the size is fine. */
        {
                const char xml[] = "<domainsnapshot><name>n</name></domainsnapshot>";
                _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;

                CHECK(snapshot_def_parse(xml, sizeof(xml), 0, &def, NULL) == 0);
                CHECK(def && streq(def->name, "n"));
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
        SnapshotDef *def = NULL;
        int r;

        r = snapshot_def_parse(xml, strlen(xml), SNAPSHOT_PARSE_REDEFINE, &def, &error);
        CHECK(r == -QSNAP_E_INVALID_XML);
        CHECK(!def);
        CHECK(error);
        if (error && secret)
                CHECK(!strstr(error, secret));
        if (r >= 0)
                snapshot_def_free(def);
}

static void test_entities(void) {
        _cleanup_free_ char *laughs = read_fixture("billion-laughs.xml", NULL);
        _cleanup_free_ char *xxe = read_fixture("xxe.xml", NULL);
        _cleanup_free_ char *xxe_domain = read_fixture("xxe-in-domain.xml", NULL);
        const char *secret = passwd_line();

        parse_fails_str(laughs, 0, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'lol'");
        parse_fails_str(xxe, SNAPSHOT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'xxe'");
        parse_fails_str(xxe_domain, SNAPSHOT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'remote'");
        check_rejected_no_leak(xxe, secret);
        check_rejected_no_leak(xxe_domain, secret);
        check_rejected_no_leak("<!DOCTYPE domainsnapshot SYSTEM 'file:///etc/passwd'>\n"
                               "<domainsnapshot><domain><name>&xxe;</name></domain></domainsnapshot>",
                               secret);
        check_rejected_no_leak("<domainsnapshot><cookie>&undeclared;</cookie></domainsnapshot>", secret);
        parse_fails_str("<!DOCTYPE domainsnapshot [\n<!ATTLIST disk snapshot CDATA 'external'>\n]><domainsnapshot/>", 0, -QSNAP_E_INVALID_XML,
                        2, "DTD attribute declarations are not allowed");
        parse_fails_str("<!DOCTYPE domainsnapshot [\n<!ELEMENT domainsnapshot ANY>\n]><domainsnapshot/>", 0, -QSNAP_E_INVALID_XML, 2,
                        "DTD element declarations are not allowed");

        /* The same hardening for the bulk file. */
        {
                _cleanup_free_ char *error = NULL;
                SnapshotDef **defs = NULL;
                size_t n = 0;
                const char *bulk = "<!DOCTYPE snapshots [\n<!ENTITY xxe SYSTEM 'file:///etc/passwd'>\n]>\n"
                                   "<snapshots><domainsnapshot><name>&xxe;</name></domainsnapshot></snapshots>";

                CHECK(snapshot_list_parse(bulk, strlen(bulk), &defs, &n, NULL, &error) == -QSNAP_E_INVALID_XML);
                CHECK(!defs && error && !strstr(error, secret));
                CHECK_CONTAINS(error, "line 2: entity declarations are not allowed: 'xxe'");
        }

        /* XInclude is never processed: kept verbatim, in a domain or not. */
        {
                _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_ok(
                        "<domainsnapshot xmlns:xi='http://www.w3.org/2001/XInclude'><name>a</name>"
                        "<xi:include href='/etc/passwd' parse='text'/>"
                        "<domain><xi:include href='/etc/passwd' parse='text'/></domain></domainsnapshot>",
                        SNAPSHOT_PARSE_REDEFINE);
                _cleanup_free_ char *out = NULL;

                if (def) {
                        CHECK(strv_length(def->extra_elements) == 1);
                        out = format_ok(def, SNAPSHOT_FORMAT_SECURE);
                        CHECK(out && !strstr(out, secret));
                        CHECK_CONTAINS(out, "<xi:include xmlns:xi=\"http://www.w3.org/2001/XInclude\" href=\"/etc/passwd\"");
                }
        }
}

static void test_size_limit(void) {
        static const char head[] = "<domainsnapshot><name>big</name>";
        static const char tail[] = "</domainsnapshot>";
        size_t size = XML_MAX_DOCUMENT_SIZE;
        _cleanup_free_ char *xml = malloc(size + 2);
        SnapshotDef *def = NULL;

        if (!xml)
                abort();
        memset(xml, ' ', size + 1);
        memcpy(xml, head, strlen(head));
        memcpy(xml + size - strlen(tail), tail, strlen(tail));
        xml[size] = '\0';
        CHECK(snapshot_def_parse(xml, size, 0, &def, NULL) == 0);
        CHECK(def && streq(def->name, "big"));
        def = snapshot_def_free(def);

        memcpy(xml + size - strlen(tail), "   ", 3);
        memcpy(xml + size + 1 - strlen(tail), tail, strlen(tail));
        xml[size + 1] = '\0';
        parse_fails(xml, size + 1, 0, -QSNAP_E_INVALID_XML, 0, "larger than the limit of 4194304 bytes");
        CHECK(snapshot_def_parse(xml, SIZE_MAX, 0, &def, NULL) == -QSNAP_E_INVALID_XML);
        CHECK(!def);
}

static void test_pathological(void) {
        _cleanup_free_ char *attrs = NULL, *ns = NULL, *many = NULL, *lines = NULL, *out = NULL;
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
        struct timespec a, b;
        char *p;

        attrs = malloc(257 * 16 + 128);
        ns = malloc(129 * 24 + 128);
        if (!attrs || !ns)
                abort();
        p = stpcpy(attrs, "<domainsnapshot>\n<x");
        for (int i = 0; i < 257; i++)
                p += sprintf(p, " a%d='='", i);
        strcpy(p, "/></domainsnapshot>");
        parse_fails_str(attrs, 0, -QSNAP_E_INVALID_XML, 2, "element has more than 256 attributes");

        /* 129 namespaces in scope at once; spread over siblings they are fine
         * (see test_bulk_large()). */
        p = stpcpy(ns, "<domainsnapshot>\n<x");
        for (int i = 0; i < 129; i++)
                p += sprintf(p, " xmlns:p%d='urn:%d'", i, i);
        strcpy(p, "/></domainsnapshot>");
        parse_fails_str(ns, 0, -QSNAP_E_INVALID_XML, 2, "document declares more than 128 namespaces in scope");
        p = stpcpy(ns, "<domainsnapshot xmlns:r='urn:r'>");
        for (int i = 0; i < 129; i++)
                p += sprintf(p, "<x xmlns:p='urn:%d'/>", i);
        strcpy(p, "</domainsnapshot>");
        def = parse_ok(ns, 0);
        CHECK(def && strv_length(def->extra_elements) == 129);
        def = snapshot_def_free(def);

        /* 200000 unknown elements, at the root and in a disk: linear both ways. */
        many = malloc(200000 * 8 + 256);
        if (!many)
                abort();
        p = stpcpy(many, "<domainsnapshot><disks><disk name='vda'>");
        for (int i = 0; i < 100000; i++)
                p = stpcpy(p, "<a>\n</a>");
        p = stpcpy(p, "</disk></disks>");
        for (int i = 0; i < 100000; i++)
                p = stpcpy(p, "<b/>");
        strcpy(p, "</domainsnapshot>");
        clock_gettime(CLOCK_MONOTONIC, &a);
        def = parse_ok(many, 0);
        CHECK(def && strv_length(def->extra_elements) == 100000);
        CHECK(def && def->n_disks == 1 && strv_length(def->disks[0].extra_elements) == 100000);
        if (def)
                out = format_ok(def, 0);
        clock_gettime(CLOCK_MONOTONIC, &b);
        CHECK(out && strlen(out) > 1000000);
        CHECK(b.tv_sec - a.tv_sec < 30);

        /* Line numbers past 65535 are right. */
        lines = malloc(70000 + 128);
        if (!lines)
                abort();
        p = stpcpy(lines, "<domainsnapshot>");
        memset(p, '\n', 70000);
        strcpy(p + 70000, "<memory snapshot='manual'/></domainsnapshot>");
        parse_fails_str(lines, 0, -QSNAP_E_INVALID_XML, 70001, "<memory snapshot='manual'> is not supported");
}

static const char *const odd_names[] = {
        "with spaces",
        " leading and trailing ",
        "slash/and\\backslash",
        "ünïcödé ✓ 快照 🚀",
        "<tag> & \"quote\" 'apos'",
        "new\nline",
        "tab\tand\rcarriage return",
        "]]>",
        "-",
        "1700000000",
        "%s%n",
};

static void test_odd_names(void) {
        for (size_t i = 0; i < ELEMENTSOF(odd_names); i++) {
                SnapshotDisk disk = {
                        .name = (char *) "vda",
                        .snapshot = SNAPSHOT_LOCATION_EXTERNAL,
                        .format = DISK_FORMAT_QCOW2,
                        .source = strprintf("/images/%s.qcow2", odd_names[i]),
                };
                SnapshotDef def = {
                        .name = (char *) odd_names[i],
                        .description = (char *) odd_names[i],
                        .parent = (char *) odd_names[i],
                        .has_state = true,
                        .state = SNAPSHOT_STATE_DISK_SNAPSHOT,
                        .memory = SNAPSHOT_LOCATION_NO,
                        .disks = &disk,
                        .n_disks = 1,
                        .has_disks = true,
                        .active = -1,
                };
                _cleanup_free_ char *out = NULL;

                out = check_round_trip(&def, SNAPSHOT_PARSE_REDEFINE);
                CHECK(out);
                free(disk.source);
        }

        /* Long names. */
        {
                _cleanup_free_ char *name = malloc(100001);
                SnapshotDef def = { .name = name, .active = -1 };
                _cleanup_free_ char *out = NULL;

                if (!name)
                        abort();
                memset(name, 'n', 100000);
                name[100000] = '\0';
                out = check_round_trip(&def, 0);
        }
}

/* What the model builds by hand must format, or be refused, never be
 * written so that it would read back differently. */
static void test_writer_checks(void) {
        SnapshotDisk disk = { .name = (char *) "vda", .format = _DISK_FORMAT_INVALID };
        SnapshotDef def = { .name = (char *) "s", .disks = &disk, .n_disks = 1, .active = -1 };
        char *out = NULL;

#define FORMAT_FAILS(setup, undo)                                                       \
        do {                                                                            \
                setup;                                                                  \
                CHECK(snapshot_def_format(&def, SNAPSHOT_FORMAT_SECURE, &out) == -EINVAL); \
                CHECK(!out);                                                            \
                out = mfree(out);                                                       \
                undo;                                                                   \
        } while (0)

        CHECK(snapshot_def_format(&def, 0, &out) == 0);
        CHECK_STREQ(out, "<domainsnapshot>\n  <name>s</name>\n  <disks>\n    <disk name='vda'/>\n  </disks>\n</domainsnapshot>\n");
        out = mfree(out);

        FORMAT_FAILS(def.name = (char *) "", def.name = (char *) "s");
        FORMAT_FAILS(def.name = (char *) " \n", def.name = (char *) "s");
        FORMAT_FAILS(def.name = (char *) "bell\a", def.name = (char *) "s");
        FORMAT_FAILS(def.name = (char *) "bad\xff", def.name = (char *) "s");
        FORMAT_FAILS(def.description = (char *) "\x01", def.description = NULL);
        FORMAT_FAILS(def.parent = (char *) "", def.parent = NULL);
        FORMAT_FAILS((def.has_state = true, def.state = _SNAPSHOT_STATE_MAX), def.has_state = false);
        FORMAT_FAILS(def.memory = SNAPSHOT_LOCATION_MANUAL, def.memory = SNAPSHOT_LOCATION_DEFAULT);
        FORMAT_FAILS(def.memory = (SnapshotLocation) 17, def.memory = SNAPSHOT_LOCATION_DEFAULT);
        FORMAT_FAILS(def.memory = SNAPSHOT_LOCATION_EXTERNAL, def.memory = SNAPSHOT_LOCATION_DEFAULT);
        FORMAT_FAILS(def.memory_file = (char *) "/m", def.memory_file = NULL);
        FORMAT_FAILS((def.memory = SNAPSHOT_LOCATION_INTERNAL, def.memory_file = (char *) "/m"),
                     (def.memory = SNAPSHOT_LOCATION_DEFAULT, def.memory_file = NULL));
        FORMAT_FAILS((def.memory = SNAPSHOT_LOCATION_EXTERNAL, def.memory_file = (char *) "m"),
                     (def.memory = SNAPSHOT_LOCATION_DEFAULT, def.memory_file = NULL));
        FORMAT_FAILS((def.memory = SNAPSHOT_LOCATION_INTERNAL, def.has_state = true, def.state = SNAPSHOT_STATE_SHUTOFF),
                     (def.memory = SNAPSHOT_LOCATION_DEFAULT, def.has_state = false));
        FORMAT_FAILS(disk.name = NULL, disk.name = (char *) "vda");
        FORMAT_FAILS(disk.name = (char *) "a/b", disk.name = (char *) "vda");
        FORMAT_FAILS(disk.snapshot = (SnapshotLocation) 9, disk.snapshot = SNAPSHOT_LOCATION_DEFAULT);
        FORMAT_FAILS(disk.format = (DiskFormat) 9, disk.format = _DISK_FORMAT_INVALID);
        FORMAT_FAILS(disk.source = (char *) "rel.qcow2", disk.source = NULL);
        FORMAT_FAILS((disk.snapshot = SNAPSHOT_LOCATION_NO, disk.source = (char *) "/a"),
                     (disk.snapshot = SNAPSHOT_LOCATION_DEFAULT, disk.source = NULL));
        FORMAT_FAILS((disk.snapshot = SNAPSHOT_LOCATION_INTERNAL, disk.format = DISK_FORMAT_QCOW2),
                     (disk.snapshot = SNAPSHOT_LOCATION_DEFAULT, disk.format = _DISK_FORMAT_INVALID));
        FORMAT_FAILS(disk.on_delete = _MERGE_MAX, disk.on_delete = MERGE_DEFAULT);
        FORMAT_FAILS(def.domain_xml = (char *) "not xml", def.domain_xml = NULL);
        FORMAT_FAILS(def.domain_xml = (char *) "<inactiveDomain/>", def.domain_xml = NULL);
        FORMAT_FAILS(def.inactive_domain_xml = (char *) "<domain/>", def.inactive_domain_xml = NULL);
        FORMAT_FAILS(def.domain_xml = (char *) "<!DOCTYPE d [<!ENTITY e 'x'>]><domain>&e;</domain>", def.domain_xml = NULL);
        FORMAT_FAILS((def.extra_elements = (char *[]) { (char *) "", NULL }), def.extra_elements = NULL);
        FORMAT_FAILS((def.extra_elements = (char *[]) { (char *) "<a>\n<b></a>", NULL }), def.extra_elements = NULL);
        {
                SnapshotDisk two[2] = { { .name = (char *) "vda", .format = _DISK_FORMAT_INVALID },
                                        { .name = (char *) "vda", .format = _DISK_FORMAT_INVALID } };
                FORMAT_FAILS((def.revert_disks = two, def.n_revert_disks = 2), (def.revert_disks = NULL, def.n_revert_disks = 0));
                FORMAT_FAILS((def.disks = two, def.n_disks = 2), (def.disks = &disk, def.n_disks = 1));
        }
        CHECK(snapshot_def_format(&def, 1 << 7, &out) == -EINVAL);
        CHECK(snapshot_def_format(NULL, 0, &out) == -EINVAL);
        CHECK(snapshot_def_format(&def, 0, NULL) == -EINVAL);
        CHECK(!out);
#undef FORMAT_FAILS

        /* Normalized the way a reader would: no name is fine, an empty
         * description is none, a new file means external. */
        def.name = NULL;
        def.description = (char *) "";
        disk.source = (char *) "/new.qcow2";
        CHECK(snapshot_def_format(&def, 0, &out) == 0);
        CHECK_STREQ(out, "<domainsnapshot>\n  <disks>\n    <disk name='vda' snapshot='external' type='file'>\n"
                         "      <source file='/new.qcow2'/>\n    </disk>\n  </disks>\n</domainsnapshot>\n");
        free(out);
}

/* The definition the model writes for a new snapshot: built by hand, with
 * the domain from domain_def_format(). */
static void test_model_written(void) {
        _cleanup_(domain_def_freep) DomainDef *dom = NULL;
        _cleanup_(snapshot_def_freep) SnapshotDef *def = new0(SnapshotDef, 1), *back = NULL;
        _cleanup_free_ char *out = NULL, *error = NULL;
        const char *dom_xml = "<domain><name>vm</name><memory>1024</memory><devices><disk><source file='/i/vm.qcow2'/>"
                              "<target dev='vda'/></disk></devices></domain>";
        const char *expected_head = "<domainsnapshot>\n  <name>1718000000</name>\n  <state>running</state>\n  <parent>\n"
                                    "    <name>earlier</name>\n  </parent>\n  <creationTime>1718000000</creationTime>\n"
                                    "  <memory snapshot='internal'/>\n  <disks>\n    <disk name='vda' snapshot='internal'/>\n"
                                    "  </disks>\n  <domain type=\"kvm\">\n    <name>vm</name>\n";

        if (!def || domain_def_parse(dom_xml, strlen(dom_xml), &dom, &error) < 0)
                abort();
        def->name = strdup("1718000000");
        def->has_state = true;
        def->state = SNAPSHOT_STATE_RUNNING;
        def->has_creation_time = true;
        def->creation_time = 1718000000;
        def->memory = SNAPSHOT_LOCATION_INTERNAL;
        def->parent = strdup("earlier");
        def->has_disks = true;
        def->n_disks = 1;
        def->disks = new0(SnapshotDisk, 1);
        def->active = -1;
        if (!def->name || !def->parent || !def->disks)
                abort();
        def->disks[0] = (SnapshotDisk) { .name = strdup("vda"), .snapshot = SNAPSHOT_LOCATION_INTERNAL,
                                         .format = _DISK_FORMAT_INVALID };
        CHECK(domain_def_format(dom, 0, &def->domain_xml) == 0);

        out = format_ok(def, SNAPSHOT_FORMAT_SECURE);
        CHECK(out && strncmp(out, expected_head, strlen(expected_head)) == 0);
        CHECK_CONTAINS(out, "\n    <devices>\n      <disk type=\"file\" device=\"disk\">\n");
        back = out ? parse_ok(out, SNAPSHOT_PARSE_REDEFINE) : NULL;
        if (back) {
                _cleanup_(domain_def_freep) DomainDef *dom2 = NULL;

                CHECK(domain_def_parse(back->domain_xml, strlen(back->domain_xml), &dom2, NULL) == 0);
                CHECK(dom2 && dom2->n_disks == 1 && streq(dom2->disks[0].source, "/i/vm.qcow2"));
                /* The model's text and ours differ in quoting, not in meaning. */
                CHECK(!streq(back->domain_xml, def->domain_xml));
                free(def->domain_xml);
                def->domain_xml = strdup(back->domain_xml);
                CHECK(def_equal(def, back));
        }
}

static void test_unknown_elements(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
        _cleanup_free_ char *out = NULL, *list = NULL;

        def = parse_ok("<domainsnapshot xmlns:x='urn:x'>\n"
                       "  <name>u</name>\n"
                       "  <x:note lang='en'>kept <b>as is</b></x:note>\n"
                       "  <future>\n    <nested a='1'>\n      <deeper/>\n    </nested>\n  </future>\n"
                       "  <disks>\n"
                       "    <disk name='vda' snapshot='external' weird='&lt;&amp;' x:hint='1'>\n"
                       "      <snapshotDeleteInProgress/>\n"
                       "      <driver type='qcow2' x:cache='none'/>\n"
                       "      <source file='/n.qcow2' startupPolicy='optional'>\n"
                       "        <seclabel model='dac' relabel='no'/>\n"
                       "      </source>\n"
                       "    </disk>\n"
                       "  </disks>\n"
                       "  <!-- comments and processing instructions go -->\n"
                       "  <?pi data?>\n"
                       "</domainsnapshot>\n",
                       0);
        if (!def)
                return;
        CHECK(strv_equal(def->extra_elements,
                         (char *[]) { "<x:note xmlns:x=\"urn:x\" lang=\"en\">kept <b>as is</b></x:note>",
                                      "<future>\n  <nested a=\"1\">\n    <deeper/>\n  </nested>\n</future>", NULL }));
        if (def->n_disks == 1) {
                const SnapshotDisk *d = &def->disks[0];

                CHECK(strv_equal(d->extra_attributes, (char *[]) { "xmlns:x=\"urn:x\"", "weird=\"&lt;&amp;\"", "x:hint=\"1\"", NULL }));
                CHECK(strv_equal(d->extra_elements, (char *[]) { "<snapshotDeleteInProgress/>", NULL }));
                CHECK(strv_equal(d->extra_driver_attributes, (char *[]) { "xmlns:x=\"urn:x\"", "x:cache=\"none\"", NULL }));
                CHECK(strv_equal(d->extra_source_attributes, (char *[]) { "startupPolicy=\"optional\"", NULL }));
        }
        out = check_round_trip(def, 0);
        CHECK_CONTAINS(out, "  <future>\n    <nested a=\"1\">\n      <deeper/>\n    </nested>\n  </future>\n");
        CHECK_CONTAINS(out, "    <disk name='vda' snapshot='external' type='file' xmlns:x=\"urn:x\" weird=\"&lt;&amp;\" x:hint=\"1\">\n"
                            "      <driver type='qcow2' xmlns:x=\"urn:x\" x:cache=\"none\"/>\n"
                            "      <source file='/n.qcow2' startupPolicy=\"optional\">\n"
                            "        <seclabel model=\"dac\" relabel=\"no\"/>\n"
                            "      </source>\n"
                            "      <snapshotDeleteInProgress/>\n"
                            "    </disk>\n");
        CHECK_NOT_CONTAINS(out, "comments");
        CHECK_NOT_CONTAINS(out, "<?pi");

        /* One level deeper inside the bulk file. */
        def->name = mfree(def->name);
        def->name = strdup("u");
        CHECK(snapshot_list_format((SnapshotDef *[]) { def }, 1, "u", &list) == 0);
        CHECK_CONTAINS(list, "\n    <future>\n      <nested a=\"1\">\n        <deeper/>\n      </nested>\n    </future>\n");
        CHECK_CONTAINS(list, "\n          <seclabel model=\"dac\" relabel=\"no\"/>\n");
}

static void test_active(void) {
        static const struct {
                const char *text;
                int active;
        } cases[] = { { "1", 1 }, { "0", 0 }, { " 1\n", 1 }, { "2", 1 }, { "-1", 1 } };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *xml = strprintf("<domainsnapshot><active>%s</active></domainsnapshot>", cases[i].text);
                _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_ok(xml, 0);
                _cleanup_free_ char *out = NULL;

                if (!def)
                        continue;
                CHECK(def->active == cases[i].active);
                out = format_ok(def, SNAPSHOT_FORMAT_ACTIVE);
                CHECK_CONTAINS(out, cases[i].active ? "<active>1</active>" : "<active>0</active>");
        }
        {
                SnapshotDef def = { .active = -1 };
                _cleanup_free_ char *out = format_ok(&def, SNAPSHOT_FORMAT_ACTIVE);
                CHECK_STREQ(out, "<domainsnapshot>\n  <active>0</active>\n</domainsnapshot>\n");
        }
}

static void test_copy(void) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = parse_fixture("revert-disks.xml", SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *other = parse_fixture("memory-inactive-domain.xml",
                                                                          SNAPSHOT_PARSE_REDEFINE);
        _cleanup_(snapshot_def_freep) SnapshotDef *copy = NULL, *copy2 = NULL, *copy3 = NULL;
        _cleanup_free_ char *a = NULL, *b = NULL;

        if (!def || !other)
                return;
        CHECK(snapshot_def_copy(def, &copy) == 0);
        if (!copy)
                return;
        CHECK(copy != def && copy->disks != def->disks && copy->revert_disks != def->revert_disks);
        CHECK(copy->name != def->name && copy->domain_xml != def->domain_xml);
        CHECK(def_equal(def, copy));
        a = format_ok(def, SNAPSHOT_FORMAT_SECURE);
        b = format_ok(copy, SNAPSHOT_FORMAT_SECURE);
        CHECK_STREQ(a, b);

        CHECK(snapshot_def_copy(other, &copy2) == 0);
        CHECK(copy2 && def_equal(other, copy2));

        /* Independent: freeing the original leaves the copy whole (ASan). */
        def = snapshot_def_free(def);
        CHECK_STREQ(copy->name, "before-upgrade");
        CHECK_STREQ(copy->revert_disks[0].source, "/var/lib/libvirt/images/fedora.1700000100");

        {
                SnapshotDef empty = { .active = -1 };
                CHECK(snapshot_def_copy(&empty, &copy3) == 0);
                CHECK(copy3 && !copy3->disks && copy3->n_disks == 0 && !copy3->extra_elements && copy3->active == -1);
        }
        CHECK(snapshot_def_copy(NULL, &copy3) == -EINVAL);
        CHECK(snapshot_def_free(NULL) == NULL);
        CHECK(snapshot_def_array_free(NULL, 3) == NULL);
}

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s FIXTURES-DIR\n", argv[0]);
                return EXIT_FAILURE;
        }
        fixtures = argv[1];

        test_enum_strings();
        test_libvirt_outputs();
        test_all_parameters();
        test_inactive_domain_and_cookie();
        test_libvirt_inputs();
        test_disks();
        test_revert_disks();
        test_set_revert_disks();
        test_on_delete();
        test_qsnap_written();
        test_nvram();
        test_bulk();
        test_bulk_errors();
        test_bulk_large();
        test_redefine_rules();
        test_semantic_errors();
        test_malformed();
        test_entities();
        test_size_limit();
        test_pathological();
        test_odd_names();
        test_writer_checks();
        test_model_written();
        test_unknown_elements();
        test_active();
        test_copy();

        return test_summary();
}
