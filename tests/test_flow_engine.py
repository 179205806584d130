"""The flow engine's moving parts: actions, versions, storage, and an audio LLM on tools."""

import asyncio
import textwrap
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
from aiohttp import web

from callwright.agent.backend import (
    AudioChunk,
    AudioLLM,
    AudioLLMSession,
    CallerText,
    Capabilities,
    EndOfTurn,
    Event,
    TextDelta,
    ToolCall,
    TurnRequest,
)
from callwright.flows.engine import FlowRun
from callwright.flows.library import FlowLibrary
from callwright.flows.loader import load_flow, load_flow_text
from callwright.flows.recording import FlowRecorder
from callwright.flows.schema import FILL_SLOTS
from callwright.flows.session import FlowSession
from callwright.memory.db import create_engine, migrate
from callwright.memory.store import CallStore

EXAMPLES = Path(__file__).resolve().parents[1] / "flows" / "examples"


class FakeMemory:
    def __init__(self):
        self.written: list[dict] = []

    def __call__(self, *, kind: str, text: str, value: dict | None = None) -> None:
        self.written.append({"kind": kind, "text": text, "value": value})


WEBHOOK_FLOW = """\
name: hook
initial_node: ask
nodes:
  ask:
    slots: [{name: order, type: number, prompt: "Which order number?"}]
    on_filled:
      - actions:
          - type: webhook
            url: "{{ caller.api }}/orders/{{ slots.order }}"
            method: GET
            timeout_s: 0.5
            save_as: order
            on_error: failed
        transition_to: {field: vars.order.status, cases: {shipped: shipped}, default: other}
  shipped:
    say: "Order {{ slots.order }} shipped on {{ vars.order.date }}."
    post_actions: [{type: end_call}]
  other:
    say: "Order {{ slots.order }} is {{ vars.order.status }}."
    post_actions: [{type: end_call}]
  failed:
    say: "I can't look orders up right now."
    post_actions: [{type: end_call}]
"""


@pytest.fixture
async def order_api():
    async def order(request: web.Request) -> web.Response:
        number = request.match_info["number"]
        if number == "7":
            await asyncio.sleep(2)  # slower than the flow's timeout
        if number == "9":
            return web.json_response({"error": "boom"}, status=500)
        status = "shipped" if number == "42" else "packing"
        return web.json_response({"status": status, "date": "Monday"})

    app = web.Application()
    app.router.add_get("/orders/{number}", order)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.mark.parametrize(("order", "expected", "node"), [
    ("42", "Order 42 shipped on Monday.", "shipped"),
    ("5", "Order 5 is packing.", "other"),
    ("7", "I can't look orders up right now.", "failed"),  # timeout
    ("9", "I can't look orders up right now.", "failed"),  # HTTP 500
])
async def test_webhook_branches_on_its_answer_and_errors(order_api, order, expected, node):
    failures: list[str] = []  # what the server counts in callwright_flow_action_failures
    run = FlowRun(flow=load_flow_text(WEBHOOK_FLOW), caller={"api": order_api},
                  on_action_failed=failures.append)
    await run.start()
    turn = await run.on_text(f"It's order number {order}.")
    assert (turn.text, run.node_name, turn.end_call) == (expected, node, True)
    assert failures == (["webhook"] if node == "failed" else [])


async def test_python_handler_and_remember():
    memory = FakeMemory()
    run = FlowRun(flow=load_flow(EXAMPLES / "dental.yaml"), memory=memory,
                  today=date(2026, 11, 25))
    await run.start()
    for line in ["A check-up please", "Monday at 10 am", "Maria Lopez", "415 555 2671", "yes"]:
        turn = await run.on_text(line)
    assert run.vars["availability"] == {"available": True}
    assert turn.end_call and run.node_name == "booked"
    assert memory.written == [{
        "kind": "commitment", "text": "checkup at Bright Smile Dental on 2026-11-30 at 10:00",
        "value": {"day": "2026-11-30", "at": "10:00"},
    }]


