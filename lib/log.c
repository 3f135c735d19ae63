/* SPDX-License-Identifier: MIT */
/* ZC_LOG=1: one line per notable event on stderr. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Atomic int log_state; /* 0 unknown, 1 off, 2 on */

bool zc__log_enabled(void)
{
    int st = atomic_load_explicit(&log_state, memory_order_relaxed);
    if (ZC_LIKELY(st))
        return st == 2;
    const char *s = zc__getenv("ZC_LOG");
    st = (s && *s && strcmp(s, "0") != 0) ? 2 : 1;
    atomic_store_explicit(&log_state, st, memory_order_relaxed);
    return st == 2;
}

void zc__log(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "zcopy: %s\n", line);
}
