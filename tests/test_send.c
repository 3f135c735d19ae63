/* SPDX-License-Identifier: MIT */
/* zc_send / zc_sendmsg keep send(2) semantics: TCP and UDP, blocking and
 * non-blocking, short writes, errors. Every received byte is checked. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
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

/* A message of parts all below the copy threshold is copied whole, by
 * every backend, and counted once. */
static void tcp_small_parts_are_copied(void **state)
{
    zc_pool *pool = *state;
    int c, s;
    tcp_pair(&c, &s);
    size_t sizes[3] = { 100, 3000, 1 };
    char *parts[3];
    struct iovec iov[3];
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        parts[i] = zc_alloc(pool, sizes[i]);
        assert_non_null(parts[i]);
        pattern_fill(parts[i], sizes[i], 7, total);
        assert_int_equal(zc_seal(pool, parts[i]), 0);
        iov[i].iov_base = parts[i];
        iov[i].iov_len = sizes[i];
        total += sizes[i];
    }
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = 3 };
    struct zc_stats before, after;
    zc_stats(pool, &before);
    for (int round = 0; round < 4; round++)
        assert_int_equal(zc_sendmsg(pool, c, &msg, 0), (ssize_t)total);
    char *got = malloc(4 * total);
    assert_non_null(got);
    assert_int_equal(recv_exact(s, got, 4 * total, 5000), 4 * total);
    for (int round = 0; round < 4; round++)
        assert_int_equal(pattern_check(got + round * total, total, 7, 0), (size_t)-1);
    zc_stats(pool, &after);
    assert_int_equal(after.sends - before.sends, 4);
    assert_int_equal(after.bytes_copied - before.bytes_copied, 4 * total);
    assert_int_equal(after.bytes_zerocopy, before.bytes_zerocopy);
    assert_int_equal(after.zerocopy_parts, before.zerocopy_parts);
    for (int i = 0; i < 3; i++)
        assert_int_equal(zc_free(pool, parts[i]), 0);
    free(got);
    close(c);
    close(s);
}

