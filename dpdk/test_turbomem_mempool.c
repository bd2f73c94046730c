/* dpdk/test_turbomem_mempool.c - the turbomem driver in the shape of DPDK's
 * mempool_autotest: basic get/put, full and empty, bulk, several lcores,
 * rte_mempool_avail_count / in_use_count exact, a non-EAL thread, bad input.
 * Every pool is made with rte_mempool_set_ops_byname(mp, "turbomem", NULL).
 *
 *   ./test_turbomem_mempool <EAL args>     e.g. --no-huge --no-pci --lcores=(0-3)@(0-1)
 *
 * Exit status 0 when every check passed; each failure prints file:line.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_atomic.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_version.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "turbomem_mempool.h"

static int failures;
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            failures++;                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
        }                                                                       \
    } while (0)

static struct rte_mempool *make_pool(const char *name, unsigned n, unsigned elt, unsigned cache, unsigned flags) {
    struct rte_mempool *mp = rte_mempool_create_empty(name, n, elt, cache, 0, SOCKET_ID_ANY, flags);
    if (!mp) {
        fprintf(stderr, "rte_mempool_create_empty(%s): %s\n", name, rte_strerror(rte_errno));
        return NULL;
    }
    int rc = rte_mempool_set_ops_byname(mp, TURBOMEM_MEMPOOL_OPS_NAME, NULL);
    if (rc != 0) {
        fprintf(stderr, "set_ops_byname(turbomem): %d (driver not loaded?)\n", rc);
        rte_mempool_free(mp);
        return NULL;
    }
    rc = rte_mempool_populate_default(mp);
    if (rc < 0 || (unsigned)rc != n) {
        fprintf(stderr, "populate_default(%s): %d\n", name, rc);
        rte_mempool_free(mp);
        return NULL;
    }
    return mp;
}

static void check_counts(struct rte_mempool *mp, unsigned in_use, int line) {
    unsigned avail = rte_mempool_avail_count(mp), used = rte_mempool_in_use_count(mp);
    if (avail != mp->size - in_use || used != in_use) {
        failures++;
        fprintf(stderr, "FAIL line %d: pool %s: avail %u in_use %u, expected %u and %u\n", line, mp->name, avail,
                used, mp->size - in_use, in_use);
    }
}
#define COUNTS(mp, in_use) check_counts(mp, in_use, __LINE__)

/* ---- memory: the region, its huge pages, every object inside it ------------- */

struct iter_ctx {
    const struct turbomem_mempool_info *info;
    unsigned n, outside, bad_hdr;
};

static void each_obj(struct rte_mempool *mp, void *arg, void *obj, unsigned idx) {
    struct iter_ctx *c = arg;
    (void)idx;
    const char *lo = c->info->region, *hi = lo + c->info->region_len;
    if ((const char *)obj < lo || (const char *)obj + mp->elt_size > hi)
        c->outside++;
    if (rte_mempool_from_obj(obj) != mp)
        c->bad_hdr++;
    c->n++;
}

static void test_memory(struct rte_mempool *mp) {
    struct turbomem_mempool_info info;
    int rc = turbomem_mempool_info(mp, &info);
    CHECK(rc == 0, "turbomem_mempool_info: %d", rc);
    if (rc)
        return;
    double pct = 100.0 * (double)info.huge_bytes / (double)info.region_len;
    printf("  %s: region %p + %zu B, stride %zu, THP %s, %s, %s, NUMA %s, IOVA %s: huge pages %zu B (%.1f%%)\n",
           mp->name, info.region, info.region_len, info.stride, info.thp_mode, info.advice, info.populate,
           info.numa, info.iova, info.huge_bytes, pct);
    CHECK(info.capacity == mp->size, "capacity %u", info.capacity);
    CHECK(info.region_len >= (size_t)mp->size * info.stride, "region too small");
    CHECK(info.region_len % info.huge_page_size == 0 && (uintptr_t)info.region % info.huge_page_size == 0,
          "region not huge-page aligned");
    if (!strcmp(info.thp_mode, "madvise") || !strcmp(info.thp_mode, "always"))
        CHECK(info.huge_bytes == info.region_len, "THP %s but coverage %.1f%%", info.thp_mode, pct);
    struct iter_ctx c = {.info = &info};
    unsigned n = rte_mempool_obj_iter(mp, each_obj, &c);
    CHECK(n == mp->size && c.n == mp->size, "obj_iter saw %u", n);
    CHECK(c.outside == 0, "%u objects outside the region", c.outside);
    CHECK(c.bad_hdr == 0, "%u objects with a wrong header", c.bad_hdr);
}

