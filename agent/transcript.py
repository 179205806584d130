"""Caller transcripts for backends that hear audio but do not report what was said.

End-to-end speech models answer the caller's audio directly; the call record still
needs the caller's words. This wrapper transcribes each turn alongside the model,
off the event loop, and reports it as `CallerText` no later than the end of the turn.
It transcribes early in `prepare()` too, so the words help end the caller's turn (as
the cascade's do) whatever model answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from loguru import logger

from callwright.agent.backend import (
    AudioLLMSession,
    CallerText,
    EndOfTurn,
    Event,
    SessionWrapper,
    TurnRequest,
)


class EarlyTranscript:
    """A turn's transcript, started when the caller pauses and taken by the reply.

    Args:
        transcribe: Blocking 16 kHz int16 -> text; run in a thread.
    """

    def __init__(self, transcribe: Callable[[bytes], str]):
        self._transcribe = transcribe
        self._started: tuple[bytes, asyncio.Future[str]] | None = None

    def start(self, audio: bytes) -> asyncio.Future[str]:
        """Transcribe `audio` now (the caller paused: the turn may be over)."""
        future = asyncio.ensure_future(asyncio.to_thread(self._transcribe, audio))
        self._started = (audio, future)
        return future

    def take(self, audio: bytes) -> asyncio.Future[str]:
        """The transcript of `audio`: the one started for it, else a new one."""
        started, self._started = self._started, None
        if started is not None and started[0] is audio:
            return started[1]
        return asyncio.ensure_future(asyncio.to_thread(self._transcribe, audio))


class TranscribingSession(SessionWrapper):
    """Adds the caller's words (CallerText) to a backend that hears but does not say them;
    the transcript starts when the caller pauses, so it is usually ready with the reply."""

    def __init__(self, *, inner: AudioLLMSession, transcribe: Callable[[bytes], str]):
        super().__init__(inner)
        self._transcript = EarlyTranscript(transcribe)

    async def prepare(self, audio: bytes) -> str | None:
        """Start transcribing `audio` and let `inner` prepare it; returns the transcript."""
        transcript = self._transcript.start(audio)
        await self.inner.prepare(audio)
        return await asyncio.shield(transcript)

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Pass on `inner`'s events, adding the caller's `CallerText` once the transcript is
        ready, and no later than `EndOfTurn`; turns without audio pass through."""
        if request.audio is None:
            async for event in self.inner.respond(request):
                yield event
            return
        task = self._transcript.take(request.audio)
        pending = True
        try:
            async for event in self.inner.respond(request):
                if pending and (task.done() or isinstance(event, EndOfTurn)):
                    pending = False
                    if text := await self._caller_text(task):
                        yield CallerText(text=text)
                yield event
        finally:
            task.cancel()

    @staticmethod
    async def _caller_text(task: asyncio.Task) -> str:
        try:
            return await task
        except Exception:
            logger.exception("transcribing the caller failed")
            return ""
