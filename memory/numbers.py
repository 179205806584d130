"""Phone numbers as callers are known by: E.164, parsed by Google's libphonenumber."""

from __future__ import annotations

import phonenumbers


def to_e164(raw: str | None, *, default_region: str = "US") -> str | None:
    """`raw` as E.164 (`+14155550123`), or None when it is not a dialable number.

    Withheld and non-phone callers ("anonymous", Twilio's `+266696687`, `client:alice`)
    are not numbers anyone can be recognised by, so they give None too.
    """
    if not raw or ":" in raw:
        return None
    try:
        number = phonenumbers.parse(raw.strip(), default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number) or str(number.national_number) == "696687":
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
