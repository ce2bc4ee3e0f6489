/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The <domainsnapshot> parser (CreateSnapshot, REDEFINE, the stored
 * entries) and the bulk <snapshots> parser (libvirt's file, ImportLibvirt)
 * on arbitrary bytes, with the <domain> a snapshot embeds. Invariants: a
 * refusal is a documented error with a message; what the store would
 * write (SECURE) parses again with REDEFINE and formats to the same bytes,
 * so a stored snapshot is never lost or changed by a restart.
 */
#include "fuzz.h"
#include "util/error.h"
#include "util/util.h"
#include "store/xml-snapshot.h"

/* Formats def as the store does; if it can be written at all, it must read
 * back to the same text. */
static void check_stored_round_trip(const SnapshotDef *def) {
        _cleanup_(snapshot_def_freep) SnapshotDef *again = NULL, *copy = NULL;
        _cleanup_free_ char *out1 = NULL, *out2 = NULL, *out3 = NULL, *message = NULL;
        int r;

        r = snapshot_def_format(def, SNAPSHOT_FORMAT_SECURE, &out1);
        if (r < 0) {
                FUZZ_CHECK(IN_SET(r, -EINVAL, -ENOMEM));
                return;
        }
        r = snapshot_def_parse(out1, strlen(out1), SNAPSHOT_PARSE_REDEFINE, &again, &message);
        if (r < 0)
                fprintf(stderr, "stored text does not parse again (%s):\n%s\n", strna(message), out1);
        FUZZ_CHECK(r == 0);
        r = snapshot_def_format(again, SNAPSHOT_FORMAT_SECURE, &out2);
        FUZZ_CHECK(r == 0);
        if (!streq(out1, out2))
                fprintf(stderr, "round trip changed the text:\n%s\n----\n%s\n", out1, out2);
        FUZZ_CHECK(streq(out1, out2));

        r = snapshot_def_copy(def, &copy);
        FUZZ_CHECK(r == 0);
        r = snapshot_def_format(copy, SNAPSHOT_FORMAT_SECURE, &out3);
        FUZZ_CHECK(r == 0 && streq(out1, out3));
}

/* What GetXMLDesc and Revert do with the embedded domain. */
static void check_embedded_domain(const SnapshotDef *def) {
        _cleanup_(domain_def_freep) DomainDef *dom = NULL;
        _cleanup_free_ char *message = NULL, *out = NULL;
        int r;

        if (!def->domain_xml)
                return;
        r = domain_def_parse(def->domain_xml, strlen(def->domain_xml), &dom, &message);
        if (r < 0) {
                fuzz_check_xml_refusal(r, message);
                return;
        }
        FUZZ_CHECK(domain_def_format(dom, 0, &out) == 0);
}

static void check_one(const uint8_t *data, size_t size, SnapshotParseFlags flags) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
        _cleanup_free_ char *message = NULL, *plain = NULL;
        int r;

        r = snapshot_def_parse((const char *) data, size, flags, &def, &message);
        if (r < 0) {
                fuzz_check_xml_refusal(r, message);
                FUZZ_CHECK(!def);
                return;
        }
        FUZZ_CHECK(def);
        check_stored_round_trip(def);
        check_embedded_domain(def);
        /* GetXMLDesc without SECURE */
        r = snapshot_def_format(def, 0, &plain);
        FUZZ_CHECK(r == 0 || IN_SET(r, -EINVAL, -ENOMEM));
}

static void check_list(const uint8_t *data, size_t size) {
        SnapshotDef **defs = NULL, **defs2 = NULL;
        size_t n = 0, n2 = 0;
        _cleanup_free_ char *current = NULL, *current2 = NULL, *message = NULL, *message2 = NULL;
        _cleanup_free_ char *out1 = NULL, *out2 = NULL;
        int r;

        r = snapshot_list_parse((const char *) data, size, &defs, &n, &current, &message);
        if (r < 0) {
                fuzz_check_xml_refusal(r, message);
                return;
        }
        for (size_t i = 0; i < n; i++)
                FUZZ_CHECK(defs[i] && defs[i]->name);

        r = snapshot_list_format(defs, n, current, &out1);
        if (r == 0) {
                r = snapshot_list_parse(out1, strlen(out1), &defs2, &n2, &current2, &message2);
                if (r < 0)
                        fprintf(stderr, "formatted list does not parse again (%s):\n%s\n", strna(message2), out1);
                FUZZ_CHECK(r == 0 && n2 == n && streq_ptr(current, current2));
                FUZZ_CHECK(snapshot_list_format(defs2, n2, current2, &out2) == 0);
                FUZZ_CHECK(streq(out1, out2));
        } else
                FUZZ_CHECK(IN_SET(r, -QSNAP_E_INVALID_XML, -EINVAL, -ENOMEM));
        snapshot_def_array_free(defs, n);
        snapshot_def_array_free(defs2, n2);
}

FUZZ_TARGET(xml_snapshot) {
        fuzz_setup();
        check_one(data, size, 0);
        check_one(data, size, SNAPSHOT_PARSE_REDEFINE);
        check_list(data, size);
        return 0;
}
