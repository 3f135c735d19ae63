/*
 * kmod_fuzz.c - ioctl fuzzer for /dev/zcopy (runs inside the test VM).
 *
 *   kmod_fuzz [CALLS [SEED]]     default 100000 calls, seed from the clock
 *
 * Random and boundary arguments for every ioctl of the module (and for
 * random ioctl numbers), with good, unmapped, read-only and kernel
 * pointers, random socket and non-socket fds, writes to the arena while
 * pages are sealed or in flight, and contexts closed with sends in flight.
 * Every socket is non-blocking, so no call can hang.  Passes when nothing
 * crashed, the module returned only documented results, every context is
 * gone afterwards (/sys/module/zcopy/refcnt back to its start value) and
 * MemFree is back within 1%.  Ends with "kmod_fuzz: 1 passed, 0 failed".
 *
 * kmod_selftest.c includes this file with KMOD_FUZZ_NO_MAIN for a short run.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include "uapi/zcopy_kmod.h"

#define FZ_ARENA (64u * 1024u)

static uint64_t fz_rng;

static uint64_t fz_rand(void)
{
	fz_rng ^= fz_rng << 13;
	fz_rng ^= fz_rng >> 7;
	fz_rng ^= fz_rng << 17;
	return fz_rng;
}

static uint64_t fz_below(uint64_t n)
{
	return n ? fz_rand() % n : 0;
}

static double fz_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* interesting 64-bit values */
static uint64_t fz_u64(void)
{
	static const uint64_t v[] = {
		0, 1, 2, 4095, 4096, 4097, 8192, FZ_ARENA - 1, FZ_ARENA, FZ_ARENA + 4096,
		1u << 20, 16u << 20, (16u << 20) + 1, 0x7fffffff, 0x80000000, 0xffffffff,
		0x100000000ull, 1ull << 40, (1ull << 40) + 4096, 0x7fffffffffffffffull,
		0x8000000000000000ull, 0xfffffffffffff000ull, 0xffffffffffffffffull,
	};

	switch (fz_below(4)) {
	case 0: return fz_rand();
	case 1: return fz_below(FZ_ARENA * 2);
	default: return v[fz_below(sizeof(v) / sizeof(v[0]))];
	}
}

static uint32_t fz_u32(void)
{
	static const uint32_t v[] = { 0, 1, 2, 11, 12, 13, 30, 31, 64, 1023, 1024, 1025,
				      4096, 0x7fffffff, 0x80000000, 0xffffffff };

	return fz_below(3) ? v[fz_below(sizeof(v) / sizeof(v[0]))] : (uint32_t)fz_rand();
}

struct fz_env {
	int zfd[2];		/* [0] set up + mapped, [1] maybe not */
	uint8_t *arena;
	void *status;
	size_t status_size;
	int udp_tx, udp_rx, tcp_tx, tcp_rx, nullfd;
	struct sockaddr_in udp_addr;
	uint8_t *buf;		/* 4 pages, writable scratch for arguments */
	uint8_t *ro;		/* read-only page */
	uint8_t *none;		/* PROT_NONE page */
	uint8_t *edge;		/* last bytes of buf before `none` */
	long calls, sends_ok, errors_bad;
};