async def test_non_interruptible_node_and_listen_timeout():
    run = FlowRun(flow=load_flow(EXAMPLES / "dental.yaml"))
    turn = await run.start()
    assert turn.interruptible is False  # the recording notice plays to the end
    assert turn.listen_timeout_s == 8
    turn = await run.on_text("cleaning")
    assert turn.interruptible is True


async def test_barge_in_rules_come_from_the_flow_and_the_speaking_node():
    run = FlowRun(flow=load_flow(Path(__file__).parent / "flows" / "notice.yaml"))
    turn = await run.start()  # the flow's rules: its own backchannels
    assert turn.interruptions == {"backchannels": ("uh-huh", "mm-hmm", "yeah", "okay", "right")}
    turn = await run.on_text("hi there")  # the notice node narrows what interrupts
    assert turn.node == "notice" and turn.interruptible
    assert turn.interruptions == {
        "backchannels": ("uh-huh", "mm-hmm", "yeah", "okay", "right"),
        "stop_phrases": ("change",), "min_words": 40, "long_speech_s": 30.0,
    }


def test_library_picks_up_edits_and_keeps_the_last_good_version(tmp_path):
    path = tmp_path / "greeter.yaml"
    path.write_text(WEBHOOK_FLOW)
    library = FlowLibrary(tmp_path)
    first = library.get("greeter")
    assert library.get("greeter") is first  # unchanged file: the same object
    path.write_text(WEBHOOK_FLOW.replace("Which order number?", "Your order number?"))
    second = library.get("greeter")
    assert second.version != first.version
    assert first.spec.nodes["ask"].slots[0].prompt == "Which order number?"  # calls keep theirs
    path.write_text(WEBHOOK_FLOW.replace("initial_node: ask", "initial_node: nowhere") + "\n")
    assert library.get("greeter") is second  # a broken edit does not reach new calls


async def test_recorder_stores_path_and_slots(database_url):
    engine = create_engine(database_url)
    await migrate(engine)
    store = CallStore(engine)
    call_id = await store.create_call(call_sid="CA" + "1" * 32, transport="twilio")
    recorder = FlowRecorder(store=store, call_id=call_id)
    run = FlowRun(flow=load_flow(EXAMPLES / "restaurant.yaml"), on_change=recorder,
                  today=date(2026, 11, 25))
    await run.start()
    await run.on_text("book a table")
    await run.on_text("2 people on Friday at 7 pm")
    await recorder.flush()
    call = await store.get_call(call_id)
    await engine.dispose()
    assert call.flow_name == "restaurant" and call.flow_version == run.flow.version
    assert call.flow_path == ["greet", "party", "name"]
    assert call.slots == {"party_size": 2, "date": "2026-11-27", "time": "19:00"}


# An end-to-end audio LLM, scripted: it "hears" a line and answers with tool calls.


class ScriptedSession(AudioLLMSession):
    def __init__(self, backend: "ScriptedBackend"):
        self.backend = backend
        self.requests: list[TurnRequest] = []
        self.closed = False

    async def respond(self, request: TurnRequest) -> AsyncIterator[Event]:
        self.requests.append(request)
        self.backend.requests.append(request)
        for event in self.backend.script.pop(0):
            yield event
        yield EndOfTurn()

    async def cancel(self) -> None:
        pass

    async def close(self) -> None:
        self.closed = True


class ScriptedBackend(AudioLLM):
    name = "scripted"

    def __init__(self, script: list[list[Event]], *, live: bool):
        self.script = script
        self.requests: list[TurnRequest] = []
        self.sessions: list[ScriptedSession] = []
        self.capabilities = Capabilities(tools=True, live_instructions=live, caller_text=True)

    async def load(self) -> None:
        pass

    async def open_session(self) -> AudioLLMSession:
        self.sessions.append(ScriptedSession(self))
        return self.sessions[-1]


def _say(text: str) -> list[Event]:
    return [TextDelta(text=text), AudioChunk(audio=b"\0\0" * 160, sample_rate=16000)]


