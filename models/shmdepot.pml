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
 *  - owner[h] (MAG(m) / HELD(s) / CACHED(s) / RING(0, s)), the truth recovery
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
 *  - -DRING: pool ring 0, the multi-producer, multi-consumer kill-safe ring
 *    of shm.h, 2 cells (positions wrap: laps matter), cells [seq | val]
 *    with val FREE / RSV(s) / handle / TOMB, prod_pos and cons_pos hints.
 *    Both workers produce (tm_shm_ring_enqueue: tm_shm__ring_claim per
 *    handle - load prod_pos, load cell, CAS the claim, CAS prod_pos on, or
 *    CAS the hint on past a taken cell, or full -; then mark each handle
 *    HELD -> RING(0, s); then publish each cell by CAS; a ring full midway
 *    turns the claimed cells into tombstones; -DNENQ=2: worker 0 enqueues
 *    two handles at once, all or nothing); worker 1 also consumes
 *    (tm_shm_ring_dequeue of one handle: load cons_pos, load cell, load
 *    owner, CAS RING -> HELD (the commit), CAS retire, CAS cons_pos on; stop
 *    at a claimed cell (EBUSY) or a free one (empty)); a third process, the
 *    live consumer (slot NS, never killed, no cache), dequeues COPS times
 *    racing with everyone, then, once all are done or dead and recovered,
 *    drains the ring.  Recovery runs tm_shm__recover_rings exactly (each
 *    cell: load; RSV(x) -> CAS to a tombstone; a handle -> load its owner,
 *    inring if RING(0); HELD(x): x took it and did not retire the cell, so
 *    retire it) and step 4 leaves RING(0, x) handles in inring;
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
 *  - tm_shm_ring_enqueue's count pre-check is left out: it returns 0 before
 *    touching shared memory, which is the same as not enqueuing (the claim
 *    still finds a full ring); the mark's load-then-CAS is one step (the
 *    word is HELD(s), which nobody else writes); a dequeue that finds a
 *    claimed cell returns EBUSY at once (its bounded spin re-reads the same
 *    cell: another interleaving does that); the range checks (scribbles)
 *    are asserted never to fire;
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
 * operations per worker after the prefix (3; OPS0 / OPS1 per worker),
 * KILLS (1), RKILLS (0); with RING: COPS (1) racing dequeues of the live
 * consumer, NENQ (1) handles per enqueue of worker 0, -DDEQ0 (worker 0
 * dequeues too), -DSCRIPT (worker 0 runs enqueue, get, enqueue, ... and
 * worker 1 only dequeues: the operations fixed, their interleavings and
 * kill points all explored).
 * NM = ceil(N/B) + NS + 2, the formula of tm_shm_mag_geometry with
 * max_slots = NS = the slots that own magazines in the model (2 workers + 1
 * recoverer, + 1 with RKILLS).  Worker 0 first runs a prefix alone, with no
 * kill: CS + 1 gets then CS puts (its cache full, one object in hand, so its
 * next put flushes); a reachable state, reached by the real operations, that
 * brings both refill and flush within OPS.  check.sh runs: the default;
 * B=2 CS=2 (the PART stack); KILLS=2; RKILLS=1 with N=2 OPS=2; the RING
 * lines of check.sh (each ~1.5 GB at most, under a minute).
 *
 * CHECKED: an object is never handed to two live parties (ghost gh[], and not
 * in another live cache); a pop returns a magazine OWNED by the popper and
 * on no stack; a magazine state changes only while its operation is in the
 * head; recovery adopts only after no head names the dead slot; at the end
 * (everyone done or dead and recovered): no operation left in a head, every
 * magazine on exactly one stack exactly once, in state ON(that stack), with
 * a count that fits the stack; every object in exactly one place (listed in
 * a magazine on a stack, a live cache, a live holder, a published cell
 * whose handle is still marked RING) whose owner word agrees (MAG(m),
 * CACHED(s), HELD(s), RING); a stale cell (its handle no longer RING) is no
 * place.  RING: a dequeue takes a handle no other live party holds; the
 * producer's publish and tombstone CASes find its own claim; no cell or
 * position in a state "only a scribble leaves"; the final drain never meets
 * a claimed cell (no dead producer's claim left: nothing stuck), ends with
 * cons_pos >= prod_pos and every cell free.
 *
 * FOUND (in shm.h as first written, -DRING -DSCRIPT -DKILLS=2; fixed, and
 * kept as the must-fail variant -DNO_RETIRE_STALE): an object lost.  A
 * consumer's take leaves the cell published until it is retired; if that
 * consumer dies in between, the stale cell (p + 1, h) outlives h's return to
 * the depot.  h can then be re-enqueued by a producer that dies after
 * marking it RING(0, x) but before publishing: tm_shm__recover_rings finds
 * the stale cell, sees RING(0) and sets inring[h], so step 4 leaves h; a
 * consumer that read that cell (and the owner word, not RING then) before
 * retires it by a CAS that still succeeds, and h is marked RING(0, x) in no
 * cell: lost until slot x is used and recovered again.  The fix, in shm.h
 * and modelled here: the recovery of x retires every published cell whose
 * handle is HELD(x) (taken by x, not retired) before step 4 gives h back;
 * then a cell with a RING handle is always that handle's live enqueue.
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
 *  -DRING -DPUBLISH_BEFORE_MARK  the producer publishes the cell, then
 *                  marks the handle: a consumer finds it still HELD, retires
 *                  the cell, and the handle is marked RING in no cell: lost;
 *  -DRING -DNO_TOMBSTONE  recovery leaves a dead producer's claimed cells:
 *                  the final drain stops at one for ever;
 *  -DRING -DRETIRE_BEFORE_TAKE  the consumer retires the cell before its
 *                  owner CAS: killed in between, the object is lost.
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
#ifndef OPS0
#define OPS0 OPS          /* worker 0's operations after its prefix */
#endif
#ifndef OPS1
#define OPS1 OPS
#endif
#define MYOPS (me == 0 -> OPS0 : OPS1)
/* -DSCRIPT (with -DRING): worker 0 runs enqueue, get, enqueue, ... and
 * worker 1 only dequeues: the operations fixed, every interleaving and kill
 * point of them still explored (a scenario the full choice cannot reach
 * within the state budget). */
#ifdef SCRIPT
#define MAYGET (me == 0 && (pre > 0 || ops % 2 == 1))
#define MAYPUT (pre > 0)
#define MAYENQ (me == 0 && ops % 2 == 0)
#else
#define MAYGET true
#define MAYPUT true
#define MAYENQ true
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
#define RSIZE 2           /* ring cells (capacity 2: positions wrap every 2) */
#define CFREE 255
#define CTOMB 254
#define CRSV(s) (128 + (s))
#define IS_RSV(v) ((v) >= 128 && (v) < CTOMB)
#ifndef NENQ
#define NENQ 1            /* handles per enqueue of worker 0 (2: the all-or-nothing bulk) */
#endif
#define ENQN (me == 0 -> NENQ : 1)   /* worker 1 enqueues one at a time */
#define CSL NS            /* the ring's live consumer (-DRING): never killed */
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
bit dead[NS + 1];     /* + 1: the ring's consumer (slot NS, -DRING) */
bit done[NS + 1];
byte kills, rkills;
bit started;         /* worker 0's prefix is over: the others run, kills allowed */
byte gh[N];          /* ghost: slot + 1 of the live party holding h, 0 none */
#ifdef RING
/* pool ring 0: cells [seq | val], positions unbounded-in-effect (bytes: a
 * run claims far fewer than 256 positions) */
byte cseq[RSIZE];
byte cval[RSIZE];
byte prodp, consp;   /* prod_pos, cons_pos (hints) */
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
    cn = 0;
    do
    :: cn < 2 ->
        if
        :: cn != me && !dead[cn] ->
            ck = 0;
            do
            :: ck < clen[cn] -> assert(cache[cn * CS + ck] != h); ck++
            :: else -> break
            od;
            ck = 0
        :: else -> skip
        fi;
        cn++
    :: else -> break
    od;
    cn = 0;
    gh[h] = me + 1
}

