/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Asynchronous polkit checks over D-Bus, the way systemd's daemons do
 * them: the first call of a method handler sends CheckAuthorization and
 * returns "pending"; when polkit answers, the original message is put
 * back into the bus's read queue, the handler runs again and this time
 * gets the verdict. uid 0 is allowed without asking.
 *
 * One query per method call holds the verdicts of every action that call
 * asked about, so a handler may need several actions (each one asked in
 * turn). The query goes once the call was handled again, whether or not
 * the handler still asked (the object may be gone, or the call refused on
 * other grounds meanwhile). Checks in flight are bounded per caller and in
 * all: beyond, the call fails with org.freedesktop.DBus.Error.LimitsExceeded.
 */
#pragma once

#include <stdbool.h>
#include <systemd/sd-bus.h>

/* Unanswered checks: per caller (bus name), and in all (our connection's
 * replies pending at the bus are limited too: dbus-daemon's default on the
 * system bus is 128). */
#define POLKIT_PENDING_MAX_PER_CALLER 16U
#define POLKIT_PENDING_MAX 64U

typedef struct PolkitQuery PolkitQuery;

typedef struct PolkitRegistry {
        bool enabled;        /* false: everybody is allowed (the --user bus already limits callers) */
        PolkitQuery *queries;
        unsigned n_pending;  /* checks polkit has not answered yet */
} PolkitRegistry;

void polkit_registry_done(PolkitRegistry *registry);

/* details: NULL-terminated key, value, key, value, … (may be NULL).
 * Returns 1 when allowed, 0 when the answer is pending (the handler must
 * return 1 and will be called again), < 0 with *error set when denied
 * (org.freedesktop.DBus.Error.AccessDenied or
 * org.freedesktop.DBus.Error.InteractiveAuthorizationRequired) or when
 * too many checks are pending (org.freedesktop.DBus.Error.LimitsExceeded). */
int bus_verify_polkit_async(
                sd_bus_message *call,
                const char *action,
                const char *const *details,
                PolkitRegistry *registry,
                sd_bus_error *error);

/* Replaces the message of a denial (AccessDenied or
 * InteractiveAuthorizationRequired) by text, so the caller learns why an
 * action was needed; other errors stay. Returns the error's errno (< 0). */
int bus_polkit_explain_denial(sd_bus_error *error, const char *text);
