/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Snapshot verbs: snapshot-create, snapshot-create-as (virsh's --memspec
 * and --diskspec), snapshot-list (every filter, --tree drawn as virsh draws
 * it), snapshot-info, snapshot-dumpxml, snapshot-current, snapshot-parent,
 * snapshot-revert, snapshot-delete (following the merge job), and the dry
 * runs snapshot-check-revert and snapshot-check-delete.
 */
#include <ctype.h>
#include <sys/statvfs.h>

#include "cli.h"

enum {
        CREATE_REDEFINE = 1,
        CREATE_CURRENT = 2,
        CREATE_NO_METADATA = 4,
        CREATE_HALT = 8,
        CREATE_DISK_ONLY = 16,
        CREATE_REUSE_EXT = 32,
        CREATE_QUIESCE = 64,
        CREATE_ATOMIC = 128,
        CREATE_LIVE = 256,
        CREATE_VALIDATE = 512,
};

enum {
        LIST_ROOTS = 1, /* on a snapshot: DESCENDANTS */
        LIST_METADATA = 2,
        LIST_LEAVES = 4,
        LIST_NO_LEAVES = 8,
        LIST_NO_METADATA = 16,
        LIST_INACTIVE = 32,
        LIST_ACTIVE = 64,
        LIST_DISK_ONLY = 128,
        LIST_INTERNAL = 256,
        LIST_EXTERNAL = 512,
        LIST_TOPOLOGICAL = 1024,
};

static uint64_t create_flags(Ctx *c) {
        static const struct {
                const char *name;
                uint64_t bit;
        } map[] = {
                { "no-metadata", CREATE_NO_METADATA }, { "halt", CREATE_HALT },   { "disk-only", CREATE_DISK_ONLY },
                { "reuse-external", CREATE_REUSE_EXT }, { "quiesce", CREATE_QUIESCE }, { "atomic", CREATE_ATOMIC },
                { "live", CREATE_LIVE },               { "validate", CREATE_VALIDATE },
        };
        uint64_t flags = 0;

        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (flag(c, map[i].name))
                        flags |= map[i].bit;
        return flags;
}

int verb_snapshot_create(Ctx *c) {
        uint64_t flags = create_flags(c);

        if (flag(c, "redefine"))
                flags |= CREATE_REDEFINE;
        if (flag(c, "current")) {
                if (!flag(c, "redefine")) {
                        usage_error("snapshot-create: --current goes with --redefine");
                        return EXIT_USAGE;
                }
                flags |= CREATE_CURRENT;
        }
        return moment_create_from_file(c, "CreateSnapshot", "snapshot", "<domainsnapshot/>", flags,
                                       flags & CREATE_REDEFINE);
}

/* --memspec [file=]PATH[,snapshot=external|no] */
static int memspec_xml(const char *spec, char **buf) {
        static const char *const keys[] = { "file", "snapshot", NULL };
        _cleanup_strv_free_ char **items = NULL;
        const char *v[ELEMENTSOF(keys)], *file, *snapshot;
        _cleanup_free_ char *efile = NULL;
        int r;

        r = parse_option_list("memspec", spec, keys, "file", &items, v);
        if (r < 0)
                return r;
        file = v[0];
        snapshot = v[1];
        if (snapshot && !STR_IN_SET(snapshot, "external", "no", "internal")) {
                usage_error("--memspec: snapshot='%s' is not external, internal or no", snapshot);
                return -EINVAL;
        }
        if (!snapshot)
                snapshot = file ? "external" : "no";
        if (file && !(efile = xml_escape(file)))
                return -ENOMEM;
        return strappendf(buf, "  <memory snapshot='%s'%s%s%s/>\n", snapshot, efile ? " file='" : "", strempty(efile),
                          efile ? "'" : "");
}

