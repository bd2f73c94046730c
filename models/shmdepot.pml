/* shmdepot.pml - the shared pool of include/turbomem/shm.h (the kill-safe
 * lock-free depot) with processes SIGKILLed between any two steps.
 *
 * MODELLED, one Promela step per atomic access of a shared word in shm.h:
 *  - the depot: NM magazines (mstate = ON(k)/OWNED(s) with seq, mnext, mcount,
 *    mhs) on three stacks FULL/PART/EMPTY whose head word is
 *    [tag | op | slot | top+1]; tm_shm__pop, tm_shm__push, tm_shm__help
 *    exactly as written (pop: CAS (NONE,m)->(POP,s,m); help: load state,
 *    re-check head, CAS state from exactly the value read with seq+1, load
 *    next, CAS head), pop_loaded (FULL then PART), pop_room (EMPTY then PART,
 *    retried), stack_for;
 *  - two worker slots (0, 1) doing OPS operations each: get (cache hit, or
 *    tm_shm__get_slow's refill: pop_loaded + mag_take into the cache + push)
 *    and put (CAS HELD->CACHED, into the cache, or tm_shm__place: pop_room +
 *    mag_fill of the top half of the cache + push FULL/PART), each helping
 *    any operation it finds in a head;
 *  - owner[h] (MAG(m) / HELD(s) / CACHED(s) / RING(s)), the truth recovery
 *    reads; each owner-word store/CAS is a step;
 *  - kills: a worker may die after any step that writes shared memory (KILLS
 *    deaths in all); the other worker keeps running (and helping) meanwhile;
 *  - a recoverer (slot 2) running tm_shm_recover + tm_shm__recover_slot on a
 *    dead slot: mark CAS on the slot word, take over the slots a dead
 *    recoverer was recovering, finish_heads, recover_rings, adopt every
 *    magazine OWNED(dead) (load + CAS), one pass over owner[] rebuilding the
 *    adopted magazines and moving the dead slot's objects into magazines it
 *    pops (load + CAS each), the pushes, the release of the slot;
 *  - -DRKILLS=1: the recoverer may die too after any of its steps; a second
 *    recoverer (slot 3) recovers it (adopting what it owned) and takes over
 *    (CAS on the slot word) the slot it was recovering;
 *  - -DRING: pool ring 0 (SPSC, tm_shm_ring_enqueue/dequeue, one handle a
 *    call): slot 0 may enqueue a held object (CAS HELD->RING, slot store,
 *    prod.tail store), slot 1 may dequeue (load prod.tail, load owner, CAS
 *    RING->HELD, then cons.tail store), recovery skips a dead consumer's
 *    claimed prefix and spares published handles.
 *
 * ABSTRACTED, and why it is sound:
 *  - a kill point only after steps that write shared memory: a kill right
 *    after a load leaves the same state as a kill right before it;
 *  - hints (cache array, slots[s].len, mags[m].count and contents, next[m])
 *    are private to their owner (the slot, or the owner of the magazine) and
 *    ignored by recovery (count reset on adoption, len zeroed), so their
 *    stores are merged into the owner's neighbouring step.  next[m] in
 *    particular is written only by m's owner before its push CAS, and read by
 *    pop helpers only while m is on the stack; a stale reader's head CAS
 *    fails (tag), so the value it read never lands;
 *  - the load-then-CAS of an owner word a slot holds (put: HELD(s) -> CACHED(s))
 *    and of a slot word (recovery marks) is one step: nobody else writes such
 *    a word between (only the CAS decides, its expected value is what
 *    matters);
 *  - recovery's scans over mags[].state (step 3) and over the slot words
 *    (take-over) load every word, but the loads of words that do not match
 *    are merged into the next step: once the dead slot's head operations are
 *    finished, the set of OWNED(x) magazines (and of slots marked x + 1)
 *    cannot change except by us (x is dead; a stale helper's CAS expects a
 *    pre-operation value and fails); each matching word is still loaded and
 *    CASed in two steps;
 *  - pop_room's bounded retry (1000 x sched_yield) is a blocking wait until
 *    the EMPTY or PART head changes: a retry from unchanged heads reads the
 *    same words and changes nothing.  The model never gives up; with the
 *    nmags formula a depot always has a magazine with room (checked: a
 *    pop_room that could never succeed is an invalid end state here);
 *  - death is detected exactly (no pid reuse, no start_time); slots are not
 *    re-claimed after recovery; no scribbled words (the range checks of
 *    shm.h are not modelled); memory is sequentially consistent (the C
 *    orderings are argued in shm.h and checked by TSan, not here);
 *  - tags and seqs are unbounded-in-effect (a run makes far fewer than 2^24
 *    changes), so ABA by wrap-around is out of scope, as shm.h argues.
 *
 * Sizes (-D): N objects (3), B magazine size (1), CS cache size (1), OPS
 * operations per worker after the prefix (3), KILLS (1), RKILLS (0).
 * NM = ceil(N/B) + NS + 2, the formula of tm_shm_mag_geometry with
 * max_slots = NS = the slots that own magazines in the model (2 workers + 1
 * recoverer, + 1 with RKILLS).  Worker 0 first runs a prefix alone, with no
 * kill: CS + 1 gets then CS puts (its cache full, one object in hand, so its
 * next put flushes); a reachable state, reached by the real operations, that
 * brings both refill and flush within OPS.  check.sh runs: the default;
 * B=2 CS=2 (the PART stack); KILLS=2; RKILLS=1 with N=2 OPS=2; RING with
 * OPS=2 (each ~1-2 GB at most, under a minute).
 *
 * CHECKED: an object is never handed to two live parties (ghost gh[], and not
 * in another live cache); a pop returns a magazine OWNED by the popper and
 * on no stack; a magazine state changes only while its operation is in the
 * head; recovery adopts only after no head names the dead slot; at the end
 * (everyone done or dead and recovered): no operation left in a head, every
 * magazine on exactly one stack exactly once, in state ON(that stack), with
 * a count that fits the stack; every object in exactly one place (listed in
 * a magazine on a stack, a live cache, a live holder, published in the ring)
 * whose owner word agrees (MAG(m), CACHED(s), HELD(s), RING).
 *
 * MUST-FAIL variants:
 *  -DPLAIN_POP     pop is a plain Treiber CAS head m -> next, then the state
 *                  store: a kill between strands the magazine and its objects;
 *  -DNO_RECHECK    the helper does not re-check the head after reading the
 *                  state and CASes the state by kind (seq ignored): a stale
 *                  helper re-applies a finished pop;
 *  -DNO_SEQ        the re-check is kept but the state CAS ignores seq: the
 *                  same, one stall later;
 *  -DNO_FINISH     recovery adopts without finishing the dead slot's head
 *                  operations first;
 *  -DRKILLS=1 -DNO_TAKEOVER  the second recoverer does not take over the
 *                  slots the dead recoverer had marked: they are never
 *                  recovered;
 *  -DRING -DCLAIM_AFTER_PUBLISH  the consumer publishes cons.tail before
 *                  claiming the handle: a kill in between strands it.
 */
