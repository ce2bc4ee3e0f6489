/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the snapshot and checkpoint verbs share (libvirt calls both
 * "moments"): the XML argument read from a file or standard input, the
 * create call and its report, an object's XML and parent, Delete's flags
 * (the same values for both), and the tree drawn as virsh draws it.
 */
#include "cli.h"

Props *props_find(Props **a, size_t n, const char *path) {
        for (size_t i = 0; i < n; i++)
                if (streq(a[i]->path, path))
                        return a[i];
        return NULL;
}

int read_xml_option(Ctx *c, const char *option, const char *dflt, char **ret) {
        const char *file = opt(c, option);
        int r;

        if (!file) {
                *ret = strdup(dflt);
                return *ret ? EXIT_OK : EXIT_FAILED;
        }
        r = read_input(file, ret);
        if (r < 0) {
                fail("Failed to read %s: %s", streq(file, "-") ? "standard input" : file, strerror(-r));
                return EXIT_FAILED;
        }
        return EXIT_OK;
}

int moment_create(Ctx *c, const char *dpath, const char *member, const char *what, const char *xml, uint64_t flags,
                  bool redefine) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *name = NULL;
        const char *path;

        if (call(c, &reply, dpath, QSNAP_DOMAIN_IFACE, member, "st", xml, flags) < 0 ||
            sd_bus_message_read(reply, "o", &path) < 0)
                return EXIT_FAILED;
        if (streq(path, "/")) {
                printf("Domain %s taken (no metadata kept)\n", what);
                return EXIT_OK;
        }
        name = path_last_name(path);
        printf("Domain %s %s %s\n", what, strna(name), redefine ? "redefined" : "created");
        return EXIT_OK;
}

int moment_create_from_file(Ctx *c, const char *member, const char *what, const char *dflt, uint64_t flags,
                            bool redefine) {
        _cleanup_free_ char *dpath = NULL, *xml = NULL;
        int r;

        if (!opt(c, "xmlfile") && redefine) {
                usage_error("%s: --redefine needs the XML (a file, or - for standard input)", c->verb->name);
                return EXIT_USAGE;
        }
        r = read_xml_option(c, "xmlfile", dflt, &xml);
        if (r != EXIT_OK)
                return r;
        if (domain_path(c, opt(c, "domain"), &dpath) < 0)
                return EXIT_FAILED;
        return moment_create(c, dpath, member, what, xml, flags, redefine);
}

int moment_create_as(Ctx *c, const char *root, const char *member, const char *what, const char *extra,
                     int (*diskspec_xml)(const char *spec, char **buf), uint64_t flags) {
        _cleanup_free_ char *dpath = NULL, *xml = NULL, *ename = NULL, *edesc = NULL;
        const char *name = opt(c, "name"), *desc = opt(c, "description");
        char **diskspecs = opt_all(c, "diskspec");
        int r;

        if ((name && !(ename = xml_escape(name))) || (desc && !(edesc = xml_escape(desc))))
                return EXIT_FAILED;
        r = strappendf(&xml, "<%s>\n", root);
        if (r >= 0 && ename)
                r = strappendf(&xml, "  <name>%s</name>\n", ename);
        if (r >= 0 && edesc)
                r = strappendf(&xml, "  <description>%s</description>\n", edesc);
        if (r >= 0 && extra)
                r = strappendf(&xml, "%s", extra);
        if (r >= 0 && diskspecs) {
                r = strappendf(&xml, "  <disks>\n");
                for (size_t i = 0; r >= 0 && diskspecs[i]; i++)
                        r = diskspec_xml(diskspecs[i], &xml);
                if (r >= 0)
                        r = strappendf(&xml, "  </disks>\n");
        }
        if (r >= 0)
                r = strappendf(&xml, "</%s>\n", root);
        if (r == -EINVAL)
                return EXIT_USAGE;
        if (r < 0)
                return EXIT_FAILED;
        if (flag(c, "print-xml")) {
                fputs(xml, stdout);
                return EXIT_OK;
        }
        if (domain_path(c, opt(c, "domain"), &dpath) < 0)
                return EXIT_FAILED;
        return moment_create(c, dpath, member, what, xml, flags, false);
}

int moment_print_parent(Ctx *c, const char *path, const char *iface, const char *what) {
        _cleanup_free_ char *parent = NULL, *pname = NULL, *name = NULL;

        if (get_property_string(c, path, iface, "Parent", &parent) < 0)
                return EXIT_FAILED;
        pname = path_name_or_null(parent);
        name = path_last_name(path);
        if (c->json) {
                json_print_fields("name", json_str(name), "parent", json_str(pname), NULL);
                return EXIT_OK;
        }
        if (!pname) {
                fail("%s '%s' has no parent (it is a root).", what, strna(name));
                return EXIT_FAILED;
        }
        printf("%s\n", pname);
        return EXIT_OK;
}

uint64_t moment_delete_flags(Ctx *c) {
        return (flag(c, "children") ? 1 : 0) | (flag(c, "metadata") ? 2 : 0) | (flag(c, "children-only") ? 4 : 0);
}

void moment_print_deleted(const char *what, const char *name, uint64_t flags) {
        printf("Domain %s %s %s\n", what, strna(name),
               flags & 4 ? "children deleted" : flags & 1 ? "and its descendants deleted" : "deleted");
}

void moment_print_names(char *const *paths) {
        for (size_t i = 0; paths && paths[i]; i++) {
                _cleanup_free_ char *name = path_last_name(paths[i]);
                printf("%s\n", strna(name));
        }
}

