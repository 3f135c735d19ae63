/*
 * kmod_selftest.c - tests of /dev/zcopy (zcopy.ko), run inside the test VM
 * as root (tests/vm/run.sh).  Plain C, TAP-like output, last line:
 *   kmod_selftest: N passed, M failed, S skipped
 * Every test is skipped, with the reason, when /dev/zcopy is missing.
 * ZCOPY_KO=/path/zcopy.ko enables the unload/reload tests (rmmod refused
 * while sends are in flight; MemFree after unload).  Every wait is bounded.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
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

#define KMOD_FUZZ_NO_MAIN
#include "kmod_fuzz.c"

#define PG 4096u

static char reason[512];

#define CHECK(c, ...)                                                                  \
	do {                                                                           \
		if (!(c)) {                                                            \
			int _n = snprintf(reason, sizeof(reason), "%s:%d: %s: ", __FILE__, \
					  __LINE__, #c);                               \
			snprintf(reason + _n, sizeof(reason) - _n, __VA_ARGS__);       \
			return -1;                                                     \
		}                                                                      \
	} while (0)

#define SKIP(...)                                                    \
	do {                                                         \
		snprintf(reason, sizeof(reason), __VA_ARGS__);       \
		return 1;                                            \
	} while (0)

static void note(const char *fmt, ...)
{
	va_list ap;

	printf("# ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- helpers */

struct zc {
	int fd;
	uint8_t *arena;
	size_t size;
	struct zcopy_status *st;
	size_t st_size;
	struct zcopy_setup su;
};

static int zc_open(struct zc *z, size_t size, unsigned int block_shift)
{
	memset(z, 0, sizeof(*z));
	z->fd = open(ZCOPY_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	if (z->fd < 0)
		return -errno;
	z->su.arena_size = size;
	z->su.block_shift = block_shift;
	if (ioctl(z->fd, ZCOPY_IOC_SETUP, &z->su))
		return -errno;
	z->size = size;
	z->arena = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, z->fd,
			(off_t)z->su.arena_offset);
	if (z->arena == MAP_FAILED)
		return -errno;
	z->st_size = z->su.status_size;
	z->st = mmap(NULL, z->st_size, PROT_READ, MAP_SHARED, z->fd, (off_t)z->su.status_offset);
	if (z->st == MAP_FAILED)
		return -errno;
	return 0;
}

static void zc_close(struct zc *z)
{
	if (z->arena && z->arena != MAP_FAILED)
		munmap(z->arena, z->size);
	if (z->st && z->st != MAP_FAILED)
		munmap(z->st, z->st_size);
	if (z->fd > 0)
		close(z->fd);
	memset(z, 0, sizeof(*z));
}

static int zc_range(struct zc *z, unsigned long cmd, uint64_t off, uint64_t len)
{
	struct zcopy_range r = { .offset = off, .length = len };

	return ioctl(z->fd, cmd, &r) ? -errno : 0;
}

#define LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)

static ssize_t zc_sendv(struct zc *z, int sock, const struct iovec *iov, int cnt, int msg_flags,
			const void *addr, socklen_t alen, struct zcopy_send *out)
{
	struct zcopy_send sd;
	long r;

	memset(&sd, 0, sizeof(sd));
	sd.fd = sock;
	sd.msg_flags = (uint32_t)msg_flags;
	sd.iovcnt = (uint32_t)cnt;
	sd.iov = (uintptr_t)iov;	/* struct iovec == struct zcopy_iovec on LP64 */
	sd.addr = (uintptr_t)addr;
	sd.addrlen = alen;
	r = ioctl(z->fd, ZCOPY_IOC_SEND, &sd);
	if (out)
		*out = sd;
	return r < 0 ? -errno : r;
}

/* wait until no page of this context is in flight */
static int zc_wait_idle(struct zc *z, double limit_s)
{
	double t0 = now_s();

	while (LD(z->st->pages_inflight) || LD(z->st->completions) != LD(z->st->sends)) {
		if (now_s() - t0 > limit_s)
			return -1;
		usleep(1000);
	}
	return 0;
}

static uint8_t pat(size_t off, unsigned int salt)
{
	return (uint8_t)(off * 131u + (off >> 12) * 7u + salt);
}

static void fill(uint8_t *p, size_t off, size_t n, unsigned int salt)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pat(off + i, salt);
}

static int tcp_pair(int *cli, int *srv, int rcvbuf, int sndbuf)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), c, s;

	if (l < 0)
		return -1;
	if (rcvbuf)
		setsockopt(l, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &al)) {
		close(l);
		return -1;
	}
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sndbuf)
		setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (connect(c, (struct sockaddr *)&a, sizeof(a))) {
		close(l);
		close(c);
		return -1;
	}
	s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	close(l);
	if (s < 0) {
		close(c);
		return -1;
	}
	*cli = c;
	*srv = s;
	return 0;
}

/* read exactly n bytes within limit_s */
static ssize_t recv_all(int fd, uint8_t *buf, size_t n, double limit_s)
{
	size_t got = 0;
	double t0 = now_s();

	while (got < n) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t r;

		if (now_s() - t0 > limit_s)
			break;
		if (poll(&p, 1, 100) <= 0)
			continue;
		r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
		if (r == 0)
			break;
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			break;
		}
		got += (size_t)r;
	}
	return (ssize_t)got;
}

struct rx_job {
	int fd;
	uint8_t *buf;
	size_t n;
	ssize_t got;
};

static void *rx_thread(void *arg)
{
	struct rx_job *j = arg;

	j->got = recv_all(j->fd, j->buf, j->n, 30);
	return NULL;
}

static int udp_pair(int *tx, int *rx, struct sockaddr_in *dst)
{
	socklen_t al = sizeof(*dst);

	memset(dst, 0, sizeof(*dst));
	dst->sin_family = AF_INET;
	dst->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	*rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	*tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (*rx < 0 || *tx < 0)
		return -1;
	if (bind(*rx, (struct sockaddr *)dst, sizeof(*dst)) ||
	    getsockname(*rx, (struct sockaddr *)dst, &al))
		return -1;
	return 0;
}

static long free_kb(void)
{
	return fz_free_kb();
}

static int del_module(void)
{
	return syscall(SYS_delete_module, "zcopy", O_NONBLOCK) ? -errno : 0;
}

