/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Expected failures have names (dbus-broker's per-module *_E_* codes): the
 * contract's errors of DESIGN §7, one QSNAP_E_* each, with values above
 * every errno. The convention for every function of the daemon:
 *
 *   return 0 / positive        success;
 *   return -QSNAP_E_BUSY, …    an expected failure the caller is told about
 *                              by name (a wrong state, a bad argument, a
 *                              path outside the gate, QEMU's refusal, …),
 *                              with a sentence in *ret_message when the
 *                              function has one (error_message() makes both);
 *   return -errno              a real system failure (open(), write(),
 *                              ENOMEM, …): errno means what errno(3) says,
 *                              never "OperationInvalid" in disguise.
 *
 * bus/bus-errors.c turns a QSNAP_E_* into its D-Bus name and an errno into
 * org.freedesktop.DBus.Error.Failed, except the few errnos with a meaning
 * for the caller (ENOMEM; ENOSPC, a full disk: NoSpace; ECONNRESET and
 * ENOTCONN, QEMU gone mid-call: NotRunning). Test with qsnap_error_is_named()
 * or compare with the negated code; print with qsnap_strerror() (logging's
 * "%m" knows the names too).
 */
#pragma once

#include <stdbool.h>
#include <stdlib.h>

#include "util/util.h"

typedef enum QsnapError {
        _QSNAP_E_FIRST = 10000, /* above every errno (the kernel's go to 4095) */
        QSNAP_E_NO_SUCH_DOMAIN = _QSNAP_E_FIRST,
        QSNAP_E_NO_SUCH_SNAPSHOT,
        QSNAP_E_NO_SUCH_CHECKPOINT,
        QSNAP_E_NO_SUCH_DISK,
        QSNAP_E_NO_SUCH_JOB,
        QSNAP_E_INVALID_XML,
        QSNAP_E_INVALID_ARGUMENT,
        QSNAP_E_ALREADY_EXISTS,
        QSNAP_E_BUSY,              /* a job or operation holds the disk/domain */
        QSNAP_E_OPERATION_INVALID, /* not in this state (revert without FORCE, Start of a running domain, …) */
        QSNAP_E_HAS_SNAPSHOTS,
        QSNAP_E_PATH_NOT_ALLOWED,
        QSNAP_E_NO_SPACE,          /* too little free space, found before writing */
        QSNAP_E_NOT_RUNNING,
        QSNAP_E_QEMU_FAILED,       /* QEMU refused, failed, exited or did not answer; its words in the message */
        QSNAP_E_UNSUPPORTED,
        QSNAP_E_AGENT_UNRESPONSIVE, /* the guest agent did not answer within the agent timeout */
        _QSNAP_E_MAX,
} QsnapError;

/* r (negative or positive) is one of the QSNAP_E_* codes. */
static inline bool qsnap_error_is_named(int r) {
        r = abs(r);
        return r >= _QSNAP_E_FIRST && r < _QSNAP_E_MAX;
}

/* The contract's name without its prefix ("Busy") for a QSNAP_E_* code
 * (negative or positive), NULL for anything else. */
const char *qsnap_error_to_string(int r);
/* The QSNAP_E_* code of a name ("Busy"), or -EINVAL. */
int qsnap_error_from_string(const char *s);

/* Text for logs and fallback messages: the name of a QSNAP_E_* code,
 * strerror() of an errno. */
const char *qsnap_strerror(int r);

/* *ret_message = the formatted sentence (like `*ret_message = strprintf(…)`:
 * pass a pointer to NULL); returns r (< 0). When the message cannot be
 * made, -ENOMEM and *ret_message untouched. ret_message may be NULL (then
 * only r). */
int error_message(char **ret_message, int r, const char *fmt, ...) _printf_(3, 4);
