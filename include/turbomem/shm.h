/* turbomem/shm.h - an object pool and rings that live in one shared mapping,
 * used by several processes at once, and recovered when one of them dies.
 *
 * Everything in the mapping is described by offsets (the header, written and
 * validated by turbomem/shared.py); each process builds its own tm_shm_pool_t
 * of pointers from them, with the geometry taken from the validated header,
 * never re-read from the mapping.  Nothing in the mapping is a pointer.
 *
 * The design is the in-process core's (pool.h, src/pool.c): per-thread caches
 * over a depot of magazines.  What changes is that any process may be
 * SIGKILLed between any two instructions, so every structure is built such
 * that a survivor can always tell where each object is and finish or undo the
 * dead process's half-done step.  No lock anywhere: a dead process holds
 * nothing that others wait for.
 *
 * OWNERSHIP (the single source of truth for crash recovery)
 *   owner[h] says where object h is:
 *     TM_OWN_MAG(m)        in magazine m (m on a depot stack, or owned by a slot)
 *     TM_OWN_CACHED(s)     in the cache of slot s (a thread of some process)
 *     TM_OWN_HELD(s)       handed to the user of slot s
 *     TM_OWN_RING(r, s)    enqueued (or being enqueued) on pool ring r by slot s
 *   A slot is one thread of one process: slots[s].own/tid say which.
 *   Objects marked MAG/CACHED are free ("available").  Every transition out of
 *   HELD/RING is a CAS on owner[h] with the observed value as expected value,
 *   so a live process and a recoverer racing for the same object never both
 *   win.  MAG(m) and CACHED(s) objects change only by their owner's plain
 *   stores (the owner of m, or slot s), or by the recoverer of a dead owner.
 *   The lists (cache arrays, magazine contents and counts) are hints that the
 *   owner keeps exact while it lives; recovery ignores them and trusts owner[].
 *
 * THE DEPOT: magazines of mag_size handles, each on one of three lock-free
 *   stacks - FULL (count == mag_size), PART (0 < count < mag_size), EMPTY -
 *   or owned by one slot between its pop and its push.  mags[m].state says
 *   which: ON(k) or OWNED(s), with a sequence number bumped by every change.
 *   A cache refill pops a magazine, moves its handles into the cache (marking
 *   each CACHED(s)) and pushes it on EMPTY; a flush pops an empty (or partial)
 *   one, moves handles in (marking each MAG(m)) and pushes it on FULL/PART.
 *   nmags = ceil(capacity / mag_size) + max_slots + 2: a slot owns at most one
 *   magazine at a time, so whenever a flush looks, EMPTY or PART holds one
 *   (all the others full would be more objects than the pool has).
 *
 * KILL-SAFE STACKS: THE OPERATION IS WRITTEN INTO THE HEAD
 *   A Treiber stack's pop is "read head, CAS head to next": a process killed
 *   after that CAS took a magazine and told nobody.  Here the head word is
 *   [tag:32 | op:2 | slot:12 | top+1:18], and every push and pop is two CASes
 *   on it, with the state change in between:
 *     pop:   CAS head (NONE, m)      -> (POP, s, m)    claims m for slot s
 *            CAS mags[m].state ON(k) -> OWNED(s)
 *            CAS head (POP, s, m)    -> (NONE, next[m])
 *     push:  next[m] = top; CAS head (NONE, top) -> (PUSH, s, m)
 *            CAS mags[m].state OWNED(s) -> ON(k)
 *            CAS head (PUSH, s, m)   -> (NONE, m)
 *   Whoever reads a head with an operation in it finishes that operation
 *   (tm_shm__help) before its own, so the stack stays lock-free, and a kill
 *   at any point leaves either nothing done, or a claim anyone completes:
 *   the magazine's state always names its place, which is what recovery
 *   reads.  A helper changes the state only if, after reading it, the head
 *   still holds the operation (so the state it read is the one from before
 *   the operation), and only by a CAS from exactly that value: states carry a
 *   sequence bumped by every change, so a helper that stalls past the
 *   operation's end fails its CAS instead of re-applying it.
 *   ABA: every head CAS stores tag + 1, and state changes bump seq, so a stale
 *   CAS needs 2^32 changes of one word while its author sits between a load
 *   and its CAS (the bound stack.h states for the in-process core).
 *   Model: models/shmdepot.pml (a process killed at every step).
 *
 * CACHES live in the mapping (cache s at caches + s * cache_size) and are
 *   touched only by their slot's thread.
 *
 * SLOTS: slots[s].own is one 64-bit word, pid (low 32) and the pid of its
 *   recoverer (high 32).  A thread claims a free slot by CAS 0 -> pid; a
 *   recoverer takes a dead slot by CAS (pid, 0) -> (pid, its pid) and gives
 *   it back by storing 0 after the work, so two recoverers never work on one
 *   slot and a slot is never reused while a recoverer may still touch owner
 *   words marked with it.  The recoverer works AS the dead slot (its pops
 *   and marks name the dead slot), so if it dies too, everything is still
 *   the dead slot's: the next recoverer, finding the mark's pid dead, takes
 *   the mark over by CAS and redoes the (idempotent) recovery.  A detaching
 *   thread releases its own slot the same way (tm_shm_release).
 *
 * POOL RINGS are multi-producer, multi-consumer rings of cells that name
 *   their claimant (see "pool rings" below).  Enqueue claims cells, marks
 *   each handle RING(r, s), then publishes; dequeue takes a handle by CAS on
 *   its owner word, RING -> HELD(c).  A dead producer's published handles
 *   stay in the ring; its claimed cells become tombstones and its marked but
 *   unpublished handles go back.  A dead consumer's taken handles go back
 *   (HELD); the cells it did not retire are retired by the next consumer.
 *
 * FUTEX WAITS: data_seq / space_seq are futex words in the mapping.  A waiter
 *   increments the waiter count (SEQ_CST), re-checks the ring, then sleeps on
 *   the sequence it read before; a waker publishes, reads the waiter count with
 *   a SEQ_CST read-modify-write, and bumps + wakes only if it sees a waiter
 *   (one of the two always sees the other: see tm_shm_notify).
 */
#ifndef TURBOMEM_SHM_H
#define TURBOMEM_SHM_H

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "arch.h"
#include "ring.h"

#define TM_SHM_MAX_SLOTS 4095u       /* slot index fits 12 bits */
#define TM_SHM_MAX_RINGS 256u        /* ring index fits 16 bits */
#define TM_SHM_MAX_MAGS 0x3FFFEu     /* magazine index + 1 fits 18 bits */

#define TM_OWN_KIND(w) ((w) >> 28)
#define TM_OWN_SLOT(w) ((w)&0xFFFu)
#define TM_OWN_RINGNO(w) (((w) >> 12) & 0xFFFFu)
#define TM_OWN_MAG(m) ((uint32_t)(m)) /* kind 0 */
#define TM_OWN_HELD(s) ((1u << 28) | (uint32_t)(s))
#define TM_OWN_CACHED(s) ((2u << 28) | (uint32_t)(s))
#define TM_OWN_RING(r, s) ((3u << 28) | ((uint32_t)(r) << 12) | (uint32_t)(s))
enum { TM_K_MAG = 0, TM_K_HELD = 1, TM_K_CACHED = 2, TM_K_RING = 3 };
#define TM_K_FREE TM_K_MAG /* the name the census uses: in the depot */

