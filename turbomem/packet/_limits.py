"""When a live packet source stops: one rule for every live pipeline source."""

from __future__ import annotations

import time
from typing import Optional


class LiveLimits:
    """Stop after ``count`` packets, ``duration`` seconds from the first read,
    or ``idle`` seconds without a packet (None: no such limit)."""

    def __init__(self, count: Optional[int], duration: Optional[float], idle: Optional[float]) -> None:
        self.count, self.duration, self.idle = count, duration, idle
        self.seen = 0  # packets the source has returned
        self._start = self._last = -1.0  # monotonic times, set by the first read

    def budget(self, n: int) -> Optional[int]:
        """How many packets the next read may take (at most ``n``), or None when the source is done."""
        now = time.monotonic()
        if self._start < 0:
            self._start = self._last = now
        if self.count is not None and self.seen >= self.count:
            return None
        if self.duration is not None and now - self._start >= self.duration:
            return None
        if self.idle is not None and now - self._last >= self.idle:
            return None
        return n if self.count is None else min(n, self.count - self.seen)

    def record(self, got: int) -> None:
        """A read returned ``got`` packets."""
        if got:
            self._last = time.monotonic()
            self.seen += got
