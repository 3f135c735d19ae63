/* raw_peers.c - see raw_peers.h.
 * Build: cc -std=c11 -O2 -Wall -Wextra -Werror -c raw_peers.c   (link -luring)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "raw_peers.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif
/* Newer than the 6.1 UAPI copy shipped with liburing 2.3 (kernel 6.2+).  Used
 * only after rp_uring_init's probe says the kernel accepts the flag. */
#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif

#define TRACK 4096 /* power of 2; > any max_inflight we allow */

static const char *const names[RP_NMETHODS] = {
	[RP_PLAIN] = "send",
	[RP_MSGZC] = "msg_zerocopy",
	[RP_URING_ZC_FIXED] = "uring_zc_fixed",
	[RP_URING_ZC] = "uring_zc",
	[RP_URING_SEND] = "uring_send",
	[RP_SENDMSG] = "sendmsg",
};

const char *rp_method_name(enum rp_method m)
{
	return (unsigned)m < RP_NMETHODS ? names[m] : "?";
}

int rp_method_parse(const char *name)
{
	for (int i = 0; i < RP_NMETHODS; i++)
		if (!strcmp(name, names[i]))
			return i;
	return -1;
}

static uint64_t ns_of(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int rp_sock_init(struct rp_sock *s, int fd)
{
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	int type = 0;
	socklen_t l = sizeof(type);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l))
		return -1;
	s->stream = type == SOCK_STREAM;
	return 0;
}

/* ------------------------------------------------------------ plain send() */

static int do_plain(struct rp_sock *s, const char *buf, size_t size, unsigned n, uint64_t deadline,
		    int use_sendmsg, struct rp_stats *st)
{
	for (unsigned i = 0; i < n; i++) {
		size_t off = 0;
		while (off < size) {
			if ((st->calls & 63) == 0 && ns_of(CLOCK_MONOTONIC) > deadline)
				return st->err = ETIMEDOUT, -1;
			ssize_t r;
			if (use_sendmsg) {
				struct iovec iov = {.iov_base = (void *)(buf + off), .iov_len = size - off};
				struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
				r = sendmsg(s->fd, &mh, 0);
			} else {
				r = send(s->fd, buf + off, size - off, 0);
			}
			st->calls++;
			if (r < 0) {
				if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) {
					st->retries++;
					if (errno != EINTR)
						sched_yield();
					continue;
				}
				return st->err = errno, -1;
			}
			off += (size_t)r;
			st->bytes += (uint64_t)r;
		}
		st->msgs++;
	}
	return 0;
}

/* ------------------------------------------------------ MSG_ZEROCOPY peer */

struct zc_track {
	uint32_t bytes[TRACK]; /* bytes of zerocopy id (id & (TRACK-1)) */
	uint64_t outstanding;
};

/* Read every queued completion.  Returns completions consumed, -1 on error. */
static long msgzc_reap(struct rp_sock *s, struct zc_track *t, struct rp_stats *st)
{
	long got = 0;
	for (int guard = 0; guard < 1 << 16; guard++) {
		char control[128];
		struct msghdr msg = {.msg_control = control, .msg_controllen = sizeof(control)};
		if (recvmsg(s->fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				return got;
			st->err = errno;
			return -1;
		}
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
			if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
			      (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)))
				continue;
			struct sock_extended_err ee;
			memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
			if (ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY || ee.ee_errno != 0)
				continue;
			/* ids ee_info..ee_data inclusive (u32, may wrap) */
			uint32_t cnt = ee.ee_data - ee.ee_info + 1;
			if (cnt > t->outstanding) { /* ids we did not send: bookkeeping broke */
				st->err = EPROTO;
				return -1;
			}
			uint64_t b = 0;
			for (uint32_t k = 0; k < cnt; k++)
				b += t->bytes[(ee.ee_info + k) & (TRACK - 1)];
			t->outstanding -= cnt;
			st->notifs += cnt;
			st->bytes_reported += b;
			if (ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
				st->bytes_copied += b;
			got += (long)cnt;
		}
	}
	return got;
}

