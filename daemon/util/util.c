/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The small helpers of util.h: strings, string vectors, logging, files,
 * clocks, UUIDs and running a helper program (qemu-img) synchronously.
 */
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "util/error.h"
#include "util/util.h"

int free_and_strdup(char **p, const char *s) {
        char *t = NULL;

        if (s) {
                t = strdup(s);
                if (!t)
                        return -ENOMEM;
        }
        free(*p);
        *p = t;
        return 0;
}

char *strjoin_real(const char *x, ...) {
        va_list ap;
        size_t len = 0;
        char *r, *p;

        va_start(ap, x);
        for (const char *t = x; t; t = va_arg(ap, const char *))
                len += strlen(t);
        va_end(ap);

        r = malloc(len + 1);
        if (!r)
                return NULL;

        p = r;
        va_start(ap, x);
        for (const char *t = x; t; t = va_arg(ap, const char *))
                p = stpcpy(p, t);
        va_end(ap);
        *p = 0;
        return r;
}

char *strprintf(const char *fmt, ...) {
        va_list ap;
        char *s;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&s, fmt, ap);
        va_end(ap);
        return r < 0 ? NULL : s;
}

char **strv_free(char **l) {
        if (l)
                for (char **i = l; *i; i++)
                        free(*i);
        free(l);
        return NULL;
}

size_t strv_length(char *const *l) {
        size_t n = 0;

        if (l)
                while (l[n])
                        n++;
        return n;
}

bool strv_contains(const char *const *l, const char *s) {
        if (!l || !s)
                return false;
        for (; *l; l++)
                if (streq(*l, s))
                        return true;
        return false;
}

int strv_push(char ***l, char *value) {
        size_t n;
        char **c;

        if (!value)
                return 0;
        n = strv_length(*l);
        c = reallocarray(*l, n + 2, sizeof(char *));
        if (!c)
                return -ENOMEM;
        c[n] = value;
        c[n + 1] = NULL;
        *l = c;
        return 0;
}

int strv_extend(char ***l, const char *value) {
        char *v;
        int r;

        v = strdup(value);
        if (!v)
                return -ENOMEM;
        r = strv_push(l, v);
        if (r < 0)
                free(v);
        return r;
}

int strv_extendf(char ***l, const char *fmt, ...) {
        va_list ap;
        char *v;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&v, fmt, ap);
        va_end(ap);
        if (r < 0)
                return -ENOMEM;
        r = strv_push(l, v);
        if (r < 0)
                free(v);
        return r;
}

char *strv_join(char *const *l, const char *sep) {
        size_t n = 0, k = strlen(sep);
        char *r, *p;

        for (char *const *i = l; i && *i; i++)
                n += strlen(*i) + k;
        r = malloc(n + 1);
        if (!r)
                return NULL;
        p = r;
        *p = 0;
        for (char *const *i = l; i && *i; i++) {
                if (i != l)
                        p = stpcpy(p, sep);
                p = stpcpy(p, *i);
        }
        return r;
}

/* ---- logging ---- */

static int log_max_level = LOG_INFO;
static int log_use_prefix = -1; /* -1: not decided yet */
static int log_use_time = -1;   /* $QSNAPD_LOG_MONOTONIC: each line stamped (-1: not read yet) */

void log_set_max_level(int level) {
        log_max_level = level;
}

int log_get_max_level(void) {
        return log_max_level;
}

