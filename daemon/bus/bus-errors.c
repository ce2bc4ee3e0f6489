/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The one place that turns a failure of the model into a D-Bus error: a
 * QSNAP_E_* code (util/error.h) into its name, an errno into Failed except
 * the few with a meaning, plus the map that hands sd-bus clients an errno
 * for each of our names. QMP error classes need no table of their own:
 * QEMU 7.2 answers nearly everything with GenericError, so the code chosen
 * by the model (QemuFailed with QEMU's text) is the better guide.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus-errors.h"
#include "util/error.h"
#include "util/util.h"

/* For clients built on sd-bus: name → errno (sd_bus_error_get_errno()).
 * What clients see; not how the daemon picks a name. */
const sd_bus_error_map qsnap_error_map[] = {
        SD_BUS_ERROR_MAP(QSNAP_ERROR_NO_SUCH_DOMAIN, ENXIO),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_NO_SUCH_SNAPSHOT, ENOENT),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_NO_SUCH_CHECKPOINT, ENOENT),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_NO_SUCH_DISK, ENODEV),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_NO_SUCH_JOB, ENOENT),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_INVALID_XML, EBADMSG),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_INVALID_ARGUMENT, EINVAL),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_ALREADY_EXISTS, EEXIST),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_OPERATION_INVALID, ESTALE),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_HAS_SNAPSHOTS, ENOTEMPTY),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_PATH_NOT_ALLOWED, EXDEV),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_NO_SPACE, ENOSPC),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_NOT_RUNNING, ESRCH),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_QEMU_FAILED, EIO),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_UNSUPPORTED, EOPNOTSUPP),
        SD_BUS_ERROR_MAP(QSNAP_ERROR_AGENT_UNRESPONSIVE, ETIME),
        SD_BUS_ERROR_MAP_END
};

/* The D-Bus name of a QSNAP_E_* code; a switch, so the compiler names a
 * code without one. */
const char *bus_error_name_of_code(QsnapError e) {
        switch (e) {
        case QSNAP_E_NO_SUCH_DOMAIN:
                return QSNAP_ERROR_NO_SUCH_DOMAIN;
        case QSNAP_E_NO_SUCH_SNAPSHOT:
                return QSNAP_ERROR_NO_SUCH_SNAPSHOT;
        case QSNAP_E_NO_SUCH_CHECKPOINT:
                return QSNAP_ERROR_NO_SUCH_CHECKPOINT;
        case QSNAP_E_NO_SUCH_DISK:
                return QSNAP_ERROR_NO_SUCH_DISK;
        case QSNAP_E_NO_SUCH_JOB:
                return QSNAP_ERROR_NO_SUCH_JOB;
        case QSNAP_E_INVALID_XML:
                return QSNAP_ERROR_INVALID_XML;
        case QSNAP_E_INVALID_ARGUMENT:
                return QSNAP_ERROR_INVALID_ARGUMENT;
        case QSNAP_E_ALREADY_EXISTS:
                return QSNAP_ERROR_ALREADY_EXISTS;
        case QSNAP_E_BUSY:
                return QSNAP_ERROR_BUSY;
        case QSNAP_E_OPERATION_INVALID:
                return QSNAP_ERROR_OPERATION_INVALID;
        case QSNAP_E_HAS_SNAPSHOTS:
                return QSNAP_ERROR_HAS_SNAPSHOTS;
        case QSNAP_E_PATH_NOT_ALLOWED:
                return QSNAP_ERROR_PATH_NOT_ALLOWED;
        case QSNAP_E_NO_SPACE:
                return QSNAP_ERROR_NO_SPACE;
        case QSNAP_E_NOT_RUNNING:
                return QSNAP_ERROR_NOT_RUNNING;
        case QSNAP_E_QEMU_FAILED:
                return QSNAP_ERROR_QEMU_FAILED;
        case QSNAP_E_UNSUPPORTED:
                return QSNAP_ERROR_UNSUPPORTED;
        case QSNAP_E_AGENT_UNRESPONSIVE:
                return QSNAP_ERROR_AGENT_UNRESPONSIVE;
        case _QSNAP_E_MAX:
                break;
        }
        return NULL;
}

