"""Recall latency at call start: 10k and 100k memories across 10k callers, on each engine.

For each engine (SQLite in a temp dir, and PostgreSQL in a fresh database that is dropped
afterwards, when a server answers) it bulk-loads 10k callers with one summarised call
each, then memories (1 per caller, then 10 per caller), and times `Recall.recall()` —
the caller's profile, last call summary and top-k memories by cosine similarity — for
random callers, one at a time. The baseline, measured in the same run, is a bare
indexed lookup of the caller's row.

Embeddings are random unit vectors (precomputed, as the model would store them), so the
figures measure the database and the ranking, not MiniLM; a goal is embedded once per
flow and cached, so recall is handed its vector.

    python bench/memory.py [--recalls N] [--engine sqlite|postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select  # noqa: E402

from callwright.memory.db import create_engine, migrate
from callwright.memory.embeddings import DIMENSIONS
from callwright.memory.models import Call, Caller, Memory, utcnow
from callwright.memory.recall import Recall
from tests.support import create_pg_database, drop_pg_database, pg_available  # noqa: E402

CALLERS = 10_000
KINDS = ("fact", "preference", "summary", "commitment")
CHUNK = 5_000
TARGET_P95_MS = 20.0


def number(i: int) -> str:
    return f"+1415{i:07d}"


def unit_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal((n, DIMENSIONS)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


async def bulk_insert(engine, table, rows: list[dict]) -> None:
    for start in range(0, len(rows), CHUNK):
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows[start : start + CHUNK])


async def load_callers(engine) -> None:
    now = utcnow()
    await bulk_insert(engine, Caller.__table__, [
        {"id": i + 1, "number": number(i), "name": f"Caller {i}", "first_seen": now,
         "last_seen": now} for i in range(CALLERS)
    ])
    await bulk_insert(engine, Call.__table__, [
        {"call_sid": f"CA{i:032d}", "transport": "twilio", "from_number": number(i),
         "status": "completed", "created_at": now, "caller_id": i + 1,
         "summary": f"The caller said “I would like to book for {i % 7 + 1} people.”"}
        for i in range(CALLERS)
    ])


async def load_memories(engine, per_caller: int, rng: np.random.Generator) -> None:
    now = utcnow()
    count = CALLERS * per_caller
    vectors = unit_vectors(count, rng)
    await bulk_insert(engine, Memory.__table__, [
        {"caller_id": j % CALLERS + 1, "kind": KINDS[j % 4], "text": f"memory {j}",
         "value": {"n": j}, "embedding": vectors[j].tobytes(), "created_at": now,
         "confidence": 1.0}
        for j in range(count)
    ])


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def time_recalls(engine, recalls: int, rng: np.random.Generator) -> dict[str, list]:
    recall = Recall(engine, k=5)
    goal = unit_vectors(1, rng)[0]
    picks = rng.integers(0, CALLERS, recalls)
    for i in picks[:20]:  # warm the pool and the caches
        await recall.recall(number(int(i)), goal=goal)
    timings: dict[str, list] = {"recall": [], "lookup": []}
    async with engine.connect() as conn:
        for i in picks:
            started = time.perf_counter()
            await conn.scalar(select(Caller.id).where(Caller.number == number(int(i))))
            timings["lookup"].append((time.perf_counter() - started) * 1000)
    for i in picks:
        started = time.perf_counter()
        context = await recall.recall(number(int(i)), goal=goal)
        timings["recall"].append((time.perf_counter() - started) * 1000)
        assert context is not None and context.last_summary and context.memories
    return timings


def report(engine_name: str, memories: int, timings: dict[str, list]) -> float:
    r, b = timings["recall"], timings["lookup"]
    p95 = pct(r, 0.95)
    print(f"{engine_name:<10} {memories:>7,} memories: recall p50 {pct(r, 0.5):6.2f} ms  "
          f"p95 {p95:6.2f} ms  p99 {pct(r, 0.99):6.2f} ms  mean {statistics.mean(r):6.2f} ms"
          f"  | row lookup p50 {pct(b, 0.5):5.2f} ms (recall/lookup "
          f"{pct(r, 0.5) / pct(b, 0.5):.1f}x)  {'ok' if p95 <= TARGET_P95_MS else 'OVER'}")
    return p95


async def bench_engine(engine_name: str, url: str, recalls: int) -> list[float]:
    rng = np.random.default_rng(5)
    engine = create_engine(url)
    worst = []
    try:
        await migrate(engine)
        started = time.perf_counter()
        await load_callers(engine)
        await load_memories(engine, 1, rng)
        print(f"{engine_name}: loaded {CALLERS:,} callers, calls and memories in "
              f"{time.perf_counter() - started:.1f}s")
        worst.append(report(engine_name, CALLERS, await time_recalls(engine, recalls, rng)))
        started = time.perf_counter()
        await load_memories(engine, 9, rng)
        print(f"{engine_name}: loaded {9 * CALLERS:,} more memories in "
              f"{time.perf_counter() - started:.1f}s")
        worst.append(report(engine_name, 10 * CALLERS, await time_recalls(engine, recalls, rng)))
    finally:
        await engine.dispose()
    return worst


async def main(recalls: int, engines: list[str]) -> int:
    p95s = []
    if "sqlite" in engines:
        with tempfile.TemporaryDirectory(prefix="cw-bench-memory-") as tmp:
            p95s += await bench_engine("sqlite", f"sqlite+aiosqlite:///{tmp}/bench.db", recalls)
    if "postgresql" in engines:
        if not await pg_available():
            print("postgresql: skipped, no server answers at 127.0.0.1:5432")
        else:
            url = await create_pg_database()
            try:
                p95s += await bench_engine("postgresql", url, recalls)
            finally:
                await drop_pg_database(url)
    print(f"target: p95 <= {TARGET_P95_MS:.0f} ms: "
          f"{'met' if p95s and max(p95s) <= TARGET_P95_MS else 'NOT met'}")
    return 0 if p95s and max(p95s) <= TARGET_P95_MS else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recalls", type=int, default=1000)
    parser.add_argument("--engine", choices=["sqlite", "postgresql"], action="append")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.recalls, args.engine or ["sqlite", "postgresql"])))
