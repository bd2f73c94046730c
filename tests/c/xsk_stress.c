/*
 * xsk_stress.c - include/turbomem/xsk.h against a simulated kernel, for
 * ThreadSanitizer and ASan+UBSan.
 *
 * usage: xsk_stress [packets [blocks]]   (defaults 200000, 20000)
 *
 * AF_XDP part: a "kernel" thread plays the kernel's side of the four rings
 * exactly as net/xdp/xsk_queue.h does (acquire load of the other side's
 * index, plain slot accesses, release store of its own index).  The user
 * thread runs the header's functions.  Frames cycle
 *     free list -> fill -> kernel writes a packet -> rx -> user checks it,
 *     writes a reply -> tx -> kernel checks it -> completion -> free list
 * and every frame access is a plain access, so TSan proves that the rings'
 * release/acquire pairs order them (X1-X4 in xsk.h).  The ring counters
 * start just below 2^32 to wrap mid-run.  Halfway the kernel injects two bad
 * rx descriptors (a frame outside the UMEM, and a frame it does not hold);
 * both must be counted as bad and never delivered.  At the end every frame
 * is back on the free list.
 *
 * TPACKET_V3 part: a "kernel" thread fills blocks in order (acquire load
 * of block_status, packets, release store of TP_STATUS_USER), the user
 * copies packets out with tm_tp3_rx in bursts of random size (so blocks are
 * left mid-way) into objects smaller than some packets.  Every packet must
 * arrive once, in order, with the right bytes, caplen and wire length.  Some
 * blocks are corrupt (a next_offset past the block): the walk must count
 * them and not read outside the block (ASan).
 *
 * Exits 1 with "xsk_stress: FAIL ..." on the first violation.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "turbomem/xsk.h"

#define FAIL(...) do { fprintf(stderr, "xsk_stress: FAIL " __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

enum { SHIFT = 11, FRAME = 1 << SHIFT, NFRAMES = 512, RING = 64, HEADROOM = 256, PLEN = 72 };

typedef struct {
    uint32_t producer;
    char pad0[60];
    uint32_t consumer;
    char pad1[60];
    uint32_t flags;
    char pad2[60];
    uint64_t desc[2 * RING]; /* room for RING struct xdp_desc */
} shared_ring_t;

static shared_ring_t fill_m, comp_m, rx_m, tx_m;
static unsigned char *umem;
static uint64_t packets_total;

static uint32_t rng(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (uint32_t)*s;
}

/* ---- the kernel's side (mirrors xsk_queue.h) ---- */
typedef struct { shared_ring_t *m; uint32_t own; } kring_t;

static uint32_t k_avail(kring_t *k) { return __atomic_load_n(&k->m->producer, __ATOMIC_ACQUIRE) - k->own; }
static void k_release(kring_t *k, uint32_t n) { k->own += n; __atomic_store_n(&k->m->consumer, k->own, __ATOMIC_RELEASE); }
static uint32_t k_free(kring_t *k) { return RING - (k->own - __atomic_load_n(&k->m->consumer, __ATOMIC_ACQUIRE)); }
static void k_submit(kring_t *k, uint32_t n) { k->own += n; __atomic_store_n(&k->m->producer, k->own, __ATOMIC_RELEASE); }

static void write_packet(unsigned char *p, uint64_t seq)
{
    memcpy(p, &seq, 8);
    for (int i = 8; i < PLEN; i++)
        p[i] = (unsigned char)(seq * 13 + i);
}

static int packet_ok(const unsigned char *p, uint64_t seq)
{
    uint64_t got;
    memcpy(&got, p, 8);
    if (got != seq)
        return 0;
    for (int i = 8; i < PLEN; i++)
        if (p[i] != (unsigned char)(seq * 13 + i))
            return 0;
    return 1;
}

