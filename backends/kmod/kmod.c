/* SPDX-License-Identifier: MIT */
/*
 * The kmod backend: user-space glue for /dev/zcopy (backends/kmod/module).
 *
 * - The pool's arena is the module's: SETUP + mmap(MAP_SHARED); the module
 *   allocates, zeroes and accounts its pages on first touch.
 * - Protection is the module's (ZC_BE_OWN_PROTECT): SEAL/UNSEAL ioctls on
 *   arena offsets. A write to a sealed page never waits: the module unseals
 *   an idle page, or gives the writer a fresh copy of a page in flight. The
 *   module sends only pages that are sealed *in the module*, so a page the
 *   application wrote after sealing is copied by later sends, whatever the
 *   library believes (see docs/kmod.md).
 * - A send is one SEND ioctl with the whole iovec: sealed arena pages go by
 *   reference, the rest is copied in the same sock_sendmsg() call.
 * - Completions: the module writes send_id into a ring in the read-only
 *   status area when every page reference of that send is released
 *   (ABI 1.1, ZCOPY_FEAT_DONE_RING). We keep a record per send that took
 *   pages by reference, with the pageblocks the library pinned for it, and
 *   drop those in-flight references when the ring shows the send done.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../lib/internal.h"
#include "module/include/uapi/zcopy_kmod.h"

/* Flags the SEND ioctl takes; anything else goes through plain sendmsg. */
#define KMOD_MSG_FLAGS (MSG_DONTWAIT | MSG_NOSIGNAL | MSG_MORE | MSG_EOR)
#define KMOD_NEED_FEATURES                                                     \
    (ZCOPY_FEAT_ARENA | ZCOPY_FEAT_SEAL | ZCOPY_FEAT_SEND | ZCOPY_FEAT_STATUS | \
     ZCOPY_FEAT_SEND_ADDR | ZCOPY_FEAT_DONE_RING)
/* Default copy threshold, for stream and datagram sockets alike.
 * Not measured for kmod (the build host cannot load modules and timings
 * under qemu TCG mean nothing). The nearest measured mechanism is io_uring
 * SEND_ZC on registered buffers (no pinning per send, like the module's own
 * pages): it beats copying from about 1 KiB over UDP and 16 KiB over TCP
 * (ARCHITECTURE.md). One page sits between the two and needs no syscall to
 * learn the socket type on every send; below a page, a part still costs a
 * page reference, an skb frag and completion tracking. ZC_COPY_THRESHOLD
 * or zc_pool_config.copy_threshold override it.
 */
#define KMOD_COPY_THRESHOLD 4096

/* A send that holds arena pages by reference, with the library's pins. */
struct kmod_rec {
    struct kmod_rec *next;
    uint64_t id;
    size_t nparts;
    struct zc_part parts[]; /* only the parts with a pageblock */
};

struct kmod_state {
    int fd;
    uint8_t *arena;
    size_t arena_size;
    const struct zcopy_status *st;
    size_t st_size;
    const _Atomic uint64_t *done;
    uint32_t done_slots;
    pthread_mutex_t lock;   /* guards everything below */
    struct kmod_rec *head, *tail; /* pending, in the order they were sent */
    size_t npending;
    uint64_t last_id;       /* highest send_id seen */
    _Atomic uint64_t seen;  /* st->completions at the last full scan */
    _Atomic uint64_t faults_seen; /* st->cow_faults + unseal_faults counted */
    bool dirty;             /* a record was added since that scan */
};

static inline struct kmod_state *state_of(struct zc_pool *pool)
{
    return pool->backend;
}

static uint64_t load_u64(const void *p)
{
    return atomic_load_explicit((const _Atomic uint64_t *)p, memory_order_acquire);
}

