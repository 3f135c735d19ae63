/* SPDX-License-Identifier: MIT */
/* zc_send / zc_sendmsg keep send(2) semantics: TCP and UDP, blocking and
 * non-blocking, short writes, errors. Every received byte is checked. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"

static const char *backend_under_test(void)
{
    const char *b = getenv("ZC_TEST_BACKEND");
    return b && *b ? b : "copy";
}

static int setup(void **state)
{
    *state = test_pool(backend_under_test(), 0, 0);
    return 0;
}

static int teardown(void **state)
{
    zc_pool_destroy(*state);
    return 0;
}

static void tcp_blocking_mixed_parts(void **state)
{
    zc_pool *pool = *state;
    int c, s;
    tcp_pair(&c, &s);
    /* pool objects (sealed, unsealed, large) and ordinary memory */
    size_t sizes[4] = { 100, 5000, 70000, 300 };
    char *parts[4];
    parts[0] = zc_alloc(pool, sizes[0]);
    parts[1] = zc_alloc(pool, sizes[1]);
    parts[2] = zc_alloc(pool, sizes[2]);
    parts[3] = malloc(sizes[3]);
    size_t total = 0;
    struct iovec iov[4];
    for (int i = 0; i < 4; i++) {
        pattern_fill(parts[i], sizes[i], 42, total);
        iov[i].iov_base = parts[i];
        iov[i].iov_len = sizes[i];
        total += sizes[i];
    }
    assert_int_equal(zc_seal(pool, parts[0]), 0);
    assert_int_equal(zc_seal(pool, parts[2]), 0);
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 4 };
    struct zc_stats before, after;
    zc_stats(pool, &before);
    assert_int_equal(zc_sendmsg(pool, c, &msg, 0), (ssize_t)total);
    /* send(2) semantics: ordinary memory may be rewritten at once */
    memset(parts[3], 0, sizes[3]);
    assert_int_equal(zc_send(pool, c, parts[1], sizes[1], 0), (ssize_t)sizes[1]);
    char *got = malloc(total + sizes[1]);
    assert_int_equal(recv_exact(s, got, total + sizes[1], 5000), total + sizes[1]);
    /* and sealed pool data too; this thread reads first, because a write
     * to data still in flight waits for its completion, which older kernels
     * (6.1) give on loopback only once the peer has read it */
    memset(parts[2], 0, sizes[2]);
    assert_int_equal(pattern_check(got, total, 42, 0), (size_t)-1);
    assert_int_equal(pattern_check(got + total, sizes[1], 42, sizes[0]), (size_t)-1);
    zc_stats(pool, &after);
    assert_int_equal(after.sends - before.sends, 2);
    assert_int_equal((after.bytes_copied + after.bytes_zerocopy) -
                         (before.bytes_copied + before.bytes_zerocopy),
                     total + sizes[1]);
    for (int i = 0; i < 3; i++)
        assert_int_equal(zc_free(pool, parts[i]), 0);
    free(parts[3]);
    free(got);
    close(c);
    close(s);
}

/* A non-blocking socket takes what fits, then says EAGAIN; the byte counts
 * are exact and in order. */
static void tcp_nonblocking_short_writes_and_eagain(void **state)
{
    zc_pool *pool = *state;
    int c, s;
    tcp_pair(&c, &s);
    int small = 16384;
    setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    set_nonblocking(c);
    size_t len = 4u << 20;
    char *buf = zc_alloc(pool, len);
    pattern_fill(buf, len, 9, 0);
    assert_int_equal(zc_seal(pool, buf), 0);
    size_t sent = 0;
    int eagain = 0, shorts = 0;
    for (int i = 0; i < 1000 && sent < len && !eagain; i++) {
        ssize_t r = zc_send(pool, c, buf + sent, len - sent, 0);
        if (r < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            eagain = 1;
            break;
        }
        assert_true(r > 0);
        if ((size_t)r < len - sent)
            shorts++;
        sent += (size_t)r;
    }
    assert_true(eagain);
    assert_true(shorts >= 1);
    assert_true(sent > 0 && sent < len);
    /* MSG_DONTWAIT on a full socket fails at once too */
    errno = 0;
    assert_int_equal(zc_send(pool, c, buf + sent, 1000, MSG_DONTWAIT), -1);
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    char *got = malloc(sent);
    assert_int_equal(recv_exact(s, got, sent, 5000), sent);
    assert_int_equal(pattern_check(got, sent, 9, 0), (size_t)-1);
    /* nothing beyond the reported count arrived */
    char extra;
    assert_int_equal(recv(s, &extra, 1, MSG_DONTWAIT), -1);
    assert_int_equal(errno, EAGAIN);
    free(got);
    assert_int_equal(zc_free(pool, buf), 0);
    close(c);
    close(s);
}

