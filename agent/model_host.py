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
get `ModelProcessDied` and the slot's fallback covers their turn. Model processes say
what they are loading, so one that dies at start is named with that model and how it
died; loading is tried once more before `ModelLoadFailed`.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.queues import SimpleQueue
from typing import TYPE_CHECKING, Any

import numpy as np
from loguru import logger

from callwright.agent.models import ModelPaths

if TYPE_CHECKING:
    from callwright.agent.speakers import VoicePrint

LEADING_SILENCE_LEVEL = 500  # int16 amplitude below which Piper's lead-in counts as silence
PROCESS_NICENESS = 5  # model processes yield the CPU to the audio path
LOAD_ATTEMPTS = 2


class ModelProcessDied(RuntimeError):
    """A model process exited (killed, out of memory) while a call waited on it."""


class ModelLoadFailed(RuntimeError):
    """Model processes died while loading, on every attempt; the message says which model
    and how."""


class _Models:
    """The loaded models of one process: Whisper, Piper, Smart Turn, the speaker encoder."""

    def __init__(
        self,
        *,
        paths: ModelPaths,
        beam_size: int,
        voice_prints: bool,
        step: Callable[[str], None] = lambda doing: logger.info(doing[:1].upper() + doing[1:]),
    ):
        """`step` hears what is about to be done ("loading Whisper from …"), so that a
        crash in it can be named."""
        started = time.perf_counter()
        step(f"loading Whisper from {paths.whisper_dir}")
        from callwright.agent.asr import WhisperASR

        self._whisper = WhisperASR(model_dir=paths.whisper_dir, beam_size=beam_size)
        step(f"loading Piper voice {paths.piper_voice.name}")
        from piper import PiperVoice

        self._voice = PiperVoice.load(paths.piper_voice)
        step(f"loading Smart Turn from {paths.smart_turn}")
        from callwright.agent.analyzers import SmartTurnModel

        self._smart_turn = SmartTurnModel(paths.smart_turn)
        if voice_prints:
            step("loading the speaker encoder (resemblyzer)")
            from callwright.agent import speakers

            speakers.load_encoder()
        # One short synthesis, transcription and prediction warm the kernels, so the
        # first caller does not pay for them.
        step("warming up: a first synthesis, transcription and prediction")
        audio, _ = self.synthesize("Ready.")
        self.transcribe(audio[: 16000 * 2])
        self.end_of_turn(np.zeros(16000, np.float32), 16000)
        logger.info(f"Embedded models ready in {time.perf_counter() - started:.1f}s")
    def transcribe(self, audio16k: bytes) -> str:
        return self._whisper.transcribe(audio16k)

    def synthesize(self, text: str, length_scale: float = 1.0) -> tuple[bytes, int]:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=None if length_scale == 1.0 else length_scale)
        chunks = list(self._voice.synthesize(text, syn_config=config))
        audio = np.frombuffer(b"".join(c.audio_int16_bytes for c in chunks), dtype=np.int16)
        rate = chunks[0].sample_rate
        # Piper opens each sentence with ~50 ms of silence; the caller should not wait for it.
        onset = int(np.argmax(np.abs(audio) > LEADING_SILENCE_LEVEL))
        start = max(0, onset - rate // 100)
        return audio[start:].tobytes(), rate

    def end_of_turn(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        return self._smart_turn.predict(audio, sample_rate)

    def voice_print(self, audio16k: bytes) -> VoicePrint:
        from callwright.agent import speakers

        return speakers.embed(audio16k)


_process_models: _Models | None = None  # in a model process
_READY = "ready"


def _start_process(
    models: dict[str, Any], setup: Callable[[], None] | None, progress: SimpleQueue
) -> None:
    global _process_models
    faulthandler.enable()  # a crash in native code prints its Python stack to the log
    doing = "running its setup"

    def step(next_step: str) -> None:
        nonlocal doing
        doing = next_step
        logger.info(doing[:1].upper() + doing[1:])
        progress.put((os.getpid(), doing, None))  # written at once: there before any crash

    try:
        if setup is not None:
            setup()
        os.nice(PROCESS_NICENESS)
        threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
        _process_models = _Models(**models, step=step)
    except BaseException as exc:
        progress.put((os.getpid(), doing, repr(exc)))
        raise
    progress.put((os.getpid(), _READY, None))


def _exit_with(parent: int) -> None:
    """A server killed outright cannot stop its model processes: they stop themselves."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def _run(method: str, *args: Any) -> Any:
    return getattr(_process_models, method)(*args)


def _exit_code(process: multiprocessing.process.BaseProcess, timeout_s: float = 5.0) -> int | None:
    """The process's exit code once it has exited. The pool's own thread reaps its processes
    too, and a `join` racing it sees no code for a moment: ask again until it is known."""
    deadline = time.monotonic() + timeout_s
    while (code := process.exitcode) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return code


class _ProcessPool:
    """Model processes, all started at once, that say what they are loading: when one
    dies, `cause()` names what it was loading and how it died."""

    def __init__(self, *, processes: int, models: dict[str, Any], setup: Callable | None):
        context = multiprocessing.get_context("spawn")
        self._progress = context.SimpleQueue()
        self._stages: dict[int, tuple[str, str | None]] = {}
        self.executor = ProcessPoolExecutor(
            max_workers=processes,
            # Not fork: the server's threads (onnxruntime's, the loop's) do not survive it.
            mp_context=context,
            initializer=_start_process,
            initargs=(models, setup, self._progress),
        )
        # The first calls start every process; each loads the models before answering.
        self._started = [self.executor.submit(os.getpid) for _ in range(processes)]
        self._members = dict(self.executor._processes)  # kept for their exit codes

    def wait_loaded(self) -> None:
        """Block until every process has loaded; `BrokenProcessPool` if one died."""
        for future in self._started:
            future.result()

    def cause(self) -> str:
        """One line: which model process died, loading what, and how."""
        while not self._progress.empty():
            pid, doing, error = self._progress.get()
            self._stages[pid] = (doing, error)
        causes = []
        for pid, process in self._members.items():
            doing, error = self._stages.get(pid, ("importing its Python modules", None))
            code = _exit_code(process)
            if error is not None:
                how = "failed"
            elif code is None:
                how = "died"
            elif code < 0:
                how = f"was killed by {signal.Signals(-code).name}"
            else:
                how = f"exited with code {code}"
            during = "after loading" if doing == _READY else f"while {doing}"
            line = f"Model process {pid} {how} {during}" + (f": {error}" if error else "")
            # Once one process has died the pool ends the others with SIGTERM: those come last.
            causes.append((error is None and code == -signal.SIGTERM, line))
        return min(causes)[1]

    def shutdown(self, *, wait: bool = False) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=True)


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
        self._pool: _ProcessPool | None = None
        self._lock = threading.Lock()
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()  # _call runs in many threads at once

    @property
    def loaded(self) -> bool:
        """Whether `load()` has succeeded and `close()` has not been called since."""
        return self._local is not None or self._pool is not None

    @property
    def in_flight(self) -> int:
        """Requests made (by any thread) and not yet answered, running or waiting."""
        return self._in_flight

    @property
    def queued(self) -> int:
        """Requests waiting for a model process: those in flight beyond one per process.

        With `processes=0` each request runs at once in its caller's thread: none wait here.
        """
        return max(0, self._in_flight - self._processes) if self._processes else 0

    def load(self) -> None:
        """Load the models (in every model process); idempotent. Blocking.

        Raises:
            ModelLoadFailed: a model process died while loading, on each of two attempts.
        """
        with self._lock:
            if self.loaded:
                return
            if self._processes == 0:
                self._local = _Models(**self._models)
                return
            started = time.perf_counter()
            for attempt in range(1, LOAD_ATTEMPTS + 1):
                logger.info(f"Starting {self._processes} model process(es)")
                pool = self._new_pool()
                try:
                    pool.wait_loaded()
                except BrokenProcessPool:
                    cause = pool.cause()
                    pool.shutdown()
                    if attempt == LOAD_ATTEMPTS:
                        raise ModelLoadFailed(f"{cause} (gave up after {attempt} tries)") from None
                    logger.error(f"{cause}; starting the model processes again")
                    continue
                self._pool = pool
                break
            logger.info(f"Model processes ready in {time.perf_counter() - started:.1f}s")

    def _new_pool(self) -> _ProcessPool:
        return _ProcessPool(
            processes=self._processes, models=self._models, setup=self._process_setup
        )

    def _call(self, method: str, *args: Any) -> Any:
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            return self._run(method, *args)
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def _run(self, method: str, *args: Any) -> Any:
        if self._local is not None:
            return getattr(self._local, method)(*args)
        pool = self._pool
        if pool is None:
            raise RuntimeError("ModelHost.load() was not called")
        try:
            return pool.executor.submit(_run, method, *args).result()
        except BrokenProcessPool as exc:
            self._replace(pool)
            raise ModelProcessDied(f"a model process died during {method}") from exc

    def _replace(self, broken: _ProcessPool) -> None:
        with self._lock:
            if self._pool is not broken:
                return  # another call replaced it already
            logger.error(f"{broken.cause()}; starting new model processes")
            broken.shutdown()
            self._pool = self._new_pool()  # loading starts now, not at the next turn

    def transcribe(self, audio16k: bytes) -> str:
        """The words in one caller turn (16 kHz int16 mono)."""
        return self._call("transcribe", audio16k)

    def synthesize(self, text: str, *, length_scale: float = 1.0) -> tuple[bytes, int]:
        """Piper's int16 mono audio for `text`, and its sample rate; `length_scale` above 1
        speaks more slowly (a calmer delivery for an upset caller)."""
        return self._call("synthesize", text, length_scale)

    def end_of_turn(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """Smart Turn v3's verdict on float32 audio: {"prediction": 0|1, "probability"}."""
        return self._call("end_of_turn", audio, sample_rate)

    def voice_print(self, audio16k: bytes) -> VoicePrint:
        """The speaker's voice print of 16 kHz int16 speech."""
        return self._call("voice_print", audio16k)

    def process_ids(self) -> list[int]:
        """The model processes' pids (none when the models run in this process)."""
        pool = self._pool
        return [] if pool is None else list(pool.executor._processes)

    def close(self) -> None:
        """Shut the model processes down (waiting for them) or drop the in-process models;
        `load()` may be called again."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            self._local = None