#ifndef N
#define N 3
#endif
#ifndef B
#define B 1
#endif
#ifndef CS
#define CS 1
#endif
#ifndef OPS
#define OPS 3
#endif
#ifndef KILLS
#define KILLS 1
#endif
#ifndef RKILLS
#define RKILLS 0
#endif
#if RKILLS > 0
#define NS 4
#else
#define NS 3
#endif
#define LOADED ((N + B - 1) / B)
#ifndef NM
#define NM (LOADED + NS + 2)
#endif
#define RCAP 2
/* Worker 0 first runs, alone and with no kill, PRE_GETS gets then PRE_PUTS
 * puts (default: its cache full and one object in hand, so that its first
 * put flushes), then everyone starts: a reachable state, reached with the
 * real operations, that brings refill and flush within OPS. */
#ifndef PRE_PUTS
#define PRE_PUTS CS
#endif
#define PRE_GETS (PRE_PUTS + 1)
#define PRE (PRE_GETS + PRE_PUTS)
#define HMAX (CS + 1)        /* objects a worker holds at most */
#define NIL 255

/* stacks */
#define FULL 0
#define PART 1
#define EMPTY 2
#define STACK_FOR(c) ((c) == 0 -> EMPTY : ((c) >= B -> FULL : PART))

/* head word: tag * 256 | op * 64 | slot * 16 | top + 1 */
#define NOP 0
#define POP 1
#define PUSH 2
#define HMK(tag, op, sl, t1) ((tag) * 256 + (op) * 64 + (sl) * 16 + (t1))
#define HTAG(x) ((x) / 256)
#define HOP(x) (((x) / 64) % 4)
#define HSLOT(x) (((x) / 16) % 4)
#define HTOP1(x) ((x) % 16)

