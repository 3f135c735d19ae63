/* SPDX-License-Identifier: MIT */
/*
 * Integrity under stress, for every backend: what the receiver gets is, byte
 * for byte, what was sealed when zc_send / zc_sendmsg was called, while other
 * threads rewrite sealed objects (the write is caught by the protection and
 * waits for the sends in flight, or gets a copy of the page), free them and
 * allocate new ones in the same pageblocks.
 *
 * One run = one backend, one path, one protocol, a fresh pool:
 *   - 2 sender threads, each with its own connection (TCP) or socket pair
 *     (UDP); a message is a header copied from the stack
 *     {magic, flow, sequence, seed, length, object index, check} followed by
 *     the body of one pool object, whose bytes are pattern(seed). The sender
 *     holds the object's lock while it reads the seed and sends (send(2)
 *     semantics allow rewriting once the call returned).
 *   - 2 mutator threads take the same lock and either rewrite the object in
 *     place with a new seed (half of the time the object a sender sent last,
 *     whose bytes are likely still in flight) or free it and allocate a new
 *     one (half of the time of the same size, so in the same size class and
 *     pageblocks), then seal it again.
 *   - 2 receiver threads check every byte of every message against
 *     pattern(seed) and the sequence numbers (TCP: exact; UDP: increasing,
 *     gaps counted as lost).
 * Sizes are log-uniform: 1 B to 1 MiB over TCP, 1 B to 60 KiB over UDP.
 *
 * Paths: loopback (127.0.0.1) and a veth pair between two namespaces this
 * test creates, with XDP_PASS on the receiving end (tests/netns), where
 * zero-copy sends are really not copied. The veth runs are skipped, with the
 * reason printed, only where namespaces cannot be made.
 *
 * Environment:
 *   ZC_TEST_BACKEND        one backend (or a comma list); default: every
 *                          backend of zc_backend_list() whose probe is ok
 *   ZC_INTEGRITY_MESSAGES  messages checked per backend, over all runs
 *                          (default 200000, divided by TEST_SCALE_DIV in the
 *                          sanitizer builds)
 *   ZC_INTEGRITY_TIMEOUT   seconds one run may take before it fails (120)
 *   ZC_INTEGRITY_STALL     seconds without progress after which a run is
 *                          declared stuck: the state of every thread and the
 *                          pool's counters are printed, then abort() (30)
 *   ZC_INTEGRITY_SEED      random seed (default: time), printed
 *   ZC_INTEGRITY_PATHS     "loopback", "veth" or "loopback,veth" (default)
 *   ZC_INTEGRITY_PAGEBLOCK the pools' pageblock size in bytes (default: the
 *                          library's); 4194304, as the memcached example uses,
 *                          puts objects up to 512 KiB in shared pageblocks
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"
#include "netns.h"

#define NSENDERS 2
#define NMUTATORS 2
#define TCP_MAX_SIZE ((size_t)1 << 20)
#define UDP_MAX_SIZE ((size_t)60 << 10)
#define TCP_NOBJ 2048
#define UDP_NOBJ 4096
#define MSG_MAGIC 0x7a63696eu /* "zcin" */
#define MAX_REPORTED 5        /* mismatches printed in full per run */
#define SEND_TIMEOUT_S 10     /* SO_SNDTIMEO / SO_RCVTIMEO: no call blocks forever */
#define DRAIN_GRACE_NS (15ull * 1000000000ull) /* receivers, after the senders stop */
/* UDP flow control: at most this much unacknowledged by the receiver, so
 * that datagrams are checked rather than dropped by a full queue. */
#define UDP_WINDOW_MSGS 16
#define UDP_WINDOW_BYTES ((size_t)192 << 10)
#define UDP_STALL_NS (50ull * 1000000ull)

#if defined(__SANITIZE_THREAD__)
/* The bulk loops below touch only the test's own receive buffers or object
 * bytes under the object's lock; instrumenting every byte of gigabytes
 * would make the TSan run take hours without checking anything more. */
#define NO_TSAN __attribute__((no_sanitize_thread))
#else
#define NO_TSAN
#endif

enum proto { PROTO_TCP, PROTO_UDP };
enum path { PATH_LOOPBACK, PATH_VETH };

static const char *const proto_names[] = { "tcp", "udp" };
static const char *const path_names[] = { "loopback", "veth+xdp" };

/* ---- configuration shared by every run ---- */

static uint64_t cfg_messages;   /* per backend */
static uint64_t cfg_timeout_ns; /* per run */
static uint64_t cfg_stall_ns;   /* no progress for this long: a run is stuck */
static uint64_t cfg_seed;
static uint64_t cfg_pageblock;  /* 0: the library's default */
static bool cfg_paths[2];
static struct zc_netns_pair netns_pair;
static bool netns_up, netns_broken;
static char netns_skip[512];
static int napi_cpu = -1;
static _Atomic bool netns_removed;

static void cleanup_netns(void);
static bool is_child;

/* ---- the pattern: the bytes of pattern_fill() from common.c, 8 at a time ---- */

static inline uint64_t pat_word(uint64_t seed, uint64_t w)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + w * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return x;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
NO_TSAN static void fast_fill(void *p, size_t n, uint64_t seed)
{
    uint8_t *b = p;
    size_t words = n / 8;
    for (size_t w = 0; w < words; w++) {
        uint64_t x = pat_word(seed, w);
        memcpy(b + w * 8, &x, 8);
    }
    if (n % 8) {
        uint64_t x = pat_word(seed, words);
        memcpy(b + words * 8, &x, n % 8);
    }
}

/* true if the n bytes at p are pattern(seed) from offset 0 */
NO_TSAN static bool fast_check(const void *p, size_t n, uint64_t seed)
{
    const uint8_t *b = p;
    size_t words = n / 8;
    uint64_t diff = 0;
    for (size_t w = 0; w < words; w++) {
        uint64_t x;
        memcpy(&x, b + w * 8, 8);
        diff |= x ^ pat_word(seed, w);
    }
    if (n % 8) {
        uint64_t x = 0, want = pat_word(seed, words);
        memcpy(&x, b + words * 8, n % 8);
        diff |= (x ^ want) & (((uint64_t)1 << (8 * (n % 8))) - 1);
    }
    return diff == 0;
}
#else
static void fast_fill(void *p, size_t n, uint64_t seed)
{
    pattern_fill(p, n, seed, 0);
}

