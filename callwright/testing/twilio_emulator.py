"""A strict stand-in for Twilio's side of a call: the voice webhook and a Media Stream.

Built from Twilio's documented formats (see README, "Testing"): it signs requests
with the auth token, sends `connected`, `start`, real-time 20 ms μ-law `media`
and `stop`, plays the agent's audio out at real time, echoes `mark`s only once
the audio before them has played, honours `clear`, and records every protocol
error Twilio would report (31950 binary frames, 31924 unknown events or WAV
payloads). It drives `callwright call`, the tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import functools
import json
import secrets
import ssl
import time
import wave
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets
from twilio.request_validator import RequestValidator

RATE = 8000
CHUNK_BYTES = 160  # 20 ms of 8 kHz μ-law
CHUNK_S = 0.02
SILENCE = b"\xff" * CHUNK_BYTES  # μ-law digital silence
SPEECH_RMS = 400  # int16 RMS above which a chunk counts as speech


def sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def load_wav_8k(path: Path) -> bytes:
    """A WAV file as 8 kHz mono int16 PCM."""
    with wave.open(str(path), "rb") as wav:
        width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
        pcm = wav.readframes(wav.getnframes())
    if width != 2:
        pcm = audioop.lin2lin(pcm, width, 2)
    if channels == 2:
        pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
    if rate != RATE:
        import soxr

        samples = np.frombuffer(pcm, dtype=np.int16)
        pcm = soxr.resample(samples, rate, RATE).astype(np.int16).tobytes()
    return pcm


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    return float(np.sqrt(np.mean(samples**2))) if len(samples) else 0.0


def speech_end_s(pcm8k: bytes) -> float:
    """Offset of the end of the last speech in a clip (20 ms resolution)."""
    step = CHUNK_BYTES * 2
    end = 0.0
    for i in range(0, len(pcm8k), step):
        if rms(pcm8k[i : i + step]) > SPEECH_RMS:
            end = (i + step) / 2 / RATE
    return end


@dataclass(kw_only=True)
class AgentUtterance:
    started: float  # monotonic arrival of its first non-silent chunk
    pcm: bytearray = field(default_factory=bytearray)  # 8 kHz int16, as played


@dataclass(frozen=True, kw_only=True)
class LineAcoustics:
    """What the caller's side adds to what it sends: speakerphone echo, room noise."""

    echo_gain: float = 0.0  # share of the agent's played audio fed back (0: none)
    echo_delay_s: float = 0.12
    noise: bytes = b""  # 8 kHz int16, looped under everything sent


@dataclass(kw_only=True)
class CallResult:
    call_sid: str
    stream_sid: str
    twiml: str
    utterances: list[AgentUtterance] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)  # per caller line
    marks_echoed: int = 0
    clears: int = 0
    clear_times: list[float] = field(default_factory=list)  # monotonic arrival of each clear
    errors: list[str] = field(default_factory=list)  # Twilio error codes with details
    close_code: int | None = None
    hung_up_by: str = ""
    max_gap_ms: float = 0.0  # longest playout underrun inside an agent utterance

    def agent_audio(self) -> bytes:
        return b"".join(bytes(u.pcm) for u in self.utterances)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every request: building one per client blocks the event loop
    ~30 ms (it loads the CA bundle), long enough to fake holes in other calls' audio."""
    return ssl.create_default_context()


