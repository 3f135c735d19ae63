/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note OR MIT */
/*
 * zcopy_kmod.h - user-space ABI of the zcopy kernel module (/dev/zcopy).
 *
 * Shared by the module (backends/kmod/module) and its user-space glue.
 * Every struct has fixed-width fields, explicit padding and a `flags` field;
 * unknown flag bits and non-zero reserved fields are rejected with -EINVAL,
 * so they can be given a meaning later without breaking old binaries.
 *
 * Life of a context (one per open file description):
 *   fd = open("/dev/zcopy", O_RDWR | O_CLOEXEC);
 *   ioctl(fd, ZCOPY_IOC_INFO, &info);     check info.abi_version, features
 *   ioctl(fd, ZCOPY_IOC_SETUP, &setup);   arena size, accounting block size
 *   arena  = mmap(NULL, setup.arena_size, PROT_READ | PROT_WRITE,
 *                 MAP_SHARED, fd, setup.arena_offset);
 *   status = mmap(NULL, setup.status_size, PROT_READ, MAP_SHARED, fd,
 *                 setup.status_offset);
 *   ... allocate objects in the arena, write them ...
 *   ioctl(fd, ZCOPY_IOC_SEAL, &range);    write-protect whole pages
 *   n = ioctl(fd, ZCOPY_IOC_SEND, &send); like sendmsg(2); returns bytes sent
 *   ... status->block_inflight[b] tells when block b has no send in flight ...
 *
 * Arena: the module allocates its pages (zeroed, memcg-accounted) on first
 * touch; the whole size is reserved against a per-user cap at SETUP time
 * (module parameter user_cap_mb).  The arena must be mapped MAP_SHARED.
 *
 * Sealed pages are write-protected in every mapping.  A write to a sealed
 * page that has no send in flight unseals it (the write proceeds at once).
 * A write to a sealed page that is in flight gives the writer a fresh copy
 * of the page at once (copy-on-write); the old page stays referenced until
 * its sends complete, so the peer gets the bytes as they were when sealed.
 * Nothing ever waits for a send to complete.
 *
 * SEND: iovec entries that lie in this context's arena mapping and cover
 * sealed pages are sent by reference (zero-copy); everything else (other
 * memory, arena pages that are not sealed) is copied into kernel pages
 * during the call.  Both go in one sock_sendmsg() call, so the call keeps
 * send(2) semantics: bytes sent as return value, -EAGAIN on a non-blocking
 * socket (O_NONBLOCK or MSG_DONTWAIT), short writes on stream sockets, one
 * datagram per call on datagram sockets.
 */
#ifndef ZCOPY_KMOD_UAPI_H
#define ZCOPY_KMOD_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define ZCOPY_DEVICE_PATH "/dev/zcopy"

/* ABI version: major in the high 16 bits, minor in the low 16 bits.
 * A different major is incompatible; a higher minor only adds features. */
#define ZCOPY_ABI_MAJOR 1
#define ZCOPY_ABI_MINOR 1
#define ZCOPY_ABI_VERSION ((ZCOPY_ABI_MAJOR << 16) | ZCOPY_ABI_MINOR)

/* Feature bits reported by ZCOPY_IOC_INFO. */
#define ZCOPY_FEAT_ARENA	(1ULL << 0)	/* SETUP + mmap of the arena */
#define ZCOPY_FEAT_SEAL		(1ULL << 1)	/* SEAL / UNSEAL */
#define ZCOPY_FEAT_COW		(1ULL << 2)	/* copy-on-write of in-flight pages */
#define ZCOPY_FEAT_SEND		(1ULL << 3)	/* SEND */
#define ZCOPY_FEAT_STATUS	(1ULL << 4)	/* read-only status mapping */
#define ZCOPY_FEAT_SEND_ADDR	(1ULL << 5)	/* SEND with a destination address */
#define ZCOPY_FEAT_DONE_RING	(1ULL << 6)	/* status->done[]: per-send completion (ABI 1.1) */

