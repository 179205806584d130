"""callwright: phone agents on streaming audio LLMs, served from Python or `callwright serve`.

Everything lives under this one package (`callwright.agent`, `callwright.telephony`,
`callwright.flows`, `callwright.memory`, `callwright.admin`), so the process settings below
apply before any of it loads. The names in `__all__` are the public API::

    import callwright

    callwright.serve(callwright.Settings(default_flow="dental"))
"""

import os

# Calls run side by side, so every model run (Whisper, Smart Turn, voice prints) gets one
# thread. Measured on 2 cores, a 3 s turn: Whisper 127 ms wall / 224 ms CPU with two
# threads, 89 / 89 with one; a voice print 57 / 111 against 20 / 20. Set before numpy,
# torch and onnxruntime start their thread pools; a user's own setting wins.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
# Models come from packages and local paths only: never ask a hub (closed networks).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# No progress bars (transformers' "Loading weights") in a server's log: one line of JSON
# per record is what LOG_FORMAT=json promises.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# onnxruntime (Silero, Smart Turn, Piper) otherwise queues telemetry for upload in a SQLite
# file under ~/.cache/Microsoft that every process of every server writes to.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# The public API, imported on first use: `import callwright.memory` (say) must not load the
# models' libraries, and the settings above must come before any of them.
_EXPORTS = {
    "Settings": "callwright.settings",
    "create_app": "callwright.app",
    "create_server": "callwright.server",
    "serve": "callwright.server",
    "PipelineStep": "callwright.agent.pipeline",
    "register_backend": "callwright.agent.backends.registry",
    "backend_names": "callwright.agent.backends.registry",
    "BackendContext": "callwright.agent.backends.registry",
    "AudioLLM": "callwright.agent.backend",
    "AudioLLMSession": "callwright.agent.backend",
    "Capabilities": "callwright.agent.backend",
    "TurnRequest": "callwright.agent.backend",
    "CallerText": "callwright.agent.backend",
    "TextDelta": "callwright.agent.backend",
    "AudioChunk": "callwright.agent.backend",
    "EndOfTurn": "callwright.agent.backend",
    "Event": "callwright.agent.backend",
    "CallerTurnFrame": "callwright.agent.frames",
    "AgentTurnFrame": "callwright.agent.frames",
    "load_flow": "callwright.flows.loader",
    "FlowRun": "callwright.flows.engine",
    "verify_signature": "callwright.webhooks",  # for receivers of the business webhooks
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'callwright' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
