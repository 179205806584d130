"""pipecat's Twilio serializer, made strict about input and able to speak `mark`.

Twilio sends 20 ms of caller audio per message. Each frame costs every processor in
the pipeline a hop through the event loop, so the caller's audio goes on as one frame
per `input_frame_ms` (60 ms by default): a third of the hops, for at most 40 ms more
before the VAD hears the start or end of speech.
"""

from __future__ import annotations

import base64
import binascii
import json

from loguru import logger
from pipecat.audio.utils import ulaw_to_pcm
from pipecat.frames.frames import Frame, InputAudioRawFrame
from pipecat.serializers.twilio import TwilioFrameSerializer

from callwright.agent.frames import PlaybackMarkedFrame, PlaybackMarkFrame

_KNOWN_EVENTS = {"connected", "start", "media", "dtmf", "mark", "stop"}

# Websocket close codes (RFC 6455 §7.4.1) for what a stream message can be refused for.
UNSUPPORTED_DATA = 1003  # a binary frame: Twilio sends only text
INVALID_PAYLOAD = 1007  # text that is not JSON
POLICY_VIOLATION = 1008  # JSON, but not the Twilio event expected
MESSAGE_TOO_BIG = 1009  # over the size limit, or nested past what the parser handles


class BadMessage(ValueError):
    """A stream message that is not a Twilio event object.

    Attributes:
        code: The websocket close code the message earns when the stream is refused for it.
        why: What is wrong with it, for the log.
    """

    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code, self.why = code, why


def parse_message(data: str | bytes, max_bytes: int) -> dict:
    """Parse one Media Streams message into its JSON object, whatever arrived.

    Args:
        data: The websocket message: text, or bytes for a binary frame.
        max_bytes: The largest message accepted, in UTF-8 bytes.

    Returns:
        The message's JSON object (its `event` is not checked here).

    Raises:
        BadMessage: For a binary frame, an oversized or too deeply nested message,
            text that is not JSON, or JSON that is not an object.
    """
    if isinstance(data, bytes):
        raise BadMessage(UNSUPPORTED_DATA, f"binary frame of {len(data)} bytes (Twilio sends text)")
    # The limit is in bytes; only non-ASCII text needs encoding to measure it.
    size = len(data) if data.isascii() else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise BadMessage(MESSAGE_TOO_BIG, f"message of {size} bytes exceeds {max_bytes}")
    try:
        message = json.loads(data)
    except RecursionError:  # json recurses per level: [[[[... past ~1000 levels
        raise BadMessage(MESSAGE_TOO_BIG, "JSON nested too deeply to parse") from None
    except ValueError as exc:  # also integers past Python's 4300-digit limit
        why = f"invalid JSON ({str(exc)[:60]}): {data[:80]!r}"
        raise BadMessage(INVALID_PAYLOAD, why) from None
    if not isinstance(message, dict):
        raise BadMessage(POLICY_VIOLATION, f"JSON {type(message).__name__} is not an event object")
    return message


def describe(value: object) -> str:
    """A short, safe description of a parsed JSON value for the log.

    Only a string is quoted: the repr of JSON nested nearly as deep as the parser allows
    would itself exceed the recursion limit.
    """
    return repr(value[:40]) if isinstance(value, str) else type(value).__name__


class TwilioMediaStreamSerializer(TwilioFrameSerializer):
    """Skips and logs (with the call SID) anything that is not a well-formed Twilio event.

    pipecat's receive loop ends the call on the first exception a serializer raises,
    so nothing here may raise on bad input.
    """

    def __init__(
        self, *, stream_sid: str, call_sid: str, max_message_bytes: int, input_frame_ms: int = 60
    ):
        super().__init__(
            stream_sid, call_sid, params=TwilioFrameSerializer.InputParams(auto_hang_up=False)
        )
        self._max_bytes = max_message_bytes
        self._frame_bytes = self._twilio_sample_rate * input_frame_ms // 1000  # 1 byte/sample
        self._ulaw = bytearray()  # caller audio not yet handed on
        self.stopped = False  # Twilio sent `stop`: the caller hung up
        self.rejected = 0

    def _skip(self, why: str) -> None:
        self.rejected += 1
        # One line per reason is enough to debug; a flood must not flood the log.
        if self.rejected <= 20 or self.rejected % 1000 == 0:
            logger.warning(f"call {self._call_sid}: skipped stream message #{self.rejected}: {why}")

    async def _caller_audio(self) -> InputAudioRawFrame | None:
        if len(self._ulaw) < self._frame_bytes:
            return None
        ulaw, self._ulaw = bytes(self._ulaw), bytearray()
        try:
            pcm = await ulaw_to_pcm(
                ulaw, self._twilio_sample_rate, self._sample_rate, self._input_resampler
            )
        except Exception as exc:  # never let one message end the call
            self._skip(f"media could not be decoded: {exc!r}")
            return None
        if not pcm:  # the resampler holds it back for now (soxr hands on in blocks)
            return None
        return InputAudioRawFrame(audio=pcm, num_channels=1, sample_rate=self._sample_rate)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        """Sends `PlaybackMarkFrame` as a Twilio `mark` event, anything else as pipecat does."""
        if isinstance(frame, PlaybackMarkFrame):
            return json.dumps(
                {"event": "mark", "streamSid": self._stream_sid, "mark": {"name": frame.message}}
            )
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        """One stream message as a frame, or None; bad messages are skipped and logged, not raised.

        Caller audio is buffered and handed on every `input_frame_ms`, a `mark` echo becomes
        `PlaybackMarkedFrame`, and `stop` sets `stopped`.
        """
        try:
            message = parse_message(data, self._max_bytes)
        except BadMessage as exc:
            self._skip(exc.why)
            return None
        event = message.get("event")
        if not isinstance(event, str) or event not in _KNOWN_EVENTS:  # a list is unhashable
            self._skip(f"unknown event {describe(event)}")
            return None
        body = message.get(event)
        if event in ("media", "dtmf", "mark") and not isinstance(body, dict):
            self._skip(f"{event} without a {event!r} object")
            return None
        if event == "media":
            payload = body.get("payload")
            if not isinstance(payload, str) or not payload:
                self._skip("media without a payload")
                return None
            try:
                self._ulaw += base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                self._skip("media payload is not base64")
                return None
            return await self._caller_audio()
        elif event == "mark":
            name = body.get("name")
            if not isinstance(name, str):
                self._skip("mark without a name")
                return None
            return PlaybackMarkedFrame(mark=name)
        elif event == "stop":
            self.stopped = True
            return None
        elif event == "dtmf" and not isinstance(body.get("digit"), str):
            self._skip("dtmf without a digit")
            return None
        try:
            return await super().deserialize(data)
        except Exception as exc:  # never let one message end the call
            self._skip(f"{event} could not be decoded: {exc!r}")
            return None
