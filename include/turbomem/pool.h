/* turbomem/pool.h - a fixed-size object pool: lock-free stack + per-thread caches.
 *
 * The pool hands out 32-bit handles in [0, capacity).  It never reads or
 * writes object memory (except in TM_POOL_POISON debug mode): the caller owns
 * the region and maps handle h to base + h * stride.
 *
 * CONCURRENCY CONTRACT
 *   tm_pool_get/put/get_bulk/put_bulk: any number of threads, concurrently.
 *   tm_pool_stats/in_use: any thread, any time; exact when the pool is
 *     quiescent, a consistent-enough snapshot otherwise.
 *   tm_pool_create/destroy: not concurrently with other calls on that pool.
 *   The fast path (cache hit) performs no atomic read-modify-write, no lock and
 *   no fence: see cache.h for the steal handshake that makes this safe.
 *
 * THREADS
 *   Each thread gets a small slot number on its first pool call (stored in an
 *   initial-exec TLS variable: no __tls_get_addr call on the hit path) and, per
 *   pool, a cache in pool->caches[slot].  When a thread exits, a pthread key
 *   destructor returns its cached objects to every pool's stack and frees its
 *   slot for reuse.  A thread beyond TM_MAX_THREADS works without a cache.
 *
 * FORK
 *   pthread_atfork handlers hold the registry lock (and every steal_lock)
 *   across fork(); in the child each pool's free stack is rebuilt from the
 *   per-object state bytes (tm_fork_rebuild_): objects cached by any thread,
 *   or being moved by a thread that was inside a call at the instant of fork,
 *   are reclaimed exactly once, and the counters are made to agree.
 *
 * ONE TRANSLATION UNIT
 *   The registry and the TLS slot are `static`: every pool must be used through
 *   a single translation unit (turbomem._core; other Cython modules call its
 *   exported functions, they do not include this header themselves).
 *
 * ERRORS are the negative TM_E* codes below; 0 is success.
 */
#ifndef TURBOMEM_POOL_H
#define TURBOMEM_POOL_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
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

#define TM_POOL_POISON 1u /* fill free objects with TM_POISON_BYTE, check on get */
#define TM_POISON_BYTE 0xDB

enum { TM_FREE = 0, TM_IN_USE = 1 };

typedef struct tm_pool tm_pool_t;

struct tm_pool {
    tm_stack_t stack;       /* head alone on its cache line */
    uint32_t capacity;
    uint32_t cache_size;
    unsigned flags;
    uint8_t *state;         /* per object TM_FREE / TM_IN_USE, out of band */
    uint32_t *links;        /* the stack's next[] */
    unsigned char *base;    /* object memory, touched only in POISON mode */
    size_t stride, obj_size;
    uint32_t slots_hw;      /* 1 + highest slot with a cache; RELEASE/ACQUIRE */
    uint64_t uncached_gets TM_ALIGNED(TM_CACHE_LINE); /* threads without a slot: atomic RMW */
    uint64_t uncached_puts;
    uint64_t uncached_retries;
    pthread_mutex_t steal_lock; /* one stealer at a time (slow path only) */
    tm_pool_t *reg_next, *reg_prev;     /* registry list, under tm_registry_lock */
    tm_cache_t *caches[TM_MAX_THREADS]; /* slot -> cache; written under the registry lock */
};

typedef struct tm_pool_stats {
    uint64_t capacity, in_use, available;
    uint64_t gets, puts, cache_hits, cache_misses, cas_retries;
    uint64_t cached;  /* free objects sitting in per-thread caches */
    uint64_t threads; /* caches allocated (threads that used the pool) */
    int asymmetric;   /* 1: hit path fence-free (membarrier available) */
} tm_pool_stats_t;

/* ---- process-wide registry ------------------------------------------------ */

