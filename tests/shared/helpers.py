"""Child-process targets for the shared tests (importable under spawn)."""

from __future__ import annotations

import os
import time


def ring_echo(ring_in, ring_out, n):
    """Take n values from ring_in (blocking) and put value + 1 on ring_out."""
    for _ in range(n):
        v = ring_in.get(timeout=20)
        assert v is not None and ring_out.put(v + 1, timeout=20)


def pool_worker(pool, n):
    """Take n handles from ring 0, check the payload, write it back doubled on ring 1."""
    rin, rout = pool.ring(0), pool.ring(1)
    for _ in range(n):
        h = rin.dequeue(timeout=20)
        v = int.from_bytes(pool.view(h)[:4], "little")
        pool.view(h)[:4] = (v * 2).to_bytes(4, "little")
        assert rout.enqueue(h, timeout=20)


def hold_and_die(pool, k, ready):
    """Get k objects, put some on ring 0, report, then wait to be killed."""
    hs = pool.get_bulk(k)
    pool.ring(0).enqueue_bulk(hs[: k // 2])
    ready.put(os.getpid())
    time.sleep(60)


def churn(pool, seed, ring_in=0, ring_out=0):
    """Get/put/enqueue/dequeue forever with random sizes (killed from outside)."""
    import random

    rnd = random.Random(seed)
    held = []
    r0, r1 = pool.ring(ring_out), pool.ring(ring_in)
    while True:
        op = rnd.random()
        try:
            if op < 0.4:
                held.extend(int(h) for h in pool.get_bulk(rnd.randint(1, 40)))
            elif op < 0.75 and held:
                k = rnd.randint(1, len(held))
                pool.put_bulk(held[:k])
                del held[:k]
            elif op < 0.9 and held:
                k = rnd.randint(1, min(len(held), 8))
                if r0.enqueue_bulk(held[:k]):
                    del held[:k]
            elif op < 0.98:
                held.extend(int(h) for h in r1.dequeue_burst(rnd.randint(1, 16)))
            else:  # recover dead peers ourselves: recoverers get killed half-way too
                pool.recover()
        except MemoryError:
            pool.put_bulk(held)
            held = []


def pool_from_queue(q, done):
    """Receive a memfd SharedPool through a Queue (its fd via the resource sharer) and use it."""
    pool = q.get(timeout=20)
    h = pool.ring(0).dequeue(timeout=20)
    pool.view(h)[:3] = b"got"
    pool.put(h)
    done.put(pool.name)


def idle_consumer(ring, out):
    """Block on an empty ring until woken; report this process's CPU seconds."""
    import resource

    v = ring.get(timeout=30)
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out.put((v, ru.ru_utime + ru.ru_stime))


def _hugetlb_facts(pool):
    from turbomem import procfs

    rep = pool.hugepage_report()
    addr = pool._v.address()
    vmas = procfs.mappings_for(addr, addr + rep["size"])
    return {"hugetlb": rep["hugetlb"], "page_size": rep["page_size"],
            "smaps_ht": bool(vmas) and all("ht" in v.vmflags for v in vmas)}


def hugetlb_child(pool, q, out):
    """Report what the pool passed as an argument and the one passed through
    a Queue look like in this process; read two handles from ring 0, write
    0x5A5A into them and put them back."""
    res = {"arg": _hugetlb_facts(pool)}
    other = q.get(timeout=30)
    res["queue"] = _hugetlb_facts(other)
    other.close()
    hs = pool.ring(0).dequeue_burst(2, timeout=30)
    res["read"] = [int.from_bytes(pool.view(h)[:8], "little") for h in hs]
    for h in hs:
        pool.view(h)[:8] = (0x5A5A).to_bytes(8, "little")
    pool.put_bulk(hs)
    out.put(res)