/* ---- basic, bulk, full and empty ------------------------------------------------ */

static void test_basic(struct rte_mempool *mp) {
    void *obj, *obj2;
    COUNTS(mp, 0);
    CHECK(rte_mempool_get(mp, &obj) == 0, "get");
    COUNTS(mp, 1);
    memset(obj, 0xA5, mp->elt_size); /* the object's memory is ours to write */
    CHECK(rte_mempool_get(mp, &obj2) == 0, "second get");
    CHECK(obj2 != obj, "same object twice");
    COUNTS(mp, 2);
    rte_mempool_put(mp, obj);
    rte_mempool_put(mp, obj2);
    COUNTS(mp, 0);
    CHECK(rte_mempool_full(mp), "not full after putting everything back");
    /* The IOVA DPDK stored in the header: the address in VA mode. */
    CHECK(rte_mempool_get(mp, &obj) == 0, "get");
    if (rte_eal_iova_mode() == RTE_IOVA_VA)
        CHECK(rte_mempool_virt2iova(obj) == (rte_iova_t)(uintptr_t)obj, "iova %" PRIx64 " for %p",
              (uint64_t)rte_mempool_virt2iova(obj), obj);
    rte_mempool_put(mp, obj);
}

static int cmp_ptr(const void *a, const void *b) {
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void test_bulk_full_empty(struct rte_mempool *mp) {
    unsigned n = mp->size;
    void **objs = calloc(n + 1, sizeof(void *));
    /* Bulks of several sizes, every object distinct. */
    static const unsigned sizes[] = {1, 4, 32, 250, 512, 1000, 2000};
    for (unsigned k = 0; k < RTE_DIM(sizes); k++) {
        unsigned b = sizes[k];
        if (b > n)
            continue;
        CHECK(rte_mempool_get_bulk(mp, objs, b) == 0, "get_bulk %u", b);
        COUNTS(mp, b);
        qsort(objs, b, sizeof *objs, cmp_ptr);
        for (unsigned i = 1; i < b; i++)
            CHECK(objs[i] != objs[i - 1], "bulk %u handed out %p twice", b, objs[i]);
        rte_mempool_put_bulk(mp, objs, b);
        COUNTS(mp, 0);
    }
    /* Empty: one at a time until nothing is left, then a get fails. */
    for (unsigned i = 0; i < n; i++)
        if (rte_mempool_get(mp, &objs[i]) != 0) {
            CHECK(0, "get %u of %u failed", i, n);
            n = i;
            break;
        }
    COUNTS(mp, n);
    CHECK(rte_mempool_empty(mp), "not empty");
    void *extra;
    CHECK(rte_mempool_get(mp, &extra) < 0, "get from an empty pool succeeded");
    COUNTS(mp, n);
    qsort(objs, n, sizeof *objs, cmp_ptr);
    for (unsigned i = 1; i < n; i++)
        CHECK(objs[i] != objs[i - 1], "object %p handed out twice", objs[i]);
    rte_mempool_put_bulk(mp, objs, n);
    COUNTS(mp, 0);
    CHECK(rte_mempool_full(mp), "not full");
    /* All or nothing: asking for one more than the pool holds takes nothing. */
    CHECK(rte_mempool_get_bulk(mp, objs, mp->size + 1) < 0, "get_bulk(size + 1) succeeded");
    COUNTS(mp, 0);
    CHECK(rte_mempool_get_bulk(mp, objs, mp->size) == 0, "get_bulk(size) failed");
    COUNTS(mp, mp->size);
    CHECK(rte_mempool_get_bulk(mp, &extra, 1) < 0, "get_bulk(1) from an empty pool succeeded");
    rte_mempool_put_bulk(mp, objs, mp->size);
    COUNTS(mp, 0);
    free(objs);
}

/* rte_mempool_ops_get_count is internal to DPDK: call the op itself. */
static unsigned ops_count(struct rte_mempool *mp) {
    return rte_mempool_get_ops(mp->ops_index)->get_count(mp);
}

/* The ops directly (no lcore cache): all or nothing, and foreign pointers refused. */
static void test_ops_direct(struct rte_mempool *mp) {
    void *objs[64];
    unsigned avail = ops_count(mp);
    CHECK(rte_mempool_ops_dequeue_bulk(mp, objs, 64) == 0, "dequeue 64");
    CHECK(ops_count(mp) == avail - 64, "count after dequeue");
    char *good = objs[5];
    void *bad[3] = {objs[0], good + 1, objs[1]}; /* inside an object, not at its start */
    CHECK(rte_mempool_ops_enqueue_bulk(mp, bad, 3) == -EINVAL, "misaligned pointer accepted");
    CHECK(ops_count(mp) == avail - 64, "a refused enqueue changed the count");
    struct turbomem_mempool_info info;
    turbomem_mempool_info(mp, &info);
    for (size_t off = 1; off < info.stride; off += 7) {
        void *p = good + off;
        CHECK(rte_mempool_ops_enqueue_bulk(mp, &p, 1) == -EINVAL, "pointer obj+%zu accepted", off);
    }
    void *outside[2] = {(char *)info.region - 4096, (char *)info.region + info.region_len + 64};
    CHECK(rte_mempool_ops_enqueue_bulk(mp, &outside[0], 1) == -EINVAL, "pointer below the region accepted");
    CHECK(rte_mempool_ops_enqueue_bulk(mp, &outside[1], 1) == -EINVAL, "pointer above the region accepted");
    CHECK(ops_count(mp) == avail - 64, "refused enqueues changed the count");
    CHECK(rte_mempool_ops_enqueue_bulk(mp, objs, 64) == 0, "enqueue 64");
    CHECK(ops_count(mp) == avail, "count after enqueue");
    if (info.checked) {
        /* A put of an object that is already free: refused while the core
         * checks state.  Unchecked (TM_POOL_UNCHECKED, DPDK's contract, what
         * the driver uses when the core has it) a double put is the caller's
         * bug, undetected as in every DPDK mempool driver: not committed here. */
        void *again = objs[0];
        int rc = rte_mempool_ops_enqueue_bulk(mp, &again, 1);
        CHECK(rc == -EINVAL, "double put accepted (%d)", rc);
        CHECK(ops_count(mp) == avail, "a refused double put changed the count");
    }
    /* A dequeue larger than what is there takes nothing. */
    void **all = calloc(avail + 1, sizeof(void *));
    CHECK(rte_mempool_ops_dequeue_bulk(mp, all, avail + 1) == -ENOBUFS, "over-dequeue");
    CHECK(ops_count(mp) == avail, "over-dequeue changed the count");
    free(all);
}

/* ---- several lcores and a non-EAL thread --------------------------------------- */

#define OWNER_FREE 0u
struct stress {
    struct rte_mempool *mp;
    unsigned iters;
    volatile int start;
    int errors;
    unsigned finished; /* RELEASE by each thread at its end, ACQUIRE by main: an
                          edge ThreadSanitizer sees (DPDK's lcore wait is not instrumented) */
};

/* Take a random bulk, stamp each object with our id (it must be unowned),
 * hold some for a while, check the stamps, unstamp and put back. */
static int stress_loop(struct stress *s, uint32_t id) {
    enum { HOLD = 96 };
    void *held[HOLD];
    unsigned nheld = 0;
    uint64_t seed = 0x9E3779B97F4A7C15ull * (id + 1);
    while (!__atomic_load_n(&s->start, __ATOMIC_ACQUIRE))
        rte_pause();
    for (unsigned it = 0; it < s->iters; it++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        unsigned want = 1 + (unsigned)(seed % 48);
        if (nheld + want <= HOLD && (seed >> 20) % 3 != 0) {
            if (rte_mempool_get_bulk(s->mp, held + nheld, want) == 0) {
                for (unsigned i = 0; i < want; i++) {
                    uint32_t *stamp = held[nheld + i];
                    uint32_t prev = __atomic_exchange_n(stamp, id, __ATOMIC_RELAXED);
                    if (prev != OWNER_FREE) {
                        __atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED);
                        fprintf(stderr, "FAIL: thread %u got %p owned by %u\n", id, (void *)stamp, prev);
                    }
                }
                nheld += want;
            }
        } else if (nheld) {
            unsigned give = 1 + (unsigned)((seed >> 32) % nheld);
            for (unsigned i = nheld - give; i < nheld; i++) {
                uint32_t *stamp = held[i];
                uint32_t prev = __atomic_exchange_n(stamp, OWNER_FREE, __ATOMIC_RELAXED);
                if (prev != id) {
                    __atomic_fetch_add(&s->errors, 1, __ATOMIC_RELAXED);
                    fprintf(stderr, "FAIL: thread %u held %p stamped %u\n", id, (void *)stamp, prev);
                }
            }
            rte_mempool_put_bulk(s->mp, held + nheld - give, give);
            nheld -= give;
        }
    }
    for (unsigned i = 0; i < nheld; i++)
        *(uint32_t *)held[i] = OWNER_FREE;
    rte_mempool_put_bulk(s->mp, held, nheld);
    __atomic_fetch_add(&s->finished, 1, __ATOMIC_RELEASE);
    return 0;
}

