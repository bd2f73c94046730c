/* turbomem/cache.h - per-thread object caches in front of the shared stack.
 *
 * CONCURRENCY CONTRACT
 *   A cache has one OWNER: the thread whose slot it belongs to (pool.h).  Only
 *   the owner calls tm_cache_enter/exit and the tm_cache_* operations.  One
 *   STEALER at a time (serialised by the pool's steal_lock) may take the whole
 *   contents of a cache whose owner is not inside a pool call; that is how a
 *   get succeeds while objects sit in the cache of a thread that is blocked or
 *   idle.
 *
 * THE STEAL PROTOCOL (an asymmetric Dekker handshake)
 *   owner, on entry:  in_call = 1; [barrier B_o]; if steal != 0 -> bypass cache
 *   owner, on exit:   in_call = 0 (RELEASE)
 *   stealer:          steal = 1; [barrier B_s]; if in_call == 0 -> take all;
 *                     steal = 0 (RELEASE)
 *   Dekker needs a full barrier between each side's store and load.  In the
 *   default ASYMMETRIC mode B_o is only a compiler barrier, so the hit path has
 *   no locked instruction and no fence; B_s is membarrier(PRIVATE_EXPEDITED),
 *   which runs a full barrier on every CPU running a thread of this process
 *   (and a descheduled thread passed one when it was switched out).  Then
 *   either the owner's `in_call = 1` was globally visible before that barrier,
 *   so the stealer reads in_call == 1 and leaves the cache alone; or the
 *   owner's store comes after the barrier, so its following load of `steal`
 *   comes after the stealer's `steal = 1` and it bypasses its cache.  Both
 *   sides can never touch the cache at once.  When membarrier is unavailable
 *   (seccomp, old kernel) or under ThreadSanitizer (which cannot see it), the
 *   pool runs in SYMMETRIC mode: both sides use SEQ_CST store and load, which
 *   is the textbook Dekker at the price of one locked instruction per call.
 *
 * MEMORY ORDERING
 *   in_call = 0 on exit: RELEASE, pairs with the stealer's ACQUIRE load of
 *     in_call, so the stealer sees the owner's last writes to len and objs[].
 *   steal = 0 after a steal: RELEASE, pairs with the owner's ACQUIRE load of
 *     steal on entry, so the owner sees len = 0 written by the stealer.
 *   len: written by the owner (and by a stealer holding the handshake) with
 *     RELAXED atomic stores; the stealer's unprotected peek at len is a RELAXED
 *     load used only as a hint.
 *   Counters (gets, puts, ...): written only by the owner with RELAXED stores
 *     (no read-modify-write); tm_pool_stats reads them RELAXED.  Exact when
 *     the pool is quiescent, approximate while it runs.
 *
 * CACHE POLICY (DPDK 26.07 style)
 *   Objects are kept LIFO: objs[len - 1] is the hottest.  A put into a full
 *   cache flushes the colder half (objs[0 .. half)) to the stack in one bulk
 *   push; a get from an empty cache refills half in one bulk pop.  Requests
 *   larger than half the cache bypass it.
 */
#ifndef TURBOMEM_CACHE_H
#define TURBOMEM_CACHE_H

#include <stdint.h>
#include <string.h>
#include "arch.h"
#include "stack.h"

#define TM_CACHE_MAX 512u

typedef struct tm_cache {
    uint32_t len;     /* objects held; see MEMORY ORDERING */
    uint32_t size;    /* most objects held (0: caching disabled) */
    uint32_t in_call; /* owner is inside a pool call */
    uint32_t steal;   /* a stealer has claimed this cache */
    /* owner-only statistics */
    uint64_t gets, puts;       /* objects handed out / taken back */
    uint64_t hits, misses;     /* calls served by the cache alone / that touched the stack */
    uint64_t cas_retries;      /* failed CAS attempts on the shared stack */
    uint32_t objs[];           /* `size` entries */
} tm_cache_t;

#define TM_STAT_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define TM_SET_LEN(c, n) __atomic_store_n(&(c)->len, (n), __ATOMIC_RELAXED)

/* Owner entry.  Returns 1 if the owner may use its cache for this call, 0 if a
 * stealer holds it (the owner then works on the shared stack directly). */
static inline int tm_cache_enter(tm_cache_t *c, int symmetric) {
    if (TM_UNLIKELY(symmetric)) {
        /* SEQ_CST store + SEQ_CST load: Dekker with the stealer's SEQ_CST pair. */
        __atomic_store_n(&c->in_call, 1, __ATOMIC_SEQ_CST);
        return __atomic_load_n(&c->steal, __ATOMIC_SEQ_CST) == 0;
    }
    /* RELAXED + compiler barrier: the stealer's membarrier supplies the fence. */
    __atomic_store_n(&c->in_call, 1, __ATOMIC_RELAXED);
    TM_COMPILER_BARRIER();
    /* ACQUIRE: pairs with the stealer's RELEASE of steal = 0 (we then see len). */
    return __atomic_load_n(&c->steal, __ATOMIC_ACQUIRE) == 0;
}

