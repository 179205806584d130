"""End-of-turn decisions: Smart Turn v3, helped by the caller's own words.

Smart Turn listens to prosody; on some voices it calls finished sentences unfinished,
and the caller then waits the full fallback silence. When the backend can transcribe
the turn (the slot does it speculatively as soon as the VAD hears silence), a
transcript that plainly ends a sentence closes the turn at once. A transcript that
ends in a digit run, a connective or a filler never does: people pause while reading
out numbers, e-mails and addresses.
"""

from __future__ import annotations

import re

from pipecat.frames.frames import Frame, TranscriptionFrame
from pipecat.turns.types import ProcessFrameResult
from pipecat.turns.user_stop.turn_analyzer_user_turn_stop_strategy import (
    TurnAnalyzerUserTurnStopStrategy,
)

_CONTINUES = {
    "and", "but", "or", "so", "because", "um", "uh", "er", "erm", "the", "a", "an", "to",
    "my", "is", "at", "for", "of", "with", "like", "then", "if", "dot", "hmm",
}
_SENTENCE_END = re.compile(r"[.?!]$")


def sounds_finished(text: str) -> bool:
    words = re.findall(r"[a-z0-9']+", text.lower())
    if not words or not _SENTENCE_END.search(text.strip()):
        return False
    if words[-1] in _CONTINUES or words[-1].isdigit():
        return False
    # Three or more digits in the last words: a number being read out.
    return sum(w.isdigit() for w in words[-4:]) < 2


class TranscriptAwareTurnStopStrategy(TurnAnalyzerUserTurnStopStrategy):
    """Smart Turn, plus: a finished-sounding transcript after VAD silence ends the turn."""

    def __init__(self, **kwargs):
        super().__init__(wait_for_transcript=False, **kwargs)

    async def process_frame(self, frame: Frame) -> ProcessFrameResult:
        result = await super().process_frame(frame)
        if (
            isinstance(frame, TranscriptionFrame)
            and self._vad_stopped
            and not self._vad_user_speaking
            and not self._turn_complete
            and sounds_finished(frame.text)
        ):
            self._turn_complete = True
            await self._maybe_trigger_user_turn_stopped()
        return result
