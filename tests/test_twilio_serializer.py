"""Caller audio leaves the serializer in 60 ms frames; other events pass at once."""

import audioop
import base64
import json

import numpy as np
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames.frames import InputAudioRawFrame, InputDTMFFrame
from pipecat.processors.frame_processor import FrameProcessorSetup

from callwright.agent.frames import PlaybackMarkedFrame
from callwright.telephony.twilio.serializer import TwilioMediaStreamSerializer
from tests.support import speech_8k

STREAM_SID = "MZ" + "0" * 32


async def _serializer() -> TwilioMediaStreamSerializer:
    serializer = TwilioMediaStreamSerializer(
        stream_sid=STREAM_SID, call_sid="CA" + "0" * 32, max_message_bytes=64_000
    )
    await serializer.setup(FrameProcessorSetup(
        clock=SystemClock(), task_manager=None, pipeline_worker=None, audio_in_sample_rate=16_000
    ))
    return serializer


def _media(ulaw: bytes, seq: int) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": STREAM_SID,
                       "media": {"track": "inbound", "chunk": str(seq), "timestamp": str(seq * 20),
                                 "payload": base64.b64encode(ulaw).decode()}})


async def test_twenty_ms_messages_become_sixty_ms_frames_with_every_sample():
    serializer = await _serializer()
    ulaw = audioop.lin2ulaw(speech_8k("What time do you open?"), 2)
    chunks = [ulaw[i : i + 160] for i in range(0, len(ulaw) - 159, 160)]
    frames = [await serializer.deserialize(_media(c, n)) for n, c in enumerate(chunks)]
    audio = [f for f in frames if f is not None]
    assert all(isinstance(f, InputAudioRawFrame) and f.sample_rate == 16_000 for f in audio)
    assert all(f.audio for f in audio)
    # At most one frame per three messages (60 ms), where pipecat hands on one per message.
    assert all(f is None for n, f in enumerate(frames) if n % 3 != 2)
    heard = np.frombuffer(b"".join(f.audio for f in audio), dtype=np.int16)
    sent = np.frombuffer(audioop.ulaw2lin(b"".join(chunks), 2), dtype=np.int16)
    # Every sample, upsampled, less what the resampler still holds (< 0.1 s).
    assert 0 <= 2 * len(sent) - len(heard) < 1600
    assert abs(np.std(heard) - np.std(sent)) < 0.1 * np.std(sent)


async def test_marks_and_digits_are_not_held_behind_audio():
    serializer = await _serializer()
    assert await serializer.deserialize(_media(b"\xff" * 160, 1)) is None
    mark = {"event": "mark", "streamSid": STREAM_SID, "mark": {"name": "a1"}}
    marked = await serializer.deserialize(json.dumps(mark))
    assert isinstance(marked, PlaybackMarkedFrame) and marked.mark == "a1"
    dtmf = {"event": "dtmf", "streamSid": STREAM_SID, "dtmf": {"track": "inbound_track",
                                                              "digit": "5"}}
    assert isinstance(await serializer.deserialize(json.dumps(dtmf)), InputDTMFFrame)
