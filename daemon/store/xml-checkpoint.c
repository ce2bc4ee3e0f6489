/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libvirt <domaincheckpoint> codec: text in, CheckpointDef out, and
 * back. It validates what libvirt's schema and parser validate (plus what
 * qsnapd relies on: absolute paths, unique disk names, bitmap names QEMU
 * accepts), keeps the recorded <domain> and unknown elements verbatim, and
 * writes in the order of libvirt's virDomainCheckpointDefFormatInternal().
 * The hardened parser and the escaping writer are xml-util.c's. Nothing
 * here logs or keeps state between calls: errors travel back in
 * *ret_error.
 */

#include <inttypes.h>
#include <stdio.h>

#include "util/string-table.h"
#include "util/util.h"
#include "store/xml-checkpoint.h"
#include "store/xml-util.h"

/* Depth of elements below <domaincheckpoint>, for indentation. */
#define LEVEL_CHILD 1
#define LEVEL_DISK 2

static const char *const checkpoint_type_table[_CHECKPOINT_TYPE_MAX] = {
        [CHECKPOINT_TYPE_NO] = "no",
        [CHECKPOINT_TYPE_BITMAP] = "bitmap",
};

DEFINE_STRING_TABLE_LOOKUP(checkpoint_type, CheckpointType);

static void checkpoint_disk_done(CheckpointDisk *d) {
        free(d->name);
        free(d->bitmap);
        strv_free(d->extra_attributes);
        strv_free(d->extra_elements);
        *d = (CheckpointDisk) {};
}

static void disk_item_done(void *item) {
        checkpoint_disk_done(item);
}

static void checkpoint_disks_free(CheckpointDisk *disks, size_t n) {
        xml_items_free(disks, n, sizeof(CheckpointDisk), disk_item_done);
}

CheckpointDef *checkpoint_def_free(CheckpointDef *def) {
        if (!def)
                return NULL;
        free(def->name);
        free(def->description);
        free(def->parent);
        checkpoint_disks_free(def->disks, def->n_disks);
        free(def->domain_xml);
        strv_free(def->extra_elements);
        free(def);
        return NULL;
}

/* ---- Checks shared by parser and writer ----------------------------------- */

/* libvirt's schema (domaincheckpoint.rng, checkpointName): no leading '.',
 * no '/', no whitespace. The name is also the default bitmap name, so it
 * must fit QEMU's limit. */
const char *checkpoint_name_check(const char *s) {
        if (isempty(s))
                return "is empty";
        if (s[0] == '.')
                return "starts with '.'";
        for (const char *c = s; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
                      *c == '_' || *c == '-' || *c == '.'))
                        return "may only hold letters, digits, '_', '-' and '.'";
        if (strlen(s) > CHECKPOINT_BITMAP_NAME_MAX)
                return "is longer than 1023 bytes, QEMU's limit for a bitmap name";
        return NULL;
}

const char *checkpoint_bitmap_name_check(const char *s) {
        if (isempty(s))
                return "is empty";
        if (strlen(s) > CHECKPOINT_BITMAP_NAME_MAX)
                return "is longer than 1023 bytes, QEMU's limit for a bitmap name";
        return NULL;
}

static const char *disk_name_get(const void *item) {
        return ((const CheckpointDisk *) item)->name;
}

static int find_duplicate_disk(const CheckpointDisk *disks, size_t n, size_t *ret_first, size_t *ret_second) {
        _cleanup_free_ XmlNameRef *refs = NULL;
        size_t n_refs;
        int r;

        if (n < 2)
                return 0;
        r = xml_name_index_new(disk_name_get, disks, sizeof(CheckpointDisk), n, &refs, &n_refs);
        if (r < 0)
                return r;
        return xml_name_index_find_duplicate(refs, n_refs, ret_first, ret_second);
}

/* ---- Parser ---------------------------------------------------------------- */

