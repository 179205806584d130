"""The audio-LLM slot: the one place that turns caller audio into agent speech and text.

It gathers the caller's audio between pipecat's user-turn frames, hands each turn
to an `AudioLLMSession`, and plays what comes back. Marks queued behind the agent's
audio come back as `PlaybackMarkedFrame`s, and the played-audio clock places the
cut within a sentence (words estimated in proportion to characters), so the stored
agent turn holds what the caller actually heard, not what was planned.

While the barge-in strategy judges speech over the agent, the agent is paused
(`AgentPauseFrame`): its audio is cleared from the line and what follows is held;
the slot transcribes the overlap for the strategy, and on `AgentResumeFrame` plays
on from the start of the word it stopped in. Each caller turn gets a speaker label;
speech from someone other than the main speaker is stored but not answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from loguru import logger
from pipecat.audio.dtmf.utils import load_dtmf_audio
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

from callwright.agent.backend import (
    AudioChunk,
    AudioLLMSession,
    CallerText,
    ContextTurn,
    EndOfTurn,
    ModelUsage,
    TextDelta,
    ToolCall,
    TurnRequest,
)
from callwright.agent.echo import PlayedAudio
from callwright.agent.frames import (
    AgentPauseFrame,
    AgentResumeFrame,
    AgentTurnFrame,
    AnsweredByFrame,
    CallerTurnFrame,
    InterruptibilityFrame,
    PlaybackMarkedFrame,
    PlaybackMarkFrame,
    TransferCallFrame,
)
from callwright.agent.playback import AgentTurn, PushedSegment
from callwright.agent.speakers import SpeakerTracker, VoicePrint

DTMF_PREFIX = "DTMF: "  # what pipecat's DTMFAggregator puts before the digits
PRE_ROLL_S = 0.8  # audio kept from before the VAD fired, so first syllables are not lost
MARK_GRACE_S = 3.0  # how long past the audio's own length to wait for playback marks
OVERLAP_LOOKBACK_S = 0.5  # audio before a pause that belongs to the speech that caused it
MAX_CONTINUATION_S = 30.0  # longer unanswered stretches are not joined into one turn


@dataclass(frozen=True, kw_only=True)
class SlotFallback:
    """What the caller hears when the model fails: a short apology, then goodbye or a
    transfer to `transfer_to`, so a failure never leaves dead air."""

    text: str
    audio: bytes  # int16 mono, pre-rendered while the model still worked
    sample_rate: int
    transfer_to: str | None = None


class AudioLLMSlot(FrameProcessor):
    """Events: `on_new_speaker(slot, label)` when a voice is first heard on the call."""

    def __init__(
        self,
        *,
        session: AudioLLMSession,
        instructions: str = "",
        fallback: SlotFallback | None = None,
        played: PlayedAudio | None = None,
        speaker_tracker: SpeakerTracker | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._session = session
        self._fallback = fallback
        self._instructions = instructions
        self._played = played
        self.speakers = speaker_tracker
        self.last_speaker: str | None = None
        self._overlap: bytearray | None = None  # caller audio since the agent paused
        self._vad_speaking = False
        self._in_rate = 16_000
        self._handover_pending = False  # the main speaker announced a hand-over
        self._clearly_other = False  # the last turn's voice is far from the main speaker's
        self._register_event_handler("on_new_speaker")
        self._history: list[ContextTurn] = []
        self._t0 = time.monotonic()
        self._pre_roll: deque[bytes] = deque()
        self._pre_roll_bytes = 0
        self._capture: bytearray | None = None
        # The caller's last turn and all since, until the agent answers it: if the caller
        # goes on before that, it was a pause, not the end of their turn.
        self._continuation: bytearray | None = None
        self._unanswered: CallerTurnFrame | None = None  # its words, while that is open
        self._prepared: bytes | None = None  # the turn's audio as of the last VAD silence
        self._prepared_print: tuple[bytes, asyncio.Future[VoicePrint]] | None = None
        self._speech_start_ms = 0
        self._speech_end: float | None = None
        self._task: asyncio.Task | None = None
        self._agent: AgentTurn | None = None
        self._mark_ids = itertools.count(1)
        self._ack_timeout: asyncio.TimerHandle | None = None
        self._silence_timer: asyncio.TimerHandle | None = None
        # The barge-in rules the strategy holds: interruptible, and settings changed
        self._barge_in: tuple[bool, dict[str, object]] = (True, {})

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
            await self._settle_caller()
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, InputAudioRawFrame):
            self._on_audio(frame.audio, frame.sample_rate)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_speaking = False
            self._speech_end = time.monotonic() - frame.stop_secs
            if self._capture is not None:
                self._prepared = bytes(self._capture)
                self.create_task(self._prepare(self._prepared), "audio-llm-prepare")
                self._prepare_print(self._prepared)
            elif self._overlap is not None:
                self.create_task(self._transcribe_overlap(bytes(self._overlap)), "overlap-asr")
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._cancel_silence_timer()
            self._vad_speaking = True
            self._prepared = None  # speech resumed: that audio is not the whole turn
        elif isinstance(frame, UserStartedSpeakingFrame):
            if self._continuation is not None and self._nothing_heard():
                # The caller only paused: the reply they did not hear yet is dropped and
                # what they said before and since is one turn.
                self._capture, self._continuation, self._overlap = self._continuation, None, None
                self._unanswered = None
                if self._agent is not None:
                    self._agent.caller = None
                logger.debug(f"{self}: caller goes on; the turn continues")
            elif self._overlap is not None:  # the speech that paused the agent opens the turn
                self._capture, self._overlap = self._overlap, None
                seconds = len(self._capture) / 2 / self._in_rate
                self._speech_start_ms = self._ms(time.monotonic() - seconds)
            else:
                self._capture = bytearray(b"".join(self._pre_roll))
                self._speech_start_ms = self._ms(time.monotonic() - PRE_ROLL_S)
            if self._vad_speaking:
                self._speech_end = None
        elif isinstance(frame, UserStoppedSpeakingFrame):
            if self._capture is not None:
                # Silence since the VAD stopped adds nothing; reuse the prepared work.
                audio = self._prepared or bytes(self._capture)
                self._continuation = self._capture
                self._capture = self._prepared = None
                self._start_turn(audio)
        elif isinstance(frame, InterruptionFrame):
            await self._stop_turn(interrupted=True)
        elif isinstance(frame, AgentPauseFrame):
            await self._pause()
            return
        elif isinstance(frame, AgentResumeFrame):
            await self._resume()
            return
        elif isinstance(frame, PlaybackMarkedFrame):
            await self._on_mark(frame.mark)
            return
        elif isinstance(frame, AnsweredByFrame) and frame.machine:
            # Detection finished at the beep: what is playing goes to a recorder. Clear the
            # line and let the policy (a flow's voicemail branch) say what to leave.
            await self.push_frame(frame, direction)
            await self._stop_turn(interrupted=True)
            await self.push_frame(InterruptionFrame())
            self._start_turn(None, answered_by=frame.answered_by)
            return
        elif isinstance(frame, TranscriptionFrame) and frame.text.startswith(DTMF_PREFIX):
            # Keys gathered by pipecat's DTMFAggregator: a caller turn of digits ("#" ends it).
            digits = frame.text.removeprefix(DTMF_PREFIX).removesuffix("#")
            self._start_turn(None, dtmf=digits or "#")
            return
        await self.push_frame(frame, direction)

    def _on_audio(self, audio: bytes, sample_rate: int) -> None:
        self._in_rate = sample_rate
        self._pre_roll.append(audio)
        self._pre_roll_bytes += len(audio)
        limit = int(PRE_ROLL_S * sample_rate) * 2
        while self._pre_roll_bytes - len(self._pre_roll[0]) >= limit:
            self._pre_roll_bytes -= len(self._pre_roll.popleft())
        if self._capture is not None:
            self._capture.extend(audio)
        if self._overlap is not None:
            self._overlap.extend(audio)
        if self._continuation is not None:
            self._continuation.extend(audio)
            if len(self._continuation) > MAX_CONTINUATION_S * sample_rate * 2:
                self._continuation = None

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

    def _start_turn(
        self, audio: bytes | None, *, dtmf: str = "", silence: bool = False, answered_by: str = ""
    ) -> None:
        self._cancel_silence_timer()
        if audio is None:
            self._continuation = None
        if self._task and not self._task.done():
            self._task.cancel()
        request = TurnRequest(
            audio=audio, dtmf=dtmf, silence=silence, answered_by=answered_by,
            history=tuple(self._history), instructions=self._instructions,
        )
        caller_span = (self._speech_start_ms, self._ms(self._speech_end or time.monotonic()))
        labelling = None
        if audio is not None and self.speakers is not None and self.speakers.settings.enabled:
            labelling = self.create_task(self._label(audio), "speaker-label")
        self._task = self.create_task(
            self._run_turn(request, caller_span, labelling), "audio-llm-turn"
        )

    def _prepare_print(self, audio: bytes) -> None:
        """Start the turn's voice print with its transcript, at the VAD's silence: the reply
        waits for the label, and under load a print started at the turn's end came late."""
        tracker = self.speakers
        if tracker is None or not tracker.settings.enabled:
            return
        if tracker.too_short(len(audio) / 2 / self._in_rate):
            return  # `_label` keeps the last speaker
        if self._prepared_print is not None:
            self._prepared_print[1].cancel()
        future = asyncio.ensure_future(asyncio.to_thread(tracker.voice_print, audio))
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # read in _label
        self._prepared_print = (audio, future)

    async def _label(self, audio: bytes) -> str | None:
        """Who said this turn; enrols new voices (speech long enough to tell voices apart)."""
        tracker = self.speakers
        seconds = len(audio) / 2 / self._in_rate
        if tracker.too_short(seconds):
            return self.last_speaker or tracker.main
        known = tracker.labels()
        early = self._prepared_print
        try:
            if early is not None and early[0] is audio:
                voice_print = await early[1]
            else:
                voice_print = await asyncio.to_thread(tracker.voice_print, audio)
        except Exception as exc:  # a label is not worth the turn: keep the last one
            logger.error(f"{self}: no voice print for this turn: {exc!r}")
            return self.last_speaker or tracker.main
        label = tracker.assign(voice_print, seconds)
        self._clearly_other = label != tracker.main and tracker.differs(
            voice_print, tracker.main, tracker.settings.unanswered_below
        )
        if label not in known:
            if self._handover_pending:
                self._handover_pending = False
                tracker.set_main(label)
            await self._call_event_handler("on_new_speaker", label)
        return label

    async def _run_turn(
        self,
        request: TurnRequest,
        caller_span: tuple[int, int],
        labelling: asyncio.Task | None = None,
    ) -> None:
        await self._settle_caller()  # an earlier turn left unanswered and not continued
        turn = AgentTurn(started=time.monotonic(), speech_end=self._speech_end)
        self._agent = turn
        last = turn.started
        try:
            async for event in self._session.respond(request):
                now = time.monotonic()
                if isinstance(event, CallerText):
                    turn.timings["asr_ms"] = int((now - last) * 1000)
                    label = await labelling if labelling else None
                    self.last_speaker = label
                    if event.text:
                        start_ms, end_ms = caller_span
                        turn.caller = CallerTurnFrame(
                            text=event.text, start_ms=start_ms, end_ms=end_ms, speaker_label=label
                        )
                    if label is not None and label != self.speakers.main and self._clearly_other:
                        # Someone else in the room: keep it on record, don't answer it.
                        logger.info(f"{self}: not answering {label} (main: {self.speakers.main})")
                        await self._session.cancel()
                        await self._close_turn(turn)
                        self._agent = None
                        return
                    if event.text and label is not None and self._announces_handover(event.text):
                        self._handover_pending = True
                elif isinstance(event, TextDelta):
                    if not turn.planned:
                        turn.timings["reply_ms"] = int((now - last) * 1000)
                    turn.planned.append(event.text)
                elif isinstance(event, AudioChunk):
                    await self.set_interruptible(event.interruptible, event.interruptions)
                    if turn.first_audio is None:
                        turn.timings["tts_first_audio_ms"] = int((now - last) * 1000)
                    await self._play(turn, event, now)
                elif isinstance(event, ModelUsage):
                    _add_usage(turn, event)
                elif isinstance(event, ToolCall):
                    logger.warning(f"{self}: tool call {event.name} ignored: no tools in scope")
                elif isinstance(event, EndOfTurn):
                    turn.end_call = event.end_call
                    turn.listen_timeout_s = event.listen_timeout_s
                    await self._after_speech(turn, event)
                    break
                last = now
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(f"{self}: the audio LLM failed mid-turn")
            await self._fail_over(turn)
        turn.generated = True
        if turn.first_audio is None:
            await self._close_turn(turn)
            self._agent = None
            if turn.end_call:
                await self.push_frame(EndTaskFrame(), FrameDirection.UPSTREAM)
            return
        await self.push_frame(TTSStoppedFrame())
        if not turn.paused:
            self._arm_ack_timeout(turn)

    def _arm_ack_timeout(self, turn: AgentTurn) -> None:
        """Marks normally close the turn; don't wait forever on a peer that drops them."""
        if self._ack_timeout:
            self._ack_timeout.cancel()
        played_s = self._played.speech_s - turn.base_s if self._played else 0.0
        remaining = turn.pushed_s + turn.tones_s - played_s + MARK_GRACE_S
        if not self._played:  # no played-audio clock: count from the first audio
            audio_s = turn.audio_s + turn.tones_s
            remaining = turn.first_audio + audio_s + MARK_GRACE_S - time.monotonic()
        self._ack_timeout = asyncio.get_running_loop().call_later(
            max(remaining, 0.1), lambda: self.create_task(self._on_mark(turn.last_mark or ""))
        )

    async def _after_speech(self, turn: AgentTurn, end: EndOfTurn) -> None:
        """Tones and transfers queue behind the turn's audio: they happen once it is heard.
        A mark after the tones makes them part of the turn: a hang-up waits for them."""
        for key in end.dtmf:
            button = KeypadEntry(key)
            await self.push_frame(OutputDTMFFrame(button=button))
            turn.tones_s += len(await load_dtmf_audio(button, sample_rate=8000)) / 2 / 8000
        if end.dtmf and turn.first_audio is not None:
            await self._push_mark(turn, len(turn.planned_text))
        if end.transfer_to:
            await self.push_frame(TransferCallFrame(to=end.transfer_to))

    async def _fail_over(self, turn: AgentTurn) -> None:
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

    def _nothing_heard(self) -> bool:
        turn = self._agent
        return turn is None or turn.first_audio is None or self._heard_so_far(turn) == 0

    async def _close_turn(self, turn: AgentTurn) -> None:
        """The caller has heard the reply (or there is none): their turn is over."""
        self._continuation = None
        await self._settle_caller(turn)

    async def _settle_caller(self, turn: AgentTurn | None = None) -> None:
        """Store the caller's words (and put them in the context): they are answered."""
        frames = [self._unanswered, turn.caller if turn else None]
        self._unanswered = None
        if turn:
            turn.caller = None
        for frame in filter(None, frames):
            self._history.append(ContextTurn(role="caller", text=frame.text))
            await self.push_frame(frame)

    async def _play(self, turn: AgentTurn, chunk: AudioChunk, now: float) -> None:
        if turn.first_audio is None:
            turn.first_audio = now
            turn.base_s = self._played.speech_s if self._played else 0.0
            if turn.speech_end is not None:
                turn.timings["end_of_turn_ms"] = int((turn.started - turn.speech_end) * 1000)
            await self.push_frame(TTSStartedFrame())
        index = turn.add_piece(chunk.audio, chunk.sample_rate)
        if not turn.paused:  # else it waits for the resume, which plays all not yet heard
            await self._push_piece(turn, index, 0)

    async def _push_piece(self, turn: AgentTurn, index: int, offset: int) -> None:
        piece = turn.pieces[index]
        audio = piece.audio[offset:]
        turn.segments.append(PushedSegment(piece=index, offset=offset, length=len(audio)))
        await self.push_frame(
            TTSAudioRawFrame(audio=audio, sample_rate=piece.sample_rate, num_channels=1)
        )
        await self._push_mark(turn, piece.text_end)

    async def _push_mark(self, turn: AgentTurn, text_end: int) -> None:
        """A mark that reports `text_end` characters heard once what went before it played."""
        name = f"a{next(self._mark_ids)}"
        turn.marks[name] = text_end
        turn.last_mark = name
        await self.push_frame(PlaybackMarkFrame(message=name))

    def _heard_so_far(self, turn: AgentTurn) -> int:
        return turn.heard_so_far(self._played.speech_s if self._played else None)

    async def _pause(self) -> None:
        turn = self._agent
        self._overlap = bytearray(self._recent_input(OVERLAP_LOOKBACK_S))
        if turn is None or turn.first_audio is None or turn.paused:
            return
        turn.heard_chars = self._heard_so_far(turn)
        turn.paused = True
        if self._ack_timeout:
            self._ack_timeout.cancel()
            self._ack_timeout = None
        # Clears the line (Twilio `clear`, WebRTC output flush); held audio waits here.
        await self.push_frame(InterruptionFrame())
        logger.debug(f"{self}: paused after {turn.heard_chars} chars")

    async def _resume(self) -> None:
        self._overlap = None
        turn = self._agent
        if turn is None or not turn.paused:
            return
        turn.paused = False
        turn.segments = []
        turn.base_s = self._played.speech_s if self._played else 0.0
        # Everything not yet heard was cleared from the line: play it again, from the
        # start of the word the caller was hearing.
        cut = turn.heard_chars
        for index, piece in enumerate(turn.pieces):
            if piece.text_end > cut:
                offset = piece.offset_of(cut) if piece.text_start < cut else 0
                await self._push_piece(turn, index, offset)
        logger.debug(f"{self}: resumed at char {cut}")
        if turn.generated:
            self._arm_ack_timeout(turn)

    def _recent_input(self, seconds: float) -> bytes:
        audio = b"".join(self._pre_roll)
        return audio[-int(seconds * self._in_rate) * 2 :]

    async def _transcribe_overlap(self, audio: bytes) -> None:
        """Words heard over the agent, for the barge-in strategy (sent upstream to it)."""
        try:
            text = await self._session.prepare(audio)
        except Exception:
            logger.exception(f"{self}: transcribing the overlap failed")
            return
        if text is not None and self._overlap is not None:
            frame = TranscriptionFrame(text=text, user_id="", timestamp=time_now_iso8601(),
                                       finalized=True)
            await self.push_frame(frame, FrameDirection.UPSTREAM)

    async def set_interruptible(
        self, interruptible: bool, interruptions: Mapping[str, object] | None = None
    ) -> None:
        """Whether the caller may interrupt the agent's coming words, and which
        `InterruptionSettings` fields differ from the call's while they play (a flow
        node's choice)."""
        rules = (interruptible, dict(interruptions or {}))
        if rules != self._barge_in:
            self._barge_in = rules
            frame = InterruptibilityFrame(interruptible=interruptible, interruptions=rules[1])
            await self.push_frame(frame, FrameDirection.UPSTREAM)

    def _announces_handover(self, text: str) -> bool:
        lowered = " ".join(text.lower().replace("’", "'").split())
        return any(p in lowered for p in self.speakers.settings.handover_phrases)

    def set_main_speaker(self, label: str) -> None:
        """Answer `label` from now on, e.g. after the caller hands the phone over."""
        if self.speakers is None:
            raise RuntimeError("speaker labelling is off on this call")
        self.speakers.set_main(label)

    async def _on_mark(self, name: str) -> None:
        turn = self._agent
        if turn is None or name not in turn.marks:
            return
        turn.heard_chars = max(turn.heard_chars, turn.marks[name])
        await self._close_turn(turn)
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
        if turn is not None and turn.caller is not None:
            if self._continuation is not None and self._nothing_heard():
                # Unanswered: joins the caller's next words if they go on (else stored then).
                await self._settle_caller()
                self._unanswered, turn.caller = turn.caller, None
            else:
                await self._settle_caller(turn)
        if turn is not None and turn.first_audio is not None:
            turn.heard_chars = self._heard_so_far(turn)
            await self._finish_agent_turn(turn, interrupted=interrupted)
            await self._session.truncate(turn.planned_text[: turn.heard_chars])
        self._agent = None

    async def _finish_agent_turn(self, turn: AgentTurn, *, interrupted: bool) -> None:
        if self._ack_timeout:
            self._ack_timeout.cancel()
            self._ack_timeout = None
        self._agent = None
        await self.set_interruptible(True)  # the node's words have played: the call's rules
        if turn.listen_timeout_s and not interrupted and not turn.end_call:
            self._silence_timer = asyncio.get_running_loop().call_later(
                turn.listen_timeout_s, self._on_silence
            )
        planned = turn.planned_text
        heard = planned[: turn.heard_chars].strip()
        if interrupted and not heard:
            return  # nothing reached the caller; their turn may yet go on
        await self._close_turn(turn)
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
                llm_first_token_ms=turn.usage.get("first_token_ms"),
                llm_tokens_in=turn.usage.get("tokens_in"),
                llm_tokens_out=turn.usage.get("tokens_out"),
            )
        )

    def _on_silence(self) -> None:
        """The caller let the agent's listen timeout pass: a turn of silence."""
        self._silence_timer = None
        if self._capture is None and not self._vad_speaking:
            self._start_turn(None, silence=True)

    def _cancel_silence_timer(self) -> None:
        if self._silence_timer:
            self._silence_timer.cancel()
            self._silence_timer = None

    async def cleanup(self) -> None:
        await super().cleanup()
        if self._task and not self._task.done():
            # A call dropped while starting is cancelled before its CancelFrame reaches
            # this processor: its opening would otherwise go on taking model time.
            await self.cancel_task(self._task)
        self._cancel_silence_timer()
        if self._ack_timeout:
            self._ack_timeout.cancel()
        await self._session.close()


def _add_usage(turn: AgentTurn, usage: ModelUsage) -> None:
    """The turn's first time to first token; tokens summed over its requests (tool calls
    take several)."""
    if usage.first_token_ms is not None and "first_token_ms" not in turn.usage:
        turn.usage["first_token_ms"] = usage.first_token_ms
        turn.timings["llm_first_token_ms"] = usage.first_token_ms
    for key in ("tokens_in", "tokens_out"):
        value = getattr(usage, key)
        if value is not None:
            turn.usage[key] = turn.usage.get(key, 0) + value
