"""Who is speaking: speaker embeddings, the enrolled caller, and later voices.

Resemblyzer's GE2E encoder ships inside its wheel (no download). The main caller is
enrolled from their first seconds of speech; every later stretch of speech is
compared with the known voices (cosine similarity of the embeddings) and gets a
label: "caller", "speaker 2", "speaker 3", … Flows can hand the line to another
voice with `set_main()` (a caller passing the phone over).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
from loguru import logger

MAIN_LABEL = "caller"
EMBED_RATE = 16_000


@dataclass(frozen=True, kw_only=True)
class SpeakerSettings:
    enabled: bool = True
    enrol_s: float = 2.0  # speech that builds the main caller's voice print
    min_s: float = 0.6  # shorter stretches keep the last speaker's label
    new_voice_s: float = 2.0  # only this much speech may introduce a new voice
    # A turn goes unanswered only when its voice is this far from the main speaker's:
    # a wrong label is cheap, ignoring the caller is not.
    unanswered_below: float = 0.78
    same_speaker: float = 0.86  # cosine similarity above which a voice is a known one
    max_speakers: int = 4
    # Said by the main speaker, these make the next new voice the main speaker.
    handover_phrases: tuple[str, ...] = (
        "hand you over", "hand you to", "pass you to", "pass you over", "put my", "talk to my",
        "speak to my", "speak with my", "here's my", "here is my",
    )


_encoder = None
_encoder_lock = threading.Lock()


def load_encoder():
    """Resemblyzer's encoder, loaded once per process (its first call compiles kernels)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            from resemblyzer import VoiceEncoder

            started = time.perf_counter()
            logger.info("Loading the speaker encoder (resemblyzer)")
            encoder = VoiceEncoder("cpu", verbose=False)
            encoder.embed_utterance(np.zeros(EMBED_RATE, dtype=np.float32) + 1e-3)
            logger.info(f"Speaker encoder ready in {time.perf_counter() - started:.1f}s")
            _encoder = encoder
    return _encoder


def embed(pcm16k: bytes) -> np.ndarray:
    """A unit-length voice embedding of 16 kHz int16 speech. Blocking: call in a thread."""
    wav = np.frombuffer(pcm16k, dtype=np.int16).astype(np.float32) / 32768.0
    return load_encoder().embed_utterance(wav)


@dataclass(kw_only=True)
class _Voice:
    label: str
    embeddings: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def centroid(self) -> np.ndarray:
        mean = np.mean(self.embeddings, axis=0)
        return mean / (np.linalg.norm(mean) + 1e-9)


class SpeakerTracker:
    """The voices heard on one call; one per call, shared by the slot and the barge-in gate."""

    def __init__(self, *, settings: SpeakerSettings = SpeakerSettings()):
        self.settings = settings
        self._voices: list[_Voice] = []
        self.main = MAIN_LABEL

    @property
    def enrolled(self) -> bool:
        return bool(self._voices) and self._voices[0].seconds >= self.settings.enrol_s

    def labels(self) -> list[str]:
        return [v.label for v in self._voices]

    def set_main(self, label: str) -> None:
        """Make `label` the voice the agent answers (e.g. after a hand-over)."""
        if label not in self.labels():
            raise ValueError(f"no speaker {label!r} on this call; known: {self.labels()}")
        logger.info(f"main speaker is now {label!r} (was {self.main!r})")
        self.main = label

    def similarity(self, embedding: np.ndarray, label: str) -> float:
        voice = next(v for v in self._voices if v.label == label)
        return float(np.dot(voice.centroid, embedding))

    def identify(self, embedding: np.ndarray) -> tuple[str | None, float]:
        """The closest known voice and its similarity (None when no voice is known)."""
        if not self._voices:
            return None, 0.0
        scores = [(float(np.dot(v.centroid, embedding)), v.label) for v in self._voices]
        score, label = max(scores)
        return label, score

    def assign(self, embedding: np.ndarray, seconds: float) -> str:
        """Label a stretch of speech, enrolling voices as they appear."""
        label, score = self.identify(embedding)
        new = label is None or (
            score < self.settings.same_speaker
            and seconds >= self.settings.new_voice_s
            and len(self._voices) < self.settings.max_speakers
        )
        if new:
            voice = _Voice(label=f"speaker {len(self._voices) + 1}" if self._voices else MAIN_LABEL)
            self._voices.append(voice)
        else:
            voice = next(v for v in self._voices if v.label == label)
        voice.embeddings = (voice.embeddings + [embedding])[-8:]
        voice.seconds += seconds
        return voice.label
