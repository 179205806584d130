"""Who is speaking: speaker embeddings, the enrolled caller, and later voices.

Resemblyzer's GE2E encoder ships inside its wheel (no download). A voice print is
its embedding plus the voice's median pitch: on 8 kHz phone audio the embeddings of
two adult voices can sit as close as two utterances of one voice, while their pitch
rarely lies within a few semitones. The main caller is enrolled from their first
seconds of speech; every later stretch of speech is compared with the known voices
(cosine similarity, less a penalty for a pitch far from the voice's) and gets a
label: "caller", "speaker 2", "speaker 3", … Flows can hand the line to another
voice with `set_main()` (a caller passing the phone over).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from loguru import logger

from callwright.agent import voice_features

MAIN_LABEL = "caller"
EMBED_RATE = 16_000


@dataclass(frozen=True, kw_only=True)
class SpeakerSettings:
    """How a call's voices are labelled, and when a voice goes unanswered.

    `enabled` turns labelling on; at most `max_speakers` voices are told apart.
    """

    enabled: bool = True
    enrol_s: float = 2.0  # speech that builds the main caller's voice print
    min_s: float = 0.6  # shorter stretches keep the last speaker's label
    new_voice_s: float = 2.0  # only this much speech may introduce a new voice
    # A turn goes unanswered only when its voice is this far from the main speaker's:
    # a wrong label is cheap, ignoring the caller is not.
    unanswered_below: float = 0.78
    same_speaker: float = 0.82  # similarity above which a voice is a known one
    pitch_tolerance_st: float = 2.5  # one voice's median pitch varies this much (semitones)
    pitch_penalty: float = 0.06  # similarity lost per semitone beyond the tolerance
    # Short speech gives loose embeddings: a low score means another voice only when the
    # pitch differs too, or when it is this low.
    distinct_below: float = 0.6
    max_speakers: int = 4
    # Said by the main speaker, these make the next new voice the main speaker.
    handover_phrases: tuple[str, ...] = (
        "hand you over", "hand you to", "pass you to", "pass you over", "put my", "talk to my",
        "speak to my", "speak with my", "here's my", "here is my",
    )


_encoder = None
_encoder_lock = threading.Lock()


def load_encoder():
    """Resemblyzer's encoder, loaded once per process (its first call warms the kernels)."""
    global _encoder
    with _encoder_lock:
        if _encoder is None:
            import torch
            from resemblyzer import VoiceEncoder

            torch.set_num_threads(1)  # a 3 s print: 20 ms on one thread, 57 ms on two
            started = time.perf_counter()
            encoder = VoiceEncoder("cpu", verbose=False)
            _embedding(encoder, np.sin(np.arange(EMBED_RATE, dtype=np.float32) / 20) * 0.1)
            logger.info(f"Speaker encoder ready in {time.perf_counter() - started:.1f}s")
            _encoder = encoder
    return _encoder


def _embedding(encoder, wav: np.ndarray) -> np.ndarray:
    """`VoiceEncoder.embed_utterance`, with the mel frames from voice_features (not
    librosa's, whose module compiles numba kernels into a shared cache on import)."""
    import torch

    wav_slices, mel_slices = encoder.compute_partial_slices(len(wav), 1.3, 0.75)
    wav = np.pad(wav, (0, max(0, wav_slices[-1].stop - len(wav))))
    mel = voice_features.encoder_mel_frames(wav)
    with torch.no_grad():
        partials = encoder(torch.from_numpy(np.array([mel[s] for s in mel_slices]))).numpy()
    mean = partials.mean(axis=0)
    return mean / np.linalg.norm(mean)


@dataclass(frozen=True, kw_only=True)
class VoicePrint:
    """A stretch of speech's voice: its speaker embedding and median pitch."""

    embedding: np.ndarray  # unit length
    pitch_hz: float  # median pitch of the voiced frames; nan when none


def _median_pitch(wav: np.ndarray) -> float:
    hop, frame = 320, 1024
    f0 = voice_features.yin_pitch(
        wav, rate=EMBED_RATE, fmin=60, fmax=400, frame_length=frame, hop=hop
    )
    level = voice_features.rms(wav, frame_length=frame, hop=hop)
    voiced = f0[level > 0.3 * np.percentile(level, 95)] if len(level) else f0[:0]
    return float(np.median(voiced)) if len(voiced) else float("nan")


def embed(pcm16k: bytes) -> VoicePrint:
    """The voice print of 16 kHz int16 speech. Blocking: call in a thread."""
    wav = np.frombuffer(pcm16k, dtype=np.int16).astype(np.float32) / 32768.0
    return VoicePrint(embedding=_embedding(load_encoder(), wav), pitch_hz=_median_pitch(wav))


