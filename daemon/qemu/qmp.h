/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP client: one connection to one QEMU monitor socket, driven by
 * sd-event. Shaped like BlueZ's bt_att: an opaque, ref-counted object with
 * send(command, args, callback) -> id, cancel(id), event subscriptions and
 * a disconnect callback. It reads the greeting, negotiates
 * qmp_capabilities and holds every command until that succeeded. It
 * ignores JSON keys it does not know, drops replies to ids it did not
 * send, and never parses QEMU's human "desc" text. No D-Bus in here.
 */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct Qmp Qmp;

/* Reply to one command.
 *   error == 0:           success; `result` is the "return" member (borrowed,
 *                         valid only during the call; json_object_get() to keep).
 *   error == -QSNAP_E_QEMU_FAILED:
 *                         QEMU answered with an "error" member; err_class is
 *                         its "class" (e.g. "GenericError"), err_desc its "desc"
 *                         (util/error.h).
 *   error == -ECONNRESET: the connection went away before the reply came.
 * The callback is called exactly once, unless the command was cancelled. */
typedef void (*qmp_reply_func_t)(
                Qmp *qmp,
                int error,
                json_object *result,
                const char *err_class,
                const char *err_desc,
                void *userdata);

/* An asynchronous event. `data` may be NULL (borrowed); timestamp is in
 * microseconds since the epoch as QEMU stamped it. */
typedef void (*qmp_event_func_t)(
                Qmp *qmp, const char *event, json_object *data, uint64_t timestamp_usec, void *userdata);

/* Greeting read and qmp_capabilities answered (error == 0), or the
 * negotiation failed (-errno). Called at most once. */
typedef void (*qmp_ready_func_t)(Qmp *qmp, int error, void *userdata);

/* The peer closed the connection or sent something unparseable (error is
 * -ECONNRESET, -EBADMSG, ...). Pending replies get -ECONNRESET first. */
typedef void (*qmp_disconnect_func_t)(Qmp *qmp, int error, void *userdata);

/* Takes ownership of fd (a connected stream socket, e.g. one end of a
 * socketpair() in tests). */
int qmp_new_from_fd(sd_event *event, int fd, Qmp **ret);
/* Connects to a UNIX socket path. -ECONNREFUSED / -ENOENT when nobody
 * listens there (the QEMU is gone). */
int qmp_connect(sd_event *event, const char *path, Qmp **ret);

Qmp *qmp_ref(Qmp *qmp);
Qmp *qmp_unref(Qmp *qmp);
static inline void qmp_unrefp(Qmp **q) {
        if (*q)
                qmp_unref(*q);
}

void qmp_set_ready_callback(Qmp *qmp, qmp_ready_func_t cb, void *userdata);
void qmp_set_disconnect_callback(Qmp *qmp, qmp_disconnect_func_t cb, void *userdata);
/* A name for log lines ("domain foo"). Copied. */
int qmp_set_description(Qmp *qmp, const char *description);

bool qmp_is_ready(Qmp *qmp);
/* The QEMU on the other end is major.minor or newer, by its greeting
 * (false before the greeting, or when it named no version). */
bool qmp_version_at_least(const Qmp *qmp, unsigned major, unsigned minor);
bool qmp_is_connected(Qmp *qmp);

/* How many commands other than query-* (which only read) were queued on
 * this connection so far: when it did not move, QEMU's block graph and
 * its bitmaps are as they were, except for what its jobs do on their own
 * (core/bitmaps.c's top nodes rely on it). */
uint64_t qmp_changes(const Qmp *qmp);

/* Queues {"execute": command, "arguments": args, "id": N}. Takes ownership
 * of args (may be NULL) even on failure. Returns the id (> 0) or -errno
 * (-ENOTCONN when disconnected). */
int64_t qmp_send(Qmp *qmp, const char *command, json_object *args, qmp_reply_func_t cb, void *userdata);

/* As qmp_send(), with a copy of descriptor fd (the caller keeps its own)
 * attached to the command's first byte (SCM_RIGHTS): what add-fd and
 * getfd take. One descriptor per command, in order with the rest. */
int64_t qmp_send_with_fd(Qmp *qmp, const char *command, json_object *args, int fd, qmp_reply_func_t cb, void *userdata);

/* Sends a command object the caller built (must hold "execute"; an "id"
 * the caller put in is replaced by ours and restored in the reply object
 * handed to cb as `result`: the whole reply, {"return": …} or {"error": …},
 * with error == 0 either way). Used for QemuMonitorCommand passthrough.
 * Takes ownership of command. */
int64_t qmp_send_raw(Qmp *qmp, json_object *command, qmp_reply_func_t cb, void *userdata);

/* The callback of that id will not be called. -ENOENT if unknown. */
int qmp_cancel(Qmp *qmp, int64_t id);

/* event == NULL subscribes to all events. Returns an id > 0 or -errno. */
int qmp_subscribe(Qmp *qmp, const char *event, qmp_event_func_t cb, void *userdata);
int qmp_unsubscribe(Qmp *qmp, int id);

/* Drops the connection now: pending replies get -ECONNRESET, the
 * disconnect callback is NOT called (the owner asked for it). */
void qmp_close(Qmp *qmp);
