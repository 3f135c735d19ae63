/* SPDX-License-Identifier: MIT */
/*
 * zc_send / zc_sendmsg: decide, part by part, what may go without a copy,
 * and hold the pageblocks of those parts in flight for the backend.
 */
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>

#include "internal.h"

/* A part may go zero-copy if it lies in one sealed object of a protected
 * pageblock. The in-flight count is raised before the protection is read,
 * so an unprotect that starts later waits for us (it sets the state first,
 * then reads in_flight). */
static struct zc_pageblock *pin(struct zc_pool *pool, const void *base, size_t len)
{
    struct zc_pageblock *pb = zc__lookup(pool, base);
    if (!pb)
        return NULL;
    int slot = zc__pb_slot(pb, base, false);
    if (slot < 0)
        return NULL;
    const uint8_t *slot_end = pb->start + (size_t)(slot + 1) * pb->slot_size;
    if ((const uint8_t *)base + len > slot_end)
        return NULL;
    uint64_t bit = (uint64_t)1 << (slot % 64);
    _Atomic uint64_t *sealed = &pb->sealed_bits[slot / 64];
    if (!(atomic_load_explicit(sealed, memory_order_relaxed) & bit) ||
        atomic_load_explicit(&pb->prot, memory_order_relaxed) != ZC_PROT_ON)
        return NULL;
    atomic_fetch_add(&pb->in_flight, 1);
    if (atomic_load(&pb->prot) != ZC_PROT_ON || !(atomic_load(sealed) & bit)) {
        zc__inflight_put(pool, pb, 1);
        return NULL;
    }
    ZC_STAT_ADD(pool, in_flight, 1);
    return pb;
}

void zc__inflight_put(struct zc_pool *pool, struct zc_pageblock *pb, uint32_t n)
{
    uint32_t left = atomic_fetch_sub(&pb->in_flight, n) - n;
    if (left == 0 && atomic_load(&pb->pending_free))
        zc__span_reap_deferred(pool);
}

void zc__parts_release(struct zc_pool *pool, struct zc_part *parts, size_t nparts)
{
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].pb) {
            zc__inflight_drop(pool, parts[i].pb);
            parts[i].pb = NULL;
        }
    }
}

/* One sendmsg(2) of @msg from byte @skip on. */
static ssize_t send_from(struct zc_pool *pool, int fd, const struct msghdr *msg, int flags,
                         size_t skip)
{
    ssize_t r;
    if (!skip && msg->msg_iovlen == 1 && !msg->msg_name && !msg->msg_controllen) {
        /* send(2) is cheaper than sendmsg(2) for one buffer */
        r = send(fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len, flags);
    } else if (!skip) {
        r = sendmsg(fd, msg, flags);
    } else {
        struct iovec stack_iov[16];
        struct iovec *iov = msg->msg_iovlen > 16 ? malloc(msg->msg_iovlen * sizeof(*iov))
                                                 : stack_iov;
        if (!iov) {
            errno = ENOBUFS;
            return -1;
        }
        size_t n = 0;
        for (size_t i = 0; i < msg->msg_iovlen; i++) {
            const struct iovec *v = &msg->msg_iov[i];
            if (skip >= v->iov_len) {
                skip -= v->iov_len;
                continue;
            }
            iov[n].iov_base = (char *)v->iov_base + skip;
            iov[n++].iov_len = v->iov_len - skip;
            skip = 0;
        }
        struct msghdr rest = *msg;
        rest.msg_iov = iov;
        rest.msg_iovlen = n;
        r = sendmsg(fd, &rest, flags);
        if (iov != stack_iov) {
            int err = errno;
            free(iov);
            errno = err;
        }
    }
    if (r > 0)
        ZC_STAT_ADD(pool, bytes_copied, (uint64_t)r);
    return r;
}

/* A blocking send in a thread of a zero-copy pool can stop short when
 * that pool's completions arrive (io_uring task work wakes the thread as a
 * signal would), where send(2) would have gone on: go on with the rest, a
 * bounded number of times. Of @msg, @done bytes went before this call's
 * first send, which sent @sent. */
