/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checkpoint verbs: checkpoint-create, checkpoint-create-as (virsh's
 * --diskspec DISK,checkpoint=bitmap|no,bitmap=NAME), checkpoint-list
 * (libvirt's filters, --from/--descendants, --tree drawn as virsh draws
 * it), checkpoint-info, checkpoint-dumpxml, checkpoint-parent and
 * checkpoint-delete. Sizes (the bytes changed since a checkpoint) are
 * measured when asked for: GetXMLDesc with SIZE.
 */
#include "cli.h"

enum {
        CP_CREATE_REDEFINE = 1,
        CP_CREATE_QUIESCE = 2,
        CP_CREATE_REDEFINE_VALIDATE = 4,
};

enum {
        CP_LIST_ROOTS = 1,
        CP_LIST_TOPOLOGICAL = 2,
        CP_LIST_LEAVES = 4,
        CP_LIST_NO_LEAVES = 8,
};

enum {
        CP_XML_SECURE = 1,
        CP_XML_NO_DOMAIN = 2,
        CP_XML_SIZE = 4,
};

static int create_flags(Ctx *c, uint64_t *ret) {
        uint64_t flags = (flag(c, "redefine") ? CP_CREATE_REDEFINE : 0) | (flag(c, "quiesce") ? CP_CREATE_QUIESCE : 0) |
                         (flag(c, "redefine-validate") ? CP_CREATE_REDEFINE_VALIDATE : 0);

        if ((flags & CP_CREATE_REDEFINE_VALIDATE) && !(flags & CP_CREATE_REDEFINE)) {
                usage_error("%s: --redefine-validate goes with --redefine", c->verb->name);
                return -EINVAL;
        }
        *ret = flags;
        return 0;
}

int verb_checkpoint_create(Ctx *c) {
        uint64_t flags;

        if (create_flags(c, &flags) < 0)
                return EXIT_USAGE;
        return moment_create_from_file(c, "CreateCheckpoint", "checkpoint", "<domaincheckpoint/>", flags,
                                       flags & CP_CREATE_REDEFINE);
}

/* --diskspec DISK[,checkpoint=bitmap|no][,bitmap=NAME] */
static int diskspec_xml(const char *spec, char **buf) {
        static const char *const keys[] = { "disk", "checkpoint", "bitmap", NULL };
        _cleanup_strv_free_ char **items = NULL;
        const char *v[ELEMENTSOF(keys)], *checkpoint;
        _cleanup_free_ char *ename = NULL, *ebitmap = NULL;
        int r;

        r = parse_option_list("diskspec", spec, keys, "disk", &items, v);
        if (r < 0)
                return r;
        if (isempty(v[0])) {
                usage_error("--diskspec '%s': the first item is the disk (vda)", spec);
                return -EINVAL;
        }
        checkpoint = v[1] ?: v[2] ? "bitmap" : NULL;
        if (checkpoint && !STR_IN_SET(checkpoint, "bitmap", "no")) {
                usage_error("--diskspec: checkpoint='%s' is not bitmap or no", checkpoint);
                return -EINVAL;
        }
        if (v[2] && !streq(checkpoint, "bitmap")) {
                usage_error("--diskspec '%s': bitmap= goes with checkpoint=bitmap", spec);
                return -EINVAL;
        }
        ename = xml_escape(v[0]);
        if (!ename || (v[2] && !(ebitmap = xml_escape(v[2]))))
                return -ENOMEM;
        return strappendf(buf, "    <disk name='%s'%s%s%s%s%s%s/>\n", ename, checkpoint ? " checkpoint='" : "",
                          strempty(checkpoint), checkpoint ? "'" : "", ebitmap ? " bitmap='" : "", strempty(ebitmap),
                          ebitmap ? "'" : "");
}

