import json
import os
import threading

import pytest

from pipeline import publish as publish_module
from pipeline.data import load_file
from pipeline.errors import RegistryBusy, RegistryError
from pipeline.registry import Registry, RegistryWriter
from pipeline.workflow import train_model

from .conftest import FAST


@pytest.fixture(scope="module")
def trained(small_csv):
    data = load_file(small_csv)
    return train_model(data, "log-large-batch", dict(device="cpu", **FAST)), data


def publish(registry, trained, promote=False):
    return publish_module.publish(registry, *trained, promote=promote)


def snapshot(registry):
    return (
        registry.versions(),
        registry.champion(),
        registry.history_file.read_bytes() if registry.history_file.exists() else b"",
    )


@pytest.mark.slow
def test_first_version_is_champion_later_ones_only_when_promoted(tmp_path, trained):
    registry = Registry(tmp_path / "models")
    assert registry.champion() is None and registry.versions() == []
    v1, card, crowned = publish(registry, trained)
    assert (v1, crowned, registry.champion()) == ("v1", True, "v1")
    assert sorted(p.name for p in registry.path(v1).iterdir()) == [
        "card.json",
        "model.onnx",
        "model.pt",
        "normalization.json",
        "report.png",
    ]
    v2, _, crowned = publish(registry, trained)
    assert (v2, crowned, registry.champion()) == ("v2", False, "v1")
    v3, _, crowned = publish(registry, trained, promote=True)
    assert (v3, crowned, registry.champion()) == ("v3", True, "v3")
    assert [(e["event"], e["version"], e["champion_before"]) for e in registry.history()] == [
        ("promote", "v1", None),
        ("publish", "v2", "v1"),
        ("promote", "v3", "v1"),
    ]
    assert list((tmp_path / "models" / "staging").iterdir()) == []


def test_card_records_what_was_done(tmp_path, trained):
    registry = Registry(tmp_path / "models")
    version, _, _ = publish(registry, trained)
    card = registry.card(version)
    assert card["version"] == version
    assert card["params"]["hidden"] == [64, 64] and card["params"]["transform"] == "log1p"
    assert len(card["data"]["sha256"]) == 64 and card["data"]["rows"] == 180
    assert card["data"]["date_range"][0] < card["data"]["date_range"][1]
    assert set(card["metrics"]["holdout"]) == {"model", "naive", "linear"}
    assert set(card["metrics"]["holdout"]["model"]) >= {"mae", "rmse", "wape", "mape", "bias", "mase"}
    assert 0 < card["interval"]["half_width"] and 0 <= card["interval"]["holdout_coverage"] <= 1
    assert card["export"]["parity_max_relative_error"] <= 1e-5
    assert {"python", "torch", "onnx", "numpy"} <= set(card["software"])
    assert card["schema"]["input"]["name"] == "features"
    assert card["training"]["device"] == "cpu"
    stats = json.loads((registry.path(version) / "normalization.json").read_text())
    assert stats["transform"] == "log1p" and set(stats["features"]) == {
        "prev_week_sales",
        "discount_fraction",
        "weeks_to_next_holidays",
    }


def fail(*args, **kwargs):
    raise OSError("disk full (injected)")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["export", "report", "commit", "champion"])
def test_a_failure_mid_publish_leaves_no_half_version_and_the_champion_unchanged(tmp_path, trained, monkeypatch, where):
    registry = Registry(tmp_path / "models")
    publish(registry, trained)
    before = snapshot(registry)
    if where == "export":
        monkeypatch.setattr(publish_module.export, "parity_error", fail)
    elif where == "report":
        monkeypatch.setattr("pipeline.report.write_report", fail)
    elif where == "commit":
        monkeypatch.setattr(os, "rename", fail)
    else:
        monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="injected"):
        publish(registry, trained, promote=True)
    monkeypatch.undo()
    versions, champion, history = snapshot(registry)
    assert champion == before[1] == "v1"
    assert history == before[2]
    if where == "champion":
        # The version was complete when the pointer update failed: it stays, unpromoted.
        assert versions == ["v1", "v2"]
    else:
        assert versions == before[0]
        assert not (registry.versions_dir / "v2").exists()
    assert list(registry.staging_dir.iterdir()) == []
    assert publish(registry, trained)[0] in ("v2", "v3")  # the registry still works


def test_a_second_writer_waits_or_gets_a_clear_message(tmp_path):
    registry = Registry(tmp_path / "models")
    with registry.writer():
        with pytest.raises(RegistryBusy, match="--wait"):
            with Registry(tmp_path / "models").writer(wait=0.1):
                pass
    acquired = []

    def writer():
        with Registry(tmp_path / "models").writer(wait=5):
            acquired.append(True)

    with registry.writer():
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(0.3)
        assert acquired == []  # still waiting
    thread.join(5)
    assert acquired == [True]


