/* turbomem/pool.h - a fixed-size object pool: per-thread caches in front of a
 * depot of magazines (blocks of handles) and a lock-free stack of handles.
 *
 * This header holds the public API and the inline hit paths.  Everything
 * else (registry, thread slots, thread exit, fork, slow paths, statistics)
 * is compiled once, in src/pool.c: link it (turbomem._core does; the C tests
 * and the benchmark compile it beside themselves).
 *
 * The pool hands out 32-bit handles in [0, capacity).  It never reads or
 * writes object memory (except in TM_POOL_POISON debug mode): the caller owns
 * the region and maps handle h to base + h * stride.
 *
 * MODES (tm_pool_create flags)
 *   checked (default): one out-of-band state byte per object; a double free,
 *     a repeated handle in a bulk, or a handle outside [0, capacity) is
 *     refused with TM_EDOUBLEFREE / TM_ERANGE and nothing is returned.
 *   TM_POOL_UNCHECKED: DPDK's contract.  No per-object state, no per-object
 *     check on the bulk paths; the caller promises to return only handles it
 *     got and only once.  (Single tm_pool_put still refuses h >= capacity: one
 *     compare, and it keeps a stray index out of the pool's own arrays.)
 *   TM_POOL_STATS: keep per-call counters (gets, puts, hits, misses, CAS
 *     retries).  Off by default: the hit path then stores nothing but the
 *     cache length.  in_use / available are exact either way (from counters
 *     that change only when objects cross between a cache and the shared
 *     level).
 *   TM_POOL_POISON: debug; fill free objects, check on get (checked mode).
 *
 * TWO WAYS TO CALL (the same hit paths)
 *   tm_pool_get/put/get_bulk/put_bulk(p, ...) find the calling thread's cache
 *     on every call (a TLS load and an array load).
 *   tm_pool_cache_get/put/get_bulk/put_bulk(p, c, ...) take the cache that
 *     tm_pool_thread_cache(p) returned, looked up once, outside a loop: DPDK's
 *     rte_mempool_default_cache() + rte_mempool_generic_get().  A cache
 *     belongs to the thread that asked for it: passing it from another thread
 *     breaks the pool (as DPDK's per-lcore cache does); it stays valid until
 *     that thread exits or the pool is destroyed.
 *
 * CONCURRENCY CONTRACT
 *   tm_pool_get/put/get_bulk/put_bulk: any number of threads, concurrently.
 *   tm_pool_stats/in_use: any thread, any time; exact when the pool is
 *     quiescent, a snapshot otherwise.
 *   tm_pool_create/destroy: not concurrently with other calls on that pool.
 *   The hit path performs no atomic read-modify-write, no lock and no fence:
 *   see cache.h for the handshake that makes stealing safe.
 *
 * GUARANTEES (both modes; tests/c/pool_stress.c, tests/test_core_modes.py)
 *   - a get fails only when no object is free in the shared level and none
 *     sits in the cache of a thread that is not inside a pool call;
 *   - a thread that exits returns its cached objects;
 *   - a fork child holds every free object exactly once (the prepare handler
 *     quiesces every cache: src/pool.c);
 *   - bulk calls are all or nothing.
 *
 * ERRORS are the negative TM_E* codes below; 0 is success.
 */
#ifndef TURBOMEM_POOL_H
#define TURBOMEM_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "arch.h"
#include "cache.h"
#include "stack.h"

#define TM_OK 0
#define TM_EEMPTY (-1)      /* not enough free objects */
#define TM_ERANGE (-2)      /* handle outside [0, capacity) */
#define TM_EDOUBLEFREE (-3) /* handle already free */
#define TM_ENOMEM (-4)      /* malloc failed */
#define TM_EINVAL (-5)      /* bad argument */
#define TM_EPOISON (-6)     /* debug mode: a free object was written to */

#define TM_MAX_THREADS 1024u
#define TM_MAX_CAPACITY (UINT32_MAX - 1u) /* UINT32_MAX is TM_NIL */

#define TM_POOL_POISON 1u    /* fill free objects with TM_POISON_BYTE, check on get */
#define TM_POOL_UNCHECKED 2u /* no per-object state or checks (DPDK's contract) */
#define TM_POOL_STATS 4u     /* per-call counters */
#define TM_POISON_BYTE 0xDB

enum { TM_FREE = 0, TM_IN_USE = 1 };

/* Symbols shared between pool.c and the inline paths, not for callers. */
#define TM_INTERNAL __attribute__((visibility("hidden")))
/* The hit paths must be inlined at every call site: out of line they cost a
 * call and a spill of the handle (gcc stops inlining them on its own once the
 * cache-less branch is there). */
