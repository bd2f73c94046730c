/* shm_stress.c - include/turbomem/shm.h under threads and under SIGKILL.
 *
 *   shm_stress THREADS ITERS KILLS
 *
 * Phase 1 (TSan checks the orderings): THREADS threads of one process, each
 * with its own slot, churn get/put bulks and pass handles both ways over two
 * rings (every ring several producers and consumers).  At the
 * end everything is returned and every object must be free exactly once.
 *
 * Threads also detach (tm_shm_release: the recovery code) and come back now
 * and then, so TSan sees recovery beside live threads.
 *
 * Phase 2 (skipped when KILLS is 0): four forked children churn on a MAP_SHARED
 * pool, with rings, and recover dead slots themselves now and then; the parent
 * SIGKILLs one at random KILLS times (so recoverers die half-way too), recovers
 * (or leaves it to the children) and forks a replacement.  At the end all are
 * killed and recovered, and every object must be in a depot magazine or
 * published in a ring, once.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <pthread.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "turbomem/shm.h"

#define CAP 512u
#define CACHE 16u
#define SLOTS 64u
#define NRINGS 2u
#define RCAP 64u
#define NCHILD 4

static size_t up(size_t n) { return (n + 63) & ~(size_t)63; }

static tm_shm_pool_t make_pool(void) {
    uint32_t mag_size, nmags;
    tm_shm_mag_geometry(CAP, CACHE, SLOTS, &mag_size, &nmags);
    size_t ring_stride = up(sizeof(tm_shm_ringctl_t) + tm_shm_pring_memsize(RCAP));
    size_t off_ctl = 0, off_mags = up(off_ctl + sizeof(tm_shm_ctl_t));
    size_t off_mag_hs = up(off_mags + sizeof(tm_shm_mag_t) * nmags);
    size_t off_owner = up(off_mag_hs + 4 * (size_t)mag_size * nmags), off_slots = up(off_owner + 4 * CAP);
    size_t off_caches = up(off_slots + sizeof(tm_shm_slot_t) * SLOTS);
    size_t off_rings = up(off_caches + 4 * CACHE * SLOTS), total = off_rings + ring_stride * NRINGS;
    unsigned char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    tm_shm_pool_t p = {(tm_shm_ctl_t *)(base + off_ctl), (tm_shm_mag_t *)(base + off_mags),
                       (uint32_t *)(base + off_mag_hs), (uint32_t *)(base + off_owner),
                       (tm_shm_slot_t *)(base + off_slots), (uint32_t *)(base + off_caches),
                       base + off_rings, ring_stride, CAP, CACHE, SLOTS, NRINGS, mag_size, nmags,
                       RCAP, RCAP - 1}; /* RCAP: a power of two */
    if (tm_shm_pool_init(&p, RCAP) != 0) {
        fprintf(stderr, "init failed\n");
        exit(2);
    }
    return p;
}

static unsigned rnd(unsigned *s) { return *s = *s * 1103515245u + 12345u, (*s >> 16) & 0x7fff; }

/* One churn step for slot s; held/nheld is the caller's list. */
static void step(tm_shm_pool_t *p, uint32_t s, uint32_t *held, uint32_t *nheld, unsigned *seed,
                 int ring_out, int ring_in) {
    uint32_t bad, k, tmp[64];
    unsigned op = rnd(seed) % 100;
    if (op < 40 && *nheld + 40 <= CAP) {
        k = 1 + rnd(seed) % 32;
        if (tm_shm_get_bulk(p, s, held + *nheld, k) == 0)
            *nheld += k;
    } else if (op < 75 && *nheld) {
        k = 1 + rnd(seed) % *nheld;
        int rc = tm_shm_put_bulk(p, s, held + *nheld - k, k, &bad);
        assert(rc == 0);
        (void)rc;
        *nheld -= k;
    } else if (op < 88 && *nheld && ring_out >= 0) {
        k = 1 + rnd(seed) % (*nheld < 8 ? *nheld : 8);
        long rc = tm_shm_ring_enqueue(p, (uint32_t)ring_out, s, held + *nheld - k, k, &bad);
        if (!(rc == 0 || rc == (long)k))
            fprintf(stderr, "enqueue rc %ld\n", rc), abort();
        if (rc == (long)k)
            *nheld -= k;
    } else if (ring_in >= 0 && *nheld + 64 <= CAP) {
        long got = tm_shm_ring_dequeue(p, (uint32_t)ring_in, s, tmp, 1 + rnd(seed) % 16);
        if (!(got >= 0 || got == TM_SHM_EBUSY))
            fprintf(stderr, "dequeue rc %ld\n", got), abort();
        for (long i = 0; i < got; i++)
            held[(*nheld)++] = tmp[i];
    }
}