static bool fast_check(const void *p, size_t n, uint64_t seed)
{
    return pattern_check(p, n, seed, 0) == (size_t)-1;
}
#endif

/* ---- random numbers ---- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Log-uniform in [1, max]: a uniform octave, then uniform inside it. */
static size_t random_size(uint64_t *rs, size_t max)
{
    unsigned octaves = 0;
    while (((size_t)2 << octaves) <= max)
        octaves++; /* max in [2^octaves, 2^(octaves+1)) */
    unsigned b = (unsigned)(splitmix(rs) % (octaves ? octaves : 1));
    size_t lo = (size_t)1 << b, hi = lo * 2;
    if (b + 1 == octaves || hi > max)
        hi = max; /* the top octave reaches max itself */
    return lo + (size_t)(splitmix(rs) % (hi - lo + 1));
}

/* ---- one run ---- */

struct obj {
    pthread_mutex_t lock;
    char *p;         /* the pool object; changes on free + alloc */
    size_t len;
    uint64_t seed;   /* what p holds: pattern(seed) */
};

struct msg_hdr {
    uint32_t magic;
    uint32_t flow;
    uint64_t seq;    /* 1, 2, ... per flow */
    uint64_t seed;
    uint64_t len;    /* body bytes */
    uint64_t idx;    /* object index, for the report */
    uint64_t check;  /* over the fields above */
};

/* What each thread is doing, for the report of a run that is stuck. */
enum tstate {
    T_START, T_LOCK, T_SEAL, T_SEND, T_WINDOW, T_WRITE, T_REALLOC, T_BUDGET, T_RECV, T_CHECK,
    T_DONE,
};
static const char *const tstate_names[] = {
    "starting", "waiting for the object's lock", "in zc_seal", "in zc_send/zc_sendmsg",
    "waiting for the UDP receiver", "writing a sealed object", "in zc_free/zc_alloc",
    "idle (budget)", "in recv", "checking bytes", "done",
};
#define NTHREADS (2 * NSENDERS + NMUTATORS)
#define T_SENDER(f) (f)
#define T_MUTATOR(m) (NSENDERS + (m))
#define T_RECEIVER(f) (NSENDERS + NMUTATORS + (f))

struct run {
    const char *backend;
    enum proto proto;
    enum path path;
    uint64_t target;  /* messages to check */
    uint64_t deadline_ns;
    size_t max_size;
    zc_pool *pool;
    struct obj *objs;
    size_t nobj;
    int tx[NSENDERS], rx[NSENDERS];
    _Atomic uint64_t next_seed;
    _Atomic bool stop_senders, stop_mutators, failed;
    _Atomic int senders_running;
    /* progress */
    _Atomic uint64_t checked, bytes_checked, mismatches, lost, reordered;
    _Atomic uint64_t sent_msgs, sent_bytes, send_retries, udp_stalls;
    _Atomic int retry_errno; /* the last error a send was retried after */
    _Atomic uint64_t rewrites, reallocs, realloc_same_pb, mut_waits;
    _Atomic uint64_t flow_sent[NSENDERS];    /* messages each sender finished */
    _Atomic bool flow_done[NSENDERS];
    _Atomic uint64_t flow_rx_seq[NSENDERS];  /* highest sequence received */
    _Atomic uint64_t last_sent_idx[NSENDERS];
    _Atomic int reported;
    _Atomic uint32_t tstate[NTHREADS];
    _Atomic uint64_t tobj[NTHREADS];
    /* the main thread waits for the workers with a time limit */
    pthread_mutex_t done_lock;
    pthread_cond_t done_cond;
    int threads_left;
    pthread_mutex_t err_lock;
    char err[512];
};

static uint64_t hdr_check(const struct msg_hdr *h)
{
    uint64_t x = ((uint64_t)h->magic << 32 | h->flow) ^ 0x5851F42D4C957F2Dull;
    x = pat_word(x, h->seq) ^ pat_word(h->seed, h->len) ^ pat_word(h->idx, 7);
    return x;
}

