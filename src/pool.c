/* src/pool.c - the compiled half of the pool (include/turbomem/pool.h):
 * process-wide registry, thread slots, thread exit, fork, the slow paths that
 * move whole magazines between caches and the shared level, and statistics.
 *
 * THE SHARED LEVEL
 *   - a depot of magazines: `full` and `empty` are tagged stacks (stack.h) of
 *     magazine indices; a full magazine holds exactly mag_size handles.  A
 *     flush or refill moves one magazine: one CAS and one memcpy, never a walk
 *     of per-object links.  Each cache keeps up to TM_CACHE_SPARES empty
 *     magazines (`spares`): a refill keeps the magazine it emptied, a flush
 *     fills a kept one, so a thread that cycles up to that many magazines
 *     out and back touches only the `full` stack: one CAS per magazine moved
 *     (the `empty` stack was the second contended line on two threads);
 *   - a tagged stack of single handles (`objects`): single gets and puts of
 *     a cache-less pool (its bulk calls use magazines of TM_NOCACHE_MAG), and
 *     remainders (a drained cache whose length is not a multiple of mag_size,
 *     the tail of a bulk call, a split magazine, or a flush when no empty
 *     magazine is left).
 *   Every free object is in exactly one place: a cache, a full magazine, or
 *   the objects stack.  nmags = capacity / mag_size + TM_SPARE_MAGS, so a
 *   flush finds an empty magazine unless many caches hold spares; if none is
 *   left it falls back to the objects stack (correct, slower).  Spares are
 *   buffers, not objects: a drained cache (thread exit, fork child, steal)
 *   gives them back to `empty`.
 *
 * WHY NOTHING IS LOST OR DUPLICATED
 *   A magazine index is on at most one of full/empty, or owned by exactly one
 *   thread between its pop and its push (the tags make ABA impossible: see
 *   stack.h).  Its contents are written only by its owner before the RELEASE
 *   push and read only after the ACQUIRE pop.  Model: models/depot.pml.
 *
 * WHO MAY TOUCH THE SHARED LEVEL WHEN (this is what makes fork exact)
 *   - an owner inside a call (in_call = 1: cache.h);
 *   - a thread holding the pool's steal_lock (stealers, threads without a slot);
 *   The fork prepare handler takes every steal_lock and claims every cache,
 *   waiting until no owner is inside a call: at fork() no object is between
 *   two places.  The child then drains every cache (their threads do not
 *   exist there) into the shared level: each free object once, in both modes.
 *
 * ACCOUNTING
 *   in_use = sum over caches of (net - len) + shared_net.  An owner changes
 *   its net only when objects cross between its cache (or its caller) and the
 *   shared level; a stealer or the fork child, which move objects from a cache
 *   they do not own, adjust shared_net instead (atomic RMW, rare).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "turbomem/pool.h"

/* Empty magazines beyond capacity / mag_size: room for 16 caches full of spares. */
#define TM_SPARE_MAGS (16u * TM_CACHE_SPARES)
#define TM_NOCACHE_MAG 32u

#define TM_NET_ADD_(c, d) TM_NET_ADD(c, d)

/* ---- process-wide registry ------------------------------------------------ */

TM_INTERNAL __thread uint32_t tm_thread_slot1_ __attribute__((tls_model("initial-exec")));
static pthread_mutex_t tm_registry_lock = PTHREAD_MUTEX_INITIALIZER;
static tm_pool_t *tm_registry_head;
static uint64_t tm_slot_bits[TM_MAX_THREADS / 64]; /* under tm_registry_lock */
static pthread_key_t tm_thread_key;
static pthread_once_t tm_init_once = PTHREAD_ONCE_INIT;
static int tm_symmetric_ = 1; /* set once in tm_global_init_ (and in a fork child) */
/* The placeholder in pool->caches[] for "no cache": fast kind NONE, capacity
 * 0, never written. */
static tm_cache_t tm_no_cache_;
#define TM_NOCACHE (&tm_no_cache_)
#define TM_CLAIM_WORDS (TM_MAX_THREADS / 64 + 1) /* bitmaps indexed by slot + 1 */

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

/* The claimant's barrier B_s (cache.h).  Symmetric mode needs none beyond
 * the SEQ_CST accesses.  A registered membarrier only fails on a kernel bug;
 * retry rather than touch a cache unfenced. */
