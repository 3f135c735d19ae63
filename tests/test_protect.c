/* SPDX-License-Identifier: MIT */
/* Write protection of sealed data: writes are caught, wait for sends in
 * flight, complete with the right bytes; the application's own SIGSEGV
 * handler keeps working. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "internal.h"

static struct zc_stats stats_of(zc_pool *pool)
{
    struct zc_stats st;
    assert_int_equal(zc_stats(pool, &st), 0);
    return st;
}

static int setup(void **state)
{
    char why[256];
    if (zc__protect_probe(why, sizeof(why)) != 0) {
        printf("SKIP: write protection unavailable here: %s\n", why);
        *state = NULL;
        return 0;
    }
    *state = test_pool("copy", ZC_POOL_PROTECT, 0);
    return 0;
}

static int teardown(void **state)
{
    if (*state)
        zc_pool_destroy(*state);
    return 0;
}

#define NEED_POOL(state)                                                       \
    zc_pool *pool = *(state);                                                  \
    if (!pool)                                                                 \
        skip();

static void write_to_sealed_large_object_is_caught(void **state)
{
    NEED_POOL(state);
    size_t size = 100000;
    char *p = zc_alloc(pool, size);
    pattern_fill(p, size, 1, 0);
    assert_int_equal(zc_seal(pool, p), 0);
    struct zc_stats st = stats_of(pool);
    assert_int_equal(st.large_protected, 1);
    uint64_t faults = st.protect_faults;

    p[5000] = 'x'; /* traps, then completes */
    assert_int_equal(p[5000], 'x');
    st = stats_of(pool);
    assert_int_equal(st.protect_faults, faults + 1);
    assert_int_equal(st.large_protected, 0);
    assert_int_equal(st.protect_waits, 0);
    /* the rest is untouched; the object is unsealed, sealing again protects */
    p[5000] = (char)0;
    pattern_fill(p + 5000, 1, 1, 5000);
    assert_int_equal(pattern_check(p, size, 1, 0), (size_t)-1);
    assert_int_equal(zc_seal(pool, p), 0);
    assert_int_equal(stats_of(pool).large_protected, 1);
    assert_int_equal(zc_free(pool, p), 0);
    assert_int_equal(stats_of(pool).large_protected, 0);
}

static void write_to_sealed_pageblock_unseals_it(void **state)
{
    NEED_POOL(state);
    size_t size = 2000;
    unsigned c = zc__size_class(size);
    size_t n = pool->classes[c].nslots;
    char *objs[ZC_PB_MAX_SLOTS];
    for (size_t i = 0; i < n; i++) {
        objs[i] = zc_alloc(pool, size);
        pattern_fill(objs[i], size, 100 + i, 0);
        assert_int_equal(zc_seal(pool, objs[i]), 0);
    }
    struct zc_pageblock *pb = zc__lookup(pool, objs[0]);
    assert_int_equal(atomic_load(&pb->prot), ZC_PROT_ON);
    assert_int_equal(atomic_load(&pb->sealed), n);
    uint64_t faults = stats_of(pool).protect_faults;
    memset(objs[n / 2], 0xab, size);
    assert_int_equal(stats_of(pool).protect_faults, faults + 1);
    assert_int_equal(atomic_load(&pb->prot), ZC_PROT_NONE);
    assert_int_equal(atomic_load(&pb->sealed), 0);
    for (size_t i = 0; i < n; i++)
        if (i != n / 2)
            assert_int_equal(pattern_check(objs[i], size, 100 + i, 0), (size_t)-1);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(zc_free(pool, objs[i]), 0);
}

struct writer {
    char *p;
    size_t size;
    _Atomic int done;
};

static void *write_all(void *arg)
{
    struct writer *w = arg;
    pattern_fill(w->p, w->size, 77, 0);
    atomic_store(&w->done, 1);
    return NULL;
}

