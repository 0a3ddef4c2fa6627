import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from pipeline import export
from pipeline.errors import ExportError
from pipeline.presets import PRESETS
from pipeline.train import fit

from .conftest import FAST


@pytest.fixture(scope="module", params=["chapter", "log-large-batch"])
def trained(request, small_split):
    return fit(small_split.train, small_split.validation, PRESETS[request.param].with_overrides(device="cpu", **FAST))


@pytest.fixture(scope="module")
def exported(trained, small_split, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    info = export.export(path, trained.mlp, trained.stats, small_split.holdout.X, {"version": "v9"})
    return path, info


def test_single_file_pinned_opset_named_io_dynamic_batch(exported, trained):
    path, info = exported
    model = onnx.load(str(path))
    assert [o.version for o in model.opset_import] == [export.OPSET] == [info["opset"]]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    inp, *series = model.graph.input
    assert inp.name == "features"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 3]
    if trained.stats.series:  # a network that tells series apart: each row's series index beside its features
        (index,) = series
        assert index.name == "series_index" and index.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert [d.dim_param or d.dim_value for d in index.type.tensor_type.shape.dim] == ["batch"]
    else:
        assert series == []
    assert [o.name for o in model.graph.output] == ["units_sold", "units_sold_normalized"]
    onnx.checker.check_model(model, full_check=True)


def test_metadata_holds_version_feature_order_and_statistics(exported, trained):
    model = onnx.load(str(exported[0]))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["version"] == "v9"
    assert json.loads(props["feature_order"]) == ["prev_week_sales", "discount_fraction", "weeks_to_next_holidays"]
    assert json.loads(props["normalization"]) == trained.stats.to_json()


@pytest.mark.parametrize("batch", export.PARITY_BATCHES)
def test_onnx_runtime_matches_torch_in_raw_units(exported, trained, small_split, batch):
    from pipeline.model import RawUnitsModel

    session = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    x = np.resize(small_split.holdout.X.astype(np.float32), (batch, 3))
    feed, codes = {"features": x}, None
    if trained.stats.series:  # each series the model knows, and the unknown one (0)
        codes = feed["series_index"] = np.arange(batch, dtype=np.int64) % (len(trained.stats.series) + 1)
    units, normalized = session.run(None, feed)
    with torch.no_grad():
        ref_units, ref_normalized = (
            t.numpy()
            for t in RawUnitsModel(trained.mlp, trained.stats)(
                torch.from_numpy(x), None if codes is None else torch.from_numpy(codes)
            )
        )
    assert units.shape == normalized.shape == (batch, 1)
    assert np.max(np.abs(units - ref_units)) / np.max(np.abs(ref_units)) <= export.PARITY_TOLERANCE
    np.testing.assert_allclose(normalized, ref_normalized, rtol=1e-4, atol=1e-6)
    assert exported[1]["parity_max_relative_error"] <= export.PARITY_TOLERANCE


def test_a_wrong_graph_fails_parity_and_is_refused(trained, small_split, tmp_path, monkeypatch):
    real_build = export.build_onnx

    def tampered(mlp, stats, metadata, members=None):
        model = real_build(mlp, stats, metadata, members)
        for init in model.graph.initializer:
            if init.name in ("layer0.bias", "series.table_plus_bias"):  # the first layer's bias, either way
                values = onnx.numpy_helper.to_array(init).copy()
                values[0] += 1e-3
                init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
        return model

    monkeypatch.setattr(export, "build_onnx", tampered)
    with pytest.raises(ExportError, match="differs from torch"):
        export.export(tmp_path / "bad.onnx", trained.mlp, trained.stats, small_split.holdout.X, {})


def test_an_invalid_graph_is_refused_by_the_checker(tmp_path):
    bad = tmp_path / "bad.onnx"
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["missing"], ["y"])],
        "g",
        [],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save_model(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(bad))
    with pytest.raises(ExportError, match="checker"):
        export.check_file(bad)


