"""`demand predict --engine dask` against the single process, 10M rows Parquet to Parquet.

The dataset is a 1M-row sales file ten times over under other series names,
one Parquet file per copy (and the same rows as one file for the single
process). The Dask run is on a local cluster of one worker a core, started
before the clock; its phases are timed so that the gain on N machines can be
estimated (docs/benchmarks.md, "Dask").

    python -m bench.cluster --model-dir DIR --source FILE.csv
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.scale import DEMAND, measured

COPIES = 10


def dataset(source, folder):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    plain = pa_csv.read_csv(source)
    index = plain.column_names.index("series")
    files = folder / "weeks"
    files.mkdir()
    copies = []
    for k in range(COPIES):
        copy = plain.set_column(
            index, "series", pc.binary_join_element_wise(plain.column("series"), pa.scalar(str(k)), "-")
        )
        pq.write_table(copy, files / f"copy-{k:02d}.parquet")
        copies.append(copy)
    pq.write_table(pa.concat_tables(copies), folder / "whole.parquet")
    return files, sum(c.num_rows for c in copies)


def measure(model_dir, source):
    from dask.distributed import LocalCluster

    from pipeline.bundle import Bundle
    from pipeline.cluster import score_on_dask
    from pipeline.parallel import usable_cores
    from pipeline.registry import Registry

    with tempfile.TemporaryDirectory(prefix="demand-cluster-") as tmp:
        folder = Path(tmp)
        files, rows = dataset(source, folder)
        seconds, peak, _ = measured(
            [*DEMAND, "predict", "--input", str(folder / "whole.parquet"), "--output", str(folder / "single.parquet"),
             "--model-dir", str(model_dir)]
        )  # fmt: skip
        single = {"seconds": seconds, "peak_mb": peak, "rows_s": rows / seconds}
        version = Bundle.load(Registry(model_dir)).version
        started = time.perf_counter()
        with LocalCluster(n_workers=usable_cores(), threads_per_worker=1, dashboard_address=None) as cluster:
            ready = time.perf_counter() - started
            started = time.perf_counter()
            counts = score_on_dask(files, folder / "out", model_dir, version, cluster.scheduler_address)
            seconds = time.perf_counter() - started
        return {
            "rows": rows,
            "single": single,
            "dask": {**counts, "seconds": seconds, "rows_s": rows / seconds, "cluster_start_s": ready},
        }


def report(r):
    d, s = r["dask"], r["single"]
    tasks = d["gathering_s"] + d["scoring_s"]
    busy = d["workers"] * d["scoring_wall_s"]
    return "\n".join(
        [
            "## Dask",
            "",
            f"`demand predict`, {r['rows']:,} rows Parquet to Parquet (`python -m bench.cluster`): the single process "
            f"on one file, and `--engine dask` on a local cluster of {d['workers']} workers (one a core, started "
            f"before the clock, {d['cluster_start_s']:.1f} s) on {d['files']} files in {d['partitions']} partitions.",
            "",
            "| engine | seconds | rows/s | |",
            "|---|---|---|---|",
            f"| single process | {s['seconds']:.1f} | {s['rows_s'] / 1e6:.2f} M | peak RSS {s['peak_mb']:,.0f} MB |",
            f"| Dask, {d['workers']} workers | {d['seconds']:.1f} | {d['rows_s'] / 1e6:.2f} M | "
            f"reading, checking and splitting the files {d['reading_wall_s']:.1f} s; scoring the partitions "
            f"{d['scoring_wall_s']:.1f} s |",
            "",
            f"Inside the scoring phase the partitions' tasks ran {tasks:.1f} s in all ({d['gathering_s']:.1f} s "
            f"reading each partition's tables from every file's split, {d['scoring_s']:.1f} s scoring them) on "
            f"{d['workers']} workers for {busy:.1f} s: {busy - tasks:.1f} s went to scheduling and to the phase's "
            "tail, one worker idle while the other finished.",
            "",
        ]
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--source", type=Path, required=True, help="a sales file of about 1M rows (CSV)")
    args = parser.parse_args()
    results = measure(args.model_dir, args.source)
    print(json.dumps(results, indent=1), file=__import__("sys").stderr)
    print(report(results))