/* magazine state: seq * 32 | kind * 16 | who (stack or slot) */
#define ON 0
#define OWNED 1
#define SMK(seq, kind, who) ((seq) * 32 + (kind) * 16 + (who))
#define SSEQ(x) ((x) / 32)
#define SKIND(x) (((x) / 16) % 2)
#define SWHO(x) ((x) % 16)

/* owner word */
#define MAGK 0
#define HELDK 1
#define CACHEDK 2
#define RINGK 3
#define HELD(s) (16 + (s))
#define CACHED(s) (32 + (s))
#define RINGED(s) (48 + (s))
#define OKIND(w) ((w) / 16)
#define OSLOT(w) ((w) % 16)

int head[3];
int mstate[NM];
byte mnext[NM];
byte mcount[NM];
byte mhs[NM * B];
byte owner[N];
byte cache[2 * CS];
byte clen[NS];         /* slots[s].len (recoverers have no cache: 0) */
bit sown[NS];        /* slots[s].own: pid present (0 once recovered) */
byte srec[NS];       /* slots[s].own >> 32: recoverer slot + 1 */
bit dead[NS];
bit done[NS];
byte kills, rkills;
bit started;         /* worker 0's prefix is over: the others run, kills allowed */
byte gh[N];          /* ghost: slot + 1 of the live party holding h, 0 none */
#ifdef RING
byte rs[RCAP];
byte ptail, ctail;
byte rprod = 1, rcons = 2;   /* ring sides: slot + 1 (0 and 1) */
#endif

/* A kill point: the running process may die here (after the write it ends). */
#define MORTAL ((me < 2 && kills < KILLS && started) || (me == 2 && rkills < RKILLS))
#define K if :: MORTAL -> if :: me < 2 -> kills++ :: else -> rkills++ fi; dead[me] = 1; goto died :: true -> skip fi

#ifdef NO_RECHECK
#define RECHECK_FAILS(hk, hd) false
#else
#define RECHECK_FAILS(hk, hd) (head[hk] != hd)
#endif
#if defined(NO_RECHECK) || defined(NO_SEQ)
#define STATE_IS(m, w) (SKIND(mstate[m]) == SKIND(w))
#else
#define STATE_IS(m, w) (mstate[m] == w)
#endif

/* -DNO_INV drops the step invariants of help (to see a variant fail on the
 * accounting alone). */
#ifdef NO_INV
#define INV(c) skip
#else
#define INV(c) assert(c)
#endif

/* tm_shm__help: finish the operation hd written into head hk. */
inline help(hk, hd) {
    hm = HTOP1(hd) - 1;
    hw = mstate[hm];                                       /* load state */
    if
    :: RECHECK_FAILS(hk, hd) -> skip                       /* load head: done already */
    :: else ->
        if
        :: HOP(hd) == POP && SKIND(hw) == ON ->
            atomic {
                if
                :: STATE_IS(hm, hw) ->
                    INV(head[hk] == hd);   /* a state moves only while its op is in the head */
                    mstate[hm] = SMK(SSEQ(mstate[hm]) + 1, OWNED, HSLOT(hd)); K
                :: else -> skip
                fi
            }
        :: HOP(hd) == PUSH && SKIND(hw) == OWNED ->
            atomic {
                if
                :: STATE_IS(hm, hw) ->
                    INV(head[hk] == hd && SWHO(mstate[hm]) == HSLOT(hd));
                    mstate[hm] = SMK(SSEQ(mstate[hm]) + 1, ON, hk); K
                :: else -> skip
                fi
            }
        :: else -> skip
        fi;
        ht = (HOP(hd) == POP -> mnext[hm] : HTOP1(hd));  /* load next */
        atomic {
            if
            :: head[hk] == hd -> head[hk] = HMK(HTAG(hd) + 1, NOP, 0, ht); ht = 0; K
            :: else -> ht = 0
            fi
        }
    fi;
    hm = 0; hw = 0
}

