"""The Open Inference Protocol (KServe V2) over REST, with Triton's binary
tensor data extension: a JSON header of `Inference-Header-Content-Length`
bytes, then the raw tensors, in the order of the inputs (and outputs)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from flask import Blueprint, Response, current_app, jsonify, request

from pipeline.normalize import column_ranges
from pipeline.schema import FEATURES, INPUT_TENSOR, N_FEATURES, OUTPUT_TENSORS, SERIES_COLUMN, json_kind

from . import metrics
from .auth import prediction_token_required
from .errors import ApiError
from .inputs import check_domain, parse_json
from .series import names_from_values, unknown_series
from .serving import current_bundle

if TYPE_CHECKING:
    from pipeline.bundle import Bundle

bp = Blueprint("v2", __name__, url_prefix="/v2")

MODEL_NAME = "demand"
INPUT, OUTPUTS = INPUT_TENSOR, OUTPUT_TENSORS
SERIES_INPUT = SERIES_COLUMN  # the protocol's name for the series' names; the model itself takes their indices
INPUTS = (INPUT, SERIES_INPUT)
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}
BINARY_HEADER = "Inference-Header-Content-Length"
MAX_ID_LENGTH = 256


def server_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("demand-forecaster")
    except metadata.PackageNotFoundError:
        return "unknown"


@bp.get("")
def server_metadata() -> Response:
    return jsonify(name="demand-forecaster", version=server_version(), extensions=["binary_tensor_data"])


@bp.get("/health/live")
def server_live() -> Response:
    return jsonify(live=True)


@bp.get("/health/ready")
def server_ready() -> Response:
    current_bundle()  # 503 while no model is loaded
    return jsonify(ready=True)


def model_or_404(name: str, version: str | None = None) -> Bundle:
    if name != MODEL_NAME:
        raise ApiError(404, f"unknown model {name!r}; this server serves {MODEL_NAME!r}")
    bundle = current_bundle()
    if version is not None and version != bundle.version:
        raise ApiError(404, f"model version {version!r} is not loaded; this worker serves {bundle.version!r}")
    return bundle


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name: str, version: str | None = None) -> Response:
    bundle = model_or_404(name, version)
    if not bundle.reads_three_inputs:
        return jsonify(**feature_metadata(bundle))
    return jsonify(
        name=MODEL_NAME,
        versions=[bundle.version],
        platform="onnxruntime_onnx",
        inputs=[
            {"name": INPUT, "datatype": "FP32", "shape": [-1, N_FEATURES]},
            *([{"name": SERIES_INPUT, "datatype": "BYTES", "shape": [-1]}] if bundle.knows_series else []),
        ],
        outputs=[{"name": name, "datatype": "FP32", "shape": [-1, 1]} for name in OUTPUTS],
        parameters={
            "execution_provider": bundle.provider,
            "feature_order": list(FEATURES),
            **({"optional_inputs": [SERIES_INPUT]} if bundle.knows_series else {}),
        },
    )


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None) -> Response:
    model_or_404(name, version)
    return jsonify(name=MODEL_NAME, ready=True)


def read_request() -> tuple[Any, bytes | memoryview]:
    """(JSON header, binary remainder) of an inference request."""
    raw = request.get_data(cache=False)
    length = request.headers.get(BINARY_HEADER)
    max_rows = current_app.config["SETTINGS"].max_rows
    if length is None:
        if request.mimetype not in ("", "application/json"):
            raise ApiError(
                415, f"Content-Type must be application/json (or use the binary extension), got {request.mimetype}"
            )
        return parse_json(raw, max_rows), b""
    if request.mimetype not in ("", "application/json", "application/octet-stream"):
        raise ApiError(
            415, f"Content-Type must be application/octet-stream or application/json, got {request.mimetype}"
        )
    size = int(length) if length.isascii() and length.isdigit() else -1  # int() would take "+9", " 9 " and "1_0"
    if not 0 < size <= len(raw):
        raise ApiError(
            400, f"{BINARY_HEADER} must be an integer between 1 and the body size ({len(raw)}), got {length!r}"
        )
    return parse_json(raw[:size], max_rows), memoryview(raw)[size:]


def features_from(
    header: Any, binary: bytes | memoryview, max_rows: int
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], list[str] | None]:
    """(X [rows, 3], its column ranges, series names [rows] or None) from an inference request.

    The inputs: `features` FP32/FP64/INT32/INT64 [rows, 3], and optionally
    `series` BYTES [rows], each row's series name (for a model that tells
    series apart; ignored by one that does not), in either order.
    """
    if not isinstance(header, dict):
        raise ApiError(400, "inference request must be a JSON object with 'inputs'")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, "'inputs' must be a non-empty list of tensors")
    if len(inputs) > len(INPUTS):
        names = [t.get("name") if isinstance(t, dict) else None for t in inputs]
        raise ApiError(
            400,
            f"'inputs' names {len(inputs)} tensors ({', '.join(map(repr, names[:4]))}); "
            f"this model takes {INPUT!r} and, optionally, {SERIES_INPUT!r}",
        )
    X: np.ndarray | None
    series: list[str] | None
    offset, X, series = 0, None, None
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise ApiError(400, "each entry of 'inputs' must be an object")
        name = tensor.get("name")
        if name not in INPUTS:
            raise ApiError(
                400, f"unknown input {name!r:.80}; this model takes {INPUT!r} and, optionally, {SERIES_INPUT!r}"
            )
        if (X if name == INPUT else series) is not None:
            raise ApiError(400, f"input {name!r} is given twice")
        if name == INPUT:
            X, offset = _features_tensor(tensor, binary, offset, max_rows)
        else:
            series, offset = _series_tensor(tensor, binary, offset, max_rows)
    if X is None:
        raise ApiError(400, f"'inputs' has no tensor named {INPUT!r}: the features, [rows, {N_FEATURES}]")
    if series is not None and len(series) != len(X):
        raise ApiError(400, f"input {SERIES_INPUT!r} has {len(series)} names for the {len(X)} rows of {INPUT!r}")
    if offset != len(binary):
        raise ApiError(400, f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    ranges = column_ranges(X)
    check_domain(X, lambda i, name: f"{INPUT}[{i}].{name}", ranges)
    return X, ranges, series


def _features_tensor(
    tensor: dict[str, Any], binary: bytes | memoryview, offset: int, max_rows: int
) -> tuple[np.ndarray, int]:
    """(X, the offset after its binary data) of the `features` tensor."""
    shape = tensor.get("shape")
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(type(d) is int for d in shape)
        and shape[1] == N_FEATURES
        and shape[0] >= 1
    ):
        raise ApiError(400, f"input {INPUT!r} shape must be [rows, {N_FEATURES}] with rows >= 1, got {shape!r}")
    rows = shape[0]
    if rows > max_rows:
        raise ApiError(413, f"{rows} rows is more than the limit of {max_rows} per request (DEMAND_MAX_ROWS)")
    datatype = tensor.get("datatype")
    if datatype not in DTYPES:
        raise ApiError(400, f"input {INPUT!r} datatype must be one of {', '.join(DTYPES)}, got {datatype!r}")
    parameters = parameters_of(tensor, f"input {INPUT!r}")
    if "binary_data_size" not in parameters:
        return _from_json_data(tensor.get("data"), rows, datatype), offset
    size = parameters["binary_data_size"]
    dtype = np.dtype(DTYPES[datatype])
    if type(size) is not int or size != rows * N_FEATURES * dtype.itemsize:
        raise ApiError(
            400,
            f"binary_data_size must be rows * {N_FEATURES} * {dtype.itemsize} = {rows * N_FEATURES * dtype.itemsize} for {datatype}, got {size!r}",
        )
    if offset + size > len(binary):
        raise ApiError(400, f"binary tensor data is {len(binary) - offset} bytes, {size} expected")
    return np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(rows, N_FEATURES), offset + size


def _series_tensor(
    tensor: dict[str, Any], binary: bytes | memoryview, offset: int, max_rows: int
) -> tuple[list[str], int]:
    """(names [rows] str, the offset after its binary data) of the `series` tensor: BYTES, [rows] or [rows, 1].

    As binary data, BYTES are each element's length (4 bytes, little-endian), then its UTF-8 text.
    """
    where = f"input {SERIES_INPUT!r}"
    shape = tensor.get("shape")
    if not (
        isinstance(shape, list)
        and len(shape) in (1, 2)
        and all(type(d) is int for d in shape)
        and shape[0] >= 1
        and shape[1:] in ([], [1])
    ):
        raise ApiError(400, f"{where} shape must be [rows] or [rows, 1], got {shape!r:.80}")
    rows = shape[0]
    if rows > max_rows:
        raise ApiError(413, f"{rows} rows is more than the limit of {max_rows} per request (DEMAND_MAX_ROWS)")
    if tensor.get("datatype") != "BYTES":
        raise ApiError(400, f"{where} datatype must be BYTES, got {tensor.get('datatype')!r:.40}")
    parameters = parameters_of(tensor, where)
    if "binary_data_size" not in parameters:
        data = tensor.get("data")
        if isinstance(data, list) and len(shape) == 2 and all(type(row) is list and len(row) == 1 for row in data):
            data = [row[0] for row in data]  # nested as the shape is
        if not isinstance(data, list) or len(data) != rows:
            raise ApiError(400, f"{where} needs 'data', a list of {rows} series names, or binary data")
        return names_from_values(data, lambda i: f"{SERIES_INPUT}[{i}]"), offset
    size = parameters["binary_data_size"]
    if type(size) is not int or not 0 <= size <= len(binary) - offset:
        raise ApiError(
            400,
            f"{where} binary_data_size must be a whole number of bytes within the "
            f"{len(binary) - offset} left, got {size!r:.40}",
        )
    data, names, at = bytes(binary[offset : offset + size]), [], 0
    for i in range(rows):
        length = int.from_bytes(data[at : at + 4], "little") if at + 4 <= size else -1
        if length < 0 or at + 4 + length > size:
            raise ApiError(
                400,
                f"{where} binary data ends inside element {i}: BYTES elements are a 4-byte "
                "little-endian length, then that many bytes",
            )
        try:
            names.append(data[at + 4 : at + 4 + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, f"{SERIES_INPUT}[{i}] is not UTF-8 text") from None
        at += 4 + length
    if at != size:
        raise ApiError(400, f"{where} binary data holds {size - at} bytes past its {rows} elements")
    return names_from_values(names, lambda i: f"{SERIES_INPUT}[{i}]"), offset + size


def _from_json_data(data: Any, rows: int, datatype: str) -> np.ndarray:
    if not isinstance(data, list):
        raise ApiError(400, f"input {INPUT!r} needs 'data' (a list of numbers) or binary data")
    flat = data
    if data and isinstance(data[0], list):  # nested as the shape is: one list per row, each of every feature
        if len(data) != rows or set(map(type, data)) != {list} or set(map(len, data)) != {N_FEATURES}:
            raise ApiError(
                400,
                f"input {INPUT!r} data must be flat ({rows * N_FEATURES} numbers) or nested as its "
                f"shape ({rows} lists of {N_FEATURES} numbers)",
            )
        flat = [v for row in data for v in row]
    if len(flat) != rows * N_FEATURES:
        raise ApiError(
            400, f"input {INPUT!r} has {len(flat)} values; shape [{rows}, {N_FEATURES}] needs {rows * N_FEATURES}"
        )
    kinds = {type(v) for v in flat}
    if not kinds <= {int, float}:
        bad = next(v for v in flat if type(v) not in (int, float))
        raise ApiError(400, f"input {INPUT!r} data must be numbers, got {json_kind(bad)}")
    if float in kinds and np.dtype(DTYPES[datatype]).kind == "i":
        # 76440.0 is a whole number; a value that is not finite is named by the domain check
        bad = next((v for v in flat if type(v) is float and math.isfinite(v) and not v.is_integer()), None)
        if bad is not None:
            raise ApiError(400, f"input {INPUT!r} is {datatype}: its data must be whole numbers, got {bad!r}")
    try:
        return np.array(flat, dtype=np.float64).reshape(rows, N_FEATURES)
    except OverflowError:
        raise ApiError(400, f"input {INPUT!r} data holds an integer too large for a float") from None


def parameters_of(item: dict[str, Any], where: str) -> dict[str, Any]:
    """An object's `parameters`, with the types of the ones this server reads checked."""
    parameters = item.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise ApiError(400, f"{where} 'parameters' must be an object")
    for name in ("binary_data_output", "binary_data"):
        if name in parameters and type(parameters[name]) is not bool:
            raise ApiError(400, f"{where} parameter {name!r} must be true or false, got {parameters[name]!r:.40}")
    return parameters


