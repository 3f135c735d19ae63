/* SPDX-License-Identifier: MIT */
/*
 * The io_uring backend: IORING_OP_SEND_ZC / SENDMSG_ZC, one ring per
 * sending thread.
 *
 * Fixed buffers: a master ring registers the arena in segments as the
 * allocator first reaches them (before anything there can be protected, so
 * the pinning never trips the write protection), and each thread's ring
 * clones that table (IORING_REGISTER_CLONE_BUFFERS, kernel 6.12+). Where
 * cloning or registering is refused (old kernel, RLIMIT_MEMLOCK), sends use
 * unregistered SEND_ZC, which pins per send: visible in ZC_LOG, zcopy-probe
 * and the stats (zerocopy_parts_unregistered). A message of several parts
 * goes from a fixed buffer too where the kernel takes a vectored one (6.15+)
 * and every part lies in the same registered segment.
 *
 * Completions: the result CQE is waited for; the notification CQE, which
 * says the kernel let go of the pages, is reaped later by any thread
 * (sends, zc_poll, a writer or the allocator waiting) and drops the
 * pageblocks' in-flight references. Counting is per request, never by
 * arrival order.
 */
#include <fcntl.h>
#include <liburing.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "../../lib/internal.h"

/* Newer than the 6.1 UAPI headers: used only after a probe says so. */
#define ZC_SEND_ZC_REPORT_USAGE (1U << 3)
#define ZC_NOTIF_USAGE_ZC_COPIED (1U << 31)
#define ZC_REGISTER_CLONE_BUFFERS 30
#define ZC_REGISTER_DST_REPLACE (1U << 1)

struct zc_clone_buffers {
    uint32_t src_fd, flags, src_off, dst_off, nr, pad[3];
};

#define ZC_IOU_SEG_MIN ((size_t)2 << 20)
#define ZC_IOU_MAX_BUFS 16384
#define ZC_IOU_FD_CACHE 65536
#define ZC_IOU_JUDGE_SENDS 8 /* large sends, each flagged copied, that start a streak */
/* A single part below this is cheaper copied. zcbench, TCP, veth+XDP,
 * sender CPU per message against send(2), paired medians (2026-12-05,
 * every byte zero-copy): 16 KiB 1.02-1.21x in four runs, 32 KiB 0.67-0.93x. */
#define ZC_IOU_THRESHOLD ((size_t)32 << 10)
/* The same for a UDP datagram, on the veth at MTU 65535 (at MTU 1500 a
 * datagram over 1472 B is fragmented and the kernel copies it, which the
 * socket's copy switch catches; below that zero-copy costs 1.2-1.35x):
 * 16 KiB 1.10x, 24 KiB 1.00x, 32 KiB 0.94-0.96x, 48 KiB 0.84x (2026-12-06,
 * 30 paired runs, docs/performance.md). */
#define ZC_IOU_THRESHOLD_DGRAM ((size_t)32 << 10)
#define ZC_IOU_JUDGE_MIN ((size_t)16 << 10) /* smaller sends do not judge a socket */
/* A part of a datagram of several parts goes by SENDMSG_ZC, which pins its
 * pages on every send unless the whole message lies in one fixed buffer
 * (kernel 6.15+, every part zero-copy); below this it costs more than the
 * copy. Measured with memcached's replies (bench/memcached, TCP, veth+XDP):
 * server CPU per GET 0.91x stock's speed at 64 KiB, 1.18x at 128 KiB. */
#define ZC_IOU_VEC_THRESHOLD ((size_t)128 << 10)
/* On a stream socket a message of several parts goes as a chain of linked
 * requests instead: SEND_ZC from the fixed buffers for each zero-copy
 * part, a plain (copying) send for each run of other parts. Below this a
 * part is cheaper copied: memcached's replies (bench/memcached, TCP,
 * veth+XDP) measured 0.71x stock's GETs per server core at 16 KiB, 0.78x
 * at 32 KiB, 0.93x at 48 KiB, 1.04x at 64 KiB (by copy: 1.03, 1.03, 1.04,
 * 0.98x). */
#define ZC_IOU_CHAIN_THRESHOLD ((size_t)64 << 10)
#define ZC_IOU_CHAIN_MAX 8        /* requests in one chain */
#define ZC_IOU_CHAIN_MAX_PARTS 16 /* parts of a message sent by a chain */
/* zc_poll sleeps on up to this many rings at once (more: naps of 50 us),
 * for at most a slice at a time */
#define ZC_IOU_POLL_RINGS 32
#define ZC_IOU_POLL_SLICE_NS (10 * 1000000LL)

/* One send request; lives until its notification (or its result, when the
 * kernel says no notification follows). */
/* Copied parts of a message, shared by the requests that send it. */
struct iou_bounce {
    _Atomic unsigned refs;
    uint8_t data[];
};

struct iou_req {
    struct iou_req *next_spare;
    int fd;
    bool cancelled; /* its chain was cut before it: only the notification is due */
    size_t bytes;
    struct iou_bounce *bounce;
    uint32_t npb;
    struct zc_pageblock *pb[];
};

struct iou_ring {
    struct io_uring ring;
    pthread_mutex_t lock;
    struct iou_ring *next;
    uint64_t clone_gen;
    bool fixed;
    _Atomic bool orphan; /* its thread exited */
    _Atomic unsigned pending; /* requests whose notification is due */
    struct iou_req *spare;    /* finished one-part requests, for reuse */
    unsigned nspare;
    int clean_fd; /* socket of the CQE before, a notification not flagged copied */
};

#define ZC_IOU_SPARE 64

struct iou_pool {
    uint64_t pool_id;
    pthread_key_t key;
    pthread_mutex_t rings_lock;
    struct iou_ring *rings;
    struct io_uring master;
    bool master_ok;
    bool fixed;  /* segments are being registered */
    bool clone;  /* thread rings can clone the master's table */
    size_t seg_size, nsegs;
    uint8_t *seg_registered;
    _Atomic uint64_t reg_gen;
    pthread_mutex_t master_lock;
    struct zc_copy_switch sw; /* sockets found copying (lib/copyswitch.c) */
    _Atomic uint16_t fd_hist[ZC_IOU_FD_CACHE]; /* recent large notifications */
    _Atomic uint8_t fd_nonblock[ZC_IOU_FD_CACHE]; /* 1: O_NONBLOCK when last asked */
};

/* ---- probe, once per process ---- */

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int probe_rc;
static char probe_why[200];
static bool have_report_usage;
static bool have_vec_fixed; /* SENDMSG_ZC from a fixed buffer (6.15+) */

