/* rawbench: the raw reference senders (raw_peers.c) interleaved over the
 * veth + XDP topology of bench/topology/topology.sh.
 *
 * Sender: this process's main thread, inside namespace zc-tx, pinned to CPU 0.
 * Receiver: one TCP and one UDP thread inside zc-rx, pinned to CPU 1, reading
 * and discarding (the NAPI kthread of zcrx0 is pinned to CPU 1 by topology.sh).
 * For every run (>= 5), protocol, size and method (method order rotated per run)
 * one measurement: new connection, W warm-up messages (not counted), N timed
 * messages, wait for every completion, close; per-message sender CPU from
 * CLOCK_THREAD_CPUTIME_ID.  Prints median, min and max over the runs.
 *
 * Build (from bench/zcbench):
 *   gcc -std=c11 -O2 -Wall -Wextra -Werror -o rawbench rawbench.c raw_peers.c \
 *       ../../tests/netns/netns.c -luring -lpthread
 * Run: ../topology/topology.sh up && ./rawbench [options]; see -h.
 */
#define _GNU_SOURCE
#include "../../tests/netns/netns.h"
#include "raw_peers.h"

#include <arpa/inet.h>
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
#define TCP_PORT 5301
#define UDP_PORT 5302
#define UDP_MAX 65507 /* 65535 - 20 (IPv4) - 8 (UDP) */
#define BUFSZ (2u << 20)

struct cfg {
	const char *ns_tx, *ns_rx, *addr;
	int loopback;
	unsigned runs, warmup, nfix, nmin, nmax;
	size_t budget;
	size_t sizes[MAXSIZES];
	unsigned nsizes;
	int methods[RP_NMETHODS];
	unsigned nmethods;
	int tcp, udp, nodelay;
	unsigned timeout_ms;
	unsigned setup_flags;
	int cpu_tx, cpu_rx;
};

