"""Typed settings for long-term memory, read from `MEMORY_*` environment variables."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

KINDS = ("fact", "preference", "summary", "commitment")


class RetentionDays(BaseModel):
    """How long each kind of memory is kept, in days; None keeps it until erased.

    Set one with e.g. `MEMORY_RETENTION__SUMMARY=365`.
    """

    fact: int | None = Field(None, ge=1)
    preference: int | None = Field(None, ge=1)
    summary: int | None = Field(365, ge=1)
    commitment: int | None = Field(180, ge=1)

    def of(self, kind: str) -> timedelta | None:
        """How long memories of `kind` (one of `KINDS`) are kept; None keeps them until erased."""
        days = getattr(self, kind)
        return None if days is None else timedelta(days=days)


class MemorySettings(BaseSettings):
    """Long-term memory's settings, from `MEMORY_*` environment variables or `.env`."""

    model_config = SettingsConfigDict(
        env_prefix="MEMORY_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    retention: RetentionDays = Field(default_factory=RetentionDays)
    redact: bool = Field(
        False, description="Redact card numbers, phone numbers and emails in stored text."
    )
    default_region: str = Field(
        "US", description="Region for numbers given without a country code (ISO 3166)."
    )
    recall_k: int = Field(5, ge=0, description="Memories handed to a call at its start.")
    recall_goal: str = Field(
        "bookings, requests, preferences and promises made to the caller",
        description="What recall ranks memories against when the flow names no goal.",
    )
    recall_timeout_s: float = Field(
        1.0, gt=0, description="A call starts without memory rather than wait longer."
    )
