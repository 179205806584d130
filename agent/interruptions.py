"""Barge-in: deciding whether sound heard while the agent talks starts a caller turn.

A pipecat user-turn start strategy. While the agent is silent it starts a turn on
voice activity, like `VADUserTurnStartStrategy`. While the agent speaks, voice
activity opens an *overlap* that is judged, not obeyed:

1. Echo (the agent's own audio explaining the input) and, once the caller is
   enrolled, a voice that is clearly someone else's are ignored outright.
2. Anything else pauses the agent at once (`AgentPauseFrame`: Twilio `clear`), so a
   real barge-in is heard within a fraction of a second.
3. The slot transcribes the overlap when it ends (a `TranscriptionFrame` sent
   upstream); explicit words ("stop", "wait", …) or enough words that are not a
   backchannel start the caller's turn (pipecat interrupts the agent). Long speech
   by the main caller does too, without waiting for words.
4. Backchannels, coughs, noise (no words) and side talk resume the agent where it
   stopped (`AgentResumeFrame`).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, replace

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    InputAudioRawFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_start.base_user_turn_start_strategy import BaseUserTurnStartStrategy

from callwright.agent.echo import PlayedAudio, echo_share
from callwright.agent.frames import AgentPauseFrame, AgentResumeFrame, InterruptibilityFrame
from callwright.agent.speakers import SpeakerTracker


@dataclass(frozen=True, kw_only=True)
class InterruptionSettings:
    """Word lists are for one language; give each language (or flow node) its own."""

    backchannels: tuple[str, ...] = (
        "uh huh", "uh-huh", "mm hmm", "mm-hmm", "mhm", "mm", "hmm", "uh", "um", "ah", "oh",
        "yeah", "yes", "yep", "right", "okay", "ok", "sure", "i see", "got it", "alright",
        "cool", "great", "fine", "good",
    )
    stop_phrases: tuple[str, ...] = (
        "stop", "wait", "no", "hold on", "hang on", "sorry", "excuse me", "pardon", "what",
        "actually",
    )
    min_words: int = 2  # words beyond backchannels that make an interruption
    # Words other than stop phrases count only over this much loud speech: short sounds
    # ("mm-hmm") are where the recogniser invents words.
    min_speech_s: float = 0.7
    long_speech_s: float = 1.2  # main-caller speech this long interrupts without words
    echo_share: float = 0.5  # input energy share explained by played audio that means echo
    other_speaker_below: float = 0.78  # similarity to the caller under which a voice is ignored
    voice_print_s: float = 1.5  # less loud speech than this is judged by pitch alone …
    other_pitch_st: float = 4.0  # … as another voice this many semitones from the caller's
    decision_timeout_s: float = 1.5  # no words this long after the overlap: resume
    onset_s: float = 0.06  # loud input this long pauses the agent
    onset_ratio: float = 4.0  # "loud": this many times the noise floor …
    onset_level: float = 400.0  # … and at least this int16 RMS
    unconfirmed_onset_s: float = 0.8  # resume when the VAD does not call it speech by then
    lookback_s: float = 0.5  # audio before the VAD fired that belongs to the overlap


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))


def is_interruption(
    text: str, settings: InterruptionSettings, *, speech_s: float = float("inf")
) -> bool:
    """Whether words heard over the agent (in `speech_s` of loud speech) ask for the floor."""
    words = _words(text)
    joined = f" {' '.join(words)} "
    if any(f" {' '.join(_words(p))} " in joined for p in settings.stop_phrases):
        return True
    if speech_s < settings.min_speech_s:
        return False
    for phrase in sorted(settings.backchannels, key=len, reverse=True):
        joined = joined.replace(f" {' '.join(_words(phrase))} ", " ")
    return len(joined.split()) >= settings.min_words


class BargeInStartStrategy(BaseUserTurnStartStrategy):
    """A pipecat user-turn start strategy that judges speech over the agent before it
    becomes a turn.

    While the agent is silent, voice activity starts a turn. Over the agent, echo and
    (once the caller is enrolled) other voices are ignored; other speech pauses the agent
    and its words, or long speech, decide between a turn and resuming.

    Args:
        settings: The call's interruption rules; an `InterruptibilityFrame` changes some
            while the agent's coming words play.
        played: The far end's playout timeline, for the echo check.
        speakers: The call's voices, to ignore other speakers; None takes every voice
            for the caller's.
    """

    def __init__(
        self,
        *,
        settings: InterruptionSettings = InterruptionSettings(),
        played: PlayedAudio,
        speakers: SpeakerTracker | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._call_settings = settings  # the call's; a flow node may change some for a while
        self._settings = settings
        self._played = played
        self._speakers = speakers
        self._bot_speaking = False
        self._interruptible = True
        self._vad_speaking = False
        self._vad_since = 0.0
        self._vad_start_s = 0.0
        self._recent: deque[bytes] = deque()
        self._recent_s = 0.0
        self._rate = 16_000
        self._overlap: bytearray | None = None  # audio of the overlap being judged
        self._floor = 100.0  # the line's noise level (int16 RMS)
        self._loud_s = 0.0  # how long the input has been loud
        self._overlap_loud_s = 0.0  # loud input within the overlap
        self._echo_at, self._echo_last = 0.0, 0.0
        self._paused_at: float | None = None
        self._frames = 0
        self._deciding = False
        self._timeout: asyncio.Task | None = None

    @property
    def _agent_holds_floor(self) -> bool:
        return self._bot_speaking or self._paused_at is not None

    async def handle_user_turn_started(self):
        """End the overlap being judged: the turn has started and the slot stops the agent."""
        await super().handle_user_turn_started()
        await self._end_overlap()
        self._paused_at = None  # the slot stops the agent's turn on the interruption

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        """Track the agent's speech and barge-in rules, the input audio and the VAD, and judge
        overlaps; returns STOP (no later strategy sees it) for a VAD speech start and for an
        overlap's transcript."""
        if isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
        elif isinstance(frame, InterruptibilityFrame):
            self._interruptible = frame.interruptible
            self._settings = replace(self._call_settings, **frame.interruptions)
        elif isinstance(frame, InputAudioRawFrame):
            await self._on_audio(frame)
        elif isinstance(frame, VADUserStartedSpeakingFrame):
            self._vad_speaking = True
            self._vad_since, self._vad_start_s = time.monotonic(), frame.start_secs
            if not self._agent_holds_floor:
                await self.trigger_user_turn_started()
            else:
                await self._overlap_started()
            return ProcessFrameResult.STOP
        elif isinstance(frame, VADUserStoppedSpeakingFrame):
            self._vad_speaking = False
            if self._overlap is not None:
                self._arm_timeout(self._settings.decision_timeout_s)
        elif isinstance(frame, TranscriptionFrame) and self._overlap is not None:
            await self._decide_on_words(frame.text)
            return ProcessFrameResult.STOP
        return ProcessFrameResult.CONTINUE

    async def _on_audio(self, frame: InputAudioRawFrame) -> None:
        self._rate = frame.sample_rate
        self._recent.append(frame.audio)
        self._recent_s += len(frame.audio) / 2 / frame.sample_rate
        while self._recent_s - len(self._recent[0]) / 2 / self._rate > self._settings.lookback_s:
            self._recent_s -= len(self._recent.popleft()) / 2 / self._rate
        if self._overlap is not None:
            self._overlap.extend(frame.audio)
        seconds = len(frame.audio) / 2 / frame.sample_rate
        loud = self._loud(frame.audio)
        self._loud_s = self._loud_s + seconds if loud else 0.0
        if self._overlap is not None and loud:
            self._overlap_loud_s += seconds
        self._frames += 1
        if self._deciding:
            return
        if self._overlap is None:
            # Silero needs ~0.3-0.5 s to call speech; a sustained rise in level pauses the
            # agent sooner. Whatever it was, words (or none) decide after.
            if self._agent_holds_floor and self._loud_s >= self._settings.onset_s:
                await self._overlap_started()
            return
        # How long the VAD has heard speech (it confirms `start_secs` after the onset).
        seconds = time.monotonic() - self._vad_since + self._vad_start_s
        long = self._vad_speaking and seconds >= self._settings.long_speech_s
        if long and self._frames % 5 == 0 and self._can_tell_voices():
            self._deciding = True
            try:
                if await self._is_other_speaker(bytes(self._overlap)):
                    await self._resume("side talk")
                else:
                    await self._interrupt(f"{seconds:.1f}s of speech")
            finally:
                self._deciding = False

    def _loud(self, audio: bytes) -> bool:
        """Well above the line's noise floor (tracked slowly upwards, quickly downwards)."""
        samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32)
        level = float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0
        self._floor = min(level, self._floor * 1.002 + 0.5) if level > 0 else self._floor
        return level > max(self._settings.onset_ratio * self._floor, self._settings.onset_level)

    def _echo(self) -> float:
        """The echo share of the last half second, re-measured at most every 0.1 s."""
        now = time.monotonic()
        if now - self._echo_at >= 0.1:
            audio = np.frombuffer(b"".join(self._recent), dtype=np.int16)
            self._echo_at, self._echo_last = now, echo_share(audio, self._rate,
                                                             self._played.recent())
        return self._echo_last

    async def _overlap_started(self) -> None:
        if self._overlap is not None:  # speech resumed within the overlap: wait for its words
            await self._end_timeout()
            return
        if not self._interruptible:
            return
        share = self._echo() if time.monotonic() - self._played.last_played < 1.5 else 0.0
        if share >= self._settings.echo_share:
            if self._frames % 25 == 0:
                logger.debug(f"{self}: ignoring echo of the agent (share {share:.2f})")
            return
        logger.debug(f"{self}: overlap starts (echo share {share:.2f}, vad {self._vad_speaking})")
        # A voice print needs over a second of speech, so other voices are told apart
        # only later (`_is_other_speaker`): until then they pause the agent like anyone.
        self._overlap = bytearray(b"".join(self._recent))
        self._overlap_loud_s = self._loud_s
        if not self._vad_speaking:  # a level onset the VAD may never confirm
            self._arm_timeout(self._settings.unconfirmed_onset_s)
        if self._paused_at is None:
            self._paused_at = time.monotonic()
            await self.push_frame(AgentPauseFrame())

    def _can_tell_voices(self) -> bool:
        """Long speech waits for a full voice print before it may stop the agent."""
        tracker = self._speakers
        enough = self._overlap_loud_s >= self._settings.voice_print_s
        return tracker is None or not tracker.enrolled or enough

    async def _is_other_speaker(self, audio: bytes) -> bool:
        """Whether an enrolled caller is clearly not the one speaking."""
        tracker = self._speakers
        if tracker is None or not tracker.enrolled or not audio:
            return False
        try:
            voice_print = await asyncio.to_thread(tracker.voice_print, audio)
        except Exception as exc:  # cannot tell: treat it as the caller, as before enrolment
            logger.error(f"{self}: no voice print for the overlap: {exc!r}")
            return False
        if self._overlap_loud_s >= self._settings.voice_print_s:
            similarity = tracker.similarity(voice_print, tracker.main)
            logger.debug(f"{self}: overlap voice similarity to {tracker.main}: {similarity:.2f}")
            return tracker.differs(voice_print, tracker.main, self._settings.other_speaker_below)
        apart = tracker.pitch_apart(voice_print, tracker.main)
        logger.debug(f"{self}: overlap pitch {apart:.1f} semitones from {tracker.main}")
        return apart >= self._settings.other_pitch_st

    async def _decide_on_words(self, text: str) -> None:
        audio = bytes(self._overlap or b"")
        if await self._is_other_speaker(audio):
            await self._resume(f"side talk {text!r}")
        elif is_interruption(text, self._settings, speech_s=self._overlap_loud_s):
            await self._interrupt(repr(text))
        else:
            await self._resume(f"not an interruption: {text!r}")

    async def _interrupt(self, why: str) -> None:
        logger.info(f"{self}: caller interrupts the agent ({why})")
        await self.trigger_user_turn_started()

    async def _resume(self, why: str) -> None:
        logger.info(f"{self}: agent resumes ({why})")
        await self._end_overlap()
        if self._paused_at is not None:
            self._paused_at = None
            await self.push_frame(AgentResumeFrame())

    async def _resume_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timeout = None
        await self._resume("no words followed")

    async def _end_overlap(self) -> None:
        self._overlap = None
        await self._end_timeout()

    def _arm_timeout(self, delay: float) -> None:
        if self._timeout is None:
            self._timeout = self.task_manager.create_task(
                self._resume_after(delay), f"{self}::timeout"
            )

    async def _end_timeout(self) -> None:
        if self._timeout and self._timeout is not asyncio.current_task():
            await self.task_manager.cancel_task(self._timeout)
        self._timeout = None

    async def cleanup(self):
        """Cancel the pending resume timeout."""
        await super().cleanup()
        await self._end_overlap()
