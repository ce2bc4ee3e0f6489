/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qsnapctl: a virsh-like command line for qsnapd on sd-bus. This header is
 * what the verb files share: the verb and option tables (one table drives
 * parsing, --help, the man page check and bash completion), the parsed
 * command line, the bus connection, and the output helpers (tables, JSON,
 * units, errors). Exit status: 0 success, 1 the operation failed, 2 usage.
 */
#pragma once

#include <json-c/json.h>
#include <libxml/tree.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-bus.h>

#include "util/util.h"

#define QSNAP_BUS_NAME "org.example.Snapshot1"
#define QSNAP_ROOT_PATH "/org/example/Snapshot1"
#define QSNAP_MANAGER_IFACE "org.example.Snapshot1.Manager"
#define QSNAP_DOMAIN_IFACE "org.example.Snapshot1.Domain"
#define QSNAP_SNAPSHOT_IFACE "org.example.Snapshot1.Snapshot"
#define QSNAP_CHECKPOINT_IFACE "org.example.Snapshot1.Checkpoint"
#define QSNAP_JOB_IFACE "org.example.BlockJob1"
#define QSNAP_ERROR_PREFIX "org.example.Snapshot1.Error."

enum {
        EXIT_OK = 0,
        EXIT_FAILED = 1, /* the operation failed (the error is printed) */
        EXIT_USAGE = 2,  /* bad command line */
};

/* What an option's value is: drives parsing checks and completion. */
typedef enum ArgKind {
        ARG_NONE,       /* a switch */
        ARG_STRING,
        ARG_DOMAIN,     /* a domain name */
        ARG_SNAPSHOT,   /* a snapshot name of the command's domain */
        ARG_CHECKPOINT, /* a checkpoint name of the command's domain */
        ARG_DISK,       /* a disk target of the command's domain (or a path) */
        ARG_FILE,
        ARG_SIZE,       /* bytes, with units: 100M, 1.5GiB */
        ARG_BANDWIDTH,  /* bytes per second, with units: 200MiB/s */
        ARG_NUMBER,     /* a plain non-negative integer */
        ARG_VERB,       /* a verb name (help) */
} ArgKind;

enum {
        OPT_POSITIONAL = 1 << 0, /* may also be given by position, in table order */
        OPT_REQUIRED = 1 << 1,
        OPT_MULTI = 1 << 2,      /* may be repeated; every value is kept */
        OPT_REST = 1 << 3,       /* positional: takes every remaining word */
};

typedef struct OptionDef {
        const char *name; /* long name without "--" */
        ArgKind kind;
        unsigned flags;
        const char *help;
} OptionDef;

typedef struct Ctx Ctx;

enum {
        VERB_JSON = 1 << 0,    /* prints data: --json is allowed */
        VERB_NO_BUS = 1 << 1,  /* needs no connection */
        VERB_AUTH = 1 << 2,    /* may need polkit: start the terminal agent */
        VERB_HIDDEN = 1 << 3,  /* not listed in help */
};

typedef struct Verb {
        const char *name;
        const char *group;
        const char *summary;
        const OptionDef *options; /* terminated by { NULL } */
        int (*run)(Ctx *c);
        unsigned flags;
} Verb;

typedef enum Transport {
        TRANSPORT_SYSTEM,
        TRANSPORT_USER,
        TRANSPORT_REMOTE,
        TRANSPORT_MACHINE,
        TRANSPORT_ADDRESS,
} Transport;

struct Ctx {
        /* global options */
        Transport transport;
        char *host;      /* -H, -M, --address argument */
        bool ask_password;
        bool ask_password_set;
        bool json;
        bool help;

        const Verb *verb;
        char ***values;  /* per option of the verb: its values (NULL: not given) */
        size_t n_options;

        sd_bus *bus;
        bool is_tty;     /* stdout is a terminal */
};

/* All verbs, in help order; NULL-terminated. */
extern const Verb *const verbs[];
extern const OptionDef global_options[];

