/* dpdk/mempool_perf.c - a short mempool_perf_autotest: each lcore takes
 * n_keep objects in bulks of n_bulk and puts them back, for a fixed time, on
 * pools that differ only in their ops.  Contenders alternate within each
 * repetition.  dpdk-test's own mempool_perf_autotest runs the same loop (and
 * can be pointed at turbomem with --mbuf-pool-ops-name), but takes 5 s per
 * point, about an hour in all; this one takes seconds.
 *
 *   ./mempool_perf <EAL args> -- [--ops ring_mp_mc,turbomem,turbomem:256]
 *       [--cache 0,256] [--bulk 1,32] [--keep 32,128] [--cores 1,all]
 *       [--seconds 0.2] [--reps 3]
 *
 * "turbomem:N" is the turbomem ops with a TurboMem per-thread cache of N
 * (TURBOMEM_DPDK_CACHE) behind DPDK's lcore cache.  One JSON line per
 * measurement on stdout: objects taken and returned per second, all lcores.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_mempool.h>

#include "turbomem_mempool.h"

#define MAX_LIST 16
#define MAX_KEEP 2048
#define ELT_SIZE 2048

struct list {
    unsigned n;
    char item[MAX_LIST][32];
};

static void split(struct list *l, const char *s) {
    l->n = 0;
    while (*s && l->n < MAX_LIST) {
        size_t k = strcspn(s, ",");
        snprintf(l->item[l->n++], sizeof l->item[0], "%.*s", (int)k, s);
        s += k + (s[k] == ',');
    }
}

struct run {
    struct rte_mempool *mp;
    unsigned bulk, keep;
    uint64_t cycles;
    volatile int start;
    uint64_t done[RTE_MAX_LCORE];
    int failed;
};

static int worker(void *arg) {
    struct run *r = arg;
    void *objs[MAX_KEEP];
    uint64_t count = 0;
    while (!__atomic_load_n(&r->start, __ATOMIC_ACQUIRE))
        rte_pause();
    uint64_t end = rte_rdtsc() + r->cycles;
    while (rte_rdtsc() < end) {
        for (unsigned i = 0; i < r->keep; i += r->bulk)
            if (rte_mempool_get_bulk(r->mp, objs + i, r->bulk) != 0) {
                r->failed = 1; /* the pool is sized so that this cannot happen */
                return -1;
            }
        for (unsigned i = 0; i < r->keep; i += r->bulk)
            rte_mempool_put_bulk(r->mp, objs + i, r->bulk);
        count += r->keep;
    }
    r->done[rte_lcore_id()] = count;
    return 0;
}

static double measure(struct rte_mempool *mp, unsigned bulk, unsigned keep, unsigned cores, double seconds) {
    static struct run r;
    memset(&r, 0, sizeof r);
    r.mp = mp, r.bulk = bulk, r.keep = keep;
    r.cycles = (uint64_t)(seconds * (double)rte_get_tsc_hz());
    unsigned lcore, used = 1;
    RTE_LCORE_FOREACH_WORKER(lcore) {
        if (used >= cores)
            break;
        rte_eal_remote_launch(worker, &r, lcore);
        used++;
    }
    uint64_t t0 = rte_rdtsc();
    __atomic_store_n(&r.start, 1, __ATOMIC_RELEASE);
    worker(&r);
    rte_eal_mp_wait_lcore();
    double elapsed = (double)(rte_rdtsc() - t0) / (double)rte_get_tsc_hz();
    if (r.failed)
        return -1;
    uint64_t total = 0;
    for (unsigned i = 0; i < RTE_MAX_LCORE; i++)
        total += r.done[i];
    return (double)total / elapsed;
}

