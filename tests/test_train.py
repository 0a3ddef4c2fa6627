import numpy as np
import pytest
import torch

from pipeline.errors import TrainingError
from pipeline.evaluate import beats_baselines
from pipeline.model import DemandMLP
from pipeline.presets import PRESETS
from pipeline.train import fit, resolve_device

from .conftest import FAST


def test_chapter_preset_is_the_chapter():
    c = PRESETS["chapter"]
    assert (c.hidden, c.activation, c.optimizer, c.lr, c.momentum, c.epochs, c.batch_size) == (
        (10, 5),
        "sigmoid",
        "sgd",
        0.2,
        0.9,
        1000,
        0,
    )
    net = DemandMLP(c.hidden, c.activation).net
    assert [type(m).__name__ for m in net] == ["Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"]
    assert [(m.in_features, m.out_features) for m in net if isinstance(m, torch.nn.Linear)] == [
        (3, 10),
        (10, 5),
        (5, 1),
    ]


def test_chapter_preset_runs_its_1000_full_batch_iterations(small_split):
    result = fit(small_split.train, small_split.validation, PRESETS["chapter"].with_overrides(device="cpu"))
    assert len(result.train_loss) == 1000
    assert result.kept_epoch == 1000
    assert result.stopped_because == "ran every epoch"


def weights(mlp):
    return [p.detach().numpy().copy() for p in mlp.parameters()]


@pytest.mark.parametrize("preset", ["chapter", "log-large-batch"])
def test_same_seed_same_data_gives_identical_weights_on_cpu(small_split, preset):
    config = PRESETS[preset].with_overrides(device="cpu", **FAST)
    first = weights(fit(small_split.train, small_split.validation, config).mlp)
    second = weights(fit(small_split.train, small_split.validation, config).mlp)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = weights(fit(small_split.train, small_split.validation, config.with_overrides(seed=1)).mlp)
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_stops_at_target_loss(small_split):
    config = PRESETS["log-large-batch"].with_overrides(device="cpu", target_loss=0.01, epochs=500, patience=0)
    result = fit(small_split.train, small_split.validation, config)
    assert result.train_loss[-1] <= 0.01
    assert len(result.train_loss) < 500
    assert "reached" in result.stopped_because


def test_early_stopping_keeps_the_best_validation_epoch(small_split):
    config = PRESETS["log-large-batch"].with_overrides(device="cpu", epochs=300, patience=15)
    result = fit(small_split.train, small_split.validation, config)
    assert len(result.train_loss) == result.kept_epoch + 15 or len(result.train_loss) == 300
    X = torch.as_tensor(result.stats.normalize_x(small_split.validation.X), dtype=torch.float32)
    y = torch.as_tensor(result.stats.normalize_y(small_split.validation.y), dtype=torch.float32).reshape(-1, 1)
    series = torch.as_tensor(result.stats.series_codes(small_split.validation.series))
    with torch.no_grad():
        kept_loss = torch.nn.functional.mse_loss(result.mlp(X, series), y).item()
    assert kept_loss == pytest.approx(min(result.validation_loss), rel=1e-5)


def test_options_change_the_network(small_split):
    config = PRESETS["chapter"].with_overrides(
        hidden=(4, 4, 4), activation="tanh", optimizer="adam", lr=0.01, batch_size=16, device="cpu", epochs=3
    )
    result = fit(small_split.train, small_split.validation, config)
    assert [m.out_features for m in result.mlp.linear_layers()] == [4, 4, 4, 1]
    assert isinstance(result.mlp.net[1], torch.nn.Tanh)


def test_device_choice():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
def test_training_on_cuda_matches_cpu_quality(small_split):
    config = PRESETS["log-large-batch"].with_overrides(device="cuda", **FAST)
    result = fit(small_split.train, small_split.validation, config)
    assert result.device == "cuda"
    assert next(result.mlp.parameters()).device.type == "cpu"  # handed back ready to export
    cpu = fit(small_split.train, small_split.validation, config.with_overrides(device="cpu"))
    assert result.validation_loss[-1] == pytest.approx(cpu.validation_loss[-1], rel=0.2)


def test_divergence_is_reported(small_split):
    config = PRESETS["chapter"].with_overrides(lr=1e6, momentum=0.99, device="cpu", epochs=200)
    with pytest.raises(TrainingError, match="diverged"):
        fit(small_split.train, small_split.validation, config)


@pytest.mark.slow  # trains the default model (`auto` on the embedded data)
def test_default_model_beats_naive_and_linear_on_the_default_holdout(default_trained):
    scores = default_trained.evaluation  # of the evaluated model, which never saw the holdout
    assert beats_baselines(scores["holdout"])
    assert scores["holdout"]["model"]["wape"] < 0.6 * scores["holdout"]["linear"]["wape"]
    assert 0.8 <= scores["interval"]["holdout_coverage"] <= 0.98
