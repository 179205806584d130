"""Business webhooks: each call's end reaches a real receiver on loopback once per URL,
signed, with its outcome, summary and emotion trajectory; failures are retried, then dead,
then replayed from the admin site; claims are exclusive. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response
from sqlalchemy import select, update

from callwright.admin import site as admin_site
from callwright.admin.accounts import AccountStore
from callwright.admin.models import AuditEntry
from callwright.memory.db import create_engine, migrate, sessionmaker
from callwright.memory.lifecycle import CallMemory
from callwright.memory.models import Call, WebhookDelivery, utcnow
from callwright.memory.settings import MemorySettings
from callwright.memory.store import CallStore, TurnRecord
from callwright.memory.writer import TurnWriter
from callwright.metrics import Metrics
from callwright.outbox import DeliveryStore, WebhookConfig, WebhookDispatcher
from callwright.webhooks import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    sign,
    verify_signature,
)
from tests.support import ROOT, free_port

SECRET = "whsec-" + "k" * 26
PASSWORD = "correct horse battery"
FAST = dict(poll_s=0.05, timeout_s=2.0, summary_wait_s=5.0, backoff_s=0.05,
            backoff_max_s=0.2, max_attempts=3)


@dataclass
class Received:
    path: str
    headers: httpx.Headers
    body: bytes
    signed: bool
    at: float

    @property
    def payload(self) -> dict:
        return json.loads(self.body)


class Served:
    """An ASGI app served by uvicorn in this process, on a loopback port."""

    def __init__(self, app: FastAPI, port: int | None = None):
        self.app, self.port = app, port or free_port()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = uvicorn.Server(uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("not serving")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await self._task


class Receiver(Served):
    """The business's side: checks every request's signature with `verify_signature`, and
    answers each path with the status codes scripted for it, then 200."""

    def __init__(self, port: int | None = None):
        self.received: list[Received] = []
        self.script: dict[str, deque[int]] = defaultdict(deque)
        app = FastAPI()

        @app.post("/{path}")
        async def hook(path: str, request: Request) -> Response:
            body = await request.body()
            signed = verify_signature(SECRET, request.headers.get(SIGNATURE_HEADER), body,
                                      tolerance_s=60)
            self.received.append(Received(path, request.headers, body, signed,
                                          time.monotonic()))
            if not signed:
                return Response(status_code=401)
            answers = self.script[path]
            code = answers.popleft() if answers else 200
            return Response(f"answer {code}", status_code=code)

        super().__init__(app, port)

    def on(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]


@pytest.fixture
async def receiver():
    receiver = Receiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


class Harness:
    """A call store, long-term memory and a webhook dispatcher on a fresh database, as the
    app wires them."""

    def __init__(self, database_url: str, *, urls: list[str], worker: str = "w1",
                 start: bool = True, **config):
        self.database_url, self.urls, self.worker = database_url, urls, worker
        self.config = WebhookConfig(urls=tuple(urls), secret=SECRET, **{**FAST, **config})
        self.start = start

    async def __aenter__(self) -> Harness:
        self.engine = create_engine(self.database_url)
        await migrate(self.engine)
        self.store = CallStore(self.engine, worker=self.worker)
        self.turns = TurnWriter(self.store)
        self.turns.start()
        self.memory = CallMemory(engine=self.engine, turns=self.turns, settings=MemorySettings())
        self.memory.writer.start()
        self.metrics = Metrics()
        self.dispatcher = WebhookDispatcher(self.engine, config=self.config, worker=self.worker,
                                            settle=self.memory.settle_call, metrics=self.metrics)
        self.store.end_hooks.append(self.dispatcher.enqueue)
        if self.start:
            self.dispatcher.start()
        return self

    async def __aexit__(self, *_exc) -> None:
        if self.start:
            await self.dispatcher.close()
        await self.memory.close()
        await self.turns.close()
        await self.engine.dispose()

    async def rows(self) -> list[WebhookDelivery]:
        async with sessionmaker(self.engine)() as session:
            return list(await session.scalars(select(WebhookDelivery)
                                              .order_by(WebhookDelivery.id)))

    async def call(self, sid: str, **fields) -> int:
        call_id = await self.store.create_call(call_sid=sid, transport="twilio",
                                               from_number="+15550101234",
                                               to_number="+15550109999", token_nonce="n-" + sid)
        await self.store.claim_stream(call_sid=sid, nonce="n-" + sid, stream_sid="MZ" + sid[2:])
        if fields:
            await self.store.update_call(call_id, **fields)
        return call_id

    def counted(self, result: str) -> float:
        return self.metrics.registry.get_sample_value(
            "callwright_webhook_deliveries_total", {"result": result}) or 0.0


async def until(predicate, timeout_s: float = 10.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.02)


def _turn(call_id: int, seq: int, speaker: str, text: str, **fields) -> TurnRecord:
    return TurnRecord(call_id=call_id, seq=seq, speaker=speaker, text=text,
                      start_ms=seq * 3000, end_ms=seq * 3000 + 2000, **fields)


async def test_a_call_that_ends_reaches_each_url_once(database_url, receiver):
    urls = [f"{receiver.url}/crm", f"{receiver.url}/sheet?token=abc"]
    async with Harness(database_url, urls=urls) as h:
        call_id = await h.call("CA" + "1" * 32)
        await h.store.update_flow(call_id, flow_name="restaurant", flow_version="f00d",
                                  flow_path=["greeting", "booking"],
                                  slots={"party": 4, "day": "Friday"})
        for record in [
            _turn(call_id, 0, "agent", "Hello, you have reached Luigi's."),
            _turn(call_id, 1, "caller", "I would like to book a table for four on Friday.",
                  emotion="neutral", arousal=0.1, valence=0.2),
            _turn(call_id, 2, "agent", "What name should I put it under?"),
            _turn(call_id, 3, "caller", "Why is this taking so long?", emotion="frustrated",
                  arousal=0.8, valence=-0.7),
            _turn(call_id, 4, "caller", "Hang on."),  # not analysed
        ]:
            h.turns.write(record)  # still buffered when the call ends, as in a real call
        h.memory.end_call(call_id)  # the summary, which the delivery waits for
        await h.store.finish_call(call_id, status="completed", reason="caller-hangup")
        await h.store.finish_call(call_id, status="failed", reason="stream-dropped")  # ignored
        await until(lambda: _delivered(h, 2), what="both URLs delivered")
        await asyncio.sleep(0.3)  # nothing else arrives
        rows = await h.rows()
        async with sessionmaker(h.engine)() as session:
            call = await session.get(Call, call_id)
        assert h.counted("delivered") == 2

    assert sorted(r.path for r in receiver.received) == ["crm", "sheet"]
    assert all(r.signed for r in receiver.received)
    assert call.outcome == "abandoned" and call.summary
    for got in receiver.received:
        row = next(r for r in rows if r.delivery_id == got.headers[DELIVERY_HEADER])
        assert got.body.decode() == row.body  # the frozen body, byte for byte
        assert got.headers[EVENT_HEADER] == "call.ended" and got.headers[ATTEMPT_HEADER] == "1"
        assert got.headers["content-type"] == "application/json"
        assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 200)
        event = got.payload
        assert event["event"] == "call.ended" and event["delivery_id"] == row.delivery_id
        assert event["summary"] == call.summary
        info = event["call"]
        assert info["id"] == call_id and info["call_sid"] == "CA" + "1" * 32
        assert (info["status"], info["end_reason"], info["outcome"]) == (
            "completed", "caller-hangup", "abandoned")
        assert info["from_number"] == "+15550101234" and info["to_number"] == "+15550109999"
        assert info["transport"] == "twilio" and info["direction"] == "inbound"
        assert info["duration_s"] >= 0 and info["ended_at"].endswith("Z")
        assert info["transferred_to"] is None and info["answered_by"] is None
        assert event["flow"] == {"name": "restaurant", "version": "f00d",
                                 "path": ["greeting", "booking"]}
        assert event["slots"] == {"party": 4, "day": "Friday"}
        emotion = event["emotion"]
        assert emotion["turns"] == [
            {"seq": 1, "start_ms": 3000, "emotion": "neutral", "arousal": 0.1, "valence": 0.2},
            {"seq": 3, "start_ms": 9000, "emotion": "frustrated", "arousal": 0.8,
             "valence": -0.7},
            {"seq": 4, "start_ms": 12000, "emotion": None, "arousal": None, "valence": None},
        ]
        assert emotion["counts"] == {"neutral": 1, "positive": 0, "frustrated": 1, "sad": 0}
        assert emotion["last"] == "frustrated"
    assert receiver.received[0].headers[DELIVERY_HEADER] != \
        receiver.received[1].headers[DELIVERY_HEADER]


async def _delivered(h: Harness, count: int) -> bool:
    return sum(r.status == "delivered" for r in await h.rows()) >= count


async def test_every_way_a_call_ends_is_delivered(database_url, receiver):
    async with Harness(database_url, urls=[f"{receiver.url}/hook"]) as h:
        booked = await h.call("CA" + "2" * 32, outcome="booked")  # set by its flow
        await h.store.finish_call(booked, status="completed", reason="agent-hangup")
        moved = await h.call("CA" + "3" * 32, transferred_to="+15550107777")
        await h.store.finish_call(moved, status="completed", reason="transferred")
        # Twilio's status callback for an outbound call that never connected.
        unanswered = await h.store.record_outbound(
            call_sid="CA" + "4" * 32, account_sid="AC" + "0" * 32, from_number="+15550100000",
            to_number="+15550108888", flow_name=None)
        await h.store.finish_call(unanswered, status="no-answer", reason="twilio-no-answer")
        machine = await h.call("CA" + "5" * 32, answered_by="machine_end_beep")
        await h.store.finish_call(machine, status="completed", reason="caller-hangup")
        # A server that died: another one closes its calls.
        orphan = await h.call("CA" + "6" * 32, worker="gone")
        assert await h.store.interrupt_unfinished(workers={"gone"}, reason="worker-lost") == 1
        await until(lambda: _delivered(h, 5), what="five calls delivered")
        await asyncio.sleep(0.2)

    outcomes = {r.payload["call"]["id"]: r.payload["call"]["outcome"] for r in receiver.received}
    assert len(receiver.received) == 5 and all(r.signed for r in receiver.received)
    assert outcomes == {booked: "booked", moved: "transferred", unanswered: "failed",
                        machine: "voicemail", orphan: "failed"}
    by_id = {r.payload["call"]["id"]: r.payload["call"] for r in receiver.received}
    assert by_id[unanswered]["direction"] == "outbound"
    assert by_id[unanswered]["started_at"] is None and by_id[unanswered]["duration_s"] is None
    assert by_id[moved]["transferred_to"] == "+15550107777"
    assert by_id[orphan]["status"] == "interrupted"


async def test_down_then_dead_then_replayed_from_the_admin(database_url, receiver, tmp_path):
    later = Receiver()  # not listening yet: connections are refused
    flaky = f"{receiver.url}/flaky"
    receiver.script["flaky"].extend([503, 429])
    urls = [f"{later.url}/hook?key=s3cret-in-url", flaky]
    async with Harness(database_url, urls=urls) as h:
        call_id = await h.call("CA" + "7" * 32)
        await h.store.finish_call(call_id, status="completed", reason="agent-hangup")
        await until(lambda: _settled(h, 2), what="both deliveries settled")
        down, retried = await h.rows()
        assert (down.status, down.attempts, down.last_status_code) == ("dead", 3, None)
        assert "ConnectError" in down.last_error
        assert (retried.status, retried.attempts, retried.last_status_code) == (
            "delivered", 3, 200)
        attempts = receiver.on("flaky")
        assert [r.headers[ATTEMPT_HEADER] for r in attempts] == ["1", "2", "3"]
        assert len({r.headers[DELIVERY_HEADER] for r in attempts}) == 1
        assert len({r.body for r in attempts}) == 1 and all(r.signed for r in attempts)
        gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
        assert all(gap >= 0.02 for gap in gaps), gaps  # backed off (0.05 s, half jittered)
        assert h.counted("retried") == 4 and h.counted("dead") == 1

        await later.start()
        async with admin(h, tmp_path) as client:
            cookie = await sign_in(client, h, "sue", "supervisor")
            page = (await client.get("/admin/webhooks", headers=cookie)).text
            assert f'id="delivery-{down.id}"' in page and "ConnectError" in page
            assert "s3cret" not in page and f"{later.url}/hook" in page  # no query shown
            assert f'href="/admin/calls/{call_id}"' in page
            replay = f"/admin/webhooks/{down.id}/replay"
            assert (await client.post(replay, headers=cookie)).status_code == 403  # no CSRF
            forged = await client.post(replay, headers=cookie, data={"csrf_token": "x" * 43})
            assert forged.status_code == 403
            assert (await client.post(replay)).status_code == 403  # signed out
            ok = await client.post(replay, headers=cookie, data={"csrf_token": _csrf(page)})
            assert ok.status_code == 303 and ok.headers["location"] == "/admin/webhooks"
            await until(lambda: _settled(h, 2), what="replayed delivery settled")
            again = await client.post(replay, headers=cookie, data={"csrf_token": _csrf(page)})
            assert again.status_code == 303  # a delivered one may be sent again too
            await until(lambda: _settled(h, 2), what="second replay settled")
        await later.stop()
        down = (await h.rows())[0]
        assert (down.status, down.attempts, down.last_status_code) == ("delivered", 1, 200)
        got = later.on("hook")
        assert len(got) == 2 and all(r.signed for r in got)
        assert {r.headers[DELIVERY_HEADER] for r in got} == {down.delivery_id}
        assert got[0].payload["call"]["outcome"] == "resolved"
        assert got[0].headers[ATTEMPT_HEADER] == "1"  # attempts were reset
        async with sessionmaker(h.engine)() as session:
            audit = list(await session.scalars(
                select(AuditEntry).where(AuditEntry.target == f"webhook delivery {down.id}")))
        assert [a.username for a in audit] == ["sue", "sue"] and audit[0].action == "change"
        assert audit[0].detail["replayed"][0]["was"] == "dead"
        assert "s3cret" not in json.dumps(audit[0].detail)


async def _settled(h: Harness, count: int) -> bool:
    rows = await h.rows()
    return len(rows) >= count and all(r.status != "pending" for r in rows)


async def test_a_client_error_is_dead_at_once_and_replay_all(database_url, receiver,
                                                             tmp_path):
    receiver.script["strict"].extend([400, 400])
    receiver.script["gone"].append(410)
    urls = [f"{receiver.url}/strict", f"{receiver.url}/gone"]
    async with Harness(database_url, urls=urls, max_attempts=5) as h:
        call_id = await h.call("CA" + "8" * 32)
        await h.store.finish_call(call_id, status="failed", reason="pipeline-error")
        await until(lambda: _settled(h, 2), what="dead at once")
        strict, gone = await h.rows()
        assert (strict.status, strict.attempts, strict.last_status_code) == ("dead", 1, 400)
        assert strict.last_error == "HTTP 400: answer 400"
        assert (gone.status, gone.attempts, gone.last_status_code) == ("dead", 1, 410)
        async with admin(h, tmp_path) as client:
            cookie = await sign_in(client, h, "ann", "admin")
            page = (await client.get("/admin/webhooks", headers=cookie)).text
            assert "Replay all dead" in page
            assert page.count("HTTP 400: answer 400") == 2  # in dead and in recent
            ok = await client.post("/admin/webhooks/replay-dead", headers=cookie,
                                   data={"csrf_token": _csrf(page)})
            assert ok.status_code == 303
            # The first answers 400 again; the second, 200.
            await until(lambda: _settled(h, 2), what="replayed")
            strict, gone = await h.rows()
            assert (strict.status, gone.status) == ("dead", "delivered")
            resend = await client.post(f"/admin/webhooks/{gone.id}/replay", headers=cookie,
                                       data={"csrf_token": _csrf(page)})
            assert resend.status_code == 303
            missing = await client.post("/admin/webhooks/999999/replay", headers=cookie,
                                        data={"csrf_token": _csrf(page)})
            assert missing.status_code == 404
    assert [r.path for r in receiver.received].count("strict") == 2


async def test_pending_deliveries_resume_after_a_restart(database_url, receiver):
    urls = [f"{receiver.url}/hook"]
    async with Harness(database_url, urls=urls, start=False) as first:
        call_id = await first.call("CA" + "9" * 32)
        await first.store.finish_call(call_id, status="completed", reason="agent-hangup")
        other = await first.call("CA" + "a" * 32)
        await first.store.finish_call(other, status="completed", reason="agent-hangup")
        # This process "died" before sending: one row untouched, one claimed mid-send.
        await DeliveryStore(first.engine).claim(worker="w1", limit=1, lease_s=0.5)
        assert [r.status for r in await first.rows()] == ["pending", "pending"]
        assert not receiver.received
        restarted = WebhookDispatcher(first.engine, config=first.config, worker="w1")
        restarted.start()
        try:
            await until(lambda: _delivered(first, 2), what="resumed after the restart")
        finally:
            await restarted.close()
    assert sorted(r.payload["call"]["id"] for r in receiver.received) == [call_id, other]


async def test_claims_are_exclusive_and_leased(database_url):
    one, two = create_engine(database_url), create_engine(database_url)  # two processes
    try:
        await migrate(one)
        store = CallStore(one)
        call_id = await store.create_call(call_sid="CA" + "b" * 32, transport="twilio")
        async with sessionmaker(one).begin() as session:
            DeliveryStore.add(session, [call_id], urls=[f"http://x/{i}" for i in range(30)],
                              origin="w1", hold_s=0)
        a, b = DeliveryStore(one), DeliveryStore(two)
        batches = await asyncio.gather(*(
            s.claim(worker=w, limit=4, lease_s=30) for s, w in [(a, "w1"), (b, "w2")] * 5))
        ids = [c.id for batch in batches for c in batch]
        assert len(ids) == len(set(ids)) == 30  # each row once, to one claimer
        assert await a.claim(worker="w1", limit=10, lease_s=30) == []  # all leased
        claim = batches[0][0]
        stale = type(claim)(**{**vars(claim), "lease_token": "0" * 32})
        assert not await b.settle(stale, status="delivered")  # not its lease
        assert await b.settle(claim, status="dead", last_error="x")
        assert not await a.settle(claim, status="delivered")  # settled once only

        # A lapsed lease is claimable again (its process died mid-send).
        async with sessionmaker(one).begin() as session:
            await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == ids[1])
                                  .values(lease_until=utcnow() - timedelta(seconds=1)))
        assert [c.id for c in await b.claim(worker="w2", limit=10, lease_s=30)] == [ids[1]]

        # A new row waits for its own process first; others take it once the hold passes.
        async with sessionmaker(one).begin() as session:
            DeliveryStore.add(session, [call_id], urls=["http://x/held"], origin="w1",
                              hold_s=60)
        assert await b.claim(worker="w2", limit=10, lease_s=30) == []
        held = await a.claim(worker="w1", limit=10, lease_s=30)
        assert [c.url for c in held] == ["http://x/held"]
        assert await a.replay([held[0].id]) == []  # pending: not replayed
    finally:
        await one.dispose()
        await two.dispose()


class admin:  # noqa: N801  (used as `async with admin(h) as client`)
    """The admin site on loopback, over the harness's database, with an HTTP client."""

    def __init__(self, h: Harness, data_dir: Path):
        app = FastAPI()
        app.mount("/admin", admin_site.create_site(
            engine=h.engine, data_dir=data_dir, secure_cookies=False,
            on_webhook_replay=h.dispatcher.wake))
        self.served = Served(app)

    async def __aenter__(self) -> httpx.AsyncClient:
        await self.served.start()
        self.client = httpx.AsyncClient(base_url=self.served.url)
        return self.client

    async def __aexit__(self, *_exc) -> None:
        await self.client.aclose()
        await self.served.stop()


