"""callwright: phone agents on streaming audio LLMs. This package wires the parts together."""

import os

# Calls run side by side, so every model run (Whisper, Smart Turn, voice prints) gets one
# thread. Measured on 2 cores, a 3 s turn: Whisper 127 ms wall / 224 ms CPU with two
# threads, 89 / 89 with one; a voice print 57 / 111 against 20 / 20. Set before numpy,
# torch and onnxruntime start their thread pools; a user's own setting wins.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
# Models come from packages and local paths only: never ask a hub (closed networks).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# onnxruntime (Silero, Smart Turn, Piper) otherwise queues telemetry for upload in a SQLite
# file under ~/.cache/Microsoft that every process of every server writes to.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
