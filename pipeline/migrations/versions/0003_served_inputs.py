"""The distribution of the inputs served: per version, serving week, input and reference bin, how many rows.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "served_inputs",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("week", sa.Date, primary_key=True),
        sa.Column("input", sa.String(200), primary_key=True),
        sa.Column("bin", sa.Integer, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("served_inputs")