/* Submit what is queued and return the result of the request tagged @tag,
 * passing over other CQEs (the notifications of earlier probes). */
static int probe_result(struct io_uring *ring, uint64_t tag)
{
    if (io_uring_submit(ring) < 1)
        return -EIO;
    for (int i = 0; i < 8; i++) {
        struct io_uring_cqe *cqe;
        if (io_uring_wait_cqe(ring, &cqe) < 0)
            return -EIO;
        bool mine = cqe->user_data == tag && !(cqe->flags & IORING_CQE_F_NOTIF);
        int res = cqe->res;
        io_uring_cqe_seen(ring, cqe);
        if (mine)
            return res;
    }
    return -EIO;
}

static void probe_run(void)
{
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    int disabled = 0;
    if (f) {
        if (fscanf(f, "%d", &disabled) != 1)
            disabled = 0;
        fclose(f);
    }
    struct io_uring ring;
    int rc = io_uring_queue_init(4, &ring, 0);
    if (rc < 0) {
        probe_rc = rc;
        snprintf(probe_why, sizeof(probe_why), "io_uring_setup: %s%s", strerror(-rc),
                 disabled == 2   ? " (kernel.io_uring_disabled=2)"
                 : disabled == 1 ? " (kernel.io_uring_disabled=1: not in io_uring_group)"
                 : rc == -EPERM  ? " (seccomp or a security module)"
                                 : "");
        return;
    }
    struct io_uring_probe *p = io_uring_get_probe_ring(&ring);
    if (!p || !io_uring_opcode_supported(p, IORING_OP_SEND_ZC)) {
        probe_rc = -ENOTSUP;
        snprintf(probe_why, sizeof(probe_why), "no IORING_OP_SEND_ZC (kernel before 6.0)");
    } else if (!io_uring_opcode_supported(p, IORING_OP_SENDMSG_ZC)) {
        probe_rc = -ENOTSUP;
        snprintf(probe_why, sizeof(probe_why), "no IORING_OP_SENDMSG_ZC (kernel before 6.1)");
    }
    if (p)
        io_uring_free_probe(p);
    if (probe_rc == 0) {
        /* REPORT_USAGE (6.2+): an unknown flag fails with EINVAL before the
         * fd is looked at; a known one gets EBADF for fd -1. */
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_send_zc(sqe, -1, NULL, 0, 0, 0);
        sqe->ioprio |= ZC_SEND_ZC_REPORT_USAGE;
        io_uring_sqe_set_data64(sqe, 1);
        int res = probe_result(&ring, 1);
        have_report_usage = res != -EINVAL && res != -EIO;
        /* SENDMSG_ZC with IORING_RECVSEND_FIXED_BUF: before 6.15 its prep
         * refuses the flag (EINVAL, or EFAULT with no buffers registered);
         * from 6.15 the request gets as far as the fd, EBADF for -1. */
        static char one_byte;
        struct iovec v = { &one_byte, 1 };
        struct msghdr mh = { .msg_iov = &v, .msg_iovlen = 1 };
        sqe = io_uring_get_sqe(&ring);
        io_uring_prep_sendmsg_zc(sqe, -1, &mh, 0);
        sqe->ioprio |= IORING_RECVSEND_FIXED_BUF;
        sqe->buf_index = 0;
        io_uring_sqe_set_data64(sqe, 2);
        have_vec_fixed = probe_result(&ring, 2) == -EBADF;
        snprintf(probe_why, sizeof(probe_why), "ok");
    }
    io_uring_queue_exit(&ring);
}

static int iou_probe(char *why, size_t why_len)
{
    pthread_once(&probe_once, probe_run);
    snprintf(why, why_len, "%s", probe_why);
    return probe_rc;
}

/* ---- requests and completions ---- */

/* Ring lock held: a one-part request goes back to the ring for reuse. */
static void req_finish(struct zc_pool *pool, struct iou_ring *r, struct iou_req *req)
{
    for (uint32_t i = 0; i < req->npb; i++)
        zc__inflight_drop(pool, req->pb[i]);
    if (req->bounce && atomic_fetch_sub(&req->bounce->refs, 1) == 1)
        free(req->bounce);
    if (req->npb == 1 && r->nspare < ZC_IOU_SPARE) {
        req->next_spare = r->spare;
        r->spare = req;
        r->nspare++;
        return;
    }
    free(req);
}

/* Ring lock held. */
static struct iou_req *req_new(struct iou_ring *r, uint32_t npb)
{
    if (npb == 1 && r->spare) {
        struct iou_req *req = r->spare;
        r->spare = req->next_spare;
        r->nspare--;
        return req;
    }
    return malloc(sizeof(struct iou_req) + npb * sizeof(struct zc_pageblock *));
}

static void spares_free(struct iou_ring *r)
{
    while (r->spare) {
        struct iou_req *req = r->spare;
        r->spare = req->next_spare;
        free(req);
    }
    r->nspare = 0;
}

/* Another request for the same message: its own references. */
static struct iou_req *req_again(struct zc_pool *pool, const struct iou_req *req)
{
    size_t sz = sizeof(*req) + req->npb * sizeof(req->pb[0]);
    struct iou_req *again = malloc(sz);
    if (!again)
        return NULL;
    memcpy(again, req, sz);
    for (uint32_t i = 0; i < again->npb; i++)
        zc__inflight_get(pool, again->pb[i]);
    if (again->bounce)
        atomic_fetch_add(&again->bounce->refs, 1);
    return again;
}

/* Note whether a large send of @fd was copied by the kernel; true when
 * each of the last ZC_IOU_JUDGE_SENDS was, which is what a socket whose
 * deliveries copy (loopback, local delivery) shows. Fewer are not enough:
 * TCP flags a notification copied now and then (a retransmitted clone,
 * say) on paths that are zero-copy otherwise. */
static bool copies_always(struct iou_pool *st, int fd, bool copied)
{
    if (fd < 0 || fd >= ZC_IOU_FD_CACHE)
        return copied;
    uint16_t h = atomic_load_explicit(&st->fd_hist[fd], memory_order_relaxed);
    unsigned samples = (h >> 8) < ZC_IOU_JUDGE_SENDS ? (h >> 8) + 1u : ZC_IOU_JUDGE_SENDS;
    unsigned mask = (1u << samples) - 1;
    unsigned bits = (((unsigned)h << 1) | copied) & mask;
    /* the history stays: one more copied send is enough after a streak
     * (and a new socket behind a reused descriptor corrects it quickly) */
    atomic_store_explicit(&st->fd_hist[fd], (uint16_t)(samples << 8 | bits), memory_order_relaxed);
    return samples == ZC_IOU_JUDGE_SENDS && bits == mask;
}

