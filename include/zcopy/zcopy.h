/* SPDX-License-Identifier: MIT */
/**
 * @file zcopy.h
 * @brief zcopy: software zero-copy send for data a server keeps in memory.
 *
 * The application allocates the bytes it sends many times (cache values,
 * static objects) from a zcopy pool with zc_alloc(), keeps its own metadata
 * elsewhere ("twin allocation"), marks an object final with zc_seal() and
 * sends it with zc_send() / zc_sendmsg(), which behave like send(2) and
 * sendmsg(2): when they return, the caller may free or rewrite the buffer.
 * Sealed data in write-protected pageblocks goes to the kernel without a
 * copy; a later write to it is caught and never changes bytes still in
 * flight.
 *
 * @par Error convention (the whole API)
 * A function fails by returning a negative value and setting @c errno:
 * functions returning @c int return the negative errno value itself
 * (for example @c -EINVAL); zc_send() and zc_sendmsg() return -1, exactly as
 * send(2) does; functions returning a pointer return NULL. So
 * `if (ret < 0)` followed by @c errno works everywhere, and zc_strerror()
 * accepts either sign of the code. No function aborts the process.
 *
 * @par Threads
 * Every function may be called from any thread at the same time, except
 * zc_pool_destroy(), which must not race with any other call on that pool.
 */
#ifndef ZCOPY_ZCOPY_H
#define ZCOPY_ZCOPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <zcopy/version.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define ZC_API __attribute__((visibility("default")))
#else
#define ZC_API
#endif

/**
 * @brief An opaque pool: one virtual arena, its allocator and one backend.
 * @since 0.1.0
 */
typedef struct zc_pool zc_pool;

/**
 * @brief Pool flags for zc_pool_config::flags.
 * @since 0.1.0
 */
enum zc_pool_flags {
    /** Write-protect sealed pageblocks even when the backend never sends
     *  without copying (the @c copy backend). Useful to test an
     *  application's write discipline. */
    ZC_POOL_PROTECT = 1u << 0,
    /** Ignore the @c ZC_* environment variables for this pool. */
    ZC_POOL_IGNORE_ENV = 1u << 1,
};

/**
 * @brief Pool configuration. Initialise with zc_pool_config_init() and
 *        change only the fields you need; a zero field means "default".
 *
 * A field left at its default may be overridden by an environment variable
 * (named beside the field) unless @ref ZC_POOL_IGNORE_ENV is set or the
 * program runs setuid/setgid (AT_SECURE), where the environment is ignored.
 * Sizes in the environment accept the suffixes k, m, g (powers of 1024).
 * @since 0.1.0
 */
struct zc_pool_config {
    /** Size of this struct, set by zc_pool_config_init(); lets the struct
     *  grow without breaking older callers. */
    uint32_t struct_size;
    /** Flags from @ref zc_pool_flags. */
    uint32_t flags;
    /** Virtual address space reserved for the arena, in bytes. Memory is
     *  committed only as it is used. Default 1 GiB (@c ZC_ARENA_SIZE). */
    size_t arena_capacity;
    /** Target pageblock size in bytes, a multiple of the page size between
     *  16 KiB and 4 MiB. Default 64 KiB (@c ZC_PAGEBLOCK_SIZE). Objects up
     *  to half of it (at least 32 KiB, at most 128 KiB) share pageblocks,
     *  and above 1 MiB objects up to an eighth of it (at most 512 KiB); a
     *  larger size batches the write protection of more objects. */
    size_t pageblock_size;
    /** Backend: "auto", one name ("kmod", "iouring", "msgzc", "copy"), or a
     *  comma-separated list tried in order. NULL means @c ZC_BACKEND, then
     *  "auto". */
    const char *backend;
    /** Smallest part of a message sent without copying, in bytes, on any
     *  socket; smaller parts are copied. 0 means @c ZC_COPY_THRESHOLD, then
     *  the backend's measured defaults for stream (TCP) and datagram (UDP)
     *  sockets. */
    size_t copy_threshold;
};

/**
 * @brief Statistics of a pool, from zc_stats(). All counters are totals
 *        since zc_pool_create(); pageblock counts are current.
 * @since 0.1.0
 */
