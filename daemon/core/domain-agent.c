/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The guest agent of a domain (core/domain-agent.h): qsnapd connects to
 * <runtime>/<uuid>.agent, the socket QEMU listens on for the channel
 * (core/domain-launch.c), once QEMU is up. Until qemu-ga opens the port in
 * the guest, what we send waits in QEMU (a virtio-serial port reads
 * nothing from its socket while closed), so a probe simply times out and
 * the VSERPORT_CHANGE event that says the port opened starts the next one.
 */
#include "core/domain-agent.h"
#include "core/manager.h"
#include "qemu/agent.h"
#include "util/error.h"
#include "util/util.h"

#define AGENT_PORT_ID "agent0"

typedef struct AgentCall {
        Domain *domain; /* a reference */
        char *command;
        DomainAgentDoneFunc done;
        void *userdata;
} AgentCall;

bool domain_has_agent_channel(const Domain *d) {
        return domain_is_managed(d) && domain_current_def(d)->agent_channel;
}

int domain_agent_check_quiesce(const Domain *d, char **ret_message) {
        if (!domain_has_agent_channel(d))
                return error_message(ret_message, -QSNAP_E_UNSUPPORTED,
                                     "QUIESCE needs a guest agent: domain '%s' has no <channel> with "
                                     "<target type='virtio' name='org.qemu.guest_agent.0'/>.", d->def->name);
        if (d->state != DOMAIN_RUNNING)
                return error_message(ret_message, -QSNAP_E_OPERATION_INVALID,
                                     "QUIESCE needs a running guest to freeze its filesystems; domain '%s' is %s.",
                                     d->def->name, domain_state_to_string(d->state));
        return 0;
}

bool domain_agent_connected(const Domain *d) {
        return agent_is_synced(d->agent);
}

static void on_agent_state(Agent *a, bool synced, void *userdata) {
        Domain *d = userdata;

        log_info("Domain '%s': guest agent %s.", d->def->name, synced ? "connected" : "not answering");
        manager_notify_changed(d->manager, d, DOMAIN_CHANGE_AGENT);
}

void domain_agent_attach(Domain *d) {
        _cleanup_free_ char *path = NULL, *description = NULL;
        Agent *a = NULL;
        int r;

        if (!domain_has_agent_channel(d) || d->agent)
                return;
        path = domain_qemu_socket_path(d, ".agent");
        if (!path)
                return (void) log_oom();
        r = agent_connect(d->manager->event, path, &a);
        if (r < 0)
                return (void) log_warning_errno(r, "Domain '%s': cannot connect to the guest agent channel %s: %m",
                                                d->def->name, path);
        description = strprintf("guest agent of domain '%s'", d->def->name);
        if (description)
                (void) agent_set_description(a, description);
        agent_set_state_callback(a, on_agent_state, d);
        d->agent = a;
        (void) agent_probe(a, d->manager->config.agent_timeout_usec);
}

void domain_agent_detach(Domain *d, bool notify) {
        bool was = domain_agent_connected(d);
        Agent *a = d->agent;

        if (!a)
                return;
        d->agent = NULL;
        agent_set_state_callback(a, NULL, NULL);
        agent_close(a); /* pending commands: -ECONNRESET */
        agent_unref(a);
        if (was && notify)
                manager_notify_changed(d->manager, d, DOMAIN_CHANGE_AGENT);
}

void domain_agent_qmp_event(Domain *d, const char *event, json_object *data) {
        json_object *id, *open;

        if (!d->agent || !streq(event, "VSERPORT_CHANGE") || !json_object_object_get_ex(data, "id", &id) ||
            !streq_ptr(json_object_get_string(id), AGENT_PORT_ID) || !json_object_object_get_ex(data, "open", &open))
                return;
        if (json_object_get_boolean(open)) {
                log_debug("Domain '%s': the guest opened the agent port.", d->def->name);
                (void) agent_probe(d->agent, d->manager->config.agent_timeout_usec);
        } else {
                /* qemu-ga went away in the guest: reconnect, so that
                 * nothing it was sent before is read by the next one. */
                log_info("Domain '%s': the guest closed the agent port.", d->def->name);
                domain_agent_detach(d, true);
                domain_agent_attach(d);
        }
}

static void agent_call_free(AgentCall *c) {
        domain_unref(c->domain);
        free(c->command);
        free(c);
}

static void on_agent_reply(Agent *a, int error, json_object *result, const char *cls, const char *desc, void *userdata) {
        AgentCall *c = userdata;
        Domain *d = c->domain;
        _cleanup_free_ char *message = NULL;
        int r = 0;

        if (error == -ETIMEDOUT) {
                r = -QSNAP_E_AGENT_UNRESPONSIVE;
                message = strprintf("The guest agent of domain '%s' did not answer %s within %llu s: is qemu-ga running "
                                    "in the guest?", d->def->name, c->command,
                                    (unsigned long long) (d->manager->config.agent_timeout_usec / USEC_PER_SEC));
        } else if (error == -QSNAP_E_QEMU_FAILED) {
                r = error;
                message = strprintf("The guest agent of domain '%s' refused %s: %s", d->def->name, c->command,
                                    strna(desc));
        } else if (error < 0 && qmp_is_connected(d->qmp)) {
                /* QEMU runs on: the guest closed the port (qemu-ga died). */
                r = -QSNAP_E_AGENT_UNRESPONSIVE;
                message = strprintf("The guest agent of domain '%s' went away during %s: is qemu-ga running in the "
                                    "guest?", d->def->name, c->command);
        } else if (error < 0) {
                r = -QSNAP_E_NOT_RUNNING;
                message = strprintf("The guest agent channel of domain '%s' closed during %s (%s).", d->def->name,
                                    c->command, qsnap_strerror(error));
        }
        if (c->done)
                c->done(d, r, message, r < 0 ? NULL : result, c->userdata);
        agent_call_free(c);
}

int domain_agent_command(Domain *d, const char *command, json_object *args, DomainAgentDoneFunc done, void *userdata,
                         char **ret_message) {
        AgentCall *c;
        int64_t id;

        if (!domain_has_agent_channel(d)) {
                json_object_put(args);
                return error_message(ret_message, -QSNAP_E_UNSUPPORTED,
                                     "Domain '%s' has no guest agent <channel> (org.qemu.guest_agent.0).", d->def->name);
        }
        if (!d->agent || !agent_is_connected(d->agent)) {
                json_object_put(args);
                return error_message(ret_message, -QSNAP_E_NOT_RUNNING,
                                     "The guest agent channel of domain '%s' is not open (is QEMU running?).",
                                     d->def->name);
        }
        c = new0(AgentCall, 1);
        if (!c || !(c->command = strdup(command))) {
                free(c);
                json_object_put(args);
                return -ENOMEM;
        }
        c->domain = domain_ref(d);
        c->done = done;
        c->userdata = userdata;
        id = agent_send(d->agent, command, args, d->manager->config.agent_timeout_usec, on_agent_reply, c);
        if (id < 0) {
                agent_call_free(c);
                return error_message(ret_message, (int) id, "Cannot send %s to the guest agent of domain '%s': %s",
                                     command, d->def->name, qsnap_strerror((int) id));
        }
        return 0;
}
