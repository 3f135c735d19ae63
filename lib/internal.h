/* SPDX-License-Identifier: MIT */
/* Private functions of the zcopy core, hidden from the shared library. */
#ifndef ZCOPY_INTERNAL_H
#define ZCOPY_INTERNAL_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>

#include "types.h"

#define ZC_HIDDEN __attribute__((visibility("hidden")))
#define ZC_LIKELY(x) __builtin_expect(!!(x), 1)
#define ZC_UNLIKELY(x) __builtin_expect(!!(x), 0)

#define ZC_STAT_ADD(pool, field, v)                                            \
    atomic_fetch_add_explicit(&(pool)->st.field, (v), memory_order_relaxed)

/* Zeroed memory starting on a cache line, for structures whose members
 * are laid out on lines of their own (free() releases it). */
static inline void *zc__calloc_lines(size_t size)
{
    size_t n = (size + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, n);
    if (p)
        memset(p, 0, n);
    return p;
}

/* ---- backends: the one seam between lib/ and a way of sending ---- */

enum zc_backend_caps {
    ZC_BE_ZEROCOPY = 1u << 0,    /* may send parts without a copy */
    ZC_BE_NEEDS_PROTECT = 1u << 1, /* sealed data must be write-protected */
    ZC_BE_OWN_PROTECT = 1u << 2, /* protects through ops->protect */
    ZC_BE_PLAIN_COPY = 1u << 3,  /* a message with nothing to pin needs nothing of
                                  * the backend: lib/ copies it itself */
};

struct zc_backend_ops {
    const char *name;
    unsigned caps;
    /* 0 if the backend can run here, else a negative errno and a reason. */
    int (*probe)(char *why, size_t why_len);
    /* Start on a pool whose arena is already set up. */
    int (*init)(struct zc_pool *pool, char *why, size_t why_len);
    void (*fini)(struct zc_pool *pool);
    /* Optional: provide the arena (kmod maps the module's pages). */
    void *(*arena_map)(struct zc_pool *pool, size_t size);
    void (*arena_unmap)(struct zc_pool *pool, void *arena, size_t size);
    /* Optional with ZC_BE_OWN_PROTECT: write-protect or release a range. */
    int (*protect)(struct zc_pool *pool, void *addr, size_t len, bool on);
    /* Optional: the arena's used part grows from @from to @to bytes (span
     * lock held; nothing in the new range is allocated or protected yet). */
    void (*arena_grow)(struct zc_pool *pool, size_t from, size_t to);
    /* Smallest part worth sending without a copy, measured per kind of
     * socket (bytes; 0 means 1): stream (TCP) and datagram (UDP) sockets.
     * ZC_COPY_THRESHOLD or zc_pool_config.copy_threshold override both. */
    size_t copy_threshold_stream;
    size_t copy_threshold_dgram;
    /* sendmsg(2) semantics: bytes sent or -1 and errno. Owns the in-flight
     * references of the parts that have a pageblock, sent or not. */
    ssize_t (*sendmsg)(struct zc_pool *pool, int fd, const struct msghdr *msg,
                       struct zc_part *parts, size_t nparts, int flags);
    /* Reap completions of any thread's sends; callable from any thread. */
    int (*poll)(struct zc_pool *pool, int timeout_ms);
};

extern const struct zc_backend_ops zc_backend_copy ZC_HIDDEN;
#ifdef ZCOPY_HAVE_IOURING
extern const struct zc_backend_ops zc_backend_iouring ZC_HIDDEN;
#endif
#ifdef ZCOPY_HAVE_MSGZC
extern const struct zc_backend_ops zc_backend_msgzc ZC_HIDDEN;
#endif
#ifdef ZCOPY_HAVE_KMOD
extern const struct zc_backend_ops zc_backend_kmod ZC_HIDDEN;
#endif

/* backend.c */
ZC_HIDDEN const struct zc_backend_ops *zc__backend_find(const char *name);
ZC_HIDDEN int zc__backend_select(struct zc_pool *pool, const char *spec);

/* send.c */
#define ZC_SOCK_TYPES 65536 /* descriptors whose kind of socket is remembered */
/* The copy thresholds in force, from the override or the backend's. */
ZC_HIDDEN void zc__send_init(struct zc_pool *pool);

/* ---- options.c ---- */
ZC_HIDDEN const char *zc__getenv(const char *name);
ZC_HIDDEN int zc__parse_size(const char *s, size_t *out);
ZC_HIDDEN int zc__option_size(const char *env, size_t *out);