/* wait up to ms for the error queue to have something, then reap */
static long msgzc_wait(struct rp_sock *s, struct zc_track *t, struct rp_stats *st, int ms)
{
	struct pollfd pf = {.fd = s->fd, .events = 0};
	if (poll(&pf, 1, ms) < 0 && errno != EINTR)
		return st->err = errno, -1;
	return msgzc_reap(s, t, st);
}

static int do_msgzc(struct rp_sock *s, const char *buf, size_t size, unsigned n,
		    const struct rp_opts *o, uint64_t deadline, struct rp_stats *st)
{
	st->report = 1;
	if (!s->zc_enabled) {
		int one = 1;
		if (setsockopt(s->fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)))
			return st->err = errno, -1;
		s->zc_enabled = 1;
	}
	struct zc_track *t = calloc(1, sizeof(*t));
	if (!t)
		return st->err = ENOMEM, -1;
	unsigned since = 0;
	int rc = 0;
	for (unsigned i = 0; i < n && !rc; i++) {
		size_t off = 0;
		while (off < size) {
			if ((st->calls & 63) == 0 && ns_of(CLOCK_MONOTONIC) > deadline) {
				st->err = ETIMEDOUT;
				rc = -1;
				break;
			}
			if (t->outstanding >= o->max_inflight) {
				st->bound_waits++;
				if (msgzc_wait(s, t, st, 10) < 0) {
					rc = -1;
					break;
				}
				continue;
			}
			ssize_t r = send(s->fd, buf + off, size - off, MSG_ZEROCOPY);
			st->calls++;
			if (r < 0) {
				if (errno == EINTR)
					continue;
				if (errno == ENOBUFS || errno == EAGAIN) {
					/* optmem / locked-memory limit: wait for completions */
					st->retries++;
					if (msgzc_wait(s, t, st, t->outstanding ? 1 : 0) < 0) {
						rc = -1;
						break;
					}
					if (!t->outstanding)
						sched_yield();
					continue;
				}
				st->err = errno;
				rc = -1;
				break;
			}
			t->bytes[s->next_zcid & (TRACK - 1)] = (uint32_t)r;
			s->next_zcid++;
			t->outstanding++;
			off += (size_t)r;
			st->bytes += (uint64_t)r;
		}
		if (rc)
			break;
		st->msgs++;
		if (++since >= o->reap_every) {
			since = 0;
			if (msgzc_reap(s, t, st) < 0)
				rc = -1;
		}
	}
	/* every completion back, bounded */
	while (!rc && t->outstanding) {
		if (ns_of(CLOCK_MONOTONIC) > deadline) {
			st->err = ETIMEDOUT;
			rc = -1;
			break;
		}
		if (msgzc_wait(s, t, st, 10) < 0)
			rc = -1;
	}
	if (t->outstanding)
		s->dirty = 1;
	free(t);
	return rc;
}

/* ------------------------------------------------------------- io_uring */

int rp_available(enum rp_method m, const struct rp_uring *u, const char **why)
{
	const char *w = NULL;
	switch (m) {
	case RP_PLAIN:
	case RP_SENDMSG:
	case RP_MSGZC:
		break;
	case RP_URING_SEND:
		if (!u || !u->ready)
			w = u ? u->why : "no ring";
		break;
	case RP_URING_ZC:
		if (!u || !u->ready || !u->has_send_zc)
			w = u ? u->why : "no ring";
		break;
	case RP_URING_ZC_FIXED:
		if (!u || !u->ready || !u->has_send_zc || !u->registered)
			w = u ? u->why : "no ring";
		break;
	default:
		w = "unknown method";
	}
	if (why)
		*why = w;
	return w == NULL;
}

/* Submit one SEND_ZC with REPORT_USAGE on an AF_UNIX socket from a throw-away
 * ring: a kernel that knows the flag fails at issue with EOPNOTSUPP (AF_UNIX has
 * no zero-copy), one that does not rejects the SQE at prep with EINVAL. */