/* A CQE that is not the result the caller waits for: a notification. */
static void handle_notif(struct zc_pool *pool, struct iou_ring *r, struct io_uring_cqe *cqe)
{
    struct iou_pool *st = pool->backend;
    struct iou_req *req = io_uring_cqe_get_data(cqe);
    if (cqe->user_data <= ZC_IOU_CHAIN_MAX)
        return; /* a chain's plain send, whose sender gave up waiting */
    if (req->cancelled) {
        atomic_fetch_sub(&r->pending, 1);
        free(req);
        return;
    }
    ZC_STAT_ADD(pool, completions, 1);
    bool copied = have_report_usage && ((uint32_t)cqe->res & ZC_NOTIF_USAGE_ZC_COPIED);
    /* When TCP puts the data of consecutive requests in one skb, io_uring
     * (6.18 here) links their notifications: the skb counts for the first
     * request's only, a later request none of whose own skbs carried data
     * is flagged copied whatever happened, and all are posted together,
     * the first one first. So a flagged notification that follows one of
     * the same socket not flagged was not copied either, and is not
     * counted copied in the stats. */
    if (!copied)
        r->clean_fd = req->fd;
    else if (req->fd == r->clean_fd)
        copied = false;
    else
        r->clean_fd = -1;
    if (copied)
        ZC_STAT_ADD(pool, completions_copied, 1);
    /* small TCP sends share notifications and are flagged loosely: judge a
     * socket by its large sends only */
    if (have_report_usage && req->bytes >= ZC_IOU_JUDGE_MIN) {
        bool always = copies_always(st, req->fd, copied);
        if (!copied)
            zc__switch_zerocopy_seen(&st->sw, req->fd);
        if (always) {
            zc__switch_start(&st->sw, req->fd, 0);
            ZC_LOG("socket %d: the kernel copied each of the last %d large zero-copy sends; "
                   "copying from now on", req->fd, ZC_IOU_JUDGE_SENDS);
        }
    }
    atomic_fetch_sub(&r->pending, 1);
    req_finish(pool, r, req);
}

/* Reap what is there; ring lock held. */
static int reap_locked(struct zc_pool *pool, struct iou_ring *r)
{
    struct io_uring_cqe *cqe;
    int n = 0;
    while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
        handle_notif(pool, r, cqe);
        io_uring_cqe_seen(&r->ring, cqe);
        n++;
    }
    return n;
}

/* ---- rings ---- */

static _Thread_local struct {
    uint64_t pool_id;
    struct iou_ring *ring;
} tl_ring;

static void ring_thread_exit(void *arg)
{
    struct iou_ring *r = arg;
    /* notifications may still be due: poll reaps them and closes it */
    r->orphan = true;
    if (tl_ring.ring == r)
        tl_ring.pool_id = 0;
}

static int clone_into(struct iou_pool *st, struct iou_ring *r)
{
    struct zc_clone_buffers cb = { .src_fd = (uint32_t)st->master.ring_fd };
    if (r->clone_gen)
        cb.flags = ZC_REGISTER_DST_REPLACE;
    pthread_mutex_lock(&st->master_lock);
    uint64_t gen = atomic_load(&st->reg_gen);
    long rc = syscall(__NR_io_uring_register, r->ring.ring_fd, ZC_REGISTER_CLONE_BUFFERS, &cb, 1);
    pthread_mutex_unlock(&st->master_lock);
    if (rc < 0)
        return -errno;
    r->clone_gen = gen;
    return 0;
}

/* A thread's ring: only its thread submits (SINGLE_ISSUER), and a
 * notification's task work waits for that thread's next kernel entry or
 * wake-up instead of interrupting it with an IPI while it runs
 * (COOP_TASKRUN). Other threads only read the completion queue. Not
 * DEFER_TASKRUN: then only the owner could ever post the notifications,
 * and a writer in another thread would wait on an idle sender forever, or
 * the owner on itself when it writes an object it has just sent (it sleeps
 * in the write fault, not in io_uring_enter). */
#define ZC_IOU_RING_FLAGS (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER)

static int ring_init(struct io_uring *ring)
{
    static _Atomic unsigned flags = ZC_IOU_RING_FLAGS;
    unsigned f = atomic_load_explicit(&flags, memory_order_relaxed);
    int rc = io_uring_queue_init(64, ring, f);
    if (rc == -EINVAL && f) {
        /* a kernel before 6.0 */
        atomic_store_explicit(&flags, 0, memory_order_relaxed);
        ZC_LOG("io_uring: rings without COOP_TASKRUN|SINGLE_ISSUER (%s)", strerror(-rc));
        rc = io_uring_queue_init(64, ring, 0);
    }
    return rc;
}

static struct iou_ring *ring_get(struct zc_pool *pool)
{
    struct iou_pool *st = pool->backend;
    if (tl_ring.pool_id == pool->id)
        return tl_ring.ring;
    struct iou_ring *r = pthread_getspecific(st->key);
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return NULL;
        r->clean_fd = -1;
        int rc = ring_init(&r->ring);
        if (rc < 0) {
            ZC_LOG("io_uring: ring for a new thread: %s", strerror(-rc));
            free(r);
            return NULL;
        }
        pthread_mutex_init(&r->lock, NULL);
        r->fixed = st->fixed && st->clone;
        if (r->fixed && atomic_load(&st->reg_gen) && clone_into(st, r)) {
            ZC_LOG("io_uring: cloning the fixed buffers failed: unregistered sends here");
            r->fixed = false;
        }
        pthread_setspecific(st->key, r);
        pthread_mutex_lock(&st->rings_lock);
        r->next = st->rings;
        st->rings = r;
        pthread_mutex_unlock(&st->rings_lock);
    }
    tl_ring.pool_id = pool->id;
    tl_ring.ring = r;
    return r;
}

/* Register the segments the arena now reaches, before anything in them is
 * allocated (pinning writes to the pages; protected ones would fault). */
