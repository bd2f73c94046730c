/* dpdk/turbomem_mempool.c - TurboMem as a DPDK mempool driver ("turbomem").
 *
 * WHAT IT IS
 *   A mempool ops table whose shared level is TurboMem's C pool (tm_pool_*,
 *   include/turbomem/pool.h), used through its public API only.  DPDK's
 *   per-lcore mempool cache sits in front and calls enqueue/dequeue in bulks
 *   (cache flushes and refills); non-EAL threads without a user cache call
 *   them directly.
 *
 * OBJECTS ARE 32-BIT HANDLES
 *   populate lays every object out in one region of the driver's own, at a
 *   fixed stride (DPDK header + element + trailer), so object i lives at
 *   objbase + i * stride and the pool stores only i.  enqueue turns pointers
 *   back into handles with an exact division (a multiply by the inverse of
 *   the stride's odd part and a rotate, see tmd_div_init), which also rejects
 *   any pointer that is not an object of this pool: such an enqueue returns
 *   -EINVAL and enqueues nothing.
 *
 * MEMORY WITHOUT HUGETLBFS
 *   The region is mmap'ed anonymous and 2 MB aligned, advised MADV_HUGEPAGE,
 *   bound with mbind(MPOL_BIND) to the pool's NUMA node where the kernel
 *   allows it, populated (MADV_POPULATE_WRITE, else one write per page), then
 *   its huge page coverage is read from /proc/self/smaps; if it is short,
 *   MADV_COLLAPSE is tried and coverage read again.  The result is logged.
 *   PROT_NONE guard pages on both sides keep the kernel from merging the
 *   region's VMA with a neighbour, so smaps reports this region alone.
 *   DPDK still reserves a memzone for the pool (calc_mem_size asks for one
 *   cache line: populate_default insists on a chunk); the objects are not in
 *   it, so rte_mempool_mem_iter() sees only that line.  IOVA: with EAL in
 *   IOVA-as-VA mode (what EAL picks under --no-huge) an object's IOVA is its address;
 *   in PA mode the driver gives RTE_BAD_IOVA (fine for vdevs such as
 *   net_null, net_ring, net_af_packet; not for a physical NIC's DMA).
 *
 * ALL OR NOTHING
 *   dequeue: tm_pool_get_bulk hands out exactly n objects or none (-ENOBUFS).
 *   enqueue: every pointer is converted and checked before anything is put,
 *   then one tm_pool_put_bulk, which is itself all or nothing.
 *
 * THREADS
 *   TurboMem gives each thread a slot on its first pool call (TLS), EAL lcore
 *   or not; see dpdk/README.md.  The pool is process-private (malloc'ed
 *   control data, a private mapping): primary process only.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <rte_common.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_mempool.h>

#include "turbomem/pool.h"
#include "turbomem_mempool.h"

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define TMD_MPOL_BIND 2

/* Handles converted on the stack per enqueue; larger enqueues use malloc. */
#define TMD_STACK_HANDLES 1024u
#define TMD_BAD_HANDLE UINT32_MAX

RTE_LOG_REGISTER_DEFAULT(tmd_logtype, NOTICE);
#define TMD_LOG(level, ...) rte_log(RTE_LOG_##level, tmd_logtype, "turbomem: " __VA_ARGS__)

struct tmd_pool {
    tm_pool_t *pool;
    uint32_t capacity;
    uint32_t cache_size;
    uintptr_t objbase; /* address of object 0 (0 until populate) */
    uint64_t stride;
    uint64_t inv_odd;  /* inverse of stride's odd part, mod 2^64 */
    unsigned shift;    /* trailing zero bits of stride */
    rte_iova_t (*iova_of)(const void *obj);
    unsigned char *region; /* the mapping, 2 MB aligned, guard page on each side */
    size_t region_len, huge_page, page;
    char thp_mode[16], advice[64], numa[80], populate[40], iova[24];
};

/* ---- exact division by the stride -------------------------------------------- */

/* x = q * stride exactly iff rotr(x * inv(odd), shift) == q <= UINT64_MAX / stride
 * (Granlund & Montgomery): a multiply and a rotate instead of a divide, and a
 * pointer that is not at an object boundary comes out >= capacity. */