/* No stack reaches magazine cm (ghost walk, one step). */
inline check_off(cm) {
    d_step {
        ck = 0;
        do
        :: ck < 3 ->
            ct = HTOP1(head[ck]); cn = 0;
            do
            :: ct != 0 && cn <= NM -> assert(ct - 1 != cm); ct = mnext[ct - 1]; cn++
            :: else -> break
            od;
            assert(cn <= NM);
            ck++
        :: else -> break
        od;
        ck = 0; ct = 0; cn = 0
    }
}

/* tm_shm__pop: magazine popped from stack pk for `me` into pres, or NIL. */
inline pop(pk, pres) {
    pres = NIL;
    do
    :: hv = head[pk];                                      /* load head */
        if
        :: HOP(hv) != NOP -> help(pk, hv)
        :: HOP(hv) == NOP && HTOP1(hv) == 0 -> hnil = hv; break
        :: else ->
#ifdef PLAIN_POP
            pt = mnext[HTOP1(hv) - 1];                     /* load next */
            atomic {
                if
                :: head[pk] == hv -> head[pk] = HMK(HTAG(hv) + 1, NOP, 0, pt); ok = 1; K
                :: else -> ok = 0
                fi
            }
            if
            :: ok ->
                pres = HTOP1(hv) - 1;
                atomic { mstate[pres] = SMK(SSEQ(mstate[pres]) + 1, OWNED, me); K };
                break
            :: else -> skip
            fi
#else
            hd2 = HMK(HTAG(hv) + 1, POP, me, HTOP1(hv));
            atomic {
                if
                :: head[pk] == hv -> head[pk] = hd2; ok = 1; K
                :: else -> ok = 0
                fi
            }
            if
            :: ok -> help(pk, hd2); pres = HTOP1(hd2) - 1; break
            :: else -> skip
            fi
#endif
        fi
    od;
    atomic {
        hv = 0; hd2 = 0; ok = 0; pt = 0;
        /* the pop's contract: owned by the popper, on no stack */
        if
        :: pres != NIL -> assert(SKIND(mstate[pres]) == OWNED && SWHO(mstate[pres]) == me)
        :: else -> skip
        fi
    }
    if :: pres != NIL -> check_off(pres) :: else -> skip fi
}

/* tm_shm__push of magazine um, owned by `me`, on stack uk (both evaluated
 * once, into uk_ / um_, as the C arguments are). */
inline push(uk, um) {
    atomic { uk_ = uk; um_ = um }
    do
    :: atomic {                                            /* load head; next[m] = top (private) */
            hv = head[uk_];
            if :: HOP(hv) == NOP -> mnext[um_] = HTOP1(hv) :: else -> skip fi
        }
        if
        :: HOP(hv) != NOP -> help(uk_, hv)
        :: else ->
            hd2 = HMK(HTAG(hv) + 1, PUSH, me, um_ + 1);
            atomic {
                if
                :: head[uk_] == hv -> head[uk_] = hd2; ok = 1; K
                :: else -> ok = 0
                fi
            }
            if
            :: ok -> help(uk_, hd2); break
            :: else -> skip
            fi
        fi
    od;
    hv = 0; hd2 = 0; ok = 0; uk_ = 0; um_ = 0
}

inline pop_loaded(res) {
    pop(FULL, res);
    if :: res == NIL -> pop(PART, res) :: else -> skip fi
}

inline pop_room(res) {
    do
    :: pop(EMPTY, res);
        if :: res != NIL -> break :: else -> e0 = hnil fi;
        pop(PART, res);
        if :: res != NIL -> break :: else -> p0 = hnil fi;
        (head[EMPTY] != e0 || head[PART] != p0)           /* sched_yield, retry */
    od;
    e0 = 0; p0 = 0; hnil = 0
}

