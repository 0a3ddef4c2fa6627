"""The store of actuals and the forecast log, on a real SQLite file and a real PostgreSQL server."""

import datetime as dt
import itertools
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import create_engine, text

from pipeline.accuracy import live_accuracy
from pipeline.errors import DataError
from pipeline.store import Actual, actuals, log_forecasts, metadata, open_engine, put_actuals, upgrade

MONDAY = dt.date(2026, 1, 5)
HEAD = "0004"  # the latest revision in pipeline/migrations/versions
WEEK = dt.timedelta(days=7)
databases = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def empty(request, tmp_path):
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    else:
        server = request.getfixturevalue("postgres")
        name = f"test_{next(databases)}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
        url = server.rsplit("/", 1)[0] + "/" + name
    store = open_engine(url)
    yield store
    store.dispose()


@pytest.fixture
def engine(empty):
    """A new, upgraded database of each kind."""
    assert upgrade(empty) == HEAD
    return empty


def weeks(series, first, values):
    return [Actual(series, first + i * WEEK, float(v), {}) for i, v in enumerate(values)]


def stored(engine):
    with engine.connect() as connection:
        return sorted((s, w, u) for s, w, u in connection.execute(actuals.select().with_only_columns(*actuals.c[:3])))


def test_the_migrations_build_the_schema_the_code_reads(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert [
        d for d in diff if not (isinstance(d, tuple) and d[0] == "remove_table" and d[1].name == "alembic_version")
    ] == []


def test_upgrade_twice_changes_nothing(engine):
    put_actuals(engine, weeks("a", MONDAY, [5]))
    assert upgrade(engine) == HEAD
    assert stored(engine) == [("a", MONDAY, 5.0)]


def test_posting_a_week_again_replaces_it_and_counts_it(engine):
    assert put_actuals(engine, weeks("a", MONDAY, [10, 11]) + weeks("b", MONDAY, [3])) == {"stored": 3, "replaced": 0}
    assert put_actuals(engine, weeks("a", MONDAY + WEEK, [12, 13])) == {"stored": 1, "replaced": 1}
    assert stored(engine) == [
        ("a", MONDAY, 10.0),
        ("a", MONDAY + WEEK, 12.0),
        ("a", MONDAY + 2 * WEEK, 13.0),
        ("b", MONDAY, 3.0),
    ]


@pytest.mark.parametrize(
    "rows, message",
    [
        (weeks("a", MONDAY + 3 * WEEK, [1]), "is not 7 days after its last week, 2026-01-12"),
        (weeks("a", MONDAY - 2 * WEEK, [1]), "is not 7 days after its last week"),
        (
            weeks("a", MONDAY + 2 * WEEK, [1]) + weeks("a", MONDAY + 2 * WEEK, [2]),
            "row 3: series .a. week 2026-01-19 is also row 2",
        ),
        (weeks("c", MONDAY, [1]) + [Actual("c", MONDAY + 3 * WEEK, 1.0, {})], "is not 7 days after"),
    ],
)
def test_a_bad_request_stores_nothing_and_names_the_row(engine, rows, message):
    put_actuals(engine, weeks("a", MONDAY, [10, 11]))
    before = stored(engine)
    with pytest.raises(DataError, match=message):
        put_actuals(engine, weeks("b", MONDAY, [1]) + rows)  # a good row first: it is not stored either
    assert stored(engine) == before


def test_live_accuracy_is_the_wape_bias_and_coverage_computed_by_hand(engine):
    sold = {"a": [100, 120, 90, 110], "b": [10, 0, 30, 20]}
    for series, values in sold.items():
        put_actuals(engine, weeks(series, MONDAY, values))
    served = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    forecast = {("a", 2): 110, ("a", 3): 100, ("b", 2): 5, ("b", 3): 25, ("a", 4): 500}  # (series, week index)
    # Runs of one week: (request id, version, served at, series, week, step, weeks, [forecast], intervals); week
    # index 4 has no actual yet
    records = [
        ("r1", "v1", served, series, MONDAY + index * WEEK, 1, 1, [float(units)], {"0.9": [[units * 0.8, units * 1.2]]})
        for (series, index), units in forecast.items()
    ]
    # The same week forecast again by the same version and step: only the latest counts.
    records.append(("r0", *records[0][1:7], [999.0], records[0][8]))
    records.append(("r2", *records[0][1:]))
    log_forecasts(engine, records)
    answer = live_accuracy(engine, weeks=13)
    (step,) = answer["versions"]["v1"]["all"]
    pairs = [(110, 90), (100, 110), (5, 30), (25, 20)]  # (forecast, actual) of weeks 2 and 3
    assert step["count"] == 4
    assert step["wape"] == pytest.approx(sum(abs(f - a) for f, a in pairs) / sum(a for _, a in pairs))
    assert step["bias"] == pytest.approx(sum(f - a for f, a in pairs) / sum(a for _, a in pairs))
    inside = [0.8 * f <= a <= 1.2 * f for f, a in pairs]
    assert step["coverage"] == {"0.9": pytest.approx(sum(inside) / 4)}
    scale = {"a": (20 + 30 + 20) / 3, "b": (10 + 30 + 10) / 3}
    mase = [
        abs(110 - 90) / scale["a"],
        abs(100 - 110) / scale["a"],
        abs(5 - 30) / scale["b"],
        abs(25 - 20) / scale["b"],
    ]
    assert step["mase"] == pytest.approx(sum(mase) / 4)
    assert answer["through"] == (MONDAY + 3 * WEEK).isoformat()
    window = live_accuracy(engine, weeks=1)["versions"]["v1"]["window"]
    assert window[0]["count"] == 2  # only week 3 falls in the last week of actuals


def test_writers_posting_at_once_keep_the_weeks_in_order(engine):
    """Four writers each post one week of a new series, weeks apart: exactly one is stored, the others are
    refused (a gap after it); eight writers posting the same weeks at once all succeed, one storing them."""
    import threading

    results, errors = [], []

    def post(rows):
        try:
            results.append(put_actuals(engine, rows))
        except DataError as err:
            errors.append(str(err))

    threads = [threading.Thread(target=post, args=(weeks("g", MONDAY + 8 * i * WEEK, [1]),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 1 and len(errors) == 3 and len(stored(engine)) == 1, (results, errors)
    same = weeks("h", MONDAY, list(range(50)))
    results.clear()
    threads = [threading.Thread(target=post, args=(same,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r["stored"] for r in results) == [0] * 7 + [50] and not errors[3:], errors
    assert len([row for row in stored(engine) if row[0] == "h"]) == 50


@pytest.mark.parametrize(
    "value",
    ["2026-W02-1", "2026-1-5", "0001-01-05", "9999-12-27", dt.datetime(2026, 1, 5, 23), "2026-02-30", 20260105],
)
def test_a_week_is_a_plain_date_in_a_sane_year(value):
    from pipeline.store import actual_from_row

    row = {"series": "a", "week": value, "units_sold": 1, "discount_fraction": 0, "weeks_to_next_holidays": 1}
    columns = ("series", "week", "units_sold", "discount_fraction", "weeks_to_next_holidays")
    with pytest.raises(DataError, match="week must be a date as YYYY-MM-DD"):
        actual_from_row(row, "row 1", columns)


@pytest.mark.parametrize(
    "body, named",
    [
        ("series,week,units_sold\n" + "x" * 140_000 + ",2026-01-05,1\n", "line 2"),  # past the csv module's field limit
        ("series,week,units_sold,units_sold\na,2026-01-05,1,2\n", "names column 'units_sold' twice"),
        ("series,week,units_sold\na,2026-01-05,1\nb,2026-01-05,x\n", None),  # line 3 is the bad one, checked below
    ],
)
def test_csv_tables_of_actuals_are_read_strictly(body, named):
    from pipeline.store import actual_from_row, csv_actual_rows

    columns = ("series", "week", "units_sold")
    if named:
        with pytest.raises(DataError, match=named):
            csv_actual_rows(body.encode(), columns, 1000, "body")
        return
    rows, where = csv_actual_rows(body.encode(), columns, 1000, "body")
    actual_from_row(rows[0], where[0], columns)
    with pytest.raises(DataError, match=r"body: line 3.units_sold must be a number, got the text 'x'"):
        actual_from_row(rows[1], where[1], columns)


def test_a_plans_run_is_read_a_week_per_row(engine):
    """A run of a plan's weeks is logged as one row and read back through the `forecasts` view a week per row:
    its weeks, steps, forecasts and intervals in order, a forecast that is not a number left out, and what
    the run's lists hold past its weeks not read."""
    from pipeline.store import forecast_runs, forecasts

    served = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    bounds = {
        "0.8": [[90.0, 110.0], [180.0, 220.0], [0.0, 1.0], [5.0, 6.0]],
        "0.95": [[80.0, 120.0], [1, 2], [3, 4], [7, 8]],
    }
    log_forecasts(engine, [("r1", "v1", served, "a", MONDAY, 1, 3, [100.0, 200.0, None, 7.5], bounds)])
    log_forecasts(engine, [("r2", "v1", served, "b", MONDAY, 1, 1, b"[5.0]", None)])  # JSON already encoded
    with engine.connect() as connection:
        assert connection.execute(forecast_runs.select().with_only_columns(forecast_runs.c.id)).all() == [(1,), (2,)]
        weeks = connection.execute(
            forecasts.select()
            .with_only_columns(*[forecasts.c[name] for name in ("series", "week", "step", "units_sold", "intervals")])
            .order_by(forecasts.c.id)
        ).all()
    assert [tuple(w) for w in weeks] == [
        ("a", MONDAY, 1, 100.0, {"0.8": [90.0, 110.0], "0.95": [80.0, 120.0]}),
        ("a", MONDAY + WEEK, 2, 200.0, {"0.8": [180.0, 220.0], "0.95": [1, 2]}),
        ("b", MONDAY, 1, 5.0, None),
    ]


def test_runs_past_one_statement_are_all_logged_in_order(engine, monkeypatch):
    """Runs are written many to an INSERT: a batch longer than one statement, with a shorter last one, is
    logged whole and in order."""
    from pipeline import store
    from pipeline.store import forecast_runs

    monkeypatch.setattr(store, "LOGGED_PER_STATEMENT", 2)
    served = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    runs = [("r1", "v1", served, f"s{i}", MONDAY + i * WEEK, 1, 1, [float(i)], None) for i in range(5)]
    assert log_forecasts(engine, runs) == 5
    with engine.connect() as connection:
        logged = connection.execute(
            forecast_runs.select()
            .with_only_columns(forecast_runs.c.series, forecast_runs.c.first_week, forecast_runs.c.units_sold)
            .order_by(forecast_runs.c.id)
        ).all()
    assert [tuple(row) for row in logged] == [(f"s{i}", MONDAY + i * WEEK, [float(i)]) for i in range(5)]


OLD_LOG_COLUMNS = [
    ("request_id", sa.String),
    ("version", sa.String),
    ("series", sa.String),
    ("week", sa.Date),
    ("step", sa.Integer),
    ("units_sold", sa.Float),
    ("intervals", sa.JSON()),  # None as JSON null, as the first revision wrote it
    ("served_at", sa.DateTime(timezone=True)),
]


def test_the_forecast_log_keeps_its_weeks_through_the_change_to_runs_and_back(empty):
    from alembic import command
    from alembic.config import Config

    from pipeline.store import forecasts

    engine = empty
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "pipeline" / "migrations"))

    def migrate(step, revision):
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            step(config, revision)

    migrate(command.upgrade, "0003")
    served = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    old_log = sa.table(  # the log a week per row, as revision 0003 kept it
        "forecasts",
        *[sa.column(name, kind) for name, kind in OLD_LOG_COLUMNS],
    )
    with engine.begin() as connection:
        connection.execute(
            old_log.insert(),
            [
                dict(zip([name for name, _ in OLD_LOG_COLUMNS], (*row, served)))
                for row in (
                    ("r1", "v1", "a", MONDAY, 1, 18.34310067452552, {"0.8": [9.0, 0.1 + 0.2]}),  # 17 digits
                    ("r1", "v1", "a", MONDAY + WEEK, 2, 0.1 + 0.2, None),
                    ("r2", "v2", "b", MONDAY, 1, 3.0, {"0.8": [1.0, 5.0], "0.95": [0.5, 6.0]}),
                    ("r2", "v2", "c", MONDAY, 1, 4.0, sa.null()),
                )
            ],
        )

    def logged():
        with engine.connect() as connection:
            query = forecasts.select().with_only_columns(*forecasts.c[1:8]).order_by(forecasts.c.id)
            return [tuple(row) for row in connection.execute(query)]

    before = logged()
    assert len(before) == 4 and before[0][-1] == {"0.8": [9.0, 0.1 + 0.2]}
    assert [row[-1] for row in before[1:]] == [None, {"0.8": [1.0, 5.0], "0.95": [0.5, 6.0]}, None]
    assert upgrade(engine) == HEAD
    assert logged() == before
    migrate(command.downgrade, "0003")
    assert logged() == before
    assert upgrade(engine) == HEAD


def test_line_numbers_count_quoted_line_breaks_a_bom_and_blank_lines():
    from pipeline.store import csv_actual_rows

    body = '\ufeff\nseries,week,units_sold\n"a\nb",2026-01-05,1\nc,2026-01-05,1_000\n'.encode()
    rows, where = csv_actual_rows(body, ("series", "week", "units_sold"), 1000, "body")
    assert [r["series"] for r in rows] == ["a\nb", "c"] and where == ["body: line 3", "body: line 5"]
    assert rows[1]["units_sold"] == "1_000"  # left as text: refused as not a number


def test_a_store_at_an_earlier_revision_is_brought_up_to_date_keeping_its_rows(tmp_path):
    from alembic import command
    from alembic.config import Config

    engine = open_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent.parent / "pipeline" / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    put_actuals(engine, weeks("a", MONDAY, [1, 2]))
    assert upgrade(engine) == HEAD
    assert stored(engine) == [("a", MONDAY, 1.0), ("a", MONDAY + WEEK, 2.0)]
