/*
 * turbomem/ring.h - lock-free bounded MPMC ring of uint32_t handles.
 *
 * Design follows the classic DPDK rte_ring: a producer (head, tail) pair and
 * a consumer (head, tail) pair, each on its own cache line, followed by a
 * power-of-two slot array.  The usable capacity is exactly what the caller
 * asked for (any value 1 .. 2^31); the slot array is the next power of two
 * >= capacity (like RING_F_EXACT_SZ).
 *
 * ------------------------------------------------------------------------
 * Concurrency contract
 * ------------------------------------------------------------------------
 * - Without flags, any number of threads may call the enqueue functions and
 *   any number of threads may call the dequeue functions, all concurrently.
 * - TM_RING_SP: at most one thread at a time may enqueue; if several threads
 *   take turns, the hand-over must give happens-before (a mutex, thread
 *   join, a release/acquire flag), because the SP head is accessed RELAXED.
 *   TM_RING_SC: same for dequeue.  The two flags are
 *   independent (SP+MC, MP+SC, SP+SC are all valid).
 * - tm_ring_count() and tm_ring_capacity() may be called from any thread at
 *   any time; count() is a snapshot and is only exact when no enqueue or
 *   dequeue is in progress.
 * - tm_ring_init() and tm_ring_free() must not race with anything.  The
 *   struct is public so callers can embed it (it must then be followed by
 *   its slot array: always allocate tm_ring_memsize() bytes) and inspect
 *   it; writing its fields is only allowed while the ring is quiescent.
 *
 * How an enqueue works (dequeue is the mirror image, with prod/cons swapped):
 *   1. reserve:  read prod.head, read cons.tail, compute free space, move
 *                prod.head forward by n (CAS for MP, plain store for SP);
 *   2. copy:     write the n handles into the reserved slots;
 *   3. publish:  wait until prod.tail == our old head (i.e. every earlier
 *                reservation is published), then store prod.tail = new head.
 *
 * Memory orders (every atomic in this file names its order):
 *   A. tail stores are RELEASE and the loads of the *opposite* tail in step 1
 *      are ACQUIRE.  prod.tail release -> consumer acquire: the slot writes
 *      are visible before the consumer reads them.  cons.tail release ->
 *      producer acquire: consumers' slot reads are complete before a producer
 *      reuses (overwrites) those slots.
 *   B. the head CAS is ACQ_REL on success / ACQUIRE on failure, and the head
 *      load that starts a reservation is ACQUIRE.  A thread that observes a
 *      head value H therefore also observes an opposite tail at least as new
 *      as the one the thread that wrote H used; so the opposite tail it reads
 *      next is never older than what H was computed from, and the unsigned
 *      free/entries arithmetic can never go "negative" (this is the
 *      head-before-tail read ordering DPDK needed a fence for).
 *   C. the wait-for-predecessor loop in step 3 loads our own tail with
 *      ACQUIRE, pairing with the predecessor's RELEASE tail store; our RELEASE
 *      store then carries the predecessor's slot accesses too, so a thread
 *      that acquires the final tail value sees every slot written/read before
 *      it (transitively through the whole chain of publishers).
 *   D. SP/SC: only the owner thread ever reads or writes its own head, so it
 *      is loaded and stored RELAXED (no CAS) and the tail is stored directly
 *      with RELEASE (no wait: there is no predecessor).
 *   E. slots are accessed with RELAXED atomic loads/stores: the happens-before
 *      edges of A and C already order them; the atomics just make that
 *      explicit to the compiler and to ThreadSanitizer.  (Since atomics never
 *      "race", TSan cannot check A/C through them; tests build a variant with
 *      -DTM_RING_PLAIN_SLOTS, where it can.)
 *
 * 32-bit wraparound: head and tail are free-running uint32_t counters that
 * wrap modulo 2^32; the slot index is (counter & mask).  Because the slot
 * array size is a power of two <= 2^31 it divides 2^32, so the index stays
 * consistent across the wrap.  Free space is computed as
 * capacity + cons.tail - prod.head and fill level as prod.tail - cons.head,
 * both in unsigned (mod 2^32) arithmetic; the true values always lie in
 * [0, capacity] and capacity <= 2^31 < 2^32, so the modular result equals
 * the true one.  (In MP/MC mode a stale head can make the result look larger
 * than the truth, but then the head CAS fails and the loop recomputes.)  (Capacity > 2^31 would need a 2^32-slot array whose size
 * does not fit in uint32_t, hence the limit.)
 *
 * Progress: reservation is lock-free (a failed CAS means another thread made
 * progress).  Publication is NOT: a thread that has moved the head but not
 * yet the tail (e.g. it was preempted or killed between steps 1 and 3)
 * blocks every later thread of the same side in step 3 until it resumes, and
 * the other side simply sees fewer entries/less space meanwhile.  Like DPDK's
 * default ring, it is therefore not wait-free, and not strictly lock-free
 * either in the presence of preemption.  With more threads than cores this
 * bites hard: the spinning successors keep the preempted thread off the CPU
 * and the convoy re-forms on every call (measured: 4 producers + 4 consumers
 * on 2 cores, pure spinning, 2 s or > 100 s at random).  Either keep the
 * threads of each side <= cores, use the SP/SC modes, or define
 * TM_RING_YIELD() (see below) so waiters eventually yield the CPU.
 */
