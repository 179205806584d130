"""Observability on a real server: Prometheus /metrics, JSON logs and OTLP traces of a real call.

One `callwright serve` (LOG_FORMAT=json, METRICS_TOKEN, MAX_CALLS=1, traces to an
in-process OTLP/HTTP collector) takes one call over the Twilio protocol; a second call
that rings meanwhile is refused. The tests then read what the server exposed about it.
"""

import asyncio
import json
import re
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from callwright.metrics import Metrics
from callwright.metrics import create_router as metrics_router
from callwright.tracing import create_tracer
from tests.otlp_standin import OtlpStandIn
from tests.support import ROOT, Server, caller, speech_8k, start_server

pytestmark = pytest.mark.e2e

TOKEN = "metrics-token-" + "5" * 20
NUMBER = "+15550100089"


@dataclass
class Observed:
    server: Server
    otlp: OtlpStandIn
    call_sid: str
    call: dict  # as the API stores it, turns included
    refused: httpx.Response  # the second call's webhook, while the first ran
    forged: httpx.Response  # a webhook with a bad signature


async def _ended(server: Server, call_sid: str) -> dict:
    for _ in range(100):
        call = await server.call_by_sid(call_sid)
        if call["ended_at"]:
            return call
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_sid} never ended")


@pytest.fixture(scope="module")
async def observed(tmp_path_factory, rest_standin):
    otlp = OtlpStandIn()
    server = start_server(
        tmp_path_factory.mktemp("observed"), rest_url=rest_standin.base_url,
        LOG_FORMAT="json", METRICS_TOKEN=TOKEN, MAX_CALLS=1,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url, OTEL_BSP_SCHEDULE_DELAY=200,
    )
    try:
        twilio = caller(server, from_number=NUMBER)
        async with twilio.open_stream() as session:
            await session.wait_reply(1.0, 25)  # the greeting
            sent = await session.speak(speech_8k("What time do you open on Sunday?"))
            await session.wait_reply(1.0, 25, after=sent)
            # The only line is taken: the next caller hears busy.
            refused = await caller(server, from_number="+15550100090").post_webhook()
        async with httpx.AsyncClient() as client:
            forged = await client.post(
                f"{server.url}/twilio/voice", data={"CallSid": "CA" + "0" * 32, "From": NUMBER},
                headers={"X-Twilio-Signature": "forged"})
        call = await _ended(server, twilio.call_sid)
        # A number in a request path, as an operator looking a caller up sends it: the
        # access log has it.
        assert (await server.api(f"/api/callers/{NUMBER}")).status_code in (200, 404)
        yield Observed(server=server, otlp=otlp, call_sid=twilio.call_sid, call=call,
                       refused=refused, forged=forged)
    finally:
        server.stop()
        otlp.close()


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