static void tm_claim_fence_(void) {
    if (tm_symmetric_)
        return;
    while (!tm_membarrier_())
        sched_yield();
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

int tm_pool_asymmetric(void) {
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

/* ---- the shared level: magazines and single handles ------------------------ */

static inline uint32_t *tm_mag_(tm_pool_t *p, uint32_t m) {
    return p->mags + (size_t)m * p->mag_size;
}

/* An empty magazine: one of the cache's spares, else one from the depot,
 * else TM_NIL. */
static uint32_t tm_take_empty_(tm_pool_t *p, tm_cache_t *c, uint32_t *retries) {
    uint32_t m;
    if (c && c->nspares)
        return c->spares[--c->nspares];
    return tm_stack_pop(&p->empty, &m, retries) ? m : TM_NIL;
}

/* A magazine just emptied: keep it as a spare, or give it back. */
static void tm_keep_empty_(tm_pool_t *p, tm_cache_t *c, uint32_t m, uint32_t *retries) {
    if (c && c->nspares < TM_CACHE_SPARES)
        c->spares[c->nspares++] = m;
    else
        *retries += tm_stack_push(&p->empty, m);
}

/* Move n handles from src to the shared level: whole magazines, the rest
 * (or everything, without magazines) onto the objects stack. */
static void tm_shared_put_(tm_pool_t *p, tm_cache_t *c, const uint32_t *src, uint32_t n,
                           uint32_t *retries) {
    uint32_t M = p->mag_size;
    while (M && n >= M) {
        uint32_t m = tm_take_empty_(p, c, retries);
        if (m == TM_NIL)
            break;
        memcpy(tm_mag_(p, m), src, (size_t)M * sizeof(uint32_t));
        *retries += tm_stack_push(&p->full, m); /* RELEASE inside: publishes the contents */
        src += M;
        n -= M;
    }
    if (n)
        *retries += tm_stack_push_bulk(&p->objects, src, n);
}

/* Take one full magazine into dst (room for mag_size).  1 on success. */
static int tm_shared_get_mag_(tm_pool_t *p, tm_cache_t *c, uint32_t *dst, uint32_t *retries) {
    uint32_t m;
    if (!p->mag_size || !tm_stack_pop(&p->full, &m, retries)) /* ACQUIRE inside */
        return 0;
    memcpy(dst, tm_mag_(p, m), (size_t)p->mag_size * sizeof(uint32_t));
    tm_keep_empty_(p, c, m, retries);
    return 1;
}

/* Exactly n handles from the shared level into out, or none (what was taken
 * goes back).  Magazines first, the tail from the objects stack; a magazine
 * is split when the objects stack cannot supply the tail. */
static int tm_shared_get_(tm_pool_t *p, tm_cache_t *c, uint32_t *out, uint32_t n, uint32_t *retries) {
    uint32_t M = p->mag_size, got = 0;
    while (M && n - got >= M && tm_shared_get_mag_(p, c, out + got, retries))
        got += M;
    uint32_t rest = n - got;
    if (rest == 0 || tm_stack_pop_bulk(&p->objects, out + got, rest, retries))
        return 1;
    if (M && rest < M) {
        uint32_t tmp[TM_CACHE_MAX];
        if (tm_shared_get_mag_(p, c, tmp, retries)) {
            memcpy(out + got, tmp, (size_t)rest * sizeof(uint32_t));
            *retries += tm_stack_push_bulk(&p->objects, tmp + rest, M - rest);
            return 1;
        }
    }
    if (got)
        tm_shared_put_(p, c, out, got, retries);
    return 0;
}

/* ---- cache <-> shared level (owner inside a call, or claimant) ------------ */

/* Everything in c to the shared level.  Returns the objects moved.  The
 * spares go back too, so a drained cache holds nothing of the pool's. */
static uint32_t tm_cache_drain_(tm_pool_t *p, tm_cache_t *c, uint32_t *retries) {
    uint32_t len = c->len;
    if (len) {
        tm_shared_put_(p, c, c->objs, len, retries);
        TM_SET_LEN(c, 0);
    }
    while (c->nspares)
        *retries += tm_stack_push(&p->empty, c->spares[--c->nspares]);
    return len;
}

/* Owner, in a call: make room for `room` more objects by flushing one
 * magazine at a time from the top (as DPDK does: no memmove of the rest; the
 * objects are handles, their memory is not touched either way). */
static void tm_cache_make_room_(tm_pool_t *p, tm_cache_t *c, uint32_t room, uint32_t *retries) {
    uint32_t M = p->mag_size;
    while (c->len + room > c->size) {
        uint32_t len = c->len, k = M < len ? M : len;
        tm_shared_put_(p, c, c->objs + len - k, k, retries);
        TM_SET_LEN(c, len - k);
        TM_NET_ADD_(c, -(int64_t)k);
    }
}

/* Owner, in a call: refill until the cache holds at least `need` (<= size)
 * objects.  Whole magazines while they fit, then single handles. */
static int tm_cache_refill_(tm_pool_t *p, tm_cache_t *c, uint32_t need, uint32_t *retries) {
    uint32_t M = p->mag_size;
    while (c->len < need) {
        uint32_t len = c->len;
        if (len + M <= c->size && tm_shared_get_mag_(p, c, c->objs + len, retries)) {
            TM_SET_LEN(c, len + M);
            TM_NET_ADD_(c, (int64_t)M);
            continue;
        }
        /* No magazine (or no room for one): single handles.  Ask for a
         * magazine's worth when it fits, else exactly what is missing. */
        uint32_t want = need - len, more = M < c->size - len ? M : c->size - len;
        if (more > want && tm_stack_pop_bulk(&p->objects, c->objs + len, more, retries))
            want = more;
        else if (!tm_stack_pop_bulk(&p->objects, c->objs + len, want, retries))
            return 0;
        TM_SET_LEN(c, len + want);
        TM_NET_ADD_(c, (int64_t)want);
    }
    return 1;
}

/* ---- slots and caches --------------------------------------------------------- */

/* Which inline path (pool.h) may serve this cache. */
static uint8_t tm_fast_kind_(const tm_pool_t *p, const tm_cache_t *c) {
    if (c->symmetric || c->stats || (p->flags & TM_POOL_POISON))
        return TM_FAST_NONE;
    return p->cache_size ? TM_FAST_CACHE : TM_FAST_NOCACHE;
}

static tm_cache_t *tm_cache_new_(tm_pool_t *p) {
    size_t bytes = sizeof(tm_cache_t) + (size_t)p->cache_size * sizeof(uint32_t);
    bytes = (bytes + TM_CACHE_LINE - 1) / TM_CACHE_LINE * TM_CACHE_LINE;
    tm_cache_t *c = aligned_alloc(TM_CACHE_LINE, bytes);
    if (!c)
        return NULL;
    memset(c, 0, bytes);
    c->size = p->cache_size;
    c->capacity = p->capacity;
    c->symmetric = (uint8_t)tm_symmetric_;
    c->stats = (p->flags & TM_POOL_STATS) != 0;
    c->fast = tm_fast_kind_(p, c);
    c->state = p->state;
    c->nspares = 0;
    return c;
}

/* This thread's cache for p (created on first use), or NULL when the thread
 * has no slot (more than TM_MAX_THREADS threads) or malloc failed. */
static tm_cache_t *tm_pool_cache_(tm_pool_t *p) {
    uint32_t slot1 = tm_thread_slot1_;
    if (TM_LIKELY(slot1)) {
        tm_cache_t *c = p->caches[slot1]; /* our own write, or the placeholder */
        if (TM_LIKELY(c != TM_NOCACHE))
            return c;
    }
    pthread_once(&tm_init_once, tm_global_init_);
    tm_cache_t *c = NULL;
    pthread_mutex_lock(&tm_registry_lock);
    slot1 = tm_thread_slot1_;
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
        c = p->caches[slot1];
        if (c == TM_NOCACHE && (c = tm_cache_new_(p)) != NULL) {
            /* RELEASE: pairs with the claimants' ACQUIRE load of caches[]. */
            __atomic_store_n(&p->caches[slot1], c, __ATOMIC_RELEASE);
            if (slot1 > p->slots_hw)
                /* RELEASE: pairs with the ACQUIRE reads bounding scans. */
                __atomic_store_n(&p->slots_hw, slot1, __ATOMIC_RELEASE);
        }
    }
    pthread_mutex_unlock(&tm_registry_lock);
    return c;
}

tm_cache_t *tm_pool_thread_cache(tm_pool_t *p) {
    tm_cache_t *c = tm_pool_cache_(p);
    return c ? c : TM_NOCACHE; /* the placeholder sends every call to the general path */
}

/* Owner: enter a call, waiting out a claimant (claims are short). */
static void tm_cache_enter_wait_(tm_cache_t *c) {
    unsigned spins = 0;
    while (!tm_cache_enter(c)) {
        tm_cache_exit(c);
        /* ACQUIRE: pairs with the claimant's RELEASE of steal = 0. */
        while (__atomic_load_n(&c->steal, __ATOMIC_ACQUIRE)) {
            if (++spins < 256)
                TM_CPU_RELAX();
            else
                sched_yield(); /* a fork in progress holds the claim longer */
        }
    }
}

static void tm_thread_exit_(void *slot1) {
    uint32_t s1 = (uint32_t)(uintptr_t)slot1;
    pthread_mutex_lock(&tm_registry_lock);
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next) {
        tm_cache_t *c = p->caches[s1];
        if (c == TM_NOCACHE)
            continue;
        uint32_t retries = 0;
        tm_cache_enter_wait_(c);
        TM_NET_ADD_(c, -(int64_t)tm_cache_drain_(p, c, &retries));
        tm_cache_exit(c);
    }
    tm_slot_free_(s1 - 1);
    tm_thread_slot1_ = 0;
    pthread_mutex_unlock(&tm_registry_lock);
}