/* mmap offsets (bytes).  The arena starts at offset 0; the status area
 * at ZCOPY_STATUS_OFFSET.  SETUP returns both. */
#define ZCOPY_ARENA_OFFSET	0ULL
#define ZCOPY_STATUS_OFFSET	(1ULL << 40)

/* Limits (also reported by INFO). */
#define ZCOPY_IOV_MAX		1024		/* iovec entries per SEND */
#define ZCOPY_SEND_MAX		(16U << 20)	/* bytes per SEND; see SEND */
#define ZCOPY_BLOCK_SHIFT_MAX	30
#define ZCOPY_DONE_SLOTS	16384		/* entries of the done ring (ABI 1.1) */

/* ZCOPY_IOC_INFO (out only). */
struct zcopy_info {
	__u32 flags;		/* out: 0 */
	__u32 abi_version;	/* out: ZCOPY_ABI_VERSION */
	__u64 features;		/* out: ZCOPY_FEAT_* */
	__u32 page_size;	/* out: PAGE_SIZE */
	__u32 iov_max;		/* out: ZCOPY_IOV_MAX */
	__u64 send_max;		/* out: ZCOPY_SEND_MAX */
	__u64 user_cap;		/* out: per-user arena cap in bytes */
	__u64 user_used;	/* out: bytes reserved by the caller's uid */
	__u64 reserved[4];	/* out: 0 */
};

/* ZCOPY_IOC_SETUP: once per context. */
struct zcopy_setup {
	__u32 flags;		/* in: 0 */
	__u32 block_shift;	/* in: log2 of the accounting block size for
				 * status->block_inflight[]; 0 = page size;
				 * else PAGE_SHIFT..ZCOPY_BLOCK_SHIFT_MAX */
	__u64 arena_size;	/* in: bytes, > 0, multiple of the page size */
	__u64 arena_offset;	/* out: mmap offset of the arena */
	__u64 status_offset;	/* out: mmap offset of the status area */
	__u64 status_size;	/* out: bytes to map at status_offset */
	__u32 nr_blocks;	/* out: entries of status->block_inflight[] */
	__u32 reserved;		/* in: 0 */
};

/* ZCOPY_IOC_SEAL / ZCOPY_IOC_UNSEAL: a page-aligned range of the arena,
 * given as byte offsets from the start of the arena (not pointers). */
struct zcopy_range {
	__u32 flags;		/* in: 0 */
	__u32 reserved;		/* in: 0 */
	__u64 offset;		/* in: page aligned, < arena_size */
	__u64 length;		/* in: page multiple, > 0, in the arena */
};

/* One element of the SEND vector; layout-compatible with struct iovec
 * on LP64 (but always two 64-bit fields, also for 32-bit callers). */
struct zcopy_iovec {
	__u64 base;		/* user address */
	__u64 len;		/* bytes */
};

/* SEND flags (struct zcopy_send.flags). */
#define ZCOPY_SEND_F_NO_ZC	(1U << 0)	/* copy everything (testing) */
#define ZCOPY_SEND_FLAGS	(ZCOPY_SEND_F_NO_ZC)

/* ZCOPY_IOC_SEND: returns bytes sent (>= 0) or -1 with errno, as send(2).
 * msg_flags takes MSG_DONTWAIT, MSG_NOSIGNAL, MSG_MORE and MSG_EOR only.
 * On datagram sockets, MSG_MORE (corking) sends the piece copied.
 * At most ZCOPY_SEND_MAX bytes per call: a longer message is cut to that
 * length on stream sockets (a short write) and refused with EMSGSIZE on
 * others.  Errors: EBADF (fd), ENOTSOCK (fd is not a socket), EFAULT
 * (unreadable iovec or data), EINVAL (flags, reserved fields, iovcnt, sizes,
 * address length; no SETUP yet), and whatever sendmsg(2) returns. */
