/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Calls waiting for their measurements (bus/bus-measure.h), keyed by the
 * message, like the polkit queries: the call is queued again when its
 * batch ended, and an idle-priority event drops the entry once the bus
 * dispatched it (whether or not the handler came back: its object may be
 * gone meanwhile).
 */
#include <systemd/sd-event.h>

#include "bus/bus-measure.h"
#include "core/measure.h"
#include "util/util.h"

struct MeasureCall {
        MeasureRegistry *registry;
        Manager *manager;
        sd_bus_message *request;
        char *sender;
        MeasureBatch *batch;
        sd_event_source *defer;
        bool measured;
        MeasureCall *next;
};

static void call_free(MeasureCall *c) {
        measure_batch_free(c->batch);
        sd_event_source_disable_unref(c->defer);
        sd_bus_message_unref(c->request);
        free(c->sender);
        free(c);
}

static void registry_remove(MeasureRegistry *reg, MeasureCall *c) {
        for (MeasureCall **p = &reg->calls; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        reg->n_calls--;
                        break;
                }
        call_free(c);
}

void measure_registry_done(MeasureRegistry *reg) {
        while (reg->calls)
                registry_remove(reg, reg->calls);
}

static int on_handled(sd_event_source *s, void *userdata) {
        MeasureCall *c = userdata;

        registry_remove(c->registry, c);
        return 0;
}

static void on_measured(void *userdata) {
        MeasureCall *c = userdata;
        int r;

        /* The batch is done with us once this returns. */
        c->batch = measure_batch_free(c->batch);
        c->measured = true;
        r = sd_bus_enqueue_for_read(sd_bus_message_get_bus(c->request), c->request);
        if (r < 0) {
                log_warning_errno(r, "Cannot queue a measured call again: %m");
                (void) sd_bus_reply_method_errno(c->request, -r, NULL);
                return registry_remove(c->registry, c);
        }
        r = sd_event_add_defer(c->manager->event, &c->defer, on_handled, c);
        if (r >= 0)
                r = sd_event_source_set_priority(c->defer, SD_EVENT_PRIORITY_IDLE);
        if (r < 0)
                log_warning_errno(r, "Cannot watch a measured call: %m");
}

int bus_measure_first(sd_bus_message *m, Manager *mgr, MeasureRegistry *reg, sd_bus_error *error) {
        const char *sender = sd_bus_message_get_sender(m);
        MeasureCall *c;
        unsigned mine = 0;
        int r;

        for (c = reg->calls; c; c = c->next)
                if (c->request == m)
                        break;
        if (c && c->measured) {
                /* Back with the answers: whatever is still unmeasured (a
                 * file changed meanwhile) counts its allocated size. */
                registry_remove(reg, c);
                measure_notes_reset(mgr);
                return 0;
        }
        if (c || !measure_notes_any(mgr)) {
                measure_notes_reset(mgr);
                return c ? 1 : 0;
        }
        for (c = reg->calls; c; c = c->next)
                mine += streq_ptr(c->sender, sender);
        if (mine >= MEASURE_CALLS_MAX_PER_CALLER || reg->n_calls >= MEASURE_CALLS_MAX) {
                measure_notes_reset(mgr);
                log_warning("Refusing a check for %s: %u of its checks and %u in all are measuring images.", strna(sender),
                            mine, reg->n_calls);
                return sd_bus_error_setf(error, SD_BUS_ERROR_LIMITS_EXCEEDED,
                                         "Too many checks measuring images (%u of yours, at most %u; %u in all, at most "
                                         "%u); try again once they are answered.",
                                         mine, MEASURE_CALLS_MAX_PER_CALLER, reg->n_calls, MEASURE_CALLS_MAX);
        }
        c = new0(MeasureCall, 1);
        if (!c || (sender && !(c->sender = strdup(sender)))) {
                free(c);
                measure_notes_reset(mgr);
                return -ENOMEM;
        }
        c->registry = reg;
        c->manager = mgr;
        c->request = sd_bus_message_ref(m);
        r = measure_start(mgr, on_measured, c, &c->batch);
        if (r <= 0) {
                call_free(c);
                measure_notes_reset(mgr);
                return r;
        }
        c->next = reg->calls;
        reg->calls = c;
        reg->n_calls++;
        return 1;
}