async def _drain(session: FlowSession, request: TurnRequest) -> list[Event]:
    return [event async for event in session.respond(request)]


@pytest.mark.parametrize("live", [False, True], ids=["reseeded", "live"])
async def test_audio_llm_is_steered_by_node_instructions_and_tools(live):
    script = [
        _say("Hello, Luigi's, would you like a table?"),                      # opening
        [CallerText(text="A table please"), ToolCall(call_id="c1", name="reserve", arguments={})],
        _say("Great, how many people, which day and what time?"),             # after the tool
        [CallerText(text="Four on Friday at 7pm, I'm Alice"),
         ToolCall(call_id="c2", name=FILL_SLOTS,
                  arguments={"party_size": 4, "date": "2026-11-27", "time": "19:00"})],
        _say("And the name?"),
        [CallerText(text="Alice"), ToolCall(call_id="c3", name=FILL_SLOTS,
                                            arguments={"name": "Alice"})],
        _say("Table for 4 on Friday at 7 PM under Alice. Shall I book it?"),
        [CallerText(text="Yes"), ToolCall(call_id="c4", name=FILL_SLOTS,
                                          arguments={"confirmed": True})],
        _say("You're booked, Alice. Goodbye!"),
    ]
    backend = ScriptedBackend(script, live=live)
    run = FlowRun(flow=load_flow(EXAMPLES / "restaurant.yaml"), caller={"name": "Ada"},
                  today=date(2026, 11, 25))
    session = FlowSession(backend=backend, session=await backend.open_session(), run=run)

    events = await _drain(session, TurnRequest(audio=None))
    first = backend.requests[0]
    assert "host at Luigi's" in first.instructions
    assert "Hello Ada, thanks for calling Luigi's" in first.instructions  # the node's `say`
    assert {t["name"] for t in first.tools} == {"reserve", "hours", "talk_to_human", "repeat",
                                                "goodbye"}
    assert isinstance(events[-1], EndOfTurn) and not events[-1].end_call

    events = await _drain(session, TurnRequest(audio=b"\0\0" * 1600))
    follow_up = backend.requests[2]
    assert follow_up.audio is None and follow_up.tool_results[0].name == "reserve"
    assert follow_up.tool_results[0].result["node"] == "party"
    assert [t.text for t in follow_up.history] == ["A table please"]
    assert FILL_SLOTS in {t["name"] for t in follow_up.tools}
    params = next(t for t in follow_up.tools if t["name"] == FILL_SLOTS)["parameters"]
    assert params["properties"]["date"]["format"] == "date"
    assert "Collect: party_size, date, time" in follow_up.instructions
    assert not any(isinstance(e, ToolCall) for e in events)  # tool calls stay in the flow
    # Re-seeding: a backend that cannot change instructions gets a fresh session per node.
    assert len(backend.sessions) == (1 if live else 2)
    assert backend.sessions[0].closed is (not live)

    for _ in range(2):
        await _drain(session, TurnRequest(audio=b"\0\0" * 1600))
    assert run.node_name == "confirm"
    events = await _drain(session, TurnRequest(audio=b"\0\0" * 1600))
    assert isinstance(events[-1], EndOfTurn) and events[-1].end_call
    assert run.path == ["greet", "party", "name", "confirm", "booked"]
    assert run.slots == {"party_size": 4, "date": "2026-11-27", "time": "19:00",
                         "name": "Alice", "confirmed": True}
    assert len(backend.sessions) == (1 if live else 5)
    assert "You're booked, Alice" in backend.requests[-1].tool_results[0].result["say"]


