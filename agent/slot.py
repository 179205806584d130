"""The audio-LLM slot: the one place that turns caller audio into agent speech and text.

It gathers the caller's audio between pipecat's user-turn frames, hands each turn
to an `AudioLLMSession`, and plays what comes back. Marks queued behind the agent's
audio come back as `PlaybackMarkedFrame`s, so the stored agent turn holds what the
caller actually heard, not what was planned.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    EndTaskFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    KeypadEntry,
    OutputDTMFFrame,
    StartFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.utils.time import time_now_iso8601

from agent.backend import (
    AudioChunk,
    AudioLLMSession,
    CallerText,
    ContextTurn,
    EndOfTurn,
    TextDelta,
    ToolCall,
    TurnRequest,
)
from agent.frames import (
    AgentTurnFrame,
    CallerTurnFrame,
    PlaybackMarkedFrame,
    PlaybackMarkFrame,
    TransferCallFrame,
)

DTMF_PREFIX = "DTMF: "  # what pipecat's DTMFAggregator puts before the digits
PRE_ROLL_S = 0.8  # audio kept from before the VAD fired, so first syllables are not lost
MARK_GRACE_S = 3.0  # how long past the audio's own length to wait for playback marks


@dataclass(frozen=True, kw_only=True)
class SlotFallback:
    """What the caller hears when the model fails: a short apology, then goodbye or a
    transfer to `transfer_to`, so a failure never leaves dead air."""

    text: str
    audio: bytes  # int16 mono, pre-rendered while the model still worked
    sample_rate: int
    transfer_to: str | None = None


@dataclass(kw_only=True)
class _AgentTurn:
    started: float  # monotonic time the turn was requested
    speech_end: float | None  # when the caller's speech ended, for latency
    planned: list[str] = field(default_factory=list)
    marks: dict[str, int] = field(default_factory=dict)  # mark -> chars of text covered
    heard_chars: int = 0
    first_audio: float | None = None
    audio_s: float = 0.0
    generated: bool = False
    end_call: bool = False
    last_mark: str | None = None
    timings: dict[str, int] = field(default_factory=dict)

    @property
    def planned_text(self) -> str:
        return " ".join(self.planned)


class AudioLLMSlot(FrameProcessor):
    def __init__(
        self,
        *,
        session: AudioLLMSession,
        instructions: str = "",
        fallback: SlotFallback | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._session = session
        self._fallback = fallback
        self._instructions = instructions
        self._history: list[ContextTurn] = []
        self._t0 = time.monotonic()
        self._pre_roll: deque[bytes] = deque()
        self._pre_roll_bytes = 0
        self._capture: bytearray | None = None
        self._prepared: bytes | None = None  # the turn's audio as of the last VAD silence
        self._speech_start_ms = 0
        self._speech_end: float | None = None
        self._task: asyncio.Task | None = None
        self._agent: _AgentTurn | None = None
        self._mark_ids = itertools.count(1)
        self._ack_timeout: asyncio.TimerHandle | None = None

    def _ms(self, t: float) -> int:
        return int((t - self._t0) * 1000)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._t0 = time.monotonic()
            self._start_turn(None)
            return
        if isinstance(frame, (EndFrame, CancelFrame)):
            await self._stop_turn(interrupted=True)
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, InputAudioRawFrame):
            self._on_audio(frame.audio, frame.sample_rate)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._speech_end = time.monotonic() - frame.stop_secs
            if self._capture is not None:
                self._prepared = bytes(self._capture)
                self.create_task(self._prepare(self._prepared), "audio-llm-prepare")
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._prepared = None  # speech resumed: that audio is not the whole turn
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._capture = bytearray(b"".join(self._pre_roll))
            self._speech_start_ms = self._ms(time.monotonic() - PRE_ROLL_S)
            self._speech_end = None
        elif isinstance(frame, UserStoppedSpeakingFrame):
            if self._capture is not None:
                # Silence since the VAD stopped adds nothing; reuse the prepared work.
                audio = self._prepared or bytes(self._capture)
                self._capture = self._prepared = None
                self._start_turn(audio)
        elif isinstance(frame, InterruptionFrame):
            await self._stop_turn(interrupted=True)
        elif isinstance(frame, PlaybackMarkedFrame):
            await self._on_mark(frame.mark)
            return
        elif isinstance(frame, TranscriptionFrame) and frame.text.startswith(DTMF_PREFIX):
            # Keys gathered by pipecat's DTMFAggregator: a caller turn of digits ("#" ends it).
            digits = frame.text.removeprefix(DTMF_PREFIX).removesuffix("#")
            self._start_turn(None, dtmf=digits or "#")
            return
        await self.push_frame(frame, direction)

    def _on_audio(self, audio: bytes, sample_rate: int) -> None:
        self._pre_roll.append(audio)
        self._pre_roll_bytes += len(audio)
        limit = int(PRE_ROLL_S * sample_rate) * 2
        while self._pre_roll_bytes - len(self._pre_roll[0]) >= limit:
            self._pre_roll_bytes -= len(self._pre_roll.popleft())
        if self._capture is not None:
            self._capture.extend(audio)

    async def _prepare(self, audio: bytes) -> None:
        """Start on a turn that may be over; its transcript helps decide that it is."""
        try:
            text = await self._session.prepare(audio)
        except Exception:
            logger.exception(f"{self}: preparing the turn failed")
            return
        if text and self._prepared is audio:
            frame = TranscriptionFrame(text=text, user_id="", timestamp=time_now_iso8601(),
                                       finalized=True)
            await self.push_frame(frame, FrameDirection.UPSTREAM)

    def _start_turn(self, audio: bytes | None, *, dtmf: str = "") -> None:
        if self._task and not self._task.done():
            self._task.cancel()
        request = TurnRequest(
            audio=audio, dtmf=dtmf, history=tuple(self._history), instructions=self._instructions
        )
        caller_span = (self._speech_start_ms, self._ms(self._speech_end or time.monotonic()))
        self._task = self.create_task(self._run_turn(request, caller_span), "audio-llm-turn")

    async def _run_turn(self, request: TurnRequest, caller_span: tuple[int, int]) -> None:
        turn = _AgentTurn(started=time.monotonic(), speech_end=self._speech_end)
        self._agent = turn
        last = turn.started
        try:
            async for event in self._session.respond(request):
                now = time.monotonic()
                if isinstance(event, CallerText):
                    turn.timings["asr_ms"] = int((now - last) * 1000)
                    if event.text:
                        self._history.append(ContextTurn(role="caller", text=event.text))
                        start_ms, end_ms = caller_span
                        await self.push_frame(
                            CallerTurnFrame(text=event.text, start_ms=start_ms, end_ms=end_ms)
                        )
                elif isinstance(event, TextDelta):
                    if not turn.planned:
                        turn.timings["reply_ms"] = int((now - last) * 1000)
                    turn.planned.append(event.text)
                elif isinstance(event, AudioChunk):
                    if turn.first_audio is None:
                        turn.timings["tts_first_audio_ms"] = int((now - last) * 1000)
                    await self._play(turn, event, now)
                elif isinstance(event, ToolCall):
                    logger.warning(f"{self}: tool call {event.name} ignored: no tools in scope")
                elif isinstance(event, EndOfTurn):
                    turn.end_call = event.end_call
                    await self._after_speech(event)
                    break
                last = now
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(f"{self}: the audio LLM failed mid-turn")
            await self._fail_over(turn)
        turn.generated = True
        if turn.first_audio is None:
            self._agent = None
            if turn.end_call:
                await self.push_frame(EndTaskFrame(), FrameDirection.UPSTREAM)
            return
        await self.push_frame(TTSStoppedFrame())
        # Marks normally close the turn; don't wait forever on a peer that drops them.
        remaining = turn.first_audio + turn.audio_s + MARK_GRACE_S - time.monotonic()
        self._ack_timeout = asyncio.get_running_loop().call_later(
            max(remaining, 0.1), lambda: self.create_task(self._on_mark(turn.last_mark or ""))
        )

    async def _after_speech(self, end: EndOfTurn) -> None:
        """Tones and transfers queue behind the turn's audio: they happen once it is heard."""
        for key in end.dtmf:
            await self.push_frame(OutputDTMFFrame(button=KeypadEntry(key)))
        if end.transfer_to:
            await self.push_frame(TransferCallFrame(to=end.transfer_to))

    async def _fail_over(self, turn: _AgentTurn) -> None:
        """The model failed: apologise, then end the call or transfer it."""
        if self._fallback is None:
            return
        fallback = self._fallback
        turn.planned.append(fallback.text)
        chunk = AudioChunk(audio=fallback.audio, sample_rate=fallback.sample_rate)
        await self._play(turn, chunk, time.monotonic())
        if fallback.transfer_to:
            await self.push_frame(TransferCallFrame(to=fallback.transfer_to))
        else:
            turn.end_call = True

    async def _play(self, turn: _AgentTurn, chunk: AudioChunk, now: float) -> None:
        if turn.first_audio is None:
            turn.first_audio = now
            if turn.speech_end is not None:
                turn.timings["end_of_turn_ms"] = int((turn.started - turn.speech_end) * 1000)
            await self.push_frame(TTSStartedFrame())
        await self.push_frame(
            TTSAudioRawFrame(audio=chunk.audio, sample_rate=chunk.sample_rate, num_channels=1)
        )
        turn.audio_s += len(chunk.audio) / 2 / chunk.sample_rate
        name = f"a{next(self._mark_ids)}"
        turn.marks[name] = len(turn.planned_text)
        turn.last_mark = name
        await self.push_frame(PlaybackMarkFrame(message=name))

    async def _on_mark(self, name: str) -> None:
        turn = self._agent
        if turn is None or name not in turn.marks:
            return
        turn.heard_chars = max(turn.heard_chars, turn.marks[name])
        if turn.generated and name == turn.last_mark:
            await self._finish_agent_turn(turn, interrupted=False)
            if turn.end_call:
                await self.push_frame(EndTaskFrame(), FrameDirection.UPSTREAM)

    async def _stop_turn(self, *, interrupted: bool) -> None:
        """Barge-in or hang-up: stop generating at once, keep what was heard."""
        if self._task and not self._task.done():
            await self._session.cancel()
            await self.cancel_task(self._task)
        turn = self._agent
        if turn is not None and turn.first_audio is not None:
            await self._finish_agent_turn(turn, interrupted=interrupted)
            await self._session.truncate(turn.planned_text[: turn.heard_chars])
        self._agent = None

    async def _finish_agent_turn(self, turn: _AgentTurn, *, interrupted: bool) -> None:
        if self._ack_timeout:
            self._ack_timeout.cancel()
            self._ack_timeout = None
        self._agent = None
        planned = turn.planned_text
        heard = planned[: turn.heard_chars].strip()
        interrupted = interrupted and heard != planned
        if heard:
            self._history.append(ContextTurn(role="agent", text=heard))
        latency = None
        if turn.speech_end is not None and turn.first_audio is not None:
            latency = int((turn.first_audio - turn.speech_end) * 1000)
        await self.push_frame(
            AgentTurnFrame(
                text=heard,
                planned_text=planned,
                start_ms=self._ms(turn.first_audio or turn.started),
                end_ms=self._ms(time.monotonic()),
                interrupted=interrupted,
                latency_ms=latency,
                timings=turn.timings,
            )
        )

    async def cleanup(self) -> None:
        await super().cleanup()
        if self._ack_timeout:
            self._ack_timeout.cancel()
        await self._session.close()
