"""Training: one loop, two engines (torch autograd, or the hand-written backprop)."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from numpy.typing import ArrayLike, DTypeLike

from .backprop import ManualMLP, make_optimizer
from .errors import TrainingError
from .model import DemandMLP
from .normalize import TRANSFORMS, MinMaxStats
from .presets import MANUAL_ACTIVATIONS, SERIES_HIDDEN_SHARE, WATCHED_VALIDATION_ROWS, TrainConfig
from .registry import crashpoint
from .schema import N_FEATURES

if TYPE_CHECKING:
    from .data import Dataset

# Called after each epoch: (epoch, epochs, training loss, validation loss or NaN).
Progress = Callable[[int, int, float, float], None]

# Below this many multiply-adds per layer and step (rows x widest layer) one CPU
# thread is faster than several: the work is too small to split, and idle
# OpenMP threads spinning beside other busy processes slow everything down.
SINGLE_THREAD_WORK = 1_000_000


@contextlib.contextmanager
def cpu_threads_for(device: str, rows: int, hidden: Sequence[int]) -> Iterator[None]:
    if device != "cpu" or rows * max(hidden, default=1) >= SINGLE_THREAD_WORK:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def half_sse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Algorithm 8.5's loss: 1/2 the sum of squared errors over the batch."""
    return 0.5 * torch.sum((prediction - target) ** 2)


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but this torch build sees no CUDA device")
    if requested not in ("cpu", "cuda"):
        raise TrainingError(f"--device must be auto, cpu or cuda, got {requested!r}")
    return requested


class Engine(Protocol):
    """What `fit` asks of an engine. Each holds its arrays its own way (torch
    tensors on a device, or float64 NumPy), so they are Any here."""

    def tensor(self, array: ArrayLike) -> Any: ...

    def step(self, X: Any, y: Any, series: Any = None) -> Any: ...

    def index(self, order: np.ndarray) -> Any: ...

    def value(self, losses: Any) -> float: ...

    def loss(self, X: Any, y: Any, series: Any = None) -> float: ...

    def snapshot(self) -> Any: ...

    def restore(self, snapshot: Any) -> None: ...

    def to_mlp(self) -> DemandMLP: ...


class TorchEngine:
    def __init__(
        self,
        config: TrainConfig,
        device: str,
        n_series: int = 0,
        lazy_series: bool = True,
        n_features: int = N_FEATURES,
    ) -> None:
        torch.manual_seed(config.seed)
        self.device = device
        self.model = DemandMLP(
            config.hidden, config.activation, n_features, output_activation=config.output_activation, n_series=n_series
        ).to(device)
        series_rows = self.model.series_rows
        self.optimizers: list[torch.optim.Optimizer]
        if config.optimizer == "sgd":
            self.optimizers = [torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum)]
        elif config.optimizer == "adam":
            # The fused kernel does the whole update in one call: a third off each step of these tiny nets.
            self.optimizers = [torch.optim.Adam(self.model.parameters(), lr=config.lr, fused=True)]
            if series_rows is not None and lazy_series:
                # A series' row moves only in the steps that see its rows (lazy Adam). Plain Adam
                # keeps moving a row on its momentum long after its last gradient: with thousands of
                # series and steps of a thousand sampled rows, each row of noise grew into a large
                # offset (holdout WAPE 6.8% against 5.7% on 1M generated rows). Only where epochs
                # sample the rows: on smaller sets both forecast alike (bench/tuning/README.md), and
                # plain Adam's fused step is the faster by a fifth of `demand train`.
                series_rows.sparse = True
                shared = [p for p in self.model.parameters() if p is not series_rows.weight]
                self.optimizers = [
                    torch.optim.Adam(shared, lr=config.lr, fused=True),
                    torch.optim.SparseAdam([series_rows.weight], lr=config.lr),
                ]
        else:
            raise TrainingError(f"--optimizer must be sgd or adam, got {config.optimizer!r}")
        losses: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
            "mse": torch.nn.MSELoss(),
            "mae": torch.nn.L1Loss(),
            "half-sse": half_sse,
        }
        self.loss_fn = losses[config.loss]

    def tensor(self, array: ArrayLike) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device)

    def step(self, X: torch.Tensor, y: torch.Tensor, series: torch.Tensor | None = None) -> torch.Tensor:
        """One update; returns the loss as a tensor, so a GPU is not synchronized every step.

        A random SERIES_HIDDEN_SHARE of the rows count as an unknown series in
        each step, so the shared row learns what a series the model never saw
        is likely to do.
        """
        for optimizer in self.optimizers:
            optimizer.zero_grad()
        if series is not None:
            series = series * (torch.rand(len(series), device=self.device) >= SERIES_HIDDEN_SHARE)
        loss = self.loss_fn(self.model(X, series), y)
        loss.backward()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss.detach()

    def index(self, order: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(order, device=self.device)

    @staticmethod
    def value(losses: torch.Tensor | list[torch.Tensor]) -> float:
        return float(torch.stack(losses).sum()) if isinstance(losses, list) else float(losses)

    @torch.no_grad()
    def loss(self, X: torch.Tensor, y: torch.Tensor, series: torch.Tensor | None = None) -> float:
        return self.loss_fn(self.model(X, series), y).item()

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.model.state_dict())

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.model.load_state_dict(snapshot)

    def to_mlp(self) -> DemandMLP:
        return self.model.to("cpu").eval()


