/* turbomem/shm.h - an object pool and rings that live in one shared mapping,
 * used by several processes at once, and recovered when one of them dies.
 *
 * Everything in the mapping is described by offsets (the header, written and
 * validated by turbomem/shared.py); each process builds its own tm_shm_pool_t
 * of pointers from them.  Nothing in the mapping is a pointer.
 *
 * OWNERSHIP (the single source of truth for crash recovery)
 *   owner[h] says where object h is:
 *     TM_OWN_FREE          on the shared free array (changes only under the lock)
 *     TM_OWN_CACHED(s)     in the cache of slot s (a thread of some process)
 *     TM_OWN_HELD(s)       handed to the user of slot s
 *     TM_OWN_RING(r, s)    enqueued (or being enqueued) on pool ring r by slot s
 *   A slot is one thread of one process: slots[s].pid/tid say which.
 *   Every transition out of HELD/RING is a CAS on owner[h] with the observed
 *   value as expected value, so a live process and a recoverer racing for the
 *   same object never both win.
 *
 * THE SHARED LEVEL is a free array under a process-shared ROBUST mutex.  The
 *   invariant "owner[h] == FREE  <=>  h is on the free array" holds whenever the
 *   lock is free; a holder killed in the middle leaves the lock EOWNERDEAD and
 *   the next locker rebuilds the array from owner[] (tm_shm__rebuild): the
 *   owner word is the commit point of every step, so a kill between any two
 *   steps is repaired.  (Why a lock and not the core's lock-free stack: a
 *   process killed between the read of a stack head and its CAS, or between a
 *   successful pop and the record of who got the object, leaves an object
 *   that no survivor can place; the robust lock turns "killed anywhere" into
 *   one well-defined repair.  The hit path - the per-slot cache - takes no
 *   lock and no atomic RMW on gets.)
 *
 * CACHES live in the mapping (cache s at caches + s * cache_size) and are
 *   touched only by their slot's thread; recovery ignores their contents and
 *   trusts owner[] alone, so a cache killed half-updated is harmless.
 *
 * POOL RINGS are ring.h rings in the mapping, used single-producer /
 *   single-consumer with the producer and consumer recorded (claimed by CAS)
 *   in the ring's control block.  Enqueue marks RING(r, s) before publishing
 *   prod.tail; dequeue claims HELD(c) before publishing cons.tail.  A dead
 *   producer's published handles stay in the ring; its marked but unpublished
 *   ones are freed.  A dead consumer's claimed but unpublished prefix is
 *   skipped (cons.tail advanced over it) and freed.
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
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "arch.h"
#include "ring.h"

#define TM_SHM_MAX_SLOTS 4095u /* slot index fits 12 bits */
#define TM_SHM_MAX_RINGS 256u  /* ring index fits 16 bits */

#define TM_OWN_FREE 0u
#define TM_OWN_KIND(w) ((w) >> 28)
#define TM_OWN_SLOT(w) ((w)&0xFFFu)
#define TM_OWN_RINGNO(w) (((w) >> 12) & 0xFFFFu)
#define TM_OWN_HELD(s) ((1u << 28) | (uint32_t)(s))
#define TM_OWN_CACHED(s) ((2u << 28) | (uint32_t)(s))
#define TM_OWN_RING(r, s) ((3u << 28) | ((uint32_t)(r) << 12) | (uint32_t)(s))
enum { TM_K_FREE = 0, TM_K_HELD = 1, TM_K_CACHED = 2, TM_K_RING = 3 };

/* error codes (negative), beside pool.h's */
#define TM_SHM_OK 0
#define TM_SHM_EEMPTY (-1)
#define TM_SHM_ERANGE (-2)
#define TM_SHM_ENOTHELD (-3)  /* put/enqueue of an object that is not handed out (in a ring) */
#define TM_SHM_EDOUBLEFREE (-4) /* put of an object that is free (or cached, or repeated in the bulk) */
#define TM_SHM_ELOCK (-7)     /* the robust lock failed (not EOWNERDEAD) */
#define TM_SHM_EBUSY (-8)     /* ring side claimed by another live slot */
#define TM_SHM_ECORRUPT (-9)  /* a control word is out of range */