/* Open the device and check its ABI; returns the fd or a negative errno. */
static int dev_open(struct zcopy_info *info, char *why, size_t why_len)
{
    int fd = open(ZCOPY_DEVICE_PATH, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        if (err == ENOENT || err == ENXIO || err == ENODEV) {
            snprintf(why, why_len, "no %s (module not loaded)", ZCOPY_DEVICE_PATH);
            return -ENODEV;
        }
        snprintf(why, why_len, "%s: %s", ZCOPY_DEVICE_PATH, strerror(err));
        return -err;
    }
    memset(info, 0, sizeof(*info));
    if (ioctl(fd, ZCOPY_IOC_INFO, info)) {
        int err = errno;
        snprintf(why, why_len, "%s: INFO ioctl: %s (not the zcopy module?)",
                 ZCOPY_DEVICE_PATH, strerror(err));
        close(fd);
        return err == ENOTTY ? -EPROTO : -err;
    }
    unsigned major = info->abi_version >> 16, minor = info->abi_version & 0xffff;
    if (major != ZCOPY_ABI_MAJOR) {
        snprintf(why, why_len, "module ABI %u.%u, this library speaks ABI %u.%u (major differs)",
                 major, minor, ZCOPY_ABI_MAJOR, ZCOPY_ABI_MINOR);
        close(fd);
        return -EPROTO;
    }
    if ((info->features & KMOD_NEED_FEATURES) != KMOD_NEED_FEATURES ||
        info->page_size != ZC_PAGE_SIZE) {
        snprintf(why, why_len,
                 "module ABI %u.%u lacks features %#llx (page size %u); this library needs "
                 "ABI %u.%u",
                 major, minor,
                 (unsigned long long)(KMOD_NEED_FEATURES & ~info->features), info->page_size,
                 ZCOPY_ABI_MAJOR, ZCOPY_ABI_MINOR);
        close(fd);
        return -EPROTO;
    }
    return fd;
}

static int kmod_probe(char *why, size_t why_len)
{
    struct zcopy_info info;
    int fd = dev_open(&info, why, why_len);
    if (fd < 0)
        return fd;
    close(fd);
    snprintf(why, why_len, "ok");
    return 0;
}

static void state_free(struct kmod_state *ks)
{
    if (ks->st && ks->st != MAP_FAILED)
        munmap((void *)(uintptr_t)ks->st, ks->st_size);
    if (ks->arena && ks->arena != MAP_FAILED)
        munmap(ks->arena, ks->arena_size);
    if (ks->fd >= 0)
        close(ks->fd);
    struct kmod_rec *r = ks->head;
    while (r) {
        struct kmod_rec *next = r->next;
        free(r);
        r = next;
    }
    pthread_mutex_destroy(&ks->lock);
    free(ks);
}

