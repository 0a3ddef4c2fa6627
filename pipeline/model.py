"""The chapter's multilayer perceptron (its settings are in pipeline.presets)."""
import torch
from torch import nn

from .presets import AUTO, CANDIDATES, PRESETS, TrainConfig  # noqa: F401  (re-exported)
from .schema import FEATURES

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class DemandMLP(nn.Module):
    """Linear layers with `activation` between them and a linear output.

    Works on min-max normalized features and target, as in the chapter.
    """

    def __init__(self, hidden=(10, 5), activation="sigmoid", n_features=len(FEATURES)):
        super().__init__()
        sizes = [n_features, *hidden, 1]
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.hidden = tuple(hidden)
        self.activation = activation

    def forward(self, x):
        return self.net(x)

    def linear_layers(self):
        return [m for m in self.net if isinstance(m, nn.Linear)]


class RawUnitsModel(nn.Module):
    """The MLP with min-max normalization of inputs and target around it.

    Takes features in raw units and returns (units_sold, normalized units):
    the same computation the exported ONNX graph does, used for parity checks.
    """

    def __init__(self, mlp, stats):
        super().__init__()
        self.mlp = mlp
        self.log = stats.transform == "log1p"
        self.register_buffer("x_min", torch.tensor(stats.x_min, dtype=torch.float32))
        self.register_buffer("x_range", torch.tensor(stats.x_range, dtype=torch.float32))
        self.y_min = float(stats.y_min)
        self.y_range = float(stats.y_range)

    def forward(self, features):
        if self.log:
            features = torch.log(features + 1)
        normalized = self.mlp((features - self.x_min) / self.x_range)
        units = normalized * self.y_range + self.y_min
        if self.log:
            units = torch.exp(units) - 1
        return units, normalized
