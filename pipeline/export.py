"""Export the trained MLP to one ONNX file, and prove it computes what torch does.

The graph is written node by node from the weights: the network is a chain of
MatMul, Add and an activation, so spelling it out keeps the file small and the
opset pinned. The normalization is inside it:

    features [N,3] raw units -> [log(x + 1)] -> held within bounds -> (x - min) / range -> MLP
        -> held within bounds = units_sold_normalized [N,1] -> * range + min -> [exp(y) - 1] -> units_sold [N,1]

(the bracketed steps only for models trained with the log1p transform; the
bounds are pipeline.normalize.EXTRAPOLATION_RANGES widths of the training
range past either end), with
the input scaling folded into the first layer, which is the same affine map:
((x - min) / range) @ W + b = x @ (W / range) + (b - (min / range) @ W).
Two elementwise passes fewer make large batches a quarter faster. An average
of several networks (pipeline.model.average_of) runs as one branch per member,
summed before the output bias, so the merged layers' zero blocks cost nothing.

A model that tells series apart has a second input, `series_index` int64 [N]:
each row's row of the series table (the first layer's weights for a one-hot
series, plus its bias) is gathered and added to the first layer's MatMul, so
no one-hot is ever built and the layer still costs one Add.

Everything after the output layer's MatMul works on a flat [N] tensor, and only
the two outputs are reshaped to [N,1] at the end: ONNX Runtime broadcasts a
constant over an [N,1] tensor one row at a time, which made each of those
elementwise steps cost as much as a hidden layer's tanh (about 7 ns a row,
against 0.03 on [N]).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from itertools import groupby
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import onnx
from numpy.typing import ArrayLike, DTypeLike, NDArray
from onnx import TensorProto, helper, numpy_helper

from .errors import ExportError
from .schema import FLOAT32_MAX, INPUT_TENSOR, NORMALIZED_TENSOR, OUTPUT_TENSOR, SERIES_TENSOR

if TYPE_CHECKING:
    from .model import DemandMLP
    from .normalize import MinMaxStats

# (W [in, out], b [out]) of one linear layer, float64; b None for a member's output layer (split_members)
Layer = tuple[np.ndarray, "np.ndarray | None"]

OPSET = 17
IR_VERSION = 8  # the IR that opset 17 shipped with; readable by every ONNX Runtime since 1.11
# ONNX Runtime's float32 forecasts against the exact (float64) network, norm-wise
# (parity_error): a few times what its CPU kernels give on AVX-512, AVX2 and
# SSE4.2 (the last two emulated by qemu in tests/test_export.py), and orders of
# magnitude below what a layer or statistic off by 1% gives (tested there too).
PARITY_TOLERANCE = 2e-5
PARITY_BATCHES = (1, 7, 1024)


def _f32(array: ArrayLike) -> NDArray[np.float32]:
    return np.asarray(array, dtype=np.float32)


def layer_arrays(mlp: DemandMLP, stats: MinMaxStats) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W [in, out], b)] per linear layer in float64, (x - min) / range folded into the first."""
    arrays = []
    for i, layer in enumerate(mlp.linear_layers()):
        W = layer.weight.detach().cpu().double().numpy().T
        b = layer.bias.detach().cpu().double().numpy()
        if i == 0:
            x_min, x_range = np.array(stats.x_min), np.array(stats.x_range)
            W, b = W / x_range[:, None], b - (x_min / x_range) @ W
        arrays.append((W, b))
    return arrays


def split_members(
    arrays: Sequence[tuple[np.ndarray, np.ndarray]], members: Sequence[Sequence[int]]
) -> list[list[Layer]]:
    """Each member's own layers, cut out of an average of networks (pipeline.model.average_of).

    `members` lists their hidden sizes in the order they were merged. The output
    bias is the members' mean and stays whole, so each member's last layer gets
    none. Run apart, the members skip the merged layers' zero blocks: for two
    64-unit members and a 16-unit one, 40% of the merged layers' arithmetic.
    """
    start = [0] * (len(arrays) - 1)  # where the next member's units begin, per hidden layer
    out = []
    for sizes in members:
        own: list[Layer] = []
        for i, (W, b) in enumerate(arrays):
            rows = slice(None) if i == 0 else slice(start[i - 1], start[i - 1] + sizes[i - 1])
            if i == len(arrays) - 1:
                own.append((W[rows, :], None))
            else:
                cols = slice(start[i], start[i] + sizes[i])
                own.append((W[rows, cols], b[cols]))
        start = [s + size for s, size in zip(start, sizes)]
        out.append(own)
    return out