static void *kernel_xsk(void *arg)
{
    (void)arg;
    kring_t fill = {&fill_m, fill_m.consumer}, rx = {&rx_m, rx_m.producer};
    kring_t tx = {&tx_m, tx_m.consumer}, comp = {&comp_m, comp_m.producer};
    uint64_t held[NFRAMES];   /* frames taken from the fill ring, not yet on rx */
    uint32_t nheld = 0;
    uint64_t seq = 0, completed = 0, s = 88172645463325252ull;
    int injected = 0;
    while (seq < packets_total || completed < packets_total) {
        int progress = 0;
        uint32_t n = k_avail(&fill);
        for (uint32_t i = 0; i < n; i++) {
            uint64_t a = fill_m.desc[(fill.own + i) & (RING - 1)];
            held[nheld++] = a;
        }
        if (n)
            k_release(&fill, n), progress = 1;
        __atomic_store_n(&fill_m.flags, nheld == 0 ? TM_XSK_NEED_WAKEUP : 0, __ATOMIC_RELAXED);
        /* receive: a packet into each held frame while rx has room */
        uint32_t room = k_free(&rx), k = 0;
        tm_xsk_desc_t *rd = (tm_xsk_desc_t *)rx_m.desc;
        if (!injected && seq >= packets_total / 2 && room >= 2) {
            rd[rx.own & (RING - 1)] = (tm_xsk_desc_t){(uint64_t)NFRAMES << SHIFT, 64, 0};
            rd[(rx.own + 1) & (RING - 1)] = (tm_xsk_desc_t){((uint64_t)(rng(&s) % NFRAMES) << SHIFT) | 8, FRAME, 0};
            k_submit(&rx, 2);
            injected = 1;
            room = k_free(&rx);
        }
        while (k < room && nheld && seq < packets_total) {
            uint64_t addr = held[--nheld] + HEADROOM;
            write_packet(umem + addr, seq++);
            rd[(rx.own + k) & (RING - 1)] = (tm_xsk_desc_t){addr, PLEN, 0};
            k++;
        }
        if (k)
            k_submit(&rx, k), progress = 1;
        /* transmit: check the user's reply, complete the frame */
        n = k_avail(&tx);
        uint32_t cfree = k_free(&comp);
        if (n > cfree)
            n = cfree;
        tm_xsk_desc_t *td = (tm_xsk_desc_t *)tx_m.desc;
        for (uint32_t i = 0; i < n; i++) {
            tm_xsk_desc_t d = td[(tx.own + i) & (RING - 1)];
            uint64_t tseq;
            memcpy(&tseq, umem + d.addr, 8);
            if (d.len != PLEN || !packet_ok(umem + d.addr, tseq))
                FAIL("tx frame %" PRIu64 " has the wrong bytes", d.addr >> SHIFT);
            comp_m.desc[(comp.own + i) & (RING - 1)] = d.addr & ~(uint64_t)(FRAME - 1);
        }
        if (n) {
            k_release(&tx, n);
            k_submit(&comp, n);
            completed += n;
            progress = 1;
        }
        if (!progress)
            sched_yield();
    }
    return NULL;
}