static void iou_arena_grow(struct zc_pool *pool, size_t from, size_t to)
{
    struct iou_pool *st = pool->backend;
    if (!st->fixed)
        return;
    pthread_mutex_lock(&st->master_lock);
    for (size_t s = from / st->seg_size; s <= (to - 1) / st->seg_size && s < st->nsegs; s++) {
        if (st->seg_registered[s])
            continue;
        struct iovec iov = { pool->arena + s * st->seg_size, st->seg_size };
        if (s == st->nsegs - 1 && (s + 1) * st->seg_size > pool->arena_size)
            iov.iov_len = pool->arena_size - s * st->seg_size;
        int rc = io_uring_register_buffers_update_tag(&st->master, (unsigned)s, &iov, NULL, 1);
        if (rc < 0) {
            ZC_LOG("io_uring: registering arena segment %zu: %s%s; unregistered sends from now on",
                   s, strerror(-rc), rc == -ENOMEM ? " (RLIMIT_MEMLOCK?)" : "");
            ZC_STAT_ADD(pool, fallbacks, 1);
            st->fixed = false;
            break;
        }
        st->seg_registered[s] = 1;
        atomic_fetch_add(&st->reg_gen, 1);
    }
    pthread_mutex_unlock(&st->master_lock);
}

/* ---- pool start and stop ---- */

static int iou_init(struct zc_pool *pool, char *why, size_t why_len)
{
    struct iou_pool *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    int rc = pthread_key_create(&st->key, ring_thread_exit);
    if (rc) {
        free(st);
        return -rc;
    }
    pthread_mutex_init(&st->rings_lock, NULL);
    pthread_mutex_init(&st->master_lock, NULL);
    st->pool_id = pool->id;
    st->seg_size = ZC_IOU_SEG_MIN;
    while (pool->arena_size / st->seg_size > ZC_IOU_MAX_BUFS)
        st->seg_size *= 2;
    st->nsegs = (pool->arena_size + st->seg_size - 1) / st->seg_size;
    st->seg_registered = calloc(st->nsegs, 1);
    pool->backend = st;
    if (!st->seg_registered) {
        snprintf(why, why_len, "out of memory");
        return -ENOMEM;
    }
    rc = io_uring_queue_init(4, &st->master, 0);
    if (rc < 0) {
        snprintf(why, why_len, "io_uring_setup: %s", strerror(-rc));
        free(st->seg_registered);
        free(st);
        pool->backend = NULL;
        return rc;
    }
    st->master_ok = true;
    rc = io_uring_register_buffers_sparse(&st->master, (unsigned)st->nsegs);
    st->fixed = rc == 0;
    if (!st->fixed)
        ZC_LOG("io_uring: sparse buffer table refused (%s): unregistered sends", strerror(-rc));
    if (st->fixed) {
        /* can thread rings share the table? */
        struct iou_ring probe = { 0 };
        if (io_uring_queue_init(2, &probe.ring, 0) == 0) {
            st->clone = clone_into(st, &probe) == 0;
            io_uring_queue_exit(&probe.ring);
        }
        if (!st->clone) {
            ZC_LOG("io_uring: this kernel cannot clone a buffer table (6.12+): unregistered sends");
            io_uring_unregister_buffers(&st->master);
            st->fixed = false;
        }
    }
    /* registered pages are pinned: giving them back would break the table */
    pool->keep_committed = st->fixed;
    ZC_LOG("io_uring: %s, segments of %zu KiB, REPORT_USAGE %s, SENDMSG_ZC from fixed buffers %s",
           st->fixed ? "fixed buffers" : "unregistered buffers", st->seg_size >> 10,
           have_report_usage ? "yes" : "no", have_vec_fixed ? "yes" : "no (kernel before 6.15)");
    return 0;
}

static void iou_fini(struct zc_pool *pool)
{
    struct iou_pool *st = pool->backend;
    if (!st)
        return;
    pthread_key_delete(st->key);
    if (tl_ring.pool_id == pool->id)
        tl_ring.pool_id = 0;
    struct iou_ring *r = st->rings;
    while (r) {
        struct iou_ring *next = r->next;
        pthread_mutex_lock(&r->lock);
        reap_locked(pool, r);
        spares_free(r);
        pthread_mutex_unlock(&r->lock);
        io_uring_queue_exit(&r->ring);
        pthread_mutex_destroy(&r->lock);
        free(r);
        r = next;
    }
    if (st->master_ok)
        io_uring_queue_exit(&st->master);
    free(st->seg_registered);
    pthread_mutex_destroy(&st->rings_lock);
    pthread_mutex_destroy(&st->master_lock);
    free(st);
    pool->backend = NULL;
}

/* Sleep until one of @fds (rings) has a completion, a task work of ours
 * is due (it interrupts the sleep and posts its completion), or a slice of
 * the time left passes: a ring closed meanwhile would not wake us. */
static bool rings_wait(struct pollfd *fds, nfds_t nfds, const struct timespec *start,
                       int timeout_ms)
{
    long long left_ns = zc__poll_left_ns(start, timeout_ms);
    if (left_ns <= 0)
        return false;
    if (left_ns > ZC_IOU_POLL_SLICE_NS)
        left_ns = ZC_IOU_POLL_SLICE_NS;
    struct timespec ts = { 0, (long)left_ns };
    ppoll(fds, nfds, &ts, NULL);
    return true;
}

static int iou_poll(struct zc_pool *pool, int timeout_ms)
{
    struct iou_pool *st = pool->backend;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int n = 0;
        unsigned pending = 0;
        struct pollfd fds[ZC_IOU_POLL_RINGS];
        nfds_t nfds = 0;
        bool nap = false; /* a ring we cannot sleep on: poll it by naps */
        pthread_mutex_lock(&st->rings_lock);
        struct iou_ring **link = &st->rings;
        while (*link) {
            struct iou_ring *r = *link;
            if (pthread_mutex_trylock(&r->lock) == 0) {
                n += reap_locked(pool, r);
                pthread_mutex_unlock(&r->lock);
            } else {
                nap = true; /* its sender may take the completions */
            }
            unsigned p = atomic_load(&r->pending);
            pending += p;
            if (r->orphan && p == 0) {
                /* its thread is gone and nothing is due: close it */
                *link = r->next;
                spares_free(r);
                io_uring_queue_exit(&r->ring);
                pthread_mutex_destroy(&r->lock);
                free(r);
                continue;
            }
            if (p && nfds < ZC_IOU_POLL_RINGS)
                fds[nfds++] = (struct pollfd){ .fd = r->ring.ring_fd, .events = POLLIN };
            else if (p)
                nap = true;
            link = &r->next;
        }
        pthread_mutex_unlock(&st->rings_lock);
        if (n || !pending || timeout_ms == 0)
            return n;
        if (!(nap ? zc__poll_wait(&start, timeout_ms)
                  : rings_wait(fds, nfds, &start, timeout_ms)))
            return 0;
    }
}

