"""The far end of a Twilio Media Stream, as the stand-in caller plays it: paced 20 ms
μ-law out, the agent's audio played at real time in, `mark`s echoed once played, `clear`
honoured, and every protocol error Twilio would report recorded (31950 binary frames, 31924
unknown events or WAV payloads). `TwilioCaller.open_stream` starts one.
"""

from __future__ import annotations

import asyncio
import audioop
import base64
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import websockets

from callwright.testing.line_audio import (
    CHUNK_BYTES,
    CHUNK_S,
    RATE,
    SILENCE,
    SPEECH_RMS,
    CallerSide,
    LineAcoustics,
    rms,
)

if TYPE_CHECKING:
    from callwright.testing.twilio_emulator import TwilioCaller


@dataclass(kw_only=True)
class AgentUtterance:
    """One stretch of the agent's speech, as it reached the caller.

    A new one starts after over 0.6 s without speech, or after a `clear`.
    """

    started: float  # monotonic arrival of its first non-silent chunk
    pcm: bytearray = field(default_factory=bytearray)  # 8 kHz int16, as played


@dataclass(kw_only=True)
class CallResult:
    """What happened on one emulated call: the agent's audio, timings and protocol errors.

    Attributes:
        call_sid: The call's CallSid.
        stream_sid: The Media Stream's streamSid.
        twiml: The voice webhook's answer.
        utterances: The agent's speech, in order (see `AgentUtterance`).
        marks_echoed: `mark`s sent back once the audio before them had played.
        clears: `clear` messages received.
        close_code: The websocket's close code, once it closed.
        hung_up_by: "agent" or "caller", set by `TwilioCaller.call`.
    """

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
        """All agent audio received from its first speech on (8 kHz int16), as one buffer."""
        return b"".join(bytes(u.pcm) for u in self.utterances)



class StreamSession:
    """The live websocket: paced media out, agent audio in, marks and clears.

    `overlay()` mixes a clip into what is sent at a given time, over anything else
    (talking over the agent); `acoustics` adds echo of the agent's played audio and noise.
    """

    def __init__(self, ws, caller: TwilioCaller, result: CallResult,
                 acoustics: LineAcoustics | None = None):
        self.ws = ws
        self._line = CallerSide(acoustics or LineAcoustics())
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
        """The next `sequenceNumber`, as a string like Twilio's."""
        self._seq += 1
        return str(self._seq)

    async def send(self, message: dict) -> None:
        """Send one message (a dict, as JSON text) on the websocket."""
        await self.ws.send(json.dumps(message))

    def begin(self) -> None:
        """Start sending media (silence between lines), receiving, and echoing marks; call once."""
        self._t0 = time.monotonic()
        self._tasks = [asyncio.create_task(self._send_media()),
                       asyncio.create_task(self._receive()),
                       asyncio.create_task(self._echo_marks())]

    async def stop(self) -> None:
        """Cancel the sending, receiving and mark tasks and wait for them to end."""
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
            payload = self._line.mix(payload, next_at)
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
        self._line.overlay(pcm8k, at)

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
            self._line.played(pcm, start)
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
            self._line.cleared(now)
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
        """When the agent first spoke after monotonic time `t`, waiting up to `timeout_s` for it.

        Returns None when it did not within `timeout_s`, or the stream closed first.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.closed.is_set():
            first = self.first_speech_after(t)
            if first is not None:
                return first
            await asyncio.sleep(0.02)
        return None

    def first_speech_after(self, t: float) -> float | None:
        """The arrival (monotonic) of the agent's first speech after `t`, or None if none yet."""
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
