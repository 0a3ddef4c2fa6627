"""Scale with the data: `demand train` at 100k and 1M generated rows, loading
a 1M-row file, and `demand predict` streaming 10M rows, each timed with its
peak memory (the whole process tree: training workers included).

    python bench/scale.py            # prints the markdown section
"""

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline.presets import CANDIDATES, ENSEMBLE_SIZE  # noqa: E402

DEMAND = [sys.executable, "-m", "pipeline"]
EMBEDDED_SERIES, WEEKS = 6, 156  # the generator's defaults: the embedded data's shape
TRAIN_SERIES = {"today's size": EMBEDDED_SERIES, "100k rows": 641, "1M rows": 6410}
TARGET_SECONDS = {"100k rows": 30, "1M rows": 180}
TARGET_TRAIN_RSS_MB = 2048
LOAD_TARGET_S, PREDICT_TARGET_RSS_MB, PREDICT_TARGET_ROWS_S = 3.0, 1024, 2e6
PREDICT_ROWS = 10_000_000
SINGLE_NETWORK = "log-small-batch"


def tree_rss_mb(pid):
    """RSS of a process and all its descendants, in MB."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
            for task in Path(f"/proc/{current}/task").iterdir():
                stack += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total / 1024


def measured(command):
    """(seconds, peak MB of the process tree, stdout) of one command, sampled every 50 ms."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True)
    peak = [0.0]

    def sample():
        while process.poll() is None:
            peak[0] = max(peak[0], tree_rss_mb(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = process.communicate()
    seconds = time.perf_counter() - started
    sampler.join()
    if process.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{err[-2000:]}")
    return seconds, peak[0], out


def generate(path, series, weeks=WEEKS):
    subprocess.run(
        [*DEMAND, "data", "generate", "--series", str(series), "--weeks", str(weeks), "--output", str(path)],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return path


def training(folder):
    """{label: {rows, seconds, peak_mb, holdout_wape}} of `demand train --device cpu` on generated data."""
    out = {}
    for label, series in TRAIN_SERIES.items():
        data = generate(folder / f"train-{series}.csv", series)
        print(f"timing demand train on {label}...", file=sys.stderr)
        seconds, peak, stdout = measured(
            [
                *DEMAND,
                "train",
                "--data",
                str(data),
                "--device",
                "cpu",
                "--json",
                "--model-dir",
                str(folder / f"models-{series}"),
            ]
        )
        card = json.loads(stdout)
        out[label] = {
            "rows": series * WEEKS,
            "seconds": seconds,
            "peak_mb": peak,
            "holdout_wape": card["metrics"]["holdout"]["model"]["wape"],
            "fits_seconds": sum(c["seconds"] for c in card["selection"]["candidates"]),
        }
    return out


def loading(folder):
    """Seconds and peak MB of `demand data check` on a 1M-row CSV and the same rows in Parquet."""
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    csv_path = folder / "train-6410.csv"
    parquet_path = folder / "train-6410.parquet"
    pq.write_table(pa_csv.read_csv(csv_path), parquet_path)
    out = {}
    for name, path in (("CSV", csv_path), ("Parquet", parquet_path)):
        seconds, peak, _ = measured([*DEMAND, "data", "check", str(path), "--json"])
        out[name] = {"seconds": seconds, "peak_mb": peak, "bytes": path.stat().st_size}
    return out


def predicting(folder):
    """`demand predict` on 10M rows, CSV and Parquet in and out, with the 1M-row model."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    rows = pa_csv.read_csv(folder / "train-6410.csv").drop_columns(["units_sold"])
    copies = -(-PREDICT_ROWS // rows.num_rows)
    big = pa.concat_tables([rows] * copies).slice(0, PREDICT_ROWS)
    pa_csv.write_csv(big, folder / "weeks.csv")
    pq.write_table(big, folder / "weeks.parquet")
    del rows, big
    # The default model averages three networks (about 8,400 multiply-adds a
    # row); one small network shows what the streaming itself costs.
    subprocess.run(
        [
            *DEMAND,
            "train",
            "--data",
            str(folder / "train-641.csv"),
            "--preset",
            SINGLE_NETWORK,
            "--device",
            "cpu",
            "--model-dir",
            str(folder / "models-single"),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    out = {}
    for source, target, models in (
        ("csv", "csv", "models-6410"),
        ("parquet", "parquet", "models-6410"),
        ("csv", "parquet", "models-6410"),
        ("csv", "csv", "models-single"),
        ("parquet", "parquet", "models-single"),
    ):
        label = f"{source} -> {target}" + (f", one {SINGLE_NETWORK} network" if models == "models-single" else "")
        print(f"timing demand predict {label}...", file=sys.stderr)
        seconds, peak, _ = measured(
            [
                *DEMAND,
                "predict",
                "--input",
                str(folder / f"weeks.{source}"),
                "--output",
                str(folder / f"scored.{target}"),
                "--model-dir",
                str(folder / models),
            ]
        )
        out[label] = {"seconds": seconds, "peak_mb": peak, "rows_s": PREDICT_ROWS / seconds}
    return out


def measure():
    with tempfile.TemporaryDirectory(prefix="demand-scale-") as tmp:
        folder = Path(tmp)
        return {"training": training(folder), "loading": loading(folder), "predict": predicting(folder)}


def report(results):
    def verdict(ok):
        return "met" if ok else "**not met**"

    train, load, predict = results["training"], results["loading"], results["predict"]
    base = train["today's size"]["holdout_wape"]
    lines = [
        "## Training time by rows",
        "",
        f"`demand train --device cpu` (`--preset auto`: {len(CANDIDATES)} candidates, the mean of the best "
        f"{ENSEMBLE_SIZE} refit on every row, export "
        "and report) on `demand data generate --series N` (156 weeks); peak memory of the whole process tree, "
        "training workers included (`python bench/scale.py`):",
        "",
        "| data | rows | seconds | candidates' fits (s) | peak RSS | holdout WAPE | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in train.items():
        target = TARGET_SECONDS.get(label)
        ok = target is None or (
            r["seconds"] <= target and r["peak_mb"] <= TARGET_TRAIN_RSS_MB and r["holdout_wape"] <= base * 1.05
        )
        lines.append(
            f"| {label} | {r['rows']:,} | {r['seconds']:.1f} | {r['fits_seconds']:.1f} | {r['peak_mb']:,.0f} MB "
            f"| {r['holdout_wape']:.2f}% | "
            + (f"<= {target} s, <= 2 GB, WAPE no worse than {base:.2f}%: {verdict(ok)}" if target else "")
            + " |"
        )
    lines += [
        "",
        "Holdout WAPE counts as no worse within 5% of today's (a few hundredths of a point: the holdout weeks differ).",
        "",
        "## Loading and batch scoring files",
        "",
        "| measurement | seconds | peak RSS | rows/s | target | |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in load.items():
        lines.append(
            f"| `demand data check`, 999,960 rows, {name} ({r['bytes'] / 2**20:.0f} MiB) | {r['seconds']:.2f} "
            f"| {r['peak_mb']:,.0f} MB | {999_960 / r['seconds'] / 1e6:.2f} M | <= {LOAD_TARGET_S:.0f} s "
            f"| {verdict(r['seconds'] <= LOAD_TARGET_S)} |"
        )
    for name, r in predict.items():
        ok = r["peak_mb"] <= PREDICT_TARGET_RSS_MB and r["rows_s"] >= PREDICT_TARGET_ROWS_S
        lines.append(
            f"| `demand predict`, {PREDICT_ROWS:,} rows, {name} | {r['seconds']:.1f} | {r['peak_mb']:,.0f} MB "
            f"| {r['rows_s'] / 1e6:.2f} M | <= 1 GB, >= 2 M rows/s | {verdict(ok)} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(measure()))
