/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <fcntl.h>
#include <linux/close_range.h>
#include <signal.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "qemu/child.h"
#include "util/util.h"

#define CHILD_OUTPUT_MAX (1024 * 1024)

struct Child {
        pid_t pid;
        int fd;
        sd_event_source *io;
        char *out;
        size_t n, allocated;
        ChildOutputFunc output;
        ChildDoneFunc done;
        void *userdata;
};

static void child_reap(Child *c, int *ret_status) {
        int status;

        if (c->pid <= 0)
                return;
        while (waitpid(c->pid, &status, 0) < 0)
                if (errno != EINTR) {
                        *ret_status = -errno;
                        c->pid = 0;
                        return;
                }
        c->pid = 0;
        if (WIFEXITED(status))
                *ret_status = WEXITSTATUS(status);
        else
                *ret_status = 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static int on_child_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Child *c = userdata;
        char buf[4096];
        ssize_t k;
        int status = -EIO;

        k = read(fd, buf, sizeof(buf) - 1);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
                return 0;
        if (k > 0) {
                buf[k] = 0;
                if (c->n + (size_t) k < CHILD_OUTPUT_MAX) {
                        if (c->allocated - c->n <= (size_t) k) {
                                size_t a = (c->allocated ?: 4096) * 2 + (size_t) k;
                                char *b = realloc(c->out, a);
                                if (b) {
                                        c->out = b;
                                        c->allocated = a;
                                }
                        }
                        if (c->allocated - c->n > (size_t) k) {
                                memcpy(c->out + c->n, buf, (size_t) k);
                                c->n += (size_t) k;
                                c->out[c->n] = 0;
                        }
                }
                if (c->output)
                        c->output(c, buf, c->userdata);
                return 0;
        }
        /* EOF (or a read error): the child is at its end. */
        c->io = sd_event_source_disable_unref(c->io);
        c->fd = safe_close(c->fd);
        child_reap(c, &status);
        if (c->done)
                c->done(c, status, c->out ?: "", c->userdata);
        return 0;
}

/* In the child: fds[i] becomes descriptor 3 + i, everything from 3 + n_fds
 * up is closed at exec, output goes to stdout and stderr; then argv runs. */
_noreturn_ static void exec_with_fds(char *const *argv, int output_fd, const int *fds, size_t n_fds) {
        int high[CHILD_MAX_FDS], out;

        if (n_fds > CHILD_MAX_FDS)
                _exit(127);
        /* Out of the way first (all at or above 3 + n_fds), then into place:
         * no dup2() below can clobber a descriptor still to be moved. */
        out = fcntl(output_fd, F_DUPFD_CLOEXEC, (int) (3 + n_fds));
        if (out < 0)
                _exit(127);
        for (size_t i = 0; i < n_fds; i++)
                if ((high[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, (int) (3 + n_fds))) < 0)
                        _exit(127);
        for (size_t i = 0; i < n_fds; i++)
                if (dup2(high[i], (int) (3 + i)) < 0) /* the copy is not close-on-exec */
                        _exit(127);
        /* Whatever else is open (everything of ours is O_CLOEXEC anyway). */
        (void) close_range((unsigned) (3 + n_fds), ~0U, CLOSE_RANGE_CLOEXEC);
        exec_with_output(argv, out);
}

int child_run_fds(char *const *argv, const int *fds, size_t n_fds, char **ret_output) {
        _cleanup_close_ int rfd = -EBADF;
        _cleanup_free_ char *out = NULL;
        size_t n = 0, allocated = 0;
        int pipefd[2], status;
        pid_t pid;

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                return -errno;
        }
        if (pid == 0)
                exec_with_fds(argv, pipefd[1], fds, n_fds);
        safe_close(pipefd[1]);
        rfd = pipefd[0];
        for (;;) {
                ssize_t k;

                if (allocated - n < 1024) {
                        size_t a = allocated ? allocated * 2 : 4096;
                        char *b = n < CHILD_OUTPUT_MAX ? realloc(out, a) : NULL;

                        if (!b) {
                                char sink[4096];
                                ssize_t drained;

                                /* keep draining to EOF; the status still counts */
                                do
                                        drained = read(rfd, sink, sizeof(sink));
                                while (drained > 0 || (drained < 0 && errno == EINTR));
                                break;
                        }
                        out = b;
                        allocated = a;
                }
                k = read(rfd, out + n, allocated - n - 1);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                n += (size_t) k;
        }
        if (out)
                out[n] = 0;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return -errno;
        if (ret_output)
                *ret_output = TAKE_PTR(out);
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int child_spawn(sd_event *e, char *const *argv, ChildOutputFunc output, ChildDoneFunc done, void *userdata, Child **ret) {
        return child_spawn_fds(e, argv, NULL, 0, output, done, userdata, ret);
}

int child_spawn_fds(sd_event *e, char *const *argv, const int *fds, size_t n_fds, ChildOutputFunc output,
                    ChildDoneFunc done, void *userdata, Child **ret) {
        _cleanup_(child_freep) Child *c = NULL;
        int pipefd[2], r;
        pid_t parent;

        c = new0(Child, 1);
        if (!c)
                return -ENOMEM;
        c->fd = -EBADF;
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return -errno;
        parent = getpid();
        c->pid = fork();
        if (c->pid < 0) {
                r = -errno;
                safe_close(pipefd[0]);
                safe_close(pipefd[1]);
                c->pid = 0;
                return r;
        }
        if (c->pid == 0) {
                /* A child outlives no crash of ours: the restarted qsnapd
                 * repeats the step, never racing an orphan for the image. */
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(127);
                exec_with_fds(argv, pipefd[1], fds, n_fds);
        }
        safe_close(pipefd[1]);
        c->fd = pipefd[0];
        (void) fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        r = sd_event_add_io(e, &c->io, c->fd, EPOLLIN, on_child_io, c);
        if (r < 0)
                return r;
        c->output = output;
        c->done = done;
        c->userdata = userdata;
        *ret = TAKE_PTR(c);
        return 0;
}

Child *child_free(Child *c) {
        int status;

        if (!c)
                return NULL;
        c->io = sd_event_source_disable_unref(c->io);
        c->fd = safe_close(c->fd);
        if (c->pid > 0) {
                (void) kill(c->pid, SIGKILL);
                child_reap(c, &status);
        }
        free(c->out);
        free(c);
        return NULL;
}
