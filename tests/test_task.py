"""The real entry point, `python -m trainer.task`, end to end on a tiny built dataset, and its
one-line errors for bad flags, a missing dataset and an unwritable job_dir."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from tests.fixtures.backbone import TINY_IMAGE_SIZE
from tests.fixtures.processes import REPO_ROOT, run_module
from trainer.config import TrainConfig, resolve_output_dirs

_FLAGFILES = os.path.join(REPO_ROOT, "trainer", "flagfiles")
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _run_task(*flags: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_module("trainer.task", *flags, env=env, timeout=400)


@pytest.mark.slow
def test_smoke_run_writes_every_output(tiny_backbone, built_dataset_dir, tmp_path):
    job_dir, checkpoints, logs = tmp_path / "job", tmp_path / "ckpt", tmp_path / "tb"
    run = _run_task(
        f"--flagfile={_FLAGFILES}/local_cpu_smoke.cfg",
        f"--data_dir={built_dataset_dir}",
        f"--job_dir={job_dir}",
        f"--backbone={tiny_backbone}",
        f"--image_size={TINY_IMAGE_SIZE}",
        "--batch_size=8",
        "--steps_per_epoch=2",
        env={"AIP_CHECKPOINT_DIR": str(checkpoints), "AIP_TENSORBOARD_LOG_DIR": str(logs)},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "UNTRAINED BACKBONE" in run.stderr and "Run finished" in run.stdout

    config = json.loads((job_dir / "config.json").read_text())
    assert config["flags"]["backbone"] == tiny_backbone and config["flags"]["epochs"] == 2
    assert config["dataset"]["name"] == "oregon_wildlife/resized_256"
    assert config["dataset"]["version"] and config["tensorflow_version"] == tf.__version__
    assert (config["strategy"], config["replicas"], config["precision_policy"]) == (
        "default",
        1,
        "float32",
    )

    metrics = json.loads((job_dir / "metrics.json").read_text())
    for name in ("top1", "top5", "loss", "validation_accuracy"):
        assert np.isfinite(metrics[name]), name
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1
    assert len(metrics["per_class"]) == 20
    assert {"precision", "recall"} <= set(metrics["per_class"]["cougar"])
    assert metrics["dataset_version"] == config["dataset"]["version"]
    assert metrics["backbone"] == tiny_backbone and metrics["backbone_pretrained"] is False

    history = json.loads((job_dir / "history.json").read_text())
    assert [(r["epoch"], r["phase"]) for r in history] == [(1, "head"), (2, "fine_tune")]
    assert all("learning_rate" in r and "val_accuracy" in r for r in history)
    for figure in ("confusion_matrix.png", "predictions.png"):
        assert (job_dir / figure).read_bytes()[:8] == _PNG_MAGIC
    assert list(checkpoints.glob("epochs/epoch-002.index"))  # AIP_CHECKPOINT_DIR honoured
    assert list(logs.glob("train/events.out.tfevents.*"))  # AIP_TENSORBOARD_LOG_DIR honoured

    serving = tf.saved_model.load(str(job_dir / "model")).signatures["serving_default"]
    jpeg = pathlib.Path(REPO_ROOT, "tests", "data", "real", "cougar.jpg").read_bytes()
    outputs = serving(image_bytes=tf.constant([jpeg]))
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (1, 5) and np.all(np.diff(probabilities[0]) <= 0)
    labels = (job_dir / "model" / "assets" / "labels.txt").read_text().split()
    assert set(outputs["classes"].numpy()[0].astype(str)) <= set(labels) and len(labels) == 20


def _last_line(run: subprocess.CompletedProcess) -> str:
    return run.stderr.strip().splitlines()[-1]


def test_bad_flags_are_one_line_errors_naming_them(tmp_path):
    run = _run_task(
        f"--job_dir={tmp_path}", "--batch_size=0", "--epochs=0", "--precision=fp8", "--strategy=tpu"
    )
    assert run.returncode != 0
    line = _last_line(run)
    assert line.startswith("error: Invalid configuration")
    for fragment in ("batch_size=0", "epochs=0", "'fp8'", "'tpu'"):
        assert fragment in line


def test_missing_dataset_and_unwritable_job_dir_are_one_line_errors(tmp_path):
    run = _run_task(f"--data_dir={tmp_path / 'empty'}", f"--job_dir={tmp_path / 'job'}")
    assert run.returncode != 0
    assert _last_line(run).startswith("error: Dataset oregon_wildlife/resized_256 is not built")
    assert "tfds build oregon_wildlife" in _last_line(run)
    assert not (tmp_path / "job" / "config.json").exists()

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    run = _run_task(f"--data_dir={tmp_path}", f"--job_dir={blocker / 'job'}")
    assert run.returncode != 0
    assert _last_line(run).startswith(f"error: job_dir {blocker / 'job'} is not writable")


def test_vertex_environment_chooses_output_folders():
    env = {
        "AIP_MODEL_DIR": "gs://b/run/model",
        "AIP_CHECKPOINT_DIR": "gs://b/run/checkpoints",
        "AIP_TENSORBOARD_LOG_DIR": "gs://b/tb/run",
    }
    dirs = resolve_output_dirs("gs://b/run", env)
    assert (dirs.model_dir, dirs.checkpoint_dir, dirs.tensorboard_dir) == (
        "gs://b/run/model",
        "gs://b/run/checkpoints",
        "gs://b/tb/run",
    )
    local = resolve_output_dirs("/jobs/a", {})
    assert (local.model_dir, local.checkpoint_dir, local.tensorboard_dir) == (
        "/jobs/a/model",
        "/jobs/a/checkpoints",
        "/jobs/a/logs",
    )


@pytest.mark.parametrize("flagfile", sorted(os.listdir(_FLAGFILES)))
def test_every_flagfile_documents_itself_and_gives_a_valid_config(flagfile):
    lines = pathlib.Path(_FLAGFILES, flagfile).read_text().splitlines()
    assert lines[0].startswith("# ") and "python -m trainer.task" in "\n".join(lines)
    fields = {}
    for line in lines:
        if line.startswith("--"):
            name, _, value = line[2:].partition("=")
            field_type = type(getattr(TrainConfig(data_dir=""), name))
            fields[name] = True if field_type is bool and not value else field_type(value)
    TrainConfig(data_dir="d", **fields).validate()
