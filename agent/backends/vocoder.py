"""Speech codes to audio as they arrive: a vocoder interface and the code window over it.

Fun-Audio-Chat's speech head emits 25 codes a second; CosyVoice3's token2wav turns a
code prefix into 24 kHz audio. Following the reference server, the window calls the
vocoder each time `hop` new codes plus `lookahead` codes of right context are there
(15 + 3 codes: 0.6 s of audio per call), and once more with `finalize=True` at the end.
Each call re-runs flow matching over the whole prefix, so the prefix restarts every
`window_reset` codes to bound the cost.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

HOP_CODES = 15
LOOKAHEAD_CODES = 3
WINDOW_RESET_CODES = 200


class Vocoder(Protocol):
    sample_rate: int

    def push(self, codes: list[int], offset: int, finalize: bool) -> np.ndarray:
        """Audio (float32 at `sample_rate`) for `codes[offset:]`, up to what is final.

        Not finalised, it covers `codes[offset:offset + HOP_CODES]`, using the rest as
        look-ahead; finalised, everything from `offset` to the end.
        """

    def reset(self) -> None:
        """Forget the utterance (caches keyed to it); the next push starts afresh."""


class CodeWindow:
    def __init__(self, vocoder: Vocoder, *, hop: int = HOP_CODES,
                 lookahead: int = LOOKAHEAD_CODES, window_reset: int = WINDOW_RESET_CODES):
        self._vocoder = vocoder
        self._hop = hop
        self._lookahead = lookahead
        self._reset = window_reset
        self._codes: list[int] = []
        self._offset = 0
        self.calls = 0

    def push(self, codes: list[int]) -> list[np.ndarray]:
        """Add codes; returns the audio that became ready (possibly none)."""
        self._codes.extend(codes)
        ready = []
        while len(self._codes) >= self._offset + self._hop + self._lookahead:
            ready.append(self._vocode(finalize=False))
            self._offset += self._hop
            if self._offset >= self._reset:
                self._codes, self._offset = self._codes[self._offset:], 0
                self._vocoder.reset()
        return ready

    def finish(self) -> np.ndarray | None:
        """The rest of the utterance; None when nothing is left."""
        audio = self._vocode(finalize=True) if len(self._codes) > self._offset else None
        self._codes, self._offset = [], 0
        self._vocoder.reset()
        return audio

    def _vocode(self, *, finalize: bool) -> np.ndarray:
        self.calls += 1
        return np.asarray(self._vocoder.push(list(self._codes), self._offset, finalize),
                          dtype=np.float32).reshape(-1)
