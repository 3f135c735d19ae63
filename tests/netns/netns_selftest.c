/* netns_selftest: make a pair with XDP + threaded NAPI, move 4 MiB over TCP
 * from the tx namespace to the rx namespace and check every byte, remove the
 * pair, check the namespaces are gone.  Exit 0 pass, 77 skip (reason printed),
 * 1 fail.
 * Build: cc -std=c11 -O2 -Wall -Wextra -Werror netns_selftest.c netns.c -lpthread
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "netns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#define TOTAL (4u << 20)
#define PORT 5201

static struct zc_netns_pair pair;
static int listen_fd = -1;

static int rx_main(void *arg)
{
	(void)arg;
	int c = accept(listen_fd, NULL, NULL);
	if (c < 0)
		return -1;
	struct timeval tv = {5, 0};
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	static unsigned char buf[65536];
	size_t got = 0;
	int bad = 0;
	while (got < TOTAL) {
		ssize_t n = recv(c, buf, sizeof(buf), 0);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			bad += buf[i] != (unsigned char)((got + (size_t)i) * 7 + 3);
		got += (size_t)n;
	}
	close(c);
	return got == TOTAL && !bad ? 0 : 1;
}

static int mk_listener(void *arg)
{
	(void)arg;
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	inet_pton(AF_INET, pair.addr_rx, &sa.sin_addr);
	int one = 1;
	setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(listen_fd, 4))
		return -1;
	return 0;
}

static int tx_main(void *arg)
{
	(void)arg;
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(PORT)};
	inet_pton(AF_INET, pair.addr_rx, &sa.sin_addr);
	struct timeval tv = {5, 0};
	setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)))
		return -1;
	unsigned char *buf = malloc(TOTAL);
	for (size_t i = 0; i < TOTAL; i++)
		buf[i] = (unsigned char)(i * 7 + 3);
	size_t off = 0;
	while (off < TOTAL) {
		ssize_t n = send(s, buf + off, TOTAL - off, 0);
		if (n <= 0)
			break;
		off += (size_t)n;
	}
	close(s);
	free(buf);
	return off == TOTAL ? 0 : -1;
}

int main(void)
{
	char reason[512];
	int rc = zc_netns_pair_create(&pair, ZC_NETNS_DEFAULT, 1, reason, sizeof(reason));
	if (rc == ZC_NETNS_SKIP) {
		printf("SKIP: %s\n", reason);
		return 77;
	}
	if (rc) {
		printf("FAIL: create: %s\n", reason);
		zc_netns_pair_destroy(&pair);
		return 1;
	}
	printf("pair %s/%s %s/%s, napi kthread %d\n", pair.ns_tx, pair.dev_tx, pair.ns_rx,
	       pair.dev_rx, pair.napi_pid);
	int fail = 0;
	if (zc_netns_run(pair.ns_rx, mk_listener, NULL)) {
		printf("FAIL: listener: %s\n", strerror(errno));
		fail = 1;
	} else {
		struct zc_netns_thread rx;
		zc_netns_start(&rx, pair.ns_rx, rx_main, NULL);
		int t = zc_netns_run(pair.ns_tx, tx_main, NULL);
		int r = zc_netns_join(&rx);
		printf("tx %d rx %d (4 MiB, every byte checked)\n", t, r);
		fail = t || r;
		close(listen_fd);
	}
	zc_netns_pair_destroy(&pair);
	char path[128];
	struct stat st;
	snprintf(path, sizeof(path), "/run/netns/%s", pair.ns_tx);
	int left = stat(path, &st) == 0;
	snprintf(path, sizeof(path), "/run/netns/%s", pair.ns_rx);
	left |= stat(path, &st) == 0;
	if (left) {
		printf("FAIL: namespaces left behind\n");
		fail = 1;
	}
	printf("%s\n", fail ? "FAIL" : "PASS");
	return fail;
}
