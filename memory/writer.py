"""Writes turns off the audio path, in order, and holds them while the database is away."""

from __future__ import annotations

import asyncio
from collections import deque

from loguru import logger

from memory.store import CallStore, TurnRecord


class TurnWriter:
    """A bounded, ordered buffer of turns flushed by one background task.

    `write()` never waits on the database. When a flush fails the turns stay
    buffered and are retried with backoff; past `max_buffered` the oldest are
    dropped with an error log, so a dead database cannot exhaust memory.
    """

    def __init__(self, store: CallStore, *, max_buffered: int = 10_000, retry_s: float = 0.5):
        self._store = store
        self._buffer: deque[TurnRecord] = deque()
        self._max = max_buffered
        self._retry_s = retry_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="turn-writer")

    def write(self, record: TurnRecord) -> None:
        if len(self._buffer) >= self._max:
            lost = self._buffer.popleft()
            logger.error(f"call {lost.call_id}: turn buffer full, dropped turn {lost.seq}")
        self._buffer.append(record)
        self._idle.clear()
        self._wake.set()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything written so far is stored; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def close(self, timeout: float = 5.0) -> None:
        if not await self.flush(timeout):
            logger.error(f"{len(self._buffer)} turns not stored at shutdown")
        if self._task:
            self._task.cancel()

    async def _run(self) -> None:
        delay = self._retry_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                batch = list(self._buffer)
                try:
                    await self._store.add_turns(batch)
                except Exception as exc:  # the database may be away: keep and retry
                    logger.warning(f"storing {len(batch)} turns failed ({exc!r}); retrying")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = self._retry_s
                for record in batch:  # the head may have been dropped meanwhile
                    if self._buffer and self._buffer[0] is record:
                        self._buffer.popleft()
            self._idle.set()
