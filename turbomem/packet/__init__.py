"""The packet toolkit, built on the pool: burst socket I/O, pcap, parsing, a pipeline.

    from turbomem.packet import io, pcap, parse, pipeline, traffic

* :mod:`~turbomem.packet.io`: recvmmsg/sendmmsg straight into pool objects;
* :mod:`~turbomem.packet.pcap`: pcap reader/writer (record walk compiled in
  :mod:`~turbomem.packet._pcapwalk`, a cimport user of ``turbomem/_core.pxd``);
* :mod:`~turbomem.packet.parse`: vectorised header parsing of a burst;
* :mod:`~turbomem.packet.pipeline`: receive -> classify -> forward over rings;
* :mod:`~turbomem.packet.traffic`: synthetic packets and pcaps;
* :mod:`~turbomem.packet.summary`: traffic summaries of a pcap;
* :mod:`~turbomem.packet.constants`: link types, magics, ethertypes, TPIDs,
  IP protocols and parse codes, defined once.

Data flows one way: this package imports the pool (``turbomem``), never the
other way round.  Submodules are imported on demand.
"""
