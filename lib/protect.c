/* SPDX-License-Identifier: MIT */
/*
 * Write protection of sealed data with userfaultfd write-protect mode.
 *
 * A write to a protected page stops the writing thread in the kernel and
 * sends an event to the pool's fault thread, which waits until no send of
 * that pageblock is in flight, unseals the pageblock's objects and lifts the
 * protection, which lets the write complete. No signal handler is involved,
 * so the application's own SIGSEGV handling is untouched, and page-table
 * protection never splits the arena's mapping (see docs/design.md).
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Newer than the 6.1 UAPI headers; used only if UFFDIO_API reports them. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Open a userfaultfd: the syscall, then /dev/userfaultfd, then user-mode
 * only (always allowed, but kernel writes into protected pages then fail
 * with EFAULT instead of waiting). */
static int uffd_open(bool *kernel_faults, char *why, size_t why_len)
{
    int flags = O_CLOEXEC | O_NONBLOCK;
    int fd = (int)syscall(SYS_userfaultfd, flags);
    int err = errno;
    if (fd < 0) {
        int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
            close(dev);
        }
    }
    *kernel_faults = fd >= 0;
    if (fd < 0)
        fd = (int)syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY);
    if (fd < 0) {
        if (errno == ENOSYS || err == ENOSYS)
            snprintf(why, why_len, "userfaultfd: not in this kernel (ENOSYS)");
        else
            snprintf(why, why_len, "userfaultfd: %s", strerror(errno));
        return -errno;
    }
    return fd;
}

static int uffd_api(int fd, uint64_t want, uint64_t *got, char *why, size_t why_len)
{
    struct uffdio_api api = { .api = UFFD_API, .features = want };
    if (ioctl(fd, UFFDIO_API, &api)) {
        snprintf(why, why_len, "userfaultfd: UFFDIO_API: %s", strerror(errno));
        return -errno;
    }
    *got = api.features;
    return 0;
}

/* Can this process write-protect anonymous memory with userfaultfd? */
static int uffd_check(uint64_t *features, char *why, size_t why_len)
{
    bool kf;
    int fd = uffd_open(&kf, why, why_len);
    if (fd < 0)
        return fd;
    uint64_t got = 0;
    int rc = uffd_api(fd, 0, &got, why, why_len);
    close(fd);
    if (rc)
        return rc;
    if (!(got & UFFD_FEATURE_PAGEFAULT_FLAG_WP)) {
        snprintf(why, why_len, "userfaultfd: no write-protect mode in this kernel");
        return -ENOTSUP;
    }
    *features = got;
    return 0;
}

int zc__protect_probe(char *why, size_t why_len)
{
    uint64_t features;
    return uffd_check(&features, why, why_len);
}

