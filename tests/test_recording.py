"""Each call is recorded to a stereo WAV as it runs: the caller on the left, the agent right."""

import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.admin_seed import add_user
from tests.support import caller, speech_8k, start_server, transcribe_8k
from tests.test_admin_site import signed_in_cookie

pytestmark = pytest.mark.e2e


async def test_both_legs_are_recorded_to_a_stereo_wav(server):
    twilio = caller(server)
    line = "What time do you open on Sunday?"
    result = await twilio.call([speech_8k(line), speech_8k("No thanks goodbye.")])
    assert result.hung_up_by == "agent"

    call = await server.call_by_sid(twilio.call_sid)
    assert call["recording_path"] == f"recordings/call-{call['id']}.wav"
    path = Path(server.env["CALLWRIGHT_DATA_DIR"]) / call["recording_path"]
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    # The file covers the call (greeting, two lines and replies: well over 8 s).
    assert len(stereo) / 8000 > 8
    caller_leg = transcribe_8k(np.ascontiguousarray(stereo[:, 0]).tobytes()).lower()
    agent_leg = transcribe_8k(np.ascontiguousarray(stereo[:, 1]).tobytes()).lower()
    assert "sunday" in caller_leg and "front desk" not in caller_leg, caller_leg
    assert "front desk" in agent_leg and "goodbye" in agent_leg, agent_leg
    assert "sunday" not in agent_leg


async def test_a_flow_can_turn_recording_off(tmp_path, rest_standin):
    """`record: false` in a flow: no file, nothing in the API, no player in the admin."""
    server = start_server(tmp_path, rest_url=rest_standin.base_url,
                          FLOWS_DIR=Path(__file__).parent / "flows", DEFAULT_FLOW="private")
    try:
        add_user(server, "ann", "supervisor")
        twilio = caller(server)
        result = await twilio.call([])
        assert result.errors == [] and result.hung_up_by == "agent"
        assert "not recorded" in transcribe_8k(result.agent_audio()).lower()
        call = await server.call_by_sid(twilio.call_sid)
        assert call["flow_name"] == "private" and call["recording_path"] is None
        async with httpx.AsyncClient(base_url=server.url) as client:
            cookie = {"cookie": await signed_in_cookie(client, "ann")}
            page = (await client.get(f"/admin/calls/{call['id']}", headers=cookie)).text
            listen = await client.get(f"/admin/calls/{call['id']}/recording", headers=cookie)
    finally:
        server.stop()
    assert "No recording is stored for this call." in page and 'id="recording"' not in page
    assert listen.status_code == 404
    recordings = tmp_path / "recordings"
    assert not recordings.exists() or not any(recordings.iterdir())