/* ---- claims: stealing and fork ------------------------------------------------ */

/* Claimant, under p->steal_lock: raise `steal` on every cache (other than
 * `self`) that holds something, or on all of them with `all`.  Returns 1 if
 * any was claimed; `claimed` marks them. */
static int tm_claim_caches_(tm_pool_t *p, tm_cache_t *self, int all, uint64_t *claimed, uint32_t hw) {
    int any = 0;
    for (uint32_t s = 1; s <= hw; s++) {
        /* ACQUIRE: pairs with the RELEASE in tm_pool_cache_. */
        tm_cache_t *c = __atomic_load_n(&p->caches[s], __ATOMIC_ACQUIRE);
        /* RELAXED peek at len: a hint; re-read once the cache is ours. */
        if (c == TM_NOCACHE || c == self || (!all && __atomic_load_n(&c->len, __ATOMIC_RELAXED) == 0))
            continue;
        /* SEQ_CST: the claimant's half of the Dekker handshake (cache.h). */
        __atomic_store_n(&c->steal, 1, __ATOMIC_SEQ_CST);
        claimed[s / 64] |= 1ull << (s % 64);
        any = 1;
    }
    return any;
}

/* After tm_claim_fence_: 1 if the owner is outside a call (the cache is ours). */
static int tm_claim_holds_(tm_cache_t *c) {
    /* SEQ_CST (symmetric mode needs it; acquire would do for asymmetric):
     * pairs with the owner's RELEASE store of in_call = 0. */
    return __atomic_load_n(&c->in_call, __ATOMIC_SEQ_CST) == 0;
}

