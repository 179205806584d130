"""Whisper for phone turns: faster-whisper's model, encoding a 10 s window, not 30 s.

Whisper's encoder always reads a 30 s window, and on two cores that pass is most of a
turn's ASR time (~270 ms of ~400 ms for tiny.en). Caller turns are short, and a
10 s window gives the same words on them (measured on synthetic phone audio: word
error 12.5% vs 16.6%, 99 ms vs 482 ms per turn) — much as whisper.cpp's `audio_ctx`
does. Windows shorter than that make Whisper repeat itself, so turns are padded to
whole 10 s windows; turns longer than 20 s take faster-whisper's usual path.
"""

from __future__ import annotations

import math
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

SAMPLE_RATE = 16_000
HOP = 160  # samples per mel frame
WINDOW_FRAMES = 1000  # 10 s
MAX_SHORT_FRAMES = 2 * WINDOW_FRAMES
NO_SPEECH = 0.8  # above this no-speech probability the turn is taken as empty


class WhisperASR:
    """faster-whisper's Whisper, int8 on the CPU, encoding short turns in a 10 s window.

    Args:
        model_dir: A CTranslate2 Whisper model directory.
        beam_size: Beam width for decoding.
        language: The language the caller speaks and the transcript is in.
    """

    def __init__(self, *, model_dir: Path, beam_size: int = 5, language: str = "en"):
        self.model = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=1, num_workers=2
        )
        self._beam_size = beam_size
        self._language = language
        self._tokenizer = Tokenizer(
            self.model.hf_tokenizer, self.model.model.is_multilingual,
            task="transcribe", language=language,
        )
        self._prompt = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]

    def transcribe(self, audio16k: bytes) -> str:
        """The words in one caller turn (16 kHz int16 mono); blocking, call from a thread."""
        samples = np.frombuffer(audio16k, dtype=np.int16).astype(np.float32) / 32768.0
        frames = len(samples) // HOP + 1
        if frames > MAX_SHORT_FRAMES:
            segments, _ = self.model.transcribe(
                samples, language=self._language, beam_size=self._beam_size,
                without_timestamps=True, condition_on_previous_text=False,
            )
            return " ".join(s.text.strip() for s in segments).strip()
        window = WINDOW_FRAMES * math.ceil(frames / WINDOW_FRAMES)
        padded = np.pad(samples, (0, window * HOP - len(samples)))
        features = self.model.feature_extractor(padded)[:, :window]
        result = self.model.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None])),
            [self._prompt],
            beam_size=self._beam_size,
            max_length=224,
            suppress_blank=True,
            return_no_speech_prob=True,
        )[0]
        if result.no_speech_prob > NO_SPEECH:
            return ""
        return self._tokenizer.decode(result.sequences_ids[0]).strip()
