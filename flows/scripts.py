"""`callwright flows test`: scripted caller lines against a flow, in pipecat's eval format.

A script is a pipecat scripted-scenario file (`pipecat.evals`, parsed by its own
`EvalScenarioFile`): `scenarios:` with `turns:`, each turn a `user:` line or
`dtmf:` keys, and `expect:` events. `response` takes `text_contains` /
`text_excludes`; `function_call` names the function (or `fill_slots`) that took
the turn. A flow has no LLM judge, so `eval:` criteria are refused.

Turns may add what a flow can be checked on (pipecat's parser ignores these keys):
`node:` where the call should be after the turn, `slots:` values that must be set,
`silence: true` for a turn where the caller says nothing, `ends_call: true`,
`transfer_to:` and `sends_dtmf:`, and on a `user:` turn, `emotion:`, how the caller
sounds saying it (neutral when not given; see `agent.emotion`), which flows read as
`caller.emotion` and `call.*`. The first turn may have no input: it checks the
greeting. Top level may set `today:` (the date "tomorrow" is counted from) and
`caller:` (template variables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import yaml
from pipecat.evals.scenario import EvalScenarioFile
from pipecat.evals.script import EvalScriptScenario, EvalScriptTurn

from callwright.agent.emotion import Emotion
from callwright.flows.engine import FlowRun, FlowTurn
from callwright.flows.schema import LoadedFlow

TURN_EXTRAS = ("node", "slots", "silence", "ends_call", "transfer_to", "sends_dtmf", "emotion")
# A scripted emotion's arousal and valence: typical of the label, for `caller.arousal`.
SCRIPTED_EMOTIONS = {"neutral": (0.0, 0.0), "positive": (0.3, 0.6),
                     "frustrated": (0.6, -0.6), "sad": (-0.4, -0.5)}
TEXT_EVENTS = ("response", "llm_response", "tts_response")


@dataclass
class ScenarioResult:
    """The outcome of one scenario of a script.

    Attributes:
        name: The scenario's name.
        failures: What did not go as expected, mostly prefixed with the turn; empty: passed.
        transcript: The conversation, one "agent: ..." or "caller: ..." line each.
    """

    name: str
    failures: list[str] = field(default_factory=list)
    transcript: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when nothing failed."""
        return not self.failures


def _raw_scenarios(path: Path) -> tuple[dict, list[dict]]:
    data = yaml.safe_load(path.read_text()) or {}
    defaults = {k: v for k, v in data.items() if k != "scenarios"}
    return defaults, [{**defaults, **entry} for entry in data.get("scenarios") or []]


async def run_script(flow: LoadedFlow, script: Path) -> list[ScenarioResult]:
    """Run every scenario of a pipecat eval script against a flow, each on a new `FlowRun`.

    Args:
        flow: The flow under test.
        script: The script file (YAML).

    Returns:
        One result per scenario, in the file's order. A simulated (`persona:`) scenario
        fails, as it needs an LLM caller.
    """
    script = Path(script)
    parsed = EvalScenarioFile.load(script)  # pipecat checks the format and names
    _, raw = _raw_scenarios(script)
    results = []
    for scenario, raw_scenario in zip(parsed.scenarios, raw, strict=True):
        if not isinstance(scenario, EvalScriptScenario):
            results.append(ScenarioResult(scenario.name, [
                "a simulated scenario (persona:) needs an LLM caller; flows test runs scripts"]))
            continue
        results.append(await run_scenario(flow, scenario, raw_scenario))
    return results


