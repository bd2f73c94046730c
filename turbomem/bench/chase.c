/* chase.c - memory-latency helpers for the hugepages suite (loaded by ctypes).
 *
 * tmb_link writes a single cycle through the objects of a region: object
 * perm[k] holds, at one of its cache lines, the byte offset of the link slot
 * of object perm[k+1].  tmb_chase then follows those offsets: every load
 * depends on the previous one, so the loop runs at memory (and TLB) latency.
 * The link slot moves across the object's cache lines so that the chase does
 * not hammer a single cache set.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static size_t slot_of(uint64_t obj, size_t stride) {
    size_t lines = stride / 64;
    return (size_t)obj * stride + (lines ? (size_t)((obj * 7) % lines) * 64 : 0);
}

/* Returns the byte offset where the chase should start. */
uint64_t tmb_link(unsigned char *base, size_t stride, const uint32_t *perm, uint64_t n) {
    for (uint64_t k = 0; k < n; k++) {
        uint64_t next = perm[k + 1 == n ? 0 : k + 1];
        *(uint64_t *)(base + slot_of(perm[k], stride)) = slot_of(next, stride);
    }
    return n ? slot_of(perm[0], stride) : 0;
}

uint64_t tmb_chase(const unsigned char *base, uint64_t start, uint64_t steps) {
    uint64_t off = start;
    while (steps--)
        off = *(const volatile uint64_t *)(base + off);
    return off;
}

void tmb_write(unsigned char *base, size_t len, int value) {
    memset(base, value, len);
    __asm__ __volatile__("" ::"r"(base) : "memory");
}

/* Fault every page in (one write per `page` bytes). */
void tmb_touch(unsigned char *base, size_t len, size_t page) {
    for (size_t off = 0; off < len; off += page)
        ((volatile unsigned char *)base)[off] = 0;
}
