/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What core/bitmaps.c and core/bitmaps-copy.c share: the per-domain state
 * (d->bitmaps) keeps the copies whose bitmap actions wait for READY.
 */
#pragma once

#include "core/bitmaps.h"

/* A copy whose target gets the checkpoints' bitmaps at READY. */
typedef struct ArmedCopy {
        char *job_id;
        BitmapActions actions;
        json_object *recorded; /* an adopted copy's: the journal's actions */
        struct ArmedCopy *next;
} ArmedCopy;

/* The domain's list of armed copies (its bitmap state made on first use);
 * NULL when out of memory. */
ArmedCopy **bitmaps_armed_list(Domain *d);
