"""Shared checks: collect frames from a receiver and verify them."""

import struct
import time

from turbomem.packet.vethlab import FRAME_ETHERTYPE, frame_payload


def collect(recv, pool, want, *, seconds=5.0, offsets=True):
    """Receive until ``want`` test frames arrived (or time runs out).

    Returns {seq: count}, the number of foreign frames, and whether every
    frame had the right bytes.  Every handle goes back to the pool."""
    seen = {}
    foreign = 0
    good = True
    arr = pool.array()
    deadline = time.monotonic() + seconds
    while sum(seen.values()) < want and time.monotonic() < deadline:
        out = recv()
        h, ln = out[0], out[1]
        off = out[2] if len(out) > 2 else [0] * len(h)
        try:
            for hh, n, o in zip(h, ln, off):
                data = bytes(arr[hh, o:o + n])
                if len(data) < 22 or struct.unpack_from("!H", data, 12)[0] != FRAME_ETHERTYPE:
                    foreign += 1
                    continue
                seq, size = struct.unpack_from("!II", data, 14)
                seen[seq] = seen.get(seq, 0) + 1
                if len(data) != size or data[14:] != frame_payload(seq, size):
                    good = False
        finally:
            if len(h):
                pool.put_bulk(h)
    return seen, foreign, good
