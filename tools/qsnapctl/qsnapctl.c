/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qsnapctl: the command line of qsnapd, with virsh's verbs and options.
 * This file owns the verb and option tables and the command-line parser
 * (virsh's rules: options anywhere after the verb, named arguments also by
 * position), help, the completion helper the bash completion calls, and
 * main(). The verbs live in verbs-*.c.
 */
#include <getopt.h>
#include <locale.h>

#include "cli.h"
#include "config.h"

#define DOMAIN_ARG { "domain", ARG_DOMAIN, OPT_POSITIONAL | OPT_REQUIRED, "the domain's name" }
#define SNAP_ARG { "snapshotname", ARG_SNAPSHOT, OPT_POSITIONAL, "the snapshot's name" }
#define SNAP_CURRENT { "current", ARG_NONE, 0, "the domain's current snapshot instead of a name" }
#define DISK_ARG { "path", ARG_DISK, OPT_POSITIONAL | OPT_REQUIRED, "the disk: its target (vda) or its active file" }
#define WAIT_OPTS                                                                                           \
        { "wait", ARG_NONE, 0, "wait for the job to end, with a progress bar on a terminal" },             \
        { "verbose", ARG_NONE, 0, "show progress also when not on a terminal (implies --wait)" },          \
        { "timeout", ARG_NUMBER, 0, "abort the job after this many seconds (implies --wait)" },            \
        { "async", ARG_NONE, 0, "with --timeout or Ctrl-C: do not wait for the aborted job to end" }
#define BANDWIDTH_OPT { "bandwidth", ARG_BANDWIDTH, 0, "speed limit, bytes per second with units: 200MiB/s (0 = none)" }

const OptionDef global_options[] = {
        { "system", ARG_NONE, 0, "talk to qsnapd on the system bus (the default)" },
        { "user", ARG_NONE, 0, "talk to the user's qsnapd on the session bus" },
        { "host", ARG_STRING, 0, "the system bus of a remote host, over SSH" },
        { "machine", ARG_STRING, 0, "the system bus of a local container" },
        { "address", ARG_STRING, 0, "a D-Bus address (unix:path=...)" },
        { "no-ask-password", ARG_NONE, 0, "never ask for a polkit password on the terminal" },
        { "json", ARG_NONE, 0, "print data as JSON (verbs that print data)" },
        { "help", ARG_NONE, 0, "print help (of a verb when given after it)" },
        { "version", ARG_NONE, 0, "print qsnapctl's version" },
        { NULL }
};

static const OptionDef opts_none[] = { { NULL } };
static const OptionDef opts_domain[] = { DOMAIN_ARG, { NULL } };
static const OptionDef opts_help[] = { { "command", ARG_VERB, OPT_POSITIONAL, "a verb" }, { NULL } };
static const OptionDef opts_list[] = {
        { "all", ARG_NONE, 0, "all domains (the default shows running and paused ones)" },
        { "inactive", ARG_NONE, 0, "shut-off and crashed domains only" },
        { "name", ARG_NONE, 0, "names only" },
        { "uuid", ARG_NONE, 0, "UUIDs only" },
        { NULL }
};
static const OptionDef opts_define[] = {
        { "file", ARG_FILE, OPT_POSITIONAL | OPT_REQUIRED, "a <domain> XML file, - for standard input" },
        { NULL }
};
static const OptionDef opts_undefine[] = {
        DOMAIN_ARG,
        { "snapshots-metadata", ARG_NONE, 0, "also forget its snapshot metadata (images stay)" },
        { "checkpoints-metadata", ARG_NONE, 0, "also forget its checkpoint metadata" },
        { NULL }
};
static const OptionDef opts_start[] = {
        DOMAIN_ARG, { "paused", ARG_NONE, 0, "start with the vCPUs stopped" }, { NULL }
};
static const OptionDef opts_console[] = {
        DOMAIN_ARG, { "devname", ARG_STRING, OPT_POSITIONAL, "serialN or consoleN (default: the first console)" },
        { NULL }
};
static const OptionDef opts_stop[] = {
        DOMAIN_ARG, { "graceful", ARG_NONE, 0, "ACPI power button first, then quit QEMU" }, { NULL }
};
static const OptionDef opts_dumpxml[] = {
        DOMAIN_ARG,
        { "inactive", ARG_NONE, 0, "the stored definition even while it runs" },
        { "security-info", ARG_NONE, 0, "include secrets (polkit read-secure)" },
        { NULL }
};
static const OptionDef opts_qmc[] = {
        DOMAIN_ARG,
        { "hmp", ARG_NONE, 0, "a human monitor command line instead of QMP JSON" },
        { "pretty", ARG_NONE, 0, "indent a QMP reply" },
        { "cmd", ARG_STRING, OPT_POSITIONAL | OPT_REQUIRED | OPT_REST, "the command (words are joined by spaces)" },
        { NULL }
};

#define SNAPSHOT_CREATE_FLAGS                                                                                 \
        { "no-metadata", ARG_NONE, 0, "take it but keep no metadata" },                                       \
        { "halt", ARG_NONE, 0, "stop the domain afterwards" },                                                \
        { "disk-only", ARG_NONE, 0, "external disk-only snapshot (overlays)" },                               \
        { "reuse-external", ARG_NONE, 0, "use existing overlay files" },                                      \
        { "quiesce", ARG_NONE, 0, "freeze the guest's file systems (needs a guest agent)" },                  \
        { "atomic", ARG_NONE, 0, "all disks or none (always the case)" },                                     \
        { "live", ARG_NONE, 0, "save memory while the guest runs" },                                          \
        { "validate", ARG_NONE, 0, "validate the XML" }
