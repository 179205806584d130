"""How many calls this worker takes: a maximum, and a drain for graceful shutdown."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class SharedLines(Protocol):
    """A call cap shared with other workers (`callwright.cluster.Cluster`)."""

    async def admit(self, call_sid: str, *, hold_s: float) -> bool:
        """Take a line for `call_sid` for `hold_s`; False when the service is full."""

    def hold(self, call_sid: str) -> None:
        """The call runs on this worker: keep its line."""

    async def release(self, call_sid: str) -> None:
        """Free the call's line."""


class CallRelay(Protocol):
    """Call events passed between workers (`callwright.cluster.Cluster`): a callback may
    reach a worker other than the one running the call's stream."""

    async def relay(self, call_sid: str, event: dict) -> None:
        """Pass `event` on to whichever worker runs `call_sid`."""

    def on_call_event(self, handler: Callable[[str, dict], Awaitable[None]]) -> None:
        """Have `handler(call_sid, event)` hear every relayed event."""


class Lines:
    """Admits a new call only below `max_calls`, within the shared cap, and while not draining.

    A call counts from the moment its webhook is answered (its stream is still to come)
    until its pipeline ends, so a burst of webhooks cannot overshoot the maximum. With
    `shared`, it also needs one of the lines shared by all workers; the stream may then
    arrive on another worker, which holds the line from `connected()` to `release()`.
    """

    def __init__(self, *, max_calls: int, active: Callable[[], int], pending_ttl_s: float,
                 shared: SharedLines | None = None):
        self.max_calls = max_calls
        self.shared = shared
        self._active = active
        self._pending: dict[str, float] = {}  # call SID -> when its answer expires
        self._pending_ttl_s = pending_ttl_s
        self.draining = False
        self.cutting_off = False  # the drain's bound passed: running calls are being cut

    @property
    def in_use(self) -> int:
        """Calls counted now: running pipelines plus answered calls whose stream is still due.

        Answers older than `pending_ttl_s` are forgotten here.
        """
        now = time.monotonic()
        self._pending = {sid: until for sid, until in self._pending.items() if until > now}
        return self._active() + len(self._pending)

    async def admit(self, call_sid: str) -> bool:
        """Take a newly answered call if a line is free; False when all are in use or draining.

        An admitted call holds its line for `pending_ttl_s`, or until `connected()` hands it
        to the pipeline count; call `release()` when no stream will come.
        """
        if self.draining or self.in_use >= self.max_calls:
            return False
        self._pending[call_sid] = time.monotonic() + self._pending_ttl_s  # before any await
        if self.shared and not await self.shared.admit(call_sid, hold_s=self._pending_ttl_s):
            del self._pending[call_sid]
            return False
        return True

    def connected(self, call_sid: str) -> None:
        """The call's stream is up here: from now on the pipeline counts it."""
        self._pending.pop(call_sid, None)
        if self.shared:
            self.shared.hold(call_sid)

    async def release(self, call_sid: str) -> None:
        """The call has ended, or its stream will never come: its line is free."""
        self._pending.pop(call_sid, None)
        if self.shared:
            await self.shared.release(call_sid)

    def drain(self) -> None:
        """Stop admitting calls (graceful shutdown); calls already admitted go on."""
        self.draining = True

    def cut_off(self) -> None:
        """Note that the drain's bound has passed and the calls still running are being cut off.

        Only sets `cutting_off`: the Twilio stream handler then stores the calls that end as
        interrupted (server-stopped).
        """
        self.cutting_off = True
