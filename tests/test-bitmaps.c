/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The inventory edits of daemon/core/bitmaps.c that keep a remembered
 * inventory (core/bitmap-tops.c) up to date: bitmap_layer_add() and
 * bitmap_layer_drop() against a model (a plain array of names), on layers
 * below and above the size where lookups go through the hash index, every
 * name looked up after every step; bitmap_inventory_copy() equal to its
 * source with every count 0; and the usability rule (bitmap_disk_check())
 * on a chain edited that way.
 */
#include <stdio.h>

#include "core/bitmaps.h"
#include "test-check.h"
#include "util/hashmap.h"

#define N_NAMES 64

static char *name_of(unsigned i) {
        return strprintf("c%u", i);
}

/* Every name of the model found, with its flags; every other not. */
static void check_layer(const BitmapLayer *l, const bool *in) {
        size_t n = 0;

        for (unsigned i = 0; i < N_NAMES; i++) {
                _cleanup_free_ char *name = name_of(i);
                const BitmapEntry *e = bitmap_layer_find(l, name);

                CHECK(!!e == in[i]);
                if (e) {
                        CHECK_STREQ(e->name, name);
                        CHECK(e->granularity == 65536u * (i % 3 + 1));
                        n++;
                }
        }
        CHECK(l->n_bitmaps == n);
}

static void test_add_drop(void) {
        BitmapInventory *inv = new0(BitmapInventory, 1), *copy = NULL;
        bool in[N_NAMES] = {};
        unsigned seed = 12345;
        BitmapLayer *l;

        inv->live = true;
        inv->disks = new0(BitmapDisk, 1);
        inv->n_disks = 1;
        inv->disks[0].target = strdup("vda");
        inv->disks[0].layers = new0(BitmapLayer, 1);
        inv->disks[0].n_layers = 1;
        l = inv->disks[0].layers;
        l->path = strdup("/top.qcow2");
        l->node = strdup("vda-fmt");
        l->qcow2 = true;
        /* Grows past the index's threshold, shrinks below it, grows again. */
        for (unsigned step = 0; step < 2000; step++) {
                unsigned i = (seed = seed * 1103515245u + 12345u) >> 16;
                bool grow = (step / 300) % 2 == 0;
                _cleanup_free_ char *name = NULL;

                i %= N_NAMES;
                name = name_of(i);
                if (!in[i] && (grow || (seed >> 8) % 4 == 0)) {
                        BitmapEntry e = { .name = name, .recording = true, .persistent = true,
                                          .count = 7, .granularity = 65536u * (i % 3 + 1) };
                        CHECK(bitmap_layer_add(l, &e) >= 0);
                        in[i] = true;
                } else if (in[i] && (!grow || (seed >> 8) % 4 == 0)) {
                        bitmap_layer_drop(l, name);
                        in[i] = false;
                } else if (!in[i])
                        bitmap_layer_drop(l, name); /* absent: nothing happens */
                check_layer(l, in);
        }
        CHECK(bitmap_inventory_copy(inv, &copy) >= 0);
        check_layer(copy->disks[0].layers, in);
        CHECK_STREQ(copy->disks[0].target, "vda");
        CHECK_STREQ(copy->disks[0].layers[0].node, "vda-fmt");
        CHECK(copy->live && copy->disks[0].layers[0].qcow2);
        for (size_t k = 0; k < copy->disks[0].layers[0].n_bitmaps; k++)
                CHECK(copy->disks[0].layers[0].bitmaps[k].count == 0);
        /* The copy is edited on its own. */
        for (unsigned i = 0; i < N_NAMES; i++) {
                _cleanup_free_ char *name = name_of(i);
                bitmap_layer_drop(copy->disks[0].layers, name);
        }
        CHECK(copy->disks[0].layers[0].n_bitmaps == 0);
        check_layer(l, in);
        bitmap_inventory_free(copy);
        bitmap_inventory_free(inv);
}

/* A chain of two layers edited as a Delete and a create edit it. */
static void test_rule_after_edits(void) {
        BitmapDisk bd = { .target = (char *) "vda", .n_layers = 2 };
        BitmapLayer layers[2] = { { .path = (char *) "/top.qcow2" }, { .path = (char *) "/base.qcow2" } };
        BitmapEntry e = { .recording = true, .persistent = true };
        _cleanup_free_ char *reason = NULL;
        size_t depth = 0;

        bd.layers = layers;
        for (unsigned i = 0; i < 40; i++) {
                _cleanup_free_ char *name = name_of(i);
                e.name = name;
                CHECK(bitmap_layer_add(layers + 0, &e) >= 0);
                CHECK(bitmap_layer_add(layers + 1, &e) >= 0);
        }
        CHECK(bitmap_disk_check(&bd, "c5", &depth, &reason) == 0 && depth == 2);
        bitmap_layer_drop(layers + 0, "c5");
        bitmap_layer_drop(layers + 1, "c5");
        CHECK(bitmap_disk_check(&bd, "c5", &depth, &reason) == 1);
        CHECK_CONTAINS(reason, "missing from the active image /top.qcow2");
        reason = mfree(reason);
        bitmap_layer_drop(layers + 1, "c6"); /* the base's copy only: a gap? no, the chain ends */
        CHECK(bitmap_disk_check(&bd, "c6", &depth, &reason) == 0 && depth == 1);
        e.name = (char *) "c99";
        CHECK(bitmap_layer_add(layers + 0, &e) >= 0);
        CHECK(bitmap_disk_check(&bd, "c99", &depth, &reason) == 0 && depth == 1);
        bitmap_layer_drop(layers + 0, "c7"); /* the top's only: a gap above the base */
        CHECK(bitmap_disk_check(&bd, "c7", &depth, &reason) == 1);
        CHECK_CONTAINS(reason, "missing from the active image");
        for (size_t j = 0; j < 2; j++) {
                for (size_t k = 0; k < layers[j].n_bitmaps; k++)
                        free(layers[j].bitmaps[k].name);
                free(layers[j].bitmaps);
                hashmap_free(layers[j].index);
        }
}

int main(void) {
        test_add_drop();
        test_rule_after_edits();
        return test_summary();
}
