/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * json-c, the one JSON library of the daemon (QMP, operation journals),
 * with the cleanup attribute its objects need: _cleanup_(json_object_putp).
 */
#pragma once

#include <json-c/json.h>

#include "util/util.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(json_object *, json_object_put);
