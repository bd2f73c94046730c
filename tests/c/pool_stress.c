/* pool_stress.c - threads hammer one pool through pool.h; every handle is
 * counted exactly once at the end.
 *
 * Phases:
 *   1. mixed:   T threads, random get/put/get_bulk/put_bulk (with caches),
 *               every held object carries a (thread, handle) token in its
 *               memory that is checked before it goes back: two holders of
 *               one handle at once are caught.
 *   2. exits:   many short-lived threads that leave with full caches.
 *   3. stealer: thread A parks objects in its cache and blocks on a condition
 *               variable; thread B must get every remaining object (single
 *               gets and one get_bulk), then A is released.
 *   4. claimed: white-box: our own cache is claimed by a (simulated) stealer
 *               when we enter; the call waits for the claim and still counts
 *               our cached objects.
 *   5. fork:    threads churn while the main thread forks; each child must
 *               drain exactly `available` distinct handles (not under TSan).
 * At the end of each phase the pool is drained: each handle exactly once.
 * Usage: pool_stress OPS [checked|unchecked|stats]   (default: checked)
 * Prints "pool_stress: ... OK" on success, exits 1 on the first failure.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>

#include "turbomem/pool.h"

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "pool_stress: FAIL %s:%d: ", __FILE__, __LINE__);  \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

#define OBJ 16
static unsigned char *mem;
static tm_pool_t *pool;
static uint32_t cap;
static unsigned mode_flags; /* 0, TM_POOL_UNCHECKED or TM_POOL_STATS */

static uint64_t rnd(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    *s = x;
    return x * 2685821657736338717ULL;
}

static void stamp(uint32_t h, uint64_t tok) { memcpy(mem + (size_t)h * OBJ, &tok, 8); }
static int stamped(uint32_t h, uint64_t tok) {
    uint64_t v;
    memcpy(&v, mem + (size_t)h * OBJ, 8);
    return v == tok;
}

/* Drain everything free and check each handle shows up exactly once. */
static void drain_and_count(const char *phase, uint32_t expect_free) {
    uint8_t *seen = calloc(cap, 1);
    uint32_t n = 0, h;
    while (tm_pool_get(pool, &h) == TM_OK) {
        CHECK(h < cap, "%s: handle %u out of range", phase, h);
        CHECK(!seen[h], "%s: handle %u handed out twice", phase, h);
        seen[h] = 1;
        n++;
        CHECK(n <= cap, "%s: more handles than capacity", phase);
    }
    CHECK(n == expect_free, "%s: drained %u, expected %u", phase, n, expect_free);
    tm_pool_stats_t st;
    tm_pool_stats(pool, &st);
    CHECK(st.available == 0 && st.in_use == cap, "%s: stats disagree after drain", phase);
    for (uint32_t i = 0; i < cap; i++)
        if (seen[i])
            CHECK(tm_pool_put(pool, i) == TM_OK, "%s: put back %u", phase, i);
    tm_pool_stats(pool, &st);
    CHECK(st.available == expect_free, "%s: available %llu after refill", phase,
          (unsigned long long)st.available);
    free(seen);
}

/* ---- phase 1 ---------------------------------------------------------------- */
struct mixed_arg { uint64_t seed, ops, errors; };

/* Half the threads call through the cache they looked up once
 * (tm_pool_cache_*), half through tm_pool_get/put (lookup per call). */
static __thread tm_cache_t *mine;
static int g1(uint32_t *h) { return mine ? tm_pool_cache_get(pool, mine, h) : tm_pool_get(pool, h); }
static int p1(uint32_t h) { return mine ? tm_pool_cache_put(pool, mine, h) : tm_pool_put(pool, h); }
static int gb(uint32_t *hs, uint32_t n) {
    return mine ? tm_pool_cache_get_bulk(pool, mine, hs, n, NULL) : tm_pool_get_bulk(pool, hs, n);
}
static int pb(const uint32_t *hs, uint32_t n, uint32_t *bad) {
    return mine ? tm_pool_cache_put_bulk(pool, mine, hs, n, bad) : tm_pool_put_bulk(pool, hs, n, bad);
}

