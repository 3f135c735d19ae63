/* netns.c - see netns.h.  Build: cc -std=c11 -c netns.c (link -lpthread). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define SPAWN_TIMEOUT_MS 10000

static void set_reason(char *r, size_t n, const char *fmt, ...)
{
	if (!r || !n)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r, n, fmt, ap);
	va_end(ap);
	/* strip trailing newlines from captured stderr */
	size_t l = strlen(r);
	while (l && (r[l - 1] == '\n' || r[l - 1] == '\r'))
		r[--l] = 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

int zc_netns_spawn(char *const argv[], char *out, size_t out_len)
{
	int pfd[2] = {-1, -1};
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	if (pipe2(pfd, O_CLOEXEC) == 0) {
		posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
		posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	}
	pid_t pid;
	int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (pfd[1] >= 0)
		close(pfd[1]);
	if (rc) {
		if (out && out_len)
			snprintf(out, out_len, "cannot run %s: %s", argv[0], strerror(rc));
		if (pfd[0] >= 0)
			close(pfd[0]);
		errno = rc;
		return -1;
	}
	size_t got = 0;
	if (pfd[0] >= 0) {
		fcntl(pfd[0], F_SETFL, O_NONBLOCK);
	}
	int status = 0, done = 0;
	for (int waited = 0; waited <= SPAWN_TIMEOUT_MS; waited += 5) {
		if (pfd[0] >= 0) {
			char buf[512];
			ssize_t n;
			while ((n = read(pfd[0], buf, sizeof(buf))) > 0) {
				if (out && got + 1 < out_len) {
					size_t c = (size_t)n < out_len - 1 - got ? (size_t)n : out_len - 1 - got;
					memcpy(out + got, buf, c);
					got += c;
				}
			}
		}
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid) {
			done = 1;
			break;
		}
		sleep_ms(5);
	}
	if (!done) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (pfd[0] >= 0) {
		char buf[512];
		ssize_t n;
		while ((n = read(pfd[0], buf, sizeof(buf))) > 0) {
			if (out && got + 1 < out_len) {
				size_t c = (size_t)n < out_len - 1 - got ? (size_t)n : out_len - 1 - got;
				memcpy(out + got, buf, c);
				got += c;
			}
		}
		close(pfd[0]);
	}
	if (out && out_len)
		out[got] = 0;
	if (!done)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* run "ip ARGS..." ; on failure put "ip ARGS: output" in reason */
static int run_ip(char *reason, size_t rlen, const char *const *args)
{
	char *argv[24];
	size_t n = 0;
	argv[n++] = (char *)"ip";
	for (; args[n - 1] && n < 23; n++)
		argv[n] = (char *)args[n - 1];
	argv[n] = NULL;
	char out[512];
	int rc = zc_netns_spawn(argv, out, sizeof(out));
	if (rc != 0) {
		char cmd[256] = "ip";
		for (size_t i = 1; argv[i]; i++) {
			strncat(cmd, " ", sizeof(cmd) - strlen(cmd) - 1);
			strncat(cmd, argv[i], sizeof(cmd) - strlen(cmd) - 1);
		}
		set_reason(reason, rlen, "`%s` failed (%d): %s", cmd, rc, out);
		return -1;
	}
	return 0;
}
#define IP(r, rl, ...) run_ip(r, rl, (const char *const[]){__VA_ARGS__, NULL})

static int has_cap(int cap)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return geteuid() == 0;
	char line[256];
	unsigned long long eff = 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "CapEff: %llx", &eff) == 1)
			break;
	fclose(f);
	return (eff >> cap) & 1;
}

int zc_netns_check(char *reason, size_t rlen)
{
	if (!has_cap(12 /* CAP_NET_ADMIN */)) {
		set_reason(reason, rlen, "no CAP_NET_ADMIN in the effective set (not root?): cannot create network namespaces");
		return ZC_NETNS_SKIP;
	}
	if (!has_cap(21 /* CAP_SYS_ADMIN */)) {
		set_reason(reason, rlen, "no CAP_SYS_ADMIN: cannot create or enter named network namespaces");
		return ZC_NETNS_SKIP;
	}
	char out[256];
	char *argv[] = {(char *)"ip", (char *)"-V", NULL};
	if (zc_netns_spawn(argv, out, sizeof(out)) != 0) {
		set_reason(reason, rlen, "iproute2 `ip` not usable: %s", out);
		return ZC_NETNS_SKIP;
	}
	return ZC_NETNS_OK;
}

static int ns_path(const char *name, char *buf, size_t len)
{
	int n = name[0] == '/' ? snprintf(buf, len, "%s", name)
			       : snprintf(buf, len, "/run/netns/%s", name);
	return n > 0 && (size_t)n < len ? 0 : -1;
}