static int probe_report_usage(void)
{
	struct io_uring r;
	if (io_uring_queue_init(4, &r, 0))
		return 0;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv)) {
		io_uring_queue_exit(&r);
		return 0;
	}
	char c = 0;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&r);
	io_uring_prep_send_zc(sqe, sv[0], &c, 1, 0, IORING_SEND_ZC_REPORT_USAGE);
	sqe->user_data = 1;
	int ok = 0;
	struct io_uring_cqe *cqe;
	struct __kernel_timespec ts = {1, 0};
	if (io_uring_submit_and_wait_timeout(&r, &cqe, 1, &ts, NULL) >= 0 && cqe) {
		if (!(cqe->flags & IORING_CQE_F_NOTIF))
			ok = cqe->res != -EINVAL;
		io_uring_cqe_seen(&r, cqe);
	}
	io_uring_queue_exit(&r);
	close(sv[0]);
	close(sv[1]);
	return ok;
}

int rp_uring_init(struct rp_uring *u, void *buf, size_t len, unsigned entries, unsigned setup_flags)
{
	memset(u, 0, sizeof(*u));
	u->buf = buf;
	u->len = len;
	struct io_uring_params p;
	memset(&p, 0, sizeof(p));
	p.flags = setup_flags;
	int rc = io_uring_queue_init_params(entries, &u->ring, &p);
	if (rc == -EINVAL && setup_flags) {
		memset(&p, 0, sizeof(p));
		setup_flags = 0;
		rc = io_uring_queue_init_params(entries, &u->ring, &p);
	}
	if (rc) {
		snprintf(u->why, sizeof(u->why), "io_uring_queue_init: %s%s", strerror(-rc),
			 rc == -EPERM ? " (kernel.io_uring_disabled or seccomp?)" : "");
		return -1;
	}
	u->ready = 1;
	u->setup_flags = setup_flags;
	struct io_uring_probe *pr = io_uring_get_probe_ring(&u->ring);
	u->has_send_zc = pr && io_uring_opcode_supported(pr, IORING_OP_SEND_ZC);
	if (pr)
		io_uring_free_probe(pr);
	if (!u->has_send_zc)
		snprintf(u->why, sizeof(u->why), "kernel has no IORING_OP_SEND_ZC");
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	rc = buf ? io_uring_register_buffers(&u->ring, &iov, 1) : -EINVAL;
	if (rc == 0)
		u->registered = 1;
	else
		snprintf(u->why, sizeof(u->why), "io_uring_register_buffers(%zu B): %s%s", len,
			 strerror(-rc), rc == -ENOMEM ? " (RLIMIT_MEMLOCK?)" : "");
	u->report_usage = u->has_send_zc && probe_report_usage();
	return 0;
}

void rp_uring_exit(struct rp_uring *u)
{
	if (u->ready)
		io_uring_queue_exit(&u->ring); /* also unregisters the buffer */
	u->ready = 0;
}

struct ur_track {
	uint32_t req_len[TRACK]; /* requested length per seq */
	int32_t res[TRACK];      /* result, or INT32_MIN while not yet known */
	uint64_t seq;            /* next seq */
	uint64_t more;           /* result CQEs seen with F_MORE (a notification follows) */
	uint64_t notif;          /* notification CQEs seen */
};

/* notifications still to come (a notification may overtake its result CQE) */
static uint64_t ur_pending(const struct ur_track *t)
{
	return t->more > t->notif ? t->more - t->notif : 0;
}

