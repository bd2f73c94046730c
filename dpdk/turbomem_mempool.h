/* dpdk/turbomem_mempool.h - what the `turbomem` DPDK mempool driver exports
 * besides its ops (registered under the name "turbomem").
 *
 * Applications need nothing from here: select the driver with EAL
 * `-d librte_mempool_turbomem.so --mbuf-pool-ops-name turbomem`, or with
 * rte_mempool_set_ops_byname(mp, "turbomem", NULL).  This header is for
 * tests and benchmarks that want to see the pool's own memory region.
 */
#ifndef TURBOMEM_MEMPOOL_H
#define TURBOMEM_MEMPOOL_H

#include <stddef.h>
#include <stdint.h>

struct rte_mempool;

#define TURBOMEM_MEMPOOL_OPS_NAME "turbomem"

struct turbomem_mempool_info {
    void *region;          /* start of the driver's own mapping (NULL before populate) */
    size_t region_len;     /* bytes mapped (a multiple of the huge page size) */
    size_t huge_bytes;     /* AnonHugePages of the region, read from /proc/self/smaps now */
    size_t huge_page_size; /* the THP (PMD) size */
    size_t stride;         /* bytes per object: DPDK header + element + trailer */
    uint32_t capacity;     /* objects */
    uint32_t cache_size;   /* TurboMem per-thread cache (0: DPDK's lcore cache alone) */
    char thp_mode[16];     /* /sys/kernel/mm/transparent_hugepage/enabled: always, madvise, never */
    char advice[64];       /* what madvise did: MADV_HUGEPAGE, +MADV_COLLAPSE, or why not */
    char numa[80];         /* mbind outcome */
    char populate[40];     /* MADV_POPULATE_WRITE, or page touching */
    char iova[24];         /* "va" (IOVA = VA) or "none" (RTE_BAD_IOVA) */
    int checked;           /* 1: the core keeps per-object state (a double put is refused);
                              0: TM_POOL_UNCHECKED, DPDK's contract (it is not) */
};

/* Fills *out for a pool whose ops are "turbomem".  Returns 0, or -EINVAL when
 * mp is NULL or not a turbomem pool, -ENODATA when it is not populated yet. */
int turbomem_mempool_info(const struct rte_mempool *mp, struct turbomem_mempool_info *out);

#endif /* TURBOMEM_MEMPOOL_H */
