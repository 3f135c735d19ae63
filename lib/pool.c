/* SPDX-License-Identifier: MIT */
/* Pool life: configuration, backend start, arena, destroy; stats, poll. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "internal.h"

#define ZC_DEFAULT_ARENA ((size_t)1 << 30)
#define ZC_DEFAULT_PAGEBLOCK ((size_t)64 << 10)
#define ZC_MIN_PAGEBLOCK ((size_t)16 << 10)
#define ZC_MAX_PAGEBLOCK ((size_t)4 << 20)
#define ZC_MIN_ARENA ((size_t)1 << 20)
#define ZC_MAX_ARENA ((size_t)1 << 40)
#define ZC_DESTROY_WAIT_MS 10000

static _Atomic uint64_t next_pool_id = 1;

ZC_API void zc_pool_config_init(struct zc_pool_config *config)
{
    if (!config)
        return;
    memset(config, 0, sizeof(*config));
    config->struct_size = (uint32_t)sizeof(*config);
}

/* Fill the defaults and the environment into @cfg; check every field. */
static int resolve_config(struct zc_pool_config *cfg, const struct zc_pool_config *in)
{
    zc_pool_config_init(cfg);
    if (in) {
        if (in->struct_size < offsetof(struct zc_pool_config, copy_threshold) + sizeof(size_t) ||
            in->struct_size > sizeof(*cfg))
            return -EINVAL;
        memcpy(cfg, in, in->struct_size);
        cfg->struct_size = (uint32_t)sizeof(*cfg);
    }
    if (cfg->flags & ~(uint32_t)(ZC_POOL_PROTECT | ZC_POOL_IGNORE_ENV))
        return -EINVAL;
    bool env = !(cfg->flags & ZC_POOL_IGNORE_ENV);
    if (env) {
        if (!cfg->arena_capacity && zc__option_size("ZC_ARENA_SIZE", &cfg->arena_capacity))
            return -EINVAL;
        if (!cfg->pageblock_size && zc__option_size("ZC_PAGEBLOCK_SIZE", &cfg->pageblock_size))
            return -EINVAL;
        if (!cfg->copy_threshold && zc__option_size("ZC_COPY_THRESHOLD", &cfg->copy_threshold))
            return -EINVAL;
        if (!cfg->backend)
            cfg->backend = zc__getenv("ZC_BACKEND");
    }
    if (!cfg->arena_capacity)
        cfg->arena_capacity = ZC_DEFAULT_ARENA;
    if (!cfg->pageblock_size)
        cfg->pageblock_size = ZC_DEFAULT_PAGEBLOCK;
    if (!cfg->backend || !*cfg->backend)
        cfg->backend = "auto";
    if (cfg->arena_capacity < ZC_MIN_ARENA || cfg->arena_capacity > ZC_MAX_ARENA ||
        cfg->arena_capacity % ZC_PAGE_SIZE) {
        ZC_LOG("arena capacity %zu: want a multiple of 4 KiB from 1 MiB to 1 TiB",
               cfg->arena_capacity);
        return -EINVAL;
    }
    if (cfg->pageblock_size < ZC_MIN_PAGEBLOCK || cfg->pageblock_size > ZC_MAX_PAGEBLOCK ||
        cfg->pageblock_size % ZC_PAGE_SIZE) {
        ZC_LOG("pageblock size %zu: want a multiple of 4 KiB from 16 KiB to 4 MiB",
               cfg->pageblock_size);
        return -EINVAL;
    }
    return 0;
}

static void arena_release(struct zc_pool *pool)
{
    if (!pool->arena)
        return;
    if (pool->arena_from_backend)
        pool->ops->arena_unmap(pool, pool->arena, pool->arena_size);
    else
        munmap(pool->arena, pool->arena_size);
    pool->arena = NULL;
}

