"""The supervisors' queries over calls: filters, full-text search, detail, annotations, export."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from pydantic import BaseModel, field_validator
from sqlalchemy import (
    ColumnElement,
    Integer,
    case,
    column,
    delete,
    distinct,
    exists,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import selectinload

from callwright.admin.models import TAGS, AdminUser, Annotation
from callwright.agent.emotion import EMOTIONS
from callwright.memory.db import sessionmaker
from callwright.memory.models import Call, Turn


class CallFilters(BaseModel):
    """The calls list's filters, as they arrive in the query string (blank means unset)."""

    q: str = ""
    date_from: date | None = None
    date_to: date | None = None
    number: str = ""
    flow: str = ""
    status: str = ""
    end_reason: str = ""
    min_duration_s: int | None = None
    max_duration_s: int | None = None
    interrupted: bool | None = None
    min_speakers: int | None = None
    tag: str = ""
    outcome: str = ""
    emotion: str = ""  # calls with a caller turn that sounded so ("became frustrated")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value, info):  # noqa: ANN001
        if value == "":
            return "" if cls.model_fields[info.field_name].annotation is str else None
        return value

    def query_string(self) -> dict[str, str]:
        """The set filters, for links that keep them (pages, export)."""
        return {k: str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in self.model_dump().items() if v not in ("", None)}


@dataclass(frozen=True, kw_only=True)
class CallRow:
    """One line of the calls list."""

    call: Call
    duration_s: float | None
    turns: int
    interrupted: bool
    speakers: int
    tags: list[str]
    emotions: list[str]  # the caller's emotions other than neutral, in the order first heard
    match: str | None = None  # a turn that matched the search


@dataclass(kw_only=True)
class CallPage:
    """One page of the calls list: its rows, how many calls match the filters, filter choices."""

    rows: list[CallRow]
    total: int
    choices: dict[str, list[str]] = field(default_factory=dict)  # for the filter selects


def search_words(query: str) -> list[str]:
    """The words of a search query, lowercased; at most the first 16."""
    return re.findall(r"\w+", query.lower())[:16]


