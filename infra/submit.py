r"""Submits a training job to Vertex AI, or prints its exact spec (--dry_run, no network).

One machine, N GPUs (MirroredStrategy):
  python -m infra.submit --project=P --region=us-central1 --image_uri=IMAGE \
      --job_dir=gs://BUCKET/jobs/run1 --accelerator_type=NVIDIA_L4 --accelerator_count=4 \
      --machine_type=g2-standard-48 -- --data_dir=gs://BUCKET/tfds --epochs=10
Several machines (MultiWorkerMirroredStrategy; optional Reduction Server):
  ... --replica_count=4 --reduction_server_count=2 -- <trainer flags>
Tuning study over --learning_rate, --batch_size and --dropout (maximises `accuracy`):
  ... --kind=tuning --max_trial_count=12 --parallel_trial_count=3 -- <trainer flags>

Everything after `--` is passed to `python -m trainer.task` unchanged.
"""

from __future__ import annotations

import datetime
import sys

from absl import app, flags
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

from infra import job_specs, storage

_KIND = flags.DEFINE_enum("kind", "custom", ["custom", "tuning"], "A training run or a study.")
_PROJECT = flags.DEFINE_string("project", None, "Google Cloud project id (not for --dry_run).")
_REGION = flags.DEFINE_string("region", "us-central1", "Vertex AI region.")
_IMAGE_URI = flags.DEFINE_string("image_uri", None, "Training image (see cloudbuild.yaml).")
_DISPLAY_NAME = flags.DEFINE_string("display_name", None, "Job name; default oregon-<time>.")
_JOB_DIR = flags.DEFINE_string("job_dir", None, "gs:// output folder of the job.")
_STAGING_BUCKET = flags.DEFINE_string(
    "staging_bucket", None, "gs://bucket; without --job_dir the job writes to <it>/jobs/<name>."
)
_MACHINE_TYPE = flags.DEFINE_string("machine_type", "n1-standard-8", "Machine of each replica.")
_ACCELERATOR_TYPE = flags.DEFINE_string(
    "accelerator_type", "NVIDIA_TESLA_T4", "aiplatform_v1.AcceleratorType name; '' for CPU."
)
_ACCELERATOR_COUNT = flags.DEFINE_integer("accelerator_count", 1, "GPUs per machine.")
_REPLICA_COUNT = flags.DEFINE_integer("replica_count", 1, "Training machines (chief+workers).")
_REDUCTION_SERVER_COUNT = flags.DEFINE_integer(
    "reduction_server_count", 0, "Reduction Server replicas (several machines only)."
)
_REDUCTION_SERVER_MACHINE_TYPE = flags.DEFINE_string(
    "reduction_server_machine_type", "n1-highcpu-16", "Machine of each Reduction Server."
)
_SERVICE_ACCOUNT = flags.DEFINE_string("service_account", "", "Account the job runs as.")
_SPOT = flags.DEFINE_boolean("spot", False, "Run on Spot VMs (preemptible; the trainer resumes).")
_TENSORBOARD = flags.DEFINE_string(
    "tensorboard", "", "Vertex AI TensorBoard: full resource name or numeric id."
)
_TIMEOUT_HOURS = flags.DEFINE_float("timeout_hours", 24.0, "Stop the job after this long.")
_MAX_TRIAL_COUNT = flags.DEFINE_integer("max_trial_count", 12, "Tuning: trials in all.")
_PARALLEL_TRIAL_COUNT = flags.DEFINE_integer("parallel_trial_count", 3, "Tuning: at once.")
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the job spec as JSON; submit nothing.")


def resolve_job_dir(job_dir: str | None, staging_bucket: str | None, display_name: str) -> str:
    """--job_dir, else <staging bucket>/jobs/<display name>."""
    if job_dir:
        return job_dir.rstrip("/")
    if staging_bucket:
        return f"{staging_bucket.rstrip('/')}/jobs/{display_name}"
    raise ValueError("give --job_dir=gs://BUCKET/PATH or --staging_bucket=gs://BUCKET")


def resolve_tensorboard(tensorboard: str, project: str | None, region: str) -> str:
    """Expands a numeric TensorBoard id to its resource name; keeps full names as they are."""
    if not tensorboard or "/" in tensorboard:
        return tensorboard
    if not project:
        raise ValueError(f"--tensorboard={tensorboard} is an id: give --project too")
    return f"projects/{project}/locations/{region}/tensorboards/{tensorboard}"


