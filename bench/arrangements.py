"""The service under each way gunicorn can run it, measured alternated on this
machine: single-row /predict beside the ceiling app under the same arrangement,
1000-row columnar bodies, /forecast plans, and single rows while two clients
keep posting 350-row bodies (their p99 shows whether small requests wait
behind larger ones).

    python bench/arrangements.py --model-dir models [--arrangement gthread+nginx ...]

Arrangements: `gthread` (gunicorn's threaded worker, as `demand serve` runs
it), `gthread+nginx` (the same behind deploy/nginx.conf, as compose and
Kubernetes run it), `gevent` (gunicorn's gevent worker, serving directly); each with a listening
socket per worker, as the images run it (bench.run.IMAGE_SETTINGS).
"""

import argparse
import contextlib
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.columnar import JSON_HEADERS, bodies  # noqa: E402
from bench.run import IMAGE_SETTINGS, ONE_ROW, lua_script, wrk  # noqa: E402
from service.testing import running_proxy, running_service  # noqa: E402

ARRANGEMENTS = {"gthread": ("gthread", False), "gthread+nginx": ("gthread", True), "gevent": ("gevent", False)}
LARGER_ROWS = 350
PLAN_SERIES = 1000


def plan_body(series=PLAN_SERIES, weeks=8):
    return json.dumps(
        {
            "series": [
                {
                    "id": f"store-{i}",
                    "prev_week_sales": 30000 + 37 * i,
                    "weeks": [
                        {"discount_fraction": (10 * (i + w)) % 60, "weeks_to_next_holidays": (w + i) % 9}
                        for w in range(weeks)
                    ],
                }
                for i in range(series)
            ]
        }
    ).encode()


def larger_body(rows=LARGER_ROWS):
    return json.dumps({"instances": [{**ONE_ROW, "prev_week_sales": 30000 + i} for i in range(rows)]}).encode()


@contextlib.contextmanager
def arranged(name, model_dir, folder, **service):
    """Yield the base URL clients use for one arrangement."""
    worker_class, proxied = ARRANGEMENTS[name]
    with running_service(model_dir, folder, worker_class=worker_class, **IMAGE_SETTINGS, **service) as server:
        if not proxied:
            yield server.url
            return
        port = int(server.url.rsplit(":", 1)[1])
        with running_proxy([port], folder) as url:
            yield url


def beside_larger(url, script, duration, connections, clients=2):
    """wrk's single-row figures while `clients` keep posting 350-row bodies, and their rate."""
    body, stop, seconds = larger_body(), threading.Event(), []

    def post_larger():
        with requests.Session() as session:
            while not stop.is_set():
                started = time.perf_counter()
                session.post(url, data=body, headers=JSON_HEADERS, timeout=10).raise_for_status()
                seconds.append(time.perf_counter() - started)

    threads = [threading.Thread(target=post_larger) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        small = wrk(url, script, duration, connections)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    return {**small, "larger_rps": len(seconds) / duration}


def measure(model_dir, folder, names=tuple(ARRANGEMENTS), duration=5, connections=16, runs=3):
    """{arrangement: {figure: median run}}, every figure's runs alternated across arrangements."""
    folder = Path(folder)
    scripts = {
        "one": lua_script(folder, "one", json.dumps({"instances": [ONE_ROW]}).encode(), JSON_HEADERS),
        "columns": lua_script(folder, "columns", bodies()["columnar_inside"][0], JSON_HEADERS),
        "forecast": lua_script(folder, "forecast", plan_body(), JSON_HEADERS),
    }
    with contextlib.ExitStack() as stack:
        urls, ceilings = {}, {}
        for name in names:
            urls[name] = stack.enter_context(arranged(name, model_dir, folder))
            ceilings[name] = stack.enter_context(
                arranged(
                    name,
                    model_dir,
                    folder,
                    app="bench.ceiling_app:create_app()",
                    is_ready=lambda s: s.post("/predict", data=b"{}").ok,
                )
            )
        for name in names:  # warm up
            wrk(urls[name] + "/predict", scripts["one"], 1, connections)
            wrk(ceilings[name] + "/predict", scripts["one"], 1, connections)
        figures = {name: {} for name in names}

        def alternate(figure, run):
            for _ in range(runs):
                for name in names:
                    figures[name].setdefault(figure, []).append(run(name))

        alternate("ceiling", lambda n: wrk(ceilings[n] + "/predict", scripts["one"], duration, connections))
        alternate("single_row", lambda n: wrk(urls[n] + "/predict", scripts["one"], duration, connections))
        alternate("columns_1000", lambda n: wrk(urls[n] + "/predict", scripts["columns"], duration, connections))
        alternate("forecast", lambda n: wrk(urls[n] + "/forecast", scripts["forecast"], duration, 8))
        alternate("beside_larger", lambda n: beside_larger(urls[n] + "/predict", scripts["one"], duration, connections))
    return {
        name: {
            figure: {**sorted(rs, key=lambda r: r["rps"])[len(rs) // 2], "all_rps": [round(r["rps"]) for r in rs]}
            for figure, rs in measured.items()
        }
        for name, measured in figures.items()
    }


def lines(results):
    """A markdown table of measure()'s results."""
    out = [
        "| arrangement | ceiling app, single row | /predict single row | 1000-row columns | /forecast 1000x8 | "
        "single row p99 beside 350-row bodies |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in results.items():
        out.append(
            f"| {name} | {f['ceiling']['rps']:,.0f} req/s | {f['single_row']['rps']:,.0f} req/s "
            f"(p99 {f['single_row']['p99_ms']:.1f} ms) | {f['columns_1000']['rps']:,.0f} req/s | "
            f"{f['forecast']['rps']:,.1f} req/s | {f['beside_larger']['p99_ms']:.1f} ms "
            f"(p50 {f['beside_larger']['p50_ms']:.1f} ms; {f['beside_larger']['larger_rps']:.0f} larger/s) |"
        )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a registry with a champion (demand train)")
    parser.add_argument("--arrangement", action="append", choices=sorted(ARRANGEMENTS), help="default: all")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=3, help="alternated runs per figure; the median is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demand-arrangements-") as tmp:
        results = measure(args.model_dir, tmp, tuple(args.arrangement or ARRANGEMENTS), args.duration, runs=args.runs)
    print("\n".join(lines(results)))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
