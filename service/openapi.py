"""OpenAPI 3 description of every route the service answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from pipeline.calibrate import DEFAULT_LEVELS
from pipeline.calibrate import LEVELS as CALIBRATED_LEVELS
from pipeline.schema import (
    DOMAIN,
    FEATURES,
    FORECAST_COLUMNS,
    INPUT_TENSOR,
    MAX_SERIES_NAME,
    NORMALIZED_TENSOR,
    OUTPUT_TENSOR,
    OUTPUT_TENSORS,
    SERIES_COLUMN,
    TIME_COLUMN,
)

from .columnar import OUTPUT_COLUMNS
from .config import Settings
from .plans import MAX_ID_LENGTH, MAX_LEVELS
from .series import MAX_UNKNOWN_SHOWN
from .v2_api import BINARY_HEADER

if TYPE_CHECKING:
    from pipeline.features import FeatureSpec

NORMALIZED_MEANING = (
    "The network's own output: the forecast min-max scaled by the training data's range of the target, "
    "(units_sold - min) / (max - min) for a model that learns in units; for a model that learns on "
    "log(1 + units) (the card's transform is log1p), (log(1 + units_sold) - min) / (max - min) of log(1 + units). "
    "0 and 1 are the lowest and highest target seen in training, on that scale."
)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema_ref: str, description: str = "OK") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_ref}"}}},
    }


ERRORS = {
    "400": _error("Malformed JSON, a wrong type, a missing field, or a value outside the domain; the message names it"),
    "401": _error("Bearer token missing (only when DEMAND_API_TOKEN is set)"),
    "403": _error("Bearer token not accepted"),
    "413": _error("Body larger than DEMAND_MAX_BODY_BYTES or more rows than DEMAND_MAX_ROWS"),
    "415": _error("Unsupported Content-Type or Content-Encoding"),
    "503": _error("No checked model loaded yet"),
}


SERIES_NAME = {
    "type": "string",
    "maxLength": MAX_SERIES_NAME,
    "description": "the series' name, as in the training data's series column (optional): a model that "
    "tells series apart forecasts a series it knows with what it learned of it, and any "
    "other as a typical series",
}
UNKNOWN_SERIES = {
    "unknown_series": {
        "type": "array",
        "items": {"type": "string"},
        "description": f"the named series the model does not know (at most {MAX_UNKNOWN_SHOWN}), "
        "forecast as a typical series; absent when it knew them all",
    },
    "unknown_series_count": {"type": "integer", "description": "how many named series the model does not know"},
}


def _instance(features: Sequence[str] = FEATURES, series: bool = False) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for name in features:
        low, high, unit = DOMAIN[name]
        prop = {"type": "number", "minimum": low, "maximum": high, "description": unit}
        properties[name] = prop
    if series:
        properties[SERIES_COLUMN] = SERIES_NAME
        properties[TIME_COLUMN] = {
            "type": "string",
            "format": "date",
            "description": "the row's week (YYYY-MM-DD, optional): a row with its series and week is logged for "
            "live accuracy (/accuracy)",
        }
    return {
        "type": "object",
        "required": list(features),
        "properties": properties,
        "example": {name: value for name, value in zip(FEATURES, (76440, 63, 2)) if name in features},
    }


LEVELS: dict[str, Any] = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_LEVELS,
    "default": list(DEFAULT_LEVELS),
    "items": {"type": "number", "minimum": CALIBRATED_LEVELS[0], "maximum": CALIBRATED_LEVELS[-1]},
    "description": 'interval levels; each names its interval by its value, e.g. "0.8"',
}
INTERVALS: dict[str, Any] = {
    "type": "object",
    "nullable": True,
    "additionalProperties": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
    "description": "{level: [low, high]}; null when the model has no per-step calibration",
}
NOTES = {"type": "array", "items": {"type": "string"}, "description": "what to know about the intervals"}
EXTRAPOLATED = {
    "type": "array",
    "items": {"type": "string", "enum": list(FEATURES)},
    "description": "features outside the range the model was trained on",
}
NUMBERS = {"type": "array", "items": {"type": "number"}}
# The meaning of each output column of the columnar answer, by name (service.columnar.OUTPUT_COLUMNS).
OUTPUT_COLUMN_SCHEMAS = dict(
    zip(
        OUTPUT_COLUMNS,
        [
            {**NUMBERS, "description": "the forecast, in units"},
            {**NUMBERS, "description": NORMALIZED_MEANING},
            {**NUMBERS, "description": "the conformal interval's lower end, at interval_level"},
            {**NUMBERS, "description": "the conformal interval's upper end, at interval_level"},
            {"type": "array", "items": EXTRAPOLATED},
        ],
        strict=True,
    )
)


STEP_ACCURACY = {
    "type": "object",
    "required": ["step", "count", "wape", "bias", "mase", "coverage"],
    "properties": {
        "step": {"type": "integer", "minimum": 1},
        "count": {"type": "integer", "description": "forecast weeks that have sold"},
        "wape": {"type": "number", "nullable": True},
        "bias": {"type": "number", "nullable": True, "description": "sum(forecast - actual) / sum(actual)"},
        "mase": {"type": "number", "nullable": True, "description": "against the naive forecast"},
        "coverage": {"type": "object", "additionalProperties": {"type": "number"}, "description": "by level"},
    },
}
SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "ActualsRequest": {
        "type": "object",
        "description": "rows (`instances`) or columns (`inputs`) of series, week (YYYY-MM-DD), units_sold and the "
        "champion's declared covariates, under the champion's names for them",
        "properties": {
            "instances": {"type": "array", "minItems": 1, "items": {"type": "object"}},
            "inputs": {"type": "object", "additionalProperties": {"type": "array"}},
        },
    },
    "ActualsResponse": {
        "type": "object",
        "required": ["stored", "replaced"],
        "properties": {"stored": {"type": "integer"}, "replaced": {"type": "integer"}},
    },
    "AccuracyResponse": {
        "type": "object",
        "required": ["weeks", "through", "versions"],
        "properties": {
            "weeks": {"type": "integer"},
            "through": {"type": "string", "nullable": True, "description": "the latest week of actuals"},
            "drift": {
                "type": "object",
                "description": "each input's population stability index over the window's actuals against the "
                "champion's training distribution; flagged above 0.2",
            },
            "versions": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "window": {"type": "array", "items": STEP_ACCURACY},
                        "all": {"type": "array", "items": STEP_ACCURACY},
                    },
                },
            },
        },
    },
    "Instance": _instance(series=True),
    "PredictRequest": {
        "oneOf": [
            {
                "type": "object",
                "required": ["instances"],
                "additionalProperties": False,
                "properties": {
                    "instances": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Instance"}},
                    "levels": LEVELS,
                },
            },
            {"$ref": "#/components/schemas/ColumnarRequest"},
            {
                "allOf": [{"$ref": "#/components/schemas/Instance"}],
                "properties": {"levels": LEVELS},
                "description": "one instance, with `levels` if wanted",
            },
        ]
    },
    "ColumnarRequest": {
        "type": "object",
        "required": ["inputs"],
        "additionalProperties": False,
        "description": "TF-Serving's columnar format: one list per feature, row i made of the i-th value of each; "
        "the answer is columnar too",
        "properties": {
            "inputs": {
                "type": "object",
                "required": list(FEATURES),
                "additionalProperties": False,
                "properties": {
                    name: {
                        "type": "array",
                        "minItems": 1,
                        "items": schema,
                        "description": "one value per row; every list has the same length",
                    }
                    for name, schema in _instance()["properties"].items()
                }
                | {
                    SERIES_COLUMN: {
                        "type": "array",
                        "items": {**SERIES_NAME, "nullable": True},
                        "description": "optional: each row's series name (null for none), one per row",
                    }
                },
            },
            "fields": {
                "type": "array",
                "minItems": 1,
                "uniqueItems": True,
                "items": {"type": "string", "enum": list(OUTPUT_COLUMNS)},
                "description": "the output columns to answer, in this order; default: all",
            },
            "levels": {**LEVELS, "description": "adds `intervals` to the outputs: " + LEVELS["description"]},
        },
        "example": {
            "inputs": {name: [value, value] for name, value in _instance()["example"].items()},
            "fields": list(OUTPUT_COLUMNS[:1]),
        },
    },
    "Prediction": {
        "type": "object",
        "required": [OUTPUT_TENSOR, NORMALIZED_TENSOR, "interval", "extrapolated"],
        "properties": {
            OUTPUT_TENSOR: {"type": "number", "description": "the forecast, in units"},
            NORMALIZED_TENSOR: {"type": "number", "description": NORMALIZED_MEANING},
            "interval": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
            "intervals": {
                **INTERVALS,
                "description": "only when the request has `levels`: " + INTERVALS["description"],
            },
            "extrapolated": EXTRAPOLATED,
        },
    },
    "PlannedWeek": _instance(FEATURES[1:]),
    "SeriesPlan": {
        "type": "object",
        "required": ["id", FEATURES[0], "weeks"],
        "additionalProperties": False,
        "properties": {
            "id": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_ID_LENGTH,
                "description": "the series' name, as `series` beside an instance's features",
            },
            FEATURES[0]: _instance()["properties"][FEATURES[0]],
            "start": {
                "type": "string",
                "format": "date",
                "description": "the first planned week (YYYY-MM-DD): the forecasts are then logged for live "
                "accuracy (/accuracy)",
            },
            "weeks": {
                "type": "array",
                "minItems": 1,
                "maxItems": Settings.max_horizon,
                "items": {"$ref": "#/components/schemas/PlannedWeek"},
                "description": "the weeks to forecast, in order; at most DEMAND_MAX_HORIZON",
            },
        },
    },
    "ForecastRequest": {
        "type": "object",
        "required": ["series"],
        "additionalProperties": False,
        "properties": {
            "series": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/SeriesPlan"}},
            "levels": LEVELS,
        },
    },
    "ForecastWeek": {
        "type": "object",
        "required": ["step", OUTPUT_TENSOR, "intervals", "extrapolated"],
        "properties": {
            "step": {"type": "integer", "minimum": 1},
            OUTPUT_TENSOR: {"type": "number", "description": "the forecast, in units; the next step's prev_week_sales"},
            "intervals": INTERVALS,
            "extrapolated": {"type": "array", "items": {"type": "string", "enum": list(FEATURES)}},
        },
    },
    "ForecastResponse": {
        "type": "object",
        "required": ["model_version", "levels", "series"],
        "properties": {
            "model_version": {"type": "string"},
            "history_through": {
                "type": "object",
                "additionalProperties": {"type": "string", "format": "date"},
                "description": "for each series that brought no history of its own and got the store's: the "
                "last week of it",
            },
            "levels": {"type": "array", "items": {"type": "number"}},
            "series": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "weeks"],
                    "properties": {
                        "id": {"type": "string"},
                        "weeks": {"type": "array", "items": {"$ref": "#/components/schemas/ForecastWeek"}},
                    },
                },
            },
            "notes": NOTES,
            **UNKNOWN_SERIES,
        },
    },
    "PredictResponse": {
        "oneOf": [{"$ref": "#/components/schemas/RowsResponse"}, {"$ref": "#/components/schemas/ColumnarResponse"}]
    },
    "RowsResponse": {
        "type": "object",
        "required": ["model_version", "interval_level", "predictions"],
        "properties": {
            "model_version": {"type": "string"},
            "interval_level": {"type": "number"},
            "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
            "notes": NOTES,
            "history_through": {
                "type": "object",
                "additionalProperties": {"type": "string", "format": "date"},
                "description": "for rows of a stored series sent without prev_week_sales: the stored week it was "
                "taken from",
            },
            **UNKNOWN_SERIES,
        },
    },
    "ColumnarResponse": {
        "type": "object",
        "required": ["model_version", "interval_level", "outputs"],
        "description": "the answer to a ColumnarRequest: one list per output, in the order of the rows",
        "properties": {
            "model_version": {"type": "string"},
            "interval_level": {"type": "number"},
            "outputs": {
                "type": "object",
                "description": "the columns of `fields`, or all of them; `intervals` only when the request has `levels`",
                "properties": {
                    **OUTPUT_COLUMN_SCHEMAS,
                    "intervals": {
                        "type": "object",
                        "nullable": True,
                        "additionalProperties": {
                            "type": "object",
                            "required": ["low", "high"],
                            "properties": {"low": NUMBERS, "high": NUMBERS},
                        },
                        "description": "{level: {low: [...], high: [...]}}; null when the model has no per-step "
                        "calibration",
                    },
                },
            },
            "notes": NOTES,
            **UNKNOWN_SERIES,
        },
    },
    "Health": {
        "type": "object",
        "required": ["status", "ready"],
        "properties": {
            "status": {"type": "string"},
            "ready": {"type": "boolean"},
            "model_version": {"type": "string"},
            "execution_provider": {"type": "string"},
            "reason": {"type": "string"},
            "interval_level": {"type": "number"},
            "created_at": {"type": "string"},
            "champion": {"type": "string"},
            "fallback": {"type": "boolean"},
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Live": {"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}},
    "Ready": {
        "type": "object",
        "required": ["ready"],
        "properties": {"ready": {"type": "boolean"}, "name": {"type": "string"}},
    },
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "parameters": {"type": "object"},
            "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/TensorMetadata"}},
        },
    },
    "InferInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "enum": [INPUT_TENSOR]},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
            "datatype": {"type": "string", "enum": ["FP32", "FP64", "INT32", "INT64"]},
            "data": {"type": "array", "items": {"type": "number", "minimum": 0}},
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
        },
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "description": "JSON tensors; or, with the binary extension, this JSON as the first "
        "Inference-Header-Content-Length bytes followed by little-endian tensor bytes.",
        "properties": {
            "id": {"type": "string"},
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 2,
                "items": {
                    "oneOf": [{"$ref": "#/components/schemas/InferInput"}, {"$ref": "#/components/schemas/SeriesInput"}]
                },
                "description": f"{INPUT_TENSOR}, and optionally {SERIES_COLUMN}",
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "enum": list(OUTPUT_TENSORS)},
                        "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                    },
                },
            },
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
        },
    },
    "SeriesInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "description": "each row's series name, for a model that tells series apart (ignored by one that does "
        "not); as binary data, each name's length in 4 bytes (little-endian), then its UTF-8 bytes",
        "properties": {
            "name": {"type": "string", "enum": [SERIES_COLUMN]},
            "shape": {
                "type": "array",
                "items": {"type": "integer", "minimum": 1},
                "minItems": 1,
                "maxItems": 2,
                "description": "[rows] or [rows, 1]",
            },
            "datatype": {"type": "string", "enum": ["BYTES"]},
            "data": {"type": "array", "items": {**SERIES_NAME, "nullable": True}},
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
        },
    },
    "InferOutput": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array", "items": {"type": "number"}},
            "parameters": {"type": "object"},
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/InferOutput"}},
            "parameters": {
                "type": "object",
                "properties": UNKNOWN_SERIES,
                "description": "only when the request named series the model does not know",
            },
        },
    },
}

NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}, "example": "demand"}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
SECURED: list[dict[str, list[str]]] = [{}, {"bearer": []}]


def _pick(*codes: str) -> dict[str, Any]:
    return {code: ERRORS[code] for code in codes}


# A CSV table of weeks: a header row naming the features (other columns ride
# along), then one row per week. The answer is that table with these added.
CSV_REQUEST = {
    "type": "string",
    "description": "CSV with a header row naming "
    + ", ".join(FEATURES)
    + "; any other columns are passed through, and a series column also names each row's series "
    "for a model that tells series apart",
    "example": "series,week," + ",".join(FEATURES) + "\nstore-01,2026-01-05,40000,30,2\n",
}
CSV_ANSWER = {
    "type": "string",
    "description": "The request's table with the columns "
    + ", ".join(FORECAST_COLUMNS)
    + " added, as `demand predict` writes it",
}


def _predict_operation(summary: str) -> dict[str, Any]:
    answer = _json(
        "PredictResponse", "Forecasts with a conformal interval (JSON), or the CSV table with forecast columns"
    )
    answer["content"]["text/csv"] = {"schema": CSV_ANSWER}
    return {
        "post": {
            "summary": summary,
            "security": SECURED,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                    "text/csv": {"schema": CSV_REQUEST},
                },
            },
            "responses": {"200": answer, **_pick("400", "401", "403", "413", "415", "503")},
        }
    }


BINARY_BODY = {
    "schema": {"type": "string", "format": "binary"},
    "description": f"the binary tensor extension: the JSON header (InferRequest) in its first "
    f"{BINARY_HEADER} bytes, then each tensor's raw little-endian bytes in the order of "
    "`inputs` (`parameters.binary_data_size`)",
}
HEADER_LENGTH = {
    "name": BINARY_HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 1},
    "description": "with a binary body: the length of its JSON header, in bytes",
}


def _infer_operation(parameters: Sequence[dict[str, Any]]) -> dict[str, Any]:
    answer = _json("InferResponse")
    answer["content"]["application/octet-stream"] = {
        **BINARY_BODY,
        "description": "when an output asks for `binary_data`: the JSON header, then the tensors",
    }
    return {
        "post": {
            "summary": "Open Inference Protocol inference (JSON or binary tensors)",
            "security": SECURED,
            "parameters": [*parameters, HEADER_LENGTH],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/InferRequest"}},
                    "application/octet-stream": BINARY_BODY,
                },
            },
            "responses": {
                "200": answer,
                "404": _error("Unknown model or version"),
                **_pick("400", "401", "403", "413", "415", "503"),
            },
        }
    }


def page_paths() -> dict[str, Any]:
    """The planners' page (service/ui.py): its HTML, its files and the read-only data only it needs."""
    html = {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}
    anything = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    series = {"name": "series", "in": "query", "required": True, "schema": {"type": "string"}}

    def data(summary: str, parameters: Sequence[dict[str, Any]] = (), *codes: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "security": SECURED,
                "parameters": list(parameters),
                "responses": {"200": anything, **_pick("401", "403", *codes)},
            }
        }

    return {
        "/ui": {
            "get": {
                "summary": "The planners' page; without the token (when one is set), a sign-in form",
                "responses": {"200": html, "401": {**html, "description": "The sign-in form"}},
            }
        },
        "/ui/sign-in": {
            "post": {
                "summary": "Sign in to the page with the service's token: a cookie (a keyed digest of the token, not the "
                "token) for the page's own calls",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object", "properties": {"token": {"type": "string"}}}
                        }
                    },
                },
                "responses": {"303": {"description": "To the page"}, "403": {**html, "description": "Refused"}},
            }
        },
        "/ui/static/{name}": {
            "get": {
                "summary": "The page's script, style and charting library",
                "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The file"}, "404": {"description": "No such file"}},
            }
        },
        "/ui/data/overview": data("What the page needs of the champion: its covariates and the series it knows"),
        "/ui/data/history": data("A series' recent weeks: the model's stored ones, then the store's", [series], "400"),
        "/ui/data/served": data(
            "Each version's one-week-ahead forecasts of a series against what sold", [series], "400", "503"
        ),
        "/ui/data/weekly": data(
            "Each version's one-week-ahead WAPE and coverage, week by week",
            [{"name": "weeks", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}}],
            "400",
            "503",
        ),
        "/ui/data/registry": data("The versions with their cards' key figures, the champion and what happened"),
        "/ui/data/versions/{version}/{name}": {
            "get": {
                "summary": "A version's plot",
                "security": SECURED,
                "parameters": [VERSION, {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "The plot", "content": {"image/png": {"schema": {"type": "string"}}}},
                    **_pick("401", "403"),
                    "404": _error("No such version or plot"),
                },
            }
        },
    }