/* error codes (negative), beside pool.h's */
#define TM_SHM_OK 0
#define TM_SHM_EEMPTY (-1)
#define TM_SHM_ERANGE (-2)
#define TM_SHM_ENOTHELD (-3)  /* put/enqueue of an object that is not handed out (in a ring) */
#define TM_SHM_EDOUBLEFREE (-4) /* put of an object that is free (or cached, or repeated in the bulk) */
#define TM_SHM_ENOMEM (-7)    /* recovery could not allocate its scratch memory */
#define TM_SHM_EBUSY (-8)     /* ring side claimed by another live slot */
#define TM_SHM_ECORRUPT (-9)  /* a control word is out of range */

/* The depot's stacks. */
enum { TM_DEPOT_FULL = 0, TM_DEPOT_PART = 1, TM_DEPOT_EMPTY = 2, TM_DEPOT_STACKS = 3 };

/* Stack head word: [63:32] tag | [31:30] op | [29:18] slot | [17:0] top + 1 (0: empty). */
enum { TM_OP_NONE = 0, TM_OP_POP = 1, TM_OP_PUSH = 2 };
#define TM_H_TAG(h) ((uint32_t)((h) >> 32))
#define TM_H_OP(h) ((uint32_t)((h) >> 30) & 3u)
#define TM_H_SLOT(h) ((uint32_t)((h) >> 18) & 0xFFFu)
#define TM_H_TOP1(h) ((uint32_t)(h)&0x3FFFFu)
#define TM_H_MAKE(tag, op, slot, top1)                                                          \
    (((uint64_t)(uint32_t)(tag) << 32) | ((uint64_t)(op) << 30) | ((uint64_t)(slot) << 18) | \
     (uint64_t)(top1))

/* Magazine state word: [63:32] seq | [17:16] kind | [15:0] stack or slot. */
enum { TM_M_ON = 1, TM_M_OWNED = 2 };
#define TM_M_SEQ(w) ((uint32_t)((w) >> 32))
#define TM_M_KIND(w) ((uint32_t)((w) >> 16) & 3u)
#define TM_M_WHO(w) ((uint32_t)(w)&0xFFFFu)
#define TM_M_MAKE(seq, kind, who) \
    (((uint64_t)(uint32_t)(seq) << 32) | ((uint64_t)(kind) << 16) | (uint64_t)(who))

typedef struct tm_shm_head {
    uint64_t word;
    uint64_t pad_[7]; /* one cache line each: the contended words */
} tm_shm_head_t;

/* Control block. */
typedef struct tm_shm_ctl {
    tm_shm_head_t heads[TM_DEPOT_STACKS];
    uint64_t recovered; /* objects given back from dead slots (RELAXED adds) */
    uint64_t pad_[7];
} tm_shm_ctl_t;

/* One magazine's control: 16 bytes; its handles are at mag_hs + m * mag_size. */
typedef struct tm_shm_mag {
    uint64_t state; /* ON(k) / OWNED(s), with seq: see above */
    uint32_t next;  /* link + 1 below it on its stack (0: bottom); RELAXED atomics */
    uint32_t count; /* handles in it; written by its owner only */
} tm_shm_mag_t;

/* One per thread of a process using the pool.  own == 0: free slot. */
typedef struct tm_shm_slot {
    uint64_t own;        /* pid (low 32) | pid of its recoverer, 0 none (high 32) */
    int32_t tid;
    uint32_t len;        /* cache length, written by the slot's thread only */
    uint64_t start_time; /* /proc/pid/stat starttime: guards against pid reuse */
    uint64_t rec_start;  /* the recoverer's start time (0: judge it by pid alone) */
    uint32_t pad_[8];
} tm_shm_slot_t;
#define TM_SLOT_PID(own) ((int32_t)(uint32_t)(own))
#define TM_SLOT_REC(own) ((uint32_t)((own) >> 32)) /* the recoverer's pid */

/* Control of one ring (pool ring or standalone): its futex words; 128 bytes. */
typedef struct tm_shm_ringctl {
    uint32_t pad0_[16];
    uint32_t data_seq;      /* futex: consumers sleep here */
    uint32_t data_waiters;
    uint32_t space_seq;     /* futex: producers sleep here */
    uint32_t space_waiters;
    uint32_t pad1_[12];
} tm_shm_ringctl_t;

/* Per-process view of a pool mapping. */
typedef struct tm_shm_pool {
    tm_shm_ctl_t *ctl;
    tm_shm_mag_t *mags;
    uint32_t *mag_hs;
    uint32_t *owner;
    tm_shm_slot_t *slots;
    uint32_t *caches;
    unsigned char *rings;  /* nrings * ring_stride bytes: ringctl then ring.h ring */
    size_t ring_stride;
    uint32_t capacity, cache_size, max_slots, nrings;
    uint32_t mag_size, nmags;
    /* Ring geometry from the validated header, never re-read from the mapping:
     * a scribbled mask or capacity must not steer an index out of bounds. */
    uint32_t ring_capacity, ring_mask;
} tm_shm_pool_t;

/* The magazine geometry for a pool: a pure function, so the creator and
 * every attacher compute the same (turbomem/shared.py calls it). */
static inline void tm_shm_mag_geometry(uint32_t capacity, uint32_t cache_size, uint32_t max_slots,
                                       uint32_t *mag_size, uint32_t *nmags) {
    uint32_t b = cache_size ? (cache_size / 2 ? cache_size / 2 : 1) : 32;
    /* Room for the slots' magazines within the 18-bit index. */
    uint64_t room = (uint64_t)TM_SHM_MAX_MAGS - max_slots - 2;
    uint64_t least = ((uint64_t)capacity + room - 1) / room;
    if (b < least)
        b = (uint32_t)least;
    *mag_size = b;
    *nmags = (uint32_t)(((uint64_t)capacity + b - 1) / b) + max_slots + 2;
}

static inline tm_shm_ringctl_t *tm_shm_ringctl(const tm_shm_pool_t *p, uint32_t r) {
    return (tm_shm_ringctl_t *)(p->rings + (size_t)r * p->ring_stride);
}
static inline uint32_t *tm_shm__mag_hs(const tm_shm_pool_t *p, uint32_t m) {
    return p->mag_hs + (size_t)m * p->mag_size;
}

/* ---- futex ------------------------------------------------------------- */

static inline long tm_futex_wait(uint32_t *addr, uint32_t expected, long timeout_ns) {
    struct timespec ts = {timeout_ns / 1000000000L, timeout_ns % 1000000000L};
    /* Not FUTEX_PRIVATE: the word is shared between processes. */
    return syscall(SYS_futex, addr, FUTEX_WAIT, expected, timeout_ns >= 0 ? &ts : NULL, NULL, 0);
}

