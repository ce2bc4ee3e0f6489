/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * FNV-1a hashing into a power-of-two table kept at most 3/4 full
 * (tombstones included); it grows by doubling, so puts are amortized O(1).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/hashmap.h"

#define TOMBSTONE ((const char *) 1)

typedef struct Bucket {
        const char *key; /* NULL: empty, TOMBSTONE: removed */
        void *value;
} Bucket;

struct Hashmap {
        Bucket *buckets;
        size_t n_buckets; /* 0 or a power of two */
        size_t n_items;
        size_t n_used;    /* items + tombstones */
};

static uint64_t hash_string(const char *s) {
        uint64_t h = 14695981039346656037ULL;

        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= 1099511628211ULL;
        }
        return h;
}

Hashmap *hashmap_new(void) {
        return calloc(1, sizeof(Hashmap));
}

Hashmap *hashmap_free(Hashmap *h) {
        if (h) {
                free(h->buckets);
                free(h);
        }
        return NULL;
}

size_t hashmap_size(const Hashmap *h) {
        return h ? h->n_items : 0;
}

/* The bucket holding key, or the first free one on its probe path. */
static Bucket *find(const Hashmap *h, const char *key, bool *ret_found) {
        size_t mask = h->n_buckets - 1, i = hash_string(key) & mask;
        Bucket *free_slot = NULL;

        for (;;) {
                Bucket *b = h->buckets + i;

                if (!b->key) {
                        *ret_found = false;
                        return free_slot ?: b;
                }
                if (b->key == TOMBSTONE) {
                        if (!free_slot)
                                free_slot = b;
                } else if (strcmp(b->key, key) == 0) {
                        *ret_found = true;
                        return b;
                }
                i = (i + 1) & mask;
        }
}

static int resize(Hashmap *h, size_t n) {
        Bucket *old = h->buckets;
        size_t old_n = h->n_buckets;

        h->buckets = calloc(n, sizeof(Bucket));
        if (!h->buckets) {
                h->buckets = old;
                return -ENOMEM;
        }
        h->n_buckets = n;
        h->n_used = h->n_items;
        for (size_t i = 0; i < old_n; i++)
                if (old[i].key && old[i].key != TOMBSTONE) {
                        bool found;
                        *find(h, old[i].key, &found) = old[i];
                }
        free(old);
        return 0;
}

static int put(Hashmap *h, const char *key, void *value, bool replace) {
        Bucket *b;
        bool found;
        int r;

        if ((h->n_used + 1) * 4 > h->n_buckets * 3) {
                size_t n = h->n_buckets ? h->n_buckets : 16;
                while ((h->n_items + 1) * 2 > n)
                        n *= 2;
                r = resize(h, n);
                if (r < 0)
                        return r;
        }
        b = find(h, key, &found);
        if (found) {
                if (!replace)
                        return -EEXIST;
                b->key = key;
                b->value = value;
                return 0;
        }
        if (!b->key)
                h->n_used++;
        b->key = key;
        b->value = value;
        h->n_items++;
        return 0;
}

int hashmap_put(Hashmap *h, const char *key, void *value) {
        return put(h, key, value, false);
}

int hashmap_replace(Hashmap *h, const char *key, void *value) {
        return put(h, key, value, true);
}

void *hashmap_get(const Hashmap *h, const char *key) {
        Bucket *b;
        bool found;

        if (!h || h->n_items == 0)
                return NULL;
        b = find(h, key, &found);
        return found ? b->value : NULL;
}

void *hashmap_remove(Hashmap *h, const char *key) {
        Bucket *b;
        bool found;
        void *v;

        if (!h || h->n_items == 0)
                return NULL;
        b = find(h, key, &found);
        if (!found)
                return NULL;
        v = b->value;
        b->key = TOMBSTONE;
        b->value = NULL;
        h->n_items--;
        return v;
}
