/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The journal file of a running operation: <state_dir>/ops/<id>.<kind>
 * (id: the domain's UUID; kind e.g. "snapshot-create"), a JSON object
 * written crash-safely before the operation touches anything and removed
 * when it finished or rolled back; start-up recovery reads it. Plus the
 * few lenient getters the recoveries read it with. Knows folders and
 * names, not domains. No D-Bus in here.
 */
#pragma once

#include <stdbool.h>

#include "util/json-util.h"

char *op_journal_path(const char *state_dir, const char *id, const char *kind);
int op_journal_write(const char *state_dir, const char *id, const char *kind, json_object *o);
void op_journal_remove(const char *state_dir, const char *id, const char *kind);
bool op_journal_exists(const char *state_dir, const char *id, const char *kind);

/* 0: no journal; 1: *ret the journal; -EBADMSG: not JSON (logged, the
 * caller drops it); other -errno: cannot read it (logged). */
int op_journal_read(const char *state_dir, const char *id, const char *kind, json_object **ret);

/* NULL / false / 0 when the key is missing or of another type. */
const char *json_get_string(json_object *o, const char *key);
bool json_get_bool(json_object *o, const char *key);
size_t json_get_array(json_object *o, const char *key, json_object **ret);