static struct rte_mempool *make_pool(const char *spec, unsigned cache, unsigned size) {
    char ops[32], name[RTE_MEMPOOL_NAMESIZE];
    static unsigned seq;
    snprintf(ops, sizeof ops, "%s", spec);
    char *colon = strchr(ops, ':');
    if (colon) { /* turbomem:N -> TurboMem's own per-thread cache of N */
        *colon = 0;
        setenv("TURBOMEM_DPDK_CACHE", colon + 1, 1);
    }
    snprintf(name, sizeof name, "perf%u", seq++);
    struct rte_mempool *mp = rte_mempool_create_empty(name, size, ELT_SIZE, cache, 0, SOCKET_ID_ANY, 0);
    int rc = mp ? rte_mempool_set_ops_byname(mp, ops, NULL) : -rte_errno;
    if (rc == 0)
        rc = rte_mempool_populate_default(mp);
    unsetenv("TURBOMEM_DPDK_CACHE");
    if (rc < 0) {
        fprintf(stderr, "pool %s cache %u: %s\n", spec, cache, strerror(-rc));
        if (mp)
            rte_mempool_free(mp);
        return NULL;
    }
    return mp;
}

int main(int argc, char **argv) {
    int eal = rte_eal_init(argc, argv);
    if (eal < 0) {
        fprintf(stderr, "rte_eal_init: %s\n", rte_strerror(rte_errno));
        return 2;
    }
    argc -= eal, argv += eal;
    struct list ops, caches, bulks, keeps, cores;
    split(&ops, "ring_mp_mc,turbomem");
    split(&caches, "0,256");
    split(&bulks, "1,32");
    split(&keeps, "128");
    split(&cores, "1,all");
    double seconds = 0.2;
    unsigned reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--ops")) split(&ops, v);
        else if (!strcmp(k, "--cache")) split(&caches, v);
        else if (!strcmp(k, "--bulk")) split(&bulks, v);
        else if (!strcmp(k, "--keep")) split(&keeps, v);
        else if (!strcmp(k, "--cores")) split(&cores, v);
        else if (!strcmp(k, "--seconds")) seconds = atof(v);
        else if (!strcmp(k, "--reps")) reps = (unsigned)atoi(v);
        else { fprintf(stderr, "unknown option %s\n", k); return 2; }
    }
    unsigned nl = rte_lcore_count();
    /* Every lcore may hold n_keep plus a full lcore cache (1.5x its size). */
    unsigned size = nl * (MAX_KEEP + RTE_MEMPOOL_CACHE_MAX_SIZE * 3 / 2) + 1023;
    for (unsigned c = 0; c < caches.n; c++) {
        unsigned cache = (unsigned)atoi(caches.item[c]);
        struct rte_mempool *pools[MAX_LIST] = {0};
        for (unsigned o = 0; o < ops.n; o++)
            if (!(pools[o] = make_pool(ops.item[o], cache, size)))
                return 1;
        for (unsigned b = 0; b < bulks.n; b++)
            for (unsigned k = 0; k < keeps.n; k++)
                for (unsigned t = 0; t < cores.n; t++)
                    for (unsigned rep = 0; rep < reps; rep++)
                        for (unsigned o = 0; o < ops.n; o++) { /* contenders alternate */
                            unsigned bulk = (unsigned)atoi(bulks.item[b]);
                            unsigned keep = !strcmp(keeps.item[k], "bulk") ? bulk : (unsigned)atoi(keeps.item[k]);
                            unsigned ncores = !strcmp(cores.item[t], "all") ? nl : (unsigned)atoi(cores.item[t]);
                            if (keep < bulk || keep % bulk || keep > MAX_KEEP || ncores < 1 || ncores > nl)
                                continue;
                            double rate = measure(pools[o], bulk, keep, ncores, seconds);
                            printf("{\"ops\": \"%s\", \"cache\": %u, \"bulk\": %u, \"keep\": %u, \"cores\": %u, "
                                   "\"rep\": %u, \"objs_per_s\": %.0f}\n",
                                   ops.item[o], cache, bulk, keep, ncores, rep, rate);
                            fflush(stdout);
                            if (rate < 0)
                                return 1;
                        }
        for (unsigned o = 0; o < ops.n; o++)
            rte_mempool_free(pools[o]);
    }
    rte_eal_cleanup();
    return 0;
}
