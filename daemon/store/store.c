/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata store of store.h: an in-memory index (hash map + list in
 * insertion order) backed by two files in <dir>.
 *
 * <name>.xml, the bulk file, libvirt's bulk format with one processing
 * instruction in front that libvirt's parser ignores:
 *
 *     <?qsnapd-store generation="7"?>
 *     <snapshots current='NAME'>
 *       <domainsnapshot>…</domainsnapshot>
 *     </snapshots>
 *
 * It is only ever replaced whole (write_file_atomic(): temp file, fsync,
 * rename, fsync of the folder). A file without the instruction (libvirt's
 * own) is generation 0. Entries are sliced out of the text, so they come
 * back byte for byte as committed; each slice is checked with libxml2.
 *
 * <name>.journal, the transactions since: one record each,
 *
 *     "QSJ1 " GENERATION " " LENGTH " " CRC "\n" PAYLOAD
 *
 * GENERATION 16 and LENGTH (of PAYLOAD) and CRC 8 lower-case hex digits:
 * a 40-byte header. CRC is the CRC-32 (IEEE 802.3) of the first 31 header
 * bytes followed by PAYLOAD. PAYLOAD is the transaction's ops in order,
 * lengths in decimal bytes:
 *
 *     "P " NAMELEN " " XMLLEN "\n" NAME "\n" XML "\n"
 *     "D " NAMELEN "\n" NAME "\n"
 *     "C " NAMELEN "\n" NAME "\n"        or "C -\n" for no current entry
 *
 * A record is appended with one pwrite() and fdatasync(). Reading stops
 * at the first record that is incomplete (a crash mid-append), fails its
 * CRC or does not apply: that one and everything after it are ignored.
 * Records of an older generation than the bulk file are already in it
 * (a crash after the bulk file was replaced but before the journal was)
 * and are skipped; so replaying is never applied twice.
 *
 * Compaction, when the journal would exceed max(64 KiB, bulk file size):
 * write the bulk file with generation + 1, then replace the journal with
 * an empty file (rename, never truncation in place). The transaction that
 * triggers it is not journalled: the new bulk file is its commit point.
 *
 * A reader opens the bulk file, then the journal, then checks that the
 * bulk file's path still names what it opened. The journal of a newer
 * generation is only created after its bulk file is in place, so if that
 * check holds the pair is consistent: the bulk file is immutable and the
 * journal only grows until it is replaced. Otherwise it retries.
 */

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "store/store.h"
#include "store/xml-util.h"
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

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir);

/* ---- CRC-32 (IEEE 802.3, reflected, as zlib's crc32()) ---- */

static uint32_t crc32_table[256];

static void crc32_init(void) {
        if (crc32_table[1] != 0)
                return;
        for (uint32_t i = 0; i < 256; i++) {
                uint32_t c = i;

                for (unsigned k = 0; k < 8; k++)
                        c = c & 1 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
                crc32_table[i] = c;
        }
}

static uint32_t crc32_update(uint32_t crc, const void *data, size_t n) {
        const uint8_t *p = data;

        crc32_init();
        crc = ~crc;
        while (n-- > 0)
                crc = crc32_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
        return ~crc;
}

/* ---- the index: entries in insertion order, found by name ---- */

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

static uint64_t hash_seed;

/* Seeded FNV-1a with a final avalanche: names are chosen by clients, so the
 * table should not be made to collide by a fixed recipe. */
static uint64_t hash_name(const char *s, size_t n) {
        uint64_t h;

        if (hash_seed == 0 && getrandom(&hash_seed, sizeof(hash_seed), GRND_NONBLOCK) != sizeof(hash_seed))
                hash_seed = (uint64_t) now_usec(CLOCK_MONOTONIC) | 1;
        h = 14695981039346656037ULL ^ hash_seed;
        for (size_t i = 0; i < n; i++) {
                h ^= (unsigned char) s[i];
                h *= 1099511628211ULL;
        }
        h ^= h >> 30;
        h *= 0xbf58476d1ce4e5b9ULL;
        h ^= h >> 27;
        h *= 0x94d049bb133111ebULL;
        h ^= h >> 31;
        return h;
}

static uint64_t entry_cost(size_t xml_len) {
        return STRLEN(ENTRY_INDENT) + xml_len + 1;
}

static Entry *entry_free(Entry *e) {
        if (e) {
                free(e->name);
                free(e->xml);
                free(e);
        }
        return NULL;
}

static char *memdup_nul(const char *p, size_t n) {
        char *c = malloc(n + 1);

        if (c) {
                memcpy(c, p, n);
                c[n] = 0;
        }
        return c;
}

static Entry *index_find(const Index *idx, const char *name, size_t len) {
        uint64_t h;

        if (idx->n_slots == 0)
                return NULL;
        h = hash_name(name, len);
        for (size_t i = h & (idx->n_slots - 1);; i = (i + 1) & (idx->n_slots - 1)) {
                Entry *e = idx->slots[i];

                if (!e)
                        return NULL;
                if (e != TOMBSTONE && e->hash == h && e->name_len == len && memcmp(e->name, name, len) == 0)
                        return e;
        }
}

/* Never allocates (rollback relies on that): there is always a free slot. */
static void index_slot_insert(Index *idx, Entry *e) {
        for (size_t i = e->hash & (idx->n_slots - 1);; i = (i + 1) & (idx->n_slots - 1)) {
                if (idx->slots[i] == TOMBSTONE) {
                        idx->slots[i] = e;
                        return;
                }
                if (!idx->slots[i]) {
                        idx->slots[i] = e;
                        idx->n_used++;
                        return;
                }
        }
}

static void index_slot_remove(Index *idx, Entry *e) {
        for (size_t i = e->hash & (idx->n_slots - 1);; i = (i + 1) & (idx->n_slots - 1)) {
                assert(idx->slots[i]);
                if (idx->slots[i] == e) {
                        idx->slots[i] = TOMBSTONE;
                        return;
                }
        }
}

/* Room for one more entry with the table at most half used. Rebuilt from
 * the list, which holds exactly the entries in the table. */
static int index_reserve_one(Index *idx) {
        Entry **slots;
        size_t n;

        if ((idx->n_used + 1) * 2 <= idx->n_slots)
                return 0;
        for (n = 16; n < (idx->n + 1) * 4; n *= 2)
                ;
        slots = new0(Entry *, n);
        if (!slots)
                return -ENOMEM;
        free(idx->slots);
        idx->slots = slots;
        idx->n_slots = n;
        idx->n_used = 0;
        for (Entry *e = idx->first; e; e = e->next)
                index_slot_insert(idx, e);
        return 0;
}

static void list_append(Index *idx, Entry *e) {
        e->next = NULL;
        e->prev = idx->last;
        if (idx->last)
                idx->last->next = e;
        else
                idx->first = e;
        idx->last = e;
}

/* Leaves e->prev and e->next as they were, for list_relink(). */
static void list_unlink(Index *idx, Entry *e) {
        if (e->prev)
                e->prev->next = e->next;
        else
                idx->first = e->next;
        if (e->next)
                e->next->prev = e->prev;
        else
                idx->last = e->prev;
}

static void list_relink(Index *idx, Entry *e) {
        if (e->prev)
                e->prev->next = e;
        else
                idx->first = e;
        if (e->next)
                e->next->prev = e;
        else
                idx->last = e;
}

