"""Admin users, sessions, annotations and audit log (issue 7); full-text index on turns.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

# SQLite: an FTS5 index over turns.text kept in step by triggers (external content).
SQLITE_FTS = [
    "CREATE VIRTUAL TABLE turns_fts USING fts5("
    "text, content='turns', content_rowid='id', tokenize='porter unicode61')",
    "CREATE TRIGGER turns_fts_ai AFTER INSERT ON turns BEGIN "
    "INSERT INTO turns_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER turns_fts_ad AFTER DELETE ON turns BEGIN "
    "INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER turns_fts_au AFTER UPDATE OF text ON turns BEGIN "
    "INSERT INTO turns_fts(turns_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO turns_fts(rowid, text) VALUES (new.id, new.text); END",
    "INSERT INTO turns_fts(turns_fts) VALUES ('rebuild')",
]
SQLITE_FTS_DOWN = [
    "DROP TRIGGER IF EXISTS turns_fts_au",
    "DROP TRIGGER IF EXISTS turns_fts_ad",
    "DROP TRIGGER IF EXISTS turns_fts_ai",
    "DROP TABLE IF EXISTS turns_fts",
]
# PostgreSQL: an expression index that `to_tsvector('english', text) @@ query` uses.
PG_FTS = "CREATE INDEX ix_turns_text_fts ON turns USING gin (to_tsvector('english', text))"
PG_FTS_DOWN = "DROP INDEX IF EXISTS ix_turns_text_fts"


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_login_at", TS),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("admin_users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ip", sa.String(64)),
    )
    op.create_index("ix_admin_sessions_user_id", "admin_sessions", ["user_id"])
    op.create_table(
        "annotations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "call_id", sa.Integer, sa.ForeignKey("calls.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "turn_id", sa.Integer, sa.ForeignKey("turns.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("tag", sa.String(32), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("author_id", sa.Integer, sa.ForeignKey("admin_users.id", ondelete="SET NULL")),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_annotations_call_id", "annotations", ["call_id"])
    op.create_index("ix_annotations_turn_id", "annotations", ["turn_id"])
    op.create_index("ix_annotations_tag", "annotations", ["tag"])
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("admin_users.id", ondelete="SET NULL")),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(64)),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("detail", sa.JSON),
    )
    for column in ("at", "username", "ip", "action"):
        op.create_index(f"ix_admin_audit_{column}", "admin_audit", [column])
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute(PG_FTS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in SQLITE_FTS_DOWN:
            op.execute(statement)
    else:
        op.execute(PG_FTS_DOWN)
    for column in ("at", "username", "ip", "action"):
        op.drop_index(f"ix_admin_audit_{column}", "admin_audit")
    op.drop_table("admin_audit")
    for column in ("tag", "turn_id", "call_id"):
        op.drop_index(f"ix_annotations_{column}", "annotations")
    op.drop_table("annotations")
    op.drop_index("ix_admin_sessions_user_id", "admin_sessions")
    op.drop_table("admin_sessions")
    op.drop_table("admin_users")
