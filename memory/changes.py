"""Wakes the readers of live calls when calls change, instead of each polling on a timer."""

from __future__ import annotations

import asyncio
import contextlib


class Changes:
    """A call started, stored turns or ended: `notify()`; readers `wait()` for the next one.

    This one wakes readers in this process; `callwright.cluster.Cluster` wakes every
    worker's. The database stays the record: a reader that wakes reads it.
    """

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake every reader waiting now (never blocks)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        """Return at the next change, or after `timeout` seconds at the latest."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
