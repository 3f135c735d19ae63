/* SPDX-License-Identifier: MIT */
/*
 * Pageblocks: runs of pages holding objects of one size class. Free slots
 * are bitmaps in the out-of-band metadata: the owning heap's bits, written
 * by its thread only, and bits set atomically by frees from anywhere else.
 * A pageblock no heap owns waits on its class's partial list.
 */
#include <sched.h>
#include <string.h>

#include "internal.h"

static unsigned pb_words(const struct zc_pageblock *pb)
{
    return (pb->nslots + 63u) / 64u;
}

void zc__pb_init_small(struct zc_pageblock *pb, const struct zc_class *cls, unsigned cls_idx)
{
    pb->slot_size = cls->size;
    pb->slot_recip = (uint32_t)((((uint64_t)1 << 32) + cls->size - 1) / cls->size);
    pb->nslots = cls->nslots;
    pb->class_idx = (uint8_t)cls_idx;
    pb->hint = 0;
    atomic_store_explicit(&pb->sealed, 0, memory_order_relaxed);
    unsigned words = pb_words(pb);
    for (unsigned w = 0; w < ZC_PB_WORDS; w++) {
        uint64_t bits = 0;
        if (w + 1 < words)
            bits = ~(uint64_t)0;
        else if (w + 1 == words)
            bits = (pb->nslots % 64) ? (((uint64_t)1 << (pb->nslots % 64)) - 1) : ~(uint64_t)0;
        atomic_store_explicit(&pb->local_free[w], bits, memory_order_relaxed);
        atomic_store_explicit(&pb->xthread_free[w], 0, memory_order_relaxed);
        atomic_store_explicit(&pb->sealed_bits[w], 0, memory_order_relaxed);
    }
}

/* Owner only: take the lowest free slot. */
void *zc__pb_take(struct zc_pageblock *pb)
{
    unsigned words = pb_words(pb);
    for (unsigned w = pb->hint; w < words; w++) {
        uint64_t v = atomic_load_explicit(&pb->local_free[w], memory_order_relaxed);
        if (v) {
            unsigned b = (unsigned)__builtin_ctzll(v);
            atomic_store_explicit(&pb->local_free[w], v & (v - 1), memory_order_relaxed);
            pb->hint = (uint16_t)w;
            return pb->start + (size_t)(w * 64 + b) * pb->slot_size;
        }
    }
    pb->hint = (uint16_t)words;
    return NULL;
}

/* Owner only: move the slots freed elsewhere into the owner's bits. */
bool zc__pb_collect(struct zc_pageblock *pb)
{
    bool got = false;
    unsigned words = pb_words(pb);
    for (unsigned w = 0; w < words; w++) {
        if (!atomic_load_explicit(&pb->xthread_free[w], memory_order_relaxed))
            continue;
        uint64_t x = atomic_exchange_explicit(&pb->xthread_free[w], 0, memory_order_acquire);
        uint64_t v = atomic_load_explicit(&pb->local_free[w], memory_order_relaxed);
        atomic_store_explicit(&pb->local_free[w], v | x, memory_order_relaxed);
        if (w < pb->hint)
            pb->hint = (uint16_t)w;
        got = true;
    }
    return got;
}

bool zc__pb_has_free(const struct zc_pageblock *pb)
{
    unsigned words = pb_words(pb);
    for (unsigned w = 0; w < words; w++)
        if (atomic_load(&pb->local_free[w]) | atomic_load(&pb->xthread_free[w]))
            return true;
    return false;
}

bool zc__pb_is_empty(const struct zc_pageblock *pb)
{
    unsigned n = 0, words = pb_words(pb);
    for (unsigned w = 0; w < words; w++)
        n += (unsigned)__builtin_popcountll(atomic_load(&pb->local_free[w]) |
                                            atomic_load(&pb->xthread_free[w]));
    return n == pb->nslots;
}

/* The slot @p falls in, or -1 if outside; with @exact, only a slot start. */
int zc__pb_slot(const struct zc_pageblock *pb, const void *p, bool exact)
{
    uintptr_t off = (uintptr_t)p - (uintptr_t)pb->start;
    if (off >= (uintptr_t)pb->npages * ZC_PAGE_SIZE)
        return -1;
    /* off < 4 GiB: the multiply is off by one at most */
    uint64_t slot = ((uint64_t)off * pb->slot_recip) >> 32;
    if (slot * pb->slot_size > off)
        slot--;
    else if ((slot + 1) * pb->slot_size <= off)
        slot++;
    if (slot >= pb->nslots || (exact && off != slot * pb->slot_size))
        return -1;
    return (int)slot;
}

