"""Model workers as a pool: health checks, least-busy routing, calls moved off a lost
worker, and workers that join and leave through Redis.

The workers are real websocket servers in this process (`ModelWorker`) hosting a small
backend that says which worker answered; the registry is the real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    BackendBusy,
    Capabilities,
    ContextTurn,
    EndOfTurn,
    Event,
    TextDelta,
    ToolResult,
    TurnRequest,
)
from callwright.agent.backends.worker_pool import WorkerPool
from callwright.agent.workers.registry import KEY, WorkerRegistry
from callwright.agent.workers.server import ModelWorker
from tests.support import free_port

SECRET = "pool-secret-" + "y" * 30
REDIS_URL = os.environ.get("CALLWRIGHT_TEST_REDIS", "redis://127.0.0.1:6379/7")


class Named(AudioLLM):
    """Says its own name; `hold` makes a turn stop after its first chunk until released."""

    capabilities = Capabilities()

    def __init__(self, name: str):
        self.name = name
        self.turns = 0
        self.requests: list[TurnRequest] = []
        self.end = EndOfTurn()
        self.hold = asyncio.Event()
        self.hold.set()

    async def load(self) -> None:
        pass

    async def open_session(self) -> AudioLLMSession:
        return NamedSession(self)


class NamedSession(AudioLLMSession):
    def __init__(self, backend: Named):
        self._backend = backend

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        self._backend.turns += 1
        self._backend.requests.append(request)
        yield TextDelta(text=self._backend.name)
        await self._backend.hold.wait()
        yield AudioChunk(audio=bytes(320), sample_rate=16_000)
        yield self._backend.end

    async def prepare(self, audio: bytes) -> str | None:
        return f"{len(audio)} bytes heard by {self._backend.name}"

    async def cancel(self) -> None:
        pass


class Worker:
    """A `ModelWorker` on a free loopback port."""

    def __init__(self, name: str, *, max_sessions: int = 2):
        self.backend = Named(name)
        self.model = ModelWorker(backend=self.backend, max_sessions=max_sessions, secret=SECRET)
        self.url = f"ws://127.0.0.1:{free_port()}"
        self.server = None

    async def start(self) -> Worker:
        port = int(self.url.rsplit(":", 1)[1])
        self.server = await self.model.serve(host="127.0.0.1", port=port)
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def workers():
    started = [await Worker(name).start() for name in ("w1", "w2", "w3")]
    yield started
    for worker in started:
        await worker.stop()


@contextlib.asynccontextmanager
async def pool_of(*urls: str) -> AsyncIterator[WorkerPool]:
    pool = WorkerPool(urls=list(urls), secret=SECRET, health_every_s=0.2)
    await pool.load()
    try:
        yield pool
    finally:
        await pool.close()


async def reply(session: AudioLLMSession) -> list[Event]:
    return [e async for e in session.respond(TurnRequest(audio=bytes(3200)))]


def speaker(events: list[Event]) -> str:
    return next(e.text for e in events if isinstance(e, TextDelta))


async def test_new_calls_go_to_the_least_busy_worker(workers):
    w1, w2, w3 = workers
    async with pool_of(w1.url) as other, pool_of(w1.url, w2.url, w3.url) as pool:
        held = [await other.open_session() for _ in range(2)]  # another server fills w1
        await asyncio.sleep(0.6)  # a health round sees it
        assert pool.workers[w1.url] == "up (100% busy)"
        sessions = [await pool.open_session() for _ in range(4)]
        assert [w.model.sessions for w in workers] == [2, 2, 2]
        assert [speaker(await reply(s)) for s in sessions].count("w1") == 0
        with pytest.raises(BackendBusy, match="no free model worker"):
            await pool.open_session()
        for session in sessions + held:
            await session.close()


async def test_a_turn_and_its_end_cross_to_the_worker_whole(workers):
    """Early audio (prepare), keys, silence, the machine result and tool results reach the
    hosted model, and its transfer, tones and listen timeout come back."""
    w1 = workers[0]
    async with pool_of(w1.url) as pool:
        session = await pool.open_session()
        w1.backend.end = EndOfTurn(transfer_to="+15550100999", dtmf="1", listen_timeout_s=4.0)
        request = TurnRequest(
            audio=None, dtmf="42#", answered_by="human", instructions="Be brief.",
            history=(ContextTurn(role="caller", text="My order number is"),),
            tools=({"name": "lookup"},),
            tool_results=(ToolResult(call_id="c1", name="lookup", result={"status": "sent"}),))
        # The caller paused: the worker starts on the audio and says what it heard.
        assert await session.prepare(bytes(3200)) == "3200 bytes heard by w1"
        events = [e async for e in session.respond(request)]
        assert w1.backend.requests == [request]
        assert events[-1] == w1.backend.end
        await session.close()


async def test_a_worker_that_stops_answering_is_skipped_until_it_is_back(workers):
    w1, w2, _ = workers
    async with pool_of(w1.url, w2.url) as pool:
        await w1.stop()
        await asyncio.sleep(0.8)  # a few health rounds
        assert pool.workers[w1.url].startswith("down")
        for _ in range(3):  # every call goes to w2, without a try on w1
            session = await pool.open_session()
            assert speaker(await reply(session)) == "w2"
            await session.close()
        await w1.start()
        await asyncio.sleep(0.8)
        assert pool.workers[w1.url].startswith("up")


async def test_a_call_whose_worker_is_lost_between_turns_moves_unheard(workers):
    w1, w2, _ = workers
    async with pool_of(w1.url, w2.url) as pool:
        session = await pool.open_session()
        first = speaker(await reply(session))
        lost, spare = (w1, w2) if first == "w1" else (w2, w1)
        await lost.stop()
        events = await reply(session)  # the next turn, at once, on the other worker
        assert speaker(events) == spare.backend.name
        assert isinstance(events[-1], EndOfTurn) and events[-1].error is None
        assert session.worker == spare.url
        assert pool.workers[lost.url].startswith("down")
        await session.close()


async def test_a_worker_lost_mid_reply_hands_the_turn_to_the_fallback(workers):
    w1, w2, _ = workers
    async with pool_of(w1.url, w2.url) as pool:
        session = await pool.open_session()
        w1.backend.hold.clear()
        w2.backend.hold.clear()
        turn = aiter(session.respond(TurnRequest(audio=bytes(3200))))
        name = (await anext(turn)).text  # part of the reply is out
        await next(w for w in workers if w.backend.name == name).stop()
        rest = [e async for e in turn]
        assert len(rest) == 1 and "lost mid-reply" in rest[0].error
        w1.backend.hold.set()
        w2.backend.hold.set()
        assert speaker(await reply(session)) != name  # later turns run on the other worker
        await session.close()


async def test_a_draining_worker_finishes_its_calls_and_takes_no_new_ones(workers):
    w1, w2, _ = workers
    async with pool_of(w1.url, w2.url) as pool:
        session = await pool.open_session()
        here = next(w for w in (w1, w2) if w.model.sessions == 1)
        drained = asyncio.create_task(here.model.drain(timeout_s=10))
        await asyncio.sleep(0.5)
        assert pool.workers[here.url] == "draining"
        assert speaker(await reply(session)) == here.backend.name  # its call goes on
        others = [await pool.open_session() for _ in range(2)]
        assert here.model.sessions == 1  # no new call went to it
        assert not drained.done()
        await session.close()
        assert await asyncio.wait_for(drained, 5) is True
        for other in others:
            await other.close()


@pytest.fixture
async def registry_redis():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(KEY)
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable ({exc})")
    yield client
    await client.delete(KEY)
    await client.aclose()


async def test_workers_join_and_leave_through_redis(workers, registry_redis):
    w1, w2, _ = workers
    advert = WorkerRegistry(redis_url=REDIS_URL, secret=SECRET)
    pool = WorkerPool(urls=[], redis_url=REDIS_URL, secret=SECRET, health_every_s=0.2)
    await pool.load()
    try:
        assert pool.workers == {}
        with pytest.raises(BackendBusy):
            await pool.open_session()
        await advert.advertise(w1.url)
        await asyncio.sleep(0.6)
        assert list(pool.workers) == [w1.url]
        session = await pool.open_session()
        assert speaker(await reply(session)) == "w1"
        # An entry not signed with the workers' secret is never used.
        forged = json.dumps({"until": 2**62, "sig": "0" * 64})
        await registry_redis.hset(KEY, "ws://attacker.example:8765", forged)
        # A worker whose entry is not renewed drops out once it lapses.
        await advert.advertise(w2.url, ttl_s=0.5)
        await asyncio.sleep(0.3)
        assert sorted(pool.workers) == sorted([w1.url, w2.url])
        await asyncio.sleep(0.8)
        assert list(pool.workers) == [w1.url]
        # Leaving: no new calls; its call stays on it, health-checked, until it ends.
        await advert.withdraw(w1.url)
        await asyncio.sleep(0.6)
        assert pool.workers == {w1.url: "leaving (1 call(s) left on it)"}
        with pytest.raises(BackendBusy):
            await pool.open_session()
        assert speaker(await reply(session)) == "w1"
        await session.close()
        await asyncio.sleep(0.6)
        assert pool.workers == {}
    finally:
        await pool.close()
        await advert.close()


HUNG_WORKER = """
import asyncio, sys
from tests.test_worker_pool import Named, SECRET
from callwright.agent.workers.server import ModelWorker

