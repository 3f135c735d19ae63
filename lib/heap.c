/* SPDX-License-Identifier: MIT */
/* Per-thread heaps: each thread allocates from pageblocks it owns alone. */
#include <stdlib.h>

#include "internal.h"

/* One-entry cache of the last pool this thread used; ids are never reused,
 * so a destroyed pool's entry can never match a new pool. */
static _Thread_local struct {
    uint64_t pool_id;
    struct zc_heap *heap;
} tl_last;

static void heap_release(struct zc_heap *heap)
{
    struct zc_pool *pool = heap->pool;
    for (unsigned c = 0; c < ZC_NUM_CLASSES; c++) {
        if (heap->current[c]) {
            zc__pb_detach(pool, heap->current[c]);
            heap->current[c] = NULL;
        }
    }
    zc__pb_heap_release(pool, heap);
    for (unsigned n = 0; n <= ZC_LCACHE_MAX_PAGES; n++) {
        while (heap->large_cache[n]) {
            struct zc_pageblock *pb = heap->large_cache[n];
            heap->large_cache[n] = pb->next;
            pb->next = NULL;
            zc__span_free(pool, pb);
        }
    }
    heap->large_cache_pages = 0;
}

/* Thread exit: hand the heap's pageblocks back to the pool. */
static void heap_thread_exit(void *arg)
{
    struct zc_heap *heap = arg;
    struct zc_pool *pool = heap->pool;
    heap_release(heap);
    pthread_mutex_lock(&pool->heaps_lock);
    if (heap->prev)
        heap->prev->next = heap->next;
    else
        pool->heaps = heap->next;
    if (heap->next)
        heap->next->prev = heap->prev;
    pthread_mutex_unlock(&pool->heaps_lock);
    if (tl_last.heap == heap)
        tl_last.pool_id = 0;
    free(heap);
}

int zc__heaps_init(struct zc_pool *pool)
{
    int rc = pthread_key_create(&pool->heap_key, heap_thread_exit);
    if (rc)
        return -rc;
    pthread_mutex_init(&pool->heaps_lock, NULL);
    pool->heaps = NULL;
    return 0;
}

void zc__heaps_fini(struct zc_pool *pool)
{
    pthread_key_delete(pool->heap_key);
    struct zc_heap *heap = pool->heaps;
    while (heap) {
        struct zc_heap *next = heap->next;
        free(heap);
        heap = next;
    }
    pool->heaps = NULL;
    if (tl_last.pool_id == pool->id)
        tl_last.pool_id = 0;
    pthread_mutex_destroy(&pool->heaps_lock);
}

static struct zc_heap *heap_slow(struct zc_pool *pool)
{
    struct zc_heap *heap = pthread_getspecific(pool->heap_key);
    if (!heap) {
        heap = zc__calloc_lines(sizeof(*heap));
        if (!heap)
            return NULL;
        heap->pool = pool;
        if (pthread_setspecific(pool->heap_key, heap)) {
            free(heap);
            return NULL;
        }
        pthread_mutex_lock(&pool->heaps_lock);
        heap->next = pool->heaps;
        if (pool->heaps)
            pool->heaps->prev = heap;
        pool->heaps = heap;
        pthread_mutex_unlock(&pool->heaps_lock);
    }
    tl_last.pool_id = pool->id;
    tl_last.heap = heap;
    return heap;
}

struct zc_heap *zc__heap_get(struct zc_pool *pool)
{
    if (ZC_LIKELY(tl_last.pool_id == pool->id))
        return tl_last.heap;
    return heap_slow(pool);
}

/* The calling thread's heap if it already has one; never creates one. */
struct zc_heap *zc__heap_peek(struct zc_pool *pool)
{
    if (ZC_LIKELY(tl_last.pool_id == pool->id))
        return tl_last.heap;
    return pthread_getspecific(pool->heap_key);
}
