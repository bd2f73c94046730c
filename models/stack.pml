/* stack.pml - the tagged lock-free index stack of include/turbomem/stack.h.
 *
 * head = (htag, htop); links in nxt[].  pop: read head, read nxt[top], CAS.
 * push: read head, nxt[idx] = top, CAS.  With -DTAGGED the CAS compares the
 * tag as well and every successful CAS increments it; without it, only the
 * top index (the classic ABA bug).  The tag is a byte and the run is bounded
 * (at most THREADS * ROUNDS * 4 updates < 256), so it cannot wrap here: the
 * model checks the protocol, stack.h states the 2^32-wrap assumption.
 *
 * Checked: an index is never owned by two threads at once (assert in pop),
 * and at the end every index is on the stack exactly once.
 */
#define N 3          /* indices 0..N-1 */
#define NIL 255
#define THREADS 3
#define ROUNDS 1

byte htag = 0;
byte htop = 0;
byte nxt[N];
bool owned[N];
byte done = 0;

inline cas_head(otag, otop, ntop, ok) {
    atomic {
#ifdef TAGGED
        if
        :: (htag == otag && htop == otop) -> htop = ntop; htag = htag + 1; ok = 1
        :: else -> ok = 0
        fi
#else
        if
        :: (htop == otop) -> htop = ntop; htag = htag + 1; ok = 1
        :: else -> ok = 0
        fi
#endif
    }
}

inline pop(res) {
    ok = 0;
    do
    :: ok -> break
    :: else ->
        atomic { otag = htag; otop = htop };
        if
        :: otop == NIL -> res = NIL; break
        :: else ->
            below = nxt[otop];           /* may be stale */
            cas_head(otag, otop, below, ok);
            if
            :: ok -> res = otop;
                     atomic { assert(!owned[res]); owned[res] = 1 }
            :: else -> skip
            fi
        fi
    od
}

inline push(idx) {
    ok = 0;
    do
    :: ok -> break
    :: else ->
        atomic { otag = htag; otop = htop };
        nxt[idx] = otop;
        atomic {
            cas_head(otag, otop, idx, ok);
            if :: ok -> owned[idx] = 0 :: else -> skip fi
        }
    od
}

proctype worker() {
    byte otag, otop, below, a, b, r;
    bool ok;
    for (r : 1 .. ROUNDS) {
        pop(a);
        pop(b);
        if :: a != NIL -> push(a) :: else -> skip fi;
        if :: b != NIL -> push(b) :: else -> skip fi
    }
    done++
}

init {
    byte i;
    atomic {
        for (i : 0 .. N - 2) { nxt[i] = i + 1 }
        nxt[N - 1] = NIL;
        htop = 0;
        for (i : 1 .. THREADS) { run worker() }
    }
    (done == THREADS);
    /* every index on the stack exactly once */
    byte seen[N], cur = htop, count = 0;
    do
    :: cur == NIL -> break
    :: else ->
        assert(count < N);
        assert(seen[cur] == 0);
        seen[cur] = 1; count++;
        cur = nxt[cur]
    od;
    assert(count == N)
}