static int load_module(void)
{
	const char *ko = getenv("ZCOPY_KO");
	int fd, r;

	if (!ko)
		return -ENOENT;
	fd = open(ko, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	r = syscall(SYS_finit_module, fd, "", 0) ? -errno : 0;
	close(fd);
	/* devtmpfs creates the node asynchronously */
	for (int i = 0; r == 0 && i < 200 && access(ZCOPY_DEVICE_PATH, F_OK); i++)
		usleep(10000);
	return r;
}

/* ------------------------------------------------------------------ tests */

static int t_info(void)
{
	struct zcopy_info info;
	int fd = open(ZCOPY_DEVICE_PATH, O_RDWR | O_CLOEXEC);

	CHECK(fd >= 0, "open: %s", strerror(errno));
	memset(&info, 0xff, sizeof(info));
	CHECK(ioctl(fd, ZCOPY_IOC_INFO, &info) == 0, "%s", strerror(errno));
	close(fd);
	CHECK(info.abi_version == ZCOPY_ABI_VERSION, "abi %#x", info.abi_version);
	CHECK(info.flags == 0, "flags %#x", info.flags);
	CHECK((info.features & (ZCOPY_FEAT_ARENA | ZCOPY_FEAT_SEAL | ZCOPY_FEAT_COW | ZCOPY_FEAT_SEND |
				ZCOPY_FEAT_STATUS)) == (ZCOPY_FEAT_ARENA | ZCOPY_FEAT_SEAL |
							ZCOPY_FEAT_COW | ZCOPY_FEAT_SEND |
							ZCOPY_FEAT_STATUS),
	      "features %#" PRIx64, (uint64_t)info.features);
	CHECK(info.page_size == (uint32_t)sysconf(_SC_PAGESIZE), "page %u", info.page_size);
	CHECK(info.iov_max == ZCOPY_IOV_MAX && info.send_max == ZCOPY_SEND_MAX, "limits");
	CHECK(info.user_cap > 0, "cap");
	for (int i = 0; i < 4; i++)
		CHECK(info.reserved[i] == 0, "reserved[%d] not zero", i);
	note("abi %u.%u features %#" PRIx64 " cap %" PRIu64 " MiB", info.abi_version >> 16,
	     info.abi_version & 0xffff, (uint64_t)info.features, (uint64_t)info.user_cap >> 20);
	return 0;
}

static int t_setup(void)
{
	struct zcopy_setup su;
	struct zcopy_info info;
	int fd = open(ZCOPY_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	void *p;

	CHECK(fd >= 0, "open");
	/* mmap before SETUP */
	p = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(p == MAP_FAILED && errno == EINVAL, "mmap before setup: %p %s", p, strerror(errno));
#define BAD_SETUP(field, val, err)                                                   \
	do {                                                                         \
		memset(&su, 0, sizeof(su));                                          \
		su.arena_size = 16 * PG;                                             \
		su.field = val;                                                      \
		CHECK(ioctl(fd, ZCOPY_IOC_SETUP, &su) == -1 && errno == err,         \
		      #field "=" #val ": %s", strerror(errno));                      \
	} while (0)
	BAD_SETUP(flags, 1, EINVAL);
	BAD_SETUP(reserved, 1, EINVAL);
	BAD_SETUP(arena_size, 0, EINVAL);
	BAD_SETUP(arena_size, 100, EINVAL);
	BAD_SETUP(arena_size, PG + 1, EINVAL);
	BAD_SETUP(arena_size, ~0ull & ~(uint64_t)(PG - 1), EINVAL);
	BAD_SETUP(arena_size, 1ull << 39, ENOMEM);	/* over the per-user cap */
	BAD_SETUP(block_shift, 11, EINVAL);
	BAD_SETUP(block_shift, 31, EINVAL);
	BAD_SETUP(block_shift, 0xffffffffu, EINVAL);
	CHECK(ioctl(fd, ZCOPY_IOC_SETUP, NULL) == -1 && errno == EFAULT, "NULL");
	/* the failed setups reserved nothing */
	memset(&info, 0, sizeof(info));
	CHECK(ioctl(fd, ZCOPY_IOC_INFO, &info) == 0, "info");
	CHECK(info.user_used == 0, "user_used %" PRIu64 " after failed setups", (uint64_t)info.user_used);

	memset(&su, 0, sizeof(su));
	su.arena_size = 64 * PG;
	su.block_shift = 14;
	CHECK(ioctl(fd, ZCOPY_IOC_SETUP, &su) == 0, "setup: %s", strerror(errno));
	CHECK(su.nr_blocks == 16, "nr_blocks %u", su.nr_blocks);
	CHECK(su.arena_offset == ZCOPY_ARENA_OFFSET && su.status_offset == ZCOPY_STATUS_OFFSET,
	      "offsets");
	CHECK(su.status_size >= sizeof(struct zcopy_status) + 16 * 4 && su.status_size % PG == 0,
	      "status_size %" PRIu64, (uint64_t)su.status_size);
	CHECK(ioctl(fd, ZCOPY_IOC_SETUP, &su) == -1 && errno == EBUSY, "second setup: %s",
	      strerror(errno));
	CHECK(ioctl(fd, ZCOPY_IOC_INFO, &info) == 0 && info.user_used == 64 * PG, "user_used %" PRIu64,
	      (uint64_t)info.user_used);
	close(fd);
	return 0;
}

static int t_mmap(void)
{
	struct zc z;
	void *p;
	int r = zc_open(&z, 32 * PG, 0);

	CHECK(r == 0, "zc_open: %s", strerror(-r));
	/* arena is zeroed */
	for (size_t i = 0; i < z.size; i++)
		CHECK(z.arena[i] == 0, "arena byte %zu = %u", i, z.arena[i]);
	CHECK(z.st->abi_version == ZCOPY_ABI_VERSION && z.st->nr_blocks == 32 &&
	      z.st->block_shift == 12, "status header");
	/* private mapping of the arena: refused */
	p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, z.fd, 0);
	CHECK(p == MAP_FAILED && errno == EINVAL, "MAP_PRIVATE arena");
	/* beyond the arena */
	p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, z.fd, 31 * PG);
	CHECK(p == MAP_FAILED && errno == EINVAL, "mmap past arena");
	/* status writable: refused; mprotect to writable: refused */
	p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, z.fd, (off_t)ZCOPY_STATUS_OFFSET);
	CHECK(p == MAP_FAILED && errno == EACCES, "writable status map");
	CHECK(mprotect(z.st, PG, PROT_READ | PROT_WRITE) == -1, "mprotect status writable");
	p = mmap(NULL, z.st_size + PG, PROT_READ, MAP_SHARED, z.fd, (off_t)ZCOPY_STATUS_OFFSET);
	CHECK(p == MAP_FAILED && errno == EINVAL, "status map too long");
	/* a second mapping of the same arena sees the same pages */
	p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, z.fd, 4 * PG);
	CHECK(p != MAP_FAILED, "second map: %s", strerror(errno));
	z.arena[4 * PG + 10] = 0x77;
	CHECK(((uint8_t *)p)[10] == 0x77, "alias");
	munmap(p, 4 * PG);
	/* mremap growth is refused (VM_DONTEXPAND) */
	p = mremap(z.arena, z.size, z.size + PG, 0);
	CHECK(p == MAP_FAILED, "mremap grow");
	zc_close(&z);
	return 0;
}

