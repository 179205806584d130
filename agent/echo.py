"""The agent's own voice coming back: what was played, and whether the input is only that.

A caller on speakerphone sends the agent's audio back, delayed and quieter. The tap
after the output transport keeps the last seconds of audio actually written to the
line; `echo_share` finds the delay at which that audio best explains the input and
reports how much of the input's energy it explains. Echo alone scores near 1; a
caller talking over it scores low, so real barge-ins still get through.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np
import soxr
from pipecat.frames.frames import Frame, OutputAudioRawFrame, TTSAudioRawFrame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

ECHO_RATE = 8000  # telephone band: all the line carries, and cheap to search


class PlayedAudio:
    """The last `keep_s` seconds of audio written to the line, and a clock of agent speech."""

    def __init__(self, *, keep_s: float = 2.0):
        self._keep = int(keep_s * ECHO_RATE)
        self._chunks: deque[np.ndarray] = deque()
        self._samples = 0
        self.speech_s = 0.0  # seconds of agent speech written so far in this call
        self.last_write = 0.0  # monotonic time of the last write

    def add(self, pcm: bytes, sample_rate: int, *, speech: bool) -> None:
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        if speech:
            self.speech_s += len(samples) / sample_rate
        if sample_rate != ECHO_RATE:
            samples = soxr.resample(samples, sample_rate, ECHO_RATE)
        self._chunks.append(samples)
        self._samples += len(samples)
        while self._samples - len(self._chunks[0]) >= self._keep:
            self._samples -= len(self._chunks.popleft())
        self.last_write = time.monotonic()

    def recent(self) -> np.ndarray:
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)


class PlayedAudioTap(FrameProcessor):
    """Placed after the output transport, which passes on each chunk once it is written."""

    def __init__(self, *, played: PlayedAudio, **kwargs):
        super().__init__(**kwargs)
        self._played = played

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputAudioRawFrame) and direction == FrameDirection.DOWNSTREAM:
            self._played.add(frame.audio, frame.sample_rate,
                             speech=isinstance(frame, TTSAudioRawFrame))
        await self.push_frame(frame, direction)


def echo_share(caller: np.ndarray, caller_rate: int, played: np.ndarray) -> float:
    """Share (0..1) of the caller signal's energy explained by a delayed, scaled `played`.

    The best delay is searched by FFT cross-correlation over all of `played`; the
    squared normalised correlation at that delay is the explained share.
    """
    x = caller.astype(np.float32)
    if caller_rate != ECHO_RATE:
        x = soxr.resample(x, caller_rate, ECHO_RATE)
    x = x - x.mean()
    n = len(x)
    if n == 0 or not len(played) or float(np.dot(x, x)) < 1e-3:
        return 0.0
    r = played.astype(np.float32)
    # Silence before the first played audio, so echo of the agent's first words aligns.
    r = np.concatenate([np.zeros(n, dtype=np.float32), r])
    size = 1 << int(np.ceil(np.log2(len(r) + n)))
    corr = np.fft.irfft(np.fft.rfft(r, size) * np.conj(np.fft.rfft(x, size)), size)
    corr = corr[: len(r) - n + 1]
    # Energy of each window of `played`, for normalising every lag at once.
    cumsum = np.concatenate([[0.0], np.cumsum(r.astype(np.float64) ** 2)])
    window_energy = cumsum[n:] - cumsum[:-n]
    score = corr**2 / (np.maximum(window_energy, 1e-3) * float(np.dot(x, x)))
    return float(np.clip(score.max(), 0.0, 1.0))
