"""`demand predict --engine dask`: a Parquet dataset on a local two-worker Dask cluster gives what the
single process gives, partition by partition of whole series, even when a worker is killed mid-run."""

import csv
import os
import signal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from pipeline.errors import DataError
from service.testing import wait_until

from .conftest import DEFAULT_CSV, invoke, plain_sales, trained

pytestmark = pytest.mark.slow
FILES = 3


@pytest.fixture(scope="module")
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def dataset(source, folder):
    """`source` (CSV) as FILES Parquet files of consecutive weeks: each series runs across every file."""
    table = pa_csv.read_csv(source)
    weeks = sorted(set(table.column("week").cast(pa.string()).to_pylist()))
    folder.mkdir()
    cuts = [weeks[len(weeks) * i // FILES] for i in range(FILES)] + ["9999"]
    week = table.column("week").cast(pa.string())
    for i in range(FILES):
        rows = pc.and_(pc.greater_equal(week, cuts[i]), pc.less(week, cuts[i + 1]))
        pq.write_table(table.filter(rows), folder / f"weeks-{i}.parquet")
    pq.write_table(table, folder.parent / f"{folder.name}-whole.parquet")
    return folder


def by_series(table):
    """{series: its rows in order, as lists of every column}."""
    rows = {}
    for record in table.to_pylist():
        rows.setdefault(record["series"], []).append(record)
    return rows


def single_and_dask(models, source, tmp_path, cluster, **options):
    from pipeline.bundle import Bundle
    from pipeline.cluster import score_on_dask
    from pipeline.registry import Registry

    folder = dataset(source, tmp_path / "weeks")
    single = tmp_path / "single.parquet"
    done = invoke(CliRunner(), "predict", "--input", str(tmp_path / "weeks-whole.parquet"), "--output", str(single),
                  "--model-dir", str(models))  # fmt: skip
    assert done.exit_code == 0, done.output
    version = Bundle.load(Registry(models)).version
    out = tmp_path / "scored"
    partitions = options.pop("partitions", 5)
    counts = score_on_dask(folder, out, models, version, cluster.scheduler_address, partitions, **options)
    return pq.read_table(single), out, counts


def assert_same_answers(single, out):
    parts = sorted(out.glob("part-*.parquet"))
    assert parts and {p.name for p in out.iterdir()} == {p.name for p in parts}
    seen = {}
    for part in parts:
        for name in set(pq.read_table(part, columns=["series"]).column("series").to_pylist()):
            assert name not in seen, f"series {name} is in {seen.get(name)} and {part.name}"
            seen[name] = part.name
    scored = pa.concat_tables(pq.read_table(p) for p in parts)
    assert by_series(scored) == by_series(single)  # the same rows, in the same order within a series, floats equal


def test_a_three_input_model_scores_a_dataset_on_dask_as_in_one_process(published, tmp_path, cluster):
    single, out, counts = single_and_dask(published, DEFAULT_CSV, tmp_path, cluster)
    assert counts["rows"] == single.num_rows and counts["files"] == FILES
    assert_same_answers(single, out)


@pytest.fixture(scope="module")
def history_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    plain, _ = plain_sales(folder, seed=4, series=6, weeks=70)
    models = trained(folder / "models", plain, epochs=10)
    return models, plain


def test_a_history_model_on_dask_reads_each_series_whole_even_with_a_worker_killed(history_model, tmp_path, cluster):
    """Each series' weeks run across the three files; a partition holds them all, in order. A worker
    killed after the split loses its part of it: it is split again, and the output is the same."""
    killed = []

    def kill_a_worker(client):
        pids = client.run(os.getpid)
        address, pid = sorted(pids.items())[0]
        os.kill(pid, signal.SIGKILL)
        killed.append(address)
        wait_until(lambda: address not in client.scheduler_info()["workers"], 30)

    models, plain = history_model
    single, out, counts = single_and_dask(models, plain, tmp_path, cluster, after_split=kill_a_worker)
    assert killed and counts["rows"] == single.num_rows
    assert_same_answers(single, out)


def test_bad_files_and_a_missing_model_are_clear_errors(published, tmp_path, cluster):
    from pipeline.cluster import score_on_dask

    folder = dataset(DEFAULT_CSV, tmp_path / "weeks")
    table = pq.read_table(folder / "weeks-1.parquet")
    column = table.column_names.index("discount_fraction")
    pq.write_table(table.set_column(column, "discount_fraction", pa.array([130.0] * table.num_rows)),
                   folder / "weeks-1.parquet")  # fmt: skip
    with pytest.raises(DataError, match=r"weeks-1\.parquet.*row 1.*discount_fraction"):
        score_on_dask(folder, tmp_path / "out", published, "v1", cluster.scheduler_address)
    assert not (tmp_path / "out").exists()
    pq.write_table(table.drop_columns(["discount_fraction"]), folder / "weeks-1.parquet")
    with pytest.raises(DataError, match=r"weeks-1\.parquet.*discount_fraction"):
        score_on_dask(folder, tmp_path / "out", published, "v1", cluster.scheduler_address)
    with pytest.raises(DataError, match="no Parquet file"):
        score_on_dask(tmp_path / "nothing-*.parquet", tmp_path / "out", published, "v1", cluster.scheduler_address)
    empty = tmp_path / "empty-registry"
    done = invoke(CliRunner(), "predict", "--engine", "dask", "--input", str(folder), "--output",
                  str(tmp_path / "out"), "--model-dir", str(empty), "--scheduler", cluster.scheduler_address)  # fmt: skip
    assert done.exit_code == 1 and "Error:" in done.output and "Traceback" not in done.output


def plan_files(folder, series=12, weeks=6):
    """A plan of `series` series x `weeks` weeks in two CSV files: each series' first weeks in the first file
    (with its prev_week_sales), its last weeks in the second."""
    folder.mkdir()
    header = ["series", "week", "prev_week_sales", "discount_fraction", "weeks_to_next_holidays"]
    rows = [
        [f"store-{s:02d}", f"2026-01-{5 + 7 * h:02d}" if h < 4 else f"2026-02-{2 + 7 * (h - 4):02d}",
         40000 + 1000 * s if h == 0 else "", (s * 7 + h * 13) % 60, (h + s) % 5]
        for s in range(1, series + 1)
        for h in range(weeks)
    ]  # fmt: skip
    whole = folder.parent / "whole-plan.csv"
    for path, part in ((folder / "a.csv", [r for r in rows if r[1] < "2026-01-20"]),
                       (folder / "b.csv", [r for r in rows if r[1] >= "2026-01-20"]), (whole, rows)):  # fmt: skip
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(part)
    return folder, whole


def test_a_plan_dataset_is_forecast_on_dask_as_in_one_process(published, tmp_path, cluster):
    folder, whole = plan_files(tmp_path / "plans")
    single = tmp_path / "single.csv"
    done = invoke(CliRunner(), "forecast", "--plan", str(whole), "--output", str(single), "--model-dir", str(published))
    assert done.exit_code == 0, done.output
    out = tmp_path / "forecasts"
    done = invoke(CliRunner(), "forecast", "--engine", "dask", "--scheduler", cluster.scheduler_address,
                  "--partitions", "4", "--plan", str(folder), "--output", str(out), "--model-dir", str(published))  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "wrote 72 forecasts of 12 series" in done.output
    parts = sorted(out.glob("part-*.csv"))
    scored = [row for part in parts for row in csv.DictReader(part.open())]
    expected = list(csv.DictReader(single.open()))
    key = lambda row: (row["series"], int(row["step"]))  # noqa: E731
    assert sorted(scored, key=key) == sorted(expected, key=key)  # every column, as text
    assert len({row["series"] for part in parts for row in csv.DictReader(part.open())}) == 12


def test_a_bad_plan_row_on_dask_is_named_by_its_file_and_line(published, tmp_path, cluster):
    from pipeline.cluster import forecast_on_dask

    folder, _ = plan_files(tmp_path / "plans")
    lines = (folder / "b.csv").read_text().splitlines()
    cells = lines[5].split(",")
    cells[3] = "130"  # a discount over 100 percent
    lines[5] = ",".join(cells)
    lines.insert(2, "")  # a blank line before it: the bad row is on line 7
    (folder / "b.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"b\.csv: line 7, column 'discount_fraction'"):
        forecast_on_dask(folder, tmp_path / "out", published, "v1", [0.8], cluster.scheduler_address, 3)
    assert not (tmp_path / "out").exists()


def test_a_backtests_windows_run_as_dask_tasks_and_report_what_one_process_does(small_csv, tmp_path, cluster):
    import json

    from pipeline.cli import main

    runner = CliRunner()
    args = ["backtest", "--data", str(small_csv), "--windows", "2", "--horizon", "3", "--preset", "auto",
            "--epochs", "20", "--json"]  # fmt: skip
    local = runner.invoke(main, [*args, "--plot", str(tmp_path / "local.png")])
    assert local.exit_code == 0, local.output
    on_dask = runner.invoke(main, [*args, "--plot", str(tmp_path / "dask.png"), "--run-on", "dask",
                                   "--scheduler", cluster.scheduler_address])  # fmt: skip
    assert on_dask.exit_code == 0, on_dask.output
    assert json.loads(on_dask.stdout) == json.loads(local.stdout)
    assert "window 2: one-step WAPE" in on_dask.stderr
    ran = cluster.scheduler.task_prefixes  # each window a task, and each of its candidates' fits too
    assert {"window_fold", "fit"} <= set(ran)


def test_files_that_store_columns_differently_are_read_alike_or_refused_by_name(published, tmp_path, cluster):
    from pipeline.cluster import score_on_dask

    folder = dataset(DEFAULT_CSV, tmp_path / "weeks")
    first = pq.read_table(folder / "weeks-0.parquet")
    column = first.column_names.index("weeks_to_next_holidays")  # whole numbers in one file, floats in the others
    as_ints = pc.cast(first.column("weeks_to_next_holidays"), pa.int64())
    pq.write_table(first.set_column(column, "weeks_to_next_holidays", as_ints), folder / "weeks-0.parquet")
    counts = score_on_dask(folder, tmp_path / "out", published, "v1", cluster.scheduler_address)
    assert counts["rows"] == sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))
    note = pa.array(["a"] * first.num_rows)
    pq.write_table(first.append_column("note", note), folder / "weeks-0.parquet")
    with pytest.raises(DataError, match=r"weeks-1\.parquet: its columns differ from weeks-0\.parquet's \(note"):
        score_on_dask(folder, tmp_path / "out2", published, "v1", cluster.scheduler_address)


def test_a_partition_of_series_with_no_week_to_start_from_forecasts_none_of_them_as_one_process_does(
    history_model, tmp_path, cluster
):
    """A series new to the model, with one week and no prev_week_sales, in a partition of its own: not
    forecast, as one process does not forecast it; the run goes on."""
    models, plain = history_model
    table = pa_csv.read_csv(plain)
    from pipeline.cluster import partition_of

    taken = set(partition_of(table.column("series").combine_chunks(), 16).tolist())
    name = next(f"new-{i}" for i in range(1000) if partition_of(pa.array([f"new-{i}"]), 16)[0] not in taken)
    extra = table.slice(table.num_rows - 1).set_column(table.column_names.index("series"), "series", pa.array([name]))
    with_new = tmp_path / "with-new.csv"
    pa_csv.write_csv(pa.concat_tables([table, extra]), with_new)
    single, out, counts = single_and_dask(models, with_new, tmp_path, cluster, partitions=16)
    assert counts["rows"] == single.num_rows and name not in set(single.column("series").to_pylist())
    assert_same_answers(single, out)