static int lcore_main(void *arg) {
    return stress_loop(arg, rte_lcore_id() + 1);
}

struct non_eal {
    struct stress *s;
    unsigned lcore_id; /* what rte_lcore_id() said in the thread */
};

static void *non_eal_main(void *arg) {
    struct non_eal *ne = arg;
    ne->lcore_id = rte_lcore_id();
    stress_loop(ne->s, 1000); /* no lcore cache: every call reaches the driver */
    return NULL;
}

static void zero_stamps(struct rte_mempool *mp, void *arg, void *obj, unsigned idx) {
    (void)mp, (void)arg, (void)idx;
    *(uint32_t *)obj = OWNER_FREE;
}

static void test_threads(struct rte_mempool *mp, unsigned iters, int with_non_eal) {
    struct stress s = {.mp = mp, .iters = iters};
    rte_mempool_obj_iter(mp, zero_stamps, NULL);
    unsigned lcore, workers = 0;
    RTE_LCORE_FOREACH_WORKER(lcore) {
        rte_eal_remote_launch(lcore_main, &s, lcore);
        workers++;
    }
    pthread_t th;
    struct non_eal ne = {.s = &s};
    if (with_non_eal)
        CHECK(pthread_create(&th, NULL, non_eal_main, &ne) == 0, "pthread_create");
    __atomic_store_n(&s.start, 1, __ATOMIC_RELEASE);
    lcore_main(&s);
    rte_eal_mp_wait_lcore();
    while (__atomic_load_n(&s.finished, __ATOMIC_ACQUIRE) != workers + 1 + (with_non_eal ? 1u : 0u))
        rte_pause(); /* the non-EAL thread may still be running: it is joined below */
    if (with_non_eal) {
        pthread_join(th, NULL);
        CHECK(ne.lcore_id == LCORE_ID_ANY, "the pthread is an EAL lcore (%u)", ne.lcore_id);
    }
    printf("  %s: %u lcores%s x %u iterations, %d ownership errors\n", mp->name, workers + 1,
           with_non_eal ? " + 1 non-EAL thread" : "", iters, s.errors);
    CHECK(s.errors == 0, "%d objects owned twice", s.errors);
    COUNTS(mp, 0);
}

