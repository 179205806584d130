"""End of turn when Smart Turn calls a phrase finished: the caller's words have a say."""

import asyncio
import time

from pipecat.audio.turn.base_turn_analyzer import BaseTurnAnalyzer, EndOfTurnState
from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import (
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.processors.frame_processor import FrameProcessorSetup
from pipecat.utils.asyncio.task_manager import TaskManager

from callwright.agent.turns import TranscriptAwareTurnStopStrategy


class _HearsFinished(BaseTurnAnalyzer):
    """Smart Turn's verdict on a phrase said with falling pitch: complete."""

    @property
    def speech_triggered(self) -> bool:
        return True

    @property
    def params(self) -> SmartTurnParams:
        return SmartTurnParams()

    def append_audio(self, buffer: bytes, is_speech: bool) -> EndOfTurnState:
        return EndOfTurnState.INCOMPLETE

    async def analyze_end_of_turn(self):
        return EndOfTurnState.COMPLETE, None

    def clear(self) -> None:
        pass


async def _strategy() -> tuple[TranscriptAwareTurnStopStrategy, list[float]]:
    strategy = TranscriptAwareTurnStopStrategy(turn_analyzer=_HearsFinished())
    task_manager = TaskManager(loop=asyncio.get_running_loop())
    await strategy.setup(
        FrameProcessorSetup(clock=SystemClock(), task_manager=task_manager, pipeline_worker=None)
    )
    stopped: list[float] = []

    @strategy.event_handler("on_user_turn_stopped")
    async def _stopped(_strategy, *_args) -> None:
        stopped.append(time.monotonic())

    return strategy, stopped


async def _pause_after(strategy: TranscriptAwareTurnStopStrategy, words: str) -> float:
    """The caller says `words`, the VAD hears 0.2 s of silence, the transcript follows."""
    await strategy.process_frame(VADUserStartedSpeakingFrame())
    await strategy.process_frame(VADUserStoppedSpeakingFrame(stop_secs=0.2))
    silence_since = time.monotonic()
    await asyncio.sleep(0.05)  # Whisper's time
    await strategy.process_frame(
        TranscriptionFrame(text=words, user_id="", timestamp="", finalized=True)
    )
    return silence_since


async def test_a_sentence_ends_the_turn_at_once():
    strategy, stopped = await _strategy()
    silence_since = await _pause_after(strategy, "What time do you open on Sunday?")
    await asyncio.sleep(0.1)
    assert stopped and stopped[0] - silence_since < 0.1


async def test_a_short_phrase_waits_for_more_and_the_caller_goes_on():
    strategy, stopped = await _strategy()
    await _pause_after(strategy, "No thanks.")  # "No thanks," ... "goodbye."
    await asyncio.sleep(0.3)
    assert not stopped
    await strategy.process_frame(VADUserStartedSpeakingFrame())  # "goodbye"
    await asyncio.sleep(0.5)
    assert not stopped  # the turn goes on
    silence_since = await _pause_after(strategy, "No thanks, goodbye.")
    await asyncio.sleep(0.1)
    assert stopped and stopped[0] - silence_since < 0.1


async def test_a_short_answer_ends_the_turn_once_the_silence_goes_on():
    strategy, stopped = await _strategy()
    silence_since = await _pause_after(strategy, "Yes.")
    await asyncio.sleep(0.8)
    assert len(stopped) == 1 and 0.45 < stopped[0] - silence_since < 0.7