bool zc__pb_slot_live(const struct zc_pageblock *pb, unsigned slot)
{
    uint32_t st = atomic_load_explicit(&pb->astate, memory_order_acquire);
    if (pb->class_idx == ZC_NUM_CLASSES)
        return st == ZC_PB_LARGE_LIVE;
    if (st != ZC_PB_OWNED && st != ZC_PB_FULL && st != ZC_PB_LISTED)
        return false;
    unsigned w = slot / 64;
    uint64_t bit = (uint64_t)1 << (slot % 64);
    return !((atomic_load(&pb->local_free[w]) | atomic_load(&pb->xthread_free[w])) & bit);
}

static void pb_release(struct zc_pool *pool, struct zc_pageblock *pb);

/* ---- partial lists (circular, doubly linked) ---- */

/* The class's list under its lock; a heap's by its thread alone. */
static void partial_link(_Atomic(struct zc_pageblock *) *list, struct zc_pageblock *pb)
{
    struct zc_pageblock *head = atomic_load_explicit(list, memory_order_relaxed);
    if (!head) {
        pb->next = pb->prev = pb;
        atomic_store_explicit(list, pb, memory_order_relaxed);
    } else {
        pb->next = head;
        pb->prev = head->prev;
        head->prev->next = pb;
        head->prev = pb;
    }
}

static void partial_unlink(_Atomic(struct zc_pageblock *) *list, struct zc_pageblock *pb)
{
    if (pb->next == pb) {
        atomic_store_explicit(list, NULL, memory_order_relaxed);
    } else {
        pb->prev->next = pb->next;
        pb->next->prev = pb->prev;
        if (atomic_load_explicit(list, memory_order_relaxed) == pb)
            atomic_store_explicit(list, pb->next, memory_order_relaxed);
    }
    pb->next = pb->prev = NULL;
}

/* A detached pageblock with a free slot goes on its partial list, once.
 * The state change and the linking happen under the class lock, as does
 * zc__pb_retire's unlinking: a retire must never find the pageblock
 * LISTED but not yet on the list (it would unlink nothing, and the late
 * link would hand a freed span to the next allocation). */
static void pb_list_if_free(struct zc_pool *pool, struct zc_pageblock *pb)
{
    if (atomic_load(&pb->astate) != ZC_PB_FULL)
        return;
    struct zc_class *cls = &pool->classes[pb->class_idx];
    pthread_mutex_lock(&cls->lock);
    uint32_t expect = ZC_PB_FULL;
    bool listed = atomic_compare_exchange_strong(&pb->astate, &expect, ZC_PB_LISTED);
    if (listed)
        partial_link(&cls->partial, pb);
    pthread_mutex_unlock(&cls->lock);
    if (listed) {
        ZC_STAT_ADD(pool, pageblocks_full, -1);
        ZC_STAT_ADD(pool, pageblocks_partial, 1);
    }
}

void zc__pb_detach(struct zc_pool *pool, struct zc_pageblock *pb)
{
    atomic_store_explicit(&pb->owner, NULL, memory_order_relaxed);
    ZC_STAT_ADD(pool, pageblocks_active, -1);
    ZC_STAT_ADD(pool, pageblocks_full, 1);
    atomic_store(&pb->astate, ZC_PB_FULL);
    /* A free that ran while we still owned it set a bit we now see. */
    if (zc__pb_has_free(pb)) {
        pb_list_if_free(pool, pb);
        if (zc__pb_is_empty(pb))
            zc__pb_retire(pool, pb);
    }
}

static unsigned pb_free_count(const struct zc_pageblock *pb)
{
    unsigned n = 0, words = pb_words(pb);
    for (unsigned w = 0; w < words; w++)
        n += (unsigned)__builtin_popcountll(atomic_load_explicit(&pb->local_free[w], memory_order_relaxed) |
                                            atomic_load_explicit(&pb->xthread_free[w], memory_order_relaxed));
    return n;
}

/* Whether allocating from @pb again is worth it. A write-protected
 * pageblock is reopened only once half its slots are free: reopening costs
 * two protection changes (lifted now, set again when it is full), each a
 * TLB flush, which a slot or two would not repay (with a full cache every
 * allocation follows a free). Memory stays under twice the live bytes of
 * such pageblocks; a pageblock that empties goes back to the arena. */
static bool worth_reopening(const struct zc_pageblock *pb, unsigned free_slots)
{
    return atomic_load(&pb->prot) != ZC_PROT_ON || 2 * free_slots >= pb->nslots;
}

bool zc__pb_worth_reopening(const struct zc_pageblock *pb)
{
    return worth_reopening(pb, pb_free_count(pb));
}

/* The partial pageblock to take from a list: one with no sends in flight,
 * worth reopening, the fullest of the first few, so that the emptiest ones
 * drain and go back to the arena (this keeps memory near the live bytes
 * under churn). NULL if none of those will do; the head then moves on past
 * them. */
