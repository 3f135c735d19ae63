/* SPDX-License-Identifier: MIT */
/*
 * zc-blobserver: loads files (or synthetic blobs) into a zcopy pool, seals
 * them, and serves them over TCP on 127.0.0.1 with zc_sendmsg: the reply
 * header comes from the stack (copied), the body from the pool (zero-copy
 * where the backend can). Metadata (names, lengths) lives in malloc memory:
 * twin allocation.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zcopy/zcopy.h>

#include "blob.h"

struct blob {
    char name[64];
    size_t len;
    char *data; /* in the pool, sealed */
};

static zc_pool *pool;
static struct blob *blobs;
static size_t nblobs;
static _Atomic int stopping;
static _Atomic int connections;

static int load_file(struct blob *b, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) || st.st_size <= 0) {
        fprintf(stderr, "zc-blobserver: %s: %s\n", path, fd < 0 ? strerror(errno) : "empty");
        if (fd >= 0)
            close(fd);
        return -1;
    }
    const char *base = strrchr(path, '/');
    snprintf(b->name, sizeof(b->name), "%s", base ? base + 1 : path);
    b->len = (size_t)st.st_size;
    b->data = zc_alloc(pool, b->len);
    if (!b->data) {
        fprintf(stderr, "zc-blobserver: zc_alloc(%zu): %s\n", b->len, zc_strerror(errno));
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < b->len) {
        ssize_t r = read(fd, b->data + got, b->len - got);
        if (r <= 0) {
            fprintf(stderr, "zc-blobserver: %s: short read\n", path);
            close(fd);
            return -1;
        }
        got += (size_t)r;
    }
    close(fd);
    return zc_seal(pool, b->data);
}

static int make_synthetic(struct blob *b, unsigned i)
{
    snprintf(b->name, sizeof(b->name), "blob-%u", i);
    b->len = blob_synthetic_size(i);
    b->data = zc_alloc(pool, b->len);
    if (!b->data)
        return -1;
    for (size_t off = 0; off < b->len; off++)
        b->data[off] = (char)blob_byte(i, off);
    return zc_seal(pool, b->data);
}

static int send_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };
        ssize_t r = zc_sendmsg(pool, fd, &msg, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        /* a short write: skip what went, send the rest */
        while (n > 0 && (size_t)r >= iov->iov_len) {
            r -= (ssize_t)iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + r;
            iov->iov_len -= (size_t)r;
        }
    }
    return 0;
}

static void reply(int fd, const char *line)
{
    struct iovec iov = { (void *)(uintptr_t)line, strlen(line) };
    send_all(fd, &iov, 1);
}

static void serve_request(int fd, char *line)
{
    if (strncmp(line, "GET ", 4) == 0) {
        for (size_t i = 0; i < nblobs; i++) {
            if (strcmp(blobs[i].name, line + 4) == 0) {
                char head[64];
                int hl = snprintf(head, sizeof(head), "OK %zu\n", blobs[i].len);
                struct iovec iov[2] = { { head, (size_t)hl }, { blobs[i].data, blobs[i].len } };
                send_all(fd, iov, 2);
                return;
            }
        }
        reply(fd, "ERR no such blob\n");
    } else if (strcmp(line, "LIST") == 0) {
        for (size_t i = 0; i < nblobs; i++) {
            char l[128];
            snprintf(l, sizeof(l), "%s %zu\n", blobs[i].name, blobs[i].len);
            reply(fd, l);
        }
        reply(fd, ".\n");
    } else if (strcmp(line, "SHUTDOWN") == 0) {
        stopping = 1;
        reply(fd, "BYE\n");
    } else {
        reply(fd, "ERR bad request\n");
    }
}

static void *connection(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[512];
    size_t have = 0;
    while (!stopping) {
        ssize_t r = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
        if (r < 0 && errno == EINTR)
            continue; /* io_uring's completions for this thread interrupt it */
        if (r <= 0)
            break;
        have += (size_t)r;
        buf[have] = '\0';
        char *nl;
        while ((nl = memchr(buf, '\n', have)) != NULL) {
            *nl = '\0';
            serve_request(fd, buf);
            size_t used = (size_t)(nl + 1 - buf);
            memmove(buf, nl + 1, have - used);
            have -= used;
        }
        if (have == sizeof(buf) - 1)
            break; /* line too long */
    }
    close(fd);
    atomic_fetch_sub(&connections, 1);
    return NULL;
}

