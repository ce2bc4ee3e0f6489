/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Measurements before a call is answered: a check (CheckDelete, Delete
 * before polkit) that noted unmeasured files (core/measure.c) has them
 * measured by asynchronous qemu-img children; the call is dispatched
 * again when they are done and the check, run again, finds the answers.
 * The event loop never waits for qemu-img. Dry runs are rate-limited per
 * caller: at most MEASURE_CALLS_MAX_PER_CALLER calls of one bus name
 * measuring at a time, MEASURE_CALLS_MAX in all; beyond, LimitsExceeded.
 */
#pragma once

#include <systemd/sd-bus.h>

#include "core/manager.h"

#define MEASURE_CALLS_MAX_PER_CALLER 2U
#define MEASURE_CALLS_MAX 8U

typedef struct MeasureCall MeasureCall;

typedef struct MeasureRegistry {
        MeasureCall *calls;
        unsigned n_calls;
} MeasureRegistry;

/* After the check ran: 1 when its notes are being measured (the handler
 * returns 1; the call comes back), 0 to answer now (nothing noted, or this
 * is the call coming back), < 0 with *error set (LimitsExceeded). Clears
 * the notes either way. */
int bus_measure_first(sd_bus_message *m, Manager *mgr, MeasureRegistry *reg, sd_bus_error *error);

void measure_registry_done(MeasureRegistry *reg);