static const OptionDef opts_snapshot_create[] = {
        DOMAIN_ARG,
        { "xmlfile", ARG_FILE, OPT_POSITIONAL, "a <domainsnapshot> XML file, - for standard input" },
        { "redefine", ARG_NONE, 0, "record metadata only (e.g. from snapshot-dumpxml)" },
        { "current", ARG_NONE, 0, "with --redefine: make it the current snapshot" },
        SNAPSHOT_CREATE_FLAGS,
        { NULL }
};
static const OptionDef opts_snapshot_create_as[] = {
        DOMAIN_ARG,
        { "name", ARG_STRING, OPT_POSITIONAL, "the snapshot's name (default: the time)" },
        { "description", ARG_STRING, OPT_POSITIONAL, "a description" },
        { "print-xml", ARG_NONE, 0, "print the <domainsnapshot> XML instead of taking it" },
        SNAPSHOT_CREATE_FLAGS,
        { "memspec", ARG_STRING, 0, "[file=]PATH[,snapshot=external|no]: the memory state" },
        { "diskspec", ARG_STRING, OPT_MULTI,
          "DISK[,snapshot=external|internal|no][,driver=qcow2][,file=PATH][,on-delete=forward|backward]" },
        { NULL }
};
static const OptionDef opts_snapshot_list[] = {
        DOMAIN_ARG,
        { "parent", ARG_NONE, 0, "add a Parent column" },
        { "roots", ARG_NONE, 0, "only snapshots without a parent" },
        { "leaves", ARG_NONE, 0, "only snapshots without children" },
        { "no-leaves", ARG_NONE, 0, "only snapshots with children" },
        { "metadata", ARG_NONE, 0, "only snapshots with metadata (all of them)" },
        { "no-metadata", ARG_NONE, 0, "only snapshots without metadata (none)" },
        { "inactive", ARG_NONE, 0, "only snapshots of a shut-off domain" },
        { "active", ARG_NONE, 0, "only snapshots of a running domain, with memory" },
        { "disk-only", ARG_NONE, 0, "only disk-only snapshots" },
        { "internal", ARG_NONE, 0, "only internal snapshots" },
        { "external", ARG_NONE, 0, "only external snapshots" },
        { "topological", ARG_NONE, 0, "parents before children" },
        { "tree", ARG_NONE, 0, "draw the tree" },
        { "name", ARG_NONE, 0, "names only" },
        { "from", ARG_SNAPSHOT, 0, "the children of this snapshot" },
        { "current", ARG_NONE, 0, "the children of the current snapshot" },
        { "descendants", ARG_NONE, 0, "with --from or --current: all descendants" },
        { NULL }
};
static const OptionDef opts_snapshot_info[] = { DOMAIN_ARG, SNAP_ARG, SNAP_CURRENT, { NULL } };
static const OptionDef opts_snapshot_dumpxml[] = {
        DOMAIN_ARG,
        { "snapshotname", ARG_SNAPSHOT, OPT_POSITIONAL | OPT_REQUIRED, "the snapshot's name" },
        { "security-info", ARG_NONE, 0, "include secrets (polkit read-secure)" },
        { NULL }
};
static const OptionDef opts_snapshot_current[] = {
        DOMAIN_ARG,
        { "name", ARG_NONE, 0, "print its name, not its XML" },
        { "security-info", ARG_NONE, 0, "include secrets in the XML (polkit read-secure)" },
        { NULL }
};
#define REVERT_FLAGS                                                                               \
        { "running", ARG_NONE, 0, "running afterwards" },                                          \
        { "paused", ARG_NONE, 0, "paused afterwards" },                                            \
        { "force", ARG_NONE, 0, "also when a running state or a configuration would be lost" }
#define DELETE_FLAGS                                                                               \
        { "children", ARG_NONE, 0, "also every descendant" },                                      \
        { "children-only", ARG_NONE, 0, "only the descendants" },                                  \
        { "metadata", ARG_NONE, 0, "forget the metadata only; images, files and bitmaps stay" }
static const OptionDef opts_snapshot_revert[] = { DOMAIN_ARG, SNAP_ARG, SNAP_CURRENT, REVERT_FLAGS, { NULL } };
static const OptionDef opts_snapshot_delete[] = {
        DOMAIN_ARG,
        SNAP_ARG,
        SNAP_CURRENT,
        DELETE_FLAGS,
        { "async", ARG_NONE, 0, "return at once when data is merged (print the job)" },
        { "verbose", ARG_NONE, 0, "show the merge's progress also when not on a terminal" },
        { NULL }
};
static const OptionDef opts_snapshot_check_revert[] = { DOMAIN_ARG, SNAP_ARG, SNAP_CURRENT, REVERT_FLAGS, { NULL } };
static const OptionDef opts_snapshot_check_delete[] = { DOMAIN_ARG, SNAP_ARG, SNAP_CURRENT, DELETE_FLAGS, { NULL } };

#define CHECKPOINT_ARG { "checkpointname", ARG_CHECKPOINT, OPT_POSITIONAL | OPT_REQUIRED, "the checkpoint's name" }
#define CHECKPOINT_CREATE_FLAGS                                                                                  \
        { "redefine", ARG_NONE, 0, "record metadata only, for bitmaps in the images (e.g. from checkpoint-dumpxml)" }, \
        { "redefine-validate", ARG_NONE, 0, "with --redefine: first check that the bitmaps are there and usable" },  \
        { "quiesce", ARG_NONE, 0, "freeze the guest's file systems (needs a guest agent)" }
static const OptionDef opts_checkpoint_create[] = {
        DOMAIN_ARG,
        { "xmlfile", ARG_FILE, OPT_POSITIONAL, "a <domaincheckpoint> XML file, - for standard input" },
        CHECKPOINT_CREATE_FLAGS,
        { NULL }
};
static const OptionDef opts_checkpoint_create_as[] = {
        DOMAIN_ARG,
        { "name", ARG_STRING, OPT_POSITIONAL, "the checkpoint's name (default: the time)" },
        { "description", ARG_STRING, OPT_POSITIONAL, "a description" },
        { "print-xml", ARG_NONE, 0, "print the <domaincheckpoint> XML instead of creating it" },
        CHECKPOINT_CREATE_FLAGS,
        { "diskspec", ARG_STRING, OPT_MULTI, "DISK[,checkpoint=bitmap|no][,bitmap=NAME]" },
        { NULL }
};
static const OptionDef opts_checkpoint_list[] = {
        DOMAIN_ARG,
        { "parent", ARG_NONE, 0, "add a Parent column" },
        { "roots", ARG_NONE, 0, "only checkpoints without a parent" },
        { "leaves", ARG_NONE, 0, "only checkpoints without children" },
        { "no-leaves", ARG_NONE, 0, "only checkpoints with children" },
        { "topological", ARG_NONE, 0, "parents before children" },
        { "size", ARG_NONE, 0, "add a Size column: the bytes changed since each checkpoint" },
        { "tree", ARG_NONE, 0, "draw the tree" },
        { "name", ARG_NONE, 0, "names only" },
        { "from", ARG_CHECKPOINT, 0, "the children of this checkpoint" },
        { "descendants", ARG_NONE, 0, "with --from: all descendants" },
        { NULL }
};
static const OptionDef opts_checkpoint[] = { DOMAIN_ARG, CHECKPOINT_ARG, { NULL } };
static const OptionDef opts_checkpoint_dumpxml[] = {
        DOMAIN_ARG,
        CHECKPOINT_ARG,
        { "security-info", ARG_NONE, 0, "include secrets (polkit read-secure)" },
        { "no-domain", ARG_NONE, 0, "leave out the <domain> recorded with it" },
        { "size", ARG_NONE, 0, "add each disk's bytes changed since the checkpoint" },
        { NULL }
};
static const OptionDef opts_checkpoint_delete[] = { DOMAIN_ARG, CHECKPOINT_ARG, DELETE_FLAGS, { NULL } };
static const OptionDef opts_backup_begin[] = {
        DOMAIN_ARG,
        { "backupxml", ARG_FILE, OPT_POSITIONAL,
          "a <domainbackup> XML file, - for standard input (none: a full push backup of every disk)" },
        { "checkpointxml", ARG_FILE, OPT_POSITIONAL,
          "a <domaincheckpoint> XML file: also create this checkpoint at the backup's point in time" },
        { "reuse-external", ARG_NONE, 0, "the target (push) or scratch (pull) files exist already" },
        { "quiesce", ARG_NONE, 0, "freeze the guest's filesystems (guest agent) around the backup's start" },
        WAIT_OPTS,
        { NULL }
};

