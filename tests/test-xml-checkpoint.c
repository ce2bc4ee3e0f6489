/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the <domaincheckpoint> codec (daemon/xml-checkpoint.c):
 * what libvirt's formatcheckpoint documentation promises (defaults, the
 * fields a new checkpoint ignores, REDEFINE's needs, element order, the
 * output flags), round trips, kept unknown content, every malformed or
 * hostile input named with its line, the writer's refusals, and the
 * alignment of <disks> with a domain. tests/fixtures/checkpoint/README.md
 * says which expectations are independent and which pin our own output.
 * The one argument is the fixtures directory.
 */

#include <stdio.h>

#include <libxml/c14n.h>
#include <libxml/parser.h>
#include <libxml/xmlerror.h>

#include "test-check.h"
#include "test-fixture.h"
#include "util/util.h"
#include "store/xml-checkpoint.h"
#include "store/xml-domain.h"

static CheckpointDef *parse_ok(const char *xml, CheckpointParseFlags flags) {
        _cleanup_free_ char *error = NULL;
        CheckpointDef *def = NULL;
        int r;

        r = checkpoint_def_parse(xml, strlen(xml), flags, &def, &error);
        if (r < 0) {
                n_failed++;
                fprintf(stderr, "unexpected parse failure %d (%s) for:\n%.2000s\n", r, strna(error), xml);
                return NULL;
        }
        CHECK(def);
        CHECK(!error);
        return def;
}

static CheckpointDef *parse_fixture(const char *name, CheckpointParseFlags flags) {
        _cleanup_free_ char *xml = read_fixture(name, NULL);
        return parse_ok(xml, flags);
}

static char *format_ok(const CheckpointDef *def, CheckpointFormatFlags flags) {
        char *out = NULL;
        int r;

        r = checkpoint_def_format(def, flags, &out);
        CHECK(r == 0);
        CHECK(out);
        if (r < 0)
                fprintf(stderr, "format failed: %d\n", r);
        return out;
}

/* The parse fails with r, the message starts with "line N: " (line > 0)
 * and contains needle, and *ret is untouched. */
