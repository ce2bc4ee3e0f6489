/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * One table: error name <-> errno. The model reports failures as -errno
 * plus a sentence; this is the only place that turns them into names.
 * QMP failures reach us as -EIO (QemuFailed) with QEMU's own text, and
 * QMP error classes need no table of their own: QEMU 7.2 answers nearly
 * everything with GenericError, so the errno chosen by the model is the
 * better guide.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bus/bus-errors.h"
#include "util/util.h"

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
        SD_BUS_ERROR_MAP_END
};

/* Errnos the model uses for a named condition; the first table entry with
 * that errno wins. Others become org.freedesktop.DBus.Error.Failed. */
static const struct {
        int error;
        const char *name;
} errno_names[] = {
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
        { ENOSPC, QSNAP_ERROR_NO_SPACE },
        { ESRCH, QSNAP_ERROR_NOT_RUNNING },
        /* QEMU went away while a call of ours was in flight */
        { ENOTCONN, QSNAP_ERROR_NOT_RUNNING },
        { ECONNRESET, QSNAP_ERROR_NOT_RUNNING },
        { EIO, QSNAP_ERROR_QEMU_FAILED },
        { ETIMEDOUT, QSNAP_ERROR_QEMU_FAILED },
        { EOPNOTSUPP, QSNAP_ERROR_UNSUPPORTED },
};

int bus_error_set_errno_message(sd_bus_error *error, int r, const char *message) {
        const char *name = SD_BUS_ERROR_FAILED;

        if (r > 0)
                r = -r;
        if (r == -ENOMEM)
                return sd_bus_error_set_errno(error, r);
        for (size_t i = 0; i < sizeof(errno_names) / sizeof(errno_names[0]); i++)
                if (errno_names[i].error == -r) {
                        name = errno_names[i].name;
                        break;
                }
        sd_bus_error_set(error, name, message ?: strerror(-r));
        return r;
}

int bus_reply_errno_message(sd_bus_message *m, int r, const char *message) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        bus_error_set_errno_message(&e, r, message);
        return sd_bus_reply_method_error(m, &e);
}

int bus_error_unknown_flags(sd_bus_error *error, const char *method, uint64_t flags, uint64_t known) {
        return sd_bus_error_setf(error, QSNAP_ERROR_INVALID_ARGUMENT,
                                 "Unknown flag bits 0x%" PRIx64 " for %s (known flags: 0x%" PRIx64 ").",
                                 flags & ~known, method, known);
}