/* Every object once: in a magazine on a depot stack (listed in it, marked as
 * in it) or published in a ring; every magazine on one stack once (quiescent pool). */
static void audit(tm_shm_pool_t *p, const char *what) {
    static uint8_t seen[CAP];
    uint8_t *mseen = calloc(p->nmags, 1);
    memset(seen, 0, sizeof seen);
    for (uint32_t k = 0; k < TM_DEPOT_STACKS; k++) {
        uint64_t hd = p->ctl->heads[k].word;
        if (TM_H_OP(hd) != TM_OP_NONE) {
            fprintf(stderr, "%s: stack %u has an unfinished operation\n", what, k);
            exit(1);
        }
        for (uint32_t m1 = TM_H_TOP1(hd); m1; m1 = p->mags[m1 - 1].next) {
            uint32_t m = m1 - 1, c = p->mags[m].count;
            if (m1 > p->nmags || mseen[m] || p->mags[m].state >> 32 == 0xFFFFFFFFu ||
                TM_M_KIND(p->mags[m].state) != TM_M_ON || TM_M_WHO(p->mags[m].state) != k ||
                tm_shm__stack_for(p, c) != k) {
                fprintf(stderr, "%s: magazine %u on stack %u bad (state %#llx count %u)\n", what, m, k,
                        (unsigned long long)p->mags[m].state, c);
                exit(1);
            }
            mseen[m] = 1;
            for (uint32_t i = 0; i < c; i++) {
                uint32_t h = tm_shm__mag_hs(p, m)[i];
                if (h >= CAP || seen[h] || p->owner[h] != TM_OWN_MAG(m)) {
                    fprintf(stderr, "%s: magazine %u entry %u (handle %u) bad\n", what, m, i, h);
                    exit(1);
                }
                seen[h] = 1;
            }
        }
    }
    for (uint32_t m = 0; m < p->nmags; m++)
        if (!mseen[m]) {
            fprintf(stderr, "%s: magazine %u on no stack (state %#llx)\n", what, m,
                    (unsigned long long)p->mags[m].state);
            exit(1);
        }
    free(mseen);
    for (uint32_t r = 0; r < NRINGS; r++) { /* published handles still marked as in this ring */
        tm_shm_pring_t *q = tm_shm_pring(p, r);
        for (uint32_t i = 0; i <= p->ring_mask; i++) {
            uint64_t c = q->cells[i];
            uint32_t h = TM_CELL_VAL(c);
            if (TM_CELL_IS_RSV(h)) {
                fprintf(stderr, "%s: ring %u cell %u still claimed by slot %u\n", what, r, i, h & 0xFFFu);
                exit(1);
            }
            if (h >= CAP || p->owner[h] != TM_OWN_RING(r, TM_OWN_SLOT(p->owner[h])) ||
                TM_CELL_SEQ(c) - 1 - q->cons_pos > p->ring_mask)
                continue; /* free, tombstone, stale (taken: its handle is elsewhere) */
            if (seen[h]) { /* twice in the rings (a stale cell outliving its handle's return), or also in the depot */
                fprintf(stderr, "%s: ring %u cell %u (handle %u) also elsewhere\n", what, r, i, h);
                exit(1);
            }
            seen[h] = 2;
        }
    }
    for (uint32_t h = 0; h < CAP; h++)
        if (!seen[h]) {
            fprintf(stderr, "%s: handle %u lost (owner %#x)\n", what, h, p->owner[h]);
            exit(1);
        }
}

struct targ {
    tm_shm_pool_t *p;
    int id;
    long iters;
};

static void *thread_main(void *arg) {
    struct targ *t = arg;
    uint32_t held[CAP + 64], nheld = 0;
    unsigned seed = 77u + (unsigned)t->id;
    long s = tm_shm_slot_claim(t->p, getpid(), 1000 + t->id, 0);
    assert(s >= 0);
    int out = t->id % 2, in = 1 - t->id % 2; /* every thread produces on one ring and consumes the other */
    for (long i = 0; i < t->iters; i++) {
        step(t->p, (uint32_t)s, held, &nheld, &seed, out, in);
        if (rnd(&seed) % 4096 == 0) {
            /* Detach and come back: tm_shm_release gives back what the slot
             * holds (held objects included) by the recovery code, while the
             * other threads run - what TSan checks here. */
            assert(tm_shm_release(t->p, (uint32_t)s, getpid(), 0) >= 0);
            nheld = 0;
            s = tm_shm_slot_claim(t->p, getpid(), 1000 + t->id, 0);
            assert(s >= 0);
        }
    }
    uint32_t bad;
    if (nheld)
        assert(tm_shm_put_bulk(t->p, (uint32_t)s, held, nheld, &bad) == 0);
    assert(tm_shm_flush(t->p, (uint32_t)s) == 0);
    return (void *)s;
}