int log_parse_level(const char *s) {
        static const char *const table[] = {
                [LOG_EMERG] = "emerg", [LOG_ALERT] = "alert",     [LOG_CRIT] = "crit",
                [LOG_ERR] = "err",     [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                [LOG_INFO] = "info",   [LOG_DEBUG] = "debug",
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (streq(s, table[i]))
                        return (int) i;
        if (streq(s, "error"))
                return LOG_ERR;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == 0)
                return s[0] - '0';
        return -EINVAL;
}

/* glibc's "%m" knows errnos only: a QSNAP_E_* code is written by its name
 * into a copy of fmt ("%%m" stays). Returns fmt when there is nothing to do. */
static const char *format_named_error(const char *fmt, int error, char *buf, size_t size) {
        const char *name = qsnap_error_to_string(error);
        size_t n = 0;

        if (!name || !strstr(fmt, "%m"))
                return fmt;
        for (const char *p = fmt; *p; p++) {
                const char *add = p, *end = p + 1;

                if (p[0] == '%' && p[1] == '%')
                        end = ++p + 1;
                else if (p[0] == '%' && p[1] == 'm') {
                        add = name;
                        end = name + strlen(name);
                        p++;
                }
                if (n + (size_t) (end - add) >= size)
                        return fmt;
                memcpy(buf + n, add, end - add);
                n += end - add;
        }
        buf[n] = 0;
        return buf;
}

int log_internal(int level, int error, const char *file, int line, const char *func, const char *fmt, ...) {
        static const char *const words[] = {
                [LOG_EMERG] = "emergency", [LOG_ALERT] = "alert",     [LOG_CRIT] = "critical",
                [LOG_ERR] = "error",       [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
                [LOG_INFO] = "info",       [LOG_DEBUG] = "debug",
        };
        int saved = errno;
        char buf[2048], format[1024], stamp[40] = "";
        va_list ap;

        if (error < 0)
                error = -error;
        if (level > log_max_level)
                return -error;

        /* The journal reads "<N>" prefixes (sd-daemon(3)); a person at a
         * terminal reads words. */
        if (log_use_prefix < 0)
                log_use_prefix = getenv("JOURNAL_STREAM") || !isatty(STDERR_FILENO);
        /* For timelines (bench/trace_backup.py): CLOCK_MONOTONIC, which a
         * client on the same host reads too. */
        if (log_use_time < 0)
                log_use_time = !!getenv("QSNAPD_LOG_MONOTONIC");
        if (log_use_time) {
                struct timespec ts;

                if (clock_gettime(CLOCK_MONOTONIC, &ts) >= 0)
                        snprintf(stamp, sizeof(stamp), "[%lld.%06ld] ", (long long) ts.tv_sec, ts.tv_nsec / 1000L);
        }

        errno = error;
        va_start(ap, fmt);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        vsnprintf(buf, sizeof(buf), format_named_error(fmt, error, format, sizeof(format)), ap);
#pragma GCC diagnostic pop
        va_end(ap);

        if (log_use_prefix)
                fprintf(stderr, "<%i>%s%s\n", level, stamp, buf);
        else if (level == LOG_DEBUG)
                fprintf(stderr, "qsnapd: %sdebug: %s (%s:%i %s)\n", stamp, buf, file, line, func);
        else
                fprintf(stderr, "qsnapd: %s%s: %s\n", stamp, words[level & 7], buf);

        errno = saved;
        return -error;
}

/* ---- files ---- */

int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = NULL;

        p = strdup(path);
        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = 0;
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static int fsync_directory_of(const char *path) {
        _cleanup_free_ char *copy = NULL;
        _cleanup_close_ int fd = -EBADF;

        copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fsync(fd) < 0)
                return -errno;
        return 0;
}

static int write_file_renamed(const char *path, const void *data, size_t size, mode_t mode, bool durable) {
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -EBADF;
        const char *p = data;
        int r;

        tmp = strprintf("%s.tmp-%d", path, (int) getpid());
        if (!tmp)
                return -ENOMEM;

        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
                return -errno;

        while (size > 0) {
                ssize_t n = write(fd, p, size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        goto fail;
                }
                p += n;
                size -= (size_t) n;
        }
        if (durable && fsync(fd) < 0) {
                r = -errno;
                goto fail;
        }
        fd = safe_close(fd);
        if (rename(tmp, path) < 0) {
                r = -errno;
                goto fail;
        }
        return durable ? fsync_directory_of(path) : 0;

fail:
        (void) unlink(tmp);
        return r;
}

int write_file_atomic(const char *path, const void *data, size_t size, mode_t mode) {
        return write_file_renamed(path, data, size, mode, true);
}

int write_file_replace(const char *path, const void *data, size_t size, mode_t mode) {
        return write_file_renamed(path, data, size, mode, false);
}

int read_full_file(const char *path, size_t max_size, char **ret, size_t *ret_size) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, allocated = 0;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;

        for (;;) {
                ssize_t k;

                if (allocated - n < 4096 + 1) {
                        size_t a = allocated ? allocated * 2 : 16384;
                        char *b = realloc(buf, a);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        allocated = a;
                }
                k = read(fd, buf + n, allocated - n - 1);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > max_size)
                        return -EFBIG;
        }
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        if (ret_size)
                *ret_size = n;
        return 0;
}

int read_file_tail(const char *path, size_t max, char **ret) {
        _cleanup_close_ int fd = -EBADF;
        _cleanup_free_ char *buf = NULL;
        struct stat st;
        ssize_t k;

        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        buf = malloc(max + 1);
        if (!buf)
                return -ENOMEM;
        k = pread(fd, buf, max, st.st_size > (off_t) max ? st.st_size - (off_t) max : 0);
        if (k < 0)
                return -errno;
        buf[k] = 0;
        *ret = TAKE_PTR(buf);
        return 0;
}

uint64_t now_usec(clockid_t clock) {
        struct timespec ts;

        (void) clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

int uuid_generate_string(char ret[static 37]) {
        uint8_t b[16];

        if (getrandom(b, sizeof(b), 0) != (ssize_t) sizeof(b))
                return -errno;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        snprintf(ret, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                 b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
        return 0;
}

bool uuid_is_valid(const char *s) {
        if (!s || strlen(s) != 36)
                return false;
        for (size_t i = 0; i < 36; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (s[i] != '-')
                                return false;
                } else if (!strchr("0123456789abcdefABCDEF", s[i]))
                        return false;
        }
        return true;
}

_noreturn_ void exec_with_output(char *const *argv, int output_fd) {
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

        if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(output_fd, STDOUT_FILENO) < 0 ||
            dup2(output_fd, STDERR_FILENO) < 0)
                _exit(127);
        execv(argv[0], argv);
        _exit(127);
}

void crash_point(const char *name) {
        const char *at = getenv("QSNAPD_TEST_CRASH_AT");

        if (!at || !streq(at, name))
                return;
        log_warning("Crash point %s reached: killing qsnapd (QSNAPD_TEST_CRASH_AT).", name);
        (void) raise(SIGKILL);
}

void kill_point(const char *name, pid_t pid) {
        const char *at = getenv("QSNAPD_TEST_KILL_QEMU_AT");

        if (!at || !streq(at, name) || pid <= 1)
                return;
        log_warning("Kill point %s reached: killing QEMU %d (QSNAPD_TEST_KILL_QEMU_AT).", name, (int) pid);
        (void) kill(pid, SIGKILL);
}

char *shell_quote(const char *s) {
        size_t n = 2;
        char *r, *o;

        for (const char *c = s; *c; c++)
                n += *c == '\'' ? 4 : 1;
        r = malloc(n + 1);
        if (!r)
                return NULL;
        o = r;
        *o++ = '\'';
        for (const char *c = s; *c; c++) {
                if (*c == '\'') {
                        memcpy(o, "'\\''", 4);
                        o += 4;
                } else
                        *o++ = *c;
        }
        *o++ = '\'';
        *o = 0;
        return r;
}
