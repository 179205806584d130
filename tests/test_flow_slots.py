"""Slot parsers on the way callers (and speech recognisers) say things."""

from datetime import date

import pytest

from callwright.flows import slots
from callwright.flows.schema import Slot

TODAY = date(2026, 11, 25)  # a Wednesday


@pytest.mark.parametrize(("text", "expected"), [
    ("at seven thirty in the evening", "19:30"),
    ("at 730 in the evening.", "19:30"),  # Whisper's spelling of it
    ("7.30 pm", "19:30"),
    ("half past six", "18:30"),
    ("at noon", "12:00"),
    ("at 7", "19:00"),
    ("10 am", "10:00"),
    ("seven, no, make it eight pm", "20:00"),
    ("four people", None),
])
def test_time(text, expected):
    assert slots.parse_time(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("tomorrow", "2026-11-26"),
    ("next Tuesday", "2026-12-01"),
    ("not Tuesday, Thursday", "2026-11-26"),
    ("Friday the 12th", "2026-12-12"),
    ("on the fifth of December", "2026-12-05"),
    ("December third at 7 pm", "2026-12-03"),
    ("the twenty first", "2026-12-21"),
    ("in two days", "2026-11-27"),
    ("at seven thirty", None),
])
def test_date(text, expected):
    assert slots.parse_date(text, today=TODAY) == expected


def test_numbers_phone_email_yes_no_choice():
    assert slots.parse_number("four people at seven thirty") == 4
    assert slots.parse_number("we are one hundred and five") == 105
    assert slots.parse_phone("four one five, five five five, two six seven one") == "+14155552671"
    assert slots.parse_phone("call me on 020 7946 0958", region="GB") == "+442079460958"
    assert slots.parse_email("it's ada dot l at example dot com") == "ada.l@example.com"
    assert slots.parse_yes_no("Yeah, that works") is True
    assert slots.parse_yes_no("No, that's not right") is False
    assert slots.parse_yes_no("Hmm") is None
    assert slots.parse_number("for people.") == 4  # how Whisper hears "four people"
    assert slots.parse_number("At 7.30 in the evening, table for 2") == 2
    seating = Slot(name="seat", type="choice",
                   choices={"inside": ["indoors"], "patio": ["outside"]})
    assert slots.parse_choice(seating, "Outside please, not indoors... actually outside") == "patio"
