#!/usr/bin/env python3
"""UDP echo on loopback: burst receive into pool buffers vs a socket.recvfrom loop.

    python examples/udp_echo.py                    # both servers, echo + drain, 100k datagrams
    python examples/udp_echo.py --count 20000 --json
    python examples/udp_echo.py --serve 9000       # just run the burst echo server

The burst server receives with recvmmsg straight into turbomem Pool objects
(turbomem.packet.io.BurstReceiver) and echoes with sendmmsg from the same objects;
the plain server is the usual ``data, addr = sock.recvfrom(); sock.sendto()``
loop.  Each is driven by the same load generator (a child process keeping a
window of datagrams in flight).  "drain" times emptying a socket queue of
N datagrams: the receive path alone.  Code: turbomem.bench.udpbench.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

from turbomem.bench.udpbench import drain_benchmark, echo_benchmark, serve_burst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100_000, help="datagrams per measurement")
    p.add_argument("--size", type=int, default=64, help="payload bytes")
    p.add_argument("--burst", type=int, default=256, help="recvmmsg burst")
    p.add_argument("--window", type=int, default=256, help="datagrams in flight (echo)")
    p.add_argument("--serve", type=int, metavar="PORT",
                   help="run the burst echo server on 127.0.0.1:PORT until a 1-byte datagram")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.size < 2:
        p.error("--size must be at least 2 (a 1-byte datagram means stop)")

    if args.serve is not None:
        import turbomem as tm

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
                tm.Pool(2048, 4 * args.burst) as pool:
            sock.bind(("127.0.0.1", args.serve))
            print(json.dumps(serve_burst(sock, pool, args.burst, timeout=3600)))
            ok = pool.available == pool.capacity
        return 0 if ok else 1

    results = {}
    for mode in ("recvfrom", "burst"):
        results[f"echo_{mode}"] = echo_benchmark(mode, count=args.count, size=args.size,
                                                 window=args.window, burst=args.burst)
        results[f"drain_{mode}"] = drain_benchmark(mode, count=min(args.count, 50_000),
                                                   size=args.size, burst=args.burst)
    results["echo_ratio"] = (results["echo_burst"]["packets_per_sec"]
                             / max(results["echo_recvfrom"]["packets_per_sec"], 1e-9))
    results["drain_ratio"] = (results["drain_burst"]["packets_per_sec"]
                              / max(results["drain_recvfrom"]["packets_per_sec"], 1e-9))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for key in ("echo_recvfrom", "echo_burst", "drain_recvfrom", "drain_burst"):
            r = results[key]
            print(f"{key:<15} {r['packets']:>8} pkts {r['packets_per_sec']:>12,.0f} pkt/s")
        print(f"burst/recvfrom: echo x{results['echo_ratio']:.2f}, "
              f"receive (drain) x{results['drain_ratio']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
