/* shmkill.pml - the shared pool (include/turbomem/shm.h) with a process
 * killed between any two steps.
 *
 * Two worker processes (slot 0 produces on the ring, slot 1 consumes) do OPS
 * random operations each: get (cache hit, or the free array under the robust
 * lock), put (to the cache, or to the free array when the cache is full),
 * enqueue / dequeue on a single-producer single-consumer ring.  After every
 * step that touches shared memory, a worker may be SIGKILLed (at most KILLS
 * deaths per run).  A recoverer gives back what a dead slot held, exactly as
 * tm_shm__recover_slot does; a lock whose holder died is taken over and the
 * free array rebuilt from owner[] (tm_shm__rebuild, modelled as one step: it
 * writes only derived state and is redone if its runner dies).
 *
 * Checked: no object is ever held by two live processes or held while on the
 * free array; at the end every object is in exactly one place (free array,
 * ring, a live cache, a live holder) and owner[h] == FREE exactly for the
 * objects on the free array.
 *
 * -DRKILLS=1: the recoverer may die too, after any of its steps, holding the
 * lock; the next one takes the lock over (rebuild) and starts again.
 *
 * -DCLAIM_AFTER_PUBLISH (must fail): the consumer publishes cons.tail before
 * claiming the handle; a consumer killed in between strands the object.
 * -DNO_REBUILD (must fail): a lock taken over from a dead holder is used as is.
 */
#define N 2          /* objects */
#define NONE 255
#ifndef OPS
#define OPS 3
#endif
#ifndef KILLS
#define KILLS 1
#endif
#ifndef RKILLS
#define RKILLS 0     /* kills of the recoverer itself; a new one starts over */
#endif
#define FREE 0
#define HELD(s) (1 + (s))
#define CACHED(s) (3 + (s))
#define RING(s) (5 + (s))
#define RCAP 2

byte owner[N];
byte freearr[N];
byte top;
byte lockholder = NONE;
byte cache[2];
byte clen[2];
byte rs[RCAP];
byte ptail, ctail;      /* free-running mod 256; ring count = ptail - ctail */
bit dead[3];       /* [2]: the recoverer, which never dies */
bit recovered[2];
bit done[2];
byte kills;
byte rkills;
byte gh[N];             /* ghost: slot + 1 of the process that holds h, 0 none */

/* A kill point: the worker may die here. */
#define K if :: (kills < KILLS) -> kills++; dead[s] = 1; goto died :: true -> skip fi
/* A kill point of the recoverer: it dies (holding the lock) and a new one starts over. */
#define RK if :: (rkills < RKILLS) -> rkills++; dead[2] = 1; goto rstart :: true -> skip fi

inline rebuild() {
    d_step {
        top = 0;
        i = 0;
        do
        :: i < N -> if :: owner[i] == FREE -> freearr[top] = i; top++ :: else -> skip fi; i++
        :: else -> break
        od;
        i = 0
    }
}

/* Robust lock: a dead holder's lock is taken over (EOWNERDEAD) and repaired. */
inline lock(me) {
    atomic {
        (lockholder == NONE || dead[lockholder]) ->
        if
        :: lockholder != NONE ->
            lockholder = me;
#ifndef NO_REBUILD
            rebuild()
#else
            skip
#endif
        :: else -> lockholder = me
        fi;
        dead[me] = 0   /* the new recoverer incarnation; a no-op for a live worker */
    }
}
inline unlock() { lockholder = NONE }

inline acquire_ghost(h, me) {
    assert(gh[h] == 0 || dead[gh[h] - 1]);
    gh[h] = me + 1
}

