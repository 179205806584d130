"""Slot values from what the caller said, with well-kept parsers where they exist.

Dates through `dateparser`, phone numbers through `phonenumbers`, number words
through `word2number`. Values are stored in plain, template-friendly forms: ISO
dates (`2026-12-01`), 24-hour times (`19:30`), E.164 numbers, ints or floats,
booleans for yes/no, and the canonical option for a choice. Parsing runs in a
worker thread (dateparser and the regexes are CPU work).
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

import dateparser
import phonenumbers
from word2number import w2n

from callwright.flows.schema import Slot

_DIGIT_WORDS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}
_NUMBER_WORDS = set(w2n.american_number_system) - {"point"}
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
    "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
    "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
    "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}
_NUM = "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True))
_NUMBER_RUN = re.compile(rf"\b(?:{_NUM})(?:(?:\s+|-)(?:and\s+)?(?:{_NUM}))*\b", re.I)
_ORDINAL_WORD = re.compile(
    rf"\b(?:(twenty|thirty)[\s-])?({'|'.join(_ORDINALS)})\b", re.I
)


def _ordinal_suffix(n: int) -> str:
    return "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def words_to_numbers(text: str) -> str:
    """'four people at seven thirty on the third' -> '4 people at 7 30 on the 3rd'."""

    def ordinal(match: re.Match) -> str:
        tens = {"twenty": 20, "thirty": 30}.get((match[1] or "").lower(), 0)
        n = _ORDINALS[match[2].lower()] + tens
        return f"{n}{_ordinal_suffix(n)}"

    def number(match: re.Match) -> str:
        words = re.split(r"[\s-]+", match[0].lower())
        # "seven thirty" is two numbers, as people say times; "thirty five" is one.
        groups: list[list[str]] = [[]]
        for word in words:
            prev = groups[-1][-1] if groups[-1] else None
            if prev and _is_unit(prev) and word not in ("hundred", "thousand", "million", "and"):
                groups.append([])
            groups[-1].append(word)
        out = []
        for group in groups:
            try:
                out.append(str(w2n.word_to_num(" ".join(group))))
            except ValueError:
                out.append(" ".join(group))
        return " ".join(out)

    return _NUMBER_RUN.sub(number, _ORDINAL_WORD.sub(ordinal, text))


def _is_unit(word: str) -> bool:
    return word in ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                    "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                    "seventeen", "eighteen", "nineteen")


_YES = re.compile(
    r"\b(yes|yeah|yep|yup|sure|correct|right|absolutely|definitely|of course|okay|ok|"
    r"confirm(?:ed)?|please do|sounds good|that works|perfect|great|affirmative|i do|i will)\b",
    re.I,
)
_NO = re.compile(
    r"\b(no|nope|nah|not|don'?t|wrong|incorrect|negative|cancel|never mind|can'?t|cannot)\b",
    re.I,
)


def parse_yes_no(text: str) -> bool | None:
    """True for a yes, False for a no, None for neither; when both are said, the first wins."""
    no, yes = _NO.search(text), _YES.search(text)
    if no and (not yes or no.start() <= yes.start()):
        return False  # "no, that's not right" / "not really"
    return True if yes else None


_TIME = re.compile(
    r"\b(?P<h>[01]?\d|2[0-3])(?!\d|st|nd|rd|th)(?:[:.\s](?P<m>[0-5]\d))?\s*"
    r"(?P<ap>a\.?\s?m\.?|p\.?\s?m\.?|o'?clock|in the (?:morning|afternoon|evening)|tonight)?",
    re.I,
)
_TIME_WORDS = {"noon": time(12, 0), "midday": time(12, 0), "midnight": time(0, 0)}


def parse_time(text: str, *, asked: bool = False) -> str | None:
    """The last time named; `asked`: the question was about a time, so "8" is 8 o'clock."""
    normal = words_to_numbers(text).lower()
    # ASR writes "7:30" as "730" or "7.30": "at 730", "730 pm" -> "7:30"
    normal = re.sub(r"\b(at|around|by)\s+(\d{1,2})([0-5]\d)\b", r"\1 \2:\3", normal)
    normal = re.sub(r"\b(\d{1,2})([0-5]\d)\s*(?=[ap]\.?\s?m\b|in the|tonight)", r"\1:\2 ", normal)
    normal = re.sub(r"\bhalf past (\d{1,2})\b", r"\1:30", normal)
    normal = re.sub(r"\bquarter past (\d{1,2})\b", r"\1:15", normal)
    found: time | None = None
    for word, value in _TIME_WORDS.items():
        if re.search(rf"\b{word}\b", normal):
            found = value
    candidates = []
    for match in _TIME.finditer(normal):
        hour, minute, suffix = int(match["h"]), int(match["m"] or 0), (match["ap"] or "")
        # A bare number is a time only when clearly one ("at 7"), not a count ("for 4").
        before = normal[max(0, match.start() - 6): match.start()]
        clear = asked or re.search(r"\b(at|around|by|about)\s*$", before)
        if not suffix and not match["m"] and not clear:
            continue
        suffix = suffix.replace(".", "").replace(" ", "")
        if suffix.startswith("pm") or suffix in ("intheafternoon", "intheevening", "tonight"):
            if hour < 12:
                hour += 12
        elif suffix.startswith("am") and hour == 12:
            hour = 0
        elif not suffix.startswith("am") and 1 <= hour <= 7:
            hour += 12  # "at 7" on a phone line means the evening, not 7 in the morning
        candidates.append(time(hour, minute))
    if candidates:
        found = candidates[-1]  # "7, no, make it 8" -> the last one said
    return found.strftime("%H:%M") if found else None


