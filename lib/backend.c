/* SPDX-License-Identifier: MIT */
/* The backends in "auto" preference order, and ZC_BACKEND selection. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static const struct zc_backend_ops *const backends[] = {
#ifdef ZCOPY_HAVE_KMOD
    &zc_backend_kmod,
#endif
#ifdef ZCOPY_HAVE_IOURING
    &zc_backend_iouring,
#endif
#ifdef ZCOPY_HAVE_MSGZC
    &zc_backend_msgzc,
#endif
    &zc_backend_copy,
    NULL,
};

static const char *const backend_names[] = {
#ifdef ZCOPY_HAVE_KMOD
    "kmod",
#endif
#ifdef ZCOPY_HAVE_IOURING
    "iouring",
#endif
#ifdef ZCOPY_HAVE_MSGZC
    "msgzc",
#endif
    "copy",
    NULL,
};

const struct zc_backend_ops *zc__backend_find(const char *name)
{
    for (size_t i = 0; backends[i]; i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

ZC_API const char *const *zc_backend_list(void)
{
    return backend_names;
}

ZC_API int zc_backend_probe(const char *name, char *why, size_t why_len)
{
    char scratch[256];
    if (!why || !why_len) {
        why = scratch;
        why_len = sizeof(scratch);
    }
    if (!name) {
        snprintf(why, why_len, "no backend name");
        return -EINVAL;
    }
    const struct zc_backend_ops *ops = zc__backend_find(name);
    if (!ops) {
        snprintf(why, why_len, "unknown backend (not built into this library)");
        return -ENOENT;
    }
    int rc = ops->probe(why, why_len);
    if (rc == 0 && (ops->caps & ZC_BE_NEEDS_PROTECT) && !(ops->caps & ZC_BE_OWN_PROTECT))
        rc = zc__protect_probe(why, why_len);
    if (rc == 0)
        snprintf(why, why_len, "ok");
    return rc;
}