#ifdef RING
/* ---- pool ring 0: tm_shm__ring_claim, tm_shm_ring_enqueue, _dequeue ---- */

/* tm_shm__ring_claim: claim the cell at prod_pos for `me`.  e = 0 and the
 * position in res, or e = 1: full. */
inline ring_claim(res) {
    do
    :: t = prodp;                                          /* load prod_pos */
        atomic { cs = cseq[t % RSIZE]; cv = cval[t % RSIZE]; d = cs - t }   /* load the cell */
        if
        :: d == 0 && cv == CFREE ->
            atomic {                                       /* CAS (t, FREE) -> (t, RSV(me)) */
                if
                :: cseq[t % RSIZE] == cs && cval[t % RSIZE] == cv -> cval[t % RSIZE] = CRSV(me); ok = 1; K
                :: else -> ok = 0
                fi
            }
            if
            :: ok ->
                res = t;
                atomic { if :: prodp == t -> prodp = t + 1; K :: else -> skip fi };  /* CAS prod_pos */
                e = 0; break
            :: else -> skip
            fi
        :: d == 1 - RSIZE || d == -RSIZE -> e = 1; break    /* last lap's entry not retired: full */
        :: else ->                                         /* claimed, published or retired at t */
            assert(d >= 0);                                /* (d < 0: only a scribble) */
            atomic { if :: prodp == t -> prodp = t + 1; K :: else -> skip fi }  /* move the hint on */
        fi
    od;
    t = 0; cs = 0; cv = 0; d = 0; ok = 0
}

