"""The audio-LLM contract: what every backend in the slot takes and streams back.

A backend turns the caller's audio for one turn (16 kHz mono int16), plus the
conversation so far, into a stream of events. The embedded cascade (ASR, reply
policy, TTS) and end-to-end speech models honour the same contract, so the
pipeline, flows and interruption handling never look behind it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

INPUT_SAMPLE_RATE = 16_000


@dataclass(frozen=True, kw_only=True)
class CallerText:
    """What the backend understood the caller to say this turn."""

    text: str


@dataclass(frozen=True, kw_only=True)
class CallerEmotion:
    """How a backend that perceives emotion heard the caller this turn: a label of
    `agent.emotion.EMOTIONS`, arousal and valence from -1 to 1. Yielded before `CallerText`;
    the slot weighs it above its own reading of the turn."""

    label: str
    arousal: float = 0.0
    valence: float = 0.0


@dataclass(frozen=True, kw_only=True)
class TextDelta:
    """Agent text in whole words; it covers the audio chunks that follow it.

    Consumers join deltas with spaces, so a delta never ends inside a word.
    """

    text: str


@dataclass(frozen=True, kw_only=True)
class AudioChunk:
    """Agent speech: int16 mono PCM at `sample_rate`; `interruptible=False` for words the
    caller must hear to the end (a flow node's legal text, say); `interruptions` changes
    `InterruptionSettings` fields while it plays (a flow node's stop phrases, say)."""

    audio: bytes
    sample_rate: int
    interruptible: bool = True
    interruptions: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """The model asks for a tool: `name` with JSON `arguments`; `call_id` pairs it with its
    `ToolResult`."""

    call_id: str
    name: str
    arguments: dict


@dataclass(frozen=True, kw_only=True)
class EndOfTurn:
    """The agent's turn is complete; `end_call` asks to hang up once it has been heard,
    `transfer_to` to hand the call to that number, `dtmf` to play those tones after it.

    `error` says the backend failed this turn (e.g. its model worker died): whatever
    was streamed before stands, and the caller should hear an apology, not silence.
    """

    end_call: bool = False
    transfer_to: str | None = None
    dtmf: str = ""
    # Once heard, give the caller this long to answer before a silence turn.
    listen_timeout_s: float | None = None
    error: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelUsage:
    """What one request to a text model cost: time to its first token and tokens in and out.

    Backends that call a chat model per turn report it; a turn with tool round trips
    reports once per request. None where the server did not say.
    """

    first_token_ms: int | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None


Event = CallerText | CallerEmotion | TextDelta | AudioChunk | ToolCall | ModelUsage | EndOfTurn


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a backend can do, so flows and barge-in handling can adapt."""

    audio_output: bool = True
    live_instructions: bool = False  # instructions and tools can change mid-session
    tools: bool = False
    truncation: bool = False  # can cut its last turn to what the caller heard
    caller_text: bool = False  # reports a transcript of the caller (CallerText)


@dataclass(frozen=True, kw_only=True)
class ContextTurn:
    """One past turn of the conversation: what the caller said, or what the caller heard of
    the agent's reply."""

    role: Literal["caller", "agent"]
    text: str
    audio: bytes | None = None  # 16 kHz int16, for backends that re-read past audio


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    """What a tool call came to, handed back to the model on the next request."""

    call_id: str
    name: str
    result: dict


@dataclass(frozen=True, kw_only=True)
class TurnRequest:
    """One turn: the caller's audio (None when the agent opens the call) and context.

    With `tool_results` and no audio, the model continues its own turn after tools ran.
    With `dtmf`, the caller's turn was keys pressed, not speech; with `silence`, the
    caller said nothing for the listen timeout of the agent's last turn; with
    `answered_by`, answering-machine detection found a machine mid-call.
    """

    audio: bytes | None
    dtmf: str = ""
    silence: bool = False
    answered_by: str = ""
    history: tuple[ContextTurn, ...] = ()
    instructions: str = ""
    tools: tuple[dict, ...] = field(default_factory=tuple)
    tool_results: tuple[ToolResult, ...] = ()


class BackendBusy(RuntimeError):
    """No capacity for another conversation right now."""


class AudioLLMSession(ABC):
    """One conversation on a backend; turns run one at a time."""

    @abstractmethod
    def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Stream the agent's answer to one turn, ending with EndOfTurn."""

    async def prepare(self, audio: bytes) -> str | None:
        """The caller may have finished `audio`: start on it before the turn is confirmed.

        Returns what the caller said when the backend can tell, which helps decide the
        end of the turn; `respond()` with this same audio then reuses the work.
        """
        return None

    @abstractmethod
    async def cancel(self) -> None:
        """Stop the turn in progress at once; it yields nothing more (barge-in)."""

    async def truncate(self, heard_text: str) -> None:  # noqa: B027 - optional hook
        """The caller only heard `heard_text` of the last turn (when `truncation`)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the conversation's resources."""


class SessionWrapper(AudioLLMSession):
    """A session that adds behaviour around `inner`; whatever it does not override is
    passed through."""

    def __init__(self, inner: AudioLLMSession):
        self.inner = inner

    def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Delegate to `inner`."""
        return self.inner.respond(request)

    async def prepare(self, audio: bytes) -> str | None:
        """Delegate to `inner`."""
        return await self.inner.prepare(audio)

    async def cancel(self) -> None:
        """Delegate to `inner`."""
        await self.inner.cancel()

    async def truncate(self, heard_text: str) -> None:
        """Delegate to `inner`."""
        await self.inner.truncate(heard_text)

    async def close(self) -> None:
        """Delegate to `inner`."""
        await self.inner.close()


class AudioLLM(ABC):
    """A backend: loads its models once, then opens a session per call."""

    name: str
    capabilities: Capabilities

    @abstractmethod
    async def load(self) -> None:
        """Load and check models; log progress, since this can take a while."""

    @abstractmethod
    async def open_session(self) -> AudioLLMSession:
        """A new conversation; raises BackendBusy when there is no capacity."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release the models."""