static const OptionDef opts_blockpull[] = {
        DOMAIN_ARG,
        DISK_ARG,
        BANDWIDTH_OPT,
        { "base", ARG_FILE, 0, "pull only the files above this one (a file of the chain or vda[N])" },
        { "keep-relative", ARG_NONE, 0, "with --base: keep the backing name relative" },
        WAIT_OPTS,
        { NULL }
};
static const OptionDef opts_blockrebase[] = {
        DOMAIN_ARG,
        DISK_ARG,
        { "base", ARG_FILE, 0, "the new backing file (none: a full pull); with --copy the destination" },
        BANDWIDTH_OPT,
        { "shallow", ARG_NONE, 0, "with --copy: copy the active image only" },
        { "reuse-external", ARG_NONE, 0, "with --copy: the destination exists" },
        { "copy", ARG_NONE, 0, "copy the disk to --base instead (as blockcopy)" },
        { "copy-raw", ARG_NONE, 0, "with --copy: a raw destination" },
        { "keep-relative", ARG_NONE, 0, "keep the backing name relative" },
        { "pivot", ARG_NONE, 0, "with --copy: switch to the copy when it is ready" },
        { "finish", ARG_NONE, 0, "with --copy: end the copy when it is ready, keep the disk" },
        WAIT_OPTS,
        { NULL }
};
static const OptionDef opts_blockcommit[] = {
        DOMAIN_ARG,
        DISK_ARG,
        BANDWIDTH_OPT,
        { "base", ARG_FILE, 0, "commit into this file (default: the bottom of the chain)" },
        { "shallow", ARG_NONE, 0, "commit into the file right below --top" },
        { "top", ARG_FILE, 0, "commit from this file down (default: the active layer)" },
        { "active", ARG_NONE, 0, "commit the active layer (then --pivot or --keep-overlay)" },
        { "delete", ARG_NONE, 0, "remove the committed files afterwards" },
        { "keep-relative", ARG_NONE, 0, "keep the backing name relative" },
        { "pivot", ARG_NONE, 0, "with --active: switch to the base when ready (implies --wait)" },
        { "keep-overlay", ARG_NONE, 0, "with --active: end the commit when ready, keep the overlay active" },
        WAIT_OPTS,
        { NULL }
};
static const OptionDef opts_blockcopy[] = {
        DOMAIN_ARG,
        DISK_ARG,
        { "dest", ARG_FILE, OPT_POSITIONAL, "the destination file" },
        { "format", ARG_STRING, 0, "with --dest: qcow2 or raw (default: the disk's)" },
        { "xml", ARG_FILE, 0, "a <disk> XML file naming the destination, instead of --dest" },
        BANDWIDTH_OPT,
        { "shallow", ARG_NONE, 0, "copy the active image only" },
        { "reuse-external", ARG_NONE, 0, "the destination exists already" },
        { "transient-job", ARG_NONE, 0, "a restarted qsnapd cancels the copy" },
        { "synchronous-writes", ARG_NONE, 0, "guest writes reach the copy before they complete" },
        { "pivot", ARG_NONE, 0, "switch to the copy when it is ready (implies --wait)" },
        { "finish", ARG_NONE, 0, "end the copy when it is ready, keep the disk (implies --wait)" },
        WAIT_OPTS,
        { NULL }
};
static const OptionDef opts_blockjob[] = {
        DOMAIN_ARG,
        DISK_ARG,
        { "info", ARG_NONE, 0, "show the job (the default)" },
        { "abort", ARG_NONE, 0, "abort the job" },
        { "async", ARG_NONE, 0, "with --abort: return at once" },
        { "pivot", ARG_NONE, 0, "switch a ready commit or copy over" },
        { "bandwidth", ARG_BANDWIDTH, 0, "set the job's speed limit (0 = none)" },
        { "pause", ARG_NONE, 0, "pause the job" },
        { "resume", ARG_NONE, 0, "resume a paused job" },
        { "raw", ARG_NONE, 0, "print the job's properties, one per line" },
        { NULL }
};
static const OptionDef opts_jobs[] = {
        { "domain", ARG_DOMAIN, OPT_POSITIONAL, "only this domain's jobs" }, { NULL }
};
static const OptionDef opts_monitor[] = {
        { "domain", ARG_DOMAIN, OPT_POSITIONAL, "only this domain's signals" }, { NULL }
};

static int verb_help(Ctx *c);

