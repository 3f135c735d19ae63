/* SPDX-License-Identifier: MIT */
/* zcopy-probe: which backends work on this machine, which "auto" picks,
 * and why the others do not. Exit status 0 if a pool could be created. */
#include <stdio.h>
#include <string.h>

#include <zcopy/zcopy.h>

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: zcopy-probe\n"
               "Prints each zcopy backend, whether it works here and why not,\n"
               "then the backend a pool gets (ZC_BACKEND, default auto).\n");
        return 0;
    }
    printf("zcopy %s\n", zc_version_string());
    for (const char *const *name = zc_backend_list(); *name; name++) {
        char why[256];
        int rc = zc_backend_probe(*name, why, sizeof(why));
        printf("  %-8s %-13s %s\n", *name, rc == 0 ? "available" : "unavailable",
               rc == 0 ? "" : why);
    }
    zc_pool *pool;
    int rc = zc_pool_create(&pool, NULL);
    if (rc) {
        printf("pool: cannot be created: %s\n", zc_strerror(rc));
        return 1;
    }
    printf("chosen: %s\n", zc_backend_name(pool));
    zc_pool_destroy(pool);
    return 0;
}
