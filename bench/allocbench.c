/* SPDX-License-Identifier: MIT */
/*
 * allocbench: zc_alloc + zc_free against malloc + free (glibc, and mimalloc
 * and jemalloc through LD_PRELOAD where installed) on a memcached-like size
 * mix: sizes log-uniform from 64 B to 64 KiB. Each allocator runs in its own
 * child process, the allocators interleaved, several runs; medians, ranges
 * and ratios to glibc are printed.
 *
 * A child: fills a live set (each object fully written), churns it (free a
 * random object, allocate a new random size, write it fully) and reads its
 * peak RSS (VmHWM) against the mean live bytes; then churns again, timing
 * only allocation and freeing (each object's first and last byte written),
 * for the throughput.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zcopy/zcopy.h>

enum { KIND_MALLOC, KIND_ZCOPY };

struct params {
    int kind;
    int threads;
    size_t live_per_thread; /* objects */
    size_t ops_per_thread;
};

static zc_pool *pool;
static struct params P;
static pthread_barrier_t barrier;

struct thread_result {
    double live_bytes_mean;
    double seconds;
};

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* log-uniform 64 B .. 64 KiB */
static size_t random_size(uint64_t *s)
{
    double u = (double)(rng_next(s) >> 11) / (double)(1ull << 53);
    double v = 64.0 * exp2(u * 10.0);
    size_t n = (size_t)v;
    return n < 64 ? 64 : n > 65536 ? 65536 : n;
}

static void *do_alloc(size_t n)
{
    return P.kind == KIND_ZCOPY ? zc_alloc(pool, n) : malloc(n);
}

