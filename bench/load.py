"""Concurrent Twilio calls over loopback: how many the server holds at real time.

Starts `callwright serve`, keeps N simulated callers busy for a fixed time (each call:
greeting, one question, goodbye; then the next call), and prints calls held at real
time (no playout gap over 100 ms at the caller), voice-to-voice p50/p90, the server's
CPU and peak memory, and turns lost. Then 500 short calls back to back (10 at a time)
and the server's memory growth across them (leak check).

    python bench/load.py --calls 25 --seconds 60 --backend scripted
    python bench/load.py --calls 4 --seconds 60 --backend embedded
    python bench/load.py --search --calls 10 --seconds 30 --short-calls 0

`--search` first measures one call alone (the baseline the ratios are against), then
grows the number of callers by half until a step fails and bisects, in at most
`--max-steps` steps of `--seconds` each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callwright.testing.twilio_emulator import TwilioCaller
from callwright.testing.twilio_rest import TwilioRestStandIn
from callwright.testing.twilio_stream import CallResult, StreamSession
from tests.support import ACCOUNT_SID, AUTH_TOKEN, caller, speech_8k, start_server  # noqa: E402

GAP_LIMIT_MS = 100.0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else 0.0


class LoopLag:
    """How late this (the callers') event loop wakes: a late client would fake gaps."""

    def __init__(self, period_s: float = 0.01):
        self.lags_ms: list[float] = []
        self._period = period_s
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(self._period)
            self.lags_ms.append((time.monotonic() - t - self._period) * 1000)

    def stop(self) -> str:
        self._task.cancel()
        return f"max {max(self.lags_ms, default=0):.0f} ms, p99 {pct(self.lags_ms, 0.99):.0f} ms"


class Sampler:
    """CPU and peak RSS of the server and its model processes while the load runs."""

    def __init__(self, pid: int):
        self.server = psutil.Process(pid)
        self.models = self.server.children(recursive=True)
        self.peak_rss = 0
        self._task = asyncio.create_task(self._run())
        self._cpu0 = [self._cpu(p) for p in (self.server, *self.models)]
        self._t0 = time.monotonic()

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    async def _run(self) -> None:
        while True:
            self.peak_rss = max(self.peak_rss, sum(
                p.memory_info().rss for p in (self.server, *self.models)
            ))
            await asyncio.sleep(0.5)

    def stop(self) -> tuple[float, float]:
        """Cores used on average: by the server's own process, by its model processes."""
        self._task.cancel()
        elapsed = time.monotonic() - self._t0
        used = [self._cpu(p) - c0 for p, c0 in zip((self.server, *self.models), self._cpu0,
                                                     strict=True)]
        return used[0] / elapsed, sum(used[1:]) / elapsed


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    calls: int  # concurrent callers
    placed: int  # calls made in the time
    held: int
    worst_gap_ms: float
    p50_ms: float
    p90_ms: float
    cores: float
    lost: int

    @property
    def holds(self) -> bool:
        """Every call at real time and every turn stored."""
        return self.placed > 0 and self.held == self.placed and self.lost == 0


async def load(server, calls: int, seconds: float, lines: list[bytes]) -> LoadResult:
    deadline = time.monotonic() + seconds
    results: list[tuple[str, CallResult]] = []
    failed: list[str] = []

    async def one_caller(i: int) -> None:
        await asyncio.sleep(i * 0.2)  # stagger, as real arrivals are
        while time.monotonic() < deadline:
            twilio = caller(server, from_number=f"+1555020{i:04d}")
            try:
                results.append((twilio.call_sid, await twilio.call(lines, end_timeout_s=10)))
            except Exception as exc:  # a webhook that timed out, say: the call failed
                print(f"  call {twilio.call_sid} failed: {exc!r}")
                failed.append(twilio.call_sid)

    stalls0 = (await server.api("/healthz")).json()["loop_stalls"]
    sampler = Sampler(server.process.pid)
    client = psutil.Process()
    client_cpu0 = sum(client.cpu_times()[:2])
    lag = LoopLag()
    started = time.monotonic()
    await asyncio.gather(*(one_caller(i) for i in range(calls)))
    server_cores, model_cores = sampler.stop()
    cores = server_cores + model_cores
    client_lag = lag.stop()
    client_cores = (sum(client.cpu_times()[:2]) - client_cpu0) / (time.monotonic() - started)
    health = (await server.api("/healthz")).json()
    await asyncio.sleep(2)  # the last turns reach the database
    held = sum(1 for _, r in results if r.max_gap_ms <= GAP_LIMIT_MS and not r.errors)
    latencies = [ms for _, r in results for ms in r.latencies_ms]
    lost = 0
    for call_sid, result in results:
        turns = (await server.call_by_sid(call_sid))["turns"]
        expected = 1 + 2 * len(result.latencies_ms)  # greeting, then a line and its reply
        lost += max(0, expected - len(turns))
    placed = len(results) + len(failed)
    print(f"{calls} concurrent callers for {seconds:.0f} s: {placed} calls, {len(failed)} failed")
    print(f"  held at real time (no gap > {GAP_LIMIT_MS:.0f} ms): {held}/{placed}; "
          f"worst gap {max((r.max_gap_ms for _, r in results), default=0):.0f} ms")
    print(f"  voice-to-voice p50 {pct(latencies, 0.5):.0f} ms, p90 {pct(latencies, 0.9):.0f} ms "
          f"({len(latencies)} replies)")
    print(f"  server CPU {cores:.2f} cores ({server_cores:.2f} event loop's process, "
          f"{model_cores:.2f} its child processes: models, multiprocessing's tracker), "
          f"peak RSS {sampler.peak_rss / 2**20:.0f} MB in all")
    print(f"  server event loop: {health['loop_stalls'] - stalls0} stalls over 100 ms "
          f"(worst since start {health['worst_loop_lag_ms']} ms); lag over the last minute "
          f"p50 {health['loop_lag_ms']['p50']} ms, p99 {health['loop_lag_ms']['p99']} ms")
    print(f"  callers (this process): CPU {client_cores:.2f} cores, loop lag {client_lag}")
    print(f"  turns lost: {lost}", flush=True)
    return LoadResult(
        calls=calls, placed=placed, held=held, lost=lost, cores=cores,
        worst_gap_ms=max((r.max_gap_ms for _, r in results), default=0.0),
        p50_ms=pct(latencies, 0.5), p90_ms=pct(latencies, 0.9),
    )


async def search(server, args: argparse.Namespace, lines: list[bytes]) -> None:
    """Baseline at one call, then the most concurrent calls that hold: grow by half until
    a step fails, then bisect; at most `--max-steps` steps of `--seconds` each."""
    base = await load(server, 1, args.seconds, lines)
    passed: list[LoadResult] = []
    failed: LoadResult | None = None
    n = args.calls
    tried: set[int] = set()
    for _ in range(args.max_steps):
        if n in tried:
            break
        tried.add(n)
        result = await load(server, n, args.seconds, lines)
        if result.holds:
            passed.append(result)
        else:
            failed = result if failed is None or n < failed.calls else failed
        low = max((r.calls for r in passed), default=0)
        high = failed.calls if failed else None
        if high is None:
            n = max(n + 1, int(n * 1.5))
        elif high - low <= max(1, low // 10):
            break
        else:
            n = (low + high) // 2 if low else max(1, high // 2)
    print(f"\nbaseline (1 call): v2v p50 {base.p50_ms:.0f} ms, p90 {base.p90_ms:.0f} ms, "
          f"server CPU {base.cores:.2f} cores")
    for r in sorted([*passed, *([failed] if failed else [])], key=lambda r: r.calls):
        cpu = r.cores / max(base.cores, 1e-3)
        print(f"  {r.calls:3d} calls: {'holds' if r.holds else 'FAILS'} ({r.held}/{r.placed} at "
              f"real time, {r.lost} turns lost); v2v p50 x{r.p50_ms / max(base.p50_ms, 1):.2f}, "
              f"p90 x{r.p90_ms / max(base.p90_ms, 1):.2f}; CPU x{cpu:.1f}")
    best = max((r.calls for r in passed), default=0)
    print(f"highest N that holds real time ({args.backend}): {best}"
          f"{f' (fails at {failed.calls})' if failed else ' (no failure found)'}")


async def short_calls(server, total: int, parallel: int = 10) -> None:
    process = psutil.Process(server.process.pid)
    processes = [process, *process.children(recursive=True)]  # with the model processes
    started_calls = finished = 0
    rss: list[int] = []

    async def one() -> None:
        twilio = caller(server)
        url, custom = TwilioCaller.parse_twiml((await twilio.post_webhook()).text)
        async with twilio.connect(url) as ws:
            session = StreamSession(ws, twilio, CallResult(call_sid=twilio.call_sid,
                                                           stream_sid=twilio.stream_sid,
                                                           twiml=""))
            await session.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
            await session.send(twilio.start_message(custom))
            session.begin()
            await asyncio.sleep(1.0)
            await session.send({"event": "stop", "sequenceNumber": session.seq(),
                                "streamSid": twilio.stream_sid,
                                "stop": {"accountSid": ACCOUNT_SID, "callSid": twilio.call_sid}})
            await session.stop()

    async def worker() -> None:
        nonlocal started_calls, finished
        while started_calls < total:
            started_calls += 1
            await one()
            finished += 1
            if finished % 50 == 0:
                rss.append(sum(p.memory_info().rss for p in processes))

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(parallel)))
    print(f"{total} short calls in {time.monotonic() - started:.0f} s: server RSS (with its "
          f"model processes) after 50 "
          f"{rss[0] / 2**20:.0f} MB, after {total} {rss[-1] / 2**20:.0f} MB "
          f"(growth {(rss[-1] - rss[0]) / 2**20:+.0f} MB); by 50s: "
          + ", ".join(f"{r / 2**20:.0f}" for r in rss))


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    rest = TwilioRestStandIn(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN)
    await rest.serve()
    server = start_server(Path(tempfile.mkdtemp(prefix="cw-load-")), rest_url=rest.base_url,
                          database_url=args.database_url,
                          AUDIO_LLM_BACKEND=args.backend, MAX_CALLS=args.max_calls,
                          MODEL_PROCESSES=args.model_processes,
                          LOG_LEVEL="WARNING", RECORD_CALLS=int(not args.no_record))
    try:
        # Twilio's edge has CPUs of its own. The callers here share two cores with the
        # server, and a caller that runs late would log holes the server never made, so
        # this (measuring) thread outranks the server when root may raise it (~0.1 cores).
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        except PermissionError:
            print("callers run at normal priority: holes may be the callers' own lateness")
        lines = [speech_8k("What time do you open on Sunday?"), speech_8k("No thanks, goodbye.")]
        if args.search:
            await search(server, args, lines)
        else:
            await load(server, args.calls, args.seconds, lines)
        if args.short_calls:
            await short_calls(server, args.short_calls)
        print(f"load average at the end {os.getloadavg()[0]:.2f}")
    finally:
        server.stop()
        await rest.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--backend", choices=["embedded", "scripted"], default="scripted")
    parser.add_argument("--short-calls", type=int, default=500)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--search", action="store_true",
                        help="find the most concurrent calls that hold, from --calls up")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--max-calls", type=int, default=200, help="the server's MAX_CALLS")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    parser.add_argument("--model-processes", type=int, default=2, help="the server's")
    asyncio.run(main(parser.parse_args()))
