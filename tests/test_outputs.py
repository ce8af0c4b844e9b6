"""trainer/outputs.py: atomic files and folders, locally and on GCS (emulator)."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from trainer import outputs


def _siblings(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_creates_parents_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "figure.png"
    outputs.write_bytes_atomic(str(path), b"first")
    outputs.write_bytes_atomic(str(path), b"second")
    assert path.read_bytes() == b"second"
    assert _siblings(path.parent) == ["figure.png"]


def test_failed_write_leaves_old_file_and_no_litter(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk on fire"), outputs.atomic_file(str(path)) as f:
        f.write(b"half of the new cont")
        raise RuntimeError("disk on fire")
    assert path.read_bytes() == b"old"
    assert _siblings(tmp_path) == ["metrics.json"]


def test_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), outputs.atomic_file(str(tmp_path / "new.bin")) as f:
        f.write(b"partial")
        raise RuntimeError("crash")
    assert _siblings(tmp_path) == []


def test_write_json_encodes_numpy_and_round_trips(tmp_path):
    path = tmp_path / "metrics.json"
    metrics = {"top1": np.float32(0.5), "count": np.int64(7), "confusion": np.eye(2, dtype=int)}
    outputs.write_json_atomic(str(path), metrics)
    assert json.loads(path.read_text()) == {"top1": 0.5, "count": 7, "confusion": [[1, 0], [0, 1]]}


@pytest.mark.parametrize(
    ("value", "error"), [(object(), TypeError), (float("nan"), ValueError)], ids=["object", "nan"]
)
def test_unencodable_json_writes_nothing(tmp_path, value, error):
    with pytest.raises(error, match="not JSON serialisable|cannot write .*metrics.json"):
        outputs.write_json_atomic(str(tmp_path / "metrics.json"), {"x": value})
    assert _siblings(tmp_path) == []


def test_atomic_output_dir_replaces_previous_folder(tmp_path):
    final = tmp_path / "export"
    final.mkdir()
    (final / "stale.txt").write_text("old model")
    with outputs.atomic_output_dir(str(final)) as temporary:
        assert temporary != str(final) and temporary.startswith(str(final))
        (tmp_path / temporary / "saved_model.pb").write_bytes(b"new")
        assert (final / "stale.txt").exists()  # the old export is intact until success
    assert _siblings(final) == ["saved_model.pb"]
    assert _siblings(tmp_path) == ["export"]


def test_atomic_output_dir_error_keeps_previous_folder(tmp_path):
    final = tmp_path / "export"
    final.mkdir()
    (final / "saved_model.pb").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), outputs.atomic_output_dir(str(final)) as temporary:
        (tmp_path / temporary / "saved_model.pb").write_bytes(b"half")
        raise KeyboardInterrupt  # a preempted job
    assert (final / "saved_model.pb").read_bytes() == b"old"
    assert _siblings(tmp_path) == ["export"]


def test_atomic_output_dir_error_without_previous_leaves_nothing(tmp_path):
    with pytest.raises(ValueError), outputs.atomic_output_dir(str(tmp_path / "export")):
        raise ValueError("bad model")
    assert _siblings(tmp_path) == []


@pytest.mark.parametrize("path", ["gs://", "gs://bucket/", "gs://bucket", "/", ""])
def test_paths_naming_nothing_are_rejected(path):
    with pytest.raises(ValueError, match="names no file or folder"):
        outputs.write_bytes_atomic(path, b"x")


_GCS_SCRIPT = textwrap.dedent(
    """
    import sys
    import tensorflow as tf
    from trainer import outputs

    root = sys.argv[1]
    outputs.write_json_atomic(f"{root}/metrics.json", {"top1": 0.75})
    outputs.write_bytes_atomic(f"{root}/figure.png", b"png")
    for version in ("old", "new"):
        with outputs.atomic_output_dir(f"{root}/export") as temporary:
            for name in ("saved_model.pb", "variables/variables.index"):
                tf.io.gfile.makedirs(f"{temporary}/variables")
                with tf.io.gfile.GFile(f"{temporary}/{name}", "wb") as f:
                    f.write(version.encode())
    try:
        with outputs.atomic_output_dir(f"{root}/export") as temporary:
            with tf.io.gfile.GFile(f"{temporary}/saved_model.pb", "wb") as f:
                f.write(b"broken")
            raise RuntimeError("preempted")
    except RuntimeError:
        pass
    """
)


@pytest.mark.slow
def test_atomic_writes_on_gcs(gcs_emulator):
    root = f"gs://{gcs_emulator.bucket}/outputs-test"
    result = subprocess.run(
        [sys.executable, "-c", _GCS_SCRIPT, root],
        env=gcs_emulator.subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    names = [name.removeprefix(root + "/") for name in gcs_emulator.list(root)]
    objects = [name for name in names if name and not name.endswith("/")]  # skip folder markers
    assert objects == [
        "export/saved_model.pb",
        "export/variables/variables.index",
        "figure.png",
        "metrics.json",
    ]
    assert json.loads(gcs_emulator.read(f"{root}/metrics.json")) == {"top1": 0.75}
    assert gcs_emulator.read(f"{root}/export/saved_model.pb") == b"new"
