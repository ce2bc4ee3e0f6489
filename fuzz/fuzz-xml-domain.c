/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The <domain> parser (DefineDomain, the stored definitions) and the
 * BlockCopy destination parser on arbitrary bytes. Invariants: a refusal
 * is one of the documented errors with a message; an accepted definition
 * formats (it is stored that way), its text parses again and formats to
 * the same bytes (what is stored reads back unchanged), and a copy formats
 * the same.
 */
#include "fuzz.h"
#include "util/error.h"
#include "util/util.h"
#include "store/xml-domain.h"

FUZZ_TARGET(xml_domain) {
        _cleanup_(domain_def_freep) DomainDef *def = NULL, *again = NULL, *copy = NULL;
        _cleanup_free_ char *message = NULL, *out1 = NULL, *out2 = NULL, *out3 = NULL;
        _cleanup_free_ char *file = NULL, *message_copy = NULL, *message_again = NULL;
        DiskFormat format;
        int r;

        fuzz_setup();

        r = domain_copy_dest_parse((const char *) data, size, &file, &format, &message_copy);
        if (r < 0)
                fuzz_check_xml_refusal(r, message_copy);
        else
                FUZZ_CHECK(file && file[0] == '/');

        r = domain_def_parse((const char *) data, size, &def, &message);
        if (r < 0) {
                fuzz_check_xml_refusal(r, message);
                FUZZ_CHECK(!def);
                return 0;
        }
        FUZZ_CHECK(def && def->name && def->uuid);

        r = domain_def_format(def, 0, &out1);
        FUZZ_CHECK(r == 0);
        r = domain_def_parse(out1, strlen(out1), &again, &message_again);
        if (r < 0)
                fprintf(stderr, "formatted definition does not parse again (%s):\n%s\n", strna(message_again), out1);
        FUZZ_CHECK(r == 0);
        r = domain_def_format(again, 0, &out2);
        FUZZ_CHECK(r == 0);
        if (!streq(out1, out2))
                fprintf(stderr, "round trip changed the text:\n%s\n----\n%s\n", out1, out2);
        FUZZ_CHECK(streq(out1, out2));

        r = domain_def_copy(def, &copy);
        FUZZ_CHECK(r == 0);
        r = domain_def_format(copy, DOMAIN_FORMAT_BACKING_CHAIN, &out3);
        FUZZ_CHECK(r == 0 && streq(out1, out3));

        for (size_t i = 0; i < def->n_disks; i++)
                FUZZ_CHECK(domain_def_find_disk(def, def->disks[i].target) != NULL);
        return 0;
}