#define TM_HIT_PATH static inline __attribute__((always_inline))

typedef struct tm_pool tm_pool_t;

/* The shared level.  Magazines are referred to by index (mags + m * mag_size),
 * never by pointer, so the control block stays describable by offsets. */
struct tm_pool {
    tm_stack_t objects;     /* single handles (links: links[]); head alone on its line */
    tm_stack_t full;        /* magazines holding mag_size handles (links: mag_links[]) */
    tm_stack_t empty;       /* magazines holding nothing (same links: one stack at a time) */
    uint32_t capacity;
    uint32_t cache_size;
    uint32_t mag_size;      /* handles per magazine: half the cache (32 without one) */
    uint32_t nmags;
    unsigned flags;
    uint8_t *state;         /* checked mode: TM_FREE / TM_IN_USE per object */
    uint32_t *links;        /* objects.next */
    uint32_t *mags;         /* nmags * mag_size handles */
    uint32_t *mag_links;    /* full.next == empty.next */
    unsigned char *base;    /* object memory, touched only in POISON mode */
    size_t stride, obj_size;
    uint32_t slots_hw;      /* highest caches[] index in use (slot + 1); RELEASE/ACQUIRE */
    /* Rare paths only (atomic RMW): steals, threads without a slot. */
    int64_t shared_net TM_ALIGNED(TM_CACHE_LINE);
    uint64_t uncached_gets, uncached_puts, uncached_retries;
    pthread_mutex_t steal_lock; /* one claimant at a time (slow path only) */
    tm_pool_t *reg_next, *reg_prev;     /* registry list, under the registry lock */
    /* Indexed by slot + 1, written under the registry lock.  Never NULL:
     * entry 0 (threads without a slot) and slots without a cache point to one
     * shared placeholder whose fast kind is NONE, so the hit path loads its
     * cache with no test at all. */
    tm_cache_t *caches[TM_MAX_THREADS + 1];
};

typedef struct tm_pool_stats {
    uint64_t capacity, in_use, available;
    uint64_t gets, puts, cache_hits, cache_misses, cas_retries; /* 0 unless TM_POOL_STATS */
    uint64_t cached;  /* free objects sitting in per-thread caches */
    uint64_t threads; /* caches allocated (threads that used the pool) */
    int asymmetric;   /* 1: hit path fence-free (membarrier available) */
} tm_pool_stats_t;

/* ---- compiled in src/pool.c --------------------------------------------- */

/* base/stride/obj_size describe the object memory (base may be NULL unless
 * TM_POOL_POISON is set).  All objects start free. */
int tm_pool_create(tm_pool_t **out, uint32_t capacity, uint32_t cache_size,
                   void *base, size_t stride, size_t obj_size, unsigned flags);
void tm_pool_destroy(tm_pool_t *p);
void tm_pool_stats(tm_pool_t *p, tm_pool_stats_t *st);
/* The calling thread's cache of p, created if need be, for the
 * tm_pool_cache_* calls.  Never NULL: a thread that cannot have a cache (more
 * than TM_MAX_THREADS threads, or malloc failed) gets a placeholder, and its
 * calls then take the general path, correct and slower. */
tm_cache_t *tm_pool_thread_cache(tm_pool_t *p);
/* 1 when the hit path is fence-free (membarrier-based steal). */
int tm_pool_asymmetric(void);
/* 1 if h is currently handed out (checked mode; racy under concurrency: a
 * hint).  Unchecked pools keep no per-object state: always -1. */
int tm_pool_is_in_use(tm_pool_t *p, uint32_t h);

/* The general paths (everything the inline paths do not finish). */
TM_INTERNAL int tm_pool_get_slow_(tm_pool_t *p, uint32_t *out, uint32_t n, uint32_t *bad);
TM_INTERNAL int tm_pool_put_slow_(tm_pool_t *p, const uint32_t *hs, uint32_t n, uint32_t *bad);
TM_INTERNAL int tm_pool_put1_slow_(tm_pool_t *p, uint32_t h);
TM_INTERNAL extern __thread uint32_t tm_thread_slot1_
    __attribute__((tls_model("initial-exec"))); /* slot + 1; 0 = none yet */

/* ---- inline hit paths ----------------------------------------------------- */

/* Copy n handles with fixed-size block moves (inlined), not a memcpy call:
 * the bulk hit paths copy a few handles, where a call costs more than the copy. */
