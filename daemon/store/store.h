/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata store: all snapshots (or all checkpoints) of one domain in
 * one libvirt-style bulk file, `<dir>/<name>.xml` (`<snapshots
 * current='…'>` + `<domainsnapshot>` entries), plus an append-only journal
 * `<dir>/<name>.journal` of the transactions since that file was written.
 * A transaction costs one append and one fdatasync(); the bulk file is
 * rewritten only when the journal has grown as large as it (amortized
 * O(1) per operation). Every state a reader can see, after a crash at any
 * instant, is the state after some whole transaction.
 *
 * The store deals in opaque entry XML keyed by the decoded text of each
 * entry's <name>; it does not know what a snapshot is. See the top of
 * store.c for the file formats. One writer per store (the daemon); any
 * number of read-only loaders, also in other processes, see whole states.
 * Not thread-safe: one thread per Store (libxml2's error handlers are
 * per thread).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STORE_READ_CAP_DEFAULT (128ULL * 1024 * 1024)

typedef struct Store Store;

typedef struct StoreEntry {
        char *name; /* the decoded <name> text */
        char *xml;  /* one complete entry element, no XML declaration */
} StoreEntry;

typedef enum StoreOpType {
        STORE_OP_PUT,     /* add, or replace keeping the entry's place in the order */
        STORE_OP_DELETE,  /* -ENOENT when absent; the current entry stops being current */
        STORE_OP_CURRENT, /* name NULL: no current entry; else -ENOENT when absent */
} StoreOpType;

typedef struct StoreOp {
        StoreOpType type;
        /* PUT: NULL = taken from the XML; else it must equal the XML's <name>. */
        const char *name;
        /* PUT only: one <entry_element> element. Whitespace around it is
         * dropped; anything else around it (XML declaration, comments) is
         * -EINVAL, as is text that is not well-formed. */
        const char *xml;
} StoreOp;

/* No I/O: records where the files are. read_cap 0 = STORE_READ_CAP_DEFAULT;
 * a file above it is -EFBIG, and so is a commit that would need one. */
int store_open(const char *dir,
               const char *basename,
               const char *root_element,
               const char *entry_element,
               uint64_t read_cap,
               Store **ret);
Store *store_free(Store *s);
static inline void store_freep(Store **s) {
        if (*s)
                store_free(*s);
}

/* (Re)reads the files: the bulk file and the journal's valid prefix. A
 * torn or damaged journal record ends the journal (logged with the file
 * and offset); the next commit rewrites both files cleanly. Missing files
 * are an empty store. Entries come in insertion order, which compaction
 * keeps. Every output may be NULL; *ret_current is NULL when there is no
 * current entry. On failure *ret_error (may be NULL) says what and where;
 * nothing is logged. */
int store_load(Store *s, StoreEntry **ret_entries, size_t *ret_n, char **ret_current, char **ret_error);

/* Applies the ops in order as one transaction, durably: after a crash at
 * any instant a load sees all of them or none. Loads first if store_load()
 * was not called. On failure nothing changed (in memory or, as far as the
 * kernel tells, on disk) and the reason is logged:
 * -EINVAL bad op or entry XML, -ENOENT unknown name, -EFBIG the bulk file
 * would exceed the read cap, else the I/O error. */
int store_commit(Store *s, const StoreOp *ops, size_t n_ops);

/* Deletes both files (Undefine): atomically empty first, then gone. The
 * store stays usable, empty. */
int store_remove(Store *s);

void store_entries_free(StoreEntry *entries, size_t n);

/* Compact when the journal would exceed this many bytes. 0 = the default:
 * the larger of 64 KiB and the bulk file's size. For tests and benchmarks. */
void store_set_compaction_threshold(Store *s, uint64_t bytes);

typedef struct StoreStats {
        uint64_t generation;      /* of the bulk file; +1 per compaction */
        uint64_t base_size;       /* bytes */
        uint64_t journal_size;    /* valid bytes */
        size_t n_entries;
        uint64_t n_compactions;   /* by this Store object */
        uint64_t n_stale_records; /* last load: records older than the bulk file, skipped */
        uint64_t ignored_bytes;   /* last load: torn or damaged journal tail */
        bool needs_compaction;    /* the next commit rewrites the bulk file */
} StoreStats;

void store_get_stats(const Store *s, StoreStats *ret);