async def sign_in(client: httpx.AsyncClient, h: Harness, username: str, role: str) -> dict:
    """Add a user and sign in over HTTP; the Cookie header a browser would then send."""
    await AccountStore(h.engine).add_user(username, PASSWORD, role=role)
    form = await client.get("/admin/login")
    signin = form.cookies["cw_admin_signin"]
    response = await client.post(
        "/admin/login", headers={"cookie": f"cw_admin_signin={signin}"},
        data={"csrf_token": _csrf(form.text), "username": username, "password": PASSWORD})
    assert response.status_code == 303, response.text
    client.cookies.clear()
    return {"cookie": response.headers["set-cookie"].split(";", 1)[0]}


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_the_readme_shows_the_example_receiver_as_it_is():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- examples/webhook_receiver.py -->\n```\w+\n(.*?)```", readme, re.S)
    assert block, "README has no block for examples/webhook_receiver.py"
    assert block[1] == (ROOT / "examples" / "webhook_receiver.py").read_text()


async def test_the_example_receiver_takes_signed_deliveries_only(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    spec = importlib.util.spec_from_file_location(
        "webhook_receiver", ROOT / "examples" / "webhook_receiver.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    served = Served(example.app)
    await served.start()
    try:
        async with Harness(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}",
                           urls=[f"{served.url}/calls"]) as h:
            call_id = await h.call("CA" + "c" * 32)
            await h.store.finish_call(call_id, status="completed", reason="agent-hangup")
            await until(lambda: _settled(h, 1), what="delivered to the example")
            (row,) = await h.rows()
            assert (row.status, row.last_status_code) == ("delivered", 200)
            assert example.seen == {row.delivery_id}
            async with httpx.AsyncClient(base_url=served.url) as client:
                forged = await client.post("/calls", content=row.body, headers={
                    SIGNATURE_HEADER: f"t={int(time.time())},v1={'0' * 64}",
                    DELIVERY_HEADER: "forged"})
                replayed = await client.post("/calls", content=row.body, headers={
                    SIGNATURE_HEADER: sign(SECRET, row.body.encode(),
                                           timestamp=int(time.time()) - 3600),
                    DELIVERY_HEADER: "replayed"})
            assert forged.status_code == 401 and replayed.status_code == 401
            assert example.seen == {row.delivery_id}
    finally:
        await served.stop()
