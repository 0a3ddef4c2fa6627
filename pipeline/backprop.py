"""The chapter's training algorithm written by hand (Algorithm 8.5), in NumPy.

Forward pass layer by layer, then the auxiliary variables delta from the last
layer back to the first, and the gradients of every weight and bias from them.
Rows are samples, so a layer is Z = A_prev @ W.T + b with W shaped [out, in]
exactly like the chapter's W^(l) (target first, source second).

Two variants of the output layer and loss:
- `output_activation="sigmoid"`, `loss="half-sse"`: Algorithm 8.5 literally,
  L = 1/2 ||a(L) - y||^2 over the batch and delta(L) = (a(L) - y) * a(L) * (1 - a(L));
- `"linear"`, `"mse"`: what the chapter's PyTorch code trains (a linear output
  layer and torch.nn.MSELoss), so delta(L) = 2 (a(L) - y) / n. The presets use
  this one: a sigmoid output can never reach the ends of the min-max range,
  where the largest and smallest weeks sit. `"mae"` (two candidates of
  `auto`) is the same with delta(L) = sign(a(L) - y) / n.
Each hidden delta is as in the chapter: (W(l+1)^T delta(l+1)) * sigma'(z(l)).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from .presets import LOSS_NAMES


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


# activation, and its derivative written in terms of the activation's output
ACTIVATIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "sigmoid": (_sigmoid, lambda a: a * (1.0 - a)),
    "tanh": (np.tanh, lambda a: 1.0 - a * a),
    "linear": (lambda z: z, lambda a: np.ones_like(a)),
}


def _mse(error: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error and its derivative by the output."""
    return float(np.mean(error**2)), 2.0 * error / error.size


def _half_sse(error: np.ndarray) -> tuple[float, np.ndarray]:
    """1/2 the sum of squared errors (Algorithm 8.5) and its derivative by the output."""
    return 0.5 * float(np.sum(error**2)), error


def _mae(error: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean absolute error and its (sub)derivative by the output: sign(error) / n."""
    return float(np.mean(np.abs(error))), np.sign(error) / error.size


# name -> (error -> (loss, its derivative by the output))
LOSSES: dict[str, Callable[[np.ndarray], tuple[float, np.ndarray]]] = dict(zip(LOSS_NAMES, (_mse, _half_sse, _mae)))


class ManualMLP:
    def __init__(
        self,
        weights: Iterable[ArrayLike],
        biases: Iterable[ArrayLike],
        activation: str = "sigmoid",
        output_activation: str = "linear",
    ) -> None:
        self.W = [np.array(w) for w in weights]
        self.b = [np.array(b) for b in biases]
        self.activation = activation
        self.output_activation = output_activation

    @classmethod
    def initialize(
        cls,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        seed: int = 0,
        dtype: DTypeLike = np.float64,
        output_activation: str = "linear",
    ) -> ManualMLP:
        """Uniform in +-1/sqrt(fan_in), the distribution torch.nn.Linear starts from."""
        rng = np.random.default_rng(seed)
        weights, biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            bound = 1.0 / np.sqrt(fan_in)
            weights.append(rng.uniform(-bound, bound, (fan_out, fan_in)).astype(dtype))
            biases.append(rng.uniform(-bound, bound, fan_out).astype(dtype))
        return cls(weights, biases, activation, output_activation)

    def parameters(self) -> list[np.ndarray]:
        return [*self.W, *self.b]

    def forward(self, X: np.ndarray) -> list[np.ndarray]:
        """All layer outputs a^(0..L); the last one is the prediction."""
        act, _ = ACTIVATIONS[self.activation]
        out_act, _ = ACTIVATIONS[self.output_activation]
        outputs = [X]
        last = len(self.W) - 1
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            z = outputs[-1] @ W.T + b
            outputs.append(out_act(z) if l == last else act(z))
        return outputs

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.forward(X)[-1]

    def loss(self, X: np.ndarray, y: np.ndarray, loss: str = "mse") -> float:
        prediction = self.predict(X)
        return LOSSES[loss](prediction - y.reshape(prediction.shape))[0]

    def loss_and_gradients(
        self, X: np.ndarray, y: np.ndarray, loss: str = "mse"
    ) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
        """The loss and its gradients for every W^(l) and b^(l)."""
        _, act_prime = ACTIVATIONS[self.activation]
        _, out_prime = ACTIVATIONS[self.output_activation]
        a = self.forward(X)
        value, d_output = LOSSES[loss](a[-1] - y.reshape(a[-1].shape))

        W_grads: list[Any] = [None] * len(self.W)  # every layer's filled in below
        b_grads: list[Any] = [None] * len(self.b)
        # Last layer: (a - y) * a * (1 - a) for Algorithm 8.5; 2 (a - y) / n for a linear output and MSE.
        delta = d_output * out_prime(a[-1])
        for l in range(len(self.W) - 1, -1, -1):
            W_grads[l] = delta.T @ a[l]  # a[l] is the input of layer l
            b_grads[l] = delta.sum(axis=0)
            if l > 0:
                delta = (delta @ self.W[l]) * act_prime(a[l])
        return value, W_grads, b_grads


class SGD:
    """Gradient descent with momentum, with torch.optim.SGD's update rule."""

    def __init__(self, params: list[np.ndarray], lr: float, momentum: float = 0.0) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity: list[np.ndarray] | None = None

    def step(self, grads: Sequence[np.ndarray]) -> None:
        if self.velocity is None:
            self.velocity = [g.copy() for g in grads]
        else:
            for v, g in zip(self.velocity, grads):
                v *= self.momentum
                v += g
        for p, v in zip(self.params, self.velocity):
            p -= self.lr * v


class Adam:
    """Adam with torch.optim.Adam's defaults and update rule."""

    def __init__(
        self, params: list[np.ndarray], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: Sequence[np.ndarray]) -> None:
        b1, b2 = self.betas
        self.t += 1
        for p, m, v, g in zip(self.params, self.m, self.v, grads):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def make_optimizer(name: str, params: list[np.ndarray], lr: float, momentum: float) -> SGD | Adam:
    if name == "sgd":
        return SGD(params, lr, momentum)
    if name == "adam":
        return Adam(params, lr)
    raise ValueError(f"unknown optimizer {name!r}")
