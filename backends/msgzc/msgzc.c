/* SPDX-License-Identifier: MIT */
/*
 * The MSG_ZEROCOPY backend: SO_ZEROCOPY on a socket's first zero-copy send,
 * sendmsg(MSG_ZEROCOPY), completions read from the socket's error queue as
 * ranges of send ids and mapped back to the requests (and so to their
 * pageblocks).
 *
 * Sockets are known by SO_COOKIE, not by descriptor number, which the
 * application may close and reuse. While sends are due, the backend holds a
 * duplicate of the descriptor: completions arrive on the socket's error
 * queue only, and a socket closed before they are read would leave the
 * pageblocks in flight forever. The application's close therefore takes
 * effect once the last completion is read (normally one round trip).
 *
 * The id counting mirrors the kernel's: each sendmsg(MSG_ZEROCOPY) that
 * sends a byte takes the next id. Do not mix zcopy's zero-copy sends with
 * the application's own MSG_ZEROCOPY sends on one socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../lib/internal.h"

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

/* Parts below these are copied: over TCP, MSG_ZEROCOPY costs more than a
 * copy below about 16 KiB (bench/zcbench/RESULTS-raw.md); over UDP on the
 * veth at MTU 65535 this backend cost 1.13x send(2) at 32 KiB, 1.05x at
 * 40 KiB, 0.99x at 48 KiB and 0.91x at 60 KiB (2026-12-06, 30 paired runs,
 * docs/performance.md). */
#define MZ_THRESHOLD ((size_t)16 << 10)
#define MZ_THRESHOLD_DGRAM ((size_t)48 << 10)
/* A socket found copying is switched by descriptor (lib/copyswitch.c), so
 * that the sends of its streak skip the lookup by cookie (a getsockopt per
 * send: 1.31x send(2) for 60 KiB UDP datagrams over loopback); past the
 * switch's descriptors, by socket, for this many sends. */
#define MZ_COPY_STREAK 64

struct mz_req {
    struct mz_req *next;
    uint32_t id;
    size_t bytes;
    void *bounce;
    uint32_t npb;
    struct zc_pageblock *pb[];
};

struct mz_sock {
    struct mz_sock *next;
    uint64_t cookie;
    int dupfd;             /* held while requests are due */
    uint32_t next_id;      /* the kernel's next zero-copy id on this socket */
    int fd;                /* the descriptor it was last sent through */
    unsigned copy_streak;  /* sends left by copy before zero-copy is retried
                            * (descriptors past the copy switch's) */
    bool retrying;         /* a streak ended: reap at every send until a large
                            * send's completion says whether it still copies */
    unsigned hist;         /* recent large sends: bit set if copied */
    unsigned outstanding;  /* requests due */
    unsigned samples;
    struct mz_req *head, *tail; /* due, in id order */
    pthread_mutex_t lock;
};

/* Sockets are remembered while idle too: the kernel's id count goes on.
 * Past MZ_MAX_SOCKS, idle ones leave the table but their next id stays in
 * a direct-mapped table of MZ_GRAVES (completions may come out of order,
 * so the count cannot be learnt back from them). */
#define MZ_MAX_SOCKS 4096
#define MZ_BUCKETS 256
#define MZ_GRAVES 65536

struct mz_grave {
    uint64_t cookie;
    uint32_t next_id;
};

struct mz_pool {
    pthread_mutex_t lock; /* the socket table */
    struct mz_sock *buckets[MZ_BUCKETS];
    unsigned nsocks;
    struct mz_grave *graves; /* made at the first eviction */
    struct zc_copy_switch sw; /* sockets found copying, by descriptor */
};

/* Socket lock held: send by copy for a streak. */
static void start_streak(struct mz_pool *st, struct mz_sock *s)
{
    s->retrying = false;
    if (s->fd >= 0 && s->fd < ZC_SWITCH_FDS)
        zc__switch_start(&st->sw, s->fd, s->cookie);
    else
        s->copy_streak = MZ_COPY_STREAK;
}