#ifndef TURBOMEM_RING_H
#define TURBOMEM_RING_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "arch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* flags */
#define TM_RING_SP 1u /* single producer: plain head update */
#define TM_RING_SC 2u /* single consumer: plain head update */

#define TM_RING_MAX_CAPACITY 0x80000000u /* 2^31 */

/* Waiting for a predecessor in the publish step spins with TM_CPU_RELAX().
 * That is right when every thread has a core of its own.  If threads may
 * outnumber cores (thread pools, CI boxes), a preempted predecessor makes its
 * successors burn whole time slices; define TM_RING_YIELD() before including
 * this header (e.g. `#define TM_RING_YIELD() sched_yield()`) and it is called
 * after every TM_RING_YIELD_SPINS pauses, like DPDK's RTE_RING_PAUSE_REP_COUNT.
 * By default there is no yield: pure spinning. */
#ifndef TM_RING_YIELD_SPINS
#define TM_RING_YIELD_SPINS 256u
#endif

/* One side of the ring; each side lives on its own cache line. */
struct tm_ring_headtail {
    uint32_t head;   /* next position to reserve (written by CAS or owner) */
    uint32_t tail;   /* everything before it is published to the other side */
};

struct tm_ring {
    /* read-only after tm_ring_init(): shared, never-written cache line */
    uint32_t size;      /* slot array length, power of two */
    uint32_t mask;      /* size - 1 */
    uint32_t capacity;  /* usable capacity, 1 .. 2^31, <= size */
    uint32_t flags;     /* TM_RING_SP | TM_RING_SC */

    TM_ALIGNED(TM_CACHE_LINE) struct tm_ring_headtail prod;
    TM_ALIGNED(TM_CACHE_LINE) struct tm_ring_headtail cons;

    TM_ALIGNED(TM_CACHE_LINE) uint32_t slots[]; /* size entries */
};

typedef struct tm_ring tm_ring_t;

/* Slot array length for a capacity, or 0 if the capacity is invalid. */
static inline uint32_t tm_ring__size_for(uint32_t capacity)
{
    if (capacity == 0 || capacity > TM_RING_MAX_CAPACITY)
        return 0;
    if (capacity == 1)
        return 1;
    return 1u << (32 - __builtin_clz(capacity - 1));
}

/* Bytes needed for a ring of that capacity (a multiple of TM_CACHE_LINE),
 * or 0 if the capacity is invalid or the size does not fit in size_t. */
static inline size_t tm_ring_memsize(uint32_t capacity)
{
    uint32_t size = tm_ring__size_for(capacity);
    size_t bytes;
    if (size == 0)
        return 0;
#if SIZE_MAX <= 0xFFFFFFFFu /* 32-bit size_t: 2^31 slots would overflow */
    if ((size_t)size > (SIZE_MAX - sizeof(tm_ring_t) - TM_CACHE_LINE) / sizeof(uint32_t))
        return 0;
#endif
    bytes = sizeof(tm_ring_t) + (size_t)size * sizeof(uint32_t);
    return (bytes + TM_CACHE_LINE - 1) & ~(size_t)(TM_CACHE_LINE - 1);
}