static void *mixed(void *argp) {
    struct mixed_arg *a = argp;
    uint32_t held[256], n = 0, k, i, h, bad;
    mine = (a->seed & 1) ? tm_pool_thread_cache(pool) : NULL;
    uint64_t s = a->seed, tag = a->seed << 32;
    for (uint64_t op = 0; op < a->ops; op++) {
        uint64_t r = rnd(&s);
        switch (r % 8) {
        case 0: case 1: case 2:
            if (n < 256 && g1(&h) == TM_OK) { stamp(h, tag | h); held[n++] = h; }
            break;
        case 3: case 4:
            if (n) {
                i = (uint32_t)((r >> 8) % n); h = held[i];
                if (!stamped(h, tag | h)) a->errors++;
                if (p1(h) != TM_OK) a->errors++;
                held[i] = held[--n];
            }
            break;
        case 5:
            k = 1 + (uint32_t)((r >> 8) % 32);
            if (n + k <= 256 && gb(held + n, k) == TM_OK) {
                for (i = n; i < n + k; i++) stamp(held[i], tag | held[i]);
                n += k;
            }
            break;
        case 6:
            if (n) {
                k = 1 + (uint32_t)((r >> 8) % n);
                for (i = n - k; i < n; i++) if (!stamped(held[i], tag | held[i])) a->errors++;
                if (pb(held + n - k, k, NULL) != TM_OK) a->errors++;
                n -= k;
            }
            break;
        default: /* failing calls change nothing */
            if (p1(cap + 3) != TM_ERANGE) a->errors++;
            if (n && n < 256 && !(mode_flags & TM_POOL_UNCHECKED)) {
                held[n] = cap;
                if (pb(held, n + 1, &bad) != TM_ERANGE || bad != n) a->errors++;
            }
            break;
        }
    }
    for (i = 0; i < n; i++) if (!stamped(held[i], tag | held[i])) a->errors++;
    if (n && pb(held, n, NULL) != TM_OK) a->errors++;
    return NULL; /* exits with whatever is in its cache */
}

static void run_mixed(int threads, uint64_t ops) {
    pthread_t t[64];
    struct mixed_arg a[64];
    for (int i = 0; i < threads; i++) {
        a[i] = (struct mixed_arg){.seed = (uint64_t)i + 1 + threads * 100, .ops = ops};
        pthread_create(&t[i], NULL, mixed, &a[i]);
    }
    uint64_t errors = 0;
    for (int i = 0; i < threads; i++) { pthread_join(t[i], NULL); errors += a[i].errors; }
    CHECK(errors == 0, "mixed(%d threads): %llu errors", threads, (unsigned long long)errors);
    drain_and_count("mixed", cap);
}

/* ---- phase 2 ---------------------------------------------------------------- */
static void *fill_and_exit(void *unused) {
    (void)unused;
    uint32_t hs[64];
    if (tm_pool_get_bulk(pool, hs, 64) == TM_OK)
        tm_pool_put_bulk(pool, hs, 64, NULL);
    for (int i = 0; i < 32; i++) {
        uint32_t h;
        if (tm_pool_get(pool, &h) == TM_OK) tm_pool_put(pool, h);
    }
    return NULL;
}

/* ---- phase 3 ---------------------------------------------------------------- */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int parked, released;

