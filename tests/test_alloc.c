/* SPDX-License-Identifier: MIT */
/* Allocation, freeing, misuse and pageblock states seen through the stats. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "internal.h"

static struct zc_stats stats_of(zc_pool *pool)
{
    struct zc_stats st;
    assert_int_equal(zc_stats(pool, &st), 0);
    return st;
}

static void misuse_gives_einval_never_a_crash(void **state)
{
    (void)state;
    zc_pool *pool = test_pool("copy", 0, 0);
    zc_pool *other = test_pool("copy", 0, 0);
    char on_stack[64];
    char *heap = malloc(64);
    char *p = zc_alloc(pool, 100);
    assert_non_null(p);

    /* foreign pointers: stack, malloc, another pool */
    char *q = zc_alloc(other, 100);
    assert_int_equal(zc_free(pool, on_stack), -EINVAL);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(zc_free(pool, heap), -EINVAL);
    assert_int_equal(zc_free(pool, q), -EINVAL);
    assert_int_equal(zc_seal(pool, heap), -EINVAL);
    assert_int_equal(zc_seal(pool, q), -EINVAL);
    assert_false(zc_owns(pool, q));
    assert_false(zc_owns(pool, heap));
    assert_true(zc_owns(other, q));
    /* interior pointer */
    assert_int_equal(zc_free(pool, p + 1), -EINVAL);
    assert_int_equal(zc_seal(pool, p + 8), -EINVAL);
    assert_true(zc_owns(pool, p + 99));
    /* never-allocated space inside the arena */
    assert_int_equal(zc_free(pool, (char *)pool->arena + pool->arena_size - 4096), -EINVAL);
    /* double free, small and large */
    assert_int_equal(zc_free(pool, p), 0);
    assert_false(zc_owns(pool, p));
    assert_int_equal(zc_free(pool, p), -EINVAL);
    assert_int_equal(zc_seal(pool, p), -EINVAL);
    char *big = zc_alloc(pool, 1 << 20);
    assert_non_null(big);
    assert_int_equal(zc_free(pool, big), 0);
    assert_int_equal(zc_free(pool, big), -EINVAL);
    /* the pool still works */
    char *r = zc_alloc(pool, 100);
    assert_non_null(r);
    assert_int_equal(zc_free(pool, r), 0);
    assert_int_equal(zc_free(other, q), 0);
    free(heap);
    zc_pool_destroy(other);
    zc_pool_destroy(pool);
}

static void arena_exhaustion_is_enomem(void **state)
{
    (void)state;
    zc_pool *pool = test_pool("copy", 0, 4u << 20);
    errno = 0;
    assert_null(zc_alloc(pool, 5u << 20));
    assert_int_equal(errno, ENOMEM);
    void *objs[64];
    size_t n = 0;
    while (n < 64 && (objs[n] = zc_alloc(pool, 256 << 10)) != NULL)
        n++;
    assert_int_equal(errno, ENOMEM);
    assert_true(n >= 14 && n <= 16);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(zc_free(pool, objs[i]), 0);
    /* everything came back, coalesced: one big object fits again */
    void *all = zc_alloc(pool, 4u << 20);
    assert_non_null(all);
    assert_int_equal(zc_free(pool, all), 0);
    zc_pool_destroy(pool);
}

static void slots_are_reused_after_free(void **state)
{
    (void)state;
    zc_pool *pool = test_pool("copy", 0, 0);
    void *a = zc_alloc(pool, 200);
    assert_int_equal(zc_free(pool, a), 0);
    void *b = zc_alloc(pool, 200);
    assert_ptr_equal(a, b);
    assert_int_equal(zc_free(pool, b), 0);
    zc_pool_destroy(pool);
}

