"""The model-worker protocol: JSON messages over one websocket per conversation.

A worker hosts one backend. `GET /health` answers a `Health` document; a websocket
on `/session` is one conversation, and is refused with HTTP 503 (or closed with
code 1013, "try again later") when the worker has no free slot. On a session the
worker first sends `Ready`; then the client sends `Turn`s one at a time and the
worker streams that turn's events back, each tagged with its `turn_id`, ending with
`TurnEnd`. `Cancel` stops the turn within one decoding step; the worker answers
`Cancelled` once generation has stopped, and sends nothing more for that turn.
`Prepare` hands over the caller's audio when they pause, before the turn is confirmed;
the worker answers `Prepared` with their words if its backend can tell. Audio is
base64 int16 mono PCM: 16 kHz in, the backend's own rate out.

A worker given a shared secret refuses a `/session` handshake (HTTP 401) unless it
carries `Authorization: Bearer <secret>`; `/health` stays open for probes. With TLS the
URLs are `wss://` and `https://`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, TypeAdapter

from callwright.agent import backend as contract

# 2: whole turns and turn ends; early transcripts (Prepare). 3: the caller's emotion.
PROTOCOL_VERSION = 3
SESSION_PATH = "/session"
HEALTH_PATH = "/health"
CLOSE_BUSY = 1013  # RFC 6455 "try again later"
MAX_MESSAGE_BYTES = 16 << 20  # 30 s of 16 kHz audio plus history, base64
SECRET_ENV = "MODEL_WORKER_SECRET"  # the shared secret, on the worker and on the server
CA_ENV = "MODEL_WORKER_CA"  # a CA bundle the server trusts for wss:// workers
MIN_SECRET_CHARS = 16


def check_secret(secret: str) -> str:
    """The secret without surrounding whitespace; refuses one too short to be a secret."""
    secret = secret.strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"a model-worker secret needs at least {MIN_SECRET_CHARS} characters; "
                         'issue one with: python -c "import secrets; '
                         'print(secrets.token_urlsafe(32))"')
    return secret


def auth_headers(secret: str | None) -> dict[str, str]:
    """The headers that present `secret` to a worker (none without one)."""
    return {"Authorization": f"Bearer {secret}"} if secret else {}


def _from_base64(value: object) -> object:
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"audio is not valid base64: {exc}") from exc
    return value


# Raw bytes in Python, base64 text on the wire.
Audio = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str,
                    when_used="json"),
]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CapabilitiesModel(_Message):
    """`Capabilities` on the wire."""

    audio_output: bool = True
    live_instructions: bool = False
    tools: bool = False
    truncation: bool = False
    caller_text: bool = False

    @classmethod
    def of(cls, caps: contract.Capabilities) -> CapabilitiesModel:
        """The wire form of a backend's `Capabilities`."""
        return cls(**caps.__dict__)

    def to_contract(self) -> contract.Capabilities:
        """Back to the contract's `Capabilities`."""
        return contract.Capabilities(**self.model_dump())


class Health(_Message):
    """The `GET /health` document.

    Attributes:
        status: "ok" once the backend has loaded, else "loading".
        backend: The hosted backend's name.
        protocol: The worker's protocol version.
        busy: Whether every session slot is taken (or it is draining).
        draining: Told to stop: it finishes its sessions and takes no new ones.
        sessions: Sessions open now.
        max_sessions: Sessions the worker serves at a time.
        capabilities: The hosted backend's capabilities.
    """

    status: Literal["ok", "loading"]
    backend: str
    protocol: int = PROTOCOL_VERSION
    busy: bool
    draining: bool = False
    sessions: int
    max_sessions: int
    capabilities: CapabilitiesModel


# Client to worker.

class HistoryTurn(_Message):
    """A past turn's role and text (its audio is not sent)."""

    role: Literal["caller", "agent"]
    text: str


class ToolResultModel(_Message):
    """A `ToolResult` on the wire."""

    call_id: str
    name: str
    result: dict


class Turn(_Message):
    """Run a turn: everything a `TurnRequest` holds but the audio of past turns."""

    type: Literal["turn"] = "turn"
    turn_id: int
    audio: Audio | None = None  # 16 kHz int16; None when the agent opens the call
    dtmf: str = ""
    silence: bool = False
    answered_by: str = ""
    history: list[HistoryTurn] = []
    instructions: str = ""
    tools: list[dict] = []
    tool_results: list[ToolResultModel] = []

    @classmethod
    def of(cls, turn_id: int, request: contract.TurnRequest) -> Turn:
        """The wire form of `request` as turn `turn_id`."""
        return cls(
            turn_id=turn_id, audio=request.audio, dtmf=request.dtmf, silence=request.silence,
            answered_by=request.answered_by, instructions=request.instructions,
            history=[HistoryTurn(role=t.role, text=t.text) for t in request.history],
            tools=list(request.tools),
            tool_results=[ToolResultModel(**vars(r)) for r in request.tool_results],
        )

    def to_request(self) -> contract.TurnRequest:
        """The `TurnRequest` the worker's session answers."""
        return contract.TurnRequest(
            audio=self.audio, dtmf=self.dtmf, silence=self.silence,
            answered_by=self.answered_by, instructions=self.instructions,
            tools=tuple(self.tools),
            history=tuple(contract.ContextTurn(role=t.role, text=t.text) for t in self.history),
            tool_results=tuple(contract.ToolResult(**r.model_dump()) for r in self.tool_results),
        )