static int fz_open_ctx(struct fz_env *e)
{
	struct zcopy_setup su;

	e->zfd[0] = open(ZCOPY_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	if (e->zfd[0] < 0)
		return -1;
	memset(&su, 0, sizeof(su));
	su.arena_size = FZ_ARENA;
	if (ioctl(e->zfd[0], ZCOPY_IOC_SETUP, &su))
		return -1;
	e->arena = mmap(NULL, FZ_ARENA, PROT_READ | PROT_WRITE, MAP_SHARED, e->zfd[0],
			(off_t)su.arena_offset);
	if (e->arena == MAP_FAILED)
		return -1;
	e->status_size = su.status_size;
	e->status = mmap(NULL, su.status_size, PROT_READ, MAP_SHARED, e->zfd[0],
			 (off_t)su.status_offset);
	if (e->status == MAP_FAILED)
		return -1;
	memset(e->arena, 0x5a, FZ_ARENA);
	e->zfd[1] = open(ZCOPY_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	return e->zfd[1] < 0 ? -1 : 0;
}

static void fz_close_ctx(struct fz_env *e)
{
	munmap(e->arena, FZ_ARENA);
	munmap(e->status, e->status_size);
	close(e->zfd[0]);
	close(e->zfd[1]);
}

static int fz_setup(struct fz_env *e)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int l;

	memset(e, 0, sizeof(*e));
	e->buf = mmap(NULL, 6 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (e->buf == MAP_FAILED)
		return -1;
	e->ro = e->buf + 4 * 4096;
	e->none = e->buf + 5 * 4096;
	if (mprotect(e->ro, 4096, PROT_READ) || mprotect(e->none, 4096, PROT_NONE))
		return -1;
	e->edge = e->ro - 8;
	if (fz_open_ctx(e))
		return -1;
	e->nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);

	e->udp_rx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(e->udp_rx, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(e->udp_rx, (struct sockaddr *)&a, &al))
		return -1;
	e->udp_addr = a;
	e->udp_tx = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	if (connect(e->udp_tx, (struct sockaddr *)&a, sizeof(a)))
		return -1;

	l = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_port = 0;
	al = sizeof(a);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &al))
		return -1;
	e->tcp_tx = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(e->tcp_tx, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	e->tcp_rx = accept4(l, NULL, NULL, SOCK_NONBLOCK);
	close(l);
	if (e->tcp_rx < 0)
		return -1;
	fcntl(e->tcp_tx, F_SETFL, O_NONBLOCK);
	return 0;
}

