/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * CheckAuthorization with subject ("system-bus-name", {"name": sender}),
 * the method call's ALLOW_INTERACTIVE_AUTHORIZATION flag passed on as
 * polkit's AllowUserInteraction. A query lives from the first handler
 * run until the call was handled again after the last answer, keyed by
 * the message it authorizes; it keeps one verdict per action and details.
 */
#include <systemd/sd-event.h>

#include "bus/bus-polkit.h"
#include "util/util.h"

#define POLKIT_TIMEOUT_USEC (300 * USEC_PER_SEC) /* a person may be typing a password */

typedef struct PolkitAnswer {
        char *key;           /* action, then the details: what was asked */
        bool authorized;
        bool challenge;
        bool used;           /* the handler has read it */
        sd_bus_error error;  /* set when polkit itself failed */
} PolkitAnswer;

struct PolkitQuery {
        PolkitRegistry *registry;
        sd_bus_message *request;
        char *sender;
        char *asking;        /* the key of the check in flight */
        sd_bus_slot *slot;   /* non-NULL while polkit has not answered */
        sd_event_source *defer; /* drops the query once the call was handled again */
        PolkitAnswer *answers;
        size_t n_answers;
        PolkitQuery *next;
};

static PolkitQuery *polkit_query_free(PolkitQuery *q) {
        if (!q)
                return NULL;
        if (q->slot)
                q->registry->n_pending--;
        sd_bus_slot_unref(q->slot);
        sd_event_source_disable_unref(q->defer);
        for (size_t i = 0; i < q->n_answers; i++) {
                if (!q->answers[i].used)
                        log_debug("polkit: the answer about %s for %s was not used: the call ended without asking "
                                  "again (its object went away or it was refused on other grounds meanwhile).",
                                  q->answers[i].key, strna(q->sender));
                free(q->answers[i].key);
                sd_bus_error_free(&q->answers[i].error);
        }
        free(q->answers);
        sd_bus_message_unref(q->request);
        free(q->sender);
        free(q->asking);
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

/* Runs at idle priority, after the bus (normal priority) dispatched the
 * requeued call: whatever the handler did with the answer, it is done. A
 * handler that asked about another action meanwhile keeps the query. */
static int on_query_handled(sd_event_source *s, void *userdata) {
        PolkitQuery *q = userdata;

        q->defer = sd_event_source_disable_unref(q->defer);
        if (!q->slot)
                polkit_registry_remove(q->registry, q);
        return 0;
}

static PolkitAnswer *query_find_answer(PolkitQuery *q, const char *key) {
        for (size_t i = 0; i < q->n_answers; i++)
                if (streq(q->answers[i].key, key))
                        return q->answers + i;
        return NULL;
}

static int on_check_authorization(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        PolkitQuery *q = userdata;
        const sd_bus_error *e;
        PolkitAnswer *answers, *a;
        int authorized, challenge, r;

        q->slot = sd_bus_slot_unref(q->slot);
        q->registry->n_pending--;

        answers = reallocarray(q->answers, q->n_answers + 1, sizeof(PolkitAnswer));
        if (!answers) {
                log_oom();
                polkit_registry_remove(q->registry, q); /* the caller gets no reply; its timeout tells */
                return 0;
        }
        q->answers = answers;
        a = q->answers + q->n_answers++;
        *a = (PolkitAnswer) { .key = TAKE_PTR(q->asking), .error = SD_BUS_ERROR_NULL };

        e = sd_bus_message_get_error(reply);
        if (e) {
                log_warning("polkit check of %s failed: %s: %s", a->key, e->name, strna(e->message));
                sd_bus_error_set(&a->error, SD_BUS_ERROR_ACCESS_DENIED, "Authorization check failed: polkit did not answer.");
        } else {
                r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
                if (r >= 0)
                        r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
                if (r < 0) {
                        log_warning_errno(r, "Unreadable polkit answer for %s: %m", a->key);
                        sd_bus_error_set(&a->error, SD_BUS_ERROR_ACCESS_DENIED, "Authorization check failed: unreadable answer.");
                } else {
                        a->authorized = authorized;
                        a->challenge = challenge;
                }
        }

        /* Run the method handler again; it will find this answer. */
        r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(q->request), q->request);
        if (r >= 0 && !q->defer) {
                r = sd_event_add_defer(sd_bus_get_event(sd_bus_message_get_bus(q->request)), &q->defer,
                                       on_query_handled, q);
                if (r >= 0)
                        r = sd_event_source_set_priority(q->defer, SD_EVENT_PRIORITY_IDLE);
                if (r >= 0)
                        r = sd_event_source_set_enabled(q->defer, SD_EVENT_ONESHOT);
        }
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

/* "action domain=vm1 disk=vda": a verdict holds for exactly what was asked
 * (the disk behind a path may change while polkit decides). */
static char *query_key(const char *action, const char *const *details) {
        _cleanup_strv_free_ char **l = NULL;

        if (strv_extend(&l, action) < 0)
                return NULL;
        for (const char *const *k = details; k && k[0] && k[1]; k += 2)
                if (strv_extendf(&l, "%s=%s", k[0], k[1]) < 0)
                        return NULL;
        return strv_join(l, " ");
}

static int verdict(sd_bus_message *call, const char *action, PolkitAnswer *a, sd_bus_error *error) {
        int r;

        a->used = true;
        if (sd_bus_error_is_set(&a->error))
                r = sd_bus_error_copy(error, &a->error);
        else if (a->authorized)
                r = 1;
        else if (a->challenge)
                r = sd_bus_error_setf(error, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                      "Interactive authentication required for %s.", action);
        else
                r = sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED, "Not authorized: %s.", action);
        log_debug("polkit: %s %s for %s.", a->key, r > 0 ? "granted" : "denied", strna(sd_bus_message_get_sender(call)));
        return r;
}

