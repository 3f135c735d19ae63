/* SPDX-License-Identifier: MIT */
/*
 * Page runs ("spans") of the arena: pageblocks and large objects are carved
 * from a bump pointer or from free spans binned by length, committed ones
 * first; freed spans coalesce with free neighbours of their kind (committed
 * or given back) through the page map. Also the metadata records, which
 * live outside the arena.
 */
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "internal.h"

/* A free span not reused within this many milliseconds goes back to the
 * kernel (checked when spans are freed): spans freed and reused at once
 * under churn skip the page faults, and with two threads the TLB
 * shootdown each purge sends the other CPU (allocbench, 2 threads: about
 * 1.5x the throughput of purging after 2048 span frees, RSS within 1%);
 * holes that stay unused stop costing memory. */
#define ZC_SPAN_AGE_MS 100
/* And free committed memory never exceeds 1/ZC_FREE_DIV of the used. */
#define ZC_FREE_DIV 16
#define ZC_FREE_COMMITTED_MIN ((size_t)1 << 20)

static uint32_t meta_index(const struct zc_pool *pool, const struct zc_pageblock *pb)
{
    return (uint32_t)(pb - pool->metas);
}

static struct zc_pageblock *meta_new(struct zc_pool *pool)
{
    uint32_t idx = pool->meta_free;
    if (idx) {
        pool->meta_free = (uint32_t)(uintptr_t)pool->metas[idx].next;
    } else {
        if (pool->meta_next >= pool->metas_max)
            return NULL;
        idx = pool->meta_next++;
    }
    struct zc_pageblock *pb = &pool->metas[idx];
    memset(pb, 0, sizeof(*pb));
    return pb;
}

static void meta_delete(struct zc_pool *pool, struct zc_pageblock *pb)
{
    pb->start = NULL;
    pb->next = (struct zc_pageblock *)(uintptr_t)pool->meta_free;
    pool->meta_free = meta_index(pool, pb);
}

static size_t page_of(const struct zc_pool *pool, const void *p)
{
    return (size_t)((const uint8_t *)p - pool->arena) >> ZC_PAGE_SHIFT;
}

static void map_set(struct zc_pool *pool, size_t first, size_t n, uint32_t idx)
{
    for (size_t i = 0; i < n; i++)
        atomic_store_explicit(&pool->pagemap[first + i], idx, memory_order_release);
}

/* A free span is found from its first and its last page. */
static void map_free_ends(struct zc_pool *pool, struct zc_pageblock *pb, uint32_t idx)
{
    size_t first = page_of(pool, pb->start);
    atomic_store_explicit(&pool->pagemap[first], idx, memory_order_release);
    atomic_store_explicit(&pool->pagemap[first + pb->npages - 1], idx,
                          memory_order_release);
}

static unsigned bin_of(size_t npages)
{
    return npages < ZC_SPAN_BINS ? (unsigned)npages : 0;
}

/* The bin a free span is in follows its committed flag: change the flag
 * only while the span is out of the bins. */
static struct zc_pageblock **bin_head(struct zc_pool *pool, const struct zc_pageblock *pb)
{
    return &pool->bins[pb->committed][bin_of(pb->npages)];
}

static void bin_insert(struct zc_pool *pool, struct zc_pageblock *pb)
{
    struct zc_pageblock **head = bin_head(pool, pb);
    pb->prev = NULL;
    pb->next = *head;
    if (*head)
        (*head)->prev = pb;
    *head = pb;
}

static void bin_remove(struct zc_pool *pool, struct zc_pageblock *pb)
{
    if (pb->prev)
        pb->prev->next = pb->next;
    else
        *bin_head(pool, pb) = pb->next;
    if (pb->next)
        pb->next->prev = pb->prev;
    pb->next = pb->prev = NULL;
}

static void age_remove(struct zc_pool *pool, struct zc_pageblock *pb)
{
    if (!pb->committed)
        return;
    if (pb->age_prev)
        pb->age_prev->age_next = pb->age_next;
    else
        pool->age_head = pb->age_next;
    if (pb->age_next)
        pb->age_next->age_prev = pb->age_prev;
    else
        pool->age_tail = pb->age_prev;
    pb->age_next = pb->age_prev = NULL;
    pool->free_committed_pages -= pb->npages;
}