/* A live party takes h: no other live party has it. */
inline acquire(h) {
    assert(gh[h] == 0 || dead[gh[h] - 1]);
    if
    :: !dead[1 - me] ->
        ck = 0;
        do
        :: ck < clen[1 - me] -> assert(cache[(1 - me) * CS + ck] != h); ck++
        :: else -> break
        od;
        ck = 0
    :: else -> skip
    fi;
    gh[h] = me + 1
}

proctype worker(byte me) {
    byte ops, pre, h, m, i, c, k, base, nh;
    byte hh[HMAX];      /* the objects in hand: hh[0 .. nh-1] */
    int hv, hd2, hw, hnil, e0, p0;
    byte hm, ht, pt, ck, ct, cn, w, uk_, um_;
    bit ok;
    if :: me == 0 -> pre = PRE :: else -> skip fi;
    do
    :: pre > 0 && ops == PRE -> started = 1; pre = 0; ops = 0    /* prefix over */
    :: pre == 0 && ops == OPS -> break
    /* ---- get (one object) ---- */
    :: (pre == 0 && ops < OPS || pre > 0 && ops < PRE_GETS) && nh < HMAX ->
        ops++;
        if
        :: clen[me] == 0 ->                                 /* tm_shm__get_slow: refill */
            pop_loaded(m);
            if
            :: m != NIL ->
                /* tm_shm__mag_take(m, cache, CS, CACHED(me)) */
                atomic { c = mcount[m]; i = (c > CS -> c - CS : 0); base = i }
                do
                :: i < c ->
                    atomic {
                        h = mhs[m * B + i];
                        if
                        :: owner[h] == m ->
                            assert(gh[h] == 0);
                            owner[h] = CACHED(me); cache[me * CS + clen[me]] = h; clen[me]++
                        :: else -> skip
                        fi;
                        mcount[m] = base; i++; h = 0; K
                    }
                :: else -> break
                od;
                push(STACK_FOR(mcount[m]), m);
                m = 0; c = 0; i = 0; base = 0
            :: else -> m = 0                               /* EEMPTY */
            fi
        :: else -> skip
        fi;
        if
        :: clen[me] > 0 ->                                  /* the hit */
            atomic {
                h = cache[me * CS + clen[me] - 1];
                assert(owner[h] == CACHED(me));
                acquire(h);
                owner[h] = HELD(me); clen[me]--;
                hh[nh] = h; nh++;
                h = 0; K
            }
        :: else -> skip
        fi
    /* ---- put (one object) ---- */
    :: (pre == 0 && ops < OPS || pre > 0 && ops >= PRE_GETS && ops < PRE) && nh > 0 ->
        ops++;
        i = 0;                                              /* any object in hand */
        do :: i < nh - 1 -> i++ :: break od;
        atomic { h = hh[i]; nh--; hh[i] = hh[nh]; hh[nh] = 0; i = 0 }
        atomic {                                           /* CAS HELD(me) -> CACHED(me) */
            assert(owner[h] == HELD(me) && gh[h] == me + 1);
            owner[h] = CACHED(me); gh[h] = 0;
            if
            :: clen[me] < CS -> cache[me * CS + clen[me]] = h; clen[me]++; h = NIL
            :: else -> skip
            fi;
            K
        }
        if
        :: h != NIL ->                                      /* tm_shm__place: cache full */
            pop_room(m);
            /* tm_shm__mag_fill(m, top min(over, room) of the cache) */
            atomic {
                c = mcount[m];
                k = clen[me] - CS / 2;
                if :: k > B - c -> k = B - c :: else -> skip fi;
                base = clen[me] - k; i = 0
            }
            do
            :: i < k ->
                atomic {
                    mhs[m * B + c + i] = cache[me * CS + base + i];
                    owner[cache[me * CS + base + i]] = m;
                    i++;
                    if :: i == k -> mcount[m] = c + k; clen[me] = base :: else -> skip fi;
                    K
                }
            :: else -> break
            od;
            push(STACK_FOR(mcount[m]), m);
            atomic { cache[me * CS + clen[me]] = h; clen[me]++; h = 0; m = 0; c = 0; k = 0; base = 0; i = 0 }
        :: else -> h = 0
        fi
#ifdef RING
    /* ---- enqueue on ring 0 (slot 0 only), one handle ---- */
    :: me == 0 && pre == 0 && ops < OPS && nh > 0 ->
        ops++;
        i = 0;                                              /* any object in hand */
        do :: i < nh - 1 -> i++ :: break od;
        atomic { h = hh[i]; nh--; hh[i] = hh[nh]; hh[nh] = 0; i = 0 }
        c = ctail;                                         /* load cons.tail */
        if
        :: ptail - c < RCAP ->
            atomic {                                       /* CAS HELD -> RING; slot store */
                assert(owner[h] == HELD(me));
                owner[h] = RINGED(me); gh[h] = 0; rs[ptail % RCAP] = h; K
            }
            atomic { ptail++; K }                          /* publish prod.tail */
            h = 0
        :: else ->                                         /* full: keep it */
            hh[nh] = h; nh++; h = 0
        fi;
        c = 0
    /* ---- dequeue from ring 0 (slot 1 only), one handle ---- */
    :: me == 1 && pre == 0 && ops < OPS && nh < HMAX ->
        ops++;
        c = ptail;                                         /* load prod.tail */
        if
        :: c != ctail ->
            atomic { h = rs[ctail % RCAP]; w = owner[h] }  /* slot load; load owner */
#ifdef CLAIM_AFTER_PUBLISH
            atomic { ctail++; K }
#endif
            if
            :: OKIND(w) == RINGK ->
                atomic {
                    if
                    :: owner[h] == w ->
                        acquire(h); owner[h] = HELD(me);
                        hh[nh] = h; nh++;
                        K
                    :: else -> skip
                    fi
                }
            :: else -> skip
            fi;
#ifndef CLAIM_AFTER_PUBLISH
            atomic { ctail++; K }                          /* publish cons.tail */
#endif
            h = 0; w = 0
        :: else -> skip
        fi;
        c = 0
#endif
    od;
    done[me] = 1;
died:
    skip
}

