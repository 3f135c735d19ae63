/*
 * kmod_veth_xdp.c - real zero-copy completions of /dev/zcopy (inside the VM).
 *
 * The kernel copies zero-copy data on delivery to a local socket, so over
 * loopback every completion reports "copied".  Here the receiver sits in its
 * own network namespace behind a veth pair whose receiving end runs an
 * XDP_PASS program: veth then copies each packet into its own pages and
 * releases the sender's pages without a copy, as a NIC's DMA would, and the
 * module's completions report zero-copy.  Addresses are IPv6 link-local
 * (fe80::1 and fe80::2 on the pair); nothing leaves the guest.
 *
 * Needs root, veth (module or built in) and BPF.  Checks: every byte arrives
 * intact over TCP and UDP, and at least 95% of the TCP sends and of their
 * bytes complete as zero-copy.  Then copy-on-write with real zero-copy: the
 * XDP program drops everything while a flag in a BPF map is set, so a TCP
 * send stays in the retransmit queue (its pages in flight); the sealed pages
 * are overwritten (the write must not wait), the flag is cleared, and the
 * peer must get the old bytes; a resend after resealing carries the new ones.
 * Last line: "kmod_veth_xdp: N passed, M failed".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "uapi/zcopy_kmod.h"

#define PG 4096u
#define ARENA (1024u * 1024u)
#define TCP_SEND (256u * 1024u)
#define TCP_ROUNDS 24			/* 6 MiB */
#define UDP_LEN 1200u
#define UDP_COUNT 200
#define COW_PAGE 200			/* first page of the copy-on-write region */
#define COW_LEN (16u * PG)
#define TCP_PORT 7000
#define UDP_PORT 7001

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint8_t pat(size_t off)
{
	return (uint8_t)(off * 151u + (off >> 12) * 13u + 5u);
}

/* the arena's content: the pattern, and in each page the byte that ends the
 * UDP datagram sent from it holds the page number */
static uint8_t arena_byte(size_t off)
{
	return off % PG == 100 + UDP_LEN - 1 ? (uint8_t)(off / PG) : pat(off);
}

static uint8_t new_byte(size_t off)
{
	return (uint8_t)(0xc3 ^ (off * 7u));
}

/* ------------------------------------------------------------ netlink */

struct nlbuf {
	struct nlmsghdr nh;
	char data[4096];
};

static void *nl_tail(struct nlmsghdr *n)
{
	return (char *)n + NLMSG_ALIGN(n->nlmsg_len);
}

static void nl_put(struct nlmsghdr *n, int type, const void *d, int len)
{
	struct rtattr *a = nl_tail(n);

	a->rta_type = (unsigned short)type;
	a->rta_len = (unsigned short)RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), d, (size_t)len);
	n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static struct rtattr *nl_nest(struct nlmsghdr *n, int type)
{
	struct rtattr *a = nl_tail(n);

	nl_put(n, type, NULL, 0);
	return a;
}

static void nl_end(struct nlmsghdr *n, struct rtattr *a)
{
	a->rta_len = (unsigned short)((char *)nl_tail(n) - (char *)a);
}

static int nl_talk(struct nlmsghdr *n)
{
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	char buf[8192];
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE), r = -EIO;
	ssize_t len;

	if (fd < 0)
		return -errno;
	n->nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	n->nlmsg_seq = 1;
	if (sendto(fd, n, n->nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		goto out;
	}
	len = recv(fd, buf, sizeof(buf), 0);
	if (len > 0) {
		struct nlmsghdr *h = (struct nlmsghdr *)buf;

		if (h->nlmsg_type == NLMSG_ERROR)
			r = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
	}
out:
	close(fd);
	return r;
}

static int link_up(const char *name)
{
	struct ifreq ifr;
	int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0), r;

	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	r = ioctl(fd, SIOCGIFFLAGS, &ifr);
	if (!r) {
		ifr.ifr_flags |= IFF_UP;
		r = ioctl(fd, SIOCSIFFLAGS, &ifr);
	}
	if (r)
		r = -errno;
	close(fd);
	return r;
}