static unsigned bucket_of(uint64_t cookie)
{
    return (unsigned)((cookie * 0x9E3779B97F4A7C15ull) >> 56) % MZ_BUCKETS;
}

static unsigned grave_of(uint64_t cookie)
{
    return (unsigned)((cookie * 0x9E3779B97F4A7C15ull) >> 48) % MZ_GRAVES;
}

static int mz_probe(char *why, size_t why_len)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, why_len, "socket: %s", strerror(errno));
        return -errno;
    }
    int one = 1, rc = 0;
    if (setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one))) {
        rc = -errno;
        snprintf(why, why_len, "SO_ZEROCOPY: %s", strerror(errno));
    } else {
        uint64_t cookie;
        socklen_t len = sizeof(cookie);
        if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len)) {
            rc = -errno;
            snprintf(why, why_len, "SO_COOKIE: %s", strerror(errno));
        } else {
            snprintf(why, why_len, "ok");
        }
    }
    close(fd);
    return rc;
}

static int mz_init(struct zc_pool *pool, char *why, size_t why_len)
{
    (void)why;
    (void)why_len;
    struct mz_pool *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    pthread_mutex_init(&st->lock, NULL);
    pool->backend = st;
    return 0;
}

static void req_finish(struct zc_pool *pool, struct mz_req *req)
{
    for (uint32_t i = 0; i < req->npb; i++)
        zc__inflight_drop(pool, req->pb[i]);
    free(req->bounce);
    free(req);
}

/* True when most recent large sends of @s were copied by the kernel (a
 * single copied one can be a retransmitted clone on a zero-copy path). */
static bool note_large(struct mz_sock *s, bool copied)
{
    if (s->samples < 8)
        s->samples++;
    s->hist = ((s->hist << 1) | copied) & ((1u << s->samples) - 1);
    /* the history stays: after a streak, one more copied send is enough */
    return s->samples >= 4 && 4 * (unsigned)__builtin_popcount(s->hist) >= 3 * s->samples;
}

/* Read the error queue; complete the requests it names. Socket lock held. */
static int reap_sock(struct zc_pool *pool, struct mz_sock *s)
{
    struct mz_pool *st = pool->backend;
    int n = 0;
    while (s->head) {
        char control[128];
        struct msghdr msg = { .msg_control = control, .msg_controllen = sizeof(control) };
        if (recvmsg(s->dupfd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0)
            break;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
                  (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
                continue;
            struct sock_extended_err ee;
            memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
            if (ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY || ee.ee_errno != 0)
                continue;
            uint32_t lo = ee.ee_info, hi = ee.ee_data;
            bool copied = ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED;
            /* ids complete in ranges, possibly out of order between ranges */
            struct mz_req **link = &s->head, *prev = NULL;
            while (*link) {
                struct mz_req *r = *link;
                if ((uint32_t)(r->id - lo) <= (uint32_t)(hi - lo)) {
                    *link = r->next;
                    if (s->tail == r)
                        s->tail = prev;
                    ZC_STAT_ADD(pool, completions, 1);
                    s->outstanding--;
                    if (copied)
                        ZC_STAT_ADD(pool, completions_copied, 1);
                    if (r->bytes >= MZ_THRESHOLD && !copied) {
                        s->retrying = false;
                        zc__switch_zerocopy_seen(&st->sw, s->fd);
                    }
                    if (r->bytes >= MZ_THRESHOLD && note_large(s, copied)) {
                        start_streak(st, s);
                        ZC_LOG("socket cookie %llu: the kernel copied most large zero-copy "
                               "sends; copying from now on",
                               (unsigned long long)s->cookie);
                    }
                    req_finish(pool, r);
                    n++;
                } else {
                    prev = r;
                    link = &r->next;
                }
            }
        }
    }
    return n;
}

static int mz_poll(struct zc_pool *pool, int timeout_ms)
{
    struct mz_pool *st = pool->backend;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int n = 0;
        bool due = false;
        pthread_mutex_lock(&st->lock);
        for (unsigned b = 0; b < MZ_BUCKETS; b++) {
            struct mz_sock **link = &st->buckets[b];
            while (*link) {
                struct mz_sock *s = *link;
                if (pthread_mutex_trylock(&s->lock) == 0) {
                    n += reap_sock(pool, s);
                    bool idle = !s->head;
                    if (idle && s->dupfd >= 0) {
                        close(s->dupfd); /* the application's close may now finish */
                        s->dupfd = -1;
                    }
                    pthread_mutex_unlock(&s->lock);
                    if (idle && st->nsocks > MZ_MAX_SOCKS) {
                        if (!st->graves)
                            st->graves = calloc(MZ_GRAVES, sizeof(*st->graves));
                        if (!st->graves) {
                            link = &s->next;
                            continue;
                        }
                        struct mz_grave *g = &st->graves[grave_of(s->cookie)];
                        g->cookie = s->cookie;
                        g->next_id = s->next_id;
                        *link = s->next;
                        st->nsocks--;
                        pthread_mutex_destroy(&s->lock);
                        free(s);
                        continue;
                    }
                    due |= !idle;
                } else {
                    due = true;
                }
                link = &s->next;
            }
        }
        pthread_mutex_unlock(&st->lock);
        if (n || !due || timeout_ms == 0)
            return n;
        if (!zc__poll_wait(&start, timeout_ms))
            return 0;
    }
}

