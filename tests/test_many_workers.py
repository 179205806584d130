"""Several `callwright serve` workers as one service: real workers sharing a real PostgreSQL
and Redis, behind a real nginx, called over Twilio's protocol."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest
import redis.asyncio as redis

from callwright.testing.balancer import Nginx
from callwright.testing.twilio_emulator import TwilioCaller
from tests.admin_seed import add_user
from tests.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    create_pg_database,
    drop_pg_database,
    free_port,
    launch_server,
    pg_available,
    speech_8k,
    wait_ready,
)
from tests.test_admin_site import signed_in_cookie

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("CALLWRIGHT_TEST_REDIS", "redis://127.0.0.1:6379/7")
PUBLIC_URL = "https://calls.example.test"  # the balancer's address, the same for every worker
LEASE_S = 3.0
SUNDAY = "What time do you open on Sunday?"
SECOND_LINE = "Can I book a table for four people tomorrow evening?"


@pytest.fixture(scope="module")
async def service(tmp_path_factory, rest_standin):
    """Two workers (w1, w2) with a cap of two calls across them, behind nginx; a third
    worker (w3) is started by the test that kills one."""
    if not await pg_available():
        pytest.skip("PostgreSQL is not reachable")
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.flushdb()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable ({exc})")
    finally:
        await client.aclose()
    database = await create_pg_database()
    env = {"DATABASE_URL": database, "REDIS_URL": REDIS_URL, "MAX_CALLS_TOTAL": "2",
           "WORKER_LEASE_SECONDS": str(LEASE_S), "PUBLIC_URL": PUBLIC_URL,
           "SHUTDOWN_GRACE_SECONDS": "60"}
    root = tmp_path_factory.mktemp("service")
    for name in ("w1", "w2", "w3"):
        (root / name).mkdir()
    workers = {name: launch_server(root / name, rest_url=rest_standin.base_url,
                                   WORKER_ID=name, **env) for name in ("w1", "w2")}
    for worker in workers.values():
        wait_ready(worker, timeout_s=180)
    add_user(workers["w1"], "sue", "supervisor")
    nginx = Nginx(upstreams=[f"127.0.0.1:{w.port}" for w in workers.values()],
                  port=free_port(), workdir=root / "nginx")
    with nginx:
        yield Service(workers=workers, nginx=nginx, env=env, root=root,
                      rest_url=rest_standin.base_url)
    for worker in workers.values():
        worker.stop()
    await drop_pg_database(database)


class Service:
    def __init__(self, *, workers, nginx, env, root, rest_url):
        self.workers, self.nginx, self.env, self.root = workers, nginx, env, root
        self.rest_url = rest_url

    def caller(self, *, webhook: str | None = None, stream: str | None = None,
               from_number: str = "+15550100061") -> TwilioCaller:
        """A Twilio call whose webhook and stream go to the named workers (else nginx)."""
        url = {name: w.url for name, w in self.workers.items()}
        return TwilioCaller(base_url=url.get(webhook, self.nginx.url),
                            stream_base_url=url.get(stream, self.nginx.url),
                            auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID,
                            public_url=PUBLIC_URL, from_number=from_number)

    async def stored(self, call_sid: str) -> dict:
        worker = next(iter(w for w in self.workers.values() if w.process.poll() is None))
        return await worker.call_by_sid(call_sid)

    async def wait_ended(self, call_sid: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            call = await self.stored(call_sid)
            if call["ended_at"] or time.monotonic() > deadline:
                return call
            await asyncio.sleep(0.2)


async def _answered(twilio: TwilioCaller):
    """Post the webhook; the stream's parameters, or None when told all lines are busy."""
    response = await twilio.post_webhook()
    response.raise_for_status()
    if "<Connect>" not in response.text:
        assert "busy" in response.text.lower(), response.text
        return None
    return twilio.parse_twiml(response.text)