/* /proc/PID/stat starttime (field 22), 0 if the process is gone. */
static uint64_t start_of(int32_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *q = strrchr(buf, ')'); /* the name may hold spaces */
    if (!q)
        return 0;
    unsigned long long v = 0;
    /* after ") ": state is field 3; starttime is field 22 */
    if (sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &v) != 1)
        return 0;
    return v;
}

/* The pid no longer names the process that started at `start` (pid_max is
 * small here: thousands of forks reuse pids, the start time tells them apart). */
static int dead(int32_t pid, uint64_t start) {
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 1;
    uint64_t now = start_of(pid);
    return now == 0 || (start && now != start);
}

/* Recover every slot whose owner, or whose recoverer, is dead.  The children
 * run this too, so recoverers get killed half-way as well. */
static long recover_dead(tm_shm_pool_t *p) {
    long n = 0;
    for (uint32_t s = 0; s < SLOTS; s++) {
        uint64_t own = __atomic_load_n(&p->slots[s].own, __ATOMIC_ACQUIRE);
        int32_t pid = TM_SLOT_PID(own);
        uint32_t rec = TM_SLOT_REC(own);
        uint64_t start = __atomic_load_n(&p->slots[s].start_time, __ATOMIC_ACQUIRE);
        if (pid == 0 || !dead(pid, start) ||
            (rec && !dead((int32_t)rec, __atomic_load_n(&p->slots[s].rec_start, __ATOMIC_ACQUIRE))))
            continue;
        long long got = tm_shm_recover(p, s, pid, start, rec, getpid(), start_of(getpid()));
        assert(got >= -1);
        n += got > 0 ? got : 0;
    }
    return n;
}

static void child(tm_shm_pool_t *p, int id, unsigned seed) {
    uint32_t held[CAP + 64], nheld = 0;
    long s = tm_shm_slot_claim(p, getpid(), getpid(), start_of(getpid()));
    if (s < 0)
        _exit(3);
    for (;;) {
        step(p, (uint32_t)s, held, &nheld, &seed, id % 2, 1 - id % 2);
        if (rnd(&seed) % 512 == 0)
            recover_dead(p);
    }
}

static pid_t spawn(tm_shm_pool_t *p, int id, unsigned seed) {
    pid_t pid = fork();
    if (pid == 0)
        child(p, id, seed);
    return pid;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    long iters = argc > 2 ? atol(argv[2]) : 100000;
    long kills = argc > 3 ? atol(argv[3]) : 1000;

    /* Phase 1: threads. */
    tm_shm_pool_t p = make_pool();
    pthread_t th[64];
    struct targ ta[64];
    if (threads < 2 || threads > 64)
        threads = 4;
    for (int i = 0; i < threads; i++) {
        ta[i] = (struct targ){&p, i, iters};
        pthread_create(&th[i], NULL, thread_main, &ta[i]);
    }
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    /* handles left in the rings: take them out as a fresh slot and put them back */
    long s = tm_shm_slot_claim(&p, getpid(), 1, 0);
    uint32_t buf[RCAP], bad;
    for (uint32_t r = 0; r < NRINGS; r++) {
        long got = tm_shm_ring_dequeue(&p, r, (uint32_t)s, buf, RCAP);
        assert(got >= 0);
        if (got)
            assert(tm_shm_put_bulk(&p, (uint32_t)s, buf, (uint32_t)got, &bad) == 0);
        assert(tm_shm_ring_dequeue(&p, r, (uint32_t)s, buf, RCAP) == 0);
    }
    tm_shm_flush(&p, (uint32_t)s);
    audit(&p, "threads");
    printf("threads: %d threads x %ld steps, every object free once\n", threads, iters);

    if (kills == 0)
        return 0;
    /* Phase 2: processes killed at random points. */
    tm_shm_pool_t q = make_pool();
    unsigned seed = 12345;
    pid_t pids[NCHILD];
    for (int i = 0; i < NCHILD; i++) /* two producers and two consumers per ring */
        pids[i] = spawn(&q, i, (unsigned)i + 1);
    long recovered_before = 0;
    for (long k = 0; k < kills; k++) {
        usleep(rnd(&seed) % 1500);
        int i = rnd(&seed) % NCHILD;
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
        if (rnd(&seed) % 2) /* else a child's recover_dead does it (and may be killed in it) */
            recover_dead(&q);
        pids[i] = spawn(&q, i, rnd(&seed));
    }
    for (int i = 0; i < NCHILD; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
    }
    recover_dead(&q);
    (void)recovered_before;
    audit(&q, "kills");
    printf("kills: %ld SIGKILLs, %llu objects recovered, every object once\n", kills,
           (unsigned long long)q.ctl->recovered);
    return 0;
}
