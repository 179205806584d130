"""The slot reads each answered caller turn's emotion before the reply is decided, keeps it
with the stored turn, and tells a model that speaks for itself how the caller sounds."""

from collections.abc import AsyncIterator

import numpy as np
from pipecat.frames.frames import (
    InputAudioRawFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from pipecat.tests.utils import SleepFrame, run_test

from callwright.agent.backend import (
    AudioChunk,
    AudioLLMSession,
    CallerEmotion,
    CallerText,
    EndOfTurn,
    Event,
    TextDelta,
    TurnRequest,
)
from callwright.agent.emotion import CallerMood
from callwright.agent.frames import CallerTurnFrame, PlaybackMarkedFrame
from callwright.agent.slot import AudioLLMSlot

SPEECH = (np.sin(np.arange(16000) * 2 * np.pi * 140 / 16000) * 8000).astype(np.int16).tobytes()


class PerceivingModel(AudioLLMSession):
    """A speech model that hears the caller as frustrated and says so (CallerEmotion)."""

    def __init__(self, mood: CallerMood):
        self.mood = mood
        self.requests: list[TurnRequest] = []
        self.frustration_when_replying: list[int] = []

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        self.requests.append(request)
        if request.audio is not None:
            yield CallerEmotion(label="frustrated", arousal=0.7, valence=-0.6)
            yield CallerText(text="I have been waiting all day for the engineer.")
        self.frustration_when_replying.append(self.mood.frustration)
        yield TextDelta(text="I'm sorry.")
        yield AudioChunk(audio=b"\x10\x00" * 1600, sample_rate=16000)
        yield EndOfTurn()

    async def cancel(self) -> None:
        pass


def _caller_turn() -> list:
    chunks = [InputAudioRawFrame(audio=SPEECH[i:i + 640], sample_rate=16000, num_channels=1)
              for i in range(0, len(SPEECH), 640)]
    return [UserStartedSpeakingFrame(), *chunks, UserStoppedSpeakingFrame(), SleepFrame(0.5)]


async def test_a_reported_emotion_is_settled_before_the_reply_and_stored():
    mood = CallerMood()
    model = PerceivingModel(mood)
    slot = AudioLLMSlot(session=model, mood=mood)
    frames = [SleepFrame(0.3), PlaybackMarkedFrame(mark="a1"), *_caller_turn(),
              PlaybackMarkedFrame(mark="a2"), SleepFrame(0.2), *_caller_turn()]
    down, _ = await run_test(slot, frames_to_send=frames)
    caller = [f for f in down if isinstance(f, CallerTurnFrame)]
    assert [(f.emotion, f.arousal > 0, f.valence < 0) for f in caller] == [
        ("frustrated", True, True)] * 2
    assert model.frustration_when_replying == [0, 1, 2]  # each read before its reply
    # The next request tells the model how the caller has sounded.
    assert "frustrated" in model.requests[2].instructions
    assert "frustrated" not in model.requests[1].instructions


async def test_without_a_mood_nothing_is_read():
    model = PerceivingModel(CallerMood())
    slot = AudioLLMSlot(session=model)
    frames = [SleepFrame(0.3), PlaybackMarkedFrame(mark="a1"), *_caller_turn(),
              PlaybackMarkedFrame(mark="a2"), SleepFrame(0.2)]
    down, _ = await run_test(slot, frames_to_send=frames)
    caller = [f for f in down if isinstance(f, CallerTurnFrame)]
    assert [f.emotion for f in caller] == [None]
