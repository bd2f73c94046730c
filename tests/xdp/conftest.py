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
    except OSError as exc:  # no veth / netns support in this kernel or container
        pytest.skip(f"cannot make a veth pair in a namespace: {exc}")
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
