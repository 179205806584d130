"""The embedded CPU default: Whisper tiny.en, a reply policy, and Piper, in one backend."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
from loguru import logger

from agent.backend import (
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
from agent.context import call_context
from agent.models import ModelPaths
from agent.policy import ReplyPolicy

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
LEADING_SILENCE_LEVEL = 500  # int16 amplitude below which Piper's lead-in counts as silence


def split_sentences(text: str) -> list[str]:
    """Speak sentence by sentence so the first one reaches the caller early."""
    return [s for s in _SENTENCE_END.split(text.strip()) if s]


class EmbeddedCascade(AudioLLM):
    name = "embedded"
    capabilities = Capabilities(caller_text=True, truncation=True)

    def __init__(
        self,
        *,
        models: ModelPaths,
        policy_factory: Callable[..., ReplyPolicy],
        beam_size: int = 5,
    ):
        """`policy_factory(context=CallContext)` makes each call's reply policy."""
        self._models = models
        self._beam_size = beam_size
        self._policy_factory = policy_factory
        self._whisper = None
        self._voice = None

    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        from piper import PiperVoice

        from agent.asr import WhisperASR

        started = time.perf_counter()
        logger.info(f"Loading Whisper from {self._models.whisper_dir}")
        self._whisper = WhisperASR(model_dir=self._models.whisper_dir, beam_size=self._beam_size)
        logger.info(f"Loading Piper voice {self._models.piper_voice.name}")
        self._voice = PiperVoice.load(self._models.piper_voice)
        # One short synthesis and transcription warm the ONNX and CTranslate2 kernels,
        # so the first caller does not pay for them.
        warm = self.synthesize("Ready.")
        self.transcribe(warm[0][: 16000 * 2])
        logger.info(f"Embedded models ready in {time.perf_counter() - started:.1f}s")

    async def open_session(self, *, policy: ReplyPolicy | None = None) -> AudioLLMSession:
        """A conversation; `policy` (a flow, say) replaces the default for this call."""
        if self._whisper is None:
            raise RuntimeError("EmbeddedCascade.load() was not awaited")
        # The call runner set this call's context (recalled caller, remember) in our task.
        return CascadeSession(
            backend=self, policy=policy or self._policy_factory(context=call_context())
        )

    def transcribe(self, audio16k: bytes) -> str:
        return self._whisper.transcribe(audio16k)

    def synthesize(self, text: str) -> tuple[bytes, int]:
        chunks = list(self._voice.synthesize(text))
        audio = np.frombuffer(b"".join(c.audio_int16_bytes for c in chunks), dtype=np.int16)
        rate = chunks[0].sample_rate
        # Piper opens each sentence with ~50 ms of silence; the caller should not wait for it.
        onset = int(np.argmax(np.abs(audio) > LEADING_SILENCE_LEVEL))
        start = max(0, onset - rate // 100)
        return audio[start:].tobytes(), rate


class CascadeSession(AudioLLMSession):
    def __init__(self, *, backend: EmbeddedCascade, policy: ReplyPolicy):
        self._backend = backend
        self._policy = policy
        self._cancelled = False
        self._prepared: tuple[bytes, asyncio.Future[str]] | None = None

    async def prepare(self, audio: bytes) -> str | None:
        future = asyncio.ensure_future(asyncio.to_thread(self._backend.transcribe, audio))
        self._prepared = (audio, future)
        return await asyncio.shield(future)

    async def _transcribe(self, audio: bytes) -> str:
        if self._prepared and self._prepared[0] is audio:
            return await asyncio.shield(self._prepared[1])
        return await asyncio.to_thread(self._backend.transcribe, audio)

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        self._cancelled = False
        if request.dtmf or request.silence:
            if request.dtmf:
                yield CallerText(text=f"(keypad) {request.dtmf}")
            # Both optional on a ReplyPolicy.
            answer = getattr(self._policy, "dtmf" if request.dtmf else "silence", None)
            if answer is None:
                yield EndOfTurn()
                return
            reply = await (answer(request.dtmf) if request.dtmf else answer())
        elif request.audio is None:
            reply = await self._policy.opening()
        else:
            text = await self._transcribe(request.audio)
            if self._cancelled:
                return
            yield CallerText(text=text)
            if not text:
                yield EndOfTurn()
                return
            reply = await self._policy.reply(text)
        for sentence in split_sentences(reply.text):
            if self._cancelled:
                return
            yield TextDelta(text=sentence)
            audio, rate = await asyncio.to_thread(self._backend.synthesize, sentence)
            if self._cancelled:
                return
            yield AudioChunk(audio=audio, sample_rate=rate, interruptible=reply.interruptible,
                             interruptions=reply.interruptions)
        yield EndOfTurn(
            end_call=reply.end_call, transfer_to=reply.transfer_to, dtmf=reply.dtmf,
            listen_timeout_s=reply.listen_timeout_s,
        )

    async def cancel(self) -> None:
        self._cancelled = True
