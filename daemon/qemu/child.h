/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A child process (qemu-img) run from the event loop without blocking it:
 * its stdout and stderr are read through one pipe as they come (`output`
 * sees every chunk, e.g. for `qemu-img -p` progress), and `done` gets the
 * exit status and everything it printed once the pipe is closed and the
 * child reaped. No SIGCHLD handling is needed: a child that closed its
 * output is at its end, so the reap after EOF does not wait. The child
 * is killed when qsnapd dies (PR_SET_PDEATHSIG). No D-Bus.
 */
#pragma once

#include <systemd/sd-event.h>

typedef struct Child Child;

/* status: the exit status (>= 0; 128 + signal when killed) or -errno. */
typedef void (*ChildDoneFunc)(Child *c, int status, const char *output, void *userdata);
typedef void (*ChildOutputFunc)(Child *c, const char *chunk, void *userdata);

int child_spawn(sd_event *e, char *const *argv, ChildOutputFunc output, ChildDoneFunc done, void *userdata, Child **ret);

/* At most this many descriptors are handed to a child. */
#define CHILD_MAX_FDS 512

/* The same, the child getting fds[i] as its descriptor 3 + i (qemu-img
 * names them /proc/self/fd/N) and no other descriptor of ours: everything
 * else is closed at exec. The caller keeps (and closes) fds. */
int child_spawn_fds(sd_event *e, char *const *argv, const int *fds, size_t n_fds, ChildOutputFunc output,
                    ChildDoneFunc done, void *userdata, Child **ret);

/* Runs argv to its end with fds as above, its output (stdout and stderr,
 * at most 1 MiB kept) in *ret_output: the exit status, 128 + signal, or
 * -errno. Blocks: only for short header edits after authorization. */
int child_run_fds(char *const *argv, const int *fds, size_t n_fds, char **ret_output);
/* Kills (SIGKILL) and reaps a child still running; no callback follows. */
Child *child_free(Child *c);
static inline void child_freep(Child **c) {
        if (*c)
                child_free(*c);
}
