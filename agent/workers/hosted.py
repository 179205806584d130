"""Running a model worker: its shared secret, its TLS context and its serve loop."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from pathlib import Path

from loguru import logger

from callwright.agent.backend import AudioLLM


def worker_secret(secret_file: Path | None) -> str | None:
    """The shared secret: from `secret_file` if given, else `MODEL_WORKER_SECRET`, else None."""
    from callwright.agent.workers import protocol as p

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
    from callwright.agent.workers.server import ModelWorker

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