static __thread uint32_t tm_thread_slot1_ __attribute__((tls_model("initial-exec"))); /* slot + 1; 0 = none */
static pthread_mutex_t tm_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static tm_pool_t *tm_registry_head;
static uint64_t tm_slot_bits[TM_MAX_THREADS / 64]; /* under tm_registry_lock */
static pthread_key_t tm_thread_key;
static pthread_once_t tm_init_once = PTHREAD_ONCE_INIT;
static int tm_symmetric_ = 1; /* set once in tm_global_init_, read on every call */

#if defined(__SANITIZE_THREAD__)
#define TM_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TM_TSAN 1
#endif
#endif

#ifndef __NR_membarrier
#define TM_HAVE_MEMBARRIER 0
#else
#define TM_HAVE_MEMBARRIER 1
#define TM_MB_QUERY 0
#define TM_MB_PRIVATE_EXPEDITED (1 << 3)
#define TM_MB_REGISTER_PRIVATE_EXPEDITED (1 << 4)
#endif

static int tm_membarrier_setup_(void) {
#if TM_HAVE_MEMBARRIER && !defined(TM_TSAN) && !defined(TM_FORCE_SYMMETRIC)
    long cmds = syscall(__NR_membarrier, TM_MB_QUERY, 0, 0);
    if (cmds < 0 || !(cmds & TM_MB_PRIVATE_EXPEDITED))
        return 0;
    return syscall(__NR_membarrier, TM_MB_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
    return 0;
#endif
}

static int tm_membarrier_(void) {
#if TM_HAVE_MEMBARRIER
    return syscall(__NR_membarrier, TM_MB_PRIVATE_EXPEDITED, 0, 0) == 0;
#else
    return 0;
#endif
}

static void tm_thread_exit_(void *slot1);
static void tm_fork_prepare_(void);
static void tm_fork_parent_(void);
static void tm_fork_child_(void);

static void tm_global_init_(void) {
    pthread_key_create(&tm_thread_key, tm_thread_exit_);
    pthread_atfork(tm_fork_prepare_, tm_fork_parent_, tm_fork_child_);
    tm_symmetric_ = !tm_membarrier_setup_();
}

/* 1 when the hit path is fence-free (membarrier-based steal). */
static inline int tm_pool_asymmetric(void) {
    pthread_once(&tm_init_once, tm_global_init_);
    return !tm_symmetric_;
}

static int tm_slot_alloc_(void) { /* under tm_registry_lock */
    for (uint32_t w = 0; w < TM_MAX_THREADS / 64; w++) {
        if (~tm_slot_bits[w]) {
            int b = __builtin_ctzll(~tm_slot_bits[w]);
            tm_slot_bits[w] |= 1ull << b;
            return (int)(w * 64 + (uint32_t)b);
        }
    }
    return -1;
}

static void tm_slot_free_(uint32_t slot) { /* under tm_registry_lock */
    tm_slot_bits[slot / 64] &= ~(1ull << (slot % 64));
}

/* Owner: return everything in its cache to the stack, waiting out a stealer. */
static void tm_cache_retire_(tm_cache_t *c, tm_stack_t *s) {
    for (;;) {
        if (tm_cache_enter(c, tm_symmetric_)) {
            tm_cache_flush_all(c, s);
            tm_cache_exit(c);
            return;
        }
        tm_cache_exit(c);
        /* ACQUIRE: pairs with the stealer's RELEASE of steal = 0. */
        while (__atomic_load_n(&c->steal, __ATOMIC_ACQUIRE))
            TM_CPU_RELAX();
    }
}

static void tm_thread_exit_(void *slot1) {
    uint32_t slot = (uint32_t)(uintptr_t)slot1 - 1;
    pthread_mutex_lock(&tm_registry_lock);
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next) {
        tm_cache_t *c = p->caches[slot];
        if (c)
            tm_cache_retire_(c, &p->stack);
    }
    tm_slot_free_(slot);
    tm_thread_slot1_ = 0;
    pthread_mutex_unlock(&tm_registry_lock);
}

