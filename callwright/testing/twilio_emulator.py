"""A strict stand-in for Twilio's side of a call: the voice webhook and a Media Stream.

Built from Twilio's documented formats (see README, "Testing"): it signs requests
with the auth token, answers the webhook's TwiML by opening the `<Stream>` with
`connected` and `start`, and hands the live stream to a `StreamSession`
(`twilio_stream`). It drives `callwright call`, the tests and the benchmarks.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import ssl
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager

import httpx
import websockets
from twilio.request_validator import RequestValidator

from callwright.testing.line_audio import RATE, LineAcoustics, speech_end_s
from callwright.testing.twilio_stream import CallResult, StreamSession


def sid(prefix: str) -> str:
    """A new random Twilio SID: `prefix` ("CA", "MZ") and 32 hex digits."""
    return prefix + secrets.token_hex(16)


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
        stream_base_url: str | None = None,
    ):
        """`call_sid` and `extra_params` (Direction, AnsweredBy) make it an outbound call
        that callwright placed; `stream_base_url` opens the stream on another server than
        the webhook's (as a balancer may)."""
        self.base_url = base_url.rstrip("/")
        self.stream_base_url = (stream_base_url or base_url).rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        self.validator = RequestValidator(auth_token)
        self.account_sid = account_sid
        self.from_number = from_number
        self.to_number = to_number
        self.call_sid = call_sid or sid("CA")
        self.extra_params = extra_params or {}
        self.stream_sid = sid("MZ")

    def webhook_params(self) -> dict[str, str]:
        """The voice webhook's form for this call: an inbound, ringing call, plus `extra_params`."""
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
        """Post the signed voice webhook; `params` default to `webhook_params()`."""
        return await self.post_signed("/twilio/voice", params or self.webhook_params())

    async def post_status(self, status: str, **extra: str) -> httpx.Response:
        """A status callback for this call, as Twilio sends it."""
        params = {**self.webhook_params(), "CallStatus": status, "CallDuration": "0", **extra}
        return await self.post_signed("/twilio/status", params)

    async def post_signed(self, path: str, params: dict[str, str]) -> httpx.Response:
        """Post `params` as a form to `path`, signed as Twilio signs it for `public_url + path`."""
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
        """Open the Media Stream websocket; use the result with `async with`.

        Twilio would dial `stream_url`; this connects to `/twilio/stream` on `stream_base_url`,
        with the signature for `stream_url` unless `sign` is False.
        """
        headers = {}
        if sign:
            headers["X-Twilio-Signature"] = self.validator.compute_signature(stream_url, {})
        # Twilio dials the public wss:// URL; tests reach the same path on the local server.
        local = self.stream_base_url.replace("http", "ws", 1) + "/twilio/stream"
        return websockets.connect(local, additional_headers=headers, max_size=2**20)

    def start_message(self, custom: dict[str, str]) -> dict:
        """The stream's `start` message, with the TwiML's `<Parameter>`s as `customParameters`."""
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
    async def open_stream(self, acoustics: LineAcoustics | None = None):
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
                if not session.closed.is_set():  # else the agent hung up
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
