"""How each caller turn sounded, worked out beside the reply and never in its way.

A turn's prosody starts in a thread when the caller pauses, with the early transcript,
so it is ready by the time the words are: the emotion is then settled with the words,
before the flow decides its answer. A reading that is late is skipped for that turn
rather than waited for.
"""

from __future__ import annotations

import asyncio

from loguru import logger

from callwright.agent.emotion import CallerMood, Emotion
from callwright.agent.prosody import Prosody, prosody

# The longest a reply waits for the turn's prosody (it needs ~10 ms of a free core; only
# a machine far behind makes it later, and then the words decide alone).
SETTLE_WAIT_S = 0.15


class MoodListener:
    """Hears a call's caller turns for its `CallerMood`.

    Args:
        mood: The call's mood, which the flow and the agent's delivery read too.
    """

    def __init__(self, *, mood: CallerMood):
        self.mood = mood
        self._early: tuple[bytes, asyncio.Future[Prosody]] | None = None

    def prepare(self, audio: bytes) -> None:
        """Start on the prosody of `audio` (16 kHz int16): the caller paused, the turn may
        be over."""
        if self._early is not None:
            self._early[1].cancel()
        self._early = (audio, self._start(audio))

    async def settle(
        self, audio: bytes | None, text: str, *, reported: Emotion | None = None
    ) -> Emotion:
        """The emotion of the turn of `audio` that said `text`, added to the mood.

        Args:
            audio: The turn's audio; None for a turn with no audio (words only).
            text: What the caller said.
            reported: How the backend heard the caller, where it says (`CallerEmotion`).
        """
        features = None
        if audio is not None:
            early, self._early = self._early, None
            future = early[1] if early is not None and early[0] is audio else self._start(audio)
            try:
                features = await asyncio.wait_for(asyncio.shield(future), SETTLE_WAIT_S)
            except TimeoutError:
                logger.debug("the turn's prosody came late: its words decide alone")
            except Exception:
                logger.exception("the turn's prosody failed")
        return self.mood.observe(prosody=features, text=text, reported=reported)

    def retract(self) -> None:
        """The caller went on after the last settled turn: it is read again, whole."""
        self.mood.retract_last()

    @staticmethod
    def _start(audio: bytes) -> asyncio.Future[Prosody]:
        future = asyncio.ensure_future(asyncio.to_thread(prosody, audio))
        future.add_done_callback(lambda f: f.cancelled() or f.exception())  # read in settle()
        return future
