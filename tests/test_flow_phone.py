"""Keys, transfers and silence reach the flow on a live call, over the Twilio protocol."""

import asyncio
from pathlib import Path

import pytest

from tests import dtmf
from tests.support import caller, start_server, transcribe_8k
from tests.test_bad_input import _open

pytestmark = pytest.mark.e2e


async def test_keypad_choice_moves_the_flow(tmp_path, rest_standin):
    server = start_server(tmp_path, rest_url=rest_standin.base_url, DEFAULT_FLOW="support")
    try:
        twilio = caller(server)
        ws, session, result = await _open(twilio)
        await session.wait_reply(1.0, 25)  # "Nimbus Internet support ... press 1 ..."
        pressed = await session.press("2#")  # billing, ended with the pound key
        await session.wait_reply(1.0, 20, after=pressed)
        reply = transcribe_8k(bytes(result.utterances[-1].pcm)).lower()
        await session.stop()
        await ws.close()
        for _ in range(50):
            call = await server.call_by_sid(twilio.call_sid)
            if call["ended_at"]:
                break
            await asyncio.sleep(0.2)
    finally:
        server.stop()
    assert call["flow_name"] == "support"
    assert call["flow_path"][:2] == ["triage", "account"], call["flow_path"]
    caller_turns = [t["text"] for t in call["turns"] if t["speaker"] == "caller"]
    assert caller_turns[0] == "(keypad) 2"
    assert "account" in reply or "bill" in reply, reply


async def test_flow_transfer_to_a_human(tmp_path, rest_standin):
    """Pressing 0 asks for an agent: the flow announces it, then the call is handed over."""
    server = start_server(tmp_path, rest_url=rest_standin.base_url, DEFAULT_FLOW="support",
                          TRANSFER_ALLOW='["+1415555*"]')
    try:
        twilio = caller(server)
        ws, session, result = await _open(twilio)
        await session.wait_reply(1.0, 25)
        pressed = await session.press("0#")
        await session.wait_reply(1.0, 20, after=pressed)
        announcement = transcribe_8k(bytes(result.utterances[-1].pcm)).lower()
        await asyncio.wait_for(session.closed.wait(), 15)  # Twilio runs <Dial>; we hang up
        await session.stop()
        for _ in range(50):
            call = await server.call_by_sid(twilio.call_sid)
            if call["ended_at"]:
                break
            await asyncio.sleep(0.2)
    finally:
        server.stop()
    assert "transferring" in announcement, announcement
    assert call["end_reason"] == "transferred" and call["flow_path"][-1] == "agent"
    updates = [r for r in rest_standin.requests if r.path.endswith(f"{twilio.call_sid}.json")]
    assert any("<Dial><Number>+14155550123</Number></Dial>" in r.form.get("Twiml", "")
               for r in updates), updates


async def test_silence_timeout_reaches_the_flow(tmp_path, rest_standin):
    """A caller who says nothing hears the re-prompt after 2 s, then the flow moves on."""
    flows_dir = Path(__file__).parent / "flows"
    server = start_server(tmp_path, rest_url=rest_standin.base_url, FLOWS_DIR=flows_dir,
                          DEFAULT_FLOW="quiet")
    try:
        twilio = caller(server)
        result = await twilio.call([], end_timeout_s=20)
        call = await server.call_by_sid(twilio.call_sid)
    finally:
        server.stop()
    assert result.hung_up_by == "agent"
    assert call["flow_path"] == ["ask", "bye"]
    agent = " ".join(t["text"] for t in call["turns"] if t["speaker"] == "agent").lower()
    assert "did not hear anything" in agent and "goodbye" in agent
    said = transcribe_8k(result.agent_audio()).lower()
    assert "hear anything" in said, said


async def _tones_call(tmp_path, rest_standin):
    """The `tones` test flow: press 1, hear "Dialling the extension now.", tones 159#, hang-up."""
    flows_dir = Path(__file__).parent / "flows"
    server = start_server(tmp_path, rest_url=rest_standin.base_url, FLOWS_DIR=flows_dir,
                          DEFAULT_FLOW="tones")
    try:
        twilio = caller(server)
        ws, session, result = await _open(twilio)
        await session.wait_reply(1.0, 25)  # "Press one to reach the extension."
        pressed = await session.press("1#")
        await asyncio.wait_for(session.closed.wait(), 25)  # the agent hangs up
        played_until = session.audible_end
        await session.stop()
        call = await server.call_by_sid(twilio.call_sid)
    finally:
        server.stop()
    requests = [r for r in rest_standin.requests if r.path.endswith(f"{twilio.call_sid}.json")]
    return result, pressed, played_until, call, requests


async def test_flow_sends_tones_to_the_far_end(tmp_path, rest_standin):
    """A node's send_dtmf plays in-band tones on the stream after its words: Twilio has no
    stream event for DTMF, and a `<Play digits>` call update would end the stream."""
    result, pressed, _, call, requests = await _tones_call(tmp_path, rest_standin)
    assert result.errors == []
    after = [u for u in result.utterances if u.started > pressed]
    heard = b"".join(bytes(u.pcm) for u in after)
    tones = dtmf.decode(heard)
    assert "".join(key for key, _, _ in tones) == "159#", tones
    # The words come first, the tones after them.
    words_said = transcribe_8k(heard[: int(tones[0][1] * 8000) * 2]).lower()
    assert "extension" in words_said, words_said
    assert call["flow_path"] == ["menu", "dial"] and call["end_reason"] == "agent-hangup"
    # No call update carries TwiML (no <Play digits>); the one request is the hang-up.
    assert [r.form for r in requests] == [{"Status": "completed"}], requests


async def test_tones_play_before_the_hang_up(tmp_path, rest_standin):
    _, _, played_until, _, requests = await _tones_call(tmp_path, rest_standin)
    assert requests[0].at >= played_until - 0.05, (requests[0].at, played_until)
