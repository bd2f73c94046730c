/* depot.pml - the magazine depot of src/pool.c: blocks of handles moving
 * between thread caches and the shared level.
 *
 * Magazines 0..NM-1, each M slots (mag[m*M + i]).  Two tagged stacks of
 * magazine indices, `full` and `empty`, share one link array (a magazine is
 * on at most one stack: stack.h's protocol, modelled as in stack.pml).  Each
 * thread has a cache (up to REFILLS * M objects) and keeps up to SPARES empty
 * magazines (`spares`, TM_CACHE_SPARES in cache.h), as in pool.c:
 *   refill: pop full -> copy its M slots out, one at a time (memcpy is not
 *           atomic) -> keep the magazine as a spare, or push it on `empty`;
 *   flush:  take a spare, or pop `empty` -> write M slots -> push on `full`.
 * Each round refills up to REFILLS times, then flushes everything, so a
 * thread holds several magazines' worth and several spares at once (with
 * SPARES < REFILLS it also pushes on `empty` after keeping a spare).
 * Checked: an object is never in two threads' hands at once (ghost `holder`),
 * and at the end every object is in exactly one full magazine, every
 * magazine on exactly one stack (spares returned).
 *
 * Sizes (-D): THREADS (2), REFILLS magazines a round (2), SPARES kept (1).
 * Variants (-D):  (none)        the protocol as shipped: must hold
 *                 UNTAGGED      CAS on the index only (ABA): must FAIL
 *                 RECYCLE_EARLY push the emptied magazine before copying its
 *                               contents out: must FAIL
 */
#define M 2
#define NM 3
#define NOBJ 4          /* two full magazines, one empty */
#define NIL 255
#ifndef THREADS
#define THREADS 2
#endif
#define ROUNDS 2
#ifndef REFILLS
#define REFILLS 2
#endif
#ifndef SPARES
#define SPARES 1
#endif

byte mag[NM * M];
byte nxt[NM];
byte ftag = 0, ftop = 0;      /* full stack head */
byte etag = 0, etop = 0;      /* empty stack head */
byte holder[NOBJ];            /* ghost: 0 free in a magazine, t+1 held by thread t */
byte done = 0;

/* CAS on one of the two heads (which = 0: full, 1: empty). */
inline cas_head(which, otag, otop, ntop, ok) {
    atomic {
        if
        :: which == 0 ->
#ifdef UNTAGGED
            if :: ftop == otop -> ftop = ntop; ftag++; ok = 1 :: else -> ok = 0 fi
#else
            if :: ftag == otag && ftop == otop -> ftop = ntop; ftag++; ok = 1 :: else -> ok = 0 fi
#endif
        :: else ->
#ifdef UNTAGGED
            if :: etop == otop -> etop = ntop; etag++; ok = 1 :: else -> ok = 0 fi
#else
            if :: etag == otag && etop == otop -> etop = ntop; etag++; ok = 1 :: else -> ok = 0 fi
#endif
        fi
    }
}

inline pop(which, res) {
    ok = 0;
    do
    :: ok -> break
    :: else ->
        atomic { if :: which == 0 -> otag = ftag; otop = ftop :: else -> otag = etag; otop = etop fi };
        if
        :: otop == NIL -> res = NIL; break
        :: else ->
            below = nxt[otop];            /* may be stale */
            cas_head(which, otag, otop, below, ok);
            if :: ok -> res = otop :: else -> skip fi
        fi
    od
}

inline push(which, idx) {
    ok = 0;
    do
    :: ok -> break
    :: else ->
        atomic { if :: which == 0 -> otag = ftag; otop = ftop :: else -> otag = etag; otop = etop fi };
        nxt[idx] = otop;
        cas_head(which, otag, otop, idx, ok)
    od
}

proctype worker(byte me) {
    byte otag, otop, below, m, i, o, r, k, n = 0, ns = 0;
    byte cache[REFILLS * M];
    byte spares[SPARES];
    bool ok;
    for (r : 1 .. ROUNDS) {
        /* refill, up to REFILLS magazines */
        for (k : 1 .. REFILLS) {
            pop(0, m);
            if
            :: m != NIL ->
#ifdef RECYCLE_EARLY
                push(1, m);
#endif
                for (i : 0 .. M - 1) {
                    o = mag[m * M + i];
                    atomic { assert(holder[o] == 0); holder[o] = me + 1 };
                    cache[n + i] = o
                }
                n = n + M;
#ifndef RECYCLE_EARLY
                if
                :: ns < SPARES -> spares[ns] = m; ns++
                :: else -> push(1, m)
                fi
#endif
            :: else -> skip
            fi
        }
        /* flush whatever the cache holds, a magazine at a time from the top */
        do
        :: n == 0 -> break
        :: else ->
            if
            :: ns > 0 -> ns--; m = spares[ns]
            :: else -> pop(1, m)
            fi;
            assert(m != NIL);        /* NM > NOBJ / M: an empty one always exists */
            n = n - M;
            for (i : 0 .. M - 1) {
                o = cache[n + i];
                atomic { assert(holder[o] == me + 1); holder[o] = 0 };
                mag[m * M + i] = o
            }
            push(0, m)
        od
    }
    do                                   /* a drained cache gives its spares back */
    :: ns > 0 -> ns--; push(1, spares[ns])
    :: else -> break
    od;
    done++
}

init {
    byte i, cur, count, mags;
    byte seen[NOBJ];
    byte onstack[NM];
    atomic {
        /* magazines 0, 1 full (objects 0..3), magazine 2 empty */
        for (i : 0 .. NOBJ - 1) { mag[i] = i }
        nxt[0] = 1; nxt[1] = NIL; ftop = 0;
        nxt[2] = NIL; etop = 2;
        for (i : 0 .. THREADS - 1) { run worker(i) }
    }
    (done == THREADS);
    count = 0; mags = 0; cur = ftop;
    do
    :: cur == NIL -> break
    :: else ->
        assert(mags < NM && onstack[cur] == 0);
        onstack[cur] = 1; mags++;
        for (i : 0 .. M - 1) {
            assert(seen[mag[cur * M + i]] == 0);
            seen[mag[cur * M + i]] = 1; count++
        }
        cur = nxt[cur]
    od;
    assert(count == NOBJ);
    cur = etop;
    do
    :: cur == NIL -> break
    :: else -> assert(mags < NM && onstack[cur] == 0); onstack[cur] = 1; mags++; cur = nxt[cur]
    od;
    assert(mags == NM)
}
