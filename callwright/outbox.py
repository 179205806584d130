"""Business webhooks: the outbox of `call.ended` events, and the sender that empties it.

When a call's end is stored, the same transaction adds one `webhook_deliveries` row per
WEBHOOK_URLS entry (`WebhookDispatcher.enqueue`, a `CallStore` end hook), so an end is
never stored without its deliveries, whichever path ended the call. A background task in
every server process then claims due rows (an atomic claim with a lease: `FOR UPDATE SKIP
LOCKED` on PostgreSQL, SQLite's write lock), builds the event once the call's end-of-call
work here is done (its summary; bounded), freezes it in the row, signs it
(`callwright.webhooks`) and POSTs it with httpx. Network errors, 408, 429 and 5xx are
retried with exponential backoff and jitter; other answers, or the last attempt, leave
the row `dead` for a supervisor to replay from the admin site. A process that dies
mid-delivery leaves a lease that lapses; its row is sent again, with the same delivery
id. Nothing here runs on the audio path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import httpx
from loguru import logger
from sqlalchemy import and_, event, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from callwright.memory.db import sessionmaker
from callwright.memory.models import WebhookDelivery, utcnow
from callwright.memory.outcomes import CALL_ENDED, call_ended_event
from callwright.webhooks import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    sign,
)

if TYPE_CHECKING:
    from callwright.metrics import Metrics
    from callwright.settings import Settings

STATUSES = ("pending", "delivered", "dead")
RETRY_STATUS = frozenset({408, 429})  # and every 5xx
MAX_ERROR_CHARS = 500
# Waits for one call's end-of-call work (CallMemory.settle_call) at most this long.
Settle = Callable[[int, float], Awaitable[object]]


@dataclass(frozen=True, kw_only=True)
class WebhookConfig:
    """Where and how business webhooks are sent (README, "Call outcomes and business
    webhooks").

    Attributes:
        urls: Each gets one delivery of every event.
        secret: Signs the deliveries; never logged.
        max_attempts: Attempts before a delivery is dead.
        backoff_s: Wait before the first retry; doubled for each later one, with jitter.
        backoff_max_s: The longest wait between attempts.
        timeout_s: One attempt's HTTP timeout.
        summary_wait_s: How long a delivery waits for its call's summary.
        concurrency: Deliveries in flight at once, per process.
        poll_s: How often each process looks for due deliveries (others wake it sooner).
    """

    urls: tuple[str, ...] = field(default=(), repr=False)  # may hold tokens
    secret: str = field(repr=False)
    max_attempts: int = 12
    backoff_s: float = 5.0
    backoff_max_s: float = 3600.0
    timeout_s: float = 5.0
    summary_wait_s: float = 30.0
    concurrency: int = 8
    poll_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookConfig | None:
        """The configuration the settings give; None when no WEBHOOK_SECRET is set and no
        WEBHOOK_URLS are.

        Raises:
            ValueError: WEBHOOK_URLS without a WEBHOOK_SECRET of 16 characters or more, or
                a URL that is not http(s).
        """
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else ""
        if not settings.webhook_urls and not secret:
            return None
        if len(secret) < 16:
            raise ValueError("WEBHOOK_SECRET must be set, with 16 characters or more, when "
                             "WEBHOOK_URLS is: every delivery is signed with it; issue one "
                             "with: python -c \"import secrets; "
                             "print(secrets.token_urlsafe(32))\"")
        for url in settings.webhook_urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"WEBHOOK_URLS: not an http(s) URL: {redact_url(url)!r}")
        return cls(
            urls=tuple(settings.webhook_urls), secret=secret,
            max_attempts=settings.webhook_max_attempts, backoff_s=settings.webhook_backoff_s,
            backoff_max_s=settings.webhook_backoff_max_s, timeout_s=settings.webhook_timeout_s,
            summary_wait_s=settings.webhook_summary_wait_s,
        )

    def backoff(self, attempts: int, retry_after: float | None = None) -> float:
        """Seconds to wait after `attempts` failed attempts: `backoff_s` doubled for each
        attempt after the first, at most `backoff_max_s`, the second half jittered; at
        least the receiver's `Retry-After` (itself capped)."""
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** max(attempts - 1, 0))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay


@dataclass(frozen=True, kw_only=True)
class Claim:
    """A delivery this process has claimed, and the lease token that proves it."""

    id: int
    delivery_id: str
    event: str
    call_id: int
    url: str
    attempts: int
    origin: str | None
    body: str | None
    lease_token: str


