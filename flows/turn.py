"""What a flow run gives back: its answer to each event, and what a call stores of it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, kw_only=True)
class FlowSnapshot:
    """What a call stores about its flow: see memory.models.Call."""

    flow_name: str
    flow_version: str
    flow_path: list[str]
    slots: dict
    outcome: str | None = None  # the last `outcome:` of a node the run entered


@dataclass(kw_only=True)
class FlowTurn:
    """The engine's answer to one event: what to say and do on the line."""

    said: list[str] = field(default_factory=list)
    node: str = ""
    end_call: bool = False
    transfer_to: str | None = None
    dtmf: str = ""
    interruptible: bool = True
    # InterruptionSettings overrides for these words: the flow's, then the last speaking
    # node's (empty: the call's settings).
    interruptions: dict[str, object] = field(default_factory=dict)
    listen_timeout_s: float | None = None  # silence before `on_silence()` is due
    matched: str | None = None  # the function, slot filling or handler that took the turn
    tool_result: dict | None = None

    @property
    def text(self) -> str:
        """Everything said in the turn, joined by spaces."""
        return " ".join(s for s in self.said if s)


class FlowLoopError(RuntimeError):
    """A flow took more transitions in one turn than any sane flow needs."""