static void run_fail(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void run_fail(struct run *r, const char *fmt, ...)
{
    pthread_mutex_lock(&r->err_lock);
    if (!r->err[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->err, sizeof(r->err), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&r->err_lock);
    atomic_store(&r->failed, true);
    atomic_store(&r->stop_senders, true);
}

static void tset(struct run *r, unsigned t, enum tstate st, uint64_t obj)
{
    atomic_store_explicit(&r->tobj[t], obj, memory_order_relaxed);
    atomic_store_explicit(&r->tstate[t], st, memory_order_relaxed);
}

static void thread_done(struct run *r, unsigned t)
{
    tset(r, t, T_DONE, 0);
    pthread_mutex_lock(&r->done_lock);
    r->threads_left--;
    pthread_cond_signal(&r->done_cond);
    pthread_mutex_unlock(&r->done_lock);
}

static bool past(uint64_t deadline)
{
    return test_now_ns() >= deadline;
}

static void pause_us(long us)
{
    struct timespec ts = { 0, us * 1000 };
    nanosleep(&ts, NULL);
}

/* ---- senders ---- */

struct sender_arg {
    struct run *r;
    unsigned flow;
};

/* Send the whole message on a blocking socket, part after part as send(2)
 * reports them; the object's lock is held by the caller. */
static bool send_all(struct run *r, int fd, struct iovec *iov, int niov, int flags)
{
    int retries = 0;
    while (niov > 0) {
        struct msghdr m = { .msg_iov = iov, .msg_iovlen = (size_t)niov };
        ssize_t n = zc_sendmsg(r->pool, fd, &m, flags | MSG_NOSIGNAL);
        if (n < 0) {
            if ((errno == EINTR || errno == EAGAIN || errno == ENOBUFS) && retries++ < 1000 &&
                !past(r->deadline_ns)) {
                /* a blocking socket should not say EAGAIN before SO_SNDTIMEO
                 * (10 s): counted and printed, not failed */
                atomic_fetch_add(&r->send_retries, 1);
                atomic_store(&r->retry_errno, errno);
                if (errno != EINTR)
                    pause_us(200);
                continue;
            }
            run_fail(r, "zc_sendmsg on flow socket %d: %s (after %d retries)", fd,
                     strerror(errno), retries);
            return false;
        }
        atomic_fetch_add(&r->sent_bytes, (uint64_t)n);
        size_t left = (size_t)n;
        while (niov > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            niov--;
        }
        if (niov > 0) {
            if (r->proto == PROTO_UDP) {
                run_fail(r, "UDP zc_sendmsg sent %zd of a datagram", n);
                return false;
            }
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return true;
}

/* UDP: wait until the receiver has seen enough of what we sent. */
static void udp_window(struct run *r, unsigned flow, uint64_t seq, const size_t *ring)
{
    uint64_t t0 = 0;
    for (;;) {
        uint64_t acked = atomic_load(&r->flow_rx_seq[flow]);
        size_t bytes = 0;
        for (uint64_t s = acked + 1; s < seq; s++)
            bytes += ring[s % UDP_WINDOW_MSGS];
        if (seq - acked <= UDP_WINDOW_MSGS && bytes <= UDP_WINDOW_BYTES)
            return;
        uint64_t now = test_now_ns();
        if (!t0)
            t0 = now;
        if (now - t0 > UDP_STALL_NS || now >= r->deadline_ns ||
            atomic_load(&r->stop_senders)) {
            atomic_fetch_add(&r->udp_stalls, 1); /* lost datagrams: go on */
            return;
        }
        pause_us(20);
    }
}

static void *sender_main(void *arg)
{
    struct sender_arg *a = arg;
    struct run *r = a->r;
    unsigned flow = a->flow;
    int fd = r->tx[flow];
    uint64_t rs = cfg_seed ^ (0x1000 + flow) * 0x9E3779B97F4A7C15ull ^ (uint64_t)r->proto << 40;
    size_t ring[UDP_WINDOW_MSGS] = { 0 };
    uint64_t seq = 0;
    while (!atomic_load(&r->stop_senders) && atomic_load(&r->checked) < r->target) {
        if (past(r->deadline_ns)) {
            run_fail(r, "time limit: %llu of %llu messages checked",
                     (unsigned long long)atomic_load(&r->checked),
                     (unsigned long long)r->target);
            break;
        }
        seq++;
        if (r->proto == PROTO_UDP) {
            tset(r, T_SENDER(flow), T_WINDOW, seq);
            udp_window(r, flow, seq, ring);
        }
        size_t i = (size_t)(splitmix(&rs) % r->nobj);
        struct obj *o = &r->objs[i];
        tset(r, T_SENDER(flow), T_LOCK, i);
        pthread_mutex_lock(&o->lock);
        tset(r, T_SENDER(flow), T_SEAL, i);
        /* a rewrite of a neighbour unseals the whole pageblock: the data
         * of this object is still final, so seal it again */
        int rc = zc_seal(r->pool, o->p);
        if (rc) {
            pthread_mutex_unlock(&o->lock);
            run_fail(r, "zc_seal(object %zu, %zu B): %s", i, o->len, zc_strerror(rc));
            break;
        }
        struct msg_hdr h = {
            .magic = MSG_MAGIC, .flow = flow, .seq = seq, .seed = o->seed,
            .len = o->len, .idx = i,
        };
        h.check = hdr_check(&h);
        tset(r, T_SENDER(flow), T_SEND, i);
        struct iovec iov[3] = { { &h, sizeof(h) }, { o->p, o->len }, { NULL, 0 } };
        bool ok;
        uint64_t how = splitmix(&rs) % 4;
        if (r->proto == PROTO_TCP && how == 0) {
            /* zc_send twice: header with MSG_MORE, then the body */
            ok = send_all(r, fd, iov, 1, MSG_MORE) && send_all(r, fd, iov + 1, 1, 0);
        } else if (how == 1 && o->len >= 2) {
            /* the body in two parts, split anywhere */
            size_t cut = 1 + (size_t)(splitmix(&rs) % (o->len - 1));
            iov[1].iov_len = cut;
            iov[2].iov_base = o->p + cut;
            iov[2].iov_len = o->len - cut;
            ok = send_all(r, fd, iov, 3, 0);
        } else {
            ok = send_all(r, fd, iov, 2, 0);
        }
        size_t len = o->len;
        pthread_mutex_unlock(&o->lock);
        if (!ok)
            break;
        ring[seq % UDP_WINDOW_MSGS] = len + sizeof(h);
        atomic_store(&r->last_sent_idx[flow], i);
        atomic_store(&r->flow_sent[flow], seq);
        atomic_fetch_add(&r->sent_msgs, 1);
    }
    if (r->proto == PROTO_TCP)
        shutdown(fd, SHUT_WR);
    atomic_store(&r->flow_done[flow], true);
    atomic_fetch_sub(&r->senders_running, 1);
    thread_done(r, T_SENDER(flow));
    return NULL;
}

/* ---- mutators ---- */

static void *mutator_main(void *arg)
{
    struct sender_arg *a = arg;
    struct run *r = a->r;
    uint64_t rs = cfg_seed ^ (0x2000 + a->flow) * 0xBF58476D1CE4E5B9ull ^ (uint64_t)r->proto << 40;
    uint64_t ops = 0;
    while (!atomic_load(&r->stop_mutators) && !past(r->deadline_ns + DRAIN_GRACE_NS)) {
        /* about one change per two messages sent, so both stay busy */
        uint64_t budget = atomic_load(&r->sent_msgs) / (2 * NMUTATORS) + 16;
        if (ops >= budget) {
            tset(r, T_MUTATOR(a->flow), T_BUDGET, 0);
            atomic_fetch_add(&r->mut_waits, 1);
            pause_us(100);
            continue;
        }
        ops++;
        uint64_t pick = splitmix(&rs);
        size_t i = (pick & 1) ? (size_t)atomic_load(&r->last_sent_idx[(pick >> 1) & 1])
                              : (size_t)((pick >> 2) % r->nobj);
        struct obj *o = &r->objs[i];
        tset(r, T_MUTATOR(a->flow), T_LOCK, i);
        pthread_mutex_lock(&o->lock);
        uint64_t seed = atomic_fetch_add(&r->next_seed, 1);
        if (splitmix(&rs) % 10 < 7) {
            /* rewrite in place: caught by the protection if sealed */
            tset(r, T_MUTATOR(a->flow), T_WRITE, i);
            fast_fill(o->p, o->len, seed);
            o->seed = seed;
            atomic_fetch_add(&r->rewrites, 1);
        } else {
            size_t len = (splitmix(&rs) & 1) ? o->len : random_size(&rs, r->max_size);
            tset(r, T_MUTATOR(a->flow), T_REALLOC, i);
            const void *old_pb = zc__lookup(r->pool, o->p);
            int rc = zc_free(r->pool, o->p);
            char *p = rc ? NULL : zc_alloc(r->pool, len);
            if (!p) {
                o->p = NULL;
                pthread_mutex_unlock(&o->lock);
                run_fail(r, "mutator: zc_free: %s / zc_alloc(%zu): %s", zc_strerror(rc), len,
                         strerror(errno));
                break;
            }
            if (zc__lookup(r->pool, p) == old_pb)
                atomic_fetch_add(&r->realloc_same_pb, 1);
            tset(r, T_MUTATOR(a->flow), T_WRITE, i);
            fast_fill(p, len, seed);
            o->p = p;
            o->len = len;
            o->seed = seed;
            atomic_fetch_add(&r->reallocs, 1);
        }
        tset(r, T_MUTATOR(a->flow), T_SEAL, i);
        int rc = zc_seal(r->pool, o->p);
        pthread_mutex_unlock(&o->lock);
        if (rc) {
            run_fail(r, "mutator: zc_seal: %s", zc_strerror(rc));
            break;
        }
    }
    thread_done(r, T_MUTATOR(a->flow));
    return NULL;
}

/* ---- receivers ---- */

static void report_mismatch(struct run *r, const struct msg_hdr *h, const uint8_t *body,
                            size_t got)
{
    atomic_fetch_add(&r->mismatches, 1);
    if (atomic_fetch_add(&r->reported, 1) >= MAX_REPORTED)
        return;
    size_t at = pattern_check(body, got, h->seed, 0);
    /* which seed, if any, do the bytes at the first bad offset match? */
    fprintf(stderr,
            "MISMATCH %s %s %s: flow %u seq %llu object %llu len %llu seed %llu: first bad "
            "byte at %zu (got 0x%02x, want 0x%02x)%s\n",
            r->backend, path_names[r->path], proto_names[r->proto], h->flow,
            (unsigned long long)h->seq, (unsigned long long)h->idx,
            (unsigned long long)h->len, (unsigned long long)h->seed, at,
            at < got ? body[at] : 0,
            at < got ? (unsigned)(uint8_t)(pat_word(h->seed, at / 8) >> (at % 8 * 8)) : 0,
            got < h->len ? " (short datagram)" : "");
}

static bool hdr_ok(struct run *r, unsigned flow, const struct msg_hdr *h)
{
    return h->magic == MSG_MAGIC && h->flow == flow && h->len <= r->max_size &&
           h->check == hdr_check(h);
}

/* Read exactly n bytes; false on EOF, error or time limit. */
static bool read_exact(struct run *r, int fd, void *buf, size_t n, bool *eof)
{
    size_t got = 0;
    uint64_t limit = r->deadline_ns + DRAIN_GRACE_NS;
    while (got < n) {
        ssize_t k = recv(fd, (char *)buf + got, n - got, 0);
        if (k > 0) {
            got += (size_t)k;
            continue;
        }
        if (k == 0) {
            *eof = true;
            return false;
        }
        if ((errno == EINTR || errno == EAGAIN) && !past(limit))
            continue; /* SO_RCVTIMEO expired: the loop is bounded by limit */
        return false;
    }
    return true;
}

static void tcp_receive(struct run *r, unsigned flow, uint8_t *buf)
{
    int fd = r->rx[flow];
    uint64_t expect = 1;
    for (;;) {
        struct msg_hdr h;
        bool eof = false;
        tset(r, T_RECEIVER(flow), T_RECV, expect);
        if (!read_exact(r, fd, &h, sizeof(h), &eof)) {
            if (!eof)
                run_fail(r, "TCP flow %u: receive stopped before EOF at seq %llu: %s", flow,
                         (unsigned long long)expect, strerror(errno));
            else if (expect - 1 != atomic_load(&r->flow_sent[flow]))
                run_fail(r, "TCP flow %u: EOF after %llu messages, %llu sent", flow,
                         (unsigned long long)(expect - 1),
                         (unsigned long long)atomic_load(&r->flow_sent[flow]));
            return;
        }
        if (!hdr_ok(r, flow, &h) || h.seq != expect) {
            atomic_fetch_add(&r->mismatches, 1);
            run_fail(r, "TCP flow %u: bad header at message %llu (magic %08x seq %llu len %llu):"
                     " stream out of step", flow, (unsigned long long)expect, h.magic,
                     (unsigned long long)h.seq, (unsigned long long)h.len);
            /* keep draining so that the senders never block */
            while (recv(fd, buf, TCP_MAX_SIZE, 0) > 0 && !past(r->deadline_ns + DRAIN_GRACE_NS))
                ;
            return;
        }
        if (!read_exact(r, fd, buf, h.len, &eof)) {
            run_fail(r, "TCP flow %u: message %llu cut short (%s)", flow,
                     (unsigned long long)h.seq, eof ? "EOF" : strerror(errno));
            return;
        }
        tset(r, T_RECEIVER(flow), T_CHECK, h.seq);
        if (!fast_check(buf, h.len, h.seed))
            report_mismatch(r, &h, buf, h.len);
        expect++;
        atomic_store(&r->flow_rx_seq[flow], h.seq);
        atomic_fetch_add(&r->bytes_checked, sizeof(h) + h.len);
        atomic_fetch_add(&r->checked, 1);
    }
}

static void udp_receive(struct run *r, unsigned flow, uint8_t *buf)
{
    int fd = r->rx[flow];
    uint64_t last = 0, idle_since = 0;
    size_t cap = sizeof(struct msg_hdr) + UDP_MAX_SIZE + 1;
    for (;;) {
        tset(r, T_RECEIVER(flow), T_RECV, last);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int pr = poll(&p, 1, 50);
        uint64_t now = test_now_ns();
        if (pr <= 0) {
            bool done = atomic_load(&r->flow_done[flow]);
            if (done && last >= atomic_load(&r->flow_sent[flow]))
                break;
            if (done && !idle_since)
                idle_since = now;
            if ((idle_since && now - idle_since > 500ull * 1000000ull) ||
                now >= r->deadline_ns + DRAIN_GRACE_NS)
                break; /* the rest was lost */
            continue;
        }
        ssize_t n = recv(fd, buf, cap, MSG_DONTWAIT);
        if (n < 0)
            continue;
        struct msg_hdr h;
        if ((size_t)n < sizeof(h)) {
            atomic_fetch_add(&r->mismatches, 1);
            run_fail(r, "UDP flow %u: runt datagram of %zd bytes", flow, n);
            continue;
        }
        memcpy(&h, buf, sizeof(h));
        if (!hdr_ok(r, flow, &h)) {
            atomic_fetch_add(&r->mismatches, 1);
            run_fail(r, "UDP flow %u: bad header after seq %llu", flow, (unsigned long long)last);
            continue;
        }
        size_t body = (size_t)n - sizeof(h);
        if (body != h.len || !fast_check(buf + sizeof(h), body, h.seed))
            report_mismatch(r, &h, buf + sizeof(h), body);
        if (h.seq > last) {
            atomic_fetch_add(&r->lost, h.seq - last - 1);
            last = h.seq;
            atomic_store(&r->flow_rx_seq[flow], last);
        } else {
            atomic_fetch_add(&r->reordered, 1);
        }
        atomic_fetch_add(&r->bytes_checked, (uint64_t)n);
        atomic_fetch_add(&r->checked, 1);
    }
    uint64_t sent = atomic_load(&r->flow_sent[flow]);
    if (sent > last)
        atomic_fetch_add(&r->lost, sent - last);
}

static void *receiver_main(void *arg)
{
    struct sender_arg *a = arg;
    struct run *r = a->r;
    uint8_t *buf = malloc(TCP_MAX_SIZE + 4096);
    if (!buf)
        run_fail(r, "receiver: out of memory");
    else if (r->proto == PROTO_TCP)
        tcp_receive(r, a->flow, buf);
    else
        udp_receive(r, a->flow, buf);
    free(buf);
    thread_done(r, T_RECEIVER(a->flow));
    return NULL;
}

/* ---- sockets: on 127.0.0.1, or between the two namespaces ---- */

static void set_timeouts(int fd)
{
    struct timeval tv = { SEND_TIMEOUT_S, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

/* Make the socket in namespace @ns (NULL: this one). */
static int socket_in(const char *ns, int type)
{
    int saved = -1;
    if (ns && zc_netns_enter(ns, &saved))
        return -1;
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    int e = errno;
    if (ns && zc_netns_leave(saved)) {
        /* this thread would stay in the wrong namespace: fatal for the run */
        fail_msg("cannot return from namespace %s: %s", ns, strerror(errno));
    }
    errno = e;
    return fd;
}

static void make_pairs(struct run *r)
{
    if (r->path == PATH_LOOPBACK) {
        for (int f = 0; f < NSENDERS; f++) {
            if (r->proto == PROTO_TCP)
                tcp_pair(&r->tx[f], &r->rx[f]);
            else
                udp_pair(&r->tx[f], &r->rx[f]);
        }
    } else {
        struct sockaddr_in rxa = { .sin_family = AF_INET };
        assert_int_equal(inet_pton(AF_INET, netns_pair.addr_rx, &rxa.sin_addr), 1);
        for (int f = 0; f < NSENDERS; f++) {
            int type = r->proto == PROTO_TCP ? SOCK_STREAM : SOCK_DGRAM;
            int l = socket_in(netns_pair.ns_rx, type);
            assert_true(l >= 0);
            struct sockaddr_in a = rxa;
            socklen_t alen = sizeof(a);
            assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
            assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
            int t = socket_in(netns_pair.ns_tx, type);
            assert_true(t >= 0);
            if (r->proto == PROTO_TCP) {
                assert_int_equal(listen(l, 1), 0);
                assert_int_equal(connect(t, (struct sockaddr *)&a, sizeof(a)), 0);
                int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
                assert_true(s >= 0);
                close(l);
                int one = 1;
                setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                r->tx[f] = t;
                r->rx[f] = s;
            } else {
                int big = 4 << 20;
                setsockopt(l, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
                assert_int_equal(connect(t, (struct sockaddr *)&a, sizeof(a)), 0);
                r->tx[f] = t;
                r->rx[f] = l;
            }
        }
    }
    for (int f = 0; f < NSENDERS; f++) {
        set_timeouts(r->tx[f]);
        set_timeouts(r->rx[f]);
    }
}

/* ---- the run ---- */

/* A run that makes no progress, or outlives every time limit, is stuck in a
 * place no test loop controls (a write fault that never completes, a send
 * that never returns): say where each thread is, then abort. */
static void watchdog_fire(struct run *r, const char *why)
{
    struct zc_stats st;
    memset(&st, 0, sizeof(st));
    zc_stats(r->pool, &st);
    static const char *const role[] = { "sender", "mutator", "receiver" };
    fprintf(stderr, "WATCHDOG: %s %s %s: %s; %llu messages checked, %llu sent, %llu rewrites, "
            "%llu reallocs\n", r->backend, path_names[r->path], proto_names[r->proto], why,
            (unsigned long long)r->checked, (unsigned long long)r->sent_msgs,
            (unsigned long long)r->rewrites, (unsigned long long)r->reallocs);
    for (unsigned t = 0; t < NTHREADS; t++) {
        unsigned kind = t < NSENDERS ? 0 : t < NSENDERS + NMUTATORS ? 1 : 2;
        unsigned idx = kind == 0 ? t : kind == 1 ? t - NSENDERS : t - NSENDERS - NMUTATORS;
        uint32_t ts = atomic_load(&r->tstate[t]);
        fprintf(stderr, "WATCHDOG:   %s %u: %s (%s %llu)\n", role[kind], idx,
                tstate_names[ts < T_DONE ? ts : T_DONE],
                kind == 2 ? "seq" : ts == T_WINDOW ? "seq" : "object",
                (unsigned long long)atomic_load(&r->tobj[t]));
    }
    fprintf(stderr, "WATCHDOG:   pool: in_flight=%llu sends=%llu bytes_zerocopy=%llu "
            "completions=%llu completions_copied=%llu protect_faults=%llu protect_waits=%llu "
            "protects=%llu unprotects=%llu pageblocks_protected=%llu large_protected=%llu\n",
            (unsigned long long)st.in_flight, (unsigned long long)st.sends,
            (unsigned long long)st.bytes_zerocopy, (unsigned long long)st.completions,
            (unsigned long long)st.completions_copied, (unsigned long long)st.protect_faults,
            (unsigned long long)st.protect_waits, (unsigned long long)st.protects,
            (unsigned long long)st.unprotects, (unsigned long long)st.pageblocks_protected,
            (unsigned long long)st.large_protected);
    fflush(stderr);
    cleanup_netns();
    abort();
}

/* Wait for every worker, within the run's time limits. */
static void wait_workers(struct run *r)
{
    uint64_t hard = r->deadline_ns + DRAIN_GRACE_NS + 15ull * 1000000000ull;
    uint64_t last_change = test_now_ns(), last_progress = 0;
    pthread_mutex_lock(&r->done_lock);
    while (r->threads_left > 0) {
        if (atomic_load(&r->senders_running) == 0)
            atomic_store(&r->stop_mutators, true);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->done_cond, &r->done_lock, &ts);
        uint64_t now = test_now_ns();
        uint64_t progress = atomic_load(&r->checked) + atomic_load(&r->sent_msgs) +
                            atomic_load(&r->rewrites) + atomic_load(&r->reallocs) +
                            (uint64_t)r->threads_left;
        if (progress != last_progress) {
            last_progress = progress;
            last_change = now;
        }
        char why[96] = "";
        if (now >= hard)
            snprintf(why, sizeof(why), "still running %.0f s after its time limit",
                     (double)(now - r->deadline_ns) / 1e9);
        else if (now - last_change >= cfg_stall_ns)
            snprintf(why, sizeof(why), "no progress for %.0f s",
                     (double)(now - last_change) / 1e9);
        if (why[0]) {
            pthread_mutex_unlock(&r->done_lock);
            watchdog_fire(r, why);
        }
    }
    pthread_mutex_unlock(&r->done_lock);
}

static void print_line(const struct run *r, double secs, const struct zc_stats *st)
{
    printf("integrity: backend=%s path=%s proto=%s messages=%llu bytes=%llu mismatches=%llu "
           "lost=%llu reordered=%llu seconds=%.1f MB/s=%.0f | bytes_zerocopy=%llu "
           "bytes_copied=%llu protect_faults=%llu protect_waits=%llu completions=%llu "
           "completions_copied=%llu fallbacks=%llu protects=%llu | rewrites=%llu "
           "reallocs=%llu realloc_same_pageblock=%llu send_retries=%llu%s%s udp_stalls=%llu\n",
           r->backend, path_names[r->path], proto_names[r->proto],
           (unsigned long long)r->checked, (unsigned long long)r->bytes_checked,
           (unsigned long long)r->mismatches, (unsigned long long)r->lost,
           (unsigned long long)r->reordered, secs,
           secs > 0 ? (double)r->bytes_checked / secs / 1e6 : 0.0,
           (unsigned long long)st->bytes_zerocopy, (unsigned long long)st->bytes_copied,
           (unsigned long long)st->protect_faults, (unsigned long long)st->protect_waits,
           (unsigned long long)st->completions, (unsigned long long)st->completions_copied,
           (unsigned long long)st->fallbacks, (unsigned long long)st->protects,
           (unsigned long long)r->rewrites, (unsigned long long)r->reallocs,
           (unsigned long long)r->realloc_same_pb, (unsigned long long)r->send_retries,
           r->send_retries ? "/last:" : "",
           r->send_retries ? strerrorname_np(r->retry_errno) : "",
           (unsigned long long)r->udp_stalls);
    fflush(stdout);
}

static void integrity_run(const char *backend, enum path path, enum proto proto, uint64_t target)
{
    struct run *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    r->backend = backend;
    r->path = path;
    r->proto = proto;
    r->target = target;
    r->max_size = proto == PROTO_TCP ? TCP_MAX_SIZE : UDP_MAX_SIZE;
    r->nobj = proto == PROTO_TCP ? TCP_NOBJ : UDP_NOBJ;
    pthread_mutex_init(&r->err_lock, NULL);
    pthread_mutex_init(&r->done_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->done_cond, &ca);
    pthread_condattr_destroy(&ca);
    r->threads_left = NTHREADS;
    atomic_store(&r->next_seed, cfg_seed * 1000003u + (uint64_t)path * 7919u + proto);

    r->pool = test_pool_pageblock(backend, ZC_POOL_PROTECT, (size_t)1 << 30,
                                  (size_t)cfg_pageblock);
    assert_non_null(r->pool);
    assert_string_equal(zc_backend_name(r->pool), backend);

    /* the objects: random sizes, filled, sealed */
    uint64_t rs = cfg_seed ^ 0xabcdefull ^ (uint64_t)proto << 32 ^ (uint64_t)path << 48;
    r->objs = calloc(r->nobj, sizeof(*r->objs));
    assert_non_null(r->objs);
    for (size_t i = 0; i < r->nobj; i++) {
        struct obj *o = &r->objs[i];
        pthread_mutex_init(&o->lock, NULL);
        o->len = random_size(&rs, r->max_size);
        o->p = zc_alloc(r->pool, o->len);
        assert_non_null(o->p);
        o->seed = atomic_fetch_add(&r->next_seed, 1);
        fast_fill(o->p, o->len, o->seed);
        assert_int_equal(zc_seal(r->pool, o->p), 0);
    }
    make_pairs(r);

    uint64_t t0 = test_now_ns();
    r->deadline_ns = t0 + cfg_timeout_ns;
    pthread_t snd[NSENDERS], mut[NMUTATORS], rcv[NSENDERS];
    struct sender_arg args[NSENDERS], margs[NMUTATORS];
    atomic_store(&r->senders_running, NSENDERS);
    for (unsigned f = 0; f < NSENDERS; f++) {
        args[f] = (struct sender_arg){ r, f };
        assert_int_equal(pthread_create(&rcv[f], NULL, receiver_main, &args[f]), 0);
    }
    for (unsigned m = 0; m < NMUTATORS; m++) {
        margs[m] = (struct sender_arg){ r, m };
        assert_int_equal(pthread_create(&mut[m], NULL, mutator_main, &margs[m]), 0);
    }
    for (unsigned f = 0; f < NSENDERS; f++)
        assert_int_equal(pthread_create(&snd[f], NULL, sender_main, &args[f]), 0);

    wait_workers(r);
    for (unsigned f = 0; f < NSENDERS; f++)
        pthread_join(snd[f], NULL);
    for (unsigned m = 0; m < NMUTATORS; m++)
        pthread_join(mut[m], NULL);
    for (unsigned f = 0; f < NSENDERS; f++)
        pthread_join(rcv[f], NULL);
    double secs = (double)(test_now_ns() - t0) / 1e9;

    for (int f = 0; f < NSENDERS; f++) {
        close(r->tx[f]);
        close(r->rx[f]);
    }
    for (size_t i = 0; i < r->nobj; i++) {
        if (r->objs[i].p && zc_free(r->pool, r->objs[i].p) != 0)
            run_fail(r, "zc_free of object %zu failed at the end", i);
        pthread_mutex_destroy(&r->objs[i].lock);
    }
    zc_poll(r->pool, 100);
    struct zc_stats st;
    assert_int_equal(zc_stats(r->pool, &st), 0);
    print_line(r, secs, &st);
    int drc = zc_pool_destroy(r->pool);

    bool failed = atomic_load(&r->failed);
    char err[sizeof(r->err)];
    memcpy(err, r->err, sizeof(err));
    uint64_t checked = r->checked, mismatches = r->mismatches, lost = r->lost;
    uint64_t sent_bytes = r->sent_bytes, faults = st.protect_faults;
    uint64_t accounted = st.bytes_zerocopy + st.bytes_copied;
    free(r->objs);
    pthread_mutex_destroy(&r->err_lock);
    pthread_mutex_destroy(&r->done_lock);
    pthread_cond_destroy(&r->done_cond);
    free(r);

    if (failed)
        fail_msg("%s %s %s: %s", backend, path_names[path], proto_names[proto], err);
    assert_int_equal(mismatches, 0);
    assert_int_equal(drc, 0);
    assert_true(checked >= target);
    /* UDP may drop a datagram now and then; more means we checked less
     * than we claim */
    if (proto == PROTO_UDP && lost * 20 > checked)
        fail_msg("UDP lost %llu datagrams for %llu checked (over 5%%)",
                 (unsigned long long)lost, (unsigned long long)checked);
    /* every byte handed to the kernel was counted once, copied or not */
    assert_int_equal(accounted, sent_bytes);
    /* the rewrites of sealed objects went through the write-fault path */
    assert_true(faults > 0);
}

/* ---- cmocka: one group per backend, one test per path and protocol ---- */

struct plan {
    const char *backend;
    uint64_t per_run;
};

static struct plan current;

static void tcp_loopback(void **state)
{
    (void)state;
    integrity_run(current.backend, PATH_LOOPBACK, PROTO_TCP, current.per_run);
}

static void udp_loopback(void **state)
{
    (void)state;
    integrity_run(current.backend, PATH_LOOPBACK, PROTO_UDP, current.per_run);
}

/* Over veth+XDP: skipped, with the reason, only where namespaces cannot be made. */
static void veth_run(enum proto proto)
{
    if (netns_broken)
        fail_msg("veth+XDP topology could not be set up: %s", netns_skip);
    if (!netns_up) {
        printf("SKIP: veth+XDP: %s\n", netns_skip);
        skip();
    }
    integrity_run(current.backend, PATH_VETH, proto, current.per_run);
}

static void tcp_veth(void **state)
{
    (void)state;
    veth_run(PROTO_TCP);
}

static void udp_veth(void **state)
{
    (void)state;
    veth_run(PROTO_UDP);
}

/* The word-wise pattern is the one of common.c, byte for byte. */
static void pattern_is_common_pattern(void **state)
{
    (void)state;
    uint8_t buf[1000] = { 0 };
    for (size_t n = 0; n <= sizeof(buf); n += 37) {
        fast_fill(buf, n, 12345 + n);
        assert_int_equal(pattern_check(buf, n, 12345 + n, 0), (size_t)-1);
        assert_true(fast_check(buf, n, 12345 + n));
        if (n) {
            buf[n - 1] ^= 1;
            assert_false(fast_check(buf, n, 12345 + n));
        }
    }
    uint64_t rs = 1;
    size_t lo = (size_t)-1, hi = 0;
    for (int i = 0; i < 100000; i++) {
        size_t s = random_size(&rs, TCP_MAX_SIZE);
        assert_true(s >= 1 && s <= TCP_MAX_SIZE);
        lo = s < lo ? s : lo;
        hi = s > hi ? s : hi;
        s = random_size(&rs, UDP_MAX_SIZE);
        assert_true(s >= 1 && s <= UDP_MAX_SIZE);
    }
    assert_int_equal(lo, 1);
    assert_true(hi > TCP_MAX_SIZE - TCP_MAX_SIZE / 64);
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
    const char *s = getenv(name);
    if (!s || !*s)
        return dflt;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || !v) {
        fprintf(stderr, "%s=\"%s\": want a positive number; using %llu\n", name, s,
                (unsigned long long)dflt);
        return dflt;
    }
    return v;
}

/* The parent process made the namespaces and removes them, at its exit or
 * on a signal; a child (one backend) never does. */
static void cleanup_netns(void)
{
    if (netns_up && !is_child && !atomic_exchange(&netns_removed, true))
        zc_netns_pair_destroy(&netns_pair);
}

/* Each backend runs in a child process: a backend that hangs (the watchdog
 * aborts the child) or crashes does not stop the others, and the parent
 * still removes the namespaces. SIGINT/SIGTERM/SIGHUP reach the parent as
 * a flag; it then kills the child, cleans up and exits. */
static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
}

static void parent_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal; /* no SA_RESTART: waits return early */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static void child_signals(void)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
}

/* Run one backend's group in a child; true if it passed. */
static bool run_backend_child(const char *backend, const struct CMUnitTest *tests, size_t n,
                              unsigned runs)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        printf("FAIL: backend %s: fork: %s\n", backend, strerror(errno));
        return false;
    }
    if (pid == 0) {
        is_child = true;
        child_signals();
        char name[64];
        snprintf(name, sizeof(name), "integrity/%s", backend);
        int failed = _cmocka_run_group_tests(name, tests, n, NULL, NULL);
        fflush(stdout);
        exit(failed ? 1 : 0);
    }
    /* the child's own watchdog ends a stuck run; this bounds the child
     * even if that fails */
    uint64_t start = test_now_ns();
    uint64_t limit = start +
                     runs * (cfg_timeout_ns + DRAIN_GRACE_NS + 30ull * 1000000000ull) +
                     60ull * 1000000000ull;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            printf("FAIL: backend %s: waitpid: %s\n", backend, strerror(errno));
            return false;
        }
        if (got_signal || test_now_ns() >= limit) {
            if (got_signal)
                fprintf(stderr, "integrity: signal %d: stopping backend %s, removing the "
                        "namespaces\n", (int)got_signal, backend);
            else
                printf("FAIL: backend %s: still running after %.0f s; killed\n", backend,
                       (double)(limit - start) / 1e9);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            if (got_signal) {
                cleanup_netns();
                _exit(128 + got_signal);
            }
            return false;
        }
        pause_us(100 * 1000);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return true;
    if (WIFSIGNALED(status))
        printf("FAIL: backend %s: the test process died of signal %d (%s)%s\n", backend,
               WTERMSIG(status), strsignal(WTERMSIG(status)),
               WTERMSIG(status) == SIGABRT ? ": see WATCHDOG or assertion lines above" : "");
    else
        printf("FAIL: backend %s: exit status %d\n", backend, WEXITSTATUS(status));
    return false;
}