/* Control block: the lock and the free array's top. */
typedef struct tm_shm_ctl {
    pthread_mutex_t lock; /* PTHREAD_PROCESS_SHARED | PTHREAD_MUTEX_ROBUST */
    uint32_t free_top;    /* entries on the free array; under the lock */
    uint32_t rebuilds;    /* repairs after a lock holder died */
    uint64_t recovered;   /* objects given back from dead slots */
    uint32_t live_hint;   /* unused padding word kept for layout stability */
} tm_shm_ctl_t;

/* One per thread of a process using the pool. pid == 0: free slot. */
typedef struct tm_shm_slot {
    int32_t pid;         /* claimed by CAS 0 -> pid (ACQ_REL) */
    int32_t tid;
    uint64_t start_time; /* /proc/pid/stat starttime: guards against pid reuse */
    uint32_t len;        /* cache length, written by the slot's thread only */
    uint32_t pad_[11];
} tm_shm_slot_t;

/* Control of one ring (pool ring or standalone); 128 bytes. */
typedef struct tm_shm_ringctl {
    uint32_t producer;      /* pool rings: slot + 1 of the producer, 0 none */
    uint32_t consumer;      /* pool rings: slot + 1 of the consumer */
    uint32_t pad0_[14];
    uint32_t data_seq;      /* futex: consumers sleep here */
    uint32_t data_waiters;
    uint32_t space_seq;     /* futex: producers sleep here */
    uint32_t space_waiters;
    uint32_t pad1_[12];
} tm_shm_ringctl_t;

/* Per-process view of a pool mapping. */
typedef struct tm_shm_pool {
    tm_shm_ctl_t *ctl;
    uint32_t *free_arr;
    uint32_t *owner;
    tm_shm_slot_t *slots;
    uint32_t *caches;
    unsigned char *rings;  /* nrings * ring_stride bytes: ringctl then ring.h ring */
    size_t ring_stride;
    uint32_t capacity, cache_size, max_slots, nrings;
    /* Ring geometry from the validated header, never re-read from the mapping:
     * a scribbled mask or capacity must not steer an index out of bounds. */
    uint32_t ring_capacity, ring_mask;
} tm_shm_pool_t;

