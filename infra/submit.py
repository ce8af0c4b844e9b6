r"""Submits a training job to Vertex AI, or prints its exact spec (--dry_run, no network).

One machine, N GPUs (MirroredStrategy):
  python -m infra.submit --project=P --region=us-central1 --image_uri=IMAGE \
      --job_dir=gs://BUCKET/jobs/run1 --accelerator_type=NVIDIA_L4 --accelerator_count=4 \
      --machine_type=g2-standard-48 -- --data_dir=gs://BUCKET/tfds --epochs=10
Several machines (MultiWorkerMirroredStrategy; optional Reduction Server):
  ... --replica_count=4 --reduction_server_count=2 -- <trainer flags>
Tuning study over --learning_rate, --batch_size and --dropout (maximises `accuracy`):
  ... --kind=tuning --max_trial_count=12 --parallel_trial_count=3 -- <trainer flags>
Serve a finished job's SavedModel (Model Registry upload, endpoint, deployment):
  python -m infra.submit --kind=deploy --project=P --region=us-central1 \
      --model_dir=gs://BUCKET/jobs/run1/model [--endpoint=ID] --machine_type=n1-standard-4 \
      --accelerator_type= --min_replica_count=1 --max_replica_count=2
Batch prediction over JSON Lines of {"image_bytes": {"b64": ...}} (an uploaded model, or
--model_dir to upload one first):
  python -m infra.submit --kind=batch_predict --project=P --model=MODEL_ID \
      --instances=gs://BUCKET/instances/*.jsonl --output_dir=gs://BUCKET/predictions

Training: everything after `--` is passed to `python -m trainer.task` unchanged.
--dry_run prints the exact requests as JSON and sends nothing.
"""

from __future__ import annotations

from trainer import cli  # isort: skip - first: the one error-line convention of every CLI.

import datetime

from absl import flags
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

from infra import job_specs, serving_specs, storage

_KIND = flags.DEFINE_enum(
    "kind",
    "custom",
    ["custom", "tuning", "deploy", "batch_predict"],
    "A training run, a tuning study, a deployment to an endpoint, or a batch prediction job.",
)
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
# --- Serving (--kind=deploy / batch_predict); machine flags above apply to serving replicas.
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "gs:// SavedModel folder of a finished job (<job_dir>/model) to upload."
)
_MODEL = flags.DEFINE_string("model", None, "batch_predict: an uploaded model's id or name.")
_ENDPOINT = flags.DEFINE_string(
    "endpoint", "", "deploy: an existing endpoint's id or name; default: create one."
)
_SERVING_IMAGE = flags.DEFINE_string(
    "serving_image", "", "Serving container; default: Vertex AI's prebuilt TensorFlow image."
)
_MIN_REPLICA_COUNT = flags.DEFINE_integer("min_replica_count", 1, "Serving: fewest replicas.")
_MAX_REPLICA_COUNT = flags.DEFINE_integer("max_replica_count", 1, "Serving: most replicas.")
_INSTANCES = flags.DEFINE_list(
    "instances", [], 'batch_predict: gs:// JSON Lines files of {"image_bytes": {"b64": ...}}.'
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "batch_predict: gs:// output folder.")


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


