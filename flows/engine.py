"""One call's run through a flow: the state machine behind every way of talking to it.

`FlowRun` takes what happened on the line (the caller's words, DTMF keys, silence,
or an LLM's tool call) and answers with a `FlowTurn`: what to say, and whether to
hang up, transfer or send tones. The embedded cascade, an end-to-end audio LLM,
`flows chat` and `flows test` all drive this same class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import date

import httpx
from loguru import logger
from pipecat.flows.config import case_key

from callwright.agent.context import Remember
from callwright.agent.emotion import CallerMood
from callwright.flows import expressions
from callwright.flows.actions import FlowActions
from callwright.flows.filling import SlotFilling
from callwright.flows.schema import (
    FILL_SLOTS,
    Branch,
    Function,
    LoadedFlow,
    Node,
    Retry,
    Transition,
)
from callwright.flows.turn import FlowLoopError, FlowSnapshot, FlowTurn
from callwright.flows.understanding import match_intent, pattern_match

MAX_HOPS = 16  # transitions in one turn before the run is judged to loop
CALLER_EVENTS = ("text", "dtmf", "silence")


class FlowRun(FlowActions, SlotFilling):
    """One call's run through a flow: events in, a `FlowTurn` for each out.

    Each event method (`start`, `on_text`, `on_dtmf`, `on_silence`, `on_answered_by`,
    `on_tool_call`, `resume`) takes the flow as far as it goes without the caller and
    returns what to say and do. Once the run has ended the call (an end or transfer
    action, or too many transitions in one turn), every event returns a turn with
    `end_call` set: for the caller's words, keys or silence, with the run's last words
    and transfer again (the caller may have talked over them); else with nothing to say.
    Events share the run's state: await each one before sending the next.

    Args:
        flow: The flow as loaded; the run keeps this version to the end.
        caller: What is known about the caller, `caller.*` in templates and expressions
            (copied).
        memory: Where `remember` actions write; None: they are skipped.
        on_change: Called with a snapshot after every event that moved the run or
            changed its slots (a `FlowRecorder`, say).
        http: The client `webhook` actions use; None: a new one per request.
        today: The date `today()` gives in expressions; None: the clock's.
        on_action_failed: Told the type of each action that fails ("webhook",
            "function"): a metric's count, say.
        mood: How the caller has sounded this call: `caller.emotion` and `call.*` in
            templates and expressions; None: always neutral.
    """

    def __init__(
        self,
        *,
        flow: LoadedFlow,
        caller: Mapping | None = None,
        memory: Remember | None = None,
        on_change: Callable[[FlowSnapshot], None] | None = None,
        http: httpx.AsyncClient | None = None,
        today: date | None = None,
        on_action_failed: Callable[[str], None] | None = None,
        mood: CallerMood | None = None,
    ):
        self.flow = flow
        self.spec = flow.spec
        self.caller = dict(caller or {})
        self.slots: dict = {}
        self.vars: dict = {}
        self.path: list[str] = []
        self.node_name = self.spec.initial_node
        self.ended = False
        self.outcome: str | None = None  # set by the nodes entered (`outcome:`)
        self.mood = mood or CallerMood()
        self._memory = memory
        self._on_change = on_change
        self._http = http
        self._today = today
        self._on_action_failed = on_action_failed
        self._asked: str | None = None  # the slot whose question was put last
        self._no_match = 0
        self._silences = 0
        self._last_said = ""
        self._closing: FlowTurn | None = None  # the turn that ended the run
        self._hops = 0

    # Events -------------------------------------------------------------------------

    async def start(self) -> FlowTurn:
        """Enter the flow's initial node; the turn holds the greeting."""
        return await self._event(lambda out: self._enter(self.spec.initial_node, out), "start")

    async def on_text(self, text: str) -> FlowTurn:
        """Answer what the caller said (a transcript); blank text counts as silence.

        Tried in order: the flow's `global_conditions` (an escalation on the caller's
        mood, say), a function's `patterns`, the current node's slots (and the
        corrections it takes), a function by embedding, the node's `conditions`; failing
        all, the no-match handling re-asks or takes its fallback.
        """
        return await self._event(lambda out: self._caller_said(text, out), "text")

    async def on_dtmf(self, digits: str) -> FlowTurn:
        """Answer keys the caller pressed (`digits`, the whole entry).

        A function whose `dtmf` equals `digits` is taken; else, when the slot asked for
        last is a number, digits, phone or text slot, the keys are parsed as its answer;
        else it is a no-match.
        """
        return await self._event(lambda out: self._caller_pressed(digits, out), "dtmf")

    async def on_silence(self) -> FlowTurn:
        """Answer a caller who said nothing for the last turn's `listen_timeout_s`.

        The node's (else the flow's) `silence` handling re-asks, or takes its fallback
        once its retries are used up.
        """
        return await self._event(self._caller_silent, "silence")

    async def on_answered_by(self, result: str) -> FlowTurn:
        """Answering-machine detection finished mid-call (Twilio's AsyncAmd)."""
        return await self._event(lambda out: self._answered(result, out), "answered_by")

    async def on_tool_call(self, name: str, arguments: Mapping) -> FlowTurn:
        """Run an LLM's tool call: `fill_slots` with slot values, or a function by name.

        The turn's `tool_result` tells the model the node it is at, the slots so far, the
        next missing slot and any values refused; for a function not available at this
        node, an error.
        """
        return await self._event(lambda out: self._tool_called(name, arguments, out), "tool")

    async def resume(self) -> FlowTurn:
        """`start()`, or for a run already under way (another model takes the call over
        mid-way), its last words again."""
        if not self.path:
            return await self.start()

        async def again(out: FlowTurn) -> None:
            if self._last_said:
                out.said.append(self._last_said)

        return await self._event(again, "resume")

    @property
    def node(self) -> Node:
        """The node the run is at."""
        return self.spec.nodes[self.node_name]

    def snapshot(self) -> FlowSnapshot:
        """What a call stores of the run now: flow name and version, node path, slots (copies)."""
        return FlowSnapshot(
            flow_name=self.spec.name, flow_version=self.flow.version,
            flow_path=list(self.path), slots=dict(self.slots), outcome=self.outcome,
        )

    async def _event(self, handle, kind: str) -> FlowTurn:
        out = FlowTurn()
        if self.ended:
            out.node = self.node_name
            out.end_call = True
            if kind in CALLER_EVENTS and self._closing is not None:
                # The caller spoke on over the run's last words (a pause mid-sentence ended
                # their turn early, and that reply was dropped unheard): say them again,
                # with their transfer, rather than hang up in silence.
                out.said, out.transfer_to = list(self._closing.said), self._closing.transfer_to
            return out
        before = (len(self.path), dict(self.slots))
        self._hops = 0
        try:
            await handle(out)
        except FlowLoopError as exc:
            logger.error(f"flow {self.spec.name}: {exc}; ending the call")
            out.said.append("Sorry, something went wrong on our side. Goodbye.")
            out.end_call = self.ended = True
        out.node = self.node_name
        if out.text:
            self._last_said = out.text
        if self.ended and self._closing is None:
            self._closing = out
        if not out.end_call and not out.transfer_to:
            out.listen_timeout_s = self._silence_config().timeout_s
        if self._on_change and (len(self.path), self.slots) != before:
            self._on_change(self.snapshot())
        logger.debug(f"flow {self.spec.name} [{kind}] -> {out.node}: {out.text!r}")
        return out

    # Context --------------------------------------------------------------------------

    def context(self, **extra) -> dict:
        """The names templates and expressions see.

        Args:
            **extra: Further names, e.g. `value` for a slot's `validate`.

        Returns:
            `slots`, `vars`, `caller`, `node`, `flow` and `retries` (no-matches at this
            node), `call` (the caller's mood over the call: `emotion`, `frustration`,
            `frustrated_turns`, `emotions`), and `extra`; the dicts are the run's own, not
            copies. `caller.emotion`, `caller.arousal` and `caller.valence` are the last
            caller turn's.
        """
        mood = self.mood.template_vars()
        self.caller.update(emotion=mood["emotion"], arousal=mood["arousal"],
                           valence=mood["valence"])
        return {
            "slots": self.slots, "vars": self.vars, "caller": self.caller, "call": mood,
            "node": self.node_name, "flow": self.spec.name, "retries": self._no_match, **extra,
        }

    def _true(self, expression: str | None, **extra) -> bool:
        if not expression:
            return True
        try:
            return bool(expressions.evaluate(expression, self.context(**extra), today=self._today))
        except expressions.ExpressionError as exc:
            logger.warning(f"flow {self.spec.name} node {self.node_name}: {exc}")
            return False

    def _say(self, out: FlowTurn, text: str | None, *, node: Node | None = None) -> None:
        if text:
            rendered = self._render(text)
            if rendered:
                out.said.append(rendered)
                out.interruptions = self.spec.defaults.interruptions.overrides()
                if node is not None:
                    out.interruptible = out.interruptible and node.interruptible
                    if node.interruptions is not None:
                        out.interruptions |= node.interruptions.overrides()

    # Nodes and transitions ------------------------------------------------------------

    async def _enter(self, name: str, out: FlowTurn) -> None:
        self._hops += 1
        if self._hops > MAX_HOPS:
            raise FlowLoopError(f"more than {MAX_HOPS} transitions in one turn (at {name})")
        node = self.spec.nodes[name]
        self.node_name = name
        self.path.append(name)
        self.outcome = node.outcome or self.outcome
        self._no_match = self._silences = 0
        self._asked = None
        for slot in node.slots:
            if slot.type == "yes_no":
                self.slots.pop(slot.name, None)  # a yes/no answers the question just put
        if await self._run_actions(node.pre_actions, out) or self.ended:
            return
        self._say(out, node.say, node=node)
        for condition in node.conditions:
            if self._true(condition.when):
                await self._transition(condition, out)
                return
        if node.slots:
            if await self._after_slots(out):
                return
        await self._run_actions(node.post_actions, out)

    async def _transition(self, transition: Transition | Function, out: FlowTurn) -> None:
        self._say(out, transition.say, node=self.node)
        if await self._run_actions(transition.actions, out) or self.ended:
            return
        target = self._target(transition.transition_to)
        if target:
            await self._enter(target, out)
        elif not out.said:
            self._reprompt(out)

    def _target(self, to: str | Branch | None) -> str | None:
        if to is None or isinstance(to, str):
            return to
        value = self._lookup(to.field)
        return to.cases.get(case_key(value), to.default) if value is not None else to.default

    def _lookup(self, dotted: str):
        value = self.context()
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    def _reprompt(self, out: FlowTurn) -> None:
        slot = self._missing_slot()
        self._say(out, (slot and slot.prompt) or self.node.say, node=self.node)
        if slot:
            self._asked = slot.name

    # Caller events ----------------------------------------------------------------------

    def _functions(self) -> list[Function]:
        eligible = [*self.node.functions, *self.spec.global_functions]
        return [f for f in eligible if self._true(f.when)]

    async def _answered(self, result: str, out: FlowTurn) -> None:
        """The initial node's conditions are taken again with `caller.answered_by` set: a
        branch they now choose that the call has not been down (voicemail) is followed."""
        self.caller["answered_by"] = result
        for condition in self.spec.nodes[self.spec.initial_node].conditions:
            if self._true(condition.when):
                target = self._target(condition.transition_to)
                if target and target not in self.path:
                    await self._transition(condition, out)
                return

    async def _caller_said(self, text: str, out: FlowTurn) -> None:
        text = text.strip()
        if not text:
            await self._caller_silent(out)
            return
        if await self._global_condition(out):
            return
        functions = self._functions()
        explicit = pattern_match(text, functions)
        if explicit:
            out.matched = explicit.function.name
            await self._transition(explicit.function, out)
            return
        values, corrected = await asyncio.to_thread(self._parse_slots, text)
        if corrected:
            out.matched = "correction"
            self._apply(values, out)
            await self._enter(self.node_name, out)  # say it again with the new values
            return
        if values and self._apply(values, out):
            out.matched = "slots"
            if not await self._after_slots(out):
                await self._check_conditions(out)
            return
        if values:  # given but invalid: the `invalid` message was said
            self._reprompt_after_invalid(out)
            return
        intent = await match_intent(
            text, functions, threshold=self.spec.defaults.intent_threshold
        )
        if intent:
            out.matched = intent.function.name
            await self._transition(intent.function, out)
            return
        if await self._check_conditions(out):
            return
        await self._retry(self.node.no_match or self.spec.defaults.no_match, out, silence=False)

    async def _global_condition(self, out: FlowTurn) -> bool:
        """Take the first flow-wide condition that holds and leads somewhere new: an
        escalation is taken once, not again at every turn after it."""
        for condition in self.spec.global_conditions:
            if condition.transition_to not in self.path and self._true(condition.when):
                out.matched = "global condition"
                await self._transition(condition, out)
                return True
        return False

    async def _check_conditions(self, out: FlowTurn) -> bool:
        for condition in self.node.conditions:
            if self._true(condition.when):
                await self._transition(condition, out)
                return True
        return False

    async def _caller_pressed(self, digits: str, out: FlowTurn) -> None:
        for function in self._functions():
            if function.dtmf and function.dtmf == digits:
                out.matched = function.name
                await self._transition(function, out)
                return
        slot = self.spec.slot(self._asked) if self._asked else None
        if slot and slot.type in ("number", "digits", "phone", "text"):
            await self._caller_said(digits, out)
            return
        await self._retry(self.node.no_match or self.spec.defaults.no_match, out, silence=False)

    def _silence_config(self):
        return self.node.silence or self.spec.defaults.silence

    async def _caller_silent(self, out: FlowTurn) -> None:
        await self._retry(self._silence_config(), out, silence=True)

    async def _retry(self, config: Retry, out: FlowTurn, *, silence: bool) -> None:
        if silence:
            self._silences += 1
            count = self._silences
        else:
            self._no_match += 1
            count = self._no_match
        out.matched = "silence" if silence else "no_match"
        if count > config.retries and config.then is not None:
            await self._transition(config.then, out)
            return
        default = "Are you still there?" if silence else "Sorry, I didn't catch that."
        self._say(out, config.say or default, node=self.node)
        self._reprompt(out)

    async def _tool_called(self, name: str, arguments: Mapping, out: FlowTurn) -> None:
        out.matched = name
        if name == FILL_SLOTS:
            await self._fill_slots(arguments, out)
            return
        function = next((f for f in self._functions() if f.name == name), None)
        if function is None:
            out.tool_result = {"error": f"no function {name!r} at this step"}
            return
        before = self.node_name
        await self._transition(function, out)
        out.tool_result = self._tool_result(before, {})
