#!/usr/bin/env bash
# The GPU path, proven on a GPU machine in ONE remote run:
# ONNX Runtime's CUDA provider in the service, and training where the GPU pays.
#
#   bash bench/gpu_check.sh           the whole check; results under $OUT (8 files at most)
#   bash bench/gpu_check.sh --parts   only say which onnxruntime-gpu wheel parts this machine holds
#
# Before it: `bash bench/gpu_prepare.sh` here, then the remote runs it prints
# (each carries one part; the last one runs this). On a machine without a GPU
# this says so and exits 0 at once, before anything is joined, installed,
# generated or trained.
#
# What it does there, starting no new work GPU_CHECK_SECONDS (default 540) after
# it starts, so that the call ends inside its 10 minutes:
#   1. joins the wheel parts (.gpu/partN), installs onnxruntime-gpu and the small
#      wheels (.gpu/wheels) with pip --no-deps --target into a scratch folder put
#      first on PYTHONPATH, and points the loader at the image's CUDA 13 and cuDNN 9
#      libraries (the nvidia-* packages beside torch);
#   2. trains the model to serve on data/demand.csv with --device cuda, and
#      meanwhile generates 1M and 10M rows with `demand data generate`;
#   3. bench/gpu_check.py service: `demand serve` with DEMAND_REQUIRE_GPU=1, /readyz
#      and /metrics on CUDA, tritonclient binary inference against the CPU
#      provider (1e-5), rows/s per request over HTTP, CPU service against CUDA;
#   4. bench/gpu_check.py ort: rows/s of direct ONNX Runtime runs at 10k, 100k, 1M rows;
#   5. bench/gpu_check.py epochs: seconds per epoch of the chapter and auto
#      presets on 1M and 10M rows, CPU (all cores) against CUDA;
#   6. `demand train` end to end on 1M rows, the provider-sensitive tests, then
#      `demand train` on 10M rows, while time is left;
#   7. summary.txt. Exit status: 0 when every check passed, 3 when one failed
#      (the figures are there all the same), 1 when the machine could not be set up.
#
# GPU_CHECK_REHEARSE=1 runs every step but the install on this machine's own
# Python, with the GPU side on the CPU and small data (tests/test_gpu_check.py):
# its figures mean nothing, it proves the script still runs.
set -uo pipefail  # no -e: a failed phase must not cost the others' figures (each file says what failed)
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-/tmp/gpu-check-out}
PARTS=${GPU_PARTS_DIR:-.gpu}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
REHEARSE=${GPU_CHECK_REHEARSE:-0}
mkdir -p "$OUT"
source bench/gpu_parts.sh

if [ "${1:-}" = --parts ]; then
  # The calls that only bring a part: a missing earlier part means the machine
  # went back between calls (everything must be sent again), so say which.
  gpu_parts_status "$PARTS"
  exit 0
fi

# The image's python3 is the one with torch; elsewhere whatever python3 there is.
PY=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3

no_gpu() {
  echo "no GPU: $1; nothing joined, installed, generated or trained" | tee "$OUT/summary.txt"
  exit 0
}
if [ "$REHEARSE" != 1 ]; then
  command -v nvidia-smi > /dev/null 2>&1 || no_gpu "nvidia-smi is not installed"
  nvidia-smi -L > /dev/null 2>&1 || no_gpu "nvidia-smi finds no device"
  "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' > /dev/null 2>&1 \
    || no_gpu "torch ($PY) sees no CUDA device"
fi

# Sizes: the real ones, or a rehearsal's.
if [ "$REHEARSE" = 1 ]; then
  SERIES=30 SHARDS=10 SERVE_EPOCHS=10 ROWS=1000,5000 CHAPTER_K=2 AUTO_K=3 CLI_EPOCHS=1 CLI_PRESETS=chapter
else
  SERIES=10000 SHARDS=10 SERVE_EPOCHS=${SERVE_EPOCHS:-100} ROWS=10000,100000,1000000 CHAPTER_K=5 AUTO_K=40
  CLI_EPOCHS=5 CLI_PRESETS=chapter,auto
