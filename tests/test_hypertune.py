"""trainer/hypertune.py: writes the metric file a Vertex AI tuning trial reads, else nothing."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import hypertune.hypertune as hypertune_library
import numpy as np
import pytest
import tf_keras

from infra import job_specs
from tests.fixtures.processes import run_trainer, tiny_training_flags
from trainer import hypertune

_REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def trial(tmp_path, monkeypatch):
    """The environment Vertex AI gives trial 7; returns the metric file's path."""
    path = tmp_path / "hypertune" / "output.metrics"
    monkeypatch.setenv("CLOUD_ML_HP_METRIC_FILE", str(path))
    monkeypatch.setenv("CLOUD_ML_TRIAL_ID", "7")
    return path


def test_reports_in_a_trial_in_the_format_vertex_reads(trial):
    assert hypertune.is_tuning_trial()
    assert hypertune.report_metric("accuracy", 0.5, step=100)
    assert hypertune.report_metric("accuracy", 0.875, step=200)
    entries = [json.loads(line) for line in trial.read_text().splitlines()]
    # One JSON object per line, every report kept, values as strings.
    assert [(e["accuracy"], e["global_step"], e["trial"]) for e in entries] == [
        ("0.5", "100", "7"),
        ("0.875", "200", "7"),
    ]
    assert all(isinstance(e["timestamp"], float) for e in entries)


def test_non_finite_metric_is_rejected(trial):
    with pytest.raises(ValueError, match="accuracy=nan is not finite"):
        hypertune.report_metric("accuracy", float("nan"), step=1)
    assert not trial.exists()


def test_outside_a_trial_is_a_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("CLOUD_ML_HP_METRIC_FILE", raising=False)
    monkeypatch.delenv("CLOUD_ML_TRIAL_ID", raising=False)
    monkeypatch.chdir(tmp_path)
    assert not hypertune.is_tuning_trial()
    assert hypertune.report_metric("accuracy", 0.5, step=1) is False
    assert list(tmp_path.iterdir()) == []


# --- The trial's metric file as the image's non-root user (cloudml-hypertune#6). ---


def _dockerfile_metric_folders() -> tuple[list[str], int]:
    """The folders infra/Dockerfile makes for the metric file, and the uid they go to."""
    text = re.sub(r"\\\n", " ", (_REPO / "infra" / "Dockerfile").read_text())
    (mkdir,) = re.findall(r"mkdir -p ((?:/\S+ ?)+)", text)
    (chown,) = re.findall(r"chown (\d+):\d+ ((?:/\S+ ?)+)", text)
    (user,) = re.findall(r"^USER (\d+)$", text, re.MULTILINE)
    assert chown[1].split() == mkdir.split() and chown[0] == user
    return mkdir.split(), int(user)


@pytest.fixture
def fake_root():
    """A folder every user may traverse (pytest's tmp_path is root-only), removed afterwards."""
    root = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


@pytest.mark.skipif(os.getuid() != 0, reason="switching to the image's uid needs root")
def test_image_metric_folders_are_writable_by_its_user_where_root_only_ones_are_not(fake_root):
    """GoogleCloudPlatform/cloudml-hypertune#6: the metric path Vertex AI sets (/var/hypertune)
    is writable by root only, so a non-root container's trial fails when it reports.
    Reproduces the Dockerfile's folders under `fake_root` and writes as its USER, with the
    same open-for-writing cloudml-hypertune does; a root-owned folder refuses the same user."""
    folders, uid = _dockerfile_metric_folders()
    # Both the library's default and the service's folder from the issue are covered.
    assert os.path.dirname(hypertune_library._DEFAULT_METRIC_PATH) in folders
    assert "/var/hypertune" in folders
    for folder in folders:
        made = fake_root / folder.lstrip("/")
        made.mkdir(parents=True)
        os.chown(made, uid, uid)
        write = subprocess.run(
            ["/bin/sh", "-c", f"echo '{{}}' > {made}/output.metrics"], user=uid, timeout=30
        )
        assert write.returncode == 0
    root_only = fake_root / "root-only"
    root_only.mkdir(mode=0o755)
    write = subprocess.run(
        ["/bin/sh", "-c", f"echo '{{}}' > {root_only}/output.metrics"],
        user=uid,
        capture_output=True,
        timeout=30,
    )
    assert write.returncode != 0 and b"Permission denied" in write.stderr


