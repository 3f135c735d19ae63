/* zcbench: zc_send against plain send() and the raw zero-copy peers, over the
 * veth + XDP topology of bench/topology/topology.sh (or loopback with -L).
 *
 * Methods, interleaved in one run (order rotated every run):
 *   send            send(2), the kernel copies                      (raw_peers.c)
 *   zc_copy         zc_send, pool backend "copy"
 *   zc_iouring      zc_send, pool backend "iouring"
 *   zc_msgzc        zc_send, pool backend "msgzc"
 *   zc_auto         zc_send, pool backend "auto"
 *   uring_zc_fixed  raw liburing SEND_ZC on a fixed buffer           (raw_peers.c)
 *   msg_zerocopy    raw send(MSG_ZEROCOPY)                           (raw_peers.c)
 * and, only when named with -m: uring_zc (SEND_ZC, unregistered buffer),
 * uring_send (io_uring SEND, copies), uring_zc_fixed_nd (uring_zc_fixed on a
 * ring made with no setup flags), uring_zc_fixed_coop (on a ring made with
 * COOP_TASKRUN|SINGLE_ISSUER, as the library makes its rings: what the ring
 * flags alone cost), uring_zc_fixed_nobound (uring_zc_fixed without the -I
 * bound, at most 2048 in flight, as zc_send has no bound), sendmsg (sendmsg(2)
 * with one iovec, what a copying zc_send ends in).  -R selects the raw peers
 * only (what rawbench used to run).
 *
 * zc_send methods: one pool per method; per size one object allocated, filled
 * and sealed once at start (an object that shares a pageblock: the rest of
 * its pageblock is allocated and sealed too, so it gets write-protected), then
 * sent N times.  Counters from zc_stats() deltas over the timed part; every
 * completion is reaped with zc_poll() inside the timed part, as the raw peers
 * wait for theirs.  The warm-up messages' completions are not waited for (the
 * library reaps them during the timed sends): with msgzc, a zc_poll() that
 * finds a socket idle makes the backend forget the socket's zero-copy id
 * counter, and the next sends' completions never match (seen with zcopy 0.1.0,
 * reported; the timed part ends with such a zc_poll, then the socket closes).
 *
 * Sender: the main thread, in namespace zc-tx, pinned to CPU 0.  Receivers: one
 * TCP and one UDP thread in zc-rx pinned to CPU 1, reading and discarding (the
 * NAPI kthread of zcrx0 is pinned to CPU 1 by topology.sh).  Per run, protocol,
 * size and method one measurement: new connection, W warm-up messages (not
 * counted), N timed messages, wait for every completion, close (TCP: wait for
 * the receiver's close).  Sender CPU = CLOCK_THREAD_CPUTIME_ID of the sending
 * thread; CPU 0 busy (cpu0) = wall time minus CPU 0's NOHZ idle time from
 * /proc/timer_list, i.e. the sender and every softirq on its core, each counted
 * once; CPU 0 softirq and CPU 1 busy from /proc/stat ticks.  Every loop is
 * bounded by a count and by -T milliseconds per measurement.
 *
 * Build: CMake target zcbench (bench/CMakeLists.txt).  Run (root):
 *   bench/topology/topology.sh up && zcbench [options]    (see -h)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "netns.h"
#include "raw_peers.h"

#include <zcopy/zcopy.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAXSIZES 16
#define MAXRUNS 31
#define TCP_PORT 5311
#define UDP_PORT 5312
#define UDP_MAX 65507 /* 65535 - 20 (IPv4) - 8 (UDP) */
#define UDP_TOP (60u << 10) /* the largest UDP size by default */
#define BUFSZ (2u << 20)
#define FILL_MAX 4096 /* objects allocated at most to fill one pageblock */

/* ------------------------------------------------------------- methods */

enum method {
	M_SEND,
	M_ZC_COPY,
	M_ZC_IOURING,
	M_ZC_MSGZC,
	M_ZC_AUTO,
	M_URING_FIXED,
	M_MSGZC,
	M_URING_ZC,
	M_URING_SEND,
	M_URING_FIXED_ND,
	M_URING_FIXED_COOP,
	M_URING_FIXED_NOBOUND,
	M_SENDMSG,
	NMETHODS
};

struct mdef {
	const char *name;
	int raw;             /* enum rp_method, or -1 for a zc_send method */
	const char *backend; /* zc_send methods */
	int ring;            /* raw io_uring methods: 0 main ring, 1 no flags, 2 the library's */
	int vs;              /* the method this one is compared with, or -1 */
	unsigned max_inflight; /* raw zero-copy peers: in-flight bound (0: -I) */
};

static const struct mdef MD[NMETHODS] = {
	[M_SEND] = {"send", RP_PLAIN, NULL, 0, -1, 0},
	[M_ZC_COPY] = {"zc_copy", -1, "copy", 0, M_SEND, 0},
	[M_ZC_IOURING] = {"zc_iouring", -1, "iouring", 0, M_URING_FIXED, 0},
	[M_ZC_MSGZC] = {"zc_msgzc", -1, "msgzc", 0, M_MSGZC, 0},
	[M_ZC_AUTO] = {"zc_auto", -1, "auto", 0, M_URING_FIXED, 0},
	[M_URING_FIXED] = {"uring_zc_fixed", RP_URING_ZC_FIXED, NULL, 0, -1, 0},
	[M_MSGZC] = {"msg_zerocopy", RP_MSGZC, NULL, 0, -1, 0},
	[M_URING_ZC] = {"uring_zc", RP_URING_ZC, NULL, 0, -1, 0},
	[M_URING_SEND] = {"uring_send", RP_URING_SEND, NULL, 0, -1, 0},
	[M_URING_FIXED_ND] = {"uring_zc_fixed_nd", RP_URING_ZC_FIXED, NULL, 1, M_URING_FIXED, 0},
	[M_URING_FIXED_COOP] = {"uring_zc_fixed_coop", RP_URING_ZC_FIXED, NULL, 2, M_URING_FIXED, 0},
	[M_URING_FIXED_NOBOUND] = {"uring_zc_fixed_nobound", RP_URING_ZC_FIXED, NULL, 0, M_URING_FIXED,
				   2048},
	[M_SENDMSG] = {"sendmsg", RP_SENDMSG, NULL, 0, M_SEND, 0},
};

static int method_parse(const char *s)
{
	for (int i = 0; i < NMETHODS; i++)
		if (!strcmp(s, MD[i].name))
			return i;
	return -1;
}