static inline tm_shm_ringctl_t *tm_shm_ringctl(const tm_shm_pool_t *p, uint32_t r) {
    return (tm_shm_ringctl_t *)(p->rings + (size_t)r * p->ring_stride);
}
static inline tm_ring_t *tm_shm_ring(const tm_shm_pool_t *p, uint32_t r) {
    return (tm_ring_t *)(p->rings + (size_t)r * p->ring_stride + sizeof(tm_shm_ringctl_t));
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

/* ---- the robust lock --------------------------------------------------- */

/* Rebuild the free array from owner[] (lock held, previous holder died). */
static inline void tm_shm__rebuild(tm_shm_pool_t *p) {
    uint32_t top = 0;
    for (uint32_t h = 0; h < p->capacity; h++)
        /* RELAXED: under the lock; the dead holder's stores are visible (the
         * kernel's robust-list handling happens before our lock returns). */
        if (__atomic_load_n(&p->owner[h], __ATOMIC_RELAXED) == TM_OWN_FREE)
            p->free_arr[top++] = h;
    p->ctl->free_top = top;
    p->ctl->rebuilds++;
}

static inline int tm_shm_lock(tm_shm_pool_t *p) {
    int rc = pthread_mutex_lock(&p->ctl->lock);
    if (rc == EOWNERDEAD) {
        tm_shm__rebuild(p);
        pthread_mutex_consistent(&p->ctl->lock);
        return 0;
    }
    return rc == 0 ? 0 : TM_SHM_ELOCK;
}
static inline void tm_shm_unlock(tm_shm_pool_t *p) { pthread_mutex_unlock(&p->ctl->lock); }

/* Initialise the control area of a fresh (zeroed) mapping. */
static inline int tm_shm_pool_init(tm_shm_pool_t *p, uint32_t ring_capacity) {
    pthread_mutexattr_t a;
    if (pthread_mutexattr_init(&a) != 0)
        return TM_SHM_ELOCK;
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int rc = pthread_mutex_init(&p->ctl->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (rc != 0)
        return TM_SHM_ELOCK;
    for (uint32_t h = 0; h < p->capacity; h++) {
        p->free_arr[h] = p->capacity - 1 - h; /* low handles handed out first */
        p->owner[h] = TM_OWN_FREE;
    }
    p->ctl->free_top = p->capacity;
    for (uint32_t r = 0; r < p->nrings; r++)
        if (tm_ring_init(tm_shm_ring(p, r), ring_capacity, TM_RING_SP | TM_RING_SC) != 0)
            return TM_SHM_ECORRUPT;
    return TM_SHM_OK;
}

/* ---- get / put ----------------------------------------------------------- */

/* Move up to n objects from the free array to dst, marking them as `mark`.
 * Lock held.  Returns how many. */
static inline uint32_t tm_shm__take(tm_shm_pool_t *p, uint32_t *dst, uint32_t n, uint32_t mark) {
    uint32_t top = p->ctl->free_top, got = 0;
    if (top > p->capacity) /* a scribbled control word: repair, never index past */
        tm_shm__rebuild(p), top = p->ctl->free_top;
    while (got < n && top > 0) {
        uint32_t h = p->free_arr[top - 1];
        /* RELAXED: FREE is written only under the lock we hold. */
        if (h >= p->capacity || __atomic_load_n(&p->owner[h], __ATOMIC_RELAXED) != TM_OWN_FREE) {
            tm_shm__rebuild(p); /* the array disagrees with owner[]: owner[] wins */
            top = p->ctl->free_top;
            continue;
        }
        /* RELAXED: the commit point; under the lock, read by recovery under it. */
        __atomic_store_n(&p->owner[h], mark, __ATOMIC_RELAXED);
        top--;
        p->ctl->free_top = top;
        dst[got++] = h;
    }
    return got;
}

/* Give the objects in src back to the free array (each must be marked
 * `expect`; others are skipped).  Lock held. */
static inline void tm_shm__give(tm_shm_pool_t *p, const uint32_t *src, uint32_t n, uint32_t expect) {
    for (uint32_t i = 0; i < n; i++) {
        uint32_t h = src[i], e = expect;
        if (h >= p->capacity)
            continue;
        /* ACQ_REL: only one of racing owners (or a recoverer) frees h. */
        if (!__atomic_compare_exchange_n(&p->owner[h], &e, TM_OWN_FREE, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            continue;
        if (p->ctl->free_top >= p->capacity) { /* cannot happen unless scribbled */
            tm_shm__rebuild(p);
            continue;
        }
        p->free_arr[p->ctl->free_top++] = h;
    }
}

/* Get n objects (all or nothing) for slot s.  cache may be NULL (no cache). */
static inline int tm_shm_get_bulk(tm_shm_pool_t *p, uint32_t s, uint32_t *out, uint32_t n) {
    tm_shm_slot_t *sl = &p->slots[s];
    uint32_t *cache = p->cache_size ? p->caches + (size_t)s * p->cache_size : NULL;
    uint32_t len = sl->len;
    if (len > p->cache_size) /* scribbled: forget the cache, owner[] keeps the truth */
        len = sl->len = 0;
    if (cache && n <= len) {
        for (uint32_t i = 0; i < n; i++) {
            uint32_t h = cache[len - 1 - i];
            if (h >= p->capacity)
                return TM_SHM_ECORRUPT;
            /* RELAXED: the slot's own object; recovery reads it after death. */
            __atomic_store_n(&p->owner[h], TM_OWN_HELD(s), __ATOMIC_RELAXED);
            out[i] = h;
        }
        sl->len = len - n;
        return TM_SHM_OK;
    }
    if (tm_shm_lock(p) != 0)
        return TM_SHM_ELOCK;
    /* First what the cache has, then the free array; refill the cache. */
    int rc = TM_SHM_OK;
    uint32_t from_cache = n <= len ? n : len;
    for (uint32_t i = 0; cache && i < from_cache; i++)
        if (cache[len - 1 - i] >= p->capacity) { /* scribbled: drop the cache (owner[] keeps the truth) */
            len = from_cache = 0;
            break;
        }
    if (p->ctl->free_top < n - from_cache) {
        rc = TM_SHM_EEMPTY;
    } else {
        uint32_t got = tm_shm__take(p, out + from_cache, n - from_cache, TM_OWN_HELD(s));
        if (got < n - from_cache) { /* a rebuild shrank the array: undo */
            tm_shm__give(p, out + from_cache, got, TM_OWN_HELD(s));
            rc = TM_SHM_EEMPTY;
        } else {
            for (uint32_t i = 0; i < from_cache; i++) {
                uint32_t h = cache[len - 1 - i];
                /* RELAXED: our own cached object (as on the hit path). */
                __atomic_store_n(&p->owner[h], TM_OWN_HELD(s), __ATOMIC_RELAXED);
                out[i] = h;
            }
            len -= from_cache;
            if (cache) { /* refill to half */
                uint32_t want = p->cache_size / 2 > len ? p->cache_size / 2 - len : 0;
                len += tm_shm__take(p, cache + len, want, TM_OWN_CACHED(s));
            }
            sl->len = len;
        }
    }
    tm_shm_unlock(p);
    return rc;
}

/* Put n objects back for slot s.  Each must be handed out (HELD by any slot);
 * on error nothing is returned and *bad is the index of the offender. */
static inline int tm_shm_put_bulk(tm_shm_pool_t *p, uint32_t s, const uint32_t *hs, uint32_t n,
                                  uint32_t *bad) {
    tm_shm_slot_t *sl = &p->slots[s];
    uint32_t *cache = p->cache_size ? p->caches + (size_t)s * p->cache_size : NULL;
    uint32_t i, why = TM_K_HELD;
    for (i = 0; i < n; i++) {
        uint32_t h = hs[i], w;
        if (h >= p->capacity) {
            *bad = i;
            goto undo_range;
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
            goto undo_held;
        }
    }
    uint32_t len = sl->len;
    if (len > p->cache_size)
        len = 0;
    if (cache && len + n <= p->cache_size) {
        memcpy(cache + len, hs, (size_t)n * sizeof(uint32_t));
        sl->len = len + n;
        return TM_SHM_OK;
    }
    if (tm_shm_lock(p) != 0) {
        *bad = 0;
        i = n;
        goto undo_held;
    }
    tm_shm__give(p, hs, n, TM_OWN_CACHED(s));
    if (cache && len > p->cache_size / 2) { /* flush down to half */
        uint32_t keep = p->cache_size / 2;
        tm_shm__give(p, cache + keep, len - keep, TM_OWN_CACHED(s));
        len = keep;
    }
    if (cache)
        sl->len = len;
    tm_shm_unlock(p);
    return TM_SHM_OK;
undo_held:
    for (uint32_t j = 0; j < i; j++) /* RELAXED: still ours (marked CACHED(s)) */
        __atomic_store_n(&p->owner[hs[j]], TM_OWN_HELD(s), __ATOMIC_RELAXED);
    if (hs[*bad] >= p->capacity)
        return TM_SHM_ERANGE;
    return (why == TM_K_FREE || why == TM_K_CACHED) ? TM_SHM_EDOUBLEFREE : TM_SHM_ENOTHELD;
undo_range:
    for (uint32_t j = 0; j < i; j++) /* RELAXED: still ours (marked CACHED(s) by us) */
        __atomic_store_n(&p->owner[hs[j]], TM_OWN_HELD(s), __ATOMIC_RELAXED);
    return TM_SHM_ERANGE;
}

/* Return slot s's cache to the free array (a thread or process detaching). */
static inline int tm_shm_flush(tm_shm_pool_t *p, uint32_t s) {
    if (!p->cache_size)
        return TM_SHM_OK;
    if (tm_shm_lock(p) != 0)
        return TM_SHM_ELOCK;
    uint32_t len = p->slots[s].len;
    if (len > p->cache_size)
        len = 0;
    tm_shm__give(p, p->caches + (size_t)s * p->cache_size, len, TM_OWN_CACHED(s));
    p->slots[s].len = 0;
    tm_shm_unlock(p);
    return TM_SHM_OK;
}

/* ---- pool rings (single producer, single consumer; ownership-marking) ---- */

/* Claim side (producer/consumer word) for slot s.  TM_SHM_EBUSY if another slot
 * holds it (the caller may recover dead slots and retry). */
static inline int tm_shm__claim(uint32_t *side, uint32_t s) {
    uint32_t cur = __atomic_load_n(side, __ATOMIC_ACQUIRE); /* pairs with the release below */
    if (cur == s + 1)
        return TM_SHM_OK;
    uint32_t zero = 0;
    /* ACQ_REL: the new holder sees the ring state the previous holder left. */
    if (cur == 0 && __atomic_compare_exchange_n(side, &zero, s + 1, 0, __ATOMIC_ACQ_REL,
                                                __ATOMIC_ACQUIRE))
        return TM_SHM_OK;
    return TM_SHM_EBUSY;
}

/* Enqueue n handles (all or nothing) on ring r as slot s.  Returns n, 0 if
 * there is no room, or a negative error (*bad: offending index). */
static inline long tm_shm_ring_enqueue(tm_shm_pool_t *p, uint32_t r, uint32_t s, const uint32_t *hs,
                                       uint32_t n, uint32_t *bad) {
    tm_shm_ringctl_t *rc = tm_shm_ringctl(p, r);
    tm_ring_t *ring = tm_shm_ring(p, r);
    int e = tm_shm__claim(&rc->producer, s);
    if (e)
        return e;
    /* RELAXED: only the producer writes prod.tail. */
    uint32_t t = __atomic_load_n(&ring->prod.tail, __ATOMIC_RELAXED);
    /* ACQUIRE: the consumer's slot reads are done before we overwrite (ring.h A). */
    uint32_t ct = __atomic_load_n(&ring->cons.tail, __ATOMIC_ACQUIRE);
    uint32_t free_ = p->ring_capacity + ct - t;
    if (free_ > p->ring_capacity) /* scribbled counters */
        return TM_SHM_ECORRUPT;
    if (n > free_)
        return 0;
    uint32_t i;
    for (i = 0; i < n; i++) {
        uint32_t h = hs[i], w;
        if (h >= p->capacity) {
            *bad = i;
            goto undo;
        }
        w = __atomic_load_n(&p->owner[h], __ATOMIC_ACQUIRE); /* pairs with the CASes */
        /* ACQ_REL: wins against a racing put or recoverer. */
        if (TM_OWN_KIND(w) != TM_K_HELD ||
            !__atomic_compare_exchange_n(&p->owner[h], &w, TM_OWN_RING(r, s), 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED)) {
            *bad = i;
            goto undo;
        }
        /* RELAXED slot store: published by the RELEASE tail store below. */
        TM_RING__SLOT_STORE(&ring->slots[(t + i) & p->ring_mask], h);
    }
    __atomic_store_n(&ring->prod.head, t + n, __ATOMIC_RELAXED); /* informational for SP */
    /* RELEASE: slots and RING marks visible to the consumer's ACQUIRE (ring.h A). */
    __atomic_store_n(&ring->prod.tail, t + n, __ATOMIC_RELEASE);
    tm_shm_notify(&rc->data_seq, &rc->data_waiters);
    return n;
undo:
    for (uint32_t j = 0; j < i; j++) /* RELAXED: not yet published, still ours */
        __atomic_store_n(&p->owner[hs[j]], TM_OWN_HELD(s), __ATOMIC_RELAXED);
    return hs[*bad] >= p->capacity ? TM_SHM_ERANGE : TM_SHM_ENOTHELD;
}

/* Dequeue up to n handles from ring r as slot s (burst).  Entries whose mark is
 * no longer RING (recovered after their producer died mid-enqueue, or
 * scribbled) are skipped.  Returns how many were written to out (>= 0) or a
 * negative error. */
static inline long tm_shm_ring_dequeue(tm_shm_pool_t *p, uint32_t r, uint32_t s, uint32_t *out,
                                       uint32_t n) {
    tm_shm_ringctl_t *rc = tm_shm_ringctl(p, r);
    tm_ring_t *ring = tm_shm_ring(p, r);
    int e = tm_shm__claim(&rc->consumer, s);
    if (e)
        return e;
    uint32_t c = __atomic_load_n(&ring->cons.tail, __ATOMIC_RELAXED); /* ours alone */
    /* ACQUIRE: pairs with the producer's RELEASE tail store (ring.h A). */
    uint32_t pt = __atomic_load_n(&ring->prod.tail, __ATOMIC_ACQUIRE);
    uint32_t avail = pt - c, got = 0, i;
    if (avail > p->ring_capacity)
        return TM_SHM_ECORRUPT;
    if (n > avail)
        n = avail;
    for (i = 0; i < n; i++) {
        uint32_t h = TM_RING__SLOT_LOAD(&ring->slots[(c + i) & p->ring_mask]);
        if (h >= p->capacity)
            continue;
        uint32_t w = __atomic_load_n(&p->owner[h], __ATOMIC_ACQUIRE);
        if (TM_OWN_KIND(w) != TM_K_RING || TM_OWN_RINGNO(w) != r)
            continue;
        /* ACQ_REL: claim before cons.tail moves, so recovery sees the entry
         * either still in the ring or already claimed. */
        if (__atomic_compare_exchange_n(&p->owner[h], &w, TM_OWN_HELD(s), 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            out[got++] = h;
    }
    __atomic_store_n(&ring->cons.head, c + n, __ATOMIC_RELAXED); /* informational for SC */
    /* RELEASE: our slot reads and claims are done before the producer reuses them. */
    __atomic_store_n(&ring->cons.tail, c + n, __ATOMIC_RELEASE);
    if (n)
        tm_shm_notify(&rc->space_seq, &rc->space_waiters);
    return got;
}

/* ---- slots ---------------------------------------------------------------- */

/* Claim a free slot for (pid, tid).  Returns the slot or -1 if all are taken. */
static inline long tm_shm_slot_claim(tm_shm_pool_t *p, int32_t pid, int32_t tid, uint64_t start) {
    for (uint32_t s = 0; s < p->max_slots; s++) {
        int32_t zero = 0;
        /* ACQ_REL: we see the slot as its recoverer left it (its RELEASE). */
        if (__atomic_load_n(&p->slots[s].pid, __ATOMIC_RELAXED) == 0 &&
            __atomic_compare_exchange_n(&p->slots[s].pid, &zero, pid, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
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

/* Give back everything dead slot s held.  Lock held by the caller.  Idempotent:
 * a recoverer killed half-way leaves work the next one finishes.  Returns the
 * number of objects freed. */
static inline uint64_t tm_shm__recover_slot(tm_shm_pool_t *p, uint32_t s, uint8_t *inring) {
    uint64_t freed = 0;
    /* 1. Rings s consumed: skip the prefix it claimed but did not release. */
    for (uint32_t r = 0; r < p->nrings; r++) {
        tm_shm_ringctl_t *rc = tm_shm_ringctl(p, r);
        tm_ring_t *ring = tm_shm_ring(p, r);
        /* ACQUIRE: pairs with the consumer's ACQ_REL claim of the side. */
        if (__atomic_load_n(&rc->consumer, __ATOMIC_ACQUIRE) != s + 1)
            continue;
        /* RELAXED: the consumer is dead, nobody else writes cons.tail now. */
        uint32_t c = __atomic_load_n(&ring->cons.tail, __ATOMIC_RELAXED);
        /* ACQUIRE: pairs with the producer's RELEASE tail store (slots visible). */
        uint32_t pt = __atomic_load_n(&ring->prod.tail, __ATOMIC_ACQUIRE);
        while (c != pt && pt - c <= p->ring_capacity) {
            uint32_t h = TM_RING__SLOT_LOAD(&ring->slots[c & p->ring_mask]);
            /* ACQUIRE: pairs with the dead consumer's ACQ_REL claim CAS. */
            if (h < p->capacity && __atomic_load_n(&p->owner[h], __ATOMIC_ACQUIRE) == TM_OWN_HELD(s))
                c++;
            else
                break;
        }
        __atomic_store_n(&ring->cons.head, c, __ATOMIC_RELAXED); /* informational for SC */
        __atomic_store_n(&ring->cons.tail, c, __ATOMIC_RELEASE); /* pairs with producers' ACQUIRE */
    }
    /* 2. Which handles sit published in rings s produced: those stay. */
    memset(inring, 0, p->capacity);
    for (uint32_t r = 0; r < p->nrings; r++) {
        tm_shm_ringctl_t *rc = tm_shm_ringctl(p, r);
        tm_ring_t *ring = tm_shm_ring(p, r);
        /* ACQUIRE: a consumer's claims precede its RELEASE cons.tail store. */
        uint32_t c = __atomic_load_n(&ring->cons.tail, __ATOMIC_ACQUIRE);
        uint32_t pt = __atomic_load_n(&ring->prod.tail, __ATOMIC_ACQUIRE);
        if (pt - c > p->ring_capacity)
            continue;
        for (; c != pt; c++) {
            uint32_t h = TM_RING__SLOT_LOAD(&ring->slots[c & p->ring_mask]);
            if (h < p->capacity)
                inring[h] = 1;
        }
        (void)rc;
    }
    /* 3. Every object marked as s's (and not published in a ring) goes back. */
    for (uint32_t h = 0; h < p->capacity; h++) {
        /* ACQUIRE: pairs with the CASes that set it; tm_shm__give re-checks by CAS. */
        uint32_t w = __atomic_load_n(&p->owner[h], __ATOMIC_ACQUIRE);
        if (w == TM_OWN_FREE || TM_OWN_SLOT(w) != s)
            continue;
        if (TM_OWN_KIND(w) == TM_K_RING && inring[h])
            continue;
        if (TM_OWN_KIND(w) == TM_K_HELD || TM_OWN_KIND(w) == TM_K_CACHED ||
            TM_OWN_KIND(w) == TM_K_RING) {
            uint32_t before = p->ctl->free_top;
            tm_shm__give(p, &h, 1, w);
            freed += p->ctl->free_top != before;
        }
    }
    /* 4. Release the ring sides and the slot (last: it marks the work done). */
    for (uint32_t r = 0; r < p->nrings; r++) {
        tm_shm_ringctl_t *rc = tm_shm_ringctl(p, r);
        uint32_t mine = s + 1;
        /* ACQ_REL: release the side only if the dead slot still holds it; the
         * next claimant's ACQ_REL CAS sees the ring as recovery left it. */
        __atomic_compare_exchange_n(&rc->producer, &mine, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
        mine = s + 1;
        __atomic_compare_exchange_n(&rc->consumer, &mine, 0, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
    }
    p->slots[s].len = 0;
    p->ctl->recovered += freed;
    __atomic_store_n(&p->slots[s].start_time, 0, __ATOMIC_RELAXED); /* ordered by the RELEASE below */
    /* RELEASE: a new claimant of the slot sees it emptied. */
    __atomic_store_n(&p->slots[s].pid, 0, __ATOMIC_RELEASE);
    return freed;
}

/* Recover slot s if it still belongs to (pid, start): two recoverers that both
 * judged it dead must not free the objects of a process that claimed it since.
 * Returns objects freed, or -1 if the slot changed hands, or a lock error. */
static inline long long tm_shm_recover(tm_shm_pool_t *p, uint32_t s, int32_t pid, uint64_t start,
                                       uint8_t *inring) {
    if (s >= p->max_slots)
        return TM_SHM_ERANGE;
    if (tm_shm_lock(p) != 0)
        return TM_SHM_ELOCK;
    long long freed = -1;
    /* ACQUIRE: pair with the claimant's ACQ_REL pid CAS and RELEASE start_time store. */
    if (__atomic_load_n(&p->slots[s].pid, __ATOMIC_ACQUIRE) == pid &&
        __atomic_load_n(&p->slots[s].start_time, __ATOMIC_ACQUIRE) == start)
        freed = (long long)tm_shm__recover_slot(p, s, inring);
    tm_shm_unlock(p);
    return freed;
}

#endif /* TURBOMEM_SHM_H */
