"""The write path of long-term memory: validate, redact, embed, expire, store."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.memory import embeddings
from callwright.memory.db import sessionmaker
from callwright.memory.models import Caller, Memory, utcnow
from callwright.memory.redact import Redactor
from callwright.memory.settings import KINDS, RetentionDays
from callwright.memory.writer import OrderedWriter

# A fact whose value carries one of these keys also updates the caller's profile,
# so "remember the name" makes the next call's greeting personal.
PROFILE_FIELDS = ("name", "language")


@dataclass(frozen=True, kw_only=True)
class NewMemory:
    """A memory to store, checked when it is made.

    Attributes:
        kind: One of `KINDS`.
        text: What is remembered; recall embeds and shows it. Not blank.
        value: The same as a JSON object, if any; a fact's `name` or `language` also
            updates the caller's profile when stored.
        source_call_id: The call it was learnt in.
        source_turn_id: The turn it was learnt from.
        confidence: How sure it is, from 0 to 1.

    Raises:
        ValueError: An unknown kind, blank text, a confidence outside 0..1, or a value that
            is not a dict.
    """

    caller_id: int
    kind: str
    text: str
    value: dict[str, Any] | None = None
    source_call_id: int | None = None
    source_turn_id: int | None = None
    confidence: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"memory kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if not self.text.strip():
            raise ValueError("a memory needs some text")
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be within 0..1, not {self.confidence}")
        if self.value is not None and not isinstance(self.value, dict):
            raise ValueError("a memory's value must be a JSON object (dict)")


class MemoryStore:
    """Stores memories: redacted (with a redactor), embedded, given their kind's expiry.

    A fact whose value holds a `name` or `language` also updates the caller's profile.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retention: RetentionDays | None = None,
        redactor: Redactor | None = None,
    ):
        self._sessions = sessionmaker(engine)
        self._retention = retention or RetentionDays()
        self._redactor = redactor

    async def remember(
        self,
        *,
        caller_id: int,
        kind: str,
        text: str,
        value: dict[str, Any] | None = None,
        source_call_id: int | None = None,
        source_turn_id: int | None = None,
        confidence: float = 1.0,
    ) -> int:
        """Embed and store one memory now; its id. In a call, use MemoryWriter instead."""
        (memory_id,) = await self.add(
            [
                NewMemory(
                    caller_id=caller_id, kind=kind, text=text, value=value,
                    source_call_id=source_call_id, source_turn_id=source_turn_id,
                    confidence=confidence,
                )
            ]
        )
        return memory_id

    async def add(self, items: list[NewMemory]) -> list[int]:
        """Store memories in the order given, embedded in one batch; their ids."""
        if not items:
            return []
        if self._redactor:
            items = [
                replace(m, text=self._redactor.text(m.text), value=self._redactor.value(m.value))
                for m in items
            ]
        vectors = await embeddings.encode([m.text for m in items])
        now = utcnow()
        rows = [
            {
                "caller_id": m.caller_id, "kind": m.kind, "text": m.text, "value": m.value,
                "embedding": embeddings.to_bytes(vector),
                "source_call_id": m.source_call_id, "source_turn_id": m.source_turn_id,
                "created_at": now, "confidence": m.confidence,
                "expires_at": now + ttl if (ttl := self._retention.of(m.kind)) else None,
            }
            for m, vector in zip(items, vectors, strict=True)
        ]
        async with self._sessions.begin() as session:
            ids = await session.scalars(
                insert(Memory).returning(Memory.id, sort_by_parameter_order=True), rows
            )
            for m in items:
                if profile := _profile_fields(m):
                    await session.execute(
                        update(Caller).where(Caller.id == m.caller_id).values(**profile)
                    )
            return list(ids)


class MemoryWriter(OrderedWriter[NewMemory]):
    """Stores memories from calls in the background; `write()` never waits."""

    what = "memories"

    def __init__(self, store: MemoryStore, **kwargs):
        super().__init__(store.add, **kwargs)


def _profile_fields(memory: NewMemory) -> dict[str, str]:
    if memory.kind != "fact" or not memory.value:
        return {}
    return {
        key: value.strip()[: Caller.__table__.c[key].type.length]
        for key, value in memory.value.items()
        if key in PROFILE_FIELDS and isinstance(value, str) and value.strip()
    }
