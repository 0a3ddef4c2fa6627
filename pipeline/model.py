"""The chapter's multilayer perceptron, and its hyperparameter presets."""
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple = (10, 5)
    activation: str = "sigmoid"
    optimizer: str = "sgd"
    lr: float = 0.2
    momentum: float = 0.9
    epochs: int = 1000
    batch_size: int = 0  # 0: the whole training set in every step
    seed: int = 0
    target_loss: float = 0.0  # stop once the training loss is at or below this (0: never)
    patience: int = 0  # stop after this many epochs without a better validation loss (0: never)
    device: str = "auto"
    engine: str = "torch"
    transform: str = "none"  # "log1p": fit on log(1 + value) of features and target

    def with_overrides(self, **overrides):
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def describe(self):
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


PRESETS = {
    # The network and schedule of the chapter, unchanged: 3 -> 10 -> 5 -> 1,
    # sigmoid, full-batch SGD, lr 0.2, momentum 0.9, 1000 iterations.
    "chapter": TrainConfig(),
    # Sales on the log scale, wider tanh layers, Adam in mini-batches, and the
    # weights of the best validation epoch.
    "default": TrainConfig(
        hidden=(32, 32), activation="tanh", optimizer="adam", lr=0.003, momentum=0.0,
        epochs=400, batch_size=64, patience=60, transform="log1p",
    ),
}


class DemandMLP(nn.Module):
    """Linear layers with `activation` between them and a linear output.

    Works on min-max normalized features and target, as in the chapter.
    """

    def __init__(self, hidden=(10, 5), activation="sigmoid", n_features=3):
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
