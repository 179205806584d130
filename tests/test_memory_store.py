"""Long-term memory on real databases (SQLite and PostgreSQL): write, recall, extract,
concurrency, erasure and retention."""

import asyncio
import random
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import inspect, select, text, update

from callwright.memory.db import create_engine, migrate
from callwright.memory.erasure import forget
from callwright.memory.lifecycle import CallMemory
from callwright.memory.models import Call, Caller, Memory, Turn, TurnDraft, utcnow
from callwright.memory.recall import Recall
from callwright.memory.retention import prune
from callwright.memory.settings import MemorySettings, RetentionDays
from callwright.memory.store import CallStore, DraftRecord, TurnRecord
from callwright.memory.writer import TurnWriter


@pytest.fixture
async def db(database_url):
    engine = create_engine(database_url)
    await migrate(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def parts(db):
    """The call store, turn writer and call memory, started as the app starts them."""
    calls = CallStore(db)
    turns = TurnWriter(calls)
    turns.start()
    memory = CallMemory(
        engine=db, turns=turns,
        # The machine is shared and 50 calls start at once: give recall room.
        settings=MemorySettings(recall_timeout_s=60, _env_file=None),
    )
    await memory.start()
    yield calls, turns, memory
    await memory.close()
    await turns.close()


async def _new_call(calls: CallStore, number: str | None, sid: str) -> int:
    return await calls.create_call(call_sid=sid, transport="twilio", from_number=number)


async def test_recall_ranks_by_goal_and_keeps_profile(db, parts):
    calls, turns, memory = parts
    call_id = await _new_call(calls, "+1 (415) 555-0100", "CA1")
    context = await memory.begin_call(call_id)
    assert context.caller["number"] == "+14155550100" and context.caller["name"] is None
    assert not context.caller["known"]
    context.remember(kind="fact", text="The caller's name is Alice.", value={"name": "Alice"})
    context.remember(kind="preference", text="Prefers a window table when dining in.")
    context.remember(kind="fact", text="Has a golden retriever called Max.")
    context.remember(kind="commitment", text="We promised to call back about the invoice.")
    context.remember(kind="nonsense", text="not a kind")  # logged and dropped, call goes on
    await memory.writer.flush(10)
    async with db.connect() as conn:
        caller_id = (await conn.execute(select(Call.caller_id).where(Call.id == call_id))).scalar()
        name = (await conn.execute(select(Caller.name).where(Caller.id == caller_id))).scalar()
    assert caller_id is not None and name == "Alice"

    recall = Recall(db, k=2)
    recalled = await recall.recall("+14155550100", goal="Book a table at the restaurant")
    assert recalled.name == "Alice" and recalled.known
    assert recalled.memories[0].text == "Prefers a window table when dining in."
    assert len(recalled.memories) == 2
    scores = [m.score for m in recalled.memories]
    assert scores == sorted(scores, reverse=True)
    billing = await recall.recall("+14155550100", goal="a question about a bill or payment")
    assert billing.memories[0].text == "We promised to call back about the invoice."
    assert await recall.recall("+14155550199", goal="anything") is None

    # Expired memories are not recalled.
    async with db.begin() as conn:
        await conn.execute(update(Memory).where(Memory.kind == "commitment")
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
    billing = await recall.recall("+14155550100", goal="a question about a bill", k=10)
    assert "invoice" not in " ".join(m.text for m in billing.memories)
    assert "Name: Alice" in billing.as_instructions()


async def test_second_call_sees_first_calls_summary(db, parts):
    calls, turns, memory = parts
    first = await _new_call(calls, "+14155550101", "CA2")
    context = await memory.begin_call(first)
    lines = [("agent", "Hello, how can I help?"),
             ("caller", "I'd like to move my appointment to Friday."),
             ("agent", "Done. We will send you a reminder on Thursday.")]
    for seq, (speaker, said) in enumerate(lines, 1):
        turns.write(TurnRecord(call_id=first, seq=seq, speaker=speaker, text=said,
                               start_ms=seq * 1000, end_ms=seq * 1000 + 500))
    async with db.begin() as conn:
        await conn.execute(update(Call).where(Call.id == first)
                           .values(slots={"day": "Friday", "name": "Bob"}))
    context.remember(kind="fact", text="Day: Friday", value={"day": "Friday"})  # flow said so
    memory.end_call(first)
    await memory.settle()

    second = await _new_call(calls, "415-555-0101", "CA3")
    context = await memory.begin_call(second)
    assert context.caller["name"] == "Bob"  # from the slot, through the extracted fact
    summary = context.caller["last_summary"]
    assert summary == (
        "The caller said “I'd like to move my appointment to Friday.” "
        "Collected: day Friday, name Bob. Promised: We will send you a reminder on Thursday."
    )
    async with db.connect() as conn:
        kept = (await conn.execute(
            select(Memory.kind, Memory.text).where(Memory.source_call_id == first)
            .order_by(Memory.id)
        )).all()
    # The fact remembered during the call is not stored twice.
    assert [tuple(r) for r in kept] == [
        ("fact", "Day: Friday"), ("fact", "Name: Bob"), ("summary", summary)
    ]
    assert "Last call: The caller said" in context.instructions


async def test_a_call_we_place_remembers_the_party_dialled(db, parts):
    """Outbound calls all come from our number: each is the dialled party's, so what one
    customer said never reaches another, and their own call back finds it."""
    calls, _, memory = parts
    ours = "+15550100200"
    for i, (to, name) in enumerate((("+14155550131", "Ada"), ("+14155550132", "Bob"))):
        call_id = await calls.record_outbound(call_sid=f"CA-out-{i}", account_sid="AC1",
                                              from_number=ours, to_number=to, flow_name=None)
        context = await memory.begin_call(call_id)
        assert context.caller["number"] == to and not context.caller["known"]
        context.remember(kind="fact", text=f"The caller's name is {name}.",
                         value={"name": name})
        memory.end_call(call_id)
        await memory.settle()
    back = await _new_call(calls, "+1 415 555 0131", "CA-back")  # Ada calls us back
    context = await memory.begin_call(back)
    assert context.caller["known"] and context.caller["name"] == "Ada"
    assert "Bob" not in context.instructions


async def test_fifty_concurrent_calls_keep_every_turn_and_memory_in_order(db, parts):
    calls, turns, memory = parts
    per_call = 12

    async def one_call(n: int) -> int:
        call_id = await _new_call(calls, f"+1415555{n:04d}", f"CA-conc-{n}")
        context = await memory.begin_call(call_id)
        assert context.caller, f"call {n} was not recognised"
        for seq in range(1, per_call + 1):
            turns.write(TurnRecord(call_id=call_id, seq=seq, speaker="caller",
                                   text=f"call {n} turn {seq}", start_ms=seq, end_ms=seq))
            context.remember(kind="fact", text=f"call {n} fact {seq}")
            await asyncio.sleep(random.random() / 50)
        return call_id

    call_ids = await asyncio.gather(*(one_call(n) for n in range(50)))
    assert await turns.flush(60) and await memory.writer.flush(60)
    async with db.connect() as conn:
        for n, call_id in enumerate(call_ids):
            stored = (await conn.execute(
                select(Turn.text).where(Turn.call_id == call_id).order_by(Turn.id)
            )).scalars().all()
            assert stored == [f"call {n} turn {s}" for s in range(1, per_call + 1)]
            facts = (await conn.execute(
                select(Memory.text).where(Memory.source_call_id == call_id).order_by(Memory.id)
            )).scalars().all()
            assert facts == [f"call {n} fact {s}" for s in range(1, per_call + 1)]
        assert (await conn.execute(select(Caller.id))).all().__len__() == 50


async def _rows_mentioning(engine, needles: list[str], caller_id: int) -> list[str]:
    """Every row of every table (reflected, so tables added later count) that names the caller."""
    found = []
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        for table in tables:
            columns = await conn.run_sync(lambda c, t=table: inspect(c).get_columns(t))
            rows = (await conn.execute(text(f'SELECT * FROM "{table}"'))).mappings().all()
            for row in rows:
                for column in columns:
                    value = row[column["name"]]
                    if column["name"] == "caller_id" and value == caller_id:
                        found.append(f"{table}.caller_id")
                    if isinstance(value, (bytes, bytearray, memoryview)):
                        continue
                    if any(n.lower() in str(value).lower() for n in needles):
                        found.append(f"{table}.{column['name']}: {str(value)[:80]}")
    return found


async def test_erasure_leaves_no_row_mentioning_the_caller(db, parts, tmp_path):
    calls, turns, memory = parts
    ids = {}
    for number, name in (("+14155550177", "Zelda"), ("+14155550188", "Yves")):
        for i in range(2):
            call_id = await _new_call(calls, number, f"CA-erase-{len(ids)}-{i}")
            context = await memory.begin_call(call_id)
            context.remember(kind="fact", text=f"The caller's name is {name}.",
                             value={"name": name})
            turns.write(TurnRecord(call_id=call_id, seq=1, speaker="caller",
                                   text=f"This is {name} on {number}.", start_ms=0, end_ms=1))
            recording = tmp_path / "recordings" / f"{call_id}.wav"
            recording.parent.mkdir(exist_ok=True)
            recording.write_bytes(b"RIFF")
            async with db.begin() as conn:
                await conn.execute(update(Call).where(Call.id == call_id).values(
                    recording_path=f"recordings/{call_id}.wav", variables={"name": name}))
            memory.end_call(call_id)
            ids.setdefault(number, []).append(call_id)
    await memory.settle()
    async with db.connect() as conn:
        zelda = (await conn.execute(
            select(Caller.id).where(Caller.number == "+14155550177"))).scalar_one()
    needles = ["4155550177", "Zelda"]
    assert await _rows_mentioning(db, needles, zelda)  # the check can see the caller

    # Without --transcripts: memories, profile, summaries and variables go; the calls stay.
    erased = await forget(db, number="(415) 555-0177", data_dir=tmp_path)
    assert (erased.callers, erased.memories, erased.calls) == (1, 4, 0)
    assert erased.summaries == 2
    left = await _rows_mentioning(db, needles, zelda)
    # The transcript search index (admin) mirrors turns.text.
    kept = ("calls.from_number", "turns.text", "turns_fts.text")
    assert left and all(r.startswith(kept) for r in left), left

    erased = await forget(db, number="+1 415 555 0177", transcripts=True, data_dir=tmp_path)
    assert (erased.calls, erased.turns, erased.recordings) == (2, 2, 2)
    assert await _rows_mentioning(db, needles, zelda) == []
    assert not any((tmp_path / "recordings" / f"{i}.wav").exists() for i in ids["+14155550177"])
    # The other caller is untouched.
    assert all((tmp_path / "recordings" / f"{i}.wav").exists() for i in ids["+14155550188"])
    recalled = await Recall(db).recall("+14155550188", goal="anything")
    assert recalled.name == "Yves" and recalled.last_summary
    with pytest.raises(ValueError, match="not a phone number"):
        await forget(db, number="nobody", data_dir=tmp_path)


async def test_erasing_a_number_never_seen_leaves_anonymous_calls(db, parts, tmp_path):
    calls, turns, _ = parts
    anonymous = await _new_call(calls, None, "CA-erase-anon")  # no caller: caller_id NULL
    turns.write(TurnRecord(call_id=anonymous, seq=1, speaker="caller", text="Hello?",
                           start_ms=0, end_ms=1))
    await turns.flush()
    erased = await forget(db, number="+14155550199", transcripts=True, data_dir=tmp_path)
    assert (erased.callers, erased.calls, erased.turns) == (0, 0, 0)
    async with db.connect() as conn:
        kept = await conn.scalar(select(Turn.text).where(Turn.call_id == anonymous))
    assert kept == "Hello?"


async def test_prune_by_expiry_and_retention(db, parts):
    calls, turns, memory = parts
    call_id = await _new_call(calls, "+14155550111", "CA-prune")
    caller_id, _ = await memory.callers.recognise(call_id)
    now = utcnow()
    store = memory.store
    ids = {}
    for kind, label in (("fact", "old fact"), ("fact", "expired fact"), ("summary", "old summary"),
                        ("summary", "new summary"), ("commitment", "old promise")):
        ids[label] = await store.remember(caller_id=caller_id, kind=kind, text=label)
    async with db.begin() as conn:
        for label in ("old fact", "old summary", "old promise"):
            await conn.execute(update(Memory).where(Memory.id == ids[label])
                               .values(created_at=now - timedelta(days=400)))
        await conn.execute(update(Memory).where(Memory.id == ids["expired fact"])
                           .values(expires_at=now - timedelta(minutes=1)))
        await conn.execute(update(Call).where(Call.id == call_id).values(
            summary="old call", created_at=now - timedelta(days=400)))

    counts = await prune(db, retention=RetentionDays(summary=365, commitment=500))
    assert counts == {"fact": 1, "preference": 0, "summary": 1, "commitment": 0,
                      "call summaries": 1}
    async with db.connect() as conn:
        left = set((await conn.execute(select(Memory.text))).scalars())
    assert left == {"old fact", "new summary", "old promise"}


async def test_remember_stores_redacted_text_when_asked(db):
    from callwright.memory.callers import CallerStore
    from callwright.memory.memories import MemoryStore
    from callwright.memory.redact import Redactor

    call_id = await _new_call(CallStore(db), "+14155550122", "CA-redact")
    caller_id, _ = await CallerStore(db).recognise(call_id)
    store = MemoryStore(db, redactor=Redactor())
    memory_id = await store.remember(
        caller_id=caller_id, kind="fact",
        text="Card four one one one one one one one one one one one one one one one, "
             "email bob at example dot com",
        value={"phone": "call 415 555 0123"},
    )
    async with db.connect() as conn:
        row = (await conn.execute(select(Memory).where(Memory.id == memory_id))).one()
    assert row.text == "Card [card number], email [email]"
    assert row.value == {"phone": "call [phone number]"}
    with pytest.raises(ValueError, match="kind must be one of"):
        await store.remember(caller_id=caller_id, kind="gossip", text="x")


async def test_a_draft_gives_way_to_later_turns_and_is_kept_when_the_server_died(db, parts):
    """The exchange in progress is drafted; the next turns stored replace the draft, and a
    call its server never finished gets the draft as its last turns."""
    calls, turns, _ = parts
    call_id = await _new_call(calls, None, "CA-draft")
    asked = TurnRecord(call_id=call_id, seq=1, speaker="caller", text="What time do you open?",
                       start_ms=0, end_ms=900)
    answer = TurnRecord(call_id=call_id, seq=2, speaker="agent", text="We open",
                        planned_text="We open at nine on Sundays.", interrupted=True,
                        start_ms=1500, end_ms=1900)
    turns.write(DraftRecord(call_id=call_id, turns=(asked,)))
    turns.write(DraftRecord(call_id=call_id, turns=(asked, answer)))
    await turns.flush(10)
    assert (await calls.get_call(call_id)).turns == []  # a draft is not a turn yet
    turns.write(asked)  # the caller heard the reply start: their words are final
    turns.write(DraftRecord(call_id=call_id, turns=(replace(answer, text="We open at nine"),)))
    await turns.flush(10)
    assert [t.text for t in (await calls.get_call(call_id)).turns] == [asked.text]

    assert await calls.interrupt_unfinished(reason="server-stopped") == 1  # it died here
    call = await calls.get_call(call_id)
    assert [(t.seq, t.speaker, t.text, t.interrupted) for t in call.turns] == [
        (1, "caller", asked.text, False), (2, "agent", "We open at nine", True)]
    async with db.connect() as conn:
        assert (await conn.execute(select(TurnDraft))).all() == []


async def test_a_record_the_database_refuses_is_dropped_alone(db, parts):
    """A turn the database will never take (its seq is taken) is dropped with an error;
    the turns written around it, of its call and of another, are stored."""
    calls, turns, _ = parts
    one = await _new_call(calls, None, "CA-poison-1")
    two = await _new_call(calls, None, "CA-poison-2")
    turn = dict(speaker="caller", start_ms=0, end_ms=10)
    turns.write(TurnRecord(call_id=one, seq=1, text="first", **turn))
    await turns.flush(10)
    turns.write(TurnRecord(call_id=two, seq=1, text="other call", **turn))
    turns.write(TurnRecord(call_id=one, seq=1, text="same seq again", **turn))
    turns.write(TurnRecord(call_id=one, seq=2, text="after it", **turn))
    assert await turns.flush(10), "the writer is stuck on the refused record"
    assert [t.text for t in (await calls.get_call(one)).turns] == ["first", "after it"]
    assert [t.text for t in (await calls.get_call(two)).turns] == ["other call"]
    assert turns.dropped == 1
