/* SPDX-License-Identifier: MIT */
/* Every size class: waste bound, alignment, geometry, no overlap. */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "internal.h"

static void classes_are_monotonic_and_tight(void **state)
{
    (void)state;
    size_t prev = 0;
    for (unsigned c = 0; c < ZC_NUM_CLASSES; c++) {
        size_t sz = zc__class_size(c);
        assert_true(sz > prev);
        assert_int_equal(zc__size_class(sz), c);
        assert_int_equal(zc__size_class(prev + 1), c);
        /* spacing: at most 12.5% above the class below, past 8-byte grain */
        if (prev >= 64)
            assert_true((sz - prev) * 8 <= prev);
        prev = sz;
    }
    assert_int_equal(prev, ZC_CLASS_MAX);
    /* the waste of every size from 64 B up is at most 12.5% */
    for (size_t s = 64; s <= ZC_CLASS_MAX; s++) {
        size_t cs = zc__class_size(zc__size_class(s));
        assert_true(cs >= s);
        assert_true((cs - s) * 8 <= s);
    }
}

/* Every class's pageblock, at the default size, at 1 MiB (the memcached
 * example's until 2026-12-05) and at the largest. */
static void geometry_fits_every_class(void **state)
{
    (void)state;
    static const size_t sizes[] = { 0, (size_t)1 << 20, (size_t)4 << 20 };
    for (int i = 0; i < 3; i++) {
        struct zc_pool_config cfg;
        zc_pool_config_init(&cfg);
        cfg.backend = "copy";
        cfg.flags = ZC_POOL_IGNORE_ENV;
        cfg.arena_capacity = (size_t)256 << 20;
        cfg.pageblock_size = sizes[i];
        zc_pool *pool = NULL;
        assert_int_equal(zc_pool_create(&pool, &cfg), 0);
        static const size_t small_max[] = { ZC_SMALL_MAX, ZC_MID_MAX, ZC_CLASS_MAX };
        assert_int_equal(pool->small_max, small_max[i]);
        for (unsigned c = 0; c < ZC_NUM_CLASSES; c++) {
            const struct zc_class *cls = &pool->classes[c];
            size_t bytes = (size_t)cls->npages * ZC_PAGE_SIZE;
            assert_true(cls->nslots >= 4);
            assert_true(cls->nslots <= ZC_PB_MAX_SLOTS);
            assert_true((size_t)cls->nslots * cls->size <= bytes);
            /* tail left unused by the pageblock: under 12.5% */
            assert_true((bytes - (size_t)cls->nslots * cls->size) * 8 <= bytes);
            /* classes above 32 KiB keep objects page aligned */
            if (cls->size > ZC_SMALL_MAX)
                assert_int_equal(cls->size % ZC_PAGE_SIZE, 0);
        }
        zc_pool_destroy(pool);
    }
}

static size_t expected_alignment(size_t size)
{
    if (size > ZC_SMALL_MAX)
        return ZC_PAGE_SIZE;
    return size >= 128 ? 16 : 8;
}

/* Allocate a full pageblock and more of each class at its smallest and
 * largest size; check alignment, class, writability, no overlap. */
static void every_class_allocates_aligned_disjoint_objects(void **state)
{
    (void)state;
    zc_pool *pool = test_pool("copy", 0, 0);
    for (unsigned c = 0; c < ZC_NUM_CLASSES; c++) {
        size_t hi = zc__class_size(c), lo = c ? zc__class_size(c - 1) + 1 : 1;
        size_t count = (size_t)pool->classes[c].nslots + 3;
        void **objs = calloc(count, sizeof(*objs));
        assert_non_null(objs);
        for (size_t i = 0; i < count; i++) {
            size_t sz = (i & 1) ? hi : lo;
            objs[i] = zc_alloc(pool, sz);
            assert_non_null(objs[i]);
            assert_int_equal((uintptr_t)objs[i] % expected_alignment(sz), 0);
            assert_true(zc_owns(pool, objs[i]));
            assert_true(zc_owns(pool, (char *)objs[i] + sz - 1));
            pattern_fill(objs[i], sz, c * 1000 + i, 0);
        }
        for (size_t i = 0; i < count; i++) {
            size_t sz = (i & 1) ? hi : lo;
            assert_int_equal(pattern_check(objs[i], sz, c * 1000 + i, 0), (size_t)-1);
            assert_int_equal(zc_free(pool, objs[i]), 0);
        }
        free(objs);
    }
    /* large objects: page aligned, rounded to pages */
    size_t sizes[] = { ZC_SMALL_MAX + 1, 40000, 65536, 100000, 1 << 20, (3 << 20) + 17 };
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char *p = zc_alloc(pool, sizes[i]);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % ZC_PAGE_SIZE, 0);
        pattern_fill(p, sizes[i], i, 0);
        assert_int_equal(pattern_check(p, sizes[i], i, 0), (size_t)-1);
        assert_true(zc_owns(pool, p + sizes[i] - 1));
        assert_int_equal(zc_free(pool, p), 0);
        assert_false(zc_owns(pool, p));
    }
    zc_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(classes_are_monotonic_and_tight),
        cmocka_unit_test(geometry_fits_every_class),
        cmocka_unit_test(every_class_allocates_aligned_disjoint_objects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
