/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fixture files of the XML codec tests: main() sets `fixtures` to the
 * folder meson passes; read_fixture() reads one whole or ends the test.
 */
#pragma once

#include <stdio.h>

#include "util/util.h"

static const char *fixtures;

static inline char *read_fixture(const char *name, size_t *ret_size) {
        _cleanup_free_ char *path = strprintf("%s/%s", fixtures, name);
        char *buf = NULL;
        int r;

        r = path ? read_full_file(path, 64U << 20, &buf, ret_size) : -ENOMEM;
        if (r < 0) {
                fprintf(stderr, "cannot read fixture %s: %s\n", strna(path), strerror(-r));
                exit(EXIT_FAILURE);
        }
        return buf;
}
