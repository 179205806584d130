"""Many workers, one service: calls across N workers behind nginx, with PostgreSQL and Redis.

For 1..N workers on the same cores, it places `--calls` concurrent scripted Twilio calls
through nginx and prints calls completed and voice-to-voice on the wire, as ratios
against one worker. With all N workers it also shows, on the wire and in the database:

- the cap across workers holds exactly (`--calls` + 3 webhooks at once: `--calls` answered);
- the admin API, asked through nginx, lists the live calls of every worker;
- a worker killed mid-call (SIGKILL) ends only its own calls (stored as interrupted,
  worker-lost), the others still answer each line, and every turn heard is stored.

    python bench/scale.py --workers 3 [--calls 6]

Needs nginx (Debian `nginx-light`), PostgreSQL (`CALLWRIGHT_TEST_PG`, default the local
`test` database, in which it creates and drops one of its own) and Redis (`BENCH_REDIS`,
default redis://127.0.0.1:6379/8, flushed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis.asyncio as redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from callwright.testing.balancer import Nginx  # noqa: E402
from callwright.testing.line_audio import speech_end_s  # noqa: E402
from callwright.testing.twilio_emulator import TwilioCaller  # noqa: E402
from callwright.testing.twilio_rest import TwilioRestStandIn  # noqa: E402
from tests.support import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    Server,
    create_pg_database,
    drop_pg_database,
    free_port,
    launch_server,
    speech_8k,
    wait_ready,
)

PUBLIC_URL = "https://calls.example.test"
LINES = ["What time do you open on Sunday?", "Can I book a table for two?",
         "My name is Alice.", "What are your opening hours?"]
LEASE_S = 5.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else 0.0


class Service:
    """N workers sharing a database and Redis, behind nginx."""

    def __init__(self, root: Path, *, workers: int, cap: int, database: str, redis_url: str,
                 rest_url: str):
        env = {"DATABASE_URL": database, "REDIS_URL": redis_url, "MAX_CALLS_TOTAL": str(cap),
               "WORKER_LEASE_SECONDS": str(LEASE_S), "PUBLIC_URL": PUBLIC_URL,
               "LOG_LEVEL": "WARNING"}
        self.workers: dict[str, Server] = {}
        for i in range(workers):
            name = f"w{i + 1}"
            (root / name).mkdir(parents=True)
            self.workers[name] = launch_server(root / name, rest_url=rest_url, WORKER_ID=name,
                                               **env)
        for worker in self.workers.values():
            wait_ready(worker, timeout_s=300)
        self.nginx = Nginx(upstreams=[f"127.0.0.1:{w.port}" for w in self.workers.values()],
                           port=free_port(), workdir=root / "nginx")
        self.nginx.__enter__()

    def caller(self, i: int) -> TwilioCaller:
        return TwilioCaller(base_url=self.nginx.url, auth_token=AUTH_TOKEN,
                            account_sid=ACCOUNT_SID, public_url=PUBLIC_URL,
                            from_number=f"+1555010{i:04d}")

    async def api(self, path: str, **params) -> httpx.Response:
        token = next(iter(self.workers.values())).api_token
        async with httpx.AsyncClient(base_url=self.nginx.url, timeout=10) as client:
            return await client.get(path, params=params,
                                    headers={"Authorization": f"Bearer {token}"})

    async def stored(self, call_sid: str) -> dict:
        listing = (await self.api("/api/calls", call_sid=call_sid)).json()
        return (await self.api(f"/api/calls/{listing[0]['id']}")).json()

    def stop(self) -> None:
        self.nginx.__exit__()
        for worker in self.workers.values():
            worker.stop()


async def one_call(twilio: TwilioCaller, lines: int, started: asyncio.Event | None = None):
    """Greeting, then `lines` lines each after the reply; (latencies ms, replies, error)."""
    latencies, replies = [], 0
    try:
        async with twilio.open_stream() as session:
            await session.wait_reply(1.0, 30)
            if started:
                started.set()
            for line in LINES[:lines]:
                pcm = speech_8k(line)
                end = await session.speak(pcm) + speech_end_s(pcm)
                heard = await session.wait_speech_after(end, 20)
                if heard is None or session.closed.is_set():
                    return latencies, replies, "no reply" if heard is None else "closed"
                latencies.append((heard - end) * 1000)
                replies += 1
                await session.wait_reply(1.0, 20, after=heard)
    except Exception as exc:  # a killed worker's socket
        return latencies, replies, exc.__class__.__name__
    return latencies, replies, None


async def load_run(service: Service, calls: int) -> tuple[int, list[float]]:
    results = await asyncio.gather(*(one_call(service.caller(i), 3) for i in range(calls)))
    ok = sum(1 for _, replies, error in results if error is None and replies == 3)
    return ok, [ms for latencies, _, _ in results for ms in latencies]


async def cap_holds(service: Service, cap: int) -> str:
    callers = [service.caller(9000 + i) for i in range(cap + 3)]
    answers = await asyncio.gather(*(c.post_webhook() for c in callers))
    connected = sum("<Connect>" in a.text for a in answers)
    busy = sum("busy" in a.text.lower() for a in answers)
    await asyncio.gather(*(c.post_status("completed") for c in callers))
    return f"{cap + 3} webhooks at once, cap {cap}: {connected} answered, {busy} busy"


async def kill_one(service: Service, calls: int) -> list[str]:
    callers = [service.caller(5000 + i) for i in range(calls)]
    started = [asyncio.Event() for _ in callers]
    tasks = [asyncio.create_task(one_call(c, 4, s)) for c, s in zip(callers, started,
                                                                    strict=True)]
    await asyncio.wait([asyncio.create_task(s.wait()) for s in started], timeout=60)
    await asyncio.sleep(3)
    live = [c for c in (await service.api("/api/calls", limit=200)).json()
            if c["status"] == "in-progress" and c["call_sid"] in {x.call_sid for x in callers}]
    by_worker = {c["worker"] for c in live}
    lines = [f"the API through nginx lists {len(live)} live calls on workers "
             f"{', '.join(sorted(by_worker))}"]
    victim_name = sorted(by_worker)[-1]
    victim = service.workers[victim_name]
    victim.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    done, pending = await asyncio.wait(tasks, timeout=120)
    for task in pending:  # a call that neither ended nor answered: count it as lost
        task.cancel()
    results = [t.result() if t in done else ([], 0, "hung") for t in tasks]
    await asyncio.sleep(LEASE_S * 1.5)
    lost_turns, others_ok, others, victims_closed, victims = 0, 0, 0, 0, 0
    for twilio, (_, replies, error) in zip(callers, results, strict=True):
        call = await service.stored(twilio.call_sid)
        heard_turns = 1 + 2 * replies  # greeting, then each line and its reply
        stored = len([t for t in call["turns"] if t["speaker"] in ("agent", "caller")])
        if call["worker"] == victim_name:
            victims += 1
            victims_closed += call["end_reason"] == "worker-lost"
            lost_turns += max(0, heard_turns - stored)
        else:
            others += 1
            others_ok += error is None and replies == 4
            lost_turns += max(0, heard_turns - stored)
    lines.append(f"killed {victim_name} {time.monotonic() - killed:.1f} s ago: "
                 f"{victims_closed}/{victims} of its calls stored as worker-lost; "
                 f"{others_ok}/{others} calls on other workers answered every line; "
                 f"turns heard but not stored: {lost_turns}")
    return lines


async def main(workers: int, calls: int) -> None:
    redis_url = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/8")
    client = redis.Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    rest = TwilioRestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    await rest.serve()
    rows = []
    try:
        for n in range(1, workers + 1):
            database = await create_pg_database()
            root = Path(tempfile.mkdtemp(prefix=f"cw-scale-{n}-"))
            print(f"starting {n} worker(s)...", flush=True)
            service = await asyncio.to_thread(Service, root, workers=n, cap=calls,
                                              database=database, redis_url=redis_url,
                                              rest_url=rest.base_url)
            try:
                ok, wire = await load_run(service, calls)
                rows.append((n, ok, wire))
                print(f"{n} worker(s): {ok}/{calls} calls answered every line; voice-to-voice "
                      f"p50 {pct(wire, 0.5):.0f} ms, p90 {pct(wire, 0.9):.0f} ms", flush=True)
                if n == workers:
                    print(await cap_holds(service, calls), flush=True)
                    for line in await kill_one(service, calls):
                        print(line, flush=True)
            finally:
                service.stop()
                await drop_pg_database(database)
    finally:
        await rest.stop()
    base = rows[0]
    print("\nworkers | calls held | v2v p50 ms | p90 ms | p50 ratio vs 1 worker")
    for n, ok, wire in rows:
        ratio = statistics.median(wire) / statistics.median(base[2]) if wire and base[2] else 0
        print(f"{n:7d} | {ok:4d}/{calls:<5d} | {pct(wire, 0.5):10.0f} | {pct(wire, 0.9):6.0f} | "
              f"{ratio:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--calls", type=int, default=6, help="concurrent calls per run")
    args = parser.parse_args()
    asyncio.run(main(args.workers, args.calls))
