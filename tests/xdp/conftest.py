"""Fixtures for the AF_XDP / TPACKET_V3 tests: a veth pair per test, far end in its own namespace."""

import itertools

import pytest

from turbomem.packet import vethlab

_counter = itertools.count()


def _lab(queues=1):
    why = vethlab.available()
    if why:
        pytest.skip(why)
    lab = vethlab.VethLab(f"t{next(_counter)}", queues=queues)
    try:
        lab.__enter__()
    except OSError as exc:
        # Skip only when the feature is absent here (no netns/veth support, a
        # container without the rights); anything else is a failure.
        text = str(exc).lower()
        if any(why in text for why in ("not supported", "not permitted", "permission denied",
                                       "unknown device type", "no such file")):
            pytest.skip(f"cannot make a veth pair in a namespace: {exc}")
        raise
    return lab


@pytest.fixture
def lab():
    lab = _lab()
    try:
        yield lab
    finally:
        lab.remove()


@pytest.fixture
def lab2():
    lab = _lab(queues=2)
    try:
        yield lab
    finally:
        lab.remove()
