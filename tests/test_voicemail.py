"""Outbound calls that reach an answering machine, over Twilio's protocol: detection at
the webhook (synchronous AMD) or mid-call (`AsyncAmd`, a signed callback to /twilio/amd)."""

import asyncio
import json
import xml.etree.ElementTree as ET

import httpx
import pytest

from callwright.testing.twilio_emulator import TwilioCaller
from tests import dtmf
from tests.support import ACCOUNT_SID, caller, start_server, transcribe_8k, wer
from tests.test_bad_input import _open

pytestmark = pytest.mark.e2e
FROM, TO = "+15550100200", "+15550100300"
EXPECTED_MESSAGE = (
    "We've reached voicemail. This is Bright Smile Dental reminding Ada of an appointment on"
    " Thursday, December 3rd. Press one after the tone to confirm, or call us back."
)


def _server(tmp_path, rest_standin, **env):
    return start_server(tmp_path, rest_url=rest_standin.base_url, TWILIO_FROM_NUMBER=FROM,
                        OUTBOUND_ALLOW=json.dumps(["+1555010*"]), **env)


async def _dial(server, flow: str | None = None, variables: dict | None = None) -> str:
    async with httpx.AsyncClient(base_url=server.url) as client:
        placed = await client.post(
            "/api/calls/outbound", json={"to": TO, "flow": flow, "variables": variables or {}},
            headers={"Authorization": f"Bearer {server.api_token}"},
        )
    assert placed.status_code == 201, placed.text
    return placed.json()["call_sid"]


def _answered(server, call_sid: str, **extra: str) -> TwilioCaller:
    """Twilio's side of the call we placed, once the far end picks up."""
    return caller(server, call_sid=call_sid, from_number=FROM, to_number=TO,
                  extra_params={"Direction": "outbound-api", **extra})


async def _ended(server, call_sid: str) -> dict:
    for _ in range(50):
        call = await server.call_by_sid(call_sid)
        if call["ended_at"]:
            return call
        await asyncio.sleep(0.2)
    return call


def _updates(rest_standin, call_sid: str) -> list[dict]:
    return [r.form for r in rest_standin.requests if r.path.endswith(f"/{call_sid}.json")]


async def test_machine_hung_up_on_at_the_webhook_and_mid_call(tmp_path, rest_standin):
    """VOICEMAIL_ACTION=hangup. Synchronous detection: the webhook answers <Hangup/>.
    ASYNC_AMD: the agent speaks at once; the signed AnsweredBy callback ends the call
    through the REST API; an unsigned one changes nothing."""
    server = _server(tmp_path, rest_standin, VOICEMAIL_ACTION="hangup", ASYNC_AMD=1)
    try:
        # Detection finished before Twilio fetched our TwiML.
        sync_sid = await _dial(server)
        webhook = await _answered(server, sync_sid, AnsweredBy="machine_end_beep").post_webhook()
        root = ET.fromstring(webhook.text)
        assert [el.tag for el in root] == ["Hangup"], webhook.text
        call = await server.call_by_sid(sync_sid)
        assert (call["status"], call["end_reason"]) == ("completed", "voicemail")
        assert call["answered_by"] == "machine_end_beep" and call["ended_at"]

        # Asynchronous detection: the call is placed with AsyncAmd and its callback URL.
        async_sid = await _dial(server)
        create = rest_standin.requests[-1].form
        public = server.env["PUBLIC_URL"]
        assert create["MachineDetection"] == "DetectMessageEnd" and create["AsyncAmd"] == "true"
        assert create["AsyncAmdStatusCallback"] == f"{public}/twilio/amd"
        assert create["AsyncAmdStatusCallbackMethod"] == "POST"
        twilio = _answered(server, async_sid)  # no AnsweredBy yet
        ws, session, result = await _open(twilio)
        await session.wait_speech_after(0, 20)  # the opening is playing
        amd = {"AccountSid": ACCOUNT_SID, "CallSid": async_sid,
               "AnsweredBy": "machine_end_beep", "MachineDetectionDuration": "4210"}
        async with httpx.AsyncClient() as client:
            forged = await client.post(f"{server.url}/twilio/amd", data=amd)
        assert forged.status_code == 403
        await asyncio.sleep(0.5)
        assert not session.closed.is_set() and _updates(rest_standin, async_sid) == []
        assert (await twilio.post_signed("/twilio/amd", amd)).status_code == 204
        await asyncio.wait_for(session.closed.wait(), 10)  # the stream ends
        await session.stop()
        await ws.close()
        call = await _ended(server, async_sid)
    finally:
        server.stop()
    assert result.errors == []
    assert _updates(rest_standin, async_sid) == [{"Status": "completed"}]
    assert (call["status"], call["end_reason"]) == ("completed", "voicemail")
    assert call["answered_by"] == "machine_end_beep"


