"""Flows in a running server: which flow a call runs, and the session that runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from loguru import logger

from callwright.agent.backend import AudioLLM, AudioLLMSession
from callwright.agent.context import Remember
from callwright.agent.emotion import CallerMood
from callwright.flows.engine import FlowRun
from callwright.flows.library import FlowLibrary
from callwright.flows.policy import FlowPolicy
from callwright.flows.recording import FlowRecorder, FlowStore
from callwright.flows.session import FlowSession
from callwright.flows.understanding import SentenceEncoder


class FlowRuntime:
    """A server's flows: the library of flow files, and a run or a session for each call.

    Args:
        directory: The directory of flow files.
        default_flow: The flow a call runs when it names none; empty: no default.
        store: Where every run's state is recorded.
        on_action_failed: Told the type of every flow action that fails ("webhook",
            "function"): a metric's count, say.
    """

    def __init__(
        self,
        *,
        directory: Path,
        default_flow: str,
        store: FlowStore,
        on_action_failed: Callable[[str], None] | None = None,
    ):
        self.library = FlowLibrary(directory)
        self.default_flow = default_flow
        self._store = store
        self._on_action_failed = on_action_failed

    async def load(self) -> None:
        """Check the default flow (if any) and load the intent model before the first call."""
        if self.default_flow:
            flow = await asyncio.to_thread(self.library.get, self.default_flow)
            logger.info(f"Flow {flow.spec.name} version {flow.version} from {flow.source}")
        await asyncio.to_thread(SentenceEncoder.encode, ["warm up"])

    async def records(self, flow_name: str | None = None) -> bool | None:
        """Whether the flow (`flow_name`, else the default) wants its calls recorded;
        None when it does not say, or has no flow to ask."""
        name = flow_name or self.default_flow
        if not name:
            return None
        try:
            flow = await asyncio.to_thread(self.library.get, name)
        except Exception:  # opening the call's session reports a missing or broken flow
            return None
        return flow.spec.record

    async def new_run(
        self,
        *,
        call_id: int,
        caller: dict | None = None,
        remember: Remember | None = None,
        flow_name: str | None = None,
        mood: CallerMood | None = None,
    ) -> FlowRun:
        """A new run of a flow for a call, on its current version, recording to the store.

        Args:
            call_id: The call whose record the run's state goes to.
            caller: What is known about the caller (`caller.*`).
            remember: Where `remember` actions write.
            flow_name: The flow to run; None: the default flow.
            mood: How the caller has sounded (`caller.emotion`, `call.*`).

        Raises:
            FileNotFoundError: There is no such flow (or none named and no default).
            FlowFileError: The flow is invalid and no earlier version of it was loaded.
        """
        flow = await asyncio.to_thread(self.library.get, flow_name or self.default_flow)
        return FlowRun(
            flow=flow, caller=caller or {}, memory=remember, mood=mood,
            on_change=FlowRecorder(store=self._store, call_id=call_id),
            on_action_failed=self._on_action_failed,
        )

    async def open_session(
        self,
        backend: AudioLLM,
        *,
        call_id: int,
        caller: dict | None = None,
        remember: Remember | None = None,
        flow_name: str | None = None,
        mood: CallerMood | None = None,
    ) -> AudioLLMSession:
        """A session on `backend` driven by a flow (`flow_name`, else the default): a reply
        policy for the embedded cascade, node instructions and tools for a backend that
        calls tools."""
        run = await self.new_run(
            call_id=call_id, caller=caller, remember=remember, flow_name=flow_name, mood=mood,
        )
        if backend.capabilities.tools:
            return FlowSession(backend=backend, session=await backend.open_session(), run=run)
        return await backend.open_session(policy=FlowPolicy(run=run))