struct zcopy_send {
	__u32 flags;		/* in: ZCOPY_SEND_F_* */
	__s32 fd;		/* in: socket */
	__u32 msg_flags;	/* in: MSG_* as for sendmsg(2), see above */
	__u32 iovcnt;		/* in: 1..ZCOPY_IOV_MAX */
	__u64 iov;		/* in: user pointer to struct zcopy_iovec[] */
	__u64 addr;		/* in: user pointer to a sockaddr, or 0 */
	__u32 addrlen;		/* in: its length (0 if addr is 0) */
	__u32 reserved;		/* in: 0 */
	__u64 zc_bytes;		/* out: bytes given to the socket by reference */
	__u64 copied_bytes;	/* out: bytes copied by the module */
	__u64 send_id;		/* out: sequence number of this send (1, 2 ...) */
};

/* The status area (mapped read-only).  Written by the module only; read
 * the counters with relaxed atomic loads.  `seq` increments after each
 * update.  block_inflight[b] counts page references of arena block b held
 * by sends that have not completed (a page sent twice counts twice). */
struct zcopy_status {
	__u32 flags;			/* 0 */
	__u32 abi_version;		/* ZCOPY_ABI_VERSION */
	__u32 block_shift;		/* as set up */
	__u32 nr_blocks;		/* entries in block_inflight[] */
	__u64 seq;			/* bumped after every update */
	__u64 sends;			/* SENDs handed to the socket */
	__u64 completions;		/* SENDs whose pages are all released */
	__u64 completions_zerocopy;	/* ... with arena pages, none copied */
	__u64 completions_copied;	/* ... with arena pages, the kernel
					 * copied them (like
					 * SO_EE_CODE_ZEROCOPY_COPIED) */
	__u64 bytes_zerocopy;		/* arena bytes submitted by reference */
	__u64 bytes_copied;		/* bytes copied by the module */
	__u64 pages_inflight;		/* sum of block_inflight[] */
	__u64 cow_faults;		/* writes that got a fresh page */
	__u64 unseal_faults;		/* writes that unsealed an idle page */
	__u32 done_offset;		/* ABI 1.1: byte offset of done[] in the
					 * status area (8-byte aligned) */
	__u32 done_slots;		/* ABI 1.1: its entries, ZCOPY_DONE_SLOTS */
	__u64 reserved[19];		/* 0; header is 256 bytes */
	__u32 block_inflight[];		/* nr_blocks entries */
	/* ABI 1.1, at done_offset: __u64 done[done_slots].  When send `id`
	 * completes (every page reference it held is released; sends that
	 * failed before reaching the socket have send_id 0 and no entry),
	 * done[id % done_slots] = ZCOPY_DONE_ENTRY(id, copied), where copied
	 * is 1 if the send had arena pages and the kernel copied them anyway.
	 * An entry is only overwritten by send id + k * done_slots: a reader
	 * whose sends in flight span fewer than done_slots ids never misses
	 * a completion.  Read with an acquire load. */
};

#define ZCOPY_DONE_ENTRY(id, copied)	(((__u64)(id) << 1) | ((copied) ? 1 : 0))
#define ZCOPY_DONE_ID(entry)		((entry) >> 1)
#define ZCOPY_DONE_COPIED(entry)	((entry) & 1)

#define ZCOPY_IOC_MAGIC 0xCC

#define ZCOPY_IOC_INFO		_IOR(ZCOPY_IOC_MAGIC, 0x00, struct zcopy_info)
#define ZCOPY_IOC_SETUP		_IOWR(ZCOPY_IOC_MAGIC, 0x01, struct zcopy_setup)
#define ZCOPY_IOC_SEAL		_IOW(ZCOPY_IOC_MAGIC, 0x02, struct zcopy_range)
#define ZCOPY_IOC_UNSEAL	_IOW(ZCOPY_IOC_MAGIC, 0x03, struct zcopy_range)
#define ZCOPY_IOC_SEND		_IOWR(ZCOPY_IOC_MAGIC, 0x04, struct zcopy_send)

#endif /* ZCOPY_KMOD_UAPI_H */