static void fz_drain(struct fz_env *e)
{
	static char sink[65536];
	int i;

	for (i = 0; i < 64 && recv(e->udp_rx, sink, sizeof(sink), MSG_DONTWAIT) >= 0; i++)
		;
	for (i = 0; i < 256 && recv(e->tcp_rx, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
}

static void fz_teardown(struct fz_env *e)
{
	fz_drain(e);
	fz_close_ctx(e);
	close(e->udp_rx);
	close(e->udp_tx);
	close(e->tcp_tx);
	/* read what is left so every send completes */
	for (int i = 0; i < 2000; i++) {
		char sink[65536];
		ssize_t n = recv(e->tcp_rx, sink, sizeof(sink), MSG_DONTWAIT);

		if (n == 0 || (n < 0 && errno != EAGAIN))
			break;
		if (n < 0)
			usleep(1000);
	}
	close(e->tcp_rx);
	close(e->nullfd);
	munmap(e->buf, 6 * 4096);
}

static void *fz_ptr(struct fz_env *e, size_t need)
{
	switch (fz_below(12)) {
	case 0: return NULL;
	case 1: return e->none;
	case 2: return e->ro;
	case 3: return (void *)0xffffffff81000000ull;
	case 4: return e->ro - need / 2;	/* straddles into read-only */
	case 5: return (void *)(uintptr_t)fz_rand();
	default: return e->buf;
	}
}

static uint64_t fz_data_ptr(struct fz_env *e)
{
	switch (fz_below(10)) {
	case 0: return 0;
	case 1: return (uintptr_t)e->none;
	case 2: return (uintptr_t)e->ro + fz_below(4096);
	case 3: return 0xffffffff81000000ull;
	case 4: return (uintptr_t)e->buf + fz_below(8192);
	case 5: return fz_rand();
	default: return (uintptr_t)e->arena + fz_below(FZ_ARENA + 8192) - 4096;
	}
}

static int fz_fd(struct fz_env *e)
{
	switch (fz_below(10)) {
	case 0: return -1;
	case 1: return 9999;
	case 2: return e->nullfd;
	case 3: return e->zfd[0];
	case 4: return e->tcp_tx;
	case 5: return e->tcp_rx;
	case 6: return e->udp_rx;
	default: return e->udp_tx;
	}
}

static unsigned long fz_cmd(void)
{
	static const unsigned long valid[] = { ZCOPY_IOC_INFO, ZCOPY_IOC_SETUP, ZCOPY_IOC_SEAL,
					       ZCOPY_IOC_UNSEAL, ZCOPY_IOC_SEND };
	unsigned int type;

	switch (fz_below(10)) {
	case 0: /* our magic, random number, direction and size */
		return _IOC(fz_below(4), ZCOPY_IOC_MAGIC, fz_below(16), fz_below(200));
	case 1: /* random type, but no generic VFS/fs/tty/block ioctls */
		do
			type = fz_below(256);
		while (type == 'X' || type == 'f' || type == 'T' || type == 0x94 ||
		       type == 0x12);
		return _IOC(fz_below(4), type, fz_below(256), fz_below(512));
	default:
		return valid[fz_below(5)];
	}
}

/* one random call; returns 0, or -1 if the result breaks the ABI rules */
static int fz_one(struct fz_env *e)
{
	unsigned long cmd = fz_cmd();
	int fd = fz_below(10) < 8 ? e->zfd[0] : fz_below(2) ? e->zfd[1] : fz_fd(e);
	uint8_t *b = e->buf;
	void *arg;
	long r;

	memset(b, 0, 8192);
	if (cmd == ZCOPY_IOC_SETUP) {
		struct zcopy_setup *s = (void *)b;

		s->flags = fz_below(4) ? 0 : fz_u32();
		s->block_shift = fz_below(2) ? 0 : fz_u32();
		s->arena_size = fz_u64();
		s->reserved = fz_below(4) ? 0 : fz_u32();
	} else if (cmd == ZCOPY_IOC_SEAL || cmd == ZCOPY_IOC_UNSEAL) {
		struct zcopy_range *s = (void *)b;

		s->flags = fz_below(8) ? 0 : fz_u32();
		s->reserved = fz_below(8) ? 0 : fz_u32();
		s->offset = fz_below(2) ? fz_below(FZ_ARENA / 4096) * 4096 : fz_u64();
		s->length = fz_below(2) ? (1 + fz_below(FZ_ARENA / 4096)) * 4096 : fz_u64();
	} else if (cmd == ZCOPY_IOC_SEND) {
		struct zcopy_send *s = (void *)b;
		struct zcopy_iovec *iov = (void *)(b + 4096);
		unsigned int i, n = fz_below(4) ? 1 + fz_below(6) : fz_u32();

		s->flags = fz_below(6) ? 0 : fz_u32();
		s->fd = fz_below(6) ? e->udp_tx : fz_below(2) ? e->tcp_tx : fz_fd(e);
		s->msg_flags = fz_below(4) ? MSG_DONTWAIT : fz_below(2) ? 0 : fz_u32();
		s->iovcnt = n;
		s->iov = (uintptr_t)iov;
		if (!fz_below(10))
			s->iov = (uintptr_t)fz_ptr(e, 16);
		for (i = 0; i < 256; i++) {
			iov[i].base = fz_data_ptr(e);
			iov[i].len = fz_below(3) ? fz_below(9000) : fz_u64();
		}
		if (fz_below(2)) {	/* a well-formed send, so the send path runs often */
			s->flags = 0;
			s->reserved = 0;
			s->fd = fz_below(3) ? e->udp_tx : e->tcp_tx;
			s->msg_flags = MSG_DONTWAIT;
			s->iovcnt = 1 + (uint32_t)fz_below(4);
			s->iov = (uintptr_t)iov;
			s->addr = 0;
			s->addrlen = 0;
			for (i = 0; i < s->iovcnt; i++) {
				uint64_t len = fz_below(3000), off = fz_below(FZ_ARENA - len);

				iov[i].base = fz_below(4) ? (uintptr_t)e->arena + off
							  : (uintptr_t)e->buf + fz_below(4096);
				iov[i].len = len;
			}
		}
		if (!fz_below(8)) {
			memcpy(b + 2048, &e->udp_addr, sizeof(e->udp_addr));
			s->addr = fz_below(4) ? (uintptr_t)(b + 2048) : fz_data_ptr(e);
			s->addrlen = fz_below(2) ? sizeof(e->udp_addr) : fz_u32();
		}
		s->reserved = fz_below(10) ? 0 : fz_u32();
	} else {
		for (int i = 0; i < 512; i++)
			b[i] = (uint8_t)(fz_below(2) ? 0 : fz_rand());
	}
	arg = fz_below(10) ? (void *)b : fz_ptr(e, 64);
	/* random ioctl numbers only on zcopy fds (a socket would take some) */
	if (fd != e->zfd[0] && fd != e->zfd[1] && (cmd >> 8 & 0xff) != ZCOPY_IOC_MAGIC)
		cmd = ZCOPY_IOC_INFO;

	r = ioctl(fd, cmd, arg);
	e->calls++;
	if (cmd == ZCOPY_IOC_SEND && r >= 0 && (fd == e->zfd[0] || fd == e->zfd[1]))
		e->sends_ok++;
	/* ABI rules: non-SEND calls return 0 or -1; SEND at most ZCOPY_SEND_MAX */
	if (fd == e->zfd[0] || fd == e->zfd[1]) {
		if (cmd != ZCOPY_IOC_SEND && r != 0 && r != -1) {
			fprintf(stderr, "kmod_fuzz: cmd %#lx returned %ld\n", cmd, r);
			return -1;
		}
		if (cmd == ZCOPY_IOC_SEND && r > (long)ZCOPY_SEND_MAX) {
			fprintf(stderr, "kmod_fuzz: SEND returned %ld\n", r);
			return -1;
		}
		if (r == -1 && cmd != ZCOPY_IOC_SEND && errno != EINVAL && errno != EFAULT &&
		    errno != ENOTTY && errno != EBUSY && errno != ENOMEM && errno != EPERM) {
			fprintf(stderr, "kmod_fuzz: cmd %#lx errno %d (%s)\n", cmd, errno, strerror(errno));
			return -1;
		}
	}
	/* writes to the arena: unseal faults and copy-on-write of pages in flight */
	if (!fz_below(16))
		e->arena[fz_below(FZ_ARENA)] ^= (uint8_t)fz_rand();
	return 0;
}

static long fz_meminfo(const char *key)
{
	char line[256];
	long v = -1;
	size_t kl = strlen(key);
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

/*
 * Free memory in kB: MemFree plus the pages parked in the per-CPU free lists
 * (/proc/zoneinfo "count:"), which MemFree does not include and which can
 * hold tens of MB after a burst of frees (auto-tuned since 6.7).
 */
static long fz_free_kb(void)
{
	char line[256];
	long pcp = 0, mf;
	FILE *f;
	int fd = open("/proc/sys/vm/stat_refresh", O_WRONLY);

	if (fd >= 0) {	/* fold the per-CPU vmstat deltas */
		if (write(fd, "1", 1) < 0)
			perror("stat_refresh");
		close(fd);
	}
	mf = fz_meminfo("MemFree");
	f = fopen("/proc/zoneinfo", "r");
	if (!f)
		return mf;
	while (fgets(line, sizeof(line), f)) {
		char *p = line;

		while (*p == ' ' || *p == '\t')
			p++;
		if (!strncmp(p, "count:", 6))
			pcp += strtol(p + 6, NULL, 10);
	}
	fclose(f);
	return mf + pcp * (sysconf(_SC_PAGESIZE) / 1024);
}

static long fz_sysfs_long(const char *path)
{
	char b[32] = "";
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, b, sizeof(b) - 1);
	close(fd);
	return n > 0 ? strtol(b, NULL, 10) : -1;
}

static long fz_modref(void)
{
	return fz_sysfs_long("/sys/module/zcopy/refcnt");
}

/* module-wide leak counters (0 when no context exists) */
static long fz_pages_owned(void)
{
	return fz_sysfs_long("/sys/module/zcopy/parameters/pages_owned");
}

static long fz_send_refs(void)
{
	return fz_sysfs_long("/sys/module/zcopy/parameters/send_refs");
}

/* wait (at most limit_s) until no context of this module is left */
static int fz_wait_module_idle(double limit_s)
{
	double t0 = fz_now();

	while (fz_modref() != 0 || fz_pages_owned() != 0 || fz_send_refs() != 0) {
		if (fz_now() - t0 > limit_s)
			return -1;
		usleep(5000);
	}
	return 0;
}

static void fz_settle(void)
{
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);

	sync();
	if (fd >= 0) {
		if (write(fd, "3", 1) < 0)
			perror("drop_caches");
		close(fd);
	}
	usleep(200000);
}

/* Returns 0 on success.  *calls gets the number of ioctls made. */
static int fuzz_run(long iters, uint64_t seed, long *calls, int verbose)
{
	struct fz_env e;
	long i, ref0, ref1 = -1;
	int bad = 0;
	double t0 = fz_now();

	fz_rng = seed ? seed : 0x9e3779b97f4a7c15ull;
	/* contexts closed just before may still be finishing their sends */
	fz_wait_module_idle(5);
	ref0 = fz_modref();
	if (fz_setup(&e)) {
		perror("kmod_fuzz: setup");
		return -1;
	}
	for (i = 0; i < iters && !bad; i++) {
		if (fz_one(&e))
			bad = 1;
		if ((i & 63) == 63)
			fz_drain(&e);
		if (i % 5000 == 4999) {		/* close with sends in flight */
			fz_close_ctx(&e);
			if (fz_open_ctx(&e)) {
				perror("kmod_fuzz: reopen");
				bad = 1;
			}
		}
		if (fz_now() - t0 > 600) {
			fprintf(stderr, "kmod_fuzz: time limit after %ld calls\n", i);
			break;
		}
	}
	*calls = e.calls;
	fz_teardown(&e);
	/* every context must go away once its sends complete */
	for (i = 0; i < 500; i++) {
		ref1 = fz_modref();
		if (ref1 == ref0)
			break;
		usleep(10000);
	}
	if (ref1 != ref0) {
		fprintf(stderr, "kmod_fuzz: module refcnt %ld, was %ld\n", ref1, ref0);
		bad = 1;
	}
	if (ref0 == 0 && fz_wait_module_idle(5)) {
		fprintf(stderr, "kmod_fuzz: pages_owned %ld send_refs %ld after all contexts closed\n",
			fz_pages_owned(), fz_send_refs());
		bad = 1;
	}
	if (verbose)
		printf("kmod_fuzz: %ld calls (%ld sends accepted) in %.1f s, seed %#" PRIx64 "\n",
		       e.calls, e.sends_ok, fz_now() - t0, seed);
	return bad ? -1 : 0;
}

#ifndef KMOD_FUZZ_NO_MAIN
int main(int argc, char **argv)
{
	long iters = argc > 1 ? strtol(argv[1], NULL, 0) : 100000;
	uint64_t seed = argc > 2 ? strtoull(argv[2], NULL, 0) : (uint64_t)time(NULL) * 2654435761u;
	long calls = 0, free0, free1;
	int ok;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (access(ZCOPY_DEVICE_PATH, F_OK)) {
		printf("kmod_fuzz: SKIP: %s missing\n", ZCOPY_DEVICE_PATH);
		printf("kmod_fuzz: 0 passed, 0 failed, 1 skipped\n");
		return 0;
	}
	static const char *keys[] = { "MemFree", "Cached", "Shmem", "AnonPages", "Slab", "SUnreclaim",
				      "KernelStack", "PageTables", "VmallocUsed", "Percpu" };
	long m0[10], m1[10];

	/* warm-up: the first sockets and sends grow kernel caches once */
	if (fuzz_run(3000, seed ^ 1, &calls, 0)) {
		printf("kmod_fuzz: warm-up run failed\n");
		printf("kmod_fuzz: 0 passed, 1 failed\n");
		return 1;
	}
	fz_settle();
	for (int i = 0; i < 10; i++)
		m0[i] = fz_meminfo(keys[i]);
	free0 = fz_free_kb();
	ok = fuzz_run(iters, seed, &calls, 1) == 0;
	fz_settle();
	for (int i = 0; i < 10; i++)
		m1[i] = fz_meminfo(keys[i]);
	free1 = fz_free_kb();
	printf("kmod_fuzz: free memory (MemFree + per-CPU lists) %ld kB before, %ld kB after;"
	       " MemFree alone %ld -> %ld\n", free0, free1, m0[0], m1[0]);
	printf("kmod_fuzz: kB deltas:");
	for (int i = 1; i < 10; i++)
		printf(" %s %+ld", keys[i], m1[i] - m0[i]);
	printf("\n");
	if (free1 < free0 - free0 / 100) {
		printf("kmod_fuzz: free memory dropped by more than 1%%\n");
		ok = 0;
	}
	if (calls < iters)
		ok = 0;
	printf("kmod_fuzz: %ld ioctl calls\n", calls);
	printf("kmod_fuzz: %d passed, %d failed\n", ok, !ok);
	return ok ? 0 : 1;
}
#endif