/* tm_shm__recover_slot(me, x) */
inline recover_slot(x) {
    /* 1. finish the dead slot's operations in the heads */
#ifndef NO_FINISH
    k = 0;
    do
    :: k < 3 ->
        hv = head[k];
        if
        :: HOP(hv) == NOP || HSLOT(hv) != x -> k++
        :: else -> help(k, hv)
        fi
    :: else -> break
    od;
    k = 0; hv = 0;
#endif
#ifdef RING
    /* 2. rings: skip a dead consumer's claimed prefix; snapshot the published */
    if
    :: rcons == x + 1 ->
        c = ctail; pe = ptail;                             /* cons.tail ours; load prod.tail */
        do
        :: c != pe && owner[rs[c % RCAP]] == HELD(x) -> c++
        :: else -> break
        od;
        atomic { ctail = c; K }
    :: else -> skip
    fi;
    c = ctail;                                             /* load cons.tail */
    pe = ptail;                                            /* load prod.tail */
    atomic {
        inring = 0;
        do
        :: c != pe -> inring = inring | (1 << rs[c % RCAP]); c++
        :: else -> break
        od;
        c = 0; pe = 0
    }
#endif
    /* 3. adopt x's magazines: load each state, CAS the OWNED(x) ones.  The
     * loads of the other states are merged into the next load (see the
     * header: after step 1 the set of OWNED(x) magazines is stable). */
    adopted = 0; m = 0;
    do
    :: atomic {                                            /* load state(s) */
            do
            :: m < NM && !(SKIND(mstate[m]) == OWNED && SWHO(mstate[m]) == x) -> m++
            :: else -> break
            od;
            if :: m < NM -> hw = mstate[m] :: else -> skip fi
        }
        if
        :: m == NM -> break
        :: else ->
            atomic {                                       /* CAS OWNED(x) -> OWNED(me) */
                if
                :: mstate[m] == hw ->
                    assert(!((HOP(head[0]) != NOP && HSLOT(head[0]) == x) ||
                             (HOP(head[1]) != NOP && HSLOT(head[1]) == x) ||
                             (HOP(head[2]) != NOP && HSLOT(head[2]) == x)));
                    mstate[m] = SMK(SSEQ(hw) + 1, OWNED, me);
                    adopted = adopted | (1 << m); mcount[m] = 0; m++; K
                :: else -> m++
                fi
            }
        fi
    od;
    hw = 0; m = 0;
    /* 4. one pass over owner[] */
    pm = NIL; h = 0;
    do
    :: h < N ->
        atomic {                                           /* load owner; rebuild adopted */
            w = owner[h];
            if
            :: OKIND(w) == MAGK && (adopted & (1 << w)) && mcount[w] < B ->
                mhs[w * B + mcount[w]] = h; mcount[w]++
            :: else -> skip
            fi
        }
        if
        :: OKIND(w) == MAGK -> skip
        :: OKIND(w) != MAGK && OSLOT(w) != x -> skip
#ifdef RING
        :: OKIND(w) == RINGK && OSLOT(w) == x && (inring & (1 << h)) -> skip
#endif
        :: else ->
            if
            :: pm != NIL && mcount[pm] >= B -> push(FULL, pm); pm = NIL
            :: else -> skip
            fi;
            if :: pm == NIL -> pop_room(pm) :: else -> skip fi;
            atomic {                                       /* CAS owner w -> MAG(pm) */
                if
                :: owner[h] == w ->
                    assert(gh[h] == 0 || dead[gh[h] - 1]); gh[h] = 0;
                    owner[h] = pm; mhs[pm * B + mcount[pm]] = h; mcount[pm]++; K
                :: else -> skip
                fi
            }
        fi;
        h++
    :: else -> break
    od;
    h = 0; w = 0;
    if :: pm != NIL -> push(STACK_FOR(mcount[pm]), pm); pm = NIL :: else -> skip fi;
    m = 0;
    do
    :: m < NM ->
        if :: adopted & (1 << m) -> push(STACK_FOR(mcount[m]), m) :: else -> skip fi;
        m++
    :: else -> break
    od;
    m = 0; adopted = 0;
    /* 5. release the ring sides and the slot (last) */
#ifdef RING
    atomic {
        if :: rprod == x + 1 -> rprod = 0 :: else -> skip fi;
        if :: rcons == x + 1 -> rcons = 0 :: else -> skip fi;
        K
    }
#endif
    atomic { clen[x] = 0; sown[x] = 0; srec[x] = 0; K }
}

