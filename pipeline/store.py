"""The store: what actually sold (actuals) and what was forecast (the forecast log).

SQLAlchemy Core on SQLite, a file in the registry folder, by default, or on
PostgreSQL for several replicas (DEMAND_STORE_URL, e.g.
`postgresql+psycopg://user:password@host/demand`). The schema is Alembic's
(pipeline/migrations): `demand store upgrade` and the service's start bring a
database to the latest revision.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import fcntl
import io
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any, cast

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    create_engine,
    event,
    func,
    select,
    text,
    tuple_,
)
from sqlalchemy.engine import Connection, Engine

from .errors import DataError
from .features import LAG_1, FeatureSpec
from .registry import crashpoint
from .schema import MAX_SERIES_NAME, TARGET, domain_problem, named_series_problem

STORE_FILE = "store.sqlite"  # in the registry folder, when DEMAND_STORE_URL is not set
WEEK = dt.timedelta(days=7)

metadata = MetaData()

actuals = Table(
    "actuals",
    metadata,
    Column("series", String(MAX_SERIES_NAME), primary_key=True),
    Column("week", Date, primary_key=True),
    Column("units_sold", Float, nullable=False),
    Column("covariates", JSON, nullable=False),  # {declared covariate: value} as posted
    Column("stored_at", DateTime(timezone=True), nullable=False),
)

# The forecast log: each row a run of weeks forecast for one series in one request, the weeks following each other
# from first_week on (a plan's weeks; a single week for a row), so that a plan logs a row per series, not per week.
forecast_runs = Table(
    "forecast_runs",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("series", String(MAX_SERIES_NAME), nullable=False),
    Column("first_week", Date, nullable=False),
    Column("first_step", Integer, nullable=False),  # weeks ahead of its history, of the first week
    Column("weeks", Integer, nullable=False),  # how many of units_sold's entries are logged
    Column("units_sold", JSON, nullable=False),  # [the forecast of each week], null for no number
    Column("intervals", JSON),  # {level: [[low, high] of each week]}, or null
    Column("served_at", DateTime(timezone=True), nullable=False),
)

# The log a week per row, as pipeline.accuracy reads it: a view of forecast_runs (pipeline/migrations, 0004),
# in its own MetaData as no table is made from it. A week's id orders the weeks as they were logged: its run's
# id times pipeline.schema.RUN_WEEKS, plus its place in the run.
views = MetaData()
forecasts = Table(
    "forecasts",
    views,
    Column("id", BigInteger, primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("series", String(MAX_SERIES_NAME), nullable=False),
    Column("week", Date, nullable=False),  # the week forecast
    Column("step", Integer, nullable=False),  # weeks ahead of the history it started from
    Column("units_sold", Float, nullable=False),
    Column("intervals", JSON),  # {level: [low, high]}, or null
    Column("served_at", DateTime(timezone=True), nullable=False),
)

served_inputs = Table(
    "served_inputs",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("week", Date, primary_key=True),  # the week (its Monday) the inputs were served in
    Column("input", String(200), primary_key=True),
    Column("bin", Integer, primary_key=True),  # the card's reference bin (pipeline.drift)
    Column("count", BigInteger, nullable=False),  # rows served with the input in that bin
)


def store_url(model_dir: str | os.PathLike[str], url: str | None = None) -> str:
    """`url`, else DEMAND_STORE_URL, else the SQLite file in the registry folder."""
    chosen = url or os.environ.get("DEMAND_STORE_URL")
    if chosen:
        return chosen
    return f"sqlite:///{Path(model_dir).resolve() / STORE_FILE}"


def open_engine(url: str) -> Engine:
    """An engine for `url`; SQLite in WAL mode (readers never wait for the writer), every commit synced."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(connection: Any, _record: Any) -> None:
            connection.isolation_level = None  # transactions are begun below, not by the driver
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            # A writer takes the write lock at once, as SQLAlchemy's documentation shows for pysqlite: its reads
            # and writes are one step, so two requests cannot both pass the order-of-weeks check. A reader
            # (reading()) takes none, and reads the last commit while a write goes on.
            read_only = connection.get_execution_options().get(READ_ONLY, False)
            connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True)


READ_ONLY = "demand_read_only"


def reading(engine: Engine) -> Connection:
    """A connection that only reads: on SQLite it never waits for a writer (WAL), nor makes one wait."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def upgrade(engine: Engine) -> str:
    """Bring the database to the latest schema revision; returns it."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    with one_upgrade_at_a_time(engine), engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # replicas starting together: one migrates, the others wait
            connection.execute(text("SELECT pg_advisory_xact_lock(7346)"))
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    with engine.connect() as connection:
        return str(MigrationContext.configure(connection).get_current_revision())