class ManualEngine:
    """Algorithm 8.5 in float64 NumPy; always runs on the CPU."""

    def __init__(
        self, config: TrainConfig, device: str = "cpu", initial: ManualMLP | None = None, n_features: int = N_FEATURES
    ) -> None:
        sizes = [n_features, *config.hidden, 1]
        self.config = config
        self.net = initial or ManualMLP.initialize(
            sizes, config.activation, config.seed, output_activation=config.output_activation
        )
        self.optimizer = make_optimizer(config.optimizer, self.net.parameters(), config.lr, config.momentum)

    def tensor(self, array: ArrayLike) -> np.ndarray:
        return np.asarray(array, dtype=np.float64)

    def step(
        self,
        X: np.ndarray,
        y: np.ndarray,
        series: np.ndarray | None = None,  # the chapter's network: no series
    ) -> float:
        loss, W_grads, b_grads = self.net.loss_and_gradients(X, y, self.config.loss)
        self.optimizer.step([*W_grads, *b_grads])
        return loss

    def index(self, order: np.ndarray) -> np.ndarray:
        return order

    @staticmethod
    def value(losses: float | list[float]) -> float:
        return float(sum(losses)) if isinstance(losses, list) else float(losses)

    def loss(self, X: np.ndarray, y: np.ndarray, series: np.ndarray | None = None) -> float:
        return self.net.loss(X, y, self.config.loss)

    def snapshot(self) -> list[np.ndarray]:
        return [p.copy() for p in self.net.parameters()]

    def restore(self, snapshot: list[np.ndarray]) -> None:
        for p, saved in zip(self.net.parameters(), snapshot):
            p[...] = saved

    def to_mlp(self) -> DemandMLP:
        return manual_to_torch(self.net, self.config.hidden)


def manual_to_torch(net: ManualMLP, hidden: Sequence[int]) -> DemandMLP:
    mlp = DemandMLP(hidden, net.activation, output_activation=net.output_activation)
    with torch.no_grad():
        for layer, W, b in zip(mlp.linear_layers(), net.W, net.b):
            layer.weight.copy_(torch.from_numpy(W))
            layer.bias.copy_(torch.from_numpy(b))
    return mlp.eval()


def torch_to_manual(mlp: DemandMLP, dtype: DTypeLike = np.float64) -> ManualMLP:
    layers = mlp.linear_layers()
    return ManualMLP(
        [l.weight.detach().cpu().numpy().astype(dtype) for l in layers],
        [l.bias.detach().cpu().numpy().astype(dtype) for l in layers],
        mlp.activation,
        mlp.output_activation,
    )


@dataclass
class TrainResult:
    mlp: DemandMLP
    stats: MinMaxStats
    config: TrainConfig
    device: str
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)
    kept_epoch: int = 0
    stopped_because: str = "ran every epoch"
    seconds: float = 0.0
    member_configs: list[TrainConfig] = field(default_factory=list)  # set on an average of several (workflow.combine)

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "engine": self.config.engine,
            "epochs_run": len(self.train_loss),
            "kept_epoch": self.kept_epoch,
            "stopped_because": self.stopped_because,
            "final_train_loss": self.train_loss[-1],
            "best_validation_loss": min(self.validation_loss) if self.validation_loss else None,
            "seconds": round(self.seconds, 3),
        }