static unsigned pending_of(PolkitRegistry *registry, const char *sender) {
        unsigned n = 0;

        for (PolkitQuery *q = registry->queries; q; q = q->next)
                if (q->slot && streq_ptr(q->sender, sender))
                        n++;
        return n;
}

static int query_ask(PolkitQuery *q, sd_bus_message *call, const char *action, const char *const *details,
                     char *key, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *pk = NULL;
        _cleanup_free_ char *k = key;
        sd_bus *bus = sd_bus_message_get_bus(call);
        unsigned mine = pending_of(q->registry, q->sender);
        int r;

        if (mine >= POLKIT_PENDING_MAX_PER_CALLER || q->registry->n_pending >= POLKIT_PENDING_MAX) {
                log_warning("polkit: refusing a check of %s for %s: %u of its checks and %u in all are pending.",
                            action, strna(q->sender), mine, q->registry->n_pending);
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many authorization checks pending (%u of yours, at most %u; %u in all, at "
                                         "most %u); try again once they are answered.",
                                         mine, POLKIT_PENDING_MAX_PER_CALLER, q->registry->n_pending, POLKIT_PENDING_MAX);
        }

        r = sd_bus_message_new_method_call(bus, &pk, "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                                           "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization");
        if (r < 0)
                return r;
        r = sd_bus_message_append(pk, "(sa{sv})s", "system-bus-name", 1, "name", "s", q->sender, action);
        if (r < 0)
                return r;
        r = append_details(pk, details);
        if (r < 0)
                return r;
        r = sd_bus_message_append(pk, "us", (uint32_t) (sd_bus_message_get_allow_interactive_authorization(call) > 0), "");
        if (r < 0)
                return r;
        r = sd_bus_call_async(bus, &q->slot, pk, on_check_authorization, q, POLKIT_TIMEOUT_USEC);
        if (r < 0)
                return r;
        free(q->asking);
        q->asking = TAKE_PTR(k);
        q->registry->n_pending++;
        return 0;
}

int bus_verify_polkit_async(
                sd_bus_message *call,
                const char *action,
                const char *const *details,
                PolkitRegistry *registry,
                sd_bus_error *error) {

        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        _cleanup_free_ char *key = NULL;
        PolkitQuery *q;
        PolkitAnswer *a;
        uid_t euid;
        int r;

        key = query_key(action, details);
        if (!key)
                return -ENOMEM;
        for (q = registry->queries; q; q = q->next)
                if (q->request == call)
                        break;
        if (q) {
                a = query_find_answer(q, key);
                if (a)
                        return verdict(call, action, a, error);
                if (q->slot)
                        return 0; /* still waiting */
                r = query_ask(q, call, action, details, TAKE_PTR(key), error);
                return r < 0 ? r : 0;
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

        q = new0(PolkitQuery, 1);
        if (!q)
                return -ENOMEM;
        *q = (PolkitQuery) { .registry = registry, .request = sd_bus_message_ref(call) };
        q->sender = strdup(strempty(sd_bus_message_get_sender(call)));
        if (!q->sender) {
                polkit_query_free(q);
                return -ENOMEM;
        }
        r = query_ask(q, call, action, details, TAKE_PTR(key), error);
        if (r < 0) {
                polkit_query_free(q);
                return r;
        }
        q->next = registry->queries;
        registry->queries = q;
        return 0;
}

int bus_polkit_explain_denial(sd_bus_error *error, const char *text) {
        _cleanup_free_ char *name = NULL, *copy = NULL;

        if (!sd_bus_error_has_names(error, SD_BUS_ERROR_ACCESS_DENIED, SD_BUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED))
                return sd_bus_error_get_errno(error) > 0 ? -sd_bus_error_get_errno(error) : -EACCES;
        name = strdup(error->name);
        copy = strdup(text);
        if (!name || !copy)
                return -ENOMEM;
        sd_bus_error_free(error);
        return sd_bus_error_set(error, name, copy);
}