@dataclass(kw_only=True)
class _Voice:
    label: str
    prints: list[VoicePrint] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def centroid(self) -> np.ndarray:
        mean = np.mean([p.embedding for p in self.prints], axis=0)
        return mean / (np.linalg.norm(mean) + 1e-9)

    @property
    def pitch_hz(self) -> float:
        pitches = [p.pitch_hz for p in self.prints if not np.isnan(p.pitch_hz)]
        return float(np.median(pitches)) if pitches else float("nan")


class SpeakerTracker:
    """The voices heard on one call; one per call, shared by the slot and the barge-in gate."""

    def __init__(
        self,
        *,
        settings: SpeakerSettings = SpeakerSettings(),
        embed: Callable[[bytes], VoicePrint] = embed,
    ):
        """`embed` makes voice prints (the model host's, in a server)."""
        self.settings = settings
        self._embed = embed
        self._voices: list[_Voice] = []
        self.main = MAIN_LABEL

    def voice_print(self, pcm16k: bytes) -> VoicePrint:
        """The voice print of 16 kHz int16 speech. Blocking: call in a thread."""
        return self._embed(pcm16k)

    def too_short(self, seconds: float) -> bool:
        """Whether speech this short keeps the last label: once a voice is known, it is
        too little to tell voices apart by."""
        return seconds < self.settings.min_s and bool(self._voices)

    @property
    def enrolled(self) -> bool:
        """Whether the first voice heard has `enrol_s` of speech; until then no new voice is
        enrolled."""
        return bool(self._voices) and self._voices[0].seconds >= self.settings.enrol_s

    def labels(self) -> list[str]:
        """The labels of the voices heard so far, the first heard first."""
        return [v.label for v in self._voices]

    def set_main(self, label: str) -> None:
        """Make `label` the voice the agent answers (e.g. after a hand-over)."""
        if label not in self.labels():
            raise ValueError(f"no speaker {label!r} on this call; known: {self.labels()}")
        logger.info(f"main speaker is now {label!r} (was {self.main!r})")
        self.main = label

    def similarity(self, voice_print: VoicePrint, label: str) -> float:
        """Cosine similarity of the print to `label`'s voice, less a penalty for a pitch beyond
        `pitch_tolerance_st` from the voice's.

        Raises:
            StopIteration: No voice has that label.
        """
        return self._score(voice_print, next(v for v in self._voices if v.label == label))

    def _score(self, voice_print: VoicePrint, voice: _Voice) -> float:
        score = float(np.dot(voice.centroid, voice_print.embedding))
        beyond = self.pitch_apart(voice_print, voice.label) - self.settings.pitch_tolerance_st
        return score - self.settings.pitch_penalty * max(0.0, beyond)

    def pitch_apart(self, voice_print: VoicePrint, label: str) -> float:
        """Semitones between a print's pitch and a voice's (0 when either is unknown)."""
        voice = next(v for v in self._voices if v.label == label)
        apart = abs(12 * np.log2(voice_print.pitch_hz / voice.pitch_hz))
        return 0.0 if np.isnan(apart) else float(apart)

    def differs(self, voice_print: VoicePrint, label: str, below: float) -> bool:
        """Whether the print is not `label`'s voice (its similarity is under `below`)."""
        score = self.similarity(voice_print, label)
        pitch_differs = self.pitch_apart(voice_print, label) >= self.settings.pitch_tolerance_st
        return score < below and (pitch_differs or score < self.settings.distinct_below)

    def identify(self, voice_print: VoicePrint) -> tuple[str | None, float]:
        """The closest known voice and its similarity (None when no voice is known)."""
        if not self._voices:
            return None, 0.0
        score, label = max((self._score(voice_print, v), v.label) for v in self._voices)
        return label, score

    def assign(self, voice_print: VoicePrint, seconds: float) -> str:
        """Label a stretch of speech, enrolling voices as they appear."""
        label, score = self.identify(voice_print)
        # Until the main caller is enrolled their print is too thin to tell a new voice by.
        new = label is None or (
            self.enrolled
            and self.differs(voice_print, label, self.settings.same_speaker)
            and seconds >= self.settings.new_voice_s
            and len(self._voices) < self.settings.max_speakers
        )
        if new:
            voice = _Voice(label=f"speaker {len(self._voices) + 1}" if self._voices else MAIN_LABEL)
            self._voices.append(voice)
        else:
            voice = next(v for v in self._voices if v.label == label)
        voice.prints = (voice.prints + [voice_print])[-8:]
        voice.seconds += seconds
        return voice.label
