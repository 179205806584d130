"""Which backends a model worker can host, built from `callwright model-server` options."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from agent.backend import AudioLLM

BACKENDS = ("qwen-omni", "funaudiochat", "embedded")


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    model_path: Path | None = None
    device: str = "cpu"
    dtype: str = "auto"
    max_text_tokens: int = 256
    max_speech_codes: int = 2048
    # Fun-Audio-Chat: its source checkout, model, CosyVoice3 and speaker vector.
    fac_source_dir: Path | None = None
    fac_cosyvoice_dir: Path | None = None
    fac_speaker_path: Path | None = None


def create_backend(name: str, options: WorkerOptions) -> AudioLLM:
    if name == "qwen-omni":
        from agent.backends.qwen_omni import QwenOmniBackend

        if options.model_path is None:
            raise ValueError("qwen-omni needs --model-path (a local Qwen2.5-Omni checkpoint)")
        return QwenOmniBackend(
            model_path=options.model_path, device=options.device, dtype=options.dtype,
            max_text_tokens=options.max_text_tokens, max_speech_codes=options.max_speech_codes,
        )
    if name == "funaudiochat":
        from agent.backends.funaudiochat import FunAudioChatBackend, FunAudioChatPaths

        paths = FunAudioChatPaths.checked(
            source_dir=options.fac_source_dir, model_dir=options.model_path,
            cosyvoice_dir=options.fac_cosyvoice_dir, speaker_path=options.fac_speaker_path,
        )
        return FunAudioChatBackend(
            paths=paths, device=options.device, max_text_tokens=options.max_text_tokens,
        )
    if name == "embedded":
        from agent import models
        from agent.cascade import EmbeddedCascade
        from agent.model_host import ModelHost
        from agent.policy import Receptionist

        return EmbeddedCascade(
            host=ModelHost(paths=models.resolve(), processes=0), policy_factory=Receptionist
        )
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")


def worker_secret(secret_file: Path | None) -> str | None:
    """The shared secret: from `secret_file` if given, else `MODEL_WORKER_SECRET`, else None."""
    from agent.workers import protocol as p

    if secret_file is not None:
        return p.check_secret(secret_file.read_text())
    if secret := os.environ.get(p.SECRET_ENV):
        return p.check_secret(secret)
    return None


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server TLS context from a PEM certificate (chain) and key; None without them."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def run_worker(backend: AudioLLM, *, host: str, port: int, max_sessions: int,
                     secret: str | None = None, tls: ssl.SSLContext | None = None) -> None:
    """Serve until SIGINT/SIGTERM; sessions in progress are closed on the way out."""
    from agent.workers.server import ModelWorker

    server = await ModelWorker(backend=backend, max_sessions=max_sessions,
                               secret=secret).serve(host=host, port=port, tls=tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("model worker stopping")
    server.close()
    await server.wait_closed()
    await backend.close()
