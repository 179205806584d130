"""Reads and writes of call records; the only module that issues SQL for calls."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import selectinload

from memory.db import sessionmaker
from memory.models import ApiToken, Call, Turn, utcnow


@dataclass(frozen=True, kw_only=True)
class TurnRecord:
    """A finished turn, as the agent hands it to memory."""

    call_id: int
    seq: int
    speaker: str
    text: str
    start_ms: int
    end_ms: int
    interrupted: bool = False
    planned_text: str | None = None
    latency_ms: int | None = None
    timings: dict | None = None
    speaker_label: str | None = None


class CallStore:
    def __init__(self, engine: AsyncEngine):
        self.engine = engine
        self._sessions = sessionmaker(engine)

    async def create_call(
        self,
        *,
        call_sid: str,
        transport: str,
        account_sid: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
        token_nonce: str | None = None,
    ) -> int:
        async with self._sessions.begin() as session:
            call = Call(
                call_sid=call_sid,
                transport=transport,
                account_sid=account_sid,
                from_number=from_number,
                to_number=to_number,
                token_nonce=token_nonce,
                status="ringing",
            )
            session.add(call)
            await session.flush()
            return call.id

    async def claim_stream(self, *, call_sid: str, nonce: str, stream_sid: str) -> int | None:
        """Spend a call's one-time stream token; the call id, or None if already spent."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                update(Call)
                .where(
                    Call.call_sid == call_sid,
                    Call.token_nonce == nonce,
                    Call.token_used_at.is_(None),
                )
                .values(
                    token_used_at=utcnow(),
                    stream_sid=stream_sid,
                    status="in-progress",
                    started_at=utcnow(),
                )
                .returning(Call.id)
            )
            return result.scalar_one_or_none()

    async def finish_call(self, call_id: int, *, status: str, reason: str) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(Call)
                .where(Call.id == call_id, Call.ended_at.is_(None))
                .values(status=status, end_reason=reason[:64], ended_at=utcnow())
            )

    async def add_turns(self, records: list[TurnRecord]) -> None:
        async with self._sessions.begin() as session:
            session.add_all(Turn(**vars(record)) for record in records)

    async def list_calls(
        self, *, limit: int = 50, offset: int = 0, call_sid: str | None = None
    ) -> list[Call]:
        query = select(Call).order_by(Call.created_at.desc(), Call.id.desc())
        if call_sid:
            query = query.where(Call.call_sid == call_sid)
        async with self._sessions() as session:
            return list((await session.scalars(query.limit(limit).offset(offset))).all())

    async def get_call(self, call_id: int) -> Call | None:
        async with self._sessions() as session:
            return await session.get(Call, call_id, options=[selectinload(Call.turns)])

    async def create_api_token(self, name: str) -> str:
        token = "cw_" + secrets.token_urlsafe(32)
        async with self._sessions.begin() as session:
            session.add(ApiToken(name=name, token_sha256=_sha256(token)))
        return token

    async def api_token_valid(self, token: str) -> bool:
        async with self._sessions() as session:
            found = await session.scalar(
                select(ApiToken.id).where(ApiToken.token_sha256 == _sha256(token))
            )
            return found is not None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