static struct zc_pageblock *pick_partial(_Atomic(struct zc_pageblock *) *list)
{
    struct zc_pageblock *head = atomic_load_explicit(list, memory_order_relaxed);
    struct zc_pageblock *pb = head, *best = NULL;
    unsigned best_free = ~0u;
    for (unsigned tries = 0; pb && tries < 8; tries++) {
        unsigned f = pb_free_count(pb);
        if (atomic_load(&pb->in_flight) == 0 &&
            atomic_load(&pb->prot) != ZC_PROT_PROTECTING && worth_reopening(pb, f)) {
            /* fullest first, but worth the trip: a quarter of the slots */
            if (f < pb->nslots / 4u)
                f += pb->nslots;
            if (f < best_free) {
                best = pb;
                best_free = f;
            }
        }
        pb = pb->next;
        if (pb == head)
            break;
    }
    if (!best && head)
        atomic_store_explicit(list, pb, memory_order_relaxed);
    return best;
}

/* Take a partial pageblock of class @cls_idx for @heap: its own first
 * (no lock, metadata this thread touched last), then the class's. */
struct zc_pageblock *zc__pb_pop_partial(struct zc_pool *pool, unsigned cls_idx,
                                        struct zc_heap *heap)
{
    struct zc_pageblock *best;
    if (atomic_load_explicit(&heap->partial[cls_idx], memory_order_relaxed)) {
        best = pick_partial(&heap->partial[cls_idx]);
        if (best) {
            partial_unlink(&heap->partial[cls_idx], best);
            ZC_STAT_ADD(pool, pageblocks_partial, -1);
            ZC_STAT_ADD(pool, pageblocks_active, 1);
            best->hint = 0;
            zc__pb_collect(best);
            return best;
        }
    }
    struct zc_class *cls = &pool->classes[cls_idx];
    if (!atomic_load_explicit(&cls->partial, memory_order_relaxed))
        return NULL;
    pthread_mutex_lock(&cls->lock);
    best = pick_partial(&cls->partial);
    if (!best) {
        pthread_mutex_unlock(&cls->lock);
        return NULL;
    }
    partial_unlink(&cls->partial, best);
    atomic_store_explicit(&best->owner, heap, memory_order_relaxed);
    atomic_store_explicit(&best->home, heap, memory_order_relaxed);
    atomic_store(&best->astate, ZC_PB_OWNED);
    pthread_mutex_unlock(&cls->lock);
    ZC_STAT_ADD(pool, pageblocks_partial, -1);
    ZC_STAT_ADD(pool, pageblocks_active, 1);
    best->hint = 0;
    zc__pb_collect(best);
    return best;
}

/* The heap's thread freed into a detached pageblock its heap owned last:
 * take it back onto the heap's own partial list, so this thread's next
 * frees into it and its reuse need no lock. False if another thread
 * listed, adopted or retired it first. */
static bool pb_adopt(struct zc_pool *pool, struct zc_pageblock *pb, struct zc_heap *self)
{
    uint32_t expect = ZC_PB_FULL;
    if (!atomic_compare_exchange_strong(&pb->astate, &expect, ZC_PB_OWNED))
        return false;
    atomic_store_explicit(&pb->owner, self, memory_order_relaxed);
    partial_link(&self->partial[pb->class_idx], pb);
    ZC_STAT_ADD(pool, pageblocks_full, -1);
    ZC_STAT_ADD(pool, pageblocks_partial, 1);
    return true;
}

/* Owner only: an empty pageblock on its heap's partial list goes back. */
static void pb_retire_owned(struct zc_pool *pool, struct zc_pageblock *pb, struct zc_heap *self)
{
    partial_unlink(&self->partial[pb->class_idx], pb);
    atomic_store_explicit(&pb->owner, NULL, memory_order_relaxed);
    atomic_store(&pb->astate, ZC_PB_RETIRING);
    ZC_STAT_ADD(pool, pageblocks_partial, -1);
    pb_release(pool, pb);
}

/* Owner only (thread exit): its partial pageblocks go to the classes. */
void zc__pb_heap_release(struct zc_pool *pool, struct zc_heap *heap)
{
    for (unsigned c = 0; c < ZC_NUM_CLASSES; c++) {
        struct zc_pageblock *pb;
        while ((pb = atomic_load_explicit(&heap->partial[c], memory_order_relaxed)) != NULL) {
            partial_unlink(&heap->partial[c], pb);
            ZC_STAT_ADD(pool, pageblocks_partial, -1);
            ZC_STAT_ADD(pool, pageblocks_active, 1);
            zc__pb_detach(pool, pb);
        }
    }
}

/* A word of @pb's slots holds nothing live: the cheap test before a full
 * emptiness check. */
static bool word_free(const struct zc_pageblock *pb, unsigned w)
{
    uint64_t mask = (w + 1) * 64 <= pb->nslots ? ~(uint64_t)0
                                               : ((uint64_t)1 << (pb->nslots % 64)) - 1;
    return ((atomic_load(&pb->local_free[w]) | atomic_load(&pb->xthread_free[w])) & mask) == mask;
}

