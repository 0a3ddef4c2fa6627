"""`demand predict --engine dask`: a Parquet dataset scored on a Dask cluster, partition by partition.

Each input file is read and checked by a task of its own (a bad row is named
by its file and row, as `demand predict` names it) and split by series into
partitions (a stable hash of the series name), written beside the output, so
that each partition holds whole series, their rows in the dataset's order: a
model of history reads a series' earlier weeks. Each partition is then read
and scored by a task with the single-process scorer (pipeline.scoring,
pipeline.history_scoring) and written as part-NNNNN.parquet of the output
folder, which appears only once every partition is written. A task per file
and per partition: every worker must see the input, the output's folder and
the registry at the same paths (a shared volume). A worker process loads the model once and runs ONNX
Runtime on one thread. Tasks are pure: a worker lost mid-run has its tasks
run again on another, and the output is the same.

Dask is an optional extra (`pip install .[dask]`), imported only here.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import tables
from .errors import DataError
from .schema import FEATURES, SERIES_COLUMN

PART = "part-{:05d}.parquet"
SPLIT = ".split"  # in the partial output folder: each file's partitions, for the partitions' tasks
LINE, FILE = "__demand_line", "__demand_file"  # where a plan row came from
_bundles: dict[tuple[str, str], Any] = {}  # (registry, version) -> Bundle, once per worker process


def dataset_files(pattern: str | os.PathLike[str], suffixes: tuple[str, ...] = tables.PARQUET_SUFFIXES) -> list[Path]:
    """The files of a dataset: a folder's (with one of `suffixes`), a glob's, or one file."""
    path = Path(pattern)
    kind = "Parquet" if suffixes == tables.PARQUET_SUFFIXES else "CSV"
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes and p.is_file())
    elif any(c in str(pattern) for c in "*?["):
        anchor = Path(path.anchor or ".")
        files = sorted(p for p in anchor.glob(str(path.relative_to(anchor))) if p.is_file())
    else:
        files = [path] if path.is_file() else []
    if not files:
        raise DataError(f"{pattern}: no {kind} file (a folder of them, a glob, or one file)")
    bad = [f for f in files if f.suffix.lower() not in suffixes]
    if bad:
        raise DataError(f"{bad[0]}: the Dask engine reads {kind} files here")
    return files


def partition_of(names: pa.Array, partitions: int) -> np.ndarray:
    """[n] each row's partition: the CRC-32 of its series name (the same in every process), modulo `partitions`."""
    encoded = pc.dictionary_encode(names)
    distinct = encoded.dictionary.to_pylist()
    buckets = np.array([zlib.crc32(str(name).encode()) % partitions for name in distinct], dtype=np.int64)
    return buckets[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)] if len(distinct) else buckets


def split_file(
    path: str, partitions: int, registry: str, version: str, skip_bad_rows: bool
) -> tuple[list[pa.Table], int]:
    """(The rows of one file, checked as `demand predict` checks them, in `partitions` tables by series, the
    rows skipped). The columns the model reads are numbers (float64) and weeks in every file alike; the
    others pass through as the file has them."""
    bundle = loaded(registry, version)
    spec = bundle.spec
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot be read as Parquet: {str(err).splitlines()[0][:200]}") from None
    original = [n.strip() for n in table.column_names]
    ours = tables.renamed(original, spec.renames(), path)
    theirs = tables.file_names(spec.renames(), original)
    named = table.rename_columns(ours)
    numbers: list[str] = list(FEATURES)
    categories: list[str] = []
    if not bundle.reads_three_inputs:
        from .history_scoring import columns_read

        numbers, categories, _ = columns_read(spec, named.column_names, path)
    tables.require_columns(named.column_names, [*numbers, *categories], path, spec.renames(), original)
    checked = tables.check_columns(named, numbers, series=False, text=categories)
    tally = tables.ProblemTally(theirs)
    tally.add(checked.problems)
    skipped, _ = tally.report(path, tables.row_label(True), skip_bad_rows, None)
    for name in numbers:  # as read: float64, whatever each file stored
        table = table.set_column(ours.index(name), table.column_names[ours.index(name)], pa.array(checked.values[name]))
    if checked.problems:  # skipped
        keep = pa.array(checked.good())
        table, named = table.filter(keep), named.filter(keep)
    if SERIES_COLUMN in named.column_names:
        where = partition_of(tables.series_names(named).combine_chunks(), partitions)
    else:  # one series: the whole file
        where = np.full(table.num_rows, zlib.crc32(b"") % partitions)
    return [table.filter(pa.array(where == p)) for p in range(partitions)], skipped


