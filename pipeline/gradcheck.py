"""Compare the hand-written backprop with torch autograd on random networks."""
import numpy as np
import torch

from .backprop import ManualMLP
from .presets import GRADCHECK_SEED, GRADCHECK_TRIALS, MANUAL_ACTIVATIONS


ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "linear": lambda z: z}
LOSSES = {"mse": torch.nn.functional.mse_loss, "half-sse": lambda a, y: 0.5 * torch.sum((a - y) ** 2),
          "mae": torch.nn.functional.l1_loss}


def autograd_gradients(net, X, y, loss_name="mse"):
    """Loss and gradients of the same network and loss, by torch autograd."""
    Ws = [torch.tensor(W, requires_grad=True) for W in net.W]
    bs = [torch.tensor(b, requires_grad=True) for b in net.b]
    a = torch.tensor(X)
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ W.T + b
        a = ACTIVATIONS[net.output_activation if l == len(Ws) - 1 else net.activation](z)
    loss = LOSSES[loss_name](a, torch.tensor(y).reshape(a.shape))
    loss.backward()
    return loss.item(), [W.grad.numpy() for W in Ws], [b.grad.numpy() for b in bs]


# Algorithm 8.5; the chapter's PyTorch code; the absolute loss of two candidates
VARIANTS = (("sigmoid", "half-sse"), ("linear", "mse"), ("linear", "mae"))


def relative_error(manual, reference):
    scale = max(float(np.max(np.abs(reference))), 1e-300)
    return float(np.max(np.abs(manual - reference))) / scale


def gradcheck(trials=GRADCHECK_TRIALS, seed=GRADCHECK_SEED):
    """Largest relative gradient error (per tensor) over `trials` random cases, in float64.

    The cases take the variants in turn: Algorithm 8.5 (sigmoid output, 1/2
    the sum of squared errors), a linear output with MSE, and one with the
    mean absolute error.
    """
    rng = np.random.default_rng(seed)
    worst = {"relative_error": 0.0}
    for trial in range(trials):
        hidden = [int(h) for h in rng.integers(1, 9, size=rng.integers(1, 4))]
        activation = str(rng.choice(MANUAL_ACTIVATIONS))
        output_activation, loss_name = VARIANTS[trial % len(VARIANTS)]
        n_in = int(rng.integers(1, 5))
        net = ManualMLP.initialize([n_in, *hidden, 1], activation, seed=int(rng.integers(1 << 31)),
                                   output_activation=output_activation)
        n = int(rng.integers(1, 33))
        X = rng.normal(size=(n, n_in))
        y = rng.normal(size=n) if output_activation == "linear" else rng.uniform(size=n)
        loss, W_grads, b_grads = net.loss_and_gradients(X, y, loss_name)
        ref_loss, ref_W, ref_b = autograd_gradients(net, X, y, loss_name)
        errors = [relative_error(m, r) for m, r in zip([*W_grads, *b_grads], [*ref_W, *ref_b])]
        errors.append(abs(loss - ref_loss) / max(abs(ref_loss), 1e-300))
        if max(errors) >= worst["relative_error"]:
            worst = {"relative_error": max(errors), "trial": trial, "sizes": [n_in, *hidden, 1],
                     "activation": activation, "output_activation": output_activation, "loss": loss_name, "rows": n}
    return {"trials": trials, "dtype": "float64", "variants": [f"{o} output, {l}" for o, l in VARIANTS],
            "worst": worst, "max_relative_error": worst["relative_error"]}