/* ---- log.c ---- */
ZC_HIDDEN bool zc__log_enabled(void);
ZC_HIDDEN void zc__log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define ZC_LOG(...)                                                            \
    do {                                                                       \
        if (ZC_UNLIKELY(zc__log_enabled()))                                    \
            zc__log(__VA_ARGS__);                                              \
    } while (0)

/* ---- sizeclass.c ---- */
ZC_HIDDEN unsigned zc__size_class(size_t size);
ZC_HIDDEN size_t zc__class_size(unsigned cls);
ZC_HIDDEN void zc__classes_init(struct zc_pool *pool);

/* ---- span.c: page runs of the arena, metadata records, page map ---- */
ZC_HIDDEN int zc__span_init(struct zc_pool *pool);
ZC_HIDDEN void zc__span_fini(struct zc_pool *pool);
ZC_HIDDEN struct zc_pageblock *zc__span_alloc(struct zc_pool *pool, size_t npages);
ZC_HIDDEN void zc__span_free(struct zc_pool *pool, struct zc_pageblock *pb);
ZC_HIDDEN void zc__span_free_locked(struct zc_pool *pool, struct zc_pageblock *pb);
ZC_HIDDEN size_t zc__span_reap_deferred(struct zc_pool *pool);
ZC_HIDDEN void zc__span_release(struct zc_pool *pool, struct zc_pageblock *pb);

static inline struct zc_pageblock *zc__lookup(const struct zc_pool *pool, const void *p)
{
    uintptr_t off = (uintptr_t)p - (uintptr_t)pool->arena;
    if (off >= pool->arena_size)
        return NULL;
    uint32_t idx = atomic_load_explicit(&pool->pagemap[off >> ZC_PAGE_SHIFT],
                                        memory_order_acquire);
    return idx ? &pool->metas[idx] : NULL;
}

/* ---- pageblock.c: slots of one class ---- */
ZC_HIDDEN void zc__pb_init_small(struct zc_pageblock *pb, const struct zc_class *cls,
                                 unsigned cls_idx);
ZC_HIDDEN void *zc__pb_take(struct zc_pageblock *pb);
ZC_HIDDEN bool zc__pb_collect(struct zc_pageblock *pb);
ZC_HIDDEN bool zc__pb_has_free(const struct zc_pageblock *pb);
ZC_HIDDEN bool zc__pb_is_empty(const struct zc_pageblock *pb);
ZC_HIDDEN bool zc__pb_worth_reopening(const struct zc_pageblock *pb);
ZC_HIDDEN int zc__pb_slot(const struct zc_pageblock *pb, const void *p, bool exact);
ZC_HIDDEN bool zc__pb_slot_live(const struct zc_pageblock *pb, unsigned slot);
ZC_HIDDEN int zc__pb_free_slot(struct zc_pool *pool, struct zc_pageblock *pb,
                               unsigned slot, struct zc_heap *self);
ZC_HIDDEN void zc__pb_detach(struct zc_pool *pool, struct zc_pageblock *pb);
ZC_HIDDEN struct zc_pageblock *zc__pb_pop_partial(struct zc_pool *pool, unsigned cls,
                                                  struct zc_heap *heap);
ZC_HIDDEN void zc__pb_retire(struct zc_pool *pool, struct zc_pageblock *pb);
ZC_HIDDEN void zc__pb_heap_release(struct zc_pool *pool, struct zc_heap *heap);
ZC_HIDDEN void zc__pb_finish_free(struct zc_pool *pool, struct zc_pageblock *pb);
ZC_HIDDEN void zc__large_release(struct zc_pool *pool, struct zc_pageblock *pb);

/* ---- heap.c ---- */
ZC_HIDDEN struct zc_heap *zc__heap_get(struct zc_pool *pool);
ZC_HIDDEN struct zc_heap *zc__heap_peek(struct zc_pool *pool);
ZC_HIDDEN int zc__heaps_init(struct zc_pool *pool);
ZC_HIDDEN void zc__heaps_fini(struct zc_pool *pool);

/* ---- protect.c ---- */
ZC_HIDDEN int zc__protect_init(struct zc_pool *pool, char *why, size_t why_len);
ZC_HIDDEN void zc__protect_fini(struct zc_pool *pool);
ZC_HIDDEN int zc__protect_probe(char *why, size_t why_len);
ZC_HIDDEN int zc__pb_protect(struct zc_pool *pool, struct zc_pageblock *pb);
ZC_HIDDEN int zc__pb_try_unprotect(struct zc_pool *pool, struct zc_pageblock *pb);
ZC_HIDDEN void zc__pb_wait_idle(struct zc_pool *pool, struct zc_pageblock *pb);
ZC_HIDDEN int zc__range_protect(struct zc_pool *pool, void *addr, size_t len, bool on);

