/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A small string-keyed hash map (open addressing, linear probing,
 * tombstones): name lookups stay O(1) with thousands of snapshots. Keys
 * are borrowed: they must live as long as their entry (usually the
 * value's own name field).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct Hashmap Hashmap;

Hashmap *hashmap_new(void);
Hashmap *hashmap_free(Hashmap *h);
static inline void hashmap_freep(Hashmap **h) {
        if (*h)
                hashmap_free(*h);
}

/* -EEXIST when the key is there already. */
int hashmap_put(Hashmap *h, const char *key, void *value);
/* Replaces or inserts. */
int hashmap_replace(Hashmap *h, const char *key, void *value);
void *hashmap_get(const Hashmap *h, const char *key);
/* Returns the removed value or NULL. */
void *hashmap_remove(Hashmap *h, const char *key);
size_t hashmap_size(const Hashmap *h);