/* One call, one datagram, parts in order; blocking and MSG_DONTWAIT. */
static void udp_one_datagram_per_call(void **state)
{
    zc_pool *pool = *state;
    int tx, rx;
    udp_pair(&tx, &rx);
    char *a = zc_alloc(pool, 700), *b = zc_alloc(pool, 40000);
    char c[300];
    pattern_fill(a, 700, 3, 0);
    pattern_fill(b, 40000, 3, 700);
    pattern_fill(c, 300, 3, 40700);
    assert_int_equal(zc_seal(pool, b), 0);
    struct iovec iov[3] = { { a, 700 }, { b, 40000 }, { c, 300 } };
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 3 };
    for (int round = 0; round < 20; round++) {
        int flags = (round & 1) ? MSG_DONTWAIT : 0;
        assert_int_equal(zc_sendmsg(pool, tx, &msg, flags), 41000);
    }
    char *got = malloc(65536);
    for (int round = 0; round < 20; round++) {
        ssize_t r = recv(rx, got, 65536, 0);
        assert_int_equal(r, 41000);
        assert_int_equal(pattern_check(got, 41000, 3, 0), (size_t)-1);
    }
    /* a datagram too large fails whole, as sendmsg(2) does */
    char *huge = zc_alloc(pool, 70000);
    errno = 0;
    assert_int_equal(zc_send(pool, tx, huge, 70000, 0), -1);
    assert_int_equal(errno, EMSGSIZE);
    free(got);
    zc_free(pool, a);
    zc_free(pool, b);
    zc_free(pool, huge);
    close(tx);
    close(rx);
}

static void errors_are_those_of_send(void **state)
{
    zc_pool *pool = *state;
    char *p = zc_alloc(pool, 64);
    memset(p, 1, 64);
    int c, s;
    tcp_pair(&c, &s);
    close(c);
    errno = 0;
    assert_int_equal(zc_send(pool, c, p, 64, 0), -1);
    assert_int_equal(errno, EBADF);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    errno = 0;
    assert_int_equal(zc_send(pool, fds[1], p, 64, 0), -1);
    assert_int_equal(errno, ENOTSOCK);
    close(fds[0]);
    close(fds[1]);
    /* peer gone: EPIPE (with MSG_NOSIGNAL) or ECONNRESET */
    tcp_pair(&c, &s);
    close(s);
    ssize_t r = 0;
    for (int i = 0; i < 100 && r >= 0; i++)
        r = zc_send(pool, c, p, 64, MSG_NOSIGNAL);
    assert_int_equal(r, -1);
    assert_true(errno == EPIPE || errno == ECONNRESET);
    close(c);
    /* an unconnected TCP socket */
    int u = socket(AF_INET, SOCK_STREAM, 0);
    errno = 0;
    assert_int_equal(zc_send(pool, u, p, 64, MSG_NOSIGNAL), -1);
    assert_true(errno == EPIPE || errno == ENOTCONN);
    close(u);
    zc_free(pool, p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(tcp_blocking_mixed_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(tcp_nonblocking_short_writes_and_eagain, setup, teardown),
        cmocka_unit_test_setup_teardown(udp_one_datagram_per_call, setup, teardown),
        cmocka_unit_test_setup_teardown(errors_are_those_of_send, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
