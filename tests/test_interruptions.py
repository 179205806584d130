"""Barge-in, backchannels, echo, several speakers and digit endpointing, through real calls."""

import re
from pathlib import Path

import numpy as np
import pytest

from callwright.agent.echo import ECHO_RATE, PlayedAudio, echo_share
from callwright.agent.interruptions import InterruptionSettings, is_interruption
from callwright.agent.turns import reads_out
from callwright.testing.line_audio import LineAcoustics
from tests import overlap as ov
from tests.support import caller, start_server


def test_echo_share_tells_echo_from_double_talk():
    played = np.frombuffer(ov.say("Sorry, I can take a booking or tell you our hours."),
                           dtype=np.int16).astype(np.float32)
    delay = int(0.15 * ECHO_RATE)
    window = slice(delay + 4000, delay + 8000)
    echo = 0.3 * np.concatenate([np.zeros(delay), played])[window]
    voice = np.frombuffer(ov.say("Wait, stop, I need to change the time.", "partner"),
                          dtype=np.int16).astype(np.float32)[4000:8000]
    assert echo_share(echo, ECHO_RATE, played) > 0.9
    # Short blocks each find some chance correlation: well under the 0.5 that means echo.
    assert echo_share(echo + voice, ECHO_RATE, played) < 0.3
    assert echo_share(voice, ECHO_RATE, played) < 0.2


def test_echo_share_survives_playout_drift():
    """The far end's playout slips a few ms between chunks; echo must still be echo."""
    played = np.frombuffer(ov.say("Sorry, I can take a booking or tell you our hours."),
                           dtype=np.int16).astype(np.float32)
    delay = int(0.15 * ECHO_RATE)
    echo = 0.3 * np.concatenate([np.zeros(delay), played])
    slipped = np.concatenate([echo[:6000], np.zeros(40), echo[6000:]])  # 5 ms late from here
    assert echo_share(slipped[4000:8000], ECHO_RATE, played) > 0.8
    # The first 20 ms of echo, at the very end of the window, are echo too.
    start = delay + int(0.3 * ECHO_RATE)  # within the first word
    onset = np.concatenate([np.zeros(3850), echo[start : start + 150]])
    assert echo_share(onset, ECHO_RATE, played) > 0.8


def test_played_audio_follows_the_far_end_playout_not_the_writes(monkeypatch):
    """pipecat writes ahead of playback; echo and the heard clock follow what has played."""
    clock = [100.0]
    monkeypatch.setattr("callwright.agent.echo.time.monotonic", lambda: clock[0])
    played = PlayedAudio(keep_s=1.0)
    tone = np.full(2 * ECHO_RATE, 1000, dtype=np.int16)
    for i in range(4):  # four 0.5 s chunks written within one second: 2 s of playout
        played.add(tone[i * 4000 : (i + 1) * 4000].tobytes(), ECHO_RATE, speech=True)
        clock[0] += 0.25
    assert played.speech_s == pytest.approx(1.0)  # 1 s has played, not the 2 s written
    assert np.count_nonzero(played.recent()) == pytest.approx(ECHO_RATE, abs=2)
    played.flush()  # a clear: the unplayed second is gone
    clock[0] += 0.5
    assert played.speech_s == pytest.approx(1.0)
    assert np.count_nonzero(played.recent()) == pytest.approx(ECHO_RATE / 2, abs=2)
    assert played.last_played == pytest.approx(101.0)


def test_words_that_interrupt():
    settings = InterruptionSettings()
    assert is_interruption("Stop.", settings)
    assert is_interruption("Hold on a second", settings)
    assert is_interruption("I want to book for Friday", settings)
    assert not is_interruption("Uh-huh.", settings)
    assert not is_interruption("Yeah, okay, right.", settings)
    assert not is_interruption("", settings)
    assert not is_interruption("Mm-hmm", InterruptionSettings(min_words=1))
    assert is_interruption("Tuesday", InterruptionSettings(min_words=1))


def test_reading_out_numbers_and_addresses():
    assert reads_out("My number is 555 213.")
    assert reads_out("It's john dot")
    assert reads_out("It's 22")
    assert reads_out("My number is two one two.")
    assert not reads_out("I would like a table for two.")



@pytest.mark.e2e
async def test_barge_in_stops_the_agent_and_stores_what_was_heard(server):
    scenario = ov.Scenario(name="barge-in", kind="barge_in", should_stop=True,
                           clip=ov.say("Wait, stop, I need to change the time please."))
    outcome = await ov.run(server, scenario, caller)

    assert outcome.stopped
    assert outcome.clear_latency_s is not None and outcome.clear_latency_s < 1.5
    agent = [t for t in outcome.turns if t["speaker"] == "agent"]
    cut = agent[1]
    # The reply was cut inside its first sentence, at a word boundary, 1.2 s in.
    assert cut["planned_text"].startswith(cut["text"]) and cut["text"]
    assert len(cut["text"]) < len(cut["planned_text"]) / 2
    assert cut["planned_text"][len(cut["text"])] == " "
    # The interruption became the caller's next turn, and the agent answered it.
    callers = [t for t in outcome.turns if t["speaker"] == "caller"]
    assert "time" in callers[-1]["text"].lower()
    assert outcome.turns[-1]["speaker"] == "agent"


