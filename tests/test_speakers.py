"""Voice prints on phone-quality audio: the caller, a partner close in timbre, a child."""

import audioop

import numpy as np
import soxr

from agent import speakers
from agent.speakers import SpeakerTracker
from tests import overlap as ov


def phone(text: str, voice: str) -> bytes:
    """`text` in `voice` through μ-law at 8 kHz, then at the pipeline's 16 kHz."""
    line = audioop.ulaw2lin(audioop.lin2ulaw(ov.say(text, voice), 2), 2)
    return soxr.resample(np.frombuffer(line, np.int16), 8000, 16000).astype(np.int16).tobytes()


def test_voices_are_told_apart_by_print_and_pitch():
    tracker = SpeakerTracker()
    opening = phone("Hi, I am calling about a few things for my family today.", "caller")
    assert tracker.assign(speakers.embed(opening), 3.0) == "caller" and tracker.enrolled

    again = speakers.embed(phone("Hold on, can you repeat the first part please?", "caller"))
    partner = speakers.embed(phone("Can you turn the television down a little please?",
                                   "partner"))
    child = speakers.embed(phone("Mum, where is my blue jacket, I cannot find it?", "child"))
    # The partner's embedding alone sits near the caller's; their pitch does not.
    assert tracker.pitch_apart(again, "caller") < 2.5 < 4.0 < tracker.pitch_apart(partner,
                                                                                  "caller")
    unanswered = tracker.settings.unanswered_below
    assert tracker.similarity(again, "caller") > tracker.settings.same_speaker
    assert tracker.similarity(partner, "caller") < unanswered
    assert tracker.similarity(child, "caller") < unanswered

    # A short phrase of the caller's scores low on its embedding; its pitch keeps it theirs.
    digits = speakers.embed(phone("two one three", "caller"))
    assert tracker.similarity(digits, "caller") < tracker.settings.same_speaker
    assert not tracker.differs(digits, "caller", tracker.settings.same_speaker)
    assert tracker.differs(partner, "caller", tracker.settings.same_speaker)

    assert tracker.assign(again, 2.5) == "caller"
    assert tracker.assign(partner, 2.5) == "speaker 2"
    assert tracker.assign(child, 2.5) == "speaker 3"
    assert tracker.assign(partner, 2.5) == "speaker 2"


def test_a_new_voice_needs_an_enrolled_caller():
    tracker = SpeakerTracker()
    short = phone("Hi there.", "caller")
    assert tracker.assign(speakers.embed(short), 0.7) == "caller" and not tracker.enrolled
    # The rest of the caller's opening completes the enrolment instead of making a new voice.
    rest = phone("I am calling about a few things for my family today.", "caller")
    assert tracker.assign(speakers.embed(rest), 2.6) == "caller" and tracker.enrolled