async def test_flow_leaves_a_message_on_a_machine(tmp_path, rest_standin):
    """VOICEMAIL_ACTION=speak with synchronous detection: the dialled call runs the flow it
    was placed with (reminder) and the variables it was placed with, goes straight to its
    voicemail node, leaves the message, presses # and hangs up."""
    server = _server(tmp_path, rest_standin)
    try:
        call_sid = await _dial(server, flow="reminder",
                               variables={"name": "Ada", "day": "2026-12-03"})
        twilio = _answered(server, call_sid, AnsweredBy="machine_end_beep")
        ws, session, result = await _open(twilio)
        await asyncio.wait_for(session.closed.wait(), 30)  # the agent hangs up
        await session.stop()
        call = await _ended(server, call_sid)
    finally:
        server.stop()
    assert result.errors == []
    heard = result.agent_audio()
    tones = dtmf.decode(heard)
    assert [key for key, _, _ in tones] == ["#"], tones
    message = transcribe_8k(heard[: int(tones[0][1] * 8000) * 2])
    # Whisper tiny mishears a word or two of Piper over μ-law ("voicemail" as "boysmell").
    assert wer(EXPECTED_MESSAGE, message) < 0.3 and "speaking with" not in message, message
    assert "december" in message.lower(), message  # the dialler's variables reached the flow
    assert call["flow_name"] == "reminder" and call["flow_path"] == ["answer", "voicemail"]
    assert call["answered_by"] == "machine_end_beep" and call["end_reason"] == "agent-hangup"
    assert call["variables"] == {"name": "Ada", "day": "2026-12-03"}
    assert _updates(rest_standin, call_sid) == [{"Status": "completed"}]


async def test_machine_found_mid_call_hears_the_flow_s_message(tmp_path, rest_standin):
    """ASYNC_AMD with VOICEMAIL_ACTION=speak: the agent greets at once; when the signed
    AnsweredBy callback reports a machine (at the beep), the greeting is cleared from the
    line and the flow's voicemail node leaves its message, presses # and hangs up."""
    server = _server(tmp_path, rest_standin, ASYNC_AMD=1)
    try:
        call_sid = await _dial(server, flow="reminder", variables={"name": "Ada"})
        twilio = _answered(server, call_sid)  # no AnsweredBy yet
        ws, session, result = await _open(twilio)
        await session.wait_speech_after(0, 20)  # "Hello, this is Bright Smile Dental …"
        amd = {"AccountSid": ACCOUNT_SID, "CallSid": call_sid,
               "AnsweredBy": "machine_end_beep", "MachineDetectionDuration": "3120"}
        assert (await twilio.post_signed("/twilio/amd", amd)).status_code == 204
        await asyncio.wait_for(session.closed.wait(), 30)  # the agent hangs up
        await session.stop()
        call = await _ended(server, call_sid)
    finally:
        server.stop()
    assert result.errors == [] and result.clears >= 1  # the greeting was cut off
    cleared = result.clear_times[0]
    message = b"".join(bytes(u.pcm) for u in result.utterances if u.started > cleared)
    tones = dtmf.decode(message)
    assert [key for key, _, _ in tones] == ["#"], tones
    said = transcribe_8k(message[: int(tones[0][1] * 8000) * 2])
    expected = ("We've reached voicemail. This is Bright Smile Dental reminding Ada of an"
                " appointment. Press one after the tone to confirm, or call us back.")
    assert wer(expected, said) < 0.3, said
    assert call["flow_path"] == ["answer", "check_person", "voicemail"]
    assert call["answered_by"] == "machine_end_beep" and call["end_reason"] == "agent-hangup"
    assert _updates(rest_standin, call_sid) == [{"Status": "completed"}]