static void tm_fork_prepare_(void) {
    pthread_mutex_lock(&tm_registry_lock);
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next)
        pthread_mutex_lock(&p->steal_lock);
}

static void tm_fork_parent_(void) {
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next)
        pthread_mutex_unlock(&p->steal_lock);
    pthread_mutex_unlock(&tm_registry_lock);
}

/* The child has one thread: every other slot's cache is orphaned, and a
 * thread that was inside a pool call at the instant of fork may have left its
 * cache, the stack or its counters half-updated (for example objects already
 * pushed by a flush whose cache length was not yet lowered: flushing that
 * cache again would put them on the stack twice).  So the child does not
 * trust the caches: it rebuilds the free stack from the state bytes, which
 * every path sets before an object becomes reachable (put) or after it left
 * the stack (get).  Every object marked free is on the stack exactly once,
 * every cache is empty, and the counters are corrected so that in_use equals
 * the number of objects marked in use.  O(capacity), in the child only. */
static void tm_fork_rebuild_(tm_pool_t *p) {
    uint32_t top = TM_NIL;
    uint64_t in_use = 0, gets = p->uncached_gets, puts = p->uncached_puts;
    for (uint32_t s = 0; s < p->slots_hw; s++) {
        tm_cache_t *c = p->caches[s];
        if (!c)
            continue;
        c->in_call = 0;
        c->steal = 0;
        c->len = 0;
        gets += c->gets;
        puts += c->puts;
    }
    for (uint32_t h = p->capacity; h-- > 0;) {
        if (p->state[h] == TM_IN_USE) {
            in_use++;
            continue;
        }
        p->links[h] = top;
        top = h;
        if (p->flags & TM_POOL_POISON) /* a put may have been cut before poisoning */
            memset(p->base + (size_t)h * p->stride, TM_POISON_BYTE, p->obj_size);
    }
    p->stack.head = tm_stack_pack_((p->stack.head >> 32) + 1, top);
    /* in_use is gets - puts (mod 2^64): fold the difference into uncached_puts. */
    p->uncached_puts += (gets - puts) - in_use;
}

static void tm_fork_child_(void) {
    uint32_t mine = tm_thread_slot1_;
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next) {
        tm_fork_rebuild_(p);
        pthread_mutex_init(&p->steal_lock, NULL);
    }
    memset(tm_slot_bits, 0, sizeof tm_slot_bits);
    if (mine)
        tm_slot_bits[(mine - 1) / 64] |= 1ull << ((mine - 1) % 64);
    /* membarrier registration belongs to the old mm; register the child's. */
    if (!tm_symmetric_ && !tm_membarrier_setup_())
        tm_symmetric_ = 1;
    pthread_mutex_init(&tm_registry_lock, NULL);
}

/* Slow path of tm_pool_cache_: give this thread a slot and this pool a cache. */
static tm_cache_t *tm_pool_cache_slow_(tm_pool_t *p) {
    pthread_once(&tm_init_once, tm_global_init_);
    tm_cache_t *c = NULL;
    pthread_mutex_lock(&tm_registry_lock);
    uint32_t slot1 = tm_thread_slot1_;
    if (!slot1) {
        int slot = tm_slot_alloc_();
        if (slot >= 0) {
            slot1 = (uint32_t)slot + 1;
            if (pthread_setspecific(tm_thread_key, (void *)(uintptr_t)slot1) != 0) {
                tm_slot_free_((uint32_t)slot);
                slot1 = 0;
            }
            tm_thread_slot1_ = slot1;
        }
    }
    if (slot1) {
        c = p->caches[slot1 - 1];
        if (!c) {
            size_t bytes = sizeof(tm_cache_t) + (size_t)p->cache_size * sizeof(uint32_t);
            bytes = (bytes + TM_CACHE_LINE - 1) / TM_CACHE_LINE * TM_CACHE_LINE;
            c = aligned_alloc(TM_CACHE_LINE, bytes);
            if (c) {
                memset(c, 0, bytes);
                c->size = p->cache_size;
                /* RELEASE: pairs with the stealer's ACQUIRE load of caches[]. */
                __atomic_store_n(&p->caches[slot1 - 1], c, __ATOMIC_RELEASE);
                if (slot1 > p->slots_hw)
                    /* RELEASE: pairs with the ACQUIRE reads bounding scans. */
                    __atomic_store_n(&p->slots_hw, slot1, __ATOMIC_RELEASE);
            }
        }
    }
    pthread_mutex_unlock(&tm_registry_lock);
    return c;
}

