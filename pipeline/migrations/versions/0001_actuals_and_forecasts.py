"""The actuals and the forecast log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

SERIES = sa.String(200)  # pipeline.schema.MAX_SERIES_NAME when this revision was written


def upgrade() -> None:
    op.create_table(
        "actuals",
        sa.Column("series", SERIES, primary_key=True),
        sa.Column("week", sa.Date, primary_key=True),
        sa.Column("units_sold", sa.Float, nullable=False),
        sa.Column("covariates", sa.JSON, nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "forecasts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("series", SERIES, nullable=False),
        sa.Column("week", sa.Date, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("units_sold", sa.Float, nullable=False),
        sa.Column("intervals", sa.JSON),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("forecasts_by_target", "forecasts", ["series", "week"])
    op.create_index("forecasts_by_version", "forecasts", ["version", "step"])


def downgrade() -> None:
    op.drop_table("forecasts")
    op.drop_table("actuals")
