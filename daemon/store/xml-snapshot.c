/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The libvirt <domainsnapshot> codec, and the bulk <snapshots> file built
 * from it: text in, SnapshotDef out, and back. It validates what libvirt
 * validates (plus what qsnapd relies on: absolute paths, unique disk names,
 * an external snapshot for every <source>), keeps the embedded <domain>,
 * <inactiveDomain> and unknown elements verbatim, and writes in the order of
 * libvirt's virDomainSnapshotDefFormatInternal(). The hardened parser and the
 * escaping writer are xml-util.c's. Nothing here logs or keeps state between
 * calls: errors travel back in *ret_error.
 */

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>

#include "store/xml-snapshot.h"
#include "store/xml-util.h"
#include "util/string-table.h"
#include "util/util.h"

/* Depth of elements below <domainsnapshot>, for indentation. */
#define LEVEL_SNAPSHOT_CHILD 1
#define LEVEL_DISK 2

/* xmlCreateMemoryParserCtxt() takes an int. */
#define SNAPSHOT_LIST_MAX_SIZE ((size_t) INT_MAX)

static const char *const snapshot_location_table[_SNAPSHOT_LOCATION_MAX] = {
        [SNAPSHOT_LOCATION_DEFAULT] = "default",
        [SNAPSHOT_LOCATION_NO] = "no",
        [SNAPSHOT_LOCATION_INTERNAL] = "internal",
        [SNAPSHOT_LOCATION_EXTERNAL] = "external",
        [SNAPSHOT_LOCATION_MANUAL] = "manual",
};

static const char *const snapshot_state_table[_SNAPSHOT_STATE_MAX] = {
        [SNAPSHOT_STATE_RUNNING] = "running",
        [SNAPSHOT_STATE_PAUSED] = "paused",
        [SNAPSHOT_STATE_SHUTOFF] = "shutoff",
        [SNAPSHOT_STATE_DISK_SNAPSHOT] = "disk-snapshot",
        [SNAPSHOT_STATE_NOSTATE] = "nostate",
        [SNAPSHOT_STATE_BLOCKED] = "blocked",
        [SNAPSHOT_STATE_SHUTDOWN] = "shutdown",
        [SNAPSHOT_STATE_CRASHED] = "crashed",
        [SNAPSHOT_STATE_PMSUSPENDED] = "pmsuspended",
};

static const char *const merge_direction_table[_MERGE_MAX] = {
        [MERGE_DEFAULT] = "default",
        [MERGE_FORWARD] = "forward",
        [MERGE_BACKWARD] = "backward",
};

DEFINE_STRING_TABLE_LOOKUP(snapshot_location, SnapshotLocation);
DEFINE_STRING_TABLE_LOOKUP(snapshot_state, SnapshotState);
DEFINE_STRING_TABLE_LOOKUP(merge_direction, MergeDirection);

static void snapshot_disk_done(SnapshotDisk *d) {
        free(d->name);
        free(d->source);
        strv_free(d->extra_elements);
        strv_free(d->extra_attributes);
        strv_free(d->extra_driver_attributes);
        strv_free(d->extra_driver_elements);
        strv_free(d->extra_source_attributes);
        strv_free(d->extra_source_elements);
        *d = (SnapshotDisk) { .format = _DISK_FORMAT_INVALID };
}

static void disk_item_done(void *item) {
        snapshot_disk_done(item);
}

static void snapshot_disks_free(SnapshotDisk *disks, size_t n) {
        xml_items_free(disks, n, sizeof(SnapshotDisk), disk_item_done);
}

SnapshotDef *snapshot_def_free(SnapshotDef *def) {
        if (!def)
                return NULL;

        free(def->name);
        free(def->description);
        free(def->memory_file);
        snapshot_disks_free(def->disks, def->n_disks);
        free(def->parent);
        free(def->domain_xml);
        free(def->inactive_domain_xml);
        free(def->nvram_file);
        snapshot_disks_free(def->revert_disks, def->n_revert_disks);
        strv_free(def->extra_elements);
        free(def);
        return NULL;
}

SnapshotDef **snapshot_def_array_free(SnapshotDef **defs, size_t n) {
        for (size_t i = 0; defs && i < n; i++)
                snapshot_def_free(defs[i]);
        free(defs);
        return NULL;
}

/* ---- Checks shared by parser and writer ----------------------------------- */

/* Each returns NULL when the value is fine, else what is wrong with it. The
 * writer uses them too, so that what we write we can read back. */

/* Snapshot names may hold any character (spaces, '/', newlines), but an
 * empty or all-blank name could not be told apart from none. */
static const char *check_name(const char *s) {
        if (isempty(s) || xml_is_blank(s))
                return "is empty";
        return NULL;
}

static bool state_is_offline(SnapshotState s) {
        return s == SNAPSHOT_STATE_SHUTOFF || s == SNAPSHOT_STATE_DISK_SNAPSHOT;
}

static bool location_has_state(SnapshotLocation l) {
        return l == SNAPSHOT_LOCATION_INTERNAL || l == SNAPSHOT_LOCATION_EXTERNAL;
}

static const char *disk_name_get(const void *item) {
        return ((const SnapshotDisk *) item)->name;
}

static const char *def_name_get(const void *item) {
        return (*(SnapshotDef *const *) item)->name;
}

static int find_duplicate_disk(const SnapshotDisk *disks, size_t n, size_t *ret_first, size_t *ret_second) {
        _cleanup_free_ XmlNameRef *refs = NULL;
        size_t n_refs;
        int r;

        if (n < 2)
                return 0;
        r = xml_name_index_new(disk_name_get, disks, sizeof(SnapshotDisk), n, &refs, &n_refs);
        if (r < 0)
                return r;
        return xml_name_index_find_duplicate(refs, n_refs, ret_first, ret_second);
}

