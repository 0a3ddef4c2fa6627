"""Small requests beside larger ones: single-row /predict under wrk while two
clients keep posting 350-row bodies (about 30 KB, just under the 32 KiB up to
which a worker answers a request on its event loop's thread), with every
request on request threads (DEMAND_INLINE_REQUEST_BYTES=0) and with the
default. What it shows: whether answering small requests on the loop makes
them wait behind the larger ones.

    python bench/mixed.py --model-dir models

or `mixed_benchmarks(model_dir, folder)` from bench/run.py.
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.columnar import JSON_HEADERS  # noqa: E402
from bench.run import ONE_ROW, lua_script, wrk  # noqa: E402
from service.config import Settings  # noqa: E402
from service.testing import running_service  # noqa: E402

LARGER_ROWS = 350


def larger_body(rows=LARGER_ROWS):
    return json.dumps({"instances": [{**ONE_ROW, "prev_week_sales": 30000 + i} for i in range(rows)]}).encode()


def one_run(model_dir, folder, inline_bytes, duration, connections, clients=2):
    """wrk's single-row figures, and the larger requests' rate and median latency, at one setting."""
    one = lua_script(folder, "mixed_one", json.dumps({"instances": [ONE_ROW]}).encode(), JSON_HEADERS)
    body = larger_body()
    with running_service(model_dir, folder, reuse_port=1, inline_request_bytes=inline_bytes) as service:
        url = service.url + "/predict"
        wrk(url, one, 1, connections)  # warm up
        stop, seconds = threading.Event(), []

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
            small = wrk(url, one, duration, connections)
        finally:
            stop.set()
            for thread in threads:
                thread.join()
    seconds.sort()
    return {
        "inline_request_bytes": inline_bytes,
        "larger_body_bytes": len(body),
        "single_row": small,
        "larger_rps": len(seconds) / duration,
        "larger_p50_ms": 1e3 * seconds[len(seconds) // 2],
    }


def mixed_benchmarks(model_dir, folder, duration=6, connections=16, pairs=2):
    """Alternated runs on request threads only and with the default, `pairs` of each."""
    settings = [0, Settings.inline_request_bytes]
    return [
        one_run(model_dir, Path(folder), inline, duration, connections) for _ in range(pairs) for inline in settings
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True, help="a registry with a champion (demand train)")
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demand-mixed-") as tmp:
        runs = mixed_benchmarks(args.model_dir, tmp, args.duration)
    for r in runs:
        s = r["single_row"]
        print(
            f"inline up to {r['inline_request_bytes']:>6} bytes: single row {s['rps']:7,.0f} req/s p50 {s['p50_ms']:5.2f} ms "
            f"p99 {s['p99_ms']:5.2f} ms; {LARGER_ROWS}-row requests {r['larger_rps']:6.1f}/s p50 {r['larger_p50_ms']:5.1f} ms"
        )
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
