"""The worker-pool backend: an `AudioLLM` whose sessions run on a pool of model workers.

- **Health.** Once loaded, the pool asks every worker's `/health` every
  `health_every_s` (0.5 s). A worker that fails two probes in a row, or whose connection drops,
  is down: no new call goes to it, and its calls move (below) without waiting for
  their own sockets to time out. A probe that answers again brings it back.
- **Least busy.** A new call goes to the up worker with the smallest share of its
  sessions in use (its last health report plus the sessions opened since). A busy
  worker refuses the session (HTTP 503 or close 1013) and the next is tried; when none
  accepts, `open_session()` raises `BackendBusy` so the call falls back at once.
- **Moving calls.** A call whose worker is lost before it said anything of the turn
  runs that same turn on another worker (each turn carries the conversation's text),
  so the caller hears nothing of the move. Lost mid-reply, or with no other worker
  free, the turn ends with `EndOfTurn(error=...)` and the call's fallback (an apology,
  then the embedded cascade) takes over: never dead air.
- **Joining and leaving.** Besides the fixed `urls`, workers advertised in Redis
  (`registry`) join and leave at the next health round; one that drains (SIGTERM) says
  so in its health and gets no new calls.

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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from loguru import logger
from pydantic import ValidationError
from redis.exceptions import RedisError
from websockets.exceptions import InvalidStatus, WebSocketException

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
from callwright.agent.workers.client import (
    WorkerLost,
    WorkerSession,
    connect_session,
    http_url,
    why,
)
from callwright.agent.workers.registry import WorkerRegistry

CONNECT_TIMEOUT_S = 3.0
HEALTH_EVERY_S = 0.5
HEALTH_TIMEOUT_S = 0.75
DOWN_AFTER_FAILED_PROBES = 2  # a hung worker is given up within about 2 s
WORKER_STATES = ("up", "down", "draining", "leaving", "loading", "unprobed")


def _in_clear_off_host(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname in (None, "localhost"):
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return True


@dataclass(eq=False)
class _Member:
    """What the pool knows of one worker."""

    url: str
    health: p.Health | None = None
    problem: str = ""  # why the last probe or connection failed
    failures: int = 0  # failed probes in a row
    opened: int = 0  # sessions opened here since the last health report
    sessions: set[WorkerSession] = field(default_factory=set)
    leaving: bool = False  # gone from the registry; checked until its calls end

    @property
    def down(self) -> bool:
        return self.failures >= DOWN_AFTER_FAILED_PROBES

    @property
    def state(self) -> str:
        """One of `WORKER_STATES`."""
        if self.down:
            return "down"
        if self.leaving:
            return "leaving"
        if self.health is None:
            return "unprobed"
        if self.health.draining:
            return "draining"
        return "up" if self.health.status == "ok" else "loading"

    @property
    def taking_calls(self) -> bool:
        return self.state in ("up", "unprobed")

    def described(self) -> str:
        """The state, with why it is down, how busy it is, or how many calls it has left."""
        detail = {"down": self.problem, "up": f"{self.load:.0%} busy",
                  "leaving": f"{len(self.sessions)} call(s) left on it"}.get(self.state)
        return f"{self.state} ({detail})" if detail else self.state

    @property
    def load(self) -> float:
        if self.health is None:
            return 0.0
        return (self.health.sessions + self.opened) / max(self.health.max_sessions, 1)


class WorkerPool(AudioLLM):
    """Sessions on model workers, each on the least busy worker that is up.

    Args:
        urls: Fixed `ws://` or `wss://` worker addresses (`AUDIO_LLM_WORKERS`).
        redis_url: Also take the workers advertised in this Redis (`REDIS_URL`); needs
            the shared secret, which signs the entries.
        connect_timeout_s: How long a worker may take to accept a session.
        health_every_s: Seconds between health rounds (membership is read then too).
        secret: The workers' shared secret; by default `MODEL_WORKER_SECRET`.
        ca_file: CA bundle for `wss://` workers' certificates; by default
            `MODEL_WORKER_CA`, else the system's CAs.

    Raises:
        ValueError: Neither `urls` nor a registry to find workers in.
    """

    name = "workers"

    def __init__(self, *, urls: list[str], redis_url: str = "",
                 connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 health_every_s: float = HEALTH_EVERY_S, secret: str | None = None,
                 ca_file: Path | str | None = None):
        self._fixed = [u.rstrip("/") for u in urls]
        self._members = {url: _Member(url) for url in self._fixed}
        self._timeout = connect_timeout_s
        self._health_every_s = health_every_s
        self._rotation = itertools.count()
        self.capabilities = Capabilities()
        secret = secret if secret is not None else os.environ.get(p.SECRET_ENV) or None
        secret = p.check_secret(secret) if secret else None
        self._headers = p.auth_headers(secret)
        self._registry = None
        if redis_url and secret:
            self._registry = WorkerRegistry(redis_url=redis_url, secret=secret)
        elif redis_url:
            logger.warning(f"model workers advertised in Redis are ignored without "
                           f"{p.SECRET_ENV}, which signs their entries")
        if not self._fixed and self._registry is None:
            raise ValueError("a worker pool needs worker URLs (AUDIO_LLM_WORKERS), or REDIS_URL "
                             f"and {p.SECRET_ENV} to find advertised workers")
        ca_file = ca_file or os.environ.get(p.CA_ENV) or None
        self._tls = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        self._http = httpx.AsyncClient(timeout=min(HEALTH_TIMEOUT_S, connect_timeout_s),
                                       headers=self._headers, verify=self._tls)
        self._watcher: asyncio.Task | None = None
        self._rounds: set[asyncio.Task] = set()
        self._warned_clear: set[str] = set()
        self._warn_clear(self._fixed)

    def _warn_clear(self, urls: list[str]) -> None:
        if clear := [u for u in urls if _in_clear_off_host(u) and u not in self._warned_clear]:
            self._warned_clear.update(clear)
            logger.warning(f"model workers reached without TLS ({', '.join(clear)}): callers' "
                           "audio and the worker secret cross the network in clear; use wss://")

    @property
    def workers(self) -> dict[str, str]:
        """Each known worker's state (`WORKER_STATES`), with why it is down, how busy it is,
        or how many calls a leaving one still has: `up (50% busy)`."""
        return {url: m.described() for url, m in self._members.items()}

    def state_counts(self) -> dict[str, int]:
        """How many workers are in each of `WORKER_STATES` (zeros included)."""
        states = [m.state for m in self._members.values()]
        return {state: states.count(state) for state in WORKER_STATES}

    async def health(self) -> dict[str, p.Health | str]:
        """Each known worker's health, or why it did not answer."""
        urls = list(self._members)
        answers = await asyncio.gather(*(self._probe(url) for url in urls))
        return dict(zip(urls, answers, strict=True))

    async def _probe(self, url: str) -> p.Health | str:
        try:
            response = await self._http.get(http_url(url, p.HEALTH_PATH))
            response.raise_for_status()
            return p.Health.model_validate_json(response.content)
        except (httpx.HTTPError, ValidationError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def load(self) -> None:
        """Run a first health round, log each worker's state, and keep checking in the
        background; never raises (a worker that does not answer is tried again)."""
        await self._health_round()
        for url, state in self.workers.items():
            logger.info(f"model worker {url}: {state}")
        if not self._members:
            logger.warning("no model worker is advertised yet; calls fall back until one is")
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="model-worker health")

    async def _watch(self) -> None:
        # Rounds start on a fixed beat, not after the last one's timeouts: a hung worker's
        # failures then come one beat apart.
        while True:
            await asyncio.sleep(self._health_every_s)
            task = asyncio.create_task(self._health_round())
            self._rounds.add(task)
            task.add_done_callback(self._round_done)

    def _round_done(self, task: asyncio.Task) -> None:
        self._rounds.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("model worker health round failed")

    async def _health_round(self) -> None:
        await self._refresh_members()
        for url, answer in (await self.health()).items():
            member = self._members.get(url)
            if member is None:
                continue
            if isinstance(answer, p.Health):
                if member.down:
                    logger.info(f"model worker {url} is up again")
                if answer.draining and not (member.health and member.health.draining):
                    logger.info(f"model worker {url} is draining: no new calls go to it")
                member.health, member.failures, member.opened = answer, 0, 0
                if answer.status == "ok" and self.name == "workers":
                    self.capabilities = answer.capabilities.to_contract()
                    self.name = f"workers:{answer.backend}"
            else:
                member.failures += 1
                if member.failures >= DOWN_AFTER_FAILED_PROBES:
                    self._give_up(member, f"health checks failed: {answer}")
                member.problem = answer

    async def _refresh_members(self) -> None:
        if self._registry is None:
            return
        try:
            advertised = await self._registry.members()
        except RedisError as exc:
            logger.warning(f"model worker registry unreadable ({exc!r}); keeping the last list")
            return
        wanted = [*self._fixed, *(u.rstrip("/") for u in advertised)]
        for url in wanted:
            if (member := self._members.get(url)) is None:
                logger.info(f"model worker {url} joined")
                self._members[url] = _Member(url)
                self._warn_clear([url])
            elif member.leaving:
                logger.info(f"model worker {url} is back")
                member.leaving = False
        for url, member in list(self._members.items()):
            if url in wanted:
                continue
            if not member.sessions:  # its calls are over: stop checking it
                logger.info(f"model worker {url} left")
                del self._members[url]
            elif not member.leaving:
                member.leaving = True
                logger.info(f"model worker {url} is leaving: no new calls; its "
                            f"{len(member.sessions)} call(s) stay on it until they end")

    def _mark_down(self, member: _Member, reason: str) -> None:
        """Route nothing new to `member` until a health check passes."""
        if not member.down:
            logger.error(f"model worker {member.url} is down ({reason})")
        member.failures = max(member.failures, DOWN_AFTER_FAILED_PROBES)
        member.problem = reason

    def _give_up(self, member: _Member, reason: str) -> None:
        """Its health checks failed: route nothing new to it, and move its calls off it now
        (their sockets may stay open on a hung worker)."""
        self._mark_down(member, reason)
        if member.sessions:
            logger.warning(f"moving the {len(member.sessions)} call(s) on {member.url}")
        for session in list(member.sessions):
            session.lose(f"model worker {member.url} is down: {reason}")
        member.sessions.clear()

    def _route(self, exclude: set[str]) -> list[_Member]:
        """The workers to try, least busy first; equals take turns."""
        members = [m for m in self._members.values()
                   if m.taking_calls and m.url not in exclude]
        if members:
            shift = next(self._rotation) % len(members)
            members = members[shift:] + members[:shift]
        return sorted(members, key=lambda m: m.load)

    async def open_session(self) -> AudioLLMSession:
        """A session on the least busy worker that accepts one.

        Raises:
            BackendBusy: Every worker refused, failed or is down; the message gives each
                one's reason.
        """
        session = await self._connect_any(exclude=set())
        return PoolSession(pool=self, session=session)

    async def _connect_any(self, *, exclude: set[str]) -> WorkerSession:
        refusals = [f"{m.url}: {self.workers[m.url]}" for m in self._members.values()
                    if not m.taking_calls and m.url not in exclude]
        for member in self._route(exclude):
            member.opened += 1
            try:
                session = await connect_session(member.url, headers=self._headers,
                                                tls=self._tls, timeout_s=self._timeout)
            except (OSError, TimeoutError, WebSocketException, WorkerLost) as exc:
                member.opened -= 1
                refusals.append(f"{member.url}: {why(exc)}")
                if isinstance(exc, InvalidStatus) and exc.response.status_code == 401:
                    logger.error(f"model worker {member.url} refused the session: "
                                 f"{'wrong' if self._headers else 'no'} secret ({p.SECRET_ENV})")
                elif isinstance(exc, OSError | TimeoutError):  # not there: not merely busy
                    self._mark_down(member, why(exc))
                continue
            member.sessions.add(session)
            logger.info(f"session on model worker {member.url} ({session.backend})")
            return session
        raise BackendBusy("no free model worker (" + ("; ".join(refusals) or "none known") + ")")

    def _release(self, session: WorkerSession) -> None:
        if member := self._members.get(session.url):
            member.sessions.discard(session)

    def _lost(self, session: WorkerSession, exc: WorkerLost) -> None:
        """A session's connection dropped: treat its worker as down until a probe says not
        (its other calls move when their own sockets drop, or when the checks fail)."""
        self._release(session)
        if (member := self._members.get(session.url)) is not None:
            self._mark_down(member, str(exc))

    async def close(self) -> None:
        """Stop the health checks and close the HTTP and Redis clients."""
        for task in (self._watcher, *self._rounds):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._http.aclose()
        if self._registry is not None:
            await self._registry.close()


