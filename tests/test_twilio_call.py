"""A whole phone call over the Twilio protocol against the real server."""

import pytest

from tests.support import ACCOUNT_SID, caller, speech_8k, transcribe_8k, wer

SCRIPT = [
    "I would like to make a booking for tomorrow evening.",
    "My name is Peter.",
    "No thanks goodbye.",
]

pytestmark = pytest.mark.e2e


async def test_call_end_to_end(server, rest_standin):
    twilio = caller(server)
    result = await twilio.call([speech_8k(line) for line in SCRIPT])

    assert result.errors == [], "the server broke Twilio's protocol"
    assert result.hung_up_by == "agent"
    assert result.marks_echoed > 0
    # Greeting and one reply per line came back as audio; hear what the agent said.
    assert len(result.utterances) >= 4
    heard = [transcribe_8k(bytes(u.pcm)) for u in result.utterances]
    assert "front desk" in heard[0].lower()
    assert "goodbye" in heard[-1].lower()

    call = await server.call_by_sid(twilio.call_sid)
    assert call["status"] == "completed" and call["end_reason"] == "agent-hangup"
    assert call["from_number"] == twilio.from_number and call["stream_sid"] == twilio.stream_sid
    turns = call["turns"]
    speakers = [t["speaker"] for t in turns]
    assert speakers == ["agent", "caller", "agent", "caller", "agent", "caller", "agent"]
    caller_text = " ".join(t["text"] for t in turns if t["speaker"] == "caller")
    assert wer(" ".join(SCRIPT), caller_text) <= 0.2, caller_text
    agent_turns = [t for t in turns if t["speaker"] == "agent"]
    assert "name" in agent_turns[1]["text"].lower(), turns  # the booking branch asked for it
    assert "Peter" in agent_turns[2]["text"]
    # What was stored as said is what the caller's side actually heard.
    assert wer(" ".join(t["text"] for t in agent_turns), " ".join(heard)) <= 0.35
    assert all(not t["interrupted"] for t in agent_turns)
    starts = [t["start_ms"] for t in turns]
    assert starts == sorted(starts) and all(t["end_ms"] >= t["start_ms"] for t in turns)
    assert all(t["latency_ms"] and t["latency_ms"] > 0 for t in agent_turns[1:])

    # The agent hung up through Twilio's REST API, as documented.
    assert f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{twilio.call_sid}.json" in (
        rest_standin.hang_ups()
    )
