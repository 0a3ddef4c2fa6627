"""Retraining: champion/challenger, promotion, rollback, pruning, locking, scheduling."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from pipeline.generate import GeneratorConfig, generate, write_csv
from pipeline.registry import Registry
from pipeline.retrain import decide

from .conftest import NEW_WEEKS, ROOT, invoke

pytestmark = pytest.mark.slow  # trains champions and challengers


def demand(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        **kwargs,
    )


@pytest.fixture
def weak_champion(tmp_path, small_history_csv, runner):
    """A registry whose champion trained on all but the last 13 weeks, for 3 epochs only: easy to beat."""
    root = tmp_path / "models"
    result = invoke(
        runner,
        "train",
        "--data",
        str(small_history_csv),
        "--model-dir",
        str(root),
        "--preset",
        "log-large-batch",
        "--epochs",
        "3",
        "--patience",
        "0",
    )
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def good_champion(tmp_path, small_history_csv, runner):
    """A fully trained champion that knows all but the last 13 weeks."""
    root = tmp_path / "models"
    result = invoke(
        runner, "train", "--data", str(small_history_csv), "--model-dir", str(root), "--preset", "log-large-batch"
    )
    assert result.exit_code == 0, result.output
    return root


def test_decision_rules():
    holdout = {"model": {"wape": 10.0}, "naive": {"wape": 15.0}, "linear": {"wape": 12.0}}
    assert decide(10.0, None, 0, holdout)[0] is True
    assert decide(10.0, 11.0, 0, holdout)[0] is True
    assert decide(10.0, 10.0, 0, holdout)[0] is False  # a tie keeps the champion
    assert decide(10.0, 10.5, 1.0, holdout) == (
        False,
        "challenger WAPE 10.00% does not beat champion 10.50% by the required 1 points",
    )
    worse_than_linear = {"model": {"wape": 13.0}, "naive": {"wape": 15.0}, "linear": {"wape": 12.0}}
    promote, reason = decide(13.0, 20.0, 0, worse_than_linear)
    assert (promote, reason) == (False, "challenger WAPE 13.00% does not beat linear (12.00%)")  # it beat naive
    worse_than_both = {"model": {"wape": 16.0}, "naive": {"wape": 15.0}, "linear": {"wape": 12.0}}
    assert decide(16.0, 20.0, 0, worse_than_both)[1] == (
        "challenger WAPE 16.00% does not beat naive (15.00%) or linear (12.00%)"
    )


def test_a_challenger_is_made_as_the_champion_was_selected_not_as_it_was_refit(good_champion):
    """The refit trains a fixed number of epochs with no early stopping; the
    challenger gets the candidate's own settings, early stopping included."""
    from pipeline.presets import PRESETS
    from pipeline.retrain import challenger_settings

    registry = Registry(good_champion)
    card = registry.card(registry.champion())
    assert card["params"]["patience"] == 0  # the refit's
    config, overrides = challenger_settings(card, None, {"seed": None})
    assert config == PRESETS["log-large-batch"] and overrides == {}
    assert challenger_settings(card, "chapter", {"epochs": 9}) == ("chapter", {"epochs": 9})


def test_an_auto_champion_is_challenged_by_auto_with_the_options_it_was_trained_with():
    from pipeline.presets import AUTO, CANDIDATES
    from pipeline.retrain import challenger_settings

    chosen = CANDIDATES["raw-small-full"].with_overrides(seed=5, epochs=30)
    card = {
        "params": {},
        "selection": {
            "preset": AUTO,
            "chosen": "raw-small-full",
            "candidates": [{"name": "raw-small-full", "params": chosen.describe()}],
        },
    }
    assert challenger_settings(card, None, {}) == (AUTO, {"seed": 5, "epochs": 30})
    assert challenger_settings(card, None, {"seed": 7, "lr": None}) == (AUTO, {"seed": 7, "epochs": 30})


def test_an_older_card_with_tanh_candidates_is_challenged_by_todays_candidates():
    """Cards that did not record their options: tanh was then every candidate's
    unit, not a choice, so the challenger gets today's units."""
    from pipeline.presets import AUTO, CANDIDATES
    from pipeline.retrain import challenger_settings

    chosen = CANDIDATES["raw-small-full"].with_overrides(activation="tanh", seed=5)
    card = {
        "params": {},
        "selection": {
            "preset": AUTO,
            "chosen": "raw-small-full",
            "candidates": [{"name": "raw-small-full", "params": chosen.describe()}],
        },
    }
    assert challenger_settings(card, None, {}) == (AUTO, {"seed": 5})
    # A card that records its options is taken at its word, tanh included.
    card["selection"]["options"] = {"activation": "tanh", "hidden": [8, 8]}
    assert challenger_settings(card, None, {"seed": 1}) == (AUTO, {"activation": "tanh", "hidden": (8, 8), "seed": 1})


