"""A pipeline step of your own: a pipecat processor in every call, after the model.

It sees the caller's words as stored (`CallerTurnFrame`) and the agent's as heard
(`AgentTurnFrame`). This one raises an alert when a caller asks for a manager.

    python examples/pipeline_step.py
"""

from loguru import logger
from pipecat.frames.frames import Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

import callwright


class ManagerAlert(FrameProcessor):
    def __init__(self, *, call_id: int):
        super().__init__()
        self.call_id = call_id

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, callwright.CallerTurnFrame) and "manager" in frame.text.lower():
            logger.warning(f"call {self.call_id}: the caller asked for a manager")
        await self.push_frame(frame, direction)  # pass every frame on


if __name__ == "__main__":
    callwright.serve(steps=[lambda call_id: ManagerAlert(call_id=call_id)])