proctype worker(byte s) {
    byte h, ops, i, w, held0, held1;   /* held: up to two objects, NONE if empty */
    held0 = NONE; held1 = NONE;
    do
    :: ops == OPS -> break
    :: ops < OPS -> ops++;
        if
        /* ---- get ---- */
        :: (held0 == NONE || held1 == NONE) ->
            if
            :: clen[s] == 1 ->                       /* cache hit: no lock */
                h = cache[s]; K;
                atomic { owner[h] = HELD(s); acquire_ghost(h, s) }; K;
                clen[s] = 0; K
            :: else ->
                lock(s); K;
                if
                :: top > 0 ->
                    h = freearr[top - 1]; K;
                    atomic { assert(owner[h] == FREE); owner[h] = HELD(s); acquire_ghost(h, s) }; K;
                    top--; K
                :: else -> h = NONE
                fi;
                unlock(); K
            fi;
            if
            :: h != NONE -> if :: held0 == NONE -> held0 = h :: else -> held1 = h fi
            :: else -> skip
            fi
        /* ---- put (CAS HELD -> CACHED(s)), to the cache or the free array ---- */
        :: held0 != NONE ->
            h = held0; held0 = held1; held1 = NONE;
            atomic { assert(owner[h] == HELD(s)); owner[h] = CACHED(s); gh[h] = 0 }; K;
            if
            :: clen[s] == 0 -> cache[s] = h; K; clen[s] = 1; K
            :: else ->
                lock(s); K;
                atomic { if :: owner[h] == CACHED(s) -> owner[h] = FREE :: else -> skip fi }; K;
                freearr[top] = h; K;
                top++; K;
                unlock(); K
            fi
        /* ---- enqueue (slot 0 only): mark RING, write slot, publish ---- */
        :: s == 0 && held0 != NONE && ptail - ctail < RCAP ->
            h = held0; held0 = held1; held1 = NONE;
            atomic { owner[h] = RING(s); gh[h] = 0 }; K;
            rs[ptail % RCAP] = h; K;
            ptail++; K
        /* ---- dequeue (slot 1 only): read, claim, publish ---- */
        :: s == 1 && (held0 == NONE || held1 == NONE) && ptail != ctail ->
            h = rs[ctail % RCAP]; K;
#ifdef CLAIM_AFTER_PUBLISH
            ctail++; K;
#endif
            atomic {
                w = owner[h];
                if
                :: w == RING(0) || w == RING(1) -> owner[h] = HELD(s); acquire_ghost(h, s);
                    if :: held0 == NONE -> held0 = h :: else -> held1 = h fi
                :: else -> skip   /* recovered meanwhile: not ours */
                fi
            }; K;
#ifndef CLAIM_AFTER_PUBLISH
            ctail++; K
#endif
        :: else -> skip
        fi
    od;
    done[s] = 1;
died:
    skip
}

init {
    byte i, s, h, c, places;
    bit inring[N];
    i = 0;
    do
    :: i < N -> freearr[i] = N - 1 - i; i++
    :: else -> break
    od;
    top = N;
    run worker(0);
    run worker(1);
    /* The recoverer, inline: recover each dead slot once, racing the survivor. */
rstart:
    do
    :: (dead[0] && !recovered[0]) || (dead[1] && !recovered[1]) ->
        s = (dead[0] && !recovered[0] -> 0 : 1);
        lock(2); RK;
        /* 1. a dead consumer's claimed-but-unpublished prefix is skipped */
        atomic {
            if
            :: s == 1 ->
                do
                :: ctail != ptail && owner[rs[ctail % RCAP]] == HELD(1) -> ctail++
                :: else -> break
                od
            :: else -> skip
            fi
        }; RK;
        /* 2. snapshot of what is published in the ring */
        atomic {
            i = 0;
            do :: i < N -> inring[i] = 0; i++ :: else -> break od;
            c = ctail;
            do :: c != ptail -> inring[rs[c % RCAP]] = 1; c++ :: else -> break od
        }; RK;
        /* 3. everything marked as s's goes back (one CAS + push per object) */
        h = 0;
        do
        :: h < N ->
            atomic {
                if
                :: owner[h] == HELD(s) || owner[h] == CACHED(s) || (owner[h] == RING(s) && !inring[h]) ->
                    owner[h] = FREE; c = 1;   /* the CAS: the commit point */
                    assert(gh[h] == 0 || dead[gh[h] - 1]); gh[h] = 0
                :: else -> c = 0
                fi
            }; RK;
            if :: c == 1 -> freearr[top] = h; RK; top++; RK :: else -> skip fi;
            h++
        :: else -> break
        od;
        clen[s] = 0; RK;
        recovered[s] = 1;   /* the slot is released last */
        unlock()
    :: (done[0] || dead[0]) && (done[1] || dead[1]) &&
       (!dead[0] || recovered[0]) && (!dead[1] || recovered[1]) -> break
    od;
    /* Final accounting: every object in exactly one place. */
    if :: lockholder != NONE && dead[lockholder] -> lock(2); unlock() :: else -> skip fi;
    assert(lockholder == NONE);
    h = 0;
    do
    :: h < N ->
        places = 0;
        i = 0;
        do :: i < top -> if :: freearr[i] == h -> places++; assert(owner[h] == FREE) :: else -> skip fi; i++
           :: else -> break od;
        c = ctail;
        do :: c != ptail -> if :: rs[c % RCAP] == h -> places++ :: else -> skip fi; c++ :: else -> break od;
        s = 0;
        do :: s < 2 ->
            if :: !dead[s] && clen[s] == 1 && cache[s] == h -> places++; assert(owner[h] == CACHED(s)) :: else -> skip fi;
            if :: gh[h] == s + 1 && !dead[s] -> places++ :: else -> skip fi;
            s++
           :: else -> break od;
        assert(places == 1);
        /* owner FREE exactly for the objects on the free array */
        c = 0; i = 0;
        do :: i < top -> if :: freearr[i] == h -> c++ :: else -> skip fi; i++ :: else -> break od;
        assert((owner[h] == FREE) == (c == 1));
        h++
    :: else -> break
    od
}