static void *kmod_arena_map(struct zc_pool *pool, size_t size)
{
    char why[256];
    struct zcopy_info info;
    int err = ENOMEM;
    struct kmod_state *ks = calloc(1, sizeof(*ks));
    if (!ks) {
        errno = ENOMEM;
        return NULL;
    }
    ks->fd = -1;
    pthread_mutex_init(&ks->lock, NULL);
    ks->fd = dev_open(&info, why, sizeof(why));
    if (ks->fd < 0) {
        err = -ks->fd;
        ZC_LOG("kmod: %s", why);
        goto fail;
    }
    struct zcopy_setup su = { .arena_size = size };
    if (ioctl(ks->fd, ZCOPY_IOC_SETUP, &su)) {
        err = errno;
        ZC_LOG("kmod: SETUP of a %zu-byte arena: %s (per-uid cap %llu MiB, %llu MiB used; "
               "module parameter user_cap_mb)",
               size, strerror(err), (unsigned long long)(info.user_cap >> 20),
               (unsigned long long)(info.user_used >> 20));
        goto fail;
    }
    ks->arena_size = size;
    ks->arena = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, ks->fd,
                     (off_t)su.arena_offset);
    if (ks->arena == MAP_FAILED) {
        err = errno;
        ZC_LOG("kmod: mmap of the arena: %s", strerror(err));
        goto fail;
    }
    ks->st_size = su.status_size;
    ks->st = mmap(NULL, su.status_size, PROT_READ, MAP_SHARED, ks->fd, (off_t)su.status_offset);
    if (ks->st == MAP_FAILED) {
        err = errno;
        ZC_LOG("kmod: mmap of the status area: %s", strerror(err));
        goto fail;
    }
    if (ks->st->done_slots < 2 || ks->st->done_offset % 8 ||
        (size_t)ks->st->done_offset + (size_t)ks->st->done_slots * 8 > ks->st_size) {
        err = EPROTO;
        ZC_LOG("kmod: status area has no usable completion ring");
        goto fail;
    }
    ks->done = (const _Atomic uint64_t *)((const uint8_t *)ks->st + ks->st->done_offset);
    ks->done_slots = ks->st->done_slots;
    atomic_store(&ks->seen, load_u64(&ks->st->completions));
    atomic_store(&ks->faults_seen, 0);
    pool->backend = ks;
    ZC_LOG("kmod: arena of %zu bytes from %s (ABI %u.%u), status %zu bytes", size,
           ZCOPY_DEVICE_PATH, info.abi_version >> 16, info.abi_version & 0xffff, ks->st_size);
    return ks->arena;
fail:
    state_free(ks);
    errno = err;
    return NULL;
}

static void kmod_arena_unmap(struct zc_pool *pool, void *arena, size_t size)
{
    struct kmod_state *ks = state_of(pool);
    (void)arena;
    (void)size;
    if (!ks)
        return;
    /* Pages still in flight stay alive in the module until their sends
     * complete; closing the fd and unmapping is safe at any time. */
    state_free(ks);
    pool->backend = NULL;
}

static int kmod_init(struct zc_pool *pool, char *why, size_t why_len)
{
    if (!state_of(pool)) {
        snprintf(why, why_len, "kmod: arena not mapped from %s", ZCOPY_DEVICE_PATH);
        return -EINVAL;
    }
    return 0;
}

static int kmod_protect(struct zc_pool *pool, void *addr, size_t len, bool on)
{
    struct kmod_state *ks = state_of(pool);
    uintptr_t off = (uintptr_t)addr - (uintptr_t)ks->arena;
    if ((uintptr_t)addr < (uintptr_t)ks->arena || off > ks->arena_size ||
        len > ks->arena_size - off)
        return -EINVAL;
    struct zcopy_range r = { .offset = off, .length = len };
    if (ioctl(ks->fd, on ? ZCOPY_IOC_SEAL : ZCOPY_IOC_UNSEAL, &r))
        return -errno;
    return 0;
}

/* Writes to sealed pages the module caught (copy-on-write or unseal) are
 * the library's protect_faults; none of them waited (protect_waits). */
static void count_faults(struct zc_pool *pool, struct kmod_state *ks)
{
    uint64_t f = load_u64(&ks->st->cow_faults) + load_u64(&ks->st->unseal_faults);
    uint64_t old = atomic_load_explicit(&ks->faults_seen, memory_order_relaxed);
    while (f > old) {
        if (atomic_compare_exchange_weak(&ks->faults_seen, &old, f)) {
            ZC_STAT_ADD(pool, protect_faults, f - old);
            break;
        }
    }
}

