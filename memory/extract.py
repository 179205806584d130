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
    kind: str
    text: str
    value: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Extraction:
    summary: str | None
    facts: tuple[ExtractedFact, ...]


@dataclass(frozen=True, kw_only=True)
class SpokenTurn:
    speaker: str  # "caller" | "agent"
    text: str


class DeterministicExtractor:
    def extract(self, *, turns: list[SpokenTurn], slots: dict[str, Any] | None) -> Extraction:
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