static int t_seal_write_idle(void)
{
	struct zc z;
	uint64_t u0;
	int r = zc_open(&z, 16 * PG, 0);

	CHECK(r == 0, "zc_open: %s", strerror(-r));
	fill(z.arena, 0, z.size, 1);
	CHECK(zc_range(&z, ZCOPY_IOC_SEAL, 2 * PG, 4 * PG) == 0, "seal");
	/* reads of sealed pages work and see the data */
	CHECK(z.arena[3 * PG + 5] == pat(3 * PG + 5, 1), "read sealed");
	u0 = LD(z.st->unseal_faults);
	z.arena[3 * PG + 5] = 0xee;	/* not in flight: unseals, never blocks */
	CHECK(z.arena[3 * PG + 5] == 0xee, "write lost");
	CHECK(LD(z.st->unseal_faults) == u0 + 1, "unseal_faults %" PRIu64 " -> %" PRIu64, u0,
	      (uint64_t)LD(z.st->unseal_faults));
	z.arena[3 * PG + 6] = 0xef;	/* now writable: no further fault counted */
	CHECK(LD(z.st->unseal_faults) == u0 + 1, "second write counted again");
	CHECK(LD(z.st->cow_faults) == 0, "cow without a send");
	/* other sealed pages stay sealed: one write, one more fault */
	z.arena[2 * PG] = 1;
	CHECK(LD(z.st->unseal_faults) == u0 + 2, "page 2");
	/* unseal then write: no fault counted */
	CHECK(zc_range(&z, ZCOPY_IOC_UNSEAL, 4 * PG, 2 * PG) == 0, "unseal");
	z.arena[4 * PG] = 1;
	z.arena[5 * PG] = 1;
	CHECK(LD(z.st->unseal_faults) == u0 + 2, "write after UNSEAL counted");
	/* reseal a written page: reads still fine */
	CHECK(zc_range(&z, ZCOPY_IOC_SEAL, 0, z.size) == 0, "seal all");
	CHECK(z.arena[3 * PG + 5] == 0xee && z.arena[3 * PG + 6] == 0xef, "data kept");
	zc_close(&z);
	return 0;
}

static int t_send_tcp(void)
{
	struct zc z;
	struct zcopy_send out;
	uint8_t hdr[100], trl[77], *rx;
	struct iovec iov[4];
	size_t total;
	uint64_t s0, c0;
	int cli, srv, r = zc_open(&z, 64 * PG, 0);

	CHECK(r == 0, "zc_open: %s", strerror(-r));
	CHECK(tcp_pair(&cli, &srv, 0, 0) == 0, "tcp_pair");
	fill(z.arena, 0, z.size, 2);
	fill(hdr, 1000000, sizeof(hdr), 3);
	fill(trl, 2000000, sizeof(trl), 4);
	CHECK(zc_range(&z, ZCOPY_IOC_SEAL, 0, 8 * PG) == 0, "seal");
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ z.arena + 100, 3 * PG };	/* sealed: by reference */
	iov[2] = (struct iovec){ z.arena + 9 * PG + 7, 500 };	/* not sealed: copied */
	iov[3] = (struct iovec){ trl, sizeof(trl) };
	total = sizeof(hdr) + 3 * PG + 500 + sizeof(trl);
	s0 = LD(z.st->sends);
	c0 = LD(z.st->completions_copied) + LD(z.st->completions_zerocopy);
	ssize_t n = zc_sendv(&z, cli, iov, 4, 0, NULL, 0, &out);
	CHECK(n == (ssize_t)total, "send %zd of %zu: %s", n, total, n < 0 ? strerror((int)-n) : "");
	CHECK(out.zc_bytes == 3 * PG && out.copied_bytes == total - 3 * PG,
	      "zc %" PRIu64 " copied %" PRIu64, (uint64_t)out.zc_bytes, (uint64_t)out.copied_bytes);
	CHECK(out.send_id == 1, "send_id %" PRIu64, (uint64_t)out.send_id);
	CHECK(LD(z.st->sends) == s0 + 1, "sends");
	rx = malloc(total);
	CHECK(recv_all(srv, rx, total, 10) == (ssize_t)total, "recv");
	CHECK(!memcmp(rx, hdr, sizeof(hdr)), "hdr bytes");
	CHECK(!memcmp(rx + sizeof(hdr), z.arena + 100, 3 * PG), "arena bytes");
	CHECK(!memcmp(rx + sizeof(hdr) + 3 * PG, z.arena + 9 * PG + 7, 500), "copied arena bytes");
	CHECK(!memcmp(rx + total - sizeof(trl), trl, sizeof(trl)), "trailer bytes");
	free(rx);
	CHECK(zc_wait_idle(&z, 10) == 0, "completion did not come");
	CHECK(LD(z.st->completions_copied) + LD(z.st->completions_zerocopy) == c0 + 1,
	      "one completion with pages expected");
	for (uint32_t b = 0; b < z.su.nr_blocks; b++)
		CHECK(LD(z.st->block_inflight[b]) == 0, "block %u in flight", b);

	/* a large send (all 64 pages, sealed) with a reader thread */
	{
		struct rx_job j = { .fd = srv, .n = z.size };
		pthread_t th;
		double t0;

		CHECK(zc_range(&z, ZCOPY_IOC_SEAL, 0, z.size) == 0, "seal all");
		j.buf = malloc(z.size);
		pthread_create(&th, NULL, rx_thread, &j);
		t0 = now_s();
		iov[0] = (struct iovec){ z.arena, z.size };
		n = zc_sendv(&z, cli, iov, 1, 0, NULL, 0, &out);
		pthread_join(th, NULL);
		CHECK(n == (ssize_t)z.size, "large send %zd", n);
		CHECK(out.zc_bytes == z.size, "large zc %" PRIu64, (uint64_t)out.zc_bytes);
		CHECK(j.got == (ssize_t)z.size && !memcmp(j.buf, z.arena, z.size), "large bytes");
		free(j.buf);
		CHECK(zc_wait_idle(&z, 10) == 0, "large completion");
		note("tcp: 256 KiB in %.3f s; completions zerocopy %" PRIu64 " copied %" PRIu64,
		     now_s() - t0, (uint64_t)LD(z.st->completions_zerocopy),
		     (uint64_t)LD(z.st->completions_copied));
	}
	close(cli);
	close(srv);
	zc_close(&z);
	return 0;
}

