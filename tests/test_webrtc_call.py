"""A whole call from an aiortc peer (a browser without the browser) against the real server."""

import pytest

from callwright.telephony.webrtc.ice import add_loopback_candidate
from tests.support import speech_8k, transcribe_8k, wer
from tests.webrtc_peer import WebRTCCaller

SCRIPT = [
    "Hello I would like to make a reservation for tomorrow evening.",
    "My name is Alice.",
    "No thanks goodbye.",
]

pytestmark = pytest.mark.e2e


async def test_webrtc_call_end_to_end(server):
    add_loopback_candidate()  # as the server does: works with loopback as the only interface
    caller = WebRTCCaller(server.url)
    result = await caller.call([speech_8k(line) for line in SCRIPT])

    assert result.hung_up_by == "agent"
    # Greeting and one reply per line came back as audio; hear what the agent said.
    assert len(result.utterances) == 4
    heard = [transcribe_8k(pcm) for pcm in result.utterances]
    assert "front desk" in heard[0].lower(), heard
    assert "bye" in heard[-1].lower(), heard
    assert all(0 < ms < 10_000 for ms in result.latencies_ms), result.latencies_ms
    print(f"\nvoice-to-voice at the aiortc caller: {[round(ms) for ms in result.latencies_ms]} ms")

    call = await server.call_by_sid(result.call_sid)
    assert call["transport"] == "webrtc"
    assert call["status"] == "completed" and call["end_reason"] == "agent-hangup"
    assert call["stream_sid"] == result.pc_id and call["started_at"] and call["ended_at"]
    turns = call["turns"]
    assert [t["speaker"] for t in turns] == ["agent", "caller"] * 3 + ["agent"]
    caller_turns = [t["text"] for t in turns if t["speaker"] == "caller"]
    # Whisper tiny hears 8 kHz espeak imperfectly ("reformation", names); the words
    # that carry the script must all have arrived, in order.
    for said, key in zip(caller_turns, ("tomorrow evening", "my name is", "goodbye"), strict=True):
        assert key in said.lower(), caller_turns
    agent_turns = [t for t in turns if t["speaker"] == "agent"]
    # Agent turns were closed by playback marks from the output clock (not the fallback
    # timeout), so what was stored as heard is what the caller received.
    assert all(not t["interrupted"] and t["text"] == t["planned_text"] for t in agent_turns)
    assert wer(" ".join(t["text"] for t in agent_turns), " ".join(heard)) <= 0.35
    assert all(t["latency_ms"] and t["latency_ms"] > 0 for t in agent_turns[1:])

    # The page's events came over the data channel: turns, states and latencies.
    events = [e for e in result.events if e.get("type") == "callwright"]
    shown = [(e["speaker"], e["text"]) for e in events if e["event"] == "turn"]
    stored = [(t["speaker"], t["text"]) for t in turns]
    assert shown in (stored, stored[:-1])  # the goodbye may race the agent's hang-up
    states = [e["state"] for e in events if e["event"] == "state"]
    assert {"listening", "thinking", "speaking"} <= set(states)
    latencies = [e["ms"] for e in events if e["event"] == "latency"]
    assert len(latencies) == len(SCRIPT) and all(ms > 0 for ms in latencies)

    health = (await server.api("/healthz")).json()
    assert health["webrtc_sessions"] == 0
