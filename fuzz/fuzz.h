/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the fuzz targets share. Each fuzz/fuzz-*.c defines one entry point
 * with FUZZ_TARGET(name): in a clang -Dfuzzing=true build it is libFuzzer's
 * LLVMFuzzerTestOneInput (one executable per target); in the normal build
 * all of them are linked into fuzz/replay.c, which runs every seed and every
 * regression input through them (meson test fuzz-replay). A target aborts
 * (FUZZ_CHECK) when an invariant breaks, so the fuzzer reports it; it frees
 * everything per input, so a leak is a finding too.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#ifdef FUZZ_REPLAY
#define FUZZ_TARGET(name) int fuzz_##name(const uint8_t *data, size_t size)
#else
#define FUZZ_TARGET(name) int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
#endif

int fuzz_xml_domain(const uint8_t *data, size_t size);
int fuzz_xml_snapshot(const uint8_t *data, size_t size);
int fuzz_store(const uint8_t *data, size_t size);
int fuzz_qmp(const uint8_t *data, size_t size);
int fuzz_image(const uint8_t *data, size_t size);
int fuzz_xml_checkpoint(const uint8_t *data, size_t size);
int fuzz_xml_backup(const uint8_t *data, size_t size);

#define FUZZ_CHECK(expr)                                                                        \
        do {                                                                                    \
                if (!(expr)) {                                                                  \
                        fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #expr); \
                        abort();                                                                \
                }                                                                               \
        } while (0)

/* Runs once per process: quiet logging (the daemon's log lines would drown
 * the fuzzer's output). */
void fuzz_setup(void);

/* A fresh, empty folder under $TMPDIR (tools/fuzz.sh points it at a tmpfs),
 * removed with everything in it by fuzz_rmdir(). Aborts on failure: the
 * target cannot run without it. */
char *fuzz_mkdtemp(void);
void fuzz_rmdir(char *dir);
/* Writes size bytes to dir/name (created, truncated). Aborts on failure. */
void fuzz_write_file(const char *dir, const char *name, const void *data, size_t size);

/* Splits data at each occurrence of sep (not included) into at most max
 * parts; the last part takes the rest. Returns the number of parts (>= 1);
 * parts point into data. */
size_t fuzz_split(const uint8_t *data, size_t size, const char *sep, const uint8_t **parts, size_t *sizes,
                  size_t max);

/* The XML targets: a refusal is one of the parsers' documented errors and
 * comes with a message; two string arrays (NULL-terminated, NULL = empty)
 * are equal; a fixed domain of two disks, vda writable and vdb read-only,
 * for the align functions (free with domain_def_free()). */
void fuzz_check_xml_refusal(int r, const char *message);
bool fuzz_strv_same(char **a, char **b);
struct DomainDef *fuzz_two_disk_domain(void);
