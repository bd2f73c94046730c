/* turbomem/stack.h - a lock-free LIFO of 32-bit object indices.
 *
 * CONCURRENCY CONTRACT
 *   Any number of threads may call any tm_stack_* function on the same stack at
 *   the same time (multi-producer, multi-consumer).  tm_stack_init() must finish
 *   before the stack is shared.  The stack is lock-free: a thread that fails its
 *   compare-and-swap does so only because another thread's succeeded.
 *
 * LAYOUT
 *   `head` is one 64-bit word: the low 32 bits are the index on top of the
 *   stack (TM_NIL when empty), the high 32 bits an ABA tag.  The links live out
 *   of band in `next[capacity]`, never inside the objects, so the stack never
 *   writes (or faults in) object memory, and a pop that reads a stale link only
 *   ever reads this array, which lives as long as the stack.
 *
 * WHY ABA CANNOT CORRUPT THE STACK
 *   Every successful update (push or pop) stores tag + 1.  A pop reads
 *   head = (tag, top) and next[top], then swings head from (tag, top) to
 *   (tag + 1, next[top]).  If, between the read and the CAS, `top` was popped
 *   and pushed back (the classic ABA interleaving), the tag has moved on and the
 *   CAS fails, so a stale next[top] is never installed.  The only way to defeat
 *   this is for exactly 2^32 successful updates to happen while one thread sits
 *   between its load and its CAS; at one update per nanosecond that is a thread
 *   preempted for more than four seconds at exactly the wrong instruction AND a
 *   wrap landing on the same value.  We accept that bound (as does every 64-bit
 *   tagged-pointer stack without a 128-bit CAS) and state it here.
 *
 * MEMORY ORDERING (every atomic names its order and what it pairs with)
 *   next[i] stores/loads: RELAXED.  They are published and consumed through
 *     head: a pusher writes next[] before its RELEASE CAS on head; a popper
 *     reads next[] after its ACQUIRE load of head.  Stale reads are harmless
 *     (see ABA above) and are atomic so that they are not data races.
 *   push CAS on head: success RELEASE - pairs with the ACQUIRE load/CAS in pop,
 *     so the popper sees the links and every write the pusher made to the
 *     object before pushing it.  failure RELAXED - on failure we only need the
 *     new top index to relink, no data behind it.
 *   pop load of head and pop CAS: ACQUIRE (success and failure) - pairs with
 *     the pusher's RELEASE CAS.  Every update of head is a read-modify-write, so
 *     the release sequences of all earlier pushes continue through every later
 *     CAS: one acquire read of head sees the links of every index below it.
 *
 * ALL-OR-NOTHING BULK POP
 *   tm_stack_pop_bulk walks n links from the top.  If it meets the bottom
 *   before n, it re-reads head: an unchanged head (same tag) means no update
 *   happened during the walk, so the walk saw the real stack and it truly holds
 *   fewer than n; a changed head means the walk may have followed stale links,
 *   so it retries.  It therefore never reports "not enough" falsely.
 */
#ifndef TURBOMEM_STACK_H
#define TURBOMEM_STACK_H

#include <stdint.h>
#include "arch.h"

#define TM_NIL UINT32_MAX

typedef struct tm_stack {
    uint32_t *next;    /* out-of-band links, read-only pointer after init */
    uint32_t capacity; /* indices are in [0, capacity) */
    /* head sits alone on its cache line: it is the one contended word. */
    uint64_t head TM_ALIGNED(TM_CACHE_LINE);
    char pad_[TM_CACHE_LINE - sizeof(uint64_t)];
} tm_stack_t;

static inline uint64_t tm_stack_pack_(uint64_t tag, uint32_t top) {
    return (tag << 32) | top;
}

/* Empty stack over a caller-owned link array of `capacity` entries. */
static inline void tm_stack_init(tm_stack_t *s, uint32_t *next, uint32_t capacity) {
    s->next = next;
    s->capacity = capacity;
    for (uint32_t i = 0; i < capacity; i++)
        next[i] = TM_NIL; /* before sharing: plain stores are fine */
    s->head = tm_stack_pack_(0, TM_NIL);
}

/* Push the chain first -> ... -> last whose inner links are already set.
 * One CAS for the whole chain.  Returns the number of failed CAS attempts. */
