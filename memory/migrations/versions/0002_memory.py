"""Callers and long-term memories (issue 5).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "callers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(128)),
        sa.Column("language", sa.String(16)),
        sa.Column("first_seen", TS, nullable=False),
        sa.Column("last_seen", TS, nullable=False),
    )
    op.create_table(
        "memories",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "caller_id", sa.Integer, sa.ForeignKey("callers.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("value", sa.JSON),
        sa.Column("embedding", sa.LargeBinary),
        sa.Column("source_call_id", sa.Integer, sa.ForeignKey("calls.id", ondelete="SET NULL")),
        sa.Column("source_turn_id", sa.Integer, sa.ForeignKey("turns.id", ondelete="SET NULL")),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("confidence", sa.Float, nullable=False),
    )
    op.create_index("ix_memories_caller_id", "memories", ["caller_id"])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("caller_id", sa.Integer))
        batch.create_foreign_key(
            "fk_calls_caller_id", "callers", ["caller_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_calls_caller_id", ["caller_id"])


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_caller_id")
        batch.drop_constraint("fk_calls_caller_id", type_="foreignkey")
        batch.drop_column("caller_id")
    op.drop_index("ix_memories_caller_id", "memories")
    op.drop_table("memories")
    op.drop_table("callers")