struct zc_stats {
    uint64_t sends;              /**< zc_send()/zc_sendmsg() calls that sent bytes. */
    uint64_t bytes_zerocopy;     /**< Bytes handed to the kernel without a copy. */
    uint64_t bytes_copied;       /**< Bytes sent by copying. */
    uint64_t zerocopy_parts;     /**< Message parts sent without a copy. */
    uint64_t completions;        /**< Zero-copy completions reaped. */
    uint64_t completions_copied; /**< Completions where the kernel copied anyway (iouring: not
                                      counting a notification flagged only for being linked to
                                      the one before it, see docs/backends.md). */
    uint64_t in_flight;          /**< Zero-copy sends not yet completed (current). */
    uint64_t protect_faults;     /**< Writes to protected data that were caught. */
    uint64_t protect_waits;      /**< Of those, writes that waited for sends in flight. */
    uint64_t protects;           /**< Pageblocks or large objects write-protected. */
    uint64_t unprotects;         /**< Pageblocks or large objects unprotected. */
    uint64_t fallbacks;          /**< Zero-copy attempts that fell back to a copy. */
    uint64_t pageblocks_active;  /**< Pageblocks a thread is allocating from. */
    uint64_t pageblocks_full;    /**< Pageblocks with every slot allocated. */
    uint64_t pageblocks_partial; /**< Pageblocks with free slots, waiting for reuse. */
    uint64_t pageblocks_protected; /**< Pageblocks write-protected now. */
    uint64_t large_objects;      /**< Live objects in their own page runs. */
    uint64_t large_protected;    /**< Of those, write-protected now. */
    uint64_t bytes_committed;    /**< Arena bytes in use by pageblocks and large objects. */
    uint64_t zerocopy_parts_unregistered; /**< Of zerocopy_parts, those whose pages the kernel
                                      looked up and referenced for that send, not taken from
                                      registered buffers (msgzc: all; iouring: where its fixed
                                      buffers could not serve the send). */
    uint64_t reserved[12];       /**< Zero; room for growth. */
};

/**
 * @brief Fill @p config with the defaults (every field zero or NULL except
 *        zc_pool_config::struct_size).
 * @param config  the configuration to initialise; must not be NULL.
 * @since 0.1.0
 */
ZC_API void zc_pool_config_init(struct zc_pool_config *config);

/**
 * @brief Create a pool: reserve its arena and start its backend.
 *
 * With the backend "auto" or a list, the first backend whose probe and
 * start succeed is used; zc_backend_name() tells which, and @c ZC_LOG=1
 * prints why the others were passed over. A backend named alone that cannot
 * start is an error, never a silent switch.
 *
 * @param[out] pool  receives the new pool; set to NULL on failure.
 * @param config     configuration, or NULL for the defaults.
 * @return 0 on success, or a negative errno value:
 *   - @c -EINVAL  a NULL @p pool, a bad field, or a bad environment value;
 *   - @c -ENOENT  an unknown backend name;
 *   - @c -ENOTSUP no backend asked for can run here (the log says why);
 *   - @c -ENOMEM  the arena or the pool's memory could not be reserved;
 *   - another negative errno from the backend's start.
 * @since 0.1.0
 */
ZC_API int zc_pool_create(zc_pool **pool, const struct zc_pool_config *config);

/**
 * @brief Destroy a pool: wait for its sends in flight, stop the backend,
 *        release the arena. Every object of the pool becomes invalid.
 *
 * Must not race with any other call on the pool. NULL is ignored.
 * @param pool  the pool, or NULL.
 * @return 0, or a negative errno value: @c -ETIMEDOUT if sends were still
 *         in flight after 10 s (the arena is then left mapped, leaked
 *         rather than freed under the kernel's feet, and the pool is
 *         still destroyed).
 * @since 0.1.0
 */
ZC_API int zc_pool_destroy(zc_pool *pool);

/**
 * @brief Allocate @p size bytes from the pool.
 *
 * Objects up to half the pageblock size (32 KiB with the default 64 KiB
 * pageblocks, 128 KiB at most) share pageblocks of their size class, which
 * are write-protected whole once full of sealed objects; larger ones get
 * their own page run, protected when sealed. Memory is aligned to 8
 * bytes, to 16 bytes when @p size is 128 or more, and to the page size
 * above 32 KiB. Its contents are unspecified.
 * @param pool  the pool.
 * @param size  1 byte up to the arena capacity (and at most 2 GiB - 4 KiB).
 * @return the object, or NULL with @c errno set to @c EINVAL (NULL pool,
 *         zero size) or @c ENOMEM (the arena is full).
 * @since 0.1.0
 */
ZC_API void *zc_alloc(zc_pool *pool, size_t size);

/**
 * @brief Free an object. It may be called while sends of the object are in
 *        flight: its slot is reused only once they complete.
 * @param pool  the pool.
 * @param ptr   an object from zc_alloc() on @p pool, or NULL (no effect).
 * @return 0, or @c -EINVAL if @p ptr is not the start of a live object of
 *         @p pool (a foreign pointer, an interior pointer, a double free).
 * @since 0.1.0
 */
ZC_API int zc_free(zc_pool *pool, void *ptr);

/**
 * @brief Declare an object final: it may now be sent without a copy.
 *
 * A large object is write-protected at once; a small one when every slot of
 * its pageblock is allocated and sealed. Writing to a sealed object stays
 * legal: the write waits until no send of its pageblock is in flight
 * (or gets a fresh copy of the page with the kmod backend), then the
 * pageblock's objects are unsealed. Sealing twice is harmless.
 * @param pool  the pool.
 * @param ptr   an object from zc_alloc() on @p pool.
 * @return 0, or a negative errno value: @c -EINVAL if @p ptr is not the
 *         start of a live object of @p pool; another negative errno if the
 *         kernel refused the protection (the object then stays sealed but
 *         unprotected and is sent by copy).
 * @since 0.1.0
 */
