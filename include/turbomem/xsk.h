/*
 * turbomem/xsk.h - the user side of the AF_XDP rings and of a TPACKET_V3
 * receive ring, over a TurboMem pool used as the UMEM.
 *
 * An AF_XDP socket shares four single-producer/single-consumer rings with
 * the kernel, each mmap'd from the socket: a producer word, a consumer word,
 * a flags word and a power-of-two array of descriptors.
 *
 *   ring        user side   descriptor                     frame goes
 *   fill        producer    u64 UMEM address               pool -> kernel
 *   rx          consumer    {u64 addr, u32 len, u32 opt}   kernel -> caller
 *   tx          producer    {u64 addr, u32 len, u32 opt}   caller -> kernel
 *   completion  consumer    u64 UMEM address               kernel -> pool
 *
 * The UMEM is the pool's region and the chunk size is the pool's stride (a
 * power of two: 2048 or 4096), so a frame's UMEM address is
 * handle << shift (+ an in-frame offset on rx/tx) and a handle is
 * addr >> shift.
 *
 * ------------------------------------------------------------------------
 * Concurrency contract
 * ------------------------------------------------------------------------
 * - Each ring has exactly one user-side thread at a time (the Python layer
 *   serialises calls per socket); the other side is the kernel.  So the
 *   user's own index is only ever written by us and is kept in a local
 *   cached copy (RELAXED is enough for our own word: nobody else writes it).
 * - The indices are free-running u32 counters, the slot is (index & mask);
 *   the ring size is a power of two <= 2^31, so the modular differences
 *   prod - cons are exact (same argument as ring.h).
 *
 * Memory orders (every atomic in this file names its order), the same
 * discipline as ring.h's A (tail release -> opposite acquire), with the
 * kernel (net/xdp/xsk_queue.h) as the other party:
 *   X1. consumer rings (rx, completion): the load of the kernel's producer
 *       word is ACQUIRE.  It pairs with the kernel's release of the producer
 *       (smp_store_release in xskq_prod_submit*): the descriptors the
 *       kernel wrote before publishing are visible before we read them.
 *   X2. consumer rings: our store of the consumer word is RELEASE.  It pairs
 *       with the kernel's acquire load of the consumer (smp_load_acquire in
 *       xskq_prod_is_full/xskq_cached_prod refresh): our reads of the slots
 *       are complete before the kernel overwrites them.
 *   X3. producer rings (fill, tx): the load of the kernel's consumer word is
 *       ACQUIRE, pairing with the kernel's release of the consumer
 *       (smp_store_release in __xskq_cons_release): the kernel has finished
 *       reading those slots before we overwrite them.
 *   X4. producer rings: our store of the producer word is SEQ_CST (which
 *       includes RELEASE), pairing with the kernel's acquire load of the
 *       producer (smp_load_acquire in __xskq_cons_peek): the descriptors are
 *       written before the kernel reads them.  SEQ_CST rather than RELEASE
 *       only for X5.
 *   X5. need_wakeup: the flags word is loaded SEQ_CST.  A SEQ_CST store
 *       followed by a SEQ_CST load of another word cannot be reordered
 *       (store->load), so we never read a flag older than our producer
 *       store; otherwise we could see "no wakeup needed" while the kernel,
 *       which set the flag and then looked at our (old) producer, sleeps: a
 *       lost wakeup.  This costs one full barrier per burst (XCHG on x86),
 *       not per packet.  (A fence would do the same, but ThreadSanitizer
 *       cannot check fences.)
 *
 * TPACKET_V3 (AF_PACKET PACKET_RX_RING, version 3): the ring is block_nr
 * blocks of block_size bytes.  The kernel fills a block with packets, then
 * hands the whole block to user space by setting its block_status to
 * TP_STATUS_USER; user space hands it back by storing TP_STATUS_KERNEL.
 *   P1. the load of block_status is ACQUIRE, pairing with the kernel's
 *       smp_wmb() + status store in prb_close_block (the block's packets
 *       and header are written before the status says USER).
 *   P2. the store of TP_STATUS_KERNEL is RELEASE: our copies out of the
 *       block are complete before the kernel (which reads the status in
 *       prb_dispatch_next_block / prb_queue_frozen, then smp_rmb) reuses it.
 * Blocks are consumed strictly in order (the kernel fills them in order);
 * tm_tp3_rx copies each packet ONCE, into a pool object, and releases a
 * block as soon as its last packet has been copied.
 *
 * Frame ownership: every socket keeps a byte per pool object ("owned": 1
 * while the kernel holds the frame, i.e. between fill/tx and rx/completion).
 * That is what makes close() exact: the frames still marked go back to the
 * pool, whatever the kernel did with them; and a descriptor naming a frame
 * we did not give the kernel is counted as bad and never handed out.
 */