/* ------------------------------------------------------------- config */

struct cfg {
	const char *ns_tx, *ns_rx, *addr;
	int loopback;
	unsigned runs, warmup, nfix, nmin, nmax;
	size_t budget;
	size_t sizes[MAXSIZES];
	unsigned nsizes;
	size_t usizes[MAXSIZES];
	unsigned nusizes;
	int methods[NMETHODS];
	unsigned nmethods;
	int tcp, udp, nodelay;
	unsigned timeout_ms;
	unsigned setup_flags;
	unsigned max_inflight; /* -I: the raw peers' zero-copy sends in flight before they wait */
	int cpu_tx, cpu_rx;
	const char *data_prefix; /* -o: gnuplot data files PREFIX-tcp.dat, PREFIX-udp.dat */
};

static struct cfg C = {
	.ns_tx = "zc-tx", .ns_rx = "zc-rx", .addr = "198.18.0.2",
	.runs = 7, .warmup = 16, .nmin = 200, .nmax = 20000, .budget = 128u << 20,
	.tcp = 1, .udp = 1, .nodelay = 1, .timeout_ms = 10000,
	.setup_flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
	.max_inflight = 64,
	.cpu_tx = 0, .cpu_rx = 1,
};

static atomic_int stop;
static int tcp_lfd = -1, udp_fd = -1;
static atomic_ulong rx_tcp_conns, rx_udp_dgrams;

static double mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t ns_of(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	return sched_setaffinity(0, sizeof(s), &s);
}

static void loadavg(char *out, size_t len)
{
	out[0] = 0;
	FILE *f = fopen("/proc/loadavg", "r");
	if (!f)
		return;
	if (!fgets(out, (int)len, f))
		out[0] = 0;
	fclose(f);
	out[strcspn(out, "\n")] = 0;
}

/* /proc/stat ticks (USER_HZ) for one CPU: softirq and busy (all but idle+iowait) */
static void cpu_ticks(int cpu, unsigned long long *softirq, unsigned long long *busy)
{
	*softirq = *busy = 0;
	FILE *f = fopen("/proc/stat", "r");
	if (!f)
		return;
	char line[512], want[16];
	snprintf(want, sizeof(want), "cpu%d ", cpu);
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, want, strlen(want)))
			continue;
		unsigned long long v[10] = {0};
		sscanf(line + strlen(want), "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0],
		       &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
		*softirq = v[6];
		*busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
		break;
	}
	fclose(f);
}

/* Nanoseconds CPU `cpu` has been idle (idle + iowait) since boot, from the
 * NOHZ idle accounting in /proc/timer_list (nanoseconds, where /proc/stat has
 * 10 ms ticks).  The value excludes an idle period still under way, so read
 * it from a thread running on that CPU.  0 if unreadable (needs root). */
static uint64_t cpu_idle_ns(int cpu)
{
	FILE *f = fopen("/proc/timer_list", "r");
	if (!f)
		return 0;
	char line[256];
	int in = 0, got = 0;
	uint64_t t = 0;
	for (int g = 0; g < 100000 && got < 2 && fgets(line, sizeof(line), f); g++) {
		int c;
		unsigned long long v;
		if (sscanf(line, "cpu: %d", &c) == 1)
			in = c == cpu;
		else if (in && (sscanf(line, " .idle_sleeptime : %llu", &v) == 1 ||
				sscanf(line, " .iowait_sleeptime: %llu", &v) == 1)) {
			t += v;
			got++;
		}
	}
	fclose(f);
	return got == 2 ? t : 0;
}

/* CPU ticks of this process's io_uring worker threads (iou-wrk-*): work the
 * kernel punted there is not in the sender's CLOCK_THREAD_CPUTIME_ID. */
static unsigned long long iowq_ticks(unsigned *nthreads)
{
	unsigned long long t = 0;
	*nthreads = 0;
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return 0;
	struct dirent *e;
	for (int g = 0; g < 4096 && (e = readdir(d)); g++) {
		if (e->d_name[0] == '.')
			continue;
		char p[300], buf[512];
		snprintf(p, sizeof(p), "/proc/self/task/%s/stat", e->d_name);
		FILE *f = fopen(p, "r");
		if (!f)
			continue;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		char *l = strchr(buf, '('), *r = strrchr(buf, ')');
		if (!l || !r || strncmp(l + 1, "iou-wrk", 7))
			continue;
		(*nthreads)++;
		unsigned long long ut = 0, st = 0;
		/* fields after ")": state ppid pgrp session tty tpgid flags minflt cminflt
		 * majflt cmajflt utime stime */
		if (sscanf(r + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
			   &st) == 2)
			t += ut + st;
	}
	closedir(d);
	return t;
}

/* ---------------------------------------------------------------- receivers */

static int rx_setup(void *arg)
{
	(void)arg;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	inet_pton(AF_INET, C.addr, &sa.sin_addr);
	int one = 1;
	tcp_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(tcp_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_port = htons(TCP_PORT);
	if (bind(tcp_lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(tcp_lfd, 16)) {
		perror("zcbench: tcp listen");
		return -1;
	}
	udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rcv = 8 << 20;
	setsockopt(udp_fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv));
	sa.sin_port = htons(UDP_PORT);
	if (bind(udp_fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("zcbench: udp bind");
		return -1;
	}
	return 0;
}

static char *rx_buf(void)
{
	static _Thread_local char *b;
	if (!b)
		b = malloc(1 << 20);
	return b;
}

static int rx_tcp(void *arg)
{
	(void)arg;
	pin(C.cpu_rx);
	char *buf = rx_buf();
	if (!buf)
		return -1;
	while (!atomic_load(&stop)) {
		struct pollfd pf = {.fd = tcp_lfd, .events = POLLIN};
		if (poll(&pf, 1, 100) <= 0)
			continue;
		int c = accept4(tcp_lfd, NULL, NULL, SOCK_CLOEXEC);
		if (c < 0)
			continue;
		struct timeval tv = {1, 0};
		setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		/* read until EOF; a 1 s silence re-checks stop, then keeps reading */
		for (;;) {
			ssize_t n = recv(c, buf, 1 << 20, 0);
			if (n > 0)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EINTR) && !atomic_load(&stop))
				continue;
			break;
		}
		close(c); /* the sender waits for this close */
		atomic_fetch_add(&rx_tcp_conns, 1);
	}
	return 0;
}