static void tm_claim_release_(tm_cache_t *c) {
    /* RELEASE: pairs with the owner's ACQUIRE load of steal on entry. */
    __atomic_store_n(&c->steal, 0, __ATOMIC_RELEASE);
}

/* Under p->steal_lock: move the contents of every other idle cache to the
 * shared level.  Owners inside a call are left alone (their objects are in
 * use by a running call and come back soon). */
static void tm_steal_idle_(tm_pool_t *p, tm_cache_t *self, uint32_t *retries) {
    uint64_t claimed[TM_CLAIM_WORDS] = {0};
    /* ACQUIRE: pairs with the RELEASE in tm_pool_cache_. */
    uint32_t hw = __atomic_load_n(&p->slots_hw, __ATOMIC_ACQUIRE);
    if (!tm_claim_caches_(p, self, 0, claimed, hw))
        return;
    tm_claim_fence_();
    int64_t moved = 0;
    for (uint32_t s = 1; s <= hw; s++) {
        if (!(claimed[s / 64] & (1ull << (s % 64))))
            continue;
        tm_cache_t *c = p->caches[s];
        if (tm_claim_holds_(c))
            moved += tm_cache_drain_(p, c, retries);
        tm_claim_release_(c);
    }
    /* The objects left caches we do not own: account them here (cache.h). */
    __atomic_fetch_sub(&p->shared_net, moved, __ATOMIC_RELAXED);
}

static void tm_fork_prepare_(void) {
    pthread_mutex_lock(&tm_registry_lock);
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next) {
        pthread_mutex_lock(&p->steal_lock);
        uint64_t claimed[TM_CLAIM_WORDS] = {0};
        tm_claim_caches_(p, NULL, 1, claimed, p->slots_hw);
    }
    tm_claim_fence_();
    /* Wait until no owner is inside a call: none can enter now (each finds its
     * cache claimed and waits), and a call never blocks while inside. */
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next)
        for (uint32_t s = 1; s <= p->slots_hw; s++) {
            tm_cache_t *c = p->caches[s];
            while (c != TM_NOCACHE && !tm_claim_holds_(c))
                TM_CPU_RELAX();
        }
}

static void tm_fork_parent_(void) {
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next) {
        for (uint32_t s = 1; s <= p->slots_hw; s++)
            if (p->caches[s] != TM_NOCACHE)
                tm_claim_release_(p->caches[s]);
        pthread_mutex_unlock(&p->steal_lock);
    }
    pthread_mutex_unlock(&tm_registry_lock);
}

/* The child has one thread; every other thread's cache is orphaned.  The
 * prepare handler left no object between two places, so draining every cache
 * gives each free object to the shared level exactly once. */
static void tm_fork_child_(void) {
    uint32_t mine = tm_thread_slot1_;
    /* membarrier registration belongs to the old mm; register the child's. */
    if (!tm_symmetric_ && !tm_membarrier_setup_())
        tm_symmetric_ = 1;
    for (tm_pool_t *p = tm_registry_head; p; p = p->reg_next) {
        uint32_t retries = 0;
        for (uint32_t s = 1; s <= p->slots_hw; s++) {
            tm_cache_t *c = p->caches[s];
            if (c == TM_NOCACHE)
                continue;
            p->shared_net -= tm_cache_drain_(p, c, &retries);
            c->symmetric = (uint8_t)tm_symmetric_;
            c->fast = tm_fast_kind_(p, c);
            c->in_call = 0;
            c->steal = 0;
        }
        pthread_mutex_init(&p->steal_lock, NULL);
    }
    memset(tm_slot_bits, 0, sizeof tm_slot_bits);
    if (mine)
        tm_slot_bits[(mine - 1) / 64] |= 1ull << ((mine - 1) % 64);
    pthread_mutex_init(&tm_registry_lock, NULL);
}

