"""`infra.submit --kind=deploy|batch_predict`: the exact requests, parsed back with Vertex AI's
own gapic types (unknown fields or enum names raise), offline; and the request body that the
deployed model answers.

Sources:
  - UploadModelRequest.model_id, CreateEndpointRequest.endpoint_id, DeployModelRequest
    .traffic_split ("To refer to the ID of the just being deployed Model, a "0" should be
    used"), BatchPredictionJob.InputConfig/OutputConfig: the docstrings of
    google/cloud/aiplatform_v1/types/{model_service,endpoint_service,batch_prediction_job}.py
    (googleapis/python-aiplatform).
  - Prebuilt TF prediction images: https://cloud.google.com/vertex-ai/docs/predictions/
    pre-built-containers, as the SDK lists them (google/cloud/aiplatform/constants/prediction.py).
  - TF Serving's REST API (https://www.tensorflow.org/tfx/serving/api_rest): a request is
    `{"instances": [...]}`; a binary value is `{"b64": "<base64>"}` in a key ending in `_bytes`;
    the response is `{"predictions": [...]}`, one object of named outputs per instance.
"""

import base64
import io
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.cloud import aiplatform_v1 as vertex
from google.cloud.aiplatform.constants import prediction as sdk_prediction
from PIL import Image

from tests.fixtures.tiny_classifier import CLASS_NAMES, create_tiny_classifier
from trainer import export

_REPO = pathlib.Path(__file__).resolve().parents[1]
_BASE = ["--dry_run", "--project=proj", "--region=europe-west4", "--display_name=oregon-v1"]


def _submit(*flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "infra.submit", *_BASE, *flags]
    return subprocess.run(command, cwd=_REPO, capture_output=True, text=True, timeout=120)


def _requests(*flags: str) -> list:
    """The printed requests, each parsed with its aiplatform_v1 type."""
    result = _submit(*flags)
    assert result.returncode == 0, result.stderr
    parsed = []
    for item in json.loads(result.stdout):
        ((name, body),) = item.items()
        parsed.append(getattr(vertex, name).from_json(json.dumps(body)))
    return parsed


def test_deploy_uploads_creates_an_endpoint_and_deploys_the_same_model():
    upload, create, deploy = _requests(
        "--kind=deploy",
        "--model_dir=gs://bkt/jobs/run1/model/",
        "--machine_type=g2-standard-8",
        "--accelerator_type=NVIDIA_L4",
        "--accelerator_count=1",
        "--min_replica_count=1",
        "--max_replica_count=3",
    )
    parent = "projects/proj/locations/europe-west4"
    assert isinstance(upload, vertex.UploadModelRequest)
    assert upload.parent == parent and upload.model_id == "oregon-v1"
    assert upload.model.artifact_uri == "gs://bkt/jobs/run1/model"
    # A GPU machine gets the GPU build of a prebuilt TF image from the region's multi-region.
    image = upload.model.container_spec.image_uri
    assert image in sdk_prediction.TF_CONTAINER_URIS
    assert image.startswith("europe-docker.pkg.dev/vertex-ai/prediction/tf2-gpu.")
    assert isinstance(create, vertex.CreateEndpointRequest) and create.endpoint_id == "oregon-v1"
    assert isinstance(deploy, vertex.DeployModelRequest)
    # The ids chosen up front make the deployment name what the first two requests create.
    assert deploy.endpoint == f"{parent}/endpoints/{create.endpoint_id}"
    assert deploy.deployed_model.model == f"{parent}/models/{upload.model_id}"
    resources = deploy.deployed_model.dedicated_resources
    assert resources.machine_spec.accelerator_type == vertex.AcceleratorType.NVIDIA_L4
    assert (resources.min_replica_count, resources.max_replica_count) == (1, 3)
    assert dict(deploy.traffic_split) == {"0": 100}