static const Verb verb_defs[] = {
        { "list", "Domains", "list domains", opts_list, verb_list, VERB_JSON },
        { "define", "Domains", "define or update a domain from <domain> XML", opts_define, verb_define, VERB_AUTH },
        { "undefine", "Domains", "remove a domain's definition (never its images)", opts_undefine, verb_undefine, VERB_AUTH },
        { "start", "Domains", "start a domain's QEMU", opts_start, verb_start, VERB_AUTH },
        { "stop", "Domains", "stop a domain's QEMU (--graceful: power button first)", opts_stop, verb_stop, VERB_AUTH },
        { "destroy", "Domains", "stop a domain at once (stop)", opts_domain, verb_stop, VERB_AUTH },
        { "shutdown", "Domains", "shut a domain down (stop --graceful)", opts_domain, verb_stop, VERB_AUTH },
        { "suspend", "Domains", "pause a domain's vCPUs", opts_domain, verb_suspend, VERB_AUTH },
        { "resume", "Domains", "resume a paused domain", opts_domain, verb_resume, VERB_AUTH },
        { "domstate", "Domains", "a domain's state", opts_domain, verb_domstate, VERB_JSON },
        { "dominfo", "Domains", "a domain's properties", opts_domain, verb_dominfo, VERB_JSON },
        { "dumpxml", "Domains", "a domain's <domain> XML", opts_dumpxml, verb_dumpxml, VERB_AUTH },
        { "domblklist", "Domains", "a domain's disks with their backing chains", opts_domain, verb_domblklist, VERB_JSON },
        { "console", "Domains", "connect this terminal to a domain's serial console (^] ends)", opts_console,
          verb_console, VERB_AUTH },
        { "qemu-monitor-command", "Domains", "pass a QMP or HMP command to QEMU (root-equivalent)", opts_qmc,
          verb_qemu_monitor_command, VERB_AUTH },
        { "snapshot-create", "Snapshots", "take a snapshot from <domainsnapshot> XML", opts_snapshot_create,
          verb_snapshot_create, VERB_AUTH },
        { "snapshot-create-as", "Snapshots", "take a snapshot described by options", opts_snapshot_create_as,
          verb_snapshot_create_as, VERB_AUTH },
        { "snapshot-list", "Snapshots", "list a domain's snapshots (--tree: the tree)", opts_snapshot_list,
          verb_snapshot_list, VERB_JSON },
        { "snapshot-info", "Snapshots", "a snapshot's properties", opts_snapshot_info, verb_snapshot_info, VERB_JSON },
        { "snapshot-dumpxml", "Snapshots", "a snapshot's <domainsnapshot> XML", opts_snapshot_dumpxml,
          verb_snapshot_dumpxml, VERB_AUTH },
        { "snapshot-current", "Snapshots", "the current snapshot", opts_snapshot_current, verb_snapshot_current,
          VERB_JSON | VERB_AUTH },
        { "snapshot-parent", "Snapshots", "a snapshot's parent", opts_snapshot_info, verb_snapshot_parent, VERB_JSON },
        { "snapshot-revert", "Snapshots", "revert the domain to a snapshot", opts_snapshot_revert,
          verb_snapshot_revert, VERB_AUTH },
        { "snapshot-delete", "Snapshots", "delete a snapshot (merging its data)", opts_snapshot_delete,
          verb_snapshot_delete, VERB_AUTH },
        { "snapshot-check-revert", "Snapshots", "would a revert go ahead? (a dry run)", opts_snapshot_check_revert,
          verb_snapshot_check_revert, VERB_JSON },
        { "snapshot-check-delete", "Snapshots", "would a delete go ahead, and the space it needs? (a dry run)",
          opts_snapshot_check_delete, verb_snapshot_check_delete, VERB_JSON },
        { "checkpoint-create", "Checkpoints", "create a checkpoint from <domaincheckpoint> XML", opts_checkpoint_create,
          verb_checkpoint_create, VERB_AUTH },
        { "checkpoint-create-as", "Checkpoints", "create a checkpoint described by options", opts_checkpoint_create_as,
          verb_checkpoint_create_as, VERB_AUTH },
        { "checkpoint-list", "Checkpoints", "list a domain's checkpoints (--tree: the tree)", opts_checkpoint_list,
          verb_checkpoint_list, VERB_JSON },
        { "checkpoint-info", "Checkpoints", "a checkpoint's properties", opts_checkpoint, verb_checkpoint_info,
          VERB_JSON },
        { "checkpoint-dumpxml", "Checkpoints", "a checkpoint's <domaincheckpoint> XML", opts_checkpoint_dumpxml,
          verb_checkpoint_dumpxml, VERB_AUTH },
        { "checkpoint-parent", "Checkpoints", "a checkpoint's parent", opts_checkpoint, verb_checkpoint_parent,
          VERB_JSON },
        { "checkpoint-delete", "Checkpoints", "delete a checkpoint (its bitmaps)", opts_checkpoint_delete,
          verb_checkpoint_delete, VERB_AUTH },
        { "backup-begin", "Backups", "start a backup: push to files, or pull over NBD", opts_backup_begin,
          verb_backup_begin, VERB_JSON | VERB_AUTH },
        { "backup-dumpxml", "Backups", "the running backup's <domainbackup> XML", opts_domain, verb_backup_dumpxml,
          0 },
        { "domjobabort", "Backups", "end the domain's backup (a pull backup ends so)", opts_domain, verb_domjobabort,
          VERB_AUTH },
        { "blockpull", "Block jobs", "pull the backing chain into the active image", opts_blockpull,
          verb_blockpull, VERB_AUTH },
        { "blockrebase", "Block jobs", "pull onto a new base, or copy the disk (--copy)", opts_blockrebase,
          verb_blockrebase, VERB_AUTH },
        { "blockcommit", "Block jobs", "commit overlays into a backing file", opts_blockcommit, verb_blockcommit,
          VERB_AUTH },
        { "blockcopy", "Block jobs", "copy (mirror) a disk to a new file", opts_blockcopy, verb_blockcopy, VERB_AUTH },
        { "blockjob", "Block jobs", "show or control a disk's block job", opts_blockjob, verb_blockjob,
          VERB_JSON | VERB_AUTH },
        { "jobs", "Block jobs", "every block job of the host, with progress", opts_jobs, verb_jobs, VERB_JSON },
        { "monitor", "Other", "print every signal of qsnapd as it comes", opts_monitor, verb_monitor, VERB_JSON },
        { "version", "Other", "qsnapctl's and qsnapd's versions", opts_none, verb_version, VERB_JSON },
        { "help", "Other", "help on qsnapctl or on a verb", opts_help, verb_help, VERB_NO_BUS },
};

