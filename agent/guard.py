"""Sessions that turn a hung or missing model into an error the slot can recover from.

The slot answers any exception from `respond()` with its fallback (an apology, then
goodbye or a transfer). These wrappers make the two silent failures loud: a model that
stops producing events, and a backend that could not open a session at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from agent.backend import AudioLLMSession, Event, TurnRequest


class ModelTimeout(RuntimeError):
    """The model produced nothing for longer than the configured limit."""


class GuardedSession(AudioLLMSession):
    """Delegates to `inner`; raises ModelTimeout when the next event is late."""

    def __init__(self, inner: AudioLLMSession, *, event_timeout_s: float):
        self._inner = inner
        self._timeout_s = event_timeout_s

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        events = aiter(self._inner.respond(request))
        while True:
            try:
                event = await asyncio.wait_for(anext(events), self._timeout_s)
            except StopAsyncIteration:
                return
            except TimeoutError:
                await self._inner.cancel()
                raise ModelTimeout(f"no model output for {self._timeout_s:.0f} s") from None
            yield event

    async def prepare(self, audio: bytes) -> str | None:
        return await self._inner.prepare(audio)

    async def cancel(self) -> None:
        await self._inner.cancel()

    async def truncate(self, heard_text: str) -> None:
        await self._inner.truncate(heard_text)


    async def close(self) -> None:
        await self._inner.close()


class FailedSession(AudioLLMSession):
    """Stands in when no session could be opened, so the caller still hears the fallback."""

    def __init__(self, error: BaseException):
        self._error = error

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        raise RuntimeError(f"no model session: {self._error!r}")
        yield  # an async generator, like every respond()

    async def cancel(self) -> None:
        pass
