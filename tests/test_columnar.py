"""TF-Serving's columnar format on POST /predict: `inputs` in, `outputs` out."""

import json
from itertools import chain

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.schema import FEATURES
from service.columnar import OUTPUT_COLUMNS, decode_columnar, read_columnar
from service.errors import ApiError
from service.inputs import ROW_BUDGET, SLACK, check_token_count, load_json
from service.predict_api import BODY_KINDS
from service.testing import running_service

from .conftest import INSTANCE
from .test_api import metric_value, post

INSIDE = {"prev_week_sales": 20000, "discount_fraction": 40, "weeks_to_next_holidays": 3}  # inside the training range
OUTSIDE = {**INSIDE, "prev_week_sales": 5_000_000.5, "weeks_to_next_holidays": 500}
ROWS = [
    INSIDE,
    {**INSIDE, "discount_fraction": 0},
    {**INSIDE, "discount_fraction": 12.25},
    INSTANCE,
    OUTSIDE,
    {**INSIDE, "prev_week_sales": 5_000_000},
]


def columns(rows):
    return {name: [row[name] for row in rows] for name in FEATURES}


def body_with(**changes):
    """A well-formed columnar body of ROWS with some columns changed (None: removed)."""
    inputs = columns(ROWS)
    for name, column in changes.items():
        if column is None:
            inputs.pop(name)
        else:
            inputs[name] = column
    return {"inputs": inputs}


def rows_answer(client, rows, **extra):
    response = post(client, "/predict", {"instances": rows, **extra})
    assert response.status_code == 200
    return response.get_json()


def as_columns(predictions):
    """The row format's predictions rearranged into the columnar answer's outputs."""
    return {
        "units_sold": [p["units_sold"] for p in predictions],
        "units_sold_normalized": [p["units_sold_normalized"] for p in predictions],
        "interval_low": [p["interval"][0] for p in predictions],
        "interval_high": [p["interval"][1] for p in predictions],
        "extrapolated": [p["extrapolated"] for p in predictions],
    }


# ---------------------------------------------------------------- answers


@pytest.mark.parametrize("path", ["/predict", "/v1/models/demand:predict"])
def test_columns_hold_the_row_formats_values(client, path):
    response = post(client, path, {"inputs": columns(ROWS)})
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
    answer = response.get_json()
    expected = rows_answer(client, ROWS)
    assert list(answer) == ["model_version", "interval_level", "outputs"]
    assert answer["model_version"] == expected["model_version"] == "v1"
    assert answer["interval_level"] == expected["interval_level"]
    assert list(answer["outputs"]) == list(OUTPUT_COLUMNS)
    assert answer["outputs"] == as_columns(expected["predictions"])  # exact: the same floats, bit for bit
    assert answer["outputs"]["extrapolated"][:3] == [[], [], []]
    assert answer["outputs"]["extrapolated"][4:] == [["prev_week_sales", "weeks_to_next_holidays"], ["prev_week_sales"]]


def test_one_row_and_many_rows(client):
    one = post(client, "/predict", {"inputs": columns([INSTANCE])}).get_json()["outputs"]
    assert one == as_columns(rows_answer(client, [INSTANCE])["predictions"])
    many = [{**INSIDE, "prev_week_sales": 15000 + 7 * i, "discount_fraction": i % 91} for i in range(2000)]
    outputs = post(client, "/predict", {"inputs": columns(many)}).get_json()["outputs"]
    assert outputs == as_columns(rows_answer(client, many)["predictions"])


def test_fields_pick_the_columns_in_the_order_asked(client):
    full = post(client, "/predict", {"inputs": columns(ROWS)}).get_json()["outputs"]
    fields = ["interval_high", "units_sold", "extrapolated"]
    answer = post(client, "/predict", {"inputs": columns(ROWS), "fields": fields}).get_json()
    assert list(answer["outputs"]) == fields
    assert answer["outputs"] == {name: full[name] for name in fields}