static void do_free(void *p)
{
    if (P.kind == KIND_ZCOPY)
        zc_free(pool, p);
    else
        free(p);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct thread_result results[64];

static void *worker(void *arg)
{
    size_t id = (size_t)(uintptr_t)arg;
    uint64_t seed = 0x9E3779B97F4A7C15ull * (id + 1);
    size_t n = P.live_per_thread;
    char **obj = calloc(n, sizeof(*obj));
    size_t *size = calloc(n, sizeof(*size));
    double live = 0, live_sum = 0;
    for (size_t i = 0; i < n; i++) {
        size[i] = random_size(&seed);
        obj[i] = do_alloc(size[i]);
        if (!obj[i]) {
            fprintf(stderr, "allocbench: out of memory\n");
            exit(1);
        }
        memset(obj[i], (int)i, size[i]);
        live += (double)size[i];
    }
    /* churn with full writes: the steady state whose RSS we measure */
    for (size_t k = 0; k < P.ops_per_thread; k++) {
        size_t i = rng_next(&seed) % n;
        do_free(obj[i]);
        live -= (double)size[i];
        size[i] = random_size(&seed);
        obj[i] = do_alloc(size[i]);
        memset(obj[i], (int)k, size[i]);
        live += (double)size[i];
        live_sum += live;
    }
    results[id].live_bytes_mean = live_sum / (double)P.ops_per_thread;
    pthread_barrier_wait(&barrier); /* main reads VmHWM here */
    pthread_barrier_wait(&barrier);
    /* timed churn: allocation and freeing only */
    double t0 = now_s();
    for (size_t k = 0; k < P.ops_per_thread; k++) {
        size_t i = rng_next(&seed) % n;
        do_free(obj[i]);
        size[i] = random_size(&seed);
        char *p = do_alloc(size[i]);
        p[0] = (char)k;
        p[size[i] - 1] = (char)k;
        obj[i] = p;
    }
    results[id].seconds = now_s() - t0;
    for (size_t i = 0; i < n; i++)
        do_free(obj[i]);
    free(obj);
    free(size);
    return NULL;
}

static long vm_hwm_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static int child(void)
{
    if (P.kind == KIND_ZCOPY) {
        struct zc_pool_config cfg;
        zc_pool_config_init(&cfg);
        cfg.backend = "copy";
        cfg.arena_capacity = (size_t)8 << 30;
        int rc = zc_pool_create(&pool, &cfg);
        if (rc) {
            fprintf(stderr, "allocbench: zc_pool_create: %s\n", zc_strerror(rc));
            return 1;
        }
    }
    pthread_t t[64];
    pthread_barrier_init(&barrier, NULL, (unsigned)P.threads + 1);
    for (int i = 0; i < P.threads; i++)
        pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
    pthread_barrier_wait(&barrier);
    long hwm = vm_hwm_kib();
    if (pool && getenv("ALLOCBENCH_DEBUG")) {
        struct zc_stats st;
        zc_stats(pool, &st);
        double l = 0;
        for (int i = 0; i < P.threads; i++)
            l += results[i].live_bytes_mean;
        fprintf(stderr, "committed/live %.3f hwm/live %.3f pb active %llu full %llu partial %llu large %llu\n",
                (double)st.bytes_committed / l, (double)hwm * 1024 / l,
                (unsigned long long)st.pageblocks_active, (unsigned long long)st.pageblocks_full,
                (unsigned long long)st.pageblocks_partial, (unsigned long long)st.large_objects);
    }
    pthread_barrier_wait(&barrier);
    double live = 0, secs = 0;
    for (int i = 0; i < P.threads; i++) {
        pthread_join(t[i], NULL);
        live += results[i].live_bytes_mean;
        if (results[i].seconds > secs)
            secs = results[i].seconds;
    }
    double ops = (double)P.ops_per_thread * P.threads;
    printf("RESULT ops_per_s=%.0f rss_over_live=%.4f hwm_kib=%ld live_mib=%.1f\n", ops / secs,
           (double)hwm * 1024.0 / live, hwm, live / 1048576.0);
    if (pool)
        zc_pool_destroy(pool);
    return 0;
}

struct allocator {
    const char *name;
    int kind;
    const char *preload;
};

static int run_child(const char *self, const struct allocator *a, int threads, double *ops,
                     double *rss)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "%s%s %s --child %s --threads %d --live %zu --ops %zu",
             a->preload ? "LD_PRELOAD=" : "", a->preload ? a->preload : "", self,
             a->kind == KIND_ZCOPY ? "zcopy" : "malloc", threads, P.live_per_thread,
             P.ops_per_thread);
    FILE *f = popen(cmd, "r");
    char line[512];
    int ok = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "RESULT ops_per_s=%lf rss_over_live=%lf", ops, rss) == 2)
            ok = 1;
    if (!f || pclose(f) != 0 || !ok) {
        fprintf(stderr, "allocbench: child failed: %s\n", cmd);
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
    int runs = 5;
    const char *mode = NULL;
    P.threads = 1;
    P.live_per_thread = 40000;
    P.ops_per_thread = 300000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--child") == 0 && i + 1 < argc)
            mode = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            P.threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--live") == 0 && i + 1 < argc)
            P.live_per_thread = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
            P.ops_per_thread = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: allocbench [--runs N] [--live OBJECTS_PER_THREAD] "
                            "[--ops OPS_PER_THREAD]\n");
            return 2;
        }
    }
    if (P.threads < 1 || P.threads > 64 || runs < 1 || runs > 99 || P.live_per_thread < 1 ||
        P.ops_per_thread < 1) {
        fprintf(stderr, "allocbench: bad arguments\n");
        return 2;
    }
    if (mode) {
        P.kind = strcmp(mode, "zcopy") == 0 ? KIND_ZCOPY : KIND_MALLOC;
        return child();
    }
    struct allocator all[4] = {
        { "glibc", KIND_MALLOC, NULL },
        { "zcopy", KIND_ZCOPY, NULL },
        { "mimalloc", KIND_MALLOC, "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2" },
        { "jemalloc", KIND_MALLOC, "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2" },
    };
    int nall = 0;
    for (int i = 0; i < 4; i++)
        if (!all[i].preload || access(all[i].preload, R_OK) == 0)
            all[nall++] = all[i];
    char self[1024];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (sl <= 0)
        return 1;
    self[sl] = '\0';
    printf("allocbench: sizes log-uniform 64 B..64 KiB, %zu live objects and %zu ops per "
           "thread, %d runs, allocators interleaved\n",
           P.live_per_thread, P.ops_per_thread, runs);
    printf("%-9s %-7s %14s %22s %9s %12s %18s\n", "allocator", "threads", "Mops/s median",
           "range", "vs glibc", "RSS/live", "range");
    int failed = 0;
    for (int threads = 1; threads <= 2; threads++) {
        double ops[4][99], rss[4][99];
        for (int r = 0; r < runs; r++)
            for (int a = 0; a < nall; a++)
                if (run_child(self, &all[a], threads, &ops[a][r], &rss[a][r]))
                    return 1;
        double glibc_med = 0;
        for (int a = 0; a < nall; a++) {
            double o[99], m[99];
            memcpy(o, ops[a], sizeof(double) * (size_t)runs);
            memcpy(m, rss[a], sizeof(double) * (size_t)runs);
            double om = median(o, runs), mm = median(m, runs);
            if (a == 0)
                glibc_med = om;
            printf("%-9s %-7d %14.3f %10.3f..%-10.3f %8.2fx %12.3f %8.3f..%-8.3f\n", all[a].name,
                   threads, om / 1e6, o[0] / 1e6, o[runs - 1] / 1e6, om / glibc_med, mm, m[0],
                   m[runs - 1]);
        }
    }
    return failed;
}