static void parse_fails(const char *xml, size_t size, CheckpointParseFlags flags, int r, int line, const char *needle) {
        _cleanup_free_ char *error = NULL;
        CheckpointDef *sentinel = (CheckpointDef *) (uintptr_t) 0x1, *def = sentinel;
        int k;

        k = checkpoint_def_parse(xml, size, flags, &def, &error);
        n_checks++;
        if (k != r) {
                n_failed++;
                fprintf(stderr, "expected parse error %d, got %d (%s) for:\n%.400s\n", r, k, strna(error), xml);
                if (k >= 0 && def != sentinel)
                        checkpoint_def_free(def);
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

static void parse_fails_str(const char *xml, CheckpointParseFlags flags, int r, int line, const char *needle) {
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

static bool def_equal(const CheckpointDef *a, const CheckpointDef *b) {
        if (!streq_ptr(a->name, b->name) || !streq_ptr(a->description, b->description) ||
            !streq_ptr(a->parent, b->parent) || a->has_creation_time != b->has_creation_time ||
            a->creation_time != b->creation_time || a->n_disks != b->n_disks ||
            !streq_ptr(a->domain_xml, b->domain_xml) || !strv_equal(a->extra_elements, b->extra_elements))
                return false;
        for (size_t i = 0; i < a->n_disks; i++) {
                const CheckpointDisk *x = &a->disks[i], *y = &b->disks[i];

                if (!streq_ptr(x->name, y->name) || x->type != y->type || !streq_ptr(x->bitmap, y->bitmap) ||
                    !strv_equal(x->extra_attributes, y->extra_attributes) ||
                    !strv_equal(x->extra_elements, y->extra_elements))
                        return false;
        }
        return true;
}

/* parse(format(def)) == def, and formatting again gives the same bytes. */
static char *check_round_trip(const CheckpointDef *def, CheckpointParseFlags parse_flags) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *again = NULL;
        _cleanup_free_ char *out2 = NULL;
        char *out1;

        out1 = format_ok(def, CHECKPOINT_FORMAT_SECURE);
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
        out2 = format_ok(again, CHECKPOINT_FORMAT_SECURE);
        CHECK_STREQ(out2, out1);
        return out1;
}

/* Exclusive canonical XML without formatting whitespace or comments. */
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

static size_t position(const char *haystack, const char *needle) {
        const char *p = haystack ? strstr(haystack, needle) : NULL;
        return p ? (size_t) (p - haystack) : SIZE_MAX;
}

static void test_enum_strings(void) {
        CHECK_STREQ(checkpoint_type_to_string(CHECKPOINT_TYPE_NO), "no");
        CHECK_STREQ(checkpoint_type_to_string(CHECKPOINT_TYPE_BITMAP), "bitmap");
        CHECK(!checkpoint_type_to_string(_CHECKPOINT_TYPE_MAX));
        CHECK(!checkpoint_type_to_string(_CHECKPOINT_TYPE_INVALID));
        CHECK(checkpoint_type_from_string("bitmap") == CHECKPOINT_TYPE_BITMAP);
        CHECK(checkpoint_type_from_string("no") == CHECKPOINT_TYPE_NO);
        CHECK(checkpoint_type_from_string("default") == _CHECKPOINT_TYPE_INVALID);
        CHECK(checkpoint_type_from_string("Bitmap") == _CHECKPOINT_TYPE_INVALID);
        CHECK(checkpoint_type_from_string(NULL) == _CHECKPOINT_TYPE_INVALID);
}

/* formatcheckpoint: every element is optional on input; a name is made up
 * by the caller. */
static void test_minimal(void) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_fixture("minimal.xml", 0);
        _cleanup_free_ char *out = NULL;

        if (!def)
                return;
        CHECK(!def->name);
        CHECK(!def->description);
        CHECK(!def->parent);
        CHECK(!def->has_creation_time);
        CHECK(def->n_disks == 0);
        CHECK(!def->domain_xml);
        out = format_ok(def, 0);
        CHECK_STREQ(out, "<domaincheckpoint>\n</domaincheckpoint>\n");
        /* Our own stored metadata always has a name: REDEFINE needs it. */
        parse_fails_str("<domaincheckpoint/>", CHECKPOINT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 1,
                        "a redefined checkpoint needs a <name>");
        parse_fails_str("<domaincheckpoint><name>c</name></domaincheckpoint>", CHECKPOINT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 1,
                        "a redefined checkpoint needs a <creationTime>");
}

/* formatcheckpoint: checkpoint= is optional (a disk listed is tracked by
 * a bitmap), bitmap= defaults to the checkpoint's name; 'no' excludes. */
static void test_create_subset(void) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_fixture("create-subset.xml", 0);
        _cleanup_(checkpoint_def_freep) CheckpointDef *plain = NULL;
        _cleanup_free_ char *out = NULL;

        if (!def)
                return;
        CHECK_STREQ(def->description, "Nightly base before the schema migration");
        CHECK(def->n_disks == 2);
        if (def->n_disks != 2)
                return;
        CHECK_STREQ(def->disks[0].name, "vda");
        CHECK(def->disks[0].type == CHECKPOINT_TYPE_BITMAP);
        CHECK(!def->disks[0].bitmap);
        CHECK_STREQ(def->disks[1].name, "vdb");
        CHECK(def->disks[1].type == CHECKPOINT_TYPE_NO);

        plain = parse_ok("<domaincheckpoint><disks><disk name='vda'/></disks></domaincheckpoint>", 0);
        if (plain) {
                CHECK(plain->disks[0].type == CHECKPOINT_TYPE_BITMAP);
                out = format_ok(plain, 0);
                CHECK_CONTAINS(out, "<disk name='vda' checkpoint='bitmap'/>");
        }

        /* Named: the default bitmap is the name. */
        free(def->name);
        def->name = strdup("nightly-1");
        CHECK(checkpoint_def_fill_bitmaps(def) == 0);
        CHECK_STREQ(def->disks[0].bitmap, "nightly-1");
        CHECK(!def->disks[1].bitmap);
        CHECK(checkpoint_def_fill_bitmaps(def) == 0); /* idempotent */
        CHECK_STREQ(def->disks[0].bitmap, "nightly-1");
}

/* formatcheckpoint: at creation only name, description and disks are
 * settable; the rest is ignored (not checked) unless REDEFINE. */
static void test_create_ignores_output_fields(void) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_fixture("create-with-output-fields.xml", 0);
        _cleanup_free_ char *xml = read_fixture("create-with-output-fields.xml", NULL);

        if (!def)
                return;
        CHECK_STREQ(def->name, "weekly-07");
        CHECK(!def->parent);
        CHECK(!def->has_creation_time);
        CHECK(!def->domain_xml);
        CHECK(!def->extra_elements);
        /* The same document as a redefinition is checked, and fails. */
        parse_fails_str(xml, CHECKPOINT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 6, "<parent><name> may only hold letters");
}

/* What `virsh checkpoint-dumpxml` writes: read with REDEFINE, written back
 * with the same elements, attributes and order. */
