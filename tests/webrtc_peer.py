"""An aiortc caller for tests: speaks WAV-like PCM into a browser call and records the agent."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import soxr
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from av import AudioFrame

RATE = 48_000
FRAME = RATE // 50  # 20 ms
SPEECH_RMS = 300  # int16 RMS above which a received 20 ms frame counts as agent speech
SILENCE_ENDS_UTTERANCE_S = 1.0


class SpeechTrack(MediaStreamTrack):
    """A microphone: silence, or the PCM queued with `say()`, at real-time pace."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue = bytearray()
        self._start: float | None = None
        self._pts = 0

    def say(self, pcm48: bytes) -> float:
        """Queue speech; returns how long until it has all been sent, in seconds."""
        self._queue += pcm48
        return len(self._queue) / 2 / RATE

    async def recv(self) -> AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        size = FRAME * 2
        chunk = bytes(self._queue[:size]).ljust(size, b"\0")
        del self._queue[:size]
        frame = AudioFrame.from_ndarray(
            np.frombuffer(chunk, dtype=np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, RATE)
        self._pts += FRAME
        return frame


@dataclass
class CallResult:
    call_sid: str = ""
    pc_id: str = ""
    utterances: list[bytes] = field(default_factory=list)  # agent speech, 8 kHz int16 mono
    latencies_ms: list[float] = field(default_factory=list)  # end of line -> agent audio
    events: list[dict] = field(default_factory=list)  # data-channel messages
    hung_up_by: str = ""


def to_48k(pcm8k: bytes) -> bytes:
    samples = np.frombuffer(pcm8k, dtype=np.int16).astype(np.float32)
    return soxr.resample(samples, 8000, RATE).clip(-32768, 32767).astype(np.int16).tobytes()


def to_8k(pcm48: bytes) -> bytes:
    samples = np.frombuffer(pcm48, dtype=np.int16).astype(np.float32)
    return soxr.resample(samples, RATE, 8000).clip(-32768, 32767).astype(np.int16).tobytes()


class WebRTCCaller:
    """Calls `POST /webrtc/offer` as a browser would, with aiortc."""

    def __init__(self, base_url: str, *, flow: str | None = None):
        self.base_url = base_url
        self.flow = flow
        self.pc = RTCPeerConnection()
        self.mic = SpeechTrack()
        self.result = CallResult()
        self._frames: list[tuple[float, bool, bytes]] = []  # (arrival, speech?, mono 48 kHz)
        self._reader: asyncio.Task | None = None

    async def connect(self) -> None:
        self.pc.addTrack(self.mic)
        channel = self.pc.createDataChannel("events")
        channel.on("message", lambda m: self.result.events.append(json.loads(m)))
        self.pc.on("track", lambda track: self._on_track(track))
        await self.pc.setLocalDescription(await self.pc.createOffer())  # gathers every candidate
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer"}
        if self.flow:
            body["requestData"] = {"flow": self.flow}
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            response = await client.post("/webrtc/offer", json=body, timeout=30)
        response.raise_for_status()
        answer = response.json()
        self.result.call_sid, self.result.pc_id = answer["call_sid"], answer["pc_id"]
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))

    def _on_track(self, track: MediaStreamTrack) -> None:
        async def read() -> None:
            while True:
                try:
                    frame = await track.recv()
                except Exception:
                    return
                # aiortc decodes Opus to interleaved stereo, even from a mono sender.
                mono = frame.to_ndarray().reshape(-1, 2)[:, 0].astype(np.int16)
                rms = float(np.sqrt(np.mean(mono.astype(np.float32) ** 2)))
                self._frames.append((time.monotonic(), rms > SPEECH_RMS, mono.tobytes()))

        self._reader = asyncio.create_task(read())

    def _speech_since(self, t: float) -> float | None:
        return next((at for at, speech, _ in self._frames if at >= t and speech), None)

    async def agent_turn(self, *, after: float, timeout: float = 30.0) -> float:
        """Wait for agent speech after `after` and for it to end; returns when it started."""
        deadline = time.monotonic() + timeout
        while (start := self._speech_since(after)) is None:
            if time.monotonic() > deadline or self.pc.connectionState == "closed":
                raise TimeoutError("the agent did not speak")
            await asyncio.sleep(0.05)
        while time.monotonic() < deadline and self.pc.connectionState != "closed":
            last = max(at for at, speech, _ in self._frames if speech)
            if time.monotonic() - last >= SILENCE_ENDS_UTTERANCE_S:
                break
            await asyncio.sleep(0.05)
        end = max(at for at, speech, _ in self._frames if speech)
        pcm = b"".join(p for at, _, p in self._frames if start - 0.1 <= at <= end + 0.1)
        self.result.utterances.append(to_8k(pcm))
        return start

    async def say(self, pcm8k: bytes) -> float:
        """Speak a line; returns the time its last sample went out."""
        await asyncio.sleep(self.mic.say(to_48k(pcm8k)))
        return time.monotonic()

    async def call(self, lines: list[bytes], *, hang_up_after_s: float = 10.0) -> CallResult:
        """Greeting, then each line followed by the agent's reply; the agent may hang up."""
        await self.connect()
        try:
            await self.agent_turn(after=0.0)
            for pcm in lines:
                said = await self.say(pcm)
                started = await self.agent_turn(after=said)
                self.result.latencies_ms.append((started - said) * 1000)
            deadline = time.monotonic() + hang_up_after_s
            while self.pc.connectionState != "closed" and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            self.result.hung_up_by = "agent" if self.pc.connectionState == "closed" else "caller"
        finally:
            await self.close()
        return self.result

    async def close(self) -> None:
        await self.pc.close()
        if self._reader:
            self._reader.cancel()