class PoolSession(AudioLLMSession):
    """A call's conversation on the pool: on one worker, moved to another when it is lost.

    Args:
        pool: The pool that opened it.
        session: The session on the worker the call starts on.
    """

    def __init__(self, *, pool: WorkerPool, session: WorkerSession):
        self._pool = pool
        self._session: WorkerSession | None = session
        self._moving = asyncio.Lock()  # prepare() and respond() may both find it lost
        self._cancelled = False

    @property
    def worker(self) -> str | None:
        """The URL of the worker the call is on now (None between a loss and the move)."""
        return self._session.url if self._session else None

    async def _current(self, *, tried: set[str]) -> WorkerSession:
        """The session to use now: the one the call is on, or, if its worker was lost, one
        on another worker (not one of `tried`).

        Raises:
            BackendBusy: No other worker took the call.
        """
        async with self._moving:
            if self._session is not None and self._session.lost:
                tried.add(self._session.url)
                await self._drop(self._session, WorkerLost("the worker went away"))
            if self._session is None:
                self._session = await self._pool._connect_any(exclude=tried)
                logger.warning(f"call moved to model worker {self._session.url}")
            return self._session

    async def _drop(self, session: WorkerSession, exc: WorkerLost) -> None:
        self._pool._lost(session, exc)
        if self._session is session:
            self._session = None
        await _close_quietly(session)

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Stream the worker's answer to the turn. A worker lost before it sent anything of
        the turn is replaced and the turn sent again; otherwise, or with no worker free, the
        turn ends with `EndOfTurn(error=...)` so that the call's fallback answers."""
        self._cancelled = False
        tried: set[str] = set()
        while True:
            try:
                session = await self._current(tried=tried)
            except BackendBusy as exc:
                yield EndOfTurn(error=f"model worker lost, and {exc}")
                return
            started = False
            try:
                async for event in session.respond(request):
                    started = True
                    yield event
                return
            except WorkerLost as exc:
                if self._cancelled:
                    return
                tried.add(session.url)
                await self._drop(session, exc)
                if started:  # the caller heard part of this reply: the fallback apologises
                    yield EndOfTurn(error=f"model worker {session.url} lost mid-reply: {exc}")
                    return
                logger.warning(f"model worker {session.url} lost before answering ({exc}); "
                               "sending the turn to another worker")

    async def prepare(self, audio: bytes) -> str | None:
        """Start the worker on `audio` (moving the call first if its worker was lost); the
        caller's words if it can tell."""
        try:
            session = await self._current(tried=set())
        except BackendBusy:
            return None  # the turn itself falls back
        return await session.prepare(audio)

    async def cancel(self) -> None:
        """Stop the turn on the current worker."""
        self._cancelled = True
        if self._session is not None:
            await self._session.cancel()

    async def truncate(self, heard_text: str) -> None:
        """Tell the current worker what the caller heard of its last reply."""
        if self._session is not None:
            await self._session.truncate(heard_text)

    async def close(self) -> None:
        """Close the session on the current worker."""
        if self._session is not None:
            self._pool._release(self._session)
            await _close_quietly(self._session)
            self._session = None


async def _close_quietly(session: WorkerSession) -> None:
    try:
        await session.close()
    except Exception as exc:  # the worker is gone anyway
        logger.debug(f"closing the session on {session.url}: {exc!r}")