const Verb *const verbs[] = {
        &verb_defs[0], &verb_defs[1], &verb_defs[2], &verb_defs[3], &verb_defs[4], &verb_defs[5],
        &verb_defs[6], &verb_defs[7], &verb_defs[8], &verb_defs[9], &verb_defs[10], &verb_defs[11],
        &verb_defs[12], &verb_defs[13], &verb_defs[14], &verb_defs[15], &verb_defs[16], &verb_defs[17],
        &verb_defs[18], &verb_defs[19], &verb_defs[20], &verb_defs[21], &verb_defs[22], &verb_defs[23],
        &verb_defs[24], &verb_defs[25], &verb_defs[26], &verb_defs[27], &verb_defs[28], &verb_defs[29],
        &verb_defs[30], &verb_defs[31], &verb_defs[32], &verb_defs[33], &verb_defs[34], &verb_defs[35],
        &verb_defs[36], &verb_defs[37], &verb_defs[38], &verb_defs[39], &verb_defs[40], &verb_defs[41],
        &verb_defs[42], &verb_defs[43], &verb_defs[44], NULL
};
_Static_assert(ELEMENTSOF(verb_defs) == 45, "verbs[] must list every verb_defs entry");

static const Verb *find_verb(const char *name) {
        for (size_t i = 0; verbs[i]; i++)
                if (streq(verbs[i]->name, name))
                        return verbs[i];
        return NULL;
}

static const OptionDef *find_option(const OptionDef *opts, const char *name, size_t *ret_index) {
        for (size_t i = 0; opts && opts[i].name; i++)
                if (streq(opts[i].name, name)) {
                        if (ret_index)
                                *ret_index = i;
                        return &opts[i];
                }
        return NULL;
}

static ssize_t verb_option_index(Ctx *c, const char *name) {
        size_t i;

        if (!c->verb || !find_option(c->verb->options, name, &i))
                return -1;
        return (ssize_t) i;
}

const char *opt(Ctx *c, const char *name) {
        ssize_t i = verb_option_index(c, name);
        char **v;

        assert(i >= 0); /* a verb asks only for its own options */
        v = c->values[i];
        return v ? v[strv_length(v) - 1] : NULL;
}

char **opt_all(Ctx *c, const char *name) {
        ssize_t i = verb_option_index(c, name);

        assert(i >= 0);
        return c->values[i];
}

bool flag(Ctx *c, const char *name) {
        return opt(c, name) != NULL;
}

bool flags_exclusive(Ctx *c, const char *a, const char *b) {
        if (!flag(c, a) || !flag(c, b))
                return true;
        usage_error("%s: --%s and --%s exclude each other", c->verb->name, a, b);
        return false;
}

int opt_size(Ctx *c, const char *name, uint64_t *ret) {
        const char *v = opt(c, name);
        int r;

        *ret = 0;
        if (!v)
                return 0;
        r = parse_size(v, true, ret);
        if (r < 0) {
                usage_error("--%s: '%s' is not a size (a number with an optional unit: 512K, 100M, 1.5GiB, 200MiB/s)",
                            name, v);
                return -EINVAL;
        }
        return 1;
}

int opt_number(Ctx *c, const char *name, uint64_t *ret) {
        const char *v = opt(c, name);
        char *end = NULL;

        *ret = 0;
        if (!v)
                return 0;
        errno = 0;
        *ret = strtoull(v, &end, 10);
        if (errno != 0 || !end || *end || v[0] == '-' || end == v) {
                usage_error("--%s: '%s' is not a non-negative integer", name, v);
                return -EINVAL;
        }
        return 1;
}

/* ---- help ---- */

static void print_option_line(const OptionDef *o, const char *short_name) {
        char left[96];

        if (o->kind == ARG_NONE)
                snprintf(left, sizeof(left), "%s--%s", short_name ?: "", o->name);
        else
                snprintf(left, sizeof(left), "%s--%s %s", short_name ?: "", o->name,
                         streq(o->name, "host")      ? "[USER@]HOST[:PORT]"
                         : streq(o->name, "machine") ? "CONTAINER"
                         : streq(o->name, "address") ? "ADDRESS"
                         : o->kind == ARG_SIZE || o->kind == ARG_BANDWIDTH ? "SIZE"
                         : o->kind == ARG_NUMBER                          ? "N"
                         : o->kind == ARG_FILE                            ? "FILE"
                                                                          : "NAME");
        printf("  %-30s %s\n", left, o->help);
}

static void print_verb_help(const Verb *v) {
        printf("Usage: qsnapctl %s", v->name);
        for (size_t i = 0; v->options[i].name; i++) {
                const OptionDef *o = &v->options[i];
                bool req = o->flags & OPT_REQUIRED;

                if (!(o->flags & OPT_POSITIONAL))
                        continue;
                printf(" %s[--%s] %s%s%s", req ? "" : "[", o->name, o->name, o->flags & OPT_REST ? "..." : "",
                       req ? "" : "]");
        }
        printf(" [OPTIONS]\n\n  %s\n", v->summary);
        if (v->options[0].name) {
                printf("\nOptions:\n");
                for (size_t i = 0; v->options[i].name; i++)
                        print_option_line(&v->options[i], NULL);
        }
        if (v->flags & VERB_JSON)
                printf("  %-30s %s\n", "--json", "print the data as JSON");
        printf("\nConnection options (--system, --user, -H, -M, --address, --no-ask-password): qsnapctl --help\n");
}

static void print_main_help(void) {
        const char *group = NULL;

        printf("Usage: qsnapctl [OPTIONS] VERB [ARGUMENTS]\n\n"
               "The command line of qsnapd, the D-Bus service for QEMU snapshots, checkpoints,\n"
               "backups and block jobs; verbs and options as virsh names them.\n\n"
               "Options:\n");
        print_option_line(&global_options[0], NULL);
        print_option_line(&global_options[1], NULL);
        print_option_line(&global_options[2], "-H, ");
        print_option_line(&global_options[3], "-M, ");
        for (size_t i = 4; global_options[i].name; i++)
                print_option_line(&global_options[i], streq(global_options[i].name, "help") ? "-h, " : NULL);
        for (size_t i = 0; verbs[i]; i++) {
                if (verbs[i]->flags & VERB_HIDDEN)
                        continue;
                if (!group || !streq(group, verbs[i]->group)) {
                        group = verbs[i]->group;
                        printf("\n%s:\n", group);
                }
                printf("  %-24s %s\n", verbs[i]->name, verbs[i]->summary);
        }
        printf("\nExit status: 0 success, 1 the operation failed, 2 usage error. See qsnapctl(1).\n");
}