async def test_webhook_on_one_worker_and_stream_on_another(service):
    twilio = service.caller(webhook="w1", stream="w2")
    result = await twilio.call([speech_8k(SUNDAY)], hang_up=True)
    assert result.errors == []
    assert len(result.latencies_ms) == 1  # the question was answered on the line
    call = await service.wait_ended(twilio.call_sid, 15)
    assert call["worker"] == "w2" and call["end_reason"] == "caller-hangup"
    assert [t["speaker"] for t in call["turns"]][:3] == ["agent", "caller", "agent"]
    assert f"call {twilio.call_sid}: answering" in service.workers["w1"].log()
    assert f"call {twilio.call_sid}: stream" in service.workers["w2"].log()
    assert f"call {twilio.call_sid}: stream" not in service.workers["w1"].log()


async def test_an_answering_machine_result_reaches_the_worker_running_the_call(service):
    """Twilio's asynchronous AMD callback lands on w1 while the call's stream runs on w2:
    w2 hears of it through Redis and treats the line as a machine: what was playing is
    cleared from the line (a flow's voicemail node would speak next)."""
    twilio = service.caller(webhook="w1", stream="w2", from_number="+15550100065")
    async with twilio.open_stream() as session:
        await session.wait_reply(1.0, 20)
        assert session.result.clears == 0
        amd = {"AccountSid": ACCOUNT_SID, "CallSid": twilio.call_sid,
               "AnsweredBy": "machine_end_beep", "MachineDetectionDuration": "2900"}
        twilio.base_url = service.workers["w1"].url
        told = time.monotonic()
        assert (await twilio.post_signed("/twilio/amd", amd)).status_code == 204
        deadline = told + 5
        while not session.result.clears and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert session.result.clears == 1, "w2 was not told of the machine"
        print(f"the line was cleared {session.result.clear_times[0] - told:.2f} s after the "
              "callback reached w1")
    call = await service.stored(twilio.call_sid)
    assert call["answered_by"] == "machine_end_beep" and call["worker"] == "w2"


async def test_the_cap_holds_across_workers(service):
    """Two lines for the whole service: a third call is refused whichever worker it reaches,
    and a line is free again as soon as a call ends."""
    first = service.caller(webhook="w1", stream="w1")
    second = service.caller(webhook="w2", stream="w2")
    async with first.open_stream() as one, second.open_stream() as two:
        await one.wait_reply(1.0, 20)
        await two.wait_reply(1.0, 20)
        for worker in ("w1", "w2", None):
            assert await _answered(service.caller(webhook=worker)) is None, worker
    await service.wait_ended(first.call_sid, 15)
    await service.wait_ended(second.call_sid, 15)
    answered = [service.caller(), service.caller()]
    for twilio in answered:
        assert await _answered(twilio) is not None  # admitted: its stream is due
    assert await _answered(service.caller()) is None  # two answered, none connected yet
    for twilio in answered:  # the caller hung up before the stream: the lines are free
        assert (await twilio.post_status("completed")).status_code == 204
    assert await _answered(last := service.caller()) is not None
    await last.post_status("completed")


async def test_live_events_reach_every_worker(service):
    """The admin live feed on w1 shows a call running on w2, with its turns, as they happen."""
    events: list[tuple[float, str, dict]] = []
    twilio = service.caller(webhook="w2", stream="w2", from_number="+15550100062")

    async def follow():
        async with httpx.AsyncClient(base_url=service.workers["w1"].url, timeout=None) as c:
            cookie = await signed_in_cookie(c, "sue")
            async with c.stream("GET", "/admin/live/events", headers={"cookie": cookie}) as r:
                event = ""
                async for line in r.aiter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:"):
                        events.append((time.monotonic(), event, json.loads(line[5:])))

    follower = asyncio.create_task(follow())
    try:
        await asyncio.sleep(1.0)
        async with twilio.open_stream() as session:
            await session.wait_reply(1.0, 20)
            greeted = time.monotonic()
            await asyncio.sleep(2.5)
        await service.wait_ended(twilio.call_sid, 15)
        await asyncio.sleep(2.5)
    finally:
        follower.cancel()
    stored = await service.stored(twilio.call_sid)
    mine = [(t, e, d) for t, e, d in events
            if d.get("id") == stored["id"] or d.get("call_id") == stored["id"]]
    kinds = [e for _, e, _ in mine]
    assert kinds[0] == "call" and "turn" in kinds and kinds[-1] == "ended", kinds
    greeting = next(d for _, e, d in mine if e == "turn")
    assert greeting["speaker"] == "agent" and greeting["text"]
    print(f"greeting on w1's live feed {next(t for t, e, _ in mine if e == 'turn') - greeted:+.2f}"
          " s after the caller heard it end")


