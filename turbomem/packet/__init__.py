"""Packet I/O sources and sinks (AF_XDP over a pool: xdp; AF_PACKET TPACKET_V3: tpacket)."""