int zc__pb_free_slot(struct zc_pool *pool, struct zc_pageblock *pb, unsigned slot,
                     struct zc_heap *self)
{
    unsigned w = slot / 64;
    uint64_t bit = (uint64_t)1 << (slot % 64);
    if ((atomic_load(&pb->local_free[w]) | atomic_load(&pb->xthread_free[w])) & bit)
        return -EINVAL; /* double free */
    if (atomic_fetch_and(&pb->sealed_bits[w], ~bit) & bit)
        atomic_fetch_sub(&pb->sealed, 1);
    if (self && atomic_load_explicit(&pb->owner, memory_order_relaxed) == self) {
        uint64_t v = atomic_load_explicit(&pb->local_free[w], memory_order_relaxed);
        atomic_store_explicit(&pb->local_free[w], v | bit, memory_order_relaxed);
        if (w < pb->hint)
            pb->hint = (uint16_t)w;
        /* an emptied pageblock other than the one it allocates from goes */
        if (self->current[pb->class_idx] != pb && word_free(pb, w) && zc__pb_is_empty(pb))
            pb_retire_owned(pool, pb, self);
        return 0;
    }
    if (atomic_fetch_or(&pb->xthread_free[w], bit) & bit)
        return -EINVAL; /* double free, racing with itself */
    uint32_t st = atomic_load(&pb->astate);
    if (st == ZC_PB_FULL && self && atomic_load_explicit(&pb->home, memory_order_relaxed) == self &&
        pb_adopt(pool, pb, self)) {
        zc__pb_collect(pb);
        if (word_free(pb, w) && zc__pb_is_empty(pb))
            pb_retire_owned(pool, pb, self);
        return 0;
    }
    if (st == ZC_PB_FULL)
        pb_list_if_free(pool, pb);
    if ((st == ZC_PB_FULL || st == ZC_PB_LISTED) && word_free(pb, w) && zc__pb_is_empty(pb))
        zc__pb_retire(pool, pb);
    return 0;
}

/* Called with span_lock held, in_flight zero: unprotect, give the span back. */
void zc__pb_finish_free(struct zc_pool *pool, struct zc_pageblock *pb)
{
    uint32_t prot = atomic_load(&pb->prot);
    if (prot != ZC_PROT_NONE) {
        zc__range_protect(pool, pb->start, (size_t)pb->npages * ZC_PAGE_SIZE, false);
        atomic_store(&pb->prot, ZC_PROT_NONE);
        ZC_STAT_ADD(pool, unprotects, 1);
        if (pb->class_idx == ZC_NUM_CLASSES)
            ZC_STAT_ADD(pool, large_protected, -1);
        else
            ZC_STAT_ADD(pool, pageblocks_protected, -1);
    }
    zc__span_free_locked(pool, pb);
}

/* @pb is ours alone (retiring or a freed large object): stop new zero-copy
 * sends of it, then return its span now or once its sends complete. */
static void pb_release(struct zc_pool *pool, struct zc_pageblock *pb)
{
    for (;;) {
        uint32_t st = atomic_load(&pb->prot);
        if (st == ZC_PROT_NONE)
            break;
        if (st == ZC_PROT_ON) {
            if (atomic_compare_exchange_strong(&pb->prot, &st, ZC_PROT_RELEASING))
                break;
            continue;
        }
        /* another thread is protecting or unprotecting it right now */
        sched_yield();
    }
    zc__span_release(pool, pb);
}

void zc__pb_retire(struct zc_pool *pool, struct zc_pageblock *pb)
{
    uint32_t st = ZC_PB_FULL;
    if (atomic_compare_exchange_strong(&pb->astate, &st, ZC_PB_RETIRING)) {
        ZC_STAT_ADD(pool, pageblocks_full, -1);
    } else if (st == ZC_PB_LISTED) {
        struct zc_class *cls = &pool->classes[pb->class_idx];
        pthread_mutex_lock(&cls->lock);
        st = ZC_PB_LISTED;
        bool mine = atomic_compare_exchange_strong(&pb->astate, &st, ZC_PB_RETIRING);
        if (mine)
            partial_unlink(&cls->partial, pb);
        pthread_mutex_unlock(&cls->lock);
        if (!mine)
            return;
        ZC_STAT_ADD(pool, pageblocks_partial, -1);
    } else {
        return;
    }
    /* A slot could have been taken before we claimed it: only if owned,
     * which the claim excludes; so it is still empty. */
    pb_release(pool, pb);
}

void zc__large_release(struct zc_pool *pool, struct zc_pageblock *pb)
{
    ZC_STAT_ADD(pool, large_objects, -1);
    pb_release(pool, pb);
}
