"""SQLAlchemy models: calls, their turns, and API tokens."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """The time now, in UTC and timezone-aware: the default of the timestamp columns."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """The declarative base of every table, the admin site's too: one metadata for migrations."""

    pass


class Call(Base):
    """One phone or browser call, created when the webhook answers it."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    stream_sid: Mapped[str | None] = mapped_column(String(64))
    account_sid: Mapped[str | None] = mapped_column(String(64))
    transport: Mapped[str] = mapped_column(String(16), default="twilio")
    from_number: Mapped[str | None] = mapped_column(String(32))
    to_number: Mapped[str | None] = mapped_column(String(32))
    direction: Mapped[str | None] = mapped_column(String(16))  # inbound | outbound
    status: Mapped[str] = mapped_column(String(16), default="ringing", index=True)
    end_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Twilio's answering-machine detection: human, machine_start, machine_end_beep, fax, ...
    answered_by: Mapped[str | None] = mapped_column(String(32))
    transferred_to: Mapped[str | None] = mapped_column(String(64))  # cold transfer target
    # One-time stream token: its nonce, and when it was spent.
    token_nonce: Mapped[str | None] = mapped_column(String(64))
    token_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Both legs as one stereo WAV (left caller, right agent), relative to the data dir.
    recording_path: Mapped[str | None] = mapped_column(String(255))
    # The flow this call ran: its name, version (content hash), nodes visited, slots filled.
    flow_name: Mapped[str | None] = mapped_column(String(128))
    # What the dialler passed with an outbound call; flows read them as `caller.<name>`.
    variables: Mapped[dict | None] = mapped_column(JSON)
    flow_version: Mapped[str | None] = mapped_column(String(64))
    flow_path: Mapped[list | None] = mapped_column(JSON)
    slots: Mapped[dict | None] = mapped_column(JSON)
    caller_id: Mapped[int | None] = mapped_column(
        ForeignKey("callers.id", ondelete="SET NULL"), index=True
    )
    summary: Mapped[str | None] = mapped_column(Text)
    # How the call ended for the business: resolved, transferred, abandoned, voicemail,
    # failed, or what the flow set (`outcome:` on a node).
    outcome: Mapped[str | None] = mapped_column(String(32), index=True)
    # The server process running the call (WORKER_ID): with several, another one closes the
    # calls of a worker that died.
    worker: Mapped[str | None] = mapped_column(String(64), index=True)

    turns: Mapped[list[Turn]] = relationship(
        back_populates="call", order_by="Turn.seq", cascade="all, delete-orphan"
    )
    caller: Mapped[Caller | None] = relationship(back_populates="calls")


class Turn(Base):
    """What one party said, with times in ms from the start of the call."""

    __tablename__ = "turns"
    __table_args__ = (UniqueConstraint("call_id", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    speaker: Mapped[str] = mapped_column(String(16))  # "caller" or "agent": the role
    # Who was heard on the caller's line: "caller", "speaker 2", ... (speaker embeddings).
    speaker_label: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(Text)
    start_ms: Mapped[int] = mapped_column(Integer)
    end_ms: Mapped[int] = mapped_column(Integer)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    # For agent turns: everything it meant to say (text holds what was heard).
    planned_text: Mapped[str | None] = mapped_column(Text)
    # For agent turns: end of caller speech to first agent audio, and its parts.
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    timings: Mapped[dict | None] = mapped_column(JSON)
    # For agent turns answered by a chat model: time to its first token, tokens in and out.
    llm_first_token_ms: Mapped[int | None] = mapped_column(Integer)
    llm_tokens_in: Mapped[int | None] = mapped_column(Integer)
    llm_tokens_out: Mapped[int | None] = mapped_column(Integer)
    # For caller turns: how the caller sounded (neutral, positive, frustrated, sad), with
    # arousal and valence from -1 to 1 (agent/emotion.py).
    emotion: Mapped[str | None] = mapped_column(String(16), index=True)
    arousal: Mapped[float | None] = mapped_column(Float)
    valence: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    call: Mapped[Call] = relationship(back_populates="turns")


class TurnDraft(Base):
    """A call's exchange in progress (caller words not yet answered, the reply heard so
    far), replaced by every later write of the call's turns. A call whose server died
    keeps it: it becomes the call's last turns when the call is stored as interrupted."""

    __tablename__ = "turn_drafts"

    call_id: Mapped[int] = mapped_column(
        ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True)
    turns: Mapped[list] = mapped_column(JSON)  # TurnRecord fields, one dict per turn
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Caller(Base):
    """A person who calls, known by their E.164 number."""

    __tablename__ = "callers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)  # E.164
    name: Mapped[str | None] = mapped_column(String(128))
    language: Mapped[str | None] = mapped_column(String(16))
    first_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    calls: Mapped[list[Call]] = relationship(back_populates="caller")
    memories: Mapped[list[Memory]] = relationship(
        back_populates="caller", cascade="all, delete-orphan"
    )


class Memory(Base):
    """Something worth remembering about a caller: a fact, preference, summary or commitment."""

    __tablename__ = "memories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    caller_id: Mapped[int] = mapped_column(
        ForeignKey("callers.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # fact | preference | summary | commitment
    text: Mapped[str] = mapped_column(Text)
    value: Mapped[dict | None] = mapped_column(JSON)
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)  # float32, normalised
    source_call_id: Mapped[int | None] = mapped_column(
        ForeignKey("calls.id", ondelete="SET NULL")
    )
    source_turn_id: Mapped[int | None] = mapped_column(
        ForeignKey("turns.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confidence: Mapped[float] = mapped_column(Float, default=1.0)

    caller: Mapped[Caller] = relationship(back_populates="memories")


class ApiToken(Base):
    """A bearer token for the JSON API; only its sha256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event for one business webhook URL: a row of the transactional outbox.

    It is written in the transaction that stores the call's end, and sent by whichever
    server process claims it (`callwright.outbox`): pending, then delivered or dead.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Sent with every attempt (Callwright-Delivery): receivers drop the ones they have seen.
    delivery_id: Mapped[str] = mapped_column(String(64), unique=True)
    event: Mapped[str] = mapped_column(String(32))  # call.ended
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # | delivered | dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # made and answered (or not)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The server process whose call ended: it sends at once, after the call's summary;
    # the others only once `next_attempt_at` has passed.
    origin: Mapped[str | None] = mapped_column(String(64))
    # Who is sending it now, and until when; a lapsed lease may be claimed again.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    body: Mapped[str | None] = mapped_column(Text)  # the JSON sent, fixed at the first attempt
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