static void *parker(void *argp) {
    uint32_t k = (uint32_t)(uintptr_t)argp, hs[512];
    for (uint32_t i = 0; i < k; i++) CHECK(tm_pool_get(pool, &hs[i]) == TM_OK, "parker get");
    for (uint32_t i = 0; i < k; i++) CHECK(tm_pool_put(pool, hs[i]) == TM_OK, "parker put");
    pthread_mutex_lock(&mu);
    parked++;
    pthread_cond_broadcast(&cv);
    while (!released) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void run_stealer(uint32_t nparkers, int bulk) {
    pthread_t t[16];
    parked = released = 0;
    for (uint32_t i = 0; i < nparkers; i++)
        pthread_create(&t[i], NULL, parker, (void *)(uintptr_t)pool->cache_size);
    pthread_mutex_lock(&mu);
    while (parked < (int)nparkers) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    tm_pool_stats_t st;
    tm_pool_stats(pool, &st);
    CHECK(st.cached > 0 && st.available == cap, "stealer: nothing parked");
    uint32_t *all = malloc(cap * sizeof(uint32_t));
    if (bulk) {
        CHECK(tm_pool_get_bulk(pool, all, cap) == TM_OK, "stealer: get_bulk(all) failed");
    } else {
        for (uint32_t i = 0; i < cap; i++)
            CHECK(tm_pool_get(pool, &all[i]) == TM_OK, "stealer: get %u of %u failed", i, cap);
    }
    uint32_t h;
    CHECK(tm_pool_get(pool, &h) == TM_EEMPTY, "stealer: one too many");
    CHECK(tm_pool_put_bulk(pool, all, cap, NULL) == TM_OK, "stealer: put back (duplicate?)");
    free(all);
    pthread_mutex_lock(&mu);
    released = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
    for (uint32_t i = 0; i < nparkers; i++) pthread_join(t[i], NULL);
    drain_and_count("stealer", cap);
}

/* ---- phase 4 ---------------------------------------------------------------- */
static tm_cache_t *claim_target;

static void *claim_briefly(void *unused) {
    (void)unused;
    /* SEQ_CST: the claimant's side of the handshake (cache.h). */
    __atomic_store_n(&claim_target->steal, 1, __ATOMIC_SEQ_CST);
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    __atomic_store_n(&claim_target->steal, 0, __ATOMIC_RELEASE);
    return NULL;
}

static void run_claimed_at_entry(void) {
    uint32_t h;
    uint32_t *all = malloc(cap * sizeof(uint32_t));
    /* Park some objects in our own cache. */
    for (int i = 0; i < 8; i++) CHECK(tm_pool_get(pool, &all[i]) == TM_OK, "claimed: get");
    for (int i = 0; i < 8; i++) CHECK(tm_pool_put(pool, all[i]) == TM_OK, "claimed: put");
    claim_target = pool->caches[tm_thread_slot1_];
    CHECK(claim_target && claim_target->len >= 8, "claimed: nothing cached");
    pthread_t t;
    pthread_create(&t, NULL, claim_briefly, NULL);
    while (!__atomic_load_n(&claim_target->steal, __ATOMIC_ACQUIRE)) sched_yield();
    /* Our cache is claimed as we enter: the call must wait, then see it all. */
    CHECK(tm_pool_get_bulk(pool, all, cap) == TM_OK, "claimed: get_bulk(all) failed");
    CHECK(tm_pool_get(pool, &h) == TM_EEMPTY, "claimed: one too many");
    pthread_join(t, NULL);
    CHECK(tm_pool_put_bulk(pool, all, cap, NULL) == TM_OK, "claimed: put back");
    free(all);
}

/* ---- phase 5 ---------------------------------------------------------------- */
static volatile int churn_stop;

static void *churn(void *argp) {
    uint64_t s = (uint64_t)(uintptr_t)argp;
    uint32_t held[64];
    while (!__atomic_load_n(&churn_stop, __ATOMIC_RELAXED)) {
        uint32_t k = 1 + (uint32_t)(rnd(&s) % 64);
        if (tm_pool_get_bulk(pool, held, k) == TM_OK)
            CHECK(tm_pool_put_bulk(pool, held, k, NULL) == TM_OK, "churn: put");
        for (uint32_t i = 0; i < k; i++)
            if (tm_pool_get(pool, &held[i]) != TM_OK) { k = i; break; }
        for (uint32_t i = 0; i < k; i++)
            CHECK(tm_pool_put(pool, held[i]) == TM_OK, "churn: put1");
    }
    return NULL;
}

static void run_fork(int forks) {
    pthread_t t[3];
    churn_stop = 0;
    for (int i = 0; i < 3; i++) pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 7));
    for (int f = 0; f < forks; f++) {
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            tm_pool_stats_t st;
            tm_pool_stats(pool, &st);
            uint8_t *seen = calloc(cap, 1);
            uint32_t n = 0, h;
            int ok = st.cached == 0;
            while (ok && tm_pool_get(pool, &h) == TM_OK) {
                ok = h < cap && !seen[h];
                if (ok) seen[h] = 1;
                n++;
            }
            if (!ok || n != st.available) {
                fprintf(stderr, "pool_stress: FAIL fork child: drained %u, available %llu, ok %d\n",
                        n, (unsigned long long)st.available, ok);
                _exit(1);
            }
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork %d: child failed", f);
    }
    __atomic_store_n(&churn_stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
}

