#!/bin/sh
# Model-check the tagged stack, the cache-steal handshake, the magazine
# depot and the shared pool's kill-safe depot under SIGKILL (shmdepot.pml)
# with Spin.
# Needs: spin, a C compiler (apt-get install -y spin gcc).  ~3.5 min on 2
# cores; pan stops at 4 GB (MEMLIM), which reads as "search incomplete".
# Each model runs in its correct variant (must have 0 errors) and in a broken
# variant (must report an error: proof that the model can catch the bug).
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
CC=${CC:-cc}
fail=0

# run MODEL DEFINE EXPECT(ok|error) WHAT
run() {
    model=$1 define=$2 expect=$3 what=$4
    dir="$WORK/$model$define"
    mkdir -p "$dir"
    cp "$HERE/$model.pml" "$dir/"
    (
        cd "$dir"
        spin -a $define "$model.pml" >spin.log 2>&1 || { cat spin.log; exit 3; }
        $CC -O2 -DSAFETY -DCOLLAPSE -DMEMLIM=4000 -o pan pan.c >cc.log 2>&1 || { cat cc.log; exit 3; }
        ./pan -m200000 >pan.log 2>&1 || true
    ) || { echo "check.sh: $what: spin/cc failed"; fail=1; return; }
    log="$dir/pan.log"
    if grep -q "Search not completed" "$log" && ! grep -q "errors: [1-9]" "$log"; then
        echo "check.sh: $what: search incomplete"; cat "$log"; fail=1; return
    fi
    errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$log" | head -n1)
    states=$(sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' "$log" | head -n1)
    if [ "$expect" = ok ] && [ "$errors" = 0 ]; then
        echo "ok    $what ($states states, 0 errors)"
    elif [ "$expect" = error ] && [ "${errors:-0}" != 0 ]; then
        echo "ok    $what (counterexample found, as it must: $(grep -m1 '^pan:1' "$log" || true))"
    else
        echo "FAIL  $what: expected $expect, got errors=$errors"; cat "$log"; fail=1
    fi
}

run stack "-DTAGGED" ok    "stack.pml tagged head: no lost/duplicated index, no double ownership"
run stack ""         error "stack.pml untagged head: ABA corrupts the stack"
run steal "-DASYM"   ok    "steal.pml asymmetric (membarrier) handshake: mutual exclusion, each index once"
run steal "-DSYM"    ok    "steal.pml symmetric (seq_cst) handshake: mutual exclusion, each index once"
run steal "-DBROKEN" error "steal.pml without barriers: owner and stealer collide"
run depot ""                        ok    "depot.pml magazines, 2 threads: each object in one place, each magazine on one stack"
run depot "-DTHREADS=3 -DREFILLS=1" ok    "depot.pml magazines, 3 threads, one magazine a round"
run depot "-DSPARES=2"              ok    "depot.pml magazines, 2 threads keeping 2 spares each"
run depot "-DUNTAGGED -DTHREADS=3 -DREFILLS=1" error "depot.pml untagged heads: ABA loses or duplicates a magazine"
run depot "-DRECYCLE_EARLY"         error "depot.pml magazine recycled before its contents are copied out"
run shmdepot ""                     ok    "shmdepot.pml shared depot, a worker SIGKILLed at any step, recovered while the other runs"
run shmdepot "-DB=2 -DCS=2"         ok    "shmdepot.pml magazines of 2 (the PART stack)"
run shmdepot "-DKILLS=2 -DOPS=2"    ok    "shmdepot.pml both workers killed"
run shmdepot "-DRKILLS=1 -DN=2 -DOPS=2" ok "shmdepot.pml the recoverer killed at any step too (a second one takes over)"
run shmdepot "-DRING -DOPS=2 -DCOPS=0" ok "shmdepot.pml MPMC pool ring: 2 producers, worker 1 consuming, final drain"
run shmdepot "-DRING -DN=2 -DOPS=2 -DPRE_PUTS=0" ok "shmdepot.pml MPMC pool ring with a live consumer racing"
run shmdepot "-DRING -DNENQ=2 -DOPS=2 -DCOPS=0" ok "shmdepot.pml MPMC pool ring, 2-handle enqueue (all or nothing, give-up tombstones)"
run shmdepot "-DRING -DSCRIPT -DKILLS=2 -DOPS0=3 -DOPS1=2 -DCOPS=2 -DPRE_PUTS=0" ok "shmdepot.pml MPMC pool ring, a consumer and a producer killed (stale cells retired by recovery)"
run shmdepot "-DRING -DSCRIPT -DKILLS=2 -DOPS0=3 -DOPS1=1 -DPRE_PUTS=0 -DNO_RETIRE_STALE" error "shmdepot.pml recovery leaves a dead consumer's stale cell: a re-enqueued handle is lost"
run shmdepot "-DPLAIN_POP"          error "shmdepot.pml plain Treiber pop then state store: a kill strands a magazine"
run shmdepot "-DNO_RECHECK"         error "shmdepot.pml helper without head re-check, seq-less state CAS: stale helper re-applies"
run shmdepot "-DNO_SEQ"             error "shmdepot.pml helper re-checks but its state CAS ignores seq"
run shmdepot "-DNO_FINISH"          error "shmdepot.pml recovery adopts before finishing the dead slot's head ops"
run shmdepot "-DRKILLS=1 -DN=2 -DOPS=2 -DNO_TAKEOVER" error "shmdepot.pml dead recoverer's marked slots not taken over"
run shmdepot "-DRING -DOPS=2 -DCOPS=0 -DPUBLISH_BEFORE_MARK" error "shmdepot.pml ring producer publishes before marking: a consumer skips the handle, lost"
run shmdepot "-DRING -DOPS=2 -DCOPS=0 -DNO_TOMBSTONE" error "shmdepot.pml recovery leaves a dead producer's claim: the ring is stuck"
run shmdepot "-DRING -DOPS=2 -DCOPS=0 -DRETIRE_BEFORE_TAKE" error "shmdepot.pml ring consumer retires before its owner CAS: a kill loses the object"
exit $fail
