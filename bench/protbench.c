/* SPDX-License-Identifier: MIT */
/*
 * protbench: what write protection costs here, and what the allocator pays
 * for it under churn.
 *
 * 1. raw: UFFDIO_WRITEPROTECT on and off for ranges of 1 to 1024 pages,
 *    median of the timed calls. The kernel flushes the TLB page by page up
 *    to 33 pages and whole above (x86's tlb_single_page_flush_ceiling); in a
 *    guest each flush can be a trip to the hypervisor. Then what a write
 *    pays for landing on pages whose protection just changed: 64 KiB
 *    memcpys into the registered range, alternately right after their 4 MiB
 *    block was protected and released (as a reopened pageblock's new
 *    objects are) and without that, thread CPU, medians. Then the same for
 *    2 MiB-aligned ranges in transparent huge pages (one PMD entry per
 *    2 MiB instead of 512 PTEs), where the kernel gives them.
 * 2. churn: a cache of objects of one size, every one sealed, kept full:
 *    each step frees one (the oldest, as memcached's LRU evicts, or a random
 *    one with -R), allocates one, writes it and seals it. Pools of two
 *    pageblock sizes (-p; by default 64 KiB, where objects above 32 KiB get
 *    their own run, and 1 MiB, where objects up to 128 KiB share
 *    pageblocks), interleaved round by round. Prints the
 *    thread CPU per step, the protection changes per step and the committed
 *    bytes over the live ones, medians of the rounds.
 *
 *   protbench [-r ROUNDS] [-n STEPS] [-m LIVE_MIB] [-s SIZES] [-p KIB,KIB] [-R]
 *
 * Defaults: 5 rounds, 4000 steps, 64 MiB live, sizes 16484,65636,262244
 * (16, 64 and 256 KiB plus a 100-byte reply line, as the memcached patch
 * stores them). Every loop is bounded by its count and by 20 s.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <zcopy/zcopy.h>

#define MAX_SIZES 8
#define MAX_ROUNDS 64
#define TIME_CAP_NS (20LL * 1000000000LL)

static long long now_ns(clockid_t clk)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- 1. raw protection changes ---- */