def default_display_name() -> str:
    """--display_name, else oregon-<kind>-<UTC time> (also a valid model/endpoint id)."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return _DISPLAY_NAME.value or f"oregon-{_KIND.value.replace('_', '-')}-{now}"


def serving_config_from_flags() -> serving_specs.ServingConfig:
    """The ServingConfig the flags describe (--kind=deploy / batch_predict)."""
    if not _PROJECT.value:
        raise ValueError("give --project: serving requests name the project's resources")
    return serving_specs.ServingConfig(
        project=_PROJECT.value,
        region=_REGION.value,
        display_name=default_display_name(),
        machine_type=_MACHINE_TYPE.value,
        accelerator_type=_ACCELERATOR_TYPE.value,
        accelerator_count=_ACCELERATOR_COUNT.value,
        min_replica_count=_MIN_REPLICA_COUNT.value,
        max_replica_count=_MAX_REPLICA_COUNT.value,
        serving_image=_SERVING_IMAGE.value,
        service_account=_SERVICE_ACCOUNT.value,
    )


def create_serving_requests(config: serving_specs.ServingConfig) -> list:
    """The requests --kind=deploy or batch_predict sends, in order."""
    requests = []
    if _MODEL_DIR.value:
        requests.append(serving_specs.create_upload_request(config, _MODEL_DIR.value))
    if _KIND.value == "deploy":
        if not _MODEL_DIR.value:
            raise ValueError("give --model_dir=gs://BUCKET/jobs/RUN/model (the job's SavedModel)")
        if not _ENDPOINT.value:
            requests.append(serving_specs.create_endpoint_request(config))
        requests.append(serving_specs.create_deploy_request(config, _ENDPOINT.value))
        return requests
    if bool(_MODEL.value) == bool(_MODEL_DIR.value):
        raise ValueError("give either --model=ID (an uploaded model) or --model_dir=gs://...")
    if not _OUTPUT_DIR.value:
        raise ValueError("give --output_dir=gs://BUCKET/PATH for the predictions")
    model = _MODEL.value or serving_specs.model_name(config)
    requests.append(
        serving_specs.create_batch_prediction_request(
            config, model, _INSTANCES.value, _OUTPUT_DIR.value
        )
    )
    return requests


# Long-running operations: a deployment takes 10-20 minutes, sometimes more.
_WAIT_SECONDS = 3600


def send_serving_requests(requests: list, region: str) -> None:
    """Sends the requests in order, waiting for each long-running one; prints what it made."""
    from google.cloud import aiplatform_v1 as vertex

    options = {"api_endpoint": f"{region}-aiplatform.googleapis.com"}
    for request in requests:
        if isinstance(request, vertex.UploadModelRequest):
            print(f"Uploading {request.model.artifact_uri} to the Model Registry ...", flush=True)
            model = vertex.ModelServiceClient(client_options=options).upload_model(request)
            print(f"  model: {model.result(timeout=_WAIT_SECONDS).model}", flush=True)
        elif isinstance(request, vertex.CreateEndpointRequest):
            client = vertex.EndpointServiceClient(client_options=options)
            endpoint = client.create_endpoint(request).result(timeout=_WAIT_SECONDS)
            print(f"  endpoint: {endpoint.name}", flush=True)
        elif isinstance(request, vertex.DeployModelRequest):
            print("Deploying (about 10-20 minutes) ...", flush=True)
            client = vertex.EndpointServiceClient(client_options=options)
            deployed = client.deploy_model(request).result(timeout=_WAIT_SECONDS).deployed_model
            print(f"  deployed model {deployed.id} on {request.endpoint}", flush=True)
            print(f"  predict: POST https://{region}-aiplatform.googleapis.com/v1/"
                  f"{request.endpoint}:predict  (README: an endpoint answering curl)")  # fmt: skip
        else:
            job = vertex.JobServiceClient(client_options=options).create_batch_prediction_job(
                request
            )
            print(f"Submitted {job.name}")
            output = request.batch_prediction_job.output_config.gcs_destination
            print(f"  outputs: {output.output_uri_prefix}/prediction-*")


def config_from_flags(trainer_args: list[str]) -> job_specs.JobConfig:
    """The JobConfig the flags describe."""
    if not _IMAGE_URI.value:
        raise ValueError("give --image_uri (the image cloudbuild.yaml pushed)")
    display_name = default_display_name()
    return job_specs.JobConfig(
        display_name=display_name,
        image_uri=_IMAGE_URI.value,
        job_dir=resolve_job_dir(_JOB_DIR.value, _STAGING_BUCKET.value, display_name),
        region=_REGION.value,
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
    if _KIND.value in ("deploy", "batch_predict"):
        if len(argv) > 1:
            raise ValueError(f"--kind={_KIND.value} takes no trainer arguments: {argv[1:]}")
        requests = create_serving_requests(serving_config_from_flags())
        if _DRY_RUN.value:
            print(serving_specs.to_json(requests))
            return
        try:
            send_serving_requests(requests, _REGION.value)
        except (api_exceptions.GoogleAPICallError, auth_exceptions.DefaultCredentialsError) as e:
            cli.fail(f"Vertex AI did not take the request: {e}")
        return
    config = config_from_flags(argv[1:])
    job = create_job(config)
    if _DRY_RUN.value:
        print(job_specs.to_json(job))
        return
    if not _PROJECT.value:
        raise ValueError("give --project (or --dry_run to only print the spec)")
    check_buckets(config)
    try:
        name = submit(job, _PROJECT.value, _REGION.value)
    except (api_exceptions.GoogleAPICallError, auth_exceptions.DefaultCredentialsError) as e:
        cli.fail(f"Vertex AI did not take the job: {e}")
    print(f"Submitted {name}")
    print(f"  console: {console_url(name, _REGION.value)}")
    print(f"  outputs: {config.job_dir}")
    if _KIND.value == "custom":
        job_id = name.rsplit("/", 1)[-1]
        print(f"  logs:    gcloud ai custom-jobs stream-logs {job_id} --region={_REGION.value}")


if __name__ == "__main__":
    cli.run(main)
