/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The named D-Bus errors of DESIGN §7, the mapping from the model's
 * failures (a QSNAP_E_* code or an errno, util/error.h) to them, and the
 * error map handed to sd-bus so that clients built on sd-bus get an errno
 * back.
 */
#pragma once

#include <systemd/sd-bus.h>

#include "util/error.h"

#define QSNAP_ERROR_PREFIX "org.example.Snapshot1.Error."
#define QSNAP_ERROR_NO_SUCH_DOMAIN QSNAP_ERROR_PREFIX "NoSuchDomain"
#define QSNAP_ERROR_NO_SUCH_SNAPSHOT QSNAP_ERROR_PREFIX "NoSuchSnapshot"
#define QSNAP_ERROR_NO_SUCH_CHECKPOINT QSNAP_ERROR_PREFIX "NoSuchCheckpoint"
#define QSNAP_ERROR_NO_SUCH_DISK QSNAP_ERROR_PREFIX "NoSuchDisk"
#define QSNAP_ERROR_NO_SUCH_JOB QSNAP_ERROR_PREFIX "NoSuchJob"
#define QSNAP_ERROR_INVALID_XML QSNAP_ERROR_PREFIX "InvalidXML"
#define QSNAP_ERROR_INVALID_ARGUMENT QSNAP_ERROR_PREFIX "InvalidArgument"
#define QSNAP_ERROR_ALREADY_EXISTS QSNAP_ERROR_PREFIX "AlreadyExists"
#define QSNAP_ERROR_BUSY QSNAP_ERROR_PREFIX "Busy"
#define QSNAP_ERROR_OPERATION_INVALID QSNAP_ERROR_PREFIX "OperationInvalid"
#define QSNAP_ERROR_HAS_SNAPSHOTS QSNAP_ERROR_PREFIX "HasSnapshots"
#define QSNAP_ERROR_PATH_NOT_ALLOWED QSNAP_ERROR_PREFIX "PathNotAllowed"
#define QSNAP_ERROR_NO_SPACE QSNAP_ERROR_PREFIX "NoSpace"
#define QSNAP_ERROR_NOT_RUNNING QSNAP_ERROR_PREFIX "NotRunning"
#define QSNAP_ERROR_QEMU_FAILED QSNAP_ERROR_PREFIX "QemuFailed"
#define QSNAP_ERROR_UNSUPPORTED QSNAP_ERROR_PREFIX "Unsupported"
#define QSNAP_ERROR_AGENT_UNRESPONSIVE QSNAP_ERROR_PREFIX "AgentUnresponsive"

extern const sd_bus_error_map qsnap_error_map[];

/* The D-Bus name of a QSNAP_E_* code (NULL for none: a missing case). */
const char *bus_error_name_of_code(QsnapError e);
/* The D-Bus name for a failure r (negative or positive): a QSNAP_E_* code's
 * own; for an errno NoSpace (ENOSPC), NotRunning (ECONNRESET, ENOTCONN),
 * the name of an errno pun ops/ still returns, else
 * org.freedesktop.DBus.Error.Failed. (ENOMEM: see below.) */
const char *bus_error_name(int r);

/* Sets *error from a failure of the model and its message (NULL:
 * qsnap_strerror()); ENOMEM is sd-bus's NoMemory. Returns r (negative),
 * ready to be returned from a method handler. */
int bus_error_set_errno_message(sd_bus_error *error, int r, const char *message);

/* Replies to m with the error of a failure and its message, like
 * bus_error_set_errno_message(). Returns what sd_bus_reply_method_error() did. */
int bus_reply_errno_message(sd_bus_message *m, int r, const char *message);

/* The end of a handler that handed m (referenced) to an asynchronous call
 * of the model, which returned r: 1 when the call took it (the reply comes
 * later); otherwise the reference goes and *error says what failed. */
int bus_async_call_result(sd_bus_message *m, int r, const char *message, sd_bus_error *error);

/* "Unknown flag bits 0x… for Method (known: 0x…)". */
int bus_error_unknown_flags(sd_bus_error *error, const char *method, uint64_t flags, uint64_t known);
/* A method's "t" flags argument, read next; refused as above outside known. */
int bus_read_flags(sd_bus_message *m, const char *method, uint64_t known, uint64_t *ret, sd_bus_error *error);