/* ---- sending ---- */

/* The socket's file status flags (fcntl F_GETFL), remembering whether it
 * was non-blocking for iou_sendmsg. */
static int socket_flags(struct iou_pool *st, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && fd < ZC_IOU_FD_CACHE)
        atomic_store_explicit(&st->fd_nonblock[fd], (fl & O_NONBLOCK) != 0, memory_order_relaxed);
    return fl;
}

/* What a request sends: one part (SEND_ZC, fixed if it can) or a whole
 * message (SENDMSG_ZC). */
struct iou_msg {
    const struct msghdr *msg; /* iovecs point at pool data or the bounce buffer */
    size_t total;
    bool single;
    long seg; /* several parts: the fixed buffer that holds them all, or -1 */
    bool unregistered; /* out: the kernel looks the pages up */
};

/* The registered segment that holds [base, base + len) of the arena, or -1. */
static long registered_segment(const struct zc_pool *pool, const void *base, size_t len)
{
    const struct iou_pool *st = pool->backend;
    if (!st->fixed)
        return -1;
    size_t off = (size_t)((const uint8_t *)base - pool->arena);
    size_t seg = off / st->seg_size;
    if (seg != (off + len - 1) / st->seg_size || !st->seg_registered[seg])
        return -1;
    return (long)seg;
}

/* The registered segment that holds every part of a message, if each part
 * goes zero-copy (a copied part lives in a bounce buffer, which is not
 * registered) and the kernel takes a vectored send from a fixed buffer,
 * which must hold all of it; else -1. */
static long message_segment(const struct zc_pool *pool, const struct zc_part *parts, size_t nparts)
{
    if (!have_vec_fixed)
        return -1;
    long seg = -1;
    for (size_t i = 0; i < nparts; i++) {
        long s = parts[i].pb ? registered_segment(pool, parts[i].base, parts[i].len) : -1;
        if (s < 0 || (i && s != seg))
            return -1;
        seg = s;
    }
    return seg;
}

/* True if this ring can send from the fixed buffers now; ring lock held. */
static bool ring_fixed(struct iou_pool *st, struct iou_ring *r)
{
    if (r->fixed && r->clone_gen != atomic_load(&st->reg_gen) && clone_into(st, r)) {
        ZC_LOG("io_uring: re-cloning the fixed buffers failed: unregistered sends here");
        r->fixed = false;
    }
    return r->fixed;
}

/* SEND_ZC of one part of the arena: from the fixed buffers where its
 * segment is registered and this ring has the table; ring lock held.
 * Returns true if the kernel will look the pages up (not fixed). */
static bool prep_send_zc(struct zc_pool *pool, struct iou_ring *r, struct io_uring_sqe *sqe,
                         int fd, const uint8_t *base, size_t len, int sflags)
{
    long seg = registered_segment(pool, base, len);
    bool fixed = seg >= 0 && ring_fixed(pool->backend, r);
    if (fixed)
        io_uring_prep_send_zc_fixed(sqe, fd, base, len, sflags, 0, (unsigned)seg);
    else
        io_uring_prep_send_zc(sqe, fd, base, len, sflags, 0);
    if (have_report_usage)
        sqe->ioprio |= ZC_SEND_ZC_REPORT_USAGE;
    return !fixed;
}

/* SENDMSG_ZC of a message: from fixed buffer @seg if not -1 and this ring
 * has the table; ring lock held. Returns true if not fixed. */
static bool prep_sendmsg_zc(struct zc_pool *pool, struct iou_ring *r, struct io_uring_sqe *sqe,
                            int fd, const struct msghdr *m, long seg, int sflags)
{
    bool fixed = seg >= 0 && ring_fixed(pool->backend, r);
    io_uring_prep_sendmsg_zc(sqe, fd, m, (unsigned)sflags);
    if (fixed) {
        sqe->ioprio |= IORING_RECVSEND_FIXED_BUF;
        sqe->buf_index = (uint16_t)seg;
    }
    if (have_report_usage)
        sqe->ioprio |= ZC_SEND_ZC_REPORT_USAGE;
    return !fixed;
}

/* Submit one request and wait for its result; ring lock held. Returns the
 * result; *more says whether a notification follows (then the ring owns
 * req until it comes). A send interrupted before its first byte (task work
 * of this thread's other requests) is submitted again, as send(2) would
 * have kept waiting.
 *
 * ask_socket: the socket is believed blocking but was not asked (a system
 * call, about 1 us here: 8% of a 64 KiB send). The request goes without
 * waiting; most complete there and then. One that did not is waiting for
 * room, and only then is the socket asked: if it is non-blocking now, the
 * request is cancelled, which reports what it sent (or EAGAIN), as send(2)
 * on a non-blocking socket would have. */
static int submit_wait(struct zc_pool *pool, struct iou_ring *r, struct iou_req **reqp,
                       struct iou_msg *im, int fd, int sflags, bool ask_socket, bool *more)
{
    struct iou_pool *st = pool->backend;
    struct iou_req *req = *reqp;
    const struct msghdr *m = im->msg;
    for (unsigned attempt = 0;; attempt++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        if (!sqe) {
            io_uring_submit(&r->ring);
            sqe = io_uring_get_sqe(&r->ring);
        }
        if (im->single)
            im->unregistered = prep_send_zc(pool, r, sqe, fd, m->msg_iov[0].iov_base,
                                            im->total, sflags);
        else
            im->unregistered = prep_sendmsg_zc(pool, r, sqe, fd, m, im->seg, sflags);
        io_uring_sqe_set_data(sqe, req);
        bool got = false, cancelled = false;
        int res = 0;
        *more = false;
        bool peek = ask_socket;
        int rc = peek ? io_uring_submit(&r->ring) : io_uring_submit_and_wait(&r->ring, 1);
        while (rc >= 0 && !got) {
            struct io_uring_cqe *cqe;
            rc = peek ? io_uring_peek_cqe(&r->ring, &cqe) : io_uring_wait_cqe(&r->ring, &cqe);
            if (peek && rc == -EAGAIN) {
                /* not done at once: it waits for room in the socket */
                peek = false;
                rc = 0;
                int fl = socket_flags(st, fd);
                if (fl >= 0 && (fl & O_NONBLOCK)) {
                    struct io_uring_sqe *c = io_uring_get_sqe(&r->ring);
                    if (!c) {
                        io_uring_submit(&r->ring);
                        c = io_uring_get_sqe(&r->ring);
                    }
                    io_uring_prep_cancel64(c, (uint64_t)(uintptr_t)req, 0);
                    io_uring_sqe_set_data64(c, 0); /* its own result is not needed */
                    rc = io_uring_submit(&r->ring);
                    cancelled = true;
                }
                continue;
            }
            if (rc == -EINTR) {
                rc = 0;
                continue;
            }
            if (rc < 0)
                break;
            if (io_uring_cqe_get_data(cqe) == req && !(cqe->flags & IORING_CQE_F_NOTIF)) {
                r->clean_fd = -1;
                res = cqe->res;
                *more = cqe->flags & IORING_CQE_F_MORE;
                got = true;
                if (*more)
                    atomic_fetch_add(&r->pending, 1);
            } else {
                handle_notif(pool, r, cqe);
            }
            io_uring_cqe_seen(&r->ring, cqe);
        }
        if (!got)
            return rc < 0 ? rc : -EIO;
        if (cancelled)
            return res == -ECANCELED ? -EAGAIN : res;
        if (res != -EINTR || (sflags & MSG_DONTWAIT) || attempt == 16)
            return res;
        if (*more) {
            struct iou_req *again = req_again(pool, req);
            if (!again)
                return res;
            *reqp = req = again;
        }
    }
}