static int verb_help(Ctx *c) {
        const char *name = opt(c, "command");
        const Verb *v;

        if (!name) {
                print_main_help();
                return EXIT_OK;
        }
        v = find_verb(name);
        if (!v) {
                usage_error("unknown verb '%s'", name);
                return EXIT_USAGE;
        }
        print_verb_help(v);
        return EXIT_OK;
}

/* ---- parsing ---- */

/* A global option at argv[*i]: consumes it (and its value). 1 when it was
 * one, 0 when not, < 0 on a usage error. */
static int parse_global(Ctx *c, int argc, char **argv, int *i) {
        const char *a = argv[*i], *value = NULL, *name;
        _cleanup_free_ char *key = NULL;
        const OptionDef *o;

        if (streq(a, "-h"))
                name = "help";
        else if (streq(a, "-H") || streq(a, "-M")) {
                name = a[1] == 'H' ? "host" : "machine";
                if (*i + 1 >= argc) {
                        usage_error("%s needs a value", a);
                        return -EINVAL;
                }
                value = argv[++*i];
        } else if ((a[1] == 'H' || a[1] == 'M') && a[0] == '-' && a[2]) {
                name = a[1] == 'H' ? "host" : "machine";
                value = a + 2;
        } else if (strncmp(a, "--", 2) == 0) {
                const char *eq = strchr(a, '=');
                key = eq ? strndup(a + 2, (size_t) (eq - a - 2)) : strdup(a + 2);
                if (!key)
                        return -ENOMEM;
                name = key;
                if (eq)
                        value = eq + 1;
        } else
                return 0;

        o = find_option(global_options, name, NULL);
        if (!o)
                return 0;
        if (o->kind == ARG_NONE && value) {
                usage_error("--%s takes no value", o->name);
                return -EINVAL;
        }
        if (o->kind != ARG_NONE && !value) {
                if (*i + 1 >= argc) {
                        usage_error("--%s needs a value", o->name);
                        return -EINVAL;
                }
                value = argv[++*i];
        }
        if (streq(o->name, "system"))
                c->transport = TRANSPORT_SYSTEM;
        else if (streq(o->name, "user"))
                c->transport = TRANSPORT_USER;
        else if (streq(o->name, "host") || streq(o->name, "machine") || streq(o->name, "address")) {
                c->transport = streq(o->name, "host")      ? TRANSPORT_REMOTE
                               : streq(o->name, "machine") ? TRANSPORT_MACHINE
                                                           : TRANSPORT_ADDRESS;
                if (isempty(value)) {
                        usage_error("--%s needs a non-empty value", o->name);
                        return -EINVAL;
                }
                if (free_and_strdup(&c->host, value) < 0)
                        return -ENOMEM;
        } else if (streq(o->name, "no-ask-password")) {
                c->ask_password = false;
                c->ask_password_set = true;
        } else if (streq(o->name, "json"))
                c->json = true;
        else if (streq(o->name, "help"))
                c->help = true;
        else if (streq(o->name, "version")) {
                printf("qsnapctl %s\n", PACKAGE_VERSION);
                exit(EXIT_OK);
        }
        ++*i;
        return 1;
}

static int set_value(Ctx *c, size_t index, const char *value) {
        const OptionDef *o = &c->verb->options[index];

        if (c->values[index] && !(o->flags & (OPT_MULTI | OPT_REST))) {
                usage_error("--%s given twice", o->name);
                return -EINVAL;
        }
        if (o->kind == ARG_NUMBER || o->kind == ARG_SIZE || o->kind == ARG_BANDWIDTH) {
                uint64_t dummy;
                if (parse_size(value, o->kind == ARG_BANDWIDTH, &dummy) < 0 ||
                    (o->kind == ARG_NUMBER && strspn(value, "0123456789") != strlen(value))) {
                        usage_error("--%s: '%s' is not %s", o->name, value,
                                    o->kind == ARG_NUMBER ? "a non-negative integer"
                                                          : "a size (a number with an optional unit: 512K, 100M, "
                                                            "1.5GiB, 200MiB/s)");
                        return -EINVAL;
                }
        }
        return strv_extend(&c->values[index], value);
}

static int parse_verb_args(Ctx *c, int argc, char **argv, int i) {
        bool only_positional = false;
        int r;

        while (i < argc) {
                const char *a = argv[i];

                if (!only_positional && streq(a, "--")) {
                        only_positional = true;
                        i++;
                        continue;
                }
                if (!only_positional && a[0] == '-' && a[1]) {
                        const char *eq, *value = NULL;
                        _cleanup_free_ char *key = NULL;
                        size_t index;
                        const OptionDef *o;

                        r = parse_global(c, argc, argv, &i);
                        if (r < 0)
                                return r;
                        if (r > 0)
                                continue;
                        if (strncmp(a, "--", 2) != 0) {
                                usage_error("unknown option '%s' (verb options are long: --name)", a);
                                return -EINVAL;
                        }
                        eq = strchr(a, '=');
                        key = eq ? strndup(a + 2, (size_t) (eq - a - 2)) : strdup(a + 2);
                        if (!key)
                                return -ENOMEM;
                        if (eq)
                                value = eq + 1;
                        o = find_option(c->verb->options, key, &index);
                        if (!o) {
                                usage_error("%s: unknown option '--%s'", c->verb->name, key);
                                return -EINVAL;
                        }
                        if (o->kind == ARG_NONE) {
                                if (value) {
                                        usage_error("--%s takes no value", key);
                                        return -EINVAL;
                                }
                                value = "1";
                        } else if (!value) {
                                if (i + 1 >= argc) {
                                        usage_error("--%s needs a value", key);
                                        return -EINVAL;
                                }
                                value = argv[++i];
                        }
                        r = set_value(c, index, value);
                        if (r < 0)
                                return r;
                        i++;
                        continue;
                }
                /* a positional word: the next named argument not given yet */
                {
                        size_t k;
                        bool placed = false;

                        for (k = 0; c->verb->options[k].name; k++) {
                                const OptionDef *o = &c->verb->options[k];
                                if (!(o->flags & OPT_POSITIONAL))
                                        continue;
                                if (c->values[k] && !(o->flags & OPT_REST))
                                        continue;
                                r = set_value(c, k, a);
                                if (r < 0)
                                        return r;
                                /* A command's words are its own: "-d" in it is no option. */
                                if (o->flags & OPT_REST)
                                        only_positional = true;
                                placed = true;
                                break;
                        }
                        if (!placed) {
                                usage_error("%s: unexpected argument '%s'", c->verb->name, a);
                                return -EINVAL;
                        }
                }
                i++;
        }
        for (size_t k = 0; !c->help && c->verb->options[k].name; k++)
                if ((c->verb->options[k].flags & OPT_REQUIRED) && !c->values[k]) {
                        usage_error("%s: missing %s (qsnapctl help %s)", c->verb->name, c->verb->options[k].name,
                                    c->verb->name);
                        return -EINVAL;
                }
        return 0;
}