static int rx_udp(void *arg)
{
	(void)arg;
	pin(C.cpu_rx);
	char *buf = rx_buf();
	if (!buf)
		return -1;
	struct timeval tv = {0, 100000};
	setsockopt(udp_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (!atomic_load(&stop)) {
		if (recv(udp_fd, buf, 1 << 20, 0) > 0)
			atomic_fetch_add(&rx_udp_dgrams, 1);
	}
	return 0;
}

/* ------------------------------------------------------- zc_send methods */

struct zpool {
	zc_pool *pool;
	const char *backend; /* what the pool runs */
	void *obj[2][MAXSIZES]; /* [proto][size index]: the sealed object */
	int fill_failed;        /* a small object's pageblock never got protected */
};

static struct zpool ZP[NMETHODS];

/* One sealed object of `size` bytes holding the pattern of buf.  Small ones:
 * fill the rest of the pageblock with sealed objects of the same size, so the
 * pageblock is write-protected (zero-copy needs that). */
static void *sealed_object(struct zpool *z, const char *pattern, size_t size)
{
	struct zc_stats s0, s1;
	zc_stats(z->pool, &s0);
	char *o = zc_alloc(z->pool, size);
	if (!o)
		return NULL;
	memcpy(o, pattern, size);
	if (zc_seal(z->pool, o) < 0)
		return NULL;
	if (size > (32u << 10) || !strcmp(z->backend, "copy"))
		return o;
	for (int i = 0; i < FILL_MAX; i++) {
		zc_stats(z->pool, &s1);
		if (s1.pageblocks_protected > s0.pageblocks_protected)
			return o;
		char *f = zc_alloc(z->pool, size);
		if (!f)
			break;
		memcpy(f, pattern, size);
		zc_seal(z->pool, f);
	}
	z->fill_failed = 1;
	return o;
}

static int zpool_make(struct zpool *z, const char *backend, const char *pattern)
{
	struct zc_pool_config cfg;
	zc_pool_config_init(&cfg);
	cfg.backend = backend;
	int rc = zc_pool_create(&z->pool, &cfg);
	if (rc < 0)
		return rc;
	z->backend = zc_backend_name(z->pool);
	/* largest first: large objects get page runs in a fresh arena */
	for (int p = 0; p < 2; p++) {
		unsigned n = p ? C.nusizes : C.nsizes;
		const size_t *sz = p ? C.usizes : C.sizes;
		for (unsigned i = 0; i < n; i++) {
			/* reuse the TCP object of the same size for UDP */
			void *same = NULL;
			if (p)
				for (unsigned j = 0; j < C.nsizes; j++)
					if (C.sizes[j] == sz[i] && z->obj[0][j])
						same = z->obj[0][j];
			z->obj[p][i] = same ? same : sealed_object(z, pattern, sz[i]);
			if (!z->obj[p][i])
				return -ENOMEM;
		}
	}
	return 0;
}

/* Where the large objects lie in the arena (the mapping that holds them):
 * the iouring backend registers the arena in 2 MiB segments, and a send that
 * crosses a segment boundary cannot use a fixed buffer. */
static void placement(const struct zpool *z)
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return;
	char line[512];
	uintptr_t lo = 0, hi = 0, o = (uintptr_t)z->obj[0][0];
	size_t big = 0;
	for (unsigned i = 0; i < C.nsizes; i++)
		if (C.sizes[i] > big) {
			big = C.sizes[i];
			o = (uintptr_t)z->obj[0][i];
		}
	for (int g = 0; g < 100000 && fgets(line, sizeof(line), f); g++) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx", &a, &b) == 2 && a <= o && o < b && b - a >= (64u << 20)) {
			lo = a;
			hi = b;
			break;
		}
	}
	fclose(f);
	if (!lo)
		return;
	printf("#   %s: largest object (%zu B) at arena offset %#lx (mapping %#lx..%#lx)%s\n",
	       z->backend, big, (unsigned long)(o - lo), (unsigned long)lo, (unsigned long)hi,
	       (o - lo) / (2u << 20) != (o - lo + big - 1) / (2u << 20)
		       ? ", crosses a 2 MiB boundary"
		       : ", inside one 2 MiB segment");
}

/* Counters the zc_send loop keeps, beside the zc_stats delta. */
struct zrun {
	uint64_t msgs, bytes, calls, retries, cpu_ns, wall_ns;
	int err;
};

/* Send n messages of size bytes from obj with zc_send, then reap every
 * completion with zc_poll; bounded by deadline. */
static int zc_run(struct zpool *z, int fd, int stream, const char *obj, size_t size, unsigned n,
		  int wait, struct zrun *st)
{
	memset(st, 0, sizeof(*st));
	uint64_t c0 = ns_of(CLOCK_THREAD_CPUTIME_ID), w0 = ns_of(CLOCK_MONOTONIC);
	uint64_t deadline = w0 + (uint64_t)C.timeout_ms * 1000000u;
	int rc = 0;
	for (unsigned i = 0; i < n && !rc; i++) {
		size_t off = 0;
		while (off < size) {
			if ((st->calls & 63) == 0 && ns_of(CLOCK_MONOTONIC) > deadline) {
				st->err = ETIMEDOUT;
				rc = -1;
				break;
			}
			ssize_t r = zc_send(z->pool, fd, obj + off, size - off, 0);
			st->calls++;
			if (r < 0) {
				if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) {
					st->retries++;
					if (errno != EINTR)
						sched_yield();
					continue;
				}
				st->err = errno;
				rc = -1;
				break;
			}
			off += (size_t)r;
			st->bytes += (uint64_t)r;
			if (!stream)
				break;
		}
		if (!rc)
			st->msgs++;
	}
	/* every completion back, bounded */
	for (int g = 0; wait && g < 100000; g++) {
		struct zc_stats s;
		zc_stats(z->pool, &s);
		if (!s.in_flight)
			break;
		if (ns_of(CLOCK_MONOTONIC) > deadline) {
			if (!rc)
				st->err = ETIMEDOUT;
			rc = -1;
			break;
		}
		zc_poll(z->pool, 10);
	}
	st->cpu_ns = ns_of(CLOCK_THREAD_CPUTIME_ID) - c0;
	st->wall_ns = ns_of(CLOCK_MONOTONIC) - w0;
	return rc;
}

/* ------------------------------------------------------------------ sender */

