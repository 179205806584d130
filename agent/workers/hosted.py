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
                     secret: str | None = None, tls: ssl.SSLContext | None = None,
                     advertise: str = "", redis_url: str = "", drain_s: float = 300.0) -> None:
    """Serve until SIGINT/SIGTERM, then drain: take no new sessions and let the open ones
    finish for up to `drain_s` (a second signal stops at once).

    Args:
        backend: The model to host.
        host: Interface to bind.
        port: Port to bind.
        max_sessions: Conversations at a time.
        secret: The shared secret sessions must present.
        tls: Server TLS context: `wss://`.
        advertise: The URL call servers reach this worker at; with `redis_url` the worker
            joins their pools there and leaves them when it drains.
        redis_url: The call servers' Redis.
        drain_s: Longest wait for open sessions after the stop signal.

    Raises:
        ValueError: `advertise` without `redis_url` or without a secret.
    """
    from callwright.agent.workers.registry import WorkerRegistry
    from callwright.agent.workers.server import ModelWorker

    registry = None
    if advertise:
        if not redis_url or secret is None:
            raise ValueError("--advertise needs REDIS_URL and the shared secret (which signs "
                             "the entry the call servers trust)")
        registry = WorkerRegistry(redis_url=redis_url, secret=secret)
    worker = ModelWorker(backend=backend, max_sessions=max_sessions, secret=secret)
    server = await worker.serve(host=host, port=port, tls=tls)
    advertising = None
    if registry is not None:
        advertising = asyncio.create_task(registry.keep_advertised(advertise))
        logger.info(f"advertising {advertise} to the call servers' pools in Redis")
    signals = asyncio.Queue()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    await signals.get()
    if registry is not None:
        advertising.cancel()
        await registry.withdraw(advertise)
    drained = asyncio.create_task(worker.drain(timeout_s=drain_s))
    second = asyncio.create_task(signals.get())
    await asyncio.wait({drained, second}, return_when=asyncio.FIRST_COMPLETED)
    second.cancel()
    if not (drained.done() and drained.result()):
        drained.cancel()
        logger.warning(f"model worker stopping with {worker.sessions} session(s) still open")
    logger.info("model worker stopping")
    server.close()
    await server.wait_closed()
    await backend.close()
    if registry is not None:
        await registry.close()
