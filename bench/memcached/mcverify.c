/* SPDX-License-Identifier: MIT */
/*
 * mcverify: a small memcached load client that checks every value it reads.
 *
 *   mcverify -s HOST -p PORT [-u] [-k KEYS] [-z SIZE] [-t SECONDS] [-w WINDOW]
 *            [-r SETS_PER_10] [-P] [-n MAXOPS]
 *
 * -P prefills KEYS keys (over TCP, WINDOW sets in flight) and exits.
 * Otherwise it runs GETs (and SETs, -r of every 10 operations, default 1:
 * GET-heavy 9:1) over TCP with WINDOW requests in flight (default 8), or
 * over UDP (-u: one request at a time, replies reassembled from memcached's
 * 8-byte frame headers), for SECONDS (default 5) or MAXOPS operations,
 * whichever ends first. Each key's value is a function of (key, version):
 * the reply's flags carry the version, so every byte of every value read is
 * checked. Prints one line:
 *   ops=N gets=N hits=N misses=N sets=N wrong=N lost=N secs=S gets_per_s=R
 * and exits 1 if any value was wrong.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *host = "127.0.0.1";
static int port = 11211;
static bool udp;
static unsigned nkeys = 1000;
static size_t vsize = 4096;
static double seconds = 5;
static unsigned window = 8;
static unsigned sets_per_10 = 1;
static bool prefill_only;
static uint64_t maxops = UINT64_MAX;

static uint64_t n_gets, n_hits, n_misses, n_sets, n_wrong, n_lost;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "mcverify: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* The value of (key, version): xorshift bytes seeded by both. */
static void fill_value(unsigned key, unsigned version, unsigned char *out, size_t n)
{
    uint64_t x = 0x9e3779b97f4a7c15ull ^ ((uint64_t)key << 20) ^ version;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out[i] = (unsigned char)(x >> 32);
    }
}

static unsigned char *expect_buf;

static bool value_ok(unsigned key, unsigned version, const unsigned char *v, size_t n)
{
    if (n != vsize)
        return false;
    fill_value(key, version, expect_buf, n);
    return memcmp(expect_buf, v, n) == 0;
}

static int connect_to(int type)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "mcverify: bad address %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, type, 0);
    if (fd < 0)
        die("socket");
    if (type == SOCK_STREAM) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    } else {
        int big = 16 << 20;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) < 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        die("connect");
    return fd;
}

/* ---- TCP: a receive buffer with line and exact-length reads ---- */
struct rbuf {
    int fd;
    unsigned char *b;
    size_t len, off, cap;
};

static void rb_fill(struct rbuf *r)
{
    if (r->off > 0 && r->off == r->len)
        r->off = r->len = 0;
    if (r->len == r->cap) {
        if (r->off > 0) {
            memmove(r->b, r->b + r->off, r->len - r->off);
            r->len -= r->off;
            r->off = 0;
        } else {
            r->cap *= 2;
            r->b = realloc(r->b, r->cap);
            if (r->b == NULL)
                die("realloc");
        }
    }
    ssize_t n = recv(r->fd, r->b + r->len, r->cap - r->len, 0);
    if (n < 0)
        die("recv");
    if (n == 0) {
        fprintf(stderr, "mcverify: server closed the connection\n");
        exit(2);
    }
    r->len += (size_t)n;
}

static char *rb_line(struct rbuf *r) /* returns a NUL-terminated line without CR LF */
{
    for (;;) {
        unsigned char *s = r->b + r->off;
        unsigned char *e = memmem(s, r->len - r->off, "\r\n", 2);
        if (e != NULL) {
            *e = '\0';
            r->off = (size_t)(e - r->b) + 2;
            return (char *)s;
        }
        rb_fill(r);
    }
}

static unsigned char *rb_exact(struct rbuf *r, size_t n)
{
    while (r->len - r->off < n)
        rb_fill(r);
    unsigned char *p = r->b + r->off;
    r->off += n;
    return p;
}

static void send_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            die("send");
        }
        p += k;
        n -= (size_t)k;
    }
}

static unsigned char *setbuf_;

static size_t build_set(unsigned key, unsigned version, char *hdr, size_t hdrcap)
{
    return (size_t)snprintf(hdr, hdrcap, "set k%u %u 0 %zu\r\n", key, version, vsize);
}

static void tcp_set(int fd, unsigned key, unsigned version)
{
    char hdr[96];
    size_t h = build_set(key, version, hdr, sizeof(hdr));
    memcpy(setbuf_, hdr, h);
    fill_value(key, version, setbuf_ + h, vsize);
    memcpy(setbuf_ + h + vsize, "\r\n", 2);
    send_all(fd, setbuf_, h + vsize + 2);
}

