"""smaps/numa_maps parsing on recorded text, and page_nodes on live memory."""

from __future__ import annotations

import errno

import pytest

from turbomem import _sys, procfs, smaps
from turbomem.errors import SmapsParseError, TurbomemError

# Recorded from Linux 6.x, then trimmed; includes a THP-backed anonymous
# region, a hugetlb region, a file path with spaces, [heap], an unknown key
# ("FutureCounter", "FutureText") and stray blank lines.
SMAPS_SAMPLE = """\
55d4c6a00000-55d4c6a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:                  24 kB
Pss:                  24 kB
Private_Dirty:        24 kB
AnonHugePages:         0 kB
THPeligible:           0
VmFlags: rd wr mr mw me ac sd

7f1c2a000000-7f1c2e000000 rw-p 00000000 00:00 0\x20
Size:              65536 kB
KernelPageSize:        4 kB
MMUPageSize:           4 kB
Rss:               65536 kB
Pss:               65536 kB
Private_Dirty:     65536 kB
Anonymous:         65536 kB
AnonHugePages:     63488 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       0 kB
FutureCounter:        17
FutureText:       hello world
THPeligible:           1
ProtectionKey:         0
VmFlags: rd wr mr mw me ac sd hg


7f465b000000-7f465b400000 rw-p 00000000 00:11 5136                       /anon_hugepage (deleted)
Size:               4096 kB
KernelPageSize:     2048 kB
MMUPageSize:        2048 kB
Rss:                   0 kB
AnonHugePages:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:    4096 kB
THPeligible:           0
VmFlags: rd wr mr mw me de ht
7f465c000000-7f465c002000 r--p 00001000 fd:01 1234567                    /opt/My Data/lib with spaces.so
Size:                  8 kB
Rss:                   8 kB
VmFlags: rd mr mw me
"""


def test_parse_smaps_sample():
    maps = procfs.parse_smaps(SMAPS_SAMPLE)
    assert [m.path for m in maps] == ["[heap]", "", "/anon_hugepage (deleted)", "/opt/My Data/lib with spaces.so"]
    heap, thp, hugetlb, lib = maps
    assert heap.start == 0x55D4C6A00000 and heap.end == 0x55D4C6A21000
    assert heap.fields["Rss"] == 24 * 1024
    assert thp.size == 64 * 1024 * 1024
    assert thp.fields["AnonHugePages"] == 63488 * 1024
    assert thp.fields["THPeligible"] == 1  # not a kB field: kept as a plain int
    assert thp.fields["FutureCounter"] == 17
    assert "FutureText" not in thp.fields
    assert "hg" in thp.vmflags and not thp.is_hugetlb
    assert hugetlb.is_hugetlb and hugetlb.fields["KernelPageSize"] == 2 * 1024 * 1024
    assert hugetlb.fields["Private_Hugetlb"] == 4096 * 1024
    assert hugetlb.dev == "00:11" and hugetlb.inode == 5136
    assert lib.perms == "r--p" and lib.offset == 0x1000 and lib.dev == "fd:01"
    assert lib.vmflags == ["rd", "mr", "mw", "me"]


def test_mappings_for_selects_overlaps():
    maps = procfs.parse_smaps(SMAPS_SAMPLE)
    hits = procfs.mappings_for(0x7F1C2C000000, 0x7F465B000001, maps)
    assert [m.start for m in hits] == [0x7F1C2A000000, 0x7F465B000000]
    assert procfs.mappings_for(0x7F1C2E000000, 0x7F465B000000, maps) == []


@pytest.mark.parametrize(
    ("text", "bad_line"),
    [
        ("Rss: 4 kB\n", 1),  # field before any header
        ("7f00-8000 rw-p 00000000 00:00 0\nRss: 4 kB\nthis is not a field\n", 3),
        ("7f00-8000 rw-p 00000000 00:00 0\n\nRss:  lots kB\n", 3),  # known key, not a number
        ("7f00-8000 rw-p 00000000 00:00 0\nSize: 4 kB\nzz00-8000 rw-p 0 00:00 0\n", 3),
        ("8000-7f00 rw-p 00000000 00:00 0\n", 1),  # end before start
    ],
)
def test_parse_smaps_malformed_names_the_line(text, bad_line):
    with pytest.raises(SmapsParseError) as info:
        procfs.parse_smaps(text)
    assert f"line {bad_line}" in str(info.value)
    offending = text.splitlines()[bad_line - 1]
    assert repr(offending) in str(info.value)
    assert isinstance(info.value, TurbomemError) and isinstance(info.value, ValueError)


