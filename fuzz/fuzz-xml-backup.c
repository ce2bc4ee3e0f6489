/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The <domainbackup> parser (BackupBegin) and backup_def_align() on
 * arbitrary bytes. Invariants: a refusal is a documented error with a
 * message; an accepted definition formats, and the text parses again into
 * the same structure field by field (a formatter that drops or changes a
 * field is caught) and formats to the same bytes — BackupGetXMLDesc's
 * output is valid BackupBegin input —; a copy is equal; aligning against a
 * fixed two-disk domain either fails with a documented error or leaves one
 * <disk> per domain disk, in order, and its output is still a valid
 * document that round-trips.
 */
#include "fuzz.h"
#include "util/error.h"
#include "util/util.h"
#include "store/xml-backup.h"

static bool same_server(const BackupServer *a, const BackupServer *b) {
        if (!a || !b)
                return a == b;
        return a->transport == b->transport && streq_ptr(a->name, b->name) && a->port == b->port &&
               streq_ptr(a->socket, b->socket) && a->tls == b->tls &&
               fuzz_strv_same(a->extra_attributes, b->extra_attributes);
}

static bool same(const BackupDef *a, const BackupDef *b) {
        if (a->mode != b->mode || !streq_ptr(a->incremental, b->incremental) ||
            !same_server(a->server, b->server) || a->n_disks != b->n_disks ||
            !fuzz_strv_same(a->extra_attributes, b->extra_attributes) ||
            !fuzz_strv_same(a->extra_elements, b->extra_elements))
                return false;
        for (size_t i = 0; i < a->n_disks; i++) {
                const BackupDisk *x = &a->disks[i], *y = &b->disks[i];
                if (!streq_ptr(x->name, y->name) || x->backup != y->backup || x->type != y->type ||
                    x->mode != y->mode || !streq_ptr(x->incremental, y->incremental) ||
                    !streq_ptr(x->export_name, y->export_name) || !streq_ptr(x->export_bitmap, y->export_bitmap) ||
                    x->format != y->format || !streq_ptr(x->path, y->path) ||
                    !fuzz_strv_same(x->extra_path_elements, y->extra_path_elements) ||
                    !fuzz_strv_same(x->extra_path_attributes, y->extra_path_attributes) ||
                    !fuzz_strv_same(x->extra_attributes, y->extra_attributes) ||
                    !fuzz_strv_same(x->extra_elements, y->extra_elements))
                        return false;
        }
        return true;
}

static void check_round_trip(const BackupDef *def) {
        _cleanup_(backup_def_freep) BackupDef *again = NULL, *copy = NULL;
        _cleanup_free_ char *out1 = NULL, *out2 = NULL, *out3 = NULL, *message = NULL;
        int r;

        r = backup_def_format(def, &out1);
        if (r < 0) {
                FUZZ_CHECK(IN_SET(r, -EINVAL, -ENOMEM));
                return;
        }
        r = backup_def_parse(out1, strlen(out1), &again, &message);
        if (r < 0)
                fprintf(stderr, "formatted backup does not parse again (%s):\n%s\n", strna(message), out1);
        FUZZ_CHECK(r == 0);
        /* mode= and backup= are always written: absent and default read the same. */
        if (!same(def, again))
                fprintf(stderr, "the formatted text lost or changed a field:\n%s\n", out1);
        FUZZ_CHECK(same(def, again));
        FUZZ_CHECK(backup_def_format(again, &out2) == 0);
        if (!streq(out1, out2))
                fprintf(stderr, "round trip changed the text:\n%s\n----\n%s\n", out1, out2);
        FUZZ_CHECK(streq(out1, out2));

        FUZZ_CHECK(backup_def_copy(def, &copy) == 0);
        FUZZ_CHECK(same(def, copy));
        FUZZ_CHECK(backup_def_format(copy, &out3) == 0 && streq(out1, out3));
}

static void check_align(const BackupDef *def) {
        static const BackupDefaults defaults = {
                .suffix = "1764968400",
                .scratch_dir = "/run/qsnapd/backup",
                .socket = "/run/qsnapd/backup/fuzz.sock",
        };
        _cleanup_(backup_def_freep) BackupDef *copy = NULL;
        _cleanup_(domain_def_freep) DomainDef *dom = fuzz_two_disk_domain();
        _cleanup_free_ char *error = NULL;
        int r;

        FUZZ_CHECK(backup_def_copy(def, &copy) == 0);
        r = backup_def_align(copy, dom, &defaults, &error);
        if (r < 0) {
                FUZZ_CHECK(IN_SET(r, -QSNAP_E_NO_SUCH_DISK, -QSNAP_E_INVALID_ARGUMENT, -QSNAP_E_UNSUPPORTED,
                                  -ENOMEM));
                FUZZ_CHECK(same(def, copy)); /* unchanged on failure */
                return;
        }
        FUZZ_CHECK(copy->n_disks == dom->n_disks);
        for (size_t i = 0; i < copy->n_disks; i++) {
                const BackupDisk *d = &copy->disks[i];
                FUZZ_CHECK(streq(d->name, dom->disks[i].target));
                if (!d->backup)
                        continue;
                FUZZ_CHECK(d->mode != BACKUP_DISK_MODE_DEFAULT);
                FUZZ_CHECK((d->mode == BACKUP_DISK_MODE_INCREMENTAL) == !!d->incremental);
                if (copy->mode == BACKUP_MODE_PULL)
                        FUZZ_CHECK(d->export_name);
        }
        /* BackupGetXMLDesc writes the aligned definition. */
        check_round_trip(copy);
}

FUZZ_TARGET(xml_backup) {
        _cleanup_(backup_def_freep) BackupDef *def = NULL;
        _cleanup_free_ char *message = NULL;
        int r;

        fuzz_setup();
        r = backup_def_parse((const char *) data, size, &def, &message);
        if (r < 0) {
                fuzz_check_xml_refusal(r, message);
                FUZZ_CHECK(!def);
                return 0;
        }
        FUZZ_CHECK(def);
        check_round_trip(def);
        check_align(def);
        return 0;
}
