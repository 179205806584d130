"""Silero VAD and Smart Turn on one ONNX session each per process, not one per call.

pipecat's analyzers build their own `InferenceSession` in `__init__`. Per call that
cost ~20 ms (Silero) and ~30 ms plus ~11 MB (Smart Turn, whose graph is optimised on
load) on an idle machine, and 60+ ms under load, with the event loop blocked — every
other call's audio stalls while a new call starts. The sessions hold no call state
(Silero's recurrent state lives in `SileroOnnxModel`, Smart Turn's audio in the
analyzer), and onnxruntime allows concurrent `run()` calls on one session, so calls
share them. Both subclasses skip the parent `__init__` only to avoid its session.
"""

from __future__ import annotations

import threading
from pathlib import Path

import onnxruntime as ort
from pipecat.audio.turn.smart_turn.base_smart_turn import BaseSmartTurn, SmartTurnParams
from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3
from pipecat.audio.vad.silero import SileroOnnxModel, SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADAnalyzer, VADParams

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


class SharedSileroVAD(SileroVADAnalyzer):
    def __init__(self, *, model: Path, params: VADParams | None = None):
        VADAnalyzer.__init__(self, params=params)
        self._model = _SileroState(shared_session(model))
        self._windows_since_reset = 0
        self._low_confidence_windows = 0


class SharedSmartTurn(LocalSmartTurnAnalyzerV3):
    def __init__(self, *, model: Path, params: SmartTurnParams | None = None):
        BaseSmartTurn.__init__(self, params=params)
        self._log_data = False
        self._session = shared_session(model, optimize=True)


def warm(*, silero: Path, smart_turn: Path) -> None:
    """Build both sessions now (at startup, off the event loop), not on the first call."""
    shared_session(silero)
    shared_session(smart_turn, optimize=True)