_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|"
           "december|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTH_DAY = re.compile(
    rf"\b(?:(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?(?:,?\s+\d{{4}})?"
    rf"|(?:the\s+)?\d{{1,2}}(?:st|nd|rd|th)?\s+of\s+(?:{_MONTHS}))\b"
    rf"|\b\d{{4}}-\d{{2}}-\d{{2}}\b|\b\d{{1,2}}/\d{{1,2}}(?:/\d{{2,4}})?\b",
    re.I,
)
_DAY_OF_MONTH = re.compile(r"\bthe\s+(\d{1,2})(?:st|nd|rd|th)\b|\b(\d{1,2})(?:st|nd|rd|th)\b", re.I)
_WEEKDAY = re.compile(rf"\b({'|'.join(_WEEKDAYS)})s?\b", re.I)
_RELATIVE = re.compile(
    r"\b(today|tonight|this (?:morning|afternoon|evening)|day after tomorrow|tomorrow|"
    r"in (\d+) days?|in a week|a week from today|next week)\b", re.I,
)


def parse_date(text: str, *, today: date | None = None) -> str | None:
    """The date the caller named last: "not Tuesday, Thursday" gives Thursday."""
    today = today or date.today()
    normal = words_to_numbers(text)
    found: list[tuple[int, date]] = []
    base = datetime.combine(today, time(12, 0))
    for match in _MONTH_DAY.finditer(normal):
        value = dateparser.parse(match[0], languages=["en"], settings={
            "PREFER_DATES_FROM": "future", "RELATIVE_BASE": base})
        if value:
            found.append((match.start(), value.date()))
    months = [(m.start(), m.end()) for m in _MONTH_DAY.finditer(normal)]
    for match in _DAY_OF_MONTH.finditer(normal):
        if any(a <= match.start() < b for a, b in months):
            continue
        day = int(match[1] or match[2])
        if 1 <= day <= 31:
            found.append((match.start(), _next_day_of_month(today, day)))
    for match in _WEEKDAY.finditer(normal):
        if any(a <= p < b for a, b in months for p in (match.end() + 1,)):
            continue  # "Friday, December 4th": the month and day say it
        if any(abs(p - match.end()) <= 8 for p, _ in found):
            continue  # "Friday the 12th"
        ahead = (_WEEKDAYS.index(match[1].lower()) - today.weekday()) % 7 or 7
        found.append((match.start(), today + timedelta(days=ahead)))
    for match in _RELATIVE.finditer(normal):
        word = match[1].lower()
        if word.startswith(("today", "tonight", "this")):
            days = 0
        elif word == "tomorrow":
            days = 1
        elif word == "day after tomorrow":
            days = 2
        elif match[2]:
            days = int(match[2])
        else:
            days = 7
        found.append((match.start(), today + timedelta(days=days)))
    if not found:
        return None
    return max(found, key=lambda item: item[0])[1].isoformat()