/* A recoverer process (slot me): tm_shm_recover on each dead slot it finds
 * unmarked, until every worker is done or dead and recovered.  Slot 3 (with
 * RKILLS) starts once slot 2 is dead (or done). */
#define PENDING(x) (dead[x] && sown[x] && srec[x] == 0)
#define SETTLED ((done[0] || dead[0]) && (done[1] || dead[1]) && !PENDING(0) && !PENDING(1) && \
                 (me == 2 || !PENDING(2)))
proctype recoverer(byte me) {
    byte x, y, h, m, pm, c, pe, k, w, work;
    int adopted, inring;
    int hv, hd2, hw, hnil, e0, p0;
    byte hm, ht, pt, ck, ct, cn, uk_, um_;
    bit ok;
    if :: me == 3 -> (dead[2] || done[2]) :: else -> skip fi;
    do
    :: SETTLED -> break
    :: PENDING(0) -> x = 0; goto mark
    :: PENDING(1) -> x = 1; goto mark
    :: me == 3 && PENDING(2) -> x = 2; goto mark
    od;
    done[me] = 1;
    goto died;
mark:
    /* tm_shm_recover: the mark CAS (pid, 0) -> (pid, me + 1) */
    atomic {
        if
        :: sown[x] && srec[x] == 0 -> srec[x] = me + 1; work = 1 << x; K
        :: else -> work = 0
        fi
    }
    do
    :: work == 0 -> break
    :: else ->
        d_step {                                           /* LIFO: the last one pushed */
            x = NS - 1;
            do :: work & (1 << x) -> break :: else -> x-- od;
            work = work & ~(1 << x)
        }
        /* x may have died recovering others: take those over first (one
         * CAS each; the loads of the other slot words merged, as in step 3:
         * only x wrote marks x + 1, and x is dead) */
        y = 0;
#ifdef NO_TAKEOVER
        y = NS;
#endif
        do
        :: atomic {
                do
                :: y < NS && (y == x || srec[y] != x + 1) -> y++
                :: else -> break
                od;
                if
                :: y < NS -> srec[y] = me + 1; work = work | (1 << y); y++; K
                :: else -> skip
                fi
            }
            if :: y >= NS -> break :: else -> skip fi
        od;
        y = 0;
        recover_slot(x)
    od;
    x = 0;
    goto loop;
loop:
    do
    :: SETTLED -> break
    :: PENDING(0) -> x = 0; goto mark
    :: PENDING(1) -> x = 1; goto mark
    :: me == 3 && PENDING(2) -> x = 2; goto mark
    od;
    done[me] = 1;
died:
    skip
}

