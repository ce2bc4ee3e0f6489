/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The <domaincheckpoint> parser (CreateCheckpoint, REDEFINE, the stored
 * entries) and checkpoint_def_align() on arbitrary bytes. Invariants: a
 * refusal is a documented error with a message; what the store would write
 * (SECURE) parses again with REDEFINE into the same structure, field by
 * field — so a formatter that drops or changes a field is caught, not only
 * one that is unstable — and formats to the same bytes; a copy is equal;
 * aligning against a fixed two-disk domain either fails with a documented
 * error or leaves one <disk> per domain disk, in order, named by target.
 */
#include "fuzz.h"
#include "util/error.h"
#include "util/util.h"
#include "store/xml-checkpoint.h"

/* Every field the store keeps. size= is output only (ignored on input), so
 * it is compared only when both sides are parsed documents. */
static bool same(const CheckpointDef *a, const CheckpointDef *b) {
        if (!streq_ptr(a->name, b->name) || !streq_ptr(a->description, b->description) ||
            !streq_ptr(a->parent, b->parent) || a->has_creation_time != b->has_creation_time ||
            (a->has_creation_time && a->creation_time != b->creation_time) || a->n_disks != b->n_disks ||
            !fuzz_strv_same(a->extra_elements, b->extra_elements) || !!a->domain_xml != !!b->domain_xml)
                return false;
        for (size_t i = 0; i < a->n_disks; i++) {
                const CheckpointDisk *x = &a->disks[i], *y = &b->disks[i];
                if (!streq_ptr(x->name, y->name) || x->type != y->type || !streq_ptr(x->bitmap, y->bitmap) ||
                    !fuzz_strv_same(x->extra_attributes, y->extra_attributes) ||
                    !fuzz_strv_same(x->extra_elements, y->extra_elements))
                        return false;
        }
        return true;
}

static void check_stored_round_trip(const CheckpointDef *def) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *again = NULL, *copy = NULL;
        _cleanup_free_ char *out1 = NULL, *out2 = NULL, *out3 = NULL, *message = NULL, *plain = NULL;
        int r;

        r = checkpoint_def_format(def, CHECKPOINT_FORMAT_SECURE, &out1);
        if (r < 0) {
                FUZZ_CHECK(IN_SET(r, -EINVAL, -ENOMEM));
                return;
        }
        r = checkpoint_def_parse(out1, strlen(out1), CHECKPOINT_PARSE_REDEFINE, &again, &message);
        if (r < 0)
                fprintf(stderr, "stored text does not parse again (%s):\n%s\n", strna(message), out1);
        FUZZ_CHECK(r == 0);
        if (!same(def, again))
                fprintf(stderr, "the stored text lost or changed a field:\n%s\n", out1);
        FUZZ_CHECK(same(def, again));
        FUZZ_CHECK(checkpoint_def_format(again, CHECKPOINT_FORMAT_SECURE, &out2) == 0);
        if (!streq(out1, out2))
                fprintf(stderr, "round trip changed the text:\n%s\n----\n%s\n", out1, out2);
        FUZZ_CHECK(streq(out1, out2));

        FUZZ_CHECK(checkpoint_def_copy(def, &copy) == 0);
        FUZZ_CHECK(same(def, copy));
        FUZZ_CHECK(checkpoint_def_format(copy, CHECKPOINT_FORMAT_SECURE, &out3) == 0 && streq(out1, out3));

        /* GetXMLDesc with every flag combination the bus allows. */
        for (unsigned f = 0; f <= CHECKPOINT_FORMAT_ALL; f++) {
                r = checkpoint_def_format(def, f, &plain);
                FUZZ_CHECK(r == 0);
                plain = mfree(plain);
        }
}

static void check_align(const CheckpointDef *def) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *copy = NULL;
        _cleanup_(domain_def_freep) DomainDef *dom = fuzz_two_disk_domain();
        _cleanup_free_ char *error = NULL;
        int r;

        FUZZ_CHECK(checkpoint_def_copy(def, &copy) == 0);
        if (!copy->name)
                FUZZ_CHECK((copy->name = strdup("fuzz-checkpoint")));
        r = checkpoint_def_align(copy, dom, &error);
        if (r < 0) {
                FUZZ_CHECK(IN_SET(r, -QSNAP_E_NO_SUCH_DISK, -QSNAP_E_INVALID_ARGUMENT, -QSNAP_E_UNSUPPORTED,
                                  -ENOMEM));
                return;
        }
        FUZZ_CHECK(copy->n_disks == dom->n_disks);
        for (size_t i = 0; i < copy->n_disks; i++) {
                FUZZ_CHECK(streq(copy->disks[i].name, dom->disks[i].target));
                if (copy->disks[i].type == CHECKPOINT_TYPE_BITMAP)
                        FUZZ_CHECK(copy->disks[i].bitmap && !dom->disks[i].readonly && !dom->disks[i].transient);
        }
}

static void check_one(const uint8_t *data, size_t size, CheckpointParseFlags flags) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = NULL;
        _cleanup_free_ char *message = NULL;
        int r;

        r = checkpoint_def_parse((const char *) data, size, flags, &def, &message);
        if (r < 0) {
                fuzz_check_xml_refusal(r, message);
                FUZZ_CHECK(!def);
                return;
        }
        FUZZ_CHECK(def);
        if (def->name)
                FUZZ_CHECK(!checkpoint_name_check(def->name));
        if (flags & CHECKPOINT_PARSE_REDEFINE) {
                FUZZ_CHECK(def->name && def->has_creation_time);
                check_stored_round_trip(def);
        } else {
                /* A new checkpoint: CreateCheckpoint names and dates it before storing. */
                _cleanup_(checkpoint_def_freep) CheckpointDef *stored = NULL;

                FUZZ_CHECK(!def->parent && !def->domain_xml && !def->has_creation_time);
                FUZZ_CHECK(checkpoint_def_copy(def, &stored) == 0);
                if (!stored->name)
                        FUZZ_CHECK((stored->name = strdup("1764968400")));
                stored->creation_time = 1764968400;
                stored->has_creation_time = true;
                check_stored_round_trip(stored);
        }
        check_align(def);
}

FUZZ_TARGET(xml_checkpoint) {
        fuzz_setup();
        check_one(data, size, 0);
        check_one(data, size, CHECKPOINT_PARSE_REDEFINE);
        return 0;
}
