/* xdp_pass: load the 2-instruction XDP program "r0 = XDP_PASS; exit" with the
 * raw bpf(2) syscall and attach it in native (driver) mode to one interface of
 * the current network namespace over rtnetlink.  A netlink-attached XDP
 * program stays attached after this process exits; detach removes it.
 *
 * Usage (run inside the namespace, e.g. with `ip netns exec zc-rx`):
 *   xdp_pass attach IFNAME [frags]   load + attach (frags: BPF_F_XDP_HAS_FRAGS,
 *                                    lets veth keep an MTU above ~3.5 KiB)
 *   xdp_pass detach IFNAME           remove whatever XDP program is attached
 *
 * Build: gcc -std=c11 -O2 -Wall -Wextra -Werror -o xdp_pass xdp_pass.c
 * No clang-bpf and no libbpf needed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef BPF_F_XDP_HAS_FRAGS
#define BPF_F_XDP_HAS_FRAGS (1U << 5)
#endif

static int load_xdp_pass(int frags)
{
	/* r0 = XDP_PASS (2); exit */
	struct bpf_insn insns[2];
	memset(insns, 0, sizeof(insns));
	insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K;
	insns[0].dst_reg = BPF_REG_0;
	insns[0].imm = XDP_PASS;
	insns[1].code = BPF_JMP | BPF_EXIT;

	static char log[4096];
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_XDP;
	attr.insn_cnt = 2;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.license = (uint64_t)(uintptr_t)"GPL";
	attr.log_level = 1;
	attr.log_size = sizeof(log);
	attr.log_buf = (uint64_t)(uintptr_t)log;
	attr.prog_flags = frags ? BPF_F_XDP_HAS_FRAGS : 0;
	memcpy(attr.prog_name, "zc_xdp_pass", sizeof("zc_xdp_pass"));
	int fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
	if (fd < 0) {
		int e = errno;
		fprintf(stderr, "xdp_pass: BPF_PROG_LOAD: %s\n%s", strerror(e), log);
		errno = e;
	}
	return fd;
}

static void add_attr(struct nlmsghdr *nh, size_t cap, unsigned short type, const void *data,
		     size_t len)
{
	struct nlattr *a = (struct nlattr *)((char *)nh + NLMSG_ALIGN(nh->nlmsg_len));
	size_t need = NLMSG_ALIGN(nh->nlmsg_len) + NLA_ALIGN(NLA_HDRLEN + len);
	if (need > cap) {
		fprintf(stderr, "xdp_pass: netlink buffer too small\n");
		exit(2);
	}
	a->nla_type = type;
	a->nla_len = (unsigned short)(NLA_HDRLEN + len);
	if (len)
		memcpy((char *)a + NLA_HDRLEN, data, len);
	nh->nlmsg_len = (uint32_t)need;
}

/* Attach prog_fd (or detach with -1) in driver mode on ifindex. */
static int set_link_xdp(int ifindex, int prog_fd)
{
	union {
		struct nlmsghdr nh;
		char buf[512];
	} req;
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	req.nh.nlmsg_type = RTM_SETLINK;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	req.nh.nlmsg_seq = 1;
	struct ifinfomsg *ifi = NLMSG_DATA(&req.nh);
	ifi->ifi_family = AF_UNSPEC;
	ifi->ifi_index = ifindex;

	/* nested IFLA_XDP { IFLA_XDP_FD, IFLA_XDP_FLAGS } */
	struct nlattr *nest = (struct nlattr *)((char *)&req + NLMSG_ALIGN(req.nh.nlmsg_len));
	uint32_t start = req.nh.nlmsg_len;
	add_attr(&req.nh, sizeof(req), IFLA_XDP | NLA_F_NESTED, NULL, 0);
	int32_t fd = prog_fd;
	uint32_t flags = XDP_FLAGS_DRV_MODE;
	add_attr(&req.nh, sizeof(req), IFLA_XDP_FD, &fd, sizeof(fd));
	add_attr(&req.nh, sizeof(req), IFLA_XDP_FLAGS, &flags, sizeof(flags));
	nest->nla_len = (unsigned short)(req.nh.nlmsg_len - start);

	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (s < 0) {
		perror("xdp_pass: socket(AF_NETLINK)");
		return -1;
	}
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	if (sendto(s, &req, req.nh.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("xdp_pass: sendto(netlink)");
		close(s);
		return -1;
	}
	char rbuf[4096];
	ssize_t n = recv(s, rbuf, sizeof(rbuf), 0);
	close(s);
	if (n < 0) {
		perror("xdp_pass: recv(netlink)");
		return -1;
	}
	struct nlmsghdr *rh = (struct nlmsghdr *)rbuf;
	if (!NLMSG_OK(rh, (unsigned)n) || rh->nlmsg_type != NLMSG_ERROR) {
		fprintf(stderr, "xdp_pass: unexpected netlink reply\n");
		return -1;
	}
	struct nlmsgerr *err = NLMSG_DATA(rh);
	if (err->error) {
		fprintf(stderr, "xdp_pass: RTM_SETLINK IFLA_XDP: %s\n", strerror(-err->error));
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3 || (strcmp(argv[1], "attach") && strcmp(argv[1], "detach"))) {
		fprintf(stderr, "usage: %s attach|detach IFNAME [frags]\n", argv[0]);
		return 2;
	}
	unsigned ifindex = if_nametoindex(argv[2]);
	if (!ifindex) {
		fprintf(stderr, "xdp_pass: no interface %s in this namespace\n", argv[2]);
		return 1;
	}
	if (!strcmp(argv[1], "detach"))
		return set_link_xdp((int)ifindex, -1) ? 1 : 0;

	int frags = argc > 3 && !strcmp(argv[3], "frags");
	int fd = load_xdp_pass(frags);
	if (fd < 0)
		return 1;
	int rc = set_link_xdp((int)ifindex, fd);
	close(fd); /* the link holds its own reference */
	return rc ? 1 : 0;
}