/* Reads a GET reply for key; counts hit, miss or wrong. */
static void tcp_get_reply(struct rbuf *r, unsigned key)
{
    char *line = rb_line(r);
    n_gets++;
    if (strcmp(line, "END") == 0) {
        n_misses++;
        return;
    }
    unsigned k, flags;
    size_t n;
    if (sscanf(line, "VALUE k%u %u %zu", &k, &flags, &n) != 3 || k != key) {
        fprintf(stderr, "mcverify: unexpected reply '%.60s' for k%u\n", line, key);
        exit(2);
    }
    unsigned char *v = rb_exact(r, n + 2);
    if (!value_ok(key, flags, v, n) || memcmp(v + n, "\r\n", 2) != 0) {
        if (n_wrong++ < 10)
            fprintf(stderr, "mcverify: WRONG value for k%u (%zu bytes, version %u)\n", key, n, flags);
    } else {
        n_hits++;
    }
    line = rb_line(r);
    if (strcmp(line, "END") != 0) {
        fprintf(stderr, "mcverify: no END after k%u\n", key);
        exit(2);
    }
}

static unsigned next_key(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return (unsigned)(*x % nkeys);
}

static unsigned *versions;

static void run_tcp(void)
{
    int fd = connect_to(SOCK_STREAM);
    struct rbuf r = {.fd = fd, .cap = vsize * 2 + 4096};
    r.b = malloc(r.cap);
    if (r.b == NULL)
        die("malloc");
    if (prefill_only) {
        /* WINDOW sets in flight, then their replies: the replies are a few
         * bytes each, so neither side can block the other. */
        for (unsigned k = 0; k < nkeys;) {
            unsigned batch = nkeys - k < window ? nkeys - k : window;
            for (unsigned i = 0; i < batch; i++)
                tcp_set(fd, k + i, 0);
            for (unsigned i = 0; i < batch; i++) {
                char *line = rb_line(&r);
                if (strcmp(line, "STORED") != 0) {
                    fprintf(stderr, "mcverify: prefill k%u: %s\n", k + i, line);
                    exit(2);
                }
                n_sets++;
            }
            k += batch;
        }
        return;
    }
    /* A window of requests in flight: a ring of (is_get, key). */
    struct { bool get; unsigned key; } *ring = calloc(window, sizeof(*ring));
    unsigned head = 0, inflight = 0;
    uint64_t x = 88172645463325252ull, ops = 0;
    double end = now() + seconds;
    bool stop = false;
    while (!stop || inflight > 0) {
        while (!stop && inflight < window) {
            unsigned key = next_key(&x);
            bool is_set = (ops % 10) < sets_per_10;
            unsigned slot = (head + inflight) % window;
            ring[slot].get = !is_set;
            ring[slot].key = key;
            if (is_set) {
                versions[key] = (versions[key] + 1) % 1000;
                tcp_set(fd, key, versions[key]);
            } else {
                char cmd[64];
                int n = snprintf(cmd, sizeof(cmd), "get k%u\r\n", key);
                send_all(fd, cmd, (size_t)n);
            }
            inflight++;
            ops++;
            if (ops >= maxops || (ops % 64 == 0 && now() >= end))
                stop = true;
        }
        if (ring[head].get) {
            tcp_get_reply(&r, ring[head].key);
        } else {
            char *line = rb_line(&r);
            if (strcmp(line, "STORED") != 0) {
                fprintf(stderr, "mcverify: set k%u: %s\n", ring[head].key, line);
                exit(2);
            }
            n_sets++;
        }
        head = (head + 1) % window;
        inflight--;
    }
    free(ring);
    free(r.b);
    close(fd);
}

