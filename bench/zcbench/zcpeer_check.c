/* zcpeer_check: does MSG_ZEROCOPY really avoid the copy?
 *
 * Sends N messages of SIZE bytes (default 2000 x 64 KiB) over TCP with
 * SO_ZEROCOPY + MSG_ZEROCOPY, reaps every completion from MSG_ERRQUEUE and
 * prints the share of completed sends the kernel reported as copied
 * (SO_EE_CODE_ZEROCOPY_COPIED), for two paths:
 *   veth+XDP : sender in namespace zc-tx (CPU 0) -> receiver in zc-rx (CPU 1),
 *              198.18.0.1 -> 198.18.0.2, the topology of bench/topology/topology.sh
 *              (if it is not up, a private pair is made with tests/netns/netns.c)
 *   loopback : 127.0.0.1 in this process's namespace
 * Expected: veth+XDP ~0% copied, loopback 100% copied.
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Werror -o zcpeer_check zcpeer_check.c \
 *            ../../tests/netns/netns.c -lpthread
 * Usage: zcpeer_check [-n N] [-s SIZE]     (root; exit 0 if both expectations hold)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "../../tests/netns/netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif

#define PORT 5299
#define TIMEOUT_MS 20000 /* per path, whole run */

struct path {
	const char *name;
	const char *ns_tx, *ns_rx; /* NULL: current namespace */
	const char *addr;
	int listen_fd;
	/* results */
	unsigned long sent, completed, copied, notif_msgs;
	long err;
	double seconds;
};

static size_t g_size = 65536;
static unsigned g_n = 2000;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pin(int cpu)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	sched_setaffinity(0, sizeof(s), &s); /* best effort: 1-CPU machines */
}

static int listener(void *arg)
{
	struct path *p = arg;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	inet_pton(AF_INET, p->addr, &sa.sin_addr);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4)) {
		perror("listen");
		return -1;
	}
	p->listen_fd = fd;
	return 0;
}

static int receiver(void *arg)
{
	struct path *p = arg;
	pin(1);
	int c = accept(p->listen_fd, NULL, NULL);
	if (c < 0)
		return -1;
	struct timeval tv = {TIMEOUT_MS / 1000, 0};
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	static char buf[1 << 20];
	double end = now() + TIMEOUT_MS / 1000.0;
	while (now() < end) {
		ssize_t n = recv(c, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
	}
	close(c);
	return 0;
}

/* Read everything on the error queue; returns completions counted, -1 on error. */
static long reap(int fd, struct path *p)
{
	long got = 0;
	for (int i = 0; i < 100000; i++) {
		char control[128];
		struct msghdr msg = {.msg_control = control, .msg_controllen = sizeof(control)};
		if (recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT) < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return got;
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
			unsigned long cnt = (unsigned long)(ee.ee_data - ee.ee_info) + 1;
			p->completed += cnt;
			p->notif_msgs++;
			if (ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
				p->copied += cnt;
			got += (long)cnt;
		}
	}
	return got;
}

static int sender(void *arg)
{
	struct path *p = arg;
	pin(0);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one))) {
		p->err = errno;
		return -1;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	inet_pton(AF_INET, p->addr, &sa.sin_addr);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		p->err = errno;
		close(fd);
		return -1;
	}
	char *buf = aligned_alloc(4096, (g_size + 4095) & ~(size_t)4095);
	memset(buf, 'z', g_size);
	double t0 = now(), end = t0 + TIMEOUT_MS / 1000.0;
	for (unsigned i = 0; i < g_n && now() < end; i++) {
		size_t off = 0;
		while (off < g_size && now() < end) {
			struct pollfd pf = {.fd = fd, .events = POLLOUT};
			if (poll(&pf, 1, 1000) < 0)
				break;
			if (pf.revents & POLLERR)
				reap(fd, p);
			if (!(pf.revents & POLLOUT))
				continue;
			ssize_t n = send(fd, buf + off, g_size - off, MSG_ZEROCOPY | MSG_DONTWAIT);
			if (n < 0) {
				if (errno == EAGAIN || errno == ENOBUFS) {
					reap(fd, p);
					continue;
				}
				p->err = errno;
				goto out;
			}
			off += (size_t)n;
			p->sent++; /* one zerocopy id per successful send call */
		}
		reap(fd, p);
	}
	/* wait for the remaining completions, bounded */
	while (p->completed < p->sent && now() < end) {
		struct pollfd pf = {.fd = fd, .events = 0};
		poll(&pf, 1, 100);
		reap(fd, p);
	}
