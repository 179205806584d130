"""Carries out the agent's call-control frames on a Twilio call, once what precedes them
has played: cold transfer (`TransferCallFrame`); and tells the pipeline who answered
(`AnsweredByFrame`, upstream) when Twilio's answering-machine detection reports it
mid-call (a result known at connect time reaches the call context instead).

Hanging up needs nothing here (`EndTaskFrame` ends the pipeline; the stream handler
then completes the call). Sending digits needs nothing either: pipecat's output
transport plays `OutputDTMFFrame` as in-band tones, which Twilio carries to the far end;
Twilio has no stream event for DTMF, and updating the call's TwiML with `<Play digits>`
would end the stream.
"""

from __future__ import annotations

from loguru import logger
from pipecat.frames.frames import EndTaskFrame, Frame
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from callwright.agent.frames import AnsweredByFrame, TransferCallFrame
from callwright.telephony.numbers import allowed, mask_number
from callwright.telephony.twilio.rest import TwilioAccount, transfer


class TwilioCallControl(FrameProcessor):
    """Pipeline processor that carries out the agent's call control on one Twilio call.

    It consumes `TransferCallFrame`: a cold transfer through Twilio's REST API, only to a
    number matching a `transfer_allow` glob pattern, and at most once per call; a refused
    or failed transfer is logged and the call goes on. Every other frame passes on.

    Attributes:
        transferred_to: The number the call was transferred to, once Twilio accepted it.
        left_machine: True once it ended the call because a machine answered.
    """

    def __init__(
        self,
        *,
        account: TwilioAccount,
        call_sid: str,
        transfer_allow: tuple[str, ...],
        **kwargs,
    ):
        super().__init__(**kwargs)
        self._account = account
        self._call_sid = call_sid
        self._allow = transfer_allow
        self.transferred_to: str | None = None
        self.left_machine = False  # hung up because a machine answered

    async def answered(self, answered_by: str, *, end_call: bool) -> None:
        """Asynchronous detection finished mid-call."""
        await self.push_frame(AnsweredByFrame(answered_by=answered_by), FrameDirection.UPSTREAM)
        if end_call:
            self.left_machine = True
            await self.push_frame(EndTaskFrame(), FrameDirection.UPSTREAM)

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Consumes `TransferCallFrame` (transferring the call) and passes every other frame on."""
        await super().process_frame(frame, direction)
        if isinstance(frame, TransferCallFrame):
            await self._transfer(frame.to)
            return
        await self.push_frame(frame, direction)

    async def _transfer(self, to: str) -> None:
        if self.transferred_to is not None:
            return
        if not allowed(to, self._allow):
            logger.error(f"call {self._call_sid}: transfer to {mask_number(to)} refused: "
                         "not in TRANSFER_ALLOW")
            return
        logger.info(f"call {self._call_sid}: transferring to {mask_number(to)}")
        if await transfer(self._account, self._call_sid, to):
            self.transferred_to = to
            # Twilio now runs <Dial> and closes the stream; the agent's part is over.
            await self.push_frame(EndTaskFrame(), FrameDirection.UPSTREAM)
