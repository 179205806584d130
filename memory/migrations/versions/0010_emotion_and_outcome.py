"""The caller's emotion per turn, and each call's outcome.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("emotion", sa.String(16), nullable=True))
        batch.add_column(sa.Column("arousal", sa.Float, nullable=True))
        batch.add_column(sa.Column("valence", sa.Float, nullable=True))
        batch.create_index("ix_turns_emotion", ["emotion"])
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("outcome", sa.String(32), nullable=True))
        batch.create_index("ix_calls_outcome", ["outcome"])


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_outcome")
        batch.drop_column("outcome")
    with op.batch_alter_table("turns") as batch:
        batch.drop_index("ix_turns_emotion")
        batch.drop_column("valence")
        batch.drop_column("arousal")
        batch.drop_column("emotion")
