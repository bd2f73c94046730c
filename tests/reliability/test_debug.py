"""Debug mode: freed objects are poisoned and the poison is checked on get."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import turbomem as tm
from cy.checks import assert_accounting
from turbomem.errors import TurbomemError, UseAfterFreeError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cache_size", [0, 4, 64])
@pytest.mark.parametrize("getter", ["get", "try_get", "get_bulk"])
def test_use_after_free_write_is_caught(cache_size, getter):
    p = tm.Pool(32, 64, cache_size=cache_size, debug=True, populate=False)
    try:
        h = p.get()
        v = p.view(h)
        p.put(h)
        v[5] = 0x42  # use after free
        del v
        with pytest.raises(UseAfterFreeError) as info:
            for _ in range(64):
                if getter == "get_bulk":
                    p.get_bulk(1)
                else:
                    getattr(p, getter)()
        assert info.value.handle == h
        assert isinstance(info.value, TurbomemError)
        assert str(h) in str(info.value)
        # the damaged object was handed out, so the accounting still adds up
        assert p.is_in_use(h)
    finally:
        p.close()


def test_clean_use_raises_nothing_and_freed_objects_are_poisoned():
    p = tm.Pool(16, 32, debug=True, populate=False)
    hs = p.get_bulk(32)
    for h in hs:
        p.view(int(h))[:] = b"x" * 16
    p.put_bulk(hs[:16])
    for h in hs[16:]:
        p.put(int(h))
    assert all(bytes(p.view(int(h))) == b"\xdb" * 16 for h in hs)
    assert_accounting(p, [])
    p.close()


def test_env_var_enables_debug():
    code = ("import turbomem as tm; p = tm.Pool(8, 4); h = p.get(); v = p.view(h); p.put(h); v[0] = 1\n"
            "try:\n    [p.get() for _ in range(4)]\nexcept tm.UseAfterFreeError as e:\n    print('caught', e.handle)")
    env = dict(os.environ, TURBOMEM_DEBUG="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.stdout.startswith("caught"), r.stdout + r.stderr


def test_debug_off_by_default_and_explicit_false_wins(monkeypatch):
    monkeypatch.setenv("TURBOMEM_DEBUG", "1")
    p = tm.Pool(8, 4, debug=False, populate=False)
    assert not p.debug
    p.close()
    monkeypatch.setenv("TURBOMEM_DEBUG", "0")
    p = tm.Pool(8, 4, populate=False)
    assert not p.debug
    p.close()