def test_an_average_of_networks_exports_as_parallel_branches_with_the_same_forecasts(small_split, tmp_path):
    from pipeline.model import DemandMLP, RawUnitsModel, average_of
    from pipeline.normalize import MinMaxStats

    torch.manual_seed(1)
    members = [DemandMLP((12, 12), "tanh"), DemandMLP((5, 5), "tanh"), DemandMLP((12, 12), "tanh")]
    merged = average_of(members)
    stats = MinMaxStats.fit(small_split.train.X, small_split.train.y, "log1p")
    path = tmp_path / "average.onnx"
    info = export.export(
        path, merged, stats, small_split.holdout.X, {"version": "v9"}, members=[m.hidden for m in members]
    )
    assert info["parity_max_relative_error"] <= export.PARITY_TOLERANCE
    graph = onnx.load(str(path)).graph
    assert [n.op_type for n in graph.node].count("MatMul") == 3 * 3 and "Sum" in [n.op_type for n in graph.node]
    # No weight of the merged network's zero blocks is left in the file.
    assert max(max(t.dims, default=1) for t in graph.initializer) == 12
    X = np.asarray(small_split.holdout.X, dtype=np.float32)
    units = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["units_sold"], {"features": X})[0]
    with torch.no_grad():
        expected = RawUnitsModel(merged, stats)(torch.from_numpy(X))[0].numpy()
    np.testing.assert_allclose(units, expected, rtol=1e-4)


def test_a_sigmoid_output_exports_with_its_sigmoid(small_split, tmp_path):
    config = PRESETS["chapter"].with_overrides(
        engine="manual", output_activation="sigmoid", loss="half-sse", lr=0.001, epochs=50
    )
    result = fit(small_split.train, small_split.validation, config)
    path = tmp_path / "alg85.onnx"
    info = export.export(path, result.mlp, result.stats, small_split.holdout.X, {"version": "v9"})
    assert info["parity_max_relative_error"] <= export.PARITY_TOLERANCE
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count(
        "Sigmoid"
    ) == 3  # two hidden layers and the output


ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Exp", "Log", "Sigmoid", "Tanh", "Erf", "Sum"}


