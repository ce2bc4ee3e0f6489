/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Launching a domain's QEMU (core/domain-launch.c), for core/domain.c's
 * Start: each step on its own, so Start can undo what it did when a later
 * one fails. No D-Bus in here.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "core/domain.h"
#include "core/qemu-files.h"

/* What a launch hands QEMU: the descriptors it inherits and which node
 * is which file (core/qemu-files.h). */
typedef struct LaunchFiles {
        int *fds;
        size_t n_fds;
        QemuFile *files;
        size_t n_files;
        unsigned next_set;
        /* Per interface of the definition (n_nets of them): the tap qsnapd
         * made for it (its descriptor is also in fds) and the tap's name;
         * -1 and NULL for one QEMU connects itself. */
        int *net_fds;
        char **net_names;
        size_t n_nets;
} LaunchFiles;
void launch_files_done(LaunchFiles *lf);

/* Whom QEMU runs as (--qemu-user=): resolved in qsnapd, applied in the
 * child before exec (setgroups, setresgid, setresuid: no capability is
 * left). drop false: as qsnapd. */
typedef struct QemuCreds {
        bool drop;
        uid_t uid;
        gid_t gid;
        gid_t *groups;
        int n_groups;
} QemuCreds;
/* -QSNAP_E_QEMU_FAILED with *ret_message when the user does not exist. */
int domain_launch_creds(Domain *d, QemuCreds *ret, char **ret_message);
void qemu_creds_done(QemuCreds *c);
/* The folder QEMU creates its own sockets in (agent, graphics, consoles):
 * <runtime>/qemu, owned by QEMU's user, when QEMU runs as one (qsnapd's
 * runtime folder is root's alone); else the runtime folder. Made here. */
int domain_launch_qemu_dir(Domain *d, const QemuCreds *creds);

/* domain_launch_creds(), then the folders a start writes to (runtime,
 * logs, domain_launch_qemu_dir()); *ret_message says which failed. */
int domain_launch_prepare_dirs(Domain *d, QemuCreds *creds, char **ret_message);

/* Gone or a zombie (PID 1 may take a while to reap a daemonized QEMU):
 * through pidfd when >= 0 (a QEMU of another user may be hidden in /proc),
 * else /proc/PID/stat. */
bool domain_launch_process_gone(pid_t pid, int pidfd);

/* QEMU's command line for def: -S, the QMP socket as fd 3, -incoming
 * defer when incoming, every disk's chain opened into lf (as -add-fd and
 * explicit -blockdev nodes). -QSNAP_E_QEMU_FAILED with *ret_message
 * ("Could not open '…': …") when an image cannot be opened. Transient
 * overlays must exist already. */
int domain_launch_argv(Domain *d, const DomainDef *def, bool incoming, LaunchFiles *lf, char ***ret,
                       char **ret_message);
/* The command line of a shut-off domain's paused QEMU (core/offline-qemu.h):
 * -machine none -nodefaults -S, QMP as fd 3, -sandbox as for the domain's
 * QEMU, every disk's chain (its images, never a transient overlay) opened
 * read-only into lf as explicit -blockdev nodes named as when it runs. */
int domain_launch_offline_argv(Domain *d, LaunchFiles *lf, char ***ret, char **ret_message);
/* Removes what a launch left in the runtime dir (monitor socket, pid
 * file, live XML, sockets, transient overlays) of the current definition. */
void domain_launch_remove_runtime_files(Domain *d);
/* The live definition's XML once lf holds what the launch made: each
 * tap's name in its interface's <target dev> (as libvirt's live XML). */
int domain_launch_live_xml(DomainDef *live, const LaunchFiles *lf, char **ret);
/* The throw-away overlay of each <transient/> disk of def (mode 0600). */
int domain_launch_transient_overlays(Domain *d, const DomainDef *def, char **ret_message);
/* A listening UNIX socket at path (replacing a stale one): its fd. */
int domain_launch_bind_socket(const char *path);
/* Runs argv detached (setsid, double fork) with stdout/stderr to log_fd
 * and qmp_fd as its fd 3; *ret_pid: QEMU's pid, *ret_start_time its start
 * time (/proc/PID/stat field 22, read by QEMU's process before exec). */
int domain_launch_spawn(char **argv, int log_fd, int qmp_fd, const LaunchFiles *lf, const QemuCreds *creds,
                        pid_t *ret_pid, uint64_t *ret_start_time);
/* Runs argv as qsnapd's own child (no setsid, no double fork) that dies
 * with qsnapd (PR_SET_PDEATHSIG); the caller reaps it. */
int domain_launch_spawn_child(char **argv, int log_fd, int qmp_fd, const LaunchFiles *lf, const QemuCreds *creds,
                              pid_t *ret_pid);

/* A restarted qsnapd has no pidfd of the QEMUs it launched, and a pid
 * alone may name another process by now. At launch the process's identity
 * goes into <runtime>/<uuid>.process: its start time and, on pidfs (Linux
 * 6.9), its pidfd's inode (unique for the boot; readable where /proc hides
 * QEMU's user). */
int domain_launch_record_process(Domain *d, pid_t pid, uint64_t start_time); /* → QEMU's pidfd */
/* At adoption: a pidfd of pid, only when it is the process the record
 * names (pidfs inode, else start time; without a record, a QEMU whose
 * command line names the domain's UUID); -ESRCH when not (never signalled). */
int domain_launch_adopt_process(Domain *d, pid_t pid);
/* SIGKILL through the pidfd when there is one. */
int domain_launch_kill(pid_t pid, int pidfd);
/* The line before a start's output in the domain's log. */
int domain_launch_log_header(int fd, char **argv);
/* What QEMU printed since the last start header (at most 2 KiB of it). */
int domain_launch_start_output(const char *path, char **ret);
