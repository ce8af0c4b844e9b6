"""infra.submit and infra.job_specs: the job specs, checked through Vertex AI's own types, offline.

`--dry_run` output is parsed back with `aiplatform_v1` (which rejects unknown fields and enum
names), and the same jobs are rebuilt with the SDK's high-level classes to check they agree.
"""

import json
import re
import subprocess
import sys

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import aiplatform
from google.cloud import aiplatform_v1 as vertex
from google.cloud.aiplatform import hyperparameter_tuning as hpt

from infra import job_specs
from tests.fixtures.processes import REPO_ROOT as _REPO
from tests.fixtures.processes import run_module

_IMAGE = "us-central1-docker.pkg.dev/proj/oregon/trainer:abc123"
_TRAINER_ARGS = ["--data_dir=gs://bkt/tfds", "--flagfile=trainer/flagfiles/full.cfg"]


def _submit(*flags: str) -> subprocess.CompletedProcess:
    return run_module("infra.submit", *flags, timeout=60)


def _dry_run(*flags: str) -> str:
    result = _submit("--dry_run", f"--image_uri={_IMAGE}", *flags, "--", *_TRAINER_ARGS)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_one_machine_dry_run_is_a_valid_custom_job():
    text = _dry_run(
        "--project=proj",
        "--job_dir=gs://bkt/jobs/one",
        "--machine_type=g2-standard-48",
        "--accelerator_type=NVIDIA_L4",
        "--accelerator_count=4",
        "--service_account=trainer@proj.iam.gserviceaccount.com",
        "--tensorboard=123",
        "--spot",
    )
    job = vertex.CustomJob.from_json(text)  # unknown fields or enum names would raise
    spec = job.job_spec
    (pool,) = spec.worker_pool_specs
    assert pool.replica_count == 1
    assert pool.machine_spec.machine_type == "g2-standard-48"
    assert pool.machine_spec.accelerator_type == vertex.AcceleratorType.NVIDIA_L4
    assert pool.machine_spec.accelerator_count == 4
    assert pool.container_spec.image_uri == _IMAGE
    assert list(pool.container_spec.args) == [
        "--job_dir=gs://bkt/jobs/one",
        "--min_gpus=4",  # The trainer stops if it sees fewer than the machine's 4 GPUs.
        *_TRAINER_ARGS,
    ]
    assert not pool.container_spec.command  # the image's ENTRYPOINT runs trainer.task
    assert spec.scheduling.strategy == vertex.Scheduling.Strategy.SPOT
    assert spec.base_output_directory.output_uri_prefix == "gs://bkt/jobs/one"
    assert spec.service_account == "trainer@proj.iam.gserviceaccount.com"
    assert spec.tensorboard == "projects/proj/locations/us-central1/tensorboards/123"
    # The printed JSON is the REST form: enums by name, camelCase fields.
    assert json.loads(text)["jobSpec"]["scheduling"]["strategy"] == "SPOT"


def test_multi_machine_dry_run_has_chief_workers_and_reduction_server():
    text = _dry_run(
        "--staging_bucket=gs://bkt",
        "--display_name=multi",
        "--replica_count=4",
        "--reduction_server_count=2",
    )
    spec = vertex.CustomJob.from_json(text).job_spec
    chief, workers, reducers = spec.worker_pool_specs
    assert (chief.replica_count, workers.replica_count, reducers.replica_count) == (1, 3, 2)
    assert chief.container_spec == workers.container_spec
    assert chief.machine_spec == workers.machine_spec
    assert chief.container_spec.args[0] == "--job_dir=gs://bkt/jobs/multi"
    # "Train using Reduction Server" lists this URI (and europe-, asia-) for workerPoolSpecs[2]:
    # https://cloud.google.com/vertex-ai/docs/training/distributed-training
    assert reducers.container_spec.image_uri == (
        "us-docker.pkg.dev/vertex-ai-restricted/training/reductionserver:latest"
    )
    assert reducers.machine_spec.accelerator_count == 0
    assert reducers.machine_spec.machine_type == "n1-highcpu-16"  # The page's recommendation.
    # A lost worker stalls MultiWorkerMirroredStrategy: restart all, resume from checkpoint.
    assert spec.scheduling.restart_job_on_worker_restart
    assert spec.scheduling.strategy == vertex.Scheduling.Strategy.STANDARD