static int veth_create(const char *a, const char *b, pid_t peer_ns_pid)
{
	struct nlbuf m;
	struct ifinfomsg *ifi, peer;
	struct rtattr *li, *data, *pe;
	uint32_t pid = (uint32_t)peer_ns_pid;

	memset(&m, 0, sizeof(m));
	m.nh.nlmsg_len = NLMSG_LENGTH(sizeof(*ifi));
	m.nh.nlmsg_type = RTM_NEWLINK;
	m.nh.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	ifi = NLMSG_DATA(&m.nh);
	ifi->ifi_family = AF_UNSPEC;
	nl_put(&m.nh, IFLA_IFNAME, a, (int)strlen(a) + 1);
	li = nl_nest(&m.nh, IFLA_LINKINFO);
	nl_put(&m.nh, IFLA_INFO_KIND, "veth", 5);
	data = nl_nest(&m.nh, IFLA_INFO_DATA);
	pe = nl_nest(&m.nh, VETH_INFO_PEER);
	memset(&peer, 0, sizeof(peer));
	memcpy(nl_tail(&m.nh), &peer, sizeof(peer));
	m.nh.nlmsg_len += NLMSG_ALIGN(sizeof(peer));
	nl_put(&m.nh, IFLA_IFNAME, b, (int)strlen(b) + 1);
	nl_put(&m.nh, IFLA_NET_NS_PID, &pid, 4);
	nl_end(&m.nh, pe);
	nl_end(&m.nh, data);
	nl_end(&m.nh, li);
	return nl_talk(&m.nh);
}

static int addr_add6(const char *dev, const struct in6_addr *a)
{
	struct nlbuf m;
	struct ifaddrmsg *ifa;
	uint32_t fl = IFA_F_NODAD;

	memset(&m, 0, sizeof(m));
	m.nh.nlmsg_len = NLMSG_LENGTH(sizeof(*ifa));
	m.nh.nlmsg_type = RTM_NEWADDR;
	m.nh.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	ifa = NLMSG_DATA(&m.nh);
	ifa->ifa_family = AF_INET6;
	ifa->ifa_prefixlen = 64;
	ifa->ifa_flags = IFA_F_NODAD;
	ifa->ifa_scope = RT_SCOPE_LINK;
	ifa->ifa_index = if_nametoindex(dev);
	if (!ifa->ifa_index)
		return -ENODEV;
	nl_put(&m.nh, IFA_LOCAL, a, 16);
	nl_put(&m.nh, IFA_ADDRESS, a, 16);
	nl_put(&m.nh, IFA_FLAGS, &fl, 4);
	return nl_talk(&m.nh);
}

static int xdp_attach(const char *dev, int prog)
{
	struct nlbuf m;
	struct ifinfomsg *ifi;
	struct rtattr *x;
	uint32_t fl = 0;

	memset(&m, 0, sizeof(m));
	m.nh.nlmsg_len = NLMSG_LENGTH(sizeof(*ifi));
	m.nh.nlmsg_type = RTM_SETLINK;
	ifi = NLMSG_DATA(&m.nh);
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = (int)if_nametoindex(dev);
	if (!ifi->ifi_index)
		return -ENODEV;
	x = nl_nest(&m.nh, IFLA_XDP);
	nl_put(&m.nh, IFLA_XDP_FD, &prog, 4);
	nl_put(&m.nh, IFLA_XDP_FLAGS, &fl, 4);
	nl_end(&m.nh, x);
	return nl_talk(&m.nh);
}

static long bpf(int cmd, union bpf_attr *a)
{
	return syscall(__NR_bpf, cmd, a, sizeof(*a));
}

/* array map, one u32: 1 = drop everything, 0 = pass */
static int drop_map(void)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_type = BPF_MAP_TYPE_ARRAY;
	a.key_size = 4;
	a.value_size = 4;
	a.max_entries = 1;
	return (int)bpf(BPF_MAP_CREATE, &a);
}

static int set_drop(int map, uint32_t v)
{
	union bpf_attr a;
	uint32_t k = 0;

	memset(&a, 0, sizeof(a));
	a.map_fd = (uint32_t)map;
	a.key = (uintptr_t)&k;
	a.value = (uintptr_t)&v;
	return (int)bpf(BPF_MAP_UPDATE_ELEM, &a);
}

#define INSN(c, d, s_, o, i) ((struct bpf_insn){ .code = (c), .dst_reg = (d), .src_reg = (s_), .off = (o), .imm = (i) })

