/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The error table (daemon/bus/bus-errors.c, daemon/util/error.h): every
 * QSNAP_E_* code has its own name, together exactly DESIGN §7's list; an
 * errno is Failed except ENOMEM, ENOSPC and QEMU gone mid-call; the errno
 * puns ops/ still returns keep their names; messages default to the name or
 * strerror(); logging's "%m" knows the codes.
 */
#include <fcntl.h>
#include <stdio.h>

#include "bus/bus-errors.h"
#include "util/error.h"
#include "test-check.h"

/* DESIGN.md §7, in its order, then the names added since. */
static const char *const design_errors[] = {
        "NoSuchDomain", "NoSuchSnapshot", "NoSuchCheckpoint", "NoSuchDisk", "NoSuchJob", "InvalidXML",
        "InvalidArgument", "AlreadyExists", "Busy", "OperationInvalid", "HasSnapshots", "PathNotAllowed",
        "NoSpace", "NotRunning", "QemuFailed", "Unsupported",
        /* Beyond §7 (docs/decisions.md says why): issue #14's QUIESCE. */
        "AgentUnresponsive",
};

static void test_every_code_has_its_name(void) {
        size_t n = 0;

        for (int e = _QSNAP_E_FIRST; e < _QSNAP_E_MAX; e++, n++) {
                const char *name = bus_error_name_of_code((QsnapError) e), *bare = qsnap_error_to_string(e);
                _cleanup_free_ char *expected = bare ? strjoin(QSNAP_ERROR_PREFIX, bare) : NULL;

                CHECK(qsnap_error_is_named(e) && qsnap_error_is_named(-e));
                CHECK(bare != NULL);
                CHECK_STREQ(name, expected);
                CHECK_STREQ(bus_error_name(-e), expected);
                CHECK_STREQ(bus_error_name(e), expected);
                CHECK(qsnap_error_to_string(-e) == bare);
                CHECK(qsnap_error_from_string(bare) == e);
                CHECK_STREQ(qsnap_strerror(-e), bare);
                /* No two codes share a name. */
                for (int o = _QSNAP_E_FIRST; o < e; o++)
                        CHECK(!streq_ptr(qsnap_error_to_string(o), bare));
                /* sd-bus clients get an errno for each name. */
                bool mapped = false;
                for (const sd_bus_error_map *m = qsnap_error_map; m->name; m++)
                        if (streq_ptr(m->name, expected))
                                mapped = m->code > 0;
                CHECK(mapped);
        }
        CHECK(n == ELEMENTSOF(design_errors));
        for (size_t i = 0; i < ELEMENTSOF(design_errors); i++)
                CHECK(qsnap_error_from_string(design_errors[i]) >= _QSNAP_E_FIRST);

        /* Not codes: errnos, 0, the bounds. */
        CHECK(!qsnap_error_is_named(0));
        CHECK(!qsnap_error_is_named(-EINVAL));
        CHECK(!qsnap_error_is_named(-4095));
        CHECK(!qsnap_error_is_named(-_QSNAP_E_MAX));
        CHECK(qsnap_error_to_string(-EBUSY) == NULL);
        CHECK(qsnap_error_to_string(_QSNAP_E_MAX) == NULL);
        CHECK(qsnap_error_from_string("Failed") == -EINVAL);
        CHECK(qsnap_error_from_string("busy") == -EINVAL);
        CHECK(qsnap_error_from_string(NULL) == -EINVAL);
        CHECK(bus_error_name_of_code(_QSNAP_E_MAX) == NULL);
        CHECK(-_QSNAP_E_FIRST < -4095); /* outside what any errno can be */
}

static void test_errnos(void) {
        /* A system failure is Failed, whatever it is. */
        static const int failures[] = { EACCES, EPERM, ENOENT, EROFS, ELOOP, EFBIG, ENAMETOOLONG, EAGAIN, EPIPE,
                                         ERANGE, ENOTDIR, EISDIR, 1000 };

        for (size_t i = 0; i < ELEMENTSOF(failures); i++)
                CHECK_STREQ(bus_error_name(-failures[i]), SD_BUS_ERROR_FAILED);
        /* The few with a meaning for the caller. */
        CHECK_STREQ(bus_error_name(-ENOSPC), QSNAP_ERROR_NO_SPACE);
        CHECK_STREQ(bus_error_name(-ECONNRESET), QSNAP_ERROR_NOT_RUNNING);
        CHECK_STREQ(bus_error_name(-ENOTCONN), QSNAP_ERROR_NOT_RUNNING);

        /* Until ops/ is converted: its puns keep the names they had. */
        CHECK_STREQ(bus_error_name(-ENXIO), QSNAP_ERROR_NO_SUCH_DOMAIN);
        CHECK_STREQ(bus_error_name(-ENODEV), QSNAP_ERROR_NO_SUCH_DISK);
        CHECK_STREQ(bus_error_name(-EBADMSG), QSNAP_ERROR_INVALID_XML);
        CHECK_STREQ(bus_error_name(-EINVAL), QSNAP_ERROR_INVALID_ARGUMENT);
        CHECK_STREQ(bus_error_name(-EEXIST), QSNAP_ERROR_ALREADY_EXISTS);
        CHECK_STREQ(bus_error_name(-EBUSY), QSNAP_ERROR_BUSY);
        CHECK_STREQ(bus_error_name(-ESTALE), QSNAP_ERROR_OPERATION_INVALID);
        CHECK_STREQ(bus_error_name(-ECANCELED), QSNAP_ERROR_OPERATION_INVALID);
        CHECK_STREQ(bus_error_name(-ENOTEMPTY), QSNAP_ERROR_HAS_SNAPSHOTS);
        CHECK_STREQ(bus_error_name(-EXDEV), QSNAP_ERROR_PATH_NOT_ALLOWED);
        CHECK_STREQ(bus_error_name(-ESRCH), QSNAP_ERROR_NOT_RUNNING);
        CHECK_STREQ(bus_error_name(-EIO), QSNAP_ERROR_QEMU_FAILED);
        CHECK_STREQ(bus_error_name(-ETIMEDOUT), QSNAP_ERROR_QEMU_FAILED);
        CHECK_STREQ(bus_error_name(-EOPNOTSUPP), QSNAP_ERROR_UNSUPPORTED);
}