static void test_virsh_dumpxml(void) {
        _cleanup_free_ char *xml = read_fixture("virsh-dumpxml.xml", NULL), *out = NULL, *c_in = NULL, *c_out = NULL,
                             *nodomain = NULL;
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_ok(xml, CHECKPOINT_PARSE_REDEFINE);
        _cleanup_(domain_def_freep) DomainDef *dom = NULL;
        _cleanup_free_ char *error = NULL;

        if (!def)
                return;
        CHECK_STREQ(def->name, "1718102400");
        CHECK_STREQ(def->parent, "1717497600");
        CHECK(def->has_creation_time && def->creation_time == 1718102400);
        CHECK(def->n_disks == 2);
        CHECK_STREQ(def->disks[0].bitmap, "1718102400");
        CHECK(def->disks[1].type == CHECKPOINT_TYPE_NO && !def->disks[1].bitmap);
        CHECK(def->domain_xml);
        /* The recorded domain is a document of its own. */
        CHECK(domain_def_parse(def->domain_xml, strlen(def->domain_xml), &dom, &error) == 0);
        CHECK(dom && streq_ptr(dom->name, "web1"));

        out = check_round_trip(def, CHECKPOINT_PARSE_REDEFINE);
        c_in = canonical(xml);
        c_out = out ? canonical(out) : NULL;
        CHECK(c_in && c_out);
        CHECK_STREQ(c_out, c_in);

        /* Without the domain, the bytes are libvirt's: single quotes, two
         * spaces, name/checkpoint/bitmap in that order. */
        nodomain = format_ok(def, CHECKPOINT_FORMAT_NO_DOMAIN);
        CHECK_STREQ(nodomain,
                    "<domaincheckpoint>\n"
                    "  <name>1718102400</name>\n"
                    "  <description>after the kernel update</description>\n"
                    "  <parent>\n"
                    "    <name>1717497600</name>\n"
                    "  </parent>\n"
                    "  <creationTime>1718102400</creationTime>\n"
                    "  <disks>\n"
                    "    <disk name='vda' checkpoint='bitmap' bitmap='1718102400'/>\n"
                    "    <disk name='vdb' checkpoint='no'/>\n"
                    "  </disks>\n"
                    "</domaincheckpoint>\n");
}

/* formatcheckpoint: size= is ignored on input, written only with the
 * SIZE flag. */
static void test_size(void) {
        _cleanup_free_ char *xml = read_fixture("virsh-dumpxml-size.xml", NULL), *plain = NULL, *sized = NULL;
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_ok(xml, CHECKPOINT_PARSE_REDEFINE);

        if (!def)
                return;
        CHECK(!def->disks[0].has_size);
        CHECK(!def->disks[0].extra_attributes); /* not kept as an unknown attribute either */
        plain = format_ok(def, CHECKPOINT_FORMAT_SIZE);
        CHECK_NOT_CONTAINS(plain, "size=");

        def->disks[0].size = 3145728;
        def->disks[0].has_size = true;
        def->disks[1].size = 99; /* a 'no' disk has no size to show */
        def->disks[1].has_size = true;
        free(plain);
        plain = format_ok(def, 0);
        CHECK_NOT_CONTAINS(plain, "size=");
        sized = format_ok(def, CHECKPOINT_FORMAT_SIZE);
        CHECK_STREQ(sized, xml); /* byte for byte what virsh shows */
}

/* Every element and attribute, unknown content kept, secrets only with
 * SECURE, NO_DOMAIN, element order; the output pinned. */
static void test_full(void) {
        _cleanup_free_ char *expected = read_fixture("full.expected.xml", NULL), *out = NULL, *insecure = NULL,
                             *nodomain = NULL;
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_fixture("full.xml", CHECKPOINT_PARSE_REDEFINE);

        if (!def)
                return;
        CHECK_STREQ(def->name, "pre-upgrade_2024.06-rc.1");
        CHECK_STREQ(def->description, "Line one & \"quotes\"\n  line two, ünïcode <kept>");
        CHECK_STREQ(def->parent, "base.0");
        CHECK(def->creation_time == 1718000000);
        CHECK(def->n_disks == 3);
        if (def->n_disks == 3) {
                CHECK_STREQ(def->disks[0].bitmap, "pre-upgrade.vda");
                CHECK(!def->disks[0].has_size);
                CHECK(def->disks[0].extra_attributes && streq_ptr(def->disks[0].extra_attributes[0], "x-vendor=\"kept\""));
                CHECK_STREQ(def->disks[1].name, "/var/lib/qsnap/images/data.qcow2");
                CHECK(def->disks[1].type == CHECKPOINT_TYPE_BITMAP && !def->disks[1].bitmap);
                CHECK(def->disks[2].type == CHECKPOINT_TYPE_NO);
                CHECK(def->disks[2].extra_elements && strstr(def->disks[2].extra_elements[0], "kept verbatim"));
        }
        CHECK(def->extra_elements && strstr(def->extra_elements[0], "<cookie>"));

        out = check_round_trip(def, CHECKPOINT_PARSE_REDEFINE);
        CHECK_STREQ(out, expected);
        CHECK_CONTAINS(out, "passwd=\"s3cret-vnc\"");
        CHECK_CONTAINS(out, "xmlns:vendor=\"http://example.org/vendor\"");
        /* libvirt's order: name, description, parent, creationTime, disks, domain. */
        CHECK(position(out, "<name>pre-upgrade") < position(out, "<description>"));
        CHECK(position(out, "<description>") < position(out, "<parent>"));
        CHECK(position(out, "<parent>") < position(out, "<creationTime>"));
        CHECK(position(out, "<creationTime>") < position(out, "<disks>"));
        CHECK(position(out, "</disks>") < position(out, "<domain "));
        CHECK(position(out, "</domain>") < position(out, "<cookie>"));

        insecure = format_ok(def, 0);
        CHECK_NOT_CONTAINS(insecure, "s3cret-vnc");
        CHECK_CONTAINS(insecure, "<graphics type=\"vnc\"");
        nodomain = format_ok(def, CHECKPOINT_FORMAT_NO_DOMAIN | CHECKPOINT_FORMAT_SECURE);
        CHECK_NOT_CONTAINS(nodomain, "<domain ");
        CHECK_CONTAINS(nodomain, "<cookie>");
        {
                _cleanup_free_ char *all = format_ok(def, CHECKPOINT_FORMAT_ALL);
                CHECK(all);
        }
}