def config_from_flags(trainer_args: list[str]) -> job_specs.JobConfig:
    """The JobConfig the flags describe."""
    if not _IMAGE_URI.value:
        raise ValueError("give --image_uri (the image cloudbuild.yaml pushed)")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    display_name = _DISPLAY_NAME.value or f"oregon-{_KIND.value}-{now}"
    return job_specs.JobConfig(
        display_name=display_name,
        image_uri=_IMAGE_URI.value,
        job_dir=resolve_job_dir(_JOB_DIR.value, _STAGING_BUCKET.value, display_name),
        machine_type=_MACHINE_TYPE.value,
        accelerator_type=_ACCELERATOR_TYPE.value,
        accelerator_count=_ACCELERATOR_COUNT.value,
        replica_count=_REPLICA_COUNT.value,
        reduction_server_count=_REDUCTION_SERVER_COUNT.value,
        reduction_server_machine_type=_REDUCTION_SERVER_MACHINE_TYPE.value,
        service_account=_SERVICE_ACCOUNT.value,
        spot=_SPOT.value,
        tensorboard=resolve_tensorboard(_TENSORBOARD.value, _PROJECT.value, _REGION.value),
        timeout_hours=_TIMEOUT_HOURS.value,
        trainer_args=tuple(trainer_args),
    )


def create_job(config: job_specs.JobConfig):
    """The CustomJob or HyperparameterTuningJob that --kind asks for."""
    if _KIND.value == "custom":
        return job_specs.create_custom_job(config)
    return job_specs.create_tuning_job(
        config,
        job_specs.create_study_spec(),
        max_trial_count=_MAX_TRIAL_COUNT.value,
        parallel_trial_count=_PARALLEL_TRIAL_COUNT.value,
    )


def check_buckets(config: job_specs.JobConfig) -> None:
    """Checks, with the submitter's credentials, that the job's gs:// buckets exist.

    A typo'd bucket then fails here in a second, not after a GPU machine started.
    """
    data_paths = [arg.split("=", 1)[1] for arg in config.trainer_args if "=" in arg]
    storage.check_paths(readable=[config.job_dir, *data_paths])


def submit(job, project: str, region: str) -> str:
    """Creates `job` in Vertex AI exactly as given; returns its resource name."""
    from google.cloud import aiplatform_v1 as vertex

    client = vertex.JobServiceClient(
        client_options={"api_endpoint": f"{region}-aiplatform.googleapis.com"}
    )
    parent = f"projects/{project}/locations/{region}"
    if isinstance(job, vertex.CustomJob):
        return client.create_custom_job(parent=parent, custom_job=job).name
    return client.create_hyperparameter_tuning_job(
        parent=parent, hyperparameter_tuning_job=job
    ).name


def console_url(name: str, region: str) -> str:
    """Cloud console page of a submitted job."""
    _, project, _, _, kind, job_id = name.split("/")
    page = "training/custom-jobs" if kind == "customJobs" else "training/hyperparameter-tuning-jobs"
    return (
        f"https://console.cloud.google.com/vertex-ai/{page}/locations/{region}/{job_id}"
        f"?project={project}"
    )


def main(argv: list[str]) -> None:
    try:
        config = config_from_flags(argv[1:])
        job = create_job(config)
        if _DRY_RUN.value:
            print(job_specs.to_json(job))
            return
        if not _PROJECT.value:
            raise ValueError("give --project (or --dry_run to only print the spec)")
        check_buckets(config)
    except ValueError as e:
        sys.exit(f"infra.submit: {e}")
    try:
        name = submit(job, _PROJECT.value, _REGION.value)
    except (api_exceptions.GoogleAPICallError, auth_exceptions.DefaultCredentialsError) as e:
        sys.exit(f"infra.submit: Vertex AI did not take the job: {' '.join(str(e).split())}")
    print(f"Submitted {name}")
    print(f"  console: {console_url(name, _REGION.value)}")
    print(f"  outputs: {config.job_dir}")
    if _KIND.value == "custom":
        job_id = name.rsplit("/", 1)[-1]
        print(f"  logs:    gcloud ai custom-jobs stream-logs {job_id} --region={_REGION.value}")


if __name__ == "__main__":
    app.run(main)
