"""Who said each caller turn, and whether the agent should answer it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from loguru import logger

from callwright.agent.speakers import SpeakerTracker, VoicePrint


class TurnLabeller:
    """Labels a call's caller turns with a `SpeakerTracker` and follows hand-overs.

    Args:
        tracker: the call's known voices.
        on_new_speaker: awaited with a label the first time that voice is heard.
    """

    def __init__(
        self, *, tracker: SpeakerTracker, on_new_speaker: Callable[[str], Awaitable[None]]
    ):
        self.tracker = tracker
        self.last: str | None = None  # the label of the last caller turn with words
        self._on_new_speaker = on_new_speaker
        self._handover_pending = False  # the main speaker announced a hand-over
        self._clearly_other = False  # the last turn's voice is far from the main speaker's
        self._early: tuple[bytes, asyncio.Future[VoicePrint]] | None = None

    @property
    def enabled(self) -> bool:
        """Whether speaker labelling is on (the tracker's settings)."""
        return self.tracker.settings.enabled

    def prepare(self, audio: bytes, seconds: float) -> None:
        """Start the turn's voice print with its transcript, at the VAD's silence: the reply
        waits for the label, and under load a print started at the turn's end came late."""
        if not self.enabled or self.tracker.too_short(seconds):
            return  # `label` keeps the last speaker
        if self._early is not None:
            self._early[1].cancel()
        future = asyncio.ensure_future(asyncio.to_thread(self.tracker.voice_print, audio))
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # read in label()
        self._early = (audio, future)

    async def label(self, audio: bytes, seconds: float) -> str | None:
        """Who said this turn; enrols new voices (speech long enough to tell voices apart)."""
        tracker = self.tracker
        if tracker.too_short(seconds):
            return self.last or tracker.main
        known = tracker.labels()
        try:
            if self._early is not None and self._early[0] is audio:
                voice_print = await self._early[1]
            else:
                voice_print = await asyncio.to_thread(tracker.voice_print, audio)
        except Exception as exc:  # a label is not worth the turn: keep the last one
            logger.error(f"no voice print for this turn: {exc!r}")
            return self.last or tracker.main
        label = tracker.assign(voice_print, seconds)
        self._clearly_other = label != tracker.main and tracker.differs(
            voice_print, tracker.main, tracker.settings.unanswered_below
        )
        if label not in known:
            if self._handover_pending:
                self._handover_pending = False
                tracker.set_main(label)
            await self._on_new_speaker(label)
        return label

    def heard(self, label: str | None, text: str) -> bool:
        """Note a labelled turn's words; False if the agent should not answer them (someone
        else in the room, far from the main speaker's voice)."""
        self.last = label
        if label is not None and label != self.tracker.main and self._clearly_other:
            return False
        if text and label is not None and self._announces_handover(text):
            self._handover_pending = True
        return True

    def _announces_handover(self, text: str) -> bool:
        lowered = " ".join(text.lower().replace("’", "'").split())
        return any(p in lowered for p in self.tracker.settings.handover_phrases)
