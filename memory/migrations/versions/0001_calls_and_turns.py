"""Calls, turns and API tokens.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("call_sid", sa.String(64), nullable=False, unique=True),
        sa.Column("stream_sid", sa.String(64)),
        sa.Column("account_sid", sa.String(64)),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("from_number", sa.String(32)),
        sa.Column("to_number", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("end_reason", sa.String(64)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("token_nonce", sa.String(64)),
        sa.Column("token_used_at", TS),
        sa.Column("recording_path", sa.String(255)),
        sa.Column("flow_name", sa.String(128)),
        sa.Column("flow_version", sa.String(64)),
        sa.Column("flow_path", sa.JSON),
        sa.Column("slots", sa.JSON),
        sa.Column("summary", sa.Text),
    )
    op.create_index("ix_calls_status", "calls", ["status"])
    op.create_index("ix_calls_started_at", "calls", ["started_at"])
    op.create_table(
        "turns",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "call_id", sa.Integer, sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("speaker", sa.String(16), nullable=False),
        sa.Column("speaker_label", sa.String(32)),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("start_ms", sa.Integer, nullable=False),
        sa.Column("end_ms", sa.Integer, nullable=False),
        sa.Column("interrupted", sa.Boolean, nullable=False),
        sa.Column("planned_text", sa.Text),
        sa.Column("latency_ms", sa.Integer),
        sa.Column("timings", sa.JSON),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("call_id", "seq"),
    )
    op.create_index("ix_turns_call_id", "turns", ["call_id"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_index("ix_turns_call_id", "turns")
    op.drop_table("turns")
    op.drop_index("ix_calls_started_at", "calls")
    op.drop_index("ix_calls_status", "calls")
    op.drop_table("calls")
