/* SPDX-License-Identifier: MIT */
#include "common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

zc_pool *test_pool(const char *backend, uint32_t flags, size_t arena)
{
    return test_pool_pageblock(backend, flags, arena, 0);
}

zc_pool *test_pool_pageblock(const char *backend, uint32_t flags, size_t arena, size_t pageblock)
{
    /* A NULL backend follows ZC_TEST_BACKEND. ZC_TEST_POOL_BACKEND (the VM
     * stage sets it) also moves the pools the allocator tests ask on "copy"
     * without ZC_POOL_PROTECT onto that backend: their arena then comes from
     * it (kmod: /dev/zcopy). Pools with ZC_POOL_PROTECT stay on copy: those
     * tests check the userfaultfd protection semantics. */
    const char *env = getenv("ZC_TEST_BACKEND");
    if (!backend && env && *env)
        backend = env;
    env = getenv("ZC_TEST_POOL_BACKEND");
    if (env && *env &&
        (!backend || (strcmp(backend, "copy") == 0 && !(flags & ZC_POOL_PROTECT))))
        backend = env;
    struct zc_pool_config cfg;
    zc_pool_config_init(&cfg);
    cfg.backend = backend;
    cfg.flags = flags | ZC_POOL_IGNORE_ENV;
    cfg.arena_capacity = arena ? arena : (size_t)256 << 20;
    cfg.pageblock_size = pageblock;
    zc_pool *pool = NULL;
    int rc = zc_pool_create(&pool, &cfg);
    if (rc)
        fail_msg("zc_pool_create(%s): %s", backend ? backend : "default", zc_strerror(rc));
    return pool;
}

static uint8_t byte_at(uint64_t seed, size_t i)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + (i / 8) * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 29;
    return (uint8_t)(x >> ((i % 8) * 8));
}

void pattern_fill(void *p, size_t n, uint64_t seed, size_t offset)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = byte_at(seed, offset + i);
}

size_t pattern_check(const void *p, size_t n, uint64_t seed, size_t offset)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != byte_at(seed, offset + i))
            return i;
    return (size_t)-1;
}

#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize_thread))
#endif
size_t pattern_check_racy(const void *p, size_t n, uint64_t seed, size_t offset)
{
    const volatile uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != byte_at(seed, offset + i))
            return i;
    return (size_t)-1;
}

static struct sockaddr_in loopback(void)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

char *sealed_object(zc_pool *pool, size_t size, uint64_t seed)
{
    char *p = zc_alloc(pool, size);
    assert_non_null(p);
    pattern_fill(p, size, seed, 0);
    assert_int_equal(zc_seal(pool, p), 0);
    return p;
}

void tcp_pair(int *client, int *server)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    struct sockaddr_in a = loopback();
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(s >= 0);
    close(l);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    *client = c;
    *server = s;
}

void udp_pair(int *tx, int *rx)
{
    int r = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(r >= 0);
    struct sockaddr_in a = loopback();
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(r, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(r, (struct sockaddr *)&a, &alen), 0);
    int t = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(t >= 0);
    assert_int_equal(connect(t, (struct sockaddr *)&a, sizeof(a)), 0);
    int big = 4 << 20;
    setsockopt(r, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    *tx = t;
    *rx = r;
}

uint64_t test_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

size_t recv_exact(int fd, void *buf, size_t n, int timeout_ms)
{
    size_t got = 0;
    uint64_t deadline = test_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    while (got < n) {
        uint64_t now = test_now_ns();
        if (now >= deadline)
            break;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int left = (int)((deadline - now) / 1000000ull) + 1;
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t r = recv(fd, (char *)buf + got, n - got, MSG_DONTWAIT);
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

void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    assert_true(fl >= 0);
    assert_int_equal(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}
