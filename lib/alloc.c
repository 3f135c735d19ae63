/* SPDX-License-Identifier: MIT */
/* zc_alloc, zc_free, zc_seal, zc_owns. */
#include "internal.h"

static void *alloc_new_pageblock(struct zc_pool *pool, struct zc_heap *heap, unsigned c)
{
    const struct zc_class *cls = &pool->classes[c];
    struct zc_pageblock *pb = zc__span_alloc(pool, cls->npages);
    if (!pb)
        return NULL;
    zc__pb_init_small(pb, cls, c);
    atomic_store_explicit(&pb->owner, heap, memory_order_relaxed);
    atomic_store_explicit(&pb->home, heap, memory_order_relaxed);
    atomic_store(&pb->astate, ZC_PB_OWNED);
    ZC_STAT_ADD(pool, pageblocks_active, 1);
    heap->current[c] = pb;
    return zc__pb_take(pb);
}

/* A pageblock we own may still be protected from before: reuse it only if
 * it is worth reopening and no send is in flight, after lifting the
 * protection. */
static bool usable(struct zc_pool *pool, struct zc_pageblock *pb)
{
    return atomic_load(&pb->prot) == ZC_PROT_NONE ||
           (zc__pb_worth_reopening(pb) && zc__pb_try_unprotect(pool, pb) == 0);
}

static void *alloc_small_slow(struct zc_pool *pool, struct zc_heap *heap, unsigned c)
{
    struct zc_pageblock *pb = heap->current[c];
    if (pb) {
        zc__pb_collect(pb);
        if (zc__pb_has_free(pb) && usable(pool, pb)) {
            void *p = zc__pb_take(pb);
            if (p)
                return p;
        }
        heap->current[c] = NULL;
        zc__pb_detach(pool, pb);
    }
    for (unsigned tries = 0; tries < 4; tries++) {
        pb = zc__pb_pop_partial(pool, c, heap);
        if (!pb)
            break;
        if (usable(pool, pb)) {
            void *p = zc__pb_take(pb);
            if (p) {
                heap->current[c] = pb;
                return p;
            }
        }
        zc__pb_detach(pool, pb);
    }
    return alloc_new_pageblock(pool, heap, c);
}

static void *alloc_large(struct zc_pool *pool, size_t size)
{
    size_t npages = (size + ZC_PAGE_SIZE - 1) >> ZC_PAGE_SHIFT;
    struct zc_pageblock *pb = NULL;
    struct zc_heap *heap = npages <= ZC_LCACHE_MAX_PAGES ? zc__heap_get(pool) : NULL;
    if (heap && heap->large_cache[npages]) {
        pb = heap->large_cache[npages];
        heap->large_cache[npages] = pb->next;
        heap->large_cache_pages -= npages;
        pb->next = NULL;
    } else {
        pb = zc__span_alloc(pool, npages);
    }
    if (!pb)
        return NULL;
    pb->slot_size = (uint32_t)(npages * ZC_PAGE_SIZE);
    pb->slot_recip = 0; /* one slot: zc__pb_slot's range check suffices */
    pb->nslots = 1;
    pb->class_idx = ZC_NUM_CLASSES;
    atomic_store_explicit(&pb->sealed, 0, memory_order_relaxed);
    atomic_store_explicit(&pb->sealed_bits[0], 0, memory_order_relaxed);
    atomic_store_explicit(&pb->owner, NULL, memory_order_relaxed);
    atomic_store(&pb->astate, ZC_PB_LARGE_LIVE);
    ZC_STAT_ADD(pool, large_objects, 1);
    return pb->start;
}

