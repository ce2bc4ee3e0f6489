/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The image files a domain's QEMU holds, by descriptor (issue #10 §3).
 * qsnapd opens every image itself (image_open_regular(): no symbolic link
 * as the last component, regular files only, never a blocking open) and
 * hands QEMU its descriptors in an fd set of its own — one read-write and
 * one read-only, QEMU takes the one whose mode fits each (re)open: a
 * backing file is read-only until a commit reopens it read-write, and
 * read-only again afterwards (which flushes it) — naming the file
 * "/dev/fdset/N" in -blockdev and blockdev-add. Their file nodes say
 * "locking": "off": QEMU's image locks live on the open file, which the
 * set keeps open after QEMU let go of a descriptor, so the locks of one
 * mode would stay and refuse the next reopen ('Failed to get "write"
 * lock'; docs/decisions.md).
 * QEMU thus opens no path itself, and no image header can redirect it.
 *
 * What QEMU reports as a node's file is then "/dev/fdset/N" or json:{…};
 * which file a node is, qsnapd knows from its own map (node → file, fd
 * set), kept in the runtime folder so a restarted qsnapd knows it too,
 * and never learned back from QEMU. Attached domains (QEMU started
 * elsewhere) open their own files: for them QEMU's names are used. No
 * D-Bus in here.
 */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>

#include "core/domain.h"
#include "qemu/qmp-commands.h"

typedef struct QemuFile {
        char *node;     /* the format node QEMU knows the file by */
        char *path;     /* the file qsnapd opened */
        unsigned fdset; /* the fd set holding its descriptors */
} QemuFile;

/* Opens path for QEMU, through the path gate of domain d (core/gate.h;
 * d NULL: a file of qsnapd's own runtime folder, image_open_regular()):
 * *ret_rw read-write (-EBADF when readonly or the file cannot be written,
 * a shared base), reopened through the read-only descriptor, not by name;
 * *ret_ro read-only; both blocking, close-on-exec, numbered 10 or above
 * (QEMU's child dup2()s below). On failure *ret_message says why. */
int qemu_file_open_pair(Domain *d, const char *path, bool readonly, int *ret_rw, int *ret_ro, char **ret_message);

/* A device file the (host-admin-approved) definition names, opened for
 * QEMU (issue #10 §3): its folder walked from "/" without following a
 * symbolic link in any component, the file itself never a link and only
 * a regular file (looked at before it is opened: no device or FIFO is
 * ever opened). write false: read-only (CD-ROM image, kernel, initrd);
 * true: write-only, created 0600 when missing (a file serial or console;
 * QEMU truncates or appends through its copy as <source append> says).
 * The descriptor is blocking, close-on-exec, numbered 10 or above. On
 * failure *ret_message says why ("Could not open '…': …"). */
int qemu_file_open_device(const char *path, bool write, int *ret_fd, char **ret_message);

/* The map. domain_files_add() records (and saves) that node is path in
 * set fdset; an entry for the same node is replaced. */
int domain_files_add(Domain *d, const char *node, const char *path, unsigned fdset);
/* A freshly launched QEMU's map: exactly files. */
int domain_files_set(Domain *d, const QemuFile *files, size_t n);
const char *domain_files_path(Domain *d, const char *node);
/* The node of path (the latest one added for it), NULL when none. */
const char *domain_files_node(Domain *d, const char *path);
/* A set number not used yet in this QEMU. */
unsigned domain_files_new_set(Domain *d);
/* QEMU is gone: the map goes (and its file). */
void domain_files_clear(Domain *d);
/* At attach: the map a previous qsnapd saved. */
int domain_files_load(Domain *d);

/* Passes path to the running QEMU: opens it, sends both descriptors with
 * add-fd into a new set and records it as node's file. *ret_filename:
 * the name to give blockdev-add ("/dev/fdset/N"). Commands go out in
 * order, so a blockdev-add sent right after finds the set. */
int domain_files_pass(Domain *d, const char *node, const char *path, bool readonly, char **ret_filename,
                      char **ret_message);
/* blockdev-del of node, then (once QEMU let go of it) remove-fd of its
 * set and the map entry. Errors are logged only. */
void domain_node_del(Domain *d, const char *node);
/* The node's set goes without a blockdev-del (its blockdev-add failed). */
void domain_files_forget(Domain *d, const char *node);

/* The file of a query-named-block-nodes entry: from the map (by node
 * name), or QEMU's name for a domain qsnapd did not launch. */
int domain_node_file(Domain *d, json_object *entry, char **ret);
/* Replaces each parsed node's file (qmp_parse_named_nodes(): format
 * nodes and their protocol children alike) by the file qsnapd passed in
 * that fd set; NULL for a name qsnapd did not give (an attached domain's
 * own names stay). */
int domain_nodes_resolve_files(Domain *d, QmpNode *nodes, size_t n);
/* The format node of file among a query-named-block-nodes reply: 1 and
 * *ret_node (borrowed from the reply or the map) when found, else 0. */
int domain_find_format_node(Domain *d, json_object *nodes, const char *file, const char **ret_node);

/* migrate-incoming from memory_file, which qsnapd opens (a regular file,
 * no symbolic link) and passes as a descriptor (getfd, "fd:"): QEMU opens
 * nothing and runs no shell. -errno when the file cannot be opened. */
int domain_send_incoming(Domain *d, const char *memory_file, qmp_reply_func_t cb, void *userdata);