/* A TCP pair whose send and receive buffers are @bytes. */
static void tcp_pair_small(int *c, int *s, int bytes)
{
    tcp_pair(c, s);
    setsockopt(*c, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
    setsockopt(*s, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
}

/* A non-blocking socket takes what fits, then says EAGAIN; the byte counts
 * are exact and in order. */
static void tcp_nonblocking_short_writes_and_eagain(void **state)
{
    zc_pool *pool = *state;
    int c, s;
    tcp_pair_small(&c, &s, 16384);
    set_nonblocking(c);
    size_t len = 4u << 20;
    char *buf = sealed_object(pool, len, 9);
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

/* A message of four parts, two of them sealed pool objects (the iouring
 * backend sends it as a chain of linked requests). */
struct parts_msg {
    char *part[4];
    size_t len[4];
    size_t total;
    char *whole; /* the message as one buffer, for checking */
};

static void parts_msg_init(zc_pool *pool, struct parts_msg *m)
{
    static const size_t lens[4] = { 37, 100000, 5, 70000 };
    m->total = 0;
    for (int i = 0; i < 4; i++) {
        m->len[i] = lens[i];
        m->part[i] = (i & 1) ? zc_alloc(pool, lens[i]) : malloc(lens[i]);
        assert_non_null(m->part[i]);
        pattern_fill(m->part[i], lens[i], 77, m->total);
        m->total += lens[i];
    }
    assert_int_equal(zc_seal(pool, m->part[1]), 0);
    assert_int_equal(zc_seal(pool, m->part[3]), 0);
    m->whole = malloc(m->total);
    pattern_fill(m->whole, m->total, 77, 0);
}

static void parts_msg_free(zc_pool *pool, struct parts_msg *m)
{
    for (int i = 0; i < 4; i++) {
        if (i & 1)
            assert_int_equal(zc_free(pool, m->part[i]), 0);
        else
            free(m->part[i]);
    }
    free(m->whole);
}

/* The iovecs of the message from byte @off on. */
static int parts_msg_iov(const struct parts_msg *m, size_t off, struct iovec *iov)
{
    int n = 0;
    for (int i = 0; i < 4; i++) {
        if (off >= m->len[i]) {
            off -= m->len[i];
            continue;
        }
        iov[n].iov_base = m->part[i] + off;
        iov[n++].iov_len = m->len[i] - off;
        off = 0;
    }
    return n;
}

/* Read what is there (all of it with @wait_ms) and check it against the
 * stream of whole messages (*bad: the first wrong byte's position);
 * returns the bytes read. Called by one thread at a time. */
static size_t drain_check(int s, const char *whole, size_t total, size_t *pos, size_t upto,
                          int wait_ms, size_t *bad)
{
    static char buf[65536];
    size_t got = 0;
    while (*pos < upto) {
        size_t want = upto - *pos < sizeof(buf) ? upto - *pos : sizeof(buf);
        ssize_t r = wait_ms ? (ssize_t)recv_exact(s, buf, want, wait_ms)
                            : recv(s, buf, want, MSG_DONTWAIT);
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r && *bad == SIZE_MAX; i++)
            if (buf[i] != whole[(*pos + (size_t)i) % total])
                *bad = *pos + (size_t)i;
        *pos += (size_t)r;
        got += (size_t)r;
    }
    return got;
}

/* A TCP pair whose buffers hold a fraction of the message, and the message. */
static void parts_setup(zc_pool *pool, int *c, int *s, struct parts_msg *m)
{
    tcp_pair_small(c, s, 32768);
    parts_msg_init(pool, m);
}

/* Non-blocking: a message of several parts is sent in order as far as it
 * fits, short counts are exact, the rest follows on the next call. */
static void tcp_nonblocking_parts_short_writes(void **state)
{
    zc_pool *pool = *state;
    int c, s;
    struct parts_msg m;
    parts_setup(pool, &c, &s, &m);
    set_nonblocking(c);
    struct zc_stats before, after;
    zc_stats(pool, &before);
    const int nmsgs = 60;
    size_t sent = 0, checked = 0, bad = SIZE_MAX;
    int shorts = 0, eagains = 0;
    uint64_t deadline = test_now_ns() + 20000000000ull;
    while (sent < nmsgs * m.total && test_now_ns() < deadline) {
        struct iovec iov[4];
        size_t off = sent % m.total;
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)parts_msg_iov(&m, off, iov) };
        ssize_t r = zc_sendmsg(pool, c, &msg, 0);
        if (r < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            eagains++;
            drain_check(s, m.whole, m.total, &checked, sent, 0, &bad);
            continue;
        }
        assert_true(r > 0 && (size_t)r <= m.total - off);
        shorts += (size_t)r < m.total - off;
        sent += (size_t)r;
    }
    assert_int_equal(sent, nmsgs * m.total);
    drain_check(s, m.whole, m.total, &checked, sent, 5000, &bad);
    assert_int_equal(checked, sent);
    assert_int_equal(bad, SIZE_MAX);
    char extra;
    assert_int_equal(recv(s, &extra, 1, MSG_DONTWAIT), -1);
    assert_true(shorts > 0 && eagains > 0);
    zc_stats(pool, &after);
    assert_int_equal((after.bytes_copied + after.bytes_zerocopy) -
                         (before.bytes_copied + before.bytes_zerocopy),
                     sent);
    /* the zero-copy backends sent some of it without a copy, even on
     * loopback (until they find that the kernel copies there) */
    if (strcmp(backend_under_test(), "copy") != 0)
        assert_true(after.bytes_zerocopy > before.bytes_zerocopy);
    parts_msg_free(pool, &m);
    close(c);
    close(s);
}

/* Reads slowly, checking every byte against a stream of whole messages. */
struct slow_reader {
    int s;
    const char *whole;
    size_t total, expect, checked, bad;
};

