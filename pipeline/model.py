"""The chapter's multilayer perceptron (its settings are in pipeline.presets)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from .normalize import NORMALIZED_BOUNDS
from .schema import N_FEATURES, UNKNOWN_SERIES

if TYPE_CHECKING:
    from .normalize import MinMaxStats

# One per name in pipeline.presets.HIDDEN_ACTIVATIONS (a test holds them
# together). GELU: the exact, erf form.
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "gelu": nn.GELU}


class DemandMLP(nn.Module):
    """Linear layers with `activation` between them and a linear output.

    Works on min-max normalized features and target, as in the chapter.
    """

    def __init__(
        self,
        hidden: Sequence[int] = (10, 5),
        activation: str = "sigmoid",
        n_features: int = N_FEATURES,
        output_activation: str = "linear",
        n_series: int = 0,
    ) -> None:
        super().__init__()
        sizes = [n_features, *hidden, 1]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        if output_activation == "sigmoid":  # Algorithm 8.5's output layer
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)
        self.hidden = tuple(hidden)
        self.activation = activation
        self.output_activation = output_activation
        self.n_series = n_series
        # With series: one row of first-layer offsets per series the model
        # knows, and row UNKNOWN_SERIES for any other. It is the first layer's
        # weights for a one-hot series input, looked up instead of multiplied.
        # Zero at first, so every series starts from the shared network.
        self.series_rows = nn.Embedding(n_series + 1, sizes[1]) if n_series else None
        if self.series_rows is not None:
            nn.init.zeros_(self.series_rows.weight)

    def forward(self, x: torch.Tensor, series: torch.Tensor | None = None) -> torch.Tensor:
        """`series`: [n] int64 model indices of each row's series (None: unknown for all)."""
        if self.series_rows is None:
            return self.net(x)
        first = self.net[0](x)
        if series is None:
            first = first + self.series_rows.weight[UNKNOWN_SERIES]
        else:
            first = first + self.series_rows(series)
        return self.net[1:](first)

    def args(self) -> dict[str, Any]:
        """What rebuilds this network, before its weights are loaded: DemandMLP(**mlp.args())."""
        return {
            "hidden": list(self.hidden),
            "activation": self.activation,
            "n_features": self.linear_layers()[0].in_features,
            "output_activation": self.output_activation,
            "n_series": self.n_series,
        }

    def linear_layers(self) -> list[nn.Linear]:
        return [m for m in self.net if isinstance(m, nn.Linear)]


def average_of(mlps: Sequence[DemandMLP]) -> DemandMLP:
    """One MLP that computes the mean of several of the same depth and activation.

    The members' hidden layers sit side by side with block-diagonal weights, so
    no unit sees another member's, and the output layer divides each member's
    weights and bias by their number. The result is still the chapter's network,
    only wider: it trains, exports and serves like any other.
    """
    if len(mlps) == 1:
        return mlps[0]
    if len({len(m.hidden) for m in mlps}) != 1 or len({m.activation for m in mlps}) != 1:
        raise ValueError("only networks of the same depth and activation can be averaged into one")
    if any(m.output_activation != "linear" for m in mlps):
        raise ValueError("only networks with a linear output can be averaged into one")
    if len({m.n_series for m in mlps}) != 1:
        raise ValueError("only networks that know the same series can be averaged into one")
    hidden = tuple(sum(sizes) for sizes in zip(*(m.hidden for m in mlps)))
    n_features = mlps[0].linear_layers()[0].in_features
    merged = DemandMLP(hidden, mlps[0].activation, n_features, n_series=mlps[0].n_series)
    layers = merged.linear_layers()
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            layer.bias.zero_()
        rows = [0] * len(layers)  # where the next member's units start, per layer
        for member in mlps:
            for i, (source, target) in enumerate(zip(member.linear_layers(), layers)):
                out_size, in_size = source.weight.shape
                start_in = 0 if i == 0 else rows[i - 1] - in_size
                if i == len(layers) - 1:  # the output: average over members
                    target.weight[:, start_in : start_in + in_size] = source.weight / len(mlps)
                    # In place: += on a Parameter returns that Parameter (torch types it as a new Tensor).
                    target.bias += source.bias / len(mlps)  # type: ignore[misc]
                else:
                    target.weight[rows[i] : rows[i] + out_size, start_in : start_in + in_size] = source.weight
                    target.bias[rows[i] : rows[i] + out_size] = source.bias
                    rows[i] += out_size
        if merged.series_rows is not None:  # side by side, like the first layer's units
            start = 0
            for member in mlps:
                width = member.hidden[0]
                # Every member knows the same series, so each has its rows too.
                member_rows = cast(nn.Embedding, member.series_rows)
                merged.series_rows.weight[:, start : start + width] = member_rows.weight
                start += width
    return merged.eval()


class RawUnitsModel(nn.Module):
    """The MLP with min-max normalization of inputs and target around it.

    Takes features in raw units and returns (units_sold, normalized units):
    the same computation the exported ONNX graph does, used for parity checks.
    """

    # Buffers (register_buffer), declared for the type checker.
    logged: torch.Tensor
    x_min: torch.Tensor
    x_range: torch.Tensor

    def __init__(self, mlp: DemandMLP, stats: MinMaxStats) -> None:
        super().__init__()
        self.mlp = mlp
        self.log = stats.transform == "log1p"
        self.register_buffer("logged", torch.tensor(stats.log_columns, dtype=torch.bool))
        self.register_buffer("x_min", torch.tensor(stats.x_min, dtype=torch.float32))
        self.register_buffer("x_range", torch.tensor(stats.x_range, dtype=torch.float32))
        self.y_min = float(stats.y_min)
        self.y_range = float(stats.y_range)
        self.y_bounds = stats.y_bounds

    def forward(self, features: torch.Tensor, series: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.log:
            features = torch.where(self.logged, torch.log(features.clamp(min=0) + 1), features)
        inputs = ((features - self.x_min) / self.x_range).clamp(*NORMALIZED_BOUNDS)
        normalized = self.mlp(inputs, series).clamp(*self.y_bounds)
        units = normalized * self.y_range + self.y_min
        if self.log:
            units = torch.exp(units) - 1
        return units, normalized
