/* core_bench.c - TurboMem's C pool against DPDK's rte_mempool, one harness.
 *
 * The shape follows DPDK's mempool_perf_autotest: every thread repeatedly
 * gets n_keep objects in bulks of `bulk`, then puts them all back in bulks of
 * `bulk`; one "object" is one get plus one put (DPDK's rate_persec).
 *
 * TurboMem runs in two modes, both through include/turbomem/pool.h and the
 * compiled src/pool.c: "checked" (the default: per-object state, double
 * frees refused) and "unchecked" (TM_POOL_UNCHECKED: DPDK's contract).
 * Like DPDK's harness, which looks its per-lcore cache up once per thread
 * (rte_mempool_default_cache) and passes it to rte_mempool_generic_get/put,
 * TurboMem's loop looks its thread cache up once (tm_pool_thread_cache) and
 * calls tm_pool_cache_get/put.  The *_tls variants call tm_pool_get/put
 * instead, which find the thread's cache on every call.
 *
 * Build (TurboMem only):
 *   cc -O2 -march=native -I include turbomem/bench/core_bench.c src/pool.c -o core_bench -lpthread
 * Build (with DPDK):
 *   cc -O2 -march=native -DTM_WITH_DPDK -I include turbomem/bench/core_bench.c src/pool.c \
 *      -o core_bench $(pkg-config --cflags --libs libdpdk) -lpthread
 *
 * Usage: core_bench [options]      (see usage() below)
 * Output: one JSON object per line on stdout, one per measurement, plus a
 * first {"type":"meta",...} line describing the build and the run.
 *
 * Threads: with DPDK, every implementation runs in the same EAL lcore threads
 * (rte_eal_remote_launch on lcores 1..T-1, the main lcore 0 runs its share
 * itself), so both are pinned identically.  Without DPDK: the main thread is
 * pinned to CPU 0 and T-1 pthreads to CPUs 1..T-1 (pthread_setaffinity_np).
 * All threads pass a start barrier, warm up, pass a second barrier, then run
 * the timed loop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "turbomem/pool.h"

#ifdef TM_WITH_DPDK
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mempool.h>
#include <rte_version.h>
#endif

#define ELT_SIZE 2048u
#define MAX_THREADS 64u
#define MAX_LIST 32u
#define HUGE_2M (2u << 20)

/* ---- options ---------------------------------------------------------------- */

enum impl_kind { IMPL_TM = 0, IMPL_DPDK = 1 };

struct impl {
    enum impl_kind kind;
    const char *name;   /* "turbomem" / "dpdk" */
    const char *driver; /* "checked" / "unchecked" / "ring_mp_mc" / "stack" / "lf_stack" */
};

static struct opts {
    unsigned caches[MAX_LIST], ncaches;
    unsigned bulks[MAX_LIST], nbulks;
    unsigned keeps[MAX_LIST], nkeeps; /* 0 stands for "n_keep = bulk" */
    unsigned threads[MAX_LIST], nthreads;
    struct impl impls[8];
    unsigned nimpls;
    unsigned reps;
    double seconds, warmup;
    unsigned pool_size;
    int list_only;
} O;

static void usage(FILE *f) {
    fprintf(f,
            "usage: core_bench [--impls tm,tm_unchecked,tm_tls,tm_unchecked_tls,ring_mp_mc,stack,lf_stack] [--caches 0,256,512]\n"
            "                  [--bulks 1,4,8,32,64,128,256] [--keeps bulk,128,512,2048]\n"
            "                  [--threads 1,all] [--reps 5] [--seconds 0.2] [--warmup 0.02]\n"
            "                  [--pool-size 16384] [--list] [-- EAL args...]\n"
            "  --impls: tm is TurboMem checked (default mode), tm_unchecked TM_POOL_UNCHECKED, both\n"
            "           through a thread cache looked up once (tm_pool_cache_*, like DPDK's harness);\n"
            "           tm_tls, tm_unchecked_tls: the same through tm_pool_get/put (lookup per call);\n"
            "           the others are DPDK mempool drivers (needs -DTM_WITH_DPDK).\n"
            "  --keeps: 'bulk' means n_keep = bulk; combinations with n_keep < bulk are skipped.\n"
            "  --threads: numbers or 'all' (= online CPUs, or the EAL lcore count).\n"
            "  --list: print the measurement plan as JSON lines and exit.\n"
            "  EAL args after '--' replace the defaults (-l 0-(T-1) --no-huge --no-pci\n"
            "  --no-telemetry --no-shconf --log-level=1 -m 512).\n");
}

