/* SPDX-License-Identifier: MIT */
/* Private types of the zcopy core. Nothing here is part of the ABI. */
#ifndef ZCOPY_TYPES_H
#define ZCOPY_TYPES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zcopy/zcopy.h>

#define ZC_PAGE_SHIFT 12
#define ZC_PAGE_SIZE ((size_t)1 << ZC_PAGE_SHIFT)

/* Size classes: 8-byte steps up to 64 B, then 8 classes per doubling, so a
 * class is at most 12.5% above the one below it, up to ZC_CLASS_MAX.
 * Objects up to half the pageblock size, at least ZC_SMALL_MAX (the default
 * 64 KiB pageblocks' half) and at most ZC_MID_MAX, use the classes; with
 * pageblocks above 1 MiB, so do objects up to an eighth of a pageblock, at
 * most ZC_CLASS_MAX (eight or more per pageblock). Larger objects get their
 * own page run (page rounding wastes < 12.5%). Classes above ZC_SMALL_MAX
 * are page multiples, so every object above it is page aligned. Sharing
 * pageblocks batches the write protection of objects: one change, one TLB
 * flush, for all of a pageblock's objects (docs/design.md). */
#define ZC_SMALL_MAX ((size_t)32 * 1024)
#define ZC_MID_MAX ((size_t)128 * 1024)
#define ZC_CLASS_MAX ((size_t)512 * 1024)
#define ZC_NUM_CLASSES 112
/* Largest object: its run's size must fit the 32-bit slot size. */
#define ZC_LARGE_MAX (((size_t)1 << 31) - ZC_PAGE_SIZE)

/* Slots per pageblock are capped so the bitmaps fit inline in the
 * pageblock's out-of-band metadata. */
#define ZC_PB_MAX_SLOTS 512
#define ZC_PB_WORDS (ZC_PB_MAX_SLOTS / 64)

/* Allocation state of a pageblock (who may take its free slots). */
enum zc_alloc_state {
    ZC_PB_OWNED = 1,    /* a heap's current or on its partial list; only it moves local bits */
    ZC_PB_FULL,         /* detached, no free slot seen at detach time */
    ZC_PB_LISTED,       /* detached, on its class's partial list */
    ZC_PB_RETIRING,     /* empty, being returned to the span allocator */
    ZC_PB_LARGE_LIVE,   /* a large object, allocated */
    ZC_PB_LARGE_FREED,  /* a large object, freed, span not yet returned */
    ZC_PB_SPAN_FREE,    /* a free span of the span allocator */
    ZC_PB_SPAN_PURGING, /* a free span whose pages are being given back */
    ZC_PB_LARGE_CACHED, /* a freed large object's run kept by a heap */
    ZC_PB_CARVED,       /* taken from the span allocator, not yet set up by its taker */
};

/* Protection state; only PROTECTED pages may be sent without a copy. */
enum zc_prot_state {
    ZC_PROT_NONE = 0,
    ZC_PROT_PROTECTING, /* write-protect under way: not yet safe to send */
    ZC_PROT_ON,
    ZC_PROT_RELEASING,  /* unprotect under way: new sends copy */
};

struct zc_pool;
struct zc_heap;

/*
 * Out-of-band metadata of a pageblock, of a large object's page run, or of
 * a free span. Nothing of the allocator lives inside the arena, so
 * write-protecting arena pages never traps the allocator.
 */
struct zc_pageblock {
    /* A cache line of its own at least: records of different threads'
     * pageblocks sit side by side, and the owner writes its bitmaps on
     * every allocation and free. */
    _Alignas(64) uint8_t *start;
    uint32_t npages;
    uint32_t slot_size;     /* class size; whole run for a large object */
    uint32_t slot_recip;    /* 2^32 / slot_size rounded up: division by multiply */
    uint16_t nslots;
    uint8_t class_idx;      /* ZC_NUM_CLASSES for large objects and spans */
    _Atomic bool pending_free; /* return the span once in_flight drops to 0 */
    bool committed;         /* free span: may hold committed pages */
    _Atomic uint32_t astate;
    _Atomic(struct zc_heap *) owner;
    _Atomic(struct zc_heap *) home; /* the last heap that owned it (never cleared) */
    _Atomic uint32_t prot;
    _Atomic uint32_t in_flight;
    _Atomic uint32_t sealed;
    uint16_t hint;          /* owner: first word that may have a free bit */
    /* Free slots: the owner's bits (only the owner writes them) and the
     * bits set by frees from other threads or while detached. */
    _Atomic uint64_t local_free[ZC_PB_WORDS];
    _Atomic uint64_t xthread_free[ZC_PB_WORDS];
    _Atomic uint64_t sealed_bits[ZC_PB_WORDS];
    /* Class partial list, span free bins or the deferred list. */
    struct zc_pageblock *next, *prev;
    /* Free span: committed spans in the order they were freed. */
    struct zc_pageblock *age_next, *age_prev;
    uint64_t freed_at;      /* free span: when, in CLOCK_MONOTONIC_COARSE ms */
};