async def _scrape(server: Server, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        return await client.get(f"{server.url}/metrics", headers=headers)


async def test_metrics_count_the_call_its_turns_and_the_refusal(observed):
    assert "busy" in observed.refused.text and observed.forged.status_code == 403
    response = await _scrape(observed.server)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = _samples(response.text)

    def value(name: str, **labels) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("callwright_calls_admitted_total", transport="twilio") == 1
    assert value("callwright_calls_refused_total", transport="twilio", reason="busy") == 1
    assert value("callwright_calls_ended_total", transport="twilio", status="completed",
                 reason="caller-hangup") == 1
    assert value("callwright_twilio_rejected_total", endpoint="voice", reason="signature") == 1
    assert value("callwright_calls_active") == 0
    assert value("callwright_lines_in_use") == 0 and value("callwright_lines_max") == 1
    assert value("callwright_draining") == 0

    turns = observed.call["turns"]
    agent_turns = [t for t in turns if t["speaker"] == "agent"]
    assert [t["speaker"] for t in turns][:3] == ["agent", "caller", "agent"], turns
    assert value("callwright_turns_total", speaker="agent") == len(agent_turns)
    assert value("callwright_turns_total", speaker="caller") == len(turns) - len(agent_turns)
    # The answer to the caller's line has a voice-to-voice latency and its stages.
    answered = [t for t in agent_turns if t["latency_ms"] is not None]
    assert value("callwright_turn_latency_seconds_count") == len(answered) >= 1
    total_ms = sum(t["latency_ms"] for t in answered)
    assert value("callwright_turn_latency_seconds_sum") == pytest.approx(total_ms / 1000)
    assert value("callwright_turn_latency_seconds_bucket", le="+Inf") == len(answered)
    for stage in ("end_of_turn", "asr", "reply", "tts_first_audio"):
        assert value("callwright_turn_stage_seconds_count", stage=stage) >= 1, stage

    # Levels read at scrape time: the event loop's heartbeats, the queues, the process.
    assert value("callwright_event_loop_lag_seconds_count") > 100  # 50 a second
    assert value("callwright_model_queue_depth") == 0
    assert value("callwright_model_requests_in_flight") == 0
    assert value("callwright_db_write_buffer_depth", writer="turns") == 0
    assert value("callwright_db_write_dropped_total", writer="turns") == 0
    assert ("callwright_event_loop_stalls_total", ()) in samples
    assert value("process_resident_memory_bytes") > 0


async def test_metrics_want_the_token(observed):
    assert (await _scrape(observed.server, token=None)).status_code == 401
    refused = await _scrape(observed.server, token="not-" + TOKEN)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "callwright_" not in refused.text
    assert (await _scrape(observed.server)).status_code == 200


async def test_the_dashboard_reads_what_the_server_exposes(observed):
    """deploy/grafana/callwright.json queries only metrics a worker exposes, and shows
    every callwright_* metric there is."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    families = list(text_string_to_metric_families((await _scrape(observed.server)).text))
    exposed = {family.name + suffix for family in families
               for suffix in suffixes.get(family.type, ("",))}
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "callwright.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"]
             for target in panel.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\b(?:callwright|process)_\w+", expr)}
    assert used and used <= exposed, used - exposed
    ours = {family.name for family in families if family.name.startswith("callwright_")}
    assert {name for name in ours if not any(u.startswith(name) for u in used)} == set()


def test_metrics_are_off_without_a_token():
    app = FastAPI()
    app.include_router(metrics_router(metrics=Metrics(), token=None))
    response = TestClient(app).get("/metrics", headers={"Authorization": "Bearer x"})
    assert response.status_code == 404 and "METRICS_TOKEN" in response.text
    assert create_tracer(endpoint="", service_name="callwright") is None  # nor any traces


async def test_a_trace_per_call_with_a_span_per_agent_turn(observed):
    agent_turns = [t for t in observed.call["turns"] if t["speaker"] == "agent"]

    def complete(spans) -> bool:
        return (any(s.name == "call" for s in spans)
                and sum(s.name == "turn" for s in spans) >= len(agent_turns))

    spans = await observed.otlp.wait_for(complete)
    calls = [s for s in spans if s.name == "call"]
    assert len(calls) == 1, spans
    assert {s.name for s in spans} == {"call", "turn"}  # no request spans around them
    call = calls[0]
    assert call.attributes["callwright.call.sid"] == observed.call_sid
    assert call.attributes["callwright.call.id"] == observed.call["id"]
    assert call.resource["service.name"] == "callwright"
    assert call.parent_span_id == ""  # a trace of its own

    turns = sorted((s for s in spans if s.name == "turn"), key=lambda s: s.start_ns)
    assert len(turns) == len(agent_turns), [s.attributes for s in turns]
    for span, stored in zip(turns, agent_turns, strict=True):
        assert (span.trace_id, span.parent_span_id) == (call.trace_id, call.span_id)
        assert span.attributes["callwright.turn.seq"] == stored["seq"]
        assert call.start_ns - 50_000_000 <= span.start_ns < span.end_ns <= call.end_ns
        assert span.attributes.get("callwright.turn.latency_ms") == stored["latency_ms"]
        for key, ms in (stored["timings"] or {}).items():
            assert span.attributes[f"callwright.turn.{key}"] == ms
        # No words in a span: transcripts stay in the database.
        assert not any(isinstance(v, str) and stored["text"][:12] in v
                       for v in span.attributes.values())
    answer = next(s for s in turns if "callwright.turn.latency_ms" in s.attributes)
    assert "callwright.turn.asr_ms" in answer.attributes


async def test_json_logs_carry_the_call_and_mask_numbers(observed):
    log = observed.server.log()
    entries = []
    for line in log.splitlines():
        entry = json.loads(line)  # every line: one JSON object
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        entries.append(entry)
    in_call = [e for e in entries if e.get("call_sid") == observed.call_sid]
    messages = " | ".join(e["message"] for e in in_call)
    assert "stream" in messages and "ended (caller-hangup)" in messages, messages
    # Logged from the call's pipeline tasks, not only from the stream handler.
    assert {e["logger"] for e in in_call} - {"callwright.telephony.twilio.routes"}, messages
    # From the stream on, the call's row id too.
    assert {e["call_id"] for e in in_call if "call_id" in e} == {observed.call["id"]}
    assert "call_id" in next(e for e in in_call if "ended (caller-hangup)" in e["message"])
    # The number reached the log (the webhook's "answering" line, an access log's path)
    # only masked.
    assert NUMBER not in log and NUMBER[1:] not in log and "%2B" + NUMBER[1:] not in log
    assert "…0089" in messages
    assert any("/api/callers/…0089" in e["message"] for e in entries), "no access log line"