static void age_append(struct zc_pool *pool, struct zc_pageblock *pb)
{
    pb->age_next = NULL;
    pb->age_prev = pool->age_tail;
    if (pool->age_tail)
        pool->age_tail->age_next = pb;
    else
        pool->age_head = pb;
    pool->age_tail = pb;
    pool->free_committed_pages += pb->npages;
}

/* Give the oldest free spans' pages back to the kernel. Called with the
 * span lock held; drops it around madvise so other threads are not held up
 * by the system call. */
static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static struct zc_pageblock *merge_neighbours(struct zc_pool *pool, struct zc_pageblock *pb);

/* With @all, every committed free span (bounded by the records there
 * are, as other threads may free more meanwhile): free spans merge only
 * with their own kind, so this is what lets all free memory coalesce. */
static void purge_old(struct zc_pool *pool, uint64_t now, bool all)
{
    size_t limit = pool->used_pages / ZC_FREE_DIV;
    if (limit < (ZC_FREE_COMMITTED_MIN >> ZC_PAGE_SHIFT))
        limit = ZC_FREE_COMMITTED_MIN >> ZC_PAGE_SHIFT;
    unsigned max = all ? pool->meta_next : 16;
    struct zc_pageblock *pb;
    for (unsigned n = 0; n < max && (pb = pool->age_head) != NULL &&
                         (all || now - pb->freed_at > ZC_SPAN_AGE_MS ||
                          pool->free_committed_pages > limit);
         n++) {
        age_remove(pool, pb);
        bin_remove(pool, pb);
        pb->committed = false;
        atomic_store_explicit(&pb->astate, ZC_PB_SPAN_PURGING, memory_order_relaxed);
        pthread_mutex_unlock(&pool->span_lock);
        if (!pool->arena_from_backend && !pool->keep_committed)
            madvise(pb->start, (size_t)pb->npages * ZC_PAGE_SIZE, MADV_DONTNEED);
        pthread_mutex_lock(&pool->span_lock);
        atomic_store_explicit(&pb->astate, ZC_PB_SPAN_FREE, memory_order_relaxed);
        pb = merge_neighbours(pool, pb);
        map_free_ends(pool, pb, meta_index(pool, pb));
        bin_insert(pool, pb);
    }
}

