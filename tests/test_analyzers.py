"""Calls share one Silero and one Smart Turn session, and still judge exactly as pipecat's own."""

import asyncio

import numpy as np
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState

from callwright.agent import models
from callwright.agent.analyzers import SharedSileroVAD, SmartTurnModel, silero_batcher
from tests.support import speech_8k

RATE = 16_000


def _speech_16k(text: str) -> bytes:
    import soxr

    pcm = np.frombuffer(speech_8k(text), dtype=np.int16)
    return soxr.resample(pcm, 8000, RATE).astype(np.int16).tobytes()


class _Scores:
    """Keeps the score of every window the analyzer judged."""

    def voice_confidence(self, buffer: bytes) -> float:
        self.__dict__.setdefault("scores", []).append(
            float(np.ravel(super().voice_confidence(buffer))[0])
        )
        return self.scores[-1]


class _Recording(_Scores, SharedSileroVAD):
    pass


class _PipecatRecording(_Scores, SileroVADAnalyzer):
    pass


async def _states(vad, frames: list[bytes]) -> list[VADState]:
    return [await vad.analyze_audio(frame) for frame in frames]


def _frames(audio: bytes, ms: int = 20) -> list[bytes]:
    step = RATE * ms // 1000 * 2
    return [audio[i : i + step] for i in range(0, len(audio) - step + 1, step)]


async def test_calls_batched_together_judge_exactly_as_pipecat_alone():
    paths = models.resolve()
    lines = [_speech_16k("What time do you open on Sunday?"), _speech_16k("Goodbye."),
             _speech_16k("My number is two one two.")]
    expected_states, expected_scores = [], []
    for audio in lines:
        reference = _PipecatRecording(params=VADParams(stop_secs=0.2))
        reference.set_sample_rate(RATE)
        expected_states.append(await _states(reference, _frames(audio)))
        expected_scores.append(reference.scores)

    calls = [_Recording(model=paths.silero_vad, params=VADParams(stop_secs=0.2)) for _ in lines]
    for vad in calls:
        vad.set_sample_rate(RATE)
    assert calls[0]._model.session is calls[1]._model.session
    # Three calls at once, frame by frame: their windows share ONNX runs, and no call
    # disturbs another's recurrent state.
    got_states = await asyncio.gather(*(_states(v, _frames(a)) for v, a in
                                        zip(calls, lines, strict=True)))
    assert silero_batcher(calls[0]._model.session).largest_batch == len(lines)
    for vad, scores, states, got in zip(calls, expected_scores, expected_states, got_states,
                                        strict=True):
        np.testing.assert_allclose(vad.scores, scores, atol=1e-5)
        assert got == states
    assert VADState.SPEAKING in got_states[0] and got_states[0][-1] == VADState.QUIET


def test_smart_turn_model_matches_pipecat():
    paths = models.resolve()
    audio = np.frombuffer(_speech_16k("What time do you open tomorrow?"), dtype=np.int16)
    samples = audio.astype(np.float32) / 32768.0
    reference = LocalSmartTurnAnalyzerV3(smart_turn_model_path=str(paths.smart_turn))
    reference.set_sample_rate(RATE)
    shared = [SmartTurnModel(paths.smart_turn) for _ in range(2)]
    assert shared[0]._session is shared[1]._session
    expected = reference._predict_endpoint(samples)
    for model in shared:
        result = model.predict(samples, RATE)
        assert result["prediction"] == expected["prediction"]
        assert abs(result["probability"] - expected["probability"]) < 1e-5