int verb_checkpoint_create_as(Ctx *c) {
        uint64_t flags;

        if (create_flags(c, &flags) < 0)
                return EXIT_USAGE;
        return moment_create_as(c, "domaincheckpoint", "CreateCheckpoint", "checkpoint", NULL, diskspec_xml, flags);
}

/* ---- reading checkpoints ---- */

/* The bytes changed since the checkpoint, measured now: GetXMLDesc with
 * SIZE (the Size property is the last measurement), summed over the disks
 * that have one (a disk whose bitmaps are unusable has none). 0 when no
 * disk has one, 1 when measured. */
static int measure_size(Ctx *c, const char *cpath, uint64_t *ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *xml;
        xmlDocPtr doc;
        xmlNodePtr root;
        bool found = false;
        uint64_t sum = 0;

        if (call(c, &reply, cpath, QSNAP_CHECKPOINT_IFACE, "GetXMLDesc", "t", (uint64_t) (CP_XML_NO_DOMAIN | CP_XML_SIZE)) < 0 ||
            sd_bus_message_read(reply, "s", &xml) < 0)
                return -EIO;
        doc = xml_parse(xml);
        root = doc ? xmlDocGetRootElement(doc) : NULL;
        for (xmlNodePtr d = xml_child(xml_child(root, "disks"), "disk"); d; d = xml_next(d, "disk")) {
                _cleanup_free_ char *size = xml_attr(d, "size");
                if (size) {
                        sum += strtoull(size, NULL, 10);
                        found = true;
                }
        }
        xmlFreeDoc(doc);
        *ret = sum;
        return found;
}

/* size: measured (>= 0), or -1: the Size property (the last measurement). */
static json_object *checkpoint_json(Ctx *c, const Props *p, int64_t size) {
        json_object *o = json_object_new_object(), *disks = json_object_new_array(), *d = props_json(p, "Disks"),
                    *problems = props_json(p, "Problems");
        _cleanup_free_ char *name = path_last_name(p->path), *parent = path_name_or_null(props_str(p, "Parent"));

        for (size_t i = 0; d && i < json_object_array_length(d); i++) {
                json_object *pair = json_object_array_get_idx(d, i), *e = json_object_new_object();
                json_object_object_add(e, "disk", json_str(json_object_get_string(json_object_array_get_idx(pair, 0))));
                json_object_object_add(e, "bitmap", json_str(json_object_get_string(json_object_array_get_idx(pair, 1))));
                json_object_array_add(disks, e);
        }
        json_object_object_add(o, "name", json_str(props_str(p, "Name") ?: name));
        json_object_object_add(o, "domain", json_str(opt(c, "domain")));
        json_object_object_add(o, "description", json_str(strempty(props_str(p, "Description"))));
        json_object_object_add(o, "creation_time", json_object_new_uint64(props_u64(p, "CreationTime")));
        json_object_object_add(o, "parent", json_str(parent));
        json_object_object_add(o, "children", props_names_json(p, "Children"));
        json_object_object_add(o, "current", json_object_new_boolean(props_bool(p, "IsCurrent")));
        json_object_object_add(o, "disks", disks);
        json_object_object_add(o, "size", size >= 0 ? json_object_new_uint64((uint64_t) size)
                                          : json_object_new_uint64(props_u64(p, "Size")));
        json_object_object_add(o, "problems", problems ? json_object_get(problems) : json_object_new_array());
        return o;
}

/* With --size: each checkpoint's size measured now, by path; else NULL. */
static int measure_sizes(Ctx *c, char **paths, json_object **ret) {
        json_object *sizes = NULL;

        if (flag(c, "size")) {
                sizes = json_object_new_object();
                for (size_t i = 0; paths && paths[i]; i++) {
                        uint64_t bytes;
                        int r = measure_size(c, paths[i], &bytes);
                        if (r < 0) {
                                json_object_put(sizes);
                                return r;
                        }
                        json_object_object_add(sizes, paths[i], r > 0 ? json_object_new_uint64(bytes) : NULL);
                }
        }
        *ret = sizes;
        return 0;
}