int zc_netns_enter(const char *name, int *saved)
{
	char path[128];
	if (ns_path(name, path, sizeof(path))) {
		errno = ENAMETOOLONG;
		return -1;
	}
	int old = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
	if (old < 0)
		return -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		close(old);
		errno = e;
		return -1;
	}
	int rc = setns(fd, CLONE_NEWNET);
	int e = errno;
	close(fd);
	if (rc) {
		close(old);
		errno = e;
		return -1;
	}
	if (saved)
		*saved = old;
	else
		close(old);
	return 0;
}

int zc_netns_leave(int saved)
{
	int rc = setns(saved, CLONE_NEWNET);
	int e = errno;
	close(saved);
	errno = e;
	return rc;
}

struct ns_thread_arg {
	char name[128];
	int (*fn)(void *);
	void *arg;
	int ret;
	int err;
};

static void *ns_thread_main(void *p)
{
	struct ns_thread_arg *a = p;
	if (zc_netns_enter(a->name, NULL)) {
		a->err = errno;
		a->ret = -1;
		return NULL;
	}
	a->ret = a->fn(a->arg);
	return NULL;
}

int zc_netns_start(struct zc_netns_thread *t, const char *name, int (*fn)(void *), void *arg)
{
	struct ns_thread_arg *a = calloc(1, sizeof(*a));
	if (!a)
		return -1;
	snprintf(a->name, sizeof(a->name), "%s", name);
	a->fn = fn;
	a->arg = arg;
	int rc = pthread_create(&t->tid, NULL, ns_thread_main, a);
	if (rc) {
		free(a);
		errno = rc;
		return -1;
	}
	t->priv = a;
	return 0;
}

int zc_netns_join(struct zc_netns_thread *t)
{
	struct ns_thread_arg *a = t->priv;
	pthread_join(t->tid, NULL);
	int ret = a->ret, err = a->err;
	free(a);
	t->priv = NULL;
	if (err)
		errno = err;
	return ret;
}

int zc_netns_run(const char *name, int (*fn)(void *), void *arg)
{
	struct zc_netns_thread t;
	if (zc_netns_start(&t, name, fn, arg))
		return -1;
	return zc_netns_join(&t);
}

/* ---- XDP_PASS: raw bpf(2) + rtnetlink, run in the current thread's netns ---- */

static int xdp_pass_load(char *reason, size_t rlen)
{
	struct bpf_insn insns[2];
	memset(insns, 0, sizeof(insns));
	insns[0].code = BPF_ALU64 | BPF_MOV | BPF_K; /* r0 = XDP_PASS */
	insns[0].dst_reg = BPF_REG_0;
	insns[0].imm = XDP_PASS;
	insns[1].code = BPF_JMP | BPF_EXIT; /* exit */
	union bpf_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.prog_type = BPF_PROG_TYPE_XDP;
	attr.insn_cnt = 2;
	attr.insns = (uint64_t)(uintptr_t)insns;
	attr.license = (uint64_t)(uintptr_t)"GPL";
	memcpy(attr.prog_name, "zc_xdp_pass", sizeof("zc_xdp_pass"));
	int fd = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &attr, sizeof(attr));
	if (fd < 0)
		set_reason(reason, rlen, "bpf(BPF_PROG_LOAD, XDP_PASS): %s", strerror(errno));
	return fd;
}

static int xdp_attach(unsigned ifindex, int prog_fd, char *reason, size_t rlen)
{
	struct {
		struct nlmsghdr nh;
		struct ifinfomsg ifi;
		struct nlattr xdp;
		struct nlattr fd_hdr;
		int32_t fd;
		struct nlattr fl_hdr;
		uint32_t flags;
	} req;
	memset(&req, 0, sizeof(req));
	req.nh.nlmsg_len = sizeof(req);
	req.nh.nlmsg_type = RTM_SETLINK;
	req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
	req.nh.nlmsg_seq = 1;
	req.ifi.ifi_family = AF_UNSPEC;
	req.ifi.ifi_index = (int)ifindex;
	req.xdp.nla_type = IFLA_XDP | NLA_F_NESTED;
	req.xdp.nla_len = (uint16_t)(sizeof(req) - offsetof(__typeof__(req), xdp));
	req.fd_hdr.nla_type = IFLA_XDP_FD;
	req.fd_hdr.nla_len = NLA_HDRLEN + sizeof(int32_t);
	req.fd = prog_fd;
	req.fl_hdr.nla_type = IFLA_XDP_FLAGS;
	req.fl_hdr.nla_len = NLA_HDRLEN + sizeof(uint32_t);
	req.flags = XDP_FLAGS_DRV_MODE;

	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (s < 0) {
		set_reason(reason, rlen, "netlink socket: %s", strerror(errno));
		return -1;
	}
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
	char rbuf[1024];
	ssize_t n = -1;
	if (sendto(s, &req, sizeof(req), 0, (struct sockaddr *)&sa, sizeof(sa)) == (ssize_t)sizeof(req))
		n = recv(s, rbuf, sizeof(rbuf), 0);
	int e = errno;
	close(s);
	if (n < (ssize_t)NLMSG_LENGTH(sizeof(struct nlmsgerr))) {
		set_reason(reason, rlen, "netlink RTM_SETLINK: %s", strerror(e));
		return -1;
	}
	struct nlmsghdr *rh = (struct nlmsghdr *)rbuf;
	struct nlmsgerr *err = NLMSG_DATA(rh);
	if (rh->nlmsg_type != NLMSG_ERROR || err->error) {
		set_reason(reason, rlen, "attach XDP (driver mode): %s",
			   rh->nlmsg_type == NLMSG_ERROR ? strerror(-err->error) : "bad reply");
		return -1;
	}
	return 0;
}

