"""Speech codes to audio as they arrive: a vocoder interface and the code window over it.

Fun-Audio-Chat's speech head emits 25 codes a second; CosyVoice3's `token2wav` turns
codes into 24 kHz audio (960 samples, 40 ms, per code). The window follows Fun-Audio-Chat's
web-demo server (`web_demo/server/server.py`, `tts_sender_thread_func`, commit 8ba984b):

- each time `offset + hop + lookahead` codes are there (15 + 3: 0.6 s of audio per call)
  the vocoder gets exactly `codes[:offset + hop + lookahead]` and renders `codes[offset:
  offset + hop]`; the last `lookahead` codes are only right context. Handing it more would
  render codes twice, since `token2wav` renders up to the end minus the look-ahead;
- at the end one call with `finalize=True` renders the rest and flushes the vocoder;
- every `window_reset` (200) codes the prefix is cut by that much, keeping the codes
  between the cut and `offset` as left context, because each call re-runs flow matching
  over the whole prefix;
- the vocoder's own state (CosyVoice's HiFT cache, which re-synthesises all the mel it
  holds on every call) is dropped at the first cut once `vocoder_reset` (500) codes went
  through it since the last drop. As upstream, that loses the audio HiFT was still holding
  back (8 mel frames, 160 ms), so only utterances over 24 s (600 codes) have one skip.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

HOP_CODES = 15  # upstream TOKEN_HOP_LEN (utils/constant.py)
LOOKAHEAD_CODES = 3  # upstream PRE_LOOKAHEAD_LEN; CosyVoice3's flow pre_lookahead_len
WINDOW_RESET_CODES = 200  # upstream MAX_TTS_TOKENS = TOKEN_FPS * 8
VOCODER_RESET_CODES = 500  # upstream MAX_TTS_HISTORY = TOKEN_FPS * 20


class Vocoder(Protocol):
    """What `CodeWindow` needs of a vocoder: CosyVoice3's `token2wav` contract."""

    sample_rate: int

    def push(self, codes: list[int], offset: int, finalize: bool) -> np.ndarray:
        """Audio (float32 at `sample_rate`) that became final.

        Not finalised, it renders `codes[offset:len(codes) - LOOKAHEAD_CODES]`, using the
        last codes as right context, and may hold back a little audio for later calls;
        finalised, it renders `codes[offset:]` and everything it held back.
        """

    def reset(self) -> None:
        """Forget the utterance (caches keyed to it); the next push starts afresh."""


class CodeWindow:
    """Feeds speech codes to a `Vocoder` in hops, as Fun-Audio-Chat's server does.

    Args:
        vocoder: Renders codes; see `Vocoder.push`.
        hop: Codes rendered per call.
        lookahead: Codes of right context the vocoder needs past the hop.
        window_reset: Codes after which the prefix handed to the vocoder is cut.
        vocoder_reset: Codes after which the vocoder's state is dropped (at a cut).
    """

    def __init__(self, vocoder: Vocoder, *, hop: int = HOP_CODES,
                 lookahead: int = LOOKAHEAD_CODES, window_reset: int = WINDOW_RESET_CODES,
                 vocoder_reset: int = VOCODER_RESET_CODES):
        self._vocoder = vocoder
        self._hop = hop
        self._lookahead = lookahead
        self._reset = window_reset
        self._vocoder_reset = vocoder_reset
        self._codes: list[int] = []
        self._offset = 0
        self._since_vocoder_reset = 0
        self.calls = 0

    def push(self, codes: list[int]) -> list[np.ndarray]:
        """Add codes; returns the audio that became ready (possibly none)."""
        self._codes.extend(codes)
        ready = []
        while len(self._codes) >= (end := self._offset + self._hop + self._lookahead):
            ready.append(self._vocode(self._codes[:end], finalize=False))
            self._offset += self._hop
            if self._offset >= self._reset:
                # Cut by `window_reset`, not by `offset`: the codes in between stay as the
                # flow's left context, so the audio runs on smoothly across the cut.
                self._codes = self._codes[self._reset:]
                self._offset -= self._reset
                self._since_vocoder_reset += self._reset
                if self._since_vocoder_reset >= self._vocoder_reset:
                    self._since_vocoder_reset = 0
                    self._vocoder.reset()
        return ready

    def finish(self) -> np.ndarray | None:
        """The rest of the utterance; None when nothing is left."""
        audio = None
        if len(self._codes) > self._offset:
            audio = self._vocode(list(self._codes), finalize=True)
        self._codes, self._offset, self._since_vocoder_reset = [], 0, 0
        self._vocoder.reset()
        return audio

    def _vocode(self, codes: list[int], *, finalize: bool) -> np.ndarray:
        self.calls += 1
        return np.asarray(self._vocoder.push(codes, self._offset, finalize),
                          dtype=np.float32).reshape(-1)
