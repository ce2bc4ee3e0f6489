/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A real qemu-system-x86_64 for the C tests' smoke runs: launched with
 * KVM or TCG, no display, 64 MiB, QMP on <dir>/qmp.sock and its output in
 * <dir>/qemu.log, killed when the test exits early (a failed check()) or
 * is killed itself. Its absence is a failure, not a skip: CI must have it
 * (tools/packages.txt). Needs fake-qmp.h's check() and event.
 */
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "qemu/qmp.h"
#include "util/util.h"

#define REAL_QEMU "/usr/bin/qemu-system-x86_64"

static pid_t qemu_pid;

static void kill_qemu(void) {
        if (qemu_pid > 0) {
                (void) kill(qemu_pid, SIGKILL);
                (void) waitpid(qemu_pid, NULL, 0);
        }
}

/* Starts QEMU with `extra` (NULL-terminated: its disks) and connects to
 * its QMP socket; sets qemu_pid. Exits with QEMU's log when that fails. */
static inline Qmp *real_qemu_launch(const char *dir, const char *const *extra) {
        char path[256], qmparg[300], logpath[256];
        const char *argv[64] = { REAL_QEMU, "-accel", "kvm", "-accel", "tcg", "-nodefaults", "-display", "none",
                                 "-machine", "q35", "-m", "64", "-qmp", qmparg };
        size_t n = 14;
        Qmp *q = NULL;
        int r = -ENOENT, status;
        pid_t pid;

        check(access(REAL_QEMU, X_OK) >= 0);
        snprintf(path, sizeof(path), "%s/qmp.sock", dir);
        snprintf(qmparg, sizeof(qmparg), "unix:%s,server=on,wait=off", path);
        snprintf(logpath, sizeof(logpath), "%s/qemu.log", dir);
        for (const char *const *a = extra; *a; a++) {
                check(n + 1 < ELEMENTSOF(argv));
                argv[n++] = *a;
        }

        pid = fork();
        check(pid >= 0);
        if (pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

                (void) prctl(PR_SET_PDEATHSIG, SIGKILL); /* also when the test itself is killed */
                dup2(null, STDIN_FILENO);
                dup2(logfd, STDOUT_FILENO);
                dup2(logfd, STDERR_FILENO);
                execv(REAL_QEMU, (char *const *) argv);
                _exit(127);
        }
        qemu_pid = pid;
        check(atexit(kill_qemu) == 0);

        /* Wait for QEMU to listen. */
        for (int i = 0; i < 1000; i++) {
                r = qmp_connect(event, path, &q);
                if (r >= 0 || (r != -ENOENT && r != -ECONNREFUSED) || waitpid(pid, &status, WNOHANG) == pid)
                        break;
                usleep(10 * USEC_PER_MSEC);
        }
        if (r < 0) {
                _cleanup_free_ char *qemu_log = NULL;
                (void) read_full_file(logpath, 65536, &qemu_log, NULL);
                fprintf(stderr, "Could not connect to QEMU: %s\n%s\n", strerror(-r), strna(qemu_log));
                exit(EXIT_FAILURE);
        }
        return q;
}

/* After a quit: QEMU ended by itself, with status 0 when `clean`. */
static inline void real_qemu_wait(bool clean) {
        int status;

        check(waitpid(qemu_pid, &status, 0) == qemu_pid);
        if (clean)
                check(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        qemu_pid = 0;
}