/* Reap the records whose sends the ring reports done. */
static int reap(struct zc_pool *pool, struct kmod_state *ks)
{
    count_faults(pool, ks);
    uint64_t comp = load_u64(&ks->st->completions);
    pthread_mutex_lock(&ks->lock);
    if (!ks->head ||
        (!ks->dirty && comp == atomic_load_explicit(&ks->seen, memory_order_relaxed))) {
        pthread_mutex_unlock(&ks->lock);
        return 0;
    }
    atomic_store_explicit(&ks->seen, comp, memory_order_relaxed);
    ks->dirty = false;
    struct kmod_rec *done = NULL, **link = &ks->head, *prev = NULL;
    unsigned copied = 0;
    while (*link) {
        struct kmod_rec *r = *link;
        uint64_t e = atomic_load_explicit(&ks->done[r->id % ks->done_slots],
                                          memory_order_acquire);
        if (ZCOPY_DONE_ID(e) == r->id) {
            *link = r->next;
            if (ks->tail == r)
                ks->tail = prev;
            ks->npending--;
            r->next = done;
            done = r;
            copied += (unsigned)ZCOPY_DONE_COPIED(e);
        } else {
            prev = r;
            link = &r->next;
        }
    }
    pthread_mutex_unlock(&ks->lock);
    int n = 0;
    while (done) {
        struct kmod_rec *next = done->next;
        zc__parts_release(pool, done->parts, done->nparts);
        free(done);
        done = next;
        n++;
    }
    if (n) {
        ZC_STAT_ADD(pool, completions, (uint64_t)n);
        if (copied)
            ZC_STAT_ADD(pool, completions_copied, copied);
    }
    return n;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int kmod_poll(struct zc_pool *pool, int timeout_ms)
{
    struct kmod_state *ks = state_of(pool);
    if (!ks)
        return 0;
    int n = reap(pool, ks);
    if (n || timeout_ms <= 0)
        return n;
    /* No file to wait on: the status area is polled, backing off from
     * 20 us to 1 ms; the module updates it from its completion callback. */
    uint64_t end = mono_ns() + (uint64_t)timeout_ms * 1000000u;
    long step = 20000;
    for (;;) {
        pthread_mutex_lock(&ks->lock);
        bool pending = ks->head != NULL;
        pthread_mutex_unlock(&ks->lock);
        if (!pending)
            return 0;
        uint64_t now = mono_ns();
        if (now >= end)
            return 0;
        struct timespec ts = { 0, (long)((end - now) < (uint64_t)step ? end - now : (uint64_t)step) };
        nanosleep(&ts, NULL);
        if (step < 1000000)
            step *= 2;
        n = reap(pool, ks);
        if (n)
            return n;
    }
}

/* Too many sends in flight for the completion ring to track exactly? */
static bool window_full(struct kmod_state *ks)
{
    pthread_mutex_lock(&ks->lock);
    bool full = ks->head && ks->last_id - ks->head->id >= ks->done_slots / 2;
    pthread_mutex_unlock(&ks->lock);
    return full;
}

static ssize_t kmod_sendmsg(struct zc_pool *pool, int fd, const struct msghdr *msg,
                            struct zc_part *parts, size_t nparts, int flags)
{
    struct kmod_state *ks = state_of(pool);
    size_t npb = 0, expect = 0, total = 0;
    for (size_t i = 0; i < nparts; i++) {
        total += parts[i].len;
        if (parts[i].pb) {
            npb++;
            expect += parts[i].len;
        }
    }
    count_faults(pool, ks);
    if (npb == 0)
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    /* reap opportunistically: completions are one memory read away */
    if (load_u64(&ks->st->completions) != atomic_load_explicit(&ks->seen, memory_order_relaxed))
        reap(pool, ks);
    /* what the ioctl cannot express goes the ordinary way, copied */
    if (nparts > ZCOPY_IOV_MAX || msg->msg_controllen || (flags & ~KMOD_MSG_FLAGS) ||
        msg->msg_namelen > sizeof(struct sockaddr_storage) ||
        (window_full(ks) && (reap(pool, ks), window_full(ks)))) {
        ZC_STAT_ADD(pool, fallbacks, 1);
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    }
    struct zcopy_iovec stack_iov[16];
    struct zcopy_iovec *iov = nparts <= 16 ? stack_iov : malloc(nparts * sizeof(*iov));
    struct kmod_rec *rec = malloc(sizeof(*rec) + npb * sizeof(rec->parts[0]));
    if (!iov || !rec) {
        if (iov != stack_iov)
            free(iov);
        free(rec);
        ZC_STAT_ADD(pool, fallbacks, 1);
        return zc__send_copied(pool, fd, msg, parts, nparts, flags);
    }
    for (size_t i = 0; i < nparts; i++) {
        iov[i].base = (uint64_t)(uintptr_t)parts[i].base;
        iov[i].len = parts[i].len;
    }
    struct zcopy_send sd = {
        .fd = fd,
        .msg_flags = (uint32_t)flags,
        .iovcnt = (uint32_t)nparts,
        .iov = (uint64_t)(uintptr_t)iov,
        .addr = msg->msg_name && msg->msg_namelen ? (uint64_t)(uintptr_t)msg->msg_name : 0,
        .addrlen = msg->msg_name ? msg->msg_namelen : 0,
    };
    int rc = ioctl(ks->fd, ZCOPY_IOC_SEND, &sd);
    int err = errno;
    if (iov != stack_iov)
        free(iov);
    ssize_t r = rc < 0 ? -1 : rc;

    if (r >= 0) {
        /* The module reports what it took by reference of the whole
         * message; on a short write count the pinned parts' bytes that
         * were accepted, capped by that. */
        uint64_t zc = sd.zc_bytes;
        size_t sent_parts = 0;
        if ((size_t)r < total) {
            size_t pos = 0, pinned = 0;
            for (size_t i = 0; i < nparts && pos < (size_t)r; i++) {
                size_t take = parts[i].len < (size_t)r - pos ? parts[i].len : (size_t)r - pos;
                if (parts[i].pb) {
                    pinned += take;
                    sent_parts++;
                }
                pos += take;
            }
            if (zc > pinned)
                zc = pinned;
        } else {
            sent_parts = npb;
        }
        if (zc > (uint64_t)r)
            zc = (uint64_t)r;
        ZC_STAT_ADD(pool, bytes_zerocopy, zc);
        ZC_STAT_ADD(pool, bytes_copied, (uint64_t)r - zc);
        if (sd.zc_bytes >= expect)
            ZC_STAT_ADD(pool, zerocopy_parts, sent_parts);
    }
    /* No page went by reference (the module copied everything, e.g. the
     * pages were written since sealing), or the send never reached the
     * socket: nothing to wait for. */
    if (sd.send_id == 0 || sd.zc_bytes == 0) {
        free(rec);
        zc__parts_release(pool, parts, nparts);
        errno = err;
        return r;
    }
    rec->next = NULL;
    rec->id = sd.send_id;
    rec->nparts = 0;
    for (size_t i = 0; i < nparts; i++) {
        if (parts[i].pb) {
            rec->parts[rec->nparts++] = parts[i];
            parts[i].pb = NULL; /* ours now, until the completion */
        }
    }
    pthread_mutex_lock(&ks->lock);
    if (ks->tail)
        ks->tail->next = rec;
    else
        ks->head = rec;
    ks->tail = rec;
    ks->npending++;
    if (rec->id > ks->last_id)
        ks->last_id = rec->id;
    ks->dirty = true;
    pthread_mutex_unlock(&ks->lock);
    errno = err;
    return r;
}

const struct zc_backend_ops zc_backend_kmod = {
    .name = "kmod",
    .caps = ZC_BE_ZEROCOPY | ZC_BE_NEEDS_PROTECT | ZC_BE_OWN_PROTECT,
    .probe = kmod_probe,
    .init = kmod_init,
    .arena_map = kmod_arena_map,
    .arena_unmap = kmod_arena_unmap,
    .protect = kmod_protect,
    .copy_threshold_stream = KMOD_COPY_THRESHOLD,
    .copy_threshold_dgram = KMOD_COPY_THRESHOLD,
    .sendmsg = kmod_sendmsg,
    .poll = kmod_poll,
};