static int parse_list(const char *s, unsigned *out, unsigned *n, int allow_bulk, int allow_all) {
    *n = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n >= MAX_LIST)
            goto bad;
        if (allow_bulk && strcmp(tok, "bulk") == 0)
            out[(*n)++] = 0;
        else if (allow_all && strcmp(tok, "all") == 0)
            out[(*n)++] = 0;
        else {
            char *end;
            unsigned long v = strtoul(tok, &end, 10);
            if (*end || end == tok || v > 1u << 20)
                goto bad;
            out[(*n)++] = (unsigned)v;
        }
    }
    free(dup);
    return *n ? 0 : -1;
bad:
    free(dup);
    return -1;
}

static int parse_impls(const char *s) {
    O.nimpls = 0;
    char *dup = strdup(s), *save = NULL;
    for (char *tok = strtok_r(dup, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (O.nimpls >= 8)
            break;
        struct impl *im = &O.impls[O.nimpls];
        if (strcmp(tok, "tm") == 0 || strcmp(tok, "turbomem") == 0) {
            *im = (struct impl){IMPL_TM, "turbomem", "checked"};
        } else if (strcmp(tok, "tm_unchecked") == 0) {
            *im = (struct impl){IMPL_TM, "turbomem", "unchecked"};
        } else if (strcmp(tok, "tm_tls") == 0) {
            *im = (struct impl){IMPL_TM, "turbomem", "checked_tls"};
        } else if (strcmp(tok, "tm_unchecked_tls") == 0) {
            *im = (struct impl){IMPL_TM, "turbomem", "unchecked_tls"};
        } else if (strcmp(tok, "ring_mp_mc") == 0 || strcmp(tok, "stack") == 0 ||
                   strcmp(tok, "lf_stack") == 0) {
#ifdef TM_WITH_DPDK
            *im = (struct impl){IMPL_DPDK, "dpdk", NULL};
            im->driver = strcmp(tok, "ring_mp_mc") == 0 ? "ring_mp_mc"
                         : strcmp(tok, "stack") == 0    ? "stack"
                                                        : "lf_stack";
#else
            fprintf(stderr, "core_bench: built without DPDK, skipping impl %s\n", tok);
            continue;
#endif
        } else {
            fprintf(stderr, "core_bench: unknown impl %s\n", tok);
            free(dup);
            return -1;
        }
        O.nimpls++;
    }
    free(dup);
    return O.nimpls ? 0 : -1;
}

/* ---- time and barrier ------------------------------------------------------- */

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Sense-reversing spin barrier: every thread spins on its own CPU. */
static struct {
    unsigned count TM_ALIGNED(64);
    unsigned sense TM_ALIGNED(64);
    unsigned total;
} B;

static void barrier_init(unsigned total) {
    B.count = 0;
    B.sense = 0;
    B.total = total;
}

static void barrier_wait(unsigned *local_sense) {
    unsigned s = *local_sense = !*local_sense;
    if (__atomic_add_fetch(&B.count, 1, __ATOMIC_ACQ_REL) == B.total) {
        __atomic_store_n(&B.count, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&B.sense, s, __ATOMIC_RELEASE);
    } else {
        while (__atomic_load_n(&B.sense, __ATOMIC_ACQUIRE) != s)
            TM_CPU_RELAX();
    }
}

/* ---- one measurement ---------------------------------------------------------- */

struct job {
    const struct impl *impl;
    unsigned cache, bulk, keep, threads;
    double seconds, warmup;
    tm_pool_t *tp;
#ifdef TM_WITH_DPDK
    struct rte_mempool *mp;
#endif
    volatile int failed;
};

struct tres {
    uint64_t objects;
    double elapsed;
    char pad[48];
} TM_ALIGNED(64);

static struct tres RES[MAX_THREADS];

/* Objects per time check: like DPDK's inner loop of N objects, so the clock
 * read is amortised even for n_keep = 1. */
static unsigned iters_per_check(unsigned keep) {
    unsigned it = 16384u / keep;
    return it ? it : 1;
}

/* One timed loop; GET/PUT/GET_BULK/PUT_BULK name the calls (per-call cache
 * lookup, or the cache looked up once in `c`). */
#define TM_LOOP_BODY(GET, PUT, GET_BULK, PUT_BULK)                                 \
    do {                                                                           \
        for (unsigned it = 0; it < inner; it++) {                                  \
            if (bulk == 1) {                                                       \
                for (unsigned i = 0; i < keep; i++)                                \
                    if (TM_UNLIKELY(GET(&tab[i]) != TM_OK))                        \
                        goto fail;                                                 \
                for (unsigned i = 0; i < keep; i++)                                \
                    if (TM_UNLIKELY(PUT(tab[i]) != TM_OK))                         \
                        goto fail;                                                 \
            } else {                                                               \
                for (unsigned i = 0; i < keep; i += bulk)                          \
                    if (TM_UNLIKELY(GET_BULK(&tab[i], bulk) != TM_OK))             \
                        goto fail;                                                 \
                for (unsigned i = 0; i < keep; i += bulk)                          \
                    if (TM_UNLIKELY(PUT_BULK(&tab[i], bulk) != TM_OK))             \
                        goto fail;                                                 \
            }                                                                      \
        }                                                                          \
        objs += (uint64_t)inner * keep;                                            \
        t = now_s();                                                               \
    } while (t - t0 < secs)

__attribute__((noinline)) static uint64_t tm_loop(struct job *j, uint32_t *tab, double secs, double *elapsed) {
    tm_pool_t *p = j->tp;
    const unsigned keep = j->keep, bulk = j->bulk, inner = iters_per_check(keep);
    uint64_t objs = 0;
    double t0 = now_s(), t;
    if (strstr(j->impl->driver, "_tls")) {
#define G(o) tm_pool_get(p, o)
#define P(h) tm_pool_put(p, h)
#define GB(o, n) tm_pool_get_bulk(p, o, n)
#define PB(hs, n) tm_pool_put_bulk(p, hs, n, NULL)
        TM_LOOP_BODY(G, P, GB, PB);
#undef G
#undef P
#undef GB
#undef PB
    } else {
        tm_cache_t *c = tm_pool_thread_cache(p); /* once, as DPDK's harness does */
#define G(o) tm_pool_cache_get(p, c, o)
#define P(h) tm_pool_cache_put(p, c, h)
#define GB(o, n) tm_pool_cache_get_bulk(p, c, o, n, NULL)
#define PB(hs, n) tm_pool_cache_put_bulk(p, c, hs, n, NULL)
        TM_LOOP_BODY(G, P, GB, PB);
#undef G
#undef P
#undef GB
#undef PB
    }
    *elapsed = t - t0;
    return objs;
fail:
    j->failed = 1;
    *elapsed = now_s() - t0;
    return 0;
}

#ifdef TM_WITH_DPDK
__attribute__((noinline)) static uint64_t dpdk_loop(struct job *j, void **tab, double secs, double *elapsed) {
    struct rte_mempool *mp = j->mp;
    const unsigned keep = j->keep, bulk = j->bulk, inner = iters_per_check(keep);
    struct rte_mempool_cache *cache = rte_mempool_default_cache(mp, rte_lcore_id());
    uint64_t objs = 0;
    double t0 = now_s(), t;
    do {
        for (unsigned it = 0; it < inner; it++) {
            for (unsigned i = 0; i < keep; i += bulk)
                if (unlikely(rte_mempool_generic_get(mp, &tab[i], bulk, cache) < 0))
                    goto fail;
            for (unsigned i = 0; i < keep; i += bulk)
                rte_mempool_generic_put(mp, &tab[i], bulk, cache);
        }
        objs += (uint64_t)inner * keep;
        t = now_s();
    } while (t - t0 < secs);
    *elapsed = t - t0;
    return objs;
fail:
    j->failed = 1;
    *elapsed = now_s() - t0;
    return 0;
}
#endif

/* Runs on each of the `threads` participating threads; idx in [0, threads). */
static void worker_body(struct job *j, unsigned idx) {
    unsigned sense = 0;
    double el = 0;
    uint64_t n = 0;
    void *tab = calloc(j->keep, sizeof(void *));
    if (!tab) {
        j->failed = 1;
    }
    barrier_wait(&sense); /* everyone present */
    if (tab) {
        if (j->impl->kind == IMPL_TM)
            tm_loop(j, tab, j->warmup, &el);
#ifdef TM_WITH_DPDK
        else
            dpdk_loop(j, tab, j->warmup, &el);
#endif
    }
    barrier_wait(&sense); /* warm: start the clock together */
    if (tab && !j->failed) {
        if (j->impl->kind == IMPL_TM)
            n = tm_loop(j, tab, j->seconds, &el);
#ifdef TM_WITH_DPDK
        else
            n = dpdk_loop(j, tab, j->seconds, &el);
#endif
    }
    RES[idx].objects = n;
    RES[idx].elapsed = el;
    free(tab);
}

/* ---- launching threads ------------------------------------------------------ */

#ifdef TM_WITH_DPDK
struct lc_arg {
    struct job *j;
    unsigned idx;
};
static struct lc_arg LC_ARGS[MAX_THREADS];

static int lcore_entry(void *a) {
    struct lc_arg *la = a;
    worker_body(la->j, la->idx);
    return 0;
}

static unsigned LCORES[MAX_THREADS]; /* lcore ids: main first */
static unsigned NLCORES;

static int launch(struct job *j) {
    unsigned t = j->threads;
    barrier_init(t);
    for (unsigned i = 1; i < t; i++) {
        LC_ARGS[i] = (struct lc_arg){j, i};
        if (rte_eal_remote_launch(lcore_entry, &LC_ARGS[i], LCORES[i]) != 0)
            return -1;
    }
    LC_ARGS[0] = (struct lc_arg){j, 0};
    lcore_entry(&LC_ARGS[0]);
    for (unsigned i = 1; i < t; i++)
        rte_eal_wait_lcore(LCORES[i]);
    return 0;
}
#else
struct pt_arg {
    struct job *j;
    unsigned idx;
};
static struct pt_arg PT_ARGS[MAX_THREADS];
static unsigned NCPUS;

static int pin_to(pthread_t th, unsigned cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(th, sizeof set, &set);
}

static void *pt_entry(void *a) {
    struct pt_arg *pa = a;
    worker_body(pa->j, pa->idx);
    return NULL;
}

static int launch(struct job *j) {
    unsigned t = j->threads;
    pthread_t th[MAX_THREADS];
    barrier_init(t);
    for (unsigned i = 1; i < t; i++) {
        PT_ARGS[i] = (struct pt_arg){j, i};
        pthread_attr_t at;
        cpu_set_t set;
        pthread_attr_init(&at);
        CPU_ZERO(&set);
        CPU_SET(i % NCPUS, &set);
        pthread_attr_setaffinity_np(&at, sizeof set, &set);
        if (pthread_create(&th[i], &at, pt_entry, &PT_ARGS[i]) != 0)
            return -1;
        pthread_attr_destroy(&at);
    }
    PT_ARGS[0] = (struct pt_arg){j, 0};
    pt_entry(&PT_ARGS[0]);
    for (unsigned i = 1; i < t; i++)
        pthread_join(th[i], NULL);
    return 0;
}
#endif

/* ---- pools ------------------------------------------------------------------ */

/* TurboMem's object memory: one 2 MB aligned anonymous mapping, THP advised,
 * written once (the pool itself never touches it; DPDK's populate writes its
 * object headers, so both start from resident memory). */
static void *REGION;
static size_t REGION_LEN;
static int REGION_THP;

static int region_init(unsigned n) {
    REGION_LEN = ((size_t)n * ELT_SIZE + HUGE_2M - 1) / HUGE_2M * HUGE_2M;
    size_t map = REGION_LEN + HUGE_2M;
    unsigned char *m = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return -1;
    uintptr_t a = ((uintptr_t)m + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1);
    if (a > (uintptr_t)m)
        munmap(m, a - (uintptr_t)m);
    size_t tail = (uintptr_t)m + map - (a + REGION_LEN);
    if (tail)
        munmap((void *)(a + REGION_LEN), tail);
    REGION = (void *)a;
#ifdef MADV_HUGEPAGE
    REGION_THP = madvise(REGION, REGION_LEN, MADV_HUGEPAGE) == 0;
#endif
    memset(REGION, 0, REGION_LEN);
    return 0;
}

static int pool_setup(struct job *j, char *err, size_t errlen) {
    if (j->impl->kind == IMPL_TM) {
        unsigned flags = strncmp(j->impl->driver, "unchecked", 9) == 0 ? TM_POOL_UNCHECKED : 0;
        int rc = tm_pool_create(&j->tp, O.pool_size, j->cache, REGION, ELT_SIZE, ELT_SIZE, flags);
        if (rc != TM_OK) {
            snprintf(err, errlen, "tm_pool_create: %d", rc);
            return -1;
        }
        return 0;
    }
#ifdef TM_WITH_DPDK
    char name[RTE_MEMPOOL_NAMESIZE];
    static unsigned seq;
    snprintf(name, sizeof name, "bench%u", seq++);
    j->mp = rte_mempool_create_empty(name, O.pool_size, ELT_SIZE, j->cache, 0, SOCKET_ID_ANY, 0);
    if (!j->mp) {
        snprintf(err, errlen, "rte_mempool_create_empty: %s", rte_strerror(rte_errno));
        return -1;
    }
    int rc = rte_mempool_set_ops_byname(j->mp, j->impl->driver, NULL);
    if (rc < 0) {
        snprintf(err, errlen, "rte_mempool_set_ops_byname(%s): %s", j->impl->driver, rte_strerror(-rc));
        rte_mempool_free(j->mp);
        j->mp = NULL;
        return -1;
    }
    rc = rte_mempool_populate_default(j->mp);
    if (rc < 0) {
        snprintf(err, errlen, "rte_mempool_populate_default: %s", rte_strerror(-rc));
        rte_mempool_free(j->mp);
        j->mp = NULL;
        return -1;
    }
    return 0;
#else
    snprintf(err, errlen, "built without DPDK");
    return -1;
#endif
}

static void pool_teardown(struct job *j) {
    if (j->impl->kind == IMPL_TM) {
        tm_pool_destroy(j->tp);
        j->tp = NULL;
    }
#ifdef TM_WITH_DPDK
    else if (j->mp) {
        rte_mempool_free(j->mp);
        j->mp = NULL;
    }
#endif
}

/* ---- main ------------------------------------------------------------------- */

static unsigned max_threads(void) {
#ifdef TM_WITH_DPDK
    return NLCORES;
#else
    return NCPUS;
#endif
}

static void emit_plan_item(const char *impl, const char *drv, unsigned cache, unsigned bulk,
                           unsigned keep, unsigned threads) {
    printf("{\"type\":\"plan\",\"impl\":\"%s\",\"driver\":\"%s\",\"cache\":%u,\"bulk\":%u,"
           "\"n_keep\":%u,\"threads\":%u}\n",
           impl, drv, cache, bulk, keep, threads);
}

int main(int argc, char **argv) {
    /* defaults: DPDK's mempool_perf_autotest matrix */
    const char *impls = "tm,tm_unchecked,ring_mp_mc,stack,lf_stack";
    parse_list("0,256,512", O.caches, &O.ncaches, 0, 0);
    parse_list("1,4,8,32,64,128,256", O.bulks, &O.nbulks, 0, 0);
    parse_list("bulk,128,512,2048", O.keeps, &O.nkeeps, 1, 0);
    parse_list("1,all", O.threads, &O.nthreads, 0, 1);
    O.reps = 5;
    O.seconds = 0.2;
    O.warmup = 0.02;
    O.pool_size = 16384;

    int i, eal_argc = 0;
    char **eal_argv = NULL;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (strcmp(a, "--") == 0) {
            eal_argc = argc - i - 1;
            eal_argv = argv + i + 1;
            break;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--list") == 0) {
            O.list_only = 1;
            continue;
        } else if (!v) {
            bad = 1;
        } else if (strcmp(a, "--impls") == 0) {
            impls = v;
        } else if (strcmp(a, "--caches") == 0) {
            bad = parse_list(v, O.caches, &O.ncaches, 0, 0);
        } else if (strcmp(a, "--bulks") == 0) {
            bad = parse_list(v, O.bulks, &O.nbulks, 0, 0);
        } else if (strcmp(a, "--keeps") == 0) {
            bad = parse_list(v, O.keeps, &O.nkeeps, 1, 0);
        } else if (strcmp(a, "--threads") == 0) {
            bad = parse_list(v, O.threads, &O.nthreads, 0, 1);
        } else if (strcmp(a, "--reps") == 0) {
            O.reps = (unsigned)atoi(v);
            bad = O.reps == 0;
        } else if (strcmp(a, "--seconds") == 0) {
            O.seconds = atof(v);
            bad = !(O.seconds > 0);
        } else if (strcmp(a, "--warmup") == 0) {
            O.warmup = atof(v);
            bad = O.warmup < 0;
        } else if (strcmp(a, "--pool-size") == 0) {
            O.pool_size = (unsigned)atoi(v);
            bad = O.pool_size == 0;
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "core_bench: bad argument near '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (parse_impls(impls) != 0) {
        fprintf(stderr, "core_bench: no usable implementation in '%s'\n", impls);
        return 2;
    }
    for (unsigned c = 0; c < O.ncaches; c++)
        if (O.caches[c] > TM_CACHE_MAX) {
            fprintf(stderr, "core_bench: cache %u > %u\n", O.caches[c], TM_CACHE_MAX);
            return 2;
        }

    const char *dpdk_version = NULL;
#ifdef TM_WITH_DPDK
    /* EAL: default arguments sized to the largest thread count requested. */
    unsigned ncpu = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    unsigned want = 1;
    for (unsigned t = 0; t < O.nthreads; t++) {
        unsigned v = O.threads[t] ? O.threads[t] : ncpu;
        if (v > want)
            want = v;
    }
    char lcores[32];
    snprintf(lcores, sizeof lcores, "0-%u", want - 1);
    char *defaults[] = {argv[0], "-l", lcores, "--no-huge", "--no-pci", "--no-telemetry",
                        "--no-shconf", "--log-level=1", "-m", "512", NULL};
    char *ev[64];
    int ec = 0;
    if (eal_argc) {
        ev[ec++] = argv[0];
        for (int k = 0; k < eal_argc && ec < 63; k++)
            ev[ec++] = eal_argv[k];
    } else {
        for (; defaults[ec]; ec++)
            ev[ec] = defaults[ec];
    }
    ev[ec] = NULL;
    if (!O.list_only) {
        if (rte_eal_init(ec, ev) < 0) {
            fprintf(stderr, "core_bench: rte_eal_init failed: %s\n", rte_strerror(rte_errno));
            printf("{\"type\":\"error\",\"error\":\"rte_eal_init: %s\"}\n", rte_strerror(rte_errno));
            return 3;
        }
        unsigned lc;
        NLCORES = 0;
        LCORES[NLCORES++] = rte_get_main_lcore();
        RTE_LCORE_FOREACH_WORKER(lc) {
            if (NLCORES < MAX_THREADS)
                LCORES[NLCORES++] = lc;
        }
    } else {
        NLCORES = want;
    }
    dpdk_version = rte_version();
#else
    (void)eal_argc;
    (void)eal_argv;
    NCPUS = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (NCPUS > MAX_THREADS)
        NCPUS = MAX_THREADS;
    if (!O.list_only)
        pin_to(pthread_self(), 0);
#endif

    /* resolve 'all', deduplicate thread counts */
    unsigned tlist[MAX_LIST], nt = 0;
    for (unsigned t = 0; t < O.nthreads; t++) {
        unsigned v = O.threads[t] ? O.threads[t] : max_threads();
        if (v > max_threads()) {
            fprintf(stderr, "core_bench: %u threads > %u available, skipped\n", v, max_threads());
            continue;
        }
        int dup = 0;
        for (unsigned k = 0; k < nt; k++)
            dup |= tlist[k] == v;
        if (!dup)
            tlist[nt++] = v;
    }

    if (!O.list_only && region_init(O.pool_size) != 0) {
        fprintf(stderr, "core_bench: mmap failed: %s\n", strerror(errno));
        return 3;
    }

    printf("{\"type\":\"meta\",\"dpdk\":%s%s%s,\"with_dpdk\":%s,\"pool_size\":%u,\"elt_size\":%u,"
           "\"reps\":%u,\"seconds\":%g,\"warmup\":%g,\"tm_asymmetric\":%d,\"tm_region_thp_advised\":%d,"
           "\"max_threads\":%u}\n",
           dpdk_version ? "\"" : "", dpdk_version ? dpdk_version : "null", dpdk_version ? "\"" : "",
           dpdk_version ? "true" : "false", O.pool_size, ELT_SIZE, O.reps, O.seconds, O.warmup,
           O.list_only ? -1 : tm_pool_asymmetric(), REGION_THP, max_threads());
    fflush(stdout);

    int exit_rc = 0;
    for (unsigned ti = 0; ti < nt; ti++)
        for (unsigned ci = 0; ci < O.ncaches; ci++)
            for (unsigned bi = 0; bi < O.nbulks; bi++)
                for (unsigned ki = 0; ki < O.nkeeps; ki++) {
                    unsigned bulk = O.bulks[bi];
                    unsigned keep = O.keeps[ki] ? O.keeps[ki] : bulk;
                    if (keep < bulk || keep % bulk)
                        continue;
                    int dup = 0; /* "bulk" may coincide with an explicit n_keep */
                    for (unsigned k2 = 0; k2 < ki; k2++)
                        dup |= (O.keeps[k2] ? O.keeps[k2] : bulk) == keep;
                    if (dup)
                        continue;
                    unsigned threads = tlist[ti], cache = O.caches[ci];
                    if (O.list_only) {
                        for (unsigned m = 0; m < O.nimpls; m++)
                            emit_plan_item(O.impls[m].name, O.impls[m].driver, cache, bulk, keep, threads);
                        continue;
                    }
                    /* Alternate implementations within each repetition, and rotate
                     * which one goes first so drift hits all of them alike. */
                    for (unsigned rep = 0; rep < O.reps; rep++)
                        for (unsigned m0 = 0; m0 < O.nimpls; m0++) {
                            const struct impl *im = &O.impls[(m0 + rep) % O.nimpls];
                            struct job j = {.impl = im, .cache = cache, .bulk = bulk, .keep = keep,
                                            .threads = threads, .seconds = O.seconds,
                                            .warmup = O.warmup};
                            char err[256] = "";
                            if (pool_setup(&j, err, sizeof err) != 0) {
                                printf("{\"type\":\"error\",\"impl\":\"%s\",\"driver\":\"%s\",\"cache\":%u,"
                                       "\"bulk\":%u,\"n_keep\":%u,\"threads\":%u,\"rep\":%u,\"error\":\"%s\"}\n",
                                       im->name, im->driver, cache, bulk, keep, threads, rep, err);
                                fflush(stdout);
                                exit_rc = 1;
                                continue;
                            }
                            memset(RES, 0, sizeof RES);
                            if (launch(&j) != 0)
                                j.failed = 1;
                            uint64_t objs = 0;
                            double secs = 0;
                            for (unsigned t = 0; t < threads; t++) {
                                objs += RES[t].objects;
                                if (RES[t].elapsed > secs)
                                    secs = RES[t].elapsed;
                            }
                            pool_teardown(&j);
                            if (j.failed || objs == 0 || secs <= 0) {
                                printf("{\"type\":\"error\",\"impl\":\"%s\",\"driver\":\"%s\",\"cache\":%u,"
                                       "\"bulk\":%u,\"n_keep\":%u,\"threads\":%u,\"rep\":%u,"
                                       "\"error\":\"get failed (pool empty?)\"}\n",
                                       im->name, im->driver, cache, bulk, keep, threads, rep);
                                fflush(stdout);
                                exit_rc = 1;
                                continue;
                            }
                            double rate = (double)objs / secs;
                            printf("{\"type\":\"result\",\"impl\":\"%s\",\"driver\":\"%s\",\"cache\":%u,"
                                   "\"bulk\":%u,\"n_keep\":%u,\"threads\":%u,\"rep\":%u,\"objects\":%" PRIu64
                                   ",\"seconds\":%.6f,\"rate_persec\":%.1f,\"ns_per_obj\":%.4f}\n",
                                   im->name, im->driver, cache, bulk, keep, threads, rep, objs, secs, rate,
                                   1e9 / rate);
                            fflush(stdout);
                        }
                }
#ifdef TM_WITH_DPDK
    if (!O.list_only)
        rte_eal_cleanup();
#endif
    return exit_rc;
}
