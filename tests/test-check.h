/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The check macros the C unit tests share: a failed check is counted and
 * printed with its place, and the test goes on, so one run shows every
 * failure. main() ends with test_summary().
 */
#pragma once

#include <stdio.h>
#include <string.h>

#include "util/util.h"

static unsigned n_checks, n_failed;

#define CHECK(expr)                                                                     \
        do {                                                                            \
                n_checks++;                                                             \
                if (!(expr)) {                                                          \
                        n_failed++;                                                     \
                        fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__,      \
                                __LINE__, __func__, #expr);                             \
                }                                                                       \
        } while (0)

#define CHECK_STREQ(a, b)                                                               \
        do {                                                                            \
                const char *_a = (a), *_b = (b);                                        \
                n_checks++;                                                             \
                if (!streq_ptr(_a, _b)) {                                               \
                        n_failed++;                                                     \
                        fprintf(stderr, "%s:%d: %s: %s == %s failed:\n  got:  %s\n  want: %s\n", \
                                __FILE__, __LINE__, __func__, #a, #b, strna(_a), strna(_b)); \
                }                                                                       \
        } while (0)

#define CHECK_CONTAINS(haystack, needle)                                                \
        do {                                                                            \
                const char *_h = (haystack), *_n = (needle);                            \
                n_checks++;                                                             \
                if (!_h || !strstr(_h, _n)) {                                           \
                        n_failed++;                                                     \
                        fprintf(stderr, "%s:%d: %s: '%s' not found in: %s\n", __FILE__, \
                                __LINE__, __func__, _n, strna(_h));                     \
                }                                                                       \
        } while (0)

#define CHECK_NOT_CONTAINS(haystack, needle)                                            \
        do {                                                                            \
                const char *_h = (haystack), *_n = (needle);                            \
                n_checks++;                                                             \
                if (_h && strstr(_h, _n)) {                                             \
                        n_failed++;                                                     \
                        fprintf(stderr, "%s:%d: %s: '%s' must not be in: %s\n", __FILE__, \
                                __LINE__, __func__, _n, _h);                            \
                }                                                                       \
        } while (0)

/* "N checks, N failed"; the exit status for main(). */
static inline int test_summary(void) {
        printf("%u checks, %u failed\n", n_checks, n_failed);
        return n_failed > 0 ? 1 : 0;
}