static int run_xsk(void)
{
    umem = aligned_alloc(4096, (size_t)NFRAMES * FRAME);
    memset(umem, 0, (size_t)NFRAMES * FRAME);
    shared_ring_t *all[4] = {&fill_m, &comp_m, &rx_m, &tx_m};
    for (int i = 0; i < 4; i++)
        all[i]->producer = all[i]->consumer = 0xFFFFFF00u; /* wrap mid-run */
    tm_xsk_ring_t fill, comp, rx, tx;
    tm_xsk_ring_init(&fill, &fill_m, 0, 64, 192, 128, RING, 1);
    tm_xsk_ring_init(&comp, &comp_m, 0, 64, 192, 128, RING, 0);
    tm_xsk_ring_init(&rx, &rx_m, 0, 64, 192, 128, RING, 0);
    tm_xsk_ring_init(&tx, &tx_m, 0, 64, 192, 128, RING, 1);
    uint8_t owned[NFRAMES] = {0};
    uint32_t freel[NFRAMES], nfree = 0, pending_tx[NFRAMES], npending = 0;
    for (uint32_t i = 0; i < NFRAMES; i++)
        freel[nfree++] = i;
    pthread_t kt;
    pthread_create(&kt, NULL, kernel_xsk, NULL);
    uint64_t received = 0, completed = 0, bad = 0, wakeups = 0, s = 1234567;
    uint32_t hs[64], lens[64], offs[64];
    while (received < packets_total || completed < packets_total) {
        uint32_t room = tm_xsk_prod_free(&fill);
        uint32_t n = room < nfree ? room : nfree;
        uint32_t cap = 1 + rng(&s) % 32;
        if (n > cap)
            n = cap;
        nfree -= n;
        tm_xsk_fill(&fill, freel + nfree, n, SHIFT, owned);
        if (tm_xsk_needs_wakeup(&fill))
            wakeups++;
        uint32_t k = tm_xsk_rx(&rx, 1 + rng(&s) % 64, SHIFT, NFRAMES, owned, hs, lens, offs, &bad);
        for (uint32_t i = 0; i < k; i++) {
            unsigned char *p = umem + ((size_t)hs[i] << SHIFT) + offs[i];
            if (offs[i] != HEADROOM || lens[i] != PLEN || !packet_ok(p, received))
                FAIL("rx packet %" PRIu64 " in frame %u is wrong (offset %u, len %u)",
                     received, hs[i], offs[i], lens[i]);
            received++;
            /* reply from the start of the same frame */
            write_packet(umem + ((size_t)hs[i] << SHIFT), received + 1000000);
            pending_tx[npending++] = hs[i];
        }
        if (npending) {
            uint32_t plen[NFRAMES];
            for (uint32_t i = 0; i < npending; i++)
                plen[i] = PLEN;
            uint32_t sent = tm_xsk_tx(&tx, pending_tx, plen, npending, 0, SHIFT, owned);
            memmove(pending_tx, pending_tx + sent, (npending - sent) * sizeof *pending_tx);
            npending -= sent;
        }
        uint32_t c = tm_xsk_complete(&comp, 64, SHIFT, NFRAMES, owned, freel + nfree, &bad);
        nfree += c;
        completed += c;
        if (!k && !c)
            sched_yield();
    }
    pthread_join(kt, NULL);
    uint32_t with_kernel = 0;
    for (uint32_t i = 0; i < NFRAMES; i++)
        with_kernel += owned[i];
    if (bad != 2)
        FAIL("%" PRIu64 " bad descriptors counted, 2 injected", bad);
    if (nfree + with_kernel != NFRAMES)
        FAIL("frames lost: %u free + %u with the kernel != %d", nfree, with_kernel, NFRAMES);
    printf("xsk: %" PRIu64 " packets received and transmitted, %u frames still with the kernel (fill ring), "
           "2 bad descriptors rejected, %" PRIu64 " need_wakeup sightings\n", received, with_kernel, wakeups);
    free(umem);
    return 0;
}

/* ---- TPACKET_V3 ---- */
enum { BLOCK = 4096, NBLOCKS = 4, OBJ = 256 };
static unsigned char tp_map[BLOCK * NBLOCKS] __attribute__((aligned(64)));
static uint64_t blocks_total, tp_expected;

static void put32(unsigned char *p, size_t off, uint32_t v) { memcpy(p + off, &v, 4); }

