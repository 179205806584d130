"""Playback marks over WebRTC come from the output clock, and barge-in flushes the output."""

import asyncio
import time

import numpy as np
from aiortc import RTCSessionDescription
from pipecat.frames.frames import Frame, InterruptionFrame, TTSAudioRawFrame
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.workers.runner import WorkerRunner

from callwright.agent.frames import PlaybackMarkedFrame, PlaybackMarkFrame
from callwright.telephony.webrtc.ice import add_loopback_candidate
from callwright.telephony.webrtc.transport import CallWebRTCTransport
from tests.webrtc_peer import RATE, WebRTCCaller


class MarkProbe(FrameProcessor):
    """Where the slot sits: notes when each mark comes back upstream."""

    def __init__(self) -> None:
        super().__init__()
        self.marked: dict[str, float] = {}

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, PlaybackMarkedFrame):
            self.marked[frame.mark] = time.monotonic()
        await self.push_frame(frame, direction)


def tone(seconds: float) -> TTSAudioRawFrame:
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).tobytes()
    return TTSAudioRawFrame(audio=pcm, sample_rate=RATE, num_channels=1)


async def test_marks_follow_playback_and_barge_in_flushes():
    add_loopback_candidate()
    peer = WebRTCCaller("unused")
    peer.pc.addTrack(peer.mic)
    peer.pc.on("track", peer._on_track)
    await peer.pc.setLocalDescription(await peer.pc.createOffer())
    connection = SmallWebRTCConnection()
    await connection.initialize(sdp=peer.pc.localDescription.sdp, type="offer")
    answer = connection.get_answer()
    await peer.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
    for _ in range(200):
        if connection.pc.connectionState == "connected":
            break
        await asyncio.sleep(0.05)
    assert connection.pc.connectionState == "connected"

    transport = CallWebRTCTransport(
        connection,
        TransportParams(audio_in_enabled=True, audio_out_enabled=True, audio_out_10ms_chunks=2),
    )
    probe = MarkProbe()
    worker = PipelineWorker(
        Pipeline([transport.input(), probe, transport.output()]),
        params=PipelineParams(audio_in_sample_rate=16000, audio_out_sample_rate=RATE),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )
    runner = asyncio.create_task(WorkerRunner(handle_sigint=False).run(worker))
    try:
        await asyncio.sleep(0.5)
        queued = time.monotonic()
        await worker.queue_frames(
            [tone(1.0), PlaybackMarkFrame(message="m1"), tone(3.0), PlaybackMarkFrame(message="m2")]
        )
        for _ in range(100):
            if "m1" in probe.marked:
                break
            await asyncio.sleep(0.02)
        # The first mark comes back once its second of audio has gone out, not when queued.
        assert "m1" in probe.marked and probe.marked["m1"] - queued >= 0.9
        heard_at_mark = sum(
            len(pcm) / 2 / RATE for at, speech, pcm in peer._frames
            if speech and at <= probe.marked["m1"] + 0.1
        )
        assert heard_at_mark >= 0.8, heard_at_mark

        await asyncio.sleep(0.5)
        await worker.queue_frame(InterruptionFrame())
        await asyncio.sleep(3.5)  # longer than the rest of the queued audio
        assert "m2" not in probe.marked  # unplayed audio is never reported as heard
        heard = sum(len(pcm) / 2 / RATE for _, speech, pcm in peer._frames if speech)
        assert 1.3 <= heard <= 2.0, heard  # 1 s + 0.5 s, then the output buffer was flushed
    finally:
        await worker.cancel()
        await runner
        await peer.close()
        await connection.disconnect()
