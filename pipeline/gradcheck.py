"""Compare the hand-written backprop with torch autograd on random networks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch

from .backprop import ManualMLP
from .presets import GRADCHECK_SEED, GRADCHECK_TRIALS, MANUAL_ACTIVATIONS

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "linear": lambda z: z,
}
LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": torch.nn.functional.mse_loss,
    "half-sse": lambda a, y: 0.5 * torch.sum((a - y) ** 2),
    "mae": torch.nn.functional.l1_loss,
}


def autograd_gradients(
    net: ManualMLP, X: np.ndarray, y: np.ndarray, loss_name: str = "mse"
) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    """Loss and gradients of the same network and loss, by torch autograd."""
    Ws = [torch.tensor(W, requires_grad=True) for W in net.W]
    bs = [torch.tensor(b, requires_grad=True) for b in net.b]
    a = torch.tensor(X)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ W.T + b
        a = ACTIVATIONS[net.output_activation if l == len(Ws) - 1 else net.activation](z)
    loss = LOSSES[loss_name](a, torch.tensor(y).reshape(a.shape))
    loss.backward()
    # backward() has filled every leaf's .grad
    return (
        loss.item(),
        [cast(torch.Tensor, W.grad).numpy() for W in Ws],
        [cast(torch.Tensor, b.grad).numpy() for b in bs],
    )


# Algorithm 8.5; the chapter's PyTorch code; the absolute loss of two candidates
VARIANTS = (("sigmoid", "half-sse"), ("linear", "mse"), ("linear", "mae"))


# As torch.autograd.gradcheck compares, in float64: an element passes when
# |manual - autograd| <= ATOL + RTOL * |autograd|. The absolute floor matters
# where a gradient is zero in exact arithmetic: a bias under the absolute loss
# with as many residuals above as below is 3e-17 one way and -3e-17 the other.
ATOL, RTOL = 1e-10, 1e-7


def tolerance_ratio(manual: np.ndarray, reference: np.ndarray) -> float:
    """The worst element's |manual - reference| / (ATOL + RTOL |reference|): at most 1 passes."""
    return float(np.max(np.abs(manual - reference) / (ATOL + RTOL * np.abs(reference))))


def gradcheck(trials: int = GRADCHECK_TRIALS, seed: int = GRADCHECK_SEED) -> dict[str, Any]:
    """The hand-written gradients against autograd on `trials` random networks, in float64.

    The cases take the variants in turn: Algorithm 8.5 (sigmoid output, 1/2
    the sum of squared errors), a linear output with MSE, and one with the
    mean absolute error. Each variant reports its worst case; the check
    passes when every gradient element and loss is within the tolerance.
    """
    rng = np.random.default_rng(seed)
    variants: dict[str, dict[str, Any]] = {
        f"{o} output, {l}": {
            "variant": f"{o} output, {l}",
            "cases": 0,
            "worst_ratio": 0.0,
            "worst_abs_error": 0.0,
            "worst_case": None,
        }
        for o, l in VARIANTS
    }
    for trial in range(trials):
        hidden = [int(h) for h in rng.integers(1, 9, size=rng.integers(1, 4))]
        activation = str(rng.choice(MANUAL_ACTIVATIONS))
        output_activation, loss_name = VARIANTS[trial % len(VARIANTS)]
        n_in = int(rng.integers(1, 5))
        net = ManualMLP.initialize(
            [n_in, *hidden, 1], activation, seed=int(rng.integers(1 << 31)), output_activation=output_activation
        )
        n = int(rng.integers(1, 33))
        X = rng.normal(size=(n, n_in))
        y = rng.normal(size=n) if output_activation == "linear" else rng.uniform(size=n)
        loss, W_grads, b_grads = net.loss_and_gradients(X, y, loss_name)
        ref_loss, ref_W, ref_b = autograd_gradients(net, X, y, loss_name)
        pairs = [*zip([*W_grads, *b_grads], [*ref_W, *ref_b]), (np.array(loss), np.array(ref_loss))]
        ratio = max(tolerance_ratio(m, r) for m, r in pairs)
        abs_error = max(float(np.max(np.abs(m - r))) for m, r in pairs)
        report = variants[f"{output_activation} output, {loss_name}"]
        report["cases"] += 1
        report["worst_abs_error"] = max(report["worst_abs_error"], abs_error)
        if ratio >= report["worst_ratio"]:
            report["worst_ratio"] = ratio
            report["worst_case"] = {"trial": trial, "sizes": [n_in, *hidden, 1], "activation": activation, "rows": n}
    for report in variants.values():
        report["passed"] = report["worst_ratio"] <= 1.0
    return {
        "trials": trials,
        "dtype": "float64",
        "tolerance": {"atol": ATOL, "rtol": RTOL},
        "variants": list(variants.values()),
        "passed": all(v["passed"] for v in variants.values()),
        "worst_ratio": max(v["worst_ratio"] for v in variants.values()),
    }
