/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Unit tests for the <domainbackup> codec (daemon/xml-backup.c): what
 * libvirt's formatbackup documentation and schema promise (push by default,
 * <server> only in pull mode, target vs scratch, backup='no', the disk
 * modes), libvirt's layout of BackupGetXMLDesc output byte for byte, kept
 * unknown content, every malformed or hostile input named with its line,
 * the writer's refusals, and the defaults backup_def_align() fills in.
 * tests/fixtures/backup/README.md says which expectations are independent
 * and which pin our own output. The one argument is the fixtures directory.
 */

#include <stdio.h>

#include <libxml/parser.h>

#include "test-check.h"
#include "test-fixture.h"
#include "util/util.h"
#include "store/xml-backup.h"
#include "store/xml-domain.h"

static BackupDef *parse_ok(const char *xml) {
        _cleanup_free_ char *error = NULL;
        BackupDef *def = NULL;
        int r;

        r = backup_def_parse(xml, strlen(xml), &def, &error);
        if (r < 0) {
                n_failed++;
                fprintf(stderr, "unexpected parse failure %d (%s) for:\n%.2000s\n", r, strna(error), xml);
                return NULL;
        }
        CHECK(def);
        CHECK(!error);
        return def;
}

static BackupDef *parse_fixture(const char *name) {
        _cleanup_free_ char *xml = read_fixture(name, NULL);
        return parse_ok(xml);
}

static char *format_ok(const BackupDef *def) {
        char *out = NULL;
        int r;

        r = backup_def_format(def, &out);
        CHECK(r == 0);
        CHECK(out);
        if (r < 0)
                fprintf(stderr, "format failed: %d\n", r);
        return out;
}

