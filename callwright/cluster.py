"""Several `callwright serve` workers as one service, through Redis.

What the workers share beyond the database:

- **A call cap across all of them.** Each admitted call holds a lease in one sorted set
  (call SID → expiry, on Redis's clock); a Lua script admits atomically. The worker that
  runs a call renews its lease; a dead worker's leases lapse within `lease_s`.
- **Presence.** Each worker keeps a key alive; a worker whose key lapsed is dead, and any
  other closes its calls in the database (stored as interrupted, turns kept).
- **Change nudges for live pages.** A worker that stores a call's start, turns or end
  publishes a nudge; every worker's live feeds wake and read the database at once.
- **Call events across workers.** A callback that reaches a worker other than the one
  running the call's stream (Twilio's asynchronous answering-machine result) is relayed
  to every worker; the one running the call acts on it.

Redis being away never stops a call: admission falls back to each worker's own cap and
live pages to polling, with a warning in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING

import redis.asyncio as redis
from loguru import logger
from redis.exceptions import RedisError

from callwright.memory.changes import Changes

if TYPE_CHECKING:
    from callwright.memory.store import CallStore

# KEYS[1] the lines set. ARGV: call SID, cap, lease ms. 1 admitted, 0 refused.
ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
return 1
"""
# KEYS[1] the lines set. ARGV: lease ms, then the call SIDs whose leases go on.
RENEW = """
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', until_ms, ARGV[i]) end
return #ARGV - 1
"""
# KEYS[1] the lines set. The number of leases still running.
IN_USE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class Cluster(Changes):
    """This worker's part in a service of several: shared call cap, presence, live nudges.

    Call `start()` once the event loop runs and `close()` at shutdown.

    Args:
        url: The Redis URL (`REDIS_URL`).
        worker: This worker's id, unique in the service (`WORKER_ID`).
        max_calls: Calls at once across all workers; 0 for no shared cap.
        lease_s: How long a lease or a presence outlives its last renewal: the time
            after which a dead worker's lines are free and its calls are closed.
        prefix: Key prefix, to run several services on one Redis.
    """

    def __init__(
        self, *, url: str, worker: str, max_calls: int = 0, lease_s: float = 15.0,
        prefix: str = "callwright",
    ):
        super().__init__()
        self.worker = worker
        self.max_calls = max_calls
        self._redis = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.lease_s = lease_s
        self._lease_ms = int(lease_s * 1000)
        self._beat_s = lease_s / 5
        self._lines_key = f"{prefix}:lines"
        self._channel = f"{prefix}:changes"
        self._events_channel = f"{prefix}:call-events"
        self._on_event: Callable[[str, dict], Awaitable[None]] | None = None
        self._presence = f"{prefix}:worker:"
        self._admit = self._redis.register_script(ADMIT)
        self._renew = self._redis.register_script(RENEW)
        self._in_use = self._redis.register_script(IN_USE)
        self._held: set[str] = set()  # call SIDs running here, whose leases we renew
        self._tasks: list[asyncio.Task] = []
        self._publishing: asyncio.Task | None = None
        self._warned_at = 0.0

    async def start(self) -> None:
        """Announce this worker, then keep its presence and its calls' leases alive and
        listen for other workers' changes."""
        await self._redis.ping()
        await self._beat()
        self._tasks = [asyncio.create_task(self._heartbeat(), name="cluster-heartbeat"),
                       asyncio.create_task(self._listen(), name="cluster-listen")]
        logger.info(f"worker {self.worker}: joined the service"
                    f"{f' (calls across workers: {self.max_calls})' if self.max_calls else ''}")

    async def close(self) -> None:
        """Leave the service: stop renewing, withdraw this worker's presence."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._redis.delete(self._presence + self.worker)
        await self._redis.aclose()

    def _warn(self, what: str, exc: BaseException) -> None:
        if time.monotonic() - self._warned_at > 10:  # a Redis outage: one line per 10 s
            self._warned_at = time.monotonic()
            logger.warning(f"redis: {what} failed ({exc!r}); going on without it")

    async def admit(self, call_sid: str, *, hold_s: float) -> bool:
        """Take one of the service's lines for `call_sid`, held for `hold_s` unless renewed.

        True without asking when there is no shared cap, or when Redis is away (each
        worker's own cap still holds).
        """
        if not self.max_calls:
            return True
        try:
            keys, args = [self._lines_key], [call_sid, self.max_calls, int(hold_s * 1000)]
            return bool(await self._admit(keys=keys, args=args))
        except RedisError as exc:
            self._warn("admission", exc)
            return True

    def hold(self, call_sid: str) -> None:
        """The call runs here: renew its lease until `release`."""
        self._held.add(call_sid)

    async def release(self, call_sid: str) -> None:
        """The call has ended here, or will never start: free its line."""
        self._held.discard(call_sid)
        try:
            await self._redis.zrem(self._lines_key, call_sid)
        except RedisError as exc:
            self._warn("releasing a line", exc)  # its lease lapses by itself

    async def in_use(self) -> int:
        """Lines held across the service (admitted calls whose stream is due, and running)."""
        return int(await self._in_use(keys=[self._lines_key]))

    async def alive(self, workers: Collection[str]) -> set[str]:
        """Which of `workers` have renewed their presence within the lease."""
        workers = list(workers)
        async with self._redis.pipeline(transaction=False) as pipe:
            for worker in workers:
                pipe.exists(self._presence + worker)
            return {w for w, up in zip(workers, await pipe.execute(), strict=True) if up}

    async def _beat(self) -> None:
        await self._redis.set(self._presence + self.worker, str(time.time()), px=self._lease_ms)
        if self._held:
            await self._renew(keys=[self._lines_key], args=[self._lease_ms, *self._held])

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self._beat_s)
            try:
                await self._beat()
            except Exception as exc:  # never let the heartbeat die: that reads as death
                self._warn("heartbeat", exc)

    def notify(self) -> None:
        """Tell every worker's live feeds that calls changed (one publish at a time)."""
        if self._publishing is None or self._publishing.done():
            self._publishing = asyncio.get_running_loop().create_task(self._publish())

    async def _publish(self) -> None:
        try:
            await self._redis.publish(self._channel, self.worker)
        except RedisError as exc:
            self._warn("publishing a change", exc)
            super().notify()  # this worker's own pages still wake

    def on_call_event(self, handler: Callable[[str, dict], Awaitable[None]]) -> None:
        """Have `handler(call_sid, event)` hear the call events relayed by any worker (this
        one's too); it acts on those of the calls running here."""
        self._on_event = handler

    async def relay(self, call_sid: str, event: dict) -> None:
        """Pass `event` (JSON-able) on to whichever worker runs `call_sid`.

        Raises:
            redis.exceptions.RedisError: Redis is away.
        """
        await self._redis.publish(self._events_channel,
                                  json.dumps({"call_sid": call_sid, "event": event}))

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel, self._events_channel)
                    async for message in pubsub.listen():
                        if message["channel"].decode() == self._events_channel:
                            await self._deliver(message["data"])
                        else:
                            super().notify()
            except RedisError as exc:
                self._warn("listening for changes", exc)
                await asyncio.sleep(1.0)

    async def _deliver(self, data: bytes) -> None:
        try:
            relayed = json.loads(data)
            call_sid, event = str(relayed["call_sid"]), dict(relayed["event"])
        except (ValueError, KeyError, TypeError):
            logger.warning("redis: an unreadable call event was ignored")
            return
        if self._on_event is not None:
            try:
                await self._on_event(call_sid, event)
            except Exception:  # one bad event must not stop the listener
                logger.exception(f"call {call_sid}: handling a relayed event failed")


async def close_calls_of_dead_workers(cluster: Cluster, store: CallStore) -> None:
    """Forever: store the running calls of workers that stopped renewing their presence as
    interrupted ("worker-lost"); their turns are already stored. Checks thrice per lease."""
    while True:
        await asyncio.sleep(cluster.lease_s / 3)
        try:
            workers = await store.workers_with_calls() - {cluster.worker}
            if dead := workers - await cluster.alive(workers):
                closed = await store.interrupt_unfinished(workers=dead, reason="worker-lost")
                logger.warning(f"workers {', '.join(sorted(dead))} stopped answering: "
                               f"{closed} of their calls stored as interrupted")
        except Exception as exc:  # the database or Redis away: next round
            logger.warning(f"checking other workers failed ({exc!r})")
