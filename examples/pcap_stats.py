#!/usr/bin/env python3
"""Summarise a pcap file: packets, bytes, IPv4/IPv6/TCP/UDP/ICMP counts, flows, top talkers.

    python examples/pcap_stats.py trace.pcap
    python examples/pcap_stats.py trace.pcap --json

Packets are read in bursts into the objects of one small turbomem Pool,
parsed with vectorised numpy (turbomem.packet.parse) and recycled at once, so
memory is bounded by the pool whatever the file size.
"""

from __future__ import annotations

import argparse
import json
import sys

from turbomem.packet.pcap import PcapError
from turbomem.packet.summary import format_summary, summarize


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="classic pcap file (not pcapng)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--burst", type=int, default=256, help="packets per burst")
    p.add_argument("--obj-size", type=int, default=2048,
                   help="bytes per pool object (longer packets are cut for parsing)")
    p.add_argument("--top", type=int, default=10, help="how many top talkers")
    args = p.parse_args(argv)
    try:
        s = summarize(args.file, burst=args.burst, obj_size=args.obj_size, top=args.top)
    except (OSError, PcapError) as err:
        print(f"pcap_stats: {err}", file=sys.stderr)
        return 2
    print(json.dumps(s, indent=2) if args.json else format_summary(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