static int t_send_udp(void)
{
	struct zc z;
	struct zcopy_send out;
	struct sockaddr_in dst;
	uint8_t hdr[28], rx[70000];
	struct iovec iov[20];
	int tx, rxs, r = zc_open(&z, 32 * PG, 0);
	ssize_t n, total;

	CHECK(r == 0, "zc_open: %s", strerror(-r));
	CHECK(udp_pair(&tx, &rxs, &dst) == 0, "udp_pair");
	fill(z.arena, 0, z.size, 5);
	fill(hdr, 3000000, sizeof(hdr), 6);
	CHECK(zc_range(&z, ZCOPY_IOC_SEAL, 0, z.size) == 0, "seal");

	/* unconnected, with an address: one datagram */
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	iov[1] = (struct iovec){ z.arena + 3 * PG, 2 * PG };
	total = sizeof(hdr) + 2 * PG;
	n = zc_sendv(&z, tx, iov, 2, 0, &dst, sizeof(dst), &out);
	CHECK(n == total, "udp send %zd: %s", n, n < 0 ? strerror((int)-n) : "");
	CHECK(out.zc_bytes == 2 * PG, "zc bytes %" PRIu64, (uint64_t)out.zc_bytes);
	n = recv(rxs, rx, sizeof(rx), 0);
	CHECK(n == total, "datagram %zd", n);
	CHECK(!memcmp(rx, hdr, sizeof(hdr)) && !memcmp(rx + sizeof(hdr), z.arena + 3 * PG, 2 * PG),
	      "udp bytes");

	/* connected, no address */
	CHECK(connect(tx, (struct sockaddr *)&dst, sizeof(dst)) == 0, "connect");
	iov[0] = (struct iovec){ z.arena + 10, 1000 };
	n = zc_sendv(&z, tx, iov, 1, 0, NULL, 0, NULL);
	CHECK(n == 1000, "connected send %zd", n);
	CHECK(recv(rxs, rx, sizeof(rx), 0) == 1000 && !memcmp(rx, z.arena + 10, 1000), "bytes");

	/* many pieces: more than an skb's frags; still one datagram */
	for (int i = 0; i < 20; i++)
		iov[i] = (struct iovec){ z.arena + i * PG + 11 * i, 3000 };
	n = zc_sendv(&z, tx, iov, 20, 0, NULL, 0, &out);
	CHECK(n == 60000, "20-piece send %zd: %s", n, n < 0 ? strerror((int)-n) : "");
	CHECK(recv(rxs, rx, sizeof(rx), 0) == 60000, "20-piece datagram");
	for (int i = 0; i < 20; i++)
		CHECK(!memcmp(rx + i * 3000, z.arena + i * PG + 11 * i, 3000), "piece %d", i);

	/* corked: MSG_MORE pieces then the last one make one datagram */
	iov[0] = (struct iovec){ z.arena + 5 * PG, 700 };
	CHECK(zc_sendv(&z, tx, iov, 1, MSG_MORE, NULL, 0, &out) == 700 && out.zc_bytes == 0,
	      "corked piece");
	iov[0] = (struct iovec){ hdr, sizeof(hdr) };
	CHECK(zc_sendv(&z, tx, iov, 1, MSG_MORE, NULL, 0, NULL) == sizeof(hdr), "corked piece 2");
	iov[0] = (struct iovec){ z.arena + 6 * PG, PG };
	n = zc_sendv(&z, tx, iov, 1, 0, NULL, 0, &out);
	CHECK(n == PG, "last piece %zd: %s", n, n < 0 ? strerror((int)-n) : "");
	CHECK(recv(rxs, rx, sizeof(rx), 0) == 700 + sizeof(hdr) + PG, "corked datagram");
	CHECK(!memcmp(rx, z.arena + 5 * PG, 700) && !memcmp(rx + 700, hdr, sizeof(hdr)) &&
	      !memcmp(rx + 700 + sizeof(hdr), z.arena + 6 * PG, PG), "corked bytes");

	/* too large for a datagram */
	iov[0] = (struct iovec){ z.arena, 17 * PG };
	n = zc_sendv(&z, tx, iov, 1, 0, NULL, 0, NULL);
	CHECK(n == -EMSGSIZE, "70 KB datagram: %zd", n);

	CHECK(zc_wait_idle(&z, 10) == 0, "udp completions");
	note("udp: completions zerocopy %" PRIu64 " copied %" PRIu64 " (loopback copies)",
	     (uint64_t)LD(z.st->completions_zerocopy), (uint64_t)LD(z.st->completions_copied));
	close(tx);
	close(rxs);
	zc_close(&z);
	return 0;
}

