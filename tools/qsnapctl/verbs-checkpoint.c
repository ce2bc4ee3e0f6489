/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Checkpoint verbs: checkpoint-create, checkpoint-create-as (virsh's
 * --diskspec DISK,checkpoint=bitmap|no,bitmap=NAME), checkpoint-list
 * (libvirt's filters, --from/--descendants, --tree drawn as virsh draws
 * it), checkpoint-info, checkpoint-dumpxml, checkpoint-parent and
 * checkpoint-delete. A Checkpoint object has no Children property: the
 * children are read off the Parent of the domain's other checkpoints, all
 * fetched with one GetManagedObjects.
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

/* Whether the checkpoint at path is below ancestor (direct: a child). */
static bool is_below(Props **a, size_t n, const char *path, const char *ancestor, bool direct) {
        const char *cur = path;

        for (size_t depth = 0; depth <= n; depth++) { /* bounded: a cycle cannot hang us */
                Props *p = props_find(a, n, cur);
                const char *parent = p ? props_str(p, "Parent") : NULL;

                if (!parent || streq(parent, "/"))
                        return false;
                if (streq(parent, ancestor))
                        return true;
                if (direct)
                        return false;
                cur = parent;
        }
        return false;
}

static int by_creation(const void *x, const void *y) {
        const Props *a = *(Props *const *) x, *b = *(Props *const *) y;
        uint64_t ta = props_u64(a, "CreationTime"), tb = props_u64(b, "CreationTime");

        return ta < tb ? -1 : ta > tb ? 1 : strcmp(a->path, b->path);
}

/* The names of the children of path, oldest first. */
static json_object *children_json(Props **a, size_t n, const char *path) {
        _cleanup_free_ Props **kids = new0(Props *, n + 1);
        json_object *arr = json_object_new_array();
        size_t k = 0;

        if (!kids)
                return arr;
        for (size_t i = 0; i < n; i++)
                if (is_below(a, n, a[i]->path, path, true))
                        kids[k++] = a[i];
        qsort(kids, k, sizeof(Props *), by_creation);
        for (size_t i = 0; i < k; i++) {
                _cleanup_free_ char *name = path_last_name(kids[i]->path);
                json_object_array_add(arr, json_str(name));
        }
        return arr;
}

static json_object *checkpoint_json(const Props *p, const char *domain, Props **a, size_t n) {
        json_object *o = json_object_new_object(), *disks = json_object_new_array(), *d = props_json(p, "Disks");
        _cleanup_free_ char *name = path_last_name(p->path), *parent = path_name_or_null(props_str(p, "Parent"));

        for (size_t i = 0; d && i < json_object_array_length(d); i++) {
                json_object *pair = json_object_array_get_idx(d, i), *e = json_object_new_object();
                json_object_object_add(e, "disk", json_str(json_object_get_string(json_object_array_get_idx(pair, 0))));
                json_object_object_add(e, "bitmap", json_str(json_object_get_string(json_object_array_get_idx(pair, 1))));
                json_object_array_add(disks, e);
        }
        json_object_object_add(o, "name", json_str(props_str(p, "Name") ?: name));
        json_object_object_add(o, "domain", json_str(domain));
        json_object_object_add(o, "creation_time", json_object_new_uint64(props_u64(p, "CreationTime")));
        json_object_object_add(o, "parent", json_str(parent));
        json_object_object_add(o, "children", children_json(a, n, p->path));
        json_object_object_add(o, "disks", disks);
        json_object_object_add(o, "size", props_json(p, "Size") ? json_object_new_uint64(props_u64(p, "Size")) : NULL);
        return o;
}

/* From the listing: the checkpoints below from (all, or its children),
 * with from itself first for a tree. */
static int keep_below(char ***paths, Props **a, size_t n, const char *from, bool all, bool with_from) {
        _cleanup_strv_free_ char **kept = NULL;

        if (with_from && strv_extend(&kept, from) < 0)
                return -ENOMEM;
        for (size_t i = 0; *paths && (*paths)[i]; i++)
                if (is_below(a, n, (*paths)[i], from, !all) && strv_extend(&kept, (*paths)[i]) < 0)
                        return -ENOMEM;
        strv_free(*paths);
        *paths = TAKE_PTR(kept);
        return 0;
}

