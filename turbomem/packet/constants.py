"""Every wire and file-format number the packet toolkit uses, defined once.

Link types and pcap magics come from the pcap format; ethertypes, VLAN tag
protocol identifiers and IP protocol numbers from IEEE/IANA.  The L3_/L4_/F_
values are this toolkit's own: the codes :func:`turbomem.packet.parse.parse`
writes into its result.
"""

from __future__ import annotations

# ---------------------------------------------------------------- pcap file --
MAGIC_USEC = 0xA1B2C3D4  # microsecond timestamps
MAGIC_NSEC = 0xA1B23C4D  # nanosecond timestamps
PCAP_MAGICS = (MAGIC_USEC, MAGIC_NSEC)
MAX_RECORD = 262144  # libpcap's own ceiling on a record (256 KiB)

# ----------------------------------------------------------------- linktypes --
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW_BSD = 12  # raw IP as written by some BSDs
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113  # Linux cooked capture v1 (tcpdump -i any)
LINKTYPE_LINUX_SLL2 = 276  # Linux cooked capture v2
SUPPORTED_LINKTYPES = (LINKTYPE_ETHERNET, LINKTYPE_RAW_BSD, LINKTYPE_RAW, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2)

# ---------------------------------------------------------------- ethertypes --
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_IPV6 = 0x86DD
TPID_8021Q = 0x8100  # customer VLAN tag
TPID_8021AD = 0x88A8  # service VLAN tag (QinQ outer)
TPID_QINQ_LEGACY = 0x9100  # pre-802.1ad QinQ
VLAN_TPIDS = (TPID_8021Q, TPID_8021AD, TPID_QINQ_LEGACY)
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772  # the hardware type SLL headers carry on lo

# ----------------------------------------------------------- IP protocols ----
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
# IPv6 extension headers that stop the parse walk (hop-by-hop, 0, is walked).
IPV6_EXTENSION_HEADERS = (0, 43, 44, 50, 51, 60, 135, 139, 140)

# ------------------------------------------------- parse() result codes ----
L3_OTHER, L3_IPV4, L3_IPV6 = 0, 1, 2
L4_OTHER, L4_TCP, L4_UDP, L4_ICMP, L4_ICMPV6 = 0, 1, 2, 3, 4

F_MALFORMED = 0x01       # a header field is inconsistent (bad version, IHL < 5, ...)
F_TRUNCATED = 0x02       # a header runs past the captured bytes
F_FRAGMENT = 0x04        # IPv4 packet is a fragment (MF set or offset != 0)
F_LATER_FRAGMENT = 0x08  # IPv4 fragment with offset != 0: no L4 header in it
F_VLAN = 0x10            # at least one VLAN tag
F_QINQ = 0x20            # two VLAN tags
F_IPV6_EXT = 0x40        # an IPv6 extension header other than hop-by-hop: L4 not parsed
F_UNPARSED = 0x80        # a header lies beyond the parse window (huge options)