/* This thread's cache for p, or NULL when it has no slot (then: no cache). */
static inline tm_cache_t *tm_pool_cache_(tm_pool_t *p) {
    uint32_t slot1 = tm_thread_slot1_;
    if (TM_LIKELY(slot1)) {
        tm_cache_t *c = p->caches[slot1 - 1]; /* our own write, or NULL */
        if (TM_LIKELY(c != NULL))
            return c;
    }
    return tm_pool_cache_slow_(p);
}

/* ---- debug poisoning ------------------------------------------------------ */

static inline unsigned char *tm_pool_obj_(tm_pool_t *p, uint32_t h) {
    return p->base + (size_t)h * p->stride;
}

static inline int tm_pool_poison_ok_(tm_pool_t *p, uint32_t h) {
    const unsigned char *o = tm_pool_obj_(p, h);
    for (size_t i = 0; i < p->obj_size; i++)
        if (o[i] != TM_POISON_BYTE)
            return 0;
    return 1;
}

/* ---- create / destroy ------------------------------------------------------ */

/* base/stride/obj_size describe the object memory (base may be NULL unless
 * TM_POOL_POISON is set).  All objects start free, stacked in order 0, 1, 2, ... */
static int tm_pool_create(tm_pool_t **out, uint32_t capacity, uint32_t cache_size,
                          void *base, size_t stride, size_t obj_size, unsigned flags) {
    *out = NULL;
    if (capacity == 0 || capacity > TM_MAX_CAPACITY || cache_size > TM_CACHE_MAX ||
        cache_size > capacity || ((flags & TM_POOL_POISON) && (!base || stride < obj_size)))
        return TM_EINVAL;
    pthread_once(&tm_init_once, tm_global_init_);
    tm_pool_t *p = aligned_alloc(TM_CACHE_LINE, (sizeof(tm_pool_t) + TM_CACHE_LINE - 1) / TM_CACHE_LINE * TM_CACHE_LINE);
    if (!p)
        return TM_ENOMEM;
    memset(p, 0, sizeof *p);
    p->links = malloc((size_t)capacity * sizeof(uint32_t));
    p->state = calloc(capacity, 1); /* all TM_FREE */
    if (!p->links || !p->state) {
        free(p->links);
        free(p->state);
        free(p);
        return TM_ENOMEM;
    }
    p->capacity = capacity;
    p->cache_size = cache_size;
    p->flags = flags;
    p->base = base;
    p->stride = stride;
    p->obj_size = obj_size;
    pthread_mutex_init(&p->steal_lock, NULL);
    /* Not shared yet: build the chain 0 -> 1 -> ... -> capacity-1 directly. */
    p->stack.next = p->links;
    p->stack.capacity = capacity;
    for (uint32_t i = 0; i + 1 < capacity; i++)
        p->links[i] = i + 1;
    p->links[capacity - 1] = TM_NIL;
    p->stack.head = 0; /* tag 0, top 0 */
    if (flags & TM_POOL_POISON)
        for (uint32_t i = 0; i < capacity; i++)
            memset(tm_pool_obj_(p, i), TM_POISON_BYTE, obj_size);

    pthread_mutex_lock(&tm_registry_lock);
    p->reg_next = tm_registry_head;
    if (tm_registry_head)
        tm_registry_head->reg_prev = p;
    tm_registry_head = p;
    pthread_mutex_unlock(&tm_registry_lock);
    *out = p;
    return TM_OK;
}

