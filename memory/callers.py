"""Callers: recognised by their number at call start, and read back with all they left."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.memory.db import sessionmaker
from callwright.memory.models import Call, Caller, Memory, utcnow
from callwright.memory.numbers import to_e164


@dataclass(frozen=True, kw_only=True)
class CallerProfile:
    """A caller and everything remembered about them, for people to read."""

    caller: Caller
    call_ids: list[int]
    last_summary: str | None
    memories: list[Memory]


class CallerStore:
    """Callers by their E.164 number: recognised at call start, and read back with their profile.

    Numbers given without a country code are read as in `default_region`.
    """

    def __init__(self, engine: AsyncEngine, *, default_region: str = "US"):
        self._engine = engine
        self._sessions = sessionmaker(engine)
        self.default_region = default_region

    def normalise(self, number: str | None) -> str | None:
        """`number` as E.164, or None when it is not a number a caller can be known by."""
        return to_e164(number, default_region=self.default_region)

    async def recognise(self, call_id: int) -> tuple[int, str] | None:
        """Link a call to its caller, made on first contact: (caller id, E.164 number).
        On a call we placed, the caller is the party we dialled.

        None when the call has no usable number (withheld, a browser).
        """
        async with self._sessions.begin() as session:
            row = (await session.execute(
                select(Call.direction, Call.from_number, Call.to_number).where(Call.id == call_id)
            )).one_or_none()
            if row is None:
                return None
            direction, from_number, to_number = row
            number = self.normalise(to_number if direction == "outbound" else from_number)
            if number is None:
                return None
            now = utcnow()
            insert = (postgresql if self._engine.dialect.name == "postgresql" else sqlite).insert
            caller_id = await session.scalar(
                insert(Caller)
                .values(number=number, first_seen=now, last_seen=now)
                .on_conflict_do_update(index_elements=["number"], set_={"last_seen": now})
                .returning(Caller.id)
            )
            await session.execute(
                update(Call).where(Call.id == call_id).values(caller_id=caller_id)
            )
            return caller_id, number

    async def update_profile(self, caller_id: int, **fields: str) -> None:
        """Set columns of a caller's row (`name`, `language`); an unknown id changes nothing."""
        async with self._sessions.begin() as session:
            await session.execute(update(Caller).where(Caller.id == caller_id).values(**fields))

    async def profile(self, number: str) -> CallerProfile | None:
        """A caller by number, in any format, with all they left; None when never seen.

        Returns:
            The caller, their call ids (newest first), the summary of their latest summarised
            call, and all their memories (in the order stored, expired ones too).
        """
        e164 = self.normalise(number)
        if e164 is None:
            return None
        async with self._sessions() as session:
            caller = await session.scalar(select(Caller).where(Caller.number == e164))
            if caller is None:
                return None
            calls = (
                await session.execute(
                    select(Call.id, Call.summary)
                    .where(Call.caller_id == caller.id)
                    .order_by(Call.id.desc())
                )
            ).all()
            memories = await session.scalars(
                select(Memory).where(Memory.caller_id == caller.id).order_by(Memory.id)
            )
            return CallerProfile(
                caller=caller,
                call_ids=[c.id for c in calls],
                last_summary=next((c.summary for c in calls if c.summary), None),
                memories=list(memories),
            )

