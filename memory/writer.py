"""Writes records off the audio path, in order, and holds them while the database is away."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from loguru import logger
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

from callwright.memory.store import CallStore, DraftRecord, TurnRecord

T = TypeVar("T")
# Errors that storing the same records again would only repeat (unlike a lost connection).
REFUSED = (IntegrityError, DataError, ProgrammingError, TypeError, ValueError)


class OrderedWriter(Generic[T]):
    """A bounded, ordered buffer of records flushed in batches by one background task.

    `write()` never waits on the database. When a flush fails the records stay
    buffered and are retried with backoff; past `max_buffered` the oldest are
    dropped with an error log, so a dead database cannot exhaust memory. A record the
    database refuses outright (a constraint, bad data) is dropped alone, with an error log.
    """

    what = "records"

    def __init__(
        self,
        sink: Callable[[list[T]], Awaitable[object]],
        *,
        max_buffered: int = 10_000,
        retry_s: float = 0.5,
    ):
        self._sink = sink
        self._buffer: deque[T] = deque()
        self._max = max_buffered
        self._retry_s = retry_s
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task | None = None
        self.dropped = 0  # records dropped from a full buffer, since start

    @property
    def depth(self) -> int:
        """Records buffered now: written, and not yet stored."""
        return len(self._buffer)

    def start(self) -> None:
        """Start the background task that stores what is written; once, in the running loop."""
        self._task = asyncio.create_task(self._run(), name=f"{self.what}-writer")

    def write(self, record: T) -> None:
        """Buffer a record to be stored, without waiting; a full buffer drops its oldest."""
        if len(self._buffer) >= self._max:
            self._buffer.popleft()  # logged without its content: it may be personal data
            self.dropped += 1
            logger.error(f"{self.what} buffer full: dropped the oldest")
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
        """Wait up to `timeout` seconds for the buffer to be stored, then stop the task.

        Records still buffered then are not stored; the log says how many.
        """
        if not await self.flush(timeout):
            logger.error(f"{len(self._buffer)} {self.what} not stored at shutdown")
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
                    await self._sink(batch)
                except REFUSED:  # a record the database will never take: not worth a retry
                    await self._store_one_by_one(batch)
                    continue
                except Exception as exc:  # the database may be away: keep and retry
                    logger.warning(f"storing {len(batch)} {self.what} failed ({exc!r}); retrying")
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = self._retry_s
                self._forget(batch)
            self._idle.set()

    def _forget(self, batch: list[T]) -> None:
        for record in batch:  # the head may have been dropped meanwhile
            if self._buffer and self._buffer[0] is record:
                self._buffer.popleft()

    async def _store_one_by_one(self, batch: list[T]) -> None:
        """A batch the database refused: store its records one at a time and drop (with an
        error log, counted in `dropped`) only those it refuses, so that one bad record
        never holds up every call's. The database going away meanwhile stops this; what
        is left of the batch is retried as usual."""
        for record in batch:
            try:
                await self._sink([record])
            except REFUSED as exc:  # logged without its content: it may be personal data
                self.dropped += 1
                logger.error(f"a {self.what} record was refused and dropped: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            except Exception:
                return
            self._forget([record])


class TurnWriter(OrderedWriter[TurnRecord | DraftRecord]):
    """Stores the turns of every call, and the drafts of their exchanges in progress."""

    what = "turns"

    def __init__(self, store: CallStore, **kwargs):
        super().__init__(store.add_turns, **kwargs)
