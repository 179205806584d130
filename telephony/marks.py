"""Playback marks follow every sample of the audio queued before them.

pipecat's media sender cuts the agent's audio into whole chunks (100 ms here) and holds
the last part-chunk back until more audio comes or TTS stops. A mark queued behind a
piece went out before that piece's last ≤100 ms, and at the end of a turn the tail then
waited for the turn to close: behind a caller transcript, under load, 300-600 ms of
silence before the last syllable. The output transports here flush that tail (padded
with silence, as pipecat does when TTS stops) before each mark.
"""

from __future__ import annotations

from pipecat.frames.frames import Frame

from callwright.agent.frames import PlaybackMarkFrame


class FlushBeforeMark:
    """Mix into a pipecat output transport, before it in the bases."""

    async def _handle_frame(self, frame: Frame) -> None:
        if isinstance(frame, PlaybackMarkFrame):
            sender = self._media_senders.get(frame.transport_destination)
            if sender is not None:
                await sender._enqueue_flushed_audio_buffer()
        await super()._handle_frame(frame)
