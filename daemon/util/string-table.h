/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Names of an enum's values in a table indexed by the value, and the two
 * lookups every such enum has (systemd's DEFINE_STRING_TABLE_LOOKUP):
 *
 *   static const char *const disk_format_table[_DISK_FORMAT_MAX] = {
 *           [DISK_FORMAT_RAW] = "raw", [DISK_FORMAT_QCOW2] = "qcow2",
 *   };
 *   DEFINE_STRING_TABLE_LOOKUP(disk_format, DiskFormat);
 *
 * gives disk_format_to_string(v), the name or NULL (out of range, or a
 * value without a name), and disk_format_from_string(s), the value or
 * -EINVAL (unknown name, or NULL). The enum keeps a member
 * `_…_INVALID = -EINVAL` so that the result compares as the enum.
 */
#pragma once

#include <errno.h>
#include <stddef.h>

#include "util/util.h"

/* The index of key in table (n entries, NULL ones skipped), -EINVAL when
 * absent or NULL. */
static inline int string_table_lookup(const char *const *table, size_t n, const char *key) {
        if (!key)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (table[i] && streq(table[i], key))
                        return (int) i;
        return -EINVAL;
}

#define DEFINE_STRING_TABLE_LOOKUP_TO_STRING(name, type, scope)                          \
        scope const char *name##_to_string(type v) {                                    \
                if ((long) v < 0 || (size_t) v >= ELEMENTSOF(name##_table))              \
                        return NULL;                                                    \
                return name##_table[v];                                                 \
        }

#define DEFINE_STRING_TABLE_LOOKUP_FROM_STRING(name, type, scope)                        \
        scope type name##_from_string(const char *s) {                                  \
                return (type) string_table_lookup(name##_table, ELEMENTSOF(name##_table), s); \
        }

#define DEFINE_STRING_TABLE_LOOKUP(name, type)                                           \
        DEFINE_STRING_TABLE_LOOKUP_TO_STRING(name, type, )                              \
        DEFINE_STRING_TABLE_LOOKUP_FROM_STRING(name, type, )
