"""The forecast log as runs of weeks: a row per series a request forecast (a plan's weeks, or a row's one week),
its forecasts as JSON lists, instead of a row per week; `forecasts` is now a view that lays each run out a week
per row, as the log was read before. The logged weeks are kept.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

SERIES = sa.String(200)  # pipeline.schema.MAX_SERIES_NAME when this revision was written
RUN_WEEKS = 65536  # a week's id is its run's id times this, plus its place in the run: more weeks than any plan

# A run's week k (from 0): its forecast, and each level's [low, high] gathered into {level: [low, high]}.
VIEW = {
    "sqlite": f"""
        CREATE VIEW forecasts AS
        SELECT r.id * {RUN_WEEKS} + e.key AS id, r.request_id AS request_id, r.version AS version,
               r.series AS series, date(r.first_week, '+' || (7 * e.key) || ' days') AS week,
               r.first_step + e.key AS step, e.value AS units_sold,
               CASE WHEN r.intervals IS NULL THEN NULL ELSE (
                   SELECT json_group_object(l.key, json_extract(l.value, '$[' || e.key || ']'))
                   FROM json_each(r.intervals) AS l
               ) END AS intervals,
               r.served_at AS served_at
        FROM forecast_runs AS r, json_each(r.units_sold) AS e
        WHERE e.key < r.weeks AND e.type IN ('real', 'integer')
    """,
    "postgresql": f"""
        CREATE VIEW forecasts AS
        SELECT r.id * {RUN_WEEKS} + e.k - 1 AS id, r.request_id, r.version, r.series,
               r.first_week + 7 * (e.k - 1)::integer AS week, r.first_step + (e.k - 1)::integer AS step,
               (e.value #>> '{{}}')::double precision AS units_sold,
               CASE WHEN r.intervals IS NULL THEN NULL ELSE (
                   SELECT json_object_agg(l.key, l.value -> (e.k - 1)::integer) FROM json_each(r.intervals) AS l
               ) END AS intervals,
               r.served_at
        FROM forecast_runs AS r CROSS JOIN LATERAL json_array_elements(r.units_sold) WITH ORDINALITY AS e(value, k)
        WHERE e.k <= r.weeks AND json_typeof(e.value) = 'number'
    """,
}

# Each logged week of the old table as a run of one week.
RUNS_OF_WEEKS = {
    "sqlite": """
        SELECT request_id, version, series, week, step, 1, json_array(units_sold),
               CASE WHEN intervals IS NULL THEN NULL ELSE (
                   SELECT json_group_object(key, json_array(json(value))) FROM json_each(f.intervals)
               ) END,
               served_at
        FROM forecast_weeks AS f ORDER BY id
    """,
    "postgresql": """
        SELECT request_id, version, series, week, step, 1, json_build_array(units_sold),
               CASE WHEN intervals IS NULL THEN NULL ELSE (
                   SELECT json_object_agg(key, json_build_array(value)) FROM json_each(f.intervals)
               ) END,
               served_at
        FROM forecast_weeks AS f ORDER BY id
    """,
}
RUN_COLUMNS = "request_id, version, series, first_week, first_step, weeks, units_sold, intervals, served_at"
WEEK_COLUMNS = "request_id, version, series, week, step, units_sold, intervals, served_at"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.rename_table("forecasts", "forecast_weeks")
    op.create_table(
        "forecast_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("series", SERIES, nullable=False),
        sa.Column("first_week", sa.Date, nullable=False),
        sa.Column("first_step", sa.Integer, nullable=False),
        sa.Column("weeks", sa.Integer, nullable=False),
        sa.Column("units_sold", sa.JSON, nullable=False),
        sa.Column("intervals", sa.JSON),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(f"INSERT INTO forecast_runs ({RUN_COLUMNS}) {RUNS_OF_WEEKS[dialect]}")
    op.drop_table("forecast_weeks")
    op.execute(VIEW[dialect])


def downgrade() -> None:
    op.create_table(
        "forecast_weeks",
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
    op.execute(f"INSERT INTO forecast_weeks ({WEEK_COLUMNS}) SELECT {WEEK_COLUMNS} FROM forecasts ORDER BY id")
    op.execute("DROP VIEW forecasts")
    op.drop_table("forecast_runs")
    op.rename_table("forecast_weeks", "forecasts")
