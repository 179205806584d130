"""What the agent says, as Jinja2 templates rendered in a sandbox.

`{{ slots.date | spoken_date }}`, `{{ caller.name }}`: a missing value renders as
nothing rather than failing the call; templates cannot reach Python internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, time
from functools import lru_cache

from jinja2 import ChainableUndefined, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment


def spoken_date(value) -> str:
    """Filter: an ISO date as said aloud, e.g. "Tuesday, December 1st".

    Any other value comes back as text, None as "".
    """
    try:
        day = date.fromisoformat(str(value))
    except ValueError:
        return str(value or "")
    n = day.day
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{day:%A}, {day:%B} {n}{suffix}"


def spoken_time(value) -> str:
    """Filter: an ISO time as said aloud, e.g. "7:30 PM", "9 AM", "noon".

    Any other value comes back as text, None as "".
    """
    try:
        t = time.fromisoformat(str(value))
    except ValueError:
        return str(value or "")
    if t.hour == 12 and t.minute == 0:
        return "noon"
    hour = t.hour % 12 or 12
    minutes = f":{t.minute:02d}" if t.minute else ""
    return f"{hour}{minutes} {'PM' if t.hour >= 12 else 'AM'}"


def spoken_digits(value) -> str:
    """Filter `digits`: the digits of a value, space-separated, so each is read out on its own."""
    return " ".join(ch for ch in str(value or "") if ch.isdigit())


_env = ImmutableSandboxedEnvironment(undefined=ChainableUndefined, autoescape=False)
_env.filters.update(spoken_date=spoken_date, spoken_time=spoken_time, digits=spoken_digits)


class TemplateError(ValueError):
    """A template is not valid (`check`) or failed to render (`render`)."""
    pass


@lru_cache(maxsize=2048)
def _compile(source: str):
    try:
        return _env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template error: {exc.message} (template line {exc.lineno})") from None


def check(source: str) -> None:
    """Compile a template (compiled templates are cached); raise TemplateError if it is invalid."""
    _compile(source)


def render(source: str, context: Mapping) -> str:
    """Render a template over `context`, its whitespace collapsed to single spaces.

    A missing value renders as nothing.

    Raises:
        TemplateError: The template is invalid, or rendering failed (the sandbox refused
            an operation, a filter got a bad argument).
    """
    try:
        return " ".join(_compile(source).render(**context).split())
    except TemplateError:
        raise
    except Exception as exc:  # a sandbox refusal or a bad filter argument
        raise TemplateError(f"template failed: {exc}") from None
