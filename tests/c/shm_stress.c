/* shm_stress.c - include/turbomem/shm.h under threads and under SIGKILL.
 *
 *   shm_stress THREADS ITERS KILLS
 *
 * Phase 1 (TSan checks the orderings): THREADS threads of one process, each
 * with its own slot, churn get/put bulks; threads 0 and 1 also pass handles
 * both ways over two rings (each ring one producer, one consumer).  At the
 * end everything is returned and every object must be free exactly once.
 *
 * Phase 2 (skipped when KILLS is 0): two forked children churn on a MAP_SHARED
 * pool, with rings; the parent SIGKILLs one at random KILLS times, recovers
 * its slot and forks a replacement.  At the end all are killed and recovered,
 * and every object must be on the free array or published in a ring, once.
 */
#define _GNU_SOURCE
#include <assert.h>
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

static size_t up(size_t n) { return (n + 63) & ~(size_t)63; }

static tm_shm_pool_t make_pool(void) {
    size_t ring_stride = up(sizeof(tm_shm_ringctl_t) + tm_ring_memsize(RCAP));
    size_t off_ctl = 0, off_free = up(off_ctl + sizeof(tm_shm_ctl_t));
    size_t off_owner = up(off_free + 4 * CAP), off_slots = up(off_owner + 4 * CAP);
    size_t off_caches = up(off_slots + sizeof(tm_shm_slot_t) * SLOTS);
    size_t off_rings = up(off_caches + 4 * CACHE * SLOTS), total = off_rings + ring_stride * NRINGS;
    unsigned char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    tm_shm_pool_t p = {(tm_shm_ctl_t *)(base + off_ctl), (uint32_t *)(base + off_free),
                       (uint32_t *)(base + off_owner), (tm_shm_slot_t *)(base + off_slots),
                       (uint32_t *)(base + off_caches), base + off_rings, ring_stride,
                       CAP, CACHE, SLOTS, NRINGS, RCAP, RCAP - 1}; /* RCAP: a power of two */
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
        assert(rc == 0 || rc == (long)k);
        if (rc == (long)k)
            *nheld -= k;
    } else if (ring_in >= 0 && *nheld + 64 <= CAP) {
        long got = tm_shm_ring_dequeue(p, (uint32_t)ring_in, s, tmp, 1 + rnd(seed) % 16);
        assert(got >= 0);
        for (long i = 0; i < got; i++)
            held[(*nheld)++] = tmp[i];
    }
}

/* Every object once: on the free array or published in a ring (quiescent pool). */
static void audit(tm_shm_pool_t *p, const char *what) {
    static uint8_t seen[CAP];
    memset(seen, 0, sizeof seen);
    uint32_t top = p->ctl->free_top;
    assert(top <= CAP);
    for (uint32_t i = 0; i < top; i++) {
        uint32_t h = p->free_arr[i];
        if (h >= CAP || seen[h] || p->owner[h] != TM_OWN_FREE) {
            fprintf(stderr, "%s: free array entry %u (handle %u) bad\n", what, i, h);
            exit(1);
        }
        seen[h] = 1;
    }
    for (uint32_t r = 0; r < NRINGS; r++) {
        tm_ring_t *ring = tm_shm_ring(p, r);
        for (uint32_t c = ring->cons.tail; c != ring->prod.tail; c++) {
            uint32_t h = ring->slots[c & ring->mask];
            if (h >= CAP || seen[h] || TM_OWN_KIND(p->owner[h]) != TM_K_RING) {
                fprintf(stderr, "%s: ring %u entry %u (handle %u) bad\n", what, r, c, h);
                exit(1);
            }
            seen[h] = 1;
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
    int out = t->id == 0 ? 0 : t->id == 1 ? 1 : -1, in = t->id == 0 ? 1 : t->id == 1 ? 0 : -1;
    for (long i = 0; i < t->iters; i++)
        step(t->p, (uint32_t)s, held, &nheld, &seed, out, in);
    uint32_t bad;
    if (nheld)
        assert(tm_shm_put_bulk(t->p, (uint32_t)s, held, nheld, &bad) == 0);
    assert(tm_shm_flush(t->p, (uint32_t)s) == 0);
    return (void *)s;
}

static void child(tm_shm_pool_t *p, int id, unsigned seed) {
    uint32_t held[CAP + 64], nheld = 0;
    long s = tm_shm_slot_claim(p, getpid(), getpid(), 0);
    if (s < 0)
        _exit(3);
    for (;;)
        step(p, (uint32_t)s, held, &nheld, &seed, id, 1 - id);
}

static pid_t spawn(tm_shm_pool_t *p, int id, unsigned seed) {
    pid_t pid = fork();
    if (pid == 0)
        child(p, id, seed);
    return pid;
}

static void recover_pid(tm_shm_pool_t *p, pid_t pid, uint8_t *inring) {
    for (uint32_t s = 0; s < SLOTS; s++)
        if (p->slots[s].pid == pid)
            assert(tm_shm_recover(p, s, pid, p->slots[s].start_time, inring) >= 0);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    long iters = argc > 2 ? atol(argv[2]) : 100000;
    long kills = argc > 3 ? atol(argv[3]) : 1000;
    uint8_t *inring = malloc(CAP);

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
        tm_shm_ringctl(&p, r)->consumer = 0; /* its consumer thread has exited */
        long got = tm_shm_ring_dequeue(&p, r, (uint32_t)s, buf, RCAP);
        assert(got >= 0);
        if (got)
            assert(tm_shm_put_bulk(&p, (uint32_t)s, buf, (uint32_t)got, &bad) == 0);
    }
    tm_shm_flush(&p, (uint32_t)s);
    audit(&p, "threads");
    assert(p.ctl->free_top == CAP);
    printf("threads: %d threads x %ld steps, every object free once\n", threads, iters);

    if (kills == 0) {
        free(inring);
        return 0;
    }
    /* Phase 2: processes killed at random points. */
    tm_shm_pool_t q = make_pool();
    unsigned seed = 12345;
    pid_t pids[2] = {spawn(&q, 0, 1), spawn(&q, 1, 2)};
    long recovered_before = 0;
    for (long k = 0; k < kills; k++) {
        usleep(rnd(&seed) % 1500);
        int i = rnd(&seed) % 2;
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
        recover_pid(&q, pids[i], inring);
        pids[i] = spawn(&q, i, rnd(&seed));
    }
    for (int i = 0; i < 2; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
        recover_pid(&q, pids[i], inring);
    }
    (void)recovered_before;
    audit(&q, "kills");
    printf("kills: %ld SIGKILLs, %llu objects recovered, %u lock repairs, every object once\n", kills,
           (unsigned long long)q.ctl->recovered, q.ctl->rebuilds);
    free(inring);
    return 0;
}
