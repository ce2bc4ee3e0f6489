/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The names of the QSNAP_E_* codes (util/error.h) and the helper that
 * returns one with its sentence.
 */
#include <stdarg.h>
#include <stdio.h>

#include "util/error.h"

static const char *const qsnap_error_table[_QSNAP_E_MAX - _QSNAP_E_FIRST] = {
        [QSNAP_E_NO_SUCH_DOMAIN - _QSNAP_E_FIRST] = "NoSuchDomain",
        [QSNAP_E_NO_SUCH_SNAPSHOT - _QSNAP_E_FIRST] = "NoSuchSnapshot",
        [QSNAP_E_NO_SUCH_CHECKPOINT - _QSNAP_E_FIRST] = "NoSuchCheckpoint",
        [QSNAP_E_NO_SUCH_DISK - _QSNAP_E_FIRST] = "NoSuchDisk",
        [QSNAP_E_NO_SUCH_JOB - _QSNAP_E_FIRST] = "NoSuchJob",
        [QSNAP_E_INVALID_XML - _QSNAP_E_FIRST] = "InvalidXML",
        [QSNAP_E_INVALID_ARGUMENT - _QSNAP_E_FIRST] = "InvalidArgument",
        [QSNAP_E_ALREADY_EXISTS - _QSNAP_E_FIRST] = "AlreadyExists",
        [QSNAP_E_BUSY - _QSNAP_E_FIRST] = "Busy",
        [QSNAP_E_OPERATION_INVALID - _QSNAP_E_FIRST] = "OperationInvalid",
        [QSNAP_E_HAS_SNAPSHOTS - _QSNAP_E_FIRST] = "HasSnapshots",
        [QSNAP_E_PATH_NOT_ALLOWED - _QSNAP_E_FIRST] = "PathNotAllowed",
        [QSNAP_E_NO_SPACE - _QSNAP_E_FIRST] = "NoSpace",
        [QSNAP_E_NOT_RUNNING - _QSNAP_E_FIRST] = "NotRunning",
        [QSNAP_E_QEMU_FAILED - _QSNAP_E_FIRST] = "QemuFailed",
        [QSNAP_E_UNSUPPORTED - _QSNAP_E_FIRST] = "Unsupported",
        [QSNAP_E_AGENT_UNRESPONSIVE - _QSNAP_E_FIRST] = "AgentUnresponsive",
};

const char *qsnap_error_to_string(int r) {
        if (!qsnap_error_is_named(r))
                return NULL;
        return qsnap_error_table[abs(r) - _QSNAP_E_FIRST];
}

int qsnap_error_from_string(const char *s) {
        for (size_t i = 0; s && i < ELEMENTSOF(qsnap_error_table); i++)
                if (streq_ptr(qsnap_error_table[i], s))
                        return (int) (_QSNAP_E_FIRST + i);
        return -EINVAL;
}

const char *qsnap_strerror(int r) {
        return qsnap_error_to_string(r) ?: strerror(abs(r));
}

int error_message(char **ret_message, int r, const char *fmt, ...) {
        va_list ap;
        char *s;
        int k;

        assert(r < 0);
        if (!ret_message)
                return r;
        va_start(ap, fmt);
        k = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        *ret_message = s;
        return r;
}
