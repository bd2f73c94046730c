/*
 * ring_stress.c - unit checks and a multi-threaded stress test for
 * include/turbomem/ring.h.
 *
 * usage: ring_stress [producers [consumers [iters [capacity]]]]
 *   defaults: 4 producers, 4 consumers, 200000 handles per producer,
 *   capacity 1000 (deliberately not a power of two).
 *
 * Single-thread checks: capacity edge cases, full/empty behaviour, bulk
 * all-or-nothing, burst partial, 2^32 counter wraparound, every flag mode.
 *
 * Stress: producers enqueue handles (producer id << 24 | sequence) with a
 * random mix of single/bulk/burst calls of 1..64 handles; consumers dequeue
 * with a mix too.  Checked: every handle comes out exactly once, handles of
 * one producer reach any one consumer in increasing order, no foreign or
 * corrupt handle appears, and the ring is empty with consistent counters at
 * the end.  The counters start just below 2^32 so they wrap mid-run.
 * Configurations: MPMC, MPMC with a tiny ring, SP/SC, SP/MC, MP/SC.
 *
 * Exits 1 with a "ring_stress: FAIL ..." line on the first violation, or
 * when no handle moves for RING_STRESS_STALL_S seconds (default 30).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* This test runs more threads than a small CI box has cores.  With the
 * ring's default pure spinning, a consumer (or producer) preempted between
 * its head and tail update makes every later one spin out its time slice,
 * and on 2 cores that convoy sustains itself: runs measured 2 s or > 100 s
 * at random.  So by default the test uses the ring's yield hook; build with
 * -DRING_STRESS_PURE_SPIN (e.g. make EXTRA_CFLAGS=-DRING_STRESS_PURE_SPIN)
 * to exercise pure spinning on a machine with enough cores. */
#ifndef RING_STRESS_PURE_SPIN
#define TM_RING_YIELD() sched_yield()
#endif
#include "turbomem/ring.h"

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "ring_stress: FAIL %s:%d: (%s) ", __FILE__,       \
                    __LINE__, #cond);                                         \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            fflush(stderr);                                                   \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define PID_SHIFT 24
