"""Stores each call's flow name, version, node path and slots, off the audio path.

Transitions only hand over a snapshot; one background task per call writes the
latest one, so a slow database delays nothing and intermediate states coalesce.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from loguru import logger

from callwright.flows.engine import FlowSnapshot


class FlowStore(Protocol):
    """Where `FlowRecorder` writes a call's flow state (`memory.store.CallStore` is one)."""

    async def update_flow(
        self, call_id: int, *, flow_name: str, flow_version: str, flow_path: list, slots: dict,
        outcome: str | None = None,
    ) -> None:
        """Store the call's flow state as it is now, in place of what was stored before."""


class FlowRecorder:
    """A `FlowRun`'s `on_change` callback that stores its snapshots without waiting on the store.

    Calling it only keeps the snapshot; one background task per recorder writes the
    latest, so snapshots that arrive during a write coalesce into the newest. A failed
    write is retried after `retry_s` times the failures so far; after six failures in a
    row that state is dropped (logged). Call it from a running event loop.

    Args:
        store: Where the state is written.
        call_id: The call it is written for.
        retry_s: The pause after a first failure.
    """

    def __init__(self, *, store: FlowStore, call_id: int, retry_s: float = 0.5):
        self._store = store
        self._call_id = call_id
        self._retry_s = retry_s
        self._pending: FlowSnapshot | None = None
        self._task: asyncio.Task | None = None

    def __call__(self, snapshot: FlowSnapshot) -> None:
        self._pending = snapshot
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        failures = 0
        while self._pending is not None:
            snapshot, self._pending = self._pending, None
            try:
                await self._store.update_flow(
                    self._call_id, flow_name=snapshot.flow_name,
                    flow_version=snapshot.flow_version, flow_path=snapshot.flow_path,
                    slots=snapshot.slots, outcome=snapshot.outcome,
                )
                failures = 0
            except Exception as exc:
                failures += 1
                if failures > 5:
                    logger.error(f"call {self._call_id}: flow state not stored: {exc!r}")
                    return
                logger.warning(f"call {self._call_id}: storing flow state failed ({exc!r})")
                if self._pending is None:
                    self._pending = snapshot
                await asyncio.sleep(self._retry_s * failures)

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait for the background writer to finish: the latest snapshot stored, or given up.

        Args:
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: It was not done within `timeout`; the writing goes on.
        """
        if self._task is not None:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