def fit(
    train: Dataset,
    validation: Dataset | None,
    config: TrainConfig,
    progress: Progress | None = None,
    initial: ManualMLP | None = None,
) -> TrainResult:
    """Train on `train`, watching `validation`; returns a CPU model and its curves.

    With `validation` None (a refit on every row) there is nothing to stop
    early on: it runs `config.epochs` epochs and keeps the last weights.
    `progress(epoch, epochs, train_loss, validation_loss)` is called after each epoch.
    `initial` (a ManualMLP) fixes the starting weights of the manual engine.
    """
    started = time.perf_counter()
    if config.transform not in TRANSFORMS:
        raise TrainingError(f"--transform must be one of {', '.join(TRANSFORMS)}, got {config.transform!r}")
    if config.engine == "manual":
        if config.device == "cuda":
            raise TrainingError("the manual engine runs on the CPU only; use --device cpu or auto")
        if config.activation not in MANUAL_ACTIVATIONS:
            raise TrainingError(
                f"the manual engine has the {' and '.join(MANUAL_ACTIVATIONS)} activations, "
                f"not {config.activation} (the auto candidates' units); use --engine torch, "
                f"or --activation {MANUAL_ACTIVATIONS[-1]} with it"
            )
        device = "cpu"
        engine: Engine = ManualEngine(config, initial=initial, n_features=train.X.shape[1])
    elif config.engine != "torch":
        raise TrainingError(f"--engine must be torch or manual, got {config.engine!r}")
    # Series are told apart only by the torch engine (the manual one is the chapter's network).
    by_series = config.by_series and config.engine == "torch" and train.series is not None
    stats = MinMaxStats.fit(train.X, train.y, config.transform, train.series if by_series else None, train.spec)
    n = len(train)
    batch, steps = config.batch_rows(n), config.steps_per_epoch(n)
    if config.engine == "torch":
        device = resolve_device(config.device)
        engine = TorchEngine(
            config, device, len(stats.series), lazy_series=batch * steps < n, n_features=train.X.shape[1]
        )

    def codes(part, rows=slice(None)):
        return engine.index(stats.series_codes(part.series[rows])) if stats.series and part.series is not None else None

    X = engine.tensor(stats.normalize_x(train.X))
    y = engine.tensor(stats.normalize_y(train.y).reshape(-1, 1))
    S = codes(train)
    shuffle = np.random.default_rng(config.seed)
    watching = validation is not None
    if validation is not None:  # watching
        watched = watched_rows(len(validation), shuffle)
        X_val = engine.tensor(stats.normalize_x(validation.X[watched]))
        y_val = engine.tensor(stats.normalize_y(validation.y[watched]).reshape(-1, 1))
        S_val = codes(validation, watched)

    sampled = batch * steps < n  # an epoch is a random sample of the rows, not a pass over them
    result = TrainResult(None, stats, config, device)  # type: ignore[arg-type]  # its mlp is set after training
    early_stop = watching and config.patience > 0
    best_loss, best_state = float("inf"), None
    with cpu_threads_for(device, batch, config.hidden):
        for epoch in range(1, config.epochs + 1):
            crashpoint("training")
            if batch == n:
                epoch_loss = engine.value(engine.step(X, y, S))
            else:
                # Drawn on the device, once per epoch; a sample is drawn with
                # replacement, which costs its own size rather than the data's.
                picks = shuffle.integers(0, n, batch * steps) if sampled else shuffle.permutation(n)
                order = engine.index(picks)
                n_epoch = len(picks)
                X_epoch, y_epoch = X[order], y[order]  # one gather per epoch; the steps take slices
                S_epoch: Any = None if S is None else S[order]
                losses = [
                    engine.step(
                        X_epoch[start : start + batch],
                        y_epoch[start : start + batch],
                        None if S is None else S_epoch[start : start + batch],
                    )
                    * min(batch, n_epoch - start)
                    for start in range(0, n_epoch, batch)
                ]
                epoch_loss = engine.value(losses) / n_epoch
            if not np.isfinite(epoch_loss):
                raise TrainingError(f"training diverged at epoch {epoch} (loss {epoch_loss}); try a smaller --lr")
            val_loss = engine.loss(X_val, y_val, S_val) if watching else float("nan")
            result.train_loss.append(epoch_loss)
            if watching:
                result.validation_loss.append(val_loss)
            if progress:
                progress(epoch, config.epochs, epoch_loss, val_loss)
            if watching and val_loss < best_loss:
                best_loss, result.kept_epoch = val_loss, epoch
                if early_stop:
                    best_state = engine.snapshot()
            if config.target_loss and epoch_loss <= config.target_loss:
                result.stopped_because = f"training loss reached {config.target_loss:g}"
                break
            if early_stop and epoch - result.kept_epoch >= config.patience:
                result.stopped_because = f"no better validation loss for {config.patience} epochs"
                break
    if early_stop and best_state is not None:
        engine.restore(best_state)  # keep the weights of the best validation epoch
    else:
        result.kept_epoch = len(result.train_loss)
    result.mlp = engine.to_mlp()
    result.seconds = time.perf_counter() - started
    return result


def watched_rows(n: int, rng: np.random.Generator) -> slice | np.ndarray:
    """The validation rows early stopping watches: all, or a fixed random sample of them."""
    if n <= WATCHED_VALIDATION_ROWS:
        return slice(None)
    return np.sort(rng.choice(n, WATCHED_VALIDATION_ROWS, replace=False))


@torch.no_grad()
def predict_units(mlp: DemandMLP, stats: MinMaxStats, X: np.ndarray, series: np.ndarray | None = None) -> np.ndarray:
    """Forecast in raw units with the torch model (float32, CPU); `series`: each row's series name, if known."""
    codes = stats.series_codes(series)
    normalized = (
        mlp(
            torch.as_tensor(stats.normalize_x(X), dtype=torch.float32),
            None if codes is None else torch.as_tensor(codes),
        )
        .numpy()
        .ravel()
    )
    return stats.denormalize_y(normalized)