static void *slow_reader_main(void *arg)
{
    struct slow_reader *sr = arg;
    while (sr->checked < sr->expect) {
        struct timespec ts = { 0, 2000000 };
        nanosleep(&ts, NULL);
        size_t upto = sr->checked + 20000 < sr->expect ? sr->checked + 20000 : sr->expect;
        if (!drain_check(sr->s, sr->whole, sr->total, &sr->checked, upto, 10000, &sr->bad))
            break;
    }
    if (sr->checked < sr->expect)
        shutdown(sr->s, SHUT_RDWR); /* a sender still blocked fails, not hangs */
    return NULL;
}

/* Blocking: @n calls of zc_sendmsg(@msg) to a slow reader of @s, each of
 * which must send all @total bytes; the reader checks every byte
 * against @whole. */
static void blocking_sends_to_slow_reader(zc_pool *pool, int c, int s, const struct msghdr *msg,
                                          const char *whole, size_t total, int n)
{
    struct slow_reader sr = {
        .s = s, .whole = whole, .total = total, .expect = (size_t)n * total, .bad = SIZE_MAX
    };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_reader_main, &sr), 0);
    int sent_whole = 0;
    for (int i = 0; i < n; i++) {
        ssize_t r = zc_sendmsg(pool, c, msg, 0);
        if (r != (ssize_t)total) {
            print_message("message %d: zc_sendmsg returned %zd of %zu (%s)\n", i, r, total,
                          r < 0 ? strerror(errno) : "short");
            break;
        }
        sent_whole++;
    }
    assert_int_equal(sent_whole, n);
    pthread_join(t, NULL);
    assert_int_equal(sr.checked, sr.expect);
    assert_int_equal(sr.bad, SIZE_MAX);
}

/* Blocking: every call sends the whole message although the socket's
 * buffer is a fraction of it and the reader is slow. */
static void tcp_blocking_parts_slow_reader(void **state)
{
    zc_pool *pool = *state;
    int c, s;
    struct parts_msg m;
    parts_setup(pool, &c, &s, &m);
    struct iovec iov[4];
    struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)parts_msg_iov(&m, 0, iov) };
    blocking_sends_to_slow_reader(pool, c, s, &msg, m.whole, m.total, 20);
    parts_msg_free(pool, &m);
    close(c);
    close(s);
}

/* The same with one large sealed object (the iouring backend sends it by
 * one SEND_ZC, which must not stop short where send(2) would wait). */
