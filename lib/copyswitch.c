/* SPDX-License-Identifier: MIT */
/*
 * The copy switch of the zero-copy backends: a socket whose zero-copy sends
 * the kernel copies anyway (loopback, other local delivery) is sent to by
 * copy for a streak, kept by descriptor, and zero-copy is tried again at its
 * end. Each time in a row that the retry finds the socket still copying, the
 * next streak is twice as long: each retry costs a zero-copy send the kernel
 * copies anyway (over loopback, 1.17x send(2) at 256 KiB with a constant
 * streak of 64). A descriptor can be closed and reused for a socket that
 * does go zero-copy: every ZC_SWITCH_COOKIE_EVERY sends of a streak the
 * descriptor's cookie is checked, so a new socket copies at most that many.
 */
#include "internal.h"

#define ZC_SWITCH_STREAK 64
#define ZC_SWITCH_BACKOFF_MAX 6 /* up to 64 << 6 = 4096 sends */
#define ZC_SWITCH_COOKIE_EVERY 8

enum zc_switch zc__switch_check(struct zc_copy_switch *sw, int fd)
{
    if (fd < 0 || fd >= ZC_SWITCH_FDS)
        return ZC_SWITCH_NONE;
    unsigned left = atomic_load_explicit(&sw->left[fd], memory_order_relaxed);
    if (left == 0)
        return ZC_SWITCH_NONE;
    if (left == 1) {
        atomic_store_explicit(&sw->left[fd], 0, memory_order_relaxed);
        return ZC_SWITCH_RETRY;
    }
    if ((left - 1) % ZC_SWITCH_COOKIE_EVERY == 0 &&
        zc__sock_cookie(fd) != atomic_load_explicit(&sw->cookie[fd], memory_order_relaxed)) {
        atomic_store_explicit(&sw->left[fd], 0, memory_order_relaxed);
        atomic_store_explicit(&sw->backoff[fd], 0, memory_order_relaxed);
        return ZC_SWITCH_NEW_SOCKET;
    }
    atomic_store_explicit(&sw->left[fd], (uint16_t)(left - 1), memory_order_relaxed);
    return ZC_SWITCH_COPY;
}

void zc__switch_start(struct zc_copy_switch *sw, int fd, uint64_t cookie)
{
    if (fd < 0 || fd >= ZC_SWITCH_FDS)
        return;
    if (!cookie)
        cookie = zc__sock_cookie(fd);
    unsigned b = atomic_load_explicit(&sw->backoff[fd], memory_order_relaxed);
    if (cookie != atomic_load_explicit(&sw->cookie[fd], memory_order_relaxed))
        b = 0; /* another socket behind this number */
    atomic_store_explicit(&sw->cookie[fd], cookie, memory_order_relaxed);
    /* the count is one more than the sends left: 1 says the streak is over */
    atomic_store_explicit(&sw->left[fd], (uint16_t)((ZC_SWITCH_STREAK << b) + 1),
                          memory_order_relaxed);
    atomic_store_explicit(&sw->backoff[fd], (uint8_t)(b < ZC_SWITCH_BACKOFF_MAX ? b + 1 : b),
                          memory_order_relaxed);
}

void zc__switch_zerocopy_seen(struct zc_copy_switch *sw, int fd)
{
    if (fd >= 0 && fd < ZC_SWITCH_FDS)
        atomic_store_explicit(&sw->backoff[fd], 0, memory_order_relaxed);
}
