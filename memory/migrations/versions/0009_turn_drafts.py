"""Turn drafts: the exchange in progress, so that a server killed mid-reply loses no turn.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "turn_drafts",
        sa.Column("call_id", sa.Integer,
                  sa.ForeignKey("calls.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("turns", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("turn_drafts")
