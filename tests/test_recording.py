"""Each call is recorded to a stereo WAV as it runs: the caller on the left, the agent right."""

import wave
from pathlib import Path

import numpy as np
import pytest

from tests.support import caller, speech_8k, transcribe_8k

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
