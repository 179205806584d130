"""A flow end to end by audio: a synthesised caller books a table over the Twilio protocol."""

import asyncio
from datetime import date, timedelta

import pytest

from callwright.memory.db import create_engine
from callwright.memory.store import CallStore
from tests.support import caller, speech_8k, start_server, transcribe_8k

pytestmark = pytest.mark.e2e

LINES = [  # one answer per question, in words espeak's voice carries through Whisper tiny
    "Yes, please.",
    "Four people.",
    "Tomorrow.",
    "At seven thirty in the evening.",
    "My name is Peter.",
    "Yes please.",
]


@pytest.fixture(scope="module")
def flow_server(tmp_path_factory, rest_standin):
    server = start_server(tmp_path_factory.mktemp("flow-server"), rest_url=rest_standin.base_url,
                          DEFAULT_FLOW="restaurant")
    yield server
    server.stop()


async def test_restaurant_flow_by_audio(flow_server):
    twilio = caller(flow_server)
    result = await twilio.call([speech_8k(line) for line in LINES])
    assert result.errors == []
    assert result.hung_up_by == "agent"  # the flow's end_call after "You're booked"
    heard = [transcribe_8k(bytes(u.pcm)) for u in result.utterances]
    assert "reserve a table" in heard[0].lower()
    assert "look forward to seeing you" in heard[-1].lower()

    await asyncio.sleep(1.0)  # the last flow snapshot is written just after hang-up
    engine = create_engine(f"sqlite+aiosqlite:///{flow_server.env['CALLWRIGHT_DATA_DIR']}"
                           "/callwright.db")
    try:
        listed = await CallStore(engine).list_calls(call_sid=twilio.call_sid)
        call = await CallStore(engine).get_call(listed[0].id)
    finally:
        await engine.dispose()
    assert call.flow_name == "restaurant" and len(call.flow_version) == 16
    assert call.flow_path == ["greet", "party", "name", "confirm", "booked"], [
        t.text for t in call.turns]
    tomorrow = (date.today() + timedelta(days=1)).isoformat()
    assert call.slots == {"party_size": 4, "date": tomorrow, "time": "19:30", "name": "Peter",
                          "confirmed": True}, [t.text for t in call.turns]
