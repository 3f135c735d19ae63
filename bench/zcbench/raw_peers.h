/* raw_peers.h - the reference senders written directly against the kernel, for
 * zcbench: what zc_send must match or beat.
 *
 *   RP_PLAIN           send(2), the kernel copies
 *   RP_MSGZC           send(MSG_ZEROCOPY) after SO_ZEROCOPY, completions read from
 *                      MSG_ERRQUEUE (id ranges, SO_EE_CODE_ZEROCOPY_COPIED)
 *   RP_URING_ZC_FIXED  io_uring SEND_ZC from a registered (fixed) buffer, notification
 *                      CQEs (IORING_CQE_F_MORE on the result, IORING_CQE_F_NOTIF later)
 *   RP_URING_ZC        io_uring SEND_ZC from a plain buffer (pins pages per send)
 *   RP_URING_SEND      io_uring SEND (copy), the io_uring baseline
 *   RP_SENDMSG         sendmsg(2) with one iovec, the kernel copies (what a copying
 *                      zc_send ends in)
 *
 * Each rp_send() sends n messages of `size` bytes from `buf` to a connected socket
 * (TCP: a byte stream, short writes continued; UDP: one datagram each), then
 * waits for every zero-copy completion, all bounded by opts->timeout_ms.  The
 * sender's CPU is CLOCK_THREAD_CPUTIME_ID of the calling thread over the whole
 * call (sends + completion reaping + final wait).  Every io_uring SEND_ZC is
 * issued like a synchronous send: its result CQE is waited for before the next
 * message; notification CQEs are reaped as they arrive and at the end.
 *
 * Copied-byte reporting: MSG_ZEROCOPY reports per id range; io_uring reports
 * per notification only with IORING_SEND_ZC_REPORT_USAGE (kernel >= 6.2, probed
 * at run time by rp_uring_init; the 6.1 UAPI headers here do not define it).
 *
 * Not thread-safe: one rp_uring and one rp_sock per sending thread.
 */
#ifndef ZC_BENCH_RAW_PEERS_H
#define ZC_BENCH_RAW_PEERS_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>

enum rp_method {
	RP_PLAIN,
	RP_MSGZC,
	RP_URING_ZC_FIXED,
	RP_URING_ZC,
	RP_URING_SEND,
	RP_SENDMSG,
	RP_NMETHODS
};

const char *rp_method_name(enum rp_method m);
/* parse a name as printed by rp_method_name; -1 if unknown */
int rp_method_parse(const char *name);

struct rp_opts {
	unsigned timeout_ms;   /* whole rp_send call, including the final wait (0: 10000) */
	unsigned reap_every;   /* MSG_ZEROCOPY: read the error queue every k sends (0: 16) */
	unsigned max_inflight; /* zero-copy sends not yet completed before we wait (0: 64) */
};

/* Per-socket state that must survive between calls on one socket. */
struct rp_sock {
	int fd;
	int stream;         /* SOCK_STREAM (TCP) or datagram (UDP) */
	int zc_enabled;     /* SO_ZEROCOPY set */
	uint32_t next_zcid; /* next MSG_ZEROCOPY id the kernel will assign */
	int dirty;          /* a call timed out with completions outstanding */
};
/* fill s for a connected socket (reads SO_TYPE) */
int rp_sock_init(struct rp_sock *s, int fd);

struct rp_uring {
	struct io_uring ring;
	void *buf;           /* the registered buffer, fixed index 0 */
	size_t len;
	int ready;           /* ring set up */
	int registered;      /* buf registered as fixed buffer 0 */
	int has_send_zc;     /* IORING_OP_SEND_ZC supported */
	int report_usage;    /* IORING_SEND_ZC_REPORT_USAGE accepted */
	unsigned setup_flags;/* flags the ring was created with */
	char why[160];       /* why something is missing */
};
/* Create a ring (entries SQEs) with setup_flags (falls back to 0 if refused),
 * register [buf, buf+len) as fixed buffer 0, probe SEND_ZC and REPORT_USAGE.
 * Returns 0 if the ring works (check has_send_zc / registered / why). */
int rp_uring_init(struct rp_uring *u, void *buf, size_t len, unsigned entries,
		  unsigned setup_flags);
void rp_uring_exit(struct rp_uring *u);

struct rp_stats {
	uint64_t msgs;        /* messages completely sent */
	uint64_t bytes;       /* bytes accepted by the kernel */
	uint64_t calls;       /* send syscalls / SQEs */
	uint64_t cpu_ns;      /* CLOCK_THREAD_CPUTIME_ID delta over the call */
	uint64_t wall_ns;     /* CLOCK_MONOTONIC delta over the call */
	uint64_t notifs;      /* zero-copy completions (ids or notification CQEs) */
	uint64_t bytes_reported; /* bytes whose completion said copied or not */
	uint64_t bytes_copied;   /* bytes reported copied */
	uint64_t retries;     /* ENOBUFS/EAGAIN retries */
	uint64_t bound_waits; /* waits for a completion because max_inflight were pending */
	int report;           /* this method reports copies (else bytes_copied is 0) */
	int err;              /* 0, or the errno that stopped the call */
};

/* Send n messages of size bytes from buf (for RP_URING_ZC_FIXED buf must lie in
 * u->buf[0..len)).  u may be NULL for RP_PLAIN, RP_SENDMSG and RP_MSGZC.  Returns 0 if all
 * n were sent and every completion came back, else -1 with st->err set. */
int rp_send(enum rp_method m, struct rp_uring *u, struct rp_sock *s, const void *buf,
	    size_t size, unsigned n, const struct rp_opts *opts, struct rp_stats *st);

/* per-method availability, with a reason when not available */
int rp_available(enum rp_method m, const struct rp_uring *u, const char **why);

#endif
