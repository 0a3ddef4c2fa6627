"""The forecast log as runs of weeks: a row per series a request forecast (a plan's weeks, or a row's one week),
its forecasts as JSON lists, instead of a row per week; `forecasts` is now a view that lays each run out a week
per row, as the log was read before. The logged weeks are kept (a forecast that was not a number, which
JSON cannot hold, is left out).

Revision ID: 0004
Revises: 0003
"""

import math

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

SERIES = sa.String(200)  # pipeline.schema.MAX_SERIES_NAME when this revision was written
RUN_WEEKS = 65536  # pipeline.schema.RUN_WEEKS when this revision was written: more weeks than a plan may hold

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

WEEK_COLUMNS = "request_id, version, series, week, step, units_sold, intervals, served_at"
BATCH = 10_000


# The old table, as revision 0003 made it (renamed for the copy).
OLD_WEEKS = sa.table(
    "forecast_weeks",
    sa.column("id", sa.BigInteger()),
    *[sa.column(name, sa.String()) for name in ("request_id", "version", "series")],
    sa.column("week", sa.Date()),
    sa.column("step", sa.Integer()),
    sa.column("units_sold", sa.Float()),
    sa.column("intervals", sa.JSON()),  # SQL NULL, or JSON null as the first revision's writes stored it: both None
    sa.column("served_at", sa.DateTime(timezone=True)),
)


def _number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a forecast is null, which the view leaves out."""
    return value if value is not None and math.isfinite(value) else None


def _copy_weeks_to_runs(runs: sa.Table) -> None:
    """Each logged week of the old table as a run of one week, in the old order, its numbers as Python reads
    them (SQLite's own JSON functions would write a float with 15 digits, not the 17 that keep it)."""
    connection = op.get_bind()
    last = None
    while True:
        query = sa.select(OLD_WEEKS).order_by(OLD_WEEKS.c.id).limit(BATCH)
        if last is not None:
            query = query.where(OLD_WEEKS.c.id > last)
        rows = connection.execute(query).all()
        if not rows:
            return
        connection.execute(
            runs.insert(),
            [
                {
                    "request_id": row.request_id,
                    "version": row.version,
                    "series": row.series,
                    "first_week": row.week,
                    "first_step": row.step,
                    "weeks": 1,
                    "units_sold": [_number(row.units_sold)],
                    "intervals": None
                    if not isinstance(row.intervals, dict)
                    else {level: [[_number(end) for end in ends]] for level, ends in row.intervals.items()},
                    "served_at": row.served_at,
                }
                for row in rows
            ],
        )
        last = rows[-1].id


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.rename_table("forecasts", "forecast_weeks")
    runs = op.create_table(
        "forecast_runs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("series", SERIES, nullable=False),
        sa.Column("first_week", sa.Date, nullable=False),
        sa.Column("first_step", sa.Integer, nullable=False),
        sa.Column("weeks", sa.Integer, nullable=False),
        sa.Column("units_sold", sa.JSON, nullable=False),
        sa.Column("intervals", sa.JSON(none_as_null=True)),  # None written as SQL NULL by the copy
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
    )
    _copy_weeks_to_runs(runs)
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
