/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A domain's guest agent: the connection to its org.qemu.guest_agent.0
 * channel while QEMU runs (qemu/agent.h), AgentConnected, and agent
 * commands with the manager's agent timeout whose failures come back as
 * named errors. No D-Bus in here.
 */
#pragma once

#include <json-c/json.h>
#include <stdbool.h>

#include "core/domain.h"

/* The end of an agent command: 0 with the agent's "return" (borrowed), or
 *   -QSNAP_E_AGENT_UNRESPONSIVE: no answer within the agent timeout, or
 *                                the guest closed the port meanwhile;
 *   -QSNAP_E_QEMU_FAILED:        the agent answered an error (its text);
 *   -QSNAP_E_NOT_RUNNING:        QEMU went away, or no channel;
 * with a sentence for the caller. Never called from inside the send. */
typedef void (*DomainAgentDoneFunc)(Domain *d, int error, const char *message, json_object *result, void *userdata);

/* The definition in effect has the agent's channel. */
bool domain_has_agent_channel(const Domain *d);
/* QUIESCE's preconditions (a snapshot's, a checkpoint's or a backup's): the agent's
 * channel and a running guest; -QSNAP_E_UNSUPPORTED or
 * -QSNAP_E_OPERATION_INVALID with *ret_message. Whether the agent answers
 * is found out by trying. */
int domain_agent_check_quiesce(const Domain *d, char **ret_message);
/* AgentConnected. */
bool domain_agent_connected(const Domain *d);

/* QEMU is up (started, or attached to): connect to the channel's socket
 * and probe. A failure is logged: the domain runs without its agent. */
void domain_agent_attach(Domain *d);
/* QEMU is gone, or qsnapd lets go: pending commands end in NotRunning.
 * notify: tell the bus when AgentConnected changed (not while the domain
 * goes away). */
void domain_agent_detach(Domain *d, bool notify);
/* Every QMP event: VSERPORT_CHANGE of the agent's port probes again (the
 * guest opened it) or clears AgentConnected (the guest closed it). */
void domain_agent_qmp_event(Domain *d, const char *event, json_object *data);

/* Sends an agent command (args taken) with the agent timeout. < 0 with
 * *ret_message when it cannot be sent (then `done` is never called). */
int domain_agent_command(Domain *d, const char *command, json_object *args, DomainAgentDoneFunc done, void *userdata,
                         char **ret_message);

/* Why a QUIESCE operation thaws the guest; each says so in the log. */
typedef enum DomainThawReason {
        DOMAIN_THAW_DONE,     /* the operation is done: its reply waits for the thaw */
        DOMAIN_THAW_FAILED,   /* it failed after the freeze was sent: nobody waits */
        DOMAIN_THAW_RECOVERY, /* a killed qsnapd's operation left the guest frozen */
} DomainThawReason;

/* Sends guest-fsfreeze-thaw for a QUIESCE `what` ("snapshot",
 * "checkpoint", "backup") and logs how it went: the operation's outcome never
 * depends on it. done (may be NULL) is called once the agent answered or
 * gave up; < 0 when the thaw cannot be sent (logged), then done is never
 * called. */
int domain_agent_thaw(Domain *d, const char *what, DomainThawReason why, void (*done)(Domain *d, void *userdata),
                      void *userdata);