static void print_table(Ctx *c, char **paths, Props **a, size_t n) {
        bool with_parent = flag(c, "parent"), with_size = flag(c, "size");
        _cleanup_(table_freep) Table *t = NULL;

        if (with_parent)
                t = with_size ? table_new("Name", "Creation Time", "Parent", "Size", NULL)
                              : table_new("Name", "Creation Time", "Parent", NULL);
        else
                t = with_size ? table_new("Name", "Creation Time", "Size", NULL) : table_new("Name", "Creation Time", NULL);
        if (!t)
                return;
        for (size_t i = 0; paths && paths[i]; i++) {
                Props *p = props_find(a, n, paths[i]);
                _cleanup_free_ char *name = path_last_name(paths[i]), *time = NULL, *parent = NULL, *size = NULL;
                if (!p)
                        continue;
                time = format_time(props_u64(p, "CreationTime"));
                parent = path_name_or_null(props_str(p, "Parent"));
                size = props_json(p, "Size") ? format_size(props_u64(p, "Size")) : NULL;
                /* extra cells are not read: Size is the third or the fourth */
                if (with_parent)
                        table_add(t, props_str(p, "Name") ?: name, time, parent ?: "-", size ?: "-");
                else
                        table_add(t, props_str(p, "Name") ?: name, time, size ?: "-");
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
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *dpath = NULL, *from = NULL;
        _cleanup_strv_free_ char **paths = NULL;
        const char *domain = opt(c, "domain");
        bool tree = flag(c, "tree");
        uint64_t flags = 0;
        Props **a = NULL;
        size_t n = 0;
        int ret = EXIT_FAILED;

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
        if (domain_path(c, domain, &dpath) < 0 ||
            (opt(c, "from") && checkpoint_path(c, dpath, opt(c, "from"), &from) < 0) ||
            call(c, &reply, dpath, QSNAP_DOMAIN_IFACE, "ListCheckpoints", "t", flags) < 0 ||
            sd_bus_message_read_strv(reply, &paths) < 0 || managed_objects(c, QSNAP_CHECKPOINT_IFACE, dpath, &a, &n) < 0)
                return EXIT_FAILED;
        /* libvirt lists a checkpoint's children (DESCENDANTS: all below it)
         * with the same filters; a tree from a checkpoint shows all of them. */
        if (from && keep_below(&paths, a, n, from, flag(c, "descendants") || tree, tree) < 0)
                goto finish;

        if (c->json) {
                json_object *arr = json_object_new_array();
                for (size_t i = 0; paths && paths[i]; i++) {
                        Props *p = props_find(a, n, paths[i]);
                        if (p)
                                json_object_array_add(arr, checkpoint_json(p, domain, a, n));
                }
                json_print(arr);
                json_object_put(arr);
        } else if (tree)
                moment_tree_print(paths, a, n);
        else if (flag(c, "name"))
                moment_print_names(paths);
        else
                print_table(c, paths, a, n);
        ret = EXIT_OK;
finish:
        props_array_free(a, n);
        return ret;
}

/* The domain's path, the checkpoint's path, and every checkpoint of the domain. */
static int resolve(Ctx *c, char **ret_dpath, char **ret_cpath, Props ***ret_a, size_t *ret_n) {
        if (domain_path(c, opt(c, "domain"), ret_dpath) < 0 ||
            checkpoint_path(c, *ret_dpath, opt(c, "checkpointname"), ret_cpath) < 0)
                return -EIO;
        if (ret_a && managed_objects(c, QSNAP_CHECKPOINT_IFACE, *ret_dpath, ret_a, ret_n) < 0)
                return -EIO;
        return 0;
}

static void print_disks(json_object *disks) {
        printf("%-16s", "Disks:");
        if (json_object_array_length(disks) == 0)
                printf("-");
        for (size_t i = 0; i < json_object_array_length(disks); i++) {
                json_object *d = json_object_array_get_idx(disks, i);
                printf("%s%s (bitmap %s)", i ? ", " : "", json_object_get_string(json_object_object_get(d, "disk")),
                       json_object_get_string(json_object_object_get(d, "bitmap")));
        }
        printf("\n");
}

int verb_checkpoint_info(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cpath = NULL, *time = NULL, *size = NULL;
        Props **a = NULL, *p;
        size_t n = 0, descendants = 0;
        json_object *o, *v;
        int ret = EXIT_FAILED;

        if (resolve(c, &dpath, &cpath, &a, &n) < 0)
                return EXIT_FAILED;
        p = props_find(a, n, cpath);
        if (!p) {
                fail("Checkpoint '%s' is gone (deleted meanwhile).", opt(c, "checkpointname"));
                goto finish;
        }
        for (size_t i = 0; i < n; i++)
                descendants += is_below(a, n, a[i]->path, cpath, false);
        o = checkpoint_json(p, opt(c, "domain"), a, n);
        json_object_object_add(o, "descendants", json_object_new_int64((int64_t) descendants));
        if (c->json)
                json_print(o);
        else {
                time = format_time(props_u64(p, "CreationTime"));
                v = json_object_object_get(o, "size");
                size = v ? format_size(json_object_get_uint64(v)) : NULL;
                printf("%-16s%s\n", "Name:", json_object_get_string(json_object_object_get(o, "name")));
                printf("%-16s%s\n", "Domain:", opt(c, "domain"));
                v = json_object_object_get(o, "parent");
                printf("%-16s%s\n", "Parent:", v ? json_object_get_string(v) : "-");
                printf("%-16s%zu\n", "Children:", json_object_array_length(json_object_object_get(o, "children")));
                printf("%-16s%zu\n", "Descendants:", descendants);
                printf("%-16s%s\n", "Creation Time:", strempty(time));
                print_disks(json_object_object_get(o, "disks"));
                printf("%-16s%s\n", "Size:", size ?: "-");
        }
        json_object_put(o);
        ret = EXIT_OK;
finish:
        props_array_free(a, n);
        return ret;
}

int verb_checkpoint_dumpxml(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cpath = NULL;
        uint64_t flags = (flag(c, "security-info") ? CP_XML_SECURE : 0) | (flag(c, "no-domain") ? CP_XML_NO_DOMAIN : 0) |
                         (flag(c, "size") ? CP_XML_SIZE : 0);

        if (resolve(c, &dpath, &cpath, NULL, NULL) < 0)
                return EXIT_FAILED;
        return print_object_xml(c, cpath, QSNAP_CHECKPOINT_IFACE, flags);
}

int verb_checkpoint_parent(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cpath = NULL;

        if (resolve(c, &dpath, &cpath, NULL, NULL) < 0)
                return EXIT_FAILED;
        return moment_print_parent(c, cpath, QSNAP_CHECKPOINT_IFACE, "Checkpoint");
}

int verb_checkpoint_delete(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cpath = NULL;
        uint64_t flags = moment_delete_flags(c);

        if (resolve(c, &dpath, &cpath, NULL, NULL) < 0 ||
            call(c, NULL, cpath, QSNAP_CHECKPOINT_IFACE, "Delete", "t", flags) < 0)
                return EXIT_FAILED;
        moment_print_deleted("checkpoint", opt(c, "checkpointname"), flags);
        return EXIT_OK;
}
