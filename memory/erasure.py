"""Erasure of a caller ("forget me"): their memories, profile and, on request, their calls."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.memory.db import sessionmaker
from callwright.memory.models import Call, Caller, Memory, Turn, WebhookDelivery
from callwright.memory.numbers import to_e164


@dataclass(frozen=True, kw_only=True)
class Erasure:
    """What `forget` erased, counted.

    Attributes:
        callers: Caller rows deleted: 0 or 1.
        memories: Memories deleted.
        summaries: Call summaries cleared.
        calls: Calls deleted (only with `transcripts`).
        turns: Turns deleted with those calls.
        recordings: Recording files removed from the data dir.
    """

    callers: int = 0
    memories: int = 0
    summaries: int = 0
    calls: int = 0
    turns: int = 0
    recordings: int = 0


async def forget(
    engine: AsyncEngine,
    *,
    number: str,
    transcripts: bool = False,
    data_dir: Path,
    default_region: str = "US",
) -> Erasure:
    """Erase what is kept about the caller with this number.

    Always: their memories, their profile, the summaries of their calls and the variables
    they were dialled with. With `transcripts`: also every call from or to the number,
    with its turns and recording.
    """
    e164 = to_e164(number, default_region=default_region)
    if e164 is None:
        raise ValueError(f"{number!r} is not a phone number")
    forms = {e164, number.strip()}
    async with sessionmaker(engine).begin() as session:
        caller_id = await session.scalar(select(Caller.id).where(Caller.number == e164))
        # `caller_id == None` would read IS NULL: every anonymous call would be erased too.
        of_caller = or_(
            Call.from_number.in_(forms),
            Call.to_number.in_(forms),
            *([Call.caller_id == caller_id] if caller_id is not None else []),
        )
        call_ids = list(await session.scalars(select(Call.id).where(of_caller)))
        memories = 0
        if caller_id is not None:
            memories = (
                await session.execute(delete(Memory).where(Memory.caller_id == caller_id))
            ).rowcount
        summaries = (
            await session.execute(
                update(Call).where(Call.id.in_(call_ids), Call.summary.is_not(None))
                .values(summary=None)
            )
        ).rowcount
        await session.execute(  # what a dialler passed names them too
            update(Call).where(Call.id.in_(call_ids), Call.variables.is_not(None))
            .values(variables=None)
        )
        await session.execute(  # webhook bodies kept for replay: rebuilt, erased, if replayed
            update(WebhookDelivery).where(WebhookDelivery.call_id.in_(call_ids))
            .values(body=None)
        )
        turns, recordings = 0, []
        if transcripts and call_ids:
            recordings = list(await session.scalars(
                select(Call.recording_path)
                .where(Call.id.in_(call_ids), Call.recording_path.is_not(None))
            ))
            turns = await session.scalar(
                select(func.count()).select_from(Turn).where(Turn.call_id.in_(call_ids))
            )
            await session.execute(delete(Turn).where(Turn.call_id.in_(call_ids)))
            await session.execute(delete(Call).where(Call.id.in_(call_ids)))
        if caller_id is not None:
            await session.execute(delete(Caller).where(Caller.id == caller_id))
    removed = sum(_remove_recording(data_dir, path) for path in recordings)
    return Erasure(
        callers=int(caller_id is not None), memories=memories, summaries=summaries,
        calls=len(call_ids) if transcripts else 0, turns=turns or 0, recordings=removed,
    )


def _remove_recording(data_dir: Path, relative: str) -> bool:
    root = data_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        logger.error(f"recording path {relative!r} points outside the data dir; not removed")
        return False
    try:
        path.unlink()
    except FileNotFoundError:
        logger.warning(f"recording {relative} was already gone")
        return False
    return True