int zc__span_init(struct zc_pool *pool)
{
    pool->arena_pages = pool->arena_size >> ZC_PAGE_SHIFT;
    size_t map_bytes = pool->arena_pages * sizeof(*pool->pagemap);
    /* Every span covers a page at least, plus record 0 that means "none". */
    pool->metas_max = pool->arena_pages + 1;
    size_t meta_bytes = pool->metas_max * sizeof(struct zc_pageblock);
    void *map = mmap(NULL, map_bytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED)
        return -ENOMEM;
    void *metas = mmap(NULL, meta_bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (metas == MAP_FAILED) {
        munmap(map, map_bytes);
        return -ENOMEM;
    }
    pool->pagemap = map;
    pool->metas = metas;
    pool->meta_next = 1;
    pool->meta_free = 0;
    pool->hwm_pages = 0;
    memset(pool->bins, 0, sizeof(pool->bins));
    return 0;
}

void zc__span_fini(struct zc_pool *pool)
{
    if (pool->pagemap)
        munmap((void *)pool->pagemap, pool->arena_pages * sizeof(*pool->pagemap));
    if (pool->metas)
        munmap(pool->metas, pool->metas_max * sizeof(struct zc_pageblock));
    pool->pagemap = NULL;
    pool->metas = NULL;
}

/* The shortest free span that fits, committed ones first: reusing pages
 * given back costs a page fault each, while committed free pages left
 * unused age and are given back (under churn the two made a cycle that
 * purged and faulted in again about half of all the memory allocated). */
static struct zc_pageblock *find_free(struct zc_pool *pool, size_t npages)
{
    for (int committed = 1; committed >= 0; committed--) {
        struct zc_pageblock **bins = pool->bins[committed];
        for (size_t b = npages; b < ZC_SPAN_BINS; b++)
            if (bins[b])
                return bins[b];
        /* first fit among the long spans */
        for (struct zc_pageblock *pb = bins[0]; pb; pb = pb->next)
            if (pb->npages >= npages)
                return pb;
    }
    return NULL;
}

static struct zc_pageblock *carve(struct zc_pool *pool, size_t npages)
{
    struct zc_pageblock *pb = find_free(pool, npages);
    if (pb) {
        bin_remove(pool, pb);
        age_remove(pool, pb);
        if (pb->npages > npages) {
            struct zc_pageblock *rest = meta_new(pool);
            if (!rest) {
                /* keep the span whole rather than fail */
                bin_insert(pool, pb);
                if (pb->committed)
                    age_append(pool, pb);
                return NULL;
            }
            rest->start = pb->start + npages * ZC_PAGE_SIZE;
            rest->npages = (uint32_t)(pb->npages - npages);
            rest->committed = pb->committed;
            rest->freed_at = pb->freed_at;
            atomic_store_explicit(&rest->astate, ZC_PB_SPAN_FREE, memory_order_relaxed);
            if (rest->committed)
                age_append(pool, rest);
            map_free_ends(pool, rest, meta_index(pool, rest));
            bin_insert(pool, rest);
            pb->npages = (uint32_t)npages;
        }
        return pb;
    }
    if (pool->hwm_pages + npages > pool->arena_pages)
        return NULL;
    pb = meta_new(pool);
    if (!pb)
        return NULL;
    pb->start = pool->arena + pool->hwm_pages * ZC_PAGE_SIZE;
    pb->npages = (uint32_t)npages;
    if (pool->ops->arena_grow)
        pool->ops->arena_grow(pool, pool->hwm_pages * ZC_PAGE_SIZE,
                              (pool->hwm_pages + npages) * ZC_PAGE_SIZE);
    pool->hwm_pages += npages;
    return pb;
}

struct zc_pageblock *zc__span_alloc(struct zc_pool *pool, size_t npages)
{
    pthread_mutex_lock(&pool->span_lock);
    struct zc_pageblock *pb = carve(pool, npages);
    if (!pb && atomic_load_explicit(&pool->deferred, memory_order_relaxed)) {
        /* spans waiting for their sends may be free by now */
        pthread_mutex_unlock(&pool->span_lock);
        if (pool->ops->poll)
            pool->ops->poll(pool, 0);
        zc__span_reap_deferred(pool);
        pthread_mutex_lock(&pool->span_lock);
        pb = carve(pool, npages);
    }
    if (!pb && pool->age_head) {
        /* committed free spans next to given-back ones may fit together */
        purge_old(pool, now_ms(), true);
        pb = carve(pool, npages);
    }
    if (pb) {
        /* No longer free, before the lock goes: a neighbour freed now
         * must not coalesce with it while its taker sets it up. */
        atomic_store_explicit(&pb->astate, ZC_PB_CARVED, memory_order_relaxed);
        pool->used_pages += npages;
        pb->committed = false;
        atomic_store_explicit(&pb->pending_free, false, memory_order_relaxed);
        pb->next = pb->prev = NULL;
        atomic_store_explicit(&pb->prot, ZC_PROT_NONE, memory_order_relaxed);
        atomic_store_explicit(&pb->in_flight, 0, memory_order_relaxed);
        map_set(pool, page_of(pool, pb->start), npages, meta_index(pool, pb));
    }
    pthread_mutex_unlock(&pool->span_lock);
    if (pb)
        ZC_STAT_ADD(pool, bytes_committed, (int64_t)(npages * ZC_PAGE_SIZE));
    return pb;
}

/* A free span meets its free neighbours of the same kind (committed or
 * given back, so the committed count stays exact and a purge never gives
 * back pages twice). @pb is out of the bins and the age list; returns the
 * merged span, whose ends the caller maps. */
static struct zc_pageblock *merge_neighbours(struct zc_pool *pool, struct zc_pageblock *pb)
{
    size_t first = page_of(pool, pb->start);
    if (first > 0) {
        uint32_t li = atomic_load_explicit(&pool->pagemap[first - 1], memory_order_relaxed);
        struct zc_pageblock *left = li ? &pool->metas[li] : NULL;
        if (left && atomic_load_explicit(&left->astate, memory_order_relaxed) == ZC_PB_SPAN_FREE &&
            left->committed == pb->committed) {
            bin_remove(pool, left);
            age_remove(pool, left);
            map_set(pool, first - 1, 2, 0);
            left->npages += pb->npages;
            meta_delete(pool, pb);
            pb = left;
            first = page_of(pool, pb->start);
        }
    }
    size_t after = first + pb->npages;
    if (after < pool->hwm_pages) {
        uint32_t ri = atomic_load_explicit(&pool->pagemap[after], memory_order_relaxed);
        struct zc_pageblock *right = ri ? &pool->metas[ri] : NULL;
        if (right && atomic_load_explicit(&right->astate, memory_order_relaxed) == ZC_PB_SPAN_FREE &&
            right->committed == pb->committed) {
            bin_remove(pool, right);
            age_remove(pool, right);
            map_set(pool, after - 1, 2, 0);
            pb->npages += right->npages;
            meta_delete(pool, right);
        }
    }
    return pb;
}

void zc__span_free_locked(struct zc_pool *pool, struct zc_pageblock *pb)
{
    size_t first = page_of(pool, pb->start);
    size_t n = pb->npages;
    pool->used_pages -= n;
    ZC_STAT_ADD(pool, bytes_committed, -(int64_t)(n * ZC_PAGE_SIZE));
    map_set(pool, first, n, 0);
    atomic_store_explicit(&pb->astate, ZC_PB_SPAN_FREE, memory_order_relaxed);
    pb->committed = true;
    pb = merge_neighbours(pool, pb);
    uint64_t now = now_ms();
    pb->freed_at = now;
    map_free_ends(pool, pb, meta_index(pool, pb));
    bin_insert(pool, pb);
    age_append(pool, pb);
    purge_old(pool, now, false);
}

void zc__span_free(struct zc_pool *pool, struct zc_pageblock *pb)
{
    pthread_mutex_lock(&pool->span_lock);
    zc__span_free_locked(pool, pb);
    pthread_mutex_unlock(&pool->span_lock);
}

static void deferred_unlink(struct zc_pool *pool, struct zc_pageblock *pb)
{
    if (pb->prev)
        pb->prev->next = pb->next;
    else
        atomic_store_explicit(&pool->deferred, pb->next, memory_order_relaxed);
    if (pb->next)
        pb->next->prev = pb->prev;
    pb->next = pb->prev = NULL;
    atomic_store(&pb->pending_free, false);
}

/* Return the spans whose last sends have completed since they were freed. */
size_t zc__span_reap_deferred(struct zc_pool *pool)
{
    size_t n = 0;
    pthread_mutex_lock(&pool->span_lock);
    /* take the idle ones off the list first: freeing may drop the lock */
    struct zc_pageblock *done = NULL;
    struct zc_pageblock *pb = atomic_load_explicit(&pool->deferred, memory_order_relaxed);
    while (pb) {
        struct zc_pageblock *next = pb->next;
        if (atomic_load(&pb->in_flight) == 0) {
            deferred_unlink(pool, pb);
            pb->next = done;
            done = pb;
        }
        pb = next;
    }
    while (done) {
        pb = done;
        done = pb->next;
        pb->next = NULL;
        zc__pb_finish_free(pool, pb);
        n++;
    }
    pthread_mutex_unlock(&pool->span_lock);
    return n;
}

/* Return @pb's span now if no send is in flight, else once the last one
 * completes (zc__inflight_put reaps it then). */
void zc__span_release(struct zc_pool *pool, struct zc_pageblock *pb)
{
    pthread_mutex_lock(&pool->span_lock);
    if (atomic_load(&pb->in_flight) != 0) {
        struct zc_pageblock *head = atomic_load_explicit(&pool->deferred, memory_order_relaxed);
        pb->prev = NULL;
        pb->next = head;
        if (head)
            head->prev = pb;
        atomic_store_explicit(&pool->deferred, pb, memory_order_relaxed);
        atomic_store(&pb->pending_free, true);
        /* the last completion may have come before it saw pending_free */
        if (atomic_load(&pb->in_flight) != 0) {
            pthread_mutex_unlock(&pool->span_lock);
            return;
        }
        deferred_unlink(pool, pb);
    }
    zc__pb_finish_free(pool, pb);
    pthread_mutex_unlock(&pool->span_lock);
}
