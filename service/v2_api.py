"""The Open Inference Protocol (KServe V2) over REST, with Triton's binary
tensor data extension: a JSON header of `Inference-Header-Content-Length`
bytes, then the raw tensors, in the order of the inputs (and outputs)."""
import numpy as np
import orjson
from flask import Blueprint, Response, current_app, jsonify, request

from . import metrics
from .auth import prediction_token_required
from .errors import ApiError
from pipeline.normalize import column_ranges
from pipeline.schema import FEATURES

from .inputs import check_domain, parse_json
from .serving import current_bundle

bp = Blueprint("v2", __name__, url_prefix="/v2")

MODEL_NAME = "demand"
INPUT = "features"
OUTPUTS = ("units_sold", "units_sold_normalized")
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT32": "<i4", "INT64": "<i8"}
BINARY_HEADER = "Inference-Header-Content-Length"


def server_version():
    from importlib import metadata

    try:
        return metadata.version("demand-forecaster")
    except metadata.PackageNotFoundError:
        return "unknown"


@bp.get("")
def server_metadata():
    return jsonify(name="demand-forecaster", version=server_version(), extensions=["binary_tensor_data"])


@bp.get("/health/live")
def server_live():
    return jsonify(live=True)


@bp.get("/health/ready")
def server_ready():
    current_bundle()  # 503 while no model is loaded
    return jsonify(ready=True)


def model_or_404(name, version=None):
    if name != MODEL_NAME:
        raise ApiError(404, f"unknown model {name!r}; this server serves {MODEL_NAME!r}")
    bundle = current_bundle()
    if version is not None and version != bundle.version:
        raise ApiError(404, f"model version {version!r} is not loaded; this worker serves {bundle.version!r}")
    return bundle


@bp.get("/models/<name>")
@bp.get("/models/<name>/versions/<version>")
def model_metadata(name, version=None):
    bundle = model_or_404(name, version)
    return jsonify(
        name=MODEL_NAME,
        versions=[bundle.version],
        platform="onnxruntime_onnx",
        inputs=[{"name": INPUT, "datatype": "FP32", "shape": [-1, 3]}],
        outputs=[{"name": name, "datatype": "FP32", "shape": [-1, 1]} for name in OUTPUTS],
        parameters={"execution_provider": bundle.provider, "feature_order": list(FEATURES)},
    )


@bp.get("/models/<name>/ready")
@bp.get("/models/<name>/versions/<version>/ready")
def model_ready(name, version=None):
    model_or_404(name, version)
    return jsonify(name=MODEL_NAME, ready=True)


def read_request():
    """(JSON header, binary remainder) of an inference request."""
    raw = request.get_data(cache=False)
    length = request.headers.get(BINARY_HEADER)
    if request.content_encoding not in (None, "", "identity"):
        raise ApiError(415, f"Content-Encoding {request.content_encoding!r} is not supported; send the body uncompressed")
    if length is None:
        if request.mimetype not in ("", "application/json"):
            raise ApiError(415, f"Content-Type must be application/json (or use the binary extension), got {request.mimetype}")
        return parse_json(raw), b""
    if request.mimetype not in ("", "application/json", "application/octet-stream"):
        raise ApiError(415, f"Content-Type must be application/octet-stream or application/json, got {request.mimetype}")
    try:
        size = int(length)
    except ValueError:
        size = -1
    if not 0 < size <= len(raw):
        raise ApiError(400, f"{BINARY_HEADER} must be an integer between 1 and the body size ({len(raw)}), got {length!r}")
    return parse_json(raw[:size]), memoryview(raw)[size:]