/* ---- send completions, for backends ---- */
ZC_HIDDEN void zc__inflight_put(struct zc_pool *pool, struct zc_pageblock *pb,
                                uint32_t n);
ZC_HIDDEN void zc__parts_release(struct zc_pool *pool, struct zc_part *parts,
                                 size_t nparts);
/* For backends: send by copy (dropping the parts' references), and count
 * what a send that went handed over with and without a copy (@unregistered:
 * the kernel looked its zero-copy parts' pages up for this send). */
ZC_HIDDEN ssize_t zc__send_copied(struct zc_pool *pool, int fd, const struct msghdr *msg,
                                  struct zc_part *parts, size_t nparts, int flags);
ZC_HIDDEN void zc__account_sent(struct zc_pool *pool, const struct zc_part *parts,
                                size_t nparts, size_t sent, bool unregistered);
/* The copy switch of the zero-copy backends (copyswitch.c): sockets the
 * kernel copies for anyway are sent to by copy for a streak, by descriptor
 * (descriptors from ZC_SWITCH_FDS on are never switched). */
#define ZC_SWITCH_FDS 65536
struct zc_copy_switch {
    _Atomic uint16_t left[ZC_SWITCH_FDS];   /* sends of the streak left + 1 */
    _Atomic uint8_t backoff[ZC_SWITCH_FDS]; /* streaks in a row of that socket */
    _Atomic uint64_t cookie[ZC_SWITCH_FDS]; /* SO_COOKIE of the socket found copying */
};
enum zc_switch {
    ZC_SWITCH_NONE,       /* no streak: zero-copy */
    ZC_SWITCH_COPY,       /* in a streak: copy this send */
    ZC_SWITCH_RETRY,      /* the streak is over: this send tries zero-copy again */
    ZC_SWITCH_NEW_SOCKET, /* another socket behind the number: judge it afresh */
};
ZC_HIDDEN enum zc_switch zc__switch_check(struct zc_copy_switch *sw, int fd);
/* Start a streak for @fd (@cookie: its socket's, or 0 to ask). */
ZC_HIDDEN void zc__switch_start(struct zc_copy_switch *sw, int fd, uint64_t cookie);
/* A large send of @fd went zero-copy: the next streak is the shortest. */
ZC_HIDDEN void zc__switch_zerocopy_seen(struct zc_copy_switch *sw, int fd);
/* The socket's SO_COOKIE (unique while the system runs), 0 if it has none
 * or @fd is not a socket (errno then says why): tells a socket from another
 * behind the same descriptor number. */
ZC_HIDDEN uint64_t zc__sock_cookie(int fd);
/* sendmsg(2) of @msg from byte @skip on, by a copy (a blocking socket of a
 * zero-copy pool gets the rest even when woken by the pool's completions). */
ZC_HIDDEN ssize_t zc__send_copied_from(struct zc_pool *pool, int fd, const struct msghdr *msg,
                                       int flags, size_t skip);

/* For backends' poll: the nanoseconds left of @timeout_ms since @start
 * (0 or less once they have passed). */
ZC_HIDDEN long long zc__poll_left_ns(const struct timespec *start, int timeout_ms);
/* False once @timeout_ms have passed since @start, else a short sleep
 * (50 us) before the caller looks again. */
ZC_HIDDEN bool zc__poll_wait(const struct timespec *start, int timeout_ms);

/* One more in-flight reference on a pageblock the caller already holds. */
static inline void zc__inflight_get(struct zc_pool *pool, struct zc_pageblock *pb)
{
    atomic_fetch_add(&pb->in_flight, 1);
    ZC_STAT_ADD(pool, in_flight, 1);
}
/* Parts that go zero-copy (they have a pageblock); *total and *copied get
 * the message's bytes and those of the other parts. */
static inline uint32_t zc__parts_count(const struct zc_part *parts, size_t nparts, size_t *total,
                                       size_t *copied)
{
    uint32_t npb = 0;
    *total = *copied = 0;
    for (size_t i = 0; i < nparts; i++) {
        *total += parts[i].len;
        if (parts[i].pb)
            npb++;
        else
            *copied += parts[i].len;
    }
    return npb;
}

/* Drop one reference taken by the send path or zc__inflight_get. */
static inline void zc__inflight_drop(struct zc_pool *pool, struct zc_pageblock *pb)
{
    ZC_STAT_ADD(pool, in_flight, (uint64_t)-1);
    zc__inflight_put(pool, pb, 1);
}


#endif
