"""Every backend event crosses the model-worker protocol as it was, and nothing else does."""

import pytest
from pydantic import ValidationError

from callwright.agent import backend as contract
from callwright.agent.workers import protocol as p

EVENTS = [
    contract.CallerText(text="my internet is down"),
    contract.CallerEmotion(label="frustrated", arousal=0.7, valence=-0.5),
    contract.TextDelta(text="Sorry to hear that."),
    contract.AudioChunk(audio=b"\x01\x02" * 80, sample_rate=22050),
    contract.ToolCall(call_id="c1", name="fill_slots", arguments={"phone": "+14155550123"}),
    contract.EndOfTurn(end_call=True, transfer_to="+14155550123", dtmf="1",
                       listen_timeout_s=8.0, error=None),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_survive_the_wire(event):
    wire = p.encode_event(7, event).model_dump_json()
    message = p.worker_message.validate_json(wire)
    assert message.turn_id == 7
    assert p.decode_event(message) == event


def test_an_emotion_out_of_range_is_refused():
    wire = ('{"type": "caller_emotion", "turn_id": 1, "label": "frustrated", '
            '"arousal": 3.0, "valence": 0}')
    with pytest.raises(ValidationError):
        p.worker_message.validate_json(wire)
    with pytest.raises(TypeError):
        p.encode_event(1, contract.ModelUsage(first_token_ms=5))
