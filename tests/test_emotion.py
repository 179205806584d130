"""The caller's emotion per turn (agent/emotion.py) on espeak-ng speech through μ-law."""

import functools

import numpy as np
import pytest

from callwright.agent.emotion import EMOTIONS, CallerMood, Delivery, Emotion
from callwright.agent.prosody import SILENT, prosody
from callwright.agent.sentiment import word_sentiment
from tests.emotional_speech import CALM, Style, espeak_8k, telephone
from tests.support import have

pytestmark = pytest.mark.skipif(not have("espeak-ng"), reason="needs espeak-ng")

AGITATED = Style(pitch_st=3, range_x=1.6, rate_x=1.25, gain_db=6)
SUBDUED = Style(pitch_st=-2, range_x=0.6, rate_x=0.8, gain_db=-6)
FIRST = "I would like to change the delivery address on my account."
SECOND = "Can you tell me what time the store opens on Saturday?"
THIRD = "My account number is four five six seven."


@functools.cache
def phone(text: str, style: Style = CALM, voice: str = "en-us") -> bytes:
    """`text` spoken in `style`, through an 8 kHz μ-law line, as 16 kHz pipeline audio."""
    return telephone(espeak_8k(text, voice, style), style.gain_db)


def turn(mood: CallerMood, text: str, style: Style = CALM, voice: str = "en-us") -> Emotion:
    return mood.observe(prosody=prosody(phone(text, style, voice)), text=text)


def test_features_follow_the_delivery():
    calm, agitated, subdued = (prosody(phone(FIRST, s)) for s in (CALM, AGITATED, SUBDUED))
    assert calm.usable and 85 < calm.pitch_hz < 130  # espeak's en-us at -p 50: about 100 Hz
    assert subdued.pitch_hz < calm.pitch_hz / 2 ** (1 / 12) < agitated.pitch_hz / 2 ** (2 / 12)
    assert subdued.pitch_range_st < calm.pitch_range_st < agitated.pitch_range_st
    assert agitated.energy_db - calm.energy_db == pytest.approx(6, abs=1.5)
    assert calm.energy_db - subdued.energy_db == pytest.approx(6, abs=1.5)
    assert subdued.rate_hz < calm.rate_hz < agitated.rate_hz
    assert 0 < calm.speech_s < len(phone(FIRST)) / 32000 and calm.voiced_s <= calm.speech_s


def test_agitated_after_a_calm_baseline_is_frustrated_and_calm_again_is_neutral():
    mood = CallerMood()
    assert turn(mood, FIRST).label == "neutral"
    assert turn(mood, SECOND).label == "neutral"
    agitated = turn(mood, FIRST, AGITATED)
    assert agitated.label == "frustrated" and agitated.arousal > 0.65
    assert agitated.source == "audio+words" and agitated.valence < 0
    calm = turn(mood, FIRST)
    assert calm.label == "neutral" and abs(calm.arousal) < 0.5
    assert mood.frustration == 0 and mood.frustrated_turns == 1
    assert mood.template_vars()["emotions"] == ["neutral", "neutral", "frustrated", "neutral"]


def test_subdued_after_a_calm_baseline_is_sad():
    mood = CallerMood()
    turn(mood, FIRST, voice="en-us+f3")
    turn(mood, SECOND, voice="en-us+f3")
    subdued = turn(mood, THIRD, SUBDUED, voice="en-us+f3")
    assert subdued.label == "sad" and subdued.arousal < -0.7


def test_a_naturally_loud_fast_high_caller_is_judged_against_themselves():
    loud = Style(pitch_st=3, rate_x=1.3, gain_db=9)
    quiet = Style(pitch_st=-2, rate_x=0.85, gain_db=-6)
    # On an absolute scale the loud caller's calm turns are far from the quiet caller's.
    assert (prosody(phone(FIRST, loud)).energy_db
            - prosody(phone(FIRST, quiet)).energy_db) > 12
    mood = CallerMood()
    labels = [turn(mood, text, loud).label for text in (FIRST, SECOND, THIRD, FIRST)]
    assert labels == ["neutral"] * 4
    # Their calm voice, after a quiet caller's baseline, reads as agitated.
    other = CallerMood()
    turn(other, SECOND, quiet)
    turn(other, THIRD, quiet)
    assert turn(other, FIRST, loud).label == "frustrated"


