/* SPDX-License-Identifier: MIT */
/*
 * The kernel behaviour the iouring backend relies on when it cancels a
 * SEND_ZC that waits for room on a socket found non-blocking (submit_wait):
 * the request's result reports the bytes it sent (or -ECANCELED), and it
 * carries IORING_CQE_F_MORE whenever a notification follows, so the backend
 * keeps the request until then. Raw liburing (only the test helpers of
 * common.c besides): it runs on each kernel the test suite runs on (the VM
 * stage: Debian's 6.1 and 6.12).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <liburing.h>

#include "common.h"

#define TAG_SEND 1234
#define TAG_CANCEL 1
#define BUF_LEN (1u << 20)

struct cancel_case {
    struct io_uring ring;
    bool ring_ok;
    char why[128]; /* why the kernel cannot run this case */
    int tx, rx;
    char *buf, *sink;
};

static int setup(void **state)
{
    struct cancel_case *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    int rc = io_uring_queue_init(16, &c->ring, 0);
    c->ring_ok = rc == 0;
    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "io_uring_queue_init: %s", strerror(-rc));
    } else {
        struct io_uring_probe *probe = io_uring_get_probe_ring(&c->ring);
        if (!probe || !io_uring_opcode_supported(probe, IORING_OP_SEND_ZC))
            snprintf(c->why, sizeof(c->why), "this kernel has no IORING_OP_SEND_ZC");
        io_uring_free_probe(probe);
    }
    tcp_pair(&c->tx, &c->rx);
    int sz = 32768;
    assert_int_equal(setsockopt(c->tx, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz)), 0);
    assert_int_equal(setsockopt(c->rx, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz)), 0);
    set_nonblocking(c->tx);
    c->buf = malloc(BUF_LEN);
    c->sink = malloc(BUF_LEN);
    assert_non_null(c->buf);
    assert_non_null(c->sink);
    memset(c->buf, 0x5a, BUF_LEN);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    struct cancel_case *c = *state;
    if (c->ring_ok)
        io_uring_queue_exit(&c->ring);
    close(c->tx);
    close(c->rx);
    free(c->buf);
    free(c->sink);
    free(c);
    return 0;
}

/* One SEND_ZC of the whole buffer (MSG_WAITALL, as the backend sends to a
 * socket it believes blocking) that cannot complete at once, cancelled as
 * the backend does; then every CQE until the notification, or 5 s. */
static void send_and_cancel(struct cancel_case *c, int *res, bool *more, bool *notif)
{
    if (c->why[0]) {
        printf("SKIP: %s\n", c->why);
        skip();
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);
    io_uring_prep_send_zc(sqe, c->tx, c->buf, BUF_LEN, MSG_WAITALL, 0);
    io_uring_sqe_set_data64(sqe, TAG_SEND);
    assert_int_equal(io_uring_submit(&c->ring), 1);
    struct io_uring_cqe *cqe;
    /* 1 MiB cannot fit in a 32 KiB socket: it must be waiting for room */
    assert_int_equal(io_uring_peek_cqe(&c->ring, &cqe), -EAGAIN);
    sqe = io_uring_get_sqe(&c->ring);
    io_uring_prep_cancel64(sqe, TAG_SEND, 0);
    io_uring_sqe_set_data64(sqe, TAG_CANCEL);
    assert_int_equal(io_uring_submit(&c->ring), 1);
    bool got = false;
    *notif = false;
    for (int i = 0; i < 8 && !*notif; i++) {
        struct __kernel_timespec ts = { .tv_sec = 5 };
        if (io_uring_wait_cqe_timeout(&c->ring, &cqe, &ts))
            break;
        if (cqe->user_data == TAG_SEND && (cqe->flags & IORING_CQE_F_NOTIF)) {
            assert_true(got); /* never before the result */
            *notif = true;
        } else if (cqe->user_data == TAG_SEND) {
            *res = cqe->res;
            *more = cqe->flags & IORING_CQE_F_MORE;
            got = true;
            if (*res > 0) /* the notification comes once the bytes are read */
                assert_int_equal(recv_exact(c->rx, c->sink, (size_t)*res, 5000), (size_t)*res);
        }
        io_uring_cqe_seen(&c->ring, cqe);
    }
    assert_true(got);
}

/* Nothing sent: the socket was full before. */
static void cancel_before_any_byte(void **state)
{
    struct cancel_case *c = *state;
    size_t queued = 0;
    for (int i = 0; i < 4096; i++) {
        ssize_t n = send(c->tx, c->buf, 65536, 0);
        if (n < 0) {
            assert_int_equal(errno, EAGAIN);
            break;
        }
        queued += (size_t)n;
    }
    assert_true(queued > 0);
    int res = 0;
    bool more = false, notif = false;
    send_and_cancel(c, &res, &more, &notif);
    assert_int_equal(res, -ECANCELED);
    /* the backend keeps the request exactly while F_MORE says a
     * notification follows */
    assert_int_equal(more, notif);
    printf("nothing sent: result %d, F_MORE %d, notification %d\n", res, more, notif);
}

/* Part sent: the result is that count, and a notification follows it. */
static void cancel_after_some_bytes(void **state)
{
    struct cancel_case *c = *state;
    int res = 0;
    bool more = false, notif = false;
    send_and_cancel(c, &res, &more, &notif);
    printf("part sent: result %d, F_MORE %d, notification %d\n", res, more, notif);
    assert_true(res > 0 && (size_t)res < BUF_LEN);
    assert_true(more);
    assert_true(notif);
    /* nothing beyond the reported count reached the peer */
    char extra;
    assert_int_equal(recv(c->rx, &extra, 1, MSG_DONTWAIT), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(cancel_before_any_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_after_some_bytes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