def test_levels_add_intervals_equal_to_the_row_formats(client):
    levels = [0.8, 0.95]
    answer = post(client, "/predict", {"inputs": columns(ROWS), "levels": levels, "fields": ["units_sold"]}).get_json()
    predictions = rows_answer(client, ROWS, levels=levels)["predictions"]
    assert list(answer["outputs"]) == ["units_sold", "intervals"] and "notes" not in answer
    intervals = answer["outputs"]["intervals"]
    assert list(intervals) == ["0.8", "0.95"]
    for key in intervals:
        assert intervals[key]["low"] == [p["intervals"][key][0] for p in predictions]
        assert intervals[key]["high"] == [p["intervals"][key][1] for p in predictions]
    low80, high80, low95 = intervals["0.8"]["low"][0], intervals["0.8"]["high"][0], intervals["0.95"]["low"][0]
    assert low95 <= low80 <= answer["outputs"]["units_sold"][0] <= high80


def test_levels_of_a_model_without_calibration_are_null_with_a_note(own_registry, make_app):
    card_path = own_registry / "versions" / "v1" / "card.json"
    card = json.loads(card_path.read_text())
    del card["calibration"]  # as versions published before the calibration existed
    card_path.write_text(json.dumps(card))
    client = make_app(MODEL_DIR=str(own_registry)).test_client()
    answer = post(client, "/predict", {"inputs": columns(ROWS), "levels": [0.8]}).get_json()
    assert answer["outputs"]["intervals"] is None
    assert "no per-step interval calibration" in answer["notes"][0]
    assert list(answer) == ["model_version", "interval_level", "notes", "outputs"]
    rows = rows_answer(client, ROWS, levels=[0.8])
    assert rows["notes"] == answer["notes"]


