/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * json-c, the one JSON library of the daemon (QMP, operation journals),
 * with the cleanup attribute its objects need: _cleanup_(json_object_putp).
 */
#pragma once

#include <json-c/json.h>

#include "util/util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);

/* Member `key` when it is a boolean true / an integer (else false / 0). */
static inline bool json_get_bool_member(json_object *o, const char *key) {
        json_object *v = NULL;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_boolean) &&
               json_object_get_boolean(v);
}

static inline uint64_t json_get_u64_member(json_object *o, const char *key) {
        json_object *v = NULL;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return 0;
        return (uint64_t) json_object_get_int64(v);
}