fi
WEEKS=100
SMALL=$((SERIES * WEEKS)) LARGE=$((SERIES * WEEKS * SHARDS))
label() { if [ "$1" -ge 1000000 ]; then echo "$(($1 / 1000000))M"; else echo "$(($1 / 1000))k"; fi; }

START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-540}))
exec > >(tee "$OUT/log.txt") 2>&1  # everything printed also comes back as a file
TEE=$!
# tee must have written the last lines before the call collects $OUT.
finish() { local status=$?; exec 1>&- 2>&-; wait "$TEE" 2> /dev/null; exit "$status"; }
trap finish EXIT
phase() { echo; echo "=== $(($(date +%s) - START)) s: $*"; }
setup_failed() {
  echo "GPU check could not start: $*" | tee "$OUT/summary.txt"
  exit 1
}

phase "machine"
[ "$REHEARSE" = 1 ] && echo "REHEARSAL: the GPU side runs on the CPU, on small data; the figures mean nothing"
nvidia-smi -L 2> /dev/null
echo "$(nproc) cores; $PY"
rm -rf "$WORK"
mkdir -p "$WORK/site" "$WORK/data"
export PYTHONPATH="$WORK/site:$REPO" PYTHONUNBUFFERED=1

if [ "$REHEARSE" != 1 ]; then
  phase "onnxruntime-gpu from the carried parts"
  WHEEL=$(gpu_join "$PARTS" "$WORK") || setup_failed "the wheel parts under $PARTS are incomplete (see above)"
  # --no-deps: numpy, protobuf and the rest are the image's; one version of each wheel.
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
      "$WHEEL" "$PARTS"/wheels/*.whl || setup_failed "pip could not install the carried wheels"
  rm -f "$WHEEL"
fi

# onnxruntime.preload_dlls looks for the NVIDIA wheels beside onnxruntime itself,
# which here is the scratch folder: they are beside torch instead, in the
# nvidia/* packages of the image's site-packages. The loader finds them (and
# cuDNN the engine libraries it opens later) through LD_LIBRARY_PATH.
CUDA_LIBS=$("$PY" - << 'EOF'
import pathlib, site
dirs = []
for packages in site.getsitepackages():
    root = pathlib.Path(packages) / "nvidia"
    for lib in sorted(root.glob("*/lib/lib*.so*")) + sorted(root.glob("*/*/lib/lib*.so*")):
        if str(lib.parent) not in dirs:
            dirs.append(str(lib.parent))
print(":".join(dirs))
EOF
)
[ -d /usr/local/nvidia/lib64 ] && CUDA_LIBS="$CUDA_LIBS${CUDA_LIBS:+:}/usr/local/nvidia/lib64"
export LD_LIBRARY_PATH="$CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcufft.so.12 libcudnn.so.9; do
  found=$(IFS=:; for d in $LD_LIBRARY_PATH; do [ -e "$d/$lib" ] && echo "$d/$lib" && break; done)
  echo "  $lib: ${found:-NOT FOUND}"
done
"$PY" -c "import onnxruntime as ort; print('onnxruntime', ort.__version__, ort.__file__, ort.get_available_providers())" \
  || setup_failed "the carried onnxruntime-gpu does not import"
"$PY" bench/gpu_check.py env --out "$OUT/env.json"

phase "data: $(label $SMALL) and $(label $LARGE) rows (in the background); the model to serve, trained on CUDA"
# $SHARDS generator runs of $SMALL rows side by side (one run is single-threaded
# and holds its rows in memory); the large set is all of them with their series
# renamed apart ($((SERIES * SHARDS)) series x $WEEKS weeks), the small one the first.
(
  for k in $(seq 1 $SHARDS); do
    ( "$PY" -m pipeline data generate --seed "$k" --series $SERIES --weeks $WEEKS -o "$WORK/data/shard$k.csv" > /dev/null \
        && tail -n +2 "$WORK/data/shard$k.csv" | sed "s/\$/-g$k/" > "$WORK/data/body$k.csv" ) &
  done
  wait
  { head -n 1 "$WORK/data/shard1.csv"; for k in $(seq 1 $SHARDS); do cat "$WORK/data/body$k.csv"; done; } > "$WORK/data/large.csv"
  mv "$WORK/data/shard1.csv" "$WORK/data/small.csv"
  rm -f "$WORK"/data/shard*.csv "$WORK"/data/body*.csv
  wc -l "$WORK/data/small.csv" "$WORK/data/large.csv"
) > "$WORK/generate.log" 2>&1 &
GENERATE=$!
GPU=cuda
[ "$REHEARSE" = 1 ] && GPU=cpu
"$PY" -m pipeline train --data data/demand.csv --device $GPU --epochs "$SERVE_EPOCHS" \
    --model-dir "$WORK/models" --promote --json > "$WORK/serve-model.json" 2> "$WORK/serve-model.log" \
  || { tail -n 20 "$WORK/serve-model.log"; setup_failed "training the model to serve on CUDA failed"; }
"$PY" -c "import json, sys; d = json.load(open(sys.argv[1])); print('model to serve:', d['version'], 'trained on', d['device'], 'in', d['training']['seconds'], 's')" \
    "$WORK/serve-model.json"
wait "$GENERATE"  # nothing timed below may share the CPU with the generator
cat "$WORK/generate.log"

phase "service on CUDA: /readyz, metrics, tritonclient against the CPU provider, rows/s over HTTP"
"$PY" bench/gpu_check.py service --models "$WORK/models" --work "$WORK" --rows $ROWS --deadline "$DEADLINE" \
    --out "$OUT/service.json"

phase "ONNX Runtime direct: rows/s, CPU provider against CUDA"
"$PY" bench/gpu_check.py ort --models "$WORK/models" --rows $ROWS --deadline "$DEADLINE" --out "$OUT/ort.json"

SMALL_DATA="$(label $SMALL)=$WORK/data/small.csv" LARGE_DATA="$(label $LARGE)=$WORK/data/large.csv"
phase "training: seconds per epoch, chapter and auto presets, CPU against CUDA"
"$PY" bench/gpu_check.py epochs --data "$SMALL_DATA" --data "$LARGE_DATA" --chapter-epochs $CHAPTER_K \
    --auto-epochs $AUTO_K --deadline "$DEADLINE" --reserve 200 --out "$OUT/train_epochs.json"

phase "demand train end to end on $(label $SMALL) rows"
"$PY" bench/gpu_check.py cli --data "$SMALL_DATA" --presets $CLI_PRESETS --epochs $CLI_EPOCHS --work "$WORK" \
    --deadline "$DEADLINE" --reserve 150 --out "$OUT/train_cli.json"

if [ "$REHEARSE" != 1 ]; then
  phase "the provider-sensitive tests, on this GPU host"
  left=$((DEADLINE - $(date +%s) - 90))
  if [ "$left" -gt 60 ]; then
    # Not the OpenAPI fuzzing test: schemathesis is not carried.
    timeout "$((left < 180 ? left : 180))" "$PY" -m pytest -q -p no:cacheprovider -rfE \
        tests/test_api.py tests/test_e2e.py tests/test_forecast.py tests/test_train.py \
        tests/test_deploy.py::test_a_cuda_session_preloads_the_cuda_libraries_first \
        -k "not openapi_fuzzing" > "$OUT/tests.txt" 2>&1
    echo "pytest exit status $?" >> "$OUT/tests.txt"
    tail -n 15 "$OUT/tests.txt"
  else
    echo "skipped: out of time"
  fi
fi

phase "demand train end to end on $(label $LARGE) rows"
"$PY" bench/gpu_check.py cli --data "$LARGE_DATA" --presets $CLI_PRESETS --epochs $CLI_EPOCHS --work "$WORK" \
    --deadline "$DEADLINE" --reserve 15 --out "$OUT/train_cli.json"

phase "summary"
"$PY" bench/gpu_check.py summary --out-dir "$OUT"