def test_columnar_rows_are_counted_like_the_row_formats(client):
    series = ['demand_rows_predicted_total{protocol="json"}', "demand_extrapolated_rows_total"]
    before = [metric_value(client, s) for s in series]
    answer = post(client, "/predict", {"inputs": columns(ROWS)}).get_json()
    outside = sum(map(bool, answer["outputs"]["extrapolated"]))
    assert outside >= 2 and [metric_value(client, s) - b for s, b in zip(series, before)] == [len(ROWS), outside]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "body, message",
    [
        (body_with(discount_fraction=None), "inputs.discount_fraction is missing"),
        (body_with(weeks_to_next_holidays=None), "inputs.weeks_to_next_holidays is missing"),
        (
            {"inputs": {**columns(ROWS), "store": [1] * len(ROWS)}},
            "inputs.store is not a feature; the features are prev_week_sales, discount_fraction, weeks_to_next_holidays",
        ),
        (body_with(prev_week_sales=5), "inputs.prev_week_sales must be a list of numbers, got a number"),
        (body_with(prev_week_sales={"0": 5}), "inputs.prev_week_sales must be a list of numbers, got an object"),
        (body_with(discount_fraction="1,2"), "inputs.discount_fraction must be a list of numbers, got a string"),
        (
            {"inputs": {**columns(ROWS), "weeks_to_next_holidays": None}},
            "inputs.weeks_to_next_holidays must be a list of numbers, got null",
        ),
        (
            body_with(discount_fraction=[1, 2]),
            "the columns of inputs must have the same length, got prev_week_sales: 6, "
            "discount_fraction: 2, weeks_to_next_holidays: 6",
        ),
        ({"inputs": {name: [] for name in FEATURES}}, "the columns of inputs are empty: send at least one row"),
        (
            body_with(discount_fraction=[10, 20, 30, 40, 50, 130]),
            "inputs.discount_fraction[5] must be <= 100 percent, got 130",
        ),
        (body_with(prev_week_sales=[1, 2, -3, 4, 5, 6]), "inputs.prev_week_sales[2] must be >= 0 units, got -3"),
        (
            body_with(weeks_to_next_holidays=[1, True, 1, 1, 1, 1]),
            "inputs.weeks_to_next_holidays[1] must be a number, got a boolean",
        ),
        (
            body_with(prev_week_sales=[1, 2, 3, 4, 5, "6"]),
            "inputs.prev_week_sales[5] must be a number, got the text '6'",
        ),
        (body_with(discount_fraction=[1, 2, 3, None, 5, 6]), "inputs.discount_fraction[3] must be a number, got null"),
        (body_with(discount_fraction=[1, 2, 3, [4], 5, 6]), "inputs.discount_fraction[3] must be a number, got a list"),
        (
            '{"inputs": {"prev_week_sales": [1, NaN], "discount_fraction": [1, 2], "weeks_to_next_holidays": [1, 2]}}',
            "inputs.prev_week_sales[1] must be a finite number, got NaN",
        ),
        (
            '{"inputs": {"prev_week_sales": [1, 2], "discount_fraction": [1, 2], "weeks_to_next_holidays": [-Infinity, 2]}}',
            "inputs.weeks_to_next_holidays[0] must be a finite number, got -infinity",
        ),
        (
            '{"inputs": {"prev_week_sales": [1, 1e300], "discount_fraction": [1, 2], "weeks_to_next_holidays": [1, 2]}}',
            "inputs.prev_week_sales[1] must be <= 3.40282e+38 units, got 1e+300",
        ),
        (
            '{"inputs": {"prev_week_sales": [1, 1'
            + "0" * 400
            + '], "discount_fraction": [1, 2], "weeks_to_next_holidays": [1, 2]}}',
            "inputs.prev_week_sales[1] must be a finite number, got an integer too large for a float",
        ),
        (
            {"inputs": [[1, 2, 3]]},
            "'inputs' must be an object with one list of numbers per feature: prev_week_sales, "
            "discount_fraction, weeks_to_next_holidays",
        ),
        (
            {"inputs": columns(ROWS), "instances": ROWS},
            "send either 'instances' (one object per row) or 'inputs' (one list per feature), not both",
        ),
        (
            {"inputs": columns(ROWS), "fields": ["units_sold", "forecast"]},
            "fields[1] 'forecast' is not an output; the outputs are units_sold, units_sold_normalized, interval_low, "
            "interval_high, extrapolated",
        ),
        ({"inputs": columns(ROWS), "fields": []}, "fields is empty: name at least one of units_sold"),
        (
            {"inputs": columns(ROWS), "fields": "units_sold"},
            "fields must be a list of output names, some of units_sold",
        ),
        ({"inputs": columns(ROWS), "fields": ["units_sold", 1]}, "fields must be a list of output names"),
        ({"inputs": columns(ROWS), "fields": None}, "fields must be a list of output names"),
        ({"inputs": columns(ROWS), "fields": ["units_sold", "units_sold"]}, "fields names an output twice"),
        ({"inputs": columns(ROWS), "levels": [0.3]}, "levels[0] must be a number between 0.5 and 0.99"),
        (
            {"inputs": columns(ROWS), "field": ["units_sold"]},
            "'field' is not a key of a columnar body; it takes inputs, fields, levels",
        ),
    ],
)
def test_bad_columnar_bodies_get_400_naming_the_column_and_index(client, body, message):
    response = post(client, "/predict", body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.is_json and message in response.get_json()["error"], response.get_json()["error"]


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"discount_fraction": [10] * 4 + [101, 10], "weeks_to_next_holidays": [1] * 5 + [-1]},
            "inputs.discount_fraction[4] must be <= 100 percent, got 101",
        ),
        (
            {"prev_week_sales": [1] * 5 + ["x"], "weeks_to_next_holidays": [1] * 4 + [None, 1]},
            "inputs.weeks_to_next_holidays[4] must be a number, got null",
        ),
    ],
)
def test_the_first_bad_value_in_row_order_is_named(client, changes, message):
    """Bad values in two columns: the value of the earlier row is named, whichever its column."""
    assert post(client, "/predict", body_with(**changes)).get_json()["error"] == message


