"""The embedded models' per-turn work, in model processes beside the event loop's.

Whisper's features, Smart Turn's mel spectrogram, the voice prints' pitch tracking and
Piper's phonemes are numpy and Python. Run in threads of the server they hold the GIL
for stretches of milliseconds, and every call's audio waits behind them: at 17+ calls
on two cores the callers heard holes while a third of the CPU sat idle. In their own
processes (`processes` >= 1, the default) the event loop's process keeps its GIL to
itself, and those processes run at a lower priority, so under load the model work
waits rather than the audio. `processes=0` runs everything in the calling thread (for
libraries and tests that need no server).

Every method blocks: call it from a thread (`asyncio.to_thread`), as pipecat's Smart
Turn does. A model process that dies is replaced; the calls that were waiting on it
get `ModelProcessDied` and the slot's fallback covers their turn.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger

from agent.models import ModelPaths

if TYPE_CHECKING:
    from agent.speakers import VoicePrint

LEADING_SILENCE_LEVEL = 500  # int16 amplitude below which Piper's lead-in counts as silence
PROCESS_NICENESS = 5  # model processes yield the CPU to the audio path


class ModelProcessDied(RuntimeError):
    """A model process exited (killed, out of memory) while a call waited on it."""


class _Models:
    """The loaded models of one process: Whisper, Piper, Smart Turn, the speaker encoder."""

    def __init__(self, *, paths: ModelPaths, beam_size: int, voice_prints: bool):
        from piper import PiperVoice

        from agent import speakers
        from agent.analyzers import SmartTurnModel
        from agent.asr import WhisperASR

        started = time.perf_counter()
        logger.info(f"Loading Whisper from {paths.whisper_dir}")
        self._whisper = WhisperASR(model_dir=paths.whisper_dir, beam_size=beam_size)
        logger.info(f"Loading Piper voice {paths.piper_voice.name}")
        self._voice = PiperVoice.load(paths.piper_voice)
        self._smart_turn = SmartTurnModel(paths.smart_turn)
        if voice_prints:
            speakers.load_encoder()
        # One short synthesis, transcription and prediction warm the kernels, so the
        # first caller does not pay for them.
        audio, _ = self.synthesize("Ready.")
        self.transcribe(audio[: 16000 * 2])
        self.end_of_turn(np.zeros(16000, np.float32), 16000)
        logger.info(f"Embedded models ready in {time.perf_counter() - started:.1f}s")

    def transcribe(self, audio16k: bytes) -> str:
        return self._whisper.transcribe(audio16k)

    def synthesize(self, text: str) -> tuple[bytes, int]:
        chunks = list(self._voice.synthesize(text))
        audio = np.frombuffer(b"".join(c.audio_int16_bytes for c in chunks), dtype=np.int16)
        rate = chunks[0].sample_rate
        # Piper opens each sentence with ~50 ms of silence; the caller should not wait for it.
        onset = int(np.argmax(np.abs(audio) > LEADING_SILENCE_LEVEL))
        start = max(0, onset - rate // 100)
        return audio[start:].tobytes(), rate

    def end_of_turn(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        return self._smart_turn.predict(audio, sample_rate)

    def voice_print(self, audio16k: bytes) -> VoicePrint:
        from agent import speakers

        return speakers.embed(audio16k)


_process_models: _Models | None = None  # in a model process


def _start_process(models: dict[str, Any], setup: Callable[[], None] | None) -> None:
    global _process_models
    if setup is not None:
        setup()
    os.nice(PROCESS_NICENESS)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    _process_models = _Models(**models)


def _exit_with(parent: int) -> None:
    """A server killed outright cannot stop its model processes: they stop themselves."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _run(method: str, *args: Any) -> Any:
    return getattr(_process_models, method)(*args)


class ModelHost:
    """Runs the embedded models for every call of a server, in `processes` processes."""

    def __init__(
        self,
        *,
        paths: ModelPaths,
        processes: int = 1,
        beam_size: int = 5,
        voice_prints: bool = True,
        process_setup: Callable[[], None] | None = None,
    ):
        """`process_setup` (picklable) runs first in each model process: logging, say."""
        self.paths = paths
        self._processes = processes
        self._models = {"paths": paths, "beam_size": beam_size, "voice_prints": voice_prints}
        self._process_setup = process_setup
        self._local: _Models | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._local is not None or self._pool is not None

    def load(self) -> None:
        """Load the models (in every model process); idempotent. Blocking."""
        with self._lock:
            if self.loaded:
                return
            if self._processes == 0:
                self._local = _Models(**self._models)
                return
            started = time.perf_counter()
            logger.info(f"Starting {self._processes} model process(es)")
            pool = self._new_pool()
            # Submitted together, the calls start every process (each loads the models).
            for future in [pool.submit(os.getpid) for _ in range(self._processes)]:
                future.result()
            self._pool = pool
            logger.info(f"Model processes ready in {time.perf_counter() - started:.1f}s")

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            # Not fork: the server's threads (onnxruntime's, the loop's) do not survive it.
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_process,
            initargs=(self._models, self._process_setup),
        )

    def _call(self, method: str, *args: Any) -> Any:
        if self._local is not None:
            return getattr(self._local, method)(*args)
        pool = self._pool
        if pool is None:
            raise RuntimeError("ModelHost.load() was not called")
        try:
            return pool.submit(_run, method, *args).result()
        except BrokenProcessPool as exc:
            self._replace(pool)
            raise ModelProcessDied(f"a model process died during {method}") from exc

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is not broken:
                return  # another call replaced it already
            logger.error("A model process died; starting new model processes")
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            for _ in range(self._processes):
                self._pool.submit(os.getpid)  # start loading now, not at the next turn

    def transcribe(self, audio16k: bytes) -> str:
        """The words in one caller turn (16 kHz int16 mono)."""
        return self._call("transcribe", audio16k)

    def synthesize(self, text: str) -> tuple[bytes, int]:
        """Piper's int16 mono audio for `text`, and its sample rate."""
        return self._call("synthesize", text)

    def end_of_turn(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """Smart Turn v3's verdict on float32 audio: {"prediction": 0|1, "probability"}."""
        return self._call("end_of_turn", audio, sample_rate)

    def voice_print(self, audio16k: bytes) -> VoicePrint:
        """The speaker's voice print of 16 kHz int16 speech."""
        return self._call("voice_print", audio16k)

    def process_ids(self) -> list[int]:
        """The model processes' pids (none when the models run in this process)."""
        pool = self._pool
        return [] if pool is None else list(pool._processes)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
            self._local = None