ZC_API int zc_seal(zc_pool *pool, void *ptr);

/**
 * @brief Tell whether @p ptr points into a live object of @p pool.
 * @param pool  the pool (NULL gives false).
 * @param ptr   any address.
 * @return true if @p ptr lies inside an object allocated from @p pool and
 *         not yet freed.
 * @since 0.1.0
 */
ZC_API bool zc_owns(const zc_pool *pool, const void *ptr);

/**
 * @brief Send like send(2), without copying what can go zero-copy.
 *
 * Same arguments, return value and @c errno as send(2), on blocking and
 * non-blocking TCP and UDP sockets: a non-blocking socket that cannot take
 * data fails with @c EAGAIN at once; a short write returns the bytes
 * accepted. When it returns, the caller may free or rewrite @p buf.
 * @param pool   the pool.
 * @param fd     a connected socket.
 * @param buf    the bytes; pool data or any other memory.
 * @param len    their length.
 * @param flags  send(2) flags (MSG_DONTWAIT, MSG_NOSIGNAL, MSG_MORE, ...).
 * @return the number of bytes sent, or -1 with @c errno set as send(2)
 *         sets it (@c EBADF, @c ENOTSOCK, @c EPIPE, @c EAGAIN, ...), or
 *         @c EINVAL for a NULL pool.
 * @since 0.1.0
 */
ZC_API ssize_t zc_send(zc_pool *pool, int fd, const void *buf, size_t len, int flags);

/**
 * @brief Send like sendmsg(2), part by part zero-copy where possible.
 *
 * Each iovec part that is sealed pool data in protected pages, at least the
 * copy threshold long, goes without a copy; the others are copied in the
 * same call. One call sends one UDP datagram, and on TCP reports one
 * in-order byte count that stops at the first part not wholly accepted.
 * @param pool   the pool.
 * @param fd     a socket.
 * @param msg    the message, as for sendmsg(2).
 * @param flags  sendmsg(2) flags.
 * @return as zc_send().
 * @since 0.1.0
 */
ZC_API ssize_t zc_sendmsg(zc_pool *pool, int fd, const struct msghdr *msg, int flags);

/**
 * @brief Reap zero-copy completions, so that sealed data can be rewritten
 *        and freed slots reused sooner. zcopy also reaps by itself on sends
 *        and whenever a writer or the allocator has to wait.
 * @param pool        the pool.
 * @param timeout_ms  0 to return at once, or the longest wait in ms for at
 *                    least one completion when sends are in flight.
 * @return the number of completions reaped (0 or more), or a negative errno
 *         value (@c -EINVAL for a NULL pool or negative timeout).
 * @since 0.1.0
 */
ZC_API int zc_poll(zc_pool *pool, int timeout_ms);

/**
 * @brief Name of the backend the pool uses: "kmod", "iouring", "msgzc" or
 *        "copy".
 * @param pool  the pool.
 * @return a static string, or NULL for a NULL pool.
 * @since 0.1.0
 */
ZC_API const char *zc_backend_name(const zc_pool *pool);

/**
 * @brief The backends compiled into this library, in the order "auto"
 *        tries them.
 * @return a NULL-terminated array of static names.
 * @since 0.1.0
 */
ZC_API const char *const *zc_backend_list(void);

/**
 * @brief Tell whether a backend can run on this machine, and if not, why.
 * @param name      a backend name.
 * @param[out] why  receives a one-line reason (or "ok"); may be NULL.
 * @param why_len   size of @p why.
 * @return 0 if the backend can run here, or a negative errno value:
 *         @c -ENOENT for an unknown name, @c -EINVAL for NULL, otherwise
 *         the reason's code (@c -ENOSYS, @c -EPERM, @c -ENODEV, ...).
 * @since 0.1.0
 */
ZC_API int zc_backend_probe(const char *name, char *why, size_t why_len);

/**
 * @brief Read the pool's statistics.
 * @param pool        the pool.
 * @param[out] stats  filled on success.
 * @return 0, or @c -EINVAL if an argument is NULL.
 * @since 0.1.0
 */
ZC_API int zc_stats(const zc_pool *pool, struct zc_stats *stats);

/**
 * @brief Describe an error code.
 * @param err  an errno value, positive or negative.
 * @return a static string; never NULL.
 * @since 0.1.0
 */
ZC_API const char *zc_strerror(int err);

/**
 * @brief The library's version at run time, as ZCOPY_VERSION_NUMBER is at
 *        compile time: major * 10000 + minor * 100 + patch.
 * @return the version number.
 * @since 0.1.0
 */
ZC_API unsigned zc_version(void);

/**
 * @brief The library's version at run time as a string, "major.minor.patch".
 * @return a static string.
 * @since 0.1.0
 */
ZC_API const char *zc_version_string(void);

#ifdef __cplusplus
}
#endif

#endif /* ZCOPY_ZCOPY_H */