class TwilioCaller:
    """Places one call against a callwright server the way Twilio would."""

    def __init__(
        self,
        *,
        base_url: str,
        auth_token: str,
        account_sid: str = "AC" + "0" * 32,
        from_number: str = "+15550100001",
        to_number: str = "+15550100002",
        public_url: str | None = None,
        call_sid: str | None = None,
        extra_params: dict[str, str] | None = None,
    ):
        """`call_sid` and `extra_params` (Direction, AnsweredBy) make it an outbound call
        that callwright placed."""
        self.base_url = base_url.rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        self.validator = RequestValidator(auth_token)
        self.account_sid = account_sid
        self.from_number = from_number
        self.to_number = to_number
        self.call_sid = call_sid or sid("CA")
        self.extra_params = extra_params or {}
        self.stream_sid = sid("MZ")

    def webhook_params(self) -> dict[str, str]:
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": self.from_number,
            "To": self.to_number,
            **self.extra_params,
        }

    async def post_webhook(self, params: dict[str, str] | None = None) -> httpx.Response:
        return await self.post_signed("/twilio/voice", params or self.webhook_params())

    async def post_status(self, status: str, **extra: str) -> httpx.Response:
        """A status callback for this call, as Twilio sends it."""
        params = {**self.webhook_params(), "CallStatus": status, "CallDuration": "0", **extra}
        return await self.post_signed("/twilio/status", params)

    async def post_signed(self, path: str, params: dict[str, str]) -> httpx.Response:
        signature = self.validator.compute_signature(f"{self.public_url}{path}", params)
        async with httpx.AsyncClient(verify=_tls()) as client:
            return await client.post(
                f"{self.base_url}{path}", data=params, headers={"X-Twilio-Signature": signature}
            )

    @staticmethod
    def parse_twiml(twiml: str) -> tuple[str, dict[str, str]]:
        """The stream URL and parameters of `<Connect><Stream>`; raises if absent."""
        root = ET.fromstring(twiml)
        stream = root.find("./Connect/Stream")
        if root.tag != "Response" or stream is None or not stream.get("url"):
            raise ValueError(f"no <Connect><Stream url> in TwiML: {twiml}")
        params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        return stream.get("url"), params

    def connect(self, stream_url: str, *, sign: bool = True):
        headers = {}
        if sign:
            headers["X-Twilio-Signature"] = self.validator.compute_signature(stream_url, {})
        # Twilio dials the public wss:// URL; tests reach the same path on the local server.
        local = self.base_url.replace("http", "ws", 1) + "/twilio/stream"
        return websockets.connect(local, additional_headers=headers, max_size=2**20)

    def start_message(self, custom: dict[str, str]) -> dict:
        return {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.stream_sid,
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": custom,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
            },
        }

    @asynccontextmanager
    async def open_stream(self, acoustics: LineAcoustics = LineAcoustics()):
        """Answer and start the stream; yields the live session for scripted callers."""
        response = await self.post_webhook()
        response.raise_for_status()
        stream_url, custom = self.parse_twiml(response.text)
        result = CallResult(call_sid=self.call_sid, stream_sid=self.stream_sid,
                            twiml=response.text)
        async with self.connect(stream_url) as ws:
            session = StreamSession(ws, self, result, acoustics)
            await session.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await session.send(self.start_message(custom))
            session.begin()
            try:
                yield session
                await session.send({"event": "stop", "sequenceNumber": session.seq(),
                                    "streamSid": self.stream_sid,
                                    "stop": {"accountSid": self.account_sid,
                                             "callSid": self.call_sid}})
            finally:
                await session.stop()

    async def call(
        self,
        lines: list[bytes],
        *,
        reply_gap_s: float = 1.2,
        line_timeout_s: float = 20.0,
        end_timeout_s: float = 15.0,
        hang_up: bool = False,
    ) -> CallResult:
        """Answer, wait for the greeting, then say each line (8 kHz int16) after each reply.

        After the last reply the caller hangs up (`stop`), at once with `hang_up`,
        otherwise only if the agent has not ended the call within `end_timeout_s`.
        """
        response = await self.post_webhook()
        response.raise_for_status()
        stream_url, custom = self.parse_twiml(response.text)
        result = CallResult(call_sid=self.call_sid, stream_sid=self.stream_sid,
                            twiml=response.text)
        async with self.connect(stream_url) as ws:
            session = StreamSession(ws, self, result)
            await session.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await session.send(self.start_message(custom))
            session.begin()
            try:
                await session.wait_reply(reply_gap_s, line_timeout_s)
                for line in lines:
                    sent_at = await session.speak(line)
                    ended = sent_at + speech_end_s(line)
                    await session.wait_reply(reply_gap_s, line_timeout_s, after=ended)
                    first = session.first_speech_after(ended)
                    if first is not None:
                        result.latencies_ms.append((first - ended) * 1000)
                if not hang_up:
                    try:
                        await asyncio.wait_for(session.closed.wait(), end_timeout_s)
                        result.hung_up_by = "agent"
                    except TimeoutError:
                        pass
                if not result.hung_up_by:
                    await session.send({"event": "stop", "sequenceNumber": session.seq(),
                                        "streamSid": self.stream_sid,
                                        "stop": {"accountSid": self.account_sid,
                                                 "callSid": self.call_sid}})
                    result.hung_up_by = "caller"
            finally:
                await session.stop()
        return result