/* ---- Parser ---------------------------------------------------------------- */

/* Keeps an element verbatim and unindented; the writer indents it to
 * wherever it goes (a snapshot nests one level deeper in the bulk file). */
static int keep_element(XmlParser *p, xmlNode *n, XmlList *list) {
        return xml_parser_keep_element(p, n, 0, list);
}

/* snapshot= of <disk> and <memory>: libvirt refuses an explicit "default". */
static int parser_location_attr(XmlParser *p, const xmlNode *n, SnapshotLocation *ret) {
        _cleanup_free_ char *v = NULL;
        SnapshotLocation l;
        int r;

        r = xml_attr_get(n, "snapshot", &v);
        if (r < 0)
                return r;
        if (!v) {
                *ret = SNAPSHOT_LOCATION_DEFAULT;
                return 0;
        }
        l = snapshot_location_from_string(v);
        if (l < 0 || l == SNAPSHOT_LOCATION_DEFAULT)
                return xml_parser_error(p, -EINVAL, n,
                                        "<%s snapshot='%s'> is not a snapshot location, expected 'no', 'internal', "
                                        "'external' or 'manual'",
                                        (const char *) n->name, XML_QUOTE(v));
        *ret = l;
        return 0;
}

static int parser_on_delete(XmlParser *p, const xmlNode *n, MergeDirection *ret) {
        _cleanup_free_ char *merge = NULL;
        MergeDirection m;
        int r;

        for (const xmlAttr *a = n->properties; a; a = a->next)
                if (a->ns || !xmlStrEqual(a->name, BAD_CAST "merge"))
                        return xml_parser_error(p, -EINVAL, n, "<on_delete> has an unknown attribute '%s'",
                                                XML_QUOTE((const char *) a->name));
        r = xml_attr_get(n, "merge", &merge);
        if (r < 0)
                return r;
        if (!merge)
                return xml_parser_error(p, -EINVAL, n, "<on_delete> has no merge= attribute");
        m = merge_direction_from_string(merge);
        if (m < 0 || m == MERGE_DEFAULT)
                return xml_parser_error(p, -EINVAL, n,
                                        "<on_delete merge='%s'> is not supported, expected 'forward' or 'backward'",
                                        XML_QUOTE(merge));
        r = xml_parser_check_empty(p, n);
        if (r < 0)
                return r;
        *ret = m;
        return 0;
}

static int parser_disk(XmlParser *p, xmlNode *n, SnapshotDisk *ret) {
        _cleanup_(snapshot_disk_done) SnapshotDisk d = { .format = _DISK_FORMAT_INVALID };
        _cleanup_free_ char *type = NULL;
        const xmlNode *seen_driver = NULL, *seen_source = NULL, *seen_on_delete = NULL;
        XmlList extra = { .strv = &d.extra_elements };
        int r;

        r = xml_parser_disk_name(p, n, xml_check_disk_name, &d.name);
        if (r < 0)
                return r;
        r = parser_location_attr(p, n, &d.snapshot);
        if (r < 0)
                return r;
        r = xml_attr_get(n, "type", &type);
        if (r < 0)
                return r;
        if (type && !streq(type, "file"))
                return xml_parser_error(p, -EINVAL, n, "disk '%s' has type '%s': only type='file' is supported",
                                        XML_QUOTE(d.name), XML_QUOTE(type));
        r = xml_collect_attributes(n, (const char *const[]) { "name", "snapshot", "type", NULL }, NULL,
                                   &d.extra_attributes);
        if (r < 0)
                return r;

        for (xmlNode *c = n->children; c; c = c->next) {
                r = xml_parser_skip_node(p, n, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;

                if (xml_node_is(c, "driver")) {
                        _cleanup_free_ char *format = NULL;

                        r = xml_parser_check_once(p, c, &seen_driver);
                        if (r < 0)
                                return r;
                        r = xml_attr_get(c, "type", &format);
                        if (r < 0)
                                return r;
                        if (format) {
                                d.format = disk_format_from_string(format);
                                if (d.format < 0)
                                        return xml_parser_error(p, -EINVAL, c,
                                                                "disk '%s' has driver type '%s', expected 'qcow2' or 'raw'",
                                                                XML_QUOTE(d.name), XML_QUOTE(format));
                        }
                        r = xml_collect_attributes(c, (const char *const[]) { "type", NULL }, NULL,
                                                   &d.extra_driver_attributes);
                        if (r < 0)
                                return r;
                        r = xml_parser_keep_children(p, c, &d.extra_driver_elements);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "source")) {
                        r = xml_parser_check_once(p, c, &seen_source);
                        if (r < 0)
                                return r;
                        r = xml_parser_path_attr(p, c, "file", &d.source);
                        if (r < 0)
                                return r;
                        r = xml_collect_attributes(c, (const char *const[]) { "file", NULL }, NULL,
                                                   &d.extra_source_attributes);
                        if (r < 0)
                                return r;
                        r = xml_parser_keep_children(p, c, &d.extra_source_elements);
                        if (r < 0)
                                return r;

                } else if (xml_node_is(c, "on_delete")) {
                        r = xml_parser_check_once(p, c, &seen_on_delete);
                        if (r < 0)
                                return r;
                        r = parser_on_delete(p, c, &d.on_delete);
                        if (r < 0)
                                return r;

                } else {
                        r = keep_element(p, c, &extra);
                        if (r < 0)
                                return r;
                }
        }

        /* libvirt: a new file or format without snapshot= means external. */
        if (d.snapshot == SNAPSHOT_LOCATION_DEFAULT && (d.source || d.format >= 0))
                d.snapshot = SNAPSHOT_LOCATION_EXTERNAL;
        if (d.snapshot != SNAPSHOT_LOCATION_DEFAULT && d.snapshot != SNAPSHOT_LOCATION_EXTERNAL &&
            (seen_source || seen_driver))
                return xml_parser_error(p, -EINVAL, seen_source ?: seen_driver,
                                        "disk '%s' has <%s>, which only snapshot='external' may have, not '%s'",
                                        XML_QUOTE(d.name), seen_source ? "source" : "driver",
                                        snapshot_location_to_string(d.snapshot));

        *ret = d;
        d = (SnapshotDisk) { .format = _DISK_FORMAT_INVALID };
        return 0;
}

