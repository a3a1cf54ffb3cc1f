"""hot paths: limits per account, a task-in-flight counter, partial indexes for estimates

Rate windows are counted per account (and per kind of request) instead of per key, so
self-minted keys cannot multiply an account's limit; `accounts.tasks_in_flight` is kept
by every reserve, charge and release, so the in-flight limit is one conditional UPDATE;
two partial indexes let the queue estimate read pending and recently completed tasks
without scanning the table.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")
COMPLETED = sa.text("status = 'completed'")


def upgrade() -> None:
    op.drop_table("rate_windows")
    op.create_table(
        "rate_windows",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.String(16), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id", "bucket", "window_start"),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("tasks_in_flight", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE accounts SET tasks_in_flight = (SELECT count(*) FROM tasks WHERE "
        "tasks.account_id = accounts.id AND tasks.status IN ('pending', 'processing'))"
    )
    op.create_index(
        "ix_tasks_pending_quality",
        "tasks",
        ["quality", "created_at"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_tasks_completed_quality",
        "tasks",
        ["quality", "finished_at"],
        sqlite_where=COMPLETED,
        postgresql_where=COMPLETED,
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_completed_quality", table_name="tasks")
    op.drop_index("ix_tasks_pending_quality", table_name="tasks")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("tasks_in_flight")
    op.drop_table("rate_windows")
    op.create_table(
        "rate_windows",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"]),
        sa.PrimaryKeyConstraint("key_id", "window_start"),
    )