/* XDP: return map[0] ? XDP_DROP : XDP_PASS */
static int xdp_pass_prog(int map)
{
	struct bpf_insn insns[] = {
		INSN(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -4, 0),		/* *(u32 *)(fp - 4) = 0 */
		INSN(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, map),	/* r1 = map */
		INSN(0, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0),	/* r2 = fp */
		INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -4),		/* r2 -= 4 */
		INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem),
		INSN(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 4, 0),		/* !r0: pass */
		INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_1, BPF_REG_0, 0, 0),	/* r1 = *r0 */
		INSN(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_1, 0, 2, 0),		/* !r1: pass */
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, XDP_DROP),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
		INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, XDP_PASS),
		INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0),
	};
	union bpf_attr attr;
	char log[4096] = "";
	int fd;

	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_XDP;
	attr.insns = (uintptr_t)insns;
	attr.insn_cnt = sizeof(insns) / sizeof(insns[0]);
	attr.license = (uintptr_t)"GPL";
	attr.log_buf = (uintptr_t)log;
	attr.log_size = sizeof(log);
	attr.log_level = 1;
	fd = (int)syscall(__NR_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
	if (fd < 0)
		fprintf(stderr, "kmod_veth_xdp: BPF_PROG_LOAD: %s %s\n", strerror(errno), log);
	return fd;
}

/* ------------------------------------------------------------ receiver */

static struct sockaddr_in6 ll_addr(int last, const char *dev, int port)
{
	struct sockaddr_in6 s;

	memset(&s, 0, sizeof(s));
	s.sin6_family = AF_INET6;
	s.sin6_port = htons((uint16_t)port);
	s.sin6_addr.s6_addr[0] = 0xfe;
	s.sin6_addr.s6_addr[1] = 0x80;
	s.sin6_addr.s6_addr[15] = (uint8_t)last;
	s.sin6_scope_id = if_nametoindex(dev);
	return s;
}

static int wait_byte(int fd, char want, double limit_s)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c = 0;

	if (poll(&p, 1, (int)(limit_s * 1000)) <= 0 || read(fd, &c, 1) != 1)
		return -1;
	return c == want ? 0 : -1;
}

static size_t recv_verify(int fd, size_t n, uint8_t (*want)(size_t), size_t base, double limit_s,
			  size_t *bad)
{
	static uint8_t b[65536];
	size_t got = 0;
	double t0 = now_s();

	while (got < n && now_s() - t0 < limit_s) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		size_t k = n - got < sizeof(b) ? n - got : sizeof(b);
		ssize_t r;

		if (poll(&p, 1, 200) <= 0)
			continue;
		r = recv(fd, b, k, MSG_DONTWAIT);
		if (r <= 0) {
			if (r < 0 && errno == EAGAIN)
				continue;
			break;
		}
		for (ssize_t i = 0; i < r; i++)
			if (b[i] != want(base + got + (size_t)i))
				(*bad)++;
		got += (size_t)r;
	}
	return got;
}

static int g_prog = -1;

