"""The worker-pool backend: an `AudioLLM` whose sessions run on model workers.

Each call gets a websocket session on a free worker. Admission control is the
workers' own: one that is busy refuses the session (HTTP 503 or close 1013), the
pool tries the next, and when none is free `open_session()` raises `BackendBusy` so
the call falls back at once instead of waiting. A worker that dies mid-turn ends
the turn with `EndOfTurn(error=...)`, never a hang.

The pool presents the workers' shared secret (`MODEL_WORKER_SECRET`) on every session and
health request, and checks `wss://` workers' certificates against the system's CAs or
`MODEL_WORKER_CA`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from loguru import logger
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from callwright.agent.backend import (
    AudioLLM,
    AudioLLMSession,
    BackendBusy,
    Capabilities,
    EndOfTurn,
    Event,
    TurnRequest,
)
from callwright.agent.workers import protocol as p

CONNECT_TIMEOUT_S = 3.0
CANCEL_TIMEOUT_S = 5.0


class WorkerLost(RuntimeError):
    """The worker's connection ended while a session needed it."""


def _http_url(ws_url: str, path: str) -> str:
    scheme, _, rest = ws_url.rstrip("/").partition("://")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest}{path}"


def _in_clear_off_host(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname in (None, "localhost"):
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return True


class WorkerPool(AudioLLM):
    """Sessions on model workers, the first free one in turn.

    Args:
        urls: `ws://` or `wss://` worker addresses.
        connect_timeout_s: How long a worker may take to accept a session.
        secret: The workers' shared secret; by default `MODEL_WORKER_SECRET`.
        ca_file: CA bundle for `wss://` workers' certificates; by default
            `MODEL_WORKER_CA`, else the system's CAs.
    """

    name = "workers"

    def __init__(self, *, urls: list[str], connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 secret: str | None = None, ca_file: Path | str | None = None):
        if not urls:
            raise ValueError("a worker pool needs at least one worker URL (AUDIO_LLM_WORKERS)")
        self._urls = [u.rstrip("/") for u in urls]
        self._timeout = connect_timeout_s
        self._next = itertools.cycle(range(len(self._urls)))
        self.capabilities = Capabilities()
        secret = secret if secret is not None else os.environ.get(p.SECRET_ENV) or None
        self._headers = p.auth_headers(p.check_secret(secret) if secret else None)
        ca_file = ca_file or os.environ.get(p.CA_ENV) or None
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if clear := [u for u in self._urls if _in_clear_off_host(u)]:
            logger.warning(f"model workers reached without TLS ({', '.join(clear)}): callers' "
                           "audio and the worker secret cross the network in clear; use wss://")

    async def health(self) -> dict[str, p.Health | str]:
        """Each worker's health, or why it did not answer."""
        async def one(client: httpx.AsyncClient, url: str) -> p.Health | str:
            try:
                response = await client.get(_http_url(url, p.HEALTH_PATH))
                response.raise_for_status()
                return p.Health.model_validate_json(response.content)
            except (httpx.HTTPError, ValidationError) as exc:
                return f"{type(exc).__name__}: {exc}"

        async with httpx.AsyncClient(timeout=self._timeout, headers=self._headers,
                                     verify=self._tls) as client:
            answers = await asyncio.gather(*(one(client, url) for url in self._urls))
        return dict(zip(self._urls, answers, strict=True))

    async def load(self) -> None:
        """Ask every worker for its health and take the first healthy one's capabilities and
        backend name; never raises (workers that do not answer are logged)."""
        healthy = []
        for url, health in (await self.health()).items():
            if isinstance(health, p.Health):
                healthy.append(health)
                logger.info(f"model worker {url}: {health.backend}, "
                            f"{health.sessions}/{health.max_sessions} sessions in use")
            else:
                logger.warning(f"model worker {url} is not answering ({health}); "
                               "calls fall back until it is")
        if healthy:
            self.capabilities = healthy[0].capabilities.to_contract()
            self.name = f"workers:{healthy[0].backend}"

    async def open_session(self) -> AudioLLMSession:
        """A session on the first worker that accepts one, trying each once, starting one further
        along the list on every call.

        Raises:
            BackendBusy: Every worker refused or failed; the message gives each one's reason.
        """
        start = next(self._next)
        refusals = []
        for i in range(len(self._urls)):
            url = self._urls[(start + i) % len(self._urls)]
            try:
                return await self._connect(url)
            except (OSError, TimeoutError, WebSocketException, WorkerLost) as exc:
                refusals.append(f"{url}: {_why(exc)}")
        raise BackendBusy("no free model worker (" + "; ".join(refusals) + ")")

    async def _connect(self, url: str) -> WorkerSession:
        tls = {"ssl": self._tls} if url.startswith("wss://") else {}
        try:
            ws = await connect(url + p.SESSION_PATH, open_timeout=self._timeout,
                               max_size=p.MAX_MESSAGE_BYTES, ping_interval=10, ping_timeout=20,
                               additional_headers=self._headers, **tls)
        except InvalidStatus as exc:
            if exc.response.status_code == 401:  # a setup error, not a busy worker
                logger.error(f"model worker {url} refused the session: "
                             f"{'wrong' if self._headers else 'no'} secret ({p.SECRET_ENV})")
            raise
        try:
            async with asyncio.timeout(self._timeout):
                ready = p.worker_message.validate_json(await ws.recv())
        except ConnectionClosed as exc:
            raise WorkerLost(f"closed before ready ({exc.rcvd.code if exc.rcvd else '-'})") \
                from exc
        except BaseException:
            await ws.close()
            raise
        if not isinstance(ready, p.Ready) or ready.protocol != p.PROTOCOL_VERSION:
            await ws.close()
            raise WorkerLost(f"unexpected greeting {ready!r}")
        logger.info(f"session on model worker {url} ({ready.backend})")
        return WorkerSession(ws=ws, url=url)


def _why(exc: BaseException) -> str:
    if isinstance(exc, InvalidStatus):
        if exc.response.status_code == 401:
            return "HTTP 401 (missing or wrong worker secret)"
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class WorkerSession(AudioLLMSession):
    """One conversation on one worker. A single reader task owns the socket's input."""

    def __init__(self, *, ws: ClientConnection, url: str):
        self._ws = ws
        self._url = url
        self._turn_ids = itertools.count(1)
        self._turn_id = 0
        self._queue: asyncio.Queue[p._Message | BaseException] | None = None
        self._acks: dict[int, asyncio.Future] = {}
        self._cancelled: set[int] = set()
        self._lost: BaseException | None = None
        self._reader = asyncio.create_task(self._read(), name=f"worker-reader {url}")

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = p.worker_message.validate_json(raw)
                if isinstance(message, p.Cancelled):
                    if future := self._acks.pop(message.turn_id, None):
                        future.set_result(None)
                elif isinstance(message, p.ProtocolError):
                    logger.error(f"model worker {self._url}: {message.message}")
                elif message.turn_id == self._turn_id and self._queue is not None \
                        and message.turn_id not in self._cancelled:
                    self._queue.put_nowait(message)
            self._lost = WorkerLost("the worker closed the session")
        except (ConnectionClosed, ValidationError) as exc:
            self._lost = WorkerLost(f"{type(exc).__name__}: {exc}")
        finally:
            if self._queue is not None:
                self._queue.put_nowait(self._lost or WorkerLost("reader stopped"))
            for future in self._acks.values():
                if not future.done():
                    future.set_result(None)

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Send the turn to the worker and stream its events back up to `EndOfTurn`.

        Only what `protocol.Turn` carries is sent. A worker lost mid-turn ends the turn with
        `EndOfTurn(error=...)`; after `cancel()` nothing more is yielded.
        """
        turn_id = self._turn_id = next(self._turn_ids)
        queue = self._queue = asyncio.Queue()
        try:
            if self._lost:
                raise self._lost
            await self._ws.send(p.Turn.of(turn_id, request).model_dump_json())
            while True:
                message = await queue.get()
                if isinstance(message, BaseException):
                    raise message
                if turn_id in self._cancelled:
                    return
                event = p.decode_event(message)
                yield event
                if isinstance(event, EndOfTurn):
                    return
        except (WorkerLost, ConnectionClosed) as exc:
            if turn_id in self._cancelled:
                return
            logger.error(f"model worker {self._url} lost mid-turn: {exc}")
            yield EndOfTurn(error=f"model worker {self._url} lost: {exc}")
        finally:
            self._queue = None

    async def cancel(self) -> None:
        """Stop the turn: wake `respond()` at once, then send `Cancel` and wait up to
        `CANCEL_TIMEOUT_S` for the worker's `Cancelled`."""
        turn_id = self._turn_id
        if not turn_id or turn_id in self._cancelled:
            return
        self._cancelled.add(turn_id)
        if self._queue is not None:
            self._queue.put_nowait(WorkerLost("cancelled"))  # wakes respond() at once
        if self._lost:
            return
        future = self._acks[turn_id] = asyncio.get_running_loop().create_future()
        try:
            await self._ws.send(p.Cancel(turn_id=turn_id).model_dump_json())
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await future
        except (ConnectionClosed, TimeoutError) as exc:
            logger.warning(f"model worker {self._url} did not confirm cancel: {_why(exc)}")
        finally:
            self._acks.pop(turn_id, None)

    async def truncate(self, heard_text: str) -> None:
        """Send `Truncate` to the worker, unless the connection is lost."""
        if not self._lost:
            with contextlib.suppress(ConnectionClosed):
                await self._ws.send(p.Truncate(heard_text=heard_text).model_dump_json())

    async def close(self) -> None:
        """Close the connection and stop its reader."""
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
