"""cloudbuild.yaml: every substitution declared and used, steps in a safe order, and the
shell of its steps run here with the substitutions Cloud Build would make."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

from tests.fixtures.processes import REPO_ROOT as _REPO

_CONFIG = yaml.safe_load((_REPO / "cloudbuild.yaml").read_text())
_STEPS = {step["id"]: step for step in _CONFIG["steps"]}
# https://cloud.google.com/build/docs/configuring-builds/substitute-variable-values
_BUILT_IN = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION", "SHORT_SHA", "COMMIT_SHA"}
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)\}|\$(\w+)")
_IMAGE = "${_REGION}-docker.pkg.dev/$PROJECT_ID/${_REPO}/${_IMAGE}"


def _used_variables() -> set[str]:
    text = (_REPO / "cloudbuild.yaml").read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    return {a or b for a, b in _VARIABLE.findall(body) if a or b}


def _substitute(text: str, values: dict[str, str]) -> str:
    """Cloud Build's substitution: $VAR and ${VAR} replaced, $$ left as one $."""
    return _VARIABLE.sub(lambda m: "$" if m[0] == "$$" else values[m[1] or m[2]], text)


def _dependencies(step_id: str) -> set[str]:
    """Steps that finish before `step_id` starts (no waitFor: all earlier steps)."""
    ids = list(_STEPS)
    direct = _STEPS[step_id].get("waitFor", ids[: ids.index(step_id)])
    return set(direct).union(*(_dependencies(d) for d in direct if d != "-"))


def test_every_substitution_is_declared_and_used():
    used = _used_variables()
    declared = set(_CONFIG["substitutions"])
    assert {v for v in used if v.startswith("_")} == declared
    assert {v for v in used if not v.startswith("_")} <= _BUILT_IN


def test_image_goes_to_artifact_registry_tagged_with_the_commit():
    assert _CONFIG["images"] == [f"{_IMAGE}:$SHORT_SHA", f"{_IMAGE}:latest"]
    build = _STEPS["build"]["args"]
    assert "--file=infra/Dockerfile" in build and (_REPO / "infra" / "Dockerfile").exists()
    assert f"--tag={_IMAGE}:$SHORT_SHA" in build


def test_tests_run_before_anything_is_pushed_or_submitted():
    assert _STEPS["test"]["entrypoint"] == "make" and _STEPS["test"]["args"] == ["test"]
    assert re.search(r"^test:", (_REPO / "Makefile").read_text(), re.MULTILINE)
    assert {"test", "build", "smoke"} <= _dependencies("push")
    assert "push" in _dependencies("submit")


@pytest.mark.parametrize(("sha", "returncode"), [("", 1), ("0a1b2c3", 0)])
def test_check_tag_step_needs_a_commit(sha, returncode):
    script = _substitute(_STEPS["check-tag"]["args"][1], {"SHORT_SHA": sha})
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert result.returncode == returncode
    if returncode:
        assert "--substitutions=SHORT_SHA=$(git rev-parse --short HEAD)" in result.stdout


def _run_submit_step(**overrides: str) -> subprocess.CompletedProcess:
    values = {**_CONFIG["substitutions"], "PROJECT_ID": "proj", "SHORT_SHA": "0a1b2c3"}
    script = _substitute(_STEPS["submit"]["args"][1], {**values, **overrides})
    # Same command, but only printing the job: nothing here may reach Vertex AI.
    script = script.replace("python3 -m infra.submit", "python3 -m infra.submit --dry_run")
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", "-c", script], cwd=_REPO, env=env, capture_output=True, text=True
    )


def test_submit_step_is_off_by_default():
    result = _run_submit_step()
    assert result.returncode == 0
    assert "no job submitted" in result.stdout


def test_submit_step_builds_a_valid_job_from_the_substitutions():
    from google.cloud import aiplatform_v1 as vertex

    result = _run_submit_step(_SUBMIT="true", _BUCKET="gs://bkt")
    assert result.returncode == 0, result.stderr
    (pool,) = vertex.CustomJob.from_json(result.stdout).job_spec.worker_pool_specs
    assert pool.container_spec.image_uri == (
        "us-central1-docker.pkg.dev/proj/oregon-wildlife/trainer:0a1b2c3"
    )
    assert pool.machine_spec.accelerator_type == vertex.AcceleratorType.NVIDIA_L4
    flagfile = _CONFIG["substitutions"]["_FLAGFILE"]
    assert f"--flagfile={flagfile}" in pool.container_spec.args
    assert (_REPO / flagfile).is_file(), f"{flagfile} (the default _FLAGFILE) is missing"


def test_smoke_step_prints_tensorflows_cuda_build_and_refuses_an_image_without_its_cudnn():
    """The smoke step runs in the built image; here the same shell runs with this
    environment's Python, which has TensorFlow 2.21 (built for CUDA 12.5.1, cuDNN 9:
    tf.sysconfig.get_build_info()) but not the image's [gpu] extra: it must print the build
    and stop, as it would for an image whose CUDA stack does not match."""
    step = _STEPS["smoke"]
    assert step["entrypoint"] == "bash" and step["waitFor"] == ["build"]
    values = {**_CONFIG["substitutions"], "PROJECT_ID": "proj", "SHORT_SHA": "0a1b2c3"}
    script = _substitute(step["args"][1], values)
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        ["bash", "-c", script], cwd=_REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert "built for CUDA 12.5.1 cuDNN 9" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1
    assert "no cuDNN wheel (nvidia-cudnn-cu12): install the package's [gpu] extra" in (
        result.stderr
    )