def _get(
    ref: str, summary: str, parameters: Sequence[dict[str, Any]] = (), extra: Sequence[str] = ()
) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "parameters": list(parameters),
            "responses": {
                "200": _json(ref),
                **{code: ERRORS.get(code) or _error("Unknown model or version") for code in extra},
            },
        }
    }


def feature_schemas(features: FeatureSpec) -> dict[str, Any]:
    """The request schemas of a model that reads history, the calendar or declared covariates
    (pipeline.features.FeatureSpec `features`): rows by column name (service/feature_rows.py)."""
    number = {"type": "number"}
    row: dict[str, Any] = {
        name: {**number, "description": "known in advance, required in every row"} for name in features.known
    }
    row.update(
        {
            name: {
                **(
                    number
                    if features.vocabulary(name) is None
                    else {"type": "string", "example": cast("tuple[str, ...]", features.vocabulary(name))[0]}
                ),
                "description": "one value per series; optional for a series the model trained on"
                + (
                    ""
                    if features.vocabulary(name) is None
                    else "; a value training never saw is served, and named in `filled`"
                ),
            }
            for name in features.static
        }
    )
    row[features.series_column] = SERIES_NAME
    row[features.week_column] = {
        "type": "string",
        "format": "date",
        "description": "the week forecast; default: the week after the series' stored history",
    }
    row[FEATURES[0]] = {
        **_instance()["properties"][FEATURES[0]],
        "description": "last week's sales; optional for a series whose stored history reaches the week before",
    }
    row[features.target_column] = {**number, "description": "the week's actual sales, read as history by later rows"}
    plan = {
        "id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        FEATURES[0]: row[FEATURES[0]],
        features.week_column: {**row[features.week_column], "description": "the plan's first week"},
        "history": {
            "type": "array",
            "items": number,
            "description": "recent weekly sales, oldest first; replaces the stored history",
        },
        **{name: row[name] for name in features.static},
        "weeks": {
            "type": "array",
            "minItems": 1,
            "maxItems": Settings.max_horizon,
            "items": {"$ref": "#/components/schemas/PlannedWeek"},
        },
    }
    return {
        "Instance": {
            "type": "object",
            "required": list(features.known),
            "additionalProperties": False,
            "properties": row,
            "description": "features: " + ", ".join(features.names),
        },
        "PlannedWeek": {
            "type": "object",
            "required": list(features.known),
            "additionalProperties": False,
            "properties": {name: row[name] for name in features.known},
        },
        "SeriesPlan": {
            "type": "object",
            "required": ["id", "weeks"],
            "additionalProperties": False,
            "properties": plan,
        },
    }


