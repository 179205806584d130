"""Jinja filters for the admin pages: times, durations and search highlights."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlencode

from jinja2 import Environment
from markupsafe import Markup, escape

from callwright.admin.calls import search_words


def clock(ms: int | None) -> str:
    """Milliseconds into the call as m:ss.s."""
    if ms is None:
        return ""
    minutes, rest = divmod(max(ms, 0) / 1000, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def when(moment: datetime | None) -> str:
    """A time as `YYYY-MM-DD HH:MM:SS UTC` (a naive one is taken as UTC); "—" for None."""
    if moment is None:
        return "—"
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    """Seconds, rounded, as "N min SS s" or, under a minute, "N s"; "—" for None."""
    if seconds is None:
        return "—"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def highlight(text: str, query: str) -> Markup:
    """Escape `text` and mark words starting like the searched ones (stems match too)."""
    words = search_words(query)
    if not words:
        return escape(text)
    # Matched in the raw text, then escaped piece by piece: a search for "amp" must not
    # land inside the "&amp;" that escaping makes.
    pattern = re.compile(r"\b(" + "|".join(re.escape(w[:5]) for w in words) + r")\w*", re.I)
    pieces, start = [], 0
    for match in pattern.finditer(text):
        pieces += [escape(text[start:match.start()]), Markup("<mark>%s</mark>") % match[0]]
        start = match.end()
    return Markup("").join([*pieces, escape(text[start:])])


def unheard(planned: str | None, heard: str) -> str:
    """What the agent planned but never said, when its reply was cut off."""
    if not planned:
        return ""
    said = heard.strip()
    return planned[len(said):].strip() if planned.startswith(said) else planned


def register(env: Environment) -> None:
    """Add this module's filters to `env`, and `urlencode_dict` (a dict as a query string)."""
    env.filters.update(clock=clock, when=when, duration=duration, highlight=highlight,
                       unheard=unheard, urlencode_dict=lambda d: urlencode(d))
