"""What a call knows when it starts, and where it sends what it learns.

The call runner sets the call's context before it opens the backend session, so a backend
can hand the context to whatever decides replies (the cascade's reply policy, a flow)
without the audio-LLM contract changing. Context variables are per task, so each
call sees its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from callwright.agent.emotion import CallerMood


class Remember(Protocol):
    """Keeps something about the caller for later calls; returns at once, never fails."""

    def __call__(
        self, *, kind: str, text: str, value: dict[str, Any] | None = None,
        confidence: float = 1.0,
    ) -> None: ...


def _remember_nothing(**_fields: Any) -> None:
    """A caller without a usable number cannot be recognised later: nothing to keep."""


@dataclass(frozen=True, kw_only=True)
class CallContext:
    """What a call knows about its caller, `remember`, which keeps what it learns for later
    calls, and `mood`, how the caller has sounded so far this call."""

    # Template variables about the caller (`{{ caller.name }}`): name, number, known,
    # last_summary, memories. Empty for a caller never seen or not identifiable.
    caller: Mapping[str, Any] = field(default_factory=dict)
    # The same, as text for a language model's context.
    instructions: str = ""
    remember: Remember = _remember_nothing
    # Filled turn by turn by the slot; read by flows and by the agent's delivery.
    mood: CallerMood = field(default_factory=CallerMood)


_current: ContextVar[CallContext | None] = ContextVar("call_context", default=None)


def set_call_context(context: CallContext) -> None:
    """For the call runner: the context of the call running in this task."""
    _current.set(context)


def call_context() -> CallContext:
    """The context of the call running in this task (empty outside a call)."""
    return _current.get() or CallContext()
