"""The caller's side of the worker protocol: one session on one model worker.

`connect_session()` opens a conversation and waits for the worker's `Ready`;
`WorkerSession` runs its turns. A worker that goes away raises `WorkerLost` out of
`respond()`, so whoever holds the session (the pool) decides where the turn goes next.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import AsyncIterator

from loguru import logger
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from callwright.agent.backend import AudioLLMSession, EndOfTurn, Event, TurnRequest
from callwright.agent.workers import protocol as p

CANCEL_TIMEOUT_S = 5.0
PREPARE_TIMEOUT_S = 5.0


class WorkerLost(RuntimeError):
    """The worker's connection ended (or stopped answering) while a session needed it."""


def http_url(ws_url: str, path: str) -> str:
    """The `http(s)://` address of `path` on the worker at `ws_url`."""
    scheme, _, rest = ws_url.rstrip("/").partition("://")
    return f"{'https' if scheme == 'wss' else 'http'}://{rest}{path}"


def why(exc: BaseException) -> str:
    """A short reason for a failed connection or session, for logs and refusals."""
    if isinstance(exc, InvalidStatus):
        if exc.response.status_code == 401:
            return "HTTP 401 (missing or wrong worker secret)"
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def connect_session(url: str, *, headers: dict[str, str], tls: ssl.SSLContext,
                          timeout_s: float) -> WorkerSession:
    """A new conversation on the worker at `url`, once it has said `Ready`.

    Raises:
        WorkerLost: The worker closed the session before `Ready` (busy: close 1013), or
            greeted with another protocol.
        OSError, TimeoutError, websockets.exceptions.WebSocketException: It could not be
            reached in `timeout_s`, or refused the handshake (HTTP 503 busy, 401 secret).
    """
    ws = await connect(url + p.SESSION_PATH, open_timeout=timeout_s,
                       max_size=p.MAX_MESSAGE_BYTES, ping_interval=10, ping_timeout=20,
                       additional_headers=headers,
                       **({"ssl": tls} if url.startswith("wss://") else {}))
    try:
        async with asyncio.timeout(timeout_s):
            ready = p.worker_message.validate_json(await ws.recv())
    except ConnectionClosed as exc:
        raise WorkerLost(f"closed before ready ({exc.rcvd.code if exc.rcvd else '-'})") from exc
    except BaseException:
        await ws.close()
        raise
    if not isinstance(ready, p.Ready) or ready.protocol != p.PROTOCOL_VERSION:
        await ws.close()
        raise WorkerLost(f"unexpected greeting {ready!r}")
    return WorkerSession(ws=ws, url=url, backend=ready.backend)


class WorkerSession(AudioLLMSession):
    """One conversation on one worker. A single reader task owns the socket's input.

    Attributes:
        url: The worker's address.
        backend: The name of the backend the worker hosts.
    """

    def __init__(self, *, ws: ClientConnection, url: str, backend: str):
        self._ws = ws
        self.url = url
        self.backend = backend
        self._turn_ids = itertools.count(1)
        self._turn_id = 0
        self._queue: asyncio.Queue[p._Message | BaseException] | None = None
        self._acks: dict[int, asyncio.Future] = {}
        self._prepare_ids = itertools.count(1)
        self._prepared: dict[int, asyncio.Future[str | None]] = {}
        self._cancelled: set[int] = set()
        self._lost: WorkerLost | None = None
        self._reader = asyncio.create_task(self._read(), name=f"worker-reader {url}")

    @property
    def lost(self) -> bool:
        """Whether the worker is gone: no turn can run on this session any more."""
        return self._lost is not None

    async def _read(self) -> None:
        try:
            async for raw in self._ws:
                message = p.worker_message.validate_json(raw)
                if isinstance(message, p.Cancelled):
                    if future := self._acks.pop(message.turn_id, None):
                        future.set_result(None)
                elif isinstance(message, p.Prepared):
                    if (future := self._prepared.pop(message.prepare_id, None)) \
                            and not future.done():
                        future.set_result(message.text)
                elif isinstance(message, p.ProtocolError):
                    logger.error(f"model worker {self.url}: {message.message}")
                elif message.turn_id == self._turn_id and self._queue is not None \
                        and message.turn_id not in self._cancelled:
                    self._queue.put_nowait(message)
            self._mark_lost(WorkerLost("the worker closed the session"))
        except (ConnectionClosed, ValidationError) as exc:
            self._mark_lost(WorkerLost(f"{type(exc).__name__}: {exc}"))

    def _mark_lost(self, lost: WorkerLost) -> None:
        if self._lost is not None:
            return
        self._lost = lost
        if self._queue is not None:
            self._queue.put_nowait(lost)
        for future in [*self._acks.values(), *self._prepared.values()]:
            if not future.done():
                future.set_result(None)

    def lose(self, reason: str) -> None:
        """Give the worker up (its health checks failed): a running turn raises `WorkerLost`
        at once and the connection is dropped without waiting for the worker."""
        self._mark_lost(WorkerLost(reason))
        self._ws.transport.abort()

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Send the turn to the worker and stream its events back up to `EndOfTurn`.

        Only what `protocol.Turn` carries is sent. After `cancel()` nothing more is yielded.

        Raises:
            WorkerLost: The worker went away before the turn ended.
        """
        turn_id = self._turn_id = next(self._turn_ids)
        queue = self._queue = asyncio.Queue()
        try:
            if self._lost:
                raise self._lost
            try:
                await self._ws.send(p.Turn.of(turn_id, request).model_dump_json())
            except ConnectionClosed as exc:
                raise self._lost or WorkerLost(why(exc)) from exc
            while True:
                message = await queue.get()
                if turn_id in self._cancelled:
                    return
                if isinstance(message, BaseException):
                    raise message
                event = p.decode_event(message)
                yield event
                if isinstance(event, EndOfTurn):
                    return
        finally:
            self._queue = None

    async def prepare(self, audio: bytes) -> str | None:
        """Hand the worker the caller's audio so far; the caller's words if its backend can
        tell within `PREPARE_TIMEOUT_S`, else None (a lost worker says None)."""
        if self._lost:
            return None
        prepare_id = next(self._prepare_ids)
        future = self._prepared[prepare_id] = asyncio.get_running_loop().create_future()
        try:
            await self._ws.send(p.Prepare(prepare_id=prepare_id, audio=audio).model_dump_json())
            async with asyncio.timeout(PREPARE_TIMEOUT_S):
                return await future
        except (ConnectionClosed, TimeoutError):
            return None
        finally:
            self._prepared.pop(prepare_id, None)

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
            logger.warning(f"model worker {self.url} did not confirm cancel: {why(exc)}")
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
