"""Keeps a call talking when its audio LLM cannot: an apology, then the embedded cascade.

A call whose backend had no capacity starts here with `primary=None`. A call whose
model worker dies, or whose backend fails a turn, hears a short apology and gets its
turn answered by the fallback, which then carries the rest of the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from loguru import logger

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    EndOfTurn,
    Event,
    TextDelta,
    TurnRequest,
)

BUSY_APOLOGY = "Sorry, all our assistants are busy, so you have our automated line."
FAILURE_APOLOGY = "Sorry, I had a problem there. One moment."


@dataclass(frozen=True, kw_only=True)
class SlotFallback:
    """What the caller hears when the model fails: a short apology, then goodbye or a
    transfer to `transfer_to`, so a failure never leaves dead air."""

    text: str
    audio: bytes  # int16 mono, pre-rendered while the model still worked
    sample_rate: int
    transfer_to: str | None = None


class FallbackSession(AudioLLMSession):
    """Answers with `primary` until it fails, then with a short apology and the fallback's
    session, for the rest of the call.

    Args:
        primary: The audio LLM's session; None when it had no capacity (the caller then
            hears the busy apology first).
        fallback: The backend that takes over (the embedded cascade).
        speak: Blocking TTS for the apologies: text to (int16 audio, sample rate).
        open_fallback: Opens the fallback's session; by default `fallback.open_session()`.
    """

    def __init__(
        self,
        *,
        primary: AudioLLMSession | None,
        fallback: AudioLLM,
        speak: Callable[[str], tuple[bytes, int]],
        open_fallback: Callable[[], Awaitable[AudioLLMSession]] | None = None,
    ):
        """`open_fallback` opens the fallback's session (a flow call's cascade runs the same
        flow, where the primary left it); by default `fallback.open_session()`."""
        self._primary = primary
        self._fallback_backend = fallback
        self._open_fallback = open_fallback or fallback.open_session
        self._fallback: AudioLLMSession | None = None
        self._speak = speak  # blocking text-to-speech: (int16 pcm, sample rate)
        self._apology = BUSY_APOLOGY if primary is None else None
        self._active: AudioLLMSession | None = primary
        self._cancelled = False

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Stream `primary`'s answer; when it fails (an exception or `EndOfTurn(error=...)`),
        close it and answer the same turn with the apology and the fallback."""
        self._cancelled = False
        if self._primary is not None:
            failure = None
            try:
                async for event in self._primary.respond(request):
                    if isinstance(event, EndOfTurn) and event.error:
                        failure = event.error
                        break
                    yield event
                else:
                    return
            except Exception as exc:
                logger.exception("the audio LLM failed mid-turn")
                failure = f"{type(exc).__name__}: {exc}"
            if self._cancelled:
                return
            logger.warning(f"falling back to the embedded cascade: {failure}")
            await self._drop_primary()
            self._apology = FAILURE_APOLOGY
        async for event in self._respond_fallback(request):
            yield event

    async def _respond_fallback(self, request: TurnRequest) -> AsyncIterator[Event]:
        if self._fallback is None:
            self._fallback = await self._open_fallback()
            self._active = self._fallback
        if self._apology:
            text, self._apology = self._apology, None
            yield TextDelta(text=text)
            audio, rate = await asyncio.to_thread(self._speak, text)
            if self._cancelled:
                return
            yield AudioChunk(audio=audio, sample_rate=rate)
        async for event in self._fallback.respond(request):
            yield event

    async def _drop_primary(self) -> None:
        primary, self._primary = self._primary, None
        try:
            await primary.close()
        except Exception:
            logger.exception("closing the failed audio-LLM session")

    async def prepare(self, audio: bytes) -> str | None:
        """Delegate to the active session (the primary, else the fallback once opened)."""
        return await self._active.prepare(audio) if self._active is not None else None

    async def cancel(self) -> None:
        """Cancel the active session's turn."""
        self._cancelled = True
        if self._active is not None:
            await self._active.cancel()

    async def truncate(self, heard_text: str) -> None:
        """Delegate to the active session."""
        if self._active is not None:
            await self._active.truncate(heard_text)

    async def close(self) -> None:
        """Close the primary's and the fallback's sessions, where open."""
        for session in (self._primary, self._fallback):
            if session is not None:
                await session.close()
