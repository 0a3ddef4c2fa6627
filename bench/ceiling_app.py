"""Two ceilings for /predict, each a Flask POST endpoint served under the same
gunicorn config as the service:

- create_app(): reads the body and returns a constant JSON answer, the cost
  of HTTP, gunicorn and Flask alone;
- create_model_app(): reads the body, then runs the served model (the
  champion in DEMAND_MODEL_DIR, through ONNX Runtime as the service runs it)
  on 1000 fixed rows before the same constant answer: what the cores can do
  at 1000 rows per request before any JSON is read or written.
"""

import os

import numpy as np
from flask import Flask, Response, request

ANSWER = b'{"model_version":"v0","interval_level":0.9,"predictions":[{"units_sold":1.0,"units_sold_normalized":0.5,"interval":[0.5,1.5],"extrapolated":[]}]}'
MODEL_ROWS = 1000


def create_app(work=None):
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        request.get_data(cache=False)
        if work is not None:
            work()
        return Response(ANSWER, mimetype="application/json")

    return app


def create_model_app():
    from pipeline.bundle import Bundle
    from pipeline.registry import Registry
    from service.config import Settings

    settings = Settings.from_env()
    bundle = Bundle.load(Registry(os.environ["DEMAND_MODEL_DIR"]), threads=settings.threads_per_session())
    rows = np.tile(np.array([[30000, 10, 3]], dtype=np.float32), (MODEL_ROWS, 1))
    return create_app(work=lambda: bundle.run(rows))