static int t_send_nonblock(void)
{
	struct zc z;
	struct iovec iov;
	uint8_t *rx;
	size_t sent = 0, got, lens[1000];
	int cli, srv, eagain = 0, shortw = 0, calls = 0, r = zc_open(&z, 64 * PG, 0);
	ssize_t n;

	CHECK(r == 0, "zc_open: %s", strerror(-r));
	CHECK(tcp_pair(&cli, &srv, 4096, 16384) == 0, "tcp_pair");
	CHECK(fcntl(cli, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
	fill(z.arena, 0, z.size, 7);
	CHECK(zc_range(&z, ZCOPY_IOC_SEAL, 0, z.size) == 0, "seal");
	while (calls < 1000 && !eagain) {
		iov = (struct iovec){ z.arena, z.size };
		n = zc_sendv(&z, cli, &iov, 1, 0, NULL, 0, NULL);
		if (n == -EAGAIN) {
			eagain = 1;
			break;
		}
		CHECK(n > 0, "send: %s", strerror((int)-n));
		if ((size_t)n < z.size)
			shortw++;
		lens[calls++] = (size_t)n;
		sent += (size_t)n;
	}
	CHECK(eagain, "no EAGAIN on a full non-blocking socket");
	/* MSG_DONTWAIT on a blocking socket too */
	CHECK(fcntl(cli, F_SETFL, 0) == 0, "blocking");
	iov = (struct iovec){ z.arena, PG };
	n = zc_sendv(&z, cli, &iov, 1, MSG_DONTWAIT, NULL, 0, NULL);
	CHECK(n == -EAGAIN, "MSG_DONTWAIT: %zd", n);
	rx = malloc(sent);
	got = (size_t)recv_all(srv, rx, sent, 20);
	CHECK(got == sent, "received %zu of %zu", got, sent);
	/* the stream is each call's accepted prefix of the arena, in order */
	for (size_t i = 0, off = 0; i < (size_t)calls; off += lens[i], i++)
		CHECK(!memcmp(rx + off, z.arena, lens[i]), "bytes of call %zu", i);
	free(rx);
	CHECK(zc_wait_idle(&z, 10) == 0, "completions");
	note("non-blocking: %zu bytes in %d calls, %d short writes, then EAGAIN", sent, calls, shortw);
	close(cli);
	close(srv);
	zc_close(&z);
	return 0;
}

static int t_cow_inflight(void)
{
	struct zc z;
	struct iovec iov;
	struct zcopy_send out;
	uint8_t *rx, *old;
	const size_t size = 256 * PG;
	int cli, srv, notsent = 0, r = zc_open(&z, size, 0);
	size_t p, got;
	uint64_t cow0;
	double t0, dt;
	ssize_t n, n0;

	CHECK(r == 0, "zc_open: %s", strerror(-r));
	CHECK(tcp_pair(&cli, &srv, 4096, 4 << 20) == 0, "tcp_pair");
	fill(z.arena, 0, size, 9);
	old = malloc(size);
	memcpy(old, z.arena, size);
	CHECK(zc_range(&z, ZCOPY_IOC_SEAL, 0, size) == 0, "seal");
	iov = (struct iovec){ z.arena, size };
	n = zc_sendv(&z, cli, &iov, 1, MSG_DONTWAIT, NULL, 0, &out);
	CHECK(n > (ssize_t)(2 * PG), "send %zd: %s", n, n < 0 ? strerror((int)-n) : "");
	n0 = n;
	CHECK(ioctl(cli, SIOCOUTQNSD, &notsent) == 0, "SIOCOUTQNSD");
	p = ((size_t)n - 1) / PG - 1;	/* a whole page in the unsent tail */
	CHECK(p * PG >= (size_t)n - (size_t)notsent, "page %zu not in the unsent tail (sent %zd, notsent %d)",
	      p, n, notsent);
	CHECK(LD(z.st->block_inflight[p]) > 0, "page %zu not in flight", p);
	cow0 = LD(z.st->cow_faults);

	t0 = now_s();
	memset(z.arena + p * PG, 0xa5, PG);	/* must not wait for the send */
	dt = now_s() - t0;

	CHECK(LD(z.st->cow_faults) == cow0 + 1, "cow_faults %" PRIu64, (uint64_t)LD(z.st->cow_faults));
	CHECK(LD(z.st->block_inflight[p]) > 0, "send completed during the write: not a valid test");
	CHECK(LD(z.st->completions) < LD(z.st->sends), "send no longer in flight");
	CHECK(dt < 0.5, "write took %.3f s", dt);
	for (size_t i = 0; i < PG; i++)
		CHECK(z.arena[p * PG + i] == 0xa5, "writer does not see its write");
	/* the receiver gets the bytes as they were when sealed */
	rx = malloc((size_t)n);
	got = (size_t)recv_all(srv, rx, (size_t)n, 30);
	CHECK(got == (size_t)n, "received %zu of %zd", got, n);
	CHECK(!memcmp(rx, old, (size_t)n), "peer got new bytes: the copy-on-write failed");
	CHECK(zc_wait_idle(&z, 10) == 0, "completion after read");
	/* reseal; a new send carries the new bytes */
	CHECK(zc_range(&z, ZCOPY_IOC_SEAL, p * PG, PG) == 0, "reseal");
	iov = (struct iovec){ z.arena + p * PG, PG };
	n = zc_sendv(&z, cli, &iov, 1, 0, NULL, 0, &out);
	CHECK(n == PG && out.zc_bytes == PG, "resend %zd zc %" PRIu64, n, (uint64_t)out.zc_bytes);
	CHECK(recv_all(srv, rx, PG, 10) == PG, "recv resend");
	for (size_t i = 0; i < PG; i++)
		CHECK(rx[i] == 0xa5, "resend carried old bytes");
	CHECK(zc_wait_idle(&z, 10) == 0, "completion of resend");
	note("copy-on-write: write to in-flight page %zu took %.1f us (%zd bytes accepted, %d not sent yet);"
	     " peer got the old bytes, a resend the new ones", p, dt * 1e6, n0, notsent);
	free(rx);
	free(old);
	close(cli);
	close(srv);
	zc_close(&z);
	return 0;
}

static int t_misuse(void)
{
	struct zc z;
	struct zcopy_send sd;
	struct zcopy_range rg;
	struct iovec iov[ZCOPY_IOV_MAX + 1];
	int cli, srv, devnull = open("/dev/null", O_RDWR | O_CLOEXEC), r = zc_open(&z, 8 * PG, 0);
	void *none;

	CHECK(r == 0, "zc_open: %s", strerror(-r));
	CHECK(tcp_pair(&cli, &srv, 0, 0) == 0, "tcp_pair");
	none = mmap(NULL, PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i <= ZCOPY_IOV_MAX; i++)
		iov[i] = (struct iovec){ z.arena, 1 };

#define SEND_ERR(err, ...)                                                      \
	do {                                                                    \
		memset(&sd, 0, sizeof(sd));                                     \
		sd.fd = cli;                                                    \
		sd.iovcnt = 1;                                                  \
		sd.iov = (uintptr_t)iov;                                        \
		__VA_ARGS__;                                                    \
		errno = 0;                                                      \
		CHECK(ioctl(z.fd, ZCOPY_IOC_SEND, &sd) == -1 && errno == err,   \
		      #__VA_ARGS__ ": errno %d (%s), want %s", errno,           \
		      strerror(errno), #err);                                   \
	} while (0)

	SEND_ERR(EBADF, sd.fd = -1);
	SEND_ERR(EBADF, sd.fd = 987654);
	SEND_ERR(ENOTSOCK, sd.fd = devnull);
	SEND_ERR(ENOTSOCK, sd.fd = z.fd);
	SEND_ERR(EINVAL, sd.iovcnt = 0);
	SEND_ERR(EINVAL, sd.iovcnt = ZCOPY_IOV_MAX + 1);
	SEND_ERR(EINVAL, sd.iovcnt = 0xffffffffu);
	SEND_ERR(EINVAL, sd.flags = 0x80000000u);
	SEND_ERR(EINVAL, sd.reserved = 1);
	SEND_ERR(EINVAL, sd.msg_flags = MSG_OOB);
	SEND_ERR(EINVAL, sd.msg_flags = MSG_ZEROCOPY);
	SEND_ERR(EINVAL, sd.addr = (uintptr_t)&sd; sd.addrlen = 0);
	SEND_ERR(EINVAL, sd.addr = (uintptr_t)&sd; sd.addrlen = 4096);
	SEND_ERR(EINVAL, sd.addr = 0; sd.addrlen = 16);
	SEND_ERR(EFAULT, sd.addr = (uintptr_t)none; sd.addrlen = 16);
	SEND_ERR(EFAULT, sd.iov = 0);
	SEND_ERR(EFAULT, sd.iov = (uintptr_t)none);
	SEND_ERR(EFAULT, sd.iov = 0xffffffff81000000ull);
	SEND_ERR(EFAULT, iov[0].iov_base = none; iov[0].iov_len = 10);
	SEND_ERR(EFAULT, iov[0].iov_base = NULL; iov[0].iov_len = 10);
	SEND_ERR(EINVAL, iov[0].iov_base = (void *)-2L; iov[0].iov_len = 10);	/* wraps */
	SEND_ERR(EINVAL, iov[0].iov_base = z.arena; iov[0].iov_len = 1ul << 40);
	iov[0] = (struct iovec){ z.arena, 1 };
	/* the caller's struct itself unreadable / out fields unwritable */
	CHECK(ioctl(z.fd, ZCOPY_IOC_SEND, NULL) == -1 && errno == EFAULT, "NULL");
	CHECK(ioctl(z.fd, ZCOPY_IOC_SEND, none) == -1 && errno == EFAULT, "PROT_NONE");
	{
		/* readable but read-only struct: refused before anything is sent */
		struct zcopy_send *ro = mmap(NULL, PG, PROT_READ | PROT_WRITE,
					     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		memset(ro, 0, sizeof(*ro));
		ro->fd = cli;
		ro->iovcnt = 1;
		ro->iov = (uintptr_t)iov;
		mprotect(ro, PG, PROT_READ);
		CHECK(ioctl(z.fd, ZCOPY_IOC_SEND, ro) == -1 && errno == EFAULT, "read-only struct");
		munmap(ro, PG);
		int avail = 0;

		usleep(20000);
		CHECK(ioctl(srv, FIONREAD, &avail) == 0 && avail == 0, "%d bytes were sent", avail);
	}

	/* SEAL/UNSEAL ranges */
#define RANGE_ERR(cmd, err, ...)                                                 \
	do {                                                                     \
		memset(&rg, 0, sizeof(rg));                                      \
		rg.length = PG;                                                  \
		__VA_ARGS__;                                                     \
		CHECK(ioctl(z.fd, cmd, &rg) == -1 && errno == err,               \
		      #cmd " " #__VA_ARGS__ ": %s", strerror(errno));            \
	} while (0)
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.offset = 8 * PG);
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.offset = 7 * PG; rg.length = 2 * PG);
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.length = 0);
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.offset = 1);
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.length = PG + 1);
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.offset = PG; rg.length = ~0ull & ~(uint64_t)(PG - 1));
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.offset = ~0ull & ~(uint64_t)(PG - 1));
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.flags = 1);
	RANGE_ERR(ZCOPY_IOC_SEAL, EINVAL, rg.reserved = 1);
	RANGE_ERR(ZCOPY_IOC_UNSEAL, EINVAL, rg.offset = 8 * PG);
	RANGE_ERR(ZCOPY_IOC_UNSEAL, EINVAL, rg.flags = 2);
	CHECK(ioctl(z.fd, ZCOPY_IOC_SEAL, NULL) == -1 && errno == EFAULT, "NULL range");

	/* unknown ioctls */
	CHECK(ioctl(z.fd, _IO(ZCOPY_IOC_MAGIC, 0x7f)) == -1 && errno == ENOTTY, "unknown nr");
	CHECK(ioctl(z.fd, _IOR(ZCOPY_IOC_MAGIC, 0x00, uint32_t), &rg) == -1 && errno == ENOTTY,
	      "INFO with a wrong size");
	CHECK(ioctl(z.fd, _IOW('q', 0x02, struct zcopy_range), &rg) == -1 && errno == ENOTTY,
	      "wrong magic");
	CHECK(ioctl(z.fd, 0) == -1 && errno == ENOTTY, "cmd 0");

	/* a context without SETUP */
	{
		int fd2 = open(ZCOPY_DEVICE_PATH, O_RDWR | O_CLOEXEC);

		memset(&sd, 0, sizeof(sd));
		sd.fd = cli;
		sd.iovcnt = 1;
		sd.iov = (uintptr_t)iov;
		CHECK(ioctl(fd2, ZCOPY_IOC_SEND, &sd) == -1 && errno == EINVAL, "send before setup");
		memset(&rg, 0, sizeof(rg));
		rg.length = PG;
		CHECK(ioctl(fd2, ZCOPY_IOC_SEAL, &rg) == -1 && errno == EINVAL, "seal before setup");
		close(fd2);
	}
	/* the arena of another context is only copied, never referenced */
	{
		struct zc z2;
		struct zcopy_send out;
		struct iovec v;

		CHECK(zc_open(&z2, 4 * PG, 0) == 0, "z2");
		memset(z2.arena, 0x3c, PG);
		CHECK(zc_range(&z2, ZCOPY_IOC_SEAL, 0, PG) == 0, "seal z2");
		v = (struct iovec){ z2.arena, PG };
		CHECK(zc_sendv(&z, cli, &v, 1, 0, NULL, 0, &out) == PG, "send z2 arena via z");
		CHECK(out.zc_bytes == 0 && out.copied_bytes == PG, "foreign arena was referenced");
		uint8_t b[PG];

		CHECK(recv_all(srv, b, PG, 10) == PG && b[0] == 0x3c && b[PG - 1] == 0x3c, "bytes");
		zc_close(&z2);
	}
	/* nothing is in flight after all that */
	CHECK(zc_wait_idle(&z, 10) == 0, "idle");
	munmap(none, PG);
	close(devnull);
	close(cli);
	close(srv);
	zc_close(&z);
	return 0;
}