static void ctx_done(Ctx *c) {
        for (size_t k = 0; k < c->n_options; k++)
                strv_free(c->values[k]);
        free(c->values);
        free(c->host);
        sd_bus_flush_close_unref(c->bus);
}

/* ---- completion: `qsnapctl __complete CWORD WORDS...` (the bash completion calls it) ---- */

static void complete_print(const char *cur, const char *s) {
        if (s && strncmp(s, cur, strlen(cur)) == 0)
                printf("%s\n", s);
}

static void complete_names(Ctx *c, ArgKind kind, const char *domain, const char *cur) {
        _cleanup_free_ char *dpath = NULL;
        _cleanup_strv_free_ char **paths = NULL;
        Props **a = NULL;
        size_t n = 0;
        sd_bus_error error = SD_BUS_ERROR_NULL;

        if (ctx_connect(c) < 0)
                return;
        if (kind == ARG_DOMAIN) {
                if (managed_objects(c, QSNAP_DOMAIN_IFACE, NULL, &a, &n) < 0)
                        return;
                for (size_t i = 0; i < n; i++)
                        complete_print(cur, props_str(a[i], "Name"));
                props_array_free(a, n);
                return;
        }
        if (!domain)
                return;
        {
                _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
                const char *p;
                if (sd_bus_call_method(c->bus, QSNAP_BUS_NAME, QSNAP_ROOT_PATH, QSNAP_MANAGER_IFACE, "GetDomain",
                                       &error, &reply, "s", domain) < 0 ||
                    sd_bus_message_read(reply, "o", &p) < 0 || !(dpath = strdup(p))) {
                        sd_bus_error_free(&error);
                        return;
                }
        }
        if (kind == ARG_DISK) {
                _cleanup_(props_freep) Props *p = NULL;
                json_object *disks;
                if (props_get_all(c, dpath, QSNAP_DOMAIN_IFACE, &p) < 0)
                        return;
                disks = props_json(p, "Disks");
                for (size_t i = 0; disks && i < json_object_array_length(disks); i++)
                        complete_print(cur, json_object_get_string(
                                                    json_object_array_get_idx(json_object_array_get_idx(disks, i), 0)));
                return;
        }
        if (get_property_strv(c, dpath, QSNAP_DOMAIN_IFACE, kind == ARG_SNAPSHOT ? "Snapshots" : "Checkpoints",
                              &paths) < 0)
                return;
        for (size_t i = 0; paths && paths[i]; i++) {
                _cleanup_free_ char *name = path_last_name(paths[i]);
                complete_print(cur, name);
        }
}

