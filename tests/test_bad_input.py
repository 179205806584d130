"""Hostile and broken stream input: skipped and logged, the call goes on, others are untouched."""

import asyncio
import json

import httpx
import pytest
import websockets

from callwright.testing.twilio_emulator import TwilioCaller
from callwright.testing.twilio_stream import CallResult, StreamSession
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
    "[" * 30_000 + "]" * 30_000,  # within the size limit, too deep for json to parse
    json.dumps({"event": ["a", "list"]}),
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
                   "exceeds", "without a payload", "dtmf without a digit", "mark without",
                   "nested too deeply"):
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


def _start(twilio: TwilioCaller, custom: dict) -> str:
    return json.dumps(twilio.start_message(custom))


async def test_hostile_frames_before_start_are_refused_with_a_code(server):
    """Whatever comes instead of `start` is refused with a close code and a log line; the
    handler never dies and drops the connection (1006), as it did on deep JSON nesting."""
    connected = json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    twilio = caller(server)
    cases: list[tuple[str, list[str | bytes], int]] = [
        ("100k nested lists", ["[" * 100_000 + "]" * 100_000], 1009),  # also over 64 KB
        ("30k nested objects", ['{"a":' * 30_000 + "1" + "}" * 30_000], 1009),
        ("30k nested lists", ["[" * 30_000 + "]" * 30_000], 1009),  # within 64 KB
        ("10k nested objects", [connected, '{"a":' * 10_000 + "1" + "}" * 10_000], 1009),
        ("nested start", ['{"event":"start","start":' + "[" * 20_000 + "]" * 20_000 + "}"],
         1009),
        ("over the socket limit", ["x" * (2 << 20)], 1009),
        ("binary frame", [connected, b'{"event": "start"}'], 1003),
        ("not UTF-8", [b'{"event": "\xff"}'], 1007),
        ("BOM", ["\ufeff" + connected], 1007),
        ("huge integer", ["9" * 5000], 1007),
        ("not an object", [json.dumps(["connected"])], 1008),
        ("event not a string", [json.dumps({"event": [[["start"]]]})], 1008),
        ("token not a string", [_start(twilio, {"token": 5})], 1008),
        ("token an object", [_start(twilio, {"token": {"a": [1]}})], 1008),
    ]
    url = f"{server.env['PUBLIC_URL'].replace('https', 'wss')}/twilio/stream"
    logged = len(server.log())
    codes = {}
    for name, frames, _ in cases:
        async with twilio.connect(url) as ws:
            try:
                for frame in frames:
                    # Bytes that are not UTF-8 go as a text frame: the websocket layer's case.
                    await ws.send(frame, text=isinstance(frame, str) or name == "not UTF-8")
                await asyncio.wait_for(ws.recv(), 10)
            except websockets.ConnectionClosed:
                pass  # refused, maybe while the frame was still being sent
            codes[name] = ws.close_code
    assert codes == {name: code for name, _, code in cases}
    log = server.log()[logged:]
    assert "nested too deeply to parse; closing with 1009" in log
    assert "stream token is not a string; closing with 1008" in log
    assert "Exception in ASGI application" not in log, log[-3000:]
    assert server.process.poll() is None