static void tmd_div_init(struct tmd_pool *d, uint64_t stride) {
    d->stride = stride;
    d->shift = (unsigned)__builtin_ctzll(stride);
    uint64_t odd = stride >> d->shift, inv = odd; /* odd * odd == 1 mod 8: 3 bits right */
    for (int i = 0; i < 5; i++)                  /* Newton: 3 -> 6 -> ... -> 96 bits */
        inv *= 2 - odd * inv;
    d->inv_odd = inv;
}

static inline uint32_t tmd_handle(const struct tmd_pool *d, const void *obj) {
    uint64_t x = (uint64_t)((uintptr_t)obj - d->objbase); /* below objbase: wraps, rejected */
    uint64_t q = x * d->inv_odd;
    q = (q >> d->shift) | (q << ((64 - d->shift) & 63));
    return q < d->capacity ? (uint32_t)q : TMD_BAD_HANDLE;
}

static inline void *tmd_obj(const struct tmd_pool *d, uint32_t h) {
    return (void *)(d->objbase + (uintptr_t)h * d->stride);
}

static rte_iova_t tmd_iova_va(const void *obj) { return (rte_iova_t)(uintptr_t)obj; }
static rte_iova_t tmd_iova_none(const void *obj) { (void)obj; return RTE_BAD_IOVA; }

/* ---- ops: alloc / free -------------------------------------------------------- */

/* TurboMem's own per-thread cache, behind DPDK's lcore cache.  Measured with
 * mempool_perf (dpdk/README.md "Caches"): behind an lcore cache it gains
 * nothing (cache flushes and refills are mostly larger than half of it, and
 * bypass it) and sometimes costs; in a pool without an lcore cache it is the
 * only cache, and every get and put would otherwise be a CAS on the shared
 * stack.  So: 0 when the pool has an lcore cache, TMD_DEFAULT_CACHE when it
 * has none; TURBOMEM_DPDK_CACHE=N overrides both. */
#define TMD_DEFAULT_CACHE 256u

static uint32_t tmd_cache_size(const struct rte_mempool *mp) {
    uint32_t v = mp->cache_size ? 0 : TMD_DEFAULT_CACHE;
    const char *s = getenv("TURBOMEM_DPDK_CACHE");
    if (s && *s) {
        char *end;
        unsigned long e = strtoul(s, &end, 10);
        if (*end || e > TM_CACHE_MAX)
            TMD_LOG(WARNING, "TURBOMEM_DPDK_CACHE=%s ignored (0..%u)\n", s, TM_CACHE_MAX);
        else
            v = (uint32_t)e;
    }
    return v > mp->size ? mp->size : v;
}

static int tmd_alloc(struct rte_mempool *mp) {
    if (mp->size == 0 || mp->size > TM_MAX_CAPACITY)
        return -EINVAL;
    struct tmd_pool *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->capacity = mp->size;
    d->cache_size = tmd_cache_size(mp);
    unsigned flags = 0;
#ifdef TM_POOL_UNCHECKED
    flags |= TM_POOL_UNCHECKED; /* DPDK's contract has no per-object checks */
#endif
    /* Every handle starts free, stacked 0, 1, 2, ...: the order in which
     * DPDK's own populate helper enqueues its objects.  They become real
     * objects in populate, the only way objects enter the pool. */
    int rc = tm_pool_create(&d->pool, d->capacity, d->cache_size, NULL, 0, 0, flags);
    if (rc != TM_OK) {
        free(d);
        return rc == TM_ENOMEM ? -ENOMEM : -EINVAL;
    }
    d->page = (size_t)sysconf(_SC_PAGESIZE);
    mp->pool_data = d;
    return 0;
}

static void tmd_free(struct rte_mempool *mp) {
    struct tmd_pool *d = mp->pool_data;
    if (!d)
        return;
    if (d->region)
        munmap(d->region - d->page, d->region_len + 2 * d->page);
    tm_pool_destroy(d->pool);
    free(d);
    mp->pool_data = NULL;
}

/* ---- ops: enqueue / dequeue / get_count ---------------------------------------- */

