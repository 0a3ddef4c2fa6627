"""bench/gpu_check.sh and the wheel parts it joins, checked where there is no GPU.

The check itself only means something on a GPU machine; here it must say
there is no GPU and stop at once, the split/join of bench/gpu_parts.sh must give
back the very bytes, and a rehearsal (GPU_CHECK_REHEARSE=1, the GPU side on the
CPU) must run every step, so that a GPU machine's few minutes are never spent on
a script that broke since it last ran.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow  # runs the check's shell scripts

CHECK = ROOT / "bench" / "gpu_check.sh"
PARTS_LIB = ROOT / "bench" / "gpu_parts.sh"
MiB = 1 << 20


def run_check(tmp_path, *args, path=None, **env):
    environment = {
        **os.environ,
        "OUT": str(tmp_path / "out"),
        "GPU_CHECK_WORK": str(tmp_path / "work"),
        "GPU_PARTS_DIR": str(tmp_path / "parts"),
        **env,
    }
    if "GPU_CHECK_REHEARSE" not in env:
        environment.pop("GPU_CHECK_REHEARSE", None)  # a rehearsal only where a test asks for one
    if path is not None:
        environment["PATH"] = path
    return subprocess.run(
        ["bash", str(CHECK), *args], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )


def parts(*script_args, script):
    """Run `script` with bench/gpu_parts.sh sourced; $1... are script_args."""
    return subprocess.run(
        ["bash", "-c", f'source "{PARTS_LIB}"; {script}', "parts", *map(str, script_args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def fake_nvidia_smi(tmp_path, status):
    folder = tmp_path / "bin"
    folder.mkdir()
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\nexit {status}\n")
    tool.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ['PATH']}"


def assert_stopped_at_once(result, tmp_path, reason):
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"no GPU: {reason}" in result.stdout
    assert not (tmp_path / "work").exists()  # nothing joined, installed, generated or trained
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["summary.txt"]
    assert (tmp_path / "out" / "summary.txt").read_text().startswith("no GPU: ")


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_without_nvidia_smi_the_check_reports_no_gpu_and_exits_at_once(tmp_path):
    started = time.monotonic()
    result = run_check(tmp_path)
    assert time.monotonic() - started < 10
    assert_stopped_at_once(result, tmp_path, "nvidia-smi is not installed")


def test_nvidia_smi_finding_no_device_is_no_gpu(tmp_path):
    result = run_check(tmp_path, path=fake_nvidia_smi(tmp_path, 6))
    assert_stopped_at_once(result, tmp_path, "nvidia-smi finds no device")


def test_torch_seeing_no_cuda_device_is_no_gpu(tmp_path):
    # No device is visible to torch, even on a GPU machine: the test runs everywhere.
    result = run_check(tmp_path, path=fake_nvidia_smi(tmp_path, 0), PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    assert_stopped_at_once(result, tmp_path, "torch")
    assert "sees no CUDA device" in result.stdout


def test_scripts_parse():
    for script in ("gpu_check.sh", "gpu_prepare.sh", "gpu_parts.sh"):
        result = subprocess.run(["bash", "-n", str(ROOT / "bench" / script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_the_parts_folder_is_ignored_by_git():
    assert subprocess.run(["git", "check-ignore", "-q", ".gpu/part1/x.whl.part1"], cwd=ROOT).returncode == 0


@pytest.fixture
def split_file(tmp_path):
    """A 2.5 MB file split into 1 MiB parts under tmp_path/parts: (file, parts root)."""
    source = tmp_path / "pkg-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    source.write_bytes(os.urandom(2 * MiB + MiB // 2))
    result = parts(source, MiB, tmp_path / "parts", script='gpu_split "$1" "$2" "$3"')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"
    return source, tmp_path / "parts"


def test_split_parts_each_travel_alone_and_join_byte_identical(tmp_path, split_file):
    source, root = split_file
    manifests = set()
    for n in (1, 2, 3):
        folder = root / f"part{n}"
        assert sorted(p.name for p in folder.iterdir()) == ["MANIFEST", f"{source.name}.part{n}"]
        assert (folder / f"{source.name}.part{n}").stat().st_size <= MiB
        manifests.add((folder / "MANIFEST").read_text())
    assert len(manifests) == 1  # whichever part arrives last brings the same manifest

    result = run_check(tmp_path, "--parts")
    assert result.returncode == 0 and f"{source.name}: 3 of 3 parts here" in result.stdout

    joined = parts(root, tmp_path / "joined", script='gpu_join "$1" "$2"')
    assert joined.returncode == 0, joined.stderr
    assert (tmp_path / "joined" / source.name).read_bytes() == source.read_bytes()
    assert joined.stdout.strip() == str(tmp_path / "joined" / source.name)


def test_a_missing_or_damaged_part_is_named_and_nothing_is_joined(tmp_path, split_file):
    source, root = split_file
    (root / "part2" / f"{source.name}.part2").unlink()
    with open(root / "part3" / f"{source.name}.part3", "r+b") as piece:
        piece.write(b"\0" * 16)
    status = run_check(tmp_path, "--parts")
    assert "part 1 of 3: ok" in status.stdout
    assert "part 2 of 3: missing" in status.stdout
    assert "part 3 of 3: damaged" in status.stdout
    assert f"{source.name}: 1 of 3 parts here, 1 damaged" in status.stdout
    joined = parts(root, tmp_path / "joined", script='gpu_join "$1" "$2"')
    assert joined.returncode != 0 and "part 2 of 3: missing" in joined.stderr
    assert not (tmp_path / "joined" / source.name).exists()


def test_parts_of_two_preparations_are_refused(tmp_path, split_file):
    _, root = split_file
    manifest = root / "part1" / "MANIFEST"
    manifest.write_text(manifest.read_text().replace("part 3 ", "part 3 1"))
    joined = parts(root, tmp_path / "joined", script='gpu_join "$1" "$2"')
    assert joined.returncode != 0 and "different preparations" in joined.stderr


def test_calls_are_planned_in_order_within_what_one_call_carries(tmp_path):
    sizes = {"part1": 59, "part2": 59, "part3": 8, "wheels": 7}
    for name, mib in sizes.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_bytes(b"\0" * (mib * MiB))
    folders = [tmp_path / name for name in sizes]
    plan = parts(60 * MiB, *folders, script='gpu_plan_calls "$@"')
    assert plan.returncode == 0, plan.stderr
    calls = [line.split() for line in plan.stdout.splitlines()]
    assert calls == [
        [str(tmp_path / "part1")],
        [str(tmp_path / "part2")],
        [str(tmp_path / "part3"), str(tmp_path / "wheels")],
    ]
    too_small = parts(50 * MiB, *folders, script='gpu_plan_calls "$@"')
    assert too_small.returncode != 0 and "larger than one call carries" in too_small.stderr


@pytest.mark.slow
def test_a_rehearsal_runs_every_step_and_brings_back_at_most_8_files(tmp_path):
    """Every phase, on this machine's Python, the GPU side on the CPU, small data (about half a minute)."""
    result = run_check(tmp_path, PYTHON=sys.executable, GPU_CHECK_REHEARSE="1")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    out = tmp_path / "out"
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "env.json",
        "log.txt",
        "ort.json",
        "service.json",
        "summary.txt",
        "train_cli.json",
        "train_epochs.json",
    ]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", name) for name in files)  # what a remote run brings back
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("GPU check: all checks passed") and "REHEARSAL" in summary
    for figure in ("HTTP V2 binary, cuda service", "cuda_one_run", "s/epoch", "demand train end to end"):
        assert figure in summary
