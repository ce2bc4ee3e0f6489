/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Backup verbs: backup-begin (virsh's [BACKUPXML] [CHECKPOINTXML]
 * --reuse-external; with --wait the backup job is followed as the block
 * job verbs follow theirs: the bar from its Progress signals, Ctrl-C
 * aborts it) and backup-dumpxml (the running backup, every file and socket
 * filled in).
 */
#include "cli.h"

enum {
        BACKUP_BEGIN_REUSE_EXTERNAL = 1,
};

int verb_backup_begin(Ctx *c) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        _cleanup_free_ char *dpath = NULL, *backup_xml = NULL, *checkpoint_xml = NULL;
        JobStart s = { .label = "Backup", .end_mode = JOB_END_WAIT };
        uint64_t flags = flag(c, "reuse-external") ? BACKUP_BEGIN_REUSE_EXTERNAL : 0;
        int r;

        if (wait_options(c, &s, false) < 0)
                return EXIT_USAGE;
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