static void test_set_message(void) {
        sd_bus_error e = SD_BUS_ERROR_NULL;

        CHECK(bus_error_set_errno_message(&e, -QSNAP_E_BUSY, "Disk vda is busy.") == -QSNAP_E_BUSY);
        CHECK_STREQ(e.name, QSNAP_ERROR_BUSY);
        CHECK_STREQ(e.message, "Disk vda is busy.");
        sd_bus_error_free(&e);

        /* No message: the name, never "Unknown error 10008". */
        CHECK(bus_error_set_errno_message(&e, QSNAP_E_NOT_RUNNING, NULL) == -QSNAP_E_NOT_RUNNING);
        CHECK_STREQ(e.name, QSNAP_ERROR_NOT_RUNNING);
        CHECK_STREQ(e.message, "NotRunning");
        sd_bus_error_free(&e);

        CHECK(bus_error_set_errno_message(&e, -EACCES, NULL) == -EACCES);
        CHECK_STREQ(e.name, SD_BUS_ERROR_FAILED);
        CHECK_STREQ(e.message, strerror(EACCES));
        sd_bus_error_free(&e);

        CHECK(bus_error_set_errno_message(&e, -ENOMEM, "ignored") == -ENOMEM);
        CHECK_STREQ(e.name, SD_BUS_ERROR_NO_MEMORY);
        sd_bus_error_free(&e);

        CHECK(bus_error_unknown_flags(&e, "Revert", 0x18, 0x7) < 0);
        CHECK_STREQ(e.name, QSNAP_ERROR_INVALID_ARGUMENT);
        CHECK_STREQ(e.message, "Unknown flag bits 0x18 for Revert (known flags: 0x7).");
        sd_bus_error_free(&e);
}

static void test_error_message(void) {
        _cleanup_free_ char *m = NULL;

        CHECK(error_message(&m, -QSNAP_E_PATH_NOT_ALLOWED, "%s is outside %d folders.", "/x", 2) ==
              -QSNAP_E_PATH_NOT_ALLOWED);
        CHECK_STREQ(m, "/x is outside 2 folders.");
        CHECK(error_message(NULL, -EIO, "dropped") == -EIO);
        CHECK_STREQ(qsnap_strerror(-ENOENT), strerror(ENOENT));
        CHECK_STREQ(qsnap_strerror(ENOENT), strerror(ENOENT));
}

/* What a log line says: stderr goes to a file meanwhile. */
static int capture_begin(int *ret_saved) {
        char path[] = "/tmp/test-bus-errors-XXXXXX";
        int fd;

        fd = mkstemp(path);
        if (fd < 0)
                return -errno;
        (void) unlink(path);
        fflush(stderr);
        *ret_saved = dup(STDERR_FILENO);
        dup2(fd, STDERR_FILENO);
        return fd;
}

static char *capture_end(int fd, int saved) {
        char *text;

        fflush(stderr);
        dup2(saved, STDERR_FILENO);
        close(saved);
        text = calloc(1, 512);
        if (text && pread(fd, text, 511, 0) < 0)
                text = mfree(text);
        close(fd);
        return text;
}

#define logged(error, ...)                                                      \
        ({                                                                      \
                int _saved = -1, _fd = capture_begin(&_saved);                  \
                char *_t = NULL;                                                \
                if (_fd >= 0) {                                                 \
                        log_full_errno(LOG_WARNING, (error), __VA_ARGS__);      \
                        _t = capture_end(_fd, _saved);                          \
                }                                                               \
                _t;                                                             \
        })

static void test_log_names(void) {
        _cleanup_free_ char *a = logged(-QSNAP_E_BUSY, "disk %s: %m", "vda");
        _cleanup_free_ char *b = logged(-EACCES, "disk %s: %m", "vda");
        _cleanup_free_ char *c = logged(QSNAP_E_QEMU_FAILED, "100%% of %s, not %%m: %m", "vda");

        CHECK_CONTAINS(a, "disk vda: Busy\n");
        CHECK_CONTAINS(b, "disk vda: Permission denied\n");
        CHECK_CONTAINS(c, "100% of vda, not %m: QemuFailed\n");
}

int main(void) {
        test_every_code_has_its_name();
        test_errnos();
        test_set_message();
        test_error_message();
        test_log_names();
        return test_summary();
}
