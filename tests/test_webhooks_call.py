"""Business webhooks from a real server: a Twilio call through the stand-in, and an
outbound call that is never answered, each reach a receiver on loopback once, signed."""

import asyncio
import json

import httpx
import pytest

from tests.support import caller, speech_8k, start_server
from tests.test_webhooks import SECRET, Receiver

pytestmark = pytest.mark.e2e
FROM = "+15550100200"


async def test_calls_through_the_server_reach_the_business(tmp_path, rest_standin):
    receiver = Receiver()
    await receiver.start()
    server = start_server(
        tmp_path, rest_url=rest_standin.base_url, TWILIO_FROM_NUMBER=FROM,
        OUTBOUND_ALLOW=json.dumps(["+1555010*"]),
        WEBHOOK_URLS=json.dumps([f"{receiver.url}/calls"]), WEBHOOK_SECRET=SECRET,
    )
    try:
        twilio = caller(server, from_number="+15550177001")
        result = await twilio.call([
            speech_8k("Hello, I would like to make a reservation for tomorrow evening."),
            speech_8k("No thanks, goodbye."),
        ])
        assert result.errors == [] and result.hung_up_by == "agent"

        async with httpx.AsyncClient(base_url=server.url) as client:
            placed = await client.post(
                "/api/calls/outbound", json={"to": "+15550100300", "flow": "reminder"},
                headers={"Authorization": f"Bearer {server.api_token}"})
        assert placed.status_code == 201, placed.text
        unanswered = caller(server, call_sid=placed.json()["call_sid"], from_number=FROM,
                            to_number="+15550100300",
                            extra_params={"Direction": "outbound-api"})
        assert (await unanswered.post_status("no-answer")).status_code == 204

        for _ in range(300):
            if len(receiver.received) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # and no more
        stored = await server.call_by_sid(twilio.call_sid)
    finally:
        server.stop()
        await receiver.stop()

    assert len(receiver.received) == 2, receiver.received
    assert all(r.signed for r in receiver.received)
    by_sid = {r.payload["call"]["call_sid"]: r.payload for r in receiver.received}
    talked = by_sid[twilio.call_sid]
    assert talked["call"]["outcome"] == "resolved"
    assert talked["call"]["end_reason"] == "agent-hangup"
    assert talked["summary"] and "tomorrow evening" in talked["summary"].lower()
    assert talked["summary"] == stored["summary"]
    assert [(t["seq"], t["start_ms"], t["emotion"]) for t in talked["emotion"]["turns"]] == [
        (t["seq"], t["start_ms"], t["emotion"]) for t in stored["turns"]
        if t["speaker"] == "caller"]
    missed = by_sid[unanswered.call_sid]
    assert missed["call"]["outcome"] == "failed" and missed["call"]["direction"] == "outbound"
    assert missed["call"]["end_reason"] == "twilio-no-answer"
    assert SECRET not in server.log()