static int parse_disk_item(XmlParser *p, xmlNode *c, void *item, void *userdata) {
        return parser_disk(p, c, item);
}

/* <disks> and <revertDisks>: a list of <disk>, each name once. */
static int parser_disks(XmlParser *p, xmlNode *n, SnapshotDisk **ret, size_t *ret_n) {
        void *items = NULL;
        int r;

        r = xml_parser_items(p, n, "disk", sizeof(SnapshotDisk), parse_disk_item, disk_item_done, disk_name_get, NULL,
                             NULL, &items, ret_n);
        if (r < 0)
                return r;
        *ret = items;
        return 0;
}

static int parser_memory(XmlParser *p, const xmlNode *n, SnapshotDef *def) {
        const char *problem;
        int r;

        r = parser_location_attr(p, n, &def->memory);
        if (r < 0)
                return r;
        r = xml_attr_get(n, "file", &def->memory_file);
        if (r < 0)
                return r;

        if (def->memory == SNAPSHOT_LOCATION_MANUAL)
                return xml_parser_error(p, -EINVAL, n, "<memory snapshot='manual'> is not supported");
        if (def->memory_file) {
                /* libvirt: a file without snapshot= means external. */
                if (def->memory == SNAPSHOT_LOCATION_DEFAULT)
                        def->memory = SNAPSHOT_LOCATION_EXTERNAL;
                if (def->memory != SNAPSHOT_LOCATION_EXTERNAL)
                        return xml_parser_error(p, -EINVAL, n, "<memory file='%s'> needs snapshot='external', not '%s'",
                                                XML_QUOTE(def->memory_file), snapshot_location_to_string(def->memory));
                problem = xml_check_absolute_path(def->memory_file);
                if (problem)
                        return xml_parser_error(p, -EINVAL, n, "<memory file='%s'> %s", XML_QUOTE(def->memory_file),
                                                problem);
        } else if (def->memory == SNAPSHOT_LOCATION_EXTERNAL)
                return xml_parser_error(p, -EINVAL, n, "<memory snapshot='external'> needs a file= attribute");

        return xml_parser_check_empty(p, n);
}

static int parser_verbatim(XmlParser *p, xmlNode *n, char **ret) {
        return xml_dump_element(p->doc, n, 0, ret);
}

/* One <domainsnapshot> element, the root of a document or a child of
 * <snapshots>. */
/* Where each element was first seen: the second one is an error naming it. */
typedef struct SnapshotSeen {
        const xmlNode *name, *description, *state, *creation, *parent, *memory, *disks, *revert, *domain, *inactive,
                *active, *nvram;
} SnapshotSeen;

#define QSNAP_SNAPSHOT_NAMESPACE "http://example.org/qsnap/1"

static bool node_is_nvram(const xmlNode *n) {
        return n->type == XML_ELEMENT_NODE && n->ns && n->ns->href &&
                xmlStrEqual(n->ns->href, BAD_CAST QSNAP_SNAPSHOT_NAMESPACE) && xmlStrEqual(n->name, BAD_CAST "nvram");
}

static int parser_nvram(XmlParser *p, xmlNode *c, SnapshotSeen *seen, SnapshotDef *def) {
        _cleanup_free_ char *internal = NULL;
        const char *problem;
        int r;

        r = xml_parser_check_once(p, c, &seen->nvram);
        if (r < 0)
                return r;
        if ((r = xml_attr_get(c, "file", &def->nvram_file)) < 0 || (r = xml_attr_get(c, "internal", &internal)) < 0)
                return r;
        if (def->nvram_file && (problem = xml_check_absolute_path(def->nvram_file)))
                return xml_parser_error(p, -EINVAL, c, "<qsnap:nvram file='%s'> %s", XML_QUOTE(def->nvram_file), problem);
        if (internal && !STR_IN_SET(internal, "yes", "no"))
                return xml_parser_error(p, -EINVAL, c, "<qsnap:nvram internal='%s'>: yes or no", XML_QUOTE(internal));
        def->nvram_internal = streq_ptr(internal, "yes");
        return 0;
}

static int parser_state(XmlParser *p, xmlNode *c, SnapshotSeen *seen, SnapshotDef *def) {
        _cleanup_free_ char *text = NULL;
        const char *value;
        int r;

        r = xml_parser_text_once(p, c, &seen->state, &text);
        if (r < 0)
                return r;
        value = xml_strip_blank(text);
        def->state = snapshot_state_from_string(value);
        if (def->state < 0)
                return xml_parser_error(p, -EINVAL, c,
                                        "<state> '%s' is not a snapshot state, expected running, paused, shutoff, "
                                        "disk-snapshot, nostate, blocked, shutdown, crashed or pmsuspended",
                                        XML_QUOTE(value));
        def->has_state = true;
        return 0;
}