def build_onnx(
    mlp: DemandMLP, stats: MinMaxStats, metadata: dict[str, Any], members: Sequence[Sequence[int]] | None = None
) -> onnx.ModelProto:
    """Return an onnx.ModelProto computing units sold from raw features.

    `members`: the hidden sizes of the networks `mlp` averages, which then run
    as parallel branches summed before the output bias.
    """
    init = []

    def const(name: str, value: ArrayLike, dtype: DTypeLike = np.float32) -> str:
        init.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    log = stats.transform == "log1p"
    log_all = log and all(stats.log_columns)
    flat_shape, column_shape = const("flat_shape", [-1], np.int64), const("column_shape", [-1, 1], np.int64)
    nodes = []
    table = None if mlp.series_rows is None else mlp.series_rows.weight.detach().cpu().double().numpy()
    features = INPUT_TENSOR
    one = const("one", [1.0]) if log else None  # read only with log: cast(str, one) below
    if log_all:
        nodes += [
            helper.make_node("Add", [INPUT_TENSOR, cast(str, one)], ["x_plus_one"]),
            helper.make_node("Log", ["x_plus_one"], ["x_log"]),
        ]
        features = "x_log"
    # Each feature held within its bounds (pipeline.normalize.EXTRAPOLATION_RANGES):
    # split into columns and clipped with scalar bounds, since a bound per
    # column of an [N, 3] tensor costs ONNX Runtime a loop over rows, three
    # times the time on 1,000 rows. Where only some features are on the log
    # scale (sales, not a temperature), neighbouring columns on the same scale
    # are split off as a block first and each log block logged whole: adding a
    # scalar to an [N, 1] column also costs ONNX Runtime a loop over its rows,
    # ten times the time of the same on [N, 11].
    columns = [f"x.{name}" for name in stats.names]
    if log and not log_all:
        runs = [(bool(flag), len(list(group))) for flag, group in groupby(stats.log_columns)]
        blocks = [f"x.block{i}" for i in range(len(runs))]
        sizes = const("x.block_sizes", [size for _, size in runs], np.int64)
        nodes.append(helper.make_node("Split", [features, sizes], blocks, axis=1))
        start = 0
        for block, (logged, size) in zip(blocks, runs):
            own = columns[start : start + size]
            if logged:
                # A block of one column is logged flat, [N], and made a column again.
                flat_block = f"{block}.flat" if size == 1 else block
                if size == 1:
                    nodes.append(helper.make_node("Reshape", [block, flat_shape], [flat_block]))
                nodes += [
                    helper.make_node("Add", [flat_block, cast(str, one)], [f"{block}.plus_one"]),
                    helper.make_node("Log", [f"{block}.plus_one"], [f"{block}.log"]),
                ]
                block, own = f"{block}.log", [f"{column}.log" for column in own]
            if size == 1 and logged:
                nodes.append(helper.make_node("Reshape", [block, column_shape], own))
            else:
                nodes.append(helper.make_node("Split", [block], own, axis=1))
            columns[start : start + size] = own
            start += size
    else:
        nodes.append(helper.make_node("Split", [features], columns, axis=1))
    for column, low, high in zip(columns, *stats.x_bounds):
        nodes.append(
            helper.make_node(
                "Clip", [column, const(f"{column}.low", low), const(f"{column}.high", high)], [f"{column}.held"]
            )
        )
    nodes.append(helper.make_node("Concat", [f"{c}.held" for c in columns], ["x_held"], axis=1))
    features = "x_held"
    if mlp.activation == "gelu":
        gelu_constants = const("gelu.sqrt2", [np.sqrt(2.0)]), const("gelu.one", [1.0]), const("gelu.half", [0.5])

    def activate(linear: str, out: str) -> None:
        if mlp.activation != "gelu":
            nodes.append(helper.make_node({"sigmoid": "Sigmoid", "tanh": "Tanh"}[mlp.activation], [linear], [out]))
            return
        # GELU(x) = x * (1 + erf(x / sqrt 2)) / 2, spelled in opset 17 (which
        # has no Gelu) in the pattern ONNX Runtime fuses into its own Gelu kernel.
        sqrt2, one, half = gelu_constants
        nodes.extend(
            [
                helper.make_node("Div", [linear, sqrt2], [f"{out}.scaled"]),
                helper.make_node("Erf", [f"{out}.scaled"], [f"{out}.erf"]),
                helper.make_node("Add", [f"{out}.erf", one], [f"{out}.erf_plus_one"]),
                helper.make_node("Mul", [linear, f"{out}.erf_plus_one"], [f"{out}.twice"]),
                helper.make_node("Mul", [f"{out}.twice", half], [out]),
            ]
        )

    def chain(layers, prefix, series_table=None):
        """MatMul, Add, activation per hidden layer; returns the last layer's MatMul output (no bias)."""
        current = features
        for i, (W, b) in enumerate(layers):
            matmul = f"{prefix}layer{i}.matmul"
            nodes.append(helper.make_node("MatMul", [current, const(f"{prefix}layer{i}.weight_t", W)], [matmul]))
            if i == len(layers) - 1:
                return matmul
            linear = f"{prefix}layer{i}.linear"
            if i == 0 and series_table is not None:
                # The bias is folded into every row of the series table: one Add, as without series.
                rows = f"{prefix}series.rows"
                nodes.append(
                    helper.make_node(
                        "Gather",
                        [const(f"{prefix}series.table_plus_bias", series_table + b), SERIES_TENSOR],
                        [rows],
                        axis=0,
                    )
                )
                nodes.append(helper.make_node("Add", [matmul, rows], [linear]))
            else:
                nodes.append(helper.make_node("Add", [matmul, const(f"{prefix}layer{i}.bias", b)], [linear]))
            current = f"{prefix}layer{i}.{mlp.activation}"
            activate(linear, current)

    arrays = layer_arrays(mlp, stats)
    output_bias = const(f"layer{len(arrays) - 1}.bias", arrays[-1][1])
    if members and len(members) > 1:
        starts = np.cumsum([0] + [sizes[0] for sizes in members])
        branches = [
            chain(layers, f"member{j}.", None if table is None else table[:, starts[j] : starts[j + 1]])
            for j, layers in enumerate(split_members(arrays, members))
        ]
        nodes.append(helper.make_node("Sum", branches, ["members.sum"]))
        output = "members.sum"
    else:
        output = chain(arrays, "", table)
    # [N, 1] -> [N]: see the module's docstring
    nodes.append(helper.make_node("Reshape", [output, flat_shape], ["output.flat"]))
    normalized, units = "normalized.flat", "units.flat"  # the outputs, as [N, 1], at the end
    if mlp.output_activation == "sigmoid":  # Algorithm 8.5's output layer
        nodes.append(helper.make_node("Add", ["output.flat", output_bias], ["output.linear"]))
        nodes.append(helper.make_node("Sigmoid", ["output.linear"], ["output.free"]))
    else:
        nodes.append(helper.make_node("Add", ["output.flat", output_bias], ["output.free"]))
    y_low, y_high = stats.y_bounds
    nodes.append(
        helper.make_node("Clip", ["output.free", const("y_low", y_low), const("y_high", y_high)], [normalized])
    )
    nodes += [
        helper.make_node("Mul", [normalized, const("y_range", [stats.y_range])], ["y_scaled"]),
        helper.make_node("Add", ["y_scaled", const("y_min", [stats.y_min])], ["y_log" if log else units]),
    ]
    if log:
        nodes += [
            helper.make_node("Exp", ["y_log"], ["y_plus_one"]),
            helper.make_node("Sub", ["y_plus_one", cast(str, one)], [units]),
        ]
    nodes += [
        helper.make_node("Reshape", [normalized, column_shape], [NORMALIZED_TENSOR]),
        helper.make_node("Reshape", [units, column_shape], [OUTPUT_TENSOR]),
    ]
    graph = helper.make_graph(
        nodes,
        "demand_mlp",
        [helper.make_tensor_value_info(INPUT_TENSOR, TensorProto.FLOAT, ["batch", len(stats.names)])]
        + ([] if table is None else [helper.make_tensor_value_info(SERIES_TENSOR, TensorProto.INT64, ["batch"])]),
        [
            helper.make_tensor_value_info(OUTPUT_TENSOR, TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info(NORMALIZED_TENSOR, TensorProto.FLOAT, ["batch", 1]),
        ],
        initializer=init,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="demand-forecaster",
        ir_version=IR_VERSION,
    )
    props = {
        "feature_order": json.dumps(list(stats.names)),
        "normalization": json.dumps(stats.to_json()),
        "hidden": json.dumps(list(mlp.hidden)),
        "activation": mlp.activation,
        "output_activation": mlp.output_activation,
        **{k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()},
    }
    helper.set_model_props(model, props)
    return model


def check_file(path: str | os.PathLike[str]) -> None:
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as err:  # the checker raises several exception types
        raise ExportError(f"ONNX checker refused {path}: {err}") from None


def parity_inputs(holdout_X: ArrayLike, stats: MinMaxStats, seed: int = 0) -> dict[str, NDArray[np.float32]]:
    """Holdout rows, random rows across (and a little beyond) the training
    range, and rows far past it, where features and forecast are held at their
    bounds: up to four ranges out, and the largest float32 in one column."""
    rng = np.random.default_rng(seed)
    low, high = np.array(stats.raw_x_min), np.array(stats.raw_x_max)
    k = len(stats.names)
    random_rows = rng.uniform(low, low + 1.25 * (high - low), size=(max(PARITY_BATCHES), k))
    far_rows = rng.uniform(low, low + 5 * (high - low), size=(max(PARITY_BATCHES), k))
    far_rows[np.arange(0, len(far_rows), 7), rng.integers(0, k, len(far_rows[::7]))] = FLOAT32_MAX
    return {"holdout": _f32(holdout_X), "random": _f32(random_rows), "far": _f32(far_rows)}


def parity_error(
    path: str | os.PathLike[str],
    mlp: DemandMLP,
    stats: MinMaxStats,
    inputs: dict[str, NDArray[np.float32]],
    provider: str = "CPUExecutionProvider",
) -> float:
    """Largest norm-wise relative difference between ONNX Runtime and the exact network.

    The reference is the torch model in float64, so what is measured is ONNX
    Runtime's own float32 rounding and kernel approximations (MLAS
    approximates sigmoid, tanh and erf differently per instruction set), not
    torch's, which vary by instruction set as well. For each input set at each
    batch size in PARITY_BATCHES: max|ort - exact| over the batch, divided by
    max|exact| over the whole set: a row whose forecast is small next to the
    others is held to the set's scale, the scale its rounding works at. A wrong
    weight or statistic shows up orders of magnitude above PARITY_TOLERANCE.
    """
    import copy

    import onnxruntime as ort
    import torch

    from .model import RawUnitsModel

    session = ort.InferenceSession(str(path), providers=[provider])
    exact = RawUnitsModel(copy.deepcopy(mlp), stats).double().eval()
    draw = np.random.default_rng(0)
    worst = 0.0
    for rows in inputs.values():
        x_all = np.resize(rows, (max(PARITY_BATCHES), rows.shape[1]))  # repeats rows when there are fewer
        codes_all = None
        if mlp.n_series:  # every series the model knows, and the unknown one
            codes_all = draw.integers(0, mlp.n_series + 1, len(x_all), dtype=np.int64)
        with torch.no_grad():
            exact_units = exact(
                torch.from_numpy(x_all.astype(np.float64)), None if codes_all is None else torch.from_numpy(codes_all)
            )[0].numpy()
        scale = max(float(np.max(np.abs(exact_units))), 1.0)
        for batch in PARITY_BATCHES:
            feed: dict[str, np.ndarray] = {INPUT_TENSOR: x_all[:batch]}
            if codes_all is not None:
                feed[SERIES_TENSOR] = codes_all[:batch]
            ort_units, ort_normalized = session.run([OUTPUT_TENSOR, NORMALIZED_TENSOR], feed)
            if ort_units.shape != (batch, 1) or ort_normalized.shape != (batch, 1):
                raise ExportError(f"ONNX output shape {ort_units.shape} at batch {batch}, expected ({batch}, 1)")
            worst = max(worst, float(np.max(np.abs(ort_units - exact_units[:batch]))) / scale)
    return worst


def export(
    path: str | os.PathLike[str],
    mlp: DemandMLP,
    stats: MinMaxStats,
    holdout_X: ArrayLike,
    metadata: dict[str, Any],
    members: Sequence[Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Write, check and parity-test the ONNX file; raise ExportError on any failure."""
    onnx.save_model(build_onnx(mlp, stats, metadata, members), str(path))
    check_file(path)
    error = parity_error(path, mlp, stats, parity_inputs(holdout_X, stats))
    if not error <= PARITY_TOLERANCE:
        raise ExportError(f"ONNX Runtime differs from torch by {error:.3g} (relative), above {PARITY_TOLERANCE:g}")
    return {"opset": OPSET, "parity_max_relative_error": error, "parity_batches": list(PARITY_BATCHES)}