static struct cfg C = {
	.ns_tx = "zc-tx", .ns_rx = "zc-rx", .addr = "198.18.0.2",
	.runs = 7, .warmup = 16, .nmin = 200, .nmax = 20000, .budget = 128u << 20,
	.tcp = 1, .udp = 1, .nodelay = 1, .timeout_ms = 10000,
	.setup_flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
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

static int pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	return sched_setaffinity(0, sizeof(s), &s);
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
		perror("rawbench: tcp listen");
		return -1;
	}
	udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rcv = 8 << 20;
	setsockopt(udp_fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv));
	sa.sin_port = htons(UDP_PORT);
	if (bind(udp_fd, (struct sockaddr *)&sa, sizeof(sa))) {
		perror("rawbench: udp bind");
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
	struct timeval tv = {0, 100000};
	setsockopt(udp_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	while (!atomic_load(&stop)) {
		if (recv(udp_fd, buf, 1 << 20, 0) > 0)
			atomic_fetch_add(&rx_udp_dgrams, 1);
	}
	return 0;
}

/* ------------------------------------------------------------------ sender */

struct meas {
	int ok;
	int err;
	unsigned n;
	double cpu_us;   /* per message */
	double wall_s;
	double copied;   /* share of reported bytes reported copied, -1 if no report */
	double sirq0_us; /* CPU 0 softirq per message (tick resolution) */
	double cpu1_us;  /* CPU 1 busy per message (tick resolution) */
	double csw;      /* sender context switches (voluntary + not) per message */
	unsigned long long retries;
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
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
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

static struct meas measure(struct rp_uring *u, char *buf, int tcp, enum rp_method m, size_t size)
{
	struct meas r = {0};
	r.n = n_for(size);
	int fd = connect_sock(tcp);
	if (fd < 0) {
		r.err = errno;
		return r;
	}
	struct rp_sock s;
	rp_sock_init(&s, fd);
	struct rp_opts o = {.timeout_ms = C.timeout_ms};
	struct rp_stats st;
	if (C.warmup && rp_send(m, u, &s, buf, size, C.warmup, &o, &st)) {
		r.err = st.err;
		close(fd);
		return r;
	}
	unsigned long long s0a, b1a, s0b, b1b, dummy;
	cpu_ticks(C.cpu_tx, &s0a, &dummy);
	cpu_ticks(C.cpu_rx, &dummy, &b1a);
	struct rusage ra, rb;
	getrusage(RUSAGE_THREAD, &ra);
	int rc = rp_send(m, u, &s, buf, size, r.n, &o, &st);
	getrusage(RUSAGE_THREAD, &rb);
	cpu_ticks(C.cpu_tx, &s0b, &dummy);
	cpu_ticks(C.cpu_rx, &dummy, &b1b);
	if (rc) {
		r.err = st.err;
	} else {
		r.ok = 1;
		r.cpu_us = (double)st.cpu_ns / 1e3 / st.msgs;
		r.wall_s = (double)st.wall_ns / 1e9;
		r.copied = st.report && st.bytes_reported
				   ? (double)st.bytes_copied / (double)st.bytes_reported
				   : -1;
		double tick_us = 1e6 / (double)sysconf(_SC_CLK_TCK);
		r.sirq0_us = (double)(s0b - s0a) * tick_us / st.msgs;
		r.cpu1_us = (double)(b1b - b1a) * tick_us / st.msgs;
		r.retries = st.retries;
		r.csw = (double)(rb.ru_nvcsw - ra.ru_nvcsw + rb.ru_nivcsw - ra.ru_nivcsw) / st.msgs;
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

static void usage(const char *a0)
{
	fprintf(stderr,
		"usage: %s [options]\n"
		"  -r RUNS     runs per point, median reported (default 7, >= 5 advised, max %d)\n"
		"  -s LIST     sizes, e.g. 256,1k,64k,1m (default 256,1k,4k,16k,64k,256k,1m;\n"
		"              UDP uses those <= %d and adds %d)\n"
		"  -p LIST     tcp,udp (default both)\n"
		"  -m LIST     methods: send,msg_zerocopy,uring_zc_fixed,uring_zc,uring_send|all\n"
		"              (default send,msg_zerocopy,uring_zc_fixed)\n"
		"  -n N        messages per measurement (default: 128 MiB / size, in [200, 20000])\n"
		"  -w W        warm-up messages per measurement (default 16)\n"
		"  -F FLAGS    io_uring setup flags (default 0x%x = SINGLE_ISSUER|DEFER_TASKRUN)\n"
		"  -D          leave Nagle on (default TCP_NODELAY)\n"
		"  -L          loopback (127.0.0.1, this namespace) instead of the veth topology\n"
		"  -T MS       timeout per measurement (default 10000)\n",
		a0, MAXRUNS, UDP_MAX, UDP_MAX, IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN);
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

int main(int argc, char **argv)
{
	int opt;
	int methods_set = 0;
	while ((opt = getopt(argc, argv, "r:s:p:m:n:w:F:DLT:h")) != -1) {
		char *tok, *save, *arg = optarg;
		switch (opt) {
		case 'r': C.runs = (unsigned)atoi(optarg); break;
		case 's':
			C.nsizes = 0;
			for (tok = strtok_r(arg, ",", &save); tok && C.nsizes < MAXSIZES;
			     tok = strtok_r(NULL, ",", &save))
				C.sizes[C.nsizes++] = parse_size(tok);
			break;
		case 'p':
			C.tcp = strstr(optarg, "tcp") != NULL;
			C.udp = strstr(optarg, "udp") != NULL;
			break;
		case 'm':
			methods_set = 1;
			C.nmethods = 0;
			if (!strcmp(optarg, "all")) {
				for (int i = 0; i < RP_NMETHODS; i++)
					C.methods[C.nmethods++] = i;
				break;
			}
			for (tok = strtok_r(arg, ",", &save); tok && C.nmethods < RP_NMETHODS;
			     tok = strtok_r(NULL, ",", &save)) {
				int m = rp_method_parse(tok);
				if (m < 0) {
					fprintf(stderr, "unknown method %s\n", tok);
					return 2;
				}
				C.methods[C.nmethods++] = m;
			}
			break;
		case 'n': C.nfix = (unsigned)atoi(optarg); break;
		case 'w': C.warmup = (unsigned)atoi(optarg); break;
		case 'F': C.setup_flags = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'D': C.nodelay = 0; break;
		case 'L': C.loopback = 1; break;
		case 'T': C.timeout_ms = (unsigned)atoi(optarg); break;
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
	for (unsigned i = 0; i < C.nsizes; i++)
		if (!C.sizes[i] || C.sizes[i] > (1u << 20)) {
			fprintf(stderr, "sizes must be 1 B .. 1 MiB\n");
			return 2;
		}
	if (!methods_set) {
		C.methods[0] = RP_PLAIN;
		C.methods[1] = RP_MSGZC;
		C.methods[2] = RP_URING_ZC_FIXED;
		C.nmethods = 3;
	}
	const char *self = "/proc/self/ns/net";
	if (C.loopback) {
		C.ns_tx = C.ns_rx = self;
		C.addr = "127.0.0.1";
	} else {
		struct stat st;
		if (stat("/run/netns/zc-tx", &st) || stat("/run/netns/zc-rx", &st)) {
			fprintf(stderr, "rawbench: namespaces zc-tx/zc-rx missing: run "
					"bench/topology/topology.sh up first (or -L for loopback)\n");
			return 1;
		}
	}

	/* UDP sizes: those <= UDP_MAX, plus UDP_MAX itself if any size was above */
	size_t usizes[MAXSIZES + 1];
	unsigned nus = 0;
	int above = 0;
	for (unsigned i = 0; i < C.nsizes; i++) {
		if (C.sizes[i] <= UDP_MAX)
			usizes[nus++] = C.sizes[i];
		else
			above = 1;
	}
	if (above)
		usizes[nus++] = UDP_MAX;

	/* receivers */
	if (zc_netns_run(C.ns_rx, rx_setup, NULL)) {
		fprintf(stderr, "rawbench: receiver setup failed in %s\n", C.ns_rx);
		return 1;
	}
	struct zc_netns_thread trx, urx;
	if (zc_netns_start(&trx, C.ns_rx, rx_tcp, NULL) || zc_netns_start(&urx, C.ns_rx, rx_udp, NULL)) {
		perror("rawbench: receiver threads");
		return 1;
	}

	/* sender: this thread */
	int saved;
	if (zc_netns_enter(C.ns_tx, &saved)) {
		perror("rawbench: setns tx");
		return 1;
	}
	if (pin(C.cpu_tx))
		perror("rawbench: pin sender (continuing)");
	char *buf = mmap(NULL, BUFSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	for (size_t i = 0; i < BUFSZ; i++)
		buf[i] = (char)(i * 131 + 7);
	struct rp_uring u;
	int uring_ok = rp_uring_init(&u, buf, BUFSZ, 64, C.setup_flags) == 0;
	printf("# rawbench: %s, sender CPU %d in %s, receivers CPU %d in %s, %u runs, warm-up %u, "
	       "TCP_NODELAY %s\n",
	       C.loopback ? "loopback 127.0.0.1" : "veth+XDP 198.18.0.1 -> 198.18.0.2", C.cpu_tx,
	       C.loopback ? "root ns" : C.ns_tx, C.cpu_rx, C.loopback ? "root ns" : C.ns_rx, C.runs,
	       C.warmup, C.nodelay ? "on" : "off");
	printf("# io_uring: ring %s (setup flags 0x%x), SEND_ZC %s, fixed buffer %s, REPORT_USAGE %s%s%s\n",
	       uring_ok ? "ok" : "FAILED", u.setup_flags, u.has_send_zc ? "yes" : "no",
	       u.registered ? "registered" : "NOT registered", u.report_usage ? "yes" : "no",
	       u.why[0] ? "; " : "", u.why);
	int use[RP_NMETHODS] = {0};
	for (unsigned i = 0; i < C.nmethods; i++) {
		const char *why;
		if (rp_available(C.methods[i], &u, &why))
			use[C.methods[i]] = 1;
		else
			printf("# method %s unavailable: %s\n", rp_method_name(C.methods[i]), why);
	}
	fflush(stdout);

	/* results[proto][size][method][run] */
	static struct meas R[2][MAXSIZES + 1][RP_NMETHODS][MAXRUNS];
	double t0 = mono();
	for (unsigned run = 0; run < C.runs; run++) {
		for (int p = 0; p < 2; p++) {
			if ((p == 0 && !C.tcp) || (p == 1 && !C.udp))
				continue;
			unsigned ns = p == 0 ? C.nsizes : nus;
			for (unsigned si = 0; si < ns; si++) {
				size_t size = p == 0 ? C.sizes[si] : usizes[si];
				for (unsigned k = 0; k < C.nmethods; k++) {
					int m = C.methods[(k + run) % C.nmethods]; /* rotate order */
					if (!use[m])
						continue;
					R[p][si][m][run] = measure(&u, buf, p == 0, m, size);
					if (!R[p][si][m][run].ok)
						fprintf(stderr, "# run %u %s %zu %s: %s\n", run,
							p ? "udp" : "tcp", size, rp_method_name(m),
							strerror(R[p][si][m][run].err));
				}
			}
		}
		fprintf(stderr, "# run %u/%u done, %.1f s\n", run + 1, C.runs, mono() - t0);
	}

	printf("# per message: sender thread CPU (CLOCK_THREAD_CPUTIME_ID) median [min..max] over runs;\n"
	       "# ratio = median / median of send(); copied = share of bytes the kernel reported copied\n"
	       "# (median; '-' = method has no report); sirq0 = CPU0 softirq, cpu1 = CPU1 busy, both\n"
	       "# from /proc/stat ticks (10 ms resolution), us per message, median; csw = sender\n"
	       "# context switches per message, median\n");
	printf("%-5s %8s %6s %-15s %9s %21s %6s %9s %8s %7s %7s %7s %6s\n", "proto", "size", "N",
	       "method", "cpu_us", "[min..max]", "ratio", "ns/KiB", "MB/s", "copied", "sirq0", "cpu1",
	       "csw");
	for (int p = 0; p < 2; p++) {
		if ((p == 0 && !C.tcp) || (p == 1 && !C.udp))
			continue;
		unsigned ns = p == 0 ? C.nsizes : nus;
		for (unsigned si = 0; si < ns; si++) {
			size_t size = p == 0 ? C.sizes[si] : usizes[si];
			double base = NAN;
			for (unsigned k = 0; k < C.nmethods; k++) {
				int m = C.methods[k];
				if (!use[m])
					continue;
				double cpu[MAXRUNS], mbs[MAXRUNS], cp[MAXRUNS], s0[MAXRUNS], c1[MAXRUNS],
					cs[MAXRUNS];
				for (unsigned r = 0; r < C.runs; r++) {
					struct meas *x = &R[p][si][m][r];
					cpu[r] = x->ok ? x->cpu_us : NAN;
					mbs[r] = x->ok ? (double)x->n * (double)size / x->wall_s / 1e6 : NAN;
					cp[r] = x->ok && x->copied >= 0 ? x->copied : NAN;
					s0[r] = x->ok ? x->sirq0_us : NAN;
					c1[r] = x->ok ? x->cpu1_us : NAN;
					cs[r] = x->ok ? x->csw : NAN;
				}
				struct agg a = aggregate(cpu, C.runs), b = aggregate(mbs, C.runs),
					   c = aggregate(cp, C.runs), d = aggregate(s0, C.runs),
					   e = aggregate(c1, C.runs), f = aggregate(cs, C.runs);
				if (m == RP_PLAIN)
					base = a.med;
				char range[32], copied[16];
				snprintf(range, sizeof(range), "[%.2f..%.2f]", a.min, a.max);
				if (c.ok)
					snprintf(copied, sizeof(copied), "%.0f%%", c.med * 100);
				else
					snprintf(copied, sizeof(copied), "-");
				printf("%-5s %8zu %6u %-15s %9.2f %21s %6.2f %9.0f %8.0f %7s %7.2f %7.2f %6.2f",
				       p ? "udp" : "tcp", size, n_for(size), rp_method_name(m), a.med, range,
				       a.med / base, a.med * 1e3 / ((double)size / 1024), b.med, copied,
				       d.med, e.med, f.med);
				if (a.ok < C.runs)
					printf("  (%u/%u runs ok)", a.ok, C.runs);
				unsigned long long rt = 0;
				for (unsigned r = 0; r < C.runs; r++)
					rt += R[p][si][m][r].retries;
				if (rt)
					printf("  (%llu ENOBUFS/EAGAIN retries)", rt);
				printf("\n");
			}
		}
	}
	printf("# total %.1f s; receiver saw %lu TCP connections, %lu UDP datagrams\n", mono() - t0,
	       (unsigned long)atomic_load(&rx_tcp_conns), (unsigned long)atomic_load(&rx_udp_dgrams));

	rp_uring_exit(&u);
	zc_netns_leave(saved);
	atomic_store(&stop, 1);
	zc_netns_join(&trx);
	zc_netns_join(&urx);
	close(tcp_lfd);
	close(udp_fd);
	munmap(buf, BUFSZ);
	return 0;
}