/* ---- create / destroy ------------------------------------------------------ */

static inline unsigned char *tm_pool_obj_(tm_pool_t *p, uint32_t h) {
    return p->base + (size_t)h * p->stride;
}

int tm_pool_create(tm_pool_t **out, uint32_t capacity, uint32_t cache_size,
                   void *base, size_t stride, size_t obj_size, unsigned flags) {
    *out = NULL;
    const unsigned known = TM_POOL_POISON | TM_POOL_UNCHECKED | TM_POOL_STATS;
    if (capacity == 0 || capacity > TM_MAX_CAPACITY || cache_size > TM_CACHE_MAX ||
        cache_size > capacity || (flags & ~known) ||
        ((flags & TM_POOL_POISON) && (!base || stride < obj_size || (flags & TM_POOL_UNCHECKED))))
        return TM_EINVAL;
    pthread_once(&tm_init_once, tm_global_init_);
    size_t psize = (sizeof(tm_pool_t) + TM_CACHE_LINE - 1) / TM_CACHE_LINE * TM_CACHE_LINE;
    tm_pool_t *p = aligned_alloc(TM_CACHE_LINE, psize);
    if (!p)
        return TM_ENOMEM;
    memset(p, 0, sizeof *p);
    /* Magazines of half a cache; without a cache, of TM_NOCACHE_MAG handles
     * for bulk calls (single gets and puts use the objects stack). */
    uint32_t M = cache_size ? tm_cache_half_of(cache_size) : TM_NOCACHE_MAG;
    uint32_t nmags = capacity / M + TM_SPARE_MAGS;
    p->links = malloc((size_t)capacity * sizeof(uint32_t));
    p->state = (flags & TM_POOL_UNCHECKED) ? NULL : calloc(capacity, 1); /* all TM_FREE */
    p->mags = nmags ? malloc((size_t)nmags * M * sizeof(uint32_t)) : NULL;
    p->mag_links = nmags ? malloc((size_t)nmags * sizeof(uint32_t)) : NULL;
    if (!p->links || (!(flags & TM_POOL_UNCHECKED) && !p->state) || (nmags && (!p->mags || !p->mag_links))) {
        free(p->links);
        free(p->state);
        free(p->mags);
        free(p->mag_links);
        free(p);
        return TM_ENOMEM;
    }
    p->capacity = capacity;
    p->cache_size = cache_size;
    p->mag_size = M;
    p->nmags = nmags;
    p->flags = flags;
    p->base = base;
    p->stride = stride;
    p->obj_size = obj_size;
    pthread_mutex_init(&p->steal_lock, NULL);
    for (uint32_t s = 0; s <= TM_MAX_THREADS; s++)
        p->caches[s] = TM_NOCACHE;

    /* Not shared yet: plain stores.  Handles 0 .. F*M-1 fill magazines 0 .. F-1
     * (magazine k hands out kM first), the rest go on the objects stack in
     * order; the remaining magazines are empty. */
    uint32_t F = capacity / M, inmags = F * M;
    tm_stack_init(&p->objects, p->links, capacity);
    for (uint32_t i = inmags; i + 1 < capacity; i++)
        p->links[i] = i + 1;
    p->objects.head = tm_stack_pack_(0, inmags < capacity ? inmags : TM_NIL);
    if (nmags) {
        tm_stack_init(&p->full, p->mag_links, nmags);
        tm_stack_init(&p->empty, p->mag_links, nmags);
        for (uint32_t m = 0; m < F; m++) {
            uint32_t *mag = tm_mag_(p, m);
            for (uint32_t i = 0; i < M; i++)
                mag[i] = m * M + (M - 1 - i); /* the cache takes from the end */
            p->mag_links[m] = m + 1 < F ? m + 1 : TM_NIL;
        }
        for (uint32_t m = F; m < nmags; m++)
            p->mag_links[m] = m + 1 < nmags ? m + 1 : TM_NIL;
        p->full.head = tm_stack_pack_(0, F ? 0 : TM_NIL);
        p->empty.head = tm_stack_pack_(0, F < nmags ? F : TM_NIL);
    }
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

void tm_pool_destroy(tm_pool_t *p) {
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
    for (uint32_t s = 1; s <= p->slots_hw; s++)
        if (p->caches[s] != TM_NOCACHE)
            free(p->caches[s]);
    pthread_mutex_destroy(&p->steal_lock);
    free(p->links);
    free(p->state);
    free(p->mags);
    free(p->mag_links);
    free(p);
}

/* ---- state checks (checked mode) -------------------------------------------- */

static int tm_pool_poison_ok_(tm_pool_t *p, uint32_t h) {
    const unsigned char *o = tm_pool_obj_(p, h);
    for (size_t i = 0; i < p->obj_size; i++)
        if (o[i] != TM_POISON_BYTE)
            return 0;
    return 1;
}

/* Objects just taken: mark them in use; in POISON mode report the first one
 * written while free (all are handed out regardless). */
static int tm_handout_(tm_pool_t *p, const uint32_t *hs, uint32_t n, uint32_t *bad) {
    uint8_t *state = p->state;
    int rc = TM_OK;
    if (!state)
        return TM_OK;
    for (uint32_t i = 0; i < n; i++) {
        if ((p->flags & TM_POOL_POISON) && rc == TM_OK && !tm_pool_poison_ok_(p, hs[i])) {
            rc = TM_EPOISON;
            if (bad)
                *bad = i;
        }
        /* RELAXED: see tm_pool_get_bulk_ex in pool.h. */
        __atomic_store_n(&state[hs[i]], TM_IN_USE, __ATOMIC_RELAXED);
    }
    return rc;
}

/* Objects coming back: validate and mark free, all or nothing. */
static int tm_takeback_(tm_pool_t *p, const uint32_t *hs, uint32_t n, uint32_t *bad) {
    uint8_t *state = p->state;
    const uint32_t cap = p->capacity;
    if (!state) {
        /* Unchecked: the caller's promise, except that a single handle is
         * range-checked (one compare keeps it out of the pool's arrays). */
        if (n == 1 && hs[0] >= cap) {
            if (bad)
                *bad = 0;
            return TM_ERANGE;
        }
        return TM_OK;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t h = hs[i];
        /* RELAXED load and store: see pool.h. */
        if (h >= cap || __atomic_load_n(&state[h], __ATOMIC_RELAXED) != TM_IN_USE) {
            for (uint32_t j = 0; j < i; j++)
                __atomic_store_n(&state[hs[j]], TM_IN_USE, __ATOMIC_RELAXED);
            if (bad)
                *bad = i;
            return h >= cap ? TM_ERANGE : TM_EDOUBLEFREE;
        }
        __atomic_store_n(&state[h], TM_FREE, __ATOMIC_RELAXED);
    }
    if (p->flags & TM_POOL_POISON) /* before the objects become reachable */
        for (uint32_t i = 0; i < n; i++)
            memset(tm_pool_obj_(p, hs[i]), TM_POISON_BYTE, p->obj_size);
    return TM_OK;
}

/* ---- the general get / put ---------------------------------------------------- */

/* TM_POOL_STATS: one call; a hit when only the cache was touched. */
static void tm_stats_call_(tm_cache_t *c, uint64_t gets, uint64_t puts, uint32_t retries, int hit) {
    if (c && c->stats) {
        TM_STAT_ADD(c->gets, gets);
        TM_STAT_ADD(c->puts, puts);
        if (hit)
            TM_STAT_ADD(c->hits, 1);
        else
            TM_STAT_ADD(c->misses, 1);
        TM_STAT_ADD(c->cas_retries, retries);
    }
}
#define tm_stats_add_(c, g, pu, r) tm_stats_call_(c, g, pu, r, 0)

/* Threads without a cache, and the last resort of every get: under the
 * steal_lock (see the header comment: this is what keeps fork exact). */
static int tm_get_locked_(tm_pool_t *p, tm_cache_t *self, uint32_t *out, uint32_t n, uint32_t *retries) {
    pthread_mutex_lock(&p->steal_lock);
    int ok = tm_shared_get_(p, NULL, out, n, retries);
    if (!ok) {
        tm_steal_idle_(p, self, retries);
        ok = tm_shared_get_(p, NULL, out, n, retries);
    }
    if (ok && !self)
        __atomic_fetch_add(&p->shared_net, (int64_t)n, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&p->steal_lock);
    return ok;
}

/* The cache-less pool's single get and put: one CAS on the objects stack,
 * inside a call (so that fork never sees an object moved but not counted). */
static inline int tm_nocache_get1_(tm_pool_t *p, tm_cache_t *c, uint32_t *out) {
    uint32_t retries = 0, h;
    int ok = tm_stack_pop(&p->objects, &h, &retries);
    if (TM_UNLIKELY(!ok)) /* the single handles ran out: split a magazine */
        ok = tm_shared_get_(p, c, &h, 1, &retries);
    if (TM_LIKELY(ok)) {
        TM_NET_ADD_(c, 1);
        *out = h;
    }
    tm_cache_exit(c);
    if (TM_UNLIKELY(c->stats))
        tm_stats_add_(c, ok, 0, retries);
    if (ok && p->state) /* RELAXED: see pool.h */
        __atomic_store_n(&p->state[h], TM_IN_USE, __ATOMIC_RELAXED);
    return ok ? TM_OK : TM_EEMPTY;
}

int tm_pool_get_slow_(tm_pool_t *p, uint32_t *out, uint32_t n, uint32_t *bad) {
    uint32_t slot1 = tm_thread_slot1_;
    tm_cache_t *c0 = p->caches[slot1];
    if (c0 != TM_NOCACHE && c0->size == 0 && n == 1 && !(p->flags & TM_POOL_POISON)) {
        if (tm_cache_enter(c0))
            return tm_nocache_get1_(p, c0, out);
        tm_cache_exit(c0);
    }
    if (TM_UNLIKELY(n == 0))
        return TM_OK;
    if (TM_UNLIKELY(n > p->capacity))
        return TM_EEMPTY;
    uint32_t retries = 0;
    tm_cache_t *c = tm_pool_cache_(p);
    if (TM_UNLIKELY(c == NULL)) {
        int ok = tm_get_locked_(p, NULL, out, n, &retries);
        if (p->flags & TM_POOL_STATS) {
            if (ok)
                __atomic_fetch_add(&p->uncached_gets, n, __ATOMIC_RELAXED);
            __atomic_fetch_add(&p->uncached_retries, retries, __ATOMIC_RELAXED);
        }
        return ok ? tm_handout_(p, out, n, bad) : TM_EEMPTY;
    }
    tm_cache_enter_wait_(c);
    if (c->size == 0) {
        /* No cache: whole magazines and single handles from the shared level
         * (all or nothing); there is nothing to steal.  Inside a call all the
         * same, so that fork never sees objects taken but not yet counted. */
        int got1 = tm_shared_get_(p, c, out, n, &retries);
        if (got1)
            TM_NET_ADD_(c, (int64_t)n);
        tm_cache_exit(c);
        tm_stats_add_(c, got1 ? n : 0, 0, retries);
        return got1 ? tm_handout_(p, out, n, bad) : TM_EEMPTY;
    }
    const int64_t net0 = c->net; /* unchanged at the end: the cache alone served */
    uint32_t M = p->mag_size, got = 0;
    /* Whole magazines straight to the caller while the cache cannot serve. */
    while (n - got >= M && n - got > c->len && tm_shared_get_mag_(p, c, out + got, &retries))
        got += M;
    uint32_t rest = n - got;
    int ok = rest <= c->size && tm_cache_refill_(p, c, rest, &retries);
    if (ok) {
        uint32_t len = c->len;
        memcpy(out + got, c->objs + len - rest, (size_t)rest * sizeof(uint32_t));
        TM_SET_LEN(c, len - rest);
        TM_NET_ADD_(c, (int64_t)got);
    } else {
        /* Short: give back what we took and our own cache (it counts too),
         * leave the call, and take the last resort with every idle cache. */
        if (got)
            tm_shared_put_(p, c, out, got, &retries);
        TM_NET_ADD_(c, -(int64_t)tm_cache_drain_(p, c, &retries));
    }
    tm_cache_exit(c);
    if (!ok) {
        ok = tm_get_locked_(p, c, out, n, &retries);
        if (ok)
            TM_NET_ADD_(c, (int64_t)n); /* we are the owner: nobody else writes net */
    }
    tm_stats_call_(c, ok ? n : 0, 0, retries, ok && c->net == net0);
    return ok ? tm_handout_(p, out, n, bad) : TM_EEMPTY;
}

int tm_pool_put_slow_(tm_pool_t *p, const uint32_t *hs, uint32_t n, uint32_t *bad) {
    uint32_t slot1 = tm_thread_slot1_;
    tm_cache_t *c0 = p->caches[slot1];
    if (c0 != TM_NOCACHE && c0->size == 0 && n == 1 && !(p->flags & TM_POOL_POISON)) {
        /* The cache-less single put: check, then one CAS inside a call. */
        uint32_t h = hs[0], retries;
        if (TM_UNLIKELY(h >= p->capacity)) {
            if (bad)
                *bad = 0;
            return TM_ERANGE;
        }
        if (p->state) {
            /* RELAXED: see pool.h */
            if (TM_UNLIKELY(__atomic_load_n(&p->state[h], __ATOMIC_RELAXED) != TM_IN_USE)) {
                if (bad)
                    *bad = 0;
                return TM_EDOUBLEFREE;
            }
            __atomic_store_n(&p->state[h], TM_FREE, __ATOMIC_RELAXED);
        }
        tm_cache_enter_wait_(c0);
        retries = tm_stack_push(&p->objects, h);
        TM_NET_ADD_(c0, -1);
        tm_cache_exit(c0);
        if (TM_UNLIKELY(c0->stats))
            tm_stats_add_(c0, 0, 1, retries);
        return TM_OK;
    }
    if (n == 0)
        return TM_OK;
    int rc = tm_takeback_(p, hs, n, bad);
    if (rc != TM_OK)
        return rc;
    uint32_t retries = 0;
    tm_cache_t *c = tm_pool_cache_(p);
    if (TM_UNLIKELY(c == NULL)) {
        pthread_mutex_lock(&p->steal_lock);
        tm_shared_put_(p, NULL, hs, n, &retries);
        __atomic_fetch_sub(&p->shared_net, (int64_t)n, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&p->steal_lock);
        if (p->flags & TM_POOL_STATS) {
            __atomic_fetch_add(&p->uncached_puts, n, __ATOMIC_RELAXED);
            __atomic_fetch_add(&p->uncached_retries, retries, __ATOMIC_RELAXED);
        }
        return TM_OK;
    }
    tm_cache_enter_wait_(c);
    if (c->size == 0) {
        tm_shared_put_(p, c, hs, n, &retries); /* magazines, then single handles */
        TM_NET_ADD_(c, -(int64_t)n);
        tm_cache_exit(c);
        tm_stats_add_(c, 0, n, retries);
        return TM_OK;
    }
    const int64_t net0 = c->net; /* unchanged at the end: the cache alone took them */
    uint32_t M = p->mag_size, i = 0;
    /* Whole magazines straight from the caller while they would not fit. */
    while (n - i >= M && c->len + (n - i) > c->size) {
        uint32_t m = tm_take_empty_(p, c, &retries);
        if (m == TM_NIL)
            break;
        memcpy(tm_mag_(p, m), hs + i, (size_t)M * sizeof(uint32_t));
        retries += tm_stack_push(&p->full, m); /* RELEASE: publishes the contents */
        TM_NET_ADD_(c, -(int64_t)M);
        i += M;
    }
    uint32_t rest = n - i;
    if (rest > c->size) { /* no empty magazine was left: single handles */
        tm_shared_put_(p, c, hs + i, rest, &retries);
        TM_NET_ADD_(c, -(int64_t)rest);
    } else {
        tm_cache_make_room_(p, c, rest, &retries);
        uint32_t len = c->len;
        memcpy(c->objs + len, hs + i, (size_t)rest * sizeof(uint32_t));
        TM_SET_LEN(c, len + rest);
    }
    tm_cache_exit(c);
    tm_stats_call_(c, 0, n, retries, c->net == net0);
    return TM_OK;
}

int tm_pool_put1_slow_(tm_pool_t *p, uint32_t h) {
    return tm_pool_put_slow_(p, &h, 1, NULL);
}

/* ---- accounting ------------------------------------------------------------ */

void tm_pool_stats(tm_pool_t *p, tm_pool_stats_t *st) {
    memset(st, 0, sizeof *st);
    /* RELAXED loads throughout: a snapshot, exact when quiescent (cache.h). */
    int64_t in_use = __atomic_load_n(&p->shared_net, __ATOMIC_RELAXED);
    st->gets = __atomic_load_n(&p->uncached_gets, __ATOMIC_RELAXED);
    st->puts = __atomic_load_n(&p->uncached_puts, __ATOMIC_RELAXED);
    st->cas_retries = __atomic_load_n(&p->uncached_retries, __ATOMIC_RELAXED);
    /* ACQUIRE: pairs with the RELEASE in tm_pool_cache_. */
    uint32_t hw = __atomic_load_n(&p->slots_hw, __ATOMIC_ACQUIRE);
    for (uint32_t s = 1; s <= hw; s++) {
        tm_cache_t *c = __atomic_load_n(&p->caches[s], __ATOMIC_ACQUIRE);
        if (c == TM_NOCACHE)
            continue;
        uint32_t len = __atomic_load_n(&c->len, __ATOMIC_RELAXED);
        st->threads++;
        in_use += __atomic_load_n(&c->net, __ATOMIC_RELAXED) - (int64_t)len;
        st->gets += __atomic_load_n(&c->gets, __ATOMIC_RELAXED);
        st->puts += __atomic_load_n(&c->puts, __ATOMIC_RELAXED);
        st->cache_hits += __atomic_load_n(&c->hits, __ATOMIC_RELAXED);
        st->cache_misses += __atomic_load_n(&c->misses, __ATOMIC_RELAXED);
        st->cas_retries += __atomic_load_n(&c->cas_retries, __ATOMIC_RELAXED);
        st->cached += len;
    }
    /* A snapshot taken while objects move can be off by what was in flight;
     * keep it inside [0, capacity]. */
    if (in_use < 0)
        in_use = 0;
    if (in_use > (int64_t)p->capacity)
        in_use = p->capacity;
    st->capacity = p->capacity;
    st->in_use = (uint64_t)in_use;
    st->available = st->capacity - st->in_use;
    st->asymmetric = !tm_symmetric_;
}

int tm_pool_is_in_use(tm_pool_t *p, uint32_t h) {
    if (!p->state)
        return -1;
    /* RELAXED: a hint under concurrency. */
    return h < p->capacity && __atomic_load_n(&p->state[h], __ATOMIC_RELAXED) == TM_IN_USE;
}
