"""Retention: memories past their expiry or their kind's retention period are deleted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, delete, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.memory.db import sessionmaker
from callwright.memory.models import Call, Memory, utcnow
from callwright.memory.settings import KINDS, RetentionDays


async def prune(
    engine: AsyncEngine, *, retention: RetentionDays, now: datetime | None = None
) -> dict[str, int]:
    """Delete what is past keeping; counts of memories by kind, and call summaries cleared.

    Retention is checked against `created_at` too, so shortening it applies to memories
    already stored.
    """
    now = now or utcnow()
    counts: dict[str, int] = {}
    async with sessionmaker(engine).begin() as session:
        for kind in KINDS:
            stale = Memory.expires_at <= now
            if ttl := retention.of(kind):
                stale = or_(stale, Memory.created_at < now - ttl)
            result = await session.execute(delete(Memory).where(and_(Memory.kind == kind, stale)))
            counts[kind] = result.rowcount
        if ttl := retention.of("summary"):
            result = await session.execute(
                update(Call).where(Call.summary.is_not(None), Call.created_at < now - ttl)
                .values(summary=None)
            )
            counts["call summaries"] = result.rowcount
    return counts
