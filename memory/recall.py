"""The read path: who is calling, what happened last time, and what matters now."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.memory import embeddings
from callwright.memory.db import sessionmaker
from callwright.memory.models import Call, Caller, Memory, utcnow


@dataclass(frozen=True, kw_only=True)
class RecalledMemory:
    """A memory as recall hands it to a call, with its score."""

    kind: str
    text: str
    value: dict[str, Any] | None
    created_at: datetime
    score: float  # cosine similarity to the goal


@dataclass(frozen=True, kw_only=True)
class CallerContext:
    """What a call knows about its caller before the greeting."""

    caller_id: int
    number: str
    name: str | None = None
    language: str | None = None
    first_seen: datetime | None = None
    last_summary: str | None = None
    memories: tuple[RecalledMemory, ...] = field(default_factory=tuple)

    @property
    def known(self) -> bool:
        """Called before, or told us something worth keeping."""
        return bool(self.name or self.last_summary or self.memories)

    def as_template_vars(self) -> dict[str, Any]:
        """For flow templates: `{{ caller.name }}`, `{{ caller.memories[0].text }}`."""
        return {
            "name": self.name,
            "number": self.number,
            "language": self.language,
            "known": self.known,
            "last_summary": self.last_summary,
            "memories": [{"kind": m.kind, "text": m.text, "value": m.value}
                         for m in self.memories],
        }

    def as_instructions(self) -> str:
        """The same, as text for a language model's context."""
        if not self.known:
            return "This caller has not called before."
        lines = ["What you remember about this caller (from earlier calls):"]
        if self.name:
            lines.append(f"- Name: {self.name}")
        if self.last_summary:
            lines.append(f"- Last call: {self.last_summary}")
        lines += [f"- {m.kind.capitalize()}: {m.text}" for m in self.memories]
        return "\n".join(lines)


class Recall:
    """Per-caller ranking in Python over rows fetched by index: callers have few memories."""

    def __init__(self, engine: AsyncEngine, *, k: int = 5):
        self._sessions = sessionmaker(engine)
        self._k = k
        self._goals: dict[str, np.ndarray] = {}

    async def goal_vector(self, goal: str) -> np.ndarray:
        """Goals come from flows, so there are few: each is embedded once."""
        if goal not in self._goals:
            if len(self._goals) > 256:
                self._goals.clear()
            self._goals[goal] = (await embeddings.encode([goal]))[0]
        return self._goals[goal]

    async def recall(
        self,
        number: str,
        *,
        goal: str | np.ndarray,
        k: int | None = None,
        before_call_id: int | None = None,
    ) -> CallerContext | None:
        """The caller with this E.164 number, or None if never seen.

        `before_call_id` leaves out the call in progress and anything after it.
        """
        vector = await self.goal_vector(goal) if isinstance(goal, str) else goal
        k = self._k if k is None else k
        async with self._sessions() as session:
            caller = (
                await session.execute(
                    select(Caller.id, Caller.name, Caller.language, Caller.first_seen)
                    .where(Caller.number == number)
                )
            ).first()
            if caller is None:
                return None
            last = select(Call.id, Call.summary).where(
                Call.caller_id == caller.id, Call.summary.is_not(None)
            )
            if before_call_id is not None:
                last = last.where(Call.id < before_call_id)
            last_call = (await session.execute(last.order_by(Call.id.desc()).limit(1))).first()
            rows = (
                await session.execute(
                    select(
                        Memory.kind, Memory.text, Memory.value, Memory.created_at,
                        Memory.embedding, Memory.source_call_id,
                    ).where(
                        Memory.caller_id == caller.id,
                        or_(Memory.expires_at.is_(None), Memory.expires_at > utcnow()),
                    )
                )
            ).all()
        if last_call is not None:  # already handed over as last_summary
            rows = [r for r in rows
                    if not (r.kind == "summary" and r.source_call_id == last_call.id)]
        return CallerContext(
            caller_id=caller.id,
            number=number,
            name=caller.name,
            language=caller.language,
            first_seen=caller.first_seen,
            last_summary=last_call.summary if last_call else None,
            memories=_top_k(rows, vector, k),
        )


def _top_k(rows: list, goal: np.ndarray, k: int) -> tuple[RecalledMemory, ...]:
    if not rows or k <= 0:
        return ()
    zero = np.zeros_like(goal)
    matrix = np.stack(
        [embeddings.from_bytes(r.embedding) if r.embedding else zero for r in rows]
    )
    scores = matrix @ goal
    order = np.argsort(-scores, kind="stable")[:k]
    return tuple(
        RecalledMemory(
            kind=rows[i].kind, text=rows[i].text, value=rows[i].value,
            created_at=rows[i].created_at, score=float(scores[i]),
        )
        for i in order
    )