#ifndef TURBOMEM_XSK_H
#define TURBOMEM_XSK_H

#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include "arch.h"

typedef struct tm_xsk_desc {
    uint64_t addr;
    uint32_t len;
    uint32_t options;
} tm_xsk_desc_t;

typedef struct tm_xsk_ring {
    uint32_t *producer;     /* shared with the kernel */
    uint32_t *consumer;     /* shared with the kernel */
    uint32_t *flags;        /* shared with the kernel (XDP_RING_NEED_WAKEUP) */
    void *descs;            /* u64[] (fill, completion) or tm_xsk_desc_t[] (rx, tx) */
    uint32_t mask;          /* size - 1 */
    uint32_t size;
    uint32_t own;           /* our own index (producer or consumer), cached */
} tm_xsk_ring_t;

#define TM_XSK_NEED_WAKEUP 1u

static inline void tm_xsk_ring_init(tm_xsk_ring_t *r, void *map, uint64_t off_prod,
                                    uint64_t off_cons, uint64_t off_desc, uint64_t off_flags,
                                    uint32_t size, int we_produce)
{
    char *base = (char *)map;
    r->producer = (uint32_t *)(base + off_prod);
    r->consumer = (uint32_t *)(base + off_cons);
    r->flags = (uint32_t *)(base + off_flags);
    r->descs = base + off_desc;
    r->size = size;
    r->mask = size - 1;
    /* Our own word is written only by us: RELAXED (nothing to pair with). */
    r->own = __atomic_load_n(we_produce ? r->producer : r->consumer, __ATOMIC_RELAXED);
}

/* Free slots in a ring we produce into (fill, tx).  X3: ACQUIRE. */
static inline uint32_t tm_xsk_prod_free(const tm_xsk_ring_t *r)
{
    uint32_t cons = __atomic_load_n(r->consumer, __ATOMIC_ACQUIRE);
    return r->size - (r->own - cons);
}

/* Filled slots in a ring we consume from (rx, completion).  X1: ACQUIRE. */
static inline uint32_t tm_xsk_cons_avail(const tm_xsk_ring_t *r)
{
    uint32_t prod = __atomic_load_n(r->producer, __ATOMIC_ACQUIRE);
    return prod - r->own;
}

/* X4: publish n produced slots.  SEQ_CST (release + the X5 store->load order). */
static inline void tm_xsk_prod_submit(tm_xsk_ring_t *r, uint32_t n)
{
    r->own += n;
    __atomic_store_n(r->producer, r->own, __ATOMIC_SEQ_CST);
}

/* X2: hand n consumed slots back.  RELEASE. */
static inline void tm_xsk_cons_release(tm_xsk_ring_t *r, uint32_t n)
{
    r->own += n;
    __atomic_store_n(r->consumer, r->own, __ATOMIC_RELEASE);
}

/* X5: does the kernel want a syscall to notice new work on this ring?  SEQ_CST. */
static inline int tm_xsk_needs_wakeup(const tm_xsk_ring_t *r)
{
    return (__atomic_load_n(r->flags, __ATOMIC_SEQ_CST) & TM_XSK_NEED_WAKEUP) != 0;
}

/*
 * Put handles[0..n) on the fill ring (n <= tm_xsk_prod_free).  Marks them
 * owned by the kernel.  Returns how many went (all of them).
 */
