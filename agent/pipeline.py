"""Builds the per-call pipeline: transport in → VAD → user turns → audio-LLM slot → your
steps → recorder → out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pipecat.audio.turn.smart_turn.base_smart_turn import SmartTurnParams
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.observers.base_observer import BaseObserver
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.dtmf_aggregator import DTMFAggregator
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.turns.user_turn_processor import UserTurnProcessor
from pipecat.turns.user_turn_strategies import UserTurnStrategies

from callwright.agent.analyzers import HostedSmartTurn, SharedSileroVAD
from callwright.agent.backend import INPUT_SAMPLE_RATE, AudioLLMSession
from callwright.agent.echo import PlayedAudio, PlayedAudioTap
from callwright.agent.emotion import CallerMood
from callwright.agent.fallback import SlotFallback
from callwright.agent.interruptions import BargeInStartStrategy, InterruptionSettings
from callwright.agent.model_host import ModelHost
from callwright.agent.slot import DTMF_PREFIX, AudioLLMSlot
from callwright.agent.speakers import SpeakerSettings, SpeakerTracker
from callwright.agent.turns import TranscriptAwareTurnStopStrategy

PipelineStep = Callable[[int], FrameProcessor]
"""Builds one of your own processors for a call, given its call id (a fresh one per call).

It sits after the audio-LLM slot: it sees the caller's stored words (`CallerTurnFrame`),
the agent's audio and what the caller heard of it (`AgentTurnFrame`), before they are
recorded and sent. It must pass on every frame it does not mean to drop."""


@dataclass(frozen=True, kw_only=True)
class TurnTakingSettings:
    """How the call decides that the caller has finished, or is barging in."""

    vad_stop_secs: float = 0.2
    turn_stop_secs: float = 1.2  # the longest Smart Turn waits on an unfinished sentence
    digit_wait_s: float = 1.5  # extra wait after the caller reads out digits
    interruptions: InterruptionSettings = InterruptionSettings()
    speakers: SpeakerSettings = SpeakerSettings()


def build_call_worker(
    *,
    transport: BaseTransport,
    session: AudioLLMSession,
    models: ModelHost,
    recorder: FrameProcessor,
    out_sample_rate: int,
    turn_taking: TurnTakingSettings = TurnTakingSettings(),
    observers: Sequence[BaseObserver] = (),
    instructions: str = "",
    fallback: SlotFallback | None = None,
    steps: Sequence[FrameProcessor] = (),
    after_output: Sequence[FrameProcessor] = (),
    mood: CallerMood | None = None,
) -> PipelineWorker:
    """`after_output` sees frames once sent, in playback order: call control, recording;
    `mood` gets the emotion of each main-caller turn (None: emotion is not read)."""
    vad = SharedSileroVAD(
        model=models.paths.silero_vad, params=VADParams(stop_secs=turn_taking.vad_stop_secs)
    )
    turn_analyzer = HostedSmartTurn(
        host=models, params=SmartTurnParams(stop_secs=turn_taking.turn_stop_secs)
    )
    played = PlayedAudio()
    speakers = turn_taking.speakers
    tracker = (
        SpeakerTracker(settings=speakers, embed=models.voice_print) if speakers.enabled else None
    )
    user_turns = UserTurnProcessor(
        user_turn_strategies=UserTurnStrategies(
            start=[BargeInStartStrategy(
                settings=turn_taking.interruptions, played=played, speakers=tracker
            )],
            stop=[TranscriptAwareTurnStopStrategy(
                turn_analyzer=turn_analyzer, digit_wait_s=turn_taking.digit_wait_s
            )],
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            VADProcessor(vad_analyzer=vad),
            user_turns,
            # Keys pressed become one turn of digits, after "#" or 2 s without a key.
            DTMFAggregator(prefix=DTMF_PREFIX),
            AudioLLMSlot(
                session=session, instructions=instructions, fallback=fallback, played=played,
                speaker_tracker=tracker, mood=mood,
            ),
            *steps,
            recorder,
            transport.output(),
            PlayedAudioTap(played=played),
            *after_output,
        ]
    )
    return PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=INPUT_SAMPLE_RATE, audio_out_sample_rate=out_sample_rate
        ),
        enable_rtvi=False,
        # Its observer would see every frame pushed between every two processors (a queue
        # put and a task wake-up each, ~500 a second per call); nothing here reads it.
        enable_turn_tracking=False,
        idle_timeout_secs=None,
        observers=list(observers),
    )
