"""Reads and writes of call records; the only module that issues SQL for calls."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import asdict, dataclass

from sqlalchemy import Row, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import selectinload

from callwright.memory.changes import Changes
from callwright.memory.db import sessionmaker
from callwright.memory.models import ApiToken, Call, Turn, TurnDraft, utcnow
from callwright.memory.outcomes import call_outcome

# Run in the transaction that stores calls' ends, with the session and the calls' ids:
# what must commit together with the end (the business webhooks' outbox rows).
EndHook = Callable[[AsyncSession, list[int]], Awaitable[None]]
_ENDED = (Call.id, Call.status, Call.end_reason, Call.transferred_to, Call.answered_by,
          Call.outcome)


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
    llm_first_token_ms: int | None = None
    llm_tokens_in: int | None = None
    llm_tokens_out: int | None = None
    emotion: str | None = None
    arousal: float | None = None
    valence: float | None = None


@dataclass(frozen=True)
class DraftRecord:
    """A call's exchange in progress (`TurnDraftFrame`), as turn records not yet final."""

    call_id: int
    turns: tuple[TurnRecord, ...]


class CallStore:
    """Reads and writes of calls, their turns and API tokens, each in a session of its own."""

    def __init__(
        self, engine: AsyncEngine, *, worker: str | None = None, changes: Changes | None = None
    ):
        self.engine = engine
        self.worker = worker  # stored with the calls this process creates or runs
        self.changes = changes or Changes()  # told when live calls change
        self.end_hooks: list[EndHook] = []  # run in the transaction that ends calls
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
        direction: str = "inbound",
        status: str = "ringing",
        flow_name: str | None = None,
        variables: dict | None = None,
    ) -> int:
        """Store a new call; its id.

        Raises:
            sqlalchemy.exc.IntegrityError: A call with this `call_sid` is stored already.
        """
        async with self._sessions.begin() as session:
            call = Call(
                call_sid=call_sid,
                transport=transport,
                account_sid=account_sid,
                from_number=from_number,
                to_number=to_number,
                token_nonce=token_nonce,
                direction=direction,
                status=status,
                flow_name=flow_name,
                variables=variables,
                worker=self.worker,
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
                    worker=self.worker,
                )
                .returning(Call.id)
            )
            call_id = result.scalar_one_or_none()
        self.changes.notify()
        return call_id

    async def finish_call(self, call_id: int, *, status: str, reason: str) -> None:
        """Store how and when a call ended (`reason` cut to 64 characters), and its
        outcome (`call_outcome`) unless the flow set one; `end_hooks` run in the same
        transaction.

        A call that has ended already keeps its first ending.
        """
        async with self._sessions.begin() as session:
            ended = (await session.execute(
                update(Call)
                .where(Call.id == call_id, Call.ended_at.is_(None))
                .values(status=status, end_reason=reason[:64], ended_at=utcnow())
                .returning(*_ENDED)
            )).all()
            await self._ended(session, ended)
        self.changes.notify()

    async def _ended(self, session: AsyncSession, ended: Sequence[Row]) -> None:
        """Calls just stored as ended: fix their outcomes, then run the end hooks."""
        for call in ended:
            if call.outcome is None:
                outcome = call_outcome(status=call.status, end_reason=call.end_reason,
                                       transferred_to=call.transferred_to,
                                       answered_by=call.answered_by)
                await session.execute(  # a flow's outcome set meanwhile is kept
                    update(Call).where(Call.id == call.id, Call.outcome.is_(None))
                    .values(outcome=outcome)
                )
        if ended:
            for hook in self.end_hooks:
                await hook(session, [call.id for call in ended])

    async def update_flow(
        self, call_id: int, *, flow_name: str, flow_version: str, flow_path: list, slots: dict,
        outcome: str | None = None,
    ) -> None:
        """The flow a call runs: its name, version, the nodes visited so far, its slots, and
        the outcome its nodes set (None: none yet)."""
        values = dict(flow_name=flow_name[:128], flow_version=flow_version[:64],
                      flow_path=list(flow_path), slots=dict(slots))
        if outcome is not None:
            values["outcome"] = outcome[:32]
        async with self._sessions.begin() as session:
            await session.execute(update(Call).where(Call.id == call_id).values(**values))

    async def set_recording(self, call_id: int, relative_path: str) -> None:
        """Store where the call's recording is, relative to the data dir."""
        await self.update_call(call_id, recording_path=relative_path)

    async def update_call(self, call_id: int, **values) -> None:
        """Set columns of a call's row; `values` must name `Call` columns."""
        async with self._sessions.begin() as session:
            await session.execute(update(Call).where(Call.id == call_id).values(**values))

    async def record_outbound(
        self, *, call_sid: str, account_sid: str, from_number: str, to_number: str,
        flow_name: str | None, variables: dict | None = None,
    ) -> int:
        """Store a call we placed; its webhook may have been answered already."""
        values = dict(direction="outbound", account_sid=account_sid, from_number=from_number,
                      to_number=to_number, flow_name=flow_name, variables=variables or None)
        existing = await self.call_by_sid(call_sid)
        if existing is None:
            try:
                return await self.create_call(call_sid=call_sid, transport="twilio",
                                              status="queued", **values)
            except Exception:  # IntegrityError: the webhook created it meanwhile
                existing = await self.call_by_sid(call_sid)
                if existing is None:
                    raise
        await self.update_call(existing.id, **values)
        return existing.id

    async def call_by_sid(self, call_sid: str) -> Call | None:
        """The call with this call SID (its turns not loaded), or None."""
        async with self._sessions() as session:
            return await session.scalar(select(Call).where(Call.call_sid == call_sid))

    async def interrupt_unfinished(
        self, *, workers: Collection[str] | None = None, reason: str = "server-stopped"
    ) -> int:
        """Store calls that a stopped or dead server left open as interrupted; how many.

        Args:
            workers: Only the running calls of these workers (when several share the
                database); None: every unfinished call (one server, at its start).
            reason: The calls' end reason.
        """
        unfinished = Call.ended_at.is_(None)
        if workers is None:
            where = (unfinished, Call.status.in_(("queued", "ringing", "in-progress")))
        else:
            where = (unfinished, Call.status == "in-progress", Call.worker.in_(list(workers)))
        async with self._sessions.begin() as session:
            ended = (await session.execute(
                update(Call).where(*where)
                .values(status="interrupted", end_reason=reason, ended_at=utcnow())
                .returning(*_ENDED)
            )).all()
            closed = [call.id for call in ended]
            await self._ended(session, ended)
            # What was being said when the server died becomes the calls' last turns.
            drafts = await session.scalars(select(TurnDraft).where(TurnDraft.call_id.in_(closed)))
            session.add_all(Turn(**turn) for draft in drafts for turn in draft.turns)
            await session.execute(delete(TurnDraft).where(TurnDraft.call_id.in_(closed)))
        self.changes.notify()
        return len(closed)

    async def workers_with_calls(self) -> set[str]:
        """The workers that have calls in progress, by the database."""
        async with self._sessions() as session:
            return set(await session.scalars(
                select(Call.worker).distinct()
                .where(Call.ended_at.is_(None), Call.status == "in-progress",
                       Call.worker.is_not(None))
            ))

    async def add_turns(self, records: list[TurnRecord | DraftRecord]) -> None:
        """Store finished turns and drafts, in order, in one transaction (the sink of
        `TurnWriter`). Any later record of a call replaces its draft."""
        finals = [r for r in records if isinstance(r, TurnRecord)]
        drafts: dict[int, DraftRecord | None] = {}
        for record in records:
            drafts[record.call_id] = record if isinstance(record, DraftRecord) else None
        async with self._sessions.begin() as session:
            await session.execute(delete(TurnDraft).where(TurnDraft.call_id.in_(drafts)))
            session.add_all(Turn(**vars(record)) for record in finals)
            session.add_all(TurnDraft(call_id=d.call_id, turns=[asdict(t) for t in d.turns])
                            for d in drafts.values() if d is not None)
        if finals:
            self.changes.notify()

    async def list_calls(
        self, *, limit: int = 50, offset: int = 0, call_sid: str | None = None
    ) -> list[Call]:
        """Calls, newest first, a page at a time, turns not loaded; with `call_sid`, only it."""
        query = select(Call).order_by(Call.created_at.desc(), Call.id.desc())
        if call_sid:
            query = query.where(Call.call_sid == call_sid)
        async with self._sessions() as session:
            return list((await session.scalars(query.limit(limit).offset(offset))).all())

    async def get_call(self, call_id: int) -> Call | None:
        """A call with its turns loaded, in `seq` order, or None."""
        async with self._sessions() as session:
            return await session.get(Call, call_id, options=[selectinload(Call.turns)])

    async def create_api_token(self, name: str) -> str:
        """Make a bearer token for the JSON API; returns it once, as only its sha256 is stored."""
        token = "cw_" + secrets.token_urlsafe(32)
        async with self._sessions.begin() as session:
            session.add(ApiToken(name=name, token_sha256=_sha256(token)))
        return token

    async def api_token_valid(self, token: str) -> bool:
        """Whether `token` is one of the stored API tokens."""
        async with self._sessions() as session:
            found = await session.scalar(
                select(ApiToken.id).where(ApiToken.token_sha256 == _sha256(token))
            )
            return found is not None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
