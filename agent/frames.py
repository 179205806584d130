"""Frames callwright adds to pipecat's: plain data passed between processors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipecat.frames.frames import DataFrame, OutputTransportMessageFrame, SystemFrame


@dataclass
class PlaybackMarkFrame(OutputTransportMessageFrame):
    """Queued after a piece of agent audio; the transport reports when it has played.

    `message` holds the mark's name. Twilio echoes it as a `mark` event.
    """


@dataclass
class PlaybackMarkedFrame(SystemFrame):
    """The caller's side has played everything up to the mark called `mark`."""

    mark: str = ""


@dataclass
class CallerTurnFrame(SystemFrame):
    """A finished caller turn; times are ms from the start of the call."""

    text: str = ""
    start_ms: int = 0
    end_ms: int = 0
    speaker_label: str | None = None
    # How the caller sounded (agent/emotion.py); None where it was not analysed.
    emotion: str | None = None
    arousal: float | None = None
    valence: float | None = None


@dataclass
class AgentPauseFrame(SystemFrame):
    """Someone may be talking over the agent: stop its audio on the line, keep its place."""


@dataclass
class AgentResumeFrame(SystemFrame):
    """It was not an interruption: play on from where the agent paused."""


@dataclass
class InterruptibilityFrame(SystemFrame):
    """Sent upstream by the slot: whether the caller may interrupt the agent's coming words,
    and which `InterruptionSettings` fields differ from the call's while they play."""

    interruptible: bool = True
    interruptions: Mapping[str, object] = field(default_factory=dict)


@dataclass
class AgentTurnFrame(SystemFrame):
    """A finished agent turn: `text` is what the caller heard, `planned_text` all it meant."""

    text: str = ""
    planned_text: str = ""
    start_ms: int = 0
    end_ms: int = 0
    interrupted: bool = False
    latency_ms: int | None = None
    timings: dict = field(default_factory=dict)
    # A chat model's cost (the llm backend): time to its first token, tokens in and out.
    llm_first_token_ms: int | None = None
    llm_tokens_in: int | None = None
    llm_tokens_out: int | None = None


@dataclass
class TurnDraftFrame(SystemFrame):
    """The exchange in progress, as heard so far: the caller's words not yet stored and
    the agent's reply up to the last whole word heard (marked interrupted). Kept only
    until the finished turns are stored, so that a server killed mid-reply loses neither."""

    caller: CallerTurnFrame | None = None
    agent: AgentTurnFrame | None = None


@dataclass
class TransferCallFrame(DataFrame):
    """Hand the caller to a person at `to` (E.164 or SIP URI) once the audio queued
    before this frame has played; the telephony side carries it out (cold transfer)."""

    to: str = ""


@dataclass
class AnsweredByFrame(SystemFrame):
    """Who answered an outbound call, from the carrier's answering-machine detection:
    "human", "machine_start", "machine_end_beep", "machine_end_silence",
    "machine_end_other", "fax" or "unknown". Sent upstream when detection finishes
    mid-call (Twilio's `AsyncAmd`); a machine moves the call's flow to its voicemail branch
    (a result known when the call connects is in the call context instead)."""

    answered_by: str = ""

    @property
    def machine(self) -> bool:
        """Whether the result means a machine or a fax, not a person."""
        return is_machine(self.answered_by)


def is_machine(answered_by: str) -> bool:
    """Whether an answering-machine detection result means nobody is listening live."""
    return answered_by.startswith("machine") or answered_by == "fax"
