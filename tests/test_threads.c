/* SPDX-License-Identifier: MIT */
/* Allocation churn and cross-thread frees from 2 threads, checked against a
 * shadow map of the arena: no overlap, no corrupted object, no lost slot. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "internal.h"

#define GRAIN 8
#define OPS_PER_THREAD (150000 / TEST_SCALE_DIV)
#define MAX_LIVE 2048

static zc_pool *pool;
static _Atomic uint8_t *shadow; /* owner tag per 8-byte grain of the arena */

struct obj {
    char *p;
    size_t size;
    uint64_t seed;
};

/* A queue of objects one thread hands to the other to free. */
static struct {
    pthread_mutex_t lock;
    struct obj items[4096];
    size_t n;
} handoff = { .lock = PTHREAD_MUTEX_INITIALIZER };

static _Atomic int overlap_errors, pattern_errors, free_errors;

static size_t grain_of(const char *p)
{
    return (size_t)(p - (char *)pool->arena) / GRAIN;
}

/* Tag every @stride-th grain of @o, and its last; tag 0 releases. */
static void shadow_mark(const struct obj *o, uint8_t tag, size_t stride)
{
    size_t g0 = grain_of(o->p), g1 = grain_of(o->p + o->size - 1);
    for (size_t g = g0;; g = g + stride < g1 ? g + stride : g1) {
        uint8_t expect = 0;
        if (!tag)
            atomic_store(&shadow[g], 0);
        else if (!atomic_compare_exchange_strong(&shadow[g], &expect, tag))
            atomic_fetch_add(&overlap_errors, 1);
        if (g == g1)
            break;
    }
}

static void shadow_claim(const struct obj *o, uint8_t tag)
{
    shadow_mark(o, tag, 1);
}

static void shadow_release(const struct obj *o)
{
    shadow_mark(o, 0, 1);
}

/* memcached-like: mostly small values, some up to 64 KiB, a few large. */
static size_t random_size(unsigned *rs)
{
    unsigned r = (unsigned)rand_r(rs);
    switch (r % 16) {
    case 15: return 32769 + (size_t)rand_r(rs) % (256 << 10);
    case 14: case 13: return 4097 + (size_t)rand_r(rs) % 61440;
    default: return 1 + (size_t)rand_r(rs) % 4096;
    }
}

static void release(struct obj *o)
{
    if (pattern_check(o->p, o->size, o->seed, 0) != (size_t)-1)
        atomic_fetch_add(&pattern_errors, 1);
    shadow_release(o);
    if (zc_free(pool, o->p) != 0)
        atomic_fetch_add(&free_errors, 1);
}

static void *churn(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    unsigned rs = 12345u + id;
    struct obj *live = calloc(MAX_LIVE, sizeof(*live));
    size_t n = 0;
    uint64_t seq = (uint64_t)id << 40;
    for (unsigned op = 0; op < OPS_PER_THREAD; op++) {
        unsigned r = (unsigned)rand_r(&rs) % 100;
        if (n < MAX_LIVE && (r < 55 || n == 0)) {
            struct obj o = { .size = random_size(&rs), .seed = ++seq };
            o.p = zc_alloc(pool, o.size);
            if (!o.p) {
                atomic_fetch_add(&free_errors, 1);
                break;
            }
            shadow_claim(&o, (uint8_t)(id + 1));
            pattern_fill(o.p, o.size, o.seed, 0);
            live[n++] = o;
        } else if (r < 80) {
            size_t i = (size_t)rand_r(&rs) % n;
            release(&live[i]);
            live[i] = live[--n];
        } else {
            /* hand an object to the other thread, free one it handed us */
            size_t i = (size_t)rand_r(&rs) % n;
            struct obj mine = live[i], theirs = { 0 };
            pthread_mutex_lock(&handoff.lock);
            if (handoff.n < 4096) {
                handoff.items[handoff.n++] = mine;
                live[i] = live[--n];
            }
            if (handoff.n > 1 && (rand_r(&rs) & 1))
                theirs = handoff.items[--handoff.n];
            pthread_mutex_unlock(&handoff.lock);
            if (theirs.p)
                release(&theirs);
        }
    }
    for (size_t i = 0; i < n; i++)
        release(&live[i]);
    free(live);
    return NULL;
}

/* A fresh pool and shadow map, and @fn run by two threads (ids 0 and 1). */
static void run_two_threads(void *(*fn)(void *))
{
    pool = test_pool("copy", 0, (size_t)1 << 30);
    shadow = calloc(pool->arena_size / GRAIN, 1);
    assert_non_null(shadow);
    atomic_store(&overlap_errors, 0);
    atomic_store(&pattern_errors, 0);
    atomic_store(&free_errors, 0);
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, fn, (void *)i), 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
}

