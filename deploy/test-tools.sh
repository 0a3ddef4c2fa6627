#!/usr/bin/env bash
# Programs the tests run for real, from Debian's packages when missing:
# kubectl renders the Kubernetes manifests, nginx fronts the replicas of the
# multi-replica test, qemu's user mode runs ONNX Runtime on emulated CPUs of
# other instruction sets for the export's parity test, PostgreSQL holds the
# store in its tests, Chromium (and its WebDriver) shows the planners' page to
# Selenium. Run by `make test`.
set -euo pipefail
missing=()
command -v kubectl >/dev/null || missing+=(kubectl)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v qemu-x86_64 >/dev/null || missing+=(qemu-user)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "the tests need ${missing[*]}: install them (apt-get install ${missing[*]})" >&2; exit 1; }
    sudo="sudo"
fi
echo "installing ${missing[*]} (Debian packages) for the tests..." >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