static inline uint32_t tm_xsk_fill(tm_xsk_ring_t *fill, const uint32_t *handles, uint32_t n,
                                   unsigned shift, uint8_t *owned)
{
    uint64_t *slots = (uint64_t *)fill->descs;
    uint32_t i;
    for (i = 0; i < n; i++) {
        /* Slots are plain memory: X4's release store orders them. */
        slots[(fill->own + i) & fill->mask] = (uint64_t)handles[i] << shift;
        owned[handles[i]] = 1;
    }
    if (n)
        tm_xsk_prod_submit(fill, n);
    return n;
}

/*
 * Take up to max received descriptors.  For each good one: handles[k],
 * lengths[k], offsets[k] (data offset inside the frame).  A descriptor
 * naming a frame outside the pool, or one the kernel was not holding for
 * us, or too long for the frame, is skipped and counted in *bad.
 */
static inline uint32_t tm_xsk_rx(tm_xsk_ring_t *rx, uint32_t max, unsigned shift,
                                 uint32_t capacity, uint8_t *owned, uint32_t *handles,
                                 uint32_t *lengths, uint32_t *offsets, uint64_t *bad)
{
    uint32_t avail = tm_xsk_cons_avail(rx);
    const tm_xsk_desc_t *d = (const tm_xsk_desc_t *)rx->descs;
    uint32_t frame = 1u << shift, i, k = 0;
    if (avail > max)
        avail = max;
    for (i = 0; i < avail; i++) {
        const tm_xsk_desc_t *e = &d[(rx->own + i) & rx->mask];
        uint64_t h = e->addr >> shift;
        uint32_t off = (uint32_t)(e->addr & (frame - 1));
        if (TM_UNLIKELY(h >= capacity || !owned[h] || (uint64_t)off + e->len > frame)) {
            (*bad)++;
            continue;
        }
        owned[h] = 0;
        handles[k] = (uint32_t)h;
        lengths[k] = e->len;
        offsets[k] = off;
        k++;
    }
    if (avail)
        tm_xsk_cons_release(rx, avail);
    return k;
}

/* Take up to max completed tx frames back (their handles), as tm_xsk_rx. */
static inline uint32_t tm_xsk_complete(tm_xsk_ring_t *comp, uint32_t max, unsigned shift,
                                       uint32_t capacity, uint8_t *owned, uint32_t *handles,
                                       uint64_t *bad)
{
    uint32_t avail = tm_xsk_cons_avail(comp);
    const uint64_t *slots = (const uint64_t *)comp->descs;
    uint32_t i, k = 0;
    if (avail > max)
        avail = max;
    for (i = 0; i < avail; i++) {
        uint64_t h = slots[(comp->own + i) & comp->mask] >> shift;
        if (TM_UNLIKELY(h >= capacity || !owned[h])) {
            (*bad)++;
            continue;
        }
        owned[h] = 0;
        handles[k++] = (uint32_t)h;
    }
    if (avail)
        tm_xsk_cons_release(comp, avail);
    return k;
}

/*
 * Queue up to n frames for transmit: frame handles[i], bytes
 * [offset, offset + lengths[i]).  The caller checked handles and lengths.
 * Returns how many were queued (limited by free tx slots); those are owned
 * by the kernel until they come back on the completion ring.
 */
static inline uint32_t tm_xsk_tx(tm_xsk_ring_t *tx, const uint32_t *handles,
                                 const uint32_t *lengths, uint32_t n, uint32_t offset,
                                 unsigned shift, uint8_t *owned)
{
    uint32_t room = tm_xsk_prod_free(tx), i;
    tm_xsk_desc_t *d = (tm_xsk_desc_t *)tx->descs;
    if (n > room)
        n = room;
    for (i = 0; i < n; i++) {
        tm_xsk_desc_t *e = &d[(tx->own + i) & tx->mask];
        e->addr = ((uint64_t)handles[i] << shift) + offset;
        e->len = lengths[i];
        e->options = 0;
        owned[handles[i]] = 1;
    }
    if (n)
        tm_xsk_prod_submit(tx, n);
    return n;
}

/* ------------------------------------------------------------ TPACKET_V3 -- */

#define TM_TP_STATUS_KERNEL 0u
#define TM_TP_STATUS_USER   1u

