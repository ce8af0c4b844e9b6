"""Bad input to the real `python -m trainer.task`: each case gets ONE line `error: ...` that
says what to do, a non-zero exit code, and no output that looks complete.

Exit codes: 2 bad input or configuration, 3 the loss diverged. (Bad images given to
`trainer.predict` and to the serving signature are covered in test_predict.py/test_export.py.)
"""

from __future__ import annotations

import json
import math
import shutil
import signal

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import tfds_oregon
from tests.fixtures.processes import (
    finish,
    relative_files,
    run_trainer,
    running,
    tiny_training_flags,
    wait_until,
)

pytestmark = pytest.mark.slow

EXIT_BAD_INPUT = 2
_VERSION = str(tfds_oregon.Builder.VERSION)  # What the trainer expects to find.
EXIT_DIVERGED = 3
_FINISHED_LOOKING = ("metrics.json", "model", "predictions.png", "confusion_matrix.png")


@pytest.fixture
def trainer(learnable_data_dir, tiny_backbone, tmp_path):
    """`trainer(**flag_overrides)` runs the tiny training and returns the finished process."""

    def run(**overrides):
        paths = dict(data_dir=learnable_data_dir, backbone=tiny_backbone, job_dir=tmp_path / "job")
        flags = tiny_training_flags(**{**paths, **overrides})
        return run_trainer(flags, tmp_path / "log.txt", timeout=120)

    return run


def assert_one_line_error(result, *fragments: str, code: int = EXIT_BAD_INPUT) -> str:
    assert result.returncode == code, result.output[-3000:]
    assert len(result.errors) == 1, result.lines[-10:]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.errors[0]
    return result.errors[0]


def assert_nothing_finished(job_dir) -> None:
    for name in _FINISHED_LOOKING:
        assert not (job_dir / name).exists(), name


# --- Flags, dataset and backbone: all fail before training, so they run side by side. ---


def _wrong_backbones(root) -> dict[str, str]:
    """SavedModels that load but are not image feature-vector models."""
    images = tf_keras.Input((32, 32, 3))
    feature_map = tf_keras.Model(images, tf_keras.layers.Conv2D(8, 3)(images))
    vectors = tf_keras.Input((10,))
    text_like = tf_keras.Model(vectors, tf_keras.layers.Dense(4)(vectors))
    paths = {"feature_map": str(root / "feature_map"), "vector_input": str(root / "vectors")}
    feature_map.save(paths["feature_map"], save_format="tf")
    text_like.save(paths["vector_input"], save_format="tf")
    return paths


def _old_dataset(learnable_data_dir, data_dir) -> str:
    """A copy of the dataset that says it is version 0.9.0 (the code reads _VERSION)."""
    shutil.copytree(learnable_data_dir, data_dir)
    versions = data_dir / "oregon_wildlife" / "resized_256"
    (versions / _VERSION).rename(versions / "0.9.0")
    info_path = versions / "0.9.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["version"] = "0.9.0"
    info_path.write_text(json.dumps(info))
    return str(data_dir)


@pytest.fixture(scope="module")
def bad_inputs(learnable_data_dir, tmp_path_factory) -> dict[str, str]:
    """Paths of an empty data_dir, an old dataset version and two wrong backbones."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "empty_tfds").mkdir()
    return {
        "empty": str(root / "empty_tfds"),
        "old": _old_dataset(learnable_data_dir, root / "old_tfds"),
        "unreachable": "https://tfhub.dev/google/nope/5",
        **_wrong_backbones(root),
    }


# case: (flag overrides, fragments the error line must hold); {name} is a bad_inputs path.
_CASES = {
    "batch": ({"batch_size": 0}, ["batch_size=0 must be >= 1"]),
    "epochs": ({"epochs": 0, "frozen_epochs": 0}, ["epochs=0 must be >= 1"]),
    "precision": ({"precision": "fp8"}, ["precision='fp8'", "mixed_float16"]),
    "strategy": ({"strategy": "tpu"}, ["strategy='tpu'", "multi_worker"]),
    "job_dir": ({"job_dir": "/proc/cannot_write_here"}, ["/proc/cannot_write_here", "writable"]),
    "flagfile": ({"flagfile": "trainer/flagfiles/no_such.cfg"}, ["flagfiles/no_such.cfg"]),
    "no_dataset": ({"data_dir": "{empty}"}, ["tfds build", "{empty}", "--manual_dir"]),
    "old_dataset": (
        {"data_dir": "{old}"},
        [
            "holds oregon_wildlife/resized_256 version 0.9.0",
            f"reads version {_VERSION}",
            "tfds build",
        ],
    ),
    "unreachable_backbone": (
        {"backbone": "{unreachable}"},
        ["Cannot load backbone {unreachable}", "keras:mobilenet_v2_130"],
    ),
    "feature_map_backbone": (
        {"backbone": "{feature_map}"},
        ["Backbone {feature_map}", "(2, 30, 30, 8)", "feature vector"],
    ),
    "vector_input_backbone": (
        {"backbone": "{vector_input}"},
        ["Backbone {vector_input}", "cannot take 32x32 RGB images", "shape=(None, 10)"],
    ),
}


@pytest.mark.parametrize("case", list(_CASES))
def test_bad_flags_dataset_or_backbone(trainer, bad_inputs, tmp_path, case):
    overrides, fragments = _CASES[case]
    result = trainer(**{name: str(value).format(**bad_inputs) for name, value in overrides.items()})
    assert_one_line_error(result, *[fragment.format(**bad_inputs) for fragment in fragments])
    assert_nothing_finished(tmp_path / "job")


# --- Training that diverges. ---


def _finite(checkpoint: str) -> bool:
    reader = tf.train.load_checkpoint(checkpoint)
    floats = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map()]
    return all(np.isfinite(v).all() for v in floats if np.issubdtype(np.asarray(v).dtype, float))


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(trainer, tmp_path):
    # Epoch 1 (frozen backbone) trains normally; fine-tuning at 1e30 x the rate explodes.
    result = trainer(fine_tune_lr_factor=1e30, optimizer="sgd")
    error = assert_one_line_error(result, "epoch 2", "--learning_rate", code=EXIT_DIVERGED)
    assert error.startswith("error: Loss became NaN/inf")
    checkpoints = tmp_path / "job" / "checkpoints"
    assert _finite(str(checkpoints / "epochs" / "epoch-001"))
    assert not list((checkpoints / "epochs").glob("epoch-002*"))
    backup = tf.train.latest_checkpoint(str(checkpoints / "backup" / "fine_tune" / "chief"))
    assert backup is None  # Nothing was backed up after epoch 1's weights.
    history = json.loads((tmp_path / "job" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1] and math.isfinite(history[0]["loss"])
    assert_nothing_finished(tmp_path / "job")


# --- A crash while writing outputs. ---


def test_kill_during_export_leaves_no_final_named_artefact(
    learnable_data_dir, tiny_backbone, tmp_path
):
    job_dir = tmp_path / "job"
    flags = tiny_training_flags(
        learnable_data_dir, tiny_backbone, str(job_dir), epochs=1, frozen_epochs=1
    )

    def exporting() -> bool:
        return any(job_dir.glob("model.tmp-*"))

    with running(flags, tmp_path / "log.txt") as process:
        wait_until(exporting, 120, "the export to start", processes=[process])
        process.send_signal(signal.SIGKILL)
        finish(process, tmp_path / "log.txt", timeout=30)
    assert_nothing_finished(job_dir)
    assert "checkpoints/epochs/epoch-001.index" in relative_files(job_dir)