/* Initialise a ring in caller memory of tm_ring_memsize(capacity) bytes,
 * aligned to TM_CACHE_LINE.  Returns 0, or -1 on a NULL/misaligned pointer,
 * an invalid capacity or unknown flags.  Slots are not cleared. */
static inline int tm_ring_init(tm_ring_t *r, uint32_t capacity, unsigned flags)
{
    uint32_t size = tm_ring__size_for(capacity);
    if (r == NULL || ((uintptr_t)r & (TM_CACHE_LINE - 1)) != 0)
        return -1;
    if (size == 0 || (flags & ~(TM_RING_SP | TM_RING_SC)) != 0)
        return -1;
    memset(r, 0, sizeof(*r));
    r->size = size;
    r->mask = size - 1;
    r->capacity = capacity;
    r->flags = flags;
    /* head/tail all 0 (memset); publication to other threads is the
     * caller's job (thread creation, a release store of the pointer...). */
    return 0;
}

/* Allocate and initialise a ring; NULL on invalid capacity/flags or ENOMEM.
 * Release with tm_ring_free(). */
static inline tm_ring_t *tm_ring_create(uint32_t capacity, unsigned flags)
{
    size_t bytes = tm_ring_memsize(capacity);
    tm_ring_t *r;
    if (bytes == 0 || (flags & ~(TM_RING_SP | TM_RING_SC)) != 0)
        return NULL;
    r = (tm_ring_t *)aligned_alloc(TM_CACHE_LINE, bytes); /* bytes % 64 == 0 */
    if (r == NULL)
        return NULL;
    if (tm_ring_init(r, capacity, flags) != 0) {
        free(r);
        return NULL;
    }
    return r;
}

static inline void tm_ring_free(tm_ring_t *r)
{
    free(r);
}

static inline uint32_t tm_ring_capacity(const tm_ring_t *r)
{
    return r->capacity; /* immutable after init */
}

/* Number of handles in the ring.  Exact when quiescent; under concurrency a
 * value that was true at some recent instant, clamped to [0, capacity]. */
static inline uint32_t tm_ring_count(const tm_ring_t *r)
{
    /* Load cons.tail first, ACQUIRE so the prod.tail load below cannot be
     * hoisted above it: cons.tail only grows and never passes prod.tail, so
     * reading it first keeps the difference from going negative. */
    uint32_t ct = __atomic_load_n(&r->cons.tail, __ATOMIC_ACQUIRE);
    /* RELAXED: only a snapshot, nothing is read through it. */
    uint32_t pt = __atomic_load_n(&r->prod.tail, __ATOMIC_RELAXED);
    uint32_t n = pt - ct;
    return n > r->capacity ? r->capacity : n;
}

/* ---- internals -------------------------------------------------------- */

/* Slot accesses are RELAXED atomics by default (E).  Test builds may define
 * TM_RING_PLAIN_SLOTS to make them plain accesses: the ring is still
 * race-free (A and C give happens-before edges for every slot access), and
 * under ThreadSanitizer that variant actually verifies those edges, which
 * it cannot do for atomic slots (atomics never race). */
#ifdef TM_RING_PLAIN_SLOTS
#define TM_RING__SLOT_STORE(p, v) (*(p) = (v))
#define TM_RING__SLOT_LOAD(p) (*(p))
#else
#define TM_RING__SLOT_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define TM_RING__SLOT_LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#endif

/* Copy n handles into the slots starting at counter value pos, wrapping at
 * the end of the array: two straight loops, no per-element branch. */
static inline void tm_ring__copy_in(tm_ring_t *r, uint32_t pos,
                                    const uint32_t *objs, uint32_t n)
{
    uint32_t idx = pos & r->mask;
    uint32_t first = r->size - idx;
    uint32_t i;
    if (first > n)
        first = n;
    /* RELAXED slot stores: ordered by the prod.tail RELEASE store (A). */
    for (i = 0; i < first; i++)
        TM_RING__SLOT_STORE(&r->slots[idx + i], objs[i]);
    for (; i < n; i++)
        TM_RING__SLOT_STORE(&r->slots[i - first], objs[i]);
}