static void tm_pool_destroy(tm_pool_t *p) {
    if (!p)
        return;
    pthread_mutex_lock(&tm_registry_lock);
    if (p->reg_prev)
        p->reg_prev->reg_next = p->reg_next;
    else
        tm_registry_head = p->reg_next;
    if (p->reg_next)
        p->reg_next->reg_prev = p->reg_prev;
    pthread_mutex_unlock(&tm_registry_lock);
    for (uint32_t s = 0; s < p->slots_hw; s++)
        free(p->caches[s]);
    pthread_mutex_destroy(&p->steal_lock);
    free(p->links);
    free(p->state);
    free(p);
}

/* ---- the slow path that never gives up while objects are free ------------ */

/* Pop n from the stack; if short, take the contents of every other thread's
 * cache whose owner is not inside a call (cache.h), then try again.  `self`
 * (may be NULL) is the caller's own cache (the caller is inside its call). */
static int tm_pool_pop_or_steal_(tm_pool_t *p, tm_cache_t *self, uint32_t *out, uint32_t n,
                                 uint32_t *retries) {
    if (tm_stack_pop_bulk(&p->stack, out, n, retries))
        return 1;
    pthread_mutex_lock(&p->steal_lock);
    /* Our own cache may still hold objects: the caller could not flush it if a
     * stealer had claimed it at entry (and that stealer, seeing in_call == 1,
     * left it alone).  Stealers only work under steal_lock, so it is ours now. */
    if (self && __atomic_load_n(&self->len, __ATOMIC_RELAXED))
        tm_cache_flush_all(self, &p->stack);
    int ok = tm_stack_pop_bulk(&p->stack, out, n, retries);
    if (!ok) {
        uint64_t claimed[TM_MAX_THREADS / 64] = {0};
        int any = 0;
        /* ACQUIRE: pairs with the RELEASE in tm_pool_cache_slow_. */
        uint32_t hw = __atomic_load_n(&p->slots_hw, __ATOMIC_ACQUIRE);
        for (uint32_t s = 0; s < hw; s++) {
            tm_cache_t *c = __atomic_load_n(&p->caches[s], __ATOMIC_ACQUIRE);
            if (!c || c == self || __atomic_load_n(&c->len, __ATOMIC_RELAXED) == 0)
                continue; /* RELAXED peek at len: a hint, re-read under the handshake */
            /* SEQ_CST: the stealer's half of the Dekker handshake (cache.h). */
            __atomic_store_n(&c->steal, 1, __ATOMIC_SEQ_CST);
            claimed[s / 64] |= 1ull << (s % 64);
            any = 1;
        }
        /* Asymmetric mode: the membarrier is the fence the owners skipped.  If
         * it fails we must not touch any cache: drop the claims unused. */
        int fenced = tm_symmetric_ || tm_membarrier_();
        for (uint32_t s = 0; any && s < hw; s++) {
            if (!(claimed[s / 64] & (1ull << (s % 64))))
                continue;
            tm_cache_t *c = p->caches[s];
            if (fenced)
                tm_cache_drain_claimed(c, &p->stack, retries);
            else
                __atomic_store_n(&c->steal, 0, __ATOMIC_RELEASE); /* pairs with enter's ACQUIRE */
        }
        if (any)
            ok = tm_stack_pop_bulk(&p->stack, out, n, retries);
    }
    pthread_mutex_unlock(&p->steal_lock);
    return ok;
}

/* ---- state checks ----------------------------------------------------------- */

static inline void tm_pool_mark_(tm_pool_t *p, uint32_t h, uint8_t st) {
    /* RELAXED: the state byte is only ever written by the thread that owns h;
     * handing h over goes through the stack's RELEASE/ACQUIRE. */
    __atomic_store_n(&p->state[h], st, __ATOMIC_RELAXED);
}