/* the child: own netns, zcv1 with XDP_PASS, receives and verifies */
static int receiver(int rd, int wr)
{
	struct sockaddr_in6 a;
	int one = 1, l, u, s, prog, r;
	size_t want = (size_t)TCP_SEND * TCP_ROUNDS, got = 0, bad = 0;
	static uint8_t buf[65536];
	int dgrams = 0, dbad = 0;
	double t0;

	if (unshare(CLONE_NEWNET)) {
		perror("kmod_veth_xdp: unshare(CLONE_NEWNET)");
		return 2;
	}
	if (write(wr, "u", 1) != 1 || wait_byte(rd, 'v', 20))
		return 2;
	if (link_up("lo") || link_up("zcv1"))
		return 2;
	a = ll_addr(2, "zcv1", 0);
	r = addr_add6("zcv1", &a.sin6_addr);
	if (r) {
		fprintf(stderr, "kmod_veth_xdp: address on zcv1: %s\n", strerror(-r));
		return 2;
	}
	prog = g_prog;
	r = xdp_attach("zcv1", prog);
	if (r) {
		fprintf(stderr, "kmod_veth_xdp: XDP attach: %s\n", strerror(-r));
		return 2;
	}
	l = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	u = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a = ll_addr(2, "zcv1", TCP_PORT);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1))
		return 2;
	a = ll_addr(2, "zcv1", UDP_PORT);
	if (bind(u, (struct sockaddr *)&a, sizeof(a)))
		return 2;
	{
		int big = 4 << 20;

		setsockopt(u, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	}
	if (write(wr, "r", 1) != 1)
		return 2;

	/* TCP: the arena pattern, TCP_SEND bytes at a time */
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		return 2;
	t0 = now_s();
	while (got < want && now_s() - t0 < 60) {
		struct pollfd p = { .fd = s, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 200) <= 0)
			continue;
		n = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
		if (n <= 0) {
			if (n < 0 && errno == EAGAIN)
				continue;
			break;
		}
		for (ssize_t i = 0; i < n; i++) {
			size_t off = (got + (size_t)i) % TCP_SEND + ((got + (size_t)i) / TCP_SEND % (ARENA / TCP_SEND)) * TCP_SEND;

			if (buf[i] != arena_byte(off))
				bad++;
		}
		got += (size_t)n;
	}
	close(s);
	/* UDP: UDP_COUNT datagrams of UDP_LEN bytes from arena offset i * PG;
	 * the sender starts once we read (the socket buffer holds ~90) */
	if (write(wr, "U", 1) != 1)
		return 2;
	t0 = now_s();
	while (dgrams < UDP_COUNT && now_s() - t0 < 20) {
		struct pollfd p = { .fd = u, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 500) <= 0)
			break;
		n = recv(u, buf, sizeof(buf), 0);
		if (n != UDP_LEN) {
			dbad++;
			continue;
		}
		/* datagram k carries arena[(k % 256) * PG + 100 ...], its page in the last byte */
		{
			size_t base = (size_t)buf[UDP_LEN - 1];	/* page index, set by the sender */

			for (size_t i = 0; i + 1 < UDP_LEN; i++)
				if (buf[i] != arena_byte(base * PG + 100 + i)) {
					dbad++;
					break;
				}
		}
		dgrams++;
	}
	printf("kmod_veth_xdp: receiver: tcp %zu of %zu bytes, %zu bad; udp %d of %d datagrams, %d bad\n",
	       got, want, bad, dgrams, UDP_COUNT, dbad);
	if (!(got == want && !bad && dgrams >= UDP_COUNT * 9 / 10 && !dbad))
		return 1;

	/* copy-on-write: old bytes first, then (after resealing) the new ones */
	{
		size_t b1 = 0, b2 = 0, g1, g2;

		s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
		if (s < 0)
			return 2;
		g1 = recv_verify(s, COW_LEN, arena_byte, (size_t)COW_PAGE * PG, 40, &b1);
		g2 = recv_verify(s, COW_LEN, new_byte, (size_t)COW_PAGE * PG, 40, &b2);
		printf("kmod_veth_xdp: receiver: copy-on-write: %zu bytes, %zu not the old ones;"
		       " resend %zu bytes, %zu not the new ones\n", g1, b1, g2, b2);
		close(s);
		if (g1 != COW_LEN || b1 || g2 != COW_LEN || b2)
			return 1;
	}
	return 0;
}

/* ------------------------------------------------------------ sender */

#define LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)

