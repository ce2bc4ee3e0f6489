/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CheckAuthorization with subject ("system-bus-name", {"name": sender}),
 * the method call's ALLOW_INTERACTIVE_AUTHORIZATION flag passed on as
 * polkit's AllowUserInteraction. A query lives from the first handler
 * run to the second, keyed by the message it authorizes.
 */
#include "bus/bus-polkit.h"
#include "util/util.h"

#define POLKIT_TIMEOUT_USEC (300 * USEC_PER_SEC) /* a person may be typing a password */

struct PolkitQuery {
        PolkitRegistry *registry;
        sd_bus_message *request;
        char *action;
        sd_bus_slot *slot;   /* non-NULL while polkit has not answered */
        sd_bus_error error;  /* set when polkit itself failed */
        bool authorized;
        bool challenge;
        PolkitQuery *next;
};

static PolkitQuery *polkit_query_free(PolkitQuery *q) {
        if (!q)
                return NULL;
        if (q->slot)
                q->registry->n_pending--;
        sd_bus_slot_unref(q->slot);
        sd_bus_message_unref(q->request);
        sd_bus_error_free(&q->error);
        free(q->action);
        free(q);
        return NULL;
}

static void polkit_registry_remove(PolkitRegistry *registry, PolkitQuery *q) {
        for (PolkitQuery **p = &registry->queries; *p; p = &(*p)->next)
                if (*p == q) {
                        *p = q->next;
                        break;
                }
        polkit_query_free(q);
}

void polkit_registry_done(PolkitRegistry *registry) {
        while (registry->queries)
                polkit_registry_remove(registry, registry->queries);
}

static int on_check_authorization(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitQuery *q = userdata;
        const sd_bus_error *e;
        int authorized, challenge, r;

        q->slot = sd_bus_slot_unref(q->slot);
        q->registry->n_pending--;

        e = sd_bus_message_get_error(reply);
        if (e) {
                log_warning("polkit check of %s failed: %s: %s", q->action, e->name, strna(e->message));
                sd_bus_error_set(&q->error, SD_BUS_ERROR_ACCESS_DENIED, "Authorization check failed: polkit did not answer.");
        } else {
                r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
                if (r >= 0)
                        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
                if (r < 0) {
                        log_warning_errno(r, "Unreadable polkit answer for %s: %m", q->action);
                        sd_bus_error_set(&q->error, SD_BUS_ERROR_ACCESS_DENIED, "Authorization check failed: unreadable answer.");
                } else {
                        q->authorized = authorized;
                        q->challenge = challenge;
                }
        }

        /* Run the method handler again; it will find this query answered. */
        r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(q->request), q->request);
        if (r < 0) {
                log_error_errno(r, "Failed to requeue the call after the polkit answer: %m");
                polkit_registry_remove(q->registry, q);
        }
        return 0;
}

static int append_details(sd_bus_message *m, const char *const *details) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{ss}");
        if (r < 0)
                return r;
        for (const char *const *k = details; k && k[0] && k[1]; k += 2) {
                r = sd_bus_message_append(m, "{ss}", k[0], k[1]);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

int bus_verify_polkit_async(
                sd_bus_message *call,
                const char *action,
                const char *const *details,
                PolkitRegistry *registry,
                sd_bus_error *error) {

        _cleanup_(sd_bus_message_unrefp) sd_bus_message *pk = NULL;
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        sd_bus *bus = sd_bus_message_get_bus(call);
        PolkitQuery *q;
        bool interactive;
        uid_t euid;
        int r;

        for (q = registry->queries; q; q = q->next)
                if (q->request == call && streq(q->action, action))
                        break;
        if (q) {
                if (q->slot)
                        return 0; /* still waiting */
                if (sd_bus_error_is_set(&q->error))
                        r = sd_bus_error_copy(error, &q->error);
                else if (q->authorized)
                        r = 1;
                else if (q->challenge)
                        r = sd_bus_error_setf(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                              "Interactive authentication required for %s.", action);
                else
                        r = sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Not authorized: %s.", action);
                if (r < 0 || r == 1)
                        log_debug("polkit: %s %s for %s.", action, r > 0 ? "granted" : "denied",
                                  strna(sd_bus_message_get_sender(call)));
                polkit_registry_remove(registry, q);
                return r;
        }

        /* dbus-daemon hands us the effective uid only (see the notes). */
        r = sd_bus_query_sender_creds(call, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        r = sd_bus_creds_get_euid(creds, &euid);
        if (r < 0)
                return r;
        if (euid == 0 || !registry->enabled)
                return 1;

        interactive = sd_bus_message_get_allow_interactive_authorization(call) > 0;

        r = sd_bus_message_new_method_call(bus, &pk, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                                           "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization");
        if (r < 0)
                return r;
        r = sd_bus_message_append(pk, "(sa{sv})s", "system-bus-name", 1, "name", "s", sd_bus_message_get_sender(call), action);
        if (r < 0)
                return r;
        r = append_details(pk, details);
        if (r < 0)
                return r;
        r = sd_bus_message_append(pk, "us", (uint32_t) interactive, "");
        if (r < 0)
                return r;

        q = new0(PolkitQuery, 1);
        if (!q)
                return -ENOMEM;
        *q = (PolkitQuery) { .registry = registry, .request = sd_bus_message_ref(call), .error = SD_BUS_ERROR_NULL };
        q->action = strdup(action);
        if (!q->action) {
                polkit_query_free(q);
                return -ENOMEM;
        }
        r = sd_bus_call_async(bus, &q->slot, pk, on_check_authorization, q, POLKIT_TIMEOUT_USEC);
        if (r < 0) {
                polkit_query_free(q);
                return r;
        }
        registry->n_pending++;
        q->next = registry->queries;
        registry->queries = q;
        return 0;
}