/* Adds a new entry at the end; the name must not be there yet. */
static int index_add(Index *idx, const char *name, size_t name_len, const char *xml, size_t xml_len, Entry **ret) {
        Entry *e;
        int r;

        r = index_reserve_one(idx);
        if (r < 0)
                return r;
        e = new0(Entry, 1);
        if (!e)
                return -ENOMEM;
        e->name = memdup_nul(name, name_len);
        e->xml = memdup_nul(xml, xml_len);
        if (!e->name || !e->xml) {
                entry_free(e);
                return -ENOMEM;
        }
        e->name_len = name_len;
        e->xml_len = xml_len;
        e->hash = hash_name(name, name_len);
        index_slot_insert(idx, e);
        list_append(idx, e);
        idx->n++;
        idx->body_size += entry_cost(xml_len);
        if (ret)
                *ret = e;
        return 0;
}

static void index_done(Index *idx) {
        for (Entry *e = idx->first, *next; e; e = next) {
                next = e->next;
                entry_free(e);
        }
        free(idx->slots);
        *idx = (Index) {};
}

/* ---- transactions on the index, with undo ---- */

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

static int txn_begin(Txn *t, const Index *idx, size_t n_ops) {
        *t = (Txn) {
                .undo = new0(Undo, n_ops),
                .saved_current = idx->current,
                .saved_n = idx->n,
                .saved_body_size = idx->body_size,
        };
        return t->undo ? 0 : -ENOMEM;
}

static int txn_apply(Txn *t, Index *idx, const Op *op) {
        Undo *u = t->undo + t->n_undo;
        Entry *e;
        int r;

        *u = (Undo) { .type = op->type };
        switch (op->type) {
        case STORE_OP_PUT:
                e = index_find(idx, op->name, op->name_len);
                if (e) {
                        char *xml = memdup_nul(op->xml, op->xml_len);

                        if (!xml)
                                return -ENOMEM;
                        u->entry = e;
                        u->old_xml = e->xml;
                        u->old_xml_len = e->xml_len;
                        idx->body_size += entry_cost(op->xml_len) - entry_cost(e->xml_len);
                        e->xml = xml;
                        e->xml_len = op->xml_len;
                } else {
                        r = index_add(idx, op->name, op->name_len, op->xml, op->xml_len, &e);
                        if (r < 0)
                                return r;
                        u->entry = e;
                        u->created = true;
                }
                break;

        case STORE_OP_DELETE:
                e = index_find(idx, op->name, op->name_len);
                if (!e)
                        return -ENOENT;
                index_slot_remove(idx, e);
                list_unlink(idx, e);
                idx->n--;
                idx->body_size -= entry_cost(e->xml_len);
                if (idx->current == e)
                        idx->current = NULL;
                u->entry = e;
                break;

        case STORE_OP_CURRENT:
                if (!op->name) {
                        idx->current = NULL;
                        break;
                }
                e = index_find(idx, op->name, op->name_len);
                if (!e)
                        return -ENOENT;
                idx->current = e;
                break;
        }
        t->n_undo++;
        return 0;
}

/* Undoes in reverse order, so each list_relink() finds its neighbours as
 * they were. Cannot fail. */
static void txn_rollback(Txn *t, Index *idx) {
        for (size_t i = t->n_undo; i > 0; i--) {
                Undo *u = t->undo + i - 1;

                switch (u->type) {
                case STORE_OP_PUT:
                        if (u->created) {
                                index_slot_remove(idx, u->entry);
                                list_unlink(idx, u->entry);
                                entry_free(u->entry);
                        } else {
                                free(u->entry->xml);
                                u->entry->xml = u->old_xml;
                                u->entry->xml_len = u->old_xml_len;
                        }
                        break;
                case STORE_OP_DELETE:
                        list_relink(idx, u->entry);
                        index_slot_insert(idx, u->entry);
                        break;
                case STORE_OP_CURRENT:
                        break;
                }
        }
        idx->current = t->saved_current;
        idx->n = t->saved_n;
        idx->body_size = t->saved_body_size;
        t->undo = mfree(t->undo);
        t->n_undo = 0;
}

static void txn_finish(Txn *t) {
        for (size_t i = 0; i < t->n_undo; i++) {
                Undo *u = t->undo + i;

                if (u->type == STORE_OP_DELETE)
                        entry_free(u->entry);
                else if (u->type == STORE_OP_PUT && !u->created)
                        free(u->old_xml);
        }
        t->undo = mfree(t->undo);
        t->n_undo = 0;
}

/* ---- the store ---- */

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