static int wp(int uffd, char *p, size_t len, int on)
{
    struct uffdio_writeprotect w = {
        .range = { .start = (unsigned long)p, .len = len },
        .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    return ioctl(uffd, UFFDIO_WRITEPROTECT, &w);
}

/* 64 KiB writes into @p, half of them right after a protect and release of
 * their 4 MiB block, interleaved; @len a multiple of 4 MiB. */
static int write_after_change(int uffd, char *p, size_t len)
{
    enum { N = 201, CHUNK = 64 << 10, BLOCK = 4 << 20 };
    static char src[CHUNK];
    double plain[N], changed[N];
    unsigned seed = 1;
    memset(src, 7, sizeof(src));
    for (int k = 0; k < 2 * N; k++) {
        /* at 40 bytes into a slot, as the memcached patch's values are */
        size_t off = ((size_t)rand_r(&seed) % (len / (CHUNK + 4096))) * (CHUNK + 4096) + 40;
        if (k & 1) {
            char *block = p + (off & ~(size_t)(BLOCK - 1));
            if (wp(uffd, block, BLOCK, 1) || wp(uffd, block, BLOCK, 0))
                return 1;
        }
        long long t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
        memcpy(p + off, src, CHUNK - 64);
        double us = (now_ns(CLOCK_THREAD_CPUTIME_ID) - t0) / 1e3;
        if (k & 1)
            changed[k / 2] = us;
        else
            plain[k / 2] = us;
    }
    printf("64 KiB write, median of %d each: %.2f us, and %.2f us right after "
           "its 4 MiB block was protected and released\n",
           N, median(plain, N), median(changed, N));
    return 0;
}

/* Bytes of anonymous memory in transparent huge pages in this process. */
static size_t anon_huge_bytes(void)
{
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    size_t kib = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "AnonHugePages: %zu kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib << 10;
}

/* Medians of protect and release of ranges of @p, one row per page count
 * in @pages (@npages of them). */
static int raw_table(int uffd, char *p, size_t len, const size_t *pages, size_t npages)
{
    printf("%6s %12s %12s %14s\n", "pages", "protect us", "release us", "pair us/page");
    for (size_t i = 0; i < npages; i++) {
        size_t sz = pages[i] << 12;
        double on[51], off[51];
        for (int k = 0; k < 51; k++) {
            char *q = p + ((size_t)k * sz) % (len - sz);
            long long t0 = now_ns(CLOCK_MONOTONIC);
            if (wp(uffd, q, sz, 1))
                return 1;
            long long t1 = now_ns(CLOCK_MONOTONIC);
            if (wp(uffd, q, sz, 0))
                return 1;
            long long t2 = now_ns(CLOCK_MONOTONIC);
            on[k] = (t1 - t0) / 1e3;
            off[k] = (t2 - t1) / 1e3;
        }
        double a = median(on, 51), b = median(off, 51);
        printf("%6zu %12.1f %12.1f %14.2f\n", pages[i], a, b, (a + b) / (double)pages[i]);
    }
    return 0;
}

static const size_t pmd_bytes = (size_t)2 << 20;

/* A populated, uffd-registered range of @len bytes, 2 MiB-aligned inside
 * the mapping stored in @map (@len + 2 MiB long): 4 KiB pages, or with
 * @huge advised into transparent huge pages. */
static char *raw_range(int uffd, size_t len, int huge, char **map)
{
    char *m = mmap(NULL, len + pmd_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    *map = m;
    char *p = (char *)(((uintptr_t)m + pmd_bytes - 1) & ~(uintptr_t)(pmd_bytes - 1));
    madvise(p, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    memset(p, 1, len);
    struct uffdio_register reg = { .range = { (unsigned long)p, len },
                                   .mode = UFFDIO_REGISTER_MODE_WP };
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) {
        perror("UFFDIO_REGISTER");
        return NULL;
    }
    return p;
}

static int raw(void)
{
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = { .api = UFFD_API };
    if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api)) {
        perror("userfaultfd");
        return 1;
    }
    const size_t len = (size_t)64 << 20;
    char *pmap, *hmap;
    char *p = raw_range(uffd, len, 0, &pmap);
    if (!p)
        return 1;
    static const size_t pages[] = { 1, 16, 17, 32, 33, 34, 64, 256, 1024 };
    printf("raw UFFDIO_WRITEPROTECT, median of 51 calls each\n");
    if (raw_table(uffd, p, len, pages, sizeof(pages) / sizeof(pages[0])) ||
        write_after_change(uffd, p, len))
        return 1;
    /* Whole 2 MiB-aligned huge pages change one PMD entry each, not 512
     * PTEs; the memcached patch's 4 MiB pageblocks could be such pages. */
    size_t before = anon_huge_bytes();
    char *h = raw_range(uffd, len, 1, &hmap);
    if (!h)
        return 1;
    size_t huge = anon_huge_bytes() - before;
    if (huge < len / 2) {
        printf("the same in transparent huge pages: skipped, only %zu of %zu bytes "
               "in huge pages (see /sys/kernel/mm/transparent_hugepage/enabled)\n",
               huge, len);
    } else {
        static const size_t hpages[] = { 512, 1024 };
        printf("the same in transparent huge pages (%zu MiB of %zu), 2 MiB-aligned ranges\n",
               huge >> 20, len >> 20);
        if (raw_table(uffd, h, len, hpages, sizeof(hpages) / sizeof(hpages[0])) ||
            write_after_change(uffd, h, len))
            return 1;
    }
    munmap(hmap, len + pmd_bytes);
    munmap(pmap, len + pmd_bytes);
    close(uffd);
    return 0;
}

/* ---- 2. the allocator under churn ---- */

struct churn {
    double cpu_us;   /* thread CPU per step */
    double changes;  /* protects + unprotects per step */
    double overhead; /* committed bytes / live bytes at the end */
};