def test_read_smaps_of_this_process():
    maps = procfs.read_smaps()
    assert any(m.path == "[stack]" for m in maps)
    assert all("Rss" in m.fields for m in maps)


NUMA_MAPS_SAMPLE = """\
557658449000 default file=/usr/bin/cat mapped=2 N0=2 kernelpagesize_kB=4
7f1c2a000000 bind:0 anon=16384 dirty=16384 active=0 N0=16384 kernelpagesize_kB=4

7f465b000000 default file=/anon_hugepage\\040(deleted) huge dirty=2 N0=1 N1=1 kernelpagesize_kB=2048
7ffd1e3c5000 default stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
"""


def test_parse_numa_maps_sample():
    entries = procfs.parse_numa_maps(NUMA_MAPS_SAMPLE)
    assert set(entries) == {0x557658449000, 0x7F1C2A000000, 0x7F465B000000, 0x7FFD1E3C5000}
    bound = entries[0x7F1C2A000000]
    assert bound["policy"] == "bind:0"
    assert bound["nodes"] == {0: 16384}
    assert bound["anon"] == 16384 and bound["kernelpagesize_kB"] == 4
    huge = entries[0x7F465B000000]
    assert huge["flags"] == ["huge"]
    assert huge["nodes"] == {0: 1, 1: 1}
    assert huge["kernelpagesize_kB"] == 2048
    assert entries[0x557658449000]["file"] == "/usr/bin/cat"
    assert entries[0x7FFD1E3C5000]["flags"] == ["stack"]


@pytest.mark.parametrize(
    ("text", "bad_line"),
    [
        ("557658449000 default N0=2\nnothex default N0=1\n", 2),
        ("557658449000\n", 1),
        ("557658449000 default N0=two\n", 1),
        ("557658449000 default\n7f00 bind:0 kernelpagesize_kB=4k\n", 2),
    ],
)
def test_parse_numa_maps_malformed_names_the_line(text, bad_line):
    with pytest.raises(SmapsParseError, match=f"numa_maps line {bad_line}"):
        procfs.parse_numa_maps(text)


def test_read_numa_maps_of_this_process():
    try:
        entries = procfs.read_numa_maps()
    except FileNotFoundError:
        pytest.skip("no /proc/self/numa_maps (kernel without NUMA)")
    assert entries


@pytest.fixture
def touched_pages():
    length = 64 * _sys.PAGE_SIZE
    addr = _sys.mmap(length, _sys.PROT_READ | _sys.PROT_WRITE, _sys.MAP_PRIVATE | _sys.MAP_ANONYMOUS)
    _sys.madvise(addr, length // 2, _sys.MADV_POPULATE_WRITE)  # first half only
    yield addr, length
    _sys.munmap(addr, length)


def test_page_nodes_counts_present_and_absent_pages(touched_pages):
    addr, length = touched_pages
    result = smaps.page_nodes(addr, length)
    if result["method"] != "move_pages":
        pytest.skip(f"move_pages unavailable here: {result}")
    assert sum(result["nodes"].values()) == 32
    assert result["not_present"] == 32
    assert result["sampled"] == 64


def test_page_nodes_samples_big_ranges(touched_pages):
    addr, _ = touched_pages
    result = smaps.page_nodes(addr, 10 * smaps.MAX_SAMPLED_PAGES * _sys.PAGE_SIZE)
    if result["method"] == "move_pages":
        assert result["sampled"] == smaps.MAX_SAMPLED_PAGES


def test_page_nodes_falls_back_to_numa_maps(touched_pages, monkeypatch):
    addr, length = touched_pages

    def refuse(addresses, pid=0):
        raise OSError(errno.EPERM, "move_pages(query): Operation not permitted")

    monkeypatch.setattr(_sys, "move_pages_query", refuse)
    result = smaps.page_nodes(addr, length)
    assert result["method"] in ("numa_maps",) or result["method"].startswith("unavailable")
    assert "EPERM" in (result.get("note") or result["method"])
    if result["method"] == "numa_maps":
        assert sum(result["nodes"].values()) >= 32


def test_page_nodes_rejects_empty_range():
    with pytest.raises(ValueError):
        smaps.page_nodes(0x1000, 0)