/* Set the pool up on @ops: arena, page map, protection, the backend. */
static int pool_start(struct zc_pool *pool, const struct zc_backend_ops *ops, char *why,
                      size_t why_len)
{
    pool->ops = ops;
    int rc = ops->probe(why, why_len);
    if (rc)
        return rc;
    pool->arena_size = pool->cfg.arena_capacity;
    pool->arena_from_backend = ops->arena_map != NULL;
    if (ops->arena_map) {
        pool->arena = ops->arena_map(pool, pool->arena_size);
        if (!pool->arena) {
            rc = errno ? -errno : -ENOMEM;
            snprintf(why, why_len, "arena: %s", strerror(-rc));
            return rc;
        }
    } else {
        void *a = mmap(NULL, pool->arena_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (a == MAP_FAILED) {
            snprintf(why, why_len, "arena: mmap %zu bytes: %s", pool->arena_size,
                     strerror(errno));
            return -ENOMEM;
        }
        /* 4 KiB pages keep RSS and protection at the allocator's grain. */
        madvise(a, pool->arena_size, MADV_NOHUGEPAGE);
        pool->arena = a;
    }
    rc = zc__span_init(pool);
    if (rc) {
        snprintf(why, why_len, "page map: out of memory");
        goto fail_arena;
    }
    pool->protect = (ops->caps & ZC_BE_NEEDS_PROTECT) || (pool->cfg.flags & ZC_POOL_PROTECT);
    pool->prot.uffd = pool->prot.stop_fd = -1;
    if (pool->protect) {
        rc = zc__protect_init(pool, why, why_len);
        if (rc)
            goto fail_span;
    }
    rc = ops->init ? ops->init(pool, why, why_len) : 0;
    if (rc)
        goto fail_protect;
    return 0;
fail_protect:
    zc__protect_fini(pool);
fail_span:
    zc__span_fini(pool);
fail_arena:
    arena_release(pool);
    return rc;
}

/* Try the backends @spec names; the first that starts wins. */
int zc__backend_select(struct zc_pool *pool, const char *spec)
{
    const struct zc_backend_ops *list[16];
    size_t n = 0;
    if (strcmp(spec, "auto") == 0) {
        for (const char *const *name = zc_backend_list(); *name && n < 16; name++)
            list[n++] = zc__backend_find(*name);
    } else {
        const char *p = spec;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            char name[32];
            if (len == 0 || len >= sizeof(name) || n == 16) {
                ZC_LOG("ZC_BACKEND \"%s\": empty or overlong name", spec);
                return -EINVAL;
            }
            memcpy(name, p, len);
            name[len] = '\0';
            const struct zc_backend_ops *ops = zc__backend_find(name);
            if (!ops) {
                ZC_LOG("backend \"%s\": unknown (built-in: see zcopy-probe)", name);
                return strcmp(name, "auto") == 0 ? -EINVAL : -ENOENT;
            }
            list[n++] = ops;
            p += len + (comma ? 1 : 0);
            if (comma && !*p) {
                ZC_LOG("ZC_BACKEND \"%s\": trailing comma", spec);
                return -EINVAL;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        char why[256] = "";
        int rc = pool_start(pool, list[i], why, sizeof(why));
        if (rc == 0) {
            ZC_LOG("backend %s chosen (asked: %s)", list[i]->name, spec);
            return 0;
        }
        ZC_LOG("backend %s passed over: %s (%s)", list[i]->name, why, strerror(-rc));
    }
    pool->ops = NULL;
    return -ENOTSUP;
}

ZC_API int zc_pool_create(zc_pool **out, const struct zc_pool_config *config)
{
    if (!out) {
        errno = EINVAL;
        return -EINVAL;
    }
    *out = NULL;
    struct zc_pool *pool = zc__calloc_lines(sizeof(*pool));
    if (!pool) {
        errno = ENOMEM;
        return -ENOMEM;
    }
    int rc = resolve_config(&pool->cfg, config);
    if (rc)
        goto fail;
    pool->id = atomic_fetch_add(&next_pool_id, 1);
    pthread_mutex_init(&pool->span_lock, NULL);
    zc__classes_init(pool);
    for (unsigned c = 0; c < ZC_NUM_CLASSES; c++)
        pthread_mutex_init(&pool->classes[c].lock, NULL);
    rc = zc__heaps_init(pool);
    if (rc)
        goto fail_locks;
    rc = zc__backend_select(pool, pool->cfg.backend);
    if (rc)
        goto fail_heaps;
    pool->copy_threshold = pool->cfg.copy_threshold;
    zc__send_init(pool);
    /* The backend name is static; the caller's string may not outlive us. */
    pool->cfg.backend = pool->ops->name;
    *out = pool;
    return 0;
fail_heaps:
    zc__heaps_fini(pool);
fail_locks:
    for (unsigned c = 0; c < ZC_NUM_CLASSES; c++)
        pthread_mutex_destroy(&pool->classes[c].lock);
    pthread_mutex_destroy(&pool->span_lock);
fail:
    free(pool);
    errno = -rc;
    return rc;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

ZC_API int zc_pool_destroy(zc_pool *pool)
{
    if (!pool)
        return 0;
    int rc = 0;
    uint64_t deadline = now_ms() + ZC_DESTROY_WAIT_MS;
    while (atomic_load(&pool->st.in_flight)) {
        if (now_ms() > deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        if (pool->ops->poll)
            pool->ops->poll(pool, 10);
    }
    if (pool->ops->fini)
        pool->ops->fini(pool);
    zc__protect_fini(pool);
    zc__heaps_fini(pool);
    if (rc == 0)
        arena_release(pool);
    else
        ZC_LOG("pool destroyed with sends in flight: arena of %zu bytes leaked",
               pool->arena_size);
    zc__span_fini(pool);
    for (unsigned c = 0; c < ZC_NUM_CLASSES; c++)
        pthread_mutex_destroy(&pool->classes[c].lock);
    pthread_mutex_destroy(&pool->span_lock);
    free(pool->sock_types);
    free(pool);
    if (rc)
        errno = -rc;
    return rc;
}

long long zc__poll_left_ns(const struct timespec *start, int timeout_ms)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (long long)timeout_ms * 1000000 -
           ((long long)(now.tv_sec - start->tv_sec) * 1000000000 + (now.tv_nsec - start->tv_nsec));
}

bool zc__poll_wait(const struct timespec *start, int timeout_ms)
{
    if (zc__poll_left_ns(start, timeout_ms) <= 0)
        return false;
    struct timespec ts = { 0, 50 * 1000 };
    nanosleep(&ts, NULL);
    return true;
}

ZC_API int zc_poll(zc_pool *pool, int timeout_ms)
{
    if (!pool || timeout_ms < 0) {
        errno = EINVAL;
        return -EINVAL;
    }
    int n = pool->ops->poll ? pool->ops->poll(pool, timeout_ms) : 0;
    if (atomic_load_explicit(&pool->deferred, memory_order_relaxed))
        zc__span_reap_deferred(pool);
    if (n < 0)
        errno = -n;
    return n;
}

ZC_API const char *zc_backend_name(const zc_pool *pool)
{
    return pool ? pool->ops->name : NULL;
}

static uint64_t clamp(int64_t v)
{
    return v < 0 ? 0 : (uint64_t)v;
}

ZC_API int zc_stats(const zc_pool *pool, struct zc_stats *s)
{
    if (!pool || !s) {
        errno = EINVAL;
        return -EINVAL;
    }
    memset(s, 0, sizeof(*s));
    const struct zc_stats_atomic *a = &pool->st;
    s->sends = atomic_load(&a->sends);
    s->bytes_zerocopy = atomic_load(&a->bytes_zerocopy);
    s->bytes_copied = atomic_load(&a->bytes_copied);
    s->zerocopy_parts = atomic_load(&a->zerocopy_parts);
    s->zerocopy_parts_unregistered = atomic_load(&a->zerocopy_parts_unregistered);
    s->completions = atomic_load(&a->completions);
    s->completions_copied = atomic_load(&a->completions_copied);
    s->in_flight = atomic_load(&a->in_flight);
    s->protect_faults = atomic_load(&a->protect_faults);
    s->protect_waits = atomic_load(&a->protect_waits);
    s->protects = atomic_load(&a->protects);
    s->unprotects = atomic_load(&a->unprotects);
    s->fallbacks = atomic_load(&a->fallbacks);
    s->pageblocks_active = clamp(atomic_load(&a->pageblocks_active));
    s->pageblocks_full = clamp(atomic_load(&a->pageblocks_full));
    s->pageblocks_partial = clamp(atomic_load(&a->pageblocks_partial));
    s->pageblocks_protected = clamp(atomic_load(&a->pageblocks_protected));
    s->large_objects = clamp(atomic_load(&a->large_objects));
    s->large_protected = clamp(atomic_load(&a->large_protected));
    s->bytes_committed = clamp(atomic_load(&a->bytes_committed));
    return 0;
}

ZC_API const char *zc_strerror(int err)
{
    if (err < 0)
        err = -err;
    if (err == 0)
        return "Success";
    const char *s = strerrordesc_np(err);
    return s ? s : "Unknown error";
}

ZC_API unsigned zc_version(void)
{
    return ZCOPY_VERSION_NUMBER;
}

ZC_API const char *zc_version_string(void)
{
    return ZCOPY_VERSION_STRING;
}