struct meas {
	int ok;
	int err;
	unsigned n;
	double cpu_us;   /* per message */
	double wall_s;
	double copied;   /* share of bytes copied (kernel report or estimate), -1 if unknown */
	double zcbytes;  /* zc_send: share of bytes the library handed over without a copy */
	double ccopied;  /* zc_send: share of completions the kernel flagged copied, -1 if none */
	uint64_t compl;  /* zc_send: completions reaped */
	double sirq0_us; /* CPU 0 softirq per message (tick resolution) */
	double cpu1_us;  /* CPU 1 busy per message (tick resolution) */
	double cpu0_us;  /* CPU 0 busy per message: sender + softirq + all else on CPU 0 (us) */
	double csw;      /* sender context switches (voluntary + not) per message */
	unsigned long long retries, fallbacks;
	unsigned long long bound_waits; /* raw peers: waits at the in-flight bound (-I) */
};

static int connect_sock(int tcp)
{
	int fd = socket(AF_INET, (tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int one = 1;
	if (tcp && C.nodelay)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(tcp ? TCP_PORT : UDP_PORT)};
	inet_pton(AF_INET, C.addr, &sa.sin_addr);
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (rc && errno == EINTR && tcp) {
		/* a signal cut the wait short; the connection goes on: wait for
		 * it (bounded) and take its outcome */
		struct pollfd pf = {.fd = fd, .events = POLLOUT};
		int err = ETIMEDOUT;
		socklen_t len = sizeof(err);
		for (int i = 0; i < 100; i++) {
			int n = poll(&pf, 1, 50);
			if (n > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0)
				break;
			err = ETIMEDOUT;
		}
		rc = err ? -1 : 0;
		errno = err;
	}
	if (rc) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* The namespace's default, which every TCP socket here gets: with BBR, TCP
 * paces its own sends from a timer (no fq qdisc on veth), and that work
 * lands on whatever runs on the sender's CPU then. */
static const char *tcp_congestion(void)
{
	static char name[32];
	socklen_t len = sizeof(name) - 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, &len))
		snprintf(name, sizeof(name), "unknown");
	if (fd >= 0)
		close(fd);
	return name;
}

static unsigned n_for(size_t size)
{
	if (C.nfix)
		return C.nfix;
	size_t n = C.budget / size;
	if (n < C.nmin)
		n = C.nmin;
	if (n > C.nmax)
		n = C.nmax;
	return (unsigned)n;
}

static struct meas measure(struct rp_uring *u, char *buf, int tcp, int m, unsigned si, size_t size)
{
	struct meas r = {0};
	r.n = n_for(size);
	r.copied = r.zcbytes = r.ccopied = -1;
	int fd = connect_sock(tcp);
	if (fd < 0) {
		r.err = errno;
		return r;
	}
	int raw = MD[m].raw >= 0;
	struct rp_uring *ring = &u[MD[m].ring];
	struct rp_sock s;
	rp_sock_init(&s, fd);
	struct rp_opts o = {.timeout_ms = C.timeout_ms,
			    .max_inflight = MD[m].max_inflight ? MD[m].max_inflight : C.max_inflight};
	struct rp_stats st;
	struct zrun zr;
	struct zpool *z = &ZP[m];
	const char *obj = raw ? buf : z->obj[tcp ? 0 : 1][si];
	int rc;
	if (C.warmup) {
		rc = raw ? rp_send(MD[m].raw, ring, &s, buf, size, C.warmup, &o, &st)
			 : zc_run(z, fd, tcp, obj, size, C.warmup, 0, &zr);
		if (rc) {
			r.err = raw ? st.err : zr.err;
			close(fd);
			return r;
		}
	}
	unsigned long long s0a, b1a, s0b, b1b, dummy;
	struct zc_stats za, zb;
	if (!raw)
		zc_stats(z->pool, &za);
	cpu_ticks(C.cpu_tx, &s0a, &dummy);
	cpu_ticks(C.cpu_rx, &dummy, &b1a);
	struct rusage ra, rb;
	getrusage(RUSAGE_THREAD, &ra);
	/* CPU 0 busy = wall - idle over [i0 read, i1 read]: CPU 0 runs this
	 * thread while it reads, so the idle sum does not move during a read */
	uint64_t i0 = cpu_idle_ns(C.cpu_tx), t0 = ns_of(CLOCK_MONOTONIC);
	rc = raw ? rp_send(MD[m].raw, ring, &s, buf, size, r.n, &o, &st)
		 : zc_run(z, fd, tcp, obj, size, r.n, 1, &zr);
	uint64_t t1 = ns_of(CLOCK_MONOTONIC), i1 = cpu_idle_ns(C.cpu_tx);
	getrusage(RUSAGE_THREAD, &rb);
	cpu_ticks(C.cpu_tx, &s0b, &dummy);
	cpu_ticks(C.cpu_rx, &dummy, &b1b);
	if (!raw)
		zc_stats(z->pool, &zb);
	uint64_t msgs = raw ? st.msgs : zr.msgs;
	if (rc) {
		r.err = raw ? st.err : zr.err;
	} else {
		r.ok = 1;
		r.cpu_us = (double)(raw ? st.cpu_ns : zr.cpu_ns) / 1e3 / (double)msgs;
		r.wall_s = (double)(raw ? st.wall_ns : zr.wall_ns) / 1e9;
		if (raw) {
			r.copied = st.report && st.bytes_reported
					   ? (double)st.bytes_copied / (double)st.bytes_reported
					   : -1;
			r.retries = st.retries;
			r.bound_waits = st.bound_waits;
		} else {
			double zcb = (double)(zb.bytes_zerocopy - za.bytes_zerocopy);
			double cpb = (double)(zb.bytes_copied - za.bytes_copied);
			uint64_t cm = zb.completions - za.completions;
			uint64_t cc = zb.completions_copied - za.completions_copied;
			r.compl = cm;
			r.zcbytes = zcb + cpb > 0 ? zcb / (zcb + cpb) : -1;
			r.ccopied = cm ? (double)cc / (double)cm : -1;
			/* bytes copied by the library, plus the zero-copy bytes in the
			 * share of completions the kernel flagged copied */
			if (zcb + cpb > 0)
				r.copied = (cpb + zcb * (cm ? (double)cc / (double)cm : 0)) / (zcb + cpb);
			r.retries = zr.retries;
			r.fallbacks = zb.fallbacks - za.fallbacks;
		}
		double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
		r.sirq0_us = (double)(s0b - s0a) * tick_us / (double)msgs;
		r.cpu1_us = (double)(b1b - b1a) * tick_us / (double)msgs;
		r.cpu0_us = i0 && i1 >= i0 && t1 - t0 >= i1 - i0
				    ? (double)((t1 - t0) - (i1 - i0)) / 1e3 / (double)msgs
				    : NAN;
		r.csw = (double)(rb.ru_nvcsw - ra.ru_nvcsw + rb.ru_nivcsw - ra.ru_nivcsw) / (double)msgs;
	}
	if (tcp) {
		/* wait until the receiver has read everything and closed (bounded
		 * by SO_RCVTIMEO), so measurements never overlap */
		shutdown(fd, SHUT_WR);
		char c;
		for (int i = 0; i < 4 && recv(fd, &c, 1, 0) > 0; i++)
			;
	}
	close(fd);
	if (!raw)
		zc_poll(z->pool, 0); /* msgzc: lets go of its duplicate of fd */
	return r;
}

