"""The hand-written Algorithm 8.5 against PyTorch autograd."""

import numpy as np
import pytest
import torch

from pipeline.backprop import ManualMLP
from pipeline.gradcheck import autograd_gradients, gradcheck
from pipeline.presets import PRESETS
from pipeline.train import fit, torch_to_manual


def test_gradients_match_autograd_on_random_networks():
    report = gradcheck(trials=100, seed=1)
    assert report["passed"] and report["worst_ratio"] < 0.1  # an order of magnitude inside the tolerance


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
def test_gradients_of_a_deep_network_match(activation):
    rng = np.random.default_rng(0)
    net = ManualMLP.initialize([3, 7, 6, 5, 4, 1], activation, seed=2)
    X, y = rng.normal(size=(50, 3)), rng.normal(size=50)
    loss, W_grads, b_grads = net.loss_and_gradients(X, y)
    ref_loss, ref_W, ref_b = autograd_gradients(net, X, y)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    for mine, ref in zip([*W_grads, *b_grads], [*ref_W, *ref_b]):
        np.testing.assert_allclose(mine, ref, rtol=1e-9, atol=1e-14)


def test_a_wrong_derivative_would_be_caught():
    from pipeline import backprop

    rng = np.random.default_rng(0)
    net = ManualMLP.initialize([3, 5, 1], "sigmoid", seed=0)
    X, y = rng.normal(size=(8, 3)), rng.normal(size=8)
    original = backprop.ACTIVATIONS["sigmoid"]
    backprop.ACTIVATIONS["sigmoid"] = (original[0], lambda a: a)  # drop the (1 - a) factor
    try:
        _, W_grads, _ = net.loss_and_gradients(X, y)
    finally:
        backprop.ACTIVATIONS["sigmoid"] = original
    _, ref_W, _ = autograd_gradients(net, X, y)
    assert not np.allclose(W_grads[0], ref_W[0], rtol=1e-6)


@pytest.mark.parametrize("optimizer, lr, momentum", [("sgd", 0.2, 0.9), ("adam", 0.01, 0.0)])
def test_manual_training_steps_equal_torch_optimizer_steps(optimizer, lr, momentum, small_split):
    """Same start, same data: 30 hand-written steps land where torch.optim lands (float64)."""
    from pipeline.backprop import make_optimizer
    from pipeline.model import DemandMLP
    from pipeline.normalize import MinMaxStats

    stats = MinMaxStats.fit(small_split.train.X, small_split.train.y)
    X = stats.normalize_x(small_split.train.X)
    y = stats.normalize_y(small_split.train.y).reshape(-1, 1)

    torch.manual_seed(0)
    model = DemandMLP((10, 5), "sigmoid").double()
    net = torch_to_manual(model)
    opt = (
        torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=lr)
    )
    manual_opt = make_optimizer(optimizer, net.parameters(), lr, momentum)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(torch.from_numpy(X)), torch.from_numpy(y)).backward()
        opt.step()
        _, W_grads, b_grads = net.loss_and_gradients(X, y)
        manual_opt.step([*W_grads, *b_grads])
    for layer, W, b in zip(model.linear_layers(), net.W, net.b):
        np.testing.assert_allclose(W, layer.weight.detach().numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b, layer.bias.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_manual_engine_trains_a_useful_model_on_its_own(small_split):
    from pipeline.evaluate import evaluate
    from pipeline.train import predict_units

    config = PRESETS["chapter"].with_overrides(engine="manual", epochs=1500)
    result = fit(small_split.train, small_split.validation, config)
    assert result.device == "cpu"
    assert result.train_loss[-1] < result.train_loss[0] / 5
    scores = evaluate(small_split, lambda X, series=None: predict_units(result.mlp, result.stats, X))["holdout"]
    assert scores["model"]["wape"] < scores["naive"]["wape"]


def test_an_average_of_networks_is_one_wider_network_computing_their_mean():
    from pipeline.model import DemandMLP, average_of

    torch.manual_seed(0)
    members = [DemandMLP((8, 6), "tanh"), DemandMLP((3, 5), "tanh"), DemandMLP((8, 6), "tanh")]
    merged = average_of(members)
    assert merged.hidden == (19, 17) and isinstance(merged.net[1], torch.nn.Tanh)
    x = torch.randn(40, 3)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in members]).mean(0)
        assert torch.allclose(merged(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="same depth"):
        average_of([DemandMLP((4,), "tanh"), DemandMLP((4, 4), "tanh")])


# ---------------------------------------------------------------- Algorithm 8.5 literally

ALGORITHM_8_5 = dict(output_activation="sigmoid", loss="half-sse")


def test_algorithm_8_5_last_delta_is_the_chapters():
    """delta(L) = (a - y) * a * (1 - a), the loss 1/2 ||a - y||^2 over the batch, and
    the gradients of the last layer are delta(L) a(L-1)^T and delta(L)."""
    rng = np.random.default_rng(3)
    net = ManualMLP.initialize([3, 10, 5, 1], "sigmoid", seed=4, output_activation="sigmoid")
    X, y = rng.uniform(size=(20, 3)), rng.uniform(size=20)
    loss, W_grads, b_grads = net.loss_and_gradients(X, y, "half-sse")
    a = net.forward(X)
    delta = (a[-1] - y[:, None]) * a[-1] * (1 - a[-1])
    assert loss == pytest.approx(0.5 * np.sum((a[-1].ravel() - y) ** 2))
    np.testing.assert_allclose(W_grads[-1], delta.T @ a[-2], rtol=1e-12)
    np.testing.assert_allclose(b_grads[-1], delta.sum(axis=0), rtol=1e-12)
    # and the hidden deltas as in the chapter: (W(l+1)^T delta(l+1)) * a(l) * (1 - a(l))
    hidden = (delta @ net.W[-1]) * a[-2] * (1 - a[-2])
    np.testing.assert_allclose(W_grads[-2], hidden.T @ a[-3], rtol=1e-12)


def test_gradcheck_covers_every_variant():
    report = gradcheck(trials=21, seed=5)
    assert [v["variant"] for v in report["variants"]] == [
        "sigmoid output, half-sse",
        "linear output, mse",
        "linear output, mae",
    ]
    assert all(v["cases"] == 7 and v["passed"] for v in report["variants"])


def test_a_gradient_zero_in_exact_arithmetic_passes_on_the_absolute_floor():
    """A bias gradient of 3e-17 against -3e-17 (residuals that cancel under the absolute loss) is no error."""
    from pipeline.gradcheck import tolerance_ratio

    assert tolerance_ratio(np.array([3e-17]), np.array([-3e-17])) < 1e-6
    assert tolerance_ratio(np.array([1.0 + 1e-5]), np.array([1.0])) > 1  # a real difference still fails


def test_the_all_sigmoid_network_learns_with_algorithm_8_5(small_split):
    """The chapter's 3-10-5-1 network, sigmoid everywhere, trained by the
    hand-written Algorithm 8.5 on min-max data: its loss falls. The loss sums
    over the batch, so the step is the chapter's r scaled down by the rows."""
    config = PRESETS["chapter"].with_overrides(
        engine="manual", lr=0.2 / len(small_split.train.X), epochs=300, **ALGORITHM_8_5
    )
    result = fit(small_split.train, small_split.validation, config)
    assert result.train_loss[-1] < 0.5 * result.train_loss[0]
    assert result.mlp.output_activation == "sigmoid"
    assert isinstance(result.mlp.net[-1], torch.nn.Sigmoid)
