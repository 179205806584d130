"""Silero VAD and Smart Turn on one ONNX session each per process, not one per call.

pipecat's analyzers build their own `InferenceSession` in `__init__`. Per call that
cost ~20 ms (Silero) and ~30 ms plus ~11 MB (Smart Turn, whose graph is optimised on
load) on an idle machine, and 60+ ms under load, with the event loop blocked — every
other call's audio stalls while a new call starts. The sessions hold no call state
(Silero's recurrent state lives in `SileroOnnxModel`, Smart Turn's audio in the
analyzer), and onnxruntime allows concurrent `run()` calls on one session, so calls
share them. The subclasses skip the parent `__init__` only to avoid its session. Smart
Turn's model runs in the model host's processes; each call keeps pipecat's state machine.

Silero also scores every call's windows together (`SileroBatcher`): pipecat hands each
20 ms frame of each call to a thread of that call's own, and with many calls those
threads fight the event loop for the GIL, which is what put holes in callers' audio
under load (one window costs ~0.09 ms of ONNX alone; in a batch of 25, ~0.02 ms each).
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import onnxruntime as ort
from loguru import logger
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams, VADState

if TYPE_CHECKING:
    from callwright.agent.model_host import ModelHost

_sessions: dict[Path, ort.InferenceSession] = {}
_lock = threading.Lock()


def shared_session(path: Path, *, optimize: bool = False) -> ort.InferenceSession:
    """One single-threaded CPU session per model file, built on first use."""
    with _lock:
        if path not in _sessions:
            options = ort.SessionOptions()
            options.inter_op_num_threads = 1
            options.intra_op_num_threads = 1
            if optimize:
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            _sessions[path] = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        return _sessions[path]


class _SileroState(SileroOnnxModel):
    """A call's Silero state (recurrent state, context) on the shared session."""

    def __init__(self, session: ort.InferenceSession):
        self.session = session
        self.sample_rates = [8000, 16000]
        self.reset_states()

    def context(self, size: int) -> np.ndarray:
        return self._context[0] if self._context.shape[1] == size else np.zeros(size, np.float32)


class _Window(NamedTuple):
    model: _SileroState  # the call's recurrent state
    samples: np.ndarray  # float32
    rate: int
    score: asyncio.Future[float]


class SileroBatcher:
    """Scores the windows that calls have ready in one ONNX run, on one thread.

    Windows that arrive while a run is under way wait for the next one, so a batch grows
    with the load and an idle server scores a window at once.
    """

    def __init__(self, session: ort.InferenceSession):
        self._session = session
        self._waiting: list[_Window] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="silero")
        self._drain_task: asyncio.Task | None = None
        self.largest_batch = 0

    async def score(self, model: _SileroState, window: np.ndarray, sample_rate: int) -> float:
        """Speech confidence of `window` (float32 samples), advancing `model`'s state."""
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Window(model, window, sample_rate, future))
        if self._drain_task is None or self._drain_task.done():
            self._drain_task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, self._waiting = self._waiting, []
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                scores = await loop.run_in_executor(self._executor, self._run, batch)
            except Exception as exc:  # a bad window must not stall every call's VAD
                logger.error(f"Silero VAD failed on a batch of {len(batch)}: {exc!r}")
                scores = [0.0] * len(batch)
            for window, score in zip(batch, scores, strict=True):
                if not window.score.done():
                    window.score.set_result(score)

    def _run(self, batch: list[_Window]) -> list[float]:
        scores = [0.0] * len(batch)
        for rate in {w.rate for w in batch}:
            rows = [i for i, w in enumerate(batch) if w.rate == rate]
            models = [batch[i].model for i in rows]
            size = 64 if rate == 16000 else 32  # the context Silero prepends, as pipecat's
            x = np.stack([np.concatenate((batch[i].model.context(size), batch[i].samples))
                          for i in rows])
            state = np.concatenate([m._state for m in models], axis=1)
            out, state = self._session.run(
                None, {"input": x, "state": state, "sr": np.array(rate, dtype=np.int64)}
            )
            for j, (i, m) in enumerate(zip(rows, models, strict=True)):
                m._state = state[:, j : j + 1]
                m._context = x[j : j + 1, -size:]
                scores[i] = float(out[j, 0])
        return scores


_batchers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[ort.InferenceSession, SileroBatcher]
] = weakref.WeakKeyDictionary()


def silero_batcher(session: ort.InferenceSession) -> SileroBatcher:
    """The running loop's batcher (the server has one loop; tests may have several)."""
    per_session = _batchers.setdefault(asyncio.get_running_loop(), {})
    if session not in per_session:
        per_session[session] = SileroBatcher(session)
    return per_session[session]


class SharedSileroVAD(SileroVADAnalyzer):
    """pipecat's Silero analyzer, its state machine run on the loop, its scores batched."""

    def __init__(self, *, model: Path, params: VADParams | None = None):
        VADAnalyzer.__init__(self, params=params)
        self._model = _SileroState(shared_session(model))
        self._windows_since_reset = 0
        self._low_confidence_windows = 0
        self._score = 0.0  # the batcher's score for the window being analysed

    async def analyze_audio(self, buffer: bytes) -> VADState:
        """Score each complete window of `buffer` (after what is buffered) in the shared batch,
        then run pipecat's state machine on it; returns the VAD state after all of `buffer`."""
        step = self._vad_frames_num_bytes
        while len(self._vad_buffer) + len(buffer) >= step:
            take = step - len(self._vad_buffer)
            pcm = np.frombuffer(self._vad_buffer + buffer[:take], dtype=np.int16)
            self._score = await silero_batcher(self._model.session).score(
                self._model, pcm.astype(np.float32) / 32768.0, self.sample_rate
            )
            self._run_analyzer(buffer[:take])  # completes the window: uses self._score
            buffer = buffer[take:]
        return self._run_analyzer(buffer)

    def voice_confidence(self, buffer: bytes) -> float:
        """The batcher's score for the window being analysed (`buffer` is not read again); may
        reset the model's state, by pipecat's rules."""
        score = self._score
        self._maybe_reset_model(score)
        return score


class SmartTurnModel(LocalSmartTurnAnalyzerV3):
    """pipecat's Smart Turn v3 inference without a call's turn state: what the model
    host runs (agent/model_host.py), on the shared session."""

    def __init__(self, model: Path):
        BaseSmartTurn.__init__(self)
        self._log_data = False
        self._session = shared_session(model, optimize=True)

    def predict(self, audio: np.ndarray, sample_rate: int) -> dict[str, Any]:
        """Smart Turn v3's end-of-turn verdict on float32 `audio` at `sample_rate`: pipecat's
        result dict (`prediction` 1 for complete, 0 for not, and its `probability`)."""
        self._sample_rate = sample_rate
        return self._predict_endpoint(audio)


class HostedSmartTurn(BaseSmartTurn):
    """pipecat's Smart Turn state machine for one call; the model runs in the model host."""

    def __init__(self, *, host: ModelHost, params: SmartTurnParams | None = None):
        super().__init__(params=params)
        self._host = host

    def _predict_endpoint(self, audio_array: np.ndarray) -> dict[str, Any]:
        try:
            return self._host.end_of_turn(audio_array, self.sample_rate)
        except Exception as exc:  # the turn then ends on silence alone (turn_stop_secs)
            logger.error(f"Smart Turn failed: {exc!r}")
            return {"prediction": 0, "probability": 0.0}


def warm(*, silero: Path) -> None:
    """Build Silero's session now (at startup, off the event loop), not on the first call."""
    shared_session(silero)