static int tmd_enqueue(struct rte_mempool *mp, void *const *objs, unsigned n) {
    const struct tmd_pool *d = mp->pool_data;
    uint32_t on_stack[TMD_STACK_HANDLES];
    uint32_t *hs = n <= TMD_STACK_HANDLES ? on_stack : malloc((size_t)n * sizeof(uint32_t));
    if (!hs)
        return -ENOMEM;
    int rc = 0;
    for (unsigned i = 0; i < n; i++) {
        hs[i] = tmd_handle(d, objs[i]);
        if (TM_UNLIKELY(hs[i] == TMD_BAD_HANDLE)) {
            rc = -EINVAL; /* not an object of this pool: nothing is enqueued */
            break;
        }
    }
    if (rc == 0 && n && tm_pool_put_bulk(d->pool, hs, n, NULL) != TM_OK)
        rc = -EINVAL; /* the core refused it (only a checked core looks): nothing enqueued */
    if (hs != on_stack)
        free(hs);
    return rc;
}

static int tmd_dequeue(struct rte_mempool *mp, void **objs, unsigned n) {
    const struct tmd_pool *d = mp->pool_data;
    if (n == 0)
        return 0;
    /* The handles go into the first half of the caller's table (4 bytes each
     * in 8-byte slots), then are widened in place from the top down: slot i
     * overwrites handles 2i and 2i+1, both already read.  Built with
     * -fno-strict-aliasing, so the compiler keeps that order. */
    uint32_t *hs = (uint32_t *)(void *)objs;
    if (tm_pool_get_bulk(d->pool, hs, n) != TM_OK)
        return -ENOBUFS;
    for (unsigned i = n; i-- > 0;)
        objs[i] = tmd_obj(d, hs[i]);
    return 0;
}

static unsigned tmd_get_count(const struct rte_mempool *mp) {
    const struct tmd_pool *d = mp->pool_data;
    if (!d || !d->region)
        return 0; /* not populated: no object exists yet */
    tm_pool_stats_t st;
    tm_pool_stats(d->pool, &st); /* exact when quiescent: counts per thread */
    return (unsigned)st.available;
}

/* ---- ops: calc_mem_size / populate ---------------------------------------------- */

/* The objects go into the driver's own region (populate); DPDK's memzone
 * only has to exist, so ask for one cache line. */
static ssize_t tmd_calc_mem_size(const struct rte_mempool *mp, uint32_t obj_num, uint32_t pg_shift,
                                 size_t *min_chunk_size, size_t *align) {
    (void)mp;
    (void)obj_num;
    (void)pg_shift;
    *min_chunk_size = RTE_CACHE_LINE_SIZE;
    *align = RTE_CACHE_LINE_SIZE;
    return RTE_CACHE_LINE_SIZE;
}

static void tmd_read_word(const char *path, char *out, size_t cap, const char *fallback) {
    snprintf(out, cap, "%s", fallback);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[256];
    if (fgets(line, sizeof line, f)) {
        char *l = strchr(line, '['), *r = l ? strchr(l, ']') : NULL;
        if (l && r) /* "always [madvise] never": the bracketed word */
            snprintf(out, cap, "%.*s", (int)(r - l - 1), l + 1);
        else
            snprintf(out, cap, "%.*s", (int)strcspn(line, "\n"), line);
    }
    fclose(f);
}

static size_t tmd_pmd_size(void) {
    char buf[32];
    tmd_read_word("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", buf, sizeof buf, "");
    unsigned long v = strtoul(buf, NULL, 10);
    return v && !(v & (v - 1)) ? (size_t)v : (size_t)2 << 20;
}

/* AnonHugePages of the VMAs inside [addr, addr + len), from /proc/self/smaps. */
static size_t tmd_smaps_huge_bytes(const void *addr, size_t len) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        return 0;
    uintptr_t lo = (uintptr_t)addr, hi = lo + len;
    int inside = 0;
    size_t total = 0;
    char line[4096]; /* VMA headers carry a path: PATH_MAX */
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end, kb;
        /* A VMA header ("7f..-7f.. rw-p ..."); field lines ("AnonHugePages: ...")
         * never parse as two hex numbers around a '-'. */
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2) {
            inside = start >= lo && end <= hi;
            continue;
        }
        if (inside && sscanf(line, "AnonHugePages: %lu kB", &kb) == 1)
            total += (size_t)kb << 10;
    }
    fclose(f);
    return total;
}