def test_tuning_dry_run_is_a_valid_study_over_the_trainer_flags():
    text = _dry_run(
        "--kind=tuning",
        "--job_dir=gs://bkt/jobs/study",
        "--max_trial_count=8",
        "--parallel_trial_count=2",
    )
    job = vertex.HyperparameterTuningJob.from_json(text)
    assert (job.max_trial_count, job.parallel_trial_count) == (8, 2)
    (metric,) = job.study_spec.metrics
    assert metric.metric_id == "accuracy"
    assert metric.goal == vertex.StudySpec.MetricSpec.GoalType.MAXIMIZE
    by_id = {p.parameter_id: p for p in job.study_spec.parameters}
    assert set(by_id) == {"learning_rate", "batch_size", "dropout"}
    scale = vertex.StudySpec.ParameterSpec.ScaleType
    assert by_id["learning_rate"].scale_type == scale.UNIT_LOG_SCALE
    assert list(by_id["batch_size"].discrete_value_spec.values) == [32, 64, 128]
    (pool,) = job.trial_job_spec.worker_pool_specs
    # No --job_dir: each trial's AIP_MODEL_DIR (<job_dir>/<trial>/model) gives trainer.task its own.
    assert list(pool.container_spec.args) == ["--min_gpus=1", *_TRAINER_ARGS]
    # Early stopping needs per-epoch reports (trainer.hypertune.EpochMetricReporter).
    assert "median_automated_stopping_spec" in job.study_spec
    assert job.trial_job_spec.base_output_directory.output_uri_prefix == "gs://bkt/jobs/study"