static int find_napi_pid(const char *dev)
{
	char want[32];
	snprintf(want, sizeof(want), "napi/%s-", dev);
	DIR *d = opendir("/proc");
	if (!d)
		return 0;
	struct dirent *de;
	int found = 0;
	while (!found && (de = readdir(d))) {
		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		char path[64], comm[32] = "";
		snprintf(path, sizeof(path), "/proc/%.20s/comm", de->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && !strncmp(comm, want, strlen(want)))
			found = atoi(de->d_name);
		fclose(f);
	}
	closedir(d);
	return found;
}

static int read_ns_file(const char *ns, const char *path, char *out, size_t len)
{
	char *argv[] = {(char *)"ip", (char *)"netns", (char *)"exec", (char *)ns, (char *)"cat", (char *)path, NULL};
	return zc_netns_spawn(argv, out, len);
}

int zc_netns_pair_create(struct zc_netns_pair *p, unsigned flags, int napi_cpu, char *reason,
			 size_t rlen)
{
	static unsigned counter;
	memset(p, 0, sizeof(*p));
	int rc = zc_netns_check(reason, rlen);
	if (rc)
		return rc;
	unsigned pid = (unsigned)getpid(), n = counter++;
	snprintf(p->ns_tx, sizeof(p->ns_tx), "zc-%u-%u-tx", pid, n);
	snprintf(p->ns_rx, sizeof(p->ns_rx), "zc-%u-%u-rx", pid, n);
	snprintf(p->dev_tx, sizeof(p->dev_tx), "zc%05u%ct", pid % 100000, 'a' + (char)(n % 26));
	snprintf(p->dev_rx, sizeof(p->dev_rx), "zc%05u%cr", pid % 100000, 'a' + (char)(n % 26));
	snprintf(p->addr_tx, sizeof(p->addr_tx), "198.19.0.1");
	snprintf(p->addr_rx, sizeof(p->addr_rx), "198.19.0.2");
	p->flags = flags;

	if (IP(reason, rlen, "netns", "add", p->ns_tx))
		return ZC_NETNS_SKIP; /* the first namespace is the capability test */
	p->made = 1;
	if (IP(reason, rlen, "netns", "add", p->ns_rx))
		goto fail;
	if (IP(reason, rlen, "-n", p->ns_tx, "link", "add", p->dev_tx, "numtxqueues", "1",
	       "numrxqueues", "1", "type", "veth", "peer", "name", p->dev_rx, "netns", p->ns_rx,
	       "numtxqueues", "1", "numrxqueues", "1"))
		goto fail;
	char a[32];
	snprintf(a, sizeof(a), "%s/30", p->addr_tx);
	if (IP(reason, rlen, "-n", p->ns_tx, "addr", "add", a, "dev", p->dev_tx))
		goto fail;
	snprintf(a, sizeof(a), "%s/30", p->addr_rx);
	if (IP(reason, rlen, "-n", p->ns_rx, "addr", "add", a, "dev", p->dev_rx))
		goto fail;
	if (IP(reason, rlen, "-n", p->ns_tx, "link", "set", "lo", "up") ||
	    IP(reason, rlen, "-n", p->ns_rx, "link", "set", "lo", "up"))
		goto fail;

	if (flags & ZC_NETNS_XDP) {
		int saved;
		if (zc_netns_enter(p->ns_rx, &saved)) {
			set_reason(reason, rlen, "setns(%s): %s", p->ns_rx, strerror(errno));
			goto fail;
		}
		unsigned ifindex = if_nametoindex(p->dev_rx);
		int fd = ifindex ? xdp_pass_load(reason, rlen) : -1;
		int arc = fd >= 0 ? xdp_attach(ifindex, fd, reason, rlen) : -1;
		if (fd >= 0)
			close(fd);
		if (!ifindex)
			set_reason(reason, rlen, "%s not found in %s", p->dev_rx, p->ns_rx);
		zc_netns_leave(saved);
		if (arc)
			goto fail;
	}
	if (IP(reason, rlen, "-n", p->ns_tx, "link", "set", p->dev_tx, "up") ||
	    IP(reason, rlen, "-n", p->ns_rx, "link", "set", p->dev_rx, "up"))
		goto fail;

	if (flags & ZC_NETNS_STATIC_NEIGH) {
		char mtx[64] = "", mrx[64] = "", path[96];
		snprintf(path, sizeof(path), "/sys/class/net/%s/address", p->dev_tx);
		if (read_ns_file(p->ns_tx, path, mtx, sizeof(mtx)))
			goto neigh_fail;
		snprintf(path, sizeof(path), "/sys/class/net/%s/address", p->dev_rx);
		if (read_ns_file(p->ns_rx, path, mrx, sizeof(mrx)))
			goto neigh_fail;
		mtx[strcspn(mtx, "\n")] = 0;
		mrx[strcspn(mrx, "\n")] = 0;
		if (IP(reason, rlen, "-n", p->ns_tx, "neigh", "replace", p->addr_rx, "lladdr", mrx,
		       "dev", p->dev_tx, "nud", "permanent") ||
		    IP(reason, rlen, "-n", p->ns_rx, "neigh", "replace", p->addr_tx, "lladdr", mtx,
		       "dev", p->dev_rx, "nud", "permanent"))
			goto fail;
		goto neigh_ok;
neigh_fail:
		set_reason(reason, rlen, "cannot read veth MAC addresses");
		goto fail;
neigh_ok:;
	}

	if (flags & ZC_NETNS_THREADED_NAPI) {
		char cmd[128];
		snprintf(cmd, sizeof(cmd), "echo 1 > /sys/class/net/%s/threaded", p->dev_rx);
		char *argv[] = {(char *)"ip", (char *)"netns", (char *)"exec", p->ns_rx, (char *)"sh",
				(char *)"-c", cmd, NULL};
		char out[256];
		if (zc_netns_spawn(argv, out, sizeof(out))) {
			set_reason(reason, rlen, "threaded NAPI on %s: %s", p->dev_rx, out);
			goto fail;
		}
		for (int i = 0; i < 200 && !p->napi_pid; i++) { /* <= 2 s */
			p->napi_pid = find_napi_pid(p->dev_rx);
			if (!p->napi_pid)
				sleep_ms(10);
		}
		if (!p->napi_pid) {
			set_reason(reason, rlen, "no napi/%s-* kthread after enabling threaded NAPI",
				   p->dev_rx);
			goto fail;
		}
		if (napi_cpu >= 0) {
			cpu_set_t set;
			CPU_ZERO(&set);
			CPU_SET(napi_cpu, &set);
			if (sched_setaffinity(p->napi_pid, sizeof(set), &set)) {
				set_reason(reason, rlen, "pin napi kthread %d to CPU %d: %s", p->napi_pid,
					   napi_cpu, strerror(errno));
				goto fail;
			}
		}
	}
	return ZC_NETNS_OK;
fail:
	return ZC_NETNS_ERROR;
}

void zc_netns_pair_destroy(struct zc_netns_pair *p)
{
	if (!p->made)
		return;
	char ignore[256];
	IP(ignore, sizeof(ignore), "netns", "del", p->ns_rx);
	IP(ignore, sizeof(ignore), "netns", "del", p->ns_tx);
	p->made = 0;
}

int zc_netns_reap_stale(void)
{
	DIR *d = opendir("/run/netns");
	if (!d)
		return 0;
	char names[64][48];
	int n = 0;
	struct dirent *de;
	while (n < 64 && (de = readdir(d))) {
		unsigned pid, k;
		char side[4], end;
		if (sscanf(de->d_name, "zc-%u-%u-%2[rtx]%c", &pid, &k, side, &end) != 3 ||
		    (strcmp(side, "tx") && strcmp(side, "rx")) || pid == 0)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue; /* its process is alive (or not ours to judge) */
		snprintf(names[n++], sizeof(names[0]), "%.47s", de->d_name);
	}
	closedir(d);
	int removed = 0;
	for (int i = 0; i < n; i++) {
		char ignore[256];
		if (IP(ignore, sizeof(ignore), "netns", "del", names[i]) == 0)
			removed++;
	}
	return removed;
}