static inline void tm_cache_exit(tm_cache_t *c) {
    /* RELEASE: pairs with the stealer's ACQUIRE load of in_call. */
    __atomic_store_n(&c->in_call, 0, __ATOMIC_RELEASE);
}

static inline uint32_t tm_cache_half(const tm_cache_t *c) {
    return (c->size + 1) / 2;
}

/* Owner, inside a call: push the colder `n` objects to the stack. */
static inline void tm_cache_flush_cold(tm_cache_t *c, tm_stack_t *s, uint32_t n) {
    uint32_t len = c->len;
    TM_STAT_ADD(c->cas_retries, tm_stack_push_bulk(s, c->objs, n));
    memmove(c->objs, c->objs + n, (size_t)(len - n) * sizeof(uint32_t));
    TM_SET_LEN(c, len - n);
}

/* Owner, inside a call: everything back to the stack. */
static inline void tm_cache_flush_all(tm_cache_t *c, tm_stack_t *s) {
    if (c->len) {
        TM_STAT_ADD(c->cas_retries, tm_stack_push_bulk(s, c->objs, c->len));
        TM_SET_LEN(c, 0);
    }
}

/* Owner, inside a call: take n <= half objects from the cache, refilling it
 * from the stack when short.  Returns 0 when cache + stack hold fewer than n. */
static inline int tm_cache_get(tm_cache_t *c, tm_stack_t *s, uint32_t *out, uint32_t n) {
    uint32_t len = c->len;
    if (TM_UNLIKELY(len < n)) {
        uint32_t retries = 0;
        uint32_t want = n - len + tm_cache_half(c); /* ends with about half full */
        if (want > c->size - len)
            want = c->size - len;
        int ok = tm_stack_pop_bulk(s, c->objs + len, want, &retries);
        if (!ok && want > n - len) {
            want = n - len; /* the stack may hold just what this call needs */
            ok = tm_stack_pop_bulk(s, c->objs + len, want, &retries);
        }
        TM_STAT_ADD(c->cas_retries, retries);
        TM_STAT_ADD(c->misses, 1);
        if (!ok)
            return 0;
        len += want;
    } else {
        TM_STAT_ADD(c->hits, 1);
    }
    /* The hottest n, copied as a block (order within a bulk does not matter). */
    memcpy(out, c->objs + len - n, (size_t)n * sizeof(uint32_t));
    TM_SET_LEN(c, len - n);
    return 1;
}

/* Owner, inside a call: take back n <= half objects, flushing the colder half
 * first when they do not fit. */
static inline void tm_cache_put(tm_cache_t *c, tm_stack_t *s, const uint32_t *objs, uint32_t n) {
    if (TM_UNLIKELY(c->len + n > c->size)) {
        uint32_t cold = tm_cache_half(c);
        if (cold > c->len)
            cold = c->len;
        tm_cache_flush_cold(c, s, cold);
        TM_STAT_ADD(c->misses, 1);
    } else {
        TM_STAT_ADD(c->hits, 1);
    }
    uint32_t len = c->len;
    memcpy(c->objs + len, objs, (size_t)n * sizeof(uint32_t));
    TM_SET_LEN(c, len + n);
}

/* Stealer, after raising `steal` and its barrier: take everything if the owner
 * is not inside a call, then release the claim.  Returns objects moved. */
static inline uint32_t tm_cache_drain_claimed(tm_cache_t *c, tm_stack_t *s, uint32_t *retries) {
    uint32_t moved = 0;
    /* SEQ_CST (symmetric mode needs it; ACQUIRE would do for asymmetric):
     * pairs with the owner's RELEASE store of in_call = 0. */
    if (__atomic_load_n(&c->in_call, __ATOMIC_SEQ_CST) == 0) {
        moved = __atomic_load_n(&c->len, __ATOMIC_RELAXED);
        if (moved) {
            *retries += tm_stack_push_bulk(s, c->objs, moved);
            TM_SET_LEN(c, 0);
        }
    }
    /* RELEASE: pairs with the owner's ACQUIRE load of steal in tm_cache_enter. */
    __atomic_store_n(&c->steal, 0, __ATOMIC_RELEASE);
    return moved;
}

#endif /* TURBOMEM_CACHE_H */