static void print_stats(void)
{
    struct zc_stats st;
    zc_poll(pool, 100);
    zc_stats(pool, &st);
    printf("zc-blobserver: backend %s\n", zc_backend_name(pool));
    printf("zc-blobserver: sends %llu, bytes zero-copy %llu, bytes copied %llu, "
           "completions %llu (kernel copied %llu), in flight %llu\n",
           (unsigned long long)st.sends, (unsigned long long)st.bytes_zerocopy,
           (unsigned long long)st.bytes_copied, (unsigned long long)st.completions,
           (unsigned long long)st.completions_copied, (unsigned long long)st.in_flight);
    printf("zc-blobserver: protected pageblocks %llu, protected large objects %llu, "
           "write faults %llu, committed %llu bytes\n",
           (unsigned long long)st.pageblocks_protected, (unsigned long long)st.large_protected,
           (unsigned long long)st.protect_faults, (unsigned long long)st.bytes_committed);
}

static void usage(void)
{
    fprintf(stderr, "usage: zc-blobserver [--port N] [--port-file F] "
                    "(--synthetic N | FILE...)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int port = 0, synthetic = 0, first_file = argc;
    const char *port_file = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--port-file") == 0 && i + 1 < argc)
            port_file = argv[++i];
        else if (strcmp(argv[i], "--synthetic") == 0 && i + 1 < argc)
            synthetic = atoi(argv[++i]);
        else if (argv[i][0] == '-')
            usage();
        else {
            first_file = i;
            break;
        }
    }
    if ((synthetic <= 0) == (first_file == argc))
        usage();
    int rc = zc_pool_create(&pool, NULL);
    if (rc) {
        fprintf(stderr, "zc-blobserver: zc_pool_create: %s (ZC_LOG=1 says why)\n",
                zc_strerror(rc));
        return 1;
    }
    nblobs = synthetic > 0 ? (size_t)synthetic : (size_t)(argc - first_file);
    blobs = calloc(nblobs, sizeof(*blobs));
    for (size_t i = 0; i < nblobs; i++) {
        int r = synthetic > 0 ? make_synthetic(&blobs[i], (unsigned)i)
                              : load_file(&blobs[i], argv[first_file + (int)i]);
        if (r) {
            fprintf(stderr, "zc-blobserver: cannot load blob %zu\n", i);
            return 1;
        }
    }
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 16) ||
        getsockname(l, (struct sockaddr *)&a, &alen)) {
        perror("zc-blobserver: listen");
        return 1;
    }
    printf("zc-blobserver: %zu blobs sealed in a %s pool, listening on 127.0.0.1:%d\n", nblobs,
           zc_backend_name(pool), ntohs(a.sin_port));
    fflush(stdout);
    if (port_file) {
        FILE *f = fopen(port_file, "w");
        if (!f) {
            perror("zc-blobserver: port file");
            return 1;
        }
        fprintf(f, "%d\n", ntohs(a.sin_port));
        fclose(f);
    }
    while (!stopping) {
        struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
        setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        int fd = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        /* the accept loop's timeout is inherited: a connection waits for requests */
        struct timeval none = { 0, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
        pthread_t t;
        atomic_fetch_add(&connections, 1);
        if (pthread_create(&t, NULL, connection, (void *)(intptr_t)fd) == 0) {
            pthread_detach(t);
        } else {
            atomic_fetch_sub(&connections, 1);
            close(fd);
        }
    }
    close(l);
    /* let the connections finish their replies before the pool goes */
    for (int i = 0; i < 100 && atomic_load(&connections) > 0; i++)
        usleep(20000);
    print_stats();
    for (size_t i = 0; i < nblobs; i++)
        zc_free(pool, blobs[i].data);
    free(blobs);
    return zc_pool_destroy(pool) == 0 ? 0 : 1;
}
