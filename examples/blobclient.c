/* SPDX-License-Identifier: MIT */
/*
 * zc-blobclient: fetches every blob from zc-blobserver, several rounds over
 * several connections, and checks every byte against the synthetic pattern
 * or the original files. Exit status 0 only if every byte matched.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blob.h"

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
        perror("zc-blobclient: connect");
        exit(1);
    }
    return fd;
}

static int read_full(int fd, char *p, size_t n)
{
    while (n) {
        ssize_t r = recv(fd, p, n, 0);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int read_line(int fd, char *line, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        if (recv(fd, line + n, 1, 0) != 1)
            return -1;
        if (line[n] == '\n') {
            line[n] = '\0';
            return 0;
        }
        n++;
    }
    return -1;
}

static char *slurp(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st))
        return NULL;
    char *p = malloc((size_t)st.st_size + 1);
    *len = (size_t)st.st_size;
    if (read_full(fd, p, *len) && read(fd, p, *len) != (ssize_t)*len) {
        close(fd);
        free(p);
        return NULL;
    }
    close(fd);
    return p;
}

int main(int argc, char **argv)
{
    int port = 0, synthetic = 0, rounds = 3, conns = 2, shutdown_after = 0, first_file = argc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (strcmp(argv[i], "--synthetic") == 0 && i + 1 < argc)
            synthetic = atoi(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--connections") == 0 && i + 1 < argc)
            conns = atoi(argv[++i]);
        else if (strcmp(argv[i], "--shutdown") == 0)
            shutdown_after = 1;
        else if (argv[i][0] != '-') {
            first_file = i;
            break;
        } else {
            fprintf(stderr, "usage: zc-blobclient --port N [--rounds R] [--connections C] "
                            "[--shutdown] (--synthetic N | FILE...)\n");
            return 2;
        }
    }
    int nblobs = synthetic > 0 ? synthetic : argc - first_file;
    if (port <= 0 || nblobs <= 0 || rounds <= 0 || rounds > 1000 || conns <= 0 || conns > 64) {
        fprintf(stderr, "zc-blobclient: need --port and blobs; rounds 1..1000, connections 1..64\n");
        return 2;
    }
    int *fds = calloc((size_t)conns, sizeof(int));
    for (int c = 0; c < conns; c++)
        fds[c] = connect_to(port);
    unsigned long long bytes = 0, fetched = 0, mismatches = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int r = 0; r < rounds; r++) {
        for (int b = 0; b < nblobs; b++) {
            int fd = fds[(r * nblobs + b) % conns];
            char name[300], line[128];
            const char *path = synthetic > 0 ? NULL : argv[first_file + b];
            const char *base = path ? strrchr(path, '/') : NULL;
            if (path)
                snprintf(name, sizeof(name), "GET %s\n", base ? base + 1 : path);
            else
                snprintf(name, sizeof(name), "GET blob-%d\n", b);
            if (send(fd, name, strlen(name), MSG_NOSIGNAL) < 0 || read_line(fd, line, sizeof(line))) {
                fprintf(stderr, "zc-blobclient: connection lost\n");
                return 1;
            }
            size_t len;
            if (sscanf(line, "OK %zu", &len) != 1) {
                fprintf(stderr, "zc-blobclient: %s", name);
                fprintf(stderr, " -> %s\n", line);
                return 1;
            }
            char *got = malloc(len + 1);
            if (read_full(fd, got, len)) {
                fprintf(stderr, "zc-blobclient: short body\n");
                return 1;
            }
            size_t want_len = 0;
            char *want = NULL;
            if (path)
                want = slurp(path, &want_len);
            else
                want_len = blob_synthetic_size((unsigned)b);
            if (want_len != len) {
                mismatches++;
            } else {
                for (size_t i = 0; i < len; i++) {
                    uint8_t w = want ? (uint8_t)want[i] : blob_byte((unsigned)b, i);
                    if ((uint8_t)got[i] != w) {
                        mismatches++;
                        fprintf(stderr, "zc-blobclient: blob %d byte %zu differs\n", b, i);
                        break;
                    }
                }
            }
            free(want);
            free(got);
            bytes += len;
            fetched++;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("zc-blobclient: %llu blobs, %llu bytes verified in %.2f s, %llu mismatches\n",
           fetched, bytes, secs, mismatches);
    if (shutdown_after) {
        char line[32];
        send(fds[0], "SHUTDOWN\n", 9, MSG_NOSIGNAL);
        read_line(fds[0], line, sizeof(line));
    }
    for (int c = 0; c < conns; c++)
        close(fds[c]);
    free(fds);
    return mismatches ? 1 : 0;
}
