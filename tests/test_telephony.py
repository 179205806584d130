"""Outbound calls, answering-machine results, status callbacks, busy lines, graceful stop.

One server with telephony limits set; the graceful-stop test runs last and stops it.
"""

import asyncio
import json
import signal
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from callwright.testing.twilio_emulator import TwilioCaller
from callwright.testing.twilio_stream import CallResult, StreamSession
from tests.support import ACCOUNT_SID, caller, speech_8k, start_server

pytestmark = pytest.mark.e2e
FROM = "+15550100200"


@pytest.fixture(scope="module")
def phone(tmp_path_factory, rest_standin):
    server = start_server(
        tmp_path_factory.mktemp("telephony"), rest_url=rest_standin.base_url,
        TWILIO_FROM_NUMBER=FROM, OUTBOUND_ALLOW=json.dumps(["+1555010*"]),
        OUTBOUND_CALLS_PER_MINUTE=3, MAX_CALLS=2, SHUTDOWN_GRACE_SECONDS=6,
    )
    yield server
    server.stop()


async def _dial(
    server, to: str, token: str | None = None, variables: dict | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.post(
            "/api/calls/outbound", json={"to": to, "flow": "reminder",
                                         "variables": variables or {}},
            headers={"Authorization": f"Bearer {token or server.api_token}"},
        )


async def _open_stream(twilio: TwilioCaller) -> StreamSession:
    """Answer a call and keep its stream open, the caller silent."""
    response = await twilio.post_webhook()
    url, custom = TwilioCaller.parse_twiml(response.text)
    ws = await twilio.connect(url)
    session = StreamSession(ws, twilio, CallResult(call_sid=twilio.call_sid,
                                                   stream_sid=twilio.stream_sid, twiml=""))
    await session.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    await session.send(twilio.start_message(custom))
    session.begin()
    await session.wait_reply(0.8, 20)  # the greeting has played
    return session


async def _stop(session: StreamSession) -> None:
    await session.send({"event": "stop", "sequenceNumber": session.seq(),
                        "streamSid": session.caller.stream_sid,
                        "stop": {"accountSid": ACCOUNT_SID, "callSid": session.caller.call_sid}})
    await session.stop()
    await session.ws.close()  # Twilio closes the socket after `stop`


async def _ended(server, call_sid: str) -> dict:
    for _ in range(50):
        call = await server.call_by_sid(call_sid)
        if call["ended_at"]:
            return call
        await asyncio.sleep(0.2)
    return call


async def test_outbound_call_through_the_rest_api(phone, rest_standin):
    assert (await _dial(phone, "+15550100300", token="cw_wrong")).status_code == 401
    before = len(rest_standin.requests)
    refused = await _dial(phone, "+4420700000000")  # not in OUTBOUND_ALLOW
    assert refused.status_code == 403 and len(rest_standin.requests) == before
    for variables in ({"answered_by": "human"}, {"Bad Name": "x"}, {"name": "x" * 501},
                      {f"v{i}": i for i in range(33)}, {"day": ["a", "list"]}):
        bad = await _dial(phone, "+15550100300", variables=variables)
        assert bad.status_code == 422, (variables, bad.text)
    assert len(rest_standin.requests) == before

    placed = await _dial(phone, "+15550100300")
    assert placed.status_code == 201, placed.text
    call_sid = placed.json()["call_sid"]
    create = rest_standin.requests[-1]
    assert create.method == "POST"
    assert create.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
    public = phone.env["PUBLIC_URL"]
    assert create.form["To"] == "+15550100300" and create.form["From"] == FROM
    assert create.form["Url"] == f"{public}/twilio/voice"
    assert create.form["StatusCallback"] == f"{public}/twilio/status"
    assert create.form["MachineDetection"] == "DetectMessageEnd"
    assert set(create.lists["StatusCallbackEvent"]) == {"initiated", "ringing", "answered",
                                                        "completed"}

    # Twilio connects the call, detection says a person answered, and fetches our TwiML.
    twilio = caller(phone, call_sid=call_sid, from_number=FROM, to_number="+15550100300",
                    extra_params={"Direction": "outbound-api", "AnsweredBy": "human"})
    result = await twilio.call([speech_8k("What time do you open on Sunday?"),
                                speech_8k("No thanks goodbye.")])
    assert result.errors == [] and result.hung_up_by == "agent"
    call = await _ended(phone, call_sid)
    assert call["status"] == "completed" and call["end_reason"] == "agent-hangup"
    detail = (await phone.api(f"/api/calls/{call['id']}")).json()
    assert [t["speaker"] for t in detail["turns"]] == ["agent", "caller", "agent", "caller",
                                                       "agent"]
    log = phone.log()
    assert "+15550100300" not in log and "…0300" in log  # numbers are masked in logs


async def test_rate_cap_and_status_callbacks_close_unanswered_calls(phone, rest_standin):
    placed = [await _dial(phone, f"+1555010040{i}") for i in range(3)]
    # One call a minute was already placed above: the cap of 3 lets two more through.
    assert [r.status_code for r in placed] == [201, 201, 429], [r.text for r in placed]
    call_sid = placed[0].json()["call_sid"]
    twilio = caller(phone, call_sid=call_sid, from_number=FROM, to_number="+15550100400",
                    extra_params={"Direction": "outbound-api"})
    # Unsigned or tampered callbacks change nothing.
    async with httpx.AsyncClient() as client:
        unsigned = await client.post(f"{phone.url}/twilio/status",
                                     data={"CallSid": call_sid, "CallStatus": "completed"})
    assert unsigned.status_code == 403
    assert (await phone.call_by_sid(call_sid))["status"] == "queued"

    assert (await twilio.post_status("ringing")).status_code == 204
    assert (await twilio.post_status("no-answer")).status_code == 204
    call = await phone.call_by_sid(call_sid)
    assert call["status"] == "no-answer" and call["end_reason"] == "twilio-no-answer"
    assert call["ended_at"]


async def test_status_callback_closes_a_call_whose_stream_never_came(phone):
    twilio = caller(phone)
    assert (await twilio.post_webhook()).status_code == 200
    assert (await phone.call_by_sid(twilio.call_sid))["ended_at"] is None
    assert (await twilio.post_status("completed")).status_code == 204
    call = await phone.call_by_sid(twilio.call_sid)
    assert call["status"] == "completed" and call["end_reason"] == "twilio-completed"


async def test_lines_busy_above_max_calls_and_graceful_stop(phone):
    first, second = caller(phone), caller(phone)
    stays = await _open_stream(first)
    leaves = await _open_stream(second)

    busy = caller(phone)
    response = await busy.post_webhook()
    root = ET.fromstring(response.text)
    assert [el.tag for el in root] == ["Say", "Hangup"], response.text
    assert "busy" in root.find("Say").text
    # The running calls keep going: one still answers.
    sent = await stays.speak(speech_8k("What time do you open on Sunday?"))
    await stays.wait_reply(0.8, 20, after=sent)
    assert stays.first_speech_after(sent) is not None

    # SIGTERM: no new calls, running ones may finish within the grace period.
    phone.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    refused = await caller(phone).post_webhook()
    assert [el.tag for el in ET.fromstring(refused.text)] == ["Say", "Hangup"]
    await _stop(leaves)  # this caller hangs up during the drain
    stopped_at = time.monotonic()
    phone.process.wait(timeout=30)
    assert time.monotonic() - stopped_at < 15  # the 6 s bound, then sockets closed
    await stays.stop()

    # The next start marks the call the stop cut off as interrupted.
    restarted = start_server(phone.log_path.parent, rest_url=phone.env["TWILIO_API_BASE_URL"])
    try:
        cut = await restarted.call_by_sid(first.call_sid)
        done = await restarted.call_by_sid(second.call_sid)
        assert cut["status"] == "interrupted" and cut["end_reason"] == "server-stopped"
        assert done["status"] == "completed" and done["end_reason"] == "caller-hangup"
        assert [t["speaker"] for t in cut["turns"]][:3] == ["agent", "caller", "agent"]
    finally:
        restarted.stop()
