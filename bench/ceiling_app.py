"""The ceiling for /predict: a Flask POST endpoint that reads the same body and
returns a constant JSON answer, served under the same gunicorn config."""
from flask import Flask, Response, request

ANSWER = b'{"model_version":"v0","interval_level":0.9,"predictions":[{"units_sold":1.0,"units_sold_normalized":0.5,"interval":[0.5,1.5],"extrapolated":[]}]}'


def create_app():
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        request.get_data(cache=False)
        return Response(ANSWER, mimetype="application/json")

    return app