static void test_names(void) {
        static const char *const good[] = { "a", "1718102400", "pre-upgrade_2024.06", "-x", "_", "a..b", NULL };
        static const char *const bad[] = { ".hidden", "a/b", "with space", "tab\there", "ünïcode", "a:b", "", NULL };
        _cleanup_free_ char *longest = NULL, *too_long = NULL, *xml = NULL;

        for (const char *const *s = good; *s; s++) {
                _cleanup_free_ char *doc = strprintf("<domaincheckpoint><name>%s</name></domaincheckpoint>", *s);
                _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_ok(doc, 0);
                CHECK(def && streq_ptr(def->name, *s));
                CHECK(!checkpoint_name_check(*s));
        }
        for (const char *const *s = bad; *s; s++) {
                _cleanup_free_ char *doc = strprintf("<domaincheckpoint>\n<name>%s</name></domaincheckpoint>", *s);
                CHECK(checkpoint_name_check(*s));
                parse_fails_str(doc, 0, -QSNAP_E_INVALID_XML, 2, "<name>");
        }
        longest = malloc(CHECKPOINT_BITMAP_NAME_MAX + 2);
        too_long = malloc(CHECKPOINT_BITMAP_NAME_MAX + 2);
        if (!longest || !too_long)
                return;
        memset(longest, 'x', CHECKPOINT_BITMAP_NAME_MAX);
        longest[CHECKPOINT_BITMAP_NAME_MAX] = '\0';
        memset(too_long, 'x', CHECKPOINT_BITMAP_NAME_MAX + 1);
        too_long[CHECKPOINT_BITMAP_NAME_MAX + 1] = '\0';
        CHECK(!checkpoint_name_check(longest));
        CHECK(checkpoint_name_check(too_long));
        xml = strprintf("<domaincheckpoint><disks><disk name='vda' bitmap='%s'/></disks></domaincheckpoint>", too_long);
        parse_fails_str(xml, 0, -QSNAP_E_INVALID_XML, 1, "longer than 1023 bytes");
}

