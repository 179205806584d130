"""Turn LLM usage: a chat model's time to first token and tokens in and out, per agent turn.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("llm_first_token_ms", "llm_tokens_in", "llm_tokens_out")


def upgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