/* --------------------------------------------------------------- reporting */

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

struct agg {
	unsigned ok;
	double med, min, max;
};

static struct agg aggregate(const double *v, unsigned n)
{
	struct agg a = {0, NAN, NAN, NAN};
	double t[MAXRUNS];
	for (unsigned i = 0; i < n; i++)
		if (!isnan(v[i]))
			t[a.ok++] = v[i];
	if (!a.ok)
		return a;
	qsort(t, a.ok, sizeof(double), cmpd);
	a.min = t[0];
	a.max = t[a.ok - 1];
	a.med = a.ok % 2 ? t[a.ok / 2] : (t[a.ok / 2 - 1] + t[a.ok / 2]) / 2;
	return a;
}

static void pct(char *out, size_t len, struct agg a)
{
	if (a.ok)
		snprintf(out, len, "%.0f%%", a.med * 100);
	else
		snprintf(out, len, "-");
}

static void usage(const char *a0)
{
	fprintf(stderr,
		"usage: %s [options]\n"
		"  -r RUNS     runs per point, median reported (default 7, max %d)\n"
		"  -s LIST     TCP sizes (default 256,1k,4k,16k,64k,256k,1m)\n"
		"  -u LIST     UDP sizes (default 256,1k,4k,16k,60k; at most %d)\n"
		"  -p LIST     tcp,udp (default both)\n"
		"  -m LIST     methods (default send,zc_copy,zc_iouring,zc_msgzc,zc_auto,\n"
		"              uring_zc_fixed,msg_zerocopy; also uring_zc, uring_send,\n"
		"              uring_zc_fixed_nd, uring_zc_fixed_coop,\n"
		"              uring_zc_fixed_nobound, sendmsg; 'all' for every one)\n"
		"  -R          raw peers only: send,msg_zerocopy,uring_zc_fixed,uring_zc,uring_send\n"
		"              (what rawbench ran)\n"
		"  -n N        messages per measurement (default: 128 MiB / size, in [200, 20000])\n"
		"  -w W        warm-up messages per measurement (default 16)\n"
		"  -F FLAGS    setup flags of the raw peers' ring (default 0x%x =\n"
		"              SINGLE_ISSUER|DEFER_TASKRUN)\n"
		"  -I N        zero-copy sends the raw peers keep in flight before they wait\n"
		"              for a completion (default 64; 1..2048; zc_send has no such\n"
		"              bound: -I 2048 sends as it does)\n"
		"  -D          leave Nagle on (default TCP_NODELAY)\n"
		"  -L          loopback (127.0.0.1, this namespace) instead of the veth topology\n"
		"  -T MS       timeout per measurement (default 10000)\n"
		"  -o PREFIX   also write gnuplot data PREFIX-{tcp,udp}.dat (sender thread CPU),\n"
		"              PREFIX-{tcp,udp}-cpu0.dat (CPU 0 busy) and every run, PREFIX-runs.txt\n",
		a0, MAXRUNS, UDP_MAX, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
}

static size_t parse_size(const char *s)
{
	char *e;
	double v = strtod(s, &e);
	switch (*e) {
	case 'k': case 'K': v *= 1024; break;
	case 'm': case 'M': v *= 1024 * 1024; break;
	default: break;
	}
	return (size_t)v;
}

static unsigned parse_sizes(char *arg, size_t *out)
{
	unsigned n = 0;
	char *save, *tok;
	for (tok = strtok_r(arg, ",", &save); tok && n < MAXSIZES; tok = strtok_r(NULL, ",", &save))
		out[n++] = parse_size(tok);
	return n;
}

/* results[proto][size][method][run] */
static struct meas R[2][MAXSIZES][NMETHODS][MAXRUNS];

/* PREFIX-tcp.dat / PREFIX-udp.dat (sender thread CPU), or with cpu0 set
 * PREFIX-tcp-cpu0.dat / PREFIX-udp-cpu0.dat (CPU 0 busy) */
static void write_dat(int p, int cpu0, const int *use)
{
	char path[512];
	snprintf(path, sizeof(path), "%s-%s%s.dat", C.data_prefix, p ? "udp" : "tcp",
		 cpu0 ? "-cpu0" : "");
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		return;
	}
	fprintf(f, "# zcbench: %s per message (us), median min max over %u runs\n",
		cpu0 ? "CPU 0 busy (sender and softirq)" : "sender thread CPU", C.runs);
	fprintf(f, "size");
	for (unsigned k = 0; k < C.nmethods; k++) {
		int m = C.methods[k];
		if (use[m])
			fprintf(f, " %s %s_min %s_max", MD[m].name, MD[m].name, MD[m].name);
	}
	fprintf(f, "\n");
	unsigned ns = p ? C.nusizes : C.nsizes;
	for (unsigned si = 0; si < ns; si++) {
		fprintf(f, "%zu", p ? C.usizes[si] : C.sizes[si]);
		for (unsigned k = 0; k < C.nmethods; k++) {
			int m = C.methods[k];
			if (!use[m])
				continue;
			double v[MAXRUNS];
			for (unsigned r = 0; r < C.runs; r++)
				v[r] = !R[p][si][m][r].ok ? NAN
				       : cpu0		  ? R[p][si][m][r].cpu0_us
							  : R[p][si][m][r].cpu_us;
			struct agg a = aggregate(v, C.runs);
			if (a.ok)
				fprintf(f, " %.4f %.4f %.4f", a.med, a.min, a.max);
			else
				fprintf(f, " NaN NaN NaN");
		}
		fprintf(f, "\n");
	}
	fclose(f);
	fprintf(stderr, "# wrote %s\n", path);
}

