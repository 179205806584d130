"""Long-term memory's part in each call: recognise and recall at the start, remember
during, summarise at the end. Nothing here holds up the audio."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from loguru import logger
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from callwright.agent.context import CallContext
from callwright.memory import embeddings
from callwright.memory.callers import CallerStore
from callwright.memory.db import sessionmaker
from callwright.memory.extract import DeterministicExtractor, SpokenTurn
from callwright.memory.memories import MemoryStore, MemoryWriter, NewMemory
from callwright.memory.models import Call, Memory, Turn
from callwright.memory.recall import Recall
from callwright.memory.redact import Redactor
from callwright.memory.settings import MemorySettings
from callwright.memory.writer import TurnWriter

END_OF_CALL_WAIT_S = 10.0


class CallMemory:
    """Long-term memory's part in every call: recall at its start, remember, summarise at its end.

    Call `start()` before the first call and `close()` at shutdown.
    """

    def __init__(self, *, engine: AsyncEngine, turns: TurnWriter, settings: MemorySettings):
        self.settings = settings
        self.redactor = Redactor(region=settings.default_region) if settings.redact else None
        self.callers = CallerStore(engine, default_region=settings.default_region)
        self.store = MemoryStore(engine, retention=settings.retention, redactor=self.redactor)
        self.writer = MemoryWriter(self.store)
        self.recall = Recall(engine, k=settings.recall_k)
        self._extractor = DeterministicExtractor()
        self._turns = turns
        self._sessions = sessionmaker(engine)
        self._ending: set[asyncio.Task] = set()
        self._ending_calls: dict[int, asyncio.Task] = {}

    async def start(self) -> None:
        """Load the embedding model, embed the default recall goal and start the memory writer."""
        await embeddings.load()
        await self.recall.goal_vector(self.settings.recall_goal)
        self.writer.start()

    async def settle(self, timeout: float = 15.0) -> None:
        """Wait for the end-of-call work of calls that have ended."""
        if self._ending:
            await asyncio.wait(set(self._ending), timeout=timeout)

    async def settle_call(self, call_id: int, timeout: float) -> bool:
        """Wait up to `timeout` seconds for one call's end-of-call work in this process
        (its summary); True once it is done or when there is none here."""
        task = self._ending_calls.get(call_id)
        if task is None:
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

    async def close(self) -> None:
        """Wait for the end-of-call work of ended calls, then store what is buffered and stop.

        Bounded: up to 15 s for the calls' work, then 5 s for the memory writer.
        """
        await self.settle()
        await self.writer.close()

    async def begin_call(self, call_id: int, *, goal: str | None = None) -> CallContext:
        """Recognise the caller and recall what matters for `goal` (the flow's goal).

        Bounded by `recall_timeout_s`: past it, or on any database error, the call
        goes ahead as if the caller were new.
        """
        try:
            return await asyncio.wait_for(
                self._begin(call_id, goal or self.settings.recall_goal),
                self.settings.recall_timeout_s,
            )
        except Exception as exc:
            logger.warning(f"call {call_id}: starting without memory ({exc!r})")
            return CallContext()

    async def _begin(self, call_id: int, goal: str) -> CallContext:
        recognised = await self.callers.recognise(call_id)
        if recognised is None:
            return CallContext()
        caller_id, number = recognised
        recalled = await self.recall.recall(number, goal=goal, before_call_id=call_id)
        if recalled is None:  # erased between the two statements
            return CallContext()
        logger.info(
            f"call {call_id}: caller {caller_id} "
            f"{'recognised' if recalled.known else 'is new'}, "
            f"{len(recalled.memories)} memories recalled"
        )
        return CallContext(
            caller=recalled.as_template_vars(),
            instructions=recalled.as_instructions(),
            remember=partial(self._remember, caller_id=caller_id, call_id=call_id),
        )

    def _remember(
        self, *, caller_id: int, call_id: int, kind: str, text: str,
        value: dict[str, Any] | None = None, confidence: float = 1.0,
    ) -> None:
        try:
            memory = NewMemory(caller_id=caller_id, kind=kind, text=text, value=value,
                               source_call_id=call_id, confidence=confidence)
        except ValueError as exc:
            logger.error(f"call {call_id}: memory not kept: {exc}")
            return
        self.writer.write(memory)

    def end_call(self, call_id: int) -> None:
        """Summarise the call and keep its facts, in the background."""
        task = asyncio.create_task(self._end(call_id), name=f"end-of-call-{call_id}")
        self._ending.add(task)
        self._ending_calls[call_id] = task
        task.add_done_callback(self._ending.discard)
        task.add_done_callback(lambda _: self._ending_calls.pop(call_id, None))

    async def _end(self, call_id: int) -> None:
        # Everything said and remembered during the call is stored first.
        await self._turns.flush(END_OF_CALL_WAIT_S)
        await self.writer.flush(END_OF_CALL_WAIT_S)
        try:
            await self._summarise(call_id)
        except Exception:
            logger.exception(f"call {call_id}: end-of-call extraction failed")

    async def _summarise(self, call_id: int) -> None:
        async with self._sessions() as session:
            call = await session.get(Call, call_id)
            if call is None:
                return
            turns = (await session.execute(
                select(Turn.speaker, Turn.text).where(Turn.call_id == call_id).order_by(Turn.seq)
            )).all()
            kept = set((await session.execute(
                select(Memory.kind, Memory.text).where(Memory.source_call_id == call_id)
            )).all())
        extraction = self._extractor.extract(
            turns=[SpokenTurn(speaker=t.speaker, text=t.text) for t in turns], slots=call.slots
        )
        summary = extraction.summary
        if summary and self.redactor:
            summary = self.redactor.text(summary)
        async with self._sessions.begin() as session:
            await session.execute(update(Call).where(Call.id == call_id).values(summary=summary))
        if call.caller_id is None:
            return
        new = [NewMemory(caller_id=call.caller_id, kind=f.kind, text=f.text, value=f.value,
                         source_call_id=call_id)
               for f in extraction.facts if (f.kind, f.text) not in kept]
        if summary:
            new.append(NewMemory(caller_id=call.caller_id, kind="summary", text=summary,
                                 source_call_id=call_id))
        await self.store.add(new)
        logger.info(f"call {call_id}: summarised, {len(new)} memories kept")
