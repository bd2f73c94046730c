/* hitpath_bench.c - ns per get+put on the cache hit path, one thread.
 *   make bench   builds it twice: default (asymmetric, membarrier steal) and
 *                -DTM_FORCE_SYMMETRIC (seq_cst Dekker) and runs both.
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

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 50000000;
    tm_pool_t *p;
    if (tm_pool_create(&p, 1024, 256, NULL, 64, 64, 0) != TM_OK)
        return 1;
    uint32_t h;
    tm_pool_get(p, &h); /* warm: slot, cache */
    tm_pool_put(p, h);
    double best = 1e9;
    for (int round = 0; round < 7; round++) {
        double t0 = now();
        for (long i = 0; i < n; i++) {
            tm_pool_get(p, &h);
            __asm__ __volatile__("" : : "r"(h) : "memory");
            tm_pool_put(p, h);
        }
        double ns = (now() - t0) * 1e9 / n;
        if (ns < best)
            best = ns;
    }
    printf("%-34s %.2f ns per get+put (best of 7 x %ld)\n",
           tm_pool_asymmetric() ? "asymmetric (membarrier, default):" : "symmetric (TM_FORCE_SYMMETRIC):",
           best, n);
    tm_pool_destroy(p);
    return 0;
}
