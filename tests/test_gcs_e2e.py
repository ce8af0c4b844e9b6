"""The whole pipeline on gs:// paths, against a real GCS server (tests/fixtures/gcs.py).

Every step runs as a user would run it, `python -m ...` in its own process with the emulator's
environment (TensorFlow reads it at import): build the dataset from an archive in GCS into
GCS, export a tiny backbone to GCS, train reading both and writing everything to GCS, get
preempted after the first phase and resume from the gs:// checkpoints, then load the exported
model from GCS and classify an image stored in GCS.
"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys
import time

import pytest

import tfds_oregon
from tests.fixtures.processes import REPO_ROOT, run_module, run_python
from tfds_oregon import sample

pytestmark = pytest.mark.slow

_TIMEOUT_S = 240
# A failure must come in seconds. (Without the storage checks, TensorFlow's makedirs in a
# missing bucket never returns.)
_FAIL_FAST_S = 60
_PHOTO = REPO_ROOT / "tests" / "data" / "real"


def _env(gcs) -> dict[str, str]:
    # Unbuffered: a killed trainer's last lines must not be lost in a pipe buffer.
    return gcs.subprocess_env(TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")


def _python_m(gcs, *args: str, timeout: float = _TIMEOUT_S) -> subprocess.CompletedProcess:
    return run_module(*args, env=_env(gcs), timeout=timeout)


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (
        f"{result.args}\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    return result.stdout


def _train_args(root: str) -> list[str]:
    return [
        "trainer.task",
        f"--data_dir={root}/tfds",
        f"--job_dir={root}/job",
        f"--backbone={root}/backbone",
        "--dataset=oregon_wildlife/resized_256",
        "--image_size=32",
        "--batch_size=4",
        "--epochs=2",
        "--frozen_epochs=1",
        "--steps_per_epoch=2",
        "--precision=float32",
    ]


@pytest.fixture(scope="module")
def root(gcs_emulator, tmp_path_factory) -> str:
    """gs:// folder holding the sample archive (manual/) and a photo (photos/)."""
    root = f"gs://{gcs_emulator.bucket}/e2e"
    zip_path = tmp_path_factory.mktemp("archive") / "oregon-wildlife.zip"
    sample.write_sample_archive(zip_path, per_class=10, image_size=(64, 48))
    gcs_emulator.upload(f"{root}/manual/oregon-wildlife.zip", zip_path)
    photo = sorted(_PHOTO.glob("*.jp*g"))[0]
    gcs_emulator.upload(f"{root}/photos/{photo.name}", photo)
    return root


@pytest.fixture(scope="module")
def built(gcs_emulator, root) -> str:
    """stdout of `python -m tfds_oregon.build` from gs://.../manual to gs://.../tfds."""
    args = ["--manual_dir", f"{root}/manual", "--data_dir", f"{root}/tfds"]
    return _ok(_python_m(gcs_emulator, "tfds_oregon.build", *args, "--config", "resized_256"))


@pytest.fixture(scope="module")
def trained(gcs_emulator, root, built, tiny_backbone) -> tuple[str, str]:
    """Outputs of a training run killed after its first phase, then of the resumed run."""
    for path in sorted(pathlib.Path(tiny_backbone).rglob("*")):
        if path.is_file():
            relative = path.relative_to(tiny_backbone).as_posix()
            gcs_emulator.upload(f"{root}/backbone/{relative}", path)
    first = _run_until_preempted(gcs_emulator, _train_args(root), f"{root}/job")
    resumed = _python_m(gcs_emulator, *_train_args(root))
    return first, _ok(resumed) + resumed.stderr


def _run_until_preempted(gcs, args: list[str], job_dir: str) -> str:
    """Runs the trainer and SIGKILLs it (as a preemption would) once phase one is marked done."""
    marker = f"{job_dir}/checkpoints/phase-head.done"
    env = _env(gcs)
    command = [sys.executable, "-m", *args]
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        deadline = time.monotonic() + _TIMEOUT_S
        while marker not in gcs.list(marker) and process.poll() is None:
            assert time.monotonic() < deadline, "phase one never finished"
            time.sleep(0.2)
        process.kill()
        output = process.communicate()[0]
    assert marker in gcs.list(marker), f"trainer exited before phase one was done:\n{output}"
    return output