/* Parsed values. opt(): the last value given, or NULL. opt_all(): every one. */
const char *opt(Ctx *c, const char *name);
char **opt_all(Ctx *c, const char *name);
bool flag(Ctx *c, const char *name);
/* False, with a usage error, when both options are given. */
bool flags_exclusive(Ctx *c, const char *a, const char *b);
/* Parses a size or bandwidth option; 0 when not given. -EINVAL printed. */
int opt_size(Ctx *c, const char *name, uint64_t *ret);
int opt_number(Ctx *c, const char *name, uint64_t *ret);

/* Errors and messages. */
void usage_error(const char *fmt, ...) _printf_(1, 2);
void fail(const char *fmt, ...) _printf_(1, 2);
/* Prints a bus error as "Name (meaning): message"; returns EXIT_FAILURE. */
int print_bus_error(const sd_bus_error *e, int r);
const char *error_meaning(const char *short_name);
/* print_bus_error() names the qsnapctl option of each bus flag a message
 * names, but not the ones this command line (NULL-terminated) gives. */
void error_hints_set_command_line(char **argv);

/* Connection and calls (the bus is connected before run()). */
int ctx_connect(Ctx *c);
/* Calls a method of qsnapd; on failure prints the error and returns < 0. */
int call(Ctx *c, sd_bus_message **ret_reply, const char *path, const char *iface, const char *member,
         const char *types, ...);
int get_property_string(Ctx *c, const char *path, const char *iface, const char *name, char **ret);
int get_property_strv(Ctx *c, const char *path, const char *iface, const char *name, char ***ret);
int domain_path(Ctx *c, const char *name, char **ret_path);
int snapshot_path(Ctx *c, const char *domain_path, const char *name, char **ret_path);
int checkpoint_path(Ctx *c, const char *domain_path, const char *name, char **ret_path);
/* Prints GetXMLDesc(flags) of the object at path. Returns an exit status. */
int print_object_xml(Ctx *c, const char *path, const char *iface, uint64_t flags);
/* The name at the end of an object path, decoded ("my_20vm" → "my vm"). */
char *path_last_name(const char *path);
/* The same, but NULL for "/" (no parent, no current snapshot). */
char *path_name_or_null(const char *path);

/* Properties of one object, read from a{sv} (GetAll or GetManagedObjects). */
typedef struct Props {
        char *path;
        char **keys;
        json_object *values; /* name → JSON value (strings, numbers, arrays) */
} Props;
Props *props_free(Props *p);
DEFINE_TRIVIAL_CLEANUP_FUNC(Props *, props_free);
int props_read(sd_bus_message *m, Props *p); /* at an a{sv} */
int props_get_all(Ctx *c, const char *path, const char *iface, Props **ret);
const char *props_str(const Props *p, const char *name);
uint64_t props_u64(const Props *p, const char *name);
bool props_bool(const Props *p, const char *name);
json_object *props_json(const Props *p, const char *name);

/* Every object of one interface from GetManagedObjects, sorted by path. */
int managed_objects(Ctx *c, const char *iface, const char *path_prefix, Props ***ret, size_t *ret_n);
void props_array_free(Props **a, size_t n);
/* The rest of m's current container (a signal's arguments) as a JSON array. */
int read_all_values(sd_bus_message *m, json_object **ret);

/* Units. */
int parse_size(const char *s, bool bandwidth, uint64_t *ret);
char *format_size(uint64_t bytes);           /* "1.5 GiB", "512 B" */
char *format_rate(uint64_t bytes_per_sec);    /* "200 MiB/s" */
char *format_duration(uint64_t seconds);      /* "1:05", "2:03:04" */
char *format_time(uint64_t epoch);            /* virsh's "2024-01-02 10:00:00 +0000" */