def _next_day_of_month(today: date, day: int) -> date:
    year, month = today.year, today.month
    for _ in range(13):
        try:
            candidate = date(year, month, day)
        except ValueError:
            candidate = None
        if candidate and candidate >= today:
            return candidate
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return today


_TIME_PHRASE = re.compile(
    r"\b(?:at|around|by)\s+\d{1,2}(?:[:.\s]\d\d)?\b|"
    r"\b\d{1,2}\.\d\d\s*(?=[ap]\.?m|in the)|\b\d{1,2}(?::\d\d)?\s*[ap]\.?m\b|"
    r"\b\d{1,2}:\d\d\b|\b\d{1,2}(?:st|nd|rd|th)\b", re.I,
)


def parse_number(text: str) -> int | float | None:
    """The first count that is not part of a time or a date ("4 people at 7 30" gives 4)."""
    normal = _TIME_PHRASE.sub(" ", words_to_numbers(text))
    # Speech recognisers hear "four people" as "for people", "two guests" as "to guests".
    normal = re.sub(r"\b(for|to|too)\s+(?=(people|persons|guests|adults|of us)\b)",
                    lambda m: "4 " if m[1].lower() == "for" else "2 ", normal, flags=re.I)
    numbers = re.findall(r"-?\d+(?:\.\d+)?", normal.replace(",", ""))
    if not numbers:
        return None
    return float(numbers[0]) if "." in numbers[0] else int(numbers[0])


def _spoken_digits(text: str) -> str:
    tokens = re.findall(r"[A-Za-z]+|\d+|\+", text.lower())
    out = []
    for tok in tokens:
        if tok in _DIGIT_WORDS:
            out.append(_DIGIT_WORDS[tok])
        elif tok.isdigit() or tok == "+":
            out.append(tok)
        elif tok in ("double", "triple"):
            out.append(tok)
    # "double five" -> "55"
    joined: list[str] = []
    repeat = 1
    for tok in out:
        if tok == "double":
            repeat = 2
        elif tok == "triple":
            repeat = 3
        else:
            joined.append(tok * repeat if len(tok) == 1 else tok)
            repeat = 1
    return "".join(joined)


def parse_digits(slot: Slot, text: str) -> str | None:
    """A string of digits said as digits ("four two one seven", "4217", "double five"): an
    order number or a PIN, not a count. With `slot.length`, only that many digits."""
    digits = re.sub(r"\D", "", _spoken_digits(text))
    if not digits or (slot.length is not None and len(digits) != slot.length):
        return None
    return digits


def parse_phone(text: str, *, region: str = "US") -> str | None:
    """The first valid phone number in `text`, as written or spoken digit by digit, in E.164.

    Args:
        text: What the caller said.
        region: Where a number without a country code is from (ISO 3166 code).
    """
    for candidate in (text, _spoken_digits(text)):
        for match in phonenumbers.PhoneNumberMatcher(candidate, region):
            if phonenumbers.is_valid_number(match.number):
                return phonenumbers.format_number(
                    match.number, phonenumbers.PhoneNumberFormat.E164
                )
    return None


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def parse_email(text: str) -> str | None:
    """The email address in `text`, lower-cased; a spoken "at" and "dot" are understood."""
    spoken = re.sub(r"\s+at\s+", "@", text.strip(), flags=re.I)
    spoken = re.sub(r"\s+dot\s+", ".", spoken, flags=re.I)
    spoken = re.sub(r"(?<=\S)\s*@\s*(?=\S)", "@", spoken)
    for candidate in (text, spoken, spoken.replace(" ", "")):
        match = _EMAIL.search(candidate)
        if match:
            return match.group(0).rstrip(".").lower()
    return None


