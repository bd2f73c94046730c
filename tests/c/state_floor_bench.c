/* state_floor_bench.c - what checked mode's per-object state costs at least,
 * with no pool around it: for a bulk of n handles, mark each handed out (one
 * byte store), then check and mark each free again (a byte load, a compare,
 * a byte store), as tm_pool_get_bulk / tm_pool_put_bulk do in checked mode.
 * Beside it, the copy a bulk needs in any mode (n handles out of a cache and
 * back).  Handles are the ones a cache of 256 holds after churn (a random
 * permutation of 256 out of 16384).  ns per object, best of 7 rounds; one
 * thread.  A measurement, never a test:  make -C tests/c floor  */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CAP 16384u
#define CACHE 256u

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint8_t state[CAP];
static uint32_t cache[CACHE], out[CACHE];

__attribute__((noinline)) static int state_round(uint32_t n, long iters) {
    int bad = 0;
    for (long it = 0; it < iters; it++) {
        const uint32_t *src = cache + CACHE - n;
        for (uint32_t i = 0; i < n; i++) /* get: mark handed out */
            __atomic_store_n(&state[src[i]], 1, __ATOMIC_RELAXED);
        __asm__ __volatile__("" ::: "memory");
        for (uint32_t i = 0; i < n; i++) { /* put: check, mark free */
            uint32_t h = src[i];
            if (__builtin_expect(h >= CAP || __atomic_load_n(&state[h], __ATOMIC_RELAXED) != 1, 0))
                bad++;
            __atomic_store_n(&state[h], 0, __ATOMIC_RELAXED);
        }
        __asm__ __volatile__("" ::: "memory");
    }
    return bad;
}

__attribute__((noinline)) static void copy_round(uint32_t n, long iters) {
    for (long it = 0; it < iters; it++) {
        memcpy(out, cache + CACHE - n, n * sizeof(uint32_t)); /* get */
        __asm__ __volatile__("" ::: "memory");
        memcpy(cache + CACHE - n, out, n * sizeof(uint32_t)); /* put */
        __asm__ __volatile__("" ::: "memory");
    }
}

int main(void) {
    uint32_t perm[CAP];
    for (uint32_t i = 0; i < CAP; i++)
        perm[i] = i;
    srand(7);
    for (uint32_t i = CAP - 1; i > 0; i--) {
        uint32_t j = (uint32_t)rand() % (i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    memcpy(cache, perm, sizeof cache);
    static const uint32_t bulks[] = {1, 8, 32, 64, 128, 256};
    printf("bulk  state ops (checked only)  handle copy (every mode)   ns per object, best of 7\n");
    for (size_t b = 0; b < sizeof bulks / sizeof bulks[0]; b++) {
        uint32_t n = bulks[b];
        long iters = 50000000L / n;
        double best_s = 1e9, best_c = 1e9;
        for (int r = 0; r < 7; r++) {
            double t0 = now();
            if (state_round(n, iters))
                return 1;
            double t1 = now();
            copy_round(n, iters);
            double t2 = now();
            double s = (t1 - t0) * 1e9 / ((double)iters * n), c = (t2 - t1) * 1e9 / ((double)iters * n);
            if (s < best_s)
                best_s = s;
            if (c < best_c)
                best_c = c;
        }
        printf("%4u  %8.3f                  %8.3f\n", n, best_s, best_c);
    }
    return 0;
}