static int parser_creation_time(XmlParser *p, xmlNode *c, SnapshotSeen *seen, SnapshotDef *def) {
        _cleanup_free_ char *text = NULL;
        const char *number;
        int r;

        r = xml_parser_text_once(p, c, &seen->creation, &text);
        if (r < 0)
                return r;
        number = xml_strip_blank(text);
        r = xml_parse_i64(number, &def->creation_time);
        if (r == -ERANGE)
                return xml_parser_error(p, -EINVAL, c, "<creationTime> is out of range: '%s'", XML_QUOTE(number));
        if (r < 0)
                return xml_parser_error(p, -EINVAL, c, "<creationTime> is not an integer: '%s'", XML_QUOTE(number));
        def->has_creation_time = true;
        return 0;
}

static int parser_active(XmlParser *p, xmlNode *c, SnapshotSeen *seen, SnapshotDef *def) {
        _cleanup_free_ char *text = NULL;
        const char *number;
        int64_t v;
        int r;

        r = xml_parser_text_once(p, c, &seen->active, &text);
        if (r < 0)
                return r;
        number = xml_strip_blank(text);
        if (xml_parse_i64(number, &v) < 0 || v < INT_MIN || v > INT_MAX)
                return xml_parser_error(p, -EINVAL, c, "<active> is not a number: '%s'", XML_QUOTE(number));
        def->active = v != 0;
        return 0;
}

static bool is_output_element(const xmlNode *c) {
        return xml_node_is(c, "state") || xml_node_is(c, "creationTime") || xml_node_is(c, "parent") ||
                xml_node_is(c, "revertDisks") || xml_node_is(c, "domain") || xml_node_is(c, "inactiveDomain");
}

/* libvirt's read-only output: only a redefinition may set it. */
static int parser_output_element(XmlParser *p, xmlNode *c, SnapshotSeen *seen, SnapshotDef *def) {
        int r;

        if (xml_node_is(c, "state"))
                return parser_state(p, c, seen, def);
        if (xml_node_is(c, "creationTime"))
                return parser_creation_time(p, c, seen, def);
        if (xml_node_is(c, "parent")) {
                r = xml_parser_check_once(p, c, &seen->parent);
                return r < 0 ? r : xml_parser_parent(p, c, check_name, &def->parent);
        }
        if (xml_node_is(c, "revertDisks")) {
                r = xml_parser_check_once(p, c, &seen->revert);
                return r < 0 ? r : parser_disks(p, c, &def->revert_disks, &def->n_revert_disks);
        }
        if (xml_node_is(c, "domain")) {
                r = xml_parser_check_once(p, c, &seen->domain);
                return r < 0 ? r : parser_verbatim(p, c, &def->domain_xml);
        }
        r = xml_parser_check_once(p, c, &seen->inactive);
        return r < 0 ? r : parser_verbatim(p, c, &def->inactive_domain_xml);
}

static int parser_snapshot_child(XmlParser *p, xmlNode *c, bool redefine, SnapshotSeen *seen, SnapshotDef *def,
                                 XmlList *extra) {
        const char *problem;
        int r;

        if (xml_node_is(c, "name")) {
                r = xml_parser_text_once(p, c, &seen->name, &def->name);
                if (r < 0)
                        return r;
                problem = check_name(def->name);
                return problem ? xml_parser_error(p, -EINVAL, c, "<name> %s", problem) : 0;
        }
        if (xml_node_is(c, "description"))
                return xml_parser_description(p, c, &seen->description, &def->description);
        if (xml_node_is(c, "memory")) {
                r = xml_parser_check_once(p, c, &seen->memory);
                return r < 0 ? r : parser_memory(p, c, def);
        }
        if (xml_node_is(c, "disks")) {
                r = xml_parser_check_once(p, c, &seen->disks);
                if (r >= 0)
                        r = parser_disks(p, c, &def->disks, &def->n_disks);
                def->has_disks = r >= 0;
                return r;
        }
        if (xml_node_is(c, "active"))
                return parser_active(p, c, seen, def);
        if (is_output_element(c))
                /* A new snapshot ignores them. */
                return redefine ? parser_output_element(p, c, seen, def) : 0;
        if (node_is_nvram(c))
                return redefine ? parser_nvram(p, c, seen, def) : 0;
        return keep_element(p, c, extra);
}