static void tmd_bind_numa(struct tmd_pool *d, const struct rte_mempool *mp) {
    int node = mp->socket_id;
    if (node == SOCKET_ID_ANY)
        node = (int)rte_socket_id(); /* the populating lcore's node; ANY off-lcore */
    if (node < 0 || node >= 1024) {
        snprintf(d->numa, sizeof d->numa, "not bound (SOCKET_ID_ANY): first touch");
        return;
    }
    unsigned long mask[1024 / (8 * sizeof(unsigned long))] = {0};
    mask[node / (8 * sizeof(unsigned long))] = 1ul << (node % (8 * sizeof(unsigned long)));
#ifdef __NR_mbind
    /* Before the first touch: no page exists yet, so no MPOL_MF_MOVE. */
    if (syscall(__NR_mbind, d->region, d->region_len, TMD_MPOL_BIND, mask, 1024ul + 1, 0ul) == 0) {
        snprintf(d->numa, sizeof d->numa, "bound to node %d (mbind MPOL_BIND)", node);
        return;
    }
    snprintf(d->numa, sizeof d->numa, "not bound: mbind refused (%s)", strerror(errno));
#else
    snprintf(d->numa, sizeof d->numa, "not bound: no mbind on this platform");
#endif
}

static int tmd_populate_pages(struct tmd_pool *d) {
    if (madvise(d->region, d->region_len, MADV_POPULATE_WRITE) == 0) {
        snprintf(d->populate, sizeof d->populate, "MADV_POPULATE_WRITE");
        return 0;
    }
    if (errno == ENOMEM || errno == EFAULT || errno == EHWPOISON)
        return -ENOMEM;
    /* Kernel before 5.14: one write per base page faults every page in. */
    for (size_t off = 0; off < d->region_len; off += d->page)
        ((volatile unsigned char *)d->region)[off] = 0;
    snprintf(d->populate, sizeof d->populate, "page touch (no MADV_POPULATE_WRITE)");
    return 0;
}

/* mmap + 2 MB alignment + guard pages + MADV_HUGEPAGE + mbind + populate
 * (+ MADV_COLLAPSE when smaps shows the region is not all huge). */
static int tmd_map_region(struct tmd_pool *d, const struct rte_mempool *mp, size_t bytes) {
    d->huge_page = tmd_pmd_size();
    d->region_len = RTE_ALIGN_CEIL(bytes, d->huge_page);
    size_t raw_len = d->region_len + 2 * d->huge_page;
    unsigned char *raw = mmap(NULL, raw_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED)
        return -ENOMEM;
    unsigned char *region = (unsigned char *)RTE_ALIGN_CEIL((uintptr_t)raw + d->page, d->huge_page);
    unsigned char *keep_lo = region - d->page, *keep_hi = region + d->region_len + d->page;
    if (keep_lo > raw)
        munmap(raw, (size_t)(keep_lo - raw));
    if (raw + raw_len > keep_hi)
        munmap(keep_hi, (size_t)(raw + raw_len - keep_hi));
    if (mprotect(region, d->region_len, PROT_READ | PROT_WRITE) != 0) {
        munmap(keep_lo, (size_t)(keep_hi - keep_lo));
        return -ENOMEM;
    }
    d->region = region;

    tmd_read_word("/sys/kernel/mm/transparent_hugepage/enabled", d->thp_mode, sizeof d->thp_mode, "absent");
    if (madvise(region, d->region_len, MADV_HUGEPAGE) == 0)
        snprintf(d->advice, sizeof d->advice, "MADV_HUGEPAGE");
    else
        snprintf(d->advice, sizeof d->advice, "none (MADV_HUGEPAGE: %s)", strerror(errno));
    tmd_bind_numa(d, mp);
    int rc = tmd_populate_pages(d);
    if (rc != 0) {
        munmap(keep_lo, (size_t)(keep_hi - keep_lo));
        d->region = NULL;
        return rc;
    }
    int thp_on = !strcmp(d->thp_mode, "madvise") || !strcmp(d->thp_mode, "always");
    if (thp_on && tmd_smaps_huge_bytes(region, d->region_len) < d->region_len) {
        if (madvise(region, d->region_len, MADV_COLLAPSE) == 0)
            snprintf(d->advice, sizeof d->advice, "MADV_HUGEPAGE+MADV_COLLAPSE");
        else
            snprintf(d->advice, sizeof d->advice, "MADV_HUGEPAGE (MADV_COLLAPSE: %s)", strerror(errno));
    }
    return 0;
}