def test_dataset_is_built_into_gcs(gcs_emulator, root, built):
    version_dir = f"{root}/tfds/oregon_wildlife/resized_256/{tfds_oregon.Builder.VERSION}"
    names = gcs_emulator.list(version_dir)
    for split in ("train", "validation", "test"):
        assert any(f"oregon_wildlife-{split}.tfrecord" in name for name in names)
    assert f"{version_dir}/dataset_info.json" in names
    # TFDS builds in incomplete.* folders and renames them at the end: none may be left.
    assert not [name for name in names if "incomplete" in name]
    # 2.0.0 splits each photo by its content hash: 200 photos, no split empty.
    sizes = re.search(r"^splits: train (\d+), validation (\d+), test (\d+)$", built, re.M)
    assert sizes and sum(map(int, sizes.groups())) == 200 and min(map(int, sizes.groups())) > 0


def test_dataset_reads_back_without_project_code(gcs_emulator, root, built):
    """A user's notebook needs only TFDS: no import of tfds_oregon or trainer."""
    code = (
        "import sys, tensorflow_datasets as tfds\n"
        f"b = tfds.builder_from_directory('{root}/tfds/oregon_wildlife/resized_256/"
        f"{tfds_oregon.Builder.VERSION}')\n"
        "n = sum(1 for _ in b.as_dataset(split='validation'))\n"
        "assert not any(m.startswith(('tfds_oregon', 'trainer')) for m in sys.modules)\n"
        "print(b.info.features['label'].num_classes, n, b.info.splits['validation'].num_examples)\n"
    )
    # Run from an empty folder, so the repository's packages are not even importable.
    result = run_python(
        "-c",
        code,
        cwd=pathlib.Path(gcs_emulator.env["CURL_CA_BUNDLE"]).parent,
        env=_env(gcs_emulator),
        timeout=_TIMEOUT_S,
    )
    classes, read, stored = _ok(result).split()
    assert classes == "20" and read == stored


def test_training_writes_every_output_to_gcs(gcs_emulator, root, trained):
    job = f"{root}/job"
    names = set(gcs_emulator.list(job))
    for output in (
        "config.json",
        "history.json",
        "metrics.json",
        "confusion_matrix.png",
        "predictions.png",
        "model/saved_model.pb",
        "model/assets/labels.txt",
        "checkpoints/phase-fine_tune.done",
        # The LiteRT models go to gs:// as the SavedModel does (trainer.export, atomically).
        "tflite/model_float32.tflite",
        "tflite/model_float16.tflite",
        "tflite/model_int8.tflite",
        "tflite/labels.txt",
        "tflite/README.md",
    ):
        assert f"{job}/{output}" in names, output
    assert any(n.startswith(f"{job}/logs/") and ".tfevents." in n for n in names)
    assert any(n.startswith(f"{job}/checkpoints/") and n.endswith(".index") for n in names)
    metrics = json.loads(gcs_emulator.read(f"{job}/metrics.json"))
    assert 0.0 <= metrics["validation_accuracy"] <= 1.0
    assert set(metrics["exports"]) == {
        "saved_model", "tflite_float32", "tflite_float16", "tflite_int8"
    }  # fmt: skip


def test_restart_resumes_from_the_gcs_checkpoint(trained):
    first, resumed = trained
    assert "Phase head: epochs 1-1" in first
    assert "Phase head finished in an earlier run; loading its weights." in resumed
    # Only the second phase (epoch 2) is trained again.
    assert "Phase head: epochs 1-1" not in resumed
    assert "Phase fine_tune: epochs 2-2" in resumed


def test_exported_model_predicts_on_a_gcs_image(gcs_emulator, root, trained):
    photo = gcs_emulator.list(f"{root}/photos/")[0]
    result = _python_m(gcs_emulator, "trainer.predict", f"--model_dir={root}/job/model", photo)
    out = _ok(result)
    assert photo in out
    assert "Classified 1 of 1 images" in result.stderr


def test_missing_bucket_fails_the_build_in_one_line(gcs_emulator, root):
    start = time.monotonic()
    args = ["--manual_dir", f"{root}/manual", "--data_dir", "gs://oregon-tset/tfds"]
    result = _python_m(gcs_emulator, "tfds_oregon.build", *args, timeout=_FAIL_FAST_S)
    assert result.returncode != 0
    assert time.monotonic() - start < _FAIL_FAST_S
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "gs://oregon-tset does not exist" in line


def test_forbidden_job_dir_fails_training_in_one_line(gcs_emulator, root, built):
    args = _train_args(root)
    args[2] = "--job_dir=gs://forbidden-jobs/job"
    result = _python_m(gcs_emulator, *args, timeout=_FAIL_FAST_S)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "permission denied on gs://forbidden-jobs/job" in line
    assert "Traceback" not in result.stderr
