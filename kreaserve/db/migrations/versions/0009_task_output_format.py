"""task output format and quality

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 17:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Tasks created before this were all PNGs at the (unused) default quality.
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("output_format", sa.String(length=8), nullable=False, server_default="png")
        )
        batch_op.add_column(
            sa.Column("output_quality", sa.Integer(), nullable=False, server_default="90")
        )


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("output_quality")
        batch_op.drop_column("output_format")
