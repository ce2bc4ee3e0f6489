/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The metadata store's entries in memory: a hash map by name (seeded,
 * open addressing with tombstones) and a list in insertion order, and the
 * transactions on them, each op with its undo so that a transaction the
 * journal refuses leaves the index as it was.
 */
#include <sys/random.h>

#include "store/store-internal.h"

/* ---- the index: entries in insertion order, found by name ---- */

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

char *memdup_nul(const char *p, size_t n) {
        char *c = malloc(n + 1);

        if (c) {
                memcpy(c, p, n);
                c[n] = 0;
        }
        return c;
}

Entry *index_find(const Index *idx, const char *name, size_t len) {
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
int index_add(Index *idx, const char *name, size_t name_len, const char *xml, size_t xml_len, Entry **ret) {
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

void index_done(Index *idx) {
        for (Entry *e = idx->first, *next; e; e = next) {
                next = e->next;
                entry_free(e);
        }
        free(idx->slots);
        *idx = (Index) {};
}

/* ---- transactions on the index, with undo ---- */

int txn_begin(Txn *t, const Index *idx, size_t n_ops) {
        *t = (Txn) {
                .undo = new0(Undo, n_ops),
                .saved_current = idx->current,
                .saved_n = idx->n,
                .saved_body_size = idx->body_size,
        };
        return t->undo ? 0 : -ENOMEM;
}

int txn_apply(Txn *t, Index *idx, const Op *op) {
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
void txn_rollback(Txn *t, Index *idx) {
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

void txn_finish(Txn *t) {
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