def test_specs_agree_with_the_sdk_job_classes():
    """aiplatform's own CustomJob / HyperparameterTuningJob build the same protos, offline."""
    config = job_specs.JobConfig("sdk", _IMAGE, "gs://bkt/jobs/sdk", replica_count=3)
    mine = job_specs.create_custom_job(config)
    pools = [type(p).to_dict(p) for p in mine.job_spec.worker_pool_specs]
    sdk_job = aiplatform.CustomJob(
        display_name="sdk",
        worker_pool_specs=pools,
        base_output_dir="gs://bkt/jobs/sdk",
        project="proj",
        location="us-central1",
        credentials=AnonymousCredentials(),
        staging_bucket="gs://bkt",
    )
    assert sdk_job._gca_resource.job_spec.worker_pool_specs == mine.job_spec.worker_pool_specs
    sdk_study = aiplatform.HyperparameterTuningJob(
        display_name="sdk",
        custom_job=sdk_job,
        metric_spec={"accuracy": "maximize"},
        parameter_spec={
            "learning_rate": hpt.DoubleParameterSpec(min=1e-4, max=1e-2, scale="log"),
            "batch_size": hpt.DiscreteParameterSpec(values=[32, 64, 128], scale="linear"),
            "dropout": hpt.DoubleParameterSpec(min=0.0, max=0.5, scale="linear"),
        },
        max_trial_count=12,
        parallel_trial_count=3,
        project="proj",
        location="us-central1",
        credentials=AnonymousCredentials(),
    )
    ours = job_specs.create_study_spec()
    theirs = sdk_study._gca_resource.study_spec
    assert theirs.metrics == ours.metrics
    assert theirs.measurement_selection_type == ours.measurement_selection_type
    assert sorted(theirs.parameters, key=lambda p: p.parameter_id) == sorted(
        ours.parameters, key=lambda p: p.parameter_id
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"accelerator_type": "NVIDIA_TESLA_T5"}, "unknown accelerator_type 'NVIDIA_TESLA_T5'"),
        ({"accelerator_count": 0}, "accelerator_count 0 must be >= 1"),
        ({"job_dir": "/tmp/j"}, "job_dir '/tmp/j' must be a gs:// path"),
        ({"reduction_server_count": 1}, "needs replica_count >= 2"),
        ({"tensorboard": "projects/p/locations/l/tensorboards/1"}, "needs --service_account"),
        ({"trainer_args": ("--job_dir=gs://b/other",)}, "pass --job_dir to infra.submit"),
    ],
)
def test_bad_configs_are_rejected(changes, message):
    config = job_specs.JobConfig(
        **{"display_name": "bad", "image_uri": _IMAGE, "job_dir": "gs://b/j", **changes}
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        job_specs.create_custom_job(config)


def test_bad_study_sizes_are_rejected():
    config = job_specs.JobConfig("bad", _IMAGE, "gs://b/j")
    with pytest.raises(ValueError, match="parallel_trial_count 20 must be in"):
        job_specs.create_tuning_job(config, job_specs.create_study_spec(), 12, 20)
    with pytest.raises(ValueError, match="learning_rate range"):
        job_specs.create_study_spec(learning_rate=(0.1, 0.01))


def test_bad_flags_fail_with_one_line():
    result = _submit(
        "--dry_run", f"--image_uri={_IMAGE}", "--accelerator_type=T5", "--job_dir=gs://b/j"
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: unknown accelerator_type 'T5'")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_submission_needs_a_project_and_an_output_folder():
    result = _submit(f"--image_uri={_IMAGE}", "--job_dir=gs://b/j")
    assert result.returncode != 0
    assert "give --project" in result.stderr
    result = _submit("--dry_run", f"--image_uri={_IMAGE}")
    assert result.returncode != 0
    assert "give --job_dir=gs://BUCKET/PATH or --staging_bucket=gs://BUCKET" in result.stderr


def test_missing_bucket_stops_submission_before_vertex_ai(gcs_emulator):
    """Checked against the GCS emulator; Vertex AI is never reached (nor reachable)."""
    env = gcs_emulator.subprocess_env()
    for job_dir, trainer_args in (
        ("gs://oregon-tset/jobs/a", []),
        (f"gs://{gcs_emulator.bucket}/jobs/a", ["--data_dir=gs://oregon-tset/tfds"]),
    ):
        command = [sys.executable, "-m", "infra.submit", "--project=proj", f"--image_uri={_IMAGE}"]
        command += [f"--job_dir={job_dir}", "--", *trainer_args]
        result = subprocess.run(command, cwd=_REPO, env=env, capture_output=True, text=True)
        assert result.returncode != 0
        assert result.stderr.startswith("error: bucket gs://oregon-tset does not exist")
        assert len(result.stderr.strip().splitlines()) == 1


def test_submission_without_credentials_fails_in_one_line(gcs_emulator, tmp_path):
    env = gcs_emulator.subprocess_env(HOME=str(tmp_path), CLOUDSDK_CONFIG=str(tmp_path))
    env["NO_GCE_CHECK"] = "True"  # google-auth: do not probe for a metadata server
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    command = [sys.executable, "-m", "infra.submit", "--project=proj", f"--image_uri={_IMAGE}"]
    command.append(f"--job_dir=gs://{gcs_emulator.bucket}/jobs/a")
    result = subprocess.run(command, cwd=_REPO, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert result.stderr.startswith("error: Vertex AI did not take the job: Your default")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("region", "multi_region"),
    [("us-central1", "us"), ("europe-west4", "europe"), ("asia-southeast1", "asia")],
)
def test_reduction_server_image_comes_from_the_nearest_documented_multi_region(
    region, multi_region
):
    """The page lists us-, europe- and asia-docker.pkg.dev/vertex-ai-restricted/training/
    reductionserver:latest and advises "the multi-region closest to where you are training"."""
    text = _dry_run(
        f"--region={region}",
        "--job_dir=gs://b/j",
        "--replica_count=2",
        "--reduction_server_count=1",
    )
    reducers = vertex.CustomJob.from_json(text).job_spec.worker_pool_specs[2]
    assert reducers.container_spec.image_uri == (
        f"{multi_region}-docker.pkg.dev/vertex-ai-restricted/training/reductionserver:latest"
    )


@pytest.mark.parametrize(
    ("machine_type", "accelerator", "count", "disk"),
    [
        # DiskSpec.boot_disk_type (google/cloud/aiplatform_v1/types/machine_resources.py):
        # "For non-A3U machines, the default value is pd-ssd, for A3U machines, the default
        # value is hyperdisk-balanced."
        ("a3-ultragpu-8g", "NVIDIA_H200_141GB", 8, "hyperdisk-balanced"),
        ("a4-highgpu-8g", "NVIDIA_B200", 8, "hyperdisk-balanced"),
        ("a3-highgpu-8g", "NVIDIA_H100_80GB", 8, "pd-ssd"),
        ("g2-standard-24", "NVIDIA_L4", 2, "pd-ssd"),
        ("n1-standard-16", "NVIDIA_TESLA_V100", 2, "pd-ssd"),
    ],
)
def test_boot_disk_follows_the_machine_family(machine_type, accelerator, count, disk):
    text = _dry_run(
        "--job_dir=gs://b/j",
        f"--machine_type={machine_type}",
        f"--accelerator_type={accelerator}",
        f"--accelerator_count={count}",
    )
    (pool,) = vertex.CustomJob.from_json(text).job_spec.worker_pool_specs
    assert pool.disk_spec.boot_disk_type == disk
    assert pool.container_spec.args[1] == f"--min_gpus={count}"


@pytest.mark.parametrize(
    ("machine", "message"),
    [
        # https://cloud.google.com/compute/docs/gpus: G2 machines come with a fixed L4 count
        # (g2-standard-48: 4), A3 Ultra with 8 H200; T4s attach to N1 only, in 1, 2 or 4;
        # 1 V100 allows at most 12 vCPUs.
        (
            ("g2-standard-48", "NVIDIA_L4", "2"),
            "g2-standard-48 with 2 x NVIDIA_L4 is not a machine Vertex AI offers; NVIDIA_L4 "
            "comes as g2-standard-4 with 1, ",
        ),
        (("a3-ultragpu-8g", "NVIDIA_H200_141GB", "4"), "comes as a3-ultragpu-8g with 8"),
        (("g2-standard-8", "NVIDIA_TESLA_T4", "1"), "attaches to n1-* machines only"),
        (("n1-standard-8", "NVIDIA_TESLA_T4", "3"), "accelerator_count must be one of 1, 2, 4"),
        (
            ("n1-standard-16", "NVIDIA_TESLA_V100", "1"),
            "more than 1 x NVIDIA_TESLA_V100 allow (12)",
        ),
    ],
)
def test_machine_and_gpu_pairs_are_checked_before_submitting(machine, message):
    machine_type, accelerator, count = machine
    result = _submit(
        "--dry_run",
        f"--image_uri={_IMAGE}",
        "--job_dir=gs://b/j",
        f"--machine_type={machine_type}",
        f"--accelerator_type={accelerator}",
        f"--accelerator_count={count}",
    )
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line


def test_the_trainer_stops_in_one_line_when_it_sees_fewer_gpus_than_submitted(tmp_path):
    """What `--min_gpus` (from --accelerator_count) does in the container: on a machine whose
    TensorFlow sees no GPU (this one, like an image with a broken CUDA stack), the trainer
    exits 2 before any data work (the data folder does not exist) and writes nothing."""
    command = [sys.executable, "-m", "trainer.task", "--min_gpus=1"]
    command += [f"--job_dir={tmp_path / 'job'}", f"--data_dir={tmp_path / 'no-data'}"]
    result = subprocess.run(command, cwd=_REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert errors[0].startswith("error: TensorFlow sees 0 GPU(s) but this machine should have 1")
    assert "CUDA 12" in errors[0]  # The build's own CUDA version, to compare with the image.
    assert not (tmp_path / "job").exists()