static void parse_fails(const char *xml, size_t size, int r, int line, const char *needle) {
        _cleanup_free_ char *error = NULL;
        BackupDef *sentinel = (BackupDef *) (uintptr_t) 0x1, *def = sentinel;
        int k;

        k = backup_def_parse(xml, size, &def, &error);
        n_checks++;
        if (k != r) {
                n_failed++;
                fprintf(stderr, "expected parse error %d, got %d (%s) for:\n%.400s\n", r, k, strna(error), xml);
                if (k >= 0 && def != sentinel)
                        backup_def_free(def);
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

/* parse(format(def)) formats to the same bytes: nothing is lost or
 * reinterpreted. Returns the first formatting. */
static char *check_round_trip(const BackupDef *def) {
        _cleanup_(backup_def_freep) BackupDef *again = NULL;
        _cleanup_free_ char *out2 = NULL;
        char *out1;

        out1 = format_ok(def);
        if (!out1)
                return NULL;
        again = parse_ok(out1);
        if (!again)
                return out1;
        out2 = format_ok(again);
        CHECK_STREQ(out2, out1);
        return out1;
}

static size_t position(const char *haystack, const char *needle) {
        const char *p = haystack ? strstr(haystack, needle) : NULL;
        return p ? (size_t) (p - haystack) : SIZE_MAX;
}

static void test_enum_strings(void) {
        CHECK_STREQ(backup_mode_to_string(BACKUP_MODE_PUSH), "push");
        CHECK_STREQ(backup_mode_to_string(BACKUP_MODE_PULL), "pull");
        CHECK(!backup_mode_to_string(_BACKUP_MODE_MAX));
        CHECK(backup_mode_from_string("pull") == BACKUP_MODE_PULL);
        CHECK(backup_mode_from_string("default") == _BACKUP_MODE_INVALID);
        CHECK_STREQ(backup_transport_to_string(BACKUP_TRANSPORT_TCP), "tcp");
        CHECK_STREQ(backup_transport_to_string(BACKUP_TRANSPORT_UNIX), "unix");
        CHECK(backup_transport_from_string("rdma") == _BACKUP_TRANSPORT_INVALID);
        CHECK_STREQ(backup_disk_type_to_string(BACKUP_DISK_TYPE_FILE), "file");
        CHECK_STREQ(backup_disk_type_to_string(BACKUP_DISK_TYPE_BLOCK), "block");
        CHECK(backup_disk_type_from_string("network") == _BACKUP_DISK_TYPE_INVALID);
        CHECK_STREQ(backup_disk_mode_to_string(BACKUP_DISK_MODE_FULL), "full");
        CHECK_STREQ(backup_disk_mode_to_string(BACKUP_DISK_MODE_INCREMENTAL), "incremental");
        CHECK(backup_disk_mode_from_string(NULL) == _BACKUP_DISK_MODE_INVALID);
        CHECK(!backup_disk_mode_to_string(_BACKUP_DISK_MODE_INVALID));
}

/* formatbackup: mode is optional, push by default; everything else too. */
static void test_minimal(void) {
        _cleanup_(backup_def_freep) BackupDef *def = parse_fixture("minimal.xml");
        _cleanup_free_ char *out = NULL;

        if (!def)
                return;
        CHECK(def->mode == BACKUP_MODE_PUSH);
        CHECK(!def->incremental);
        CHECK(!def->server);
        CHECK(def->n_disks == 0);
        out = format_ok(def);
        /* libvirt always writes the mode. */
        CHECK_STREQ(out, "<domainbackup mode='push'>\n</domainbackup>\n");
}

/* formatbackup's push example shape: backup='yes' is the default, type
 * defaults to file, a raw target is a <driver>, backup='no' excludes. */
static void test_push_user(void) {
        _cleanup_(backup_def_freep) BackupDef *def = parse_fixture("push-user.xml");
        _cleanup_free_ char *out = NULL;

        if (!def)
                return;
        CHECK(def->mode == BACKUP_MODE_PUSH);
        CHECK(def->n_disks == 3);
        if (def->n_disks != 3)
                return;
        CHECK(def->disks[0].backup && def->disks[0].type == BACKUP_DISK_TYPE_FILE);
        CHECK(def->disks[0].mode == BACKUP_DISK_MODE_DEFAULT && !def->disks[0].path);
        CHECK(def->disks[0].format == _DISK_FORMAT_INVALID);
        CHECK(def->disks[1].backup && def->disks[1].format == DISK_FORMAT_RAW);
        CHECK_STREQ(def->disks[1].path, "/srv/backup/db-vdb.img");
        CHECK(!def->disks[2].backup);
        out = check_round_trip(def);
        CHECK_CONTAINS(out, "<disk name='vda' backup='yes' type='file'/>");
        CHECK_CONTAINS(out, "<disk name='vdc' backup='no'/>");
        /* libvirt writes <driver> before <target>, whatever the input order. */
        CHECK(position(out, "<driver type='raw'/>") < position(out, "<target file='/srv/backup/db-vdb.img'/>"));
}

static void test_pull_user(void) {
        _cleanup_(backup_def_freep) BackupDef *def = parse_fixture("pull-user.xml");

        if (!def)
                return;
        CHECK(def->mode == BACKUP_MODE_PULL);
        CHECK_STREQ(def->incremental, "1718102400");
        CHECK(def->server && def->server->transport == BACKUP_TRANSPORT_UNIX);
        CHECK(def->server && streq_ptr(def->server->socket, "/run/backup/web1.sock") && !def->server->name);
        CHECK(def->server && def->server->tls == -1 && def->server->port == 0);
        CHECK(def->n_disks == 1 && streq_ptr(def->disks[0].path, "/var/tmp/web1-vda.scratch"));
        free(check_round_trip(def));
}

/* What libvirt's BackupGetXMLDesc prints for an aligned backup reads back
 * and is written byte for byte the same (libvirt's quoting, indentation,
 * attribute order name, backup, type, backupmode, incremental,
 * exportname, exportbitmap; <driver> before <target>/<scratch>). */
static void test_aligned_outputs(void) {
        static const char *const names[] = { "push-aligned.xml", "pull-aligned.xml" };

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                _cleanup_free_ char *xml = read_fixture(names[i], NULL), *out = NULL;
                _cleanup_(backup_def_freep) BackupDef *def = parse_ok(xml);

                if (!def)
                        continue;
                out = check_round_trip(def);
                CHECK_STREQ(out, xml);
        }
        {
                _cleanup_(backup_def_freep) BackupDef *def = parse_fixture("pull-aligned.xml");

                if (!def)
                        return;
                CHECK(def->server && def->server->transport == BACKUP_TRANSPORT_TCP && def->server->tls == 1);
                CHECK(def->server && def->server->port == 10809 && streq_ptr(def->server->name, "backup.example.org"));
                CHECK(def->disks[0].mode == BACKUP_DISK_MODE_INCREMENTAL);
                CHECK_STREQ(def->disks[0].export_bitmap, "backup-vda");
                CHECK(def->disks[1].type == BACKUP_DISK_TYPE_BLOCK);
                CHECK_STREQ(def->disks[1].path, "/dev/vg0/scratch");
                CHECK_STREQ(def->disks[1].export_name, "swap");
        }
}

static void test_full(void) {
        _cleanup_free_ char *expected = read_fixture("full.expected.xml", NULL), *out = NULL;
        _cleanup_(backup_def_freep) BackupDef *def = parse_fixture("full.xml");

        if (!def)
                return;
        CHECK_STREQ(def->incremental, "base.0");
        CHECK(def->extra_attributes && strv_length(def->extra_attributes) == 2);
        CHECK(def->extra_elements && strstr(def->extra_elements[0], "daily"));
        CHECK(def->n_disks == 3);
        if (def->n_disks == 3) {
                const BackupDisk *a = &def->disks[0];

                CHECK(a->mode == BACKUP_DISK_MODE_INCREMENTAL && streq_ptr(a->incremental, "weekly_1"));
                CHECK_STREQ(a->path, "/srv/backup/vda & more.qcow2");
                CHECK(a->extra_path_elements && strv_length(a->extra_path_elements) == 2);
                CHECK(a->extra_path_attributes && strstr(a->extra_path_attributes[0], "xmlns:vendor"));
                CHECK(a->extra_attributes && streq_ptr(a->extra_attributes[0], "x-extra=\"kept\""));
                CHECK(a->extra_elements && strstr(a->extra_elements[0], "kept verbatim"));
                CHECK(def->disks[1].type == BACKUP_DISK_TYPE_BLOCK && streq_ptr(def->disks[1].path, "/dev/vg0/backup-vdb"));
                CHECK(!def->disks[2].backup && def->disks[2].mode == BACKUP_DISK_MODE_DEFAULT);
        }
        out = check_round_trip(def);
        CHECK_STREQ(out, expected);
        CHECK(position(out, "<incremental>") < position(out, "<disks>"));
        CHECK(position(out, "</disks>") < position(out, "<vendor:schedule"));
}

static void test_server(void) {
        _cleanup_(backup_def_freep) BackupDef *tcp = parse_ok(
                        "<domainbackup mode='pull'><server name='::1' port='65535'/></domainbackup>");
        _cleanup_free_ char *out = NULL;

        /* libvirt: transport defaults to tcp and is always written. */
        if (tcp) {
                CHECK(tcp->server && tcp->server->transport == BACKUP_TRANSPORT_TCP && tcp->server->port == 65535);
                out = format_ok(tcp);
                CHECK_CONTAINS(out, "<server transport='tcp' name='::1' port='65535'/>");
        }

        parse_fails_str("<domainbackup>\n<server transport='unix' socket='/run/s'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<server> is for pull mode backups; add mode='pull'");
        parse_fails_str("<domainbackup mode='push'>\n<server name='h'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<server> is for pull mode backups");
        parse_fails_str("<domainbackup mode='pull'>\n<server transport='unix'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<server transport='unix'> has no socket= attribute");
        parse_fails_str("<domainbackup mode='pull'>\n<server transport='unix' socket='run/s'/></domainbackup>", -QSNAP_E_INVALID_XML,
                        2, "<server socket='run/s'> is not an absolute path");
        parse_fails_str("<domainbackup mode='pull'>\n<server transport='unix' socket='/s' name='h'/></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "<server transport='unix'> takes socket=, not name=");
        parse_fails_str("<domainbackup mode='pull'>\n<server transport='unix' socket='/s' port='1'/></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "takes socket=, not port=");
        parse_fails_str("<domainbackup mode='pull'>\n<server/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<server> with transport 'tcp' needs a host name=");
        parse_fails_str("<domainbackup mode='pull'>\n<server transport='tcp' name='h' socket='/s'/></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "not socket=; add transport='unix'");
        parse_fails_str("<domainbackup mode='pull'>\n<server name='h' port='0'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<server port='0'> is not a port number (1-65535)");
        parse_fails_str("<domainbackup mode='pull'>\n<server name='h' port='65536'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "port='65536'> is not a port number");
        parse_fails_str("<domainbackup mode='pull'>\n<server name='h' port='http'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "port='http'> is not a port number");
        parse_fails_str("<domainbackup mode='pull'>\n<server transport='rdma' name='h'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<server transport='rdma'> is not supported, expected 'tcp' or 'unix'");
        parse_fails_str("<domainbackup mode='pull'>\n<server transport='fd' fdgroup='g'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<server transport='fd'> is not supported");
        parse_fails_str("<domainbackup mode='pull'>\n<server name='h' tls='maybe'/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<server tls='maybe'>: expected 'yes' or 'no'");
        parse_fails_str("<domainbackup mode='pull'>\n<server name='h'>\n<host/></server></domainbackup>", -QSNAP_E_INVALID_XML, 3,
                        "<server> must be empty, found <host>");
        parse_fails_str("<domainbackup mode='pull'>\n<server name='a'/>\n<server name='b'/></domainbackup>", -QSNAP_E_INVALID_XML, 3,
                        "<server> appears more than once, first on line 2");
}

static void test_disk_errors(void) {
        parse_fails_str("<domainbackup><disks>\n<disk backup='yes'/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<disk> has no name= attribute");
        parse_fails_str("<domainbackup><disks>\n<disk name='/img/vda.qcow2'/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<disk name='/img/vda.qcow2'> is not a disk target such as 'vda'");
        parse_fails_str("<domainbackup><disks>\n<disk name=''/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<disk name=''> is empty");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' backup='maybe'/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<disk backup='maybe'>: expected 'yes' or 'no'");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' type='network'/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "disk 'vda' has type 'network', expected 'file' or 'block'");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' backupmode='differential'/></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "backupmode 'differential', expected 'full' or 'incremental'");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' backupmode='default'/></disks></domainbackup>", -QSNAP_E_INVALID_XML,
                        2, "backupmode 'default'");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' backupmode='full' incremental='c1'/></disks>"
                        "</domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "backupmode='full' and incremental='c1'");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' incremental='a/b'/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "incremental= 'a/b' is not a checkpoint name");
        parse_fails_str("<domainbackup>\n<incremental>.hidden</incremental></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<incremental> '.hidden' is not a checkpoint name: it starts with '.'");
        parse_fails_str("<domainbackup>\n<incremental>a</incremental>\n<incremental>b</incremental></domainbackup>",
                        -QSNAP_E_INVALID_XML, 3, "<incremental> appears more than once, first on line 2");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' exportname='x'/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "disk 'vda' has exportname=, which only a pull mode backup exports");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' exportbitmap='x'/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "has exportbitmap=, which only a pull mode backup exports");
        parse_fails_str("<domainbackup mode='pull'><disks>\n<disk name='vda' exportname=''/></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "exportname='' is empty");
        parse_fails_str("<domainbackup mode='pull'><disks>\n<disk name='vda' exportbitmap=''/></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "exportbitmap='' is empty");
        parse_fails_str("<domainbackup mode='pull'><disks><disk name='vda'>\n<target file='/b/v'/></disk></disks>"
                        "</domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "disk 'vda' has <target>, but a pull mode backup writes to <scratch>");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<scratch file='/b/v'/></disk></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "disk 'vda' has <scratch>, but a push mode backup writes to <target>");
        parse_fails_str("<domainbackup mode='pull'><disks><disk name='vda'>\n<driver type='raw'/></disk></disks>"
                        "</domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "a pull mode scratch file is qcow2, not 'raw'");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<driver type='vmdk'/></disk></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "driver type 'vmdk', expected 'qcow2' or 'raw'");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<driver/></disk></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<driver> of disk 'vda' has no type= attribute");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<driver type='raw' cache='none'/></disk></disks>"
                        "</domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "<driver> of disk 'vda' has an unknown attribute 'cache'");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<driver type='raw'/>\n<driver type='raw'/></disk>"
                        "</disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 3, "<driver> appears more than once, first on line 2");
        parse_fails_str("<domainbackup><disks><disk name='vda' type='block'>\n<target file='/b/v'/></disk></disks>"
                        "</domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "<target> of a type='block' disk names it with dev=, not file=");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<target dev='/dev/sdb'/></disk></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "<target> of a type='file' disk names it with file=, not dev=");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<target file='b/v'/></disk></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "<target file='b/v'> is not an absolute path");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<target file=''/></disk></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "<target file=''> is empty");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\n<target file='/a'/>\n<target file='/b'/></disk>"
                        "</disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 3, "<target> appears more than once, first on line 2");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda' backup='no' type='file'/></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "disk 'vda' has backup='no' and a type=");
        parse_fails_str("<domainbackup><disks><disk name='vda' backup='no'>\n<target file='/b/v'/></disk></disks>"
                        "</domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "disk 'vda' has backup='no' and a <target>");
        parse_fails_str("<domainbackup mode='pull'><disks>\n<disk name='vda' type='block'/></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 2, "disk 'vda' of type 'block' needs <scratch dev=");
        parse_fails_str("<domainbackup><disks>\n<disk name='vda'/>\n<disk name='vda' backup='no'/></disks></domainbackup>",
                        -QSNAP_E_INVALID_XML, 3, "disk 'vda' appears more than once in <disks>, first on line 2");
        parse_fails_str("<domainbackup>\n<disks/></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<disks> has no <disk>; leave <disks> out to back up every disk");
        parse_fails_str("<domainbackup><disks>\n<volume name='vda'/></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "unexpected <volume> in <disks>, expected <disk>");
        parse_fails_str("<domainbackup><disks><disk name='vda'>\ntext</disk></disks></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "unexpected text in <disk>: 'text'");

        /* What libvirt ignores on an excluded disk, we ignore too. */
        {
                _cleanup_(backup_def_freep) BackupDef *def = parse_ok(
                                "<domainbackup><disks><disk name='vdb' backup='no' backupmode='full' incremental='x'/>"
                                "</disks></domainbackup>");
                _cleanup_free_ char *out = def ? format_ok(def) : NULL;
                CHECK_CONTAINS(out, "<disk name='vdb' backup='no'/>");
        }
}

static void test_root_errors(void) {
        _cleanup_free_ char *wrong = read_fixture("wrong-root.xml", NULL);

        parse_fails_str(wrong, -QSNAP_E_INVALID_XML, 1, "root element is <domaincheckpoint>, expected <domainbackup>");
        parse_fails_str("<b:domainbackup xmlns:b='urn:b'/>", -QSNAP_E_INVALID_XML, 1,
                        "root element <domainbackup> is in namespace 'urn:b', expected none");
        parse_fails_str("<domainbackup mode='both'/>", -QSNAP_E_INVALID_XML, 1, "<domainbackup mode='both'>: expected 'push' or 'pull'");
        parse_fails_str("<domainbackup>\n<incremental>a<b/></incremental></domainbackup>", -QSNAP_E_INVALID_XML, 2,
                        "<incremental> may only contain text, found <b>");
        parse_fails_str("<domainbackup>\n stray\n</domainbackup>", -QSNAP_E_INVALID_XML, 3, "unexpected text in <domainbackup>");
}

static void test_malformed_and_hostile(void) {
        _cleanup_free_ char *truncated = read_fixture("malformed-truncated.xml", NULL);
        _cleanup_free_ char *mismatch = read_fixture("malformed-tag-mismatch.xml", NULL);
        _cleanup_free_ char *laughs = read_fixture("billion-laughs.xml", NULL);
        _cleanup_free_ char *xxe = read_fixture("xxe.xml", NULL);
        _cleanup_free_ char *big = NULL, *error = NULL;
        BackupDef *def = NULL;
        size_t n = XML_MAX_DOCUMENT_SIZE + 1;

        parse_fails_str(truncated, -QSNAP_E_INVALID_XML, 5, NULL);
        parse_fails_str(mismatch, -QSNAP_E_INVALID_XML, 5, "mismatch");
        parse_fails_str("", -QSNAP_E_INVALID_XML, 0, "document is empty");
        parse_fails("<domainbackup>\0</domainbackup>", 30, -QSNAP_E_INVALID_XML, 1, "NUL byte");
        parse_fails_str(laughs, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'b'");
        parse_fails_str(xxe, -QSNAP_E_INVALID_XML, 3, "entity declarations are not allowed: 'key'");
        CHECK(backup_def_parse(xxe, strlen(xxe), &def, &error) < 0);
        CHECK_NOT_CONTAINS(error, "PRIVATE KEY");
        parse_fails_str("<domainbackup><incremental>&nope;</incremental></domainbackup>", -QSNAP_E_INVALID_XML, 1, NULL);
        parse_fails_str("<!DOCTYPE domainbackup [\n<!ATTLIST domainbackup mode CDATA 'pull'>\n]><domainbackup/>",
                        -QSNAP_E_INVALID_XML, 2, "DTD attribute declarations are not allowed");

        big = malloc(n + 1);
        if (!big)
                return;
        memset(big, ' ', n);
        memcpy(big, "<domainbackup>", 14);
        memcpy(big + n - 15, "</domainbackup>", 15);
        big[n] = '\0';
        parse_fails(big, n, -QSNAP_E_INVALID_XML, 0, "larger than the limit of 4194304 bytes");
}

static void test_writer_checks(void) {
        _cleanup_(backup_def_freep) BackupDef *def = parse_fixture("pull-aligned.xml");
        char *out = NULL;

        if (!def)
                return;
        CHECK(backup_def_format(NULL, &out) == -EINVAL);

        def->mode = BACKUP_MODE_PUSH; /* a server, scratch files and exports in push mode */
        CHECK(backup_def_format(def, &out) == -EINVAL);
        def->mode = BACKUP_MODE_PULL;

        def->server->port = 0;
        free(def->server->name);
        def->server->name = NULL;
        CHECK(backup_def_format(def, &out) == -EINVAL); /* tcp without a name */
        def->server->transport = BACKUP_TRANSPORT_UNIX;
        def->server->socket = strdup("relative.sock");
        CHECK(backup_def_format(def, &out) == -EINVAL);
        free(def->server->socket);
        def->server->socket = strdup("/run/ok.sock");
        CHECK(backup_def_format(def, &out) == 0);
        out = mfree(out);

        def->disks[0].format = DISK_FORMAT_RAW; /* pull scratch must be qcow2 */
        CHECK(backup_def_format(def, &out) == -EINVAL);
        def->disks[0].format = DISK_FORMAT_QCOW2;

        def->disks[0].mode = BACKUP_DISK_MODE_FULL; /* full with incremental= */
        CHECK(backup_def_format(def, &out) == -EINVAL);
        def->disks[0].mode = BACKUP_DISK_MODE_INCREMENTAL;

        free(def->disks[1].path);
        def->disks[1].path = NULL; /* block scratch without a device */
        CHECK(backup_def_format(def, &out) == -EINVAL);
        def->disks[1].path = strdup("/dev/vg0/scratch");

        free(def->disks[2].name);
        def->disks[2].name = strdup("vda");
        CHECK(backup_def_format(def, &out) == -EINVAL);
        free(def->disks[2].name);
        def->disks[2].name = strdup("vdc");

        def->incremental[0] = '.';
        CHECK(backup_def_format(def, &out) == -EINVAL);
        def->incremental[0] = '1';

        CHECK(backup_def_format(def, &out) == 0);
        free(out);
}

static void test_copy(void) {
        _cleanup_(backup_def_freep) BackupDef *def = parse_fixture("full.xml"), *copy = NULL;
        _cleanup_(backup_def_freep) BackupDef *pull = parse_fixture("pull-aligned.xml"), *pull_copy = NULL;
        _cleanup_free_ char *a = NULL, *b = NULL, *c = NULL, *d = NULL;

        if (!def || !pull)
                return;
        CHECK(backup_def_copy(def, &copy) == 0);
        CHECK(copy && copy->disks != def->disks);
        a = format_ok(def);
        b = copy ? format_ok(copy) : NULL;
        CHECK_STREQ(b, a);
        CHECK(backup_def_copy(pull, &pull_copy) == 0);
        CHECK(pull_copy && pull_copy->server != pull->server);
        c = format_ok(pull);
        d = pull_copy ? format_ok(pull_copy) : NULL;
        CHECK_STREQ(d, c);
}

static const char *align_domain_xml =
        "<domain type='kvm'><name>web1</name><uuid>6b1c3c52-0d7e-4a35-9a51-5f2f8f6f1e20</uuid>"
        "<memory unit='MiB'>64</memory><devices>"
        "<disk type='file' device='disk'><source file='/img/web1.qcow2'/><target dev='vda'/></disk>"
        "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/img/swap.img'/><target dev='vdb'/></disk>"
        "<disk type='file' device='disk'><source file='/img/iso.qcow2'/><target dev='vdc'/><readonly/></disk>"
        "</devices></domain>";

static char *align_ok(DomainDef *dom, const char *xml, const BackupDefaults *defaults) {
        _cleanup_(backup_def_freep) BackupDef *def = parse_ok(xml);
        _cleanup_free_ char *error = NULL;
        int r;

        if (!def)
                return NULL;
        r = backup_def_align(def, dom, defaults, &error);
        if (r < 0) {
                n_failed++;
                fprintf(stderr, "align failed %d (%s) for %s\n", r, strna(error), xml);
                return NULL;
        }
        /* What BackupGetXMLDesc would show; it must read back. */
        return check_round_trip(def);
}

static void align_fails(DomainDef *dom, const char *xml, const BackupDefaults *defaults, int r, const char *needle) {
        _cleanup_(backup_def_freep) BackupDef *def = parse_ok(xml);
        _cleanup_free_ char *error = NULL, *before = NULL, *after = NULL;

        if (!def)
                return;
        before = format_ok(def);
        CHECK(backup_def_align(def, dom, defaults, &error) == r);
        CHECK_CONTAINS(error, needle);
        after = format_ok(def);
        CHECK_STREQ(after, before); /* unchanged */
}

static void test_align(void) {
        const BackupDefaults defaults = { .suffix = "1718189000", .scratch_dir = "/run/qsnap", .socket = "/run/qsnap/b.sock" };
        _cleanup_(domain_def_freep) DomainDef *dom = NULL, *none = NULL;
        _cleanup_free_ char *error = NULL;

        CHECK(domain_def_parse(align_domain_xml, strlen(align_domain_xml), &dom, &error) == 0);
        if (!dom)
                return;

        /* No <disks>: every writable disk, full, qcow2 targets beside the images. */
        {
                _cleanup_free_ char *out = align_ok(dom, "<domainbackup/>", &defaults);
                CHECK_STREQ(out,
                            "<domainbackup mode='push'>\n"
                            "  <disks>\n"
                            "    <disk name='vda' backup='yes' type='file' backupmode='full'>\n"
                            "      <driver type='qcow2'/>\n"
                            "      <target file='/img/web1.qcow2.1718189000'/>\n"
                            "    </disk>\n"
                            "    <disk name='vdb' backup='yes' type='file' backupmode='full'>\n"
                            "      <driver type='qcow2'/>\n"
                            "      <target file='/img/swap.img.1718189000'/>\n"
                            "    </disk>\n"
                            "    <disk name='vdc' backup='no'/>\n"
                            "  </disks>\n"
                            "</domainbackup>\n");
        }
        /* <incremental>: every backed-up disk is incremental from it; listed
         * disks only; the user's paths and formats stay; an explicitly
         * listed read-only disk is backed up. */
        {
                _cleanup_free_ char *out = align_ok(
                                dom,
                                "<domainbackup><incremental>c1</incremental><disks>"
                                "<disk name='vdc'/><disk name='vdb' backupmode='full'><driver type='raw'/>"
                                "<target file='/srv/b/swap.raw'/></disk></disks></domainbackup>",
                                &defaults);
                CHECK_CONTAINS(out, "<disk name='vda' backup='no'/>");
                CHECK_CONTAINS(out, "<disk name='vdb' backup='yes' type='file' backupmode='full'>\n"
                                    "      <driver type='raw'/>\n"
                                    "      <target file='/srv/b/swap.raw'/>");
                CHECK_CONTAINS(out, "<disk name='vdc' backup='yes' type='file' backupmode='incremental' incremental='c1'>");
                /* Disks in the domain's order. */
                CHECK(position(out, "'vda'") < position(out, "'vdb'") && position(out, "'vdb'") < position(out, "'vdc'"));
        }
        /* A disk's own checkpoint beats <incremental>. */
        {
                _cleanup_free_ char *out = align_ok(
                                dom,
                                "<domainbackup><incremental>c1</incremental><disks><disk name='vda' incremental='c0'/>"
                                "</disks></domainbackup>",
                                &defaults);
                CHECK_CONTAINS(out, "backupmode='incremental' incremental='c0'");
        }
        /* Pull: scratch files in the runtime dir, export names, the
         * incremental's bitmap as backup-<disk>, a default UNIX socket. */
        {
                _cleanup_free_ char *out = align_ok(
                                dom, "<domainbackup mode='pull'><incremental>c1</incremental></domainbackup>", &defaults);
                CHECK_CONTAINS(out, "<server transport='unix' socket='/run/qsnap/b.sock'/>");
                CHECK_CONTAINS(out, "<disk name='vda' backup='yes' type='file' backupmode='incremental' incremental='c1' "
                                    "exportname='vda' exportbitmap='backup-vda'>");
                CHECK_CONTAINS(out, "<scratch file='/run/qsnap/6b1c3c52-0d7e-4a35-9a51-5f2f8f6f1e20-vda.1718189000.scratch'/>");
                CHECK_CONTAINS(out, "<disk name='vdc' backup='no'/>");
        }
        {
                _cleanup_free_ char *out = align_ok(
                                dom,
                                "<domainbackup mode='pull'><server name='localhost' port='10809'/><disks>"
                                "<disk name='vda' exportname='root'/></disks></domainbackup>",
                                &defaults);
                CHECK_CONTAINS(out, "<server transport='tcp' name='localhost' port='10809'/>"); /* kept */
                CHECK_CONTAINS(out, "backupmode='full' exportname='root'>"); /* no bitmap for a full backup */
                CHECK_NOT_CONTAINS(out, "exportbitmap");
        }
        /* Without defaults nothing is made up. */
        {
                _cleanup_free_ char *out = align_ok(dom, "<domainbackup mode='pull'/>", NULL);
                CHECK_NOT_CONTAINS(out, "<server");
                CHECK_NOT_CONTAINS(out, "<scratch");
                CHECK_CONTAINS(out, "exportname='vda'");
        }

        align_fails(dom, "<domainbackup><disks><disk name='vdz'/></disks></domainbackup>", &defaults, -QSNAP_E_NO_SUCH_DISK,
                    "Domain 'web1' has no disk 'vdz'.");
        align_fails(dom, "<domainbackup><disks><disk name='vda' backupmode='incremental'/></disks></domainbackup>",
                    &defaults, -QSNAP_E_INVALID_ARGUMENT, "Disk 'vda' has backupmode='incremental' but names no checkpoint");
        align_fails(dom, "<domainbackup><disks><disk name='vda' type='block'/></disks></domainbackup>", &defaults,
                    -QSNAP_E_INVALID_ARGUMENT, "Disk 'vda' has type 'block' but no <target dev=");
        align_fails(dom,
                    "<domainbackup><disks><disk name='vda'><target file='/b/x'/></disk>"
                    "<disk name='vdb'><target file='/b/x'/></disk></disks></domainbackup>",
                    &defaults, -QSNAP_E_INVALID_ARGUMENT, "Disks 'vda' and 'vdb' would both write /b/x.");
        align_fails(dom,
                    "<domainbackup mode='pull'><disks><disk name='vda' exportname='x'/><disk name='vdb' exportname='x'/>"
                    "</disks></domainbackup>",
                    &defaults, -QSNAP_E_INVALID_ARGUMENT, "would both be exported as 'x'");
        align_fails(dom, "<domainbackup><disks><disk name='vda' backup='no'/></disks></domainbackup>", &defaults, -QSNAP_E_INVALID_ARGUMENT,
                    "No disk of domain 'web1' would be backed up.");

        {
                const char *bare = "<domain type='kvm'><name>bare</name><memory unit='MiB'>64</memory></domain>";
                _cleanup_free_ char *e = NULL;

                CHECK(domain_def_parse(bare, strlen(bare), &none, &e) == 0);
                if (none)
                        align_fails(none, "<domainbackup/>", &defaults, -QSNAP_E_UNSUPPORTED, "Domain 'bare' has no disks to back up.");
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
        test_push_user();
        test_pull_user();
        test_aligned_outputs();
        test_full();
        test_server();
        test_disk_errors();
        test_root_errors();
        test_malformed_and_hostile();
        test_writer_checks();
        test_copy();
        test_align();

        xmlCleanupParser();
        return test_summary();
}