TM_HIT_PATH void tm_copy_handles_(uint32_t *d, const uint32_t *s, uint32_t n) {
    for (; n >= 8; n -= 8, d += 8, s += 8)
        memcpy(d, s, 8 * sizeof(uint32_t));
    if (n & 4) {
        memcpy(d, s, 4 * sizeof(uint32_t));
        d += 4;
        s += 4;
    }
    if (n & 2) {
        memcpy(d, s, 2 * sizeof(uint32_t));
        d += 2;
        s += 2;
    }
    if (n & 1)
        *d = *s;
}

/* This thread's cache for p, or the placeholder (fast kind NONE). */
TM_HIT_PATH tm_cache_t *tm_pool_my_cache_(tm_pool_t *p) {
    return p->caches[tm_thread_slot1_]; /* our own write, or the placeholder */
}

/* Get exactly n objects (n >= 1) or none: TM_OK, TM_EEMPTY, or TM_EPOISON
 * (debug mode; the objects were handed out, *bad says which one).
 * c: this thread's cache (tm_pool_thread_cache). */
TM_HIT_PATH int tm_pool_cache_get_bulk(tm_pool_t *p, tm_cache_t *c, uint32_t *out, uint32_t n,
                                       uint32_t *bad) {
    if (TM_LIKELY(c->fast == TM_FAST_CACHE)) {
        if (TM_LIKELY(tm_cache_enter_asym(c))) {
            uint32_t len = c->len;
            if (TM_LIKELY(n <= len && n != 0)) {
                /* The hottest n, one block copy (order within a bulk is free). */
                const uint32_t *src = c->objs + len - n;
                tm_copy_handles_(out, src, n);
                TM_SET_LEN(c, len - n);
                uint8_t *state = c->state;
                if (state)
                    /* From src, not out: out was just written by wide stores. */
                    for (uint32_t i = 0; i < n; i++)
                        /* RELAXED: only the holder of a handle writes its byte;
                         * handing over goes through the shared level's
                         * RELEASE/ACQUIRE or stays in this thread. */
                        __atomic_store_n(&state[src[i]], TM_IN_USE, __ATOMIC_RELAXED);
                tm_cache_exit(c);
                return TM_OK;
            }
        }
        tm_cache_exit(c);
    }
    return tm_pool_get_slow_(p, out, n, bad);
}

TM_HIT_PATH int tm_pool_get_bulk_ex(tm_pool_t *p, uint32_t *out, uint32_t n, uint32_t *bad) {
    return tm_pool_cache_get_bulk(p, tm_pool_my_cache_(p), out, n, bad);
}

TM_HIT_PATH int tm_pool_get_bulk(tm_pool_t *p, uint32_t *out, uint32_t n) {
    return tm_pool_cache_get_bulk(p, tm_pool_my_cache_(p), out, n, NULL);
}

TM_HIT_PATH int tm_pool_cache_get(tm_pool_t *p, tm_cache_t *c, uint32_t *out) {
    {
        if (TM_LIKELY(c->fast == TM_FAST_CACHE)) {
            if (TM_LIKELY(tm_cache_enter_asym(c))) {
                uint32_t len = c->len;
                if (TM_LIKELY(len != 0)) {
                    uint32_t h = c->objs[len - 1];
                    TM_SET_LEN(c, len - 1);
                    if (c->state) /* RELAXED: see tm_pool_get_bulk_ex */
                        __atomic_store_n(&c->state[h], TM_IN_USE, __ATOMIC_RELAXED);
                    tm_cache_exit(c);
                    *out = h;
                    return TM_OK;
                }
            }
            tm_cache_exit(c);
        } else if (c->fast == TM_FAST_NOCACHE) {
            /* No cache: one CAS on the objects stack, inside a call (so that
             * fork never sees an object taken but not yet counted). */
            if (TM_LIKELY(tm_cache_enter_asym(c))) {
                uint32_t h, retries = 0;
                if (TM_LIKELY(tm_stack_pop(&p->objects, &h, &retries))) {
                    TM_NET_ADD(c, 1);
                    tm_cache_exit(c);
                    if (c->state) /* RELAXED: see tm_pool_get_bulk_ex */
                        __atomic_store_n(&c->state[h], TM_IN_USE, __ATOMIC_RELAXED);
                    *out = h;
                    return TM_OK;
                }
            }
            tm_cache_exit(c);
        }
    }
    return tm_pool_get_slow_(p, out, 1, NULL);
}

TM_HIT_PATH int tm_pool_get(tm_pool_t *p, uint32_t *out) {
    return tm_pool_cache_get(p, tm_pool_my_cache_(p), out);
}