static ssize_t go_on_blocking(struct zc_pool *pool, int fd, const struct msghdr *msg, int flags,
                              size_t done, ssize_t sent)
{
    if (sent <= 0 || (flags & MSG_DONTWAIT) || !(pool->ops->caps & ZC_BE_ZEROCOPY))
        return sent;
    size_t total = 0;
    for (size_t i = 0; i < msg->msg_iovlen; i++)
        total += msg->msg_iov[i].iov_len;
    if (done + (size_t)sent >= total)
        return sent;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_NONBLOCK))
        return sent;
    for (unsigned attempt = 0; attempt < 16 && done + (size_t)sent < total; attempt++) {
        ssize_t r = send_from(pool, fd, msg, flags, done + (size_t)sent);
        if (r <= 0)
            break;
        sent += r;
    }
    return sent;
}

ssize_t zc__send_copied_from(struct zc_pool *pool, int fd, const struct msghdr *msg, int flags,
                             size_t skip)
{
    return go_on_blocking(pool, fd, msg, flags, skip, send_from(pool, fd, msg, flags, skip));
}

ssize_t zc__send_copied(struct zc_pool *pool, int fd, const struct msghdr *msg,
                        struct zc_part *parts, size_t nparts, int flags)
{
    zc__parts_release(pool, parts, nparts);
    return zc__send_copied_from(pool, fd, msg, flags, 0);
}

void zc__account_sent(struct zc_pool *pool, const struct zc_part *parts, size_t nparts,
                      size_t sent, bool unregistered)
{
    uint64_t zbytes = 0, zparts = 0, left = sent;
    for (size_t i = 0; i < nparts && left; i++) {
        size_t n = parts[i].len < left ? parts[i].len : left;
        if (parts[i].pb) {
            zbytes += n;
            zparts += n > 0;
        }
        left -= n;
    }
    ZC_STAT_ADD(pool, bytes_zerocopy, zbytes);
    ZC_STAT_ADD(pool, bytes_copied, (uint64_t)sent - zbytes);
    ZC_STAT_ADD(pool, zerocopy_parts, zparts);
    if (unregistered)
        ZC_STAT_ADD(pool, zerocopy_parts_unregistered, zparts);
}

void zc__send_init(struct zc_pool *pool)
{
    size_t s = pool->ops->copy_threshold_stream, d = pool->ops->copy_threshold_dgram;
    if (pool->copy_threshold)
        s = d = pool->copy_threshold;
    pool->send_min_stream = s ? s : 1;
    pool->send_min_dgram = d ? d : 1;
    pool->send_min = s < d ? pool->send_min_stream : pool->send_min_dgram;
}

uint64_t zc__sock_cookie(int fd)
{
    uint64_t cookie = 0;
    socklen_t len = sizeof(cookie);
    if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &cookie, &len))
        return 0;
    return cookie;
}

#define ZC_SOCK_TYPE_USES 64 /* uses of a remembered kind before it is asked again */

static bool ask_dgram(int fd)
{
    int type = 0;
    socklen_t len = sizeof(type);
    int err = errno;
    bool dgram = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_DGRAM;
    errno = err;
    return dgram;
}

/* The table of remembered kinds, made on first need; NULL if out of memory
 * (then every such send asks). */
static _Atomic uint8_t *sock_types(struct zc_pool *pool)
{
    _Atomic uint8_t *t = atomic_load_explicit(&pool->sock_types, memory_order_acquire);
    if (t)
        return t;
    _Atomic uint8_t *fresh = calloc(ZC_SOCK_TYPES, sizeof(*fresh));
    if (!fresh)
        return NULL;
    if (!atomic_compare_exchange_strong(&pool->sock_types, &t, fresh)) {
        free(fresh); /* another thread made it first */
        return t;
    }
    return fresh;
}

/* Whether @fd is a datagram socket. Remembered per descriptor and asked
 * again every ZC_SOCK_TYPE_USES uses, since a number closed and reused may
 * name another kind of socket (a stale answer only picks the other
 * threshold). Entry: (uses left << 1) | dgram, 0 if not known. */
