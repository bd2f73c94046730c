"""Attach refuses every foreign, corrupt or truncated file with SharedFormatError
(or the OSError the kernel gives), never a crash; the creator's file is 0600."""

from __future__ import annotations

import os
import stat
import struct
import uuid

import pytest

from turbomem import shared as sh
from turbomem.errors import SharedFormatError


def _name():
    return "test-" + uuid.uuid4().hex[:12]


@pytest.fixture
def pool_file():
    """A valid named pool's bytes (with rings), and a fresh name to write variants under."""
    name = _name()
    with sh.SharedPool(256, 64, name=name, rings=2, ring_capacity=16, max_slots=4) as p:
        data = bytes(p._m.mm)
        p.unlink()
    return data


@pytest.fixture
def ring_file():
    name = _name()
    with sh.SharedRing(32, name=name) as r:
        data = bytes(r._m.mm)
        r.unlink()
    return data


def _field_offset(name):
    """Byte offset of a header field."""
    fmt = "<"
    for f, code in zip(sh._FIELDS, sh._HEADER.format.replace("<", "").split()):
        if f == name:
            return struct.calcsize(fmt)
        fmt += code
    raise KeyError(name)


def _set(data, field, value, fix_checksum=True):
    buf = bytearray(data)
    code = sh._HEADER.format.replace("<", "").split()[sh._FIELDS.index(field)]
    struct.pack_into("<" + code, buf, _field_offset(field), value)
    if fix_checksum:
        struct.pack_into("<Q", buf, sh._HEADER.size, sh._checksum(bytes(buf)))
    return bytes(buf)