def test_more_rows_than_the_cap_are_413(make_app):
    client = make_app(MAX_ROWS=3).test_client()
    response = post(client, "/predict", {"inputs": columns(ROWS[:4])})
    assert response.status_code == 413
    assert response.get_json()["error"] == "4 rows is more than the limit of 3 per request (DEMAND_MAX_ROWS)"
    assert post(client, "/predict", {"inputs": columns(ROWS[:3])}).status_code == 200


def test_a_body_with_more_values_than_the_cap_needs_is_413_before_parsing(make_app):
    client = make_app(MAX_ROWS=3).test_client()
    one_long_column = {"inputs": {**columns(ROWS[:3]), "prev_week_sales": [1] * 5000}}
    response = post(client, "/predict", one_long_column)
    assert response.status_code == 413 and "JSON values" in response.get_json()["error"]


def test_the_token_budget_admits_a_full_columnar_body_and_takes_the_largest_kind():
    max_rows = 5000
    full = json.dumps(
        {
            "inputs": {name: [12345.5] * max_rows for name in FEATURES},
            "fields": list(OUTPUT_COLUMNS),
            "levels": [0.8, 0.95],
        }
    ).encode()
    assert len(full) > max_rows + SLACK  # long enough to be counted
    check_token_count(full, max_rows, "columnar")
    # Ten values a row: inside the row format's budget, past the columnar one's.
    ten_a_row = json.dumps({"inputs": {name: [1] * (10 * max_rows // 3) for name in FEATURES}}).encode()
    assert ROW_BUDGET["columnar"][1] < 10 <= ROW_BUDGET["instance"][1]
    with pytest.raises(ApiError) as refused:
        check_token_count(ten_a_row, max_rows, "columnar")
    assert refused.value.status == 413
    check_token_count(ten_a_row, max_rows, BODY_KINDS)  # /predict cannot know the kind before parsing


def test_a_plan_body_is_counted_once_it_is_long_enough_to_pass_the_plan_budget():
    max_rows = 2000
    weeks = json.dumps({"series": [{"id": "a", "weeks": [{"discount_fraction": 1}] * max_rows}]}).encode()
    check_token_count(weeks, max_rows, "plan")  # a full plan
    containers = ROW_BUDGET["plan"][0] * max_rows + SLACK + 1
    empty_lists = json.dumps({"series": [{"id": "a", "weeks": [[]] * containers}]}).encode()
    with pytest.raises(ApiError) as refused:
        check_token_count(empty_lists, max_rows, "plan")
    assert refused.value.status == 413


def test_the_row_format_keeps_its_answer_and_its_errors(client):
    """`inputs` is a key of the columnar format only: row bodies answer as before."""
    answer = rows_answer(client, [INSTANCE])
    assert list(answer) == ["model_version", "interval_level", "predictions"]
    assert set(answer["predictions"][0]) == {"units_sold", "units_sold_normalized", "interval", "extrapolated"}
    missing = post(client, "/predict", {"instances": [{"discount_fraction": 5, "weeks_to_next_holidays": 1}]})
    assert missing.get_json()["error"] == "instances[0].prev_week_sales is missing"


# ---------------------------------------------------------------- the fast path


GOOD = {"inputs": columns(ROWS)}


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(GOOD, id="good"),
        pytest.param({**GOOD, "fields": ["interval_low", "extrapolated"], "levels": [0.9]}, id="fields and levels"),
        pytest.param({"inputs": columns([INSTANCE] * 4)}, id="too many rows"),
        pytest.param(body_with(discount_fraction=[10, 20, 30, 40, 50, 130]), id="outside the domain"),
        pytest.param(body_with(discount_fraction=[1, 2]), id="lengths differ"),
        pytest.param({**GOOD, "fields": ["nope"]}, id="unknown field"),
    ],
)
def test_fast_path_and_flask_view_give_the_same_bytes(body, make_app):
    app = make_app(MAX_ROWS=len(ROWS))
    client = app.test_client()
    fast = post(client, "/predict", body)
    app.wsgi_app, middleware = app.wsgi_app.wsgi_app, app.wsgi_app  # without the WSGI fast path
    try:
        slow = post(client, "/predict", body)
    finally:
        app.wsgi_app = middleware
    assert fast.status_code == slow.status_code
    assert fast.get_data() == slow.get_data()
    assert fast.headers["Content-Type"] == slow.headers["Content-Type"] == "application/json"


def test_the_fast_path_answers_well_formed_columns_and_leaves_errors_to_flask(app):
    view, calls = app.view_functions["predict.predict"], []
    app.view_functions["predict.predict"] = lambda: calls.append(1) or view()
    client = app.test_client()
    assert post(client, "/predict", GOOD).status_code == 200 and calls == []
    assert post(client, "/predict", body_with(prev_week_sales=[1] * 5)).status_code == 400 and calls == [1]


# ---------------------------------------------------------------- the description


def test_openapi_describes_the_columnar_request_and_answer(client):
    schemas = client.get("/openapi.json").get_json()["components"]["schemas"]
    assert {"$ref": "#/components/schemas/ColumnarRequest"} in schemas["PredictRequest"]["oneOf"]
    assert {"$ref": "#/components/schemas/ColumnarResponse"} in schemas["PredictResponse"]["oneOf"]
    request = schemas["ColumnarRequest"]["properties"]
    assert request["inputs"]["required"] == list(FEATURES)
    assert request["fields"]["items"]["enum"] == list(OUTPUT_COLUMNS)
    assert set(schemas["ColumnarResponse"]["properties"]["outputs"]["properties"]) == {*OUTPUT_COLUMNS, "intervals"}


# ---------------------------------------------------------------- the fast decoder


def _outcome(decode, *args):
    """What a reader makes of a body: its request's fields, or the error it raises."""
    try:
        request = decode(*args)
    except ApiError as err:
        return ("error", err.status, err.message)
    if request is None:
        return None
    return ("ok", request.X.tolist(), request.fields, request.levels)


NUMBERS = st.one_of(st.integers(-5, 10**6), st.floats(-10.0, 1e7, allow_nan=False))
VALUES = st.one_of(
    NUMBERS, NUMBERS, NUMBERS, st.booleans(), st.none(), st.sampled_from(["7", "", [1], {"a": 1}, 10**400, 2**70])
)


@st.composite
def inputs_of_every_shape(draw):
    """Mostly every feature with columns of one length, sometimes a column missing,
    misspelt, longer than the rest, or not a list at all."""
    rows = draw(st.integers(0, 3))
    inputs = {name: draw(st.lists(VALUES, min_size=rows, max_size=rows)) for name in FEATURES}
    change = draw(st.sampled_from(["none"] * 6 + ["drop", "rename", "longer", "not a list", "not an object"]))
    name = draw(st.sampled_from(FEATURES))
    if change == "drop":
        del inputs[name]
    elif change == "rename":
        inputs[name + "s"] = inputs.pop(name)
    elif change == "longer":
        inputs[name].append(1)
    elif change == "not a list":
        inputs[name] = draw(VALUES)
    elif change == "not an object":
        return list(inputs.values())
    return inputs


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    inputs=inputs_of_every_shape(),
    extra=st.dictionaries(
        st.sampled_from(["fields", "levels", "instances", "field"]),
        st.one_of(
            st.none(),
            st.lists(st.sampled_from([*OUTPUT_COLUMNS, "units", 0.8, 0.5, 2, True]), max_size=3),
            st.just("units_sold"),
        ),
        max_size=2,
    ),
)
def test_the_fast_decoder_reads_every_body_as_the_general_path_does(inputs, extra):
    """decode_columnar either declines a body, or makes of it exactly what
    read_columnar makes of the parsed body: the same request or the same error.
    And it declines only what it must: bodies that are not the columnar shape."""
    body = {"inputs": inputs, **extra}
    raw = json.dumps(body).encode()
    fast = _outcome(decode_columnar, raw, 3)
    general = _outcome(read_columnar, load_json(raw), 3)
    if fast is None:
        well_formed = (
            isinstance(inputs, dict)
            and set(inputs) == set(FEATURES)
            and set(extra) <= {"fields", "levels"}
            and all(isinstance(column, list) for column in inputs.values())
            and all(
                type(value) in (int, float) and abs(value) < 1e308 for value in chain.from_iterable(inputs.values())
            )
        )
        assert not well_formed, body
    else:
        assert fast == general


@pytest.mark.parametrize(
    "depth, where, error",
    [
        (1000, "levels", "levels[0] must be a number between 0.5 and 0.99, got a list"),
        (1000, "fields", "fields must be a list of output names"),
        (5000, "levels", "malformed JSON body"),  # past what the parsers take
        (5000, "fields", "malformed JSON body"),
    ],
)
def test_deeply_nested_options_are_a_400(client, depth, where, error):
    deep = "[" * depth + "]" * depth
    body = json.dumps(body_with()).replace('"inputs": {', f'"{where}": {deep}, "inputs": {{', 1).encode()
    response = post(client, "/predict", body)
    assert response.status_code == 400 and response.get_json()["error"].startswith(error)


def test_the_options_read_the_same_both_ways():
    """A number past 64 bits in `levels` is worded as the general path words it."""
    raw = json.dumps({**body_with(), "levels": [99999999999999999999999]}).encode()
    assert _outcome(decode_columnar, raw, 100) == _outcome(read_columnar, load_json(raw), 100)
    assert _outcome(decode_columnar, raw, 100)[2].endswith("got 1e+23")


def test_the_fast_decoder_takes_the_common_body():
    request = decode_columnar(json.dumps({"inputs": columns(ROWS)}).encode(), 100)
    assert request.X.tolist() == [[row[name] for name in FEATURES] for row in ROWS]
    assert request.fields == OUTPUT_COLUMNS and request.levels is None


# ---------------------------------------------------------------- a real gunicorn


@pytest.mark.slow
def test_columnar_json_over_http(published, tmp_path):
    many = [OUTSIDE if i % 100 == 7 else {**INSIDE, "discount_fraction": i % 41 + 0.5} for i in range(1000)]
    with running_service(published, tmp_path) as server:
        for path in ("/predict", "/v1/models/demand:predict"):
            response = server.post(path, json={"inputs": columns(many), "fields": ["units_sold", "extrapolated"]})
            assert response.status_code == 200 and response.headers["Content-Type"] == "application/json"
            outputs = response.json()["outputs"]
            rows = server.post(path, json={"instances": many}).json()["predictions"]
            assert outputs == {name: as_columns(rows)[name] for name in ("units_sold", "extrapolated")}
            assert sum(map(bool, outputs["extrapolated"])) == 10
        bad = server.post("/predict", json=body_with(discount_fraction=[10, 20, 30, 40, 50, 130]))
        assert bad.status_code == 400 and bad.headers["Content-Type"] == "application/json"
        assert bad.json()["error"] == "inputs.discount_fraction[5] must be <= 100 percent, got 130"
        assert server.metric('demand_rows_predicted_total{protocol="json"}') >= 4000


def test_the_api_description_lists_the_keys_a_columnar_body_takes():
    from service.columnar import REQUEST_KEYS
    from service.openapi import SCHEMAS

    schema = SCHEMAS["ColumnarRequest"]
    assert tuple(schema["properties"]) == REQUEST_KEYS and schema["additionalProperties"] is False
