"""Model workers joining, dying and draining under a live Twilio call.

A real `callwright serve` finds its model workers only through Redis. Two embedded-cascade
workers join while it runs; the one holding a call is killed and the call's next turn is
answered by the other, unheard (no apology); that one then drains and finishes the call.
"""

import asyncio
import os
import signal
import time

import httpx
import pytest
import redis.asyncio as redis

from callwright.agent.workers.registry import KEY
from tests.support import caller, speech_8k, start_model_worker, start_server, transcribe_8k

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("CALLWRIGHT_TEST_REDIS", "redis://127.0.0.1:6379/7")
SECRET = "model-pool-e2e-" + "z" * 30


async def model_workers(server) -> dict[str, str]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{server.url}/healthz")).json()["model_workers"]


async def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := await predicate():
            return result
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def test_workers_join_a_killed_ones_call_moves_unheard_and_a_drained_one_finishes(
        tmp_path, rest_standin):
    client = redis.Redis.from_url(REDIS_URL)
    try:
        await client.delete(KEY)
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable ({exc})")
    finally:
        await client.aclose()
    shared = {"REDIS_URL": REDIS_URL, "MODEL_WORKER_SECRET": SECRET}
    server = start_server(tmp_path, rest_url=rest_standin.base_url, AUDIO_LLM_BACKEND="workers",
                          CALLWRIGHT_SECRET_KEY="k" * 40, **shared)
    workers = []
    try:
        assert await model_workers(server) == {}  # none yet: calls would fall back
        workers = [start_model_worker(tmp_path, "--backend", "embedded", advertise=True,
                                      **shared) for _ in range(2)]
        joined = await wait_for(
            lambda: _all_up(server, {w.url for w in workers}), 10, "both workers to join")
        print(f"pool after joining: {joined}")

        twilio = caller(server)
        async with twilio.open_stream() as call:
            await call.wait_reply(1.0, 30)
            on = next(w for w in workers if w.health()["sessions"] == 1)
            spare = next(w for w in workers if w is not on)
            line = speech_8k("What time do you open on Sunday?")
            sent = await call.speak(line)
            await call.wait_reply(1.2, 30, after=sent + 1.0)
            normal = call.result.utterances[-1].started - sent

            on.process.send_signal(signal.SIGKILL)
            on.process.wait(10)
            sent = await call.speak(line)
            heard = await call.wait_speech_after(sent + 1.0, 30)
            assert heard is not None, "the call went silent when its worker died"
            await call.wait_reply(1.2, 30, after=sent + 1.0)
            moved = heard - sent
            reply = transcribe_8k(bytes(call.result.utterances[-1].pcm)).lower()
            print(f"reply after the kill: {reply!r}; first audio {moved:.2f} s after the line "
                  f"started (before the kill: {normal:.2f} s)")
            assert "problem" not in reply and "sorry" not in reply  # moved unheard
            assert spare.health()["sessions"] == 1
            assert "call moved to model worker" in server.log()
            states = await model_workers(server)
            assert not states.get(on.url, "gone").startswith("up")
            assert states[spare.url].startswith("up")

            # Drain: the worker leaves the pool at once (no new calls), its call goes on.
            spare.process.send_signal(signal.SIGTERM)
            await wait_for(lambda: _leaving(server, spare.url), 10, "the worker to leave")
            assert spare.health()["draining"] is True
            sent = await call.speak(speech_8k("Thank you, goodbye."))
            assert await call.wait_speech_after(sent + 1.0, 30) is not None
            assert spare.process.poll() is None
            await call.wait_reply(1.2, 30, after=sent + 1.0)
        spare.process.wait(20)  # it stops once its call is over
        assert "model worker stopping" in spare.log()
        call_record = await server.call_by_sid(twilio.call_sid)
        agent_turns = [t for t in call_record["turns"] if t["speaker"] == "agent"]
        assert len(agent_turns) >= 4 and all(t["text"] for t in agent_turns)
        await wait_for(lambda: _gone(server, spare.url), 10, "the drained worker to be gone")
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


async def _all_up(server, urls: set[str]) -> dict[str, str] | None:
    states = await model_workers(server)
    up = set(states) == urls and all(s.startswith("up") for s in states.values())
    return states if up else None


async def _leaving(server, url: str) -> bool:
    return (await model_workers(server)).get(url, "").startswith("leaving")


async def _gone(server, url: str) -> bool:
    return url not in await model_workers(server)