async def test_audio_llm_flow_takes_keys_and_a_machine_through_the_flow():
    """Keys and a mid-call machine result move the flow, not the model; the model then says
    the node's words, and the flow's tones and hang-up end the turn."""
    backend = ScriptedBackend([_say("Hello, is this Ada?"), _say("We've reached voicemail.")],
                              live=True)
    run = FlowRun(flow=load_flow(EXAMPLES / "reminder.yaml"), caller={"name": "Ada"})
    session = FlowSession(backend=backend, session=await backend.open_session(), run=run)
    await _drain(session, TurnRequest(audio=None))
    events = await _drain(session, TurnRequest(audio=None, answered_by="human"))
    assert len(backend.requests) == 1 and isinstance(events[-1], EndOfTurn)
    assert not events[-1].end_call
    events = await _drain(session, TurnRequest(audio=None, answered_by="machine_end_beep"))
    assert "reminding Ada of an appointment" in backend.requests[-1].instructions
    assert events[-1] == EndOfTurn(end_call=True, dtmf="#")

    backend = ScriptedBackend([_say("Hello, is this Ada?"), _say("You have an appointment.")],
                              live=True)
    run = FlowRun(flow=load_flow(EXAMPLES / "reminder.yaml"), caller={"day": "2026-12-03"})
    session = FlowSession(backend=backend, session=await backend.open_session(), run=run)
    await _drain(session, TurnRequest(audio=None))
    await _drain(session, TurnRequest(audio=None, dtmf="1"))  # check_person: no keys there
    assert run.path == ["answer", "check_person"] and len(backend.requests) == 2
    assert "didn't catch that" in backend.requests[-1].instructions


async def test_audio_llm_bad_tool_arguments_are_reported_back():
    backend = ScriptedBackend([
        _say("Hi"),
        [ToolCall(call_id="x", name="reserve", arguments={})], _say("How many?"),
        [ToolCall(call_id="y", name=FILL_SLOTS, arguments={"party_size": "lots", "shoe": 9})],
        _say("Sorry?"),
    ], live=True)
    run = FlowRun(flow=load_flow(EXAMPLES / "restaurant.yaml"))
    session = FlowSession(backend=backend, session=await backend.open_session(), run=run)
    await _drain(session, TurnRequest(audio=None))
    await _drain(session, TurnRequest(audio=b"\0\0"))
    await _drain(session, TurnRequest(audio=b"\0\0"))
    result = backend.requests[-1].tool_results[0].result
    assert result["errors"] == {"party_size": "not a valid number",
                                "shoe": "not collected at this step"}
    assert result["node"] == "party" and result["missing"] == "party_size"


async def test_templates_are_sandboxed_and_expressions_safe():
    text = textwrap.dedent("""\
        name: sandbox
        initial_node: a
        nodes:
          a:
            say: "Hi {{ caller.name }}{{ ''.__class__.__mro__ }}."
            conditions:
              - when: "caller.__class__ is None"
                transition_to: b
          b:
            say: Should not get here.
    """)
    path_error = None
    try:
        load_flow_text(text)
    except Exception as exc:
        path_error = str(exc)
    assert path_error and "'__class__' is not allowed" in path_error
    flow = load_flow_text(text.replace("caller.__class__ is None", "caller.name == 'Eve'"))
    turn = await FlowRun(flow=flow, caller={"name": "Bob"}).start()
    assert turn.text == "Hi Bob."  # the sandbox hides Python internals; the call goes on
    assert turn.node == "a"


@pytest.mark.parametrize("answered_by,first", [
    ("machine_end_beep", "voicemail"), ("machine_end_silence", "voicemail"),
    ("human", "check_person"), (None, "check_person"),
])
async def test_reminder_leaves_a_message_on_a_machine(answered_by, first):
    """Answering-machine detection reaches the flow as `caller.answered_by`."""
    caller = {"name": "Ada", "day": "2026-11-30", "at": "15:00"}
    if answered_by:
        caller["answered_by"] = answered_by
    run = FlowRun(flow=load_flow(EXAMPLES / "reminder.yaml"), caller=caller)
    turn = await run.start()
    assert run.path == ["answer", first]
    if first == "voicemail":
        assert "reached voicemail" in turn.text and "Am I speaking" not in turn.text
        assert "reminding Ada of an appointment on Monday, November 30th." in turn.text
        assert turn.dtmf == "#" and turn.end_call
    else:
        assert "Am I speaking with Ada" in turn.text and not turn.end_call


