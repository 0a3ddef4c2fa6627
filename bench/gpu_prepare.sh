#!/usr/bin/env bash
# Run HERE (with network access), before bench/gpu_check.sh runs on a GPU machine.
#
# The GPU machine has Python 3.12, torch (CUDA 13), the NVIDIA CUDA 13 and cuDNN 9
# wheels and onnxruntime's CPU build, but can fetch nothing, and one remote run
# carries at most 64 MiB. So this script downloads, for CPython 3.12 on x86-64 Linux:
#   - the onnxruntime-gpu wheel (the version the Dockerfile pins, ~245 MiB), split
#     into parts under 60 MiB, one folder each: .gpu/part1, .gpu/part2, ...
#   - the small wheels the service, the training CLI and the check need that the
#     machine's image lacks (Flask, gunicorn, orjson, croniter, tritonclient and
#     its HTTP stack): .gpu/wheels
# and prints the remote runs to make, back to back, each carrying one folder,
# the last one running the check. Everything is under .gpu/, which git ignores.
#
# Usage: bash bench/gpu_prepare.sh
#   ORT_VERSION=1.31.1  another onnxruntime-gpu version than the Dockerfile's
#   PYTHON=...          the Python whose pip downloads (default: .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/gpu_parts.sh

GPU_DIR=.gpu
LIMIT=$((64 << 20))     # what one remote run may carry: working tree plus carried folders
MARGIN=$((2 << 20))     # room for files others add to the tree before the calls are made
PART_MAX=$((59 << 20))  # parts stay under 60 MiB
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

ORT_VERSION=${ORT_VERSION:-$(sed -n 's/^ARG ORT_VERSION=//p' Dockerfile | head -n 1)}
[ -n "$ORT_VERSION" ] || { echo "no ORT_VERSION in the Dockerfile; set ORT_VERSION" >&2; exit 1; }

# Wheels for the machine, not for this one: CPython 3.12, manylinux x86-64.
# pip matches each manylinux_2_N tag exactly, hence the list (device README).
pip_download() {
  local dest=$1
  shift
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
      --platform manylinux1_x86_64 -d "$dest" "$@"
}

# NAME==VERSION: the deploy requirements' pin, else the version this checkout's
# virtualenv has (the set the tests pass with), else whatever is newest.
pin() {
  local name=$1 version
  version=$(awk -F'==' -v n="$name" 'tolower($1) == tolower(n) { split($2, v, /[ #;]/); print v[1]; exit }' \
      deploy/requirements-*.txt)
  if [ -z "$version" ]; then
    version=$("$PY" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$name" 2>/dev/null || true)
  fi
  echo "$name${version:+==$version}"
}

# What the image lacks (/work/.library/device/KINDS.md lists what it has), and
# the service's own pins where the image's versions may differ.
SERVICE="flask werkzeug itsdangerous blinker click gunicorn orjson prometheus-client"
TRAINER="croniter"
CLIENT="tritonclient geventhttpclient gevent greenlet zope.event zope.interface brotli python-rapidjson"

mkdir -p "$GPU_DIR/download"
git check-ignore -q "$GPU_DIR/part1" || { echo "$GPU_DIR/ is not ignored by git: add /$GPU_DIR/ to .gitignore" >&2; exit 1; }

echo "downloading onnxruntime-gpu==$ORT_VERSION for CPython 3.12 ..."
pip_download "$GPU_DIR/download" "onnxruntime-gpu==$ORT_VERSION"
WHEEL=$(ls "$GPU_DIR"/download/onnxruntime_gpu-"$ORT_VERSION"-cp312-*.whl | head -n 1)

echo "downloading the small wheels ..."
rm -rf "$GPU_DIR/wheels"  # one version of each: two would stop the install there
mkdir -p "$GPU_DIR/wheels"
specs=()
for name in $SERVICE $TRAINER $CLIENT; do specs+=("$(pin "$name")"); done
pip_download "$GPU_DIR/wheels" "${specs[@]}"

# The working tree travels with every call: tracked files and untracked ones git
# does not ignore (and shared/, where there is one).
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
[ -d shared ] && tree=$((tree + $(du -sb shared | cut -f1)))
capacity=$((LIMIT - tree - MARGIN))
part_bytes=$((capacity < PART_MAX ? capacity : PART_MAX))
if [ "$part_bytes" -lt $((16 << 20)) ]; then
  echo "the working tree is $tree bytes: too little room left in a call for the parts" >&2
  exit 1
fi

parts=$(gpu_split "$WHEEL" "$part_bytes" "$GPU_DIR")
folders=()
for ((i = 1; i <= parts; i++)); do folders+=("$GPU_DIR/part$i"); done
folders+=("$GPU_DIR/wheels")
mapfile -t calls < <(gpu_plan_calls "$capacity" "${folders[@]}")

echo
echo "$(basename "$WHEEL"): $(stat -c %s "$WHEEL") bytes in $parts parts of at most $part_bytes bytes;"
echo "small wheels: $(ls "$GPU_DIR/wheels" | wc -l) files, $(du -sb "$GPU_DIR/wheels" | cut -f1) bytes; working tree: $tree bytes."
{
  echo "Remote runs, ${#calls[@]} in all, back to back: the machine goes back after 30 s idle, and the"
  echo "parts it holds with it. Each call before the last only reports the parts the machine holds;"
  echo "if one says a part sent earlier is missing, the machine went back: start again at call 1."
  echo "Give the last call timeout_s = min(600, budget_left_s - 30) and, when that is under 600,"
  echo "set GPU_CHECK_SECONDS to 60 less in its command (the check stops starting new work then)."
  for ((c = 0; c < ${#calls[@]}; c++)); do
    carry=$(sed 's/[^ ]*/"&"/g; s/ /, /g' <<< "${calls[c]}")
    if ((c + 1 < ${#calls[@]})); then
      echo "  call $((c + 1)): run(command=\"bash bench/gpu_check.sh --parts\", carry=[$carry], timeout_s=60)"
    else
      echo "  call $((c + 1)): run(command=\"bash bench/gpu_check.sh\", carry=[$carry], timeout_s=600)"
    fi
  done
  echo "Results come back under \$OUT: summary.txt first."
} | tee "$GPU_DIR/CALLS.txt"