/* ---- a message of several parts on a stream socket: a chain ---- */

/* One request of a chain: a zero-copy part, or a run of parts to copy. */
struct chain_req {
    size_t first, count; /* parts[first .. first + count) */
    size_t len;
    struct iou_req *req; /* zero-copy: the request (the ring may own it) */
    int res;
    bool got;
    bool unregistered; /* zero-copy, not from the fixed buffers */
};

/* True if a chain can send @parts: a stream socket, few parts and
 * requests. One getsockopt: a descriptor can be reused for a datagram
 * socket at any time, and a datagram must not be split. */
static bool chain_fits(int fd, const struct msghdr *msg, const struct zc_part *parts,
                       size_t nparts)
{
    if (msg->msg_name || msg->msg_controllen || nparts > ZC_IOU_CHAIN_MAX_PARTS)
        return false;
    unsigned reqs = 0;
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].pb || i == 0 || parts[i - 1].pb)
            reqs++;
    int type = 0;
    socklen_t tlen = sizeof(type);
    return reqs <= ZC_IOU_CHAIN_MAX &&
           getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM;
}

/* Move *pi / *poff on by @n bytes of @parts. */
static void parts_advance(const struct zc_part *parts, size_t nparts, size_t *pi, size_t *poff,
                          size_t n)
{
    while (*pi < nparts && n) {
        size_t left = parts[*pi].len - *poff;
        if (n < left) {
            *poff += n;
            return;
        }
        n -= left;
        (*pi)++;
        *poff = 0;
    }
}

/* Build the requests for the rest of the message; ring lock held. A
 * zero-copy request takes the part's reference the first time (moved[]),
 * its own after. Returns the count, or -1 if out of memory (nothing kept). */
static int chain_build(struct zc_pool *pool, struct iou_ring *r, int fd, struct zc_part *parts,
                       size_t nparts, size_t pi, size_t poff, bool *moved,
                       struct chain_req *cr, struct iovec *iov)
{
    int n = 0;
    for (size_t i = pi; i < nparts;) {
        size_t off = i == pi ? poff : 0;
        struct chain_req *c = &cr[n];
        *c = (struct chain_req){ .first = i };
        if (parts[i].pb) {
            c->count = 1;
            c->len = parts[i].len - off;
            iov[i] = (struct iovec){ (void *)((uintptr_t)parts[i].base + off), c->len };
            struct iou_req *req = req_new(r, 1);
            if (!req) {
                while (n-- > 0)
                    if (cr[n].req)
                        req_finish(pool, r, cr[n].req);
                return -1;
            }
            *req = (struct iou_req){ .fd = fd, .bytes = c->len, .npb = 1 };
            req->pb[0] = parts[i].pb;
            if (moved[i])
                zc__inflight_get(pool, parts[i].pb);
            moved[i] = true;
            c->req = req;
            i++;
        } else {
            for (; i < nparts && !parts[i].pb; i++, off = 0) {
                iov[i] = (struct iovec){ (void *)((uintptr_t)parts[i].base + off),
                                         parts[i].len - off };
                c->len += iov[i].iov_len;
            }
            c->count = i - c->first;
        }
        if (c->len)
            n++;
        else if (c->req)
            req_finish(pool, r, c->req);
    }
    return n;
}

/* Submit the chain and wait for every request's result; ring lock held.
 * Every request but the last has MSG_MORE (TCP packs the parts together)
 * and MSG_WAITALL: a request that stops short fails, and the kernel then
 * cancels the rest of the chain, so what was sent is always a prefix. */
static bool chain_run(struct zc_pool *pool, struct iou_ring *r, int fd, int sflags,
                      struct chain_req *cr, int n, struct iovec *iov)
{
    struct msghdr mh[ZC_IOU_CHAIN_MAX];
    if (io_uring_sq_space_left(&r->ring) < (unsigned)n)
        io_uring_submit(&r->ring);
    for (int k = 0; k < n; k++) {
        struct chain_req *c = &cr[k];
        bool last = k + 1 == n;
        int f = sflags | (last ? 0 : MSG_MORE | MSG_WAITALL);
        struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
        if (c->req) {
            c->unregistered = prep_send_zc(pool, r, sqe, fd, iov[c->first].iov_base, c->len, f);
            io_uring_sqe_set_data(sqe, c->req);
        } else {
            if (c->count == 1) {
                io_uring_prep_send(sqe, fd, iov[c->first].iov_base, c->len, f);
            } else {
                mh[k] = (struct msghdr){ .msg_iov = &iov[c->first], .msg_iovlen = c->count };
                io_uring_prep_sendmsg(sqe, fd, &mh[k], (unsigned)f);
            }
            /* a small tag, never a request's address */
            io_uring_sqe_set_data64(sqe, (uint64_t)k + 1);
        }
        if (!last)
            sqe->flags |= IOSQE_IO_LINK;
    }
    int got = 0;
    for (unsigned spins = 0; got < n;) {
        int rc = io_uring_sq_ready(&r->ring) ? io_uring_submit_and_wait(&r->ring, 1) : 0;
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
            break;
        struct io_uring_cqe *cqe;
        rc = io_uring_wait_cqe(&r->ring, &cqe);
        if (rc == -EINTR || (rc < 0 && io_uring_sq_ready(&r->ring) && spins++ < 1000))
            continue;
        if (rc < 0)
            break;
        struct chain_req *c = NULL;
        if (cqe->user_data >= 1 && cqe->user_data <= (uint64_t)n && !cr[cqe->user_data - 1].req)
            c = &cr[cqe->user_data - 1];
        for (int k = 0; !c && k < n && !(cqe->flags & IORING_CQE_F_NOTIF); k++)
            if (cr[k].req && !cr[k].got && io_uring_cqe_get_data(cqe) == cr[k].req)
                c = &cr[k];
        if (c && !c->got) {
            r->clean_fd = -1;
            c->got = true;
            c->res = cqe->res;
            got++;
            if (c->req && (cqe->flags & IORING_CQE_F_MORE)) {
                atomic_fetch_add(&r->pending, 1); /* the ring owns it now */
            } else if (c->req && cqe->res == -ECANCELED) {
                /* never issued, so its pages are free now; but the kernel
                 * (6.0+) still posts its notification, without saying so
                 * by F_MORE: the request stays until that comes */
                for (uint32_t i = 0; i < c->req->npb; i++)
                    zc__inflight_drop(pool, c->req->pb[i]);
                c->req->npb = 0;
                c->req->cancelled = true;
                atomic_fetch_add(&r->pending, 1);
            } else if (c->req) {
                req_finish(pool, r, c->req);
            }
        } else {
            handle_notif(pool, r, cqe);
        }
        io_uring_cqe_seen(&r->ring, cqe);
    }
    if (got < n)
        ZC_LOG("io_uring: lost the results of %d requests of a chain", n - got);
    return got == n;
}