/* No lost slot: with every object freed and both threads gone, every
 * pageblock and run went back to the arena. Then the pool goes. */
static void end_two_threads(void)
{
    struct zc_stats st;
    zc_stats(pool, &st);
    assert_int_equal(st.large_objects, 0);
    assert_int_equal(st.pageblocks_active, 0);
    assert_int_equal(st.pageblocks_full, 0);
    assert_int_equal(st.pageblocks_partial, 0);
    assert_int_equal(st.bytes_committed, 0);
    free((void *)shadow);
    zc_pool_destroy(pool);
}

static void churn_from_two_threads_keeps_every_object_intact(void **state)
{
    (void)state;
    run_two_threads(churn);
    while (handoff.n)
        release(&handoff.items[--handoff.n]);
    assert_int_equal(atomic_load(&overlap_errors), 0);
    assert_int_equal(atomic_load(&pattern_errors), 0);
    assert_int_equal(atomic_load(&free_errors), 0);
    for (size_t g = 0; g < pool->arena_size / GRAIN; g += 4096)
        assert_int_equal(atomic_load(&shadow[g]), 0);
    end_two_threads();
}

/* One thread allocates, the other frees: slots come back to the allocator. */
#define XFER 20000
static char *xfer[XFER];

/* zc_free each of @n objects, counting failures in free_errors. */
static void free_each(char **objs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (zc_free(pool, objs[i]) != 0)
            atomic_fetch_add(&free_errors, 1);
}

static void *free_all(void *arg)
{
    (void)arg;
    free_each(xfer, XFER);
    return NULL;
}

static void cross_thread_frees_are_reused(void **state)
{
    (void)state;
    pool = test_pool("copy", 0, 0);
    atomic_store(&free_errors, 0);
    for (int round = 0; round < 5; round++) {
        for (size_t i = 0; i < XFER; i++) {
            xfer[i] = zc_alloc(pool, 300);
            assert_non_null(xfer[i]);
            memset(xfer[i], round, 300);
        }
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, free_all, NULL), 0);
        pthread_join(t, NULL);
        assert_int_equal(atomic_load(&free_errors), 0);
        struct zc_stats st;
        zc_stats(pool, &st);
        /* only this thread's current pageblock is left */
        assert_int_equal(st.pageblocks_full + st.pageblocks_partial, 0);
        assert_true(st.bytes_committed <= (size_t)pool->classes[zc__size_class(300)].npages *
                                               ZC_PAGE_SIZE);
    }
    zc_pool_destroy(pool);
}

/* A thread's frees bring its own pageblocks back to its heap (no lock);
 * at its exit they go to the pool for any thread, and nothing is lost. */
static char **own;
static size_t own_n;
static pthread_barrier_t own_freed, own_checked;

static void *own_frees(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < 2 * own_n + 1; i++) {
        own[i] = zc_alloc(pool, 1024);
        if (!own[i])
            atomic_fetch_add(&free_errors, 1);
    }
    struct zc_stats st;
    /* two pageblocks filled, a third current; a free into the first
     * puts it on this thread's partial list */
    if (zc_free(pool, own[3]))
        atomic_fetch_add(&free_errors, 1);
    zc_stats(pool, &st);
    if (st.pageblocks_active != 1 || st.pageblocks_full != 1 || st.pageblocks_partial != 1)
        atomic_fetch_add(&pattern_errors, 1);
    /* the main thread allocates now: the slot stays this thread's */
    pthread_barrier_wait(&own_freed);
    pthread_barrier_wait(&own_checked);
    zc_stats(pool, &st);
    /* the current pageblock still has room: it goes first */
    own[3] = zc_alloc(pool, 1024);
    if (!own[3] || zc__lookup(pool, own[3]) != zc__lookup(pool, own[2 * own_n]))
        atomic_fetch_add(&pattern_errors, 1);
    /* emptying the second pageblock returns it at once */
    int64_t committed = (int64_t)st.bytes_committed;
    free_each(own + own_n, own_n);
    zc_stats(pool, &st);
    if (st.pageblocks_full != 0 ||
        (int64_t)st.bytes_committed !=
            committed - (int64_t)pool->classes[zc__size_class(1024)].npages * (int64_t)ZC_PAGE_SIZE)
        atomic_fetch_add(&pattern_errors, 1);
    return NULL;
}