static int t_fuzz(void)
{
	long calls = 0, iters = getenv("ZC_FUZZ_CALLS") ? atol(getenv("ZC_FUZZ_CALLS")) : 3000;
	int r = fuzz_run(iters, 0x1234567ull, &calls, 0);

	CHECK(r == 0, "fuzz failed after %ld calls", calls);
	CHECK(calls == iters, "%ld of %ld calls", calls, iters);
	note("fuzz: %ld ioctl calls", calls);
	return 0;
}

/* hold a send in flight: a TCP receiver with a tiny buffer that does not read */
static int inflight_ctx(struct zc *z, int *cli, int *srv, size_t size, ssize_t *sent)
{
	struct iovec iov;
	int r = zc_open(z, size, 0);

	if (r)
		return r;
	if (tcp_pair(cli, srv, 4096, 1 << 20))
		return -EIO;
	fill(z->arena, 0, size, 11);
	if (zc_range(z, ZCOPY_IOC_SEAL, 0, size))
		return -EIO;
	iov = (struct iovec){ z->arena, size };
	*sent = zc_sendv(z, *cli, &iov, 1, MSG_DONTWAIT, NULL, 0, NULL);
	return *sent > 0 ? 0 : -EIO;
}

static void drain_close(int cli, int srv, size_t n)
{
	uint8_t *b = malloc(n ? n : 1);

	recv_all(srv, b, n, 20);
	free(b);
	close(cli);
	close(srv);
}

