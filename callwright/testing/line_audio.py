"""Audio on a phone line as the test callers hear and send it: 8 kHz 16-bit mono PCM
(μ-law on the wire) in 20 ms chunks, with the echo and noise a caller's side adds."""

from __future__ import annotations

import audioop
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 8000
CHUNK_BYTES = 160  # 20 ms of 8 kHz μ-law
CHUNK_S = 0.02
SILENCE = b"\xff" * CHUNK_BYTES  # μ-law digital silence
SPEECH_RMS = 400  # int16 RMS above which a chunk counts as speech


def load_wav_8k(path: Path) -> bytes:
    """A WAV file as 8 kHz mono int16 PCM."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    if width != 2:
        pcm = audioop.lin2lin(pcm, width, 2)
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    if rate != RATE:
        import soxr

        samples = np.frombuffer(pcm, dtype=np.int16)
        pcm = soxr.resample(samples, rate, RATE).astype(np.int16).tobytes()
    return pcm


def rms(pcm: bytes) -> float:
    """The root-mean-square level of int16 PCM."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def speech_end_s(pcm8k: bytes) -> float:
    """Offset of the end of the last speech in a clip (20 ms resolution)."""
    step = CHUNK_BYTES * 2
    end = 0.0
    for i in range(0, len(pcm8k), step):
        if rms(pcm8k[i : i + step]) > SPEECH_RMS:
            end = (i + step) / 2 / RATE
    return end


@dataclass(frozen=True, kw_only=True)
class LineAcoustics:
    """What the caller's side adds to what it sends: speakerphone echo, room noise."""

    echo_gain: float = 0.0  # share of the agent's played audio fed back (0: none)
    echo_delay_s: float = 0.12
    noise: bytes = b""  # 8 kHz int16, looped under everything sent


class CallerSide:
    """What the caller's side mixes into what it sends: clips laid over it (talking over
    the agent), the echo of the agent's played audio, and looped noise."""

    def __init__(self, acoustics: LineAcoustics):
        self.acoustics = acoustics
        self._played: list[tuple[float, np.ndarray]] = []  # (play start, samples) of agent audio
        self._overlays: list[tuple[float, np.ndarray]] = []
        self._noise_at = 0

    def overlay(self, pcm8k: bytes, at: float) -> None:
        """Mix `pcm8k` over what is sent, from monotonic time `at`."""
        self._overlays.append((at, _samples(pcm8k)))

    def played(self, pcm8k: bytes, start: float) -> None:
        """The far end plays `pcm8k` of the agent's from monotonic time `start` (for echo)."""
        self._played.append((start, _samples(pcm8k)))

    def cleared(self, now: float) -> None:
        """The agent's audio not yet played was dropped."""
        self._played = [(s, a[: max(0, int((now - s) * RATE))]) for s, a in self._played]

    def mix(self, payload: bytes, t: float) -> bytes:
        """The μ-law chunk sent at monotonic time `t`, with everything the line adds."""
        extra = _window(self._overlays, t)
        if self.acoustics.echo_gain:
            echo = _window(self._played, t - self.acoustics.echo_delay_s)
            extra += echo * self.acoustics.echo_gain
        if self.acoustics.noise:
            noise = np.frombuffer(self.acoustics.noise, dtype=np.int16)
            idx = (np.arange(CHUNK_BYTES) + self._noise_at) % len(noise)
            self._noise_at += CHUNK_BYTES
            extra += noise[idx]
        self._overlays = [(s, a) for s, a in self._overlays if s + len(a) / RATE > t]
        self._played = [(s, a) for s, a in self._played if s + len(a) / RATE > t - 2.0]
        if not extra.any():
            return payload
        pcm = np.frombuffer(audioop.ulaw2lin(payload, 2), dtype=np.int16) + extra
        return audioop.lin2ulaw(np.clip(pcm, -32768, 32767).astype(np.int16).tobytes(), 2)


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32)


def _window(parts: list[tuple[float, np.ndarray]], t: float) -> np.ndarray:
    """One chunk's worth of `parts` (each starting at its monotonic time) summed at `t`."""
    out = np.zeros(CHUNK_BYTES, dtype=np.float32)
    for start, samples in parts:
        first = int(round((t - start) * RATE))
        lo, hi = max(first, 0), min(first + CHUNK_BYTES, len(samples))
        if hi > lo:
            out[lo - first : hi - first] += samples[lo:hi]
    return out
