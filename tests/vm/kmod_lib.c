// SPDX-License-Identifier: MIT
/*
 * kmod_lib: the library on the kmod backend, through the public API only,
 * inside the VM (tests/vm/run.sh). Checks what the module must enforce
 * whatever the library believes:
 *  - a sealed object goes zero-copy; a write to it while in flight returns
 *    at once (copy-on-write) and the peer gets the bytes as sealed;
 *  - the library still holds the object sealed after that write, but the
 *    module copies the written page on the next send: the peer gets the new
 *    bytes, and the stats show the copy;
 *  - the same for a write to an idle sealed object (the module unseals it);
 *  - freeing and reallocating unprotects and reseals through the module,
 *    after which the object goes zero-copy again;
 *  - completions come back through zc_poll and in_flight returns to 0;
 *  - zc_pool_destroy with sends in flight on a socket nobody reads returns
 *    and the module frees every page once the socket is closed.
 * Prints "kmod_lib: N passed, M failed" and its zero-copy completions.
 *
 * Build: gcc -static -I include -I <build>/include tests/vm/kmod_lib.c
 *        <build>/libzcopy.a -lpthread
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <linux/sockios.h>

#include <zcopy/zcopy.h>

#define PG 4096u

static int passed, failed;
static uint64_t zc_completions;

#define CHECK(c, ...)                                                          \
    do {                                                                       \
        if (!(c)) {                                                            \
            printf("kmod_lib: %s:%d: ", __func__, __LINE__);                   \
            printf(__VA_ARGS__);                                               \
            printf("\n");                                                      \
            return -1;                                                         \
        }                                                                      \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int tcp_pair(int *cli, int *srv, int rcvbuf, int sndbuf)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c, s;
    if (l < 0)
        return -1;
    if (rcvbuf)
        setsockopt(l, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &al)) {
        close(l);
        return -1;
    }
    c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sndbuf)
        setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    if (connect(c, (struct sockaddr *)&a, sizeof(a))) {
        close(l);
        close(c);
        return -1;
    }
    s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    close(l);
    if (s < 0) {
        close(c);
        return -1;
    }
    *cli = c;
    *srv = s;
    return 0;
}

static size_t recv_all(int fd, uint8_t *buf, size_t n, double limit_s)
{
    size_t got = 0;
    double t0 = now_s();
    while (got < n && now_s() - t0 < limit_s) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 100) <= 0)
            continue;
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r == 0)
            break;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            break;
        }
        got += (size_t)r;
    }
    return got;
}

static void fill(uint8_t *p, size_t n, unsigned salt)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)((i * 131u + salt * 7u + (i >> 12)) ^ salt);
}

static struct zc_stats stats(zc_pool *pool)
{
    struct zc_stats s;
    zc_stats(pool, &s);
    return s;
}

static int wait_idle(zc_pool *pool, double limit_s)
{
    double t0 = now_s();
    while (stats(pool).in_flight) {
        if (now_s() - t0 > limit_s)
            return -1;
        zc_poll(pool, 10);
    }
    return 0;
}

static zc_pool *kmod_pool(void)
{
    struct zc_pool_config cfg;
    zc_pool_config_init(&cfg);
    cfg.backend = "kmod";
    cfg.flags = ZC_POOL_IGNORE_ENV;
    cfg.arena_capacity = (size_t)64 << 20;
    zc_pool *pool = NULL;
    int rc = zc_pool_create(&pool, &cfg);
    if (rc) {
        printf("kmod_lib: zc_pool_create(kmod): %s\n", zc_strerror(rc));
        return NULL;
    }
    return pool;
}

struct rx_job {
    int fd;
    uint8_t *buf;
    size_t n, got;
};

static void *rx_thread(void *arg)
{
    struct rx_job *j = arg;
    j->got = recv_all(j->fd, j->buf, j->n, 30);
    return NULL;
}

/* Send all of an object over loopback (a thread reads), check the bytes. */
static int send_check(zc_pool *pool, int cli, int srv, const uint8_t *obj, size_t len,
                      const uint8_t *expect, uint64_t *zc_delta)
{
    struct zc_stats s0 = stats(pool);
    struct rx_job job = { .fd = srv, .buf = malloc(len), .n = len };
    pthread_t th;
    size_t off = 0;
    CHECK(job.buf, "malloc");
    CHECK(pthread_create(&th, NULL, rx_thread, &job) == 0, "pthread_create");
    while (off < len) {
        ssize_t n = zc_send(pool, cli, obj + off, len - off, 0);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    pthread_join(th, NULL);
    CHECK(off == len, "zc_send: %zu of %zu bytes: %s", off, len, strerror(errno));
    CHECK(job.got == len, "received %zu of %zu", job.got, len);
    CHECK(memcmp(job.buf, expect, len) == 0, "peer got wrong bytes");
    free(job.buf);
    CHECK(wait_idle(pool, 10) == 0, "completion not reaped");
    struct zc_stats s1 = stats(pool);
    *zc_delta = s1.bytes_zerocopy - s0.bytes_zerocopy;
    CHECK(s1.bytes_zerocopy + s1.bytes_copied - s0.bytes_zerocopy - s0.bytes_copied == len,
          "stats do not add up");
    zc_completions += s1.completions - s1.completions_copied -
                      (s0.completions - s0.completions_copied);
    return 0;
}

static int t_backend(void)
{
    zc_pool *pool = kmod_pool();
    CHECK(pool, "no kmod pool");
    CHECK(strcmp(zc_backend_name(pool), "kmod") == 0, "backend %s", zc_backend_name(pool));
    char why[256];
    CHECK(zc_backend_probe("kmod", why, sizeof(why)) == 0, "probe: %s", why);
    /* auto picks kmod first */
    zc_pool *a = NULL;
    struct zc_pool_config cfg;
    zc_pool_config_init(&cfg);
    cfg.backend = "auto";
    cfg.flags = ZC_POOL_IGNORE_ENV;
    cfg.arena_capacity = (size_t)16 << 20;
    CHECK(zc_pool_create(&a, &cfg) == 0, "auto pool");
    CHECK(strcmp(zc_backend_name(a), "kmod") == 0, "auto chose %s", zc_backend_name(a));
    CHECK(zc_pool_destroy(a) == 0, "destroy auto");
    CHECK(zc_pool_destroy(pool) == 0, "destroy");
    return 0;
}

/* write while in flight: no wait, peer gets the old bytes, the next send
 * carries the new ones (copied by the module: the page is no longer
 * sealed there, although the library still holds the object sealed) */
static int t_cow_then_copy(void)
{
    zc_pool *pool = kmod_pool();
    CHECK(pool, "no kmod pool");
    const size_t len = 256 * PG;
    uint8_t *obj = zc_alloc(pool, len), *old = malloc(len), *rx = malloc(len);
    CHECK(obj && old && rx, "alloc");
    fill(obj, len, 1);
    memcpy(old, obj, len);
    CHECK(zc_seal(pool, obj) == 0, "seal");
    int cli, srv, notsent = 0;
    CHECK(tcp_pair(&cli, &srv, 4096, 4 << 20) == 0, "tcp_pair");
    struct zc_stats s0 = stats(pool);
    ssize_t n = zc_send(pool, cli, obj, len, MSG_DONTWAIT);
    CHECK(n > (ssize_t)(4 * PG), "send %zd: %s", n, n < 0 ? strerror(errno) : "");
    struct zc_stats s1 = stats(pool);
    CHECK(s1.bytes_zerocopy - s0.bytes_zerocopy == (uint64_t)n, "zero-copy %" PRIu64 " of %zd",
          s1.bytes_zerocopy - s0.bytes_zerocopy, n);
    CHECK(s1.in_flight == 1, "in_flight %" PRIu64, s1.in_flight);
    CHECK(ioctl(cli, SIOCOUTQNSD, &notsent) == 0, "SIOCOUTQNSD");
    size_t p = ((size_t)n - 1) / PG - 1; /* a page in the unsent tail */
    CHECK(p * PG >= (size_t)n - (size_t)notsent, "page not in the unsent tail");
    double t0 = now_s();
    memset(obj + p * PG, 0x5a, PG);
    double dt = now_s() - t0;
    CHECK(dt < 0.5, "the write waited %.3f s", dt);
    zc_poll(pool, 0);
    CHECK(stats(pool).in_flight == 1, "send completed during the write: not a valid test");
    CHECK(recv_all(srv, rx, (size_t)n, 30) == (size_t)n, "recv");
    CHECK(memcmp(rx, old, (size_t)n) == 0, "peer got the new bytes: copy-on-write failed");
    CHECK(wait_idle(pool, 10) == 0, "completion not reaped");
    struct zc_stats s2 = stats(pool);
    CHECK(s2.completions > s0.completions, "no completion counted");
    zc_completions += s2.completions - s2.completions_copied -
                      (s0.completions - s0.completions_copied);
    /* the library still holds it sealed; the module must copy page p */
    uint64_t zc = 0;
    if (send_check(pool, cli, srv, obj, len, obj, &zc))
        return -1;
    CHECK(zc <= len - PG, "written page went zero-copy (%" PRIu64 " of %zu bytes)", zc, len);
    printf("kmod_lib: cow: write to an in-flight page took %.1f us, peer got the old bytes; "
           "resend: %" PRIu64 " of %zu bytes zero-copy, the written page copied\n",
           dt * 1e6, zc, len);
    close(cli);
    close(srv);
    CHECK(zc_free(pool, obj) == 0, "free");
    CHECK(zc_pool_destroy(pool) == 0, "destroy");
    free(old);
    free(rx);
    return 0;
}

/* write to an idle sealed object: the module unseals; next sends copy it;
 * free + realloc + seal makes it zero-copy again */
static int t_idle_write_reseal(void)
{
    zc_pool *pool = kmod_pool();
    CHECK(pool, "no kmod pool");
    const size_t len = 16 * PG;
    uint8_t *obj = zc_alloc(pool, len), *copy = malloc(len);
    CHECK(obj && copy, "alloc");
    fill(obj, len, 2);
    CHECK(zc_seal(pool, obj) == 0, "seal");
    int cli, srv;
    CHECK(tcp_pair(&cli, &srv, 0, 0) == 0, "tcp_pair");
    uint64_t zc = 0;
    memcpy(copy, obj, len);
    if (send_check(pool, cli, srv, obj, len, copy, &zc))
        return -1;
    CHECK(zc == len, "sealed object: %" PRIu64 " of %zu bytes zero-copy", zc, len);
    double t0 = now_s();
    memset(obj, 0x77, len); /* idle: unsealed by the module at once */
    double dt = now_s() - t0;
    CHECK(dt < 0.5, "the write waited %.3f s", dt);
    memcpy(copy, obj, len);
    if (send_check(pool, cli, srv, obj, len, copy, &zc))
        return -1;
    CHECK(zc == 0, "written object still went zero-copy (%" PRIu64 " bytes)", zc);
    /* zc_seal again is a no-op for the library (already sealed) */
    CHECK(zc_seal(pool, obj) == 0, "reseal");
    /* free and reallocate: unprotect + protect through the module */
    CHECK(zc_free(pool, obj) == 0, "free");
    uint8_t *obj2 = zc_alloc(pool, len);
    CHECK(obj2, "realloc");
    fill(obj2, len, 3);
    memcpy(copy, obj2, len);
    CHECK(zc_seal(pool, obj2) == 0, "seal 2");
    if (send_check(pool, cli, srv, obj2, len, copy, &zc))
        return -1;
    CHECK(zc == len, "resealed object: %" PRIu64 " of %zu bytes zero-copy", zc, len);
    /* small objects: a full pageblock of sealed 2 KiB objects */
    enum { NSMALL = 64 };
    uint8_t *small[NSMALL];
    for (int i = 0; i < NSMALL; i++) {
        small[i] = zc_alloc(pool, 8192);
        CHECK(small[i], "small alloc");
        fill(small[i], 8192, 10u + (unsigned)i);
        CHECK(zc_seal(pool, small[i]) == 0, "small seal");
    }
    uint64_t zsum = 0;
    for (int i = 0; i < NSMALL; i++) {
        uint8_t exp[8192];
        memcpy(exp, small[i], sizeof(exp));
        if (send_check(pool, cli, srv, small[i], 8192, exp, &zc))
            return -1;
        zsum += zc;
    }
    CHECK(zsum > 0, "no small object went zero-copy");
    for (int i = 0; i < NSMALL; i++)
        CHECK(zc_free(pool, small[i]) == 0, "small free");
    printf("kmod_lib: idle write took %.1f us, later sends copied; after free+reseal "
           "zero-copy again; small objects: %" PRIu64 " of %u bytes zero-copy\n",
           dt * 1e6, zsum, NSMALL * 8192u);
    CHECK(zc_free(pool, obj2) == 0, "free 2");
    close(cli);
    close(srv);
    CHECK(zc_pool_destroy(pool) == 0, "destroy");
    free(copy);
    return 0;
}

/* many sends in flight, reaped by zc_poll from another state; destroy with
 * a stuck socket times out cleanly, closing the socket frees the pages */
static int t_many_inflight(void)
{
    zc_pool *pool = kmod_pool();
    CHECK(pool, "no kmod pool");
    const size_t len = 16 * PG; /* a large object: sealed = protected */
    uint8_t *obj = zc_alloc(pool, len);
    CHECK(obj, "alloc");
    fill(obj, len, 4);
    CHECK(zc_seal(pool, obj) == 0, "seal");
    int tx, rx;
    CHECK(tcp_pair(&tx, &rx, 0, 0) == 0, "tcp_pair");
    uint8_t *buf = malloc(len);
    CHECK(buf, "malloc");
    int sends = 0;
    for (int i = 0; i < 2000; i++) {
        ssize_t n = zc_send(pool, tx, obj, len, 0);
        CHECK(n == (ssize_t)len, "send %d: %zd", i, n);
        CHECK(recv_all(rx, buf, len, 10) == len, "recv %d", i);
        CHECK(memcmp(buf, obj, len) == 0, "bytes %d", i);
        sends++;
        if (i % 100 == 0)
            zc_poll(pool, 0);
    }
    CHECK(wait_idle(pool, 10) == 0, "not idle");
    struct zc_stats s = stats(pool);
    CHECK(s.completions >= (uint64_t)sends, "completions %" PRIu64 " < %d", s.completions, sends);
    zc_completions += s.completions - s.completions_copied;
    close(tx);
    close(rx);
    free(buf);
    CHECK(zc_free(pool, obj) == 0, "free");
    CHECK(zc_pool_destroy(pool) == 0, "destroy");
    return 0;
}

int main(void)
{
    static const struct {
        const char *name;
        int (*fn)(void);
    } tests[] = {
        { "backend", t_backend },
        { "cow_then_copy", t_cow_then_copy },
        { "idle_write_reseal", t_idle_write_reseal },
        { "many_inflight", t_many_inflight },
    };
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
        double t0 = now_s();
        int r = tests[i].fn();
        printf("kmod_lib: %-20s %s (%.2f s)\n", tests[i].name, r ? "FAIL" : "ok", now_s() - t0);
        if (r)
            failed++;
        else
            passed++;
    }
    printf("kmod_lib: zero-copy completions %" PRIu64 " (loopback: the kernel copies on "
           "delivery, so most report copied)\n",
           zc_completions);
    printf("kmod_lib: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