/* sendmsg(2) of a message of several parts on a stream socket, as a chain
 * per attempt; ring lock held. A blocking socket sends all of it, going on
 * after an interruption or a short request as send(2) does. */
static ssize_t send_chain(struct zc_pool *pool, struct iou_ring *r, int fd,
                          const struct msghdr *msg, struct zc_part *parts, size_t nparts,
                          int flags, bool blocking)
{
    struct iou_pool *st = pool->backend;
    bool moved[ZC_IOU_CHAIN_MAX_PARTS] = { false };
    struct chain_req cr[ZC_IOU_CHAIN_MAX];
    struct iovec iov[ZC_IOU_CHAIN_MAX_PARTS];
    int sflags = flags | (blocking ? MSG_WAITALL : MSG_DONTWAIT);
    size_t pi = 0, poff = 0, total = 0;
    int err = 0;
    for (unsigned attempt = 0; attempt < 16 && pi < nparts; attempt++) {
        int n = chain_build(pool, r, fd, parts, nparts, pi, poff, moved, cr, iov);
        if (n < 0) {
            err = -ENOBUFS;
        } else if (n == 0) {
            break;
        } else if (!chain_run(pool, r, fd, sflags, cr, n, iov)) {
            err = -EIO;
        } else {
            bool stopped_short = false;
            err = 0;
            for (int k = 0; k < n && !err && !stopped_short; k++) {
                if (cr[k].res < 0) {
                    err = cr[k].res;
                    break;
                }
                size_t sent = (size_t)cr[k].res;
                total += sent;
                parts_advance(parts, nparts, &pi, &poff, sent);
                if (cr[k].req) {
                    ZC_STAT_ADD(pool, bytes_zerocopy, (uint64_t)sent);
                    ZC_STAT_ADD(pool, zerocopy_parts, sent > 0);
                    if (cr[k].unregistered)
                        ZC_STAT_ADD(pool, zerocopy_parts_unregistered, sent > 0);
                } else {
                    ZC_STAT_ADD(pool, bytes_copied, (uint64_t)sent);
                }
                stopped_short = sent < cr[k].len;
            }
            if (blocking && (stopped_short || err == -EINTR))
                continue;
        }
        if (err == -ENOBUFS || err == -EOPNOTSUPP || err == -EMSGSIZE) {
            /* no room to pin or for a request, a socket without zero-copy
             * (AF_UNIX stream): the rest goes by copy */
            ZC_STAT_ADD(pool, fallbacks, 1);
            if (err == -EOPNOTSUPP)
                zc__switch_start(&st->sw, fd, 0);
            ZC_LOG("io_uring: %s; copying the rest of this message", strerror(-err));
            for (size_t i = 0; i < nparts; i++)
                if (parts[i].pb && !moved[i]) {
                    zc__inflight_drop(pool, parts[i].pb);
                    moved[i] = true;
                }
            ssize_t c = zc__send_copied_from(pool, fd, msg, flags, total);
            if (c >= 0)
                total += (size_t)c;
            else
                err = -errno;
            if (c >= 0 || total)
                err = 0;
        }
        break;
    }
    if (total > 0 || !err)
        return (ssize_t)total;
    errno = -err;
    return -1;
}

