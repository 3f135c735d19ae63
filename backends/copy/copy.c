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

const struct zc_backend_ops zc_backend_copy = {
    .name = "copy",
    .caps = ZC_BE_PLAIN_COPY,
    .probe = copy_probe,
    .sendmsg = zc__send_copied,
};