static long modref(void)
{
	return fz_modref();
}

/* a process exits (no close, no munmap) with a send in flight: its pages
 * are released once the send completes */
static int t_exit_inflight(void)
{
	int cli, srv, st = 0;
	long refs;
	pid_t pid;
	uint8_t *b;

	CHECK(fz_wait_module_idle(5) == 0, "module busy before the test");
	CHECK(tcp_pair(&cli, &srv, 4096, 1 << 20) == 0, "tcp_pair");
	pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		struct zc z;
		struct iovec iov;

		if (zc_open(&z, 128 * PG, 0))
			_exit(2);
		fill(z.arena, 0, z.size, 13);
		if (zc_range(&z, ZCOPY_IOC_SEAL, 0, z.size))
			_exit(3);
		iov = (struct iovec){ z.arena, z.size };
		_exit(zc_sendv(&z, cli, &iov, 1, MSG_DONTWAIT, NULL, 0, NULL) > 0 ? 0 : 4);
	}
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "child status %#x", st);
	refs = fz_send_refs();
	CHECK(refs > 0, "send_refs %ld after the exit: nothing was in flight", refs);
	CHECK(modref() > 0, "module refcnt 0 with a send in flight");
	b = malloc(128 * PG);
	recv_all(srv, b, 128 * PG, 1);	/* whatever was accepted */
	free(b);
	close(cli);
	close(srv);
	CHECK(fz_wait_module_idle(10) == 0, "refcnt %ld pages_owned %ld send_refs %ld after the peer read",
	      modref(), fz_pages_owned(), fz_send_refs());
	note("exit: %ld page references in flight after the process exited, all released after the read",
	     refs);
	return 0;
}

static int t_close_inflight_rmmod(void)
{
	struct zc z;
	int cli, srv, r;
	ssize_t sent;
	long ref;

	if (!getenv("ZCOPY_KO"))
		SKIP("ZCOPY_KO not set: cannot reload the module");
	CHECK(fz_wait_module_idle(5) == 0, "module busy before the test (refcnt %ld)", modref());
	r = inflight_ctx(&z, &cli, &srv, 128 * PG, &sent);
	CHECK(r == 0, "setup: %d", r);
	CHECK(LD(z.st->pages_inflight) > 0, "nothing in flight");
	zc_close(&z);	/* munmap + close with the send in flight */
	CHECK(fz_send_refs() > 0, "send_refs %ld with a send in flight", fz_send_refs());
	ref = modref();
	CHECK(ref > 0, "module refcnt %ld with a send in flight after close", ref);
	r = del_module();
	CHECK(r == -EWOULDBLOCK || r == -EBUSY || r == -EAGAIN, "rmmod with a send in flight: %d", r);
	CHECK(access(ZCOPY_DEVICE_PATH, F_OK) == 0, "device gone");
	/* the peer reads: the send completes, the context goes, rmmod works */
	drain_close(cli, srv, (size_t)sent);
	CHECK(fz_wait_module_idle(5) == 0, "refcnt %ld pages_owned %ld send_refs %ld after the send completed",
	      modref(), fz_pages_owned(), fz_send_refs());
	r = del_module();
	CHECK(r == 0, "rmmod after completion: %s", strerror(-r));
	CHECK(access("/sys/module/zcopy", F_OK) != 0, "module still there");
	r = load_module();
	CHECK(r == 0, "reload: %s", strerror(-r));
	CHECK(access(ZCOPY_DEVICE_PATH, F_OK) == 0, "no device after reload");
	return 0;
}

static void settle(void)
{
	fz_settle();
}

static int t_leak(void)
{
	long before = 0, after;
	int i, r;

	if (!getenv("ZCOPY_KO"))
		SKIP("ZCOPY_KO not set: cannot unload the module");
	/* warm up socket and slab caches once */
	for (i = 0; i < 2; i++) {
		struct zc z;
		int cli, srv;
		ssize_t sent;

		settle();
		if (i == 1)
			before = free_kb();
		for (int round = 0; round < 4; round++) {
			r = inflight_ctx(&z, &cli, &srv, 1024 * PG, &sent);
			CHECK(r == 0, "round %d: %d", round, r);
			/* copy-on-write of a few in-flight pages */
			for (size_t p = 0; p < 1024; p += 97)
				z.arena[p * PG] ^= 1;
			if (i == 1 && round == 3)
				note("leak: free %ld kB with the last arena mapped and in flight",
				     free_kb());
			zc_close(&z);
			drain_close(cli, srv, (size_t)sent);
		}
		CHECK(fz_wait_module_idle(5) == 0, "refcnt %ld pages_owned %ld send_refs %ld", modref(),
		      fz_pages_owned(), fz_send_refs());
	}
	r = del_module();
	CHECK(r == 0, "rmmod: %s", strerror(-r));
	settle();
	after = free_kb();
	r = load_module();
	CHECK(r == 0, "reload: %s", strerror(-r));
	note("leak: free memory (MemFree + per-CPU lists) %ld kB before, %ld kB after"
	     " 4 x 4 MiB arenas closed in flight + rmmod", before, after);
	CHECK(after >= before - before / 100, "free memory dropped by %ld kB (> 1%%)", before - after);
	return 0;
}

