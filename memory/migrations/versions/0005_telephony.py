"""Telephony: call direction, answering-machine result, transfer target (issue 9).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("direction", sa.String(16)))
        batch.add_column(sa.Column("answered_by", sa.String(32)))
        batch.add_column(sa.Column("transferred_to", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("transferred_to")
        batch.drop_column("answered_by")
        batch.drop_column("direction")