@pytest.mark.e2e
@pytest.mark.parametrize("clip", [ov.say("uh-huh"), ov.cough(1)], ids=["uh-huh", "cough"])
async def test_backchannel_or_cough_pauses_then_resumes_the_whole_reply(server, clip):
    scenario = ov.Scenario(name="backchannel", kind="backchannel", should_stop=False, clip=clip)
    outcome = await ov.run(server, scenario, caller)

    assert not outcome.stopped
    agent = [t for t in outcome.turns if t["speaker"] == "agent"]
    assert agent[1]["text"] == agent[1]["planned_text"]
    assert [t["speaker"] for t in outcome.turns] == ["agent", "caller", "agent"]


@pytest.mark.e2e
async def test_speakerphone_echo_does_not_interrupt(server):
    scenario = ov.Scenario(name="echo", kind="echo", should_stop=False,
                           acoustics=LineAcoustics(echo_gain=0.35, echo_delay_s=0.15))
    outcome = await ov.run(server, scenario, caller)

    assert not any(t["interrupted"] for t in outcome.turns)
    assert [t["speaker"] for t in outcome.turns] == ["agent", "caller", "agent"]


@pytest.mark.e2e
async def test_other_voice_is_labelled_and_not_answered(server):
    scenario = ov.Scenario(
        name="side talk", kind="labels", should_stop=None,
        later=[("child", ov.say("Can you turn the television down a little bit please?",
                                "child"))],
    )
    outcome = await ov.run(server, scenario, caller)

    turns = [(t["speaker"], t["speaker_label"]) for t in outcome.turns]
    assert turns == [("agent", None), ("caller", "caller"), ("agent", None),
                     ("caller", "speaker 2")], outcome.turns


@pytest.mark.e2e
async def test_side_talk_over_the_agent_neither_stops_it_nor_is_answered(server):
    # The partner's voice is the one closest to the caller's in embedding space.
    line = "Honey, can you grab the car keys from the kitchen table for me?"
    scenario = ov.Scenario(name="side talk", kind="side_talk", should_stop=False,
                           clip=ov.say(line, "partner"), clip_voice="partner")
    outcome = await ov.run(server, scenario, caller)

    assert not outcome.stopped
    assert [t["speaker"] for t in outcome.turns] == ["agent", "caller", "agent"], outcome.turns
    agent = outcome.turns[2]
    assert agent["text"] == agent["planned_text"]


@pytest.mark.e2e
async def test_barge_in_over_the_agents_own_echo_stops_it(server):
    scenario = ov.Scenario(name="echo + barge-in", kind="barge_in", should_stop=True,
                           acoustics=LineAcoustics(echo_gain=0.35, echo_delay_s=0.15),
                           clip=ov.say("Wait, stop, that is the wrong day."))
    outcome = await ov.run(server, scenario, caller)

    assert outcome.stopped
    assert outcome.clear_latency_s is not None and outcome.clear_latency_s < 0.3
    caller_turns = [t for t in outcome.turns if t["speaker"] == "caller"]
    assert len(caller_turns) == 2 and "wrong" in caller_turns[1]["text"].lower()


@pytest.mark.e2e
async def test_hand_over_makes_the_next_voice_the_one_answered(server):
    scenario = ov.Scenario(
        name="hand-over", kind="handover", should_stop=None,
        opening=ov.say("Hi, I will hand you over to my colleague, she has the details."),
        later=[("colleague", ov.say("Hello, I would like to make a booking for tonight.",
                                    "colleague"))],
    )
    outcome = await ov.run(server, scenario, caller)

    turns = [(t["speaker"], t["speaker_label"]) for t in outcome.turns]
    assert turns == [("agent", None), ("caller", "caller"), ("agent", None),
                     ("caller", "speaker 2"), ("agent", None)], outcome.turns
    assert "name" in outcome.turns[4]["text"].lower()  # the booking is taken up


@pytest.mark.e2e
async def test_a_phone_number_read_with_pauses_stays_one_turn(server):
    gap = bytes(int(0.9 * 8000) * 2)
    groups = ["My number is two one two", "three one three", "four four nine one"]
    scenario = ov.Scenario(name="digits", kind="digits", should_stop=None,
                           opening=gap.join(ov.say(g, pad_s=0.05) for g in groups))
    outcome = await ov.run(server, scenario, caller)

    caller_turns = [t for t in outcome.turns if t["speaker"] == "caller"]
    assert len(caller_turns) == 1, outcome.turns
    digits = {"one": "1", "two": "2", "three": "3", "four": "4", "nine": "9"}
    words = re.findall(r"[a-z0-9]+", caller_turns[0]["text"].lower())
    assert "2123134491" in "".join(digits.get(w, w) for w in words)


@pytest.fixture(scope="module")
async def notice_server(tmp_path_factory, rest_standin):
    server = start_server(tmp_path_factory.mktemp("notice"), rest_url=rest_standin.base_url,
                          FLOWS_DIR=Path(__file__).parent / "flows", DEFAULT_FLOW="notice")
    yield server
    server.stop()


@pytest.mark.e2e
@pytest.mark.parametrize(("words", "stops"), [
    ("Wait, stop, hold on a moment please.", False),
    ("I need to change the time please.", True),
], ids=["call-stop-words", "node-stop-phrase"])
async def test_a_flow_node_sets_what_interrupts_its_words(notice_server, words, stops):
    """The notice node's rules: only "change" stops it; "wait, stop, hold on" (the call's stop
    phrases, and long speech) do not while it plays."""
    scenario = ov.Scenario(name="notice", kind="barge_in", should_stop=stops, clip=ov.say(words))
    outcome = await ov.run(notice_server, scenario, caller)

    assert outcome.stopped == stops
    notice = [t for t in outcome.turns if t["speaker"] == "agent"][1]
    assert notice["planned_text"].startswith("Before we go on")
    assert (notice["text"] == notice["planned_text"]) is not stops
