"""Prediction service: Flask under gunicorn, ONNX Runtime only (never torch)."""