static int run_complete(int argc, char **argv) {
        Ctx c = { .transport = TRANSPORT_SYSTEM, .ask_password = false };
        int cword, nwords, i;
        char **words;
        const char *cur, *prev_opt = NULL;
        const Verb *v = NULL;
        _cleanup_strv_free_ char **given = NULL; /* option names given (for positional slots) */
        _cleanup_free_ char *domain = NULL, *inline_key = NULL;

        if (argc < 2)
                return EXIT_OK;
        cword = atoi(argv[0]);
        words = argv + 1;
        nwords = argc - 1;
        if (cword < 1 || cword > nwords)
                return EXIT_OK;
        cur = cword < nwords ? words[cword] : "";
        if (streq(cur, "="))
                cur = "";
        /* "--opt=val": complete the value of --opt */
        if (strncmp(cur, "--", 2) == 0 && strchr(cur, '=')) {
                inline_key = strndup(cur + 2, (size_t) (strchr(cur, '=') - cur - 2));
                if (!inline_key)
                        return EXIT_FAILED;
                cur = strchr(cur, '=') + 1;
        }
        /* Walk the words before the cursor. */
        for (i = 1; i < cword; i++) {
                const char *w = words[i];
                const OptionDef *o = NULL;
                _cleanup_free_ char *key = NULL;
                bool inline_value;

                if (w[0] == '-' && w[1]) {
                        if (streq(w, "-H") || streq(w, "-M")) {
                                if (i + 1 < cword) {
                                        c.transport = w[1] == 'H' ? TRANSPORT_REMOTE : TRANSPORT_MACHINE;
                                        free_and_strdup(&c.host, words[i + 1]);
                                        i++;
                                } else
                                        prev_opt = "host";
                                continue;
                        }
                        key = strdup(w + (w[1] == '-' ? 2 : 1));
                        if (!key)
                                return EXIT_FAILED;
                        inline_value = strchr(key, '=') != NULL;
                        if (inline_value)
                                *strchr(key, '=') = '\0';
                        if (inline_value && streq(key, "domain"))
                                free_and_strdup(&domain, strchr(w, '=') + 1);
                        if (i + 1 < cword && streq(words[i + 1], "=")) { /* bash split "--opt=value" */
                                inline_value = true;
                                if (i + 2 < cword) {
                                        if (streq(key, "domain"))
                                                free_and_strdup(&domain, words[i + 2]);
                                        i += 2;
                                } else {
                                        prev_opt = NULL;
                                        i++;
                                        o = v ? find_option(v->options, key, NULL) : NULL;
                                        if (!o)
                                                o = find_option(global_options, key, NULL);
                                        if (o && o->kind != ARG_NONE)
                                                prev_opt = o->name;
                                        continue;
                                }
                        }
                        o = v ? find_option(v->options, key, NULL) : NULL;
                        if (o) {
                                strv_extend(&given, o->name);
                                if (o->kind != ARG_NONE && !inline_value) {
                                        if (i + 1 < cword) {
                                                if (streq(o->name, "domain"))
                                                        free_and_strdup(&domain, words[i + 1]);
                                                i++;
                                        } else
                                                prev_opt = o->name;
                                }
                                continue;
                        }
                        o = find_option(global_options, key, NULL);
                        if (o && o->kind != ARG_NONE) {
                                const char *val = NULL;
                                if (inline_value)
                                        val = strchr(w, '=') ? strchr(w, '=') + 1 : words[i];
                                else if (i + 1 < cword)
                                        val = words[++i];
                                else {
                                        prev_opt = o->name;
                                        continue;
                                }
                                c.transport = streq(o->name, "host")      ? TRANSPORT_REMOTE
                                              : streq(o->name, "machine") ? TRANSPORT_MACHINE
                                                                          : TRANSPORT_ADDRESS;
                                free_and_strdup(&c.host, val);
                        } else if (o && streq(o->name, "user"))
                                c.transport = TRANSPORT_USER;
                        continue;
                }
                if (!v) {
                        v = find_verb(w);
                        if (!v)
                                return EXIT_OK;
                        c.verb = v;
                        continue;
                }
                /* a positional word of the verb */
                {
                        size_t k, seen = 0;
                        for (k = 0; v->options[k].name; k++) {
                                const OptionDef *po = &v->options[k];
                                if (!(po->flags & OPT_POSITIONAL) || strv_contains((const char *const *) given, po->name))
                                        continue;
                                if (seen++ == 0) {
                                        if (streq(po->name, "domain"))
                                                free_and_strdup(&domain, w);
                                        if (!(po->flags & OPT_REST))
                                                strv_extend(&given, po->name);
                                        break;
                                }
                        }
                }
        }
        if (inline_key)
                prev_opt = inline_key;
        if (!v) {
                if (prev_opt)
                        goto done;
                if (cur[0] == '-') {
                        for (size_t k = 0; global_options[k].name; k++) {
                                _cleanup_free_ char *s = strjoin("--", global_options[k].name);
                                complete_print(cur, s);
                        }
                } else
                        for (size_t k = 0; verbs[k]; k++)
                                if (!(verbs[k]->flags & VERB_HIDDEN))
                                        complete_print(cur, verbs[k]->name);
                goto done;
        }
        {
                const OptionDef *target = NULL;

                if (prev_opt) {
                        target = find_option(v->options, prev_opt, NULL);
                        if (!target) /* a global option's value: nothing to offer */
                                goto done;
                } else if (cur[0] == '-') {
                        for (size_t k = 0; v->options[k].name; k++) {
                                _cleanup_free_ char *s = strjoin("--", v->options[k].name);
                                if (!strv_contains((const char *const *) given, v->options[k].name) ||
                                    (v->options[k].flags & OPT_MULTI))
                                        complete_print(cur, s);
                        }
                        for (size_t k = 0; global_options[k].name; k++) {
                                _cleanup_free_ char *s = strjoin("--", global_options[k].name);
                                if (!streq(global_options[k].name, "json") || (v->flags & VERB_JSON))
                                        complete_print(cur, s);
                        }
                        goto done;
                } else {
                        for (size_t k = 0; v->options[k].name; k++) {
                                const OptionDef *po = &v->options[k];
                                if (!(po->flags & OPT_POSITIONAL) ||
                                    (strv_contains((const char *const *) given, po->name) && !(po->flags & OPT_REST)))
                                        continue;
                                target = po;
                                break;
                        }
                }
                if (!target)
                        goto done;
                if (streq(target->name, "format")) { /* blockcopy's two formats */
                        complete_print(cur, "qcow2");
                        complete_print(cur, "raw");
                        goto done;
                }
                switch (target->kind) {
                case ARG_FILE:
                        printf("__files__\n");
                        break;
                case ARG_VERB:
                        for (size_t k = 0; verbs[k]; k++)
                                complete_print(cur, verbs[k]->name);
                        break;
                case ARG_DOMAIN:
                case ARG_SNAPSHOT:
                case ARG_CHECKPOINT:
                case ARG_DISK:
                        complete_names(&c, target->kind, domain, cur);
                        break;
                default:
                        break;
                }
        }
done:
        ctx_done(&c);
        return EXIT_OK;
}

int main(int argc, char **argv) {
        Ctx c = { .transport = TRANSPORT_SYSTEM };
        int i = 1, r;

        setlocale(LC_ALL, "");
        setvbuf(stdout, NULL, _IOLBF, 0);
        error_hints_set_command_line(argv);
        if (argc >= 2 && streq(argv[1], "__complete"))
                return run_complete(argc - 2, argv + 2);

        c.ask_password = isatty(STDIN_FILENO);
        c.is_tty = isatty(STDOUT_FILENO);
        while (i < argc && argv[i][0] == '-' && argv[i][1]) {
                r = parse_global(&c, argc, argv, &i);
                if (r < 0) {
                        ctx_done(&c);
                        return EXIT_USAGE;
                }
                if (r == 0) {
                        usage_error("unknown option '%s'", argv[i]);
                        ctx_done(&c);
                        return EXIT_USAGE;
                }
        }
        if (i >= argc) {
                if (c.help) {
                        print_main_help();
                        ctx_done(&c);
                        return EXIT_OK;
                }
                usage_error("no verb given");
                ctx_done(&c);
                return EXIT_USAGE;
        }
        c.verb = find_verb(argv[i]);
        if (!c.verb) {
                usage_error("unknown verb '%s'", argv[i]);
                ctx_done(&c);
                return EXIT_USAGE;
        }
        for (c.n_options = 0; c.verb->options[c.n_options].name; c.n_options++)
                ;
        c.values = new0(char **, c.n_options);
        if (!c.values) {
                fail("Out of memory.");
                return EXIT_FAILED;
        }
        r = parse_verb_args(&c, argc, argv, i + 1);
        if (c.help) {
                print_verb_help(c.verb);
                ctx_done(&c);
                return EXIT_OK;
        }
        if (r < 0) {
                ctx_done(&c);
                return r == -ENOMEM ? EXIT_FAILED : EXIT_USAGE;
        }
        if (c.json && !(c.verb->flags & VERB_JSON)) {
                usage_error("%s prints no data: --json is for the verbs that do (qsnapctl help)", c.verb->name);
                ctx_done(&c);
                return EXIT_USAGE;
        }
        if (!(c.verb->flags & VERB_NO_BUS) && ctx_connect(&c) < 0) {
                ctx_done(&c);
                return EXIT_FAILED;
        }
        r = c.verb->run(&c);
        ctx_done(&c);
        return r;
}
