"""Model-agnostic parts of streaming a Hugging Face `generate()` into the audio-LLM contract.

`generate()` blocks, so it runs in a thread. A `TokenStreamer` receives its tokens
(text ids, and for speech models groups of speech codes), a `CancelCriterion` stops it
after the current decoding step, and a `GenerationThread` carries the events back to
the event loop. Nothing here imports a specific model, so the Fun-Audio-Chat worker
(transformers 4.53, its own venv) and the Qwen2.5-Omni backend (transformers 5) share it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import numpy as np
from transformers import StoppingCriteria
from transformers.generation.streamers import BaseStreamer


class TurnCancelled(Exception):
    """Raised inside the generation thread to abandon a stage that has no stopping hook."""


class CancelCriterion(StoppingCriteria):
    """Stops `generate()` after the step in progress once `set()` is called."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.steps = 0  # decoding steps seen, for tests and logs
        self.steps_after_cancel = 0

    def set(self) -> None:
        """Ask generation to stop; safe to call from any thread."""
        self._event.set()

    @property
    def is_set(self) -> bool:
        """Whether `set()` was called."""
        return self._event.is_set()

    def check(self) -> None:
        """Raise once set, for a stage that has no stopping hook.

        Raises:
            TurnCancelled: `set()` was called.
        """
        if self._event.is_set():
            raise TurnCancelled

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.steps += 1
        stop = self._event.is_set()
        if stop:
            self.steps_after_cancel += 1
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class TextTokens:
    """The text token ids of one decoding step, one per sequence."""

    ids: list[int]


@dataclass(frozen=True)
class SpeechCodes:
    """One group of speech codes from one decoding step (batch size 1)."""

    codes: list[int]  # one group (e.g. 5 codes = 200 ms for Fun-Audio-Chat)


class TokenStreamer(BaseStreamer):
    """Turns `generate()`'s streamer calls into `TextTokens`/`SpeechCodes` for `emit`.

    The first `put` is the prompt and is dropped. After that a 1-D tensor is a text
    token per sequence and a 2-D tensor is a group of speech codes (batch size 1).
    """

    def __init__(self, emit: Callable[[object], None]):
        self._emit = emit
        self._prompt_seen = False

    def put(self, value) -> None:
        """Emit a step's tokens: a 1-D tensor as `TextTokens`, a 2-D one as `SpeechCodes`; the
        first call, the prompt, is dropped."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if value.dim() <= 1:
            self._emit(TextTokens(ids=[int(v) for v in value.reshape(-1)]))
        else:
            self._emit(SpeechCodes(codes=[int(v) for v in value[0].reshape(-1)]))

    def end(self) -> None:
        """Nothing to flush: every step was emitted by `put`."""
        pass


_DONE = object()


class GenerationThread:
    """Runs a blocking generation function in a thread and streams what it emits.

    `run(emit)` is called in the thread; everything passed to `emit` comes out of
    `events()` in order, then the function's return value is available as `result`.
    """

    def __init__(self, run: Callable[[Callable[[object], None]], object]):
        self._run = run
        self._queue: asyncio.Queue = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self.result: object = None
        self._thread = threading.Thread(target=self._main, name="generate", daemon=True)
        self._finished = asyncio.Event()
        self._thread.start()

    def _put(self, item: object) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _main(self) -> None:
        try:
            self.result = self._run(self._put)
            self._put(_DONE)
        except TurnCancelled:
            self._put(_DONE)
        except BaseException as exc:  # surfaced in the event loop, not lost in the thread
            self._put(exc)
        finally:
            self._loop.call_soon_threadsafe(self._finished.set)

    async def events(self) -> AsyncIterator[object]:
        """What the function emits, in order, until it returns or stops on `TurnCancelled`.

        Raises:
            BaseException: Whatever else the function raised, raised again here.
        """
        while True:
            item = await self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def join(self) -> None:
        """Wait for the thread to leave `generate()` (after a cancel: within one step)."""
        await self._finished.wait()


class TextDecoder:
    """Decodes streamed token ids cumulatively and returns only the new text.

    BPE tokens can split multi-byte characters, so decoding one token at a time garbles
    text; decoding the whole reply and diffing does not. Special markers are stripped.
    """

    def __init__(self, decode: Callable[[list[int]], str], strip: Iterable[str] = ()):
        self._decode = decode
        self._strip = tuple(strip)
        self._ids: list[int] = []
        self._text = ""

    def push(self, ids: list[int]) -> str:
        """Add token ids; returns the text they added (markers stripped), or "" while the last
        character is incomplete."""
        self._ids.extend(ids)
        text = self._decode(self._ids)
        for marker in self._strip:
            text = text.replace(marker, "")
        if text.endswith("\ufffd"):  # an incomplete character: wait for its next byte
            return ""
        new, self._text = text[len(self._text):], text
        return new

    @property
    def text(self) -> str:
        """All the text decoded so far, markers stripped."""
        return self._text


class WordChunker:
    """Releases text in whole words, so deltas joined by spaces rebuild the text."""

    def __init__(self) -> None:
        self._pending = ""

    def push(self, text: str) -> str:
        """Add text; returns the whole words before its last space or newline, joined by single
        spaces ("" when there is none yet)."""
        self._pending += text
        cut = max(self._pending.rfind(" "), self._pending.rfind("\n"))
        if cut < 0:
            return ""
        ready, self._pending = self._pending[:cut], self._pending[cut + 1:]
        return " ".join(ready.split())

    def flush(self) -> str:
        """Release the rest (whitespace collapsed) and empty the buffer."""
        ready, self._pending = " ".join(self._pending.split()), ""
        return ready


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples, clipped to -1..1, as int16 PCM bytes."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    """int16 PCM bytes as float32 samples in [-1, 1)."""
    return np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0


def pcm_chunks(pcm: bytes, *, sample_rate: int, chunk_s: float = 0.2) -> list[bytes]:
    """Split int16 audio into chunks of `chunk_s`, so playback and barge-in stay fine-grained."""
    step = max(2, int(sample_rate * chunk_s) * 2)
    return [pcm[i:i + step] for i in range(0, len(pcm), step)]