static void test_errors(void) {
        const CheckpointParseFlags R = CHECKPOINT_PARSE_REDEFINE;

        parse_fails_str("<domaincheckpoint>\n<disks>\n<disk name='vda' checkpoint='yes'/>\n</disks>\n</domaincheckpoint>",
                        0, -QSNAP_E_INVALID_XML, 3, "checkpoint='yes'>: expected 'bitmap' or 'no'");
        parse_fails_str("<domaincheckpoint>\n<disks>\n<disk name='vda' checkpoint='default'/></disks></domaincheckpoint>",
                        0, -QSNAP_E_INVALID_XML, 3, "expected 'bitmap' or 'no'");
        parse_fails_str("<domaincheckpoint><disks>\n<disk name='vdb' checkpoint='no' bitmap='b'/></disks></domaincheckpoint>",
                        0, -QSNAP_E_INVALID_XML, 2, "<disk name='vdb' checkpoint='no'> cannot have bitmap=");
        parse_fails_str("<domaincheckpoint><disks>\n<disk name='vdb' checkpoint='no' size='1'/></disks></domaincheckpoint>",
                        0, -QSNAP_E_INVALID_XML, 2, "cannot have size=");
        parse_fails_str("<domaincheckpoint><disks>\n\n<disk name='vda' size='-1'/></disks></domaincheckpoint>", 0,
                        -QSNAP_E_INVALID_XML, 3, "size='-1'> is not a number of bytes");
        parse_fails_str("<domaincheckpoint><disks>\n<disk name='vda' size='99999999999999999999'/></disks></domaincheckpoint>",
                        0, -QSNAP_E_INVALID_XML, 2, "is not a number of bytes");
        parse_fails_str("<domaincheckpoint><disks>\n<disk name='vda' bitmap=''/></disks></domaincheckpoint>", 0, -QSNAP_E_INVALID_XML,
                        2, "bitmap=''> is empty");
        parse_fails_str("<domaincheckpoint><disks>\n<disk checkpoint='no'/></disks></domaincheckpoint>", 0, -QSNAP_E_INVALID_XML, 2,
                        "<disk> has no name= attribute");
        parse_fails_str("<domaincheckpoint><disks>\n<disk name='images/vda.qcow2'/></disks></domaincheckpoint>", 0,
                        -QSNAP_E_INVALID_XML, 2, "is neither a disk target nor an absolute path");
        parse_fails_str("<domaincheckpoint><disks>\n<disk name=' '/></disks></domaincheckpoint>", 0, -QSNAP_E_INVALID_XML, 2,
                        "<disk name=' '> is empty");
        parse_fails_str("<domaincheckpoint>\n<disks>\n<disk name='vda'/>\n<disk name='vda' checkpoint='no'/>\n</disks>"
                        "</domaincheckpoint>",
                        0, -QSNAP_E_INVALID_XML, 4, "disk 'vda' appears more than once in <disks>, first on line 3");
        parse_fails_str("<domaincheckpoint>\n<disks/>\n</domaincheckpoint>", 0, -QSNAP_E_INVALID_XML, 2,
                        "<disks> has no <disk>; leave <disks> out");
        parse_fails_str("<domaincheckpoint>\n<disks>\n<drive name='vda'/></disks></domaincheckpoint>", 0, -QSNAP_E_INVALID_XML, 3,
                        "unexpected <drive> in <disks>, expected <disk>");
        parse_fails_str("<domaincheckpoint>\n<disks><disk name='vda'/></disks>\n<disks><disk name='vdb'/></disks>"
                        "</domaincheckpoint>",
                        0, -QSNAP_E_INVALID_XML, 3, "<disks> appears more than once, first on line 2");
        parse_fails_str("<domaincheckpoint>\n<name>a</name>\n<name>b</name></domaincheckpoint>", 0, -QSNAP_E_INVALID_XML, 3,
                        "<name> appears more than once, first on line 2");
        parse_fails_str("<domaincheckpoint>\n<description>a<b/></description></domaincheckpoint>", 0, -QSNAP_E_INVALID_XML, 2,
                        "<description> may only contain text, found <b>");
        parse_fails_str("<domaincheckpoint>\n  stray text\n</domaincheckpoint>", 0, -QSNAP_E_INVALID_XML, 3,
                        "unexpected text in <domaincheckpoint>: 'stray text");
        parse_fails_str("<domaincheckpoint><disks><disk name='vda'>\ntext</disk></disks></domaincheckpoint>", 0,
                        -QSNAP_E_INVALID_XML, 2, "unexpected text in <disk>");

        /* The REDEFINE-only elements are checked when they count. */
        parse_fails_str("<domaincheckpoint><name>c</name>\n<parent/>\n<creationTime>1</creationTime></domaincheckpoint>",
                        R, -QSNAP_E_INVALID_XML, 2, "<parent> has no <name>");
        parse_fails_str("<domaincheckpoint><name>c</name>\n<parent>\n<name>.x</name></parent>"
                        "<creationTime>1</creationTime></domaincheckpoint>",
                        R, -QSNAP_E_INVALID_XML, 3, "<parent><name> starts with '.'");
        parse_fails_str("<domaincheckpoint><name>c</name>\n<parent><uuid>x</uuid></parent></domaincheckpoint>", R,
                        -QSNAP_E_INVALID_XML, 2, "unexpected <uuid> in <parent>, expected <name>");
        parse_fails_str("<domaincheckpoint><name>c</name>\n<parent><name>c</name></parent>"
                        "<creationTime>1</creationTime></domaincheckpoint>",
                        R, -QSNAP_E_INVALID_XML, 2, "checkpoint 'c' names itself as its parent");
        parse_fails_str("<domaincheckpoint><name>c</name>\n<creationTime>-5</creationTime></domaincheckpoint>", R,
                        -QSNAP_E_INVALID_XML, 2, "<creationTime> is not a number of seconds: '-5'");
        parse_fails_str("<domaincheckpoint><name>c</name>\n<creationTime>soon</creationTime></domaincheckpoint>", R,
                        -QSNAP_E_INVALID_XML, 2, "not a number of seconds: 'soon'");
        parse_fails_str("<domaincheckpoint><name>c</name>\n<creationTime>1</creationTime>\n"
                        "<creationTime>2</creationTime></domaincheckpoint>",
                        R, -QSNAP_E_INVALID_XML, 3, "<creationTime> appears more than once, first on line 2");
        parse_fails_str("<domaincheckpoint><name>c</name><creationTime>1</creationTime>\n<domain/>\n<domain/>"
                        "</domaincheckpoint>",
                        R, -QSNAP_E_INVALID_XML, 3, "<domain> appears more than once, first on line 2");

        /* Root. */
        {
                _cleanup_free_ char *wrong = read_fixture("wrong-root.xml", NULL);
                parse_fails_str(wrong, 0, -QSNAP_E_INVALID_XML, 1, "root element is <domainsnapshot>, expected <domaincheckpoint>");
        }
        parse_fails_str("<x:domaincheckpoint xmlns:x='urn:x'/>", 0, -QSNAP_E_INVALID_XML, 1,
                        "root element <domaincheckpoint> is in namespace 'urn:x', expected none");
        parse_fails_str("<domaincheckpoint/>", 1 << 5, -EINVAL, 0, "unknown parse flags 0x20");
}