static bool element_name_is_valid(const char *s) {
        if (isempty(s) || !strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", s[0]))
                return false;
        for (; *s; s++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", *s))
                        return false;
        return true;
}

int store_open(const char *dir,
               const char *basename,
               const char *root_element,
               const char *entry_element,
               uint64_t read_cap,
               Store **ret) {
        _cleanup_(store_freep) Store *s = NULL;

        if (isempty(dir) || isempty(basename) || strchr(basename, '/') || STR_IN_SET(basename, ".", "..") ||
            !element_name_is_valid(root_element) || !element_name_is_valid(entry_element) || !ret)
                return -EINVAL;

        s = new0(Store, 1);
        if (!s)
                return -ENOMEM;
        s->journal_fd = -EBADF;
        s->read_cap = read_cap ?: STORE_READ_CAP_DEFAULT;
        s->dir = strdup(dir);
        s->basename = strdup(basename);
        s->base_path = strprintf("%s/%s.xml", dir, basename);
        s->journal_path = strprintf("%s/%s.journal", dir, basename);
        s->root_element = strdup(root_element);
        s->entry_element = strdup(entry_element);
        if (!s->dir || !s->basename || !s->base_path || !s->journal_path || !s->root_element || !s->entry_element)
                return -ENOMEM;

        *ret = TAKE_PTR(s);
        return 0;
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        index_done(&s->index);
        safe_close(s->journal_fd);
        free(s->dir);
        free(s->basename);
        free(s->base_path);
        free(s->journal_path);
        free(s->root_element);
        free(s->entry_element);
        free(s);
        return NULL;
}

void store_entries_free(StoreEntry *entries, size_t n) {
        for (size_t i = 0; entries && i < n; i++) {
                free(entries[i].name);
                free(entries[i].xml);
        }
        free(entries);
}

void store_set_compaction_threshold(Store *s, uint64_t bytes) {
        s->compaction_threshold = bytes;
}

void store_get_stats(const Store *s, StoreStats *ret) {
        *ret = (StoreStats) {
                .generation = s->generation,
                .base_size = s->base_size,
                .journal_size = s->journal_size,
                .n_entries = s->index.n,
                .n_compactions = s->n_compactions,
                .n_stale_records = s->n_stale_records,
                .ignored_bytes = s->ignored_bytes,
                .needs_compaction = s->needs_compaction,
        };
}

/* ---- entries, checked by xml-util's hardened parser ---- */

static bool is_xml_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* At most QUOTE_MAX bytes of s for an error message, cut at a character. */
static char *quote(const char *s) {
        size_t n = strlen(s);

        if (n <= QUOTE_MAX)
                return strdup(s);
        n = QUOTE_MAX;
        while (n > 0 && ((unsigned char) s[n] & 0xc0) == 0x80)
                n--;
        return strprintf("%.*s…", (int) n, s);
}

static bool node_is(const xmlNode *n, const char *name) {
        return n && n->type == XML_ELEMENT_NODE && !n->ns && xmlStrEqual(n->name, BAD_CAST name);
}

/* text starts with the start tag of element `name`. */
static bool has_tag(const char *text, const char *end, const char *name) {
        size_t n = strlen(name);

        return (size_t) (end - text) > n + 1 && text[0] == '<' && memcmp(text + 1, name, n) == 0 &&
                (is_xml_space(text[n + 1]) || text[n + 1] == '>' || text[n + 1] == '/');
}

/* Checks that text is exactly one well-formed <entry_element> element, a
 * document of its own, and returns the string value of its first <name>
 * child (libvirt's "string(./name)"). -EINVAL with *ret_error otherwise. */
static int entry_parse(const char *text, size_t len, const char *entry_element, char **ret_name, char **ret_error) {
        _cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
        _cleanup_(xml_freep) xmlChar *name = NULL;
        xmlNode *root;
        int r;

        if (!has_tag(text, text + len, entry_element)) {
                *ret_error = strprintf("entry XML must be one <%s> element and nothing else (no XML declaration)",
                                       entry_element);
                return -EINVAL;
        }
        r = xml_read_document(text, len, &doc, ret_error);
        if (r < 0)
                return r;
        root = xmlDocGetRootElement(doc);
        if (!node_is(root, entry_element) || doc->children != root || root->next) {
                *ret_error = strprintf("entry XML must be one <%s> element (without a default namespace) and nothing else",
                                       entry_element);
                return -EINVAL;
        }
        for (xmlNode *c = root->children; c; c = c->next)
                if (node_is(c, "name")) {
                        name = xmlNodeGetContent(c);
                        if (!name)
                                return -ENOMEM;
                        break;
                }
        if (isempty((const char *) name)) {
                *ret_error = strprintf("<%s> has no <name> or an empty one", entry_element);
                return -EINVAL;
        }
        *ret_name = strdup((const char *) name);
        return *ret_name ? 0 : -ENOMEM;
}

/* ---- the bulk file ---- */

/* The text between single quotes in current='…'. Newlines and tabs as
 * character references, or a parser would turn them into spaces. */
static const char *attribute_escape(char c) {
        switch (c) {
        case '&':
                return "&amp;";
        case '<':
                return "&lt;";
        case '>':
                return "&gt;";
        case '\'':
                return "&apos;";
        case '"':
                return "&quot;";
        case '\n':
                return "&#10;";
        case '\r':
                return "&#13;";
        case '\t':
                return "&#9;";
        default:
                return NULL;
        }
}

static size_t attribute_escaped_size(const char *s) {
        size_t n = 0;

        for (; *s; s++) {
                const char *e = attribute_escape(*s);
                n += e ? strlen(e) : 1;
        }
        return n;
}

static char *attribute_escape_copy(char *p, const char *s) {
        for (; *s; s++) {
                const char *e = attribute_escape(*s);

                if (e)
                        p = stpcpy(p, e);
                else
                        *p++ = *s;
        }
        return p;
}

/* Bytes of the bulk file for idx at generation gen: the part before the
 * entries, the entries, and the closing tag. */
static uint64_t base_file_size(const Store *s, const Index *idx, uint64_t gen) {
        uint64_t n;

        n = (uint64_t) snprintf(NULL, 0, "<?%s generation=\"%" PRIu64 "\"?>\n<%s>\n", GENERATION_PI, gen, s->root_element);
        if (idx->current)
                n += STRLEN(" current=''") + attribute_escaped_size(idx->current->name);
        return n + idx->body_size + STRLEN("</>\n") + strlen(s->root_element);
}

static int base_format(const Store *s, const Index *idx, uint64_t gen, char **ret, size_t *ret_size) {
        uint64_t size = base_file_size(s, idx, gen);
        char *buf, *p;

        if (size >= SIZE_MAX)
                return -EFBIG;
        buf = malloc(size + 1);
        if (!buf)
                return -ENOMEM;
        p = buf + sprintf(buf, "<?%s generation=\"%" PRIu64 "\"?>\n<%s", GENERATION_PI, gen, s->root_element);
        if (idx->current) {
                p = stpcpy(p, " current='");
                p = attribute_escape_copy(p, idx->current->name);
                *p++ = '\'';
        }
        p = stpcpy(p, ">\n");
        for (const Entry *e = idx->first; e; e = e->next) {
                p = stpcpy(p, ENTRY_INDENT);
                memcpy(p, e->xml, e->xml_len);
                p += e->xml_len;
                *p++ = '\n';
        }
        p += sprintf(p, "</%s>\n", s->root_element);
        assert((uint64_t) (p - buf) == size);
        *ret = buf;
        *ret_size = (size_t) size;
        return 0;
}

static bool has_prefix(const char *p, const char *end, const char *prefix) {
        size_t n = strlen(prefix);
        return (size_t) (end - p) >= n && memcmp(p, prefix, n) == 0;
}

/* Just past the next token, or NULL. */
static const char *find_after(const char *p, const char *end, const char *token) {
        size_t n = strlen(token);
        const char *t = memmem(p, (size_t) (end - p), token, n);

        return t ? t + n : NULL;
}

/* p at the '<' of a start tag: just past its '>', or NULL. Quotes matter:
 * an attribute value may hold '>'. */
static const char *scan_start_tag(const char *p, const char *end, bool *ret_empty) {
        for (p++; p < end; p++) {
                if (*p == '"' || *p == '\'') {
                        p = memchr(p + 1, *p, (size_t) (end - p - 1));
                        if (!p)
                                return NULL;
                } else if (*p == '>') {
                        *ret_empty = p[-1] == '/';
                        return p + 1;
                }
        }
        return NULL;
}

/* Comments, processing instructions and CDATA sections: just past their
 * end; NULL when p is not at one or it does not end. */
static const char *skip_markup(const char *p, const char *end) {
        if (has_prefix(p, end, "<!--"))
                return find_after(p + 4, end, "-->");
        if (has_prefix(p, end, "<![CDATA["))
                return find_after(p + 9, end, "]]>");
        if (has_prefix(p, end, "<?"))
                return find_after(p + 2, end, "?>");
        return NULL;
}

/* p at the '<' of an element's start tag: just past its end tag, or NULL.
 * Only has to be right for well-formed text: libxml2 checks the slice. */
static const char *scan_element(const char *p, const char *end) {
        size_t depth = 0;

        for (;;) {
                bool empty;

                if (has_prefix(p, end, "<!--") || has_prefix(p, end, "<![CDATA[") || has_prefix(p, end, "<?"))
                        p = skip_markup(p, end);
                else if (has_prefix(p, end, "<!"))
                        return NULL;
                else if (has_prefix(p, end, "</")) {
                        p = memchr(p, '>', (size_t) (end - p));
                        if (!p || depth == 0)
                                return NULL;
                        p++;
                        if (--depth == 0)
                                return p;
                } else {
                        p = scan_start_tag(p, end, &empty);
                        if (!p)
                                return NULL;
                        if (!empty)
                                depth++;
                        else if (depth == 0)
                                return p;
                }
                if (!p)
                        return NULL;
                p = memchr(p, '<', (size_t) (end - p));
                if (!p)
                        return NULL;
        }
}

static size_t line_of(const char *buf, const char *at) {
        size_t line = 1;

        for (const char *p = buf; p < at; p++)
                line += *p == '\n';
        return line;
}

static int base_error(char **ret_error, const char *path, const char *buf, const char *at, const char *fmt, ...)
        _printf_(5, 6);
static int base_error(char **ret_error, const char *path, const char *buf, const char *at, const char *fmt, ...) {
        _cleanup_free_ char *msg = NULL;
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(&msg, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        *ret_error = at ? strprintf("%s:%zu: %s", path, line_of(buf, at), msg) : strprintf("%s: %s", path, msg);
        return -EBADMSG;
}

/* generation="N" */
static int parse_generation_pi(const char *content, uint64_t *ret) {
        const char *p = content;
        uint64_t g = 0;

        if (!p || strncmp(p, "generation=\"", 12) != 0)
                return -EINVAL;
        p += 12;
        if (*p < '0' || *p > '9' || (*p == '0' && p[1] != '"'))
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (g > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                g = g * 10 + (uint64_t) (*p - '0');
        }
        if (strcmp(p, "\"") != 0)
                return -EINVAL;
        *ret = g;
        return 0;
}

/* The prolog and the root's start tag, checked by libxml2 as a document of
 * their own (with a closing tag added): encoding, generation, current. */
static int base_parse_head(const Store *s, const char *buf, const char *head_end, bool root_empty,
                           uint64_t *ret_gen, char **ret_current, char **ret_error) {
        _cleanup_free_ char *text = NULL, *error = NULL;
        _cleanup_(xmlFreeDocp) xmlDoc *doc = NULL;
        _cleanup_(xml_freep) xmlChar *current = NULL;
        size_t head = (size_t) (head_end - buf);
        bool have_gen = false;
        uint64_t gen = 0;
        xmlNode *root;
        int r;

        if (head > INT_MAX / 2)
                return base_error(ret_error, s->base_path, NULL, NULL, "the part before the first entry is too large");
        text = root_empty ? memdup_nul(buf, head) : strprintf("%.*s</%s>", (int) head, buf, s->root_element);
        if (!text)
                return -ENOMEM;
        r = xml_read_document(text, strlen(text), &doc, &error);
        if (r == -EINVAL)
                return base_error(ret_error, s->base_path, NULL, NULL, "%s", error);
        if (r < 0)
                return r;
        if (doc->encoding && strcasecmp((const char *) doc->encoding, "UTF-8") != 0 &&
            strcasecmp((const char *) doc->encoding, "UTF8") != 0)
                return base_error(ret_error, s->base_path, NULL, NULL, "encoding %s is not supported, only UTF-8",
                                  (const char *) doc->encoding);
        root = xmlDocGetRootElement(doc);
        if (!root || root->nsDef)
                return base_error(ret_error, s->base_path, NULL, NULL,
                                  "namespace declarations on <%s> are not supported", s->root_element);

        for (xmlNode *n = doc->children; n && n != root; n = n->next) {
                if (n->type != XML_PI_NODE || !xmlStrEqual(n->name, BAD_CAST GENERATION_PI))
                        continue;
                if (have_gen)
                        return base_error(ret_error, s->base_path, NULL, NULL, "more than one <?%s?>", GENERATION_PI);
                if (parse_generation_pi((const char *) n->content, &gen) < 0)
                        return base_error(ret_error, s->base_path, NULL, NULL, "malformed <?%s %s?>",
                                          GENERATION_PI, strna((const char *) n->content));
                have_gen = true;
        }

        current = xmlGetNoNsProp(root, BAD_CAST "current");
        if (!isempty((const char *) current)) {
                *ret_current = strdup((const char *) current);
                if (!*ret_current)
                        return -ENOMEM;
        } else
                *ret_current = NULL;
        *ret_gen = gen;
        return 0;
}

/* Splits the bulk file into entries, each checked by libxml2 (the same
 * check as a commit's), in one pass: memory and time O(size). Around the
 * entries only whitespace, comments and processing instructions. */
static int base_parse(const Store *s, const char *buf, size_t size, Index *idx, uint64_t *ret_gen, char **ret_error) {
        _cleanup_free_ char *current = NULL;
        const char *p = buf, *end = buf + size, *nul;
        bool root_empty = false;
        uint64_t gen = 0;
        int r;

        if (size == 0)
                return base_error(ret_error, s->base_path, NULL, NULL, "file is empty");
        nul = memchr(buf, 0, size);
        if (nul)
                return base_error(ret_error, s->base_path, buf, nul, "NUL byte (only UTF-8 is supported)");
        if (has_prefix(p, end, "\xef\xbb\xbf"))
                p += 3;

        /* Prolog, up to the root's start tag. */
        for (;;) {
                while (p < end && is_xml_space(*p))
                        p++;
                if (p >= end)
                        return base_error(ret_error, s->base_path, NULL, NULL, "no <%s> element", s->root_element);
                if (has_prefix(p, end, "<!--") || has_prefix(p, end, "<?")) {
                        const char *q = skip_markup(p, end);
                        if (!q)
                                return base_error(ret_error, s->base_path, buf, p, "unterminated comment or processing instruction");
                        p = q;
                        continue;
                }
                if (has_prefix(p, end, "<!"))
                        return base_error(ret_error, s->base_path, buf, p, "DTDs are not allowed");
                if (!has_tag(p, end, s->root_element))
                        return base_error(ret_error, s->base_path, buf, p, "expected <%s> as the root element",
                                          s->root_element);
                p = scan_start_tag(p, end, &root_empty);
                if (!p)
                        return base_error(ret_error, s->base_path, NULL, NULL, "unterminated <%s> tag", s->root_element);
                break;
        }

        r = base_parse_head(s, buf, p, root_empty, &gen, &current, ret_error);
        if (r < 0)
                return r;

        /* The entries. */
        while (!root_empty) {
                _cleanup_free_ char *name = NULL, *error = NULL;
                const char *q;

                while (p < end && is_xml_space(*p))
                        p++;
                if (p >= end)
                        return base_error(ret_error, s->base_path, NULL, NULL, "missing </%s> (file truncated?)",
                                          s->root_element);
                if (*p != '<')
                        return base_error(ret_error, s->base_path, buf, p, "unexpected text in <%s>", s->root_element);
                if (has_prefix(p, end, "<!--") || has_prefix(p, end, "<?")) {
                        q = skip_markup(p, end);
                        if (!q)
                                return base_error(ret_error, s->base_path, buf, p, "unterminated comment or processing instruction");
                        p = q;
                        continue;
                }
                if (has_prefix(p, end, "</")) {
                        size_t n = strlen(s->root_element);

                        if ((size_t) (end - p) < n + 3 || memcmp(p + 2, s->root_element, n) != 0)
                                return base_error(ret_error, s->base_path, buf, p, "mismatched end tag");
                        p += n + 2;
                        while (p < end && is_xml_space(*p))
                                p++;
                        if (p >= end || *p != '>')
                                return base_error(ret_error, s->base_path, buf, p, "mismatched end tag");
                        p++;
                        break;
                }
                if (!has_tag(p, end, s->entry_element))
                        return base_error(ret_error, s->base_path, buf, p, "unexpected element in <%s>, only <%s> may be there",
                                          s->root_element, s->entry_element);

                q = scan_element(p, end);
                if (!q)
                        return base_error(ret_error, s->base_path, buf, p, "unterminated <%s> element", s->entry_element);
                r = entry_parse(p, (size_t) (q - p), s->entry_element, &name, &error);
                if (r == -EINVAL)
                        return base_error(ret_error, s->base_path, buf, p, "entry %zu: %s", idx->n + 1, error);
                if (r < 0)
                        return r;
                if (index_find(idx, name, strlen(name))) {
                        _cleanup_free_ char *quoted = quote(name);
                        return base_error(ret_error, s->base_path, buf, p, "entry %zu: duplicate name '%s'", idx->n + 1,
                                          strna(quoted));
                }
                r = index_add(idx, name, strlen(name), p, (size_t) (q - p), NULL);
                if (r < 0)
                        return r;
                p = q;
        }

        /* Epilog. */
        for (;;) {
                while (p < end && is_xml_space(*p))
                        p++;
                if (p >= end)
                        break;
                if (!has_prefix(p, end, "<!--") && !has_prefix(p, end, "<?"))
                        return base_error(ret_error, s->base_path, buf, p, "content after </%s>", s->root_element);
                p = skip_markup(p, end);
                if (!p)
                        return base_error(ret_error, s->base_path, NULL, NULL, "unterminated comment or processing instruction");
        }

        if (current) {
                idx->current = index_find(idx, current, strlen(current));
                if (!idx->current) {
                        _cleanup_free_ char *quoted = quote(current);
                        log_warning("%s: current='%s' names no entry; there is no current entry.", s->base_path, strna(quoted));
                }
        }
        *ret_gen = gen;
        return 0;
}

/* ---- the journal ---- */

static size_t decimal_digits(size_t n) {
        size_t d = 1;

        while (n >= 10) {
                n /= 10;
                d++;
        }
        return d;
}

static size_t op_encoded_size(const Op *op) {
        switch (op->type) {
        case STORE_OP_PUT:
                return 2 + decimal_digits(op->name_len) + 1 + decimal_digits(op->xml_len) + 1 + op->name_len + 1 +
                        op->xml_len + 1;
        case STORE_OP_DELETE:
        case STORE_OP_CURRENT:
                if (!op->name)
                        return 4;
                return 2 + decimal_digits(op->name_len) + 1 + op->name_len + 1;
        }
        return 0;
}

static int record_encode(uint64_t gen, const Op *ops, size_t n_ops, char **ret, size_t *ret_size) {
        static const char letters[] = { [STORE_OP_PUT] = 'P', [STORE_OP_DELETE] = 'D', [STORE_OP_CURRENT] = 'C' };
        char header[RECORD_HEADER_SIZE + 1], *buf, *p;
        size_t payload = 0;
        uint32_t crc;

        for (size_t i = 0; i < n_ops; i++)
                payload += op_encoded_size(ops + i);
        if (payload > UINT32_MAX)
                return -EFBIG;

        buf = malloc(RECORD_HEADER_SIZE + payload + 1);
        if (!buf)
                return -ENOMEM;
        p = buf + RECORD_HEADER_SIZE;
        for (size_t i = 0; i < n_ops; i++) {
                const Op *op = ops + i;

                if (!op->name) {
                        p = stpcpy(p, "C -\n");
                        continue;
                }
                if (op->type == STORE_OP_PUT)
                        p += sprintf(p, "P %zu %zu\n", op->name_len, op->xml_len);
                else
                        p += sprintf(p, "%c %zu\n", letters[op->type], op->name_len);
                memcpy(p, op->name, op->name_len);
                p += op->name_len;
                *p++ = '\n';
                if (op->type == STORE_OP_PUT) {
                        memcpy(p, op->xml, op->xml_len);
                        p += op->xml_len;
                        *p++ = '\n';
                }
        }
        assert((size_t) (p - buf) == RECORD_HEADER_SIZE + payload);

        snprintf(header, sizeof(header), RECORD_MAGIC "%016" PRIx64 " %08" PRIx32 " ", gen, (uint32_t) payload);
        crc = crc32_update(0, header, RECORD_CRC_SPAN);
        crc = crc32_update(crc, buf + RECORD_HEADER_SIZE, payload);
        snprintf(header + RECORD_CRC_SPAN, sizeof(header) - RECORD_CRC_SPAN, "%08" PRIx32 "\n", crc);
        memcpy(buf, header, RECORD_HEADER_SIZE);

        *ret = buf;
        *ret_size = RECORD_HEADER_SIZE + payload;
        return 0;
}

static int parse_hex(const char *p, size_t digits, uint64_t *ret) {
        uint64_t v = 0;

        for (size_t i = 0; i < digits; i++) {
                char c = p[i];

                if (c >= '0' && c <= '9')
                        v = v << 4 | (uint64_t) (c - '0');
                else if (c >= 'a' && c <= 'f')
                        v = v << 4 | (uint64_t) (c - 'a' + 10);
                else
                        return -EINVAL;
        }
        *ret = v;
        return 0;
}

static int record_parse_header(const char *p, uint64_t *ret_gen, uint32_t *ret_len, uint32_t *ret_crc) {
        uint64_t len, crc;

        if (memcmp(p, RECORD_MAGIC, 5) != 0 || p[21] != ' ' || p[30] != ' ' || p[39] != '\n' ||
            parse_hex(p + 5, 16, ret_gen) < 0 || parse_hex(p + 22, 8, &len) < 0 || parse_hex(p + 31, 8, &crc) < 0)
                return -EBADMSG;
        *ret_len = (uint32_t) len;
        *ret_crc = (uint32_t) crc;
        return 0;
}

/* Decimal without leading zeros, then `term`. */
static int parse_decimal(const char **p, const char *end, char term, size_t *ret) {
        const char *q = *p;
        size_t v = 0;

        if (q >= end || *q < '0' || *q > '9' || (*q == '0' && q + 1 < end && q[1] != term))
                return -EBADMSG;
        for (; q < end && *q >= '0' && *q <= '9'; q++) {
                if (v > (SIZE_MAX - 9) / 10)
                        return -EBADMSG;
                v = v * 10 + (size_t) (*q - '0');
        }
        if (q >= end || *q != term)
                return -EBADMSG;
        *p = q + 1;
        *ret = v;
        return 0;
}

/* One length-prefixed field followed by "\n". */
static int parse_field(const char **p, const char *end, size_t len, const char **ret) {
        if ((size_t) (end - *p) < len + 1 || (*p)[len] != '\n')
                return -EBADMSG;
        *ret = *p;
        *p += len + 1;
        return 0;
}

static int record_parse_payload(const char *p, size_t size, Op **ret_ops, size_t *ret_n) {
        _cleanup_free_ Op *ops = NULL;
        const char *end = p + size;
        size_t n = 0, allocated = 0;

        while (p < end) {
                Op op = {};
                int r = 0;

                if (end - p < 4 || p[1] != ' ')
                        return -EBADMSG;
                if (n >= allocated) {
                        size_t a = allocated ? allocated * 2 : 4;
                        Op *o = reallocarray(ops, a, sizeof(Op));
                        if (!o)
                                return -ENOMEM;
                        ops = o;
                        allocated = a;
                }
                switch (p[0]) {
                case 'P':
                        op.type = STORE_OP_PUT;
                        p += 2;
                        r = parse_decimal(&p, end, ' ', &op.name_len);
                        if (r >= 0)
                                r = parse_decimal(&p, end, '\n', &op.xml_len);
                        if (r >= 0)
                                r = parse_field(&p, end, op.name_len, &op.name);
                        if (r >= 0)
                                r = parse_field(&p, end, op.xml_len, &op.xml);
                        break;
                case 'D':
                case 'C':
                        op.type = p[0] == 'D' ? STORE_OP_DELETE : STORE_OP_CURRENT;
                        if (op.type == STORE_OP_CURRENT && memcmp(p, "C -\n", 4) == 0) {
                                p += 4;
                                break;
                        }
                        p += 2;
                        r = parse_decimal(&p, end, '\n', &op.name_len);
                        if (r >= 0)
                                r = parse_field(&p, end, op.name_len, &op.name);
                        break;
                default:
                        return -EBADMSG;
                }
                if (r < 0)
                        return r;
                if ((op.name && op.name_len == 0) || (op.type == STORE_OP_PUT && op.xml_len == 0))
                        return -EBADMSG;
                ops[n++] = op;
        }
        if (n == 0)
                return -EBADMSG;
        *ret_ops = TAKE_PTR(ops);
        *ret_n = n;
        return 0;
}

typedef struct JournalResult {
        uint64_t valid_size;
        uint64_t ignored_bytes;
        uint64_t n_stale;
} JournalResult;

/* Applies the records of generation base_gen onto idx, skips older ones,
 * and stops at the first record that is torn, damaged or does not apply. */
static int journal_replay(const Store *s, const char *buf, size_t size, uint64_t base_gen, Index *idx, JournalResult *ret) {
        uint64_t last_gen = 0;
        const char *why = NULL;
        size_t off = 0;
        bool torn = false;
        int r;

        while (off < size) {
                _cleanup_free_ Op *ops = NULL;
                uint32_t len, crc;
                uint64_t gen;
                size_t n_ops;
                Txn t;

                if (size - off < RECORD_HEADER_SIZE) {
                        why = "incomplete record header";
                        torn = true;
                        break;
                }
                if (record_parse_header(buf + off, &gen, &len, &crc) < 0) {
                        why = "malformed record header";
                        break;
                }
                if (len > size - off - RECORD_HEADER_SIZE) {
                        why = "incomplete record";
                        torn = true;
                        break;
                }
                if (crc32_update(crc32_update(0, buf + off, RECORD_CRC_SPAN), buf + off + RECORD_HEADER_SIZE, len) != crc) {
                        why = "record with a bad CRC";
                        break;
                }
                if (gen < last_gen) {
                        why = "record whose generation goes backwards";
                        break;
                }
                last_gen = gen;
                if (gen < base_gen) {
                        /* Already in the bulk file: a crash came between its
                         * rename and the journal's replacement. */
                        ret->n_stale++;
                        off += RECORD_HEADER_SIZE + len;
                        continue;
                }
                if (gen > base_gen) {
                        why = "record of a generation newer than the bulk file's";
                        break;
                }
                r = record_parse_payload(buf + off + RECORD_HEADER_SIZE, len, &ops, &n_ops);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        why = "malformed record";
                        break;
                }

                r = txn_begin(&t, idx, n_ops);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n_ops && r >= 0; i++)
                        r = txn_apply(&t, idx, ops + i);
                if (r < 0) {
                        txn_rollback(&t, idx);
                        if (r == -ENOMEM)
                                return r;
                        why = "record that does not apply to the entries before it";
                        break;
                }
                txn_finish(&t);
                off += RECORD_HEADER_SIZE + len;
        }

        if (off < size) {
                /* An interrupted append is the expected leftover of a crash;
                 * anything else is damage. */
                log_full_errno(torn ? LOG_NOTICE : LOG_WARNING, 0,
                               "%s: %s at offset %zu; ignoring the %zu bytes from there on. The next change rewrites the files.",
                               s->journal_path, why, off, size - off);
        }
        ret->valid_size = off;
        ret->ignored_bytes = size - off;
        return 0;
}

/* ---- loading ---- */

static int file_too_big(const char *path, uint64_t size, uint64_t cap, char **ret_error) {
        *ret_error = strprintf("%s is %" PRIu64 " bytes, more than the metadata read cap of %" PRIu64
                               " bytes; raise the cap (qsnapd --metadata-read-cap=BYTES) to read it",
                               path, size, cap);
        return -EFBIG;
}

/* The whole file behind fd, refusing more than cap bytes. */
static int read_fd_capped(int fd, const char *path, uint64_t cap, char **ret, size_t *ret_size, char **ret_error) {
        _cleanup_free_ char *buf = NULL;
        size_t n = 0, allocated;
        struct stat st;

        if (fstat(fd, &st) < 0) {
                *ret_error = strprintf("Cannot stat %s: %s", path, strerror(errno));
                return -errno;
        }
        if ((uint64_t) st.st_size > cap)
                return file_too_big(path, (uint64_t) st.st_size, cap, ret_error);

        allocated = (size_t) st.st_size + 4096;
        buf = malloc(allocated);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (allocated - n < 2) {
                        char *b = realloc(buf, allocated * 2);
                        if (!b)
                                return -ENOMEM;
                        buf = b;
                        allocated *= 2;
                }
                k = pread(fd, buf + n, allocated - n - 1, (off_t) n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        *ret_error = strprintf("Cannot read %s: %s", path, strerror(errno));
                        return -errno;
                }
                if (k == 0)
                        break;
                n += (size_t) k;
                if (n > cap) /* it grew while we read */
                        return file_too_big(path, n, cap, ret_error);
        }
        buf[n] = 0;
        *ret = TAKE_PTR(buf);
        *ret_size = n;
        return 0;
}

