/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backup verbs: backup-begin (virsh's [BACKUPXML] [CHECKPOINTXML]
 * --reuse-external, and --quiesce, qsnapd's own); with --wait the backup job is followed as the block
 * job verbs follow theirs: the bar from its Progress signals, Ctrl-C
 * aborts it; a pull backup serves until then) and backup-dumpxml (the
 * running backup, every file and socket filled in). Once a backup runs,
 * backup-begin says where each disk goes: its target file, or the NBD URI
 * a client reads it from. domjobabort ends the domain's backup (virsh's
 * name; a pull backup ends that way).
 */
#include "cli.h"

enum {
        BACKUP_BEGIN_REUSE_EXTERNAL = 1,
        BACKUP_BEGIN_QUIESCE = 2,
};

/* "nbd+unix:///vda?socket=/run/x.sock" or "nbd://host:port/vda" */
static char *nbd_uri(xmlNodePtr server, const char *export) {
        _cleanup_free_ char *transport = xml_attr(server, "transport"), *socket = xml_attr(server, "socket"),
                            *host = xml_attr(server, "name"), *port = xml_attr(server, "port");

        if (streq_ptr(transport, "unix"))
                return strprintf("nbd+unix:///%s?socket=%s", export, strna(socket));
        return strprintf("nbd://%s%s%s/%s", strna(host), port ? ":" : "", strempty(port), export);
}

/* Where each disk of the running backup goes (BackupGetXMLDesc): printed,
 * or with --json one object {job, mode, disks: [{disk, target | export,
 * uri}]}. A short push may have ended before the question: then the
 * targets the request named (mode push), none where qsnapd chose them. */
static void print_backup_places(Ctx *c, const char *dpath, const char *job, JobStart *s) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        xmlNodePtr root = NULL, server;
        _cleanup_free_ char *mode = NULL, *id = path_last_name(job);
        json_object *disks = json_object_new_array();
        const char *xml;
        xmlDocPtr doc = NULL;
        bool ended = false;

        if (sd_bus_call_method(c->bus, QSNAP_BUS_NAME, dpath, QSNAP_DOMAIN_IFACE, "BackupGetXMLDesc", &error, &reply,
                               NULL) >= 0 &&
            sd_bus_message_read(reply, "s", &xml) >= 0)
                doc = xml_parse(xml);
        sd_bus_error_free(&error);
        root = doc ? xmlDocGetRootElement(doc) : NULL;
        if (!root && s->request) {
                doc = xml_parse(s->request);
                root = doc ? xmlDocGetRootElement(doc) : NULL;
                ended = root != NULL;
        }
        mode = xml_attr(root, "mode");
        if (ended && !mode)
                mode = strdup("push");
        server = xml_child(root, "server");
        for (xmlNodePtr d = xml_child(xml_child(root, "disks"), "disk"); d; d = xml_next(d, "disk")) {
                _cleanup_free_ char *name = NULL, *backup = NULL, *export = NULL, *where = NULL;
                json_object *o;

                name = xml_attr(d, "name");
                backup = xml_attr(d, "backup");
                if (streq_ptr(backup, "no") || (ended && !xml_child(d, "target")))
                        continue;
                o = json_object_new_object();
                json_object_object_add(o, "disk", json_str(name));
                if (streq_ptr(mode, "pull")) {
                        export = xml_attr(d, "exportname");
                        where = nbd_uri(server, export ?: strna(name));
                        json_object_object_add(o, "export", json_str(export ?: name));
                        json_object_object_add(o, "uri", json_str(where));
                } else {
                        where = xml_attr(xml_child(d, "target"), "file");
                        json_object_object_add(o, "target", json_str(where));
                }
                json_object_array_add(disks, o);
                if (!c->json)
                        printf("  %s: %s\n", strna(name), strna(where));
        }
        if (c->json)
                json_print_fields("job", json_str(job), "id", json_str(id), "mode", json_str(mode), "disks",
                                  json_object_get(disks), NULL);
        else if (streq_ptr(mode, "pull"))
                printf("The exports stay until the backup is ended: %s.\n",
                       s->wait ? "Ctrl-C, or qsnapctl domjobabort" : "qsnapctl domjobabort");
        if (streq_ptr(mode, "pull"))
                s->end_mode = JOB_END_SERVE;
        json_object_put(disks);
        xmlFreeDoc(doc);
}

int verb_backup_begin(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *dpath = NULL, *backup_xml = NULL, *checkpoint_xml = NULL;
        JobStart s = { .label = "Backup", .end_mode = JOB_END_WAIT, .started = print_backup_places };
        uint64_t flags = (flag(c, "reuse-external") ? BACKUP_BEGIN_REUSE_EXTERNAL : 0) |
                         (flag(c, "quiesce") ? BACKUP_BEGIN_QUIESCE : 0);
        int r;

        if (wait_options(c, &s, false) < 0)
                return EXIT_USAGE;
        if (c->json && s.wait) {
                usage_error("backup-begin: --json goes without --wait, --verbose and --timeout");
                return EXIT_USAGE;
        }
        if (streq_ptr(opt(c, "backupxml"), "-") && streq_ptr(opt(c, "checkpointxml"), "-")) {
                usage_error("backup-begin: only one of the two documents can come from standard input");
                return EXIT_USAGE;
        }
        /* libvirt's default: a full push backup of every disk, next to it. */
        r = read_xml_option(c, "backupxml", "<domainbackup/>", &backup_xml);
        if (r == EXIT_OK)
                r = read_xml_option(c, "checkpointxml", "", &checkpoint_xml);
        if (r != EXIT_OK)
                return r;
        s.request = backup_xml;
        if (new_domain_call(c, "BackupBegin", &dpath, &m) < 0 ||
            sd_bus_message_append(m, "sst", backup_xml, checkpoint_xml, flags) < 0)
                return EXIT_FAILED;
        return run_job(c, dpath, &s, m);
}

int verb_backup_dumpxml(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *dpath = NULL;
        const char *xml;

        if (domain_path(c, opt(c, "domain"), &dpath) < 0 ||
            call(c, &reply, dpath, QSNAP_DOMAIN_IFACE, "BackupGetXMLDesc", NULL) < 0 ||
            sd_bus_message_read(reply, "s", &xml) < 0)
                return EXIT_FAILED;
        print_xml_text(xml);
        return EXIT_OK;
}

int verb_domjobabort(Ctx *c) {
        _cleanup_free_ char *dpath = NULL;
        Props **a = NULL;
        size_t n = 0;
        const char *job = NULL;
        int ret = EXIT_FAILED;

        if (domain_path(c, opt(c, "domain"), &dpath) < 0 || managed_objects(c, QSNAP_JOB_IFACE, dpath, &a, &n) < 0)
                return EXIT_FAILED;
        for (size_t i = 0; i < n && !job; i++)
                if (streq_ptr(props_str(a[i], "Type"), "backup") &&
                    !STR_IN_SET(strempty(props_str(a[i], "State")), "completed", "failed", "canceled"))
                        job = a[i]->path;
        if (!job)
                fail("Domain '%s' has no running backup.", opt(c, "domain"));
        else if (call(c, NULL, job, QSNAP_JOB_IFACE, "Abort", "t", (uint64_t) 0) >= 0) {
                printf("Backup of domain '%s' ended\n", opt(c, "domain"));
                ret = EXIT_OK;
        }
        props_array_free(a, n);
        return ret;
}