/* A non-EAL thread that takes objects and exits holding none: its TurboMem
 * thread slot is recycled; and objects put by another thread. */
static void *take_and_leave(void *arg) {
    struct rte_mempool *mp = arg;
    void *objs[40];
    if (rte_mempool_get_bulk(mp, objs, 40) != 0)
        return (void *)1;
    rte_mempool_put_bulk(mp, objs, 20);
    void **rest = malloc(20 * sizeof(void *));
    memcpy(rest, objs + 20, 20 * sizeof(void *));
    return rest; /* the main thread puts these back */
}

static void test_non_eal_handover(struct rte_mempool *mp) {
    for (int round = 0; round < 50; round++) {
        pthread_t th;
        void *ret = NULL;
        pthread_create(&th, NULL, take_and_leave, mp);
        pthread_join(th, &ret);
        CHECK(ret != NULL && ret != (void *)1, "non-EAL thread round %d failed", round);
        if (ret == NULL || ret == (void *)1)
            return;
        COUNTS(mp, 20);
        rte_mempool_put_bulk(mp, ret, 20);
        free(ret);
        COUNTS(mp, 0);
    }
}

/* ---- strides: the exact division for odd, even and tiny element sizes -------- */

static void test_strides(void) {
    static const struct { unsigned elt, flags; } cases[] = {
        {1, RTE_MEMPOOL_F_NO_CACHE_ALIGN | RTE_MEMPOOL_F_NO_SPREAD},
        {13, RTE_MEMPOOL_F_NO_CACHE_ALIGN | RTE_MEMPOOL_F_NO_SPREAD},
        {100, 0},
        {2048, RTE_MEMPOOL_F_NO_SPREAD},
        {2176 + 128, 0},
        {9000, 0},
    };
    for (unsigned k = 0; k < RTE_DIM(cases); k++) {
        char name[32];
        snprintf(name, sizeof name, "tm_stride_%u", k);
        unsigned n = 777;
        struct rte_mempool *mp = make_pool(name, n, cases[k].elt, 0, cases[k].flags);
        CHECK(mp != NULL, "pool with element %u", cases[k].elt);
        if (!mp)
            continue;
        struct turbomem_mempool_info info;
        turbomem_mempool_info(mp, &info);
        void **objs = calloc(n, sizeof(void *));
        CHECK(rte_mempool_ops_dequeue_bulk(mp, objs, n) == 0, "dequeue all");
        /* Every object exactly once, each at the start of its slot (the order
         * the pool hands them out in is its own business). */
        unsigned bad = 0;
        unsigned char *seen = calloc(n, 1);
        for (unsigned i = 0; i < n; i++) {
            size_t off = (size_t)((char *)objs[i] - ((char *)info.region + mp->header_size));
            if ((char *)objs[i] < (char *)info.region + mp->header_size || off % info.stride != 0 ||
                off / info.stride >= n || seen[off / info.stride]++)
                bad++;
        }
        free(seen);
        CHECK(bad == 0, "element %u (stride %zu): %u objects not where expected", cases[k].elt, info.stride, bad);
        CHECK(rte_mempool_ops_enqueue_bulk(mp, objs, n) == 0, "enqueue all");
        COUNTS(mp, 0);
        printf("  element %u, flags %#x: stride %zu, %u objects round-trip\n", cases[k].elt, cases[k].flags,
               info.stride, n);
        free(objs);
        rte_mempool_free(mp);
    }
}