def request_id(header: dict[str, Any]) -> str | None:
    """The request's `id`, echoed in the answer: a string, as the protocol says."""
    value = header.get("id")
    if value is not None and (not isinstance(value, str) or len(value) > MAX_ID_LENGTH):
        raise ApiError(400, f"'id' must be a string of at most {MAX_ID_LENGTH} characters")
    return value


def requested_outputs(header: dict[str, Any]) -> list[tuple[str, bool]]:
    binary_default = parameters_of(header, "request").get("binary_data_output", False)
    outputs = header.get("outputs")
    if outputs is None:
        return [(name, binary_default) for name in OUTPUTS]
    if not isinstance(outputs, list):
        raise ApiError(400, "'outputs' must be a list")
    chosen: list[tuple[str, bool]] = []
    for item in outputs:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in OUTPUTS:
            raise ApiError(400, f"unknown output {name!r:.80}; outputs are {', '.join(OUTPUTS)}")
        if name in (n for n, _ in chosen):
            raise ApiError(400, f"output {name!r} is requested twice")
        chosen.append((name, parameters_of(item, f"output {name!r}").get("binary_data", binary_default)))
    return chosen


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
@prediction_token_required
def infer(name: str, version: str | None = None) -> Response:
    bundle = model_or_404(name, version)
    header, binary = read_request()
    if not bundle.reads_three_inputs:
        return Response(infer_by_column(bundle, header, binary), mimetype="application/json")
    X, ranges, series = features_from(header, binary, current_app.config["SETTINGS"].max_rows)
    outputs = requested_outputs(header)
    echoed_id = request_id(header)
    codes = bundle.series_codes(series) if bundle.knows_series else None
    units, normalized = bundle.run(np.ascontiguousarray(X, dtype=np.float32), codes)
    values = dict(zip(OUTPUTS, (units, normalized)))
    rows = len(X)
    metrics.ROWS_V2.inc(rows)
    outside, _ = bundle.stats.outside_training_range(X, ranges)
    if len(outside):
        metrics.EXTRAPOLATED.inc(len(outside))

    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for output, as_binary in outputs:
        tensor: dict[str, Any] = {"name": output, "datatype": "FP32", "shape": [rows, 1]}
        if as_binary:
            raw = values[output].astype("<f4", copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values[output].tolist()
        described.append(tensor)
    body: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": bundle.version, "outputs": described}
    unknown = unknown_series(series, bundle.unknown_series(series, codes))
    if unknown:
        body["parameters"] = unknown
    if echoed_id is not None:
        body["id"] = echoed_id
    encoded = orjson.dumps(body)
    if not chunks:
        return Response(encoded, mimetype="application/json")
    response = Response(b"".join([encoded, *chunks]), mimetype="application/octet-stream")
    response.headers[BINARY_HEADER] = str(len(encoded))
    return response


# A model that reads history, the calendar or declared covariates takes one tensor per column of a row, named
# as its card names them (service/feature_rows.py), and featured as `demand predict` features a file.
FILLED_OUTPUT = "filled"


def feature_metadata(bundle: Bundle) -> dict[str, Any]:
    from .feature_rows import row_keys

    spec = bundle.spec
    text = {spec.series_column, spec.week_column, *(name for name, _ in spec.categories)}
    optional = [spec.series_column, spec.week_column, FEATURES[0], spec.target_column, *spec.static]
    inputs = [{"name": key, "datatype": "BYTES" if key in text else "FP32", "shape": [-1]} for key in row_keys(spec)]
    return dict(
        name=MODEL_NAME,
        versions=[bundle.version],
        platform="onnxruntime_onnx",
        inputs=inputs,
        outputs=[
            *({"name": name, "datatype": "FP32", "shape": [-1, 1]} for name in OUTPUTS),
            {"name": FILLED_OUTPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        parameters={
            "execution_provider": bundle.provider,
            "feature_order": list(spec.names),
            "optional_inputs": optional,
        },
    )


def infer_by_column(bundle: Bundle, header: Any, binary: bytes | memoryview) -> bytes:
    """The answer's bytes for a request of one tensor per column (JSON data only)."""
    from .feature_rows import columns_from_rows, forecast_columns, row_keys
    from .inputs import check_row_count

    if not isinstance(header, dict):
        raise ApiError(400, "inference request must be a JSON object with 'inputs'")
    if len(binary):
        raise ApiError(
            400,
            f"model {bundle.version} takes its tensors as JSON 'data', one per column; binary data is "
            "for models of the three inputs",
        )
    inputs = header.get("inputs")
    keys = row_keys(bundle.spec)
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, f"'inputs' must be a non-empty list of tensors, one per column: {', '.join(keys)}")
    columns: dict[str, list[Any]] = {}
    for i, tensor in enumerate(inputs):
        name = tensor.get("name") if isinstance(tensor, dict) else None
        if name not in keys:
            raise ApiError(
                400,
                f"inputs[{i}]: unknown input {name!r:.80}; model {bundle.version} takes "
                f"{', '.join(keys)}, one tensor each",
            )
        if name in columns:
            raise ApiError(400, f"input {name!r} is given twice")
        data = tensor.get("data")
        if not isinstance(data, list) or not data:
            raise ApiError(400, f"input {name!r} must have 'data', a non-empty list of its rows' values")
        if set(map(type, data)) <= {list}:  # nested as [rows, 1]
            data = [row[0] if len(row) == 1 else row for row in data]
        columns[name] = data
    lengths = {len(v) for v in columns.values()}
    if len(lengths) != 1:
        raise ApiError(
            400,
            "the inputs must have as many rows each, got " + ", ".join(f"{k}: {len(v)}" for k, v in columns.items()),
        )
    rows = len(next(iter(columns.values())))
    check_row_count(rows, current_app.config["SETTINGS"].max_rows)
    outputs = requested_outputs(header)
    echoed_id = request_id(header)
    where = lambda i, key: f"input {key!r}[{i}]" if key else f"row {i}"  # noqa: E731
    out = forecast_columns(
        bundle,
        columns_from_rows([dict(zip(columns, values)) for values in zip(*columns.values())], bundle, where),
        where,
    )
    metrics.ROWS_V2.inc(rows)
    values = dict(zip(OUTPUTS, (out["units_sold"], out["units_sold_normalized"])))
    described = [
        {"name": output, "datatype": "FP32", "shape": [rows, 1], "data": values[output].tolist()}
        for output, _ in outputs
    ]
    described.append(
        {
            "name": FILLED_OUTPUT,
            "datatype": "BYTES",
            "shape": [rows],
            "data": [";".join(names) for names in out["filled"]],
        }
    )
    body: dict[str, Any] = {"model_name": MODEL_NAME, "model_version": bundle.version, "outputs": described}
    unknown = unknown_series(out["series"] or [""] * rows, out["unknown_series"])
    if unknown:
        body["parameters"] = unknown
    if echoed_id is not None:
        body["id"] = echoed_id
    return orjson.dumps(body)
