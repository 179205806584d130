"""Figures for the dashboard: calls per day, durations, outcomes, voice-to-voice latency, and
how callers sounded."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.agent.emotion import EMOTIONS
from callwright.memory.db import sessionmaker
from callwright.memory.models import Call, Turn


@dataclass(frozen=True, kw_only=True)
class Day:
    """One day's figures.

    Attributes:
        day: The day, in UTC.
        calls: Calls created that day.
        avg_duration_s: The mean duration of those that started and ended, in seconds.
        latency_p50_ms: The median voice-to-voice latency of their agent turns.
        latency_p90_ms: Its 90th percentile.
        emotion_share: For each emotion but neutral, the percentage of the day's calls
            with a caller turn that sounded so; None for a day without calls.
    """

    day: date
    calls: int
    avg_duration_s: float | None
    latency_p50_ms: float | None
    latency_p90_ms: float | None
    emotion_share: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Overview:
    """The dashboard's figures: per day, and over all the days together.

    The fields it shares with `Day` hold the same figures over all the days.

    Attributes:
        days: One `Day` per day, oldest first, days without calls included.
        outcomes: Calls by outcome (else "status · end reason", for calls from before
            outcomes were kept, or still running), the most common first.
    """

    days: list[Day]
    outcomes: list[tuple[str, int]]
    calls: int
    avg_duration_s: float | None
    latency_p50_ms: float | None
    latency_p90_ms: float | None


def _day(moment: datetime) -> date:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date()


def _percentiles(values: list[int]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    p50, p90 = np.percentile(values, [50, 90])
    return round(float(p50)), round(float(p90))


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


async def overview(engine: AsyncEngine, *, days: int, today: date | None = None) -> Overview:
    """The last `days` days (UTC) up to and including `today`."""
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime.combine(first, time.min, UTC)
    async with sessionmaker(engine)() as session:
        calls = (await session.execute(
            select(Call.created_at, Call.started_at, Call.ended_at, Call.status, Call.end_reason,
                   Call.outcome)
            .where(Call.created_at >= since)
        )).all()
        heard = (await session.execute(
            select(Call.created_at, Call.id, Turn.emotion).distinct()
            .join(Call, Call.id == Turn.call_id)
            .where(Call.created_at >= since, Turn.emotion.is_not(None))
        )).all()
        latencies = (await session.execute(
            select(Call.created_at, Turn.latency_ms).join(Call, Call.id == Turn.call_id)
            .where(Call.created_at >= since, Turn.latency_ms.is_not(None))
        )).all()
    per_day: Counter[date] = Counter()
    durations: defaultdict[date, list[float]] = defaultdict(list)
    outcomes: Counter[str] = Counter()
    for created, started, ended, status, reason, outcome in calls:
        day = _day(created)
        per_day[day] += 1
        if started and ended:
            durations[day].append((ended - started).total_seconds())
        outcomes[outcome or (f"{status} · {reason}" if reason else status)] += 1
    sounded: defaultdict[tuple[date, str], set[int]] = defaultdict(set)
    for created, call_id, emotion in heard:
        sounded[_day(created), emotion].add(call_id)
    latency: defaultdict[date, list[int]] = defaultdict(list)
    for created, ms in latencies:
        latency[_day(created)].append(ms)
    rows = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        p50, p90 = _percentiles(latency[day])
        share = {e: round(100 * len(sounded[day, e]) / per_day[day], 1) if per_day[day] else None
                 for e in EMOTIONS if e != "neutral"}
        rows.append(Day(day=day, calls=per_day[day], avg_duration_s=_mean(durations[day]),
                        latency_p50_ms=p50, latency_p90_ms=p90, emotion_share=share))
    all_latency = [ms for values in latency.values() for ms in values]
    p50, p90 = _percentiles(all_latency)
    return Overview(
        days=rows, outcomes=outcomes.most_common(), calls=sum(per_day.values()),
        avg_duration_s=_mean([d for values in durations.values() for d in values]),
        latency_p50_ms=p50, latency_p90_ms=p90,
    )
