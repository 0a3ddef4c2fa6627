import csv
import json
import os
import subprocess
import sys

import click
import pytest
import torch

from pipeline.cli import main
from pipeline.errors import DataError

from .conftest import DEFAULT_CSV, ROOT, write_rows


@pytest.mark.slow
def test_help_is_instant_because_torch_is_not_imported():
    code = "import sys; from pipeline.cli import main; sys.argv=['demand','--help']\ntry: main()\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'onnx' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False False"


def test_train_json_on_stdout_progress_on_stderr(runner, small_csv, model_dir):
    result = runner.invoke(
        main, ["train", "--data", str(small_csv), "--model-dir", str(model_dir), "--epochs", "30", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert (
        document["version"] == "v1"
        and document["champion"] is True
        and document["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    )
    assert document["metrics"]["holdout"]["model"]["wape"] > 0
    assert (
        "candidate log-large-batch" in result.stderr and "epoch 1/" in result.stderr and "published v1" in result.stderr
    )


def test_train_options_reach_the_model_and_the_env_sets_the_registry(runner, small_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("DEMAND_MODEL_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("DEMAND_TRAIN_EPOCHS", "7")
    result = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(small_csv),
            "--preset",
            "chapter",
            "--hidden",
            "6,4,3",
            "--activation",
            "tanh",
            "--engine",
            "manual",
            "--seed",
            "3",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    card = json.loads((tmp_path / "from-env" / "versions" / "v1" / "card.json").read_text())
    assert card["params"]["hidden"] == [6, 4, 3] and card["params"]["activation"] == "tanh"
    assert card["params"]["engine"] == "manual" and card["params"]["seed"] == 3 and card["params"]["epochs"] == 7
    assert card["training"]["epochs_run"] == 7


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden", "10,x"], "integers separated by commas"),
        (["--lr", "-1"], "--lr"),
        (["--device", "tpu"], "'tpu' is not one of"),
    ],
)
def test_bad_options_are_named(runner, small_csv, model_dir, args, message):
    result = runner.invoke(main, ["train", "--data", str(small_csv), "--model-dir", str(model_dir), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_gelu_needs_the_torch_engine_and_says_so(runner, small_csv, model_dir):
    result = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(small_csv),
            "--model-dir",
            str(model_dir),
            "--preset",
            "chapter",
            "--activation",
            "gelu",
            "--engine",
            "manual",
            "--epochs",
            "3",
        ],
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "the manual engine has the sigmoid and tanh activations, not gelu" in result.stderr
    assert "use --engine torch, or --activation tanh with it" in result.stderr
    assert not (model_dir / "versions").exists()


def test_bad_data_is_a_clear_error_not_a_traceback(runner, tmp_path, model_dir):
    path = write_rows(tmp_path / "bad.csv", [[10, 120, 2, 5, "2024-01-01"]])
    result = runner.invoke(main, ["train", "--data", str(path), "--model-dir", str(model_dir)])
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "line 2, column 'discount_fraction': must be <= 100" in result.stderr
    assert "Traceback" not in result.output
    assert not model_dir.exists() or not (model_dir / "versions").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the error path needs a machine without CUDA")
def test_cuda_request_without_gpu_is_a_clear_error(runner, small_csv, model_dir):
    result = runner.invoke(main, ["train", "--data", str(small_csv), "--model-dir", str(model_dir), "--device", "cuda"])
    assert result.exit_code == 1 and "no CUDA device" in result.stderr


def test_models_list_and_show(runner, published):
    listing = runner.invoke(main, ["models", "list", "--model-dir", str(published), "--json"])
    document = json.loads(listing.stdout)
    assert document["champion"] == "v1" and document["versions"][0]["version"] == "v1"
    table = runner.invoke(main, ["models", "list", "--model-dir", str(published)])
    assert "* v1" in table.stdout and "WAPE" in table.stdout
    shown = runner.invoke(main, ["models", "show", "v1", "--model-dir", str(published)])
    assert shown.exit_code == 0 and "naive" in shown.stdout and "linear" in shown.stdout and "parity" in shown.stdout
    assert "preset auto: mean of" in shown.stdout and "refit on every row" in shown.stdout
    card = json.loads(runner.invoke(main, ["models", "show", "v1", "--model-dir", str(published), "--json"]).stdout)
    assert card["version"] == "v1"
    missing = runner.invoke(main, ["models", "show", "v99", "--model-dir", str(published)])
    assert missing.exit_code == 1 and "no version 'v99'" in missing.stderr


def test_predict_scores_a_csv_with_intervals_and_extrapolation_flags(runner, published, tmp_path):
    source = write_rows(
        tmp_path / "in.csv",
        [[40000, 30, 2, "2026-01-05"], [9_000_000, 30, 2, "2026-01-05"]],
        header=("prev_week_sales", "discount_fraction", "weeks_to_next_holidays", "week"),
    )
    out = tmp_path / "out.csv"
    result = runner.invoke(
        main, ["predict", "--input", str(source), "--output", str(out), "--model-dir", str(published)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["week"] for r in rows] == ["2026-01-05", "2026-01-05"]
    first, second = rows
    assert float(first["interval_low"]) < float(first["forecast_units_sold"]) < float(first["interval_high"])
    assert first["extrapolated"] == "" and second["extrapolated"] == "prev_week_sales"
    assert first["model_version"] == "v1"


def test_predict_refuses_bad_rows_and_unknown_versions(runner, published, tmp_path):
    source = write_rows(
        tmp_path / "in.csv", [[40000, -3, 2]], header=("prev_week_sales", "discount_fraction", "weeks_to_next_holidays")
    )
    result = runner.invoke(
        main, ["predict", "--input", str(source), "--output", str(tmp_path / "o.csv"), "--model-dir", str(published)]
    )
    assert result.exit_code == 1 and "discount_fraction" in result.stderr
    good = write_rows(
        tmp_path / "good.csv",
        [[40000, 3, 2]],
        header=("prev_week_sales", "discount_fraction", "weeks_to_next_holidays"),
    )
    result = runner.invoke(
        main,
        [
            "predict",
            "--input",
            str(good),
            "--output",
            str(tmp_path / "o.csv"),
            "--version",
            "v42",
            "--model-dir",
            str(published),
        ],
    )
    assert result.exit_code == 1 and "v42" in result.stderr


def test_predict_without_a_champion_says_how_to_get_one(runner, tmp_path):
    good = write_rows(
        tmp_path / "good.csv",
        [[40000, 3, 2]],
        header=("prev_week_sales", "discount_fraction", "weeks_to_next_holidays"),
    )
    result = runner.invoke(
        main,
        ["predict", "--input", str(good), "--output", str(tmp_path / "o.csv"), "--model-dir", str(tmp_path / "empty")],
    )
    assert result.exit_code == 1 and "demand train" in result.stderr


def test_a_ctrl_c_that_an_import_swallowed_reads_as_aborted(runner, published, tmp_path, monkeypatch):
    """A Ctrl-C landing while ONNX Runtime's C extension initializes is
    swallowed there, and the import fails with "initialization failed": the
    command says it was aborted, not that the model cannot be loaded."""
    import signal

    from pipeline import bundle

    swallowed = []

    def interrupted_import(*args, **kwargs):
        try:
            signal.raise_signal(signal.SIGINT)  # to this thread: the handler runs as this call returns
        except KeyboardInterrupt:
            swallowed.append(True)  # what the extension's C code does with it
        raise ImportError("initialization failed")

    monkeypatch.setattr(bundle, "make_session", interrupted_import)
    good = write_rows(
        tmp_path / "good.csv",
        [[40000, 3, 2]],
        header=("prev_week_sales", "discount_fraction", "weeks_to_next_holidays"),
    )
    args = ["predict", "--input", str(good), "--output", str(tmp_path / "o.csv"), "--model-dir", str(published)]
    # A test run started ignoring Ctrl-C (a background job of a shell) would
    # pass that on to the command, which then rightly keeps ignoring it.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = runner.invoke(main, args)
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert swallowed, "the Ctrl-C did not land inside the import"
    assert result.exit_code == 1 and "Aborted!" in result.stderr and "cannot load model" not in result.stderr
    assert after is signal.default_int_handler  # the command put back the handler it found

    monkeypatch.setattr(
        bundle, "make_session", lambda *a, **k: (_ for _ in ()).throw(ImportError("initialization failed"))
    )
    result = runner.invoke(main, args)  # the same error with no Ctrl-C is the model's
    assert result.exit_code == 1 and "cannot load model v1: initialization failed" in result.stderr


@pytest.mark.slow
def test_train_stopped_with_sigterm_stops_its_training_workers(tmp_path):
    """SIGTERM (docker stop, the scheduler) unwinds like Ctrl-C: the spawned
    training workers are stopped too, not left running as orphans."""
    import os
    import signal
    import time

    from pipeline.parallel import PARALLEL_MIN_ROWS

    data = tmp_path / "many.csv"
    weeks = 2 * PARALLEL_MIN_ROWS // 100 + 20  # enough training rows for the workers to start
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline",
            "data",
            "generate",
            "-o",
            str(data),
            "--series",
            "100",
            "--weeks",
            str(weeks),
        ],
        check=True,
        capture_output=True,
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "train", "--data", str(data), "--model-dir", str(tmp_path / "models")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    workers, deadline = [], time.monotonic() + 120
    while len(workers) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        found = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(pid) for pid in found]
    assert len(workers) >= 2, "the training workers never started"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM and b"Traceback" not in stderr
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}")], "training workers outlived the command"
    assert not (tmp_path / "models" / "champion").exists()


def test_gradcheck_command(runner):
    result = runner.invoke(main, ["gradcheck", "--trials", "20", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["passed"]
    shown = runner.invoke(main, ["gradcheck", "--trials", "6"])
    assert shown.exit_code == 0 and shown.output.count(" ok") == 3 and "sigmoid output, half-sse" in shown.output


def test_gradcheck_exits_non_zero_on_a_wrong_derivative(runner, monkeypatch):
    from pipeline import backprop

    sigmoid = backprop.ACTIVATIONS["sigmoid"]
    monkeypatch.setitem(backprop.ACTIVATIONS, "sigmoid", (sigmoid[0], lambda a: a))  # the (1 - a) factor dropped
    result = runner.invoke(main, ["gradcheck", "--trials", "6"])
    assert result.exit_code == 1 and "FAILED" in result.output and "beyond the tolerance" in result.output


def test_data_generate_and_check(runner, tmp_path):
    out = tmp_path / "gen.csv"
    result = runner.invoke(
        main, ["data", "generate", "--output", str(out), "--series", "2", "--weeks", "40", "--seed", "4"]
    )
    assert result.exit_code == 0
    assert len(out.read_text().splitlines()) == 81
    check = runner.invoke(main, ["data", "check", str(out), "--json"])
    summary = json.loads(check.stdout)
    assert summary["rows"] == 80 and summary["splits"]["holdout"]["rows"] == 16


def test_data_check_and_train_take_a_folder_as_the_readme_says(runner, tmp_path):
    folder = tmp_path / "history"
    folder.mkdir()
    runner.invoke(main, ["data", "generate", "--output", str(folder / "a.csv"), "--series", "2", "--weeks", "40"])
    runner.invoke(
        main,
        [
            "data",
            "generate",
            "--output",
            str(folder / "b.csv"),
            "--series",
            "3",
            "--weeks",
            "40",
            "--start",
            "2030-01-07",
        ],
    )
    check = runner.invoke(main, ["data", "check", str(folder), "--json"])
    assert check.exit_code == 0, check.output
    assert json.loads(check.stdout)["rows"] == 200
    trained = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(folder),
            "--preset",
            "log-small-full",
            "--epochs",
            "5",
            "--model-dir",
            str(tmp_path / "models"),
            "--json",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout)["trained_on"]["rows"] == 200


def test_json_output_and_cards_are_strict_json_when_a_metric_is_undefined(runner, tmp_path):
    """A holdout that sells nothing has no MAPE: null, never a bare NaN that strict readers refuse."""
    import csv as csv_module

    data = tmp_path / "zeros.csv"
    runner.invoke(main, ["data", "generate", "--output", str(data), "--series", "1", "--weeks", "40"])
    rows = list(csv_module.DictReader(data.open()))
    for row in rows[-10:]:
        row["units_sold"] = "0"
    with data.open("w", newline="") as out:
        writer = csv_module.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    models = tmp_path / "models"
    result = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(data),
            "--preset",
            "log-small-full",
            "--epochs",
            "3",
            "--model-dir",
            str(models),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output

    def strict(text):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in JSON output"))

    assert strict(result.stdout)["metrics"]["holdout"]["model"]["mape"] is None
    assert strict((models / "versions" / "v1" / "card.json").read_text())["metrics"]["holdout"]["model"]["mape"] is None
    listed = runner.invoke(main, ["models", "list", "--model-dir", str(models)])
    shown = runner.invoke(main, ["models", "show", "v1", "--model-dir", str(models)])
    assert listed.exit_code == 0 and shown.exit_code == 0 and "n/a" in shown.stdout, shown.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--lr", "nan"], "'nan' is not a finite number"),
        (["train", "--momentum", "nan"], "'nan' is not a finite number"),
        (["train", "--target-loss", "inf"], "'inf' is not a finite number"),
        (["retrain", "--min-improvement", "nan"], "'nan' is not a finite number"),
        (["models", "promote", "v1", "--wait", "nan"], "'nan' is not a finite number"),
        (["train", "--seed", "-1"], "-1 is not in the range 0<=x<=18446744073709551615"),
        (["train", "--seed", "99999999999999999999"], "is not in the range"),
        (["train", "--hidden", "99999999999999999999"], "a hidden layer may have at most 4096 units"),
    ],
)
def test_options_out_of_range_are_refused_before_any_work(runner, tmp_path, args, message):
    """NaN passes every range comparison: it is refused by name, as is what numpy or torch would choke on later."""
    result = runner.invoke(main, [*args, "--model-dir", str(tmp_path / "models")])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "command", [["train"], ["retrain", "--data", str(ROOT / "data" / "demand.csv")], ["models", "promote", "v1"]]
)
def test_a_registry_folder_that_cannot_be_is_one_line_before_any_training(runner, tmp_path, command):
    a_file = tmp_path / "file.csv"
    a_file.write_text("x\n")
    result = runner.invoke(main, [*command, "--model-dir", str(a_file / "models")])
    assert result.exit_code == 1
    assert result.stderr.strip().endswith(f"Error: {a_file / 'models'}: cannot hold a model registry: Not a directory")
    assert "Traceback" not in result.output and "candidate" not in result.stderr


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["--start", "notadate"], 2, "'notadate' is not an ISO date like 2023-01-02"),
        (["--weeks", "10"], 2, "10 weeks cannot be trained on: at least 12 are needed"),
        (["--carryover", "100", "--weeks", "400", "--series", "1"], 2, "past the largest a model takes"),
    ],
)
def test_data_generate_refuses_what_it_could_not_make_usefully(runner, tmp_path, args, status, message):
    out = tmp_path / "gen.csv"
    result = runner.invoke(main, ["data", "generate", "--output", str(out), *args])
    assert result.exit_code == status and message in result.stderr, result.output
    assert not out.exists()