class CallQueries:
    """The supervisors' queries over calls, on SQLite (FTS5) or PostgreSQL (full-text search)."""

    def __init__(self, engine: AsyncEngine):
        self._sessions = sessionmaker(engine)
        self._dialect = engine.dialect.name

    def _text_match(self, query: str) -> ColumnElement[bool]:
        """Turns whose text matches every word of `query` (stemmed, any order)."""
        words = search_words(query)
        if self._dialect == "sqlite":
            fts = " ".join(f'"{w}"' for w in words)  # quoted: no FTS5 syntax from users
            matching = text("SELECT rowid FROM turns_fts WHERE turns_fts MATCH :fts")
            return Turn.id.in_(matching.bindparams(fts=fts).columns(column("rowid", Integer)))
        # Same expression as the migration's GIN index, so PostgreSQL uses it.
        english = literal_column("'english'")
        return func.to_tsvector(english, Turn.text).op("@@")(
            func.plainto_tsquery(english, " ".join(words))
        )

    def duration_s(self) -> ColumnElement[float]:
        """SQL for a call's duration in seconds; NULL unless it started and ended."""
        if self._dialect == "sqlite":
            return (func.julianday(Call.ended_at) - func.julianday(Call.started_at)) * 86400.0
        return func.extract("epoch", Call.ended_at - Call.started_at)

    def _conditions(self, f: CallFilters) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if f.date_from:
            where.append(Call.created_at >= datetime.combine(f.date_from, time.min, UTC))
        if f.date_to:
            end = datetime.combine(f.date_to + timedelta(days=1), time.min, UTC)
            where.append(Call.created_at < end)
        if f.number:
            number = f.number.strip()  # % and _ are the caller's characters, not wildcards
            where.append(or_(Call.from_number.contains(number, autoescape=True),
                             Call.to_number.contains(number, autoescape=True)))
        if f.flow:
            where.append(Call.flow_name == f.flow)
        if f.status:
            where.append(Call.status == f.status)
        if f.end_reason:
            where.append(Call.end_reason == f.end_reason)
        if f.min_duration_s is not None:
            where.append(self.duration_s() >= f.min_duration_s)
        if f.max_duration_s is not None:
            where.append(self.duration_s() <= f.max_duration_s)
        if f.interrupted is not None:
            cut = exists().where(Turn.call_id == Call.id, Turn.interrupted.is_(True))
            where.append(cut if f.interrupted else ~cut)
        if f.min_speakers is not None:
            where.append(_speaker_count(Call.id) >= f.min_speakers)
        if f.tag:
            where.append(exists().where(Annotation.call_id == Call.id, Annotation.tag == f.tag))
        if f.outcome:
            where.append(Call.outcome == f.outcome)
        if f.emotion:
            where.append(exists().where(Turn.call_id == Call.id, Turn.emotion == f.emotion))
        if search_words(f.q):
            where.append(exists().where(Turn.call_id == Call.id, self._text_match(f.q)))
        return where

    async def list_calls(self, f: CallFilters, *, limit: int = 25, offset: int = 0) -> CallPage:
        """One page of the calls matching `f`, newest first.

        Each row carries the call's turn count, whether a turn was interrupted, its number of
        voices, its tags, and with a search, its first matching turn.
        """
        where = self._conditions(f)
        async with self._sessions() as session:
            total = await session.scalar(select(func.count(Call.id)).where(*where))
            calls = list(await session.scalars(
                select(Call).where(*where)
                .order_by(Call.created_at.desc(), Call.id.desc()).limit(limit).offset(offset)
            ))
            ids = [c.id for c in calls]
            stats = {row.call_id: row for row in await session.execute(
                select(
                    Turn.call_id,
                    func.count(Turn.id).label("turns"),
                    func.max(case((Turn.interrupted.is_(True), 1), else_=0)).label("cut"),
                    func.count(distinct(_speaker_key())).label("speakers"),
                ).where(Turn.call_id.in_(ids)).group_by(Turn.call_id)
            )}
            tags: dict[int, list[str]] = {}
            for call_id, tag in await session.execute(
                select(Annotation.call_id, Annotation.tag).distinct()
                .where(Annotation.call_id.in_(ids)).order_by(Annotation.tag)
            ):
                tags.setdefault(call_id, []).append(tag)
            emotions: dict[int, list[str]] = {}
            for call_id, emotion in await session.execute(
                select(Turn.call_id, Turn.emotion)
                .where(Turn.call_id.in_(ids), Turn.emotion.is_not(None),
                       Turn.emotion != "neutral").order_by(Turn.call_id, Turn.seq)
            ):
                heard = emotions.setdefault(call_id, [])
                if emotion not in heard:
                    heard.append(emotion)
            matches: dict[int, str] = {}
            if search_words(f.q):
                for call_id, said in await session.execute(
                    select(Turn.call_id, Turn.text)
                    .where(Turn.call_id.in_(ids), self._text_match(f.q)).order_by(Turn.seq)
                ):
                    matches.setdefault(call_id, said)
            choices = {
                "flow": await _distinct(session, Call.flow_name),
                "status": await _distinct(session, Call.status),
                "end_reason": await _distinct(session, Call.end_reason),
                "outcome": await _distinct(session, Call.outcome),
                "emotion": list(EMOTIONS),
                "tag": sorted(set(TAGS) | set(await _distinct(session, Annotation.tag))),
            }
        rows = []
        for call in calls:
            stat = stats.get(call.id)
            rows.append(CallRow(
                call=call, duration_s=call_duration_s(call), turns=stat.turns if stat else 0,
                interrupted=bool(stat and stat.cut), speakers=stat.speakers if stat else 0,
                tags=tags.get(call.id, []), emotions=emotions.get(call.id, []),
                match=matches.get(call.id),
            ))
        return CallPage(rows=rows, total=total or 0, choices=choices)

    async def get_call(self, call_id: int) -> Call | None:
        """A call with its turns and its caller loaded, or None."""
        async with self._sessions() as session:
            return await session.get(
                Call, call_id, options=[selectinload(Call.turns), selectinload(Call.caller)]
            )

    async def annotations(self, call_id: int) -> dict[int, list[tuple[Annotation, str]]]:
        """The call's annotations by turn id, each with its author's name."""
        by_turn: dict[int, list[tuple[Annotation, str]]] = {}
        async with self._sessions() as session:
            for note, author in await session.execute(
                select(Annotation, AdminUser.username)
                .outerjoin(AdminUser, AdminUser.id == Annotation.author_id)
                .where(Annotation.call_id == call_id).order_by(Annotation.id)
            ):
                by_turn.setdefault(note.turn_id, []).append((note, author or "(removed user)"))
        return by_turn

    async def annotate(self, *, call_id: int, turn_id: int, tag: str, note: str,
                       author_id: int | None) -> Annotation | None:
        """Tag a turn of this call; None when the turn is not part of it."""
        async with self._sessions.begin() as session:
            turn = await session.get(Turn, turn_id)
            if turn is None or turn.call_id != call_id:
                return None
            annotation = Annotation(call_id=call_id, turn_id=turn_id, tag=tag,
                                    note=note, author_id=author_id)
            session.add(annotation)
            return annotation

    async def delete_annotation(self, *, call_id: int, annotation_id: int) -> bool:
        """Delete an annotation of this call; False when the call has none with this id."""
        async with self._sessions.begin() as session:
            result = await session.execute(delete(Annotation).where(
                Annotation.id == annotation_id, Annotation.call_id == call_id))
            return bool(result.rowcount)

    async def export(self, f: CallFilters, *, limit: int = 10_000) -> list[dict]:
        """Filtered calls with their turns and each turn's annotations, as plain data."""
        where = self._conditions(f)
        async with self._sessions() as session:
            calls = list(await session.scalars(
                select(Call).where(*where).options(selectinload(Call.turns))
                .order_by(Call.created_at.desc(), Call.id.desc()).limit(limit)
            ))
            notes: dict[int, list[dict]] = {}
            for note, author in await session.execute(
                select(Annotation, AdminUser.username)
                .outerjoin(AdminUser, AdminUser.id == Annotation.author_id)
                .where(Annotation.call_id.in_([c.id for c in calls])).order_by(Annotation.id)
            ):
                notes.setdefault(note.turn_id, []).append({
                    "tag": note.tag, "note": note.note, "author": author,
                    "created_at": note.created_at.isoformat(),
                })
        return [{
            "id": c.id, "call_sid": c.call_sid, "from_number": c.from_number,
            "to_number": c.to_number, "status": c.status, "end_reason": c.end_reason,
            "flow_name": c.flow_name, "flow_version": c.flow_version, "flow_path": c.flow_path,
            "slots": c.slots, "variables": c.variables, "summary": c.summary,
            "outcome": c.outcome,
            "created_at": c.created_at.isoformat(),
            "started_at": c.started_at.isoformat() if c.started_at else None,
            "ended_at": c.ended_at.isoformat() if c.ended_at else None,
            "duration_s": call_duration_s(c),
            "turns": [{
                "id": t.id, "seq": t.seq, "speaker": t.speaker, "speaker_label": t.speaker_label,
                "text": t.text, "start_ms": t.start_ms, "end_ms": t.end_ms,
                "interrupted": t.interrupted, "planned_text": t.planned_text,
                "latency_ms": t.latency_ms, "llm_first_token_ms": t.llm_first_token_ms,
                "llm_tokens_in": t.llm_tokens_in, "llm_tokens_out": t.llm_tokens_out,
                "emotion": t.emotion, "arousal": t.arousal, "valence": t.valence,
                "annotations": notes.get(t.id, []),
            } for t in c.turns],
        } for c in calls]


def _speaker_key() -> ColumnElement[str]:
    return func.coalesce(Turn.speaker_label, Turn.speaker)


def _speaker_count(call_id: ColumnElement[int]) -> ColumnElement[int]:
    """Distinct voices in a call: the agent plus each label heard on the caller's line."""
    return (select(func.count(distinct(_speaker_key()))).where(Turn.call_id == call_id)
            .scalar_subquery())


async def _distinct(session, attribute) -> list[str]:  # noqa: ANN001
    values = await session.scalars(select(attribute).distinct().where(attribute.is_not(None)))
    return sorted(v for v in values if v)


def call_duration_s(call: Call) -> float | None:
    """Seconds from a call's start to its end; None unless it started and ended."""
    if call.started_at and call.ended_at:
        return (call.ended_at - call.started_at).total_seconds()
    return None
