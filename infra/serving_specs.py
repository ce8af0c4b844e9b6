"""Vertex AI serving requests as protos: upload a SavedModel, an endpoint, a deployment, and a
batch prediction job.

Pure functions, like `infra.job_specs`: explicit arguments, no network, `aiplatform_v1`
request messages that `python -m infra.submit --kind=deploy|batch_predict --dry_run` prints.
Resource ids are chosen here (UploadModelRequest.model_id, CreateEndpointRequest.endpoint_id),
so every request, the deployment's model and endpoint names included, is known before the
first one is sent.

Serving container: Vertex AI's prebuilt TensorFlow prediction image
(https://cloud.google.com/vertex-ai/docs/predictions/pre-built-containers), not a TF Serving
image of the export's TF version:
  - it loads `artifact_uri` as it is (saved_model.pb at the top); TF Serving wants numbered
    version folders (<base>/1/saved_model.pb) and a command line naming the model;
  - Vertex AI runs custom serving images only from Artifact Registry, so a Docker Hub
    `tensorflow/serving` tag would have to be copied there first;
  - it speaks TF Serving's REST `instances` format and decodes `{"b64": ...}` itself, which is
    what the export's `serving_default(image_bytes)` signature expects.
Its TensorFlow (SERVING_TF_VERSION, the newest the SDK lists) is older than the trainer's.
A SavedModel loads in an older runtime when its graph uses only ops that runtime has:
trainer/export.py keeps to core TF ops (decode_image, crop, resize, the Keras model, top_k),
no custom ops (TF Text, TF Addons), no XLA-compiled (jit_compile) functions, and
tf.saved_model.save strips attributes left at their defaults. Check a new export with a local
`docker run` of the same image before deploying it widely (README, "Deploy").
"""

from __future__ import annotations

import dataclasses
import json
import re

from google.cloud import aiplatform_v1 as vertex

from infra import job_specs

# The newest TensorFlow of Vertex AI's prebuilt prediction images that this SDK lists
# (google/cloud/aiplatform/constants/prediction.py, TF_CONTAINER_URIS).
SERVING_TF_VERSION = "2.15"
# TF Serving's REST format: one instance per line of a batch prediction input file.
INSTANCES_FORMAT = "jsonl"
_ID = re.compile(r"[a-z][a-z0-9_-]{0,62}")


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """Where and on what a model is served.

    Attributes:
      project, region: the Vertex AI project and region.
      display_name: name of the model, endpoint and jobs in the console; also (lower-cased)
        the model and endpoint ids.
      machine_type: machine of each serving replica.
      accelerator_type: `aiplatform_v1.AcceleratorType` name, or "" for CPU serving.
      accelerator_count: GPUs per serving replica.
      min_replica_count, max_replica_count: autoscaling bounds.
      serving_image: the container; "" for Vertex AI's prebuilt TF image (CPU or GPU).
      service_account: account the deployed model or batch job runs as ("" for the default).
    """

    project: str
    region: str
    display_name: str
    machine_type: str = "n1-standard-4"
    accelerator_type: str = ""
    accelerator_count: int = 1
    min_replica_count: int = 1
    max_replica_count: int = 1
    serving_image: str = ""
    service_account: str = ""

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    @property
    def resource_id(self) -> str:
        """The display name as a model/endpoint id ([a-z][a-z0-9_-]*, at most 63 characters)."""
        resource_id = self.display_name.lower()
        if not _ID.fullmatch(resource_id):
            raise ValueError(
                f"display_name {self.display_name!r} must start with a letter and hold only "
                "letters, digits, '-' and '_' (at most 63): it becomes the model id"
            )
        return resource_id

    @property
    def gpu(self) -> bool:
        return self.accelerator_type not in ("", "ACCELERATOR_TYPE_UNSPECIFIED")


def serving_image(config: ServingConfig) -> str:
    """`config.serving_image`, else Vertex AI's prebuilt TF image for the region and device."""
    if config.serving_image:
        return config.serving_image
    from google.cloud.aiplatform import helpers  # The SDK's own table of prebuilt images.

    return helpers.get_prebuilt_prediction_container_uri(
        "tensorflow", SERVING_TF_VERSION, config.region, "gpu" if config.gpu else "cpu"
    )