async def test_a_killed_worker_ends_only_its_own_calls(service):
    """SIGKILL a worker while its caller hears a reply: its call is stored as interrupted
    with every turn spoken so far, the reply cut where the caller stopped hearing it; a
    call on another worker goes on at real time, and the dead worker's line comes back."""
    w3 = launch_server(service.root / "w3", rest_url=service.rest_url, WORKER_ID="w3",
                       **service.env)
    wait_ready(w3, timeout_s=180)
    doomed = service.caller(webhook="w1", stream=None)
    doomed.stream_base_url = w3.url
    survivor = service.caller(webhook="w2", stream="w2", from_number="+15550100063")
    try:
        async with survivor.open_stream() as alive:
            await alive.wait_reply(1.0, 20)
            async with doomed.open_stream() as dying:
                await dying.wait_reply(1.0, 20)
                spoke = await dying.speak(speech_8k(SUNDAY))
                await dying.wait_reply(1.2, 20, after=spoke + 1.0)
                spoke = await dying.speak(speech_8k(SECOND_LINE))
                heard = await dying.wait_speech_after(spoke + 1.0, 20)
                assert heard is not None
                await asyncio.sleep(1.0)  # a second of the reply reaches the caller
                w3.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                w3.process.wait(10)
                await asyncio.wait_for(dying.closed.wait(), 5)  # the socket went with it
            sent = await alive.speak(speech_8k(SUNDAY))
            heard = await alive.wait_speech_after(sent + 2.0, 20)
            assert heard is not None, "the call on a live worker stopped answering"
        call = await service.wait_ended(doomed.call_sid, LEASE_S * 4)
        print(f"the dead worker's call closed {time.monotonic() - killed:.1f} s after the kill")
        assert (call["status"], call["end_reason"]) == ("interrupted", "worker-lost")
        turns = call["turns"]
        assert [t["speaker"] for t in turns] == ["agent", "caller", "agent", "caller", "agent"]
        assert "sunday" in turns[1]["text"].lower() and "tomorrow" in turns[3]["text"].lower()
        cut = turns[4]
        print(f"the reply being heard at the kill was stored as {cut['text']!r} of "
              f"{cut['planned_text']!r}")
        assert cut["interrupted"] and cut["text"]
        assert cut["planned_text"].startswith(cut["text"]) and cut["text"] != cut["planned_text"]
        other = await service.wait_ended(survivor.call_sid, 15)
        assert other["end_reason"] == "caller-hangup"
    finally:
        w3.stop()


async def test_a_draining_worker_hands_new_calls_to_the_others(service):
    """SIGTERM w2 during a call on it: the call goes on to its end, new calls reach w1
    through nginx, and w2 stops once its call is over."""
    await asyncio.sleep(LEASE_S + 1)  # the killed worker's line has lapsed
    w2 = service.workers["w2"]
    running = service.caller(webhook="w2", stream="w2", from_number="+15550100064")
    async with running.open_stream() as session:
        await session.wait_reply(1.0, 20)
        w2.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as client:
            assert (await client.get(f"{w2.url}/healthz")).status_code == 503
        for _ in range(2):  # round robin sends one of two in a row to w2
            twilio = service.caller()
            assert await _answered(twilio) is not None
            assert f"call {twilio.call_sid}: answering" in service.workers["w1"].log()
            twilio.base_url = service.workers["w1"].url
            await twilio.post_status("completed")  # gives its line back
        assert "passing it to another worker" in w2.log()
        assert w2.process.poll() is None  # its call is still running
        sent = await session.speak(speech_8k(SUNDAY))
        assert await session.wait_speech_after(sent + 2.0, 20) is not None
    w2.process.wait(20)
    call = await service.wait_ended(running.call_sid, 5)
    assert call["end_reason"] == "caller-hangup"
