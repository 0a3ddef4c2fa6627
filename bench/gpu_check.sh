#!/usr/bin/env bash
# The CUDA training path, on a machine with an NVIDIA GPU and PyTorch installed.
# Usage: OUT=/some/folder bash bench/gpu_check.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ort', onnxruntime.__version__)"
for run in "auto auto" "auto cuda" "chapter cuda" "auto cpu"; do
  set -- $run
  /usr/bin/time -f "$1 preset on $2: %e s wall" python3 -m pipeline train --preset "$1" --device "$2" \
      --model-dir /tmp/gpu-models --promote --json > "$OUT/train-$1-$2.json" 2> "$OUT/train-$1-$2.log"
  tail -n 3 "$OUT/train-$1-$2.log"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(' ', d['version'], d['device'], 'WAPE', round(d['metrics']['holdout']['model']['wape'],2), 'train s', d['training']['seconds'])" "$OUT/train-$1-$2.json"
done
# A challenger trained on the GPU against the champion, through the retrain gate.
python3 -m pipeline retrain --data data/demand.csv --device cuda --model-dir /tmp/gpu-models --json > "$OUT/retrain-cuda.json" 2> "$OUT/retrain-cuda.log"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('retrain on', d.get('device'), d['decision'], d['reason'])" "$OUT/retrain-cuda.json"
python3 -m pipeline models list --model-dir /tmp/gpu-models
python3 -m pytest -q -p no:cacheprovider tests/test_train.py tests/test_backprop.py tests/test_export.py tests/test_behaviour.py tests/test_registry.py 2>&1 | tail -n 8
