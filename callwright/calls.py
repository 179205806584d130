"""Runs one call: a pipeline around a backend session, recorded to memory and to disk."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger
from pipecat.observers.base_observer import BaseObserver
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from callwright.agent.backend import AudioLLM, AudioLLMSession, BackendBusy
from callwright.agent.backends.cascade import EmbeddedCascade
from callwright.agent.context import CallContext, set_call_context
from callwright.agent.fallback import FallbackSession, SlotFallback
from callwright.agent.guard import FailedSession, GuardedSession
from callwright.agent.model_host import ModelHost
from callwright.agent.pipeline import PipelineStep, TurnTakingSettings, build_call_worker
from callwright.agent.transcript import TranscribingSession
from callwright.flows.policy import FlowPolicy
from callwright.flows.runtime import FlowRuntime
from callwright.flows.session import FlowSession
from callwright.memory.lifecycle import CallMemory
from callwright.memory.recorder import TurnListener, TurnRecorder
from callwright.memory.store import CallStore
from callwright.memory.writer import TurnWriter
from callwright.recording import CallRecording

if TYPE_CHECKING:
    from callwright.metrics import Metrics
    from callwright.tracing import CallTrace, CallTracer


class CallRunner:
    """Implements telephony's CallHandler for every transport."""

    def __init__(
        self,
        *,
        backend: AudioLLM,
        models: ModelHost,
        writer: TurnWriter,
        store: CallStore,
        turn_taking: TurnTakingSettings,
        fallback: EmbeddedCascade | None = None,
        memory: CallMemory | None = None,
        flows: FlowRuntime | None = None,
        data_dir: Path,
        record_calls: bool = True,
        read_emotion: bool = True,
        model_timeout_s: float = 20.0,
        steps: Sequence[PipelineStep] = (),
        metrics: Metrics | None = None,
        tracer: CallTracer | None = None,
    ):
        self._backend = backend
        self._models = models
        self._writer = writer
        self._store = store
        self._turn_taking = turn_taking
        self._fallback = fallback  # answers when the backend is busy or fails mid-call
        self._memory = memory
        self._flows = flows
        self._data_dir = data_dir
        self._record_calls = record_calls
        self._read_emotion = read_emotion  # each caller turn's emotion, for flows and delivery
        self._model_timeout_s = model_timeout_s
        self._steps = tuple(steps)
        self._metrics = metrics  # turn latencies and counts
        self._tracer = tracer  # a span per call and per agent turn, when tracing is on
        self.fallback: SlotFallback | None = None  # set once the backend can speak
        self.active = 0

    async def run_call(
        self,
        *,
        transport: BaseTransport,
        call_id: int,
        sample_rate: int,
        observers: Sequence[BaseObserver] = (),
        flow: str | None = None,
        control: Sequence[FrameProcessor] = (),
        record: bool | None = None,
        answered_by: str | None = None,
        variables: Mapping[str, Any] | None = None,
        call_sid: str | None = None,
    ) -> None:
        """Converse until the call ends.

        `flow` overrides the default flow; `control` sees the agent's frames once played
        (transfer, for the transport); `record` overrides the flow's `record:`, which
        overrides the RECORD_CALLS setting; `answered_by` (answering-machine detection on
        an outbound call) and the dialler's `variables` reach flows as `caller.<name>`;
        `call_sid` names the call in its trace.
        """
        tracing = (self._tracer.call(call_id=call_id, call_sid=call_sid) if self._tracer
                   else contextlib.nullcontext())
        with tracing as trace:
            await self._run_call(
                transport=transport, call_id=call_id, sample_rate=sample_rate,
                observers=observers, flow=flow, control=control, record=record,
                answered_by=answered_by, variables=variables, trace=trace,
            )

    async def _run_call(
        self,
        *,
        transport: BaseTransport,
        call_id: int,
        sample_rate: int,
        observers: Sequence[BaseObserver],
        flow: str | None,
        control: Sequence[FrameProcessor],
        record: bool | None,
        answered_by: str | None,
        variables: Mapping[str, Any] | None,
        trace: CallTrace | None,
    ) -> None:
        recording = None
        if record is None and self._flows is not None:
            record = await self._flows.records(flow)
        if self._record_calls if record is None else record:
            recording = CallRecording(
                data_dir=self._data_dir, call_id=call_id, sample_rate=sample_rate
            )
            try:
                await self._store.set_recording(call_id, recording.relative_path)
            except Exception as exc:  # the database may be away; the call goes on
                logger.warning(f"call {call_id}: recording path not stored ({exc!r})")
        # Before the greeting: who is calling and what we remember of them.
        context = await self._memory.begin_call(call_id) if self._memory else CallContext()
        context = _with_call_details(context, answered_by=answered_by, variables=variables)
        set_call_context(context)  # read by the backend's reply policy or flow
        redactor = self._memory.redactor if self._memory else None
        try:
            session = await self._open_session(call_id, context, flow)
        except Exception as exc:  # busy or broken: the caller still hears the fallback
            logger.error(f"call {call_id}: no model session ({exc!r})")
            session = FailedSession(exc)
        session = GuardedSession(session, event_timeout_s=self._model_timeout_s)
        listeners: list[TurnListener] = []  # told of each turn as it is stored
        if self._metrics:
            listeners.append(self._metrics.observe_turn)
        if trace:
            listeners.append(trace.on_turn)
        worker = build_call_worker(
            transport=transport,
            session=session,
            models=self._models,
            recorder=TurnRecorder(writer=self._writer, call_id=call_id, redactor=redactor,
                                  listeners=listeners),
            out_sample_rate=sample_rate,
            turn_taking=self._turn_taking,
            observers=observers,
            instructions=context.instructions,
            fallback=self.fallback,
            steps=self._build_steps(call_id),
            after_output=[*control, *([recording.processor] if recording else [])],
            mood=context.mood if self._read_emotion else None,
        )

        @transport.event_handler("on_client_disconnected")
        async def _on_disconnected(_transport, _client):
            logger.info(f"call {call_id}: peer disconnected")
            await worker.cancel()

        self.active += 1
        try:
            runner = WorkerRunner(handle_sigint=False)
            await runner.add_workers(worker)
            await runner.run()
        finally:
            self.active -= 1
            if recording:
                recording.close()
            if self._memory:
                self._memory.end_call(call_id)

    def _build_steps(self, call_id: int) -> list[FrameProcessor]:
        """The call's own instances of your pipeline steps; one that fails to build is left
        out (and logged) rather than failing the call."""
        built = []
        for step in self._steps:
            try:
                built.append(step(call_id))
            except Exception:
                logger.exception(f"call {call_id}: pipeline step {step!r} failed to build")
        return built

    async def _open_session(
        self, call_id: int, context: CallContext, flow: str | None
    ) -> AudioLLMSession:
        """The backend's session, driven by the flow, behind the fallback when there is one."""
        flow_run = None
        try:
            primary = await self._open_on(self._backend, call_id, context, flow)
            if isinstance(primary, FlowSession):
                flow_run = primary.run
            if self._fallback and not self._backend.capabilities.caller_text:
                primary = TranscribingSession(inner=primary, transcribe=self._fallback.transcribe)
        except BackendBusy as exc:
            if self._fallback is None:
                raise
            logger.warning(f"call {call_id}: {self._backend.name} busy, using the fallback: {exc}")
            primary = None
        if self._fallback is None:
            return primary
        open_fallback = None
        if flow_run is not None:
            # The flow goes on where the model left it, understood by the flow policy.
            cascade = self._fallback

            async def open_fallback() -> AudioLLMSession:
                return await cascade.open_session(policy=FlowPolicy(run=flow_run))

        return FallbackSession(primary=primary, fallback=self._fallback,
                               speak=self._fallback.synthesize, open_fallback=open_fallback)

    async def _open_on(
        self, backend: AudioLLM, call_id: int, context: CallContext, flow: str | None
    ) -> AudioLLMSession:
        if self._flows is None or not (flow or self._flows.default_flow):
            return await backend.open_session()  # the built-in receptionist
        return await self._flows.open_session(
            backend, call_id=call_id, caller=dict(context.caller), remember=context.remember,
            flow_name=flow, mood=context.mood,
        )


def _with_call_details(
    context: CallContext, *, answered_by: str | None, variables: Mapping[str, Any] | None
) -> CallContext:
    """What the dialler passed overrides what memory recalled (a name, say); a language
    model without a flow reads the variables in its instructions."""
    if not answered_by and not variables:
        return context
    caller = {**context.caller, **(variables or {})}
    if answered_by:
        caller["answered_by"] = answered_by
    instructions = context.instructions
    if variables:
        given = "; ".join(f"{name}: {value}" for name, value in variables.items())
        instructions = f"{instructions}\nDetails of this call, from whoever placed it: {given}"
    return replace(context, caller=caller, instructions=instructions.strip())
