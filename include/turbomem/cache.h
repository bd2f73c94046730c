/* turbomem/cache.h - the per-thread object cache and its steal handshake.
 *
 * CONCURRENCY CONTRACT
 *   A cache has one OWNER: the thread whose slot it belongs to (pool.h).  Only
 *   the owner calls tm_cache_enter/exit and works on len/objs/spares inside a
 *   call.  One CLAIMANT at a time (serialised by the pool's steal_lock: a
 *   stealer, or the fork prepare handler) may raise `steal` and, if the owner
 *   is not inside a call, take over the whole cache until it lowers `steal`.
 *   An owner that finds its cache claimed at entry does not touch it: it
 *   leaves the call and waits for the claim to drop (claims are short: a
 *   stealer drains and releases; fork releases right after fork()).  So no
 *   owner is ever inside a call while its cache is claimed, and a claimant
 *   that saw in_call == 0 has the cache to itself.
 *
 * THE HANDSHAKE (an asymmetric Dekker handshake)
 *   owner, on entry:  in_call = 1; [barrier B_o]; if steal != 0 -> leave, wait
 *   owner, on exit:   in_call = 0 (RELEASE)
 *   claimant:         steal = 1; [barrier B_s]; if in_call == 0 -> the cache
 *                     is ours; ...; steal = 0 (RELEASE)
 *   Dekker needs a full barrier between each side's store and load.  In the
 *   default ASYMMETRIC mode B_o is only a compiler barrier, so the hit path has
 *   no locked instruction and no fence (on x86: three plain moves); B_s is
 *   membarrier(PRIVATE_EXPEDITED), which runs a full barrier on every CPU
 *   running a thread of this process (and a descheduled thread passed one when
 *   it was switched out).  Then either the owner's `in_call = 1` was visible
 *   before that barrier, so the claimant reads in_call == 1 and leaves the
 *   cache alone; or the owner's store comes after the barrier, so its
 *   following load of `steal` sees 1 and it stays out.  When membarrier is
 *   unavailable (seccomp, old kernel) or under ThreadSanitizer (which cannot
 *   see it), the pool runs in SYMMETRIC mode: both sides use SEQ_CST store and
 *   load, the textbook Dekker at one locked instruction per call.
 *
 * MEMORY ORDERING
 *   in_call = 0 on exit: RELEASE, pairs with the claimant's SEQ_CST (acquire)
 *     load of in_call, so the claimant sees the owner's last len/objs/spares.
 *   steal = 0 after a claim: RELEASE, pairs with the owner's ACQUIRE load of
 *     steal on entry, so the owner sees what the claimant wrote (len = 0).
 *   len: written by the owner (or a claimant holding the cache) with RELAXED
 *     atomic stores; a claimant's unprotected peek and tm_pool_stats read it
 *     RELAXED, as a hint / a snapshot.
 *   net, gets, puts, ...: written only by the owner with RELAXED stores (no
 *     read-modify-write); tm_pool_stats reads them RELAXED.
 */
#ifndef TURBOMEM_CACHE_H
#define TURBOMEM_CACHE_H

#include <stdint.h>
#include "arch.h"

#define TM_CACHE_MAX 512u
/* Empty magazines a cache keeps for its next flushes (src/pool.c). */
#define TM_CACHE_SPARES 4u

