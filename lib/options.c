/* SPDX-License-Identifier: MIT */
/* ZC_* environment options; ignored in setuid/setgid programs. */
#include <stdlib.h>
#include <sys/auxv.h>

#include "internal.h"

const char *zc__getenv(const char *name)
{
    if (getauxval(AT_SECURE))
        return NULL;
    return getenv(name);
}

/* "64k", "1M", "2g", "4096": powers of 1024; no overflow, no junk. */
int zc__parse_size(const char *s, size_t *out)
{
    if (!s || *s < '0' || *s > '9')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        return -EINVAL;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end != '\0')
        return -EINVAL;
    if (shift && v > (~0ULL >> shift))
        return -EINVAL;
    v <<= shift;
    if (v > (size_t)-1)
        return -EINVAL;
    *out = (size_t)v;
    return 0;
}

/* 0 and *out untouched if unset; -EINVAL (and a log line) if malformed. */
int zc__option_size(const char *env, size_t *out)
{
    const char *s = zc__getenv(env);
    if (!s || !*s)
        return 0;
    int rc = zc__parse_size(s, out);
    if (rc)
        ZC_LOG("%s=\"%s\": not a size (use a number with an optional k, m or g)", env, s);
    return rc;
}