/* --diskspec DISK[,snapshot=TYPE][,driver=FMT][,file=PATH][,on-delete=DIR] */
static int diskspec_xml(const char *spec, char **buf) {
        static const char *const keys[] = { "disk", "snapshot", "driver", "file", "on-delete", "stype", NULL };
        _cleanup_strv_free_ char **items = NULL;
        const char *v[ELEMENTSOF(keys)], *snapshot, *driver, *file, *on_delete;
        _cleanup_free_ char *ename = NULL, *efile = NULL;
        int r;

        r = parse_option_list("diskspec", spec, keys, "disk", &items, v);
        if (r < 0)
                return r;
        snapshot = v[1], driver = v[2], file = v[3], on_delete = v[4];
        if (isempty(v[0])) {
                usage_error("--diskspec '%s': the first item is the disk (vda)", spec);
                return -EINVAL;
        }
        if (v[5] && !streq(v[5], "file")) {
                usage_error("--diskspec: stype='%s': only file disks", v[5]);
                return -EINVAL;
        }
        if (snapshot && !STR_IN_SET(snapshot, "external", "internal", "no", "manual")) {
                usage_error("--diskspec: snapshot='%s' is not external, internal, no or manual", snapshot);
                return -EINVAL;
        }
        if (on_delete && !STR_IN_SET(on_delete, "forward", "backward")) {
                usage_error("--diskspec: on-delete='%s' is not forward or backward", on_delete);
                return -EINVAL;
        }
        if (!snapshot && (file || driver))
                snapshot = "external";
        ename = xml_escape(v[0]);
        if (!ename || (file && !(efile = xml_escape(file))))
                return -ENOMEM;
        r = strappendf(buf, "    <disk name='%s'%s%s%s", ename, snapshot ? " snapshot='" : "", strempty(snapshot),
                       snapshot ? "'" : "");
        if (r < 0)
                return r;
        if (!driver && !file && !on_delete)
                return strappendf(buf, "/>\n");
        r = strappendf(buf, ">\n");
        if (r >= 0 && driver)
                r = strappendf(buf, "      <driver type='%s'/>\n", driver);
        if (r >= 0 && efile)
                r = strappendf(buf, "      <source file='%s'/>\n", efile);
        if (r >= 0 && on_delete)
                r = strappendf(buf, "      <on_delete merge='%s'/>\n", on_delete);
        if (r >= 0)
                r = strappendf(buf, "    </disk>\n");
        return r;
}

int verb_snapshot_create_as(Ctx *c) {
        _cleanup_free_ char *memory = NULL;
        const char *memspec = opt(c, "memspec");
        int r;

        r = memspec ? memspec_xml(memspec, &memory) : 0;
        if (r == -EINVAL)
                return EXIT_USAGE;
        if (r < 0)
                return EXIT_FAILED;
        return moment_create_as(c, "domainsnapshot", "CreateSnapshot", "snapshot", memory, diskspec_xml,
                                create_flags(c));
}

/* ---- reading snapshots ---- */

static json_object *snapshot_json(const Props *p, const char *domain) {
        json_object *o = json_object_new_object();
        _cleanup_free_ char *name = path_last_name(p->path), *parent = path_name_or_null(props_str(p, "Parent"));

        json_object_object_add(o, "name", json_str(props_str(p, "Name") ?: name));
        json_object_object_add(o, "domain", json_str(domain));
        json_object_object_add(o, "description", json_str(strempty(props_str(p, "Description"))));
        json_object_object_add(o, "creation_time", json_object_new_uint64(props_u64(p, "CreationTime")));
        json_object_object_add(o, "state", json_str(props_str(p, "State")));
        json_object_object_add(o, "location", json_str(props_str(p, "Location")));
        json_object_object_add(o, "memory", json_str(props_str(p, "Memory")));
        json_object_object_add(o, "parent", json_str(parent));
        json_object_object_add(o, "children", props_names_json(p, "Children"));
        json_object_object_add(o, "current", json_object_new_boolean(props_bool(p, "IsCurrent")));
        json_object_object_add(o, "metadata", json_object_new_boolean(props_bool(p, "HasMetadata")));
        return o;
}

static int check_snapshot_args(Ctx *c) {
        const char *name = opt(c, "snapshotname");
        bool current = flag(c, "current");

        if (name && current) {
                usage_error("%s: give a snapshot name or --current, not both", c->verb->name);
                return -EINVAL;
        }
        if (!name && !current) {
                usage_error("%s: which snapshot? Give its name or --current", c->verb->name);
                return -EINVAL;
        }
        return 0;
}