def _attach_bytes(data, cls=sh.SharedPool, mode=0o600):
    name = _name()
    path = sh._shm_path(name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        obj = cls.attach(name)
        obj.close()
        return None
    except SharedFormatError as exc:
        return exc
    finally:
        os.unlink(path)


# Each case: (id, function(valid pool bytes) -> bytes, words the message must contain)
CASES = [
    ("empty file", lambda d: b"", "too small"),
    ("shorter than a header", lambda d: d[:100], "too small"),
    ("header only, body truncated", lambda d: d[:sh.HEADER_SIZE], "truncated"),
    ("truncated by one page", lambda d: d[:-4096], "truncated"),
    ("longer than its header says", lambda d: d + b"\0" * 4096, "longer"),
    ("text file", lambda d: b"hello, not a pool\n" * 1000, "not a TurboMem"),
    ("ELF binary header", lambda d: b"\x7fELF\x02\x01\x01" + bytes(8192), "not a TurboMem"),
    ("zeros", lambda d: bytes(len(d)), "not a TurboMem"),
    ("random bytes", lambda d: os.urandom(len(d)), "not a TurboMem"),
    ("magic off by one byte", lambda d: b"TurboMEm" + d[8:], "not a TurboMem"),
    ("other byte order", lambda d: _set(d, "endian", 0x04030201), "byte order"),
    ("future layout version", lambda d: _set(d, "version", sh.LAYOUT_VERSION + 1), "layout version"),
    ("version 0", lambda d: _set(d, "version", 0), "layout version"),
    ("unknown kind", lambda d: _set(d, "kind", 7), "unknown kind"),
    ("checksum broken (capacity changed, checksum not)", lambda d: _set(d, "capacity", 65, False), "checksum"),
    ("flipped bit in an offset", lambda d: _set(d, "off_owner", 12345, False), "checksum"),
    ("not ready (creator died)", lambda d: d[:sh._READY_AT] + b"\0\0\0\0" + d[sh._READY_AT + 4:], "not ready"),
    ("capacity 0", lambda d: _set(d, "capacity", 0), "capacity"),
    ("capacity past the maximum", lambda d: _set(d, "capacity", 2**32 - 1), "capacity"),
    ("object size 0", lambda d: _set(d, "obj_size", 0), "object size"),
    ("capacity grown (layout no longer fits)", lambda d: _set(d, "capacity", 100000), "layout"),
    ("stride smaller than objects", lambda d: _set(d, "stride", 64), "stride"),
    ("cache larger than the pool", lambda d: _set(d, "cache_size", 65), "cache size"),
    ("no slots", lambda d: _set(d, "max_slots", 0), "max_slots"),
    ("too many rings", lambda d: _set(d, "nrings", 100000), "ring count"),
    ("ring capacity 0", lambda d: _set(d, "ring_capacity", 0), "ring capacity"),
    ("misplaced depot magazines", lambda d: _set(d, "off_mags", 4096 + 8), "off_mags"),
    ("magazine size not the pool's", lambda d: _set(d, "mag_size", 3), "mag_size"),
    ("object region moved past the end", lambda d: _set(d, "off_objects", 1 << 40), "off_objects"),
    ("total size lies", lambda d: _set(d, "total_size", len(d) * 2), "total_size"),
    ("page size invalid", lambda d: _set(d, "page_size", 12345), "page size"),
    ("header size lies", lambda d: _set(d, "header_size", 64), "header size"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_attach_refuses_corrupt_pool(pool_file, case):
    _, mutate, words = case
    exc = _attach_bytes(mutate(pool_file))
    assert exc is not None, "attach accepted a corrupt file"
    assert words.lower() in str(exc).lower(), str(exc)


def test_at_least_twenty_kinds():
    assert len(CASES) >= 20


def test_unmodified_copy_attaches(pool_file):
    assert _attach_bytes(pool_file) is None  # the cases above fail for their own reason


def test_ring_geometry_scribbled_is_refused(pool_file):
    """Header intact, but ring 0's geometry inside the control area was overwritten."""
    lay = dict(zip(sh._FIELDS, sh._HEADER.unpack_from(pool_file)))
    buf = bytearray(pool_file)
    ring0 = lay["off_rings"] + 128  # after the ring's control block
    struct.pack_into("<I", buf, ring0, 1 << 20)  # ring.h size field
    exc = _attach_bytes(bytes(buf))
    assert exc is not None and "geometry" in str(exc)


def test_pool_file_is_not_a_ring(pool_file, ring_file):
    exc = _attach_bytes(pool_file, sh.SharedRing)
    assert exc is not None and "not a ring" in str(exc)
    exc = _attach_bytes(ring_file, sh.SharedPool)
    assert exc is not None and "not a pool" in str(exc)


def test_ring_corrupt_capacity(ring_file):
    assert "ring capacity" in str(_attach_bytes(_set(ring_file, "capacity", 0), sh.SharedRing))
    assert "flags" in str(_attach_bytes(_set(ring_file, "ring_flags", 8), sh.SharedRing))
    assert _attach_bytes(ring_file, sh.SharedRing) is None


def test_symlink_directory_fifo_refused(tmp_path):
    target = tmp_path / "x"
    target.write_bytes(b"x")
    for make in ("symlink", "dir", "fifo"):
        name = _name()
        path = sh._shm_path(name)
        if make == "symlink":
            os.symlink(target, path)
        elif make == "dir":
            os.mkdir(path)
        else:
            os.mkfifo(path, 0o600)
        try:
            with pytest.raises(SharedFormatError):
                sh.SharedPool.attach(name)
        finally:
            (os.rmdir if make == "dir" else os.unlink)(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_file_of_another_user_refused(pool_file):
    name = _name()
    path = sh._shm_path(name)
    with open(path, "wb") as f:
        f.write(pool_file)
    os.chown(path, 12345, 12345)
    try:
        with pytest.raises(SharedFormatError, match="belongs to uid 12345"):
            sh.SharedPool.attach(name)
    finally:
        os.unlink(path)


def test_missing_name_and_bad_names():
    with pytest.raises(FileNotFoundError):
        sh.SharedPool.attach(_name())
    for bad in ("", "a/b", "..", "x" * 201, 5):
        with pytest.raises(ValueError):
            sh.SharedPool.attach(bad)


def test_named_pool_mode_0600_and_exclusive():
    name = _name()
    old = os.umask(0)
    try:
        with sh.SharedPool(64, 8, name=name) as p:
            assert stat.S_IMODE(os.stat(sh._shm_path(name)).st_mode) == 0o600
            with pytest.raises(FileExistsError):
                sh.SharedPool(64, 8, name=name)
            p.unlink()
        with sh.SharedRing(8, name=name, mode=0o640) as r:
            assert stat.S_IMODE(os.stat(sh._shm_path(name)).st_mode) == 0o640
            r.unlink()
    finally:
        os.umask(old)


def test_hugepage_report_says_what_and_why():
    with sh.SharedPool(2048, 16) as p:
        rep = p.hugepage_report()
    assert rep["backing"].startswith("memfd")
    assert rep["shmem_enabled"] in rep["reason"] or "MFD_HUGETLB" in rep["reason"]
    if rep["backing"] == "memfd":
        assert rep["page_size"] == 4096 or rep["huge_bytes"] > 0
    with sh.SharedPool(2048, 16, hugepages="none") as p:
        assert "hugepages='none'" in p.hugepage_report()["reason"]
