"""A playback mark leaves the output transport after all the audio queued before it."""

from pipecat.frames.frames import (
    Frame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    TTSAudioRawFrame,
)
from pipecat.tests.utils import SleepFrame, run_test
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import TransportParams

from callwright.agent.frames import PlaybackMarkFrame
from callwright.telephony.marks import FlushBeforeMark

RATE = 8000


class _Wire(BaseOutputTransport):
    """Writes nothing anywhere: keeps what would go on the wire, in order."""

    def __init__(self, wire: list):
        super().__init__(TransportParams(audio_out_enabled=True, audio_out_sample_rate=RATE,
                                         audio_out_10ms_chunks=10))
        self._wire = wire

    async def start(self, frame):
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def write_audio_frame(self, frame: OutputAudioRawFrame) -> bool:
        self._wire.append(("audio", len(frame.audio) // 2))
        return True

    async def send_message(self, frame: OutputTransportMessageFrame) -> None:
        self._wire.append(("mark", frame.message))


class _FlushingWire(FlushBeforeMark, _Wire):
    pass


async def _send_piece(transport_class) -> list:
    wire: list = []
    frames: list[Frame] = [
        TTSAudioRawFrame(audio=b"\x10\x00" * 1200, sample_rate=RATE, num_channels=1),  # 150 ms
        PlaybackMarkFrame(message="a1"),
        SleepFrame(0.5),
    ]
    await run_test(transport_class(wire), frames_to_send=frames, ignore_start=True)
    return wire


async def test_the_mark_follows_the_pieces_last_part_chunk():
    wire = await _send_piece(_FlushingWire)
    mark = wire.index(("mark", "a1"))
    assert sum(n for kind, n in wire[:mark] if kind == "audio") >= 1200


async def test_pipecat_alone_sends_the_mark_before_the_tail():
    wire = await _send_piece(_Wire)
    mark = wire.index(("mark", "a1"))
    assert sum(n for kind, n in wire[:mark] if kind == "audio") < 1200