static int open_for_reading(const char *path, int *ret_fd, char **ret_error) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);

        if (fd < 0 && errno != ENOENT) {
                *ret_error = strprintf("Cannot open %s: %s", path, strerror(errno));
                return -errno;
        }
        *ret_fd = fd; /* -1: missing */
        return 0;
}

typedef struct Loaded {
        Index index;
        uint64_t generation;
        uint64_t base_size;
        JournalResult journal;
} Loaded;

static int load_files(const Store *s, Loaded *l, char **ret_error) {
        _cleanup_free_ char *base = NULL, *journal = NULL;
        _cleanup_close_ int base_fd = -EBADF, journal_fd = -EBADF;
        size_t base_size = 0, journal_size = 0;
        int r;

        /* A consistent pair: the bulk file still in place after the journal
         * was opened (see the top of this file). */
        for (unsigned attempt = 0;; attempt++) {
                struct stat a, b;
                bool same;

                base_fd = safe_close(base_fd);
                journal_fd = safe_close(journal_fd);
                r = open_for_reading(s->base_path, &base_fd, ret_error);
                if (r < 0)
                        return r;
                if (base_fd >= 0 && fstat(base_fd, &a) < 0) {
                        *ret_error = strprintf("Cannot stat %s: %s", s->base_path, strerror(errno));
                        return -errno;
                }
                r = open_for_reading(s->journal_path, &journal_fd, ret_error);
                if (r < 0)
                        return r;
                if (stat(s->base_path, &b) < 0) {
                        if (errno != ENOENT) {
                                *ret_error = strprintf("Cannot stat %s: %s", s->base_path, strerror(errno));
                                return -errno;
                        }
                        same = base_fd < 0;
                } else
                        same = base_fd >= 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
                if (same)
                        break;
                if (attempt >= LOAD_ATTEMPTS) {
                        *ret_error = strprintf("%s keeps being replaced while it is read", s->base_path);
                        return -EAGAIN;
                }
        }

        if (base_fd >= 0) {
                r = read_fd_capped(base_fd, s->base_path, s->read_cap, &base, &base_size, ret_error);
                if (r < 0)
                        return r;
                r = base_parse(s, base, base_size, &l->index, &l->generation, ret_error);
                if (r < 0)
                        return r;
                l->base_size = base_size;
        }
        if (journal_fd >= 0) {
                r = read_fd_capped(journal_fd, s->journal_path, s->read_cap, &journal, &journal_size, ret_error);
                if (r < 0)
                        return r;
                r = journal_replay(s, journal, journal_size, l->generation, &l->index, &l->journal);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int entries_copy(const Index *idx, StoreEntry **ret, size_t *ret_n) {
        StoreEntry *entries;
        size_t i = 0;

        entries = new0(StoreEntry, idx->n);
        if (!entries)
                return -ENOMEM;
        for (const Entry *e = idx->first; e; e = e->next, i++) {
                entries[i].name = strdup(e->name);
                entries[i].xml = memdup_nul(e->xml, e->xml_len);
                if (!entries[i].name || !entries[i].xml) {
                        store_entries_free(entries, i + 1);
                        return -ENOMEM;
                }
        }
        *ret = entries;
        *ret_n = idx->n;
        return 0;
}

int store_load(Store *s, StoreEntry **ret_entries, size_t *ret_n, char **ret_current, char **ret_error) {
        _cleanup_free_ char *error = NULL, *current = NULL;
        StoreEntry *entries = NULL;
        Loaded l = {};
        size_t n = 0;
        int r;

        r = load_files(s, &l, &error);
        if (r >= 0 && ret_entries)
                r = entries_copy(&l.index, &entries, &n);
        if (r >= 0 && ret_current && l.index.current) {
                current = strdup(l.index.current->name);
                if (!current)
                        r = -ENOMEM;
        }
        if (r < 0) {
                index_done(&l.index);
                store_entries_free(entries, n);
                if (ret_error)
                        *ret_error = error ? TAKE_PTR(error) : strprintf("Cannot load %s: %s", s->base_path, strerror(-r));
                return r;
        }

        index_done(&s->index);
        s->index = l.index;
        s->loaded = true;
        s->generation = l.generation;
        s->base_size = l.base_size;
        s->journal_size = l.journal.valid_size;
        s->journal_fd = safe_close(s->journal_fd);
        s->n_stale_records = l.journal.n_stale;
        s->ignored_bytes = l.journal.ignored_bytes;
        s->needs_compaction = l.journal.n_stale > 0 || l.journal.ignored_bytes > 0;

        if (ret_entries)
                *ret_entries = entries;
        if (ret_n)
                *ret_n = n;
        if (ret_current)
                *ret_current = TAKE_PTR(current);
        return 0;
}

/* ---- writing ---- */

static int fsync_directory(const char *dir) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0 || fsync(fd) < 0)
                return -errno;
        return 0;
}