async def main():
    await ModelWorker(backend=Named("hung"), secret=SECRET).serve(
        host="127.0.0.1", port=int(sys.argv[1]))
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_hung_worker_is_given_up_and_its_call_moves(workers):
    """SIGSTOP the worker holding a call: its socket stays open but nothing answers. The
    health checks give it up and the call's next turn runs on another worker."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HUNG_WORKER, str(port), stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent)
    try:
        assert await asyncio.wait_for(process.stdout.readline(), 30) == b"ready\n"
        hung_url = f"ws://127.0.0.1:{port}"
        pool = WorkerPool(urls=[hung_url, workers[1].url], secret=SECRET)  # default checks
        await pool.load()
        sessions = [await pool.open_session() for _ in range(2)]  # least busy: one on each
        session = next(s for s in sessions if s.worker == hung_url)
        assert speaker(await reply(session)) == "hung"
        process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        events = await reply(session)  # waits on the hung worker until it is given up
        moved_after = time.monotonic() - stopped
        assert speaker(events) == "w2" and events[-1].error is None
        assert pool.workers[hung_url].startswith("down")
        print(f"a hung worker's call moved after {moved_after:.2f} s")
        assert moved_after < 2.5, f"the call waited {moved_after:.1f} s on a hung worker"
        for session in sessions:
            await session.close()
        await pool.close()
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