/* two threads write, seal and send their own pages over their own TCP
 * connections, each with a reader thread that checks every 4 KiB record
 * is one whole version of a page (never torn, never a later version
 * written while the page was in flight: copy-on-write) */
struct stress {
	struct zc *z;
	int tx, rx;
	unsigned int first, npages, iters, id;
	double deadline;	/* after iters, go on until a copy-on-write, or this */
	long sent, got, torn;
	int err;
};

static void *stress_sender(void *arg)
{
	struct stress *a = arg;

	/* whether a write finds its page still in flight is up to the
	 * scheduler (a slow TCG guest can run 150 rounds without one) */
	for (unsigned int it = 0; !a->err && (it < a->iters || (LD(a->z->st->cow_faults) == 0 &&
								 now_s() < a->deadline));
	     it++) {
		for (unsigned int k = 0; k < a->npages; k++) {
			size_t pg = a->first + k;
			uint8_t v = (uint8_t)(it * 7 + k * 3 + a->id * 101);
			uint8_t *p = a->z->arena + pg * PG;
			struct iovec iov = { p, PG };
			ssize_t n;

			memset(p, v, PG);	/* unseals, or copies an in-flight page */
			if (zc_range(a->z, (it % 5 == 4) ? ZCOPY_IOC_UNSEAL : ZCOPY_IOC_SEAL, pg * PG, PG))
				a->err = 1;
			n = zc_sendv(a->z, a->tx, &iov, 1, 0, NULL, 0, NULL);
			if (n == PG)
				a->sent++;
			else
				a->err = 2;
		}
	}
	shutdown(a->tx, SHUT_WR);
	return NULL;
}

static void *stress_receiver(void *arg)
{
	struct stress *a = arg;
	static __thread uint8_t b[PG];
	double t0 = now_s();

	for (;;) {
		ssize_t n = recv_all(a->rx, b, PG, 30 - (now_s() - t0));

		if (n != PG)
			break;
		a->got++;
		for (size_t i = 1; i < PG; i++)
			if (b[i] != b[0]) {
				a->torn++;
				break;
			}
	}
	return NULL;
}

static int t_stress(void)
{
	struct zc z;
	struct stress a[2];
	pthread_t th[4];
	int r = zc_open(&z, 64 * PG, 0);
	double t0 = now_s();

	CHECK(r == 0, "zc_open: %s", strerror(-r));
	for (int i = 0; i < 2; i++) {
		a[i] = (struct stress){ .z = &z, .first = (unsigned int)i * 8, .npages = 8,
					.iters = 150, .deadline = t0 + 20, .id = (unsigned int)i };
		if (tcp_pair(&a[i].tx, &a[i].rx, 8192, 32768)) {
			zc_close(&z);	/* the tests after this one need the module idle */
			CHECK(0, "tcp_pair");
		}
	}
	for (int i = 0; i < 2; i++) {
		pthread_create(&th[2 + i], NULL, stress_receiver, &a[i]);
		pthread_create(&th[i], NULL, stress_sender, &a[i]);
	}
	/* meanwhile this thread reads the pages (read faults after each seal) */
	for (int k = 0; k < 20000 && (now_s() - t0) < 30; k++)
		(void)*(volatile uint8_t *)(z.arena + (size_t)(k % 16) * PG + (size_t)k % PG);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	bool idle = zc_wait_idle(&z, 10) == 0;
	uint64_t cow = LD(z.st->cow_faults), unseal = LD(z.st->unseal_faults);
	for (int i = 0; i < 2; i++) {
		close(a[i].tx);
		close(a[i].rx);
	}
	/* released before judging: the tests after this one need the module idle */
	zc_close(&z);
	CHECK(idle, "sends did not complete");
	for (int i = 0; i < 2; i++) {
		CHECK(a[i].err == 0, "sender %d error %d", i, a[i].err);
		CHECK(a[i].torn == 0, "connection %d: %ld torn records", i, a[i].torn);
		CHECK(a[i].got == a[i].sent, "connection %d: got %ld of %ld records", i, a[i].got,
		      a[i].sent);
	}
	CHECK(cow > 0, "no copy-on-write happened in %.1f s: the stress missed its aim",
	      now_s() - t0);
	note("stress: 2 writer/sender threads, %ld records received whole, cow %" PRIu64
	     " unseal %" PRIu64 " in %.2f s", a[0].got + a[1].got, cow, unseal, now_s() - t0);
	return 0;
}

struct test {
	const char *name;
	int (*fn)(void);
};

static const struct test tests[] = {
	{ "info", t_info },
	{ "setup", t_setup },
	{ "mmap", t_mmap },
	{ "seal_write_idle", t_seal_write_idle },
	{ "send_tcp", t_send_tcp },
	{ "send_udp", t_send_udp },
	{ "send_nonblock", t_send_nonblock },
	{ "cow_inflight", t_cow_inflight },
	{ "misuse", t_misuse },
	{ "stress", t_stress },
	{ "fuzz", t_fuzz },
	{ "exit_inflight", t_exit_inflight },
	{ "close_inflight_rmmod", t_close_inflight_rmmod },
	{ "leak", t_leak },
};

int main(int argc, char **argv)
{
	int n = (int)(sizeof(tests) / sizeof(tests[0])), pass = 0, fail = 0, skip = 0;
	bool present = access(ZCOPY_DEVICE_PATH, F_OK) == 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	printf("1..%d\n", n);
	for (int i = 0; i < n; i++) {
		int r;
		double t0 = now_s();

		if (argc > 1 && !strstr(argv[1], tests[i].name)) {
			r = 1;
			snprintf(reason, sizeof(reason), "not selected");
		} else if (!present) {
			r = 1;
			snprintf(reason, sizeof(reason), "%s missing (module not loaded)", ZCOPY_DEVICE_PATH);
		} else {
			reason[0] = 0;
			r = tests[i].fn();
		}
		if (r == 0) {
			pass++;
			printf("ok %d - %s (%.2f s)\n", i + 1, tests[i].name, now_s() - t0);
		} else if (r > 0) {
			skip++;
			printf("ok %d - %s # SKIP %s\n", i + 1, tests[i].name, reason);
		} else {
			fail++;
			printf("not ok %d - %s # %s\n", i + 1, tests[i].name, reason);
		}
	}
	printf("kmod_selftest: %d passed, %d failed, %d skipped\n", pass, fail, skip);
	return fail ? 1 : 0;
}