def parse_choice(slot: Slot, text: str) -> str | None:
    """The option of a `choice` slot named last in `text`, by its name or one of its words."""
    best: tuple[int, str] | None = None
    lowered = text.lower()
    for option, words in slot.choice_words().items():
        for word in words:
            for match in re.finditer(rf"\b{re.escape(word.lower())}\b", lowered):
                if best is None or match.start() >= best[0]:
                    best = (match.start(), option)  # the last option named wins
    return best[1] if best else None


def parse_text(slot: Slot, text: str) -> str | None:
    """A `text` slot's value: what was said, trimmed of punctuation; None when nothing is left.

    With the slot's `pattern` (searched case-insensitively), its first non-empty group,
    else the whole match; None when it does not match.
    """
    cleaned = text.strip().strip(".!?,; ")
    if slot.pattern:
        match = re.search(slot.pattern, cleaned, re.I)
        if not match:
            return None
        value = next((g for g in match.groups() if g), match.group(0))
        return value.strip().strip(".!?,; ") or None
    return cleaned or None


def parse(
    slot: Slot, text: str, *, today: date | None = None, region: str = "US", asked: bool = False
):
    """The slot's value in `text`, or None; `asked`: its question was the last one put."""
    match slot.type:
        case "text":
            return parse_text(slot, text)
        case "number":
            return parse_number(text)
        case "digits":
            return parse_digits(slot, text)
        case "date":
            return parse_date(text, today=today)
        case "time":
            return parse_time(text, asked=asked)
        case "phone":
            return parse_phone(text, region=region)
        case "email":
            return parse_email(text)
        case "yes_no":
            return parse_yes_no(text)
        case "choice":
            return parse_choice(slot, text)
    raise ValueError(f"unknown slot type {slot.type!r}")


def coerce(slot: Slot, value, *, today: date | None = None, region: str = "US"):
    """A value an LLM passed in a tool call, in the slot's stored form (or None)."""
    if value is None:
        return None
    if slot.type == "yes_no" and isinstance(value, bool):
        return value
    if slot.type == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if slot.type == "date":
        try:
            return date.fromisoformat(str(value)).isoformat()
        except ValueError:
            pass
    if slot.type == "time":
        try:
            return time.fromisoformat(str(value)).strftime("%H:%M")
        except ValueError:
            pass
    if slot.type == "text" and not slot.pattern:
        return str(value).strip() or None
    return parse(slot, str(value), today=today, region=region, asked=True)


def json_type(slot: Slot) -> dict:
    """The JSON Schema of the slot's value, for an LLM tool's parameters."""
    description = slot.description or slot.prompt or slot.name
    match slot.type:
        case "number":
            return {"type": "number", "description": description}
        case "yes_no":
            return {"type": "boolean", "description": description}
        case "date":
            return {"type": "string", "format": "date", "description": description}
        case "time":
            return {"type": "string", "description": f"{description} (24-hour HH:MM)"}
        case "phone":
            return {"type": "string", "description": f"{description} (E.164)"}
        case "digits":
            count = f"{slot.length} digits" if slot.length else "digits only"
            return {"type": "string", "pattern": r"^\d+$",
                    "description": f"{description} ({count})"}
        case "email":
            return {"type": "string", "format": "email", "description": description}
        case "choice":
            return {"type": "string", "enum": list(slot.choice_words()), "description": description}
    return {"type": "string", "description": description}
