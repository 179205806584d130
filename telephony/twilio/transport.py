"""pipecat's FastAPI websocket transport, sending the agent's audio a little ahead of playback.

pipecat's output paces audio at exactly real time (a sleep per 20 ms chunk), so the far
end never holds more than the chunk it is playing: any delay in the server's event loop,
the network or the receiving side becomes a hole in the caller's audio (pipecat#3315).
Twilio buffers what it is sent and plays it in order (`clear` empties that buffer), so
here the output keeps one clock per call — when the audio sent so far finishes playing —
and stays `lead_s` ahead of it. A delay shorter than the lead is then inaudible.

Frames that act on the call once the audio before them is heard (a transfer) wait until
that audio has played, as they did when sending kept pace with playback.
"""

from __future__ import annotations

import asyncio
import time

from pipecat.frames.frames import Frame, InterruptionFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from starlette.websockets import WebSocket

from callwright.agent.frames import TransferCallFrame
from callwright.telephony.marks import FlushBeforeMark

OUTPUT_LEAD_S = 0.2  # audio held at the far end: covers server and network hiccups


class LeadPacedOutputTransport(FlushBeforeMark, FastAPIWebsocketOutputTransport):
    """Websocket output that sends audio up to `lead_s` ahead of its playback at Twilio.

    It also flushes the audio queued before each playback mark, and holds a
    `TransferCallFrame` until the audio sent before it has played.
    """

    def __init__(self, *args, lead_s: float = OUTPUT_LEAD_S, **kwargs):
        super().__init__(*args, **kwargs)
        self._lead_s = lead_s
        self._playout_end = 0.0  # monotonic time the audio sent so far ends at the far end

    async def _write_audio_sleep(self) -> None:
        channels = self._params.audio_out_channels
        chunk_s = self.audio_chunk_size / (2 * channels * self.sample_rate)
        now = time.monotonic()
        self._playout_end = max(self._playout_end, now) + chunk_s
        if (wait := self._playout_end - self._lead_s - now) > 0:  # behind: no extra loop turn
            await asyncio.sleep(wait)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """As pipecat's; an interruption resets the playback clock (Twilio empties its buffer)."""
        await super().process_frame(frame, direction)
        if isinstance(frame, InterruptionFrame):
            self._playout_end = 0.0  # the far end's buffer was cleared

    async def write_transport_frame(self, frame: Frame) -> None:
        """Writes a `TransferCallFrame` only once the audio sent so far has played."""
        if isinstance(frame, TransferCallFrame):
            await asyncio.sleep(max(0.0, self._playout_end - time.monotonic()))
        await super().write_transport_frame(frame)


class TwilioWebsocketTransport(FastAPIWebsocketTransport):
    """FastAPIWebsocketTransport whose output sends `lead_s` ahead of playback."""

    def __init__(
        self,
        *,
        websocket: WebSocket,
        params: FastAPIWebsocketParams,
        lead_s: float = OUTPUT_LEAD_S,
    ):
        super().__init__(websocket=websocket, params=params)
        self._output = LeadPacedOutputTransport(
            self, self._client, self._params, name=self._output_name, lead_s=lead_s
        )
