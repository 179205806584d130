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
    """A fixed script spoken from audio rendered once at load: the opening, then `LINES`,
    whose last line (a goodbye) ends the call.

    Args:
        voice: The embedded cascade whose Piper voice renders the lines.
    """

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
        """The voice's Piper audio for `text` and its sample rate; blocking."""
        return self._voice.synthesize(text)

    async def open_session(self) -> AudioLLMSession:
        """A new `ScriptedSession` over the lines rendered by `load()`; never refused."""
        return ScriptedSession(self._audio)


class ScriptedSession(AudioLLMSession):
    """One call through the script: the opening, then the next line per turn."""

    def __init__(self, audio: dict[str, AudioChunk]):
        self._audio = audio
        self._lines = itertools.chain(LINES, itertools.repeat(LINES[-1]))

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """The opening for a turn without audio (the call's start, but keys or silence too), else
        the next line, whatever was said; the last line ends the call."""
        # No CallerText: the call's transcriber reports the caller's words (no caller_text).
        text = OPENING if request.audio is None else next(self._lines)
        yield TextDelta(text=text)
        yield AudioChunk(audio=self._audio[text].audio, sample_rate=self._audio[text].sample_rate)
        yield EndOfTurn(end_call=text == LINES[-1])

    async def cancel(self) -> None:
        """Nothing to stop: a turn yields its events without waiting."""
        pass
