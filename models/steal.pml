/* steal.pml - the cache steal handshake of include/turbomem/cache.h.
 *
 * Memory model: the OWNER runs on a TSO CPU (x86): its stores go through a
 * FIFO store buffer (sb[]) and drain to memory at any time; its loads see its
 * own buffered store first (store forwarding).  The STEALER is sequentially
 * consistent (its stores are SEQ_CST: xchg/mfence on x86).
 *
 *   owner entry:  in_call = 1; B_o; load steal       (ASYM: B_o = nothing)
 *                 if steal: in_call = 0, wait for steal == 0, retry
 *   owner exit:   in_call = 0 (release store: just a buffered store on TSO)
 *   stealer:      steal = 1; B_s; load in_call; if 0: drain cache; steal = 0
 *
 * Variants (-D):  ASYM  B_s = membarrier: drains the owner's store buffer
 *                 SYM   B_o = mfence (owner drains its buffer), B_s = nothing
 *                 BROKEN neither (must FAIL: shows the model can find the race)
 *
 * Objects: N indices, each in exactly one place: the shared stack (instack),
 * the owner's cache (cache[0..clen)) or held by the owner's caller (held).
 * Owner call = get (cache -> held) or put (held -> cache); stealer = move the
 * whole cache to the stack.  The cache itself (clen, slots) lives in plain
 * memory and is only touched inside the handshake.  Checked: never owner and
 * stealer in the cache at once, and at the end every index exactly once.
 */
#define N 2
#define CALLS 3
#define STEALS 2

byte in_call = 0;          /* memory */
byte steal = 0;            /* memory */
/* owner's store buffer for in_call: FIFO of pending stores.  Entry 1 is
 * in_call = 1; 0 is in_call = 0; 2 is in_call = 0 ending a critical section. */
#define SBMAX 3
byte sb[SBMAX];
byte sbn = 0;

byte clen = 0;
byte cache[N];
bool instack[N];
bool held[N];

bool owner_cs = 0;         /* ghost: owner is using its cache */
bool stealer_cs = 0;       /* ghost: stealer is draining it */
byte finished = 0;

/* a full buffer stalls the CPU until an entry drains */
inline sb_store(v) { atomic { sbn < SBMAX -> sb[sbn] = v; sbn++ } }
inline sb_flush_one() {
    atomic {
        sbn > 0 -> in_call = (sb[0] == 1);
        /* the owner leaves its critical section once that in_call = 0 is visible */
        if :: sb[0] == 2 -> owner_cs = 0 :: else -> skip fi;
        sb[0] = sb[1]; sb[1] = sb[2]; sbn--
    }
}

proctype flusher() {           /* the CPU draining the owner's store buffer */
    do
    :: sb_flush_one()
    :: finished == 2 && sbn == 0 -> break
    od
}

proctype owner() {
    byte c, i, s;
    bool cs;
    for (c : 1 .. CALLS) {
        cs = 0;
        sb_store(1);                   /* in_call = 1 */
#ifdef SYM
        (sbn == 0)                     /* mfence: stall until the buffer drained */
#endif
        s = steal;                     /* load; steal is never in our buffer */
        if
        :: s == 0 ->
            atomic { assert(!stealer_cs); owner_cs = 1; cs = 1 };
            if
            :: clen > 0 ->                                  /* get */
                i = cache[clen - 1]; clen--; assert(!held[i]); held[i] = 1
            :: else ->
                /* miss: take one from the stack if any (a lock-free pop) */
                atomic {
                    if
                    :: instack[0] -> instack[0] = 0; assert(!held[0]); held[0] = 1
                    :: instack[1] -> instack[1] = 0; assert(!held[1]); held[1] = 1
                    :: else -> skip
                    fi
                }
            fi;
            if                                             /* put one back */
            :: held[0] && clen < N -> held[0] = 0; cache[clen] = 0; clen++
            :: held[1] && clen < N -> held[1] = 0; cache[clen] = 1; clen++
            :: true -> skip
            fi;
            assert(!stealer_cs)
        :: else ->
            /* claimed: leave the call (in_call = 0), wait until the claim
             * drops (pool.c tm_cache_enter_wait_); the call is retried as
             * the next one */
            sb_store(0);
            (steal == 0)
        fi;
        if
        :: cs -> sb_store(2)                                /* in_call = 0, release */
        :: !cs && s == 0 -> sb_store(0)
        :: else -> skip                                     /* already left */
        fi
    }
    finished++
}

proctype stealer() {
    byte k, i;
    for (k : 1 .. STEALS) {
        steal = 1;                     /* SEQ_CST store */
#ifdef ASYM
        /* membarrier: returns once the owner's CPU ran a full barrier, i.e.
         * at an instant when every store it issued before is visible; its
         * loads after that instant see steal = 1 (already in memory). */
        (sbn == 0)
#endif
        if
        :: in_call == 0 ->
            atomic { assert(!owner_cs); stealer_cs = 1 };
            do
            :: clen > 0 -> i = cache[clen - 1]; assert(!instack[i]); instack[i] = 1; clen--
            :: else -> break
            od;
            atomic { assert(!owner_cs); stealer_cs = 0 }
        :: else -> skip
        fi;
        steal = 0
    }
    finished++
}

init {
    atomic {
        instack[0] = 1; instack[1] = 1;
        run flusher(); run owner(); run stealer()
    }
    (finished == 2 && sbn == 0);
    /* every index in exactly one place */
    byte i, j, where;
    for (i : 0 .. N - 1) {
        where = instack[i] + held[i];
        for (j : 0 .. N - 1) { if :: j < clen && cache[j] == i -> where++ :: else -> skip fi }
        assert(where == 1)
    }
}
