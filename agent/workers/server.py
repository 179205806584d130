"""A model worker: hosts one backend and serves its sessions over the worker protocol.

Started by `callwright model-server --backend NAME --port N`. Any `AudioLLM` can be
hosted; a model instance serves `max_sessions` conversations (one for the speech
models, whose per-call state lives on the model), and further sessions are refused
so the caller's server falls back instead of queueing behind a running call.

Given a shared secret, the worker refuses any session that does not present it; without
one it serves only on a loopback address. Given a TLS context, it speaks `wss://`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import ssl
from http import HTTPStatus

from loguru import logger
from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from callwright.agent.backend import AudioLLM, AudioLLMSession, BackendBusy, EndOfTurn
from callwright.agent.workers import protocol as p


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (so a listener on it is not reachable)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or "" (all interfaces)
        return False


class ModelWorker:
    """Serves one backend's sessions over the worker protocol.

    Args:
        backend: The model it hosts.
        max_sessions: Conversations at a time; more are refused (HTTP 503).
        secret: Shared secret a session must present (`protocol.auth_headers`); None
            serves anyone who can connect, so only a loopback address is allowed then.
    """

    def __init__(self, *, backend: AudioLLM, max_sessions: int = 1, secret: str | None = None):
        self._backend = backend
        self._max_sessions = max_sessions
        self._secret = p.check_secret(secret).encode() if secret is not None else None
        self._sessions = 0
        self._loaded = False
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def sessions(self) -> int:
        """Sessions open now."""
        return self._sessions

    async def drain(self, *, timeout_s: float) -> bool:
        """Take no new sessions, and wait up to `timeout_s` for the open ones to end.

        Returns:
            Whether every session ended in time.
        """
        self._draining = True
        logger.info(f"model worker draining: {self._sessions} session(s) open, waiting up to "
                    f"{timeout_s:.0f} s for them to end")
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    def health(self) -> p.Health:
        """The worker's `Health` now."""
        return p.Health(
            status="ok" if self._loaded else "loading", backend=self._backend.name,
            busy=self._draining or self._sessions >= self._max_sessions,
            draining=self._draining, sessions=self._sessions,
            max_sessions=self._max_sessions,
            capabilities=p.CapabilitiesModel.of(self._backend.capabilities),
        )

    async def serve(self, *, host: str, port: int,
                    tls: ssl.SSLContext | None = None) -> Server:
        """Load the backend, then listen; returns the running server.

        Args:
            host: Interface to bind; anything but loopback needs a secret.
            port: Port to bind.
            tls: Server-side TLS context (certificate and key loaded): `wss://`.

        Raises:
            ValueError: A non-loopback `host` without a secret.
        """
        if self._secret is None and not is_loopback(host):
            raise ValueError(f"a model worker on {host or 'all interfaces'} needs a shared "
                             f"secret ({p.SECRET_ENV} or --secret-file): it carries callers' "
                             "audio and memories")
        await self._backend.load()
        self._loaded = True
        server = await serve(
            self._handle, host, port, process_request=self._process_request,
            max_size=p.MAX_MESSAGE_BYTES, ping_interval=10, ping_timeout=20, ssl=tls,
        )
        if tls is None and not is_loopback(host):
            logger.warning("model worker without TLS: audio crosses the network in clear; "
                           "give it --tls-cert and --tls-key")
        logger.info(f"Model worker '{self._backend.name}' listening on "
                    f"{'wss' if tls else 'ws'}://{host}:{port}{p.SESSION_PATH} "
                    f"({self._max_sessions} session(s) at a time, "
                    f"{'secret required' if self._secret else 'no secret'})")
        return server

    def _authorised(self, request: Request) -> bool:
        if self._secret is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        # compare_digest: how much of a wrong secret matched must not show in the timing.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self._secret)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == p.HEALTH_PATH:
            response = connection.respond(HTTPStatus.OK, self.health().model_dump_json())
            response.headers["Content-Type"] = "application/json"
            return response
        if request.path != p.SESSION_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if not self._authorised(request):
            logger.warning(f"refused a session from {connection.remote_address}: "
                           "missing or wrong secret")
            response = connection.respond(HTTPStatus.UNAUTHORIZED, "unauthorized\n")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        if self._draining or self._sessions >= self._max_sessions:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      "draining\n" if self._draining else "busy\n")
        return None

    def _opened(self, change: int) -> None:
        self._sessions += change
        if self._sessions:
            self._idle.clear()
        else:
            self._idle.set()

    async def _handle(self, connection: ServerConnection) -> None:
        if self._draining or self._sessions >= self._max_sessions:  # lost a race
            await connection.close(p.CLOSE_BUSY, "busy")
            return
        self._opened(+1)
        try:
            session = await self._backend.open_session()
        except BackendBusy as exc:
            self._opened(-1)
            await connection.close(p.CLOSE_BUSY, str(exc)[:120])
            return
        peer = connection.remote_address
        logger.info(f"session opened for {peer}")
        try:
            await _SessionServer(connection=connection, session=session,
                                 backend=self._backend).run()
        finally:
            try:
                await session.close()
            finally:
                self._opened(-1)
            logger.info(f"session closed for {peer}")


