"""Hostile and broken stream input: skipped and logged, the call goes on, others are untouched."""

import asyncio
import json

import httpx
import pytest

from telephony.emulator import CallResult, StreamSession, TwilioCaller
from tests.support import caller, speech_8k

pytestmark = pytest.mark.e2e

GARBAGE: list[str | bytes] = [
    "{not json",
    json.dumps(["an", "array"]),
    json.dumps({"event": "party"}),
    json.dumps({"event": "media", "media": "not an object"}),
    json.dumps({"event": "media", "media": {"payload": "***not base64***"}}),
    json.dumps({"event": "media", "media": {}}),
    json.dumps({"event": "dtmf", "dtmf": {"digit": 5}}),
    json.dumps({"event": "mark", "mark": {}}),
    json.dumps({"event": "media", "media": {"payload": "QUJD" * 30_000}}),  # 120 KB
    b"\x00\x01binary frame",
    "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
]


async def _open(twilio: TwilioCaller):
    response = await twilio.post_webhook()
    url, custom = TwilioCaller.parse_twiml(response.text)
    ws = await twilio.connect(url)
    result = CallResult(call_sid=twilio.call_sid, stream_sid=twilio.stream_sid, twiml="")
    session = StreamSession(ws, twilio, result)
    await session.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    await session.send(twilio.start_message(custom))
    session.begin()
    return ws, session, result


async def test_garbage_is_skipped_while_another_call_runs(server):
    good = caller(server, from_number="+15550100077")
    good_call = asyncio.create_task(good.call([
        speech_8k("What time do you open on Sunday?"),
        speech_8k("No thanks goodbye."),
    ]))

    bad = caller(server)
    ws, session, result = await _open(bad)
    await session.wait_reply(1.0, 20)  # the greeting
    for message in GARBAGE:
        await ws.send(message)
    # The call still understands and answers after all that.
    sent = await session.speak(speech_8k("What time do you open on Sunday?"))
    await session.wait_reply(1.0, 20, after=sent)
    assert session.first_speech_after(sent) is not None
    # Then the connection drops without a stop event.
    await session.stop()
    ws.transport.abort()

    good_result = await good_call
    assert good_result.hung_up_by == "agent" and good_result.errors == []
    good_turns = (await server.call_by_sid(good.call_sid))["turns"]
    assert [t["speaker"] for t in good_turns] == ["agent", "caller", "agent", "caller", "agent"], (
        good_turns
    )
    assert "sunday" in good_turns[1]["text"].lower()

    for _ in range(50):
        stored = await server.call_by_sid(bad.call_sid)
        if stored["ended_at"]:
            break
        await asyncio.sleep(0.2)
    assert stored["status"] == "failed" and stored["end_reason"] == "stream-dropped"
    assert [t["speaker"] for t in stored["turns"]][:3] == ["agent", "caller", "agent"]
    assert "sunday" in stored["turns"][1]["text"].lower()
    # The dropped call released its pipeline and model session.
    async with httpx.AsyncClient() as client:
        for _ in range(50):
            health = (await client.get(f"{server.url}/healthz")).json()
            if health["active_calls"] == 0:
                break
            await asyncio.sleep(0.2)
    assert health["active_calls"] == 0, health
    log = server.log()
    for reason in ("invalid JSON", "unknown event", "not base64", "binary frame",
                   "exceeds", "without a payload", "dtmf without a digit", "mark without"):
        assert f"call {bad.call_sid}: skipped" in log and reason in log, reason


async def test_oversized_frame_closes_the_call_cleanly(server):
    twilio = caller(server)
    ws, session, result = await _open(twilio)
    await session.wait_reply(1.0, 20)
    await ws.send("x" * (2 << 20))  # past the websocket limit: the server must close
    await asyncio.wait_for(session.closed.wait(), 10)
    await session.stop()
    assert result.close_code == 1009
    for _ in range(50):
        stored = await server.call_by_sid(twilio.call_sid)
        if stored["ended_at"]:
            break
        await asyncio.sleep(0.2)
    assert stored["end_reason"] == "stream-dropped"
    assert stored["turns"][0]["speaker"] == "agent"  # the greeting was kept


async def test_a_call_dropped_while_starting_leaves_nothing_running(server):
    """Callers who hang up at once (or a flood of broken streams): their pipelines are
    cancelled before the CancelFrame reaches the slot, whose opening turn must not go on
    asking the models for a greeting nobody will hear."""
    logged = len(server.log())
    for pause_s in (0.0, 0.02, 0.05):
        twilio = caller(server)
        ws, session, _ = await _open(twilio)
        await asyncio.sleep(pause_s)
        await session.stop()
        await ws.close()
    await asyncio.sleep(2)
    log = server.log()[logged:]
    assert log.count("peer disconnected") == 3, log[-2000:]
    assert "dangling tasks" not in log, log[-2000:]