static int parser_disk(XmlParser *p, xmlNode *n, CheckpointDisk *ret) {
        _cleanup_(checkpoint_disk_done) CheckpointDisk d = {};
        _cleanup_free_ char *type = NULL, *size = NULL;
        XmlList extra = { .strv = &d.extra_elements };
        const char *problem;
        uint64_t ignored;
        int r;

        r = xml_parser_disk_name(p, n, xml_check_disk_name, &d.name);
        if (r < 0)
                return r;

        r = xml_attr_get(n, "checkpoint", &type);
        if (r < 0)
                return r;
        d.type = CHECKPOINT_TYPE_BITMAP; /* libvirt's reading of an absent checkpoint= */
        if (type) {
                d.type = checkpoint_type_from_string(type);
                if (d.type < 0)
                        return xml_parser_error(p, -EINVAL, n,
                                                "<disk name='%s' checkpoint='%s'>: expected 'bitmap' or 'no'",
                                                XML_QUOTE(d.name), XML_QUOTE(type));
        }

        r = xml_attr_get(n, "bitmap", &d.bitmap);
        if (r < 0)
                return r;
        r = xml_attr_get(n, "size", &size);
        if (r < 0)
                return r;
        if (d.type == CHECKPOINT_TYPE_NO && (d.bitmap || size))
                return xml_parser_error(p, -EINVAL, n, "<disk name='%s' checkpoint='no'> cannot have %s=",
                                        XML_QUOTE(d.name), d.bitmap ? "bitmap" : "size");
        if (d.bitmap) {
                problem = checkpoint_bitmap_name_check(d.bitmap);
                if (problem)
                        return xml_parser_error(p, -EINVAL, n, "<disk name='%s' bitmap='%s'> %s", XML_QUOTE(d.name),
                                                XML_QUOTE(d.bitmap), problem);
        }
        /* Output of a dynamic query: checked like libvirt's schema, then
         * dropped, as libvirt ignores it on input. */
        if (size && xml_parse_u64(size, &ignored) < 0)
                return xml_parser_error(p, -EINVAL, n, "<disk name='%s' size='%s'> is not a number of bytes",
                                        XML_QUOTE(d.name), XML_QUOTE(size));

        r = xml_collect_attributes(n, (const char *const[]) { "name", "checkpoint", "bitmap", "size", NULL }, NULL,
                                   &d.extra_attributes);
        if (r < 0)
                return r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                r = xml_parser_keep_element(p, c, 0, &extra);
                if (r < 0)
                        return r;
        }

        *ret = d;
        d = (CheckpointDisk) {};
        return 0;
}

static int parse_disk_item(XmlParser *p, xmlNode *c, void *item, void *userdata) {
        return parser_disk(p, c, item);
}

static int parser_disks(XmlParser *p, xmlNode *n, CheckpointDisk **ret, size_t *ret_n) {
        void *items = NULL;
        int r;

        /* libvirt's schema: oneOrMore. Leaving <disks> out means all disks. */
        r = xml_parser_items(p, n, "disk", sizeof(CheckpointDisk), parse_disk_item, disk_item_done, disk_name_get, NULL,
                             "leave <disks> out to include every disk", &items, ret_n);
        if (r < 0)
                return r;
        *ret = items;
        return 0;
}

static int parser_checkpoint(XmlParser *p, xmlNode *root, CheckpointParseFlags flags, CheckpointDef **ret) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *def = NULL;
        const xmlNode *seen_name = NULL, *seen_description = NULL, *seen_creation = NULL, *seen_parent = NULL,
                *seen_disks = NULL, *seen_domain = NULL;
        bool redefine = flags & CHECKPOINT_PARSE_REDEFINE;
        XmlList extra = {};
        const char *problem;
        int r;


        def = new0(CheckpointDef, 1);
        if (!def)
                return -ENOMEM;
        extra.strv = &def->extra_elements;

        for (xmlNode *c = root->children; c; c = c->next) {
                r = xml_parser_skip_node(p, root, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (xml_node_is(c, "name")) {
                        r = xml_parser_text_once(p, c, &seen_name, &def->name);
                        if (r < 0)
                                return r;
                        problem = checkpoint_name_check(def->name);
                        if (problem)
                                return xml_parser_error(p, -EINVAL, c, "<name> '%s' %s", XML_QUOTE(def->name), problem);

                } else if (xml_node_is(c, "description")) {
                        r = xml_parser_description(p, c, &seen_description, &def->description);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "disks")) {
                        r = xml_parser_check_once(p, c, &seen_disks);
                        if (r < 0)
                                return r;
                        r = parser_disks(p, c, &def->disks, &def->n_disks);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "creationTime") || xml_node_is(c, "parent") || xml_node_is(c, "domain")) {
                        /* Read-only output of libvirt: only a redefinition
                         * sets them; a new checkpoint ignores them. */
                        if (!redefine)
                                continue;

                        if (xml_node_is(c, "creationTime")) {
                                _cleanup_free_ char *text = NULL;
                                const char *number;

                                r = xml_parser_text_once(p, c, &seen_creation, &text);
                                if (r < 0)
                                        return r;
                                number = xml_strip_blank(text);
                                r = xml_parse_i64(number, &def->creation_time);
                                if (r < 0 || def->creation_time < 0)
                                        return xml_parser_error(p, -EINVAL, c,
                                                                "<creationTime> is not a number of seconds: '%s'",
                                                                XML_QUOTE(number));
                                def->has_creation_time = true;

                        } else if (xml_node_is(c, "parent")) {
                                r = xml_parser_check_once(p, c, &seen_parent);
                                if (r < 0)
                                        return r;
                                r = xml_parser_parent(p, c, checkpoint_name_check, &def->parent);
                                if (r < 0)
                                        return r;

                        } else {
                                r = xml_parser_check_once(p, c, &seen_domain);
                                if (r < 0)
                                        return r;
                                r = xml_dump_element(p->doc, c, 0, &def->domain_xml);
                                if (r < 0)
                                        return r;
                        }

                } else {
                        r = xml_parser_keep_element(p, c, 0, &extra);
                        if (r < 0)
                                return r;
                }
        }

        if (redefine && !def->name)
                return xml_parser_error(p, -EINVAL, root, "a redefined checkpoint needs a <name>");
        if (redefine && !def->has_creation_time)
                return xml_parser_error(p, -EINVAL, root, "a redefined checkpoint needs a <creationTime>");
        if (def->parent && def->name && streq(def->parent, def->name))
                return xml_parser_error(p, -EINVAL, seen_parent, "checkpoint '%s' names itself as its parent",
                                        XML_QUOTE(def->name));

        *ret = TAKE_PTR(def);
        return 0;
}