def test_unwritable_metric_file_stops_the_trial_before_any_data_work(tmp_path):
    """A trial that could not report would train for hours, then fail: it must stop at start."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    env = {
        **os.environ,
        "CLOUD_ML_TRIAL_ID": "3",
        "CLOUD_ML_HP_METRIC_FILE": str(blocker / "hypertune" / "output.metrics"),
    }
    command = [sys.executable, "-m", "trainer.task", f"--job_dir={tmp_path / 'job'}"]
    command.append(f"--data_dir={tmp_path / 'no-data'}")  # Never read: the check comes first.
    result = subprocess.run(command, cwd=_REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "cannot write its metric file" in errors[0] and "hypertune#6" in errors[0]
    assert not (tmp_path / "job").exists()


# --- Reporting at every epoch, so Vertex AI can stop a bad trial early. ---


def test_validation_accuracy_is_reported_at_every_epoch_end(trial):
    """Vertex AI's automated early stopping compares measurements as they arrive (StudySpec's
    MedianAutomatedStoppingSpec: "stops a pending Trial if the Trial's best objective_value
    is strictly below the median 'performance' of all completed Trials reported up to the
    Trial's last measurement"): one report after training would come too late to stop it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    model = tf_keras.Sequential([tf_keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(
        x,
        y,
        validation_data=(x[:16], y[:16]),
        epochs=4,
        verbose=0,
        callbacks=[hypertune.EpochMetricReporter("accuracy", "val_accuracy")],
    )
    entries = [json.loads(line) for line in trial.read_text().splitlines()]
    assert [int(e["global_step"]) for e in entries] == [1, 2, 3, 4]
    assert [float(e["accuracy"]) for e in entries] == pytest.approx(history.history["val_accuracy"])
    assert {e["trial"] for e in entries} == {"7"}


# --- A trial's command line, as Vertex AI builds it, reaches the run's config.json. ---


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", ["8", "8.0"])
def test_trial_arguments_reach_the_run_config(
    learnable_data_dir, tiny_backbone, tmp_path, batch_size
):
    """Vertex AI starts each trial with the container's args followed by the trial's values,
    `--name value` ("Handle the command-line arguments for the hyperparameters you want to
    tune": `python3 -m my_trainer --learning_rate learning-rate-in-this-trial`,
    https://cloud.google.com/vertex-ai/docs/training/using-hyperparameter-tuning), and sets
    AIP_MODEL_DIR=<base output dir>/<trial id>/model. Integer and discrete values travel as
    doubles (googleapis/python-aiplatform#866: an integer_value_spec comes back as a double),
    so `--batch_size 8.0` must work like `--batch_size 8`. The trial's values come after the
    flagfile's and the container's and win over them."""
    base = tmp_path / "study"
    container_flags = tiny_training_flags(learnable_data_dir, tiny_backbone, "", epochs=2)
    container_flags = [f for f in container_flags if not f.startswith("--job_dir")]
    config = job_specs.JobConfig(
        "study",
        "img",
        f"gs://bkt/{base.name}",
        accelerator_type="",
        trainer_args=tuple(container_flags),
    )
    spec = job_specs.create_tuning_job(config, job_specs.create_study_spec())
    (pool,) = spec.trial_job_spec.worker_pool_specs
    trial_args = ["--learning_rate", "0.0123", "--batch_size", batch_size, "--dropout", "0.25"]
    assert {p.parameter_id for p in spec.study_spec.parameters} == {
        name.removeprefix("--") for name in trial_args[::2]
    }
    metrics = tmp_path / "hypertune" / "output.metrics"
    env = {
        "AIP_MODEL_DIR": str(base / "7" / "model"),
        "CLOUD_ML_TRIAL_ID": "7",
        "CLOUD_ML_HP_METRIC_FILE": str(metrics),
    }
    result = run_trainer([*pool.container_spec.args, *trial_args], tmp_path / "log", 300, env)
    assert result.returncode == 0, result.output[-3000:]
    flags = json.loads((base / "7" / "config.json").read_text())["flags"]
    assert (flags["learning_rate"], flags["batch_size"], flags["dropout"]) == (0.0123, 8, 0.25)
    assert isinstance(flags["batch_size"], int)
    steps = [int(json.loads(line)["global_step"]) for line in metrics.read_text().splitlines()]
    assert steps[:2] == [1, 2]  # Every epoch, then the final model's report.