/* Leftovers of write_file_atomic() killed between create and rename. */
static void remove_temporary_files(Store *s) {
        _cleanup_(closedirp) DIR *d = NULL;
        _cleanup_free_ char *p1 = NULL, *p2 = NULL;
        struct dirent *de;

        if (s->temporary_files_cleaned)
                return;
        p1 = strprintf("%s.xml.tmp-", s->basename);
        p2 = strprintf("%s.journal.tmp-", s->basename);
        d = opendir(s->dir);
        if (!p1 || !p2 || !d)
                return;
        while ((de = readdir(d))) {
                const char *suffix = NULL;

                if (strncmp(de->d_name, p1, strlen(p1)) == 0)
                        suffix = de->d_name + strlen(p1);
                else if (strncmp(de->d_name, p2, strlen(p2)) == 0)
                        suffix = de->d_name + strlen(p2);
                if (isempty(suffix) || strspn(suffix, "0123456789") != strlen(suffix))
                        continue;
                if (unlinkat(dirfd(d), de->d_name, 0) < 0 && errno != ENOENT)
                        log_debug_errno(errno, "Cannot remove %s/%s: %m", s->dir, de->d_name);
        }
        s->temporary_files_cleaned = true;
}

/* Writes the whole index as the bulk file of the next generation and
 * starts an empty journal. The bulk file's rename is the commit point. */
