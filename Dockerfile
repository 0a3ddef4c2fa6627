# syntax=docker/dockerfile:1
# Two images from one file:
#   docker build --target service -t demand-service .    (Flask + gunicorn + ONNX Runtime, no torch)
#   docker build --target trainer -t demand-trainer .    (the demand CLI with PyTorch)
# CPU-only service image: --build-arg ORT_PACKAGE=onnxruntime

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEMAND_MODEL_DIR=/app/models
RUN groupadd --gid 10001 demand \
    && useradd --uid 10001 --gid demand --home-dir /app --no-create-home --shell /usr/sbin/nologin demand
WORKDIR /app

# Dependencies first: they change far less often than the code.
# The GPU build brings CUDA 13 and cuDNN 9 as NVIDIA's pip wheels (pinned in
# requirements-gpu.txt; ONNX Runtime preloads them), on the same slim base as
# the CPU build: exactly the libraries the CUDA provider loads, about 1.5 GiB
# of wheels, instead of a CUDA base image with the whole toolkit runtime.
FROM base AS service
ARG ORT_PACKAGE=onnxruntime-gpu
ARG ORT_VERSION=1.31.1
COPY deploy/requirements-service.txt deploy/requirements-gpu.txt /tmp/
RUN pip install -r /tmp/requirements-service.txt "${ORT_PACKAGE}==${ORT_VERSION}" \
    && if [ "${ORT_PACKAGE}" = "onnxruntime-gpu" ]; then \
         pip install -r /tmp/requirements-gpu.txt \
         && python -c "import onnxruntime as ort; assert 'CUDAExecutionProvider' in ort.get_available_providers()"; \
       fi
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY service ./service
# --no-deps: the dependencies above are the pinned set (and the chosen ONNX Runtime).
RUN pip install --no-deps . && mkdir -p /app/models && chown demand:demand /app/models
USER 10001:10001
# The container's port is the service's alone (in a pod, the other container is
# its nginx, on a port of its own): the workers spread connections with SO_REUSEPORT.
ENV DEMAND_HOST=0.0.0.0 DEMAND_PORT=8000 DEMAND_REUSE_PORT=1
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('DEMAND_PORT', '8000'), timeout=2)"]
CMD ["demand", "serve"]

FROM base AS trainer
ARG ORT_PACKAGE=onnxruntime-gpu
ARG ORT_VERSION=1.31.1
COPY deploy/requirements-service.txt deploy/requirements-trainer.txt deploy/requirements-dask.txt /tmp/
# torch from PyPI is the CUDA build (with its own CUDA wheels); the build fails if it is not. Dask: the
# image is also a Dask cluster's scheduler and workers (deploy/k8s/dask/).
RUN pip install -r /tmp/requirements-service.txt -r /tmp/requirements-trainer.txt -r /tmp/requirements-dask.txt \
        "${ORT_PACKAGE}==${ORT_VERSION}" \
    && python -c "import sys, torch; sys.exit(torch.version.cuda is None)"
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY service ./service
COPY data ./data
RUN pip install --no-deps . && mkdir -p /app/models && chown -R demand:demand /app/models /app/data
USER 10001:10001
ENV DEMAND_TRAIN_DATA=/app/data/demand.csv DEMAND_RETRAIN_DATA=/app/data
CMD ["demand", "--help"]