static int parser_snapshot(XmlParser *p, xmlNode *root, SnapshotParseFlags flags, SnapshotDef **ret) {
        _cleanup_(snapshot_def_freep) SnapshotDef *def = NULL;
        SnapshotSeen seen = {};
        XmlList extra = {};
        int r;

        def = new0(SnapshotDef, 1);
        if (!def)
                return -ENOMEM;
        def->active = -1;
        extra.strv = &def->extra_elements;

        for (xmlNode *c = root->children; c; c = c->next) {
                r = xml_parser_skip_node(p, root, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                r = parser_snapshot_child(p, c, flags & SNAPSHOT_PARSE_REDEFINE, &seen, def, &extra);
                if (r < 0)
                        return r;
        }

        if (def->has_state && state_is_offline(def->state) && location_has_state(def->memory))
                return xml_parser_error(p, -EINVAL, seen.memory,
                                        "<memory snapshot='%s'>: a snapshot in state '%s' has no memory state to save",
                                        snapshot_location_to_string(def->memory), snapshot_state_to_string(def->state));

        *ret = TAKE_PTR(def);
        return 0;
}

typedef struct SnapshotParse {
        SnapshotParseFlags flags;
        SnapshotDef *def;
} SnapshotParse;

static int parse_snapshot_document(XmlParser *p, xmlNode *root, void *userdata) {
        SnapshotParse *sp = userdata;
        return parser_snapshot(p, root, sp->flags, &sp->def);
}

int snapshot_def_parse(const char *xml, size_t size, SnapshotParseFlags flags, SnapshotDef **ret, char **ret_error) {
        SnapshotParse sp = { .flags = flags };
        int r;

        if (!ret || (!xml && size > 0))
                return -EINVAL;
        if (flags & ~SNAPSHOT_PARSE_REDEFINE)
                return xml_set_error(ret_error, -EINVAL, "unknown parse flags 0x%x", (unsigned) flags);
        r = xml_parse_document(xml, size, XML_MAX_DOCUMENT_SIZE, "domainsnapshot", parse_snapshot_document, &sp, ret_error);
        if (r < 0)
                return r;
        *ret = sp.def;
        return 0;
}

/* ---- Bulk list: checks ------------------------------------------------------ */

/* What a list must satisfy to be read back: names present and unique,
 * parents in the list and free of cycles, current naming a member. On
 * failure returns -EINVAL with the offending index in *ret_index (SIZE_MAX
 * for current) and a static description of the problem. */
typedef enum ListProblem {
        LIST_OK,
        LIST_NO_NAME,
        LIST_DUPLICATE,
        LIST_NO_PARENT,
        LIST_CYCLE,
        LIST_NO_CURRENT,
} ListProblem;

static int list_check(SnapshotDef *const *defs, size_t n, const char *current, ListProblem *ret_problem,
                      size_t *ret_index, size_t *ret_other) {
        _cleanup_free_ XmlNameRef *refs = NULL;
        _cleanup_free_ size_t *parent = NULL;
        _cleanup_free_ uint8_t *state = NULL;
        size_t n_refs, first, second;
        int r;

        *ret_problem = LIST_OK;
        for (size_t i = 0; i < n; i++)
                if (!defs[i]->name) {
                        *ret_problem = LIST_NO_NAME;
                        *ret_index = i;
                        return -EINVAL;
                }

        r = xml_name_index_new(def_name_get, defs, sizeof(SnapshotDef *), n, &refs, &n_refs);
        if (r < 0)
                return r;
        if (xml_name_index_find_duplicate(refs, n_refs, &first, &second) > 0) {
                *ret_problem = LIST_DUPLICATE;
                *ret_index = second;
                *ret_other = first;
                return -EINVAL;
        }

        parent = new0(size_t, n);
        state = new0(uint8_t, n);
        if (!parent || !state)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const XmlNameRef *ref;

                parent[i] = SIZE_MAX;
                if (!defs[i]->parent)
                        continue;
                ref = xml_name_index_lookup(refs, n_refs, defs[i]->parent);
                if (!ref) {
                        *ret_problem = LIST_NO_PARENT;
                        *ret_index = i;
                        return -EINVAL;
                }
                parent[i] = ref->index;
        }

        /* Follow each parent chain once: 1 = on the chain being walked,
         * 2 = known to end at a root. */
        for (size_t i = 0; i < n; i++) {
                size_t j = i;

                while (j != SIZE_MAX && state[j] == 0) {
                        state[j] = 1;
                        j = parent[j];
                }
                if (j != SIZE_MAX && state[j] == 1) {
                        *ret_problem = LIST_CYCLE;
                        *ret_index = j;
                        return -EINVAL;
                }
                for (j = i; j != SIZE_MAX && state[j] == 1; j = parent[j])
                        state[j] = 2;
        }

        if (current && !xml_name_index_lookup(refs, n_refs, current)) {
                *ret_problem = LIST_NO_CURRENT;
                *ret_index = SIZE_MAX;
                return -EINVAL;
        }
        return 0;
}

/* ---- Bulk list: parser ------------------------------------------------------ */

typedef struct ListParse {
        SnapshotDef **defs;
        const xmlNode **nodes; /* where each def was, for error lines */
        size_t n, allocated;
        size_t active;         /* the one with <active>1</active>, SIZE_MAX for none */
        char *current;
} ListParse;

static void list_parse_done(ListParse *l) {
        snapshot_def_array_free(l->defs, l->n);
        free(l->nodes);
        free(l->current);
        *l = (ListParse) {};
}

static int list_parse_snapshot(XmlParser *p, ListParse *l, xmlNode *c) {
        int r;

        if (l->n == l->allocated) {
                size_t a = l->allocated > 0 ? l->allocated * 2 : 16;
                SnapshotDef **k = reallocarray(l->defs, a, sizeof(SnapshotDef *));
                const xmlNode **m;

                if (!k)
                        return -ENOMEM;
                l->defs = k;
                m = reallocarray(l->nodes, a, sizeof(xmlNode *));
                if (!m)
                        return -ENOMEM;
                l->nodes = m;
                l->allocated = a;
        }
        r = parser_snapshot(p, c, SNAPSHOT_PARSE_REDEFINE, &l->defs[l->n]);
        if (r < 0)
                return r;
        l->nodes[l->n++] = c;

        /* libvirt's per-snapshot files mark the current one so. */
        if (l->defs[l->n - 1]->active > 0) {
                if (l->active != SIZE_MAX)
                        return xml_parser_error(p, -EINVAL, c, "more than one snapshot has <active>1</active>, "
                                                "the first on line %ld", xmlGetLineNo(l->nodes[l->active]));
                l->active = l->n - 1;
        }
        return 0;
}

/* What list_check() found wrong with the tree, as a parser error. */
static int list_parse_check(XmlParser *p, const xmlNode *root, ListParse *l) {
        size_t index = 0, other = 0;
        ListProblem problem;
        int r;

        r = list_check(l->defs, l->n, l->current, &problem, &index, &other);
        switch (problem) {
        case LIST_OK:
                break;
        case LIST_NO_NAME:
                return xml_parser_error(p, -EINVAL, l->nodes[index], "<domainsnapshot> has no <name>");
        case LIST_DUPLICATE:
                return xml_parser_error(p, -EINVAL, l->nodes[index], "snapshot '%s' appears more than once, first on line %ld",
                                        XML_QUOTE(l->defs[index]->name), xmlGetLineNo(l->nodes[other]));
        case LIST_NO_PARENT:
                return xml_parser_error(p, -EINVAL, l->nodes[index],
                                        "snapshot '%s' names parent '%s', which is not in the file",
                                        XML_QUOTE(l->defs[index]->name), XML_QUOTE(l->defs[index]->parent));
        case LIST_CYCLE:
                return xml_parser_error(p, -EINVAL, l->nodes[index], "snapshot '%s' is its own ancestor",
                                        XML_QUOTE(l->defs[index]->name));
        case LIST_NO_CURRENT:
                return xml_parser_error(p, -EINVAL, root, "<snapshots current='%s'> names no snapshot in the file",
                                        XML_QUOTE(l->current));
        }
        return r;
}