/* The snapshot named by the positional argument or --current. */
static int resolve_snapshot(Ctx *c, const char *dpath, char **ret_path) {
        const char *name = opt(c, "snapshotname");
        _cleanup_free_ char *cur = NULL;

        if (name)
                return snapshot_path(c, dpath, name, ret_path) < 0 ? -EIO : 0;
        if (get_property_string(c, dpath, QSNAP_DOMAIN_IFACE, "CurrentSnapshot", &cur) < 0)
                return -EIO;
        if (streq(cur, "/")) {
                fail("Domain '%s' has no current snapshot.", opt(c, "domain"));
                return -EIO;
        }
        *ret_path = TAKE_PTR(cur);
        return 0;
}

#define RESOLVE(c, dpath, spath)                                                   \
        do {                                                                       \
                int _r_;                                                           \
                if (check_snapshot_args(c) < 0)                                    \
                        return EXIT_USAGE;                                         \
                if (domain_path((c), opt((c), "domain"), &(dpath)) < 0)            \
                        return EXIT_FAILED;                                        \
                _r_ = resolve_snapshot((c), (dpath), &(spath));                    \
                if (_r_ == -EINVAL)                                                \
                        return EXIT_USAGE;                                         \
                if (_r_ < 0)                                                       \
                        return EXIT_FAILED;                                        \
        } while (0)

int verb_snapshot_list(Ctx *c) {
        static const struct {
                const char *name;
                uint64_t bit;
        } map[] = {
                { "roots", LIST_ROOTS },         { "metadata", LIST_METADATA },   { "leaves", LIST_LEAVES },
                { "no-leaves", LIST_NO_LEAVES }, { "no-metadata", LIST_NO_METADATA }, { "inactive", LIST_INACTIVE },
                { "active", LIST_ACTIVE },       { "disk-only", LIST_DISK_ONLY }, { "internal", LIST_INTERNAL },
                { "external", LIST_EXTERNAL },   { "topological", LIST_TOPOLOGICAL },
        };
        _cleanup_free_ char *dpath = NULL, *from = NULL;
        _cleanup_strv_free_ char **paths = NULL;
        const char *domain = opt(c, "domain");
        bool tree = flag(c, "tree"), descendants = flag(c, "descendants");
        uint64_t flags = 0;
        Props **a = NULL;
        size_t n = 0, count;
        int ret = EXIT_FAILED;

        for (size_t i = 0; i < ELEMENTSOF(map); i++)
                if (flag(c, map[i].name))
                        flags |= map[i].bit;
        if (tree && (flag(c, "parent") || flag(c, "roots") || flag(c, "name"))) {
                usage_error("snapshot-list: --tree goes with neither --parent, --roots nor --name");
                return EXIT_USAGE;
        }
        if (opt(c, "from") && flag(c, "current")) {
                usage_error("snapshot-list: --from and --current exclude each other");
                return EXIT_USAGE;
        }
        if (descendants && !opt(c, "from") && !flag(c, "current")) {
                usage_error("snapshot-list: --descendants goes with --from or --current");
                return EXIT_USAGE;
        }
        if ((opt(c, "from") || flag(c, "current")) && (flags & LIST_ROOTS)) {
                usage_error("snapshot-list: --roots does not go with --from or --current");
                return EXIT_USAGE;
        }
        if (domain_path(c, domain, &dpath) < 0)
                return EXIT_FAILED;
        if (opt(c, "from")) {
                if (snapshot_path(c, dpath, opt(c, "from"), &from) < 0)
                        return EXIT_FAILED;
        } else if (flag(c, "current")) {
                if (get_property_string(c, dpath, QSNAP_DOMAIN_IFACE, "CurrentSnapshot", &from) < 0)
                        return EXIT_FAILED;
                if (streq(from, "/")) {
                        fail("Domain '%s' has no current snapshot.", domain);
                        return EXIT_FAILED;
                }
        }
        if (moment_list_paths(c, dpath, QSNAP_SNAPSHOT_IFACE, "ListSnapshots", from, flags, descendants, tree, &paths) < 0)
                return EXIT_FAILED;
        if (managed_objects(c, QSNAP_SNAPSHOT_IFACE, dpath, &a, &n) < 0)
                return EXIT_FAILED;
        count = strv_length(paths);

        if (c->json) {
                json_object *arr = json_object_new_array();
                for (size_t i = 0; i < count; i++) {
                        Props *p = props_find(a, n, paths[i]);
                        if (p)
                                json_object_array_add(arr, snapshot_json(p, domain));
                }
                json_print(arr);
                json_object_put(arr);
        } else if (tree) {
                moment_tree_print(paths, a, n);
        } else if (flag(c, "name")) {
                moment_print_names(paths);
        } else {
                bool with_parent = flag(c, "parent");
                _cleanup_(table_freep) Table *t = with_parent ? table_new("Name", "Creation Time", "State", "Parent", NULL)
                                                              : table_new("Name", "Creation Time", "State", NULL);
                if (!t)
                        goto finish;
                for (size_t i = 0; i < count; i++) {
                        Props *p = props_find(a, n, paths[i]);
                        _cleanup_free_ char *name = path_last_name(paths[i]), *time = NULL, *parent = NULL;
                        if (!p)
                                continue;
                        time = format_time(props_u64(p, "CreationTime"));
                        parent = path_name_or_null(props_str(p, "Parent"));
                        table_add(t, props_str(p, "Name") ?: name, time, props_str(p, "State"), parent ?: "-");
                }
                table_print(t, stdout);
        }
        ret = EXIT_OK;
finish:
        props_array_free(a, n);
        return ret;
}

