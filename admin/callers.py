"""A caller as supervisors see them: their calls and memories, which they may correct."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.memory.db import sessionmaker
from callwright.memory.models import Call, Caller, Memory

MEMORY_KINDS = ("fact", "preference", "summary", "commitment")


class CallerQueries:
    """A caller as supervisors see them: reads, and corrections of their memories."""

    def __init__(self, engine: AsyncEngine):
        self._sessions = sessionmaker(engine)

    async def get(self, caller_id: int) -> tuple[Caller, list[Call], list[Memory]] | None:
        """A caller, their latest 200 calls and all their memories (newest first), or None."""
        async with self._sessions() as session:
            caller = await session.get(Caller, caller_id)
            if caller is None:
                return None
            calls = await session.scalars(
                select(Call).where(Call.caller_id == caller_id)
                .order_by(Call.created_at.desc(), Call.id.desc()).limit(200)
            )
            memories = await session.scalars(
                select(Memory).where(Memory.caller_id == caller_id)
                .order_by(Memory.created_at.desc(), Memory.id.desc())
            )
            return caller, list(calls), list(memories)

    async def correct_memory(self, *, caller_id: int, memory_id: int, kind: str,
                             text: str) -> tuple[str, str] | None:
        """Rewrite a memory; returns its old text and the new one, None when not found.

        The embedding is cleared: it described the old text, and recall must not match on
        what a supervisor removed.
        """
        if kind not in MEMORY_KINDS:
            raise ValueError(f"kind must be one of {', '.join(MEMORY_KINDS)}")
        text = text.strip()
        if not text:
            raise ValueError("a memory needs some text (delete it instead)")
        async with self._sessions.begin() as session:
            memory = await session.get(Memory, memory_id)
            if memory is None or memory.caller_id != caller_id:
                return None
            old = memory.text
            memory.kind, memory.text, memory.embedding = kind, text, None
            memory.confidence = 1.0  # a person checked it
            return old, text

    async def delete_memory(self, *, caller_id: int, memory_id: int) -> bool:
        """Delete one of this caller's memories; False when they have no memory with this id."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(Memory).where(Memory.id == memory_id, Memory.caller_id == caller_id)
            )
            return bool(result.rowcount)