def create_machine_spec(config: ServingConfig) -> vertex.MachineSpec:
    """The machine of each serving replica, its GPUs checked like a training machine's."""
    if config.min_replica_count < 1 or config.max_replica_count < config.min_replica_count:
        raise ValueError(
            f"need 1 <= min_replica_count ({config.min_replica_count}) <= max_replica_count "
            f"({config.max_replica_count})"
        )
    if not config.gpu:
        return vertex.MachineSpec(machine_type=config.machine_type)
    if config.accelerator_type not in vertex.AcceleratorType.__members__:
        raise ValueError(f"unknown accelerator_type {config.accelerator_type!r}")
    job_specs.check_machine(config.machine_type, config.accelerator_type, config.accelerator_count)
    return vertex.MachineSpec(
        machine_type=config.machine_type,
        accelerator_type=vertex.AcceleratorType[config.accelerator_type],
        accelerator_count=config.accelerator_count,
    )


def model_name(config: ServingConfig) -> str:
    return f"{config.parent}/models/{config.resource_id}"


def endpoint_name(config: ServingConfig, endpoint: str = "") -> str:
    """`endpoint` (an id or full resource name) or the id this config creates."""
    if "/" in endpoint:
        return endpoint
    return f"{config.parent}/endpoints/{endpoint or config.resource_id}"


def create_upload_request(config: ServingConfig, model_dir: str) -> vertex.UploadModelRequest:
    """Model Registry upload of the SavedModel folder `model_dir` (gs://, with saved_model.pb)."""
    if not model_dir.startswith("gs://"):
        raise ValueError(f"model_dir {model_dir!r} must be a gs:// folder: Vertex AI reads it")
    return vertex.UploadModelRequest(
        parent=config.parent,
        model_id=config.resource_id,
        model=vertex.Model(
            display_name=config.display_name,
            artifact_uri=model_dir.rstrip("/"),
            container_spec=vertex.ModelContainerSpec(image_uri=serving_image(config)),
        ),
    )


def create_endpoint_request(config: ServingConfig) -> vertex.CreateEndpointRequest:
    return vertex.CreateEndpointRequest(
        parent=config.parent,
        endpoint_id=config.resource_id,
        endpoint=vertex.Endpoint(display_name=config.display_name),
    )


def create_deploy_request(config: ServingConfig, endpoint: str = "") -> vertex.DeployModelRequest:
    """Deploys the uploaded model to the endpoint and sends it all the traffic."""
    return vertex.DeployModelRequest(
        endpoint=endpoint_name(config, endpoint),
        deployed_model=vertex.DeployedModel(
            model=model_name(config),
            display_name=config.display_name,
            dedicated_resources=vertex.DedicatedResources(
                machine_spec=create_machine_spec(config),
                min_replica_count=config.min_replica_count,
                max_replica_count=config.max_replica_count,
            ),
            service_account=config.service_account,
        ),
        # "0" is the model being deployed (DeployModelRequest.traffic_split).
        traffic_split={"0": 100},
    )


def create_batch_prediction_request(
    config: ServingConfig, model: str, instances: list[str], output_dir: str
) -> vertex.CreateBatchPredictionJobRequest:
    """A BatchPredictionJob over JSON Lines files of `{"image_bytes": {"b64": ...}}` instances.

    Args:
      model: the model's resource name or id.
      instances: gs:// JSONL files (wildcards allowed), one instance per line.
      output_dir: gs:// folder for the prediction files.
    """
    for uri in (*instances, output_dir):
        if not uri.startswith("gs://"):
            raise ValueError(f"{uri!r} must be a gs:// path: the batch job reads and writes there")
    if not instances:
        raise ValueError("give --instances=gs://BUCKET/instances*.jsonl")
    model = model if "/" in model else f"{config.parent}/models/{model}"
    return vertex.CreateBatchPredictionJobRequest(
        parent=config.parent,
        batch_prediction_job=vertex.BatchPredictionJob(
            display_name=config.display_name,
            model=model,
            input_config=vertex.BatchPredictionJob.InputConfig(
                instances_format=INSTANCES_FORMAT, gcs_source=vertex.GcsSource(uris=instances)
            ),
            output_config=vertex.BatchPredictionJob.OutputConfig(
                predictions_format=INSTANCES_FORMAT,
                gcs_destination=vertex.GcsDestination(output_uri_prefix=output_dir.rstrip("/")),
            ),
            dedicated_resources=vertex.BatchDedicatedResources(
                machine_spec=create_machine_spec(config),
                starting_replica_count=config.min_replica_count,
                max_replica_count=config.max_replica_count,
            ),
            service_account=config.service_account,
        ),
    )


def to_json(requests: list) -> str:
    """Requests as REST JSON (camelCase, enums by name), each under its message's name."""
    return json.dumps(
        [
            {
                type(r).__name__: json.loads(
                    type(r).to_json(
                        r, use_integers_for_enums=False, always_print_fields_with_no_presence=False
                    )
                )
            }
            for r in requests
        ],
        indent=2,
        sort_keys=True,
    )