def test_agitated_turns_do_not_drag_the_baseline():
    mood = CallerMood()
    turn(mood, FIRST)
    turn(mood, SECOND)
    labels = [turn(mood, text, AGITATED).label for text in (THIRD, FIRST, SECOND, THIRD)]
    assert labels == ["frustrated"] * 4
    assert mood.frustration == 4
    assert turn(mood, THIRD).label == "neutral"
    # One calm turn is baseline enough, and the agitated turns after it do not join it.
    short = CallerMood()
    turn(short, SECOND)
    assert [turn(short, text, AGITATED).arousal > 0.65 for text in (FIRST, THIRD)] == [True] * 2


def test_words_alone():
    complaint = word_sentiment("This is the third time I've called, it's ridiculous.")
    assert complaint.valence < 0 and complaint.anger > complaint.distress
    assert CallerMood().observe(
        prosody=None, text="This is the third time I've called, it's ridiculous."
    ).label == "frustrated"
    thanks = CallerMood().observe(prosody=None, text="Thank you so much, that's great.")
    assert thanks.label == "positive" and thanks.valence > 0.5 and thanks.source == "words"
    worried = CallerMood().observe(prosody=None, text="I'm really worried, I don't know "
                                   "what to do.")
    assert worried.label == "sad" and worried.valence < 0
    assert CallerMood().observe(prosody=None, text=SECOND).label == "neutral"


def test_frustration_counts_consecutive_frustrated_turns_and_resets():
    mood = CallerMood()
    assert mood.current is None and mood.template_vars() == {
        "emotion": "neutral", "arousal": 0.0, "valence": 0.0, "frustration": 0,
        "frustrated_turns": 0, "emotions": []}
    angry, fine = "This is unacceptable, your service is useless.", "Okay, I see."
    counts = []
    for text in (angry, angry, fine, angry):
        mood.observe(prosody=None, text=text)
        counts.append(mood.frustration)
    assert counts == [1, 2, 0, 1]
    assert mood.frustrated_turns == 3 and len(mood.turns) == 4
    variables = mood.template_vars()
    assert variables["emotion"] == "frustrated" and variables["frustration"] == 1
    assert variables["emotions"] == ["frustrated", "frustrated", "neutral", "frustrated"]


def test_delivery_slows_down_for_frustrated_and_sad_callers():
    mood = CallerMood()
    assert mood.delivery() == Delivery(1.0, 0, "")
    mood.observe(prosody=None, text=SECOND)
    assert mood.delivery() == Delivery(1.0, 0, "")
    mood.observe(prosody=None, text="This is the third time I've called, it's ridiculous.")
    calmer = mood.delivery()
    assert calmer.length_scale > 1.05 and calmer.sentence_pause_ms > 0
    assert "frustrated" in calmer.hint
    mood.observe(prosody=None, text="I'm scared I've lost my card.")
    assert mood.delivery().length_scale > 1.05 and mood.delivery().hint


def test_a_reported_emotion_weighs_more():
    mood = CallerMood()
    fused = mood.observe(prosody=None, text=SECOND,
                         reported=Emotion(label="angry", arousal=0.8, valence=-0.6,
                                          confidence=0.8))
    assert fused.label == "frustrated" and fused.source == "model+words"
    assert 0 < fused.arousal <= 0.8 and fused.valence < 0 and mood.frustration == 1
    unsure = mood.observe(prosody=None, text="Thank you so much, that's great.",
                          reported=Emotion(label="sad", confidence=0.2))
    assert unsure.label == "positive"
    assert mood.observe(prosody=None, text="", reported=Emotion(
        label="bored", confidence=1.0)).label == "neutral"  # unknown states are ignored


@pytest.mark.parametrize("audio", [
    b"", b"\x01", b"\x00\x00" * 320, b"\x00\x00" * 32000,
    (np.random.default_rng(0).normal(size=16000) * 30).astype(np.int16).tobytes(),
])
def test_silence_and_scraps_carry_no_audio_evidence(audio):
    features = prosody(audio)
    assert features.voiced_s < 0.25 and not features.usable
    mood = CallerMood()
    nothing = mood.observe(prosody=features, text="")
    assert nothing.label == "neutral" and nothing.confidence == 0 and nothing.source == "none"
    assert mood.observe(prosody=features, text=SECOND).source == "words"
    assert mood.observe(prosody=SILENT, text="   ").label in EMOTIONS


def test_a_retracted_turn_leaves_no_trace():
    """A turn the caller went on after (one turn after all) is observed again, whole."""
    mood = CallerMood()
    turn(mood, FIRST)
    baseline = mood.arousal(prosody(phone(SECOND)))
    mood.observe(prosody=prosody(phone(SECOND)), text="This is ridiculous, I'm fed up.")
    assert mood.frustration == 1
    mood.retract_last()
    assert [t.label for t in mood.turns] == ["neutral"] and mood.frustration == 0
    assert mood.arousal(prosody(phone(SECOND))) == baseline
