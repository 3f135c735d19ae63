/* netns.h - test helper: a veth pair between two network namespaces, optionally
 * with XDP_PASS on the receiving end and threaded NAPI pinned to one CPU (the
 * topology where MSG_ZEROCOPY / io_uring SEND_ZC are really not copied), and
 * running code inside a namespace.
 *
 * Namespaces are named "zc-<pid>-<n>-tx" / "-rx" (visible in `ip netns list`),
 * veths "zc<pid%100000><letter>t" / "...r"; addresses 198.19.0.1/30 (tx) and
 * 198.19.0.2/30 (rx), test-net, inside the namespaces only.  `ip` (iproute2) is
 * run with posix_spawnp; the XDP program is loaded with the raw bpf(2) syscall
 * and attached over rtnetlink from inside the rx namespace.
 *
 * Thread-safety: create/destroy from one thread at a time.  zc_netns_enter()
 * moves only the calling thread (setns(CLONE_NEWNET) is per thread); sockets
 * keep the namespace they were created in.
 */
#ifndef ZC_TESTS_NETNS_H
#define ZC_TESTS_NETNS_H

#include <pthread.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
	ZC_NETNS_OK = 0,
	ZC_NETNS_SKIP = 1,   /* namespaces cannot be made here: reason says why */
	ZC_NETNS_ERROR = -1, /* made, but a later step failed: reason says which */
};

enum {
	ZC_NETNS_XDP = 1u << 0,            /* XDP_PASS (driver mode) on dev_rx */
	ZC_NETNS_THREADED_NAPI = 1u << 1,  /* threaded NAPI on dev_rx (needs XDP) */
	ZC_NETNS_STATIC_NEIGH = 1u << 2,   /* permanent neighbour entries, no ARP */
	ZC_NETNS_DEFAULT = ZC_NETNS_XDP | ZC_NETNS_THREADED_NAPI | ZC_NETNS_STATIC_NEIGH,
};

struct zc_netns_pair {
	char ns_tx[48], ns_rx[48];  /* names under /run/netns */
	char dev_tx[16], dev_rx[16];
	char addr_tx[16], addr_rx[16]; /* dotted IPv4, no prefix */
	unsigned flags;
	int napi_pid; /* NAPI kthread of dev_rx, or 0 */
	int made;     /* namespaces exist (destroy removes them) */
};

/* Whether this process can make namespaces at all (root or CAP_NET_ADMIN +
 * CAP_SYS_ADMIN, iproute2 present).  Returns ZC_NETNS_OK or ZC_NETNS_SKIP. */
int zc_netns_check(char *reason, size_t reason_len);

/* Create a pair.  napi_cpu >= 0 pins dev_rx's NAPI kthread to that CPU (with
 * ZC_NETNS_THREADED_NAPI).  Returns ZC_NETNS_OK, ZC_NETNS_SKIP (nothing left
 * behind) or ZC_NETNS_ERROR (call zc_netns_pair_destroy anyway). */
int zc_netns_pair_create(struct zc_netns_pair *p, unsigned flags, int napi_cpu, char *reason,
			 size_t reason_len);

/* Remove both namespaces (and so the veth pair and XDP program).  Safe to call
 * on a pair that failed half-way or twice. */
void zc_netns_pair_destroy(struct zc_netns_pair *p);

/* Move the calling thread into namespace `name` (a /run/netns name, or an
 * absolute path to a netns file).  *saved gets an fd of the old namespace. */
int zc_netns_enter(const char *name, int *saved);
/* Return the calling thread to the namespace saved by zc_netns_enter. */
int zc_netns_leave(int saved);

/* Run fn(arg) on a new thread inside namespace `name`, wait for it.  Returns
 * fn's return value, or -1 with errno if the thread could not enter. */
int zc_netns_run(const char *name, int (*fn)(void *), void *arg);

/* Start fn(arg) on a new thread inside `name`; join with zc_netns_join, which
 * gives fn's return value (or -1 if the thread could not enter). */
struct zc_netns_thread {
	pthread_t tid;
	void *priv;
};
int zc_netns_start(struct zc_netns_thread *t, const char *name, int (*fn)(void *), void *arg);
int zc_netns_join(struct zc_netns_thread *t);

/* Remove namespaces named like ours ("zc-<pid>-<n>-tx"/"-rx") whose process
 * no longer exists (a test killed before it could clean up).  Returns how
 * many were removed. */
int zc_netns_reap_stale(void);

/* Run an argv (argv[0] looked up in PATH) and wait; stderr/stdout go to
 * `out` (first out_len-1 bytes, NUL-terminated) when out is not NULL.
 * Returns the exit status, or -1 if it could not be spawned. */
int zc_netns_spawn(char *const argv[], char *out, size_t out_len);

#ifdef __cplusplus
}
#endif
#endif