static int churn_run(size_t pageblock, size_t size, size_t live, int steps, int random_order,
                     unsigned seed, struct churn *out)
{
    struct zc_pool_config cfg;
    zc_pool_config_init(&cfg);
    cfg.backend = "copy";
    cfg.flags = ZC_POOL_PROTECT | ZC_POOL_IGNORE_ENV;
    cfg.arena_capacity = (size_t)4 << 30;
    cfg.pageblock_size = pageblock;
    zc_pool *pool;
    int rc = zc_pool_create(&pool, &cfg);
    if (rc) {
        fprintf(stderr, "zc_pool_create: %s\n", zc_strerror(rc));
        return 1;
    }
    size_t n = live / size;
    char **objs = calloc(n, sizeof(*objs));
    if (!objs)
        return 1;
    for (size_t i = 0; i < n; i++) {
        objs[i] = zc_alloc(pool, size);
        if (!objs[i])
            return 1;
        memset(objs[i], (int)i, size);
        zc_seal(pool, objs[i]);
    }
    struct zc_stats a, b;
    zc_stats(pool, &a);
    long long t0 = now_ns(CLOCK_THREAD_CPUTIME_ID), w0 = now_ns(CLOCK_MONOTONIC);
    int done = 0;
    for (size_t oldest = 0; done < steps; done++) {
        size_t victim = random_order ? (size_t)rand_r(&seed) % n : oldest;
        oldest = (oldest + 1) % n;
        zc_free(pool, objs[victim]);
        objs[victim] = zc_alloc(pool, size);
        if (!objs[victim])
            return 1;
        memset(objs[victim], done, size);
        zc_seal(pool, objs[victim]);
        if ((done & 63) == 0 && now_ns(CLOCK_MONOTONIC) - w0 > TIME_CAP_NS)
            break;
    }
    long long t1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
    zc_stats(pool, &b);
    out->cpu_us = (t1 - t0) / 1e3 / (done ? done : 1);
    out->changes = (double)((b.protects - a.protects) + (b.unprotects - a.unprotects)) /
                   (done ? done : 1);
    out->overhead = (double)b.bytes_committed / (double)(n * size);
    for (size_t i = 0; i < n; i++)
        zc_free(pool, objs[i]);
    free(objs);
    zc_pool_destroy(pool);
    return 0;
}

int main(int argc, char **argv)
{
    int rounds = 5, steps = 4000, random_order = 0, opt;
    size_t live = (size_t)64 << 20, sizes[MAX_SIZES] = { 16484, 65636, 262244 };
    int nsizes = 3;
    size_t pageblocks[2] = { (size_t)64 << 10, (size_t)1 << 20 };
    while ((opt = getopt(argc, argv, "r:n:m:s:p:Rh")) != -1) {
        switch (opt) {
        case 'r': rounds = atoi(optarg); break;
        case 'n': steps = atoi(optarg); break;
        case 'm': live = (size_t)atol(optarg) << 20; break;
        case 'R': random_order = 1; break;
        case 'p':
            if (sscanf(optarg, "%zu,%zu", &pageblocks[0], &pageblocks[1]) != 2)
                pageblocks[0] = 0;
            pageblocks[0] <<= 10;
            pageblocks[1] <<= 10;
            break;
        case 's': {
            nsizes = 0;
            for (char *t = strtok(optarg, ","); t && nsizes < MAX_SIZES; t = strtok(NULL, ","))
                sizes[nsizes++] = (size_t)atol(t);
            break;
        }
        default:
            fprintf(stderr, "usage: protbench [-r ROUNDS] [-n STEPS] [-m LIVE_MIB] [-s SIZES] "
                            "[-p KIB,KIB] [-R]\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (rounds < 1 || rounds > MAX_ROUNDS || steps < 1 || nsizes < 1 || live < ((size_t)1 << 20) ||
        !pageblocks[0] || !pageblocks[1]) {
        fprintf(stderr, "protbench: bad arguments\n");
        return 2;
    }
    if (raw())
        return 1;
    printf("\nchurn: %zu MiB live, %d steps, %s frees, %d rounds interleaved (medians)\n",
           live >> 20, steps, random_order ? "random" : "oldest-first", rounds);
    printf("%8s %10s %12s %16s %18s\n", "size", "pageblock", "CPU us/step", "changes/step",
           "committed/live");
    for (int s = 0; s < nsizes; s++) {
        double cpu[2][MAX_ROUNDS], ch[2][MAX_ROUNDS], ov[2][MAX_ROUNDS];
        for (int r = 0; r < rounds; r++) {
            for (int k = 0; k < 2; k++) {
                int which = (r & 1) ? 1 - k : k; /* alternate which goes first */
                struct churn c;
                if (churn_run(pageblocks[which], sizes[s], live, steps, random_order,
                              (unsigned)(r * 7919 + s), &c))
                    return 1;
                cpu[which][r] = c.cpu_us;
                ch[which][r] = c.changes;
                ov[which][r] = c.overhead;
            }
        }
        for (int k = 0; k < 2; k++)
            printf("%8zu %9zuk %12.2f %16.3f %18.3f\n", sizes[s], pageblocks[k] >> 10,
                   median(cpu[k], rounds), median(ch[k], rounds), median(ov[k], rounds));
    }
    return 0;
}
