"""Calls, a caller with memories, and admin users seeded into a test server's database."""

from __future__ import annotations

import subprocess
import sys
import wave
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.memory.db import create_engine, sessionmaker
from callwright.memory.models import Call, Caller, Memory, Turn
from tests.support import ROOT, Server, speech_8k

RATE = 8000
PASSWORD = "correct horse battery"

# (speaker, label, text, interrupted, planned, latency_ms)
CONVERSATION = [
    ("agent", None, "Hello, you have reached the front desk. How can I help?", False, None, None),
    ("caller", "caller", "I would like to book a table for four on Friday.", False, None, None),
    ("agent", None, "Certainly. What name should I put",
     True, "Certainly. What name should I put the booking under? Any dietary needs?", 640),
    ("caller", "caller", "Alice Walker. One of us cannot eat zucchini.", False, None, None),
    ("caller", "speaker 2", "And no peanuts please.", False, None, None),
    ("agent", None, "Thank you Alice, a table for four on Friday. Goodbye.", False, None, 910),
]
SEARCH_WORD = "zucchini"


@dataclass
class Seeded:
    call_id: int
    other_call_id: int
    caller_id: int
    memory_ids: list[int]
    turn_ids: list[int]
    turn_starts_ms: list[int]


def server_engine(server: Server) -> AsyncEngine:
    url = server.env.get("DATABASE_URL") or (
        f"sqlite+aiosqlite:///{Path(server.env['CALLWRIGHT_DATA_DIR']) / 'callwright.db'}"
    )
    return create_engine(url)


def add_user(server: Server, username: str, role: str, password: str = PASSWORD) -> None:
    subprocess.run(
        [sys.executable, "-m", "callwright", "users", "add", username, "--role", role,
         "--password-stdin"],
        input=password + "\n", env=server.env, cwd=ROOT, check=True, capture_output=True,
        text=True,
    )


def write_stereo_wav(path: Path, timeline: list[tuple[str, int, bytes]]) -> None:
    """Left channel the caller, right the agent; each (speaker, start_ms, pcm) placed in time."""
    end = max(start * RATE // 1000 + len(pcm) // 2 for _, start, pcm in timeline) + RATE // 2
    stereo = np.zeros((end, 2), dtype=np.int16)
    for speaker, start_ms, pcm in timeline:
        samples = np.frombuffer(pcm, dtype=np.int16)
        first = start_ms * RATE // 1000
        stereo[first:first + len(samples), 0 if speaker == "caller" else 1] = samples
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(stereo.tobytes())


async def seed(server: Server, *, number: str = "+15550123456") -> Seeded:
    data_dir = Path(server.env["CALLWRIGHT_DATA_DIR"])
    started = datetime.now(UTC) - timedelta(hours=2)
    turns, timeline, at_ms = [], [], 300
    for seq, (speaker, label, said, cut, planned, latency) in enumerate(CONVERSATION):
        pcm = speech_8k(said, voice="en-us" if speaker == "caller" else "en-gb", pad_s=0.0)
        length_ms = len(pcm) // 2 * 1000 // RATE
        turns.append(Turn(seq=seq, speaker=speaker, speaker_label=label, text=said,
                          start_ms=at_ms, end_ms=at_ms + length_ms, interrupted=cut,
                          planned_text=planned, latency_ms=latency,
                          timings={"stt": 120, "reply": 30, "tts": 200} if latency else None))
        timeline.append((speaker, at_ms, pcm))
        at_ms += length_ms + 600
    relative = f"recordings/seeded-{started:%Y%m%d%H%M%S}.wav"
    write_stereo_wav(data_dir / relative, timeline)
    engine = server_engine(server)
    try:
        async with sessionmaker(engine).begin() as session:
            caller = Caller(number=number, name="Alice Walker", language="en",
                            first_seen=started, last_seen=started)
            session.add(caller)
            await session.flush()
            call = Call(
                call_sid=f"CAseed{started:%H%M%S%f}", transport="twilio", from_number=number,
                to_number="+15550100002", status="completed", end_reason="agent-hangup",
                created_at=started, started_at=started,
                ended_at=started + timedelta(milliseconds=at_ms), recording_path=relative,
                flow_name="restaurant", flow_version="3f2a9c1b7d4e",
                flow_path=["greeting", "booking", "confirm", "goodbye"],
                slots={"party_size": 4, "day": "Friday", "name": "Alice Walker"},
                summary="Booked a table for four on Friday.", caller_id=caller.id, turns=turns,
            )
            other = Call(
                call_sid=f"CAother{started:%H%M%S%f}", transport="twilio",
                from_number="+15550999999", to_number="+15550100002", status="failed",
                end_reason="stream-error", created_at=started - timedelta(days=1),
                started_at=started - timedelta(days=1),
                ended_at=started - timedelta(days=1) + timedelta(seconds=5),
                turns=[Turn(seq=0, speaker="agent", text="Hello, front desk.", start_ms=0,
                            end_ms=1500)],
            )
            session.add_all([call, other])
            await session.flush()
            memories = [
                Memory(caller_id=caller.id, kind="preference", text="Prefers a window table",
                       source_call_id=call.id, confidence=0.8),
                Memory(caller_id=caller.id, kind="fact", text="Allergic to zuchini",
                       source_call_id=call.id, source_turn_id=turns[3].id, confidence=0.7),
            ]
            session.add_all(memories)
            await session.flush()
            return Seeded(call_id=call.id, other_call_id=other.id, caller_id=caller.id,
                          memory_ids=[m.id for m in memories], turn_ids=[t.id for t in turns],
                          turn_starts_ms=[t.start_ms for t in turns])
    finally:
        await engine.dispose()
