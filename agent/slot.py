"""The audio-LLM slot: the one place that turns caller audio into agent speech and text.

It gathers the caller's audio between pipecat's user-turn frames (`capture`), hands each
turn to an `AudioLLMSession`, and plays what comes back (`playback`), so that the stored
agent turn holds what the caller actually heard, not what was planned.

While the barge-in strategy judges speech over the agent, the agent is paused
(`AgentPauseFrame`): its audio is cleared from the line and what follows is held;
the slot transcribes the overlap for the strategy, and on `AgentResumeFrame` plays
on from the start of the word it stopped in. Each caller turn gets a speaker label
(`labelling`); speech from someone other than the main speaker is stored but not answered.
The main caller's turns also get how they sounded (`mood_listener`), settled before the
reply is decided, so that a flow can answer it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    EndTaskFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    StartFrame,
    TranscriptionFrame,
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
    CallerEmotion,
    CallerText,
    ContextTurn,
    EndOfTurn,
    ModelUsage,
    TextDelta,
    ToolCall,
    TurnRequest,
)
from callwright.agent.capture import CallerAudio
from callwright.agent.echo import PlayedAudio
from callwright.agent.emotion import CallerMood, Emotion
from callwright.agent.fallback import SlotFallback
from callwright.agent.frames import (
    AgentPauseFrame,
    AgentResumeFrame,
    AnsweredByFrame,
    CallerTurnFrame,
    InterruptibilityFrame,
    PlaybackMarkedFrame,
    TransferCallFrame,
)
from callwright.agent.labelling import TurnLabeller
from callwright.agent.mood_listener import MoodListener
from callwright.agent.playback import AgentPlayout, AgentTurn
from callwright.agent.speakers import SpeakerTracker

DTMF_PREFIX = "DTMF: "  # what pipecat's DTMFAggregator puts before the digits
OVERLAP_LOOKBACK_S = 0.5  # audio before a pause that belongs to the speech that caused it


class AudioLLMSlot(FrameProcessor):
    """Runs a call's turns through an audio-LLM session and plays its replies.

    Args:
        session: the call's session with the audio LLM (or the flow around it).
        instructions: the system prompt sent with every turn.
        fallback: what to say if the model fails; None says nothing.
        played: the far end's played-speech clock, which places cuts within sentences.
        speaker_tracker: labels caller turns by voice; None labels nothing.
        mood: the call's caller mood, given each main-caller turn's emotion; None: no
            emotion is read.

    Events: `on_new_speaker(slot, label)` when a voice is first heard on the call.
    """

    def __init__(
        self,
        *,
        session: AudioLLMSession,
        instructions: str = "",
        fallback: SlotFallback | None = None,
        played: PlayedAudio | None = None,
        speaker_tracker: SpeakerTracker | None = None,
        mood: CallerMood | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._session = session
        self._fallback = fallback
        self._instructions = instructions
        self._register_event_handler("on_new_speaker")
        self._labeller = speaker_tracker and TurnLabeller(
            tracker=speaker_tracker,
            on_new_speaker=lambda label: self._call_event_handler("on_new_speaker", label),
        )
        self._moods = MoodListener(mood=mood) if mood is not None else None
        self._playout = AgentPlayout(push=self.push_frame, played=played, ms=self._ms)
        self._audio = CallerAudio()
        self._vad_speaking = False
        self._history: list[ContextTurn] = []
        self._t0 = time.monotonic()
        self._unanswered: CallerTurnFrame | None = None  # its words, while that is open
        self._prepared: bytes | None = None  # the turn's audio as of the last VAD silence
        self._speech_start_ms = 0
        self._speech_end: float | None = None
        self._task: asyncio.Task | None = None
        self._agent: AgentTurn | None = None
        self._silence_timer: asyncio.TimerHandle | None = None
        # The barge-in rules the strategy holds: interruptible, and settings changed
        self._barge_in: tuple[bool, dict[str, object]] = (True, {})

    def _ms(self, t: float) -> int:
        return int((t - self._t0) * 1000)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Gather the caller's audio into turns, start and stop agent turns on pipecat's turn,
        interruption, DTMF and answering-machine frames, pause and resume on the barge-in
        strategy's, and pass the rest on."""
        await super().process_frame(frame, direction)
        audio = self._audio
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
            audio.add(frame.audio, frame.sample_rate)
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_speaking = False
            self._speech_end = time.monotonic() - frame.stop_secs
            if audio.capture is not None:
                self._prepared = bytes(audio.capture)
                self.create_task(self._prepare(self._prepared), "audio-llm-prepare")
                if self._labeller:
                    self._labeller.prepare(self._prepared, audio.seconds(self._prepared))
                if self._moods:
                    self._moods.prepare(self._prepared)
            elif audio.overlap is not None:
                self.create_task(self._prepare(bytes(audio.overlap), overlap=True), "overlap-asr")
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._cancel_silence_timer()
            self._vad_speaking = True
            self._prepared = None  # speech resumed: that audio is not the whole turn
        elif isinstance(frame, UserStartedSpeakingFrame):
            if audio.continuation is not None and self._nothing_heard():
                # The caller only paused: the reply they did not hear yet is dropped and
                # what they said before and since is one turn.
                audio.continue_turn()
                self._forget_caller_turn(self._unanswered)
                self._unanswered = None
                if self._agent is not None:
                    self._forget_caller_turn(self._agent.caller)
                    self._agent.caller = None
                logger.debug(f"{self}: caller goes on; the turn continues")
            else:
                self._speech_start_ms = self._ms(time.monotonic() - audio.open_turn())
            if self._vad_speaking:
                self._speech_end = None
        elif isinstance(frame, UserStoppedSpeakingFrame):
            if audio.capture is not None:
                # Silence since the VAD stopped adds nothing; reuse the prepared work.
                self._start_turn(audio.close_turn(self._prepared))
                self._prepared = None
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

    async def _prepare(self, audio: bytes, *, overlap: bool = False) -> None:
        """Start on a turn that may be over, or transcribe words said over the agent: the
        turn strategies (upstream) decide with the words whether the turn is over, or
        whether it was a barge-in (where no words is an answer too)."""
        try:
            text = await self._session.prepare(audio)
        except Exception:
            logger.exception(f"{self}: transcribing {len(audio)} bytes failed")
            return
        if overlap:
            wanted = text is not None and self._audio.overlap is not None
        else:
            wanted = bool(text) and self._prepared is audio
        if wanted:
            frame = TranscriptionFrame(text=text, user_id="", timestamp=time_now_iso8601(),
                                       finalized=True)
            await self.push_frame(frame, FrameDirection.UPSTREAM)

    def _start_turn(
        self, audio: bytes | None, *, dtmf: str = "", silence: bool = False, answered_by: str = ""
    ) -> None:
        self._cancel_silence_timer()
        if audio is None:
            self._audio.continuation = None
        if self._task and not self._task.done():
            self._task.cancel()
        # A model that speaks for itself is told how the caller has sounded.
        hint = self._moods.mood.delivery().hint if self._moods else ""
        request = TurnRequest(
            audio=audio, dtmf=dtmf, silence=silence, answered_by=answered_by,
            history=tuple(self._history),
            instructions="\n\n".join(p for p in (self._instructions, hint) if p),
        )
        caller_span = (self._speech_start_ms, self._ms(self._speech_end or time.monotonic()))
        labelling = None
        if audio is not None and self._labeller and self._labeller.enabled:
            labelling = self.create_task(
                self._labeller.label(audio, self._audio.seconds(audio)), "speaker-label"
            )
        self._task = self.create_task(
            self._run_turn(request, caller_span, labelling), "audio-llm-turn"
        )

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
        reported: Emotion | None = None
        try:
            async for event in self._session.respond(request):
                now = time.monotonic()
                if isinstance(event, CallerEmotion):
                    reported = Emotion(label=event.label, arousal=event.arousal,
                                       valence=event.valence, confidence=1.0, source="model")
                elif isinstance(event, CallerText):
                    turn.timings["asr_ms"] = int((now - last) * 1000)
                    label = await labelling if labelling else None
                    answered = not self._labeller or self._labeller.heard(label, event.text)
                    if event.text:
                        start_ms, end_ms = caller_span
                        turn.caller = CallerTurnFrame(
                            text=event.text, start_ms=start_ms, end_ms=end_ms, speaker_label=label
                        )
                        if answered and self._moods and request.audio is not None:
                            await self._read_mood(turn, request.audio, reported)
                    if not answered:
                        # Someone else in the room: keep it on record, don't answer it.
                        logger.info(f"{self}: not answering {label}")
                        await self._session.cancel()
                        await self._close_turn(turn)
                        self._agent = None
                        return
                elif isinstance(event, TextDelta):
                    if not turn.planned:
                        turn.timings["reply_ms"] = int((now - last) * 1000)
                    turn.planned.append(event.text)
                elif isinstance(event, AudioChunk):
                    await self.set_interruptible(event.interruptible, event.interruptions)
                    if turn.first_audio is None:
                        turn.timings["tts_first_audio_ms"] = int((now - last) * 1000)
                    await self._playout.play(turn, event, now)
                elif isinstance(event, ModelUsage):
                    turn.add_usage(event)
                elif isinstance(event, ToolCall):
                    logger.warning(f"{self}: tool call {event.name} ignored: no tools in scope")
                elif isinstance(event, EndOfTurn):
                    turn.end_call = event.end_call
                    turn.listen_timeout_s = event.listen_timeout_s
                    await self._after_speech(turn, event)
                    break
                last = now
        except Exception:  # not CancelledError (a BaseException): a stop is not a failure
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

    async def _read_mood(self, turn: AgentTurn, audio: bytes, reported: Emotion | None) -> None:
        """Settle how the caller sounded this turn before the reply is decided (the flow
        reads it), and keep it with their words."""
        started = time.monotonic()
        emotion = await self._moods.settle(audio, turn.caller.text, reported=reported)
        turn.timings["emotion_ms"] = int((time.monotonic() - started) * 1000)
        turn.caller.emotion = emotion.label
        turn.caller.arousal = round(emotion.arousal, 3)
        turn.caller.valence = round(emotion.valence, 3)

    def _forget_caller_turn(self, frame: CallerTurnFrame | None) -> None:
        """A caller turn that is not one after all (the caller went on): its emotion is
        read again with the whole turn."""
        if frame is not None and frame.emotion is not None and self._moods:
            self._moods.retract()

    def _arm_ack_timeout(self, turn: AgentTurn) -> None:
        self._playout.arm_ack_timeout(
            turn, lambda: self.create_task(self._on_mark(turn.last_mark or ""))
        )

    async def _after_speech(self, turn: AgentTurn, end: EndOfTurn) -> None:
        """Tones and transfers queue behind the turn's audio: they happen once it is heard.
        A mark after the tones makes them part of the turn: a hang-up waits for them."""
        if end.dtmf:
            await self._playout.play_tones(turn, end.dtmf)
        if end.transfer_to:
            await self.push_frame(TransferCallFrame(to=end.transfer_to))

    async def _fail_over(self, turn: AgentTurn) -> None:
        """The model failed: apologise, then end the call or transfer it."""
        if (fallback := self._fallback) is None:
            return
        turn.planned.append(fallback.text)
        chunk = AudioChunk(audio=fallback.audio, sample_rate=fallback.sample_rate)
        await self._playout.play(turn, chunk, time.monotonic())
        if fallback.transfer_to:
            await self.push_frame(TransferCallFrame(to=fallback.transfer_to))
        else:
            turn.end_call = True

    def _nothing_heard(self) -> bool:
        turn = self._agent
        return not (turn and turn.first_audio is not None and self._playout.heard_so_far(turn))

    async def _close_turn(self, turn: AgentTurn) -> None:
        """The caller has heard the reply (or there is none): their turn is over."""
        self._audio.continuation = None
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

    async def _pause(self) -> None:
        turn = self._agent
        self._audio.overlap = bytearray(self._audio.recent(OVERLAP_LOOKBACK_S))
        if turn is None or turn.first_audio is None or turn.paused:
            return
        await self._playout.pause(turn)
        logger.debug(f"{self}: paused after {turn.heard_chars} chars")

    async def _resume(self) -> None:
        self._audio.overlap = None
        turn = self._agent
        if turn is None or not turn.paused:
            return
        await self._playout.resume(turn)
        logger.debug(f"{self}: resumed at char {turn.heard_chars}")
        if turn.generated:
            self._arm_ack_timeout(turn)

    async def set_interruptible(
        self, interruptible: bool, interruptions: Mapping[str, object] | None = None
    ) -> None:
        """Whether the caller may interrupt the agent's coming words.

        Args:
            interruptible: False lets the coming words play through any speech.
            interruptions: the `InterruptionSettings` fields that differ from the call's
                while they play (a flow node's choice).
        """
        rules = (interruptible, dict(interruptions or {}))
        if rules != self._barge_in:
            self._barge_in = rules
            frame = InterruptibilityFrame(interruptible=interruptible, interruptions=rules[1])
            await self.push_frame(frame, FrameDirection.UPSTREAM)

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
            if self._audio.continuation is not None and self._nothing_heard():
                # Unanswered: joins the caller's next words if they go on (else stored then).
                await self._settle_caller()
                self._unanswered, turn.caller = turn.caller, None
            else:
                await self._settle_caller(turn)
        if turn is not None and turn.first_audio is not None:
            turn.heard_chars = self._playout.heard_so_far(turn)
            await self._finish_agent_turn(turn, interrupted=interrupted)
            await self._session.truncate(turn.planned_text[: turn.heard_chars])
        self._agent = None

    async def _finish_agent_turn(self, turn: AgentTurn, *, interrupted: bool) -> None:
        self._playout.end_turn()
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
        await self.push_frame(
            turn.to_frame(
                heard=heard, interrupted=interrupted, end_ms=self._ms(time.monotonic()),
                start_ms=self._ms(turn.first_audio or turn.started),
            )
        )

    def _on_silence(self) -> None:
        """The caller let the agent's listen timeout pass: a turn of silence."""
        self._silence_timer = None
        if self._audio.capture is None and not self._vad_speaking:
            self._start_turn(None, silence=True)

    def _cancel_silence_timer(self) -> None:
        if self._silence_timer:
            self._silence_timer.cancel()
            self._silence_timer = None

    async def cleanup(self) -> None:
        """Cancel the turn in progress and the timers, then close the session."""
        await super().cleanup()
        if self._task and not self._task.done():
            # A call dropped while starting is cancelled before its CancelFrame reaches
            # this processor: its opening would otherwise go on taking model time.
            await self.cancel_task(self._task)
        self._cancel_silence_timer()
        self._playout.end_turn()
        await self._session.close()
