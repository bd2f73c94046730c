/* hitpath_bench.c - ns per get+put on the cache hit path, one thread, for a
 * checked and an unchecked pool, each through tm_pool_get/put (the thread's
 * cache found on every call) and through tm_pool_cache_get/put (the cache
 * looked up once), alternating rounds in one process.
 *   make bench   builds it three times and runs each twice, interleaved:
 *     default                 asymmetric handshake (membarrier steal)
 *     -DTM_FORCE_SYMMETRIC    seq_cst Dekker on every call
 *     -DTM_BENCH_NO_HANDSHAKE no handshake at all (unsafe; the floor it costs)
 * Reports the best of several rounds; it is a measurement, never a test. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "turbomem/pool.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double round_ns(tm_pool_t *p, long n, int explicit_cache) {
    uint32_t h;
    double t0 = now();
    if (explicit_cache) {
        tm_cache_t *c = tm_pool_thread_cache(p);
        for (long i = 0; i < n; i++) {
            tm_pool_cache_get(p, c, &h);
            __asm__ __volatile__("" : : "r"(h) : "memory");
            tm_pool_cache_put(p, c, h);
        }
    } else {
        for (long i = 0; i < n; i++) {
            tm_pool_get(p, &h);
            __asm__ __volatile__("" : : "r"(h) : "memory");
            tm_pool_put(p, h);
        }
    }
    return (now() - t0) * 1e9 / n;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000000;
    tm_pool_t *p[2];
    static const char *names[2] = {"checked", "unchecked"};
    static const char *apis[2] = {"lookup per call", "cache passed in"};
    double best[2][2] = {{1e9, 1e9}, {1e9, 1e9}};
    for (int m = 0; m < 2; m++) {
        if (tm_pool_create(&p[m], 1024, 256, NULL, 64, 64, m ? TM_POOL_UNCHECKED : 0) != TM_OK)
            return 1;
        uint32_t h;
        tm_pool_get(p[m], &h); /* warm: slot, cache */
        tm_pool_put(p[m], h);
    }
    for (int round = 0; round < 7; round++)
        for (int m = 0; m < 2; m++)
            for (int a = 0; a < 2; a++) {
                double ns = round_ns(p[m], n, a);
                if (ns < best[m][a])
                    best[m][a] = ns;
            }
#if defined(TM_BENCH_NO_HANDSHAKE)
    const char *hs = "no handshake (unsafe, floor)";
#else
    const char *hs = tm_pool_asymmetric() ? "asymmetric (membarrier, default)" : "symmetric (seq_cst)";
#endif
    for (int m = 0; m < 2; m++)
        for (int a = 0; a < 2; a++)
            printf("%-32s %-9s %-15s %.2f ns per get+put (best of 7 x %ld)\n", hs, names[m], apis[a],
                   best[m][a], n);
    for (int m = 0; m < 2; m++)
        tm_pool_destroy(p[m]);
    return 0;
}