async def test_a_machine_found_mid_call_takes_the_voicemail_branch():
    """Twilio's AsyncAmd reports after the opening began: the flow leaves the person's path
    for its voicemail node; a person (or a second report) changes nothing."""
    run = FlowRun(flow=load_flow(EXAMPLES / "reminder.yaml"), caller={"name": "Ada"})
    assert "Am I speaking with Ada" in (await run.start()).text
    unchanged = await run.on_answered_by("human")
    assert unchanged.text == "" and run.path == ["answer", "check_person"]
    turn = await run.on_answered_by("machine_end_beep")
    assert run.path == ["answer", "check_person", "voicemail"]
    assert "reminding Ada of an appointment" in turn.text and turn.dtmf == "#" and turn.end_call
    assert run.caller["answered_by"] == "machine_end_beep"


async def test_reminder_reads_well_without_the_dialler_variables():
    run = FlowRun(flow=load_flow(EXAMPLES / "reminder.yaml"),
                  caller={"answered_by": "machine_end_beep"})
    turn = await run.start()
    assert "reminding you of an appointment. Press 1" in turn.text, turn.text
    run = FlowRun(flow=load_flow(EXAMPLES / "reminder.yaml"), caller={"day": "2026-12-03"})
    await run.start()
    turn = await run.on_text("Yes, speaking.")
    assert run.path[-1] == "remind"
    assert turn.text.startswith("You have an appointment on Thursday, December 3rd. Can"), turn.text


async def test_mood_escalation_sets_the_outcome_and_repeats_unheard_closing_words():
    """Two frustrated turns in a row take the global condition once; the node it leads to
    sets the call's outcome; words after the run ended hear its closing words again."""
    from callwright.agent.emotion import CallerMood, Emotion

    flow = load_flow(Path("flows/examples/support.yaml"))
    snapshots = []
    mood = CallerMood()
    run = FlowRun(flow=flow, mood=mood, on_change=snapshots.append)
    await run.start()

    def heard(text: str, label: str) -> str:
        mood.observe(prosody=None, text=text, reported=Emotion(
            label=label, arousal=0.6 if label == "frustrated" else 0.0, confidence=1.0))
        return text

    first = await run.on_text(heard("My internet is down again.", "frustrated"))
    assert run.node_name == "reboot" and first.text.startswith("I'm sorry your connection")
    assert run.outcome is None and run.context()["call"]["frustration"] == 1
    second = await run.on_text(heard("I did that already, it's still not working!",
                                     "frustrated"))
    assert run.node_name == "calm_down" and "so frustrating" in second.text
    assert second.transfer_to == "+14155550123" and run.ended
    assert run.outcome == "escalated" and snapshots[-1].outcome == "escalated"
    # The caller talked on over those words: they hear them again, then the transfer.
    again = await run.on_text(heard("and nobody ever calls me back", "frustrated"))
    assert (again.text, again.transfer_to, again.end_call) == (
        second.text, second.transfer_to, True)
    assert (await run.on_tool_call("human", {})).text == ""


async def test_a_global_condition_is_taken_once():
    from callwright.agent.emotion import CallerMood

    flow = load_flow_text(textwrap.dedent('''
        name: once
        initial_node: ask
        global_conditions:
          - {when: "call.frustrated_turns >= 1", transition_to: sorry}
        nodes:
          ask:
            say: Ask me anything.
            functions:
              - {name: anything, patterns: ['.'], transition_to: ask}
          sorry:
            say: Sorry about that.
            functions:
              - {name: anything, patterns: ['.'], transition_to: ask}
    '''), source="once.yaml")
    mood = CallerMood()
    run = FlowRun(flow=flow, mood=mood)
    await run.start()
    said = []
    for _ in range(3):
        mood.observe(prosody=None, text="This is ridiculous, your service is useless.")
        said.append((await run.on_text("This is ridiculous, your service is useless.")).text)
    assert said == ["Sorry about that.", "Ask me anything.", "Ask me anything."]