static void print_table(Ctx *c, char **paths, Props **a, size_t n, json_object *sizes) {
        bool with_parent = flag(c, "parent");
        _cleanup_(table_freep) Table *t = NULL;

        if (with_parent)
                t = sizes ? table_new("Name", "Creation Time", "Parent", "Size", NULL)
                          : table_new("Name", "Creation Time", "Parent", NULL);
        else
                t = sizes ? table_new("Name", "Creation Time", "Size", NULL) : table_new("Name", "Creation Time", NULL);
        if (!t)
                return;
        for (size_t i = 0; paths && paths[i]; i++) {
                Props *p = props_find(a, n, paths[i]);
                json_object *size = sizes ? json_object_object_get(sizes, paths[i]) : NULL;
                _cleanup_free_ char *name = path_last_name(paths[i]), *time = NULL, *parent = NULL, *human = NULL;
                if (!p)
                        continue;
                time = format_time(props_u64(p, "CreationTime"));
                parent = path_name_or_null(props_str(p, "Parent"));
                human = size ? format_size(json_object_get_uint64(size)) : NULL;
                /* extra cells are not read: Size is the third or the fourth */
                if (with_parent)
                        table_add(t, props_str(p, "Name") ?: name, time, parent ?: "-", human ?: "-");
                else
                        table_add(t, props_str(p, "Name") ?: name, time, human ?: "-");
        }
        table_print(t, stdout);
}

int verb_checkpoint_list(Ctx *c) {
        static const struct {
                const char *name;
                uint64_t bit;
        } map[] = {
                { "roots", CP_LIST_ROOTS },
                { "topological", CP_LIST_TOPOLOGICAL },
                { "leaves", CP_LIST_LEAVES },
                { "no-leaves", CP_LIST_NO_LEAVES },
        };
        _cleanup_free_ char *dpath = NULL, *from = NULL;
        _cleanup_strv_free_ char **paths = NULL;
        bool tree = flag(c, "tree");
        json_object *sizes = NULL;
        uint64_t flags = 0;
        Props **a = NULL;
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (flag(c, map[i].name))
                        flags |= map[i].bit;
        if (tree && (flag(c, "parent") || flag(c, "roots") || flag(c, "name") || flag(c, "size"))) {
                usage_error("checkpoint-list: --tree goes with neither --parent, --roots, --name nor --size");
                return EXIT_USAGE;
        }
        if (flag(c, "descendants") && !opt(c, "from")) {
                usage_error("checkpoint-list: --descendants goes with --from");
                return EXIT_USAGE;
        }
        if (opt(c, "from") && (flags & CP_LIST_ROOTS)) {
                usage_error("checkpoint-list: --roots does not go with --from");
                return EXIT_USAGE;
        }
        if (domain_path(c, opt(c, "domain"), &dpath) < 0 ||
            (opt(c, "from") && checkpoint_path(c, dpath, opt(c, "from"), &from) < 0) ||
            moment_list_paths(c, dpath, QSNAP_CHECKPOINT_IFACE, "ListCheckpoints", from, flags, flag(c, "descendants"),
                              tree, &paths) < 0 ||
            managed_objects(c, QSNAP_CHECKPOINT_IFACE, dpath, &a, &n) < 0)
                return EXIT_FAILED;
        if (measure_sizes(c, paths, &sizes) < 0) {
                props_array_free(a, n);
                return EXIT_FAILED;
        }
        if (c->json) {
                json_object *arr = json_object_new_array();
                for (size_t i = 0; paths && paths[i]; i++) {
                        Props *p = props_find(a, n, paths[i]);
                        json_object *size = sizes ? json_object_object_get(sizes, paths[i]) : NULL;
                        if (p)
                                json_object_array_add(arr, checkpoint_json(c, p, size ? (int64_t) json_object_get_uint64(size) : -1));
                }
                json_print(arr);
                json_object_put(arr);
        } else if (tree)
                moment_tree_print(paths, a, n);
        else if (flag(c, "name"))
                moment_print_names(paths);
        else
                print_table(c, paths, a, n, sizes);
        json_object_put(sizes);
        props_array_free(a, n);
        return EXIT_OK;
}