ZC_API void *zc_alloc(zc_pool *pool, size_t size)
{
    if (ZC_UNLIKELY(!pool || size == 0)) {
        errno = EINVAL;
        return NULL;
    }
    void *p;
    if (ZC_LIKELY(size <= pool->small_max)) {
        unsigned c = zc__size_class(size);
        struct zc_heap *heap = zc__heap_get(pool);
        if (ZC_UNLIKELY(!heap)) {
            errno = ENOMEM;
            return NULL;
        }
        struct zc_pageblock *pb = heap->current[c];
        if (ZC_LIKELY(pb && atomic_load_explicit(&pb->prot, memory_order_relaxed) == ZC_PROT_NONE)) {
            p = zc__pb_take(pb);
            if (ZC_LIKELY(p))
                return p;
        }
        p = alloc_small_slow(pool, heap, c);
    } else if (size > pool->arena_size || size > ZC_LARGE_MAX) {
        p = NULL;
    } else {
        p = alloc_large(pool, size);
    }
    if (!p)
        errno = ENOMEM;
    return p;
}

/* The live object starting at @ptr, with its slot, or NULL. */
static struct zc_pageblock *object_at(const struct zc_pool *pool, const void *ptr, int *slot,
                                      bool exact)
{
    struct zc_pageblock *pb = zc__lookup(pool, ptr);
    if (!pb)
        return NULL;
    int s = zc__pb_slot(pb, ptr, exact);
    if (s < 0 || !zc__pb_slot_live(pb, (unsigned)s))
        return NULL;
    *slot = s;
    return pb;
}

/* Keep a freed large run in this thread's heap for its next allocation of
 * that size: no lock, no page faults. Only idle, unprotected runs. */
static bool cache_large(struct zc_pool *pool, struct zc_pageblock *pb)
{
    if (pb->npages > ZC_LCACHE_MAX_PAGES || atomic_load(&pb->prot) != ZC_PROT_NONE ||
        atomic_load(&pb->in_flight) != 0)
        return false;
    struct zc_heap *heap = zc__heap_peek(pool);
    if (!heap || heap->large_cache_pages + pb->npages > ZC_LCACHE_BUDGET)
        return false;
    atomic_store(&pb->astate, ZC_PB_LARGE_CACHED);
    pb->next = heap->large_cache[pb->npages];
    heap->large_cache[pb->npages] = pb;
    heap->large_cache_pages += pb->npages;
    ZC_STAT_ADD(pool, large_objects, -1);
    return true;
}

ZC_API int zc_free(zc_pool *pool, void *ptr)
{
    if (!ptr)
        return 0;
    int slot, rc = -EINVAL;
    struct zc_pageblock *pb = pool ? object_at(pool, ptr, &slot, true) : NULL;
    if (pb && pb->class_idx == ZC_NUM_CLASSES) {
        uint32_t st = ZC_PB_LARGE_LIVE;
        if (atomic_compare_exchange_strong(&pb->astate, &st, ZC_PB_LARGE_FREED)) {
            if (atomic_fetch_and(&pb->sealed_bits[0], ~(uint64_t)1) & 1)
                atomic_fetch_sub(&pb->sealed, 1);
            if (!cache_large(pool, pb))
                zc__large_release(pool, pb);
            rc = 0;
        }
    } else if (pb) {
        rc = zc__pb_free_slot(pool, pb, (unsigned)slot, zc__heap_peek(pool));
    }
    if (rc) {
        ZC_LOG("zc_free(%p): not a live object of this pool", ptr);
        errno = -rc;
    }
    return rc;
}

ZC_API int zc_seal(zc_pool *pool, void *ptr)
{
    int slot;
    struct zc_pageblock *pb = pool && ptr ? object_at(pool, ptr, &slot, true) : NULL;
    if (!pb) {
        errno = EINVAL;
        return -EINVAL;
    }
    uint64_t bit = (uint64_t)1 << (slot % 64);
    if (atomic_fetch_or(&pb->sealed_bits[slot / 64], bit) & bit)
        return 0;
    uint32_t sealed = atomic_fetch_add(&pb->sealed, 1) + 1;
    if (sealed == pb->nslots && pool->protect) {
        int rc = zc__pb_protect(pool, pb);
        if (rc) {
            errno = -rc;
            return rc;
        }
    }
    return 0;
}

ZC_API bool zc_owns(const zc_pool *pool, const void *ptr)
{
    int slot;
    return pool && object_at(pool, ptr, &slot, false) != NULL;
}
