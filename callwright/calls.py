"""Runs one call: a pipeline around a backend session, recorded to memory and to disk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from loguru import logger
from pipecat.observers.base_observer import BaseObserver
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from agent.backend import AudioLLM
from agent.guard import FailedSession, GuardedSession
from agent.models import ModelPaths
from agent.pipeline import TurnTakingSettings, build_call_worker
from agent.slot import SlotFallback
from callwright.recording import CallRecording
from memory.recorder import TurnRecorder
from memory.store import CallStore
from memory.writer import TurnWriter


class CallRunner:
    """Implements telephony's CallHandler for every transport."""

    def __init__(
        self,
        *,
        backend: AudioLLM,
        models: ModelPaths,
        writer: TurnWriter,
        store: CallStore,
        turn_taking: TurnTakingSettings,
        data_dir: Path,
        record_calls: bool = True,
        model_timeout_s: float = 20.0,
    ):
        self._backend = backend
        self._models = models
        self._writer = writer
        self._store = store
        self._turn_taking = turn_taking
        self._data_dir = data_dir
        self._record_calls = record_calls
        self._model_timeout_s = model_timeout_s
        self.fallback: SlotFallback | None = None  # set once the backend can speak
        self.active = 0

    async def run_call(
        self,
        *,
        transport: BaseTransport,
        call_id: int,
        sample_rate: int,
        observers: Sequence[BaseObserver] = (),
        control: Sequence[FrameProcessor] = (),
        record: bool | None = None,
    ) -> None:
        """Converse until the call ends.

        `control` sees the agent's frames once played (transfer, for the transport);
        `record` overrides the RECORD_CALLS setting for this call.
        """
        recording = None
        if self._record_calls if record is None else record:
            recording = CallRecording(
                data_dir=self._data_dir, call_id=call_id, sample_rate=sample_rate
            )
            try:
                await self._store.set_recording(call_id, recording.relative_path)
            except Exception as exc:  # the database may be away; the call goes on
                logger.warning(f"call {call_id}: recording path not stored ({exc!r})")
        try:
            session = await self._backend.open_session()
        except Exception as exc:  # busy or broken: the caller still hears the fallback
            logger.error(f"call {call_id}: no model session ({exc!r})")
            session = FailedSession(exc)
        session = GuardedSession(session, event_timeout_s=self._model_timeout_s)
        worker = build_call_worker(
            transport=transport,
            session=session,
            models=self._models,
            recorder=TurnRecorder(writer=self._writer, call_id=call_id),
            out_sample_rate=sample_rate,
            turn_taking=self._turn_taking,
            observers=observers,
            fallback=self.fallback,
            after_output=[*control, *([recording.processor] if recording else [])],
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
