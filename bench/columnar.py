"""Throughput of POST /predict with 1000-row bodies: TF-Serving's columnar
`inputs` next to the row format's `instances`, each with rows inside the
training range (as bench/run.py's batch body) and outside it (every row
flagged in `extrapolated`, which costs the answer more).

    python bench/columnar.py --model-dir models   # starts the service as bench/run.py does

or `columnar_benchmarks(url, folder)` against a service already running.
"""

import argparse
import json
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import IMAGE_SETTINGS, ONE_ROW, lua_script, wrk  # noqa: E402
from pipeline.schema import FEATURES  # noqa: E402

ROWS = 1000
# Far outside what the embedded data's stores sell and how far ahead they plan;
# columnar_benchmarks checks that the served model flags every such row.
OUTSIDE_ROW = {**ONE_ROW, "prev_week_sales": 5_000_000, "weeks_to_next_holidays": 500}
JSON_HEADERS = {"Content-Type": "application/json"}


def bodies(rows=ROWS):
    """{name: (request body, whether its rows are outside the training range)}."""

    def columns(row, **options):
        return json.dumps({"inputs": {name: [row[name]] * rows for name in FEATURES}, **options}).encode()

    def instances(row):
        return json.dumps({"instances": [row] * rows}).encode()

    return {
        "columnar_inside": (columns(ONE_ROW), False),
        "columnar_outside": (columns(OUTSIDE_ROW), True),
        # What a client that needs only the forecast asks for: a fifth of the answer's bytes.
        "columnar_units_only": (columns(ONE_ROW, fields=["units_sold", "extrapolated"]), False),
        "rows_inside": (instances(ONE_ROW), False),
        "rows_outside": (instances(OUTSIDE_ROW), True),
    }


def extrapolated_flags(url, body):
    """Each row's extrapolated names in the answer to `body`, from either format."""
    request = urllib.request.Request(url, data=body, headers=JSON_HEADERS, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    if "outputs" in answer:
        return answer["outputs"]["extrapolated"]
    return [prediction["extrapolated"] for prediction in answer["predictions"]]


def columnar_benchmarks(base_url, folder, duration=5, connections=16, runs=3):
    """{body name: rows/s, req/s, p50 and p99 in ms, non-2xx answers, socket errors} of the median of `runs`
    wrk runs each (by req/s; every run's req/s in "all_rps"), the bodies taking turns.

    Each body is posted once first, to check that its rows are inside or
    outside the served model's training range as its name says.
    """
    folder = Path(folder)
    url = base_url.rstrip("/") + "/predict"
    scripts = {}
    for name, (body, outside) in bodies().items():
        flags = extrapolated_flags(url, body)
        if len(flags) != ROWS or any(bool(names) != outside for names in flags):
            raise RuntimeError(
                f"the {name} body is not {'outside' if outside else 'inside'} the training range "
                f"of the model served at {base_url}"
            )
        scripts[name] = lua_script(folder, name, body, JSON_HEADERS)
        wrk(url, scripts[name], 1, connections)  # warm up: connections, caches, the answer path
    measured = {name: [] for name in scripts}
    for _ in range(runs):  # in turns, so every body sees the machine's drift alike
        for name, script in scripts.items():
            measured[name].append(wrk(url, script, duration, connections))
    results = {}
    for name, all_runs in measured.items():
        median = sorted(all_runs, key=lambda r: r["rps"])[len(all_runs) // 2]
        results[name] = {"rows_per_s": median["rps"] * ROWS, **median, "all_rps": [round(r["rps"]) for r in all_runs]}
    return results


def main():
    from service.testing import running_service

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a registry with a champion (demand train)")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demand-columnar-") as tmp:
        with running_service(args.model_dir, Path(tmp), **IMAGE_SETTINGS) as service:
            results = columnar_benchmarks(service.url, tmp, args.duration, args.connections)
    for name, r in results.items():
        print(
            f"{name:17} {r['rows_per_s'] / 1e6:5.2f} M rows/s  {r['rps']:7,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
            f"p99 {r['p99_ms']:6.2f} ms  non-2xx {r['non_2xx']}  socket errors {r['socket_errors'] or 'none'}"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