@contextlib.contextmanager
def one_upgrade_at_a_time(engine: Engine) -> Iterator[None]:
    """For an SQLite file, an exclusive lock on a file beside it while its schema changes."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Actual:
    series: str
    week: dt.date
    units_sold: float
    covariates: dict[str, Any]


def actual_columns(spec: FeatureSpec) -> tuple[str, ...]:
    """The columns of an actual under a model's names: series, week, units sold, then its declared covariates."""
    return (spec.series_column, spec.week_column, spec.target_column, *spec.known, *spec.static)


def actual_from_row(row: Any, where: str, columns: Sequence[str]) -> Actual:
    """One row of actuals (a JSON object, a file's row as a dict) checked field by field: DataError names
    `where` and the field (`where` may place the field itself: "inputs.{}[3]")."""

    def at(name: object) -> str:
        return where.replace("{}", str(name)) if "{}" in where else f"{where}.{name}"

    series_column, week_column, target_column, *covariates = columns
    if not isinstance(row, dict):
        raise DataError(f"{where} must be an object with {', '.join(columns)}")
    unknown = next((key for key in row if key not in columns), None)
    if unknown is not None:
        raise DataError(f"{at(str(unknown)[:40])} is not a column of the champion; a row takes {', '.join(columns)}")
    for name in columns:
        if name not in row or row[name] is None:
            raise DataError(f"{at(name)} is missing: a row takes {', '.join(columns)}")
    series = row[series_column]
    problem = named_series_problem(series)
    if problem:
        raise DataError(f"{at(series_column)} {problem}")
    week = week_of(row[week_column])
    if week is None:
        raise DataError(
            f"{at(week_column)} must be a date as YYYY-MM-DD in years {FIRST_YEAR} to {LAST_YEAR}, "
            f"got {str(row[week_column])[:40]!r}"
        )
    for name in (target_column, *covariates):
        problem = domain_problem(TARGET if name == target_column else name, row[name])
        if problem:
            raise DataError(f"{at(name)} {problem}")
    return Actual(str(series).strip(), week, float(row[target_column]), {name: row[name] for name in covariates})


FIRST_YEAR, LAST_YEAR = 1900, 9000  # far from the calendar's ends: weeks ahead of any stored week stay dates
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def week_of(value: Any) -> dt.date | None:
    """A week's date from an ISO day (YYYY-MM-DD) or a date, None for anything else: a time of day, a time
    zone or an ISO week would move or blur the week."""
    if isinstance(value, str) and ISO_DAY.fullmatch(value):
        try:
            value = dt.date.fromisoformat(value)
        except ValueError:
            return None
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        return None
    return value if FIRST_YEAR <= value.year <= LAST_YEAR else None


class TooManyRows(DataError):
    """More rows than one request may store."""