def loaded(registry: str, version: str) -> Any:
    from .bundle import Bundle
    from .registry import Registry

    key = (registry, version)
    if key not in _bundles:
        _bundles[key] = Bundle.load(Registry(registry), version, "auto", 1)
    return _bundles[key]


def score_partition(
    index: int, parts: list[pa.Table], folder: str, registry: str, version: str, skip_bad_rows: bool
) -> dict[str, float]:
    """Score partition `index` (its rows from every file, in order) into `folder`/part-NNNNN.parquet."""
    from .history_scoring import score_history_file
    from .scoring import score_file

    started = time.perf_counter()
    rows = [part for part in parts if part.num_rows]
    if not rows:
        return {"rows": 0, "extrapolated_rows": 0, "unknown_series_rows": 0, "gathering_s": 0.0, "scoring_s": 0.0}
    bundle = loaded(registry, version)
    with tempfile.TemporaryDirectory(prefix="demand-partition-") as scratch:
        source = Path(scratch) / "rows.parquet"
        pq.write_table(pa.concat_tables(rows, promote_options="default"), source)
        gathered = time.perf_counter()
        scored = Path(scratch) / PART.format(index)
        score = score_file if bundle.reads_three_inputs else score_history_file
        try:
            counts = score(source, scored, bundle, skip_bad_rows)
        except DataError as err:
            if not str(err).startswith(f"{source}: no row has a week before it"):
                raise DataError(str(err).replace(str(source), f"partition {index} of the dataset")) from None
            # Its series have no week to start from: none of it is forecast, as one process forecasts none of
            # those rows (the run fails only when no partition has a row to forecast).
            return {"rows": 0, "extrapolated_rows": 0, "unknown_series_rows": 0, "gathering_s": 0.0, "scoring_s": 0.0}
        shutil.move(scored, Path(folder) / PART.format(index))  # whole, or not there: a task run again replaces it
    return {
        **{name: counts.get(name, 0) for name in ("rows", "extrapolated_rows", "unknown_series_rows")},
        "gathering_s": gathered - started,  # its tables from every file, as one file for the scorer
        "scoring_s": time.perf_counter() - gathered,  # read, featured, forecast and written by the scorer
    }


