"""Runs one call: a pipeline around a backend session, recorded to memory."""

from __future__ import annotations

from loguru import logger
from pipecat.transports.base_transport import BaseTransport
from pipecat.workers.runner import WorkerRunner

from agent.backend import AudioLLM
from agent.models import ModelPaths
from agent.pipeline import TurnTakingSettings, build_call_worker
from flows.runtime import FlowRuntime
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
        turn_taking: TurnTakingSettings,
        flows: FlowRuntime | None = None,
        store: CallStore | None = None,
    ):
        self._backend = backend
        self._models = models
        self._writer = writer
        self._turn_taking = turn_taking
        self._flows = flows
        self._store = store
        self.active = 0

    async def run_call(self, *, transport: BaseTransport, call_id: int, sample_rate: int) -> None:
        session = await self._open_session(call_id)
        worker = build_call_worker(
            transport=transport,
            session=session,
            models=self._models,
            recorder=TurnRecorder(writer=self._writer, call_id=call_id),
            out_sample_rate=sample_rate,
            turn_taking=self._turn_taking,
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

    async def _open_session(self, call_id: int):
        if self._flows is None:
            return await self._backend.open_session()
        caller = {}
        if self._store is not None:
            call = await self._store.get_call(call_id)
            caller = {"number": call.from_number} if call and call.from_number else {}
        return await self._flows.open_session(self._backend, call_id=call_id, caller=caller)