int zc__range_protect(struct zc_pool *pool, void *addr, size_t len, bool on)
{
    if (pool->ops->caps & ZC_BE_OWN_PROTECT)
        return pool->ops->protect(pool, addr, len, on);
    if (on && !pool->prot.wp_unpopulated) {
        /* Without WP_UNPOPULATED a never-touched page would escape the
         * protection: touch every page first (contents are kept). */
        if (madvise(addr, len, MADV_POPULATE_WRITE))
            return -errno;
    }
    struct uffdio_writeprotect wp = {
        .range = { .start = (uintptr_t)addr, .len = len },
        .mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    if (ioctl(pool->prot.uffd, UFFDIO_WRITEPROTECT, &wp))
        return -errno;
    return 0;
}

/* @large is read before the state is published: after that the record may
 * be freed and reused by another thread. */
static void count_protect(struct zc_pool *pool, bool large, int delta)
{
    if (large)
        ZC_STAT_ADD(pool, large_protected, delta);
    else
        ZC_STAT_ADD(pool, pageblocks_protected, delta);
    if (delta > 0)
        ZC_STAT_ADD(pool, protects, 1);
    else
        ZC_STAT_ADD(pool, unprotects, 1);
}

int zc__pb_protect(struct zc_pool *pool, struct zc_pageblock *pb)
{
    uint32_t st = ZC_PROT_NONE;
    if (!atomic_compare_exchange_strong(&pb->prot, &st, ZC_PROT_PROTECTING))
        return 0; /* already protected, or a transition is under way */
    int rc = zc__range_protect(pool, pb->start, (size_t)pb->npages * ZC_PAGE_SIZE, true);
    if (rc) {
        atomic_store(&pb->prot, ZC_PROT_NONE);
        ZC_LOG("write-protect of %p (%u pages) failed: %s", (void *)pb->start, pb->npages,
               strerror(-rc));
        return rc;
    }
    /* Only now may sends treat it as protected. */
    bool large = pb->class_idx == ZC_NUM_CLASSES;
    atomic_store(&pb->prot, ZC_PROT_ON);
    count_protect(pool, large, 1);
    return 0;
}

int zc__pb_try_unprotect(struct zc_pool *pool, struct zc_pageblock *pb)
{
    uint32_t st = ZC_PROT_ON;
    if (!atomic_compare_exchange_strong(&pb->prot, &st, ZC_PROT_RELEASING))
        return st == ZC_PROT_NONE ? 0 : -EBUSY;
    /* A send that saw ON has raised in_flight before we read it here. */
    if (atomic_load(&pb->in_flight)) {
        atomic_store(&pb->prot, ZC_PROT_ON);
        return -EBUSY;
    }
    int rc = zc__range_protect(pool, pb->start, (size_t)pb->npages * ZC_PAGE_SIZE, false);
    if (rc) {
        atomic_store(&pb->prot, ZC_PROT_ON);
        return rc;
    }
    bool large = pb->class_idx == ZC_NUM_CLASSES;
    atomic_store(&pb->prot, ZC_PROT_NONE);
    count_protect(pool, large, -1);
    return 0;
}

static void short_sleep(void)
{
    struct timespec ts = { 0, 100 * 1000 };
    nanosleep(&ts, NULL);
}

void zc__pb_wait_idle(struct zc_pool *pool, struct zc_pageblock *pb)
{
    while (atomic_load(&pb->in_flight)) {
        int n = pool->ops->poll ? pool->ops->poll(pool, 1) : 0;
        if (n <= 0)
            short_sleep();
    }
}

/* A write hit protected page @addr: let it through once it is safe. */
static void handle_write_fault(struct zc_pool *pool, uintptr_t addr)
{
    uintptr_t page = addr & ~(uintptr_t)(ZC_PAGE_SIZE - 1);
    struct zc_pageblock *pb = zc__lookup(pool, (void *)page);
    ZC_STAT_ADD(pool, protect_faults, 1);
    if (!pb) {
        zc__range_protect(pool, (void *)page, ZC_PAGE_SIZE, false);
        return;
    }
    for (;;) {
        uint32_t st = atomic_load(&pb->prot);
        if (st == ZC_PROT_ON) {
            if (atomic_compare_exchange_strong(&pb->prot, &st, ZC_PROT_RELEASING))
                break;
            continue;
        }
        if (st == ZC_PROT_NONE) {
            /* lifted meanwhile; make sure this page is writable and woken */
            zc__range_protect(pool, (void *)page, ZC_PAGE_SIZE, false);
            return;
        }
        /* a protect or a release is under way elsewhere: let it finish */
        if (pool->ops->poll)
            pool->ops->poll(pool, 1);
        zc__span_reap_deferred(pool);
        short_sleep();
    }
    if (atomic_load(&pb->in_flight)) {
        ZC_STAT_ADD(pool, protect_waits, 1);
        zc__pb_wait_idle(pool, pb);
    }
    unsigned words = (pb->nslots + 63u) / 64u;
    for (unsigned w = 0; w < words; w++) {
        uint64_t old = atomic_exchange(&pb->sealed_bits[w], 0);
        atomic_fetch_sub(&pb->sealed, (uint32_t)__builtin_popcountll(old));
    }
    /* Lift the protection without waking the writer, publish NONE, then
     * wake it: once its write completes, the state already says so. */
    struct uffdio_range range = { .start = (uintptr_t)pb->start,
                                  .len = (size_t)pb->npages * ZC_PAGE_SIZE };
    struct uffdio_writeprotect wp = { .range = range, .mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE };
    if (ioctl(pool->prot.uffd, UFFDIO_WRITEPROTECT, &wp))
        ZC_LOG("unprotect of %p failed: %s", (void *)pb->start, strerror(errno));
    bool large = pb->class_idx == ZC_NUM_CLASSES;
    atomic_store(&pb->prot, ZC_PROT_NONE);
    count_protect(pool, large, -1);
    ioctl(pool->prot.uffd, UFFDIO_WAKE, &range);
}

static void *fault_thread(void *arg)
{
    struct zc_pool *pool = arg;
    struct pollfd fds[2] = {
        { .fd = pool->prot.uffd, .events = POLLIN },
        { .fd = pool->prot.stop_fd, .events = POLLIN },
    };
    for (;;) {
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            ZC_LOG("fault thread: poll: %s", strerror(errno));
            break;
        }
        if (fds[1].revents)
            break;
        struct uffd_msg msg[16];
        ssize_t n = read(pool->prot.uffd, msg, sizeof(msg));
        if (n < 0)
            continue; /* EAGAIN: another wake-up took it */
        for (size_t i = 0; i < (size_t)n / sizeof(msg[0]); i++) {
            if (msg[i].event == UFFD_EVENT_PAGEFAULT &&
                (msg[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP))
                handle_write_fault(pool, (uintptr_t)msg[i].arg.pagefault.address);
        }
    }
    return NULL;
}

int zc__protect_init(struct zc_pool *pool, char *why, size_t why_len)
{
    struct zc_protector *pr = &pool->prot;
    pr->uffd = -1;
    pr->stop_fd = -1;
    if (pool->ops->caps & ZC_BE_OWN_PROTECT)
        return 0;
    uint64_t supported;
    int rc = uffd_check(&supported, why, why_len);
    if (rc)
        return rc;
    int fd = uffd_open(&pr->kernel_faults, why, why_len);
    if (fd < 0)
        return fd;
    uint64_t want = supported & UFFD_FEATURE_WP_UNPOPULATED, got = 0;
    rc = uffd_api(fd, want, &got, why, why_len);
    if (rc)
        goto fail;
    pr->wp_unpopulated = (got & UFFD_FEATURE_WP_UNPOPULATED) != 0;
    struct uffdio_register reg = {
        .range = { .start = (uintptr_t)pool->arena, .len = pool->arena_size },
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    if (ioctl(fd, UFFDIO_REGISTER, &reg)) {
        rc = -errno;
        snprintf(why, why_len, "userfaultfd: register arena: %s", strerror(errno));
        goto fail;
    }
    pr->uffd = fd;
    pr->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (pr->stop_fd < 0) {
        rc = -errno;
        snprintf(why, why_len, "eventfd: %s", strerror(errno));
        goto fail;
    }
    rc = -pthread_create(&pr->thread, NULL, fault_thread, pool);
    if (rc) {
        snprintf(why, why_len, "fault thread: %s", strerror(-rc));
        goto fail;
    }
    pr->thread_started = true;
    ZC_LOG("write protection: userfaultfd%s%s", pr->kernel_faults ? "" : " (user mode only)",
           pr->wp_unpopulated ? ", WP_UNPOPULATED" : "");
    return 0;
fail:
    if (pr->stop_fd >= 0)
        close(pr->stop_fd);
    close(fd);
    pr->uffd = pr->stop_fd = -1;
    return rc;
}

void zc__protect_fini(struct zc_pool *pool)
{
    struct zc_protector *pr = &pool->prot;
    if (pr->thread_started) {
        uint64_t one = 1;
        if (write(pr->stop_fd, &one, sizeof(one)) == sizeof(one))
            pthread_join(pr->thread, NULL);
        pr->thread_started = false;
    }
    if (pr->stop_fd >= 0)
        close(pr->stop_fd);
    if (pr->uffd >= 0)
        close(pr->uffd); /* also lifts every protection and wakes waiters */
    pr->uffd = pr->stop_fd = -1;
}
