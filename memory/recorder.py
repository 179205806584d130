"""Pipeline processor that stores each finished turn as it happens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callwright.agent.frames import AgentTurnFrame, CallerTurnFrame, TurnDraftFrame
from callwright.memory.redact import Redactor
from callwright.memory.store import DraftRecord, TurnRecord
from callwright.memory.writer import TurnWriter

TurnListener = Callable[[CallerTurnFrame | AgentTurnFrame], None]
"""Hears each finished turn as it is stored (metrics, tracing); must be quick, on the loop."""


class TurnRecorder(FrameProcessor):
    """Consumes turn frames and hands them to the writer; never waits on the database.

    With a redactor, card numbers, phone numbers and emails never reach storage.
    `listeners` hear each turn frame as it is stored, unredacted; one that raises is
    logged and the call goes on.
    """

    def __init__(
        self,
        *,
        writer: TurnWriter,
        call_id: int,
        redactor: Redactor | None = None,
        listeners: Sequence[TurnListener] = (),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._writer = writer
        self._call_id = call_id
        self._redactor = redactor
        self._listeners = tuple(listeners)
        self._seq = 0

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Stores turn frames and drafts (which go no further); passes the rest on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, CallerTurnFrame | AgentTurnFrame):
            self._seq += 1
            self._writer.write(self._record(frame, self._seq))
        elif isinstance(frame, TurnDraftFrame):
            turns = filter(None, (frame.caller, frame.agent))
            self._writer.write(DraftRecord(call_id=self._call_id, turns=tuple(
                self._record(turn, self._seq + i) for i, turn in enumerate(turns, 1))))
            return
        else:
            await self.push_frame(frame, direction)
            return
        for listener in self._listeners:
            try:
                listener(frame)
            except Exception:  # telemetry must not end a call
                logger.exception(f"{self}: turn listener {listener!r} failed")

    def _record(self, frame: CallerTurnFrame | AgentTurnFrame, seq: int) -> TurnRecord:
        if isinstance(frame, CallerTurnFrame):
            fields = dict(speaker="caller", text=frame.text, start_ms=frame.start_ms,
                          end_ms=frame.end_ms, speaker_label=frame.speaker_label,
                          emotion=frame.emotion, arousal=frame.arousal, valence=frame.valence)
        else:
            fields = dict(
                speaker="agent", text=frame.text, start_ms=frame.start_ms, end_ms=frame.end_ms,
                interrupted=frame.interrupted, planned_text=frame.planned_text,
                latency_ms=frame.latency_ms, timings=frame.timings or None,
                llm_first_token_ms=frame.llm_first_token_ms, llm_tokens_in=frame.llm_tokens_in,
                llm_tokens_out=frame.llm_tokens_out,
            )
        if self._redactor:
            for name in ("text", "planned_text"):
                if fields.get(name):
                    fields[name] = self._redactor.text(fields[name])
        return TurnRecord(call_id=self._call_id, seq=seq, **fields)