int verb_snapshot_info(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *spath = NULL;
        _cleanup_(props_freep) Props *p = NULL;
        size_t descendants;
        json_object *o;

        RESOLVE(c, dpath, spath);
        if (moment_info_read(c, spath, QSNAP_SNAPSHOT_IFACE, &p, &descendants) < 0)
                return EXIT_FAILED;
        o = snapshot_json(p, opt(c, "domain"));
        json_object_object_add(o, "descendants", json_object_new_int64((int64_t) descendants));
        if (c->json)
                json_print(o);
        else {
                moment_info_print_head(c, p);
                printf("%-16s%s\n", "State:", strempty(props_str(p, "State")));
                printf("%-16s%s\n", "Location:", strempty(props_str(p, "Location")));
                printf("%-16s%s\n", "Memory:", strempty(props_str(p, "Memory")));
                moment_info_print_tree(p, descendants);
                printf("%-16s%s\n", "Metadata:", props_bool(p, "HasMetadata") ? "yes" : "no");
        }
        json_object_put(o);
        return EXIT_OK;
}

int verb_snapshot_dumpxml(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *spath = NULL;

        if (domain_path(c, opt(c, "domain"), &dpath) < 0 || snapshot_path(c, dpath, opt(c, "snapshotname"), &spath) < 0)
                return EXIT_FAILED;
        return print_object_xml(c, spath, QSNAP_SNAPSHOT_IFACE, flag(c, "security-info") ? 1 : 0);
}

int verb_snapshot_current(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *cur = NULL, *name = NULL;
        const char *domain = opt(c, "domain");

        if (domain_path(c, domain, &dpath) < 0 ||
            get_property_string(c, dpath, QSNAP_DOMAIN_IFACE, "CurrentSnapshot", &cur) < 0)
                return EXIT_FAILED;
        name = path_name_or_null(cur);
        if (c->json) {
                json_print_fields("domain", json_str(domain), "current", json_str(name), NULL);
                return EXIT_OK;
        }
        if (!name) {
                fail("Domain '%s' has no current snapshot.", domain);
                return EXIT_FAILED;
        }
        if (flag(c, "name")) {
                printf("%s\n", name);
                return EXIT_OK;
        }
        return print_object_xml(c, cur, QSNAP_SNAPSHOT_IFACE, flag(c, "security-info") ? 1 : 0);
}

int verb_snapshot_parent(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *spath = NULL;

        RESOLVE(c, dpath, spath);
        return moment_print_parent(c, spath, QSNAP_SNAPSHOT_IFACE, "Snapshot");
}