int moment_list_paths(Ctx *c, const char *dpath, const char *iface, const char *list_member, const char *from,
                      uint64_t flags, bool descendants, bool tree, char ***ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_strv_free_ char **paths = NULL;
        int r;

        /* A tree from a snapshot or checkpoint shows all its descendants, as virsh does. */
        if (from)
                r = call(c, &reply, from, iface, "ListChildren", "t", flags | (descendants || tree ? LIST_DESCENDANTS : 0));
        else
                r = call(c, &reply, dpath, QSNAP_DOMAIN_IFACE, list_member, "t", flags);
        if (r < 0)
                return r;
        r = sd_bus_message_read_strv(reply, &paths);
        if (r >= 0 && from && tree) { /* the start first */
                _cleanup_strv_free_ char **with_from = NULL;
                r = strv_extend(&with_from, from);
                for (size_t i = 0; r >= 0 && paths && paths[i]; i++)
                        r = strv_extend(&with_from, paths[i]);
                if (r >= 0) {
                        strv_free(paths);
                        paths = TAKE_PTR(with_from);
                }
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(paths);
        return 0;
}

int moment_info_read(Ctx *c, const char *path, const char *iface, Props **ret, size_t *ret_descendants) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_strv_free_ char **desc = NULL;
        _cleanup_(props_freep) Props *p = NULL;
        int r;

        r = props_get_all(c, path, iface, &p);
        if (r >= 0)
                r = call(c, &reply, path, iface, "ListChildren", "t", (uint64_t) LIST_DESCENDANTS);
        if (r >= 0)
                r = sd_bus_message_read_strv(reply, &desc);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(p);
        *ret_descendants = strv_length(desc);
        return 0;
}

void moment_info_print_head(Ctx *c, const Props *p) {
        printf("%-16s%s\n", "Name:", strempty(props_str(p, "Name")));
        printf("%-16s%s\n", "Domain:", opt(c, "domain"));
        printf("%-16s%s\n", "Current:", props_bool(p, "IsCurrent") ? "yes" : "no");
}

void moment_info_print_tree(const Props *p, size_t descendants) {
        json_object *kids = props_json(p, "Children");
        _cleanup_free_ char *parent = path_name_or_null(props_str(p, "Parent")),
                            *time = format_time(props_u64(p, "CreationTime"));

        printf("%-16s%s\n", "Creation Time:", strempty(time));
        printf("%-16s%s\n", "Description:", isempty(props_str(p, "Description")) ? "-" : props_str(p, "Description"));
        printf("%-16s%s\n", "Parent:", parent ?: "-");
        printf("%-16s%zu\n", "Children:", kids ? json_object_array_length(kids) : 0);
        printf("%-16s%zu\n", "Descendants:", descendants);
}

json_object *props_names_json(const Props *p, const char *name) {
        json_object *arr = json_object_new_array(), *paths = props_json(p, name);

        for (size_t i = 0; paths && i < json_object_array_length(paths); i++) {
                _cleanup_free_ char *k = path_last_name(json_object_get_string(json_object_array_get_idx(paths, i)));
                json_object_array_add(arr, json_str(k));
        }
        return arr;
}

/* ---- the tree ---- */

typedef struct TreeNode {
        char *name;
        ssize_t parent; /* index in the list, -1 for a root */
} TreeNode;

/* virsh's vshTreePrint: a node, "+- " before a child, "|" under a node
 * with children, and a blank line after the last leaf of a branch. */
static void tree_print(const TreeNode *nodes, size_t n, size_t id, ssize_t last, bool root, char *indent, size_t cap) {
        size_t len = strlen(indent);
        ssize_t next_last = -1;

        printf("%s%s%s\n", indent, root ? "" : "+- ", strna(nodes[id].name));
        if (!root && len + 2 < cap) {
                indent[len] = (ssize_t) id == last ? ' ' : '|';
                indent[len + 1] = ' ';
                indent[len + 2] = '\0';
        }
        for (size_t i = 0; i < n; i++)
                if (nodes[i].parent == (ssize_t) id)
                        next_last = (ssize_t) i;
        if (next_last >= 0)
                printf("%s  |\n", indent);
        if (strlen(indent) + 2 < cap)
                strcat(indent, "  ");
        for (size_t i = 0; i < n; i++)
                if (nodes[i].parent == (ssize_t) id)
                        tree_print(nodes, n, i, next_last, false, indent, cap);
        indent[strlen(indent) - 2] = '\0';
        if (next_last < 0 && (ssize_t) id == last)
                printf("%s\n", indent);
        if (!root)
                indent[len] = '\0';
}

void moment_tree_print(char *const *paths, Props **a, size_t n) {
        size_t count = strv_length((char **) paths), cap = 4096;
        _cleanup_free_ char *indent = malloc(cap);
        TreeNode *nodes = new0(TreeNode, count + 1);

        if (!nodes || !indent) {
                free(nodes);
                return;
        }
        for (size_t i = 0; i < count; i++) {
                Props *p = props_find(a, n, paths[i]);
                const char *parent = p ? props_str(p, "Parent") : NULL;
                nodes[i].name = path_last_name(paths[i]);
                nodes[i].parent = -1;
                for (size_t k = 0; parent && k < count; k++)
                        if (k != i && streq(paths[k], parent))
                                nodes[i].parent = (ssize_t) k;
        }
        for (size_t i = 0; i < count; i++)
                if (nodes[i].parent < 0) {
                        indent[0] = '\0';
                        tree_print(nodes, count, i, (ssize_t) i, true, indent, cap);
                }
        for (size_t i = 0; i < count; i++)
                free(nodes[i].name);
        free(nodes);
}
