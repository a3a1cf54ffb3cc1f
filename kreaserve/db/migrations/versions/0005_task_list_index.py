"""task list index: an account's tasks of one status, newest first (GET /v1/tasks?status=)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 14:30:00
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_tasks_account_status_created", "tasks", ["account_id", "status", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_account_status_created", table_name="tasks")
