/* SPDX-License-Identifier: MIT */
/* Helpers shared by the zcopy tests: pools, loopback sockets, patterns. */
#ifndef ZCOPY_TEST_COMMON_H
#define ZCOPY_TEST_COMMON_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <zcopy/zcopy.h>

/* A pool on @backend (NULL: default) ignoring the environment. */
zc_pool *test_pool(const char *backend, uint32_t flags, size_t arena);
/* test_pool with pageblocks of @pageblock bytes (0: the library's default). */
zc_pool *test_pool_pageblock(const char *backend, uint32_t flags, size_t arena, size_t pageblock);

/* Deterministic bytes from (seed, offset): any slice can be checked. */
void pattern_fill(void *p, size_t n, uint64_t seed, size_t offset);
/* Index of the first wrong byte, or (size_t)-1. */
size_t pattern_check(const void *p, size_t n, uint64_t seed, size_t offset);

/* A sealed pool object of @size bytes of pattern @seed (offset 0). */
char *sealed_object(zc_pool *pool, size_t size, uint64_t seed);

/* Connected TCP pair on 127.0.0.1. */
void tcp_pair(int *client, int *server);
/* Connected UDP pair on 127.0.0.1. */
void udp_pair(int *tx, int *rx);
/* Read exactly @n bytes within @timeout_ms; returns bytes read. */
size_t recv_exact(int fd, void *buf, size_t n, int timeout_ms);
void set_nonblocking(int fd);

uint64_t test_now_ns(void);

/* Sanitizers slow the stress tests down: scale their counts. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define TEST_SCALE_DIV 4
#else
#define TEST_SCALE_DIV 1
#endif

/* pattern_check for bytes another thread may be writing (blocked by the
 * write protection): the race is the point of the test. */
size_t pattern_check_racy(const void *p, size_t n, uint64_t seed, size_t offset);

#endif