class Cancel(_Message):
    """Stop turn `turn_id`; the worker answers `Cancelled` once generation stopped."""

    type: Literal["cancel"] = "cancel"
    turn_id: int


class Prepare(_Message):
    """The caller may have finished `audio` (16 kHz int16): start on it, and say what they
    said if the backend can tell (`AudioLLMSession.prepare`); answered by `Prepared`."""

    type: Literal["prepare"] = "prepare"
    prepare_id: int
    audio: Audio


class Truncate(_Message):
    """The caller heard only `heard_text` of the last reply."""

    type: Literal["truncate"] = "truncate"
    heard_text: str


ClientMessage = Annotated[Turn | Cancel | Prepare | Truncate, Field(discriminator="type")]
client_message = TypeAdapter(ClientMessage)


# Worker to client.

class Ready(_Message):
    """The worker's greeting on a new session: its backend, protocol and capabilities."""

    type: Literal["ready"] = "ready"
    backend: str
    protocol: int = PROTOCOL_VERSION
    capabilities: CapabilitiesModel


class CallerTextMessage(_Message):
    """`CallerText` of turn `turn_id`."""

    type: Literal["caller_text"] = "caller_text"
    turn_id: int
    text: str


class CallerEmotionMessage(_Message):
    """`CallerEmotion` of turn `turn_id`."""

    type: Literal["caller_emotion"] = "caller_emotion"
    turn_id: int
    label: str = Field(max_length=16)
    arousal: float = Field(ge=-1, le=1)
    valence: float = Field(ge=-1, le=1)


class TextDeltaMessage(_Message):
    """`TextDelta` of turn `turn_id`."""

    type: Literal["text_delta"] = "text_delta"
    turn_id: int
    text: str


class AudioChunkMessage(_Message):
    """`AudioChunk` of turn `turn_id` (its `interruptible` and `interruptions` are not sent)."""

    type: Literal["audio_chunk"] = "audio_chunk"
    turn_id: int
    audio: Audio
    sample_rate: int = Field(gt=0)


class ToolCallMessage(_Message):
    """`ToolCall` of turn `turn_id`."""

    type: Literal["tool_call"] = "tool_call"
    turn_id: int
    call_id: str
    name: str
    arguments: dict


class TurnEnd(_Message):
    """`EndOfTurn` of turn `turn_id`."""

    type: Literal["turn_end"] = "turn_end"
    turn_id: int
    end_call: bool = False
    transfer_to: str | None = None
    dtmf: str = ""
    listen_timeout_s: float | None = None
    error: str | None = None  # the backend failed this turn; the client should apologise


class Prepared(_Message):
    """The answer to `Prepare` `prepare_id`: the caller's words, or None."""

    type: Literal["prepared"] = "prepared"
    prepare_id: int
    text: str | None = None


class Cancelled(_Message):
    """Turn `turn_id` has stopped; nothing more comes for it."""

    type: Literal["cancelled"] = "cancelled"
    turn_id: int


class ProtocolError(_Message):
    """The worker refused a message (malformed, or a turn while one runs)."""

    type: Literal["error"] = "error"
    message: str


WorkerMessage = Annotated[
    Ready | CallerTextMessage | CallerEmotionMessage | TextDeltaMessage | AudioChunkMessage
    | ToolCallMessage | TurnEnd | Prepared | Cancelled | ProtocolError,
    Field(discriminator="type"),
]
worker_message = TypeAdapter(WorkerMessage)


def encode_event(turn_id: int, event: contract.Event) -> _Message:
    """The wire message for an event of turn `turn_id`.

    Raises:
        TypeError: The event has no wire form (`ModelUsage`).
    """
    match event:
        case contract.CallerText(text=text):
            return CallerTextMessage(turn_id=turn_id, text=text)
        case contract.CallerEmotion():
            return CallerEmotionMessage(turn_id=turn_id, **vars(event))
        case contract.TextDelta(text=text):
            return TextDeltaMessage(turn_id=turn_id, text=text)
        case contract.AudioChunk(audio=audio, sample_rate=rate):
            return AudioChunkMessage(turn_id=turn_id, audio=audio, sample_rate=rate)
        case contract.ToolCall(call_id=call_id, name=name, arguments=arguments):
            return ToolCallMessage(turn_id=turn_id, call_id=call_id, name=name,
                                   arguments=arguments)
        case contract.EndOfTurn():
            return TurnEnd(turn_id=turn_id, **vars(event))
    raise TypeError(f"not a backend event: {event!r}")


def decode_event(message: _Message) -> contract.Event:
    """The contract event a worker message carries.

    Raises:
        TypeError: The message is not an event (`Ready`, `Cancelled`, `ProtocolError`).
    """
    match message:
        case CallerTextMessage(text=text):
            return contract.CallerText(text=text)
        case CallerEmotionMessage():
            return contract.CallerEmotion(**message.model_dump(exclude={"type", "turn_id"}))
        case TextDeltaMessage(text=text):
            return contract.TextDelta(text=text)
        case AudioChunkMessage(audio=audio, sample_rate=rate):
            return contract.AudioChunk(audio=audio, sample_rate=rate)
        case ToolCallMessage(call_id=call_id, name=name, arguments=arguments):
            return contract.ToolCall(call_id=call_id, name=name, arguments=arguments)
        case TurnEnd():
            return contract.EndOfTurn(**message.model_dump(exclude={"type", "turn_id"}))
    raise TypeError(f"not an event message: {message!r}")