/* mark each handle RING(0, me): the load-then-CAS of a word we hold (HELD(me),
 * which nobody else writes) is one step, as for put */
inline ring_mark() {
    j = 0;
    do
    :: j < ENQN ->
        atomic {
            assert(owner[eh[j]] == HELD(me) && gh[eh[j]] == me + 1);
            owner[eh[j]] = RINGED(me); gh[eh[j]] = 0; j++; K
        }
    :: else -> break
    od;
    j = 0
}

/* publish each claimed cell: CAS (pos, RSV(me)) -> (pos + 1, h); only a
 * recoverer that judged us dead could change our claim, so it succeeds */
inline ring_publish() {
    j = 0;
    do
    :: j < ENQN ->
        atomic {
            assert(cseq[pos[j] % RSIZE] == pos[j] && cval[pos[j] % RSIZE] == CRSV(me));
            cseq[pos[j] % RSIZE] = pos[j] + 1; cval[pos[j] % RSIZE] = eh[j]; j++; K
        }
    :: else -> break
    od;
    j = 0
}

/* tm_shm_ring_enqueue of the last ENQN handles in hand, all or nothing.  The
 * count pre-check is left out: it returns 0 before touching shared memory,
 * the same as not enqueuing (the claim still detects a full ring). */
inline ring_enqueue() {
    atomic { j = 0; do :: j < ENQN -> nh--; eh[j] = hh[nh]; hh[nh] = 0; j++ :: else -> break od; j = 0 }
    claimed = 0; e = 0;
    do
    :: claimed < ENQN ->
        ring_claim(pos[claimed]);
        if :: e != 0 -> break :: else -> claimed++ fi
    :: else -> break
    od;
    if
    :: e == 0 ->
#ifdef PUBLISH_BEFORE_MARK
        ring_publish();
        ring_mark()
#else
        ring_mark();
        ring_publish()
#endif
    :: else ->                    /* give_up: the claimed cells become tombstones */
        j = 0;
        do
        :: j < claimed ->
            atomic {
                assert(cseq[pos[j] % RSIZE] == pos[j] && cval[pos[j] % RSIZE] == CRSV(me));
                cseq[pos[j] % RSIZE] = pos[j] + 1; cval[pos[j] % RSIZE] = CTOMB; j++; K
            }
        :: else -> break
        od;
        atomic { j = 0; do :: j < ENQN -> hh[nh] = eh[j]; nh++; j++ :: else -> break od; j = 0 }
    fi;
    atomic { j = 0; do :: j < ENQN -> eh[j] = 0; pos[j] = 0; j++ :: else -> break od; j = 0; claimed = 0; e = 0 }
}