init {
    byte m, k, i, n, lo, h, s, t, cnt, places;
    byte top1[3];
    int seen;
    atomic {
        m = NM;
        do
        :: m > 0 ->
            m--;
            n = 0;
            if
            :: m < LOADED -> lo = m * B; n = (N - lo < B -> N - lo : B)
            :: else -> lo = 0
            fi;
            i = 0;
            do
            :: i < n -> mhs[m * B + i] = lo + n - 1 - i; owner[lo + n - 1 - i] = m; i++
            :: else -> break
            od;
            k = STACK_FOR(n);
            mcount[m] = n; mnext[m] = top1[k]; mstate[m] = SMK(0, ON, k); top1[k] = m + 1
        :: else -> break
        od;
        head[0] = HMK(0, NOP, 0, top1[0]);
        head[1] = HMK(0, NOP, 0, top1[1]);
        head[2] = HMK(0, NOP, 0, top1[2]);
        s = 0;
        do :: s < NS -> sown[s] = 1; s++ :: else -> break od;
        run worker(0)
    }
    started;                   /* worker 0's prefix, alone and unkillable */
    atomic {
        run worker(1);
        run recoverer(2);
#if RKILLS > 0
        run recoverer(3);
#endif
    }
    /* Everyone done, or dead and recovered. */
    (_nr_pr == 1);
    d_step {
        s = 0;
        do
        :: s < NS -> assert(!dead[s] || !sown[s]); s++
        :: else -> break
        od;
        /* the stacks: every magazine on exactly one, once, ON it, count fitting */
        seen = 0; k = 0;
        do
        :: k < 3 ->
            assert(HOP(head[k]) == NOP);
            t = HTOP1(head[k]);
            do
            :: t != 0 ->
                m = t - 1;
                assert(!(seen & (1 << m)));
                seen = seen | (1 << m);
                assert(SKIND(mstate[m]) == ON && SWHO(mstate[m]) == k);
                assert(STACK_FOR(mcount[m]) == k);
                t = mnext[m]
            :: else -> break
            od;
            k++
        :: else -> break
        od;
        assert(seen == (1 << NM) - 1);
        /* every object in exactly one place, with its owner word agreeing */
        h = 0;
        do
        :: h < N ->
            places = 0;
            m = 0;
            do
            :: m < NM ->
                i = 0;
                do
                :: i < mcount[m] -> if :: mhs[m * B + i] == h -> places++; assert(owner[h] == m) :: else -> skip fi; i++
                :: else -> break
                od;
                m++
            :: else -> break
            od;
            s = 0;
            do
            :: s < 2 ->
                if
                :: dead[s] -> assert(clen[s] == 0 && gh[h] != s + 1)
                :: else ->
                    i = 0;
                    do
                    :: i < clen[s] -> if :: cache[s * CS + i] == h -> places++; assert(owner[h] == CACHED(s)) :: else -> skip fi; i++
                    :: else -> break
                    od;
                    if :: gh[h] == s + 1 -> places++; assert(owner[h] == HELD(s)) :: else -> skip fi
                fi;
                s++
            :: else -> break
            od;
#ifdef RING
            cnt = ctail;
            do
            :: cnt != ptail -> if :: rs[cnt % RCAP] == h -> places++; assert(OKIND(owner[h]) == RINGK) :: else -> skip fi; cnt++
            :: else -> break
            od;
#endif
            assert(places == 1);
            h++
        :: else -> break
        od
    }
}