typedef struct CheckpointParse {
        CheckpointParseFlags flags;
        CheckpointDef *def;
} CheckpointParse;

static int parse_checkpoint_document(XmlParser *p, xmlNode *root, void *userdata) {
        CheckpointParse *cp = userdata;
        return parser_checkpoint(p, root, cp->flags, &cp->def);
}

int checkpoint_def_parse(const char *xml, size_t size, CheckpointParseFlags flags, CheckpointDef **ret,
                         char **ret_error) {
        CheckpointParse cp = { .flags = flags };
        int r;

        if (!ret || (!xml && size > 0))
                return -EINVAL;
        if (flags & ~CHECKPOINT_PARSE_REDEFINE)
                return xml_set_error(ret_error, -EINVAL, "unknown parse flags 0x%x", (unsigned) flags);
        r = xml_parse_document(xml, size, XML_MAX_DOCUMENT_SIZE, "domaincheckpoint", parse_checkpoint_document, &cp, ret_error);
        if (r < 0)
                return r;
        *ret = cp.def;
        return 0;
}

/* ---- Writer ---------------------------------------------------------------- */

static int writer_check_def(const CheckpointDef *def) {
        int r;

        if (def->name && checkpoint_name_check(def->name))
                return -EINVAL;
        if (def->parent && checkpoint_name_check(def->parent))
                return -EINVAL;
        if (def->has_creation_time && def->creation_time < 0)
                return -EINVAL;
        if (xml_strv_has_blank(def->extra_elements))
                return -EINVAL;
        for (size_t i = 0; i < def->n_disks; i++) {
                const CheckpointDisk *d = &def->disks[i];

                if (xml_check_disk_name(d->name) || !checkpoint_type_to_string(d->type))
                        return -EINVAL;
                if (d->bitmap && (d->type != CHECKPOINT_TYPE_BITMAP || checkpoint_bitmap_name_check(d->bitmap)))
                        return -EINVAL;
                if (xml_strv_has_blank(d->extra_elements))
                        return -EINVAL;
        }
        r = find_duplicate_disk(def->disks, def->n_disks, &(size_t) { 0 }, &(size_t) { 0 });
        if (r < 0)
                return r;
        return r > 0 ? -EINVAL : 0;
}

