"""Scripted replies: the agent's voice without ASR or per-turn synthesis.

For load tests and smoke tests of telephony: every caller turn gets the next line of a
fixed script, spoken from audio Piper rendered once at load. Model work per call is
then only VAD and turn detection, which shows what the transport side can hold.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    Capabilities,
    EndOfTurn,
    Event,
    TextDelta,
    TurnRequest,
)
from callwright.agent.backends.cascade import EmbeddedCascade

OPENING = "Hello, you've reached the callwright front desk. How can I help you today?"
LINES = ("Sure, we are open every day from nine to nine.", "Thank you for calling. Goodbye!")


class ScriptedReplies(AudioLLM):
    name = "scripted"
    capabilities = Capabilities()

    def __init__(self, *, voice: EmbeddedCascade):
        self._voice = voice
        self._audio: dict[str, AudioChunk] = {}

    async def load(self) -> None:
        """Render the lines once (the app has loaded the cascade's voice already)."""
        for text in (OPENING, *LINES):
            audio, rate = await asyncio.to_thread(self._voice.synthesize, text)
            self._audio[text] = AudioChunk(audio=audio, sample_rate=rate)

    def synthesize(self, text: str) -> tuple[bytes, int]:
        return self._voice.synthesize(text)

    async def open_session(self) -> AudioLLMSession:
        return ScriptedSession(self._audio)


class ScriptedSession(AudioLLMSession):
    def __init__(self, audio: dict[str, AudioChunk]):
        self._audio = audio
        self._lines = itertools.chain(LINES, itertools.repeat(LINES[-1]))

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        # No CallerText: the call's transcriber reports the caller's words (no caller_text).
        text = OPENING if request.audio is None else next(self._lines)
        yield TextDelta(text=text)
        yield AudioChunk(audio=self._audio[text].audio, sample_rate=self._audio[text].sample_rate)
        yield EndOfTurn(end_call=text == LINES[-1])

    async def cancel(self) -> None:
        pass
