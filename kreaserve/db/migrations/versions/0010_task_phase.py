"""task phase: what a processing task is doing now, for the live events stream

The worker records it (encoding, denoising k/8, decoding, checking, storing) in the lease
renewals it already makes, so every API replica can stream it (GET /v1/tasks/{id}/events).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phase", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("phase")