static uint64_t revert_flags(Ctx *c) {
        return (flag(c, "running") ? 1 : 0) | (flag(c, "paused") ? 2 : 0) | (flag(c, "force") ? 4 : 0);
}

int verb_snapshot_revert(Ctx *c) {
        _cleanup_free_ char *dpath = NULL, *spath = NULL, *sname = NULL, *state = NULL;

        RESOLVE(c, dpath, spath);
        if (call(c, NULL, spath, QSNAP_SNAPSHOT_IFACE, "Revert", "t", revert_flags(c)) < 0)
                return EXIT_FAILED;
        sname = path_last_name(spath);
        if (get_property_string(c, dpath, QSNAP_DOMAIN_IFACE, "State", &state) < 0)
                return EXIT_FAILED;
        printf("Domain '%s' reverted to snapshot %s (now %s)\n", opt(c, "domain"), strna(sname), state);
        return EXIT_OK;
}

int verb_snapshot_delete(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_(job_watch_freep) JobWatch *w = NULL;
        _cleanup_free_ char *dpath = NULL, *spath = NULL, *sname = NULL;
        uint64_t flags = moment_delete_flags(c);
        const char *job;

        RESOLVE(c, dpath, spath);
        sname = path_last_name(spath);
        if (!flag(c, "async") && job_watch_begin(c, dpath, &w) < 0)
                return EXIT_FAILED;
        if (call(c, &reply, spath, QSNAP_SNAPSHOT_IFACE, "Delete", "t", flags) < 0 ||
            sd_bus_message_read(reply, "o", &job) < 0)
                return EXIT_FAILED;
        if (streq(job, "/")) {
                moment_print_deleted("snapshot", sname, flags);
                return EXIT_OK;
        }
        if (flag(c, "async")) {
                printf("Deleting snapshot %s: its data are merged by job %s\n", strna(sname), job);
                return EXIT_OK;
        }
        return job_wait(c, w, job, "Snapshot delete", JOB_END_WAIT, flag(c, "verbose"), 0, false);
}

static int print_check(Ctx *c, const char *what, int ok, const char *reason) {
        if (ok)
                printf("%s would go ahead now.\n", what);
        else
                printf("%s would be refused: %s\n", what, reason);
        return ok ? EXIT_OK : EXIT_FAILED;
}

int verb_snapshot_check_revert(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *dpath = NULL, *spath = NULL, *sname = NULL, *what = NULL;
        const char *reason;
        int ok;

        RESOLVE(c, dpath, spath);
        if (call(c, &reply, spath, QSNAP_SNAPSHOT_IFACE, "CheckRevert", "t", revert_flags(c)) < 0 ||
            sd_bus_message_read(reply, "bs", &ok, &reason) < 0)
                return EXIT_FAILED;
        sname = path_last_name(spath);
        if (c->json) {
                json_print_fields("snapshot", json_str(sname), "ok", json_object_new_boolean(ok), "reason",
                                  json_str(reason), NULL);
                return ok ? EXIT_OK : EXIT_FAILED;
        }
        what = strprintf("A revert of domain '%s' to snapshot %s", opt(c, "domain"), strna(sname));
        return print_check(c, what, ok, reason);
}

/* The folder a merge of this snapshot writes into: the folder of the file
 * its recorded <domain> ran on (the file it froze), else of its overlay. */
static char *snapshot_space_dir(Ctx *c, const char *spath) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        xmlNodePtr root, lists[2];
        const char *xml;
        xmlDocPtr doc;
        char *dir = NULL;

        if (call(c, &reply, spath, QSNAP_SNAPSHOT_IFACE, "GetXMLDesc", "t", (uint64_t) 0) < 0 ||
            sd_bus_message_read(reply, "s", &xml) < 0)
                return NULL;
        doc = xml_parse(xml);
        root = doc ? xmlDocGetRootElement(doc) : NULL;
        lists[0] = xml_child(xml_child(root, "domain"), "devices");
        lists[1] = xml_child(root, "disks");
        for (size_t i = 0; i < ELEMENTSOF(lists) && !dir; i++)
                for (xmlNodePtr d = xml_child(lists[i], "disk"); d && !dir; d = xml_next(d, "disk")) {
                        _cleanup_free_ char *file = xml_attr(xml_child(d, "source"), "file");
                        char *slash = file ? strrchr(file, '/') : NULL;
                        if (file && file[0] == '/')
                                dir = slash == file ? strdup("/") : strndup(file, (size_t) (slash - file));
                }
        xmlFreeDoc(doc);
        return dir;
}

