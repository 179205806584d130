"""Call worker: which server process runs a call, so that another can close it if that dies.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("worker", sa.String(64)))
        batch.create_index("ix_calls_worker", ["worker"])


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_worker")
        batch.drop_column("worker")
