/* SPDX-License-Identifier: MIT */
/* Size classes and the pageblock geometry of each class. */
#include "internal.h"

unsigned zc__size_class(size_t size)
{
    if (size <= 64)
        return size == 0 ? 0 : (unsigned)((size + 7) / 8 - 1);
    size_t s = size - 1;
    unsigned msb = 63u - (unsigned)__builtin_clzll(s);
    size_t base = (size_t)1 << msb;
    unsigned k = (unsigned)((s - base) >> (msb - 3));
    return 8 + (msb - 6) * 8 + k;
}

size_t zc__class_size(unsigned cls)
{
    if (cls < 8)
        return (cls + 1) * 8;
    unsigned j = cls - 8;
    size_t base = (size_t)1 << (6 + j / 8);
    return base + (j % 8 + 1) * (base >> 3);
}

/* Slots a pageblock of @npages holds, and the bytes it leaves unused. */
static size_t pb_slots(size_t npages, size_t size, size_t *waste)
{
    size_t bytes = npages * ZC_PAGE_SIZE;
    size_t slots = bytes / size;
    if (slots > ZC_PB_MAX_SLOTS)
        slots = ZC_PB_MAX_SLOTS;
    *waste = bytes - slots * size;
    return slots;
}

/* Pick each class's pageblock: about the configured size, at least four
 * objects, at most ZC_PB_MAX_SLOTS, and the page count in a small window
 * that leaves the least tail unused. */
void zc__classes_init(struct zc_pool *pool)
{
    size_t target_pages = pool->cfg.pageblock_size / ZC_PAGE_SIZE;
    /* Objects up to half a pageblock share them (32 KiB at the default
     * 64 KiB, never less, at most 128 KiB), and up to an eighth of one
     * (at most 512 KiB) in pageblocks above 1 MiB. A larger pageblock
     * batches larger objects: each protection change of a pageblock covers
     * all of its objects, where an object of its own run pays one per
     * object (docs/design.md). */
    size_t half = pool->cfg.pageblock_size / 2, eighth = pool->cfg.pageblock_size / 8;
    size_t small = half < ZC_SMALL_MAX ? ZC_SMALL_MAX : half > ZC_MID_MAX ? ZC_MID_MAX : half;
    if (eighth > small)
        small = eighth > ZC_CLASS_MAX ? ZC_CLASS_MAX : eighth;
    pool->small_max = small;
    for (unsigned c = 0; c < ZC_NUM_CLASSES; c++) {
        size_t size = zc__class_size(c);
        size_t lo = target_pages;
        size_t cap_pages = (size * ZC_PB_MAX_SLOTS + ZC_PAGE_SIZE - 1) / ZC_PAGE_SIZE;
        if (cap_pages < lo)
            lo = cap_pages;
        size_t min4 = (4 * size + ZC_PAGE_SIZE - 1) / ZC_PAGE_SIZE;
        if (min4 > lo)
            lo = min4;
        size_t best = lo, best_waste = (size_t)-1;
        for (size_t n = lo; n <= lo + lo / 4; n++) {
            size_t waste;
            pb_slots(n, size, &waste);
            /* compare waste / (n pages) without division */
            if (best_waste == (size_t)-1 || waste * best < best_waste * n) {
                best = n;
                best_waste = waste;
            }
        }
        size_t waste;
        struct zc_class *cls = &pool->classes[c];
        cls->size = (uint32_t)size;
        cls->npages = (uint32_t)best;
        cls->nslots = (uint16_t)pb_slots(best, size, &waste);
        atomic_store_explicit(&cls->partial, NULL, memory_order_relaxed);
    }
}
