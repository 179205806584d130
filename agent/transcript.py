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

from agent.backend import AudioLLMSession, CallerText, EndOfTurn, Event, TurnRequest


class TranscribingSession(AudioLLMSession):
    def __init__(self, *, inner: AudioLLMSession, transcribe: Callable[[bytes], str]):
        self._inner = inner
        self._transcribe = transcribe  # blocking: 16 kHz int16 -> text
        self._prepared: tuple[bytes, asyncio.Future[str]] | None = None

    async def prepare(self, audio: bytes) -> str | None:
        transcript = asyncio.ensure_future(asyncio.to_thread(self._transcribe, audio))
        self._prepared = (audio, transcript)
        await self._inner.prepare(audio)
        return await asyncio.shield(transcript)

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        if request.audio is None:
            async for event in self._inner.respond(request):
                yield event
            return
        if self._prepared and self._prepared[0] is request.audio:
            task = self._prepared[1]  # transcribed when the caller paused: reuse it
        else:
            task = asyncio.ensure_future(asyncio.to_thread(self._transcribe, request.audio))
        self._prepared = None
        pending = True
        try:
            async for event in self._inner.respond(request):
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

    async def cancel(self) -> None:
        await self._inner.cancel()

    async def truncate(self, heard_text: str) -> None:
        await self._inner.truncate(heard_text)

    async def close(self) -> None:
        await self._inner.close()