static inline int tm_pool_check_put_(tm_pool_t *p, uint32_t h) {
    if (TM_UNLIKELY(h >= p->capacity))
        return TM_ERANGE;
    /* RELAXED load + store, not an exchange: a sequential double free is always
     * caught; two threads freeing the same handle at the same instant can both
     * pass (documented), the price of keeping locked instructions off this path. */
    if (TM_UNLIKELY(__atomic_load_n(&p->state[h], __ATOMIC_RELAXED) != TM_IN_USE))
        return TM_EDOUBLEFREE;
    return TM_OK;
}

/* Mark handed-out objects in use; in POISON mode report the first one that
 * was written while free (all are handed out regardless). */
static inline int tm_pool_handout_(tm_pool_t *p, const uint32_t *hs, uint32_t n, uint32_t *bad) {
    if (TM_LIKELY(!(p->flags & TM_POOL_POISON))) {
        /* Local copy: a byte store may alias p's fields, and would otherwise
         * make the compiler reload p->state on every iteration. */
        uint8_t *state = p->state;
        for (uint32_t i = 0; i < n; i++)
            __atomic_store_n(&state[hs[i]], TM_IN_USE, __ATOMIC_RELAXED); /* see tm_pool_mark_ */
        return TM_OK;
    }
    int rc = TM_OK;
    for (uint32_t i = 0; i < n; i++) {
        if (rc == TM_OK && !tm_pool_poison_ok_(p, hs[i])) {
            rc = TM_EPOISON;
            if (bad)
                *bad = i;
        }
        tm_pool_mark_(p, hs[i], TM_IN_USE);
    }
    return rc;
}

/* ---- get / put ------------------------------------------------------------- */

/* Get exactly n objects (n >= 1) or none: TM_OK, TM_EEMPTY, or TM_EPOISON
 * (debug mode; the objects were handed out, *bad says which one). */
static int tm_pool_get_bulk_ex(tm_pool_t *p, uint32_t *out, uint32_t n, uint32_t *bad) {
    if (TM_UNLIKELY(n == 0))
        return TM_OK;
    if (TM_UNLIKELY(n > p->capacity))
        return TM_EEMPTY;
    tm_cache_t *c = tm_pool_cache_(p);
    uint32_t retries = 0;
    int ok;
    if (TM_UNLIKELY(c == NULL)) {
        ok = tm_pool_pop_or_steal_(p, NULL, out, n, &retries);
        if (ok)
            __atomic_fetch_add(&p->uncached_gets, n, __ATOMIC_RELAXED); /* rare path: RMW is fine */
        __atomic_fetch_add(&p->uncached_retries, retries, __ATOMIC_RELAXED);
        return ok ? tm_pool_handout_(p, out, n, bad) : TM_EEMPTY;
    }
    int own = tm_cache_enter(c, tm_symmetric_);
    if (TM_LIKELY(own && n <= tm_cache_half(c)) && tm_cache_get(c, &p->stack, out, n)) {
        ok = 1;
    } else {
        if (own)
            tm_cache_flush_all(c, &p->stack); /* our cached objects count too */
        ok = tm_pool_pop_or_steal_(p, c, out, n, &retries);
        TM_STAT_ADD(c->misses, 1);
    }
    if (ok)
        TM_STAT_ADD(c->gets, n);
    if (TM_UNLIKELY(retries))
        TM_STAT_ADD(c->cas_retries, retries);
    tm_cache_exit(c);
    return ok ? tm_pool_handout_(p, out, n, bad) : TM_EEMPTY;
}

static inline int tm_pool_get_bulk(tm_pool_t *p, uint32_t *out, uint32_t n) {
    return tm_pool_get_bulk_ex(p, out, n, NULL);
}