def test_deploy_to_an_existing_endpoint_creates_none():
    upload, deploy = _requests(
        "--kind=deploy", "--model_dir=gs://bkt/m", "--endpoint=1234", "--accelerator_type="
    )
    assert deploy.endpoint == "projects/proj/locations/europe-west4/endpoints/1234"
    assert upload.model.container_spec.image_uri.startswith(
        "europe-docker.pkg.dev/vertex-ai/prediction/tf2-cpu."
    )
    assert not deploy.deployed_model.dedicated_resources.machine_spec.accelerator_count


def test_batch_prediction_reads_jsonl_instances_of_an_uploaded_model():
    (request,) = _requests(
        "--kind=batch_predict",
        "--model=oregon-v1",
        "--instances=gs://bkt/in/a.jsonl,gs://bkt/in/b*.jsonl",
        "--output_dir=gs://bkt/out/",
        "--accelerator_type=",
        "--max_replica_count=4",
    )
    job = request.batch_prediction_job
    assert job.model == "projects/proj/locations/europe-west4/models/oregon-v1"
    assert job.input_config.instances_format == "jsonl"
    assert list(job.input_config.gcs_source.uris) == ["gs://bkt/in/a.jsonl", "gs://bkt/in/b*.jsonl"]
    assert job.output_config.gcs_destination.output_uri_prefix == "gs://bkt/out"
    assert job.dedicated_resources.max_replica_count == 4


def test_batch_prediction_from_a_model_dir_uploads_it_first():
    upload, request = _requests(
        "--kind=batch_predict",
        "--model_dir=gs://bkt/jobs/run1/model",
        "--instances=gs://bkt/in/a.jsonl",
        "--output_dir=gs://bkt/out",
        "--accelerator_type=",
    )
    assert request.batch_prediction_job.model.endswith(f"/models/{upload.model_id}")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kind=deploy"], "give --model_dir=gs://"),
        (["--kind=deploy", "--model_dir=/local/model"], "must be a gs:// folder"),
        (["--kind=deploy", "--model_dir=gs://b/m", "--display_name=9lives"], "must start with"),
        (
            ["--kind=deploy", "--model_dir=gs://b/m", "--min_replica_count=3"],
            "min_replica_count (3) <= max_replica_count (1)",
        ),
        (["--kind=batch_predict", "--model=m", "--output_dir=gs://b/o"], "give --instances="),
        (["--kind=batch_predict", "--model=m", "--instances=gs://b/i.jsonl"], "--output_dir"),
        (["--kind=batch_predict", "--instances=gs://b/i.jsonl"], "give either --model=ID"),
        (
            ["--kind=deploy", "--model_dir=gs://b/m", "--machine_type=g2-standard-8"],
            "NVIDIA_TESLA_T4 attaches to n1-* machines only",  # The default GPU, checked too.
        ),
    ],
)
def test_bad_serving_flags_fail_in_one_line(flags, message):
    result = _submit(*flags)
    assert result.returncode == 2 and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_the_exported_model_answers_the_documented_request_body(tmp_path):
    """The body the README sends with curl, decoded as TF Serving does ({"b64": ...} to bytes
    under the `image_bytes` input), goes through the export's serving_default signature; the
    answer has, per instance, the named outputs TF Serving puts in `predictions`."""
    photos = [_jpeg(1), _jpeg(2)]
    body = {"instances": [{"image_bytes": {"b64": base64.b64encode(p).decode()}} for p in photos]}
    export.export_serving_model(
        create_tiny_classifier(), CLASS_NAMES, str(tmp_path / "model"), image_size=32, top_k=3
    )
    serve = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    assert list(serve.structured_input_signature[1]) == ["image_bytes"]
    image_bytes = [base64.b64decode(i["image_bytes"]["b64"]) for i in body["instances"]]
    outputs = serve(image_bytes=tf.constant(image_bytes))
    predictions = [
        {name: value[i].numpy().tolist() for name, value in outputs.items()}
        for i in range(len(photos))
    ]
    for prediction in predictions:
        assert set(prediction) == {"classes", "probabilities"}
        assert {c.decode() for c in prediction["classes"]} <= set(CLASS_NAMES)
        assert len(prediction["probabilities"]) == 3
        assert prediction["probabilities"] == sorted(prediction["probabilities"], reverse=True)
