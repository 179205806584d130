"""Call variables: what the dialler passed with an outbound call (`caller.*` in flows).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("variables", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("variables")
