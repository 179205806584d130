"""Reply policies: what the embedded cascade says, given what the caller said."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from callwright.agent.context import CallContext


@dataclass(frozen=True, kw_only=True)
class Reply:
    """What the policy says for one turn (`text`), and what happens once it is heard
    (`end_call` hangs up)."""

    text: str
    end_call: bool = False
    transfer_to: str | None = None  # hand the call to this number once `text` is heard
    dtmf: str = ""  # tones to play to the far end after `text`
    interruptible: bool = True  # False: legal text and the like play to the end
    # InterruptionSettings fields to change while `text` plays (a flow node's rules)
    interruptions: Mapping[str, object] = field(default_factory=dict)
    listen_timeout_s: float | None = None  # caller silence after which the policy wants a say
    node: str | None = None  # the flow node that answered, for logs and the admin


class ReplyPolicy(Protocol):
    """What the embedded cascade asks for a call's replies (a flow, or `Receptionist`).

    Besides `opening` and `reply`, a policy may define `dtmf`, `silence` and
    `answered_by` (see the comment below); a turn it has no method for goes unanswered.
    """

    async def opening(self) -> Reply:
        """The agent's first words when the call connects."""

    async def reply(self, caller_text: str) -> Reply:
        """The answer to `caller_text`, the caller's transcribed turn."""

    # Optional: `async def dtmf(self, digits: str) -> Reply`, the answer to keys the caller
    # pressed (a turn of digits, gathered by pipecat's DTMFAggregator);
    # `async def silence(self) -> Reply`, when the caller let `listen_timeout_s` pass; and
    # `async def answered_by(self, result: str) -> Reply`, when answering-machine
    # detection found a machine mid-call.


_GOODBYE = re.compile(r"\b(bye|goodbye|that'?s all|hang up|no,? thanks?( you)?)\b", re.I)
_BOOKING = re.compile(r"\b(book|booking|reserv\w*|appointment|table)\b", re.I)
_HOURS = re.compile(r"\b(open|opening|hours|close|closing)\b", re.I)
_NAME = re.compile(
    r"\b(?:name is|i am|i'm|this is|under(?: the name)?|it's)\s+([a-z][a-z'-]+)", re.I
)
_NOT_NAMES = {"calling", "looking", "trying", "just", "not", "fine", "good", "a", "the"}


class Receptionist:
    """A small fixed front-desk conversation; YAML flows replace it.

    It greets a caller it remembers by name, and remembers the name and the booking
    request it takes, through the call's context.
    """

    def __init__(
        self, *, business: str = "the callwright front desk", context: CallContext | None = None
    ):
        self._business = business
        self._context = context or CallContext()
        self._name: str | None = self._context.caller.get("name")
        self._request = ""
        self._awaiting_name = False

    async def opening(self) -> Reply:
        """Greet the caller, by name when the call's context knows it."""
        if self._name:
            return Reply(
                text=f"Welcome back, {self._name}! You've reached {self._business}. "
                "How can I help you today?"
            )
        return Reply(text=f"Hello, you've reached {self._business}. How can I help you today?")

    async def reply(self, caller_text: str) -> Reply:
        """Say goodbye (ending the call), give the opening hours, or take a booking request,
        asking for a name if it has none and remembering both; anything else gets the choices."""
        text = caller_text.strip()
        if _GOODBYE.search(text):
            return Reply(text="Thank you for calling. Goodbye!", end_call=True)
        if self._awaiting_name:
            name = _name(text)
            if name:
                self._awaiting_name = False
                self._name = name
                self._context.remember(
                    kind="fact", text=f"The caller's name is {name}.", value={"name": name}
                )
                return self._take_booking()
            return Reply(text="Sorry, I didn't catch the name. Could you say it again?")
        if _BOOKING.search(text):
            self._request = text
            if self._name:
                return self._take_booking()
            self._awaiting_name = True
            return Reply(text="Sure. What name should I put the booking under?")
        if _HOURS.search(text):
            return Reply(text="We are open every day from nine to nine. Anything else?")
        return Reply(
            text="Sorry, I can take a booking or tell you our opening hours. "
            "Which would you like?"
        )

    def _take_booking(self) -> Reply:
        self._context.remember(
            kind="commitment",
            text=f"Booking request “{self._request}”: we promised to text a confirmation.",
            value={"request": self._request, "name": self._name},
        )
        return Reply(
            text=f"Thank you, {self._name}. Your booking request is noted, and we will "
            "text you a confirmation. Is there anything else?"
        )


def _name(text: str) -> str | None:
    match = _NAME.search(text)
    if match and match.group(1).lower() not in _NOT_NAMES:
        return match.group(1).capitalize()
    words = re.findall(r"[A-Za-z'-]+", text)
    if len(words) <= 2 and words:  # "Ada." or "Ada Lovelace."
        return " ".join(w.capitalize() for w in words)
    return None
