"""The measurements of bench/gpu_check.sh on a GPU machine, one subcommand per phase.

bench/gpu_check.sh installs onnxruntime-gpu and the service's packages, points
the loader at the image's CUDA 13 and cuDNN 9 libraries, trains the served
model and generates the data, then runs these in turn; each writes one small
JSON file (the remote run brings back at most 8 files):

    env        what the machine and the Python environment are           env.json
    service    `demand serve` on CUDA with DEMAND_REQUIRE_GPU=1: /readyz,   service.json
               metrics, tritonclient binary inference against the CPU
               provider, rows/s per request over HTTP, CPU service against CUDA
    ort        rows/s of direct ONNX Runtime runs, CPU provider against      ort.json
               CUDA, and how far CUDA's forecasts are from the CPU's
    epochs     seconds per epoch of the auto and chapter presets, CPU (all   train_epochs.json
               cores) against CUDA, on each data set
    cli        wall seconds of `demand train` end to end, same grid          train_cli.json
    summary    the figures and the pass/fail of every check                  summary.txt

Every phase stops starting new work once --deadline (a Unix time) is near, and
records what it skipped: a partial result beats a killed call.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"
AGREEMENT = 1e-5  # relative error allowed between CUDA's and the CPU's forecasts
REQUEST_ROWS = "10000,100000,1000000"
# GPU_CHECK_REHEARSE=1: a rehearsal on a machine without a GPU (tests/test_gpu_check.py),
# where the GPU side of every comparison runs on the CPU. Its figures mean nothing; it
# proves the code still runs, so that a GPU machine's minutes are not spent on a typo.
REHEARSAL = os.environ.get("GPU_CHECK_REHEARSE") == "1"
GPU_DEVICE = "cpu" if REHEARSAL else "cuda"  # torch
GPU_PROVIDER = CPU if REHEARSAL else CUDA  # ONNX Runtime


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def left(deadline):
    return deadline - time.time()


def write(path, doc):
    if REHEARSAL:
        doc["rehearsal"] = "GPU_CHECK_REHEARSE=1: the GPU side ran on the CPU"
    Path(path).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    print(f"wrote {path}", flush=True)


def relative_error(got, reference):
    """{"norm_wise": max|got - reference| / max|reference|, "per_row": max of |got - reference| / |reference|}.

    The check is norm-wise, as the export's parity check (pipeline.export.parity_error):
    the CPU's MLAS approximates tanh and sigmoid, so a row whose forecast is small
    next to the others can differ by more than 1e-5 of itself from rounding alone.
    The per-row figure (references under one unit compared absolutely) is reported too.
    """
    import numpy as np

    got = np.asarray(got, dtype=np.float64).ravel()
    reference = np.asarray(reference, dtype=np.float64).ravel()
    difference = np.abs(got - reference)
    return {
        "norm_wise": float(np.max(difference) / max(float(np.max(np.abs(reference))), 1.0)),
        "per_row": float(np.max(difference / np.maximum(np.abs(reference), 1.0))),
    }


def rate(run, rows, min_seconds=1.0, min_runs=3, max_runs=30):
    """Rows per second of `run()`: the median of timed runs after one warm-up run."""
    run()  # the first run pays for allocations (and on CUDA for choosing kernels)
    times, started = [], time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - started < min_seconds and len(times) < max_runs):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    median = statistics.median(times)
    return {"rows_per_s": round(rows / median), "median_s": round(median, 6), "runs": len(times)}


def feature_rows(stats, n, seed=0):
    """n float32 rows drawn uniformly within the model's training range."""
    import numpy as np

    low, high = np.asarray(stats.raw_x_min, dtype=np.float64), np.asarray(stats.raw_x_max, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return (low + rng.random((n, len(low))) * (high - low)).round().astype(np.float32)


def champion(models):
    from pipeline.registry import Registry

    registry = Registry(models)
    version = registry.champion()
    if version is None:
        raise SystemExit(f"no champion model in {models}")
    return registry, version


# ---------------------------------------------------------------- env


def env(args):
    doc = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "cores": cores(),
        "machine": platform.machine(),
        "ld_library_path": os.environ.get("LD_LIBRARY_PATH", "").split(":"),
    }
    try:
        doc["cpu"] = next(
            line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        doc["gpu"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        doc["gpu"] = f"nvidia-smi failed: {err}"
    import onnxruntime as ort

    doc["onnxruntime"] = {"version": ort.__version__, "file": ort.__file__, "providers": ort.get_available_providers()}
    import torch

    doc["torch"] = {
        "version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    write(args.out, doc)


# ---------------------------------------------------------------- service


def start_service(models, work, workers, **settings):
    """`demand serve` on a free loopback port (in a process group of its own); a Server for it."""
    from service.testing import Server, free_port

    port = free_port()
    log_path = Path(work) / f"serve-{port}.log"
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(Path(work) / f"metrics-{port}"),
        **{f"DEMAND_{k.upper()}": str(v) for k, v in settings.items()},
    }
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--model-dir",
                str(models),
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(f"http://127.0.0.1:{port}", process, log_path)


def wait_ready(server, workers, seconds=90):
    """True once every worker has its model loaded and checked (/metrics); False if
    that does not happen in time or the server exits."""
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            if server.ready_workers() == workers:
                return True
        except requests.RequestException:
            pass
        time.sleep(0.2)
    return False


def stop(server):
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()


def triton_infer(client, X, outputs=("units_sold", "units_sold_normalized")):
    import tritonclient.http as triton

    tensor = triton.InferInput("features", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=True)
    result = client.infer(
        "demand", [tensor], outputs=[triton.InferRequestedOutput(name, binary_data=True) for name in outputs]
    )
    return [result.as_numpy(name).ravel() for name in outputs]


def feed(session, X):
    """A session's inputs for feature rows X: with a series input, every row an unknown series, as a
    request that names none."""
    import numpy as np

    from pipeline.schema import INPUT_TENSOR, SERIES_TENSOR, UNKNOWN_SERIES

    inputs = {INPUT_TENSOR: X}
    if any(i.name == SERIES_TENSOR for i in session.get_inputs()):
        inputs[SERIES_TENSOR] = np.full(len(X), UNKNOWN_SERIES, dtype=np.int64)
    return inputs


def service(args):
    import tritonclient.http as triton

    from pipeline.bundle import make_session
    from pipeline.normalize import MinMaxStats
    from pipeline.schema import NORMALIZED_TENSOR, OUTPUT_TENSOR

    registry, version = champion(args.models)
    model = registry.path(version) / "model.onnx"
    stats = MinMaxStats.from_json(json.loads((registry.path(version) / "normalization.json").read_text()))
    workers = 2
    sizes = [int(n) for n in args.rows.split(",")]
    # One request uses one worker: give each session every core, so that the CPU
    # service's rows/s per request is the CPU's best, as CUDA's is the GPU's.
    common = dict(max_rows=max(sizes), max_body_bytes=64 << 20, intra_op_threads=cores(), reload_interval=0)
    doc = {"model": version, "workers": workers, "settings": common, "checks": {}}
    servers = {}
    try:
        started = time.perf_counter()
        gpu = dict(require_gpu=1) if not REHEARSAL else dict(provider="cpu")
        servers["cuda"] = start_service(args.models, args.work, workers, **gpu, **common)
        ready = wait_ready(servers["cuda"], workers)
        doc["cuda_ready_s"] = round(time.perf_counter() - started, 2)
        cuda = servers["cuda"]
        if not ready:
            doc["checks"]["cuda_service_ready"] = False
            try:  # with DEMAND_REQUIRE_GPU a worker on the CPU answers 503 with its reason
                doc["readyz_not_ready"] = cuda.get("/readyz").text[:1000]
            except Exception as err:
                doc["readyz_not_ready"] = str(err)
            doc["cuda_log_tail"] = cuda.log()[-4000:]
            return
        readyz = cuda.get("/readyz").json()
        doc["readyz"] = readyz
        doc["checks"]["readyz_reports_cuda"] = readyz.get("execution_provider") == GPU_PROVIDER
        metrics = cuda.get("/metrics").text.splitlines()
        info = [line for line in metrics if line.startswith("demand_model_info{") and line.endswith(" 1.0")]
        doc["metrics_model_info"] = info
        doc["metrics_ready_workers"] = cuda.ready_workers()
        doc["checks"]["metrics_report_cuda"] = (
            len(info) == workers
            and all(f'provider="{GPU_PROVIDER}"' in line for line in info)
            and cuda.ready_workers() == workers
        )
        doc["v2_model_provider"] = cuda.get("/v2/models/demand").json().get("parameters", {}).get("execution_provider")
        doc["serving_log_lines"] = [line for line in cuda.log().splitlines() if "serving model" in line]

        # The same rows through tritonclient's binary protocol (CUDA) and a CPU session.
        client = triton.InferenceServerClient(
            url=cuda.url.removeprefix("http://"), connection_timeout=60.0, network_timeout=300.0
        )
        X = feature_rows(stats, max(sizes[:2]), seed=1)
        units, normalized = triton_infer(client, X)
        session, active = make_session(model, "cpu")
        cpu_units, cpu_normalized = session.run([OUTPUT_TENSOR, NORMALIZED_TENSOR], feed(session, X))
        doc["triton_vs_cpu"] = {
            "rows": len(X),
            "cpu_session": active,
            "units_relative_error": relative_error(units, cpu_units),
            "normalized_relative_error": relative_error(normalized, cpu_normalized),
            "allowed": AGREEMENT,
        }
        doc["checks"]["triton_binary_agrees_with_cpu"] = (
            doc["triton_vs_cpu"]["units_relative_error"]["norm_wise"] <= AGREEMENT
        )

        # Rows per second per request over HTTP: the CPU provider's service beside CUDA's.
        servers["cpu"] = start_service(args.models, args.work, workers, provider="cpu", **common)
        if not wait_ready(servers["cpu"], workers):
            doc["cpu_log_tail"] = servers["cpu"].log()[-4000:]
            return
        doc["cpu_service_provider"] = servers["cpu"].get("/readyz").json().get("execution_provider")
        clients = {
            name: triton.InferenceServerClient(
                url=s.url.removeprefix("http://"), connection_timeout=60.0, network_timeout=300.0
            )
            for name, s in servers.items()
        }
        doc["http_rows_per_s"] = {}
        for rows in sizes:
            X = feature_rows(stats, rows, seed=2)
            for name in ("cpu", "cuda"):
                if left(args.deadline) < 20:
                    doc["http_rows_per_s"].setdefault("skipped", []).append(f"{name} {rows}: out of time")
                    continue
                doc["http_rows_per_s"].setdefault(name, {})[rows] = rate(
                    lambda: triton_infer(clients[name], X, outputs=("units_sold",)), rows
                )
    finally:
        for server in servers.values():
            stop(server)
        write(args.out, doc)


# ---------------------------------------------------------------- ort


def ort_phase(args):
    import onnxruntime as ort

    from pipeline.bundle import Bundle, make_session
    from pipeline.schema import NORMALIZED_TENSOR, OUTPUT_TENSOR

    registry, version = champion(args.models)
    model = str(registry.path(version) / "model.onnx")
    threads = cores()
    doc = {"model": version, "threads": threads, "rows_per_s": {}, "agreement": {}, "errors": {}}
    bundles = {"cpu": Bundle.load(registry, version, "cpu", threads)}
    try:
        bundles["cuda"] = Bundle.load(registry, version, GPU_DEVICE, threads)
    except Exception as err:  # CUDA could not load: the CPU side still measures
        doc["errors"]["cuda_bundle"] = str(err)
    doc["providers"] = {p: b.provider for p, b in bundles.items()}
    doc["chunk_rows"] = bundles["cpu"].chunk_rows
    sessions = {"cpu": make_session(model, "cpu", threads)[0]}
    if "cuda" in bundles and not REHEARSAL:
        sessions["cuda"] = bundles["cuda"].session
        # ORT's CUDA provider multiplies in TF32 by default on this GPU; without
        # it, for the agreement figure and for what it costs.
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            sessions["cuda_no_tf32"] = ort.InferenceSession(
                model, sess_options=options, providers=[(CUDA, {"use_tf32": "0"}), CPU]
            )
        except Exception as err:
            doc["errors"]["cuda_no_tf32"] = str(err)
    if REHEARSAL:
        sessions["cuda"] = bundles["cuda"].session
    stats = bundles["cpu"].stats
    for rows in (int(n) for n in args.rows.split(",")):
        X = feature_rows(stats, rows, seed=3)
        outputs = {}
        for name, session in sessions.items():
            if left(args.deadline) < 20:
                doc["rows_per_s"].setdefault("skipped", []).append(f"{name} {rows}: out of time")
                continue
            # The whole request in one session run, and as the service runs it
            # (Bundle.run: in chunks of chunk_rows, sized for the CPU's caches).
            doc["rows_per_s"].setdefault(f"{name}_one_run", {})[rows] = rate(
                lambda: session.run([OUTPUT_TENSOR], feed(session, X)), rows
            )
            if name in bundles:
                doc["rows_per_s"].setdefault(f"{name}_bundle", {})[rows] = rate(lambda: bundles[name].run(X), rows)
            outputs[name] = session.run([OUTPUT_TENSOR, NORMALIZED_TENSOR], feed(session, X))
        for name in outputs:
            if name != "cpu" and "cpu" in outputs:
                doc["agreement"].setdefault(name, {})[rows] = {
                    "units": relative_error(outputs[name][0], outputs["cpu"][0]),
                    "normalized": relative_error(outputs[name][1], outputs["cpu"][1]),
                }
    doc["agreement_allowed"] = AGREEMENT
    if "cuda" in doc["agreement"]:
        doc["cuda_agrees"] = max(v["units"]["norm_wise"] for v in doc["agreement"]["cuda"].values()) <= AGREEMENT
    write(args.out, doc)


# ---------------------------------------------------------------- training


def epochs_phase(args):
    """Seconds per epoch of each preset, trained as `demand train` trains it
    (pipeline.parallel.fit_all: side by side on the CPU's cores, one after the
    other on CUDA), twice: for 1 and for 1 + K epochs.

    Each network's own training time (TrainResult.seconds, measured inside fit,
    wherever it ran) for 1 + K epochs less that for 1, over K, is its cost of an
    epoch, free of the fixed costs (normalizing, copying the rows to the device).
    The preset's epoch costs the sum of its networks' when they train one after
    the other, and that sum spread over the worker processes (at least the
    slowest network's) when they train side by side. The wall time of the
    whole fit_all, processes started and rows shipped included, is reported too.
    """
    import numpy as np

    from pipeline.data import load_file, time_split
    from pipeline.parallel import PARALLEL_MIN_ROWS, fit_all, usable_cores
    from pipeline.select import preset_configs
    from pipeline.train import fit

    counts = {"chapter": (1, 1 + args.chapter_epochs), "auto": (1, 1 + args.auto_epochs)}
    doc = {"cores": cores(), "epoch_counts": counts, "runs": [], "skipped": []}
    warm = False
    try:
        for label, path in (item.split("=", 1) for item in args.data):
            started = time.perf_counter()
            data = load_file(path)
            split = time_split(data)
            loaded = round(time.perf_counter() - started, 2)
            if not warm:
                # The first fit on a device pays for starting it (CUDA's context,
                # cuBLAS, torch's thread pool): not an epoch's cost.
                few = split.train.take(np.arange(min(2048, len(split.train))))
                for device in ("cpu", GPU_DEVICE):
                    for config in preset_configs("auto", {"device": device, "epochs": 2}).values():
                        fit(few, few, config)
                warm = True
            for preset in ("chapter", "auto"):
                for device in ("cpu", "cuda"):
                    if left(args.deadline) < args.reserve:
                        doc["skipped"].append(f"{label} {preset} {device}: out of time")
                        continue
                    walls, seconds = {}, {}
                    actual = GPU_DEVICE if device == "cuda" else "cpu"
                    for epochs in counts[preset]:
                        configs = list(
                            preset_configs(
                                preset, {"device": actual, "epochs": epochs, "patience": 0, "target_loss": 0.0}
                            ).values()
                        )
                        t = time.perf_counter()
                        results = fit_all(configs, split.train, split.validation)
                        walls[epochs] = time.perf_counter() - t
                        seconds[epochs] = [r.seconds for r in results]
                    e1, e2 = counts[preset]
                    networks = [(b - a) / (e2 - e1) for a, b in zip(seconds[e1], seconds[e2])]
                    side_by_side = (
                        actual == "cpu"
                        and len(configs) > 1
                        and usable_cores() > 1
                        and len(split.train) >= PARALLEL_MIN_ROWS
                    )
                    workers = min(len(configs), usable_cores()) if side_by_side else 1
                    per_epoch = max(max(networks), sum(networks) / workers)
                    wall_per_epoch = (walls[e2] - walls[e1]) / (e2 - e1)
                    run = {
                        "data": label,
                        "rows": len(data),
                        "train_rows": len(split.train),
                        "load_s": loaded,
                        "preset": preset,
                        "device": device,
                        "networks": len(configs),
                        "workers": workers,
                        "seconds_per_epoch": round(per_epoch, 5),
                        "network_seconds_per_epoch": [round(v, 5) for v in networks],
                        "fixed_s": round(walls[e1] - e1 * per_epoch, 3),
                        "wall_s": {str(k): round(v, 3) for k, v in walls.items()},
                        "wall_seconds_per_epoch": round(wall_per_epoch, 5),
                    }
                    doc["runs"].append(run)
                    print(
                        f"{label} {preset} {device}: {per_epoch:.4f} s/epoch ({workers} at a time; "
                        f"by wall time {wall_per_epoch:.4f}), fixed {run['fixed_s']} s",
                        flush=True,
                    )
    finally:
        write(args.out, doc)


def cli_phase(args):
    """`demand train` end to end (load, select, evaluate, refit, export, publish) with a few epochs."""
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {"runs": [], "skipped": []}
    try:
        for label, path in (item.split("=", 1) for item in args.data):
            for preset in args.presets.split(","):
                for device in ("cpu", "cuda"):
                    budget = min(args.max_run_s, left(args.deadline) - args.reserve)
                    if budget < 20:
                        doc["skipped"].append(f"{label} {preset} {device}: out of time")
                        continue
                    models = Path(args.work) / f"cli-{label}-{preset}-{device}"
                    command = [
                        sys.executable,
                        "-m",
                        "pipeline",
                        "train",
                        "--data",
                        path,
                        "--preset",
                        preset,
                        "--device",
                        GPU_DEVICE if device == "cuda" else "cpu",
                        "--epochs",
                        str(args.epochs),
                        "--model-dir",
                        str(models),
                        "--json",
                    ]
                    run = {"data": label, "preset": preset, "device": device, "epochs": args.epochs}
                    t = time.perf_counter()
                    try:
                        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=budget)
                    except subprocess.TimeoutExpired:
                        run.update(wall_s=round(time.perf_counter() - t, 2), error=f"stopped after {budget:.0f} s")
                        doc["runs"].append(run)
                        continue
                    run["wall_s"] = round(time.perf_counter() - t, 2)
                    if done.returncode != 0:
                        run["error"] = done.stderr[-2000:]
                    else:
                        card = json.loads(done.stdout)
                        run.update(
                            trained_on=card["device"],
                            published_training=card["training"],
                            candidates=[
                                {k: c[k] for k in ("name", "epochs_run", "seconds")}
                                for c in card["selection"]["candidates"]
                            ],
                            holdout_wape=card["metrics"]["holdout"]["model"]["wape"],
                        )
                    doc["runs"].append(run)
                    print(
                        f"demand train {label} {preset} {device}: {run['wall_s']} s"
                        f"{' (failed)' if 'error' in run else ''}",
                        flush=True,
                    )
    finally:
        write(out, doc)


# ---------------------------------------------------------------- summary


def load(folder, name):
    path = Path(folder) / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(args):
    """summary.txt from the phases' files; exit status 3 when a check failed, 0 when all passed."""
    folder = Path(args.out_dir)
    lines, checks = [], {}
    environment = load(folder, "env.json") or {}
    lines.append(f"machine: {environment.get('gpu')}; {environment.get('cores')} cores ({environment.get('cpu')})")
    lines.append(
        f"onnxruntime {environment.get('onnxruntime', {}).get('version')} "
        f"providers {environment.get('onnxruntime', {}).get('providers')}; torch {environment.get('torch', {}).get('version')}"
    )
    served = load(folder, "service.json")
    if served is None:
        checks["service_ran"] = False
    else:
        checks.update(served.get("checks", {}))
        agreement = served.get("triton_vs_cpu", {})
        lines.append(
            f"service: /readyz provider {served.get('readyz', {}).get('execution_provider')}, "
            f"metrics {served.get('metrics_model_info')}, ready in {served.get('cuda_ready_s')} s"
        )
        if agreement:
            error = agreement["units_relative_error"]
            lines.append(
                f"tritonclient binary (CUDA service) against a CPU session, {agreement['rows']:,} rows: relative "
                f"error {error['norm_wise']:.2e} norm-wise (allowed {AGREEMENT:g}), {error['per_row']:.2e} per row"
            )
        for name, by_rows in served.get("http_rows_per_s", {}).items():
            if name != "skipped":
                lines.append(
                    f"  HTTP V2 binary, {name} service: "
                    + ", ".join(f"{int(rows):,} rows/request {v['rows_per_s']:,} rows/s" for rows, v in by_rows.items())
                )
    direct = load(folder, "ort.json")
    if direct is not None:
        lines.append(f"ONNX Runtime direct ({direct.get('threads')} CPU threads), rows/s:")
        for name, by_rows in direct.get("rows_per_s", {}).items():
            if name != "skipped":
                lines.append(
                    f"  {name:<22}"
                    + ", ".join(f"{int(r):>9,} rows {v['rows_per_s']:>13,}/s" for r, v in by_rows.items())
                )
        for name, by_rows in direct.get("agreement", {}).items():
            lines.append(
                f"  {name} against CPU, relative error norm-wise / per row: "
                + ", ".join(
                    f"{int(r):,} rows {v['units']['norm_wise']:.2e} / {v['units']['per_row']:.2e}"
                    for r, v in by_rows.items()
                )
            )
        if direct.get("errors"):
            lines.append(f"  errors: {direct['errors']}")
        if "cuda_agrees" in direct:
            checks["ort_cuda_agrees_with_cpu"] = direct["cuda_agrees"]
    epochs = load(folder, "train_epochs.json")
    if epochs is not None:
        lines.append("training, seconds per epoch (fixed seconds per run apart):")
        for run in epochs.get("runs", []):
            lines.append(
                f"  {run['data']:>4} {run['preset']:<8}{run['device']:<5}{run['seconds_per_epoch']:>10.4f} s/epoch"
                f"   fixed {run['fixed_s']:>7.2f} s   ({run['networks']} networks, {run['workers']} at a time, "
                f"{run['train_rows']:,} training rows)"
            )
        lines += [f"  skipped: {s}" for s in epochs.get("skipped", [])]
        # What --device auto's rule needs: how many times faster an epoch is on CUDA.
        per_epoch = {(r["data"], r["preset"], r["device"]): r["seconds_per_epoch"] for r in epochs.get("runs", [])}
        for (data, preset, device), cpu in per_epoch.items():
            gpu = per_epoch.get((data, preset, "cuda"))
            if device == "cpu" and gpu:
                lines.append(f"  {data} {preset}: an epoch on CUDA is {cpu / gpu:.2f} times as fast as on the CPU")
    cli = load(folder, "train_cli.json")
    if cli is not None:
        lines.append("demand train end to end (wall seconds):")
        for run in cli.get("runs", []):
            result = (
                "failed: " + run["error"].strip().splitlines()[-1][:200]
                if "error" in run
                else f"on {run.get('trained_on')}"
            )
            lines.append(
                f"  {run['data']:>4} {run['preset']:<8}{run['device']:<5}{run['wall_s']:>9.1f} s  {run['epochs']} epochs, {result}"
            )
        lines += [f"  skipped: {s}" for s in cli.get("skipped", [])]
        checks["cli_training_ran"] = all("error" not in run for run in cli.get("runs", []))
    tests = folder / "tests.txt"
    if tests.exists():
        # bench/gpu_check.sh ends the file with "pytest exit status N"; before it, pytest's own last line.
        text = [line for line in tests.read_text().splitlines() if line.strip()]
        status = text[-1] if text and text[-1].startswith("pytest exit status") else "pytest exit status unknown"
        outcome = next(
            (line for line in reversed(text) if " passed" in line or " failed" in line or " error" in line), ""
        )
        lines.append(f"provider-sensitive tests: {outcome.strip('= ')} ({status})")
        checks["tests_pass"] = status == "pytest exit status 0"
    failed = [name for name, ok in checks.items() if not ok]
    if environment.get("rehearsal"):
        lines.insert(
            0, "REHEARSAL (GPU_CHECK_REHEARSE=1): the GPU side ran on the CPU, on small data; the figures mean nothing"
        )
    lines.insert(
        0,
        f"GPU check: {'all checks passed' if not failed else 'FAILED: ' + ', '.join(failed)}"
        f" ({', '.join(name for name, ok in checks.items() if ok) or 'none passed'})",
    )
    text = "\n".join(lines) + "\n"
    (folder / "summary.txt").write_text(text)
    print(text, end="")
    return 3 if failed else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="phase", required=True)
    for name in ("env", "service", "ort", "epochs", "cli", "summary"):
        p = sub.add_parser(name)
        p.add_argument("--deadline", type=float, default=time.time() + 600, help="Unix time to finish by")
        p.add_argument("--out", help="the JSON file to write")
        p.add_argument("--out-dir", help="summary: the folder of the phases' files")
        p.add_argument("--models", help="a registry whose champion is served")
        p.add_argument("--work", default="/tmp/gpu-check", help="scratch folder")
        p.add_argument("--data", action="append", default=[], help="LABEL=PATH of a training data set (repeatable)")
        p.add_argument("--reserve", type=float, default=60, help="seconds kept for the phases after this one")
        p.add_argument("--chapter-epochs", type=int, default=5, help="epochs: extra epochs of the second chapter run")
        p.add_argument("--auto-epochs", type=int, default=40, help="epochs: extra epochs of the second auto run")
        p.add_argument("--epochs", type=int, default=5, help="cli: --epochs of each `demand train`")
        p.add_argument("--max-run-s", type=float, default=150, help="cli: longest one `demand train` may take")
        p.add_argument("--rows", default=REQUEST_ROWS, help="service, ort: rows per request, comma-separated")
        p.add_argument("--presets", default="chapter,auto", help="cli: the presets to train, comma-separated")
    args = parser.parse_args(argv)
    phases = {
        "env": env,
        "service": service,
        "ort": ort_phase,
        "epochs": epochs_phase,
        "cli": cli_phase,
        "summary": summary,
    }
    return phases[args.phase](args) or 0


if __name__ == "__main__":
    sys.exit(main())
