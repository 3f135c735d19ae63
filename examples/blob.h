/* SPDX-License-Identifier: MIT */
/*
 * The blob protocol of the example server, one request per line:
 *   "GET <name>\n"  ->  "OK <length>\n" then <length> bytes, or "ERR <why>\n"
 *   "LIST\n"        ->  "<name> <length>\n" per blob, then ".\n"
 *   "SHUTDOWN\n"    ->  the server prints its statistics and exits.
 * Synthetic blobs ("--synthetic N") are named blob-<i>, with sizes from
 * 100 B to 1 MiB and bytes from blob_byte(), so a client can check them.
 */
#ifndef ZC_EXAMPLE_BLOB_H
#define ZC_EXAMPLE_BLOB_H

#include <stddef.h>
#include <stdint.h>

static inline size_t blob_synthetic_size(unsigned i)
{
    static const size_t sizes[] = { 100, 1000, 4096, 10000, 65536, 100000, 262144, 1048576 };
    return sizes[i % (sizeof(sizes) / sizeof(sizes[0]))] + i;
}

static inline uint8_t blob_byte(unsigned blob, size_t off)
{
    uint32_t x = (uint32_t)(off / 4) * 2654435761u + blob * 40503u;
    x ^= x >> 15;
    return (uint8_t)(x >> (8 * (off % 4)));
}

#endif