def test_no_elementwise_step_works_on_a_column_of_rows(exported):
    """Every elementwise step after the output layer works on a flat [N] tensor:
    ONNX Runtime broadcasts over an [N, 1] tensor one row at a time."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(exported[0])))
    ranks = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*model.graph.value_info, *model.graph.output]
    }
    broadcast_over_a_column = [
        node.output[0]
        for node in model.graph.node
        if node.op_type in ELEMENTWISE and node.op_type != "Sum" and ranks[node.output[0]][1:] == [1]
    ]
    assert broadcast_over_a_column == []
    assert [ranks[name] for name in ("units_sold", "units_sold_normalized")] == [["batch", 1]] * 2


def test_features_on_both_scales_are_logged_a_block_at_a_time_with_the_same_forecasts(tmp_path):
    """Sales on the log scale, a price and the calendar not, in turns: each run of log columns is logged as
    one block, no elementwise step works on an [N, 1] column, and ONNX Runtime forecasts as torch does."""
    from pipeline.features import FeatureSpec
    from pipeline.model import DemandMLP, RawUnitsModel
    from pipeline.normalize import MinMaxStats

    spec = FeatureSpec(known=("price", "discount_fraction"), history=True, calendar=True)
    assert len({*spec.logged()}) == 2 and spec.logged()[:3] == (True, False, True)  # runs of both scales
    rng = np.random.default_rng(0)
    X = rng.gamma(2.0, 50.0, (400, len(spec.names)))
    X[:, spec.names.index("price")] = rng.normal(0.0, 3.0, 400)  # below zero too
    X[:, -2:] = rng.uniform(-1.0, 1.0, (400, 2))  # the year's circle
    y = rng.gamma(2.0, 50.0, 400)
    stats = MinMaxStats.fit(X, y, "log1p", spec=spec)
    torch.manual_seed(0)
    mlp = DemandMLP((8, 8), "gelu", n_features=len(spec.names))
    path = tmp_path / "scales.onnx"
    info = export.export(path, mlp, stats, X, {"version": "v9"})
    assert info["parity_max_relative_error"] <= export.PARITY_TOLERANCE
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info
    }
    logs = [node for node in model.graph.node if node.op_type == "Log"]
    assert len(logs) == 2  # prev_week_sales; then the discount and the sales history, together
    assert [
        n.output[0] for n in model.graph.node if n.op_type in ELEMENTWISE and shapes.get(n.output[0], [0, 0])[1:] == [1]
    ] == []
    x = X.astype(np.float32)
    units = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["units_sold"], {"features": x})[0]
    with torch.no_grad():
        expected = RawUnitsModel(mlp, stats)(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(units, expected, rtol=1e-4)


def test_gelu_units_run_as_onnx_runtimes_own_gelu_kernel(small_split, tmp_path):
    """Opset 17 has no Gelu, so the graph spells out x * (1 + erf(x / sqrt 2)) / 2;
    written in the pattern ONNX Runtime fuses, each layer runs as one kernel."""
    from pipeline.model import DemandMLP, average_of
    from pipeline.normalize import MinMaxStats

    torch.manual_seed(0)
    members = [DemandMLP((12, 12), "gelu"), DemandMLP((5, 5), "gelu")]
    mlp = average_of(members)
    stats = MinMaxStats.fit(small_split.train.X, small_split.train.y)
    path = tmp_path / "gelu.onnx"
    info = export.export(path, mlp, stats, small_split.holdout.X, {"version": "v9"}, [m.hidden for m in members])
    assert info["parity_max_relative_error"] <= export.PARITY_TOLERANCE
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("Erf") == 4  # two layers of two members
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("Gelu") == 4 and "Erf" not in ops


def test_inputs_far_past_the_training_range_are_held_alike_in_onnx_and_torch(exported, trained):
    from pipeline.model import RawUnitsModel
    from pipeline.normalize import EXTRAPOLATION_RANGES
    from pipeline.train import predict_units

    far = np.array([[3e38, 100, 3e38], [0, 0, 1e30], [1e9, 100, 0]], dtype=np.float32)
    session = ort.InferenceSession(str(exported[0]), providers=["CPUExecutionProvider"])
    feed = {"features": far}
    if trained.stats.series:
        feed["series_index"] = np.zeros(len(far), dtype=np.int64)
    units, normalized = session.run(["units_sold", "units_sold_normalized"], feed)
    assert np.isfinite(units).all()
    assert (-EXTRAPOLATION_RANGES <= normalized).all() and (normalized <= 1 + EXTRAPOLATION_RANGES).all()
    with torch.no_grad():
        expected, _ = RawUnitsModel(trained.mlp, trained.stats)(torch.from_numpy(far))
    np.testing.assert_allclose(units, expected.numpy(), rtol=1e-4)
    np.testing.assert_allclose(units.ravel(), predict_units(trained.mlp, trained.stats, far), rtol=1e-4)


@pytest.mark.parametrize("transform", ["none", "log1p"])
def test_a_forecast_past_its_bound_is_held_there_in_onnx_torch_and_numpy(small_split, tmp_path, transform):
    """A network with large weights forecasts far past the target's range: every
    path holds it at the same bound."""
    from pipeline.model import DemandMLP
    from pipeline.normalize import MinMaxStats
    from pipeline.train import predict_units

    torch.manual_seed(0)
    mlp = DemandMLP((16, 16), "gelu")
    stats = MinMaxStats.fit(small_split.train.X, small_split.train.y, transform)
    X = small_split.holdout.X.astype(np.float32)
    with torch.no_grad():  # outputs spread over [-1.5, 2.5]: past both bounds, and between them
        out, last = mlp(torch.as_tensor(stats.normalize_x(X), dtype=torch.float32)).ravel(), mlp.linear_layers()[-1]
        scale = 4 / float(out.max() - out.min())
        last.weight.mul_(scale)
        last.bias.copy_((last.bias - out.min()) * scale - 1.5)
    path = tmp_path / "loud.onnx"
    export.export(path, mlp, stats, small_split.holdout.X, {"version": "v9"})
    units, normalized = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["units_sold", "units_sold_normalized"], {"features": X}
    )
    low, high = stats.y_bounds
    assert normalized.min() == pytest.approx(low, abs=1e-6) and normalized.max() == pytest.approx(high, abs=1e-6)
    assert ((normalized > low + 1e-3) & (normalized < high - 1e-3)).any()  # and others between them
    assert units.min() >= 0  # the lower bound is zero units here: the training range starts near it
    np.testing.assert_allclose(units.ravel(), predict_units(mlp, stats, X), rtol=1e-4)


def test_every_hidden_activation_is_built_and_the_manual_engine_has_its_own():
    from pipeline import backprop, model
    from pipeline.presets import HIDDEN_ACTIVATIONS, MANUAL_ACTIVATIONS

    assert set(model.ACTIVATIONS) == set(HIDDEN_ACTIVATIONS)
    assert set(MANUAL_ACTIVATIONS) <= set(backprop.ACTIVATIONS) and set(MANUAL_ACTIVATIONS) <= set(HIDDEN_ACTIVATIONS)


def loud_network(split, transform):
    """A GELU network whose forecasts span past both output bounds: its last
    layer's weights are scaled up, and its rounding errors with them."""
    from pipeline.model import DemandMLP
    from pipeline.normalize import MinMaxStats

    torch.manual_seed(0)
    mlp = DemandMLP((16, 16), "gelu")
    stats = MinMaxStats.fit(split.train.X, split.train.y, transform)
    with torch.no_grad():
        out = mlp(torch.as_tensor(stats.normalize_x(split.holdout.X), dtype=torch.float32)).ravel()
        last = mlp.linear_layers()[-1]
        scale = 4 / float(out.max() - out.min())
        last.weight.mul_(scale)
        last.bias.copy_((last.bias - out.min()) * scale - 1.5)
    return mlp, stats