def test_data_generate_into_a_place_that_cannot_hold_a_file_is_one_line(runner, tmp_path):
    a_file = tmp_path / "file.csv"
    a_file.write_text("x\n")
    result = runner.invoke(main, ["data", "generate", "--output", str(a_file / "gen.csv")])
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {a_file / 'gen.csv'}: cannot be written")


def test_seeds_past_32_bits_and_an_endless_wait_are_taken(runner, tmp_path):
    out = tmp_path / "gen.csv"
    assert (
        runner.invoke(
            main, ["data", "generate", "--output", str(out), "--series", "2", "--weeks", "40", "--seed", "20240101123"]
        ).exit_code
        == 0
    )
    result = runner.invoke(main, ["models", "promote", "v1", "--wait", "inf", "--model-dir", str(tmp_path / "m")])
    assert result.exit_code == 1 and "v1" in result.stderr  # past the option: no such version


@pytest.mark.slow
def test_a_command_started_ignoring_ctrl_c_keeps_ignoring_it(tmp_path):
    """A background job of a script starts with SIGINT ignored: Ctrl-C meant for the script must not stop it."""
    import signal

    data = tmp_path / "gen.csv"
    subprocess.run(
        [sys.executable, "-m", "pipeline", "data", "generate", "-o", str(data), "--series", "2", "--weeks", "40"],
        check=True,
        capture_output=True,
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "train",
            "--data",
            str(data),
            "--preset",
            "raw-small-full",
            "--epochs",
            "400",
            "--patience",
            "0",
            "--model-dir",
            str(tmp_path / "models"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert process.stderr.readline()  # training has begun: its first progress line
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()[-500:]
    assert (tmp_path / "models" / "champion").exists()


def test_plots_take_every_format_matplotlib_writes(tmp_path):
    from pipeline.cli import check_plot_path

    for name in ("bt.png", "bt.jpg", "bt.svgz", "bt.pdf"):
        check_plot_path(tmp_path / name)
    with pytest.raises(click.BadParameter, match="the figure is written as one of"):
        check_plot_path(tmp_path / "bt.txt")


def test_a_failed_write_leaves_the_earlier_file_and_no_partial_one(tmp_path):
    from pipeline.atomic import write_atomically

    path = tmp_path / "out.csv"
    path.write_text("earlier\n")

    def fail(partial):
        partial.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(DataError, match=r"out.csv: cannot be written: No space left on device"):
        write_atomically(path, fail)
    assert path.read_text() == "earlier\n" and [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    assert write_atomically(path, lambda partial: partial.write_text("new\n")) == 4 and path.read_text() == "new\n"


def test_an_output_that_is_not_a_regular_file_is_refused_and_left_as_it_was(runner, tmp_path, published):
    """`--output /dev/full` had replaced the device with a regular file; a link or a pipe would have been too."""
    import stat

    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    done = runner.invoke(
        main, ["predict", "--input", str(DEFAULT_CSV), "--output", "/dev/full", "--model-dir", str(published)]
    )
    assert done.exit_code == 1 and "/dev/full: is a device" in done.output
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)
    target = tmp_path / "kept.csv"
    target.write_text("kept\n")
    link, pipe = tmp_path / "link.csv", tmp_path / "pipe.csv"
    link.symlink_to(target)
    os.mkfifo(pipe)
    for path, kind in ((link, "a symbolic link"), (pipe, "a pipe")):
        done = runner.invoke(main, ["data", "generate", "--output", str(path), "--series", "1", "--weeks", "20"])
        assert done.exit_code == 1 and f"is {kind}" in done.output, done.output
    assert link.is_symlink() and target.read_text() == "kept\n" and stat.S_ISFIFO(os.stat(pipe).st_mode)


@pytest.mark.slow
def test_the_pipeline_imports_nothing_of_the_service_and_no_torch_for_its_commands():
    """`demand serve` runs the service's own entry point (`python -m service`); the pipeline needs none of it."""
    code = (
        "import sys, pipeline.cli, pipeline.calibrate, pipeline.backtest, pipeline.chains; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'service', 'torch'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"