/* The errnos with a meaning for the caller; every other one is a system
 * failure, org.freedesktop.DBus.Error.Failed with strerror()'s words. */
static const struct {
        int error;
        const char *name;
} errno_names[] = {
        { ENOSPC, QSNAP_ERROR_NO_SPACE },      /* a write found the disk full */
        /* QEMU went away while a call of ours was in flight */
        { ENOTCONN, QSNAP_ERROR_NOT_RUNNING },
        { ECONNRESET, QSNAP_ERROR_NOT_RUNNING },
};

/* Until ops/ is converted to QSNAP_E_* (issue #9): the errno puns its code
 * still returns for named conditions. Remove this table with the last pun. */
static const struct {
        int error;
        const char *name;
} errno_puns[] = {
        { ENXIO, QSNAP_ERROR_NO_SUCH_DOMAIN },
        { ENODEV, QSNAP_ERROR_NO_SUCH_DISK },
        { EBADMSG, QSNAP_ERROR_INVALID_XML },
        { EINVAL, QSNAP_ERROR_INVALID_ARGUMENT },
        { EEXIST, QSNAP_ERROR_ALREADY_EXISTS },
        { EBUSY, QSNAP_ERROR_BUSY },
        { ESTALE, QSNAP_ERROR_OPERATION_INVALID },
        { ECANCELED, QSNAP_ERROR_OPERATION_INVALID },
        { ENOTEMPTY, QSNAP_ERROR_HAS_SNAPSHOTS },
        { EXDEV, QSNAP_ERROR_PATH_NOT_ALLOWED },
        { ESRCH, QSNAP_ERROR_NOT_RUNNING },
        { EIO, QSNAP_ERROR_QEMU_FAILED },
        { ETIMEDOUT, QSNAP_ERROR_QEMU_FAILED },
        { EOPNOTSUPP, QSNAP_ERROR_UNSUPPORTED },
};

const char *bus_error_name(int r) {
        r = abs(r);
        if (qsnap_error_is_named(r))
                return bus_error_name_of_code((QsnapError) r);
        for (size_t i = 0; i < ELEMENTSOF(errno_names); i++)
                if (errno_names[i].error == r)
                        return errno_names[i].name;
        for (size_t i = 0; i < ELEMENTSOF(errno_puns); i++)
                if (errno_puns[i].error == r)
                        return errno_puns[i].name;
        return SD_BUS_ERROR_FAILED;
}

int bus_error_set_errno_message(sd_bus_error *error, int r, const char *message) {
        if (r > 0)
                r = -r;
        if (r == -ENOMEM)
                return sd_bus_error_set_errno(error, r);
        sd_bus_error_set(error, bus_error_name(r), message ?: qsnap_strerror(r));
        return r;
}

int bus_reply_errno_message(sd_bus_message *m, int r, const char *message) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        bus_error_set_errno_message(&e, r, message);
        return sd_bus_reply_method_error(m, &e);
}

int bus_async_call_result(sd_bus_message *m, int r, const char *message, sd_bus_error *error) {
        if (r >= 0)
                return 1;
        sd_bus_message_unref(m);
        return bus_error_set_errno_message(error, r, message);
}

int bus_error_unknown_flags(sd_bus_error *error, const char *method, uint64_t flags, uint64_t known) {
        return sd_bus_error_setf(error, QSNAP_ERROR_INVALID_ARGUMENT,
                                 "Unknown flag bits 0x%" PRIx64 " for %s (known flags: 0x%" PRIx64 ").",
                                 flags & ~known, method, known);
}

int bus_read_flags(sd_bus_message *m, const char *method, uint64_t known, uint64_t *ret, sd_bus_error *error) {
        uint64_t flags = 0;
        int r;

        r = sd_bus_message_read(m, "t", &flags);
        if (r < 0)
                return r;
        if (flags & ~known)
                return bus_error_unknown_flags(error, method, flags, known);
        *ret = flags;
        return 0;
}