#define SEQ_MASK ((1u << PID_SHIFT) - 1)
#define MAX_PROD 255u
#define MAX_BATCH 64u

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint32_t xorshift32(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

/* Only while quiescent: move all four counters to pos (empty ring). */
static void set_pos(tm_ring_t *r, uint32_t pos)
{
    r->prod.head = r->prod.tail = r->cons.head = r->cons.tail = pos;
}

static void check_pos(const tm_ring_t *r, uint32_t pos)
{
    CHECK(r->prod.head == pos && r->prod.tail == pos && r->cons.head == pos &&
              r->cons.tail == pos,
          "counters ph=%" PRIu32 " pt=%" PRIu32 " ch=%" PRIu32 " ct=%" PRIu32
          ", expected all %" PRIu32,
          r->prod.head, r->prod.tail, r->cons.head, r->cons.tail, pos);
}

/* ------------------------------------------------------------------ */
/* single-thread unit checks                                            */
/* ------------------------------------------------------------------ */

static uint32_t next_pow2(uint32_t c)
{
    uint32_t p = 1;
    while (p < c)
        p <<= 1;
    return p;
}

static void unit_invalid(void)
{
    static unsigned char buf[4096] TM_ALIGNED(64);
    CHECK(tm_ring_memsize(0) == 0, "memsize(0)");
    CHECK(tm_ring_memsize(0x80000001u) == 0, "memsize(2^31+1)");
    CHECK(tm_ring_memsize(UINT32_MAX) == 0, "memsize(UINT32_MAX)");
    CHECK(tm_ring_create(0, 0) == NULL, "create(0)");
    CHECK(tm_ring_create(0x80000001u, 0) == NULL, "create(2^31+1)");
    CHECK(tm_ring_create(UINT32_MAX, 0) == NULL, "create(UINT32_MAX)");
    CHECK(tm_ring_create(8, 4u) == NULL, "create with unknown flag");
    CHECK(tm_ring_init(NULL, 8, 0) == -1, "init(NULL)");
    CHECK(tm_ring_init((tm_ring_t *)(void *)(buf + 8), 8, 0) == -1, "init misaligned");
    CHECK(tm_ring_init((tm_ring_t *)(void *)buf, 0, 0) == -1, "init(0)");
    CHECK(tm_ring_init((tm_ring_t *)(void *)buf, 8, 0x10u) == -1, "init bad flags");
    CHECK(tm_ring_memsize(8) <= sizeof buf, "buffer too small for test");
    CHECK(tm_ring_init((tm_ring_t *)(void *)buf, 8, 0) == 0, "init(8) in caller memory");
    CHECK(tm_ring_capacity((tm_ring_t *)(void *)buf) == 8, "capacity after init");
}

/* Fill to capacity, check full, drain, check empty and FIFO order. */
static void unit_fill_drain(uint32_t cap, unsigned flags)
{
    tm_ring_t *r = tm_ring_create(cap, flags);
    uint32_t i, v;
    size_t ms = tm_ring_memsize(cap);
    CHECK(r != NULL, "create(%" PRIu32 ")", cap);
    CHECK(((uintptr_t)r & 63) == 0, "create() result not 64-byte aligned");
    CHECK(tm_ring_capacity(r) == cap, "capacity %" PRIu32, tm_ring_capacity(r));
    CHECK(r->size == next_pow2(cap) && r->mask == r->size - 1,
          "size %" PRIu32 " for capacity %" PRIu32, r->size, cap);
    CHECK(ms % 64 == 0 && ms >= sizeof(tm_ring_t) + (size_t)r->size * 4, "memsize %zu", ms);
    CHECK(tm_ring_count(r) == 0, "new ring not empty");
    CHECK(tm_ring_dequeue(r, &v) == 0, "dequeue from empty ring");
    for (i = 0; i < cap; i++) {
        CHECK(tm_ring_enqueue(r, i * 7u + 1) == 1, "enqueue %" PRIu32 " of %" PRIu32, i, cap);
        CHECK(tm_ring_count(r) == i + 1, "count %" PRIu32, tm_ring_count(r));
    }
    CHECK(tm_ring_enqueue(r, 99) == 0, "enqueue into full ring (cap %" PRIu32 ")", cap);
    v = 5;
    CHECK(tm_ring_enqueue_burst(r, &v, 1) == 0, "burst into full ring");
    CHECK(tm_ring_enqueue_bulk(r, &v, 1) == 0, "bulk into full ring");
    CHECK(tm_ring_count(r) == cap, "count of full ring");
    for (i = 0; i < cap; i++) {
        CHECK(tm_ring_dequeue(r, &v) == 1, "dequeue %" PRIu32, i);
        CHECK(v == i * 7u + 1, "FIFO: got %" PRIu32 " expected %" PRIu32, v, i * 7u + 1);
    }
    CHECK(tm_ring_dequeue(r, &v) == 0, "dequeue from drained ring");
    CHECK(tm_ring_count(r) == 0, "count of drained ring");
    check_pos(r, cap);
    tm_ring_free(r);
}

/* Bulk is all-or-nothing, burst takes what fits; n == 0 is a no-op. */
static void unit_bulk_burst(unsigned flags)
{
    uint32_t in[32], out[32], i;
    tm_ring_t *r = tm_ring_create(10, flags); /* size 16, capacity 10 */
    CHECK(r != NULL, "create(10)");
    for (i = 0; i < 32; i++)
        in[i] = 1000 + i;
    CHECK(tm_ring_enqueue_bulk(r, in, 0) == 0, "bulk n=0");
    CHECK(tm_ring_enqueue_burst(r, in, 0) == 0, "burst n=0");
    CHECK(tm_ring_enqueue_bulk(r, in, 11) == 0, "bulk n > capacity");
    CHECK(tm_ring_count(r) == 0, "bulk n > capacity left something behind");
    CHECK(tm_ring_enqueue_bulk(r, in, 7) == 7, "bulk 7 into empty");
    CHECK(tm_ring_enqueue_bulk(r, in + 7, 4) == 0, "bulk 4 with 3 free must fail");
    CHECK(tm_ring_count(r) == 7, "failed bulk changed count to %" PRIu32, tm_ring_count(r));
    CHECK(tm_ring_enqueue_burst(r, in + 7, 4) == 3, "burst 4 with 3 free");
    CHECK(tm_ring_count(r) == 10, "count after partial burst");
    CHECK(tm_ring_enqueue_burst(r, in + 10, 4) == 0, "burst into full ring");
    CHECK(tm_ring_dequeue_bulk(r, out, 0) == 0, "dequeue bulk n=0");
    CHECK(tm_ring_dequeue_burst(r, out, 0) == 0, "dequeue burst n=0");
    CHECK(tm_ring_dequeue_bulk(r, out, 11) == 0, "dequeue bulk 11 of 10");
    CHECK(tm_ring_count(r) == 10, "failed dequeue bulk changed count");
    CHECK(tm_ring_dequeue_bulk(r, out, 4) == 4, "dequeue bulk 4");
    for (i = 0; i < 4; i++)
        CHECK(out[i] == 1000 + i, "bulk out[%" PRIu32 "]=%" PRIu32, i, out[i]);
    CHECK(tm_ring_dequeue_burst(r, out, 32) == 6, "dequeue burst 32 of 6");
    for (i = 0; i < 6; i++)
        CHECK(out[i] == 1004 + i, "burst out[%" PRIu32 "]=%" PRIu32, i, out[i]);
    CHECK(tm_ring_dequeue_burst(r, out, 32) == 0, "dequeue burst from empty");
    CHECK(tm_ring_dequeue_bulk(r, out, 1) == 0, "dequeue bulk from empty");
    CHECK(tm_ring_count(r) == 0, "not empty at end");
    tm_ring_free(r);
}

/* Run a pseudo-random enqueue/dequeue sequence starting at counter value
 * `start`, crossing both the slot-array end and the 2^32 counter wrap. */
static void unit_wrap(uint32_t cap, unsigned flags, uint32_t start)
{
    tm_ring_t *r = tm_ring_create(cap, flags);
    uint32_t buf[64], next_in = 0, next_out = 0, seed = 12345 + start + cap;
    uint32_t moved = 0;
    int i;
    CHECK(r != NULL, "create(%" PRIu32 ")", cap);
    set_pos(r, start);
    for (i = 0; i < 2000; i++) {
        uint32_t k = 1 + xorshift32(&seed) % (cap < 64 ? cap : 64), got, j;
        uint32_t before = tm_ring_count(r);
        for (j = 0; j < k; j++)
            buf[j] = next_in + j;
        if (xorshift32(&seed) & 1) {
            got = tm_ring_enqueue_bulk(r, buf, k);
            CHECK(got == (k <= cap - before ? k : 0), "wrap bulk enq %" PRIu32 "/%" PRIu32, got, k);
        } else {
            got = tm_ring_enqueue_burst(r, buf, k);
            CHECK(got == (k <= cap - before ? k : cap - before), "wrap burst enq %" PRIu32, got);
        }
        next_in += got;
        CHECK(tm_ring_count(r) == before + got, "wrap count after enqueue");
        before = tm_ring_count(r);
        k = 1 + xorshift32(&seed) % (cap < 64 ? cap : 64);
        if (xorshift32(&seed) & 1) {
            got = tm_ring_dequeue_bulk(r, buf, k);
            CHECK(got == (k <= before ? k : 0), "wrap bulk deq %" PRIu32 "/%" PRIu32, got, k);
        } else {
            got = tm_ring_dequeue_burst(r, buf, k);
            CHECK(got == (k <= before ? k : before), "wrap burst deq %" PRIu32, got);
        }
        for (j = 0; j < got; j++, next_out++)
            CHECK(buf[j] == next_out, "wrap FIFO at start %" PRIu32 ": got %" PRIu32
                  " expected %" PRIu32, start, buf[j], next_out);
        moved += got;
        CHECK(tm_ring_count(r) == before - got, "wrap count after dequeue");
    }
    for (;;) { /* drain */
        uint32_t got = tm_ring_dequeue_burst(r, buf, 64), j;
        for (j = 0; j < got; j++, next_out++)
            CHECK(buf[j] == next_out, "wrap FIFO drain");
        moved += got;
        if (got == 0)
            break;
    }
    CHECK(next_out == next_in, "wrap lost handles: in %" PRIu32 " out %" PRIu32, next_in, next_out);
    check_pos(r, start + moved);
    tm_ring_free(r);
}

/* Capacity 2^31 (the maximum): 8 GiB of slots, so map it NORESERVE and only
 * touch a few pages.  Checks sizes, the array-end wrap and the full check. */
static void unit_max_capacity(void)
{
    const uint32_t cap = 0x80000000u;
    size_t ms = tm_ring_memsize(cap);
    uint32_t in[4] = {11, 22, 33, 44}, out[4], i;
    void *mem;
    tm_ring_t *r;
    if (sizeof(size_t) < 8) {
        CHECK(ms == 0, "2^31 ring cannot fit a 32-bit address space");
        return;
    }
    CHECK(ms == sizeof(tm_ring_t) + (size_t)cap * 4, "memsize(2^31) = %zu", ms);
    mem = mmap(NULL, ms, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        printf("ring_stress: note: could not map %zu bytes, skipping 2^31 data checks\n", ms);
        return;
    }
    r = (tm_ring_t *)mem; /* page aligned */
    CHECK(tm_ring_init(r, cap, 0) == 0, "init(2^31)");
    CHECK(tm_ring_capacity(r) == cap && r->size == cap && r->mask == cap - 1, "2^31 geometry");
    set_pos(r, cap - 2); /* 4 handles straddle the array end */
    CHECK(tm_ring_enqueue_bulk(r, in, 4) == 4, "enqueue across 2^31 array end");
    CHECK(tm_ring_count(r) == 4, "count");
    CHECK(tm_ring_dequeue_bulk(r, out, 4) == 4, "dequeue across 2^31 array end");
    for (i = 0; i < 4; i++)
        CHECK(out[i] == in[i], "2^31 FIFO");
    /* Pretend it is full: count must say 2^31 and enqueue must refuse. */
    r->cons.head = r->cons.tail = UINT32_MAX - 5;
    r->prod.head = r->prod.tail = UINT32_MAX - 5 + cap;
    CHECK(tm_ring_count(r) == cap, "count of full 2^31 ring = %" PRIu32, tm_ring_count(r));
    CHECK(tm_ring_enqueue(r, 1) == 0, "enqueue into full 2^31 ring");
    CHECK(tm_ring_enqueue_burst(r, in, 4) == 0, "burst into full 2^31 ring");
    CHECK(tm_ring_dequeue(r, &out[0]) == 1, "dequeue from full 2^31 ring");
    CHECK(tm_ring_count(r) == cap - 1, "count after one dequeue");
    munmap(mem, ms);
}

static void run_unit_tests(void)
{
    static const uint32_t caps[] = {1, 2, 3, 5, 63, 64, 65, 1000, 1024, 1025};
    static const uint32_t starts[] = {0, 5, UINT32_MAX - 5, UINT32_MAX, 0x7FFFFFFDu,
                                      0x80000000u, UINT32_MAX - 100};
    static const unsigned flag_sets[] = {0, TM_RING_SP, TM_RING_SC, TM_RING_SP | TM_RING_SC};
    static const uint32_t wrap_caps[] = {1, 3, 10, 16, 100};
    size_t c, f, s, w;

    unit_invalid();
    for (f = 0; f < 4; f++) {
        for (c = 0; c < sizeof caps / sizeof caps[0]; c++)
            unit_fill_drain(caps[c], flag_sets[f]);
        unit_bulk_burst(flag_sets[f]);
        for (w = 0; w < sizeof wrap_caps / sizeof wrap_caps[0]; w++)
            for (s = 0; s < sizeof starts / sizeof starts[0]; s++)
                unit_wrap(wrap_caps[w], flag_sets[f], starts[s]);
    }
    unit_max_capacity();
    printf("ring_stress: unit checks OK\n");
}

/* ------------------------------------------------------------------ */
/* multi-threaded stress                                                */
/* ------------------------------------------------------------------ */

struct stress {
    tm_ring_t *r;
    unsigned nprod, ncons;
    uint32_t iters;     /* handles per producer */
    uint32_t maxbatch;  /* 1 .. min(64, capacity) */
    uint64_t total;     /* nprod * iters */
    uint64_t consumed;  /* atomic */
    uint64_t calls;     /* atomic: successful ring calls */
    unsigned char *seen; /* nprod * iters, atomic counters */
};

struct worker {
    struct stress *st;
    unsigned id;
    pthread_t th;
    uint64_t progress; /* atomic: handles moved so far, read by the watchdog */
    int done;          /* atomic: thread finished */
} TM_ALIGNED(64);

/* Seconds without any progress before the watchdog declares a hang. */
static double stall_limit_s = 30.0;

static void backoff(unsigned *fails)
{
    if (++*fails >= 16) {
        *fails = 0;
        sched_yield(); /* more threads than cores: let the other side run */
    } else {
        TM_CPU_RELAX();
    }
}

static void *producer(void *arg)
{
    struct worker *w = arg;
    struct stress *st = w->st;
    uint32_t buf[MAX_BATCH], seq = 0, seed = 0x9E3779B9u ^ (w->id * 2654435761u + 1);
    uint64_t calls = 0;
    unsigned fails = 0;
    const uint32_t tag = (uint32_t)w->id << PID_SHIFT;

    while (seq < st->iters) {
        uint32_t mode = xorshift32(&seed) % 3, want, got, i;
        want = 1 + xorshift32(&seed) % st->maxbatch;
        if (want > st->iters - seq)
            want = st->iters - seq;
        for (i = 0; i < want; i++)
            buf[i] = tag | (seq + i);
        if (mode == 0) {
            got = (uint32_t)tm_ring_enqueue(st->r, buf[0]);
            CHECK(got <= 1, "single enqueue returned %" PRIu32, got);
        } else if (mode == 1) {
            got = tm_ring_enqueue_bulk(st->r, buf, want);
            CHECK(got == 0 || got == want, "bulk enqueue of %" PRIu32 " returned %" PRIu32, want, got);
        } else {
            got = tm_ring_enqueue_burst(st->r, buf, want);
            CHECK(got <= want, "burst enqueue of %" PRIu32 " returned %" PRIu32, want, got);
        }
        if (got == 0) {
            backoff(&fails);
            continue;
        }
        fails = 0;
        seq += got;
        calls++;
        /* RELAXED: progress indicator for the watchdog only. */
        __atomic_store_n(&w->progress, seq, __ATOMIC_RELAXED);
    }
    __atomic_fetch_add(&st->calls, calls, __ATOMIC_RELAXED);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *consumer(void *arg)
{
    struct worker *w = arg;
    struct stress *st = w->st;
    uint32_t buf[MAX_BATCH], seed = 0x85EBCA6Bu ^ (w->id * 40503u + 7);
    uint32_t *next_min = calloc(st->nprod, sizeof *next_min); /* per producer */
    uint64_t calls = 0;
    unsigned fails = 0;
    CHECK(next_min != NULL, "calloc");

    /* RELAXED: only a termination hint; the data is checked via `seen`. */
    while (__atomic_load_n(&st->consumed, __ATOMIC_RELAXED) < st->total) {
        uint32_t mode = xorshift32(&seed) % 3, want, got, i;
        want = 1 + xorshift32(&seed) % st->maxbatch;
        if (mode == 0) {
            got = (uint32_t)tm_ring_dequeue(st->r, buf);
            CHECK(got <= 1, "single dequeue returned %" PRIu32, got);
        } else if (mode == 1) {
            got = tm_ring_dequeue_bulk(st->r, buf, want);
            CHECK(got == 0 || got == want, "bulk dequeue of %" PRIu32 " returned %" PRIu32, want, got);
        } else {
            got = tm_ring_dequeue_burst(st->r, buf, want);
            CHECK(got <= want, "burst dequeue of %" PRIu32 " returned %" PRIu32, want, got);
        }
        if (got == 0) {
            backoff(&fails);
            continue;
        }
        fails = 0;
        calls++;
        for (i = 0; i < got; i++) {
            uint32_t v = buf[i], pid = v >> PID_SHIFT, seq = v & SEQ_MASK;
            unsigned char prev;
            CHECK(pid < st->nprod && seq < st->iters,
                  "consumer %u got corrupt handle 0x%08" PRIx32, w->id, v);
            CHECK(seq >= next_min[pid],
                  "order: consumer %u got producer %" PRIu32 " seq %" PRIu32
                  " after seq %" PRIu32, w->id, pid, seq, next_min[pid] - 1);
            next_min[pid] = seq + 1;
            prev = __atomic_fetch_add(&st->seen[(size_t)pid * st->iters + seq], 1,
                                      __ATOMIC_RELAXED);
            CHECK(prev == 0, "duplicate: producer %" PRIu32 " seq %" PRIu32
                  " dequeued %u times", pid, seq, prev + 1u);
        }
        __atomic_fetch_add(&st->consumed, got, __ATOMIC_RELAXED);
        __atomic_store_n(&w->progress, w->progress + got, __ATOMIC_RELAXED);
    }
    free(next_min);
    __atomic_fetch_add(&st->calls, calls, __ATOMIC_RELAXED);
    __atomic_store_n(&w->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Wait for all workers; fail (instead of hanging forever) if no handle
 * moves for stall_limit_s, e.g. because handles were lost or a publish
 * never happens. */
static void watchdog(const char *name, struct stress *st, struct worker *ws,
                     unsigned nthreads)
{
    const struct timespec tick = {0, 5 * 1000 * 1000};
    uint64_t last = UINT64_MAX;
    double last_change = now_s();
    for (;;) {
        uint64_t sum = 0;
        unsigned i, done = 0;
        for (i = 0; i < nthreads; i++) {
            sum += __atomic_load_n(&ws[i].progress, __ATOMIC_RELAXED);
            done += (unsigned)__atomic_load_n(&ws[i].done, __ATOMIC_ACQUIRE);
        }
        if (done == nthreads)
            return;
        if (sum != last) {
            last = sum;
            last_change = now_s();
        } else if (now_s() - last_change > stall_limit_s) {
            const tm_ring_t *r = st->r;
            fprintf(stderr,
                    "ring_stress: FAIL %s: no progress for %.0f s (%u of %u threads done, "
                    "consumed %" PRIu64 " of %" PRIu64 "; prod head %" PRIu32 " tail %" PRIu32
                    ", cons head %" PRIu32 " tail %" PRIu32 ")\n",
                    name, stall_limit_s, done, nthreads,
                    __atomic_load_n(&st->consumed, __ATOMIC_RELAXED), st->total,
                    __atomic_load_n(&r->prod.head, __ATOMIC_RELAXED),
                    __atomic_load_n(&r->prod.tail, __ATOMIC_RELAXED),
                    __atomic_load_n(&r->cons.head, __ATOMIC_RELAXED),
                    __atomic_load_n(&r->cons.tail, __ATOMIC_RELAXED));
            exit(1);
        }
        nanosleep(&tick, NULL);
    }
}

/* Returns the number of successful ring calls. */
static uint64_t run_stress(const char *name, unsigned nprod, unsigned ncons,
                           uint32_t iters, uint32_t cap, unsigned flags)
{
    struct stress st;
    struct worker *ws;
    unsigned i, nthreads = nprod + ncons;
    uint64_t k;
    uint32_t start, buf;
    double t0, dt;

    memset(&st, 0, sizeof st);
    st.r = tm_ring_create(cap, flags);
    CHECK(st.r != NULL, "create(%" PRIu32 ")", cap);
    st.nprod = nprod;
    st.ncons = ncons;
    st.iters = iters;
    st.maxbatch = cap < MAX_BATCH ? cap : MAX_BATCH;
    st.total = (uint64_t)nprod * iters;
    st.seen = calloc((size_t)st.total, 1);
    CHECK(st.seen != NULL, "calloc seen");
    /* Start the counters so that they wrap past 2^32 halfway through. */
    start = (uint32_t)0 - (uint32_t)(st.total / 2);
    set_pos(st.r, start);

    ws = aligned_alloc(64, nthreads * sizeof *ws); /* sizeof is a multiple of 64 */
    CHECK(ws != NULL, "aligned_alloc workers");
    memset(ws, 0, nthreads * sizeof *ws);
    t0 = now_s();
    for (i = 0; i < nthreads; i++) {
        ws[i].st = &st;
        ws[i].id = i < nprod ? i : i - nprod;
        CHECK(pthread_create(&ws[i].th, NULL, i < nprod ? producer : consumer, &ws[i]) == 0,
              "pthread_create");
    }
    watchdog(name, &st, ws, nthreads);
    for (i = 0; i < nthreads; i++)
        CHECK(pthread_join(ws[i].th, NULL) == 0, "pthread_join");
    dt = now_s() - t0;

    CHECK(st.consumed == st.total, "consumed %" PRIu64 " of %" PRIu64, st.consumed, st.total);
    for (k = 0; k < st.total; k++)
        CHECK(st.seen[k] == 1, "conservation: producer %" PRIu64 " seq %" PRIu64
              " dequeued %u times", k / iters, k % iters, st.seen[k]);
    CHECK(tm_ring_count(st.r) == 0, "count() = %" PRIu32 " at end", tm_ring_count(st.r));
    CHECK(tm_ring_dequeue(st.r, &buf) == 0, "ring not empty at end");
    check_pos(st.r, start + (uint32_t)st.total);

    printf("ring_stress: %-6s %2uP/%2uC cap %-5" PRIu32 " %9" PRIu64 " handles, %8" PRIu64
           " calls, %6.3f s, %6.2f M handles/s\n",
           name, nprod, ncons, cap, st.total, st.calls, dt, (double)st.total / dt / 1e6);
    fflush(stdout);
    k = st.calls;
    free(ws);
    free(st.seen);
    tm_ring_free(st.r);
    return k;
}

static unsigned long arg_ul(int argc, char **argv, int i, unsigned long def,
                            unsigned long lo, unsigned long hi)
{
    char *end;
    unsigned long v;
    if (argc <= i)
        return def;
    v = strtoul(argv[i], &end, 10);
    if (*argv[i] == '\0' || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "usage: %s [producers 1..%u [consumers 1..64 [iters 1..%u "
                        "[capacity 1..2^31]]]]\nbad argument: %s\n",
                argv[0], MAX_PROD, SEQ_MASK + 1, argv[i]);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    unsigned nprod = (unsigned)arg_ul(argc, argv, 1, 4, 1, MAX_PROD);
    unsigned ncons = (unsigned)arg_ul(argc, argv, 2, 4, 1, 64);
    uint32_t iters = (uint32_t)arg_ul(argc, argv, 3, 200000, 1, SEQ_MASK + 1);
    uint32_t cap = (uint32_t)arg_ul(argc, argv, 4, 1000, 1, 0x80000000ul);
    uint32_t small_iters = iters / 4 ? iters / 4 : 1;
    uint64_t calls = 0;

    const char *stall = getenv("RING_STRESS_STALL_S");
    if (stall != NULL && atof(stall) > 0)
        stall_limit_s = atof(stall);
    setvbuf(stdout, NULL, _IOLBF, 0);
    run_unit_tests();
    calls += run_stress("mpmc", nprod, ncons, iters, cap, 0);
    calls += run_stress("tiny", nprod, ncons, small_iters, 7, 0);
    calls += run_stress("spsc", 1, 1, iters, cap, TM_RING_SP | TM_RING_SC);
    calls += run_stress("sp/mc", 1, ncons, iters, cap, TM_RING_SP);
    calls += run_stress("mp/sc", nprod, 1, small_iters, cap, TM_RING_SC);
    printf("ring_stress: %u threads, %" PRIu64 " ops: OK\n", nprod + ncons, calls);
    return 0;
}