static int store_compact(Store *s) {
        _cleanup_free_ char *buf = NULL;
        uint64_t gen = s->generation + 1;
        size_t size;
        int r;

        r = base_format(s, &s->index, gen, &buf, &size);
        if (r < 0)
                return log_error_errno(r, "Cannot format %s: %m", s->base_path);
        r = mkdir_p(s->dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Cannot create %s: %m", s->dir);

        r = write_file_atomic(s->base_path, buf, size, 0600);
        /* Even on failure the rename may have happened (only the folder's
         * fsync failed): this generation number is used up either way, and
         * the next commit rewrites the file from memory. */
        s->generation = gen;
        if (r < 0) {
                s->needs_compaction = true;
                return log_error_errno(r, "Failed to write %s: %m", s->base_path);
        }
        s->base_size = size;
        s->n_compactions++;

        s->journal_fd = safe_close(s->journal_fd);
        r = write_file_atomic(s->journal_path, "", 0, 0600);
        if (r < 0) {
                /* Committed all the same: the old records are now stale. */
                log_warning_errno(r, "Failed to replace %s (its records are older than %s and ignored); retrying at the next change: %m",
                                  s->journal_path, s->base_path);
                s->needs_compaction = true;
                return 0;
        }
        s->journal_size = 0;
        s->needs_compaction = false;
        return 0;
}

/* Opens the journal for appending, creating it (durably) when missing.
 * -ESTALE when it is not what we loaded: then the caller compacts. */
static int journal_open(Store *s) {
        struct stat st;
        int fd, r;

        /* One fstat() per append: cheap next to the fdatasync(), and it
         * catches a journal truncated or replaced behind our back. */
        if (s->journal_fd >= 0) {
                if (fstat(s->journal_fd, &st) >= 0 && (uint64_t) st.st_size == s->journal_size && st.st_nlink > 0)
                        return 0;
                s->journal_fd = safe_close(s->journal_fd);
                return -ESTALE;
        }
        fd = open(s->journal_path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT && s->journal_size == 0) {
                r = mkdir_p(s->dir, 0700);
                if (r < 0)
                        return log_error_errno(r, "Cannot create %s: %m", s->dir);
                r = write_file_atomic(s->journal_path, "", 0, 0600);
                if (r < 0)
                        return log_error_errno(r, "Cannot create %s: %m", s->journal_path);
                fd = open(s->journal_path, O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        }
        if (fd < 0) {
                if (errno == ENOENT)
                        return -ESTALE;
                return log_error_errno(errno, "Cannot open %s: %m", s->journal_path);
        }
        if (fstat(fd, &st) < 0 || (uint64_t) st.st_size != s->journal_size) {
                safe_close(fd);
                return -ESTALE;
        }
        s->journal_fd = fd;
        return 0;
}

static int journal_append(Store *s, const char *rec, size_t size) {
        size_t done = 0;
        int r;

        while (done < size) {
                ssize_t k = pwrite(s->journal_fd, rec + done, size - done, (off_t) (s->journal_size + done));

                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0) {
                        r = k < 0 ? -errno : -EIO;
                        goto fail;
                }
                done += (size_t) k;
        }
        if (fdatasync(s->journal_fd) < 0) {
                r = -errno;
                goto fail;
        }
        s->journal_size += size;
        return 0;

fail:
        /* Take back what may have reached the file. If even that fails, the
         * next commit replaces the journal, making these bytes stale. */
        if (ftruncate(s->journal_fd, (off_t) s->journal_size) < 0 || fdatasync(s->journal_fd) < 0)
                s->needs_compaction = true;
        return log_error_errno(r, "Failed to append to %s: %m", s->journal_path);
}

static uint64_t journal_limit(const Store *s) {
        uint64_t t = s->compaction_threshold ?: MAX(COMPACTION_MIN, s->base_size);

        return MIN(t, s->read_cap);
}

static const char *skip_space(const char *p) {
        while (is_xml_space(*p))
                p++;
        return p;
}

typedef struct Checked {
        Op *ops;
        char **names; /* PUT names parsed from the XML */
        size_t n;
} Checked;

static void checked_done(Checked *c) {
        for (size_t i = 0; i < c->n; i++)
                free(c->names[i]);
        free(c->names);
        free(c->ops);
}

/* Public ops to internal ones; each PUT's XML checked. Logs. */
static int ops_check(const Store *s, const StoreOp *ops, size_t n_ops, Checked *c) {
        c->ops = new0(Op, n_ops);
        c->names = new0(char *, n_ops);
        if (!c->ops || !c->names)
                return log_oom();
        c->n = n_ops;

        for (size_t i = 0; i < n_ops; i++) {
                const StoreOp *op = ops + i;
                Op *o = c->ops + i;

                if ((unsigned) op->type > STORE_OP_CURRENT)
                        return log_error_errno(EINVAL, "%s: unknown op type %d.", s->base_path, (int) op->type);
                o->type = op->type;
                switch (op->type) {
                case STORE_OP_PUT: {
                        _cleanup_free_ char *error = NULL;
                        const char *start, *end;
                        int r;

                        if (!op->xml)
                                return log_error_errno(EINVAL, "%s: PUT without XML.", s->base_path);
                        start = skip_space(op->xml);
                        end = start + strlen(start);
                        while (end > start && is_xml_space(end[-1]))
                                end--;
                        r = entry_parse(start, (size_t) (end - start), s->entry_element, &c->names[i], &error);
                        if (r == -EINVAL) {
                                _cleanup_free_ char *quoted = quote(strempty(op->name));
                                return log_error_errno(r, "%s: entry '%s' refused: %s", s->base_path, strna(quoted), error);
                        }
                        if (r < 0)
                                return log_error_errno(r, "%s: cannot check entry XML: %m", s->base_path);
                        if (op->name && !streq(op->name, c->names[i])) {
                                _cleanup_free_ char *q1 = quote(op->name), *q2 = quote(c->names[i]);
                                return log_error_errno(EINVAL, "%s: PUT of '%s' with XML whose <name> is '%s'.",
                                                       s->base_path, strna(q1), strna(q2));
                        }
                        o->name = c->names[i];
                        o->name_len = strlen(o->name);
                        o->xml = start;
                        o->xml_len = (size_t) (end - start);
                        break;
                }
                case STORE_OP_DELETE:
                case STORE_OP_CURRENT:
                        if (op->type == STORE_OP_DELETE && !op->name)
                                return log_error_errno(EINVAL, "%s: DELETE without a name.", s->base_path);
                        if (op->name && !op->name[0])
                                return log_error_errno(EINVAL, "%s: empty entry name.", s->base_path);
                        o->name = op->name;
                        o->name_len = op->name ? strlen(op->name) : 0;
                        break;
                }
        }
        return 0;
}

int store_commit(Store *s, const StoreOp *ops, size_t n_ops) {
        _cleanup_(checked_done) Checked c = {};
        _cleanup_free_ char *rec = NULL;
        uint64_t new_size;
        size_t rec_size;
        Txn t;
        int r;

        if (!s || (!ops && n_ops > 0))
                return -EINVAL;
        if (n_ops == 0)
                return 0;
        if (!s->loaded) {
                _cleanup_free_ char *error = NULL;

                r = store_load(s, NULL, NULL, NULL, &error);
                if (r < 0)
                        return log_error_errno(r, "%s", error);
        }

        remove_temporary_files(s);
        r = ops_check(s, ops, n_ops, &c);
        if (r < 0)
                return r;

        r = txn_begin(&t, &s->index, n_ops);
        if (r < 0)
                return log_oom();
        for (size_t i = 0; i < n_ops; i++) {
                r = txn_apply(&t, &s->index, c.ops + i);
                if (r == -ENOENT) {
                        _cleanup_free_ char *quoted = quote(c.ops[i].name);
                        log_error_errno(r, "%s: %s of '%s', which is not there.", s->base_path,
                                        c.ops[i].type == STORE_OP_DELETE ? "DELETE" : "CURRENT", strna(quoted));
                        goto fail;
                }
                if (r < 0) {
                        log_oom();
                        goto fail;
                }
        }

        /* Whatever we write must stay readable under the cap. */
        new_size = base_file_size(s, &s->index, s->generation + 1);
        if (new_size > s->read_cap) {
                r = log_error_errno(EFBIG, "%s would grow to %" PRIu64 " bytes, more than the metadata read cap of %" PRIu64
                                    " bytes; raise the cap (qsnapd --metadata-read-cap=BYTES) first.",
                                    s->base_path, new_size, s->read_cap);
                goto fail;
        }

        r = record_encode(s->generation, c.ops, n_ops, &rec, &rec_size);
        if (r < 0) {
                log_error_errno(r, "%s: cannot encode the transaction: %m", s->journal_path);
                goto fail;
        }

        r = -ESTALE;
        if (!s->needs_compaction && s->journal_size + rec_size <= journal_limit(s)) {
                r = journal_open(s);
                if (r >= 0)
                        r = journal_append(s, rec, rec_size);
        }
        if (r == -ESTALE)
                r = store_compact(s);
        if (r < 0)
                goto fail;

        txn_finish(&t);
        return 0;

fail:
        txn_rollback(&t, &s->index);
        return r;
}

int store_remove(Store *s) {
        _cleanup_free_ char *error = NULL;
        bool atomic = true;
        int r;

        if (!s->loaded && store_load(s, NULL, NULL, NULL, &error) < 0) {
                /* Unreadable: remove it anyway, just not atomically. */
                log_warning("Removing %s although it cannot be read: %s", s->base_path, error);
                atomic = false;
        }

        s->journal_fd = safe_close(s->journal_fd);
        if (atomic && access(s->journal_path, F_OK) >= 0) {
                /* An empty bulk file of a newer generation first: from then on
                 * the state is "empty" whatever else a crash leaves behind. */
                Index empty = {};
                _cleanup_free_ char *buf = NULL;
                size_t size;

                r = base_format(s, &empty, s->generation + 1, &buf, &size);
                if (r < 0)
                        return log_oom();
                r = write_file_atomic(s->base_path, buf, size, 0600);
                s->generation++; /* used up even on failure, see store_compact() */
                if (r < 0) {
                        s->needs_compaction = true;
                        return log_error_errno(r, "Failed to write %s: %m", s->base_path);
                }
                /* Memory follows the disk at once, should an unlink below fail. */
                index_done(&s->index);
                s->base_size = size;
                s->needs_compaction = true;
        }
        if (unlink(s->journal_path) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to remove %s: %m", s->journal_path);
        if (unlink(s->base_path) < 0 && errno != ENOENT)
                return log_error_errno(errno, "Failed to remove %s: %m", s->base_path);
        remove_temporary_files(s);
        r = fsync_directory(s->dir);
        if (r < 0 && r != -ENOENT)
                return log_error_errno(r, "Failed to sync %s: %m", s->dir);

        index_done(&s->index);
        s->loaded = true;
        s->generation = 0;
        s->base_size = 0;
        s->journal_size = 0;
        s->needs_compaction = false;
        return 0;
}
