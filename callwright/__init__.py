"""callwright: phone agents on streaming audio LLMs. This package wires the parts together."""

import os

# Calls run side by side, so every model run (Whisper, Smart Turn, voice prints) gets one
# thread. Measured on 2 cores, a 3 s turn: Whisper 127 ms wall / 224 ms CPU with two
# threads, 89 / 89 with one; a voice print 57 / 111 against 20 / 20. Set before numpy,
# torch and onnxruntime start their thread pools; a user's own setting wins.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