class _SessionServer:
    """One conversation: runs turns one at a time and streams their events back."""

    def __init__(self, *, connection: ServerConnection, session: AudioLLMSession,
                 backend: AudioLLM):
        self._ws = connection
        self._session = session
        self._backend = backend
        self._turn: asyncio.Task | None = None
        self._turn_id: int | None = None
        self._preparing: set[asyncio.Task] = set()

    async def _send(self, message: p._Message) -> None:
        await self._ws.send(message.model_dump_json())

    async def run(self) -> None:
        caps = p.CapabilitiesModel.of(self._backend.capabilities)
        await self._send(p.Ready(backend=self._backend.name, capabilities=caps))
        try:
            async for raw in self._ws:
                try:
                    message = p.client_message.validate_json(raw)
                except ValidationError as exc:
                    await self._send(p.ProtocolError(message=f"bad message: {exc}"[:2000]))
                    continue
                if isinstance(message, p.Turn):
                    await self._start(message)
                elif isinstance(message, p.Cancel):
                    await self._cancel(message.turn_id)
                elif isinstance(message, p.Prepare):
                    task = asyncio.create_task(self._prepare(message))
                    self._preparing.add(task)
                    task.add_done_callback(self._preparing.discard)
                else:
                    await self._session.truncate(message.heard_text)
        except ConnectionClosed:
            pass
        finally:
            for task in list(self._preparing):
                task.cancel()
            if self._turn_id is not None:
                await self._cancel(self._turn_id, reply=False)

    async def _prepare(self, message: p.Prepare) -> None:
        try:
            text = await self._session.prepare(message.audio)
        except Exception:
            logger.exception("preparing a turn failed")
            text = None
        with contextlib.suppress(ConnectionClosed):
            await self._send(p.Prepared(prepare_id=message.prepare_id, text=text))

    async def _start(self, turn: p.Turn) -> None:
        if self._turn is not None and not self._turn.done():
            await self._send(p.ProtocolError(
                message=f"turn {turn.turn_id} sent while turn {self._turn_id} is running"))
            return
        self._turn_id = turn.turn_id
        self._turn = asyncio.create_task(self._run_turn(turn))

    async def _run_turn(self, turn: p.Turn) -> None:
        try:
            async for event in self._session.respond(turn.to_request()):
                await self._send(p.encode_event(turn.turn_id, event))
                if isinstance(event, EndOfTurn):
                    return
            await self._send(p.TurnEnd(turn_id=turn.turn_id))
        except ConnectionClosed:
            raise
        except Exception as exc:
            logger.exception(f"turn {turn.turn_id} failed")
            with contextlib.suppress(ConnectionClosed):
                await self._send(p.TurnEnd(turn_id=turn.turn_id, error=f"{type(exc).__name__}: "
                                           f"{exc}"[:500]))
        finally:
            self._turn_id = None

    async def _cancel(self, turn_id: int, *, reply: bool = True) -> None:
        task = self._turn
        if task is not None and not task.done() and turn_id == self._turn_id:
            await self._session.cancel()  # returns once generation has stopped
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await task
        if reply:
            with contextlib.suppress(ConnectionClosed):
                await self._send(p.Cancelled(turn_id=turn_id))

