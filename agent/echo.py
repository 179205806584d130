"""The agent's own voice coming back: what was played, and whether the input is only that.

A caller on speakerphone sends the agent's audio back, delayed and quieter. The tap
after the output transport sees each chunk as it is written, but pipecat's websocket
output writes ahead of playback (twice real time) and the far end buffers it, so the
tap keeps a *playout timeline*: each chunk is placed where the far end plays it (after
what is already queued), and an interruption (Twilio `clear`, WebRTC flush) drops what
was queued but not yet played. `echo_share` finds the delay at which the recently
played audio best explains the input and reports how much of the input's energy it
explains. Echo alone scores near 1; a caller talking over it scores low.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import soxr
from pipecat.frames.frames import (
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

ECHO_RATE = 8000  # telephone band: all the line carries, and cheap to search


@dataclass(kw_only=True)
class _Played:
    start: float  # monotonic time the far end starts playing it
    samples: np.ndarray  # ECHO_RATE
    speech: bool

    @property
    def end(self) -> float:
        return self.start + len(self.samples) / ECHO_RATE


class PlayedAudio:
    """The audio the far end has played in the last `keep_s` seconds, and a speech clock."""

    def __init__(self, *, keep_s: float = 2.0):
        self._keep_s = keep_s
        self._chunks: deque[_Played] = deque()
        self._playout_end = 0.0  # when everything written so far has played
        self._speech_done_s = 0.0  # agent speech in chunks dropped from `_chunks`

    def add(self, pcm: bytes, sample_rate: int, *, speech: bool) -> None:
        """Place a chunk written to the far end on the playout timeline, after what is queued;
        `speech` says it is agent speech (for `speech_s`)."""
        samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        if sample_rate != ECHO_RATE:
            samples = soxr.resample(samples, sample_rate, ECHO_RATE)
        now = time.monotonic()
        start = max(now, self._playout_end)
        self._chunks.append(_Played(start=start, samples=samples, speech=speech))
        self._playout_end = start + len(samples) / ECHO_RATE
        while self._chunks and self._chunks[0].end < now - self._keep_s:
            old = self._chunks.popleft()
            self._speech_done_s += len(old.samples) / ECHO_RATE if old.speech else 0.0

    def flush(self) -> None:
        """The far end dropped what it had not played yet (an interruption)."""
        now = time.monotonic()
        while self._chunks and self._chunks[-1].start >= now:
            self._chunks.pop()
        if self._chunks and self._chunks[-1].end > now:
            last = self._chunks[-1]
            last.samples = last.samples[: int((now - last.start) * ECHO_RATE)]
        self._playout_end = min(self._playout_end, now)

    @property
    def speech_s(self) -> float:
        """Seconds of agent speech the far end has played so far in this call."""
        now = time.monotonic()
        return self._speech_done_s + sum(
            min(c.end, now) - c.start for c in self._chunks if c.speech and c.start < now
        )

    @property
    def last_played(self) -> float:
        """Monotonic time the far end last played (or is playing) agent audio."""
        return min(self._playout_end, time.monotonic())

    def recent(self) -> np.ndarray:
        """The last `keep_s` seconds as played, silence where nothing played."""
        now = time.monotonic()
        t0 = now - self._keep_s
        out = np.zeros(int(self._keep_s * ECHO_RATE), dtype=np.float32)
        for chunk in self._chunks:
            first = int(round((chunk.start - t0) * ECHO_RATE))
            lo, hi = max(first, 0), min(first + len(chunk.samples), len(out))
            if hi > lo:
                out[lo:hi] = chunk.samples[lo - first : hi - first]
        return out


class PlayedAudioTap(FrameProcessor):
    """Placed after the output transport, which passes on each chunk once it is written."""

    def __init__(self, *, played: PlayedAudio, **kwargs):
        super().__init__(**kwargs)
        self._played = played

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Put each output audio chunk on the playout timeline and flush it on an interruption;
        every frame is passed on."""
        await super().process_frame(frame, direction)
        if direction == FrameDirection.DOWNSTREAM:
            if isinstance(frame, OutputAudioRawFrame):
                self._played.add(frame.audio, frame.sample_rate,
                                 speech=isinstance(frame, TTSAudioRawFrame))
            elif isinstance(frame, InterruptionFrame):
                self._played.flush()
        await self.push_frame(frame, direction)


def echo_share(caller: np.ndarray, caller_rate: int, played: np.ndarray) -> float:
    """Share (0..1) of the caller signal's energy explained by delayed, scaled `played`.

    Judged in 50 ms blocks, each at its own best delay: the far end's playout drifts
    against ours by a few ms from chunk to chunk (jitter buffers, a loaded machine),
    which is enough to decorrelate a single alignment over half a second.
    """
    x = caller.astype(np.float32)
    if caller_rate != ECHO_RATE:
        x = soxr.resample(x, caller_rate, ECHO_RATE)
    n = ECHO_RATE // 20
    x = x[len(x) % n :]  # whole blocks, ending with the newest sample
    x = x - x.mean() if len(x) else x
    total = float(np.dot(x, x))
    if not len(x) or not len(played) or total < 1e-3:
        return 0.0
    blocks = x.reshape(-1, n)
    # Silence before the first played audio, so echo of the agent's first words aligns.
    r = np.concatenate([np.zeros(n, dtype=np.float32), played.astype(np.float32)])
    size = 1 << int(np.ceil(np.log2(len(r) + n)))
    spectrum = np.fft.rfft(r, size)
    corr = np.fft.irfft(spectrum[None, :] * np.conj(np.fft.rfft(blocks, size)), size)
    corr = corr[:, : len(r) - n + 1]
    # Energy of each window of `played`, for normalising every lag at once.
    cumsum = np.concatenate([[0.0], np.cumsum(r.astype(np.float64) ** 2)])
    window_energy = np.maximum(cumsum[n:] - cumsum[:-n], 1e-3)
    energy = np.einsum("ij,ij->i", blocks, blocks)
    share = (corr**2 / window_energy[None, :]).max(axis=1) / np.maximum(energy, 1e-3)
    return float(np.clip(np.dot(np.clip(share, 0.0, 1.0), energy) / total, 0.0, 1.0))