/* Put n objects back, all or nothing.  Checked mode validates every handle
 * first: on TM_ERANGE / TM_EDOUBLEFREE nothing is returned and *bad (if not
 * NULL) is the index of the offending entry (a handle repeated within hs is a
 * double free).  Unchecked mode trusts the caller. */
TM_HIT_PATH int tm_pool_cache_put_bulk(tm_pool_t *p, tm_cache_t *c, const uint32_t *hs, uint32_t n,
                                       uint32_t *bad) {
    if (TM_LIKELY(c->fast == TM_FAST_CACHE)) {
        if (TM_LIKELY(tm_cache_enter_asym(c))) {
            uint32_t len = c->len;
            if (TM_LIKELY(len + n <= c->size)) {
                uint8_t *state = c->state;
                if (state) {
                    /* One pass: range, state, mark free; a repeated handle meets
                     * its first occurrence's mark.  On error roll back. */
                    const uint32_t cap = c->capacity;
                    for (uint32_t i = 0; i < n; i++) {
                        uint32_t h = hs[i];
                        /* RELAXED load and store: see tm_pool_get_bulk_ex. */
                        if (TM_UNLIKELY(h >= cap ||
                                        __atomic_load_n(&state[h], __ATOMIC_RELAXED) != TM_IN_USE)) {
                            for (uint32_t j = 0; j < i; j++)
                                __atomic_store_n(&state[hs[j]], TM_IN_USE, __ATOMIC_RELAXED);
                            tm_cache_exit(c);
                            if (bad)
                                *bad = i;
                            return h >= cap ? TM_ERANGE : TM_EDOUBLEFREE;
                        }
                        __atomic_store_n(&state[h], TM_FREE, __ATOMIC_RELAXED);
                    }
                }
                tm_copy_handles_(c->objs + len, hs, n);
                TM_SET_LEN(c, len + n);
                tm_cache_exit(c);
                return TM_OK;
            }
        }
        tm_cache_exit(c);
    }
    return tm_pool_put_slow_(p, hs, n, bad);
}

TM_HIT_PATH int tm_pool_put_bulk(tm_pool_t *p, const uint32_t *hs, uint32_t n, uint32_t *bad) {
    return tm_pool_cache_put_bulk(p, tm_pool_my_cache_(p), hs, n, bad);
}

TM_HIT_PATH int tm_pool_cache_put(tm_pool_t *p, tm_cache_t *c, uint32_t h) {
    if (TM_LIKELY(h < c->capacity)) { /* the placeholder's capacity is 0 */
        uint8_t *state = c->state;
        if (TM_LIKELY(c->fast == TM_FAST_CACHE)) {
            if (TM_LIKELY(tm_cache_enter_asym(c))) {
                uint32_t len = c->len;
                if (TM_LIKELY(len < c->size) &&
                    /* RELAXED: see tm_pool_get_bulk_ex. */
                    (!state || __atomic_load_n(&state[h], __ATOMIC_RELAXED) == TM_IN_USE)) {
                    if (state)
                        __atomic_store_n(&state[h], TM_FREE, __ATOMIC_RELAXED);
                    c->objs[len] = h;
                    TM_SET_LEN(c, len + 1);
                    tm_cache_exit(c);
                    return TM_OK;
                }
            }
            tm_cache_exit(c);
        } else if (c->fast == TM_FAST_NOCACHE &&
                   /* RELAXED: see tm_pool_get_bulk_ex. */
                   (!state || __atomic_load_n(&state[h], __ATOMIC_RELAXED) == TM_IN_USE)) {
            if (TM_LIKELY(tm_cache_enter_asym(c))) {
                if (state)
                    __atomic_store_n(&state[h], TM_FREE, __ATOMIC_RELAXED);
                tm_stack_push(&p->objects, h); /* one CAS */
                TM_NET_ADD(c, -1);
                tm_cache_exit(c);
                return TM_OK;
            }
            tm_cache_exit(c);
        }
    }
    return tm_pool_put1_slow_(p, h); /* by value: no spill of h on the hit path */
}

TM_HIT_PATH int tm_pool_put(tm_pool_t *p, uint32_t h) {
    return tm_pool_cache_put(p, tm_pool_my_cache_(p), h);
}

static inline uint64_t tm_pool_in_use(tm_pool_t *p) {
    tm_pool_stats_t st;
    tm_pool_stats(p, &st);
    return st.in_use;
}

#endif /* TURBOMEM_POOL_H */
