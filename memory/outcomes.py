"""How a call ended for the business (its outcome), and the `call.ended` event that tells
the business's webhooks about it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from callwright.agent.emotion import EMOTIONS
from callwright.memory.models import Call, Turn

CALL_ENDED = "call.ended"
OUTCOMES = ("resolved", "transferred", "abandoned", "voicemail", "failed")

# Statuses of a call that never became a conversation, or was cut off by us.
FAILED_STATUSES = frozenset({"failed", "busy", "no-answer", "canceled", "interrupted"})
# Every end reason callwright stores (`calls.end_reason`), and what it means on its own:
# a flow's outcome, a transfer or an answering machine come first (see `call_outcome`).
END_REASONS: dict[str, str] = {
    "agent-hangup": "resolved",  # the agent (a flow's end_call, the receptionist) hung up
    "caller-hangup": "abandoned",  # Twilio's stop event; a browser that left
    "idle-timeout": "abandoned",  # a browser call where nobody spoke for WEBRTC_IDLE_TIMEOUT
    "transferred": "transferred",  # a cold transfer to a person
    "voicemail": "voicemail",  # an answering machine: message left, or hung up on
    "pipeline-error": "failed",  # the call's pipeline raised
    "stream-dropped": "failed",  # Twilio's media stream closed without a stop event
    "no-connection": "failed",  # a browser's ICE/DTLS never connected
    "server-stopped": "failed",  # cut off at shutdown, or left open by a server that died
    "server-shutdown": "failed",  # a browser call hung up by a server shutting down
    "worker-lost": "failed",  # its server process died; another one closed it
    # Twilio's status callback closed a call whose stream never did: it never became a
    # conversation with the agent (not answered, busy, or the stream never came).
    "twilio-completed": "failed",
    "twilio-busy": "failed",
    "twilio-failed": "failed",
    "twilio-no-answer": "failed",
    "twilio-canceled": "failed",
}


def call_outcome(
    *,
    status: str,
    end_reason: str | None,
    transferred_to: str | None = None,
    answered_by: str | None = None,
    flow_outcome: str | None = None,
) -> str:
    """How a call ended for the business, from how it was stored as ending.

    The first rule that applies decides:

    1. `flow_outcome`: what the flow set during the call (e.g. "booked") is kept.
    2. "transferred": the call was handed to a person (`transferred_to` set, or the end
       reason "transferred").
    3. "voicemail": an answering machine took it (`answered_by` machine_start,
       machine_end_beep, ...; or the end reason "voicemail").
    4. "failed": it never became a conversation or was cut off on our side: a status of
       failed, busy, no-answer, canceled or interrupted, or a failing end reason
       (pipeline-error, stream-dropped, no-connection, worker-lost, server-stopped,
       server-shutdown, twilio-*). A fax answering is failed too.
    5. "abandoned": the caller hung up before the agent ended the call (caller-hangup,
       Twilio's and the browser's), or went silent (idle-timeout).
    6. "resolved": the agent ended the call (agent-hangup).

    An end reason not in `END_REASONS` counts as resolved on a completed call and as
    failed on any other.

    Args:
        status: The call's stored status (`calls.status`).
        end_reason: Its end reason (`calls.end_reason`).
        transferred_to: Where it was transferred, if it was.
        answered_by: Twilio's answering-machine detection result, on outbound calls.
        flow_outcome: The outcome the flow set (`calls.outcome` before the end).

    Returns:
        One of `OUTCOMES`, or `flow_outcome`.
    """
    if flow_outcome:
        return flow_outcome
    reason = end_reason or ""
    if transferred_to or reason == "transferred":
        return "transferred"
    if (answered_by or "").startswith("machine") or reason == "voicemail":
        return "voicemail"
    meaning = END_REASONS.get(reason)
    if status in FAILED_STATUSES or meaning == "failed" or answered_by == "fax":
        return "failed"
    if meaning is not None:
        return meaning
    return "resolved" if status == "completed" else "failed"


def emotion_trajectory(turns: Iterable[Turn]) -> dict[str, Any]:
    """How the caller sounded over the call: each caller turn's emotion, counts, the last.

    Returns:
        `{"turns": [{"seq", "start_ms", "emotion", "arousal", "valence"}, ...],
        "counts": {label: n}, "last": label or None}`: every caller turn in order (its
        emotion None where it was not analysed); counts of each label (the four known ones
        always present); the last turn's label that is not None.
    """
    points = [
        {"seq": t.seq, "start_ms": t.start_ms, "emotion": t.emotion, "arousal": t.arousal,
         "valence": t.valence}
        for t in sorted(turns, key=lambda t: t.seq) if t.speaker == "caller"
    ]
    labels = [p["emotion"] for p in points if p["emotion"]]
    counts = Counter({label: 0 for label in EMOTIONS})
    counts.update(labels)
    return {"turns": points, "counts": dict(counts), "last": labels[-1] if labels else None}


async def call_ended_event(
    session: AsyncSession, call_id: int, *, delivery_id: str
) -> dict[str, Any] | None:
    """The `call.ended` event of a call as stored now, or None when it is not stored.

    Args:
        session: A session to read the call and its turns with.
        call_id: The call.
        delivery_id: The delivery's id, repeated in the event for receivers.

    Returns:
        `{"event", "delivery_id", "occurred_at", "call", "flow", "slots", "summary",
        "emotion"}`, ready for `json.dumps` (README, "Call outcomes and business
        webhooks", has an example).
    """
    call = await session.get(Call, call_id)
    if call is None:
        return None
    turns = list(await session.scalars(
        select(Turn).where(Turn.call_id == call_id, Turn.speaker == "caller")
        .order_by(Turn.seq)
    ))
    started, ended = _utc(call.started_at), _utc(call.ended_at)
    duration = round((ended - started).total_seconds(), 3) if started and ended else None
    flow = None
    if call.flow_name:
        flow = {"name": call.flow_name, "version": call.flow_version,
                "path": list(call.flow_path or [])}
    return {
        "event": CALL_ENDED,
        "delivery_id": delivery_id,
        "occurred_at": _iso(ended),
        "call": {
            "id": call.id,
            "call_sid": call.call_sid,
            "stream_sid": call.stream_sid,
            "account_sid": call.account_sid,
            "transport": call.transport,
            "direction": call.direction,
            "from_number": call.from_number,
            "to_number": call.to_number,
            "caller_id": call.caller_id,
            "created_at": _iso(_utc(call.created_at)),
            "started_at": _iso(started),
            "ended_at": _iso(ended),
            "duration_s": duration,
            "status": call.status,
            "end_reason": call.end_reason,
            "outcome": call.outcome,
            "transferred_to": call.transferred_to,
            "answered_by": call.answered_by,
        },
        "flow": flow,
        "slots": dict(call.slots or {}),
        "summary": call.summary,
        "emotion": emotion_trajectory(turns),
    }


def _utc(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were stored in UTC."""
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None
