"""Calls in progress and their turns as they are stored, for the live page's event stream.

The database is the record: turns reach it through TurnWriter within a moment of being
spoken. The feed reads it whenever the store says calls changed (with several workers, any
worker's store, through Redis), and every `poll_s` at the latest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import selectinload

from callwright.memory.changes import Changes
from callwright.memory.db import sessionmaker
from callwright.memory.models import Call, Turn

LIVE = "in-progress"


def call_event(call: Call) -> dict:
    """A live call as the data of a `call` event."""
    return {"id": call.id, "call_sid": call.call_sid, "from_number": call.from_number,
            "flow": call.flow_name, "transport": call.transport,
            "started_at": call.started_at.isoformat() if call.started_at else None}


def turn_event(turn: Turn) -> dict:
    """A turn as the data of a `turn` event; its label falls back to its speaker."""
    return {"call_id": turn.call_id, "id": turn.id, "seq": turn.seq, "speaker": turn.speaker,
            "label": turn.speaker_label or turn.speaker, "text": turn.text,
            "start_ms": turn.start_ms, "interrupted": turn.interrupted,
            "planned_text": turn.planned_text, "latency_ms": turn.latency_ms}


class LiveFeed:
    """Calls in progress and their turns, from the database, read at each change.

    Args:
        engine: The calls' database.
        changes: Wakes the feed when calls change; without it, the feed polls.
        poll_s: The longest the feed waits between reads.
    """

    def __init__(self, engine: AsyncEngine, *, changes: Changes | None = None,
                 poll_s: float = 0.5):
        self._sessions = sessionmaker(engine)
        self._changes = changes
        self.poll_s = poll_s

    async def snapshot(self) -> list[Call]:
        """Calls in progress with their turns, the latest started first."""
        async with self._sessions() as session:
            return list(await session.scalars(
                select(Call).where(Call.status == LIVE).options(selectinload(Call.turns))
                .order_by(Call.started_at.desc(), Call.id.desc())
            ))

    async def follow(self) -> AsyncIterator[tuple[str, dict]]:
        """Events: `call` (a call is live), `turn` (one of its turns), `ended`.

        Each connection starts from scratch and replays what is live, so the page can
        reconnect at any time; the page ignores turns it already shows.
        """
        shown: dict[int, int] = {}  # call id -> last turn seq sent
        while True:
            async with self._sessions() as session:
                live = list(await session.scalars(select(Call).where(Call.status == LIVE)))
                watched = set(shown) | {call.id for call in live}
                turns = list(await session.scalars(
                    select(Turn).where(Turn.call_id.in_(watched)).order_by(Turn.id)
                )) if watched else []
                gone = list(await session.scalars(
                    select(Call).where(Call.id.in_(set(shown) - {c.id for c in live}))
                ))
            for call in live:
                if call.id not in shown:
                    shown[call.id] = -1
                    yield "call", call_event(call)
            for turn in turns:
                if turn.seq > shown.get(turn.call_id, -1):
                    shown[turn.call_id] = turn.seq
                    yield "turn", turn_event(turn)
            for call in gone:
                del shown[call.id]
                yield "ended", {"id": call.id, "status": call.status,
                                "end_reason": call.end_reason}
            if self._changes is None:
                await asyncio.sleep(self.poll_s)
            else:
                await self._changes.wait(self.poll_s)