class DeliveryStore:
    """The `webhook_deliveries` rows: added with calls' ends, claimed, settled, replayed."""

    def __init__(self, engine: AsyncEngine):
        self._sessions = sessionmaker(engine)

    @staticmethod
    def add(session: AsyncSession, call_ids: Sequence[int], *, urls: Sequence[str],
            origin: str | None, hold_s: float, event_name: str = CALL_ENDED) -> None:
        """Add one pending delivery per call and URL to `session` (the transaction that
        stores the calls' ends). Other processes leave them to `origin` for `hold_s`."""
        now = utcnow()
        session.add_all(
            WebhookDelivery(
                delivery_id=str(uuid.uuid4()), event=event_name, call_id=call_id, url=url,
                status="pending", attempts=0, origin=origin, created_at=now,
                next_attempt_at=now + timedelta(seconds=hold_s),
            )
            for call_id in call_ids for url in urls
        )

    async def claim(self, *, worker: str | None, limit: int, lease_s: float) -> list[Claim]:
        """Claim up to `limit` due deliveries for `lease_s` seconds, oldest first.

        Due: pending, not leased (or the lease lapsed), and either past `next_attempt_at`
        or never tried and `worker`'s own. Two processes never claim the same row: on
        PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, and SQLite's
        transactions take the write lock at BEGIN.
        """
        now = utcnow()
        due = select(WebhookDelivery).where(
            WebhookDelivery.status == "pending",
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
            or_(WebhookDelivery.next_attempt_at <= now,
                and_(WebhookDelivery.origin == worker, WebhookDelivery.attempts == 0)),
        ).order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)
        async with self._sessions.begin() as session:
            rows = list(await session.scalars(due.with_for_update(skip_locked=True)))
            for row in rows:
                row.lease_token = secrets.token_hex(16)
                row.lease_until = now + timedelta(seconds=lease_s)
        return [Claim(id=r.id, delivery_id=r.delivery_id, event=r.event, call_id=r.call_id,
                      url=r.url, attempts=r.attempts, origin=r.origin, body=r.body,
                      lease_token=r.lease_token) for r in rows]

    async def freeze_body(self, claim: Claim) -> str | None:
        """Build the claimed delivery's event from its call as stored now and keep it in
        the row: every later attempt sends these exact bytes. None: the call is gone."""
        async with self._sessions.begin() as session:
            payload = await call_ended_event(session, claim.call_id,
                                             delivery_id=claim.delivery_id)
            if payload is None:
                return None
            body = json.dumps(payload, separators=(",", ":"))
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == claim.id,
                       WebhookDelivery.lease_token == claim.lease_token)
                .values(body=body)
            )
            return body

    async def settle(self, claim: Claim, **values: object) -> bool:
        """End the claim with `values` (its outcome), once its lease is still this one's;
        False when it is not (it lapsed and the row was claimed again, or replayed)."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == claim.id,
                       WebhookDelivery.lease_token == claim.lease_token)
                .values(lease_token=None, lease_until=None, **values)
            )
            return bool(result.rowcount)

    async def release(self, claims: Collection[Claim]) -> None:
        """Give claims back unsent (shutting down): due again at once."""
        tokens = [c.lease_token for c in claims]
        if not tokens:
            return
        async with self._sessions.begin() as session:
            await session.execute(
                update(WebhookDelivery).where(WebhookDelivery.lease_token.in_(tokens))
                .values(lease_token=None, lease_until=None)
            )

    async def replay(self, ids: Collection[int] | None = None) -> list[WebhookDelivery]:
        """Put deliveries back to pending, due now, with their attempts reset.

        Args:
            ids: These deliveries, dead or delivered (pending ones are left alone); None:
                every dead one.

        Returns:
            The deliveries replayed, as they were before (their last error included).
        """
        where = [WebhookDelivery.status != "pending"] if ids is not None else [
            WebhookDelivery.status == "dead"]
        if ids is not None:
            where.append(WebhookDelivery.id.in_(list(ids)))
        async with self._sessions.begin() as session:
            before = list(await session.scalars(
                select(WebhookDelivery).where(*where).with_for_update()))
            if before:
                await session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_([d.id for d in before]))
                    .values(status="pending", attempts=0, next_attempt_at=utcnow(),
                            lease_token=None, lease_until=None, delivered_at=None,
                            last_error=None, last_status_code=None)
                    .execution_options(synchronize_session=False)  # `before` stays as it was
                )
            return before

    async def listing(self, *, status: str | None = None, limit: int = 100,
                      offset: int = 0) -> list[WebhookDelivery]:
        """Deliveries, newest first; with `status`, only those."""
        query = select(WebhookDelivery).order_by(WebhookDelivery.created_at.desc(),
                                                 WebhookDelivery.id.desc())
        if status:
            query = query.where(WebhookDelivery.status == status)
        async with self._sessions() as session:
            return list(await session.scalars(query.limit(limit).offset(offset)))

    async def counts(self) -> dict[str, int]:
        """How many deliveries there are in each status (every status in `STATUSES`)."""
        async with self._sessions() as session:
            rows = (await session.execute(
                select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
            )).all()
        return {**dict.fromkeys(STATUSES, 0), **dict(rows)}

    async def get(self, delivery_id: int) -> WebhookDelivery | None:
        """One delivery by its row id, or None."""
        async with self._sessions() as session:
            return await session.get(WebhookDelivery, delivery_id)


@dataclass(frozen=True)
class _Answer:
    status_code: int | None
    error: str | None  # None: delivered
    retry: bool = False
    retry_after: float | None = None


class WebhookDispatcher:
    """Sends every process's share of the outbox: claims due deliveries and POSTs them.

    Register `enqueue` as a `CallStore` end hook, `start()` it once the database is
    migrated, and `close()` it at shutdown, after the calls' end-of-call work.

    Args:
        engine: The database holding the outbox.
        config: URLs, secret, retries.
        worker: This process's name (WORKER_ID): the deliveries of calls that end here are
            sent from here first.
        settle: Waits for a call's end-of-call work in this process (its summary), bounded.
        metrics: Counts deliveries by result.
    """

    def __init__(self, engine: AsyncEngine, *, config: WebhookConfig, worker: str | None,
                 settle: Settle | None = None, metrics: Metrics | None = None):
        self.config = config
        self.worker = worker
        self.deliveries = DeliveryStore(engine)
        self._settle = settle
        self._counter = metrics.webhook_deliveries if metrics else None
        self._lease_s = config.summary_wait_s + config.timeout_s + 60.0
        self._wake = asyncio.Event()
        self._inflight: dict[asyncio.Task, Claim] = {}
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None
        self._timers: set[asyncio.TimerHandle] = set()

    async def enqueue(self, session: AsyncSession, call_ids: list[int]) -> None:
        """End hook: queue the `call.ended` deliveries of these calls in the transaction
        that stores their end, and wake the sender once it commits."""
        if not self.config.urls:
            return
        self.deliveries.add(session, call_ids, urls=self.config.urls, origin=self.worker,
                            hold_s=self.config.summary_wait_s + self.config.timeout_s)
        event.listen(session.sync_session, "after_commit", lambda _s: self.wake(), once=True)

    def wake(self) -> None:
        """Look for due deliveries now (a call ended, a delivery was replayed)."""
        self._wake.set()

    def start(self) -> None:
        """Start sending: pending deliveries, those left by a previous run included."""
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.timeout_s), follow_redirects=False,
            headers={"User-Agent": "callwright-webhooks/1"},
        )
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def close(self, timeout: float = 5.0) -> None:
        """Stop claiming; let deliveries in flight finish for up to `timeout` seconds, then
        cut them off and give their rows back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for timer in self._timers:
            timer.cancel()
        inflight = dict(self._inflight)
        if inflight:
            _done, unfinished = await asyncio.wait(set(inflight), timeout=timeout)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            try:
                await self.deliveries.release([inflight[t] for t in unfinished])
            except Exception as exc:  # their leases lapse instead
                logger.warning(f"webhooks: deliveries in flight not released ({exc!r})")
        if self._client is not None:
            await self._client.aclose()

    async def _run(self) -> None:
        failing = False
        while True:
            self._wake.clear()
            free = self.config.concurrency - len(self._inflight)
            claimed: list[Claim] = []
            if free > 0:
                try:
                    claimed = await self.deliveries.claim(worker=self.worker, limit=free,
                                                          lease_s=self._lease_s)
                    if failing:
                        logger.info("webhooks: the database answers again; sending")
                    failing = False
                except Exception as exc:  # the database is away: the rows wait in it
                    if not failing:
                        logger.warning(f"webhooks: cannot claim deliveries ({exc!r}); "
                                       "retrying")
                    failing = True
            for claim in claimed:
                task = asyncio.create_task(self._deliver(claim),
                                           name=f"webhook-{claim.delivery_id}")
                self._inflight[task] = claim
                task.add_done_callback(self._delivered)
            if claimed and len(claimed) == free:
                continue  # there may be more due
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_s)

    def _delivered(self, task: asyncio.Task) -> None:
        self._inflight.pop(task, None)
        self.wake()  # a free slot

    async def _deliver(self, claim: Claim) -> None:
        where = f"webhook {claim.delivery_id} (call {claim.call_id}, {redact_url(claim.url)})"
        try:
            body = claim.body
            if body is None:
                if self._settle is not None and claim.origin == self.worker:
                    await self._settle(claim.call_id, self.config.summary_wait_s)
                body = await self.deliveries.freeze_body(claim)
            if body is None:
                await self._settle_claim(claim, where, status="dead",
                                         last_error="the call is no longer stored")
                self._count("dead")
                return
            answer = await self._post(claim, body)
        except Exception as exc:  # the database went away: the lease lapses, it is resent
            logger.warning(f"{where}: not sent ({exc!r}); retried once its lease lapses")
            return
        attempts = claim.attempts + 1
        done = dict(attempts=WebhookDelivery.attempts + 1, last_attempt_at=utcnow(),
                    last_status_code=answer.status_code)
        if answer.error is None:
            await self._settle_claim(claim, where, status="delivered", delivered_at=utcnow(),
                                     last_error=None, **done)
            logger.info(f"{where}: delivered (HTTP {answer.status_code}, attempt {attempts})")
            self._count("delivered")
        elif answer.retry and attempts < self.config.max_attempts:
            delay = self.config.backoff(attempts, answer.retry_after)
            await self._settle_claim(
                claim, where, status="pending", last_error=answer.error,
                next_attempt_at=utcnow() + timedelta(seconds=delay), **done)
            logger.warning(f"{where}: attempt {attempts} failed ({answer.error}); "
                           f"retrying in {delay:.2f} s")
            self._count("retried")
            self._wake_in(delay)
        else:
            await self._settle_claim(claim, where, status="dead", last_error=answer.error,
                                     **done)
            logger.error(f"{where}: dead after attempt {attempts} ({answer.error}); "
                         "replay it from the admin site")
            self._count("dead")

    def _wake_in(self, delay: float) -> None:
        """Look again when a retry falls due (sooner than the next poll)."""
        def fire() -> None:
            self._timers.discard(timer)
            self.wake()

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    async def _settle_claim(self, claim: Claim, where: str, **values: object) -> None:
        """Store the attempt's result, waiting out a database that is briefly away (until
        the lease would lapse: then the row is simply sent again)."""
        deadline = asyncio.get_running_loop().time() + self._lease_s - 5.0
        delay = 0.2
        while True:
            try:
                if not await self.deliveries.settle(claim, **values):
                    logger.warning(f"{where}: its lease lapsed before the result was stored")
                return
            except Exception as exc:
                if asyncio.get_running_loop().time() + delay > deadline:
                    logger.error(f"{where}: result not stored ({exc!r}); it will be resent")
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _post(self, claim: Claim, body: str) -> _Answer:
        assert self._client is not None, "start() first"
        data = body.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.config.secret, data),
            DELIVERY_HEADER: claim.delivery_id,
            EVENT_HEADER: claim.event,
            ATTEMPT_HEADER: str(claim.attempts + 1),
        }
        try:
            async with self._client.stream("POST", claim.url, content=data,
                                           headers=headers) as response:
                code = response.status_code
                text = await _read_some(response, 300)
                retry_after = _seconds(response.headers.get("retry-after"))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return _Answer(None, _error(exc, claim.url))
        except httpx.HTTPError as exc:  # refused, reset, timed out, bad TLS: retried
            return _Answer(None, _error(exc, claim.url), retry=True)
        if 200 <= code < 300:
            return _Answer(code, None)
        error = f"HTTP {code}" + (f": {text}" if text else "")
        return _Answer(code, error[:MAX_ERROR_CHARS],
                       retry=code in RETRY_STATUS or code >= 500, retry_after=retry_after)

    def _count(self, result: str) -> None:
        if self._counter is not None:
            self._counter.labels(result).inc()


def redact_url(url: str) -> str:
    """A URL fit to show and log: no user name, password, query or fragment, which may
    hold tokens."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    except ValueError:
        return "(not a URL)"


async def _read_some(response: httpx.Response, limit: int) -> str:
    """The start of a response body, for the error shown; the rest is not read."""
    chunks = bytearray()
    async for chunk in response.aiter_bytes():
        chunks += chunk
        if len(chunks) >= limit:
            break
    return " ".join(chunks[:limit].decode(errors="replace").split())


def _seconds(value: str | None) -> float | None:
    """A `Retry-After` given in seconds (a date is ignored)."""
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def _error(exc: Exception, url: str) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.replace(url, redact_url(url))[:MAX_ERROR_CHARS]