static void setup(uint32_t capacity, uint32_t cache_size) {
    cap = capacity;
    mem = calloc(capacity, OBJ);
    CHECK(tm_pool_create(&pool, capacity, cache_size, mem, OBJ, OBJ, mode_flags) == TM_OK, "create");
}

static void teardown(void) {
    tm_pool_destroy(pool);
    free(mem);
}

int main(int argc, char **argv) {
    uint64_t ops = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
    const char *mode = argc > 2 ? argv[2] : "checked";
    if (strcmp(mode, "unchecked") == 0)
        mode_flags = TM_POOL_UNCHECKED;
    else if (strcmp(mode, "stats") == 0)
        mode_flags = TM_POOL_STATS;
    else
        CHECK(strcmp(mode, "checked") == 0, "mode must be checked, unchecked or stats: %s", mode);
    uint64_t total = 0;
    static const struct { uint32_t cap, cache; int threads; } cases[] = {
        {4096, 256, 2}, {512, 32, 4}, {100, 8, 8}, {20000, 512, 16}, {64, 0, 16}, {64, 1, 6},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        setup(cases[i].cap, cases[i].cache);
        run_mixed(cases[i].threads, ops);
        total += ops * (uint64_t)cases[i].threads;
        teardown();
    }

    setup(5000, 64);
    for (int round = 0; round < 20; round++) {
        pthread_t t[50];
        for (int i = 0; i < 50; i++) pthread_create(&t[i], NULL, fill_and_exit, NULL);
        for (int i = 0; i < 50; i++) pthread_join(t[i], NULL);
    }
    drain_and_count("exits", cap);
    teardown();

    static const uint32_t steal_cache[] = {1, 8, 256, 512};
    for (size_t i = 0; i < 4; i++) {
        for (int bulk = 0; bulk < 2; bulk++) {
            setup(2048, steal_cache[i]);
            run_stealer(3, bulk);
            teardown();
        }
    }

    setup(64, 16);
    run_claimed_at_entry();
    drain_and_count("claimed", cap);
    teardown();

    const char *forked = "fork skipped (TSan)";
#ifndef __SANITIZE_THREAD__
    forked = "20 forks while threads churn";
    for (size_t i = 0; i < 2; i++) {
        setup(i ? 3000 : 1000, i ? 256 : 0);
        run_fork(10);
        drain_and_count("fork", cap);
        teardown();
    }
#endif

    printf("pool_stress (%s): %llu mixed ops, 1000 exiting threads, 8 steal scenarios, "
           "claimed-at-entry, %s; hit path %s: OK\n", mode, (unsigned long long)total, forked,
           tm_pool_asymmetric() ? "asymmetric (membarrier)" : "symmetric (seq_cst)");
    return 0;
}
