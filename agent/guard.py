"""Sessions that turn a hung or missing model into an error the slot can recover from.

The slot answers any exception from `respond()` with its fallback (an apology, then
goodbye or a transfer). These wrappers make the two silent failures loud: a model that
stops producing events, and a backend that could not open a session at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from callwright.agent.backend import AudioLLMSession, Event, SessionWrapper, TurnRequest


class ModelTimeout(RuntimeError):
    """The model produced nothing for longer than the configured limit."""


class GuardedSession(SessionWrapper):
    """Delegates to `inner`; raises ModelTimeout when the next event is late."""

    def __init__(self, inner: AudioLLMSession, *, event_timeout_s: float):
        super().__init__(inner)
        self._timeout_s = event_timeout_s

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Pass on `inner`'s events; cancel `inner` and raise when the next one is late.

        Raises:
            ModelTimeout: No event came within `event_timeout_s`.
        """
        events = aiter(self.inner.respond(request))
        while True:
            try:
                event = await asyncio.wait_for(anext(events), self._timeout_s)
            except StopAsyncIteration:
                return
            except TimeoutError:
                await self.inner.cancel()
                raise ModelTimeout(f"no model output for {self._timeout_s:.0f} s") from None
            yield event


class FailedSession(AudioLLMSession):
    """Stands in when no session could be opened, so the caller still hears the fallback."""

    def __init__(self, error: BaseException):
        self._error = error

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Raise at once, so that the slot's fallback answers the turn.

        Raises:
            RuntimeError: Always, naming the error that kept the session from opening.
        """
        raise RuntimeError(f"no model session: {self._error!r}")
        yield  # an async generator, like every respond()

    async def cancel(self) -> None:
        """Nothing to stop."""
        pass