struct zc_class {
    uint32_t size;          /* slot size */
    uint32_t npages;        /* pages per pageblock */
    uint16_t nslots;
    pthread_mutex_t lock;   /* guards the partial list */
    _Atomic(struct zc_pageblock *) partial; /* read unlocked as a hint */
};

/* A thread's heap in one pool: the pageblock it allocates from per class. */
#define ZC_LCACHE_MAX_PAGES 32   /* large runs up to 128 KiB are cached */
#define ZC_LCACHE_BUDGET 1024    /* pages a heap may keep, 4 MiB */

struct zc_heap {
    struct zc_pool *pool;
    struct zc_pageblock *current[ZC_NUM_CLASSES];
    /* Pageblocks it owns with free slots, besides current (circular):
     * its own frees bring them here without a lock. */
    _Atomic(struct zc_pageblock *) partial[ZC_NUM_CLASSES];
    /* Freed large runs by page count, reused without the span lock. */
    struct zc_pageblock *large_cache[ZC_LCACHE_MAX_PAGES + 1];
    size_t large_cache_pages;
    struct zc_heap *next, *prev;
};

/* Span allocator bins: exact page counts up to ZC_SPAN_BINS-1, then one. */
#define ZC_SPAN_BINS 128

struct zc_stats_atomic {
    _Atomic uint64_t sends, bytes_zerocopy, bytes_copied, zerocopy_parts;
    _Atomic uint64_t zerocopy_parts_unregistered;
    _Atomic uint64_t completions, completions_copied, in_flight;
    _Atomic uint64_t protect_faults, protect_waits, protects, unprotects;
    _Atomic uint64_t fallbacks;
    _Atomic int64_t pageblocks_active, pageblocks_full, pageblocks_partial;
    _Atomic int64_t pageblocks_protected, large_objects, large_protected;
    _Atomic int64_t bytes_committed;
};

struct zc_backend_ops;

/* A part of a message, as the send path hands it to a backend. A part with
 * a pageblock goes without a copy; the backend then owns one in-flight
 * reference on that pageblock and drops it with zc__inflight_put(). */
struct zc_part {
    const void *base;
    size_t len;
    struct zc_pageblock *pb;
};

struct zc_protector {
    int uffd;               /* -1 when protection is off */
    int stop_fd;            /* eventfd that stops the fault thread */
    bool wp_unpopulated;    /* kernel protects never-touched pages too */
    bool kernel_faults;     /* faults from kernel copies are handled too */
    bool thread_started;
    pthread_t thread;
};

struct zc_pool {
    uint64_t id;            /* unique per process, for the per-thread cache */
    struct zc_pool_config cfg;
    size_t copy_threshold;
    size_t small_max;       /* largest object size that shares pageblocks */
    /* The arena: one reservation, committed as it is touched. */
    uint8_t *arena;
    size_t arena_size;
    size_t arena_pages;
    bool arena_from_backend;
    bool keep_committed;    /* never MADV_DONTNEED: the backend pinned the pages */
    /* Page map: arena page -> metadata index (0: none). */
    _Atomic uint32_t *pagemap;
    struct zc_pageblock *metas;
    size_t metas_max;
    /* Span allocator and metadata records, under span_lock; on lines of
     * their own, away from the read-mostly fields every lookup reads. */
    _Alignas(64) pthread_mutex_t span_lock;
    size_t hwm_pages;
    uint32_t meta_next;
    uint32_t meta_free;     /* free list of records, linked by start==NULL */
    /* Free spans by length, those with committed pages apart from those
     * given back (bins[1] and bins[0]): reuse committed memory first. */
    struct zc_pageblock *bins[2][ZC_SPAN_BINS];
    _Atomic(struct zc_pageblock *) deferred; /* read unlocked as a hint */
    size_t free_committed_pages;
    struct zc_pageblock *age_head, *age_tail; /* oldest first */
    size_t used_pages;
    _Alignas(64) struct zc_class classes[ZC_NUM_CLASSES];
    /* Heaps of the threads that used this pool. */
    _Alignas(64) pthread_key_t heap_key;
    pthread_mutex_t heaps_lock;
    struct zc_heap *heaps;
    bool protect;           /* seal write-protects */
    struct zc_protector prot;
    const struct zc_backend_ops *ops;
    void *backend;          /* backend's private state */
    /* Copy thresholds in force (send.c): below send_min a part is copied
     * on any socket; between it and the threshold of the socket's kind,
     * sock_types says which kind a descriptor is (made on first need). */
    size_t send_min, send_min_stream, send_min_dgram;
    _Atomic(_Atomic uint8_t *) sock_types;
    _Alignas(64) struct zc_stats_atomic st;
};

#endif