static int resolve(Ctx *c, char **ret_dpath, char **ret_cpath) {
        if (domain_path(c, opt(c, "domain"), ret_dpath) < 0 ||
            checkpoint_path(c, *ret_dpath, opt(c, "checkpointname"), ret_cpath) < 0)
                return -EIO;
        return 0;
}

int verb_checkpoint_info(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cpath = NULL, *human = NULL;
        _cleanup_(props_freep) Props *p = NULL;
        size_t descendants;
        uint64_t size = 0;
        json_object *o, *disks, *problems;
        int r;

        if (resolve(c, &dpath, &cpath) < 0 || moment_info_read(c, cpath, QSNAP_CHECKPOINT_IFACE, &p, &descendants) < 0)
                return EXIT_FAILED;
        r = measure_size(c, cpath, &size);
        if (r < 0)
                return EXIT_FAILED;
        o = checkpoint_json(c, p, r > 0 ? (int64_t) size : -1);
        if (r == 0) /* no disk could be measured */
                json_object_object_add(o, "size", NULL);
        json_object_object_add(o, "descendants", json_object_new_int64((int64_t) descendants));
        if (c->json)
                json_print(o);
        else {
                disks = json_object_object_get(o, "disks");
                problems = json_object_object_get(o, "problems");
                human = r > 0 ? format_size(size) : NULL;
                moment_info_print_head(c, p);
                moment_info_print_tree(p, descendants);
                printf("%-16s", "Disks:");
                for (size_t i = 0; i < json_object_array_length(disks); i++) {
                        json_object *d = json_object_array_get_idx(disks, i);
                        printf("%s%s (bitmap %s)", i ? ", " : "", json_object_get_string(json_object_object_get(d, "disk")),
                               json_object_get_string(json_object_object_get(d, "bitmap")));
                }
                printf("%s\n", json_object_array_length(disks) ? "" : "-");
                printf("%-16s%s\n", "Size:", human ? human : "- (no usable bitmap)");
                printf("%-16s%s\n", "Usable:", json_object_array_length(problems) ? "no" : "yes");
                for (size_t i = 0; i < json_object_array_length(problems); i++)
                        printf("%-16s%s\n", i ? "" : "Problems:",
                               json_object_get_string(json_object_array_get_idx(problems, i)));
        }
        json_object_put(o);
        return EXIT_OK;
}

int verb_checkpoint_dumpxml(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cpath = NULL;
        uint64_t flags = (flag(c, "security-info") ? CP_XML_SECURE : 0) | (flag(c, "no-domain") ? CP_XML_NO_DOMAIN : 0) |
                         (flag(c, "size") ? CP_XML_SIZE : 0);

        if (resolve(c, &dpath, &cpath) < 0)
                return EXIT_FAILED;
        return print_object_xml(c, cpath, QSNAP_CHECKPOINT_IFACE, flags);
}

int verb_checkpoint_parent(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cpath = NULL;

        if (resolve(c, &dpath, &cpath) < 0)
                return EXIT_FAILED;
        return moment_print_parent(c, cpath, QSNAP_CHECKPOINT_IFACE, "Checkpoint");
}

int verb_checkpoint_delete(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cpath = NULL;
        uint64_t flags = moment_delete_flags(c);

        if (resolve(c, &dpath, &cpath) < 0 ||
            call(c, NULL, cpath, QSNAP_CHECKPOINT_IFACE, "Delete", "t", flags) < 0)
                return EXIT_FAILED;
        moment_print_deleted("checkpoint", opt(c, "checkpointname"), flags);
        return EXIT_OK;
}
