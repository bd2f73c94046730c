"""TurboMem's benchmark suites (``python -m turbomem bench ...``).

core       the C pool against DPDK's rte_mempool (core_bench.c, one harness)
python     get+put from Python against the usual pure-Python free lists
hugepages  creation, random reads, writes and close() with and without huge pages

Entry point: :func:`turbomem.bench.cli.main`.
"""