static int parse_list_document(XmlParser *p, xmlNode *root, void *userdata) {
        ListParse *l = userdata;
        int r;

        if (!root || !xml_node_is(root, "snapshots"))
                return xml_parser_error(p, -EINVAL, root, "root element is <%s>, expected <snapshots>",
                                        root ? XML_QUOTE((const char *) root->name) : "");
        r = xml_attr_get(root, "current", &l->current);
        if (r < 0)
                return r;
        if (l->current && check_name(l->current))
                return xml_parser_error(p, -EINVAL, root, "<snapshots current=''> is empty");

        for (xmlNode *c = root->children; c; c = c->next) {
                r = xml_parser_skip_node(p, root, c);
                if (r < 0)
                        return r;
                if (r > 0)
                        continue;
                if (!xml_node_is(c, "domainsnapshot"))
                        return xml_parser_error(p, -EINVAL, c, "unexpected <%s> in <snapshots>, expected <domainsnapshot>",
                                                XML_QUOTE((const char *) c->name));
                r = list_parse_snapshot(p, l, c);
                if (r < 0)
                        return r;
        }

        r = list_parse_check(p, root, l);
        if (r < 0)
                return r;
        if (l->active != SIZE_MAX) {
                const char *name = l->defs[l->active]->name;

                if (l->current && !streq(l->current, name))
                        return xml_parser_error(p, -EINVAL, l->nodes[l->active],
                                                "snapshot '%s' has <active>1</active>, but <snapshots current='%s'>",
                                                XML_QUOTE(name), XML_QUOTE(l->current));
                if (!l->current && !(l->current = strdup(name)))
                        return -ENOMEM;
        }
        return 0;
}

int snapshot_list_parse(
                const char *xml,
                size_t size,
                SnapshotDef ***ret_defs,
                size_t *ret_n,
                char **ret_current,
                char **ret_error) {

        _cleanup_(list_parse_done) ListParse l = { .active = SIZE_MAX };
        int r;

        if (!ret_defs || !ret_n || (!xml && size > 0))
                return -EINVAL;
        r = xml_parse_document(xml, size, SNAPSHOT_LIST_MAX_SIZE, NULL, parse_list_document, &l, ret_error);
        if (r < 0)
                return r;
        *ret_defs = l.n > 0 ? TAKE_PTR(l.defs) : NULL;
        *ret_n = l.n;
        l.n = 0;
        if (ret_current)
                *ret_current = TAKE_PTR(l.current);
        return 0;
}

/* ---- Writer ---------------------------------------------------------------- */

static int writer_check_disk(const SnapshotDisk *d) {
        if (xml_check_disk_name(d->name))
                return -EINVAL;
        if (d->snapshot < 0 || d->snapshot >= _SNAPSHOT_LOCATION_MAX)
                return -EINVAL;
        if (d->format != _DISK_FORMAT_INVALID && !disk_format_to_string(d->format))
                return -EINVAL;
        if (d->source && xml_check_absolute_path(d->source))
                return -EINVAL;
        if ((d->source || d->format >= 0) && d->snapshot != SNAPSHOT_LOCATION_DEFAULT &&
            d->snapshot != SNAPSHOT_LOCATION_EXTERNAL)
                return -EINVAL;
        if (d->on_delete < 0 || d->on_delete >= _MERGE_MAX)
                return -EINVAL;
        if (xml_strv_has_blank(d->extra_elements) || xml_strv_has_blank(d->extra_driver_elements) ||
            xml_strv_has_blank(d->extra_source_elements))
                return -EINVAL;
        return 0;
}

static int writer_check_disks(const SnapshotDisk *disks, size_t n) {
        int r;

        for (size_t i = 0; i < n; i++) {
                r = writer_check_disk(&disks[i]);
                if (r < 0)
                        return r;
        }
        r = find_duplicate_disk(disks, n, &(size_t) { 0 }, &(size_t) { 0 });
        if (r < 0)
                return r;
        return r > 0 ? -EINVAL : 0;
}

static int writer_check_def(const SnapshotDef *def) {
        int r;

        if (def->name && check_name(def->name))
                return -EINVAL;
        if (def->has_state && !snapshot_state_to_string(def->state))
                return -EINVAL;
        if (def->parent && check_name(def->parent))
                return -EINVAL;
        if (def->memory < 0 || def->memory >= _SNAPSHOT_LOCATION_MAX || def->memory == SNAPSHOT_LOCATION_MANUAL)
                return -EINVAL;
        if ((def->memory == SNAPSHOT_LOCATION_EXTERNAL) != !!def->memory_file)
                return -EINVAL;
        if (def->memory_file && xml_check_absolute_path(def->memory_file))
                return -EINVAL;
        if (def->has_state && state_is_offline(def->state) && location_has_state(def->memory))
                return -EINVAL;
        if (xml_strv_has_blank(def->extra_elements))
                return -EINVAL;
        if (def->nvram_file && xml_check_absolute_path(def->nvram_file))
                return -EINVAL;
        r = writer_check_disks(def->disks, def->n_disks);
        if (r < 0)
                return r;
        return writer_check_disks(def->revert_disks, def->n_revert_disks);
}