static inline int tm_pool_get(tm_pool_t *p, uint32_t *out) {
    tm_cache_t *c = tm_pool_cache_(p);
    if (TM_LIKELY(c != NULL && !(p->flags & TM_POOL_POISON))) {
        if (TM_LIKELY(c->size != 0)) {
            /* The hit path, inlined: no RMW, no fence, no lock. */
            if (TM_LIKELY(tm_cache_enter(c, tm_symmetric_))) {
                uint32_t len = c->len;
                if (TM_LIKELY(len != 0)) {
                    uint32_t h = c->objs[len - 1];
                    TM_SET_LEN(c, len - 1);
                    TM_STAT_ADD(c->hits, 1);
                    TM_STAT_ADD(c->gets, 1);
                    tm_cache_exit(c);
                    tm_pool_mark_(p, h, TM_IN_USE);
                    *out = h;
                    return TM_OK;
                }
            }
            tm_cache_exit(c);
        } else {
            /* No cache: straight to the shared stack, one CAS.  The steal
             * handshake is not needed: an empty cache is never touched. */
            uint32_t h, retries = 0;
            if (TM_LIKELY(tm_stack_pop(&p->stack, &h, &retries))) {
                TM_STAT_ADD(c->gets, 1);
                TM_STAT_ADD(c->misses, 1);
                if (TM_UNLIKELY(retries))
                    TM_STAT_ADD(c->cas_retries, retries);
                tm_pool_mark_(p, h, TM_IN_USE);
                *out = h;
                return TM_OK;
            }
        }
    }
    return tm_pool_get_bulk_ex(p, out, 1, NULL); /* slow path: steal, or empty */
}

/* Put n objects back, all or nothing.  Every handle is validated first: on
 * TM_ERANGE / TM_EDOUBLEFREE nothing is returned and *bad (if not NULL) is the
 * index of the offending entry (a handle repeated within hs is a double free). */
static int tm_pool_put_bulk(tm_pool_t *p, const uint32_t *hs, uint32_t n, uint32_t *bad) {
    /* One pass: range, state, mark free.  A handle repeated within hs meets
     * the free mark of its first occurrence.  On error the marks made so far
     * are rolled back: nothing is returned. */
    uint8_t *state = p->state; /* locals: byte stores alias p's fields */
    const uint32_t capacity = p->capacity;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t h = hs[i];
        /* RELAXED load and store: see tm_pool_check_put_ and tm_pool_mark_. */
        if (TM_UNLIKELY(h >= capacity || __atomic_load_n(&state[h], __ATOMIC_RELAXED) != TM_IN_USE)) {
            for (uint32_t j = 0; j < i; j++)
                tm_pool_mark_(p, hs[j], TM_IN_USE);
            if (bad)
                *bad = i;
            return h >= capacity ? TM_ERANGE : TM_EDOUBLEFREE;
        }
        __atomic_store_n(&state[h], TM_FREE, __ATOMIC_RELAXED);
    }
    if (n == 0)
        return TM_OK;
    if (TM_UNLIKELY(p->flags & TM_POOL_POISON))
        for (uint32_t i = 0; i < n; i++)
            memset(tm_pool_obj_(p, hs[i]), TM_POISON_BYTE, p->obj_size);

    tm_cache_t *c = tm_pool_cache_(p);
    if (TM_UNLIKELY(c == NULL)) {
        uint32_t r = tm_stack_push_bulk(&p->stack, hs, n);
        __atomic_fetch_add(&p->uncached_puts, n, __ATOMIC_RELAXED); /* rare path: RMW is fine */
        __atomic_fetch_add(&p->uncached_retries, r, __ATOMIC_RELAXED);
        return TM_OK;
    }
    if (TM_LIKELY(tm_cache_enter(c, tm_symmetric_) && n <= tm_cache_half(c))) {
        tm_cache_put(c, &p->stack, hs, n);
    } else {
        TM_STAT_ADD(c->cas_retries, tm_stack_push_bulk(&p->stack, hs, n));
        TM_STAT_ADD(c->misses, 1);
    }
    TM_STAT_ADD(c->puts, n);
    tm_cache_exit(c);
    return TM_OK;
}