class StreamSession:
    """The live websocket: paced media out, agent audio in, marks and clears.

    `overlay()` mixes a clip into what is sent at a given time, over anything else
    (talking over the agent); `acoustics` adds echo of the agent's played audio and noise.
    """

    def __init__(self, ws, caller: TwilioCaller, result: CallResult,
                 acoustics: LineAcoustics = LineAcoustics()):
        self.ws = ws
        self.acoustics = acoustics
        self._played: list[tuple[float, np.ndarray]] = []  # (play start, samples) of agent audio
        self._overlays: list[tuple[float, np.ndarray]] = []
        self._noise_at = 0
        self.caller = caller
        self.result = result
        self._seq = 1
        self._chunk = 0
        self._outgoing: asyncio.Queue[bytes] = asyncio.Queue()
        self._playout_end = 0.0  # when the agent audio queued so far finishes playing
        self._audible_end = 0.0  # the same, for its last audible (non-zero) part
        self._pending_marks: list[tuple[float, str]] = []
        self._last_agent_audio = 0.0
        self._cleared = False
        self._speech_times: list[float] = []
        self.closed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    @property
    def audible_end(self) -> float:
        """When the last audible agent audio received so far finishes playing (monotonic);
        the digital silence a stream may end with does not count."""
        return self._audible_end

    def seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def send(self, message: dict) -> None:
        await self.ws.send(json.dumps(message))

    def begin(self) -> None:
        self._t0 = time.monotonic()
        self._tasks = [asyncio.create_task(self._send_media()),
                       asyncio.create_task(self._receive()),
                       asyncio.create_task(self._echo_marks())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def press(self, digits: str) -> float:
        """Keypad presses as Twilio reports them (bidirectional streams only); returns when."""
        for digit in digits:
            await self.send({"event": "dtmf", "sequenceNumber": self.seq(),
                             "streamSid": self.caller.stream_sid,
                             "dtmf": {"track": "inbound_track", "digit": digit}})
        return time.monotonic()

    async def speak(self, pcm8k: bytes) -> float:
        """Queue a line; returns the time its first chunk goes out."""
        ulaw = audioop.lin2ulaw(pcm8k, 2)
        chunks = [ulaw[i : i + CHUNK_BYTES].ljust(CHUNK_BYTES, b"\xff")
                  for i in range(0, len(ulaw), CHUNK_BYTES)]
        done = asyncio.get_running_loop().create_future()
        await self._outgoing.put((chunks, done))
        started = await done
        # Wait until the whole line has been sent at real time.
        await asyncio.sleep(max(0.0, started + len(chunks) * CHUNK_S - time.monotonic()))
        return started

    async def _send_media(self) -> None:
        """20 ms chunks on an absolute schedule; silence between lines, like a live line."""
        next_at = time.monotonic()
        pending: list[bytes] = []
        while True:
            if not pending and not self._outgoing.empty():
                pending, done = self._outgoing.get_nowait()
                pending = list(pending)
                done.set_result(next_at)
            payload = pending.pop(0) if pending else SILENCE
            payload = self._mix(payload, next_at)
            self._chunk += 1
            await self.send({
                "event": "media",
                "sequenceNumber": self.seq(),
                "streamSid": self.caller.stream_sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(self._chunk),
                    "timestamp": str(int((next_at - self._t0) * 1000)),
                    "payload": base64.b64encode(payload).decode(),
                },
            })
            next_at += CHUNK_S
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    def overlay(self, pcm8k: bytes, at: float) -> None:
        """Send `pcm8k` mixed over whatever else is being sent, from monotonic time `at`."""
        self._overlays.append((at, np.frombuffer(pcm8k, dtype=np.int16).astype(np.float32)))

    def _window(self, parts: list[tuple[float, np.ndarray]], t: float) -> np.ndarray:
        out = np.zeros(CHUNK_BYTES, dtype=np.float32)
        for start, samples in parts:
            first = int(round((t - start) * RATE))
            lo, hi = max(first, 0), min(first + CHUNK_BYTES, len(samples))
            if hi > lo:
                out[lo - first : hi - first] += samples[lo:hi]
        return out

    def _mix(self, payload: bytes, t: float) -> bytes:
        extra = self._window(self._overlays, t)
        if self.acoustics.echo_gain:
            echo = self._window(self._played, t - self.acoustics.echo_delay_s)
            extra += echo * self.acoustics.echo_gain
        if self.acoustics.noise:
            noise = np.frombuffer(self.acoustics.noise, dtype=np.int16)
            idx = (np.arange(CHUNK_BYTES) + self._noise_at) % len(noise)
            self._noise_at += CHUNK_BYTES
            extra += noise[idx]
        self._overlays = [(s, a) for s, a in self._overlays if s + len(a) / RATE > t]
        self._played = [(s, a) for s, a in self._played if s + len(a) / RATE > t - 2.0]
        if not extra.any():
            return payload
        pcm = np.frombuffer(audioop.ulaw2lin(payload, 2), dtype=np.int16) + extra
        return audioop.lin2ulaw(np.clip(pcm, -32768, 32767).astype(np.int16).tobytes(), 2)

    async def _receive(self) -> None:
        try:
            async for raw in self.ws:
                self._handle(raw)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.result.close_code = self.ws.close_code
            self.closed.set()

    def _handle(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            self.result.errors.append("31950 binary frame")
            return
        try:
            message = json.loads(raw)
        except ValueError:
            self.result.errors.append("31924 invalid JSON")
            return
        event = message.get("event")
        if event not in ("media", "mark", "clear"):
            self.result.errors.append(f"31924 unexpected event {event!r}")
            return
        if message.get("streamSid") != self.caller.stream_sid:
            self.result.errors.append("31924 wrong streamSid")
            return
        now = time.monotonic()
        if event == "media":
            payload = base64.b64decode(message["media"]["payload"])
            if payload[:4] == b"RIFF":
                self.result.errors.append("31924 WAV header in payload")
                return
            pcm = audioop.ulaw2lin(payload, 2)
            underrun = now - self._playout_end
            # The caller hears a hole when sound resumes after it; a late start of the
            # digital silence a stream may end with is not heard.
            audible = pcm.count(0) < len(pcm)
            if 0.0 < underrun < 0.6 and self.result.utterances and audible:
                self.result.max_gap_ms = max(self.result.max_gap_ms, underrun * 1000)
            start = max(now, self._playout_end)
            self._playout_end = start + len(payload) / RATE
            if audible:
                self._audible_end = self._playout_end
            self._played.append((start, np.frombuffer(pcm, dtype=np.int16).astype(np.float32)))
            if rms(pcm) > SPEECH_RMS:
                self._speech_times.append(now)
                quiet_s = now - self._last_agent_audio
                if quiet_s > 0.6 or self._cleared or not self.result.utterances:
                    self._cleared = False
                    self.result.utterances.append(AgentUtterance(started=now))
                self._last_agent_audio = now
            if self.result.utterances:
                self.result.utterances[-1].pcm.extend(pcm)
        elif event == "mark":
            self._pending_marks.append((self._playout_end, message["mark"]["name"]))
        else:  # clear: drop the unplayed audio; its marks are never echoed
            self.result.clears += 1
            self.result.clear_times.append(now)
            self._cleared = True  # what plays next is a new utterance
            self._playout_end = now
            self._audible_end = min(self._audible_end, now)
            self._played = [(s, a[: max(0, int((now - s) * RATE))]) for s, a in self._played]
            self._pending_marks.clear()

    async def _echo_marks(self) -> None:
        while True:
            now = time.monotonic()
            while self._pending_marks and self._pending_marks[0][0] <= now:
                _, name = self._pending_marks.pop(0)
                self.result.marks_echoed += 1
                await self.send({"event": "mark", "sequenceNumber": self.seq(),
                                 "streamSid": self.caller.stream_sid, "mark": {"name": name}})
            await asyncio.sleep(0.01)

    async def wait_speech_after(self, t: float, timeout_s: float) -> float | None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.closed.is_set():
            first = self.first_speech_after(t)
            if first is not None:
                return first
            await asyncio.sleep(0.02)
        return None

    def first_speech_after(self, t: float) -> float | None:
        return next((s for s in self._speech_times if s > t), None)

    async def wait_reply(self, gap_s: float, timeout_s: float, *, after: float = 0.0) -> None:
        """Wait for agent speech after `after`, then for `gap_s` without any."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.closed.is_set():
            spoke = self._last_agent_audio > after
            quiet = time.monotonic() - max(self._last_agent_audio, self._playout_end)
            if spoke and quiet >= gap_s:
                return
            await asyncio.sleep(0.02)