static void w_disk(XmlWriter *w, int base, const SnapshotDisk *d) {
        SnapshotLocation snapshot = d->snapshot;
        bool has_format = d->format >= 0, has_driver, has_source;
        int level = base + LEVEL_DISK;

        /* As libvirt reads it: a file or format means external. */
        if (snapshot == SNAPSHOT_LOCATION_DEFAULT && (d->source || has_format))
                snapshot = SNAPSHOT_LOCATION_EXTERNAL;
        has_driver = has_format || d->extra_driver_attributes || d->extra_driver_elements;
        has_source = d->source || d->extra_source_attributes || d->extra_source_elements;

        xml_w_printf(w, "%*s<disk", level * 2, "");
        xml_w_attr(w, "name", d->name);
        if (snapshot != SNAPSHOT_LOCATION_DEFAULT)
                xml_w_attr(w, "snapshot", snapshot_location_to_string(snapshot));
        if (d->source || has_format)
                xml_w_attr(w, "type", "file");
        xml_w_extra_attributes(w, d->extra_attributes);
        if (!has_driver && !has_source && d->on_delete == MERGE_DEFAULT && !d->extra_elements) {
                xml_w_puts(w, "/>\n");
                return;
        }
        xml_w_puts(w, ">\n");

        if (has_driver) {
                xml_w_printf(w, "%*s<driver", (level + 1) * 2, "");
                if (has_format)
                        xml_w_attr(w, "type", disk_format_to_string(d->format));
                xml_w_extra_attributes(w, d->extra_driver_attributes);
                if (d->extra_driver_elements) {
                        xml_w_puts(w, ">\n");
                        xml_w_kept_list(w, level + 2, d->extra_driver_elements);
                        xml_w_printf(w, "%*s</driver>\n", (level + 1) * 2, "");
                } else
                        xml_w_puts(w, "/>\n");
        }
        if (has_source) {
                xml_w_printf(w, "%*s<source", (level + 1) * 2, "");
                xml_w_attr(w, "file", d->source);
                xml_w_extra_attributes(w, d->extra_source_attributes);
                if (d->extra_source_elements) {
                        xml_w_puts(w, ">\n");
                        xml_w_kept_list(w, level + 2, d->extra_source_elements);
                        xml_w_printf(w, "%*s</source>\n", (level + 1) * 2, "");
                } else
                        xml_w_puts(w, "/>\n");
        }
        if (d->on_delete != MERGE_DEFAULT) {
                xml_w_printf(w, "%*s<on_delete", (level + 1) * 2, "");
                xml_w_attr(w, "merge", merge_direction_to_string(d->on_delete));
                xml_w_puts(w, "/>\n");
        }
        xml_w_kept_list(w, level + 1, d->extra_elements);
        xml_w_printf(w, "%*s</disk>\n", level * 2, "");
}

static void w_disks(XmlWriter *w, int base, const char *tag, const SnapshotDisk *disks, size_t n) {
        int level = base + LEVEL_SNAPSHOT_CHILD;

        if (n == 0) {
                xml_w_printf(w, "%*s<%s/>\n", level * 2, "", tag);
                return;
        }
        xml_w_printf(w, "%*s<%s>\n", level * 2, "", tag);
        for (size_t i = 0; i < n; i++)
                w_disk(w, base, &disks[i]);
        xml_w_printf(w, "%*s</%s>\n", level * 2, "", tag);
}

/* libvirt's virDomainSnapshotDefFormatInternal() order; base is the depth
 * of <domainsnapshot> itself (1 inside <snapshots>). */
static int write_def(XmlWriter *w, const SnapshotDef *def, int base, SnapshotFormatFlags flags) {
        bool secure = flags & SNAPSHOT_FORMAT_SECURE;
        int level = base + LEVEL_SNAPSHOT_CHILD;
        int r;

        r = writer_check_def(def);
        if (r < 0)
                return r;

        xml_w_printf(w, "%*s<domainsnapshot>\n", base * 2, "");
        xml_w_moment_name(w, level, def->name, def->description);
        if (def->has_state)
                xml_w_text_element(w, level, "state", snapshot_state_to_string(def->state));
        xml_w_moment_parent(w, level, def->parent, def->has_creation_time, def->creation_time);
        if (def->memory != SNAPSHOT_LOCATION_DEFAULT) {
                xml_w_printf(w, "%*s<memory", level * 2, "");
                xml_w_attr(w, "snapshot", snapshot_location_to_string(def->memory));
                xml_w_attr(w, "file", def->memory_file);
                xml_w_puts(w, "/>\n");
        }
        if (def->has_disks || def->n_disks > 0)
                w_disks(w, base, "disks", def->disks, def->n_disks);
        if (def->n_revert_disks > 0)
                w_disks(w, base, "revertDisks", def->revert_disks, def->n_revert_disks);
        if (def->domain_xml)
                xml_w_kept(w, level, def->domain_xml, "domain", secure);
        if (def->inactive_domain_xml)
                xml_w_kept(w, level, def->inactive_domain_xml, "inactiveDomain", secure);
        if (def->nvram_file || def->nvram_internal) {
                xml_w_printf(w, "%*s<qsnap:nvram", level * 2, "");
                xml_w_attr(w, "xmlns:qsnap", QSNAP_SNAPSHOT_NAMESPACE);
                xml_w_attr(w, "file", def->nvram_file);
                if (def->nvram_internal)
                        xml_w_attr(w, "internal", "yes");
                xml_w_puts(w, "/>\n");
        }
        /* libvirt's <cookie> comes here, after the domains. */
        xml_w_kept_list(w, level, def->extra_elements);
        if (flags & SNAPSHOT_FORMAT_ACTIVE)
                xml_w_printf(w, "%*s<active>%d</active>\n", level * 2, "", def->active > 0);
        xml_w_printf(w, "%*s</domainsnapshot>\n", base * 2, "");

        return w->error;
}