def score_on_dask(
    input_pattern: str | os.PathLike[str],
    output: str | os.PathLike[str],
    registry: str | os.PathLike[str],
    version: str,
    scheduler: str | None = None,
    partitions: int | None = None,
    skip_bad_rows: bool = False,
    log: Callable[[str], None] | None = None,
    after_split: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Score a Parquet dataset into the folder `output` on the cluster at `scheduler` (a local one, one
    worker per core, without). `version`: a published version (the caller resolves the champion's name).
    `after_split(client)` runs once every file is split, before any partition is scored."""
    registry = str(Path(registry).resolve())
    return on_dask(
        dataset_files(input_pattern),
        output,
        functools.partial(split_file, registry=registry, version=version, skip_bad_rows=skip_bad_rows),
        functools.partial(score_partition, registry=registry, version=version, skip_bad_rows=skip_bad_rows),
        scheduler,
        partitions,
        log,
        after_split,
    )


def forecast_on_dask(
    input_pattern: str | os.PathLike[str],
    output: str | os.PathLike[str],
    registry: str | os.PathLike[str],
    version: str,
    levels: list[float],
    scheduler: str | None = None,
    partitions: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`demand forecast` of a dataset of plan files (CSV) into the folder `output` of CSV part files."""
    registry = str(Path(registry).resolve())
    return on_dask(
        dataset_files(input_pattern, (".csv",)),
        output,
        functools.partial(split_plan, registry=registry, version=version),
        functools.partial(forecast_partition, registry=registry, version=version, levels=levels),
        scheduler,
        partitions,
        log,
    )


def on_dask(
    files: list[Path],
    output: str | os.PathLike[str],
    split: Callable[..., tuple[list[pa.Table], int]],
    score: Callable[..., dict[str, Any]],
    scheduler: str | None,
    partitions: int | None,
    log: Callable[[str], None] | None,
    after_split: Callable[[Any], None] | None = None,
) -> dict[str, Any]:
    """Split each file into partitions of whole series (`split(path, partitions)`), then `score(index, tables,
    folder)` each partition into `output`, which appears only once every partition is written. Returns the
    partitions' counts added up (lists joined), with the phases' wall times."""
    from dask.distributed import as_completed

    say = log or (lambda _: None)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise DataError(f"{output}: exists; the Dask engine writes a new folder of part files (remove it first)")
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        with connected(scheduler) as client:
            workers = len(client.scheduler_info()["workers"])
            count = partitions or 4 * max(1, workers)
            say(
                f"Dask: {workers} worker(s), {len(files)} file(s) in {count} partitions; dashboard {client.dashboard_link}"
            )
            started = time.perf_counter()
            # Each file's partitions go to the shared folder beside the output, where each partition's task
            # reads its own: a task per file and per partition, and no table handed from worker to worker.
            spilled = [str(partial / SPLIT / f"{i:05d}") for i in range(len(files))]
            splits = [
                client.submit(spill, split, str(path.resolve()), count, where) for path, where in zip(files, spilled)
            ]
            results = client.gather(splits)  # a bad file is refused here, naming it
            same_columns(files, results)
            skipped = sum(r["skipped_rows"] for r in results)
            if skipped:
                say(f"Dask: {skipped} bad row(s) skipped")
            split_at = time.perf_counter()
            if after_split is not None:
                after_split(client)
            scored = [client.submit(gathered, score, p, spilled, str(partial)) for p in range(count)]
            totals: dict[str, Any] = {}
            for done, future in enumerate(as_completed(scored), start=1):
                for name, value in future.result().items():
                    totals[name] = totals[name] + value if name in totals else value
                say(f"Dask: {done}/{count} partitions scored")
            totals.update(  # each phase's wall time; the tasks' own seconds are added up in *_s
                skipped_rows=skipped,
                workers=workers,
                reading_wall_s=split_at - started,
                scoring_wall_s=time.perf_counter() - split_at,
            )
        if not totals.get("rows"):
            raise DataError(f"{files[0].parent}: no usable rows")
        shutil.rmtree(partial / SPLIT)
        if output.exists():
            output.rmdir()
        os.replace(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return {**totals, "files": len(files), "partitions": count}


def spill(split: Callable[..., tuple[list[pa.Table], int]], path: str, partitions: int, folder: str) -> dict[str, Any]:
    """`split(path, partitions)`'s tables written to `folder` (a file per partition that has rows): {"rows",
    "skipped_rows", "schema": {column: type}}."""
    parts, skipped = split(path, partitions)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for p, table in enumerate(parts):
        if table.num_rows:
            partial = Path(folder) / f".{p:05d}.parquet"
            pq.write_table(table, partial)
            os.replace(partial, Path(folder) / f"{p:05d}.parquet")  # whole, or not there: a task run again replaces it
    schema = parts[0].schema if parts else pa.schema([])
    return {
        "rows": sum(t.num_rows for t in parts),
        "skipped_rows": skipped,
        "schema": {field.name: str(field.type) for field in schema},
    }


def same_columns(files: list[Path], spilled: list[dict[str, Any]]) -> None:
    """A clear error when the dataset's files do not hold the same columns of the same types: its partitions
    put their rows together."""
    first = spilled[0]["schema"]
    for path, result in zip(files[1:], spilled[1:]):
        schema = result["schema"]
        if set(schema) != set(first):
            differ = sorted(set(schema) ^ set(first))
            raise DataError(
                f"{path}: its columns differ from {files[0].name}'s ({', '.join(differ)} in one of them only): the "
                "files of a dataset hold the same columns"
            )
        for name, kind in schema.items():
            if kind != first[name]:
                raise DataError(
                    f"{path}: column {name!r} is {kind}, and {first[name]} in {files[0].name}: the files of a "
                    "dataset hold the same columns of the same types"
                )


def gathered(score: Callable[..., dict[str, Any]], index: int, folders: list[str], output: str) -> dict[str, Any]:
    """`score(index, tables, output)` of partition `index`'s tables, read from each file's folder in order."""
    parts = [
        pq.read_table(Path(d) / f"{index:05d}.parquet") for d in folders if (Path(d) / f"{index:05d}.parquet").exists()
    ]
    return score(index, parts, output)


def split_plan(path: str, partitions: int, registry: str, version: str) -> tuple[list[pa.Table], int]:
    """A plan file's rows as text (each with its file and line), in `partitions` tables by series."""
    import pyarrow.csv as pa_csv

    spec = loaded(registry, version).spec
    header = tables.file_header(path)
    tables.require_columns(header, [spec.series_column], path)
    text = {name: pa.string() for name in header}
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(column_names=header, skip_rows=1),
            convert_options=pa_csv.ConvertOptions(column_types=text, strings_can_be_null=False),
        )
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: cannot read the plan: {str(err).splitlines()[0][:200]}") from None
    table = table.append_column(LINE, pa.array(record_lines(path), pa.int64()))
    table = table.append_column(FILE, pa.array([path] * table.num_rows, pa.string()))
    where = partition_of(pc.utf8_trim_whitespace(table.column(spec.series_column)).combine_chunks(), partitions)
    return [table.filter(pa.array(where == p)) for p in range(partitions)], 0


def record_lines(path: str) -> list[int]:
    """The line each record of a CSV file starts on, its header being line 1 (blank lines hold no record)."""
    import csv

    lines = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        start = reader.line_num + 1
        for record in reader:
            if record:
                lines.append(start)
            start = reader.line_num + 1
    return lines


def forecast_partition(
    index: int, parts: list[pa.Table], folder: str, registry: str, version: str, levels: list[float]
) -> dict[str, Any]:
    """`demand forecast` of partition `index` (its plan rows from every file) into `folder`/part-NNNNN.csv; an
    error in the plan names the file and line the row came from."""
    import csv

    from .plan import forecast_plan_file

    rows = [part for part in parts if part.num_rows]
    if not rows:
        return {"rows": 0, "series": 0, "notes": [], "unknown": []}
    table = pa.concat_tables(rows, promote_options="default")
    origin = list(zip(table.column(FILE).to_pylist(), table.column(LINE).to_pylist()))
    table = table.drop_columns([FILE, LINE])
    with tempfile.TemporaryDirectory(prefix="demand-partition-") as scratch:
        plan = Path(scratch) / "plan.csv"
        with open(plan, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(table.column_names)
            writer.writerows(zip(*(column.to_pylist() for column in table.columns)))
        scored = Path(scratch) / PART.format(index).replace(".parquet", ".csv")
        try:
            done = forecast_plan_file(plan, scored, loaded(registry, version), levels)
        except DataError as err:  # the partition's lines, back to the files' (a line n is origin[n - 2])
            message = re.sub(
                rf"{re.escape(str(plan))}: line (\d+)",
                lambda m: "{}: line {}".format(*origin[int(m.group(1)) - 2]),
                str(err),
            )
            raise DataError(message.replace(str(plan), "the plan")) from None
        shutil.move(scored, Path(folder) / scored.name)
    return done


@contextlib.contextmanager
def windows_on_dask(
    scheduler: str | None, log: Callable[[str], None] | None = None
) -> Iterator[Callable[..., Iterator[tuple[dict[str, Any], float]]]]:
    """A map of a backtest's windows onto a Dask cluster (pipeline.backtest's `map_windows`): each window,
    its training with its candidates and its scoring, is a task; the folds come back in window order."""
    with connected(scheduler) as client:
        if log:
            log(f"Dask: {len(client.scheduler_info()['workers'])} worker(s); dashboard {client.dashboard_link}")

        def map_windows(
            fold: Callable[..., tuple[dict[str, Any], float]],
            pairs: list[tuple[Any, Any]],
            preset: str,
            overrides: dict[str, Any] | None,
            refit: bool,
        ) -> Iterator[tuple[dict[str, Any], float]]:
            futures = [
                client.submit(fold, number, history, future, preset, overrides, refit, pure=False)
                for number, (history, future) in enumerate(pairs, start=1)
            ]
            for future in futures:
                yield future.result()

        yield map_windows


@contextlib.contextmanager
def connected(scheduler: str | None) -> Iterator[Any]:
    """A client of the cluster at `scheduler`, or of a local one (a worker a core, a thread each) for the block."""
    from dask.distributed import Client, LocalCluster

    from .parallel import usable_cores

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    logging.getLogger("distributed").setLevel(logging.ERROR)
    with (
        LocalCluster(
            n_workers=usable_cores(), threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