/* retire the cell at t read as (cs, cv): CAS -> (t + size, FREE) (a failed
 * CAS: someone retired it first) */
inline ring_retire() {
    atomic {
        if
        :: cseq[t % RSIZE] == cs && cval[t % RSIZE] == cv -> cseq[t % RSIZE] = t + RSIZE; cval[t % RSIZE] = CFREE; K
        :: else -> skip
        fi
    }
}

/* tm_shm_ring_dequeue of one handle into hh[] (got = 1), or none: empty, or
 * EBUSY at a claimed cell (the caller retries later; in the final drain,
 * dr = 1, that is a ring stuck for ever). */
inline ring_dequeue() {
    got = 0;
    do
    :: t = consp;                                          /* load cons_pos */
        atomic { cs = cseq[t % RSIZE]; cv = cval[t % RSIZE]; d = cs - t }   /* load the cell */
        if
        :: d == 1 ->
            assert(cv < N || cv == CTOMB);
#ifdef RETIRE_BEFORE_TAKE
            ring_retire();
#endif
            if
            :: cv < N ->
                w = owner[cv];                             /* load owner */
                atomic {                                   /* CAS RING(0, *) -> HELD(me): the commit */
                    if
                    :: OKIND(w) == RINGK && owner[cv] == w ->
                        acquire(cv); owner[cv] = HELD(me); hh[nh] = cv; nh++; got = 1; K
                    :: else -> skip
                    fi
                }
            :: else -> skip                                /* a tombstone */
            fi;
#ifndef RETIRE_BEFORE_TAKE
            ring_retire();
#endif
            atomic { if :: consp == t -> consp = t + 1; K :: else -> skip fi };  /* CAS cons_pos */
            if :: got -> break :: else -> skip fi
        :: d == 0 && IS_RSV(cv) -> assert(!dr); break      /* EBUSY (in the drain: stuck) */
        :: d == 0 && cv == CFREE -> break                  /* empty */
        :: else ->                                         /* retired (d == size) or lapped */
            assert(d >= 0);
            atomic { if :: consp == t -> consp = t + 1; K :: else -> skip fi }
        fi
    od;
    t = 0; cs = 0; cv = 0; d = 0; w = 0; got = 0
}
#endif