def csv_actual_rows(
    raw: bytes, columns: Sequence[str], max_rows: int, source: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a CSV table of actuals as dicts (the series and week as text, other cells as numbers
    where they are numbers), and where each starts (`source`: line N); DataError names what is wrong."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{source} is not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows: list[dict[str, Any]] = []
    where: list[str] = []
    text_columns = set(columns[:2])
    try:
        line = 1
        for cells in reader:
            if not cells or not any(cell.strip() for cell in cells):
                line = reader.line_num + 1
                continue
            if header is None:
                header = [name.strip() for name in cells]
                repeated = next((name for i, name in enumerate(header) if name in header[:i]), None)
                if repeated is not None:
                    raise DataError(f"{source}: the header names column {repeated[:40]!r} twice")
            else:
                if len(rows) >= max_rows:
                    raise TooManyRows(f"{source}: more than {max_rows} rows (DEMAND_MAX_ROWS)")
                if len(cells) != len(header):
                    raise DataError(f"{source}: line {line} has {len(cells)} cells, the header {len(header)}")
                rows.append({n: c if n in text_columns else number(c) for n, c in zip(header, cells)})
                where.append(f"{source}: line {line}")
            line = reader.line_num + 1
    except csv.Error as err:  # a field past the csv module's limit, a stray quote
        raise DataError(f"{source}: line {reader.line_num}: {err}") from None
    if header is None:
        raise DataError(f"{source} is empty: send a header row naming {', '.join(columns)}, then the rows")
    return rows, where


def number(cell: str) -> Any:
    """A cell as a number when it is one, as the CSV readers take them; else the text, for the row's check."""
    text = cell.strip()
    if "_" in text:
        return cell  # float() takes 1_000; a file does not mean it
    try:
        return float(text)
    except ValueError:
        return cell


def put_actuals(
    engine: Engine,
    rows: Sequence[Actual],
    where: Sequence[str] | None = None,
    trained_until: Mapping[str, dt.date] | None = None,
) -> dict[str, int]:
    """Store `rows` in one transaction, all or none: {"stored": new weeks, "replaced": weeks posted again}.

    A week already stored is replaced. A new week must be 7 days after the
    series' last week: stored, earlier in `rows`, or, for a series with
    nothing stored yet, the last week the champion trained on
    (`trained_until`). `where[i]` names row i in the error (a request's path,
    a file's line)."""
    where = where or [f"row {i + 1}" for i in range(len(rows))]
    seen: dict[tuple[str, dt.date], int] = {}
    for i, row in enumerate(rows):
        key = (row.series, row.week)
        if key in seen:
            raise DataError(f"{where[i]}: series {row.series!r} week {row.week} is also {where[seen[key]]}")
        seen[key] = i
    names = sorted({row.series for row in rows})
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as connection:
        one_writer_at_a_time(connection)  # the order of weeks is checked and kept under one lock
        stored: set[tuple[str, dt.date]] = set()
        known = trained_until or {}
        last: dict[str, dt.date] = {name: known[name] for name in names if name in known}
        for chunk in _chunks(names, 500):
            last.update(
                connection.execute(
                    select(actuals.c.series, func.max(actuals.c.week))
                    .where(actuals.c.series.in_(chunk))
                    .group_by(actuals.c.series)
                ).all()
            )
        for chunk in _chunks(list(seen), 500):
            found = connection.execute(
                select(actuals.c.series, actuals.c.week).where(tuple_(actuals.c.series, actuals.c.week).in_(chunk))
            )
            stored.update((row.series, row.week) for row in found)
        for i in sorted(range(len(rows)), key=lambda i: (rows[i].series, rows[i].week)):
            row = rows[i]
            if (row.series, row.week) in stored:
                continue
            previous = last.get(row.series)
            if previous is not None and row.week != previous + WEEK:
                raise DataError(
                    f"{where[i]}: week {row.week} of series {row.series!r} is not 7 days after its last week, "
                    f"{previous}: post weeks in order, without gaps"
                )
            last[row.series] = row.week
        replaced = [row for row in rows if (row.series, row.week) in stored]
        for row in replaced:
            connection.execute(
                actuals.update()
                .where(and_(actuals.c.series == row.series, actuals.c.week == row.week))
                .values(units_sold=row.units_sold, covariates=row.covariates, stored_at=now)
            )
        new = [row for row in rows if (row.series, row.week) not in stored]
        if new:
            connection.execute(
                actuals.insert(),
                [
                    {
                        "series": r.series,
                        "week": r.week,
                        "units_sold": r.units_sold,
                        "covariates": r.covariates,
                        "stored_at": now,
                    }
                    for r in new
                ],
            )
        crashpoint("actuals-before-commit")
    return {"stored": len(new), "replaced": len(replaced)}


LOGGED = (
    "request_id",
    "version",
    "served_at",
    "series",
    "first_week",
    "first_step",
    "weeks",
    "units_sold",
    "intervals",
)


def one_writer_at_a_time(connection: Any) -> None:
    """Hold the store's write lock for the rest of the transaction: on PostgreSQL an advisory lock that
    every writer of actuals takes; SQLite's transactions take its one write lock as they begin (open_engine)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(7347)"))


LOGGED_PER_STATEMENT = 1000  # runs one INSERT writes: LOGGED's parameters each, within SQLite's 32,766


def log_forecasts(engine: Engine, runs: Sequence[tuple[Any, ...]]) -> int:
    """Append served forecasts, each run a tuple of the LOGGED columns (units_sold and intervals as their JSON,
    or as values to encode), in one transaction; returns how many runs. Straight to the driver: the log's
    rows are many and simple, and SQLAlchemy's per-row work cost more than the database's. Many runs to an
    INSERT: the driver lets go of Python's interpreter lock while the database writes, and a statement per run
    would take it back a thousand times a request from the threads that serve."""
    if not runs:
        return 0
    sqlite = engine.dialect.name == "sqlite"
    mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    values = "(" + ", ".join([mark] * len(LOGGED)) + ")"
    # In SQLite as SQLAlchemy's types store them, each formatted once: a request's runs share their time,
    # and a plan's their first week.
    stamps = {served: served.strftime("%Y-%m-%d %H:%M:%S.%f") for served in {r[2] for r in runs}} if sqlite else {}
    days = {week: week.isoformat() for week in {r[4] for r in runs}} if sqlite else {}
    rows = [
        (
            request_id,
            version,
            stamps.get(served, served),
            series,
            days.get(week, week),
            step,
            weeks,
            json_text(units),
            json_text(intervals),
        )
        for request_id, version, served, series, week, step, weeks, units, intervals in runs
    ]
    with engine.begin() as connection:
        for start in range(0, len(rows), LOGGED_PER_STATEMENT):
            chunk = rows[start : start + LOGGED_PER_STATEMENT]
            statement = f"INSERT INTO forecast_runs ({', '.join(LOGGED)}) VALUES {', '.join([values] * len(chunk))}"
            connection.exec_driver_sql(statement, tuple(chain.from_iterable(chunk)))
    return len(rows)


def json_text(value: Any) -> str | None:
    """A JSON column's text: JSON already encoded (bytes or text) as it is, any other value encoded."""
    if value is None or isinstance(value, str):
        return value
    return (value if isinstance(value, bytes) else orjson.dumps(value)).decode()


def count_served_inputs(engine: Engine, counts: Mapping[tuple[str, dt.date, str, int], int]) -> None:
    """Add {(version, week, input, bin): rows} to the served inputs' counts, in one transaction."""
    if not counts:
        return
    from sqlalchemy.dialects import postgresql, sqlite

    # Both dialects add to a row that is there (INSERT ... ON CONFLICT DO UPDATE), each through its own insert().
    dialect: Any = postgresql if engine.dialect.name == "postgresql" else sqlite
    inserted = dialect.insert(served_inputs)
    statement = inserted.on_conflict_do_update(
        index_elements=[served_inputs.c.version, served_inputs.c.week, served_inputs.c.input, served_inputs.c.bin],
        set_={"count": served_inputs.c.count + inserted.excluded.count},
    )
    rows = [
        {"version": version, "week": week, "input": name, "bin": bin_, "count": count}
        for (version, week, name, bin_), count in sorted(counts.items())  # one order: no deadlock between writers
    ]
    with engine.begin() as connection:
        connection.execute(statement, rows)


def latest_actuals(engine: Engine, names: Sequence[str], weeks: int) -> dict[str, list[tuple[dt.date, float]]]:
    """Each named series' latest stored weeks, at most `weeks` of them, oldest first: (week, units sold)."""
    found: dict[str, list[tuple[dt.date, float]]] = {}
    with reading(engine) as connection:
        if connection.execute(select(actuals.c.series).limit(1)).first() is None:
            return found  # an empty store, as before any actuals were posted: answered without a query per name
        for chunk in _chunks(sorted(set(names)), 500):
            last: dict[str, dt.date] = {
                str(name): cast(dt.date, week)
                for name, week in connection.execute(
                    select(actuals.c.series, func.max(actuals.c.week))
                    .where(actuals.c.series.in_(chunk))
                    .group_by(actuals.c.series)
                )
            }
            if not last:
                continue
            since = min(last.values()) - (weeks - 1) * WEEK
            rows = connection.execute(
                select(actuals.c.series, actuals.c.week, actuals.c.units_sold)
                .where(actuals.c.series.in_(list(last)), actuals.c.week >= since)
                .order_by(actuals.c.series, actuals.c.week)
            )
            for row in rows:
                if row.week > last[row.series] - weeks * WEEK:
                    found.setdefault(str(row.series), []).append((row.week, float(row.units_sold)))
    return found


def export_actuals(
    engine: Engine,
    spec: FeatureSpec,
    path: str | os.PathLike[str],
    previous: Mapping[str, tuple[dt.date, float]] | None = None,
) -> dict[str, Any]:
    """Write the stored actuals to `path` as a data file under the model's names (pipeline.data reads it):
    {"rows", "first_week", "last_week", "dropped"}. For a model of the chapter's three inputs each row needs
    its prev_week_sales: the series' stored week before, or its last week in the files (`previous`, (week,
    units) by series); a row with neither is left out and counted in "dropped"."""
    import csv

    columns = actual_columns(spec)
    with engine.connect() as connection:
        found = connection.execute(
            select(actuals.c.series, actuals.c.week, actuals.c.units_sold, actuals.c.covariates).order_by(
                actuals.c.series, actuals.c.week
            )
        ).all()
    needs_previous = not spec.history
    header = [*columns, *((LAG_1,) if needs_previous else ())]
    written, dropped, weeks = 0, 0, list[dt.date]()
    last: dict[str, tuple[dt.date, float]] = dict(previous or {})
    with open(path, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        for record in found:
            series, week, units = str(record.series), cast(dt.date, record.week), float(record.units_sold)
            covariates = cast("dict[str, Any]", record.covariates)
            row: list[Any] = [series, week.isoformat(), units, *(covariates.get(name) for name in columns[3:])]
            if needs_previous:
                before = last.get(series)
                if before is None or week - before[0] != WEEK:
                    dropped += 1
                    last[series] = (week, units)
                    continue
                row.append(before[1])
            last[series] = (week, units)
            writer.writerow(row)
            written += 1
            weeks.append(week)
    return {
        "rows": written,
        "first_week": min(weeks).isoformat() if weeks else None,
        "last_week": max(weeks).isoformat() if weeks else None,
        "dropped": dropped,
    }


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
