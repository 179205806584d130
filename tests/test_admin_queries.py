"""The calls list's filters and full-text search, on SQLite (FTS5) and PostgreSQL."""

from datetime import UTC, date, datetime, timedelta

from callwright.admin.calls import CallFilters, CallQueries
from callwright.admin.dashboard import overview
from callwright.memory.db import create_engine, migrate, sessionmaker
from callwright.memory.models import Call, Turn

DAY = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def _call(sid: str, *, at: datetime, seconds: int, turns: list[Turn], **fields) -> Call:
    return Call(call_sid=sid, transport="twilio", created_at=at, started_at=at,
                ended_at=at + timedelta(seconds=seconds), turns=turns, **fields)


def _turn(seq: int, speaker: str, text: str, **fields) -> Turn:
    return Turn(seq=seq, speaker=speaker, text=text, start_ms=seq * 1000,
                end_ms=seq * 1000 + 900, **fields)


async def test_filters_and_search(database_url):
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        async with sessionmaker(engine).begin() as session:
            session.add_all([
                _call("CA1", at=DAY, seconds=30, from_number="+15550001111", flow_name="booking",
                      status="completed", end_reason="agent-hangup", outcome="booked", turns=[
                          _turn(0, "agent", "Front desk, how can I help?", latency_ms=700),
                          _turn(1, "caller", "I am booking a table for Friday",
                                emotion="positive", arousal=0.2, valence=0.5),
                          _turn(2, "caller", "make it six", speaker_label="speaker 2"),
                          _turn(3, "agent", "Of course", interrupted=True,
                                planned_text="Of course, six people.", latency_ms=900),
                      ]),
                _call("CA2", at=DAY + timedelta(days=1), seconds=200, from_number="+15550002222",
                      flow_name="support", status="failed", end_reason="stream-error", turns=[
                          _turn(0, "agent", "Front desk here"),
                          _turn(1, "caller", "My invoice is wrong; it says Friday",
                                emotion="neutral"),
                          _turn(2, "caller", "This is ridiculous", emotion="frustrated"),
                      ]),
                _call("CA3", at=DAY + timedelta(days=2), seconds=5, from_number="+15550003333",
                      status="completed", turns=[]),
            ])
        calls = CallQueries(engine)

        async def sids(**filters) -> list[str]:
            page = await calls.list_calls(CallFilters.model_validate(filters))
            assert page.total == len(page.rows)
            return [row.call.call_sid for row in page.rows]

        assert await sids() == ["CA3", "CA2", "CA1"]  # newest first
        assert await sids(q="friday") == ["CA2", "CA1"]
        assert await sids(q="book") == ["CA1"]  # stemmed: "booking" matches
        assert await sids(q="invoice friday") == ["CA2"]  # every word must match
        assert await sids(q='") OR *') == []  # search syntax from users is inert
        assert await sids(date_from="2026-03-11", date_to="2026-03-11") == ["CA2"]
        assert await sids(number="0001") == ["CA1"]
        assert await sids(number="%") == [] and await sids(number="_") == []  # not wildcards
        assert await sids(flow="support") == ["CA2"]
        assert await sids(status="completed") == ["CA3", "CA1"]
        assert await sids(end_reason="stream-error") == ["CA2"]
        assert await sids(min_duration_s="20", max_duration_s="100") == ["CA1"]
        assert await sids(interrupted="true") == ["CA1"]
        assert await sids(interrupted="false") == ["CA3", "CA2"]
        assert await sids(min_speakers="3") == ["CA1"]
        assert await sids(q="", number="", min_speakers="") == ["CA3", "CA2", "CA1"]
        assert await sids(emotion="frustrated") == ["CA2"]  # became frustrated at some turn
        assert await sids(emotion="positive") == ["CA1"]
        assert await sids(emotion="sad") == []
        assert await sids(outcome="booked") == ["CA1"]
        listed = await calls.list_calls(CallFilters())
        assert [row.emotions for row in listed.rows] == [[], ["frustrated"], ["positive"]]
        assert listed.choices["outcome"] == ["booked"]

        page = await calls.list_calls(CallFilters(q="booking"))
        row = page.rows[0]
        assert (row.turns, row.speakers, row.interrupted) == (4, 3, True)
        assert row.match == "I am booking a table for Friday"
        assert page.choices["flow"] == ["booking", "support"]

        first_turn = (await calls.get_call(row.call.id)).turns[3]
        await calls.annotate(call_id=row.call.id, turn_id=first_turn.id, tag="good", note="ok",
                             author_id=None)
        assert await sids(tag="good") == ["CA1"]
        exported = await calls.export(CallFilters(tag="good"))
        assert exported[0]["turns"][3]["annotations"][0]["note"] == "ok"

        stats = await overview(engine, days=3, today=date(2026, 3, 12))
        assert [d.calls for d in stats.days] == [1, 1, 1]
        assert stats.days[0].latency_p50_ms == 800 and stats.days[0].latency_p90_ms == 880
        assert stats.avg_duration_s == round((30 + 200 + 5) / 3, 1)
        assert dict(stats.outcomes) == {"booked": 1, "failed · stream-error": 1, "completed": 1}
        assert [d.emotion_share for d in stats.days] == [
            {"positive": 100.0, "frustrated": 0.0, "sad": 0.0},
            {"positive": 0.0, "frustrated": 100.0, "sad": 0.0},
            {"positive": 0.0, "frustrated": 0.0, "sad": 0.0},
        ]
    finally:
        await engine.dispose()


def test_highlight_marks_words_and_never_splits_what_escaping_made():
    from callwright.admin.filters import highlight

    marked = highlight("Tom & Jerry's <b>table</b>: amp it up", "amp table")
    assert str(marked) == ("Tom &amp; Jerry&#39;s &lt;b&gt;<mark>table</mark>&lt;/b&gt;: "
                           "<mark>amp</mark> it up")