/* ---- mbufs through the ops name ----------------------------------------------- */

static void test_mbuf_pool(void) {
    struct rte_mempool *mp = rte_pktmbuf_pool_create_by_ops("tm_mbuf", 2047, 64, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                                            SOCKET_ID_ANY, TURBOMEM_MEMPOOL_OPS_NAME);
    CHECK(mp != NULL, "pktmbuf pool: %s", rte_strerror(rte_errno));
    if (!mp)
        return;
    struct rte_mbuf *m[64];
    CHECK(rte_pktmbuf_alloc_bulk(mp, m, 64) == 0, "alloc_bulk");
    for (int i = 0; i < 64; i++) {
        char *p = rte_pktmbuf_append(m[i], 1500);
        CHECK(p != NULL, "append");
        if (p)
            memset(p, i, 1500);
        CHECK(rte_mbuf_check(m[i], 1, NULL) == 0, "mbuf %d fails rte_mbuf_check", i);
    }
    rte_pktmbuf_free_bulk(m, 64);
    COUNTS(mp, 0);
    test_memory(mp);
    rte_mempool_free(mp);
}

int main(int argc, char **argv) {
    if (rte_eal_init(argc, argv) < 0) {
        fprintf(stderr, "rte_eal_init failed: %s\n", rte_strerror(rte_errno));
        return 2;
    }
    printf("turbomem mempool test: DPDK %s, %u lcores, IOVA %s\n", rte_version(), rte_lcore_count(),
           rte_eal_iova_mode() == RTE_IOVA_VA ? "VA" : "PA");
    static const unsigned caches[] = {0, 32, 256};
    for (unsigned k = 0; k < RTE_DIM(caches); k++) {
        char name[32];
        snprintf(name, sizeof name, "tm_test_cache%u", caches[k]);
        struct rte_mempool *mp = make_pool(name, 4095, 2048, caches[k], 0);
        CHECK(mp != NULL, "create %s", name);
        if (!mp)
            continue;
        printf("pool %s: %u objects, lcore cache %u\n", name, mp->size, caches[k]);
        test_memory(mp);
        test_basic(mp);
        test_bulk_full_empty(mp);
        test_ops_direct(mp);
        test_threads(mp, 200000, 0);
        test_threads(mp, 200000, 1);
        test_non_eal_handover(mp);
        COUNTS(mp, 0);
        rte_mempool_free(mp);
    }
    test_strides();
    test_mbuf_pool();
    /* rte_mempool_populate_anon (testpmd --mp-alloc=anon) goes through the same op. */
    {
        struct rte_mempool *mp = rte_mempool_create_empty("tm_anon", 1500, 700, 32, 0, SOCKET_ID_ANY, 0);
        CHECK(mp && rte_mempool_set_ops_byname(mp, TURBOMEM_MEMPOOL_OPS_NAME, NULL) == 0, "anon pool");
        if (mp) {
            int n = rte_mempool_populate_anon(mp);
            CHECK(n == 1500, "populate_anon gave %d", n);
            COUNTS(mp, 0);
            test_memory(mp);
            test_basic(mp);
            rte_mempool_free(mp);
        }
    }
    /* Create and free repeatedly: nothing leaks, regions come back. */
    for (int i = 0; i < 20; i++) {
        struct rte_mempool *mp = make_pool("tm_again", 1000, 512, 16, 0);
        CHECK(mp != NULL, "re-create %d", i);
        if (mp)
            rte_mempool_free(mp);
    }
    rte_eal_cleanup();
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}