static void w_disk(XmlWriter *w, const CheckpointDisk *d, CheckpointFormatFlags flags) {
        xml_w_printf(w, "%*s<disk", LEVEL_DISK * 2, "");
        xml_w_attr(w, "name", d->name);
        xml_w_attr(w, "checkpoint", checkpoint_type_to_string(d->type));
        if (d->type == CHECKPOINT_TYPE_BITMAP) {
                xml_w_attr(w, "bitmap", d->bitmap);
                /* libvirt writes size= only for a disk with a bitmap name. */
                if ((flags & CHECKPOINT_FORMAT_SIZE) && d->has_size && d->bitmap)
                        xml_w_printf(w, " size='%" PRIu64 "'", d->size);
        }
        xml_w_extra_attributes(w, d->extra_attributes);
        if (!d->extra_elements) {
                xml_w_puts(w, "/>\n");
                return;
        }
        xml_w_puts(w, ">\n");
        xml_w_kept_list(w, LEVEL_DISK + 1, d->extra_elements);
        xml_w_printf(w, "%*s</disk>\n", LEVEL_DISK * 2, "");
}

typedef struct DefFormat {
        const CheckpointDef *def;
        CheckpointFormatFlags flags;
} DefFormat;

/* libvirt's virDomainCheckpointDefFormatInternal() order. */
static int write_def(XmlWriter *w, const void *userdata) {
        const DefFormat *f = userdata;
        const CheckpointDef *def = f->def;
        int r;

        r = writer_check_def(def);
        if (r < 0)
                return r;

        xml_w_puts(w, "<domaincheckpoint>\n");
        xml_w_moment_name(w, LEVEL_CHILD, def->name, def->description);
        xml_w_moment_parent(w, LEVEL_CHILD, def->parent, def->has_creation_time, def->creation_time);
        if (def->n_disks > 0) {
                xml_w_printf(w, "%*s<disks>\n", LEVEL_CHILD * 2, "");
                for (size_t i = 0; i < def->n_disks; i++)
                        w_disk(w, &def->disks[i], f->flags);
                xml_w_printf(w, "%*s</disks>\n", LEVEL_CHILD * 2, "");
        }
        if (def->domain_xml && !(f->flags & CHECKPOINT_FORMAT_NO_DOMAIN))
                xml_w_kept(w, LEVEL_CHILD, def->domain_xml, "domain", f->flags & CHECKPOINT_FORMAT_SECURE);
        xml_w_kept_list(w, LEVEL_CHILD, def->extra_elements);
        xml_w_puts(w, "</domaincheckpoint>\n");
        return w->error;
}

int checkpoint_def_format(const CheckpointDef *def, CheckpointFormatFlags flags, char **ret) {
        if (!def || !ret || (flags & ~CHECKPOINT_FORMAT_ALL))
                return -EINVAL;
        return xml_format_to_string(write_def, &(DefFormat) { .def = def, .flags = flags }, ret);
}

/* ---- Copy ------------------------------------------------------------------ */

static int checkpoint_disk_copy(const CheckpointDisk *s, CheckpointDisk *ret) {
        _cleanup_(checkpoint_disk_done) CheckpointDisk d = {
                .type = s->type,
                .size = s->size,
                .has_size = s->has_size,
        };

        if (xml_strdup_to(s->name, &d.name) < 0 ||
            xml_strdup_to(s->bitmap, &d.bitmap) < 0 ||
            xml_strv_copy(s->extra_attributes, &d.extra_attributes) < 0 ||
            xml_strv_copy(s->extra_elements, &d.extra_elements) < 0)
                return -ENOMEM;
        *ret = d;
        d = (CheckpointDisk) {};
        return 0;
}

static int disk_item_copy(const void *from, void *to) {
        return checkpoint_disk_copy(from, to);
}