def test_an_auto_champion_trained_with_options_hands_them_to_its_challenger(tmp_path, small_history_csv, runner):
    """A real auto card: its choice is a mean of several, named in `members`."""
    from pipeline.presets import AUTO
    from pipeline.retrain import challenger_settings

    root = tmp_path / "models"
    result = invoke(
        runner, "train", "--data", str(small_history_csv), "--model-dir", str(root), "--epochs", "3", "--seed", "5"
    )
    assert result.exit_code == 0, result.output
    card = Registry(root).card("v1")
    assert card["selection"]["chosen"].startswith("mean of ")
    assert challenger_settings(card, None, {}) == (AUTO, {"epochs": 3, "seed": 5})
    assert card["selection"]["options"] == {"epochs": 3, "seed": 5}


def test_better_challenger_is_promoted_with_both_figures_recorded(weak_champion, small_csv, runner):
    result = invoke(
        runner, "retrain", "--data", str(small_csv), "--model-dir", str(weak_champion), "--epochs", "150", "--json"
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert (
        outcome["decision"] == "promoted" and outcome["champion_before"] == "v1" and outcome["champion_after"] == "v2"
    )
    assert outcome["metrics"]["challenger"]["wape"] < outcome["metrics"]["champion"]["wape"]
    registry = Registry(weak_champion)
    assert registry.champion() == "v2"
    event = registry.history()[-1]
    assert event["event"] == "promote" and event["version"] == "v2"
    assert event["metrics"]["champion"]["wape"] == outcome["metrics"]["champion"]["wape"]
    # The challenger kept the champion's settings except what was overridden.
    assert registry.card("v2")["params"]["hidden"] == registry.card("v1")["params"]["hidden"]
    assert registry.card("v2")["selection"]["preset"] == "custom"
    # The published challenger was refit on every row, the new weeks included.
    assert registry.card("v2")["trained_on"]["weeks"][1] == outcome["holdout_weeks"][1]


def test_the_gate_scores_both_models_only_on_weeks_the_champion_never_trained_on(weak_champion, small_csv, runner):
    registry = Registry(weak_champion)
    champion_last_week = registry.card("v1")["trained_on"]["weeks"][1]
    result = invoke(
        runner,
        "retrain",
        "--data",
        str(small_csv),
        "--model-dir",
        str(weak_champion),
        "--epochs",
        "150",
        "--keep-rejected",
        "--json",
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    first, last = outcome["holdout_weeks"]
    assert first > champion_last_week
    # Exactly the 13 new weeks of the 3 series, for every model compared.
    for name in ("challenger", "champion", "naive", "linear"):
        assert outcome["metrics"][name]["rows"] == NEW_WEEKS * 3
    # The challenger's figures come from a model that never saw those weeks either.
    evaluated = registry.card(outcome["challenger_version"])["evaluated_model"]
    assert evaluated["trained_on"]["weeks"][1] < first and evaluated["validated_on"]["weeks"][1] < first
    assert evaluated["scored_on"]["weeks"] == [first, last]


def test_too_few_new_weeks_keep_the_champion_and_say_why(good_champion, small_history_csv, small_csv, runner):
    registry = Registry(good_champion)
    same = invoke(runner, "retrain", "--data", str(small_history_csv), "--model-dir", str(good_champion), "--json")
    assert same.exit_code == 0, same.output
    outcome = json.loads(same.stdout)
    assert outcome["decision"] == "kept" and outcome["champion_after"] == "v1" and outcome["challenger_version"] is None
    assert "only 0 week(s)" in outcome["reason"] and "at least 4" in outcome["reason"]
    event = registry.history()[-1]
    assert event["event"] == "skip" and event["reason"] == outcome["reason"]
    fewer = invoke(
        runner,
        "retrain",
        "--data",
        str(small_csv),
        "--model-dir",
        str(good_champion),
        "--min-new-weeks",
        str(NEW_WEEKS + 1),
        "--json",
    )
    assert json.loads(fewer.stdout)["decision"] == "kept" and f"only {NEW_WEEKS} week(s)" in fewer.stdout
    assert registry.versions() == ["v1"]


def test_worse_challenger_is_rejected_and_kept_only_when_asked(good_champion, small_csv, runner):
    registry = Registry(good_champion)
    rejected = invoke(
        runner, "retrain", "--data", str(small_csv), "--model-dir", str(good_champion), "--epochs", "2", "--json"
    )
    assert rejected.exit_code == 0, rejected.output
    outcome = json.loads(rejected.stdout)
    assert outcome["decision"] == "rejected" and outcome["challenger_version"] is None
    assert registry.versions() == ["v1"] and registry.champion() == "v1"
    assert registry.history()[-1]["event"] == "reject" and registry.history()[-1]["kept"] is False
    kept = invoke(
        runner,
        "retrain",
        "--data",
        str(small_csv),
        "--model-dir",
        str(good_champion),
        "--epochs",
        "2",
        "--keep-rejected",
        "--json",
    )
    assert json.loads(kept.stdout)["challenger_version"] == "v2"
    assert registry.champion() == "v1" and registry.versions() == ["v1", "v2"]
    margin = invoke(
        runner,
        "retrain",
        "--data",
        str(small_csv),
        "--model-dir",
        str(good_champion),
        "--min-improvement",
        "50",
        "--json",
    )
    assert json.loads(margin.stdout)["decision"] == "rejected"


def test_retrain_reads_folders_and_the_latest_file_wins(weak_champion, tmp_path, runner):
    folder = tmp_path / "incoming"
    folder.mkdir()
    rows = generate(GeneratorConfig(seed=3, series=3, weeks=60))
    write_csv(rows, folder / "a-old.csv")
    corrected = [dict(r, units_sold=r["units_sold"] + 1) for r in rows[-30:]]  # a later file restates 30 rows
    write_csv(corrected, folder / "b-new.csv")
    later = time.time() + 5
    os.utime(folder / "b-new.csv", (later, later))
    result = invoke(
        runner, "retrain", "--data", str(folder), "--model-dir", str(weak_champion), "--epochs", "20", "--json"
    )
    assert result.exit_code == 0, result.output
    assert "30 row(s) repeat a week and series of an earlier file" in result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["data"]["rows"] == len(rows) and outcome["data"]["replaced_duplicates"] == 30
    missing = invoke(runner, "retrain", "--data", str(tmp_path / "nowhere"), "--model-dir", str(weak_champion))
    assert missing.exit_code == 1 and "no such file or folder" in missing.stderr


def test_promote_rollback_and_prune(weak_champion, small_csv, runner):
    registry = Registry(weak_champion)
    for _ in range(3):  # v2, v3, v4: published, not promoted
        assert (
            invoke(
                runner, "train", "--data", str(small_csv), "--model-dir", str(weak_champion), "--epochs", "2"
            ).exit_code
            == 0
        )
    assert invoke(runner, "models", "promote", "v3", "--model-dir", str(weak_champion)).exit_code == 0
    assert invoke(runner, "models", "promote", "v4", "--model-dir", str(weak_champion)).exit_code == 0
    assert registry.champion() == "v4" and registry.champion_chain() == ["v1", "v3", "v4"]
    result = invoke(runner, "models", "rollback", "--model-dir", str(weak_champion))
    assert result.exit_code == 0 and "champion: v3 (rolled back from v4)" in result.stdout
    assert invoke(runner, "models", "rollback", "--model-dir", str(weak_champion)).exit_code == 0
    assert registry.champion() == "v1"
    nothing = invoke(runner, "models", "rollback", "--model-dir", str(weak_champion))
    assert nothing.exit_code == 1 and "no earlier champion" in nothing.stderr
    assert invoke(runner, "models", "promote", "v4", "--model-dir", str(weak_champion)).exit_code == 0
    # champion v4, rollback target v1: pruning to the newest one keeps both.
    pruned = invoke(runner, "models", "prune", "--keep", "1", "--model-dir", str(weak_champion))
    assert pruned.exit_code == 0, pruned.output
    assert registry.versions() == ["v1", "v4"] and registry.champion() == "v4"
    assert registry.history()[-1]["event"] == "prune" and registry.history()[-1]["removed"] == ["v2", "v3"]
    assert invoke(runner, "models", "promote", "v2", "--model-dir", str(weak_champion)).exit_code == 1
    history = invoke(runner, "models", "history", "--model-dir", str(weak_champion))
    assert "rollback" in history.stdout and "prune" in history.stdout


@pytest.mark.slow
def test_a_second_writer_waits_for_the_lock_or_says_why(weak_champion, small_csv):
    registry = Registry(weak_champion)
    with registry.writer():
        busy = demand("retrain", "--data", str(small_csv), "--model-dir", str(weak_champion), "--epochs", "2")
        assert busy.returncode == 1
        assert "another writer holds the registry lock" in busy.stderr and "Traceback" not in busy.stderr
        waiting = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "retrain",
                "--data",
                str(small_csv),
                "--model-dir",
                str(weak_champion),
                "--epochs",
                "2",
                "--wait",
                "60",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        first_lines = [waiting.stderr.readline() for _ in range(2)]
        assert "waiting up to 60 s" in first_lines[1], first_lines  # said once it meets the lock
        assert waiting.poll() is None  # still waiting for us
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err


def assert_consistent(root):
    """What a reader (the service) relies on after any crash."""
    from pipeline.bundle import Bundle

    registry = Registry(root)
    for version in registry.versions():
        folder = registry.path(version)
        assert {p.name for p in folder.iterdir()} >= {
            "model.onnx",
            "card.json",
            "normalization.json",
            "report.png",
            "model.pt",
        }
    champion = registry.champion()
    assert champion in registry.versions()
    Bundle.load(registry)  # the champion loads and passes its check
    for line in registry.history_file.read_text().splitlines()[:-1]:
        json.loads(line)  # every complete line parses
    registry.history()


@pytest.mark.slow
@pytest.mark.parametrize("point", ["training", "while-staging", "before-commit", "after-commit", "before-champion"])
def test_kill_9_at_each_step_of_a_publish_leaves_the_registry_consistent(weak_champion, small_csv, point):
    root = weak_champion
    # train --promote and a retrain that beats the weak champion both reach every step.
    for command in (["train", "--promote", "--epochs", "20"], ["retrain", "--epochs", "150"]):
        killed = demand(*command, "--data", str(small_csv), "--model-dir", str(root), env={"DEMAND_CRASH_AT": point})
        assert killed.returncode == -signal.SIGKILL
        assert_consistent(root)
        assert Registry(root).champion() == "v1"  # nothing was crowned
    # The next writer cleans up and carries on.
    assert demand("train", "--data", str(small_csv), "--model-dir", str(root), "--epochs", "20").returncode == 0
    assert list((root / "staging").iterdir()) == []
    assert_consistent(root)


@pytest.mark.slow
def test_scheduler_runs_now_survives_a_failed_run_and_stops_on_sigterm(tmp_path):
    import threading

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "schedule",
            "--cron",
            "0 3 * * 1",
            "--run-now",
            "--data",
            str(tmp_path / "not-there.csv"),
            "--model-dir",
            str(tmp_path / "models"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any("next retrain at" in line for line in lines) and time.monotonic() < deadline:
        assert process.poll() is None, "the scheduler died after a failed run:\n" + "".join(lines)
        time.sleep(0.1)
    assert process.poll() is None
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    reader.join(10)
    log = "".join(lines)
    assert "retrain failed with exit code 1; the scheduler carries on" in log
    assert "next retrain at" in log and "(0 3 * * 1)" in log
    assert "received SIGTERM" in log and "scheduler stopped" in log


def test_scheduler_never_overlaps_runs_and_waits_for_the_next_slot_after_a_long_run(monkeypatch):
    """A clock that runs 600 times faster than real time, moved by nothing but
    time passing: a retrain that takes 3 minutes of it on a cron of every
    minute is never overlapped, and the next run starts at the first slot
    after it ends (no burst of missed runs)."""
    import datetime as dt

    from pipeline.schedule import Scheduler

    speed, real_start = 600.0, time.monotonic()
    start = dt.datetime(2026, 1, 5, 3, 0, 30, tzinfo=dt.timezone.utc)

    def clock():
        return start + dt.timedelta(seconds=(time.monotonic() - real_start) * speed)

    scheduler = Scheduler("* * * * *", [], log=lambda m: None, now=clock)
    real_wait = scheduler.stop.wait
    monkeypatch.setattr(scheduler.stop, "wait", lambda timeout: real_wait(timeout / speed))
    monkeypatch.setattr(signal, "signal", lambda *a: None)
    spans, running = [], []

    def three_minute_run():
        assert not running, "two retrains at once"
        running.append(True)
        began = clock()
        time.sleep(180 / speed)
        spans.append((began, clock()))
        running.pop()
        if len(spans) == 4:
            scheduler.stop.set()
        return 0

    scheduler.run_once = three_minute_run
    scheduler.run(run_now=True)
    assert len(spans) == 4
    tolerance = dt.timedelta(seconds=15)  # 25 ms of real scheduling jitter
    for (_, ended), (began, _) in zip(spans, spans[1:]):
        assert began >= ended
        next_slot = ended.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        assert abs(began - next_slot) <= tolerance, (ended, began)


def test_bad_cron_and_bad_retrain_options_are_refused_at_start(runner):
    bad_cron = invoke(runner, "schedule", "--cron", "every monday", "--data", "x.csv")
    assert bad_cron.exit_code == 2 and "not a valid cron expression" in bad_cron.output
    never = invoke(runner, "schedule", "--cron", "0 3 30 2 *", "--data", "x.csv")  # valid fields, no such date
    assert never.exit_code == 2 and "names no date that exists, so it would never run" in never.output
    bad_option = invoke(runner, "schedule", "--cron", "0 3 * * 1", "--data", "x.csv", "--epochs", "many")
    assert bad_option.exit_code == 2 and "retrain options" in bad_option.output


@pytest.mark.slow
def test_a_challenger_of_other_features_is_scored_beside_the_champion_on_the_same_weeks(
    weak_champion, small_csv, runner
):
    """A champion of the three inputs, challenged by one of history and calendar: each reads the
    file its own way, and both are scored on the same (week, series) rows."""
    from pipeline.bundle import Bundle
    from pipeline.data import load_file, time_split
    from pipeline.evaluate import metrics, naive_scale
    from pipeline.features import FeatureSpec
    from pipeline.registry import Registry

    champion = Registry(weak_champion).champion()
    result = invoke(
        runner,
        "retrain",
        "--data",
        str(small_csv),
        "--model-dir",
        str(weak_champion),
        "--preset",
        "log-large-batch",
        "--epochs",
        "20",
        "--patience",
        "0",
        "--history",
        "--calendar",
        "--keep-rejected",
        "--json",
    )
    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    challenger = Registry(weak_champion).card(outcome["challenger_version"])
    assert challenger["features"]["history"] and challenger["features"]["calendar"]
    # the champion's figure is its own reading of the same weeks
    own = load_file(small_csv)
    split = time_split(own, holdout_from=outcome["holdout_weeks"][0])
    bundle = Bundle.load(Registry(weak_champion), champion, provider="cpu")
    expected = metrics(
        split.holdout.y,
        bundle.forecast(split.holdout.X, series=split.holdout.series)["units_sold"],
        naive_scale(split.train),
    )
    assert outcome["metrics"]["champion"]["wape"] == pytest.approx(expected["wape"], rel=1e-6)
    assert FeatureSpec.from_json(challenger["features"]) != FeatureSpec()


def test_retrain_from_the_store_trains_on_stored_weeks_and_compares_on_them(
    weak_champion, small_csv, small_history_csv, runner, tmp_path
):
    """The files hold only the champion's own weeks; the new weeks were posted to the store. Retraining from
    the store compares the two on exactly the weeks a retrain from the complete file would, and says what
    the store gave."""
    import csv
    import datetime as dt

    from pipeline.store import Actual, open_engine, put_actuals, upgrade

    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    engine = open_engine(url)
    upgrade(engine)
    known = {(r["series"], r["week"]) for r in csv.DictReader(small_history_csv.open())}
    new = [r for r in csv.DictReader(small_csv.open()) if (r["series"], r["week"]) not in known]
    put_actuals(
        engine,
        [
            Actual(
                r["series"],
                dt.date.fromisoformat(r["week"]),
                float(r["units_sold"]),
                {
                    "discount_fraction": float(r["discount_fraction"]),
                    "weeks_to_next_holidays": float(r["weeks_to_next_holidays"]),
                },
            )
            for r in new
        ],
    )
    twin = tmp_path / "twin"
    shutil.copytree(weak_champion, twin)  # the same champion, for the retrain from the files alone
    common = ("--epochs", "40", "--json", "--keep-rejected")
    from_store = invoke(
        runner, "retrain", "--data", str(small_history_csv), "--from-store", "--store-url", url,
        "--model-dir", str(weak_champion), *common,
    )  # fmt: skip
    assert from_store.exit_code == 0, from_store.output
    stored = json.loads(from_store.stdout)
    assert stored["data"]["store"]["rows"] == len(new) and stored["data"]["store"]["dropped"] == 0
    assert stored["data"]["rows"] == len(known) + len(new)
    from_files = invoke(runner, "retrain", "--data", str(small_csv), "--model-dir", str(twin), *common)
    assert from_files.exit_code == 0, from_files.output
    assert stored["holdout_weeks"] == json.loads(from_files.stdout)["holdout_weeks"]
    weeks = sorted({r["week"] for r in new})
    assert stored["holdout_weeks"][0] == weeks[0]