static ssize_t iou_send_parts(struct zc_pool *pool, int fd, const struct msghdr *msg,
                              struct zc_part *parts, size_t nparts, int flags)
{
    struct iou_pool *st = pool->backend;
    bool single = nparts == 1 && !msg->msg_name && !msg->msg_controllen;
    /* with several parts, small ones are cheaper copied (both ways of
     * sending them have a floor; the chain's is the lower) */
    size_t floor = single || pool->copy_threshold ? 0 : ZC_IOU_CHAIN_THRESHOLD;
    bool any = false;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].pb && parts[i].len < floor) {
            zc__inflight_drop(pool, parts[i].pb);
            parts[i].pb = NULL;
        }
        any |= parts[i].pb != NULL;
    }
    if (!any)
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    enum zc_switch sw = zc__switch_check(&st->sw, fd);
    if (sw == ZC_SWITCH_COPY) /* this socket copies anyway (local delivery): copy here, cheaper */
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    if (sw == ZC_SWITCH_NEW_SOCKET && fd < ZC_IOU_FD_CACHE)
        atomic_store_explicit(&st->fd_hist[fd], 0, memory_order_relaxed);
    bool chain = !single && chain_fits(fd, msg, parts, nparts);
    /* SENDMSG_ZC from a fixed buffer pins nothing, so the floor for the
     * pinning kind does not apply to it */
    long seg = single || chain ? -1 : message_segment(pool, parts, nparts);
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].pb && !single && !chain && seg < 0 && !pool->copy_threshold &&
            parts[i].len < ZC_IOU_VEC_THRESHOLD) {
            zc__inflight_drop(pool, parts[i].pb); /* cheaper copied */
            parts[i].pb = NULL;
        }
    }
    size_t total, copied_len;
    uint32_t npb = zc__parts_count(parts, nparts, &total, &copied_len);
    if (!npb)
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    struct iou_ring *r = ring_get(pool);
    if (!r) {
        ZC_STAT_ADD(pool, fallbacks, 1);
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    }
    /* send(2) semantics on a ring: io_uring ignores O_NONBLOCK (so the
     * socket is asked: a chain at once, a single request only if it has to
     * wait), and on a blocking stream socket it stops short where send(2)
     * would wait, unless told MSG_WAITALL (ignored by UDP). */
    bool ask_socket = !(flags & MSG_DONTWAIT) && !chain;
    int fl = (flags & MSG_DONTWAIT) ? O_NONBLOCK : ask_socket ? 0 : socket_flags(st, fd);
    bool blocking = fl >= 0 && !(fl & O_NONBLOCK);
    pthread_mutex_lock(&r->lock);
    if (chain) {
        ssize_t sent = send_chain(pool, r, fd, msg, parts, nparts, flags, blocking);
        int err = errno;
        pthread_mutex_unlock(&r->lock);
        errno = err;
        return sent;
    }
    struct iou_req *req = req_new(r, npb);
    if (!req) {
        pthread_mutex_unlock(&r->lock);
        ZC_STAT_ADD(pool, fallbacks, 1);
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    }
    req->fd = fd;
    req->bytes = total;
    req->bounce = NULL;
    req->cancelled = false;
    req->npb = 0;
    struct iovec stack_iov[16];
    struct iovec *iov = stack_iov;
    struct msghdr m = *msg;
    struct iou_msg im = { .msg = msg, .total = total, .single = single, .seg = seg };
    if (!im.single) {
        /* Copied parts go from a bounce buffer the requests own: the
         * kernel may reference every part until the notification. */
        if (nparts > 16)
            iov = malloc(nparts * sizeof(*iov));
        if (copied_len)
            req->bounce = malloc(sizeof(*req->bounce) + copied_len);
        if (!iov || (copied_len && !req->bounce)) {
            free(req->bounce);
            free(req);
            pthread_mutex_unlock(&r->lock);
            if (iov != stack_iov)
                free(iov);
            ZC_STAT_ADD(pool, fallbacks, 1);
            return zc__send_copied(pool, fd, msg, parts, nparts, flags);
        }
        uint8_t *b = req->bounce ? req->bounce->data : NULL;
        if (req->bounce)
            atomic_init(&req->bounce->refs, 1);
        for (size_t i = 0; i < nparts; i++) {
            iov[i].iov_len = parts[i].len;
            if (parts[i].pb) {
                iov[i].iov_base = (void *)(uintptr_t)parts[i].base;
            } else {
                memcpy(b, parts[i].base, parts[i].len);
                iov[i].iov_base = b;
                b += parts[i].len;
            }
        }
        m.msg_iov = iov;
        m.msg_iovlen = nparts;
        im.msg = &m;
    }
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].pb)
            req->pb[req->npb++] = parts[i].pb; /* the references move to req */

    int sflags = flags | (blocking ? MSG_WAITALL : MSG_DONTWAIT);
    bool more;
    int res = submit_wait(pool, r, &req, &im, fd, sflags, ask_socket, &more);
    ssize_t sent = res > 0 ? res : 0;
    if (!more)
        req_finish(pool, r, req);
    pthread_mutex_unlock(&r->lock);
    if (iov != stack_iov)
        free(iov);
    if (sent > 0) {
        zc__account_sent(pool, parts, nparts, (size_t)sent, im.unregistered);
        return sent;
    }
    if (res == -ENOBUFS || res == -EOPNOTSUPP || res == -EMSGSIZE) {
        /* no room to pin (RLIMIT_MEMLOCK, optmem), a socket without
         * zero-copy (AF_UNIX), or a datagram over more pages than an skb
         * holds: this one goes by copy (a datagram really too large gets
         * EMSGSIZE from that too); the references went with req */
        ZC_STAT_ADD(pool, fallbacks, 1);
        if (res == -EOPNOTSUPP)
            zc__switch_start(&st->sw, fd, 0);
        ZC_LOG("io_uring: %s; copying this send", strerror(-res));
        return zc__send_copied_from(pool, fd, msg, flags, 0);
    }
    errno = -res;
    return -1;
}

/* A socket that did not block when last asked is sent to with MSG_DONTWAIT
 * straight away, which saves asking it again (a system call, about 1 us
 * here: 8% of a 64 KiB send) on event-loop servers that call zc_send
 * without MSG_DONTWAIT. Only if the send stops short is it asked; if it
 * blocks now, the rest goes by copy, waiting, as send(2) would have. */
static ssize_t iou_sendmsg(struct zc_pool *pool, int fd, const struct msghdr *msg,
                           struct zc_part *parts, size_t nparts, int flags)
{
    struct iou_pool *st = pool->backend;
    if ((flags & MSG_DONTWAIT) || fd < 0 || fd >= ZC_IOU_FD_CACHE ||
        !atomic_load_explicit(&st->fd_nonblock[fd], memory_order_relaxed))
        return iou_send_parts(pool, fd, msg, parts, nparts, flags);
    size_t total = 0;
    for (size_t i = 0; i < nparts; i++)
        total += parts[i].len;
    ssize_t sent = iou_send_parts(pool, fd, msg, parts, nparts, flags | MSG_DONTWAIT);
    if (sent >= 0 ? (size_t)sent >= total : errno != EAGAIN)
        return sent;
    int err = errno;
    int fl = socket_flags(st, fd);
    if (fl < 0 || (fl & O_NONBLOCK)) {
        errno = err;
        return sent;
    }
    ZC_STAT_ADD(pool, fallbacks, 1);
    ZC_LOG("socket %d blocks now: the rest of this send goes by copy", fd);
    size_t done = sent > 0 ? (size_t)sent : 0;
    ssize_t rest = zc__send_copied_from(pool, fd, msg, flags, done);
    if (rest >= 0)
        return (ssize_t)done + rest;
    return done ? (ssize_t)done : -1;
}

const struct zc_backend_ops zc_backend_iouring = {
    .name = "iouring",
    .caps = ZC_BE_ZEROCOPY | ZC_BE_NEEDS_PROTECT | ZC_BE_PLAIN_COPY,
    .probe = iou_probe,
    .init = iou_init,
    .fini = iou_fini,
    .arena_grow = iou_arena_grow,
    .copy_threshold_stream = ZC_IOU_THRESHOLD,
    .copy_threshold_dgram = ZC_IOU_THRESHOLD_DGRAM,
    .sendmsg = iou_sendmsg,
    .poll = iou_poll,
};