static void setup_netns(void)
{
    int n = zc_netns_reap_stale();
    if (n > 0)
        printf("netns: removed %d namespaces left by dead test processes\n", n);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    napi_cpu = cpus > 1 ? 1 : -1;
    int rc = zc_netns_pair_create(&netns_pair, ZC_NETNS_DEFAULT, napi_cpu, netns_skip,
                                  sizeof(netns_skip));
    if (rc == ZC_NETNS_OK) {
        netns_up = true;
        atexit(cleanup_netns);
        printf("netns: %s (%s %s) -> %s (%s %s, XDP_PASS, threaded NAPI pid %d on CPU %d)\n",
               netns_pair.ns_tx, netns_pair.dev_tx, netns_pair.addr_tx, netns_pair.ns_rx,
               netns_pair.dev_rx, netns_pair.addr_rx, netns_pair.napi_pid, napi_cpu);
        return;
    }
    if (rc == ZC_NETNS_ERROR) {
        /* made but broken: that is a failure of the test, not a skip */
        zc_netns_pair_destroy(&netns_pair);
        netns_broken = true;
        printf("FAIL: veth+XDP topology could not be set up: %s\n", netns_skip);
        return;
    }
    printf("SKIP: veth+XDP runs: namespaces cannot be made here: %s\n", netns_skip);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    parent_signals();
    cfg_messages = env_u64("ZC_INTEGRITY_MESSAGES", 200000 / TEST_SCALE_DIV);
    cfg_timeout_ns = env_u64("ZC_INTEGRITY_TIMEOUT", 120) * 1000000000ull;
    cfg_stall_ns = env_u64("ZC_INTEGRITY_STALL", 30) * 1000000000ull;
    cfg_seed = env_u64("ZC_INTEGRITY_SEED", (uint64_t)time(NULL));
    cfg_pageblock = env_u64("ZC_INTEGRITY_PAGEBLOCK", 0);
    const char *paths = getenv("ZC_INTEGRITY_PATHS");
    if (!paths || !*paths)
        paths = "loopback,veth";
    cfg_paths[PATH_LOOPBACK] = strstr(paths, "loopback") != NULL;
    cfg_paths[PATH_VETH] = strstr(paths, "veth") != NULL;
    char pb_text[32] = "the default size";
    if (cfg_pageblock)
        snprintf(pb_text, sizeof(pb_text), "%llu bytes", (unsigned long long)cfg_pageblock);
    printf("integrity: seed %llu (ZC_INTEGRITY_SEED), %llu messages per backend "
           "(ZC_INTEGRITY_MESSAGES), %llu s per run at most, paths %s, pageblocks of %s\n",
           (unsigned long long)cfg_seed, (unsigned long long)cfg_messages,
           (unsigned long long)(cfg_timeout_ns / 1000000000ull), paths, pb_text);

    /* the backends under test */
    const char *chosen[16];
    size_t nchosen = 0;
    char listbuf[256] = "";
    const char *want = getenv("ZC_TEST_BACKEND");
    if (want && *want) {
        snprintf(listbuf, sizeof(listbuf), "%s", want);
        for (char *save = NULL, *t = strtok_r(listbuf, ",", &save); t && nchosen < 16;
             t = strtok_r(NULL, ",", &save))
            chosen[nchosen++] = t;
    } else {
        for (const char *const *b = zc_backend_list(); *b && nchosen < 16; b++) {
            char why[256];
            int rc = zc_backend_probe(*b, why, sizeof(why));
            if (rc == 0)
                chosen[nchosen++] = *b;
            else
                printf("SKIP: backend %s: %s (%s)\n", *b, why, zc_strerror(rc));
        }
    }

    if (cfg_paths[PATH_VETH])
        setup_netns();
    else
        snprintf(netns_skip, sizeof(netns_skip), "not asked for (ZC_INTEGRITY_PATHS=%s)", paths);

    const struct CMUnitTest self[] = { cmocka_unit_test(pattern_is_common_pattern) };
    int failed = cmocka_run_group_tests_name("integrity/self", self, NULL, NULL);

    unsigned runs = (cfg_paths[PATH_LOOPBACK] ? 2u : 0u) + (netns_up || netns_broken ? 2u : 0u);
    for (size_t b = 0; b < nchosen && runs; b++) {
        current.backend = chosen[b];
        current.per_run = (cfg_messages + runs - 1) / runs;
        printf("integrity: backend %s: %u runs of %llu messages\n", chosen[b], runs,
               (unsigned long long)current.per_run);
        struct CMUnitTest tests[4];
        size_t n = 0;
        if (cfg_paths[PATH_LOOPBACK]) {
            tests[n++] = (struct CMUnitTest)cmocka_unit_test(tcp_loopback);
            tests[n++] = (struct CMUnitTest)cmocka_unit_test(udp_loopback);
        }
        if (cfg_paths[PATH_VETH]) {
            tests[n++] = (struct CMUnitTest)cmocka_unit_test(tcp_veth);
            tests[n++] = (struct CMUnitTest)cmocka_unit_test(udp_veth);
        }
        uint64_t t0 = test_now_ns();
        bool ok = run_backend_child(chosen[b], tests, n, runs);
        printf("integrity: backend %s: %s in %.1f s\n", chosen[b], ok ? "passed" : "FAILED",
               (double)(test_now_ns() - t0) / 1e9);
        failed += !ok;
    }
    if (!runs)
        printf("integrity: no path to run on\n");
    cleanup_netns();
    return failed ? 1 : 0;
}