/* handle one CQE; returns 1 if it was the result for `want`, storing *res */
static int ur_cqe(struct rp_uring *u, struct ur_track *t, struct io_uring_cqe *cqe, uint64_t want,
		  int *res, struct rp_stats *st)
{
	uint64_t ud = cqe->user_data;
	unsigned slot = (unsigned)(ud & (TRACK - 1));
	int hit = 0;
	if (cqe->flags & IORING_CQE_F_NOTIF) {
		/* the notification: the kernel no longer uses the buffer */
		t->notif++;
		st->notifs++;
		if (u->report_usage && st->report) {
			int32_t r = t->res[slot];
			uint64_t b = r >= 0 ? (uint64_t)r : t->req_len[slot];
			st->bytes_reported += b;
			if ((uint32_t)cqe->res & IORING_NOTIF_USAGE_ZC_COPIED)
				st->bytes_copied += b;
		}
	} else {
		t->res[slot] = cqe->res;
		if (cqe->flags & IORING_CQE_F_MORE)
			t->more++; /* a notification will follow */
		if (ud == want) {
			*res = cqe->res;
			hit = 1;
		}
	}
	io_uring_cqe_seen(&u->ring, cqe);
	return hit;
}

/* reap whatever is ready without waiting */
static void ur_reap(struct rp_uring *u, struct ur_track *t, struct rp_stats *st)
{
	struct io_uring_cqe *cqe;
	int dummy;
	for (int g = 0; g < 2 * TRACK && io_uring_peek_cqe(&u->ring, &cqe) == 0; g++)
		ur_cqe(u, t, cqe, UINT64_MAX, &dummy, st);
}

static int do_uring(enum rp_method m, struct rp_uring *u, struct rp_sock *s, const char *buf,
		    size_t size, unsigned n, const struct rp_opts *o, uint64_t deadline,
		    struct rp_stats *st)
{
	const char *why;
	if (!rp_available(m, u, &why))
		return st->err = EOPNOTSUPP, -1;
	if (m == RP_URING_ZC_FIXED &&
	    ((const char *)buf < (const char *)u->buf ||
	     (const char *)buf + size > (const char *)u->buf + u->len))
		return st->err = EFAULT, -1;
	int zc = m != RP_URING_SEND;
	unsigned zc_flags = 0;
	if (zc && u->report_usage) {
		zc_flags |= IORING_SEND_ZC_REPORT_USAGE;
		st->report = 1;
	}
	int msg_flags = s->stream ? MSG_WAITALL : 0; /* io_uring retries short stream sends */
	struct ur_track *t = calloc(1, sizeof(*t));
	if (!t)
		return st->err = ENOMEM, -1;
	int rc = 0;
	unsigned max_inflight = o->max_inflight < TRACK / 2 ? o->max_inflight : TRACK / 2;

