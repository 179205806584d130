"""Bad WebRTC offers are refused clearly, and leave no peer connection or call behind."""

import gc
import re

import httpx
import pytest
from aiortc import RTCPeerConnection
from fastapi import FastAPI

from callwright.memory.db import create_engine, migrate
from callwright.memory.store import CallStore
from callwright.telephony.webrtc import routes as webrtc
from tests.webrtc_peer import SpeechTrack


class NoCalls:
    """A call handler for offers that must never become calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def run_call(self, **_kwargs) -> None:
        self.calls += 1


@pytest.fixture
async def signalling(tmp_path):
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}")
    await migrate(engine)
    store, handler = CallStore(engine), NoCalls()
    config = webrtc.WebRTCConfig(
        ice_servers=[], max_sessions=2, offers_per_minute=100, connect_timeout_s=5,
        idle_timeout_s=60, max_offer_bytes=16 * 1024, flows_dir=tmp_path / "no-flows",
    )
    calls = webrtc.WebRTCCalls(config=config, store=store, handler=handler)
    app = FastAPI()
    app.include_router(webrtc.create_router(calls=calls, config=config))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        yield client, calls, store, handler
    await calls.close()
    await engine.dispose()


async def browser_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTrack(SpeechTrack())
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def open_peer_connections() -> list[RTCPeerConnection]:
    gc.collect()
    # type(), not isinstance(): the heap may hold dead weakref proxies, which raise on
    # any attribute access (isinstance reads __class__).
    return [
        o for o in gc.get_objects()
        if issubclass(type(o), RTCPeerConnection) and o.connectionState != "closed"
    ]


async def test_bad_offers_get_400_and_leave_nothing_open(signalling):
    client, calls, store, handler = signalling
    good = await browser_offer()
    no_fingerprint = "\r\n".join(
        line for line in good.split("\r\n") if not line.startswith("a=fingerprint")
    )
    video_only = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n"
    )
    cases = {
        "garbage": ({"sdp": "hello, this is not SDP", "type": "offer"}, "not an SDP offer"),
        "no audio": ({"sdp": video_only, "type": "offer"}, "no audio m-line"),
        "recvonly": (
            {"sdp": good.replace("a=sendrecv", "a=recvonly"), "type": "offer"}, "does not send"
        ),
        "no fingerprint": ({"sdp": no_fingerprint, "type": "offer"}, "no DTLS fingerprint"),
        "unanswerable": (
            {"sdp": re.sub(r"a=rtpmap:(\d+) \w+/", r"a=rtpmap:\1 nocodec/", good), "type": "offer"},
            "could not be answered",
        ),
        "answer": ({"sdp": good, "type": "answer"}, "type"),
        "unknown flow": (
            {"sdp": good, "type": "offer", "requestData": {"flow": "../../etc/passwd"}},
            "unknown flow",
        ),
    }
    for name, (body, message) in cases.items():
        response = await client.post("/webrtc/offer", json=body)
        assert response.status_code == 400, (name, response.text)
        assert message in response.json()["detail"], (name, response.json())

    huge = {"sdp": good + "a=x-padding:" + "x" * (1 << 20) + "\r\n", "type": "offer"}
    response = await client.post("/webrtc/offer", json=huge)
    assert response.status_code == 400 and "too large" in response.json()["detail"]
    response = await client.post(
        "/webrtc/offer", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "not JSON" in response.json()["detail"]
    response = await client.patch(
        "/webrtc/offer", json={"pc_id": "nobody", "candidates": [{"candidate": ""}]}
    )
    assert response.status_code == 404

    assert calls.active == 0
    assert open_peer_connections() == []
    assert await store.list_calls() == [] and handler.calls == 0


async def test_session_cap_and_rate_limit(signalling, tmp_path):
    client, calls, store, _ = signalling
    answers = []
    for _ in range(2):
        response = await client.post("/webrtc/offer", json={"sdp": await browser_offer(),
                                                           "type": "offer"})
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert calls.active == 2 and all(a["call_sid"].startswith("WR") for a in answers)
    busy = await client.post("/webrtc/offer", json={"sdp": await browser_offer(), "type": "offer"})
    assert busy.status_code == 503 and "busy" in busy.json()["detail"]

    # Nobody completes ICE; hung up at shutdown, both are stored as never connected.
    await calls.close()
    stored = await store.list_calls()
    assert {(c.transport, c.status, c.end_reason) for c in stored} == {
        ("webrtc", "failed", "no-connection")
    }
    assert calls.active == 0 and open_peer_connections() == []

    limiter = webrtc.RateLimiter(limit=2, window_s=60)
    assert [limiter.allow("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert limiter.allow("10.0.0.2")
    closed = webrtc.RateLimiter(limit=0)  # offers turned off: refused, from any number of hosts
    assert not any(closed.allow(f"10.1.{i // 256}.{i % 256}")
                   for i in range(webrtc.RateLimiter.MAX_KEYS + 10))