static void mz_fini(struct zc_pool *pool)
{
    struct mz_pool *st = pool->backend;
    if (!st)
        return;
    for (unsigned b = 0; b < MZ_BUCKETS; b++) {
        struct mz_sock *s = st->buckets[b];
        while (s) {
            struct mz_sock *next = s->next;
            reap_sock(pool, s);
            while (s->head) { /* never completed: the pool is going anyway */
                struct mz_req *r = s->head;
                s->head = r->next;
                req_finish(pool, r);
            }
            if (s->dupfd >= 0)
                close(s->dupfd);
            pthread_mutex_destroy(&s->lock);
            free(s);
            s = next;
        }
    }
    pthread_mutex_destroy(&st->lock);
    free(st->graves);
    free(st);
    pool->backend = NULL;
}

/* The socket's entry, locked; made (SO_ZEROCOPY set) on first use. */
static struct mz_sock *sock_get(struct zc_pool *pool, int fd)
{
    struct mz_pool *st = pool->backend;
    uint64_t cookie = zc__sock_cookie(fd);
    if (!cookie)
        return NULL;
    pthread_mutex_lock(&st->lock);
    unsigned b = bucket_of(cookie);
    struct mz_sock *s = st->buckets[b];
    while (s && s->cookie != cookie)
        s = s->next;
    if (!s) {
        int one = 1;
        s = calloc(1, sizeof(*s));
        if (!s || setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one))) {
            pthread_mutex_unlock(&st->lock);
            free(s);
            return NULL;
        }
        s->cookie = cookie;
        s->dupfd = -1;
        struct mz_grave *g = st->graves ? &st->graves[grave_of(cookie)] : NULL;
        if (g && g->cookie == cookie) /* seen before: its count went on */
            s->next_id = g->next_id;
        pthread_mutex_init(&s->lock, NULL);
        s->next = st->buckets[b];
        st->buckets[b] = s;
        st->nsocks++;
    }
    pthread_mutex_lock(&s->lock);
    pthread_mutex_unlock(&st->lock);
    s->fd = fd;
    return s;
}