static void *kernel_tp(void *arg)
{
    (void)arg;
    uint64_t seq = 0, s = 0x9E3779B97F4A7C15ull;
    for (uint64_t b = 0; b < blocks_total; b++) {
        unsigned char *blk = tp_map + (b % NBLOCKS) * BLOCK;
        uint32_t *status = (uint32_t *)(blk + TM_TP3_BLOCK_STATUS);
        while (__atomic_load_n(status, __ATOMIC_ACQUIRE) != TM_TP_STATUS_KERNEL)
            sched_yield();
        int corrupt = b % 97 == 50;
        uint32_t off = 48, num = 0;
        for (;;) {
            uint32_t len = 60 + rng(&s) % 300, mac = 32;
            uint32_t need = (mac + len + 15) & ~15u;
            if (off + need > BLOCK || num == 20)
                break;
            unsigned char *h = blk + off;
            put32(h, TM_TP3_SNAPLEN, len);
            put32(h, TM_TP3_LEN, len);
            uint16_t m16 = (uint16_t)mac;
            memcpy(h + TM_TP3_MAC, &m16, 2);
            unsigned char *p = h + mac;
            memcpy(p, &seq, 8);
            memcpy(p + 8, &len, 4);
            for (uint32_t i = 12; i < len; i++)
                p[i] = (unsigned char)(seq + i);
            put32(h, TM_TP3_NEXT_OFFSET, need);
            seq++;
            num++;
            off += need;
            if (corrupt && num == 2) {
                put32(h, TM_TP3_NEXT_OFFSET, BLOCK * 2); /* points past the block */
                num = 5;                                  /* claims more packets */
                break;
            }
        }
        put32(blk, TM_TP3_NUM_PKTS, num);
        put32(blk, TM_TP3_FIRST_PKT, 48);
        __atomic_store_n(status, TM_TP_STATUS_USER, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&tp_expected, seq, __ATOMIC_RELEASE);
    return NULL;
}

static int run_tpacket(void)
{
    tm_tp3_t r = {tp_map, BLOCK, NBLOCKS, 0, 0, 0};
    static char objs[64 * OBJ];
    uint32_t handles[64], cap[64], wire[64];
    for (uint32_t i = 0; i < 64; i++)
        handles[i] = 63 - i;
    pthread_t kt;
    pthread_create(&kt, NULL, kernel_tp, NULL);
    uint64_t seq = 0, bad = 0, s = 42;
    for (;;) {
        uint32_t n = 1 + rng(&s) % 64;
        uint32_t k = tm_tp3_rx(&r, objs, OBJ, OBJ, handles, n, cap, wire, &bad);
        for (uint32_t i = 0; i < k; i++) {
            const unsigned char *p = (const unsigned char *)objs + (size_t)handles[i] * OBJ;
            uint64_t got;
            uint32_t len;
            memcpy(&got, p, 8);
            memcpy(&len, p + 8, 4);
            if (got != seq || wire[i] != len || cap[i] != (len < OBJ ? len : OBJ))
                FAIL("tpacket packet %" PRIu64 ": got seq %" PRIu64 ", cap %u wire %u", seq, got, cap[i], wire[i]);
            for (uint32_t j = 12; j < cap[i]; j++)
                if (p[j] != (unsigned char)(seq + j))
                    FAIL("tpacket packet %" PRIu64 " byte %u is wrong", seq, j);
            seq++;
        }
        uint64_t expected = __atomic_load_n(&tp_expected, __ATOMIC_ACQUIRE);
        if (expected && seq == expected)
            break;
        if (!k)
            sched_yield();
    }
    pthread_join(kt, NULL);
    uint64_t corrupt = 0;
    for (uint64_t b = 0; b < blocks_total; b++)
        corrupt += b % 97 == 50;
    if (bad != corrupt)
        FAIL("tpacket: %" PRIu64 " bad headers counted, %" PRIu64 " corrupt blocks", bad, corrupt);
    printf("tpacket: %" PRIu64 " packets in %" PRIu64 " blocks, %" PRIu64 " corrupt blocks cut short\n",
           seq, blocks_total, corrupt);
    return 0;
}

int main(int argc, char **argv)
{
    packets_total = argc > 1 ? strtoull(argv[1], NULL, 10) : 200000;
    blocks_total = argc > 2 ? strtoull(argv[2], NULL, 10) : 20000;
    run_xsk();
    run_tpacket();
    printf("xsk_stress: OK\n");
    return 0;
}