typedef struct tm_tp3 {
    uint8_t *map;           /* block_nr * block_size bytes, mmap'd */
    uint32_t block_size;
    uint32_t block_nr;
    uint32_t block;         /* block we are in */
    uint32_t left;          /* packets left in it (0: not opened yet) */
    uint32_t next;          /* offset of the next packet inside the block */
} tm_tp3_t;

/* struct tpacket_block_desc / tpacket3_hdr field offsets (linux/if_packet.h ABI). */
#define TM_TP3_BLOCK_STATUS 8
#define TM_TP3_NUM_PKTS 12
#define TM_TP3_FIRST_PKT 16
#define TM_TP3_NEXT_OFFSET 0
#define TM_TP3_SNAPLEN 12
#define TM_TP3_LEN 16
#define TM_TP3_MAC 24

static inline uint32_t tm_tp3_u32(const uint8_t *p, size_t off)
{
    uint32_t v;
    memcpy(&v, p + off, 4);
    return v;
}

/* Is the current block ours?  P1: ACQUIRE. */
static inline int tm_tp3_ready(const tm_tp3_t *r)
{
    uint32_t *status = (uint32_t *)(r->map + (size_t)r->block * r->block_size + TM_TP3_BLOCK_STATUS);
    return (__atomic_load_n(status, __ATOMIC_ACQUIRE) & TM_TP_STATUS_USER) != 0;
}

/* P2: give the current block back (RELEASE) and move to the next one. */
static inline void tm_tp3_release_block(tm_tp3_t *r)
{
    uint32_t *status = (uint32_t *)(r->map + (size_t)r->block * r->block_size + TM_TP3_BLOCK_STATUS);
    __atomic_store_n(status, TM_TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    r->block = (r->block + 1) % r->block_nr;
    r->left = 0;
}

/*
 * Copy up to n packets into pool objects handles[0..n): the packet's first
 * min(snaplen, obj_size) bytes go to base + handles[k] * stride.  caplens[k]
 * gets the bytes copied, wirelens[k] the length on the wire.  A packet
 * header that points outside its block ends the block (counted in *bad).
 * Returns how many objects were filled.
 */
static inline uint32_t tm_tp3_rx(tm_tp3_t *r, char *base, size_t stride, uint32_t obj_size,
                                 const uint32_t *handles, uint32_t n, uint32_t *caplens,
                                 uint32_t *wirelens, uint64_t *bad)
{
    uint32_t k = 0;
    while (k < n) {
        uint8_t *blk;
        if (r->left == 0) {
            uint32_t num, first;
            if (!tm_tp3_ready(r))
                break;
            blk = r->map + (size_t)r->block * r->block_size;
            num = tm_tp3_u32(blk, TM_TP3_NUM_PKTS);
            first = tm_tp3_u32(blk, TM_TP3_FIRST_PKT);
            if (num == 0 || first >= r->block_size) {
                tm_tp3_release_block(r);
                continue;
            }
            r->left = num;
            r->next = first;
        }
        blk = r->map + (size_t)r->block * r->block_size;
        while (k < n && r->left) {
            const uint8_t *hdr = blk + r->next;
            uint32_t snap, len, next_off, copy;
            uint16_t mac;
            if (r->next + 48u > r->block_size) {
                (*bad)++;
                r->left = 0;
                break;
            }
            snap = tm_tp3_u32(hdr, TM_TP3_SNAPLEN);
            len = tm_tp3_u32(hdr, TM_TP3_LEN);
            next_off = tm_tp3_u32(hdr, TM_TP3_NEXT_OFFSET);
            memcpy(&mac, hdr + TM_TP3_MAC, 2);
            if ((size_t)r->next + mac + snap > r->block_size) {
                (*bad)++;
                r->left = 0;
                break;
            }
            copy = snap < obj_size ? snap : obj_size;
            memcpy(base + (size_t)handles[k] * stride, hdr + mac, copy);
            caplens[k] = copy;
            wirelens[k] = len;
            k++;
            r->left--;
            if (r->left && (next_off == 0 || (size_t)r->next + next_off >= r->block_size)) {
                (*bad)++;
                r->left = 0;
                break;
            }
            r->next += next_off;
        }
        if (r->left == 0)
            tm_tp3_release_block(r);
    }
    return k;
}

#endif /* TURBOMEM_XSK_H */