static void own_pageblocks_come_back_and_outlive_the_thread(void **state)
{
    (void)state;
    pool = test_pool("copy", 0, 0);
    atomic_store(&free_errors, 0);
    atomic_store(&pattern_errors, 0);
    own_n = pool->classes[zc__size_class(1024)].nslots;
    own = calloc(2 * own_n + 1, sizeof(*own));
    assert_non_null(own);
    pthread_barrier_init(&own_freed, NULL, 2);
    pthread_barrier_init(&own_checked, NULL, 2);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, own_frees, NULL), 0);
    pthread_barrier_wait(&own_freed);
    char *mine = zc_alloc(pool, 1024);
    bool took_theirs = !mine || zc__lookup(pool, mine) == zc__lookup(pool, own[0]);
    pthread_barrier_wait(&own_checked);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&own_freed);
    pthread_barrier_destroy(&own_checked);
    assert_false(took_theirs);
    assert_int_equal(atomic_load(&free_errors), 0);
    assert_int_equal(atomic_load(&pattern_errors), 0);
    /* the thread is gone: its current and its partial pageblock wait on
     * the class's list; this thread's own is active */
    struct zc_stats st;
    zc_stats(pool, &st);
    assert_int_equal(st.pageblocks_active, 1);
    assert_int_equal(st.pageblocks_full, 0);
    assert_int_equal(st.pageblocks_partial, 2);
    assert_int_equal(zc_free(pool, mine), 0);
    for (size_t i = 0; i < 2 * own_n + 1; i++)
        if (i < own_n || i >= 2 * own_n)
            assert_int_equal(zc_free(pool, own[i]), 0);
    zc_stats(pool, &st);
    assert_int_equal(st.pageblocks_full + st.pageblocks_partial, 0);
    assert_true(st.bytes_committed <= (size_t)pool->classes[zc__size_class(1024)].npages *
                                           ZC_PAGE_SIZE);
    free(own);
    zc_pool_destroy(pool);
}

/* Page runs freed and taken at a high rate by two threads, as allocbench
 * does with a small live set: a run just taken from the span allocator
 * must never be merged into a neighbour freed at that moment (it was, and
 * the same pages went to two objects, or zc_alloc returned NULL). */
#define RUN_LIVE 1500
#define RUN_OPS (400000 / TEST_SCALE_DIV)
#define RUN_STRIDE 64 /* grains: the shadow is checked every 512 bytes */

static void *run_churn(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg;
    unsigned rs = 777u + id;
    struct obj *live = calloc(RUN_LIVE, sizeof(*live));
    if (!live) {
        atomic_fetch_add(&free_errors, 1);
        return NULL;
    }
    uint64_t seq = (uint64_t)(id + 1) << 40;
    uint64_t deadline = test_now_ns() + 20ull * 1000000000ull;
    for (size_t i = 0; i < RUN_LIVE * 2 + RUN_OPS; i++) {
        size_t k = i < RUN_LIVE ? i : (size_t)rand_r(&rs) % RUN_LIVE;
        if (i >= RUN_LIVE) {
            shadow_mark(&live[k], 0, RUN_STRIDE);
            if (zc_free(pool, live[k].p) != 0)
                atomic_fetch_add(&free_errors, 1);
        }
        /* half page runs (32 KiB..64 KiB), half pageblock objects */
        struct obj o = { .seed = ++seq };
        o.size = (rand_r(&rs) & 1) ? 32769 + (size_t)rand_r(&rs) % 32768
                                   : 64 + (size_t)rand_r(&rs) % 32704;
        o.p = zc_alloc(pool, o.size);
        if (!o.p) {
            atomic_fetch_add(&free_errors, 1);
            break;
        }
        o.p[0] = 1;
        o.p[o.size - 1] = 1;
        shadow_mark(&o, (uint8_t)(id + 1), RUN_STRIDE);
        live[k] = o;
        if ((i & 1023) == 0 && test_now_ns() > deadline)
            break;
    }
    for (size_t k = 0; k < RUN_LIVE; k++) {
        shadow_mark(&live[k], 0, RUN_STRIDE);
        if (zc_free(pool, live[k].p) != 0)
            atomic_fetch_add(&free_errors, 1);
    }
    free(live);
    return NULL;
}

static void page_runs_churned_by_two_threads_never_overlap(void **state)
{
    (void)state;
    run_two_threads(run_churn);
    assert_int_equal(atomic_load(&free_errors), 0);
    assert_int_equal(atomic_load(&overlap_errors), 0);
    end_two_threads();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(churn_from_two_threads_keeps_every_object_intact),
        cmocka_unit_test(cross_thread_frees_are_reused),
        cmocka_unit_test(own_pageblocks_come_back_and_outlive_the_thread),
        cmocka_unit_test(page_runs_churned_by_two_threads_never_overlap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