out:
	p->seconds = now() - t0;
	shutdown(fd, SHUT_WR);
	close(fd);
	free(buf);
	return 0;
}

static int run_path(struct path *p)
{
	int rc = p->ns_rx ? zc_netns_run(p->ns_rx, listener, p) : listener(p);
	if (rc)
		return -1;
	struct zc_netns_thread rx, tx;
	static const char *self = "/proc/self/ns/net";
	zc_netns_start(&rx, p->ns_rx ? p->ns_rx : self, receiver, p);
	zc_netns_start(&tx, p->ns_tx ? p->ns_tx : self, sender, p);
	zc_netns_join(&tx);
	zc_netns_join(&rx);
	close(p->listen_fd);
	return 0;
}

int main(int argc, char **argv)
{
	int opt;
	while ((opt = getopt(argc, argv, "n:s:")) != -1) {
		if (opt == 'n')
			g_n = (unsigned)strtoul(optarg, NULL, 0);
		else if (opt == 's')
			g_size = strtoul(optarg, NULL, 0);
		else {
			fprintf(stderr, "usage: %s [-n N] [-s SIZE]\n", argv[0]);
			return 2;
		}
	}
	if (!g_n || !g_size || g_size > (64u << 20)) {
		fprintf(stderr, "bad -n/-s\n");
		return 2;
	}
	struct zc_netns_pair pair;
	int own = 0;
	struct stat st;
	struct path veth = {.name = "veth+XDP", .ns_tx = "zc-tx", .ns_rx = "zc-rx", .addr = "198.18.0.2"};
	if (stat("/run/netns/zc-tx", &st) || stat("/run/netns/zc-rx", &st)) {
		char reason[512];
		int rc = zc_netns_pair_create(&pair, ZC_NETNS_DEFAULT, 1, reason, sizeof(reason));
		if (rc) {
			printf("cannot make the veth+XDP pair (%s): %s\n",
			       rc == ZC_NETNS_SKIP ? "skip" : "error", reason);
			if (rc == ZC_NETNS_ERROR)
				zc_netns_pair_destroy(&pair);
			return rc == ZC_NETNS_SKIP ? 77 : 1;
		}
		own = 1;
		veth.ns_tx = pair.ns_tx;
		veth.ns_rx = pair.ns_rx;
		veth.addr = pair.addr_rx;
		printf("topology.sh namespaces not found; made %s -> %s\n", pair.ns_tx, pair.ns_rx);
	} else {
		printf("using bench/topology namespaces zc-tx -> zc-rx\n");
	}
	struct path lo = {.name = "loopback", .addr = "127.0.0.1"};
	struct path *paths[] = {&veth, &lo};
	printf("TCP, MSG_ZEROCOPY, %u sends of %zu B per path\n", g_n, g_size);
	printf("%-9s %8s %10s %8s %8s %9s %7s\n", "path", "sends", "completed", "copied", "copied%",
	       "notifmsgs", "sec");
	int ok = 1;
	for (int i = 0; i < 2; i++) {
		struct path *p = paths[i];
		if (run_path(p) || p->err) {
			printf("%-9s error: %s\n", p->name, strerror((int)p->err));
			ok = 0;
			continue;
		}
		double pct = p->completed ? 100.0 * (double)p->copied / (double)p->completed : -1;
		printf("%-9s %8lu %10lu %8lu %7.1f%% %9lu %7.2f\n", p->name, p->sent, p->completed,
		       p->copied, pct, p->notif_msgs, p->seconds);
		if (p->completed != p->sent)
			ok = 0;
	}
	int veth_ok = veth.completed && veth.copied == 0;
	int lo_ok = lo.completed && lo.copied == lo.completed;
	printf("veth+XDP not copied: %s; loopback copied: %s\n", veth_ok ? "yes" : "NO",
	       lo_ok ? "yes" : "NO");
	if (own)
		zc_netns_pair_destroy(&pair);
	return ok && veth_ok && lo_ok ? 0 : 1;
}