static void test_malformed(void) {
        _cleanup_free_ char *truncated = read_fixture("malformed-truncated.xml", NULL);
        _cleanup_free_ char *mismatch = read_fixture("malformed-tag-mismatch.xml", NULL);
        _cleanup_free_ char *big = NULL;
        size_t n = XML_MAX_DOCUMENT_SIZE + 1;

        parse_fails_str(truncated, 0, -QSNAP_E_INVALID_XML, 5, NULL);
        parse_fails_str(mismatch, 0, -QSNAP_E_INVALID_XML, 5, "mismatch");
        parse_fails_str("", 0, -QSNAP_E_INVALID_XML, 0, "document is empty");
        parse_fails_str("not xml at all", 0, -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails("<domaincheckpoint>\0</domaincheckpoint>", 38, 0, -QSNAP_E_INVALID_XML, 1, "NUL byte");

        big = malloc(n + 1);
        if (!big)
                return;
        memset(big, ' ', n);
        memcpy(big, "<domaincheckpoint>", 18);
        memcpy(big + n - 19, "</domaincheckpoint>", 19);
        big[n] = '\0';
        parse_fails(big, n, 0, -QSNAP_E_INVALID_XML, 0, "larger than the limit of 4194304 bytes");
        /* Exactly at the cap is fine. */
        memcpy(big + n - 20, "</domaincheckpoint>", 19);
        big[n - 1] = '\0';
        {
                _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_ok(big, 0);
                CHECK(def);
        }
}

/* Entities are refused where they are declared, so neither expansion nor
 * an external fetch ever happens; nothing of the target leaks. */
static void test_entities(void) {
        _cleanup_free_ char *laughs = read_fixture("billion-laughs.xml", NULL);
        _cleanup_free_ char *xxe = read_fixture("xxe.xml", NULL);
        _cleanup_free_ char *xxe_param = read_fixture("xxe-parameter.xml", NULL);
        _cleanup_free_ char *error = NULL;
        CheckpointDef *def = NULL;

        parse_fails_str(laughs, 0, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'ha'");
        parse_fails_str(xxe, CHECKPOINT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'leak'");
        parse_fails_str(xxe_param, CHECKPOINT_PARSE_REDEFINE, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'dtd'");
        CHECK(checkpoint_def_parse(xxe, strlen(xxe), 0, &def, &error) < 0);
        CHECK_NOT_CONTAINS(error, "root:");
        /* An undeclared entity is not well-formed. */
        parse_fails_str("<domaincheckpoint><name>&undeclared;</name></domaincheckpoint>", 0, -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails_str("<!DOCTYPE domaincheckpoint [\n<!ELEMENT domaincheckpoint ANY>\n]><domaincheckpoint/>", 0,
                        -QSNAP_E_INVALID_XML, 2, "DTD element declarations are not allowed");
        parse_fails_str("<!DOCTYPE domaincheckpoint [\n<!ATTLIST disk checkpoint CDATA 'no'>\n]><domaincheckpoint/>",
                        0, -QSNAP_E_INVALID_XML, 2, "DTD attribute declarations are not allowed");
        /* A bare DOCTYPE is harmless. */
        {
                _cleanup_(checkpoint_def_freep) CheckpointDef *ok = parse_ok("<!DOCTYPE domaincheckpoint><domaincheckpoint/>", 0);
                CHECK(ok);
        }
}

static void test_writer_checks(void) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = NULL;
        char *out = NULL;

        def = parse_ok("<domaincheckpoint><name>c</name><disks><disk name='vda'/><disk name='vdb' checkpoint='no'/>"
                       "</disks></domaincheckpoint>", 0);
        if (!def)
                return;
        CHECK(checkpoint_def_format(def, 1 << 3, &out) == -EINVAL);
        CHECK(checkpoint_def_format(NULL, 0, &out) == -EINVAL);
        CHECK(!out);

        free(def->name);
        def->name = strdup("bad/name");
        CHECK(checkpoint_def_format(def, 0, &out) == -EINVAL);
        free(def->name);
        def->name = strdup("c");

        def->parent = strdup("");
        CHECK(checkpoint_def_format(def, 0, &out) == -EINVAL);
        def->parent = mfree(def->parent);

        def->disks[1].bitmap = strdup("b"); /* a bitmap on a 'no' disk */
        CHECK(checkpoint_def_format(def, 0, &out) == -EINVAL);
        def->disks[1].bitmap = mfree(def->disks[1].bitmap);

        free(def->disks[1].name);
        def->disks[1].name = strdup("vda"); /* duplicate */
        CHECK(checkpoint_def_format(def, 0, &out) == -EINVAL);
        free(def->disks[1].name);
        def->disks[1].name = strdup("rel/path");
        CHECK(checkpoint_def_format(def, 0, &out) == -EINVAL);
        free(def->disks[1].name);
        def->disks[1].name = strdup("vdb");

        def->description = strdup("bell \a");
        CHECK(checkpoint_def_format(def, 0, &out) == -EINVAL);
        def->description = mfree(def->description);

        def->has_creation_time = true;
        def->creation_time = -1;
        CHECK(checkpoint_def_format(def, 0, &out) == -EINVAL);
        def->creation_time = 0;

        def->domain_xml = strdup("<domainsnapshot/>"); /* must be a <domain> */
        CHECK(checkpoint_def_format(def, 0, &out) == -EINVAL);
        /* ...unless left out. */
        CHECK(checkpoint_def_format(def, CHECKPOINT_FORMAT_NO_DOMAIN, &out) == 0);
        out = mfree(out);
        CHECK(!out);
}

static void test_copy(void) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_fixture("full.xml", CHECKPOINT_PARSE_REDEFINE);
        _cleanup_(checkpoint_def_freep) CheckpointDef *copy = NULL;
        _cleanup_free_ char *a = NULL, *b = NULL;

        if (!def)
                return;
        def->disks[0].has_size = true;
        def->disks[0].size = 7;
        CHECK(checkpoint_def_copy(def, &copy) == 0);
        CHECK(copy && def_equal(def, copy));
        CHECK(copy && copy->disks[0].has_size && copy->disks[0].size == 7);
        CHECK(copy && copy->disks != def->disks && copy->disks[0].name != def->disks[0].name);
        a = format_ok(def, CHECKPOINT_FORMAT_ALL);
        b = copy ? format_ok(copy, CHECKPOINT_FORMAT_ALL) : NULL;
        CHECK_STREQ(b, a);
}

static const char *align_domain_xml =
        "<domain type='kvm'><name>vm</name><memory unit='MiB'>64</memory><devices>"
        "<disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vda'/></disk>"
        "<disk type='file' device='disk'><source file='/img/ro.qcow2'/><target dev='vdb'/><readonly/></disk>"
        "<disk type='file' device='disk'><source file='/img/c.qcow2'/><target dev='vdc'/></disk>"
        "<disk type='file' device='disk'><source file='/img/t.qcow2'/><target dev='vdd'/><transient/></disk>"
        "</devices></domain>";

static CheckpointDef *align_ok(DomainDef *dom, const char *xml) {
        _cleanup_free_ char *error = NULL;
        CheckpointDef *def = parse_ok(xml, 0);
        int r;

        if (!def)
                return NULL;
        r = checkpoint_def_align(def, dom, &error);
        if (r < 0) {
                n_failed++;
                fprintf(stderr, "align failed %d (%s) for %s\n", r, strna(error), xml);
        }
        return def;
}

static char *disks_line(const CheckpointDef *def) {
        char **l = NULL, *r;

        for (size_t i = 0; i < def->n_disks; i++) {
                _cleanup_free_ char *s = strprintf("%s:%s:%s", def->disks[i].name,
                                                   checkpoint_type_to_string(def->disks[i].type),
                                                   strempty(def->disks[i].bitmap));
                (void) strv_extend(&l, s);
        }
        r = l ? strv_join(l, " ") : strdup("");
        strv_free(l);
        return r;
}

static void align_fails(DomainDef *dom, const char *xml, int r, const char *needle) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = parse_ok(xml, 0);
        _cleanup_free_ char *error = NULL, *before = NULL, *after = NULL;

        if (!def)
                return;
        before = disks_line(def);
        CHECK(checkpoint_def_align(def, dom, &error) == r);
        CHECK_CONTAINS(error, needle);
        after = disks_line(def);
        CHECK_STREQ(after, before); /* unchanged */
}

/* libvirt's virDomainCheckpointAlignDisks(): documented defaults. */
static void test_align(void) {
        _cleanup_(domain_def_freep) DomainDef *dom = NULL, *empty = NULL;
        _cleanup_free_ char *error = NULL;

        CHECK(domain_def_parse(align_domain_xml, strlen(align_domain_xml), &dom, &error) == 0);
        if (!dom)
                return;

        /* No <disks>: every disk that can change, bitmap named after the checkpoint. */
        {
                _cleanup_(checkpoint_def_freep) CheckpointDef *def = align_ok(dom, "<domaincheckpoint><name>c1</name></domaincheckpoint>");
                _cleanup_free_ char *l = def ? disks_line(def) : NULL;
                CHECK_STREQ(l, "vda:bitmap:c1 vdb:no: vdc:bitmap:c1 vdd:no:");
        }
        /* <disks>: only those listed; a path becomes the target; own bitmap names stay. */
        {
                _cleanup_(checkpoint_def_freep) CheckpointDef *def = align_ok(
                                dom, "<domaincheckpoint><name>c2</name><disks><disk name='/img/c.qcow2' bitmap='mine'/>"
                                     "<disk name='vdb' checkpoint='no'/></disks></domaincheckpoint>");
                _cleanup_free_ char *l = def ? disks_line(def) : NULL;
                CHECK_STREQ(l, "vda:no: vdb:no: vdc:bitmap:mine vdd:no:");
        }
        {
                _cleanup_(checkpoint_def_freep) CheckpointDef *def = align_ok(
                                dom, "<domaincheckpoint><name>c3</name><disks><disk name='vda'/></disks></domaincheckpoint>");
                _cleanup_free_ char *l = def ? disks_line(def) : NULL;

                CHECK_STREQ(l, "vda:bitmap:c3 vdb:no: vdc:no: vdd:no:");
                /* Aligning an aligned definition changes nothing. (again is
                 * freed by hand: gcc 12 -O3 takes a second cleanup variable
                 * here for a use after free.) */
                if (def) {
                        char *again;

                        CHECK(checkpoint_def_align(def, dom, NULL) == 0);
                        again = disks_line(def);
                        CHECK_STREQ(again, l);
                        free(again);
                }
        }

        align_fails(dom, "<domaincheckpoint><name>c</name><disks><disk name='vdz'/></disks></domaincheckpoint>", -QSNAP_E_NO_SUCH_DISK,
                    "Domain 'vm' has no disk 'vdz'.");
        align_fails(dom, "<domaincheckpoint><name>c</name><disks><disk name='/img/nope.qcow2'/></disks></domaincheckpoint>",
                    -QSNAP_E_NO_SUCH_DISK, "has no disk '/img/nope.qcow2'");
        align_fails(dom,
                    "<domaincheckpoint><name>c</name><disks><disk name='vda'/><disk name='/img/a.qcow2'/></disks>"
                    "</domaincheckpoint>",
                    -QSNAP_E_INVALID_ARGUMENT, "Disk 'vda' is listed twice");
        align_fails(dom, "<domaincheckpoint><name>c</name><disks><disk name='vdb'/></disks></domaincheckpoint>", -QSNAP_E_INVALID_ARGUMENT,
                    "Disk 'vdb' is read-only");
        align_fails(dom, "<domaincheckpoint><name>c</name><disks><disk name='vdd' bitmap='x'/></disks></domaincheckpoint>",
                    -QSNAP_E_INVALID_ARGUMENT, "Disk 'vdd' is transient");
        align_fails(dom, "<domaincheckpoint><disks><disk name='vda'/></disks></domaincheckpoint>", -QSNAP_E_INVALID_ARGUMENT,
                    "has no name");

        /* A source two disks share cannot name one of them. */
        {
                const char *twice = "<domain type='kvm'><name>tw</name><memory unit='MiB'>64</memory><devices>"
                                    "<disk type='file' device='disk'><source file='/img/s.qcow2'/><target dev='vda'/><readonly/></disk>"
                                    "<disk type='file' device='disk'><source file='/img/s.qcow2'/><target dev='vdb'/><readonly/></disk>"
                                    "</devices></domain>";
                _cleanup_(domain_def_freep) DomainDef *tw = NULL;
                _cleanup_free_ char *e = NULL;

                CHECK(domain_def_parse(twice, strlen(twice), &tw, &e) == 0);
                if (tw)
                        align_fails(tw, "<domaincheckpoint><name>c</name><disks><disk name='/img/s.qcow2' checkpoint='no'/>"
                                        "</disks></domaincheckpoint>",
                                    -QSNAP_E_INVALID_ARGUMENT, "names the source of more than one disk");
        }

        /* A domain without disks. */
        {
                const char *none = "<domain type='kvm'><name>bare</name><memory unit='MiB'>64</memory></domain>";
                _cleanup_free_ char *e = NULL;

                CHECK(domain_def_parse(none, strlen(none), &empty, &e) == 0);
                if (empty)
                        align_fails(empty, "<domaincheckpoint><name>c</name></domaincheckpoint>", -QSNAP_E_UNSUPPORTED,
                                    "has no disks");
        }
}

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s FIXTURES-DIR\n", argv[0]);
                return EXIT_FAILURE;
        }
        fixtures = argv[1];

        test_enum_strings();
        test_minimal();
        test_create_subset();
        test_create_ignores_output_fields();
        test_virsh_dumpxml();
        test_size();
        test_full();
        test_names();
        test_errors();
        test_malformed();
        test_entities();
        test_writer_checks();
        test_copy();
        test_align();

        xmlCleanupParser();
        return test_summary();
}