/* Tables, aligned, virsh's style (a leading space, a dashed rule). */
typedef struct Table Table;
Table *table_new(const char *first, ...) _sentinel_;
Table *table_free(Table *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(Table *, table_free);
int table_add(Table *t, const char *first, ...); /* one cell per column; NULL = "" */
void table_print(Table *t, FILE *f);

/* JSON output: pretty-printed, one document, to stdout. */
void json_print(json_object *o);
json_object *json_str(const char *s); /* NULL → JSON null */
/* One object from key, value pairs (values taken; NULL-terminated), printed. */
void json_print_fields(const char *key, json_object *value, ...) _sentinel_;

/* Reads a file, or stdin for "-", whole. */
int read_input(const char *path, char **ret);
char *xml_escape(const char *s);
/* An XML document to stdout, ending in a newline. */
void print_xml_text(const char *xml);
/* Reading qsnapd's XML: parsed without network, DTD or error output (NULL
 * when not well-formed); the first element child of n named name (n may be
 * NULL), the next sibling element of that name, an attribute (malloc'ed). */
xmlDocPtr xml_parse(const char *xml);
xmlNodePtr xml_child(xmlNodePtr n, const char *name);
xmlNodePtr xml_next(xmlNodePtr n, const char *name);
char *xml_attr(xmlNodePtr n, const char *name);
/* Appends printf output to *buf (NULL: starts it). */
int strappendf(char **buf, const char *fmt, ...) _printf_(2, 3);

/* virsh's option lists, "vda,snapshot=external,file=/a,,b" (",," is a
 * literal comma): values[k] is the value of keys[k] (NULL-terminated), NULL
 * when not given; a first item without '=' is the value of bare_first
 * (NULL: not allowed). Values point into *ret_items. -EINVAL printed as a
 * usage error naming --option. */
int parse_option_list(const char *option, const char *spec, const char *const *keys, const char *bare_first,
                      char ***ret_items, const char **values);

/* ---- shared by the snapshot and checkpoint verbs (cli-moment.c) ---- */

/* The object of paths among a (as managed_objects() returns them), or NULL. */
Props *props_find(Props **a, size_t n, const char *path);
/* The XML of option (a file, "-": standard input), or dflt when the option
 * is not given; failures printed. Returns an exit status. */
int read_xml_option(Ctx *c, const char *option, const char *dflt, char **ret);
/* Domain.<member>(xml, flags) → o, and "Domain <what> NAME created". */
int moment_create(Ctx *c, const char *dpath, const char *member, const char *what, const char *xml, uint64_t flags,
                  bool redefine);
/* The same from the XML of --xmlfile (a file, "-": standard input; none:
 * dflt, which --redefine cannot use). */
int moment_create_from_file(Ctx *c, const char *member, const char *what, const char *dflt, uint64_t flags,
                            bool redefine);
/* The -as verbs: <root> with --name, --description, extra (may be NULL)
 * and <disks> from every --diskspec through diskspec_xml (-EINVAL: a usage
 * error, printed); printed with --print-xml, else created. */
int moment_create_as(Ctx *c, const char *root, const char *member, const char *what, const char *extra,
                     int (*diskspec_xml)(const char *spec, char **buf), uint64_t flags);
/* The Parent of the object at path: its name, or {name, parent} as JSON. */
int moment_print_parent(Ctx *c, const char *path, const char *iface, const char *what);
/* Delete's flags from --children, --metadata, --children-only (the same
 * values for snapshots and checkpoints). */
uint64_t moment_delete_flags(Ctx *c);
/* "Domain snapshot s1 deleted" (children deleted, and its descendants …) */
void moment_print_deleted(const char *what, const char *name, uint64_t flags);
/* paths (in listing order) drawn as virsh draws a tree, parents from the
 * Parent property of their objects in a. */
void moment_tree_print(char *const *paths, Props **a, size_t n);
/* ListChildren's flag for all descendants (1 for snapshots and checkpoints). */
#define LIST_DESCENDANTS 1
/* The objects a list verb shows, in order: Domain.<list_member>(flags), or
 * with from (an object path) its ListChildren — all below it with
 * descendants or for a tree, which also starts with from itself. */
int moment_list_paths(Ctx *c, const char *dpath, const char *iface, const char *list_member, const char *from,
                      uint64_t flags, bool descendants, bool tree, char ***ret);
/* The properties of the object at path and how many descendants it has
 * (ListChildren with DESCENDANTS). */
int moment_info_read(Ctx *c, const char *path, const char *iface, Props **ret, size_t *ret_descendants);
/* The info verbs' lines: Name, Domain, Current; and Creation Time,
 * Description, Parent, Children, Descendants. */
void moment_info_print_head(Ctx *c, const Props *p);
void moment_info_print_tree(const Props *p, size_t descendants);
/* The names of the objects an "ao" property lists, as a JSON array. */
json_object *props_names_json(const Props *p, const char *name);
/* One name per line. */
void moment_print_names(char *const *paths);

/* Verb entry points. */
int verb_list(Ctx *c);
int verb_define(Ctx *c);
int verb_undefine(Ctx *c);
int verb_start(Ctx *c);
int verb_stop(Ctx *c);
int verb_console(Ctx *c);
int verb_suspend(Ctx *c);
int verb_resume(Ctx *c);
int verb_domstate(Ctx *c);
int verb_dominfo(Ctx *c);
int verb_dumpxml(Ctx *c);
int verb_domblklist(Ctx *c);
int verb_qemu_monitor_command(Ctx *c);
int verb_version(Ctx *c);

int verb_snapshot_create(Ctx *c);
int verb_snapshot_create_as(Ctx *c);
int verb_snapshot_list(Ctx *c);
int verb_snapshot_info(Ctx *c);
int verb_snapshot_dumpxml(Ctx *c);
int verb_snapshot_current(Ctx *c);
int verb_snapshot_parent(Ctx *c);
int verb_snapshot_revert(Ctx *c);
int verb_snapshot_delete(Ctx *c);
int verb_snapshot_check_revert(Ctx *c);
int verb_snapshot_check_delete(Ctx *c);

int verb_checkpoint_create(Ctx *c);
int verb_checkpoint_create_as(Ctx *c);
int verb_checkpoint_list(Ctx *c);
int verb_checkpoint_info(Ctx *c);
int verb_checkpoint_dumpxml(Ctx *c);
int verb_checkpoint_parent(Ctx *c);
int verb_checkpoint_delete(Ctx *c);
int verb_backup_begin(Ctx *c);
int verb_backup_dumpxml(Ctx *c);
int verb_domjobabort(Ctx *c);

int verb_blockpull(Ctx *c);
int verb_blockrebase(Ctx *c);
int verb_blockcommit(Ctx *c);
int verb_blockcopy(Ctx *c);
int verb_blockjob(Ctx *c);
int verb_jobs(Ctx *c);

int verb_monitor(Ctx *c);

/* Block job waiting (verbs-job.c): follows the job at path from its
 * signals (subscribed before the job started: job_watch_begin()). */
typedef struct JobWatch JobWatch;
int job_watch_begin(Ctx *c, const char *domain_path, JobWatch **ret);
JobWatch *job_watch_free(JobWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(JobWatch *, job_watch_free);
typedef enum JobEnd {
        JOB_END_WAIT,   /* wait until the job has ended */
        JOB_END_READY,  /* stop waiting when it is ready (leave it mirroring) */
        JOB_END_PIVOT,  /* pivot when ready, wait for the end */
        JOB_END_FINISH, /* abort when ready (keep the copy), wait for the end */
        JOB_END_SERVE,  /* it serves until aborted (a pull backup): Ctrl-C or --timeout ends it, a success */
} JobEnd;
/* Waits for the job; draws progress (verbose: also without a terminal).
 * timeout_sec: abort after that long (0: never). label: "Block Commit".
 * Returns an exit status. */
int job_wait(Ctx *c, JobWatch *w, const char *job_path, const char *label, JobEnd end, bool verbose,
             uint64_t timeout_sec, bool abort_async);

/* Starting a job from a verb with the wait options (--wait, --verbose,
 * --timeout, --async): wait_options() reads them (can_ready: the job
 * becomes ready instead of ending), new_domain_call() prepares the
 * domain's method call, run_job() makes it and follows the job. */
typedef struct JobStart {
        const char *label;
        JobEnd end_mode;
        bool wait;
        /* Called once the job runs, before the wait (may be NULL); may
         * change how the wait ends. */
        void (*started)(Ctx *c, const char *dpath, const char *job, struct JobStart *s);
        const char *request;    /* the document the call sent (for started), or NULL */
} JobStart;
int wait_options(Ctx *c, JobStart *s, bool can_ready);
int new_domain_call(Ctx *c, const char *member, char **ret_dpath, sd_bus_message **ret);
int run_job(Ctx *c, const char *dpath, JobStart *s, sd_bus_message *m);