/* every measurement: PREFIX-runs.txt */
static void write_runs(const int *use)
{
	char path[512];
	snprintf(path, sizeof(path), "%s-runs.txt", C.data_prefix);
	FILE *f = fopen(path, "w");
	if (!f) {
		perror(path);
		return;
	}
	fprintf(f, "# proto size method run ok cpu_us copied zcB kcop compl sirq0_us cpu1_us cpu0_us\n");
	for (int p = 0; p < 2; p++) {
		if ((p == 0 && !C.tcp) || (p == 1 && !C.udp))
			continue;
		unsigned ns = p ? C.nusizes : C.nsizes;
		for (unsigned si = 0; si < ns; si++)
			for (unsigned k = 0; k < C.nmethods; k++) {
				int m = C.methods[k];
				if (!use[m])
					continue;
				for (unsigned r = 0; r < C.runs; r++) {
					struct meas *x = &R[p][si][m][r];
					fprintf(f, "%s %zu %s %u %d %.3f %.3f %.3f %.3f %llu %.2f %.2f %.3f\n",
						p ? "udp" : "tcp", p ? C.usizes[si] : C.sizes[si],
						MD[m].name, r, x->ok, x->cpu_us, x->copied, x->zcbytes,
						x->ccopied, (unsigned long long)x->compl, x->sirq0_us,
						x->cpu1_us, x->cpu0_us);
				}
			}
	}
	fclose(f);
	fprintf(stderr, "# wrote %s\n", path);
}

