"""account limits

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 05:28:12.425279
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_windows",
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
        ),
        sa.PrimaryKeyConstraint("key_id", "window_start"),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index("ix_tasks_key_status", ["api_key_id", "status"], unique=False)

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requests_per_minute", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_tasks_in_flight", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("daily_spend_cap_units", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("daily_spend_cap_units")
        batch_op.drop_column("max_tasks_in_flight")
        batch_op.drop_column("requests_per_minute")

    op.drop_table("rate_windows")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_key_status")