typedef struct tm_cache {
    /* First line: everything the hit path reads or writes. */
    uint32_t len;       /* objects held in objs[] */
    uint32_t size;      /* most objects held (0: caching disabled) */
    uint32_t in_call;   /* owner is inside a pool call */
    uint32_t pad2_;     /* (steal is on the next line: see there) */
    uint32_t capacity;  /* the pool's, for the put range check */
    uint8_t fast;       /* which inline path may run (TM_FAST_*), else pool.c */
    uint8_t symmetric;  /* SEQ_CST handshake (no membarrier) */
    uint8_t stats;      /* TM_POOL_STATS: keep per-call counters */
    uint8_t pad0_;
    uint8_t *state;     /* checked mode: the pool's per-object bytes; NULL unchecked */
    uint32_t nspares;   /* empty magazines kept for the next flushes: spares[0..nspares) */
    uint32_t pad1_;
    /* Objects this thread took from the shared level minus those it gave
     * back; changes only on slow paths.  in_use = sum(net - len) + shared. */
    int64_t net;
    /* TM_POOL_STATS only (owner-only RELAXED stores). */
    uint64_t gets, puts;       /* objects handed out / taken back */
    uint64_t hits, misses;     /* calls served by the cache alone / not */
    uint64_t cas_retries;      /* failed CAS attempts on the shared level */
    uint32_t spares[TM_CACHE_SPARES]; /* slow paths only (same line as the counters) */
    /* A claimant holds this cache.  On its own line, away from in_call:
     * loading it right after storing in_call in the same line cost the hit
     * path 1.5 ns per get+put (tests/c `make bench`: 4.45 -> 3.0 ns). */
    uint32_t steal TM_ALIGNED(TM_CACHE_LINE);
    uint32_t objs[] TM_ALIGNED(TM_CACHE_LINE); /* `size` entries */
} tm_cache_t;

/* tm_cache_t.fast: the inline paths in pool.h run only in the common
 * configuration (asymmetric handshake, no per-call statistics, no poison);
 * everything else takes the compiled paths in pool.c, which do it all. */
#define TM_FAST_NONE 0
#define TM_FAST_CACHE 1   /* a cache: the hit path */
#define TM_FAST_NOCACHE 2 /* cache_size 0: one CAS on the objects stack */

#define TM_STAT_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define TM_SET_LEN(c, n) __atomic_store_n(&(c)->len, (n), __ATOMIC_RELAXED)
/* Owner-only, RELAXED store (no RMW): tm_pool_stats reads it concurrently. */
#define TM_NET_ADD(c, d) __atomic_store_n(&(c)->net, (c)->net + (d), __ATOMIC_RELAXED)

/* Owner entry.  Returns 1 if the owner may use its cache for this call, 0 if
 * a claimant holds it (the owner must then tm_cache_exit and wait). */
static inline int tm_cache_enter(tm_cache_t *c) {
#ifdef TM_BENCH_NO_HANDSHAKE
    /* Measurement only (tests/c/Makefile `bench`): the hit path without the
     * handshake, to price it.  Stealing is then unsafe: never ship this. */
    return 1;
#endif
    if (TM_UNLIKELY(c->symmetric)) {
        /* SEQ_CST store + SEQ_CST load: Dekker with the claimant's SEQ_CST pair. */
        __atomic_store_n(&c->in_call, 1, __ATOMIC_SEQ_CST);
        return __atomic_load_n(&c->steal, __ATOMIC_SEQ_CST) == 0;
    }
    /* RELAXED + compiler barrier: the claimant's membarrier supplies the fence. */
    __atomic_store_n(&c->in_call, 1, __ATOMIC_RELAXED);
    TM_COMPILER_BARRIER();
    /* ACQUIRE: pairs with the claimant's RELEASE of steal = 0 (we then see len). */
    return __atomic_load_n(&c->steal, __ATOMIC_ACQUIRE) == 0;
}

/* tm_cache_enter for a cache known to be in asymmetric mode (fast != NONE). */
static inline int tm_cache_enter_asym(tm_cache_t *c) {
#ifdef TM_BENCH_NO_HANDSHAKE
    return 1;
#endif
    /* RELAXED + compiler barrier: the claimant's membarrier supplies the fence. */
    __atomic_store_n(&c->in_call, 1, __ATOMIC_RELAXED);
    TM_COMPILER_BARRIER();
    /* ACQUIRE: pairs with the claimant's RELEASE of steal = 0 (we then see len). */
    return __atomic_load_n(&c->steal, __ATOMIC_ACQUIRE) == 0;
}

static inline void tm_cache_exit(tm_cache_t *c) {
#ifdef TM_BENCH_NO_HANDSHAKE
    return;
#endif
    /* RELEASE: pairs with the claimant's load of in_call. */
    __atomic_store_n(&c->in_call, 0, __ATOMIC_RELEASE);
}

/* Half the cache: the magazine size, and the block a flush or refill moves. */
static inline uint32_t tm_cache_half_of(uint32_t size) {
    return (size + 1) / 2;
}

#endif /* TURBOMEM_CACHE_H */
