"""The forecast log without its two indexes: /accuracy reads the whole log in one pass, and each index cost
every logged forecast an insert.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.drop_index("forecasts_by_target", table_name="forecasts")
    op.drop_index("forecasts_by_version", table_name="forecasts")


def downgrade() -> None:
    op.create_index("forecasts_by_target", "forecasts", ["series", "week"])
    op.create_index("forecasts_by_version", "forecasts", ["version", "step"])