def test_stale_staging_from_a_dead_writer_is_cleaned(tmp_path):
    registry = Registry(tmp_path / "models")
    (registry.staging_dir / "tmpdead").mkdir(parents=True)
    (registry.staging_dir / "tmpdead" / "model.onnx").write_bytes(b"half")
    with registry.writer():
        pass
    assert list(registry.staging_dir.iterdir()) == []
    assert registry.versions() == []


def test_history_survives_a_line_cut_short(tmp_path):
    registry = Registry(tmp_path / "models")
    with registry.writer() as writer:
        writer.record("promote", "v1", "test", "test")
        with open(registry.history_file, "a") as f:
            f.write('{"event": "prom')  # a crash mid-write
        writer.record("publish", "v2", "test", "test")
    assert [e["version"] for e in registry.history()] == ["v1", "v2"]


def test_every_decision_has_the_same_keys(tmp_path):
    registry = Registry(tmp_path / "models")
    with registry.writer() as writer:
        writer.record("skip", None, "too few weeks", "demand retrain", champion_before="v1")
        writer.record("reject", "v2", "worse", "demand retrain", champion_before="v1", metrics={})
    for event in registry.history():
        assert list(event)[:6] == ["at", "event", "version", "champion_before", "reason", "by"]


def test_champion_must_name_a_published_version(tmp_path):
    registry = Registry(tmp_path / "models")
    with registry.writer() as writer, pytest.raises(RegistryError, match="no such version"):
        writer.set_champion("v7")
    assert registry.champion() is None


def test_a_write_without_the_lock_is_impossible(tmp_path, trained):
    registry = Registry(tmp_path / "models")
    publish(registry, trained)
    before = snapshot(registry)
    # The reading side has no way to write.
    for name in ("promote", "rollback", "prune", "commit", "set_champion", "record", "staging", "next_version"):
        assert not hasattr(registry, name)
    # A writer made by hand, or kept after its block released the lock, refuses every write.
    with registry.writer() as kept:
        pass
    for writer in (RegistryWriter(registry, None), kept):
        for write in (
            lambda: writer.promote("v1", "r", "b"),
            lambda: writer.rollback("b"),
            lambda: writer.prune(1, "b"),
            lambda: writer.record("promote", "v1", "r", "b"),
            lambda: writer.set_champion("v1"),
            lambda: writer.next_version(),
        ):
            with pytest.raises(RegistryError, match="inside `with registry.writer"):
                write()
        with pytest.raises(RegistryError):
            with writer.staging():
                pass
    assert snapshot(registry) == before


def test_a_version_folder_or_file_that_links_out_of_the_registry_is_refused(tmp_path, published):
    """A stranger's `versions/v2 -> /elsewhere` was loaded and served; now neither the folder nor a file
    of a version may be a link out of it."""
    import shutil

    from pipeline.bundle import Bundle
    from pipeline.errors import BundleError

    root = tmp_path / "models"
    shutil.copytree(published, root)
    registry = Registry(root)
    version = registry.champion()
    outside = tmp_path / "elsewhere"
    shutil.copytree(registry.path(version), outside)
    shutil.rmtree(registry.versions_dir / version)
    (registry.versions_dir / version).symlink_to(outside)
    with pytest.raises(BundleError, match="link out of the registry"):
        Bundle.load(registry, version, provider="cpu")
    (registry.versions_dir / version).unlink()
    shutil.copytree(outside, registry.versions_dir / version)
    onnx = registry.versions_dir / version / "model.onnx"
    onnx.unlink()
    onnx.symlink_to(outside / "model.onnx")
    with pytest.raises(BundleError, match="link out of its version's folder"):
        Bundle.load(registry, version, provider="cpu")


def test_a_champion_pointer_that_is_not_a_regular_file_is_refused_at_once(tmp_path, published, runner):
    """A FIFO as the pointer hung `demand predict` on its read."""
    import shutil

    from .conftest import DEFAULT_CSV, invoke

    root = tmp_path / "models"
    shutil.copytree(published, root)
    (root / "champion").unlink()
    os.mkfifo(root / "champion")
    with pytest.raises(RegistryError, match="is not a regular file"):
        Registry(root).champion()
    done = invoke(
        runner, "predict", "--input", str(DEFAULT_CSV), "--output", str(tmp_path / "o.csv"), "--model-dir", str(root)
    )
    assert done.exit_code == 1 and "not a regular file" in done.output