/* "… needs up to 123456789 bytes …" → "… needs up to 123456789 bytes (118 MiB) …" */
static char *humanize_numbers(const char *s) {
        _cleanup_free_ char *out = NULL;
        const char *p = s;

        while (*p) {
                size_t digits = strspn(p, "0123456789");
                if (digits >= 4 && (p == s || !isalnum((unsigned char) p[-1]))) {
                        _cleanup_free_ char *num = strndup(p, digits), *human = NULL;
                        const char *rest = p + digits;
                        if (!num)
                                return NULL;
                        human = format_size(strtoull(num, NULL, 10));
                        if (strncmp(rest, " bytes", 6) == 0)
                                rest += 6;
                        if (strappendf(&out, "%s bytes (%s)", num, strna(human)) < 0)
                                return NULL;
                        p = rest;
                        continue;
                }
                if (strappendf(&out, "%c", *p) < 0)
                        return NULL;
                p++;
        }
        return out ? TAKE_PTR(out) : strdup("");
}

int verb_snapshot_check_delete(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *dpath = NULL, *spath = NULL, *sname = NULL, *what = NULL, *dir = NULL, *human = NULL,
                            *need = NULL, *free_text = NULL;
        const char *reason;
        uint64_t bytes, free_bytes = 0;
        bool have_free = false;
        int ok, ret;

        RESOLVE(c, dpath, spath);
        if (call(c, &reply, spath, QSNAP_SNAPSHOT_IFACE, "CheckDelete", "t", moment_delete_flags(c)) < 0 ||
            sd_bus_message_read(reply, "bst", &ok, &reason, &bytes) < 0)
                return EXIT_FAILED;
        sname = path_last_name(spath);
        /* The free space is known only where the files are: on this host. */
        if (IN_SET(c->transport, TRANSPORT_SYSTEM, TRANSPORT_USER, TRANSPORT_ADDRESS) && bytes > 0) {
                struct statvfs sv;
                dir = snapshot_space_dir(c, spath);
                if (dir && statvfs(dir, &sv) >= 0) {
                        free_bytes = (uint64_t) sv.f_bavail * sv.f_frsize;
                        have_free = true;
                }
        }
        if (c->json) {
                json_object *o = json_object_new_object();
                json_object_object_add(o, "snapshot", json_str(sname));
                json_object_object_add(o, "ok", json_object_new_boolean(ok));
                json_object_object_add(o, "reason", json_str(reason));
                json_object_object_add(o, "bytes_needed", json_object_new_uint64(bytes));
                json_object_object_add(o, "free_bytes", have_free ? json_object_new_uint64(free_bytes) : NULL);
                json_object_object_add(o, "free_dir", json_str(have_free ? dir : NULL));
                json_print(o);
                json_object_put(o);
                return ok ? EXIT_OK : EXIT_FAILED;
        }
        what = strprintf("A delete of snapshot %s of domain '%s'", strna(sname), opt(c, "domain"));
        human = humanize_numbers(reason);
        ret = print_check(c, what, ok, human ?: reason);
        need = format_size(bytes);
        printf("%-16s%s\n", "Data to merge:", bytes > 0 ? need : "none (nothing is merged)");
        if (have_free) {
                free_text = format_size(free_bytes);
                printf("%-16s%s in %s\n", "Free space:", free_text, dir);
        } else if (bytes > 0)
                printf("%-16s%s\n", "Free space:",
                       IN_SET(c->transport, TRANSPORT_REMOTE, TRANSPORT_MACHINE) ? "checked by qsnapd on its host"
                                                                                 : "unknown");
        return ret;
}
