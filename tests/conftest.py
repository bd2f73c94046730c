"""Fixtures shared by every test folder.

This directory is put on sys.path by pytest (rootdir conftest), which is
what makes ``support`` and ``cy.checks`` importable from the subfolders.
"""

from __future__ import annotations

import pytest

import turbomem as tm


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "pool_args(obj_size, capacity, **kwargs): the Pool the `pool` fixture builds"
    )


@pytest.fixture
def pool(request):
    """A Pool that must get every handle back: the test fails if one leaked.

    Sized by the nearest ``pool_args`` marker (default 2048-byte objects, 512 of them).
    """
    marker = request.node.get_closest_marker("pool_args")
    args, kwargs = (marker.args, marker.kwargs) if marker else ((2048, 512), {})
    p = tm.Pool(*args, **kwargs)
    yield p
    assert p.available == p.capacity, "a handle leaked"
    p.close()