proctype worker(byte me) {
    byte ops, pre, h, m, i, c, k, base, nh;
    byte hh[HMAX];      /* the objects in hand: hh[0 .. nh-1] */
    int hv, hd2, hw, hnil, e0, p0;
    byte hm, ht, pt, ck, ct, cn, w, uk_, um_;
    bit ok;
#ifdef RING
    byte t, cs, cv, got, claimed, e, j;
    short d;
    bit dr;
    byte pos[NENQ], eh[NENQ];
#endif
    if :: me == 0 -> pre = PRE :: else -> skip fi;
    do
    :: pre > 0 && ops == PRE -> started = 1; pre = 0; ops = 0    /* prefix over */
    :: pre == 0 && ops == MYOPS -> break
    /* ---- get (one object) ---- */
    :: (pre == 0 && ops < MYOPS || pre > 0 && ops < PRE_GETS) && nh < HMAX && MAYGET ->
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
    :: (pre == 0 && ops < MYOPS || pre > 0 && ops >= PRE_GETS && ops < PRE) && nh > 0 && MAYPUT ->
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
    /* ---- enqueue ENQN held handles on ring 0 (both workers) ---- */
    :: pre == 0 && ops < MYOPS && nh >= ENQN && MAYENQ ->
        ops++;
        ring_enqueue()
    /* ---- dequeue one handle from ring 0 (worker 1; worker 0 too with -DDEQ0) ---- */
#ifdef DEQ0
    :: pre == 0 && ops < MYOPS && nh < HMAX ->
#else
    :: me == 1 && pre == 0 && ops < MYOPS && nh < HMAX ->
#endif
        ops++;
        ring_dequeue()
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
    /* 2. tm_shm__recover_rings: x's claimed cells become tombstones; inring
     * marks the handles published (in any cell) and still marked RING(0) */
    inring = 0; k = 0;
    do
    :: k < RSIZE ->
        atomic { cs = cseq[k]; cv = cval[k] }              /* load the cell */
        if
        :: cv == CRSV(x) ->
#ifndef NO_TOMBSTONE
            atomic {                                       /* CAS -> (seq + 1, TOMB) */
                if
                :: cseq[k] == cs && cval[k] == cv -> cseq[k] = cs + 1; cval[k] = CTOMB; K
                :: else -> skip
                fi
            }
#else
            skip
#endif
        :: cv < N ->
            w = owner[cv];                                 /* load owner */
            if
            :: OKIND(w) == RINGK -> inring = inring | (1 << cv)
#ifndef NO_RETIRE_STALE
            :: w == HELD(x) ->                             /* x took it, did not retire the cell */
                atomic {                                   /* CAS -> (seq - 1 + size, FREE) */
                    if
                    :: cseq[k] == cs && cval[k] == cv -> cseq[k] = cs - 1 + RSIZE; cval[k] = CFREE; K
                    :: else -> skip
                    fi
                }
#endif
            :: else -> skip
            fi;
            w = 0
        :: else -> skip
        fi;
        k++
    :: else -> break
    od;
    k = 0; cs = 0; cv = 0;
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
    /* 5. release the slot (last) */
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
#ifdef RING
    byte cs, cv;
#endif
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

#ifdef RING
#ifndef COPS
#define COPS 1
#endif
/* The ring's live consumer (slot CSL, never killed, no cache, never puts):
 * COPS dequeues racing with everyone, then, once everyone else is done or
 * dead and recovered, the final drain: it must empty the ring (no claimed
 * cell left, cons_pos at or past prod_pos, every cell free). */
proctype consumer(byte me) {
    byte ops, nh, h, w, t, cs, cv, got, ck, cn, k_;
    short d;
    bit dr;
    byte hh[N];
    do
    :: ops < COPS -> ops++; ring_dequeue()
    :: else -> break
    od;
    /* quiescent: the workers done or dead, every dead slot recovered and
     * released, the recoverers done (Spin ends processes last-created
     * first, so _nr_pr cannot say it) */
    ((done[0] || dead[0]) && (done[1] || dead[1]) && (done[2] || dead[2]) &&
     (NS == 3 || done[NS - 1]) &&
     !(dead[0] && sown[0]) && !(dead[1] && sown[1]) && !(dead[2] && sown[2]));
    dr = 1;
    do
    :: h = nh; ring_dequeue(); if :: nh == h -> break :: else -> skip fi
    od;
    atomic {
        assert(consp >= prodp);
        k_ = 0;
        do :: k_ < RSIZE -> assert(cval[k_] == CFREE); k_++ :: else -> break od
    }
    done[me] = 1;
died:
    skip
}
#endif

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
#ifdef RING
        s = 0;
        do :: s < RSIZE -> cseq[s] = s; cval[s] = CFREE; s++ :: else -> break od;
#endif
        run worker(0)
    }
    started;                   /* worker 0's prefix, alone and unkillable */
    atomic {
        run worker(1);
        run recoverer(2);
#ifdef RING
        run consumer(CSL);
#endif
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
            /* the live consumer's hand; a published cell still marked RING
             * (none after the drain); a stale cell (handle not RING) is no place */
            if :: gh[h] == CSL + 1 -> places++; assert(owner[h] == HELD(CSL)) :: else -> skip fi;
            cnt = 0;
            do
            :: cnt < RSIZE ->
                if :: cval[cnt] == h && OKIND(owner[h]) == RINGK -> places++ :: else -> skip fi;
                cnt++
            :: else -> break
            od;
#endif
            assert(places == 1);
            h++
        :: else -> break
        od
    }
}
