"""What a transport hands a connected call to (implemented by callwright.calls.CallRunner)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pipecat.observers.base_observer import BaseObserver
from pipecat.processors.frame_processor import FrameProcessor
from pipecat.transports.base_transport import BaseTransport


class CallHandler(Protocol):
    """Runs a connected call's conversation; what every transport hands its calls to."""

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
        """Run the conversation (the default flow, or `flow`) until it ends; `control`
        processors see the agent's frames once played (transfer, hang-up); `record`
        overrides the recording setting; `answered_by` is the carrier's answering-machine
        detection result on an outbound call, `variables` what its dialler passed;
        `call_sid` is the transport's name for the call (its trace carries it)."""