static inline void tm_ring__copy_out(const tm_ring_t *r, uint32_t pos,
                                     uint32_t *objs, uint32_t n)
{
    uint32_t idx = pos & r->mask;
    uint32_t first = r->size - idx;
    uint32_t i;
    if (first > n)
        first = n;
    /* RELAXED slot loads: ordered by the prod.tail ACQUIRE load (A). */
    for (i = 0; i < first; i++)
        objs[i] = TM_RING__SLOT_LOAD(&r->slots[idx + i]);
    for (; i < n; i++)
        objs[i] = TM_RING__SLOT_LOAD(&r->slots[i - first]);
}

/* Step 3: publish [old, new) on side ht. */
static inline void tm_ring__publish(struct tm_ring_headtail *ht, uint32_t old,
                                    uint32_t new_pos, int single)
{
    if (!single) {
#ifdef TM_RING_YIELD
        unsigned spins = 0;
#endif
        /* ACQUIRE pairs with the predecessor's RELEASE tail store below (C),
         * so our release also publishes the predecessor's slot accesses. */
        while (TM_UNLIKELY(__atomic_load_n(&ht->tail, __ATOMIC_ACQUIRE) != old)) {
#ifdef TM_RING_YIELD
            if (++spins >= TM_RING_YIELD_SPINS) {
                spins = 0;
                TM_RING_YIELD();
                continue;
            }
#endif
            TM_CPU_RELAX();
        }
    }
    /* RELEASE pairs with the other side's ACQUIRE load of this tail in its
     * reserve step (A) and with same-side successors' wait loop (C). */
    __atomic_store_n(&ht->tail, new_pos, __ATOMIC_RELEASE);
}

/* Step 1 for producers: reserve up to n slots (exactly n if fixed).
 * Returns the count reserved and the start position in *old_out. */