def features_from(header, binary, max_rows):
    if not isinstance(header, dict):
        raise ApiError(400, "inference request must be a JSON object with 'inputs'")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ApiError(400, "'inputs' must be a non-empty list of tensors")
    offset, X = 0, None
    for tensor in inputs:
        if not isinstance(tensor, dict):
            raise ApiError(400, "each entry of 'inputs' must be an object")
        name = tensor.get("name")
        if name != INPUT:
            raise ApiError(400, f"unknown input {name!r}; this model takes one input named {INPUT!r}")
        shape = tensor.get("shape")
        if not (isinstance(shape, list) and len(shape) == 2 and all(type(d) is int for d in shape) and shape[1] == 3 and shape[0] >= 1):
            raise ApiError(400, f"input {INPUT!r} shape must be [rows, 3] with rows >= 1, got {shape!r}")
        rows = shape[0]
        if rows > max_rows:
            raise ApiError(413, f"{rows} rows is more than the limit of {max_rows} per request (DEMAND_MAX_ROWS)")
        datatype = tensor.get("datatype")
        if datatype not in DTYPES:
            raise ApiError(400, f"input {INPUT!r} datatype must be one of {', '.join(DTYPES)}, got {datatype!r}")
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ApiError(400, "input 'parameters' must be an object")
        if "binary_data_size" in parameters:
            size = parameters["binary_data_size"]
            dtype = np.dtype(DTYPES[datatype])
            if type(size) is not int or size != rows * 3 * dtype.itemsize:
                raise ApiError(400, f"binary_data_size must be rows * 3 * {dtype.itemsize} = {rows * 3 * dtype.itemsize} for {datatype}, got {size!r}")
            if offset + size > len(binary):
                raise ApiError(400, f"binary tensor data is {len(binary) - offset} bytes, {size} expected")
            X = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(rows, 3)
            offset += size
        else:
            X = _from_json_data(tensor.get("data"), rows)
    if offset != len(binary):
        raise ApiError(400, f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    ranges = column_ranges(X)
    check_domain(X, lambda i, name: f"{INPUT}[{i}].{name}", ranges)
    return X, ranges


def _from_json_data(data, rows):
    if not isinstance(data, list):
        raise ApiError(400, f"input {INPUT!r} needs 'data' (a list of numbers) or binary data")
    flat = data if not data or not isinstance(data[0], list) else [v for row in data for v in (row if isinstance(row, list) else [row])]
    if len(flat) != rows * 3:
        raise ApiError(400, f"input {INPUT!r} has {len(flat)} values; shape [{rows}, 3] needs {rows * 3}")
    kinds = {type(v) for v in flat}
    if not kinds <= {int, float}:
        bad = next(v for v in flat if type(v) not in (int, float))
        kind = "a boolean" if isinstance(bad, bool) else "null" if bad is None else f"a {type(bad).__name__}"
        raise ApiError(400, f"input {INPUT!r} data must be numbers, got {kind}")
    try:
        return np.array(flat, dtype=np.float64).reshape(rows, 3)
    except OverflowError:
        raise ApiError(400, f"input {INPUT!r} data holds an integer too large for a float") from None


def requested_outputs(header):
    parameters = header.get("parameters") or {}
    binary_default = bool(parameters.get("binary_data_output", False)) if isinstance(parameters, dict) else False
    outputs = header.get("outputs")
    if outputs is None:
        return [(name, binary_default) for name in OUTPUTS]
    if not isinstance(outputs, list):
        raise ApiError(400, "'outputs' must be a list")
    chosen = []
    for item in outputs:
        name = item.get("name") if isinstance(item, dict) else None
        if name not in OUTPUTS:
            raise ApiError(400, f"unknown output {name!r}; outputs are {', '.join(OUTPUTS)}")
        params = item.get("parameters") or {}
        chosen.append((name, bool(params.get("binary_data", binary_default)) if isinstance(params, dict) else binary_default))
    return chosen


@bp.post("/models/<name>/infer")
@bp.post("/models/<name>/versions/<version>/infer")
@prediction_token_required
def infer(name, version=None):
    bundle = model_or_404(name, version)
    header, binary = read_request()
    X, ranges = features_from(header, binary, current_app.config["SETTINGS"].max_rows)
    outputs = requested_outputs(header)
    units, normalized = bundle.run(np.ascontiguousarray(X, dtype=np.float32))
    values = {"units_sold": units, "units_sold_normalized": normalized}
    rows = len(X)
    metrics.ROWS_V2.inc(rows)
    outside, _ = bundle.stats.outside_training_range(X, ranges)
    if len(outside):
        metrics.EXTRAPOLATED.inc(len(outside))

    described, chunks = [], []
    for output, as_binary in outputs:
        tensor = {"name": output, "datatype": "FP32", "shape": [rows, 1]}
        if as_binary:
            raw = values[output].astype("<f4", copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            tensor["data"] = values[output].tolist()
        described.append(tensor)
    body = {"model_name": MODEL_NAME, "model_version": bundle.version, "outputs": described}
    if "id" in header:
        body["id"] = header["id"]
    encoded = orjson.dumps(body)
    if not chunks:
        return Response(encoded, mimetype="application/json")
    response = Response(b"".join([encoded, *chunks]), mimetype="application/octet-stream")
    response.headers[BINARY_HEADER] = str(len(encoded))
    return response
