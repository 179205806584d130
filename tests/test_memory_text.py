"""Phone numbers to E.164, and redaction of cards, phones and emails, spoken or written."""

import pytest

from callwright.memory.extract import DeterministicExtractor, SpokenTurn
from callwright.memory.numbers import to_e164
from callwright.memory.redact import CARD, EMAIL, PHONE, Redactor, spoken_digits_to_digits


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (415) 555-0123", "US", "+14155550123"),
        ("415.555.0123", "US", "+14155550123"),
        ("+44 20 7946 0958", "US", "+442079460958"),
        ("020 7946 0958", "GB", "+442079460958"),
        ("0044 20 7946 0958", "GB", "+442079460958"),
        ("+4930123456", "DE", "+4930123456"),
        ("anonymous", "US", None),
        ("+266696687", "US", None),  # Twilio's withheld-number placeholder
        ("client:alice", "US", None),
        ("12", "US", None),
        ("", "US", None),
        (None, "US", None),
    ],
)
def test_e164(raw, region, expected):
    assert to_e164(raw, default_region=region) == expected


def test_spoken_digits_become_digits_only_in_runs():
    assert spoken_digits_to_digits("double four triple seven one two") == "4477712"
    assert spoken_digits_to_digits("a table for two at seven") == "a table for two at seven"
    assert spoken_digits_to_digits("call 4111-1111") == "call 4111-1111"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("My card is four one one one one one one one one one one one one one one one.",
         f"My card is {CARD}."),
        ("It's 4111 1111 1111 1111, expiry 12/27.", f"It's {CARD}, expiry 12/27."),
        ("Four one one one, 1111, one one one one, 1111", CARD),
        ("Call me on five five five, zero one zero, zero zero zero one.",
         f"Call me on {PHONE}."),
        ("my number is +44 20 7946 0958", f"my number is {PHONE}"),
        ("write to alice.smith@example.co.uk today", f"write to {EMAIL} today"),
        ("it's alice at example dot com", f"it's {EMAIL}"),
        # Not sensitive: left exactly as said.
        ("4111 1111 1111 1112 fails the Luhn check", "4111 1111 1111 1112 fails the Luhn check"),
        ("A table for two at seven, order 12345.", "A table for two at seven, order 12345."),
        ("We are open from nine to nine.", "We are open from nine to nine."),
    ],
)
def test_redaction(text, expected):
    assert Redactor(region="US").text(text) == expected


def test_redaction_reaches_into_json_values():
    value = {"card": "four" + " one" * 15, "notes": ["ring 415 555 0123"], "party": 2}
    assert Redactor().value(value) == {"card": CARD, "notes": [f"ring {PHONE}"], "party": 2}


def test_deterministic_extractor():
    turns = [
        SpokenTurn(speaker="agent", text="Hello, how can I help you today?"),
        SpokenTurn(speaker="caller", text="Hello."),
        SpokenTurn(speaker="caller", text="I would like a table for tomorrow evening."),
        SpokenTurn(speaker="agent", text="Noted, and we will text you a confirmation. Bye?"),
        SpokenTurn(speaker="caller", text="No thanks, goodbye."),
        SpokenTurn(speaker="caller", text="Okay. Thank you, bye!"),
    ]
    extraction = DeterministicExtractor().extract(
        turns=turns, slots={"name": "Alice", "party_size": 4, "notes": ""}
    )
    assert extraction.summary == (
        "The caller said “I would like a table for tomorrow evening.” "
        "Collected: name Alice, party size 4. Promised: we will text you a confirmation."
    )
    assert [(f.kind, f.text, f.value) for f in extraction.facts] == [
        ("fact", "Name: Alice", {"name": "Alice"}),
        ("fact", "Party size: 4", {"party_size": 4}),
    ]
    assert DeterministicExtractor().extract(turns=[], slots=None).summary is None
