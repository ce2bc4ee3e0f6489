/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Small helpers every layer may use: cleanup attributes, ownership moves,
 * logging with syslog levels, string vectors and crash-safe file writes.
 * These are our own equivalents of the systemd-internal helpers, which
 * libsystemd does not export. Nothing here knows about D-Bus or QMP.
 */
#pragma once

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _sentinel_ __attribute__((sentinel))
#define _noreturn_ __attribute__((noreturn))

#define new0(t, n) ((t *) calloc((n) ?: 1, sizeof(t)))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define STRLEN(s) (sizeof("" s "") - 1)
#define IN_SET(x, first, ...)                                                        \
        ({                                                                          \
                __typeof__(x) _v_ = (x);                                            \
                const __typeof__(x) _l_[] = { first, __VA_ARGS__ };                 \
                bool _f_ = false;                                                   \
                for (size_t _i_ = 0; _i_ < ELEMENTSOF(_l_); _i_++)                  \
                        if (_l_[_i_] == _v_)                                        \
                                _f_ = true;                                         \
                _f_;                                                                \
        })
/* A NULL-terminated vector of the arguments, valid in the statement. */
#define STRV_MAKE(...) ((char *[]) { __VA_ARGS__, NULL })
#define STR_IN_SET(x, ...) strv_contains((const char *const[]) { __VA_ARGS__, NULL }, x)

/* Move ownership out of a _cleanup_ variable. */
#define TAKE_PTR(p)                                 \
        ({                                          \
                __typeof__(p) _ptr_ = (p);          \
                (p) = NULL;                         \
                _ptr_;                              \
        })
#define TAKE_FD(fd)                                 \
        ({                                          \
                int _fd_ = (fd);                    \
                (fd) = -EBADF;                      \
                _fd_;                               \
        })

#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)     \
        static inline void func##p(type *p) {       \
                if (*p)                             \
                        func(*p);                   \
        }

static inline void *mfree(void *p) {
        free(p);
        return NULL;
}

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -EBADF;
}
static inline void closep(int *fd) {
        safe_close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

static inline bool streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}
#define streq(a, b) (strcmp((a), (b)) == 0)
#define isempty(s) (!(s) || (s)[0] == '\0')

static inline const char *strempty(const char *s) {
        return s ?: "";
}

static inline const char *strna(const char *s) {
        return s ?: "n/a";
}

/* Replace *p with a copy of s (NULL allowed). Returns -ENOMEM or 0. */
int free_and_strdup(char **p, const char *s);

char *strjoin_real(const char *x, ...) _sentinel_;
#define strjoin(a, ...) strjoin_real((a), __VA_ARGS__, NULL)

/* printf into a fresh string; NULL on OOM. */
char *strprintf(const char *fmt, ...) _printf_(1, 2);

/* NULL-terminated string vectors. */
typedef char **strv_t;
char **strv_free(char **l);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free);
#define _cleanup_strv_free_ _cleanup_(strv_freep)
size_t strv_length(char *const *l);
bool strv_contains(const char *const *l, const char *s);
int strv_push(char ***l, char *value); /* takes value */
int strv_extend(char ***l, const char *value); /* copies value */
int strv_extendf(char ***l, const char *fmt, ...) _printf_(2, 3);
char *strv_join(char *const *l, const char *sep);

/* Logging: messages go to stderr. When stderr is the journal or not a tty,
 * each line carries the "<N>" syslog level prefix of sd-daemon(3); on a tty
 * a readable level word instead. */
void log_set_max_level(int level);
int log_get_max_level(void);
int log_parse_level(const char *s);
int log_internal(int level, int error, const char *file, int line, const char *func, const char *fmt, ...)
        _printf_(6, 7);

#define log_full_errno(level, error, ...) \
        log_internal((level), (error), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)
/* These set errno to the error for "%m" and return -abs(error). */
#define log_debug_errno(error, ...) log_full_errno(LOG_DEBUG, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_error_errno(error, ...) log_full_errno(LOG_ERR, (error), __VA_ARGS__)
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

/* Files and directories. */
int mkdir_p(const char *path, mode_t mode);
/* Crash-safe replace: temp file in the same folder, fsync, rename, fsync
 * the folder. A reader sees the old or the new whole file. */
int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode);
/* The same without the two fsyncs: a reader (a restarted qsnapd) still sees
 * the old or the new whole file, but a crash of the host may lose the
 * change. For the runtime folder only, whose files die with the host
 * (tmpfs, and the QEMUs they describe die with it too). */
int write_file_replace(const char *path, const void *data, size_t size, mode_t mode);
/* Reads a whole file; -EFBIG when larger than max_size. Adds a NUL. */
int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size);
/* Last max bytes of a file, for quoting a log in an error. */
int read_file_tail(const char *path, size_t max, char **ret);

/* Monotonic and realtime clocks in microseconds. */
uint64_t now_usec(clockid_t clock);
#define USEC_PER_SEC ((uint64_t) 1000000ULL)
#define USEC_PER_MSEC ((uint64_t) 1000ULL)

/* Random RFC 4122 v4 UUID, lower-case text. */
int uuid_generate_string(char ret[static 37]);
bool uuid_is_valid(const char *s);

/* In a forked child: stdin /dev/null, stdout and stderr to output_fd,
 * exec argv[0]; exit status 127 when that fails. */
_noreturn_ void exec_with_output(char *const *argv, int output_fd);

/* Test hook for crash-safety tests: when $QSNAPD_TEST_CRASH_AT names
 * this point, qsnapd logs it and kills itself with SIGKILL, as a crash
 * or power cut would stop it there. Points are named
 * "<operation>:<step>", e.g. "revert:overlays-created". */
void crash_point(const char *name);

/* The same for QEMU dying at a point of ours: when $QSNAPD_TEST_KILL_QEMU_AT
 * names this point, qsnapd logs it and sends SIGKILL to pid (the domain's
 * QEMU), e.g. "job-finalize" right after job-finalize went out. */
void kill_point(const char *name, pid_t pid);

/* s in single quotes for /bin/sh, embedded quotes escaped. */
char *shell_quote(const char *s);
