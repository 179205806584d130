"""A failing or hung model: the caller hears an apology and the fallback, never dead air."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from pipecat.frames.frames import EndTaskFrame, TTSAudioRawFrame
from pipecat.tests.utils import SleepFrame, run_test

from callwright.agent.backend import AudioChunk, AudioLLMSession, Event, TextDelta, TurnRequest
from callwright.agent.fallback import SlotFallback
from callwright.agent.frames import (
    AgentTurnFrame,
    PlaybackMarkedFrame,
    PlaybackMarkFrame,
    TransferCallFrame,
)
from callwright.agent.guard import FailedSession, GuardedSession
from callwright.agent.slot import AudioLLMSlot

APOLOGY = SlotFallback(text="Sorry, something went wrong. Goodbye.",
                       audio=b"\x10\x00" * 8000, sample_rate=16000)


class Crashing(AudioLLMSession):
    """Starts a reply, then the worker dies."""

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        yield TextDelta(text="Hello and")
        raise ConnectionError("model worker exited")

    async def cancel(self) -> None:
        pass


class Hanging(AudioLLMSession):
    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        await asyncio.sleep(3600)
        yield AudioChunk(audio=b"", sample_rate=16000)

    async def cancel(self) -> None:
        pass


async def _greeting(session: AudioLLMSession, fallback: SlotFallback, wait_s: float):
    """Open a call on `session`; the caller's side confirms playback of the first mark."""
    slot = AudioLLMSlot(session=session, fallback=fallback)
    return await run_test(
        slot,
        frames_to_send=[SleepFrame(wait_s), PlaybackMarkedFrame(mark="a1"), SleepFrame(0.2)],
    )


@pytest.mark.parametrize("session,wait_s", [
    (Crashing(), 0.3),
    (FailedSession(RuntimeError("no capacity")), 0.3),
    (GuardedSession(Hanging(), event_timeout_s=0.5), 1.0),
])
async def test_failure_plays_apology_then_hangs_up(session, wait_s):
    down, up = await _greeting(session, APOLOGY, wait_s)
    audio = [f for f in down if isinstance(f, TTSAudioRawFrame)]
    assert [f.audio for f in audio] == [APOLOGY.audio]
    turns = [f for f in down if isinstance(f, AgentTurnFrame)]
    assert len(turns) == 1 and turns[0].text.endswith(APOLOGY.text)
    assert any(isinstance(f, EndTaskFrame) for f in up)


async def test_failure_transfers_when_configured():
    fallback = SlotFallback(text=APOLOGY.text, audio=APOLOGY.audio, sample_rate=16000,
                            transfer_to="+15550100999")
    down, up = await _greeting(Crashing(), fallback, 0.3)
    kinds = [type(f) for f in down]
    # The transfer follows the apology's audio, so it happens once that has played.
    assert kinds.index(TransferCallFrame) > kinds.index(TTSAudioRawFrame)
    assert kinds.index(TransferCallFrame) > kinds.index(PlaybackMarkFrame)
    assert next(f for f in down if isinstance(f, TransferCallFrame)).to == "+15550100999"
    assert not any(isinstance(f, EndTaskFrame) for f in up)

