"""End-of-turn decisions: Smart Turn v3, helped by the caller's own words.

Smart Turn listens to prosody; on some voices it calls finished sentences unfinished,
and the caller then waits the full fallback silence. When the backend can transcribe
the turn (the slot does it speculatively as soon as the VAD hears silence), a
transcript that plainly ends a sentence closes the turn at once. A transcript that
ends in a digit run, a connective or a filler never does: people pause while reading
out numbers, e-mails and addresses. After a digit run (or an e-mail/address in progress)
the turn waits `digit_wait_s` more even when Smart Turn calls it complete; any speech
cancels that wait.
"""

from __future__ import annotations

import asyncio
import re

from pipecat.frames.frames import Frame, TranscriptionFrame, VADUserStoppedSpeakingFrame
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop.turn_analyzer_user_turn_stop_strategy import (
    TurnAnalyzerUserTurnStopStrategy,
)

_CONTINUES = {
    "and", "but", "or", "so", "because", "um", "uh", "er", "erm", "the", "a", "an", "to",
    "my", "is", "at", "for", "of", "with", "like", "then", "if", "dot", "hmm",
}
_SENTENCE_END = re.compile(r"[.?!]$")
_READING_OUT = {"dot", "at", "underscore", "dash", "hyphen", "slash", "street", "apartment"}
# Digits as the recogniser sometimes writes them: "two one two", "oh seven".
_DIGIT_WORDS = {"zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "double", "triple"}


def _digit_like(word: str) -> bool:
    return any(c.isdigit() for c in word) or word in _DIGIT_WORDS


def reads_out(text: str) -> bool:
    """Whether the caller seems to be in the middle of digits, an e-mail or an address."""
    words = re.findall(r"[a-z0-9'@.]+", text.lower())
    tail = words[-4:]
    if not tail:
        return False
    return (sum(_digit_like(w) for w in tail) >= 2 or tail[-1] in _READING_OUT
            or "@" in tail[-1] or any(c.isdigit() for c in tail[-1]))


SHORT_WORDS = 3  # transcripts shorter than this need more silence before they end a turn


def sounds_finished(text: str) -> bool:
    """Whether a transcript plainly ends a sentence: it ends in `.`, `?` or `!`, its last
    word is no connective, filler or number, and its last four words hold under two digits."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    if not words or not _SENTENCE_END.search(text.strip()):
        return False
    if words[-1] in _CONTINUES or words[-1].isdigit():
        return False
    # Two or more digits in the last words: a number being read out.
    return sum(_digit_like(w) for w in words[-4:]) < 2


class TranscriptAwareTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart Turn, plus: a finished-sounding transcript after VAD silence ends the turn,
    and a transcript reading out digits holds it open for `digit_wait_s`."""

    def __init__(
        self,
        *,
        digit_wait_s: float = 1.5,
        transcript_wait_s: float = 0.6,
        finished_wait_s: float = 0.0,
        short_wait_s: float = 0.5,
        **kwargs,
    ):
        super().__init__(wait_for_transcript=False, **kwargs)
        self._digit_wait_s = digit_wait_s
        self._finished_wait_s = finished_wait_s
        self._short_wait_s = short_wait_s
        self._transcript_wait_s = transcript_wait_s  # how long Smart Turn's "complete" waits
        self._silence_text: str | None = None  # the transcript of the turn so far, this silence
        self._hold: asyncio.Task | None = None

    async def _discard_pending_end_of_turn(self):
        await super()._discard_pending_end_of_turn()
        if self._hold:
            await self.task_manager.cancel_task(self._hold)
            self._hold = None

    async def _maybe_trigger_user_turn_stopped(self):
        if not self._turn_complete or self._hold:
            return
        if self._silence_text is None and self._digit_wait_s > 0:
            # The slot's transcript is on its way (the reply needs it anyway): let it say
            # whether a number is being read out.
            self._hold = self.task_manager.create_task(
                self._close_after(self._transcript_wait_s), f"{self}::transcript-wait"
            )
            return
        if self._silence_text and reads_out(self._silence_text):
            self._hold = self.task_manager.create_task(
                self._close_after(self._digit_wait_s, final=True), f"{self}::digit-wait"
            )
            return
        if self._silence_text and len(self._silence_text.split()) < SHORT_WORDS:
            # Smart Turn hears "No thanks," as a finished phrase; a breath later comes
            # "goodbye". Short turns close only if the silence goes on.
            self._hold = self.task_manager.create_task(
                self._close_after(self._short_wait_s, final=True), f"{self}::short-wait"
            )
            return
        await super()._maybe_trigger_user_turn_stopped()

    async def _close_after(self, delay: float, *, final: bool = False) -> None:
        await asyncio.sleep(delay)
        self._hold = None
        if final:
            await super()._maybe_trigger_user_turn_stopped()
            return
        if self._silence_text is None:
            self._silence_text = ""  # no transcript came: Smart Turn decides alone
        await self._maybe_trigger_user_turn_stopped()

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        """Note the transcript heard in this silence and let Smart Turn's strategy take the frame;
        a transcript heard in silence that sounds finished marks the turn complete, closing it
        after `short_wait_s` (short ones) or `finished_wait_s`."""
        if isinstance(frame, VADUserStoppedSpeakingFrame):
            self._silence_text = None
        elif isinstance(frame, TranscriptionFrame) and self._vad_stopped:
            waiting_for_text = self._silence_text is None
            self._silence_text = frame.text
            if self._hold and waiting_for_text:
                await self.task_manager.cancel_task(self._hold)
                self._hold = None
        result = await super().process_frame(frame)
        if (
            isinstance(frame, TranscriptionFrame)
            and self._vad_stopped
            and not self._vad_user_speaking
            and not self._turn_complete
            and sounds_finished(frame.text)
        ):
            self._turn_complete = True
            if not self._hold:
                # A comma's pause after one or two words reads as finished too ("Hello,",
                # "No thanks,"): those close the turn only if the silence goes on (speech
                # resuming cancels the hold). Longer sentences close at once by default.
                short = len(frame.text.split()) < SHORT_WORDS
                wait = self._short_wait_s if short else self._finished_wait_s
                self._hold = self.task_manager.create_task(
                    self._close_after(wait, final=True), f"{self}::finished-wait"
                )
        return result
