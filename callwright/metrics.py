"""Prometheus metrics: calls, turn latency, the model queue, the event loop, the database writer.

One `Metrics` per server process, with its own registry: each worker process is scraped
on its own, so no multiprocess mode is needed. What is counted as it happens (calls
admitted and refused, turns, failures) costs a counter increment or a histogram
observation on the event loop; what is a level (calls active, queue depths) is read
from the objects that hold it when Prometheus scrapes, so nothing is updated per
audio frame.

`/metrics` wants `Authorization: Bearer <METRICS_TOKEN>` and is off (404) while no token
is set: the server answers on the public URL Twilio reaches, and call volumes and
failure rates are not for anyone who finds it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import prometheus_client
from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from callwright.agent.frames import AgentTurnFrame, CallerTurnFrame

if TYPE_CHECKING:
    from callwright.agent.model_host import ModelHost
    from callwright.memory.writer import OrderedWriter
    from callwright.telephony.lines import Lines
    from callwright.watchdog import LoopWatchdog

# The `_created` series double every counter's and histogram's series; Prometheus does not
# read them unless asked to.
prometheus_client.disable_created_metrics()

# Voice-to-voice latency: a good call is under a second, a bad one is several.
LATENCY_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 10.0)
# One stage of a turn (end of turn, ASR, reply, first audio): tens to hundreds of ms.
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0)
# How late the event loop runs: a few ms is normal, 20 ms is audible, 100 ms is a stall.
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class Metrics:
    """The server's metrics, in a registry of their own.

    Counters and histograms are attributes, updated where things happen; levels are read
    at scrape time from the objects given to `watch()`.

    Args:
        registry: Where the metrics are registered; a new one by default.
    """

    def __init__(self, *, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this worker
        self.registry.register(GC_COLLECTOR)
        r = self.registry
        self.calls_admitted = Counter(
            "callwright_calls_admitted", "Calls taken, by transport.", ["transport"], registry=r
        )
        self.calls_refused = Counter(
            "callwright_calls_refused",
            "Calls turned away: busy (every line in use), draining (shutting down), "
            "rate_limited (browser offers), by transport.",
            ["transport", "reason"], registry=r,
        )
        self.calls_ended = Counter(
            "callwright_calls_ended", "Calls that ended, by transport, status and end reason.",
            ["transport", "status", "reason"], registry=r,
        )
        self.turns = Counter(
            "callwright_turns", "Finished turns, by speaker (caller, agent).", ["speaker"],
            registry=r,
        )
        self.turn_latency = Histogram(
            "callwright_turn_latency_seconds",
            "Voice-to-voice latency: end of the caller's speech to the agent's first audio.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.turn_stage = Histogram(
            "callwright_turn_stage_seconds",
            "Time an agent turn spent in each stage (end_of_turn, asr, reply, "
            "tts_first_audio, llm_first_token).",
            ["stage"], buckets=STAGE_BUCKETS, registry=r,
        )
        self.loop_lag = Histogram(
            "callwright_event_loop_lag_seconds",
            "How late the event loop ran a 20 ms heartbeat; every call's audio waits as long.",
            buckets=LAG_BUCKETS, registry=r,
        )
        self.flow_action_failures = Counter(
            "callwright_flow_action_failures",
            "Flow actions that failed (webhook: an outgoing HTTP request; function: a "
            "Python handler).",
            ["action"], registry=r,
        )
        self.twilio_rejected = Counter(
            "callwright_twilio_rejected",
            "Requests on the Twilio endpoints refused: bad signature, no CallSid, a replayed "
            "webhook, a stream with a bad token or no start.",
            ["endpoint", "reason"], registry=r,
        )
        self.webhook_deliveries = Counter(
            "callwright_webhook_deliveries",
            "Business webhook attempts, by result: delivered, retried (to be tried again), "
            "dead (no more attempts; replayable from the admin site).",
            ["result"], registry=r,
        )

    def watch(
        self,
        *,
        calls_active: Callable[[], int],
        lines: Lines | None = None,
        models: ModelHost | None = None,
        writers: Sequence[OrderedWriter] = (),
        watchdog: LoopWatchdog | None = None,
        model_workers: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        """Read these objects' levels at every scrape; call once.

        Args:
            calls_active: The number of call pipelines running.
            lines: The admission of Twilio calls: lines in use, the maximum, draining.
            models: The embedded models' host: requests waiting for a model process.
            writers: The database writers: records buffered, records dropped.
            watchdog: The event-loop watchdog: stalls counted.
            model_workers: The model-worker pool's workers by state
                (`WorkerPool.state_counts`).
        """
        self.registry.register(_Levels(calls_active=calls_active, lines=lines, models=models,
                                       writers=writers, watchdog=watchdog,
                                       model_workers=model_workers))

    def observe_turn(self, frame: CallerTurnFrame | AgentTurnFrame) -> None:
        """Count a finished turn; for the agent's, observe its latency and stages."""
        if isinstance(frame, CallerTurnFrame):
            self.turns.labels("caller").inc()
            return
        self.turns.labels("agent").inc()
        if frame.latency_ms is not None and frame.latency_ms >= 0:
            self.turn_latency.observe(frame.latency_ms / 1000)
        for key, ms in frame.timings.items():
            if isinstance(ms, int | float) and ms >= 0:
                self.turn_stage.labels(key.removesuffix("_ms")).observe(ms / 1000)

    def observe_loop_lag(self, lag_s: float) -> None:
        """One heartbeat's lateness (`LoopWatchdog`'s `on_lag`)."""
        self.loop_lag.observe(max(lag_s, 0.0))

    def render(self) -> bytes:
        """The registry in Prometheus' text format."""
        return generate_latest(self.registry)