	for (unsigned i = 0; i < n && !rc; i++) {
		size_t off = 0;
		while (off < size) {
			if (ns_of(CLOCK_MONOTONIC) > deadline) {
				st->err = ETIMEDOUT;
				rc = -1;
				break;
			}
			if (ur_pending(t) >= max_inflight) { /* bound buffers in flight */
				st->bound_waits++;
				struct io_uring_cqe *cqe;
				struct __kernel_timespec ts = {0, 10000000};
				int dummy;
				if (io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts) == 0)
					ur_cqe(u, t, cqe, UINT64_MAX, &dummy, st);
				continue;
			}
			struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
			if (!sqe) { /* cannot happen: one SQE at a time; be safe */
				io_uring_submit(&u->ring);
				continue;
			}
			size_t len = size - off;
			switch (m) {
			case RP_URING_ZC_FIXED:
				io_uring_prep_send_zc_fixed(sqe, s->fd, buf + off, len, msg_flags,
							    zc_flags, 0);
				break;
			case RP_URING_ZC:
				io_uring_prep_send_zc(sqe, s->fd, buf + off, len, msg_flags, zc_flags);
				break;
			default:
				io_uring_prep_send(sqe, s->fd, buf + off, len, msg_flags);
				break;
			}
			uint64_t seq = t->seq++;
			unsigned slot = (unsigned)(seq & (TRACK - 1));
			t->req_len[slot] = (uint32_t)len;
			t->res[slot] = INT32_MIN;
			sqe->user_data = seq;
			st->calls++;

			/* one io_uring_enter: submit and wait for a CQE, then until ours */
			int res = INT32_MIN, got = 0;
			struct io_uring_cqe *cqe = NULL;
			struct __kernel_timespec ts = {1, 0};
			int sr = io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
			if (sr < 0 && sr != -ETIME && sr != -EINTR) {
				st->err = -sr;
				rc = -1;
				break;
			}
			for (int g = 0; !got && g < 1 << 20; g++) {
				if (io_uring_peek_cqe(&u->ring, &cqe) == 0) {
					got = ur_cqe(u, t, cqe, seq, &res, st);
					continue;
				}
				if (ns_of(CLOCK_MONOTONIC) > deadline)
					break;
				struct __kernel_timespec ts2 = {0, 100000000};
				if (io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts2) == 0)
					got = ur_cqe(u, t, cqe, seq, &res, st);
			}
			if (!got) {
				st->err = ETIMEDOUT;
				rc = -1;
				break;
			}
			if (res < 0) {
				if (res == -ENOBUFS || res == -EAGAIN || res == -EINTR) {
					st->retries++;
					ur_reap(u, t, st);
					if (res != -EINTR)
						sched_yield();
					continue;
				}
				st->err = -res;
				rc = -1;
				break;
			}
			off += (size_t)res;
			st->bytes += (uint64_t)res;
			if (!s->stream)
				break; /* one datagram per message, never continued */
		}
		if (rc)
			break;
		st->msgs++;
		ur_reap(u, t, st); /* lazily: only what is already there */
	}
	/* every notification back, bounded */
	while (ur_pending(t)) {
		if (ns_of(CLOCK_MONOTONIC) > deadline) {
			if (!rc)
				st->err = ETIMEDOUT;
			rc = -1;
			break;
		}
		struct io_uring_cqe *cqe;
		struct __kernel_timespec ts = {0, 10000000};
		int dummy;
		if (io_uring_wait_cqe_timeout(&u->ring, &cqe, &ts) == 0)
			ur_cqe(u, t, cqe, UINT64_MAX, &dummy, st);
	}
	if (ur_pending(t))
		s->dirty = 1;
	free(t);
	return rc;
}

/* ---------------------------------------------------------------- entry */

int rp_send(enum rp_method m, struct rp_uring *u, struct rp_sock *s, const void *buf, size_t size,
	    unsigned n, const struct rp_opts *opts, struct rp_stats *st)
{
	struct rp_opts o = {0};
	if (opts)
		o = *opts;
	if (!o.timeout_ms)
		o.timeout_ms = 10000;
	if (!o.reap_every)
		o.reap_every = 16;
	if (!o.max_inflight)
		o.max_inflight = 64;
	if (o.max_inflight > TRACK / 2)
		o.max_inflight = TRACK / 2;
	memset(st, 0, sizeof(*st));
	if (s->dirty)
		return st->err = EBADFD, -1; /* earlier completions never came back */
	if (!s->stream && size > 65507)
		return st->err = EMSGSIZE, -1;
	if (size > UINT32_MAX / 2)
		return st->err = EINVAL, -1;

	uint64_t c0 = ns_of(CLOCK_THREAD_CPUTIME_ID), w0 = ns_of(CLOCK_MONOTONIC);
	uint64_t deadline = w0 + (uint64_t)o.timeout_ms * 1000000u;
	int rc;
	switch (m) {
	case RP_PLAIN:
	case RP_SENDMSG:
		rc = do_plain(s, buf, size, n, deadline, m == RP_SENDMSG, st);
		break;
	case RP_MSGZC:
		rc = do_msgzc(s, buf, size, n, &o, deadline, st);
		break;
	case RP_URING_ZC_FIXED:
	case RP_URING_ZC:
	case RP_URING_SEND:
		rc = do_uring(m, u, s, buf, size, n, &o, deadline, st);
		break;
	default:
		st->err = EINVAL;
		rc = -1;
	}
	st->cpu_ns = ns_of(CLOCK_THREAD_CPUTIME_ID) - c0;
	st->wall_ns = ns_of(CLOCK_MONOTONIC) - w0;
	return rc;
}