int main(void)
{
	int p2c[2], c2p[2], zfd, s, u, r, status = 0, ok = 1, map;
	struct zcopy_setup su;
	struct zcopy_status *st;
	struct sockaddr_in6 dst, src;
	uint8_t *arena;
	pid_t child;
	uint64_t zc0, cp0, zc1, cp1;
	double t0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (access(ZCOPY_DEVICE_PATH, F_OK)) {
		printf("kmod_veth_xdp: SKIP: %s missing\n", ZCOPY_DEVICE_PATH);
		printf("kmod_veth_xdp: 0 passed, 0 failed, 1 skipped\n");
		return 0;
	}
	if (pipe2(p2c, O_CLOEXEC) || pipe2(c2p, O_CLOEXEC))
		return 1;
	map = drop_map();
	g_prog = map < 0 ? -1 : xdp_pass_prog(map);
	if (g_prog < 0) {
		printf("kmod_veth_xdp: BPF map/program: %s\n", strerror(errno));
		printf("kmod_veth_xdp: 0 passed, 1 failed\n");
		return 1;
	}
	child = fork();
	if (child == 0)
		_exit(receiver(p2c[0], c2p[1]));
	if (wait_byte(c2p[0], 'u', 20)) {
		printf("kmod_veth_xdp: receiver did not start\n");
		goto fail;
	}
	r = veth_create("zcv0", "zcv1", child);
	if (r) {
		printf("kmod_veth_xdp: creating the veth pair: %s (veth module loaded?)\n", strerror(-r));
		goto fail;
	}
	src = ll_addr(1, "zcv0", 0);
	if (link_up("zcv0") || addr_add6("zcv0", &src.sin6_addr)) {
		printf("kmod_veth_xdp: configuring zcv0 failed\n");
		goto fail;
	}
	if (write(p2c[1], "v", 1) != 1 || wait_byte(c2p[0], 'r', 30)) {
		printf("kmod_veth_xdp: receiver setup failed (XDP?)\n");
		goto fail;
	}

	/* the arena: 1 MiB, pattern, sealed */
	zfd = open(ZCOPY_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	memset(&su, 0, sizeof(su));
	su.arena_size = ARENA;
	if (zfd < 0 || ioctl(zfd, ZCOPY_IOC_SETUP, &su))
		goto fail;
	arena = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_SHARED, zfd, 0);
	st = mmap(NULL, su.status_size, PROT_READ, MAP_SHARED, zfd, (off_t)su.status_offset);
	if (arena == MAP_FAILED || st == MAP_FAILED)
		goto fail;
	for (size_t i = 0; i < ARENA; i++)
		arena[i] = arena_byte(i);
	{
		struct zcopy_range rg = { .offset = 0, .length = ARENA };

		if (ioctl(zfd, ZCOPY_IOC_SEAL, &rg))
			goto fail;
	}

	/* TCP */
	s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	dst = ll_addr(2, "zcv0", TCP_PORT);
	t0 = now_s();
	while (connect(s, (struct sockaddr *)&dst, sizeof(dst))) {
		if (now_s() - t0 > 20) {
			printf("kmod_veth_xdp: connect: %s\n", strerror(errno));
			goto fail;
		}
		close(s);
		usleep(100000);
		s = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	}
	zc0 = LD(st->completions_zerocopy);
	cp0 = LD(st->completions_copied);
	t0 = now_s();
	for (int k = 0; k < TCP_ROUNDS; k++) {
		size_t off = (size_t)(k % (ARENA / TCP_SEND)) * TCP_SEND, done = 0;

		while (done < TCP_SEND) {
			struct iovec v = { arena + off + done, TCP_SEND - done };
			struct zcopy_send sd = { .fd = s, .iovcnt = 1, .iov = (uintptr_t)&v };
			long n = ioctl(zfd, ZCOPY_IOC_SEND, &sd);

			if (n <= 0) {
				printf("kmod_veth_xdp: tcp send: %s\n", strerror(errno));
				goto fail;
			}
			done += (size_t)n;
		}
	}
	shutdown(s, SHUT_WR);
	/* all completions within 30 s */
	while ((LD(st->pages_inflight) || LD(st->completions) != LD(st->sends)) && now_s() - t0 < 30)
		usleep(2000);
	zc1 = LD(st->completions_zerocopy) - zc0;
	cp1 = LD(st->completions_copied) - cp0;
	printf("kmod_veth_xdp: tcp: %u MiB in %.2f s, %" PRIu64 " sends, zero-copy completions %" PRIu64
	       ", copied %" PRIu64 " (%.1f%% zero-copy)\n",
	       TCP_SEND * TCP_ROUNDS >> 20, now_s() - t0, (uint64_t)LD(st->sends), zc1, cp1,
	       zc1 + cp1 ? 100.0 * (double)zc1 / (double)(zc1 + cp1) : 0.0);
	if (LD(st->pages_inflight)) {
		printf("kmod_veth_xdp: tcp sends still in flight\n");
		ok = 0;
	}
	if (zc1 + cp1 == 0 || zc1 * 100 < (zc1 + cp1) * 95) {
		printf("kmod_veth_xdp: fewer than 95%% of the TCP sends completed as zero-copy\n");
		ok = 0;
	}

	/* UDP: UDP_COUNT datagrams, each from a different sealed page */
	if (wait_byte(c2p[0], 'U', 60)) {
		printf("kmod_veth_xdp: receiver did not finish the TCP part\n");
		goto fail;
	}
	u = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	dst = ll_addr(2, "zcv0", UDP_PORT);
	zc0 = LD(st->completions_zerocopy);
	cp0 = LD(st->completions_copied);
	for (int k = 0; k < UDP_COUNT; k++) {
		size_t pg = (size_t)k % (ARENA / PG);
		struct iovec v = { arena + pg * PG + 100, UDP_LEN };
		struct zcopy_send sd = { .fd = u, .iovcnt = 1, .iov = (uintptr_t)&v,
					 .addr = (uintptr_t)&dst, .addrlen = sizeof(dst) };
		long n = ioctl(zfd, ZCOPY_IOC_SEND, &sd);

		if (n != UDP_LEN) {
			printf("kmod_veth_xdp: udp send %d: %ld %s\n", k, n, strerror(errno));
			ok = 0;
			break;
		}
		if (k % 8 == 7)
			usleep(2000);	/* let the receiver keep up */
	}
	t0 = now_s();
	while ((LD(st->pages_inflight) || LD(st->completions) != LD(st->sends)) && now_s() - t0 < 20)
		usleep(2000);
	zc1 = LD(st->completions_zerocopy) - zc0;
	cp1 = LD(st->completions_copied) - cp0;
	printf("kmod_veth_xdp: udp: %d datagrams of %u bytes, zero-copy completions %" PRIu64
	       ", copied %" PRIu64 "\n", UDP_COUNT, UDP_LEN, zc1, cp1);
	if (zc1 == 0) {
		printf("kmod_veth_xdp: no UDP send completed as zero-copy\n");
		ok = 0;
	}

	/* copy-on-write of pages held by a real zero-copy send (retransmit queue) */
	{
		int c = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
		uint8_t *reg = arena + (size_t)COW_PAGE * PG;
		struct iovec v = { reg, COW_LEN };
		struct zcopy_send sd = { .fd = c, .iovcnt = 1, .iov = (uintptr_t)&v };
		struct zcopy_range rg = { .offset = (uint64_t)COW_PAGE * PG, .length = COW_LEN };
		uint64_t cow0 = LD(st->cow_faults), z0 = LD(st->completions_zerocopy);
		double tw;
		long n;
		bool inflight_after;

		dst = ll_addr(2, "zcv0", TCP_PORT);
		if (connect(c, (struct sockaddr *)&dst, sizeof(dst))) {
			printf("kmod_veth_xdp: cow connect: %s\n", strerror(errno));
			goto fail;
		}
		if (set_drop(map, 1))
			goto fail;
		n = ioctl(zfd, ZCOPY_IOC_SEND, &sd);
		if (n != (long)COW_LEN) {
			printf("kmod_veth_xdp: cow send: %ld %s\n", n, strerror(errno));
			goto fail;
		}
		usleep(100000);	/* transmitted, dropped by XDP, now in the retransmit queue */
		if (!LD(st->block_inflight[COW_PAGE])) {
			printf("kmod_veth_xdp: cow: the send is not in flight\n");
			ok = 0;
		}
		t0 = now_s();
		for (size_t i = 0; i < COW_LEN; i++)
			reg[i] = new_byte((size_t)COW_PAGE * PG + i);
		tw = now_s() - t0;
		inflight_after = LD(st->block_inflight[COW_PAGE]) && LD(st->completions) < LD(st->sends);
		set_drop(map, 0);
		printf("kmod_veth_xdp: cow: wrote 16 in-flight pages in %.1f us, %" PRIu64
		       " copy-on-write faults, send still in flight after the write: %s\n",
		       tw * 1e6, (uint64_t)(LD(st->cow_faults) - cow0), inflight_after ? "yes" : "no");
		if (LD(st->cow_faults) - cow0 != COW_LEN / PG || !inflight_after || tw > 0.5)
			ok = 0;
		t0 = now_s();
		while ((LD(st->pages_inflight) || LD(st->completions) != LD(st->sends)) && now_s() - t0 < 30)
			usleep(5000);
		printf("kmod_veth_xdp: cow: send completed %.2f s after the drop ended, as %s\n",
		       now_s() - t0, LD(st->completions_zerocopy) > z0 ? "zero-copy" : "copied");
		if (LD(st->pages_inflight))
			ok = 0;
		if (ioctl(zfd, ZCOPY_IOC_SEAL, &rg))
			ok = 0;
		n = ioctl(zfd, ZCOPY_IOC_SEND, &sd);
		if (n != (long)COW_LEN)
			ok = 0;
		t0 = now_s();
		while ((LD(st->pages_inflight) || LD(st->completions) != LD(st->sends)) && now_s() - t0 < 30)
			usleep(5000);
		close(c);
	}

	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
		printf("kmod_veth_xdp: receiver failed (status %#x)\n", status);
		ok = 0;
	}
	close(s);
	close(u);
	munmap(arena, ARENA);
	close(zfd);
	printf("kmod_veth_xdp: %d passed, %d failed\n", ok, !ok);
	return ok ? 0 : 1;
fail:
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	printf("kmod_veth_xdp: 0 passed, 1 failed\n");
	return 1;
}
