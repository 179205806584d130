"""OpenTelemetry traces: a `call` span for each call and a `turn` span for each agent turn.

Set `OTEL_EXPORTER_OTLP_ENDPOINT` (the standard variable: an OTLP/HTTP collector's base
URL, e.g. http://127.0.0.1:4318) and each call becomes a trace: a `call` span with the
call's id and SID, and a child `turn` span for every agent turn, from the end of the
caller's speech to the end of the agent's reply, with its latency stages as attributes.
Unset, nothing is traced and nothing is exported.

Why not pipecat's own tracing: its turn spans come from a turn-tracking observer that
sees every frame pushed in the pipeline (callwright turns it off for that cost), and
its service spans wrap pipecat's STT, LLM and TTS services, which the audio-LLM slot
does not use. callwright's turns already carry their stages (`AgentTurnFrame.timings`),
so a span is made from each as the recorder stores it: nothing per audio frame, and
spans are batched and exported by the SDK's own thread. Transcripts are never put in
spans: they are personal data, and traces are kept elsewhere and longer.

The tracer provider is callwright's own, not OpenTelemetry's global one. Where you set a
global one yourself (`opentelemetry-instrument`, say), the `call` span becomes a child of
the current span, the media stream's request span.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from loguru import logger
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Span

from callwright.agent.frames import AgentTurnFrame, CallerTurnFrame

TRACES_PATH = "/v1/traces"  # appended to the base URL, as the OTel specification says


class CallTracer:
    """Makes the spans of every call of a server and exports them over OTLP/HTTP.

    Args:
        endpoint: The collector's OTLP/HTTP base URL; `/v1/traces` is appended.
        service_name: The `service.name` resource attribute.
        exporter: Exports the spans instead of OTLP/HTTP to `endpoint` (tests, other
            protocols).
    """

    def __init__(self, *, endpoint: str = "", service_name: str = "callwright",
                 exporter: SpanExporter | None = None):
        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + TRACES_PATH)
        self._provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        # Batched: ending a span only appends it to a queue; a thread exports.
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        # Not made the global provider: FastAPI's own instrumentation would then trace every
        # request and dependency (a health check every few seconds) around the calls.
        self._tracer = self._provider.get_tracer("callwright")

    @contextmanager
    def call(self, *, call_id: int, call_sid: str | None = None) -> Iterator[CallTrace]:
        """The `call` span, current inside the block (tasks started in it inherit it).

        Args:
            call_id: The call's row id.
            call_sid: Its SID (CA… for Twilio, WR… for a browser call).

        Yields:
            The call's trace; give it each finished turn (`CallTrace.on_turn`).
        """
        attributes = {"callwright.call.id": call_id}
        if call_sid:
            attributes["callwright.call.sid"] = call_sid
        with self._tracer.start_as_current_span("call", attributes=attributes) as span:
            yield CallTrace(tracer=self._tracer, span=span)

    def shutdown(self) -> None:
        """Export what is still queued and stop; blocking (call it from a thread)."""
        self._provider.shutdown()


class CallTrace:
    """One call's trace: makes a `turn` span, child of the call's, for each agent turn.

    Args:
        tracer: The tracer spans come from.
        span: The call's span.
    """

    def __init__(self, *, tracer: trace.Tracer, span: Span):
        self._tracer = tracer
        self._context = trace.set_span_in_context(span)
        self._seq = 0

    def on_turn(self, frame: CallerTurnFrame | AgentTurnFrame) -> None:
        """Make the span of a finished agent turn; `callwright.turn.seq` is the turn's
        `seq` in the database (caller turns count too, and get no span).

        The frame is made as the turn ends, so its times count back from now: the span
        starts where the caller's speech ended (or at the agent's first audio when
        nothing was waited on, as for a greeting) and ends now.
        """
        self._seq += 1  # as the recorder numbers the turns it stores
        if isinstance(frame, CallerTurnFrame):
            return
        end_ns = time.time_ns()
        waited_ms = max(frame.latency_ms or 0, 0)
        start_ns = end_ns - (max(frame.end_ms - frame.start_ms, 0) + waited_ms) * 1_000_000
        attributes: dict[str, int | bool] = {
            "callwright.turn.seq": self._seq,
            "callwright.turn.interrupted": frame.interrupted,
        }
        if frame.latency_ms is not None:
            attributes["callwright.turn.latency_ms"] = frame.latency_ms
        for key, value in frame.timings.items():
            if isinstance(value, int | float):
                attributes[f"callwright.turn.{key}"] = value
        for key in ("llm_tokens_in", "llm_tokens_out"):
            if (value := getattr(frame, key)) is not None:
                attributes[f"callwright.turn.{key}"] = value
        span = self._tracer.start_span("turn", context=self._context, start_time=start_ns,
                                       attributes=attributes)
        span.end(end_time=end_ns)


def create_tracer(*, endpoint: str, service_name: str) -> CallTracer | None:
    """A `CallTracer` when `endpoint` is set, else None (no tracing at all).

    Args:
        endpoint: `OTEL_EXPORTER_OTLP_ENDPOINT`, the collector's OTLP/HTTP base URL.
        service_name: `OTEL_SERVICE_NAME`.
    """
    if not endpoint:
        return None
    where = urlsplit(endpoint)
    # Without any user:password in the URL: secrets stay out of the log.
    logger.info(f"Tracing calls to {where.scheme}://{where.hostname}"
                f"{f':{where.port}' if where.port else ''} as {service_name}")
    return CallTracer(endpoint=endpoint, service_name=service_name)

