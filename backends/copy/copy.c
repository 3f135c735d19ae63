/* SPDX-License-Identifier: MIT */
/* The copy backend: plain sendmsg(2). Always available; the baseline every
 * zero-copy backend is measured against. */
#include <stdio.h>

#include "../../lib/internal.h"

static int copy_probe(char *why, size_t why_len)
{
    snprintf(why, why_len, "ok");
    return 0;
}

static ssize_t copy_sendmsg(struct zc_pool *pool, int fd, const struct msghdr *msg,
                            struct zc_part *parts, size_t nparts, int flags)
{
    zc__parts_release(pool, parts, nparts);
    ssize_t r = sendmsg(fd, msg, flags);
    if (r > 0)
        ZC_STAT_ADD(pool, bytes_copied, (uint64_t)r);
    return r;
}

const struct zc_backend_ops zc_backend_copy = {
    .name = "copy",
    .caps = 0,
    .probe = copy_probe,
    .sendmsg = copy_sendmsg,
};