/* A send in flight (held here by hand) makes the writer wait for it. */
static void writer_waits_for_sends_in_flight(void **state)
{
    NEED_POOL(state);
    struct writer w = { .size = 300000 };
    w.p = zc_alloc(pool, w.size);
    pattern_fill(w.p, w.size, 5, 0);
    assert_int_equal(zc_seal(pool, w.p), 0);
    struct zc_pageblock *pb = zc__lookup(pool, w.p);
    atomic_fetch_add(&pb->in_flight, 1); /* as a backend does for a send */
    uint64_t waits = stats_of(pool).protect_waits;

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, write_all, &w), 0);
    usleep(200 * 1000);
    assert_int_equal(atomic_load(&w.done), 0);
    /* the bytes "in flight" are still the sealed ones */
    assert_int_equal(pattern_check_racy(w.p, w.size, 5, 0), (size_t)-1);
    zc__inflight_put(pool, pb, 1); /* the send completes */
    pthread_join(t, NULL);
    assert_int_equal(atomic_load(&w.done), 1);
    assert_int_equal(pattern_check(w.p, w.size, 77, 0), (size_t)-1);
    assert_int_equal(stats_of(pool).protect_waits, waits + 1);
    assert_int_equal(zc_free(pool, w.p), 0);
}

/* Writes from several threads to several protected objects at once. */
static void concurrent_writers_all_complete(void **state)
{
    NEED_POOL(state);
    enum { N = 8 };
    struct writer w[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        w[i].size = 40000 + (size_t)i * 4096;
        w[i].p = zc_alloc(pool, w[i].size);
        atomic_store(&w[i].done, 0);
        memset(w[i].p, i, w[i].size);
        assert_int_equal(zc_seal(pool, w[i].p), 0);
    }
    assert_int_equal(stats_of(pool).large_protected, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&t[i], NULL, write_all, &w[i]), 0);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(pattern_check(w[i].p, w[i].size, 77, 0), (size_t)-1);
        assert_int_equal(zc_free(pool, w[i].p), 0);
    }
}

/* The kernel writing into sealed data (read(2) into it) waits like a user
 * write when the kernel lets us handle its faults; otherwise it fails with
 * EFAULT and the data is unchanged. */
static void kernel_write_into_sealed_data(void **state)
{
    NEED_POOL(state);
    char *p = zc_alloc(pool, 65536);
    memset(p, 'a', 65536);
    assert_int_equal(zc_seal(pool, p), 0);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    assert_int_equal(write(fds[1], "hello", 5), 5);
    ssize_t r = read(fds[0], p + 10, 5);
    if (pool->prot.kernel_faults) {
        assert_int_equal(r, 5);
        assert_memory_equal(p + 10, "hello", 5);
    } else {
        assert_int_equal(r, -1);
        assert_int_equal(errno, EFAULT);
        assert_int_equal(p[10], 'a');
    }
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(zc_free(pool, p), 0);
}

static sigjmp_buf segv_jump;
static volatile sig_atomic_t segv_seen;

static void on_segv(int sig)
{
    (void)sig;
    segv_seen++;
    siglongjmp(segv_jump, 1);
}

static void application_sigsegv_handler_still_works(void **state)
{
    NEED_POOL(state);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_segv;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGSEGV, &sa, &old), 0);
    char *guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(guard != MAP_FAILED);
    segv_seen = 0;
    if (sigsetjmp(segv_jump, 1) == 0)
        *(volatile char *)guard = 1;
    assert_int_equal(segv_seen, 1);
    /* and a write to protected pool data does not reach that handler */
    char *p = zc_alloc(pool, 50000);
    assert_int_equal(zc_seal(pool, p), 0);
    if (sigsetjmp(segv_jump, 1) == 0)
        p[1] = 'z';
    assert_int_equal(segv_seen, 1);
    assert_int_equal(p[1], 'z');
    assert_int_equal(sigaction(SIGSEGV, &old, NULL), 0);
    munmap(guard, 4096);
    assert_int_equal(zc_free(pool, p), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(write_to_sealed_large_object_is_caught, setup, teardown),
        cmocka_unit_test_setup_teardown(write_to_sealed_pageblock_unseals_it, setup, teardown),
        cmocka_unit_test_setup_teardown(writer_waits_for_sends_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_writers_all_complete, setup, teardown),
        cmocka_unit_test_setup_teardown(kernel_write_into_sealed_data, setup, teardown),
        cmocka_unit_test_setup_teardown(application_sigsegv_handler_still_works, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
