"""A flow as the embedded cascade's reply policy (agent.policy.ReplyPolicy)."""

from __future__ import annotations

from callwright.agent.policy import Reply
from callwright.flows.engine import FlowRun, FlowTurn


def reply_of(turn: FlowTurn) -> Reply:
    """A flow turn as the cascade's `Reply`: the text, and what to do on the line after it."""
    return Reply(
        text=turn.text, end_call=turn.end_call, transfer_to=turn.transfer_to, dtmf=turn.dtmf,
        interruptible=turn.interruptible, interruptions=turn.interruptions,
        listen_timeout_s=turn.listen_timeout_s, node=turn.node,
    )


class FlowPolicy:
    """Deterministic understanding (patterns, embeddings, slot parsers) driving a FlowRun.

    Besides `opening()`/`reply()`, it answers DTMF, silence and a mid-call
    answering-machine result (see README, Flows).
    """

    def __init__(self, *, run: FlowRun):
        self.run = run

    async def opening(self) -> Reply:
        """The greeting, or for a run already under way its last words again (`FlowRun.resume`)."""
        return reply_of(await self.run.resume())

    async def reply(self, caller_text: str) -> Reply:
        """The flow's answer to what the caller said (`FlowRun.on_text`)."""
        return reply_of(await self.run.on_text(caller_text))

    async def dtmf(self, digits: str) -> Reply:
        """The flow's answer to keys the caller pressed (`FlowRun.on_dtmf`)."""
        return reply_of(await self.run.on_dtmf(digits))

    async def silence(self) -> Reply:
        """The flow's answer to a caller who stayed silent (`FlowRun.on_silence`)."""
        return reply_of(await self.run.on_silence())

    async def answered_by(self, result: str) -> Reply:
        """The flow's answer to a mid-call answering-machine result (`FlowRun.on_answered_by`)."""
        return reply_of(await self.run.on_answered_by(result))