static inline uint32_t tm_ring__prod_reserve(tm_ring_t *r, uint32_t n,
                                             int fixed, uint32_t *old_out)
{
    const uint32_t cap = r->capacity;
    uint32_t old, free_n, cnt;

    if (r->flags & TM_RING_SP) {
        /* RELAXED: we are the only thread that touches prod.head (D). */
        old = __atomic_load_n(&r->prod.head, __ATOMIC_RELAXED);
        /* ACQUIRE pairs with consumers' RELEASE store of cons.tail (A). */
        free_n = cap + __atomic_load_n(&r->cons.tail, __ATOMIC_ACQUIRE) - old;
        cnt = n <= free_n ? n : (fixed ? 0 : free_n);
        if (cnt == 0)
            return 0;
        /* RELAXED: nobody else reads prod.head in SP mode (D). */
        __atomic_store_n(&r->prod.head, old + cnt, __ATOMIC_RELAXED);
        *old_out = old;
        return cnt;
    }

    /* ACQUIRE pairs with other producers' ACQ_REL head CAS (B). */
    old = __atomic_load_n(&r->prod.head, __ATOMIC_ACQUIRE);
    for (;;) {
        /* ACQUIRE pairs with consumers' RELEASE store of cons.tail (A); it
         * is ordered after the head load by that load's ACQUIRE (B). */
        free_n = cap + __atomic_load_n(&r->cons.tail, __ATOMIC_ACQUIRE) - old;
        cnt = n <= free_n ? n : (fixed ? 0 : free_n);
        if (cnt == 0)
            return 0;
        /* Success ACQ_REL: release makes our cons.tail read visible to
         * whoever acquires this head value (B); failure ACQUIRE: same as the
         * initial head load, for the reloaded value in `old` (B). */
        if (__atomic_compare_exchange_n(&r->prod.head, &old, old + cnt,
                                        0 /* strong */, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
        TM_CPU_RELAX();
    }
    *old_out = old;
    return cnt;
}

/* Step 1 for consumers: reserve up to n filled slots (exactly n if fixed). */
static inline uint32_t tm_ring__cons_reserve(tm_ring_t *r, uint32_t n,
                                             int fixed, uint32_t *old_out)
{
    uint32_t old, avail, cnt;

    if (r->flags & TM_RING_SC) {
        /* RELAXED: we are the only thread that touches cons.head (D). */
        old = __atomic_load_n(&r->cons.head, __ATOMIC_RELAXED);
        /* ACQUIRE pairs with producers' RELEASE store of prod.tail (A). */
        avail = __atomic_load_n(&r->prod.tail, __ATOMIC_ACQUIRE) - old;
        cnt = n <= avail ? n : (fixed ? 0 : avail);
        if (cnt == 0)
            return 0;
        /* RELAXED: nobody else reads cons.head in SC mode (D). */
        __atomic_store_n(&r->cons.head, old + cnt, __ATOMIC_RELAXED);
        *old_out = old;
        return cnt;
    }

    /* ACQUIRE pairs with other consumers' ACQ_REL head CAS (B). */
    old = __atomic_load_n(&r->cons.head, __ATOMIC_ACQUIRE);
    for (;;) {
        /* ACQUIRE pairs with producers' RELEASE store of prod.tail (A). */
        avail = __atomic_load_n(&r->prod.tail, __ATOMIC_ACQUIRE) - old;
        cnt = n <= avail ? n : (fixed ? 0 : avail);
        if (cnt == 0)
            return 0;
        /* ACQ_REL / ACQUIRE: see tm_ring__prod_reserve (B). */
        if (__atomic_compare_exchange_n(&r->cons.head, &old, old + cnt,
                                        0 /* strong */, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            break;
        TM_CPU_RELAX();
    }
    *old_out = old;
    return cnt;
}

static inline uint32_t tm_ring__enqueue(tm_ring_t *r, const uint32_t *objs,
                                        uint32_t n, int fixed)
{
    uint32_t old, cnt;
    if (TM_UNLIKELY(n == 0))
        return 0;
    cnt = tm_ring__prod_reserve(r, n, fixed, &old);
    if (cnt == 0)
        return 0;
    tm_ring__copy_in(r, old, objs, cnt);
    tm_ring__publish(&r->prod, old, old + cnt, (r->flags & TM_RING_SP) != 0);
    return cnt;
}

static inline uint32_t tm_ring__dequeue(tm_ring_t *r, uint32_t *objs,
                                        uint32_t n, int fixed)
{
    uint32_t old, cnt;
    if (TM_UNLIKELY(n == 0))
        return 0;
    cnt = tm_ring__cons_reserve(r, n, fixed, &old);
    if (cnt == 0)
        return 0;
    tm_ring__copy_out(r, old, objs, cnt);
    tm_ring__publish(&r->cons, old, old + cnt, (r->flags & TM_RING_SC) != 0);
    return cnt;
}

/* ---- public data path ------------------------------------------------- */

/* All-or-nothing: enqueue all n handles and return n, or enqueue nothing
 * and return 0 (also for n == 0 or n > capacity). */
static inline uint32_t tm_ring_enqueue_bulk(tm_ring_t *r, const uint32_t *objs,
                                            uint32_t n)
{
    return tm_ring__enqueue(r, objs, n, 1);
}

/* All-or-nothing: dequeue exactly n handles into objs and return n, or
 * dequeue nothing and return 0. */
static inline uint32_t tm_ring_dequeue_bulk(tm_ring_t *r, uint32_t *objs,
                                            uint32_t n)
{
    return tm_ring__dequeue(r, objs, n, 1);
}

/* Enqueue as many of objs[0..n) as fit (a prefix); return how many. */
static inline uint32_t tm_ring_enqueue_burst(tm_ring_t *r, const uint32_t *objs,
                                             uint32_t n)
{
    return tm_ring__enqueue(r, objs, n, 0);
}

/* Dequeue up to n handles into objs; return how many. */
static inline uint32_t tm_ring_dequeue_burst(tm_ring_t *r, uint32_t *objs,
                                             uint32_t n)
{
    return tm_ring__dequeue(r, objs, n, 0);
}

/* 1 if enqueued, 0 if the ring was full. */
static inline int tm_ring_enqueue(tm_ring_t *r, uint32_t obj)
{
    return (int)tm_ring__enqueue(r, &obj, 1, 1);
}

/* 1 and *obj set if a handle was dequeued, 0 if the ring was empty. */
static inline int tm_ring_dequeue(tm_ring_t *r, uint32_t *obj)
{
    return (int)tm_ring__dequeue(r, obj, 1, 1);
}

#ifdef __cplusplus
}
#endif

#endif /* TURBOMEM_RING_H */
