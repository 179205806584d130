"""Redaction of card numbers, phone numbers and email addresses from stored text.

Callers speak numbers, so transcripts hold "four one one one ..." as often as "4111":
runs of spoken digits are turned into digits first, then cards (Luhn-checked),
phone numbers (libphonenumber's matcher) and emails (written or spoken) are replaced.
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers

CARD = "[card number]"
PHONE = "[phone number]"
EMAIL = "[email]"

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "nought": "0", "one": "1", "two": "2", "three": "3",
    "four": "4", "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
_REPEAT_WORDS = {"double": 2, "triple": 3}
_DIGIT_TOKEN = "|".join([*_DIGIT_WORDS, *_REPEAT_WORDS, r"\d+"])
# Four or more digit tokens in a row ("for two" stays as it is), separated by spaces,
# commas or dashes, as ASR writes them.
_SPOKEN_RUN = re.compile(
    rf"\b(?:{_DIGIT_TOKEN})(?:[\s,.-]+(?:{_DIGIT_TOKEN})){{3,}}\b", re.IGNORECASE
)
_CARD_CANDIDATE = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
_SPOKEN_EMAIL = re.compile(
    r"\b[\w.+-]+(?:\s+dot\s+[\w-]+)*\s+at\s+[\w-]+(?:\s+dot\s+[\w-]+)+\b", re.IGNORECASE
)


def spoken_digits_to_digits(text: str) -> str:
    """"four one one one, one one one one" → "4111 1111"-style digit runs."""

    def convert(match: re.Match) -> str:
        if re.fullmatch(r"[\d\s,.-]+", match.group(0)):
            return match.group(0)  # already written as digits: keep the caller's grouping
        out: list[str] = []
        repeat = 1
        for token in re.split(r"[\s,.-]+", match.group(0)):
            word = token.lower()
            if word in _REPEAT_WORDS:
                repeat = _REPEAT_WORDS[word]
                continue
            digits = _DIGIT_WORDS.get(word, token)
            out.append(digits * repeat if len(digits) == 1 else digits)
            repeat = 1
        return "".join(out)

    return _SPOKEN_RUN.sub(convert, text)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


class Redactor:
    """Replaces card numbers, phone numbers and emails in text and JSON values."""

    def __init__(self, *, region: str = "US"):
        self._region = region

    def text(self, text: str) -> str:
        """`text` with emails, Luhn-valid card numbers and phone numbers replaced.

        They become `EMAIL`, `CARD` and `PHONE` ("[email]", "[card number]", "[phone number]").

        Spoken digit runs are turned into digits first, and stay digits in the result even
        when nothing in them is redacted.
        """
        text = spoken_digits_to_digits(text)
        text = _EMAIL.sub(EMAIL, text)
        text = _SPOKEN_EMAIL.sub(EMAIL, text)
        text = _CARD_CANDIDATE.sub(self._card, text)
        return self._phones(text)

    def value(self, value: Any) -> Any:
        """Redact every string inside a JSON-like value."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    @staticmethod
    def _card(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return CARD if _luhn(digits) else match.group(0)

    def _phones(self, text: str) -> str:
        matches = list(
            phonenumbers.PhoneNumberMatcher(
                text, self._region, leniency=phonenumbers.Leniency.POSSIBLE
            )
        )
        for match in reversed(matches):
            text = text[: match.start] + PHONE + text[match.end :]
        return text