/* open -> full -> partial -> protected -> reused, and large objects */
static void pageblock_states_show_in_stats(void **state)
{
    (void)state;
    zc_pool *pool = test_pool("copy", ZC_POOL_PROTECT, 0);
    const size_t size = 1024;
    unsigned c = zc__size_class(size);
    size_t n = pool->classes[c].nslots;
    struct zc_stats st = stats_of(pool);
    assert_int_equal(st.pageblocks_active, 0);
    assert_int_equal(st.bytes_committed, 0);

    char **objs = calloc(4 * n, sizeof(*objs));
    for (size_t i = 0; i < n; i++)
        objs[i] = zc_alloc(pool, size);
    st = stats_of(pool);
    assert_int_equal(st.pageblocks_active, 1);
    assert_int_equal(st.pageblocks_full, 0);
    assert_int_equal(st.bytes_committed, (size_t)pool->classes[c].npages * ZC_PAGE_SIZE);

    /* the next object opens a second pageblock; the first is now full */
    objs[n] = zc_alloc(pool, size);
    st = stats_of(pool);
    assert_int_equal(st.pageblocks_active, 1);
    assert_int_equal(st.pageblocks_full, 1);

    /* sealing every object of the full one protects it, once */
    for (size_t i = 0; i < n; i++) {
        pattern_fill(objs[i], size, i, 0);
        assert_int_equal(zc_seal(pool, objs[i]), 0);
        if (i + 1 < n)
            assert_int_equal(stats_of(pool).pageblocks_protected, 0);
    }
    assert_int_equal(zc_seal(pool, objs[0]), 0);
    st = stats_of(pool);
    assert_int_equal(st.pageblocks_protected, 1);
    assert_int_equal(st.protects, 1);

    /* a free makes it partial, still protected */
    assert_int_equal(zc_free(pool, objs[3]), 0);
    objs[3] = NULL;
    st = stats_of(pool);
    assert_int_equal(st.pageblocks_full, 0);
    assert_int_equal(st.pageblocks_partial, 1);
    assert_int_equal(st.pageblocks_protected, 1);

    /* fill the second pageblock: one free slot is not worth two protection
     * changes, so the next object opens a third pageblock */
    for (size_t i = n + 1; i < 2 * n; i++)
        objs[i] = zc_alloc(pool, size);
    objs[2 * n] = zc_alloc(pool, size);
    assert_true((uintptr_t)objs[2 * n] < (uintptr_t)objs[0] ||
                (uintptr_t)objs[2 * n] > (uintptr_t)objs[n - 1]);
    st = stats_of(pool);
    assert_int_equal(st.pageblocks_protected, 1);
    assert_int_equal(st.unprotects, 0);

    /* with half its slots free, the allocator takes the protected one back
     * once the third is full, lifting its protection (nothing in flight) */
    for (size_t i = 0; i < n / 2; i++) {
        if (i != 3)
            assert_int_equal(zc_free(pool, objs[i]), 0);
        objs[i] = NULL;
    }
    char *again = NULL;
    size_t next = 2 * n + 1;
    while (next < 4 * n && !again) {
        char *p = zc_alloc(pool, size);
        assert_non_null(p);
        if ((uintptr_t)p >= (uintptr_t)objs[n / 2] - (n / 2) * size &&
            (uintptr_t)p <= (uintptr_t)objs[n - 1])
            again = p;
        else
            objs[next++] = p;
    }
    assert_non_null(again);
    st = stats_of(pool);
    assert_int_equal(st.pageblocks_protected, 0);
    assert_int_equal(st.unprotects, 1);
    /* the second and third are full, the first is the one allocated from */
    assert_int_equal(st.pageblocks_partial, 0);
    assert_int_equal(st.pageblocks_full, 2);
    assert_int_equal(st.pageblocks_active, 1);
    assert_int_equal(st.protect_faults, 0);
    pattern_fill(again, size, 999, 0);
    /* the objects still in it kept their bytes */
    for (size_t i = n / 2; i < n; i++)
        assert_int_equal(pattern_check(objs[i], size, i, 0), (size_t)-1);
    objs[0] = again;

    /* large objects are protected when sealed */
    char *big = zc_alloc(pool, 200000);
    st = stats_of(pool);
    assert_int_equal(st.large_objects, 1);
    assert_int_equal(zc_seal(pool, big), 0);
    assert_int_equal(stats_of(pool).large_protected, 1);
    assert_int_equal(zc_free(pool, big), 0);
    st = stats_of(pool);
    assert_int_equal(st.large_objects, 0);
    assert_int_equal(st.large_protected, 0);

    /* freeing everything returns the pageblocks */
    for (size_t i = 0; i < 4 * n; i++)
        assert_int_equal(zc_free(pool, objs[i]), 0);
    st = stats_of(pool);
    assert_int_equal(st.pageblocks_full + st.pageblocks_partial, 0);
    assert_int_equal(st.pageblocks_active, 1);
    free(objs);
    zc_pool_destroy(pool);
}