static ssize_t mz_sendmsg(struct zc_pool *pool, int fd, const struct msghdr *msg,
                          struct zc_part *parts, size_t nparts, int flags)
{
    size_t total, copied_len;
    uint32_t npb = zc__parts_count(parts, nparts, &total, &copied_len);
    if (!npb)
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    struct mz_pool *st = pool->backend;
    enum zc_switch sw = zc__switch_check(&st->sw, fd);
    if (sw == ZC_SWITCH_COPY)
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    struct mz_sock *s = sock_get(pool, fd);
    if (!s)
        return zc__send_copied(pool, fd, msg, parts, nparts, flags); /* its errno, e.g. EBADF */
    /* reading the error queue costs a system call: only once a few are
     * due (optmem limits how many may be), or at once while retrying zero-copy
     * after a streak, so that a socket that still copies (loopback) goes
     * back to copying after one zero-copy send, not sixteen */
    if (sw == ZC_SWITCH_RETRY) /* its streak is over: try zero-copy again */
        s->retrying = true;
    if (s->outstanding >= 16 || (s->retrying && s->outstanding))
        reap_sock(pool, s);
    /* a streak, or one that the completions just read started */
    bool copy = s->copy_streak || zc__switch_check(&st->sw, fd) == ZC_SWITCH_COPY;
    if (copy) {
        if (s->copy_streak && --s->copy_streak == 0)
            s->retrying = true;
        pthread_mutex_unlock(&s->lock);
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    }
    struct mz_req *req = malloc(sizeof(*req) + npb * sizeof(req->pb[0]));
    struct iovec stack_iov[16], *iov = stack_iov;
    if (req && nparts > 16)
        iov = malloc(nparts * sizeof(*iov));
    void *bounce = req && copied_len ? malloc(copied_len) : NULL;
    if (!req || !iov || (copied_len && !bounce)) {
        pthread_mutex_unlock(&s->lock);
        free(bounce);
        if (iov != stack_iov)
            free(iov);
        free(req);
        ZC_STAT_ADD(pool, fallbacks, 1);
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    }
    /* The kernel references every part until the completion: the copied
     * parts go from a buffer the request owns. */
    uint8_t *b = bounce;
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
    struct msghdr m = *msg;
    m.msg_iov = iov;
    m.msg_iovlen = nparts;
    ssize_t r = sendmsg(fd, &m, flags | MSG_ZEROCOPY);
    int err = errno;
    if (iov != stack_iov)
        free(iov);
    if (r < 0 && (err == ENOBUFS || err == EMSGSIZE)) {
        /* optmem or memlock exhausted, or a datagram spread over more
         * pages than an skb holds: this one goes by copy (a datagram that
         * is really too large gets EMSGSIZE from that too) */
        pthread_mutex_unlock(&s->lock);
        free(bounce);
        free(req);
        ZC_STAT_ADD(pool, fallbacks, 1);
        ZC_LOG("MSG_ZEROCOPY: %s; copying this send", strerror(err));
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    }
    if (r <= 0) {
        /* nothing sent: the kernel gave the id back */
        pthread_mutex_unlock(&s->lock);
        free(bounce);
        free(req);
        zc__parts_release(pool, parts, nparts);
        errno = err;
        return r;
    }
    req->id = s->next_id++;
    req->bytes = total;
    req->bounce = bounce;
    req->npb = 0;
    req->next = NULL;
    for (size_t i = 0; i < nparts; i++)
        if (parts[i].pb)
            req->pb[req->npb++] = parts[i].pb;
    if (s->tail)
        s->tail->next = req;
    else
        s->head = req;
    s->tail = req;
    s->outstanding++;
    if (s->dupfd < 0) {
        s->dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (s->dupfd < 0) { /* out of descriptors: read through the caller's */
            ZC_LOG("MSG_ZEROCOPY: dup: %s; completions read via fd %d", strerror(errno), fd);
            s->dupfd = fd;
        }
    }
    pthread_mutex_unlock(&s->lock);
    zc__account_sent(pool, parts, nparts, (size_t)r, true);
    return r;
}

const struct zc_backend_ops zc_backend_msgzc = {
    .name = "msgzc",
    .caps = ZC_BE_ZEROCOPY | ZC_BE_NEEDS_PROTECT | ZC_BE_PLAIN_COPY,
    .probe = mz_probe,
    .init = mz_init,
    .fini = mz_fini,
    .copy_threshold_stream = MZ_THRESHOLD,
    .copy_threshold_dgram = MZ_THRESHOLD_DGRAM,
    .sendmsg = mz_sendmsg,
    .poll = mz_poll,
};