static void tcp_blocking_object_slow_reader(void **state)
{
    zc_pool *pool = *state;
    int c, s;
    tcp_pair_small(&c, &s, 32768);
    size_t len = 1u << 20;
    char *obj = sealed_object(pool, len, 77);
    const int nsends = 8;
    struct zc_stats before, after;
    zc_stats(pool, &before);
    struct iovec iov = { obj, len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    blocking_sends_to_slow_reader(pool, c, s, &msg, obj, len, nsends);
    zc_stats(pool, &after);
    assert_int_equal((after.bytes_copied + after.bytes_zerocopy) -
                         (before.bytes_copied + before.bytes_zerocopy),
                     nsends * len);
    /* the zero-copy backends took at least the first one zero-copy (later
     * ones may go by copy once loopback is seen to copy) */
    if (strcmp(zc_backend_name(pool), "copy") != 0)
        assert_true(after.bytes_zerocopy - before.bytes_zerocopy >= len);
    assert_int_equal(zc_free(pool, obj), 0);
    close(c);
    close(s);
}

/* A socket's O_NONBLOCK may change between calls (a server that accepts,
 * greets, then turns to its event loop): each call behaves as send(2) does
 * with the flag as it is then. The iouring backend asks a socket only when
 * a send has to wait (cancelling it if the socket turned non-blocking), and
 * remembers one that did not block, to send to it with MSG_DONTWAIT. */
static void tcp_socket_that_changes_blocking_mode(void **state)
{
    zc_pool *pool = *state;
    int c, s;
    tcp_pair_small(&c, &s, 32768);
    size_t len = 1u << 20;
    char *obj = sealed_object(pool, len, 31);
    /* non-blocking, never sent to before: what fits, at once */
    set_nonblocking(c);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ssize_t r = zc_send(pool, c, obj, len, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 5);
    assert_true((r > 0 && (size_t)r < len) || (r < 0 && errno == EAGAIN));
    size_t first = r > 0 ? (size_t)r : 0;
    char *got = malloc(len);
    assert_non_null(got);
    assert_int_equal(recv_exact(s, got, first, 5000), first);
    assert_int_equal(pattern_check(got, first, 31, 0), (size_t)-1);
    /* blocking again: whole 1 MiB sends through a 32 KiB buffer */
    fcntl(c, F_SETFL, fcntl(c, F_GETFL) & ~O_NONBLOCK);
    struct iovec iov = { obj, len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    struct zc_stats before, after;
    zc_stats(pool, &before);
    blocking_sends_to_slow_reader(pool, c, s, &msg, obj, len, 3);
    zc_stats(pool, &after);
    /* iouring: the first of them found the socket blocking and sent the
     * rest by copy, visibly */
    if (strcmp(zc_backend_name(pool), "iouring") == 0)
        assert_true(after.fallbacks > before.fallbacks);
    /* non-blocking once more: EAGAIN when full, at once */
    set_nonblocking(c);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t part[200];
    int nparts = 0, eagain = 0;
    while (nparts < 200 && !eagain) {
        r = zc_send(pool, c, obj, len, 0);
        if (r < 0) {
            assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
            eagain = 1;
        } else {
            assert_true(r > 0 && (size_t)r < len);
            part[nparts++] = (size_t)r;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(eagain);
    assert_true(t1.tv_sec - t0.tv_sec < 5);
    /* each call queued a prefix of the object */
    for (int i = 0; i < nparts; i++) {
        assert_int_equal(recv_exact(s, got, part[i], 5000), part[i]);
        assert_int_equal(pattern_check(got, part[i], 31, 0), (size_t)-1);
    }
    char extra;
    assert_int_equal(recv(s, &extra, 1, MSG_DONTWAIT), -1);
    free(got);
    assert_int_equal(zc_free(pool, obj), 0);
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
    /* peer gone: EPIPE (with MSG_NOSIGNAL) or ECONNRESET. The first send
     * only draws the peer's RST; wait for it (POLLERR/POLLHUP; the FIN
     * already made the socket readable), since a slow machine may not
     * have processed it before the next send. */
    tcp_pair(&c, &s);
    close(s);
    ssize_t r = 0;
    for (int i = 0; i < 100 && r >= 0; i++) {
        r = zc_send(pool, c, p, 64, MSG_NOSIGNAL);
        if (r >= 0) {
            struct pollfd pf = { .fd = c, .events = 0 };
            poll(&pf, 1, 50);
        }
    }
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
    const char *b = backend_under_test();
    char why[200];
    int rc = zc_backend_probe(b, why, sizeof(why));
    if (rc) {
        /* a kernel without the feature (or a build without the backend) */
        printf("test_send: backend %s cannot run here: %s; skipped\n", b, why);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(tcp_blocking_mixed_parts, setup, teardown),
        cmocka_unit_test_setup_teardown(tcp_small_parts_are_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(tcp_nonblocking_short_writes_and_eagain, setup, teardown),
        cmocka_unit_test_setup_teardown(tcp_nonblocking_parts_short_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(tcp_blocking_parts_slow_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(tcp_blocking_object_slow_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(tcp_socket_that_changes_blocking_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(udp_one_datagram_per_call, setup, teardown),
        cmocka_unit_test_setup_teardown(errors_are_those_of_send, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