static inline uint32_t tm_stack_push_chain(tm_stack_t *s, uint32_t first, uint32_t last) {
    uint32_t retries = 0;
    /* RELAXED: the CAS below re-validates the value; no data is read through it. */
    uint64_t old = __atomic_load_n(&s->head, __ATOMIC_RELAXED);
    for (;;) {
        /* RELAXED: published by the RELEASE CAS below. */
        __atomic_store_n(&s->next[last], (uint32_t)old, __ATOMIC_RELAXED);
        uint64_t new_head = tm_stack_pack_((old >> 32) + 1, first);
        /* success RELEASE: pairs with pop's ACQUIRE, publishing the links and
         * the objects' contents.  failure RELAXED: only the top index is used. */
        if (__atomic_compare_exchange_n(&s->head, &old, new_head, 1,
                                        __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            return retries;
        retries++;
    }
}

static inline uint32_t tm_stack_push(tm_stack_t *s, uint32_t idx) {
    return tm_stack_push_chain(s, idx, idx);
}

/* Push n >= 1 indices (they become a chain in array order, objs[0] on top). */
static inline uint32_t tm_stack_push_bulk(tm_stack_t *s, const uint32_t *objs, uint32_t n) {
    for (uint32_t i = 0; i + 1 < n; i++)
        /* RELAXED: we own these indices; the RELEASE CAS in push_chain publishes. */
        __atomic_store_n(&s->next[objs[i]], objs[i + 1], __ATOMIC_RELAXED);
    return tm_stack_push_chain(s, objs[0], objs[n - 1]);
}

/* Pop exactly n >= 1 indices into objs, or nothing.  Returns 1 on success, 0
 * when the stack holds fewer than n.  *retries counts failed CAS attempts. */
static inline int tm_stack_pop_bulk(tm_stack_t *s, uint32_t *objs, uint32_t n, uint32_t *retries) {
    uint32_t *next = s->next;
    /* ACQUIRE: pairs with the pushers' RELEASE CAS (see header comment). */
    uint64_t old = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t cur = (uint32_t)old;
        if (cur == TM_NIL)
            return 0; /* read atomically: truly empty at that instant */
        objs[0] = cur;
        uint32_t got = 1;
        while (got < n) {
            cur = __atomic_load_n(&next[cur], __ATOMIC_RELAXED); /* may be stale */
            if (cur == TM_NIL)
                break;
            objs[got++] = cur;
        }
        if (got < n) {
            /* ACQUIRE: same pairing as the first load. */
            uint64_t now = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
            if (now == old)
                return 0; /* no update during the walk: the stack really is short */
            old = now;
            continue;
        }
        uint32_t below = __atomic_load_n(&next[cur], __ATOMIC_RELAXED); /* may be stale */
        uint64_t new_head = tm_stack_pack_((old >> 32) + 1, below);
        /* success ACQUIRE: we now own objs[]; the value equals the one loaded with
         * acquire.  failure ACQUIRE: `old` is reloaded and walked again. */
        if (__atomic_compare_exchange_n(&s->head, &old, new_head, 1,
                                        __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
            return 1;
        (*retries)++;
    }
}

/* Pop one index: tm_stack_pop_bulk(s, idx, 1, retries) without the walk. */
static inline int tm_stack_pop(tm_stack_t *s, uint32_t *idx, uint32_t *retries) {
    /* ACQUIRE: pairs with the pushers' RELEASE CAS (see header comment). */
    uint64_t old = __atomic_load_n(&s->head, __ATOMIC_ACQUIRE);
    for (;;) {
        uint32_t top = (uint32_t)old;
        if (top == TM_NIL)
            return 0; /* read atomically: truly empty at that instant */
        uint32_t below = __atomic_load_n(&s->next[top], __ATOMIC_RELAXED); /* may be stale */
        /* success and failure ACQUIRE: as in tm_stack_pop_bulk. */
        if (__atomic_compare_exchange_n(&s->head, &old, tm_stack_pack_((old >> 32) + 1, below), 1,
                                        __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE)) {
            *idx = top;
            return 1;
        }
        (*retries)++;
    }
}

#endif /* TURBOMEM_STACK_H */