/* One pageblock's worth of @size-byte objects in a pool of @pageblock:
 * they share one pageblock, page aligned, and are write-protected by one
 * change once all are sealed; an object of @shared_max + 1 bytes is large. */
static void one_pageblock_of(size_t pageblock, size_t size, size_t shared_max)
{
    zc_pool *pool = test_pool_pageblock("copy", ZC_POOL_PROTECT, 0, pageblock);
    size_t n = pool->classes[zc__size_class(size)].nslots;
    assert_true(n >= 8);
    char **objs = calloc(n, sizeof(*objs));
    for (size_t i = 0; i < n; i++) {
        objs[i] = zc_alloc(pool, size);
        assert_non_null(objs[i]);
        assert_int_equal((uintptr_t)objs[i] % ZC_PAGE_SIZE, 0);
        pattern_fill(objs[i], size, i, 0);
    }
    struct zc_stats st = stats_of(pool);
    assert_int_equal(st.large_objects, 0);
    assert_int_equal(st.pageblocks_active, 1);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(stats_of(pool).pageblocks_protected, 0);
        assert_int_equal(zc_seal(pool, objs[i]), 0);
    }
    st = stats_of(pool);
    assert_int_equal(st.pageblocks_protected, 1);
    assert_int_equal(st.protects, 1);
    assert_int_equal(st.large_protected, 0);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(pattern_check(objs[i], size, i, 0), (size_t)-1);
        assert_int_equal(zc_free(pool, objs[i]), 0);
    }
    char *big = zc_alloc(pool, shared_max + 1);
    assert_non_null(big);
    assert_int_equal(stats_of(pool).large_objects, 1);
    assert_int_equal(zc_free(pool, big), 0);
    free(objs);
    zc_pool_destroy(pool);
}

/* With 1 MiB pageblocks, objects up to 128 KiB share pageblocks, and with
 * 4 MiB ones objects up to 512 KiB: the objects of one pageblock are
 * write-protected by one change, where each large object pays its own. */
static void larger_pageblocks_take_larger_objects(void **state)
{
    (void)state;
    /* a 64 KiB value and its reply line */
    one_pageblock_of((size_t)1 << 20, 65536 + 100, (size_t)128 << 10);
    /* a 256 KiB value and its reply line */
    one_pageblock_of((size_t)4 << 20, 262144 + 100, (size_t)512 << 10);

    /* the default 64 KiB pageblocks: objects above 32 KiB are large */
    zc_pool *pool = test_pool("copy", ZC_POOL_PROTECT, 0);
    char *big = zc_alloc(pool, ZC_SMALL_MAX + 1);
    assert_non_null(big);
    assert_int_equal(stats_of(pool).large_objects, 1);
    assert_int_equal(zc_free(pool, big), 0);
    zc_pool_destroy(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(misuse_gives_einval_never_a_crash),
        cmocka_unit_test(arena_exhaustion_is_enomem),
        cmocka_unit_test(slots_are_reused_after_free),
        cmocka_unit_test(pageblock_states_show_in_stats),
        cmocka_unit_test(larger_pageblocks_take_larger_objects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