def spec(admin_enabled: bool = False, features: FeatureSpec | None = None) -> dict[str, Any]:
    """The OpenAPI document; `features`: the served model's FeatureSpec, when it reads more than the three inputs."""
    schemas = SCHEMAS if features is None or features.is_chapter else {**SCHEMAS, **feature_schemas(features)}
    paths = {
        "/healthz": _get("Health", "Liveness; also tells what is served"),
        "/readyz": _get("Health", "Readiness: 200 only while a checked model is loaded", extra=("503",)),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of all workers",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}
                },
            }
        },
        "/predict": _predict_operation("Forecast units sold for one or more instances, as rows or as columns"),
        "/v1/models/demand:predict": _predict_operation("The same, at the TF-Serving / KServe V1 address"),
        "/forecast": {
            "post": {
                "summary": "Forecast a promotion plan several weeks ahead: each week's forecast is the next week's "
                "prev_week_sales; intervals at several levels, calibrated step by step",
                "security": SECURED,
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ForecastRequest"}}},
                },
                "responses": {
                    "200": _json("ForecastResponse", "Forecasts by series and week, with intervals"),
                    **_pick("400", "401", "403", "413", "415", "503"),
                },
            }
        },
        "/actuals": {
            "post": {
                "summary": "Store what sold (JSON rows or a CSV body): all or nothing; a week posted again replaces "
                "the stored one",
                "security": SECURED,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ActualsRequest"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json("ActualsResponse", "How many weeks were stored new, and how many replaced"),
                    **_pick("400", "401", "403", "413", "415"),
                    "503": _error("No checked model loaded yet, or the store cannot be reached: nothing was stored"),
                },
            }
        },
        "/accuracy": {
            "get": {
                "summary": "Live accuracy per version and step ahead: the forecast log joined to the actuals",
                "security": SECURED,
                "parameters": [
                    {
                        "name": "weeks",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 520, "default": 13},
                        "description": "the trailing window, in weeks of actuals",
                    }
                ],
                "responses": {
                    "200": _json("AccuracyResponse", "Count, WAPE, bias, MASE and coverage by version and step"),
                    **_pick("400", "401", "403"),
                    "503": _error("The store cannot be reached"),
                },
            }
        },
        **page_paths(),
        "/v2": _get("ServerMetadata", "Server metadata"),
        "/v2/health/live": _get("Live", "Server liveness"),
        "/v2/health/ready": _get("Ready", "Server readiness", extra=("503",)),
        "/v2/models/{name}": _get("ModelMetadata", "Model metadata", [NAME], ("404", "503")),
        "/v2/models/{name}/versions/{version}": _get(
            "ModelMetadata", "Model metadata of a version", [NAME, VERSION], ("404", "503")
        ),
        "/v2/models/{name}/ready": _get("Ready", "Model readiness", [NAME], ("404", "503")),
        "/v2/models/{name}/versions/{version}/ready": _get(
            "Ready", "Readiness of a version", [NAME, VERSION], ("404", "503")
        ),
        "/v2/models/{name}/infer": _infer_operation([NAME]),
        "/v2/models/{name}/versions/{version}/infer": _infer_operation([NAME, VERSION]),
    }
    if admin_enabled:
        paths["/admin/reload"] = {
            "post": {
                "summary": "Load the champion now (and retry a refused one)",
                "security": [{"bearer": []}],
                "responses": {"200": _json("Health"), **_pick("401", "403", "503")},
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Demand forecaster",
            "version": "1",
            "description": "Weekly units-sold forecasts from last week's sales, the discount and the weeks to the next holiday.",
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