static inline void tm_futex_wake_all(uint32_t *addr) {
    syscall(SYS_futex, addr, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* Waker side: call after publishing.  The read of *waiters is a SEQ_CST
 * read-modify-write (adding 0) rather than a fence + load: RMWs on one word are
 * totally ordered, so either ours comes after the waiter's increment (we see
 * the waiter and wake it) or before it - then the waiter's SEQ_CST increment
 * reads from our RMW, synchronises with it, and its re-check sees what we
 * published before.  (Also what ThreadSanitizer can check: it has no fences.) */
static inline void tm_shm_notify(uint32_t *seq, uint32_t *waiters) {
    if (__atomic_fetch_add(waiters, 0, __ATOMIC_SEQ_CST) != 0) {
        /* RELEASE: a waiter whose futex compare sees the new value returns. */
        __atomic_add_fetch(seq, 1, __ATOMIC_RELEASE);
        tm_futex_wake_all(seq);
    }
}

/* Waiter side, three steps: tm_shm_wait_begin returns the sequence to sleep
 * on; the caller re-checks its condition; then tm_shm_wait_sleep (at most
 * slice_ns) and tm_shm_wait_end. */
static inline uint32_t tm_shm_wait_begin(uint32_t *seq, uint32_t *waiters) {
    /* ACQUIRE: pairs with the waker's RELEASE bump. */
    uint32_t s = __atomic_load_n(seq, __ATOMIC_ACQUIRE);
    /* SEQ_CST: pairs with the waker's SEQ_CST read-modify-write (tm_shm_notify). */
    __atomic_add_fetch(waiters, 1, __ATOMIC_SEQ_CST);
    return s;
}
static inline void tm_shm_wait_sleep(uint32_t *seq, uint32_t s, long slice_ns) {
    tm_futex_wait(seq, s, slice_ns); /* EAGAIN / EINTR / ETIMEDOUT: caller re-checks */
}
static inline void tm_shm_wait_end(uint32_t *waiters) {
    /* RELAXED: a stale count only costs a waker one futex_wake. */
    __atomic_sub_fetch(waiters, 1, __ATOMIC_RELAXED);
}

/* ---- the depot: kill-safe lock-free stacks of magazines ------------------- */

#define TM_SHM_NIL UINT32_MAX

/* A head no process writes (a scribbled control area): empty the stack
 * rather than follow it.  Its magazines are lost; nothing is read or written
 * out of bounds, and no loop follows a scribbled link. */
static inline void tm_shm__reset(tm_shm_pool_t *p, uint32_t k, uint64_t h) {
    /* ACQ_REL: as every head CAS; fails harmlessly if the head moved on. */
    __atomic_compare_exchange_n(&p->ctl->heads[k].word, &h, TM_H_MAKE(TM_H_TAG(h) + 1, TM_OP_NONE, 0, 0),
                                0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* Finish the operation written into head word d of stack k (see the top of
 * this file).  Any process may call it, any number of times, at any moment:
 * each step is a CAS that succeeds once. */
static inline void tm_shm__help(tm_shm_pool_t *p, uint32_t k, uint64_t d) {
    uint64_t *head = &p->ctl->heads[k].word;
    uint32_t op = TM_H_OP(d), m1 = TM_H_TOP1(d), s = TM_H_SLOT(d);
    if (op == 3u || m1 == 0 || m1 > p->nmags || s >= p->max_slots) {
        tm_shm__reset(p, k, d);
        return;
    }
    tm_shm_mag_t *mg = &p->mags[m1 - 1];
    /* ACQUIRE: pairs with the ACQ_REL CAS that wrote the state. */
    uint64_t w = __atomic_load_n(&mg->state, __ATOMIC_ACQUIRE);
    /* ACQUIRE: pairs with the head CASes.  If d is still the head, the
     * operation's state step had not been done when we read w, or was done
     * already (the kind has changed): either way w is from this operation. */
    if (__atomic_load_n(head, __ATOMIC_ACQUIRE) != d)
        return; /* finished by someone else */
    if (op == TM_OP_POP && TM_M_KIND(w) == TM_M_ON)
        /* ACQ_REL: one CAS of all helpers wins; the exact expected value
         * (seq) makes a stale helper's CAS fail. */
        __atomic_compare_exchange_n(&mg->state, &w, TM_M_MAKE(TM_M_SEQ(w) + 1, TM_M_OWNED, s), 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    else if (op == TM_OP_PUSH && TM_M_KIND(w) == TM_M_OWNED)
        __atomic_compare_exchange_n(&mg->state, &w, TM_M_MAKE(TM_M_SEQ(w) + 1, TM_M_ON, k), 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    /* RELAXED: next[m] was written before the push's RELEASE head CAS, which
     * our ACQUIRE head load synchronises with; nobody writes it while m is on
     * the stack.  A stale value is harmless: the CAS below then fails. */
    uint32_t top1 = op == TM_OP_POP ? __atomic_load_n(&mg->next, __ATOMIC_RELAXED) : m1;
    /* ACQ_REL: keeps the release sequence of every earlier head CAS (the
     * magazine contents a pusher wrote) for the next popper's ACQUIRE. */
    __atomic_compare_exchange_n(head, &d, TM_H_MAKE(TM_H_TAG(d) + 1, TM_OP_NONE, 0, top1), 0,
                                __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* Pop a magazine from stack k for slot s: it returns owned by s (state
 * OWNED(s)), or TM_SHM_NIL if the stack is empty. */
static inline uint32_t tm_shm__pop(tm_shm_pool_t *p, uint32_t k, uint32_t s) {
    uint64_t *head = &p->ctl->heads[k].word;
    for (;;) {
        /* ACQUIRE: pairs with the pushers' head CASes (magazine contents). */
        uint64_t h = __atomic_load_n(head, __ATOMIC_ACQUIRE);
        if (TM_H_OP(h) != TM_OP_NONE) {
            tm_shm__help(p, k, h);
            continue;
        }
        uint32_t m1 = TM_H_TOP1(h);
        if (m1 == 0)
            return TM_SHM_NIL;
        if (m1 > p->nmags) { /* scribbled */
            tm_shm__reset(p, k, h);
            return TM_SHM_NIL;
        }
        uint64_t d = TM_H_MAKE(TM_H_TAG(h) + 1, TM_OP_POP, s, m1);
        /* ACQ_REL: acquire the contents; release nothing new but keep the
         * release sequence.  Failure ACQUIRE: we read the new head next. */
        if (__atomic_compare_exchange_n(head, &h, d, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            tm_shm__help(p, k, d); /* returns only once the pop is complete */
            if (p->mags[m1 - 1].count > p->mag_size) /* scribbled: ours now, never index past it */
                p->mags[m1 - 1].count = p->mag_size;
            return m1 - 1;
        }
    }
}

/* Push magazine m, owned by slot s, on stack k. */
static inline void tm_shm__push(tm_shm_pool_t *p, uint32_t k, uint32_t s, uint32_t m) {
    uint64_t *head = &p->ctl->heads[k].word;
    tm_shm_mag_t *mg = &p->mags[m];
    for (;;) {
        /* ACQUIRE: pairs with the head CASes (so a helped operation's effects). */
        uint64_t h = __atomic_load_n(head, __ATOMIC_ACQUIRE);
        if (TM_H_OP(h) != TM_OP_NONE) {
            tm_shm__help(p, k, h);
            continue;
        }
        if (TM_H_TOP1(h) > p->nmags) { /* scribbled */
            tm_shm__reset(p, k, h);
            continue;
        }
        /* RELAXED: published by the RELEASE half of the CAS below. */
        __atomic_store_n(&mg->next, TM_H_TOP1(h), __ATOMIC_RELAXED);
        uint64_t d = TM_H_MAKE(TM_H_TAG(h) + 1, TM_OP_PUSH, s, m + 1);
        /* ACQ_REL: RELEASE publishes next[m], the contents and the owner
         * marks of m's handles to the next popper. */
        if (__atomic_compare_exchange_n(head, &h, d, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            tm_shm__help(p, k, d);
            return;
        }
    }
}

/* Which stack a magazine holding `count` handles goes on. */
static inline uint32_t tm_shm__stack_for(const tm_shm_pool_t *p, uint32_t count) {
    return count == 0 ? TM_DEPOT_EMPTY : count >= p->mag_size ? TM_DEPOT_FULL : TM_DEPOT_PART;
}

/* Pop a magazine with handles (FULL first), or TM_SHM_NIL. */
static inline uint32_t tm_shm__pop_loaded(tm_shm_pool_t *p, uint32_t s) {
    uint32_t m = tm_shm__pop(p, TM_DEPOT_FULL, s);
    return m != TM_SHM_NIL ? m : tm_shm__pop(p, TM_DEPOT_PART, s);
}

/* Pop a magazine with room (EMPTY first, then PART).  One exists whenever
 * we look (see nmags above) unless others hold it for a moment: retry a
 * bounded number of times, then report a corrupt depot. */
static inline uint32_t tm_shm__pop_room(tm_shm_pool_t *p, uint32_t s) {
    for (int i = 0; i < 1000; i++) {
        uint32_t m = tm_shm__pop(p, TM_DEPOT_EMPTY, s);
        if (m == TM_SHM_NIL)
            m = tm_shm__pop(p, TM_DEPOT_PART, s);
        if (m != TM_SHM_NIL)
            return m;
        sched_yield();
    }
    return TM_SHM_NIL;
}

/* ---- get / put ------------------------------------------------------------ */

/* Move the top (at most) k handles of magazine m, owned by the caller, to
 * dst in order, marking each `mark`.  An entry whose owner word is not
 * MAG(m) (only a scribbled magazine has one) is dropped: never handed out
 * twice.  Returns how many were written. */
static inline uint32_t tm_shm__mag_take(tm_shm_pool_t *p, uint32_t m, uint32_t *dst, uint32_t k,
                                        uint32_t mark) {
    tm_shm_mag_t *mg = &p->mags[m];
    uint32_t c = mg->count, got = 0;
    if (c > p->mag_size)
        c = p->mag_size; /* scribbled count: owner[] keeps the truth */
    uint32_t from = c > k ? c - k : 0;
    const uint32_t *hs = tm_shm__mag_hs(p, m);
    for (uint32_t i = from; i < c; i++) {
        uint32_t h = hs[i];
        /* RELAXED: MAG(m) objects change only by m's owner: us. */
        if (h >= p->capacity || __atomic_load_n(&p->owner[h], __ATOMIC_RELAXED) != TM_OWN_MAG(m))
            continue;
        /* RELAXED: the commit point of the move; published by our next
         * RELEASE (push, ring tail) or read by our recoverer after death. */
        __atomic_store_n(&p->owner[h], mark, __ATOMIC_RELAXED);
        dst[got++] = h;
    }
    mg->count = from;
    return got;
}

/* Move (at most) k handles from src - ours, marked CACHED(s) - into magazine
 * m, owned by the caller, marking each MAG(m).  An entry that is not marked
 * CACHED(s) (only a scribbled cache has one) is dropped.  Returns how many
 * entries of src were used (at most its room). */
static inline uint32_t tm_shm__mag_fill(tm_shm_pool_t *p, uint32_t m, uint32_t s, const uint32_t *src,
                                        uint32_t k) {
    tm_shm_mag_t *mg = &p->mags[m];
    uint32_t c = mg->count;
    if (c > p->mag_size)
        c = p->mag_size;
    if (k > p->mag_size - c)
        k = p->mag_size - c;
    uint32_t *hs = tm_shm__mag_hs(p, m);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t h = src[i];
        /* RELAXED: CACHED(s) objects change only by slot s: us. */
        if (h >= p->capacity || __atomic_load_n(&p->owner[h], __ATOMIC_RELAXED) != TM_OWN_CACHED(s))
            continue;
        hs[c++] = h;
        /* RELAXED: as in tm_shm__mag_take; the push's RELEASE publishes it. */
        __atomic_store_n(&p->owner[h], TM_OWN_MAG(m), __ATOMIC_RELAXED);
    }
    mg->count = c;
    return k;
}

static inline uint32_t tm_shm__cache_len(tm_shm_pool_t *p, uint32_t s) {
    uint32_t len = p->slots[s].len;
    if (len > p->cache_size) /* scribbled: forget the cache, owner[] keeps the truth */
        len = p->slots[s].len = 0;
    return len;
}

/* Place n handles marked CACHED(s) (ours): into the cache while it has room,
 * else into magazines (the cache flushed down to half first). */
static inline int tm_shm__place(tm_shm_pool_t *p, uint32_t s, const uint32_t *hs, uint32_t n) {
    uint32_t *cache = p->caches + (size_t)s * p->cache_size;
    uint32_t len = tm_shm__cache_len(p, s), i = 0;
    while (i < n) {
        if (len < p->cache_size) {
            uint32_t k = p->cache_size - len < n - i ? p->cache_size - len : n - i;
            memcpy(cache + len, hs + i, (size_t)k * sizeof(uint32_t));
            len += k;
            i += k;
            p->slots[s].len = len;
            continue;
        }
        uint32_t m = tm_shm__pop_room(p, s);
        if (m == TM_SHM_NIL)
            return TM_SHM_ECORRUPT; /* only a scribbled depot has no room */
        if (p->cache_size) {
            uint32_t over = len - p->cache_size / 2, room = p->mag_size - p->mags[m].count;
            uint32_t k = tm_shm__mag_fill(p, m, s, cache + len - (over < room ? over : room),
                                          over < room ? over : room);
            len -= k;
            p->slots[s].len = len;
        } else {
            i += tm_shm__mag_fill(p, m, s, hs + i, n - i);
        }
        tm_shm__push(p, tm_shm__stack_for(p, p->mags[m].count), s, m);
    }
    return TM_SHM_OK;
}

/* Give back handles of ours marked HELD(s) (an all-or-nothing get undone). */
static inline void tm_shm__unget(tm_shm_pool_t *p, uint32_t s, uint32_t *hs, uint32_t n) {
    uint32_t kept = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t w = TM_OWN_HELD(s);
        /* ACQ_REL: a put of the same handle by another process may race us. */
        if (__atomic_compare_exchange_n(&p->owner[hs[i]], &w, TM_OWN_CACHED(s), 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            hs[kept++] = hs[i];
    }
    tm_shm__place(p, s, hs, kept);
}

/* Get n objects (all or nothing: a short pool gives back what was taken)
 * for slot s: from the cache while it has objects, refilled from the depot
 * when it is empty.  The hit path is the first round of the loop: n objects
 * from the cache, a load and a store of each owner word, no atomic RMW. */
static inline int tm_shm_get_bulk(tm_shm_pool_t *p, uint32_t s, uint32_t *out, uint32_t n) {
    uint32_t *cache = p->caches + (size_t)s * p->cache_size;
    uint32_t len = tm_shm__cache_len(p, s), got = 0;
    while (got < n) {
        if (len > 0) {
            uint32_t k = len < n - got ? len : n - got, i;
            for (i = 0; i < k; i++) {
                uint32_t h = cache[len - 1 - i];
                /* RELAXED: CACHED(s) objects change only by us.  Anything else:
                 * a scribbled cache; drop it, owner[] keeps the truth. */
                if (h >= p->capacity || __atomic_load_n(&p->owner[h], __ATOMIC_RELAXED) != TM_OWN_CACHED(s))
                    break;
                /* RELAXED: our own cached object (as on the hit path). */
                __atomic_store_n(&p->owner[h], TM_OWN_HELD(s), __ATOMIC_RELAXED);
                out[got++] = h;
            }
            len = i < k ? 0 : len - k;
            p->slots[s].len = len;
            continue;
        }
        uint32_t m = tm_shm__pop_loaded(p, s);
        if (m == TM_SHM_NIL) {
            tm_shm__unget(p, s, out, got);
            return TM_SHM_EEMPTY;
        }
        if (p->cache_size) {
            len = tm_shm__mag_take(p, m, cache, p->cache_size, TM_OWN_CACHED(s));
            p->slots[s].len = len;
        } else {
            got += tm_shm__mag_take(p, m, out + got, n - got, TM_OWN_HELD(s));
        }
        tm_shm__push(p, tm_shm__stack_for(p, p->mags[m].count), s, m);
    }
    return TM_SHM_OK;
}


/* Put n objects back for slot s.  Each must be handed out (HELD by any slot);
 * on error nothing is returned and *bad is the index of the offender. */
static inline int tm_shm_put_bulk(tm_shm_pool_t *p, uint32_t s, const uint32_t *hs, uint32_t n,
                                  uint32_t *bad) {
    tm_shm_slot_t *sl = &p->slots[s];
    uint32_t i, why = TM_K_HELD;
    for (i = 0; i < n; i++) {
        uint32_t h = hs[i], w;
        if (h >= p->capacity) {
            *bad = i;
            goto undo;
        }
        /* ACQUIRE: see the state the previous holder left (pairs with the
         * ACQ_REL CASes that moved h here). */
        w = __atomic_load_n(&p->owner[h], __ATOMIC_ACQUIRE);
        if (TM_OWN_KIND(w) != TM_K_HELD ||
            /* ACQ_REL: exactly one of two racing puts (or a recoverer) wins. */
            !__atomic_compare_exchange_n(&p->owner[h], &w, TM_OWN_CACHED(s), 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED)) {
            *bad = i;
            why = TM_OWN_KIND(w);
            goto undo;
        }
    }
    uint32_t len = sl->len;
    if (len + n <= p->cache_size && len <= p->cache_size) { /* the hit path */
        memcpy(p->caches + (size_t)s * p->cache_size + len, hs, (size_t)n * sizeof(uint32_t));
        sl->len = len + n;
        return TM_SHM_OK;
    }
    return tm_shm__place(p, s, hs, n);
undo:
    for (uint32_t j = 0; j < i; j++) /* RELAXED: still ours (marked CACHED(s) by us) */
        __atomic_store_n(&p->owner[hs[j]], TM_OWN_HELD(s), __ATOMIC_RELAXED);
    if (hs[*bad] >= p->capacity)
        return TM_SHM_ERANGE;
    return (why == TM_K_MAG || why == TM_K_CACHED) ? TM_SHM_EDOUBLEFREE : TM_SHM_ENOTHELD;
}

/* Return slot s's cache to the depot (a thread or process detaching). */
static inline int tm_shm_flush(tm_shm_pool_t *p, uint32_t s) {
    uint32_t *cache = p->caches + (size_t)s * p->cache_size;
    uint32_t len = tm_shm__cache_len(p, s);
    while (len > 0) {
        uint32_t m = tm_shm__pop_room(p, s);
        if (m == TM_SHM_NIL)
            return TM_SHM_ECORRUPT;
        uint32_t room = p->mag_size - p->mags[m].count, k = len < room ? len : room;
        len -= tm_shm__mag_fill(p, m, s, cache + len - k, k);
        p->slots[s].len = len;
        tm_shm__push(p, tm_shm__stack_for(p, p->mags[m].count), s, m);
    }
    return TM_SHM_OK;
}

/* ---- pool rings: multi-producer, multi-consumer, kill-safe ---------------- */

/* A cell is one 64-bit word [seq:32 | val:32] (the bounded MPMC queue of
 * per-cell sequence numbers), for position p (cell p & mask):
 *   (p,     FREE)     free for the producer at p
 *   (p,     RSV(s))   claimed by producer slot s, not yet published
 *   (p + 1, h)        published: handle h, or TOMB (a claim given up)
 *   (p + size, FREE)  retired: free for the producer one lap later
 * A producer claims a cell by CAS (the claim names its slot, so a dead
 * producer's claims are found and turned into tombstones by its recoverer),
 * then marks the handle RING(r, s), then publishes by CAS.  prod_pos and
 * cons_pos are hints that anyone advances past a cell that is no longer at
 * their stage, so no producer or consumer waits for another's progress,
 * except that consumers stop at a claimed, unpublished cell (a live
 * producer publishes it within instructions; a dead one's is tombstoned by
 * recovery: tm_shm_ring_dequeue reports it as TM_SHM_EBUSY).
 * Consumers take a handle by CAS on its owner word, RING(r, *) -> HELD(c):
 * that CAS is the commit point, so each enqueue is delivered exactly once
 * whatever is killed; a published cell whose handle is no longer marked
 * RING(r) (taken by a consumer that has not retired it yet) is retired by
 * whoever reaches it, and the recovery of a consumer that died in between
 * retires it before it gives the handle back.  So a cell whose handle is
 * marked RING(r) is always that handle's current enqueue.  (A consumer that
 * read a cell, stalled, and finds the handle enqueued again elsewhere may
 * take it there early: still once.) */
#define TM_CELL_FREE 0xFFFFFFFFu
#define TM_CELL_TOMB 0xFFFFFFFEu
#define TM_CELL_RSV(s) (0x80000000u | (uint32_t)(s))
#define TM_CELL_IS_RSV(v) (((v)&0xFFFFF000u) == 0x80000000u)
#define TM_CELL(seq, val) (((uint64_t)(uint32_t)(seq) << 32) | (uint32_t)(val))
#define TM_CELL_SEQ(c) ((uint32_t)((c) >> 32))
#define TM_CELL_VAL(c) ((uint32_t)(c))
#define TM_PRING_MPMC 4u          /* the flags word of a pool ring */
#define TM_PRING_MAX (1u << 24)   /* cells */
#define TM_SHM_SPIN 256           /* re-reads of a claimed cell before EBUSY */

typedef struct tm_shm_pring {
    uint32_t size, mask, capacity, flags; /* geometry, checked on attach */
    uint32_t pad0_[12];
    uint32_t prod_pos; /* next position to claim (a hint, see above) */
    uint32_t pad1_[15];
    uint32_t cons_pos; /* next position to take */
    uint32_t pad2_[15];
    uint64_t cells[];
} tm_shm_pring_t;

static inline size_t tm_shm_pring_memsize(uint32_t capacity) {
    if (capacity == 0 || capacity > TM_PRING_MAX)
        return 0;
    uint32_t size = 1;
    while (size < capacity)
        size <<= 1;
    return sizeof(tm_shm_pring_t) + (size_t)size * sizeof(uint64_t);
}

static inline tm_shm_pring_t *tm_shm_pring(const tm_shm_pool_t *p, uint32_t r) {
    return (tm_shm_pring_t *)(p->rings + (size_t)r * p->ring_stride + sizeof(tm_shm_ringctl_t));
}

static inline int tm_shm_pring_init(tm_shm_pring_t *q, uint32_t capacity) {
    if (tm_shm_pring_memsize(capacity) == 0)
        return TM_SHM_ERANGE;
    uint32_t size = 1;
    while (size < capacity)
        size <<= 1;
    q->size = size;
    q->mask = size - 1;
    q->capacity = capacity;
    q->flags = TM_PRING_MPMC;
    q->prod_pos = q->cons_pos = 0;
    for (uint32_t i = 0; i < size; i++)
        q->cells[i] = TM_CELL(i, TM_CELL_FREE);
    return TM_SHM_OK;
}

/* Handles waiting in ring r (published, not yet taken; a snapshot). */
static inline uint32_t tm_shm_ring_count(const tm_shm_pool_t *p, uint32_t r) {
    tm_shm_pring_t *q = tm_shm_pring(p, r);
    /* ACQUIRE: pair with the CASes that advance them (a snapshot all the same). */
    uint32_t c = __atomic_load_n(&q->cons_pos, __ATOMIC_ACQUIRE);
    uint32_t t = __atomic_load_n(&q->prod_pos, __ATOMIC_ACQUIRE);
    return t - c <= p->ring_mask + 1 ? t - c : 0;
}

/* Claim the cell at prod_pos for slot s.  Returns its position in *pos, 0 on
 * success, 1 if the ring is full there. */
static inline int tm_shm__ring_claim(tm_shm_pool_t *p, tm_shm_pring_t *q, uint32_t s, uint32_t *pos) {
    uint32_t size = p->ring_mask + 1;
    for (int odd = 0;;) {
        /* ACQUIRE: pairs with the RELEASE CASes advancing it (the cell we read next is
         * at least as new as what made the position move). */
        uint32_t t = __atomic_load_n(&q->prod_pos, __ATOMIC_ACQUIRE);
        uint64_t *cell = &q->cells[t & p->ring_mask];
        /* ACQUIRE: pairs with the consumers' retiring CAS (their reads of the slot done). */
        uint64_t c = __atomic_load_n(cell, __ATOMIC_ACQUIRE);
        int32_t d = (int32_t)(TM_CELL_SEQ(c) - t);
        if (d == 0 && TM_CELL_VAL(c) == TM_CELL_FREE) {
            /* ACQ_REL: the claim; it names us, so our recoverer finds it. */
            if (__atomic_compare_exchange_n(cell, &c, TM_CELL(t, TM_CELL_RSV(s)), 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED)) {
                *pos = t; /* before the CAS below, which overwrites t when it fails */
                /* RELEASE: others skip our claimed cell; failure means someone did it for us. */
                __atomic_compare_exchange_n(&q->prod_pos, &t, t + 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
                return 0;
            }
        } else if (d == 1 - (int32_t)size || d == -(int32_t)size) {
            return 1; /* last lap's entry not retired yet: full */
        } else if (d < 0 || (d > 1 && ++odd > 1 << 20)) {
            return -1; /* not a state any process leaves: a scribbled cell or position */
        } else {
            /* Claimed, published or retired at t (or later, after a stale
             * read): position t is taken, move the hint on (a failed CAS:
             * someone else did).  Retired happens when a tombstone of a dead
             * producer was consumed before anyone advanced the hint.
             * RELEASE: as the claimer's advance. */
            __atomic_compare_exchange_n(&q->prod_pos, &t, t + 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
        }
    }
}

/* Enqueue n handles (all or nothing) on ring r as slot s.  Returns n, 0 if
 * there is no room, or a negative error (*bad: offending index). */
static inline long tm_shm_ring_enqueue(tm_shm_pool_t *p, uint32_t r, uint32_t s, const uint32_t *hs,
                                       uint32_t n, uint32_t *bad) {
    tm_shm_pring_t *q = tm_shm_pring(p, r);
    uint32_t pos_buf[64], *pos = n <= 64 ? pos_buf : malloc((size_t)n * sizeof(uint32_t));
    uint32_t i, claimed = 0;
    long rc = (long)n;
    *bad = 0;
    if (n == 0)
        return 0;
    if (!pos)
        return TM_SHM_ENOMEM;
    for (i = 0; i < n; i++) /* refuse what cannot go in before claiming anything */
        if (hs[i] >= p->capacity || TM_OWN_KIND(__atomic_load_n(&p->owner[hs[i]], __ATOMIC_RELAXED)) != TM_K_HELD) {
            *bad = i;
            rc = hs[i] >= p->capacity ? TM_SHM_ERANGE : TM_SHM_ENOTHELD;
            goto out;
        }
    if (n > p->ring_capacity || tm_shm_ring_count(p, r) + n > p->ring_capacity) {
        rc = 0;
        goto out;
    }
    for (; claimed < n; claimed++) {
        int e = tm_shm__ring_claim(p, q, s, &pos[claimed]);
        if (e) {
            rc = e > 0 ? 0 : TM_SHM_ECORRUPT;
            goto give_up;
        }
    }
    for (i = 0; i < n; i++) {
        uint32_t w = __atomic_load_n(&p->owner[hs[i]], __ATOMIC_ACQUIRE); /* pairs with the CASes */
        /* ACQ_REL: against a racing put or recoverer; the mark precedes the
         * publish, so a published handle is always marked. */
        if (TM_OWN_KIND(w) != TM_K_HELD ||
            !__atomic_compare_exchange_n(&p->owner[hs[i]], &w, TM_OWN_RING(r, s), 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED)) {
            for (uint32_t j = 0; j < i; j++) {
                /* Not yet published.  A CAS, not a store: with hs[j] repeated in
                 * a bad call, only the mark we made is ours to undo.  ACQ_REL:
                 * as the mark. */
                uint32_t mine = TM_OWN_RING(r, s);
                __atomic_compare_exchange_n(&p->owner[hs[j]], &mine, TM_OWN_HELD(s), 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED);
            }
            *bad = i;
            rc = TM_SHM_ENOTHELD;
            goto give_up;
        }
    }
    for (i = 0; i < n; i++) {
        uint64_t *cell = &q->cells[pos[i] & p->ring_mask], c = TM_CELL(pos[i], TM_CELL_RSV(s));
        /* ACQ_REL: RELEASE publishes the mark to the consumer's ACQUIRE load
         * of the cell.  Only a recoverer that judged us dead can have changed
         * our claim. */
        if (!__atomic_compare_exchange_n(cell, &c, TM_CELL(pos[i] + 1, hs[i]), 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            rc = TM_SHM_ECORRUPT;
    }
    goto out;
give_up: /* tombstones for the cells claimed: consumers retire them */
    for (i = 0; i < claimed; i++) {
        uint64_t c = TM_CELL(pos[i], TM_CELL_RSV(s));
        /* ACQ_REL: as the publish. */
        __atomic_compare_exchange_n(&q->cells[pos[i] & p->ring_mask], &c, TM_CELL(pos[i] + 1, TM_CELL_TOMB), 0,
                                    __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }
out:
    if (pos != pos_buf)
        free(pos);
    if (rc > 0)
        tm_shm_notify(&tm_shm_ringctl(p, r)->data_seq, &tm_shm_ringctl(p, r)->data_waiters);
    return rc;
}

/* Dequeue up to n handles from ring r as slot s (burst).  Returns how many
 * were written to out (>= 0), TM_SHM_EBUSY if none were and the next cell is
 * claimed by a producer that has not published it for a while (dead, or
 * preempted: the caller recovers dead slots and retries), or a negative
 * error. */
static inline long tm_shm_ring_dequeue(tm_shm_pool_t *p, uint32_t r, uint32_t s, uint32_t *out,
                                       uint32_t n) {
    tm_shm_pring_t *q = tm_shm_pring(p, r);
    uint32_t size = p->ring_mask + 1, got = 0, retired = 0;
    int spins = 0, odd = 0;
    while (got < n) {
        /* ACQUIRE: pairs with the RELEASE CASes advancing it. */
        uint32_t c = __atomic_load_n(&q->cons_pos, __ATOMIC_ACQUIRE);
        uint64_t *cell = &q->cells[c & p->ring_mask];
        /* ACQUIRE: pairs with the producer's publishing CAS (the owner mark). */
        uint64_t v = __atomic_load_n(cell, __ATOMIC_ACQUIRE);
        int32_t d = (int32_t)(TM_CELL_SEQ(v) - c);
        uint32_t h = TM_CELL_VAL(v);
        if (d == 1) {
            if (h < p->capacity) {
                uint32_t w = __atomic_load_n(&p->owner[h], __ATOMIC_ACQUIRE); /* pairs with the mark */
                /* ACQ_REL: the commit point: one taker per enqueue. */
                if (TM_OWN_KIND(w) == TM_K_RING && TM_OWN_RINGNO(w) == r &&
                    __atomic_compare_exchange_n(&p->owner[h], &w, TM_OWN_HELD(s), 0, __ATOMIC_ACQ_REL,
                                                __ATOMIC_RELAXED))
                    out[got++] = h;
            } else if (h != TM_CELL_TOMB) {
                return got ? (long)got : TM_SHM_ECORRUPT;
            }
            /* Retire the cell (ours, a tombstone, or one whose handle is
             * taken).  ACQ_REL: the release half orders our reads of it before
             * a producer's reuse (its ACQUIRE load of the cell).  A failed
             * CAS: someone retired it first. */
            if (__atomic_compare_exchange_n(cell, &v, TM_CELL(c + size, TM_CELL_FREE), 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
                retired++;
            __atomic_compare_exchange_n(&q->cons_pos, &c, c + 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
        } else if (d == (int32_t)size) { /* retired: the position lags */
            __atomic_compare_exchange_n(&q->cons_pos, &c, c + 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
        } else if (d == 0 && TM_CELL_IS_RSV(h)) { /* claimed, not published yet */
            if (got)
                break;
            if (++spins > TM_SHM_SPIN)
                return TM_SHM_EBUSY;
            TM_CPU_RELAX();
        } else if (d == 0 && h == TM_CELL_FREE) {
            break; /* empty */
        } else if (d < 0 || ++odd > 1 << 20) {
            /* Not a state any process leaves: a scribbled cell or position. */
            return got ? (long)got : TM_SHM_ECORRUPT;
        } else {
            /* d > 1: position c was retired and the cell has moved on (or
             * our read of the position was stale): move the hint on.
             * RELEASE: as above; a failed CAS: someone else did. */
            __atomic_compare_exchange_n(&q->cons_pos, &c, c + 1, 0, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
        }
    }
    if (retired)
        tm_shm_notify(&tm_shm_ringctl(p, r)->space_seq, &tm_shm_ringctl(p, r)->space_waiters);
    return (long)got;
}

/* Initialise the control area of a fresh (zeroed) mapping: every object in
 * a magazine, low handles on top. */
static inline int tm_shm_pool_init(tm_shm_pool_t *p, uint32_t ring_capacity) {
    uint32_t b = p->mag_size, loaded = (uint32_t)(((uint64_t)p->capacity + b - 1) / b);
    if (loaded + p->max_slots + 2 > p->nmags || p->nmags > TM_SHM_MAX_MAGS)
        return TM_SHM_ECORRUPT;
    uint32_t top1[TM_DEPOT_STACKS] = {0, 0, 0};
    /* Single-threaded: plain stores, published by the creator's `ready` word.
     * Pushed from the last magazine down, so magazine 0 (handles 0..) is on top. */
    for (uint32_t m = p->nmags; m-- > 0;) {
        uint32_t lo = m < loaded ? m * b : 0, n = 0;
        if (m < loaded)
            n = p->capacity - lo < b ? p->capacity - lo : b;
        uint32_t *hs = tm_shm__mag_hs(p, m);
        for (uint32_t i = 0; i < n; i++) { /* handle lo at the top (popped first) */
            hs[i] = lo + n - 1 - i;
            p->owner[lo + n - 1 - i] = TM_OWN_MAG(m);
        }
        uint32_t k = tm_shm__stack_for(p, n);
        p->mags[m].count = n;
        p->mags[m].next = top1[k];
        p->mags[m].state = TM_M_MAKE(0, TM_M_ON, k);
        top1[k] = m + 1;
    }
    for (uint32_t k = 0; k < TM_DEPOT_STACKS; k++)
        p->ctl->heads[k].word = TM_H_MAKE(0, TM_OP_NONE, 0, top1[k]);
    for (uint32_t r = 0; r < p->nrings; r++)
        if (tm_shm_pring_init(tm_shm_pring(p, r), ring_capacity) != 0)
            return TM_SHM_ECORRUPT;
    return TM_SHM_OK;
}

/* ---- slots ---------------------------------------------------------------- */

/* Claim a free slot for (pid, tid).  Returns the slot or -1 if all are taken. */
static inline long tm_shm_slot_claim(tm_shm_pool_t *p, int32_t pid, int32_t tid, uint64_t start) {
    for (uint32_t s = 0; s < p->max_slots; s++) {
        uint64_t zero = 0;
        /* ACQ_REL: we see the slot as its recoverer left it (its RELEASE). */
        if (__atomic_load_n(&p->slots[s].own, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(&p->slots[s].own, &zero, (uint64_t)(uint32_t)pid, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            p->slots[s].tid = tid;
            p->slots[s].len = 0;
            /* RELEASE: start_time last; 0 until then means "judge by pid only". */
            __atomic_store_n(&p->slots[s].start_time, start, __ATOMIC_RELEASE);
            return (long)s;
        }
    }
    return -1;
}

/* ---- recovery ------------------------------------------------------------ */

/* Finish whatever dead slot x left written in a depot head: afterwards no
 * head names x, until x's recoverer (working as x) writes one. */
static inline void tm_shm__finish_heads(tm_shm_pool_t *p, uint32_t x) {
    for (uint32_t k = 0; k < TM_DEPOT_STACKS; k++)
        for (;;) {
            /* ACQUIRE: as every head load (pairs with the head CASes). */
            uint64_t h = __atomic_load_n(&p->ctl->heads[k].word, __ATOMIC_ACQUIRE);
            if (TM_H_OP(h) == TM_OP_NONE || TM_H_SLOT(h) != x)
                break;
            tm_shm__help(p, k, h);
        }
}

/* The ring half of recovering dead slot x: its claimed, unpublished cells
 * become tombstones; `inring` marks the handles published in ring r and
 * still marked RING(r) there (they stay: consumers take them). */
static inline void tm_shm__recover_rings(tm_shm_pool_t *p, uint32_t x, uint8_t *inring) {
    memset(inring, 0, p->capacity);
    for (uint32_t r = 0; r < p->nrings; r++) {
        tm_shm_pring_t *q = tm_shm_pring(p, r);
        for (uint32_t i = 0; i <= p->ring_mask; i++) {
            /* ACQUIRE: pairs with the publishing CAS (the owner mark before it). */
            uint64_t c = __atomic_load_n(&q->cells[i], __ATOMIC_ACQUIRE);
            uint32_t v = TM_CELL_VAL(c);
            if (v == TM_CELL_RSV(x)) {
                /* ACQ_REL: as a producer giving up its claim. */
                if (__atomic_compare_exchange_n(&q->cells[i], &c, TM_CELL(TM_CELL_SEQ(c) + 1, TM_CELL_TOMB), 0,
                                                __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
                    /* a consumer asleep behind the claim moves on now, not at its next slice */
                    tm_shm_notify(&tm_shm_ringctl(p, r)->data_seq, &tm_shm_ringctl(p, r)->data_waiters);
            } else if (v < p->capacity) {
                uint32_t w = __atomic_load_n(&p->owner[v], __ATOMIC_ACQUIRE); /* pairs with the mark */
                if (w == TM_OWN_HELD(x)) {
                    /* x took v here and died before retiring the cell.  Retire it
                     * now, before step 4 gives v back: a stale cell that outlived
                     * v's return could later be taken for a new enqueue of v (an
                     * unpublished one would then look published, and be lost).
                     * So a cell holding a handle marked RING is always that
                     * handle's current enqueue (models/shmdepot.pml found this).
                     * ACQ_REL: as a consumer's retire. */
                    if (__atomic_compare_exchange_n(&q->cells[i], &c,
                                                    TM_CELL(TM_CELL_SEQ(c) - 1 + p->ring_mask + 1, TM_CELL_FREE),
                                                    0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
                        tm_shm_notify(&tm_shm_ringctl(p, r)->space_seq, &tm_shm_ringctl(p, r)->space_waiters);
                } else if (TM_OWN_KIND(w) == TM_K_RING && TM_OWN_RINGNO(w) == r) {
                    inring[v] = 1;
                }
            }
        }
    }
}

/* Rebuild the magazines OWNED(x) from owner[] (their lists are hints a
 * killed owner may have left half-written) and push each on its stack.
 * `mine` (nmags bytes) is scratch. */
static inline uint64_t tm_shm__return_mags(tm_shm_pool_t *p, uint32_t x, uint8_t *mine) {
    uint64_t n = 0;
    int any = 0;
    for (uint32_t m = 0; m < p->nmags; m++) {
        /* ACQUIRE: pairs with the state CASes (x's pops, finished by helpers). */
        uint64_t w = __atomic_load_n(&p->mags[m].state, __ATOMIC_ACQUIRE);
        mine[m] = TM_M_KIND(w) == TM_M_OWNED && TM_M_WHO(w) == x;
        if (mine[m]) {
            p->mags[m].count = 0;
            any = 1;
        }
    }
    if (!any)
        return 0;
    for (uint32_t h = 0; h < p->capacity; h++) {
        /* RELAXED: MAG(m) of a magazine x owns changes only by x's worker: us. */
        uint32_t w = __atomic_load_n(&p->owner[h], __ATOMIC_RELAXED);
        if (TM_OWN_KIND(w) == TM_K_MAG && w < p->nmags && mine[w] && p->mags[w].count < p->mag_size) {
            tm_shm__mag_hs(p, w)[p->mags[w].count++] = h;
            n++;
        }
    }
    for (uint32_t m = 0; m < p->nmags; m++)
        if (mine[m])
            tm_shm__push(p, tm_shm__stack_for(p, p->mags[m].count), x, m);
    return n;
}

/* Give back everything slot x holds: its magazines, cache and handed-out
 * objects, and its marked but unpublished ring entries.  Run by x's
 * recoverer (which holds x's recovery mark, so it runs alone) working AS x:
 * every magazine it pops is OWNED(x) and every object it moves is marked
 * with x until it lands in a magazine.  So a recoverer killed half-way
 * leaves nothing of its own: the next one redoes this from the start
 * (every step is idempotent), and x owns at most one magazine at a time
 * besides those it had when it died.  Returns the objects made available,
 * or -1 (the slot not released) if the depot had no room. */
static inline int64_t tm_shm__recover_slot(tm_shm_pool_t *p, uint32_t x, uint8_t *inring,
                                            uint8_t *mine) {
    /* 1. Operations x left in the depot heads: finished, so every magazine
     *    x had popped is OWNED(x) and every one it pushed is ON a stack. */
    tm_shm__finish_heads(p, x);
    /* 2. Rings. */
    tm_shm__recover_rings(p, x, inring);
    /* 3. x's magazines, rebuilt from owner[], back on the stacks. */
    int64_t freed = (int64_t)tm_shm__return_mags(p, x, mine);
    /* 4. Every object marked as x's (and not published in a ring) into
     *    magazines. */
    uint32_t pm = TM_SHM_NIL;
    for (uint32_t h = 0; h < p->capacity; h++) {
        /* ACQUIRE: pairs with the CASes that set it. */
        uint32_t w = __atomic_load_n(&p->owner[h], __ATOMIC_ACQUIRE);
        if (TM_OWN_KIND(w) == TM_K_MAG || TM_OWN_SLOT(w) != x ||
            (TM_OWN_KIND(w) == TM_K_RING && inring[h]))
            continue;
        if (pm != TM_SHM_NIL && p->mags[pm].count >= p->mag_size) {
            tm_shm__push(p, TM_DEPOT_FULL, x, pm);
            pm = TM_SHM_NIL;
        }
        if (pm == TM_SHM_NIL && (pm = tm_shm__pop_room(p, x)) == TM_SHM_NIL)
            return -1; /* only a scribbled depot has no room: keep the slot, undone by the caller */
        /* ACQ_REL: a live process putting the same handle races us; one wins. */
        if (__atomic_compare_exchange_n(&p->owner[h], &w, TM_OWN_MAG(pm), 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            tm_shm__mag_hs(p, pm)[p->mags[pm].count++] = h;
            freed++;
        }
    }
    if (pm != TM_SHM_NIL)
        tm_shm__push(p, tm_shm__stack_for(p, p->mags[pm].count), x, pm);
    /* 5. Release the slot (last: it marks the work done). */
    p->slots[x].len = 0;
    __atomic_add_fetch(&p->ctl->recovered, (uint64_t)freed, __ATOMIC_RELAXED); /* a statistic */
    __atomic_store_n(&p->slots[x].start_time, 0, __ATOMIC_RELAXED); /* ordered by the RELEASE below */
    __atomic_store_n(&p->slots[x].rec_start, 0, __ATOMIC_RELAXED);
    /* RELEASE: a new claimant of the slot sees it emptied. */
    __atomic_store_n(&p->slots[x].own, 0, __ATOMIC_RELEASE);
    return freed;
}

/* Take slot s's recovery mark and recover it.  s must still be (pid, start)
 * and marked `rec` (0: nobody recovers it; else the pid of a recoverer the
 * caller found dead).  `me`/`me_start`: the caller's pid and start time,
 * the new mark.  Returns the objects made available, -1 if s changed hands
 * or someone else holds its mark, or a negative error. */
static inline long long tm_shm_recover(tm_shm_pool_t *p, uint32_t s, int32_t pid, uint64_t start,
                                       uint32_t rec, int32_t me, uint64_t me_start) {
    if (s >= p->max_slots || me <= 0)
        return TM_SHM_ERANGE;
    tm_shm_slot_t *sl = &p->slots[s];
    uint64_t want = (uint64_t)(uint32_t)pid | ((uint64_t)rec << 32);
    uint64_t mark = (uint64_t)(uint32_t)pid | ((uint64_t)(uint32_t)me << 32);
    /* ACQ_REL: one recoverer wins; it sees what the dead owner (or dead
     * recoverer) wrote, through their slot CASes and the objects' CASes. */
    if (!__atomic_compare_exchange_n(&sl->own, &want, mark, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return -1;
    /* ACQUIRE: pairs with the claimant's RELEASE store.  A process that
     * reused both the slot and the pid has another start time (or 0 until
     * its store lands): give the mark back untouched. */
    long long freed = -1;
    uint8_t *inring = NULL, *mine = NULL;
    if (__atomic_load_n(&sl->start_time, __ATOMIC_ACQUIRE) == start) {
        /* RELAXED: read only to judge our liveness if we die (0: by pid alone). */
        __atomic_store_n(&sl->rec_start, me_start, __ATOMIC_RELAXED);
        inring = malloc(p->capacity ? p->capacity : 1);
        mine = malloc(p->nmags);
        if (!inring || !mine)
            freed = TM_SHM_ENOMEM;
        else if ((freed = (long long)tm_shm__recover_slot(p, s, inring, mine)) < 0)
            freed = TM_SHM_ECORRUPT; /* the depot had no room: not released */
    }
    if (freed < 0)
        /* Not released: give our mark back, so a later recover() retries.
         * ACQ_REL: undo our own mark only. */
        __atomic_compare_exchange_n(&sl->own, &mark, want, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    free(inring);
    free(mine);
    return freed;
}

/* A live slot detaching (its thread or process is done): give back all it
 * holds, as its recovery would.  It marks itself first, so that if the
 * process dies half-way its slot is recovered like any dead one's. */
static inline long long tm_shm_release(tm_shm_pool_t *p, uint32_t s, int32_t me, uint64_t me_start) {
    if (s >= p->max_slots || me <= 0)
        return TM_SHM_ERANGE;
    return tm_shm_recover(p, s, me, __atomic_load_n(&p->slots[s].start_time, __ATOMIC_ACQUIRE), 0,
                          me, me_start);
}

#endif /* TURBOMEM_SHM_H */