typedef struct DefFormat {
        const SnapshotDef *def;
        SnapshotFormatFlags flags;
} DefFormat;

static int write_one(XmlWriter *w, const void *userdata) {
        const DefFormat *d = userdata;
        return write_def(w, d->def, 0, d->flags);
}

int snapshot_def_format(const SnapshotDef *def, SnapshotFormatFlags flags, char **ret) {
        if (!def || !ret || (flags & ~(SNAPSHOT_FORMAT_SECURE | SNAPSHOT_FORMAT_ACTIVE)))
                return -EINVAL;
        return xml_format_to_string(write_one, &(DefFormat) { .def = def, .flags = flags }, ret);
}

typedef struct ListFormat {
        SnapshotDef *const *defs;
        size_t n;
        const char *current;
} ListFormat;

static int write_list(XmlWriter *w, const void *userdata) {
        const ListFormat *l = userdata;
        ListProblem problem;
        size_t index, other;
        int r;

        r = list_check(l->defs, l->n, l->current, &problem, &index, &other);
        if (r < 0)
                return r;

        xml_w_puts(w, "<snapshots");
        xml_w_attr(w, "current", l->current);
        xml_w_puts(w, ">\n");
        for (size_t i = 0; i < l->n; i++) {
                r = write_def(w, l->defs[i], 1, SNAPSHOT_FORMAT_SECURE);
                if (r < 0)
                        return r;
        }
        xml_w_puts(w, "</snapshots>\n");
        return w->error;
}

int snapshot_list_format(SnapshotDef *const *defs, size_t n, const char *current, char **ret) {
        if ((!defs && n > 0) || !ret)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!defs[i])
                        return -EINVAL;
        return xml_format_to_string(write_list, &(ListFormat) { .defs = defs, .n = n, .current = current }, ret);
}

/* ---- Copy ------------------------------------------------------------------ */

static int snapshot_disk_copy(const SnapshotDisk *s, SnapshotDisk *ret) {
        _cleanup_(snapshot_disk_done) SnapshotDisk d = {
                .snapshot = s->snapshot,
                .format = s->format,
                .on_delete = s->on_delete,
        };

        if (xml_strdup_to(s->name, &d.name) < 0 ||
            xml_strdup_to(s->source, &d.source) < 0 ||
            xml_strv_copy(s->extra_elements, &d.extra_elements) < 0 ||
            xml_strv_copy(s->extra_attributes, &d.extra_attributes) < 0 ||
            xml_strv_copy(s->extra_driver_attributes, &d.extra_driver_attributes) < 0 ||
            xml_strv_copy(s->extra_driver_elements, &d.extra_driver_elements) < 0 ||
            xml_strv_copy(s->extra_source_attributes, &d.extra_source_attributes) < 0 ||
            xml_strv_copy(s->extra_source_elements, &d.extra_source_elements) < 0)
                return -ENOMEM;

        *ret = d;
        d = (SnapshotDisk) { .format = _DISK_FORMAT_INVALID };
        return 0;
}

static int disk_item_copy(const void *from, void *to) {
        return snapshot_disk_copy(from, to);
}

static int snapshot_disks_copy(const SnapshotDisk *disks, size_t n, SnapshotDisk **ret, size_t *ret_n) {
        return xml_items_copy(disks, n, sizeof(SnapshotDisk), disk_item_copy, disk_item_done, (void **) ret, ret_n);
}

int snapshot_def_copy(const SnapshotDef *def, SnapshotDef **ret) {
        _cleanup_(snapshot_def_freep) SnapshotDef *c = NULL;
        int r;

        if (!def || !ret)
                return -EINVAL;

        c = new0(SnapshotDef, 1);
        if (!c)
                return -ENOMEM;
        c->state = def->state;
        c->has_state = def->has_state;
        c->creation_time = def->creation_time;
        c->has_creation_time = def->has_creation_time;
        c->memory = def->memory;
        c->has_disks = def->has_disks;
        c->active = def->active;
        c->nvram_internal = def->nvram_internal;

        if (xml_strdup_to(def->name, &c->name) < 0 ||
            xml_strdup_to(def->description, &c->description) < 0 ||
            xml_strdup_to(def->memory_file, &c->memory_file) < 0 ||
            xml_strdup_to(def->parent, &c->parent) < 0 ||
            xml_strdup_to(def->domain_xml, &c->domain_xml) < 0 ||
            xml_strdup_to(def->inactive_domain_xml, &c->inactive_domain_xml) < 0 ||
            xml_strdup_to(def->nvram_file, &c->nvram_file) < 0 ||
            xml_strv_copy(def->extra_elements, &c->extra_elements) < 0)
                return -ENOMEM;

        r = snapshot_disks_copy(def->disks, def->n_disks, &c->disks, &c->n_disks);
        if (r < 0)
                return r;
        r = snapshot_disks_copy(def->revert_disks, def->n_revert_disks, &c->revert_disks, &c->n_revert_disks);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(c);
        return 0;
}

int snapshot_def_set_revert_disks(SnapshotDef *def, const SnapshotDisk *disks, size_t n) {
        SnapshotDisk *c;
        size_t n_c;
        int r;

        r = snapshot_disks_copy(disks, n, &c, &n_c);
        if (r < 0)
                return r;
        snapshot_disks_free(def->revert_disks, def->n_revert_disks);
        def->revert_disks = c;
        def->n_revert_disks = n_c;
        return 0;
}