static bool sock_dgram(struct zc_pool *pool, int fd)
{
    _Atomic uint8_t *t = fd >= 0 && fd < ZC_SOCK_TYPES ? sock_types(pool) : NULL;
    if (!t)
        return ask_dgram(fd);
    _Atomic uint8_t *e = &t[fd];
    uint8_t v = atomic_load_explicit(e, memory_order_relaxed);
    if (v >> 1) {
        atomic_store_explicit(e, (uint8_t)(v - 2), memory_order_relaxed);
        return v & 1;
    }
    bool dgram = ask_dgram(fd);
    atomic_store_explicit(e, (uint8_t)(((ZC_SOCK_TYPE_USES - 1) << 1) | dgram),
                          memory_order_relaxed);
    return dgram;
}

/* The copy threshold for a part of @len bytes on @fd: only a part between
 * the two kinds' thresholds needs to know the kind. */
static size_t send_threshold(struct zc_pool *pool, int fd, size_t len)
{
    if (len < pool->send_min || pool->send_min_stream == pool->send_min_dgram)
        return pool->send_min;
    return sock_dgram(pool, fd) ? pool->send_min_dgram : pool->send_min_stream;
}

ZC_API ssize_t zc_sendmsg(zc_pool *pool, int fd, const struct msghdr *msg, int flags)
{
    if (!pool || !msg || (msg->msg_iovlen && !msg->msg_iov)) {
        errno = EINVAL;
        return -1;
    }
    size_t n = msg->msg_iovlen;
    if (n > IOV_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    bool zerocopy = pool->ops->caps & ZC_BE_ZEROCOPY;
    size_t longest = 0; /* only asked for when the two kinds' thresholds differ */
    for (size_t i = 0; zerocopy && pool->send_min_stream != pool->send_min_dgram && i < n; i++)
        if (msg->msg_iov[i].iov_len > longest)
            longest = msg->msg_iov[i].iov_len;
    size_t threshold = zerocopy ? send_threshold(pool, fd, longest) : 0;
    if (pool->ops->caps & ZC_BE_PLAIN_COPY) {
        /* small replies (a server's most common) skip the part bookkeeping */
        size_t i = 0;
        while (zerocopy && i < n && msg->msg_iov[i].iov_len < threshold)
            i++;
        if (!zerocopy || i == n) {
            ssize_t r = zc__send_copied_from(pool, fd, msg, flags, 0);
            if (r > 0)
                ZC_STAT_ADD(pool, sends, 1);
            return r;
        }
    }
    struct zc_part stack_parts[16];
    struct zc_part *parts = stack_parts;
    if (n > 16) {
        parts = malloc(n * sizeof(*parts));
        if (!parts) {
            errno = ENOBUFS;
            return -1;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct iovec *iov = &msg->msg_iov[i];
        parts[i].base = iov->iov_base;
        parts[i].len = iov->iov_len;
        parts[i].pb = NULL;
        if (zerocopy && iov->iov_len >= threshold)
            parts[i].pb = pin(pool, iov->iov_base, iov->iov_len);
    }
    ssize_t r = pool->ops->sendmsg(pool, fd, msg, parts, n, flags);
    if (r > 0)
        ZC_STAT_ADD(pool, sends, 1);
    if (parts != stack_parts) {
        int err = errno;
        free(parts);
        errno = err;
    }
    return r;
}

ZC_API ssize_t zc_send(zc_pool *pool, int fd, const void *buf, size_t len, int flags)
{
    if (!pool) {
        errno = EINVAL;
        return -1;
    }
    /* What will be copied anyway goes through send(2), cheaper than
     * sendmsg(2) for one buffer. */
    if (!(pool->ops->caps & ZC_BE_ZEROCOPY) || len < send_threshold(pool, fd, len) ||
        !zc__lookup(pool, buf)) {
        ssize_t r = send(fd, buf, len, flags);
        if (r > 0) {
            ZC_STAT_ADD(pool, sends, 1);
            ZC_STAT_ADD(pool, bytes_copied, (uint64_t)r);
            if ((size_t)r < len) {
                struct iovec iov = { .iov_base = (void *)(uintptr_t)buf, .iov_len = len };
                struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
                r = go_on_blocking(pool, fd, &msg, flags, 0, r);
            }
        }
        return r;
    }
    struct iovec iov = { .iov_base = (void *)(uintptr_t)buf, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    return zc_sendmsg(pool, fd, &msg, flags);
}