static int tmd_populate(struct rte_mempool *mp, unsigned max_objs, void *vaddr, rte_iova_t iova, size_t len,
                        rte_mempool_populate_obj_cb_t *obj_cb, void *obj_cb_arg) {
    struct tmd_pool *d = mp->pool_data;
    (void)vaddr; /* DPDK's chunk: the objects go into our own region instead */
    (void)iova;
    (void)len;
    if (d->region)
        return -ENOSPC; /* everything was populated by the first call */
    if (max_objs != d->capacity)
        return -EINVAL; /* only this op populates, and it does all at once */
    size_t stride = (size_t)mp->header_size + mp->elt_size + mp->trailer_size;
    if (stride == 0 || stride > SIZE_MAX / d->capacity)
        return -EINVAL;
    int rc = tmd_map_region(d, mp, stride * d->capacity);
    if (rc != 0)
        return rc;
    tmd_div_init(d, stride);
    d->objbase = (uintptr_t)d->region + mp->header_size;
    int va = rte_eal_iova_mode() == RTE_IOVA_VA;
    d->iova_of = va ? tmd_iova_va : tmd_iova_none;
    snprintf(d->iova, sizeof d->iova, "%s", va ? "va" : "none (IOVA PA)");
    for (uint32_t i = 0; i < d->capacity; i++) {
        void *obj = tmd_obj(d, i);
        obj_cb(mp, obj_cb_arg, obj, d->iova_of(obj)); /* DPDK's object header */
    }
    size_t huge = tmd_smaps_huge_bytes(d->region, d->region_len);
    TMD_LOG(NOTICE,
            "pool %s: %u objects x %zu B in %p-%p (%zu MiB), TurboMem cache %u; THP %s, %s, %s, NUMA %s, IOVA %s; "
            "huge pages %zu of %zu bytes (%.1f%%) per /proc/self/smaps\n",
            mp->name, d->capacity, stride, (void *)d->region, (void *)(d->region + d->region_len),
            d->region_len >> 20, d->cache_size, d->thp_mode, d->advice, d->populate, d->numa, d->iova, huge, d->region_len,
            100.0 * (double)huge / (double)d->region_len);
    return (int)max_objs;
}

/* ---- the info call (tests, benchmarks) ----------------------------------------- */

__attribute__((visibility("default")))
int turbomem_mempool_info(const struct rte_mempool *mp, struct turbomem_mempool_info *out) {
    if (!mp || !out)
        return -EINVAL;
    const struct rte_mempool_ops *ops = rte_mempool_get_ops(mp->ops_index);
    if (!ops || strcmp(ops->name, TURBOMEM_MEMPOOL_OPS_NAME) != 0)
        return -EINVAL;
    const struct tmd_pool *d = mp->pool_data;
    if (!d || !d->region)
        return -ENODATA;
    memset(out, 0, sizeof *out);
    out->region = d->region;
    out->region_len = d->region_len;
    out->huge_bytes = tmd_smaps_huge_bytes(d->region, d->region_len);
    out->huge_page_size = d->huge_page;
    out->stride = d->stride;
    out->capacity = d->capacity;
    out->cache_size = d->cache_size;
    out->checked = tm_pool_is_in_use(d->pool, 0) >= 0; /* -1: no per-object state */
    snprintf(out->thp_mode, sizeof out->thp_mode, "%s", d->thp_mode);
    snprintf(out->advice, sizeof out->advice, "%s", d->advice);
    snprintf(out->numa, sizeof out->numa, "%s", d->numa);
    snprintf(out->populate, sizeof out->populate, "%s", d->populate);
    snprintf(out->iova, sizeof out->iova, "%s", d->iova);
    return 0;
}

static struct rte_mempool_ops tmd_ops = {
    .name = TURBOMEM_MEMPOOL_OPS_NAME,
    .alloc = tmd_alloc,
    .free = tmd_free,
    .enqueue = tmd_enqueue,
    .dequeue = tmd_dequeue,
    .get_count = tmd_get_count,
    .calc_mem_size = tmd_calc_mem_size,
    .populate = tmd_populate,
};

RTE_MEMPOOL_REGISTER_OPS(tmd_ops);