class _Levels(Collector):
    """Gauges read from their owners at scrape time."""

    def __init__(self, *, calls_active: Callable[[], int], lines: Lines | None,
                 models: ModelHost | None, writers: Sequence[OrderedWriter],
                 watchdog: LoopWatchdog | None,
                 model_workers: Callable[[], Mapping[str, int]] | None):
        self._model_workers = model_workers
        self._calls_active = calls_active
        self._lines = lines
        self._models = models
        self._writers = writers
        self._watchdog = watchdog

    def describe(self) -> Iterable[Metric]:
        return []  # no description up front: collect() reads live objects

    def collect(self) -> Iterable[Metric]:
        yield _gauge("callwright_calls_active", "Call pipelines running now (every transport).",
                     self._calls_active())
        if lines := self._lines:
            yield _gauge("callwright_lines_in_use",
                         "Twilio lines in use: running calls plus answered ones whose stream "
                         "is still due.", lines.in_use)
            yield _gauge("callwright_lines_max", "Twilio calls this worker takes at once "
                         "(MAX_CALLS).", lines.max_calls)
            yield _gauge("callwright_draining", "1 while shutting down (new calls hear busy).",
                         int(lines.draining))
        if models := self._models:
            yield _gauge("callwright_model_requests_in_flight",
                         "Embedded-model requests (ASR, TTS, Smart Turn, voice prints) sent and "
                         "not yet answered.", models.in_flight)
            yield _gauge("callwright_model_queue_depth",
                         "Embedded-model requests waiting for a free model process.",
                         models.queued)
        if self._writers:
            depth = GaugeMetricFamily("callwright_db_write_buffer_depth",
                                      "Records buffered for the database, by writer.",
                                      labels=["writer"])
            dropped = CounterMetricFamily("callwright_db_write_dropped",
                                          "Records dropped from a full write buffer, by writer.",
                                          labels=["writer"])
            for writer in self._writers:
                depth.add_metric([writer.what], writer.depth)
                dropped.add_metric([writer.what], writer.dropped)
            yield depth
            yield dropped
        if self._model_workers:
            states = GaugeMetricFamily("callwright_model_workers",
                                       "Model workers in the pool, by state (up, down, "
                                       "draining, leaving, loading, unprobed).", labels=["state"])
            for state, count in self._model_workers().items():
                states.add_metric([state], count)
            yield states
        if self._watchdog:
            yield CounterMetricFamily("callwright_event_loop_stalls",
                                      "Heartbeats over 100 ms late.", self._watchdog.stalls)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def create_router(*, metrics: Metrics, token: str | None) -> APIRouter:
    """`GET /metrics` for Prometheus, behind a bearer token.

    Args:
        metrics: What to expose.
        token: The bearer token a scrape must present; None turns `/metrics` off (404).
    """
    router = APIRouter()
    expected = token.encode() if token else None

    @router.get("/metrics", include_in_schema=False)
    async def scrape(request: Request) -> Response:
        if expected is None:
            return Response("metrics are off: set METRICS_TOKEN\n", status_code=404,
                            media_type="text/plain")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 expected):
            return Response("a bearer token (METRICS_TOKEN) is required\n", status_code=401,
                            media_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
        # Rendered on the event loop: the levels are read from objects the loop owns, and
        # a scrape takes about a millisecond.
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