static inline int tm_pool_put(tm_pool_t *p, uint32_t h) {
    tm_cache_t *c;
    int rc = tm_pool_check_put_(p, h);
    if (TM_UNLIKELY(rc != TM_OK))
        return rc;
    if (TM_LIKELY((c = tm_pool_cache_(p)) != NULL && !(p->flags & TM_POOL_POISON))) {
        if (TM_LIKELY(c->size != 0)) {
            if (TM_LIKELY(tm_cache_enter(c, tm_symmetric_))) {
                uint32_t len = c->len;
                if (TM_LIKELY(len < c->size)) {
                    tm_pool_mark_(p, h, TM_FREE); /* before h becomes visible to others */
                    c->objs[len] = h;
                    TM_SET_LEN(c, len + 1);
                    TM_STAT_ADD(c->hits, 1);
                    TM_STAT_ADD(c->puts, 1);
                    tm_cache_exit(c);
                    return TM_OK;
                }
            }
            tm_cache_exit(c);
        } else {
            /* No cache: straight to the shared stack, one CAS. */
            tm_pool_mark_(p, h, TM_FREE);
            uint32_t retries = tm_stack_push(&p->stack, h);
            TM_STAT_ADD(c->puts, 1);
            TM_STAT_ADD(c->misses, 1);
            if (TM_UNLIKELY(retries))
                TM_STAT_ADD(c->cas_retries, retries);
            return TM_OK;
        }
    }
    return tm_pool_put_bulk(p, &h, 1, NULL);
}

/* ---- accounting ------------------------------------------------------------ */

static void tm_pool_stats(tm_pool_t *p, tm_pool_stats_t *st) {
    memset(st, 0, sizeof *st);
    /* RELAXED loads throughout: statistics, see cache.h. */
    st->gets = __atomic_load_n(&p->uncached_gets, __ATOMIC_RELAXED);
    st->puts = __atomic_load_n(&p->uncached_puts, __ATOMIC_RELAXED);
    st->cas_retries = __atomic_load_n(&p->uncached_retries, __ATOMIC_RELAXED);
    uint32_t hw = __atomic_load_n(&p->slots_hw, __ATOMIC_ACQUIRE);
    for (uint32_t s = 0; s < hw; s++) {
        tm_cache_t *c = __atomic_load_n(&p->caches[s], __ATOMIC_ACQUIRE);
        if (!c)
            continue;
        st->threads++;
        st->gets += __atomic_load_n(&c->gets, __ATOMIC_RELAXED);
        st->puts += __atomic_load_n(&c->puts, __ATOMIC_RELAXED);
        st->cache_hits += __atomic_load_n(&c->hits, __ATOMIC_RELAXED);
        st->cache_misses += __atomic_load_n(&c->misses, __ATOMIC_RELAXED);
        st->cas_retries += __atomic_load_n(&c->cas_retries, __ATOMIC_RELAXED);
        st->cached += __atomic_load_n(&c->len, __ATOMIC_RELAXED);
    }
    st->capacity = p->capacity;
    st->in_use = st->gets - st->puts;
    st->available = st->capacity - st->in_use;
    st->asymmetric = !tm_symmetric_;
}

static inline uint64_t tm_pool_in_use(tm_pool_t *p) {
    tm_pool_stats_t st;
    tm_pool_stats(p, &st);
    return st.in_use;
}

/* 1 if h is currently handed out (racy under concurrency: a hint). */
static inline int tm_pool_is_in_use(tm_pool_t *p, uint32_t h) {
    return h < p->capacity && __atomic_load_n(&p->state[h], __ATOMIC_RELAXED) == TM_IN_USE;
}

#endif /* TURBOMEM_POOL_H */
