"""pipecat's SmallWebRTC transport, with playback marks answered from the output clock.

On the phone, Twilio echoes each `mark` once the audio before it has played. A WebRTC
peer has no such echo, so the output transport answers the marks itself: pipecat's
output queues a `PlaybackMarkFrame` in order with the audio, and writing a piece of
audio to the track returns only once the track's real-time clock has sent it. When
the mark comes up, everything before it is on the wire, and a `PlaybackMarkedFrame`
goes back upstream. A barge-in drops the queued audio and the marks behind it
together, so unplayed text is never reported as heard.
"""

from __future__ import annotations

from pipecat.frames.frames import OutputTransportMessageFrame, OutputTransportMessageUrgentFrame
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.smallwebrtc.transport import (
    SmallWebRTCOutputTransport,
    SmallWebRTCTransport,
)

from callwright.agent.frames import PlaybackMarkedFrame, PlaybackMarkFrame
from callwright.telephony.marks import FlushBeforeMark


class PlaybackClockOutputTransport(FlushBeforeMark, SmallWebRTCOutputTransport):
    """SmallWebRTC output that answers each playback mark once the audio before it is sent."""

    async def send_message(
        self, frame: OutputTransportMessageFrame | OutputTransportMessageUrgentFrame
    ) -> None:
        """Answers a playback mark with `PlaybackMarkedFrame` upstream; sends others as usual."""
        if isinstance(frame, PlaybackMarkFrame):
            await self.push_frame(PlaybackMarkedFrame(mark=frame.message), FrameDirection.UPSTREAM)
            return
        await super().send_message(frame)


class CallWebRTCTransport(SmallWebRTCTransport):
    """SmallWebRTCTransport whose output reports playback marks."""

    def output(self) -> SmallWebRTCOutputTransport:
        """The output transport: a `PlaybackClockOutputTransport`, created on first use."""
        if not self._output:
            self._output = PlaybackClockOutputTransport(
                self._client, self._params, name=self._output_name
            )
        return self._output