/* ---- UDP: one request at a time, replies reassembled by sequence ---- */
static void run_udp(void)
{
    int fd = connect_to(SOCK_DGRAM);
    size_t maxparts = vsize / 1000 + 16;
    unsigned char **parts = calloc(maxparts, sizeof(*parts));
    size_t *plen = calloc(maxparts, sizeof(*plen));
    unsigned char *dgram = malloc(65536), *msg = malloc(vsize + 4096);
    for (size_t i = 0; i < maxparts; i++)
        parts[i] = malloc(1500);
    uint16_t rid = 1;
    uint64_t x = 88172645463325252ull, ops = 0;
    double end = now() + seconds;
    while (ops < maxops && !(ops % 64 == 0 && now() >= end)) {
        unsigned key = next_key(&x);
        unsigned char req[64];
        rid++;
        uint16_t h[4] = {htons(rid), 0, htons(1), 0};
        memcpy(req, h, 8);
        int n = snprintf((char *)req + 8, sizeof(req) - 8, "get k%u\r\n", key);
        if (send(fd, req, 8 + (size_t)n, 0) < 0)
            die("send");
        ops++;
        size_t got = 0, total = 0;
        bool lost = false;
        memset(plen, 0, maxparts * sizeof(*plen));
        while (total == 0 || got < total) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, 500) <= 0) {
                lost = true;
                break;
            }
            ssize_t k = recv(fd, dgram, 65536, 0);
            if (k < 8)
                continue;
            uint16_t hh[4];
            memcpy(hh, dgram, 8);
            if (ntohs(hh[0]) != rid)
                continue;
            size_t seq = ntohs(hh[1]);
            total = ntohs(hh[2]);
            if (seq >= maxparts || total > maxparts || (size_t)k - 8 > 1500) {
                fprintf(stderr, "mcverify: bad UDP frame\n");
                exit(2);
            }
            if (plen[seq] == 0)
                got++;
            memcpy(parts[seq], dgram + 8, (size_t)k - 8);
            plen[seq] = (size_t)k - 8;
        }
        if (lost) {
            n_lost++;
            continue;
        }
        size_t mlen = 0;
        for (size_t i = 0; i < total; i++) {
            memcpy(msg + mlen, parts[i], plen[i]);
            mlen += plen[i];
        }
        n_gets++;
        if (mlen == 5 && memcmp(msg, "END\r\n", 5) == 0) {
            n_misses++;
            continue;
        }
        unsigned k2, flags;
        size_t vn, hdr = 0;
        unsigned char *eol = memmem(msg, mlen, "\r\n", 2);
        char line[128];
        if (eol != NULL && (size_t)(eol - msg) < sizeof(line)) {
            hdr = (size_t)(eol - msg) + 2;
            memcpy(line, msg, hdr - 2);
            line[hdr - 2] = '\0';
        }
        if (hdr == 0 || sscanf(line, "VALUE k%u %u %zu", &k2, &flags, &vn) != 3 ||
            k2 != key || hdr + vn + 7 != mlen ||
            memcmp(msg + hdr + vn, "\r\nEND\r\n", 7) != 0 ||
            !value_ok(key, flags, msg + hdr, vn)) {
            if (n_wrong++ < 10)
                fprintf(stderr, "mcverify: WRONG UDP reply for k%u (%zu bytes)\n", key, mlen);
            continue;
        }
        n_hits++;
    }
    close(fd);
}

int main(int argc, char **argv)
{
    int c;
    while ((c = getopt(argc, argv, "s:p:uk:z:t:w:r:Pn:")) != -1) {
        switch (c) {
        case 's': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'u': udp = true; break;
        case 'k': nkeys = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'z': vsize = strtoul(optarg, NULL, 10); break;
        case 't': seconds = atof(optarg); break;
        case 'w': window = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'r': sets_per_10 = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'P': prefill_only = true; break;
        case 'n': maxops = strtoull(optarg, NULL, 10); break;
        default:
            fprintf(stderr, "usage: mcverify -s HOST -p PORT [-u] [-k KEYS] [-z SIZE] "
                            "[-t SECONDS] [-w WINDOW] [-r SETS_PER_10] [-P] [-n MAXOPS]\n");
            return 2;
        }
    }
    if (nkeys == 0 || vsize == 0 || window == 0 || sets_per_10 > 10) {
        fprintf(stderr, "mcverify: bad arguments\n");
        return 2;
    }
    expect_buf = malloc(vsize);
    setbuf_ = malloc(vsize + 128);
    versions = calloc(nkeys, sizeof(*versions));
    if (expect_buf == NULL || setbuf_ == NULL || versions == NULL)
        die("malloc");
    double t0 = now();
    if (udp)
        run_udp();
    else
        run_tcp();
    double secs = now() - t0;
    printf("ops=%llu gets=%llu hits=%llu misses=%llu sets=%llu wrong=%llu lost=%llu secs=%.3f gets_per_s=%.0f\n",
           (unsigned long long)(n_gets + n_sets + n_lost), (unsigned long long)n_gets,
           (unsigned long long)n_hits, (unsigned long long)n_misses, (unsigned long long)n_sets,
           (unsigned long long)n_wrong, (unsigned long long)n_lost, secs,
           secs > 0 ? (double)n_gets / secs : 0.0);
    return n_wrong == 0 ? 0 : 1;
}
