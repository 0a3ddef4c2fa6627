"""Training cost that stops growing with rows: steps of at most STEP_ROWS rows,
early stopping on a fixed sample of the validation window, and candidates
trained side by side. (The timings themselves are in `make bench`.)"""

import numpy as np
import pytest
import torch

from pipeline import parallel, train
from pipeline.data import Dataset
from pipeline.presets import CANDIDATES, CHAPTER, SAMPLE_ABOVE_ROWS, STEP_ROWS, WATCHED_VALIDATION_ROWS


def rows(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform([0, 0, 0], [60000, 100, 20], size=(n, 3))
    y = X[:, 0] * (1 + X[:, 1] / 100) + rng.normal(0, 500, n)
    return Dataset(X, np.maximum(y, 0))


@pytest.mark.parametrize("name", sorted(CANDIDATES))
def test_past_sample_above_rows_every_candidate_steps_on_at_most_step_rows(name):
    config = CANDIDATES[name]
    for n in (600, 10_000, 1_000_000, 100_000_000):
        assert config.batch_rows(n) <= min(n, STEP_ROWS)
        assert config.batch_rows(n) * config.steps_per_epoch(n) <= max(n, 16 * STEP_ROWS)
    # Up to SAMPLE_ABOVE_ROWS rows, training is what was tuned: a full batch, or a pass of mini-batches.
    full, batch = CANDIDATES["raw-small-full"], CANDIDATES["raw-small-batch"]
    assert (full.batch_rows(600), full.steps_per_epoch(600)) == (600, 1)
    assert (batch.batch_rows(600), batch.steps_per_epoch(600)) == (64, 10)
    assert (full.batch_rows(SAMPLE_ABOVE_ROWS), full.steps_per_epoch(SAMPLE_ABOVE_ROWS)) == (SAMPLE_ABOVE_ROWS, 1)
    assert (full.batch_rows(SAMPLE_ABOVE_ROWS + 1), full.steps_per_epoch(SAMPLE_ABOVE_ROWS + 1)) == (STEP_ROWS, 1)
    assert batch.batch_rows(SAMPLE_ABOVE_ROWS) * batch.steps_per_epoch(SAMPLE_ABOVE_ROWS) >= SAMPLE_ABOVE_ROWS


def test_the_chapter_preset_keeps_its_full_batch():
    assert CHAPTER.batch_rows(1_000_000) == 1_000_000 and CHAPTER.steps_per_epoch(1_000_000) == 1


class Recorder:
    """Wraps TorchEngine.step and .loss to record how many rows each saw."""

    def __init__(self, monkeypatch):
        self.steps, self.watched = [], []
        step, loss = train.TorchEngine.step, train.TorchEngine.loss

        def recording_step(engine, X, y, series=None):
            self.steps.append(len(X))
            return step(engine, X, y, series)

        def recording_loss(engine, X, y, series=None):
            self.watched.append(len(X))
            return loss(engine, X, y, series)

        monkeypatch.setattr(train.TorchEngine, "step", recording_step)
        monkeypatch.setattr(train.TorchEngine, "loss", recording_loss)


@pytest.mark.parametrize("name, steps_per_epoch", [("raw-small-full", 1), ("log-small-batch", 16)])
def test_past_step_rows_an_epoch_is_a_sample_of_the_rows(monkeypatch, name, steps_per_epoch):
    record = Recorder(monkeypatch)
    config = CANDIDATES[name].with_overrides(epochs=3, patience=0, device="cpu")
    result = train.fit(rows(40_000), rows(20_000, seed=1), config)
    assert record.steps == [STEP_ROWS] * (3 * steps_per_epoch)
    assert record.watched == [WATCHED_VALIDATION_ROWS] * 3  # early stopping watches a fixed sample
    assert len(result.train_loss) == 3 and np.isfinite(result.train_loss).all()


def test_small_data_still_passes_over_every_row(monkeypatch):
    record = Recorder(monkeypatch)
    config = CANDIDATES["raw-small-batch"].with_overrides(epochs=2, patience=0, device="cpu")
    train.fit(rows(600), rows(100, seed=1), config)
    assert sum(record.steps) == 2 * 600 and max(record.steps) == 64
    assert record.watched == [100, 100]


def test_a_sampled_fit_still_learns():
    config = CANDIDATES["raw-small-full"].with_overrides(epochs=300, patience=0, device="cpu")
    result = train.fit(rows(50_000), rows(5_000, seed=1), config)
    assert result.validation_loss[-1] < result.validation_loss[0] / 10


@pytest.mark.slow
def test_side_by_side_training_gives_the_same_networks_as_one_after_the_other(monkeypatch):
    configs = [
        CANDIDATES[name].with_overrides(epochs=20, patience=0, device="cpu")
        for name in ("raw-small-full", "log-small-batch")
    ]
    data, validation = rows(5_000), rows(1_000, seed=1)
    serial = [train.fit(data, validation, config) for config in configs]
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    side_by_side = parallel.fit_all(configs, data, validation)
    for one, other in zip(serial, side_by_side):
        assert one.train_loss == other.train_loss
        for a, b in zip(one.mlp.state_dict().values(), other.mlp.state_dict().values()):
            assert torch.equal(a, b)


@pytest.mark.slow
def test_a_training_worker_that_dies_fails_the_training_at_once_and_stops_the_other(monkeypatch):
    import multiprocessing
    import os
    import signal
    import threading
    import time
    from concurrent.futures.process import BrokenProcessPool

    from service.testing import wait_until

    configs = [CANDIDATES["raw-small-full"].with_overrides(epochs=20_000, patience=0, device="cpu", seed=s)
               for s in (0, 1)]  # fmt: skip
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)

    def kill_a_worker():  # as the kernel's out-of-memory killer would
        wait_until(lambda: len(multiprocessing.active_children()) == 2, 60)
        time.sleep(3)  # both fits under way
        os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)

    threading.Thread(target=kill_a_worker, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(BrokenProcessPool):
        parallel.fit_all(configs, rows(5_000), rows(1_000, seed=1))
    assert time.monotonic() - started < 60
    wait_until(lambda: not multiprocessing.active_children(), 15)  # the other fit stopped too


def test_the_refit_steps_as_the_selection_did():
    from types import SimpleNamespace

    from pipeline.workflow import refit_config

    full = CANDIDATES["raw-large-full"]
    selected_whole = SimpleNamespace(config=full, kept_epoch=700)
    refit = refit_config(selected_whole, trained_rows=6_500, all_rows=10_000)
    assert refit.epochs == 700 and refit.patience == 0
    assert refit.batch_rows(10_000) == 10_000  # full batches, as on the 6,500 rows it was selected on
    selected_sampled = SimpleNamespace(config=full, kept_epoch=700)
    assert refit_config(selected_sampled, trained_rows=65_000, all_rows=100_000).batch_rows(100_000) == STEP_ROWS
