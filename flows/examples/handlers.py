"""Python the example flows call by import path (declared under `handlers:`)."""

from __future__ import annotations

from datetime import date, time

OPEN = time(8, 0), time(17, 0)


def dental_availability(day: str, at: str) -> dict:
    """A stand-in diary: weekdays 8-5, nothing free on Wednesday afternoons."""
    when_day, when_time = date.fromisoformat(day), time.fromisoformat(at)
    if when_day.weekday() >= 5 or not OPEN[0] <= when_time < OPEN[1]:
        return {"available": False, "reason": "closed"}
    if when_day.weekday() == 2 and when_time >= time(12, 0):
        return {"available": False, "reason": "taken", "alternative": "10:00"}
    return {"available": True}