int checkpoint_def_copy(const CheckpointDef *def, CheckpointDef **ret) {
        _cleanup_(checkpoint_def_freep) CheckpointDef *c = NULL;
        int r;

        if (!def || !ret)
                return -EINVAL;
        c = new0(CheckpointDef, 1);
        if (!c)
                return -ENOMEM;
        c->creation_time = def->creation_time;
        c->has_creation_time = def->has_creation_time;
        if (xml_strdup_to(def->name, &c->name) < 0 ||
            xml_strdup_to(def->description, &c->description) < 0 ||
            xml_strdup_to(def->parent, &c->parent) < 0 ||
            xml_strdup_to(def->domain_xml, &c->domain_xml) < 0 ||
            xml_strv_copy(def->extra_elements, &c->extra_elements) < 0)
                return -ENOMEM;
        r = xml_items_copy(def->disks, def->n_disks, sizeof(CheckpointDisk), disk_item_copy, disk_item_done,
                           (void **) &c->disks, &c->n_disks);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- Align ------------------------------------------------------------------ */

/* The domain disk a checkpoint <disk name=…> means: by target, else by an
 * absolute source path that only one disk has (libvirt's
 * virDomainDiskByName() without ambiguity). -1 when none, -2 when several. */
static ssize_t find_domain_disk(const DomainDef *dom, const char *name) {
        ssize_t found = -1;

        for (size_t i = 0; i < dom->n_disks; i++)
                if (streq_ptr(dom->disks[i].target, name))
                        return (ssize_t) i;
        if (name[0] != '/')
                return -1;
        for (size_t i = 0; i < dom->n_disks; i++)
                if (streq_ptr(dom->disks[i].source, name)) {
                        if (found >= 0)
                                return -2;
                        found = (ssize_t) i;
                }
        return found;
}

int checkpoint_def_fill_bitmaps(CheckpointDef *def) {
        if (!def->name)
                return -EINVAL;
        for (size_t i = 0; i < def->n_disks; i++) {
                CheckpointDisk *d = &def->disks[i];

                if (d->type != CHECKPOINT_TYPE_BITMAP || d->bitmap)
                        continue;
                d->bitmap = strdup(def->name);
                if (!d->bitmap)
                        return -ENOMEM;
        }
        return 0;
}

int checkpoint_def_align(CheckpointDef *def, const DomainDef *dom, char **ret_error) {
        _cleanup_free_ ssize_t *given = NULL; /* per domain disk: index into def->disks, or -1 */
        CheckpointDisk *disks = NULL;
        size_t n = 0;
        int r;

        if (!def || !dom)
                return -EINVAL;
        if (!def->name)
                return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT, "The checkpoint has no name.");
        if (dom->n_disks == 0)
                return xml_set_error(ret_error, -QSNAP_E_UNSUPPORTED,
                                   "Domain '%s' has no disks: a checkpoint needs at least one.", dom->name);

        given = new0(ssize_t, dom->n_disks);
        if (!given)
                return -ENOMEM;
        for (size_t i = 0; i < dom->n_disks; i++)
                given[i] = -1;

        for (size_t k = 0; k < def->n_disks; k++) {
                const CheckpointDisk *d = &def->disks[k];
                ssize_t i = find_domain_disk(dom, d->name);

                if (i == -2)
                        return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT,
                                           "Disk '%s' of the checkpoint names the source of more than one disk of "
                                           "domain '%s'; name it by its target.", d->name, dom->name);
                if (i < 0)
                        return xml_set_error(ret_error, -QSNAP_E_NO_SUCH_DISK, "Domain '%s' has no disk '%s'.", dom->name, d->name);
                if (given[i] >= 0)
                        return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT, "Disk '%s' is listed twice in the checkpoint's <disks>.",
                                           dom->disks[i].target);
                if (d->type == CHECKPOINT_TYPE_BITMAP && (dom->disks[i].readonly || dom->disks[i].transient))
                        return xml_set_error(ret_error, -QSNAP_E_INVALID_ARGUMENT,
                                           "Disk '%s' is %s: it cannot track changes; give it checkpoint='no'.",
                                           dom->disks[i].target, dom->disks[i].readonly ? "read-only" : "transient");
                given[i] = (ssize_t) k;
        }

        disks = new0(CheckpointDisk, dom->n_disks);
        if (!disks)
                return -ENOMEM;
        for (size_t i = 0; i < dom->n_disks; i++) {
                const DomainDisk *dd = &dom->disks[i];
                CheckpointDisk *d = &disks[n];

                if (given[i] >= 0) {
                        r = checkpoint_disk_copy(&def->disks[given[i]], d);
                        if (r < 0)
                                goto fail;
                        n++;
                        r = free_and_strdup(&d->name, dd->target);
                        if (r < 0)
                                goto fail;
                } else {
                        n++;
                        d->name = strdup(dd->target);
                        if (!d->name) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        /* Without <disks>: every disk that can change; with
                         * <disks>: only those listed (libvirt). */
                        d->type = def->n_disks == 0 && !dd->readonly && !dd->transient ? CHECKPOINT_TYPE_BITMAP
                                                                                       : CHECKPOINT_TYPE_NO;
                }
                if (d->type == CHECKPOINT_TYPE_BITMAP && !d->bitmap) {
                        d->bitmap = strdup(def->name);
                        if (!d->bitmap) {
                                r = -ENOMEM;
                                goto fail;
                        }
                }
        }

        checkpoint_disks_free(def->disks, def->n_disks);
        def->disks = disks;
        def->n_disks = n;
        return 0;

fail:
        checkpoint_disks_free(disks, n);
        return r;
}
