"""Calls share one Silero and one Smart Turn session, and still judge exactly as pipecat's own."""

import numpy as np
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroVADAnalyzer

from agent import models
from agent.analyzers import SharedSileroVAD, SharedSmartTurn
from tests.support import speech_8k

RATE = 16_000


def _speech_16k(text: str) -> bytes:
    import soxr

    pcm = np.frombuffer(speech_8k(text), dtype=np.int16)
    return soxr.resample(pcm, 8000, RATE).astype(np.int16).tobytes()


def _confidences(vad, audio: bytes) -> list[float]:
    step = vad.num_frames_required() * 2
    return [
        float(np.ravel(vad.voice_confidence(audio[i : i + step]))[0])
        for i in range(0, len(audio) - step + 1, step)
    ]


def test_shared_vad_matches_pipecat_and_keeps_state_per_call():
    paths = models.resolve()
    first, second = _speech_16k("What time do you open on Sunday?"), _speech_16k("Goodbye.")
    reference = SileroVADAnalyzer()
    reference.set_sample_rate(RATE)
    expected = _confidences(reference, first)

    a, b = (SharedSileroVAD(model=paths.silero_vad) for _ in range(2))
    for vad in (a, b):
        vad.set_sample_rate(RATE)
    assert a._model.session is b._model.session
    # Two calls interleaved window by window: neither disturbs the other's recurrent state.
    step = a.num_frames_required() * 2
    got = []
    for i in range(0, len(first) - step + 1, step):
        got.append(float(np.ravel(a.voice_confidence(first[i : i + step]))[0]))
        if i + step <= len(second):
            b.voice_confidence(second[i : i + step])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert max(got) > 0.9 and min(got) < 0.1  # speech and silence both present


def test_shared_smart_turn_matches_pipecat():
    paths = models.resolve()
    audio = np.frombuffer(_speech_16k("What time do you open tomorrow?"), dtype=np.int16)
    samples = audio.astype(np.float32) / 32768.0
    reference = LocalSmartTurnAnalyzerV3(smart_turn_model_path=str(paths.smart_turn))
    reference.set_sample_rate(RATE)
    shared = [SharedSmartTurn(model=paths.smart_turn) for _ in range(2)]
    assert shared[0]._session is shared[1]._session
    for analyzer in shared:
        analyzer.set_sample_rate(RATE)
        result = analyzer._predict_endpoint(samples)
        expected = reference._predict_endpoint(samples)
        assert result["prediction"] == expected["prediction"]
        assert abs(result["probability"] - expected["probability"]) < 1e-5