async def run_scenario(flow: LoadedFlow, scenario: EvalScriptScenario, raw: dict
                       ) -> ScenarioResult:
    """Play one scripted scenario against a new run of the flow, checking every turn.

    It stops at a turn with no input (after the first), and at the first failing turn
    when the scenario sets `stop_on_failure`.

    Args:
        flow: The flow under test.
        scenario: The scenario as pipecat parsed it.
        raw: The same scenario as YAML data, with the script's top-level keys merged in;
            `today`, `caller` and the turns' callwright keys are read from it.
    """
    result = ScenarioResult(scenario.name)
    today = raw.get("today")
    run = FlowRun(
        flow=flow, caller=raw.get("caller") or {},
        today=date.fromisoformat(str(today)) if today else None,
    )
    raw_turns = raw.get("turns") or []
    opening = await run.start()
    result.transcript.append(f"agent: {opening.text}")
    for index, (turn, extra) in enumerate(zip(scenario.turns, raw_turns, strict=True)):
        where = f"turn #{index}"
        if turn.user is not None:
            label = str(extra.get("emotion", "neutral"))
            if label not in SCRIPTED_EMOTIONS:
                result.failures.append(f"{where}: emotion {label!r} is not one of "
                                       f"{', '.join(SCRIPTED_EMOTIONS)}")
                break
            arousal, valence = SCRIPTED_EMOTIONS[label]
            run.mood.observe(prosody=None, text=turn.user, reported=Emotion(
                label=label, arousal=arousal, valence=valence, confidence=1.0, source="script"))
            out = await run.on_text(turn.user)
            result.transcript.append(f"caller: {turn.user}")
        elif turn.dtmf is not None:
            out = await run.on_dtmf(turn.dtmf)
            result.transcript.append(f"caller: [DTMF {turn.dtmf}]")
        elif extra.get("silence"):
            out = await run.on_silence()
            result.transcript.append("caller: [silence]")
        elif index == 0:
            out = opening
        else:
            result.failures.append(f"{where}: needs 'user:', 'dtmf:' or 'silence: true'")
            break
        if out is not opening:
            result.transcript.append(f"agent: {out.text}  [{out.node}]")
        failures = check_turn(out, run, turn, extra)
        result.failures += [f"{where}: {f}" for f in failures]
        if failures and scenario.stop_on_failure:
            break
    return result


def check_turn(out: FlowTurn, run: FlowRun, turn: EvalScriptTurn, extra: dict) -> list[str]:
    """Check one turn against its `expect:` events and its callwright keys.

    Replies are compared case-insensitively; slot values as strings, case-insensitively.

    Args:
        out: The flow's answer to the turn.
        run: The run after the turn (its node and slots are checked).
        turn: The turn as pipecat parsed it.
        extra: The turn as YAML data (`node`, `slots`, `ends_call`, `transfer_to`,
            `sends_dtmf`).

    Returns:
        One message per mismatch; empty when the turn passed.
    """
    failures = []
    for expectation in turn.expect:
        if expectation.eval is not None:
            failures.append("'eval:' needs an LLM judge; use text_contains with flows test")
        elif expectation.event in TEXT_EVENTS:
            if expectation.absent:
                if out.text:
                    failures.append(f"expected no reply, got {out.text!r}")
                continue
            if expectation.text_contains and (
                expectation.text_contains.lower() not in out.text.lower()
            ):
                failures.append(f"reply {out.text!r} lacks {expectation.text_contains!r}")
            if expectation.text_excludes and (
                expectation.text_excludes.lower() in out.text.lower()
            ):
                failures.append(f"reply {out.text!r} holds {expectation.text_excludes!r}")
        elif expectation.event == "function_call":
            names = [c.name for c in expectation.calls or [] if c.name]
            if names and out.matched not in names:
                failures.append(f"expected {' or '.join(names)}, the turn went to {out.matched}")
        else:
            failures.append(f"event '{expectation.event}' is not produced by flows test")
    if "node" in extra and run.node_name != extra["node"]:
        failures.append(f"expected node '{extra['node']}', at '{run.node_name}'")
    for name, value in (extra.get("slots") or {}).items():
        got = run.slots.get(name)
        if str(got).lower() != str(value).lower():
            failures.append(f"slot {name}: expected {value!r}, got {got!r}")
    if "ends_call" in extra and bool(extra["ends_call"]) != out.end_call:
        failures.append(f"expected ends_call={extra['ends_call']}, got {out.end_call}")
    if "transfer_to" in extra and extra["transfer_to"] != out.transfer_to:
        failures.append(f"expected transfer to {extra['transfer_to']}, got {out.transfer_to}")
    if "sends_dtmf" in extra and str(extra["sends_dtmf"]) != out.dtmf:
        failures.append(f"expected DTMF {extra['sends_dtmf']!r}, got {out.dtmf!r}")
    return failures
