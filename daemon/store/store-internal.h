/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the parts of the metadata store share; store.c's header comment has
 * the two file formats. store-index.c: the entries in memory and the
 * transactions on them, with undo. store-bulk.c: the bulk file, written
 * and sliced into entries. store-journal.c: the journal's records. store.c:
 * the Store itself, loading and committing. Only store*.c include this.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "util/util.h"

#define RECORD_MAGIC "QSJ1 "
#define RECORD_HEADER_SIZE 40U
#define RECORD_CRC_SPAN 31U /* "QSJ1 " + generation + " " + length + " " */
#define GENERATION_PI "qsnapd-store"
#define COMPACTION_MIN ((uint64_t) 64U * 1024U)
#define ENTRY_INDENT "  "
#define LOAD_ATTEMPTS 1000U
#define QUOTE_MAX 64U

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- the index (store-index.c) ---- */

typedef struct Entry {
        struct Entry *prev, *next;
        uint64_t hash;
        char *name;
        size_t name_len;
        char *xml;
        size_t xml_len;
} Entry;

#define TOMBSTONE ((Entry *) 1)

typedef struct Index {
        Entry *first, *last;
        size_t n;
        Entry **slots;     /* NULL: empty, TOMBSTONE: removed */
        size_t n_slots;    /* 0 or a power of two */
        size_t n_used;     /* entries + tombstones; always < n_slots */
        Entry *current;
        uint64_t body_size; /* what the entries take in the bulk file */
} Index;

/* An op with lengths: names and XML of journal records are not
 * NUL-terminated. name NULL only for CURRENT = none. */
typedef struct Op {
        StoreOpType type;
        const char *name;
        size_t name_len;
        const char *xml;
        size_t xml_len;
} Op;

typedef struct Undo {
        StoreOpType type;
        Entry *entry;   /* PUT: the new or updated entry; DELETE: the removed one */
        bool created;   /* PUT */
        char *old_xml;  /* PUT of an existing name */
        size_t old_xml_len;
} Undo;

typedef struct Txn {
        Undo *undo;
        size_t n_undo;
        Entry *saved_current;
        size_t saved_n;
        uint64_t saved_body_size;
} Txn;

/* A NUL-terminated copy of n bytes at p. */
char *memdup_nul(const char *p, size_t n);
Entry *index_find(const Index *idx, const char *name, size_t len);
int index_add(Index *idx, const char *name, size_t name_len, const char *xml, size_t xml_len, Entry **ret);
void index_done(Index *idx);
/* One transaction: txn_apply() each op, then txn_finish() to keep them or
 * txn_rollback() first to undo them all. */
int txn_begin(Txn *t, const Index *idx, size_t n_ops);
int txn_apply(Txn *t, Index *idx, const Op *op);
void txn_rollback(Txn *t, Index *idx);
void txn_finish(Txn *t);

/* ---- the Store (store.c) ---- */

struct Store {
        char *dir;
        char *basename;
        char *base_path;
        char *journal_path;
        char *root_element;
        char *entry_element;
        uint64_t read_cap;
        uint64_t compaction_threshold; /* 0: default */

        Index index;
        bool loaded;
        uint64_t generation;   /* of the bulk file (as far as we know, see store_compact()) */
        uint64_t base_size;
        int journal_fd;        /* for appending; -EBADF until needed */
        uint64_t journal_size; /* bytes of valid records */
        bool needs_compaction; /* the journal holds stale or bad bytes, or an I/O error left it unknown */
        bool temporary_files_cleaned;

        uint64_t n_compactions;
        uint64_t n_stale_records;
        uint64_t ignored_bytes;
};

/* ---- the bulk file (store-bulk.c) ---- */

/* At most QUOTE_MAX bytes of s for an error message, cut at a character. */
char *store_quote(const char *s);
bool store_is_space(char c);
/* text is exactly one well-formed <entry_element> element; *ret_name its
 * <name>. -EINVAL with *ret_error otherwise. */
int entry_parse(const char *text, size_t len, const char *entry_element, char **ret_name, char **ret_error);
/* What base_format() would write, in bytes, without writing it. */
uint64_t base_file_size(const Store *s, const Index *idx, uint64_t gen);
int base_format(const Store *s, const Index *idx, uint64_t gen, char **ret, size_t *ret_size);
/* Splits the bulk file into entries of idx; -EBADMSG with *ret_error. */
int base_parse(const Store *s, const char *buf, size_t size, Index *idx, uint64_t *ret_gen, char **ret_error);

/* ---- the journal (store-journal.c) ---- */

typedef struct JournalResult {
        uint64_t valid_size;
        uint64_t ignored_bytes;
        uint64_t n_stale;
} JournalResult;

int record_encode(uint64_t gen, const Op *ops, size_t n_ops, char **ret, size_t *ret_size);
/* Applies the records of generation base_gen onto idx, skips older ones,
 * and stops at the first record that is torn, damaged or does not apply. */
int journal_replay(const Store *s, const char *buf, size_t size, uint64_t base_gen, Index *idx, JournalResult *ret);
