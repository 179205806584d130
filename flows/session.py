"""A flow steering an end-to-end audio LLM: node instructions and tools out, tool calls in.

`FlowSession` wraps a backend's session and is itself an `AudioLLMSession`, so the
slot runs it like any other. Each request carries the current node's instructions
and tools (pipecat's `FunctionSchema` format); the model's `ToolCall`s go to the
`FlowRun`, whose answer goes back as a `ToolResult` on a follow-up request in the
same turn, so the model speaks on without waiting for the caller.

A backend that cannot change instructions mid-session (`live_instructions` False)
is re-seeded: when a tool call moves the flow to another node, a fresh session is
opened at once, while the current answer is still streaming, and continues with
the whole conversation so far and the new node's instructions. The caller hears
no gap beyond the model's own first-audio time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from loguru import logger
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema

from callwright.agent.backend import (
    AudioLLM,
    AudioLLMSession,
    CallerText,
    ContextTurn,
    EndOfTurn,
    Event,
    SessionWrapper,
    TextDelta,
    ToolCall,
    ToolResult,
    TurnRequest,
)
from callwright.flows import slots, templates
from callwright.flows.engine import FlowRun, FlowTurn
from callwright.flows.schema import FILL_SLOTS

MAX_FOLLOW_UPS = 4  # tool round trips in one turn before the turn is closed


def node_instructions(run: FlowRun, *, say: str = "") -> str:
    """The current node as a system prompt: role, task, what to say, what to collect."""
    node, context = run.node, run.context()
    parts = []
    role = next((n.role_message for n in _visited(run) if n.role_message), None)
    if role:
        parts.append(templates.render(role, context))
    parts += [templates.render(m.content, context) for m in node.task_messages]
    if say:
        parts.append(f"Now say, in your own words but keeping every detail: \"{say}\"")
    wanted = [s for s in node.slots if run.slots.get(s.name) is None]
    if wanted or node.corrections:
        names = ", ".join(s.name for s in wanted) or "nothing new"
        parts.append(
            f"Collect: {names}. Call {FILL_SLOTS} as soon as the caller gives any of them"
            + (f"; if they correct {', '.join(node.corrections)}, pass the new value"
               if node.corrections else "")
            + ". The tool result says what to do next."
        )
    if run.slots:
        known = ", ".join(f"{k}={v}" for k, v in run.slots.items())
        parts.append(f"Known so far: {known}.")
    return "\n\n".join(p for p in parts if p)


def _visited(run: FlowRun):
    return [run.spec.nodes[name] for name in reversed(run.path)]


def node_tools(run: FlowRun) -> tuple[dict, ...]:
    """The tools the model is offered at the run's node, as `FunctionSchema.to_default_dict()`s.

    `fill_slots` (when the node collects slots or takes corrections), with one property
    per slot, then the node's and the global functions, without parameters.
    """
    node = run.node
    tools: list[FunctionSchema] = []
    fillable = [*node.slots, *(run.spec.slot(n) for n in node.corrections)]
    if fillable:
        tools.append(FunctionSchema(
            name=FILL_SLOTS,
            description="Record values the caller gave at this step.",
            properties={s.name: slots.json_type(s) for s in fillable},
            required=[],
        ))
    for function in [*node.functions, *run.spec.global_functions]:
        tools.append(FunctionSchema(
            name=function.name, description=function.description or function.name,
            properties={}, required=[],
        ))
    return tuple(tool.to_default_dict() for tool in tools)


class FlowSession(SessionWrapper):
    """A backend session steered by a flow: the flow speaks its own lines, hands the model
    each node's instructions and tools, and runs what the model's tool calls decide."""

    def __init__(self, *, backend: AudioLLM, session: AudioLLMSession, run: FlowRun):
        super().__init__(session)
        self._backend = backend
        self.run = run
        self._live = backend.capabilities.live_instructions
        self._seeded_node: str | None = None
        self.sessions_opened = 1

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        """Answer one turn, the flow steering the model.

        Keys, silence, an answering-machine result and the call's opening go to the
        `FlowRun` first; when it has no words and stayed at its node (or ended the call),
        the turn ends there.
        Otherwise the model answers (the caller's audio, or the flow's words to say) with
        the node's instructions and tools. Its tool calls go to the run and their results
        back to it in follow-up requests, at most `MAX_FOLLOW_UPS`, all in this turn. An
        error `EndOfTurn` from the model is passed on and ends the turn.
        """
        # The opening, keys, silence and a machine go to the flow; the model says its words,
        # or speaks from the node's instructions where the flow moved without any.
        visited = len(self.run.path)
        flow_turn = await self._flow_event(request)
        stayed = len(self.run.path) == visited
        if flow_turn is not None and not flow_turn.text and (stayed or flow_turn.end_call):
            yield EndOfTurn(end_call=flow_turn.end_call, transfer_to=flow_turn.transfer_to,
                            dtmf=flow_turn.dtmf)
            return
        given = flow_turn or FlowTurn()
        say, dtmf, transfer_to = given.text, given.dtmf, given.transfer_to
        history = list(request.history)
        # The call's own context (what memory recalls of the caller) stays beside the node's.
        call_notes = request.instructions

        def instructions(say: str) -> str:
            return "\n\n".join(p for p in (node_instructions(self.run, say=say), call_notes) if p)

        request = TurnRequest(
            audio=request.audio, history=request.history,
            instructions=instructions(say), tools=node_tools(self.run),
        )
        self._seeded_node = self.run.node_name
        end_call = False
        for _ in range(MAX_FOLLOW_UPS + 1):
            results: list[ToolResult] = []
            spoken: list[str] = []
            reseed: asyncio.Task | None = None
            say = ""
            async for event in self.inner.respond(request):
                if isinstance(event, ToolCall):
                    turn = await self.run.on_tool_call(event.name, event.arguments)
                    say = " ".join(p for p in (say, turn.text) if p)
                    result = dict(turn.tool_result or {})
                    if turn.text:
                        result["say"] = turn.text
                    results.append(ToolResult(call_id=event.call_id, name=event.name,
                                              result=result))
                    end_call = end_call or turn.end_call
                    dtmf += turn.dtmf
                    transfer_to = transfer_to or turn.transfer_to
                    moved = self.run.node_name != self._seeded_node
                    if moved and not self._live and reseed is None:
                        reseed = asyncio.create_task(self._backend.open_session())
                    continue
                if isinstance(event, EndOfTurn):
                    if event.error:  # the model failed: the fallback takes this turn
                        yield event
                        return
                    break
                if isinstance(event, CallerText) and event.text:
                    history.append(ContextTurn(role="caller", text=event.text))
                elif isinstance(event, TextDelta):
                    spoken.append(event.text)
                yield event
            if spoken:
                history.append(ContextTurn(role="agent", text=" ".join(spoken)))
            if not results:
                break
            if reseed is not None:
                await self._reseed(await reseed)
            request = TurnRequest(
                audio=None, history=tuple(history),
                instructions=instructions(say), tools=node_tools(self.run),
                tool_results=tuple(results),
            )
        else:
            logger.warning(f"flow {self.run.spec.name}: too many tool calls in one turn")
        yield EndOfTurn(end_call=end_call or self.run.ended, transfer_to=transfer_to, dtmf=dtmf)

    async def _flow_event(self, request: TurnRequest) -> FlowTurn | None:
        if request.dtmf:
            return await self.run.on_dtmf(request.dtmf)
        if request.silence:
            return await self.run.on_silence()
        if request.answered_by:
            return await self.run.on_answered_by(request.answered_by)
        if request.audio is None and not self.run.path and not request.tool_results:
            return await self.run.start()
        return None

    async def _reseed(self, session: AudioLLMSession) -> None:
        old, self.inner = self.inner, session
        self.sessions_opened += 1
        self._seeded_node = self.run.node_name
        await old.close()
