"""End-of-call extraction without a language model: a summary, and the slots as facts.

Backends that can summarise do better; this one is deterministic, so what the embedded
default keeps is predictable and testable. It keeps what the caller asked for (their
first words that were more than a greeting), what the flow collected (slots), and what
the agent promised ("we will ...").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_PROMISE = re.compile(r"\b(?:we|i)(?:'ll| will| shall)\b[^.!?]*[.!?]?", re.IGNORECASE)
_SMALL_TALK = re.compile(
    r"^(?:(?:hi|hello|hey|good (?:morning|afternoon|evening)|yes|no|ok(?:ay)?|thanks?"
    r"|thank you|bye|goodbye|that's all)\b[\s,.!]*)+$", re.IGNORECASE,
)
_QUOTE_CHARS = 160


@dataclass(frozen=True, kw_only=True)
class ExtractedFact:
    """A memory the extractor proposes.

    Attributes:
        kind: A memory kind (`settings.KINDS`).
        text: What is remembered, readable on its own.
        value: The same as a JSON object, when there is one (a slot: `{name: value}`).
    """

    kind: str
    text: str
    value: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Extraction:
    """What extraction found in a call: a summary (None when there was nothing) and facts."""

    summary: str | None
    facts: tuple[ExtractedFact, ...]


@dataclass(frozen=True, kw_only=True)
class SpokenTurn:
    """A turn as the extractor reads it: who spoke, and what they said."""

    speaker: str  # "caller" | "agent"
    text: str


class DeterministicExtractor:
    """Summary and facts of a call by fixed rules, without a language model."""

    def extract(self, *, turns: list[SpokenTurn], slots: dict[str, Any] | None) -> Extraction:
        """Summarise a call from its turns and its flow's slots.

        The summary quotes the caller's first turn that is more than small talk, lists the
        filled slots, and the agent's promises ("we will ..."). Empty slots are left out.

        Returns:
            The summary (None when nothing was found), and one `fact` per filled slot.
        """
        slots = {k: v for k, v in (slots or {}).items() if v not in (None, "", [], {})}
        asked = [t.text.strip() for t in turns
                 if t.speaker == "caller" and t.text.strip() and not _SMALL_TALK.match(t.text)]
        promises = [m.group(0).strip().rstrip(".!?") for t in turns if t.speaker == "agent"
                    for m in _PROMISE.finditer(t.text)]
        parts = []
        if asked:
            parts.append(f"The caller said “{_clip(asked[0])}”")
        if slots:
            collected = ", ".join(f"{_label(k)} {_show(v)}" for k, v in slots.items())
            parts.append(f"Collected: {collected}.")
        if promises:
            parts.append("Promised: " + "; ".join(dict.fromkeys(promises)) + ".")
        facts = tuple(
            ExtractedFact(kind="fact", text=f"{_label(key).capitalize()}: {_show(v)}",
                          value={key: v})
            for key, v in slots.items()
        )
        return Extraction(summary=" ".join(parts) or None, facts=facts)


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTE_CHARS else text[: _QUOTE_CHARS - 1].rstrip() + "…"


def _label(key: str) -> str:
    return key.replace("_", " ")


def _show(value: Any) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