@pytest.mark.parametrize("flaw", ["weight", "statistic"])
def test_a_layer_or_statistic_off_by_one_percent_fails_parity_by_orders_of_magnitude(small_split, tmp_path, flaw):
    """The tolerance sits far below what a real mistake gives: the graph is
    built from a layer's weights or a statistic 1% off, and compared with the true network."""
    from dataclasses import replace

    mlp, stats = loud_network(small_split, "none")
    flawed_mlp, flawed_stats = mlp, stats
    if flaw == "weight":
        import copy

        flawed_mlp = copy.deepcopy(mlp)
        with torch.no_grad():
            flawed_mlp.linear_layers()[0].weight.mul_(1.01)
    else:
        flawed_stats = replace(stats, y_min=stats.y_min + 0.01 * stats.y_range)
    path = tmp_path / "flawed.onnx"
    onnx.save_model(export.build_onnx(flawed_mlp, flawed_stats, {}), str(path))
    error = export.parity_error(path, mlp, stats, export.parity_inputs(small_split.holdout.X, stats))
    assert error > 100 * export.PARITY_TOLERANCE, error


# Instruction sets ONNX Runtime's CPU kernels pick at run time, each emulated
# by qemu's user mode (installed by `make test`) on any x86-64 host.
EMULATED_CPUS = {"AVX2 without AVX-512 (AMD EPYC Rome)": "EPYC-Rome", "SSE4.2 only (Nehalem)": "Nehalem"}
RUN_ORT = """
import sys, numpy as np, onnxruntime as ort
data = np.load(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
worst = 0.0
for name in data.files:
    if name.endswith(".x"):
        x, exact = data[name], data[name[:-2] + ".exact"]
        scale = max(float(np.abs(exact).max()), 1.0)
        for batch in [int(b) for b in sys.argv[3:]]:
            units = session.run(["units_sold"], {"features": x[:batch]})[0]
            worst = max(worst, float(np.abs(units - exact[:batch]).max()) / scale)
print(worst)
"""


@pytest.mark.slow
@pytest.mark.parametrize("transform", ["none", "log1p"])
@pytest.mark.parametrize("cpu", list(EMULATED_CPUS))
def test_parity_holds_on_other_instruction_sets(small_split, tmp_path, transform, cpu):
    """The loud network's ONNX forecasts, computed by ONNX Runtime on an
    emulated CPU of another instruction set, are within PARITY_TOLERANCE of the
    exact network, measured as parity_error measures."""
    import copy
    import shutil
    import subprocess
    import sys

    from pipeline.model import RawUnitsModel

    qemu = shutil.which("qemu-x86_64")
    assert qemu, "qemu-x86_64 (Debian's qemu-user) is missing: `make test` installs it"
    mlp, stats = loud_network(small_split, transform)
    path = tmp_path / "loud.onnx"
    onnx.save_model(export.build_onnx(mlp, stats, {}), str(path))
    exact = RawUnitsModel(copy.deepcopy(mlp), stats).double().eval()
    arrays = {}
    for name, rows in export.parity_inputs(small_split.holdout.X, stats).items():
        x = np.resize(rows, (max(export.PARITY_BATCHES), rows.shape[1]))
        with torch.no_grad():
            arrays[f"{name}.x"], arrays[f"{name}.exact"] = x, exact(torch.from_numpy(x.astype(np.float64)))[0].numpy()
    np.savez(tmp_path / "rows.npz", **arrays)
    done = subprocess.run(
        [
            qemu,
            "-cpu",
            EMULATED_CPUS[cpu],
            sys.executable,
            "-c",
            RUN_ORT,
            str(path),
            str(tmp_path / "rows.npz"),
            *map(str, export.PARITY_BATCHES),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    error = float(done.stdout.split()[-1])
    assert error <= export.PARITY_TOLERANCE, (cpu, error)
