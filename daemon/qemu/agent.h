/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Guest agent client: one connection to the UNIX socket of a domain's
 * org.qemu.guest_agent.0 channel (QEMU's chardev, behind it qemu-ga in the
 * guest), driven by sd-event. Shaped like the QMP client (qemu/qmp.h): an
 * opaque, ref-counted object with send(command, args, callback) -> id,
 * cancel(id) and a state callback. No D-Bus in here.
 *
 * The agent protocol has no ids and the guest side may restart at any
 * time, so:
 *   - commands go out one at a time, each preceded by a resync: one 0xFF
 *     byte (qemu-ga resets its parser on it) and guest-sync-delimited with
 *     a fresh random id; every line until {"return": that id} is dropped
 *     (a late reply to an earlier command, the GenericError qemu-ga answers
 *     to the 0xFF byte itself, partial junk), 0xFF bytes in the input are
 *     skipped wherever they are;
 *   - every exchange (sync and command) has a timeout; when it passes the
 *     command fails with -ETIMEDOUT and the agent counts as not synced.
 * "Synced" (agent_is_synced) means the last sync was answered and nothing
 * timed out since: the domain's AgentConnected.
 */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

typedef struct Agent Agent;

#define AGENT_TIMEOUT_DEFAULT_USEC (10ULL * 1000000ULL)

/* Reply to one command, called exactly once unless cancelled, never from
 * inside agent_send():
 *   error == 0:            `result` is the "return" member (borrowed);
 *   -QSNAP_E_QEMU_FAILED:  the agent answered an "error" (class, desc);
 *   -ETIMEDOUT:            no sync or no reply within the timeout;
 *   -ECONNRESET:           the socket closed (QEMU gone, agent_close()). */
typedef void (*agent_reply_func_t)(
                Agent *agent,
                int error,
                json_object *result,
                const char *err_class,
                const char *err_desc,
                void *userdata);

/* Synced state changed (see above). */
typedef void (*agent_state_func_t)(Agent *agent, bool synced, void *userdata);

/* Takes ownership of fd (a connected stream socket). */
int agent_new_from_fd(sd_event *event, int fd, Agent **ret);
/* -ENOENT / -ECONNREFUSED when nobody listens there. */
int agent_connect(sd_event *event, const char *path, Agent **ret);

Agent *agent_ref(Agent *a);
Agent *agent_unref(Agent *a);
static inline void agent_unrefp(Agent **a) {
        if (*a)
                agent_unref(*a);
}

void agent_set_state_callback(Agent *a, agent_state_func_t cb, void *userdata);
int agent_set_description(Agent *a, const char *description);

bool agent_is_connected(Agent *a);
bool agent_is_synced(Agent *a);

/* Queues a resync when nothing is queued (to learn whether an agent
 * listens, e.g. after the guest opened its port). timeout_usec 0 = the
 * default. Returns 0, or -ENOTCONN. */
int agent_probe(Agent *a, uint64_t timeout_usec);

/* Queues {"execute": command, "arguments": args} (args taken, may be NULL)
 * behind a resync; timeout_usec (0 = the default) applies to the sync and
 * to the reply each. Returns an id > 0 or -errno (-ENOTCONN). */
int64_t agent_send(Agent *a, const char *command, json_object *args, uint64_t timeout_usec,
                   agent_reply_func_t cb, void *userdata);

/* The callback of that id will not be called. -ENOENT if unknown. */
int agent_cancel(Agent *a, int64_t id);

/* Drops the connection: pending commands get -ECONNRESET; the state
 * callback is not called. */
void agent_close(Agent *a);
