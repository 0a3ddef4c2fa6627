"""The HTTP API through Flask's test client: every route and every error code."""

import json
import shutil

import numpy as np
import pytest

from pipeline.registry import Registry
from service.app import create_app

from .conftest import INSTANCE


def post(client, path, body, **kwargs):
    return client.post(
        path,
        data=json.dumps(body) if not isinstance(body, (bytes, str)) else body,
        content_type=kwargs.pop("content_type", "application/json"),
        **kwargs,
    )


@pytest.mark.parametrize("path", ["/predict", "/v1/models/demand:predict"])
def test_predict_instances(client, path):
    typical = {
        "prev_week_sales": 20000,
        "discount_fraction": 40,
        "weeks_to_next_holidays": 3,
    }  # inside the training range
    response = post(client, path, {"instances": [typical, {**typical, "discount_fraction": 0}]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["model_version"] == "v1" and body["interval_level"] == 0.9
    first, second = body["predictions"]
    assert first["interval"][0] < first["units_sold"] < first["interval"][1]
    assert first["extrapolated"] == [] and 0 <= first["units_sold_normalized"] <= 1.5
    assert first["units_sold"] > second["units_sold"]  # the discount helps


def test_predict_accepts_a_single_object_and_flags_extrapolation(client):
    response = post(client, "/predict", {**INSTANCE, "prev_week_sales": 5_000_000, "weeks_to_next_holidays": 500})
    assert response.status_code == 200
    (prediction,) = response.get_json()["predictions"]
    assert prediction["extrapolated"] == ["prev_week_sales", "weeks_to_next_holidays"]


def test_an_absurd_input_is_held_at_its_bound_and_still_gets_a_forecast(client, published):
    """GELU units extrapolate about linearly: a feature far past the training
    range is held EXTRAPOLATION_RANGES widths past it, so the forecast stays a number."""
    from pipeline.bundle import Bundle
    from pipeline.schema import FLOAT32_MAX

    stats = Bundle.load(Registry(published)).stats
    (_, high) = stats.x_bounds
    at_bound = float(np.expm1(high[2]) if stats.transform == "log1p" else high[2])
    rows = [{**INSTANCE, "weeks_to_next_holidays": weeks} for weeks in (FLOAT32_MAX, 1e12, at_bound)]
    absurd, huge, bound = post(client, "/predict", {"instances": rows}).get_json()["predictions"]
    assert "weeks_to_next_holidays" in absurd["extrapolated"]
    assert np.isfinite(absurd["units_sold"]) and np.isfinite(absurd["interval"]).all()
    assert absurd["units_sold"] == huge["units_sold"] == pytest.approx(bound["units_sold"], rel=1e-5)


def test_predictions_match_offline_scoring(client, published):
    from pipeline.bundle import Bundle

    bundle = Bundle.load(Registry(published))
    expected = bundle.forecast(np.array([[76440, 63, 2]]))["units_sold"][0]
    assert post(client, "/predict", INSTANCE).get_json()["predictions"][0]["units_sold"] == pytest.approx(
        float(expected)
    )


@pytest.mark.parametrize(
    "body, message",
    [
        ('{"instances": [', "malformed JSON"),
        ([1, 2], "body must be a JSON object"),
        ({"instances": {}}, "'instances' must be a list"),
        ({"instances": []}, "'instances' is empty"),
        ({"instances": [7]}, "instances[0] must be an object"),
        (
            {"instances": [INSTANCE, {"discount_fraction": 5, "weeks_to_next_holidays": 1}]},
            "instances[1].prev_week_sales is missing",
        ),
        (
            {"instances": [{**INSTANCE, "prev_week_sales": "many"}]},
            "instances[0].prev_week_sales must be a number, got the text 'many'",
        ),
        ({"instances": [{**INSTANCE, "prev_week_sales": True}]}, "must be a number, got a boolean"),
        ({"instances": [{**INSTANCE, "prev_week_sales": None}]}, "must be a number, got null"),
        (
            {"instances": [{**INSTANCE, "prev_week_sales": -1}]},
            "instances[0].prev_week_sales must be >= 0 units, got -1",
        ),
        (
            {"instances": [{**INSTANCE, "discount_fraction": 101}]},
            "instances[0].discount_fraction must be <= 100 percent, got 101",
        ),
        # Past the limit by less than a short number shows: both in full, so that the reason shows.
        (
            {"instances": [{**INSTANCE, "discount_fraction": 100.00000000000001}]},
            "instances[0].discount_fraction must be <= 100.0 percent, got 100.00000000000001",
        ),
        ({"instances": [{**INSTANCE, "weeks_to_next_holidays": -0.5}]}, "weeks_to_next_holidays must be >= 0"),
        (
            '{"instances": [{"prev_week_sales": NaN, "discount_fraction": 1, "weeks_to_next_holidays": 1}]}',
            "instances[0].prev_week_sales must be a finite number, got NaN",
        ),
        (
            '{"prev_week_sales": 1, "discount_fraction": Infinity, "weeks_to_next_holidays": 1}',
            "discount_fraction must be a finite number, got infinity",
        ),
        (
            '{"prev_week_sales": 1e999, "discount_fraction": 1, "weeks_to_next_holidays": 1}',
            "prev_week_sales must be a finite number",
        ),
        (
            '{"prev_week_sales": 1e300, "discount_fraction": 1, "weeks_to_next_holidays": 1}',
            "prev_week_sales must be <= 3.40282e+38 units",
        ),
        ('{"prev_week_sales": 1' + "0" * 400 + ', "discount_fraction": 1, "weeks_to_next_holidays": 1}', "too large"),
        # Past Python's 4300 digits: still named by the field.
        (
            '{"prev_week_sales": 1' + "0" * 5000 + ', "discount_fraction": 1, "weeks_to_next_holidays": 1}',
            "prev_week_sales must be a finite number",
        ),
        (
            '{"prev_week_sales": 1, "discount_fraction": -1' + "0" * 5000 + ', "weeks_to_next_holidays": 1}',
            "discount_fraction must be a finite number, got -infinity",
        ),
        # Only UTF-8 text: json.loads, which reads the literals above, would also take these.
        ('{"instances": [{"prev_week_sales": 1}]}'.encode("utf-16"), "malformed JSON body"),
        (b"\xef\xbb\xbf" + json.dumps(INSTANCE).encode(), "malformed JSON body"),
    ],
)
def test_bad_requests_get_400_naming_the_field(client, body, message):
    response = post(client, "/predict", body)
    assert response.status_code == 400
    assert response.is_json and message in response.get_json()["error"]


@pytest.mark.parametrize(
    "path, body, where",
    [
        (
            "/forecast",
            {
                "series": [
                    {
                        "id": "\ud800",
                        "prev_week_sales": 1000,
                        "weeks": [{"discount_fraction": 1, "weeks_to_next_holidays": 2}],
                    }
                ]
            },
            "series[0].id",
        ),
        (
            "/v2/models/demand/infer",
            {
                "id": "\udfff",
                "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1000, 1, 2]}],
            },
            "id",
        ),
    ],
)
def test_a_string_that_is_not_text_is_a_400_naming_it(client, path, body, where):
    """An unpaired surrogate escape is valid JSON syntax but not text: an answer echoing it could not be written."""
    response = post(client, path, json.dumps(body))  # json.dumps writes the escape as it is
    assert response.status_code == 400
    assert response.get_json()["error"] == (
        f"malformed JSON body: {where} holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text"
    )


@pytest.mark.parametrize("coding", ["identity", "IDENTITY", " Identity "])
def test_the_identity_coding_is_accepted_in_any_case(client, coding):
    response = post(client, "/predict", INSTANCE, headers={"Content-Encoding": coding})
    assert response.status_code == 200, response.get_json()


def test_a_misspelt_option_beside_instances_is_a_400(client):
    response = post(client, "/predict", {"instances": [INSTANCE], "level": [0.5]})
    assert response.status_code == 400
    assert response.get_json()["error"] == "'level' is not a key of a body with instances; it takes instances, levels"


def test_one_instance_takes_levels_too(client):
    answer = post(client, "/predict", {**INSTANCE, "levels": [0.8]}).get_json()
    rows = post(client, "/predict", {"instances": [INSTANCE], "levels": [0.8]}).get_json()
    assert answer == rows and set(answer["predictions"][0]["intervals"]) == {"0.8"}


def test_the_api_description_lists_the_keys_of_each_body():
    from service.inputs import ROW_REQUEST_KEYS
    from service.openapi import SCHEMAS
    from service.plans import PLAN_KEYS, SERIES_KEYS

    rows = SCHEMAS["PredictRequest"]["oneOf"][0]
    assert tuple(rows["properties"]) == ROW_REQUEST_KEYS and rows["additionalProperties"] is False
    plan = SCHEMAS["ForecastRequest"]
    assert tuple(plan["properties"]) == PLAN_KEYS and plan["additionalProperties"] is False
    series = SCHEMAS["SeriesPlan"]
    assert tuple(series["properties"]) == SERIES_KEYS and series["additionalProperties"] is False


def test_wrong_content_type_is_415(client):
    response = post(client, "/predict", json.dumps(INSTANCE), content_type="text/plain")
    assert response.status_code == 415 and "application/json" in response.get_json()["error"]


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nothing-here").status_code == 404
    assert client.get("/nothing-here").get_json()["error"].startswith("not found")
    response = client.get("/predict")
    assert response.status_code == 405 and "POST" in response.headers["Allow"] and "error" in response.get_json()


def test_body_cap_and_row_cap_are_413(make_app):
    app = make_app(MAX_BODY_BYTES=2000, MAX_ROWS=3)
    client = app.test_client()
    big = post(client, "/predict", {"instances": [INSTANCE] * 40})
    assert big.status_code == 413 and "DEMAND_MAX_BODY_BYTES" in big.get_json()["error"]
    many = post(client, "/predict", {"instances": [INSTANCE] * 4})
    assert many.status_code == 413 and "DEMAND_MAX_ROWS" in many.get_json()["error"]


def test_intervals_count_against_the_row_cap(make_app):
    """Each level adds an interval to every row's answer: rows x levels may be at
    most twice DEMAND_MAX_ROWS (the default two levels for as many rows as the cap)."""
    client = make_app(MAX_ROWS=4).test_client()
    four = {"instances": [INSTANCE] * 4}
    assert post(client, "/predict", {**four, "levels": [0.8, 0.95]}).status_code == 200
    for body in (
        {**four, "levels": [0.8, 0.9, 0.95]},
        {"inputs": {name: [value] * 3 for name, value in INSTANCE.items()}, "levels": [0.5, 0.6, 0.7]},
    ):
        response = post(client, "/predict", body)
        assert response.status_code == 413
        assert response.get_json()["error"].endswith(
            "intervals, more than the limit of 8 per request "
            "(2 x DEMAND_MAX_ROWS): ask for fewer levels, or send fewer rows"
        )
    assert post(client, "/predict", four).status_code == 200  # without levels, no intervals to count


def test_tokens(make_app):
    app = make_app(API_TOKEN="s3cret", ADMIN_TOKEN="adm1n")
    client = app.test_client()
    missing = post(client, "/predict", INSTANCE)
    assert missing.status_code == 401 and "WWW-Authenticate" in missing.headers
    assert post(client, "/predict", INSTANCE, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert post(client, "/predict", INSTANCE, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200  # health stays open
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"Authorization": "Bearer s3cret"}).status_code == 403
    reloaded = client.post("/admin/reload", headers={"Authorization": "Bearer adm1n"})
    assert reloaded.status_code == 200 and reloaded.get_json()["model_version"] == "v1"


def test_the_pages_sign_in_cookie_is_not_the_token_and_opens_no_admin_route(make_app):
    app = make_app(API_TOKEN="s3cret", ADMIN_TOKEN="adm1n")
    client = app.test_client()
    assert client.post("/ui/sign-in", data={"token": "wrong"}).status_code == 403
    signed = client.post("/ui/sign-in", data={"token": "s3cret"})
    assert signed.status_code == 303
    cookie = client.get_cookie("demand_token")
    assert cookie is not None and "s3cret" not in cookie.value  # the browser never holds the token
    assert client.get("/ui/data/overview").status_code == 200
    plan = {"series": [{"id": "a", "prev_week_sales": 100, "weeks": [{"discount_fraction": 10,
                                                                       "weeks_to_next_holidays": 2}]}]}  # fmt: skip
    assert client.post("/forecast", json=plan).status_code == 200
    assert client.post("/admin/reload").status_code == 401  # admin takes its own token, never the cookie
    client.set_cookie("demand_token", "s3cret")  # the token itself is not a sign-in
    assert client.get("/ui/data/overview").status_code == 403
    client.delete_cookie("demand_token")
    assert client.get("/ui/data/overview").status_code == 401


def test_admin_routes_do_not_exist_without_an_admin_token(client):
    assert client.post("/admin/reload").status_code == 404
    assert "/admin/reload" not in client.get("/openapi.json").get_json()["paths"]


def test_not_ready_without_a_model(tmp_path):
    app = create_app({"MODEL_DIR": str(tmp_path / "empty"), "RELOAD_INTERVAL": 0})
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "no champion" in ready.get_json()["error"]
    assert post(client, "/predict", INSTANCE).status_code == 503
    assert client.get("/v2/health/ready").status_code == 503


def test_health_reports_the_provider_really_used(client, expected_provider):
    body = client.get("/readyz").get_json()
    assert body["ready"] is True and body["execution_provider"] == expected_provider
    assert client.get("/healthz").get_json()["model_version"] == "v1"


def test_require_gpu_keeps_a_cpu_worker_unready(make_app):
    app = make_app(REQUIRE_GPU=True, PROVIDER="cpu")  # a CPU worker on any host, a GPU one too
    response = app.test_client().get("/readyz")
    assert response.status_code == 503 and "DEMAND_REQUIRE_GPU" in response.get_json()["error"]


def metric_value(client, series):
    """The value of one exact series (name with labels) in /metrics, 0 if absent."""
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_what_happened(client, expected_provider):
    series = [
        'demand_http_requests_total{method="POST",route="/predict",status="200"}',
        'demand_http_request_duration_seconds_count{route="/predict",status="200"}',
        'demand_rows_predicted_total{protocol="json"}',
        "demand_extrapolated_rows_total",
    ]
    before = [metric_value(client, s) for s in series]
    answer = post(client, "/predict", {"instances": [INSTANCE, {**INSTANCE, "prev_week_sales": 9e6}]}).get_json()
    outside = sum(1 for p in answer["predictions"] if p["extrapolated"])
    after = [metric_value(client, s) for s in series]
    assert outside >= 1 and [b - a for a, b in zip(before, after)] == [1, 1, 2, outside]
    assert metric_value(client, f'demand_model_info{{provider="{expected_provider}",version="v1"}}') == 1.0


def test_openapi_describes_every_route(app, client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {path for path in spec["paths"]}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<path:name>", "{name}").replace("<name>", "{name}").replace("<version>", "{version}")
        assert path in documented, f"{path} is not in the OpenAPI document"


def test_hot_swap_and_a_bad_champion_is_refused(published, tmp_path, own_registry):
    root = own_registry
    app = create_app({"MODEL_DIR": str(root), "RELOAD_INTERVAL": 0})
    holder = app.config["MODEL_HOLDER"]
    client = app.test_client()
    registry = Registry(root)
    # A copy of v1 published as v2 (a new, good version) becomes champion: swapped in.
    shutil.copytree(root / "versions" / "v1", root / "versions" / "v2")
    with registry.writer() as writer:
        writer.set_champion("v2")
    assert holder.refresh() == "v2"
    assert post(client, "/predict", INSTANCE).get_json()["model_version"] == "v2"
    # A broken v3: refused, counted, v2 keeps serving and readiness holds.
    failures = metric_value(client, "demand_model_reload_failures_total")
    shutil.copytree(root / "versions" / "v1", root / "versions" / "v3")
    (root / "versions" / "v3" / "model.onnx").write_bytes(b"not an onnx file")
    with registry.writer() as writer:
        writer.set_champion("v3")
    assert holder.refresh() == "v2"
    assert "v3" in holder.refused
    assert client.get("/readyz").status_code == 200
    assert post(client, "/predict", INSTANCE).get_json()["model_version"] == "v2"
    assert metric_value(client, "demand_model_reload_failures_total") == failures + 1


GOOD = {"instances": [INSTANCE, {**INSTANCE, "prev_week_sales": 9e6}]}
JSON = "application/json"


@pytest.mark.parametrize(
    "body, content_type, headers",
    [
        pytest.param(GOOD, JSON, {"Authorization": "Bearer s3cret"}, id="good"),
        pytest.param(GOOD, JSON, {}, id="no token"),
        pytest.param(GOOD, JSON, {"Authorization": "Bearer wrong"}, id="wrong token"),
        pytest.param(GOOD, JSON, {"Authorization": "Basic s3cret"}, id="wrong scheme"),
        pytest.param(GOOD, "text/plain", {"Authorization": "Bearer s3cret"}, id="content type"),
        pytest.param(GOOD, JSON, {"Authorization": "Bearer s3cret", "Content-Encoding": "gzip"}, id="encoding"),
        pytest.param(b"{", JSON, {"Authorization": "Bearer s3cret"}, id="malformed JSON"),
        pytest.param(
            {"instances": [{**INSTANCE, "discount_fraction": 130}]},
            JSON,
            {"Authorization": "Bearer s3cret"},
            id="outside the domain",
        ),
        pytest.param({"instances": [INSTANCE] * 4}, JSON, {"Authorization": "Bearer s3cret"}, id="too many rows"),
    ],
)
def test_fast_path_and_flask_view_give_the_same_answer(body, content_type, headers, make_app):
    app = make_app(API_TOKEN="s3cret", MAX_ROWS=3)
    client = app.test_client()
    data = body if isinstance(body, bytes) else json.dumps(body)

    def ask():
        return client.post("/predict", data=data, content_type=content_type, headers=headers)

    fast = ask()
    # Without the WSGI fast path, the Flask view answers the same request.
    app.wsgi_app, middleware = app.wsgi_app.wsgi_app, app.wsgi_app
    try:
        slow = ask()
    finally:
        app.wsgi_app = middleware
    assert fast.status_code == slow.status_code
    assert fast.get_json() == slow.get_json()
    assert fast.headers["Content-Type"] == slow.headers["Content-Type"] == "application/json"
    assert fast.headers.get("WWW-Authenticate") == slow.headers.get("WWW-Authenticate")


def test_fast_path_counts_requests_and_leaves_errors_to_flask(client):
    def count():
        text = client.get("/metrics").get_data(as_text=True)
        line = [
            l
            for l in text.splitlines()
            if l.startswith('demand_http_requests_total{method="POST",route="/v1/models/demand:predict",status="200"}')
        ]
        return float(line[0].rsplit(" ", 1)[1]) if line else 0.0

    before = count()
    assert post(client, "/v1/models/demand:predict", INSTANCE).status_code == 200
    assert count() == before + 1
    bad = post(client, "/v1/models/demand:predict", {**INSTANCE, "discount_fraction": "x"})
    assert bad.status_code == 400 and bad.get_json()["error"] == "discount_fraction must be a number, got the text 'x'"


@pytest.mark.slow
def test_the_service_never_imports_torch(published):
    import subprocess
    import sys

    from .conftest import ROOT

    code = (
        "import sys; from service.app import create_app; "
        f"app = create_app({{'MODEL_DIR': {str(published)!r}, 'RELOAD_INTERVAL': 0}}); "
        "app.test_client().post('/predict', json={'prev_week_sales': 1, 'discount_fraction': 2, 'weeks_to_next_holidays': 3}); "
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


V2 = "/v2/models/demand/infer"


def v2_body(data, datatype="FP32", rows=2):
    return {"inputs": [{"name": "features", "datatype": datatype, "shape": [rows, 3], "data": data}]}


@pytest.mark.parametrize(
    "body, message",
    [
        (
            v2_body([[76440, 63], [2, 20000, 0, 3]]),
            "must be flat (6 numbers) or nested as its shape (2 lists of 3 numbers)",
        ),
        (v2_body([[76440, 63, 2, 20000], 0, 3]), "must be flat (6 numbers) or nested as its shape"),
        (v2_body([76440, 63, 2, 20000, [0], 3]), "data must be numbers, got a list"),
        (v2_body([76440, 63, 2, 20000, 0, 1.5], "INT32"), "is INT32: its data must be whole numbers, got 1.5"),
    ],
)
def test_v2_data_must_match_its_shape_and_type(client, body, message):
    response = post(client, V2, body)
    assert response.status_code == 400 and message in response.get_json()["error"]


def test_v2_data_nested_as_its_shape_or_flat_read_the_same(client):
    flat = post(client, V2, v2_body([76440, 63, 2, 20000, 0, 3], "INT64")).get_json()["outputs"]
    assert post(client, V2, v2_body([76440.0, 63.0, 2, 20000, 0, 3], "INT64")).get_json()["outputs"] == flat
    nested = post(client, V2, v2_body([[76440, 63, 2], [20000, 0, 3]], "INT64")).get_json()["outputs"]
    assert flat == nested and len(flat[0]["data"]) == 2


@pytest.mark.parametrize("length", ["+40", " 40 ", "4_0", "４０"])
def test_the_binary_header_length_is_plain_digits(client, length):
    response = client.post(
        V2,
        data=b"{}" + b"\0" * 40,
        content_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": length},
    )
    assert response.status_code == 400 and "must be an integer" in response.get_json()["error"]


def test_every_setting_is_listed_in_the_docs_and_every_listed_one_is_a_setting():
    """One home for the settings (service/config.py); docs/serving.md's table must name exactly its fields."""
    import re
    from dataclasses import fields
    from pathlib import Path

    from service.config import Settings

    doc = (Path(__file__).resolve().parent.parent / "docs" / "serving.md").read_text()
    table = doc[doc.index("### Settings") : doc.index("### Security and limits")]
    listed = set(re.findall(r"`(DEMAND_[A-Z_]+)`", table))
    assert listed == {f"DEMAND_{f.name.upper()}" for f in fields(Settings)}


def test_a_plan_horizon_the_forecast_log_cannot_hold_is_refused_at_start():
    from pipeline.schema import RUN_WEEKS
    from service.config import Settings

    assert Settings.from_env({"DEMAND_MAX_HORIZON": str(RUN_WEEKS - 1)}).max_horizon == RUN_WEEKS - 1
    for weeks in (0, RUN_WEEKS):
        with pytest.raises(ValueError, match="DEMAND_MAX_HORIZON must be from 1 to"):
            Settings.from_env({"DEMAND_MAX_HORIZON": str(weeks)})