int main(int argc, char **argv)
{
	int opt;
	int methods_set = 0;
	while ((opt = getopt(argc, argv, "r:s:u:p:m:Rn:w:F:I:DLT:o:h")) != -1) {
		char *tok, *save, *arg = optarg;
		switch (opt) {
		case 'r': C.runs = (unsigned)atoi(optarg); break;
		case 's': C.nsizes = parse_sizes(arg, C.sizes); break;
		case 'u': C.nusizes = parse_sizes(arg, C.usizes); break;
		case 'p':
			C.tcp = strstr(optarg, "tcp") != NULL;
			C.udp = strstr(optarg, "udp") != NULL;
			break;
		case 'm':
			methods_set = 1;
			C.nmethods = 0;
			if (!strcmp(optarg, "all")) {
				for (int i = 0; i < NMETHODS; i++)
					C.methods[C.nmethods++] = i;
				break;
			}
			for (tok = strtok_r(arg, ",", &save); tok && C.nmethods < NMETHODS;
			     tok = strtok_r(NULL, ",", &save)) {
				int m = method_parse(tok);
				if (m < 0) {
					fprintf(stderr, "unknown method %s\n", tok);
					return 2;
				}
				C.methods[C.nmethods++] = m;
			}
			break;
		case 'R': {
			static const int raw[] = {M_SEND, M_MSGZC, M_URING_FIXED, M_URING_ZC, M_URING_SEND};
			methods_set = 1;
			C.nmethods = 0;
			for (unsigned i = 0; i < sizeof(raw) / sizeof(raw[0]); i++)
				C.methods[C.nmethods++] = raw[i];
			break;
		}
		case 'n': C.nfix = (unsigned)atoi(optarg); break;
		case 'w': C.warmup = (unsigned)atoi(optarg); break;
		case 'F': C.setup_flags = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'I':
			C.max_inflight = (unsigned)atoi(optarg);
			if (C.max_inflight < 1 || C.max_inflight > 2048) {
				fprintf(stderr, "zcbench: -I takes 1..2048\n");
				return 2;
			}
			break;
		case 'D': C.nodelay = 0; break;
		case 'L': C.loopback = 1; break;
		case 'T': C.timeout_ms = (unsigned)atoi(optarg); break;
		case 'o': C.data_prefix = optarg; break;
		default: usage(argv[0]); return opt == 'h' ? 0 : 2;
		}
	}
	if (!C.runs || C.runs > MAXRUNS) {
		fprintf(stderr, "runs must be 1..%d\n", MAXRUNS);
		return 2;
	}
	if (!C.nsizes) {
		static const size_t d[] = {256, 1024, 4096, 16384, 65536, 262144, 1048576};
		for (unsigned i = 0; i < sizeof(d) / sizeof(d[0]); i++)
			C.sizes[C.nsizes++] = d[i];
	}
	if (!C.nusizes) {
		static const size_t d[] = {256, 1024, 4096, 16384, UDP_TOP};
		for (unsigned i = 0; i < sizeof(d) / sizeof(d[0]); i++)
			C.usizes[C.nusizes++] = d[i];
	}
	for (unsigned i = 0; i < C.nsizes; i++)
		if (!C.sizes[i] || C.sizes[i] > (1u << 20)) {
			fprintf(stderr, "TCP sizes must be 1 B .. 1 MiB\n");
			return 2;
		}
	for (unsigned i = 0; i < C.nusizes; i++)
		if (!C.usizes[i] || C.usizes[i] > UDP_MAX) {
			fprintf(stderr, "UDP sizes must be 1 B .. %d B\n", UDP_MAX);
			return 2;
		}
	if (!methods_set) {
		static const int d[] = {M_SEND,	       M_ZC_COPY,     M_ZC_IOURING, M_ZC_MSGZC,
					M_ZC_AUTO,     M_URING_FIXED, M_MSGZC};
		for (unsigned i = 0; i < sizeof(d) / sizeof(d[0]); i++)
			C.methods[C.nmethods++] = d[i];
	}
	if (C.loopback) {
		C.ns_tx = C.ns_rx = "/proc/self/ns/net";
		C.addr = "127.0.0.1";
	} else {
		struct stat sb;
		if (stat("/run/netns/zc-tx", &sb) || stat("/run/netns/zc-rx", &sb)) {
			fprintf(stderr, "zcbench: namespaces zc-tx/zc-rx missing: run "
					"bench/topology/topology.sh up first (or -L for loopback)\n");
			return 1;
		}
	}

	/* receivers */
	if (zc_netns_run(C.ns_rx, rx_setup, NULL)) {
		fprintf(stderr, "zcbench: receiver setup failed in %s\n", C.ns_rx);
		return 1;
	}
	struct zc_netns_thread trx, urx;
	if (zc_netns_start(&trx, C.ns_rx, rx_tcp, NULL) || zc_netns_start(&urx, C.ns_rx, rx_udp, NULL)) {
		perror("zcbench: receiver threads");
		return 1;
	}

	/* sender: this thread */
	int saved;
	if (zc_netns_enter(C.ns_tx, &saved)) {
		perror("zcbench: setns tx");
		return 1;
	}
	if (pin(C.cpu_tx))
		perror("zcbench: pin sender (continuing)");
	char *buf = mmap(NULL, BUFSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (size_t i = 0; i < BUFSZ; i++)
		buf[i] = (char)(i * 131 + 7);
	struct rp_uring u[3];
	int uring_ok = rp_uring_init(&u[0], buf, BUFSZ, 64, C.setup_flags) == 0;
	int uring_nd = rp_uring_init(&u[1], buf, BUFSZ, 64, 0) == 0;
	int uring_coop = rp_uring_init(&u[2], buf, BUFSZ, 64,
				       IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER) == 0;
	char la[128];
	loadavg(la, sizeof(la));
	time_t now = time(NULL);
	char when[64];
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&now));
	printf("# zcbench %s, libzcopy %s: %s, sender CPU %d in %s, receivers CPU %d in %s, %u runs, "
	       "warm-up %u, TCP_NODELAY %s\n",
	       when, zc_version_string(),
	       C.loopback ? "loopback 127.0.0.1" : "veth+XDP 198.18.0.1 -> 198.18.0.2", C.cpu_tx,
	       C.loopback ? "root ns" : C.ns_tx, C.cpu_rx, C.loopback ? "root ns" : C.ns_rx, C.runs,
	       C.warmup, C.nodelay ? "on" : "off");
	printf("# load average at start: %s\n", la);
	printf("# TCP congestion control in the sender's namespace: %s\n", tcp_congestion());
	printf("# raw io_uring: ring %s (setup flags 0x%x; _nd ring 0x%x %s; _coop ring 0x%x %s), "
	       "SEND_ZC %s, fixed buffer %s, REPORT_USAGE %s%s%s; raw peers keep at most %u "
	       "zero-copy sends in flight\n",
	       uring_ok ? "ok" : "FAILED", u[0].setup_flags, u[1].setup_flags,
	       uring_nd ? "ok" : "FAILED", u[2].setup_flags, uring_coop ? "ok" : "FAILED",
	       u[0].has_send_zc ? "yes" : "no",
	       u[0].registered ? "registered" : "NOT registered", u[0].report_usage ? "yes" : "no",
	       u[0].why[0] ? "; " : "", u[0].why, C.max_inflight);
	const char *env[] = {"ZC_BACKEND", "ZC_COPY_THRESHOLD", "ZC_PAGEBLOCK_SIZE", "ZC_ARENA_SIZE",
			     "ZC_LOG"};
	for (unsigned i = 0; i < sizeof(env) / sizeof(env[0]); i++)
		if (getenv(env[i]))
			printf("# environment: %s=%s\n", env[i], getenv(env[i]));
	int use[NMETHODS] = {0};
	for (unsigned i = 0; i < C.nmethods; i++) {
		int m = C.methods[i];
		if (MD[m].raw >= 0) {
			const char *why;
			if (rp_available(MD[m].raw, &u[MD[m].ring], &why))
				use[m] = 1;
			else
				printf("# method %s unavailable: %s\n", MD[m].name, why);
			continue;
		}
		char why[256];
		if (strcmp(MD[m].backend, "auto") &&
		    zc_backend_probe(MD[m].backend, why, sizeof(why)) < 0) {
			printf("# method %s unavailable: backend %s: %s\n", MD[m].name, MD[m].backend,
			       why);
			continue;
		}
		int rc = zpool_make(&ZP[m], MD[m].backend, buf);
		if (rc < 0) {
			printf("# method %s unavailable: pool: %s\n", MD[m].name, zc_strerror(rc));
			continue;
		}
		use[m] = 1;
		printf("# method %s: pool backend %s%s\n", MD[m].name, ZP[m].backend,
		       ZP[m].fill_failed ? " (a small object's pageblock was not protected)" : "");
		placement(&ZP[m]);
	}
	fflush(stdout);

	double t0 = mono();
	for (unsigned run = 0; run < C.runs; run++) {
		for (int p = 0; p < 2; p++) {
			if ((p == 0 && !C.tcp) || (p == 1 && !C.udp))
				continue;
			unsigned ns = p == 0 ? C.nsizes : C.nusizes;
			for (unsigned si = 0; si < ns; si++) {
				size_t size = p == 0 ? C.sizes[si] : C.usizes[si];
				for (unsigned k = 0; k < C.nmethods; k++) {
					int m = C.methods[(k + run) % C.nmethods]; /* rotate order */
					if (!use[m])
						continue;
					R[p][si][m][run] = measure(u, buf, p == 0, m, si, size);
					if (!R[p][si][m][run].ok)
						fprintf(stderr, "# run %u %s %zu %s: %s\n", run,
							p ? "udp" : "tcp", size, MD[m].name,
							strerror(R[p][si][m][run].err));
				}
			}
		}
		loadavg(la, sizeof(la));
		fprintf(stderr, "# run %u/%u done, %.1f s, load %s\n", run + 1, C.runs, mono() - t0, la);
	}

	printf("# per message: sender thread CPU (CLOCK_THREAD_CPUTIME_ID) median [min..max] over runs;\n"
	       "# ratio = median / median of send(); vs = median / median of the raw peer (zc_iouring,\n"
	       "# zc_auto: uring_zc_fixed; zc_msgzc: msg_zerocopy; zc_copy: send); copied = share of\n"
	       "# bytes copied (raw: kernel report; zc_send: library copies + zero-copy bytes in the\n"
	       "# share of completions flagged copied), zcB = bytes zc_send handed over without a copy,\n"
	       "# kcop = completions the kernel flagged copied (of compl per measurement), all medians;\n"
	       "# sirq0 = CPU0 softirq, cpu1 = CPU1 busy, /proc/stat ticks (10 ms), us per message;\n"
	       "# csw = sender context switches per message; cpu0 = CPU 0 busy per message (us,\n"
	       "# median; wall minus NOHZ idle time from /proc/timer_list: the sender thread and\n"
	       "# every softirq on CPU 0, each counted once), ratio0 and vs0 as ratio and vs for cpu0\n");
	printf("%-5s %8s %6s %-17s %8s %19s %5s %5s %7s %6s %6s %5s %5s %6s %6s %7s %5s %7s %6s %5s\n",
	       "proto", "size", "N", "method", "cpu_us", "[min..max]", "ratio", "vs", "ns/KiB", "MB/s",
	       "copied", "zcB", "kcop", "compl", "sirq0", "cpu1", "csw", "cpu0", "ratio0", "vs0");
	for (int p = 0; p < 2; p++) {
		if ((p == 0 && !C.tcp) || (p == 1 && !C.udp))
			continue;
		unsigned ns = p == 0 ? C.nsizes : C.nusizes;
		for (unsigned si = 0; si < ns; si++) {
			size_t size = p == 0 ? C.sizes[si] : C.usizes[si];
			double med[NMETHODS], med0[NMETHODS];
			for (int m = 0; m < NMETHODS; m++) {
				double cpu[MAXRUNS], c0[MAXRUNS];
				for (unsigned r = 0; r < C.runs; r++) {
					cpu[r] = R[p][si][m][r].ok ? R[p][si][m][r].cpu_us : NAN;
					c0[r] = R[p][si][m][r].ok ? R[p][si][m][r].cpu0_us : NAN;
				}
				med[m] = use[m] ? aggregate(cpu, C.runs).med : NAN;
				med0[m] = use[m] ? aggregate(c0, C.runs).med : NAN;
			}
			for (unsigned k = 0; k < C.nmethods; k++) {
				int m = C.methods[k];
				if (!use[m])
					continue;
				double cpu[MAXRUNS], mbs[MAXRUNS], cp[MAXRUNS], zb[MAXRUNS], kc[MAXRUNS],
					cm[MAXRUNS], s0[MAXRUNS], c1[MAXRUNS], cs[MAXRUNS];
				unsigned long long rt = 0, fb = 0, bw = 0;
				for (unsigned r = 0; r < C.runs; r++) {
					struct meas *x = &R[p][si][m][r];
					cpu[r] = x->ok ? x->cpu_us : NAN;
					mbs[r] = x->ok ? (double)x->n * (double)size / x->wall_s / 1e6 : NAN;
					cp[r] = x->ok && x->copied >= 0 ? x->copied : NAN;
					zb[r] = x->ok && x->zcbytes >= 0 ? x->zcbytes : NAN;
					kc[r] = x->ok && x->ccopied >= 0 ? x->ccopied : NAN;
					cm[r] = x->ok && MD[m].raw < 0 ? (double)x->compl : NAN;
					s0[r] = x->ok ? x->sirq0_us : NAN;
					c1[r] = x->ok ? x->cpu1_us : NAN;
					cs[r] = x->ok ? x->csw : NAN;
					rt += x->retries;
					fb += x->fallbacks;
					bw += x->bound_waits;
				}
				struct agg a = aggregate(cpu, C.runs), b = aggregate(mbs, C.runs),
					   c = aggregate(cp, C.runs), z = aggregate(zb, C.runs),
					   q = aggregate(kc, C.runs), n = aggregate(cm, C.runs),
					   d = aggregate(s0, C.runs), e = aggregate(c1, C.runs),
					   f = aggregate(cs, C.runs);
				char range[40], copied[16], zcb[16], kcop[16], vs[16], compl[16];
				snprintf(range, sizeof(range), "[%.2f..%.2f]", a.min, a.max);
				pct(copied, sizeof(copied), c);
				pct(zcb, sizeof(zcb), z);
				pct(kcop, sizeof(kcop), q);
				if (n.ok)
					snprintf(compl, sizeof(compl), "%.0f", n.med);
				else
					snprintf(compl, sizeof(compl), "-");
				char vs0[16];
				if (MD[m].vs >= 0 && !isnan(med[MD[m].vs])) {
					snprintf(vs, sizeof(vs), "%.2f", a.med / med[MD[m].vs]);
					snprintf(vs0, sizeof(vs0), "%.2f", med0[m] / med0[MD[m].vs]);
				} else {
					snprintf(vs, sizeof(vs), "-");
					snprintf(vs0, sizeof(vs0), "-");
				}
				printf("%-5s %8zu %6u %-17s %8.2f %19s %5.2f %5s %7.0f %6.0f %6s %5s %5s %6s "
				       "%6.2f %7.2f %5.2f %7.2f %6.2f %5s",
				       p ? "udp" : "tcp", size, n_for(size), MD[m].name, a.med, range,
				       a.med / med[M_SEND], vs, a.med * 1e3 / ((double)size / 1024), b.med,
				       copied, zcb, kcop, compl, d.med, e.med, f.med, med0[m],
				       med0[m] / med0[M_SEND], vs0);
				if (a.ok < C.runs)
					printf("  (%u/%u runs ok)", a.ok, C.runs);
				if (rt)
					printf("  (%llu ENOBUFS/EAGAIN retries)", rt);
				if (fb)
					printf("  (%llu fallbacks)", fb);
				if (bw)
					printf("  (%llu waits at the in-flight bound)", bw);
				printf("\n");
			}
		}
	}
	unsigned nw;
	unsigned long long wt = iowq_ticks(&nw);
	loadavg(la, sizeof(la));
	printf("# total %.1f s; receiver saw %lu TCP connections, %lu UDP datagrams; io-wq threads %u "
	       "using %llu ticks\n",
	       mono() - t0, (unsigned long)atomic_load(&rx_tcp_conns),
	       (unsigned long)atomic_load(&rx_udp_dgrams), nw, wt);
	printf("# load average at end: %s\n", la);
	for (int m = 0; m < NMETHODS; m++) {
		if (!ZP[m].pool)
			continue;
		struct zc_stats s;
		zc_stats(ZP[m].pool, &s);
		printf("# pool %-10s (%s): sends %llu, bytes zero-copy %llu, copied %llu, completions %llu "
		       "(copied %llu), fallbacks %llu, in flight %llu\n",
		       MD[m].name, ZP[m].backend, (unsigned long long)s.sends,
		       (unsigned long long)s.bytes_zerocopy, (unsigned long long)s.bytes_copied,
		       (unsigned long long)s.completions, (unsigned long long)s.completions_copied,
		       (unsigned long long)s.fallbacks, (unsigned long long)s.in_flight);
	}
	fflush(stdout);
	if (C.data_prefix) {
		for (int cpu0 = 0; cpu0 < 2; cpu0++) {
			if (C.tcp)
				write_dat(0, cpu0, use);
			if (C.udp)
				write_dat(1, cpu0, use);
		}
		write_runs(use);
	}

	for (int m = 0; m < NMETHODS; m++)
		if (ZP[m].pool)
			zc_pool_destroy(ZP[m].pool);
	rp_uring_exit(&u[0]);
	rp_uring_exit(&u[1]);
	rp_uring_exit(&u[2]);
	zc_netns_leave(saved);
	atomic_store(&stop, 1);
	zc_netns_join(&trx);
	zc_netns_join(&urx);
	close(tcp_lfd);
	close(udp_fd);
	munmap(buf, BUFSZ);
	return 0;
}
