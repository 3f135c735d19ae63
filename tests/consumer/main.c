/* SPDX-License-Identifier: MIT */
/* Built against the installed zcopy: allocate, seal, send through a
 * socket pair, check the bytes. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <zcopy/zcopy.h>

int main(int argc, char **argv)
{
    if (zc_version() != ZCOPY_VERSION_NUMBER) {
        fprintf(stderr, "header %s but library %s\n", ZCOPY_VERSION_STRING, zc_version_string());
        return 1;
    }
    zc_pool *pool;
    int rc = zc_pool_create(&pool, NULL);
    if (rc) {
        fprintf(stderr, "zc_pool_create: %s\n", zc_strerror(rc));
        return 1;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
        return 1;
    char *p = zc_alloc(pool, 1000);
    for (int i = 0; i < 1000; i++)
        p[i] = (char)i;
    zc_seal(pool, p);
    char got[1000];
    if (zc_send(pool, sv[0], p, 1000, 0) != 1000 || read(sv[1], got, 1000) != 1000 ||
        memcmp(got, p, 1000) != 0) {
        fprintf(stderr, "send failed\n");
        return 1;
    }
    printf("consumer (%s): zcopy %s, backend %s, 1000 bytes checked\n", argc > 1 ? argv[1] : "",
           zc_version_string(), zc_backend_name(pool));
    zc_free(pool, p);
    zc_pool_destroy(pool);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
