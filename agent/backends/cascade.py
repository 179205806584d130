"""The embedded CPU default: Whisper tiny.en, a reply policy, and Piper, in one backend.

The models run in the model host (agent/model_host.py), shared by every call.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from functools import partial

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    CallerText,
    Capabilities,
    EndOfTurn,
    Event,
    TextDelta,
    TurnRequest,
)
from callwright.agent.context import call_context
from callwright.agent.emotion import CallerMood, Delivery
from callwright.agent.model_host import ModelHost
from callwright.agent.policy import Reply, ReplyPolicy
from callwright.agent.transcript import EarlyTranscript

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Speak sentence by sentence so the first one reaches the caller early."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


class EmbeddedCascade(AudioLLM):
    """The embedded CPU backend: Whisper hears, a `ReplyPolicy` answers, Piper speaks.

    The models run in the model host, shared by every call; each call gets its own policy.

    Args:
        host: The model host that runs Whisper and Piper; `load()` loads it.
        policy_factory: Called as `policy_factory(context=...)` with the call's
            `CallContext` to make each call's reply policy.
    """

    name = "embedded"
    capabilities = Capabilities(caller_text=True, truncation=True)

    def __init__(self, *, host: ModelHost, policy_factory: Callable[..., ReplyPolicy]):
        """`policy_factory(context=CallContext)` makes each call's reply policy."""
        self._host = host
        self._policy_factory = policy_factory

    async def load(self) -> None:
        """Load the model host's models, off the event loop."""
        await asyncio.to_thread(self._host.load)

    async def open_session(self, *, policy: ReplyPolicy | None = None) -> AudioLLMSession:
        """A conversation; `policy` (a flow, say) replaces the default for this call."""
        if not self._host.loaded:
            raise RuntimeError("EmbeddedCascade.load() was not awaited")
        # The call runner set this call's context (recalled caller, remember, the caller's
        # mood) in our task.
        context = call_context()
        return CascadeSession(
            backend=self, policy=policy or self._policy_factory(context=context),
            mood=context.mood,
        )

    def transcribe(self, audio16k: bytes) -> str:
        """The words in one caller turn (16 kHz int16 mono), from the model host; blocking."""
        return self._host.transcribe(audio16k)

    def synthesize(self, text: str, *, length_scale: float = 1.0) -> tuple[bytes, int]:
        """Piper's int16 mono audio for `text` and its sample rate (model host); blocking.
        `length_scale` above 1 speaks more slowly."""
        return self._host.synthesize(text, length_scale=length_scale)


class CascadeSession(AudioLLMSession):
    """One call on the embedded cascade: transcribes each turn, asks the call's reply policy,
    and speaks the reply sentence by sentence, slower and with pauses for an upset caller
    (`mood`)."""

    def __init__(
        self, *, backend: EmbeddedCascade, policy: ReplyPolicy, mood: CallerMood | None = None
    ):
        self._backend = backend
        self._policy = policy
        self._mood = mood
        self._cancelled = False
        self._transcript = EarlyTranscript(backend.transcribe)

    async def prepare(self, audio: bytes) -> str | None:
        """Start transcribing `audio`; returns its transcript, which `respond()` reuses for the
        same audio."""
        return await asyncio.shield(self._transcript.start(audio))

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Answer one turn through the reply policy and speak the reply sentence by sentence.

        The policy gets the opening (no audio), the caller's transcribed words, or keys,
        silence or a machine; a turn of those that the policy has no method for, like a turn
        with no words, ends with a bare `EndOfTurn`.
        """
        self._cancelled = False
        if request.dtmf or request.silence or request.answered_by:
            if request.dtmf:
                yield CallerText(text=f"(keypad) {request.dtmf}")
            reply = await self._policy_event(request)
            if reply is None:
                yield EndOfTurn()
                return
        elif request.audio is None:
            reply = await self._policy.opening()
        else:
            text = await asyncio.shield(self._transcript.take(request.audio))
            if self._cancelled:
                return
            yield CallerText(text=text)
            if not text:
                yield EndOfTurn()
                return
            reply = await self._policy.reply(text)
        sentences = split_sentences(reply.text)
        # Read after the caller's words: the delivery answers how they sounded this turn.
        delivery = self._mood.delivery() if self._mood else Delivery()
        synthesize = partial(self._backend.synthesize, length_scale=delivery.length_scale)
        # All at once: the model processes speak the second sentence while the first plays,
        # instead of only once the first is ready (under load, a hole between the two).
        speech = [asyncio.ensure_future(asyncio.to_thread(synthesize, sentence))
                  for sentence in sentences]
        try:
            for i, (sentence, audio_future) in enumerate(zip(sentences, speech, strict=True)):
                if self._cancelled:
                    return
                yield TextDelta(text=sentence)
                audio, rate = await audio_future
                if self._cancelled:
                    return
                if delivery.sentence_pause_ms and i < len(sentences) - 1:
                    audio += bytes(2 * (rate * delivery.sentence_pause_ms // 1000))
                yield AudioChunk(audio=audio, sample_rate=rate, interruptible=reply.interruptible,
                                 interruptions=reply.interruptions)
        finally:
            for future in speech:
                future.cancel()
        yield EndOfTurn(
            end_call=reply.end_call, transfer_to=reply.transfer_to, dtmf=reply.dtmf,
            listen_timeout_s=reply.listen_timeout_s,
        )

    async def _policy_event(self, request: TurnRequest) -> Reply | None:
        """The policy's answer to keys, silence or a machine; each optional on a policy."""
        if request.dtmf:
            name, args = "dtmf", (request.dtmf,)
        elif request.silence:
            name, args = "silence", ()
        else:
            name, args = "answered_by", (request.answered_by,)
        answer = getattr(self._policy, name, None)
        return None if answer is None else await answer(*args)

    async def cancel(self) -> None:
        """Mark the turn cancelled: `respond()` yields nothing more and drops pending synthesis."""
        self._cancelled = True
